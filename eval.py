"""Evaluations and statistics, and `python eval.py RUN_DIR` to re-evaluate a saved run.

    python eval.py out/subliminal_mnist/20261127-071500     # recomputes the table (MNIST: from the saved models,
                                                            # printed; EM, subliminal numbers, activation oracle:
                                                            # from the saved units, rewriting results.json;
                                                            # mid-run, results_partial.* instead)

Statistics: every reported number is a mean over seeds with a two-sided 95% Student-t confidence
interval, `{"mean", "ci95": [lo, hi] (None with one seed), "per_seed": [...]}`.
"""
import math
import numbers
import sys
from pathlib import Path

import commands

if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()

import numpy as np
import torch
from tqdm import tqdm

from data.tokenizer import name_unknown_words, pad_right
from data.truthfulqa import TASKS
from model import token_ids, upcast

# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (standard tables, three decimals)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df):
    if df < 1:  # (a list index of 0 or less would read the table from its end)
        raise ValueError(f"a t-interval needs df >= 1 (two values or more), got df={df}")
    if df <= 30:
        return _T975[df - 1]
    # past the table, the quantile's expansion in 1/df around the normal's (Cornish-Fisher, four terms): within 1e-7
    # of the exact quantile from df = 30 on (the earlier 1.96 + 2.4 / df read up to 0.002 low, a narrow interval)
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4))


def mean_of(defined):
    """The mean of a non-empty list of numbers, kept within their range: the rounding of sum / n put a mean past
    every value (sum([0.1] * 3) / 3 is 0.10000000000000002), and seeds all equal had an interval of nonzero width."""
    return min(max(sum(defined) / len(defined), min(defined)), max(defined))


def summarize(values):
    """Mean and 95% t-interval over seeds. With one seed the interval is undefined (None).
    A seed whose value is itself undefined (nan, e.g. misaligned among valid answers when it gave none) is left out
    of the mean and the interval; it stays nan in per_seed (which says how many), so that per_seed still pairs up
    seed by seed with other arms. Leaving it in would make the whole mean nan and lose the other seeds."""
    per_seed = [float(x) for x in values]
    defined = [x for x in per_seed if not math.isnan(x)]
    n = len(defined)
    mean = mean_of(defined) if n else math.nan
    stat = {"mean": mean, "ci95": None, "per_seed": per_seed}
    if n >= 2 and math.isfinite(mean):  # (an infinite value: no spread to give, not a [nan, nan] interval)
        sd = math.sqrt(sum((x - mean) ** 2 for x in defined) / (n - 1))
        half = t975(n - 1) * sd / math.sqrt(n)
        stat["ci95"] = [mean - half, mean + half]
    return stat


def _labelled(values, groups):
    """(values, groups) as lists (a numpy array of labels has no .count), one label per value or a ValueError: zip cut
    the longer one short, seeds or groups left out without a word."""
    values, groups = list(values), list(groups)
    if len(values) != len(groups):
        raise ValueError(f"{len(values)} values but {len(groups)} group labels: one label per value")
    return values, groups


def group_means(values, groups):
    """Per-seed values -> one mean per group (groups[i] is seed i's, e.g. its base model), in sorted group order.
    Undefined (nan) seeds are left out of their group's mean; a group with none defined is nan."""
    values, groups = _labelled(values, groups)
    out = []
    for g in sorted(set(groups)):
        defined = [v for v, group in zip(values, groups) if group == g and not math.isnan(v)]
        out.append(mean_of(defined) if defined else math.nan)  # a base's rate repeated for 3 seeds is that rate
    return out


def summarize_by(values, groups):
    """summarize() for a quantity that seeds sharing a group (a base model) do not measure independently, such
    as the base model's own rate, repeated once per fine-tune seed. The mean and per_seed are over all seeds
    (so they still pair up with the arms' per_seed), the interval over the groups' means: n = groups, not
    seeds. Groups must be balanced (the same count each) so that both means agree; where a seed is undefined
    (see summarize) they can differ, and the mean is the groups' (the one the interval is centred on)."""
    values, groups = _labelled(values, groups)  # (before the balance check: it would count the labels alone)
    sizes = {g: groups.count(g) for g in sorted(set(groups))}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"unbalanced groups {sizes}: the mean over seeds and over groups would differ")
    st = summarize(values)
    over = summarize(group_means(st["per_seed"], groups))
    st["ci95"] = over["ci95"]
    if any(math.isnan(x) for x in st["per_seed"]):  # a group short of a seed: the mean the interval is about
        st["mean"] = over["mean"]
    st["n_groups"] = len(over["per_seed"]) - n_undefined(over)  # the interval's n (a group with no defined seed is out)
    return st


