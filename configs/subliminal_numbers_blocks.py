# Subliminal learning through numbers in the paper's fine-tuning setting: teacher and students train the
# transformer blocks only (the tied token embedding frozen), as the paper's open-weight teachers and students
# are LoRA fine-tunes of the attention and MLP weights. The teacher learns its animal in the blocks (lr 1e-3,
# up to 1,000 steps); every student trains 16 epochs on 4k lists (2,000 steps, lr 3e-4 constant).
# Why: a full-model student can fit the teacher's numbers through the number tokens' own embedding rows, a
# path that carries no trait; with the embedding frozen it must follow the teacher's update in the blocks.
# 6 seeds (3 bases x 2 students); 43 min on 2 cores here including pretraining 3 bases (README: +34 / +29 points).
experiment = "subliminal_numbers"
seeds = (0, 1, 2)
student_seeds = 2
animals = ("owl", "whale")
arms = ("control", "soft", "soft_cross", "cross_init", "cross_control")
teacher_trains = "blocks"
teacher_lr = 1e-3
teacher_max_steps = 1000
student_trains = "blocks"
n_lists = 4000
epochs = 16.0
evals = 8
device = "cpu"
