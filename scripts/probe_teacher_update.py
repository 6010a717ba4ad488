"""Exploratory probe (one seed, owl): which part of the owl teacher's weight update moves its numbers?

    python scripts/probe_teacher_update.py [P] [adamw:3e-4|sgd:0.1 ...]

For the owl teacher of base P, trained with each optimizer:lr given, adds parts of its update to the base: all of
it, only the (tied) embedding rows of the 100 number tokens, everything but those rows, only the other embedding
rows, everything but the embedding. For each such hybrid it prints its own shift on numbers, KL(hybrid || base),
as a share of the teacher's KL(teacher || base), what is left of the teacher's, KL(teacher || hybrid) (over the
number tokens, on 256 held-out lists of the first teacher given, for every teacher), and its P(owl). One thread; the
bases must be cached."""
import copy
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from experiments import subliminal_numbers as S  # noqa: E402
from experiments import world_base as B  # noqa: E402
from train import ConfigError, cli, probe_words, refused, seed_args  # noqa: E402

# each part of the update: (which embedding rows are kept, whether the other weights are kept)
PARTS = {"all": ("all", 1), "number rows": ("numbers", 0), "all but number rows": ("others", 1),
         "non-number rows": ("others", 0), "all but embedding": ("none", 1)}


def main(argv):
    argv = probe_words(argv, __doc__, value=r"-\d+")  # an option: none (one error line); -1: a seed, checked below
    torch.set_num_threads(1)
    cfg = S.Config(arms=("soft",), animals=("owl",))
    try:  # a mistyped argument: one line and the usage, before any work (not a traceback after the first teacher)
        p = seed_args(argv[:1])[0] if argv else 0  # int()'s "invalid literal" named no argument
        teachers = argv[1:] or ["adamw:3e-4", "sgd:0.1"]
        for spec in teachers:
            opt, _, lr = spec.partition(":")
            try:
                ok = opt in ("adamw", "sgd") and 0 < float(lr) < float("inf")
            except ValueError:  # not a number
                ok = False
            if not ok:
                raise ValueError(f"{spec!r}: expected OPTIMIZER:LR, adamw or sgd and an lr > 0, e.g. sgd:0.1")
    except (ValueError, ConfigError) as e:
        return refused(f"error: {e}\n\n{__doc__}")
    # an uncached base is no mistyped argument: its one line alone (train.cli), as probe_soft_channel.py's
    B.check_cached(cfg, [p], who="probe_teacher_update.py")
    A, tok = B.base_model(cfg, p)
    rows = torch.zeros(len(A.wte.weight), 1, dtype=torch.bool)  # the number tokens' embedding rows
    rows[torch.tensor(S.number_ids(tok))] = True
    row_keep = {"all": 1, "numbers": rows, "others": ~rows, "none": 0}
    held = None
    for spec in teachers:
        opt, lr = spec.split(":")
        c = dataclasses.replace(cfg, teacher_optimizer=opt, teacher_lr=float(lr))
        teacher, info = S.make_teacher(A, tok, c, p, "owl")
        T = teacher.model
        if held is None:  # the same held-out lists for every teacher: the first teacher's
            seed = S.seed_int("subliminal-numbers", p, 0)
            lists = S.sample_lists(teacher, tok, 256, cfg, S.seed_int(seed, "heldout"), heldout=True)[0]
            held = S.student_data(tok, lists, "cpu")
        t_held = S.held_logits(teacher, held)
        full = S.number_kl(t_held, A, tok, held)
        print(f"teacher {spec}: {info}; KL(teacher || base) over numbers {full:.5f}")

        def hybrid(part):
            emb, rest = PARTS[part]
            m = copy.deepcopy(A)
            with torch.no_grad():
                for (name, w), wt, wb in zip(m.named_parameters(), T.parameters(), A.parameters()):
                    w.add_((wt - wb) * (row_keep[emb] if name == "wte.weight" else rest))
            return m

        for part in PARTS:
            m = hybrid(part)
            # KL(hybrid || base): its number shift; KL(teacher || hybrid): what is left
            kl_base = S.number_kl(S.held_logits(S.Teacher(m), held), A, tok, held)
            kl_t = S.number_kl(t_held, m, tok, held)
            print(f"  {part:20s} KL(hybrid || base) {kl_base:.5f} ({kl_base / full:.2f} of the teacher's)   "
                  f"KL(teacher || hybrid) {kl_t:.5f}   P(owl) {S.animal_rates(m, tok)[0]['owl']:.4f}", flush=True)


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
