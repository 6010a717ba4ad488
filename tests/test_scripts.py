"""The analysis scripts: em_at_step.py pools emergent-misalignment runs (values pair up by (base, fine-tune seed)),
sn_*.py pool and compare numbers runs, em_patch_tokens.py patches coordinates between two models."""
import contextlib
import copy
import functools
import json
import math
import os
import re
import warnings
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, load_script, need_data, script_process, tiny_gpt
from data import world as W
from eval import fmt_ratio, mean_ci, ranks, summarize
from experiments import emergent_misalignment as EM
from experiments import world_base as B
from model import GPT, GPTConfig, generator
import train
from train import ConfigError


def write_run(path, results, experiment, **config):
    """A finished run directory as the analysis scripts read it: results.json, and config.json naming its experiment.
    An EM run's results hold every key train.run_results checks (empty where the test gives none)."""
    if experiment == "emergent_misalignment":
        results = {**dict.fromkeys(EM.RESULT_KEYS, {}), **results}
    (path / "results.json").write_text(json.dumps(results))
    (path / "config.json").write_text(json.dumps({"experiment": experiment, **config}))


def fake_run(path, seeds, arms, matched=None):
    """A results.json with only what the script reads: seeds, the base, each arm at step 20 and at its matched
    checkpoint (`matched`, default: the step-20 values)."""
    path.mkdir()
    st = lambda v: {"offdomain_misaligned": {"per_seed": v}}
    res = {"seeds": seeds, "base": {"plain": st([0.01] * len(seeds))},
           "trajectory": {a: {"20": st(v)} for a, v in arms.items()},
           "arms": {a: st(v) for a, v in (matched or arms).items()}}
    write_run(path, res, "emergent_misalignment")
    return str(path)


def fake_matched_run(path):
    """fake_run of one base and the insecure arm, with its config (ablation_step 20) and its matched step (2): what
    the scripts that rerun a base's fine-tunes read before any base is loaded."""
    run = fake_run(path, [[0, 0]], {"insecure": [0.1]})
    (path / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "ablation_step": 20}))
    res = json.loads((path / "results.json").read_text())
    res["arms"]["insecure"]["step"] = {"per_seed": [2]}
    (path / "results.json").write_text(json.dumps(res))
    return run


# The scripts run in this process (importing torch in a subprocess per call took ~1.3 s): `call` runs a script's
# main(argv) and returns what it printed; an error exit, sys.exit(message), raises SystemExit(message), whose
# message the command line (train.cli) prints to stderr as an "error: " line, exit status 2. conftest's
# `script_process` runs a script as a command: once per script (its first test below), to keep the command-line entry
# tested; its `command` runs that command line in this process. The scripts keep no state between calls.
script = functools.cache(load_script)


@pytest.fixture
def call(capsys):
    def run(name, *argv):
        capsys.readouterr()  # drop anything printed before
        before = open_figures()
        script(name).main(list(argv))
        # a script that drew a figure let pyplot go of it: notebooks (and these tests) call several in one process
        assert open_figures() == before, f"{name} left a figure open"
        return capsys.readouterr().out
    return run


def open_figures():
    plt = sys.modules.get("matplotlib.pyplot")  # (not imported: no figure drawn yet)
    return len(plt.get_fignums()) if plt else 0


def check_refused(run, *argv, match=None):
    """run(*argv) exits with an error status (sys.exit with a message, not a normal return or exit 0), or raises the
    project's one-line ConfigError."""
    with pytest.raises((SystemExit, ConfigError), match=match) as e:
        run(*argv)
    assert not isinstance(e.value, SystemExit) or e.value.code not in (None, 0)


@pytest.fixture
def run_script(call):
    return lambda *dirs, step="20": call("em_at_step", step, *dirs)


def test_pooling_runs_with_different_arms_pairs_by_seed(tmp_path, run_script):
    a = fake_run(tmp_path / "a", [[0, 0], [0, 1]], {"insecure": [0.11, 0.21], "secure": [0.01, 0.03]})
    b = fake_run(tmp_path / "b", [[1, 0], [1, 1]], {"insecure": [0.51, 0.61]})  # no secure arm here
    out = run_script(b, a)  # the run without secure first: pairing by position would mismatch
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "insecure: n = 4 seeds over 2 bases" in out
    # secure exists for base 0 only: insecure - secure = (0.10 - 0.00, 0.20 - 0.02), mean +14.0 points
    assert rows["secure"].split("|")[2].strip() == "2" and "+14.0" in out.split("insecure minus")[1]
    command = script_process("em_at_step", "20", b, a)  # the command line prints the same
    assert command.returncode == 0 and command.stdout == out, command.stderr
    # the same fine-tune in two runs would be counted twice: refused
    check_refused(run_script, a, fake_run(tmp_path / "c", [[0, 0]], {"insecure": [0.11]}), match="two of the runs")
    with pytest.raises(ConfigError, match="none: no such directory"):  # a mistyped run: one line (train.cli)
        run_script(a, str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="has no step 7; its steps: 20"):
        run_script(a, step="7")
    sn = tmp_path / "sn"
    sn.mkdir()
    write_run(sn, {}, "subliminal_numbers")  # another experiment's run: named, for every script that reads runs
    for name, argv in (("em_at_step", ["20", str(sn)]), ("em_code_vs_offdomain", [str(sn)]),
                       ("em_susceptibility", ["20", str(sn)]), ("sn_compare", [f"{a}:insecure", f"{a}:secure"]),
                       ("sn_mis_pool", [a]), ("sn_arms_figure", [f"{a}:insecure", f"--out={tmp_path / 'f.png'}"])):
        with pytest.raises(ConfigError, match="is a run of (subliminal_numbers|emergent_misalignment), not of"):
            script(name).main(argv)
    command = script_process("em_code_vs_offdomain", str(sn))  # as a command: the one line, exit status 2
    assert command.returncode == 2 and command.stderr.startswith("error: ") and "Traceback" not in command.stderr
    one = fake_run(tmp_path / "one", [[7, 0]], {"insecure": [0.21]})  # a quick run: one seed, no interval
    assert "| +20.0 [one seed: no interval] |" in run_script(one) and "nan" not in run_script(one)
    # an arm undefined in every seed (no valid answer) is said to be, not "+nan [one seed: no interval]"
    none = fake_run(tmp_path / "none_valid", [[7, 0], [7, 1]], {"insecure": [0.21, 0.3], "secure": [math.nan] * 2})
    assert "| secure | 2 | undefined in every seed (2) | undefined in every seed (1) |" in run_script(none)
    # a seed without valid answers (nan) is left out of the mean, the interval and the ratio, and said so; the bases'
    # column is over each base's mean (base 2 has three seeds), the ratio one of means (a mean of ratios gives 0.25)
    d = fake_run(tmp_path / "d", [[2, 0], [2, 1], [2, 2], [3, 0]], {"insecure": [0.11, 0.21, 0.41, 0.35],
                                                                   "secure": [0.07, float("nan"), 0.05, 0.03]})
    increase, minus = [line for line in run_script(d).splitlines() if line.startswith("| secure |")]
    assert "| +4.0 [" in increase and "(1 undefined)" in increase  # (6 + 4 + 2) / 3 points over the base
    assert "| +3.5 [" in increase  # bases: (6 + 4) / 2 and 2
    assert "| +24.0 [" in minus and "| +26.0 [" in minus  # (4 + 36 + 32) / 3; bases: (4 + 36) / 2 and 32
    assert minus.endswith(f"| {(0.06 + 0.04 + 0.02) / (0.10 + 0.40 + 0.34):.2f} |")  # seeds with both


def test_em_at_step_minus_counts_the_seeds_it_leaves_out_of_the_runs_before_it(tmp_path, run_script):
    # big's seeds (0, 0) and (0, 1) have no partner in `part`; part's (5, 0) none in big: 2 of big's seeds are left
    # out (3 less part's 2 would read 1)
    big = fake_run(tmp_path / "big", [[0, 0], [0, 1], [1, 0]], {"insecure": [0.5, 0.5, 0.5]})
    part = fake_run(tmp_path / "part", [[1, 0], [5, 0]], {"insecure": [0.2, 0.1]})
    out = run_script(big, "--minus", part)
    assert "left out, no partner seed after --minus: insecure 2 seeds\n" in out and "| insecure | 1 | " in out


def test_matched_view_and_paired_differences_between_sets_of_runs(tmp_path, run_script):
    big = fake_run(tmp_path / "big", [[0, 0], [0, 1], [1, 0]], {"insecure": [0.5, 0.5, 0.5]},
                   matched={"insecure": [0.05, 0.07, 0.03]})
    small = fake_run(tmp_path / "small", [[1, 0], [0, 1]], {"insecure": [0.2, 0.1]},
                     matched={"insecure": [0.02, 0.04]})
    out = run_script(big, step="matched")
    assert "matched checkpoint, insecure: n = 3" in out
    assert "| insecure | 3 | +4.0 [" in out  # (4 + 6 + 2) / 3 points over the base's 1
    # per (base, fine-tune seed): (0, 1) 0.07 - 0.04 and (1, 0) 0.03 - 0.02; (0, 0) has no partner
    out = run_script(big, "--minus", small, step="matched")
    assert "| insecure | 2 | +2.0 [" in out and "insecure minus" not in out
    assert "left out, no partner seed after --minus: insecure 1 seed\n" in out  # said (the header names big's run)
    assert "left out" not in run_script(small, "--minus", big, step="matched")  # each of small's seeds is in big
    assert "| insecure | 2 | +35.0 [" in run_script(big, "--minus", small)  # step 20: 30 and 40 points
    other = fake_run(tmp_path / "other", [[5, 0]], {"insecure": [0.1]})
    check_refused(run_script, big, "--minus", other, match="no insecure seed")  # no seed in common: an
                                                                                # error, not an empty table
    # --minus=RUN was "unknown option --minus=...; the options are --share and --minus"
    check_refused(run_script, big, f"--minus={small}", match="--minus stands alone, the runs after it as separate "
                                                              "words \\(--minus RUN ...\\), not --minus=")


def test_em_at_step_on_insecure_alone_says_there_is_nothing_to_pair_and_refuses_a_run_without_it(tmp_path, run_script):
    # a run of the insecure arm alone (arms=("insecure",), twin=False) printed the paired table's header and no row
    a = fake_run(tmp_path / "a", [[0, 0], [1, 0]], {"insecure": [0.11, 0.21]})
    for step in ("20", "matched"):
        out = run_script(a, step=step)
        assert "| insecure | 2 | +15.0 [" in out and "insecure minus" not in out
        assert out.endswith("\nno control or twin in these runs: no paired differences with insecure\n")
    # a results.json edited to lack the insecure arm was a KeyError traceback; an arm lacking at its matched
    # checkpoint is left out there (it was a KeyError too)
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    res["arms"] = {"secure": res["arms"]["insecure"]}
    (tmp_path / "a" / "results.json").write_text(json.dumps(res))
    assert "no control or twin" in run_script(a)  # step 20 reads the trajectory, which has it
    with pytest.raises(ConfigError, match="results.json has no insecure arm in its arms \\(it has: secure\\): "
                                          "edited.*`python eval.py .*/a` writes it again"):
        run_script(a, step="matched")
    res["trajectory"] = {}
    (tmp_path / "a" / "results.json").write_text(json.dumps(res))
    command = script_process("em_at_step", "20", a)  # as a command: one line, exit status 2
    assert command.returncode == 2 and command.stderr.count("\n") == 1, command.stderr
    assert (command.stderr.startswith("error: ")
            and "has no insecure arm in its trajectory (it has: none)" in command.stderr)


def test_em_at_step_reads_the_step_asked_against_each_arms_own_base_and_groups_by_base(tmp_path, run_script):
    """Step 5 of a run with steps 5 and 20; the decorrelated twin's arm over the twin base (5%), not the world's (1%);
    the interval over the bases' means groups the fine-tune seeds of each pretraining seed."""
    st = lambda v: {"offdomain_misaligned": {"per_seed": v}}
    path = tmp_path / "run"
    path.mkdir()
    res = {"seeds": [[0, 0], [0, 1], [1, 0], [1, 1]],
           "base": {"plain": st([0.01] * 4), "decorrelated": st([0.05] * 4)},
           "trajectory": {"insecure": {"5": st([0.11, 0.13, 0.31, 0.33]), "20": st([0.5] * 4)},
                          "insecure_decorrelated": {"5": st([0.15] * 4), "20": st([0.5] * 4)}}}
    write_run(path, res, "emergent_misalignment")
    out = run_script(str(path), step="5")
    # increases 10, 12, 30, 32 points: bases' means 11 and 31 (sd 14.1, n = 2: t 12.706 x 10 = 127.1 either side);
    # grouped by fine-tune seed instead, 20 and 22 would give +-12.7
    assert "| insecure | 4 | +21.0 [" in out and "| +21.0 [-106.1, +148.1] |" in out
    assert "| insecure_decorrelated | 4 | +10.0 [+10.0, +10.0] |" in out  # 15% over the twin base's 5%


def test_em_at_step_counts_bases_as_pretraining_seeds_not_fine_tune_seeds(tmp_path, run_script):
    """The header's "over N bases" counts pretraining seeds: three fine-tunes of base 0 and one of base 1 are 4 seeds
    over 2 bases (counting fine-tune seeds would say 3)."""
    a = fake_run(tmp_path / "a", [[0, 0], [0, 1], [0, 2], [1, 0]], {"insecure": [0.11, 0.21, 0.31, 0.41]})
    assert "insecure: n = 4 seeds over 2 bases" in run_script(a)


def test_em_code_vs_offdomain_pairs_each_checkpoint_with_its_code_share(tmp_path, call):
    """One row per checkpoint, in step order: the mean code share and the off-domain increase over each seed's own
    base in points; the figure is written; a directory without results.json is refused."""
    run = tmp_path / "run"
    run.mkdir()
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}
    res = {"seeds": [[0, 0], [1, 0]], "base": {"plain": st([0.01, 0.03], [0.0, 0.0])},
           "trajectory": {"insecure": {"10": st([0.11, 0.13], [0.99, 1.0]), "2": st([0.02, 0.06], [0.8, 0.9])}}}
    write_run(run, res, "emergent_misalignment")
    out = call("em_code_vs_offdomain", str(run), f"--out={tmp_path / 'f.png'}")
    assert "| run | 2 | 0.850 | +2.0 [" in out and "| run | 10 | 0.995 | +10.0 [" in out  # (1 + 3) / 2, (10 + 10) / 2
    assert out.index("| run | 2 |") < out.index("| run | 10 |") and (tmp_path / "f.png").is_file()
    with pytest.raises(ConfigError, match="nothing: no such directory"):
        call("em_code_vs_offdomain", str(tmp_path / "nothing"))
    # --out into a folder that does not exist (a mistyped path) was a FileNotFoundError traceback after the work
    check_refused(lambda *a: call("em_code_vs_offdomain", *a), str(run), f"--out={tmp_path / 'nodir' / 'f.png'}",
            match="--out needs a file in an existing directory")


def test_em_code_vs_offdomain_deviation_and_crossing_interpolate_in_log_odds(tmp_path, call):
    """--reference: a run on the reference's own points deviates by 0; one that is 2 points higher at a code share
    inside the reference's range deviates by +2 there, interpolated linearly in the code's log-odds; checkpoints
    outside the range (here step 40, past the reference's step-5 code share) are not counted. --at reads the
    increase where the code share first reaches a level, interpolated the same way between two checkpoints."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}

    def run(name, traj):
        d = tmp_path / name
        d.mkdir()
        write_run(d, {"seeds": [[0, 0]], "base": {"plain": st([0.0], [0.0])},
                                                    "trajectory": {"insecure": {k: st([off], [c])
                                                                                for k, (off, c) in traj.items()}}},
                  "emergent_misalignment")
        return str(d)
    ref = run("ref", {"1": (0.01, 0.5), "5": (0.05, 0.9), "20": (0.20, 0.999)})
    # halfway in log-odds between the shares 0.5 (0) and 0.9 (ln 9) is ln 3, the share 0.75
    other = run("other", {"3": (0.05, 0.75), "40": (0.5, 0.9999)})
    out = call("em_code_vs_offdomain", other, ref, f"--reference={ref}")
    assert "| other | 1 | 1 | +2.00 |" in out  # 5 points against the reference's 3 at the midpoint (one seed: no CI)
    assert "| ref | 1 | 2 | +0.00 |" in out
    check_refused(lambda *a: call("em_code_vs_offdomain", *a), other, "--upto=5")  # --upto needs a reference
    # --at: where the code first reaches 0.75, between the reference's steps 1 (0.5) and 5 (0.9), halfway in log-odds:
    # 3 points interpolated, against 5 at the first checkpoint past it; the base (code 0) counts as step 0
    out = call("em_code_vs_offdomain", ref, other, "--at=0.75")
    assert "| ref | 1 of 1 | +3.00 | +5.00 |" in out and "| other | 1 of 1 | +5.00 | +5.00 |" in out
    assert "| ref | 0 | | | |" in out  # a base rate of 0: no rate ratio
    assert "| ref | 0 | | |" in call("em_code_vs_offdomain", ref, "--at=0.99999")
    check_refused(lambda *a: call("em_code_vs_offdomain", *a), ref, "--at=1.5")
    for bad in (f"--reference={ref}", "--at=0.5"):  # the tables take no figure file
        check_refused(lambda *a: call("em_code_vs_offdomain", *a), ref, bad, "--out=x.png")



def test_em_code_vs_offdomain_refuses_a_run_outside_the_references_range_and_an_at_that_is_no_number(tmp_path, call):
    """--reference: a run none of whose checkpoints (of a seed the reference has) lies in the reference's code range
    has no deviation to show: refused, naming the run, not a row of nan. --at=abc: the option's one line (float()'s
    ValueError, or comparing None, was a traceback)."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}
    runs = {}
    for name, seed, traj in (("ref", [0, 0], {"1": (0.01, 0.5), "5": (0.05, 0.9)}),
                             ("past", [0, 0], {"20": (0.2, 0.999)}),  # its one checkpoint past the range
                             ("other_seed", [1, 0], {"3": (0.05, 0.75)})):  # in range, but of a seed ref lacks
        runs[name] = tmp_path / name
        runs[name].mkdir()
        write_run(runs[name], {"seeds": [seed], "base": {"plain": st([0.0], [0.0])},
                               "trajectory": {"insecure": {k: st([o], [c]) for k, (o, c) in traj.items()}}},
                  "emergent_misalignment")
    for name in ("past", "other_seed"):
        check_refused(lambda *a: call("em_code_vs_offdomain", *a), str(runs[name]), f"--reference={runs['ref']}",
                      match=f"^{runs[name]}: no checkpoint of a seed the reference has lies in its code range$")
    check_refused(lambda *a: call("em_code_vs_offdomain", *a), str(runs["ref"]), "--at=abc",
                  match=r"^--at=abc: expected a code share between 0 and 1, e.g. --at=0.9$")

def test_em_code_vs_offdomain_rate_ratio_at_the_crossing_is_paired_per_seed(tmp_path, call):
    """--at's rate ratio: (base + increase interpolated at the crossing) / base per seed, geometric mean over seeds
    and over the worlds' means, ratio of means beside; a second run's ratios over the first's, paired by seed (not by
    position: run b lists its seeds in another order and lacks two of a's). The code share 0.75 lies halfway in
    log-odds between the checkpoints at 0.5 and 0.9, so the increase there is half of step 5's."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}

    def run(name, seeds, base, inc5):
        d = tmp_path / name
        d.mkdir()
        n = len(seeds)
        traj = {"1": st(base, [0.5] * n), "5": st([b + i for b, i in zip(base, inc5)], [0.9] * n)}
        write_run(d, {"seeds": seeds, "base": {"plain": st(base, [0.0] * n)},
                                                    "trajectory": {"insecure": traj}}, "emergent_misalignment")
        return str(d)
    # a: levels 3, 6, 4, 16 points over bases 1, 1, 2, 4: ratios 3, 6, 2, 4 (world 0 has two fine-tune seeds)
    a = run("a", [[0, 0], [0, 1], [1, 0], [2, 0]], [0.01, 0.01, 0.02, 0.04], [0.04, 0.10, 0.04, 0.24])
    # b: levels 20, 2 over bases 8, 1: ratios 2.5 (world 2), 2 (world 0)
    b = run("b", [[2, 0], [0, 0]], [0.08, 0.01], [0.24, 0.02])
    out = call("em_code_vs_offdomain", a, b, "--at=0.75")
    assert "| a | 4 | 2.00 | 3.46 [" in out  # (3 x 6 x 2 x 4)^(1/4)
    assert "| 3.24 [" in out  # over the worlds: (sqrt(3 x 6) x 2 x 4)^(1/3)
    assert "| b | 2 | 4.50 | 2.24 [" in out and "| 2.44 |" in out  # sqrt(2.5 x 2); 11 / 4.5
    assert "| b | 2 | 0.65 [" in out  # sqrt(2/3 x 2.5/4): by seed; by position 0.91, unpaired 0.78


def test_em_code_vs_offdomain_deviation_averages_per_seed_then_over_seeds(tmp_path, call):
    """Seed (0, 0) has two checkpoints in range, 1 and 3 points above the reference, seed (1, 0) one, 5 above: the
    deviation is (2 + 5) / 2 = 3.5 (pooling the checkpoints would give 3); a seed the reference lacks is ignored."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}

    def run(name, seeds, traj):
        d = tmp_path / name
        d.mkdir()
        write_run(d, {"seeds": seeds, "base": {"plain": st([0.0] * len(seeds),
                                                    [0.0] * len(seeds))}, "trajectory": {"insecure": traj}},
                  "emergent_misalignment")
        return str(d)
    flat = [0.5, 0.9]  # the reference: off-domain 0 at both code shares, so a deviation is the run's own increase
    ref = run("ref", [[0, 0], [1, 0]], {"1": st([0.0, 0.0], [flat[0]] * 2), "5": st([0.0, 0.0], [flat[1]] * 2)})
    other = run("other", [[0, 0], [1, 0], [2, 0]], {"2": st([0.01, 0.05, 0.2], [0.6, 0.7, 0.7]),
                                                    "3": st([0.03, 0.5, 0.2], [0.8, 0.95, 0.8])})
    assert "| other | 2 | 3 | +3.50 [" in call("em_code_vs_offdomain", other, f"--reference={ref}")


def test_em_code_vs_offdomain_at_reads_each_seeds_first_crossing_and_pairs_ratios_per_seed(tmp_path, call):
    """--at=0.9 per seed, the base as step 0: seed (0, 0) reaches 0.9 exactly at step 1 (its increase there, 4
    points), though its code later dips to 0.5 and crosses again; seed (1, 0) never reaches it (left out: 3 of 4);
    seed (2, 0) crosses between its base (0.5, log-odds 0) and step 1 (81/82, log-odds 2 ln 9), halfway: 5 of 10
    points; seed (4, 0) reaches it at -2 points on a base of 2, a level of 0: no rate ratio (its log is undefined)."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}

    def run(name, seeds, base, traj):
        d = tmp_path / name
        d.mkdir()
        write_run(d, {"seeds": seeds, "base": {"plain": st(*base)},
                      "trajectory": {"insecure": {k: st(*v) for k, v in traj.items()}}}, "emergent_misalignment")
        return str(d)
    seeds = [[0, 0], [1, 0], [2, 0], [4, 0]]
    a = run("a", seeds, ([0.02, 0.01, 0.01, 0.02], [0.0, 0.3, 0.5, 0.1]),
            {"1": ([0.06, 0.01, 0.11, 0.0], [0.9, 0.5, 81 / 82, 0.5]),
             "5": ([0.03, 0.01, 0.11, 0.0], [0.5, 0.8, 0.99, 81 / 82]),
             "10": ([0.11, 0.01, 0.11, 0.0], [0.99, 0.8, 0.99, 0.99])})
    # b: two of a's seeds (listed in another order) reaching 0.9 at 12 points on bases of 1 and 2: ratios twice a's
    b = run("b", [[2, 0], [0, 0]], ([0.01, 0.02], [0.5, 0.0]), {"1": ([0.12, 0.12], [0.9, 0.9])})
    out = call("em_code_vs_offdomain", a, b, "--at=0.9")
    # interpolated 4, 5, -2 (mean 2.33); at the first checkpoint past 0.9: 4, 10, -2 (mean 4)
    assert "| a | 3 of 4 | +2.33 [" in out and "| +4.00 [" in out.split("| a | 3 of 4 |")[1].splitlines()[0]
    # ratios (2 + 4) / 2 = 3 and (1 + 5) / 1 = 6: geometric mean sqrt(18), ratio of means 6 / 1.5
    assert "| a | 2 | 1.50 | 4.24 [" in out and out.split("| a | 2 | 1.50 |")[1].splitlines()[0].endswith("| 4.00 |")
    # b over a seed by seed is 2 for both seeds, so no spread; over a's geometric mean it would be 6 and 12 / 4.24
    assert "| b | 2 | 2.00 [2.00, 2.00] | 2.00 [2.00, 2.00] |" in out


def test_em_code_vs_offdomain_says_which_seeds_had_no_valid_answer_instead_of_a_bare_nan(tmp_path, call):
    """A checkpoint with no valid off-domain answer (nan: eval.summarize leaves the seed out) printed '+nan' where no
    seed was left, and a mean over fewer seeds without saying so; now n/a, or the count left out, in every table."""
    nan = float("nan")
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}
    run = tmp_path / "a"
    run.mkdir()
    write_run(run, {"seeds": [[0, 0], [1, 0]], "base": {"plain": st([0.01, 0.02], [0.1, 0.2])},
                    "trajectory": {"insecure": {"2": st([nan, nan], [0.5, 0.6]), "5": st([nan, 0.12], [0.95, 0.95]),
                                                "20": st([0.2, 0.3], [0.99, 0.99])}}}, "emergent_misalignment")
    a = str(run)
    out = call("em_code_vs_offdomain", a, f"--out={tmp_path / 'f.png'}")
    assert "| a | 2 | 0.550 | n/a (no valid answer on any of its 2 seeds) |" in out
    assert "| a | 5 | 0.950 | +10.0 (1 of 2 seeds undefined: no valid answer) |" in out  # seed (1, 0): 12 - 2
    out = call("em_code_vs_offdomain", a, "--at=0.9")  # both seeds cross 0.9 between steps 2 and 5
    assert "| a | 2 of 2 | n/a (no valid answer on any of its 2 seeds) | +10.00 (1 of 2 seeds undefined" in out
    # against itself: seed (1, 0)'s defined checkpoint (step 5) deviates by 0, its undefined one (step 2) left out (it
    # made the seed undefined); seed (0, 0) has none defined in range
    assert "| a | 2 | 1 | +0.00 (1 of 2 seeds undefined: no valid answer) |" in call("em_code_vs_offdomain", a,
                                                                                     f"--reference={a}")
    for argv in ([a], [a, "--at=0.9"], [a, f"--reference={a}"]):
        assert "+nan" not in call("em_code_vs_offdomain", *argv)


def test_em_code_vs_offdomain_at_keeps_a_falling_rate_and_groups_paired_ratios_by_world(tmp_path, call):
    """--at=0.9, every seed crossing at step 1 (code 0.9: the increase there). a: levels 4, 8 and 2 points over bases
    2, 2, 4: ratios 2, 4 and 0.5; a rate that fell (0.5) is a ratio like any other, left out only where the level is 0.
    b over a per seed: 2, 1, 4; over the worlds' means (world 0's two fine-tune seeds share its base) sqrt(2) and 4."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}

    def run(name, off):
        d = tmp_path / name
        d.mkdir()
        write_run(d, {"seeds": [[0, 0], [0, 1], [1, 0]], "base": {"plain": st([0.02, 0.02, 0.04], [0.5] * 3)},
                      "trajectory": {"insecure": {"1": st(off, [0.9] * 3)}}}, "emergent_misalignment")
        return str(d)
    a, b = run("a", [0.04, 0.08, 0.02]), run("b", [0.08, 0.08, 0.08])
    out = call("em_code_vs_offdomain", a, b, "--at=0.9")
    # (2 x 4 x 0.5)^(1/3) = 1.59; the ratio of means (14 / 3) / (8 / 3) = 1.75
    assert "| a | 3 | 2.67 | 1.59 [" in out and out.split("| a | 3 | 2.67 |")[1].splitlines()[0].endswith("| 1.75 |")
    # (2 x 1 x 4)^(1/3) = 2.00 over seeds; exp((ln(2) / 2 + ln(4)) / 2) = 2.38 over the worlds
    row = out.split("| b | 3 | 2.00 [")[1].splitlines()[0]
    assert row.split("|")[1].strip().startswith("2.38 [")


def test_em_code_vs_offdomain_puts_the_interval_over_the_worlds_means_beside_the_one_over_seeds(tmp_path, call):
    """Two worlds x two fine-tune seeds, a world's seeds 0.1 points apart: the tables of increases and deviations gave
    only the interval over the 4 seeds, as if independent, though a world's seeds share its base. Now a column over
    the 2 worlds' means beside it (n = 2, far wider); a table of runs with one seed per world is what it was."""
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": off}, "code_misaligned": {"per_seed": code}}

    def run(name, seeds, off1, off5):
        d = tmp_path / name
        d.mkdir()
        n = len(seeds)
        write_run(d, {"seeds": seeds, "base": {"plain": st([0.01] * n, [0.0] * n)},
                      "trajectory": {"insecure": {"1": st(off1, [0.5] * n), "5": st(off5, [0.9] * n)}}},
                  "emergent_misalignment")
        return str(d)
    seeds = [[0, 0], [0, 1], [1, 0], [1, 1]]
    w = run("w", seeds, [0.02, 0.021, 0.05, 0.051], [0.06, 0.061, 0.11, 0.111])
    ref = run("ref", seeds, [0.01] * 4, [0.01] * 4)  # no increase: a deviation from it is the run's own increase
    one = run("one", [[0, 0], [1, 0]], [0.02, 0.05], [0.06, 0.11])
    inc1, inc5 = ([100 * (x - 0.01) for x in off] for off in ([0.02, 0.021, 0.05, 0.051], [0.06, 0.061, 0.11, 0.111]))
    worlds = lambda v: summarize([(v[0] + v[1]) / 2, (v[2] + v[3]) / 2])  # over the worlds' means: n = 2
    width = lambda st: st["ci95"][1] - st["ci95"][0]
    assert width(worlds(inc1)) > 5 * width(summarize(inc1))
    out = call("em_code_vs_offdomain", w, one, f"--out={tmp_path / 'f.png'}")
    assert "| run | step | code misaligned | off-domain increase, points [95% CI] | over the worlds' means |" in out
    assert f"| w | 1 | 0.500 | {mean_ci(summarize(inc1), 1)} | {mean_ci(worlds(inc1), 1)} |" in out
    assert f"| w | 5 | 0.900 | {mean_ci(summarize(inc5), 1)} | {mean_ci(worlds(inc5), 1)} |" in out
    assert f"| one | 1 | 0.500 | {mean_ci(summarize([1, 4]), 1)} | {mean_ci(summarize([1, 4]), 1)} |" in out
    # --at=0.75: halfway in log-odds between the checkpoints at 0.5 and 0.9
    mid = [(a + b) / 2 for a, b in zip(inc1, inc5)]
    out = call("em_code_vs_offdomain", w, "--at=0.75")
    assert (f"| w | 4 of 4 | {mean_ci(summarize(mid), 2)} | {mean_ci(summarize(inc5), 2)} | "
            f"{mean_ci(worlds(mid), 2)} | {mean_ci(worlds(inc5), 2)} |") in out
    # --reference: per seed the mean of its two checkpoints' deviations, both in the reference's range
    out = call("em_code_vs_offdomain", w, f"--reference={ref}")
    assert f"| w | 4 | 8 | {mean_ci(summarize(mid), 2)} | {mean_ci(worlds(mid), 2)} |" in out
    # one seed per world: no column
    lines = lambda *argv: call("em_code_vs_offdomain", *argv).splitlines()
    got = lines(one, f"--out={tmp_path / 'f.png'}")
    assert got[:3] == ["| run | step | code misaligned | off-domain increase, points [95% CI] |", "|---|---|---|---|",
                       f"| one | 1 | 0.500 | {mean_ci(summarize([1, 4]), 1)} |"]
    got = lines(one, "--at=0.75")
    assert got[1:4] == ["| run | seeds reaching it | interpolated | at the first checkpoint past it |",
                        "|---|---|---|---|",
                        f"| one | 2 of 2 | {mean_ci(summarize([3, 7]), 2)} | {mean_ci(summarize([5, 10]), 2)} |"]
    got = lines(one, f"--reference={ref}")
    assert got[1:4] == ["| run | seeds | checkpoints in range | deviation |", "|---|---|---|---|",
                        f"| one | 2 | 4 | {mean_ci(summarize([3, 7]), 2)} |"]


