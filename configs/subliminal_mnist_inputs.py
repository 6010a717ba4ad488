# What the student is distilled on: the paper's uniform noise, Gaussian noise of the same mean and
# variance, or real MNIST training images (reported to transfer *less* through the aux logits). The real-image
# students read no noise key: their run is trained once and reported under both of its cells.
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "student_all", "cross_aux")
sweep = {"distill_inputs": ["noise", "real"], "noise": ["uniform", "gaussian"]}
