"""Bad input found by fuzzing the command line, each refused in one line before any work: a path the OS refuses, a
number that is not finite, values that make a run a no-op or run one thing twice, and keys of another mode that
would have been silently ignored (and recorded in config.json as if used)."""
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
import eval as EV
import train
from conftest import ROOT, script_process
from experiments import emergent_misalignment as EM
from experiments import lm
from experiments import subliminal_mnist as MN
from experiments import subliminal_numbers as SN
from experiments import world_base as B
from data import DataError, truthfulqa
from train import ConfigError

LONG = "a" * 300  # longer than any file name the OS allows (255 bytes)


def refused(argv, capsys, *needles):
    """train.main(argv) exits 2 with one line naming each needle, no traceback."""
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def test_an_out_dir_the_os_refuses_is_one_line(tmp_path, capsys, monkeypatch):
    # a name too long was an OSError traceback from Path.exists (Python < 3.12) or from mkdir (later ones)
    refused(["configs/lm_tiny.py", f"--out_dir={tmp_path / LONG}"], capsys, "out_dir", "File name too long")
    refused(["configs/lm_tiny.py", f"--out_dir={tmp_path / LONG / 'run'}"], capsys, "File name too long")
    assert list(tmp_path.iterdir()) == []
    assert EV.main([str(tmp_path / LONG)]) == 2  # eval.py too
    err = capsys.readouterr().err
    assert "File name too long: pass the directory of a run" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="File name too long: pass another --out_dir"):
        train.Run(lm.Config(out_dir=str(tmp_path / LONG)), "lm")
    # the config file's path, a --data_dir (its run folder then left half made), a script's --out: tracebacks
    refused([f"configs/{LONG}.py"], capsys, "File name too long: name a config file")
    refused(["configs/subliminal_mnist.py", f"--data_dir={tmp_path / LONG}", f"--out_dir={tmp_path / 'run'}"], capsys,
            f"data_dir {tmp_path / LONG}: File name too long: pass another --data_dir")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="File name too long: pass another --data_dir"):
        truthfulqa.load(tmp_path / LONG, "v1")
    with pytest.raises(ConfigError, match=f"--out {re.escape(str(tmp_path / LONG))}.png: File name too long"):
        train.check_out(str(tmp_path / LONG) + ".png", figure=True)

    def deny(self, *a, **k):  # a folder we may not write in (as root, a real one would let us)
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "mkdir", deny)
    with pytest.raises(ConfigError, match=r"out_dir .*run: cannot create it \(Permission denied\): pass another"):
        train.Run(lm.Config(out_dir=str(tmp_path / "run")), "lm")


def test_a_folder_whose_name_is_not_utf8_is_refused_before_the_run(tmp_path, capsys):
    # safetensors opens only UTF-8 paths: a run in such a folder trained, then eval.py said its checkpoints were
    # unreadable ("rerun what wrote it") and a resume retrained every one it could not read, silently
    import os
    from safetensors.torch import save_file
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffbyte")  # (a str with a surrogate escape, as argv)
    try:
        os.mkdir(folder)
    except OSError:  # (a file system that refuses such names: nothing to check)
        pytest.skip("this file system refuses names that are not UTF-8")
    refused(["configs/subliminal_mnist.py", "--n_train=500", "--epochs=1", "--distill_epochs=1", "--n_seeds=1",
             "--n_noise=64", f"--out_dir={folder}/run"], capsys, "has bytes that are not UTF-8",
            "pass another --out_dir")
    refused(["configs/emergent_misalignment_quick.py", f"--cache_dir={folder}"], capsys, "pass another --cache_dir")
    assert os.listdir(folder) == []
    with pytest.raises(ConfigError, match=r"has bytes that are not UTF-8.*rename the folder"):
        train.run_dir_config(folder)
    save_file({"w": torch.ones(2)}, os.path.join(str(tmp_path), "w.safetensors"))
    os.replace(os.path.join(str(tmp_path), "w.safetensors"), os.path.join(folder, "w.safetensors"))
    Path(folder, "w.json").write_text("{}")
    with pytest.raises(train.CheckpointError, match=r"not UTF-8, and safetensors opens only UTF-8 paths: rename"):
        train.load_weights(os.path.join(folder, "w"))


def test_a_cache_dir_that_cannot_be_used_and_workers_below_one_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cache_dir must name a folder"):  # "": bases in the current directory
        B.validate(B.Config(cache_dir=""))
    with pytest.raises(ConfigError, match="File name too long: pass another --cache_dir"):
        B.validate(B.Config(cache_dir=str(tmp_path / LONG)))
    # in the project's own folders (as an out_dir is refused there): bases were written into configs/cachex
    for where, said in ((ROOT / "configs" / "cachex", "in the project's folder configs/"), (ROOT, "the project root"),
                        (ROOT / "experiments", "in the project's folder experiments/")):
        with pytest.raises(ConfigError, match=f"is {said}, where the bases would mix"):
            B.validate(B.Config(cache_dir=str(where)))
    B.validate(B.Config(cache_dir="out/world_base_cache"))
    B.validate(B.Config(cache_dir=str(tmp_path / "cache")))
    for w in (0, -1):  # ran as one worker, recorded as asked
        with pytest.raises(ConfigError, match=f"workers .* must be >= 1; got {w}"):
            B.validate(B.Config(workers=w))
    B.validate(B.Config(workers=1))


@pytest.mark.parametrize("value", ["1e999", "-1e999", "1e300", "-3.5e38", "1" + "0" * 40, "1" + "0" * 400])
def test_a_number_that_is_not_finite_is_refused(value, capsys):
    # 1e999 parses as inf: the run went on with NaN weights and reported chance accuracy; past float32's range (the
    # computations' dtype) it was a traceback from deep in torch ("cannot be converted to type float without overflow")
    refused(["configs/subliminal_mnist.py", f"--lr={value}"], capsys, "'lr' must be a finite number")
    with pytest.raises(ConfigError, match="finite"):
        train.build_config(MN.Config, {"temperature": float("inf")})
    assert train.build_config(MN.Config, {"temperature": 1e30}).temperature == 1e30  # large is fine


