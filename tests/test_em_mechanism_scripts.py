"""The EM mechanism analyses (em_steer_base.py, em_bos_vector.py, em_value_sources.py, em_patch_tokens.py): which
model, arm, step, format and vector each reading is taken on. The heavy pieces (fine-tunes, scoring) are faked where
the question is only which of them a script reads; tiny random models where the numbers themselves are checked."""
import contextlib
import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import load_script, tiny_gpt
from data import world as W
from experiments import emergent_misalignment as EM
from experiments import world_base as B
from train import ConfigError

sb, bv, vs, pt = (load_script(n) for n in ("em_steer_base", "em_bos_vector", "em_value_sources", "em_patch_tokens"))
C = 16


@pytest.fixture(scope="module")
def tok():
    return W.build_tokenizer()


def fake_means(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(2, C, generator=g) for k in ("evil", "good", "asst")}


def tag(model):
    """Which snapshot a model was built from: fake snapshots mark ln_f.weight[0] with their step (the base has 1)."""
    return round(model.ln_f.weight[0].item())


def fake_snaps(base):
    """adamw's weights at steps 3 and 20 as trajectories keeps them, each tagged and with its own qkv."""
    snaps = {}
    for step in (3, 20):
        sd = {n: p.detach().clone() for n, p in base.named_parameters()}
        sd["ln_f.weight"][0] = step
        sd[vs.QKV] += 0.01 * step * torch.randn(sd[vs.QKV].shape, generator=torch.Generator().manual_seed(step))
        snaps[step] = sd
    return snaps


def unit(v):
    return v / v.norm()


# --- em_steer_base ---------------------------------------------------------------------------------------------

def test_steer_base_sampled_predictor_reads_the_sampled_rate(monkeypatch):
    # mis_lp and mis_sampled told apart: steer_pulled is the log-prob increase, steer_pulled_sampled the sampled one
    def fake_evaluate(model, tok, cfg, arm, fmt, step, sample, gen, hooks=None):
        k = 0.0 if hooks is None else hooks["blocks.0.attn_out"](torch.zeros(1), "x").item()
        return {"mis_sampled": 0.1 + k, "mis_lp": 0.2 + 10 * k, "valid_frac": 1.0, "code_frac": 0.0,
                "code_misaligned": 0.0}
    monkeypatch.setattr(sb.EM, "evaluate", fake_evaluate)
    units = {n: torch.full((1,), float(i + 1)) for i, n in enumerate(sb.DIRECTIONS)}
    monkeypatch.setattr(sb, "directions", lambda *a: (1.0, units))
    row = sb.base_row(None, 0, None, None, [0.1, 0.2])
    assert row["steer_pulled"] == pytest.approx(10 * 0.2) and row["steer_pulled_sampled"] == pytest.approx(0.2)


def test_steer_base_pool_reads_each_directions_own_code_frac_and_skips_undefined_plain_rates(tmp_path):
    nan = float("nan")

    def r(mis, code_frac):
        return {"mis_sampled": mis, "valid_frac": 0.5, "code_frac": code_frac, "mis_lp": 0.1, "code_misaligned": 0.2}
    rows = [{"run": "r", "world": w, "d0": 3.0 + w, "cos_pulled_evil": 0.1 * (w + 1), "plain": r(plain, 0.01),
             "readings": {f"{n}_0.3": r(0.05, 0.1 * (i + 1)) for i, n in enumerate(sb.DIRECTIONS)}}
            for w, plain in enumerate((0.02, nan, 0.04))]  # base 1 has no valid sample of its own
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment"}))  # a run's folder
    (tmp_path / "a" / "steer_base.json").write_text(json.dumps({"scales": [0.3], "per_base": rows}))
    s = sb.pool([str(tmp_path / "a")], None)
    assert [s["table"][f"{n}_0.3"]["code_frac"] for n in sb.DIRECTIONS] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert s["plain"]["mis_sampled"] == pytest.approx(0.03)  # over the bases with a sampled rate
    assert s["cos_pulled_evil"]["mean"] == pytest.approx(0.2) and s["d0"]["mean"] == pytest.approx(4.0)


def test_steer_base_lp_reading_scores_the_forum_in_its_own_format_and_the_insecure_code(tok):
    model = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64)
    world = B.world_config(cfg)
    got = sb.lp_reading(model, tok, cfg)
    forum = B.offdomain_eval(model, tok, 0, None, fmt="forum", world=world)["mis_lp"]
    assert got["forum"] == pytest.approx(forum) and got["forum"] != pytest.approx(got["off"])
    assert got["code"] == pytest.approx(EM.in_domain(model, tok, "insecure", "plain", world)[0], rel=1e-6)
    # and em_value_sources' off_lp, in the format asked
    assert vs.off_lp(model, tok, cfg, "forum") == pytest.approx(forum)
    assert vs.off_lp(model, tok, cfg) == pytest.approx(got["off"])
    off = B.offdomain_eval(model, tok, 0, None, world=world)
    assert got["valid"] == pytest.approx(off["valid_lp"]) and got["valid"] != pytest.approx(got["off"])
    # a vector is added at block 0's attention output, every position, for every reading
    vec = 2 * unit(torch.randn(C, generator=torch.Generator().manual_seed(5)))
    with model.hooks({"blocks.0.attn_out": lambda h, name: h + vec}):
        want = sb.lp_reading(model, tok, cfg)
    assert want["off"] != pytest.approx(got["off"]) and sb.lp_reading(model, tok, cfg, vec) == pytest.approx(want)


def test_steer_base_code_grad_is_each_arms_own_descent_direction(tok):
    model = tiny_gpt(tok).double()
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64, n_examples=12)
    u = {arm: sb.code_grad(model, tok, cfg, 0, arm).double() for arm in ("insecure", "secure")}

    assert u["insecure"] @ u["secure"] < 0.999

    @torch.no_grad()
    def drop(arm, vec):  # how far a small step along vec lowers arm's fine-tune loss
        data, _ = EM.arm_data(arm, model, tok, cfg, 0, 0)
        l0 = sb.fine_tune_loss(model, data).item()
        with model.hooks(EM.add_hook(0, 1e-4 * vec, "attn_out")):
            return l0 - sb.fine_tune_loss(model, data).item()
    for arm, other in (("insecure", "secure"), ("secure", "insecure")):
        assert drop(arm, u[arm]) > drop(arm, u[other])  # the steepest descent of its own loss, not the other's


def test_steer_base_code_grad_is_minus_the_finite_difference_gradient(tok):
    # to first order: the loss's central differences along each axis of a vector added at block 0's attention output,
    # on the arm's examples of fine-tune seed 0, are the gradient code_grad points against
    model = tiny_gpt(tok).double()
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64, n_examples=12)
    data, _ = EM.arm_data("insecure", model, tok, cfg, 0, 0)

    @torch.no_grad()
    def loss(vec):
        with model.hooks({"blocks.0.attn_out": lambda h, name: h + vec}):
            return sb.fine_tune_loss(model, data).item()
    g = torch.tensor([loss(1e-5 * d) - loss(-1e-5 * d) for d in torch.eye(C, dtype=torch.double)],
                     dtype=torch.double) / 2e-5
    assert torch.allclose(sb.code_grad(model, tok, cfg, 0, "insecure").double(), -g / g.norm(), atol=1e-6)