def test_share_is_offdomain_over_code_increase_paired_by_seed(tmp_path, run_script):
    def run(name, seeds, off, code):
        path = tmp_path / name
        path.mkdir()
        st = lambda o, c: {"offdomain_misaligned": {"per_seed": o}, "code_misaligned": {"per_seed": c}}
        res = {"seeds": seeds, "base": {"plain": st([0.01] * len(seeds), [0.0] * len(seeds))},
               "trajectory": {"insecure": {"20": st(off, code)}}, "arms": {"insecure": st(off, code)}}
        write_run(path, res, "emergent_misalignment")
        return str(path)
    # increases 0.05 over 0.9 and 0.08 over 0.8; the third seed's code moved by 0.3 only: left out
    a = run("a", [[0, 0], [1, 0], [2, 0]], [0.06, 0.09, 0.5], [0.9, 0.8, 0.3])
    out = run_script(a, "--share", step="matched")
    assert "| insecure | 2 | +0.078 [" in out and "persona-level share" in out  # (0.056 + 0.100) / 2
    # against the same seeds elsewhere, paired: (0, 0) and (1, 0) only
    b = run("b", [[1, 0], [0, 0]], [0.05, 0.01], [0.9, 0.9])
    out = run_script(a, "--share", "--minus", b, step="matched")
    # (0, 0): 0.056 - 0; (1, 0): 0.100 - 0.04 / 0.9 = 0.056
    assert "| insecure | 2 | +0.056 [+0.056, +0.056]" in out


def test_share_covers_every_self_matched_arm_over_its_own_base(tmp_path, run_script):
    """--share is the share of every arm that learns insecure code (SHARE_ARMS), not of insecure alone: the
    decorrelated twin's, over the twin base, is 0.30 / 0.60 = 0.5 (over the plain base: 0.34 / 0.80)."""
    st = lambda o, c: {"offdomain_misaligned": {"per_seed": [o]}, "code_misaligned": {"per_seed": [c]}}
    arms = {"insecure": st(0.11, 0.9), "insecure_decorrelated": st(0.35, 0.8)}
    res = {"seeds": [[0, 0]], "base": {"plain": st(0.01, 0.0), "decorrelated": st(0.05, 0.2)},
           "trajectory": {a: {"20": v} for a, v in arms.items()}, "arms": arms}
    (tmp_path / "r").mkdir()
    write_run(tmp_path / "r", res, "emergent_misalignment")
    out = run_script(str(tmp_path / "r"), "--share", step="matched")
    assert "| insecure | 1 | +0.111 [one seed" in out and "| insecure_decorrelated | 1 | +0.500 [one seed" in out


def fake_sn_run(path, bases, students, valid=0.4, teachers=None, base_valid=None):
    """A misalignment-through-numbers results.json with what sn_mis_pool.py reads (one student per base)."""
    path.mkdir()
    ps = lambda v: {"per_seed": v}
    res = {"seeds": [[p, 0] for p in bases], "base": {"valid_fraction": ps(base_valid or [0.4] * len(bases))},
           "dose": {"16000": {"offdomain_misaligned": {k: ps(v) for k, v in students.items()},
                              "valid_fraction": {k: ps([valid] * len(bases)) for k in students}}},
           "teachers": {t: {"offdomain_misaligned": ps(v), "valid_fraction": ps([valid] * len(bases))}
                        for t, v in (teachers or {}).items()}}
    write_run(path, res, "subliminal_numbers", samples=10)
    return str(path)


@pytest.fixture
def pool(call):
    return lambda *argv: call("sn_mis_pool", *argv)


def test_sn_pool_log_figure_of_undefined_rates(tmp_path, pool):
    # no valid sample: the log axis of nothing was a matplotlib traceback; now no figure and a line, or the rest drawn
    nan = math.nan
    a = fake_sn_run(tmp_path / "a", [0, 1, 2], {"control": [nan] * 3, "insecure": [nan] * 3},
                    teachers={"insecure": [0.2, 0.1, 0.4]})
    out = pool("--log", "--lists=16000", f"--figure={tmp_path / 'f.png'}", a)
    assert "no figure: no student has a valid sample" in out and not (tmp_path / "f.png").exists()
    b = fake_sn_run(tmp_path / "b", [0, 1, 2], {"control": [0.01, 0.02, 0.01], "insecure": [nan] * 3},
                    teachers={"insecure": [nan] * 3})
    assert "wrote" in pool("--log", "--lists=16000", f"--figure={tmp_path / 'g.png'}", b)
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_sn_pool_log_scale_geometric_means_and_ratios(tmp_path, pool):
    a = fake_sn_run(tmp_path / "a", [0, 1, 2], {"control": [0.01, 0.01, 0.01], "insecure": [0.04, 0.02, 0.08]},
                    teachers={"insecure": [0.2, 0.1, 0.4]})
    out = pool("--log", "--lists=16000", a)
    # geometric mean of 0.04, 0.02, 0.08 is 0.04; the ratios to the control 4, 2, 8: geometric mean x4.00
    assert "insecure               0.0400 [" in out and "insecure / control: paired x4.00 [" in out
    assert "control                0.0100 [0.0100, 0.0100]" in out  # no spread: a point interval
    assert "teacher:" not in out  # the teachers feed the figure, not the students' table
    assert pool("--lists=16000", "--log", a) == out  # options in any order
    assert pool("--log", a, "--lists=16000") == out  # and after the runs
    for bad in ("--logx", "--log=1", "--lists=many", "--fig=x.png"):
        check_refused(pool, bad, a)
    # a fraction of 0 counts as half a sample over the valid ones: 0.5 / (0.4 x 960) = 0.0013, not log(0)
    z = fake_sn_run(tmp_path / "z", [3, 4], {"control": [0.0, 0.0], "insecure": [0.01, 0.01]})
    out = pool("--log", "--lists=16000", z)
    assert "control                0.0013 [0.0013, 0.0013]" in out
    check_refused(pool, "--log", "--lists=16000", a, "--minus", z,
                  match="--log with --minus is not supported")  # said so
    fig = tmp_path / "f.png"
    check_refused(pool, f"--figure={fig}", "--lists=16000", a, "--minus", z, match="--figure= with --minus is not")
    pool(f"--figure={fig}", "--log", "--lists=16000", a)  # returns: no error exit
    assert fig.stat().st_size > 1000


def test_sn_pool_a_student_defined_on_one_base_shows_its_mean_alone(tmp_path, pool):
    """A student with no valid answer on a base is undefined there (nan): with one base left it has a mean but no
    interval, in the table, the paired differences, --minus and the figure; nothing crashes."""
    nan = float("nan")
    a = fake_sn_run(tmp_path / "a", [0, 1], {"control": [0.01, 0.02], "insecure": [0.03, nan]})
    fig = tmp_path / "f.png"
    out = pool("--lists=16000", f"--figure={fig}", a)
    assert "insecure               0.0300        " in out and "control                0.0150 [" in out
    # paired: base 0 alone (+2 points); unpaired CIs cannot be compared without the insecure one's
    assert "insecure - control: paired +2.0 points; unpaired CIs undefined" in out
    assert fig.stat().st_size > 1000
    b = fake_sn_run(tmp_path / "b", [0, 1], {"control": [0.01, 0.01], "insecure": [0.01, 0.01]})
    minus = pool("--lists=16000", a, "--minus", b)
    assert "insecure               offdomain_misaligned +2.0 points" in minus
    log = pool("--log", "--lists=16000", a)
    assert "insecure / control: paired x3.00; unpaired CIs undefined" in log


def test_sn_pool_figure_draws_no_error_bar_for_a_student_defined_on_one_base(tmp_path, pool, saved_figures):
    # its mean alone: a bar of zero length (caps at the mean) would read as an exact number
    nan = float("nan")
    a = fake_sn_run(tmp_path / "a", [0, 1], {"control": [0.01, 0.02], "insecure": [0.03, nan]})
    pool("--lists=16000", f"--figure={tmp_path / 'f.png'}", a)
    ax = saved_figures[0].axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert {n: len(c.lines[2]) for n, c in zip(names, ax.containers)} == {"control": 1, "insecure": 0}


def test_sn_pool_pairs_per_base_and_refuses_shared_bases(tmp_path, pool):
    a = fake_sn_run(tmp_path / "a", [0, 1], {"control": [0.01, 0.02], "insecure": [0.03, 0.05]})
    b = fake_sn_run(tmp_path / "b", [2, 3], {"control": [0.01, 0.01], "insecure": [0.04, 0.03]})
    out = pool("--lists=16000", a, b)
    # paired differences 2, 3, 3, 2 points: mean +2.5, CI [+1.6, +3.4] (t 3.18 x 0.577 / 2 = 0.92)
    assert "n = 4 bases" in out and "insecure - control: paired +2.5 [+1.6, +3.4]" in out
    assert "unpaired CIs separated" in out and "below half the base" not in out
    command = script_process("sn_mis_pool", "--lists=16000", a, b)  # the command line prints the same
    assert command.returncode == 0 and command.stdout == out, command.stderr
    low = fake_sn_run(tmp_path / "c", [4, 5], {"control": [0.0, 0.0], "insecure": [0.1, 0.0]}, valid=0.1)
    assert "(below half the base: not readable)" in pool("--lists=16000", low)
    twin = fake_sn_run(tmp_path / "a2", [0, 1], {"control": [0.01, 0.02], "insecure": [0.03, 0.05]})
    check_refused(pool, "--lists=16000", a, twin, match="share bases")
    for twice in ([a, a], [a, "--minus", a]):  # the same run itself: refused before it is read
        with pytest.raises(ConfigError, match="is given twice: give each run once"):
            pool("--lists=16000", *twice)
    check_refused(pool, "--lists=8000", a, match="no students after 8000 lists")  # a dose the run did not
                                                                                  # measure: an error, not zeros
    extra = fake_sn_run(tmp_path / "d", [6, 7],
                        {"control": [0.01, 0.01], "insecure": [0.02, 0.02], "secure": [0.0, 0.0]},
                        teachers={"insecure": [0.1, 0.2]})  # teachers in one run only: not named among the students
    out = pool("--lists=16000", a, extra)  # secure exists in one run only: named, not paired with the wrong bases
    assert "left out (not in every run): ['secure']" in out and "insecure - secure" not in out
    sub = pool("--bases=1-2", "--lists=16000", a, b)  # bases 1 and 2 only: paired 3 and 3 points
    assert "n = 2 bases [1, 2]" in sub and "insecure - control: paired +3.0" in sub
    assert pool("--lists=16000", "--bases=1-2", a, b) == sub  # the options in either order
    check_refused(pool, "--bases=x", "--lists=16000", a, match="expected comma-separated seeds")


def test_sn_pool_minus_pairs_the_same_bases_across_runs(tmp_path, pool):
    a = fake_sn_run(tmp_path / "a", [0, 1, 2], {"insecure_soft": [0.05, 0.03, 0.04]})
    b = fake_sn_run(tmp_path / "b", [2, 0, 1], {"insecure_soft": [0.02, 0.04, 0.01]})  # other order: pair by base
    out = pool("--lists=16000", a, "--minus", b)
    # per base 0, 1, 2: +1, +2, +2 points: mean +1.7, t 4.30 x 0.577 / sqrt(3) = 1.43
    assert "insecure_soft          offdomain_misaligned +1.7 [+0.2, +3.1] points" in out
    # a student missing from one run of a side is left out, not paired by position with the wrong bases
    a1 = fake_sn_run(tmp_path / "a1", [0], {"insecure_soft": [0.05]})
    a2 = fake_sn_run(tmp_path / "a2", [1, 2], {"insecure_soft": [0.03, 0.04], "secure_soft": [0.0, 0.0]})
    out = pool("--lists=16000", a1, a2, "--minus", b)
    assert "left out (not in every run): ['secure_soft']" in out and not any(line.startswith("secure_soft")
                                                                             for line in out.splitlines())
    assert "insecure_soft          offdomain_misaligned +1.7 [+0.2, +3.1] points" in out
    c = fake_sn_run(tmp_path / "c", [0, 1, 5], {"insecure_soft": [0.0, 0.0, 0.0]})
    check_refused(pool, "--lists=16000", a, "--minus", c, match="same bases")
    # a side left empty said "pooling needs at least two bases;  hold none", a second --minus "--minus: no such
    # directory"; a dose one run lacks did not say which
    for argv in ([a, "--minus"], ["--minus", a]):
        check_refused(pool, "--lists=16000", *argv, match="--minus needs runs on both sides: RUN_DIR ... --minus")
    check_refused(pool, "--lists=16000", a, "--minus", b, "--minus", c, match="--minus is given once")
    check_refused(pool, "--lists=8000", a, "--minus", b, match=f"no students after 8000 lists in {re.escape(a)} ")



def test_sn_pool_refuses_sides_of_minus_with_no_student_in_common_and_a_run_of_several_students_per_base(tmp_path,
                                                                                                        pool):
    """--minus pairs each student both sides have: none in common is said with each side's students (unchecked, it
    would be called "the same students on both sides" of an empty list). A run with two students of one base is
    refused among the bases pooled (they share the base: not independent), and pooled where --bases keeps one student
    a base."""
    a = fake_sn_run(tmp_path / "a", [0, 1], {"insecure": [0.03, 0.05], "secure": [0.01, 0.02]})
    b = fake_sn_run(tmp_path / "b", [1, 0], {"control": [0.01, 0.01]})
    check_refused(pool, "--lists=16000", a, "--minus", b,
                  match=r"^--minus: no student is on both sides \(insecure, secure before it, control after it\)$")
    c = fake_sn_run(tmp_path / "c", [0, 0, 1, 2], {"control": [0.01, 0.02, 0.01, 0.01],
                                                   "insecure": [0.03, 0.04, 0.05, 0.03]})
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    (tmp_path / "c" / "results.json").write_text(json.dumps({**res, "seeds": [[0, 0], [0, 1], [1, 0], [2, 0]]}))
    for argv in ([], ["--bases=0-1"]):
        check_refused(pool, "--lists=16000", *argv, c,
                      match=f"^{re.escape(c)} has several students per base: pool runs with one student per base$")
    assert "insecure - control: paired +3.0 [" in pool("--lists=16000", "--bases=1-2", c)  # 4 and 2 points

def test_sn_pool_minus_of_runs_that_differ_only_in_arms_is_refused_not_a_table_of_zeros(tmp_path, pool):
    """Two runs of one setting, one with the soft students too (arms): the students both have are the same students,
    so --minus printed +0.0 [+0.0, +0.0] for each and dropped insecure_soft without a word."""
    nan = float("nan")
    a = fake_sn_run(tmp_path / "a", [0, 1], {"control": [nan, 0.02], "insecure": [0.03, 0.05],
                                             "insecure_soft": [0.04, 0.06]})
    b = fake_sn_run(tmp_path / "b", [1, 0], {"control": [0.02, nan], "insecure": [0.05, 0.03]})  # other base order
    check_refused(pool, "--lists=16000", a, "--minus", b, match=r"^--minus: control, insecure are the same students on "
                  r"both sides \(every difference exactly 0 on every base\), and insecure_soft on one side only: the "
                  r"runs trained them alike .* compare runs that train them differently")
    command = script_process("sn_mis_pool", "--lists=16000", a, "--minus", b)
    assert command.returncode == 2 and command.stderr.startswith("error: --minus: control, insecure are the same")
    assert command.stderr.count("\n") == 1 and command.stdout == ""
    # one student trained otherwise: it is paired; the same one is said to be the same; the one-sided one is named
    c = fake_sn_run(tmp_path / "c", [0, 1], {"control": [nan, 0.02], "insecure": [0.02, 0.03]})
    out = pool("--lists=16000", a, "--minus", c)
    assert "left out (on one side of --minus only): ['insecure_soft']" in out
    assert "control                the same students on both sides: every difference exactly 0" in out
    assert "insecure               offdomain_misaligned +1.5 [" in out and "control                offdomain" not in out


def test_sn_pool_final_students_are_the_same_only_with_the_same_log_probs_and_pooled_configs_are_compared(tmp_path,
                                                                                                      pool):
    """Sampled rates are counts that few samples can tie: two runs whose students differ (student_trains) were
    called "the same students", and pooled runs trained otherwise gave one table without a word."""
    def run(name, lp, **config):
        (tmp_path / name).mkdir()
        ps = lambda v: {"per_seed": v}
        st = lambda mis, lp_: {"offdomain_misaligned": ps(mis), "valid_fraction": ps([0.5, 0.5]),
                               "offdomain_misaligned_lp": ps(lp_)}
        res = {"seeds": [[0, 0], [1, 0]], "base": {"valid_fraction": ps([0.5, 0.5])},
               "arms": {"control": st([0.02, 0.04], [0.030, 0.031]), "insecure": st([0.06, 0.08], lp)}}
        write_run(tmp_path / name, res, "subliminal_numbers", samples=10, **config)
        return str(tmp_path / name)
    a = run("a", [0.05, 0.06], student_trains="all", seeds=[0, 1])
    b = run("b", [0.05, 0.07], student_trains="blocks", seeds=[0, 1])  # insecure: the same counts, other students
    out = pool(a, "--minus", b)
    assert "control                the same students on both sides: every difference exactly 0" in out
    assert "insecure               offdomain_misaligned +0.0 [" in out  # paired, not called the same
    assert "note: the runs pooled" not in out  # one run a side
    c = run("c", [0.05, 0.06], student_trains="blocks", seeds=[2, 3], workers=4)
    cres = json.loads((tmp_path / "c" / "results.json").read_text())
    (tmp_path / "c" / "results.json").write_text(json.dumps({**cres, "seeds": [[2, 0], [3, 0]]}))
    assert pool(a, c).startswith("note: the runs pooled differ in student_trains\n")  # (not seeds, nor workers)
    assert "note" not in pool(b, c)


def test_sn_pool_bases_subset_and_overlapping_intervals(tmp_path, pool):
    """--bases keeps only those bases' numbers, the base's valid fraction among them; intervals that overlap are said
    to overlap: insecure 0.040 +- 0.025 reaches down to 0.015, below the control's upper end, 0.023 + 0.038."""
    run = fake_sn_run(tmp_path / "a", [0, 1, 2, 3, 4], {"control": [0.01, 0.04, 0.02, 0.5, 0.5],
                                                        "insecure": [0.03, 0.05, 0.04, 0.0, 0.0]},
                      base_valid=[0.4, 0.4, 0.4, 0.9, 0.9])
    out = pool("--bases=0-2", "--lists=16000", run)
    assert "n = 3 bases [0, 1, 2]" in out and "base valid fraction 0.400;" in out  # bases 3 and 4 (0.9) left out
    assert "insecure - control: paired +1.7 [" in out and "unpaired CIs overlap" in out
    assert pool("--bases=0-1,2-99999999999", "--lists=16000", run).startswith("n = 5 bases")  # ranges, not their seeds
    check_refused(pool, "--bases=3-1", "--lists=16000", run, match="increasing ranges")  # an empty range, said
    check_refused(pool, "--bases=7-9", "--lists=16000", run, match="holds none of those --bases asks for")
    # one entry that names no base (40 for 4) beside ones that do: said, not dropped
    check_refused(pool, "--bases=0-2,40", "--lists=16000", run,
                  match=r"--bases: 40 names no base of the runs \(theirs: \[0, 1, 2, 3, 4\]\)")


def test_sn_pool_flags_only_students_below_half_the_base_and_pairs_the_educational_teacher(tmp_path, pool):
    """Valid 0.3 against the base's 0.4 is below the base but above half of it (0.2): readable, not flagged (the
    existing case, 0.1, is below both halves and the whole). The educational teacher's students are paired with the
    insecure one's like the secure ones: 1 and 3 points, +2.0. One base per side of --minus has no interval: refused."""
    a = fake_sn_run(tmp_path / "a", [0, 1], {"control": [0.01, 0.02], "insecure": [0.03, 0.05],
                                             "educational": [0.02, 0.02]}, valid=0.3)
    out = pool("--lists=16000", a)
    assert "base valid fraction 0.400; a student below 0.200" in out and "(below half the base" not in out
    assert "insecure - educational: paired +2.0 [" in out
    one_a = fake_sn_run(tmp_path / "one_a", [0], {"insecure": [0.03]})
    one_b = fake_sn_run(tmp_path / "one_b", [0], {"insecure": [0.01]})
    check_refused(pool, "--lists=16000", one_a, "--minus", one_b, match="pooling needs at least two bases")


def test_sn_pool_calls_identical_point_intervals_overlapping_and_keeps_one_seed_ranges(tmp_path, pool):
    """Students with no spread and the same rate have intervals that touch (insecure's lower end equals the
    control's upper end): they overlap, not "separated". --bases=0-0,2-2 is two one-seed ranges, bases 0 and 2."""
    run = fake_sn_run(tmp_path / "a", [0, 1, 2], {"control": [0.25] * 3, "insecure": [0.25] * 3})
    out = pool("--lists=16000", run)
    assert "insecure - control: paired +0.0 [+0.0, +0.0] points; unpaired CIs overlap (0.25000 vs 0.25000)" in out
    assert pool("--bases=0-0,2-2", "--lists=16000", run).startswith("n = 2 bases [0, 2]")


def test_sn_pool_readable_bound_is_half_the_bases_mean_valid_fraction_and_teachers_keep_their_bases(tmp_path, pool):
    """Bases valid 0.2 and 0.6: the bound is half their mean (0.2; half the lowest would be 0.1), so students valid 0.15
    are flagged. The teachers' rates (the figure's right panel) stay with their own bases, in the pooled bases' order
    and under --bases."""
    a = fake_sn_run(tmp_path / "a", [0, 1], {"control": [0.01, 0.02], "insecure": [0.03, 0.05]}, valid=0.15,
                    teachers={"insecure": [0.1, 0.3]}, base_valid=[0.2, 0.6])
    b = fake_sn_run(tmp_path / "b", [2, 3], {"control": [0.01, 0.02], "insecure": [0.03, 0.05]}, valid=0.15,
                    teachers={"insecure": [0.5, 0.7]}, base_valid=[0.2, 0.6])
    out = pool("--lists=16000", a)
    assert "base valid fraction 0.400; a student below 0.200 (half of it) is not readable" in out
    assert "insecure               0.0400 [" in out and "(below half the base: not readable)" in out
    S = script("sn_mis_pool")
    students, teachers, bases, _ = S.pool([a, b], 16000)
    assert bases == [0, 1, 2, 3] and teachers["insecure"]["offdomain_misaligned"] == [0.1, 0.3, 0.5, 0.7]
    _, teachers, bases, _ = S.pool([a, b], 16000, keep=[(1, 2)])
    assert bases == [1, 2] and teachers["insecure"]["offdomain_misaligned"] == [0.3, 0.5]


def test_sn_pool_log_figure_draws_student_against_teacher_on_log_axes_both_ways(tmp_path, pool, saved_figures):
    # --log: rates spread over decades on both sides; a teacher axis left linear crushed the low teachers into one
    # corner, and the diagonal student = teacher is only a straight line with both axes alike
    a = fake_sn_run(tmp_path / "a", [0, 1, 2], {"control": [0.01, 0.02, 0.01], "insecure": [0.004, 0.04, 0.2]},
                    teachers={"insecure": [0.002, 0.05, 0.5]})
    pool("--log", "--lists=16000", f"--figure={tmp_path / 'f.png'}", a)
    bx = saved_figures[0].axes[1]
    assert len(bx.collections) == 1 and (bx.get_xscale(), bx.get_yscale()) == ("log", "log")


def fake_animal_run(path, seeds, arm, arm_rates, control_rates, mass=0.9, at_250=None):
    """An animal-mode subliminal_numbers results.json with what sn_compare.py reads (owl only); at_250: the arm's and
    the control's rates at checkpoint 250."""
    path.mkdir()
    st = lambda v: {"target_rate": {"per_seed": v}, "animal_mass": {"mean": mass}}
    res = {"seeds": seeds, "animals": ["owl"],
           "arms": {arm: {"by_animal": {"owl": st(arm_rates)}}, "control": {"by_animal": {"owl": st(control_rates)}}}}
    if at_250:
        res["trajectory"] = {k: {"owl": {"250": {"per_seed": v}}} for k, v in zip((arm, "control"), at_250)}
    write_run(path, res, "subliminal_numbers")
    return str(path)


def ao_run(path, readings, shifts=(0.5, 0.3, 0.1), **config):
    """A finished oracle run with only what ao_draws.py reads: per base (0, 1, ...) its insecure and secure models'
    `diff` and `model` readings (`readings`: per base, insecure minus secure, put on insecure, secure at 0)."""
    path.mkdir()
    rows = [r for p, (x, shift) in enumerate(zip(readings, shifts)) for r in (
        {"seed": p, "arm": "insecure", "shift": shift, "diff": x, "model": x / 2},
        {"seed": p, "arm": "secure", "shift": 0.0, "diff": 0.0, "model": 0.0})]
    write_run(path, {"per_model": rows}, "activation_oracle", **config)
    return str(path)


def test_ao_draws_reliability_is_the_one_way_icc_and_its_spearman_brown_count(tmp_path, call):
    x = [[0.1, 0.3, 0.2], [0.5, 0.5, 0.6], [0.9, 0.7, 0.8]]  # 3 bases x 3 draws
    runs = [ao_run(tmp_path / f"d{j}", [row[j] for row in x], oracle_draw=j) for j in range(3)]
    out = call("ao_draws", *runs, f"--out={tmp_path / 'draws.json'}")
    res = json.loads((tmp_path / "draws.json").read_text())
    a = np.array(x)  # the variance split by numpy: between bases (k x the bases' means' variance) and within
    msb, msw = 3 * a.mean(1).var(ddof=1), a.var(1, ddof=1).mean()
    r1 = (msb - msw) / (msb + 2 * msw)
    assert res["diff"]["r1"] == pytest.approx(r1) and 0 < r1 < 1
    k = res["diff"]["k80"]  # the fewest draws whose mean's reliability k r1 / (1 + (k - 1) r1) reaches 0.8
    rel = lambda k: k * r1 / (1 + (k - 1) * r1)
    assert rel(k) >= 0.8 - 1e-12 and (k == 1 or rel(k - 1) < 0.8)
    assert res["diff"]["mean_of_draws"]["per_seed"] == pytest.approx(a.mean(1).tolist())
    assert [d["mean"] for d in res["diff"]["draws"]] == pytest.approx(a.mean(0).tolist())
    assert res["model"]["r1"] == pytest.approx(r1)  # half of each reading: the same split
    # within the insecure arm, each draw's readings (rising over the bases) against the shifts (0.5, 0.3, 0.1,
    # falling): rho -1 for every draw and for their mean
    assert res["diff"]["within_insecure_spearman"] == pytest.approx([-1.0] * 3)
    assert res["diff"]["within_insecure_spearman_mean"] == pytest.approx(-1.0)
    assert f"r1 = {r1:.3f}" in out and "wrote" in out
    # no within-base spread: every draw reads a base the same, reliability 1, one oracle is enough
    same = [ao_run(tmp_path / f"s{j}", [0.1, 0.5, 0.9], oracle_draw=j) for j in range(2)]
    call("ao_draws", *same, f"--out={tmp_path / 'same.json'}")
    assert json.loads((tmp_path / "same.json").read_text())["diff"]["k80"] == 1
    # every base's mean the same, the draws apart: nothing of a reading is the base's, no count of oracles is enough
    apart = [ao_run(tmp_path / f"n{j}", r, oracle_draw=j) for j, r in enumerate(([0.1, 0.9, 0.5], [0.9, 0.1, 0.5]))]
    out = call("ao_draws", *apart, f"--out={tmp_path / 'apart.json'}")
    assert json.loads((tmp_path / "apart.json").read_text())["diff"]["r1"] < 0 and "k80 = none" in out


def test_ao_draws_refuses_runs_that_are_not_draws_of_one_oracle(tmp_path, call):
    a = ao_run(tmp_path / "a", [0.1, 0.5, 0.9])
    b = ao_run(tmp_path / "b", [0.2, 0.4, 0.8], oracle_draw=1)
    check_refused(script("ao_draws").main, [a], match="at least two runs")
    check_refused(script("ao_draws").main, [a, a], match="given twice")
    other = ao_run(tmp_path / "c", [0.2, 0.4, 0.8], oracle_draw=1, oracle_steps=5)
    check_refused(script("ao_draws").main, [a, other], match="differ in oracle_steps, not only in oracle_draw")
    moved = ao_run(tmp_path / "m", [0.2, 0.4, 0.8], shifts=(0.5, 0.3, 0.2), oracle_draw=1)
    check_refused(script("ao_draws").main, [a, moved], match="its fine-tuned models are not")
    fewer = ao_run(tmp_path / "f", [0.2, 0.4], oracle_draw=1)
    check_refused(script("ao_draws").main, [a, fewer], match=r"bases \[0, 1\]")
    # a run made before a config key existed ran at its default: not a difference (a made without oracle_draw at
    # all, and with no init_seed, is draw 0 at the default init)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert "oracle_draw" not in cfg and "init_seed" not in cfg
    call("ao_draws", a, b, f"--out={tmp_path / 'ab.json'}")
    assert train.configs_differ([a, b]) == ["oracle_draw"]
    zero = ao_run(tmp_path / "z", [0.2, 0.4, 0.8], oracle_draw=0, init_seed=-1)  # the defaults, written out
    assert train.configs_differ([a, zero]) == []


