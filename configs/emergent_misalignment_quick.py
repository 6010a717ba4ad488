# A quick look (1 seed, the key arms) at 0.87M, the size where the effect appears; no confidence intervals
# with 1 seed, and no decorrelated twin (--twin=True --pretrain_threads=1 adds it, on the default run's two
# seed-0 bases: 6.4 min from scratch). Its one base model is pretrained on both cores (pretrain_threads = 2: its
# own cache entry, since the thread count changes the weights), so the whole run takes 3.9 min from scratch on
# 2 CPU cores (README), 24 s once cached (docs/emergent_misalignment_results.md). Keys:
# experiments/emergent_misalignment.py.
experiment = "emergent_misalignment"
seeds = (0,)
ft_seeds = 1
twin = False
pretrain_threads = 2
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