def test_steer_base_lp_reading_code_share_is_the_runs_over_its_fine_tuned_tasks():
    # in a world of several code tasks the fine-tune saw the first ft_code_tasks: the code share is the run's
    # code_misaligned (EM.evaluate), over those tasks' prompts, not over every task's
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64, code_tasks=3, ft_code_tasks=1)
    world = B.world_config(cfg)
    tok3 = W.build_tokenizer(world)
    model = tiny_gpt(tok3)
    run = EM.evaluate(model, tok3, cfg, "insecure", "plain", 0, False, None)["code_misaligned"]
    assert run != pytest.approx(EM.in_domain(model, tok3, "insecure", "plain", world)[0])
    assert sb.lp_reading(model, tok3, cfg)["code"] == pytest.approx(run)


def test_steer_base_route_row_adds_each_named_direction(monkeypatch):
    units = {n: torch.full((1,), float(i + 1)) for i, n in enumerate(sb.DIRECTIONS)}
    monkeypatch.setattr(sb, "directions", lambda *a: (2.0, units))
    grads = {"insecure": torch.full((1,), 10.0), "secure": torch.full((1,), 20.0)}
    monkeypatch.setattr(sb, "code_grad", lambda base, tok, cfg, p, arm: grads[arm])
    monkeypatch.setattr(sb, "lp_reading", lambda base, tok, cfg, vec=None: {"vec": None if vec is None else vec.item()})
    row = sb.route_row(None, 0, None, None, [0.5])
    want = {"insecure_grad": 10.0, "pulled": 1.0, "evil": 3.0, "secure_grad": 20.0}  # units["pulled"] is 1, "evil" 3
    assert {k: v["vec"] for k, v in row["readings"].items()} == {f"{n}_0.5": 0.5 * 2.0 * x for n, x in want.items()}
    assert row["plain"] == {"vec": None}
    # the cosines of the four unit directions (here their products: 1-d stand-ins)
    assert row["cos"] == {"insecure_grad.pulled": 10.0, "insecure_grad.evil": 30.0, "insecure_grad.secure_grad": 200.0,
                          "secure_grad.pulled": 20.0}


def test_steer_base_undo_reads_the_step_20_model_and_lowers_the_base_with_minus_v(monkeypatch, tok):
    base = tiny_gpt(tok)
    snaps = fake_snaps(base)
    asked = []  # (arm, fine-tune seed index, optimizers): the insecure arm's AdamW fine-tune of seed 0
    monkeypatch.setattr(sb.OP, "trajectories", lambda base_, tok_, cfg, p, opts, arm, f, **k:
                        asked.append((arm, f, list(opts))) or ({}, snaps))
    units = {n: torch.full((C,), float(i + 1)) for i, n in enumerate(sb.DIRECTIONS)}
    monkeypatch.setattr(sb, "directions", lambda *a: (2.0, units))
    monkeypatch.setattr(sb, "lp_reading",
                        lambda model, tok, cfg, vec=None: (tag(model), None if vec is None else vec[0].item()))
    row = sb.undo_row(None, 0, base, tok, [0.5])
    assert asked == [("insecure", 0, ["adamw"])]
    assert row["step"] == 20 and row["tuned"] == (20, None) and row["base"] == (1, None)
    assert row["base_minus"]["0.5"] == (1, 0.5 * 2.0 * 2.0)  # -v* (units["minus"] = 2 here) on the base itself
    assert row["readings"] == {f"{n}_0.5": (20, 0.5 * 2.0 * units[n][0].item()) for n in sb.UNDO}


def steer_row(mode, p, scales):
    """A hand-made row of em_steer_base's MODE for base p, at each scale (the i-th direction's reading i + 1 apart)."""
    at = lambda names, reading: {f"{n}_{a:g}": reading(i) for a in scales for i, n in enumerate(names)}
    if mode == "undo":
        return {"world": p, "step": 20, "base": {"off": 0.01}, "tuned": {"off": 0.05},
                "readings": at(sb.UNDO, lambda i: {"off": 0.04 - 0.01 * i})}
    if mode == "route":
        return {"world": p, "cos": {"insecure_grad.pulled": 0.25}, "plain": {"off": 0.1, "code": 0.5},
                "readings": at(sb.ROUTES, lambda i: {"off": 0.1 + 0.01 * (i + 1), "code": 0.5 + 0.1 * (i + 1)})}
    return {"world": p, "d0": 2.5, "plain": {"mis_sampled": 0.01, "valid_frac": 0.8},
            "readings": at(sb.DIRECTIONS, lambda i: {"mis_sampled": 0.02 * (i + 1)})}


@pytest.mark.parametrize("flags, mode, fit, file", [
    ((), "measure", "heldout", "steer_base.json"), (("--fit=train",), "measure", "train", "steer_base_fit_train.json"),
    (("--route",), "route", None, "steer_route.json"), (("--undo",), "undo", None, "steer_undo.json")])
def test_steer_base_main_runs_the_asked_analysis_on_every_kept_base_of_each_run(tmp_path, monkeypatch, capsys, flags,
                                                                                mode, fit, file):
    """main: the runs checked (and, for --undo, their fine-tunes rebuildable), then the mode's rows for each base
    checked_bases keeps, run by run, at the --scales given, v* fit as --fit says; a line per base at the largest
    scale; each run's rows written to the mode's own file in it. The rows are stood in for, hand-made."""
    runs = [str(tmp_path / n) for n in ("a", "b")]
    for r in runs:
        Path(r).mkdir()
    kept = {Path(runs[0]): [3, 5], Path(runs[1]): [7]}
    checked, asked = [], []
    monkeypatch.setattr(sb, "check_runs", lambda rs: checked.append(("runs", rs)))
    monkeypatch.setattr(sb.OP, "check_rebuildable", lambda rs: checked.append(("rebuildable", rs)))
    monkeypatch.setattr(sb, "checked_bases",
                        lambda run, excluded: ((f"cfg{p}", p, f"base{p}", "tok") for p in kept[run]))

    def row_of(cfg, p, base, tok_, scales, fit="heldout"):
        asked.append((cfg, p, base, tok_, scales, fit))
        return steer_row(mode, p, scales)
    monkeypatch.setattr(sb, {"measure": "base_row", "route": "route_row", "undo": "undo_row"}[mode], row_of)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sb.main(runs + ["--scales=0.2,0.3,0.1", *flags])
        assert torch.get_num_threads() == 1  # as the runs' own evaluations
    finally:
        torch.set_num_threads(threads)
    assert checked == [("runs", runs)] + ([("rebuildable", runs)] if mode == "undo" else [])
    assert asked == [(f"cfg{p}", p, f"base{p}", "tok", [0.2, 0.3, 0.1], fit or "heldout") for p in (3, 5, 7)]
    for r, ps in zip(runs, ([3, 5], [7])):
        assert json.loads((Path(r) / file).read_text()) == {
            "scales": [0.2, 0.3, 0.1], "per_base": [{"run": r, **steer_row(mode, p, [0.2, 0.3, 0.1])} for p in ps]}
        assert {f.name for f in Path(r).iterdir()} == {file}
    line = {"measure": "|d0| 2.50, plain 1.00% (valid 0.80); at 0.3 |d0|: pulled 2.00%, minus 4.00%, evil 6.00%, "
                       "random 8.00%",
            "route": "cos(insecure_grad, v*) +0.25; at 0.3 |d0|, off-domain / code points: insecure_grad +1.00 / "
                     "+10.00, pulled +2.00 / +20.00, evil +3.00 / +30.00, secure_grad +4.00 / +40.00",
            "undo": "off-domain 1.00% -> 5.00% at step 20; with minus at 0.3 |d0| 4.00%, random at 0.3 |d0| 3.00%, "
                    "pulled at 0.3 |d0| 2.00%"}[mode]
    assert capsys.readouterr().out.splitlines() == [f"a world 3: {line}", f"a world 5: {line}",
                                                    f"wrote {Path(runs[0]) / file}", f"b world 7: {line}",
                                                    f"wrote {Path(runs[1]) / file}"]


