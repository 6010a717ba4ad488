"""The config loader: a Python file + --key=value overrides -> a frozen, type-checked dataclass."""
import contextlib
import dataclasses
import errno
import io
import json
import math
import os
import re
import subprocess
import sys
import threading
import time

from pathlib import Path

import pytest
import torch

import train
from conftest import ROOT, readme_block
from train import ConfigError, _check_type, load_config


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "exp.py"
    p.write_text('experiment = "subliminal_mnist"\nm = 5\nlr = 1e-3\n_private = 3\n')
    return str(p)


def test_file_values_and_override_precedence(cfg_file):
    _, cfg = load_config([cfg_file, "--m=7", "--device=cpu"])
    assert cfg.m == 7 and cfg.lr == 1e-3 and cfg.device == "cpu"  # CLI beats file beats defaults
    assert cfg.width == 256
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.m = 3
    # a key given twice takes its last value, as argparse does: a command extended with overrides (the tests' tiny
    # configs, a shell variable of defaults) says what ran in config.json
    _, cfg = load_config([cfg_file, "--m=7", "--device=cpu", "--m=8"])
    assert cfg.m == 8


def test_unknown_key_lists_valid_keys_and_hints(cfg_file):
    with pytest.raises(ConfigError) as e:
        load_config([cfg_file, "--n_seed=3"])
    assert "Did you mean 'n_seeds'" in str(e.value) and "distill_epochs" in str(e.value)
    with pytest.raises(ConfigError, match="unknown config key 'N_SEEDS' in the command line. Did you mean 'n_seeds'"):
        load_config([cfg_file, "--N_SEEDS=3"])  # (no suggestion in another case)


def test_wrong_type_and_int_to_float(cfg_file):
    with pytest.raises(ConfigError, match="'m' must be int"):
        load_config([cfg_file, "--m=2.5"])
    with pytest.raises(ConfigError, match="'m' must be int"):
        load_config([cfg_file, "--m=True"])  # a bool is not an int here
    with pytest.raises(ConfigError, match="'download' must be bool"):
        load_config([cfg_file, "--download=1"])
    _, cfg = load_config([cfg_file, "--lr=1"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    with pytest.raises(ConfigError, match="'lr' must be float, got bool"):
        load_config([cfg_file, "--lr=True"])  # an int becomes a float, but a bool is no number: not lr = 1.0
    # in a config file, the error names the file (as an unknown key there does); on the command line it needs not
    Path(cfg_file).write_text('experiment = "subliminal_mnist"\nlr = "fast"\n')
    with pytest.raises(ConfigError, match=re.escape(f"config key 'lr' must be float, got str 'fast' (in {cfg_file})")):
        load_config([cfg_file])
    Path(cfg_file).write_text('experiment = "subliminal_mnist"\nm = 5\nlr = 1e-3\n_private = 3\n')  # as it was
    with pytest.raises(ConfigError, match="'m' must be int, got float 2.5$"):
        load_config([cfg_file, "--m=2.5"])
    _, cfg = load_config([cfg_file, "--conditions=['teacher']", "--sweep={'m': [1, 2]}"])
    assert cfg.conditions == ("teacher",) and cfg.sweep == {"m": [1, 2]}
    # a dict says how to write one, as a tuple does (it said only "must be a dict, got 'm=3'")
    want = ("'sweep' must be a dict, got 'm=3': on the command line write it as Python, "
            "e.g. \"--sweep={'a': 1, 'b': [2, 3]}\"")
    with pytest.raises(ConfigError, match=re.escape(want)):
        load_config([cfg_file, "--sweep=m=3"])
    with pytest.raises(ConfigError, match="'conditions'.*write every item out"):
        load_config([cfg_file, "--conditions=('teacher',...,'cross_all')"])  # shorthand from prose
    # a value nested deeper than Python's parser goes was its MemoryError or RecursionError, a traceback
    for deep in ("-" * 3000 + "1", "1+" * 3000 + "1"):
        with pytest.raises(ConfigError, match="'m' must be int"):
            load_config([cfg_file, f"--m={deep}"])
        assert load_config([cfg_file, f"--out_dir=out/{deep}"], resolve=False)[1].out_dir == f"out/{deep}"


def test_numbers_at_the_edges_of_a_float_key(cfg_file):
    # float32's largest is a value (the computations' dtype); past it, and an int as large as no float holds (2**1024,
    # float()'s OverflowError), one line
    top = torch.finfo(torch.float32).max
    assert load_config([cfg_file, f"--lr={top!r}"])[1].lr == top
    # and the words float() reads but Python's literals do not (they were "must be float, got str 'nan'")
    # (spaces too: float() strips them)
    for value in ("1e39", str(2 ** 1024), str(-2 ** 1024), "nan", "inf", "-Infinity", " NaN ", "-nan"):
        with pytest.raises(ConfigError, match="'lr' must be a finite number within float32's range"):
            load_config([cfg_file, f"--lr={value}"])


def test_the_command_lines_experiment_beats_the_files_and_a_broken_experiment_is_not_unknown(tmp_path, monkeypatch):
    (tmp_path / "c.py").write_text('experiment = "nonexistent"\n')
    module, _ = load_config([str(tmp_path / "c.py"), "--experiment=subliminal_mnist"], resolve=False)
    assert module.__name__ == "experiments.subliminal_mnist"
    # an experiment whose own import fails (a package not installed) says so: "unknown experiment" hid the reason
    import experiments
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(tmp_path)])
    (tmp_path / "broken_exp.py").write_text("import no_such_package_xyz\n")
    (tmp_path / "c.py").write_text('experiment = "broken_exp"\n')
    with pytest.raises(ModuleNotFoundError, match="no_such_package_xyz"):
        load_config([str(tmp_path / "c.py")])


def test_bad_arguments(cfg_file, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="--key=value"):
        load_config([cfg_file, "m=3"])
    with pytest.raises(ConfigError, match="not found") as e:
        load_config([str(tmp_path / "nope.py")])
    assert "Did you mean" not in str(e.value)
    # a short config of one's own (README "Adding an experiment": configs/coin.py) was near any short name
    real = train.config_files()
    with monkeypatch.context() as m:
        m.setattr(train, "config_files", lambda: sorted(real + ["configs/coin.py"]))
        with pytest.raises(ConfigError, match="not found") as e:
            load_config([str(tmp_path / "nope.py")])
        assert "Did you mean" not in str(e.value)
        with pytest.raises(ConfigError, match=r"not found\. Did you mean configs/coin\.py\?"):
            load_config(["configs/coin"])
    for near in ("subliminal_mnist", "configs/subliminal_mnist", "configs/subliminal_mnst.py"):
        with pytest.raises(ConfigError, match=r"not found\. Did you mean configs/subliminal_mnist\.py\?"):
            load_config([near])
    (tmp_path / "imports.py").write_text('import math\nexperiment = "subliminal_mnist"\nlr = math.pi / 1e4\n')
    assert load_config([str(tmp_path / "imports.py")])[1].lr == math.pi / 1e4  # a module it imports is not a key
    (tmp_path / "noexp.py").write_text("m = 3\n")
    with pytest.raises(ConfigError, match="must name its experiment"):
        load_config([str(tmp_path / "noexp.py")])
    (tmp_path / "bad.py").write_text('experiment = "nonexistent"\n')
    with pytest.raises(ConfigError, match="unknown experiment 'nonexistent'.*subliminal_mnist"):
        load_config([str(tmp_path / "bad.py")])


def test_an_experiment_name_that_is_a_path_or_no_experiment_is_a_config_error(tmp_path, monkeypatch):
    # "../train" and "__init__" were importlib's or an AttributeError's tracebacks
    import types
    for name in ("'../train'", "'__init__'", "3", "'emergent misalignment'"):
        (tmp_path / "c.py").write_text(f"experiment = {name}\n")
        with pytest.raises(ConfigError, match=r"is not an experiment's name\. Known: .*subliminal_mnist"):
            load_config([str(tmp_path / "c.py")])
    monkeypatch.setitem(sys.modules, "experiments.helpers", types.ModuleType("experiments.helpers"))
    (tmp_path / "c.py").write_text('experiment = "helpers"\n')
    with pytest.raises(ConfigError, match=r"experiments/helpers.py has no Config and no run\(cfg, run\): not an"):
        load_config([str(tmp_path / "c.py")])
    # one part missing: named alone (the message named both, whichever was missing)
    import dataclasses as dc
    half = types.ModuleType("experiments.helpers")
    half.Config = dc.make_dataclass("Config", [("out_dir", str, "")])
    monkeypatch.setitem(sys.modules, "experiments.helpers", half)
    with pytest.raises(ConfigError, match=r"experiments/helpers.py has no run\(cfg, run\): not an experiment"):
        load_config([str(tmp_path / "c.py")])
    half.run = lambda cfg, run: None
    del half.Config
    with pytest.raises(ConfigError, match=r"experiments/helpers.py has no Config: not an experiment"):
        load_config([str(tmp_path / "c.py")])
    # a Config that is not a dataclass, or a key without a default: TypeErrors from inside build_config
    import dataclasses as dc
    bad = types.ModuleType("experiments.helpers")
    bad.run, bad.Config = lambda cfg, run: None, dc.make_dataclass("Config", [("n", int), ("out_dir", str, "")])
    monkeypatch.setitem(sys.modules, "experiments.helpers", bad)
    with pytest.raises(ConfigError, match=r"helpers.py: its Config has keys without a default \(n\)"):
        load_config([str(tmp_path / "c.py")])
    bad.Config = type("Config", (), {"n": 3})
    with pytest.raises(ConfigError, match="helpers.py: its Config is not a dataclass"):
        load_config([str(tmp_path / "c.py")])


def test_a_refused_run_is_removed_only_when_it_is_new_and_left_nothing_of_its_own(tmp_path, monkeypatch):
    # a new run that its experiment refuses at the start of run (a ConfigError) or that stops for its data leaves no
    # folder behind; but never a run that wrote a file of its own (a unit), nor the config.json of a run that was
    # there before the command (the earlier session's units would be left without it)
    import types
    from data import DataError
    exp = types.ModuleType("experiments.helpers")
    exp.Config = dataclasses.make_dataclass("Config", [("n", int, 1), ("out_dir", str, ""), ("resume", bool, True)],
                                            frozen=True)
    todo = []  # for each call of run: (the files it writes, the error it then raises)

    def run(cfg, run):
        files, error = todo.pop(0)
        for name in files:
            (Path(cfg.out_dir) / name).write_text("{}")
        raise error
    exp.run = run
    monkeypatch.setitem(sys.modules, "experiments.helpers", exp)
    (tmp_path / "c.py").write_text('experiment = "helpers"\n')
    go = lambda out: train.run_experiment([str(tmp_path / "c.py"), f"--out_dir={out}"])
    todo.append(((), ConfigError("refused at its start")))
    with pytest.raises(ConfigError, match="refused at its start"):
        go(tmp_path / "new" / "a")
    assert not (tmp_path / "new").exists()
    todo.append((("unit_0.json",), ConfigError("refused after a unit")))
    with pytest.raises(ConfigError, match="refused after a unit"):
        go(tmp_path / "b")
    assert {"config.json", "unit_0.json"} <= {f.name for f in (tmp_path / "b").iterdir()}
    todo.append(((), DataError("its data went missing")))  # the same command again: the folder holds that run now
    with pytest.raises(DataError, match="its data went missing"):
        go(tmp_path / "b")
    assert {"config.json", "unit_0.json"} <= {f.name for f in (tmp_path / "b").iterdir()}


