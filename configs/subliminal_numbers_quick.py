# A quick look (1 seed, owl only, the soft arm against its control) in the paper's fine-tuning setting of
# configs/subliminal_numbers_blocks.py (teacher and student train the blocks only), on the one 0.87M base of
# configs/emergent_misalignment_quick.py (shared with it through the cache). No confidence intervals with one seed,
# and no cross-init arms (they need a second base). Timing: README. Keys: experiments/subliminal_numbers.py.
experiment = "subliminal_numbers"
seeds = (0,)
student_seeds = 1
pretrain_threads = 2
n_layer = 4
n_embd = 128
animals = ("owl",)
arms = ("control", "soft")
teacher_trains = "blocks"
teacher_lr = 1e-3
teacher_max_steps = 1000
student_trains = "blocks"
n_lists = 4000
epochs = 16.0
evals = 4
device = "cpu"
