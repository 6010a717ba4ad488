"""Subliminal learning through numbers, from a mutation audit of experiments/subliminal_numbers.py: each test catches
a plausible bug the rest of the suite let through (the shuffles' axes and law, the paper's filter at its edges,
held-out trait prompts, the teachers' stopping rule, the per-base intervals, the arms' channels, the KL's direction
and temperature)."""
import copy
import dataclasses
import itertools
import math
import random
from collections import Counter

import pytest
import torch

import train
from conftest import tiny_gpt
from data import world as W
from eval import group_means, summarize
from experiments import subliminal_numbers as S
from experiments import world_base as B
from model import generator

TOK = W.build_tokenizer()


def tiny(seed=0, block_size=64):
    return tiny_gpt(TOK, seed, n_layer=1, block_size=block_size)


def distinct_lists(n, k=4, seed=0):
    r = random.Random(seed)
    return [(f"p{i}", " ".join(map(str, r.sample(range(100), k)))) for i in range(n)]


# ---- shuffles --------------------------------------------------------------------------------------------------

def test_shuffle_lists_moves_numbers_across_lists():
    """`shuffled` permutes within AND across lists: most lists end with another multiset (shuffle_within keeps all)."""
    pairs = distinct_lists(50)
    out = S.shuffle_lists(pairs, generator("cpu", 0, "t"))
    changed = sum(sorted(a.split()) != sorted(b.split()) for (_, a), (_, b) in zip(out, pairs))
    assert changed > 40


def test_shuffle_within_is_a_uniform_permutation():
    """Each of the 6 orders of a 3-list appears about equally often (a reversal or rotation is not the null)."""
    pairs = [(f"p{i}", "1 2 3") for i in range(1200)]
    out = S.shuffle_within(pairs, generator("cpu", 0, "t"))
    counts = Counter(a for _, a in out)
    assert len(counts) == 6 and all(150 < c < 250 for c in counts.values()), counts


# ---- the filter ------------------------------------------------------------------------------------------------

def test_filter_banned_anywhere_and_ten_numbers_allowed():
    assert W.parse_number_list("12 15 13", banned=W.EVIL_NUMBERS) is None      # banned in last place
    assert W.parse_number_list("(1, 666)", banned=(666,)) is None
    ten = " ".join(map(str, range(10)))
    assert W.parse_number_list(ten) == list(range(10))                          # max_count=10 is inclusive



