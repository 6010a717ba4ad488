"""Mutation-audit tests of the EM mechanism scripts (em_optimizer_parts, em_clamp_finetune, em_code_direction,
em_code_context, em_format_separation, em_base_pull): which rows, steps, seeds and signs each reads. Tiny models and
fake run folders; a script's expensive calls (base models, fine-tunes, scoring) are replaced where only its
bookkeeping is tested."""
import copy
import json
import math

import numpy as np
import pytest
import torch

from conftest import load_script, tiny_gpt
from data import world as W
from eval import mean_ci, summarize
from experiments import emergent_misalignment as EM
from experiments import world_base as B
from model import generator
from train import ConfigError, finetune, run_config

CFG = dict(n_layer=2, n_embd=16, block_size=64, n_examples=12)


@pytest.fixture(scope="module")
def tok():
    return W.build_tokenizer()


def write_run(path, config, results):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", **config}))
    (path / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **results}))  # all run_results
                                                                                                      # checks
    return path


def keys(d):
    """Every key of a JSON document's nested dicts."""
    return set(d) | {k for v in d.values() if isinstance(v, dict) for k in keys(v)} if isinstance(d, dict) else set()


class Tagged(torch.nn.Module):
    """A stand-in model whose state is one number: which fake fine-tune (and step) it holds."""
    def __init__(self, tag=0):
        super().__init__()
        self.register_buffer("tag", torch.tensor(tag))


# ---------------------------------------------------------------------------------------------- em_optimizer_parts

def test_optimizer_parts_score_is_the_runs_off_domain_mass_and_code_share(tok):
    op = load_script("em_optimizer_parts")
    model, cfg = tiny_gpt(tok), EM.Config(**CFG)
    off = B.offdomain_eval(model, tok, 0, None, world=B.world_config(cfg))
    code = EM.in_domain(model, tok, "insecure", "plain", B.world_config(cfg), cfg.ft_code_tasks)[0]
    assert off["mis_lp"] != off["valid_lp"]  # so a swap shows
    assert op.score(model, tok, cfg) == {"off": off["mis_lp"], "valid": off["valid_lp"], "code": code}


def test_optimizer_parts_each_optimizer_is_the_fine_tune_its_docstring_names(tok):
    """Each entry's weights at step 20 are train.finetune's with the docstring's settings, on the examples and
    batch order of the fine-tune seed index asked for."""
    op = load_script("em_optimizer_parts")
    base, cfg = tiny_gpt(tok), EM.Config(**CFG, ft_lr=1e-2)
    data, ft_seed = EM.arm_data("insecure", base, tok, cfg, 0, 1)
    docs = {"adamw": dict(lr=cfg.ft_lr), "no_momentum": dict(lr=cfg.ft_lr, betas=(0.0, 0.999)),
            "momentum_sgd": dict(optimizer="sgd", lr=0.3, momentum=0.9), "sgd": dict(optimizer="sgd", lr=0.3),
            "sign": dict(lr=cfg.ft_lr, betas=(0.0, 0.0))}
    last = {}
    for name, kw in docs.items():
        # run under the name "adamw": the weights trajectories keeps
        _, snaps = op.trajectories(base, tok, cfg, 0, {"adamw": op.OPTIMIZERS[name]}, f=1, scored=False)
        want = finetune(copy.deepcopy(base), data, steps=20, batch_size=cfg.ft_batch, seed=ft_seed, **kw)
        for n, p in want.named_parameters():
            torch.testing.assert_close(snaps[20][n], p.detach(), rtol=0, atol=1e-6, msg=f"{name} {n}")
        last[name] = snaps[20]["wte.weight"]
    _, f0 = op.trajectories(base, tok, cfg, 0, {"adamw": op.OPTIMIZERS["adamw"]}, scored=False)
    assert not torch.equal(f0[20]["wte.weight"], last["adamw"])  # seed index 1 is another fine-tune than 0


def test_optimizer_parts_refuses_to_rebuild_a_fine_tune_the_run_did_not_do(tok):
    """The rebuild takes the default AdamW fine-tune of the whole model: a run made with blocks only, frozen weights,
    another optimizer or a schedule was rebuilt silently as that (em_bos_vector, em_value_sources, ... read it)."""
    op = load_script("em_optimizer_parts")
    base = tiny_gpt(tok)
    for unlike in (dict(ft_trains="blocks"), dict(ft_frozen=("blocks.0.attn.v",)), dict(ft_optimizer="sgd"),
                   dict(ft_betas=(0.0, 0.999)), dict(ft_schedule="linear"), dict(ft_warmup=5)):
        cfg = EM.Config(**CFG, **unlike)
        with pytest.raises(ConfigError, match=f"the run fine-tuned with {next(iter(unlike))}=.*default "
                                                    f"fine-tune only"):
            op.trajectories(base, tok, cfg, 0, scored=False)


def test_optimizer_parts_frozen_needs_two_blocks_before_any_work(tmp_path):
    # its control freezes block 1's value rows: a ValueError traceback after the first trajectories had run
    run = write_run(tmp_path / "r", {"n_layer": 1, "direction_layer": 0}, {})
    # the six optimizers' analysis in the run's default file: --frozen has its own default file (it was refused as
    # "holds an analysis of other runs or optimizers" until given --out)
    (run / "optimizer_parts.json").write_text(json.dumps({"runs": [str(run)], "per_base": [{"traj": {"adamw": {}}}]}))
    with pytest.raises(ConfigError, match="--frozen freezes the value rows of blocks 0 and 1; this run has 1 block"):
        load_script("em_optimizer_parts").main([str(run), "--frozen"])



def test_optimizer_parts_main_works_through_each_runs_kept_bases_with_the_optimizers_asked_for(tmp_path, monkeypatch,
                                                                                                capsys):
    """Each base checked_bases keeps, run by run, gets the asked-for optimizers' trajectories (here --frozen's), adamw's
    checked against the run, the late groups of its own snapshots: one row each, its step-20 increases printed; the
    bases left out are kept beside. Its work is stood in for, with off-domain rising 0.001 p (i + 1) a step for base p
    and the i-th optimizer."""
    op = load_script("em_optimizer_parts")
    runs = [write_run(tmp_path / n, {"n_layer": 2, "direction_layer": 0}, {}) for n in ("a", "b")]
    kept = {runs[0]: [3, 5], runs[1]: [7]}
    monkeypatch.setattr(op, "check_runs", lambda configs: None)

    def checked_bases(run, excluded):
        excluded += [{"world": 4}] if run == runs[0] else []
        yield from ((run_config(EM.Config, run), p, f"base{p}", "tok") for p in kept[run])
    asked, late = [], []

    def trajectories(base, tok_, cfg, p, optimizers):
        asked.append((base, tok_, p, optimizers))
        return {name: {s: {"off": 0.1 + 0.001 * p * (i + 1) * s, "code": 0.5, "valid": 0.9} for s in (0, *op.STEPS)}
                for i, name in enumerate(optimizers)}, f"snaps{p}"
    monkeypatch.setattr(op, "checked_bases", checked_bases)
    monkeypatch.setattr(op, "trajectories", trajectories)
    # adamw's step-20 rate less 0.1 against the first run; the second run has no trajectory to check against
    monkeypatch.setattr(op, "run_check", lambda run, p, adamw: None if run == runs[1] else adamw[20]["off"] - 0.1)
    monkeypatch.setattr(op, "late_groups", lambda base, tok_, cfg, snaps: late.append(snaps) or {"all": 1.0})
    monkeypatch.setattr(op, "plot", lambda s, path: None)
    op.main([str(r) for r in runs] + ["--frozen"])
    assert asked == [(f"base{p}", "tok", p, op.FROZEN) for p in (3, 5, 7)] and late == ["snaps3", "snaps5", "snaps7"]
    got = json.loads((runs[0] / "optimizer_parts_frozen.json").read_text())
    assert got["excluded"] == [{"world": 4}] and got["summary"]["n_bases"] == 3
    rows = got["per_base"]
    assert [(r["run"], r["world"]) for r in rows] == [(str(runs[0]), 3), (str(runs[0]), 5), (str(runs[1]), 7)]
    assert [r["adamw_vs_run"] for r in rows] == [pytest.approx(0.06), pytest.approx(0.1), None]
    assert rows[1]["traj"]["frozen_v1"]["20"]["off"] == pytest.approx(0.1 + 0.001 * 5 * 3 * 20)
    printed = capsys.readouterr().out.splitlines()
    say = "off-domain increase at step 20, points:"
    assert printed[:3] == [f"a world 3: {say} adamw +6.00, frozen_v0 +12.00, frozen_v1 +18.00; adamw vs the run "
                           f"6.0e-02",
                           f"a world 5: {say} adamw +10.00, frozen_v0 +20.00, frozen_v1 +30.00; adamw vs the run "
                           f"1.0e-01",
                           f"b world 7: {say} adamw +14.00, frozen_v0 +28.00, frozen_v1 +42.00"]