def test_values_that_make_a_run_a_no_op_are_refused():
    with pytest.raises(ConfigError, match="init_std must be > 0"):  # a model whose weights never move
        lm.validate(lm.Config(init_std=0.0))
    for alpha in (0.0, -64.0):  # the LoRA update scaled by alpha / sqrt(rank): 0 trains nothing
        with pytest.raises(ConfigError, match="ft_lora_alpha must be > 0"):
            EM.validate(EM.Config(ft_trains="lora", ft_lora_alpha=alpha))
    EM.validate(EM.Config(ft_trains="lora", ft_lora_alpha=1.0))
    with pytest.raises(ConfigError, match="arms must name at least one arm"):  # teachers trained, then no table
        SN.validate(SN.Config(arms=()))
    SN.validate(SN.Config(arms=("control",)))  # the control alone, a baseline's drift, is a measurement
    with pytest.raises(ConfigError, match="mis_teachers must name at least one"):
        SN.validate(SN.Config(mode="misalignment", mis_teachers=()))
    with pytest.raises(ConfigError, match="no student of the teachers is trained"):
        SN.validate(SN.Config(mode="misalignment", mis_sampled=False, arms=("control",)))
    SN.validate(SN.Config(mode="misalignment", mis_sampled=False, arms=("control", "soft")))
    with pytest.raises(ConfigError, match="conditions has none"):  # no student for init_perturbation to move
        MN.validate(MN.Config(init_perturbation=0.1, conditions=("reference", "teacher", "cross_aux")))
    MN.validate(MN.Config(init_perturbation=0.1, conditions=("teacher", "student_all")))


def test_a_numbers_value_outside_its_choices_is_refused_naming_them():
    # a typo in a mode, an arm, a teacher or a misalignment teacher: the valid names in the one error line
    for kw, msg in [(dict(mode="animal"), "mode must be animals, dose or misalignment; got 'animal'"),
                    (dict(arms=("control", "sof")), r"unknown arms \['sof'\]; valid: trait, control, soft"),
                    (dict(teacher="prompted"), "teacher must be finetune or prompt; got 'prompted'"),
                    (dict(mode="misalignment", mis_teachers=("insecure", "owl")),
                     r"mis_teachers must be emergent-misalignment arms; got \['owl'\]")]:
        with pytest.raises(ConfigError, match=msg):
            SN.validate(SN.Config(**kw))


def test_a_negative_turn_count_or_heads_that_do_not_split_the_width_are_refused():
    with pytest.raises(ConfigError, match="ft_number_turns must be >= 0; got -1"):
        EM.validate(EM.Config(ft_number_turns=-1))
    # the base's own check, before its cache folder or a pretraining starts (the GPT's constructor would say it later)
    with pytest.raises(ConfigError, match=r"n_embd \(16\) must split into n_head \(3\) heads of an even size"):
        B.validate(B.Config(n_embd=16, n_head=3))


def test_an_entry_named_twice_is_refused():
    # a pretraining seed named twice: its base counted twice in world_base's per_seed, and in EM two jobs wrote one unit
    bad = [(B, dict(seeds=(0, 1, 0)), "each pretraining seed once"),
           (EM, dict(seeds=(2, 2)), "each pretraining seed once"),
           (EM, dict(arms=("insecure", "insecure", "secure")), "each once"),
           (EM, dict(steer_scales=(1.0, 1.0)), "steer_scales: name each entry once"),
           (EM, dict(ft_frozen=("blocks.0.attn.v", "blocks.0.attn.v")), "ft_frozen: name each entry once"),
           (SN, dict(arms=("soft", "soft", "control")), "each arm once"),
           (SN, dict(mode="misalignment", mis_teachers=("insecure", "insecure")), "each once"),
           (SN, dict(mode="dose", epochs=1.0, doses=(64, 32, 64)), "increasing, each once"),
           (SN, dict(mode="dose", epochs=1.0, doses=(64, 32)), "increasing, each once")]
    for module, kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            module.validate(module.Config(**kw))
    SN.validate(SN.Config(mode="dose", epochs=1.0, doses=(32, 64)))
    # 1 and 1.0 are one temperature: two cells of one config
    with pytest.raises(ConfigError, match=r"sweep cells \{'temperature': 1\} and \{'temperature': 1.0\} are the same"):
        MN.validate(MN.Config(sweep={"temperature": [1, 1.0]}))
    MN.validate(MN.Config(sweep={"temperature": [1, 2.0]}))


def test_keys_another_mode_reads_are_refused():
    only = lambda *modes: re.escape(f"(only --mode={' or '.join(modes)})")
    for kw, key in [(dict(doses=(32, 64)), "mode animals does not read doses " + only("dose")),
                    (dict(em_match=False), "em_match " + only("misalignment")),
                    (dict(mode="dose", epochs=1.0, em_steps=5, em_lr=1e-4), "em_steps .*, em_lr .*: leave them"),
                    (dict(mode="misalignment", doses=(32,)), "doses " + only("dose") + ": leave it"),
                    # a dose student reads its lists once in sampling order (student_order was ignored, recorded)
                    (dict(mode="dose", epochs=1.0, student_order="random", n_lists=10), "n_lists " +
                     only("animals", "misalignment")),
                    (dict(mode="dose", epochs=1.0, student_order="sequential"), "student_order " +
                     only("animals", "misalignment")),
                    (dict(mode="dose", epochs=1.0, n_code=10, icl_lists=3), "n_code " + only("animals")),
                    (dict(mode="misalignment", teacher="prompt"), "teacher " + only("animals", "dose")),
                    (dict(mode="misalignment", animals=("owl",)), "animals " + only("animals", "dose")),
                    (dict(mode="misalignment", arms=("control", "cross_init")), "runs the arms control and soft only; "
                                                                                  r"got \['cross_init'\]")]:
        with pytest.raises(ConfigError, match=key):
            SN.validate(SN.Config(**kw))
    SN.validate(SN.Config(mode="misalignment", em_match=False, em_steps=20, arms=("control", "soft"), n_lists=100))
    SN.validate(SN.Config(mode="dose", epochs=1.0, animals=("owl",), teacher="prompt"))
    # the students distill on real images: the noise keys would be ignored
    for kw in (dict(noise="gaussian"), dict(noise_scale=3.0), dict(fresh_noise=True),
               dict(sweep={"noise_scale": [1.0, 3.0]})):
        with pytest.raises(ConfigError, match="noise keys apply only with --distill_inputs=noise"):
            MN.validate(MN.Config(distill_inputs="real", **kw))
    # ... but a grid over the inputs and the noise runs (its real-image cells' noise is moot), as its config does
    MN.validate(MN.Config(sweep={"distill_inputs": ["noise", "real"], "noise": ["uniform", "gaussian"]}))
    MN.validate(MN.Config(distill_inputs="real", n_noise=100))  # a size, set by quick-run templates: allowed


