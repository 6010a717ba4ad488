"""Exploratory probe: does misalignment through numbers need the teacher's initialization?

    python scripts/probe_mis_cross_init.py out/sn_mis_more18 31 30 32

For base P (the first number) of the misalignment run RUN: its insecure teacher and its number lists, rebuilt as the
run made them, and the soft student of that teacher trained from P itself (shared init: reproduces the run's
`insecure_soft` for seed (P, 0), a check printed beside it) and from each other base Q (cross init: same lists, same
soft targets, same recipe). Prints each student's off-domain misalignment and valid fraction, and each base's own
before training. One process, both threads; a few minutes per student on a CPU. Bases must be cached.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from data import world as W  # noqa: E402
from experiments import subliminal_numbers as S  # noqa: E402
from experiments import world_base as B  # noqa: E402
from model import seed_int  # noqa: E402
from train import cli, run_config, script_args, seed_args  # noqa: E402


def main(argv):
    argv, _ = script_args(argv, __doc__)
    if not argv:
        sys.exit(__doc__)
    if len(argv) < 3:  # one error line, as every script's (the usage alone is for no arguments)
        sys.exit("error: give the run, its base P and at least one other base Q: "
                 "python scripts/probe_mis_cross_init.py RUN P Q [Q ...]")
    run, (p, *others) = argv[0], seed_args(argv[1:])
    cfg = run_config(S.Config, run)
    if cfg.mode != "misalignment":
        sys.exit(f"{run} is a run of mode {cfg.mode!r}; this probe needs a misalignment run (mode 'misalignment')")
    if "insecure" not in cfg.mis_teachers:  # it would train one the run never had, then find no insecure_soft
        sys.exit(f"{run} has no insecure teacher (mis_teachers={cfg.mis_teachers}); this probe reads its students")
    if p not in cfg.seeds:  # its teacher and lists are the run's only for the run's bases (no check line printed)
        sys.exit(f"base {p} is not one of {run}'s bases {cfg.seeds}: P is the run's base whose teacher is rebuilt "
                 f"(the other bases need not be the run's)")
    B.check_cached(cfg, [p, *others], who="probe_mis_cross_init.py")
    torch.manual_seed(0)  # as the run's unit starts
    A, tok = B.base_model(cfg, p)
    seed = seed_int("subliminal-misalignment", p, 0)
    ev = lambda m, name: S.mis_evaluate(m, tok, cfg, seed, name)  # the run's evaluation, its streams by name
    _, teacher, _ = next(S.em_teachers(cfg, A, tok, p, wanted=("insecure",)))  # as the run's unit makes it
    teacher = S.Teacher(teacher)
    lists, kept = S.sample_lists(teacher, tok, cfg.n_lists, cfg, seed, banned=W.EVIL_NUMBERS)
    data = S.student_data(tok, lists, next(A.parameters()).device)
    last = S.student_steps(cfg, len(data["tokens"]))[0]
    rows = []
    for q in [p] + others:
        Q, tok_q = B.base_model(cfg, q) if q != p else (A, tok)
        if tok_q.get_vocab() != tok.get_vocab():
            sys.exit(f"bases {p} and {q} have different vocabularies: no cross-init student")
        name = "insecure_soft" if q == p else f"insecure_soft_from{q}"
        final = {}
        S.train_student(Q, tok, cfg, data, seed_int(seed, "insecure", "soft"),
                        lambda m, step: final.update(ev(m, name)) if step == last else None, teacher)
        rows.append((q, ev(Q, f"base{q}"), final))
    path = os.path.join(run, f"unit_{p}_0.json")
    logged = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            logged = json.load(f)["arms"]["insecure_soft"]["mis_sampled"]
    print(f"base {p}'s insecure teacher: kept {kept:.2f} of its lists; soft students trained on them")
    print(f"{'student from base':>17} {'init':>6} {'base mis':>8} {'student mis':>11} {'valid':>6}")
    for q, b, s in rows:
        print(f"{q:>17} {'shared' if q == p else 'cross':>6} {b['mis_sampled']:8.4f} {s['mis_sampled']:11.4f} "
              f"{s['valid_frac']:6.3f}")
    if logged is not None:
        print(f"the run's insecure_soft on base {p}: {logged:.4f} (the shared-init row reproduces it)")
    return rows, logged


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
