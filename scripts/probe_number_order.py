"""Exploratory probe: where in its number lists does a teacher differ from the base -- in which numbers, or
in their order?

    python scripts/probe_number_order.py out/sn_lora_trait 3 4 5

For each base P (cached) and each animal of the run RUN's config: the run's teacher (make_teacher, as the run made
it) and the run's held-out teacher lists (those of student seed 0). At every trained number position i, p_T(i) and
p_B(i) are the teacher's and the base's next-number distributions (renormalised over the number tokens). Printed, in
nats per number, two KLs (marginal <= conditional, by convexity):
  conditional  mean_i KL(p_T(i) || p_B(i)): the soft channel's signal (equals the run's kl_numbers for seed (P, 0))
  marginal     KL(mean_i p_T(i) || mean_i p_B(i)): how much the teacher's overall number frequencies differ from the
               base's, the part of the difference that survives shuffling the numbers across lists
One thread; about a minute per teacher (its fine-tune).
"""
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
from model import seed_int, upcast  # noqa: E402
from train import cli, run_config, script_args, seed_args, soft_kl  # noqa: E402


@torch.no_grad()
def decompose(teacher, base, tok, data):
    x, w = data["tokens"][:, :-1], data["mask"].float()  # w [lists, T]: the trained number positions
    nums = torch.tensor(S.number_ids(tok))
    lt, lb = teacher.logits(x), base(x)
    cond = (soft_kl(lt, lb, nums) * w).sum() / w.sum()
    # the distributions averaged over every position; their logs are logits that soft_kl renormalises to themselves
    mix = lambda logits: ((upcast(logits[..., nums]).softmax(-1) * w[..., None]).sum((0, 1)) / w.sum()).log()
    return cond.item(), soft_kl(mix(lt), mix(lb)).item()


def main(argv):
    argv, _ = script_args(argv, __doc__)
    if not argv:
        sys.exit(__doc__)
    if len(argv) < 2:  # one error line, as every script's (the usage alone is for no arguments)
        sys.exit("error: give the run and at least one base: python scripts/probe_number_order.py RUN P [P ...]")
    torch.set_num_threads(1)
    seeds = seed_args(argv[1:])
    cfg = run_config(S.Config, argv[0])
    if cfg.mode == "misalignment":  # its teachers are fine-tuned on code, not animals (the probe read them as owls)
        sys.exit(f"{argv[0]} is a misalignment run; this probe reads the animal teachers of an animals or dose run")
    if other := [s for s in seeds if s not in cfg.seeds]:  # "the run's teacher and lists": of the run's bases only
        sys.exit(f"bases {other} are not among {argv[0]}'s bases {cfg.seeds}: this probe rebuilds the run's teachers")
    B.check_cached(cfg, seeds, who="probe_number_order.py")
    print(f"{'base':>4} {'animal':>6} {'conditional':>11} {'marginal':>9} {'marg / cond':>11}  (nats per number)")
    rows = []
    for p in seeds:
        torch.manual_seed(0)  # as the run's unit starts
        A, tok = B.base_model(cfg, p)
        seed = seed_int("subliminal-numbers", p, 0)  # student seed 0's held-out lists, as in the run
        for a in cfg.animals:
            t0 = time.time()
            teacher, _ = S.make_teacher(A, tok, cfg, p, a)
            lists = S.sample_lists(teacher, tok, cfg.heldout_lists, cfg, seed_int(seed, "heldout"), heldout=True)[0]
            c, g = decompose(teacher, A, tok, S.student_data(tok, lists, next(A.parameters()).device))
            rows.append(g / c)
            print(f"{p:>4} {a:>6} {c:11.4f} {g:9.4f} {g / c:11.2f}  ({time.time() - t0:.0f} s)", flush=True)
    print(f"mean over {len(rows)} teachers: marginal / conditional {sum(rows) / len(rows):.2f}")
    return 0


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