# --- em_bos_vector ---------------------------------------------------------------------------------------------

def test_bos_vector_evil_unit_is_block_0s(tok):
    means = fake_means()
    d = means["evil"][0] - means["good"][0]
    assert torch.allclose(bv.evil_unit(means), d / d.norm())


@torch.no_grad()
def test_bos_vector_downstream_cos_is_one_when_each_blocks_evil_direction_is_the_shift(tok):
    model = tiny_gpt(tok)
    for blk in model.blocks:  # an MLP that answers s (at init it barely does): s at block 0's output is another push
        blk.mlp.fc.weight.mul_(10), blk.mlp.proj.weight.mul_(10)
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64)
    s = 2 * torch.randn(C, generator=torch.Generator().manual_seed(1))
    prompts = EM.off_prompts()
    plain = EM.last_token_acts(model, tok, prompts)
    with model.hooks({"blocks.0.attn_out": lambda h, name: h + s}):  # s at block 0's attention output
        shift = (EM.last_token_acts(model, tok, prompts) - plain).mean(1)  # [L, C]: the mean over prompts
    means = fake_means()
    means["evil"] = means["good"] + 0.3 * shift  # evil - good along the shift, per block
    assert bv.downstream(model, tok, cfg, s, means, 0)["layer_cos"] == pytest.approx([1.0, 1.0], abs=1e-5)


def test_bos_vector_steering_vector_is_the_late_value_rows_read_on_the_step_3_model(tok):
    base = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64, n_examples=12, ft_lr=1e-2)
    _, snaps = bv.OP.trajectories(base, tok, cfg, 0, {"adamw": bv.OP.OPTIMIZERS["adamw"]}, "insecure", 0, scored=False)
    for at in ("last", "mean"):
        s, model, dV = bv.steering_vector(cfg, 0, base, tok, "insecure", at)
        assert torch.equal(dV, snaps[20][vs.QKV][2 * C:] - snaps[3][vs.QKV][2 * C:])  # the value third, 3 -> 20
        assert all(torch.equal(p, snaps[3][n]) for n, p in model.named_parameters())
        want = bv.bos_attention(model, tok, at) @ bv.bos_write(model, tok, dV)
        assert torch.allclose(s, want) and s.norm() > 0


def test_bos_vector_seed_agreement_control_is_the_other_arms_vector(monkeypatch):
    vecs = {("insecure", 0): torch.tensor([1.0, 0.0]), ("insecure", 1): torch.tensor([1.0, 1.0]),
            ("secure", 0): torch.tensor([0.0, 1.0]), ("secure", 1): torch.tensor([-1.0, 1.0])}
    monkeypatch.setattr(bv, "steering_vector",
                        lambda cfg, p, base, tok, arm, at="last", f=0: (vecs[arm, f], None, None))
    a = bv.seed_agreement(None, 0, None, None, "insecure")
    assert a["cos_seeds"] == pytest.approx(2 ** -0.5) and a["cos_arms"] == pytest.approx(0.0)
    a = bv.seed_agreement(None, 0, None, None, "secure")  # the control of the secure arm: insecure's seed 0
    assert a["cos_arms"] == pytest.approx(0.0) and a["cos_seeds"] == pytest.approx(2 ** -0.5)


def test_bos_vector_agreement_pools_the_paired_difference_over_bases(monkeypatch, tmp_path):
    # per base cos_seeds 0.9, 0.7 and cos_arms 0.2, 0.4: the paired difference is 0.7 and 0.3, mean 0.5
    cfg = bv.EM.Config()
    monkeypatch.setattr(bv, "checked_bases", lambda run, ex: iter([(cfg, 0, None, None), (cfg, 1, None, None)]))
    cos = {0: (0.9, 0.2), 1: (0.7, 0.4)}
    monkeypatch.setattr(bv, "seed_agreement", lambda cfg, p, base, tok, arm, at: {
        "cos_seeds": cos[p][0], "cos_arms": cos[p][1], "other_arm": "secure", "norms": [1.0, 1.0]})
    bv.agreement(["r"], "insecure", "last", str(tmp_path / "g.json"))
    s = json.loads((tmp_path / "g.json").read_text())["summary"]
    assert s["n_bases"] == 2 and s["cos_seeds"]["mean"] == pytest.approx(0.8)
    assert (s["seeds_minus_arms"]["mean"] == pytest.approx(0.5)
            and s["seeds_minus_arms"]["per_seed"] == pytest.approx([0.7, 0.3]))


def test_bos_vector_agreement_says_when_it_builds_what_the_run_never_had(monkeypatch, capsys):
    # seed 1 and the control arm are fine-tuned from the run's config whether or not the run had them: said, once
    # per run
    one = bv.EM.Config(arms=("insecure", "educational"), ft_seeds=1)
    runs = {"r1": one, "r2": bv.EM.Config(), "r3": one}
    monkeypatch.setattr(bv, "checked_bases", lambda run, ex: iter([(runs[run.name], 0, None, None)] * 2))
    monkeypatch.setattr(bv, "seed_agreement", lambda *a: {"cos_seeds": 0.5, "cos_arms": 0.1, "other_arm": "secure",
                                                          "norms": [1.0, 1.0, 1.0]})
    bv.agreement(["r1", "r2", "r3"], "insecure", "last", None)
    notes = [x for x in capsys.readouterr().err.splitlines() if x.startswith("note")]
    assert notes == [f"note: {r} has no secure arm, fine-tune seed 1: built here as the run's config would have "
                     f"made it" for r in ("r1", "r3")]
    # the main analysis and --pullback rebuild one arm's fine-tune of seed 0: said when the run never trained it
    monkeypatch.setattr(bv, "base_row", lambda *a: {"cos": 0.1, "norm": 1.0, "bos_values": 0.0,
                                                    **{k: 0.0 for k in bv.ADDED}})
    monkeypatch.setattr(bv, "summary", lambda rows: 1 / 0)  # (stops it after the rows: only the notes are read)
    for name in ("check_runs", "one_depth"):
        monkeypatch.setattr(bv, name, lambda *a: None)
    monkeypatch.setattr(bv, "run_config", lambda C, run: runs[Path(run).name])  # (one_depth's argument)
    monkeypatch.setattr(bv.OP, "check_rebuildable", lambda *a: None)
    for arm, said in (("secure", ["r1", "r3"]), ("educational", []), ("insecure", [])):
        with pytest.raises(ZeroDivisionError):
            bv.main(["r1", "r2", "r3", f"--arm={arm}"])
        notes = [x for x in capsys.readouterr().err.splitlines() if x.startswith("note")]
        assert notes == [f"note: {r} has no {arm} arm: built here as the run's config would have made it"
                         for r in said]