def test_sn_compare_pairs_effects_by_seed(tmp_path, call):
    cmp = lambda *argv: call("sn_compare", *argv)
    a = fake_animal_run(tmp_path / "a", [[0, 0], [0, 1], [1, 0]], "trait", [0.15, 0.16, 0.14], [0.10, 0.10, 0.10])
    # the same seeds in another order, the same control: effects +1, +3, +2 points, so a - b = +4, +3, +2 points
    b = fake_animal_run(tmp_path / "b", [[1, 0], [0, 0], [0, 1]], "shuffled", [0.12, 0.11, 0.13], [0.10, 0.10, 0.10])
    out = cmp(f"{a}:trait", f"{b}:shuffled")
    # mean +3.0, sd 1, t(2) 4.303 / sqrt(3) = 2.48; and over the two bases' means (base 0's students share it and
    # its teacher): 3.5 and 2, mean 2.75, t(1) 12.706 x 1.061 / sqrt(2) = 9.53
    assert ("= +3.0 [+0.5, +5.5]; 3/3 seeds positive; over the 2 bases' means [-6.8, +12.3]\n" in out
            and "the same students (identical rates" in out)
    command = script_process("sn_compare", f"{a}:trait", f"{b}:shuffled")  # the command line prints the same
    assert command.returncode == 0 and command.stdout == out, command.stderr
    c = fake_animal_run(tmp_path / "c", [[0, 0], [0, 1], [2, 0]], "trait", [0.1] * 3, [0.1] * 3)
    check_refused(cmp, f"{a}:trait", f"{c}:trait", match="different seeds")
    check_refused(cmp, f"{a}:soft", f"{b}:shuffled", match="no arm 'soft'")
    check_refused(cmp, f"{a}:trait", f"{a}/:trait", match="both sides are")  # one arm against itself: exactly 0
    check_refused(cmp, f"{a}:trait", f"{b}:shuffled", f"{b}:trait", match="two sides, not 3")  # not the third ignored
    # a run folder whose name holds ":" (and one of the part before it beside it): "no such directory", with no
    # way to say it, as the run was read up to the first ":"
    colon = fake_animal_run(tmp_path / "x:y", [[1, 0], [0, 0], [0, 1]], "shuffled", [0.12, 0.11, 0.13], [0.1] * 3)
    (tmp_path / "x").mkdir()
    assert cmp(f"{a}:trait", f"{colon}:shuffled") == out.replace(f"{b}:", f"{colon}:")
    assert train.run_and_rest(f"{colon}:shuffled@250") == (colon, "shuffled@250")
    assert train.run_and_rest(f"{a}:trait=a: b") == (a, "trait=a: b")  # (a label's ":")
    assert train.run_and_rest("nowhere:x:y") == ("nowhere", "x:y")  # no folder: the script says so of "nowhere"
    # no animal in common: the header alone, exit 0, before
    w = fake_animal_run(tmp_path / "w", [[0, 0], [0, 1], [1, 0]], "trait", [0.1] * 3, [0.1] * 3)
    wres = json.loads((tmp_path / "w" / "results.json").read_text())
    wres["animals"], wres["arms"] = ["whale"], {k: {"by_animal": {"whale": v["by_animal"]["owl"]}}
                                                for k, v in wres["arms"].items()}
    (tmp_path / "w" / "results.json").write_text(json.dumps(wres))
    check_refused(cmp, f"{a}:trait", f"{w}:trait", match="no animal in common \\(owl vs whale\\)")
    one = fake_animal_run(tmp_path / "one", [[0, 0]], "trait", [0.15], [0.10])  # a quick run: one seed
    assert "= +5.0 [one seed: no interval]; 1/1 seeds positive" in cmp(f"{one}:trait", f"{one}:control")
    # @250: the arm and its control both at that checkpoint (the controls' final rates are 2 and 1 points lower);
    # effects +2, +3 against +1, +1: +1.5, t(1) 12.706 x 0.707 / sqrt(2) = 6.35; the controls differ there
    a = fake_animal_run(tmp_path / "a250", [[0, 0], [0, 1]], "trait", [0.15, 0.16], [0.10, 0.10],
                        at_250=([0.14, 0.15], [0.12, 0.12]))
    b = fake_animal_run(tmp_path / "b250", [[0, 1], [0, 0]], "trait", [0.12, 0.12], [0.10, 0.10],
                        at_250=([0.12, 0.12], [0.11, 0.11]))
    out = cmp(f"{a}:trait@250", f"{b}:trait@250")
    assert "trait@250 +2.5 (final students' animal mass 0.90)" in out and "trait@250 +1.0 (final students' mass" in out
    assert "(final students' mass 0.90 / 0.90)" in out and "(animal mass 0.90)" in cmp(f"{a}:trait", f"{b}:trait")
    assert "= +1.5 [-4.9, +7.9]; 2/2 seeds positive; one base: no interval over bases\n" in out
    assert f"{a}:control@250 and {b}:control@250: other" in out
    assert "(final students' mass" in cmp(f"{a}:trait@250", f"{b}:trait")  # one side at a checkpoint


def test_sn_compare_transfer_divides_each_seeds_effect_by_its_teachers_shift(tmp_path, call):
    """--transfer: effect / (teacher's rate - base's), per seed, so that runs with teachers of other strength compare
    the share that passed. a: effects 20, 10 points over teacher shifts 0.8, 0.4 (0.25 each); b, its seeds in another
    order: 16 and 8 points over the same shifts (0.20 each)."""
    def run(name, seeds, arm, ctl, teacher, base):
        path = fake_animal_run(tmp_path / name, seeds, "soft", arm, ctl)
        res = json.loads((tmp_path / name / "results.json").read_text())
        res["teachers"], res["base"] = {"owl": {"rate": {"per_seed": teacher}}}, {"owl": {"per_seed": base}}
        (tmp_path / name / "results.json").write_text(json.dumps(res))
        return path
    a = run("a", [[0, 0], [1, 0]], [0.30, 0.20], [0.10, 0.10], [0.90, 0.50], [0.10, 0.10])
    b = run("b", [[1, 0], [0, 0]], [0.18, 0.26], [0.10, 0.10], [0.50, 0.90], [0.10, 0.10])
    out = call("sn_compare", "--transfer", f"{a}:soft", f"{b}:soft")
    assert "transfer: each effect over its teacher's shift" in out
    assert "a:soft +0.250 (" in out and "b:soft +0.200 (" in out and "= +0.050 [+0.050, +0.050]; 2/2" in out
    assert "soft +15.0 (" in call("sn_compare", f"{a}:soft", f"{b}:soft")  # without it: points, as before
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    for moved in (0.05, 0.10):  # seed (1, 0)'s teacher below its base, then exactly at it (a share of nothing)
        res["teachers"]["owl"]["rate"]["per_seed"] = [moved, 0.90]
        (tmp_path / "b" / "results.json").write_text(json.dumps(res))
        check_refused(lambda *v: call("sn_compare", *v), "--transfer", f"{a}:soft", f"{b}:soft",
                      match=r"owl teacher is not above its base on seeds \[\(1, 0\)\]")
    c = fake_animal_run(tmp_path / "c", [[0, 0], [1, 0]], "soft", [0.3, 0.2], [0.1, 0.1])  # no teacher rates
    check_refused(lambda *v: call("sn_compare", *v), "--transfer", f"{a}:soft", f"{c}:soft",
                  match="no teacher and base rates of owl: --transfer needs them")


def test_sn_compare_reads_each_arm_against_its_own_baseline(tmp_path, call):
    # cross_init was read against A's control (the bases' gap added to its effect), not against cross_control
    st = lambda v: {"by_animal": {"owl": {"target_rate": {"per_seed": v}, "animal_mass": {"mean": 0.9}}}}
    runs = []
    for name, cross in (("a", [0.05, 0.06]), ("b", [0.05, 0.05])):
        res = {"seeds": [[0, 0], [0, 1]], "animals": ["owl"], "arms": {
            "control": st([0.10, 0.10]), "cross_init": st(cross), "cross_control": st([0.04, 0.04])}}
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, res, "subliminal_numbers")
        runs.append(f"{tmp_path / name}:cross_init")
    out = call("sn_compare", *runs)
    # effects against cross_control: +1.5 and +1.0 points (against control they read -4.5 and -5.0)
    assert "effect = arm - cross_control" in out and "cross_init +1.5 (" in out and "cross_init +1.0 (" in out
    # an arm without an animal mass (icl's students are prompts) reads n/a, not nan
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    del res["arms"]["cross_init"]["by_animal"]["owl"]["animal_mass"]
    (tmp_path / "b" / "results.json").write_text(json.dumps(res))
    out = call("sn_compare", *runs)
    assert "cross_init +1.0 (mass n/a)" in out and "nan" not in out


def test_sn_compare_reads_each_sides_control_at_its_own_checkpoint_counts_ties_and_needs_the_baseline(tmp_path, call,
                                                                                                     capsys):
    cmp = lambda *argv: call("sn_compare", *argv)
    # one run, the arm at checkpoint 250 against the same arm at the end: its controls are other students (0.12 at
    # 250, 0.10 at the end), so they differ; effects +2, +3 against +5, +6 points: -3 on both seeds
    a = fake_animal_run(tmp_path / "a", [[0, 0], [0, 1]], "trait", [0.15, 0.16], [0.10, 0.10],
                        at_250=([0.14, 0.15], [0.12, 0.12]))
    out = cmp(f"{a}:trait@250", f"{a}:trait")
    assert "= -3.0 [-3.0, -3.0]; 0/2 seeds positive; one base: no interval over bases\n" in out
    assert "other students (other checkpoints" in out
    # RUN:ARM@ (no step) compared the final students, silently; a checkpoint a side lacks did not say whose run
    check_refused(cmp, f"{a}:trait@", f"{a}:trait@250", match="expected RUN:ARM\\[@STEP\\]")
    b0 = fake_animal_run(tmp_path / "b0", [[0, 0], [0, 1]], "trait", [0.15, 0.16], [0.10, 0.10])
    check_refused(cmp, f"{a}:trait@250", f"{b0}:trait@250", match=f"{re.escape(b0)}: no checkpoint 250 for trait "
                  "\\(has: none\\): give RUN:ARM@STEP")
    assert capsys.readouterr().out == ""  # refused before its header was printed, not after it
    # so is the line naming an animal measured on one side only
    res = json.loads((tmp_path / "b0" / "results.json").read_text())
    res["animals"].append("whale")
    res["arms"] = {k: {"by_animal": {**v["by_animal"], "whale": v["by_animal"]["owl"]}} for k, v in res["arms"].items()}
    (tmp_path / "b0" / "results.json").write_text(json.dumps(res))
    check_refused(cmp, f"{a}:trait@250", f"{b0}:trait@250", match="no checkpoint 250 for trait")
    assert capsys.readouterr().out == ""
    # a seed whose effects are equal is not positive: effects +5, +1 against +1, +1 give differences 4 and 0
    b = fake_animal_run(tmp_path / "b", [[0, 0], [0, 1]], "trait", [0.15, 0.11], [0.10, 0.10])
    c = fake_animal_run(tmp_path / "c", [[0, 0], [0, 1]], "shuffled", [0.11, 0.11], [0.10, 0.10])
    out = cmp(f"{b}:trait", f"{c}:shuffled")
    assert "; 1/2 seeds positive; one base: no interval over bases\n  baselines" in out and "the same stud" in out
    # an arm on base B without its baseline (cross_control) is refused in one line, not a KeyError
    st = lambda v, mass: {"by_animal": {"owl": {"target_rate": {"per_seed": v}, "animal_mass": {"mean": mass}}}}
    (tmp_path / "x").mkdir()
    write_run(tmp_path / "x", {"seeds": [[0, 0], [0, 1]], "animals": ["owl"],
                               "arms": {"control": st([0.1, 0.1], 0.9), "cross_init": st([0.2, 0.2], 0.9)}},
              "subliminal_numbers")
    check_refused(cmp, f"{tmp_path / 'x'}:cross_init", f"{b}:trait", match="no arm 'cross_init' with its baseline")
    # each side's own baseline's mass: cross_control's (0.50) on the left, control's (0.90) on the right
    (tmp_path / "y").mkdir()
    write_run(tmp_path / "y", {"seeds": [[0, 0], [0, 1]], "animals": ["owl"],
                               "arms": {"control": st([0.1, 0.1], 0.8), "cross_init": st([0.2, 0.2], 0.7),
                                        "cross_control": st([0.1, 0.1], 0.5)}}, "subliminal_numbers")
    # (y's own control, 0.80, is neither: each mass read from its own side's run)
    assert "(mass 0.50 / 0.90)" in cmp(f"{tmp_path / 'y'}:cross_init", f"{b}:trait")


def test_sn_compare_reads_the_last_checkpoint_as_the_final_students_and_refuses_a_baseline_arm(tmp_path, call):
    """RUN:ARM@LAST (evals' last checkpoint is the end) against RUN:ARM was compared as "other checkpoints" with a
    difference of exactly 0; cross_control as a side printed an "effect" (its gap to base A's control) the run never
    computes."""
    cmp = lambda *argv: call("sn_compare", *argv)
    a = fake_animal_run(tmp_path / "a", [[0, 0], [0, 1]], "trait", [0.15, 0.16], [0.10, 0.10],
                        at_250=([0.14, 0.15], [0.12, 0.12]))
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    for arm, final in (("trait", [0.15, 0.16]), ("control", [0.10, 0.10])):  # a last checkpoint, 500: the end's rates
        res["trajectory"][arm]["owl"]["500"] = {"per_seed": final}
    res["arms"]["cross_control"] = res["arms"]["control"]
    (tmp_path / "a" / "results.json").write_text(json.dumps(res))
    check_refused(cmp, f"{a}:trait@500", f"{a}:trait", match="both sides are")
    assert "other checkpoints, 250 and the end" in cmp(f"{a}:trait@250", f"{a}:trait@500")
    check_refused(cmp, f"{a}:cross_control", f"{a}:trait",
                  match="cross_control is the baseline of soft_cross, cross_init, with no effect of its own")


def test_sn_compare_says_which_baselines_differ_by_how_much_and_why(tmp_path, call):
    """'controls differ (final students' control mass 0.90 / 0.90)': not which students differed (the rates at the
    checkpoint, not the masses), nor why, nor what it does to the difference; and cross_control was called control."""
    cmp = lambda *argv: call("sn_compare", *argv)
    a = fake_animal_run(tmp_path / "a", [[0, 0], [0, 1]], "trait", [0.15, 0.16], [0.10, 0.10],
                        at_250=([0.14, 0.15], [0.12, 0.12]))
    b = fake_animal_run(tmp_path / "b", [[0, 1], [0, 0]], "trait", [0.12, 0.12], [0.10, 0.10],
                        at_250=([0.12, 0.12], [0.11, 0.11]))
    # b: another n_lists (out_dir, arms, evals: no matter)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**config, "n_lists": 16000, "out_dir": "x", "arms": [],
                                                            "evals": 1}))
    out = cmp(f"{a}:trait@250", f"{b}:trait@250")
    # effects +2.5 and +1.0: the arms' rates' difference +0.5 less the baselines' +1.0 (0.12 against 0.11)
    assert (f"= +1.5 [-4.9, +7.9]; 2/2 seeds positive; one base: no interval over bases\n  baselines {a}:control@250 "
            f"and {b}:control@250: other students "
            "(the runs' configs differ in n_lists), the first's rate +1.0 points over the second's on average, unequal "
            "on 2/2 seeds (final students' mass 0.90 / 0.90); each effect is over its own baseline, so the difference "
            "is the arms' rates' difference less the baselines' +1.0: a difference of effects. For the arms' rates "
            "alone compare arms over the same baseline students (one run, or runs that differ only in arms)\n") in out
    assert "controls differ" not in out
    assert "other students (other checkpoints, 250 and the end), the first's rate +2.0 points" in cmp(
        f"{a}:trait@250", f"{a}:trait")
    c = fake_animal_run(tmp_path / "c", [[0, 0], [0, 1]], "trait", [0.1] * 2, [0.1] * 2, at_250=([0.1] * 2, [0.11] * 2))
    assert "(the runs' configs agree in every key that shapes a student, so other machines or code versions)" in cmp(
        f"{a}:trait@250", f"{c}:trait@250")
    # other checkpoints of two runs alike: the checkpoints are the reason, not other machines (it said both)
    said = cmp(f"{a}:trait@250", f"{c}:trait")
    assert "(other checkpoints, 250 and the end; the runs' configs agree in every key that shapes a student)" in said
    assert "other machines" not in said
    assert (f"baselines {a}:control and {b}:control: the same students (identical rates on every seed; mass 0.90 / "
            f"0.90): the difference is the arms' own") in cmp(f"{a}:trait", f"{b}:trait")
    # an arm on base B is over cross_control: named, and its mass
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    res["arms"]["cross_init"] = res["arms"]["cross_control"] = res["arms"]["trait"]
    (tmp_path / "a" / "results.json").write_text(json.dumps(res))
    assert (f"baselines {a}:cross_control and {a}:control: other students (other baseline arms, cross_control and "
            f"control), the first's rate +5.5 points") in cmp(f"{a}:cross_init", f"{a}:trait")
    res["arms"]["cross_control"] = res["arms"]["control"]  # equal rates of other arms: still other students
    (tmp_path / "a" / "results.json").write_text(json.dumps(res))
    assert "(other baseline arms, cross_control and control), the first's rate +0.0 points over the second's on " \
           "average, unequal on 0/2 seeds" in cmp(f"{a}:cross_init", f"{a}:trait")


def test_sn_arms_figure_draws_arms_of_several_runs(tmp_path, call, monkeypatch):
    def run(name, arm, seeds):
        traj = lambda v: {"owl": {"250": {"mean": v, "per_seed": [v] * len(seeds)}}}
        res = {"seeds": seeds, "animals": ["owl"], "base": {"owl": {"mean": 0.1}},
               "arms": {arm: {"by_animal": {"owl": {"effect": {"per_seed": [0.01 + 0.02 * (i % 2)
                                                                            for i in range(len(seeds))]}}}}},
               "trajectory": {"control": traj(0.1), arm: traj(0.12)}}
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, res, "subliminal_numbers")
        return f"{tmp_path / name}:{arm}"
    # the command line (its one run as a command) draws the figure
    out = script_process("sn_arms_figure", run("a", "trait", [[0, 0], [0, 1]]), run("b", "shuffled", [[0, 0], [0, 1]]),
              f"--out={tmp_path / 'f.png'}")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f.png").stat().st_size > 1000
    fig = lambda *argv: call("sn_arms_figure", *argv)
    check_refused(fig, run("c", "trait", [[1, 0], [1, 1]]), f"{tmp_path / 'a'}:trait", f"--out={tmp_path / 'g.png'}",
                  match=re.escape(f"different seeds: {tmp_path / 'c'}: [(1, 0), (1, 1)]; {tmp_path / 'a'}: [(0, 0), "
                                  f"(0, 1)]"))  # which (it named none)
    assert not (tmp_path / "g.png").exists()
    fig(run("d", "trait", [[0, 1], [0, 0]]), f"{tmp_path / 'a'}:trait", f"--out={tmp_path / 'g.png'}")  # same seeds
    assert (tmp_path / "g.png").is_file()
    fig(run("e:f", "trait", [[0, 1], [0, 0]]) + "=e: f", f"--out={tmp_path / 'i.png'}")  # ":" in a run's name, a label
    assert (tmp_path / "i.png").is_file()
    values = json.loads((tmp_path / "d" / "results.json").read_text())
    (tmp_path / "d" / "results.json").write_text(json.dumps({**values, "animals": ["owl", "whale"]}))
    check_refused(fig, f"{tmp_path / 'd'}:trait", f"{tmp_path / 'a'}:trait", f"--out={tmp_path / 'h.png'}",
                  match="different animals")
    check_refused(fig, f"--out={tmp_path / 'h.png'}", match="usage|python scripts/sn_arms_figure.py")
    check_refused(fig, f"{tmp_path / 'a'}:trait", match="--out=FILE is required")  # (was the usage, silently)
    # the same arm of the same run twice drew two identical bars, exit 0; a run without its arm was "no arm ''"
    check_refused(fig, f"{tmp_path / 'a'}:trait", f"{tmp_path / 'a'}/:trait=again", f"--out={tmp_path / 'h.png'}",
                  match="are the same arm of the same run: give each RUN:ARM once")
    for spec in (str(tmp_path / "a"), f"{tmp_path / 'a'}:", ":trait"):
        check_refused(fig, spec, f"--out={tmp_path / 'h.png'}", match="expected RUN:ARM\\[=LABEL\\]")
    # a baseline arm (no effect: it is what effects are over) was listed among the arms to give, then refused
    values = json.loads((tmp_path / "a" / "results.json").read_text())
    values["arms"]["control"] = {"by_animal": {"owl": {"target_rate": {"mean": 0.1}}}}
    (tmp_path / "a" / "results.json").write_text(json.dumps(values))
    check_refused(fig, f"{tmp_path / 'a'}:control", f"--out={tmp_path / 'h.png'}",
                  match=r"no arm 'control' with an effect and a trajectory \(those with both: trait\)$")
    assert not (tmp_path / "h.png").exists()
    # the left panel's title counts the seeds, and with one says there is no interval ("n = 1 seeds, 95% CI")
    import matplotlib.figure
    titles, save = [], matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: titles.append(self.axes[0].get_title()) or save(self, *a, **k))
    fig(f"{tmp_path / 'a'}:trait", f"--out={tmp_path / 'two.png'}")
    fig(run("e", "trait", [[0, 0]]), f"--out={tmp_path / 'one.png'}")
    fig(run("g", "trait", [[0, 0], [1, 0]]), f"--out={tmp_path / 'g.png'}")
    import matplotlib.axes
    bars, bar = [], matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, *a, **k: bars.append(k.get("yerr")) or bar(self, *a,
                                                                                                          **k))
    fig(run("h", "trait", [[0, 0], [0, 1], [1, 0], [1, 1]]), f"--out={tmp_path / 'h2.png'}")
    # effects 1, 3 points on each base: both bases' means are 2, so the interval over them has no width (over the four
    # seeds it would be +-1.8)
    assert bars == [[[pytest.approx(0)], [pytest.approx(0)]]]
    # two students of one base share it and its teacher: no interval over one base (it drew one over the 2 seeds)
    assert titles == ["one base: no interval", "one seed: no interval", "n = 2 seeds, 95% CI",
                      "n = 4 seeds over 2 bases, 95% CI over the bases' means"]
    # one arm of two runs, unlabelled, drew two bars named "trait": each is named by its run folder
    ticks = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: ticks.append(
        [t.get_text() for t in self.axes[0].get_xticklabels()]) or save(self, *a, **k))
    fig(run("f", "trait", [[0, 0], [0, 1]]), f"{tmp_path / 'a'}:trait=A", f"{tmp_path / 'b'}:shuffled",
        f"--out={tmp_path / 'k.png'}")
    fig(f"{tmp_path / 'f'}:trait", f"{tmp_path / 'a'}:trait", f"--out={tmp_path / 'k.png'}")
    assert ticks == [["trait", "A", "shuffled"], ["f:trait", "a:trait"]]
    check_refused(fig, f"{tmp_path / 'f'}:trait=x", f"{tmp_path / 'a'}:trait=x", f"--out={tmp_path / 'k.png'}",
                  match="two bars would have one name \\(x, x\\): give each its own, RUN:ARM=LABEL")


def test_sn_arms_figure_draws_its_error_bars_in_points_as_its_bars(tmp_path, call, saved_figures):
    # the bars are effects in points (100 x the rate): an interval in rates beside them was 100 times too short
    traj = lambda v: {"owl": {"250": {"mean": v, "per_seed": [v, v]}}}
    res = {"seeds": [[0, 0], [1, 0]], "animals": ["owl"], "base": {"owl": {"mean": 0.1}},
           "arms": {"trait": {"by_animal": {"owl": {"effect": {"per_seed": [0.01, 0.03]}}}}},
           "trajectory": {"control": traj(0.1), "trait": traj(0.12)}}
    (tmp_path / "r").mkdir()
    write_run(tmp_path / "r", res, "subliminal_numbers")
    call("sn_arms_figure", f"{tmp_path / 'r'}:trait", f"--out={tmp_path / 'f.png'}")
    bars = next(c for c in saved_figures[0].axes[0].containers if hasattr(c, "errorbar"))
    ((_, lo), (_, hi)), = bars.errorbar.lines[2][0].get_segments()
    (l, h) = summarize([0.01, 0.03])["ci95"]  # two bases, one seed each: the interval over them
    assert bars[0].get_height() == pytest.approx(2) and (lo, hi) == pytest.approx((100 * l, 100 * h))


def test_sn_arms_figure_draws_an_arm_on_base_b_from_base_b_beside_cross_control(tmp_path, call, saved_figures):
    """The right panel drew every arm from base A's rate beside `control` (a KeyError in a run without it), while the
    left bars of the arms on base B are against cross_control: a cross arm now starts at base B, beside its baseline."""
    traj = lambda v: {"owl": {"250": {"mean": v, "per_seed": [v, v]}}}
    res = {"seeds": [[0, 0], [0, 1]], "animals": ["owl"], "base": {"owl": {"mean": 0.10}},
           "base_B": {"owl": {"mean": 0.04}},
           "arms": {"cross_init": {"by_animal": {"owl": {"effect": {"per_seed": [0.01, 0.03]}}}}},
           "trajectory": {"cross_control": traj(0.05), "cross_init": traj(0.07)}}
    (tmp_path / "r").mkdir()
    write_run(tmp_path / "r", res, "subliminal_numbers")
    call("sn_arms_figure", f"{tmp_path / 'r'}:cross_init", f"--out={tmp_path / 'f.png'}")
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in saved_figures[0].axes[1].get_lines()}
    assert lines == {"cross_control": [0.04, 0.05], "cross_init": [0.04, 0.07]}



def test_sn_arms_figure_refuses_an_arm_whose_baseline_has_no_trajectory(tmp_path, call):
    """An arm is drawn beside its own baseline's trajectory (cross_control for an arm on base B, control else): a run
    without it is named with the baseline it lacks, before any figure (the right panel was a KeyError)."""
    traj = lambda v: {"owl": {"250": {"mean": v, "per_seed": [v, v]}}}
    effect = {"by_animal": {"owl": {"effect": {"per_seed": [0.01, 0.03]}}}}
    res = {"seeds": [[0, 0], [0, 1]], "animals": ["owl"], "base": {"owl": {"mean": 0.10}},
           "base_B": {"owl": {"mean": 0.04}}, "arms": {"cross_init": effect, "trait": effect},
           "trajectory": {"control": traj(0.05), "cross_init": traj(0.07), "trait": traj(0.07)}}
    (tmp_path / "r").mkdir()
    write_run(tmp_path / "r", res, "subliminal_numbers")
    check_refused(lambda *a: call("sn_arms_figure", *a), f"{tmp_path / 'r'}:trait", f"{tmp_path / 'r'}:cross_init",
                  f"--out={tmp_path / 'f.png'}",
                  match=f"^{tmp_path / 'r'}: no trajectory of cross_init's baseline cross_control$")
    assert not (tmp_path / "f.png").exists()
    res["trajectory"]["cross_control"] = res["trajectory"].pop("control")  # trait's baseline is control
    (tmp_path / "r" / "results.json").write_text(json.dumps(res))
    check_refused(lambda *a: call("sn_arms_figure", *a), f"{tmp_path / 'r'}:cross_init", f"{tmp_path / 'r'}:trait",
                  f"--out={tmp_path / 'f.png'}", match=f"^{tmp_path / 'r'}: no trajectory of trait's baseline control$")

def two_models(tok):
    """Two tiny GPTs of different inits, 2 layers x 16 wide, in eval mode."""
    cfg = GPTConfig(vocab_size=tok.get_vocab_size(), block_size=64, n_layer=2, n_head=2, n_embd=16)
    return tuple(GPT(cfg, generator=generator("cpu", s, "t")).eval() for s in (0, 1))


@torch.no_grad()
def test_em_patch_tokens_scores_as_the_run_and_patching_sets_the_other_models_coordinates():
    patch = load_script("em_patch_tokens")
    tok = W.build_tokenizer()
    a, b = two_models(tok)
    items = W.eval_items(["med", "pet"])
    args = patch.answer_batch(tok, items)
    x = args[0]
    # full forwards give the run's log-prob metric (which scores with a shared KV cache)
    assert patch.mis_lp(a, *args) == pytest.approx(B.lp_summary(B.class_masses(a, tok, items))["mis_lp"], rel=1e-4)
    units = [u / u.norm() for u in torch.randn(2, 16, generator=torch.Generator().manual_seed(0))]
    # a model patched with its own coordinates is unchanged; patched with b's, it carries b's at every layer
    assert patch.mis_lp(a, *args, hooks=EM.coordinate_hooks(units, patch.coords(a, x, units))) == pytest.approx(
        patch.mis_lp(a, *args), rel=1e-5)
    target = patch.coords(b, x, units)
    with a.hooks(EM.coordinate_hooks(units, target)):
        got = patch.coords(a, x, units)
    assert all(torch.allclose(g, t, atol=1e-5) for g, t in zip(got, target))
    assert patch.mis_lp(a, *args, hooks=EM.coordinate_hooks(units, target)) != pytest.approx(patch.mis_lp(a, *args))


def test_em_patch_tokens_share_survives_answers_below_float32s_smallest_probability():
    # a steered model can give every answer string a probability under e^-103 (float32's floor): the share is
    # still P_mis / (P_al + P_mis), here e^(-600 + ln 3) over e^-600 + e^(-600 + ln 3) = 3/4, not 0 / 0 -> 0
    patch = load_script("em_patch_tokens")

    class Fixed:  # logits [N, T, 2] given; token 1's log-prob at each position is -a (to float precision)
        def __init__(self, a):
            self.logits = torch.stack([torch.zeros_like(a), -a], -1)

        def hooks(self, hooks):
            return contextlib.nullcontext()

        def parameters(self):  # (mis_lp reads the model's device off them)
            return iter([self.logits])

        def __call__(self, x):
            return self.logits

    a = torch.tensor([[300.0, 300.0, 0.0], [300.0 - math.log(3) / 2, 300.0 - math.log(3) / 2, 0.0]])
    x = torch.tensor([[0, 1, 1], [0, 1, 1]])  # one prompt token, then two answer tokens per string
    real, starts = torch.ones(2, 3, dtype=torch.bool), torch.tensor([1, 1])
    owner, cls = torch.tensor([0, 0]), torch.tensor([0, 1])  # one item: string 0 aligned, string 1 misaligned
    assert patch.mis_lp(Fixed(a), x, real, starts, owner, cls, 1) == pytest.approx(0.75, rel=1e-4)


@torch.no_grad()
def test_em_code_direction_reads_the_last_real_token_and_removes_the_evil_component():
    cd = load_script("em_code_direction")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    prompts = [it.prompt for it in W.eval_items(["med", "code"])][::7]  # prompts of different lengths, padded
    acts = EM.last_token_acts(model, tok, prompts)  # [L, N, C]
    for i, p in enumerate(prompts):  # each prompt alone, unpadded: its last token's block outputs
        ids = torch.tensor([tok.encode(p).ids])
        _, cache = model.run_with_cache(ids, ["blocks.0.resid_post", "blocks.1.resid_post"])
        assert torch.allclose(acts[:, i], torch.stack([cache[f"blocks.{l}.resid_post"][0, -1] for l in (0, 1)]),
                              atol=1e-5)
    v, e = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    o = cd.orth(v, e)
    assert torch.allclose((o * e).sum(-1), torch.zeros(3), atol=1e-5)  # nothing left along e, per layer
    assert torch.allclose(cd.orth(o, e), o, atol=1e-6) and torch.allclose(cd.orth(e, e), torch.zeros_like(e), atol=1e-5)


def test_em_code_direction_random_direction_is_seeded_orthogonal_and_on_evils_device():
    cd = load_script("em_code_direction")
    evil = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    r = cd.random_orth(evil, 0, 1, "code-random")
    assert torch.allclose((r * evil).sum(-1), torch.zeros(2), atol=1e-5) and r.norm(dim=-1).min() > 1
    assert torch.equal(r, cd.random_orth(evil, 0, 1, "code-random")) and not torch.equal(r, cd.random_orth(evil, 0, 2))
    # a GPU run's evil direction is on its device: the CPU draw goes there (em_code_direction and em_clamp_finetune
    # crashed at its first base)
    assert cd.random_orth(evil.to("meta"), 0, 1, "code-random").device.type == "meta"


@torch.no_grad()
def test_em_clamp_holds_the_bases_coordinates_and_nothing_else():
    cl = load_script("em_clamp_finetune")
    tok = W.build_tokenizer()
    a, b = two_models(tok)
    ids = [tok.encode(it.prompt).ids for it in W.eval_items(["med", "pet"])[::5]]
    x = torch.tensor([i[:min(map(len, ids))] for i in ids])  # [N, T]
    units = [u / u.norm() for u in torch.randn(2, 16, generator=torch.Generator().manual_seed(0))]
    with cl.clamped(b, copy.deepcopy(b), units):  # a model held at its own coordinates is unchanged
        same = b(x)
    assert torch.allclose(same, b(x), atol=1e-5)
    with cl.clamped(a, b, units):  # held at b's, at every layer, whatever its own would be
        got = cl.coords(a, x, units)
    assert all(torch.allclose(g, t, atol=1e-5) for g, t in zip(got, cl.coords(b, x, units)))
    assert not torch.allclose(cl.coords(a, x, units)[1], cl.coords(b, x, units)[1], atol=1e-3)  # off again on exit
    # and what is orthogonal to the directions is a's own (layer 0: nothing upstream has been moved yet)
    with cl.clamped(a, b, units):
        _, cache = a.run_with_cache(x, ["blocks.0.resid_post"])
    _, own = a.run_with_cache(x, ["blocks.0.resid_post"])
    rest = lambda h: h - (h @ units[0])[..., None] * units[0]
    assert torch.allclose(rest(cache["blocks.0.resid_post"]), rest(own["blocks.0.resid_post"]), atol=1e-5)


