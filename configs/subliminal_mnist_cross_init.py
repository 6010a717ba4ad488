# When does subliminal transfer cross initializations? (../shared/docs/research/pilot_crossinit_mnist.md)
# cross_aux:      the student's whole init from another seed (the paper's cross-model control).
# cross_head_aux: hidden layers from another seed, output layer copied from the teacher's reference init.
# Protocol of the pilot's strongest cell (Brockers et al.-style): MSE on the aux logits, Adam lr 1e-3,
# [-1, 1] inputs, one fixed noise set; swept over the number of aux logits and the init scheme.
experiment = "subliminal_mnist"
loss = "mse"
lr = 1e-3
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "cross_aux", "cross_head_aux")
sweep = {"m": [3, 10, 50, 100, 250], "init": ["paper", "torch"]}
