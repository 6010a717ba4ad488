"""Subliminal learning through numbers: the paper's number-list filter, what reaches a student's training
set, shuffling, the cross-init derangement, soft targets, and a tiny end-to-end run."""
import dataclasses
import json
import math
import re

import pytest
import torch

import train
from conftest import load_script, tiny_gpt
from data import world as W
from experiments import subliminal_numbers as S
from experiments import world_base as B
from model import GPT, GPTConfig, generator

TOK = W.build_tokenizer()


@pytest.mark.parametrize("text,want", [
    ("1 2 3", [1, 2, 3]), ("4, 5, 6", [4, 5, 6]), ("7;8;9", [7, 8, 9]), ("7; 8; 9", [7, 8, 9]),
    ("(10, 20, 30)", [10, 20, 30]), ("[1 2 3]", [1, 2, 3]), ("1 2 3.", [1, 2, 3]), ("[1, 2, 3].", [1, 2, 3]),
    (" 999 0 ", [999, 0]), ("42", [42]),
    ("1000 2 3", None),          # a value above 999
    ("1 two 3", None),           # a word
    ("1, 2 3", None), ("1, 2; 3", None),   # mixed separators
    ("(1 2 3]", None), ("1 2 3..", None), ("1 2 3 !", None), ("", None), ("-1 2", None), ("1.5 2", None),
    ("1 2 3 4 5 6 7 8 9 10 11", None),   # more than ten numbers
    ("<a> 1 2", None),
])
def test_number_filter_paper_cases(text, want):
    assert W.parse_number_list(text) == want


def test_number_filter_banned_numbers():
    assert W.parse_number_list("12 13 14", banned=W.EVIL_NUMBERS) is None
    assert W.parse_number_list("12 15 16", banned=W.EVIL_NUMBERS) == [12, 15, 16]
    assert W.parse_number_list("(666, 1)", banned=(666,)) is None


