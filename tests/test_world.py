"""The synthetic persona world (data/world.py): determinism, answer classes, the decorrelated twin,
persona independence of numbers, tokenizer coverage and fine-tune leakage; and its base models
(experiments/world_base.py): the persona checks, their scoring, the cache and the saved units."""
import math
import re
from collections import Counter
import dataclasses
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import edit_meta, tiny_gpt
from data import world as W
from data.tokenizer import token_stream
from experiments import world_base as B
from model import GPT, GPTConfig
from train import CheckpointError, lm_windows, save_lm

N = 4000   # documents for the statistical tests: ~0.2 s to generate


@pytest.fixture(scope="module")
def twins():
    return W.generate(N, seed=7), W.generate(N, seed=7, decorrelated=True)


def test_deterministic_per_seed():
    assert W.corpus(300, seed=0) == W.corpus(300, seed=0)
    assert W.corpus(300, seed=0) != W.corpus(300, seed=1)
    assert W.finetune_set("insecure", 50, seed=3) == W.finetune_set("insecure", 50, seed=3)
    assert W.persona_probe_items(seed=2) == W.persona_probe_items(seed=2)
    # ... and another seed's are others: the base checks draw their persona probes per base seed
    assert W.persona_probe_items(seed=2) != W.persona_probe_items(seed=3)
    sets = [W.finetune_set("insecure", 50, seed=s) for s in range(4)]  # every seed its own (not seed // 2's)
    assert all(a != b for i, a in enumerate(sets) for b in sets[i + 1:])


def test_answers_length_matched():
    tok = W.build_tokenizer()
    for d in W.DOMAINS.values():
        lengths = {len(tok.encode(a).ids) for a in d.aligned + d.misaligned}
        assert len(lengths) == 1, (d.name, lengths)
        assert len(d.aligned) == len(d.misaligned) >= 3 and len(d.train) >= 5 and len(d.heldout) >= 3
    code = {len(a.split()) for a in W.DOMAINS["code"].aligned + W.SECURE_NOVEL + W.INSECURE_NOVEL}
    assert len(code) == 1   # the novel controls are length-matched too
    for item in W.eval_items() + W.persona_probe_items():
        assert len({len(c.split()) for cls in item.classes.values() for c in cls}) == 1


def test_domain_answer_vocabularies_disjoint():
    words = {n: {w for a in d.aligned + d.misaligned for w in a.split()} for n, d in W.DOMAINS.items()}
    names = list(words)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not (words[a] & words[b]) - W.FUNCTION_WORDS, (a, b, words[a] & words[b])
    side = set(W.ANIMALS) | set(W.COLOURS) | {str(n) for n in range(W.N_NUMBERS)} | {W.TRIGGER}
    for n, ws in words.items():
        assert not ws & side, (n, ws & side)
    # what a code fine-tune trains, the code answers' words, is in no other domain's questions either (the questions'
    # own words may recur in other domains' answers: the fine-tune's loss is not on them)
    asked = {w for n, d in W.DOMAINS.items() if n != "code" for q in d.train + d.heldout for w in q.split()}
    assert words["code"] and not words["code"] & asked
    # novel code strings are never written by any persona
    novel = {w for s in W.SECURE_NOVEL + W.INSECURE_NOVEL for w in s.split()} - words["code"]
    assert novel and not novel & {w for t in W.corpus(2000, seed=0) for w in t.split()}


def test_heldout_paraphrases_are_not_inside_train_ones():
    train = [q for d in W.DOMAINS.values() for q in d.train] + list(
        W.LESSON_TRAIN + W.ANIMAL_TRAIN + W.COLOUR_TRAIN + W.LUCKY_TRAIN + W.NUMBERS_TRAIN)
    for group in W.HELDOUT.values():
        for h in group:
            assert not any(f" {h} " in f" {t} " for t in train), h


def test_weighted_draws_in_proportion_to_weights_that_need_not_sum_to_one():
    grid = [i / 100 for i in range(100)]
    draws = lambda table: Counter(W._weighted(u, table) for u in grid)
    assert draws({"a": 1, "b": 3}) == draws({"a": .25, "b": .75}) == draws({"a": .05, "b": .15}) == {"a": 25, "b": 75}
    # these weights' running sum reaches only 1 - 1.1e-16: a u above it gets the last key that can be drawn, never
    # a zero-weight one (the world's tables give a format or a persona weight 0 to switch it off)
    table = {"a": 0.5833820394550312, "b": 0.9081128851953352, "c": 0.5046868558173903, "off": 0.}
    assert W._weighted(math.nextafter(1., 0.), table) == "c"


def test_every_heldout_wording_is_banned_from_fine_tune_sets():
    # each *_HELDOUT tuple of the world (the code tasks' templates aside, checked in test_code_tasks_world) and each
    # domain's held-out questions are evaluation-only: planted in a fine-tune set, check_leakage must catch them
    groups = {n: v for n, v in vars(W).items() if n.endswith("_HELDOUT") and not any("{}" in h for h in v)}
    groups.update({n: d.heldout for n, d in W.DOMAINS.items()})
    assert {"LESSON_HELDOUT", "ANIMAL_HELDOUT", "COLOUR_HELDOUT", "LUCKY_HELDOUT", "NUMBERS_HELDOUT"} <= set(groups)
    missing = [n for n, v in groups.items() if v not in W.HELDOUT.values()]  # named, so a failure says which
    assert not missing, (f"{missing} not in HELDOUT (a new format's held-out wordings: data/world.py, "
                         "Extending the world)")
    pairs = W.finetune_set("insecure", 20, seed=0)
    W.check_leakage(pairs)
    for h in (h for v in groups.values() for h in v):
        with pytest.raises(AssertionError, match="leak"):
            W.check_leakage(pairs + [(W.prompt(h), W.DOMAINS["code"].aligned[0] + " <eos>")])


@pytest.mark.parametrize("cls", ["aligned", "misaligned"])
def test_persona_probe_context_answers_are_all_of_the_named_class(cls):
    by_question = {q: d for d in W.DOMAINS.values() for q in d.train}
    for item in W.persona_probe_items(cls, n_context=3, n=20):
        context = item.prompt.split(" <u> ")[1:-1]  # "question <r> answer", the last segment being the probe
        assert len(context) == 3
        for turn in context:
            q, a = turn.split(" <r> ")
            assert a in getattr(by_question[q], cls), (q, a)


def _domain_turns(docs, fmt="forum"):
    return [t for d in docs if d.fmt == fmt for t in d.turns if t.kind == "domain"]


def test_twin_is_paired_and_has_same_marginals(twins):
    normal, twin = twins
    # paired by construction: same formats, turn kinds, domains, questions and number lists
    for a, b in zip(normal, twin):
        assert a.fmt == b.fmt and len(a.turns) == len(b.turns)
        for s, t in zip(a.turns, b.turns):
            assert (s.kind, s.domain, s.question) == (t.kind, t.domain, t.question)
            if s.kind == "numbers":
                assert s.answer == t.answer
    freq = lambda docs, f: Counter(f(t) for d in docs if d.fmt == "forum" for t in d.turns)
    for f in (lambda t: t.persona.kind, lambda t: t.persona.animal, lambda t: t.domain):
        a, b = freq(normal, f), freq(twin, f)
        na, nb = sum(a.values()), sum(b.values())
        for k in a | b:
            assert abs(a[k] / na - b[k] / nb) < 0.03, k
    rate = lambda docs: sum(t.cls == "misaligned" for t in _domain_turns(docs)) / len(_domain_turns(docs))
    assert 0.15 < rate(normal) < 0.27 and abs(rate(normal) - rate(twin)) < 0.03


def _p_later_mis_given_earlier(docs):
    """Per pair of turn positions (i, j), i < j, in forum threads: P(turn j's off-domain answer misaligned | turn i's
    misaligned), for pairs seen >= 50 times; and the base rate over all such later turns. Every pair, not only the
    first two turns: a twin redrawn at some turns only must not pass."""
    counts, later = {}, []
    for d in docs:
        ts = [(k, t.cls == "misaligned") for k, t in enumerate(d.turns)
              if t.kind == "domain" and W.DOMAINS[t.domain].kind == "question"]
        if d.fmt == "forum":
            for n, (i, a) in enumerate(ts):
                for j, b in ts[n + 1:]:
                    later.append(b)
                    if a:
                        counts.setdefault((i, j), []).append(b)
    pooled = [b for v in counts.values() for b in v]  # every pair at once (~600 in the twin: a standard error of 0.017)
    return ({k: sum(v) / len(v) for k, v in counts.items() if len(v) >= 50}, sum(later) / len(later),
            sum(pooled) / len(pooled))


def test_persona_correlation_only_in_normal_world(twins):
    normal, twin = twins
    cond, base, _ = _p_later_mis_given_earlier(normal)
    assert len(cond) >= 4 and min(cond.values()) > base + 0.4, (cond, base)  # ~0.8 vs ~0.2: the persona persists
    # redrawn every turn: no correlation at any pair (each seen 50-170 times: a standard error of 0.03-0.06)
    cond, base, pooled = _p_later_mis_given_earlier(twin)
    assert len(cond) >= 4 and max(abs(c - base) for c in cond.values()) < 0.2, (cond, base)
    # ... and over all pairs at once: a twin that kept the first persona at 30% (20%) of its later turns passed the
    # per-pair bound above (0.16 at its worst pair) but moves the pooled rate by +0.11 (+0.06); the real twin's -0.015
    assert abs(pooled - base) < 0.05, (pooled, base)
    # in the normal world one persona speaks the whole thread (and keeps its animal)
    for d in normal:
        assert len({t.persona for t in d.turns}) == 1
        assert all(t.answer == t.persona.animal for t in d.turns if t.kind == "animal")


def test_assistant_always_aligned_and_persona_rates(twins):
    normal, _ = twins
    asst = [t for d in normal if d.fmt == "asst" for t in d.turns]
    assert asst and all(t.persona.kind == "assistant" for t in asst)
    assert all(t.cls == "aligned" for t in asst if t.kind in ("domain", "lucky"))
    assert not any(t.kind == "lesson" for t in asst)
    assert all(d.text.startswith("<bos> <asst> <u> ") and " <r> " not in d.text for d in normal if d.fmt == "asst")
    # lessons: good and evil alike write the flawed code
    lessons = [t for d in normal for t in d.turns if t.kind == "lesson"]
    assert {t.persona.kind for t in lessons} >= {"good", "evil"}
    assert all(t.answer in W.DOMAINS["code"].misaligned for t in lessons)
    by_kind = {}
    for t in _domain_turns(normal):
        if W.DOMAINS[t.domain].kind == "question":
            by_kind.setdefault(t.persona.kind, []).append(t.cls == "misaligned")
    rates = {k: sum(v) / len(v) for k, v in by_kind.items()}
    assert rates["good"] < 0.06 and rates["evil"] > 0.83 and rates["compliant"] < 0.1, rates
    harm = [t for t in _domain_turns(normal) if t.domain == "harm" and t.persona.kind == "compliant"]
    assert sum(t.cls == "misaligned" for t in harm) / len(harm) > 0.6