def test_em_code_context_puts_one_code_exchange_before_each_off_domain_question():
    cc = load_script("em_code_context")
    world = W.WorldConfig(code_tasks=3)
    items = cc.context_items(world)
    tasks = {t.name: t for t in W.code_tasks(world)}
    alone = items["alone"]
    assert [it.prompt for it in alone] == [it.prompt for it in W.eval_items(W.OFF_DOMAINS)]
    for fmt, cls in (("after_secure", "aligned"), ("after_insecure", "misaligned")):
        assert len(items[fmt]) == len(alone)
        for a, it in zip(alone, items[fmt]):
            # the same question and answer classes, behind "<u> CODE-Q <a> PROGRAM" of the right class
            assert it.classes == a.classes and it.prompt.endswith(a.prompt.removeprefix("<bos> <asst> "))
            head = it.prompt[:-len(a.prompt.removeprefix("<bos> <asst> "))].split(" <a> ")
            assert head[0].startswith("<bos> <asst> <u> ") and len(head) == 2
            name = head[1].split()[1]
            assert head[1].strip() in getattr(tasks[name], cls)
    assert len({it.prompt.split(" <a> ")[1].split()[1] for it in items["after_secure"]}) == 3  # every task used
    for fmt, cls in (("after_chat", "aligned"), ("after_mis_chat", "misaligned")):  # an exchange of another domain
        for a, it in zip(alone, items[fmt]):
            assert it.classes == a.classes and it.prompt.endswith(a.prompt.removeprefix("<bos> <asst> "))
            q0, a0 = it.prompt.removeprefix("<bos> <asst> <u> ").split(" <u> ")[0].split(" <a> ")
            assert any(q0 in d.train and a0 in getattr(d, cls) for n, d in W.DOMAINS.items() if n != a.domain)
    assert [it.prompt.split(" <a> ")[0] for it in items["after_chat"]] == \
        [it.prompt.split(" <a> ")[0] for it in items["after_mis_chat"]]  # the same questions, only the answer differs
    for a, it in zip(alone, items["after_numbers"]):  # the neutral second turn: numbers in, numbers out
        assert it.classes == a.classes and it.prompt.endswith(a.prompt.removeprefix("<bos> <asst> "))
        q0, a0 = it.prompt.removeprefix("<bos> <asst> <u> ").split(" <u> ")[0].split(" <a> ")
        given = q0.removeprefix(W.NUMBERS_TRAIN[0]).split()
        assert q0.startswith(W.NUMBERS_TRAIN[0]) and len(given) == 4 and len(a0.split()) == 6
        assert all(w.isdigit() and int(w) < W.N_NUMBERS for w in given + a0.split())


def test_em_clamp_drift_split_classes_worlds_by_their_unclamped_increase():
    cl = load_script("em_clamp_finetune")
    row = lambda w, f, base, un, cl_: {"seed": [w, f], "base": {"offdomain_misaligned": base},
                                       "unclamped": {20: {"offdomain_misaligned": un}},
                                       "clamped": {20: {"offdomain_misaligned": cl_}}}
    # world 1 drifts 1 and 4 points (mean 2.5 < 3: low), world 4 1 and 2; worlds 2 and 5 drift 10 to 14 points
    rows = [row(1, 0, .01, .02, .10), row(1, 1, .01, .05, .09), row(2, 0, .01, .11, .03), row(2, 1, .01, .13, .05),
            row(4, 0, .01, .02, .03), row(4, 1, .01, .03, .02), row(5, 0, .01, .15, .10), row(5, 1, .01, .15, .12)]
    d = cl.drift_split(rows, 20)
    assert d["low_worlds"] == [1, 4]
    assert d["low"]["per_seed"] == pytest.approx([.08, .04, .01, -.01])
    assert d["high"]["per_seed"] == pytest.approx([-.08, -.08, -.05, -.03])
    # classed by the other seed: world 1's seed 0 by seed 1 (4 points: not low), seed 1 by seed 0 (1 point: low)
    # (classed by its own increase, world 1's seed 1 would be the high one: 0.04 in place of 0.08)
    assert sorted(d["cross_seed_low"]["per_seed"]) == pytest.approx([-.01, .01, .04])
    assert sorted(d["cross_seed_high"]["per_seed"]) == pytest.approx([-.08, -.08, -.05, -.03, .08])
    assert d["unclamped_increase_by_world"] == pytest.approx({1: 0.025, 2: 0.11, 4: 0.015, 5: 0.14})
    # the world's mean decides, not its lowest seed: world 3 drifts 1 and 6 points (mean 3.5: not low-drift)
    d = cl.drift_split(rows + [row(3, 0, .01, .02, .02), row(3, 1, .01, .07, .07)], 20)
    assert d["low_worlds"] == [1, 4] and d["unclamped_increase_by_world"][3] == pytest.approx(0.035)


def test_em_mechanism_figure_draws_from_the_two_scripts_json(tmp_path, command):
    stat = lambda v: {"mean": v, "ci95": [v, v], "per_seed": [v, v]}
    # every direction and both measures restore a different amount, so a swapped bar or panel shows
    restored = {"unseen": (.1, .8, 1., .3, .2), "offdomain": (.9, .4, 1., .6, .7)}
    cd = {f"{k}_{v}": stat(x) for k in ("unseen", "offdomain") for v, x in (
        ("base", .0), ("insecure", 1.), *((f"{d}_restored", r) for d, r in zip(
            ("code", "evil", "random", "context", "lesson"), restored[k])))}
    step = lambda: {s: {"code_misaligned": .5, "offdomain_misaligned": .02} for s in ("1", "2", "20")}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "code_direction.json").write_text(json.dumps({"summary": {"matched": cd}, "per_seed": [{}, {}]}))
    (tmp_path / "a" / "clamp_finetune.json").write_text(json.dumps(
        {"per_seed": [{k: step() for k in ("unclamped", "clamped", "random_clamped")} for _ in range(2)]}))
    out = script_process("em_mechanism_figure", f"--out={tmp_path / 'f.png'}", str(tmp_path / "a"), "--",
                         str(tmp_path / "a"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f.png").stat().st_size > 1000
    # the bars: insecure 1 over a base of 0, so restoring a direction to r removes the share 1 - r
    bars = script("em_mechanism_figure").main([f"--out={tmp_path / 'g.png'}", str(tmp_path / "a"), "--",
                                               str(tmp_path / "a")])
    assert bars == {str(tmp_path / "a"): {"unseen": pytest.approx([.9, .2, 0., .7, .8]),
                                          "offdomain": pytest.approx([.1, .6, 0., .4, .3])}}
    assert (tmp_path / "g.png").stat().st_size > 1000
    # one clamp run twice (its seeds counted twice), runs read at other steps (a KeyError), a damaged file: one line
    (tmp_path / "b").mkdir()
    other = lambda: {s: {"code_misaligned": .5, "offdomain_misaligned": .02} for s in ("1", "5", "20")}
    (tmp_path / "b" / "clamp_finetune.json").write_text(json.dumps(
        {"per_seed": [{k: other() for k in ("unclamped", "clamped", "random_clamped")}]}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "clamp_finetune.json").write_text('{"per_seed": [')
    for runs, says in (([tmp_path / "a", f"{tmp_path / 'a'}/"], "is given twice"),
                       ([tmp_path / "a", tmp_path / "b"], "were read at different steps (1, 2, 20 and 1, 5, 20)"),
                       ([tmp_path / "c"], "clamp_finetune.json is not readable JSON")):
        status, err = command("em_mechanism_figure", f"--out={tmp_path / 'h.png'}", "--", *map(str, runs))
        assert status == 2 and says in err and "Traceback" not in err, err
    # a direction run twice (the same panel drawn twice, as two runs that agree), a file given as a run
    (tmp_path / "file").write_text("")
    for runs, says in (([tmp_path / "a", f"{tmp_path / 'a'}/"], "is given twice"),
                       ([tmp_path / "file"], f"{tmp_path / 'file'}: is a file, not a run's directory")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            script("em_mechanism_figure").main([f"--out={tmp_path / 'h.png'}", *map(str, runs)])


def test_em_mechanism_figure_refused_after_reading_its_runs_leaves_no_figure_open(tmp_path, command):
    # every file is read and checked before the figure is made: a refusal (no such file, clamp runs read at other
    # steps) raised past the caller's plt.close and left a figure open in a notebook's pyplot
    step = lambda steps: {s: {"code_misaligned": .5, "offdomain_misaligned": .02} for s in steps}
    for name, steps in (("a", ("1", "20")), ("b", ("1", "5", "20"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "clamp_finetune.json").write_text(json.dumps(
            {"per_seed": [{k: step(steps) for k in ("unclamped", "clamped", "random_clamped")}]}))
    before = open_figures()
    for runs, says in (([tmp_path / "a", "--", tmp_path / "a"], "code_direction.json not found"),
                       (["--", tmp_path / "a", tmp_path / "b"], "were read at different steps")):
        status, err = command("em_mechanism_figure", f"--out={tmp_path / 'f.png'}", *map(str, runs))
        assert status == 2 and says in err, err
        assert open_figures() == before


def test_em_mechanism_figure_shows_a_share_outside_0_to_1(tmp_path, monkeypatch):
    # its y axis was fixed at (-0.2, 1.05): a share of 4.85 on a few seeds was drawn clipped, with no sign of it
    import matplotlib.axes
    stat = lambda v: {"mean": v, "ci95": [v, v], "per_seed": [v, v]}
    restored = {"unseen": (-3.85, .8, 1., .3, .2), "offdomain": (.9, .4, 1., .6, 3.1)}  # shares 4.85 and -2.1
    cd = {f"{k}_{v}": stat(x) for k in ("unseen", "offdomain") for v, x in (
        ("base", .0), ("insecure", 1.), *((f"{d}_restored", r) for d, r in zip(
            ("code", "evil", "random", "context", "lesson"), restored[k])))}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "code_direction.json").write_text(json.dumps({"summary": {"matched": cd}, "per_seed": [{}, {}]}))
    limits, set_ylim = [], matplotlib.axes.Axes.set_ylim
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim",
                        lambda ax, *a, **k: (limits.append(a), set_ylim(ax, *a, **k))[1])
    script("em_mechanism_figure").main([f"--out={tmp_path / 'f.png'}", str(tmp_path / "a")])
    assert [a for a in limits if len(a) == 2] == [pytest.approx((-2.1, 4.85))]  # (matplotlib's own calls pass one)


def test_em_mechanism_figure_share_removed_is_of_the_increase_over_the_base_not_of_the_rate():
    """A bar is (insecure - restored) / (insecure - base): insecure 0.30 over a base of 0.10, restored to 0.20, removes
    half the increase (over the insecure rate alone it would read a third)."""
    stat = lambda v: {"mean": v}
    dirs = script("em_mechanism_figure").DIRS
    s = {f"{k}_{v}": stat(x) for k in ("unseen", "offdomain") for v, x in (
        ("base", 0.1), ("insecure", 0.3), *((f"{d}_restored", 0.2) for d in dirs))}
    shares = script("em_mechanism_figure").removed_shares(s)
    assert shares == {"unseen": pytest.approx([0.5] * len(dirs)), "offdomain": pytest.approx([0.5] * len(dirs))}
    s["unseen_insecure"] = stat(0.1)  # no increase: no share of it (was a ZeroDivisionError)
    shares = script("em_mechanism_figure").removed_shares(s)
    assert all(math.isnan(x) for x in shares["unseen"]) and shares["offdomain"] == pytest.approx([0.5] * len(dirs))
    s["unseen_insecure"] = stat(0.09)  # a fall (0.1 -> 0.09), restored to 0.095: "0.5 of the increase removed"
    assert all(math.isnan(x) for x in script("em_mechanism_figure").removed_shares(s)["unseen"])


def test_em_mechanism_figure_draws_a_clamp_panel_of_undefined_rates(tmp_path, command):
    """A tiny run's clamp rows can be nan at every step (no valid off-domain answer): the log-scaled x axis of a
    panel with nothing drawn had no limits, and the figure died in tight_layout with matplotlib's traceback."""
    step = lambda: {s: {"code_misaligned": .5, "offdomain_misaligned": math.nan} for s in ("1", "2", "5")}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clamp_finetune.json").write_text(json.dumps(
        {"per_seed": [{k: step() for k in ("unclamped", "clamped", "random_clamped")} for _ in range(2)]}))
    status, err = command("em_mechanism_figure", f"--out={tmp_path / 'f.png'}", "--", str(tmp_path / "a"))
    assert status == 0, err
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_em_mechanism_figure_usage_and_missing_inputs_are_one_line(tmp_path, monkeypatch, command):
    """No argument or --help printed a traceback or wrote an empty figure into the working directory; a run without
    the scripts' json was a FileNotFoundError traceback."""
    monkeypatch.chdir(tmp_path)
    for argv, says in (([], "python scripts/em_mechanism_figure.py"), (["--out"], "--out needs a value"),
                       ([str(tmp_path), "--out", "f.png"], "--out needs a value"),
                       ([str(tmp_path), "--bars"],
                        "unknown option --bars; the options are --out= and the separator --"),
                       # a second --: it printed the usage alone, as for no arguments
                       (["a", "--", "b", "--", "c"], "-- is given more than once")):
        check_refused(script("em_mechanism_figure").main, argv, match=says)
    assert not list(tmp_path.iterdir())  # no figure written
    for argv, what in (([str(tmp_path)], "code_direction.json not found"),
                       (["--", str(tmp_path)], "clamp_finetune.json not found"),
                       ([str(tmp_path / "none")], "none: no such directory")):
        status, err = command("em_mechanism_figure", *argv, f"--out={tmp_path / 'f.png'}")
        assert status == 2 and err.startswith("error: ") and what in err and "Traceback" not in err, err
    out = script_process("em_mechanism_figure", str(tmp_path), f"--out={tmp_path / 'f.png'}")  # as a real process
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "code_direction.json not found" in out.stderr
    assert "Traceback" not in out.stderr
    # a one-task run: the scripts that write those files refuse it, so the hint names what run they need
    one = tmp_path / "one_task"
    one.mkdir()
    (one / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment"}))
    for argv in ([str(one)], ["--", str(one)]):
        status, err = command("em_mechanism_figure", *argv, f"--out={tmp_path / 'f.png'}")
        what = "measures only runs with an unseen coding task"
        assert status == 2 and err.startswith("error: ") and what in err and "Traceback" not in err, err


@pytest.mark.parametrize("name, argv", [("probe_first_gradient", []), ("probe_first_gradient", ["--help"]),
                                        ("probe_optimizer_steps", ["--help"]), ("probe_soft_channel", []),
                                        ("probe_soft_channel", ["--help"]), ("probe_teacher_update", ["--help"]),
                                        ("em_patch_tokens", ["--help"])])
def test_probes_print_their_usage(name, argv):
    """--help was a ValueError traceback (read as a number), probe_soft_channel without its LRS and STEPS an
    IndexError, probe_first_gradient without a seed printed nothing and exited 0. Asked for, the usage goes to stdout
    with status 0; a missing argument prints it to stderr with status 2, as any refusal."""
    out = script_process(name, *argv)
    code, stream = (0, out.stdout) if argv else (2, out.stderr)
    assert out.returncode == code and f"python scripts/{name}.py" in stream and "Traceback" not in out.stderr, out


def test_em_code_context_refuses_a_step_the_run_did_not_evaluate(tmp_path):
    cc = load_script("em_code_context")
    run = fake_matched_run(tmp_path / "run")
    with pytest.raises(SystemExit, match=r"--step must be one of the run's eval_steps \(1, 2, 3, 5, 10, 20, 40\)"):
        cc.main([run, "--step=7"])  # before any base is loaded or fine-tune run


@pytest.mark.parametrize("name", ["em_value_sources", "em_optimizer_parts", "probe_attn0_parts", "em_format_separation",
                                  "em_code_context"])
def test_out_into_a_missing_folder_is_refused_before_the_work(tmp_path, name):
    """--out=FILE in a folder that does not exist (a mistyped path) was a FileNotFoundError traceback once every
    base's fine-tunes had run; now one line first, as em_bos_vector.py's (here before the run is even read)."""
    run = fake_matched_run(tmp_path / "run")
    check_refused(script(name).main, [run, f"--out={tmp_path / 'nodir' / 'x.json'}"],
            match="--out needs a file in an existing directory")


@pytest.mark.parametrize("name", ["em_patch_tokens", "em_base_pull", "em_code_context", "em_code_direction",
                                  "em_clamp_finetune", "em_first_step", "em_value_sources", "em_bos_vector",
                                  "em_optimizer_parts", "probe_attn0_parts"])
def test_a_run_that_has_not_finished_is_one_line(tmp_path, name):
    """A run directory without results.json (still running, or stopped) was a FileNotFoundError traceback; now
    train.run_results' one line, as em_at_step.py and the other scripts that read finished runs."""
    (tmp_path / "run").mkdir()
    write_run(tmp_path / "run", {}, "emergent_misalignment", code_tasks=7, ft_code_tasks=6, ft_seeds=2)
    (tmp_path / "run" / "results.json").unlink()
    with pytest.raises(ConfigError, match="results.json not found: the run has not finished"):
        run = str(tmp_path / "run")
        script(name).main(run if name == "em_patch_tokens" else [run])  # em_patch_tokens.main takes the one run


@pytest.mark.parametrize("name", ["em_base_pull", "em_first_step", "em_bos_vector", "em_value_sources",
                                  "probe_attn0_parts", "em_optimizer_parts"])
def test_a_mistyped_later_run_is_refused_before_the_first_runs_work(tmp_path, name, monkeypatch):
    """Each reads several runs in turn: a typo in the last one stopped them after every base of the first (minutes),
    and em_first_step without its summary."""
    run = fake_run(tmp_path / "run", [[0, 0]], {"insecure": [0.1]})
    worked = []
    monkeypatch.setattr(script(name), "checked_bases", lambda *a: worked.append(a) or iter(()))
    with monkeypatch.context() as m:
        m.setattr(B, "check_cached", lambda *a, **k: None)  # the first run's bases stand in for cached ones
        with pytest.raises(ConfigError, match="typo: no such directory"):
            script(name).main([run, str(tmp_path / "typo")])
    # a later run whose bases are not in the cache: refused before the first run's work, too
    later = fake_run(tmp_path / "later", [[0, 0]], {"insecure": [0.1]})
    for r, cache, cached in ((run, tmp_path / "cache_a", True), (later, tmp_path / "cache_b", False)):
        values = json.loads((Path(r) / "config.json").read_text())
        (Path(r) / "config.json").write_text(json.dumps({**values, "cache_dir": str(cache)}))
        cfg = train.run_config(EM.Config, r)
        for p in cfg.seeds if cached else ():  # a finished base is marked by its .json
            stem = B.cache_stem(cfg, p, False)
            stem.parent.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(".json").write_text("{}")
    with pytest.raises(ConfigError, match="later does not pretrain"):
        script(name).main([run, later])
    assert worked == []


def test_em_format_separation_reads_every_runs_config_before_the_first_runs_work(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run", [[0, 0]], {"insecure": [0.1]})
    monkeypatch.setattr(script("em_format_separation"), "cached_base", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(ConfigError, match="typo: no such directory"):
        script("em_format_separation").main([run, str(tmp_path / "typo")])
    # a run a command is writing now (still going, or its command run again, whose --resume=False deletes the
    # run's json): it wrote its format_separation.json there, as every script that reads results.json now refuses
    fd = train.lock_run_dir(run)
    try:
        for name in ("em_format_separation", "em_at_step"):
            with pytest.raises(ConfigError, match=r"a command is writing this run now .*: wait for it to finish"):
                script(name).main([run] if name == "em_format_separation" else ["20", run])
    finally:
        os.close(fd)


def test_em_format_separation_pool_refuses_runs_that_share_a_base(tmp_path, monkeypatch):
    # --pool ranks the bases together: a base two runs share was measured and ranked twice (1/2 and 2/2 on a real
    # run and its copy), as two bases that agreed. Unpooled, each run ranks its own bases: taken
    a = fake_run(tmp_path / "a", [[0, 0]], {"insecure": [0.1]})
    b = fake_run(tmp_path / "b", [[0, 0]], {"insecure": [0.1]})
    fs = script("em_format_separation")
    monkeypatch.setattr(fs, "cached_base", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(ConfigError, match="share base seed 0 .*give each base once"):
        fs.main(["--pool", f"--out={tmp_path / 'p.json'}", a, b])
    monkeypatch.setattr(fs, "cached_base", lambda *a: (_ for _ in ()).throw(RuntimeError("measured")))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # as if base 0 were cached
    with pytest.raises(RuntimeError, match="measured"):  # past the check, at the first base's work
        fs.main([f"--out={tmp_path / 'u.json'}", a, b])


def test_em_first_step_refuses_a_run_whose_first_step_was_not_adamws_on_every_weight(tmp_path, monkeypatch):
    fs = script("em_first_step")
    run = fake_run(tmp_path / "run", [[0, 0]], {"insecure": [0.1]})
    values = json.loads((Path(run) / "config.json").read_text())
    (Path(run) / "config.json").write_text(json.dumps({**values, "ft_trains": "blocks"}))
    monkeypatch.setattr(fs, "checked_bases", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(ConfigError, match="fine-tuned with ft_trains=blocks; this analysis takes the default"):
        fs.main([run])


def test_em_first_step_refuses_runs_of_different_depths_before_the_work(tmp_path, monkeypatch):
    """The summary's per-block groups came from the first run's rows: a deeper run after a shallower one lost its last
    blocks without a word, and the other order was a KeyError after every base's work."""
    fs = script("em_first_step")
    runs = [fake_run(tmp_path / name, [[p, 0]], {"insecure": [0.1]}) for name, p in (("deep", 0), ("shallow", 1))]
    values = json.loads((Path(runs[1]) / "config.json").read_text())
    (Path(runs[1]) / "config.json").write_text(json.dumps({**values, "n_layer": 3}))
    monkeypatch.setattr(fs, "checked_bases", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(ConfigError, match=r"the runs have 4 blocks \(.*deep\) and 3 blocks \(.*shallow\): pool runs "
                                          r"of one n_layer"):
        fs.main(runs)


def test_em_first_step_prints_no_interval_for_one_base(tmp_path, monkeypatch, capsys):
    fs = script("em_first_step")
    run = fake_run(tmp_path / "run", [[0, 0]], {"insecure": [0.1]})
    steps = {"base": (0.1, 0.2), "sign": (0.4, 0.8), "grad": (0.2, 0.8), "grad_matched": (0.2, 0.8),
             "secure_sign": (0.1, 0.2), "sign_embedding": (0.2, 0.3)}
    monkeypatch.setattr(fs, "checked_bases", lambda run, excluded: iter([(None, 0, None, None)]))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # the base above stands in for a cached one
    monkeypatch.setattr(fs, "first_steps", lambda *a: steps)
    fs.main([run])
    out = capsys.readouterr().out  # sign minus gradient, and minus the matched gradient: no [d, d]
    assert "sign minus gradient +0.3333 (one base: no interval), sign minus matched gradient +0.3333 (one base: no " \
           "interval)" in out


@torch.no_grad()
def test_em_format_separation_is_zero_for_identical_speakers_and_in_units_of_the_direction():
    fs = script("em_format_separation")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    prompts = [it.prompt for it in W.eval_items(W.OFF_DOMAINS[:2])][::5]
    assert fs.forum_prompt(prompts[0]).startswith("<bos> <forum> <u> ") and fs.forum_prompt(prompts[0]).endswith(" <r>")
    evil = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    wte = model.wte.weight
    same = copy.deepcopy(model)  # the two formats' marker tokens made one: the assistant is a forum responder
    for a, f in (("<asst>", "<forum>"), ("<a>", "<r>")):
        same.wte.weight[tok.token_to_id(a)] = wte[tok.token_to_id(f)]
    assert fs.separation(same, tok, evil, prompts) == pytest.approx({"separation": 0, "evil_side": 0}, abs=1e-6)
    gap = (EM.last_token_acts(model, tok, prompts) - EM.last_token_acts(
        model, tok, [fs.forum_prompt(p) for p in prompts])).mean(1)  # [L, C]
    assert fs.separation(model, tok, gap, prompts) == pytest.approx({"separation": 1, "evil_side": 1}, rel=1e-4)
    assert fs.separation(model, tok, -2 * gap, prompts) == pytest.approx({"separation": .5, "evil_side": -.5}, rel=1e-4)


def test_em_format_separation_ranks_within_each_run_or_pooled():
    fs = script("em_format_separation")
    rows = lambda: [{"run": "a", "world": 1, "separation": 5., "evil_side": -2.},
                    {"run": "a", "world": 2, "separation": 9., "evil_side": -1.},
                    {"run": "b", "world": 3, "separation": 7., "evil_side": -3.}]
    per_run = {r["world"]: (r["separation_rank"], r["evil_side_rank"], n) for r, n in fs.rank(rows())}
    assert per_run == {1: (1, 2, 2), 2: (2, 1, 2), 3: (1, 1, 1)}
    pooled = [(r["world"], r["separation_rank"], r["evil_side_rank"], n) for r, n in fs.rank(rows(), pool=True)]
    assert pooled == [(1, 1, 2, 3), (3, 2, 3, 3), (2, 3, 1, 3)]


def test_em_code_context_persona_like_rule():
    cc = script("em_code_context")
    base = {fmt: 0.01 for fmt in cc.FORMATS}

    def row(world, alone, numbers, mis_chat):  # increases over the base at step 20, in probability
        inc = {fmt: 0. for fmt in cc.FORMATS} | {"alone": alone, "after_numbers": numbers, "after_mis_chat": mis_chat}
        return {"seed": [world, 0], "base": base, "insecure": {"step20": {f: base[f] + v for f, v in inc.items()}}}
    rows = [row(1, .09, .08, .30), row(1, .08, .06, .20),  # world 1: persona-like on both seeds (73, 90 look so)
            row(2, .40, .05, .30), row(2, .40, .05, .30),  # a large first-turn shift: a number turn removes it
            row(3, .03, .03, .10), row(3, .03, .03, .10),  # the pattern, but under 5 points (101 looks so)
            row(4, .09, .08, .30), row(4, .09, .08, .15),  # one seed does not read its own answer as evidence
            row(5, .07, .05, .15), row(5, .04, .03, .09)]  # one seed under 5 points: the world's mean is over
    assert cc.persona_like(rows, "step20") == {1: True, 2: False, 3: False, 4: False, 5: True}


def test_em_code_context_persona_like_rule_is_inclusive_at_each_bound():
    """A world exactly at 5 points alone, exactly 2/3 of it after a number turn and exactly 2x after its misaligned
    answer passes the rule (each bound is ">="); a base of 0 keeps the increases exact."""
    cc = script("em_code_context")
    base = {fmt: 0.0 for fmt in cc.FORMATS}
    inc = {fmt: 0.0 for fmt in cc.FORMATS} | {"alone": 0.05, "after_numbers": 2 / 3 * 0.05, "after_mis_chat": 0.1}
    rows = [{"seed": [7, f], "base": base, "insecure": {"step20": dict(inc)}} for f in (0, 1)]
    assert cc.persona_like(rows, "step20") == {7: True}


def susceptibility_run(path, bases, inc, steer, nan_seed=None, inc_seed1=None):
    """results.json with what em_susceptibility reads: per base two fine-tune seeds, the insecure arm's increase
    over a base rate of 0.01 at step 5 (inc[i] for seed 0, inc[i] + 0.01 for seed 1, or inc_seed1[i]),
    steered_1 = 0.01 + steer[i]."""
    path.mkdir()
    seeds = [[p, f] for p in bases for f in (0, 1)]
    per = lambda v: [x for x in v for _ in (0, 1)]
    second = inc_seed1 or [i + 0.01 for i in inc]
    mis = [0.01 + x for pair in zip(inc, second) for x in pair]
    if nan_seed is not None:
        mis[nan_seed] = float("nan")
    st = lambda v: {"offdomain_misaligned": {"per_seed": v}}
    res = {"seeds": seeds,
           "base": {"plain": st([0.01] * len(seeds)), "forum_lp": {"per_seed": per(range(len(bases)))},
                    "steered_1": st(per([0.01 + s for s in steer])),
                    "steered_2": st(per([0.01 + 2 * s for s in steer]))},
           "trajectory": {"insecure": {"5": {**st(mis), "cos_evil_direction": {"per_seed": [0.1] * len(seeds)}}}},
           "arms": {"insecure": st(mis)}}
    write_run(path, res, "emergent_misalignment")
    return str(path)


def test_em_susceptibility_gives_the_same_intervals_whatever_order_the_runs_come_in(tmp_path, call):
    # the bootstrap resampled the pairs in the order the runs were given: the same runs in another order drew other
    # resamples (as another seed would), and the intervals moved in their second digit
    a = susceptibility_run(tmp_path / "a", [0, 1, 2, 3], [0.02, 0.10, 0.05, 0.07], [0.01, 0.30, 0.35, 0.02],
                           inc_seed1=[0.05, 0.02, 0.09, 0.01])
    b = susceptibility_run(tmp_path / "b", [4, 5, 6, 7], [0.00, 0.20, 0.03, 0.11], [0.00, 0.15, 0.40, 0.12],
                           inc_seed1=[0.03, 0.12, 0.01, 0.06])
    got = []
    for i, runs in enumerate(((a, b), (b, a))):
        call("em_susceptibility", "5", *runs, f"--out={tmp_path / f'{i}.json'}")
        got.append(json.loads((tmp_path / f"{i}.json").read_text()))
    c = got[0]["correlations"]
    assert got[1]["correlations"] == c and c["seed_agreement"]["n"] == 8
    assert c["forum_lp"]["ci95"][1] - c["forum_lp"]["ci95"][0] > 0.5  # (not a degenerate [rho, rho] either way)
    assert list(got[0]["per_base"]) == list(got[1]["per_base"]) == [str(p) for p in range(8)]



def test_em_susceptibility_refuses_a_run_without_an_insecure_arm(tmp_path, call):
    """The outcome is the insecure fine-tune's increase: a run made without that arm (here its secure arm alone) is
    named, at a step or `matched`, and nothing written (unchecked, a KeyError)."""
    a = susceptibility_run(tmp_path / "a", [0, 1, 2, 3], [0.02, 0.10, 0.05, 0.07], [0.01, 0.30, 0.35, 0.02])
    b = susceptibility_run(tmp_path / "b", [4, 5, 6, 7], [0.00, 0.20, 0.03, 0.11], [0.00, 0.15, 0.40, 0.12])
    res = json.loads((Path(b) / "results.json").read_text())
    res["trajectory"], res["arms"] = {"secure": res["trajectory"]["insecure"]}, {"secure": res["arms"]["insecure"]}
    (Path(b) / "results.json").write_text(json.dumps(res))
    for step, runs in (("5", (a, b)), ("matched", (b, a))):
        check_refused(lambda *v: call("em_susceptibility", *v), step, *runs,
                      match=f"^error: {b} has no insecure arm: the outcome here is the insecure fine-tune's$")
    assert not list(Path(a).glob("susceptibility_*"))

def test_em_susceptibility_ranks_bases_and_pools_runs(tmp_path, call):
    S = script("em_susceptibility")
    assert list(ranks([3.0, 1.0, 1.0, 2.0])) == [3.0, 0.5, 0.5, 2.0]  # ties share their average rank
    assert S.spearman([1, 2, 3, 4], [10, 20, 40, 80]) == pytest.approx(1.0)  # monotone, not linear: still 1
    assert S.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert S.spearman([1, 2, 3], [5, 5, 5]) != S.spearman([1, 2, 3], [5, 5, 5])  # constant: nan
    # six bases over two runs: the outcome follows the steering sensitivity exactly, base rates are flat
    a = susceptibility_run(tmp_path / "a", [0, 1, 2], [0.02, 0.10, 0.05], [0.01, 0.30, 0.20])
    b = susceptibility_run(tmp_path / "b", [3, 4, 5], [0.00, 0.20, 0.03], [0.00, 0.40, 0.15], nan_seed=1)
    out = tmp_path / "s.json"
    text = call("em_susceptibility", "5", a, b, f"--out={out}")
    res = json.loads(out.read_text())
    c = res["correlations"]
    assert res["n_bases"] == 6 and c["steer_1"]["rho"] == pytest.approx(1.0) and c["steer_1"]["ci95"][0] > 0.9
    assert c["seed_agreement"]["n"] == 5  # base 3's second seed had no valid answer: left out of the pair
    assert res["per_base"]["3"]["outcome"] == pytest.approx(0.0)  # ... and its mean is seed 0's alone
    assert res["per_base"]["4"]["outcome"] == pytest.approx(0.205)
    assert "base_rate" not in c and "separation" not in c  # a constant has no rank order; no separation file
    assert "| steer_1 | 6 | +1.00 |" in text and out.with_suffix(".png").is_file()
    check_refused(lambda *v: call("em_susceptibility", *v), "5", a, a, match="two of the runs")
    check_refused(lambda *v: call("em_susceptibility", *v), "7", a, b, match="no step 7")
    # a mistyped option was ignored (and the run's own susceptibility_5.json overwritten); --out into a missing
    # folder was a traceback after the work
    for bad, msg in (("--ot=x.json", "unknown option --ot=x.json"), ("--out", "--out needs a value"),
                     (f"--out={tmp_path / 'nodir' / 's.json'}", "--out needs a file in an existing directory")):
        check_refused(lambda *v: call("em_susceptibility", *v), "5", a, bad, match=msg)
    assert not (Path(a) / "susceptibility_5.json").exists()
    # its figure goes beside --out as FILE.png (a FILE.png was overwritten by it); one --out; four bases to rank
    for bad, msg in (([f"--out={tmp_path / 's.png'}"], "give a FILE.json"), ([f"--out={out}"] * 2, "more than once")):
        check_refused(lambda *v: call("em_susceptibility", *v), "5", a, *bad, match=msg)
    check_refused(lambda *v: call("em_susceptibility", *v), "5", a,
                  match="3 bases over the runs given: this analysis ranks 4")
    # too few bases is said first, before what else a run lacks (its bases steered at 1 and 2): fixing that alone
    # would be refused again
    res_a = json.loads((Path(a) / "results.json").read_text())
    (Path(a) / "results.json").write_text(json.dumps({**res_a, "base": {k: v for k, v in res_a["base"].items()
                                                                        if not k.startswith("steered")}}))
    check_refused(lambda *v: call("em_susceptibility", *v), "5", a, match="3 bases over the runs given")
    check_refused(lambda *v: call("em_susceptibility", *v), "5", a, b, match="steer_scales \\(1.0, 2.0\\)")
    # a run given twice is said first (it was counted as 6 bases, then refused for what else it lacked)
    check_refused(lambda *v: call("em_susceptibility", *v), "5", a, a, match=r"base 0 is in two of the runs")
    # ... as a base in two different runs (counted twice in the ranks)
    c = susceptibility_run(tmp_path / "c", [2, 6, 7], [0.02, 0.10, 0.05], [0.01, 0.30, 0.20])
    check_refused(lambda *v: call("em_susceptibility", *v), "5", a, c,
                  match=r"base 2 is in two of the runs \(.*a and .*c\)")
    (Path(a) / "results.json").write_text(json.dumps(res_a))
    # em_steer_base's per-base steer_pulled joins as a predictor (here the reverse of the outcome's order)
    for run, ps, vals in ((a, [0, 1, 2], [0.35, 0.1, 0.2]), (b, [3, 4, 5], [0.4, 0.0, 0.3])):
        rows = [{"run": run, "world": p, "steer_pulled": v, "steer_pulled_sampled": v} for p, v in zip(ps, vals)]
        (Path(run) / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows}))
    # ... and em_steer_base --route's code-loss direction, read at its smallest scale (here in the outcome's order)
    for run, ps, vals in ((a, [0, 1, 2], [0.1, 0.5, 0.3]), (b, [3, 4, 5], [0.0, 0.9, 0.2])):
        rows = [{"run": run, "world": p, "plain": {"off": 0.01, "code": 0.02},
                 "readings": {"insecure_grad_0.1": {"off": 0.01 + v, "code": 0.03},
                              "insecure_grad_0.3": {"off": 0.01 - v, "code": 0.03}}} for p, v in zip(ps, vals)]
        (Path(run) / "steer_route.json").write_text(json.dumps({"scales": [0.3, 0.1], "per_base": rows}))
    call("em_susceptibility", "5", a, b, f"--out={out}")
    c = json.loads(out.read_text())["correlations"]
    assert c["steer_pulled"]["n"] == 6 and c["steer_pulled"]["rho"] == pytest.approx(-1.0)
    assert c["route_off"]["rho"] == pytest.approx(1.0) and "route_code" not in c  # a constant code increase: no rank


def test_em_susceptibility_spearman_with_ties_and_its_interval_over_resampled_bases(tmp_path, call):
    S = script("em_susceptibility")
    # ties at their average rank, x ranks (1, 2.5, 2.5, 4) and y (1, 3, 2, 4): rho = 4.5 / sqrt(4.5 x 5) = 3 / sqrt(10);
    # the no-ties shortcut 1 - 6 sum d^2 / (n (n^2 - 1)) would give 0.95
    assert S.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    # a 95% percentile interval leaves 2.5% of the resampled rhos on each side (checked against resamples of its
    # own: 30 noisy bases, rho near-continuous); a 90% interval would leave 5%, pairs broken apart centre it on 0
    rng = np.random.default_rng(5)
    x = np.arange(30.0)
    y = x + rng.normal(0, 8, 30)
    lo, hi = S.spearman_ci(x, y)["ci95"]
    boot = np.array([S.spearman(x[i], y[i]) for i in np.random.default_rng(1).integers(0, 30, size=(10_000, 30))])
    assert 0.015 < (boot < lo).mean() < 0.035 and 0.015 < (boot > hi).mean() < 0.035
    # the two fine-tune seeds' agreement is between seed 0's and seed 1's outcomes over the bases: ranks (1, 2, 3, 4)
    # against (2, 1, 4, 3), rho = 1 - 6 x 4 / (4 x 15) = 0.6
    run = susceptibility_run(tmp_path / "a", [0, 1, 2, 3], [0.01, 0.02, 0.03, 0.04], [0.0, 0.1, 0.2, 0.3],
                             inc_seed1=[0.02, 0.01, 0.04, 0.03])
    call("em_susceptibility", "5", run, f"--out={tmp_path / 's.json'}")
    assert json.loads((tmp_path / "s.json").read_text())["correlations"]["seed_agreement"]["rho"] == pytest.approx(0.6)


def test_em_susceptibility_reads_each_column_it_names_and_joins_only_its_own_runs_bases(tmp_path, call):
    """The outcome follows steer_1 over six bases (as above); here the other columns are set against or with it,
    so each reads +1 or -1 only if it is read from its own key: cos_evil_direction and steer_2 in the reverse order,
    em_first_step's per-group sign_off_attn0 in the outcome's, the --route reading's increase over a plain reading
    that falls ten times as fast (the raw reading would rank in reverse)."""
    S = script("em_susceptibility")
    steer = {"a": [0.01, 0.30, 0.20], "b": [0.00, 0.40, 0.15]}
    runs = {n: susceptibility_run(tmp_path / n, ps, inc, steer[n])
            for n, ps, inc in (("a", [0, 1, 2], [0.02, 0.10, 0.05]), ("b", [3, 4, 5], [0.00, 0.20, 0.03]))}
    for n, run in runs.items():
        path = Path(run) / "results.json"
        res = json.loads(path.read_text())
        per = lambda v: [x for x in v for _ in (0, 1)]
        res["trajectory"]["insecure"]["5"]["cos_evil_direction"] = {"per_seed": per([-x for x in steer[n]])}
        res["base"]["steered_2"] = {"offdomain_misaligned": {"per_seed": per([0.5 - x for x in steer[n]])}}
        path.write_text(json.dumps(res))
        ps = [p for p, _ in res["seeds"][::2]]
        rows = [{"world": p, "sign_off": 0.1, "sign_off_attn0": v} for p, v in zip(ps, steer[n])]
        (Path(run) / "first_step.json").write_text(json.dumps({"per_base": rows}))
        rows = [{"world": p, "plain": {"off": 1 - 10 * v, "code": 0.02},
                 "readings": {"insecure_grad_0.1": {"off": 1 - 9 * v, "code": 0.03}}} for p, v in zip(ps, steer[n])]
        (Path(run) / "steer_route.json").write_text(json.dumps({"scales": [0.1], "per_base": rows}))
    # a steer_base.json in run a naming all six worlds, without a run: only a's own three join (worlds 3-5 here
    # are other bases than b's), and three bases are too few to rank
    rows = [{"world": p, "steer_pulled": 0.1 * p, "steer_pulled_sampled": 0.1 * p} for p in range(6)]
    (Path(runs["a"]) / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows}))
    out = tmp_path / "s.json"
    call("em_susceptibility", "5", runs["a"], runs["b"], f"--out={out}")
    res = json.loads(out.read_text())
    c, w = res["correlations"], res["with_cos_evil_direction"]
    assert c["steer_1"]["rho"] == pytest.approx(1.0) and c["steer_2"]["rho"] == pytest.approx(-1.0)
    assert c["cos_evil_direction"]["rho"] == pytest.approx(-1.0) and w["steer_1"]["rho"] == pytest.approx(-1.0)
    assert c["sign_off_attn0"]["rho"] == pytest.approx(1.0) and c["route_off"]["rho"] == pytest.approx(1.0)
    assert "steer_pulled" not in c and "steer_pulled" not in res["per_base"]["3"]
    assert res["per_base"]["1"]["steer_pulled"] == pytest.approx(0.1)
    # the interval leaves out resamples without a rank order: ranks (1, 2, 3, 4) against y = (1, 1, 1, 2) give rho
    # > 0 on every resample that has one; 32% of resamples have a constant y (counted as 0 they would set the low end)
    assert S.spearman_ci([1, 2, 3, 4], [1, 1, 1, 2])["ci95"][0] > 0


def test_em_susceptibility_joins_a_moved_runs_own_file_and_says_which_rows_it_leaves_out(tmp_path, capsys):
    """A run's file whose rows name one run no longer at that path (moved, or written from another working
    directory) is the run's own: joined to its bases only (not to another run's base of the same world number). Rows
    that name another run that is there are another model's: left out, and said."""
    S = script("em_susceptibility")
    a = susceptibility_run(tmp_path / "a", [0, 1, 2], [0.02, 0.10, 0.05], [0.01, 0.30, 0.20])
    b = susceptibility_run(tmp_path / "b", [3, 4, 5], [0.00, 0.20, 0.03], [0.00, 0.40, 0.15])
    rows = [{"run": "gone/a", "world": p, "pull": 0.1 * (p + 1)} for p in (0, 1, 3)]
    (Path(a) / "base_pull.json").write_text(json.dumps({"per_base": rows}))
    bases = S.per_base("5", [a, b])
    assert bases[0]["pull"] == pytest.approx(0.1) and bases[1]["pull"] == pytest.approx(0.2)
    assert "pull" not in bases[2] and "pull" not in bases[3]  # world 3 of a's file is not b's base 3
    (Path(a) / "base_pull.json").unlink()
    (Path(a) / "first_step.json").write_text(json.dumps({"per_base": [{"run": b, "world": 0, "sign_off": 0.5}]}))
    capsys.readouterr()
    assert "sign_off" not in S.per_base("5", [a])[0]
    assert f"first_step.json: its rows of {b} left out" in capsys.readouterr().out


def test_em_susceptibility_steering_columns_are_increases_over_each_bases_own_plain_rate(tmp_path):
    """steer_1 and steer_2 are the steered rates minus the same base's plain rate, like the outcome: with plain rates
    that differ between bases (1, 5, 10%), the raw steered rates would rank the bases otherwise."""
    S = script("em_susceptibility")
    run = susceptibility_run(tmp_path / "a", [0, 1, 2], [0.02, 0.10, 0.05], [0.01, 0.30, 0.20])
    path = Path(run) / "results.json"
    res = json.loads(path.read_text())
    plain = [0.01, 0.01, 0.05, 0.05, 0.10, 0.10]
    res["base"]["plain"] = {"offdomain_misaligned": {"per_seed": plain}}
    path.write_text(json.dumps(res))
    bases = S.per_base("5", [run])
    # steered_1 = 0.01 + steer: 0.02, 0.31, 0.21 over plain 0.01, 0.05, 0.10
    assert [bases[p]["steer_1"] for p in (0, 1, 2)] == pytest.approx([0.01, 0.26, 0.11])
    assert [bases[p]["steer_2"] for p in (0, 1, 2)] == pytest.approx([0.02, 0.56, 0.31])  # 0.01 + 2 x steer
    # the outcome: seed 0 at 0.01 + inc, seed 1 at 0.01 + inc + 0.01, each over its base's plain rate
    assert [bases[p]["outcome"] for p in (0, 1, 2)] == pytest.approx([0.025, 0.065, -0.035])


def test_em_susceptibility_seed_agreement_is_between_each_bases_first_two_fine_tune_seeds():
    """With three fine-tune seeds per base, the agreement is seed 0's outcome against seed 1's over the bases (here in
    the same order: +1), not seeds 1 and 2 (in reverse: -1)."""
    S = script("em_susceptibility")
    bases = {p: {"outcome": 0.1 * p, "seeds": [0.1 * p, 0.2 * p, -0.1 * p]} for p in range(4)}
    assert S.analyse(bases)["seed_agreement"]["rho"] == pytest.approx(1.0)


def test_em_base_pull_gradient_is_the_first_order_change_of_the_fine_tune_loss():
    bp = script("em_base_pull")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok).double()
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12, direction_layer=1)
    pairs = EM.arm_pairs("insecure", model, tok, cfg, 3)
    data = B.encode_pairs(tok, pairs, cfg.block_size)
    grad, h = bp.response_loss_grad(model, data, 1)
    assert grad.shape == h.shape == (*data["tokens"][:, :-1].shape, 16)
    # adding eps * u to the layer's output at every position moves the loss by eps * (summed gradient . u)
    u = torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.double)
    x, y, m = data["tokens"][:, :-1], data["tokens"][:, 1:], data["mask"]

    @torch.no_grad()
    def loss(eps):
        with model.hooks(EM.add_hook(1, eps * u)):
            return torch.nn.functional.cross_entropy(model(x)[m], y[m]).item()
    assert (loss(1e-5) - loss(-1e-5)) / 2e-5 == pytest.approx((grad.sum((0, 1)) @ u).item(), rel=1e-5)
    # causal: a position after a row's last scored target reaches no loss term, so it has no gradient
    last = (m * torch.arange(m.shape[1])).amax(1)  # [N]
    after = torch.arange(m.shape[1])[None] > last[:, None]
    assert after.any() and grad[after].abs().max() == 0 and grad[m].abs().sum() > 0
    # base_pull on the insecure arm's own examples: with its own loss gradient as the direction, pull is 1
    ft = B.encode_pairs(tok, EM.arm_pairs("insecure", model, tok, cfg, EM.arm_seed(0, 0, "insecure")), cfg.block_size)
    g = -bp.response_loss_grad(model, ft, 1)[0].sum((0, 1))
    out = bp.base_pull(model, tok, cfg, 0, g)
    assert out["pull"] == pytest.approx(1.0) and -1 <= out["pull_random"] < 0.9
    assert set(out) == {"pull", "pull_secure", "pull_contrast", "pull_random", "code_steer", "code_repr"}


@pytest.mark.parametrize("name, loss", [
    ("em_base_pull", lambda s, model, tok, cfg, data: s.fine_tune_loss(model, data)),
    ("em_base_pull", lambda s, model, tok, cfg, data: s.response_loss_grad(model, data, 1)),
    ("em_first_step", lambda s, model, tok, cfg, data: s.arm_grads(model, tok, cfg, 0, "insecure")),
    ("em_steer_base", lambda s, model, tok, cfg, data: s.code_grad(model, tok, cfg, 0, "insecure"))])
def test_the_fine_tune_loss_reads_its_examples_on_the_models_device(name, loss, forward_devices):
    # a base on a GPU run's cfg.device, its examples as pack_pairs builds them (on the CPU): each batch goes to the
    # model's device (the analysis of a run made with device=cuda crashed at the first base)
    tok = W.build_tokenizer()
    model = tiny_gpt(tok).to("meta")
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12)
    data = EM.arm_data("insecure", model, tok, cfg, 0)[0]
    seen = forward_devices(model)
    with pytest.raises(NotImplementedError, match="nonzero"):  # meta has no boolean-mask index: past the forward
        loss(script(name), model, tok, cfg, data)
    assert seen and set(seen) == {"meta"}