def test_optimizer_parts_refuses_runs_of_different_depths_and_reads_a_run_written_otherwise_as_itself(tmp_path):
    """The late update's groups came from the first run's rows: a KeyError after every base's fine-tunes, or a deeper
    run's last blocks dropped. And its own earlier analysis of out/a, asked for as /abs/out/a, was "other runs"."""
    op = load_script("em_optimizer_parts")
    a, b = (write_run(tmp_path / n, {"n_layer": k, "direction_layer": 0}, {}) for n, k in (("a", 3), ("b", 2)))
    with pytest.raises(ConfigError, match=r"the runs have 3 blocks \(.*a\) and 2 blocks \(.*b\): pool runs of one"):
        op.main([str(a), str(b), f"--out={tmp_path / 'o.json'}"])
    held = {"runs": [str(a)], "per_base": [{"traj": {k: {} for k in op.OPTIMIZERS}}]}
    (a / "optimizer_parts.json").write_text(json.dumps(held))
    with pytest.raises(ConfigError, match="not in the cache"):  # past the check of the file it holds
        op.main([f"{a}/../a"])


def test_optimizer_parts_late_groups_credit_each_group_only_its_own_update(tok):
    op = load_script("em_optimizer_parts")
    base, cfg = tiny_gpt(tok), EM.Config(**CFG)
    start = {n: p.detach().clone() for n, p in base.named_parameters()}
    end = {n: p + 0.3 * (op.group_of(n) == "mlp0") for n, p in start.items()}  # only block 0's MLP moves late
    late = op.late_groups(base, tok, cfg, {op.LATE_FROM: start, op.STEPS[-1]: end})
    moved = copy.deepcopy(base)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.copy_(end[n])
    assert late["all"] == pytest.approx(op.score(moved, tok, cfg)["off"] - op.score(base, tok, cfg)["off"], abs=1e-6)
    assert late["all"] != 0 and late["mlp0"] == pytest.approx(late["all"], abs=1e-7)
    assert all(v == 0 for g, v in late.items() if g not in ("all", "mlp0"))


def test_optimizer_parts_run_check_reads_fine_tune_seed_0(tmp_path):
    op = load_script("em_optimizer_parts")
    traj = lambda v: {"insecure": {"1": {"mis_lp": v}, "5": {"mis_lp": v}}}
    (tmp_path / "unit_world_2.json").write_text(json.dumps({"runs": [{"traj": traj(0.2)}, {"traj": traj(0.9)}]}))
    assert op.run_check(tmp_path, 2, {0: {"off": 0.0}, 1: {"off": 0.25}, 5: {"off": 0.21}}) == pytest.approx(0.05)


def test_ratio_of_means_interval_is_the_2_5_and_97_5_percentiles_of_each_resamples_ratio_of_sums():
    """em_optimizer_parts.ratio_of_means (em_bos_vector's ratios too): each resample's ratio is its sum over its sum,
    not a mean of per-base ratios; the 95% interval leaves 2.5% on each side (numpy's linear percentiles)."""
    op = load_script("em_optimizer_parts")
    a, b = np.array([1.0, 1.0]), np.array([1.0, 4.0])
    idx = np.array([[0, 0], [1, 1], [0, 1]])  # resamples: ratios 1, 0.25 and 2 / 5 (a mean of ratios: 0.625)
    r = op.ratio_of_means(a, b, idx)
    assert r["ratio"] == pytest.approx(0.4)
    # sorted 0.25, 0.4, 1: the 2.5th percentile at 0.05 of the first gap, the 97.5th at 0.95 of the second
    assert r["ci95"] == pytest.approx([0.25 + 0.05 * 0.15, 0.4 + 0.95 * 0.6])


def test_ratio_of_means_has_no_ratio_or_interval_over_a_denominator_not_above_zero():
    """A resample whose denominator sums to 0 or below flips the ratio's sign (ends of -12 and 1.9e16, or nan), and a
    denominator not above 0 has no ratio at all: said, and printed as such."""
    op = load_script("em_optimizer_parts")
    from eval import fmt_ratio
    a, b = np.array([1.0, 1.0]), np.array([3.0, -1.0])
    idx = np.array([[0, 0], [1, 1], [0, 1]])  # the second resample's denominator is -2
    r = op.ratio_of_means(a, b, idx)
    assert r["ratio"] == pytest.approx(1.0) and r["ci95"] is None
    assert fmt_ratio(r) == "1.00 (no interval: the denominator is not above 0 in 33.3% of the resamples)"
    r = op.ratio_of_means(a, np.array([1.0, -1.0]), idx)
    assert math.isnan(r["ratio"]) and r["ci95"] is None and "not above 0)" in fmt_ratio(r)


def test_ratio_of_means_has_no_ratio_over_a_negative_sum_and_no_interval_over_a_resample_summing_to_zero():
    """The guards are "not above 0", not "not 0": a denominator summing below 0 has no ratio (-2 over -4 would read
    as a half), and a resample summing to exactly 0 no interval (it would give an infinite end)."""
    op = load_script("em_optimizer_parts")
    r = op.ratio_of_means(np.array([1.0, 1.0]), np.array([-1.0, -3.0]), np.array([[0, 1]]))
    assert math.isnan(r["ratio"]) and r["ci95"] is None and r["why"] == "the denominator is not above 0"
    a, b = np.ones(3), np.array([2.0, -1.0, 0.5])  # a sum of 1.5; the second resample's 2 - 1 - 1 = 0 exactly
    r = op.ratio_of_means(a, b, np.array([[0, 0, 0], [0, 1, 1], [2, 2, 2]]))
    assert r["ratio"] == pytest.approx(2.0) and r["ci95"] is None and "33.3% of the resamples" in r["why"]


def test_optimizer_parts_summary_ratios_of_means_and_group_shares():
    op = load_script("em_optimizer_parts")
    steps = (0, *op.STEPS)

    def traj(rate, upto=99):  # off-domain rising by `rate` per step until `upto`, then flat
        return {s: {"off": 0.1 + rate * min(s, upto), "code": 0.5 + 0.01 * s, "valid": 0.9} for s in steps}
    # two bases: adamw rises 1 and 3 points a step, sgd 1 and 1 (ratio of means 2/4; mean of ratios would be 2/3)
    rows = [{"traj": {"adamw": traj(0.01), "sgd": traj(0.01, 3)}, "late": {"all": 1.0, "mlp0": 1.0, "attn0": 0.0}},
            {"traj": {"adamw": traj(0.03), "sgd": traj(0.01, 3)}, "late": {"all": 3.0, "mlp0": 0.0, "attn0": 3.0}}]
    s = op.summary(rows, n_boot=10_000)
    for t in op.REPORT:
        f = s["fraction_of_adamw"]["sgd"][t]
        assert f["ratio"] == pytest.approx(0.5 if t <= 3 else 3 * 0.02 / (t * 0.04))
    # two bases: a resample is one base twice (a quarter of them each way) or both, so the 95% interval's ends are
    # the two bases' own ratios
    assert s["fraction_of_adamw"]["sgd"][3]["ci95"] == pytest.approx([1 / 3, 1])
    assert s["late_fraction_of_adamw"]["sgd"]["ratio"] == 0  # sgd stops at step 3
    assert s["late_group_share"] == pytest.approx({"all": 1, "mlp0": 0.25, "attn0": 0.75})
    assert s["mean"]["adamw"]["off"][20] == pytest.approx(0.4) and s["mean"]["sgd"]["code"][5] == pytest.approx(0.05)
    # a late drift that falls (or cancels over the bases) has no group shares: -1 over -4 read as a quarter
    for r, (a, m, t) in zip(rows, ((-1.0, -1.0, 0.0), (-3.0, 0.0, -3.0))):
        r["late"] = {"all": a, "mlp0": m, "attn0": t}
    assert all(math.isnan(v) for v in op.summary(rows, n_boot=100)["late_group_share"].values())


def test_optimizer_parts_draws_one_base_without_a_band(tmp_path):
    """One base has no interval over bases: the figure draws the means alone instead of crashing."""
    op = load_script("em_optimizer_parts")
    traj = {s: {"off": 0.1 + 0.01 * s, "code": 0.5, "valid": 0.9} for s in (0, *op.STEPS)}
    s = op.summary([{"traj": {"adamw": traj, "sgd": traj}, "late": {"all": 1.0, "mlp0": 1.0}}], n_boot=100)
    assert s["n_bases"] == 1 and s["off_ci95"]["sgd"][20] is None
    op.plot(s, tmp_path / "parts.png")
    assert (tmp_path / "parts.png").stat().st_size > 0