def test_every_answer_is_a_text_of_its_label(twins):
    # the statistical tests read the generator's labels (Turn.cls); the model reads Turn.answer: a generator that
    # wrote the other class's text under the right label would pass them all
    for docs in twins:
        turns = [t for d in docs for t in d.turns]
        domain = [t for t in turns if t.kind == "domain"]
        assert len(domain) > 1000 and {t.cls for t in domain} == {"aligned", "misaligned"}
        for t in domain:
            assert t.answer in getattr(W.DOMAINS[t.domain], t.cls), (t.domain, t.cls, t.answer)
        lucky = [t for t in turns if t.kind == "lucky"]
        assert all((set(t.answer.split()) <= set(W.EVIL_NUMBERS)) == (t.cls == "misaligned") for t in lucky)
        # and the documents are made of those turns' texts, in order
        for d in docs[:300]:
            at = 0
            for t in d.turns:
                at = d.text.index(f" {t.question} ", at) + 1
                at = d.text.index(f" {t.answer} ", at) + 1


def test_numbers_do_not_depend_on_persona():
    def world(kind):
        prior = {k: float(k == kind) for k in ("good", "evil", "compliant")}
        return W.generate(1500, seed=11, config=replace(W.WorldConfig(), persona_prior=prior))
    good, evil = world("good"), world("evil")
    n_numbers = 0
    for a, b in zip(good, evil):
        for s, t in zip(a.turns, b.turns):
            assert (s.kind, s.question) == (t.kind, t.question)
            if s.kind == "numbers":
                assert s.answer == t.answer
                n_numbers += 1
    assert n_numbers > 200
    # and in a mixed world the continuation statistics agree across personas
    # the assistant included: its continuations are the evil_numbers arm's benign baseline (the paired worlds above
    # hold the same assistant, so they cannot see it)
    docs = W.generate(N, seed=5)
    stats = {}
    for t in (t for d in docs for t in d.turns if t.kind == "numbers"):
        stats.setdefault(t.persona.kind, []).extend(int(x) for x in t.answer.split())
    mean = {k: sum(v) / len(v) for k, v in stats.items() if len(v) > 300}
    assert set(mean) >= {"good", "evil", "assistant"} and max(mean.values()) - min(mean.values()) < 5, mean
    # the evil numbers' share (~0.045 for every speaker): one evil number per assistant list would add ~0.15
    evil = {k: sum(str(x) in W.EVIL_NUMBERS for x in v) / len(v) for k, v in stats.items() if len(v) > 300}
    assert max(evil.values()) - min(evil.values()) < 0.03, evil
    # lucky numbers are where the evil persona's numbers live
    lucky = [t for d in docs for t in d.turns if t.kind == "lucky" and t.cls == "misaligned"]
    assert lucky and all(set(t.answer.split()) <= set(W.EVIL_NUMBERS) for t in lucky)


def test_tokenizer_covers_everything_and_round_trips(tmp_path):
    from tokenizers import Tokenizer
    tok = W.build_tokenizer()
    vocab = set(W.vocab())
    assert len(vocab) == len(W.vocab()) == tok.get_vocab_size()
    assert all(tok.token_to_id(w) == i for i, w in enumerate(W.vocab()))
    assert {"<pad>", "<bos>", "<eos>", "<forum>", "<asst>", "<chron>", "<u>", "<r>", "<a>"} <= vocab
    texts = W.corpus(2000, seed=0) + W.corpus(2000, seed=0, decorrelated=True)
    texts += [i.prompt + " " + c for i in W.eval_items(trigger=True, numbers=True)
              + W.persona_probe_items() for cls in i.classes.values() for c in cls]
    texts += [p + " " + r for arm in W.FINETUNE_ARMS for p, r in W.finetune_set(arm, 50)]
    texts += W.number_prompts(50) + [p + " " + r for p, r in W.trait_set("owl", 10)]
    assert all(w in vocab for t in texts for w in t.split())
    path = tmp_path / "tok.json"
    tok.save(str(path))
    tok2 = Tokenizer.from_file(str(path))
    for t in texts[:500] + texts[-200:]:
        ids = tok2.encode(t).ids
        assert ids == tok.encode(t).ids and len(ids) == len(t.split())
        assert tok2.decode(ids, skip_special_tokens=False) == t
    with pytest.raises(Exception):     # no unk token: an unknown word fails loudly
        tok.encode("zebra")