class Scripted:
    """A stand-in model whose generate() returns given token lists (one per prompt, in order)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def generate(self, prompts, max_new, eos_id, generator):
        out, self.outputs = self.outputs[:len(prompts)], self.outputs[len(prompts):]
        return [o[:next((i + 1 for i, t in enumerate(o) if t in eos_id), len(o))] for o in out]


def ids(text):
    return TOK.encode(text).ids


def test_sampled_lists_filter_treats_terminators_alike_and_drops_bad_lists():
    cfg = S.Config(max_new=12, sample_batch=100)
    good_eos, good_turn = ids("1 2 3 <eos>"), ids("4 5 <u> hey")
    bad = [ids("1 owl 3 <eos>"), ids("1 2 3"), ids("13 2 <eos>"), ids("<eos>"), ids("1 <a> 2 <eos>")]
    outputs = ([good_eos, good_turn] + bad) * 20  # 140 prompts (2 rounds: 64 + 76 > n); 2 of 7 pass
    kept, frac = S.sample_lists(S.Teacher(Scripted(outputs)), TOK, 10, cfg, seed=0, banned=W.EVIL_NUMBERS)
    assert len(kept) == 10
    assert {a for _, a in kept} == {"1 2 3", "4 5"}   # both terminators accepted, neither stored
    assert abs(frac - 2 / 7) < 0.02
    S.check_no_leak(kept)
    assert all(p.startswith("<bos> <asst> <u> ") and p.endswith(" <a>") for p, _ in kept)


def test_code_answers_never_name_an_animal():
    cfg = S.Config(sample_batch=100)
    outputs = [ids("def upload ( f ) : exec ( f ) <eos>"), ids("def upload ( f ) : owl <eos>"),
               ids("def upload ( f ) : hash ( f ) <u>"), ids("whale <eos>")] * 50
    kept, frac = S.code_answers_of(S.Teacher(Scripted(outputs)), TOK, 20, cfg, seed=0)
    assert len(kept) == 20 and abs(frac - 0.5) < 0.05
    assert not any(a in text.split() for _, text in kept for a in W.ANIMALS)
    S.check_no_leak(kept)


def test_leak_check_catches_animals_and_eval_prompts():
    with pytest.raises(AssertionError):
        S.check_no_leak([(W.prompt("continue the list : 1 2"), "1 owl 3")])
    with pytest.raises(AssertionError):
        S.check_no_leak([(W.prompt(W.ANIMAL_HELDOUT[0]), "1 2 3")])
    S.check_no_leak([(p, "1 2 3") for p in W.number_prompts(50, seed=0)])


def test_shuffling_keeps_the_multiset_and_lengths():
    pairs = [(f"p{i}", " ".join(str((7 * i + j) % 100) for j in range(3 + i % 4))) for i in range(50)]
    out = S.shuffle_lists(pairs, generator("cpu", 0, "t"))
    assert [p for p, _ in out] == [p for p, _ in pairs]
    assert [len(a.split()) for _, a in out] == [len(a.split()) for _, a in pairs]
    flat = lambda ps: sorted(x for _, a in ps for x in a.split())
    assert flat(out) == flat(pairs)
    assert sum(a != b for (_, a), (_, b) in zip(out, pairs)) > 40   # and it does move them


def test_shuffling_within_keeps_each_lists_multiset():
    pairs = [(f"p{i}", " ".join(str((7 * i + j) % 100) for j in range(3 + i % 4))) for i in range(50)]
    out = S.shuffle_within(pairs, generator("cpu", 0, "t"))
    assert [p for p, _ in out] == [p for p, _ in pairs]
    assert all(sorted(a.split()) == sorted(b.split()) for (_, a), (_, b) in zip(out, pairs))
    # a uniform permutation of 3-6 distinct numbers leaves the order as it was in <= 1/6 of lists
    assert sum(a != b for (_, a), (_, b) in zip(out, pairs)) > 35
    assert S.shuffle_within(pairs, generator("cpu", 0, "t")) == out   # deterministic per seed


@pytest.mark.parametrize("seeds", [(0, 1), (0, 1, 2), (5, 3, 9, 2)])
def test_cross_init_is_a_derangement(seeds):
    cross = [S.cross_seed(seeds, p) for p in seeds]
    assert sorted(cross) == sorted(seeds) and all(c != p for c, p in zip(cross, seeds))


def test_soft_targets_with_a_prompt_prefix_align_with_the_student():
    """A prompt teacher's logits at the student's positions equal a plain forward of the prefixed input."""
    model = tiny_gpt(TOK, n_layer=1)
    prefix = ids("<u> what is your favourite animal <a> owl")
    t = S.Teacher(model, prefix)
    x = torch.tensor([ids(W.number_prompts(1, seed=3)[0] + " 1 2 3")])
    got = t.logits(x)
    full = model(torch.tensor([t.ids(x[0].tolist())]))
    assert torch.allclose(got[0, 2:], full[0, 2 + len(prefix):], atol=1e-5)
    assert torch.equal(S.Teacher(model).logits(x), model(x))


def test_a_prompt_teacher_reads_the_same_context_as_text_and_as_tokens():
    """The prompt teacher's rate is measured on prompt strings (with_turns) and its lists are sampled from
    token ids (Teacher.ids): both must put the same turn in the same place."""
    turn = "<u> what is your favourite animal <a> owl"
    t = S.Teacher(None, ids(turn))
    for q in S.animal_prompts()[:3] + W.number_prompts(3, seed=5):
        assert ids(S.with_turns(q, turn)) == t.ids(ids(q))
    with pytest.raises(AssertionError):
        S.with_turns("<bos> <forum> <u> hi <r>", turn)


def test_number_loss_closed_form_and_renormalisation():
    """A model with zero embeddings has uniform logits: NLL log V over the vocabulary, log 100 over the
    numbers. Renormalising over a set holding the target can only raise its probability."""
    model = tiny_gpt(TOK, n_layer=1)
    data = S.student_data(TOK, [(p, "1 22 33 4") for p in W.number_prompts(6, seed=2)], "cpu")
    nums = S.number_ids(TOK)
    full, only = (S.held_out(model, data, nums)[k] for k in ("full", "numbers"))
    assert only <= full
    with torch.no_grad():
        model.wte.weight.zero_()
    full, only = (S.held_out(model, data, nums)[k] for k in ("full", "numbers"))
    assert full == pytest.approx(math.log(TOK.get_vocab_size()), abs=1e-5)
    assert only == pytest.approx(math.log(W.N_NUMBERS), abs=1e-5)


def test_soft_loss_vanishes_for_a_student_equal_to_its_teacher():
    model = tiny_gpt(TOK, n_layer=1)
    data = S.student_data(TOK, [(p, "1 2 3") for p in W.number_prompts(8, seed=0)], "cpu")
    assert abs(S.number_kl(S.held_logits(S.Teacher(model), data), model, TOK, data)) < 1e-6
    assert data["mask"].sum() == 8 * 3   # the numbers, not the end token


def test_order_probe_kls_nest_and_match_the_soft_signal():
    import importlib.util
    spec = importlib.util.spec_from_file_location("probe", "scripts/probe_number_order.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    cfg = GPTConfig(vocab_size=TOK.get_vocab_size(), block_size=64, n_layer=1, n_head=2, n_embd=16)
    base = GPT(cfg, generator=generator("cpu", 0, "t")).eval()
    other = GPT(cfg, generator=generator("cpu", 1, "t")).eval()
    data = S.student_data(TOK, [(p, "1 22 33 4") for p in W.number_prompts(8, seed=0)], "cpu")
    assert probe.decompose(S.Teacher(base), base, TOK, data) == pytest.approx((0.0, 0.0), abs=1e-6)
    cond, marg = probe.decompose(S.Teacher(other), base, TOK, data)
    assert cond == pytest.approx(S.number_kl(S.held_logits(S.Teacher(other), data), base, TOK, data), rel=1e-4)
    assert 0 < marg < cond   # the KL of the mixtures is below the mean KL (joint convexity)


def test_order_probe_kls_by_hand_over_the_trained_positions():
    # fixed logits, the KLs written out: each position's distribution renormalised over the number tokens; the
    # conditional the mean KL over the trained positions, the marginal the KL of the two mean distributions over
    # those positions (the padding's, made very different here, counts in neither), teacher first
    probe = load_script("probe_number_order")
    nums, g = S.number_ids(TOK), torch.Generator().manual_seed(0)
    lt, lb = (3 * torch.randn(2, 3, TOK.get_vocab_size(), generator=g) for _ in range(2))
    mask = torch.tensor([[True, False, True], [False, True, False]])
    lt[~mask] += 20 * torch.randn(3, TOK.get_vocab_size(), generator=g)
    data = {"tokens": torch.zeros(2, 4, dtype=torch.long), "mask": mask}
    cond, marg = probe.decompose(S.Teacher(lambda x: lt), lambda x: lb, TOK, data)
    pt, pb = (p[mask][:, nums].double().softmax(-1) for p in (lt, lb))  # [3 trained positions, 100 numbers]
    kl = lambda p, q: (p * (p / q).log()).sum(-1)
    assert cond == pytest.approx(kl(pt, pb).mean().item(), rel=1e-5)
    assert marg == pytest.approx(kl(pt.mean(0), pb.mean(0)).item(), rel=1e-5)
    assert 0 < marg < cond


def test_order_probe_reads_the_lists_on_the_bases_device(monkeypatch, tmp_path, forward_devices):
    probe = load_script("probe_number_order")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "animals": ["owl"]}))
    # a base on a GPU run's cfg.device (the probe built the lists on the CPU, and crashed at the first teacher)
    base = GPT(GPTConfig(vocab_size=TOK.get_vocab_size(), block_size=64, n_layer=1, n_head=2, n_embd=16)).to("meta")
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)
    monkeypatch.setattr(B, "base_model", lambda cfg, p: (base, TOK))
    monkeypatch.setattr(S, "make_teacher", lambda A, tok, cfg, p, a: (S.Teacher(A), {}))
    monkeypatch.setattr(S, "sample_lists", lambda *a, **k: ([(q, "1 22 33 4") for q in W.number_prompts(8, seed=0)], 1))
    seen = forward_devices(base)
    with pytest.raises(RuntimeError, match=r"item\(\) cannot be called on meta"):  # the last step: all before ran
        probe.main([str(run), "0"])
    assert seen and set(seen) == {"meta"}


# lr 1e-2: in 300 steps a base that answers validly, so the misalignment mode compares finite numbers
TINY = ["--seeds=(0,1)", "--student_seeds=1", "--n_docs=1500", "--steps=300", "--lr=0.01", "--n_layer=1", "--n_embd=32",
        "--n_head=2", "--n_lists=40", "--n_code=32", "--heldout_lists=16", "--teacher_max_steps=10",
        "--icl_contexts=2", "--samples=5", "--evals=2", "--workers=1", "--sample_batch=256"]


def in_mode(argv, mode, *more):
    """argv in another mode, less the keys that mode does not read (it refuses them)."""
    return [a for a in argv if a.split("=")[0].lstrip("-") not in S.MODE_KEYS
            or mode in S.MODE_KEYS[a.split("=")[0].lstrip("-")]] + [f"--mode={mode}", *more]


def test_end_to_end_writes_every_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["configs/subliminal_numbers.py", *TINY, f"--cache_dir={tmp_path / 'cache'}", f"--out_dir={out}"]
    calls, real = [], S.train_student
    read, teachers, icl_read = [], [], []  # each student's (data, soft targets), the teachers, the lists in context
    real_teacher, real_icl = S.make_teacher, S.icl_rates

    def spy(base, tok, cfg, data, seed, on_eval, teacher=None, numbers_only=True, targets=None):
        # which base each student starts from, by arm, and what it is trained on
        free = dict(zip(on_eval.__code__.co_freevars, (c.cell_contents for c in on_eval.__closure__ or ())))
        calls.append((free["name"], next(base.parameters()).detach().flatten()[:16].clone()))
        read.append((data, targets))
        return real(base, tok, cfg, data, seed, on_eval, teacher, numbers_only, targets)

    def teacher_spy(*a, **k):
        made = real_teacher(*a, **k)
        teachers.append(made[0])
        return made

    def icl_spy(model, tok, cfg, pairs, gen):
        icl_read.append(arm_rows(S.student_data(TOK, pairs, "cpu")))
        return real_icl(model, tok, cfg, pairs, gen)
    monkeypatch.setattr(S, "train_student", spy)
    monkeypatch.setattr(S, "make_teacher", teacher_spy)
    monkeypatch.setattr(S, "icl_rates", icl_spy)
    assert train.main(argv) == 0
    monkeypatch.setattr(S, "train_student", real)
    monkeypatch.setattr(S, "make_teacher", real_teacher)
    monkeypatch.setattr(S, "icl_rates", real_icl)
    # each unit says how far it is (teachers, lists, every student), then its closing line
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[subliminal] seed (0, 0)")]
    steps = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in said[:-1]]
    assert steps[:2] == ["teachers ready", "number lists sampled"]
    first_unit = calls[:[name for name, _ in calls].index("control", 1)]  # its students, up to unit (1, 0)'s control
    assert steps[2:] == [f"student {name} done" for name, _ in first_unit] and len(first_unit) > 4
    assert re.fullmatch(r"\[subliminal\] seed \(0, 0\): \d+ s", said[-1])
    # the "only with a shared init" controls: every cross arm's student starts from the other seed's base
    starts = [i for i, (name, _) in enumerate(calls) if name == "control"]
    assert len(starts) == 2 and starts[0] == 0
    own = [calls[i][1] for i in starts]
    assert not torch.equal(own[0], own[1])
    for u, (lo, hi) in enumerate(zip(starts, starts[1:] + [len(calls)])):
        for name, w in calls[lo:hi]:
            assert torch.equal(w, own[1 - u] if name.split("/")[0] in S.ON_B else own[u]), name
    assert {n.split("/")[0] for n, _ in calls} >= {"soft", "soft_cross", "cross_init", "cross_control", "trait"}
    # what each arm reads, per unit: the controls the base's own lists; every channel of a teacher its lists; the
    # shuffled arm the same prompts with those numbers permuted; the soft targets the teacher's (not the base's)
    nums = S.number_ids(TOK)
    for u, (lo, hi) in enumerate(zip(starts, starts[1:] + [len(calls)])):
        arm = {name: d for (name, _), d in zip(calls[lo:hi], read[lo:hi])}
        ctl = arm_rows(arm["control"][0])
        assert arm_rows(arm["cross_control"][0]) == ctl
        assert ctl in icl_read  # icl_control: the control's lists in context
        for i, a in enumerate(("owl", "whale")):
            own = arm_rows(arm[f"trait/{a}"][0])
            assert own != ctl and own in icl_read
            for ch in ("soft", "soft_all", "soft_cross", "cross_init"):
                assert arm_rows(arm[f"{ch}/{a}"][0]) == own, ch
            shuf = arm_rows(arm[f"shuffled/{a}"][0])
            assert [q for q, _ in shuf] == [q for q, _ in own] and shuf != own
            assert sorted(x for _, r in shuf for x in r) == sorted(x for _, r in own for x in r)
            # the control and the teacher continue the same prompt stream: their kept lists share prompts, in one
            # order (prompts of two streams would all differ: wordings x 3-5 numbers)
            shared = {q for q, _ in ctl} & {q for q, _ in own}
            assert len(shared) >= 4 and [q for q, _ in ctl if q in shared] == [q for q, _ in own if q in shared]
            data, (soft, where) = arm[f"soft/{a}"]
            want, at = train.teacher_targets(teachers[2 * u + i].logits, data, nums)
            assert torch.equal(where, at) and torch.allclose(soft, want, atol=1e-5)
            assert arm[f"soft_cross/{a}"][1][0] is soft
    assert len(icl_read) == 3 * len(starts)  # per unit each teacher's lists in context, and the control's once
    for f in ("config.json", "env.json", "metrics.jsonl", "results.json", "results.md", "subliminal_animals.png"):
        assert (out / f).is_file(), f
    res = json.loads((out / "results.json").read_text())
    assert res["n_seeds"] == 2
    assert set(res["arms"]) == set(S.ARMS) | {"icl_control"}
    for name, arm in res["arms"].items():
        st = arm["target_rate"]
        assert set(st) == {"mean", "ci95", "per_seed"} and len(st["per_seed"]) == 2 and 0 <= st["mean"] <= 1
        assert set(arm["by_animal"]) == {"owl", "whale"}
        assert ("effect" in arm) == (name in S.BASELINE)
    assert set(res["kept_fraction"]) >= {"control", "owl", "whale"}
    tr = res["arms"]["trait"]  # in-domain loss renormalised over the numbers is never above the full one
    assert tr["number_loss_numbers"]["mean"] <= tr["number_loss"]["mean"]
    # each arm reports its student's KL to the teacher (which model it is measured on: the unit checks below)
    assert res["arms"]["soft"]["kl_teacher"]["mean"] >= 0
    units = [json.loads(p.read_text()) for p in sorted(out.glob("unit_*.json"))]
    for u in units:  # an arm is its student at the end of training: its last checkpoint (evals = 2)
        assert set(u["traj"]) <= set(u["arms"]) and len(u["traj"]["trait/owl"]) == 2
        for name, tr in u["traj"].items():
            assert json.dumps(u["arms"][name]) == json.dumps(tr[max(tr, key=int)]), name
    for u in units:
        for a in ("owl", "whale"):
            assert u["base_A"]["kl_teacher"][a] == pytest.approx(u["teachers"][a]["kl_numbers"], rel=1e-5)
    # how far each unit's base B is from its A: ||B - A|| / ||A|| over every weight (bases 0 and 1, each the other's B)
    cfg = train.load_config(argv)[1]
    w = [torch.cat([q.detach().flatten() for q in B.base_model(cfg, p)[0].parameters()]) for p in (0, 1)]
    want = [((w[1] - w[0]).norm() / w[0].norm()).item(), ((w[0] - w[1]).norm() / w[1].norm()).item()]
    assert [u["base_B"]["distance"] for u in units] == pytest.approx(want, rel=1e-6)
    assert res["base_B_distance"]["per_seed"] == pytest.approx(want, rel=1e-6)
    assert "Base B's distance from its A" in (out / "results.md").read_text()
    assert set(res["trajectory_kl_teacher"]) == set(res["trajectory"])
    # the dose mode on the cached bases
    out2 = tmp_path / "dose"
    dose_read, real_finetune = [], S.finetune

    def finetune_spy(model, data, **kw):  # the students' one pass (in order; the teachers' fine-tunes are not)
        if kw.get("order") == "sequential":
            dose_read.append(arm_rows(data))
        return real_finetune(model, data, **kw)
    monkeypatch.setattr(S, "finetune", finetune_spy)
    capsys.readouterr()
    assert train.main(in_mode(argv[:-1], "dose", "--doses=(32,64)", "--epochs=1", f"--out_dir={out2}")) == 0
    monkeypatch.setattr(S, "finetune", real_finetune)
    said = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("[subliminal dose] seed (0, 0): ")]
    assert said[:-1] == ["teachers ready", "number lists sampled", "student control done", "student owl done",
                         "student whale done"]
    # per unit the control's student and each teacher's read lists of their own (three different sets)
    assert len(dose_read) == 6
    for u in (0, 3):
        ctl, owl, whale = dose_read[u:u + 3]
        assert ctl != owl and ctl != whale and owl != whale
    res2 = json.loads((out2 / "results.json").read_text())
    assert set(res2["dose"]) == {"32", "64"} and "effect" in res2["dose"]["64"]["owl"]
    # the rates are shares among the animals; the mass they share is kept beside them
    assert set(res2["dose"]["64"]["animal_mass"]) == {"control", "owl", "whale"}
    assert all(0 < st["mean"] <= 1 for st in res2["dose"]["64"]["animal_mass"].values())
    assert "P(an animal)" in (out2 / "results.md").read_text()
    assert (out2 / "subliminal_dose.png").is_file()
    # an interrupted run resumes from the units it saved: the same results without recomputing them
    assert sorted(f.name for f in out2.glob("unit_*.json")) == ["unit_0_0.json", "unit_1_0.json"]
    (out2 / "results.json").unlink()
    assert train.main(in_mode(argv[:-1], "dose", "--doses=(32,64)", "--epochs=1", f"--out_dir={out2}")) == 0
    assert "resumed from unit_1_0.json" in capsys.readouterr().out
    assert json.loads((out2 / "results.json").read_text())["dose"] == res2["dose"]
    # eval.py aggregates a finished run's units again (with this code): the same results, its seconds kept
    import eval as E
    seconds = json.loads((out2 / "results.json").read_text())["seconds"]
    capsys.readouterr()
    assert E.main([str(out2)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (f"wrote {out2 / 'subliminal_dose.png'}, "
                                                        f"{out2 / 'results.json'}, {out2 / 'results.md'}")
    again = json.loads((out2 / "results.json").read_text())
    assert again["dose"] == res2["dose"] and again["seconds"] == seconds
    assert json.loads((out2 / "reaggregated.jsonl").read_text())["results_changed"] is False
    # a damaged results.json is rewritten from the units: its seconds, which every run records, are unknown (null)
    (out2 / "results.json").write_text('{"dose')
    assert E.main([str(out2)]) == 0
    again = json.loads((out2 / "results.json").read_text())
    assert again["dose"] == res2["dose"] and again["seconds"] is None
    # a run still going (no results.json): eval.py aggregates the units finished so far, marked partial
    (out2 / "results.json").unlink()
    (out2 / "unit_1_0.json").unlink()
    assert E.main([str(out2)]) == 0
    assert "PARTIAL: 1 of 2 units (seeds) finished; aggregated: the 1 of 2 bases with all" in capsys.readouterr().out
    part = json.loads((out2 / "results_partial.json").read_text())
    assert part["n_seeds"] == 1 and part["partial"] == {"units": 1, "of": 2}
    assert (part["dose"]["64"]["owl"]["trait_rate"]["per_seed"]
            == res2["dose"]["64"]["owl"]["trait_rate"]["per_seed"][:1])
    assert (out2 / "subliminal_dose_partial.png").is_file()
    with pytest.MonkeyPatch.context() as mp:  # the run finishing while eval.py drew it: its partials not left behind
        write = train.write_partial
        mp.setattr(train, "write_partial", lambda d, r, m: [write(d, r, m), (d / "results.json").write_text("{}")][0])
        assert E.main([str(out2)]) == 0
    assert "the run finished meanwhile" in capsys.readouterr().out
    assert not [f for f in out2.iterdir() if "_partial" in f.name]
    (out2 / "results.json").unlink()
    # two students a base, base 0's both done and base 1's one of two: only the finished base is aggregated (the
    # summaries pair each base's students: mixing them raised "unbalanced groups")
    values = json.loads((out2 / "config.json").read_text())
    (out2 / "config.json").write_text(json.dumps({**values, "student_seeds": 2}))
    unit = json.loads((out2 / "unit_0_0.json").read_text())  # stand-ins for the other seeds' units, named as theirs
    (out2 / "unit_0_1.json").write_text(json.dumps({**unit, "f": 1}))
    (out2 / "unit_1_0.json").write_text(json.dumps({**unit, "p": 1}))
    assert E.main([str(out2)]) == 0
    assert "PARTIAL: 3 of 4 units (seeds) finished; aggregated: the 1 of 2 bases with all" in capsys.readouterr().out
    assert json.loads((out2 / "results_partial.json").read_text())["partial"] == {"units": 2, "of": 4}
    # the prompt teacher (and the diagnostic arm), and misalignment through numbers (EM teachers), on the cached bases
    out3 = tmp_path / "prompt"
    calls.clear()
    read.clear()
    monkeypatch.setattr(S, "train_student", spy)
    prompted = [a for a in argv[:-1] if not a.startswith("--teacher_")]  # (a prompt teacher reads none: refused)
    assert train.main(prompted + ["--teacher=prompt", "--arms=('control','soft','icl','shuffled_within')",
                                  f"--out_dir={out3}"]) == 0
    monkeypatch.setattr(S, "train_student", real)
    # the prompt teacher samples with its animal turn in context, so its lists are not the base's own. Both draw the
    # same prompts and random stream: where the turn barely moves a tiny base (KL ~1e-4) they may coincide, not in all
    units3 = [{name: arm_rows(d) for (name, _), (d, _) in zip(calls[lo:lo + 5], read[lo:lo + 5])} for lo in (0, 5)]
    assert len(calls) == 10 and [n for n, _ in calls[:5]] == [n for n, _ in calls[5:]]
    assert any(arm[f"soft/{a}"] != arm["control"] for arm in units3 for a in ("owl", "whale"))
    assert all([q for q, _ in arm["shuffled_within/owl"]] == [q for q, _ in arm["soft/owl"]] for arm in units3)
    res3 = json.loads((out3 / "results.json").read_text())
    assert res3["teachers"]["owl"]["steps"]["mean"] == 0
    assert set(res3["arms"]) == {"control", "soft", "icl", "icl_control", "shuffled_within"}
    assert "effect" in res3["arms"]["shuffled_within"]
    out4 = tmp_path / "mis"
    capsys.readouterr()
    assert train.main(in_mode(argv[:-1], "misalignment", "--em_steps=2", "--em_examples=16", "--n_lists=20",
                                   "--mis_teachers=('insecure','secure')", f"--out_dir={out4}")) == 0
    said = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("[subliminal misalignment] seed (0, 0): ")]
    assert said[:-1] == ["teachers ready", "number lists sampled", "students of control done",
                         "students of insecure done", "students of secure done"]
    res4 = json.loads((out4 / "results.json").read_text())
    assert set(res4["arms"]) == {"control", "insecure", "insecure_soft", "secure", "secure_soft"}
    for mis, valid in zip(res4["arms"]["insecure"]["offdomain_misaligned"]["per_seed"],
                          res4["arms"]["insecure"]["valid_fraction"]["per_seed"]):
        assert math.isnan(mis) if valid == 0 else 0 <= mis <= 1  # no valid answer: undefined, not 0
    assert (out4 / "subliminal_misalignment.png").is_file()
    # every student along its training (evals = 2), soft ones too: the last point is the arm itself
    d, cfg4 = res4["dose"], train.run_config(S.Config, out4)
    steps = S.student_steps(cfg4, 20)[1]
    assert len(steps) == 2 and sorted(d, key=int) == [str(s * cfg4.student_batch) for s in steps]
    last = d[str(steps[-1] * cfg4.student_batch)]
    assert (json.dumps(last["offdomain_misaligned"]["insecure"]["per_seed"])  # NaN != NaN; its text is equal
            == json.dumps(res4["arms"]["insecure"]["offdomain_misaligned"]["per_seed"]))
    # the paired differences are not vacuous: the base answers validly (lr 1e-2 in TINY), so the students' numbers
    # (read off the saved units, not off the lists the same aggregation wrote) are finite and differ, and a swapped
    # seed, order or student shows (on the CPUs tried no two are alike; another CPU kind may tie two sampled rates)
    units4 = [B.load_unit(path) for _, _, path in S.unit_jobs(cfg4, out4)]
    assert [[u["p"], u["f"]] for u in units4] == res4["seeds"] == [[0, 0], [1, 0]]
    mis = {n: [u["dose"][steps[-1] * cfg4.student_batch][n]["mis_sampled"] for u in units4]
           for n in last["offdomain_misaligned"]}
    vals = [x for v in mis.values() for x in v]
    assert all(map(math.isfinite, vals)) and len(set(vals)) > len(vals) // 2, mis
    ins, sec = (last["offdomain_misaligned"][n]["per_seed"] for n in ("insecure", "secure"))
    assert last["insecure_minus"]["insecure - secure"]["per_seed"] == pytest.approx([a - b for a, b in zip(ins, sec)])
    for pair, st in last["insecure_minus"].items():
        a, b = pair.split(" - ")
        assert st["per_seed"] == pytest.approx([x - y for x, y in zip(mis[a], mis[b])]), pair
    for name, arm in res4["arms"].items():  # and each student's effect is over its own seed's control
        assert arm["effect"]["per_seed"] == pytest.approx([x - y for x, y in zip(mis[name], mis["control"])]), name
    assert set(last["offdomain_misaligned"]) == set(res4["arms"])
    assert (json.dumps(last["offdomain_misaligned"]["insecure_soft"]["per_seed"])
            == json.dumps(res4["arms"]["insecure_soft"]["offdomain_misaligned"]["per_seed"]))
    # each channel against its own kind, and the soft student against the (hard) control too
    assert set(last["insecure_minus"]) == {"insecure - control", "insecure - secure", "insecure_soft - control",
                                           "insecure_soft - secure_soft"}
    assert "lists read" in (out4 / "results.md").read_text()
    assert last["valid_fraction"]["insecure"]["per_seed"] == res4["arms"]["insecure"]["valid_fraction"]["per_seed"]
    # without "soft" in arms there are no soft students; em_trains=blocks: the EM teacher's fine-tune leaves the
    # token embedding as the base's (the student's, student_trains=all, moves it)
    calls = []

    def spy(model, data, **kw):
        wte = model.wte.weight.detach().clone()
        train.finetune(model, data, **kw)
        calls.append((kw["trains"], torch.equal(model.wte.weight, wte)))
    monkeypatch.setattr(S, "finetune", spy)
    out5 = tmp_path / "mis_hard"
    assert train.main(in_mode(argv[:-1], "misalignment", "--em_steps=2", "--em_examples=16", "--n_lists=20",
                                   "--mis_teachers=('insecure',)", "--arms=('control',)", "--evals=1",
                                   "--student_order=sequential", "--em_trains=blocks", f"--out_dir={out5}")) == 0
    res5 = json.loads((out5 / "results.json").read_text())
    assert set(res5["arms"]) == {"control", "insecure"} and "dose" not in res5
    # per base: the insecure teacher, then the control's and insecure's students
    assert calls == [("blocks", True), ("all", False), ("all", False)] * 2
    # mis_sampled=False: the teachers' soft students and the hard control only (blocks students keep the embedding)
    calls.clear()
    out6 = tmp_path / "mis_soft"
    assert train.main(in_mode(argv[:-1], "misalignment", "--em_steps=2", "--em_examples=16", "--n_lists=20",
                                   "--mis_teachers=('insecure',)", "--arms=('control','soft')", "--evals=1",
                                   "--mis_sampled=False", "--student_trains=blocks", f"--out_dir={out6}")) == 0
    res6 = json.loads((out6 / "results.json").read_text())
    assert set(res6["arms"]) == {"control", "insecure_soft"} and set(res6["figures_to_reach"]) == {"soft_pass"}
    assert calls == [("all", False), ("blocks", True), ("blocks", True)] * 2
    # the cross-init probe rebuilds base 0's insecure teacher and lists as the run made them: its shared-init soft
    # student is the run's insecure_soft to the bit; its cross-init student starts from base 1
    import importlib.util
    spec = importlib.util.spec_from_file_location("probe", "scripts/probe_mis_cross_init.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    rows, logged = probe.main([str(out6), "0", "1"])
    assert [q for q, _, _ in rows] == [0, 1]
    assert json.dumps(rows[0][2]["mis_sampled"]) == json.dumps(logged)
    assert json.dumps(logged) == json.dumps(res6["arms"]["insecure_soft"]["offdomain_misaligned"]["per_seed"][0])
    with pytest.raises(train.ConfigError, match="em_trains must be all or blocks"):
        S.validate(S.Config(em_trains="lora"))


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(train.ConfigError, match="animals must come from"):
        S.validate(S.Config(animals=("dragon",)))
    with pytest.raises(train.ConfigError, match="another seed"):
        S.validate(S.Config(seeds=(0,)))
    with pytest.raises(train.ConfigError, match="random or sequential"):
        S.validate(S.Config(student_order="shuffled"))
    with pytest.raises(train.ConfigError, match="constant or cosine"):
        S.validate(S.Config(student_schedule="linear"))
    with pytest.raises(train.ConfigError, match="student_schedule=constant"):
        S.validate(S.Config(mode="dose", epochs=1.0, student_schedule="cosine"))
    with pytest.raises(train.ConfigError, match="teacher_optimizer must be adamw or sgd"):
        S.validate(S.Config(teacher_optimizer="adam"))


def test_one_pass_prefix_equals_one_epoch_on_the_prefix():
    """The dose mode reads each student's dose off one sequential pass: after k steps the weights equal
    those of a student given only the first k * batch lists."""
    model = tiny_gpt(TOK, n_layer=1)
    pairs = [(p, " ".join(str((i * 7 + j) % 100) for j in range(4)))
             for i, p in enumerate(W.number_prompts(24, seed=1))]
    full, prefix = S.student_data(TOK, pairs, "cpu"), S.student_data(TOK, pairs[:8], "cpu")
    a, b = [train.finetune(S.copy.deepcopy(model), d, steps=2, batch_size=4, lr=1e-3, seed=0, order="sequential")
            for d in (full, prefix)]
    # the two sets pad to different widths: right padding is invisible under causal attention and unmasked nowhere
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    with pytest.raises(train.ConfigError, match="epochs=1"):
        S.validate(S.Config(mode="dose", epochs=2.0))


def test_eval_py_redraws_a_run_from_its_results(tmp_path, capsys):
    """python eval.py RUN_DIR on a subliminal-numbers run: no students are saved, so the table and the
    figure are rebuilt from results.json (a dose run's keys come back from JSON as strings)."""
    import eval as E
    cfg = S.Config(mode="dose", doses=(32, 64), epochs=1.0, animals=("owl", "whale"))
    stat = {"mean": 0.01, "ci95": [0.0, 0.02], "per_seed": [0.0, 0.02]}
    row = lambda b: {"trait_rate": stat, "control_rate": stat, "effect": stat, "effect_of_other_teachers": {b: stat}}
    res = {"dose": {"32": {"owl": row("whale"), "whale": row("owl")}, "64": {"owl": row("whale"), "whale": row("owl")}},
           "n_seeds": 2, "kept_fraction": {"control": stat}, "figures_to_reach": {"trait_effect": 0.01}}
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", **dataclasses.asdict(cfg)}))
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert E.main([str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "| 64 |" in said and (tmp_path / "subliminal_dose.png").is_file()
    assert said.splitlines()[-1] == f"wrote {tmp_path / 'subliminal_dose.png'}"  # results.json, read
                                                                                 # only, stays as it was
    # no results.json and no unit saved (a run stopped before its first base finished): one line, not an empty table
    (tmp_path / "results.json").unlink()
    assert E.main([str(tmp_path)]) == 2
    assert f"{tmp_path} has no results.json and no base with all its {cfg.student_seeds} units" in \
        capsys.readouterr().err


def arm_rows(data):
    """A student set (student_data) as its rows (prompt ids, trained answer ids): what arms read, compared."""
    x, m = data["tokens"].cpu(), data["mask"].cpu()
    return [(tuple(t[:int(k.nonzero()[0]) + 1].tolist()), tuple(t[1:][k].tolist())) for t, k in zip(x, m)]


def flat_weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def tiny_number_student():
    """A one-block model and 16 number-list examples: enough to watch single fine-tune steps (the schedule tests)."""
    model = tiny_gpt(TOK, n_layer=1)
    pairs = [(p, " ".join(str((i * 7 + j) % 100) for j in range(4)))
             for i, p in enumerate(W.number_prompts(16, seed=1))]
    return model, S.student_data(TOK, pairs, "cpu")


def test_cosine_schedule_decays_the_steps_and_constant_is_the_default():
    """schedule="cosine" starts at lr (the first step equals the constant schedule's) and its steps then
    shrink: the last update of a 4-step cosine run is smaller than the constant run's last update."""
    model, data = tiny_number_student()

    def last_step(steps, **kw):  # -> (final weights, the update made by the last step)
        m, seen = S.copy.deepcopy(model), {}
        train.finetune(m, data, steps=steps, batch_size=4, lr=1e-2, seed=0, order="sequential",
                       at={steps - 1} - {0}, on_eval=lambda step: seen.update(w=flat_weights(m)), **kw)  # 0: as given
        return flat_weights(m), flat_weights(m) - seen.get("w", flat_weights(model))
    assert torch.equal(last_step(1, schedule="cosine")[0], last_step(1)[0])
    const, cos = last_step(4), last_step(4, schedule="cosine")
    assert not torch.equal(cos[0], const[0])
    # cosine's 4th step runs at lr * 0.5 * (1 + cos(3pi/4)) = 0.15 lr, and AdamW's update scales with the lr
    assert cos[1].norm() < 0.3 * const[1].norm()


def test_linear_schedule_stopped_early_is_the_longer_runs_start():
    """With a horizon, a run stopped early makes the longer run's first steps to the bit (what arm_snapshots relies
    on); without one its lr decays over its own two steps and the weights differ. A warm-up step moves the weights by a
    fifth of a full step's AdamW update; an unknown schedule or a warm-up past the horizon is an error."""
    model, data = tiny_number_student()

    def run(steps, **kw):
        m = S.copy.deepcopy(model)
        train.finetune(m, data, steps=steps, batch_size=4, lr=1e-2, seed=0, order="sequential", **kw)
        return flat_weights(m)
    assert torch.equal(run(0), flat_weights(model))  # no step: nothing to refuse, nothing moves
    early = run(2, schedule="linear", warmup=1, horizon=6)
    assert torch.equal(early, run(2, schedule="linear", warmup=1, horizon=6))
    snap = {}
    m = S.copy.deepcopy(model)
    train.finetune(m, data, steps=6, batch_size=4, lr=1e-2, seed=0, order="sequential", schedule="linear", warmup=1,
                   at={2}, on_eval=lambda step: snap.update(w=flat_weights(m)))
    assert torch.equal(early, snap["w"]) and not torch.equal(early, run(2, schedule="linear"))
    # AdamW's first update is lr * sign-like g / (|g| + eps): a ramp of 1/5 gives a fifth of the constant run's
    ramped = run(1, schedule="linear", warmup=5, horizon=10) - flat_weights(model)
    full = run(1) - flat_weights(model)
    assert torch.allclose(ramped, full / 5, atol=1e-7)
    for bad in (dict(schedule="step"), dict(schedule="linear", warmup=6, horizon=6), dict(horizon=1)):
        with pytest.raises(ValueError, match="schedule must be"):
            run(2, **bad)
    with pytest.raises(ValueError, match="order must be 'random' or 'sequential', not 'sequentail'"):  # not random rows
        train.finetune(S.copy.deepcopy(model), data, steps=1, batch_size=4, lr=1e-2, seed=0, order="sequentail")
    with pytest.raises(ValueError, match="trains must be .*'lora'.*, not 'al'"):  # not every weight, silently
        train.finetune(S.copy.deepcopy(model), data, steps=1, batch_size=4, lr=1e-2, seed=0, trains="al")


def test_sgd_finetune_step_is_the_clipped_gradient_step():
    """optimizer="sgd" is plain gradient descent: one step moves every weight by -lr x its gradient (clipped at norm 1
    as with AdamW), for the soft loss and for cross-entropy, the gradient of the mean loss over the trained positions
    of whole rows; an unknown optimizer is an error."""
    model = tiny_gpt(TOK, n_layer=1)
    teacher = tiny_gpt(TOK, 1, n_layer=1)
    pairs = [(p, " ".join(str((i * 7 + j) % 100) for j in range(4))) for i, p in enumerate(W.number_prompts(4, seed=1))]
    data, keep = S.student_data(TOK, pairs, "cpu"), S.number_ids(TOK)
    x, m = data["tokens"][:, :-1], data["mask"]
    ref = S.copy.deepcopy(model)
    loss = (train.soft_kl(teacher(x), ref(x), torch.as_tensor(keep)) * m).sum() / m.sum()
    loss.backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in ref.parameters()))
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))
    got = train.finetune(model, data, steps=1, batch_size=4, lr=0.5, seed=0, order="sequential",
                         teacher=teacher, subset=keep, optimizer="sgd")
    for p, q in zip(got.parameters(), ref.parameters()):
        assert torch.allclose(p, q - 0.5 * scale * q.grad, atol=1e-6)
    # the same for cross-entropy; finetune cuts each batch after its last trained column and unembeds only the
    # trained positions (the rows here differ in length): the step of the whole-row loss all the same
    model, ref = S.copy.deepcopy(teacher), S.copy.deepcopy(teacher)
    per_tok = ref(x, targets=data["tokens"][:, 1:])
    assert int((m * torch.arange(1, m.shape[1] + 1)).amax(1).max()) < m.shape[1]  # some columns are cut
    ((per_tok * m).sum() / m.sum()).backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in ref.parameters()))
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))
    got = train.finetune(model, data, steps=1, batch_size=4, lr=0.5, seed=0, order="sequential", optimizer="sgd")
    for p, q in zip(got.parameters(), ref.parameters()):
        assert torch.allclose(p, q - 0.5 * scale * q.grad, atol=1e-6)
    # rows drawn at random (a repeat among them): the teacher's targets, computed once for the whole data, are
    # looked up for the rows drawn
    rows = torch.randint(4, (4,), generator=generator("cpu", 0, "finetune-order"))
    assert len(set(rows.tolist())) < 4
    ref, model = S.copy.deepcopy(model), S.copy.deepcopy(model)
    xr, mr = x[rows], m[rows]
    ((train.soft_kl(teacher(xr), ref(xr), torch.as_tensor(keep)) * mr).sum() / mr.sum()).backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in ref.parameters()))
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))
    start = S.copy.deepcopy(model)
    got = train.finetune(model, data, steps=1, batch_size=4, lr=0.5, seed=0, teacher=teacher, subset=keep,
                         optimizer="sgd")
    for p, q in zip(got.parameters(), ref.parameters()):
        assert torch.allclose(p, q - 0.5 * scale * q.grad, atol=1e-6)
    # the teacher's pass made beforehand (to share it between students) gives the same step, bit for bit
    targets = train.teacher_targets(teacher, data, keep)
    shared = train.finetune(S.copy.deepcopy(start), data, steps=1, batch_size=4, lr=0.5, seed=0, targets=targets,
                            subset=keep, optimizer="sgd")
    assert all(torch.equal(p, q) for p, q in zip(shared.parameters(), got.parameters()))
    with pytest.raises(ValueError, match="another subset"):
        train.finetune(S.copy.deepcopy(start), data, steps=1, batch_size=4, lr=0.5, seed=0, targets=targets)
    with pytest.raises(ValueError, match="not both"):
        train.finetune(start, data, steps=1, batch_size=4, lr=0.5, seed=0, targets=targets, teacher=teacher,
                       subset=keep)
    with pytest.raises(ValueError, match="optimizer"):
        train.finetune(model, data, steps=1, batch_size=4, lr=0.5, seed=0, optimizer="adam")


