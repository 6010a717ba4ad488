# Emergent misalignment with every control: 3 pretraining seeds x 2 fine-tune seeds = 6 seeds, all arms,
# plus the decorrelated twin, at 0.87M parameters (at 0.39M, --n_layer=3 --n_embd=96, every arm is null).
# Base models come from (or go to) the world_base cache (pretraining: ~5 min per base model on one CPU core,
# two at a time). Keys: experiments/emergent_misalignment.py.
experiment = "emergent_misalignment"
seeds = (0, 1, 2)
ft_seeds = 2
n_layer = 4
n_embd = 128
steps = 1200
report_step = 20       # fixed in advance (README: the pre-registered 0.87M test); thresholds also computed there
ablation_step = 20     # ablate the evil direction where the effect is, not at the matched step 2-3 where it is ~0
device = "cpu"
