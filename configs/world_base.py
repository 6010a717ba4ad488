# Pretrain the base models of the synthetic persona world (normal world and decorrelated twin, 3 seeds),
# cache them in out/world_base_cache, and check in-context persona inference. Keys: experiments/world_base.py.
experiment = "world_base"
seeds = (0, 1, 2)
decorrelated = True
n_layer = 3
n_embd = 96
steps = 1200
device = "cpu"