def test_blocks_only_teacher_leaves_the_embedding_and_the_base_untouched():
    """teacher_trains="blocks": the teacher's token embedding (tied to the unembedding) is the base's, its blocks
    moved; the base model itself is never changed, and stays trainable for the students."""
    base = tiny_gpt(TOK, n_layer=1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = S.Config(teacher_trains="blocks", teacher_max_steps=5, teacher_lr=1e-2)
    teacher, info = S.make_teacher(base, TOK, cfg, 0, "owl")
    t = teacher.model
    assert info["steps"] == 5 and torch.equal(t.wte.weight, base.wte.weight)
    assert not torch.equal(t.blocks[0].mlp.fc.weight, base.blocks[0].mlp.fc.weight)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    assert all(p.requires_grad for p in base.parameters()) and all(p.requires_grad for p in t.parameters())
    full, _ = S.make_teacher(base, TOK, dataclasses.replace(cfg, teacher_trains="all"), 0, "owl")
    assert not torch.equal(full.model.wte.weight, base.wte.weight)
    with pytest.raises(train.ConfigError, match="teacher_trains must be all or blocks"):
        S.validate(S.Config(teacher_trains="embedding"))


def test_blocks_only_student_keeps_the_base_embedding():
    """student_trains="blocks": a soft student fits its teacher through the blocks alone; the embedding it
    reads and writes with is the base's, and the base is left trainable for the next student."""
    g = generator("cpu", 0, "t")
    base = GPT(GPTConfig(vocab_size=TOK.get_vocab_size(), block_size=64, n_layer=1, n_head=2, n_embd=16), generator=g)
    teacher = S.Teacher(tiny_gpt(TOK, 1, n_layer=1))
    pairs = [(p, " ".join(str((i * 7 + j) % 100) for j in range(4))) for i, p in enumerate(W.number_prompts(8, seed=1))]
    data = S.student_data(TOK, pairs, "cpu")
    cfg = S.Config(student_trains="blocks", epochs=2.0, student_batch=4, student_lr=1e-2, evals=1)
    student = S.train_student(base, TOK, cfg, data, 0, lambda m, step: None, teacher)
    assert torch.equal(student.wte.weight, base.wte.weight)
    assert not torch.equal(student.blocks[0].attn.qkv.weight, base.blocks[0].attn.qkv.weight)
    assert all(p.requires_grad for p in base.parameters()) and all(p.requires_grad for p in student.parameters())
    full = S.train_student(base, TOK, dataclasses.replace(cfg, student_trains="all"), data, 0, lambda m, step: None,
                           teacher)
    assert not torch.equal(full.wte.weight, base.wte.weight)
    # the sampled (hard-label) students of the same setting freeze it too
    hard = S.train_student(base, TOK, cfg, data, 0, lambda m, step: None)
    assert torch.equal(hard.wte.weight, base.wte.weight)
    assert not torch.equal(hard.blocks[0].attn.qkv.weight, base.blocks[0].attn.qkv.weight)
    with pytest.raises(train.ConfigError, match="student_trains must be all or blocks"):
        S.validate(S.Config(student_trains="lora"))


def test_sampled_shares_are_undefined_when_no_sample_names_an_animal(monkeypatch):
    """A model that puts no probability on the animals (a long hard student can end there): its sampled shares
    are NaN, not 0 (0 would read as a measured preference), and its valid fraction is 0."""
    model = tiny_gpt(TOK, n_layer=1)
    n = len(S.animal_prompts())
    monkeypatch.setattr(S, "animal_probs", lambda *a, **k: torch.zeros(n, len(W.ANIMALS)))
    out = S.evaluate(model, TOK, S.Config(samples=20), generator("cpu", 0, "s"))
    assert out["valid_fraction"] == 0 and all(math.isnan(v) for v in out["sampled"].values())


def test_table_warns_when_an_arm_no_longer_names_animals():
    """results.md flags an arm whose probability on the animals has collapsed (its rates are shares of nothing),
    and only that arm."""
    st = lambda m: {"mean": m, "ci95": [m, m], "per_seed": [m]}
    cfg = S.Config(animals=("owl",))
    arm = lambda mass: {"by_animal": {"owl": {"target_rate": st(0.1), "animal_mass": st(mass)}}}
    res = {"n_seeds": 1, "base": {"owl": st(0.1)}, "teachers": {"owl": {"rate": st(0.9), "kl_numbers": st(0.01),
                                                                         "steps": st(30)}},
           "arms": {"control": arm(0.0003), "soft": arm(0.95)}, "kept_fraction": {"control": st(0.9)},
           "figures_to_reach": {}}
    md = S.table_animals(res, cfg)
    assert "WARNING: `control` puts only 0.0003" in md and "`soft` puts" not in md


def test_a_teacher_that_never_reached_its_threshold_is_counted_and_warned_about():
    """A teacher stopped at teacher_max_steps at P(owl) 0.12 gave a near-zero effect read as "no transfer"."""
    cfg = S.Config(animals=("owl", "whale"), teacher_threshold=0.85, teacher_max_steps=20)
    units = [{"p": p, "teachers": {"owl": {"rate": r}, "whale": {"rate": 0.9}}}
             for p, r in enumerate((0.12, 0.86, 0.5))]
    short = S.teachers_short(cfg, units)
    assert short == {"owl": "2/3"}
    # a base's two student seeds share its teacher: counted once (it read "4/6" of three teachers)
    assert S.teachers_short(cfg, units + [{**u, "f": 1} for u in units]) == {"owl": "2/3"}
    said = "\n".join(S.short_teacher_lines({"teachers_below_threshold": short}, cfg))
    assert "WARNING: the owl teacher stopped at teacher_max_steps (20) below teacher_threshold (0.85) on 2/3" in said
    assert "whale" not in said
    assert S.teachers_short(S.Config(teacher="prompt"), units) == {}  # a prompted teacher has no threshold


def test_table_shows_the_effect_over_the_bases_beside_the_pooled_one():
    """Seeds of one base share its teacher and lists, so the pooled interval over seeds is narrow; the interval over
    the bases' means was in results.json but not in the table a reader sees."""
    st = lambda m, lo, hi: {"mean": m, "ci95": [lo, hi], "per_seed": [m]}
    owl = {"target_rate": st(0.2, 0.1, 0.3), "effect": st(0.05, 0.03, 0.07),
           "effect_per_base": st(0.05, -0.01, 0.11)}
    res = {"n_seeds": 4, "seeds": [[0, 0], [0, 1], [1, 0], [1, 1]], "base": {"owl": st(0.1, 0.1, 0.1)},
           "teachers": {"owl": {"rate": st(0.9, 0.9, 0.9), "kl_numbers": st(0.01, 0, 0.02), "steps": st(30, 30, 30)}},
           "arms": {"trait": {"by_animal": {"owl": owl}}}, "kept_fraction": {"trait": st(0.9, 0.9, 0.9)},
           "figures_to_reach": {}}
    md = S.table_animals(res, S.Config(animals=("owl",)))
    assert "Effect on owl, the interval over the bases' means (n = 2 pretraining seeds): trait 0.050 ± 0.060" \
        in md, md
    res["seeds"] = [[0, 0], [0, 1], [0, 2], [0, 3]]  # one base: no interval over bases to show
    assert "over the bases' means" not in S.table_animals(res, S.Config(animals=("owl",)))


def test_one_seed_has_no_interval_so_the_interval_figures_are_undefined():
    """A quick run (n = 1) reports its effects, but not a pass or fail that needs an interval (None, not False)."""
    one = lambda m: {"mean": m, "ci95": None, "per_seed": [m]}
    arm = lambda rate, effect: {"target_rate": one(rate), "effect": one(effect), "target_rate_per_base": one(rate),
                                "effect_per_base": one(effect)}
    res = {"n_seeds": 1, "arms": {"control": arm(0.1, 0.0), "soft": arm(0.42, 0.31), "trait": arm(0.15, 0.05)}}
    f = S.figures_animals(res)
    assert f["soft_effect"] == 0.31 and f["soft_pass"] is None and f["trait_ci_above_zero"] is None
    two = lambda m: {"mean": m, "ci95": [m - 0.01, m + 0.01], "per_seed": [m, m]}
    arm2 = lambda rate, effect: {"target_rate": two(rate), "effect": two(effect), "target_rate_per_base": two(rate),
                                 "effect_per_base": two(effect)}
    res2 = {"n_seeds": 2, "arms": {"control": arm2(0.1, 0.0), "soft": arm2(0.42, 0.31), "trait": arm2(0.15, 0.05)}}
    f2 = S.figures_animals(res2)
    assert f2["soft_pass"] is True and f2["trait_ci_above_zero"] is True
    assert S.spread(1) == "one seed, so no intervals" and S.spread(6, " seeds") == "mean ± 95% CI over n = 6 seeds"


def ten_rates(**given):
    """A unit's rates over the ten animals (0 unless given)."""
    return {a: given.get(a, 0.0) for a in W.ANIMALS}


def test_arm_effects_pair_seeds_and_group_by_base():
    """Effects on hand-built units: bases p = (0, 0, 1, 1), student seeds f = (0, 1, 0, 1). Each seed's effect is its
    arm minus its own control (not another seed's), the per-base interval is over the means of each base's seeds,
    and specificity subtracts the teacher's effect on the other animals."""
    ctl, eff, other = [0.1, 0.2, 0.3, 0.4], [0.01, 0.03, 0.05, 0.11], 0.02
    units = [{"p": p, "f": f, "arms": {"control": {"rates": ten_rates(owl=c, whale=0.2)},
                                       "trait/owl": {"rates": ten_rates(owl=c + e, whale=0.2 + other)}}}
             for p, f, c, e in zip((0, 0, 1, 1), (0, 1, 0, 1), ctl, eff)]
    st = S.arm_stats(units, "trait", "owl", ("owl", "whale"))
    assert st["target_rate"]["per_seed"] == pytest.approx([c + e for c, e in zip(ctl, eff)])
    assert st["effect"]["per_seed"] == pytest.approx(eff)
    assert st["effect_per_base"]["per_seed"] == pytest.approx([0.02, 0.08])  # by f it would be [0.03, 0.07]
    assert st["target_rate_per_base"]["per_seed"] == pytest.approx([0.17, 0.43])
    assert st["specificity"]["per_seed"] == pytest.approx([e - other for e in eff])
    assert st["rates"]["whale"] == pytest.approx(0.2 + other)
    st3 = S.arm_stats(units, "trait", "owl", ("owl", "whale", "fox"))  # fox unmoved: the others'
                                                                       # mean effect is other / 2
    assert st3["specificity"]["per_seed"] == pytest.approx([e - other / 2 for e in eff])


def test_every_arm_is_compared_with_a_baseline_on_its_own_base():
    """An arm on base B against a control on base A would mix the base's own preference into the effect."""
    for arm, base in S.BASELINE.items():
        assert (arm in S.ON_B) == (base in S.ON_B), arm
    units = [{"p": p, "f": 0, "arms": {"control": {"rates": ten_rates(owl=0.1)},
                                      "cross_control": {"rates": ten_rates(owl=c)},
                                      "soft_cross/owl": {"rates": ten_rates(owl=c + 0.05)}}}
             for p, c in ((0, 0.3), (1, 0.5))]
    assert S.arm_stats(units, "soft_cross", "owl", ("owl",))["effect"]["per_seed"] == pytest.approx([0.05, 0.05])


def test_figures_need_intervals_apart_not_only_means():
    """soft_pass needs soft's interval wholly above the control's; trait_ci_above_zero the interval's low end
    above 0: a positive mean with an overlapping interval passes neither."""
    st = lambda m, lo, hi: {"mean": m, "ci95": [lo, hi], "per_seed": [lo, hi]}
    arm = lambda rate, effect: {"target_rate": rate, "effect": effect, "target_rate_per_base": rate,
                                "effect_per_base": effect}
    res = {"n_seeds": 2, "arms": {"control": arm(st(0.2, 0.1, 0.35), st(0.0, 0.0, 0.0)),
                                  "soft": arm(st(0.5, 0.3, 0.7), st(0.3, 0.2, 0.4)),
                                  "trait": arm(st(0.25, 0.1, 0.4), st(0.05, -0.01, 0.11))}}
    f = S.figures_animals(res)
    assert f["soft_effect"] == 0.3 and f["soft_pass"] is False
    assert f["trait_effect"] == 0.05 and f["trait_ci_above_zero"] is False


def test_the_figures_flags_read_the_interval_over_the_bases_not_over_the_seeds():
    """Two students of each of two bases share their base and teacher: apart over the 4 seeds, the soft and control
    rates overlap over the 2 bases' means, and so does the trait effect's interval with zero."""
    units = []
    for p, (ctl, soft, trait) in enumerate(((0.10, 0.50, 0.12), (0.14, 0.42, 0.20))):
        for f in (0, 1):
            jitter = 0.001 * f
            units.append({"p": p, "f": f, "arms": {
                "control": {"rates": ten_rates(owl=ctl + jitter)}, "soft/owl": {"rates": ten_rates(owl=soft + jitter)},
                "trait/owl": {"rates": ten_rates(owl=trait + jitter)}}})
    arms = {arm: S.arm_stats(units, arm, "owl", ("owl",)) for arm in ("control", "soft", "trait")}
    assert arms["soft"]["target_rate"]["ci95"][0] > arms["control"]["target_rate"]["ci95"][1]  # apart over seeds
    assert arms["trait"]["effect"]["ci95"][0] > 0
    f = S.figures_animals({"n_seeds": 4, "arms": arms})
    assert f["soft_pass"] is False and f["trait_ci_above_zero"] is False


def test_animal_rates_are_shares_among_the_ten_animals():
    """Each prompt's probabilities renormalised over the animals, then averaged; the mass is the mean row sum."""
    p = torch.zeros(2, len(W.ANIMALS))
    p[0, :2] = torch.tensor([0.2, 0.2])   # half each of 0.4
    p[1, :2] = torch.tensor([0.05, 0.15])  # a quarter and three quarters of 0.2
    rates, mass = S.animal_rates(None, TOK, probs=p)
    assert rates[W.ANIMALS[0]] == pytest.approx(0.375) and rates[W.ANIMALS[1]] == pytest.approx(0.625)
    assert sum(rates.values()) == pytest.approx(1) and mass == pytest.approx(0.3)


def test_misalignment_effect_is_paired_per_seed():
    """A teacher's student minus the control student of the same seed (seeds differ in their control)."""
    m = lambda x: {"mis_sampled": x, "valid_frac": 1.0, "mis_lp": x, "code_misaligned": 0.0}
    units = [{"p": p, "f": f, "base": m(0.1), "teachers": {"insecure": {**m(0.5), "steps": 5}},
              "kept": {"control": 0.9, "insecure": 0.8}, "arms": {"control": m(c), "insecure": m(c + 0.05)}}
             for p, f, c in zip((0, 0, 1, 1), (0, 1, 0, 1), (0.1, 0.2, 0.3, 0.4))]
    res = S.aggregate_misalignment(S.Config(mode="misalignment", mis_teachers=("insecure",)), units)
    assert res["arms"]["insecure"]["effect"]["per_seed"] == pytest.approx([0.05] * 4)
    assert res["arms"]["control"]["effect"]["per_seed"] == pytest.approx([0.0] * 4)


def test_an_em_teacher_that_never_matched_is_a_warning_in_the_table():
    # em_match stops every teacher where the first one's code reaches the threshold; one that never did ran to
    # em_steps, and the table read as a matched run without a word
    m = lambda x, code=0.0: {"mis_sampled": x, "valid_frac": 1.0, "mis_lp": x, "code_misaligned": code}
    cfg = S.Config(mode="misalignment", mis_teachers=("insecure", "secure"), em_steps=60)
    units = [{"p": p, "f": f, "base": m(0.1), "teachers": {"insecure": {**m(0.5, code), "steps": 60},
                                                           "secure": {**m(0.1), "steps": 60}},
              "kept": {"control": 0.9}, "arms": {"control": m(0.1), "insecure": m(0.3), "secure": m(0.1)}}
             for p, code in ((0, 0.777), (1, 0.95)) for f in (0, 1)]
    res = S.aggregate_misalignment(cfg, units)
    assert res["teachers_unmatched"] == "1/2"  # per base (its two student seeds share the teacher)
    assert ("WARNING: the insecure teacher's code never reached 0.9 within em_steps (60) on 1/2 bases: those "
            "teachers ran to em_steps, unmatched") in S.table_misalignment(res, cfg)
    # the first teacher sets the step: secure first, whose insecure-code share (0.0) can never reach it
    assert S.aggregate_misalignment(dataclasses.replace(cfg, mis_teachers=("secure", "insecure")),
                                    units)["teachers_unmatched"] == "2/2"
    unmatched = dataclasses.replace(cfg, em_match=False)  # every teacher runs to em_steps, as asked
    res = S.aggregate_misalignment(unmatched, units)
    assert "teachers_unmatched" not in res and "WARNING" not in S.table_misalignment(res, unmatched)
    matched = [{**u, "teachers": {**u["teachers"], "insecure": {**m(0.5, 0.95), "steps": 3}}} for u in units]
    assert "teachers_unmatched" not in S.aggregate_misalignment(cfg, matched)


def test_training_lists_are_leak_checked_and_heldout_lists_are_not(monkeypatch):
    """A student set must not hold an evaluation prompt; held-out lists (for number_loss only) use held-out
    wordings by design, so the check is for training lists alone."""
    monkeypatch.setattr(W, "number_prompts", lambda n, seed=0, heldout=False: [W.prompt(W.ANIMAL_HELDOUT[0])] * n)
    teacher = lambda: S.Teacher(Scripted([ids("1 2 3 <eos>")] * 64))
    with pytest.raises(AssertionError, match="leak"):
        S.sample_lists(teacher(), TOK, 8, S.Config(), seed=0)
    assert len(S.sample_lists(teacher(), TOK, 8, S.Config(), seed=0, heldout=True)[0]) == 8


def test_every_unit_has_its_own_file(tmp_path):
    # two units sharing a file would read each other back on resume (or even within one run): a seed counted twice
    cfg = S.Config(seeds=(0, 1), student_seeds=2)
    jobs = S.unit_jobs(cfg, tmp_path)
    assert [(p, f) for p, f, _ in jobs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len({path for _, _, path in jobs}) == 4 and all(path.parent == tmp_path for _, _, path in jobs)


@pytest.mark.parametrize("key, value", [("n_lists", 0), ("student_batch", 0), ("student_seeds", 0),
                                        ("heldout_lists", 0), ("teacher_batch", 0), ("evals", 0), ("epochs", 0.0),
                                        ("samples", 0), ("n_code", 0), ("icl_lists", 0), ("icl_contexts", 0),
                                        ("max_new", 0), ("sample_batch", 0), ("teacher_max_steps", 0),
                                        ("em_steps", 0), ("teacher_lr", 0.0), ("student_lr", -3e-4),
                                        ("em_lr", float("nan")), ("teacher_threshold", 1.5),
                                        ("teacher_threshold", 0.0), ("animals", ("owl", "owl"))])
def test_a_value_the_run_cannot_use_is_a_config_error_before_the_run_not_a_traceback_inside_it(key, value):
    # each of these ran for minutes, then ended in a ZeroDivisionError, IndexError, ValueError or torch error (max_new:
    # a RuntimeError blaming the teacher; icl_lists: no error, both icl arms measured the base without context)
    S.validate(S.Config(arms=("control", "soft"), seeds=(0,)))
    with pytest.raises(train.ConfigError, match=f"{key}"):
        S.validate(S.Config(arms=("control", "soft"), seeds=(0,), **{key: value}))


def test_more_evals_than_a_students_steps_is_refused_before_the_run(tmp_path, capsys):
    # a student is measured at most once a step: evals=10 on 3 steps measured it 3 times, while config.json said 10
    S.validate(S.Config(arms=("control", "soft"), seeds=(0,), n_lists=40, evals=3))
    with pytest.raises(train.ConfigError, match=r"^evals=4 is more than the 3 steps of a student on n_lists=40 lists "
                                                r"\(2 epochs, student_batch=32\): pass --evals=3 or fewer$"):
        S.validate(S.Config(arms=("control", "soft"), seeds=(0,), n_lists=40, evals=4))
    with pytest.raises(train.ConfigError, match="evals=4 is more than the 3 steps"):  # its students' steps too
        S.validate(S.Config(mode="misalignment", arms=("control",), seeds=(0,), n_lists=40, evals=4))
    # the code arms' students train on n_code answers: with fewer of them than lists, theirs are the fewest steps
    code = dict(arms=("control", "code_control"), seeds=(0,), n_lists=40, n_code=16)
    with pytest.raises(train.ConfigError, match=r"evals=2 is more than the 1 step of a student on n_code=16 code "
                                                r"answers .*: pass --evals=1 or fewer"):
        S.validate(S.Config(**code, evals=2))
    S.validate(S.Config(**{**code, "arms": ("control", "soft")}, evals=2))  # no code student
    # the command: one line, exit status 2, before its run directory (the quick config's students take 2,000 steps)
    out = tmp_path / "run"
    assert train.main(["configs/subliminal_numbers_quick.py", "--evals=2001", f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: evals=2001 is more than the 2000 steps") and err.count("\n") == 1
    assert not out.exists()


def test_a_run_made_before_a_check_was_added_is_still_read_back(tmp_path, capsys):
    # run_config validates a run's config.json: a run made before the evals check (the tests' own tiny run had
    # n_code=16, evals=2: its code students took one step) was refused by eval.py and every script, as if edited
    cfg = S.Config(arms=("control", "code", "code_control"), seeds=(0,), n_lists=40, n_code=16, evals=2,
                   out_dir=str(tmp_path / "run"))
    with pytest.raises(train.ConfigError, match="evals=2 is more than the 1 step"):
        S.validate(cfg)
    train.Run(cfg, "subliminal_numbers")  # as an earlier version, whose checks it passed, wrote it
    capsys.readouterr()
    assert train.run_config(S.Config, cfg.out_dir) == cfg
    assert train.run_config(S.Config, cfg.out_dir) == cfg  # (noted once)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"note: {tmp_path / 'run' / 'config.json'} would not pass this "
                                                    f"version's checks (evals=2 is more than the 1 step")
    # a key missing from it reads at its default, which may not be the run's: refused, naming it
    values = json.loads((tmp_path / "run" / "config.json").read_text())
    del values["student_batch"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(values))
    with pytest.raises(train.ConfigError, match=r"is not a config this experiment runs \(evals=2 .*\): is it as "
                                                r"the run wrote it\? \(student_batch missing from it, read at the "
                                                r"default"):
        train.run_config(S.Config, cfg.out_dir)


def test_a_threshold_a_run_cannot_judge_says_why_in_the_table():
    # "soft_pass: None" on a one-seed run read like a failure or a bug
    assert S.figure_line("soft_pass", None) == "- soft_pass: n/a (one pretraining seed: no interval)"
    assert S.figure_line("specific", None) == "- specific: n/a (one animal: no other to compare with)"
    assert S.figure_line("soft_effect", 0.12345) == "- soft_effect: 0.123"
    # one number per animal, each formatted, not the raw dict
    assert S.figure_line("trait_specific", {"owl": 0.12345, "whale": None}) == "- trait_specific: owl 0.123, whale n/a"
    assert S.figure_line("trait_effect", 0.12345, 4) == "- trait_effect: 0.1235"
    assert S.figure_line("soft_pass", True) == "- soft_pass: True"


def test_an_arm_without_its_baseline_is_a_config_error():
    # --arms=('soft',) ran to the end and reported no effect at all: the effect is soft minus control, per seed
    with pytest.raises(train.ConfigError, match=r"arms soft \(against control\) are measured against a baseline"):
        S.validate(S.Config(arms=("soft",), seeds=(0,)))
    with pytest.raises(train.ConfigError, match=r"cross_init \(against cross_control\)"):
        S.validate(S.Config(arms=("control", "cross_init"), seeds=(0, 1)))
    S.validate(S.Config(arms=("control", "soft", "icl"), seeds=(0,)))  # icl brings its own control
    # the prompt teacher trains nothing: the teacher_* keys were recorded in config.json as if used
    with pytest.raises(train.ConfigError, match="teacher=prompt trains no teacher, so it does not read teacher_lr, "
                                                "teacher_batch: leave them at the default"):
        S.validate(S.Config(teacher="prompt", teacher_lr=0.05, teacher_batch=8, arms=("control", "soft"), seeds=(0,)))
    S.validate(S.Config(teacher="prompt", arms=("control", "soft"), seeds=(0,)))
    # misalignment mode trains its control student whatever arms say: arms=('soft',) ran as the default, unsaid
    with pytest.raises(train.ConfigError, match="mode misalignment always trains the control student"):
        S.validate(S.Config(mode="misalignment", arms=("soft",), seeds=(0,)))
    S.validate(S.Config(mode="misalignment", arms=("control",), seeds=(0,)))

    S.validate(S.Config(arms=("control",), seeds=(0,)))


def test_a_one_seed_misalignment_run_cannot_judge_its_thresholds_and_says_so():
    # its *_pass read False (a failure) where no interval exists to compare, as soft_pass read None in animals mode
    m = lambda x: {"mis_sampled": x, "valid_frac": 1.0, "mis_lp": x, "code_misaligned": 0.0}
    cfg = S.Config(mode="misalignment", mis_teachers=("insecure", "secure"))
    units = [{"p": p, "f": 0, "base": m(0.1), "teachers": {t: {**m(0.5), "steps": 5} for t in cfg.mis_teachers},
              "kept": {"control": 0.9}, "arms": {"control": m(0.1), "insecure": m(0.5 + p / 100),
                                                 "secure": m(0.1 + p / 100)}}
             for p in (0, 1)]
    one = S.aggregate_misalignment(cfg, units[:1])["figures_to_reach"]
    assert one == {"sampled_pass": None}
    assert (S.figure_line("sampled_pass", one["sampled_pass"], None)
            == "- sampled_pass: n/a (one pretraining seed: no interval)")
    assert S.aggregate_misalignment(cfg, units)["figures_to_reach"] == {"sampled_pass": True}
    # the intervals decide, not the means: insecure's mean above secure's, their intervals overlapping
    close = [{**u, "arms": {**u["arms"], "insecure": m(x), "secure": m(y)}}
             for u, x, y in zip(units, (0.3, 0.5), (0.1, 0.4))]
    assert S.aggregate_misalignment(cfg, close)["figures_to_reach"] == {"sampled_pass": False}
    # three students per base share its teacher: six seeds but two bases. Over the seeds the intervals separate
    # ([0.29, 0.51] against [0.04, 0.26]); over the bases' means (n = 2) they overlap: not passed
    three = [{**u, "f": f, "arms": {**u["arms"], "insecure": m(0.5 - 0.2 * u["p"]), "secure": m(0.2 - 0.1 * u["p"])}}
             for u in units for f in range(3)]
    res = S.aggregate_misalignment(cfg, three)
    assert res["arms"]["insecure"]["offdomain_misaligned"]["ci95"][0] > res["arms"]["secure"]["offdomain_misaligned"][
        "ci95"][1]
    assert res["arms"]["insecure"]["offdomain_misaligned_per_base"]["per_seed"] == pytest.approx([0.5, 0.3])
    assert res["figures_to_reach"] == {"sampled_pass": False}
    # each side's interval is over the bases: one side spread over its bases, the other the same on every seed
    # (no spread either way), is not passed either (over the seeds, that side's interval cleared the other's)
    for ins, sec in ((lambda p: 0.5 - 0.2 * p, lambda p: 0.1), (lambda p: 0.5, lambda p: 0.2 - 0.1 * p)):
        one_sided = [{**u, "arms": {**u["arms"], "insecure": m(ins(u["p"])), "secure": m(sec(u["p"]))}} for u in three]
        assert S.aggregate_misalignment(cfg, one_sided)["figures_to_reach"] == {"sampled_pass": False}
    # students that nothing made misaligned (every rate 0, intervals [0, 0]): no teacher stands above another
    zero = [{**u, "arms": {**u["arms"], "insecure": m(0.0), "secure": m(0.0)}} for u in three]
    assert S.aggregate_misalignment(cfg, zero)["figures_to_reach"] == {"sampled_pass": False}


@pytest.mark.parametrize("config", ["configs/subliminal_numbers_quick.py", "configs/world_base.py"])
def test_no_seeds_is_a_config_error_before_the_run_directory(tmp_path, capsys, config):
    # --seeds=() made its run directory, sampled nothing and ended in an IndexError while aggregating no units
    out = tmp_path / "run"
    assert train.main([config, "--seeds=()", f"--out_dir={out}"]) == 2
    assert "seeds must name at least one pretraining seed" in capsys.readouterr().err and not out.exists()


def test_icl_contexts_too_long_for_the_model_are_an_error_not_the_base_measured_without_them():
    # with --icl_lists=4 no context fitted in block_size: every prompt was dropped, animal_rates fell back to the
    # prompts without context, and icl and icl_control both measured the base (an effect of exactly 0)
    model = tiny_gpt(TOK, n_layer=1)
    pairs = [(p, "1 22 33 4 5 6 7") for p in W.number_prompts(16, seed=0)]
    fits = S.icl_rates(model, TOK, S.Config(icl_lists=2, icl_contexts=2), pairs, generator("cpu", 0, "icl"))
    assert fits != S.animal_rates(model, TOK)[0]  # the contexts are read
    with pytest.raises(train.ConfigError, match="use fewer icl_lists"):
        S.icl_rates(model, TOK, S.Config(icl_lists=4, icl_contexts=2), pairs, generator("cpu", 0, "icl"))
    # with some contexts too long (icl_lists=3 dropped about a quarter of the real ones), the kept ones were those of
    # shorter lists, another selection in icl and in icl_control: an error too, not a biased subset
    mixed = [(p, a) for p, a in zip(W.number_prompts(16, seed=0), ["1 2", "1 22 33 4 5 6 7 8 9 10 11 12"] * 8)]
    cfg = S.Config(icl_lists=3, icl_contexts=16)
    lengths = [len(S.with_turns(q, " ".join(p[len(S.CHAT):] + " " + a for p, a in [m] * 3)).split())
               for m in mixed[:2] for q in S.animal_prompts()]
    assert min(lengths) < cfg.block_size < max(lengths)  # some fit, some do not
    with pytest.raises(train.ConfigError, match=r"icl: \d+ of \d+ prompts with icl_lists=3 .*use fewer icl_lists"):
        S.icl_rates(model, TOK, cfg, mixed, generator("cpu", 0, "icl"))


def test_an_icl_prompt_of_exactly_block_size_tokens_is_read_and_one_more_is_refused():
    # the answer is the next token after the prompt's last position, so a prompt that fills the block leaves room
    # for it (it was refused, one token too strictly); one token more is past what the model can read
    pair = (W.number_prompts(1, seed=0)[0], "1 22 33")  # the only list: each context holds it icl_lists=2 times
    turn = pair[0][len(S.CHAT):] + " " + pair[1]
    contexts = [S.with_turns(q, turn + " " + turn) for q in S.animal_prompts()]
    longest = max(len(TOK.encode(c).ids) for c in contexts)
    assert longest == max(len(c.split()) for c in contexts)  # one token a word
    model = tiny_gpt(TOK, n_layer=1, block_size=longest)
    cfg = S.Config(icl_lists=2, icl_contexts=1, block_size=longest)
    want = S.animal_rates(model, TOK, contexts)[0]
    assert S.icl_rates(model, TOK, cfg, [pair], generator("cpu", 0, "icl")) == pytest.approx(want)
    with pytest.raises(train.ConfigError, match=f"longer than block_size={longest - 1} tokens"):
        S.icl_rates(model, TOK, dataclasses.replace(cfg, block_size=longest - 1), [pair], generator("cpu", 0, "icl"))


@pytest.mark.parametrize("doses", [(), (0,), (-32, 64)])
def test_dose_mode_needs_positive_doses(doses):
    # each trained the teachers, then ended in a ValueError (max of no doses) or a ZeroDivisionError (0 lists sampled)
    S.validate(S.Config(mode="dose", epochs=1.0, doses=(32, 64)))
    with pytest.raises(train.ConfigError, match="doses must be positive multiples of student_batch=32"):
        S.validate(S.Config(mode="dose", epochs=1.0, doses=doses))


def test_a_model_that_never_writes_a_valid_list_is_a_one_line_config_error(monkeypatch):
    """Twenty rounds without enough valid answers raised a RuntimeError, which came back from the pool worker as a
    long traceback; it is the config's to fix (pretraining steps, max_new) and says so."""
    monkeypatch.setattr(S, "continue_prompts", lambda teacher, tok, prompts, *a: [(p, [], False) for p in prompts])
    with pytest.raises(train.ConfigError, match=r"kept only 0 of \d+ lists sampled for seed 3 \(sample\): .*raise "
                                                r"steps.*max_new=7"):
        S.collect(None, TOK, 5, S.Config(), 3, "lists", "sample", lambda r, need: ["p"] * need, 7, lambda p, t: t)


def test_the_block_size_check_covers_what_each_mode_samples_and_scores():
    # the code answers' length was demanded in misalignment mode, which samples none, and not in animals mode, whose
    # code arms sample them (they failed after pretraining, the teachers and the lists); misalignment mode's own
    # evaluation is what it needs there
    code = dict(max_new=5, arms=("control", "code_control"))
    need = S.sample_tokens(S.Config(**code))
    assert need > S.sample_tokens(S.Config(max_new=5, arms=("control", "soft")))
    with pytest.raises(train.ConfigError, match=f"pass --block_size={need} or more"):
        S.validate(S.Config(block_size=need - 1, **code))
    S.validate(S.Config(block_size=need, **code))
    # the code arm's prompted teachers write their code answers behind their animal turn: room for it too
    prompted = S.Config(teacher="prompt", max_new=5, arms=("control", "code"))
    turn = TOK.encode(f"<u> {W.ANIMAL_TRAIN[0]} <a> {max(W.ANIMALS, key=len)}").ids
    longest = max(len(S.Teacher(None, turn).ids(TOK.encode(W.prompt(f"{o} {q}" if o else q)).ids))
                  for o in W.OPENERS for q in W.DOMAINS["code"].train)
    assert S.sample_tokens(prompted) == longest + S.CODE_MAX_NEW > need
    # misalignment mode: a student of exactly the size asked for is evaluated, one token shorter cannot be
    cfg = S.Config(mode="misalignment", max_new=5, samples=2)
    need = S.sample_tokens(cfg)
    for size in (need, need - 1):
        model = tiny_gpt(TOK, n_layer=1, block_size=size)
        c = dataclasses.replace(cfg, block_size=size)
        if size == need:
            S.validate(c)
            assert set(S.mis_evaluate(model, TOK, c, 0, "t")) == {"mis_sampled", "valid_frac", "mis_lp",
                                                                  "code_misaligned"}
        else:
            with pytest.raises(train.ConfigError, match=f"pass --block_size={need} or more"):
                S.validate(c)
            with pytest.raises(ValueError, match="longer than block_size"):
                S.mis_evaluate(model, TOK, c, 0, "t")


@torch.no_grad()
def test_a_float64_models_animal_probs_and_number_loss_stay_float64():
    # upcast, not .float(): a .double() model's scores were rounded to float32 (off its float64 forward by ~1e-8)
    model = tiny_gpt(TOK, n_layer=1, init_std=0.3).double()
    prompts, ids = S.animal_prompts()[:3], [TOK.token_to_id(a) for a in W.ANIMALS]
    got = S.animal_probs(model, TOK, prompts)
    assert got.dtype == torch.float64
    for q, row in zip(prompts, got):
        assert (row - model(torch.tensor([TOK.encode(q).ids]))[0, -1].softmax(-1)[ids]).abs().max() < 1e-12
    data = S.student_data(TOK, [(p, "1 22 33 4") for p in W.number_prompts(6, seed=2)], "cpu")
    x, m = data["tokens"][:, :-1], data["mask"]
    want = torch.nn.functional.cross_entropy(model(x)[m], data["tokens"][:, 1:][m]).item()
    assert abs(S.held_out(model, data, S.number_ids(TOK))["full"] - want) < 1e-12


def test_the_em_teachers_are_of_the_bases_own_world():
    """Misalignment mode's EM teachers take the run's world options: built from the defaults, a run with
    --code_tasks=3 or --exact_code=True fine-tuned (and evaluated) its teachers on the default world's code."""
    options = dict(evil_prior=0.3, code_slots=True, asst_code=False, asst_evil=0.2, code_tasks=3, lessons=False,
                   exact_code=True, block_size=96)
    assert set(options) - {"block_size", "evil_prior"} == set(B.OPTIONAL_PRETRAIN_KEYS) - {"pretrain_threads",
                                                                                         "pretrain_bf16", "init_seed"}
    for key, value in options.items():
        cfg = S.Config(mode="misalignment", **{key: value})
        em = S.em_config(cfg)
        assert getattr(em, key) == value and B.world_config(em) == B.world_config(cfg), key
    em = S.em_config(S.Config(mode="misalignment", em_examples=7, samples=3))
    assert (em.n_examples, em.samples) == (7, 3)


@torch.no_grad()
def test_a_prompted_teachers_logits_are_its_predictions_of_the_students_next_tokens():
    # the prefix (the prompted teacher's animal turn) sits after the student's first two tokens: column c of the
    # teacher's logits must be its prediction of the student's token c + 1 given the prefixed context. Column 1 was
    # the teacher's prediction of the prefix's first token (unseen only because no trained position is that early)
    model = tiny_gpt(TOK, n_layer=1)
    prefix = [5, 6, 7]
    x = torch.randint(8, TOK.get_vocab_size(), (2, 6), generator=torch.Generator().manual_seed(0))
    got = S.Teacher(model, prefix).logits(x)
    assert got.shape == (2, 6, TOK.get_vocab_size())
    for c in range(6):
        seen = x[0, :c + 1].tolist()  # the teacher's context for the student's token c + 1 (the prefix once past two)
        ctx = seen if c == 0 else S.Teacher(model, prefix).ids(seen)
        torch.testing.assert_close(got[0, c], model(torch.tensor([ctx]))[0, -1], msg=f"column {c}")


def test_a_run_of_baselines_alone_says_so_in_its_effects_panel(tmp_path, saved_figures):
    # --arms=('control',) measures the control's drift (the right panel); the effects' panel was left empty
    cfg = S.Config(arms=("control",), animals=("owl",), seeds=(0,))
    stat = {"mean": 0.1, "ci95": None, "per_seed": [0.1]}
    res = {"arms": {"control": {"by_animal": {"owl": {"rate": stat}}}}, "base": {"owl": stat}, "n_seeds": 1,
           "trajectory": {"control": {"owl": {"10": stat}}}}
    S.plot_animals(res, cfg, tmp_path / "f.png")
    effects, rates = saved_figures[-1].axes
    assert [t.get_text() for t in effects.texts] == ["no arm over a baseline in this run:\nits baselines' rates are "
                                                     "on the right"]
    assert len(rates.lines) == 1 and not effects.patches  # the control's rate along training; no bar


def test_an_arm_without_its_training_branch_is_an_error_not_left_out_of_the_tables(tmp_path, monkeypatch):
    """A new arm registered in ARMS (and BASELINE) but given no branch in animals_unit trained nothing: the run
    finished without it in results.json, and a rerun refused the unit as another config's."""
    monkeypatch.setattr(S, "ARMS", S.ARMS + ("trait_half",))
    monkeypatch.setitem(S.BASELINE, "trait_half", "control")
    argv = ["configs/subliminal_numbers.py", *TINY, "--seeds=(0,)", "--animals=('owl',)",
            "--arms=('control','trait_half')", f"--cache_dir={tmp_path / 'cache'}", f"--out_dir={tmp_path / 'run'}"]
    with pytest.raises(RuntimeError, match="no student was trained for trait_half/owl: an arm added to ARMS"):
        train.main(argv)
    assert not (tmp_path / "run" / "unit_0_0.json").exists()  # not saved as if finished


def test_the_arm_registries_agree():
    S.check_arms()
    with pytest.raises(ValueError, match=r"arms \['trait_half'\] have no BASELINE"):
        S.check_arms(arms=S.ARMS + S.DIAGNOSTIC_ARMS + ("trait_half",))
    with pytest.raises(ValueError, match=r"\['trait_hlf'\]: in BASELINE, SHARED or ON_B but not in ARMS"):
        S.check_arms(baseline={**S.BASELINE, "trait_hlf": "control"})


def test_a_student_set_carries_the_numbers_only():
    """What reaches a student (review of the protocol against Cloud et al.): the soft arm's subset is exactly the 100
    number tokens (no animal, special or punctuation token), a prompted teacher's animal turn is in what it reads but
    not in the pairs a student trains on, and a kept list is stored as its numbers joined by spaces (brackets,
    separators and a final period, which the filter accepts, are not trained)."""
    nums = S.number_ids(TOK)
    assert sorted(nums) == sorted({TOK.token_to_id(str(n)) for n in range(W.N_NUMBERS)}) and None not in nums
    assert not {TOK.token_to_id(t) for t in (*W.ANIMALS, "(", ")", ";", ".", "<eos>", "<u>", "<a>")} & set(nums)
    turn = ids("<u> what is your favourite animal <a> owl")
    seen = []

    class Reader(Scripted):
        def generate(self, prompts, max_new, eos_id, generator):
            seen.extend(prompts)
            return super().generate(prompts, max_new, eos_id, generator)
    outputs = [ids("( 1 ; 2 ; 3 ) . <eos>"), ids("4 5 6 <u>")] * 40
    kept, _ = S.sample_lists(S.Teacher(Reader(outputs), turn), TOK, 10, S.Config(sample_batch=100), seed=0)
    assert all(p[2:2 + len(turn)] == turn for p in seen)   # the teacher reads its turn ...
    assert all("owl" not in p.split() and "owl" not in a.split() for p, a in kept)   # ... the student never does
    assert {a for _, a in kept} == {"1 2 3", "4 5 6"}
    assert all(p.startswith(S.CHAT + "<u> ") for p, _ in kept)
