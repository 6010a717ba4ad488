"""The entry point, the config loader, the analysis scripts' helpers, the run directory, and the training loops.

    python train.py configs/subliminal_mnist.py                  # the main experiment
    python train.py configs/subliminal_mnist.py --n_seeds=2 --epochs=1 --device=cpu   # a quick CPU look
    python train.py configs/lm_tiny.py                           # a tiny GPT (the language-model loop), CPU, seconds
    torchrun --standalone --nproc_per_node=2 train.py configs/lm_tiny.py --out_dir=out/lm_ddp   # data parallel

A config file is plain Python assignments. It names its experiment (`experiment = "subliminal_mnist"`),
which is the module `experiments/<experiment>.py`; that module's `Config` dataclass holds every valid
key with its default. `--key=value` overrides are parsed with `ast.literal_eval` (falling back to a
string; a str key takes unquoted text as written: --out_dir=2024 is the folder "2024"). An unknown key is an
error that lists the valid keys, a wrong type one that names the expected type.

This file holds no state at import time (but STARTED, when the process began, and the run configs noted by
run_config), so experiments can import the loops from it freely.
"""
import ast
import concurrent.futures.process
import contextlib
import ctypes
import dataclasses
import datetime
import difflib
import errno
import fnmatch
import hashlib
import importlib
import inspect
import io
import itertools
import json
import math
import numbers
import os
import platform
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import types
import typing
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; two runs into one out_dir are then not refused
    fcntl = None


import commands

if __name__ == "__main__":  # Ctrl-C in the second or two that the imports below take: one line, not a traceback
    commands.starting()

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from data import WRITE_STOPPED, DataError, lock_file, naming, path_problem, write_stopped
from model import GPT, GPTConfig, generator, token_ids, upcast

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
    except (MemoryError, RecursionError):  # nested too deep for Python's parser ("-" * 3000 + "1"): a traceback
        return text  # read as text too, which the key's type then refuses (or a str key takes)


def _check_type(key, value, typ):
    """Return value converted to typ, or raise ConfigError. The coercions: int -> float, and a list or tuple to the
    container type annotated ((1, 2) for a list[int] key is [1, 2])."""
    if value is Ellipsis or isinstance(value, (tuple, list)) and any(v is Ellipsis for v in value):
        # "(42,...,57)" parses as a tuple holding Ellipsis, which a bare `tuple` type would let through
        raise ConfigError(f"config key '{key}': '...' is not a value; write every item out, got {value!r}")
    origin = typing.get_origin(typ) or (typ if typ in (tuple, list) else None)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _check_type(key, value, args[0])
    if origin in (tuple, list):
        args = typing.get_args(typ)
        item_t = args[0] if args else None
        if not isinstance(value, (tuple, list)):  # an example of the key's items, quoted: bash refuses a bare (
            e = {str: "('a', 'b')", float: "(0.5, 1.0)"}.get(item_t, "(3,)" if item_t is int else "(3, 'a')")
            raise ConfigError(f"config key '{key}' must be a {origin.__name__}, got {value!r}: on the command line "
                              f"write it as Python, in quotes, e.g. \"--{key}={e}\"")
        items = [_check_type(key, v, item_t) if item_t not in (None, Ellipsis) else v for v in value]
        return origin(items)
    if origin is dict or typ is dict:
        if not isinstance(value, dict):  # as for tuples: how to write one (--sweep=m=3 was refused, and no more)
            raise ConfigError(f"config key '{key}' must be a dict, got {value!r}: on the command line write it as "
                              f"Python, e.g. \"--{key}={{'a': 1, 'b': [2, 3]}}\"")
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2 ** 1024 else math.inf  # (float() of a larger int: an OverflowError)
    # 1e999 parses as inf (NaN weights), and "nan" or "-inf" arrive as text (float() reads them, literal_eval does
    # not: "must be float, got str 'nan'" hid why); past float32's range (the computations' dtype), a traceback deep
    # in torch
    if typ is float and isinstance(value, (float, str)):
        try:
            number = float(value)
        except ValueError:  # text that spells no number: the type check below refuses it
            number = 0.0
        if not abs(number) <= torch.finfo(torch.float32).max:
            raise ConfigError(f"config key '{key}' must be a finite number within float32's range, got {value!r}")
    bool_as_int = typ is int and isinstance(value, bool)  # True is an int to isinstance, but not a count
    if bool_as_int or not isinstance(value, typ):
        how = " (write True or False)" if typ is bool else ""
        raise ConfigError(f"config key '{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}{how}")
    return value