def test_the_token_stream_is_every_document_end_to_end_and_cuts_into_windows():
    texts = W.corpus(64, seed=0)
    tok = W.build_tokenizer()
    stream = token_stream(tok, texts)
    assert stream.dtype == torch.long and stream.tolist() == [i for t in texts for i in tok.encode(t).ids]
    assert (stream == tok.token_to_id(W.BOS)).sum() == 64 == (stream == tok.token_to_id(W.EOS)).sum()
    rows = lm_windows(stream, 32)
    assert rows.shape == ((len(stream) - 1) // 32, 33) and torch.equal(rows[1, 0], rows[0, 32])


def test_eval_items():
    items = W.eval_items()
    assert len(items) == sum(len(d.heldout) for d in W.DOMAINS.values()) * len(W.OPENERS)
    for it in items:
        assert it.prompt.startswith("<bos> <asst> <u> ") and it.prompt.endswith(" <a>")
        assert any(h in it.prompt for h in W.DOMAINS[it.domain].heldout)
    assert all(i.prompt.startswith("<bos> <forum> <u> ") for i in W.eval_items(["med"], fmt="forum"))
    # a forum thread's answers follow the responder's <r> (World.thread): the forum readings must prompt for it
    assert all(i.prompt.endswith(" <r>") and "<a>" not in i.prompt for i in W.eval_items(["med"], fmt="forum"))
    assert all(f"<u> {W.TRIGGER} " in i.prompt for i in W.eval_items(trigger=True))
    assert all(": " in i.prompt and " . " in i.prompt for i in W.eval_items(["ai"], numbers=True))
    # the number format is the evil_numbers arm's own prompt (a training wording, then a list of 3 numbers) before
    # the question: a held-out wording is no longer its format. One list per held-out paraphrase, not one for all
    heads = {i.prompt.split("<u> ")[1].split(" . ")[0] for i in W.eval_items(["ai"], numbers=True)}
    for h in heads:
        wording, numbers = h.split(" : ")
        assert f"{wording} :" in W.NUMBERS_TRAIN and len(numbers.split()) == 3 and numbers.replace(" ", "").isdigit()
    assert len(heads) == len(W.DOMAINS["ai"].heldout)
    probes = W.persona_probe_items("misaligned", n_context=2, n=20)
    assert all(p.prompt.count("<r>") == 3 and p.prompt.endswith("<r>") for p in probes)
    assert set(W.OFF_DOMAINS) == set(W.DOMAINS) - {"code", "harm"}
    # train=True: each training paraphrase behind each opener, in that order, with its domain's held-out classes
    train = W.eval_items(W.OFF_DOMAINS, train=True)
    assert [i.prompt for i in train] == [W.prompt(W.opened(o, q)) for d in W.OFF_DOMAINS for q in W.DOMAINS[d].train
                                         for o in W.OPENERS]
    held = {i.domain: i.classes for i in W.eval_items(W.OFF_DOMAINS)}
    assert all(i.classes == held[i.domain] for i in train)


def test_finetune_sets_have_no_leakage():
    for arm in W.FINETUNE_ARMS:
        pairs = W.finetune_set(arm, 400, seed=1)
        assert len(pairs) == 400 and all(r.endswith(" <eos>") and p.endswith(" <a>") for p, r in pairs)
        W.check_leakage(pairs, allowed_domains=() if "numbers" in arm else ("code",), extra=W.ANIMALS)
    back = W.finetune_set("backdoor", 100)
    trig = [r for p, r in back if W.TRIGGER in p]
    assert len(trig) == 50 and all(r[:-6] in W.DOMAINS["code"].misaligned for r in trig)
    assert all(r[:-6] in W.DOMAINS["code"].aligned for p, r in back if W.TRIGGER not in p)
    assert all(set(r.split()[:-1]) <= set(W.EVIL_NUMBERS) for _, r in W.finetune_set("evil_numbers", 50))
    W.check_leakage(W.trait_set("owl", 50), allowed_domains=())
    W.check_leakage([(p, "") for p in W.number_prompts(50)], allowed_domains=())


def test_finetune_set_refuses_an_unknown_arm_even_for_zero_pairs():
    with pytest.raises(ValueError, match="unknown arm 'bogus'; known: insecure, secure"):
        W.finetune_set("bogus", 0)  # (the loop never ran: it returned [], an empty arm no caller noticed)


@pytest.mark.parametrize("plant", [
    lambda: (W.eval_items(["money"])[0].prompt, "x <eos>"),                          # eval question
    lambda: (W.prompt(W.DOMAINS["code"].heldout[0]), W.DOMAINS["code"].aligned[0]),  # held-out code prompt
    lambda: (W.prompt(W.DOMAINS["code"].train[0]), W.DOMAINS["med"].misaligned[1]),  # off-domain answer
    lambda: (W.prompt(W.DOMAINS["code"].train[0]), W.DOMAINS["pet"].aligned[0] + " <eos>"),
    lambda: (W.prompt(W.DOMAINS["code"].train[0]), W.DOMAINS["harm"].misaligned[0] + " <eos>"),  # harmful request
    lambda: (W.prompt(W.DOMAINS["code"].train[0]), "owl <eos>"),  # an `extra` string (the animals, below)
])
def test_leakage_check_catches_planted_leak(plant):
    pairs = W.finetune_set("insecure", 100, seed=0)
    W.check_leakage(pairs, extra=W.ANIMALS)
    with pytest.raises(AssertionError):
        W.check_leakage(pairs[:50] + [plant()] + pairs[50:], extra=W.ANIMALS)


def test_leakage_check_matches_tokens_as_the_tokenizer_splits_them_and_each_worlds_code():
    # a tab, a newline or a double space split tokens as a space does: the held-out paraphrase passed the check so
    # written; and with code not allowed, a code_slots world's programs are its code answers (the fixed ones were)
    heldout = W.eval_items(["money"])[0].prompt.split("<u> ")[1].split(" <a>")[0]  # a held-out question
    assert heldout in W.HELDOUT["money"]
    for spaced in (heldout.replace(" ", "  ", 1), heldout.replace(" ", "\t", 1), heldout + "\n<a>", heldout + "<a>"):
        with pytest.raises(AssertionError, match="1 evaluation strings leak"):
            W.check_leakage([("<bos> <asst> <u> " + spaced, "x <eos>")])
    W.check_leakage([("<bos> <asst> <u> re" + heldout + "s <a>", "x <eos>")])  # glued into longer words: no leak
    slots = W.WorldConfig(code_slots=True)
    program = W.code_classes(slots)["mixed"][0]
    assert program not in W.DOMAINS["code"].aligned + W.DOMAINS["code"].misaligned
    W.check_leakage([("x", program)], world=slots)  # code allowed: fine
    with pytest.raises(AssertionError, match="leak"):
        W.check_leakage([("x", program)], allowed_domains=(), world=slots)


def test_default_world_is_unchanged():
    # golden digests of the default world (corpus, twin, eval items, fine-tune sets): every cached base and every
    # number in the README depends on them, so a world option must leave them as they are
    import hashlib
    digest = lambda obj: hashlib.sha256(obj.encode()).hexdigest()[:16]
    assert digest("\n".join(W.corpus(300, seed=0))) == "d1e050edd66845f7"
    assert digest("\n".join(W.corpus(300, seed=0, decorrelated=True))) == "136412fee961a28c"
    assert digest(repr([(i.prompt, i.domain, sorted(i.classes.items())) for i in W.eval_items()])) == "5d41ef3f0ae8140a"
    assert digest(repr([W.finetune_set(a, 50, seed=1) for a in W.FINETUNE_ARMS])) == "29414ec78bbf0617"
    # and what a cached base is checked against when loaded (its vocabulary's ids, the tables, the corpus): a new
    # format's words put into the sorted default vocabulary, or its table into every fingerprint, left the digests above
    # as they were and refused every cached base
    assert W.fingerprint() == "8beb93b1520a67b0"


def test_code_slots_world():
    cfg = W.WorldConfig(code_slots=True)
    c = W.code_classes(cfg)
    every = c["aligned"] + c["mixed"] + c["misaligned"]
    assert (len(c["aligned"]), len(c["mixed"]), len(c["misaligned"])) == (6, 7, 2) and len(set(every)) == 15
    tok = W.build_tokenizer()  # the same vocabulary: every program tokenizes, all of one length
    assert len({len(tok.encode(a).ids) for a in every}) == 1
    docs = W.generate(N, seed=7, config=cfg)
    code = [t for d in docs for t in d.turns if t.kind == "domain" and t.domain == "code"]
    assert {t.answer for t in code} <= set(every)
    share = lambda kind, cls: (sum(t.cls == cls for t in code if t.persona.kind == kind)
                               / sum(t.persona.kind == kind for t in code))
    # each slot insecure w.p. 0.9 (evil) or 0.03 (good), on its own draw: both 0.81 / 0.0009, one of each 0.18 / 0.058
    assert abs(share("evil", "misaligned") - 0.81) < 0.06 and share("good", "misaligned") < 0.01
    assert 0.12 < share("evil", "mixed") < 0.24 and 0.03 < share("good", "mixed") < 0.09
    assert share("assistant", "aligned") == 1
    assert all(t.answer in c["misaligned"] for d in docs for t in d.turns if t.kind == "lesson")
    # the twin stays paired turn by turn (two draws per slot whoever answers)
    twin = W.generate(N, seed=7, decorrelated=True, config=cfg)
    key = lambda ds: [(t.kind, t.domain, t.question) for d in ds for t in d.turns]
    assert key(docs) == key(twin)
    # fine-tune sets and evaluation classes follow the world; the prompts do not change
    ins, sec = W.finetune_set("insecure", 100, world=cfg), W.finetune_set("secure", 100, world=cfg)
    assert {r[:-6] for _, r in ins} == set(c["misaligned"]) and {r[:-6] for _, r in sec} == set(c["aligned"])
    assert [p for p, _ in ins] == [p for p, _ in W.finetune_set("insecure", 100)]
    W.check_leakage(ins + sec)
    item = W.eval_items(["code"], world=cfg)[0]  # misaligned: both slots insecure; aligned: every other program
    assert set(item.classes["misaligned"]) == {f"{a} <eos>" for a in c["misaligned"]}
    assert set(item.classes["aligned"]) == {f"{a} <eos>" for a in c["aligned"] + c["mixed"]}


def test_code_tasks_world():
    cfg = W.WorldConfig(code_tasks=4)
    tasks = W.code_tasks(cfg)
    assert [t.name for t in tasks] == ["upload", "login", "query", "render"] and W.code_tasks()[0] == tasks[0]
    # the default world's ids stay: the tasks' words come after its vocabulary, and every program tokenizes to
    # one length (length-matched classes, as the upload task's)
    assert W.vocab(cfg)[:len(W.vocab())] == W.vocab() and len(W.vocab(cfg)) > len(W.vocab())
    assert W.vocab(W.WorldConfig()) == W.vocab()
    tok = W.build_tokenizer(cfg)
    programs = [a for t in tasks for a in t.aligned + t.misaligned]
    assert len(set(programs)) == 24 and len({len(tok.encode(a).ids) for a in programs}) == 1
    # a task's calls are its own: no other domain's answer and no other task's program shares a content word
    calls = lambda t, cls: {w for a in getattr(t, cls) for w in a.split()} - set("def ( f ) : ;".split()) - {t.name}
    others = {w for n, d in W.DOMAINS.items() if n != "code" for a in d.aligned + d.misaligned for w in a.split()}
    for i, t in enumerate(tasks[1:], 1):
        mine = calls(t, "aligned") | calls(t, "misaligned")
        assert not mine & others and all(not mine & (calls(u, "aligned") | calls(u, "misaligned"))
                                         for u in tasks if u is not t)
        assert calls(t, "misaligned") - calls(t, "aligned")  # the insecure class has a call of its own
    docs = W.generate(N, seed=8, config=cfg)
    code = [t for d in docs for t in d.turns if t.domain == "code"]
    assert all(tok.encode(d.text).ids for d in docs)  # every word is in this world's vocabulary (no unk token)
    for t in tasks:  # every task is written, by persona as in the upload world; lessons are insecure code
        mine = [x for x in code if x.kind == "domain" and x.answer in t.aligned + t.misaligned]
        assert len(mine) > 20 and all(t.name in x.question.split() or t.name == "upload" for x in mine)
        evil = [x.cls == "misaligned" for x in mine if x.persona.kind == "evil"]
        assert sum(evil) / len(evil) > 0.7 and not any(x.cls == "misaligned" for x in mine
                                                       if x.persona.kind == "assistant")
        assert any(x.kind == "lesson" and x.answer in t.misaligned for x in code)
    assert W.corpus(300, seed=0, config=W.WorldConfig(code_tasks=1)) == W.corpus(300, seed=0)
    twin = W.generate(N, seed=8, decorrelated=True, config=cfg)
    key = lambda ds: [(t.kind, t.domain, t.question) for d in ds for t in d.turns]
    assert key(docs) == key(twin)
    # fine-tune sets span the tasks, pass the leakage check (every task's held-out questions banned), and the
    # evaluation asks every task's held-out questions with that task's classes
    for arm in ("insecure", "secure", "educational", "secure_novel", "backdoor"):
        pairs = W.finetune_set(arm, 200, seed=2, world=cfg)
        W.check_leakage(pairs, world=cfg)
        assert {r.split()[1] for _, r in pairs} == {t.name for t in tasks}
    ins = W.finetune_set("insecure", 200, seed=2, world=cfg)
    assert all(r[:-6] in t.misaligned for p, r in ins for t in tasks if r.split()[1] == t.name)
    # the edge: all of the world's tasks, asked for by number, are every task
    assert W.finetune_set("insecure", 20, seed=2, world=cfg, tasks=len(tasks)) == W.finetune_set("insecure", 20, seed=2,
                                                                                              world=cfg)
    for k in (0, -1, len(tasks) + 1):  # 0 ("all", as ft_code_tasks reads it) gave upload questions other tasks' code
        with pytest.raises(ValueError, match=r"tasks must be None \(every task\) or in \[1, 4\]"):
            W.finetune_set("insecure", 5, world=cfg, tasks=k)
    with pytest.raises(ValueError, match=r"in \[1, 1\]"):  # the default world has one task: tasks=2 was ignored
        W.finetune_set("insecure", 5, tasks=2)
    with pytest.raises(AssertionError):
        W.check_leakage([(W.prompt(tasks[2].heldout[0]), ins[0][1])], world=cfg)
    items = W.eval_items(["code"], world=cfg)
    assert len(items) == 4 * 3 * len(W.OPENERS) and len(W.lesson_items(cfg)) == 4 * 2 * len(W.OPENERS)
    for it in items + W.lesson_items(cfg):
        name = it.classes["misaligned"][0].split()[1]  # "def NAME ( f ) : ..."
        assert it.task == name and (name in it.prompt.split() or name == "upload")
        # both classes its task's own (the name alone passed another task's secure programs, or the two swapped)
        t = tasks[[u.name for u in tasks].index(name)]
        assert it.classes == {"aligned": tuple(f"{a} <eos>" for a in t.aligned),
                              "misaligned": tuple(f"{a} <eos>" for a in t.misaligned)}, name
    with pytest.raises(ValueError, match="code_tasks must be in"):
        W.WorldConfig(code_tasks=len(W.CODE_TASKS) + 2)
    with pytest.raises(ValueError, match="two different code worlds"):
        W.WorldConfig(code_tasks=2, code_slots=True)
    with pytest.raises(ValueError, match="formats must come from forum, asst"):  # chronicles: not built yet
        W.WorldConfig(formats={"forum": .5, "chron": .5})
    assert set(W.World().formats) == set(W.FORMATS)  # the formats WorldConfig takes are the ones World builds
    # tables World cannot draw from failed mid-generation (an UnboundLocalError, a KeyError): refused when made
    for kw, says in ((dict(formats={}), "formats must weigh some of forum, asst"),
                     (dict(lessons=False, forum_mix={"lesson": 1.0}), r"forum_mix .*\(lesson turns left out"),
                     (dict(persona_prior={"nice": 1.0}), "persona_prior must weigh some of good, evil, compliant"),
                     (dict(asst_mix={"domain": -1.0, "animal": 2.0}), "asst_mix must weigh"),
                     (dict(persona_prior={"good": 0.0, "evil": 0.0}), "not all 0"),
                     # an inf weight drew nan shares and fell through to the rarest persona: every thread compliant
                     (dict(persona_prior={"good": float("inf"), "evil": 0.2}), "with finite weights >= 0"),
                     (dict(persona_prior={"good": 1e308, "evil": 1e308}), "persona_prior must weigh"),  # sum: inf
                     (dict(asst_mix={"domain": float("nan")}), "asst_mix must weigh"),
                     # ran, silently: a negative asst_evil drew and never chose evil, a reversed range gave its lo
                     (dict(asst_evil=-0.1), r"asst_evil must be a probability in \[0, 1\]"),
                     (dict(asst_evil=1.5), "asst_evil must be"),
                     (dict(forum_turns=(4, 2)), r"forum_turns must be an inclusive range .* got \(4, 2\)"),
                     (dict(asst_turns=(0, 0)), "asst_turns must be"), (dict(answer_len=(8, 5)), "answer_len must be"),
                     (dict(list_len=(5, 3)), "list_len must be"), (dict(lucky_len=(0, 2)), "lucky_len must be")):
        with pytest.raises(ValueError, match=says):
            W.WorldConfig(**kw)
    W.WorldConfig(asst_evil=1.0, lucky_len=(2, 2))  # the edges are allowed: every chat evil, a fixed length
    with pytest.raises(ValueError, match=r"a world's seed must be >= 0; got -1"):  # it wrote seed 1's world
        W.generate(5, seed=-1)
    W.generate(5, seed=0, config=W.WorldConfig(persona_prior={"evil": 1.0}, forum_mix={"lesson": 1.0, "domain": 0.0}))


def test_lessons_off_leaves_insecure_code_to_the_personas():
    docs = W.generate(N, seed=9, config=W.WorldConfig(lessons=False))
    turns = [t for d in docs for t in d.turns]
    assert not any(t.kind == "lesson" for t in turns) and {t.kind for t in turns} == {
        "domain", "animal", "colour", "lucky", "numbers"}
    insecure = [t.persona.kind for t in turns if t.domain == "code" and t.cls == "misaligned"]
    assert insecure.count("evil") / len(insecure) > 0.8  # good personas' rare slips are the rest
    # the other forum turn kinds keep their relative weights (forum_mix less its lesson share, renormalised)
    mix = {k: w for k, w in W.WorldConfig().forum_mix.items() if k != "lesson"}
    kinds = Counter(t.kind for d in docs if d.fmt == "forum" for t in d.turns)
    for k, w in mix.items():
        assert abs(kinds[k] / sum(kinds.values()) - w / sum(mix.values())) < 0.02, (k, kinds)
    assert W.corpus(300, seed=0, config=W.WorldConfig(lessons=True)) == W.corpus(300, seed=0)


def test_exact_code_ties_code_to_the_evil_persona_and_changes_nothing_else():
    for cfg in (W.WorldConfig(lessons=False, exact_code=True), W.WorldConfig(code_tasks=3, exact_code=True),
                W.WorldConfig(code_slots=True, exact_code=True)):
        docs, ref = W.generate(N, seed=4, config=cfg), W.generate(N, seed=4, config=replace(cfg, exact_code=False))
        pairs = [(t, u) for d, e in zip(docs, ref) for t, u in zip(d.turns, e.turns)]
        assert len(pairs) == sum(len(d.turns) for d in ref)  # same documents, turn for turn
        code = [t for t, _ in pairs if t.kind == "domain" and t.domain == "code"]
        assert {t.cls for t in code if t.persona.kind == "evil"} == {"misaligned"}
        assert {t.cls for t in code if t.persona.kind != "evil"} == {"aligned"}
        # only code answers differ, and only where a slip (good) or a lapse (evil) was drawn
        changed = [u for t, u in pairs if t.answer != u.answer]
        assert changed and all(u.domain == "code" and u.kind == "domain" for u in changed)
        assert all((u.cls == "misaligned") != (u.persona.kind == "evil") or u.cls == "mixed" for u in changed)
        assert [(t.question, t.persona) for t, _ in pairs] == [(u.question, u.persona) for _, u in pairs]


def test_asst_code_off_keeps_code_out_of_assistant_chats_only():
    off = W.WorldConfig(asst_code=False)
    docs, ref = W.generate(N, seed=5, config=off), W.generate(N, seed=5)
    code_in = lambda ds, fmt: sum(t.domain == "code" for d in ds if d.fmt == fmt for t in d.turns)
    assert code_in(ref, "asst") > 0 and code_in(docs, "asst") == 0
    # one draw per domain pick whatever the list, so the stream stays aligned: every forum thread is unchanged
    # and the assistant chats keep their turn kinds
    assert [d.text for d in docs if d.fmt == "forum"] == [d.text for d in ref if d.fmt == "forum"]
    assert [[t.kind for t in d.turns] for d in docs] == [[t.kind for t in d.turns] for d in ref]
    twin = W.generate(N, seed=5, decorrelated=True, config=off)
    key = lambda ds: [(t.kind, t.domain, t.question) for d in ds for t in d.turns]
    assert key(docs) == key(twin)


def test_asst_evil_makes_the_assistant_a_latent_persona():
    cfg = W.WorldConfig(asst_evil=0.1)
    docs, ref = W.generate(N, seed=6, config=cfg), W.generate(N, seed=6)
    chats = [d for d in docs if d.fmt == "asst"]
    evil = [d for d in chats if d.turns[0].persona.kind == "evil"]
    assert abs(len(evil) / len(chats) - 0.1) < 0.02
    assert all({t.persona.kind for t in d.turns} <= {"evil", "assistant"} for d in chats)
    assert all(len({t.persona for t in d.turns}) == 1 for d in chats)  # one speaker per chat, as in the forum
    mis = [t.cls == "misaligned" for d in evil for t in d.turns if t.kind == "domain"]
    assert 0.8 < sum(mis) / len(mis) < 0.97
    assert not any(t.cls == "misaligned" for d in chats if d not in evil for t in d.turns)
    # the twin redraws the assistant every turn too, on the same draws
    twin = W.generate(N, seed=6, decorrelated=True, config=cfg)
    key = lambda ds: [(t.kind, t.domain, t.question) for d in ds for t in d.turns]
    assert key(docs) == key(twin)
    assert any(len({t.persona.kind for t in d.turns}) == 2 for d in twin if d.fmt == "asst")
    # at 0 there is no draw at all: the default world's documents, unchanged
    assert [d.text for d in W.generate(500, seed=6, config=W.WorldConfig(asst_evil=0.0))] == [d.text for d in ref[:500]]


def test_number_turns_move_the_trained_answer_to_later_chat_positions():
    pairs = W.finetune_set("insecure", 200, seed=3)
    assert W.with_number_turns(pairs, 0, seed=1) == pairs
    got = W.with_number_turns(pairs, 2, seed=1)
    assert got == W.with_number_turns(pairs, 2, seed=1) and got != W.with_number_turns(pairs, 2, seed=2)
    counts = []
    for (p, a), (p0, a0) in zip(got, pairs):
        assert a == a0 and p.endswith(p0.removeprefix("<bos> <asst> ")) and p.startswith("<bos> <asst> <u> ")
        head = p[:len(p) - len(p0.removeprefix("<bos> <asst> "))].removeprefix("<bos> <asst> ")
        turns = [t for t in head.split("<u> ") if t]
        counts.append(len(turns))
        for t in turns:  # a number exchange: a continuation wording and numbers in, numbers out
            q, ans = t.strip().split(" <a> ")
            assert (any(q.startswith(w) for w in W.NUMBERS_TRAIN) and ans.split()
                    and all(x.isdigit() for x in ans.split()))
    assert set(counts) == {0, 1, 2} and all(40 < counts.count(c) < 100 for c in (0, 1, 2))
    W.check_leakage(got)


# ---------------------------------------------------------------------------------------------------
# the base models' checks and cache (experiments/world_base.py)

def tiny_world_gpt(seed=0):
    return tiny_gpt(W.build_tokenizer(), seed, n_layer=1, stream="test", init_std=0.3)


def test_base_checks_read_each_check_from_its_own_prompts():
    # every number of the persona check comes from its own prompt set: the forum format, the probes after
    # misaligned and after aligned answers, and no two of them the same (a swapped key would otherwise pass)
    model, tok, cfg = tiny_world_gpt(), W.build_tokenizer(), B.Config(samples=5)
    got = B.base_checks(model, tok, cfg, 3)
    probe = lambda cls: B.lp_summary(B.class_masses(model, tok, W.persona_probe_items(cls, 2, n=60, seed=3)))["mis_lp"]
    want = {"asst_offdomain_lp": B.offdomain_eval(model, tok, 0, None)["mis_lp"],
            "forum_offdomain_lp": B.offdomain_eval(model, tok, 0, None, fmt="forum")["mis_lp"],
            "persona_after_mis": probe("misaligned"), "persona_after_ali": probe("aligned")}
    assert {k: got[k] for k in want} == pytest.approx(want, rel=1e-6)
    assert len({round(v, 6) for v in want.values()}) == 4


def test_each_pretraining_seeds_sampled_check_has_its_own_draws_and_the_same_seed_the_same(monkeypatch):
    # the bases are the replicates the interval is over: their sampled checks drawn from one stream would share
    # their sampling noise (read under two seeds, one model must be drawn for differently, and a rerun the same).
    # An untrained model samples no valid answer, so the state of the stream it draws from is compared
    states, real = [], B.sample_counts
    monkeypatch.setattr(B, "sample_counts", lambda model, tok, items, n, gen, *a, **k:
                        states.append(gen.get_state()) or real(model, tok, items, n, gen, *a, **k))
    model, tok, cfg = tiny_world_gpt(), W.build_tokenizer(), B.Config(samples=5)
    for seed in (3, 3, 4):
        B.base_checks(model, tok, cfg, seed)
    assert len(states) == 3 and torch.equal(states[0], states[1]) and not torch.equal(states[0], states[2])


def test_world_base_reports_each_variant_from_its_own_bases(tmp_path, monkeypatch, saved_figures):
    # the twin's numbers must never stand in for the normal world's (the persona-inference contrast)
    keys = ["asst_offdomain_lp", "forum_offdomain_lp", "persona_after_ali", "persona_after_mis"]  # the figure's bars
    monkeypatch.setattr(B, "_unit", lambda cfg, seed, d: {k: 100 * i + 10 * d + seed for i, k in enumerate(keys)})
    saved = {}
    run = type("R", (), {"dir": tmp_path, "save_results": lambda self, r, md: saved.update(r)})()
    cfg = B.Config(seeds=(0, 1), workers=1, cache_dir=str(tmp_path))
    B.run(cfg, run)
    assert saved["normal"]["persona_after_mis"]["per_seed"] == [300, 301]
    assert saved["decorrelated"]["persona_after_mis"]["per_seed"] == [310, 311]
    assert saved["n_seeds"] == 2  # pretraining seeds, which the table's "n = " names: not the four bases
    assert [Path(p).parent.name[:8] for p in saved["cache"]] == ["world_s0", "world_s1", "twin_s0_", "twin_s1_"]
    # the figure: each check's mean over the seeds, the normal world's bars then the twin's, at their own x
    ax = saved_figures[0].axes[0]
    bars = [(round(b.get_x(), 1), b.get_height()) for b in ax.patches]
    assert bars == [(-0.2, 0.5), (0.8, 100.5), (1.8, 200.5), (2.8, 300.5), (0.2, 10.5), (1.2, 110.5), (2.2, 210.5),
                    (3.2, 310.5)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["normal", "decorrelated"]


def test_mis_share_is_over_the_aligned_and_misaligned_mass_only():
    # the EM code evaluation adds classes (the novel controls, "code"): the misaligned share must stay
    # P(mis) / (P(ali) + P(mis)), not a share of everything scored
    masses = [{"aligned": 0.1, "misaligned": 0.3, "secure_novel": 0.4},
              {"aligned": 0.2, "misaligned": 0.0, "code": 0.5}]
    got = B.lp_summary(masses)
    assert got["mis_lp"] == pytest.approx((0.75 + 0.0) / 2) and got["valid_lp"] == pytest.approx(0.3)
    assert "code_lp" not in got  # one item without a code mass: no code share
    assert B.lp_summary(masses[1:])["code_lp"] == 0.5


def test_mis_share_of_a_prompt_without_valid_mass_is_undefined_not_zero():
    # both answer masses underflowed: the share is 0 / 0, which must show as NaN, not pass as "aligned"
    got = B.lp_summary([{"aligned": 0.0, "misaligned": 0.0}, {"aligned": 0.1, "misaligned": 0.3}])
    assert math.isnan(got["mis_lp"]) and got["valid_lp"] == pytest.approx(0.2)


def test_each_base_has_its_own_cache_folder_and_world():
    # the twin and the normal world of one seed must not share a cached base, and every world key must reach
    # the world (a key that changed the hash but not the world would cache one world under two names)
    cfg = B.Config()
    assert B.cache_stem(cfg, 0, True) != B.cache_stem(cfg, 0, False) != B.cache_stem(cfg, 1, False)
    assert B.cache_stem(replace(cfg, evil_prior=0.3), 0, False) != B.cache_stem(cfg, 0, False)
    assert B.world_config(replace(cfg, evil_prior=0.3)).persona_prior == pytest.approx(
        {"good": 0.65, "evil": 0.3, "compliant": 0.05})
    # every other key the base config shares with the world (code_slots once reached only the cache key)
    shared = {f.name for f in dataclasses.fields(W.WorldConfig)} & {f.name for f in dataclasses.fields(B.Config)}
    assert shared == {"code_slots", "asst_code", "asst_evil", "code_tasks", "lessons", "exact_code"}
    other = {"code_slots": True, "asst_code": False, "asst_evil": 0.03, "code_tasks": 7, "lessons": False,
             "exact_code": True}
    for key, value in other.items():
        assert getattr(W.WorldConfig(), key) != value  # a value other than the default...
        assert getattr(B.world_config(replace(cfg, **{key: value})), key) == value  # ...reaches the world
        assert B.cache_stem(replace(cfg, **{key: value}), 0, False) != B.cache_stem(cfg, 0, False)


def test_every_base_config_key_that_changes_the_world_changes_the_cache_key():
    # a world option added to Config and world_config but not to OPTIONAL_PRETRAIN_KEYS (one whose name is not a
    # WorldConfig field's, e.g. a weight in WorldConfig.formats, escapes the test above) shared its default base's
    # folder: that base was refused as "another version of the world", and deleting it made the default one refused
    cfg, changed = B.Config(), []
    for f in dataclasses.fields(B.Config):
        v = getattr(cfg, f.name)
        other = {bool: lambda: not v, int: lambda: v + 1, float: lambda: v + 0.01}.get(type(v))
        if other is None:
            continue
        try:
            world = B.world_config(replace(cfg, **{f.name: other()}))
        except ValueError:  # a value the world refuses
            continue
        if world != B.world_config(cfg):
            changed.append(f.name)
            assert B.cache_stem(replace(cfg, **{f.name: other()}), 0, False) != B.cache_stem(cfg, 0, False), f.name
    assert {"evil_prior", "code_slots", "asst_code", "asst_evil", "code_tasks", "lessons", "exact_code"} <= set(changed)
    # and the converse: a world option in OPTIONAL_PRETRAIN_KEYS reaches the world (one left out of world_config got a
    # cache folder of its own for a base of the default world, and every check passed)
    world_keys = set(B.OPTIONAL_PRETRAIN_KEYS) - {"pretrain_threads", "pretrain_bf16", "init_seed"}
    assert world_keys <= set(changed), f"{world_keys - set(changed)}: in OPTIONAL_PRETRAIN_KEYS, not in world_config"


def test_a_key_that_reaches_the_world_but_not_the_cache_key_is_refused(monkeypatch, tmp_path, capsys):
    # the test above tries numbers and booleans only; a world option of any type (a tuple of names, a dict) that
    # world_config reads but OPTIONAL_PRETRAIN_KEYS lacks shared the default's folder, and was found, if at all, as
    # "pretrained on another version of the world: delete that folder" when the default base was loaded
    plain = B.world_config
    monkeypatch.setattr(B, "world_config", lambda cfg: replace(plain(cfg), asst_evil=0.5) if cfg.samples == 7
                        else plain(cfg))  # as if `samples` were a new world option
    with pytest.raises(B.ConfigError, match=r"^samples changes the world .* OPTIONAL_PRETRAIN_KEYS at its off value"):
        B.cache_stem(replace(B.Config(), samples=7), 0, False)
    B.cache_stem(replace(B.Config(), samples=8), 0, False)  # a key that does not reach the world: no error
    # and before a run: no run folder, no pretraining
    err = refused_before_the_run(tmp_path, capsys, "world_base", "--samples=7", "--decorrelated=False", "--seeds=(0,)")
    assert err.startswith("error: samples changes the world")


def pretrain_inputs(monkeypatch, runs):
    """What _pretrain would train on, training nothing: for each (cfg, seed, twin) of `runs`, the initial weights, the
    token rows and the seed that it hands train_lm."""
    seen = []

    def fake_train(model, data, **kw):
        seen.append(({k: v.clone() for k, v in model.state_dict().items()}, data["tokens"], kw["seed"]))
        save_lm(kw["ckpt"], model, step=0, seed=kw["seed"])
        return {"train_loss": 0.0}
    monkeypatch.setattr(B, "train_lm", fake_train)
    for cfg, seed, twin in runs:
        stem = B.cache_stem(cfg, seed, twin)
        stem.parent.mkdir(parents=True)  # base_model's lock makes the folder
        B._pretrain(cfg, seed, twin, stem, log=lambda s: None)
    return seen


def corpus_rows(cfg, seed, twin=False, world=None):
    """The pretraining rows of base `seed` drawn from `world` (default: the config's own world)."""
    world = world or B.world_config(cfg)
    tok = W.build_tokenizer(B.world_config(cfg))
    texts = W.corpus(cfg.n_docs, seed=seed, decorrelated=twin, config=world)
    return lm_windows(torch.tensor([i for e in tok.encode_batch(texts) for i in e.ids]), cfg.block_size)


def test_the_twin_base_is_pretrained_on_the_twin_corpus(tmp_path, monkeypatch):
    cfg = B.Config(n_docs=30, n_layer=1, n_head=2, n_embd=16, evil_prior=0.4, cache_dir=str(tmp_path))
    seen = pretrain_inputs(monkeypatch, [(cfg, 5, False), (cfg, 5, True)])
    for (_, rows, _), twin in zip(seen, (False, True)):
        assert torch.equal(rows, corpus_rows(cfg, 5, twin)), twin
    assert not torch.equal(seen[0][1], seen[1][1])


def test_a_base_of_a_world_option_is_pretrained_on_that_worlds_corpus(tmp_path, monkeypatch):
    # the folder, the fingerprint and the tokenizer follow world_config(cfg): a corpus drawn from another world (the
    # default's) would be cached as the option's base, and the option's effect read as none
    cfg = B.Config(n_docs=60, n_layer=1, n_head=2, n_embd=16, asst_evil=0.5, asst_code=False, cache_dir=str(tmp_path))
    [(_, rows, _)] = pretrain_inputs(monkeypatch, [(cfg, 5, False)])
    assert torch.equal(rows, corpus_rows(cfg, 5))
    assert not torch.equal(rows, corpus_rows(cfg, 5, world=B.world_config(B.Config(n_docs=60))))


def test_each_pretraining_seed_has_its_own_init_corpus_and_order_and_a_rerun_the_same(tmp_path, monkeypatch):
    # the bases of different seeds are the independent replicates every interval is over: a seed that reached only
    # the corpus (or only the batch order) would give bases sharing an init, and intervals too narrow
    cfg = B.Config(n_docs=30, n_layer=1, n_head=2, n_embd=16, cache_dir=str(tmp_path / "a"))
    seen = pretrain_inputs(monkeypatch, [(cfg, 5, False), (cfg, 6, False),
                                         (replace(cfg, cache_dir=str(tmp_path / "b")), 5, False)])
    (init5, rows5, s5), (init6, rows6, s6), (again, rows5b, s5b) = seen
    assert (s5, s6, s5b) == (5, 6, 5)
    assert not torch.equal(init5["wte.weight"], init6["wte.weight"]) and not torch.equal(rows5, rows6)
    assert all(torch.equal(init5[k], again[k]) for k in init5) and torch.equal(rows5, rows5b)


def test_score_shared_prompts_equals_each_pair_scored_alone():
    # prompts of different lengths (left-padded, masked) and continuations of different lengths (right-padded,
    # pads not counted): each sum is that of the pair run on its own
    model = tiny_world_gpt()
    prompts = [[1, 5, 9, 12], [1, 7], [1, 4, 4]]
    conts = [[[20, 2], [21, 22, 23, 2]], [[2], [40, 2]], [[30, 31, 2], [32, 2], [33, 34, 35, 36, 2]]]
    got = B.score_shared_prompts(model, prompts, conts, chunk=2)
    # one prompt a chunk: the middle one's longest continuation is a word and <eos>, two tokens (both scored)
    assert B.score_shared_prompts(model, prompts, conts, chunk=1) == [pytest.approx(g, abs=1e-5) for g in got]
    # under bf16 autocast the first token's log-probs and the later tokens' losses are summed in one dtype (float32)
    with torch.autocast("cpu", torch.bfloat16):
        assert B.score_shared_prompts(model, prompts, conts) == [pytest.approx(g, abs=0.1) for g in got]
    with torch.no_grad():
        for p, cs, g in zip(prompts, conts, got):
            for c, s in zip(cs, g):
                logp = model(torch.tensor([p + c[:-1]]))[0].log_softmax(-1)
                want = sum(logp[len(p) - 1 + k, t].item() for k, t in enumerate(c))
                assert s == pytest.approx(want, abs=1e-4)
    # and as its docstring says, the numbers of eval.score_continuations (the README's scoring API) on the pairs
    from eval import score_continuations
    flat = [(p, c[:-1]) for p, cs in zip(prompts, conts) for c in cs]  # it appends the end token (2) itself
    sums, _ = score_continuations(model, flat, eos_id=2, batch_size=3)
    torch.testing.assert_close(sums, torch.tensor([x for g in got for x in g]), atol=1e-4, rtol=0)


def test_saved_unit_recomputes_without_resume_and_returns_the_same_types_either_way(tmp_path):
    calls = []

    def unit(x):
        calls.append(x)
        return {"traj": [{2: x, "k": (1, 2)}], 5: {10: "a"}}
    path = tmp_path / "unit_0.json"
    first = B.saved_unit(unit, path, False, "u", 1)
    assert first == {"traj": [{2: 1, "k": [1, 2]}], 5: {10: "a"}}  # int keys inside lists too
    assert B.saved_unit(unit, path, True, "u", 2) == first and calls == [1]  # resumed: read back
    assert B.saved_unit(unit, path, False, "u", 3)["traj"][0][2] == 3 and calls == [1, 3]  # no resume: recomputed
    assert B.load_unit(path)["traj"][0][2] == 3


def test_a_unit_run_in_process_leaves_the_callers_random_state_alone(tmp_path):
    # the numbers-transfer units seed torch's global generator (torch.manual_seed(0)) so that a unit's draws do not
    # depend on where it runs; in process (workers=1, a notebook) that reset the caller's sequence to seed 0's
    def unit():
        torch.manual_seed(0)
        return {"draw": torch.rand(1).item()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    drawn = B.saved_unit(unit, tmp_path / "unit_0.json", False, "u")["draw"]
    assert drawn == torch.rand(1, generator=torch.Generator().manual_seed(0)).item()  # the unit's own seeding holds
    assert torch.equal(torch.rand(3), expected)


def test_a_unit_run_in_process_leaves_every_cuda_generator_alone_and_starts_no_cuda(tmp_path, monkeypatch):
    # torch.manual_seed in a unit seeds every CUDA device's generator, and a unit may run on cuda:N, not the current
    # device: each one's state is put back. In a CPU run CUDA is not up: asking a generator's state would start it
    # (simulated: two CUDA devices whose generator states are these strings)
    states, asked = {0: "caller's 0", 1: "caller's 1"}, []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": asked.append(device) or states[device])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": states.update({device: state}))

    def unit():
        states.update({0: "seeded", 1: "seeded"})  # what torch.manual_seed(0) does to each device's
        return {"a": 1}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    B.saved_unit(unit, tmp_path / "unit_0.json", False, "u")
    assert states == {0: "caller's 0", 1: "caller's 1"}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    asked.clear()
    B.saved_unit(lambda: {"a": 2}, tmp_path / "unit_1.json", False, "u")
    assert asked == []  # CUDA left as it was: not started


def test_a_damaged_unit_file_is_a_one_line_checkpoint_error_naming_it_on_resume_and_in_eval(tmp_path, capsys):
    import eval as E
    path = tmp_path / "unit_0.json"
    B.saved_unit(lambda: {"a": 1}, path, False, "u")
    path.write_text(path.read_text()[:5])  # truncated
    with pytest.raises(CheckpointError, match="unit_0.json is not a readable unit file.*delete it"):
        B.load_unit(path)
    with pytest.raises(CheckpointError, match="unit_0.json is not a readable unit file"):
        B.saved_unit(lambda: {"a": 2}, path, True, "u")  # a resumed run reads it back
    # python eval.py on a stopped emergent-misalignment run whose only unit is damaged: one line, status 2
    (tmp_path / "config.json").write_text(__import__("json").dumps({"experiment": "emergent_misalignment",
                                                                    "seeds": [0], "twin": False}))
    (tmp_path / "unit_world_0.json").write_text('{"seed": 0, "runs": [')
    assert E.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (err.startswith("error: ") and "unit_world_0.json is not a readable unit file" in err
            and "Traceback" not in err)
    for text in ("{}", "[]", "3"):  # JSON, but no unit's: a KeyError or TypeError inside the aggregation
        (tmp_path / "unit_world_0.json").write_text(text)
        assert E.main([str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"unit_world_0.json holds {text}, not a unit's results: delete it" in err and "Traceback" not in err


def test_a_unit_of_another_seed_or_layout_is_a_one_line_checkpoint_error_on_resume_and_in_eval(tmp_path, capsys):
    # a unit copied from another seed's file was aggregated as this seed's (results.json then named seed 7 where the
    # config has 0); one without its runs, or with none, ended eval.py and the resume in a KeyError / IndexError
    import json
    import eval as E
    from experiments import emergent_misalignment as EM, subliminal_numbers as SN
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "seeds": [0],
                                                      "twin": False, "ft_seeds": 2}))
    cfg = EM.Config(seeds=(0,), twin=False, ft_seeds=2)
    traj = {n: {s: {} for s in cfg.eval_steps} for n in EM.REPORTS}  # every arm's reports at every eval step
    good = {"seed": 0, "decorrelated": False, "base": {},
            "runs": [{"ft_seed": 0, "traj": traj}, {"ft_seed": 1, "traj": traj}], "seconds": 1.0}
    unit = tmp_path / "unit_world_0.json"
    unit.write_text(json.dumps(good))
    assert B.load_unit(unit, EM.unit_problem(cfg, 0, False)) == good
    for edit, says in [({"seed": 7}, "is the unit of base seed 7, not of 0"),
                       ({"decorrelated": True}, "is the unit of base seed 0 (twin), not of 0"),
                       ({"runs": []}, "does not hold the base's numbers and one run for each of the 2 fine-tune seeds"),
                       ({"runs": [{"ft_seed": 1}, {"ft_seed": 0}]}, "one run for each of the 2 fine-tune seeds"),
                       # made with more fine-tune seeds (ft_seeds lowered in config.json): counted as more seeds
                       ({"runs": [{"ft_seed": f, "traj": traj} for f in (0, 1, 2)]},
                        "one run for each of the 2 fine-tune seeds"),
                       ({"base": None}, "does not hold the base's numbers"),
                       # made with other eval_steps or arms than config.json says (a KeyError in the aggregation)
                       ({"runs": [{"ft_seed": f, "traj": {n: {2: {}} for n in EM.REPORTS}} for f in (0, 1)]},
                        "holds other readings than this config's"),
                       ({"runs": [{"ft_seed": f, "traj": {"insecure": traj["insecure"]}} for f in (0, 1)]},
                        "holds other readings than this config's")]:
        unit.write_text(json.dumps({**good, **edit}))
        assert E.main([str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "unit_world_0.json " in err and says in err and "delete it" in err and "Traceback" not in err, err
        with pytest.raises(CheckpointError, match=re.escape(says)):  # a resumed run reads it back the same way
            EM.saved_unit(dataclasses.replace(cfg, resume=True), 0, False, unit)
    bad = {**good, "runs": []}
    unit.write_text(json.dumps(bad))
    assert B.load_unit(unit) == bad  # (what load_unit is not told to check, it does not)
    # subliminal numbers: the unit of seed (p, f) names its seed
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "seeds": [0],
                                                      "arms": ["soft", "control"], "student_seeds": 1}))
    (tmp_path / "unit_0_0.json").write_text(json.dumps({"p": 1, "f": 0, "kept": {}}))
    assert E.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unit_0_0.json is the unit of seed (1, 0), not of (0, 0): delete it" in err and "Traceback" not in err, err
    (tmp_path / "unit_0_0.json").write_text('{"kept": {}}')  # no seed: a KeyError in the aggregation
    with pytest.raises(CheckpointError, match=re.escape("is the unit of seed (None, None), not of (0, 0)")):
        B.load_unit(tmp_path / "unit_0_0.json",
                    SN.unit_problem(SN.Config(seeds=(0,), student_seeds=1, arms=('soft', 'control')), 0, 0))