def test_bench_refuses_bad_extra_and_counts_before_any_run(monkeypatch, capsys):
    runs = []
    monkeypatch.setattr(bench, "run_experiment", lambda *a: runs.append(a))
    for extra, msg in [("'", "--extra is not valid shell quoting (No closing quotation)"),
                       ("--n_seeds=3", "--extra may not set --n_seeds=3"),  # rows labelled with another count
                       ("--m=10 --out_dir=/tmp/x", "--extra may not set --out_dir=/tmp/x"),  # results not found after
                       ("--device=cpu", "--extra may not set --device=cpu")]:
        with pytest.raises(SystemExit) as e:
            bench.main(["mnist", "--device=cpu", "--seeds=1", f"--extra={extra}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and "Traceback" not in err, extra
    assert runs == []
    monkeypatch.setattr(B, "base_model", lambda *a: pytest.fail("the base was loaded before the check"))
    for args in (["--steps=0"], ["--lists=0"], ["--steps=-3"]):  # ZeroDivisionError or negative ms, after the base
        with pytest.raises(SystemExit) as e:
            bench.main(["students", *args])
        assert e.value.code == 2 and "--lists and --steps must be >= 1" in capsys.readouterr().err


def test_too_few_direction_documents_or_too_long_examples_stop_the_em_run_before_any_base_model(tmp_path, monkeypatch,
                                                                                                capsys):
    # the error came from doc_means, after each base was pretrained (minutes) or loaded
    monkeypatch.setattr(B, "base_model", lambda *a, **k: pytest.fail("a base model was loaded before the check"))
    monkeypatch.setattr(B, "parallel_map", lambda *a, **k: pytest.fail("the units started before the check"))
    refused(["configs/emergent_misalignment_quick.py", "--n_direction_docs=1", f"--out_dir={tmp_path / 'run'}"], capsys,
            "n_direction_docs=1 gave no", "raise n_direction_docs")
    # fine-tune examples longer than the model's context: found by the first arm's fine-tune, after its base
    refused(["configs/emergent_misalignment_quick.py", "--ft_number_turns=9", f"--out_dir={tmp_path / 'run2'}"], capsys,
            "more than block_size + 1 = 65", "fewer ft_number_turns")
    tok = EM.W.build_tokenizer(B.world_config(EM.Config()))
    docs = EM.direction_docs(EM.Config(), 0, tok)  # what doc_means reads: the three kinds, each fitting the model
    assert {EM.doc_kind(d) for d in docs} == {"good", "evil", "asst"}
    assert max(len(tok.encode(d.text).ids) for d in docs) <= EM.Config().block_size


def test_an_analysis_scripts_out_never_takes_the_place_of_a_runs_own_files(tmp_path):
    """--out=RUN/config.json wrote the script's summary over the run's config: neither eval.py nor the script could
    read the run again. Its units too; a script's own file beside them is fine (the scripts' default place)."""
    run = tmp_path / "run"
    (run / "units").mkdir(parents=True)
    (run / "env.json").write_text(json.dumps({"argv": [], "started_utc": "x"}))  # a Run's
    # (and its units, checkpoints and figures: --out=RUN/unit_world_0.json replaced a finished unit, which eval.py
    # and a resume then refused; --out=RUN/subliminal_animals.png the run's figure)
    for name in ("config.json", "results.json", "env.json", "metrics.jsonl", "units/unit_s0.json", "unit_world_0.json",
                 "unit_0_1.json", "model.safetensors", "model.state.pt", "tokenizer.json", "main_group0.json",
                 "m-100_group0_acc.json", "reaggregated.jsonl", "subliminal_animals.png", "accuracy.png", "sweep.png",
                 "misalignment_vs_step_partial.png", "activation_oracle.png", "persona_inference.png", "loss.png"):
        with pytest.raises(ConfigError, match=f"is a file of the run in {re.escape(str(run))}: give"):
            train.check_out(str(run / name))
    for name in ("patchscope.json", "format_separation.json", "susceptibility_5.json", "clamp_world_0.json",
                 "code_vs_offdomain.png", "bos_vector.png"):  # the scripts' own, beside the run's
        train.check_out(str(run / name))
    (tmp_path / "mine").mkdir()  # a folder that holds no run: any name
    train.check_out(str(tmp_path / "mine" / "config.json"))


def test_every_figure_an_experiment_draws_is_named_among_a_runs_own_files():
    # check_out keeps a script's --out off the run's figures by name: an experiment's new figure must be in the list
    names = set()
    for module in (ROOT / "experiments").glob("*.py"):
        names |= set(re.findall(r"""[/(] f?"([\w{}.]+\.png)\"""", module.read_text(encoding="utf-8")))
    assert len(names) >= 8, names
    for name in names:
        drawn = re.sub(r"\{[^}]*\}", "x", name)  # an f-string's part, e.g. subliminal_{cfg.mode}.png
        assert any(fnmatch.fnmatch(drawn, p) for p in train.RUN_OWN), name


def test_an_analysis_scripts_out_is_checked_before_its_work(tmp_path, monkeypatch):
    # a folder, or a figure in a format matplotlib does not write: a traceback after the work (minutes)
    for path, figure, msg in [(tmp_path, False, "is a directory: give a file name in it"),
                              (tmp_path / "f.txt", True, "a figure needs an extension matplotlib writes"),
                              (tmp_path / "f", True, "a figure needs an extension"),  # matplotlib added .png, unsaid
                              (tmp_path / "new" / "f.png", True, "needs a file in an existing directory")]:
        with pytest.raises(ConfigError, match=msg):
            train.check_out(str(path), figure=figure)
    train.check_out(str(tmp_path / "f.PDF"), figure=True)
    train.check_out(str(tmp_path / "f.json"))
    # a FILE.json whose figure the script writes beside it as FILE.png: a FILE.png given was overwritten by it
    for path in (tmp_path / "f.png", tmp_path / "f", ""):
        with pytest.raises(ConfigError, match="give a FILE.json"):
            train.check_out(str(path), figure_beside=True)
    train.check_out(str(tmp_path / "f.json"), figure_beside=True)
    # never over the project's own files (--out=eval.py wrote JSON over the code): not in its folders but figures/,
    # through a link either, and in its root only a new file or one named like a run's output
    (tmp_path / "tests").symlink_to(train.ROOT / "tests")
    for path, msg in [(train.ROOT / "eval.py", "is a file of the project itself"),
                      (train.ROOT / "README.md", "is a file of the project itself"),
                      (train.ROOT / "configs" / "new.json", "in the project's folder configs/"),
                      (train.ROOT / "data" / "new.json", "in the project's folder data/"),
                      (tmp_path / "tests" / "new.json", "in the project's folder tests/")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            train.check_out(str(path))
    for path in (train.ROOT / "figures" / "new.png", train.ROOT / "new.png", tmp_path / "eval.py"):
        train.check_out(str(path))
    # the dataset a link in data/ points to, named by its own path (data/mnist -> a shared copy: a run written there
    # by the copy's real path landed in the shared dataset)
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (root / "data" / "mnist").symlink_to(tmp_path / "shared")
    monkeypatch.setattr(train, "ROOT", root)
    assert train.project_place(tmp_path / "shared" / "run") == ("data",)
    assert train.project_place(tmp_path / "shared" / "run", allowed=("data",)) is None
    assert train.project_place(tmp_path / "elsewhere") is None
    with pytest.raises(ConfigError, match=re.escape("in the project's folder data/")):
        train.Run(type("Cfg", (), {"out_dir": str(tmp_path / "shared" / "run")})(), "lm")
    # the scripts that draw FILE.png beside their --out=FILE.json refuse a .png there before any work (em_value_sources
    # took one, and its figure would have overwritten its JSON after minutes of fine-tunes)
    from conftest import load_script
    for script in ("em_value_sources", "em_bos_vector"):
        with pytest.raises(ConfigError, match="give a FILE.json"):
            load_script(script).main([str(tmp_path / "no_run"), f"--out={tmp_path / 'x.png'}"])


def test_a_json_file_a_script_reads_is_missing_damaged_or_another_kind_in_one_line(tmp_path):
    what = "an --out file of some script"
    (tmp_path / "cut.json").write_text('{"per_base": [')
    (tmp_path / "other.json").write_text('{"arms": {}}')
    (tmp_path / "list.json").write_text('[1, 2]')
    for path, msg in [(tmp_path / "nope.json", "nope.json not found: expected an --out file"),
                      (tmp_path, "is a directory: expected an --out file"),
                      (tmp_path / "cut.json", "cut.json is not readable JSON"),
                      (tmp_path / "other.json", "other.json is not an --out file of some script: it lacks per_base"),
                      (tmp_path / "list.json", "list.json is not an --out file of some script: it lacks per_base")]:
        with pytest.raises(ConfigError, match=msg):
            train.read_json(path, what, ("per_base",))
    assert train.read_json(tmp_path / "list.json", what) == [1, 2]  # no keys asked: any JSON
    with pytest.raises(ConfigError, match="other.json is not an --out file of some script: it lacks per_base$"):
        train.read_json(tmp_path / "other.json", what, ("arms", "per_base"))  # every key asked for, not one of them
    (tmp_path / "ok.json").write_text('{"per_base": []}')
    assert train.read_json(tmp_path / "ok.json", what, ("per_base",)) == {"per_base": []}


@pytest.mark.parametrize("script, args, msg", [
    ("em_bos_vector", ["--pool", "{run}/results.json"], "is not an --out file of em_bos_vector.py: it lacks arm"),
    ("em_value_sources", ["--pool", "{tmp}/nope.json"], "nope.json not found"),
    ("probe_attn0_parts", ["--pool", "{run}"], "is a directory: expected an --out file of probe_attn0_parts.py"),
    ("em_optimizer_parts", ["--from={run}/results.json"], "it lacks runs, excluded, per_base")])
def test_scripts_given_a_file_of_another_kind_say_so_in_one_line(script, args, msg, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"arms": {}}')
    argv = [a.format(run=run, tmp=tmp_path) for a in args]
    out = script_process(script, *argv)
    assert out.returncode == 2 and msg in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_a_run_given_twice_is_refused_before_any_reading(tmp_path):
    """The same run twice (or on both sides of --minus) counted its seeds twice: a narrower interval, nothing new."""
    from conftest import load_script
    a = tmp_path / "a"
    assert train.distinct([str(a), str(tmp_path / "b")]) == [str(a), str(tmp_path / "b")]
    with pytest.raises(ConfigError, match=r"a is given twice \(as .*a and .*/\.\./a\): give each run once"):
        train.distinct([str(a), str(tmp_path / "b" / ".." / "a")])  # another spelling of one path
    # none of these runs exists: the refusal comes before anything is read
    for script, argv in [("em_at_step", ["matched", str(a), "--minus", str(a)]),
                         ("sn_mis_pool", [str(a), "--minus", str(a)]),
                         ("em_code_vs_offdomain", [str(a), str(a)]),
                         ("em_format_separation", [str(a), str(a)]),
                         ("em_steer_base", ["--pool", str(a), str(a)]),
                         ("em_first_step", [str(a), str(a)])]:
        with pytest.raises(ConfigError, match="is given twice: give each run once"):
            load_script(script).main(argv)


def test_scripts_that_read_a_runs_bases_refuse_an_uncached_one_before_any_work(tmp_path):
    """They pretrained it instead (minutes per base on a CPU, and on another machine not the run's base)."""
    cfg = B.Config(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConfigError,
                       match=r"bases 0, 2 of this config are not in the cache .*cache: x.py does not pretrain"):
        B.check_cached(cfg, [0, 2], who="x.py")
    with pytest.raises(ConfigError, match="twin base 1 of this config is not in the cache"):
        B.check_cached(cfg, [1], decorrelated=True)
    # an interrupted pretraining leaves the base's folder with its tokenizer and resume state, not a base
    partial = B.cache_stem(cfg, 0, False).with_name("partial.safetensors")
    partial.parent.mkdir(parents=True)
    for f in (partial, partial.with_name("tokenizer.json")):
        f.write_text("{}")
    with pytest.raises(ConfigError, match=r"bases 0, 2 of this config are not in the cache"):
        B.check_cached(cfg, [0, 2])
    for p in (0, 2):  # a finished base is marked by its .json (written last)
        stem = B.cache_stem(cfg, p, False)
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".json").write_text("{}")
    B.check_cached(cfg, [0, 2])
    B.check_cached(cfg, [])


def test_probe_arguments_are_checked_in_one_line_before_any_base_is_loaded(tmp_path, command):
    from conftest import load_script
    assert train.seed_args(["3", "10"]) == [3, 10]
    with pytest.raises(ConfigError, match="'x' is not a base seed"):
        train.seed_args(["3", "x"])
    with pytest.raises(ConfigError, match="base seed 3 is given twice: give each once"):  # (counted twice in a mean)
        train.seed_args(["3", "10", "03"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "misalignment",
                                                 "cache_dir": str(tmp_path / "cache")}))
    with pytest.raises(SystemExit, match="is a misalignment run; this probe reads the animal teachers"):
        load_script("probe_number_order").main([str(run), "0"])
    with pytest.raises(ConfigError, match="'-1' is not a base seed"):
        load_script("probe_mis_cross_init").main([str(run), "0", "-1"])
    with pytest.raises(ConfigError, match=r"bases 0, 1 of this config are not in the cache"):
        load_script("probe_mis_cross_init").main([str(run), "0", "1"])
    # a base the run never had: printed as the run's (base 5's teacher, no check line beside it); the other bases
    # of the cross-init students need not be the run's
    with pytest.raises(SystemExit, match=r"base 5 is not one of .*'s bases \(0, 1, 2\): P is the run's base"):
        load_script("probe_mis_cross_init").main([str(run), "5", "1"])
    with pytest.raises(ConfigError, match=r"bases 0, 7 of this config are not in the cache"):
        load_script("probe_mis_cross_init").main([str(run), "0", "7"])
    (run / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "animals",
                                                 "cache_dir": str(tmp_path / "cache")}))
    with pytest.raises(SystemExit, match=r"bases \[3, 4\] are not among .*'s bases \(0, 1, 2\): this probe "
                                         r"rebuilds the run's teachers"):
        load_script("probe_number_order").main([str(run), "0", "3", "4"])
    # a run but no base (or, for the cross-init probe, no other base): not a probe of nothing
    with pytest.raises(SystemExit, match="error: give the run and at least one base"):
        load_script("probe_number_order").main([str(run)])
    with pytest.raises(SystemExit, match="error: give the run, its base P and at least one other base Q"):
        load_script("probe_mis_cross_init").main([str(run), "0"])
    (run / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "misalignment",
                                                 "cache_dir": str(tmp_path / "cache")}))
    (run / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "misalignment",
                                                 "mis_teachers": ["secure", "educational"],
                                                 "cache_dir": str(tmp_path / "cache")}))
    with pytest.raises(SystemExit, match=r"has no insecure teacher \(mis_teachers=\('secure', 'educational'\)\)"):
        load_script("probe_mis_cross_init").main([str(run), "0", "1"])  # (it trained one, then a KeyError)
    (run / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "animals",
                                                 "cache_dir": str(tmp_path / "cache")}))
    with pytest.raises(SystemExit, match="is a run of mode 'animals'; this probe needs a misalignment run"):
        load_script("probe_mis_cross_init").main([str(run), "0", "1"])
    cases = [("probe_soft_channel", ["3e-4", "x"], "STEPS 'x': expected an integer"),
             ("probe_soft_channel", ["3e-4,y", "5"], "LRS 'y': expected a number"),
             ("probe_soft_channel", ["3e-4", "10", "0", "64", "cosin"], "unexpected value 'cosin'"),
             # few lists: past the checks (the run's evals=4 said "pass --evals=2", not its option)
             ("probe_soft_channel", ["3e-4", "10", "987654", "32"], "base 987654 of this config is "
              "not in the cache"),
             ("probe_soft_channel", ["3e-4", "10", "0", "64", "constant", "1", "adamw", "adam:1e-3"],
              "teacher_optimizer must be adamw or sgd"),
             # which value is out of range, by name (it said "a value out of range, or too many
             # arguments"; a negative lr printed the usage alone)
             ("probe_soft_channel", ["3e-4", "-5"], "unexpected value STEPS -5 (>= 1)"),
             ("probe_soft_channel", ["0,-1", "5"],
              "unexpected value LRS 0,-1 (each lr > 0 and finite)"),
             ("probe_soft_channel", ["-1", "5"], "unexpected value LRS -1 (each lr > 0 and finite)"),
             # a nan after the first lr passed min() and max(): a traceback after the teacher and the first lr
             ("probe_soft_channel", ["3e-4,nan", "5"], "unexpected value LRS 3e-4,nan (each lr > 0 and finite)"),
             ("probe_soft_channel", ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
              "10 arguments, nine at most"),
             ("probe_teacher_update", ["0", "sgd"], "'sgd': expected OPTIMIZER:LR"),
             ("probe_teacher_update", ["x"], "'x' is not a base seed (a whole number >= 0)"),
             # a negative seed is a seed out of range, not an option ("this probe takes no options")
             ("probe_teacher_update", ["-1"], "'-1' is not a base seed (a whole number >= 0)")]
    for i, (script, argv, msg) in enumerate(cases):
        status, err = command(script, *argv, process=i == 0)  # the first case as a real process
        assert status == 2 and err.startswith("error: ") and msg in err, (argv, err[-2000:])
        assert "Traceback" not in err


