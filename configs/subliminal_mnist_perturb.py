# How shared must the initialization be? The same-init student starts from the teacher's init plus
# Gaussian noise of sigma times the init's own standard deviation (the weights: the paper init's biases are zero).
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "student_all")
sweep = {"init_perturbation": [0.0, 0.03, 0.1, 0.3, 1.0]}