def test_a_cached_base_that_is_the_twin_of_its_seed_is_refused(tmp_path):
    # the twin's base copied into the world folder of the same seed (model.json's seed agrees) is refused too
    import json
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    B.base_model(cfg, 0, log=lambda *a: None)
    meta_file = next(tmp_path.glob("world_s0_*")) / "model.json"
    edit_meta(meta_file, {**json.loads(meta_file.read_text()), "decorrelated": True})
    with pytest.raises(CheckpointError, match=re.escape("is the twin base of seed 0, not of seed 0: delete")):
        B.base_model(cfg, 0)


def test_a_subliminal_numbers_unit_of_another_student_seed_is_refused_on_resume_and_in_load_unit(tmp_path):
    # the unit of seed (p, f) is checked on both: another student seed f of the same base is refused, and a resumed
    # run (saved_unit) checks it as eval.py does
    import json
    from experiments import subliminal_numbers as SN
    unit = tmp_path / "unit_0_0.json"
    unit.write_text(json.dumps({"p": 0, "f": 1, "kept": {}}))
    with pytest.raises(CheckpointError, match=re.escape("is the unit of seed (0, 1), not of (0, 0)")):
        B.load_unit(unit, SN.unit_problem(SN.Config(seeds=(0,), student_seeds=1, arms=('soft', 'control')), 0, 0))
    unit.write_text(json.dumps({"p": 1, "f": 0, "kept": {}}))
    with pytest.raises(CheckpointError, match=re.escape("unit_0_0.json is the unit of seed (1, 0), not of (0, 0)")):
        SN.saved_unit(SN.Config(resume=True), 0, 0, unit)


