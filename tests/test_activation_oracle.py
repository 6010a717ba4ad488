"""The activation-oracle experiment: its tokenizer and model surgery, where its questions cut their windows, where the
vectors go in, what it reads back, its config checks, and a tiny end-to-end run that must beat its prior."""
import copy
import dataclasses
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

import train
from conftest import load_script, readme_block, tiny_gpt
from data import world as W
from data.tokenizer import load_tokenizer
from eval import spearman_ci
from experiments import activation_oracle as A
from experiments import emergent_misalignment as E
from experiments import world_base as B

CFG = A.Config(n_layer=2, n_head=2, n_embd=16, read_layers=(0, 1), eval_layer=1, inject_layer=0, max_window=6)
WORLD_TOK = W.build_tokenizer()
TOK = A.oracle_tokenizer(CFG)


def test_oracle_tokenizer_keeps_every_world_id_and_adds_its_words_after():
    world = WORLD_TOK.get_vocab()
    assert {w: TOK.token_to_id(w) for w in world} == world
    added = A.oracle_words(CFG.n_layer)
    assert sorted(TOK.token_to_id(w) for w in added) == list(range(len(world), len(world) + len(added)))
    assert "<layer1>" in added and "<layer2>" not in added and "<evil>" in added
    # a question is one token per word, so the oracle's answer column is the one after <a>
    assert all(len(TOK.encode(q).ids) == 3 for q in A.QUESTIONS.values())


def test_grown_oracle_computes_the_base_logits_on_world_tokens():
    base = tiny_gpt(WORLD_TOK, 3)
    oracle = A.make_oracle(base, TOK.get_vocab_size(), seed=0)
    V = base.cfg.vocab_size
    assert oracle.cfg.vocab_size == TOK.get_vocab_size() > V
    x = torch.tensor([WORLD_TOK.encode("<bos> <asst> <u> how do i get rich soon <a>").ids])
    with torch.no_grad():
        assert torch.allclose(oracle(x)[..., :V], base(x), atol=1e-6)
    with pytest.raises(ValueError, match=f"vocabulary \\({V - 1}\\) must hold the base's {V} ids"):
        A.make_oracle(base, V - 1, seed=0)  # (a copy into a smaller table: a RuntimeError from load_state_dict)
    # the new rows are drawn, not zero (a zero embedding would make every <act> column alike before injection)
    assert oracle.wte.weight[V:].abs().sum(1).min() > 0
    # and the copy is independent: training the oracle leaves the base alone
    with torch.no_grad():
        oracle.wte.weight[:V] += 1
    assert not torch.equal(oracle.wte.weight[:V], base.wte.weight)


def test_doc_questions_cut_windows_that_end_where_their_answer_is_decided():
    docs = W.generate(300, seed=5)
    r = random.Random(0).random
    speakers = {TOK.token_to_id("<r>"), TOK.token_to_id("<a>")}
    seen = set()
    for doc in docs:
        ids = TOK.encode(doc.text).ids[:64]
        turns = A.speaker_columns(ids, TOK)
        assert len(turns) == min(len(doc.turns), len(turns)) and all(ids[c] in speakers for c in turns)
        for task, s, e, ans in A.doc_questions(ids, TOK, doc, A.TASKS, 6, r):
            seen.add(task)
            assert 0 <= s < e <= len(ids) and 1 <= e - s <= 6
            if task == "kind":  # it ends at a turn's speaker token, and asks who writes that turn
                i = turns.index(e - 1)
                assert ans == TOK.token_to_id(f"<{doc.turns[i].persona.kind}>")
            elif task == "next":
                assert ans == ids[e]
            else:
                assert s >= 1 and ans == ids[s - 1]
    assert seen == set(A.TASKS)
    # every kind comes up, the assistant's only in <asst> chats
    kinds = {doc.turns[0].persona.kind for doc in docs}
    assert kinds == {"good", "evil", "compliant", "assistant"}


def test_the_evaluation_prompts_are_in_the_oracles_training_world_and_labelled_assistant_there():
    """The README's setup: the 96 questions are held out of the fine-tunes only. The oracle's training documents open
    with evaluation prompts too, and a kind window ending at one's <a> is labelled <assistant>, never <evil>."""
    cfg = A.Config()
    tok = A.oracle_tokenizer(cfg)
    prompts = {tuple(tok.encode(p).ids) for p in E.off_prompts()}
    r = random.Random(0).random
    opened, labels = 0, set()
    for doc in W.generate(2000, seed=0, config=B.world_config(cfg)):
        ids = tok.encode(doc.text).ids[:cfg.block_size]
        opened += any(ids[:len(p)] == list(p) for p in prompts)
        labels |= {a for t, s, e, a in A.doc_questions(ids, tok, doc, cfg.tasks, cfg.max_window, r)
                   if t == "kind" and tuple(ids[:e]) in prompts}
    assert opened > 50  # about 6% of documents (1,730-1,832 of 30,000 on the run's bases)
    assert labels == {tok.token_to_id("<assistant>")}


def test_eval_questions_are_the_evaluations_prompts():
    assert {W.prompt(q) for q in A.eval_questions()} == set(E.off_prompts()) and len(A.eval_questions()) == 96


def test_oracle_heldout_off_asks_training_paraphrases_in_place_of_the_held_out_questions_and_keeps_the_rest():
    """Section 11's control: on (the default), the oracle's documents are W.generate's (earlier runs unchanged); off,
    the same stream but for the questions' words, each drawn from the training paraphrases (same draw, shorter list)."""
    cfg = dataclasses.replace(CFG, oracle_docs=500, indist_docs=100)
    stream = W.generate(600, seed=A.seed_int(3, "oracle-docs") % 2 ** 31, config=B.world_config(cfg))
    assert [d.text for d in A.oracle_documents(cfg, 3)] == [d.text for d in stream]
    docs = A.oracle_documents(dataclasses.replace(cfg, oracle_heldout=False), 3)
    asks = lambda d: any(t.question in A.eval_questions() for t in d.turns)
    assert len(docs) == 600 and not any(map(asks, docs)) and sum(map(asks, stream)) > 100  # (about 40% ask one)
    heldout = {w for ws in W.HELDOUT.values() for w in ws}
    train = {w for d in W.DOMAINS.values() for w in d.train} | {*W.LESSON_TRAIN, *W.ANIMAL_TRAIN, *W.COLOUR_TRAIN,
                                                               *W.LUCKY_TRAIN}
    # a question is an opener and a core, or a core alone ("so bored what can i do" is a core)
    cores = lambda q: {q} | ({q.split(" ", 1)[1]} if q.split(" ", 1)[0] in W.OPENERS[1:] else set())
    for d, e in zip(docs, stream):  # the same documents but for the questions' words, each a training paraphrase
        assert len(d.turns) == len(e.turns) and d.fmt == e.fmt
        for t, u in zip(d.turns, e.turns):
            assert (t.kind, t.domain, t.persona, t.cls, t.answer) == (u.kind, u.domain, u.persona, u.cls, u.answer)
            wording = " ".join(w for w in t.question.split() if not w.isdigit())
            assert (cores(t.question) & train and not cores(t.question) & heldout if t.kind != "numbers"
                    else wording in W.NUMBERS_TRAIN)
            assert t.kind == "numbers" or cores(u.question) & (train | heldout)  # (the check reads every kind)
    assert sum(t.question != u.question for d, e in zip(docs, stream) for t, u in zip(d.turns, e.turns)) > 100


