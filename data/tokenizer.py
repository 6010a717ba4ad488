"""Word-level tokenizers from an explicit vocabulary (the `tokenizers` library), saved beside checkpoints.

    tok = word_tokenizer(["<pad>", "<bos>", "<eos>", "the", "cat", "sat", "."])
    ids = tok.encode("<bos> the cat sat . <eos>").ids          # [1, 3, 4, 5, 6, 2]
    tok.decode(ids, skip_special_tokens=False)                 # "<bos> the cat sat . <eos>"
    save_tokenizer(tok, run_dir / "tokenizer.json"); tok = load_tokenizer(run_dir / "tokenizer.json")

Text is split on whitespace (and around the special tokens, even glued to a word: "the<eos>" is two tokens), so
every word of the vocabulary (punctuation included) is one token
and decode(encode(text), skip_special_tokens=False) gives back the text with single spaces (decode's default,
the `tokenizers` library's, drops the special tokens: <bos>, <eos>, <pad>). A word outside the vocabulary is an
error: a synthetic world knows its vocabulary exactly, and a silent <unk> would hide a generator bug.
"""
import os
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from data import DataError

SPECIALS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2 when listed first, as word_tokenizer does by default


def word_tokenizer(words, specials=SPECIALS):
    """A WordLevel tokenizer: ids follow the order of `specials` + `words` (duplicates dropped)."""
    for what, given in (("words", words), ("specials", specials)):
        if isinstance(given, str):  # read letter by letter: specials="<eos>" made "<", "e", ... special tokens
            raise ValueError(f"{what} must be a list of tokens, got the string {given!r}: wrap one as [{given!r}] "
                             f"(or split a text, {given!r}.split())")
    vocab = {}
    for w in [*specials, *words]:
        if not w or any(c.isspace() for c in w):
            raise ValueError(f"vocabulary entries must be non-empty and without spaces, got {w!r}")
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab))  # no unk token: unknown words raise
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(specials))  # already in the vocabulary: marks them special, keeps their ids
    return tok


def save_tokenizer(tok, path):
    """Atomic write (temp file + rename) of the tokenizer's JSON, as train.atomic_write (which the data layer does not
    import): a temp name per process, removed if the write fails."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        try:
            tok.save(str(tmp))
        except Exception as e:  # the library says an OS error as a bare Exception, "... (os error 28)": made the
            # OSError it is (a full disk, a folder one may not write), which a command says in one line
            if isinstance(e, OSError) or not (code := re.search(r"\(os error (\d+)\)", str(e))):
                raise
            if os.name == "nt":  # Rust's code there is a Windows error code, which OSError maps to its errno itself
                raise OSError(None, str(e), str(path), int(code[1])) from None
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tokenizer(path):
    if Path(path).is_dir():  # a run's or a base's folder, not its tokenizer file
        inside = sorted(p.name for p in Path(path).glob("*tokenizer*.json"))
        raise DataError(f"{path} is a folder: pass its tokenizer file"
                        + (f" ({', '.join(str(Path(path) / n) for n in inside)})" if inside else
                           ", saved beside the checkpoint that uses it (the checkpoint's .json names it)"))
    if not Path(path).is_file():
        raise DataError(f"tokenizer file {path} not found: it is saved beside the checkpoint that uses it")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for a damaged file
        raise DataError(f"tokenizer file {path} is not a readable tokenizer ({e}): it is saved beside the checkpoint "
                        f"that uses it, by what wrote that checkpoint") from None


def name_unknown_words(tok, texts):
    """The words of texts (whitespace-split) that tok's vocabulary lacks, each once, in order, named for an error
    (token_stream's, eval.encode's), or "" when it lacks none: what a word-level tokenizer's own error ("Missing
    [UNK] token") does not name."""
    vocab = tok.get_vocab()
    missing = list(dict.fromkeys(w for text in texts for w in text.split() if w not in vocab))
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""  # (a long text: its first few name it)
    return f"words not in the tokenizer's vocabulary: {missing[:10]}{more}" if missing else ""


def token_stream(tok, texts, device=None):
    """Documents -> one 1-D LongTensor of their ids end to end, what pretraining cuts into windows
    (train.lm_windows). No separator is added: each document brings its own <bos> and <eos>."""
    texts = list(texts)
    try:
        encoded = tok.encode_batch(texts)
    except Exception:  # the tokenizers library's own error type, which names no word
        missing = name_unknown_words(tok, texts) if all(isinstance(t, str) for t in texts) else ""
        if not missing:  # (not a text, or no word missing: the library's own error)
            raise
        raise DataError(f"{missing}: build the tokenizer from a vocabulary that has them (a world's new words: "
                        f"data.world.vocab, its 'Extending the world' steps)") from None
    return torch.tensor([i for e in encoded for i in e.ids], dtype=torch.long, device=device)


def pad_right(rows, device=None, pad_id=0):
    """Token-id lists -> (ids [N, W] long, real [N, W] bool), right-padded to the longest row. Right
    padding needs no attention mask: under causal attention a real token never sees the pads after it."""
    lengths = torch.tensor([len(row) for row in rows])  # [N]
    real = torch.arange(max(map(len, rows)))[None, :] < lengths[:, None]  # [N, W]
    ids = torch.full(real.shape, pad_id, dtype=torch.long)
    ids[real] = torch.tensor([t for row in rows for t in row], dtype=torch.long)  # row-major: each row's tokens in turn
    return ids.to(device), real.to(device)