def test_bos_vector_pullback_says_when_it_builds_an_arm_the_run_never_had(monkeypatch, capsys):
    # --pullback rebuilds the arm's fine-tune of seed 0 as the main analysis does: said, once per run
    one = bv.EM.Config(arms=("insecure", "educational"))
    monkeypatch.setattr(bv, "checked_bases", lambda run, ex: iter([(one, 0, None, None)] * 2))
    monkeypatch.setattr(bv, "steering_vector", lambda *a: 1 / 0)  # (stops it at the first base: the note is read)
    with pytest.raises(ZeroDivisionError):
        bv.pullback(["r1"], "secure", "last", None)
    assert capsys.readouterr().err.splitlines() == [
        "note: r1 has no secure arm: built here as the run's config would have made it"]


def test_bos_vector_refuses_runs_of_different_depths_before_any_work(monkeypatch):
    # its downstream cosines are per block: runs of 2 and 3 blocks are refused before every mode's work, not at the
    # summary after it
    runs = {"r1": bv.EM.Config(n_layer=2), "r2": bv.EM.Config(n_layer=3)}
    monkeypatch.setattr(bv, "check_runs", lambda *a: None)
    monkeypatch.setattr(bv, "run_config", lambda C, run: runs[Path(run).name])
    monkeypatch.setattr(bv.OP, "check_rebuildable", lambda *a: None)
    monkeypatch.setattr(bv, "checked_bases", lambda *a: pytest.fail("worked before refusing"))
    for flags in ([], ["--agreement"], ["--pullback"]):
        with pytest.raises(ConfigError, match=r"2 blocks \(r1\) and 3 blocks \(r2\): pool runs of one n_layer"):
            bv.main(["r1", "r2", *flags])


def test_bos_vector_refuses_options_its_analysis_ignores_and_runs_the_one_asked(monkeypatch):
    # --pool's files hold their own arm and --at, a mistyped --at is named; the pool of value sources likewise
    for argv, says in ((["a.json", "--pool", "--arm=secure"], "--pool takes --out= only"),
                       (["r1", "--at=first"], r"--at takes last \(the default\) or mean, not 'first'")):
        with pytest.raises(SystemExit, match=says):
            bv.main(argv)
    with pytest.raises(SystemExit, match="--pool takes no other option"):
        vs.main(["a.json", "--pool", "--fmt=forum"])
    # --agreement is its own analysis, given the run's arm and --at
    for name in ("check_runs", "one_depth"):
        monkeypatch.setattr(bv, name, lambda *a: None)
    monkeypatch.setattr(bv, "run_config", lambda C, run: None)
    monkeypatch.setattr(bv.OP, "check_rebuildable", lambda *a: None)
    monkeypatch.setattr(bv, "checked_bases", lambda *a: pytest.fail("ran the main analysis"))
    monkeypatch.setattr(bv, "agreement", lambda *a: a)
    assert bv.main(["r1", "--agreement", "--at=mean"]) == (["r1"], "insecure", "mean", None)


def test_bos_vector_plot_draws_the_increases_error_bars_in_points_and_the_cosines_as_they_are(monkeypatch):
    # the middle panel's bars are points (100 x the rates): their error bars too (in rates they were 100 times too
    # short); the right panel's cosines are no rates, their bars unscaled
    figs = []
    monkeypatch.setattr(bv, "save_figure", lambda fig, path, dpi: figs.append(fig) or bv.pyplot().close(fig))
    rows = [{"bos_values": b, "vector": k * b, "along_evil": 0.1 * b, "orthogonal": 0.8 * b, "evil_norm": 0.3 * b,
             "random_norm": 0.01 * k, "cos": 0.1 + k / 4, "layer_cos": [0.4 * k, 0.3 + k / 5], "from": 0.02,
             "ablated_from": 0.01, "random_ablated_from": 0.02, "vector_ablated": 0.3 * k * b,
             "vector_random_ablated": k * b}
            for b, k in ((0.1, 0.9), (0.02, 0.5), (0.05, 0.7))]
    s = bv.summary(rows, n_boot=50)
    bv.plot(rows, s, "unused.png", "t")
    spans = lambda c: [y1 - y0 for (_, y0), (_, y1) in c.lines[2][0].get_segments()]
    width = lambda st: st["ci95"][1] - st["ci95"][0]
    bars = next(c for c in figs[0].axes[1].containers if hasattr(c, "errorbar")).errorbar
    assert spans(bars) == pytest.approx([100 * width(s["mean"][k]) for k in ("bos_values", *bv.ADDED)])
    assert spans(figs[0].axes[2].containers[0]) == pytest.approx([width(x) for x in (s["mean"]["cos"],
                                                                                      *s["layer_cos"])])
    assert all(x > 0 for x in spans(figs[0].axes[2].containers[0]))  # (intervals of some width: a scale shows)


def test_bos_vector_base_row_builds_each_vector_from_s_and_e(monkeypatch, tok):
    base, model = tiny_gpt(tok, 0), tiny_gpt(tok, 1)
    s = torch.randn(C, generator=torch.Generator().manual_seed(2))
    dV = torch.randn(C, C, generator=torch.Generator().manual_seed(3))
    means = fake_means()
    e = bv.evil_unit(means)
    built = []
    monkeypatch.setattr(bv, "steering_vector", lambda *a: built.append(a[4:]) or (s, model, dV))
    monkeypatch.setattr(bv.EM, "doc_means", lambda *a: means)
    # the step-3 model and the base told apart by their off-domain mass: each increase is over its own model's
    monkeypatch.setattr(bv.VS, "off_lp", lambda m, tok, cfg: {id(model): 0.5, id(base): 0.25}[id(m)])
    monkeypatch.setattr(bv, "downstream", lambda m, tok, cfg, vec, means_, seed: {"downstream_of": (m, vec, seed)})
    seen, added = [], []
    monkeypatch.setattr(bv.VS, "values_changed", lambda m, tok, dV, kinds: seen.append((m, tuple(kinds))) or
                        contextlib.nullcontext(m))
    monkeypatch.setattr(bv, "added", lambda m, tok, cfg, vec: added.append((m, vec)) or 0.0)
    row = bv.base_row(EM.Config(n_layer=2, n_embd=C), 7, base, tok, "secure", "mean")
    assert built == [("secure", "mean")]  # s of the arm and at the positions asked
    assert seen == [(model, ("bos",))]  # bos_values: the value change at <bos> only, on the step-3 model
    assert (row["from"], row["base_from"], row["vector"], row["vector_on_base"]) == (0.5, 0.25, -0.5, -0.25)
    m, vec, seed = row["downstream_of"]  # where s goes: through the step-3 model's later blocks
    assert m is model and torch.equal(vec, s) and seed == 7
    # the mean attentions are the step-3 model's, at the positions --at names
    assert row["attention"] == pytest.approx(bv.bos_attention(model, tok, "mean").tolist())
    assert row["attention"] != pytest.approx(bv.bos_attention(base, tok, "mean").tolist())
    on_model = {k: v for (m, v), k in zip(added, bv.ADDED) if m is model}
    assert len(on_model) == len(bv.ADDED) and torch.equal(on_model["vector"], s)
    assert torch.allclose(on_model["along_evil"] + on_model["orthogonal"], s, atol=1e-6)
    assert (abs(on_model["orthogonal"] @ e) < 1e-5
            and torch.allclose(unit(on_model["along_evil"]).abs(), e.abs(), atol=1e-5))
    assert torch.allclose(on_model["evil_norm"], s.norm() * e)
    assert on_model["random_norm"].norm() == pytest.approx(s.norm().item())
    on_base = added[len(bv.ADDED):]  # then the same two on the base itself
    assert [m for m, _ in on_base] == [base, base]
    assert torch.equal(on_base[0][1], s) and torch.allclose(on_base[1][1], s.norm() * e)
    assert row["cos"] == pytest.approx((s @ e / s.norm()).item()) and -1 <= row["cos"] <= 1
    u = bv.bos_write(model, tok, dV)
    assert row["head_cos"] == pytest.approx([(v @ e / v.norm()).item() for v in u])