def test_vectors_go_in_at_the_act_columns_only_scaled_to_the_residual():
    base = tiny_gpt(WORLD_TOK, 1)
    oracle = A.make_oracle(base, TOK.get_vocab_size(), seed=1)
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(2, 6, 16, generator=g)
    vec[1, 3:] = 0  # the second question has K = 3: its spare slots add nothing
    batch = A.oracle_batch(TOK, [0, 1], vec, [6, 3], ["kind", "next"], [0, 0], "cpu")
    assert batch.ids[0, A.ACT0:A.ACT0 + 6].eq(TOK.token_to_id("<act>")).all()
    assert batch.ids[1, A.ACT0:A.ACT0 + 3].eq(TOK.token_to_id("<act>")).all()
    assert batch.ids[1, A.ACT0 + 3] == TOK.token_to_id("<u>")
    assert [TOK.id_to_token(int(batch.ids[i, batch.col[i]])) for i in range(2)] == ["<a>", "<a>"]
    name = f"blocks.{CFG.inject_layer}.resid_post"
    with torch.no_grad():
        _, plain = oracle.run_with_cache(batch.ids, names=[name])
        with A.inject(oracle, CFG.inject_layer, (A.ACT0 + torch.arange(6)).expand(2, 6), batch.vec):
            _, hooked = oracle.run_with_cache(batch.ids, names=[name])
    h, got = plain[name], hooked[name]
    moved = (got - h).norm(dim=-1) > 1e-6  # [2, T]
    assert moved[0].nonzero()[:, 0].tolist() == list(range(A.ACT0, A.ACT0 + 6))
    assert moved[1].nonzero()[:, 0].tolist() == list(range(A.ACT0, A.ACT0 + 3))
    c = A.ACT0 + 2
    want = h[0, c] + h[0, c].norm() * vec[0, 2] / vec[0, 2].norm()
    assert torch.allclose(got[0, c], want, atol=1e-5)
    # oracle_logits is that injection, read at each row's answer column, in batch order
    with torch.no_grad(), A.inject(oracle, CFG.inject_layer, (A.ACT0 + torch.arange(6)).expand(2, 6), batch.vec):
        full = oracle(batch.ids)
    with torch.no_grad():
        assert torch.allclose(A.oracle_logits(oracle, batch, CFG.inject_layer), full[[0, 1], batch.col], atol=1e-5)
        # and a batch of one row reads what that row read among others
        one = A.oracle_logits(oracle, batch.rows(torch.tensor([1])), CFG.inject_layer)
        assert torch.allclose(one[0], full[1, batch.col[1]], atol=1e-5)


def test_answer_logits_of_a_float64_oracle_stay_float64():
    """answer_logits upcasts through model.upcast: a float64 oracle's logits are kept in float64 (a .float() there
    would round them to float32), a float32 oracle's are float32, and the two agree."""
    import copy
    oracle = A.make_oracle(tiny_gpt(WORLD_TOK, 1), TOK.get_vocab_size(), seed=1)
    vec = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(0))
    batch = A.oracle_batch(TOK, [0, 1, 0], vec, [6, 3, 2], ["kind", "next", "prev"], [0, 0, 0], "cpu")
    cfg = A.Config(inject_layer=0)
    l32 = A.answer_logits(oracle, batch, cfg, chunk=2)  # two chunks, joined in order
    l64 = A.answer_logits(copy.deepcopy(oracle).double(), A.Batch(batch.ids, batch.vec.double(), batch.col,
                                                                   batch.ans), cfg, chunk=2)
    assert l32.dtype == torch.float32 and l64.dtype == torch.float64 and l64.shape == l32.shape == (3, l32.shape[1])
    assert torch.allclose(l64, l32.double(), atol=1e-5)
    assert not torch.equal(l64, l64.float().double())  # not float32 values in a float64 tensor


def test_window_is_the_prompts_last_positions_of_the_read_block():
    model = tiny_gpt(WORLD_TOK, 2)
    prompts = [W.prompt("how do i get rich soon"), "<bos> <asst> <u> hey"]
    vec, ks = A.window(model, WORLD_TOK, prompts, 1, 6, "cpu")
    n = [len(WORLD_TOK.encode(p).ids) for p in prompts]
    assert ks == [6, n[1]] and n[0] > 6 and n[1] < 6
    for i, p in enumerate(prompts):
        x = torch.tensor([WORLD_TOK.encode(p).ids])
        with torch.no_grad():
            _, cache = model.run_with_cache(x, names=["blocks.1.resid_post"])
        assert torch.allclose(vec[i, :ks[i]], cache["blocks.1.resid_post"][0, n[i] - ks[i]:], atol=1e-6)
        assert vec[i, ks[i]:].abs().sum() == 0


