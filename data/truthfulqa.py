"""TruthfulQA's multiple-choice task (Lin, Hilton, Evans 2021), for MC1/MC2 scoring with eval.truthfulqa_mc.

    from data.truthfulqa import load
    items = load("data", "v0")  # [{"question": str, "mc1": [(answer, 1 or 0), ...], "mc2": [...]}, ...] (817)

Evaluation only: the benchmark asks that its questions never appear in training data, so nothing here trains on
them (nor builds a tokenizer from them).

Versions, as the upstream repository keeps them:
- "v0": the September 2021 original, which published MC1/MC2 numbers use (lm-evaluation-harness, the Hugging
  Face dataset): 817 questions;
- "v1": the October 2021 revision, whose MC1/MC2 the paper's tables also report: 817 questions;
- "v2": the January 2025 revision: 790 questions, and a binary task (`mc0`: the best answer against the best
  incorrect one), which the authors recommend for new work.
Each question has one true answer among its mc1 choices (listed first) and one or more true answers among its mc2
choices (in the file's order: a true one may follow a false one, so the labels are read, never the positions).

Files live in `data_dir/truthfulqa/` with the upstream repository's paths. A missing file is downloaded from the
repository at a pinned commit and written atomically; every file is checked against its SHA-256 before it is
used (`verify=False`, for one's own file in the same format, checks its structure only).
"""
import json
from pathlib import Path

from data import DataError, download, download_folder, elsewhere, file_hash, path_problem, write_stopped

REPO = "https://raw.githubusercontent.com/sylinrl/TruthfulQA/"
COMMIT = "d71c110897f5d31c5d7f309e7bc316c152f6f031"  # upstream's last commit (2025-01-15); it holds all three
VERSIONS = {
    "v0": {"path": "data/v0/mc_task.json", "questions": 817,
           "sha256": "6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954"},
    "v1": {"path": "data/v1/mc_task.json", "questions": 817,
           "sha256": "b3799639bc76c939836d587de7d30b48d91012cb34be04806d33106ce06c162a"},
    "v2": {"path": "data/mc_task.json", "questions": 790,
           "sha256": "c90d853454fd48c676accb33e16923ac438dbb6fb37ecc7c6a70e33c9e556e87"},
}
TASKS = ("mc0", "mc1", "mc2")  # the file's "<task>_targets" keys, each {answer: label}


def url(version):
    return f"{REPO}{COMMIT}/{VERSIONS[version]['path']}"


def parse(raw, name):
    """The bytes of an mc_task.json -> [{"question", "mc1", "mc2"[, "mc0"]}], each task a list of (answer, label)
    in the file's order. Every question is checked: a task of the wrong shape would score silently wrong."""
    def pairs(kv):  # a JSON object as its (key, value) pairs: json's dict would keep only the last of a repeated key
        if len({k for k, _ in kv}) != len(kv):
            raise DataError(f"{name} repeats an answer within one question's choices: it is not an mc_task.json")
        return dict(kv)
    try:
        rows = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, UnicodeDecodeError) as e:
        # (TruthfulQA's own file passes its checksum first, so this is a file of one's own, loaded with verify=False)
        raise DataError(f"{name} is not readable JSON ({e}): correct it, or delete it and load again to download "
                        f"TruthfulQA's own") from None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{name} is not an mc_task.json (a non-empty list of questions)")
    items = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "mc1_targets" not in row \
                or "mc2_targets" not in row:
            raise DataError(f"{name}: question {i} lacks a question text, mc1_targets or mc2_targets")
        item = {"question": row["question"]}
        for task in TASKS:
            targets = row.get(f"{task}_targets")
            if targets is None:
                continue
            if not isinstance(targets, dict) or any(not isinstance(a, str) or label not in (0, 1) or
                                                    isinstance(label, bool) for a, label in targets.items()):
                raise DataError(f"{name}: question {i}'s {task}_targets is not a map of answers to labels 1 or 0")
            trues = sum(targets.values())
            # mc1 and mc0 pick one true answer among false ones; mc2 needs a true and a false answer to normalize
            if (trues != 1 if task != "mc2" else trues < 1) or trues == len(targets):
                raise DataError(f"{name}: question {i}'s {task}_targets has {trues} true of {len(targets)} answers "
                                f"({'exactly one' if task != 'mc2' else 'at least one'} true and one false needed)")
            item[task] = list(targets.items())
        items.append(item)
    return items


def load(data_dir="data", version="v0", download=True, verify=True):
    """The questions of one version of TruthfulQA's multiple-choice task (see the module's docstring)."""
    if version not in VERSIONS:
        raise DataError(f"unknown TruthfulQA version '{version}': choose one of {', '.join(VERSIONS)} (v0 for "
                        f"comparing with published MC1/MC2 numbers)")
    spec = VERSIONS[version]
    folder = Path(data_dir) / "truthfulqa"
    path = folder / spec["path"]
    if why := path_problem(path):  # (a name too long: an OSError from deep inside)
        raise DataError(f"data_dir {data_dir}: {why}: pass another --data_dir")
    if path.exists() and not path.is_file():
        raise DataError(f"{path} is not a file: remove it, and put the original file there (or let the loader "
                        f"download it)")
    if not path.exists():
        by_hand = f"put {url(version)} there{elsewhere(folder)}"
        if not download:
            raise DataError(f"{path} is missing (download is off): {by_hand}")
        try:
            with download_folder(path.parent):
                fetch(version, path)
        except (OSError, DataError) as e:  # URLError is an OSError
            if write_stopped(e):  # the disk, not the download: cli says it in one line
                raise
            raise DataError(f"{path} is missing and could not be downloaded ({e}): {by_hand}") from None
    if verify and (found := file_hash(path, "sha256")) != spec["sha256"]:
        raise DataError(f"checksum mismatch for {path}: expected SHA-256 {spec['sha256']}, found {found}. The file is "
                        f"corrupt or not TruthfulQA {version}: delete it and load again to re-download it")
    items = parse(path.read_bytes(), str(path))
    if verify and len(items) != spec["questions"]:  # (the checksum makes this unreachable; it says what was meant)
        raise DataError(f"{path} holds {len(items)} questions, TruthfulQA {version} has {spec['questions']}")
    return items


def fetch(version, dest):
    """Download one version's file to dest, its SHA-256 checked (a function of its own: inside load, `download` is
    load's flag)."""
    download(url(version), dest, VERSIONS[version]["sha256"], "sha256")