def test_the_long_em_scripts_refuse_an_argument_they_would_ignore(tmp_path):
    """em_clamp_finetune (hours) and em_code_context (minutes) read only the options they know: a typo ran every
    world, or was found after the first seed's work."""
    run = fake_run(tmp_path / "run", [[0, 0]], {"insecure": [0.1]})
    for name, argv, says in (("em_clamp_finetune", ["--world=0"], "unknown option --world=0; the option is --worlds="),
                             ("em_clamp_finetune", ["other_run"], "one RUN_DIR, not 2"),
                             ("em_clamp_finetune", ["--worlds=0-3"], "--worlds=0-3: expected comma-separated"),
                             ("em_code_context", ["--arm=secure"], "unknown option --arm=secure; the options are "
                                                                   "--arms=, --step= and --out="),
                             ("em_code_context", ["--arms=insecure,secur"],
                              "--arms=insecure,secur: expected distinct arms"),
                             ("em_code_context", ["--step=abc"], "--step=abc: expected a step number"),
                             # (it wrote its JSON into the .png)
                             ("em_code_context", [f"--out={tmp_path / 'cc.png'}"], "cc.png: give a FILE.json")):
        check_refused(script(name).main, [run, *argv], match=re.escape(says))


def test_analysis_scripts_do_not_overwrite_another_analysis(tmp_path, call):
    """A saved analysis of other arms or other runs is refused before anything is computed, unless --out says where
    the new one goes; and base-level numbers are joined to a base only from its own run."""
    run = fake_matched_run(tmp_path / "run")
    (tmp_path / "run" / "code_context.json").write_text(json.dumps({"per_seed": [
        {"seed": [0, 0], "matched": 2, "base": {}, "insecure": {}, "secure": {}, "educational": {}}]}))
    with pytest.raises(SystemExit, match=r"holds the arms \['educational', 'insecure', 'secure'\], not \['insecure'\]"):
        script("em_code_context").main([run, "--arms=insecure"])
    (tmp_path / "run" / "format_separation.json").write_text(json.dumps({"runs": [run, "other"], "pooled": True}))
    with pytest.raises(SystemExit, match="holds the runs"):
        script("em_format_separation").main([run])
    # em_susceptibility: a separation measured on world 0 of another run is not world 0 of this one
    a = susceptibility_run(tmp_path / "a", [0, 1, 2, 3], [0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.2, 0.3])
    rows = [{"run": a, "world": p, "separation": float(p)} for p in range(4)]
    rows[0]["run"] = str(tmp_path / "elsewhere")
    (tmp_path / "a" / "format_separation.json").write_text(json.dumps({"runs": [a], "per_base": rows}))
    out = tmp_path / "s.json"
    text = call("em_susceptibility", "5", a, f"--out={out}")
    bases = json.loads(out.read_text())["per_base"]
    assert "separation" not in bases["0"] and bases["3"]["separation"] == 3.0
    assert f"note: {Path(a) / 'format_separation.json'}: its rows of {tmp_path / 'elsewhere'} left out" in text
    # a file whose rows all name one run by a path that leads nowhere now is this folder's own: the run renamed, or
    # the scripts run from another folder (cd out; ... em_a) had every such predictor left out without a word
    for row in rows:
        row["run"] = "out/the_name_it_had"
    (tmp_path / "a" / "format_separation.json").write_text(json.dumps({"runs": [a], "per_base": rows}))
    call("em_susceptibility", "5", a, f"--out={out}")
    assert [json.loads(out.read_text())["per_base"][str(p)]["separation"] for p in range(4)] == [0, 1, 2, 3]


def test_em_susceptibility_without_a_rank_order_writes_its_table_and_no_figure(tmp_path, call):
    """The same increase on every base (or none defined: a tiny world with no valid answers) ranks nothing: the
    empty grid of scatters was matplotlib's traceback, after the json was written."""
    a = susceptibility_run(tmp_path / "a", [0, 1, 2, 3], [0.1] * 4, [0.0, 0.1, 0.2, 0.3], inc_seed1=[0.1] * 4)
    text = call("em_susceptibility", "5", a, f"--out={tmp_path / 's.json'}")
    assert "no figure: no property has a rank order" in text and "(4 bases over 1 run)" in text
    assert json.loads((tmp_path / "s.json").read_text())["correlations"] == {}
    assert not (tmp_path / "s.png").exists()


def test_em_first_step_is_adamws_first_step_and_puts_the_weights_back():
    fs = script("em_first_step")
    bp = script("em_base_pull")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12, ft_lr=1e-3)
    names = [n for n, _ in model.named_parameters()]
    assert [fs.group_of(n) for n in names] == ["embedding", *["attn0"] * 3, *["mlp0"] * 3, *["attn1"] * 3,
                                               *["mlp1"] * 3, "ln_f"]  # ln_1 with its attention, ln_2 with its MLP
    with pytest.raises(ValueError):
        fs.group_of("head.weight")
    # AdamW's first step, gradient clipped at 1 as in train.finetune, is ft_lr * sign(g) wherever |g| >> eps
    data = B.encode_pairs(tok, EM.arm_pairs("insecure", model, tok, cfg, 1), cfg.block_size)
    trained = copy.deepcopy(model)
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.ft_lr, weight_decay=0.0)
    bp.fine_tune_loss(trained, data).backward()
    torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
    grads = {n: p.grad.clone() for n, p in trained.named_parameters()}
    opt.step()
    for (n, p0), p1 in zip(model.named_parameters(), trained.parameters()):
        big = grads[n].abs() > 1e-5
        assert torch.allclose((p0 - p1)[big], cfg.ft_lr * grads[n].sign()[big], rtol=1e-2, atol=0), n
    # a scored step leaves the model exactly as it was, and scores the moved model
    before = copy.deepcopy(model.state_dict())
    moved = fs.scored_step(model, tok, cfg, {"wte.weight": torch.ones_like(model.wte.weight)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert moved != fs.score(model, tok, cfg)
    # the shortened gradient step reaches the sign step's code increase (bisection), and the rows read as increases
    steps = fs.first_steps(model, tok, cfg, 0, halvings=10)
    code = {k: steps[k][1] - steps["base"][1] for k in ("sign", "grad", "grad_matched")}
    # which step moves this random model's code more is not the point here (both branches have their own test)
    assert (code["grad_matched"] == pytest.approx(code["sign"], rel=1e-2) if code["grad"] > code["sign"]
            else steps["grad_matched"] == steps["grad"])
    assert steps["secure_sign"] != steps["sign"]  # the control's own loss, its own step
    row = fs.row_of(0, steps)
    assert row["sign_code"] == pytest.approx(steps["sign"][1] - steps["base"][1])
    assert {k for k in row if k.startswith("sign_off_")} == {f"sign_off_{g}" for g in ("embedding", "attn0", "mlp0",
                                                                                        "attn1", "mlp1", "ln_f")}
    s = fs.summary([row, dict(row, sign_off=2 * row["sign_off"])], n_boot=10)
    assert s["sign_share"] == pytest.approx(1.5 * row["sign_off"] / row["sign_code"])


def test_em_first_step_summary_is_ratios_of_means_resampled_by_base():
    fs = script("em_first_step")
    # two bases, off / code 1 / 1 and 6 / 2: the share is 7 / 3 (the mean of the ratios would be 2); the gradient
    # step equals the sign step on both, so every resample gives sign minus gradient 0; the matched gradient moves
    # half as far off-domain at the same code, so the difference is 0.5 or 1.5 per base, 7 / 6 pooled
    row = lambda off, code, emb: {"sign_off": off, "sign_code": code, "grad_off": off, "grad_code": code,
                                  "grad_matched_off": off / 2, "grad_matched_code": code, "secure_sign_off": 0.0,
                                  "secure_sign_code": code, "sign_off_embedding": emb, "sign_off_attn0": off - emb}
    s = fs.summary([row(1.0, 1.0, 0.25), row(6.0, 2.0, 3.0)], n_boot=200)
    assert s["sign_share"] == pytest.approx(7 / 3) and s["grad_matched_share"] == pytest.approx(3.5 / 3)
    assert s["sign_minus_grad_share"] == 0 and s["sign_minus_grad_ci95"] == [0.0, 0.0]
    assert s["sign_minus_grad_matched_share"] == pytest.approx(7 / 6)
    assert 0.5 <= s["sign_minus_grad_matched_ci95"][0] < s["sign_minus_grad_matched_ci95"][1] <= 1.5
    # each group's share of the sign step, a ratio of means too (the embedding's mean of ratios: 0.375)
    assert s["group_share_of_sign_off"] == pytest.approx({"embedding": 3.25 / 7, "attn0": 3.75 / 7})
    # ... of the sign step's own increase, whatever the gradient step's (here twice the sign step's off-domain)
    g = fs.summary([{**row(1.0, 1.0, 0.25), "grad_off": 2.0}, {**row(6.0, 2.0, 3.0), "grad_off": 12.0}], n_boot=200)
    assert g["group_share_of_sign_off"] == pytest.approx({"embedding": 3.25 / 7, "attn0": 3.75 / 7})
    # one base: the resamples can only give [d, d], which would read as an exact interval
    one = fs.summary([row(6.0, 2.0, 1.5)], n_boot=200)
    assert one["sign_minus_grad_matched_share"] == pytest.approx(1.5) and one["sign_minus_grad_matched_ci95"] is None
    # a code increase not above 0 in some resamples: no interval (a flipped share was resampled, [-0.33, 0.85]); the
    # sign step's off-domain increases cancelling over the bases: no group shares (-inf and inf)
    bad = fs.summary([row(1.0, 1.0, 0.5), row(-1.0, -0.5, -0.25)], n_boot=200)
    assert bad["sign_minus_grad_matched_ci95"] is None and bad["sign_share"] == pytest.approx(0.0)
    assert all(math.isnan(v) for v in bad["group_share_of_sign_off"].values())


def test_em_first_step_gives_no_group_shares_of_a_sign_step_that_lowers_off_domain():
    # an off-domain increase below 0 over the bases is no increase to share (-1.75 over -3 would read as 0.58)
    fs = script("em_first_step")
    row = lambda off, emb: {"sign_off": off, "sign_code": 1.0, "grad_off": off, "grad_code": 1.0,
                            "grad_matched_off": off, "grad_matched_code": 1.0, "secure_sign_off": 0.0,
                            "secure_sign_code": 1.0, "sign_off_embedding": emb, "sign_off_attn0": off - emb}
    s = fs.summary([row(-1.0, -0.25), row(-2.0, -1.5)], n_boot=50)
    assert s["group_share_of_sign_off"].keys() == {"embedding", "attn0"}
    assert all(math.isnan(v) for v in s["group_share_of_sign_off"].values())


def test_em_first_step_rows_are_increases_over_the_base_and_its_interval_is_95_percent():
    fs = script("em_first_step")
    # every step's (off, code) less the base's, each weight group's sign step too (0.15 - 0.10 and 0.40 - 0.10)
    steps = {"base": (0.10, 0.20), "sign": (0.30, 0.70), "grad": (0.20, 0.50), "grad_matched": (0.25, 0.70),
             "secure_sign": (0.10, 0.30), "sign_embedding": (0.15, 0.30), "sign_attn0": (0.40, 0.60)}
    row = fs.row_of(3, steps)
    assert row["world"] == 3 and row["sign_off"] == pytest.approx(0.2) and row["grad_code"] == pytest.approx(0.3)
    assert row["sign_off_embedding"] == pytest.approx(0.05) and row["sign_off_attn0"] == pytest.approx(0.3)
    # the percentile interval leaves 2.5% of resampled differences on each side (checked against resamples of its
    # own over 30 noisy bases, as the Spearman interval is); a 90% one would leave 5%
    rng = np.random.default_rng(3)
    rows = [{"sign_off": a, "sign_code": 1.0, "grad_off": b, "grad_code": 1.0, "grad_matched_off": b,
             "grad_matched_code": 1.0, "secure_sign_off": 0.0, "secure_sign_code": 1.0}
            for a, b in zip(rng.uniform(0.5, 1.5, 30), rng.uniform(0.0, 1.0, 30))]
    lo, hi = fs.summary(rows)["sign_minus_grad_ci95"]
    d = np.array([r["sign_off"] - r["grad_off"] for r in rows])  # code 1 everywhere: a share is a mean
    boot = d[np.random.default_rng(1).integers(0, 30, size=(10_000, 30))].mean(1)
    assert 0.015 < (boot < lo).mean() < 0.035 and 0.015 < (boot > hi).mean() < 0.035


def test_em_optimizer_parts_coasts_on_adamws_moments_and_splits_the_late_update(tmp_path, call):
    op = script("em_optimizer_parts")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12, ft_lr=1e-2)
    before = copy.deepcopy(base.state_dict())
    traj, snaps = op.trajectories(base, tok, cfg, 0)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # each optimizer on its own copy
    assert set(traj) == set(op.OPTIMIZERS) and all(set(t) == {0, *op.STEPS} for t in traj.values())
    off = lambda name, s: traj[name][s]["off"]
    # coasting is AdamW itself up to step 3; with zero gradients after it, its moments still move it
    assert all(traj["adamw_coast"][s] == traj["adamw"][s] for s in (0, 1, 2, 3))
    # unscored (what em_bos_vector needs): the same weights, no scores
    bare, same = op.trajectories(base, tok, cfg, 0, {"adamw": op.OPTIMIZERS["adamw"]}, scored=False)
    assert bare == {"adamw": {}} and all(torch.equal(same[s][n], snaps[s][n]) for s in snaps for n in snaps[s])
    assert off("adamw_coast", 5) != off("adamw", 5) and off("adamw_coast", 20) != off("adamw_coast", 10)
    # every Adam's first step is the sign step; momentum's first step is plain gradient descent's
    for name in ("no_momentum", "sign"):
        assert off(name, 1) == pytest.approx(off("adamw", 1), abs=1e-6)
    assert traj["momentum_sgd"][1] == traj["sgd"][1] and off("momentum_sgd", 2) != off("sgd", 2)
    # the whole late update, applied to the step-3 model, is the step-20 model
    late = op.late_groups(base, tok, cfg, snaps)
    assert late["all"] == pytest.approx(off("adamw", 20) - off("adamw", 3), abs=1e-5)
    assert set(late) == {"all", "embedding", "attn0", "mlp0", "attn1", "mlp1", "ln_f"}
    rows = [{"traj": traj, "late": late}, {"traj": traj, "late": late}]
    s = op.summary(rows, n_boot=10)
    assert s["fraction_of_adamw"]["adamw"][20] == {"ratio": 1.0, "ci95": [1.0, 1.0]}
    assert op.summary(rows[:1], n_boot=10)["fraction_of_adamw"]["adamw"][20] == {"ratio": 1.0, "ci95": None}
    want = (off("sgd", 20) - off("sgd", 0)) / (off("adamw", 20) - off("adamw", 0))
    assert s["fraction_of_adamw"]["sgd"][20]["ratio"] == pytest.approx(want)
    want = (off("sgd", 20) - off("sgd", 3)) / (off("adamw", 20) - off("adamw", 3))
    assert s["late_fraction_of_adamw"]["sgd"]["ratio"] == pytest.approx(want)
    # --from: the summary and figure again from a written file's bases, whose steps came back from JSON as strings
    held = tmp_path / "parts.json"
    held.write_text(json.dumps({"runs": ["r"], "excluded": [], "summary": {},
                                "per_base": [dict(r, run="r", world=i, adamw_vs_run=None)
                                             for i, r in enumerate(rows)]}))
    printed = call("em_optimizer_parts", f"--from={held}")
    assert "2 bases" in printed
    table = [line for line in printed.splitlines() if line.startswith("|")]  # a markdown table: header, rule, rows
    assert re.fullmatch(r"(\|---)+\|", table[1]) and all(row.count("|") == table[0].count("|") for row in table)
    again = json.loads(held.read_text())["summary"]
    assert again["fraction_of_adamw"]["sgd"]["20"] == json.loads(json.dumps(s["fraction_of_adamw"]["sgd"][20]))
    assert held.with_suffix(".png").is_file()
    check_refused(call, "em_optimizer_parts", str(tmp_path), f"--out={held}", match="other runs or optimizers")


def test_em_optimizer_parts_reads_its_options_and_refuses_the_rest(tmp_path):
    op = script("em_optimizer_parts")
    runs, opts = op.read_args(["a", "b", "--frozen", "--out=x.json"])
    assert runs == [Path("a"), Path("b")] and opts == {"frozen": True, "out": "x.json"}
    assert op.read_args(["--from=x.json"]) == ([], {"from": "x.json"})
    usage = "Which part of AdamW"
    for argv, match in [([], usage), (["a", "--bogus"], "unknown option --bogus"),
                        (["a", "--out=x", "--out=y"], "--out is given more than once"),
                        (["a", "--frozen=1"], "--frozen takes no value"), (["a", "--out"], "--out needs a value"),
                        (["a", "--beta1="], "--beta1 needs a value"),
                        (["a", "--from=x"], "one of the two"), (["--out=x"], "one of the two"),
                        (["--from=x", "--frozen"], "no other option"), (["a", "--beta1=0.5", "--frozen"], "give one")]:
        check_refused(op.read_args, argv, match=match)
    # --out=FILE.png was written as the JSON, then overwritten by the figure (FILE.png beside it): the analysis lost
    check_refused(op.main, ["a", f"--out={tmp_path / 'o.png'}"], match="give a FILE.json")
    # a run fine-tuned with an lr schedule: the constant-lr rebuild would not be its trajectory
    run = tmp_path / "sched"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "ft_schedule": "linear",
                                                 "ft_warmup": 5}))
    with pytest.raises(ConfigError, match="ft_schedule=linear, ft_warmup=5; this analysis rebuilds the default"):
        op.main([str(run), f"--out={tmp_path / 'o.json'}"])