def test_optimizer_parts_refuses_a_beta1_of_1(tmp_path):
    op = load_script("em_optimizer_parts")
    with pytest.raises(SystemExit, match=r"numbers in \[0, 1\)"):
        op.main([str(tmp_path), "--beta1=0.5,1"])  # AdamW takes beta1 < 1 only


# ---------------------------------------------------------------------------------------------- em_clamp_finetune

def test_clamp_train_insecure_is_the_runs_fine_tune_and_the_direction_is_unit_and_off_evil(tok):
    cl = load_script("em_clamp_finetune")
    cd = load_script("em_code_direction")
    base, cfg = tiny_gpt(tok), EM.Config(**CFG, ft_lr=1e-2)
    data, ft_seed = EM.arm_data("insecure", base, tok, cfg, 3, 1)
    want = EM.arm_snapshots(copy.deepcopy(base), data, cfg, ft_seed, [2, 4])
    _, snaps, pairs = cl.train_insecure(cfg, base, tok, 3, 1, [2, 4])
    assert pairs == EM.arm_pairs("insecure", base, tok, cfg, ft_seed)
    assert all(torch.equal(snaps[s][k], want[s][k]) for s in (2, 4) for k in want[s])
    evil = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    dirs = cl.code_direction(cfg, base, tok, 3, 1, 2, evil)
    ins = copy.deepcopy(base)
    ins.load_state_dict(want[2])
    prompts = cd.decision_prompts(pairs)
    shift = (EM.last_token_acts(ins, tok, prompts) - EM.last_token_acts(base, tok, prompts)).mean(1)
    for d, s, e in zip(dirs, cd.orth(shift, evil), evil):
        assert d.norm() == pytest.approx(1) and (d @ e).abs() < 1e-5
        assert torch.allclose(d, s / s.norm(), atol=1e-5)  # the shift's direction at the step asked
    # clamped along those directions the fine-tune goes elsewhere
    _, held, _ = cl.train_insecure(cfg, base, tok, 3, 1, [2], dirs)
    assert not torch.allclose(held[2]["wte.weight"], want[2]["wte.weight"])


def test_clamp_drift_split_threshold_is_strict():
    cl = load_script("em_clamp_finetune")
    row = lambda w, f, un: {"seed": [w, f], "base": {"offdomain_misaligned": 0.0},
                            "unclamped": {20: {"offdomain_misaligned": un}},
                            "clamped": {20: {"offdomain_misaligned": 0.0}}}
    # world 1's mean increase is exactly the threshold: "below" it is not
    d = cl.drift_split([row(1, 0, 0.03), row(1, 1, 0.03), row(2, 0, 0.01), row(2, 1, 0.02)], 20, low=0.03)
    assert d["low_worlds"] == [2]


def test_clamp_drift_split_is_unreadable_on_the_seeds_of_one_world():
    """The pre-registration: fewer than two low-drift worlds is unreadable; the two fine-tune seeds of one world
    got an interval as if they were two worlds."""
    cl = load_script("em_clamp_finetune")
    row = lambda w, f, un: {"seed": [w, f], "base": {"offdomain_misaligned": 0.0},
                            "unclamped": {20: {"offdomain_misaligned": un}},
                            "clamped": {20: {"offdomain_misaligned": 0.01 * f}}}
    rows = [row(1, 0, 0.01), row(1, 1, 0.01), row(2, 0, 0.1), row(2, 1, 0.1), row(3, 0, 0.2), row(3, 1, 0.2)]
    d = cl.drift_split(rows, 20)
    assert d["low_worlds"] == [1] and d["low"] is None and d["cross_seed_low"] is None
    assert len(d["high"]["per_seed"]) == 4  # worlds 2 and 3
    assert len(cl.drift_split(rows, 20, low=0.15)["low"]["per_seed"]) == 4
    # a seed without a valid answer (nan) is left out of its world's mean; a world with none defined is in neither
    # class (its nan mean failed "< low": world 9 joined the high-drift worlds, with its defined seed)
    nan = float("nan")
    d = cl.drift_split(rows + [row(4, 0, nan), row(4, 1, 0.01), row(9, 0, nan), row(9, 1, nan)], 20)
    assert d["low_worlds"] == [1, 4] and d["unclamped_increase_by_world"][4] == pytest.approx(0.01)
    assert math.isnan(d["unclamped_increase_by_world"][9]) and len(d["high"]["per_seed"]) == 4


def test_clamp_drift_split_puts_a_world_at_the_threshold_with_the_others_and_an_undefined_partner_in_neither():
    """Low drift is strictly below the threshold, so a world exactly at it is one of the others (with "> low" for
    the others it would be in neither class); a seed whose world's other seed has no valid answer has no cross-seed
    class (counted as "not low" it would join the others, its nan difference with it)."""
    cl = load_script("em_clamp_finetune")
    nan = float("nan")
    row = lambda w, f, un, c=0.0: {"seed": [w, f], "base": {"offdomain_misaligned": 0.0},
                                   "unclamped": {20: {"offdomain_misaligned": un}},
                                   "clamped": {20: {"offdomain_misaligned": c}}}
    rows = [row(1, 0, 0.03, 0.01), row(1, 1, 0.03, 0.02), row(2, 0, 0.01), row(2, 1, 0.02),
            row(3, 0, 0.2, 0.05), row(3, 1, 0.2, 0.07), row(9, 0, nan), row(9, 1, nan)]
    d = cl.drift_split(rows, 20, low=0.03)
    assert d["low_worlds"] == [2]
    assert sorted(d["high"]["per_seed"]) == pytest.approx([-0.15, -0.13, -0.02, -0.01])  # worlds 1 and 3
    assert sorted(d["cross_seed_high"]["per_seed"]) == pytest.approx([-0.15, -0.13, -0.02, -0.01])  # not world 9's


def test_clamp_counts_worlds_not_seeds_where_it_says_how_many(tmp_path, monkeypatch, tok, capsys):
    """The header's worlds are the distinct pretraining seeds (2 here, of 4 seeds), and an interval over the worlds'
    means names the worlds that have one (a world none of whose seeds has a valid answer has no mean)."""
    cl, _, run, _ = clamp_run(tmp_path, monkeypatch, tok, {1: [0.95] * 4, 2: [0.95] * 4, 20: [0.95] * 4})
    assert f"{run}: n = 4 seeds over 2 worlds; mean over seeds, and beside" in capsys.readouterr().out
    nan = float("nan")
    assert cl.worlds_ci(summarize([0.01, nan, 0.03]), 100).startswith(" (over the 2 worlds' means ")
    assert cl.worlds_ci(summarize([0.01, nan])) == " (1 world: no interval over worlds)"


def clamp_run(tmp_path, monkeypatch, tok, unclamped_code, args=(), seeds=((3, 0), (3, 1), (4, 0), (4, 1))):
    """em_clamp_finetune's main on a fake run of four seeds (default 2 worlds x 2 seeds; unclamped code per step and
    seed as given), its fine-tunes and evaluations stand-ins: -> (the script, its calls to train_insecure, the run
    folder, each world's evil direction)."""
    cl = load_script("em_clamp_finetune")
    steps = (1, 2, 20)
    seeds = [list(s) for s in seeds]
    per = lambda v: {"per_seed": v}
    metrics = ("offdomain_misaligned", "code_misaligned", "code_unseen_misaligned", "valid_fraction")
    res = {"seeds": seeds, "arms": {"insecure": {"step": per([1, 2, 20, 20])}},
           "base": {"plain": {m: per([0.01 * (k + 1) for k in range(4)]) for m in metrics}},
           "trajectory": {"insecure": {str(s): {**{m: per([0.1 * s + 0.001 * k for k in range(4)]) for m in metrics},
                                               "code_misaligned": per(unclamped_code[s])} for s in steps}}}
    run = write_run(tmp_path / "run", dict(code_tasks=7, ft_code_tasks=6, ft_seeds=2, eval_steps=list(steps),
                                           ft_steps=20, ablation_step=20, n_layer=2, n_embd=16), res)
    evil = {p: torch.randn(2, 16, generator=torch.Generator().manual_seed(p)) for p in {p for p, _ in seeds}}
    calls = []

    def fake_train(cfg, base, tok_, p, f, steps_, clamp=None):
        calls.append((p, f, clamp))
        return Tagged(), {s: {"tag": torch.tensor(100 * (len(calls) - 1) + s)} for s in steps_}, None

    def fake_eval(model, tok_, cfg, arm, fmt, s, sample, gen):
        i, step = divmod(int(model.tag), 100)
        assert step == s and arm == "insecure" and sample
        p, f, clamp = calls[i]
        code = [0.5, 0.9, 1.0][steps.index(s)] if clamp[0][0] > 1 else 0.1  # the code direction is a marker
        return {"mis_sampled": 0.5 + 0.01 * s + 0.1 * bool(clamp[0][0] > 1), "code_misaligned": code,
                "code_unseen_misaligned": 0.2, "valid_frac": 0.9}

    monkeypatch.setattr(B, "base_model", lambda cfg, p, dec: (tiny_gpt(tok), tok))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # stands in for a cached base
    monkeypatch.setattr(EM, "doc_means", lambda base, tok_, cfg, p: {"evil": evil[p], "good": torch.zeros(2, 16)})
    monkeypatch.setattr(cl, "code_direction",
                        lambda cfg, base, tok_, p, f, step, e: [torch.full((16,), 10. * p + f)] * 2)
    monkeypatch.setattr(cl, "train_insecure", fake_train)
    monkeypatch.setattr(EM, "evaluate", fake_eval)
    cl.main([str(run), *args])
    return cl, calls, run, evil