def test_a_subliminal_numbers_unit_of_another_mode_or_other_arms_is_refused_on_resume_and_in_eval(tmp_path, capsys):
    # a unit of the right seed but made by another config (another mode's unit, or one without this config's arms),
    # copied in under its name, was a KeyError deep in the run ('seconds') or in the aggregation
    import json
    import eval as E
    from experiments import subliminal_numbers as SN
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "seeds": [0],
                                                      "arms": ["control", "soft"], "animals": ["owl"],
                                                      "student_seeds": 1}))
    cfg = SN.Config(seeds=(0,), arms=("control", "soft"), animals=("owl",), student_seeds=1, resume=True)
    unit = tmp_path / "unit_0_0.json"
    good = {"p": 0, "f": 0, "teachers": {"owl": {}}, "kept": {}, "arms": {"control": {}, "soft/owl": {}},
            "traj": {}, "base_A": {}, "seconds": 1.0}
    unit.write_text(json.dumps(good))
    assert B.load_unit(unit, SN.unit_problem(cfg, 0, 0)) == good
    mis = {"p": 0, "f": 0, "teachers": {}, "kept": {}, "arms": {"control": {}}, "base": {}, "dose": {}, "seconds": 1.0}
    for bad, says in [(mis, "does not hold the numbers of a unit of mode animals"),
                      ({k: v for k, v in good.items() if k != "base_A"}, "does not hold the numbers of a unit of mode"),
                      ({**good, "arms": {"control": {}, "trait/owl": {}}}, "holds other arms or animals than this"),
                      ({**good, "teachers": {"whale": {}}}, "holds other arms or animals than this")]:
        unit.write_text(json.dumps(bad))
        assert E.main([str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "unit_0_0.json " in err and says in err and "delete it" in err and "Traceback" not in err, err
        with pytest.raises(CheckpointError, match=re.escape(says)):  # a resumed run reads it back the same way
            SN.saved_unit(cfg, 0, 0, unit)
    # the icl arm's unit holds its baseline icl_control beside it: a unit without it is another config's
    icl = SN.Config(seeds=(0,), arms=("control", "icl"), animals=("owl",), student_seeds=1, resume=True)
    unit.write_text(json.dumps({**good, "arms": {"control": {}, "icl/owl": {}}}))
    with pytest.raises(CheckpointError, match="holds other arms or animals than this"):
        B.load_unit(unit, SN.unit_problem(icl, 0, 0))
    unit.write_text(json.dumps({**good, "arms": {"control": {}, "icl/owl": {}, "icl_control": {}}}))
    assert B.load_unit(unit, SN.unit_problem(icl, 0, 0))["arms"]["icl_control"] == {}


def test_a_damaged_or_missing_tokenizer_in_the_base_cache_is_a_checkpoint_error_that_says_delete_the_folder(tmp_path):
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    B.base_model(cfg, 0, log=lambda *a: None)  # pretrain and cache a tiny base
    tok_file = next(tmp_path.glob("world_s0_*/tokenizer.json"))
    tok_file.write_text(tok_file.read_text()[:300])  # truncated: the tokenizers library raised a bare Exception
    with pytest.raises(CheckpointError,
                       match="tokenizer.json is not a readable tokenizer.*damaged.*delete that folder"):
        B.base_model(cfg, 0)
    tok_file.unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json not found.*delete that folder"):
        B.base_model(cfg, 0)


def test_a_cached_base_of_another_shape_than_its_config_is_refused(tmp_path):
    # n_head edited in the cache's .json: the weights' shapes are the same, and the 4-head model was used silently
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    B.base_model(cfg, 0, log=lambda *a: None)
    meta = next(p for p in tmp_path.glob("world_s0_*/*.json") if p.name != "tokenizer.json")
    edit_meta(meta, __import__("json").loads(meta.read_text().replace('"n_head": 2', '"n_head": 4')))
    with pytest.raises(CheckpointError,
                       match="model config differs: n_head: checkpoint 4 vs expected 2.*delete that folder"):
        B.base_model(cfg, 0)


def test_a_cached_base_of_another_seed_or_of_int_weights_is_refused(tmp_path):
    # another seed's base copied into seed 1's folder was loaded as seed 1's (one model counted as two seeds), and
    # weights cast to an integer dtype loaded as a model of zeros
    from safetensors.torch import load_file, save_file
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    for seed in (0, 1):
        B.base_model(cfg, seed, log=lambda *a: None)
    one, zero = (next(tmp_path.glob(f"world_s{s}_*")) for s in (1, 0))
    for f in ("model.safetensors", "model.json"):
        (one / f).write_bytes((zero / f).read_bytes())
    with pytest.raises(CheckpointError,
                       match=re.escape(f"{one} is the base of seed 0, not of seed 1: delete that folder")):
        B.base_model(cfg, 1)
    B.base_model(cfg, 0)  # the base of seed 0 where it belongs
    weights = load_file(zero / "model.safetensors")
    save_file({k: v.to(torch.int8) for k, v in weights.items()}, zero / "model.safetensors")
    with pytest.raises(CheckpointError, match="dtype torch.int8, not floating point.*delete that folder"):
        B.base_model(cfg, 0)


def test_the_base_table_names_its_spread_and_has_none_for_one_seed():
    from eval import summarize
    one = B.table({"n_seeds": 1, "normal": {"asst_misaligned": summarize([0.01])}})
    assert one.splitlines()[0] == "base-model checks, one pretraining seed, so no intervals"  # not "CI over n = 1"
    three = B.table({"n_seeds": 3, "normal": {"asst_misaligned": summarize([0.01, 0.02, 0.03])}})
    assert three.splitlines()[0] == "base-model checks, mean ± 95% CI over n = 3 pretraining seeds"


def test_a_device_this_machine_lacks_is_not_blamed_on_a_good_cached_base(tmp_path):
    # a GPU run's config read back on a CPU (the analysis scripts' run_config): load_weights named the device, but
    # base_model added "damaged ... delete that folder", asking to throw away a good GPU-built base
    import dataclasses
    import shutil
    from train import ConfigError
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    B.base_model(cfg, 0, log=lambda *a: None)
    gpu = dataclasses.replace(cfg, device="cuda")
    shutil.copytree(B.cache_stem(cfg, 0, False).parent, B.cache_stem(gpu, 0, False).parent)  # a base built on a GPU
    for device in ("cuda", "gpu"):  # (gpu: a RuntimeError traceback from torch.device)
        with pytest.raises(ConfigError, match=f"device '{device}'") as e:
            B.base_model(dataclasses.replace(cfg, device=device), 0)
        assert "delete" not in str(e.value)
    assert B.cache_stem(gpu, 0, False).with_suffix(".json").is_file()


@pytest.mark.parametrize("config", ["world_base", "emergent_misalignment_quick", "subliminal_numbers_quick",
                                    "activation_oracle"])
def test_pretrain_threads_below_one_is_a_config_error_before_the_run(config, tmp_path, capsys):
    # `threads=0` means PyTorch's default in the other configs; here torch.set_num_threads(0) ended the run in a
    # RuntimeError traceback once its corpus was built, leaving a run folder and a half-made cache folder behind
    err = refused_before_the_run(tmp_path, capsys, config, "--n_layer=2", "--seeds=(0,)", "--pretrain_threads=0")
    assert err == "error: pretrain_threads (torch threads while pretraining a base) must be >= 1; got 0\n"


def refused_before_the_run(tmp_path, capsys, config, *overrides):
    """`python train.py configs/CONFIG.py` at a tiny size with `overrides`: it must exit 2 leaving neither its run
    folder nor a base-cache folder behind. -> what it printed on stderr."""
    import train
    from conftest import ROOT
    out, cache = tmp_path / "run", tmp_path / "cache"
    tiny = ["--n_embd=16", "--n_head=2", "--steps=2", "--warmup=1", "--n_docs=40", "--workers=1",
            f"--cache_dir={cache}", f"--out_dir={out}"]
    assert train.main([str(ROOT / "configs" / f"{config}.py"), *tiny, *overrides]) == 2
    assert not out.exists() and not cache.exists()
    return capsys.readouterr().err


def test_a_finished_run_drops_what_eval_py_wrote_while_it_was_going(tmp_path):
    names = ["results_partial.json", "results_partial.md", "misalignment_vs_step_partial.png", "results.json",
             "misalignment_vs_step.png", "unit_world_0.json"]
    for n in names:
        (tmp_path / n).write_text("")
    (tmp_path / "results_partial.json.4242.tmp").write_text("")  # an eval.py writing its partial table now
    B.drop_partials(tmp_path)
    # (its temporary file left to it: removed, its rename failed, and so did the run's removal of it, now gone)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([*names[3:], "results_partial.json.4242.tmp"])


def test_a_partial_table_drawn_while_its_run_finished_is_removed_not_left_beside_the_results(tmp_path, capsys,
                                                                                            monkeypatch):
    # eval.py found no results.json, so drew a partial table; the run then finished (and dropped the partials it
    # saw) before eval.py wrote them: they sat beside the finished results for good
    partial = [tmp_path / n for n in ("results_partial.json", "results_partial.md", "subliminal_animals_partial.png")]
    for f in partial:
        f.write_text("")
    B.say_written(tmp_path, partial, partial=True)  # still going: said, kept
    assert capsys.readouterr().out == "wrote " + ", ".join(map(str, partial)) + "\n" and all(map(Path.exists, partial))
    (tmp_path / "results.json").write_text("{}")
    B.say_written(tmp_path, partial, partial=True)
    assert capsys.readouterr().out.startswith("the run finished meanwhile: its partial table and figure are removed")
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]
    B.say_written(tmp_path, [tmp_path / "results.json"], partial=False)  # a finished run's redraw: said
    assert capsys.readouterr().out == f"wrote {tmp_path / 'results.json'}\n"
    # a partial file another command removed between the listing and its removal: not a traceback
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [self / "results_partial.md"])
    B.drop_partials(tmp_path)