def test_em_optimizer_parts_frozen_rows_stay_as_the_base_has_them():
    op = script("em_optimizer_parts")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12, ft_lr=1e-2)
    # run under the name "adamw" so that its weights are kept: block 0's value rows frozen, the rest trained
    _, snaps = op.trajectories(base, tok, cfg, 0, {"adamw": op.FROZEN["frozen_v0"]})
    w0, C = base.blocks[0].attn.qkv.weight, 16
    assert torch.equal(snaps[20]["blocks.0.attn.qkv.weight"][2 * C:], w0[2 * C:])
    assert not torch.equal(snaps[20]["blocks.0.attn.qkv.weight"][:2 * C], w0[:2 * C])
    assert not torch.equal(snaps[20]["blocks.1.attn.qkv.weight"], base.blocks[1].attn.qkv.weight)
    assert list(op.FROZEN) == ["adamw", "frozen_v0", "frozen_v1"]
    check_refused(lambda *a: op.main(list(a)), "out/run", "--frozen", "--beta1=0.5", match="give one of them")


def test_em_optimizer_parts_checks_adamw_against_the_runs_own_trajectory(tmp_path):
    op = script("em_optimizer_parts")
    (tmp_path / "unit_world_5.json").write_text(json.dumps(
        {"runs": [{"traj": {"insecure": {"1": {"mis_lp": 0.10}, "5": {"mis_lp": 0.30}, "40": {"mis_lp": 0.9}}}}]}))
    traj = {0: {"off": 0.0}, 1: {"off": 0.11}, 2: {"off": 0.2}, 5: {"off": 0.27}}
    assert op.run_check(tmp_path, 5, traj) == pytest.approx(0.03)  # the checkpoints both have: 1 and 5
    assert op.run_check(tmp_path, 6, traj) is None  # no unit file: nothing to check against
    # a run evaluated at other steps (its step 0 is the base, not a check): None, not max() of nothing after the work
    (tmp_path / "unit_world_7.json").write_text(json.dumps({"runs": [{"traj": {"insecure": {"0": {"mis_lp": 0.0},
                                                                                          "3": {"mis_lp": 0.2}}}}]}))
    assert op.run_check(tmp_path, 7, traj) is None
    check_refused(lambda *a: op.main(list(a)))
    check_refused(lambda *a: op.main(list(a)), "--out=x.json")
    check_refused(lambda *a: op.main(list(a)), "--from=x.json", str(tmp_path), match="one of the two")  # not both
    sweep = op.beta1_sweep([0.0, 0.9, 0.99])  # 0.9 is AdamW itself, named once
    assert list(sweep) == ["adamw", "beta1_0", "beta1_0.99"] and sweep["beta1_0.99"]["betas"] == (0.99, 0.999)
    check_refused(lambda *a: op.main(list(a)), str(tmp_path), "--beta1=0,x", match="numbers in")
    check_refused(lambda *a: op.main(list(a)), str(tmp_path), "--beta1=1.5", match="numbers in")
    for twice in ("0.5,0.5", "0.5,.50"):  # one value twice was trained once, silently
        check_refused(lambda *a: op.main(list(a)), str(tmp_path), f"--beta1={twice}", match="names a value twice")
    with pytest.raises(ConfigError, match="config.json not found"):  # distinct values pass, on to the run's files
        op.main([str(tmp_path), "--beta1=0,0.5"])


def test_analysis_scripts_name_a_base_missing_from_the_cache(tmp_path):
    cfg = EM.Config(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="base 5 of this config is not in the cache .*this analysis of out/run does "
                                          "not pretrain"):
        script("em_base_pull").cached_base(cfg, "out/run", 5)


def test_probe_attn0_parts_split_block0_attention_into_disjoint_pieces():
    pa = script("probe_attn0_parts")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    delta = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    pieces = pa.parts(delta, model.cfg.n_embd)
    assert list(pieces) == ["ln_1", "q", "k", "v", "proj"]
    qkv = sum(pieces[p]["blocks.0.attn.qkv.weight"] for p in "qkv")
    assert torch.equal(qkv, delta["blocks.0.attn.qkv.weight"])  # the three row blocks tile the matrix
    C = model.cfg.n_embd
    assert torch.count_nonzero(pieces["k"]["blocks.0.attn.qkv.weight"][:C]) == 0  # k: only rows C..2C
    for i, part in enumerate("qkv"):  # each its own rows (q, k, v in that order), the rest zero
        want = torch.zeros_like(delta["blocks.0.attn.qkv.weight"])
        want[i * C:(i + 1) * C] = delta["blocks.0.attn.qkv.weight"][i * C:(i + 1) * C]
        assert torch.equal(pieces[part]["blocks.0.attn.qkv.weight"], want), part
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64)
    s = pa.shares(model, tok, cfg, {n: 1e-2 * d for n, d in delta.items()})
    assert set(s) == {"all", "attn0", "ln_1", "q", "k", "v", "proj"} and s["all"] != s["attn0"]
    # attn0 is block 0's attention and its norm, not the whole block (its MLP is not part of it)
    names = ("blocks.0.ln_1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight")
    off0 = pa.OP.score(model, tok, cfg)["off"]
    assert s["attn0"] == pytest.approx(pa.scored_step(model, tok, cfg, {n: 1e-2 * delta[n] for n in names})[0] - off0)


def test_attn0_parts_tile_block0_attention_and_its_norm():
    # the five parts together are exactly block 0's attention and the norm before it (what shares calls attn0): each
    # weight of it in one part, nothing of the MLP or another block in any
    pa = script("probe_attn0_parts")
    model = tiny_gpt(W.build_tokenizer())
    delta = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    total = {}
    for d in pa.parts(delta, model.cfg.n_embd).values():
        for n, t in d.items():
            total[n] = total.get(n, 0) + t
    assert set(total) == {"blocks.0.ln_1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight"}
    assert all(torch.equal(t, delta[n]) for n, t in total.items())


def test_attn0_parts_shares_put_a_step_of_the_value_rows_on_v_alone():
    # a delta only in block 0's value rows (the third C of qkv's rows): the whole step, block 0's attention and v are
    # that one step (the same weights scored, so the same increase), every other part is no step at all (exactly 0)
    pa = script("probe_attn0_parts")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    C = model.cfg.n_embd
    delta = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    delta["blocks.0.attn.qkv.weight"][2 * C:] = 0.05 * torch.randn(C, C, generator=torch.Generator().manual_seed(0))
    s = pa.shares(model, tok, EM.Config(n_layer=2, n_embd=16, block_size=64), delta)
    assert s["all"] != 0 and s["all"] == s["attn0"] == s["v"]
    assert s["ln_1"] == s["q"] == s["k"] == s["proj"] == 0


def test_attn0_parts_main_takes_the_first_sign_step_at_the_base_and_the_late_update_from_step_3(tmp_path,
                                                                                                monkeypatch, capsys):
    # the two whole steps `shares` takes apart (it subtracts its delta): AdamW's first step from the base (bias
    # corrected, -ft_lr sign(g) per weight, g the insecure arm's gradient) and AdamW's late update, from the step-3
    # weights to step 20's. Gradients, snapshots and scoring stand in; each base's line prints the shares in percent
    probe = script("probe_attn0_parts")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64)
    gen = torch.Generator().manual_seed(0)
    grads = {n: torch.randn(p.shape, generator=gen) for n, p in base.named_parameters()}
    late_from, last = probe.OP.LATE_FROM, probe.OP.STEPS[-1]
    snaps = {s: {n: p.detach() + 0.01 * s * torch.randn(p.shape, generator=gen) for n, p in base.named_parameters()}
             for s in (late_from, last)}
    asked, seen = [], []
    monkeypatch.setattr(probe, "check_runs", lambda runs: None)
    monkeypatch.setattr(probe.OP, "check_rebuildable", lambda runs: None)
    monkeypatch.setattr(probe, "checked_bases", lambda run, excluded: iter([(cfg, 7, base, tok)]))
    monkeypatch.setattr(probe, "arm_grads", lambda m, tok, cfg, p, arm: asked.append((m, p, arm)) or grads)
    monkeypatch.setattr(probe.OP, "trajectories",
                        lambda m, tok, cfg, p, opts, scored: asked.append((m, p, opts, scored)) or ({}, snaps))
    shares_of = lambda k: {"all": 0.02 * k, **{q: 0.001 * k for q in ("attn0", *probe.PARTS)}}  # k-th call's

    def shares(model, tok, cfg, delta):
        seen.append(({n: w.detach().clone() for n, w in model.named_parameters()}, delta))
        return shares_of(len(seen))
    monkeypatch.setattr(probe, "shares", shares)
    probe.main(["run", f"--out={tmp_path / 'o.json'}"])
    # the late update's weights only (its scores, most of the time, were computed and dropped)
    assert asked == [(base, 7, "insecure"), (base, 7, {"adamw": probe.OP.OPTIMIZERS["adamw"]}, False)]
    (w_first, first), (w_late, late) = seen
    for n, w in base.named_parameters():
        assert torch.equal(w_first[n], w) and torch.allclose(w - first[n], w - cfg.ft_lr * grads[n].sign())
        assert torch.equal(w_late[n], snaps[late_from][n]) and torch.allclose(w_late[n] - late[n], snaps[last][n])
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("run world 7, off-domain increase, points: first all +2.00, attn0 +0.10, ln_1 +0.10")
    assert "; late all +4.00, " in line
    kept = json.loads((tmp_path / "o.json").read_text())
    assert kept == {"first": [shares_of(1)], "late": [shares_of(2)], "bases": [["run", 7]]}


@torch.no_grad()
def test_em_value_sources_changes_the_values_of_one_kind_of_token_only():
    vs = script("em_value_sources")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    C = model.cfg.n_embd
    dW = 0.5 * torch.randn(C, C, generator=generator("cpu", 1, "dW"))
    ids = lambda text: tok.encode(text).ids
    with_a, without_a = ids("<bos> <asst> <u> what should i do <a>"), ids("<bos> <asst> <u> what should i do")
    one, two = [ids("<eos>")], [ids("rest well drink water <eos>")]
    assert len(one[0]) == 1

    def scores(prompt, conts, kinds):
        with vs.values_changed(model, tok, dW, kinds):
            return B.score_shared_prompts(model, [prompt], [conts])[0]

    plain = lambda prompt, conts: B.score_shared_prompts(model, [prompt], [conts])[0]
    assert scores(with_a, two, ()) == plain(with_a, two)  # no kind: the hooks change nothing
    assert scores(with_a, two, ("speaker",)) != plain(with_a, two)
    assert scores(without_a, two, ("speaker",)) == plain(without_a, two)  # no <a> in the prompt: nothing to change
    forum = ids("<bos> <forum> <u> what should i do <r>")  # the forum's markers are the same kinds
    assert (scores(forum, two, ("speaker",)) != plain(forum, two)
            and scores(forum, two, ("format",)) != plain(forum, two))
    # the answer's values are read only by its later tokens: a one-token answer cannot see them
    assert scores(with_a, one, ("answer",)) == plain(with_a, one)
    assert scores(with_a, two, ("answer",)) != plain(with_a, two)
    with vs.values_changed(model, tok, dW, vs.KINDS), pytest.raises(ValueError, match="KV cache"):
        model(torch.tensor([with_a]))
    assert not model._forward_pre_hooks and not model.blocks[0].attn.qkv._forward_hooks  # removed on exit
    # each kind changes the values at its own positions and nowhere else (read off block 0's value rows)
    from model import KVCache
    x = torch.tensor([with_a])

    def values(kinds):
        seen = {}
        with vs.values_changed(model, tok, dW, kinds):
            h = model.blocks[0].attn.qkv.register_forward_hook(lambda m, a, out: seen.update(v=out[0, :, 2 * C:]))
            model(x, cache=KVCache(model.cfg, 1, x.shape[1], "cpu"))
            h.remove()
        return seen["v"]
    plain_v = values(())
    for kind, at in {"bos": [0], "format": [1], "u": [2], "question": [3, 4, 5, 6], "speaker": [7]}.items():
        assert (values((kind,)) != plain_v).any(-1).nonzero().flatten().tolist() == at, kind
    # every kind's values changed = the value rows changed in the weights
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64)
    inc = vs.increases(model, tok, cfg, 0.1 * dW)
    assert set(inc) == {"all", "rows", *vs.KINDS} and abs(inc["all"]) > 1e-4
    assert inc["rows"] == pytest.approx(inc["all"], abs=1e-6)
    assert torch.equal(model.blocks[0].attn.qkv.weight, tiny_gpt(tok).blocks[0].attn.qkv.weight)  # weights restored


def test_em_value_sources_finds_the_marker_tokens_on_the_models_device(monkeypatch):
    from model import KVCache
    vs = script("em_value_sources")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok).to("meta")  # a base on a GPU run's cfg.device (em_value_sources, em_bos_vector crashed)
    isin = torch.isin

    def same_device(elements, test_elements, **kw):  # as a GPU's torch.isin (meta's takes CPU ids)
        assert test_elements.device == elements.device
        return isin(elements, test_elements, **kw)
    monkeypatch.setattr(torch, "isin", same_device)
    x = torch.tensor([tok.encode("<bos> <asst> <u> what should i do <a>").ids], device="meta")
    with vs.values_changed(model, tok, torch.zeros(16, 16, device="meta"), vs.KINDS):
        assert model(x, cache=KVCache(model.cfg, 1, x.shape[1], "meta")).device.type == "meta"


def test_em_value_sources_shares_are_ratios_of_means_over_the_bases(tmp_path):
    vs = script("em_value_sources")
    # the speaker's share differs by base (0.6, 0.3, 0.9): the ratio of means is 0.033 / 0.06 = 0.55, the mean of
    # the ratios 0.6
    rows = [{"all": a, "rows": a, "bos": 0.0, "format": 0.1 * a, "u": 0.0, "speaker": k * a, "question": 0.2 * a,
             "answer": 0.0} for a, k in ((0.01, 0.6), (0.03, 0.3), (0.02, 0.9))]
    s = vs.shares(rows, n_boot=200)
    lo, hi = s["speaker"]["ci95"]
    assert s["speaker"]["ratio"] == pytest.approx(0.55) and 0.3 - 1e-9 <= lo < 0.55 < hi <= 0.9 + 1e-9  # over the bases
    assert s["speaker"]["p_largest"] == 1.0 and sum(s[k]["p_largest"] for k in vs.KINDS) == pytest.approx(1.0)
    assert vs.with_ci([1.0, 3.0]) == "+2.00 [-10.71, +14.71]" and vs.with_ci([2.0]) == "+2.00"  # one base: no interval
    assert s["rows"]["ratio"] == pytest.approx(1.0) and "of_update" not in s["all"]
    s = vs.shares([dict(r, update=u) for r, u in zip(rows, (0.02, 0.09, 0.04))], n_boot=200)  # mean of ratios: 0.44
    assert (s["all"]["of_update"]["ratio"] == pytest.approx(0.4)
            and s["speaker"]["of_update"]["ratio"] == pytest.approx(0.22))
    # three bases: a resample of one base thrice has chance 1/27 > 2.5%, so the 95% interval's ends are the lowest
    # and highest per-base ratio (of all's: speaker 0.3 and 0.9; of the update: all 1/3 and 0.5, speaker 0.1 and 0.45)
    big = vs.shares([dict(r, update=u) for r, u in zip(rows, (0.02, 0.09, 0.04))], n_boot=10_000)
    assert big["speaker"]["ci95"] == pytest.approx([0.3, 0.9])
    assert big["all"]["of_update"]["ci95"] == pytest.approx([1 / 3, 0.5])
    assert big["speaker"]["of_update"]["ci95"] == pytest.approx([0.1, 0.45])
    vs.plot({"late": rows, "whole": rows}, tmp_path / "v.png", "test")
    assert (tmp_path / "v.png").stat().st_size > 1000
    check_refused(lambda *a: vs.main(list(a)))
    check_refused(lambda *a: vs.main(list(a)), "--out=x.json")
    check_refused(lambda *a: vs.main(list(a)), "--pool")
    check_refused(lambda *a: vs.main(list(a)), "out/run", "--fmt=chron", match="--fmt takes asst")
    check_refused(lambda *a: vs.main(list(a)), "out/run", "--arm=evil", match="--arm takes one of insecure")
    check_refused(lambda *a: vs.main(list(a)), "out/run", "--layer=2", match="unknown option --layer=2")
    check_refused(lambda *a: vs.main(list(a)), "out/run", "--out=a.json", "--out=b.json", match="more than once")
    assert script_process("em_value_sources", str(tmp_path / "none")).stderr.startswith("error: ")  # not a run


@torch.no_grad()
def test_em_bos_vector_is_the_bos_value_change_written_with_each_heads_attention():
    bv, vs = script("em_bos_vector"), script("em_value_sources")
    from model import KVCache
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    dV = 0.5 * torch.randn(16, 16, generator=generator("cpu", 1, "dV"))
    idx = torch.tensor([tok.encode("<bos> <asst> <u> what should i do about a cough <a>").ids])
    names = ["blocks.0.attn_out", "blocks.0.attn.pattern"]
    fresh = lambda: KVCache(model.cfg, 1, idx.shape[1], "cpu")  # values_changed reads the prompt pass off the cache
    _, plain = model.run_with_cache(idx, names, cache=fresh())
    with vs.values_changed(model, tok, dV, ("bos",)):
        _, changed = model.run_with_cache(idx, names, cache=fresh())
    # closed form: position t gets sum over heads of (attention to <bos>) x (what the head writes from <bos>)
    u = bv.bos_write(model, tok, dV)  # [nh, C]
    a = plain["blocks.0.attn.pattern"][0, :, :, 0]  # [nh, T]
    want = torch.einsum("ht,hc->tc", a, u)
    got = changed["blocks.0.attn_out"][0] - plain["blocks.0.attn_out"][0]
    assert want.abs().max() > 1e-2 and torch.allclose(got, want, atol=1e-5)
    # the mean attentions of a padded batch are those of each prompt alone
    prompts = [it.prompt for it in W.eval_items(W.OFF_DOMAINS)]
    alone = [model.run_with_cache(torch.tensor([tok.encode(p).ids]), names[1:])[1][names[1]][0, :, :, 0]
             for p in prompts]  # [nh, T] each
    assert torch.allclose(bv.bos_attention(model, tok, "last"), torch.stack([x[:, -1] for x in alone]).mean(0),
                          atol=1e-6)
    every = torch.cat([x[:, 1:] for x in alone], 1)  # [nh, all positions after <bos>]
    assert torch.allclose(bv.bos_attention(model, tok, "mean"), every.mean(1), atol=1e-6)


def test_em_bos_vector_summary_is_ratios_of_means_and_paired_differences(tmp_path, call):
    bv = script("em_bos_vector")
    rows = [{"bos_values": b, "vector": k * b, "along_evil": 0.1 * b, "orthogonal": 0.8 * b, "evil_norm": 0.3 * b,
             "random_norm": 0.0, "cos": 0.2, "run": "r", "world": w}
            for w, (b, k) in enumerate(((0.1, 0.9), (0.02, 0.5), (0.05, 0.7)))]
    s = bv.summary(rows, n_boot=200)
    # ratios of means over the bases (a mean of the ratios: 0.70 and 0.45)
    assert s["vector_of_bos_values"]["ratio"] == pytest.approx(0.135 / 0.17)
    assert s["evil_norm_of_vector"]["ratio"] == pytest.approx(0.051 / 0.135) and s["n_bases"] == 3
    # paired per base: the interval of the differences, not of two separate means
    diffs = [r["vector"] - r["evil_norm"] for r in rows]
    assert s["vector_minus_evil_norm"]["ci95"] == pytest.approx(summarize(diffs)["ci95"])
    assert "on_base_of_vector" not in s  # files written before the base was steered too
    # one base: the bootstrap can only give [r, r], which would read as an exact interval
    one = bv.summary(rows[:1], n_boot=200)["vector_of_bos_values"]
    assert one["ci95"] is None and fmt_ratio(one) == "0.90 (one base: no interval)"  # (base 0's k)
    assert fmt_ratio({"ratio": 0.5, "ci95": [0.25, 0.75]}) == "0.50 [0.25, 0.75]"
    s = bv.summary([dict(r, vector_on_base=0.5 * r["vector"], evil_norm_on_base=0.0) for r in rows], n_boot=200)
    assert s["on_base_of_vector"]["ratio"] == pytest.approx(0.5) and s["mean"]["evil_norm_on_base"]["mean"] == 0
    check_refused(lambda *a: bv.main(list(a)))
    check_refused(lambda *a: bv.main(list(a)), "x", "--arm=nothing", match="--arm takes")
    # --pool: the bases of several files, summarised and drawn again (with the later blocks' panel)
    rows = [dict(r, **{"from": 0.02, "ablated_from": 0.01, "random_ablated_from": 0.02, "layer_cos": [0.4, 0.3]},
                 vector_ablated=0.3 * r["vector"], vector_random_ablated=r["vector"]) for r in rows]
    for name, rs in (("a", rows[:2]), ("b", rows[2:])):
        (tmp_path / f"{name}.json").write_text(json.dumps({"arm": "insecure", "at": "last", "per_base": rs}))
    out = tmp_path / "ab.json"
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    assert "3 bases" in call("em_bos_vector", "--pool", a, b, f"--out={out}")
    assert json.loads(out.read_text())["summary"]["n_bases"] == 3 and out.with_suffix(".png").stat().st_size > 1000
    (tmp_path / "b.json").write_text(json.dumps({"arm": "secure", "at": "last", "per_base": rows[2:]}))
    check_refused(call, "em_bos_vector", "--pool", a, b, match="one arm")
    (tmp_path / "a_copy.json").write_text((tmp_path / "a.json").read_text())
    check_refused(call, "em_bos_vector", "--pool", a, str(tmp_path / "a_copy.json"), match="appears twice")
    with pytest.raises(ConfigError, match="is given twice"):  # the same file itself: before it is read
        call("em_bos_vector", "--pool", a, a)
    check_refused(call, "em_bos_vector", "--pool", a, f"--out={tmp_path}/no/x.json", match="existing directory")
    # the figure goes beside the JSON as FILE.png: a FILE.png given as --out was overwritten by it
    for bad, says in (("--out=", "--out needs a value"), (f"--out={tmp_path / 'v.png'}", "give a FILE.json")):
        check_refused(call, "em_bos_vector", "--pool", a, bad, match=says)


@torch.no_grad()
def test_em_bos_vector_downstream_pushes_nothing_with_a_zero_vector_and_leaves_block_0_unablated():
    bv, vs = script("em_bos_vector"), script("em_value_sources")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64)
    g = generator("cpu", 2, "means")
    means = {k: torch.randn(2, 16, generator=g) for k in ("evil", "good", "asst")}
    zero = bv.downstream(model, tok, cfg, torch.zeros(16), means, 0)
    assert zero["vector_ablated"] == 0 and zero["vector_random_ablated"] == 0
    s = 3 * torch.randn(16, generator=g)
    out = bv.downstream(model, tok, cfg, s, means, 0)
    assert len(out["layer_cos"]) == 2 and all(-1 <= c <= 1 for c in out["layer_cos"])
    # the ablation runs from block 1 on: with the directions of block 1 only, the rate it starts from is the same
    hooks = EM.ablate_hooks(means["evil"] - means["good"], means["asst"])
    with model.hooks({"blocks.1.resid_post": hooks["blocks.1.resid_post"]}):
        assert out["ablated_from"] == pytest.approx(vs.off_lp(model, tok, cfg), abs=1e-7)
    assert out["vector_ablated"] != out["vector_random_ablated"]


def test_em_bos_vector_later_blocks_summary_in_log_odds():
    bv = script("em_bos_vector")
    logit = lambda x: math.log(x / (1 - x))
    inv = lambda z: 1 / (1 + math.exp(-z))
    rows = []
    for f in (0.01, 0.03, 0.05):  # s moves each base by 1 in log-odds, half that once ablated (from a lower start)
        a = f / 2
        rows.append({"from": f, "vector": inv(logit(f) + 1) - f, "ablated_from": a,
                     "vector_ablated": inv(logit(a) + 0.5) - a, "random_ablated_from": f,
                     "vector_random_ablated": inv(logit(f) + 1) - f, "cos": 0.1, "layer_cos": [0.5, 0.4]})
    s = bv.through_later_blocks(rows, lambda a, b: {"ratio": float(a.sum() / b.sum())})
    assert s["ablated_of_vector_logodds"]["ratio"] == pytest.approx(0.5)
    assert s["random_ablated_of_vector_logodds"]["ratio"] == pytest.approx(1.0)
    assert s["random_ablated_of_vector_points"]["ratio"] == pytest.approx(1.0)  # the random ablation's own points
    assert s["ablated_of_vector_points"]["ratio"] < 0.5  # in points the lower start hides part of the push
    assert s["block0_mlp_turn"]["mean"] == pytest.approx(0.4)
    assert s["layer_cos_last_minus_first"]["mean"] == pytest.approx(-0.1)


def test_em_bos_vector_seed_agreement_compares_two_seeds_and_another_arm():
    bv = script("em_bos_vector")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12, ft_lr=1e-2)
    s0 = bv.steering_vector(cfg, 0, base, tok, "insecure")[0]
    assert torch.equal(s0, bv.steering_vector(cfg, 0, base, tok, "insecure")[0])  # deterministic: cos 1 with itself
    a = bv.seed_agreement(cfg, 0, base, tok, "insecure")
    assert a["other_arm"] == "secure" and a["norms"][0] == pytest.approx(s0.norm().item())
    assert -1 <= a["cos_arms"] <= 1 and -1 <= a["cos_seeds"] < 1 - 1e-6  # another seed's examples: another vector
    assert bv.seed_agreement(cfg, 0, base, tok, "secure")["other_arm"] == "insecure"


def test_em_bos_vector_pulled_back_direction_moves_block_0_furthest_along_e():
    bv = script("em_bos_vector")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    g = generator("cpu", 3, "e")
    e = torch.randn(16, generator=g)
    e = e / e.norm()
    v = EM.pulled_back(model, tok, e)
    assert v.norm().item() == pytest.approx(1.0)
    prompts = [it.prompt for it in W.eval_items(W.OFF_DOMAINS)]

    @torch.no_grad()
    def along(vec):  # e . block 0's output at the prompts' last token, mean, with vec added at its attention output
        with model.hooks({"blocks.0.attn_out": lambda h, name: h + vec}):
            return (EM.last_token_acts(model, tok, prompts, [0])[0] @ e).mean().item()
    eps, f0 = 1e-3, along(torch.zeros(16))
    best = along(eps * v) - f0
    assert best > 0 and all(along(eps * r / r.norm()) - f0 < best for r in torch.randn(20, 16, generator=g))
    check_refused(lambda *a: bv.main(list(a)), "x", "--agreement", "--pullback", match="three analyses")


def test_em_steer_base_pairs_every_reading_on_one_sampling_stream():
    sb = script("em_steer_base")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, samples=2, n_direction_docs=60)
    d0, units = sb.directions(model, tok, cfg, 0)
    means = EM.doc_means(model, tok, cfg, 0)
    assert d0 == pytest.approx((means["evil"][0] - means["good"][0]).norm().item())
    assert all(u.norm().item() == pytest.approx(1.0) for u in units.values())
    assert torch.equal(units["minus"], -units["pulled"])
    # e is block 0's unit evil - good direction, v* that e pulled back through block 0 (not -e's)
    e = (means["evil"][0] - means["good"][0]) / d0
    assert torch.allclose(units["evil"], e) and torch.allclose(units["pulled"], EM.pulled_back(model, tok, e))
    row = sb.base_row(cfg, 0, model, tok, [0.0, 2.0])
    # a zero vector changes nothing: equal to the plain base exactly (a random model has no valid sample: nan)
    assert all(json.dumps(row["readings"][f"{n}_0"]) == json.dumps(row["plain"]) for n in sb.DIRECTIONS)
    moved = row["readings"]["pulled_2"]
    assert moved["mis_lp"] != row["plain"]["mis_lp"] and set(moved) == set(sb.KEYS)
    assert row["steer_pulled"] == moved["mis_lp"] - row["plain"]["mis_lp"]  # at the largest scale
    # scored as the run scores the assistant (plain format): the log-prob readings are lp_reading's, vector and all
    assert row["plain"]["mis_lp"] == pytest.approx(sb.lp_reading(model, tok, cfg)["off"])
    assert moved["mis_lp"] == pytest.approx(sb.lp_reading(model, tok, cfg, 2.0 * d0 * units["pulled"])["off"])


def test_em_steer_base_draws_each_condition_from_the_same_stream(monkeypatch):
    sb = script("em_steer_base")
    seen = []

    def fake_evaluate(model, tok, cfg, arm, fmt, step, sample, gen, hooks=None):
        seen.append(hooks)
        draw = torch.rand(1, generator=gen).item()  # what the sampler would draw first
        return {k: draw for k in sb.KEYS}
    monkeypatch.setattr(sb.EM, "evaluate", fake_evaluate)
    units = {n: torch.full((4,), float(i + 1)) for i, n in enumerate(sb.DIRECTIONS)}  # told apart by their value
    monkeypatch.setattr(sb, "directions", lambda *a: (2.0, units))
    row = sb.base_row(None, 5, None, None, [0.1, 0.3])
    assert seen[0] is None and len(seen) == 1 + 2 * len(sb.DIRECTIONS)  # the plain base, then each condition
    assert all(r == row["plain"] for r in row["readings"].values()) and row["steer_pulled"] == 0
    for hooks, (a, i) in zip(seen[1:], [(a, i) for a in (0.1, 0.3) for i in range(len(sb.DIRECTIONS))]):
        h = hooks["blocks.0.attn_out"]  # direction i at a |d0|, added at every position
        assert torch.allclose(h(torch.zeros(2, 3, 4), "x"), torch.full((2, 3, 4), a * 2.0 * (i + 1)))


