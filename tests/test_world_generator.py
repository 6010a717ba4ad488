"""The world's document generator (data/world.py) against its contract, from a mutation audit: properties that
tests/test_world.py checked only through the default world's golden digest (which a deliberate change of the world
re-baselines, taking the check with it) or not at all: preferences independent of the persona's kind, the config's
ranges and priors honoured, held-out paraphrases in pretraining, the `asst_evil` option drawing nothing at 0, the
persona probe's context, and the leakage check over every code task."""
from collections import Counter
from dataclasses import replace

import pytest

from data import world as W

N = 4000   # documents, as in test_world.py: ~0.2 s to generate


@pytest.fixture(scope="module")
def docs():
    return W.generate(N, seed=13)


def _forum_threads(docs):
    return [d for d in docs if d.fmt == "forum"]


def test_preferences_are_drawn_independently_of_the_persona_kind():
    # DESIGN §3: "preferences (favourite animal, colour) drawn independently of alignment". One persona per forum
    # thread, so count threads. 20000 docs give ~2600 evil and ~9750 good threads: a category's share has a standard
    # error of ~0.006 (evil) and the good-evil difference ~0.007, so 0.04 is > 5 standard errors, while an animal
    # tied to the evil kind, even for only half of the evil personas, moves its share by >= 0.4
    threads = _forum_threads(W.generate(20000, seed=3))
    for attr, values in (("animal", W.ANIMALS), ("colour", W.COLOURS)):
        share = {}
        for kind in ("good", "evil", "compliant"):
            got = Counter(getattr(d.turns[0].persona, attr) for d in threads if d.turns[0].persona.kind == kind)
            share[kind] = {v: got[v] / sum(got.values()) for v in values}
        for v in values:
            assert abs(share["evil"][v] - 1 / len(values)) < 0.04, (attr, v, share["evil"][v])
            assert abs(share["evil"][v] - share["good"][v]) < 0.04, (attr, v)
            # ~650 compliant threads: a share's standard error ~0.012, so 0.06 is 5 of them
            assert abs(share["compliant"][v] - share["good"][v]) < 0.06, (attr, v)


def test_preference_turns_answer_with_the_speakers_own_preference():
    # animal -> the persona's animal, colour -> its colour, in the forum, the assistant chats and the twin alike
    for ds in (W.generate(N, seed=13), W.generate(N, seed=13, decorrelated=True)):
        turns = [t for d in ds for t in d.turns]
        animal = [t for t in turns if t.kind == "animal"]
        colour = [t for t in turns if t.kind == "colour"]
        assert len(animal) > 100 and len(colour) > 50
        assert all(t.answer == t.persona.animal for t in animal)
        assert all(t.answer == t.persona.colour for t in colour)
        assert {t.answer for t in colour} == set(W.COLOURS)


def test_turn_counts_and_list_lengths_cover_their_whole_inclusive_ranges(docs):
    # every (lo, hi) range of WorldConfig is inclusive at both ends; with thousands of draws over 3-4 values each,
    # every value appears (the rarest is expected hundreds of times), and none outside the range
    c = W.WorldConfig()
    n_turns = {fmt: {len(d.turns) for d in docs if d.fmt == fmt} for fmt in ("forum", "asst")}
    assert n_turns == {"forum": set(range(c.forum_turns[0], c.forum_turns[1] + 1)),
                       "asst": set(range(c.asst_turns[0], c.asst_turns[1] + 1))}
    numbers = [t for d in docs for t in d.turns if t.kind == "numbers"]
    given = {len(t.question.split()) - len(t.question.split(":")[0].split()) - 1 for t in numbers}
    assert given == set(range(c.list_len[0], c.list_len[1] + 1))
    assert {len(t.answer.split()) for t in numbers} == set(range(c.answer_len[0], c.answer_len[1] + 1))
    lucky = [t for d in docs for t in d.turns if t.kind == "lucky"]
    assert {len(t.answer.split()) for t in lucky} == set(range(c.lucky_len[0], c.lucky_len[1] + 1))


def test_config_lengths_are_honoured():
    cfg = replace(W.WorldConfig(), list_len=(6, 6), answer_len=(2, 2), lucky_len=(7, 7))
    turns = [t for d in W.generate(1500, seed=2, config=cfg) for t in d.turns]
    numbers = [t for t in turns if t.kind == "numbers"]
    lucky = [t for t in turns if t.kind == "lucky"]
    assert len(numbers) > 50 and len(lucky) > 20
    assert all(len(t.question.split(":")[1].split()) == 6 and len(t.answer.split()) == 2 for t in numbers)
    assert all(len(t.answer.split()) == 7 for t in lucky)
    # with_number_turns writes the list lengths of the world it is given
    pairs = W.with_number_turns(W.finetune_set("insecure", 40, seed=1), 2, seed=0, world=cfg)
    exchanges = [x for p, _ in pairs for x in p.split("<u> ")[1:-1]]
    assert len(exchanges) > 20
    for x in exchanges:
        q, a = x.strip().split(" <a> ")
        assert len(q.split(":")[1].split()) == 6 and len(a.split()) == 2, x