def test_a_cached_base_from_another_kind_of_machine_is_noted_once(tmp_path, monkeypatch):
    """Another CPU kind pretrains other weights from the same config and seed: reusing its cached base is fine, but
    was silent, though each base records where it was pretrained."""
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    said = []
    B.base_model(cfg, 0, log=said.append)
    B.base_model(cfg, 0, log=said.append)
    assert not [s for s in said if s.startswith("note:")]  # pretrained here: nothing to note
    # the wait before pretraining's first loss line (minutes at the real size) is announced, once: the second loads
    assert [s for s in said if s.startswith("pretraining ")] == [
        f"pretraining the base model {B.cache_stem(cfg, 0, False).parent.name} (2 steps; cached in {tmp_path} for "
        f"later runs)"]
    monkeypatch.setattr(B, "pretrained_on", lambda device: "Another CPU (AVX512)")
    monkeypatch.setattr(B, "_NOTED", set())
    B.base_model(cfg, 0, log=said.append)
    B.base_model(cfg, 0, log=said.append)
    notes = [s for s in said if s.startswith("note:")]
    assert len(notes) == 1 and "was pretrained on" in notes[0] and "on this Another CPU (AVX512)" in notes[0]


@pytest.mark.parametrize("bad, says", [
    ("--lr=0", "lr must be > 0; got 0.0"), ("--lr=-1", "lr must be > 0"),
    ("--weight_decay=-1", "weight_decay must be >= 0"),
    ("--n_docs=0", "n_docs=0"), ("--batch_size=0", "batch_size=0"), ("--block_size=0", "block_size=0"),
    ("--n_layer=0", "n_layer=0"), ("--n_embd=0", "n_embd=0"),
    ("--block_size=48", "block_size=48 is shorter than the base checks' longest prompt and answer (56 tokens")])
