# The soft (numbers-only) channel trained long: the students of configs/subliminal_numbers.py with 16 epochs
# (2,000 steps) instead of 2, at lr 1e-3 decayed to 0 by a cosine, with the baselines trained the same way.
# Why: the soft student matches the teacher's number distribution within ~250 steps (KL to the teacher falls
# to ~3% of the base's), but its animal preference keeps moving toward the teacher's for thousands of steps
# after that. 6 seeds; ~18 min of one core per seed, 62 min on 2 cores here with the bases cached.
experiment = "subliminal_numbers"
seeds = (0, 1, 2)
student_seeds = 2
animals = ("owl", "whale")
arms = ("control", "soft", "soft_cross", "cross_init", "cross_control")
n_lists = 4000
epochs = 16.0
student_lr = 1e-3
student_schedule = "cosine"
evals = 8
device = "cpu"
