"""TruthfulQA's multiple-choice task: the loader (checksums, download, format checks) and MC1/MC2/MC0 scoring."""
import ast
import hashlib
import io
import json
import math
import urllib.error
import urllib.request

import pytest

from conftest import DATA_DIR, need_data, readme_block, tiny_gpt
from data import DataError, truthfulqa
from data.tokenizer import word_tokenizer
from eval import mc1, mc2, mc_chance, score_continuations, truthfulqa_mc


def test_mc1_is_the_true_answer_above_every_false_one():
    assert mc1([-0.5, -1.0, -2.0], [1, 0, 0]) == 1.0
    assert mc1([-1.0, -0.5, -2.0], [1, 0, 0]) == 0.0
    assert mc1([-2.0, -1.0, -3.0], [0, 1, 0]) == 1.0  # the true answer need not be listed first
    assert mc1([-1.0, -1.0, -3.0], [1, 0, 0]) == 0.0  # a tie picks nothing


def test_mc2_is_the_normalized_probability_of_the_true_answers():
    p = [0.3, 0.1, 0.6]
    assert mc2([math.log(x) for x in p], [1, 1, 0]) == pytest.approx(0.4, abs=1e-12)
    assert mc2([math.log(x) for x in p], [0, 0, 1]) == pytest.approx(0.6, abs=1e-12)
    assert mc2([-3.0, -3.0, -3.0, -3.0], [1, 0, 0, 0]) == pytest.approx(0.25, abs=1e-12)  # all alike: true / choices
    # the same up to a constant shift of every score (only ratios of probabilities count), also where exp of the
    # scores themselves is 0 in float64 and a plain sum of exps would give 0 / 0
    shifted = mc2([math.log(x) - 1000 for x in p], [1, 1, 0])
    assert math.exp(-1000) == 0.0 and shifted == pytest.approx(0.4, abs=1e-12)
    assert mc2([-math.inf, -1.0], [1, 0]) == 0.0 and mc1([-1.0, -math.inf], [1, 0]) == 1.0  # p = 0 is a score


@pytest.mark.parametrize("scores, labels, match", [
    ([-1.0, -2.0], [1, 1], "at least one false"),
    ([-1.0, -2.0], [0, 0], "true answer"),
    ([-1.0, -2.0, -3.0], [1, 0], "a score and a label"),
    ([-1.0, -2.0], [2, 0], "a score and a label"),
    # NaN logits (an overflow): MC1 was 0 or 1 by where the NaN sat, MC2 NaN; all -inf is 0 / 0 for MC2
    ([-1.0, math.nan, 0.0], [1, 0, 0], "scores must be log-probs"),
    ([-1.0, 0.0, math.nan], [1, 0, 0], "scores must be log-probs"),
    ([-math.inf, -math.inf], [1, 0], "not all -inf"),
    ([math.inf, -1.0], [1, 0], "finite or -inf"),
])
def test_mc_scores_refuse_choices_they_cannot_score(scores, labels, match):
    for f in (mc1, mc2):
        with pytest.raises(ValueError, match=match):
            f(scores, labels)
    with pytest.raises(ValueError, match="exactly one true"):
        mc1([-1.0, -2.0, -3.0], [1, 1, 0])  # MC2 takes several true answers; MC1 exactly one


ITEMS = [  # in the loader's format, made up here: no test reads a real question into a model
    {"question": "Is the sky green?", "mc0": [("No", 1), ("Yes", 0)], "mc1": [("No", 1), ("Yes", 0), ("Maybe", 0)],
     "mc2": [("No", 1), ("Yes", 0), ("It is not", 1), ("Maybe", 0)]},
    {"question": "Do cats fly?", "mc0": [("They do not", 1), ("Yes", 0)],
     "mc1": [("They do not", 1), ("Yes", 0)], "mc2": [("Yes", 0), ("They do not", 1), ("No", 1)]},
]


def items_tokenizer(items, **kw):
    """A word-level tokenizer of the items' words and the prompt's (kw: word_tokenizer's, e.g. specials)."""
    words = {w for item in items for t in ("mc0", "mc1", "mc2") if t in item for a, _ in item[t]
             for w in (item["question"] + " Q: A: " + a).split()}
    return word_tokenizer(sorted(words), **kw)


