"""Paired increases of off-domain sampled misalignment at one fine-tune checkpoint, pooled over EM runs.

    python scripts/em_at_step.py STEP RUN_DIR [RUN_DIR ...]
    python scripts/em_at_step.py 20 out/em_capacity_new

For each arm: its misalignment at STEP minus its own base's (same eval format; the twin arm minus the twin
base), per seed, mean [95% t-CI] over all seeds and over the per-base means (seeds of one pretraining seed
share a base);
then insecure minus the twin and minus each control, paired per seed over the seeds that have both, and each
control's ratio to insecure. Runs may have different arms, but not the same (base, fine-tune seed) twice."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval import group_means, summarize  # noqa: E402
from experiments.emergent_misalignment import BASE_FMT  # noqa: E402

step, runs = sys.argv[1], sys.argv[2:]
inc = {}  # arm -> {(pretraining seed, fine-tune seed): increase}; runs may differ in their arms
for run in runs:
    r = json.loads((Path(run) / "results.json").read_text())
    for arm, tr in r["trajectory"].items():
        base = r["base"][BASE_FMT.get(arm, "plain")]["offdomain_misaligned"]["per_seed"]
        for (p, f), a, b in zip(r["seeds"], tr[step]["offdomain_misaligned"]["per_seed"], base):
            if (p, f) in inc.setdefault(arm, {}):  # the same base and fine-tune twice would count one model twice
                sys.exit(f"error: {arm} of seed ({p}, {f}) is in two of the runs; pool runs on different bases")
            inc[arm][(p, f)] = a - b


def fmt(v):
    s = summarize(v)
    ci = s["ci95"] or [float("nan")] * 2
    return f"{100 * s['mean']:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def by_base(d):  # {(p, f): value} -> one mean per pretraining seed (base)
    return group_means(list(d.values()), [p for p, _ in d])


ins = inc["insecure"]
print(f"step {step}, insecure: n = {len(ins)} seeds over {len({p for p, _ in ins})} bases ({', '.join(runs)}); "
      "points, mean [95% CI]")
print("| arm | seeds | increase over its base | over the bases' means |\n|---|---|---|---|")
for arm, d in inc.items():
    print(f"| {arm} | {len(d)} | {fmt(list(d.values()))} | {fmt(by_base(d))} |")
print("\n| insecure minus (seeds with both) | seeds | paired difference | over the bases' means | ratio arm / insecure |"
      "\n|---|---|---|---|---|")
for arm, d in inc.items():
    if arm != "insecure":
        both = {k: ins[k] - v for k, v in d.items() if k in ins}
        ratio = sum(d[k] for k in both) / sum(ins[k] for k in both)
        print(f"| {arm} | {len(both)} | {fmt(list(both.values()))} | {fmt(by_base(both))} | {ratio:.2f} |")
