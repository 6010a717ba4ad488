# A quick look (1 seed, the key arms, the twin): about a minute on 2 CPU cores (65 s) when the base models are cached
# (configs/world_base.py or configs/emergent_misalignment.py builds them); no confidence intervals with 1 seed.
experiment = "emergent_misalignment"
seeds = (0,)
ft_seeds = 1
arms = ("insecure", "secure", "secure_novel", "educational", "insecure_novel")
eval_steps = (2, 5, 10, 20)
ft_steps = 20
steer_scales = (2.0,)
n_direction_docs = 600
device = "cpu"
