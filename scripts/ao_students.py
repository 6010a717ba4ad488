"""Do the activation oracle and its baselines see misalignment passed subliminally, through number lists only?

    python scripts/ao_students.py RUN_DIR [--out=FILE.json] [--workers=N] [--n_lists=N]

RUN_DIR: a finished run of configs/activation_oracle.py, its oracles saved. On each of its bases, the students of
configs/subliminal_numbers_misalignment.py as its misalignment unit makes them (student seed 0; its n_lists, epochs,
teachers and seeds): the control student (trained on the base's own number lists) and the soft student of each
emergent-misalignment teacher (insecure, secure, educational: trained on the teacher's lists, the world's evil
numbers banned, to match its number distribution). A student sees nothing but number lists. Each is read on the
oracle run's evaluation (the held-out off-domain `<asst>` questions, block eval_layer, the last up to max_window
positions), from its shift to the base and raw, by the run's oracle (as saved), by the run's linear probe (trained
again from the same questions: checked against the run's unit, to the bit) and by M0 untrained (the forum-thread
reading of scripts/ao_patchscope.py); beside them its own misaligned share (log-prob). The teachers are read too:
the positive control (they are the oracle run's kind of arm, on other fine-tune seeds).

The numbers config's base keys (world, model, pretraining, seeds, cache) are the oracle run's, so the students are
of the oracle's own bases. --n_lists: lists per teacher (default the config's 4000; fewer make a quicker, noisier
student). Writes FILE.json (default: students.json in RUN_DIR) and FILE.png beside it; prints a table. --workers:
the run's by default (processes of one thread each); the bases must be in the run's cache.
"""
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from data import world as W  # noqa: E402
from data.tokenizer import load_tokenizer  # noqa: E402
from eval import fmt_stat, summarize  # noqa: E402
from experiments import activation_oracle as A  # noqa: E402
from experiments import emergent_misalignment as E  # noqa: E402
from experiments import subliminal_numbers as S  # noqa: E402
from experiments import world_base as B  # noqa: E402
from model import seed_int  # noqa: E402
from train import (ConfigError, cli, load_config, load_lm, pyplot, read_json, save_figure, script_run,  # noqa: E402
                   write_json)

NUMBERS_CONFIG = "configs/subliminal_numbers_misalignment.py"
READS = ("diff", "model", "probe_diff", "probe_model", "untrained", "behaviour")  # what each model gets
# how the table and the figure name them (diff: read from M's activations minus M0's; model: from M's own)
LABELS = {"diff": "oracle, M - M0", "model": "oracle, M", "probe_diff": "probe, M - M0", "probe_model": "probe, M",
          "untrained": "M0 untrained, forum", "behaviour": "own misaligned share"}
# the comparisons: insecure's soft student against each other student, and the teachers' (the positive control)
CONTRASTS = (("insecure_soft", "secure_soft"), ("insecure_soft", "educational_soft"), ("insecure_soft", "control"),
             ("teacher_insecure", "teacher_secure"))


def base_job(run, acfg, scfg, seed):
    """{"models": {name: {read: value}}, "same_probe", "same_oracle"}: one base's teachers and students, read."""
    t0 = time.time()
    tag = f"seed {seed}"
    torch.manual_seed(0)  # (as the misalignment unit)
    base, tok = B.base_model(acfg, seed)
    dev = next(base.parameters()).device
    oracle, _ = load_lm(run / "units" / f"oracle_s{seed}", device=dev)
    otok = load_tokenizer(run / "units" / f"oracle_s{seed}_tokenizer.json")
    (data, tasks), _, _ = A.oracle_questions(base, otok, acfg, seed)
    probe = A.train_probe(*A.probe_rows(data, tasks, otok, acfg.eval_layer), pool=acfg.probe_pool)
    prompts, items = E.off_prompts(), A.forum_items()
    reader = A.Reader(base, tok, oracle, otok, probe, prompts, False, acfg, seed)
    unit = read_json(run / "units" / f"unit_s{seed}.json", f"the run's unit of base {seed}", ("arms",))
    some_arm = unit["arms"][acfg.arms[0]]
    out = {"seed": seed, "models": {}, "same_oracle": reader.fixed == {k: some_arm[k] for k in reader.fixed},
           "same_probe": reader.fixed_probe == {k: some_arm["probe"][k] for k in reader.fixed_probe}}
    with torch.no_grad():
        base_vec = reader.base_vec
        none = A.forum_share(base, tok, items, acfg.eval_layer)

    def read(model, name):
        with torch.no_grad():  # (called inside a student's training loop, which records a graph)
            r = reader(model)
            d = A.window(model, tok, prompts, acfg.eval_layer, acfg.max_window, dev)[0] - base_vec
            r["untrained"] = A.forum_share(base, tok, items, acfg.eval_layer, d) - none
        out["models"][name] = r
        B.say(tag, f"{name}: oracle P(evil) from its shift {r['diff']:.3f}, probe {r['probe_diff']:.3f}, M0 "
                   f"untrained {r['untrained']:+.3f}; misaligned answers {r['behaviour']:.4f}", t0)

    # the misalignment unit's teachers, lists and students (experiments/subliminal_numbers.py, misalignment_unit)
    sn_seed = seed_int("subliminal-misalignment", seed, 0)
    teachers = {"control": S.Teacher(base)}
    for t, m, _ in S.em_teachers(scfg, base, tok, seed):
        teachers[t] = S.Teacher(m)
        read(m, f"teacher_{t}")
    for name, teacher in teachers.items():
        lists, _ = S.sample_lists(teacher, tok, scfg.n_lists, scfg, sn_seed, banned=W.EVIL_NUMBERS)
        data = S.student_data(tok, lists, dev)
        last = S.student_steps(scfg, len(data["tokens"]))[0]
        if name == "control":  # cross-entropy on the base's own lists
            S.train_student(base, tok, scfg, data, seed_int(sn_seed, name, "order"),
                            lambda m, step: step == last and read(m, "control"))
        else:  # the soft student: the teacher's number distribution on its lists
            S.train_student(base, tok, scfg, data, seed_int(sn_seed, name, "soft"),
                            lambda m, step, n=f"{name}_soft": step == last and read(m, n), teacher)
    return out