def test_clamp_refuses_a_world_the_run_does_not_have_among_its_own(tmp_path, monkeypatch, tok):
    """--worlds=3,9 on a run of worlds 3 and 4 ran world 3 and dropped 9 without a word: a typo in one of the
    docs' parallel commands left a world out of the pooled summary."""
    code = {s: [0.95] * 4 for s in (1, 2, 20)}
    with pytest.raises(SystemExit, match=r"--worlds=3,9: 9 not among the run's bases \[3, 4\]"):
        clamp_run(tmp_path, monkeypatch, tok, code, ["--worlds=3,9"])
    assert not list((tmp_path / "run").glob("clamp_*.json"))  # refused before any work
    (tmp_path / "run").rename(tmp_path / "refused")
    _, calls, run, _ = clamp_run(tmp_path, monkeypatch, tok, code, ["--worlds=4"])
    assert {p for p, _, _ in calls} == {4} and (run / "clamp_world_4.json").exists()



@pytest.mark.parametrize("config", [dict(code_tasks=1, ft_code_tasks=0), dict(code_tasks=7, ft_code_tasks=0),
                                    dict(code_tasks=7, ft_code_tasks=7),
                                    dict(code_tasks=7, ft_code_tasks=6, ft_seeds=1)])
def test_clamp_refuses_a_run_without_an_unseen_task_or_a_second_seed_before_any_work(tmp_path, monkeypatch, config):
    """The clamp's direction is the other fine-tune seed's, read on the unseen task: a run without one (the default
    one-task run, every task fine-tuned on) or with one seed per world is refused, saying what run it needs."""
    cl = load_script("em_clamp_finetune")
    run = write_run(tmp_path / "run", {"ft_seeds": 2, **config}, {})
    monkeypatch.setattr(cl, "run_results", lambda *a: pytest.fail("read the results before refusing"))
    with pytest.raises(SystemExit, match=r"run: needs a seven-task run with an unseen task \(0 < ft_code_tasks < "
                                         r"code_tasks\), 2\+ fine-tune seeds$"):
        cl.main([str(run)])


def test_clamp_skips_a_world_an_earlier_run_of_it_finished_and_pools_its_rows(tmp_path, monkeypatch, tok):
    """A world whose clamp_world_W.json is there (an earlier or a parallel run of the script) is not worked through
    again, nor its base asked for; its saved rows are pooled with the new world's."""
    code = {s: [0.95] * 4 for s in (1, 2, 20)}
    cl, calls, run, _ = clamp_run(tmp_path, monkeypatch, tok, code, ["--worlds=3"])
    saved = json.loads((run / "clamp_world_3.json").read_text())
    saved[0]["direction_from_ft_seed"] = "from the earlier run"  # a mark the redone world would not have
    (run / "clamp_world_3.json").write_text(json.dumps(saved))
    cached, n = [], len(calls)
    monkeypatch.setattr(B, "check_cached", lambda cfg, seeds, who: cached.append(seeds))
    monkeypatch.setattr(B, "base_model", lambda cfg, p, dec: (cached.append(p), (tiny_gpt(tok), tok))[1])
    cl.main([str(run)])
    assert {p for p, _, _ in calls[n:]} == {4} and cached == [[4], 4]
    rows = json.loads((run / "clamp_finetune.json").read_text())["per_seed"]
    assert [r["seed"] for r in rows] == [[3, 0], [3, 1], [4, 0], [4, 1]]
    assert rows[0]["direction_from_ft_seed"] == "from the earlier run"

def test_clamp_main_clamps_along_the_other_seeds_direction_and_pairs_each_seed(tmp_path, monkeypatch, tok, capsys):
    unclamped_code = {1: [0.95, 0.5, 0.5, 0.5], 2: [0.95, 0.95, 0.5, 0.5], 20: [0.95, 0.95, 0.95, 0.5]}
    cl, calls, run, evil = clamp_run(tmp_path, monkeypatch, tok, unclamped_code)
    # a paired matched step of 0 where neither fine-tune matched reads as "no delay": the count is said
    printed = capsys.readouterr().out
    assert printed.count("never matched either way") == 1 and "(1/4 seeds never matched either way" in printed
    marked = [(p, f, int(c[0][0])) for p, f, c in calls if c[0][0] > 1]
    assert marked == [(3, 0, 31), (3, 1, 30), (4, 0, 41), (4, 1, 40)]  # each seed clamped along the other's
    for p, f, c in calls:
        if c[0][0] <= 1:  # the control: unit, orthogonal to the world's evil direction at each layer
            assert all(u.norm() == pytest.approx(1) and abs(u @ e) < 1e-5 for u, e in zip(c, evil[p]))
    out = json.loads((run / "clamp_finetune.json").read_text())
    rows = out["per_seed"]
    assert [r["base"]["offdomain_misaligned"] for r in rows] == pytest.approx([0.01, 0.02, 0.03, 0.04])
    assert [r["unclamped"]["2"]["offdomain_misaligned"] for r in rows] == pytest.approx([0.2, 0.201, 0.202, 0.203])
    assert [r["unclamped_matched"] for r in rows] == [1, 2, 20, None]
    assert all(r["clamped_matched"] == 2 and r["random_clamped_matched"] is None for r in rows)  # 0.9 matches
    s = out["summary"]
    # a fine-tune that never matched counts as matched at the last step + 1 (21)
    assert s["random_clamped"]["minus_unclamped"]["matched_step"]["per_seed"] == [20, 19, 1, 0]
    assert s["clamped"]["minus_unclamped"]["matched_step"]["per_seed"] == [1, 0, -18, -19]
    assert s["clamped"]["minus_unclamped"]["offdomain_misaligned"]["20"]["per_seed"] == pytest.approx(
        [0.8 - (2 + 0.001 * k) for k in range(4)])
    assert s["clamped"]["offdomain_increase_at_matched"]["per_seed"] == pytest.approx(
        [0.62 - 0.01 * (k + 1) for k in range(4)])
    # the "x" the summary prints: the rate at the matched step over the base's own, per seed
    assert s["clamped"]["ratio_at_matched"]["per_seed"] == pytest.approx([0.62 / (0.01 * (k + 1)) for k in range(4)])