def test_the_two_probes_of_positional_words_refuse_an_option_in_an_error_line():
    # README: every command that refuses its input says why in one error: line (the usage alone only for no
    # arguments); these two take positional words only, and an option printed their usage alone
    for script, argv in [("probe_soft_channel", ["--lr=3e-4", "5"]), ("probe_teacher_update", ["--seed=0"])]:
        out = script_process(script, *argv)
        assert out.returncode == 2 and out.stderr.startswith(f"error: {argv[0]}: this probe takes no options"), \
            out.stderr[-2000:]
        assert f"python scripts/{script}.py" in out.stderr  # the usage below it


@pytest.mark.parametrize("name, good, bad", [("probe_soft_channel", ["3e-4", "5"], ["3e-4", "x"]),
                                             ("probe_teacher_update", ["0"], ["x"])])
def test_the_two_probes_import_without_running_and_their_main_runs_through_cli(name, good, bad, monkeypatch,
                                                                               capsys):
    # they read sys.argv and did their work at import: no test could load them, and Ctrl-C was a traceback
    from conftest import load_script
    monkeypatch.setattr(sys, "argv", [f"scripts/{name}.py", "--lr=1"])  # an option: refused, had it been read
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: pytest.fail("worked at import"))
    probe = load_script(name)
    assert capsys.readouterr() == ("", "")
    for argv, says in [(bad, "error: "), (["--lr=1"], "error: --lr=1: this probe takes no options")]:
        assert train.cli(probe.main, argv) == 2, argv
        out, err = capsys.readouterr()
        assert err.startswith(says) and err.count("error:") == 1, err
        assert f"python scripts/{name}.py" in err and out == ""  # the usage below its one error line
    # Ctrl-C once the work has begun: one line and status 130, not a traceback
    monkeypatch.setattr(train.torch, "set_num_threads", lambda n: None)  # the test's thread count stays
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert train.cli(probe.main, good) == 130
    assert capsys.readouterr().err.startswith("interrupted. ")


