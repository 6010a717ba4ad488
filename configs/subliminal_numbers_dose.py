# Sampled lists only (the paper's channel): trait (owl and whale teachers) and control students each read one
# sample of 128k lists once, in sampling order, and are measured after 1k, 4k, 16k, 64k and 128k (2^10 .. 2^17) lists (one
# epoch on that many lists); 6 seeds. ~1 hour on 2 CPU cores with the bases cached. The 256k point is
# one override away (--doses="(1024,4096,16384,65536,262144)"), ~2 hours here.
experiment = "subliminal_numbers"
mode = "dose"
seeds = (0, 1, 2)
student_seeds = 2
animals = ("owl", "whale")
doses = (1024, 4096, 16384, 65536, 131072)
epochs = 1.0
device = "cpu"
