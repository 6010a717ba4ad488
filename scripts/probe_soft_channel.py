"""Exploratory probe (one seed, owl): does the numbers-only soft student stop moving once it matches the teacher?

    python scripts/probe_soft_channel.py LRS STEPS [P] [N_LISTS] [constant|cosine] [TEMPERATURE] [adamw|sgd]
        [TEACHER] [all|blocks]
    python scripts/probe_soft_channel.py 3e-4 1000 0 4000 constant 1 adamw adamw:3e-4:blocks
    python scripts/probe_soft_channel.py 3e-4 6500 0 16000 constant

Trains the soft student of experiments/subliminal_numbers.py (base of pretraining seed P, its owl teacher,
N_LISTS teacher lists, batch 32) at each lr in LRS (comma-separated) and prints, at step 250 and every 500
steps (a shorter run: at its end), the held-out P(owl) and KL(teacher || student) over the number tokens on 256
held-out teacher lists, as a fraction of KL(teacher || base). One thread; the bases must be cached
(configs/world_base.py)."""
import copy
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from experiments import subliminal_numbers as S  # noqa: E402
from experiments import world_base as B  # noqa: E402
from train import ConfigError, cli, finetune, probe_words, refused  # noqa: E402


def main(argv):
    # a negative lr is a value out of range, not an option: it takes none (one error line, then the usage)
    argv = probe_words(argv, __doc__, value=r"[-+.\d,einfa]+")
    if len(argv) < 2:  # LRS and STEPS are needed
        return refused(__doc__.strip())  # status 2, as a script run through train.cli
    torch.set_num_threads(1)
    try:  # a mistyped argument: one line and the usage, before the base is loaded (not a ValueError traceback after)
        if len(argv) > 9:
            raise ValueError(f"{len(argv)} arguments, nine at most")

        def number(text, name, kind):  # int()'s own message named neither the argument nor its place
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{name} {text!r}: expected {'an integer' if kind is int else 'a number'}") from None
        arg = lambda i, default: argv[i] if len(argv) > i else default
        lrs, steps = [number(x, "LRS", float) for x in argv[0].split(",")], number(argv[1], "STEPS", int)
        p, n_lists = number(arg(2, "0"), "P", int), number(arg(3, "4000"), "N_LISTS", int)
        schedule = arg(4, "constant")
        temperature = number(arg(5, "1.0"), "TEMPERATURE", float)  # of the training loss; the KL printed is at T = 1
        optimizer = arg(6, "adamw")  # sgd: plain gradient descent, the theorem's setting
        # TEACHER = OPTIMIZER:LR[:blocks] (e.g. sgd:0.1) trains the teacher that way instead of the default
        # (adamw:3e-4); ":blocks" freezes the (tied) token embedding during the teacher's fine-tune, so the trait
        # must go into the blocks; a number (adamw:1e-3:blocks:1000) is its step limit (default 300)
        teacher_kw = {}
        if len(argv) > 7:
            t_opt, _, t_lr = argv[7].partition(":")
            t_lr, *rest = t_lr.split(":")
            # (an lr left out was "not enough values to unpack"; a mistyped blocks or step limit was dropped, silently)
            if not t_lr or any(r != "blocks" and not r.isdecimal() for r in rest):
                raise ValueError(f"TEACHER {argv[7]!r}: expected OPTIMIZER:LR[:blocks][:STEPS], e.g. adamw:3e-4:blocks")
            teacher_kw = dict(teacher_optimizer=t_opt, teacher_lr=float(t_lr),
                              teacher_trains="blocks" if "blocks" in rest else "all")
            teacher_kw.update({"teacher_max_steps": int(r) for r in rest if r.isdecimal()})
        student_trains = arg(8, "all")  # blocks: the student's token embedding stays frozen
        bad = [v for v, ok in ((schedule, ("constant", "cosine")), (optimizer, ("adamw", "sgd")),
                               (student_trains, ("all", "blocks"))) if v not in ok]
        bad = [repr(v) for v in bad] + [f"{name} {v} ({rule})" for name, v, rule, ok in (
            # (all(), not min/max: those pass a nan that is not first in the list, a traceback after a teacher)
            ("LRS", argv[0], "each lr > 0 and finite", all(0 < lr < math.inf for lr in lrs)),
            ("STEPS", steps, ">= 1", steps >= 1),
            ("P", p, ">= 0", p >= 0), ("N_LISTS", n_lists, ">= 1", n_lists >= 1),
            # (0 or nan: a loss of nan, "diverged" after the teacher; below 0 trained on flipped distributions,
            # silently)
            ("TEMPERATURE", f"{temperature:g}", "> 0 and finite", 0 < temperature < math.inf)) if not ok]
        if bad:
            raise ValueError(f"unexpected value {bad[0]}")
        # evals=1: the probe measures its own steps (the default's 4 refused few lists with "pass --evals=...")
        cfg = S.Config(arms=("soft", "control"), animals=("owl",), n_lists=n_lists, evals=1, **teacher_kw)
        S.validate(cfg)  # e.g. a teacher optimizer it does not know
    except (ValueError, TypeError, ConfigError) as e:
        return refused(f"error: {e}\n\n{__doc__}")
    B.check_cached(cfg, [p], who="probe_soft_channel.py")  # uncached: its one line (train.cli), without the usage
    A, tok = B.base_model(cfg, p)
    teacher, info = S.make_teacher(A, tok, cfg, p, "owl")
    seed = S.seed_int("subliminal-numbers", p, 0)
    data = S.student_data(tok, S.sample_lists(teacher, tok, n_lists, cfg, seed)[0], "cpu")
    held = S.student_data(tok, S.sample_lists(teacher, tok, 256, cfg, S.seed_int(seed, "heldout"), heldout=True)[0],
                          "cpu")
    t_held = S.held_logits(teacher, held)
    kl0 = S.number_kl(t_held, A, tok, held)
    print(f"base P(owl) {S.animal_rates(A, tok)[0]['owl']:.4f}; teacher {info}; KL(teacher || base) {kl0:.5f}",
          flush=True)
    for lr in lrs:
        model = copy.deepcopy(A)

        def report(step):
            kl = S.number_kl(t_held, model, tok, held)
            print(f"{optimizer} {student_trains} lr {lr:g} {schedule} T {temperature:g} step {step}: P(owl) "
                  f"{S.animal_rates(model, tok)[0]['owl']:.4f}, "
                  f"KL(teacher || student) {kl:.5f} = {kl / kl0:.2f} of the base's", flush=True)
        t0 = time.time()
        # step 250, then every 500, as far as it runs; a shorter run at its end (it reported nothing)
        at = {s for s in (250, *range(500, steps + 1, 500)) if s <= steps} or {steps}
        finetune(model, data, steps=steps, batch_size=32, lr=lr, seed=1, at=at,
                 on_eval=report, teacher=teacher.logits, subset=S.number_ids(tok), schedule=schedule,
                 temperature=temperature, optimizer=optimizer, trains=student_trains)
        print(f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