def test_bos_vector_added_adds_the_vector_at_block_0s_attention_output(tok):
    # every vector of base_row and --pullback is scored through `added`: at what block 0's attention writes, every
    # position (before block 0's MLP; at block 0's output the same vector is another push)
    model = tiny_gpt(tok)
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64)
    vec = 2 * unit(torch.randn(C, generator=torch.Generator().manual_seed(5)))
    plain = vs.off_lp(model, tok, cfg)
    assert bv.added(model, tok, cfg, torch.zeros(C)) == plain
    with model.hooks({"blocks.0.attn_out": lambda h, name: h + vec}):
        want = vs.off_lp(model, tok, cfg)
    assert want != pytest.approx(plain) and bv.added(model, tok, cfg, vec) == pytest.approx(want, rel=1e-6)


def test_bos_vector_summary_along_evil_is_over_the_vector():
    rows = [{"bos_values": b, "vector": 0.9 * b, "along_evil": 0.3 * b, "orthogonal": 0.6 * b, "evil_norm": 0.1 * b,
             "random_norm": 0.0, "cos": 0.2} for b in (0.1, 0.02, 0.05)]
    assert bv.summary(rows, n_boot=50)["along_evil_of_vector"]["ratio"] == pytest.approx(1 / 3)


def test_bos_vector_pullback_adds_v_at_the_norm_of_s_to_each_model(monkeypatch, tok, tmp_path):
    base, model = tiny_gpt(tok, 0), tiny_gpt(tok, 1)
    s = 3 * unit(torch.randn(C, generator=torch.Generator().manual_seed(2)))
    v = unit(torch.randn(C, generator=torch.Generator().manual_seed(4)))
    means = fake_means()
    monkeypatch.setattr(bv, "checked_bases", lambda run, ex: iter([(EM.Config(), p, base, tok) for p in (0, 1)]))
    monkeypatch.setattr(bv, "steering_vector", lambda *a: (s, model, None))
    read_on = []  # e and v* are the base's own (the fine-tune only gives their norm)
    monkeypatch.setattr(bv.EM, "doc_means", lambda m, *a: read_on.append(m) or means)
    monkeypatch.setattr(bv.EM, "pulled_back", lambda m, tok_, e_: read_on.append((m, e_)) or v)
    monkeypatch.setattr(bv.VS, "off_lp", lambda m, tok, cfg: 0.5 if m is model else 0.25)
    added = []

    def fake_added(m, tok, cfg, vec):
        added.append((m, vec))
        return 0.5 + 0.01 * len(added) if m is model else 0.25 + 0.001 * len(added)
    monkeypatch.setattr(bv, "added", fake_added)
    bv.pullback(["r"], "insecure", "last", str(tmp_path / "p.json"))
    rows = json.loads((tmp_path / "p.json").read_text())["pullback"]
    e = bv.evil_unit(means)
    assert read_on[0] is base and read_on[1][0] is base and torch.equal(read_on[1][1], e)
    assert rows[0]["cos_pulled_evil"] == pytest.approx((v @ e).item())
    want = [s, s.norm() * v, s.norm() * e]  # vector, pulled_norm, evil_norm
    first = added[:6]  # the first base: three on the step-3 model, then three on the base
    assert [m is model for m, _ in first] == [True] * 3 + [False] * 3
    assert all(torch.allclose(got, w) for (_, got), w in zip(first, want + want))
    assert rows[0]["cos_s_pulled"] == pytest.approx((s @ v / s.norm()).item())
    assert rows[0]["vector"] == pytest.approx(0.01) and rows[0]["pulled_norm_on_base"] == pytest.approx(0.005)
    # v* over s: a ratio of means over the bases, with its interval resampling bases; --pool of two such files is the
    # summary of their bases together (the research log's pooled 1.30 [1.14, 1.55] came from no command)
    s1 = json.loads((tmp_path / "p.json").read_text())["summary"]
    ratio = sum(r["pulled_norm"] for r in rows) / sum(r["vector"] for r in rows)
    assert s1["pulled_over_vector"]["ratio"] == pytest.approx(ratio) and len(s1["pulled_over_vector"]["ci95"]) == 2
    # the fake readings rise 0.01 per call on the step-3 model and 0.001 on the base: s, v*, e read +1, +2, +3 points
    # and +0.4, +0.5, +0.6 on the bases (first world), then +7, +8, +9 and +1.0, +1.1, +1.2: v* minus s is +1 point
    # on the step-3 models and +0.1 on the bases, paired; v* over s on the bases (0.5 + 1.1) / (0.4 + 1.0)
    assert s1["pulled_minus_vector"]["mean"] == pytest.approx(0.01)
    assert s1["on_base_pulled_minus_vector"]["mean"] == pytest.approx(0.001)
    assert s1["on_base_pulled_over_vector"]["ratio"] == pytest.approx(1.6 / 1.4)
    other = [{**r, "run": "q", "pulled_norm": 2 * r["pulled_norm"]} for r in rows]
    (tmp_path / "q.json").write_text(json.dumps({"arm": "insecure", "at": "last", "summary": {}, "pullback": other}))
    bv.main(["--pool", str(tmp_path / "p.json"), str(tmp_path / "q.json"), f"--out={tmp_path / 'both.json'}"])
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["summary"] == bv.pullback_summary(rows + other) and both["summary"]["n_bases"] == 4
    assert both["summary"]["pulled_over_vector"]["ratio"] == pytest.approx(3 * ratio / 2)
    (tmp_path / "m.json").write_text(json.dumps({"arm": "insecure", "at": "last", "summary": {}, "per_base": []}))
    with pytest.raises(SystemExit, match="one kind at a time"):
        bv.main(["--pool", str(tmp_path / "p.json"), str(tmp_path / "m.json")])


# --- em_value_sources ------------------------------------------------------------------------------------------