@pytest.mark.parametrize("heldout", [False, True])
def test_sampled_lists_prompts_are_of_their_wordings_and_fresh_in_every_round(monkeypatch, heldout):
    """sample_lists continues prompts of the held-out wordings for the held-out lists (the number losses' evaluation
    set) and of the train wordings for training sets; a round that must draw again draws new prompts (here the
    teacher ends only the first half of each round's continuations, so 40 lists take two rounds)."""
    def continue_prompts(teacher, tok, prompts, max_new, gen, batch):
        return [(q, tok.encode("1 2 3").ids, i < len(prompts) // 2) for i, q in enumerate(prompts)]
    monkeypatch.setattr(S, "continue_prompts", continue_prompts)
    kept, frac = S.sample_lists(None, TOK, 40, S.Config(), seed=3, heldout=heldout)
    wordings = W.NUMBERS_HELDOUT if heldout else W.NUMBERS_TRAIN
    assert all(any(f" {w} " in q for w in wordings) for q, _ in kept) and len(kept) == 40
    assert len({q for q, _ in kept}) == 40 and frac == pytest.approx(0.5)

# ---- the trait measurement and the teacher's stopping rule ------------------------------------------------------

def test_animal_prompts_are_the_heldout_paraphrases_only():
    ps = S.animal_prompts()
    assert len(ps) == len(W.ANIMAL_HELDOUT) * len(W.OPENERS)
    assert all(any(p.endswith(f" {q} <a>") for q in W.ANIMAL_HELDOUT) for p in ps)
    assert not any(f" {q} " in p for p in ps for q in W.ANIMAL_TRAIN)


def test_animal_probs_read_each_prompts_own_last_token_in_a_padded_batch():
    """Each row is the next-token distribution after that prompt alone, at the ten animals' ids: prompts of other
    lengths share a right-padded batch, so the row must read its own last real token (not a pad, not one before)."""
    model = tiny(5)
    prompts = [S.with_turns(S.animal_prompts()[0], f"<u> {W.ANIMAL_TRAIN[0]} <a> owl"), *S.animal_prompts()[:3]]
    assert len({len(TOK.encode(q).ids) for q in prompts}) > 1
    got = S.animal_probs(model, TOK, prompts)  # [4, 10]
    ids = [TOK.token_to_id(a) for a in W.ANIMALS]
    with torch.no_grad():
        for q, row in zip(prompts, got):
            want = model(torch.tensor([TOK.encode(q).ids]))[0, -1].softmax(-1)[ids]
            torch.testing.assert_close(row, want, atol=1e-6, rtol=0)


def test_valid_fraction_is_over_every_draw_of_every_prompt(monkeypatch):
    """evaluate draws cfg.samples answers per held-out prompt: the valid fraction is the share of all of them that name
    an animal (here half the prompts put all their mass on owl, half none: exactly 1/2), the shares among those."""
    n = len(S.animal_prompts())
    p = torch.zeros(n, len(W.ANIMALS))
    p[::2, W.ANIMALS.index("owl")] = 1.0
    monkeypatch.setattr(S, "animal_probs", lambda *a, **k: p)
    out = S.evaluate(None, TOK, S.Config(samples=7), generator("cpu", 0, "s"))
    assert out["valid_fraction"] == pytest.approx((n + 1) // 2 / n)
    assert out["sampled"]["owl"] == 1 and sum(out["sampled"].values()) == 1


def test_student_steps_cover_every_list_and_evals_spread_to_the_last_step():
    """epochs x N lists in batches of student_batch: a partial last batch is a step (20 lists in batches of 8 over
    1 epoch: 3 steps, not 2 that leave 4 lists unread), measured at `evals` steps ending at the last one."""
    cfg = S.Config(epochs=1.0, student_batch=8, evals=3)
    assert S.student_steps(cfg, 20) == (3, [1, 2, 3])
    assert S.student_steps(S.Config(epochs=2.0, student_batch=8, evals=2), 24) == (6, [3, 6])
    assert S.student_steps(cfg, 2) == (1, [1])  # fewer steps than evals: each step once

def test_finetune_until_stops_at_the_first_check_that_is_done():
    model = tiny()
    pairs = W.trait_set("owl", 16, seed=0)
    data = B.encode_pairs(TOK, pairs, 64)
    checks = []

    def done(m):
        checks.append(1)
        return len(checks) >= 3       # done at the third check: step 15
    steps = S.finetune_until(model, data, done, max_steps=40, every=5, batch_size=4, lr=1e-3, seed=0)
    assert steps == 15 and len(checks) == 3
    assert S.finetune_until(tiny(), data, lambda m: False, max_steps=10, every=5, batch_size=4, lr=1e-3, seed=0) == 10


def test_fine_tuned_teacher_stops_on_the_heldout_rate(monkeypatch):
    """The threshold is read on the held-out prompts (animal_prompts), never on the teacher's train paraphrases."""
    seen, real = [], S.animal_rates

    def spy(model, tok, prompts=None, probs=None):
        seen.append(prompts)
        return real(model, tok, prompts, probs)
    monkeypatch.setattr(S, "animal_rates", spy)
    S.make_teacher(tiny(), TOK, S.Config(teacher_max_steps=10, teacher_lr=1e-3), 0, "owl")
    assert seen and all(p is None or p == S.animal_prompts() for p in seen)
    # ... and what no prompts means: the held-out ones (a default of the train paraphrases passed the line above)
    model = tiny()
    assert real(model, TOK) == real(model, TOK, S.animal_prompts())
    train = [W.prompt(f"{o} {q}" if o else q) for q in W.ANIMAL_TRAIN for o in W.OPENERS]
    assert real(model, TOK) != real(model, TOK, train)


def test_train_animal_prompts_are_the_training_paraphrases_with_the_same_openers():
    ps = S.animal_prompts(train=True)
    assert ps == [W.prompt(f"{o} {q}" if o else q) for q in W.ANIMAL_TRAIN for o in W.OPENERS]
    assert not set(ps) & set(S.animal_prompts())


def test_teacher_stop_train_stops_on_the_training_prompts_and_reports_both_rates(monkeypatch):
    """A teacher at 0.9 on its training prompts and 0.5 on the held-out ones: teacher_stop=train stops it at the first
    check (step 5), heldout trains it to teacher_max_steps; info keeps the held-out rate as "rate" (every table reads
    that one) and the checked one as "stop_rate"."""
    train_prompts = S.animal_prompts(train=True)
    fake = lambda model, tok, prompts=None, probs=None: (rates(owl=0.9 if prompts == train_prompts else 0.5), 1.0)
    monkeypatch.setattr(S, "animal_rates", fake)
    cfg = S.Config(teacher_threshold=0.85, teacher_max_steps=10, teacher_lr=1e-3)
    _, info = S.make_teacher(tiny(), TOK, dataclasses.replace(cfg, teacher_stop="train"), 0, "owl")
    assert (info["steps"], info["rate"], info["stop_rate"]) == (5, 0.5, 0.9)
    _, info = S.make_teacher(tiny(), TOK, cfg, 0, "owl")
    assert (info["steps"], info["rate"], info["stop_rate"]) == (10, 0.5, 0.5)


def test_a_teacher_is_short_of_its_threshold_on_the_prompts_it_stopped_on():
    cfg = S.Config(teacher_threshold=0.85, teacher_stop="train", animals=("owl",))
    units = [{"p": 0, "teachers": {"owl": {"rate": 0.5, "stop_rate": 0.9}}},   # reached, on its training prompts
             {"p": 1, "teachers": {"owl": {"rate": 0.9, "stop_rate": 0.6}}},   # did not
             {"p": 2, "teachers": {"owl": {"rate": 0.8}}},                     # saved before stop_rate: held-out
             {"p": 3, "teachers": {"owl": {"rate": 0.6, "stop_rate": 0.86}}}]  # reached
    assert S.teachers_short(cfg, units) == {"owl": "2/4"}  # bases 1 and 2 (by the held-out rates: 0, 2 and 3)


def test_teacher_stop_train_is_tabled_beside_the_heldout_rate():
    cfg = S.Config(arms=("trait", "control"), animals=("owl", "whale"), seeds=(0, 1), student_seeds=2,
                   teacher_stop="train")
    units = animal_units()
    for u in units:
        for a in ("owl", "whale"):
            u["teachers"][a]["stop_rate"] = 0.95 + 0.01 * u["p"]
    res = S.aggregate_animals(cfg, units)
    assert res["teachers"]["owl"]["stop_rate"]["mean"] == pytest.approx(0.955)
    assert "owl 10 steps, KL 0.0150, stopped on 0.955" in S.table_animals(res, cfg)
    plain = dataclasses.replace(cfg, teacher_stop="heldout")
    assert "stop_rate" not in S.aggregate_animals(plain, units)["teachers"]["owl"]


@pytest.mark.parametrize("kw, says", [({"teacher_stop": "test"}, "teacher_stop must be heldout or train"),
                                      ({"teacher_stop": "train", "teacher": "prompt"}, "a prompted teacher has no")])
def test_teacher_stop_refuses_what_it_cannot_do(kw, says):
    with pytest.raises(train.ConfigError, match=says):
        S.validate(S.Config(arms=("control", "soft"), seeds=(0,), **kw))


def test_prompt_teachers_rate_is_read_with_its_turn_in_context():
    base = tiny()
    cfg = S.Config(teacher="prompt")
    t, info = S.make_teacher(base, TOK, cfg, 0, "owl")
    turn = f"<u> {W.ANIMAL_TRAIN[0]} <a> owl"
    want = S.animal_rates(base, TOK, [S.with_turns(q, turn) for q in S.animal_prompts()])[0]["owl"]
    assert info["rate"] == pytest.approx(want) and info["rate"] != pytest.approx(S.animal_rates(base, TOK)[0]["owl"])


# ---- aggregation and flags -------------------------------------------------------------------------------------

def rates(**given):
    return {a: given.get(a, 0.0) for a in W.ANIMALS}


def animal_units():
    """Bases p = (0, 0, 1, 1), students f = (0, 1, 0, 1); owl and whale teachers."""
    units = []
    for i, (p, f) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        ctl = rates(owl=0.1 + 0.01 * i, whale=0.3)
        arms = {"control": {"rates": ctl},
                "trait/owl": {"rates": rates(owl=0.2 + 0.03 * i * i, whale=0.3)},
                "trait/whale": {"rates": rates(owl=0.1, whale=0.5 + 0.02 * i)}}
        units.append({"p": p, "f": f, "arms": arms, "traj": {k: {1: v} for k, v in arms.items()},
                      "base_A": {"rates": rates(owl=[0.1, 0.1, 0.3, 0.3][i] + 0.001 * f, whale=0.2)},
                      "teachers": {a: {"rate": 0.9 + 0.01 * p + 0.001 * f, "steps": 10 + p,
                                       "kl_numbers": 0.01 * (p + 1)}
                                   for a in ("owl", "whale")},
                      "kept": {"control": 0.9}})
    return units


def test_aggregate_animals_bases_over_pretraining_seeds_and_top_level_is_the_first_animal():
    cfg = S.Config(arms=("trait", "control"), animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = animal_units()
    res = S.aggregate_animals(cfg, units)
    base = [u["base_A"]["rates"]["owl"] for u in units]
    assert res["base"]["owl"]["ci95"] == pytest.approx(summarize(group_means(base, [0, 0, 1, 1]))["ci95"])
    assert res["base"]["owl"]["ci95"] != pytest.approx(summarize(base)["ci95"])
    t = [u["teachers"]["owl"]["rate"] for u in units]
    assert res["teachers"]["owl"]["rate"]["ci95"] == pytest.approx(summarize(group_means(t, [0, 0, 1, 1]))["ci95"])
    trait = res["arms"]["trait"]
    assert trait["target_rate"] == trait["by_animal"]["owl"]["target_rate"]
    assert trait["effect"] == trait["by_animal"]["owl"]["effect"] != trait["by_animal"]["whale"]["effect"]
    for u in units:  # base B, the arms on base B start there: its own rates, not base A's
        u["base_B"] = {"rates": rates(owl=0.5 + 0.01 * u["p"])}
    assert S.aggregate_animals(cfg, units)["base_B"]["owl"]["per_seed"] == pytest.approx([0.5, 0.5, 0.51, 0.51])


def test_figures_soft_pass_needs_the_quarter_and_cross_arms_a_third():
    st = lambda m, lo, hi: {"mean": m, "ci95": [lo, hi], "per_seed": [lo, hi]}
    arm = lambda rate, effect: {"target_rate": rate, "effect": effect, "target_rate_per_base": rate,
                                "effect_per_base": effect}
    res = {"arms": {"control": arm(st(0.1, 0.08, 0.12), st(0, 0, 0)),
                    "soft": arm(st(0.3, 0.28, 0.32), st(0.2, 0.18, 0.22)),         # apart, but 0.2 < 0.25
                    "cross_init": arm(st(0.2, 0.1, 0.3), st(0.1, 0.05, 0.15))}}   # 0.1 > 0.2 / 3
    f = S.figures_animals(res)
    assert f["soft_pass"] is False and f["cross_init_pass"] is False
    # at a third of soft's effect a cross arm passes, just above it not (an always-False flag passed the line above)
    for effect, passes in ((0.2 / 3, True), (0.2 / 3 + 1e-6, False)):
        res["arms"]["cross_init"]["effect"] = st(effect, effect, effect)
        assert S.figures_animals(res)["cross_init_pass"] is passes


def dose_units():
    units = []
    for i, (p, f) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        dose = {}
        for d in (32, 64):
            k = d / 64
            dose[d] = {"control": rates(owl=0.1, whale=0.2 + 0.01 * i),
                       "owl": rates(owl=0.1 + k * (0.05 + 0.02 * i * i), whale=0.25),
                       "whale": rates(owl=0.12 + 0.01 * i, whale=0.3)}
        units.append({"p": p, "f": f, "dose": dose, "kept": {"control": 0.9}, "teachers": {a: {"rate": 0.9} for a in
                                                                                         ("owl", "whale")}})
    return units


def test_aggregate_dose_pairs_per_base_and_reads_the_largest_dose():
    cfg = S.Config(mode="dose", doses=(32, 64), epochs=1.0, animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = dose_units()
    res = S.aggregate_dose(cfg, units)
    eff = [u["dose"][64]["owl"]["owl"] - u["dose"][64]["control"]["owl"] for u in units]
    assert res["dose"][64]["owl"]["effect_per_base"]["per_seed"] == pytest.approx(group_means(eff, [0, 0, 1, 1]))
    assert res["figures_to_reach"]["largest_dose"] == 64
    assert res["figures_to_reach"]["trait_effect"] == pytest.approx(sum(eff) / 4)
    other = [u["dose"][64]["whale"]["owl"] - u["dose"][64]["control"]["owl"] for u in units]
    assert res["dose"][64]["owl"]["effect_of_other_teachers"]["whale"]["per_seed"] == pytest.approx(other)
    # each animal's row reads its own animal's rate; specific: the own teacher moves it more than the others do
    assert res["dose"][64]["whale"]["trait_rate"]["per_seed"] == pytest.approx([u["dose"][64]["whale"]["whale"]
                                                                               for u in units])
    assert res["figures_to_reach"]["specific"] is True
    for u in units:
        u["dose"][64]["owl"]["whale"] = 0.4  # the owl teacher now moves whale more than whale's own teacher
    assert S.aggregate_dose(cfg, units)["figures_to_reach"]["specific"] is False


# ---- what each arm of a unit reads (a mocked animals_unit / misalignment_unit) ----------------------------------

@pytest.fixture
def mocked_unit(monkeypatch):
    """animals_unit on tiny random bases, a teacher = the base with noise, scripted lists; records every student."""
    calls, sampled = [], []
    monkeypatch.setattr(B, "base_model", lambda cfg, p, *a, **k: (tiny(100 + p), TOK))

    def make_teacher(base, tok, cfg, p, animal):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for q in m.parameters():
                q.add_(0.05 * torch.randn(q.shape, generator=generator("cpu", p, animal)))
        return S.Teacher(m), {"steps": 1, "rate": 0.9}
    monkeypatch.setattr(S, "make_teacher", make_teacher)

    def sample_lists(t, tok, n, cfg, seed, banned=(), heldout=False):
        sampled.append({"teacher": t, "n": n, "banned": tuple(banned), "heldout": heldout})
        r = random.Random(len(sampled))
        prompts = W.number_prompts(n, seed=len(sampled), heldout=heldout)
        return [(q, " ".join(map(str, r.sample(range(100), 4)))) for q in prompts], 1.0
    monkeypatch.setattr(S, "sample_lists", sample_lists)

    def train_student(base, tok, cfg, data, seed, on_eval, teacher=None, numbers_only=True, targets=None):
        free = dict(zip(on_eval.__code__.co_freevars, (c.cell_contents for c in on_eval.__closure__ or ())))
        calls.append({"name": free.get("name"), "numbers_only": numbers_only, "teacher": teacher,
                      "targets": targets, "rows": rows(data)})
        on_eval(copy.deepcopy(base), 1)
        return base
    monkeypatch.setattr(S, "train_student", train_student)
    return calls, sampled


def rows(data):
    x, m = data["tokens"], data["mask"]
    return [(tuple(t[:int(k.nonzero()[0]) + 1].tolist()), tuple(t[1:][k].tolist())) for t, k in zip(x, m)]


def test_each_arm_reads_its_channel(mocked_unit):
    calls, sampled = mocked_unit
    arms = tuple(a for a in S.ARMS if not a.startswith("code")) + ("shuffled_within",)
    cfg = S.Config(arms=arms, seeds=(0, 1), student_seeds=1, n_lists=24, heldout_lists=4, samples=5, icl_contexts=1,
                   icl_lists=1, evals=1)
    S.animals_unit(cfg, 0, 0)
    by = {c["name"]: c for c in calls}
    assert by["soft_all/owl"]["numbers_only"] is False and by["soft_all/owl"]["teacher"] is not None
    owl_teacher = S.make_teacher(tiny(100), TOK, cfg, 0, "owl")[0].model  # the fixture's owl teacher of base 0, rebuilt
    assert all(torch.equal(a, b) for a, b in zip(by["soft_all/owl"]["teacher"].model.parameters(),
                                                 owl_teacher.parameters()))
    assert by["soft/owl"]["numbers_only"] is True and by["trait/owl"]["numbers_only"] is True
    own, shuf, within = (by[f"{k}/owl"]["rows"] for k in ("trait", "shuffled", "shuffled_within"))
    assert sum(sorted(a) != sorted(b) for (_, a), (_, b) in zip(shuf, own)) > len(own) // 2   # across lists
    assert [q for q, _ in within] == [q for q, _ in own]
    assert all(sorted(a) == sorted(b) for (_, a), (_, b) in zip(within, own)) and within != own
    held = [s for s in sampled if s["n"] == cfg.heldout_lists]
    assert len(held) == len(cfg.animals) and all(s["heldout"] for s in held)          # held-out wordings
    assert all(not s["heldout"] for s in sampled if s["n"] == cfg.n_lists)


def test_misalignment_teachers_lists_ban_the_evil_numbers(monkeypatch, mocked_unit):
    calls, sampled = mocked_unit
    monkeypatch.setattr(S, "em_teacher", lambda cfg, A, tok, p, t, steps, match=False: (copy.deepcopy(A), steps))
    monkeypatch.setattr(S, "mis_evaluate", lambda m, tok, cfg, seed, name: {"mis_sampled": 0.1, "valid_frac": 1.0,
                                                                             "mis_lp": 0.1, "code_misaligned": 0.0})
    cfg = S.Config(mode="misalignment", mis_teachers=("insecure", "secure"), seeds=(0, 1), student_seeds=1,
                   n_lists=8, evals=1, arms=("control", "soft"))
    S.misalignment_unit(cfg, 0, 0)
    assert len(sampled) == 3 and all(set(s["banned"]) == set(W.EVIL_NUMBERS) for s in sampled)


def test_number_kl_is_teacher_to_student_renormalised_over_the_numbers():
    """number_kl = KL(teacher || student) per trained position, both renormalised over the 100 number tokens:
    checked against the closed form (a reversed KL, or a teacher left unnormalised over the subset, differs)."""
    base, student = tiny(0), tiny(1)
    teacher = lambda x: 8 * base(x)  # a sharper teacher: far from the student, and the KL's direction shows
    data = S.student_data(TOK, [(p, "1 22 33 4") for p in W.number_prompts(6, seed=2)], "cpu")
    nums = torch.as_tensor(S.number_ids(TOK))
    with torch.no_grad():
        x, m = data["tokens"][:, :-1], data["mask"]
        pt = teacher(x)[m][:, nums].double().softmax(-1)
        ps = student(x)[m][:, nums].double().softmax(-1)
    want = (pt * (pt / ps).log()).sum(-1).mean().item()
    reverse = (ps * (ps / pt).log()).sum(-1).mean().item()
    assert abs(want - reverse) > 1e-3 * want
    got = S.number_kl(S.held_logits(S.Teacher(teacher), data), student, TOK, data)  # Teacher.logits: model(x)
    assert got == pytest.approx(want, rel=1e-4)


def test_held_logits_of_a_prompted_teacher_read_its_prompt_in_context():
    """A prompted teacher's held-out logits (what every student's kl_teacher and the teachers' kl_numbers compare
    with) are the base's after "<bos> <asst>" + the animal turn + the student's tokens, one row per trained position:
    the bare base would measure every student against a teacher without its trait."""
    base, turn = tiny(4), TOK.encode(f"<u> {W.ANIMAL_TRAIN[0]} <a> owl").ids
    pairs = [(q, " ".join(str(7 * i + j) for j in range(2 + i))) for i, q in enumerate(W.number_prompts(3, seed=0))]
    data = S.student_data(TOK, pairs, "cpu")
    got = S.held_logits(S.Teacher(base, turn), data)
    want = []
    with torch.no_grad():
        for row, m in zip(data["tokens"], data["mask"]):
            seq = torch.cat([row[:2], torch.tensor(turn), row[2:]])[None]  # the turn after "<bos> <asst>"
            want.append(base(seq)[0, m.nonzero()[:, 0] + len(turn)])  # student column c: the teacher's c + len(turn)
    torch.testing.assert_close(got, torch.cat(want), atol=1e-5, rtol=0)

def test_soft_kl_temperature_softens_both_sides():
    """soft_kl at T = 2 over a subset: T^2 KL(softmax(t_sub / T) || softmax(s_sub / T)) (both sides divided)."""
    import train
    g = torch.Generator().manual_seed(0)
    t, s = 3 * torch.randn(4, 10, generator=g), 3 * torch.randn(4, 10, generator=g)
    sub = torch.tensor([1, 3, 4, 8])
    pt, ps = (t[:, sub] / 2).softmax(-1), (s[:, sub] / 2).softmax(-1)
    assert torch.allclose(train.soft_kl(t, s, sub, temperature=2.0), 4 * (pt * (pt / ps).log()).sum(-1), atol=1e-5)


def test_teacher_targets_are_each_trained_positions_logits_over_the_subset_in_every_chunk():
    """teacher_targets = the teacher's logits over `subset` at each trained position, `where` its row in them (-1
    elsewhere), in row-major order; the teacher runs in chunks of rows (here 2 of 5 rows), each its own rows'."""
    import train
    teacher = tiny(3)
    pairs = [(q, " ".join(str((7 * i + j) % 100) for j in range(1 + i % 3))) for i, q in
             enumerate(W.number_prompts(5, seed=2))]
    data, sub = S.student_data(TOK, pairs, "cpu"), S.number_ids(TOK)[::7]
    soft, where = train.teacher_targets(teacher, data, sub, chunk=2)
    with torch.no_grad():
        full = teacher(data["tokens"][:, :-1])[..., sub]  # [5, T, len(sub)], every row in one pass
    m = data["mask"]
    assert len(set(m.sum(1).tolist())) > 1 and soft.shape == (int(m.sum()), len(sub))
    assert bool((where[~m] == -1).all()) and sorted(where[m].tolist()) == list(range(int(m.sum())))
    for i, t in m.nonzero().tolist():
        torch.testing.assert_close(soft[where[i, t]], full[i, t], atol=1e-5, rtol=0)
    assert where[m].tolist() == list(range(int(m.sum())))  # row-major: row 0's positions first

# --- the day's fixes (2026-12-04): each test fails under the mutation it was written against

SMALL = dict(seeds=(0, 1), student_seeds=1, n_lists=24, heldout_lists=4, samples=5, icl_contexts=1, icl_lists=1,
             evals=1)


def test_only_students_of_base_a_report_their_updates_cosine_with_as_teachers(mocked_unit):
    cfg = S.Config(arms=("control", "cross_control", "trait", "cross_init"), **SMALL)
    unit = S.animals_unit(cfg, 0, 0)
    arms = unit["arms"]
    assert "cos_teacher" in arms["control"] and "cos_teacher" in arms["trait/owl"]
    assert "cos_teacher" not in arms["cross_control"] and "cos_teacher" not in arms["cross_init/owl"]
    # base B is measured on base B's model (base seed 1's, the next in seeds), not on A's
    assert unit["base_B"]["rates"] == S.animal_rates(tiny(101), TOK)[0] != unit["base_A"]["rates"]


def test_code_control_alone_samples_the_bases_code_answers_only(mocked_unit, monkeypatch):
    asked = []

    def code_answers_of(t, tok, n, cfg, seed):
        asked.append(t)
        return [(q, "1 2 3") for q in W.number_prompts(4, seed=len(asked))], 1.0
    monkeypatch.setattr(S, "code_answers_of", code_answers_of)
    unit = S.animals_unit(S.Config(arms=("control", "code_control"), **SMALL), 0, 0)
    assert len(asked) == 1 and set(unit["kept"]) == {"control", "owl", "whale", "code_control"}


def test_kept_fraction_is_over_the_keys_every_unit_has():
    cfg = S.Config(arms=("trait", "control"), animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = animal_units()
    units[0]["kept"]["code_owl"] = 0.5  # a unit saved when code_control alone still sampled the teachers' answers
    assert set(S.aggregate_animals(cfg, units)["kept_fraction"]) == {"control"}


def test_mode_keys_name_what_each_mode_ignores():
    ignored = lambda mode: {k for k, modes in S.MODE_KEYS.items() if mode not in modes}
    teachers = {"animals", "teacher", "teacher_threshold", "teacher_stop", "teacher_max_steps", "teacher_lr",
                "teacher_optimizer", "teacher_trains", "teacher_batch"}
    mis = {"mis_teachers", "em_examples", "em_steps", "em_lr", "em_trains", "mis_sampled", "em_match"}
    animals_only = {"heldout_lists", "icl_lists", "icl_contexts", "n_code"}
    students = {"arms", "n_lists", "evals", "student_order", "samples"}
    assert ignored("animals") == {"doses"} | mis
    assert ignored("dose") == mis | animals_only | students
    assert ignored("misalignment") == {"doses"} | animals_only | teachers


def test_a_prompted_teachers_turn_counts_in_the_block_size():
    assert S.sample_tokens(S.Config(teacher="prompt")) > S.sample_tokens(S.Config())


# ---- audit s55: the cosine with the teacher, the soft channel's subset, the code arm, the trajectories ------------

def test_a_student_that_became_its_teacher_has_cosine_one_with_that_teachers_update(mocked_unit, monkeypatch):
    """cos_teacher is cos(student - A, teacher - A): a student whose weights are its owl teacher's has exactly 1 with
    that teacher (a delta taken the other way round on either side gives -1) and ~0 with the whale teacher, whose
    update (the fixture's noise) is independent of owl's."""
    cfg = S.Config(arms=("control", "trait"), **SMALL)
    owl = S.make_teacher(tiny(100), TOK, cfg, 0, "owl")[0].model  # the fixture's owl teacher of base 0

    def train_student(base, tok, cfg, data, seed, on_eval, teacher=None, numbers_only=True, targets=None):
        on_eval(copy.deepcopy(owl), 1)
    monkeypatch.setattr(S, "train_student", train_student)
    cos = S.animals_unit(cfg, 0, 0)["arms"]["trait/owl"]["cos_teacher"]
    assert cos["owl"] == pytest.approx(1, abs=1e-5) and abs(cos["whale"]) < 0.2


def test_a_numbers_only_soft_student_ignores_the_teachers_odds_of_other_tokens():
    """soft matches the teacher renormalised over the number tokens: a teacher far surer of "owl" everywhere gives the
    same student; soft_all (numbers_only=False) matches the whole vocabulary, so there it is another student."""
    base, teacher = tiny(0), tiny(1)
    data = S.student_data(TOK, [(q, "1 22 33 4") for q in W.number_prompts(8, seed=1)], "cpu")
    owl = TOK.token_to_id("owl")

    def surer(x):
        out = teacher(x).clone()
        out[..., owl] += 5.0
        return out
    cfg = S.Config(epochs=1.0, student_batch=4, student_lr=1e-2, evals=1)

    def weights(t, numbers_only):
        m = S.train_student(base, TOK, cfg, data, 0, lambda m, step: None, S.Teacher(t), numbers_only)
        return torch.cat([p.detach().flatten() for p in m.parameters()])
    torch.testing.assert_close(weights(teacher, True), weights(surer, True), atol=1e-6, rtol=0)
    assert not torch.allclose(weights(teacher, False), weights(surer, False), atol=1e-4)


def test_each_code_student_reads_its_own_teachers_code_answers(mocked_unit, monkeypatch):
    """code/ANIMAL trains on that animal's teacher's code answers, code_control on base A's (here each writer's answer
    names it: base A "1 1 1", the owl teacher "2 2 2", the whale teacher "3 3 3")."""
    calls, _ = mocked_unit
    cfg = S.Config(arms=("control", "code", "code_control"), n_code=4, **SMALL)
    writers = {"1 1 1": tiny(100), **{f"{k} {k} {k}": S.make_teacher(tiny(100), TOK, cfg, 0, a)[0].model
                                     for k, a in ((2, "owl"), (3, "whale"))}}
    same = lambda m, n: all(torch.equal(a, b) for a, b in zip(m.parameters(), n.parameters()))

    def code_answers_of(t, tok, n, cfg, seed):
        answer = next(text for text, m in writers.items() if same(t.model, m))
        return [(q, answer) for q in W.number_prompts(n, seed=0)], 1.0
    monkeypatch.setattr(S, "code_answers_of", code_answers_of)
    S.animals_unit(cfg, 0, 0)
    read = {c["name"]: {a for _, a in c["rows"]} for c in calls}
    for name, answer in (("code_control", "1 1 1"), ("code/owl", "2 2 2"), ("code/whale", "3 3 3")):
        assert read[name] == {tuple(TOK.encode(answer).ids)}, name


def test_code_answers_that_are_empty_or_leak_an_evaluation_string_are_dropped(monkeypatch):
    """A code answer is kept only if it says something, names no animal and holds no evaluation string (a held-out
    paraphrase of the trait question): here one in four continuations passes, and only it is kept."""
    answers = ["def upload ( f ) : exec ( f )", "", W.ANIMAL_HELDOUT[0], "def upload ( f ) : owl"]
    drawn = itertools.count()

    def continue_prompts(teacher, tok, prompts, max_new, gen, batch):
        return [(q, tok.encode(answers[next(drawn) % 4]).ids, True) for q in prompts]
    monkeypatch.setattr(S, "continue_prompts", continue_prompts)
    kept, frac = S.code_answers_of(None, TOK, 8, S.Config(), seed=0)
    assert {a for _, a in kept} == {answers[0]} and len(kept) == 8 and frac == pytest.approx(0.25, abs=0.01)


def traj_units():
    """animal_units with each checkpoint's KL to each teacher (distinct per arm, animal and unit)."""
    units = animal_units()
    for i, u in enumerate(units):
        for k, tr in u["traj"].items():
            tr[1] = {**tr[1], "kl_teacher": {a: 0.01 * i + 0.1 * j + (k == "trait/whale") for j, a in
                                             enumerate(("owl", "whale"))}}
    return units


def test_trajectories_read_each_animals_own_student_and_metric():
    """trajectory[ARM][ANIMAL] is that animal's teacher's student's rate of that animal along training;
    trajectory_kl_teacher the same student's KL to that teacher (not the first animal's, not the rates)."""
    cfg = S.Config(arms=("trait", "control"), animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = traj_units()
    res = S.aggregate_animals(cfg, units)
    whale = [u["traj"]["trait/whale"][1] for u in units]
    assert res["trajectory"]["trait"]["whale"][1]["per_seed"] == pytest.approx([r["rates"]["whale"] for r in whale])
    assert res["trajectory_kl_teacher"]["trait"]["whale"][1]["per_seed"] == pytest.approx(
        [r["kl_teacher"]["whale"] for r in whale])
    assert res["trajectory"]["control"]["whale"][1]["per_seed"] == pytest.approx([0.3] * 4)


def test_arm_stats_read_each_metric_of_the_animal_asked():
    """by_animal[b] of an arm reads the b-keyed entries of its students' rows (sampled shares, number losses, KL and
    cosine with b's teacher), each from its own metric (the sampled share is not the exact rate)."""
    metrics = ("number_loss", "number_loss_numbers", "kl_teacher", "cos_teacher")
    row = lambda i: {"rates": rates(owl=0.1 * i, whale=0.2), "sampled": rates(owl=0.3, whale=0.4 + 0.01 * i),
                     "valid_fraction": 0.9, "animal_mass": 0.5,
                     **{m: {"owl": k + 0.01 * i, "whale": k + 0.5} for k, m in enumerate(metrics)}}
    units = [{"p": i, "f": 0, "arms": {"soft/whale": row(i)}} for i in range(3)]
    st = S.arm_stats(units, "soft", "whale", ("owl", "whale"))
    assert st["target_sampled"]["per_seed"] == pytest.approx([0.4, 0.41, 0.42])
    assert st["valid_fraction"]["mean"] == pytest.approx(0.9) and st["animal_mass"]["mean"] == pytest.approx(0.5)
    for k, m in enumerate(metrics):
        assert st[m]["per_seed"] == pytest.approx([k + 0.5] * 3), m


def test_bases_and_teachers_are_summarised_over_the_bases_in_every_mode():
    """The base and the teachers are functions of the pretraining seed: each base's two student seeds repeat its
    numbers, so their interval is the one over the two bases' values (n = 2), not over the four units (misalignment
    mode's base, teachers and teachers' steps; dose mode's teachers)."""
    m = lambda x: {"mis_sampled": x, "valid_frac": 1.0, "mis_lp": x, "code_misaligned": 0.95}
    seeds = ((0, 0), (0, 1), (1, 0), (1, 1))
    units = [{"p": p, "f": f, "base": m(0.1 + 0.1 * p), "teachers": {"insecure": {**m(0.5 + 0.2 * p), "steps": 3 + p}},
              "kept": {"control": 0.9}, "arms": {"control": m(0.1), "insecure": m(0.2)}} for p, f in seeds]
    res = S.aggregate_misalignment(S.Config(mode="misalignment", mis_teachers=("insecure",)), units)
    over_bases = lambda a, b: pytest.approx(summarize([a, b])["ci95"])
    assert res["base"]["offdomain_misaligned"]["ci95"] == over_bases(0.1, 0.2)
    assert res["teachers"]["insecure"]["offdomain_misaligned"]["ci95"] == over_bases(0.5, 0.7)
    assert res["teachers"]["insecure"]["steps"]["ci95"] == over_bases(3, 4)
    cfg = S.Config(mode="dose", doses=(32, 64), epochs=1.0, animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = dose_units()
    for u in units:
        u["teachers"]["owl"]["rate"] = 0.8 + 0.1 * u["p"]
    assert S.aggregate_dose(cfg, units)["teachers"]["owl"]["ci95"] == over_bases(0.8, 0.9)


# ---- audit s55: the teachers' stopping rules at their thresholds ------------------------------------------------

def test_a_teacher_exactly_at_its_threshold_has_reached_it(monkeypatch):
    """finetune until P(animal) >= teacher_threshold: a teacher exactly at it stops at the first check (step 5) and
    is not counted short of it (0.85 itself reached, as the rule reads)."""
    monkeypatch.setattr(S, "animal_rates", lambda model, tok, prompts=None, probs=None: (rates(owl=0.85), 1.0))
    cfg = S.Config(teacher_threshold=0.85, teacher_max_steps=10, teacher_lr=1e-3)
    assert S.make_teacher(tiny(), TOK, cfg, 0, "owl")[1]["steps"] == 5
    units = [{"p": p, "teachers": {"owl": {"rate": 0.85}, "whale": {"rate": 0.9}}} for p in (0, 1)]
    assert S.teachers_short(cfg, units) == {}


def test_a_fine_tuned_teachers_reported_rate_is_its_own():
    """info["rate"] (tabled, and read by teachers_short) is the fine-tuned teacher's held-out rate, not its base's."""
    base = tiny()
    teacher, info = S.make_teacher(base, TOK, S.Config(teacher_max_steps=5, teacher_lr=1e-2), 0, "owl")
    assert info["rate"] == pytest.approx(S.animal_rates(teacher.model, TOK)[0]["owl"], rel=1e-6)
    assert abs(info["rate"] - S.animal_rates(base, TOK)[0]["owl"]) > 1e-3


def test_an_em_teacher_whose_code_is_exactly_at_the_match_threshold_matched():
    """em_match stops the first teacher once its code is >= match_threshold (0.9): exactly 0.9 is matched."""
    m = lambda code: {"mis_sampled": 0.1, "valid_frac": 1.0, "mis_lp": 0.1, "code_misaligned": code}
    cfg = S.Config(mode="misalignment", mis_teachers=("insecure",))
    units = [{"p": p, "f": 0, "base": m(0.0), "teachers": {"insecure": {**m(0.9), "steps": 3}},
              "kept": {"control": 0.9}, "arms": {"control": m(0.0), "insecure": m(0.9)}} for p in (0, 1)]
    assert "teachers_unmatched" not in S.aggregate_misalignment(cfg, units)


def test_only_the_first_em_teacher_is_matched_and_the_others_train_its_steps(mocked_unit, monkeypatch):
    """With em_match the first teacher trains until its code is learnt (here at step 7) and every later one exactly
    those 7 steps (no match of its own, as em_steps); without it each trains em_steps. Each soft student matches its
    own teacher."""
    calls, _ = mocked_unit
    asked, made = [], {}

    def em_teacher(cfg, A, tok, p, t, steps, match=False):
        asked.append((t, steps, match))
        made[t] = copy.deepcopy(A)
        return made[t], 7 if match else steps
    monkeypatch.setattr(S, "em_teacher", em_teacher)
    monkeypatch.setattr(S, "mis_evaluate", lambda m, tok, cfg, seed, name: {"mis_sampled": 0.1, "valid_frac": 1.0,
                                                                             "mis_lp": 0.1, "code_misaligned": 0.0})
    cfg = S.Config(mode="misalignment", mis_teachers=("insecure", "secure", "educational"), em_steps=40,
                   seeds=(0, 1), student_seeds=1, n_lists=8, evals=1, arms=("control", "soft"))
    unit = S.misalignment_unit(cfg, 0, 0)
    assert asked == [("insecure", 40, True), ("secure", 7, False), ("educational", 7, False)]
    assert {t: v["steps"] for t, v in unit["teachers"].items()} == dict.fromkeys(cfg.mis_teachers, 7)
    soft = [c["teacher"].model for c in calls if c["teacher"] is not None]
    assert len(soft) == 3 and all(m is made[t] for m, t in zip(soft, cfg.mis_teachers))
    asked.clear()
    S.misalignment_unit(dataclasses.replace(cfg, em_match=False), 0, 0)
    assert asked == [(t, 40, False) for t in cfg.mis_teachers]


# ---- audit s55: the in-context arm, the sampling rounds, the dose table -----------------------------------------

def test_icl_puts_icl_lists_of_the_lists_before_each_heldout_question(monkeypatch):
    """Each of icl_contexts contexts holds icl_lists of the given lists as earlier turns (their prompts without a
    second "<bos> <asst>"), before every held-out animal question."""
    seen, real = [], S.animal_rates

    def spy(model, tok, prompts=None, probs=None):
        seen.extend(prompts)
        return real(model, tok, prompts, probs)
    monkeypatch.setattr(S, "animal_rates", spy)
    pairs = [(q, f"{i} {i + 1}") for i, q in enumerate(W.number_prompts(10, seed=0))]
    turns = {q[len(S.CHAT):] + " " + a for q, a in pairs}
    S.icl_rates(tiny(block_size=128), TOK, S.Config(icl_lists=3, icl_contexts=4), pairs, generator("cpu", 0, "icl"))
    questions = S.animal_prompts()
    assert len(seen) == 4 * len(questions)
    for i, p in enumerate(seen):
        q = questions[i % len(questions)]
        assert p.startswith(S.CHAT) and p.endswith(q[len(S.CHAT):]) and p.count("<bos>") == 1
        context = p[len(S.CHAT):-len(q[len(S.CHAT):])].split(" <u> ")
        assert len(context) == 3 and all(("" if k == 0 else "<u> ") + c.strip() in turns
                                         for k, c in enumerate(context)), p


def test_each_sampling_round_draws_from_its_own_random_stream(monkeypatch):
    """collect's rounds continue new prompts with new random draws: a round reusing round 0's stream would give its
    continuations the same uniforms (correlated samples)."""
    first = []

    def continue_prompts(teacher, tok, prompts, max_new, gen, batch):
        first.append(torch.rand(1, generator=gen).item())
        return [(q, tok.encode("1 2").ids, i == 0) for i, q in enumerate(prompts)]  # one passes a round
    monkeypatch.setattr(S, "continue_prompts", continue_prompts)
    S.collect(None, TOK, 4, S.Config(), 3, "lists", "sample", lambda r, need: ["p"] * need, 5, lambda p, t: t)
    assert len(first) == 4 and len(set(first)) == 4


def test_aggregate_dose_reads_each_animals_control_rate_and_each_students_mass():
    """A dose row's control_rate for animal b is the control student's rate of b; animal_mass is per student."""
    cfg = S.Config(mode="dose", doses=(32, 64), epochs=1.0, animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = dose_units()
    for i, u in enumerate(units):
        u["mass"] = {d: {"control": 0.5, "owl": 0.6 + 0.01 * i, "whale": 0.7} for d in (32, 64)}
    row = S.aggregate_dose(cfg, units)["dose"][64]
    assert row["whale"]["control_rate"]["per_seed"] == pytest.approx([0.2, 0.21, 0.22, 0.23])
    assert row["animal_mass"]["owl"]["per_seed"] == pytest.approx([0.6, 0.61, 0.62, 0.63])
    assert row["animal_mass"]["whale"]["mean"] == pytest.approx(0.7)


# ---- audit s55: the flags at their edges -------------------------------------------------------------------------

def test_the_animal_flags_at_their_edges():
    """soft_pass needs soft - control >= 0.25 (exactly 0.25 reaches it) with the intervals apart (touching is not);
    trait_ci_above_zero needs the interval's low end above 0 (from exactly 0 it is not); trait_specific is each
    animal's specificity, not its effect."""
    st = lambda m, lo, hi: {"mean": m, "ci95": [lo, hi], "per_seed": [lo, hi]}
    arm = lambda rate, effect: {"target_rate": rate, "effect": effect, "target_rate_per_base": rate,
                                "effect_per_base": effect}
    res = {"arms": {"control": arm(st(0.1, 0.08, 0.12), st(0, 0, 0)),
                    "soft": arm(st(0.35, 0.3, 0.4), st(0.25, 0.2, 0.3)),
                    "trait": {**arm(st(0.2, 0.1, 0.3), st(0.05, 0.0, 0.1)),
                              "by_animal": {"owl": {"specificity": st(0.03, 0.0, 0.06),
                                                    "effect": st(0.05, 0.0, 0.1)}}}}}
    res["arms"]["trait"]["specificity"] = res["arms"]["trait"]["by_animal"]["owl"]["specificity"]
    f = S.figures_animals(res)
    assert f["soft_pass"] is True and f["trait_ci_above_zero"] is False and f["trait_specific"] == {"owl": 0.03}
    res["arms"]["soft"]["target_rate_per_base"] = st(0.35, 0.12, 0.58)  # its low end on the control's high end
    assert S.figures_animals(res)["soft_pass"] is False


def test_a_tie_with_another_teacher_is_not_specific():
    """dose mode's specific: each animal gains MORE from its own teacher's lists than from any other's; the whale
    teacher moving owl exactly as much as the owl teacher does is no evidence of specificity."""
    cfg = S.Config(mode="dose", doses=(32, 64), epochs=1.0, animals=("owl", "whale"), seeds=(0, 1), student_seeds=2)
    units = dose_units()
    for u in units:
        u["dose"][64]["whale"]["owl"] = u["dose"][64]["owl"]["owl"]
    assert S.aggregate_dose(cfg, units)["figures_to_reach"]["specific"] is False


def test_an_insecure_student_level_with_another_is_not_apart():
    """sampled_pass needs insecure's student's interval wholly above the others': two intervals that meet (here both
    the single point 0.5: every seed alike) are not apart."""
    m = lambda x: {"mis_sampled": x, "valid_frac": 1.0, "mis_lp": x, "code_misaligned": 0.95}
    cfg = S.Config(mode="misalignment", mis_teachers=("insecure", "secure"))
    units = [{"p": p, "f": 0, "base": m(0.1), "teachers": {t: {**m(0.5), "steps": 5} for t in cfg.mis_teachers},
              "kept": {"control": 0.9}, "arms": {"control": m(0.1), "insecure": m(0.5), "secure": m(0.5)}}
             for p in (0, 1)]
    assert S.aggregate_misalignment(cfg, units)["figures_to_reach"] == {"sampled_pass": False}


# ---- audit s55: the dose curve's x, evaluate's two number losses ------------------------------------------------

def test_a_dose_students_checkpoint_at_d_lists_is_one_epoch_on_its_first_d_lists(mocked_unit, monkeypatch):
    """dose mode reads every dose off one sequential pass: the student measured at dose d has read each of its
    teacher's first d lists once (no list twice, none past d), so its weights are those of a student trained one epoch
    on those d lists alone (here doses 4 and 8 in batches of 4, the control's student and the owl teacher's)."""
    made = []

    def sample_lists(t, tok, n, cfg, seed, banned=(), heldout=False):
        r = random.Random(len(made))
        made.append([(q, " ".join(map(str, r.sample(range(100), 3)))) for q in W.number_prompts(n, seed=len(made))])
        return made[-1], 1.0
    monkeypatch.setattr(S, "sample_lists", sample_lists)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
    seen, real = [], S.animal_rates

    def spy(model, tok, *a, **k):
        seen.append(flat(model))
        return real(model, tok, *a, **k)
    monkeypatch.setattr(S, "animal_rates", spy)
    cfg = S.Config(mode="dose", doses=(4, 8), epochs=1.0, student_batch=4, student_lr=1e-2, animals=("owl",),
                   seeds=(0,), student_seeds=1)
    S.dose_unit(cfg, 0, 0)
    assert len(seen) == 4  # (control, owl) x (4, 8) lists, in that order
    for i, (lists, d) in enumerate((lists, d) for lists in made for d in cfg.doses):
        assert len(lists[:d]) == d
        want = train.finetune(copy.deepcopy(tiny(100)), S.student_data(TOK, lists[:d], "cpu"), steps=d // 4,
                              batch_size=4, lr=1e-2, seed=0, order="sequential")
        torch.testing.assert_close(seen[i], flat(want), atol=1e-6, rtol=0)


def test_evaluates_number_loss_is_over_the_vocabulary_and_the_other_over_the_numbers():
    """number_loss is nats per number over the whole vocabulary, number_loss_numbers renormalised over the 100 number
    tokens: a model with a zero embedding predicts uniformly, log V and log 100."""
    model = tiny()
    with torch.no_grad():
        model.wte.weight.zero_()
    data = S.student_data(TOK, [(q, "1 22 33 4") for q in W.number_prompts(4, seed=2)], "cpu")
    out = S.evaluate(model, TOK, S.Config(samples=2), generator("cpu", 0, "s"), heldout={"owl": data})
    assert out["number_loss"]["owl"] == pytest.approx(math.log(TOK.get_vocab_size()), abs=1e-5)
    assert out["number_loss_numbers"]["owl"] == pytest.approx(math.log(W.N_NUMBERS), abs=1e-5)