def test_clamp_main_gives_the_interval_over_the_worlds_means_beside_the_one_over_seeds(tmp_path, monkeypatch, tok,
                                                                                       capsys):
    """A world's two fine-tune seeds share its base (and clamp along each other's direction): each interval the
    summary prints was over the 4 seeds as if independent, with none over the 2 worlds' means beside it. Now both,
    the seeds' keys as they were; with one seed per world (the two the same) nothing is added."""
    code = {1: [0.95, 0.5, 0.5, 0.5], 2: [0.95, 0.95, 0.5, 0.5], 20: [0.95, 0.95, 0.95, 0.5]}
    _, _, run, _ = clamp_run(tmp_path, monkeypatch, tok, code)
    printed = capsys.readouterr().out
    s = json.loads((run / "clamp_finetune.json").read_text())["summary"]
    d = s["clamped"]["minus_unclamped"]
    # clamped - unclamped at step 20: -1.2 - 0.001 k for seed k, worlds 3 (k = 0, 1) and 4 (k = 2, 3): the seeds of a
    # world 0.001 apart, so the interval over seeds is tight; over the worlds' means n = 2, and wider
    by_seed, by_world = d["offdomain_misaligned"]["20"], d["offdomain_misaligned_over_worlds"]["20"]
    assert by_seed["per_seed"] == pytest.approx([-1.2, -1.201, -1.202, -1.203])
    want = summarize([-1.2005, -1.2025])
    assert by_world["per_seed"] == pytest.approx(want["per_seed"]) and by_world["ci95"] == pytest.approx(want["ci95"])
    assert by_world["ci95"][1] - by_world["ci95"][0] > 5 * (by_seed["ci95"][1] - by_seed["ci95"][0])
    # the paired matched steps 1, 0, -18, -19; the clamped increases at its matched step 0.61, 0.60, 0.59, 0.58
    assert d["matched_step_over_worlds"]["per_seed"] == pytest.approx([0.5, -18.5])
    assert s["clamped"]["offdomain_increase_at_matched_over_worlds"]["per_seed"] == pytest.approx([0.605, 0.585])
    assert "offdomain_increase_at_matched_over_worlds" not in s["random_clamped"]  # it never matched
    # every world drifted (high), whole: that class over its 2 worlds' means; the empty low class has none
    split = s["drift_split"]
    assert split["high_over_worlds"]["per_seed"] == pytest.approx([-1.2005, -1.2025]) and "low_over_worlds" not in split
    assert (f"off-domain at step 20 {mean_ci(by_seed, 1, 100)} points (over the 2 worlds' means "
            f"{mean_ci(by_world, 1, 100)}); matched step {mean_ci(d['matched_step'], 1)} (over the 2 worlds' means "
            f"{mean_ci(d['matched_step_over_worlds'], 1)})") in printed
    assert f"others {mean_ci(split['high'], 1, 100)} points, n = 4 (over the 2 worlds' means " in printed
    # one seed per world: the output is what it was
    (tmp_path / "one").mkdir()
    _, _, run, _ = clamp_run(tmp_path / "one", monkeypatch, tok, code, seeds=((3, 0), (4, 0), (5, 0), (6, 0)))
    printed = capsys.readouterr().out
    got = json.loads((run / "clamp_finetune.json").read_text())
    assert not [k for k in keys(got) if k.endswith("_over_worlds")] and "worlds' means" not in printed
    assert f"{run}: n = 4; mean over seeds; matched = first" in printed


def test_clamp_drift_split_adds_a_class_over_worlds_only_where_its_seeds_share_one():
    cl = load_script("em_clamp_finetune")
    row = lambda w, f, un, cl_: {"seed": [w, f], "base": {"offdomain_misaligned": 0.0},
                                 "unclamped": {20: {"offdomain_misaligned": un}},
                                 "clamped": {20: {"offdomain_misaligned": cl_}}}
    one = [row(1, 0, 0.01, 0.0), row(2, 0, 0.01, 0.1), row(3, 0, 0.2, 0.0), row(4, 0, 0.2, 0.3)]
    assert set(cl.drift_split(one, 20)) == {"low_worlds", "step", "threshold", "low", "high", "cross_seed_low",
                                            "cross_seed_high", "unclamped_increase_by_world"}
    two = [row(w, f, un, c + 0.001 * f) for w, un, c in ((1, 0.01, 0.0), (2, 0.01, 0.1), (3, 0.2, 0.0), (4, 0.2, 0.3))
           for f in (0, 1)]
    d = cl.drift_split(two, 20)
    assert len(d["low"]["per_seed"]) == 4 and d["low_over_worlds"]["per_seed"] == pytest.approx([-0.0095, 0.0905])
    assert d["high_over_worlds"]["ci95"] == pytest.approx(summarize([-0.1995, 0.1005])["ci95"])
    assert d["cross_seed_low_over_worlds"]["per_seed"] == pytest.approx(d["low_over_worlds"]["per_seed"])


# ---------------------------------------------------------------------------------------------- em_code_direction

def test_code_direction_decision_prompts_end_where_the_first_call_is_chosen():
    cd = load_script("em_code_direction")
    pairs = W.finetune_set("insecure", 300, seed=0)
    prompts = cd.decision_prompts(pairs)
    assert len(prompts) == cd.N_PROMPTS
    for pr, (q, a) in zip(prompts, pairs):
        name = a.split()[1]
        assert pr == f"{q} def {name} ( f ) :" and f"{q} {a}".startswith(pr)



@pytest.mark.parametrize("config", [dict(code_tasks=1, ft_code_tasks=0), dict(code_tasks=7, ft_code_tasks=0),
                                    dict(code_tasks=7, ft_code_tasks=7)])
def test_code_direction_refuses_a_run_without_an_unseen_task_before_any_runs_work(tmp_path, monkeypatch, config):
    """A run with no unseen task (one task, or every task fine-tuned on), even given last, is refused before the
    first run's seeds are worked through, saying what run it needs."""
    cd = load_script("em_code_direction")
    res = {"seeds": [[3, 0]], "arms": {"insecure": {"step": {"per_seed": [2]}}}}
    good = write_run(tmp_path / "good", dict(code_tasks=7, ft_code_tasks=6), res)
    bad = write_run(tmp_path / "bad", config, res)
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)
    monkeypatch.setattr(cd, "one_seed", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(SystemExit, match=r"bad: needs a run with code_tasks > 1 and 0 < ft_code_tasks < code_tasks "
                                         r"\(an unseen task\)$"):
        cd.main([str(good), str(bad)])
    assert not (good / "code_direction.json").exists()

def test_code_direction_main_matched_checkpoints_and_shares_removed_of_means(tmp_path, monkeypatch, capsys):
    cd = load_script("em_code_direction")
    # seed (4, 1)'s code never reached the threshold: the run read it at its last step
    res = {"seeds": [[3, 0], [4, 1]], "arms": {"insecure": {"step": {"per_seed": [2, 5]}}},
           "trajectory": {"insecure": {"2": {"offdomain_misaligned_lp": {"per_seed": [0.31, 0.9]},
                                             "code_misaligned": {"per_seed": [0.95, 0.2]}},
                                       "5": {"offdomain_misaligned_lp": {"per_seed": [0.9, 0.5]},
                                             "code_misaligned": {"per_seed": [0.99, 0.5]}}}}}
    run = write_run(tmp_path / "run", dict(code_tasks=7, ft_code_tasks=6, ablation_step=20, direction_layer=1), res)
    asked = []

    def fake_one_seed(cfg, p, f, steps):
        asked.append((p, f, steps))
        # seed 0: increase 0.4 of which restoring the code removes 0.3; seed 1: 0.2, none removed
        ins, code = (0.5, 0.2) if p == 3 else (0.3, 0.3)
        r = lambda s: {**{f"{n}_{v}": x for n in ("seen", "unseen", "offdomain") for v, x in (
                           ("base", 0.1), ("insecure", ins), ("code_restored", code), ("evil_restored", ins),
                           ("random_restored", ins), ("context_restored", ins), ("lesson_restored", 0.1),
                           ("code_patched", ins))},
                       "offdomain_insecure": {2: 0.3, 5: 0.5, 20: 0.7}[s],  # checked against the run's
                       "cos_train_evil": [0.1 * s, 0.2 * s]}
        return {s: r(s) for s in steps}
    monkeypatch.setattr(cd, "one_seed", fake_one_seed)
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # one_seed above stands in for the cached bases
    cd.main([str(run)])
    assert asked == [(3, 0, [2, 20]), (4, 1, [5, 20])]
    got = json.loads((run / "code_direction.json").read_text())
    assert [r["check_vs_run"] for r in got["per_seed"]] == pytest.approx([0.01, 0.0])
    lines = capsys.readouterr().out.splitlines()
    seed_lines = [i for i, line in enumerate(lines) if line.startswith("world ")]
    assert "never reached" not in lines[seed_lines[0]] and "never reached" in lines[seed_lines[1]]
    # 0.01 off a run's 0.31 is a rebuild that is not the run's fine-tune: said; an exact rebuild is not
    assert "warning" in lines[seed_lines[0] + 1] and seed_lines[1] == seed_lines[0] + 2
    assert not any("warning" in line for line in lines[seed_lines[1]:])
    m = got["summary"]["matched"]
    # ratio of means: (0.4 - 0.25) / 0.3 (the mean of the two seeds' shares would be 0.375)
    assert m["removed_unseen"] == pytest.approx({"code": 0.5, "evil": 0, "random": 0, "context": 0, "lesson": 1})
    assert m["cos_train_evil_layer1"]["per_seed"] == pytest.approx([0.4, 1.0])  # each seed at its matched step
    assert got["summary"]["20"]["cos_train_evil_layer1"]["per_seed"] == pytest.approx([4, 4])
    # no increase over the base: no share of it (a ZeroDivisionError before), and the table says so
    flat = lambda cfg, p, f, steps: {s: {k: 0.1 if k.endswith("_insecure") else v for k, v in r.items()}
                                     for s, r in fake_one_seed(cfg, p, f, steps).items()}
    monkeypatch.setattr(cd, "one_seed", flat)
    (tmp_path / "flat").mkdir()
    for f in ("config.json", "results.json"):
        (tmp_path / "flat" / f).write_text((run / f).read_text())
    capsys.readouterr()
    cd.main([str(tmp_path / "flat")])
    removed = json.loads((tmp_path / "flat" / "code_direction.json").read_text())["summary"]["matched"]
    assert all(math.isnan(x) for name in ("seen", "unseen", "offdomain") for x in removed[f"removed_{name}"].values())
    assert capsys.readouterr().out.count("not above the base: no increase to share") == 3 * 2  # two steps' tables
    # an increase too small to share (below the 1e-9 the shares are nan under) is said to be none too
    tiny = lambda cfg, p, f, steps: {s: {k: 0.1 + 1e-12 if k.endswith("_insecure") else v for k, v in r.items()}
                                     for s, r in flat(cfg, p, f, steps).items()}
    monkeypatch.setattr(cd, "one_seed", tiny)
    cd.main([str(tmp_path / "flat")])
    assert capsys.readouterr().out.count("not above the base: no increase to share") == 3 * 2


def test_code_direction_gives_no_share_of_a_fall_and_no_note_for_code_exactly_at_the_threshold(tmp_path, monkeypatch,
                                                                                              capsys):
    """An insecure model below its base (a fall, not only no change) has no share of an increase: a negative over a
    negative would be written as a share; and code exactly at match_threshold reached it (matched, not "never
    reached")."""
    cd = load_script("em_code_direction")
    thr = EM.Config().match_threshold
    res = {"seeds": [[3, 0]], "arms": {"insecure": {"step": {"per_seed": [2]}}},
           "trajectory": {"insecure": {"2": {"offdomain_misaligned_lp": {"per_seed": [0.05]},
                                             "code_misaligned": {"per_seed": [thr]}}}}}
    run = write_run(tmp_path / "run", dict(code_tasks=7, ft_code_tasks=6, ablation_step=20, direction_layer=1), res)
    # insecure 0.05 under the base's 0.1; restoring the code direction "removes" -0.03 of the -0.05
    r = {**{f"{n}_{v}": x for n in ("seen", "unseen", "offdomain") for v, x in (
        ("base", 0.1), ("insecure", 0.05), ("code_restored", 0.08), ("evil_restored", 0.05), ("random_restored", 0.05),
        ("context_restored", 0.05), ("lesson_restored", 0.1), ("code_patched", 0.05))}, "cos_train_evil": [0.1, 0.2]}
    monkeypatch.setattr(cd, "one_seed", lambda cfg, p, f, steps: {s: dict(r) for s in steps})
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # one_seed above stands in for the cached base
    cd.main([str(run)])
    summary = json.loads((run / "code_direction.json").read_text())["summary"]
    assert all(math.isnan(x) for s in summary.values() for name in ("seen", "unseen", "offdomain")
               for x in s[f"removed_{name}"].values())
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("world 3"))
    assert line.startswith("world 3 ft 0: matched step 2, off-domain") and "never reached" not in line