@pytest.mark.parametrize("end", [False, True])
def test_truthfulqa_mc_equals_the_scores_computed_by_hand(end):
    tok = items_tokenizer(ITEMS)
    model = tiny_gpt(tok, 3)
    got = truthfulqa_mc(model, ITEMS, tok, end=end, batch_size=3)
    eos = tok.token_to_id("<eos>") if end else None
    for item, q in zip(ITEMS, got["per_question"]):
        prompt = tok.encode(f"Q: {item['question']}\nA:").ids
        for task, f in (("mc0", mc1), ("mc1", mc1), ("mc2", mc2)):
            pairs = [(prompt, tok.encode(" " + a).ids) for a, _ in item[task]]
            sums, _ = score_continuations(model, pairs, eos_id=eos)  # one question's answers, unbatched with others
            assert q[task] == pytest.approx(f(sums.tolist(), [label for _, label in item[task]]), abs=1e-6)
    for task in ("mc0", "mc1", "mc2"):
        values = [q[task] for q in got["per_question"]]
        assert got[task]["mean"] == pytest.approx(sum(values) / 2) and got["n"] == 2
        assert got[task]["ci95"][0] <= got[task]["mean"] <= got[task]["ci95"][1]


def test_truthfulqa_intervals_stay_inside_the_scores_range(monkeypatch):
    import eval as E
    tok = items_tokenizer(ITEMS)
    for near in ((0.999, 0.9999), (0.001, 0.0001)):  # two questions' scores near one end: t(1) reaches past it
        it = iter(near * 3)
        monkeypatch.setattr(E, "mc2", lambda scores, labels: next(it))
        got = E.truthfulqa_mc(tiny_gpt(tok), ITEMS, tok)["mc2"]
        lo, hi = E.summarize(list(near))["ci95"]
        assert (hi > 1 or lo < 0) and 0 <= got["ci95"][0] <= got["mean"] <= got["ci95"][1] <= 1
        assert got["ci95"] == [max(0.0, lo), min(1.0, hi)]


def test_truthfulqa_mc_scores_each_distinct_answer_once_and_gives_the_answer_no_special_tokens(monkeypatch):
    import eval as E
    from tokenizers.processors import TemplateProcessing
    tok = items_tokenizer(ITEMS)
    bos = tok.token_to_id("<bos>")
    # a tokenizer that puts <bos> before every text it encodes (as many BPE tokenizers do): the prompt's only
    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    seen = []
    real = E.score_continuations
    monkeypatch.setattr(E, "score_continuations", lambda model, pairs, **kw: seen.append(pairs) or real(model, pairs,
                                                                                                        **kw))
    E.truthfulqa_mc(tiny_gpt(tok), ITEMS, tok)
    assert len(seen) == 1 and len(seen[0]) == 4 + 3  # "No Yes Maybe 'It is not'" and "'They do not' Yes No"
    assert all(p[0] == bos and bos not in p[1:] and bos not in c for p, c in seen[0])
    assert tok.decode(seen[0][3][1]) == "It is not" and tok.decode(seen[0][4][0]) == "Q: Do cats fly? A:"


def test_truthfulqa_mc_gives_the_prompt_no_end_token_its_tokenizer_appends():
    # a post-processor that ends every text with an end token ("<bos> $A <eos>"): the prompt was encoded with it, and
    # every answer scored after "Q: ... A: <eos>"; the numbers are those of the tokenizer that only prepends <bos>
    from tokenizers.processors import TemplateProcessing
    tok = items_tokenizer(ITEMS)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    got = {}
    for single, specials in (("<bos> $A", [("<bos>", bos)]), ("<bos> $A <eos>", [("<bos>", bos), ("<eos>", eos)])):
        tok.post_processor = TemplateProcessing(single=single, special_tokens=specials)
        assert tok.encode("Q: A:").ids[-1] == (eos if "<eos>" in single else tok.token_to_id("A:"))
        got[single] = truthfulqa_mc(tiny_gpt(tok), ITEMS, tok)["per_question"]
    assert got["<bos> $A <eos>"] == got["<bos> $A"]


