# Emergent misalignment with every control: 3 pretraining seeds x 2 fine-tune seeds = 6 seeds, all arms,
# plus the decorrelated twin. Base models come from (or go to) the world_base cache (pretraining: ~8 min per base model
# on one CPU core, two at a time); with them cached, ~7 min on 2 CPU cores. Keys: experiments/emergent_misalignment.py.
experiment = "emergent_misalignment"
seeds = (0, 1, 2)
ft_seeds = 2
n_layer = 3
n_embd = 96
steps = 1200
device = "cpu"