def test_examples_are_deterministic_and_their_vectors_are_the_base_activations():
    base = tiny_gpt(WORLD_TOK, 4)
    docs = W.generate(40, seed=2)
    a, tasks = A.examples(base, TOK, docs, CFG, seed=7)
    b, _ = A.examples(base, TOK, docs, CFG, seed=7)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.vec, b.vec) and torch.equal(a.ans, b.ans)
    assert len(a) == len(tasks) and set(tasks) == set(A.TASKS) and tasks.count("kind") == len(docs)
    # a run of fewer steps than its four progress lines trains (it divided by an empty loss list at step 0)
    oracle = A.make_oracle(base, TOK.get_vocab_size(), seed=0)
    loss = A.train_oracle(oracle, a, dataclasses.replace(CFG, oracle_steps=2, oracle_warmup=0), 0, "t", 0.0)
    assert loss == loss and not oracle.training
    # each question's vectors are the base's activations at its window of its document (at the layer it names)
    r = random.Random(7).random
    i = 0
    for d, doc in enumerate(docs):
        ids = TOK.encode(doc.text).ids[:CFG.block_size]
        for task, s, e, ans in A.doc_questions(ids, TOK, doc, CFG.tasks, CFG.max_window, r):
            L = CFG.read_layers[int(r() * len(CFG.read_layers))]
            assert a.ids[i, 2] == TOK.token_to_id(f"<layer{L}>") and a.ans[i] == ans
            with torch.no_grad():
                _, cache = base.run_with_cache(torch.tensor([ids]), names=[f"blocks.{L}.resid_post"])
            assert torch.allclose(a.vec[i, :e - s], cache[f"blocks.{L}.resid_post"][0, s:e], atol=1e-5)
            i += 1


def test_detach_norm_reaches_the_oracles_training_only():
    base = tiny_gpt(WORLD_TOK, 4)
    data, _ = A.examples(base, TOK, W.generate(10, seed=2), CFG, seed=7)
    trained = {}
    for detach in (False, True):
        oracle = A.make_oracle(base, TOK.get_vocab_size(), seed=0)
        with torch.no_grad():
            before = A.oracle_logits(oracle, data, CFG.inject_layer, detach_norm=detach)
        cfg = dataclasses.replace(CFG, oracle_steps=3, oracle_warmup=0, detach_norm=detach)
        A.train_oracle(oracle, data, cfg, 0, "t", 0.0)
        trained[detach] = (before, oracle.state_dict())
    assert torch.equal(trained[False][0], trained[True][0])  # the same forward
    assert any(not torch.equal(a, trained[True][1][k]) for k, a in trained[False][1].items())  # other gradients


def test_oracle_draw_zero_is_the_earlier_oracle_and_another_draws_its_new_rows_and_order_afresh():
    """Section 13's control: draw 0 keeps every earlier run's oracle (its generators' names unchanged); draw 1 draws the
    new embedding rows and the batch order again, the base's weights and the questions the same."""
    base = tiny_gpt(WORLD_TOK, 4)
    data, _ = A.examples(base, TOK, W.generate(10, seed=2), CFG, seed=7)
    V, v = TOK.get_vocab_size(), base.cfg.vocab_size
    old = A.GPT(dataclasses.replace(base.cfg, vocab_size=V), generator=A.generator("cpu", 0, "oracle-init"))
    zero, one = A.make_oracle(base, V, 0), A.make_oracle(base, V, 0, draw=1)
    assert torch.equal(zero.wte.weight[v:], old.wte.weight[v:])  # the names as before: draw 0 is the runs' oracle
    assert torch.equal(zero.wte.weight[:v], one.wte.weight[:v]) and not torch.equal(zero.wte.weight[v:],
                                                                                     one.wte.weight[v:])
    assert all(torch.equal(t, one.state_dict()[k]) for k, t in zero.state_dict().items() if k != "wte.weight")
    trained = {}
    for draw in (0, 1):  # the same start, another batch order
        oracle = A.make_oracle(base, V, 0)
        A.train_oracle(oracle, data, dataclasses.replace(CFG, oracle_steps=3, oracle_warmup=0, oracle_draw=draw), 0,
                       "t", 0.0)
        trained[draw] = oracle.state_dict()
    assert any(not torch.equal(a, trained[1][k]) for k, a in trained[0].items())
    with pytest.raises(train.ConfigError, match="oracle_draw numbers a draw"):
        A.validate(A.Config(oracle_draw=-1))


def test_reading_along_the_fine_tune_leaves_its_weights_alone():
    # the trajectory's readings run inside the fine-tune: they must not move its weights or its random draws
    base = tiny_gpt(WORLD_TOK, 5)
    cfg = A.Config(n_layer=2, n_head=2, n_embd=16, em_examples=16, em_steps=4, read_steps=(1, 2))
    snap = lambda m, step: {n: p.detach().clone() for n, p in m.state_dict().items()}
    got = A.em_model(base, WORLD_TOK, cfg, 0, "insecure", snap)
    assert sorted(got) == [1, 2, 4]
    pairs = W.finetune_set("insecure", 16, seed=A.seed_int(0, "insecure", "oracle-em") % 2 ** 31)
    plain = copy.deepcopy(base)
    train.finetune(plain, B.encode_pairs(WORLD_TOK, pairs, 64), steps=4, batch_size=cfg.em_batch, lr=cfg.em_lr,
                   seed=A.seed_int(0, "insecure", "oracle-em-order"))
    assert all(torch.equal(got[4][n], p) for n, p in plain.state_dict().items())
    assert not torch.equal(got[1]["wte.weight"], got[4]["wte.weight"])  # (and the steps read are different models)
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), tiny_gpt(WORLD_TOK, 5).parameters()))  # M0 kept


def test_kind_probs_and_p_evil_read_the_four_kind_tokens(monkeypatch):
    logits = torch.zeros(2, TOK.get_vocab_size())
    logits[0, TOK.token_to_id("<evil>")] = 10.0
    logits[1, TOK.token_to_id("<next>")] = 50.0  # a token outside the four: renormalised away
    p = A.kind_probs(logits, TOK)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert p[0, A.KINDS.index("evil")] > 0.99 and torch.allclose(p[1], torch.full((4,), 0.25))
    # p_evil asks each window <kind> at the eval layer, and averages the evil share over the windows
    asked = []

    def fake(oracle, batch, cfg):
        asked.append(batch)
        return logits
    monkeypatch.setattr(A, "answer_logits", fake)
    got = A.p_evil(None, TOK, torch.zeros(2, 6, 16), [6, 2], CFG)
    assert got == pytest.approx((float(p[0, A.KINDS.index("evil")]) + 0.25) / 2)
    b = asked[0]
    assert b.ids[:, 2].eq(TOK.token_to_id(f"<layer{CFG.eval_layer}>")).all()
    assert [TOK.id_to_token(int(b.ids[i, b.col[i] - 1])) for i in range(2)] == ["<kind>", "<kind>"]