def ranks(x):
    """Ranks 0..n-1 of x, ties given their average rank (resampled pairs are ties)."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=float), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # the rank of each distinct value's first copy
    return (first + (counts - 1) / 2)[inverse]


def spearman(x, y):
    """Pearson's correlation of the ranks; nan when either side is constant or holds a nan (ranked as ties above
    every number, it gave a correlation: 0.0 for (1, 2, 3, 4, nan) against (1, 2, 3, 4, 0))."""
    if np.isnan(np.asarray(x, dtype=float)).any() or np.isnan(np.asarray(y, dtype=float)).any():
        return math.nan
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def spearman_ci(x, y, n_boot=10_000, seed=0, groups=None):
    """rho and its percentile 95% interval from resampling the pairs with replacement. groups: a label per pair
    (the base model several pairs share, say): whole groups are resampled instead, since pairs of one group are not
    independent draws (resampling them alone gives too narrow an interval)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    # else an IndexError or a broadcast error; or, for fewer group labels than pairs, pairs never resampled
    if len(x) != len(y) or groups is not None and len(groups) != len(x):
        raise ValueError(f"spearman_ci needs x, y (and groups) of one length, got {len(x)}, {len(y)}"
                         + ("" if groups is None else f" and {len(groups)} group labels"))
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, len(x), size=(n_boot, len(x)))
    else:
        # in sorted order: the same pairs listed in another order (--seeds=(2,0,1)) draw the same resamples
        members = [np.flatnonzero(np.asarray(groups) == g) for g in sorted(set(groups))]
        draws = (np.concatenate([members[j] for j in row]) for row in rng.integers(0, len(members),
                                                                                   size=(n_boot, len(members))))
    boot = [spearman(x[i], y[i]) for i in draws]
    boot = [b for b in boot if not math.isnan(b)]  # a resample with one distinct value has no rank order
    # a side constant (or holding a nan) has no rank order in any resample (an IndexError); one group is every
    # resample ([rho, rho] would read as exact)
    # a nan among the pairs: rho is nan, and the resamples that missed it gave an interval around no estimate
    if not boot or groups is not None and len(set(groups)) < 2 or math.isnan(spearman(x, y)):
        return {"rho": spearman(x, y), "ci95": None, "n": len(x),
                **({} if groups is None else {"groups": len(set(groups))})}
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"rho": spearman(x, y), "ci95": [float(lo), float(hi)], "n": len(x),
            **({} if groups is None else {"groups": len(set(groups))})}


def n_undefined(stat):
    """How many seeds summarize() left out (nan in per_seed)."""
    return sum(math.isnan(x) for x in stat["per_seed"])


def mean_ci(stat, digits=3, scale=1, sign="+", show=None):
    """'+m [+lo, +hi]' of a summarize()d number times `scale`, or the mean alone where one seed leaves no interval
    (sign "": no plus sign), or "n/a" where no seed defines it. show: a function number -> text used for the mean and
    both ends instead (e.g. a log-scale number shown as a ratio)."""
    if math.isnan(stat["mean"]):  # no seed defined it (no valid answer, say): not "+nan"
        return "n/a"
    fmt = show or (lambda y: f"{scale * y:{sign}.{digits}f}")  # number -> text
    # a negative scale flips the interval's ends
    ends = None if stat["ci95"] is None else sorted(stat["ci95"], key=lambda y: scale * y)
    return fmt(stat["mean"]) + ("" if ends is None else f" [{fmt(ends[0])}, {fmt(ends[1])}]")


def fmt_ratio(r):
    """A ratio of means {"ratio", "ci95"} as 'r [lo, hi]' (two decimals); an undefined interval (None) says why: its
    "why", or one base."""
    ci = r["ci95"]
    return f"{r['ratio']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else
                                  f" (no interval: {r['why']})" if "why" in r else " (one base: no interval)")