def main(argv):
    run, opts = script_run(argv, __doc__, options=("out", "workers", "n_lists"))
    run = Path(run)
    _, acfg, out, workers = A.script_setup(run, opts, "ao_students.py", "students.json", oracles=True)
    if not acfg.save_oracles:
        raise ConfigError(f"{run} did not save its oracles (save_oracles=False): this script reads them")
    module, scfg = load_config([NUMBERS_CONFIG] + ([f"--n_lists={opts['n_lists']}"] if "n_lists" in opts else []))
    module.validate(scfg)  # --n_lists=0 ran the teachers, then divided by zero lists
    # the students must be of the oracle's bases: the numbers config's base keys are the run's
    scfg = dataclasses.replace(scfg, **{f.name: getattr(acfg, f.name) for f in dataclasses.fields(B.Config)
                                        if f.name not in ("out_dir", "decorrelated", "samples")})
    assert all(B.cache_stem(acfg, s, False) == B.cache_stem(scfg, s, False) for s in acfg.seeds)
    got = B.parallel_map(base_job, [(run, acfg, scfg, s) for s in acfg.seeds], workers)
    names = list(got[0]["models"])
    summary = {"n_seeds": len(got), "numbers_config": NUMBERS_CONFIG,
               "same_oracle": all(g["same_oracle"] for g in got), "same_probe": all(g["same_probe"] for g in got),
               "eval": {n: {r: summarize([g["models"][n][r] for g in got]) for r in READS} for n in names},
               "contrasts": {f"{a} - {b}": {r: summarize([g["models"][a][r] - g["models"][b][r] for g in got])
                                            for r in READS} for a, b in CONTRASTS},
               "per_base": [{"seed": g["seed"], **g["models"]} for g in got]}
    write_json(out, summary)
    lines = [f"teachers and subliminal students read ({run}, {len(got)} base{'s' * (len(got) != 1)}; the run's oracles "
             f"{'as saved' if summary['same_oracle'] else 'NOT the same as its units read'}, its probe "
             f"{'rebuilt to the bit' if summary['same_probe'] else 'rebuilt, NOT the same'}):", "",
             "| model (M) or contrast | " + " | ".join(LABELS[r] for r in READS) + " |",
             "|---" * (len(READS) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(fmt_stat(summary["eval"][n][r]) for r in READS) + " |" for n in names]
    lines += [f"| {c} | " + " | ".join(fmt_stat(v[r]) for r in READS) + " |" for c, v in summary["contrasts"].items()]
    print("\n".join(lines))
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def plot(summary, path):
    plt = pyplot()
    shown = ("diff", "probe_diff", "untrained", "behaviour")
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4))
    for ax, r in zip(axes, shown):
        cs = list(summary["contrasts"])
        st = [summary["contrasts"][c][r] for c in cs]
        err = A.error_bars(st)
        ax.bar(range(len(cs)), [s["mean"] for s in st], yerr=err, capsize=3,
               color=["C0", "C0", "C0", "C7"][:len(cs)])
        ax.set_xticks(range(len(cs)), [c.replace(" - ", "\n- ") for c in cs], fontsize=6)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(LABELS[r], fontsize=9)
    axes[0].set_ylabel("difference of readings", fontsize=8)
    fig.suptitle("subliminal students (blue) and their teachers (grey): what each reader sees", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


if __name__ == "__main__":
    commands.run(cli, main, sys.argv[1:])