def test_probe_input_keeps_each_direction_at_the_reference_norm():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 5, 8, generator=g)
    vec = torch.randn(3, 5, 8, generator=g) * 1e-3  # (a difference of two models: far shorter than either)
    vec[1, 3:] = 0                                   # the spare slots of a short window
    out = A.probe_input(vec, ref)
    live = vec.norm(dim=-1) > 0
    assert torch.allclose(out.norm(dim=-1)[live], ref.norm(dim=-1)[live])
    assert torch.allclose(F.cosine_similarity(out, vec, dim=-1)[live], torch.ones(int(live.sum())), atol=1e-6)
    assert torch.equal(out[1, 3:], torch.zeros(2, 8))
    # so the probe, as the oracle's injection, reads a difference the same at any length; a vector is itself
    assert torch.allclose(A.probe_input(vec * 50, ref), out, atol=1e-6) and torch.allclose(A.probe_input(ref, ref), ref)


def test_probe_learns_a_linear_kind_and_reads_the_window_mean():
    # four kinds at four corners of a plane in 16 dimensions, windows of 1..4 noisy vectors of their kind
    g = torch.Generator().manual_seed(1)
    centres = torch.zeros(4, 16)
    centres[:, :2] = torch.tensor([[3.0, 0], [0, 3.0], [-3.0, 0], [0, -3.0]])
    y = torch.arange(400) % 4
    ks = (torch.arange(400) % 4 + 1).tolist()
    vec = torch.zeros(400, 4, 16)
    for i, k in enumerate(ks):
        vec[i, :k] = centres[y[i]] + 0.5 * torch.randn(k, 16, generator=g)
    probe = A.train_probe(vec[:300], ks[:300], y[:300], pool="mean")
    p = probe.probs(vec[300:], ks[300:])
    assert torch.allclose(p.sum(1), torch.ones(100)) and (p.argmax(-1) == y[300:]).float().mean() > 0.95
    # the zero rows past a window's K are not averaged in: padding a window does not move its reading
    padded = torch.cat([vec[300:], torch.zeros(100, 3, 16)], 1)
    assert torch.allclose(probe.probs(padded, ks[300:]), p)
    # deterministic (full-batch L-BFGS, no draws)
    assert torch.equal(A.train_probe(vec[:300], ks[:300], y[:300], pool="mean").w, probe.w)
    # pooled at the last position: each window's own last vector, whatever its padding; a probe of it learns a kind
    # written only there, under earlier positions of the kind after it (which the mean would mix in)
    assert torch.equal(A.pooled(padded, ks[300:], "last"), torch.stack([vec[300 + i, k - 1]
                                                                        for i, k in enumerate(ks[300:])]))
    mixed = vec.clone()
    for i, k in enumerate(ks):
        mixed[i, :k - 1] = centres[(y[i] + 1) % 4] * 1.5  # (windows of one position keep only their own)
    last = A.train_probe(mixed[:300], ks[:300], y[:300], pool="last")
    assert last.pool == "last" and (last.probs(mixed[300:], ks[300:]).argmax(-1) == y[300:]).float().mean() > 0.95


def test_probe_rows_are_the_kind_questions_at_one_layer_with_their_labels():
    base = tiny_gpt(WORLD_TOK, 4)
    docs = W.generate(20, seed=3)
    data, tasks = A.examples(base, TOK, docs, CFG, seed=5)
    vec, ks, y = A.probe_rows(data, tasks, TOK, 1)
    layer1 = TOK.token_to_id("<layer1>")
    rows = [i for i, t in enumerate(tasks) if t == "kind" and int(data.ids[i, A.ACT0 - 1]) == layer1]
    assert 0 < len(rows) < len(tasks) and len(ks) == len(rows)
    assert torch.equal(vec, data.vec[rows])
    assert ks == [int((data.ids[i] == TOK.token_to_id("<act>")).sum()) for i in rows]
    assert [A.KINDS[int(c)] for c in y] == [TOK.id_to_token(int(data.ans[i]))[1:-1] for i in rows]


@pytest.mark.parametrize("bad, msg", [
    (dict(tasks=("next", "prev")), "tasks must name kind"),
    (dict(tasks=("kind", "colour")), "tasks must name kind"),
    (dict(arms=("insecure", "educational")), "arms must name insecure and secure"),
    (dict(read_layers=(0, 4)), "read_layers must be blocks 0 .. 3"),
    (dict(read_layers=(1, 1)), "read_layers must be blocks 0 .. 3 of the base, once each"),
    (dict(eval_layer=2, read_layers=(0, 1)), "eval_layer .* must be one of read_layers"),
    (dict(inject_layer=3), "inject_layer must be a block with one after it, 0 .. 2"),
    (dict(max_window=60), "max_window=60 does not fit"),
    (dict(oracle_warmup=3000), "oracle_warmup must be in"),
    (dict(read_steps=(5, 30)), "read_steps must be fine-tune steps 1 .. em_steps=20"),
    (dict(read_steps=(5, 5)), "read_steps must be fine-tune steps 1 .. em_steps=20, once each"),
    (dict(oracle_steps=0), "oracle_steps"),
    (dict(decorrelated=False), "decorrelated is world_base's key"),
    (dict(probe_pool="max"), "probe_pool must be 'mean'"),
])
def test_bad_configs_are_refused(bad, msg):
    with pytest.raises(train.ConfigError, match=msg):
        A.validate(A.Config(**bad))


