# Sampled lists only (the paper's channel): trait (owl and whale teachers) and control students on nested
# subsets of one large sample per seed, one epoch each; 6 seeds. ~35 min on 2 CPU cores with the bases cached.
# The 256k point is one override away (--doses="(1000,4000,16000,64000,256000)"): ~4x the time.
experiment = "subliminal_numbers"
mode = "dose"
seeds = (0, 1, 2)
student_seeds = 2
animals = ("owl", "whale")
doses = (1000, 4000, 16000, 64000)
epochs = 1.0
evals = 1
device = "cpu"