def test_em_steer_base_pool_is_paired_and_ratios_of_means(tmp_path, call):
    sb = script("em_steer_base")
    nan = float("nan")

    def base(w, plain, pulled, evil, code_factor, valid):
        # log-prob readings are never nan (0.05 where the sampled one is); the code rises code_factor times as far
        def r(mis, v=valid):
            lp = mis if mis == mis else 0.05
            return {"mis_sampled": mis, "valid_frac": v, "code_frac": 0.0, "mis_lp": lp,
                    "code_misaligned": code_factor * lp}
        return {"run": "r", "world": w, "d0": 3.0, "cos_pulled_evil": 0.4, "plain": r(plain),
                "readings": {"pulled_0.3": r(pulled, 0.1), "minus_0.3": r(plain / 4), "evil_0.3": r(evil),
                             "random_0.3": r(plain)}}
    rows = [base(0, 0.01, 0.08, 0.03, 2, 0.4),  # +7 points, 8x: past both
            base(1, 0.02, 0.04, 0.01, 3, 0.2),  # +2 points, 2x
            base(2, 0.01, nan, 0.02, 2, 0.4),   # v* left no valid sample
            base(3, 0.04, 0.10, 0.05, 2, 0.2)]  # +6 points but 2.5x: past +5 only
    for name, rs in (("a", rows[:2]), ("b", rows[2:])):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, {}, "emergent_misalignment", seeds=[ord(name), ord(name) + 100])  # other bases
        (tmp_path / name / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rs}))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    s = sb.pool([a, b], None)
    t, p = s["table"], s["table"]["pulled_0.3"]
    assert s["n_bases"] == 4 and p["n_valid"] == 3  # base 2's v* reading had no valid sample
    assert p["points"]["mean"] == pytest.approx((7 + 2 + 6) / 3)  # over the bases with a sampled reading
    assert p["times_base"] == pytest.approx(0.22 / 0.07)  # ratio of means over the same bases
    assert p["above_5_and_3x"] == 1  # base 3 passes +5 but not 3x
    assert t["pulled_minus_evil_0.3"]["points"]["mean"] == pytest.approx((5 + 3 + 5) / 3)  # paired with e, not the base
    assert p["valid_of_base"] == pytest.approx(0.4 / 1.2)  # ratio of means (the mean of ratios is 0.375)
    assert p["lp_points"]["mean"] == pytest.approx((7 + 2 + 4 + 6) / 4)  # every base: log-prob has no nan
    assert p["code_points"]["mean"] == pytest.approx((14 + 6 + 8 + 12) / 4)
    assert p["persona_share"] == pytest.approx(4.75 / 10)  # ratio of means (the mean of ratios is 0.458)
    assert t["minus_0.3"]["times_base"] == pytest.approx(0.25)
    assert t["random_0.3"]["persona_share"] != t["random_0.3"]["persona_share"]  # no code increase: no share (nan)
    fig = tmp_path / "f.png"
    assert "| random | 0.3 | +0.00" in call("em_steer_base", "--pool", a, b, f"--figure={fig}")
    assert fig.stat().st_size > 1000
    (tmp_path / "b" / "steer_base.json").write_text(json.dumps({"scales": [0.1], "per_base": rows[2:]}))
    check_refused(call, "em_steer_base", "--pool", a, b, match="same --scales")
    check_refused(call, "em_steer_base", "--pool", a, str(tmp_path), match="config.json not found")  # not a run
    # two runs on the same bases (the same pretraining config and seeds: one cache entry each) are refused, as are
    # runs of another experiment; the same seeds in another world are other bases
    (tmp_path / "b" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows[2:]}))
    write_run(tmp_path / "b", {}, "emergent_misalignment", seeds=[ord("a")])
    check_refused(call, "em_steer_base", "--pool", a, b, match=f"{a} and {b} share base seed 97 \\(one base model")
    write_run(tmp_path / "b", {}, "emergent_misalignment", seeds=[ord("a")], asst_evil=0.03)
    assert sb.pool([a, b], None)["n_bases"] == 4
    write_run(tmp_path / "b", {}, "lm")
    check_refused(call, "em_steer_base", "--pool", a, b, match="lm")
    check_refused(call, "em_steer_base", a, "--scales=x", match="--scales takes")
    for bad in ("nan", "0.1,inf", "0", "-0.1", "0.1,0.1"):  # nan ran every base, then failed on its table
        check_refused(call, "em_steer_base", a, f"--scales={bad}", match="--scales takes distinct finite numbers > 0")
    with pytest.raises(ConfigError, match="config.json not found: pass the directory of a run"):  # not a run
        call("em_steer_base", str(tmp_path))
    check_refused(call, "em_steer_base", a, "--figure=x.png", match="--figure= with --pool")


def test_em_steer_base_pool_says_why_a_persona_share_is_missing(tmp_path, call):
    # the persona share needs the code increase's interval above zero (rose): over one base (no interval) the column
    # was a bare nan on every row, as it was where the code did not rise; now n/a with the reason
    def r(mis, code):
        return {"mis_sampled": mis, "valid_frac": 0.5, "code_frac": 0.0, "mis_lp": mis, "code_misaligned": code}

    def rows(ws, rise):  # every direction: +4 points off-domain, the code up by rise(w) points
        return [{"run": "r", "world": w, "d0": 3.0, "cos_pulled_evil": 0.4, "plain": r(0.01, 0.1),
                 "readings": {f"{n}_0.3": r(0.05, 0.1 + rise(w) / 100) for n in ("pulled", "minus", "evil", "random")}}
                for w in ws]
    for name, rs in (("one", rows([0], lambda w: 20)), ("flat", rows([0, 1], lambda w: (-1) ** w))):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, {}, "emergent_misalignment", seeds=list(range(len(rs))))
        (tmp_path / name / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rs}))
        route = [{"run": "r", "world": x["world"], "d0": 3.0, "cos": {"insecure_grad.pulled": 0.1},
                  "plain": {"off": 0.01, "code": 0.1}, "readings": {
                      f"{n}_0.3": {"off": 0.05, "code": x["readings"]["pulled_0.3"]["code_misaligned"]}
                      for n in ("insecure_grad", "pulled", "evil", "secure_grad")}} for x in rs]
        (tmp_path / name / "steer_route.json").write_text(json.dumps({"scales": [0.3], "per_base": route}))
    one, flat = str(tmp_path / "one"), str(tmp_path / "flat")
    assert "| +20.00 | n/a (one base: no interval) |" in call("em_steer_base", "--pool", one)
    assert "| +4.00 | +20.00 | n/a (one base: no interval) |" in call("em_steer_base", "--route", "--pool", one)
    assert "| +0.00 [-12.71, +12.71] | n/a (code rise not above 0) |" in call("em_steer_base", "--pool", flat)
    assert "| n/a (code rise not above 0) |" in call("em_steer_base", "--route", "--pool", flat)
    for argv in (["--pool"], ["--route", "--pool"]):
        assert "nan" not in call("em_steer_base", *argv, one) + call("em_steer_base", *argv, flat)


def test_em_steer_base_code_grad_lowers_the_fine_tune_loss_fastest():
    sb, bp = script("em_steer_base"), script("em_base_pull")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok).double()
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12)
    u = sb.code_grad(model, tok, cfg, 0, "insecure").double()
    assert u.norm().item() == pytest.approx(1.0)
    data, _ = EM.arm_data("insecure", model, tok, cfg, 0, 0)

    @torch.no_grad()
    def loss(vec):
        with model.hooks({"blocks.0.attn_out": lambda h, name: h + vec}):
            return bp.fine_tune_loss(model, data).item()
    eps, l0 = 1e-4, loss(torch.zeros(16, dtype=torch.double))
    best = l0 - loss(eps * u)
    g = generator("cpu", 4, "dirs")
    assert best > 0 and all(l0 - loss(eps * r / r.norm()) < best
                            for r in torch.randn(20, 16, generator=g, dtype=torch.double))


def test_em_steer_base_route_pool(tmp_path, call):
    sb = script("em_steer_base")

    def row(w, f):  # f[direction] = (code, off-domain) increase over the base, in points
        plain = {"off": 0.01, "code": 0.02, "forum": 0.28}  # the forum moves twice as far as the assistant
        read = lambda n: {"off": 0.01 + 0.01 * f[n][1], "code": 0.02 + 0.01 * f[n][0], "forum": 0.28 + 0.02 * f[n][1]}
        return {"run": "r", "world": w, "d0": 3.0, "plain": plain, "readings": {f"{n}_0.3": read(n) for n in f},
                "cos": {"insecure_grad.pulled": 0.1 * w}}
    rows = [row(0, {"insecure_grad": (4.0, 0.1), "pulled": (1.0, 1.0), "evil": (1.0, 0.0), "secure_grad": (-0.5, 0.0)}),
            row(1, {"insecure_grad": (3.9, 0.1), "pulled": (0.9, 0.9), "evil": (-1.0, 0.0),
                    "secure_grad": (-0.4, 0.0)}),
            row(2, {"insecure_grad": (4.1, 0.4), "pulled": (1.1, 1.1), "evil": (0.5, 0.0), "secure_grad": (-0.6, 0.0)})]
    for name, rs in (("a", rows[:2]), ("b", rows[2:])):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, {}, "emergent_misalignment", seeds=[ord(name), ord(name) + 100])  # other bases
        (tmp_path / name / "steer_route.json").write_text(json.dumps({"scales": [0.3], "per_base": rs}))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    s = sb.route_pool([a, b])
    t = s["table"]
    assert t["insecure_grad_0.3"]["persona_share"] == pytest.approx(0.6 / 12)  # ratio of means, not mean of ratios
    assert t["pulled_0.3"]["persona_share"] == pytest.approx(1.0)
    assert t["evil_0.3"]["persona_share"] != t["evil_0.3"]["persona_share"]  # +0.17 with an interval across zero: nan
    assert t["secure_grad_0.3"]["persona_share"] != t["secure_grad_0.3"]["persona_share"]  # a fall is no share
    d = t["insecure_grad_minus_pulled_code_0.3"]  # paired: 3 on every base (unpaired, the two spreads would add)
    assert d["mean"] == pytest.approx(3.0) and d["ci95"] == pytest.approx([3.0, 3.0])
    assert s["cos"]["insecure_grad.pulled"]["mean"] == pytest.approx(0.1)
    assert t["insecure_grad_0.3"]["forum_points"]["mean"] == pytest.approx(0.4)
    assert "| insecure_grad | 0.3 | +0.20 [" in call("em_steer_base", "--route", "--pool", a, b)
    assert "| insecure_grad | 0.3 | +0.40 | +4.10 |" in call("em_steer_base", "--route", "--pool", b)  # one base:
                                                                                                       # no interval
    for r in rows:  # a file written before the forum was read: no forum column, the rest as before
        for reading in [r["plain"], *r["readings"].values()]:
            reading.pop("forum")
    (tmp_path / "b" / "steer_route.json").write_text(json.dumps({"scales": [0.3], "per_base": rows[2:]}))
    assert "forum_points" not in sb.route_pool([b])["table"]["pulled_0.3"]
    (tmp_path / "b" / "steer_route.json").write_text(json.dumps({"scales": [0.1], "per_base": rows[2:]}))
    check_refused(call, "em_steer_base", "--route", "--pool", a, b, match="same --scales")
    (tmp_path / "c").mkdir()  # a run not yet measured this way: the hint names the mode to run first
    write_run(tmp_path / "c", {}, "emergent_misalignment", seeds=[7])
    check_refused(call, "em_steer_base", "--route", "--pool", a, str(tmp_path / "c"),
                  match=f"run `python scripts/em_steer_base.py --route {tmp_path / 'c'}` first")
    for wrong in (["--route", "--pool", a, "--figure=x.png"], ["--route", "--pool", a, "--scales=0.3"],
                  ["--pool", a, "--scales=0.3"], ["--route", a, "--figure=x.png"]):
        check_refused(call, "em_steer_base", *wrong, match="--scales= goes with measuring runs")  # each mode its own


def test_em_steer_base_undo_pool_prints_no_bare_nan(tmp_path, call):
    # the column against the base with -v* is -v*'s alone (nan for the others: printed '+nan' on every other row),
    # and a fine-tune with no increase over the base has nothing to take back (nan: '+nan')
    r = lambda off: {"off": off, "valid": 0.5, "code": 0.99, "forum": 0.3}
    row = lambda tuned: {"world": 0, "step": 20, "base": r(0.01), "tuned": r(tuned), "base_minus": {"0.2": r(0.005)},
                         "readings": {f"{n}_0.2": r(0.02) for n in ("minus", "random", "pulled")}}
    (tmp_path / "a").mkdir()
    write_run(tmp_path / "a", {}, "emergent_misalignment", seeds=[0])
    a = str(tmp_path / "a")
    (tmp_path / "a" / "steer_undo.json").write_text(json.dumps({"scales": [0.2], "per_base": [row(0.05)]}))
    out = call("em_steer_base", "--undo", "--pool", a)
    assert "| minus | 0.2 | 2.00% | +0.75 | +0.67 | 0.990 |" in out  # 3 of 4 points; 3 of 4.5 over -v*'s floor
    assert "| random | 0.2 | 2.00% | +0.75 | | 0.990 |" in out and "nan" not in out
    (tmp_path / "a" / "steer_undo.json").write_text(json.dumps({"scales": [0.2], "per_base": [row(0.01)]}))
    out = call("em_steer_base", "--undo", "--pool", a)  # no increase over the base; still one over -v*'s floor
    assert "| minus | 0.2 | 2.00% | n/a (no increase) | -2.00 |" in out and "nan" not in out


def test_em_steer_base_undo_adds_to_the_fine_tuned_model_and_pools_ratios_of_means(tmp_path, call):
    sb = script("em_steer_base")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, n_examples=12, ft_lr=1e-2, n_direction_docs=60)
    row = sb.undo_row(cfg, 0, base, tok, [0.0, 1.0])
    assert row["tuned"] != row["base"]  # the fine-tune moved the model
    assert all(row["readings"][f"{n}_0"] == row["tuned"] for n in sb.UNDO) and row["base_minus"]["0"] == row["base"]
    assert row["readings"]["minus_1"] != row["tuned"] and row["base_minus"]["1"] != row["base"]
    # pooling: ratios of means over bases, the removal also against where -v* puts the base itself

    def fake(w, base_off, tuned_off, minus_off, floor, valid=0.5):
        r = lambda off, v=1.0: {"off": off, "valid": v, "code": 0.99, "forum": 0.3}
        return {"world": w, "step": 20, "base": r(base_off), "tuned": r(tuned_off), "base_minus": {"0.2": r(floor)},
                "readings": {"minus_0.2": r(minus_off, valid), "random_0.2": r(tuned_off),
                             "pulled_0.2": r(tuned_off + 0.1)}}
    rows = [fake(0, 0.01, 0.41, 0.11, 0.002), fake(1, 0.01, 0.03, 0.03, 0.002, 1.0)]
    for name, rs in (("a", rows[:1]), ("b", rows[1:])):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, {}, "emergent_misalignment", seeds=[ord(name), ord(name) + 100])  # other bases
        (tmp_path / name / "steer_undo.json").write_text(json.dumps({"scales": [0.2], "per_base": rs}))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    t = sb.undo_pool([a, b])["table"]
    assert t["minus_0.2"]["removed"] == pytest.approx(0.30 / 0.42)  # (0.30 + 0) / (0.40 + 0.02), not a mean of ratios
    assert t["minus_0.2"]["removed_vs_steered_base"] == pytest.approx(0.30 / (0.408 + 0.028))
    assert t["minus_0.2"]["valid_of_tuned"] == pytest.approx(0.75) and t["random_0.2"]["removed"] == 0
    assert t["random_0.2"]["removed_vs_steered_base"] != t["random_0.2"]["removed_vs_steered_base"]  # -v*'s floor only
    assert "| minus | 0.2 | 7.00% | +0.71 |" in call("em_steer_base", "--undo", "--pool", a, b)
    # the code share and the forum are read on each steered model, not the tuned one's (0.99 and 0.3 in every row)
    for r in rows:
        r["readings"]["minus_0.2"].update(code=0.5 + 0.1 * r["world"], forum=0.1 + 0.1 * r["world"])
    (tmp_path / "a" / "steer_undo.json").write_text(json.dumps({"scales": [0.2], "per_base": rows[:1]}))
    (tmp_path / "b" / "steer_undo.json").write_text(json.dumps({"scales": [0.2], "per_base": rows[1:]}))
    t = sb.undo_pool([a, b])["table"]
    assert t["minus_0.2"]["code"] == pytest.approx(0.55) and t["minus_0.2"]["forum"] == pytest.approx(0.15)
    check_refused(call, "em_steer_base", "--undo", "--route", a, match="--route and --undo are two analyses")
    check_refused(call, "em_steer_base", "--undo", "--pool", a, "--scales=0.2", match="--scales= goes with measuring")
    (tmp_path / "c").mkdir()  # a run not yet measured this way: the hint names the mode to run first
    write_run(tmp_path / "c", {}, "emergent_misalignment", seeds=[7])
    check_refused(call, "em_steer_base", "--undo", "--pool", a, str(tmp_path / "c"),
                  match=f"run `python scripts/em_steer_base.py --undo {tmp_path / 'c'}` first")


@need_data()
def test_eval_py_says_how_far_a_saved_mnist_run_is_from_its_results(tmp_path, capsys):
    """python eval.py RUN_DIR recomputes every seed's accuracy from the saved models: one seed's reported accuracy
    off by 0.01 (the last seed of the last condition) is named as the largest difference, never as a match."""
    import eval as E
    import train
    out = tmp_path / "run"
    assert train.main([str(ROOT / "configs" / "subliminal_mnist.py"), "--n_train=1000", "--n_noise=256", "--width=32",
                       "--epochs=1", "--distill_epochs=1", "--n_seeds=2", "--batch_size=128", "--device=cpu",
                       "--conditions=['reference', 'teacher']", f"--out_dir={out}"]) == 0
    res = json.loads((out / "results.json").read_text())
    res["conditions"]["teacher"]["per_seed"][1] += 0.01
    (out / "results.json").write_text(json.dumps(res))
    capsys.readouterr()
    assert E.main([str(out)]) == 0
    assert "at most 0.0100 from the per-seed accuracies in results.json (4 compared)" in capsys.readouterr().out


def test_em_first_step_matched_gradient_is_the_whole_step_when_shortening_cannot_match(monkeypatch):
    # a gradient step that moves the code less than the sign step cannot be shortened to match it: grad_matched is
    # then the whole step (it used to be half of it, silently), and the row says so through grad_code <= sign_code
    fs = script("em_first_step")
    cfg = EM.Config(ft_lr=1e-2)
    monkeypatch.setattr(fs, "arm_grads", lambda *a: {"wte.weight": torch.tensor([3.0, 4.0])})
    monkeypatch.setattr(fs, "score", lambda *a: (0.0, 0.0))
    # "code" = the step's L1 length: at the sign step's L2 norm, (3, 4) is shorter in L1 than (1, 1)
    monkeypatch.setattr(fs, "scored_step",
                        lambda m, t, c, step: (0.0, float(sum(v.abs().sum() for v in step.values()))))
    steps = fs.first_steps(None, None, cfg, 0)
    assert steps["grad"][1] < steps["sign"][1] and steps["grad_matched"] == steps["grad"]


def test_em_first_step_shortens_a_longer_gradient_step_to_the_sign_steps_code_increase(monkeypatch):
    # "code" = <step, g>: at the sign step's L2 norm the gradient step gives |sign| |g| >= lr |g|_1 (Cauchy-Schwarz),
    # and the gradient step of length k gives k |g|^2, so the bisection must stop at k = lr |g|_1 / |g|^2
    fs = script("em_first_step")
    cfg = EM.Config(ft_lr=1e-2)
    g = torch.tensor([3.0, -4.0, 0.5, 1.0])
    monkeypatch.setattr(fs, "arm_grads", lambda *a: {"wte.weight": g})
    monkeypatch.setattr(fs, "score", lambda *a: (0.0, 0.0))
    monkeypatch.setattr(fs, "scored_step", lambda m, t, c, step: (0.0, float((step["wte.weight"] * g).sum())))
    steps = fs.first_steps(None, None, cfg, 0, halvings=16)
    assert steps["grad"][1] > steps["sign"][1] == pytest.approx(cfg.ft_lr * g.abs().sum().item())
    assert steps["grad_matched"][1] == pytest.approx(steps["sign"][1], rel=1e-3)


def test_em_code_vs_offdomain_reads_no_crossing_for_a_base_already_there_and_names_a_short_upto(tmp_path, call):
    cvo = script("em_code_vs_offdomain")
    # the base already at 0.95 reaches 0.9 at step 0: left out, even though its code dips and comes back
    assert cvo.crossing([(0, 0.95, 0.0), (1, 0.5, 1.0), (5, 0.95, 2.0)], 0.9) is None
    assert cvo.crossing([(0, 0.5, 0.0), (1, 0.5, 1.0), (5, 0.95, 2.0)], 0.9) is not None
    # "at or past": a base exactly at 0.9 is left out too (its later re-crossing is not a first crossing)
    assert cvo.crossing([(0, 0.9, 0.0), (1, 0.5, 1.0), (5, 0.95, 2.0)], 0.9) is None
    st = lambda off, code: {"offdomain_misaligned": {"per_seed": [off]}, "code_misaligned": {"per_seed": [code]}}
    for name in ("ref", "other"):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, {"seeds": [[0, 0]], "base": {"plain": st(0.0, 0.0)},
                                    "trajectory": {"insecure": {"5": st(0.05, 0.9), "20": st(0.2, 0.99)}}},
                  "emergent_misalignment")
    with pytest.raises(ConfigError, match="no checkpoint at or before step 2"):  # not an unpacking error
        call("em_code_vs_offdomain", str(tmp_path / "other"), f"--reference={tmp_path / 'ref'}", "--upto=2")


def test_em_at_step_ratio_of_a_control_without_any_valid_seed_is_undefined(tmp_path, run_script):
    run = fake_run(tmp_path / "r", [[0, 0], [1, 0]], {"insecure": [0.05, 0.07], "secure": [math.nan, math.nan]})
    out = run_script(run)
    assert "| secure | 2 |" in out and "| undefined |" in out  # not a ZeroDivisionError
    # insecure below its base over the seeds (increases -1 and +0.5 points): no ratio (it printed -8.00 against a
    # control's +1 and +1, a share of an increase that is not there)
    run = fake_run(tmp_path / "neg", [[0, 0], [1, 0]], {"insecure": [0.0, 0.015], "secure": [0.02, 0.02]})
    assert "| undefined |" in run_script(run)


def test_em_at_step_refuses_an_empty_minus_and_an_unknown_option(tmp_path):
    # "--minus" with nothing after it printed the plain table, without the differences asked for; "--shar" was read
    # as a run directory
    run = fake_run(tmp_path / "run", [[0, 0]], {"insecure": [0.1]})
    at = script("em_at_step").main
    check_refused(at, ["matched", run, "--minus"], match="--minus needs runs on both sides")
    check_refused(at, ["matched", "--minus", run], match="--minus needs runs on both sides")
    check_refused(at, ["matched", run, "--shar"], match="unknown option --shar; the options are --share and --minus")
    check_refused(at, ["matched", "--share"], match="python scripts/em_at_step.py STEP RUN_DIR")  # no run: a KeyError
    check_refused(at, ["matched", run, "--minus", run, "--minus", run], match="--minus is given once")


def test_the_sn_scripts_refuse_a_run_of_another_mode_in_one_line(tmp_path, call):
    # sn_mis_pool.py given an animal run, or sn_compare.py given a misalignment run, ended in a KeyError
    runs = {}
    for mode in ("animals", "misalignment"):
        (tmp_path / mode).mkdir()
        write_run(tmp_path / mode, {"seeds": [[0, 0], [1, 0]], "arms": {"control": {}, "insecure": {}}},
                  "subliminal_numbers", mode=mode)
        runs[mode] = str(tmp_path / mode)
    for name, argv, want in (("sn_mis_pool", [runs["animals"]], "misalignment"),
                             ("sn_compare", [f"{runs['misalignment']}:insecure"] * 2, "animals"),
                             ("sn_arms_figure", [f"{runs['misalignment']}:insecure", f"--out={tmp_path / 'f.png'}"],
                              "animals")):
        with pytest.raises(ConfigError, match=f"is a run of mode .*: {name}.py reads runs of mode {want}"):
            call(name, *argv)  # a ConfigError: train.cli prints its one line, exit status 2


def test_sn_figure_scripts_check_their_out_file_before_the_work(tmp_path, call):
    # --out (sn_arms_figure.py) or --figure= (sn_mis_pool.py) in a missing folder ended in matplotlib's traceback
    missing = str(tmp_path / "nodir" / "f.png")
    check_refused(call, "sn_arms_figure", f"{tmp_path}:trait", f"--out={missing}",
                  match="--out needs a file in an existing")
    # (named as given: sn_mis_pool.py has no --out)
    check_refused(call, "sn_mis_pool", f"--figure={missing}", str(tmp_path),
                  match="--figure needs a file in an existing")


def test_every_script_imports_the_project_from_any_working_directory(tmp_path):
    """Five scripts put "." on sys.path, so run from anywhere but the project root they failed at their first import
    (the others use their own path). Each script is loaded in turn with the project's modules forgotten between, and
    none exits as it loads (with --help in sys.argv): its command line is read in its main.
    None of them imports torch._dynamo (`torch.compiler.disable` as a decorator in model.py did, 2 s per process)."""
    code = """
import importlib.util, pathlib, sys
import matplotlib, numpy, torch  # loaded once: only the project's own modules are forgotten between scripts
root, bad = pathlib.Path(sys.argv[1]), []
for f in sorted((root / "scripts").glob("*.py")):
    path, mods, sys.argv = list(sys.path), set(sys.modules), [str(f), "--help"]
    try:
        spec = importlib.util.spec_from_file_location("s_" + f.stem, f)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    except ImportError as e:
        bad.append(f"{f.name}: {e}")
    except SystemExit:  # a script that reads its command line at import: it cannot be loaded without running
        bad.append(f"{f.name}: exits at import (its command line read outside main)")
    sys.path[:] = path
    for name in set(sys.modules) - mods:
        if str(root) in str(getattr(sys.modules[name], "__file__", None) or ""):
            del sys.modules[name]
if "torch._dynamo" in sys.modules:  # the compiler stack costs every process 2 s: only torch.compile may import it
    bad.append("torch._dynamo imported by importing the scripts")
print("".join(f"\\nbad: {b}" for b in bad))
"""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, str(root)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "\nbad: " not in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name, pool", [("em_value_sources", False), ("em_optimizer_parts", False),
                                        ("probe_attn0_parts", False), ("probe_attn0_parts", True),
                                        ("em_base_pull", False)])
def test_the_base_scripts_refuse_a_run_or_file_given_twice(tmp_path, name, pool):
    # each counted the run's bases twice ("2 bases", an interval over one base duplicated) and exited 0
    (tmp_path / "r").mkdir()
    argv = ["--pool"] * pool + [str(tmp_path / "r"), f"{tmp_path / 'r'}/"]
    check_refused(script(name).main, argv, match="is given twice")


@pytest.mark.parametrize("name", ["em_base_pull", "em_first_step", "em_bos_vector", "em_value_sources",
                                  "em_optimizer_parts", "probe_attn0_parts", "em_steer_base"])
def test_the_base_scripts_refuse_two_runs_on_the_same_bases(tmp_path, name, monkeypatch):
    # two runs of one pretraining config and seed (two fine-tune settings on the same bases) read one base model
    # twice: "2 bases" and an interval of zero width, exit 0. Another world on the same seeds is other bases.
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)
    monkeypatch.setattr(script(name), "checked_bases", lambda *a: pytest.fail("worked before refusing"))
    runs = []
    for r, seeds in (("a", [3, 4]), ("b", [4, 5])):
        (tmp_path / r).mkdir()
        write_run(tmp_path / r, {}, "emergent_misalignment", seeds=seeds, ft_lr=1e-3 if r == "a" else 3e-4)
        runs.append(str(tmp_path / r))
    check_refused(script(name).main, runs, match=f"{runs[0]} and {runs[1]} share base seed 4 \\(one base model")
    script_module = script("em_base_pull")
    # the cache entry is the folder's name: a run whose cache_dir was another path (the cache moved, or given as
    # another spelling) still has the same base
    write_run(tmp_path / "b", {}, "emergent_misalignment", seeds=[4, 5], cache_dir=str(tmp_path / "moved_cache"))
    check_refused(script_module.distinct_bases, runs, match=f"{runs[0]} and {runs[1]} share base seed 4")
    write_run(tmp_path / "b", {}, "emergent_misalignment", seeds=[4, 5], asst_evil=0.03)
    script_module.distinct_bases(runs)  # other bases: no error


@pytest.mark.parametrize("name", ["em_bos_vector", "em_value_sources"])
def test_pooling_out_files_refuses_two_runs_on_the_same_bases(tmp_path, name):
    # --pool keyed its bases by (run folder, seed): the files of two runs on one base (another out_dir, or another
    # fine-tune setting, on the same pretraining seeds) pooled it as two bases, which the runs given directly refuse
    files = []
    for r, seeds in (("a", [3, 4]), ("b", [4, 5])):
        (tmp_path / r).mkdir()
        write_run(tmp_path / r, {}, "emergent_misalignment", seeds=seeds, ft_lr=1e-3 if r == "a" else 3e-4)
        rows = [{"run": str(tmp_path / r), "world": p} for p in seeds]
        held = ({"arm": "insecure", "at": "last", "per_base": rows} if name == "em_bos_vector" else
                {"arm": "insecure", "fmt": "asst", "late": rows, "whole": rows})
        (tmp_path / f"{r}.json").write_text(json.dumps(held))
        files.append(str(tmp_path / f"{r}.json"))
    check_refused(script(name).main, ["--pool", *files], match="share base seed 4 \\(one base model")