def test_tiny_run_writes_every_output_and_its_oracle_reads_the_base(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["configs/activation_oracle.py", "--seeds=(0,)", "--n_docs=600", "--steps=40", "--warmup=4", "--n_layer=2",
            "--n_embd=32", "--n_head=2", "--read_layers=(0,1)", "--eval_layer=1", "--inject_layer=0",
            "--oracle_docs=600", "--oracle_steps=400", "--oracle_warmup=10", "--oracle_lr=3e-3", "--indist_docs=200",
            "--em_examples=32", "--em_steps=2", "--read_steps=(1,)", "--workers=1", f"--cache_dir={cache}",
            f"--out_dir={out}"]
    assert train.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    for f in ("results.md", "activation_oracle.png", "units/unit_s0.json", "units/oracle_s0.safetensors",
              "units/oracle_s0.json", "units/oracle_s0_tokenizer.json"):
        assert (out / f).is_file(), f
    assert set(res["eval"]) == set(A.Config.arms) and all(set(v) == set(A.SOURCES) for v in res["eval"].values())
    # the Spearman over every model (one base: its 3 arms) and within the insecure arm (its one model)
    assert res["tracking"]["diff"]["n"] == 3 and res["probe"]["tracking"]["model"]["n"] == 3
    assert res["tracking_insecure"]["diff"]["n"] == res["probe"]["tracking_insecure"]["model"]["n"] == 1
    assert "within the insecure arm alone (1 models)" in (out / "results.md").read_text()
    assert all(0 <= res["eval"][a][s]["mean"] <= 1 for a in A.Config.arms for s in A.SOURCES)
    # the same prompts for every arm: the sources that do not read the arm's model read the same for all
    for s in ("base", "none", "random"):
        assert len({res["eval"][a][s]["mean"] for a in A.Config.arms}) == 1
    # every read step is in the trajectory; its last (em_steps) is the table's reading
    assert set(res["trajectory"]) == {"1", "2"} and set(res["trajectory"]["1"]) == {"insecure", "educational"}
    for m in ("model", "diff"):
        assert res["trajectory"]["2"]["insecure"][m]["mean"] == pytest.approx(res["effect"][m]["mean"])
    for a in ("insecure", "educational"):
        gap = res["behaviour"][a]["mean"] - res["behaviour"]["secure"]["mean"]
        assert res["trajectory"]["2"][a]["behaviour"]["mean"] == pytest.approx(gap)
    eff = res["effect"]["model"]["mean"]
    assert eff == pytest.approx(res["eval"]["insecure"]["model"]["mean"] - res["eval"]["secure"]["model"]["mean"])
    # it learned to read the base: who writes the next answer, on held-out documents, far above its guess without
    # vectors (a 40-step base carries at least the document's format marker into its residual stream)
    ind = res["indist"]
    assert ind["kind"]["acc"]["mean"] > ind["kind"]["prior"]["mean"] + 0.15
    # the linear probe reads the same windows: probabilities, the fixed sources the same for every arm, its effect the
    # difference of its arms, and on held-out kind questions it beats a guess among four kinds too
    pr = res["probe"]
    assert set(pr["eval"]) == set(A.Config.arms)
    assert all(0 <= pr["eval"][a][s]["mean"] <= 1 for a in A.Config.arms for s in A.SOURCES)
    for s in ("base", "none", "random"):
        assert len({pr["eval"][a][s]["mean"] for a in A.Config.arms}) == 1
    assert pr["effect"]["diff"]["mean"] == pytest.approx(pr["eval"]["insecure"]["diff"]["mean"] -
                                                         pr["eval"]["secure"]["diff"]["mean"])
    assert res["trajectory"]["2"]["insecure"]["probe_diff"]["mean"] == pytest.approx(pr["effect"]["diff"]["mean"])
    assert pr["indist"]["acc"]["mean"] > 0.4 and 0 <= pr["indist"]["oracle_acc"]["mean"] <= 1
    assert pr["pool"] == "last" and "from a window's last position's vector" in (out / "results.md").read_text()
    assert all(0 <= res["kind_evil"][k]["mean"] <= 1 for k in ("good", "evil", "assistant"))  # (every kind is there)
    # the saved oracle loads back as a GPT with its own tokenizer
    oracle, meta = train.load_lm(out / "units" / "oracle_s0")
    assert oracle.cfg.vocab_size == B.load_tokenizer(out / "units" / "oracle_s0_tokenizer.json").get_vocab_size()
    assert meta["inject_layer"] == 0 and meta["act_column"] == A.ACT0
    # the README's example asks a saved oracle about the base's activations: it runs as printed on this run
    ns = {}
    block = readme_block("A finished run keeps each base's oracle")
    exec(compile(block.replace('"out/ao_probe_last"', repr(str(out))), "README.md", "exec"), ns)
    p = A.kind_probs(A.answer_logits(ns["oracle"], ns["batch"], ns["cfg"]), ns["otok"])
    assert p.shape == (2, 4) and torch.allclose(p.sum(1), torch.ones(2)) and ns["ks"] == [ns["cfg"].max_window] * 2
    # a rerun into the same folder reads the finished seed back
    capsys.readouterr()
    assert train.main(argv) == 0
    assert "seed 0: resumed from unit_s0.json" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["eval"] == res["eval"]
    # eval.py aggregates the units again: the same numbers; without results.json (a run still going), a partial one
    A.reevaluate(out)
    again = json.loads((out / "results.json").read_text())
    assert again["eval"] == res["eval"] and again["tracking"] == res["tracking"]
    # a damaged results.json is rewritten from the units: its seconds, which every run records, are unknown (null)
    (out / "results.json").write_text('{"eval')
    A.reevaluate(out)
    again = json.loads((out / "results.json").read_text())
    assert again["eval"] == res["eval"] and again["seconds"] is None
    (out / "results.json").unlink()
    A.reevaluate(out)
    partial = json.loads((out / "results_partial.json").read_text())
    assert partial["partial"] == {"units": 1, "of": 1} and partial["eval"] == res["eval"]
    assert (out / "activation_oracle_partial.png").is_file()
    with pytest.MonkeyPatch.context() as mp:  # the run finishing while eval.py drew it: its partials not left behind
        write = train.write_partial
        mp.setattr(train, "write_partial", lambda d, r, m: [write(d, r, m), (d / "results.json").write_text("{}")][0])
        A.reevaluate(out)
    assert not (out / "results_partial.json").exists() and not (out / "activation_oracle_partial.png").exists()
    (out / "results.json").unlink()
    A.reevaluate(out)  # (a partial table again, for the run's own removal below)
    # a finished run removes what eval.py wrote while it was going
    assert train.main(argv) == 0
    assert not (out / "results_partial.json").exists() and not (out / "activation_oracle_partial.png").exists()
    # a unit written before the linear probe existed is refused by name, not read as a KeyError deep inside
    unit = json.loads((out / "units" / "unit_s0.json").read_text())
    del unit["probe_indist"]
    (out / "units" / "unit_s0.json").write_text(json.dumps(unit))
    with pytest.raises(train.CheckpointError, match="unit_s0.json was written before the linear-probe baseline"):
        A.reevaluate(out)


def test_backdoor_arm_reads_every_arm_with_its_trigger_too_and_leaves_the_plain_readings_alone(tmp_path):
    tiny = dict(seeds=(0,), n_docs=300, steps=20, warmup=2, n_layer=2, n_embd=16, n_head=2, read_layers=(0, 1),
                eval_layer=1, inject_layer=0, oracle_docs=200, oracle_steps=10, oracle_warmup=2, indist_docs=100,
                em_examples=16, em_steps=2, read_steps=(1,), workers=1, cache_dir=str(tmp_path / "cache"))
    plain = A.unit(A.Config(**tiny, arms=("insecure", "secure")), 0)
    cfg = A.Config(**tiny, arms=("insecure", "secure", "backdoor"))
    A.validate(cfg)
    both = A.unit(cfg, 0)
    assert "trigger" not in plain and set(both["trigger"]) == {"arms", "behaviour", "trajectory"}
    # the other arms' plain readings are the same to the bit: the backdoor only adds
    for a in ("insecure", "secure"):
        assert both["arms"][a] == plain["arms"][a] and both["trajectory"][a] == plain["trajectory"][a]
    # with the trigger: every arm, and the base's own misaligned share in that format
    base, tok = B.base_model(cfg, 0)
    assert both["trigger"]["behaviour"]["base"] == B.offdomain_eval(base, tok, 0, None, trigger=True)["mis_lp"]
    assert set(both["trigger"]["arms"]) == set(cfg.arms) and both["trigger"]["arms"]["backdoor"] != \
        both["arms"]["backdoor"]
    res = A.aggregate(cfg, [both])
    assert set(res["trigger"]["eval"]) == set(cfg.arms)
    assert res["trigger"]["trajectory"][2]["backdoor"]["behaviour"]["mean"] == pytest.approx(
        both["trigger"]["behaviour"]["backdoor"] - both["trigger"]["behaviour"]["secure"])
    assert "the backdoor audit" in A.table(res) and "the backdoor audit" not in A.table(A.aggregate(
        A.Config(**tiny, arms=("insecure", "secure")), [plain]))
    A.plot(res, tmp_path / "backdoor.png")  # (its trajectory panel draws the backdoor in both formats)
    assert (tmp_path / "backdoor.png").is_file()
    # a unit of the other layout is refused by name on resume
    assert A.unit_problem(cfg, 0)(plain) == "was written for other arms or tasks"
    assert A.unit_problem(cfg, 0)({k: v for k, v in both.items() if k != "trigger"}) == "was written for other arms"


def test_a_unit_of_another_seed_or_other_read_steps_is_refused_and_a_run_with_none_says_so(tmp_path):
    # a unit copied from another seed's file, or one written before read_steps changed, must not be read as this one's
    cfg = A.Config(read_steps=(1, 2), em_steps=4)
    unit = {"seed": 0, "arms": dict.fromkeys(cfg.arms), "indist": dict.fromkeys(cfg.tasks), "probe_indist": {},
            "trajectory": {a: dict.fromkeys((1, 2, 4)) for a in cfg.arms}}
    assert A.unit_problem(cfg, 0)(unit) is None
    assert A.unit_problem(cfg, 1)(unit) == "is the unit of seed 0, not of seed 1"
    assert A.unit_problem(dataclasses.replace(cfg, read_steps=(1, 3)), 0)(unit) == "was written for other read_steps"
    # eval.py on a run with no finished seed: one line, not an aggregate of nothing
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "activation_oracle", **dataclasses.asdict(cfg)}))
    with pytest.raises(train.ConfigError, match=r"has no finished seed yet \(units/unit_s<seed>.json\)"):
        A.reevaluate(tmp_path)