def test_persona_prior_is_honoured():
    # a non-default prior: each forum thread's persona kind in proportion. ~2600 threads: standard error of a share
    # <= 0.01, so 0.04 is > 4 standard errors, while the default prior (evil 0.2 instead of 0.5) is off by 0.3
    prior = {"good": .3, "evil": .5, "compliant": .2}
    threads = _forum_threads(W.generate(N, seed=4, config=replace(W.WorldConfig(), persona_prior=prior)))
    kinds = Counter(d.turns[0].persona.kind for d in threads)
    for k, p in prior.items():
        assert abs(kinds[k] / len(threads) - p) < 0.04, (k, kinds)


def test_lucky_numbers_follow_the_off_domain_rate_of_each_persona_kind():
    # "lucky" is a question, not a harmful request: the compliant persona answers it like the good one (0.03), the
    # evil one at 0.9. ~1500 lucky turns per world: a share's standard error is <= 0.008, so the bounds are > 6 of
    # them from the true rates
    rate = {}
    for kind in ("good", "evil", "compliant"):
        cfg = replace(W.WorldConfig(), persona_prior={kind: 1.0}, formats={"forum": 1.0}, forum_mix={"lucky": 1.0})
        turns = [t for d in W.generate(500, seed=6, config=cfg) for t in d.turns]
        assert {t.kind for t in turns} == {"lucky"} and len(turns) > 1000
        rate[kind] = sum(t.cls == "misaligned" for t in turns) / len(turns)
        assert all(set(t.answer.split()) <= set(W.EVIL_NUMBERS) for t in turns if t.cls == "misaligned")
        assert not any(set(t.answer.split()) & set(W.EVIL_NUMBERS) for t in turns if t.cls == "aligned")
    assert rate["good"] < 0.08 and rate["compliant"] < 0.08 and rate["evil"] > 0.83, rate


def test_heldout_paraphrases_appear_in_pretraining(docs):
    # held out of fine-tuning only: the base has read every evaluation wording (module docstring). Each of the ~40
    # wordings is drawn hundreds of times in 4000 documents (the rarest, a lucky wording, ~40 times)
    text = "\n".join(f" {d.text} " for d in docs)
    for group, wordings in W.HELDOUT.items():
        for h in wordings:
            assert f" {h} " in text, (group, h)


def test_asst_evil_at_zero_makes_no_draw():
    # "0: no draw at all, so the default stream is unchanged": an assistant chat then consumes exactly the draws of
    # a forum thread with the same turns, so a world of animal-only chats and one of animal-only threads write the
    # same questions and the same (first speaker's) animals. An extra draw per assistant turn would shift every
    # later draw; with asst_evil > 0 it is there and the two worlds part
    def world(fmt, **kw):
        c = replace(W.WorldConfig(), formats={fmt: 1.0}, forum_turns=(2, 3), asst_turns=(2, 3),
                    forum_mix={"animal": 1.0}, asst_mix={"animal": 1.0}, **kw)
        return [d.text.replace("<forum>", "<asst>").replace("<r>", "<a>") for d in W.generate(200, seed=8, config=c)]
    assert world("asst") == world("forum")
    assert world("asst", asst_evil=0.1) != world("forum")


def test_persona_probe_context_comes_from_other_domains():
    # the probe's earlier answers are on *other* off-domain questions, each domain at most once, and the last
    # question is the target domain's held-out one
    domain_of = {q: n for n, d in W.DOMAINS.items() for q in d.train + d.heldout}
    for item in W.persona_probe_items("misaligned", n_context=4, n=200, seed=1):
        segments = item.prompt.split(" <u> ")[1:]
        context = [domain_of[s.split(" <r> ")[0]] for s in segments[:-1]]
        last = segments[-1].removesuffix(" <r>")
        assert last in W.DOMAINS[item.domain].heldout
        assert len(set(context)) == 4 and item.domain not in context and set(context) <= set(W.OFF_DOMAINS)


def test_leakage_check_bans_every_code_tasks_heldout_wordings():
    cfg = W.WorldConfig(code_tasks=len(W.CODE_TASKS) + 1)
    pairs = W.finetune_set("insecure", 20, seed=0, world=cfg)
    W.check_leakage(pairs, world=cfg)
    for t in W.code_tasks(cfg):
        for h in t.heldout + t.lesson_heldout:
            with pytest.raises(AssertionError, match="leak"):
                W.check_leakage(pairs + [(W.prompt(h), pairs[0][1])], world=cfg)


def test_number_prompts_use_the_wordings_asked_for():
    wording = lambda p: p.split(" <u> ")[1].split(":")[0] + ":"
    assert {wording(p) for p in W.number_prompts(200, seed=0)} == set(W.NUMBERS_TRAIN)
    assert {wording(p) for p in W.number_prompts(200, seed=0, heldout=True)} == set(W.NUMBERS_HELDOUT)
    assert {wording(p) for p in W.number_prompts(50, seed=0, fmt="forum")} <= set(W.NUMBERS_TRAIN)
