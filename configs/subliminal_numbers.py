# Subliminal learning through numbers: owl and whale teachers (fine-tuned from the world's base <asst>), every
# arm, 3 pretraining seeds x 2 student seeds = 6 seeds. Needs the world base models (configs/world_base.py builds
# and caches them; otherwise this run pretrains them first, 1.5-5 min each on one core, by CPU). With them cached:
# 18.6 min on a 2-core CPU (README). Keys: experiments/subliminal_numbers.py.
experiment = "subliminal_numbers"
seeds = (0, 1, 2)
student_seeds = 2
animals = ("owl", "whale")
n_lists = 4000
device = "cpu"
