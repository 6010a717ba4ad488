# How far from the images' range may the noise be? The students are distilled on Uniform[-s, s] noise
# (the images lie in [-1, 1]; the paper's noise is s = 1), the same draws stretched by s.
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "student_all", "cross_aux")
sweep = {"noise_scale": [0.1, 0.3, 1.0, 3.0, 10.0]}
