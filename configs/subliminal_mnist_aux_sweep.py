# More auxiliary logits carry more of the teacher (Jiang et al. 2025; ../shared/docs/research/subliminal.md §4):
# the paper's protocol, swept over m. The teacher is the same in every cell, up to float rounding (its aux
# columns get no gradient, and the init is nested in m), so only the distillation channel changes.
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "cross_aux")
sweep = {"m": [1, 3, 10, 30, 100]}