def error_bars(stats, scale=1):
    """matplotlib's yerr, [[below], [above]], of summarize's STATs: each 95% interval's ends around its mean (times
    `scale`), nan where a STAT has no interval (one seed): no bar is drawn there, where one of zero length would read
    as an exact number. None (no bars) when no STAT has one: matplotlib 3.7 warns of an all-nan yerr."""
    stats = list(stats)
    if not any(st["ci95"] for st in stats):
        return None
    end = lambda st, j: st["ci95"][j] if st["ci95"] else math.nan
    return [[scale * (st["mean"] - end(st, 0)) for st in stats], [scale * (end(st, 1) - st["mean"]) for st in stats]]


def fmt_stat(stat, digits=3):
    """'m ± h' of a summarize()d number, h half the width of its 95% interval (the mean alone with one seed), and how
    many seeds were undefined when some were."""
    text = f"{stat['mean']:.{digits}f}"
    if stat["ci95"] is not None:
        text += f" ± {(stat['ci95'][1] - stat['ci95'][0]) / 2:.{digits}f}"
    undefined = n_undefined(stat)
    if undefined:
        text += f" ({undefined} of {len(stat['per_seed'])} seeds undefined)"
    return text


@torch.no_grad()
def accuracy(model, x, y, n_classes=10, batch_size=2000):
    """Per-seed accuracy of argmax over the first n_classes logits. x [N, D] shared by all seeds -> [S]."""
    if x.shape[0] == 0:  # else 0 / 0 reached through an int: an AttributeError naming neither x nor y
        raise ValueError("accuracy over no examples: x is empty")
    if y.shape[0] != x.shape[0]:  # else a shape error from the comparison, or a silent broadcast for a single label
        raise ValueError(f"x has {x.shape[0]} examples, y {y.shape[0]} labels")
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i:i + batch_size])[..., :n_classes]  # [S, B, n_classes]
        correct = correct + (logits.argmax(-1) == y[i:i + batch_size]).sum(1)
    return correct.float() / x.shape[0]


