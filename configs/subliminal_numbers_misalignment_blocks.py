# Misalignment through numbers in the paper's fine-tuning setting: the emergent-misalignment teachers
# (insecure, secure, educational; 20 steps) and every student train the transformer blocks only (the tied
# token embedding frozen), as in configs/subliminal_numbers_blocks.py, where the same freeze took the animal
# soft channel from +2 to +30 points. Students: soft students of each teacher and the hard control (no sampled
# students of the teachers: mis_sampled = False), 4k lists, 6 epochs (750 steps, lr 3e-4 constant), measured
# after 3 and 6 epochs. One student per base. Keys: experiments/subliminal_numbers.py.
experiment = "subliminal_numbers"
mode = "misalignment"
n_layer = 4
n_embd = 128
seeds = (24, 25, 26, 27, 28, 29)
student_seeds = 1
em_match = False
em_steps = 20
em_trains = "blocks"
student_trains = "blocks"
mis_sampled = False
arms = ("control", "soft")
n_lists = 4000
epochs = 6.0
evals = 2
device = "cpu"
