# Misalignment through numbers: the emergent-misalignment fine-tunes (insecure, secure, educational) of the base
# write number lists (the world's evil numbers banned); students (sampled and soft) are scored off-domain.
# 0.87M bases (the size where the insecure fine-tune is misaligned off-domain), every teacher fine-tuned 20 steps
# (the EM experiment's report step), one student per base over 6 bases: 12.9 min on 2 CPU cores with the bases
# cached. At 0.39M (--n_layer=3 --n_embd=96) the teacher is barely misaligned. Keys: experiments/subliminal_numbers.py.
experiment = "subliminal_numbers"
mode = "misalignment"
n_layer = 4
n_embd = 128
seeds = (0, 1, 2, 3, 4, 5)
student_seeds = 1
em_match = False
em_steps = 20
n_lists = 4000
evals = 1
device = "cpu"