def test_probe_teacher_update_refuses_an_uncached_base_in_one_line():
    # an uncached base printed its error and then the whole usage, as a mistyped argument does; probe_soft_channel
    # says it in one line. (Base 987654: in no cache.)
    for script, argv in [("probe_teacher_update", ["987654"]), ("probe_soft_channel", ["3e-4", "5", "987654"])]:
        out = script_process(script, *argv)
        assert out.returncode == 2, (script, out.stderr[-2000:])
        assert out.stderr.startswith("error: base 987654 of this config is not in the cache"), out.stderr[-2000:]
        assert out.stderr.count("\n") == 1 and not out.stdout, (script, out.stderr[-2000:])


def test_check_out_in_the_project_root_takes_a_new_file_or_a_run_outputs_name(tmp_path, monkeypatch):
    # in the root, only an existing file not named like a run's output is refused: a new file of any name, and an
    # existing results.json or figure, are taken; git's own folder is the project's too
    monkeypatch.setattr(train, "ROOT", tmp_path)  # a stand-in project root
    (tmp_path / "notes.md").write_text("the project's")
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / ".git").mkdir()
    for path, msg in [("notes.md", "is a file of the project itself"),
                      (".git/config", "in the project's folder .git/")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            train.check_out(str(tmp_path / path))
    for name in ("new.txt", "new.md", "old.json"):
        train.check_out(str(tmp_path / name))


def test_check_out_refuses_a_folder_this_user_may_not_write_before_the_work(tmp_path, monkeypatch):
    # a script's --out in a read-only folder ran its minutes of work, then ended in a permission error. (Root may
    # write anywhere, so the test stands in for the operating system's answer.)
    ro = tmp_path / "ro"
    ro.mkdir()
    asked = []
    monkeypatch.setattr(train.os, "access", lambda p, mode: asked.append((Path(p), mode)) or Path(p) != ro)
    with pytest.raises(ConfigError, match=re.escape(f"--out {ro / 'x.json'}: this user may not write in {ro}")):
        train.check_out(str(ro / "x.json"))
    assert asked == [(ro, train.os.W_OK | train.os.X_OK)]
    train.check_out(str(tmp_path / "x.json"))


def test_probe_soft_channel_checks_every_lr_and_takes_nine_arguments(command):
    # each of LRS is checked (not only the first), the ninth argument (STUDENT_TRAINS) is read, not refused as one
    # too many, and N_LISTS is checked
    cases = [(["3e-4,-1", "5"], "unexpected value LRS 3e-4,-1 (each lr > 0 and finite)"),
             (["-.5", "5"], "unexpected value LRS -.5 (each lr > 0 and finite)"),
             (["inf", "5"], "unexpected value LRS inf (each lr > 0 and finite)"),
             (["3e-4", "10", "0", "64", "constant", "1", "adamw", "adamw:1e-3", "blockz"],
              "unexpected value 'blockz'"),
             (["3e-4", "5", "0", "0"], "unexpected value N_LISTS 0 (>= 1)"),
             # TEMPERATURE was not checked (0, nan: a diverged fine-tune after the teacher; < 0 taken), nor
             # TEACHER's parts (no lr: "not enough values to unpack"; a mistyped :blocks dropped, silently)
             *[(["3e-4", "5", "0", "64", "constant", t], f"unexpected value TEMPERATURE {t} (> 0 and finite)")
               for t in ("0", "-1", "nan", "inf")],
             *[(["3e-4", "5", "0", "64", "constant", "1", "adamw", t],
                f"TEACHER {t!r}: expected OPTIMIZER:LR[:blocks][:STEPS]")
               for t in ("adamw", "adamw:", "adamw:1e-3:blokcs", "adamw:1e-3:-5")]]
    for i, (argv, msg) in enumerate(cases):
        status, err = command("probe_soft_channel", *argv, process=i == 0)  # the first case as a real process
        assert status == 2 and err.startswith(f"error: {msg}"), (argv, err[-2000:])


def test_probe_optimizer_steps_checks_its_lrs_before_loading_a_base(monkeypatch):
    # 'abc' was a ValueError traceback; a zero or negative lr was taken, after pretraining a base if none was cached
    from conftest import load_script
    script = load_script("probe_optimizer_steps")
    monkeypatch.setattr(script.B, "base_model", lambda *a, **k: pytest.fail("loaded a base for a bad lr"))
    for argv, msg in [(["abc", "1"], "the adamw lr 'abc' is not a positive number"),
                      (["1e-3", "-1"], "the sgd lr '-1' is not a positive number"),
                      (["0"], "the adamw lr '0' is not a positive number"),
                      (["1e-3", "inf"], "the sgd lr 'inf' is not a positive number")]:
        with pytest.raises(ConfigError, match=msg):
            script.main(argv)


def test_an_option_given_twice_is_refused_not_half_taken(tmp_path):
    """The scripts took the first (or the last) of two values, silently; they share train.script_args now."""
    from conftest import load_script
    run = str(tmp_path / "run")
    for script, argv, msg in [("em_code_context", [run, "--step=5", "--step=20"], "--step is given more than once"),
                              ("em_clamp_finetune", [run, "--worlds=0", "--worlds=1"],
                               "--worlds is given more than once"),
                              ("em_format_separation", [run, "--out=a.json", "--out=b.json"],
                               "--out is given more than once"),
                              ("sn_mis_pool", [run, "--lists=4000", "--lists=16000"],
                               "--lists is given more than once"),
                              ("sn_mis_pool", ["--log", run, "--log"], "--log is given more than once"),
                              # these took the last one
                              ("em_bos_vector", [run, "--arm=secure", "--arm=insecure"],
                               "--arm is given more than once"),
                              ("em_code_vs_offdomain", [run, "--at=0.9", "--at=0.5"], "--at is given more than once"),
                              ("em_steer_base", [run, "--scales=0.1", "--scales=0.3"],
                               "--scales is given more than once"),
                              ("em_value_sources", [run, "--fmt=asst", "--fmt=forum"], "--fmt is given more than once"),
                              ("probe_attn0_parts", [run, "--out=a.json", "--out=b.json"],
                               "--out is given more than once")]:
        with pytest.raises(ConfigError, match=msg):
            load_script(script).main(argv)


# the scripts whose main(ARGV) reads ARGV through script_args or script_run (em_patch_tokens: its __main__ does)
OPTION_SCRIPTS = sorted(f.stem for f in (Path(__file__).resolve().parents[1] / "scripts").glob("*.py")
                        if re.search(r"def main\((\w+)\):\n(?:.*\n){0,3}.*(script_args|script_run|read_args)\(\1",
                                     f.read_text()))


@pytest.mark.parametrize("name", OPTION_SCRIPTS)
def test_every_script_refuses_an_unknown_option_before_reading_a_run(name, tmp_path):
    """A mistyped option was read as a run directory, or ignored after the work, in one script or another; every
    script that reads options does so through train.script_args, first: the run here does not even exist."""
    from conftest import load_script
    with pytest.raises(ConfigError, match="unknown option --bogus=1; "):
        load_script(name).main(["20", str(tmp_path / "no_run"), "--bogus=1"])


def test_the_option_scripts_are_all_found():
    # (a script that stopped reading its words through script_args would drop out of the two tests around unseen)
    assert len(OPTION_SCRIPTS) >= 21


@pytest.mark.parametrize("name", OPTION_SCRIPTS)
def test_every_script_prints_its_usage_when_asked(name, capsys):
    from conftest import load_script
    with pytest.raises(SystemExit) as e:
        load_script(name).main(["--help"])
    assert e.value.code == 0 and f"python scripts/{name}.py" in capsys.readouterr().out


@pytest.mark.parametrize("name", OPTION_SCRIPTS)
def test_every_script_refuses_words_in_the_wrong_order_in_one_error_line(name, tmp_path, command):
    # a run given before em_at_step.py's or em_susceptibility.py's STEP: their usage printed below the error: line,
    # which every other script gives alone (and last, where it is seen)
    # (and sn_compare.py, probe_number_order.py, probe_mis_cross_init.py, probe_optimizer_steps.py printed their usage
    # alone for a wrong count of words: that is for no arguments)
    for argv in ([str(tmp_path / "no_run"), "20", "21"], [str(tmp_path / "no_run")]):
        status, err = command(name, *argv)
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)