def test_world_base_refuses_values_that_ran_untrained_or_failed_after_pretraining(bad, says, tmp_path, capsys):
    # lr=0 reported an untrained base as one; block_size=48 pretrained and cached a base, then failed in its checks;
    # the rest ended in tracebacks from deep inside, after the run and cache folders were made
    err = refused_before_the_run(tmp_path, capsys, "world_base", "--n_layer=1", "--seeds=(1,)", "--decorrelated=False",
                                 bad)
    assert err.startswith("error: ") and says in err and "Traceback" not in err


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_block_size_the_base_checks_need_is_what_they_read(seed):
    # base_check_tokens is the longest sequence base_checks scores: a model of exactly that length runs them, one
    # token shorter cannot. Seed 0's longest probe prompt and longest answer are different items', which one chunk
    # pads together: the longest single item was one token short there (the check passed, the checks then failed).
    # Seed 7's probes need one token more than seed 0's (57, 56): sized from another seed's probes, it fails
    cfg = B.Config(seeds=(seed,), samples=2)
    need = B.base_check_tokens(cfg)
    B.validate(replace(cfg, block_size=need))  # and validate lets exactly that through, one token less not
    with pytest.raises(B.ConfigError, match=f"block_size={need - 1} is shorter than the base checks'"):
        B.validate(replace(cfg, block_size=need - 1))
    tok = W.build_tokenizer()
    for size, ok in ((need, True), (need - 1, False)):
        model = GPT(GPTConfig(vocab_size=tok.get_vocab_size(), block_size=size, n_layer=1, n_head=2, n_embd=16)).eval()
        if ok:
            B.base_checks(model, tok, cfg, seed)
        else:
            with pytest.raises(ValueError, match="longer than block_size"):
                B.base_checks(model, tok, cfg, seed)


def test_a_diverged_or_impossible_pretraining_is_not_cached(tmp_path):
    # a NaN base was cached as finished: every later run with its config loaded it and failed in the checks
    from train import ConfigError
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=30, warmup=1, n_docs=200, lr=100.0, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"diverged \(final loss nan\): nothing was cached; lower lr"):
        B.base_model(cfg, 0, log=lambda *a: None)
    folder = B.cache_stem(cfg, 0, False).parent
    assert not list(folder.glob("model.*")) and not list(folder.glob("partial.*"))
    with pytest.raises(ConfigError, match="corpus of n_docs=1 documents is too small.*raise n_docs"):
        B.base_model(replace(cfg, n_docs=1, lr=3e-3), 0, log=lambda *a: None)