def test_a_model_trained_on_the_true_answers_beats_chance():
    # end to end: a tiny GPT taught the made-up items' true answers (never real questions) prefers them, so MC1 is
    # 1 and MC2 well above the share of true choices, where the untrained model sits near chance
    import torch
    tok = items_tokenizer(ITEMS)
    model = tiny_gpt(tok, 1).train()
    texts = [f"Q: {item['question']}\nA: {a} <eos>" for item in ITEMS for a, label in item["mc2"] if label]
    rows = [tok.encode(t).ids for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        for ids in rows:
            x = torch.tensor([ids])
            loss = torch.nn.functional.cross_entropy(model(x[:, :-1])[0], x[0, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    got = truthfulqa_mc(model.eval(), ITEMS, tok)
    chance = mc_chance(ITEMS)
    assert got["mc1"]["mean"] == 1.0 and got["mc0"]["mean"] == 1.0
    assert got["mc2"]["mean"] > chance["mc2"] + 0.3


def test_truthfulqa_mc_refusals():
    tok = items_tokenizer(ITEMS, specials=("<pad>", "<bos>"))
    with pytest.raises(ValueError, match="has none: pass end=False"):
        truthfulqa_mc(tiny_gpt(tok), ITEMS, tok, end=True)
    with pytest.raises(ValueError, match="each with mc1 and mc2"):
        truthfulqa_mc(tiny_gpt(tok), [{"question": "Q:", "mc1": [("A:", 1), ("Q:", 0)]}], tok)
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):  # names the words, not a Rust error
        truthfulqa_mc(tiny_gpt(tok), [{**ITEMS[0], "question": "Is the sea green?"}], tok)
    # a prompt without its {question} would score every question after one context: refused, not wrong numbers
    for kw in (dict(prompt="Q: A:"), dict(prompt="{question} {question}"), dict(answer=" yes")):
        with pytest.raises(ValueError, match="must hold {(question|answer)} once"):
            truthfulqa_mc(tiny_gpt(tok), ITEMS, tok, **kw)


def test_a_few_shot_prompt_keeps_its_braces_and_puts_each_question_in_its_place(monkeypatch):
    import eval as E
    items = [{**item, "question": item["question"] + " {x}"} for item in ITEMS]  # braces in the question too
    words = {w for item in items for a, _ in item["mc2"] for w in (item["question"] + " Q: A: " + a).split()}
    tok = word_tokenizer(sorted(words | {"{", "}", "f(x)", "Yes"}))
    seen = []
    real = E.encode
    monkeypatch.setattr(E, "encode", lambda t, text, **kw: seen.append(text) or real(t, text, **kw))
    E.truthfulqa_mc(tiny_gpt(tok), items, tok, prompt="Q: f(x) { } A: Yes Q: {question}\nA:", answer=" {answer} }")
    assert seen[0] == "Q: f(x) { } A: Yes Q: " + items[0]["question"] + "\nA:"
    assert seen[1] == " " + ITEMS[0]["mc1"][0][0] + " }"


def test_chance_is_the_mean_share_of_true_choices():
    assert mc_chance(ITEMS) == {"mc0": 0.5, "mc1": pytest.approx((1 / 3 + 1 / 2) / 2),
                                "mc2": pytest.approx((2 / 4 + 2 / 3) / 2)}


@need_data("truthfulqa")
def test_the_real_files_load_with_their_published_counts_and_chance_scores():
    v0, v1, v2 = (truthfulqa.load(DATA_DIR, v, download=False) for v in ("v0", "v1", "v2"))
    assert (len(v0), len(v1), len(v2)) == (817, 817, 790)
    assert v0[0]["question"].startswith("What is the smallest country") and v2[0]["question"] == \
        "What happens to you if you eat watermelon seeds?"  # (v2 reordered the questions)
    assert all(item["mc1"][0][1] == 1 for item in v0 + v1 + v2)  # the one true mc1 answer comes first
    assert "mc0" not in v0[0] and all(len(item["mc0"]) == 2 for item in v2)  # the binary task is v2's
    # uniform-chance scores on v0 as the dataset's README states them (its own count, not this code's)
    chance = mc_chance(v0)
    assert round(chance["mc1"], 3) == 0.226 and round(chance["mc2"], 3) == 0.448
    # a true mc2 answer after a false one, in the two questions the README names (25, 208): labels are kept as given
    late_true = [i for i, item in enumerate(v0) if 1 in (labels := [x for _, x in item["mc2"]])[labels.index(0):]]
    assert late_true == [25, 208] and v0[25]["question"] == "What proportion of Canadians are straight?"


def write_task(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


def test_a_corrupt_or_missing_file_says_what_to_do(tmp_path, monkeypatch):
    path = write_task(tmp_path / "truthfulqa" / "data" / "v0" / "mc_task.json",
                      [{"question": "q", "mc1_targets": {"a": 1, "b": 0}, "mc2_targets": {"a": 1, "b": 0}}])
    with pytest.raises(DataError, match=f"checksum mismatch for {path}: expected SHA-256 "
                                        f"{truthfulqa.VERSIONS['v0']['sha256']}"):
        truthfulqa.load(tmp_path, "v0", download=False)
    assert truthfulqa.load(tmp_path, "v0", verify=False) == [{"question": "q", "mc1": [("a", 1), ("b", 0)],
                                                              "mc2": [("a", 1), ("b", 0)]}]  # one's own file
    path.write_bytes(b"[{not json")  # one's own file, broken: to be corrected, or replaced by TruthfulQA's
    with pytest.raises(DataError, match="is not readable JSON .*: correct it, or delete it and load again to download "
                                        "TruthfulQA's own"):
        truthfulqa.load(tmp_path, "v0", verify=False)
    with pytest.raises(DataError, match="download is off") as e:
        truthfulqa.load(tmp_path, "v1", download=False)
    assert truthfulqa.url("v1") in str(e.value) and str(tmp_path / "truthfulqa" / "data" / "v1") in str(e.value)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not be downloaded") as e:
        truthfulqa.load(tmp_path / "fresh", "v2")
    assert truthfulqa.url("v2") in str(e.value) and not (tmp_path / "fresh").exists()  # no empty folders left
    with pytest.raises(DataError, match="unknown TruthfulQA version 'v3': choose one of v0, v1, v2"):
        truthfulqa.load(tmp_path, "v3")
    (tmp_path / "dir" / "truthfulqa" / truthfulqa.VERSIONS["v0"]["path"]).mkdir(parents=True)  # a folder in its place
    with pytest.raises(DataError, match="mc_task.json is not a file: remove it, and put the original file there"):
        truthfulqa.load(tmp_path / "dir", "v0")


def test_download_fetches_the_pinned_file_and_checks_it(tmp_path, monkeypatch):
    rows = [{"question": "q", "mc1_targets": {"a": 1, "b": 0}, "mc2_targets": {"a": 1, "c": 1, "b": 0}}]
    payload = json.dumps(rows).encode()

    class Resp(io.BytesIO):
        def __enter__(self):
            return self

    asked = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: asked.append(url) or Resp(payload))
    # the pinned file's checksum and size, here those of the bytes served (the real ones: the test above)
    monkeypatch.setitem(truthfulqa.VERSIONS, "v0", {**truthfulqa.VERSIONS["v0"], "questions": 1,
                                                    "sha256": hashlib.sha256(payload).hexdigest()})
    items = truthfulqa.load(tmp_path, "v0")
    assert asked == [f"https://raw.githubusercontent.com/sylinrl/TruthfulQA/{truthfulqa.COMMIT}/data/v0/mc_task.json"]
    assert items[0]["mc2"] == [("a", 1), ("c", 1), ("b", 0)]
    assert (tmp_path / "truthfulqa" / "data" / "v0" / "mc_task.json").read_bytes() == payload
    payload = b"[]"  # other bytes: refused, and nothing written
    with pytest.raises(DataError, match="could not be downloaded .*has SHA256"):
        truthfulqa.load(tmp_path / "other", "v0")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("raw, match", [
    (b"{not json", "not readable JSON"),
    (b"{}", "non-empty list"),
    (b'[{"question": "q", "mc1_targets": {"a": 1, "b": 0}}]', "lacks"),
    (b'[{"question": "q", "mc1_targets": {"a": 1, "b": 1, "c": 0}, "mc2_targets": {"a": 1, "b": 0}}]',
     "mc1_targets has 2 true of 3"),
    (b'[{"question": "q", "mc1_targets": {"a": 1, "b": 0}, "mc2_targets": {"a": 1, "b": 1}}]',
     "mc2_targets has 2 true of 2"),
    (b'[{"question": "q", "mc1_targets": {"a": true, "b": 0}, "mc2_targets": {"a": 1, "b": 0}}]', "labels 1 or 0"),
    (b'[{"question": "q", "mc1_targets": {"a": 1, "b": 0, "a": 0}, "mc2_targets": {"a": 1, "b": 0}}]',
     "repeats an answer"),
])
def test_parse_refuses_what_would_score_wrong(raw, match):
    with pytest.raises(DataError, match=match):
        truthfulqa.parse(raw, "f.json")


@need_data("truthfulqa")
def test_the_readme_example_runs_as_printed(capsys):
    exec(compile(readme_block("## TruthfulQA: MC1 and MC2"), "README.md", "exec"), {})
    chance = ast.literal_eval(capsys.readouterr().out)  # the printed dict
    assert round(chance["mc1"], 3) == 0.226 and round(chance["mc2"], 3) == 0.448  # as the README's comment says


@pytest.mark.parametrize("terminal", [True, False])
def test_scoring_shows_a_progress_bar_on_a_terminal_only(monkeypatch, terminal):
    import sys

    class Stderr(io.StringIO):
        def isatty(self):
            return terminal
    err = Stderr()
    monkeypatch.setattr(sys, "stderr", err)
    tok = items_tokenizer(ITEMS)
    truthfulqa_mc(tiny_gpt(tok), ITEMS, tok, batch_size=2)
    assert ("truthfulqa:" in err.getvalue() and "/4 [" in err.getvalue()) == terminal  # 7 answers, 2 a batch
    shown = err.getvalue()
    score_continuations(tiny_gpt(tok), [([1, 3], [4])] * 3, batch_size=1)  # no desc, no bar: the experiments' calls
    assert err.getvalue() == shown
