# Wider networks transfer less through the aux logits (Jiang et al. 2025: an NTK argument):
# the paper's protocol, swept over the hidden width.
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "cross_aux")
sweep = {"width": [64, 128, 256, 512, 1024, 2048]}