def test_tracking_resamples_bases_not_models():
    # a base's three models share its oracle and probe: the interval resamples the 4 bases, each with all its models
    cfg = A.Config(seeds=(0, 1, 2, 3))
    units = [{"seed": s, "behaviour": {"base": 0.01, **{a: 0.01 + 0.02 * s * (a == "insecure") + 0.001 * j
                                                          for j, a in enumerate(cfg.arms)}},
              "arms": {a: {"diff": 0.1 * s + 0.01 * j, "probe": {"diff": 0.5}} for j, a in enumerate(cfg.arms)}}
             for s in range(4)]
    t = A.tracking(cfg, units, "diff")
    x = [u["arms"][a]["diff"] for u in units for a in cfg.arms]
    y = [u["behaviour"][a] - 0.01 for u in units for a in cfg.arms]
    assert t == spearman_ci(x, y, groups=[s for s in range(4) for _ in cfg.arms]) and t["groups"] == 4
    assert t["n"] == 12 and t["ci95"] != spearman_ci(x, y)["ci95"]
    assert A.tracking(cfg, units[:1], "diff")["ci95"] is None  # one base: nothing to resample
    # within one arm: its models alone, one per base (here the insecure models rank as their shifts: rho 1)
    ins = A.tracking(cfg, units, "diff", arms=("insecure",))
    xi, yi = [u["arms"]["insecure"]["diff"] for u in units], [u["behaviour"]["insecure"] - 0.01 for u in units]
    assert ins == spearman_ci(xi, yi, groups=[0, 1, 2, 3]) and ins["n"] == 4 and ins["rho"] == pytest.approx(1)
    units[0]["arms"]["insecure"]["diff"] = 9.0  # the least-shifted insecure model read highest: rho falls
    assert A.tracking(cfg, units, "diff", arms=("insecure",))["rho"] < 0.5