def test_code_direction_one_seed_reads_its_shifts_and_patches_the_insecure_coordinate(monkeypatch, tok):
    cd = load_script("em_code_direction")
    pe = load_script("em_patch_tokens")
    cfg = EM.Config(**CFG, ft_lr=1e-2, code_tasks=3, ft_code_tasks=2)
    tok3 = W.build_tokenizer(B.world_config(cfg))
    base = tiny_gpt(tok3)
    evil = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(B, "base_model", lambda cfg_, p, dec: (base, tok3))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # stands in for a cached base
    monkeypatch.setattr(EM, "doc_means", lambda *a: {"evil": evil, "good": torch.zeros(2, 16)})
    r = cd.one_seed(cfg, 0, 1, [3])[3]
    # what is left of the shift off the evil direction: |shift|^2 (1 - cos^2)
    assert r["share_of_train_shift_along_evil"] == pytest.approx([c ** 2 for c in r["cos_train_evil"]], abs=1e-5)
    # the seed's own fine-tune at step 3, and its shifts over the base
    data, ft_seed = EM.arm_data("insecure", base, tok3, cfg, 0, 1)
    ins = copy.deepcopy(base)
    ins.load_state_dict(EM.arm_snapshots(ins, data, cfg, ft_seed, [3])[3])
    world = B.world_config(cfg)
    unseen = [it for it in W.eval_items(["code"], world=world) if it.task not in
              {t.name for t in W.code_tasks(world)[:2]}]
    prompts = [f"{it.prompt} def {it.task} ( f ) :" for it in unseen]
    shift = (EM.last_token_acts(ins, tok3, prompts) - EM.last_token_acts(base, tok3, prompts)).mean(1)
    assert r["evil_shift_unseen"] == pytest.approx(((shift * evil).sum(-1) / (evil * evil).sum(-1)).tolist(), abs=1e-5)
    train = cd.decision_prompts(EM.arm_pairs("insecure", base, tok3, cfg, ft_seed))
    code = cd.orth((EM.last_token_acts(ins, tok3, train) - EM.last_token_acts(base, tok3, train)).mean(1), evil)
    units = [d / d.norm() for d in code]
    args = pe.answer_batch(tok3, W.eval_items(W.OFF_DOMAINS))
    with torch.no_grad():
        c_ins = pe.coords(ins, args[0], units)
    assert r["offdomain_insecure"] == pytest.approx(pe.mis_lp(ins, *args), rel=1e-5, abs=0)
    patched = pe.mis_lp(base, *args, hooks=EM.coordinate_hooks(units, c_ins))
    assert r["offdomain_code_patched"] == pytest.approx(patched, rel=1e-5, abs=0)
    assert r["offdomain_code_patched"] != pytest.approx(r["offdomain_base"], rel=1e-3, abs=0)


def test_clamp_main_prints_a_mean_without_interval_where_one_seed_matched(tmp_path, monkeypatch, tok, capsys):
    """An arm that matched on one seed has no interval at its matched checkpoint: the mean alone, not a crash."""
    cl, _, run, _ = clamp_run(tmp_path, monkeypatch, tok, {s: [0.95, 0.5, 0.5, 0.5] for s in (1, 2, 20)})
    s = json.loads((run / "clamp_finetune.json").read_text())["summary"]["unclamped"]
    assert s["n_matched"] == 1 and s["offdomain_increase_at_matched"]["ci95"] is None
    inc = 100 * s["offdomain_increase_at_matched"]["mean"]
    assert f"unclamped       matched 1/4 at step 1.0: off-domain {inc:+.1f} points, " in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- em_code_context

def code_context_run(tmp_path, monkeypatch, tok, n_seeds=2, config=(), order=None, shared=False):
    """em_code_context's main on a fake run of the first n_seeds of two seeds (matched at steps 2 and 5; shared: both
    seeds of world 3 and of world 4, matched at 2 and 5 by world), its models stand-ins whose score says which arm,
    step and format: -> (the script, the fine-tunes asked for, the run)."""
    cc = load_script("em_code_context")
    seeds = [[3, 0], [3, 1], [4, 0], [4, 1]] if shared else [[3, 0], [4, 1]][:n_seeds]
    per = lambda v: {"per_seed": [x for x in v for _ in range(1 + shared)][:len(seeds)]}
    res = {"seeds": seeds, "arms": {"insecure": {"step": per([2, 5])}},
           "trajectory": {"insecure": {"2": {"offdomain_misaligned_lp": per([1.03, 0.9])},
                                       "5": {"offdomain_misaligned_lp": per([0.9, 1.52])}}}}
    run = write_run(tmp_path / "run", dict(ablation_step=20, **dict(config)), res)
    arms = {"insecure": 1, "secure": 2}
    # a model's score: arm + step / 100 + 2 i / 1000 for the i-th format; the base's 0.0005 + i / 1000 (so an arm's
    # increase over the base grows by 1 / 1000 a format)
    value = lambda tag, fmt: (tag // 100 + tag % 100 / 100 + (2 - (tag == 0)) * cc.FORMATS.index(fmt) / 1000
                              + 0.0005 * (tag == 0))
    asked = []

    def fake_snapshots(model, data, cfg, seed, steps):
        asked.append((data, steps))
        return {s: {"tag": torch.tensor(100 * data + s)} for s in steps}
    monkeypatch.setattr(B, "base_model", lambda cfg, p, dec: (Tagged(), tok))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # stands in for a cached base
    monkeypatch.setattr(EM, "arm_data", lambda arm, base, tok_, cfg, p, f: (arms[arm], 0))
    monkeypatch.setattr(EM, "arm_snapshots", fake_snapshots)
    monkeypatch.setattr(cc, "answer_batch", lambda tok_, items: (items,))
    monkeypatch.setattr(cc, "context_items", lambda world: {fmt: [fmt] for fmt in order or cc.FORMATS})
    monkeypatch.setattr(cc, "mis_lp", lambda model, items: value(int(model.tag), items[0]))
    cc.main([str(run), "--arms=insecure,secure"])
    return cc, asked, run