def test_an_out_dir_refused_in_the_project_leaves_no_folder_made_for_it(cfg_file, tmp_path, monkeypatch, capsys):
    # train.py makes the out_dir's folders before Run looks at the place: when Run refused it (figures/new/run), the
    # folders made for it were left there, empty
    project = tmp_path / "project"
    (project / "figures").mkdir(parents=True)
    monkeypatch.setattr(train, "ROOT", project)
    assert train.main([cfg_file, f"--out_dir={project / 'figures' / 'new' / 'run'}"]) == 2
    assert "in the project's folder figures/" in capsys.readouterr().err
    assert list((project / "figures").iterdir()) == []


def test_a_config_python_cannot_run_and_values_written_wrongly_say_how(cfg_file, tmp_path, capsys, monkeypatch):
    (tmp_path / "syntax.py").write_text('experiment = "subliminal_mnist"\nm = 5 5\n')
    with pytest.raises(ConfigError, match=r"syntax.py is not a config file Python can run \(line 2: "):
        load_config([str(tmp_path / "syntax.py")])
    (tmp_path / "code.py").write_text("import numpy\nx = torch.zeros(3)\n")  # a module, not a config
    with pytest.raises(ConfigError, match="NameError: name 'torch' is not defined"):
        load_config([str(tmp_path / "code.py")])
    with pytest.raises(ConfigError, match=r"'download' must be bool, got str 'true' \(write True or False\)"):
        load_config([cfg_file, "--download=true"])
    # the example is of the key's own items, and in quotes: bash refuses a bare --seeds=(3,) ("syntax error near
    # unexpected token"), and a tuple of str key was shown ints
    with pytest.raises(ConfigError, match=re.escape(
            "'conditions' must be a tuple, got 'teacher': on the command line write it as Python, in quotes, e.g. "
            "\"--conditions=('a', 'b')\"")):
        load_config([cfg_file, "--conditions=teacher"])
    with pytest.raises(ConfigError, match=re.escape('in quotes, e.g. "--seeds=(3,)"')):
        _check_type("seeds", "abc", tuple[int, ...])
    with pytest.raises(ConfigError, match=re.escape('in quotes, e.g. "--lrs=(0.5, 1.0)"')):
        _check_type("lrs", "abc", tuple[float, ...])
    # --key value and a bare switch: the override they likely meant
    with pytest.raises(ConfigError, match=re.escape("bad argument '--m': overrides look like --key=value (here "
                                                    "'--m=10', in quotes if it holds brackets)")):
        load_config([cfg_file, "--m", "10"])
    with pytest.raises(ConfigError, match=re.escape("bad argument '--download': overrides look like --key=value "
                                                    "(--download=VALUE; a switch is written --download=True)")):
        load_config([cfg_file, "--download"])
    # a folder is not a missing config file
    with pytest.raises(ConfigError, match=r"^'.*configs' is a folder: name a config file, e.g. configs/subliminal_"
                                          r"mnist.py. Available: configs/activation_oracle.py"):
        load_config([str(Path(__file__).parents[1] / "configs")])
    _, cfg = load_config([cfg_file, "--out_dir=2024", "--device=cpu"])  # a str key keeps the text: a folder "2024"
    assert cfg.out_dir == "2024"
    _, cfg = load_config([cfg_file, "--out_dir='a b'"])  # a quoted value is Python, as everywhere
    assert cfg.out_dir == "a b"
    # the shell leaves a ~ after --out_dir= as it is: read as a folder "~" in the project, not the home folder
    monkeypatch.setenv("HOME", str(tmp_path))
    _, cfg = load_config([cfg_file, "--out_dir=~/runs/a", "--data_dir=~"])
    assert (cfg.out_dir, cfg.data_dir) == (str(tmp_path / "runs/a"), str(tmp_path))
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python train.py configs/NAME.py") and "configs/subliminal_mnist.py" in out
    # no arguments: the usage alone on stderr, status 2, as eval.py, bench.py and the scripts (it was an error: line)
    assert train.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python train.py configs/NAME.py") and "configs/subliminal_mnist.py" in err
    # an override before the config (no config named first): the usage in one error line, with the configs to name
    assert train.main(["--m=7", cfg_file]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: usage: python train.py configs/NAME.py") and err.count("\n") == 1
    assert "Available: configs/activation_oracle.py, " in err
    # after a config: its keys as that config and the other overrides set them, each with its type and comment
    assert train.main([cfg_file, "--m=7", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [f.name for f in dataclasses.fields(train.load_config([cfg_file])[1])]
    assert lines[0].startswith(f"{cfg_file} runs experiments/subliminal_mnist.py") and len(lines) == 1 + len(keys)
    assert [line.split()[0].split("=")[0] for line in lines[1:]] == [f"--{k}" for k in keys]
    # a key set otherwise than its default shows the default too (a comment may be written against it)
    assert any(re.fullmatch(r"  --m=7 +int +\(default: 3\) auxiliary logits", line) for line in lines)
    assert any(re.fullmatch(r"  --out_dir= +str +default out/<config name>/<UTC time>", line) for line in lines)
    assert train.main([str(train.ROOT / "configs/lm_tiny.py"), "-h"]) == 0
    assert re.search(r"--min_lr=None +float\|None ", capsys.readouterr().out)
    # a comment continued on the lines under it, and a key inherited from world_base's Config, keep their text
    assert train.main([str(train.ROOT / "configs/emergent_misalignment_quick.py"), "--help"]) == 0
    said = capsys.readouterr().out
    assert re.search(r'--ft_trains=all +str +or "blocks": .*; or "lora": .* or "shift": ', said)
    assert re.search(r"--seeds=\(0,\) +tuple +\(default: \(0, 1, 2\)\) pretraining seeds\n", said)
    # a key the config sweeps says so (the command line may not give it), with the values its cells take
    assert train.main([str(train.ROOT / "configs/subliminal_mnist_width.py"), "--help"]) == 0
    said_sweep = capsys.readouterr().out
    assert re.search(r"--width=256 +int +\(swept: \[64, 128, 256, 512, 1024, 2048\]; --sweep=\"\{\}\" to set it "
                     r"here\)", said_sweep) and said_sweep.count("(swept") == 1  # the other keys as before
    # world_base's key that these experiments refuse to change says so, not what it does in world_base
    assert re.search(r"--decorrelated=True +bool +world_base's key, unused here \(--twin decides", said)


def test_config_help_leaves_a_section_comment_under_a_key_out_of_its_note(cfg_file, capsys):
    # a comment line at another column than the key's "#" heads the next keys ("    # model: 784 -> ..."): it is
    # not the last note's continuation
    assert train.main([cfg_file, "--help"]) == 0
    notes = {line.split()[0].split("=")[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert notes["--n_train"].endswith("(0 = all; for quick runs)")
    assert notes["--sweep"].endswith("one run per grid cell")


def test_every_config_notes_continuation_is_at_its_hash_column_so_help_shows_it():
    # config_help continues a key's note only with comment lines at its "#" column; a continuation indented
    # elsewhere (deeper than the key, so no section comment) was cut from --help mid-sentence (activation_oracle's
    # read_layers: "(the paper's 25,")
    for path in sorted((train.ROOT / "experiments").glob("*.py")):
        lines, in_config = path.read_text().splitlines(), False
        for i, line in enumerate(lines):
            if re.match(r"\S", line):  # a Config's fields are its class body's lines
                in_config = bool(re.match(r"class \w*Config\b", line))
            if not in_config or not (m := re.match(r"(\s+)\w+:[^#]*#", line)) or i + 1 == len(lines):
                continue
            under = lines[i + 1]
            if re.match(r"\s*#", under) and under.index("#") > len(m[1]):
                assert under.index("#") == line.index("#"), f"{path.name}:{i + 2}: {under.strip()}"


def test_device_this_machine_cannot_use_is_a_config_error(cfg_file, monkeypatch):
    with pytest.raises(ConfigError, match="not a torch device"):
        load_config([cfg_file, "--device=gpu"])
    for device in ("meta", "xpu", "hpu"):  # torch's, but no device a run computes on: tracebacks deep in the run
        with pytest.raises(ConfigError, match="is not one this project runs on"):
            load_config([cfg_file, f"--device={device}"])
    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: False)  # as on a CPU-only machine
    with pytest.raises(ConfigError, match="no usable CUDA.*--device=cpu"):
        load_config([cfg_file, "--device=cuda"])
    _, cfg = load_config([cfg_file, "--device=auto"])
    assert cfg.device == "cpu"
    assert train.resolve_device("") == "cpu"  # an empty device is "auto" too
    # cpu:0 is the CPU: recorded as "cpu" (as "cpu:0", a resume without --device was refused as another config)
    assert load_config([cfg_file, "--device=cpu:0"])[1].device == "cpu"
    # a GPU index this machine lacks: one line (counted from 0: with one GPU, cuda:1 is the second)
    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(train.torch.cuda, "device_count", lambda: 1)
    train.check_device("cuda:0")
    with pytest.raises(ConfigError, match="device 'cuda:1': this machine has 1 CUDA device"):
        train.check_device("cuda:1")


def test_resolved_config_and_env_written(cfg_file, tmp_path):
    module, cfg = load_config([cfg_file, f"--out_dir={tmp_path / 'run'}"])
    assert cfg.device in ("cpu", "cuda")  # "auto" is resolved before it is saved
    run = train.Run(cfg, "subliminal_mnist", argv=["train.py", cfg_file])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["experiment"] == "subliminal_mnist" and saved["m"] == 5 and saved["device"] == cfg.device
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert ({"argv", "git_commit", "git_dirty", "torch", "numpy", "device", "threads", "cpu",
             "cpu_capability"} <= set(env))
    assert env["processes"] == 1  # torchrun's WORLD_SIZE: argv alone would rerun a DDP run with another global batch
    with pytest.MonkeyPatch.context() as mp:  # (1 is also what a constant would write: a run of 2 processes says 2)
        mp.setenv("WORLD_SIZE", "2")
        train.Run(cfg, "subliminal_mnist", argv=["train.py", cfg_file])
    assert json.loads((tmp_path / "run" / "env.json").read_text())["processes"] == 2
    assert train.run_config(module.Config, tmp_path / "run") == cfg  # what eval.py RUN_DIR rebuilds
    run.log(step=1, loss=0.5)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text()) == {"step": 1, "loss": 0.5}
    # a line cut short by a kill: the next attempt's first record starts on a line of its own, not glued to it
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')
    again = train.Run(cfg, "subliminal_mnist", argv=["train.py", cfg_file])
    again.log(step=2, loss=0.25)
    again.log(step=3, loss=0.125)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert lines[1] == '{"step": 2, "lo' and [json.loads(x) for x in lines[2:]] == [{"step": 2, "loss": 0.25},
                                                                                    {"step": 3, "loss": 0.125}]
    (tmp_path / "run" / "metrics.jsonl").write_text(lines[0] + "\n")  # as it was, for the checks below
    # a different config in the same directory is refused instead of mixing results
    _, other = load_config([cfg_file, f"--out_dir={tmp_path / 'run'}", "--m=9"])
    with pytest.raises(ConfigError, match="differs in: m"):
        train.Run(other, "subliminal_mnist")
    # a run made before a key existed resumes when the key is at its default (the old behaviour), not otherwise
    old = {k: v for k, v in saved.items() if k != "init"}
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    train.Run(cfg, "subliminal_mnist")
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="differs in: init"):
        train.Run(dataclasses.replace(cfg, init="torch"), "subliminal_mnist")
    # a moved run directory resumes where it now is
    (tmp_path / "run").rename(tmp_path / "moved")
    train.Run(dataclasses.replace(cfg, out_dir=str(tmp_path / "moved")), "subliminal_mnist")
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["out_dir"] == str(tmp_path / "moved")
    # and so does one given its data by another path (./data, or the absolute one the loader's hint names from another
    # directory: refused as "another config", a dead end), or allowed to download: where it reads, not what it computes
    for changed in ({"data_dir": "./data"}, {"data_dir": str(ROOT / "data")}, {"download": not cfg.download}):
        train.Run(dataclasses.replace(cfg, out_dir=str(tmp_path / "moved"), **changed), "subliminal_mnist")
        assert {k: json.loads((tmp_path / "moved" / "config.json").read_text())[k] for k in changed} == changed
    assert {"out_dir", "data_dir", "cache_dir"} <= set(train.NOT_MODELS)  # (nor do scripts comparing runs count them)


def test_a_run_killed_while_writing_its_first_file_starts_when_rerun(cfg_file, tmp_path):
    # SIGKILL inside atomic_write(config.json), before its rename: the folder holds that temporary file alone
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json.4242.tmp").write_text('{"experiment": ')
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist")  # not "holds files named like a run's outputs": it never wrote one
    assert json.loads((out / "config.json").read_text())["experiment"] == "subliminal_mnist"
    # a file merely ending in .tmp is still counted (not a write cut short: no process id before it)
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.tmp").write_text("x")
    with pytest.raises(ConfigError, match=r"holds files named like a run's outputs \(results.tmp\)"):
        train.Run(dataclasses.replace(cfg, out_dir=str(other)), "subliminal_mnist")


def test_resume_false_recomputes_and_leaves_nothing_old_to_read(cfg_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    run = train.Run(cfg, "subliminal_mnist")
    run.log(step=1)
    run.save_results({"old": 1}, "old table")
    for name in ("main_group0_acc.json", "unit_world_0.json", "model.state.pt", "main_group0.safetensors",
                 "config.json.123.tmp"):  # what a rerun would resume from, and a write cut short
        (out / name).write_text("{}")
    (out / "notes").mkdir()  # a folder inside (even holding run-like files), and a file no run
                             # writes, are not the run's
    (out / "notes" / "results.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    (out / "units").mkdir()  # ... but the oracle's units folder is the run's: the next rerun resumed its old units
    for name in ("unit_s1.json", "oracle_s1.safetensors", "mine.txt"):
        (out / "units" / name).write_text("{}")
    old_run = sorted(f.name for f in out.iterdir())
    monkeypatch.setenv("RANK", "1")  # under torchrun the other ranks remove nothing (rank 0 does)
    other = train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")
    assert sorted(f.name for f in out.iterdir()) == old_run
    metrics = (out / "metrics.jsonl").read_text()
    other.log(step=2)  # ... and write nothing: rank 0's metrics and results are the run's
    other.save_results({"other": 1}, "another rank's table")
    assert (out / "metrics.jsonl").read_text() == metrics
    assert json.loads((out / "results.json").read_text()) == {"old": 1}
    monkeypatch.delenv("RANK")
    # resume is how a run is started, not what it computes: it never makes a directory "another config"
    with pytest.raises(ConfigError, match="holds a run of another experiment"):  # nor deletes another's
        train.Run(dataclasses.replace(cfg, resume=False), "lm")
    with pytest.raises(ConfigError, match="holds a run of another experiment"):  # a config without resume too
        train.Run(train.load_config([str(train.ROOT / "configs/world_base.py"), f"--out_dir={out}"])[1], "world_base")
    assert sorted(f.name for f in out.iterdir()) == old_run  # refused before anything was removed
    train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "env.json", "notes", "notes.txt", "units"]
    assert (out / "notes" / "results.json").exists() and [f.name for f in (out / "units").iterdir()] == ["mine.txt"]
    # never into the project's root or its own folders (figures/, say): the run's files would mix with its files
    project = tmp_path / "project"
    monkeypatch.setattr(train, "ROOT", project)
    (project / "figures").mkdir(parents=True)
    (project / "figures" / "a_figure.png").write_text("")
    (tmp_path / "link").symlink_to(project / "figures")  # a link into the project is the project
    (project / "data").mkdir()
    (tmp_path / "shared").mkdir()
    (project / "data" / "mnist").symlink_to(tmp_path / "shared")  # and so is a link in it out (the shared dataset)
    for folder, says in ((project, "is the project root"), (project / "figures", "in the project's folder figures/"),
                         (project / "figures" / "run", "in the project's folder figures/"),
                         (tmp_path / "link", "in the project's folder figures/"),
                         (project / "data" / "mnist", "in the project's folder data/")):
        with pytest.raises(ConfigError, match=f"{re.escape(says)}, where a run's files would mix"):
            train.Run(dataclasses.replace(cfg, out_dir=str(folder)), "subliminal_mnist")
    assert sorted(p.name for p in project.rglob("*")) == ["a_figure.png", "data", "figures", "mnist"]  # nothing written
    assert list((tmp_path / "shared").iterdir()) == []
    # a new folder of its own in the project may hold a run, but --resume=False deletes only under out/
    for folder in ("outside", "out", "out/run"):
        train.Run(dataclasses.replace(cfg, out_dir=str(project / folder)), "subliminal_mnist")
        (project / folder / "a_figure.png").write_text("")
    for folder in (project / "outside", project / "out"):
        with pytest.raises(ConfigError, match="a folder of the project itself"):
            train.Run(dataclasses.replace(cfg, resume=False, out_dir=str(folder)), "subliminal_mnist")
        assert (folder / "a_figure.png").exists()
    train.Run(dataclasses.replace(cfg, resume=False, out_dir=str(project / "out/run")), "subliminal_mnist")
    assert not (project / "out/run/a_figure.png").exists()
    train.Run(cfg, "subliminal_mnist")  # and it resumes under resume=True
    with pytest.raises(ConfigError, match="holds a run of another experiment"):
        train.Run(cfg, "lm")
    (out / "config.json").write_text('{"experiment": "subliminal_mnist", "m": ')  # cut short
    for resume in (True, False):
        with pytest.raises(ConfigError, match="is not readable JSON.*put back a copy of that file to resume.*"
                                              "delete it and rerun with --resume=False"):
            train.Run(dataclasses.replace(cfg, resume=resume), "subliminal_mnist")
    (out / "config.json").unlink()  # as the message says: the folder is then cleared
    (out / "results.json").write_text("{}")
    train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")
    assert not (out / "results.json").exists()


def test_default_out_dir_is_named_after_config(cfg_file):
    _, cfg = load_config([cfg_file])
    assert cfg.out_dir.startswith("out/exp/")


def test_main_prints_one_line_error_not_a_traceback(cfg_file, capsys):
    assert train.main([cfg_file, "--bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'bogus'") and "Traceback" not in err


@pytest.mark.parametrize("path", sorted(str(p.relative_to(train.ROOT)) for p in (train.ROOT / "configs").glob("*.py")))
def test_every_shipped_config_loads_and_validates(path):
    # a config whose keys contradict each other (e.g. a report step not among the eval steps) must fail
    # here, not minutes into a run
    module, cfg = load_config([str(train.ROOT / path)])
    assert isinstance(cfg, module.Config)
    values = {}
    exec((train.ROOT / path).read_text(), {}, values)
    # every value the file sets is the one the run gets (nothing dropped or replaced by a default)
    for key, value in values.items():
        if key != "experiment" and not key.startswith("_"):
            assert getattr(cfg, key) == value, key
    if hasattr(module, "validate"):
        module.validate(cfg)  # raises ConfigError on contradicting keys


@pytest.mark.parametrize("bad", ["--report_step=7", "--ft_seeds=0", "--seeds=()", "--match_threshold=2.0",
                                 "--n_head=0"])
def test_a_contradicting_config_fails_before_its_run_directory_exists(tmp_path, capsys, bad):
    # else the failed run's config.json would make the corrected rerun into the same out_dir "another config"
    out = tmp_path / "run"
    assert train.main(["configs/emergent_misalignment_quick.py", bad, f"--out_dir={out}"]) == 2
    assert bad[2:].split("=")[0] in capsys.readouterr().err and not out.exists()


def test_a_script_given_a_directory_that_is_not_a_run_gets_one_line(tmp_path):
    # the analysis scripts read a run's config.json through run_config and run under train.cli, as train.py does
    with pytest.raises(ConfigError, match="config.json not found: pass the directory of a run made by train.py"):
        train.run_config(object, tmp_path)  # fails before the class is used
    # a config's folder of timestamped runs (the default out_dir's parent): the runs in it named, the latest last
    for name in ("20261207-080000", "20261207-090000", "20261207-100000", "20261207-110000"):
        (tmp_path / "cfg" / name).mkdir(parents=True)
        (tmp_path / "cfg" / name / "config.json").write_text("{}")
    (tmp_path / "cfg" / "notes").mkdir()  # not a run
    with pytest.raises(ConfigError, match=re.escape(
            f"(its out_dir) (runs inside it: {tmp_path / 'cfg' / '20261207-090000'}, "
            f"{tmp_path / 'cfg' / '20261207-100000'}, {tmp_path / 'cfg' / '20261207-110000'} ...)")):
        train.run_dir_config(tmp_path / "cfg")
    out = subprocess.run([sys.executable, str(train.ROOT / "scripts" / "em_code_context.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_eval_given_a_directory_that_is_not_a_run_gets_one_line(tmp_path, capsys):
    # eval.py runs under the same train.cli as train.py and the scripts
    import eval as EV
    assert EV.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json not found" in err and "Traceback" not in err
    assert EV.main([str(tmp_path / "nope")]) == 2  # a mistyped path is named as such, not as a missing config.json
    assert "nope: no such directory: pass the directory of a run" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "world_base"}))
    assert EV.main([str(tmp_path)]) == 2
    assert "world_base has nothing to re-evaluate: its numbers are in" in capsys.readouterr().err
    # a damaged config.json, one without its experiment, and an experiment this checkout lacks: one line each
    for text, says in (('{"experiment": "subl', "is not readable JSON"), ('{"m": 3}', "does not name its experiment"),
                       ('{"experiment": "foo"}', "names the experiment 'foo', which this checkout does not have")):
        (tmp_path / "config.json").write_text(text)
        assert EV.main([str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, text
    assert EV.main([]) == 2 and capsys.readouterr().err.startswith("usage: python eval.py RUN_DIR")


def test_eval_takes_one_run_directory_and_h_or_help_prints_its_usage(tmp_path, capsys):
    # two directories are the usage line, not the first re-evaluated and the second dropped; -h is the help, not a
    # run directory named "-h"
    import eval as EV
    assert EV.main([str(tmp_path), str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", "usage: python eval.py RUN_DIR (one run folder, not 2)\n")
    assert EV.main(["--out=x"]) == 2  # (was read as a folder named "--out=x")
    assert capsys.readouterr() == ("", "usage: python eval.py RUN_DIR (it takes no options: --out=x)\n")
    assert EV.main([str(tmp_path), "--foo=1"]) == 2  # the option named, not "not 2"
    assert capsys.readouterr() == ("", "usage: python eval.py RUN_DIR (it takes no options: --foo=1)\n")
    for flag in ("-h", "--help"):  # the docstring's first two paragraphs: what it does, then the example command
        assert EV.main([flag]) == 0
        out, err = capsys.readouterr()
        assert err == "" and out.startswith("Evaluations and statistics, and `python eval.py RUN_DIR`"), flag
        assert "python eval.py out/subliminal_mnist/20261127-071500" in out, flag


def test_bench_help_is_the_chosen_benchmarks_own(capsys):
    import bench
    with pytest.raises(SystemExit) as e:
        bench.main(["gpt", "--help"])
    assert e.value.code == 0 and "usage: bench.py gpt" in capsys.readouterr().out
    assert bench.main(["nothing"]) == 2  # one error line naming the benches (argparse's "invalid choice" was two)
    assert capsys.readouterr().err == ("error: nothing: not a bench; give one first (mnist, gpt, lists, students), "
                                       "then its options (python bench.py NAME --help)\n")


def test_typed_tuples_and_optionals_check_their_items():
    with pytest.raises(ConfigError, match="must be str"):
        train._check_type("k", ("a", 3), tuple[str, ...])
    assert train._check_type("k", [1, 2], tuple[float, ...]) == (1.0, 2.0)
    lm = str(train.ROOT / "configs" / "lm_tiny.py")  # min_lr: Optional[float]
    with pytest.raises(ConfigError, match="'min_lr' must be float"):
        load_config([lm, "--min_lr=abc"])
    assert isinstance(load_config([lm, "--min_lr=1"])[1].min_lr, float)
    # None is an Optional key's value (lm's default, and what its runs' config.json hold), not a wrong type
    assert load_config([lm, "--min_lr=None"])[1].min_lr is None
    # a list key takes a tuple as a list, as a tuple key takes a list as a tuple
    assert train._check_type("k", (1, 2), list[float]) == [1.0, 2.0]
    assert type(train._check_type("k", (1,), list)) is list
    # a bare tuple key (an experiment of one's own) has no item type to refuse "...": refused as a value all the same
    with pytest.raises(ConfigError, match="'k': '...' is not a value"):
        train._check_type("k", (42, ..., 57), tuple)
    # every experiment's tuple keys check their items: --seeds=('a',) ran and pretrained a base labelled 'a'
    configs = train.ROOT / "configs"
    for name, arg, want in (("world_base", "--seeds=('a',)", "'seeds' must be int"),
                            ("emergent_misalignment", "--eval_steps=(1,2.5)", "'eval_steps' must be int"),
                            ("subliminal_numbers", "--animals=(1,)", "'animals' must be str"),
                            ("subliminal_mnist", "--conditions=(3,)", "'conditions' must be str")):
        with pytest.raises(ConfigError, match=want):
            load_config([str(configs / f"{name}.py"), arg])
    import typing
    for f in sorted(configs.glob("*.py")):  # and every tuple key of every config names its items' type
        hints = typing.get_type_hints(type(load_config([str(f)])[1]))
        bare = [k for k, h in hints.items() if (h is tuple or typing.get_origin(h) is tuple) and not typing.get_args(h)]
        assert not bare, f"{f.name}: tuple keys without an item type: {bare}"


@pytest.mark.parametrize("what", ["json", "weights", "lm checkpoint with its resume state"])
def test_a_failed_write_leaves_the_old_files_whole_and_no_temp_file(tmp_path, monkeypatch, what):
    import torch
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=4))
    opt = torch.optim.AdamW(model.parameters())
    write = {"json": lambda v: train.write_json(tmp_path / "results.json", {"a": v}),
             "weights": lambda v: train.save_weights(tmp_path / "w", {"x": torch.full((2,), v)}, {"v": v}),
             "lm checkpoint with its resume state": lambda v: train.save_lm(tmp_path / "ckpt", model, step=v, seed=0,
                                                                            optimizer=opt)}[what]
    write(1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(*args):
        raise OSError("no space left on device")
    monkeypatch.setattr(train.os, "replace", full_disk)
    with pytest.raises(OSError):
        write(2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_every_saved_key_counts_in_the_resume_check_but_where_the_run_is_and_how_it_starts(cfg_file, tmp_path):
    # a key left out of the comparison would resume a run made with another value of it and mix the two
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist")
    saved = json.loads((out / "config.json").read_text())
    for key in saved:
        if key in ("experiment", "resume", *train.WHERE_KEYS, *train.CORE_KEYS):  # (CORE_KEYS: the test below)
            continue
        (out / "config.json").write_text(json.dumps({**saved, key: "another value"}))
        with pytest.raises(ConfigError, match=f"differs in: {key}\\)"):
            train.Run(cfg, "subliminal_mnist")
    # a key the run was made with that the code no longer has: the run cannot be made again, so it is not resumed
    (out / "config.json").write_text(json.dumps({**saved, "removed_key": 1}))
    with pytest.raises(ConfigError, match=r"differs in: removed_key\)"):
        train.Run(cfg, "subliminal_mnist")
    (out / "config.json").write_text(json.dumps({**saved, "out_dir": "elsewhere", "resume": False}))
    train.Run(cfg, "subliminal_mnist")
    assert set(train.WHERE_KEYS) == {"out_dir", "data_dir", "cache_dir", "download"}  # (where it reads and writes)


def test_resume_false_keeps_the_users_markdown_and_only_results_md_goes(cfg_file, tmp_path):
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist").save_results({"old": 1}, "old table")
    for name in ("results_partial.md", "README.md", "notes.md"):  # the run's partial table, and the user's notes
        (out / name).write_text("x")
    train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")
    assert sorted(f.name for f in out.iterdir()) == ["README.md", "config.json", "env.json", "notes.md"]


def test_a_runs_files_without_its_config_are_refused_by_a_resume_and_cleared_by_resume_false(cfg_file, tmp_path,
                                                                                              monkeypatch):
    # config.json deleted by hand: the groups beside it may come from any config, so resuming would reuse them
    # unchecked; the user's own files are not the run's and do not count
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist")
    (out / "main_group0_acc.json").write_text("{}")
    (out / "config.json").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds run outputs \(env.json, main_group0_acc.json\) but no config.json"
                                          r".*--resume=False to delete them"):
        train.Run(cfg, "subliminal_mnist")
    monkeypatch.setenv("RANK", "1")  # another rank does not look (rank 0 may be writing this run's config.json.tmp)
    train.Run(cfg, "subliminal_mnist")
    monkeypatch.delenv("RANK")
    train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "env.json", "notes.txt"]
    (out / "config.json").unlink()
    (out / "env.json").unlink()
    train.Run(cfg, "subliminal_mnist")  # only the user's file there: a new run


def test_resume_false_deletes_nothing_in_a_folder_no_run_wrote(cfg_file, tmp_path):
    # --resume=False took any *.json, *.png ... in a folder without config.json for a run's leftovers, and deleted them
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"package.json": "{}", "photo.png": "x", "env.json": '{"PATH": "/bin"}', "notes.txt": "y"}
    for name, text in mine.items():
        (out / name).write_text(text)
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    for resume in (True, False):
        with pytest.raises(ConfigError, match=r"holds files named like a run's outputs \(env.json, package.json, "
                                              r"photo.png\) but neither .*nothing there is deleted"):
            train.Run(dataclasses.replace(cfg, resume=resume), "subliminal_mnist")
        assert {f.name: f.read_text() for f in out.iterdir()} == mine

    # one in the run's own subfolder name (train.RUN_SUBFOLDERS) is named with it: "notes.json" alone sent the user
    # looking for a file the folder's top does not hold
    (out / "units").mkdir()
    (out / "units" / "notes.json").write_text("{}")
    (out / "package.json").unlink()
    with pytest.raises(ConfigError, match=r"holds files named like a run's outputs \(env.json, photo.png, "
                                          r"units/notes.json\) but neither"):
        train.Run(cfg, "subliminal_mnist")


def test_a_resumed_run_keeps_the_earlier_environments(cfg_file, tmp_path):
    # the commit that computed the reused groups must not be lost when a later session resumes the run
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist", argv=["first"])
    train.Run(cfg, "subliminal_mnist", argv=["second"])
    (out / "env.json").write_text('{"argv": ["third"], "cut')  # a damaged one is kept as text
    train.Run(cfg, "subliminal_mnist", argv=["fourth"])
    (out / "env.json").write_text("5")  # and so is JSON that is not an object (it ended in a TypeError)
    train.Run(cfg, "subliminal_mnist", argv=["fifth"])
    (out / "env.json").write_text(json.dumps({"argv": ["sixth"]}))
    train.Run(cfg, "subliminal_mnist", argv=["fourth"])
    earlier = [json.loads(line) for line in (out / "env_earlier.jsonl").read_text().splitlines()]
    assert [e.get("argv") for e in earlier] == [["first"], None, None, ["sixth"]]
    assert earlier[1]["unreadable_env_json"].startswith('{"argv"') and earlier[2] == {"unreadable_env_json": "5"}
    assert json.loads((out / "env.json").read_text())["argv"] == ["fourth"]
    train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")  # recomputing: nothing earlier is kept
    assert not (out / "env_earlier.jsonl").exists()


def test_resuming_under_other_code_or_another_cpu_or_gpu_kind_says_so(cfg_file, tmp_path, monkeypatch, capsys):
    # the reused units were computed by the earlier session's code and CPU or GPU kind (another kind pretrains other
    # bases from the same seeds): a resume says when any differs, and is silent when none does
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    cfg = dataclasses.replace(cfg, device="cuda:0")  # (the config's own check refuses CUDA here: no GPU)
    then = {"git_commit": "a" * 40, "git_dirty": False, "cpu": "Xeon", "cpu_capability": "AVX512"}
    for now, card, said in [(then, "H100", False), ({**then, "git_commit": "b" * 40}, "H100", True),
                            ({**then, "cpu": "EPYC"}, "H100", True), ({**then, "git_dirty": True}, "H100", True),
                            (then, "H200", True)]:
        monkeypatch.setattr(train, "provenance", lambda: then)
        monkeypatch.setattr(train.torch.cuda, "get_device_name", lambda d=None: "H100")  # no GPU here
        train.Run(dataclasses.replace(cfg, resume=False), "subliminal_mnist")
        monkeypatch.setattr(train, "provenance", lambda: now)
        monkeypatch.setattr(train.torch.cuda, "get_device_name", lambda d=None: card)
        capsys.readouterr()
        train.Run(cfg, "subliminal_mnist")
        err = capsys.readouterr().err
        assert ("note: resuming" in err) == said, (now, card, err)
        if said:
            assert "begun with commit aaaaaaaaa on Xeon (AVX512) and H100;" in err
            assert train._code_and_machine({**now, "device": card}) in err
        env = json.loads((out / "env.json").read_text())
        assert env["git_commit"] == now["git_commit"] and env["device"] == card


def test_a_run_resumes_on_more_or_fewer_cores_and_says_when_the_last_digits_may_differ(cfg_file, tmp_path, capsys):
    # how many cores compute is not what: a run begun on a laptop resumes on a bigger machine. Another torch thread
    # count sums floats in another order (said); pool workers of one thread each compute the same numbers however
    # many run (silent), one worker computes in the parent at its thread count (said)
    assert train.CORE_KEYS == ("threads", "workers")
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    threads = torch.get_num_threads()
    try:
        train.Run(cfg, "subliminal_mnist")
        capsys.readouterr()
        train.Run(dataclasses.replace(cfg, threads=threads), "subliminal_mnist")  # 0 -> the count in force: silent
        assert "note" not in capsys.readouterr().err
        torch.set_num_threads(threads + 1)
        train.Run(dataclasses.replace(cfg, threads=threads + 1), "subliminal_mnist")
        err = capsys.readouterr().err
        assert f"with torch threads {threads} -> {threads + 1}: the units reused keep their numbers" in err
        assert json.loads((out / "env.json").read_text())["threads"] == threads + 1
    finally:
        torch.set_num_threads(threads)
    # workers: world_base's key (a config made here with it, as an experiment with a pool has)
    @dataclasses.dataclass(frozen=True)
    class Pool:
        workers: int = 2
        out_dir: str = str(tmp_path / "pool")
        resume: bool = True
    train.Run(Pool(), "pool")
    for workers, said in [(4, False), (1, True), (1, False), (3, True)]:
        capsys.readouterr()
        train.Run(Pool(workers=workers), "pool")
        err = capsys.readouterr().err
        assert ("note: resuming" in err) == said, (workers, err)
    assert "workers 1 -> 3" in err and "torch threads" not in err


def test_a_config_without_resume_reruns_into_its_folder_without_clearing_it(tmp_path):
    # world_base has no resume key (None): None is not False, so its folder's files (its results) are never deleted
    out = tmp_path / "run"
    _, cfg = load_config([str(train.ROOT / "configs/world_base.py"), f"--out_dir={out}"])
    train.Run(cfg, "world_base").save_results({"old": 1}, "old table")
    train.Run(cfg, "world_base")
    assert json.loads((out / "results.json").read_text()) == {"old": 1}


def test_another_rank_resuming_also_refuses_another_experiments_run(cfg_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist")
    monkeypatch.setenv("RANK", "1")  # under torchrun every rank that resumes checks what the folder holds
    with pytest.raises(ConfigError, match="holds a run of another experiment"):
        train.Run(cfg, "lm")


@pytest.mark.parametrize("after", [1, 2, 3, 4])
def test_another_rank_starting_while_rank_0_writes_the_config_sees_one_state_of_the_folder(cfg_file, tmp_path,
                                                                                           monkeypatch, after):
    # rank 0's config.json appearing between two of another rank's looks at it ended that rank in a NameError (it
    # saw no config, so read none, then saw one and compared with what it had not read): whenever it appears, the
    # rank starts
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist")  # rank 0's run: its config.json is there from now on
    exists, looks = Path.exists, []
    def appears(path):  # the config.json is written just after the other rank's `after`-th look at it
        if path.name == "config.json":
            looks.append(path)
            return len(looks) > after and exists(path)
        return exists(path)
    monkeypatch.setattr(Path, "exists", appears)
    monkeypatch.setenv("RANK", "1")
    train.Run(cfg, "subliminal_mnist")
    assert looks


def test_run_results_refuses_a_run_that_has_not_finished_or_is_of_another_experiment(cfg_file, tmp_path):
    # what the analysis scripts read: a stopped run has units but no results.json, and says so in one line
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    run = train.Run(cfg, "subliminal_mnist")
    with pytest.raises(ConfigError, match=r"results.json not found: the run has not finished \(its command, run "
                                          r"again, finishes it\)"):
        train.run_results(out, "subliminal_mnist")
    # while its command still runs, rerunning that command is refused ("another command is using"): wait for it instead
    fd = train.lock_run_dir(out)
    try:
        with pytest.raises(ConfigError, match=r"a command is writing this run now .*: wait for it to finish"):
            train.run_results(out, "subliminal_mnist")
        run.save_results({"n_seeds": 2}, "table")  # finished, and its command run again: read when it is done
        with pytest.raises(ConfigError, match=r"a command is writing this run now"):
            train.run_results(out, "subliminal_mnist")
    finally:
        os.close(fd)
    assert train.run_results(out, "subliminal_mnist") == {"n_seeds": 2}
    with pytest.raises(ConfigError, match="is a run of subliminal_mnist, not of emergent_misalignment"):
        train.run_results(out, "emergent_misalignment")
    # cut short or not an object: one line that says how to write it again; eval.py rewrites it from the units
    for bad in ('{"n_se', "[2]"):
        (out / "results.json").write_text(bad)
        with pytest.raises(ConfigError, match="not a readable results file.*same --out_dir.*writes it again"):
            train.run_results(out, "subliminal_mnist")
    train.rewrite_results(out, {"n_seeds": 2}, lambda res: "table", timed=True)  # its results have `seconds`
    assert train.run_results(out, "subliminal_mnist") == {"n_seeds": 2, "seconds": None}
    # rewritten again, its unknown seconds stay (null, as a number would): a dropped key read as a changed file
    train.rewrite_results(out, {"n_seeds": 2}, lambda res: "table", timed=True)
    assert train.run_results(out, "subliminal_mnist") == {"n_seeds": 2, "seconds": None}
    # a results.json without a key every finished run of its experiment has (edited, or an older version's): named,
    # not a KeyError deep in the script that reads it
    import experiments.subliminal_mnist as SM
    with pytest.MonkeyPatch.context() as m:
        m.setattr(SM, "RESULT_KEYS", ("n_seeds", "conditions"), raising=False)
        with pytest.raises(ConfigError, match=r"results.json lacks conditions: not the results of a finished "
                                              r"subliminal_mnist run .*`python eval.py "):
            train.run_results(out, "subliminal_mnist")
    # a run's config read back by another experiment's Config: refused by name (it read at that Config's defaults)
    import experiments.emergent_misalignment as EM
    with pytest.raises(ConfigError, match="is a run of subliminal_mnist, not of emergent_misalignment"):
        train.run_config(EM.Config, out)
    # a config.json or results.json of bytes that are not text (another file copied over it): one line too
    (out / "results.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="not a readable results file"):
        train.run_results(out, "subliminal_mnist")
    (out / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ConfigError, match="config.json is not readable JSON.*the run directory is damaged"):
        train.run_config(type(cfg), out)


def test_the_project_folders_no_run_is_written_into_are_the_folders_git_tracks():
    tracked = subprocess.run(["git", "ls-files"], cwd=train.ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert {f.split("/")[0] for f in tracked if "/" in f} == set(train.PROJECT_FOLDERS)


def test_every_command_in_an_experiment_docstring_pastes_into_a_shell_and_loads():
    """The `python train.py ...` lines of the experiments' docstrings are meant to be pasted: a tuple override must
    be quoted (bash reads an unquoted `(` as syntax: world_base's quick look failed so), and every key must load."""
    import importlib
    import shlex
    for f in sorted((train.ROOT / "experiments").glob("*.py")):
        for line in (importlib.import_module(f"experiments.{f.stem}").__doc__ or "").splitlines():
            cmd = line.split("#")[0].strip()
            if not cmd.startswith("python train.py"):
                continue
            lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            argv = list(lex)
            assert not set("()") & set(argv), f"{f.name}: unquoted parentheses in {cmd!r}"
            train.load_config([str(train.ROOT / argv[2]), *argv[3:]])


DOC_FILES = [train.ROOT / "README.md", *sorted((train.ROOT / "docs").glob("*.md"))]  # the README and the docs


def test_every_train_command_in_the_readme_and_docs_loads():
    """The README's and docs' `python train.py configs/...` commands are how their numbers are rerun: each must paste
    into a shell and load (the README once showed `"--seeds=(42,...,57)"`, which the config refuses)."""
    import re
    import shlex
    cmd_re = re.compile(r"python\s+train\.py\s+(configs/[^`#\n]*)")
    n = 0
    for f in DOC_FILES:
        check_every_command_is_code(f, cmd_re)
        for lineno, line in doc_code(f):  # a fenced command's continued lines joined, a code span split by a break too
            for m in cmd_re.finditer(line):
                lex = shlex.shlex(m.group(1).strip(), posix=True, punctuation_chars=True)
                lex.whitespace_split = True
                argv = list(lex)
                if argv[0] == "configs/coin.py":  # the README's "Adding an experiment" example (its own test)
                    continue
                where = f"{f.name}:{lineno}: {m.group(0)!r}"
                assert not set("()|;&") & set(argv), f"{where}: unquoted shell syntax"
                # a GPU run's command (its numbers came from one): everything but the device is checked here
                argv = ["--device=cpu" if a == "--device=cuda" else a for a in argv]
                try:
                    module, cfg = train.load_config([str(train.ROOT / argv[0]), *argv[1:]])
                    if hasattr(module, "validate"):  # and passes the checks a run makes before it starts
                        module.validate(cfg)
                except train.ConfigError as e:
                    pytest.fail(f"{where}: {e}")
                n += 1
    assert n > 100  # the pattern still finds the commands


def check_every_command_is_code(path, cmd_re):
    """Each command cmd_re finds in a markdown file stands in code doc_code reads: one in an indented block or in
    prose would go unchecked by the tests that parse the docs' commands (seven in an indented block once did)."""
    text = path.read_text()
    in_code = sum(len(cmd_re.findall(code)) for _, code in doc_code(path))
    assert len(cmd_re.findall(text)) == in_code, (
        f"{path.name}: {len(cmd_re.findall(text)) - in_code} command(s) outside a fenced block or a `code span`: "
        "put each in one, so the docs-command tests read it")


def doc_prose(path):
    """A markdown file's text with each fenced block, its fence lines too, blanked (line numbers kept): its prose."""
    out, fence = [], False
    for line in path.read_text().split("\n"):
        is_fence = line.lstrip().startswith("```")
        out.append("" if fence or is_fence else line)
        fence ^= is_fence
    return "\n".join(out)


def doc_code(path):
    """(line number, text) of every code line of a markdown file: each line of a fenced block (a trailing backslash
    joining the next) and each inline code span, also one that a line break splits (its lines joined by a space)."""
    code, fence = [], False
    for i, line in enumerate(path.read_text().split("\n")):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif fence:
            if code and code[-1][2]:  # the previous line ended in a backslash
                code[-1] = (code[-1][0], code[-1][1][:-1] + " " + line, line.rstrip().endswith("\\"))
            else:
                code.append((i + 1, line, line.rstrip().endswith("\\")))
    text = doc_prose(path)
    spans = [(text.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " "))
             for m in re.finditer(r"`([^`]+)`", text)]
    return sorted([(n, t) for n, t, _ in code] + spans)


def test_every_line_of_the_code_and_docs_is_at_most_120_characters():
    # the project's width (nanoGPT-like files read side by side); in the docs, table rows and image lines cannot wrap
    code = [*train.ROOT.glob("*.py"), *(f for d in ("configs", "data", "experiments", "scripts", "tests")
                                         for f in (train.ROOT / d).glob("*.py"))]
    long = [f"{f.relative_to(train.ROOT)}:{n}" for f in sorted(code) + DOC_FILES
            for n, line in enumerate(f.read_text().split("\n"), 1)
            if len(line) > 120 and not (f.suffix == ".md" and line.lstrip().startswith(("|", "![")))]
    assert not long, f"lines over 120 characters: {long[:10]}"


def test_no_docs_line_starts_with_a_comparison_that_markdown_reads_as_a_quote():
    # a wrapped line beginning ">= 0.9" renders as a blockquote, the sign gone (five lines of the EM log did); the
    # docs quote nothing, so any line outside code starting with ">" is one of those
    for f in DOC_FILES:
        for n, line in enumerate(doc_prose(f).split("\n"), 1):
            assert not line.lstrip().startswith(">"), f"{f.name}:{n}: {line.strip()[:60]!r}"


def test_no_token_in_the_docs_prose_is_read_as_markup():
    # the world's tokens (<a>, <u>, <bos>, ...) outside a code span are HTML tags to markdown: a doc's "animal <a>
    # owl" showed as "animal owl", a link to nowhere
    for f in DOC_FILES:
        prose = re.sub(r"`[^`]+`", lambda m: " " * len(m.group(0)), doc_prose(f))  # code spans, also over a break
        tags = [(prose.count("\n", 0, m.start()) + 1, m.group(0)) for m in re.finditer(r"<[A-Za-z/!][^>\s]*>?", prose)]
        assert not tags, f"{f.name}: {tags[:5]} outside a `code span`"
        # the pulled-back vector v* likewise: two in a paragraph are an emphasis to markdown, both stars gone (twelve
        # in the EM log were); written v\* (or in a code span)
        stars = [prose.count("\n", 0, m.start()) + 1 for m in re.finditer(r"(?<![\\\w])v\*", prose)]
        assert not stars, f"{f.name}: lines {stars[:5]}: v* unescaped outside a code span (write v\\*)"


def test_the_readme_and_the_audits_page_give_one_count_of_hand_made_bugs():
    # each session's mutation audit adds to the count on docs/audits.md; the README's table quotes it (it lagged
    # two sessions behind once)
    count = lambda text: re.findall(r"[Aa]bout ([\d,]+) hand-made bugs", text)
    readme, audits = (count((train.ROOT / f).read_text()) for f in ("README.md", "docs/audits.md"))
    assert len(readme) == 1 and readme == audits, (readme, audits)


def test_a_docs_command_outside_code_is_refused_and_a_continued_one_is_read_whole(tmp_path):
    cmd_re = re.compile(r"python\s+train\.py\s+(configs/[^`#\n]*)")
    doc = tmp_path / "doc.md"
    doc.write_text("Run:\n\n    python train.py configs/mnist.py --lr=0.1\n")  # an indented block: not read
    with pytest.raises(AssertionError, match="1 command"):
        check_every_command_is_code(doc, cmd_re)
    doc.write_text("Run:\n\n```bash\npython train.py configs/mnist.py \\\n  --lr=0.1\n```\nand `python train.py\n"
                   "configs/mnist.py` too\n")
    check_every_command_is_code(doc, cmd_re)
    assert [(n, m.group(1).split()) for n, code in doc_code(doc) for m in cmd_re.finditer(code)] == [
        (4, ["configs/mnist.py", "--lr=0.1"]), (7, ["configs/mnist.py"])]


def test_every_script_eval_and_bench_command_in_the_readme_and_docs_parses(tmp_path, monkeypatch):
    """The README's and docs' `python scripts/NAME.py ...`, `python eval.py ...` and `python bench.py ...` commands
    are how their numbers are made again: each must pass its script's argument checks (its options, flags and
    positional grammar), which run before it reads a run. Run directories are not here: the script is stopped where
    it first reads one (or a cached base model, or bench's device), and a run folder that does not exist is not its
    grammar's fault. RUN_DIR, RUN_DIR... and ... stand for runs; a command with another placeholder (STEPS, LR) or
    none of its arguments (a script named in prose) is not checked."""
    import importlib
    from experiments import world_base as B
    for f in (train.ROOT / "experiments").glob("*.py"):  # imported before the patches below: their own names stay
        importlib.import_module(f"experiments.{f.stem}")
    before = set(sys.modules)

    class Reached(Exception):  # the script got past its argument checks to its first read of a run
        pass

    def stop(*args, **kw):
        raise Reached

    for module, name in ((train, "run_dir_config"), (train, "read_json"), (train, "resolve_device"),
                         (B, "check_cached"), (B, "base_model")):
        monkeypatch.setattr(module, name, stop)
    check_out = train.check_out

    def out_anywhere(path, *args, **kw):  # its checks of the name, in a folder that exists (a run's, absent here)
        here = path if not path or Path(path).parent.is_dir() else str(tmp_path / Path(path).name)
        return check_out(here, *args, **kw)
    monkeypatch.setattr(train, "check_out", out_anywhere)
    monkeypatch.setattr(sys, "path", list(sys.path))  # each script puts its folders in front
    try:
        n = _check_doc_script_commands(tmp_path, monkeypatch, Reached)
    finally:  # the scripts' helper modules (em_base_pull, ...) imported here hold the stops: not kept for later tests
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(train.ROOT / "scripts")):
                del sys.modules[name]
    assert n > 150  # the pattern still finds the commands


def _check_doc_script_commands(tmp_path, monkeypatch, Reached):
    """test_every_script_eval_and_bench_command_in_the_readme_and_docs_parses's loop: the commands it checked."""
    import runpy
    import shlex
    cmd_re = re.compile(r"python\s+((?:scripts/\w+|eval|bench)\.py)\b")
    n = 0
    for f in DOC_FILES:
        check_every_command_is_code(f, cmd_re)
        for lineno, code in doc_code(f):
            for m in cmd_re.finditer(code):
                rest = re.split(r"\s#|\s&\s|;|&&|\|", code[m.end():])[0]
                rest = cmd_re.split(rest)[0]  # a second command on the line
                where = f"{f.name}:{lineno}: python {m.group(1)}{rest.rstrip()}"
                seq = lambda s: " ".join(map(str, range(int(s[1]), int(s[2]) + 1)))  # noqa: E731
                rest = re.sub(r"\$\(seq (\d+) (\d+)\)", seq, rest)
                rest = re.sub(r"\[(--\w+)\]", r"\1", rest)  # an optional flag, [--share]
                lex = shlex.shlex(rest, posix=True, punctuation_chars=True)
                lex.whitespace_split = True
                try:
                    argv = list(lex)
                except ValueError as e:  # an unclosed quote
                    pytest.fail(f"{where}: not shell words ({e})")
                assert not set("()|;&<>") & set(argv), f"{where}: unquoted shell syntax"
                argv = [f"out/RUN_DIR_{i}" if a in ("RUN_DIR", "RUN_DIR...", "...") else a for i, a in enumerate(argv)]
                if not argv or any(re.search(r"\b[A-Z]+\b", a) for a in argv if not a.startswith("-")):
                    continue
                monkeypatch.setattr(sys, "argv", [m.group(1), *argv])
                err = io.StringIO()
                try:
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                        runpy.run_path(str(train.ROOT / m.group(1)), run_name="__main__")
                    pytest.fail(f"{where}: ran to its end without reading a run")
                except Reached:
                    pass
                except SystemExit as e:
                    said = err.getvalue().strip() or str(e.code)
                    # a run folder that is not here (em_mechanism_figure looks for it itself): past the grammar
                    # (after a note, say that a figures/ file it names will be replaced)
                    if e.code not in (0, None) and not re.search(r"^error: out/\S+: no such directory", said, re.M):
                        said = next((line for line in said.splitlines() if "error:" in line), said[:600])  # argparse's
                        pytest.fail(f"{where}: refused (exit status {e.code}): {said}")
                n += 1
    return n


def test_the_readme_hook_example_runs_as_printed():
    # "The transformer: hooks, sampling, scoring, training": an API change would leave it failing for every reader
    ns = {}
    torch.manual_seed(0)
    exec(compile(readme_block("## The transformer: hooks, sampling, scoring, training"), "README.md", "exec"), ns)
    assert ns["logits"].shape == (2, 16, 631) and set(ns["cache"]) == {"blocks.1.resid_post", "blocks.0.attn.pattern"}
    assert ns["cache"]["blocks.0.attn.pattern"].shape == (2, 4, 16, 16)
    assert not torch.equal(ns["patched"], ns["logits"])  # the MLP ablation reached the logits
    assert [len(row) for row in ns["out"]] == [20, 20]


def test_the_readme_example_experiment_runs_and_checks_its_config(tmp_path, monkeypatch, capsys):
    # README "Adding an experiment": the module as printed there, run through train.py's front door
    import sys
    import types
    code = readme_block("### Adding an experiment")
    assert code.startswith("# experiments/coin.py\n")
    module = types.ModuleType("experiments.coin")
    exec(compile(code, "experiments/coin.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "experiments.coin", module)
    (tmp_path / "coin.py").write_text('experiment = "coin"\n')
    out = tmp_path / "run"
    assert train.main([str(tmp_path / "coin.py"), "--p=0.3", f"--out_dir={out}"]) == 0
    heads = json.loads((out / "results.json").read_text())["heads"]
    assert len(heads["per_seed"]) == 5 and heads["ci95"][0] < 0.3 < heads["ci95"][1]
    assert (out / "results.md").read_text().startswith(f"P(heads) = {heads['mean']:.3f} ± ")
    assert (out / "config.json").is_file() and (out / "env.json").is_file()
    assert capsys.readouterr().out.endswith(f"\nwrote results.json and results.md in {out}\n")
    # no resume key: the same config again recomputes in place, another one is refused rather than replacing it
    assert train.main([str(tmp_path / "coin.py"), "--p=0.3", f"--out_dir={out}"]) == 0
    assert json.loads((out / "results.json").read_text())["heads"] == heads
    assert train.main([str(tmp_path / "coin.py"), "--p=0.2", f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with another config (differs in: p): use a new --out_dir\n" in err and "--resume" not in err
    assert json.loads((out / "config.json").read_text())["p"] == 0.3
    assert train.main([str(tmp_path / "coin.py"), "--p=2", f"--out_dir={tmp_path / 'bad'}"]) == 2
    assert "p must be in [0, 1]" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert train.main([str(tmp_path / "coin.py"), "--n_seeds=0", f"--out_dir={tmp_path / 'bad'}"]) == 2  # not a NaN
    assert "n_flips and n_seeds >= 1; got 0.5, 1000, 0" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert train.main([str(tmp_path / "coin.py"), "--n_flips=0", f"--out_dir={tmp_path / 'bad'}"]) == 2  # a NaN too
    assert "got 0.5, 0, 5" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert train.main([str(tmp_path / "coin.py"), "--flips=3"]) == 2
    assert "Did you mean 'n_flips'?" in capsys.readouterr().err
    # its reevaluate as the README describes it (run_config, rewrite_results): a run that saved no `seconds` is
    # rewritten without one, and the same numbers read as unchanged (a null `seconds` was added, "changed": true)
    before = (out / "results.json").read_bytes()
    cfg = train.run_config(module.Config, out)
    res = {"heads": module.summarize([(torch.rand(cfg.n_flips, generator=torch.Generator().manual_seed(s)) < cfg.p)
                                      .float().mean().item() for s in range(cfg.n_seeds)])}
    train.rewrite_results(out, res, lambda r: f"P(heads) = {module.fmt_stat(r['heads'])}")
    assert (out / "results.json").read_bytes() == before
    assert json.loads((out / "reaggregated.jsonl").read_text().splitlines()[-1])["results_changed"] is False
    # a damaged results.json is rewritten without a `seconds` too: the experiment never records one (it got a null)
    (out / "results.json").write_text('{"heads')
    train.rewrite_results(out, res, lambda r: f"P(heads) = {module.fmt_stat(r['heads'])}")
    assert (out / "results.json").read_bytes() == before
    assert capsys.readouterr().out.endswith("(rewritten from the units instead)\n")


def test_an_experiment_config_without_out_dir_is_a_config_error(tmp_path, monkeypatch, capsys):
    # README "Adding an experiment": out_dir is the one key every Config needs (Run writes there); without it the
    # run was an AttributeError traceback
    import sys
    import types
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        p: float = 0.5
    module = types.ModuleType("experiments.no_out_dir")
    module.Config, module.run = Config, lambda cfg, run: None
    monkeypatch.setitem(sys.modules, "experiments.no_out_dir", module)
    (tmp_path / "c.py").write_text('experiment = "no_out_dir"\n')
    assert train.main([str(tmp_path / "c.py")]) == 2
    assert "experiments/no_out_dir.py: its Config has no out_dir" in capsys.readouterr().err
    # with --out_dir given, the reason too (it was "unknown config key 'out_dir' in the command line")
    assert train.main([str(tmp_path / "c.py"), f"--out_dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err == ("error: experiments/no_out_dir.py: its Config has no out_dir, which every "
                                       "experiment needs (out_dir: str = \"\")\n")


@pytest.mark.parametrize("where", ["file", "file/run"])
def test_an_out_dir_that_is_a_file_or_under_one_is_one_line(cfg_file, tmp_path, capsys, where):
    # a file given as --out_dir (a run's results.json for its folder) ended in mkdir's FileExistsError traceback
    (tmp_path / "file").write_text("mine\n")
    assert train.main([cfg_file, f"--out_dir={tmp_path / where}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{tmp_path / 'file'} is a file" in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "mine\n"


@pytest.mark.parametrize("where", ["link", "link/run"])
def test_an_out_dir_through_a_broken_link_is_one_line(cfg_file, tmp_path, capsys, where):
    # out/ linked to a scratch folder that is gone: the out_dir-is-a-file check found no file (a
    # StopIteration traceback)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    assert train.main([cfg_file, f"--out_dir={tmp_path / where}"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: out_dir {tmp_path / where}: {tmp_path / 'link'} is a link to {tmp_path / 'gone'}, which "
                   f"does not exist: make that folder, or pass another --out_dir\n")
    assert not (tmp_path / "gone").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: runs are not locked on Windows")
def test_a_second_command_into_the_out_dir_of_a_run_still_going_is_refused(tmp_path, capsys):
    # two commands into one out_dir at once wrote the same checkpoint's temp file together (one ended in a
    # FileNotFoundError traceback, the file could be left mixed), and --resume=False deleted the other run's files
    out = tmp_path / "run"
    argv = [str(train.ROOT / "configs/lm_tiny.py"), "--steps=2", "--warmup=1", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", f"--out_dir={out}"]
    out.mkdir()
    (out / "model.state.pt").write_bytes(b"the other run's")
    (out / "env.json").write_text('{"argv": ["train.py"], "started_utc": "2026-12-04T00:00:00"}')  # its config.json
                                                                                                   # to come
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import fcntl
    held = os.open(out, os.O_RDONLY)  # the first command, still running, holds the folder's lock
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        for extra in ([], ["--resume=False"]):
            assert train.main(argv + extra) == 2
            assert f"another command is using {out} now" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written or deleted
    finally:
        os.close(held)
    assert train.main(argv + ["--resume=False"]) == 0  # once it has finished


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: runs are not locked on Windows")
def test_a_folder_where_the_pretraining_lock_goes_is_one_line(tmp_path):
    # (open() on it was an IsADirectoryError traceback, before any pretraining)
    from experiments.world_base import pretrain_lock
    (tmp_path / "cache" / "pretraining.lock").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"pretraining.lock is a folder, where pretraining keeps its lock file: "
                                          r"remove it"):
        with pretrain_lock(tmp_path / "cache"):
            pass


def test_a_file_system_without_locks_runs_unlocked_in_both_places_that_lock(tmp_path, monkeypatch):
    # flock fails with ENOLCK on some NFS mounts: the run-folder lock went on unlocked, the base cache's pretraining
    # lock ended in that OSError's traceback
    import errno
    from experiments.world_base import pretrain_lock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(train.fcntl, "flock", no_locks)
    fd = os.open(tmp_path, os.O_RDONLY)
    assert train.lock_file(fd, wait=False) is None
    os.close(fd)
    assert train.lock_run_dir(tmp_path) is None
    logs = []
    with pretrain_lock(tmp_path / "cache", logs.append):
        entered = True
    assert entered and logs == [] and (tmp_path / "cache" / "pretraining.lock").is_file()
    assert train.hold_for_reading(tmp_path) and not train._READ_LOCKS  # (nothing held, nothing to release)
    import data
    monkeypatch.setattr(data.fcntl, "flock", no_locks)
    with data.folder_locked(tmp_path):  # a download: unlocked too
        pass


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: runs are not locked on Windows")
def test_a_run_being_read_is_not_rewritten_or_deleted_under_its_readers(cfg_file, tmp_path, capsys, monkeypatch):
    # eval.py or a script held no lock: a rerun's --resume=False deleted the finished run under eval.py (which then
    # called it unfinished) or a script (which wrote the old run's numbers into the new run's folder)
    import fcntl
    out = tmp_path / "run"
    _, cfg = load_config([cfg_file, f"--out_dir={out}"])
    train.Run(cfg, "subliminal_mnist").save_results({"n_seeds": 2}, "table")

    reader = os.open(out, os.O_RDONLY)  # another command reading the run (a script's, eval.py's shared lock)
    fcntl.flock(reader, fcntl.LOCK_SH)
    argv = [cfg_file, f"--out_dir={out}", "--resume=False"]
    assert train.main(argv) == 2  # the run's command run again meanwhile
    assert capsys.readouterr().err == (f"error: another command is using {out} now (a run writing into it, or eval.py "
                                       f"or a script reading it): let it finish (or stop it) before you rerun this "
                                       f"command, or use another --out_dir\n")
    assert (out / "results.json").is_file()  # kept
    os.close(reader)
    # a script's reading is held until its command ends; this process's own reading does not refuse its own writing
    # (a notebook that read a run and reruns it)
    assert train.cli(lambda argv: train.run_results(out, "subliminal_mnist") and len(train._READ_LOCKS), []) == 1
    assert not train._READ_LOCKS
    train.not_being_written(out)
    fd = train.lock_run_dir(out)
    assert fd is not None and not train._READ_LOCKS
    os.close(fd)
    # readers do not exclude each other, nor does a reader's look see a writer (a probe took the lock exclusively
    # for an instant: two scripts looking at once each saw the other as a run writing it, 5-8% of the time)
    other = os.open(out, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_SH)
    train.not_being_written(out)
    assert len(train._READ_LOCKS) == 1
    train.release_read_locks()
    # a look held for an instant by another command: the writer waits for it, not refused
    threading.Timer(0.2, os.close, [other]).start()
    fd = train.lock_run_dir(out)
    assert fd is not None
    # and a reader meets a writer: refused as before (a script), or reading what is there (eval.py: a partial table)
    with pytest.raises(ConfigError, match="a command is writing this run now"):
        train.not_being_written(out)
    assert train.hold_for_reading(out) is False and not train._READ_LOCKS
    os.close(fd)
    # eval.py holds a finished run while it redraws it
    import eval as EV
    from experiments import subliminal_mnist as MN
    refused = []

    def reevaluate(run_dir):  # while it redraws: another command's lock on the run (a rerun's) is refused
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            refused.append(run_dir)
        os.close(fd)
    monkeypatch.setattr(MN, "reevaluate", reevaluate)
    assert EV.main([str(out)]) == 0 and refused == [out]


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl: downloads are not locked on Windows")
def test_two_downloads_into_one_folder_take_turns_and_the_second_fetches_nothing(tmp_path, monkeypatch, capsys):
    # they shared the temporary NAME.part, each emptying or deleting the other's: one failed ("No such file"), or
    # both ("has MD5 ..., expected ...", blaming the mirror)
    import fcntl
    import hashlib
    import io
    import urllib.request
    import data
    fetched = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: fetched.append(url) or io.BytesIO(b"digits"))
    md5 = hashlib.md5(b"digits").hexdigest()
    other = os.open(tmp_path, os.O_RDONLY)  # the other command, downloading into the folder
    fcntl.flock(other, fcntl.LOCK_EX)
    waiting = threading.Thread(target=data.download, args=("http://mirror/f.gz", tmp_path / "f.gz", md5))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive() and not fetched  # waits for it
    (tmp_path / "f.gz").write_bytes(b"digits")  # its download, done
    os.close(other)
    waiting.join(10)
    assert not waiting.is_alive() and not fetched  # found there: nothing fetched again
    assert f"note: another command is downloading into {tmp_path}: waiting for it" in capsys.readouterr().err
    data.download("http://mirror/g.gz", tmp_path / "g.gz", md5)  # the folder free: fetched at once
    assert fetched == ["http://mirror/g.gz"] and (tmp_path / "g.gz").read_bytes() == b"digits"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["f.gz", "g.gz"]


def test_untracked_scratch_files_are_not_code_changes():
    # a notes file beside the project made every resume say "with uncommitted changes" of the same commit
    assert not train.code_changed("")
    assert not train.code_changed("?? notes.txt\n?? figures/scratch.png")
    assert train.code_changed("?? experiments/new.py")
    assert train.code_changed(' M train.py\n?? notes.txt')
    assert train.code_changed('?? "odd name.py"')  # git quotes names with spaces


def test_a_figure_is_written_whole_in_the_format_of_its_suffix_or_not_at_all(tmp_path, monkeypatch):
    plt = train.pyplot()

    def drawn():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig
    train.save_figure(drawn(), tmp_path / "a.png")
    train.save_figure(drawn(), tmp_path / "a.PDF", dpi=50)  # the format from the suffix, not from the .tmp beside it
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "a.PDF").read_bytes()[:4] == b"%PDF"
    before = (tmp_path / "a.png").read_bytes()

    def killed(self, fname, **kw):  # the drawing stops halfway through the file
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt
    fig = drawn()
    monkeypatch.setattr(type(fig), "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        train.save_figure(fig, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == before and sorted(os.listdir(tmp_path)) == ["a.PDF", "a.png"]


def test_a_figure_is_closed_in_pyplot_once_saved_and_still_readable(tmp_path):
    # pyplot keeps every figure open until closed: a notebook or a test process drawing many would pile them up
    plt = train.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    train.save_figure(fig, tmp_path / "a.png")
    assert not plt.fignum_exists(fig.number) and len(fig.axes[0].lines) == 1


def test_a_figure_that_could_not_be_saved_is_not_left_open_in_pyplot(tmp_path):
    # when the save fails (no such folder, a full disk) the figure is closed all the same: a notebook that retries
    # would pile figures up in pyplot
    plt = train.pyplot()
    fig, _ = plt.subplots()
    with pytest.raises(OSError):
        train.save_figure(fig, tmp_path / "missing" / "a.png")
    assert not plt.fignum_exists(fig.number)


def test_a_figure_interrupted_while_saving_is_closed_too(tmp_path, monkeypatch):
    # Ctrl-C while a figure is written is a KeyboardInterrupt, no Exception
    plt = train.pyplot()
    fig, _ = plt.subplots()

    def killed(self, fname, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(type(fig), "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        train.save_figure(fig, tmp_path / "a.png")
    assert not plt.fignum_exists(fig.number)


def test_pyplot_draws_to_files_in_a_process_that_chose_no_backend(tmp_path):
    # a job or a script (no pyplot imported, no MPLBACKEND) draws on Agg, whatever a matplotlibrc names: an
    # interactive backend there (TkAgg on a desktop) would need a display the job may not have
    (tmp_path / "matplotlibrc").write_text("backend: svg\n")  # (a stand-in that needs no display)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    code = "import train, matplotlib; train.pyplot(); print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=train.ROOT, timeout=120,
                         env={**env, "MPLCONFIGDIR": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip().lower() == "agg", out.stderr


def test_pyplot_keeps_the_backend_a_notebook_chose(tmp_path):
    # train.pyplot() is called by every experiment's and script's figure: forcing Agg on a process that had chosen its
    # backend (a notebook's inline one) stopped the researcher's own figures showing after the first call
    import matplotlib
    plt = train.pyplot()  # pyplot imported, as in a notebook that drew something
    was = matplotlib.get_backend()
    try:
        matplotlib.use("svg")  # (a stand-in for the inline backend that needs no IPython)
        assert train.pyplot() is plt and matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(was)
    # a kernel names its backend in MPLBACKEND before anything imports pyplot (ipykernel does): the first figure a
    # run draws takes it too (a fresh process: this one has imported pyplot)
    code = "import train, matplotlib; train.pyplot(); print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=train.ROOT, timeout=120,
                         env={**os.environ, "MPLBACKEND": "svg"})
    assert out.returncode == 0 and out.stdout.strip() == "svg", out.stderr


def test_atomic_writes_use_a_temporary_file_of_their_own_process(tmp_path, monkeypatch):
    import torch
    seen, real = [], os.replace
    monkeypatch.setattr(train.os, "replace", lambda a, b: seen.append(os.path.basename(a)) or real(a, b))
    train.write_json(tmp_path / "r.json", {})
    train.save_weights(tmp_path / "w", {"x": torch.zeros(2)}, {})
    assert f"r.json.{os.getpid()}.tmp" in seen and f"w.safetensors.{os.getpid()}.tmp" in seen


def test_an_atomic_write_is_on_the_disk_before_its_rename(tmp_path, monkeypatch):
    # without fsync a power cut can keep the rename and lose the data: an empty checkpoint under the name
    events, fsync, replace = [], os.fsync, os.replace
    tmp = tmp_path / f"r.json.{os.getpid()}.tmp"
    monkeypatch.setattr(train.os, "fsync", lambda fd: events.append(
        ("fsync", os.fstat(fd).st_ino == tmp.stat().st_ino and tmp.read_text() == '{\n  "a": 1\n}\n')) or fsync(fd))
    monkeypatch.setattr(train.os, "replace", lambda a, b: events.append(("replace", str(a))) or replace(a, b))
    train.write_json(tmp_path / "r.json", {"a": 1})
    assert events == [("fsync", True), ("replace", str(tmp))]  # the whole temporary file, then its rename


# ----------------------------------------------------------------------------------------------------
# from a mutation audit of the run directory: each of these bugs left the rest of the suite green

def test_provenance_names_the_projects_commit_from_any_directory_and_is_dirty_for_code_only(tmp_path, monkeypatch):
    # train.py run by its path from another folder recorded that folder's repository (or none) as the code that ran
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=train.ROOT, capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    monkeypatch.chdir(tmp_path)
    assert train.provenance()["git_commit"] == head
    # env.json's git_dirty: a scratch note beside the code is no uncommitted change of what ran, an edited file is
    for porcelain, dirty in (("?? notes.txt", False), (" M train.py", True)):
        monkeypatch.setattr(train, "_git", lambda *args, p=porcelain: p if args[0] == "status" else head)
        assert train.provenance()["git_dirty"] is dirty, porcelain


def test_an_env_json_with_one_of_a_runs_keys_is_not_taken_for_a_runs_and_nothing_beside_it_is_deleted(cfg_file,
                                                                                                      tmp_path):
    # another tool's env.json may record an argv too: only a Run's has argv and started_utc, and only a Run's folder
    # may have its files deleted by --resume=False
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"env.json": json.dumps({"argv": ["launch.sh"], "host": "x"}), "photo.png": "x"}
    for name, text in mine.items():
        (out / name).write_text(text)
    _, cfg = load_config([cfg_file, f"--out_dir={out}", "--resume=False"])
    with pytest.raises(ConfigError, match="neither the config.json nor the env.json of a run"):
        train.Run(cfg, "subliminal_mnist")
    assert {f.name: f.read_text() for f in out.iterdir()} == mine


def test_an_interrupted_resume_false_run_says_to_rerun_without_it(cfg_file, tmp_path, monkeypatch, capsys):
    """"The same command reuses it" of a --resume=False run led to a rerun that deleted what it saved; without the
    flag it resumes (its own units, the old run's having been deleted at its start)."""
    import experiments.subliminal_mnist as SM
    monkeypatch.setattr(SM, "run", lambda cfg, run: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = tmp_path / "run"
    again = f"the same command with --out_dir={out}"
    for flag, says in (([], f"{again} reuses it"), (["--resume=False"], f"{again} and without --resume=False reuses")):
        assert train.cli(train.run_experiment, [cfg_file, f"--out_dir={out}", "--device=cpu", *flag]) == 130
        assert says in capsys.readouterr().err


def test_a_command_run_in_process_puts_back_the_threads_and_tf32_it_changed(cfg_file, tmp_path, monkeypatch):
    # a run's `threads` and (on CUDA) `tf32` are process-wide: a notebook that ran an experiment went on with its
    # thread count and with TF32 matmuls (on a GPU, its own fp32 matmuls silently less precise); so did a failed one
    import experiments.subliminal_mnist as SM
    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = torch.get_num_threads(), [f.allow_tf32 for f in flags]
    for fails in (False, True):
        def run(cfg, run):
            SM.use_tf32(torch.device("cuda"), not before[1][0])  # (only flags: settable on a CPU-only torch)
            assert torch.get_num_threads() == 3 and flags[0].allow_tf32 != before[1][0]  # the run's, in the run
            if fails:
                raise ConfigError("refused")
        monkeypatch.setattr(SM, "run", run)
        argv = [cfg_file, f"--out_dir={tmp_path / str(fails)}", "--device=cpu", "--threads=3"]
        assert train.cli(train.run_experiment, argv) == (2 if fails else 0)
        assert (torch.get_num_threads(), [f.allow_tf32 for f in flags]) == before


def test_a_command_run_in_process_leaves_tf32_settings_it_did_not_change_as_they_were(cfg_file, tmp_path, monkeypatch):
    # the settings were written back whether changed or not: a caller's set_float32_matmul_precision("medium") came
    # back "high" (torch >= 2.9: a mix of its two APIs, which get_float32_matmul_precision then refuses), and a caller
    # that enabled TF32 through torch >= 2.9's fp32_precision got a RuntimeError from cli before the command ran
    import experiments.subliminal_mnist as SM
    monkeypatch.setattr(SM, "run", lambda cfg, run: None)
    argv = lambda name: [cfg_file, f"--out_dir={tmp_path / name}", "--device=cpu"]
    matmul = torch.backends.cuda.matmul
    try:
        torch.set_float32_matmul_precision("medium")
        assert train.cli(train.run_experiment, argv("medium")) == 0
        assert torch.get_float32_matmul_precision() == "medium"
        if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
            matmul.fp32_precision = "tf32"
            assert train.cli(train.run_experiment, argv("new_api")) == 0
            assert matmul.fp32_precision == "tf32"
    finally:
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = "ieee"
        torch.set_float32_matmul_precision("highest")


@pytest.mark.skipif(os.name == "nt", reason="simulates Windows' fsync on a POSIX file descriptor")
def test_an_atomic_write_syncs_through_a_handle_windows_can_sync(tmp_path, monkeypatch):
    # Windows' fsync (_commit) refuses a read-only descriptor with EBADF: every write of a run failed there
    import fcntl
    fsync = os.fsync

    def windows_fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        fsync(fd)
    monkeypatch.setattr(train.os, "fsync", windows_fsync)
    train.write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    monkeypatch.setattr(train.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EINVAL, "Invalid argument")))
    train.write_json(tmp_path / "s.json", {"b": 2})  # a file system that cannot sync: written all the same
    assert json.loads((tmp_path / "s.json").read_text()) == {"b": 2}


# ----------------------------------------------------------------------------------------------------
# from a mutation audit of atomic_write's fsync and torch_settings_kept: each of these bugs left the rest green

def test_an_atomic_write_tolerates_a_file_system_that_cannot_sync_and_nothing_else(tmp_path, monkeypatch):
    # only "cannot sync here" (EINVAL, ENOTSUP, EOPNOTSUPP: FUSE, network mounts) is let through: a failed sync (EIO,
    # a disk error) is the data lost, raised with the last good file kept, as a failed write is
    def fails(code):
        return lambda fd: (_ for _ in ()).throw(OSError(code, os.strerror(code)))
    for code in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        monkeypatch.setattr(train.os, "fsync", fails(code))
        train.write_json(tmp_path / "r.json", {"code": code})
        assert json.loads((tmp_path / "r.json").read_text()) == {"code": code}
    monkeypatch.setattr(train.os, "fsync", fails(errno.EIO))
    with pytest.raises(OSError) as e:
        train.write_json(tmp_path / "r.json", {"code": "lost"})
    assert e.value.errno == errno.EIO
    assert json.loads((tmp_path / "r.json").read_text()) == {"code": errno.EOPNOTSUPP}
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left either


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts this process's descriptors in /proc")
def test_an_atomic_write_leaves_no_file_descriptor_open(tmp_path, monkeypatch):
    # the descriptor opened for fsync was left open: a long run writes thousands of files (units, checkpoints,
    # metrics) and would end at the open-file limit; a sync that fails must close it too
    before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        train.write_json(tmp_path / f"{i}.json", {"i": i})
    monkeypatch.setattr(train.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EINVAL, "Invalid")))
    train.write_json(tmp_path / "einval.json", {})
    monkeypatch.setattr(train.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        train.write_json(tmp_path / "eio.json", {})
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_command_run_in_process_after_tf32_set_through_torchs_new_api_runs_and_keeps_it(cfg_file, tmp_path,
                                                                                         monkeypatch):
    # torch >= 2.9: TF32 set through fp32_precision makes the legacy allow_tf32 getter raise RuntimeError. cli read
    # it before the command ran (every command failed in such a notebook) and, where the command then set allow_tf32
    # itself, wrote back the caller's unreadable flag (None: a RuntimeError as the command ended)
    import experiments.subliminal_mnist as SM
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("torch < 2.9: no fp32_precision")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)  # put back after
    argv = lambda name: [cfg_file, f"--out_dir={tmp_path / name}", "--device=cpu"]
    try:
        torch.set_float32_matmul_precision("highest")
        matmul.fp32_precision = "tf32"
        try:
            matmul.allow_tf32
            pytest.skip("this torch reads allow_tf32 after fp32_precision")
        except RuntimeError:
            pass
        monkeypatch.setattr(SM, "run", lambda cfg, run: None)
        assert train.cli(train.run_experiment, argv("untouched")) == 0
        assert matmul.fp32_precision == "tf32"
        monkeypatch.setattr(SM, "run", lambda cfg, run: SM.use_tf32(torch.device("cuda"), True))
        assert train.cli(train.run_experiment, argv("legacy")) == 0  # the command's own legacy write: no error
    finally:
        matmul.fp32_precision = "ieee"
        torch.set_float32_matmul_precision("highest")
