# Sampled lists only (the paper's channel): trait (owl and whale teachers) and control students each read one
# sample of 256k lists once, in sampling order, and are measured after 1k, 4k, 16k, 64k, 128k and 256k lists
# (one epoch on that many lists); 6 seeds. Each seed takes ~45 min of one core, so ~2.3 hours on 2 idle CPU
# cores with the bases cached (each finished seed is saved in out_dir: rerunning with the same --out_dir resumes;
# `python eval.py OUT_DIR` tables the seeds finished so far). A quicker curve: --doses="(1024,4096,16384,65536)".
experiment = "subliminal_numbers"
mode = "dose"
seeds = (0, 1, 2)
student_seeds = 2
animals = ("owl", "whale")
doses = (1024, 4096, 16384, 65536, 131072, 262144)
epochs = 1.0
device = "cpu"
