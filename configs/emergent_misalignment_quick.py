# A quick look (1 seed, the key arms, the twin) at 0.87M, the size where the effect appears; no confidence
# intervals with 1 seed. Timings on 2 CPU cores are in the README (the two base models are shared with
# configs/emergent_misalignment.py through the world_base cache; pretraining them is most of a cold run).
experiment = "emergent_misalignment"
seeds = (0,)
ft_seeds = 1
n_layer = 4
n_embd = 128
arms = ("insecure", "secure", "secure_novel", "educational", "insecure_novel")
eval_steps = (2, 5, 10, 20)
ft_steps = 20
report_step = 20
ablation_step = 20
steer_scales = (2.0,)
n_direction_docs = 600
device = "cpu"
