"""The entry point, the config loader, the run directory, and the training loops.

    python train.py configs/subliminal_mnist.py                  # the main experiment
    python train.py configs/subliminal_mnist.py --n_seeds=2 --epochs=1 --device=cpu   # a quick CPU look

A config file is plain Python assignments. It names its experiment (`experiment = "subliminal_mnist"`),
which is the module `experiments/<experiment>.py`; that module's `Config` dataclass holds every valid
key with its default. `--key=value` overrides are parsed with `ast.literal_eval` (falling back to a
string). Unknown keys and wrong types are errors that list the valid keys.

This file holds no state at import time, so experiments can import the loops from it freely.
"""
import ast
import dataclasses
import datetime
import difflib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import typing
from pathlib import Path

import torch
import torch.nn.functional as F

from data import DataError

ROOT = Path(__file__).resolve().parent


class ConfigError(Exception):
    """A bad config file or command-line override; the message says what to do."""


# ----------------------------------------------------------------------------------------------------
# config loading: file + overrides -> frozen dataclass

def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare words such as --device=cpu


def _check_type(key, value, typ):
    """Return value converted to typ, or raise ConfigError. int -> float is the only coercion."""
    origin = typing.get_origin(typ)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _check_type(key, value, args[0])
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"config key '{key}' must be a {origin.__name__}, got {value!r}")
        args = typing.get_args(typ)
        item_t = args[0] if args else None
        items = [_check_type(key, v, item_t) if item_t not in (None, Ellipsis) else v for v in value]
        return origin(items)
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a dict, got {value!r}")
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise ConfigError(f"config key '{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def build_config(config_cls, values, source="config"):
    """Check `values` (a dict) against the dataclass `config_cls` and return a frozen instance."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}' in {source}.{hint} "
                              f"Valid keys: {', '.join(sorted(fields))}")
    checked = {k: _check_type(k, v, hints[k]) for k, v in values.items()}
    return config_cls(**checked)


def load_config(argv):
    """argv = [config_path, --key=value, ...] -> (experiment module, frozen Config)."""
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: python train.py configs/NAME.py [--key=value ...]")
    path = Path(argv[0])
    if not path.is_file():
        known = ", ".join(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.py")))
        raise ConfigError(f"config file '{path}' not found. Available: {known}")
    values = {}
    exec(compile(path.read_text(), str(path), "exec"), {}, values)  # a fresh dict, never globals()
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    overrides = {}
    for arg in argv[1:]:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"bad argument '{arg}': overrides look like --key=value")
        key, text = arg[2:].split("=", 1)
        overrides[key] = _parse_value(text)
    name = overrides.pop("experiment", values.pop("experiment", None))
    if name is None:
        raise ConfigError(f"{path} must name its experiment, e.g. experiment = \"subliminal_mnist\"")
    try:
        module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"experiments.{name}":
            raise
        known = ", ".join(sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__"))
        raise ConfigError(f"unknown experiment '{name}' in {path}. Known: {known}") from None
    cfg = build_config(module.Config, values, source=str(path))
    cfg = build_config(module.Config, {**values, **overrides}, source="the command line")
    # fill the derived defaults, so that config.json holds what actually ran
    resolved = {}
    if getattr(cfg, "device", None) in ("", "auto"):
        resolved["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if getattr(cfg, "out_dir", None) == "":
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        resolved["out_dir"] = str(Path("out") / path.stem / stamp)
    return module, dataclasses.replace(cfg, **resolved)


# ----------------------------------------------------------------------------------------------------
# the run directory: config.json, env.json, metrics.jsonl, results.json, results.md, figures

def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_json(path, obj):
    """Atomic JSON write: a crash never leaves half a file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


class Run:
    """The output directory of one run. Experiments call `log`, `save_results`, and write figures."""

    def __init__(self, cfg, experiment, argv=None):
        self.cfg = cfg
        self.dir = Path(cfg.out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        old = self.dir / "config.json"
        if old.exists() and getattr(cfg, "resume", False):
            prev = json.loads(old.read_text())
            prev.pop("experiment", None)
            now = json.loads(json.dumps(dataclasses.asdict(cfg)))
            if prev != now:  # resuming under another config would silently mix results
                diff = sorted(k for k in set(prev) | set(now) if prev.get(k) != now.get(k))
                raise ConfigError(f"{self.dir} holds a run with another config (differs in: {', '.join(diff)}): "
                                  f"use a new --out_dir, or --resume=False to overwrite")
        write_json(self.dir / "config.json", {"experiment": experiment, **dataclasses.asdict(cfg)})
        dev = getattr(cfg, "device", "cpu")
        write_json(self.dir / "env.json", {
            "argv": list(argv if argv is not None else sys.argv),
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": __import__("numpy").__version__, "platform": platform.platform(),
            "device": torch.cuda.get_device_name() if str(dev).startswith("cuda") else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        })
        self.metrics_path = self.dir / "metrics.jsonl"

    def log(self, **record):
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def save_results(self, results, table_md):
        write_json(self.dir / "results.json", results)
        (self.dir / "results.md").write_text(table_md + "\n")


# ----------------------------------------------------------------------------------------------------
# checkpoints: NAME.safetensors (weights) + NAME.json (metadata), both written atomically

class CheckpointError(Exception):
    """A missing or incompatible checkpoint; the message says what does not match."""


def save_weights(stem, tensors, meta):
    """Write stem.safetensors and stem.json atomically (temp file + rename)."""
    from safetensors.torch import save_file
    stem = Path(stem)
    tmp = stem.with_name(stem.name + ".safetensors.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, stem.with_name(stem.name + ".safetensors"))
    write_json(stem.with_name(stem.name + ".json"), meta)


def load_weights(stem, device="cpu"):
    """Read stem.safetensors and stem.json -> (tensors, meta)."""
    from safetensors.torch import load_file
    stem = Path(stem)
    w, j = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    if not w.is_file() or not j.is_file():
        raise CheckpointError(f"checkpoint {stem} needs both {w.name} and {j.name}; found "
                              f"{', '.join(p.name for p in (w, j) if p.is_file()) or 'neither'}")
    try:
        tensors = load_file(str(w), device=str(device))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{w} is not a readable safetensors file ({e})") from None
    return tensors, json.loads(j.read_text())


# ----------------------------------------------------------------------------------------------------
# training loops for the seed-batched MLP (subliminal learning on MNIST)
#
# Every loop trains S independent models at once: params are [S, ...] tensors, each seed has its own
# data order, and the loss is the SUM over seeds of each seed's mean loss, so seed s's gradient is
# exactly what it would be alone. Adam is elementwise, so one Adam over the stacked tensors is S Adams.

def seed_permutations(gens, n, device):
    """One random permutation of range(n) per seed, each from that seed's own generator: [S, n]."""
    return torch.stack([torch.randperm(n, generator=g, device=device) for g in gens])


def make_adam(params, lr):
    params = list(params)  # a generator would be used up by the check below
    fused = all(p.is_cuda for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def train_classifier(model, x, y, *, epochs, lr, batch_size, gens, n_classes=10, amp=False, log=None, desc="teacher"):
    """Cross-entropy on the first n_classes logits only (the aux logits get exactly zero gradient).
    x: [N, D] shared by all seeds, y: [N]; each seed walks the data in its own order."""
    opt = make_adam(model.parameters(), lr)
    S, N = model.n_seeds, x.shape[0]
    step, t0 = 0, time.time()
    for epoch in range(epochs):
        order = seed_permutations(gens, N, x.device)  # [S, N]
        for i in range(0, N, batch_size):
            idx = order[:, i:i + batch_size]  # [S, B]
            with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
                logits = model(x[idx])[..., :n_classes]  # [S, B, n_classes]
            loss = F.cross_entropy(logits.float().flatten(0, 1), y[idx].flatten(), reduction="none")
            loss = loss.view(S, -1).mean(1).sum()  # sum over seeds of per-seed means
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if log:
            log(stage=desc, epoch=epoch + 1, step=step, loss=loss.item() / S, seconds=round(time.time() - t0, 3))


def distill_loss(student_logits, teacher_logits, kind, temperature):
    """Per-seed mean loss over the batch: [S, B, k] x [S, B, k] -> [S].
    kl: T^2 * KL(softmax(teacher/T) || softmax(student/T)) (Hinton's scaling keeps gradients
    comparable across T); mse: mean squared error of the raw logits."""
    if kind == "kl":
        t, s = teacher_logits / temperature, student_logits / temperature
        kl = (F.softmax(t, -1) * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum(-1)  # [S, B]
        return kl.mean(1) * temperature ** 2
    if kind == "mse":
        return (student_logits - teacher_logits).pow(2).mean((1, 2))
    raise ValueError(f"unknown distillation loss {kind!r}")


def train_distill(model, inputs, targets, logit_idx, *, epochs, lr, batch_size, gens, loss="kl",
                  temperature=1.0, amp=False, refresh=None, log=None, desc="student"):
    """Distil on a per-seed input set: inputs [S, N, D] (or [N, D] shared), targets [S, N, K] = the
    teacher's logits on those inputs (precomputed: the teacher is frozen, so this is the same as
    running it on every batch). Only the logits in `logit_idx` enter the loss.
    `refresh(epoch)`, if given, returns new (inputs, targets) for each epoch (fresh noise)."""
    opt = make_adam(model.parameters(), lr)
    S = model.n_seeds
    sel = torch.as_tensor(logit_idx, device=targets.device)
    step, t0 = 0, time.time()
    for epoch in range(epochs):
        if refresh is not None and epoch > 0:
            inputs, targets = refresh(epoch)
        N = inputs.shape[-2]
        order = seed_permutations(gens, N, inputs.device)  # [S, N]
        rows = torch.arange(S, device=inputs.device)[:, None]  # [S, 1]
        for i in range(0, N, batch_size):
            idx = order[:, i:i + batch_size]  # [S, B]
            xb = inputs[rows, idx] if inputs.dim() == 3 else inputs[idx]  # [S, B, D]
            tb = targets[rows, idx][..., sel]  # [S, B, k]
            with torch.autocast(xb.device.type, torch.bfloat16, enabled=amp):
                out = model(xb)[..., sel]  # [S, B, k]
            l = distill_loss(out.float(), tb, loss, temperature).sum()
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
            step += 1
        if log:
            log(stage=desc, epoch=epoch + 1, step=step, loss=l.item() / S, seconds=round(time.time() - t0, 3))


# ----------------------------------------------------------------------------------------------------
# entry point

def main(argv):
    try:
        module, cfg = load_config(argv)
        run = Run(cfg, module.__name__.split(".")[-1], argv=[sys.argv[0], *argv])
        module.run(cfg, run)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