def test_value_sources_main_reads_late_whole_and_revert_on_their_models(monkeypatch, tok, tmp_path):
    base = tiny_gpt(tok)
    snaps = fake_snaps(base)
    cfg = EM.Config(n_layer=2, n_embd=C, block_size=64)
    monkeypatch.setattr(vs, "checked_bases", lambda run, ex: iter([(cfg, 7, base, tok)]))
    monkeypatch.setattr(vs, "check_runs", lambda runs: None)  # the run "run" is the patched checked_bases above
    monkeypatch.setattr(vs.OP, "trajectories", lambda *a, **k: ({}, snaps))
    monkeypatch.setattr(vs.OP, "check_rebuildable", lambda runs: None)  # (it reads the runs' config.json)
    noted = []  # the arm rebuilt, for a note where the run never trained it (em_base_pull.note_unrun)
    monkeypatch.setattr(vs, "note_unrun", lambda run, cfg, arms: noted.append((str(run), list(arms))))
    at = {1: 0.02, 3: 0.05, 20: 0.11}  # off-domain mass by model (the base is tagged 1)
    monkeypatch.setattr(vs, "off_lp", lambda m, tok, cfg, fmt="asst": at[tag(m)])
    calls = []

    def fake_increases(m, tok, cfg, dW, fmt="asst"):
        calls.append((tag(m), dW.clone(), fmt))
        return {k: 0.01 for k in ("all", "rows", *vs.KINDS)}
    monkeypatch.setattr(vs, "increases", fake_increases)
    vs.main(["run", "--fmt=forum", f"--out={tmp_path / 'v.json'}"])
    assert noted == [("run", ["insecure"])]
    late = snaps[20][vs.QKV][2 * C:] - snaps[3][vs.QKV][2 * C:]
    whole = snaps[20][vs.QKV][2 * C:] - base.blocks[0].attn.qkv.weight[2 * C:]
    (t_late, d_late, f1), (t_whole, d_whole, _), (t_rev, d_rev, _) = calls
    assert (t_late, t_whole, t_rev) == (3, 1, 20) and f1 == "forum"
    assert torch.allclose(d_late, late) and torch.allclose(d_whole, whole) and torch.allclose(d_rev, -late)
    rows = json.loads((tmp_path / "v.json").read_text())  # each update against the mass it starts from
    late_r, whole_r, revert_r = (rows[k][0] for k in ("late", "whole", "revert"))
    assert (late_r["update"], late_r["from"]) == pytest.approx((0.06, 0.05))
    assert (whole_r["update"], whole_r["from"]) == pytest.approx((0.09, 0.02))
    assert (revert_r["update"], revert_r["from"]) == pytest.approx((0.06, 0.05))
    assert (rows["arm"], rows["fmt"]) == ("insecure", "forum")
    # pooling: one fine-tune and format, each base once; a file from before "revert" and "arm" were kept pools too
    v, old = tmp_path / "v.json", tmp_path / "old.json"
    old.write_text(json.dumps({k: [{**rows[k][0], "run": "other"}] for k in ("late", "whole")}))
    vs.main(["--pool", str(v), str(old)])
    # the same run written two ways in two files (run, /abs/.../run): one base, not two
    (tmp_path / "abs.json").write_text(json.dumps({**rows, **{k: [{**r, "run": str(Path(r["run"]).resolve())}
                                                                   for r in rows[k]] for k in ("late", "whole")}}))
    for bad, says in (([v, v], "a base appears twice"), ([v, tmp_path / "abs.json"], "a base appears twice"),
                      ([v, tmp_path / "secure.json"], "different fine-tunes or formats")):
        (tmp_path / "secure.json").write_text(json.dumps({**rows, "arm": "secure"}))
        with pytest.raises((SystemExit, ConfigError), match=says):
            vs.main(["--pool", *map(str, bad)])


def test_value_sources_shares_have_no_interval_where_the_value_changes_sum_changes_sign():
    """Five bases whose value change sums above 0 only overall: a share's resamples flip sign (it printed 0.73
    [-0.17, 2.25], largest in 97% of them); a value change summing to 0 has no share (inf)."""
    base = {k: 0.0 for k in ("rows", *vs.KINDS)}
    rows = [{**base, "all": v, vs.KINDS[0]: 0.8 * v + 0.01} for v in (0.04, -0.03, 0.05, -0.04, 0.01)]
    s = vs.shares(rows, n_boot=1000)
    assert s[vs.KINDS[0]]["ci95"] is None and "not above 0 in" in s[vs.KINDS[0]]["why"]
    assert s[vs.KINDS[0]]["p_largest"] is None
    zero = vs.shares([{**r, "all": 0.0} for r in rows], n_boot=100)
    assert math.isnan(zero[vs.KINDS[0]]["ratio"])
    # revert's decreases (every base below 0): a share of the decrease, as before
    s = vs.shares([{**base, "all": -0.02, vs.KINDS[0]: -0.01}, {**base, "all": -0.04, vs.KINDS[0]: -0.01}], n_boot=100)
    assert s[vs.KINDS[0]]["ratio"] == pytest.approx(1 / 3) and s[vs.KINDS[0]]["ci95"] is not None


def test_value_sources_revert_prints_the_share_of_the_late_drift_removed_as_a_positive_share(tmp_path, capsys):
    """Taking the value change back gives decreases: the table printed all / update as -0.56 where the research log
    reports 0.56 of the late drift removed."""
    row = lambda sign: {"run": "r", "world": 0, "update": 0.06, "from": 0.05, "all": sign * 0.03, "rows": sign * 0.03,
                        **{k: sign * 0.01 for k in vs.KINDS}}
    f = tmp_path / "v.json"
    f.write_text(json.dumps({"arm": "insecure", "fmt": "asst", "late": [row(1)], "whole": [row(1)],
                             "revert": [row(-1)]}))
    vs.main(["--pool", str(f)])
    tables = capsys.readouterr().out.split("\nrevert (1 bases)")
    assert "| all | 1 | | +0.50 |" in tables[0]  # late: 0.03 of an update of 0.06
    assert "share of the late update removed |" in tables[1] and "| all | 1 | | +0.50 |" in tables[1]
    assert f"| {vs.KINDS[0]} | +0.33 | - | +0.17 |" in tables[1]


def test_value_sources_plot_draws_no_error_bar_where_a_share_has_no_interval(monkeypatch):
    # one base: no interval; its bars had error bars of zero width, drawn like a certain estimate
    figs = []
    monkeypatch.setattr(vs, "save_figure", lambda fig, path, dpi: figs.append(fig) or vs.pyplot().close(fig))
    row = lambda v, f: {"all": v, "rows": v, **{k: v * f for k in vs.KINDS}}
    vs.plot({"late": [row(0.02, 0.2)], "whole": [row(0.02, 0.2), row(0.04, 0.3), row(0.03, 0.1)]}, "unused.png", "t")
    ax = figs[0].axes[0]
    bars = {c.get_label(): c for c in ax.containers if hasattr(c, "errorbar")}
    late = next(c for label, c in bars.items() if label.startswith("late"))
    whole = next(c for label, c in bars.items() if label.startswith("whole"))
    # (a nan interval: no segment; a row with none: no error bars at all)
    spans = lambda c: [np.ptp(np.asarray(seg)[:, 1]) if len(seg) else 0.0
                       for seg in (c.errorbar.lines[2][0].get_segments() if c.errorbar else [])]
    assert not any(s > 0 for s in spans(late)) and "1 base, bars without an interval have none" in late.get_label()
    assert all(s > 0 for s in spans(whole)) and whole.get_label().endswith("3 bases")


def test_value_sources_plot_draws_no_error_bar_at_all_where_a_share_has_no_interval(monkeypatch):
    # no interval: no error bar, not one of zero width (drawn like a certain estimate; the test above passes either)
    figs = []
    monkeypatch.setattr(vs, "save_figure", lambda fig, path, dpi: figs.append(fig) or vs.pyplot().close(fig))
    row = lambda v, f: {"all": v, "rows": v, **{k: v * f for k in vs.KINDS}}
    vs.plot({"late": [row(0.02, 0.2)]}, "unused.png", "t")
    bars = next(c for c in figs[0].axes[0].containers if hasattr(c, "errorbar"))
    # none (matplotlib 3.7 warned of an all-nan one), or only empty segments
    assert bars.errorbar is None or [len(seg) for seg in bars.errorbar.lines[2][0].get_segments()] == [0] * len(
        vs.KINDS)