@torch.no_grad()
def score_continuations(model, pairs, *, tokenizer=None, eos_id=None, batch_size=64, desc=None):
    """Teacher-forced log-probabilities of many (prompt, continuation) pairs, batched: what class-based
    behaviour evals and MC1/MC2 need (the experiments' evals use world_base.score_shared_prompts, the same numbers
    for many continuations of one prompt at less cost; this is the general form, and its tests' reference).
    Pairs are token-id lists, or strings when a tokenizer is given (a continuation is encoded without the tokenizer's
    special tokens, a BPE tokenizer's <bos> say; a prompt with those before its text only, encode_prompt).
    The end token (eos_id; with a tokenizer, its "<eos>" by default, none if it has none; with neither, none) is
    appended to every continuation, so "the answer, and then stop" is what gets scored. Rows are right-padded (causal
    attention keeps pads invisible). desc: a progress bar of that name over the batches, on a terminal only
    (train.progress_bar's kind). Returns (sums [N] float tensor, [per-token log-probs [len_i] per pair])."""
    # the pairs as token-id lists, the end token appended, each checked
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")  # (-1 scored nothing)
    batch_size = int(batch_size)  # (a numpy int, as generate's max_new_tokens takes)
    if tokenizer is not None:
        eos_id = tokenizer.token_to_id("<eos>") if eos_id is None else eos_id
    ids_of = lambda t, encoder: encoder(tokenizer, t) if tokenizer is not None and isinstance(t, str) else t
    pairs = [(ids_of(p, encode_prompt), ids_of(c, lambda tk, t: encode(tk, t, False)))
             for p, c in pairs]  # once: `pairs` may be an iterator (a zip)
    if eos_id is not None:  # a string ("<eos>") or generate's list of ids failed inside pad_right, naming nothing
        eos_ids = [] if isinstance(eos_id, str) else token_ids(eos_id, "eos_id")
        if len(eos_ids) != 1:
            raise ValueError(f"eos_id must be one token id, which the scorer appends to each continuation (a "
                             f"tokenizer's: tok.token_to_id('<eos>')), got {eos_id!r}")
        eos_id = eos_ids[0]
    if any(isinstance(t, str) for pair in pairs for t in pair):  # else "too many dimensions 'str'" from torch
        raise ValueError("score_continuations was given text without a tokenizer: pass tokenizer= (the "
                         "model's) to score strings, or give token-id lists")
    # ids as Python ints: a float 1.5 or a bool is refused, not scored as id 1 (pad_right's long dtype would cut it)
    pairs = [(token_ids(p, f"pair {i}'s prompt"), token_ids(c, f"pair {i}'s continuation"))
             for i, (p, c) in enumerate(pairs)]
    if eos_id is not None and any(c and c[-1] == eos_id for _, c in pairs):
        # the world's answer strings end in " <eos>": scored as they are, "<eos> <eos>" would be, silently
        raise ValueError("a continuation already ends with the end token, which score_continuations appends: "
                         "drop it from the continuation")
    pairs = [(p, c + ([eos_id] if eos_id is not None else [])) for p, c in pairs]
    shape = getattr(model, "cfg", None)  # the GPT's GPTConfig; None: another model, whose sizes are not checked
    vocab, block = getattr(shape, "vocab_size", None), getattr(shape, "block_size", None)
    if vocab is not None and (bad := [i for i, (p, c) in enumerate(pairs) if any(not 0 <= t < vocab for t in p + c)]):
        raise ValueError(f"{len(bad)} pair(s) hold token ids outside the model's vocabulary 0 .. {vocab - 1} (pair "
                         f"{bad[0]}): encode with the tokenizer saved beside its checkpoint")
    if any(len(p) < 1 or len(c) < 1 for p, c in pairs):
        raise ValueError("every prompt and every continuation (with its end token) needs at least one token")
    # the last token is only a target: a pair may hold block_size + 1 tokens (else the forward's error, naming no pair)
    if block is not None and (too_long := [i for i, (p, c) in enumerate(pairs) if len(p) + len(c) - 1 > block]):
        i = too_long[0]
        raise ValueError(f"{len(too_long)} pair(s) longer than block_size + 1 = {block + 1} tokens (the model reads "
                         f"block_size; the last token is only a target): pair {i} has {len(pairs[i][0])} prompt + "
                         f"{len(pairs[i][1])} continuation tokens (end token included); shorten them")

    # the scoring, batch_size pairs per forward
    device = next(model.parameters()).device
    per_token = []
    for i in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=None if desc else True, leave=False,
                  unit="batch"):
        chunk = pairs[i:i + batch_size]
        ids, _ = pad_right([p + c for p, c in chunk], device)  # [b, W], padded with 0 (never scored)
        # upcast: bf16 logits to float32, a float64 model's kept (.float() rounded its scores to float32)
        logp = upcast(model(ids[:, :-1])).log_softmax(-1)  # [b, W-1, V]: position t predicts token t+1
        lp = logp.gather(-1, ids[:, 1:, None])[..., 0].cpu()  # [b, W-1], log p of each actual next token
        for j, (p, c) in enumerate(chunk):
            # the continuation's tokens are columns len(p) .. len(p) + len(c) - 1, each predicted one column earlier
            per_token.append(lp[j, len(p) - 1:len(p) + len(c) - 1])  # [len(c)]
    sums = torch.stack([t.sum() for t in per_token]) if per_token else torch.zeros(0)  # [N]
    return sums, per_token


def encode(tokenizer, text, add_special_tokens=True):
    """Token ids of a text, or a ValueError naming the words the (word-level) vocabulary lacks. add_special_tokens:
    the tokenizer's post-processor's (a BPE tokenizer's <bos>, say), which a continuation must not get."""
    try:
        return tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
    except Exception:  # the tokenizers library's own error type, which names no word
        missing = name_unknown_words(tokenizer, [text])
        if not missing:  # a failure that is no missing word: the library's own error, not an empty list named
            raise
        raise ValueError(f"{missing} (in {text!r}): score with a model whose tokenizer has these words") from None


def encode_prompt(tokenizer, text):
    """A prompt's token ids with the special tokens its tokenizer's post-processor puts before the text (a <bos>),
    and none of those it puts after it (an end token, a [SEP]): the continuation scored follows the text itself."""
    ids = encode(tokenizer, text)  # (its words checked)
    bare = tokenizer.encode(text, add_special_tokens=False).ids
    if not bare:  # no text to find (it would match before a leading <bos> and drop it): as the tokenizer gives it
        return ids
    for i in range(len(ids) - len(bare) + 1):
        if ids[i:i + len(bare)] == bare:
            return ids[:i + len(bare)]
    return ids