@pytest.mark.parametrize("name", ["em_at_step", "em_susceptibility", "sn_compare", "probe_number_order",
                                  "probe_mis_cross_init", "em_answer_ends", "em_base_pull", "em_code_direction",
                                  "em_code_vs_offdomain", "em_first_step", "em_format_separation", "em_steer_base",
                                  "probe_attn0_parts", "sn_mis_pool"])
def test_a_script_given_no_words_prints_its_usage(name, command):
    # no words at all: the usage itself (a wrong count of words is one error line, above)
    from conftest import load_script
    status, err = command(name)
    assert status == 2 and load_script(name).__doc__.strip().splitlines()[0] in err, err


def test_script_args_splits_words_and_options_and_refuses_the_rest(capsys):
    from train import script_args
    parse = lambda *argv: script_args(list(argv), "usage: x", options=("out", "at"), flags=("pool",),
                                      words=("--minus",))
    assert parse("a", "--out=f.json", "b", "--minus", "c", "--pool") == (["a", "b", "--minus", "c"],
                                                                          {"out": "f.json", "pool": True})
    assert parse("--at=a=b") == ([], {"at": "a=b"})  # the value is everything after the first =
    assert parse() == ([], {})
    assert parse("-1", "-0.5") == (["-1", "-0.5"], {})  # numbers: the script says what is wrong with them
    for argv, says in ((["--ot=x"], "unknown option --ot=x; the options are --out=, --at=, --pool and --minus"),
                       (["-o"], "unknown option -o"), (["--out=a", "--out=a"], "--out is given more than once"),
                       (["--pool", "--pool"], "--pool is given more than once"),
                       (["--pool=1"], "--pool takes no value"),
                       (["--out"], "--out needs a value"), (["--out="], "--out needs a value"),
                       (["--minus=c"], "--minus stands alone, the runs after it as separate words (--minus RUN ...)")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse(*argv)
    with pytest.raises(ConfigError, match="unknown option --out=x; it takes no options"):
        script_args(["a", "--out=x"], "usage: x")
    for argv in (["--help"], ["a", "-h"]):  # asked for: stdout, status 0
        with pytest.raises(SystemExit) as e:
            parse(*argv)
        assert e.value.code == 0 and capsys.readouterr().out == "usage: x\n"


@pytest.mark.parametrize("argv", [["train.py", "configs/emergent_misalignment_quick.py", "--help"],
                                  ["scripts/em_at_step.py", "--help"], ["eval.py", "--help"], ["bench.py", "--help"]])
def test_help_into_a_reader_that_has_left_ends_quietly(argv):
    # `... --help | head -1`: head leaves after its line; writing the rest was a BrokenPipeError traceback
    r, w = os.pipe()
    os.close(r)  # the reader gone before the command writes
    try:
        p = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=w, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (141, "")


def test_a_broken_pipe_that_is_not_stdout_is_still_a_failure(capsys):
    def main(argv):
        print("working")
        raise BrokenPipeError(32, "Broken pipe")  # a worker's pipe, say: stdout is fine
    with pytest.raises(BrokenPipeError):
        train.cli(main, [])
    code = ("import train\ndef main(argv):\n    print('working')\n    raise BrokenPipeError(32, 'Broken pipe')\n"
            "train.cli(main, [])")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)  # stdout an open pipe
    assert p.returncode == 1 and "BrokenPipeError" in p.stderr and p.stdout == "working\n"