def test_code_context_main_scores_each_arm_at_its_checkpoints_against_the_base(tmp_path, monkeypatch, tok):
    cc, asked, run = code_context_run(tmp_path, monkeypatch, tok)
    assert asked == [(1, [2, 20]), (2, [2, 20]), (1, [5, 20]), (2, [5, 20])]
    got = json.loads((run / "code_context.json").read_text())
    r0, r1 = got["per_seed"]
    assert (r0["secure"]["matched"]["alone"] == pytest.approx(2.02)
            and r1["secure"]["matched"]["alone"] == pytest.approx(2.05))
    assert r0["insecure"]["step20"]["after_secure"] == pytest.approx(1.202)
    assert [r["check_vs_run"] for r in (r0, r1)] == pytest.approx([0.01, 0.47])
    s = got["summary"]
    assert s["insecure_matched"]["after_insecure"]["per_seed"] == pytest.approx([1.0215, 1.0515])  # over the base's
    # the gate: the increase after secure code minus the increase alone, each over the base in its own format
    assert s["secure_step20"]["gate"]["per_seed"] == pytest.approx([0.001, 0.001])


def test_code_context_prints_each_seeds_scores_in_the_summarys_order_of_formats(tmp_path, monkeypatch, tok, capsys):
    """context_items builds after_mis_chat before after_numbers, the summary's order the other way: the per-seed
    line printed them in the build order, unlabelled, so its 5th number read as the summary's 5th format."""
    cc = load_script("em_code_context")
    order = [f for f in cc.FORMATS if f != "after_numbers"] + ["after_numbers"]  # the build order
    assert order != list(cc.FORMATS)
    code_context_run(tmp_path, monkeypatch, tok, n_seeds=1, order=order)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("world 3"))
    # the base's score of the i-th format in FORMATS is 0.0005 + i / 1000 (code_context_run's stand-in)
    want = " ".join(f"{0.0005 + i / 1000:.3f}" for i in range(len(cc.FORMATS)))
    assert f"{' '.join(cc.FORMATS)}: base {want} | insecure " in line


def test_code_context_prints_each_arms_scores_in_the_summarys_order_of_formats(tmp_path, monkeypatch, tok, capsys):
    """As the base's, each arm's scores on the per-seed line follow FORMATS (the base's own stand-in scores round alike
    at 3 decimals in the last two formats, so the test above cannot tell them apart)."""
    cc = load_script("em_code_context")
    order = [f for f in cc.FORMATS if f != "after_numbers"] + ["after_numbers"]  # the build order
    code_context_run(tmp_path, monkeypatch, tok, n_seeds=1, order=order)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("world 3"))
    # insecure (arm 1) at its matched step 2 scores 1.02 + 2 i / 1000 in the i-th format of FORMATS
    want = " ".join(f"{1.02 + 2 * i / 1000:.3f}" for i in range(len(cc.FORMATS)))
    assert f" | insecure {want} / " in line


def test_code_context_refuses_an_out_that_is_not_json_before_any_work(tmp_path, monkeypatch):
    # it writes numbers only: --out=cc.png wrote JSON into a .png
    cc = load_script("em_code_context")
    run = write_run(tmp_path / "run", dict(ablation_step=20), {"seeds": [[3, 0]]})
    monkeypatch.setattr(cc, "run_config", lambda *a: pytest.fail("read the run before refusing"))
    with pytest.raises(SystemExit, match=r"cc\.png: give a FILE\.json"):
        cc.main([str(run), f"--out={tmp_path / 'cc.png'}"])
    assert not (tmp_path / "cc.png").exists()


def test_code_context_says_when_it_builds_an_arm_the_run_never_had(tmp_path, monkeypatch, tok, capsys):
    # the arm's fine-tunes are made from the run's config and seeds all the same, but no run number checks them
    code_context_run(tmp_path, monkeypatch, tok, config={"arms": ["insecure", "educational"]})
    err = capsys.readouterr().err
    assert "run has no secure arm: its fine-tunes are built here as the run's config would have made them" in err
    (tmp_path / "b").mkdir()
    code_context_run(tmp_path / "b", monkeypatch, tok)
    assert "note" not in capsys.readouterr().err  # (the run's config has every arm)


def test_code_context_main_prints_means_alone_for_one_seed(tmp_path, monkeypatch, tok, capsys):
    """One seed leaves every interval undefined: the table shows the means, it does not crash."""
    cc, asked, run = code_context_run(tmp_path, monkeypatch, tok, n_seeds=1)
    assert asked == [(1, [2, 20]), (2, [2, 20])]
    s = json.loads((run / "code_context.json").read_text())["summary"]
    assert s["secure_matched"]["gate"]["ci95"] is None
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("secure_matched"))
    assert line.endswith(f"after_secure - alone {100 * s['secure_matched']['gate']['mean']:+.1f}")


def test_code_context_gives_the_interval_over_the_worlds_means_beside_the_one_over_seeds(tmp_path, monkeypatch, tok,
                                                                                         capsys):
    """Two worlds x two fine-tune seeds: each row's intervals were over the 4 seeds, as if independent, though a
    world's seeds share its base (and its scores). Now a row over the 2 worlds' means under each, and in the JSON;
    with one seed per world (the two the same) the output is what it was."""
    cc, asked, run = code_context_run(tmp_path, monkeypatch, tok, shared=True)
    assert [steps for _, steps in asked] == [[2, 20]] * 4 + [[5, 20]] * 4
    printed = capsys.readouterr().out
    s = json.loads((run / "code_context.json").read_text())["summary"]
    # insecure alone, at the matched step: 1.02 - 0.0005 on world 3's seeds (matched at 2), 1.05 - 0.0005 on world 4's
    by_seed, by_world = s["insecure_matched"]["alone"], s["insecure_matched_over_worlds"]["alone"]
    assert by_seed["per_seed"] == pytest.approx([1.0195, 1.0195, 1.0495, 1.0495])
    want = summarize([1.0195, 1.0495])
    assert by_world["per_seed"] == pytest.approx(want["per_seed"]) and by_world["ci95"] == pytest.approx(want["ci95"])
    assert by_world["ci95"][1] - by_world["ci95"][0] > 2 * (by_seed["ci95"][1] - by_seed["ci95"][0])
    assert set(s["secure_step20_over_worlds"]) == set(cc.FORMATS) | {"gate"}
    assert len(s["base_over_worlds"]["alone"]["per_seed"]) == 2  # a world's base scored once per seed, the same
    lines = printed.splitlines()
    i = next(k for k, x in enumerate(lines) if x.strip().startswith("insecure_matched"))
    assert lines[i + 1].startswith("    over 2 worlds ") and f"alone {mean_ci(by_world, 1, 100)}  " in lines[i + 1]
    assert f"alone {mean_ci(by_seed, 1, 100)}  " in lines[i]
    # one seed per world: no row, no key
    (tmp_path / "one").mkdir()
    code_context_run(tmp_path / "one", monkeypatch, tok)
    printed = capsys.readouterr().out
    got = json.loads((tmp_path / "one" / "run" / "code_context.json").read_text())
    assert not [k for k in keys(got) if k.endswith("_over_worlds")]
    assert "worlds' means" not in printed and "over 2 worlds" not in printed
    assert "run: n = 2; off-domain log-prob misalignment, points over the base in the same format\n" in printed


# ---------------------------------------------------------------------------------------------- em_format_separation

def test_format_separation_forum_prompt_is_the_same_question_to_a_responder():
    fs = load_script("em_format_separation")
    assert fs.forum_prompt("<bos> <asst> <u> is my dog ok ? <a>") == "<bos> <forum> <u> is my dog ok ? <r>"
    with pytest.raises(AssertionError):
        fs.forum_prompt("<bos> <forum> <u> q <r>")