def mc1(scores, labels):
    """MC1 of one multiple-choice question: 1.0 when its one true answer (label 1) scores above every false one
    (label 0), else 0.0. Scores are the answers' summed log-probs. A tie is a miss, as in TruthfulQA's own scorer:
    a model that gives every answer the same score has picked none of them."""
    true, false = split_by_label(scores, labels)
    if len(true) != 1:
        raise ValueError(f"MC1 needs exactly one true answer among its choices, got {len(true)}")
    return float(true[0] > max(false))


def mc2(scores, labels):
    """MC2 of one multiple-choice question: the probability the model gives its true answers, normalized over all
    its choices: sum over true of p / sum over all of p, with p = exp(score). Computed relative to the highest score:
    the same number, where exp of a long answer's summed log-prob (-800) underflows to 0 and gives 0 / 0."""
    true, false = split_by_label(scores, labels)
    if not true:
        raise ValueError("MC2 needs at least one true answer among its choices")
    top = max(true + false)
    mass = lambda xs: sum(math.exp(x - top) for x in xs)  # each term <= 1, and the top one is exactly 1
    return mass(true) / (mass(true) + mass(false))


def split_by_label(scores, labels):
    """(true scores, false scores) of one question's choices, checked: labels 1 or 0, one per score, a false one."""
    scores, labels = [float(s) for s in scores], list(labels)
    if len(scores) != len(labels) or any(label not in (0, 1) for label in labels):
        raise ValueError(f"a score and a label (1 true, 0 false) per choice: got {len(scores)} scores and labels "
                         f"{labels}")
    # a NaN made MC1 depend on where it sat (max is order-dependent with NaN) and MC2 NaN; -inf everywhere: 0 / 0
    if any(math.isnan(s) or s == math.inf for s in scores) or all(s == -math.inf for s in scores):
        raise ValueError(f"scores must be log-probs, finite or -inf, not all -inf; got {scores} (NaN logits: a "
                         f"model's activations overflowed, in bf16 say)")
    false = [s for s, label in zip(scores, labels) if label == 0]
    if not false:
        raise ValueError("a multiple-choice question needs at least one false answer among its choices")
    return [s for s, label in zip(scores, labels) if label == 1], false


def truthfulqa_mc(model, items, tokenizer, *, prompt="Q: {question}\nA:", answer=" {answer}", end=False,
                  batch_size=64):
    """MC1 and MC2 (and MC0 where the items have it) of a language model on TruthfulQA-style items
    (data.truthfulqa.load's: {"question", "mc1": [(answer, label)], "mc2": [...], "mc0"?: [...]}).

    Each answer is scored as the summed log-prob of `answer` with its {answer} replaced by the answer, after
    `prompt` with its {question} replaced by the question (as text: other braces, a few-shot example's code say,
    are kept as written), teacher-forced (score_continuations), each distinct (question, answer) pair once. The
    prompt is encoded with the tokenizer's special tokens, the answer without them. end=True also scores the end
    token "<eos>" after each answer ("the answer, and then stop"); published TruthfulQA numbers score the answer
    alone (end=False). The paper's prompt also puts six example questions and answers before the question: pass
    them in `prompt`; its scorer adds a final "." to an answer without one (v2's answers, nearly all), which the
    items then need first. Returns {task: {"mean", "ci95"} (a 95% t-interval over questions, cut to [0, 1]), "n":
    questions, "per_question": [{task: score}]}. Chance, for comparison: mc_chance(items)."""
    tasks = mc_tasks(items)
    if not items or not {"mc1", "mc2"} <= set(tasks):
        raise ValueError("truthfulqa_mc needs a non-empty list of items, each with mc1 and mc2 choices (as "
                         "data.truthfulqa.load gives)")
    for name, text, field in (("prompt", prompt, "{question}"), ("answer", answer, "{answer}")):
        # without it every question would be scored after one context (or every answer be one text): wrong numbers
        if not isinstance(text, str) or text.count(field) != 1:
            raise ValueError(f"{name} must hold {field} once, where each {field[1:-1]} goes; got {text!r}")
    eos_id = None
    if end and (eos_id := tokenizer.token_to_id("<eos>")) is None:
        raise ValueError("end=True scores the end token <eos> after each answer, and this tokenizer has none: "
                         "pass end=False")
    pairs, index = [], {}  # the distinct (question, answer) pairs as token ids; (item, answer) -> its row in pairs
    for i, item in enumerate(items):
        context = encode_prompt(tokenizer, prompt.replace("{question}", item["question"]))
        for a in dict.fromkeys(a for t in tasks for a, _ in item[t]):  # (dict: once each, in order)
            index[i, a] = len(pairs)
            pairs.append((context, encode(tokenizer, answer.replace("{answer}", a), add_special_tokens=False)))
    sums, _ = score_continuations(model, pairs, eos_id=eos_id, batch_size=batch_size, desc="truthfulqa")
    sums = sums.tolist()
    score = {"mc0": mc1, "mc1": mc1, "mc2": mc2}  # MC0 is MC1 over two choices: the best answer and the best false one
    per_question = [{t: score[t]([sums[index[i, a]] for a, _ in item[t]], [label for _, label in item[t]])
                     for t in tasks} for i, item in enumerate(items)]
    result = {"n": len(items), "per_question": per_question}
    for t in tasks:
        stat = summarize([q[t] for q in per_question])
        # a score lies in [0, 1]; a t-interval around a mean near either end can reach past it (0.9997 had 1.0003)
        ci = stat["ci95"] and [max(0.0, stat["ci95"][0]), min(1.0, stat["ci95"][1])]
        result[t] = {"mean": stat["mean"], "ci95": ci}
    return result