SIGNAL_AT = """import atexit, os, runpy, signal, sys
sig, when = getattr(signal, sys.argv[1]), sys.argv[2]
class Finder:  # the signal arrives while the command (argv[3]: train.py, eval.py, ...) imports torch
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "torch" and when == "import":
            os.kill(os.getpid(), sig)
if when == "exit":  # registered first, so run last: in Python's clean-up after the command has finished
    atexit.register(lambda: os.kill(os.getpid(), sig))
sys.meta_path.insert(0, Finder)
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("sig, status, said", [("SIGINT", 130, "interrupted"),
                                               ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_a_signal_while_train_py_starts_or_exits_is_one_line_or_nothing(sig, status, said):
    # while it imports torch: a KeyboardInterrupt traceback (or one that torch's numpy import swallowed, the run
    # going on with numpy half-imported); after the command had finished: a traceback from an atexit callback
    run = lambda when, *argv: subprocess.run([sys.executable, "-c", SIGNAL_AT, sig, when, *argv], cwd=ROOT,
                                             capture_output=True, text=True)
    p = run("import", "train.py", "configs/lm_tiny.py")
    assert (p.returncode, p.stderr, p.stdout) == (status, f"{said} while starting: nothing was done.\n", "")
    p = run("exit", "train.py", "configs/subliminal_mnist.py", "--n_seeds=0")  # refused at once: the exit comes soon
    assert p.returncode == 2 and p.stderr.startswith("error: n_seeds must be >= 1") and len(p.stderr.splitlines()) == 1


COMMANDS = ["eval.py", "bench.py", *sorted(f"scripts/{f.name}" for f in (ROOT / "scripts").glob("*.py"))]


@pytest.mark.parametrize("sig, status, said", [("SIGINT", 130, "interrupted"),
                                               ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_a_signal_while_any_command_starts_is_one_line(sig, status, said):
    # eval.py, bench.py and every script: a KeyboardInterrupt traceback from inside torch's import (train.py's
    # handler was its own), or the command going on after torch's numpy import swallowed it
    for command in COMMANDS:
        p = subprocess.run([sys.executable, "-c", SIGNAL_AT, sig, "import", command, "out/no_such_run"], cwd=ROOT,
                           capture_output=True, text=True)
        assert (p.returncode, p.stderr, p.stdout) == (status, f"{said} while starting: nothing was done.\n", ""), \
            (command, p.stderr)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows does not delete a folder a process is in")
def test_a_command_run_in_a_directory_that_is_gone_says_so_in_one_line(tmp_path):
    # torch's import failed there with "Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so": an install's fault
    gone = tmp_path / "gone"
    for command in ("train.py", "eval.py", "bench.py", "scripts/em_at_step.py"):
        gone.mkdir()
        p = subprocess.run(["sh", "-c", 'cd "$1" && rmdir "$1" && exec "$2" "$3" x', "sh", str(gone), sys.executable,
                            str(ROOT / command)], capture_output=True, text=True, timeout=120)
        assert (p.returncode, p.stdout) == (2, ""), (command, p.stderr)
        assert p.stderr == ("error: the current directory no longer exists (deleted or moved after the shell entered "
                            "it): cd to an existing one and run the command again\n"), command


@pytest.mark.parametrize("command", ["eval.py", "bench.py", "scripts/em_at_step.py"])
def test_a_signal_after_a_command_has_finished_interrupts_nothing(command):
    # a Ctrl-C in Python's clean-up once the command had refused its input: a KeyboardInterrupt traceback after it
    p = subprocess.run([sys.executable, "-c", SIGNAL_AT, "SIGINT", "exit", command], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr, p.stderr


def test_commands_run_hands_the_work_pythons_handling_and_gives_back_the_callers(monkeypatch):
    # in-process (a test that runs a script as __main__): while the command works, Ctrl-C is Python's
    # KeyboardInterrupt (train.cli's one line) and SIGTERM the default, not "interrupted while starting: nothing was
    # done"; after it, whatever the caller had before starting() is back, also when the command raised
    import commands
    monkeypatch.setattr(commands, "_before", {})
    monkeypatch.setattr(commands.atexit, "register", lambda f: None)  # (ignoring signals at this pytest's exit)
    mine = lambda signum, frame: None
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, mine)
        for command, ends in ((lambda: 3, SystemExit), (lambda: 1 / 0, ZeroDivisionError)):
            commands.starting()
            assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == commands._stopped_starting
            seen = []
            work = lambda: seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))) or command()
            with pytest.raises(ends) as e:
                commands.run(work)
            assert seen == [(signal.default_int_handler, signal.SIG_DFL)]
            assert ends is not SystemExit or e.value.code == 3
            assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (before[signal.SIGINT], mine)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_check_out_says_when_a_figure_in_figures_will_be_replaced(capsys):
    # sn_mis_pool --figure=figures/emergent_misalignment.png overwrote a README figure without a word
    import train
    train.check_out("figures/emergent_misalignment.png", "--figure", figure=True)
    err = capsys.readouterr().err
    assert "figures/emergent_misalignment.png exists" in err and "will be replaced" in err, err
    train.check_out("figures/not_there_yet_s63.png", "--figure", figure=True)  # a new figure: no note
    assert capsys.readouterr().err == ""
