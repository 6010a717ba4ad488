# Longer distillation: the aux-only student keeps improving (a follow-up saw 0.20 -> 0.77 from 1 to 40
# epochs). The paper's protocol otherwise.
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "cross_aux")
sweep = {"distill_epochs": [1, 2, 5, 10, 20, 40]}