def mc_tasks(items):
    """The tasks (of data.truthfulqa.TASKS: mc0, mc1, mc2) that every item has."""
    return [t for t in TASKS if items and all(t in item for item in items)]


def mc_chance(items):
    """The expected MC1, MC2 (and MC0) of a model that picks among a question's choices at random: 1 / choices, and
    true choices / choices (for MC2, exactly what a model scoring every choice alike gets), averaged over items."""
    tasks = mc_tasks(items)
    return {t: mean_of([sum(label for _, label in item[t]) / len(item[t]) for item in items]) for t in tasks}


def reevaluate(argv):
    """Redraw a run's results (its experiment's `reevaluate`: a finished run's, or a partial table of a run still
    going where the experiment saves units); the project's errors as train.cli shows them."""
    import importlib
    from train import ConfigError, hold_for_reading, run_dir_config
    run_dir = Path(argv[0])
    cfg_path = run_dir / "config.json"
    name = run_dir_config(run_dir)["experiment"]  # not train.run_config: the name comes first, then its Config class
    if not (Path(__file__).parent / "experiments" / f"{name}.py").is_file():
        raise ConfigError(f"{cfg_path} names the experiment '{name}', which this checkout does not have")
    module = importlib.import_module(f"experiments.{name}")
    if not hasattr(module, "reevaluate"):
        raise ConfigError(f"{name} has nothing to re-evaluate: its numbers are in {run_dir / 'results.json'} "
                          f"(rerun the config in {cfg_path} to make them again)")
    # a finished run is held while it is redrawn (its rerun, whose --resume=False deletes it, waits); one still going
    # (its command holds the folder) is read as it goes, into a partial table
    hold_for_reading(run_dir)
    module.reevaluate(run_dir)


def show_help(argv):
    """-h / --help: the docstring's first two paragraphs."""
    print("\n\n".join(__doc__.split("\n\n")[:2]))


def main(argv):
    helped = argv[:1] in (["-h"], ["--help"])
    option = next((a for a in argv if a.startswith("--")), None)
    if not helped and (len(argv) != 1 or option):
        why = ("" if not argv else f" (it takes no options: {option})" if option else
               f" (one run folder, not {len(argv)})")
        print(f"usage: python eval.py RUN_DIR{why}", file=sys.stderr)
        return 2
    from train import cli  # as reevaluate's imports: the statistics above need nothing from train
    return cli(show_help if helped else reevaluate, argv)  # the help too: into `| head`, no traceback


if __name__ == "__main__":
    commands.run(main, sys.argv[1:])
