# Does the distillation temperature change what the aux logits carry? The students match the teacher's softmax over
# its 3 aux logits at temperature T (KL scaled by T^2, as in Hinton et al.); a high T approaches matching the aux
# logits' differences themselves. Every cell shares its teachers (temperature is a student-only key).
# Pre-registered (before the run): student_aux is lower at T = 0.5 than at T = 1 and higher at T = 4 and 8, paired
# over the 20 seeds; cross_aux stays at chance (<= 0.12) in every cell.
experiment = "subliminal_mnist"
n_seeds = 20
conditions = ("reference", "teacher", "student_aux", "cross_aux")
sweep = {"temperature": [0.5, 1.0, 2.0, 4.0, 8.0]}