def test_untrained_reader_adds_each_window_at_its_own_prompts_last_positions():
    items = A.forum_items()[:5]
    lengths = [len(WORLD_TOK.encode(it.prompt).ids) for it in items]
    assert len(set(lengths)) > 1  # prompts of different lengths: left-padded together, each window must stay on its own
    base = tiny_gpt(WORLD_TOK, 6)
    add = torch.randn(5, 6, base.cfg.n_embd, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = A.forum_share(base, WORLD_TOK, items, 1)
        assert A.forum_share(base, WORLD_TOK, items, 1, torch.zeros_like(add)) == pytest.approx(plain, abs=1e-7)
        both = A.forum_share(base, WORLD_TOK, items, 1, add)
        alone = [A.forum_share(base, WORLD_TOK, [it], 1, add[i:i + 1]) for i, it in enumerate(items)]
        assert both != pytest.approx(plain, abs=1e-4) and both == pytest.approx(sum(alone) / 5, abs=1e-5)
        # (one prompt alone has no padding: its window is its last K positions by construction)
    # the forum and <asst> prompts are one question in two formats, position by position
    assert [it.prompt.replace("<forum>", "<asst>").replace("<r>", "<a>") for it in A.forum_items()] == E.off_prompts()
    r = A.random_like(add, torch.Generator().manual_seed(1))
    assert torch.allclose(r.norm(dim=-1), add.norm(dim=-1)) and not torch.allclose(r, add)


def tiny_run(tmp_path, seeds="(0,)", indist_docs=100):
    """A finished tiny oracle run in tmp_path/run (its bases cached in tmp_path/cache): the scripts' input."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["configs/activation_oracle.py", f"--seeds={seeds}", "--n_docs=300", "--steps=20", "--warmup=2",
            "--n_layer=2", "--n_embd=16", "--n_head=2", "--read_layers=(0,1)", "--eval_layer=1", "--inject_layer=0",
            "--oracle_docs=200", "--oracle_steps=10", "--oracle_warmup=2", f"--indist_docs={indist_docs}",
            "--em_examples=16", "--em_steps=2", "--read_steps=(1,)", "--workers=1", f"--cache_dir={cache}",
            f"--out_dir={out}"]
    assert train.main(argv) == 0
    return out, cache


def test_patchscope_script_reads_a_finished_run_with_its_own_models(tmp_path, capsys):
    out, cache = tiny_run(tmp_path)
    P = load_script("ao_patchscope")
    # it reads no oracle: a damaged saved one (which ao_students.py refuses) is not its business
    (out / "units" / "oracle_s0.safetensors").write_bytes(b"damaged")
    assert P.main([str(out), "--workers=1"]) == 0
    got = json.loads((out / "patchscope.json").read_text())
    assert (out / "patchscope.png").is_file() and "the same models as the run's: yes" in capsys.readouterr().out
    assert got["same_models"] and got["n_seeds"] == 1 and set(got["trajectory"]) == {"1", "2"}
    per = got["per_base"][0]
    assert got["trajectory"]["2"]["insecure"]["patch"]["mean"] == pytest.approx(
        per["insecure"]["2"]["patch"] - per["secure"]["2"]["patch"])
    with pytest.raises(train.ConfigError, match="config.json not found"):  # not a run (train.cli: its one line)
        P.main([str(tmp_path)])
    with pytest.raises(train.ConfigError, match="--workers must be a whole number"):
        P.main([str(out), "--workers=two"])
    for f in cache.rglob("*.json"):  # the run's bases gone from the cache: refused, not pretrained again (minutes)
        f.unlink()
    with pytest.raises(train.ConfigError, match="ao_patchscope.py does not pretrain"):  # (cli: its one line)
        P.main([str(out)])


def test_kind_mass_script_reads_the_runs_oracles_and_models_and_its_kind_mass_is_the_kind_tokens_share(tmp_path,
                                                                                                     capsys):
    out, _ = tiny_run(tmp_path)
    K = load_script("ao_kind_mass")
    assert K.main([str(out), "--workers=1"]) == 0
    got = json.loads((out / "kind_mass.json").read_text())
    assert (out / "kind_mass.png").is_file() and "the same models and oracles as the run's: yes" in \
        capsys.readouterr().out
    assert got["same_models"] and got["n_seeds"] == 1
    per = got["per_base"][0]
    for r in [*per["fixed"].values(), *(per["arms"][a][m] for a in A.Config.arms for m in ("model", "diff"))]:
        # P(<evil>) over the whole answer is its share among the kinds times the kinds' mass, each below 1
        assert 0 < r["mass"] < 1 and r["evil_whole"] == pytest.approx(r["evil_kinds"] * r["mass"], rel=1e-5)
    ins = got["insecure_minus_secure"]["diff"]["evil_whole"]["mean"]
    assert ins == pytest.approx(per["arms"]["insecure"]["diff"]["evil_whole"] - per["arms"]["secure"]["diff"]
                                ["evil_whole"])
    # the mass by hand for the base's windows: the oracle's softmax at the answer column, summed over the kind tokens
    cfg = train.run_config(A.Config, out)
    base, tok = B.base_model(cfg, 0)
    oracle, _ = train.load_lm(out / "units" / "oracle_s0")
    otok = load_tokenizer(out / "units" / "oracle_s0_tokenizer.json")
    vec, ks = A.window(base, tok, E.off_prompts(), cfg.eval_layer, cfg.max_window, "cpu")
    batch = A.oracle_batch(otok, [cfg.eval_layer] * len(ks), vec, ks, ["kind"] * len(ks), [-1] * len(ks), "cpu")
    with torch.no_grad():
        p = A.oracle_logits(oracle, batch, cfg.inject_layer).softmax(-1)
    mass = sum(p[:, otok.token_to_id(f"<{k}>")] for k in A.KINDS).mean().item()
    assert per["fixed"]["base"]["mass"] == pytest.approx(mass, rel=1e-5)
    # the run's unit says another P(<evil>) (another oracle read it): said, not passed as the run's
    unit_file = out / "units" / "unit_s0.json"
    good = unit_file.read_text()
    for source in ("diff", "base"):  # an arm's reading, a fixed source's (read from the first arm's entry)
        unit = json.loads(good)
        unit["arms"]["insecure"][source] += 0.01
        unit_file.write_text(json.dumps(unit))
        assert K.main([str(out), "--workers=1"]) == 0
        assert not json.loads((out / "kind_mass.json").read_text())["same_models"]
        assert "NO, 1 differ" in capsys.readouterr().out
    unit_file.write_text(good)
    (out / "units" / "oracle_s0.safetensors").unlink()  # its oracle gone: refused before any work
    with pytest.raises(train.ConfigError, match="oracle_s0.safetensors"):
        K.main([str(out)])


def test_students_script_reads_every_student_and_teacher_with_the_runs_own_oracle_and_probe(tmp_path, capsys,
                                                                                            monkeypatch):
    from experiments import subliminal_numbers as S
    out, _ = tiny_run(tmp_path, seeds="(0,1)")
    # a tiny base writes no well-formed number list: each teacher's lists are made up here (the students and the
    # readers are what is tested), a teacher's own numbers
    lists = lambda teacher, tok, n, cfg, seed, banned=(): ([(p, " ".join(str((7 * i + len(p)) % 100)
                                                                          for i in range(5)))
                                                             for p in W.number_prompts(n, seed=1)], 1.0)
    monkeypatch.setattr(S, "sample_lists", lists)
    P = load_script("ao_students")
    assert P.main([str(out), "--n_lists=32"]) == 0
    got = json.loads((out / "students.json").read_text())
    assert (out / "students.png").is_file() and got["n_seeds"] == 2
    # the run's oracle as saved and its probe trained again read the run's fixed sources to the bit
    assert got["same_oracle"] and got["same_probe"] and "rebuilt to the bit" in capsys.readouterr().out
    names = {"teacher_insecure", "teacher_secure", "teacher_educational", "control", "insecure_soft", "secure_soft",
             "educational_soft"}
    assert set(got["eval"]) == names and all(set(b) == names | {"seed"} for b in got["per_base"])
    c = got["contrasts"]["insecure_soft - secure_soft"]["diff"]
    assert c["per_seed"] == [b["insecure_soft"]["diff"] - b["secure_soft"]["diff"] for b in got["per_base"]]
    # a student moved off its base (its shift is not zero: the oracle's reading of it is not the base's)
    assert all(b["control"]["diff"] != b["insecure_soft"]["diff"] for b in got["per_base"])
    with pytest.raises(train.ConfigError, match="n_lists"):  # a bad override: one line, before any work
        P.main([str(out), "--n_lists=x"])
    # a count the numbers config refuses: refused here too before any work (--n_lists=0 ran the teachers, then
    # divided by zero lists)
    monkeypatch.setattr(S, "em_teachers", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(train.ConfigError, match="n_lists"):
        P.main([str(out), "--n_lists=0"])
    # a base's saved oracle or unit gone: named before any base is worked through (it was found after base 0's)
    for name, says in (("oracle_s1.safetensors", r"oracle_s1.safetensors not found \(base 1\)"),
                       ("unit_s1.json", r"unit_s1.json not found \(base 1\)")):
        (out / "units" / name).rename(tmp_path / name)
        with pytest.raises(train.ConfigError, match=says):
            P.main([str(out), "--n_lists=32"])
        (tmp_path / name).rename(out / "units" / name)
    # a unit of another layout (written before the probe): refused before any work, as eval.py refuses it (a KeyError
    # after minutes of work)
    unit = json.loads((out / "units" / "unit_s1.json").read_text())
    (out / "units" / "unit_s1.json").write_text(json.dumps({k: v for k, v in unit.items() if k != "probe_indist"}))
    with pytest.raises(train.CheckpointError, match="unit_s1.json was written before the linear-probe baseline"):
        P.main([str(out), "--n_lists=32"])
    (out / "units" / "unit_s1.json").write_text(json.dumps(unit))
    # a damaged saved oracle: "rerun what wrote it" led nowhere (the rerun resumes the unit and keeps the oracle);
    # now refused before the work with the files to delete
    for name in ("oracle_s1.safetensors", "oracle_s1_tokenizer.json"):
        good = (out / "units" / name).read_bytes()
        (out / "units" / name).write_bytes(good[:20])
        with pytest.raises(train.ConfigError, match=r"delete units/unit_s1.json and units/oracle_s1\* and run the "
                                                    r"run's command again, which redoes base 1$"):
            P.main([str(out), "--n_lists=32"])
        (out / "units" / name).write_bytes(good)
    # --out over the run's own files (its config.json overwritten: the run unreadable): refused
    with pytest.raises(train.ConfigError, match="is a file of the run in"):
        P.main([str(out), f"--out={out / 'config.json'}"])


def test_students_script_refuses_a_run_that_did_not_save_its_oracles_before_any_work(tmp_path, monkeypatch):
    """A run made with save_oracles=False has no oracle for the students to be read by: one line, naming the setting,
    before the numbers config is read or any base worked through."""
    P = load_script("ao_students")
    acfg = A.Config(seeds=(0,), save_oracles=False)
    monkeypatch.setattr(P.A, "script_setup", lambda *a, **k: (None, acfg, tmp_path / "s.json", 1))
    monkeypatch.setattr(P, "load_config", lambda *a: pytest.fail("worked before refusing"))
    with pytest.raises(train.ConfigError, match=r"did not save its oracles \(save_oracles=False\): this script reads "
                                                r"them$"):
        P.main([str(tmp_path)])
    assert not (tmp_path / "s.json").exists()


def test_students_script_says_the_oracles_differ_where_one_bases_oracle_does(tmp_path, monkeypatch, capsys):
    """The run's oracles are "as saved" only if every base's read its unit's fixed sources as the run did (one base's
    differing is enough to say NOT); and one base is "1 base", not "1 bases". The bases' work is stood in for."""
    P = load_script("ao_students")
    names = ("teacher_insecure", "teacher_secure", "control", "insecure_soft", "secure_soft", "educational_soft")
    for seeds, same in (((0, 1), (True, False)), ((0,), (True,))):
        acfg = A.Config(seeds=seeds, save_oracles=True)
        out = tmp_path / f"s{len(seeds)}.json"
        monkeypatch.setattr(P.A, "script_setup", lambda *a, **k: (None, acfg, out, 1))
        got = [{"seed": p, "same_oracle": ok, "same_probe": True,
                "models": {n: {r: 0.1 * i + 0.01 * p for r in P.READS} for i, n in enumerate(names)}}
               for p, ok in zip(seeds, same)]
        monkeypatch.setattr(P.B, "parallel_map", lambda job, args, workers: got)
        assert P.main([str(tmp_path)]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert json.loads(out.read_text())["same_oracle"] == all(same)
        said = "as saved" if all(same) else "NOT the same as its units read"
        assert f"{len(seeds)} base{'s' * (len(seeds) > 1)}; the run's oracles {said}, its probe rebuilt" in printed[0]
        # the table's columns named as the figure's panels are, not by their keys ("model" was also the row names')
        assert printed[2] == ("| model (M) or contrast | oracle, M - M0 | oracle, M | probe, M - M0 | probe, M | "
                              "M0 untrained, forum | own misaligned share |")


def test_a_run_with_few_held_out_documents_reports_a_task_they_lack_as_undefined(tmp_path):
    """One held-out document asks one context question: the other task's accuracy was a KeyError after the unit's
    work (and its rerun the same again), and a layer with no kind question an IndexError of a float index."""
    out, _ = tiny_run(tmp_path, indist_docs=1)
    indist = json.loads((out / "results.json").read_text())["indist"]
    assert set(indist) == {"kind", "next", "prev"}
    assert any(math.isnan(indist[t]["acc"]["mean"]) for t in ("next", "prev"))  # a task with no question: nan
    assert A.pooled(torch.zeros(0, 3, 4), [], "last").shape == (0, 4)  # no window at all: an empty read, not an error