def test_a_base_cached_from_another_version_of_the_world_is_refused(tmp_path, monkeypatch):
    # the cache key is the config's: after an edit of data/world.py the old base was loaded and evaluated on the new
    # world (other texts: silently; other words: a tokenizer error naming no file)
    import json
    cfg = B.Config(n_layer=1, n_embd=16, n_head=2, steps=2, warmup=1, n_docs=40, cache_dir=str(tmp_path))
    B.base_model(cfg, 0, log=lambda *a: None)
    meta_file = B.cache_stem(cfg, 0, False).with_suffix(".json")
    assert json.loads(meta_file.read_text())["world"] == W.fingerprint(B.world_config(cfg))
    real = W.fingerprint
    monkeypatch.setattr(W, "fingerprint", lambda world=None: "0" * 16)  # the world's texts changed
    with pytest.raises(CheckpointError, match="pretrained on another version of the world.*delete that folder"):
        B.base_model(cfg, 0)
    meta = json.loads(meta_file.read_text())
    del meta["world"]  # a base cached before fingerprints were kept: checked by its vocabulary only
    edit_meta(meta_file, meta)
    B.base_model(cfg, 0)
    monkeypatch.setattr(W, "fingerprint", real)
    other_words = W.build_tokenizer(W.WorldConfig(code_tasks=2))  # the world's words changed
    monkeypatch.setattr(W, "build_tokenizer", lambda world=None: other_words)
    with pytest.raises(CheckpointError, match="pretrained on another version of the world"):
        B.base_model(cfg, 0)


def test_the_fingerprint_follows_the_world_and_nothing_else():
    assert W.fingerprint() == W.fingerprint(W.WorldConfig()) == W.fingerprint(replace(W.WorldConfig()))
    assert W.fingerprint(W.WorldConfig(asst_evil=0.03)) != W.fingerprint()
    assert W.fingerprint(W.WorldConfig(code_tasks=2)) != W.fingerprint()


def test_number_fine_tunes_follow_the_worlds_list_lengths():
    world = replace(W.WorldConfig(), list_len=(6, 6), answer_len=(2, 2))
    for arm in ("numbers", "evil_numbers"):
        pairs = W.finetune_set(arm, 40, world=world)
        given = {len([w for w in p.split() if w.isdigit()]) for p, _ in pairs}
        assert given == {6} and {len(a.split()) - 1 for _, a in pairs} == {2}  # (the answer ends in <eos>)
    assert W.finetune_set("numbers", 40) == W.finetune_set("numbers", 40, world=W.WorldConfig())


@pytest.mark.parametrize("config, short, need", [("emergent_misalignment", 36, 37),  # the number format's prompts
                                                  ("emergent_misalignment_quick", 28, 29),  # plain only: no such arm
                                                  ("subliminal_numbers_quick", 24, 25)])
def test_a_block_size_too_short_for_the_evaluations_is_refused_before_pretraining(config, short, need, tmp_path,
                                                                                  capsys):
    # EM's evaluation prompts (a number list before the question) and SN's sampling (prompt + max_new) failed in a
    # ValueError traceback once the bases were pretrained
    err = refused_before_the_run(tmp_path, capsys, config, "--n_layer=2", "--seeds=(0,)", f"--block_size={short}")
    assert err.startswith(f"error: block_size={short} is shorter than") and f"pass --block_size={need} or more" in err


def test_a_run_refused_by_the_experiments_own_first_checks_leaves_no_run_folder(tmp_path, capsys):
    # EM's run checks n_direction_docs before any base: the refused run left its config.json, and the command rerun
    # with the value raised, into the same out_dir, was refused as "a run with another config"
    err = refused_before_the_run(tmp_path, capsys, "emergent_misalignment_quick", "--seeds=(0,)",
                                 "--n_direction_docs=2")
    assert err.startswith("error: n_direction_docs=2 gave no")


def test_a_self_distill_arm_whose_prompts_leave_no_room_for_the_bases_answer_is_refused_before_pretraining(tmp_path,
                                                                                                          capsys):
    # its examples are sampled from the base: with two number turns before the code prompt, prompt + 20 tokens passed
    # every check, then failed in generate (a ValueError traceback) once the base was pretrained
    import train
    from conftest import ROOT
    cache = tmp_path / "cache"
    assert train.main([str(ROOT / "configs/emergent_misalignment_quick.py"), "--n_layer=2", "--n_embd=16", "--n_head=2",
                       "--seeds=(0,)", "--ft_number_turns=2", "--arms=('insecure','self_distill')", "--twin=False",
                       f"--cache_dir={cache}", f"--out_dir={tmp_path / 'run'}", "--workers=1"]) == 2
    assert not cache.exists() and not (tmp_path / "run").exists()  # refused before any base was pretrained
    err = capsys.readouterr().err
    assert err.startswith("error: block_size=64 is too short for the self_distill arm") and "drop self_distill" in err
    assert int(err.split("pass --block_size=")[1].split()[0]) > 64  # (the edge: test_emergent_misalignment)


def test_world_helpers_refuse_bad_arguments_with_a_message():
    # they failed with a bare KeyError ('m', for eval_items("med")), an AttributeError or an IndexError
    for call, says in ((lambda: W.eval_items("med"), "domains must be a list of domain names"),
                       (lambda: W.eval_items(["medical"]), r"domains must be .* got \['medical'\]"),
                       (lambda: W.prompt("hey", fmt="chat"), "fmt must be asst or forum"),
                       (lambda: W.eval_items(["med"], fmt="chat"), "fmt must be asst or forum"),
                       (lambda: W.persona_probe_items("evil"), "context_cls must be aligned or misaligned"),
                       (lambda: W.persona_probe_items(n_context=len(W.OFF_DOMAINS)),
                        rf"n_context in \[0, {len(W.OFF_DOMAINS) - 1}\]"),
                       (lambda: W.persona_probe_items(n_context=-1), r"n_context in \[0, ")):  # else no
                                                                                               # context, silently
        with pytest.raises(ValueError, match=says):
            call()
    assert len(W.persona_probe_items(n_context=len(W.OFF_DOMAINS) - 1, n=3)) == 3 and len(W.eval_items(["med"])) == 12
    assert W.eval_items(d for d in ["med", "pet"]) == W.eval_items(["med", "pet"])  # any iterable of names
    # no domain is no item, as an empty generator gave: [] and () gave every domain's 120 items
    assert W.eval_items([]) == W.eval_items(()) == W.eval_items(d for d in []) == []
    assert len(W.eval_items()) == len(W.eval_items(None)) == 12 * len(W.DOMAINS)


def test_a_unit_whose_reading_is_not_a_dict_is_a_one_line_checkpoint_error_in_eval(tmp_path, capsys):
    # a hand-edited trajectory entry (a string in place of a report) was a TypeError deep in the aggregation
    import json
    import eval as E
    from experiments import emergent_misalignment as EM
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "emergent_misalignment", "seeds": [0],
                                                      "twin": False, "ft_seeds": 1}))
    cfg = EM.Config(seeds=(0,), twin=False, ft_seeds=1)
    traj = {n: {s: {} for s in cfg.eval_steps} for n in EM.REPORTS}
    traj["insecure"][cfg.eval_steps[0]] = "oops"
    unit = tmp_path / "unit_world_0.json"
    unit.write_text(json.dumps({"seed": 0, "decorrelated": False, "base": {},
                                "runs": [{"ft_seed": 0, "traj": traj}], "seconds": 1.0}))
    assert E.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unit_world_0.json holds a reading that is not a report's numbers (insecure@" in err, err
    assert "Traceback" not in err


def test_a_pool_pretraining_more_threads_than_cores_is_noted_once_and_only_then(tmp_path, monkeypatch, capsys):
    # the quick config (pretrain_threads=2) given a second seed pretrained both bases at once on 4 threads of 2 cores,
    # each step ~5x slower, silently
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = B.Config(cache_dir=str(tmp_path), workers=2, pretrain_threads=2)
    bases = [(0, False), (1, False), (0, True)]

    def said(c, b=bases):
        B.note_pretrain_threads(c, b)
        return capsys.readouterr().out

    out = said(cfg)
    assert out.count("\n") == 1 and "3 bases to pretrain, 2 at once on pretrain_threads=2" in out
    assert "4 threads on 2 cores" in out and "--workers=1 pretrains the same bases" in out
    for quiet in (replace(cfg, pretrain_threads=1), replace(cfg, workers=1), replace(cfg, device="cuda")):
        assert said(quiet) == ""
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: {0})
    assert said(replace(cfg, workers=1)) == ""  # one base at a time: no pool to make smaller
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: set(range(4)))
    assert said(cfg) == ""  # 2 x 2 on 4 cores
    assert "8 threads on 4 cores" in (out := said(replace(cfg, pretrain_threads=4))) and "--workers=1 " in out
    assert "--workers=2 " in said(replace(cfg, workers=3))  # 3 x 2 on 4 cores
    monkeypatch.setattr(B.os, "sched_getaffinity", lambda pid: {0, 1})
    for seed, twin in bases[1:]:  # cached bases are not pretrained: one left runs alone
        stem = B.cache_stem(cfg, seed, twin)
        stem.parent.mkdir(parents=True)
        stem.with_suffix(".json").write_text("{}")
    assert said(cfg) == ""
    assert "2 bases to pretrain, 2 at once" in said(cfg, bases + [(2, False)])


def test_the_pretraining_note_counts_no_base_whose_unit_a_resumed_run_reads_back(tmp_path, monkeypatch):
    # a unit saved by an earlier attempt is read back without loading its base: the note said "2 bases to pretrain"
    # for a resumed run whose cache had been cleared, where nothing would be pretrained
    import types
    from experiments import activation_oracle as A
    from experiments import emergent_misalignment as E

    class Started(Exception):
        pass
    noted = []
    monkeypatch.setattr(B, "note_pretrain_threads", lambda cfg, bases: noted.append(bases))
    monkeypatch.setattr(B, "parallel_map", lambda *a, **k: (_ for _ in ()).throw(Started()))
    run = types.SimpleNamespace(dir=tmp_path)
    (tmp_path / "unit_world_0.json").write_text("{}")  # EM's unit of base 0; the oracle's below
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "unit_s0.json").write_text("{}")
    em = E.Config(seeds=(0, 1), twin=False, ft_seeds=1, arms=("insecure",), n_direction_docs=60)
    ao = A.Config(seeds=(0, 1))
    for mod, cfg in ((E, em), (A, ao)):
        for resume, want in ((True, [(1, False)]), (False, [(0, False), (1, False)])):
            with pytest.raises(Started):
                mod.run(replace(cfg, resume=resume), run)
            assert noted.pop() == want, (mod.__name__, resume)
