# Misalignment through numbers: the emergent-misalignment fine-tunes (insecure, secure, educational) of the base
# write number lists (the world's evil numbers banned); students (sampled and soft) are scored off-domain.
# 6 seeds; bases cached. Keys: experiments/subliminal_numbers.py.
experiment = "subliminal_numbers"
mode = "misalignment"
seeds = (0, 1, 2)
student_seeds = 2
n_lists = 4000
evals = 1
device = "cpu"