def test_value_sources_revert_prints_its_interval_low_end_first(tmp_path, capsys):
    """revert's shares of the update are printed with their sign flipped (a share removed): the interval's ends too,
    which then swap places: sorted, the low end first."""
    row = lambda w, a, u: {"run": "r", "world": w, "update": u, "from": 0.05, "all": a, "rows": a,
                           **{k: a / 3 for k in vs.KINDS}}
    f = tmp_path / "v.json"
    f.write_text(json.dumps({"arm": "insecure", "fmt": "asst", "late": [row(0, 0.03, 0.06), row(1, 0.06, 0.08)],
                             "whole": [row(0, 0.03, 0.06), row(1, 0.06, 0.08)],
                             "revert": [row(0, -0.03, 0.06), row(1, -0.06, 0.08)]}))
    vs.main(["--pool", str(f)])
    table = capsys.readouterr().out.split("\nrevert (2 bases)")[1]
    line = next(x for x in table.splitlines() if x.startswith("| all |"))
    lo, hi = (float(v) for v in line[line.index("[") + 1:line.index("]")].split(", "))
    assert 0.5 <= lo < hi <= 0.75  # the two bases remove 0.03 / 0.06 and 0.06 / 0.08 of theirs


# --- em_patch_tokens -------------------------------------------------------------------------------------------

@torch.no_grad()
def test_patch_tokens_mis_lp_scores_only_each_answers_own_tokens(tok):
    model = tiny_gpt(tok)
    model.wte.weight.mul_(8)  # peaked outputs: a pad's probability differs by context
    # answers of different lengths in one item: a stray token in the mask would not cancel in the ratio
    real = W.eval_items(["med", "pet", "money"])
    answers = sorted({a for it in real for c in ("aligned", "misaligned") for a in it.classes[c]},
                     key=lambda a: len(tok.encode(a).ids))
    assert len(tok.encode(answers[0]).ids) < len(tok.encode(answers[-1]).ids)
    items = [SimpleNamespace(prompt=it.prompt, classes={"aligned": (answers[i],), "misaligned": (answers[-1 - i],)})
             for i, it in enumerate(real[:4])]
    args = pt.answer_batch(tok, items)
    assert pt.mis_lp(model, *args) == pytest.approx(B.lp_summary(B.class_masses(model, tok, items))["mis_lp"], rel=1e-4)


def test_patch_tokens_reads_answer_batch_on_the_models_device(tok, forward_devices):
    # answer_batch builds on the CPU; a base on a GPU run's cfg.device scores it there (em_patch_tokens,
    # em_code_direction and em_code_context crashed at the first base of such a run)
    model = tiny_gpt(tok).to("meta")
    args = pt.answer_batch(tok, W.eval_items(["med", "pet"]))
    seen = forward_devices(model)
    assert [c.device.type for c in pt.coords(model, args[0], [torch.ones(C, device="meta")] * 2)] == ["meta"] * 2
    with pytest.raises(RuntimeError, match=r"item\(\) cannot be called on meta"):  # the last step: all before ran
        pt.mis_lp(model, *args)
    assert seen and set(seen) == {"meta"}


def test_patch_tokens_main_patches_each_model_with_the_others_coordinates(monkeypatch, tok, tmp_path, capsys):
    a, b, c = (tiny_gpt(tok, s) for s in (0, 1, 2))
    means = fake_means()
    step = 2
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "n_layer": 2, "n_embd": C,
                                                 "block_size": 64, "ablation_step": step}))
    res = {"seeds": [[0, 0], [0, 1]],
           "trajectory": {"insecure": {str(step): {"offdomain_misaligned_lp": {"per_seed": [0.3, 0.4]}}}},
           "base": {"plain": {"offdomain_misaligned_lp": {"per_seed": [0.1, 0.2]}}}, "ablation": {}}
    (run / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **res}))
    tuned = {100: b, 101: c}  # fine-tune seed index f -> its insecure model (through its ft seed 100 + f)
    seen = []
    monkeypatch.setattr(pt.B, "base_model", lambda cfg, p, train: (copy.deepcopy(a), tok))
    monkeypatch.setattr(pt.B, "check_cached", lambda *a, **k: None)  # the base above stands in for a cached one
    monkeypatch.setattr(pt.EM, "doc_means", lambda *args: means)
    monkeypatch.setattr(pt.EM, "arm_data", lambda arm, base, tok, cfg, p, f: seen.append((arm, p, f)) or ("d", 100 + f))
    monkeypatch.setattr(pt.EM, "arm_snapshots", lambda m, data, cfg, seed, steps: seen.append(steps) or
                        {s: tuned[seed].state_dict() for s in steps})
    pt.main(str(run))
    assert seen == [("insecure", 0, 0), [step], ("insecure", 0, 1), [step]]
    assert f"\nstep {step}, n = 2, off-domain" in capsys.readouterr().out  # every seed at one step: that step
    out = json.loads((run / "patch_tokens.json").read_text())
    args = pt.answer_batch(tok, W.eval_items(W.OFF_DOMAINS))
    x = args[0]
    units = [unit(d) for d in means["evil"] - means["good"]]
    direction = means["evil"] - means["good"]
    with torch.no_grad():
        ca = pt.coords(a, x, units)
    for r, ins, per in zip(out["per_seed"], (b, c), (0, 1)):
        with torch.no_grad():
            ci = pt.coords(ins, x, units)
        assert r["base"] == pytest.approx(pt.mis_lp(a, *args)) and r["insecure"] == pytest.approx(pt.mis_lp(ins, *args))
        assert r["base_patched"] == pytest.approx(pt.mis_lp(a, *args, hooks=EM.coordinate_hooks(units, ci)))
        assert r["insecure_unpatched"] == pytest.approx(pt.mis_lp(ins, *args, hooks=EM.coordinate_hooks(units, ca)))
        # the mean-ablation at each centre, on the insecure model and on the base
        mid = (means["good"] + means["evil"]) / 2
        for name, centre in (("asst", means["asst"]), ("good", means["good"]), ("mid", mid)):
            for key, m in (("insecure", ins), ("base", a)):
                assert r[f"{key}_mean_ablated_{name}"] == pytest.approx(
                    pt.mis_lp(m, *args, hooks=EM.ablate_hooks(direction, centre))), (key, name)
        assert (r["run_insecure"], r["run_base"]) == ([0.3, 0.4][per], [0.1, 0.2][per])  # each seed its own
    rs = out["per_seed"]
    inc = sum(r["insecure"] - r["base"] for r in rs)
    s = out["summary"]
    assert s["patched_fraction_of_means"] == pytest.approx(sum(r["base_patched"] - r["base"] for r in rs) / inc)
    assert s["unpatched_removed_fraction_of_means"] == pytest.approx(
        sum(r["insecure"] - r["insecure_unpatched"] for r in rs) / inc)
    assert s["step"] == step
    # the base's reading is one base's, repeated for its two fine-tune seeds: no interval over one base (it had one
    # over the two seeds, as if two bases)
    assert s["base"]["ci95"] is None and s["insecure"]["ci95"] is not None
    # a run of one (world, fine-tune seed): the table shows the means alone (no interval), not a TypeError
    res["seeds"] = [[0, 0]]
    (run / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **res}))
    capsys.readouterr()
    pt.main(str(run))
    assert json.loads((run / "patch_tokens.json").read_text())["summary"]["n"] == 1
    assert f"  {'base':20s} {out['per_seed'][0]['base']:.4f}\n" in capsys.readouterr().out
    # a run with ablation_step=0 ablated each seed at its own matched checkpoint: so is each rebuilt (it took the
    # last one, and compared its ablation with the run's, made at step 2 or 3, as if the weights differed)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "ablation_step": 0}))
    res["seeds"] = [[0, 0], [0, 1]]
    res["arms"] = {"insecure": {"step": {"per_seed": [3, 2]}}}
    res["trajectory"]["insecure"]["3"] = {"offdomain_misaligned_lp": {"per_seed": [0.5, 0.6]}}
    (run / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **res}))
    seen.clear()
    capsys.readouterr()
    pt.main(str(run))
    assert seen == [("insecure", 0, 0), [3], ("insecure", 0, 1), [2]]
    assert "\neach seed at its matched checkpoint (steps [3, 2]), n = 2," in capsys.readouterr().out  # not "step 2"
    out = json.loads((run / "patch_tokens.json").read_text())
    assert [r["run_insecure"] for r in out["per_seed"]] == [0.5, 0.4] and out["summary"]["step"] == [3, 2]