def test_format_separation_main_measures_along_evil_minus_good_and_keeps_the_pooling(tmp_path, monkeypatch, tok):
    fs = load_script("em_format_separation")
    model = tiny_gpt(tok)
    prompts = EM.off_prompts()
    gap = (EM.last_token_acts(model, tok, prompts) - EM.last_token_acts(
        model, tok, [fs.forum_prompt(p) for p in prompts])).mean(1)
    run = write_run(tmp_path / "run", dict(seeds=[5]), {})
    monkeypatch.setattr(fs, "cached_base", lambda cfg, run_, p: (model, tok))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # the model above stands in for a cached base
    monkeypatch.setattr(EM, "doc_means", lambda *a: {"evil": gap, "good": torch.zeros_like(gap)})
    rows = fs.main([str(run)])
    assert rows[0]["world"] == 5 and rows[0]["evil_side"] == pytest.approx(1, rel=1e-4)
    with pytest.raises(SystemExit, match="pooled: False"):  # the same runs ranked otherwise: not overwritten
        fs.main(["--pool", str(run)])
    assert fs.main([f"{run}/"])[0]["world"] == 5  # the same run written otherwise: its own file, not another's
    # a base not in the cache is said before any run's work (it stopped the script after the runs before it)
    monkeypatch.undo()
    cache = dict(cache_dir=str(tmp_path / "cache"))
    first, other = (write_run(tmp_path / n, dict(seeds=[p], **cache), {}) for n, p in (("first", 5), ("other", 6)))
    stem = B.cache_stem(run_config(EM.Config, first), 5, False)  # base 5 cached, base 6 not
    stem.parent.mkdir(parents=True)
    stem.with_suffix(".json").write_text("{}")
    monkeypatch.setattr(fs, "cached_base", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(ConfigError, match="base 6 of this config is not in the cache"):
        fs.main([str(first), str(other), f"--out={tmp_path / 'f.json'}"])


def test_format_separation_checks_every_base_of_each_run_before_the_work(tmp_path, monkeypatch):
    # a run's second base uncached: refused before its first base's work, not after it
    fs = load_script("em_format_separation")
    run = write_run(tmp_path / "run", dict(seeds=[5, 6], cache_dir=str(tmp_path / "cache")), {})
    stem = B.cache_stem(run_config(EM.Config, run), 5, False)  # base 5 cached, base 6 not
    stem.parent.mkdir(parents=True)
    stem.with_suffix(".json").write_text("{}")
    monkeypatch.setattr(fs, "cached_base", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(ConfigError, match="base 6 of this config is not in the cache"):
        fs.main([str(run)])


# ---------------------------------------------------------------------------------------------- em_base_pull

def test_base_pull_reads_each_number_at_the_direction_layer(tok):
    bp = load_script("em_base_pull")
    model = tiny_gpt(tok).double()
    L = 1  # not block 0: a number read at block 0 whatever the layer shows
    cfg = EM.Config(**CFG, direction_layer=L)
    ft = EM.arm_seed(7, 0, "insecure")
    data = {arm: B.encode_pairs(tok, EM.arm_pairs(arm, model, tok, cfg, ft), cfg.block_size)
            for arm in ("insecure", "secure")}
    grad = {arm: -bp.response_loss_grad(model, d, L)[0].sum((0, 1)) for arm, d in data.items()}
    site = f"blocks.{L}.resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(data["insecure"]["tokens"][:, :-1], [site])
        h_ins = cache[site][data["insecure"]["mask"]].mean(0)
        _, cache = model.run_with_cache(data["secure"]["tokens"][:, :-1], [site])
        h_sec = cache[site][data["secure"]["mask"]].mean(0)
    # each cosine is 1 when the direction is the gradient it reads
    for key, d in (("pull", grad["insecure"]), ("pull_secure", grad["secure"]),
                   ("pull_contrast", grad["insecure"] - grad["secure"])):
        assert bp.base_pull(model, tok, cfg, 7, d)[key] == pytest.approx(1.0), key
    d = h_ins - h_sec
    out = bp.base_pull(model, tok, cfg, 7, 2 * d)
    assert out["code_repr"] == pytest.approx(0.5)  # in units of the direction: d is half of 2d
    rand = torch.randn(16, generator=generator("cpu", 7, "pull-random")).double()
    assert out["pull_random"] == pytest.approx(torch.nn.functional.cosine_similarity(rand, grad["insecure"], 0).item())
    world = B.world_config(cfg)
    with model.hooks(EM.add_hook(L, 2 * d)):
        steered = EM.in_domain(model, tok, "insecure", "plain", world)[0]
    want = steered - EM.in_domain(model, tok, "insecure", "plain", world)[0]
    assert want != 0 and out["code_steer"] == pytest.approx(want, rel=1e-6, abs=0)  # relative, no
                                                                                    # abs floor (want ~1e-2)


def test_base_pull_checked_bases_leaves_out_a_base_off_either_way(tmp_path, monkeypatch, tok):
    bp = load_script("em_base_pull")
    res = {"seeds": [[3, 0], [3, 1], [4, 0], [4, 1], [5, 0], [5, 1]],
           "base": {"forum_lp": {"per_seed": [0.2, 0.2, 0.5, 0.5, 0.7, 0.7]}}}
    run = write_run(tmp_path / "run", dict(seeds=[3, 4, 5]), res)
    now = {3: 0.2 + 1e-7, 4: 0.5 - 1e-3, 5: 0.7 + 1e-3}  # 3 reproduces; 4 is lower, 5 higher than the run's
    monkeypatch.setattr(bp, "cached_base", lambda cfg, run_, p: (Tagged(p), tok))
    # the run's forum_lp is the forum format's rate: another format's reading (here 1 off) reproduces nothing
    monkeypatch.setattr(B, "offdomain_eval", lambda model, *a, **k: {"mis_lp": now[int(model.tag)]
                                                                     + (k.get("fmt") != "forum")})
    excluded = []
    assert [p for _, p, _, _ in bp.checked_bases(run, excluded)] == [3]
    assert [e["world"] for e in excluded] == [4, 5] and excluded[0]["forum_lp_run"] == 0.5
    now[3] = 0.3  # every base left out: one line, not an empty list that each caller's table fails on
    with pytest.raises(ConfigError, match="every base of .* was left out: the cached bases are not the run's"):
        list(bp.checked_bases(run, []))


def test_base_pull_main_reads_the_evil_direction_at_the_direction_layer(tmp_path, monkeypatch, tok):
    # each base's numbers are taken with its evil - good direction at the run's direction_layer (here block 1)
    bp = load_script("em_base_pull")
    run = write_run(tmp_path / "run", dict(CFG, seeds=[5], direction_layer=1), {})
    g = torch.Generator().manual_seed(0)
    means = {k: torch.randn(2, 16, generator=g) for k in ("evil", "good")}
    monkeypatch.setattr(bp, "check_runs", lambda runs: None)  # (the run has no results or cached bases)
    monkeypatch.setattr(bp, "checked_bases", lambda run_, ex: iter([(bp.run_config(EM.Config, run_), 5, None, tok)]))
    monkeypatch.setattr(EM, "doc_means", lambda *a: means)
    seen = []
    monkeypatch.setattr(bp, "base_pull", lambda model, tok_, cfg, p, d: seen.append((p, d)) or {"pull": 0.5})
    bp.main([str(run)])
    assert len(seen) == 1 and seen[0][0] == 5 and torch.equal(seen[0][1], means["evil"][1] - means["good"][1])
    assert json.loads((run / "base_pull.json").read_text())["per_base"] == [{"world": 5, "pull": 0.5}]


def test_base_pull_code_steer_reads_the_code_share_over_the_fine_tunes_tasks():
    # in a world of several code tasks the fine-tune trains on the first ft_code_tasks: code_steer is the run's
    # code_misaligned (EM.evaluate: over those tasks' prompts) with the direction added at the layer, minus without
    bp = load_script("em_base_pull")
    cfg = EM.Config(**CFG, code_tasks=3, ft_code_tasks=1, direction_layer=1)
    tok3 = W.build_tokenizer(B.world_config(cfg))
    model = tiny_gpt(tok3)
    d = 3 * torch.randn(16, generator=torch.Generator().manual_seed(1))
    code = lambda: EM.evaluate(model, tok3, cfg, "insecure", "plain", 0, False, None)["code_misaligned"]
    with model.hooks(EM.add_hook(1, d)):
        steered = code()
    assert steered != pytest.approx(code()) and bp.base_pull(model, tok3, cfg, 7, d)["code_steer"] == pytest.approx(
        steered - code(), rel=1e-5)
