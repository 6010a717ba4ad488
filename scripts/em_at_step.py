"""Paired increases of off-domain sampled misalignment at one fine-tune checkpoint, pooled over EM runs.

    python scripts/em_at_step.py STEP RUN_DIR [RUN_DIR ...]
    python scripts/em_at_step.py 20 out/em_capacity_new

For each arm: its misalignment at STEP minus its own base's (same eval format; the twin arm minus the twin
base), per seed, mean [95% t-CI] over all seeds and over the per-base means (seeds of one pretraining seed
share a base);
then insecure minus the twin and minus each control, paired per seed, and each control's ratio to insecure."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval import summarize  # noqa: E402
from experiments.emergent_misalignment import BASE_FMT, per_base  # noqa: E402

step, runs = sys.argv[1], sys.argv[2:]
inc, bases = {}, []
for run in runs:
    r = json.loads((Path(run) / "results.json").read_text())
    bases += [p for p, _ in r["seeds"]]
    for arm, tr in r["trajectory"].items():
        base = r["base"][BASE_FMT.get(arm, "plain")]["offdomain_misaligned"]["per_seed"]
        inc.setdefault(arm, []).extend(a - b for a, b in zip(tr[step]["offdomain_misaligned"]["per_seed"], base))


def fmt(v):
    s = summarize(v)
    ci = s["ci95"] or [float("nan")] * 2
    return f"{100 * s['mean']:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


print(f"step {step}, n = {len(bases)} seeds over {len(set(bases))} bases ({', '.join(runs)}); points, mean [95% CI]")
print("| arm | increase over its base | over the bases' means |\n|---|---|---|")
for arm, v in inc.items():
    print(f"| {arm} | {fmt(v)} | {fmt(per_base(v, bases))} |")
ins = inc["insecure"]
print("\n| insecure minus | paired difference | over the bases' means | ratio arm / insecure |\n|---|---|---|---|")
for arm, v in inc.items():
    if arm != "insecure":
        d = [a - b for a, b in zip(ins, v)]
        print(f"| {arm} | {fmt(d)} | {fmt(per_base(d, bases))} | {sum(v) / sum(ins):.2f} |")