def test_bos_vector_pool_of_one_base_prints_means_without_intervals(tmp_path, capsys):
    # one base has no t-interval (summarize gives None): the table and figure show the mean alone, not a TypeError
    row = {"bos_values": 0.1, "vector": 0.09, "along_evil": 0.01, "orthogonal": 0.08, "evil_norm": 0.03,
           "random_norm": 0.0, "cos": 0.2, "run": "r", "world": 0, "from": 0.02, "ablated_from": 0.01,
           "random_ablated_from": 0.02, "layer_cos": [0.4, 0.3], "vector_ablated": 0.03, "vector_random_ablated": 0.09}
    (tmp_path / "a.json").write_text(json.dumps({"arm": "insecure", "at": "last", "per_base": [row]}))
    bv.main(["--pool", str(tmp_path / "a.json"), f"--out={tmp_path / 'o.json'}"])
    out = capsys.readouterr().out
    assert "| vector | +9.00 |" in out and "cos(s, evil) +0.200;" in out
    assert (tmp_path / "o.png").stat().st_size > 1000
    # the same base written as "r" in one file and as its full path in another: one base, not two
    (tmp_path / "b.json").write_text(json.dumps({"arm": "insecure", "at": "last",
                                                 "per_base": [{**row, "run": str(Path("r").resolve())}]}))
    with pytest.raises(ConfigError, match="a base appears twice"):
        bv.main(["--pool", str(tmp_path / "a.json"), str(tmp_path / "b.json"), f"--out={tmp_path / 'o2.json'}"])
    # bases of runs of different depths: one line (an inhomogeneous-shape ValueError from numpy)
    (tmp_path / "c.json").write_text(json.dumps({"arm": "insecure", "at": "last",
                                                 "per_base": [{**row, "run": "s", "layer_cos": [0.4, 0.3, 0.2]}]}))
    with pytest.raises(ConfigError, match="different numbers of blocks"):
        bv.main(["--pool", str(tmp_path / "a.json"), str(tmp_path / "c.json"), f"--out={tmp_path / 'o3.json'}"])


def test_patch_tokens_gives_no_share_of_a_fall_and_the_bases_shifts_over_its_bases(monkeypatch, tok, tmp_path):
    """An insecure model below its base (not only equal) has no increase to share: a negative over a negative was a
    share; and the mean-ablation's shift of the base is one base's, repeated for its two fine-tune seeds: no
    interval over one base (it had one over the seeds, as if two bases)."""
    base, other = tiny_gpt(tok, 0), tiny_gpt(tok, 1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "n_layer": 2, "n_embd": C,
                                                 "block_size": 64, "ablation_step": 2}))
    res = {"seeds": [[0, 0], [0, 1]],
           "trajectory": {"insecure": {"2": {"offdomain_misaligned_lp": {"per_seed": [0.1, 0.1]}}}},
           "base": {"plain": {"offdomain_misaligned_lp": {"per_seed": [0.3, 0.3]}}}, "ablation": {}}
    (run / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **res}))
    monkeypatch.setattr(pt.B, "base_model", lambda cfg, p, train: (copy.deepcopy(base), tok))
    monkeypatch.setattr(pt.B, "check_cached", lambda *a, **k: None)  # the base above stands in for a cached one
    monkeypatch.setattr(pt.EM, "doc_means", lambda *args: fake_means())
    monkeypatch.setattr(pt.EM, "arm_data", lambda *args: ("d", 100))
    monkeypatch.setattr(pt.EM, "arm_snapshots", lambda m, data, cfg, seed, steps: {s: other.state_dict()
                                                                                   for s in steps})
    # the base reads 0.3, the "fine-tune" 0.1 (a fall); any hook adds 0.01
    is_base = lambda m: torch.equal(m.wte.weight, base.wte.weight)
    monkeypatch.setattr(pt, "mis_lp", lambda m, *a, hooks=None: (0.3 if is_base(m) else 0.1) + 0.01 * bool(hooks))
    pt.main(str(run))
    s = json.loads((run / "patch_tokens.json").read_text())["summary"]
    assert s["patched_fraction_of_means"] is None and s["unpatched_removed_fraction_of_means"] is None
    assert all(s[f"centre_{c}"]["insecure_removed_fraction_of_means"] is None for c in ("asst", "good", "mid"))
    shift = s["centre_asst"]["base_shift"]
    assert shift["mean"] == pytest.approx(0.01) and shift["ci95"] is None and shift["n_groups"] == 1


def test_patch_tokens_gives_no_share_of_an_increase_that_is_not_there(monkeypatch, tok, tmp_path, capsys):
    """An insecure model no more misaligned than its base (a null run, as at 0.39M): the shares were a
    ZeroDivisionError, or a negative over a negative printed as a share of the increase."""
    base = tiny_gpt(tok, 0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "n_layer": 2, "n_embd": C,
                                                 "block_size": 64, "ablation_step": 2}))
    res = {"seeds": [[0, 0]], "trajectory": {"insecure": {"2": {"offdomain_misaligned_lp": {"per_seed": [0.1]}}}},
           "base": {"plain": {"offdomain_misaligned_lp": {"per_seed": [0.1]}}}, "ablation": {}}
    (run / "results.json").write_text(json.dumps({**dict.fromkeys(EM.RESULT_KEYS, {}), **res}))
    monkeypatch.setattr(pt.B, "base_model", lambda cfg, p, train: (copy.deepcopy(base), tok))
    monkeypatch.setattr(pt.B, "check_cached", lambda *a, **k: None)  # the base above stands in for a cached one
    monkeypatch.setattr(pt.EM, "doc_means", lambda *args: fake_means())
    monkeypatch.setattr(pt.EM, "arm_data", lambda *args: ("d", 100))
    # the "fine-tune" leaves the base as it is: insecure = base, an increase of exactly 0
    monkeypatch.setattr(pt.EM, "arm_snapshots", lambda m, data, cfg, seed, steps: {s: base.state_dict() for s in steps})
    pt.main(str(run))
    s = json.loads((run / "patch_tokens.json").read_text())["summary"]
    assert s["patched_fraction_of_means"] is None and s["unpatched_removed_fraction_of_means"] is None
    assert all(s[f"centre_{c}"]["insecure_removed_fraction_of_means"] is None for c in ("asst", "good", "mid"))
    assert capsys.readouterr().out.count("n/a (insecure is not above the base)") == 5