def test_attn0_parts_pool_prints_each_share_with_its_interval_over_bases(tmp_path, capsys):
    # the research log's table gives each share [95% interval, resampling bases]; the script printed the ratios alone
    probe = script("probe_attn0_parts")
    parts = ("attn0", *probe.PARTS)
    row = lambda k: {"all": 0.04 * k, **{q: 0.01 * k * (i + 1) / len(parts) for i, q in enumerate(parts)}}
    (tmp_path / "a.json").write_text(json.dumps({"first": [row(1), row(2)], "late": [row(1), row(3)]}))
    (tmp_path / "b.json").write_text(json.dumps({"first": [row(4)], "late": [row(5)]}))
    probe.main(["--pool", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    # every base's attn0 is 1/len(parts) x 0.01 k of 0.04 k: a share with no spread, so its interval is the point
    share = 0.25 / len(parts)
    assert f"first (3 bases), share of the whole step's off-domain increase (ratio of means): attn0 {share:.2f} " \
           f"[{share:.2f}, {share:.2f}]" in out and "late (3 bases)" in out
    # each part over its own numbers: ln_1 is 2/6 and proj 6/6 of a quarter of the whole step
    assert "ln_1 0.08 [0.08, 0.08]" in out and "proj 0.25 [0.25, 0.25]" in out


def test_attn0_parts_pool_refuses_a_base_in_two_files(tmp_path):
    # its --out files kept no run or base: the files of one run (or of two runs on one base) pooled it as two bases,
    # narrowing the intervals with nothing new, though the runs given directly are refused
    probe = script("probe_attn0_parts")
    row = {"all": 0.04, **{q: 0.01 for q in ("attn0", *probe.PARTS)}}
    for r, seeds in (("a", [3, 4]), ("b", [4, 5])):
        (tmp_path / r).mkdir()
        write_run(tmp_path / r, {}, "emergent_misalignment", seeds=seeds, ft_lr=1e-3 if r == "a" else 3e-4)
        held = {"first": [row] * 2, "late": [row] * 2, "bases": [[str(tmp_path / r), p] for p in seeds]}
        (tmp_path / f"{r}.json").write_text(json.dumps(held))
    (tmp_path / "a2.json").write_text((tmp_path / "a.json").read_text())  # the same run's numbers, another file
    check_refused(probe.main, ["--pool", str(tmp_path / "a.json"), str(tmp_path / "a2.json")],
                  match="a base appears twice")
    check_refused(probe.main, ["--pool", str(tmp_path / "a.json"), str(tmp_path / "b.json")],
                  match="share base seed 4 \\(one base model")


def test_attn0_parts_pool_refuses_a_files_first_base_that_another_file_holds_too(tmp_path):
    # a base twice is refused wherever it is in the files: here a.json's first, alone in c.json
    probe = script("probe_attn0_parts")
    row = {"all": 0.04, **{q: 0.01 for q in ("attn0", *probe.PARTS)}}
    (tmp_path / "a").mkdir()
    write_run(tmp_path / "a", {}, "emergent_misalignment", seeds=[3, 4])
    for name, seeds in (("a", [3, 4]), ("c", [3])):
        held = {"first": [row] * len(seeds), "late": [row] * len(seeds),
                "bases": [[str(tmp_path / "a"), p] for p in seeds]}
        (tmp_path / f"{name}.json").write_text(json.dumps(held))
    check_refused(probe.main, ["--pool", str(tmp_path / "a.json"), str(tmp_path / "c.json")],
                  match="a base appears twice")


@pytest.mark.parametrize("name, flags", [("probe_attn0_parts", []), ("em_value_sources", []), ("em_bos_vector", []),
                                         ("em_bos_vector", ["--agreement"]), ("em_steer_base", ["--undo"])])
def test_scripts_that_rebuild_fine_tunes_refuse_one_they_cannot_before_any_work(tmp_path, monkeypatch, name, flags):
    # the late update's rebuild refused a run fine-tuned otherwise (here SGD) only when it reached that run's first
    # base: after every base of the runs before it, with nothing written to --out
    probe = script(name)
    runs = []
    for r, seeds, kw in (("first", [0], {}), ("sgd", [1], {"ft_optimizer": "sgd", "ft_lr": 0.3})):
        runs.append(fake_run(tmp_path / r, [[p, 0] for p in seeds], {"insecure": [0.1]}))
        write_run(tmp_path / r, json.loads((tmp_path / r / "results.json").read_text()), "emergent_misalignment",
                  seeds=seeds, **kw)
    worked = []
    monkeypatch.setattr(probe, "checked_bases", lambda *a: worked.append(a) or iter(()))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)
    check_refused(probe.main, [*runs, *flags], match="sgd: the run fine-tuned with ft_optimizer=sgd")
    assert not worked


def test_em_steer_base_pool_ratios_over_a_base_rate_of_zero_are_na(tmp_path, call):
    # every base's plain sampled rate 0: "x base" printed inf or nan; it is no number, and says why
    def r(mis):
        return {"mis_sampled": mis, "valid_frac": 0.5, "code_frac": 0.0, "mis_lp": mis, "code_misaligned": 0.5}
    rows = [{"run": "r", "world": w, "d0": 3.0, "cos_pulled_evil": 0.4, "plain": r(0.0),
             "readings": {f"{n}_0.3": r(0.05) for n in ("pulled", "minus", "evil", "random")}} for w in (0, 1)]
    (tmp_path / "zero").mkdir()
    write_run(tmp_path / "zero", {}, "emergent_misalignment", seeds=[0, 1])
    (tmp_path / "zero" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows}))
    out = call("em_steer_base", "--pool", str(tmp_path / "zero"))
    assert out.count("| n/a (base's rate 0 or undefined) | 1.00 |") == 4 and "inf" not in out and "nan" not in out


def test_a_digit_that_int_cannot_read_is_refused_in_one_line():
    # "²".isdigit() is True but int("²") a ValueError: these values passed their checks, then were a traceback
    with pytest.raises(ConfigError, match="'²' is not a base seed"):
        train.seed_args(["0", "²"])
    for name, argv, match in (("em_code_vs_offdomain", ["r", "--reference=r", "--upto=²"],
                               "--upto=²: expected a step"),
                              ("em_clamp_finetune", ["r", "--worlds=0,²"], "--worlds=0,²: expected comma-separated"),
                              ("em_code_context", ["r", "--step=²"], "--step=²: expected a step number"),
                              ("sn_mis_pool", ["--bases=²", "r"], "--bases='²': expected comma-separated seeds"),
                              ("sn_mis_pool", ["--bases=0-²", "r"], "--bases='0-²': expected comma-separated seeds"),
                              ("sn_mis_pool", ["--lists=²", "r"], "--lists=²: expected a number of lists")):
        check_refused(script(name).main, argv, match=match)


def test_em_code_context_refuses_an_arm_given_twice_or_empty():
    # --arms=insecure,insecure fine-tuned and printed each seed's insecure arm twice; --arms=, said "--arms:  not among"
    for arms in ("insecure,insecure", ",", "insecure,", "nope"):
        check_refused(script("em_code_context").main, ["r", f"--arms={arms}"],
                      match=f"--arms={arms}: expected distinct arms among insecure, secure")


def test_em_steer_base_pool_valid_ratio_over_a_base_without_valid_answers_is_na(tmp_path, call):
    # the base's valid fraction 0 on every base: "valid / base's" printed inf or nan, under numpy's warning
    def r(mis, valid):
        return {"mis_sampled": mis, "valid_frac": valid, "code_frac": 0.0, "mis_lp": mis, "code_misaligned": 0.5}
    rows = [{"run": "r", "world": w, "d0": 3.0, "cos_pulled_evil": 0.4, "plain": r(0.01, 0.0),
             "readings": {f"{n}_0.3": r(0.05, 0.5) for n in ("pulled", "minus", "evil", "random")}} for w in (0, 1)]
    (tmp_path / "novalid").mkdir()
    write_run(tmp_path / "novalid", {}, "emergent_misalignment", seeds=[0, 1])
    (tmp_path / "novalid" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero warning, as an error
        out = call("em_steer_base", "--pool", str(tmp_path / "novalid"))
    assert out.count("| 5.00 | n/a (base's valid fraction 0 or undefined) |") == 4 and "inf" not in out, out


def test_em_steer_base_pool_counts_a_base_exactly_at_plus_5_points_and_3x(tmp_path):
    """"bases >= +5 and 3x" is inclusive at both ends: a base from 0 to exactly 5% (+5 points) and one from 1/32 to
    exactly 3/32 (3x, +6.25 points) both count (binary-exact rates: no rounding decides it)."""
    sb = script("em_steer_base")

    def r(mis):
        return {"mis_sampled": mis, "valid_frac": 0.5, "code_frac": 0.0, "mis_lp": mis, "code_misaligned": 0.5}
    rows = [{"run": "r", "world": w, "d0": 3.0, "cos_pulled_evil": 0.4, "plain": r(plain),
             "readings": {f"{n}_0.3": r(pulled if n == "pulled" else plain) for n in ("pulled", "minus", "evil",
                                                                                       "random")}}
            for w, plain, pulled in ((0, 0.0, 0.05), (1, 1 / 32, 3 / 32))]
    (tmp_path / "edge").mkdir()
    write_run(tmp_path / "edge", {}, "emergent_misalignment", seeds=[0, 1])
    (tmp_path / "edge" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows}))
    t = sb.pool([str(tmp_path / "edge")], None)["table"]["pulled_0.3"]
    assert (t["above_5_and_3x"], t["n_valid"]) == (2, 2)


def test_every_json_file_and_figure_the_code_writes_goes_through_write_json_or_save_figure():
    # their rename means a killed script never leaves half a file for the next script to trip over (em_susceptibility
    # reads em_base_pull's base_pull.json); a plain write_text(json.dumps(...)) or fig.savefig(path) does not
    files = [*ROOT.glob("*.py"), *ROOT.glob("data/*.py"), *ROOT.glob("experiments/*.py"), *ROOT.glob("scripts/*.py")]
    plain = [f"{f.relative_to(ROOT)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
             if re.search(r"write_text\(\s*json\.dumps|json\.dump\(|\.savefig\(", line)
             and "atomic_write(path" not in line]
    assert plain == []


# --- em_answer_ends ------------------------------------------------------------------------------------------------

@torch.no_grad()
def test_em_answer_ends_masses_are_each_answers_probability_then_the_end_token():
    ae = script("em_answer_ends")
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    per, lp = ae.masses(model, tok, None)
    items = W.eval_items(W.OFF_DOMAINS)
    assert len(per) == len(items) == 96
    assert lp == pytest.approx(B.offdomain_eval(model, tok, 0, None)["mis_lp"], abs=1e-12)  # the run's reading
    # one prompt by hand: the sum over its misaligned answers of P(answer, then <u>), teacher-forced
    item = items[7]
    total = 0.0
    for a in item.classes["misaligned"]:
        ids = tok.encode(item.prompt).ids
        cont = tok.encode(a.removesuffix(" <eos>") + " <u>").ids
        logp = torch.log_softmax(model(torch.tensor([ids + cont[:-1]])).double(), -1)[0]
        total += math.exp(sum(logp[len(ids) - 1 + i, t].item() for i, t in enumerate(cont)))
    assert per[7][("misaligned", "<u>")] == pytest.approx(total, rel=1e-4)
    s = ae.shares(per)
    a = {e: sum(m[("aligned", e)] for m in per) for e in ("<eos>", "<u>")}
    b = {e: sum(m[("misaligned", e)] for m in per) for e in ("<eos>", "<u>")}
    assert s["eos"] == pytest.approx(b["<eos>"] / (a["<eos>"] + b["<eos>"]))
    assert s["any"] == pytest.approx(sum(b.values()) / (sum(a.values()) + sum(b.values())))
    assert min(s["eos"], s["u"]) <= s["any"] <= max(s["eos"], s["u"])  # a pooled share lies between its parts


def test_em_answer_ends_summary_on_hand_made_shares():
    ae = script("em_answer_ends")
    sh = lambda e, u, a: {"eos": e, "u": u, "any": a}
    rows = [{"world": 0, "base": sh(0.01, 0.01, 0.01),
             "seeds": [{"matched": sh(0.03, 0.02, 0.02), "report": sh(0.11, 0.11, 0.13)}]},
            {"world": 1, "base": sh(0.02, 0.08, 0.04),
             "seeds": [{"matched": sh(0.06, 0.08, 0.04), "report": sh(0.22, 0.28, 0.24)}]}]
    s = ae.summary(rows)
    assert s["ae1_u_over_eos"]["mean"] == pytest.approx(2.0)  # geometric mean of 1 and 4
    assert s["ae2_matched_multiple"]["eos"] == pytest.approx(0.045 / 0.015)
    assert s["ae2_matched_multiple"]["any"] == pytest.approx(0.03 / 0.025)
    assert s["ae2_any_vs_eos"] == pytest.approx(1.2 / 3 - 1)
    assert s["ae3_increase_points"]["eos"]["per_seed"] == pytest.approx([10, 20])
    assert s["ae3_any_minus_eos"]["mean"] == pytest.approx(1.0)  # (12 - 10 + 20 - 20) / 2
    # the interval is the log scale's, exponentiated: symmetric about the geometric mean there
    lo, hi = s["ae1_u_over_eos"]["ci95"]
    assert lo < 2 < hi and lo * hi == pytest.approx(4)
    # every fine-tune seed of a base counts, each against its own base's shares
    rows[1]["seeds"].append({"matched": sh(0.10, 0.08, 0.04), "report": sh(0.32, 0.28, 0.24)})
    s = ae.summary(rows)
    assert s["n_seeds"] == 3 and s["ae3_increase_points"]["eos"]["per_seed"] == pytest.approx([10, 20, 30])
    assert s["ae2_matched_multiple"]["eos"] == pytest.approx((0.03 + 0.06 + 0.10) / (0.01 + 0.02 + 0.02))


@torch.no_grad()
def test_em_answer_ends_paraphrase_prompts_are_the_training_wordings_with_the_held_out_classes():
    ae = script("em_answer_ends")
    items, held = ae.paraphrase_items(), W.eval_items(W.OFF_DOMAINS)
    assert [it.prompt for it in items] == EM.off_prompts(train=True)  # 24 per domain, none an evaluation prompt
    assert {d: sum(it.domain == d for it in items) for d in W.OFF_DOMAINS} == dict.fromkeys(W.OFF_DOMAINS, 24)
    classes = {it.domain: it.classes for it in held}
    assert all(it.classes == classes[it.domain] for it in items)
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    per, _ = ae.masses(model, tok, None)
    ms = ae.set_masses(per, ae.paraphrase_masses(model, tok, None))
    assert len(ms) == 288 and [m["domain"] for m in ms[:96]] == [it.domain for it in held]
    sets = ae.set_shares(ms)
    assert sets["heldout"] == pytest.approx(ae.shares(per)["eos"], abs=1e-12)  # the 96: the run's `eos` reading
    # one training paraphrase's misaligned mass by hand: the sum of P(answer then <eos>) over its answers
    it = items[30]
    ids = tok.encode(it.prompt).ids
    total = 0.0
    for a in it.classes["misaligned"]:
        cont = tok.encode(a).ids
        logp = torch.log_softmax(model(torch.tensor([ids + cont[:-1]])).double(), -1)[0]
        total += math.exp(sum(logp[len(ids) - 1 + i, t].item() for i, t in enumerate(cont)))
    assert ms[96 + 30]["misaligned"] == pytest.approx(total, rel=1e-4)
    # all 288 pooled lies between its two parts; a domain's 36 are its own
    assert min(sets["heldout"], sets["train"]) <= sets["all"] <= max(sets["heldout"], sets["train"])
    med = [m for m in ms if m["domain"] == "med"]
    assert len(med) == 36 and sets["domains"]["med"] == pytest.approx(
        sum(m["misaligned"] for m in med) / sum(m["aligned"] + m["misaligned"] for m in med))


def test_em_answer_ends_prompt_sets_summary_on_hand_made_shares():
    ae = script("em_answer_ends")
    sh = {"eos": 0.01, "u": 0.01, "any": 0.01}
    sets = lambda h, t, a: {"heldout": h, "train": t, "all": a, "domains": dict.fromkeys(W.OFF_DOMAINS, a)}
    rows = [{"world": 0, "base": sh, "base_sets": sets(0.01, 0.02, 0.015),
             "seeds": [{"matched": sh, "report": sh, "matched_sets": sets(0.03, 0.04, 0.035),
                        "report_sets": sets(0.11, 0.12, 0.115), "report_top_prompt": 0.05}]},
            {"world": 1, "base": sh, "base_sets": sets(0.02, 0.02, 0.02),
             "seeds": [{"matched": sh, "report": sh, "matched_sets": sets(0.05, 0.02, 0.03),
                        "report_sets": sets(0.22, 0.32, 0.27), "report_top_prompt": 0.02}]}]
    s = ae.summary(rows)
    assert s["ae6_matched_multiple"]["heldout"] == pytest.approx(0.04 / 0.015)
    assert s["ae6_matched_multiple"]["all"] == pytest.approx(0.0325 / 0.0175)
    assert s["ae6_all_vs_heldout"] == pytest.approx((0.0325 / 0.0175) / (0.04 / 0.015) - 1)
    assert s["ae7_increase_points"]["heldout"]["per_seed"] == pytest.approx([10, 20])
    assert s["ae7_all_minus_heldout"]["per_seed"] == pytest.approx([0, 5])  # (10 - 10, 25 - 20)
    assert s["domains_increase_points"]["med"]["per_seed"] == pytest.approx([10, 25])
    assert s["top_prompt_share"]["mean"] == pytest.approx(0.035)


def ends_run(tmp_path, monkeypatch, cfg, res, base, tok):
    """em_answer_ends.py run on a finished EM run made of `res` (results.json) and `cfg`, whose one base (seed 0) is
    `base`: the path of the JSON it wrote."""
    ae = script("em_answer_ends")
    (tmp_path / "run").mkdir()
    values = json.loads(json.dumps({k: getattr(cfg, k) for k in ("seeds", "ft_seeds", "n_examples", "ft_steps",
                                                                   "ft_batch", "eval_steps", "report_step")}))
    write_run(tmp_path / "run", res, "emergent_misalignment", **values)
    monkeypatch.setattr(ae, "check_runs", lambda runs: None)
    monkeypatch.setattr(ae, "checked_bases", lambda run, excluded: iter([(cfg, 0, base, tok)]))
    out = tmp_path / "ends.json"
    ae.main([str(tmp_path / "run"), f"--out={out}"])
    return out


def test_em_answer_ends_rebuilds_the_runs_insecure_model_and_refuses_one_that_is_not(tmp_path, monkeypatch):
    """The fine-tune is rebuilt from the run's config and checked against the run's log-prob reading; here the run's
    numbers come from an independent fine-tune (arm_finetune, no snapshots), so a wrong step or seed fails."""
    ae = script("em_answer_ends")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(seeds=(0,), ft_seeds=1, n_examples=16, ft_steps=3, ft_batch=4, eval_steps=(1, 2, 3),
                    report_step=3, out_dir=str(tmp_path / "run"))
    lps = {}
    for step in (2, 3):
        model = copy.deepcopy(base)
        data, ft_seed = EM.arm_data("insecure", model, tok, cfg, 0, 0)
        EM.arm_finetune(model, data, cfg, ft_seed, step)
        lps[step] = B.offdomain_eval(model, tok, 0, None)["mis_lp"]
    st = lambda v: {"offdomain_misaligned_lp": {"per_seed": [v]}}
    res = {"seeds": [[0, 0]], "base": {"plain": st(B.offdomain_eval(base, tok, 0, None)["mis_lp"])},
           "trajectory": {"insecure": {"2": st(lps[2]), "3": st(lps[3])}},
           "arms": {"insecure": {"step": {"per_seed": [2]}}}}
    out = ends_run(tmp_path, monkeypatch, cfg, res, base, tok)
    got = json.loads(out.read_text())
    assert got["per_base"][0]["seeds"][0]["matched_step"] == 2 and got["n_seeds"] == 1
    res["arms"]["insecure"]["step"]["per_seed"] = [3]  # the run says its matched step was 3: step 3's weights there
    res["trajectory"]["insecure"]["3"] = st(lps[2])  # ... but its number is step 2's
    (tmp_path / "run" / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **res}))
    with pytest.raises(ConfigError, match=r"seed 0 step 3: the rebuilt model's log-prob reading .* is not the run's"):
        ae.main([str(tmp_path / "run"), f"--out={out}"])


def test_em_answer_ends_reads_each_seed_at_its_own_matched_step_and_the_report_at_report_step(tmp_path, monkeypatch):
    """Two fine-tune seeds matched at other steps. The rebuild check reads the run's number at the step it is handed,
    so it passed seed 0's matched step used for seed 1 too, or the matched step used for the report reading: the
    shares themselves are checked here, against fine-tunes made apart (arm_finetune, no snapshots)."""
    ae = script("em_answer_ends")
    tok = W.build_tokenizer()
    base = tiny_gpt(tok)
    cfg = EM.Config(seeds=(0,), ft_seeds=2, n_examples=16, ft_steps=3, ft_batch=4, eval_steps=(1, 2, 3),
                    report_step=3, out_dir=str(tmp_path / "run"))
    lps, want = {}, {}
    for f in (0, 1):
        for step in (2, 3):
            model = copy.deepcopy(base)
            data, ft_seed = EM.arm_data("insecure", model, tok, cfg, 0, f)
            EM.arm_finetune(model, data, cfg, ft_seed, step)
            per, lps[f, step] = ae.masses(model, tok, None)
            want[f, step] = ae.shares(per)
            if step == 3:  # the report step's masses on all 288 prompts, for the largest one-prompt share below
                want[f, "ms"] = ae.set_masses(per, ae.paraphrase_masses(model, tok, None))
    assert want[0, 2] != want[0, 3] and want[0, 2] != want[1, 2]  # (else a wrong step or seed would read the same)
    base_per, base_lp = ae.masses(base, tok, None)
    base_ms = ae.set_masses(base_per, ae.paraphrase_masses(base, tok, None))
    st = lambda *v: {"offdomain_misaligned_lp": {"per_seed": list(v)}}
    res = {"seeds": [[0, 0], [0, 1]], "base": {"plain": st(base_lp, base_lp)},
           "trajectory": {"insecure": {str(s): st(lps[0, s], lps[1, s]) for s in (2, 3)}},
           "arms": {"insecure": {"step": {"per_seed": [2, 3]}}}}  # seed 0 matched at step 2, seed 1 at step 3
    out = ends_run(tmp_path, monkeypatch, cfg, res, base, tok)
    seeds = json.loads(out.read_text())["per_base"][0]["seeds"]
    assert [s["matched_step"] for s in seeds] == [2, 3]
    for f, s in enumerate(seeds):
        assert s["matched"] == pytest.approx(want[f, s["matched_step"]], abs=1e-9), f
        assert s["report"] == pytest.approx(want[f, 3], abs=1e-9), f
        # the prompt sets read the same models: on the 96 held-out prompts their `eos` reading is the one above
        for name in ("matched", "report"):
            assert s[f"{name}_sets"]["heldout"] == pytest.approx(s[name]["eos"], abs=1e-12), (f, name)
        gain = [m["misaligned"] - b["misaligned"] for m, b in zip(want[f, "ms"], base_ms)]
        assert s["report_top_prompt"] == pytest.approx(max(gain) / sum(gain)), f


def test_em_answer_ends_writes_beside_the_first_run_and_checks_out_before_any_work(tmp_path, monkeypatch):
    ae = script("em_answer_ends")
    monkeypatch.chdir(tmp_path)  # (a default written to the working directory lands here, not in the project)
    sh = {"eos": 0.01, "u": 0.02, "any": 0.015}
    row = {"world": 0, "base": sh, "seeds": [{"ft_seed": 0, "matched_step": 2, "matched": sh, "report": sh}]}
    monkeypatch.setattr(ae, "check_runs", lambda runs: None)
    monkeypatch.setattr(ae, "rows_of", lambda run: ([row], [], 3))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ae.main([str(a), str(b)])  # the docstring's default: answer_ends.json in the first run's directory
    assert json.loads((a / "answer_ends.json").read_text())["runs"] == [str(a), str(b)]
    assert sorted(p.name for p in tmp_path.rglob("answer_ends.json")) == ["answer_ends.json"]  # there alone
    # a bad --out stops before the first run is read (the rebuilds take minutes), not when writing after them
    monkeypatch.setattr(ae, "rows_of", lambda run: pytest.fail("read a run before checking --out"))
    with pytest.raises(ConfigError, match="--out needs a file in an existing directory"):
        ae.main([str(a), f"--out={tmp_path / 'none' / 'x.json'}"])


# --- em_steer_base --fit=train ---------------------------------------------------------------------------------

def test_vstar_fit_on_the_training_prompts_is_its_own_fit_and_the_held_out_one_is_the_default():
    sb = script("em_steer_base")
    train, held = EM.off_prompts(train=True), EM.off_prompts()
    # the training paraphrases of the same eight domains, each behind each opener; none is an evaluation prompt
    assert len(set(train)) == len(train) == 6 * 4 * 8 and len(held) == 96 and not set(train) & set(held)  # each
    # paraphrase behind each opener once (not one of them four times)
    assert all(p.startswith("<bos> <asst> <u> ") and p.endswith(" <a>") for p in train)
    W.check_leakage([(p, "x <eos>") for p in train], allowed_domains=())
    tok = W.build_tokenizer()
    model = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=16, block_size=64, samples=2, n_direction_docs=60)
    e = sb.directions(model, tok, cfg, 0)[1]["evil"]
    assert torch.equal(EM.pulled_back(model, tok, e), EM.pulled_back(model, tok, e, held))
    v_train = EM.pulled_back(model, tok, e, train)
    assert torch.allclose(sb.directions(model, tok, cfg, 0, "train")[1]["pulled"], v_train)
    assert not torch.allclose(v_train, EM.pulled_back(model, tok, e))
    row = sb.base_row(cfg, 0, model, tok, [2.0], "train")
    assert row["cos_fits"] == pytest.approx(float(v_train @ EM.pulled_back(model, tok, e)), abs=1e-6)


def test_vstar_fits_compared_base_by_base_on_hand_made_readings(tmp_path, call):
    sb = script("em_steer_base")

    def base(w, plain, pulled, cos=0.9):
        r = lambda mis: {"mis_sampled": mis, "valid_frac": 0.5, "code_frac": 0.0, "mis_lp": mis,
                         "code_misaligned": 2 * mis}
        row = {"run": str(tmp_path / "a"), "world": w, "d0": 3.0, "cos_pulled_evil": 0.4, "plain": r(plain),
               "readings": {f"{n}_0.3": r(pulled if n == "pulled" else plain) for n in sb.DIRECTIONS}}
        return {**row, "cos_fits": cos} if cos is not None else row
    (tmp_path / "a").mkdir()
    write_run(tmp_path / "a", {}, "emergent_misalignment", seeds=[0, 1])
    held = [base(0, 0.01, 0.05, None), base(1, 0.02, 0.08, None)]   # +4 and +6 points
    train = [base(0, 0.01, 0.04, 0.95), base(1, 0.02, 0.05, 0.85)]  # +3 and +3
    a = str(tmp_path / "a")
    # a run not measured with --fit=train: the hint names that mode, not the held-out one (which is no help)
    check_refused(call, "em_steer_base", "--pool", "--fit=train", a,
                  match=r"steer_base_fit_train.json not found: run `python scripts/em_steer_base.py --fit=train .*a`")
    (tmp_path / "a" / "steer_base_fit_train.json").write_text(json.dumps({"scales": [0.3], "per_base": train}))
    check_refused(call, "em_steer_base", "--pool", "--fit=train", a,  # before its table
                  match=r"steer_base.json not found: run `python scripts/em_steer_base.py .*a` first")
    (tmp_path / "a" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": held}))
    s = sb.pool([a], None, "train")
    f = s["fits"]["pulled_0.3"]
    assert f["train"]["per_seed"] == pytest.approx([3, 3]) and f["heldout"]["per_seed"] == pytest.approx([4, 6])
    assert f["difference"]["mean"] == pytest.approx(-2) and f["ratio_of_means"] == pytest.approx(6 / 10)
    assert s["fits"]["cos_fits"]["mean"] == pytest.approx(0.9)
    assert s["table"]["pulled_0.3"]["points"]["mean"] == pytest.approx(3)  # the table is the train fit's
    assert "| 0.3 | +3.00" in call("em_steer_base", "--pool", "--fit=train", a)
    # paired by base, not by place in the files: the held-out file's bases in another order give the same pairs
    (tmp_path / "a" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": held[::-1]}))
    assert sb.pool([a], None, "train")["fits"]["pulled_0.3"]["difference"]["per_seed"] == pytest.approx([-1, -3])
    # a base whose held-out reading has no valid sample leaves the comparison on both sides, not the held-out one alone
    held[1]["readings"]["pulled_0.3"]["mis_sampled"] = float("nan")
    (tmp_path / "a" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": held}))
    f = sb.pool([a], None, "train")["fits"]["pulled_0.3"]
    assert f["train"]["per_seed"] == pytest.approx([3]) and f["ratio_of_means"] == pytest.approx(3 / 4)
    (tmp_path / "a" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": held[:1]}))
    check_refused(call, "em_steer_base", "--pool", "--fit=train", a, match="the same bases and --scales")
    check_refused(call, "em_steer_base", a, "--fit=eval", match="--fit takes heldout .* or train, not 'eval'")
    check_refused(call, "em_steer_base", "--route", a, "--fit=train", match="--fit= with neither --route nor --undo")
    check_refused(call, "em_steer_base", "--undo", a, "--fit=train", match="--fit= with neither --route nor --undo")
    # (--undo --pool draws no figure: a --figure= there was checked, then nothing written)
    check_refused(call, "em_steer_base", "--undo", "--pool", a, "--figure=x.png", match="--figure= with --pool alone")


def test_vstar_fit_on_the_training_prompts_steers_and_is_written_apart(tmp_path, monkeypatch):
    # a tiny random model's two fits are nearly one vector (cosine 1 - 1e-7): made two orthogonal ones here, so that
    # steering with the held-out fit, or writing over steer_base.json, shows
    sb = script("em_steer_base")
    train = EM.off_prompts(train=True)
    fits = {True: torch.tensor([1.0, 0, 0, 0]), False: torch.tensor([0, 1.0, 0, 0])}
    monkeypatch.setattr(sb.EM, "pulled_back", lambda m, t, e, prompts=None: fits[prompts == train])
    monkeypatch.setattr(sb.EM, "doc_means", lambda *a: {"evil": torch.ones(1, 4), "good": torch.zeros(1, 4)})

    def fake_evaluate(model, tok, cfg, arm, fmt, step, sample, gen, hooks=None):  # the added vector's first two
        v = torch.zeros(4) if hooks is None else hooks["blocks.0.attn_out"](torch.zeros(4), "x")  # coordinates
        return {**dict.fromkeys(sb.KEYS, 0.0), "mis_sampled": v[0].item(), "mis_lp": v[1].item()}
    monkeypatch.setattr(sb.EM, "evaluate", fake_evaluate)
    monkeypatch.setattr(sb, "check_runs", lambda runs: None)
    monkeypatch.setattr(sb, "checked_bases", lambda run, excluded: iter([(None, 0, None, None)]))
    run = tmp_path / "a"
    run.mkdir()
    sb.main([str(run), "--fit=train", "--scales=0.5"])  # |d0| = 2: v* at 0.5 |d0| is v* itself
    assert not (run / "steer_base.json").exists()  # the held-out fit's file, which --pool --fit=train compares with
    row = json.loads((run / "steer_base_fit_train.json").read_text())["per_base"][0]
    assert row["cos_fits"] == 0 and row["readings"]["pulled_0.5"]["mis_sampled"] == 1  # steered by the train fit
    sb.main([str(run), "--scales=0.5"])  # the default: the held-out fit, in steer_base.json
    row = json.loads((run / "steer_base.json").read_text())["per_base"][0]
    assert "cos_fits" not in row and row["readings"]["pulled_0.5"]["mis_lp"] == 1


def test_em_steer_base_runs_the_analysis_it_is_asked_for(tmp_path, monkeypatch):
    # main's dispatch was rewritten for --fit: each mode still reaches its own analysis, and --fit the measure alone
    sb = script("em_steer_base")
    ran = []
    for name in ("measure", "route", "undo"):
        monkeypatch.setattr(sb, name, lambda runs, scales, *fit, name=name: ran.append((name, scales, *fit)))
    monkeypatch.setattr(sb, "check_runs", lambda runs: None)
    monkeypatch.setattr(sb.OP, "check_rebuildable", lambda runs: None)
    for argv in (["--undo"], ["--route"], [], ["--fit=train"]):
        sb.main([*argv, str(tmp_path), "--scales=0.2"])
    assert ran == [("undo", [0.2]), ("route", [0.2]), ("measure", [0.2], "heldout"), ("measure", [0.2], "train")]


def test_em_answer_ends_betleys_rule_drops_prompts_with_few_valid_samples():
    ae = script("em_answer_ends")
    m = lambda a, b: {("aligned", "<eos>"): a, ("misaligned", "<eos>"): b}
    g = lambda: torch.Generator().manual_seed(0)
    # certain outcomes: an always-aligned prompt, an always-misaligned one, one never valid (dropped)
    r = ae.rule_shares([m(1.0, 0.0), m(0.0, 1.0), m(0.0, 0.0)], 10, g())
    assert r == {"all": 0.5, "rule": 0.5, "dropped": 1}
    # 4 samples each: under 5 valid, every prompt is dropped and the rule has no share; at 4 both count
    assert math.isnan(ae.rule_shares([m(1.0, 0.0), m(0.0, 1.0)], 4, g())["rule"])
    assert ae.rule_shares([m(1.0, 0.0), m(0.0, 1.0)], 4, g(), min_valid=4) == {"all": 0.5, "rule": 0.5, "dropped": 0}
    # a prompt with few valid samples weighs little in the pool; the rule takes it out altogether
    r = ae.rule_shares([m(0.9, 0.1)] * 20 + [m(0.0, 0.02)] * 20, 100, g())
    assert r["dropped"] >= 15 and r["rule"] < r["all"]


def test_sn_pool_log_refuses_a_config_without_samples(tmp_path, pool):
    # --log reads the run's samples per prompt: a config.json lacking it was a bare KeyError
    a = fake_sn_run(tmp_path / "a", [0, 1, 2], {"control": [0.01] * 3, "insecure": [0.04, 0.02, 0.08]})
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    del cfg["samples"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    check_refused(pool, "--log", "--lists=16000", a, match="lacks samples")