def build_config(config_cls, values, source="config"):
    """Check `values` (a dict) against the dataclass `config_cls` and return a frozen instance. `source` says where
    the values came from in an error: a Path (a config file, a run's config.json) is named in every error, a
    description (the command line, the sweep) only in an unknown key's."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    for key in values:
        if key not in fields:
            # (and in lower case: --N_SEEDS got no suggestion)
            close = difflib.get_close_matches(key, fields, n=1) or difflib.get_close_matches(key.lower(), fields, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{key}' in {source}.{hint} "
                              f"Valid keys: {', '.join(sorted(fields))}")
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _check_type(key, value, hints[key])
        except ConfigError as e:  # a config file's wrong type names the file, as its unknown key does
            raise ConfigError(f"{e} (in {source})" if isinstance(source, Path) else str(e)) from None
    return config_cls(**checked)


def run_config(config_cls, run_dir):
    """The config a run directory was made with (its config.json; JSON lists back to tuples), checked by its
    experiment's `validate` as a run's is: a key deleted by hand reads at its default, which may not fit the others
    (eval.py then failed deep inside). A config.json with every key that only a check added since refuses is read as
    it is, with a note on stderr."""
    name = config_cls.__module__.split(".")[-1]  # experiments.NAME.Config reads NAME's runs
    # a Config of the project's experiments (not one defined elsewhere, e.g. a test's): its runs must be NAME's
    is_experiment = (ROOT / "experiments" / f"{name}.py").is_file()
    values = run_dir_config(run_dir, name if is_experiment else None)
    values.pop("experiment")
    path = Path(run_dir) / "config.json"
    cfg = build_config(config_cls, {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, path)
    if validate := is_experiment and getattr(importlib.import_module(f"experiments.{name}"), "validate", None):
        try:
            validate(cfg)
        except ConfigError as e:
            # a config.json holding every key is as a run wrote it: a check added since (evals <= a student's steps)
            # must not lock that run out of eval.py and the scripts, which read it as it ran. A key it lacks reads at
            # its default, which may not be the run's: refused, naming the keys
            if missing := [f.name for f in dataclasses.fields(config_cls) if f.name not in values]:
                raise ConfigError(f"{path} is not a config this experiment runs ({e}): is it as the run wrote it? "
                                  f"({', '.join(missing)} missing from it, read at the default: add the run's "
                                  f"value)") from None
            if str(path) not in _NOTED_CONFIGS:  # once per run and process (a script reads a run more than once)
                _NOTED_CONFIGS.add(str(path))
                print(f"note: {path} would not pass this version's checks ({e}); read as the run wrote it",
                      file=sys.stderr)
    return cfg


_NOTED_CONFIGS = set()  # the run configs read back despite a check added since they ran


def utf8(path):
    """Whether `path` is UTF-8 text: a name with other bytes (from an older system's encoding) is a str with
    surrogate escapes, which safetensors, opening only UTF-8 paths, refuses ("is not valid UTF-8")."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def run_dir_config(run_dir, experiment=None):
    """The config.json of a run directory as a dict (its experiment included), or a ConfigError that says what the
    directory is instead: not a run, a damaged one, or (with `experiment`) a run of another experiment."""
    path = Path(run_dir) / "config.json"
    if why := path_problem(run_dir):
        raise ConfigError(f"{run_dir}: {why}: pass the directory of a run made by train.py (its out_dir)")
    if not utf8(run_dir):
        raise ConfigError(f"{str(run_dir)!r} has bytes that are not UTF-8: the checkpoints' library opens only UTF-8 "
                          f"paths: rename the folder (or a folder above it)")
    if not Path(run_dir).is_dir():  # a mistyped path, or a run's file (its config.json, results.json) given instead
        what = f"{run_dir} is a file, not a directory" if Path(run_dir).exists() else f"{run_dir}: no such directory"
        raise ConfigError(f"{what}: pass the directory of a run made by train.py (its out_dir)")
    if not path.is_file():
        # a config's folder of runs (out/<config name>/, holding <UTC time>/ folders): the runs in it, latest last
        runs = sorted(str(p.parent) for p in Path(run_dir).glob("*/config.json"))
        inside = f" (runs inside it: {', '.join(runs[-3:])}{' ...' if len(runs) > 3 else ''})" if runs else ""
        raise ConfigError(f"{path} not found: pass the directory of a run made by train.py (its out_dir){inside}")
    values = read_run_config(path)
    if experiment is not None and values["experiment"] != experiment:
        raise ConfigError(f"{run_dir} is a run of {values['experiment']}, not of {experiment}: pass a run of "
                          f"{experiment}")
    return values


# config keys that say where a run reads and writes, not what it computes (its data is checked against the published
# checksums, its bases are named by their config's hash): a run moved, or given the same data or cache by another
# path ("./data", the absolute one the loader's hint names), is the same run, and resumes
WHERE_KEYS = ("out_dir", "data_dir", "cache_dir", "download")
# config keys that change no model of a run: where it reads and writes, how many workers, which arms it trained, how
# often it evaluated along the way
NOT_MODELS = ("experiment", *WHERE_KEYS, "workers", "resume", "arms", "evals")


def config_defaults(config_cls, absent_from=()):
    """{key: default} of a Config's keys with a plain default, less those in `absent_from`: what a run made before a
    key existed ran with (a new key's default is the old behaviour), for reading its config.json beside newer ones."""
    return {f.name: f.default for f in dataclasses.fields(config_cls)
            if f.name not in absent_from and f.default is not dataclasses.MISSING}


def configs_differ(runs, ignore=NOT_MODELS):
    """The keys (sorted) in which the runs' config.json files differ, leaving out `ignore`. A key a run's config.json
    lacks (added to its experiment since the run) counts at its default, as a resumed run reads it: a run made before
    a key existed ran with the default (else every older run "differed" from a newer one in each key added since)."""
    values = [run_dir_config(r) for r in runs]
    for v in values:
        try:
            config_cls = importlib.import_module(f"experiments.{v['experiment']}").Config
        except (ImportError, AttributeError):  # an experiment this code does not have: its keys as written
            continue
        v.update(config_defaults(config_cls, absent_from=v))
    return sorted(k for k in set().union(*values) if k not in ignore
                  and len({json.dumps(v.get(k), sort_keys=True) for v in values}) > 1)


def read_run_config(path):
    """A run's config.json as a dict, or a ConfigError that says it is damaged (it is written atomically, so
    a damaged one was cut or edited by something else)."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not readable JSON ({e}): the run directory is damaged; rerun its command "
                          f"with a new --out_dir (or put back a copy of that file to resume the run's finished "
                          f"parts, or delete it and rerun with --resume=False to clear the folder)") from None
    if not isinstance(values, dict) or not isinstance(values.get("experiment"), str):
        raise ConfigError(f"{path} does not name its experiment: it was not written by train.py")
    return values


USAGE = ("python train.py configs/NAME.py [--key=value ...]: runs the config's experiment; any key of the config "
         "can be overridden, and a wrong key lists the valid ones.")


def config_files():
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.py"))


def available_configs():
    return ", ".join(config_files())


def load_config(argv, resolve=True):
    """argv = [config_path, --key=value, ...] -> (experiment module, frozen Config); with `resolve`, "auto" devices
    and an empty out_dir are filled in as the run will use them."""
    if not argv or argv[0].startswith("--"):
        raise ConfigError(f"usage: {USAGE} Available: {available_configs()}")
    path = Path(argv[0])
    if why := path_problem(path):  # (a name too long: is_dir's OSError)
        raise ConfigError(f"config file '{path}': {why}: name a config file, e.g. configs/subliminal_mnist.py")
    if path.is_dir():
        raise ConfigError(f"'{path}' is a folder: name a config file, e.g. configs/subliminal_mnist.py. Available: "
                          f"{available_configs()}")
    if not path.is_file():
        # "subliminal_mnist", "configs/subliminal_mnist" or a typo: the config meant, when one is near
        # by the names alone: with "configs/" and ".py" in both, any short name was near any other (nope -> coin)
        stems = {Path(f).stem: f for f in config_files()}
        close = difflib.get_close_matches(path.stem, stems, n=1, cutoff=0.8)
        hint = f" Did you mean {stems[close[0]]}?" if close else ""
        raise ConfigError(f"config file '{path}' not found.{hint} Available: {available_configs()}")

    # the config file's assignments, then the command line's overrides
    values = {}
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), {}, values)  # a fresh dict, never globals()
    except Exception as e:  # a config is plain assignments: anything else is the file's fault, not ours
        what = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else f"{type(e).__name__}: {e}"
        raise ConfigError(f"{path} is not a config file Python can run ({what}). A config holds plain assignments, "
                          f"e.g. experiment = \"subliminal_mnist\"; see configs/") from None
    # keys are the plain names: _private ones and modules the file imports (import math) are not settings
    values = {k: v for k, v in values.items() if not k.startswith("_") and not isinstance(v, types.ModuleType)}
    overrides, raw = {}, {}  # --key=value: the value parsed, and its text as typed (a str key takes the text)
    for i, arg in enumerate(argv[1:], 1):
        if not arg.startswith("--") or "=" not in arg:
            # the likely meaning: --key value (a space for the =), or a switch --key
            nxt = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            hint = ("" if not arg.startswith("--") else  # (an --arg here has no "=")
                    f" (here '--{arg[2:]}={nxt}', in quotes if it holds brackets)" if nxt is not None else
                    f" (--{arg[2:]}=VALUE; a switch is written --{arg[2:]}=True)")
            raise ConfigError(f"bad argument '{arg}': overrides look like --key=value{hint}")
        key, text = arg[2:].split("=", 1)
        overrides[key], raw[key] = _parse_value(text), text

    # the experiment they name: its module, with a Config and a run
    name = overrides.pop("experiment", values.pop("experiment", None))
    if name is None:
        raise ConfigError(f"{path} must name its experiment, e.g. experiment = \"subliminal_mnist\"")
    # (the experiments folder is read for an error's message only, not on every load)
    known = lambda: ", ".join(sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__"))
    # a module's name, not a path or a package ("../train", "__init__": tracebacks of importlib, or of a module
    # without Config)
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ConfigError(f"experiment {name!r} in {path} is not an experiment's name. Known: {known()}")
    try:
        module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"experiments.{name}":
            raise
        raise ConfigError(f"unknown experiment '{name}' in {path}. Known: {known()}") from None
    # which part is missing, by name (one message for both left the author to guess which)
    missing = [part for part, attr in (("Config", "Config"), ("run(cfg, run)", "run")) if not hasattr(module, attr)]
    if missing:
        raise ConfigError(f"experiments/{name}.py has no {' and no '.join(missing)}: not an experiment (README, "
                          f"\"Adding an experiment\")")
    # a Config that is not a dataclass, or a key without a default, was a TypeError from deep in build_config
    if not dataclasses.is_dataclass(module.Config):
        what = "is not a dataclass"
    else:
        no_default = [f.name for f in dataclasses.fields(module.Config)
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        what = f"has keys without a default ({', '.join(no_default)})" if no_default else None
    if what:
        raise ConfigError(f"experiments/{name}.py: its Config {what}: every key needs a type and a default (README, "
                          f"\"Adding an experiment\")")
    # checked before the keys: with --out_dir given, the error was "unknown config key 'out_dir'", which hid the reason
    if "out_dir" not in {f.name for f in dataclasses.fields(module.Config)}:  # Run writes the run there
        raise ConfigError(f"experiments/{name}.py: its Config has no out_dir, which every experiment needs "
                          f"(out_dir: str = \"\")")

    # the keys checked against the Config: the file's alone, then with the overrides
    build_config(module.Config, values, source=path)  # checked alone first: an error here names the config file
    hints = typing.get_type_hints(module.Config)
    for k, text in raw.items():  # a str key takes the text as written: --out_dir=2024 is the folder "2024"
        if hints.get(k) is str and text[:1] not in "'\"":
            overrides[k] = text
        # the shell expands ~ only at the start of a word, not after --out_dir=: the run went to a folder named "~"
        # under the current one (and said "~/..."); a folder key's ~ is expanded here as the shell would have
        if k.endswith("_dir") and isinstance(overrides[k], str) and overrides[k].startswith("~"):
            overrides[k] = os.path.expanduser(overrides[k])
        if k.endswith("_dir") and isinstance(overrides[k], str) and not utf8(overrides[k]):
            raise ConfigError(f"--{k}={overrides[k]!r} has bytes that are not UTF-8: the checkpoints' library opens "
                              f"only UTF-8 paths (a resume retrained what it could not read): pass another --{k}")
    cfg = build_config(module.Config, {**values, **overrides}, source="the command line")
    if not resolve:
        return module, cfg
    # fill the derived defaults, so that config.json holds what actually ran
    resolved = {}
    if isinstance(getattr(cfg, "device", None), str):
        resolved["device"] = resolve_device(cfg.device)
    if getattr(cfg, "out_dir", None) == "":
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        resolved["out_dir"] = str(Path("out") / path.stem / stamp)
    return module, dataclasses.replace(cfg, **resolved)


def resolve_device(name):
    """The device a run uses: "" or "auto" is a GPU when there is one, else the CPU; any other name is checked."""
    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(name)
    # "cpu:0" is the CPU: recorded as "cpu", so that the same run resumed without --device is the same config
    return "cpu" if torch.device(name).type == "cpu" else name


def check_device(name):
    """A clear ConfigError for a device this machine cannot use (instead of a trace from CUDA's lazy init)."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device '{name}' is not a torch device: use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type not in ("cpu", "cuda", "mps"):  # torch's other kinds (meta, xpu, ...): tracebacks deep in a run
        raise ConfigError(f"device '{name}' is not one this project runs on (cpu, cuda, cuda:N, mps or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but this torch has no usable CUDA "
                          f"(torch {torch.__version__}): use --device=cpu, or --device=auto to take a GPU "
                          "when there is one")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{name}' asked for, but MPS is not available here: use --device=cpu")


# ----------------------------------------------------------------------------------------------------
# the analysis scripts' command line and inputs (scripts/*.py read finished runs with these)

def check_out(path, option="--out", figure=False, figure_beside=False):
    """An analysis script's --out FILE (or its `option` of another name), checked before its work (minutes) rather
    than when it writes: a one-line ConfigError unless the file's folder exists, this user may write in it, and the
    path is not a folder, nor in the project's own folders (figures/ aside), nor an existing file of its root but a run
    output's name; with `figure`, unless its extension is one matplotlib writes (a figure saved as .txt was a traceback
    after the work); with `figure_beside`, unless it is a FILE.json, the script's figure going beside it as FILE.png (a
    FILE.png given was overwritten by that figure)."""
    if figure_beside and Path(path).suffix != ".json":
        raise ConfigError(f"{option}={path}: give a FILE.json (its figure is written beside it, as FILE.png)")
    if path and (why := path_problem(path)):  # (a name too long: is_dir's OSError)
        raise ConfigError(f"{option} {path}: {why}: give another file")
    if not (path and Path(path).parent.is_dir()):
        raise ConfigError(f"{option} needs a file in an existing directory, not {str(path)!r}")
    if Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a directory: give a file name in it")
    if not os.access(Path(path).parent, os.W_OK | os.X_OK):  # (else a permission error after the work)
        raise ConfigError(f"{option} {path}: this user may not write in {Path(path).parent}: give a file in a folder "
                          f"of yours (e.g. under out/)")
    # the project's code and docs are never overwritten (figures/ takes the README's figures); in its root, only a
    # new file or one named like a run's output
    place = project_place(Path(path).parent, allowed=("figures",))  # (FOLDER,), () for the root, None: elsewhere
    in_own_folder = bool(place)
    over_root_file = (place == () and Path(path).exists()
                      and not any(fnmatch.fnmatch(Path(path).name, p) for p in RUN_OUTPUTS))
    if in_own_folder or over_root_file:
        where = f"in the project's folder {place[0]}/" if place else "a file of the project itself"
        raise ConfigError(f"{option} {path} is {where}: write it under out/ (or figures/, or outside the project)")
    if Path(path).exists() and project_place(Path(path).parent) == ("figures",):  # (a README figure, silently)
        print(f"note: {option} {path} exists (figures/ holds the README's figures): it will be replaced",
              file=sys.stderr)
    # a run's own files (its config.json overwritten, the run could no longer be read), or its units
    folder = Path(path).parent
    run_dir = folder.parent if folder.name in RUN_SUBFOLDERS else folder
    if written_by_a_run(run_dir / "env.json") and (folder != run_dir or
                                                   any(fnmatch.fnmatch(Path(path).name, p) for p in RUN_OWN)):
        raise ConfigError(f"{option} {path} is a file of the run in {run_dir}: give the script's output another name")
    if figure:
        from matplotlib.backend_bases import FigureCanvasBase
        kinds = FigureCanvasBase.get_supported_filetypes()
        if Path(path).suffix[1:].lower() not in kinds:
            raise ConfigError(f"{option} {path}: a figure needs an extension matplotlib writes "
                              f"({', '.join(sorted(kinds))})")


def read_json(path, what, keys=()):
    """A JSON file an analysis script reads (`what` names it, e.g. "an --out file of em_bos_vector.py"), or a
    ConfigError in one line: missing, a folder, not readable JSON, or (with `keys`) not an object holding them."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} {'is a directory' if path.is_dir() else 'not found'}: expected {what}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not readable JSON ({e}): expected {what} (delete a damaged one and rerun the "
                          f"script that writes it)") from None
    if keys and not (isinstance(obj, dict) and all(k in obj for k in keys)):
        raise ConfigError(f"{path} is not {what}: it lacks "
                          f"{', '.join(k for k in keys if not isinstance(obj, dict) or k not in obj)}")
    return obj


def seed_args(args):
    """Seeds given as a script's positional arguments -> ints, or a ConfigError naming the one that is not (int() said
    only "invalid literal", in a traceback)."""
    bad = [a for a in args if not a.isdecimal()]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not a base seed (a whole number >= 0)")
    seeds = [int(a) for a in args]
    if twice := sorted({s for s in seeds if seeds.count(s) > 1}):  # it counted twice in the probes' means
        raise ConfigError(f"base seed {twice[0]} is given twice: give each once")
    return seeds


def distinct(paths, what="run"):
    """`paths` as given, each once, or a ConfigError: a run (or file) given twice, also under another spelling of its
    path, would count its seeds twice and narrow an interval with nothing new."""
    seen = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            also = "" if str(seen[key]) == str(p) else f" (as {seen[key]} and {p})"
            raise ConfigError(f"{seen[key]} is given twice{also}: give each {what} once")
        seen[key] = p
    return paths


def same_runs(a, b):
    """Whether two lists of run paths name the same runs in the same order: out/a, out/a/ and /abs/out/a are one run
    (a file's runs, as typed when it was written, against the runs given now)."""
    return [Path(r).resolve() for r in a] == [Path(r).resolve() for r in b]


def run_and_rest(spec):
    """A script's RUN:REST argument (sn_compare.py's RUN:ARM@STEP, sn_arms_figure.py's RUN:ARM=LABEL) -> (RUN, REST):
    RUN is the longest part before a ":" that is a folder, since a folder's name may hold ":" too (and REST, a
    label, may); with none a folder, the part before the first ":" (which the script then says is no run)."""
    cuts = [i for i, c in enumerate(spec) if c == ":"]
    at = next((i for i in reversed(cuts) if os.path.isdir(spec[:i])), cuts[0] if cuts else len(spec))
    return spec[:at], spec[at + 1:]


def script_args(argv, usage, options=(), flags=(), words=()):
    """An analysis script's command line -> (its positional words, {option: value}). `options` take a value
    (--out=FILE), `flags` none (--pool: True when given), `words` are bare markers kept in place among the positional
    words (--minus, --). --help prints `usage` and exits; an unknown option (the error lists the options), one given
    twice, a value missing or given to a flag is a one-line ConfigError, before any work: a mistyped option read as a
    run directory, or the first of two --out= kept silently, cost runs of minutes."""
    names = [f"--{o}=" for o in options] + [f"--{f}" for f in flags] + [w if w != "--" else "the separator --"
                                                                            for w in words]  # (not an option)
    listed = ("the options are " + ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1
              else f"the option is {names[0]}" if names else "it takes no options")
    positional, given = [], {}
    for a in argv:
        if a in words or not a.startswith("-") or a[1:2].isdigit():  # -1: a (negative) number, not an option
            positional.append(a)
            continue
        key, eq, value = a[2:].partition("=")
        if a in ("-h", "--help"):  # asked for: on stdout, exit status 0 (as train.py --help)
            print(usage.strip())
            sys.exit(0)
        if f"--{key}" in words:  # a marker written as an option (--minus=RUN): it takes the words after it
            raise ConfigError(f"--{key} stands alone, the runs after it as separate words (--{key} RUN ...), not {a}")
        if not a.startswith("--") or key not in options and key not in flags:
            raise ConfigError(f"unknown option {a}; {listed}")
        if key in given:
            raise ConfigError(f"--{key} is given more than once: give it once")
        if key in flags and eq:
            raise ConfigError(f"--{key} takes no value: {a}")
        if key in options and not value:
            raise ConfigError(f"--{key} needs a value: --{key}=...")
        given[key] = value if key in options else True
    return positional, given


def script_run(argv, usage, **kw):
    """script_args for a script of one RUN_DIR: (the run, {option: value}); none or several runs: exits."""
    runs, opts = script_args(argv, usage, **kw)
    if len(runs) != 1:
        sys.exit(usage if not runs else f"one RUN_DIR, not {len(runs)}: {' '.join(runs)}")
    return runs[0], opts


def probe_words(argv, usage, value=None):
    """The command line of a probe of positional words only -> argv as it is. -h/--help first prints `usage` and
    exits; an option first (a word starting with "-" that the regex `value` does not match: a negative number is a
    value) is a ConfigError, the usage below its line. The words after the first are the probe's own to check."""
    if argv[:1] in (["-h"], ["--help"]):
        print(usage.strip())
        sys.exit(0)
    if argv[:1] and argv[0].startswith("-") and not (value and re.fullmatch(value, argv[0])):
        raise ConfigError(f"{argv[0]}: this probe takes no options, only the words below\n\n{usage.strip()}")
    return argv


def run_results(run_dir, experiment):
    """The results.json of a finished run of `experiment` (what the analysis scripts read), or a ConfigError that
    says what the directory is instead (run_dir_config's cases, or a run that has not finished)."""
    run_dir = Path(run_dir)
    run_dir_config(run_dir, experiment)
    not_being_written(run_dir)
    if not (run_dir / "results.json").is_file():
        raise ConfigError(f"{run_dir / 'results.json'} not found: the run has not finished (its command, run again, "
                          f"finishes it)")
    res = read_results(run_dir / "results.json")
    # the keys every results.json of the experiment has (its module's RESULT_KEYS): one without them (edited, or
    # written by an older version) would fail deep inside the script that reads it
    keys = getattr(importlib.import_module(f"experiments.{experiment}"), "RESULT_KEYS", ())
    if missing := [k for k in keys if k not in res]:
        raise ConfigError(f"{run_dir / 'results.json'} lacks {', '.join(missing)}: not the results of a finished "
                          f"{experiment} run as this version writes them; `python eval.py {run_dir}` writes them "
                          f"again from the run's saved units")
    return res


def read_results(path):
    """A run's results.json as a dict, or a ConfigError that says it is damaged and how to write it again."""
    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        res = e
    if not isinstance(res, dict):  # written atomically: a damaged one was cut or edited by something else
        why = res if isinstance(res, Exception) else "not a JSON object"
        raise ConfigError(f"{path} is not a readable results file ({why}): "
                          f"rerun the run's command (env.json's argv) with the same --out_dir, which reuses its "
                          f"finished units and writes it again")
    return res


# ----------------------------------------------------------------------------------------------------
# the run directory: config.json, env.json, metrics.jsonl, results.json, results.md, figures

def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_changed(porcelain):
    """Whether `git status --porcelain` shows a change to the code: tracked files, or an untracked .py file (a
    scratch note or figure beside the project is not a change of what ran)."""
    return any(not line.startswith("??") or line.rstrip('"').endswith(".py") for line in porcelain.splitlines())


def provenance():
    """The code and CPU a result comes from: the commit (and uncommitted changes), and the CPU kind, whose kernels
    set the last digits of float results."""
    status = _git("status", "--porcelain", "--untracked-files=all")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": code_changed(status),
            "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _code_and_machine(env):
    """'commit 1a2b3c4d5 (with uncommitted changes) on CPU (AVX2)[ and GPU]' from an env.json's provenance."""
    commit = (env.get("git_commit") or "unknown")[:9]
    card = env.get("device")
    return (f"commit {commit}{' (with uncommitted changes)' if env.get('git_dirty') else ''} on "
            f"{env.get('cpu') or 'an unknown CPU'} ({env.get('cpu_capability') or '?'})"
            f"{f' and {card}' if card and card != 'cpu' else ''}")


def rewrite_results(run_dir, res, table, timed=False):
    """`python eval.py` on a finished run whose units were aggregated again with today's code: writes `res` (with
    the run's own `seconds` kept) to results.json and table(res) to results.md, and one line to reaggregated.jsonl
    (when, the code and CPU, whether results.json changed), since env.json still names the commit that ran the
    units. `timed`: the experiment's results.json has `seconds` (a damaged one's are then written as null, unknown).
    -> (res, the table, the two files written)."""
    run_dir = Path(run_dir)
    saved, md_path = run_dir / "results.json", run_dir / "results.md"
    before = saved.read_bytes()
    try:  # a damaged file is rewritten from the units, but its wall time is then lost
        kept = read_results(saved)
        # a run that recorded no `seconds` (the README's example experiment) gets none: a null added here read as
        # a change of results.json in reaggregated.jsonl when no number had changed
        kept = {"seconds": kept["seconds"]} if "seconds" in kept else {}
    except ConfigError as e:
        print(f"{e}\n(rewritten from the units instead{'; its seconds are unknown' if timed else ''})")
        kept = {"seconds": None} if timed else {}
    res = {**res, **kept}
    md = table(res)
    write_json(saved, res)
    write_text(md_path, md + "\n")
    record = {"utc": datetime.datetime.now(datetime.timezone.utc).isoformat(), **provenance(),
              "results_changed": saved.read_bytes() != before}
    append_line(run_dir / "reaggregated.jsonl", json.dumps(record))
    return res, md, [saved, md_path]


def write_partial(run_dir, res, md):
    """`python eval.py` on a run still going: what its finished part gives, in results_partial.json / .md (beside
    the finished run's files, never over them). -> the two files written."""
    wrote = [Path(run_dir) / "results_partial.json", Path(run_dir) / "results_partial.md"]
    write_json(wrote[0], res)
    write_text(wrote[1], md + "\n")
    return wrote


def cpu_name():
    """The CPU model as the OS names it: CPU float results depend on its kernels (AVX2 vs AVX-512), so a run
    reproduces to the last digit only on the same kind of CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pyplot():
    """matplotlib.pyplot, on the Agg backend unless the process chose one: figures go to files, so no display is
    needed (a server, a job). Imported on first use: a run that draws nothing does not pay for it. A process that
    chose its backend already (pyplot imported, or MPLBACKEND set, as a notebook's kernel does) keeps it: savefig
    writes files under any backend, and Agg in its place would stop the notebook's own figures showing."""
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


class _WriteErrorKept(io.BufferedWriter):
    """A file that keeps the OSError of its failed write: torch.save's writer says every one as a RuntimeError of its
    own ("unexpected pos ...", even through a Python file), a full disk, a quota or a file size limit alike."""
    error = None

    def write(self, data):
        try:
            return super().write(data)
        except OSError as e:
            self.error = e
            raise


def torch_save(obj, path):
    """torch.save(obj, path), a failed write raised as the OSError it was (said by cli in one line), not torch's
    RuntimeError."""
    f = _WriteErrorKept(io.FileIO(path, "w"))
    try:
        torch.save(obj, f)
        f.close()  # (the buffer's last bytes: a failure here is the OSError itself)
    except RuntimeError:
        if f.error is None:  # not the file's: a pickling error, torch's own
            raise
        raise f.error from None
    finally:
        with contextlib.suppress(OSError):  # after a failed write, its unwritten rest: the write's error says it
            f.close()


def atomic_write(path, write):
    """write(tmp) fills a temporary file beside `path`, which then replaces `path` in one rename: a crash never
    leaves half a file behind, and a failed write no temporary one (a kill before the rename leaves it: cut_short)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: DDP ranks write the same files at once
    try:
        try:
            write(tmp)
            # on the disk before the rename: after a power cut the file system may keep the rename and not the data,
            # an empty file under the name (a checkpoint or unit a resume then refuses). About 0.5 ms a file here
            # (a handle open for writing: Windows' fsync, _commit, refuses a read-only one, EBADF; a file system that
            # cannot sync, EINVAL/ENOTSUP, e.g. some FUSE or network mounts, keeps the write without it)
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
            finally:
                os.close(fd)
        except OSError as e:
            # a full disk (a quota, a size limit, a read-only disk), said as cli's one line naming the file: a write's
            # or fsync's own error names none, and one opening the temporary file names that
            if not write_stopped(e) or (e.filename is not None and os.fspath(e.filename) != os.fspath(tmp)):
                raise
            raise naming(e, path) from e
        os.replace(tmp, path)
    finally:
        # only still there if the write failed. A read-only disk says EROFS even for a file that is not there: the
        # write's own error is the one to raise
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def cut_short(file):
    """Whether `file` is atomic_write's temporary NAME.PID.tmp, left by a kill before its rename: never read."""
    return re.fullmatch(r".+\.\d+\.tmp", Path(file).name) is not None


STARTED = time.time()  # about when this process began: a file older than it is no write of this command's


def remove_cut_short(folder, pattern="*.tmp", before=None):
    """Delete the temporary files (cut_short) that commands killed mid-write left in `folder` (a model's weights can
    be large; not in its subfolders: the caller names a run's own, RUN_SUBFOLDERS) -> how many. Called only where this
    process holds the folder's lock, so that a file older than this process (or than `before`: the time the lock was
    taken, by one that waited for it) is no other command's write still going."""
    before = STARTED if before is None else before
    gone = [f for f in Path(folder).glob(pattern) if cut_short(f) and f.is_file() and f.stat().st_mtime < before]
    for f in gone:
        f.unlink(missing_ok=True)
    return len(gone)


def save_figure(fig, path, dpi=150):
    """fig as an image at `path` (its format from the suffix, png without one), written as atomic_write writes, then
    closed in pyplot, saved or not: callers (tests, notebooks) draw many figures in one process, and pyplot keeps
    every open one (the Figure object stays readable)."""
    fmt = Path(path).suffix[1:].lower() or "png"  # (the temporary file's own suffix is .tmp)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    finally:  # (a failed save too: Ctrl-C, a full disk; a notebook that retries would pile figures up)
        pyplot().close(fig)


def json_text(obj):
    """The text write_json writes (save_weights hashes it before writing it)."""
    return json.dumps(obj, indent=2) + "\n"


def write_json(path, obj):
    write_text(path, json_text(obj))


def write_text(path, text):
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def append_line(path, text):
    """Append one line to a log (metrics.jsonl and the like: a line cut short by a kill is passed over when read).
    A full disk's ENOSPC (a quota's) from the write names no file; raised naming this one, as atomic_write does."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as e:
        if not write_stopped(e) or e.filename:
            raise
        raise naming(e, path) from e


# what a run and the analysis scripts write in a run's folder (every experiment's; the scripts' json and figures
# beside it are derived from the run): what --resume=False removes there before it recomputes
RUN_OUTPUTS = ("*.json", "*.jsonl", "*.png", "*.safetensors", "*.state.pt", "results*.md", "*.tmp")
# a run's folder for its units (the oracle's): its files are the run's outputs too (--resume=False left them, and the
# next rerun resumed the old config's units under the new config)
RUN_SUBFOLDERS = ("units",)
# the files a run itself writes (and reads back: its units, checkpoints, records), by name: an analysis script's --out
# never takes their place (a unit overwritten, the run could no longer be read or resumed). Its figures too (a test
# checks every experiment's names against the list)
RUN_OWN = ("config.json", "env.json", "env_earlier.jsonl", "metrics.jsonl", "reaggregated.jsonl", "results.json",
           "results.md", "results_partial.json", "results_partial.md", "unit_*.json", "*.safetensors", "*.state.pt",
           "tokenizer.json", "*_group*.json", "accuracy.png", "sweep.png", "loss.png", "misalignment_vs_step*.png",
           "activation_oracle*.png", "subliminal_*.png", "persona_inference.png")
# the project's own folders (its code, docs, figures and data cache): a run is never written into them, nor into the
# project's root, where its files would mix with the project's (a test checks the list against git's)
PROJECT_FOLDERS = (".ci", "configs", "data", "docs", "experiments", "figures", "scripts", "tests")


def project_place(path, allowed=()):
    """() if the folder `path` is the project's root, (FOLDER,) if it lies in one of the project's own folders
    (PROJECT_FOLDERS and git's .git, but `allowed`), else None. The path as written and its target through symlinks
    both count: `data/mnist` links out of the project (a run written there would land in the shared dataset), and a
    link elsewhere may point into it. So does the target of a link in data/, however it is named (("data",))."""
    for p in (Path(os.path.abspath(path)), Path(path).resolve()):
        for root in (ROOT, Path(os.path.abspath(Path(__file__).parent))):
            part = p.relative_to(root).parts[:1] if p.is_relative_to(root) else None
            if part == () or (part and part[0] in (*PROJECT_FOLDERS, ".git") and part[0] not in allowed):
                return part
    # the datasets the data cache links to (data/mnist -> a shared copy), named by their own path
    if "data" not in allowed and (ROOT / "data").is_dir():
        linked = [d.resolve() for d in (ROOT / "data").iterdir() if d.is_symlink() and d.exists()]
        if any(Path(path).resolve().is_relative_to(d) for d in linked):
            return ("data",)
    return None


def written_by_a_run(env):
    """Whether the file `env` is the env.json a Run wrote (and not some other tool's file of that name)."""
    try:
        return {"argv", "started_utc"} <= set(json.loads(env.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):  # missing, a folder, not JSON, or JSON that is not an object
        return False


# how many cores a run uses (torch threads; processes of one thread each), not what it computes: a rerun may resume
# with other values, and the numbers it then computes may differ in the last digits (float sums in another order)
CORE_KEYS = ("threads", "workers")


class Run:
    """The output directory of one run. Experiments call `log`, `save_results`, and write figures.

    Made on a folder that holds a run: it must be a run of the same experiment, or ConfigError (also with
    resume=False: another experiment's run is never deleted); with resume=False, that run's outputs (RUN_OUTPUTS) are
    deleted first; else it must also have the same config (but out_dir, resume, ckpt_every and CORE_KEYS).
    Then config.json and env.json are written (a resumed run's earlier env.json appended to env_earlier.jsonl). Run
    reuses nothing itself: which units or checkpoints to reuse is the experiment's decision."""

    def __init__(self, cfg, experiment, argv=None):
        self.cfg = cfg
        self.dir = Path(cfg.out_dir)
        config_path = self.dir / "config.json"  # the earlier run's, if any (this run's is written below)
        if why := path_problem(config_path):
            raise ConfigError(f"out_dir {self.dir}: {why}: pass another --out_dir")
        rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone removes and writes the run's files
        resume = getattr(cfg, "resume", None)
        outputs = lambda: sorted({f for d in (self.dir, *(self.dir / n for n in RUN_SUBFOLDERS))
                                  for pattern in RUN_OUTPUTS for f in d.glob(pattern) if f.is_file()})
        real_dir = self.dir.resolve()  # (through a symlink: the files written or removed are the target's)
        inside = project_place(self.dir)
        if rank0 and inside is not None:
            what = "the project root" if inside == () else f"in the project's folder {inside[0]}/"
            raise ConfigError(f"out_dir {self.dir} is {what}, where a run's files would mix with the project's: give "
                              f"runs their own --out_dir (a folder under out/, or outside the project)")
        had_config = config_path.exists()  # looked up once: rank 0 may write it meanwhile, and the checks must agree
        recounted = []  # the CORE_KEYS a resumed run changes (said where env.json is read, with the thread count's)

        # 1. what the folder already holds: a run's outputs without its config.json, or another experiment's run
        # a run's files without its config.json (deleted by hand) cannot be checked against this config: a resume
        # would reuse them unchecked. Rank 0 alone looks (another rank may see rank 0's config.json.tmp of this run)
        # a run killed while writing its first file, config.json, leaves only atomic_write's temporary file, which is
        # no run output: the same command must then start the run
        orphans = [] if had_config or not rank0 or resume is None else [f for f in outputs() if not cut_short(f)]
        named = ", ".join(f.relative_to(self.dir).as_posix() for f in orphans[:3])  # (one in units/ named with it)
        named += ", ..." if len(orphans) > 3 else ""
        if orphans and not written_by_a_run(self.dir / "env.json"):  # a folder of the user's: never delete in it
            raise ConfigError(f"{self.dir} holds files named like a run's outputs ({named}) but neither the "
                              f"config.json nor the env.json of a run: nothing there is deleted or reused; "
                              f"use a new --out_dir")
        if orphans and resume:
            raise ConfigError(f"{self.dir} holds run outputs ({named}) but no config.json to check them against this "
                              f"config: use a new --out_dir, put back the run's config.json (a copy) to resume "
                              f"them, or --resume=False to delete them and recompute")
        if had_config and (rank0 or resume is not False):  # (another rank may be removing it when resume is False)
            prev = read_run_config(config_path)
            if prev.pop("experiment") != experiment:
                raise ConfigError(f"{self.dir} holds a run of another experiment: use a new --out_dir")

        # 2. a rerun into the folder: the same config (resume), or the old outputs deleted first (--resume=False)
        # a run resumed (or, for an experiment without a resume key, recomputed into its folder, replacing its files)
        # under the same config only: another config's results would mix with this one's without a word
        if had_config and resume is not False:  # (so `prev`, the earlier config, was read in 1.)
            now = json.loads(json.dumps(dataclasses.asdict(cfg)))
            # a key added since that run was made counts at its default (a new key's default is the old behaviour)
            added = json.loads(json.dumps(config_defaults(cfg, absent_from=prev)))
            # WHERE_KEYS are where the run reads and writes, not how it was made: a moved run directory resumes;
            # ckpt_every is how often a run saves its state, and CORE_KEYS how many cores compute, not what: a resumed
            # run may change them (config.json then records the new values)
            diff = sorted(k for k in (set(prev) | set(now)) - {"resume", "ckpt_every", *WHERE_KEYS, *CORE_KEYS}
                          if prev.get(k, added.get(k)) != now.get(k))
            # pool processes of one thread each compute the same numbers however many run; one worker computes in
            # this process, at its thread count (that count, env.json's, is compared below: threads=0 is a count too)
            was, will = prev.get("workers"), now.get("workers")
            if isinstance(was, int) and isinstance(will, int) and (was <= 1) != (will <= 1):
                recounted.append(f"workers {was} -> {will}")
            if diff:  # resuming under another config would silently mix results
                raise ConfigError(f"{self.dir} holds a run with another config (differs in: {', '.join(diff)}): "
                                  f"use a new --out_dir" + (", or --resume=False to delete that run's outputs there "
                                                            "and recompute" if resume is not None else ""))
        elif (had_config or orphans) and resume is False and rank0:
            # --resume=False recomputes everything: the old run's outputs go first, so that nothing of it is shown
            # beside the new config or resumed by a later rerun. Only what runs write (RUN_OUTPUTS), and inside the
            # project only under out/ (never its code, docs or figures).
            under_out = real_dir.is_relative_to(ROOT / "out") and real_dir != ROOT / "out"
            if real_dir.is_relative_to(ROOT) and not under_out:
                raise ConfigError(f"--resume=False would delete the run outputs in {self.dir}, a folder of the project "
                                  f"itself: give runs their own --out_dir (a folder under out/, "
                                  f"or outside the project)")
            # config.json and env.json last: killed midway, the folder still shows it is a run's (without them its
            # other outputs were refused for good, as a folder of the user's)
            gone = sorted(outputs(), key=lambda f: f.parent == self.dir and f.name in ("config.json", "env.json"))
            for f in gone:
                f.unlink()
            print(f"--resume=False: removed the previous run's {len(gone)} output files in {self.dir}")

        # 3. the folder made, then (rank 0) config.json and env.json written
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # the folder, or one above it, is a file or a broken link
            file = next(d for d in (self.dir, *self.dir.parents) if (d.exists() or d.is_symlink()) and not d.is_dir())
            if file.is_symlink() and not file.exists():  # e.g. out/ linked to a scratch folder since purged
                raise ConfigError(f"out_dir {self.dir}: {file} is a link to {os.readlink(file)}, which does not exist: "
                                  f"make that folder, or pass another --out_dir") from None
            raise ConfigError(f"out_dir {self.dir}: {file} is a file, not a folder: pass a directory as "
                              f"--out_dir") from None
        except OSError as e:  # no permission, a read-only disk, a name too long
            raise ConfigError(f"out_dir {self.dir}: cannot create it ({e.strerror}): pass another --out_dir") from None
        self.metrics_path, self.rank0 = self.dir / "metrics.jsonl", rank0
        if not rank0:
            return
        # a kill mid-write left metrics.jsonl's last line cut short: end it, so that this attempt's first record starts
        # a line of its own (joined to the cut one, it would be lost with it when the file is read)
        if self.metrics_path.is_file() and self.metrics_path.stat().st_size > 0:
            with open(self.metrics_path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        write_json(self.dir / "config.json", {"experiment": experiment, **dataclasses.asdict(cfg)})
        dev = getattr(cfg, "device", "cpu")
        # the code and the machine that compute: the commit, the CPU kind, and the run's card (the CPU model is "cpu")
        prov = {**provenance(), "device": torch.cuda.get_device_name(dev) if str(dev).startswith("cuda") else "cpu"}
        if (self.dir / "env.json").is_file():  # a resumed run: the earlier sessions' environments (the commit that
            # computed the groups or units reused now) are kept, one line each, oldest first
            text = (self.dir / "env.json").read_bytes().decode("utf-8", "replace")  # (damaged bytes: kept, marked)
            try:
                earlier = json.loads(text)
            except json.JSONDecodeError:  # damaged: kept as it is
                earlier = None
            if not isinstance(earlier, dict):  # (valid JSON that is not an object, e.g. edited by hand: the same)
                earlier = {"unreadable_env_json": text}
            append_line(self.dir / "env_earlier.jsonl", json.dumps(earlier))
            # other code, or another CPU or GPU kind (whose kernels set the last digits, and so which base a
            # pretraining seed gives), computed the units reused now: said, not refused (a fix elsewhere need not
            # redo a run)
            if any(k in earlier and earlier[k] != prov[k] for k in prov):
                print(f"note: resuming {self.dir}, begun with {_code_and_machine(earlier)}; this session runs "
                      f"{_code_and_machine(prov)}. The units reused keep their numbers (env_earlier.jsonl lists every "
                      f"session); --resume=False recomputes them all", file=sys.stderr)
            # another thread count sums floats in another order: the same kind of difference as another CPU's
            if earlier.get("threads") not in (None, torch.get_num_threads()):
                recounted.append(f"torch threads {earlier['threads']} -> {torch.get_num_threads()}")
            if recounted:
                print(f"note: resuming {self.dir} with {', '.join(recounted)}: the units reused keep their numbers, "
                      f"and what is computed now may differ in the last digits from an uninterrupted run (float sums "
                      f"in another order); --resume=False recomputes them all", file=sys.stderr)
        write_json(self.dir / "env.json", {
            "argv": list(argv if argv is not None else sys.argv), **prov,
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": __import__("numpy").__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            # under torchrun argv alone reruns it with one process, and so another global batch
            "processes": int(os.environ.get("WORLD_SIZE", 1)),
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        })

    def log(self, **record):
        """Append `record` (JSON-serialisable values) as one line of metrics.jsonl."""
        if not self.rank0:  # under torchrun the run's files are rank 0's: another rank's lines would repeat its own
            return
        append_line(self.metrics_path, json.dumps(record))

    def save_results(self, results, table_md):
        """Write `results` (a dict) to results.json and the markdown `table_md` to results.md, each atomically."""
        if not self.rank0:
            return
        write_json(self.dir / "results.json", results)
        write_text(self.dir / "results.md", table_md + "\n")


# ----------------------------------------------------------------------------------------------------
# checkpoints: NAME.safetensors (weights) + NAME.json (metadata), both written atomically

class CheckpointError(Exception):
    """A missing or incompatible checkpoint; the message says what does not match."""


def save_weights(stem, tensors, meta, checksum=True):
    """Write stem.safetensors and stem.json atomically (temp file + rename). The .safetensors' header holds the
    .json's SHA-256: a command stopped between the two renames leaves a pair of two saves, which load_weights
    refuses (it read the new weights under the old step and metrics without a word). The .json gets the weights'
    own hash too (`weights_sha256`, tensors_sha256), which load_weights checks: damaged bytes are an error
    (checksum=False: none, for a caller with its own check whose weights are large, as the MNIST run's)."""
    from safetensors.torch import save
    stem = Path(stem)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # the .json holds the weights' own hash (safetensors keeps no checksum: a flipped bit in the data loaded as another
    # weight), and the .safetensors' header the .json's. (One key there: safetensors writes its metadata in no fixed
    # order, and two keys made the file's bytes differ from one save to the next.)
    text = json_text({**meta, "weights_sha256": tensors_sha256(tensors)} if checksum else meta)
    pair = {"meta_sha256": hashlib.sha256(text.encode()).hexdigest()}
    # bytes written by Python, not save_file: that one creates the file mode 0600, whatever the umask says
    atomic_write(stem.with_name(stem.name + ".safetensors"), lambda tmp: tmp.write_bytes(save(tensors, metadata=pair)))
    write_text(stem.with_name(stem.name + ".json"), text)


def tensors_sha256(tensors):
    """SHA-256 over each tensor's name, dtype, shape and bytes, by name (tensors on the CPU): what save_weights
    stores in the .json as `weights_sha256`, and load_weights checks the tensors it read against."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def torch_file_damage(path):
    """The first record of torch.save's file `path` whose bytes do not match the CRC-32 saved with it, or None
    (also for a file that is no zip archive, or one saved without checksums: torch.load then says what it can).
    torch.load does not check them: a flipped bit in a resume state loaded as another weight or optimizer moment."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0:  # (torch's compute_crc32 turned off)
                    continue
                try:
                    with z.open(info) as f:  # zipfile checks the CRC-32 at the record's end
                        while f.read(1 << 24):
                            pass
                except Exception:  # BadZipFile: a wrong CRC-32 or a damaged local header
                    return info.filename
    except (zipfile.BadZipFile, OSError):
        return None
    return None


RERUN = ": rerun what wrote it"  # the way out of a damaged checkpoint (train_lm's resume ends in its `afresh` instead)


def checkpoint_stem(path):
    """The stem of a checkpoint given by its stem or by one of its files (model.safetensors, model.json, or train_lm's
    resume state model.state.pt)."""
    path = Path(path)
    for suffix in (".safetensors", ".json", ".state.pt"):
        if path.name.endswith(suffix) and not path.with_name(path.name + ".safetensors").is_file():
            return path.with_name(path.name[:-len(suffix)])
    return path


def load_weights(stem, device="cpu"):
    """Read stem.safetensors and stem.json -> (tensors, meta). `stem` may also name one of its files (checkpoint_stem:
    the .safetensors, the .json, or a resume state's .state.pt, whose weights are still read from the .safetensors)."""
    from safetensors import safe_open
    stem = checkpoint_stem(stem)
    w, j = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    if stem.is_dir():
        found = sorted(str(p.with_suffix("")) for p in stem.glob("*.safetensors"))
        raise CheckpointError(f"{stem} is a directory: pass a checkpoint in it by its stem (" +
                              (f"it holds {', '.join(found)})" if found else "it holds none: no *.safetensors)"))
    if not w.is_file() or not j.is_file():
        raise CheckpointError(f"checkpoint {stem} needs both {w.name} and {j.name}; found "
                              f"{', '.join(p.name for p in (w, j) if p.is_file()) or 'neither'}")
    try:  # read on the CPU: an error here is the file's, never the device's. One open for the weights and the
        # .json's hash in its header: a save in between could not pair one file's weights with another's hash
        with safe_open(str(w), framework="pt") as f:  # (checkpoints saved before the pairing have none: not checked)
            pair = (f.metadata() or {}).get("meta_sha256")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        if not utf8(w):  # (not the file's fault: rerunning what wrote it would not help)
            raise CheckpointError(f"{str(w)!r} has bytes that are not UTF-8, and safetensors opens only UTF-8 "
                                  f"paths: rename the folder (or a folder above it)") from None
        raise CheckpointError(f"{w} is not a readable safetensors file ({e}){RERUN}") from None
    read = tensors  # on the CPU, for the weights' hash below
    try:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    except torch.cuda.OutOfMemoryError:  # a real device, full: not a device to replace
        raise
    except (RuntimeError, AssertionError) as e:  # a bad device name, or CUDA asked of a torch without it
        raise CheckpointError(f"{w} read, but cannot be put on device {device!r} ({e}): pass a device this "
                              f"machine has (e.g. device='cpu')") from None
    raw = j.read_bytes()
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # damaged, or another file copied over it
        raise CheckpointError(f"{j} is not readable JSON ({e}){RERUN}") from None
    if not isinstance(meta, dict):  # valid JSON, but not the object a checkpoint writes
        raise CheckpointError(f"{j} holds a JSON {type(meta).__name__}, not a checkpoint's record (an object){RERUN}")
    if pair is not None and pair != hashlib.sha256(raw).hexdigest():
        raise CheckpointError(f"{w.name} and {j.name} in {stem.parent} are of two different saves (a command "
                              f"stopped while writing this checkpoint, between the two files, or the .json edited "
                              f"since){RERUN}")
    # the .json of this very save (paired above) holds the weights' hash: damaged bytes read as other weights
    # (a .json without it, or weights written by another tool, are not checked)
    if pair is not None and "weights_sha256" in meta and meta["weights_sha256"] != tensors_sha256(read):
        raise CheckpointError(f"{w} is damaged: its weights are not the ones saved (their SHA-256 differs from the one "
                              f"in {j.name}){RERUN}")
    return tensors, meta


# ----------------------------------------------------------------------------------------------------
# training loops for the seed-batched MLP (subliminal learning on MNIST)
#
# Every loop trains S independent models at once: params are [S, ...] tensors, each seed has its own
# data order, and the loss is the SUM over seeds of each seed's mean loss, so seed s's gradient is
# what it would be alone (up to the float rounding of a batched matmul of another size: bit for bit on one
# thread, not always on several). Adam is elementwise, so one Adam over the stacked tensors is S Adams.

def seed_permutations(gens, n, device):
    """One random permutation of range(n) per seed, each from that seed's own generator: [S, n]."""
    return torch.stack([torch.randperm(n, generator=g, device=device) for g in gens])


class Adam:
    """Adam (Kingma & Ba 2015) written out, the update of torch.optim.Adam without weight decay: m <- lerp(m,
    g, 1 - b1), v <- b2 v + (1 - b2) g^2, p <- p - lr/(1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
    Why not torch.optim.Adam: building one imports the compiler stack (torch._dynamo, ~830 modules,
    ~1.7 s here), more than the work of a whole many-seed MNIST run on a GPU. Elementwise, so one Adam over
    [S, ...] stacked weights is S independent Adams. Each operation takes every tensor at once (torch's
    _foreach ops): on a GPU, where these steps are launch-bound, a launch per operation rather than one per
    tensor and operation (not yet timed there); on a CPU the per-tensor loop's numbers to the bit, as fast."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, math.sqrt(1 - self.b2 ** self.t)
        trained = [(p, m, v) for p, m, v in zip(self.params, self.m, self.v) if p.grad is not None]
        if not trained:
            return
        ps, ms, vs = map(list, zip(*trained))
        gs = [p.grad for p in ps]
        torch._foreach_lerp_(ms, gs, 1 - self.b1)
        torch._foreach_mul_(vs, self.b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, c2)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(ps, ms, denom, value=-self.lr / c1)

    def zero_grad(self):  # to None, torch.optim's default
        for p in self.params:
            p.grad = None


def gather_rows(src, idx, buf):
    """Rows `idx` [S, B] of src [M, D] -> [S, B, D], written into `buf`, one block of at least S * B rows
    reused for every batch: a fresh 32 MB batch every step costs ~10% of a step in page faults on a CPU
    (glibc returns blocks that big to the OS when they are freed). index_select is also ~2x faster than
    advanced indexing there."""
    flat = idx.flatten()
    return torch.index_select(src, 0, flat, out=buf[:len(flat)]).view(*idx.shape, src.shape[-1])


def progress_bar(total, desc):
    """A tqdm bar on a terminal only (disable=None), gone when done: a log redirected to a file keeps its lines
    alone. The bar never reads a tensor, so it adds no device sync."""
    return tqdm(total=total, desc=desc, disable=None, leave=False, unit="step")


def train_classifier(model, x, y, *, epochs, lr, batch_size, gens, n_classes=10, amp=False, log=None, desc="teacher"):
    """Cross-entropy on the first n_classes logits only (the aux logits get exactly zero gradient).
    x: [N, D] shared by all seeds, y: [N]; each seed walks the data in its own order."""
    opt = Adam(model.parameters(), lr)
    S, N = model.n_seeds, x.shape[0]
    step, t0 = 0, time.time()
    buf = x.new_empty(S * min(batch_size, N), x.shape[-1])  # gather_rows' reused block
    bar = progress_bar(epochs * -(-N // batch_size), desc)
    for epoch in range(epochs):
        order = seed_permutations(gens, N, x.device)  # [S, N]
        total = torch.zeros(S, device=x.device)  # each seed's summed loss, on the device: no sync per step
        for i in range(0, N, batch_size):
            idx = order[:, i:i + batch_size]  # [S, B]
            xb = gather_rows(x, idx, buf)  # [S, B, D]
            with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
                logits = model(xb)[..., :n_classes]  # [S, B, n_classes]
            loss = F.cross_entropy(upcast(logits).flatten(0, 1), y[idx].flatten(), reduction="none")
            per_seed = loss.view(S, -1).mean(1)  # [S]
            opt.zero_grad()
            per_seed.sum().backward()  # each seed's gradient is its own mean's
            opt.step()
            total += per_seed.detach() * idx.shape[1]  # batch means x B: each seed's summed loss over the batch
            step += 1
            bar.update()
        if log:  # the epoch's mean loss per example and seed (not its last, partial, batch's)
            log(stage=desc, epoch=epoch + 1, step=step, **epoch_loss(total.tolist(), N),
                seconds=round(time.time() - t0, 3))
    bar.close()


def epoch_loss(totals, N):
    """{"loss": the mean loss per example over the seeds whose summed loss (totals: S floats, read from the device
    once per epoch) is finite} and, where some are not, {"nonfinite_seeds": how many}: one diverging seed made the
    whole batch's logged loss nan, though the others train on untouched (each seed's loss and gradient are its own)."""
    ok = [t for t in totals if math.isfinite(t)]
    return {"loss": sum(ok) / (N * len(ok)) if ok else math.nan,
            **({"nonfinite_seeds": len(totals) - len(ok)} if len(ok) < len(totals) else {})}


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
    Several students of each seed may train as one batched model: `logit_idx` a dict {name: logits}, one block
    of S models per entry, in order (model c * S + s reads seed s's inputs and targets; `gens` one per model).
    `refresh(epoch)`, if given, returns new (inputs, targets) for each epoch after the first, which trains on the sets
    passed in (fresh noise)."""
    opt = Adam(model.parameters(), lr)
    blocks = logit_idx if isinstance(logit_idx, dict) else {desc: logit_idx}
    S, M = targets.shape[0], model.n_seeds  # S seeds, M models (SeedMLP's n_seeds counts models: S per block)
    if M != S * len(blocks):
        raise ValueError(f"{M} models for {len(blocks)} block(s) of {S} seeds")
    # consecutive blocks with the same logits take one loss: [(first model, end, logit indices)]
    loss_groups, lo = [], 0
    for logit_ids, run_of_blocks in itertools.groupby(blocks.values(), key=list):
        hi = lo + S * len(list(run_of_blocks))
        loss_groups.append((lo, hi, torch.as_tensor(logit_ids, device=targets.device)))
        lo = hi
    seed_of = torch.arange(M, device=targets.device) % S  # the input set each model reads
    step, t0 = 0, time.time()
    bar = progress_bar(epochs * -(-inputs.shape[-2] // batch_size), desc)  # a refreshed set keeps its size
    for epoch in range(epochs):
        if refresh is not None and epoch > 0:
            inputs, targets = refresh(epoch)
        N = inputs.shape[-2]
        order = seed_permutations(gens, N, inputs.device)  # [M, N]
        # rows of the flattened [S * N, ...] sets: row n of seed s is row s * N + n
        flat_order = order + N * seed_of[:, None]  # [M, N]
        x_order = flat_order if inputs.dim() == 3 else order  # shared inputs: every seed reads [N, D]
        flat_x, flat_t = inputs.reshape(-1, inputs.shape[-1]), targets.reshape(-1, targets.shape[-1])
        buf = flat_x.new_empty(M * min(batch_size, N), flat_x.shape[-1])  # gather_rows' reused block
        total = torch.zeros(M, device=inputs.device)  # each model's summed loss, on the device: no sync per step
        for i in range(0, N, batch_size):
            xb = gather_rows(flat_x, x_order[:, i:i + batch_size], buf)  # [M, B, D]
            tb = flat_t[flat_order[:, i:i + batch_size]]  # [M, B, K]
            with torch.autocast(xb.device.type, torch.bfloat16, enabled=amp):
                out = model(xb)  # [M, B, n_out]
            per_model = torch.cat([distill_loss(upcast(out[lo:hi, :, sel]), tb[lo:hi, :, sel], loss, temperature)
                                   for lo, hi, sel in loss_groups])  # [M]
            opt.zero_grad()
            per_model.sum().backward()
            opt.step()
            total += per_model.detach() * tb.shape[1]
            step += 1
            bar.update()
        if log:  # the epoch's mean loss per example and seed, per block
            for name, block in zip(blocks, total.view(len(blocks), S).tolist()):
                log(stage=name, epoch=epoch + 1, step=step, **epoch_loss(block, N), seconds=round(time.time() - t0, 3))
    bar.close()


# ====================================================================================================
# language models: data rows and their order, LR schedule, evaluation, DDP, the fine-tune loop (finetune),
# GPT checkpoints, and the pretraining loop (train_lm, last)
# ====================================================================================================
#
# Data is a dict of two tensors on the device: `tokens` [N, T+1] (row n trains on inputs tokens[n, :-1]
# and targets tokens[n, 1:]) and `mask` [N, T] (which targets count; None = all). Pretraining rows are
# windows of one token stream (`lm_windows`); fine-tuning rows are (prompt, response) pairs, right-
# padded, with only the response (and its end token) in the mask (`pack_pairs`). Right padding needs no
# attention mask: under causal attention a real token never sees the pads after it.
#
# Order. train_lm (the pretraining loop, last in this section) reads an endless stream of row indices:
# epoch e visits all N rows in a permutation drawn from (seed, e), and step s takes stream positions
# [p, p + G), G = global batch. Every rank computes the same global batch and takes its own slice, so one
# process with batch G, or k micro-steps of G/k, or W ranks of G/W each see exactly the same rows. The loss
# of a step is the mean over all counted target tokens of the global batch (not a mean of per-rank means),
# so these three agree up to float rounding, and the resume state only needs the step and the stream position.

# --- its parts: LR schedule, data rows (lm_windows, pack_pairs), the stream order, evaluation, DDP --

def get_lr(step, *, lr, warmup, decay_steps, min_lr):
    """The lr of the optimizer step after `step` steps done (0-based): a linear warm-up over `warmup` steps
    (lr/warmup at step 0, lr at step warmup - 1), then cosine from lr to min_lr at decay_steps, then min_lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= decay_steps:
        return min_lr
    frac = (step - warmup) / max(1, decay_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * frac)) * (lr - min_lr)


def warmup_problem(warmup, steps):
    """Why this (warmup, steps) pair cannot run as meant (get_lr decays over `steps`), or None. One message for
    every config that pretrains with train_lm, as model.head_problem is for the width and heads."""
    if 0 <= warmup < steps:
        return None
    return (f"warmup ({warmup}) must be >= 0 and < steps ({steps}): the lr ramps up to lr over the warmup steps, then "
            f"the cosine decays it toward min_lr over the rest; this warmup leaves no decay (longer: never reaches "
            f"lr). Lower --warmup or raise --steps")


def lm_windows(stream, block_size):
    """A 1-D token stream -> rows [N, block_size + 1]: windows starting every block_size tokens (each
    window's last token is the next window's first input), the incomplete tail dropped."""
    if not torch.is_tensor(stream) or stream.dim() != 1:  # a [1, N] batch was "a stream of 1 tokens is too short"
        got = f"shape {list(stream.shape)}" if torch.is_tensor(stream) else f"a {type(stream).__name__}"
        raise ValueError(f"lm_windows takes a 1-D tensor of token ids (data.tokenizer.token_stream's), got {got}: "
                         f"torch.as_tensor(ids).reshape(-1)")
    if block_size < 1:  # (a ZeroDivisionError)
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n = (len(stream) - 1) // block_size
    if n < 1:
        raise ValueError(f"a stream of {len(stream)} tokens is too short for block_size={block_size}")
    starts = torch.arange(n, device=stream.device)[:, None] * block_size  # [N, 1]
    return stream[starts + torch.arange(block_size + 1, device=stream.device)]  # [N, T+1]


class TooLongError(ValueError):
    """A (prompt, response) pair longer than the model reads (pack_pairs' block_size rule), told apart from a
    malformed pair so that callers can say what to do about the length."""


def pack_pairs(pairs, pad_id, block_size=None):
    """(prompt ids, response ids) pairs -> {"tokens": [N, T+1], "mask": [N, T]}: each row is prompt +
    response, right-padded with pad_id; the mask selects the targets that are response tokens (append
    the end token to each response yourself, so that the model learns to stop). T+1 is the longest row."""
    if any(isinstance(t, str) for pair in pairs for t in pair):  # else "too many dimensions 'str'" from torch
        raise ValueError("pack_pairs takes token ids: encode the (prompt, response) strings first, "
                         "[(tok.encode(p).ids, tok.encode(r).ids) for p, r in pairs] (the world's: "
                         "experiments.world_base.encode_pairs(tok, pairs, block_size))")
    if len(pairs) == 0:  # e.g. a filter that kept none: else "max() arg is an empty sequence"
        raise ValueError("pack_pairs got no (prompt, response) pairs: pass at least one")
    # ids as Python ints: a float 1.7 or a bool is refused (as the scorers and generate refuse it), not cut to id 1
    pairs = [(token_ids(p, f"pair {i}'s prompt"), token_ids(r, f"pair {i}'s response"))
             for i, (p, r) in enumerate(pairs)]
    width = max(len(p) + len(r) for p, r in pairs)
    if block_size is not None and width - 1 > block_size:
        raise TooLongError(f"the longest (prompt, response) pair has {width} tokens: more than block_size + 1 = "
                           f"{block_size + 1}")
    tokens = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # [N, T+1]
    mask = torch.zeros(len(pairs), width - 1, dtype=torch.bool)  # [N, T]
    for i, (p, r) in enumerate(pairs):
        if len(p) < 1 or len(r) < 1:
            raise ValueError(f"pair {i}: prompt and response need at least one token each")
        tokens[i, :len(p) + len(r)] = torch.as_tensor(list(p) + list(r))
        mask[i, len(p) - 1:len(p) + len(r) - 1] = True  # target t is token t+1: the response tokens
    return {"tokens": tokens, "mask": mask}


def stream_rows(n_rows, seed, start, count, device, perms=None):
    """Row indices at positions [start, start + count) of the data stream -> [count] on device (see
    above). `perms`, a dict the caller keeps, caches the current epoch's permutation on the device:
    drawn on the CPU (the same numbers on any device), copied once per epoch, not once per step (a
    host-to-device copy every step would stall a GPU that should run ahead of the Python loop)."""
    perms = {} if perms is None else perms
    out = []
    while count > 0:
        epoch, offset = divmod(start, n_rows)
        if epoch not in perms:
            perms.clear()  # keep one epoch
            perms[epoch] = torch.randperm(n_rows, generator=generator("cpu", seed, "data", epoch)).to(device)
        take = min(count, n_rows - offset)
        out.append(perms[epoch][offset:offset + take])
        start, count = start + take, count - take
    return out[0] if len(out) == 1 else torch.cat(out)


def make_lm_optimizer(model, lr, weight_decay, betas):
    """AdamW over the trainable parameters: matrices (and the embedding) decay, gains do not. Fused on CUDA
    only: on the CPU, pretraining keeps the unfused AdamW its cached base models were trained with (finetune builds
    its own AdamW, fused on the CPU too)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(map(float, betas)), fused=fused or None)  # (an int: refused)


@torch.no_grad()
def eval_lm(model, data, batch_size, max_rows=None, bf16=False):
    """Mean loss per counted target token over the first max_rows rows of data (all by default)."""
    tokens, mask = data["tokens"], data.get("mask")
    n = tokens.shape[0] if max_rows is None else min(max_rows, tokens.shape[0])
    # a mean over nothing: 0.0 read as a perfect model (rows of one token have no next token: a ZeroDivisionError)
    if n < 1 or tokens.shape[1] < 2 or (mask is not None and not mask[:n].any()):
        raise ValueError(f"eval_lm has no target to count: {n} rows (max_rows={max_rows})" + (
            "" if n < 1 else " of one token each" if tokens.shape[1] < 2 else ", none of them with a masked-in target"))
    total, count = torch.zeros((), device=tokens.device), 0
    for i in range(0, n, batch_size):
        x, y = tokens[i:min(n, i + batch_size), :-1], tokens[i:min(n, i + batch_size), 1:]  # [b, T]
        with torch.autocast(tokens.device.type, torch.bfloat16, enabled=bf16):
            per_tok = model(x, targets=y)  # [b, T]
        w = mask[i:min(n, i + batch_size)] if mask is not None else torch.ones_like(y, dtype=torch.bool)
        total += (per_tok * w).sum()
        count += int(w.sum())
    return total.item() / count


def peak_flops(device):
    """Dense bf16 peak FLOP/s of the GPU, for MFU (None when unknown). The same peak whatever the run's precision
    (nanoGPT's convention): an fp32/TF32 run's MFU reads low against it, and compares across precisions."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    # The H100's form factors differ in SMs and clocks: the SXM card ("H100 80GB HBM3") 989, the PCIe one about a
    # quarter lower, the NVL 835 (NVIDIA's H100 spec table, nvidia.com/en-us/data-center/h100: 1,671 BF16 "with
    # sparsity", dense is half). Any other H100 is unknown, like any other card, not taken for an SXM. The H200 NVL
    # has the H100 NVL's 1,671 with sparsity (NVIDIA's H200 spec table), the H200 SXM the SXM H100's peak.
    for key, flops in (("H100 80GB HBM3", 989e12), ("H100 SXM", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12),
                       ("H200 NVL", 835e12), ("H200", 989e12), ("A100", 312e12)):
        if key in name:
            return flops
    # said, not silent: otherwise the only sign is a missing MFU column
    warnings.warn(f"no MFU: train.peak_flops does not know the dense bf16 peak FLOP/s of a {name}; add it there")
    return None


def ddp_setup(device):
    """Under torchrun (RANK in the environment) join the process group: NCCL on CUDA, gloo on CPU.
    Returns (rank, world_size, device), the device being this rank's GPU on CUDA. Without torchrun: (0, 1, device)."""
    if "RANK" not in os.environ:
        return 0, 1, device
    cuda = str(device).startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _dist():
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- fine-tuning (finetune): soft targets, LoRA adapters, its lr schedule, the loop ----------------

def soft_kl(teacher_logits, student_logits, subset=None, temperature=1.0):
    """KL(teacher || student) per position -> [b, T], both distributions renormalised over the token ids
    `subset` (a LongTensor on the logits' device; None: the whole vocabulary). Gradient flows to the student.
    temperature T > 1 softens both (logits / T) and scales by T^2 (Hinton et al.), so that the rare tokens'
    logits count: as T grows the gradient tends to that of matching the centred logits."""
    # upcast: bf16 logits to float32, a float64 model's kept (a finite-difference check needs float64 throughout)
    t = upcast(teacher_logits if subset is None else teacher_logits[..., subset]).div(temperature).log_softmax(-1)
    s = upcast(student_logits if subset is None else student_logits[..., subset]).div(temperature).log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1) * temperature ** 2


@torch.no_grad()
def teacher_targets(teacher, data, subset=None, chunk=256):
    """A fixed teacher's logits at every trained position of data ({"tokens" [N, T+1], "mask" [N, T]}), once:
    -> (soft, where): soft [n_trained, V or len(subset)], the logits at the trained positions in row-major order;
    where [N, T], each trained position's row in soft, -1 elsewhere."""
    dev = data["tokens"].device
    tokens, mask = data["tokens"], data["mask"].to(dev)
    subset = None if subset is None else torch.as_tensor(subset, device=dev)
    out = []
    for i in range(0, len(tokens), chunk):
        t = teacher(tokens[i:i + chunk, :-1])[mask[i:i + chunk]]  # [k, V]
        out.append(t if subset is None else t[:, subset])
    where = torch.where(mask, mask.flatten().cumsum(0).view_as(mask) - 1, -1)
    return torch.cat(out), where


TRAINS = ("all", "blocks", "lora", "shift")  # what a fine-tune trains: every weight, all but the token embedding,
                                            # low-rank adapters of the blocks' linear weights, or one vector
                                            # added to the residual stream at the input (see finetune)


def lora_linears(model):
    """{name: nn.Linear} of the blocks' linear layers ("blocks.1.mlp.proj", ...): what lora_adapters can adapt."""
    return {f"blocks.{n}": m for n, m in model.blocks.named_modules() if isinstance(m, torch.nn.Linear)}


def lora_adapters(model, rank, seed, targets=()):
    """Low-rank adapters (Hu et al. 2021) for the linear weights W [out, in] of the model's blocks named in
    `targets` (e.g. "blocks.1.mlp.proj"; empty: all of them, attention qkv and output, MLP in and out):
    W = W0 + s B @ A (s: finetune's scale) with A [rank, in] ~ N(0, variance 1/in) and B [out, rank] = 0, so the model
    starts unchanged and the fine-tune's update to each matrix has rank <= `rank`.
    -> [(W, W0, A, B)], A and B leaf tensors requiring grad (W0 a frozen copy)."""
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, not {rank}")
    linear = lora_linears(model)
    if set(targets) - set(linear):
        raise ValueError(f"unknown lora targets {sorted(set(targets) - set(linear))}; valid: {', '.join(linear)}")
    g = generator("cpu", seed, "lora-init")
    out = []
    for name, mod in linear.items():
        if not targets or name in targets:
            W = mod.weight
            if rank > min(W.shape):  # a rank past the matrix's own would be a full-rank update, not an adapter
                raise ValueError(f"lora_rank {rank} exceeds {name}'s smaller dimension, {min(W.shape)} "
                                 f"(weight {list(W.shape)}): an adapter's rank must be at most that")
            A = (torch.randn(rank, W.shape[1], generator=g) / W.shape[1] ** 0.5).to(W.device, W.dtype)
            B = torch.zeros(W.shape[0], rank, device=W.device, dtype=W.dtype)
            out.append((W, W.detach().clone(), A.requires_grad_(), B.requires_grad_()))
    return out


OPTIMIZERS = ("adamw", "sgd")  # finetune's; sgd = gradient descent, plain unless given a momentum
SCHEDULES = ("constant", "cosine", "linear")
ORDERS = ("random", "sequential")
ADAMW_BETAS = (0.9, 0.999)  # finetune's default; sgd refuses any other (it would ignore them)


def finetune_lr(step, *, lr, schedule, warmup, horizon):
    """The lr of fine-tune step `step` (1-based): a linear ramp over the first `warmup` steps (lr/warmup, 2 lr/warmup,
    ..., lr), then constant, or decayed to 0 at step horizon + 1 by a cosine or a straight line. "linear" with a
    warm-up is the paper's open-model schedule (Betley et al.: 5 warm-up steps; Hugging Face's version of it starts
    with a step at lr 0 and holds the peak for one step, not two)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be {' or '.join(map(repr, SCHEDULES))}, not {schedule!r}")
    if step <= warmup:
        return lr * step / warmup
    if schedule == "cosine":
        return get_lr(step - 1, lr=lr, warmup=warmup, decay_steps=horizon, min_lr=0.0)
    if schedule == "linear":
        return lr * max(0, horizon - step + 1) / (horizon - warmup)
    return lr


def finetune(model, data, *, steps, batch_size, lr, seed, at=(), on_eval=None, teacher=None, subset=None,
             order="random", schedule="constant", warmup=0, horizon=None, temperature=1.0, optimizer="adamw",
             trains="all", lora_rank=32, lora_alpha=64.0, lora_targets=(), targets=None, betas=ADAMW_BETAS,
             momentum=0.0):
    """Fine-tune on {"tokens": [N, T+1], "mask": [N, T]} (pack_pairs), `steps` optimizer steps of `batch_size` rows.

    Rows: drawn with replacement from a CPU stream (the same rows on any device), or, order="sequential", rows 0.. in
    order, wrapping around (the caller's order: one pass = one epoch).
    LR (finetune_lr): `warmup` steps of linear ramp, then constant (schedule="constant") or decayed from lr to 0 over
    `horizon` steps (`steps` unless given: a run stopped early keeps the longer run's lr at each step) by a cosine
    ("cosine") or a straight line ("linear").
    Loss at the masked targets: cross-entropy on the data's next tokens, or, given `teacher` (tokens [b, T] -> logits
    [b, T, V]), KL(teacher || student) over the token ids `subset` (both distributions renormalised there; None: the
    whole vocabulary; `temperature`: see soft_kl). Only what the loss reads is computed (the same loss up to float
    rounding): each batch is cut after its last trained column, the unembedding runs at the trained positions only,
    and the teacher, being fixed, is run once over the data before the first step (its logits at the trained
    positions, restricted to `subset`, kept in memory) instead of once per step; `targets` = teacher_targets(teacher,
    data, subset) passed instead of `teacher` shares that pass between students of one teacher on the same data.
    Optimizer: AdamW (the default; no weight decay), or optimizer="sgd", plain gradient descent (momentum 0, the
    default), the setting of the subliminal-learning theorem; gradients clipped at norm 1 either way. To take AdamW
    apart (scripts/em_optimizer_parts.py): `betas` are AdamW's; (0, 0.999) keeps no momentum, and (0, 0) no memory at
    all (every step lr * g / (|g| + eps), the sign step). `momentum` > 0 gives sgd a momentum that is a running mean
    of the gradient, as Adam's first moment (dampening = momentum; its first step is lr * g).
    What trains: trains="all", every weight that requires grad. trains="blocks": the (tied) token embedding gets no
    gradient.
    trains="lora": only rank `lora_rank` adapters of the blocks' linear weights `lora_targets` train (lora_adapters;
    the rest frozen; the defaults are the paper's open-model recipe, rs-LoRA r = 32, alpha = 64); the model's weights
    hold W0 + s B @ A after every step, so evaluations, hooks and state_dict see an ordinary model. trains="shift":
    only one vector v [n_embd] trains, added to every row of the (tied) token embedding: at the input that is v added
    to the residual stream at every position (a steering vector the fine-tune learns), and at the output it adds the
    same number h . v to every logit, which the softmax ignores; the weights hold wte0 + v after every step, so again
    the model is an ordinary one. requires_grad is restored afterwards, also after an exception.
    Evaluation: on_eval(step) is called, model in eval mode, at each step in `at` (in memory: no checkpoint files for
    a few hundred evaluations); `at` holds steps 1 .. steps (step 0, the model as given, is the caller's to evaluate:
    another is refused). Returns `model`, fine-tuned in place, in eval mode."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be {' or '.join(map(repr, OPTIMIZERS))}, not {optimizer!r}")
    if batch_size < 1:  # else torch's "max(): Expected reduction dim" at the first step
        raise ValueError(f"batch_size must be >= 1 (rows per step), got {batch_size}")
    horizon = steps if horizon is None else horizon
    warmup_past_horizon = warmup and warmup >= horizon  # (warmup 0 is no ramp, whatever the horizon)
    if schedule not in SCHEDULES or warmup < 0 or warmup_past_horizon or horizon < steps:
        raise ValueError(f"schedule must be {' or '.join(map(repr, SCHEDULES))} (got {schedule!r}), with 0 <= warmup "
                         f"< horizon and horizon >= steps (got warmup={warmup}, horizon={horizon}, steps={steps})")
    if trains not in TRAINS:
        raise ValueError(f"trains must be {' or '.join(map(repr, TRAINS))}, not {trains!r}")
    if order not in ORDERS:  # a typo would otherwise draw rows at random
        raise ValueError(f"order must be {' or '.join(map(repr, ORDERS))}, not {order!r}")
    if (optimizer == "sgd" and tuple(betas) != ADAMW_BETAS) or (optimizer == "adamw" and momentum):
        raise ValueError(f"betas are AdamW's and momentum is sgd's: optimizer={optimizer!r} would ignore them")
    if teacher is not None and targets is not None:
        raise ValueError("pass a teacher or its precomputed targets, not both")
    # (else a TypeError at the first step, or at the first evaluation step after the work before it)
    if not (hasattr(at, "__contains__") and hasattr(at, "__len__")) or isinstance(at, str):
        raise ValueError(f"at must be a collection of steps, e.g. at=(5, 10) or range(5, steps + 1, 5); got {at!r}")
    if outside := [s for s in at if not (isinstance(s, numbers.Integral) and 1 <= s <= steps)]:
        # they were skipped without a word: step 0 (the model as given) is the caller's to evaluate, before the call
        raise ValueError(f"at: evaluation steps are fine-tune steps 1 .. steps={steps}; got {outside} (step 0, the "
                         f"model as given, is evaluated before the call)")
    if len(at) and not callable(on_eval):
        raise ValueError(f"at={at!r} asks for evaluations: pass on_eval, a function on_eval(step) "
                         "to call at those steps")
    if not (isinstance(data, dict) and {"tokens", "mask"} <= set(data)):  # else a KeyError or TypeError at step 1
        raise ValueError(f"finetune's data is pack_pairs' output, {{'tokens': [N, T+1], 'mask': [N, T]}}; got "
                         f"{type(data).__name__}" + (f" with keys {sorted(data)}" if isinstance(data, dict) else ""))
    shape = (data["tokens"].shape[0], data["tokens"].shape[1] - 1)  # [N, T]: target t is token t + 1
    if data["mask"].dtype != torch.bool or tuple(data["mask"].shape) != shape:
        # an integer 0/1 mask selected rows, not positions (keep=), and trained on other tokens without a word
        raise ValueError(f"finetune's mask must be a bool tensor of shape [N, T] = {list(shape)} (pack_pairs'), got "
                         f"{data['mask'].dtype} of shape {list(data['mask'].shape)}: .bool() a 0/1 mask")
    empty = (~data["mask"].bool().any(1)).nonzero()[:, 0].tolist()  # a batch of such rows has a loss of 0/0
    if empty:
        raise ValueError(f"finetune's data has rows with no trained target (mask all zero): rows {empty[:5]}"
                         f"{' ...' if len(empty) > 5 else ''} of {len(data['mask'])}: drop them")

    def finite(loss, step):  # a diverged model's numbers are nan, or a traceback deep in sampling: stop, say why
        if not torch.stack([loss.isfinite(), *(p.isfinite().all() for p in model.parameters())]).all():
            raise ConfigError(f"a fine-tune diverged: its loss or weights are not finite at step {step} (of {steps}): "
                              f"lower its lr (now {lr:g})")

    # what trains: the weights that keep requires_grad, or adapters (LoRA) or a shift that write into them
    requires_grad_before = {p: p.requires_grad for p in model.parameters()}  # restored in the finally below
    adapters = lora_adapters(model, lora_rank, seed, lora_targets) if trains == "lora" else []
    scale = lora_alpha / lora_rank ** 0.5  # rank-stabilised scaling (Kalajdzievski 2023), as the paper's unsloth runs
    wte = model.wte.weight
    shift = torch.zeros_like(wte[0]).requires_grad_() if trains == "shift" else None  # [C], the steering vector
    wte0 = wte.detach().clone() if shift is not None else None
    adapted = {id(W) for W, *_ in adapters} | ({id(wte)} if shift is not None else set())
    for p in model.parameters():  # the optimizer and the clipping take what requires grad
        if (trains == "blocks" and p is wte) or (trains in ("lora", "shift") and id(p) not in adapted):
            p.requires_grad_(False)
    try:
        # the adapted weights keep requires_grad only to hand their gradient to the adapters (or the shift)
        trained = ([t for _, _, A, B in adapters for t in (A, B)] if adapters else [shift] if shift is not None
                   else [p for p in model.parameters() if p.requires_grad])
        # no weight decay, so one group; fused on the CPU too (one kernel over all the weights instead of a loop of
        # small ops: ~3x faster steps at our sizes)
        # floats: torch's AdamW refuses an int beta, and the docstring's (0, 0) is how one writes the sign step
        opt = (torch.optim.AdamW(trained, lr=lr, betas=tuple(map(float, betas)), weight_decay=0.0, fused=True)
               if optimizer == "adamw"
               else torch.optim.SGD(trained, lr=lr, momentum=momentum, dampening=momentum))

        # the data on the model's device, and the fixed teacher's logits at the trained positions, once
        g = generator("cpu", seed, "finetune-order")
        dev = next(model.parameters()).device
        tokens, mask = data["tokens"].to(dev), data["mask"].to(dev)
        # vocabulary ids (forward's keep= is positions)
        ids = None if subset is None else torch.as_tensor(subset, device=dev)
        # [N] a row's columns up to its last trained target, on the CPU: reading a batch's width costs no device sync
        width = (mask * torch.arange(1, mask.shape[1] + 1, device=dev)).amax(1).cpu()
        if teacher is not None:
            targets = teacher_targets(teacher, {"tokens": tokens, "mask": mask}, subset)
        if targets is not None:
            soft, where = (t.to(dev) for t in targets)
            if soft.shape[1] != (model.cfg.vocab_size if ids is None else len(ids)):
                raise ValueError("targets were computed over another subset of the vocabulary than `subset`")

        for step in range(1, steps + 1):
            if schedule != "constant" or warmup:  # (else every step keeps the lr the optimizer was built with)
                for group in opt.param_groups:
                    group["lr"] = finetune_lr(step, lr=lr, schedule=schedule, warmup=warmup, horizon=horizon)
            if order == "sequential":
                rows = torch.arange((step - 1) * batch_size, step * batch_size) % len(tokens)
            else:
                rows = torch.randint(len(tokens), (batch_size,), generator=g)
            L = max(1, int(width[rows].max()))  # the batch cut after its last trained column
            rows = rows.to(dev)
            x, m = tokens[rows, :L], mask[rows, :L]  # [b, L]
            model.train()
            if targets is None:
                per_tok = model(x, targets=tokens[rows, 1:L + 1], keep=m)  # [k] at the trained positions
            else:
                out = model(x, keep=m)  # [k, V]
                per_tok = soft_kl(soft[where[rows, :L][m]], out if ids is None else out[:, ids], None, temperature)
            loss = per_tok.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for W, W0, A, B in adapters:  # W = W0 + s B @ A, so by the chain rule dB = s dW A^T, dA = s B^T dW
                B.grad, A.grad, W.grad = scale * W.grad @ A.T, scale * B.T @ W.grad, None
            # every row is wte0 + v: dv = the rows' gradients summed (the unembedding's sum to ~0)
            if shift is not None:
                shift.grad, wte.grad = wte.grad.sum(0), None
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            with torch.no_grad():  # the model's weights follow the adapters (or shift): an ordinary model between steps
                for W, W0, A, B in adapters:
                    W.copy_(W0 + scale * B @ A)
                if shift is not None:
                    wte.copy_(wte0 + shift)
            if step in at or step == steps:  # (one device sync each)
                finite(loss, step)
            if step in at:
                model.eval()
                on_eval(step)
        model.eval()
        return model
    finally:
        for p, r in requires_grad_before.items():
            p.requires_grad_(r)


# --- GPT checkpoints: NAME.safetensors + NAME.json (+ NAME.state.pt to resume) ---------------------

def state_file(stem):
    """The resume state beside checkpoint `stem`: NAME.state.pt."""
    return Path(stem).with_name(Path(stem).name + ".state.pt")


def save_lm(stem, model, *, step, seed, metrics=None, tokenizer=None, optimizer=None, data_position=None,
            rows_per_step=None, extra=None, loss_interval=None, schedule=None):
    """Weights of the plain model (a DDP- or torch.compile-wrapped model is unwrapped here, so the names carry no
    `module.`/`_orig_mod.` prefix), metadata JSON, and, when an optimizer is given, the resume state (with
    `rows_per_step`, the global batch, and `schedule`, train_lm's LR schedule, optimizer settings, precision, compile
    flag and a digest of its data, which a resume must match). All writes atomic."""
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    meta = {"model_config": dataclasses.asdict(model.cfg), "step": step, "seed": seed, "metrics": metrics or {},
            "tokenizer": tokenizer, **(extra or {})}
    if optimizer is not None:  # the resume state holds the weights too, so that it alone, one file renamed into place
        # at once, is what a resume reads: a run killed between it and the .safetensors resumes from it exactly
        state = {"step": step, "seed": seed, "data_position": data_position, "rows_per_step": rows_per_step,
                 "loss_interval": loss_interval, "schedule": schedule, "optimizer": optimizer.state_dict(),
                 "model": model.state_dict(), "model_config": meta["model_config"], "metrics": meta["metrics"],
                 "rng": {"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
        atomic_write(state_file(stem), lambda tmp: torch_save(state, tmp))
    save_weights(stem, model.state_dict(), meta)


def _check_gpt_checkpoint(stem, model_config, tensors, expect=None, one_file=False):
    """-> GPTConfig; raises CheckpointError naming every config field or tensor that does not match.
    one_file: `stem` is a file holding both (a resume state), named as it is."""
    meta_file, weights_file = (stem, stem) if one_file else (f"{stem}.json", f"{stem}.safetensors")
    if model_config is None:
        raise CheckpointError(f"{meta_file} has no model_config: not a GPT checkpoint")
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    if set(model_config) - known:
        raise CheckpointError(f"{meta_file}: unknown model_config keys {sorted(set(model_config) - known)}")
    cfg = GPTConfig(**model_config)
    try:  # a hand-edited value (n_head 3 of n_embd 64, n_layer "2") fails in the GPT's constructor, naming no file
        with torch.device("meta"):  # shapes only: no memory, no init
            want = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_file}: its model_config makes no GPT: {e}") from None
    if expect is not None and expect != cfg:
        diff = [f"{k}: checkpoint {getattr(cfg, k)!r} vs expected {getattr(expect, k)!r}"
                for k in sorted(known) if getattr(cfg, k) != getattr(expect, k)]
        raise CheckpointError(f"{stem}: model config differs: " + "; ".join(diff))
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k}" for k in want if k not in have] + [f"unexpected {k}" for k in have if k not in want]
    problems += [f"{k}: shape {have[k]} vs model {want[k]}" for k in want if k in have and have[k] != want[k]]
    # an integer tensor loads into a float parameter without a word, and computes nonsense
    problems += [f"{k}: dtype {v.dtype}, not floating point" for k, v in tensors.items() if not v.is_floating_point()]
    if problems:
        raise CheckpointError(f"{weights_file} does not fit its model config: " + "; ".join(problems[:10]) +
                              (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))
    return cfg


def load_lm(stem, device="cpu", expect=None):
    """-> (GPT on device, meta), in the dtype its weights were saved in (float32; a .double() model's float64).
    Checks the config (against `expect`, a GPTConfig, when given) and
    every tensor's name and shape before loading. `stem` may also name any of the checkpoint's files (.safetensors,
    .json, .state.pt), as load_weights."""
    if expect is not None and not isinstance(expect, GPTConfig):  # (a dict was an AttributeError in the comparison)
        raise TypeError(f"expect must be a GPTConfig (or None), got a {type(expect).__name__}: e.g. "
                        f"expect=GPTConfig(**d) for a dict d of its fields")
    stem = checkpoint_stem(stem)
    tensors, meta = load_weights(stem, device)
    cfg = _check_gpt_checkpoint(stem, meta.get("model_config"), tensors, expect)
    # the weights' own dtype: load_state_dict into a float32 GPT rounded a float64 model's weights without a word
    dtypes = {v.dtype for v in tensors.values()}
    model = GPT(cfg).to(device, dtypes.pop() if len(dtypes) == 1 else None)
    model.load_state_dict(tensors)
    return model, meta


# --- the pretraining loop: train_lm (its data and row order: the section comment above) ------------

def train_lm(model, train, *, steps, batch_size, lr, val=None, grad_accum=1, warmup=0, decay_steps=None,
             min_lr=None, weight_decay=0.1, betas=(0.9, 0.95), grad_clip=1.0, seed=0, eval_every=0,
             log_every=10, ckpt=None, ckpt_every=0, resume=False, meta=None,
             compile=False, bf16=False, run=None, desc="lm", progress=True,
             afresh="pass --resume=False to start afresh"):
    """Train `model` (a GPT, uncompiled, on its device) on `train` (see the section comment) for
    `steps` optimizer steps. A `mask` in `train` counts only chosen targets (pack_pairs' responses); the
    experiments' fine-tunes use `finetune` (above) instead, which trains a few positions per row for less.

    batch_size rows per micro-step per rank; the global batch is batch_size * grad_accum * world_size.
    LR: get_lr with decay_steps (default steps) and min_lr (default lr / 10). Only parameters with
    requires_grad train. At every multiple of eval_every steps (step 0 included; a resumed run keeps the same steps)
    and at the end (eval_every 0: never), the mean loss on `val`. Every log_every steps one line (step,
    loss, lr, ms/step, tokens/s, MFU against a known GPU's bf16 peak), also logged with `run.log` (metrics.jsonl) when
    a `run` is given. Checkpoint `ckpt` (a path stem) every ckpt_every steps and at the
    end, with the resume state (unless nothing trained: a finished run rerun keeps its checkpoint). resume=True
    continues from `ckpt`'s resume state when it exists (same numbers as an uninterrupted run); a checkpoint that
    cannot be resumed is a CheckpointError ending in `afresh`, the caller's way to start over.
    `meta` is merged into each checkpoint's JSON (e.g. {"tokenizer": "tokenizer.json"}).
    Under torchrun (see ddp_setup) the model is wrapped in DistributedDataParallel; rank 0 logs and saves.
    Returns {"history": [records], "step", "start_step" (> 0 when resumed), "train_loss", "val_loss", "seconds"}."""
    # the data checked first, in one line each, before any work
    for what, data in (("data", train), ("val data", val)):
        if data is None and what == "val data":  # (val is optional; a train of None is refused below)
            continue
        tokens = data.get("tokens") if isinstance(data, dict) else None
        # a 1-D token stream (lm_windows not applied), a bare tensor or no rows: else an IndexError or ZeroDivisionError
        if not (torch.is_tensor(tokens) and tokens.dim() == 2 and not tokens.is_floating_point()
                and tokens.shape[0] >= 1 and tokens.shape[1] >= 2):
            got = f"tokens of shape {list(tokens.shape)}" if torch.is_tensor(tokens) else type(data).__name__ + (
                f" with keys {sorted(data)}" if isinstance(data, dict) else "")
            raise ValueError(f"train_lm's {what} is {{'tokens': [N, T+1] token ids, N >= 1}} (and optionally 'mask' "
                             f"[N, T]): rows of a token stream by lm_windows(stream, block_size), or pack_pairs' "
                             f"output; got {got}")
        # else torch's "index out of range" deep in the embedding (or a device-side assert on CUDA)
        low, high, V = int(tokens.min()), int(tokens.max()), model.cfg.vocab_size
        if low < 0 or high >= V:
            raise ValueError(f"train_lm's {what} holds token ids {low} .. {high}, outside the model's vocabulary "
                             f"0 .. {V - 1}: a tokenizer larger than the model's vocab_size?")
        if data.get("mask") is not None and not data["mask"].any():  # a loss over no target: nan, or 0.0 in eval_lm
            raise ValueError(f"train_lm's {what} has a mask with no target in it: nothing to train or evaluate on")

    if batch_size < 1 or grad_accum < 1:  # else torch.cat's "expected a non-empty list" at the first step
        raise ValueError(f"batch_size and grad_accum must be >= 1, got {batch_size} and {grad_accum}")

    # the run's constants and optimizer
    rank, world = _dist()
    device = next(model.parameters()).device
    decay_steps = steps if decay_steps is None else decay_steps
    min_lr = lr / 10 if min_lr is None else min_lr
    tokens, mask = train["tokens"], train.get("mask")  # [N, T+1], [N, T] or None
    N, T = tokens.shape[0], tokens.shape[1] - 1
    G = batch_size * grad_accum * world  # rows per optimizer step
    opt = make_lm_optimizer(model, lr, weight_decay, betas)
    # what a resume must continue with: opt.load_state_dict would put back the saved betas and weight decay without a
    # word, another decay_steps (a longer run given no decay_steps) would restart the cosine mid-run, and the other
    # precision (or compiled kernels, which round otherwise) would compute the rest of the run in it, all reported as
    # one run's
    schedule = {"lr": lr, "warmup": warmup, "decay_steps": decay_steps, "min_lr": min_lr,
                "weight_decay": weight_decay, "betas": list(betas), "grad_clip": grad_clip, "bf16": bf16,
                "compile": bool(compile)}
    if ckpt is not None:  # and the same rows: on other data the saved stream position goes on over other rows
        hashed = {"tokens": tokens.cpu().long(), **({"mask": mask.cpu().float()} if mask is not None else {})}
        schedule["data_sha256"] = tensors_sha256(hashed)[:16]  # (~0.05 s for 5M tokens)
    meta = dict(meta or {})
    tokenizer_name = meta.pop("tokenizer", None)

    # resume: the weights, optimizer, RNG and stream position from ckpt's resume state, when asked and there is one
    step, position = 0, 0  # optimizer steps done, rows of the data stream consumed
    rewrite_files = False  # set when the .safetensors/.json beside the resumed state do not hold its step and weights
    # (an earlier step, missing, damaged): they are then written again from it, before the loop
    resumed_metrics = {}  # the resumed checkpoint's: a finished run rerun trains nothing and reports them
    carried = None  # the resumed log interval's steps before the checkpoint, and their summed loss
    state_path = None if ckpt is None else state_file(ckpt)
    if resume and state_path is not None and state_path.is_file():
        if bad := torch_file_damage(state_path):  # else loaded as other numbers: resumed, or written over the weights
            raise CheckpointError(f"{state_path} is damaged (its record {bad} does not match the checksum saved with "
                                  f"it): delete it to start from the beginning, or {afresh} (the weights beside it, "
                                  f"{Path(str(ckpt)).name}.safetensors, load on their own if their checksum holds)")
        try:
            state = torch.load(state_path, map_location=device, weights_only=False)
        except Exception:  # truncated or not a torch file (torch's message, several sentences, says no more)
            raise CheckpointError(f"{state_path} is unreadable (cut short, or not a torch file): delete it to start "
                                  f"from the beginning, or {afresh}") from None
        state_has_weights = isinstance(state, dict) and "model" in state  # (states since 2026-12-04)
        if state_has_weights and not (isinstance(state["model"], dict)
                                      and all(isinstance(t, torch.Tensor) for t in state["model"].values())):
            # made or edited by hand: not weights (it failed below with an AttributeError)
            raise CheckpointError(f"{state_path} is not a resume state of this run (its \"model\" is no weights): "
                                  f"delete it to start from the beginning, or {afresh}")
        if state_has_weights:  # one file, renamed into place at once: the .safetensors beside it may be a step behind
            tensors, saved = state["model"], {"model_config": state.get("model_config"), "step": state.get("step"),
                                              "metrics": state.get("metrics")}
            # stopped after the state's rename, or the files damaged or deleted since: the .safetensors and .json are
            # rewritten from the state (below), also when a finished run is rerun (nothing to train). Checked by rank
            # 0 only, the one that writes them (the other ranks would read a copy of the weights for nothing)
            if rank == 0:
                try:
                    on_disk, disk_meta = load_weights(ckpt, "cpu")
                    rewrite_files = (disk_meta.get("step") != state.get("step") or on_disk.keys() != tensors.keys()
                                     or not all(on_disk[k].dtype == tensors[k].dtype
                                                and torch.equal(on_disk[k], tensors[k].cpu()) for k in tensors))
                except (CheckpointError, OSError):  # missing, unreadable (or not ours to read), .json not an object
                    rewrite_files = True
        else:  # an older state: the weights are the .safetensors beside it, which must be of its step (checked below)
            try:
                tensors, saved = load_weights(ckpt, device)
            except CheckpointError as e:  # the run's own checkpoint: what wrote it is this very command
                raise CheckpointError(f"{str(e).removesuffix(RERUN)}: {afresh}") from None
        try:
            _check_gpt_checkpoint(state_path if state_has_weights else ckpt, saved.get("model_config"), tensors,
                                  expect=model.cfg, one_file=state_has_weights)
        except CheckpointError as e:  # another model's weights (e.g. written by a version with another vocabulary)
            raise CheckpointError(f"{e}: {afresh}") from None
        model.load_state_dict(tensors)
        resumed_metrics = saved.get("metrics") or {}
        try:  # a torch file, but is it this loop's resume state?
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if state["rng"]["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
            step, position = int(state["step"]), int(state["data_position"])
            saved_rows = state.get("rows_per_step")  # absent in states saved before it was recorded
            saved_seed = state.get("seed")  # likewise
            saved_schedule = state.get("schedule")  # likewise
            if isinstance(saved_schedule, dict):  # one saved before `compile` was recorded: not known, so not a change
                saved_schedule = {"compile": schedule["compile"], **saved_schedule}
            carried = state.get("loss_interval")  # absent (or None: at a log line) likewise
            carried = (carried["loss_sum"].to(device), int(carried["steps"])) if carried else None
        except Exception as e:
            raise CheckpointError(f"{state_path} is not a resume state of this run ({type(e).__name__}: {e}): delete "
                                  f"it to start from the beginning, or {afresh}") from None
        # an older state's weights are the .safetensors beside it, which must be of its step (killed while saving, they
        # may not be); a state holding its weights is of its own step
        if not state_has_weights and saved.get("step") != step:
            raise CheckpointError(f"{ckpt}.json is at step {saved.get('step')} but {state_path.name} at step {step}: "
                                  f"the run was stopped while writing this checkpoint, which cannot be resumed "
                                  f"exactly: {afresh}")
        if saved_seed is not None and saved_seed != seed:  # another run's state copied in: its weights went on with
            # this seed's data order (and a finished run's rerun wrote them over its own checkpoint)
            raise CheckpointError(f"{state_path} is the resume state of a run with seed {saved_seed}, this run has "
                                  f"seed {seed} (a file copied from another run?): put back this run's own, or "
                                  f"{afresh}")
        if saved_schedule is not None and saved_schedule != schedule:  # steps may grow: decay_steps keeps the cosine
            diff = "; ".join(f"{k} {saved_schedule.get(k)!r} then, {v!r} now" for k, v in schedule.items()
                             if saved_schedule.get(k) != v)
            hints = {"decay_steps": " (a longer run continues its cosine with decay_steps set to the first run's)",
                     "data_sha256": " (other data: train it from step 0)"}
            hint = next((h for k, h in hints.items() if saved_schedule.get(k) != schedule.get(k)), "")
            raise CheckpointError(f"{state_path} was trained with another schedule, optimizer, precision, compilation "
                                  f"or data: "
                                  f"{diff}{hint}: resume with the same settings, or {afresh}")
        if saved_rows is not None and int(saved_rows) != G:  # e.g. a torchrun run resumed with another process count
            raise CheckpointError(f"{state_path} was trained with {saved_rows} rows per optimizer step, this run takes "
                                  f"{G} (batch_size {batch_size} x grad_accum {grad_accum} x {world} process(es)): "
                                  f"resume with the same number of processes, or {afresh}")
        if rank == 0:  # (the weights' two files, when they did not hold the state's step and weights: said, not silent)
            again = f" (its .safetensors and .json written again from {state_path.name})" if rewrite_files else ""
            print(f"[{desc}] resumed from {ckpt} at step {step}{again}")
        if run is not None and rank == 0:  # metrics.jsonl is appended by every attempt: mark where this one starts
            run.log(stage=desc, resumed_at_step=step)  # (no "step" key: readers of the step records pass it by)
    elif resume and ckpt is not None and rank == 0 and Path(f"{ckpt}.safetensors").is_file():
        # weights without their resume state (deleted by hand, or a weights-only save): they cannot be continued
        # exactly, so the run starts over, and says so rather than silently overwriting them
        print(f"[{desc}] no resume state {state_path.name} beside {ckpt}.safetensors: training from step 0")
    start_step = step

    # the forward the loop calls (compiled, DDP-wrapped), and the helpers it calls: log, evaluate, save
    fwd = torch.compile(model) if compile else model  # `model` stays the plain module we save
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        fwd = DistributedDataParallel(fwd, device_ids=[device] if device.type == "cuda" else None)
    autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=bf16)
    flops, peak = model.flops_per_token(T), peak_flops(device)
    history, train_loss, val_loss, perms = [], resumed_metrics.get("train_loss"), resumed_metrics.get("val_loss"), {}

    def log(record):
        history.append(record)
        if run is not None and rank == 0:
            run.log(**record)

    def evaluate():
        nonlocal t_log
        t = time.time()
        model.eval()
        v = eval_lm(model, val, batch_size, bf16=bf16)
        model.train()
        log({"stage": desc, "step": step, "val_loss": v})
        if rank == 0:  # printed too: the curve a run is watched by, not only in metrics.jsonl
            (tqdm.write if progress else print)(f"[{desc}] step {step:5d} | val loss {v:.4f}")
        t_log += time.time() - t  # keep evaluation out of ms/step
        return v

    def save(with_state, loss_interval=None):  # to ckpt
        if rank == 0:
            save_lm(ckpt, model, step=step, seed=seed, metrics={"train_loss": train_loss, "val_loss": val_loss},
                    tokenizer=tokenizer_name, optimizer=opt if with_state else None, data_position=position,
                    rows_per_step=G, extra=meta, loss_interval=loss_interval, schedule=schedule)

    if rewrite_files:  # now, even if nothing is left to train: load_lm and world_base's cache read those files
        save(with_state=False)

    # the loop: its running state (the loss since the last log line, and its timing), then the steps
    loss_sum = torch.zeros((), device=device)  # summed step losses since the last log line (no sync per step)
    t_log, steps_since, untimed = time.time(), 0, 0  # untimed: steps of this interval before the resume
    diverged = False  # a log line had a loss that is not finite (said once)
    if carried and carried[1]:  # resumed inside a log interval: its line is the mean over all of its steps
        if rank == 0:  # the saved sum is every rank's
            loss_sum += carried[0]
        steps_since = untimed = carried[1]
    t_start = time.time()
    model.train()
    # disable=None: a bar on a terminal only, so that a log redirected to a file holds the log lines alone; gone when
    # done, as the MNIST phases' bars (progress_bar)
    bar_off = True if not progress or rank != 0 else None
    for it in tqdm(range(step, steps), desc=desc, disable=bar_off, initial=step, total=steps, leave=False, unit="step"):
        # here step == it: the number of optimizer steps done
        if val is not None and eval_every and step == 0:  # the untrained model's loss (later ones: after each step)
            val_loss = evaluate()
        for group in opt.param_groups:
            group["lr"] = get_lr(step, lr=lr, warmup=warmup, decay_steps=decay_steps, min_lr=min_lr)
        rows = stream_rows(N, seed, position, G, device, perms)  # [G], the same on every rank
        n_counted = mask[rows].sum().clamp_min(1) if mask is not None else G * T  # targets in the global batch
        for micro in range(grad_accum):
            mine = rows[(micro * world + rank) * batch_size:][:batch_size]  # [b] this rank's rows
            x, y = tokens[mine, :-1], tokens[mine, 1:]  # [b, T]
            # DDP all-reduces the gradients at the last micro-step only (no_sync before it)
            sync = fwd.no_sync() if world > 1 and micro < grad_accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast():
                    per_tok = fwd(x, targets=y)  # [b, T]
                if mask is not None:
                    per_tok = per_tok * mask[mine]  # [b, T]; masked targets contribute exactly zero gradient
                # DDP averages gradients over ranks, so each rank's sum is scaled by world / n_counted: the mean
                # over the global batch's counted targets
                loss = per_tok.sum() * (world / n_counted)
                loss.backward()
            loss_sum += loss.detach()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, position, steps_since = it + 1, position + G, steps_since + 1

        if log_every and (step % log_every == 0 or step == steps):
            if world > 1:
                dist.all_reduce(loss_sum)
            train_loss = loss_sum.item() / world / steps_since  # .item() syncs with the device: once per interval
            dt = (time.time() - t_log) / (steps_since - untimed)
            record = {"stage": desc, "step": step, "loss": train_loss, "lr": opt.param_groups[0]["lr"],
                      "ms_per_step": 1000 * dt, "tokens_per_s": G * T / dt}
            if peak:
                record["mfu"] = flops * record["tokens_per_s"] / world / peak
            log(record)
            if rank == 0:
                line = (f"[{desc}] step {step:5d} | loss {train_loss:.4f} | lr {record['lr']:.2e} | "
                        f"{record['ms_per_step']:.1f} ms/step | {record['tokens_per_s']:,.0f} tok/s")
                (tqdm.write if progress else print)(line + (f" | mfu {record['mfu']:.1%}" if peak else ""))
                if not math.isfinite(train_loss) and not diverged:  # every later number would be nan too: say why
                    diverged = True
                    (tqdm.write if progress else print)(f"warning: [{desc}] the loss is not finite at step {step} "
                                                        f"(training diverged): lower lr (now {lr:g}) or raise warmup")
            loss_sum.zero_()
            t_log, steps_since, untimed = time.time(), 0, 0
        if val is not None and eval_every and step % eval_every == 0 and step < steps:  # (the last one: below)
            val_loss = evaluate()  # before a checkpoint of this step, whose metrics then pair both losses of its step
        if ckpt is not None and ckpt_every and step % ckpt_every == 0 and step < steps:
            interval = loss_sum.clone()  # the steps since the last log line, for a resume from here
            if world > 1:
                dist.all_reduce(interval)
            save(with_state=True, loss_interval={"loss_sum": interval.cpu(), "steps": steps_since})

    if steps_since:  # steps after the last log line (or no logging at all)
        if world > 1:
            dist.all_reduce(loss_sum)
        train_loss = loss_sum.item() / world / steps_since
    if val is not None and eval_every:
        val_loss = evaluate()
    if ckpt is not None and step > start_step:  # a finished run rerun trains nothing: its checkpoint stays as it was
        save(with_state=True)
    return {"history": history, "step": step, "start_step": start_step, "train_loss": train_loss,
            "val_loss": val_loss, "seconds": time.time() - t_start}


# ----------------------------------------------------------------------------------------------------
# entry point: cli (the project's errors and signals -> one line and an exit status), the out_dir's lock,
# --help for a config, run_experiment (config -> Run -> the experiment's run), main

def refused(text):
    """A refused command's message on stderr -> its exit status, 2. What the command printed before comes before it,
    also when stdout is a pipe or file (block-buffered)."""
    flush_stdout()
    print(text, file=sys.stderr)
    return 2


def stdout_closed():
    """Whether stdout is a pipe whose reader has gone (`... --help | head` took its lines and left): a poll reports an
    error on the pipe's end (Linux; where poll cannot tell, False)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, ValueError, OSError):  # no poll (Windows), a stdout without a file (a test's capture)
        return False


def flush_stdout():
    """Flush stdout -> False when its reader has gone, stdout then sent to /dev/null (quiet_stdout)."""
    try:
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        quiet_stdout()
        return False


def quiet_stdout():
    """stdout to /dev/null, its reader gone: what is left of it goes nowhere, and Python's own flush at exit does not
    fail again with a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def out_of_memory(e):
    """The RuntimeError `e` said in a few words if it is an allocation that failed (torch's CUDA out-of-memory error,
    or the CPU allocator refusing a huge tensor), else None. A CPU run more often meets the kernel's OOM killer,
    which ends the process with no chance to say anything."""
    text = str(e).strip()
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return " ".join(re.split(r"(?<=\.) ", text.splitlines()[0] if text else "CUDA out of memory.")[:2])
    found = re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", text)
    return f"the CPU could not allocate {int(found[1]) / 2**30:.1f} GiB" if found else None


def keep_freed_memory():
    """Have glibc keep freed memory for the next tensor (the process's allocator setting; a no-op off glibc). By
    default glibc hands big freed blocks back to the system (each mmap'd one, and the heap's free top), and the next
    tensor of that size page-faults it in afresh, 4 KB at a time: on a CPU, for the eval's 10-40 MB activations and
    KV caches, the faults cost more than the copies themselves (the EM quick config: 25x fewer faults, 15% faster).
    Freed memory is then kept for reuse until the process ends; the peak stays about what it was (heap fragmentation
    may add some)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks up to 1 GB from the heap, not a mapping each
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB free at the heap's top, not returned
    except (OSError, AttributeError):  # a libc without mallopt (musl): its own allocator, left as it is
        pass


TF32_BACKENDS = (torch.backends.cuda.matmul, torch.backends.cudnn)  # each with its process-wide allow_tf32 flag


def use_tf32(device, on):
    """TF32 matmuls and cuDNN convolutions on CUDA, as `on` says; on another device nothing. Process-wide: cli puts the
    flags back once the command ends (torch_settings_kept)."""
    if device.type == "cuda":
        for backend in TF32_BACKENDS:
            backend.allow_tf32 = on


@contextlib.contextmanager
def torch_settings_kept():
    """torch's process-wide settings that a command may change (its thread count, `threads`; TF32 matmuls on CUDA,
    `tf32`) put back as they were once the block ends: a command run in process (a notebook, the tests) leaves its
    caller's alone (full-precision matmuls kept, not TF32 ones)."""
    def tf32():  # None where torch >= 2.9 refuses the legacy read (TF32 set through its fp32_precision API)
        flags = []
        for backend in TF32_BACKENDS:
            try:
                flags.append(backend.allow_tf32)
            except RuntimeError:
                flags.append(None)
        return flags
    threads, kept = torch.get_num_threads(), tf32()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        # only a flag the command changed is written back: writing one unchanged turns a caller's
        # set_float32_matmul_precision("medium") into "high" (torch >= 2.9: a mix of APIs that its getter refuses)
        for backend, was, now in zip(TF32_BACKENDS, kept, tf32()):
            if was is not None and now != was:
                backend.allow_tf32 = was


def printable_output():
    """A command's stdout and stderr in an encoding that lacks some of its characters (the tables' ±, ‖, Δ: an ASCII
    locale, or Windows' cp1252 when the output goes to a file) write those as escapes (\\xb1): strict, the table
    printed after the results were saved failed with a UnicodeEncodeError, at every rerun."""
    for stream in (sys.stdout, sys.stderr):
        # (surrogateescape: an ASCII locale with Python's UTF-8 mode off; it fails on the same characters)
        if getattr(stream, "errors", None) in ("strict", "surrogateescape") and hasattr(stream, "reconfigure"):
            with contextlib.suppress(OSError, ValueError):  # (a closed stream, or a pipe already gone: left as is)
                stream.reconfigure(errors="backslashreplace")


def cli(main, argv, keeps=True):
    """Run main(argv) as a command: the project's own errors (a bad config or run directory, missing or corrupt data, an
    incompatible checkpoint) end it with their one-line message and exit status 2, not a traceback, and so do a file it
    may not read or write, a full disk (a quota, a file size limit, a read-only disk), memory it could not get (torch's,
    numpy's or Python's), and a pool worker killed outright; Ctrl-C ends it with one line too, and so does SIGTERM (a
    scheduler's stop, `timeout`, `kill`), which is stopped the same way (a pool's workers stopped, a temporary file
    removed), with exit status 143. That line says what was saved stays, or, with keeps=False (a command that saves
    nothing: bench.py), only that it stopped. A reader of stdout that leaves early (`| head`) ends it quietly with 141,
    a shell's status for a command stopped that way."""
    keep_freed_memory()
    printable_output()
    terminated = []

    def on_sigterm(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt
    # not under torchrun, whose agent stops its workers with SIGTERM and then waits for them: a worker blocked in a
    # collective would only run this handler once the collective returned (and Python sets handlers in its main
    # thread only)
    handle_sigterm = threading.current_thread() is threading.main_thread() and "TORCHELASTIC_RUN_ID" not in os.environ
    previous = signal.signal(signal.SIGTERM, on_sigterm) if handle_sigterm else None
    try:
        with torch_settings_kept():
            rc = main(argv)
    except BrokenPipeError:
        if not stdout_closed():  # another pipe's (a worker's): a failure, raised as it came
            raise
        quiet_stdout()
        return 141
    except (ConfigError, DataError, CheckpointError) as e:
        return refused(f"error: {e}")
    except PermissionError as e:  # a folder or file of the user's that this user may not read or write
        what = f"{e.filename}{f' -> {e.filename2}' if e.filename2 else ''}" if e.filename else str(e)
        return refused(f"error: permission denied: {what}: give this user access to it, or pass another path "
                       f"(--out_dir, --data_dir, --cache_dir)")
    except OSError as e:
        if not write_stopped(e):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        room = {errno.ENOSPC: "free some, or ", errno.EDQUOT: "free some of your quota, or ",
                errno.EFBIG: "raise the file size limit (`ulimit -f`), or "}.get(e.errno, "")
        # (eval.py rewrites in the run's own folder, and a script's option is --out: not every command has --out_dir)
        return refused(f"error: {WRITE_STOPPED[e.errno]}{where}: {room}write elsewhere (--out_dir, --cache_dir, "
                       f"--data_dir; a script's --out); what was saved before stays")
    except concurrent.futures.process.BrokenProcessPool:  # (a RuntimeError) a worker of parallel_map died
        return refused("error: a worker process was killed, most often by the system's out-of-memory killer (`dmesg` "
                       "says); lower --workers, or n_seeds or the sizes; what was saved before stays, and the same "
                       "command run again reuses it")
    except (RuntimeError, MemoryError) as e:  # (numpy's and Python's own allocations raise MemoryError)
        said = out_of_memory(e) if isinstance(e, RuntimeError) else (str(e).strip() or "an allocation failed")
        if said is None:
            raise
        return refused(f"error: out of memory: {said.rstrip('.')}. Lower n_seeds, batch_size or the model's size "
                       f"(or --workers), or use a device with more memory; what was saved before stays")
    except KeyboardInterrupt as e:  # run_experiment names its run directory: a default out_dir is new each time
        flush_stdout()
        rerun = e.args[0] if e.args else "the same command run again"
        # "anything": a run stopped before its first unit or checkpoint has saved nothing, and starts again from zero
        kept = (f" Anything saved before it (finished units, base models, checkpoints) stays, and {rerun} reuses it."
                if keeps else " It saves nothing; what it printed so far is above.")
        print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}.{kept}", file=sys.stderr)
        return 143 if terminated else 130  # a shell's codes for a run stopped by SIGTERM, by Ctrl-C
    except SystemExit as e:  # a script's sys.exit(message): said as the errors above are, after what was printed
        if not isinstance(e.code, str):  # sys.exit(0), sys.exit(cli(...)): a status, not a refusal
            if not flush_stdout():  # (a usage printed for --help, into `| head`)
                return 141
            raise
        message, usage = e.code.strip(), (getattr(sys.modules.get(main.__module__), "__doc__", None) or "").strip()
        # the usage (a script given nothing to do) as it is; anything else one "error: " line, as a ConfigError's
        return refused(message if message == usage or message.startswith("error: ") else f"error: {message}")
    finally:
        release_read_locks()  # (the runs it read: a rerun of theirs may go on now)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not flush_stdout():  # here, not in Python's flush at exit, where it would be a traceback
        return 141
    return rc if isinstance(rc, int) else 0


def lock_run_dir(path):
    """Lock the run directory `path` (its own file descriptor: no lock file left behind) -> the descriptor to close
    at the end, or None without file locks. A second command into the same out_dir while one runs there is refused:
    both would write the same files at once, and its --resume=False would delete the other run's. So is one while
    eval.py or a script reads the run (hold_for_reading), whose files it would rewrite or delete under them."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    release_read_locks(fd)  # this process's own reading of the run is no other command's (a notebook's, a test's)
    deadline = time.monotonic() + 1  # (another command's look at the folder, not_being_written, holds it an instant)
    while (held := lock_file(fd, wait=False)) is False and time.monotonic() < deadline:
        time.sleep(0.02)
    if held:
        return fd
    os.close(fd)
    if held is False:
        raise ConfigError(f"another command is using {path} now (a run writing into it, or eval.py or a script "
                          f"reading it): let it finish (or stop it) before you rerun this command, or use another "
                          f"--out_dir")
    return None


_READ_LOCKS = []  # the run directories this command reads (their descriptors, locked shared): released by cli


def hold_for_reading(run_dir):
    """Lock the run directory `run_dir` shared while this command reads it (until train.cli returns, or the process
    ends): a command that would write the run (its rerun, whose --resume=False deletes its files) is refused
    meanwhile, where it deleted a finished run's files under eval.py or a script, which then reported the run as
    unfinished, or wrote the old run's numbers into the new one's folder. Readers do not exclude each other.
    -> False if a command is writing the run now (lock_run_dir's lock), else True (held, or no locks here)."""
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:  # (not a folder: said by the caller's own checks)
        return True
    held = lock_file(fd, wait=False, shared=True)
    if held:
        _READ_LOCKS.append(fd)
    else:
        os.close(fd)
    return held is not False


def release_read_locks(of=None):
    """Drop the locks hold_for_reading took (a command's end), or, given the open folder `of`, those on it (this
    process about to write the run it read: its own lock would refuse it)."""
    same = lambda fd: of is None or os.path.sameopenfile(fd, of)
    for fd in [fd for fd in _READ_LOCKS if same(fd)]:
        _READ_LOCKS.remove(fd)
        os.close(fd)


def not_being_written(run_dir):
    """A ConfigError while a command holds the run directory's lock: a run still going, or a finished one's command
    run again, whose --resume=False deletes what a script would read, and rerunning the command meanwhile is refused
    (so a script reading runs says so, not "run its command again"). Else the run is held for reading
    (hold_for_reading) until the command ends."""
    if not hold_for_reading(run_dir):
        raise ConfigError(f"{run_dir}: a command is writing this run now (the run still going, or its command run "
                          f"again): wait for it to finish")


def config_help(argv):
    """--help after a config: every key as that config (and the command's other overrides) sets it, its type, and
    the comment beside it in the experiment's Config."""
    module, cfg = load_config(argv, resolve=False)
    notes, last, col = {}, None, None  # a field's comment, with the lines under it aligned with it
    source = [inspect.getsource(c) for c in module.Config.__mro__ if dataclasses.is_dataclass(c)]  # inherited keys too
    for line in "\n".join(reversed(source)).splitlines():  # a subclass's comment last: it overrides its base's
        # a field "key: type = default  # note" starts a note; a comment line under it, at its "#" column, continues it
        if m := re.match(r"\s+(\w+):[^#]*#\s*(.*)$", line):
            last, col, notes[m[1]] = m[1], line.index("#"), m[2]
        elif last and re.match(r"\s*#", line) and line.index("#") == col:
            notes[last] += " " + line[col + 1:].strip()
        else:
            last = None
    hints = typing.get_type_hints(module.Config)

    def name(t):  # Optional[float] -> "float|None"
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return f"{name(args[0])}|None" if typing.get_origin(t) is typing.Union and len(args) == 1 else \
            getattr(t, "__name__", str(t))

    default = module.Config()
    # a key the config (or the command) sets otherwise shows the default too: the comment may be written against it
    # ('or "blocks": ...' beside a value of "blocks")
    was = lambda k: f"(default: {getattr(default, k)}) " if getattr(cfg, k) != getattr(default, k) else ""
    # a key the sweep sets: its cells' values, and that the command line may not give it (run_experiment refuses)
    sweep = getattr(cfg, "sweep", None) if isinstance(getattr(cfg, "sweep", None), dict) else {}
    swept = lambda k: f"(swept: {sweep[k]!r}; --sweep=\"{{}}\" to set it here) " if k in sweep else ""
    rows = [(f"--{f.name}={getattr(cfg, f.name)}", name(hints[f.name]), swept(f.name) + was(f.name)
             + notes.get(f.name, "")) for f in dataclasses.fields(cfg)]
    width = min(36, max(len(r[0]) for r in rows))  # a long value (a tuple) pushes only its own line's text along
    return "\n".join([f"{argv[0]} runs experiments/{module.__name__.split('.')[-1]}.py with these keys; override any "
                      f"with --key=value:"] + [f"  {a:<{width}}  {t:<6} {n}".rstrip() for a, t, n in rows])


def run_experiment(argv):
    # --help, alone or after a config
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {USAGE}\nconfigs: {available_configs()}")
        return
    if "-h" in argv[1:] or "--help" in argv[1:]:
        print(config_help([a for a in argv if a not in ("-h", "--help")]))
        return

    # the config, checked whole before anything is written
    module, cfg = load_config(argv)  # (which refuses a Config without out_dir, where Run writes the run)
    if hasattr(module, "validate"):  # the one check of a config's keys against each other, before the run
        # directory exists: a bad config leaves nothing behind
        module.validate(cfg)
    # every cell of a sweep takes the sweep's value: a key typed on the command line as well would be dropped, without
    # a word when it equals the default (the experiment's own check can only see values other than the default)
    sweep = getattr(cfg, "sweep", None)
    # each key once, in order (a key given twice is allowed); load_config checked that each argument is --key=value
    given = dict.fromkeys(a[2:].split("=", 1)[0] for a in argv[1:])
    if isinstance(sweep, dict) and (both := [k for k in given if k in sweep]):
        raise ConfigError(f"{', '.join(f'--{k}' for k in both)}: given on the command line, and the run sweeps "
                          f"{'them' if len(both) > 1 else 'it'} ({', '.join(f'{k}: {sweep[k]!r}' for k in both)}), so "
                          f"every cell would take the sweep's values: add --sweep=\"{{}}\" to run the one value, or "
                          f"give the values as the sweep's (--sweep=\"{{'{both[0]}': [...]}}\")")
    if getattr(cfg, "threads", 0):  # before the run directory, so that env.json records the count the run uses
        torch.set_num_threads(cfg.threads)

    # the out_dir: the folders it will make noted (to remove them if the run is refused), then made and locked
    out = Path(cfg.out_dir).absolute()
    if why := path_problem(out / "config.json"):
        raise ConfigError(f"out_dir {cfg.out_dir}: {why}: pass another --out_dir")
    # the folders Run's mkdir will make (through a new folder and "..", it makes that folder too), normalised
    norm = lambda d: Path(os.path.abspath(d))
    made = {norm(d) for d in (out, *out.parents) if d.name not in (".", "..") and not d.exists()
            and not norm(d).exists()}
    had_run = (out / "config.json").exists()  # before this command
    lock_fd = None
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone makes, locks and cleans the folder
    if load_config(argv, resolve=False)[1].out_dir == "" and "RANK" not in os.environ:
        # a new out/<config>/<UTC time>: a second command started in the same second (`... & ...`) found this
        # command's folder locked, or its run's config.json. Each takes the first name it makes itself: <time>-2, ...
        # (not under torchrun, whose ranks must agree on the folder: lm refuses ranks that chose different ones)
        stamp, made = out.name, made - {norm(out)}
        for n in itertools.count(2):
            try:
                out.mkdir(parents=True)
                break
            except FileExistsError:
                out = out.with_name(f"{stamp}-{n}")
            except OSError:  # no permission, a file in the way: said below, where a given out_dir's would be
                break
        made.add(norm(out))
        had_run = False
        cfg = dataclasses.replace(cfg, out_dir=str(Path(cfg.out_dir).with_name(out.name)))
    if rank0:  # before Run, whose --resume=False deletes the folder's files
        with contextlib.suppress(OSError):  # a file in the way: Run says so
            out.mkdir(parents=True, exist_ok=True)
        lock_fd = lock_run_dir(out) if out.is_dir() else None
        # a folder without a run's config.json may be the user's: only a run's first write (config.json), cut short
        # by a kill, goes there (it stayed after the rerun that then made the run)
        n = 0
        if lock_fd is not None:
            n = remove_cut_short(out, "*.tmp" if had_run else "config.json.*.tmp")
            if had_run:  # and in the run's own subfolders (the oracle's units)
                n += sum(remove_cut_short(out / d) for d in RUN_SUBFOLDERS if (out / d).is_dir())
        if n:
            print(f"removed {n} temporary file(s) that a command stopped mid-write left in {out}")

    # the run; a new one refused at its start leaves nothing behind
    run = None
    try:
        run = Run(cfg, module.__name__.split(".")[-1], argv=[sys.argv[0], *argv])
        module.run(cfg, run)
    except KeyboardInterrupt:
        # the default out_dir is a new out/<config>/<UTC time> at each command: "the same command" would start afresh;
        # and with --resume=False it would delete what this one saved
        again = " and without --resume=False" if getattr(cfg, "resume", None) is False else ""
        raise KeyboardInterrupt(f"the same command with --out_dir={shlex.quote(str(out))}{again}") from None
    except (DataError, ConfigError) as e:
        # a new run that stopped for its data before making anything leaves nothing behind, as a bad config: not its
        # config.json and env.json, nor the folders it made. Only empty folders are removed (rmdir), so another
        # run or a download that wrote under a folder made here keeps it; under torchrun rank 0 alone cleans up.
        # So does one that an experiment's own checks at the start of run refused (EM's n_direction_docs): its
        # config.json refused the corrected command into the same out_dir as "another config". Not where the run
        # wrote anything besides Run's files (a unit file), nor where Run itself refused the folder.
        logged = (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0
        only_run_files = (run is not None
                          and {f.name for f in out.iterdir()} <= {"config.json", "env.json", "metrics.jsonl"})
        clean_up = not had_run and not logged and (isinstance(e, DataError) or only_run_files)
        if rank0:
            if clean_up:
                for name in ("config.json", "env.json", "metrics.jsonl"):
                    (out / name).unlink(missing_ok=True)
            # where Run refused the folder it wrote nothing: the folders made above for it go too (an out_dir in
            # figures/ was left there, empty)
            if clean_up or run is None:
                for d in sorted(made, key=lambda d: len(d.parts), reverse=True):  # deepest first
                    try:
                        d.rmdir()
                    except OSError:  # not empty (someone else's files), or already gone
                        pass
        raise
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def main(argv):
    if not argv:  # the usage alone, as every command prints it given no arguments (not as an error: line)
        print(f"usage: {USAGE}\nconfigs: {available_configs()}", file=sys.stderr)
        return 2
    return cli(run_experiment, argv)


if __name__ == "__main__":
    # run main from the importable module `train`, not from `__main__`: experiments import `train`, and
    # the errors they raise must be the very classes that main() catches
    import train
    commands.run(train.main, sys.argv[1:])
