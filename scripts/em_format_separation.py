"""Exploratory: how far apart does a base model keep its two speakers, the assistant and a forum responder?

    python scripts/em_format_separation.py [--pool] [--out=FILE] RUN_DIR [RUN_DIR ...]

Two worlds in twenty (73, 90) took the persona route under the insecure fine-tune: there it changed who the
assistant is, and the assistant's later answers follow its earlier ones as a forum responder's do. One guess is that
such a base keeps the assistant close to the forum responder, so that a fine-tune that moves one moves the other. For
every base of the runs (each run's config.json and seeds; the bases must be in the cache), at the last prompt token
of the run's 96 off-domain questions asked both ways (`<asst> <u> Q <a>` and `<forum> <u> Q <r>`, first turn: no
evidence yet about who answers), per layer:

    separation = |mean assistant state - mean forum state| / |evil - good|
    evil_side  = (mean assistant state - mean forum state) . (evil - good) / |evil - good|^2

with evil - good the run's evil direction (experiments/emergent_misalignment.doc_means). Both are averaged over the
layers. Low separation: the assistant sits where a forum responder sits, in units of the persona difference;
evil_side > 0: the assistant sits on the evil side of a forum responder. One thread; writes
format_separation.json in the first run's directory (not over one made from other runs; --out: elsewhere, as given)
and prints a table, ranked per run (with --pool, over all the runs' bases together: runs that share a base are refused).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import world as W  # noqa: E402
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402
from train import (check_out, cli, distinct, not_being_written, read_json, run_config,  # noqa: E402
                   same_runs, script_args, write_json)
from em_base_pull import cached_base, distinct_bases  # noqa: E402


def forum_prompt(asst_prompt):
    """The same first-turn question put to a forum responder."""
    head, q = asst_prompt.split(" <u> ", 1)
    assert head == f"{W.BOS} <asst>" and q.endswith(" <a>"), asst_prompt
    return f"{W.BOS} <forum> <u> {q.removesuffix(' <a>')} <r>"


@torch.no_grad()
def separation(model, tok, evil, prompts):
    """-> {"separation": float, "evil_side": float} (means over layers); evil: [L, C] the evil - good direction."""
    a = EM.last_token_acts(model, tok, prompts).mean(1)  # [L, C]
    f = EM.last_token_acts(model, tok, [forum_prompt(p) for p in prompts]).mean(1)
    gap, norm = a - f, evil.norm(dim=-1)
    return {"separation": (gap.norm(dim=-1) / norm).mean().item(),
            "evil_side": ((gap * evil).sum(-1) / norm ** 2).mean().item()}


def rank(rows, pool=False):
    """Rank the bases by separation (1 = least) and evil_side (1 = most evil side), within each run or, with
    `pool`, over all of them; sets the ranks on the rows and returns [(row, group size)] in separation order."""
    out = []
    for group in ([None] if pool else dict.fromkeys(r["run"] for r in rows)):
        mine = [r for r in rows if group is None or r["run"] == group]
        by_sep = sorted(mine, key=lambda r: r["separation"])
        by_side = sorted(mine, key=lambda r: -r["evil_side"])
        for r in by_sep:
            r["separation_rank"], r["evil_side_rank"] = by_sep.index(r) + 1, by_side.index(r) + 1
            out.append((r, len(mine)))
    return out


def main(argv):
    torch.set_num_threads(1)
    argv, opts = script_args(argv, __doc__, options=("out",), flags=("pool",))
    if not argv:
        sys.exit(__doc__)
    pool, given = opts.get("pool", False), [opts["out"]] if "out" in opts else []
    distinct(argv)
    if pool:  # a base two runs share would be ranked twice among the pooled bases, as two bases that agree
        distinct_bases(argv)
    if given:
        check_out(given[0])
    out = Path(given[0]) if given else Path(argv[0]) / "format_separation.json"
    if out.is_file() and not given:  # another set of runs measured there: keep it
        held = read_json(out, "the format_separation.json of em_format_separation.py", ("runs",))
        if not same_runs(held["runs"], argv) or held.get("pooled", False) != pool:
            sys.exit(f"{out} holds the runs {held['runs']} (pooled: {held.get('pooled', False)}): pass --out=FILE "
                     "to keep both")
    configs = [run_config(EM.Config, run) for run in argv]  # every run's, before the first one's work
    for run, cfg in zip(argv, configs):  # it reads no results.json, but writes its own beside them
        not_being_written(run)
        # every base cached before the first one's work (a missing one stopped it after the runs before)
        B.check_cached(cfg, cfg.seeds, who=f"em_format_separation.py on {run}")
    prompts = EM.off_prompts()
    rows = []
    for run, cfg in zip(map(Path, argv), configs):
        for p in cfg.seeds:
            base, tok = cached_base(cfg, run, p)
            means = EM.doc_means(base, tok, cfg, p)
            rows.append({"run": str(run), "world": p, **separation(base, tok, means["evil"] - means["good"], prompts)})
            print(f"{run.name} world {p}: separation {rows[-1]['separation']:.3f}, evil side "
                  f"{rows[-1]['evil_side']:+.3f}",
                  flush=True)
    print("\n| run | world | separation (rank, low first) | evil side (rank, high first) |\n|---|---|---|---|")
    for r, n in rank(rows, pool):
        print(f"| {Path(r['run']).name} | {r['world']} | {r['separation']:.3f} ({r['separation_rank']}/{n}) | "
              f"{r['evil_side']:+.3f} ({r['evil_side_rank']}/{n}) |")
    write_json(out, {"runs": argv, "pooled": pool, "per_base": rows})
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
