"""Small fixes, each with the test that failed before it: an lm warmup that never ends is a config error,
em_mechanism_figure draws a one-seed clamp run, bench.py gpt measures the CUDA card it was given, and an H100
NVL (or an H100 it does not know) is not given the SXM card's peak, env.json names the run's own card, the
MNIST experiment has a threads key, and Ctrl-C stops a pool of workers at once with one line, not tracebacks."""
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import matplotlib.axes
import pytest
import torch

import bench
import train
from conftest import ROOT, load_script, need_data
from experiments import lm
from model import GPT
from train import ConfigError


# ----------------------------------------------------------------------------------------------------
# experiments/lm.py and world_base.py: warmup must end before the last step

@pytest.mark.parametrize("steps, warmup", [(20, 20), (10, 30)])
def test_an_lm_warmup_as_long_as_the_run_is_a_config_error(steps, warmup):
    # warmup == steps: the lr reaches its peak on the last step and never decays; longer: it never reaches it
    with pytest.raises(ConfigError, match=rf"warmup \({warmup}\) must be >= 0 and < steps \({steps}\).*--warmup"):
        lm.validate(lm.Config(steps=steps, warmup=warmup))
    lm.validate(lm.Config(steps=warmup + 1, warmup=warmup))  # one step of decay is enough
    lm.validate(lm.Config(steps=1, warmup=0))


def test_an_lm_warmup_past_the_run_fails_before_its_run_directory_exists(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([str(ROOT / "configs/lm_tiny.py"), "--steps=10", f"--out_dir={out}"]) == 2  # warmup 20
    err = capsys.readouterr().err
    assert "warmup (20) must be >= 0 and < steps (10)" in err and "Traceback" not in err and not out.exists()


def test_a_world_base_warmup_as_long_as_its_pretraining_is_a_config_error():
    from experiments import world_base as B
    with pytest.raises(ConfigError, match=r"warmup \(50\) must be >= 0 and < steps \(6\).*--warmup"):
        B.validate(B.Config(steps=6))  # the default warmup is 50
    with pytest.raises(ConfigError, match=r"warmup \(-1\) must be >= 0"):
        B.validate(B.Config(steps=6, warmup=-1))
    B.validate(B.Config(steps=6, warmup=5))


@pytest.mark.parametrize("experiment", ["world_base", "emergent_misalignment", "subliminal_numbers"])
def test_a_pretraining_seed_named_twice_is_a_config_error(experiment):
    import importlib
    X = importlib.import_module(f"experiments.{experiment}")
    with pytest.raises(ConfigError, match=r"seeds must name each pretraining seed once; got \(0, 0\)"):
        X.validate(X.Config(seeds=(0, 0)))
    # seed -1 passed as another seed, yet random.Random drops an int's sign: it pretrained seed 1's corpus again
    with pytest.raises(ConfigError, match=r"seeds must be >= 0; got \(1, -1\)"):
        X.validate(X.Config(seeds=(1, -1)))
    X.validate(X.Config(seeds=(0, 1)))


# ----------------------------------------------------------------------------------------------------
# scripts/em_mechanism_figure.py: a clamp run of one seed has no interval

@pytest.mark.parametrize("n_seeds", [1, 2])
def test_em_mechanism_figure_draws_a_one_seed_clamp_run_without_a_band(tmp_path, monkeypatch, n_seeds):
    # with two seeds too: each line is the seeds' mean and each band their interval (a figure that always drew the
    # one-seed zero-width band, or lines at other values, passed when only one seed was drawn)
    from eval import summarize
    run = tmp_path / "clamp"
    run.mkdir()
    step = lambda c, o: {s: {"code_misaligned": c * int(s), "offdomain_misaligned": o * int(s)}
                         for s in ("1", "5", "20")}  # "20" before "5" as text: drawn in step order
    rows = [{"unclamped": step(.02 * k, .001 * k), "clamped": step(.01 * k, .0005 * k),
             "random_clamped": step(.02 * k, .0009 * k)} for k in (1, 1.5)[:n_seeds]]
    (run / "clamp_finetune.json").write_text(json.dumps({"per_seed": rows}))
    bands, fill = [], matplotlib.axes.Axes.fill_between
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between",
                        lambda ax, x, lo, hi, **kw: bands.append((list(lo), list(hi))) or fill(ax, x, lo, hi, **kw))
    lines, plot = [], matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, x, y, *a, **kw: lines.append(list(y)) or plot(ax, x, y, *a, **kw))
    load_script("em_mechanism_figure").main([f"--out={tmp_path / 'f.png'}", "--", str(run)])  # crashed: ci95 None
    assert (tmp_path / "f.png").stat().st_size > 1000
    # one line and one band per arm and panel: the seeds' mean, and their interval (one seed: of no
    # width, at its values)
    stats = [[summarize([r[arm][s][m] for r in rows]) for s in ("1", "5", "20")]
             for m in ("code_misaligned", "offdomain_misaligned") for arm in ("unclamped", "clamped", "random_clamped")]
    assert lines == [pytest.approx([t["mean"] for t in st]) for st in stats]
    if n_seeds == 1:
        assert bands == [(pytest.approx(y), pytest.approx(y)) for y in lines]
    else:
        assert bands == [(pytest.approx([t["ci95"][0] for t in st]), pytest.approx([t["ci95"][1] for t in st]))
                         for st in stats]
        assert all(lo[-1] < hi[-1] for lo, hi in bands)  # a band of some width


# ----------------------------------------------------------------------------------------------------
# bench.py gpt on cuda:1

def test_gpt_bench_on_a_second_card_syncs_and_measures_that_card(monkeypatch):
    """With no device, torch.cuda's synchronize, reset_peak_memory_stats and max_memory_allocated act on the current
    device (cuda:0), not the --device one. No GPU here: the CUDA calls record their device, the model and data stay
    on the CPU, and train_lm is stubbed."""
    seen = []
    record = lambda name, value=None: lambda device=None: seen.append((name, device)) or value
    monkeypatch.setattr(torch.cuda, "synchronize", record("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", record("reset_peak_memory_stats"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", record("max_memory_allocated", 2e9))
    card = torch.device("cuda", 1)
    bench._sync(card)  # the sampling rows' timer
    assert seen == [("synchronize", card)]

    seen.clear()
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **kw: t if a and a[0] == card else to(t, *a, **kw))
    monkeypatch.setattr(GPT, "to", lambda model, device: model)
    logged = [{"ms_per_step": 2.0, "tokens_per_s": 100.0}] * 2  # the warm-up and the timed interval
    monkeypatch.setattr(train, "train_lm", lambda model, data, **kw: {"history": logged})
    monkeypatch.setitem(bench.GPT_SHAPES, "tiny", dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    r = bench.bench_gpt_train("tiny", 2, 1, card)
    assert seen == [("reset_peak_memory_stats", card), ("max_memory_allocated", card)] and r["peak GB"] == 2.0


# ----------------------------------------------------------------------------------------------------
# train.peak_flops: the H100's form factors

@pytest.mark.parametrize("name, peak", [("NVIDIA H100 NVL", 835e12),  # NVIDIA: 1,671 TFLOP/s with sparsity
                                        ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12),
                                        ("NVIDIA H100 96GB", None)])  # an H100 it does not know: no MFU, not SXM's
def test_peak_flops_of_each_h100_form_factor(monkeypatch, name, peak):
    # the card asked is the run's: with no argument torch.cuda names the current one (cuda:0), another card's peak
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: asked.append(device) or name)
    if peak is None:  # an unknown card is named in a warning: a missing MFU column alone would say nothing
        with pytest.warns(UserWarning, match=f"does not know the dense bf16 peak FLOP/s of a {name}; add it there"):
            assert train.peak_flops("cuda") is None
        assert asked == ["cuda"]
    else:
        assert train.peak_flops("cuda") == peak and train.peak_flops(torch.device("cuda", 1)) == peak
        assert asked == ["cuda", torch.device("cuda", 1)]


# ----------------------------------------------------------------------------------------------------
# train.Run: env.json names the card the run was given

def test_env_json_names_the_card_of_the_run(tmp_path, monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        out_dir: str = str(tmp_path / "run")
        device: str = "cuda:1"

    # no GPU here: a recorder stands in for the driver (with no argument it would name the current card, cuda:0)
    monkeypatch.setattr(train.torch.cuda, "get_device_name", lambda d=None: f"card {d}")
    train.Run(Cfg(), "subliminal_mnist", argv=["train.py"])
    assert json.loads((tmp_path / "run" / "env.json").read_text())["device"] == "card cuda:1"


# ----------------------------------------------------------------------------------------------------
# subliminal MNIST: a threads key, set before the run directory so that env.json records it

@need_data()
def test_mnist_threads_key_sets_the_count_env_json_records(tmp_path, capsys):
    n = torch.get_num_threads()
    tiny = [str(ROOT / "configs/subliminal_mnist.py"), "--n_train=500", "--n_noise=64", "--width=16", "--epochs=1",
            "--n_seeds=1", "--batch_size=128", "--device=cpu", "--conditions=('teacher',)"]
    try:
        torch.set_num_threads(2)
        assert train.main([*tiny, "--threads=1", f"--out_dir={tmp_path / 'one'}"]) == 0
        assert json.loads((tmp_path / "one" / "env.json").read_text())["threads"] == 1
    finally:
        torch.set_num_threads(n)
    assert train.main([*tiny, "--threads=-1", f"--out_dir={tmp_path / 'bad'}"]) == 2
    assert "threads" in capsys.readouterr().err and not (tmp_path / "bad").exists()


_POOL_SCRIPT = """
import os, sys, threading, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tqdm import tqdm
from experiments.world_base import parallel_map


def job(seconds):  # a unit with a progress bar, as the experiments' units have
    (Path({marks!r}) / str(os.getpid())).touch()  # (one file per worker: it has taken a job)
    for _ in tqdm(range(1)):
        time.sleep(seconds)


if __name__ == "__main__":
    print("started", flush=True)
    try:
        parallel_map(job, [(120,)] * 3, 2)
    except KeyboardInterrupt:
        print("interrupted", threading.active_count(), flush=True)
        sys.exit(130)
"""


def _wait_for(ready, seconds=120):
    deadline = time.time() + seconds
    while not ready():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _as_from_a_terminal():
    # a shell's background job (`pytest ... &`) starts with SIGINT ignored, which its children inherit and Python
    # keeps (no KeyboardInterrupt at all): the scripts below start with it as a terminal gives it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(script, text):
    """Run `text` as a script in a session of its own (its process group is the one a Ctrl-C would signal), once
    it has said it started."""
    script.write_text(text)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=_as_from_a_terminal)
    assert p.stdout.readline().strip() == "started"
    return p


def _pool_in_its_jobs(tmp_path, name, script):
    """Start `script` (a template of root and marks: each job marks its worker's pid) as NAME.py, once both of its
    pool's workers are in their jobs (on any machine's speed) -> (the process, the marks folder)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    p = _start(tmp_path / f"{name}.py", script.format(root=str(ROOT), marks=str(marks)))
    _wait_for(lambda: len(list(marks.iterdir())) == 2)
    return p, marks


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="no process groups; os.kill(pid, SIGINT) terminates the process")
@pytest.mark.parametrize("group", [True, False], ids=["ctrl-c", "kill-int-parent"])
def test_ctrl_c_stops_a_worker_pool_at_once(tmp_path, group):
    # a terminal's Ctrl-C signals the whole process group; `kill -INT PID` the parent alone. Either way the jobs
    # in flight (two-minute sleeps) are killed, not waited for, and the workers print no tracebacks of their own
    # (nor leave tqdm's semaphores behind).
    p, marks = _pool_in_its_jobs(tmp_path, "pool", _POOL_SCRIPT)
    (os.killpg if group else os.kill)(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    # one thread left: the pool's manager thread has ended, which the interpreter's exit would otherwise race
    assert p.returncode == 130 and "interrupted 1" in out, out
    assert "Traceback" not in err and "leaked semaphore" not in err, err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_pools_workers_leave_when_their_parent_is_killed_outright(tmp_path):
    # SIGKILL (or the OOM killer) runs no cleanup in the parent: its workers went on with their two-minute jobs and
    # then waited forever for the next (found as idle workers an hour after a killed run). They leave within seconds
    p, marks = _pool_in_its_jobs(tmp_path, "pool", _POOL_SCRIPT)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)  # (its workers hold its stdout: this waits for them too)
    workers = [int(w.name) for w in marks.iterdir()]
    _wait_for(lambda: all(map(_gone, workers)), seconds=30)
    assert all(map(_gone, workers)), [w for w in workers if not _gone(w)]


_TERM_SCRIPT = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import train
from experiments.world_base import parallel_map


def job(seconds):
    (Path({marks!r}) / str(os.getpid())).touch()
    time.sleep(seconds)


def main(argv):
    print("started", flush=True)
    parallel_map(job, [(120,)] * 3, 2)


if __name__ == "__main__":
    sys.exit(train.cli(main, []))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_a_command_as_ctrl_c_does_with_its_own_status(tmp_path):
    # a scheduler's stop (SLURM, `timeout`, `kill`) is SIGTERM to the command: it was an instant death, without a word
    # and without stopping the pool (its workers went on with their two-minute jobs). Now the pool is stopped, one
    # line says what happened, and the status is a shell's for SIGTERM
    p, marks = _pool_in_its_jobs(tmp_path, "term", _TERM_SCRIPT)
    os.kill(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143 and err.startswith("terminated (SIGTERM). Anything saved before it"), err
    assert "Traceback" not in err, err
    assert all(_gone(int(w.name)) for w in marks.iterdir())  # each worker is gone, not left running its job
    # in a process: cli's handler is there while its command runs, and the previous one after
    seen, before = [], signal.getsignal(signal.SIGTERM)
    assert train.cli(lambda argv: seen.append(signal.getsignal(signal.SIGTERM)), []) == 0
    assert seen[0] not in (before, signal.SIG_DFL, None) and signal.getsignal(signal.SIGTERM) == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_is_left_alone_under_torchrun_and_off_the_main_thread(monkeypatch):
    # torchrun's agent stops its workers with SIGTERM and waits: a worker blocked in a collective would run a Python
    # handler only once the collective returned, so there the default (an instant death) stays. Off the main thread
    # (a command run from a thread) signal.signal raises ValueError: the command runs without the handler instead
    seen, before = [], signal.getsignal(signal.SIGTERM)
    command = lambda argv: seen.append(signal.getsignal(signal.SIGTERM)) or 7
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # what torchrun sets in each worker (and nothing else does)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert train.cli(command, []) == 7 and seen.pop() == before
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    got = []
    thread = threading.Thread(target=lambda: got.append(train.cli(command, [])))
    thread.start()
    thread.join()
    assert got == [7] and seen.pop() == before and signal.getsignal(signal.SIGTERM) == before


_BORN_SCRIPT = """
import signal, sys
sys.path.insert(0, {root!r})
from experiments.world_base import parallel_map

# a spawned worker runs this at import, seconds before the pool's initializer: a Ctrl-C then printed a traceback
BORN = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def job():  # (blocked at import, blocked now, ignored now)
    return (BORN, signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []),
            signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


if __name__ == "__main__":
    print(parallel_map(job, [(), ()], 2), job())
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_pool_workers_are_born_deaf_to_ctrl_c_and_the_parent_is_not(tmp_path):
    # workers hold a Ctrl-C from birth (blocked through their imports), then ignore it; the parent's mask is restored
    script = tmp_path / "born.py"
    script.write_text(_BORN_SCRIPT.format(root=str(ROOT)))
    p = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120, preexec_fn=_as_from_a_terminal)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == "[(True, False, True), (True, False, True)] (False, False, False)".split(), p.stdout


def test_cli_ends_an_interrupted_command_with_one_line(capsys):
    def main(argv):
        raise KeyboardInterrupt
    try:
        rc = train.cli(main, [])
    except KeyboardInterrupt:  # not caught: fail this test rather than stop the whole session
        pytest.fail("cli let KeyboardInterrupt through")
    assert rc == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted.") and err.count("\n") == 1


def test_cli_ends_a_permission_error_with_one_line_naming_the_path(capsys):
    # an out_dir, data file or cache folder this user may not write or read was a PermissionError traceback
    def main(argv):
        print("before")
        raise PermissionError(13, "Permission denied", "/data/mnist/t10k-labels-idx1-ubyte.gz")
    assert train.cli(main, []) == 2
    out, err = capsys.readouterr()
    assert out == "before\n" and err.count("\n") == 1
    assert err.startswith("error: permission denied: /data/mnist/t10k-labels-idx1-ubyte.gz: give this user access")


def test_cli_says_a_full_disk_in_one_line_naming_the_file(capsys):
    # a checkpoint or unit written to a full disk was an OSError traceback from deep inside a save
    def full(argv):
        print("before")
        raise OSError(28, "No space left on device", "/a/run/unit.safetensors.tmp")
    assert train.cli(full, []) == 2
    out, err = capsys.readouterr()
    assert out == "before\n" and err.count("\n") == 1
    assert err.startswith("error: no space left on the device writing /a/run/unit.safetensors.tmp: free some")


def test_a_resume_state_written_to_a_full_disk_is_said_in_one_line_as_a_full_disk(tmp_path, monkeypatch, capsys):
    # torch.save's writer says a failed write as a RuntimeError ("unexpected pos ..."), not the OSError it was: cli
    # printed the traceback of an lm or base pretraining's checkpoint on a full disk (or a quota, a size limit)
    import errno
    import io
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=4))
    opt = torch.optim.AdamW(model.parameters())  # (what makes save_lm write its resume state with torch.save)

    def disk_with(room, code, FileIO=io.FileIO):  # (the real one: the test puts each Disk in its place)
        class Disk(FileIO):  # a file on a device with `room` bytes left: its write past them fails as the OS says
            def write(self, data):
                if self.tell() + len(data) > room:
                    raise OSError(code, os.strerror(code))
                return super().write(data)
        return Disk

    stem = tmp_path / "ckpt"
    for code, said in ((errno.ENOSPC, "no space left on the device: free some,"),
                       (errno.EDQUOT, "disk quota exceeded: free some of your quota,")):
        for room in (0, 100, 2000):  # (the buffer's first flush, a later one, the last one at close)
            monkeypatch.setattr(train.io, "FileIO", disk_with(room, code))
            assert train.cli(lambda argv: train.save_lm(stem, model, step=1, seed=0, optimizer=opt), []) == 2
            said_where = said.replace(":", f" writing {stem}.state.pt:", 1)
            assert capsys.readouterr().err == (f"error: {said_where} or write elsewhere (--out_dir, --cache_dir, "
                                               f"--data_dir; a script's --out); what was saved before stays\n")
            assert not list(tmp_path.glob("*.tmp"))  # the part written is gone
            assert not list(tmp_path.glob("*.state.pt")) and not list(tmp_path.glob("*.safetensors"))
    # a failure that is not the file's is raised as it came, a RuntimeError too (torch.save begins its file before it
    # pickles). (On a device already full, the end of torch's file that its clean-up writes fails first: said so)
    monkeypatch.setattr(train.io, "FileIO", disk_with(10 ** 6, errno.ENOSPC))

    class Bad:
        def __init__(self, error):
            self.error = error

        def __reduce__(self):
            raise self.error
    for error in (TypeError("cannot pickle 'Bad' object"), RuntimeError("mat1 and mat2 shapes cannot be multiplied")):
        with pytest.raises(type(error)) as e:
            train.atomic_write(tmp_path / "x.pt", lambda tmp: train.torch_save({"a": Bad(error)}, tmp))
        assert e.value is error
    monkeypatch.setattr(train.io, "FileIO", disk_with(0, errno.ENOSPC))
    with pytest.raises(OSError) as e:
        train.atomic_write(tmp_path / "x.pt", lambda tmp: train.torch_save({"a": torch.ones(3)}, tmp))
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "x.pt"))
    assert list(tmp_path.iterdir()) == []
    # bytes a writer leaves in the file's buffer fail at its close: that failure raised too, not a file cut short
    monkeypatch.setattr(train.io, "FileIO", disk_with(50, errno.ENOSPC))
    monkeypatch.setattr(torch, "save", lambda obj, f: f.write(b"x" * 100))
    with pytest.raises(OSError) as e:
        train.atomic_write(tmp_path / "x.pt", lambda tmp: train.torch_save({}, tmp))
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "x.pt"))
    assert list(tmp_path.iterdir()) == []
    # with room, the file torch.save writes, loaded back the same
    monkeypatch.undo()
    train.save_lm(stem, model, step=1, seed=0, optimizer=opt)
    state = torch.load(train.state_file(stem), weights_only=False)
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(sys.platform == "win32", reason="a file size limit (RLIMIT_FSIZE) is POSIX's")
def test_a_file_size_limit_hit_by_torch_save_is_one_line(tmp_path):
    # a real OS error through torch's own writer (not a stand-in file): `ulimit -f` makes the write past it EFBIG
    code = f"""
import resource, sys
sys.path.insert(0, {str(ROOT)!r})
import torch, train
from model import GPT, GPTConfig
model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=32))
opt = torch.optim.AdamW(model.parameters())
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))  # the state's ~100 KB do not fit
if sys.argv[1] == "checkpoint":
    sys.exit(train.cli(lambda argv: train.save_lm({str(tmp_path / "ckpt")!r}, model, step=1, seed=0, optimizer=opt),
                       []))
sys.exit(train.cli(lambda argv: train.append_line({str(tmp_path / "m.jsonl")!r}, "x" * 30000), []))  # a log line
"""
    for what, written in (("checkpoint", tmp_path / "ckpt.state.pt"), ("log", tmp_path / "m.jsonl")):
        p = subprocess.run([sys.executable, "-c", code, what], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        assert p.stderr == (f"error: file too large writing {written}: raise the file size limit (`ulimit -f`), or "
                            f"write elsewhere (--out_dir, --cache_dir, --data_dir; a script's --out); what was saved "
                            f"before stays\n")
    assert [f.name for f in tmp_path.iterdir()] == ["m.jsonl"]  # (a log's line cut short is passed over when read)


def test_atomic_write_names_the_file_a_full_disk_stopped_and_leaves_other_os_errors_as_they_came(tmp_path, monkeypatch):
    # a write's (or fsync's) own ENOSPC names no file: cli's line said "no space left on the device" and not where
    import errno
    target = tmp_path / "unit.safetensors"

    def write_fails(err):
        def write(tmp):
            tmp.write_bytes(b"part")
            raise err
        return write

    for how in ("write", "fsync"):
        write = write_fails(OSError(errno.ENOSPC, "No space left on device")) if how == "write" else (
            lambda tmp: tmp.write_bytes(b"all"))
        if how == "fsync":
            monkeypatch.setattr(train.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        with pytest.raises(OSError) as e:
            train.atomic_write(target, write)
        assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target)), how
        assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    denied = PermissionError(errno.EACCES, "Permission denied", "/elsewhere")
    with pytest.raises(PermissionError) as e:
        train.atomic_write(target, write_fails(denied))
    assert e.value is denied


def test_a_write_to_a_read_only_file_system_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    # a run folder on a read-only mount (eval.py on a copied run): the temporary file's open fails with EROFS, no
    # PermissionError, and so does the clean-up's unlink of a file that is not there, whose traceback hid the first
    import errno
    target = tmp_path / "results.json"

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError) as e:
        train.write_json(target, {"a": 1})
    assert (e.value.errno, e.value.filename) == (errno.EROFS, str(target))  # the file, not its NAME.PID.tmp
    assert train.cli(lambda argv: train.write_json(target, {"a": 1}), []) == 2
    assert capsys.readouterr().err == (f"error: read-only file system writing {target}: write elsewhere (--out_dir, "
                                       f"--cache_dir, --data_dir; a script's --out); what was saved before stays\n")
    # another file's error inside the write is raised as it came, named as it was
    other = OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "elsewhere"))
    with pytest.raises(OSError) as e:
        train.atomic_write(target, lambda tmp: (_ for _ in ()).throw(other))
    assert e.value is other


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full (every write: ENOSPC)")
def test_a_log_line_appended_to_a_full_disk_names_its_file(tmp_path):
    # metrics.jsonl's appends (and env_earlier's, reaggregated's): the write's ENOSPC named no file
    import errno
    with pytest.raises(OSError) as e:
        train.append_line("/dev/full", '{"step": 1}')
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, "/dev/full")
    train.append_line(tmp_path / "m.jsonl", "a")
    train.append_line(tmp_path / "m.jsonl", "b")
    assert (tmp_path / "m.jsonl").read_text() == "a\nb\n"


def test_files_are_read_and_written_as_utf8_whatever_the_locale(tmp_path):
    # Python's UTF-8 mode off in a locale without the tables' characters (LC_ALL=C here; Windows' cp1252 lacks
    # some): results.md's ± failed to write after every run, and a config with a non-ASCII comment failed to load
    config = ROOT / "configs" / "subliminal_mnist_aux_sweep.py"
    assert any(ord(c) > 127 for c in config.read_text(encoding="utf-8"))  # (what the load below is about)
    script = tmp_path / "check.py"  # (a file, UTF-8 as Python source is: a -c command is in the locale's encoding)
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import locale, train
assert locale.getpreferredencoding(False).lower() in ("ascii", "ansi_x3.4-1968"), locale.getpreferredencoding(False)
train.write_text({str(tmp_path / "results.md")!r}, "| soft | 0.341 ± 0.064 | KL(teacher ‖ arm) |\\n")
train.append_line({str(tmp_path / "m.jsonl")!r}, "Δθ")
open({str(tmp_path / "r.json")!r}, "wb").write('{{"experiment": "±"}}'.encode())  # (a JSON not escaped to ASCII)
r = {str(tmp_path / "r.json")!r}
print(train.read_json(r, "a test's file") == train.read_run_config(r) == {{"experiment": "±"}})
print(train.load_config([{str(config)!r}], resolve=False)[0].__name__)
""", encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["True", "experiments.subliminal_mnist"]
    assert (tmp_path / "results.md").read_text(encoding="utf-8") == "| soft | 0.341 ± 0.064 | KL(teacher ‖ arm) |\n"
    assert (tmp_path / "m.jsonl").read_text(encoding="utf-8") == "Δθ\n"


def test_a_command_whose_output_encoding_lacks_a_tables_characters_writes_them_escaped(monkeypatch):
    # an ASCII locale, or Windows' cp1252 with the output in a file: the ± of every table (the numbers' ‖, Δθ) was a
    # UnicodeEncodeError after the results were saved, at every rerun
    import io
    # (stderr as an ASCII locale has it with Python's UTF-8 mode off: surrogateescape, which fails on them too)
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=how, write_through=True)
                for how in ("strict", "surrogateescape"))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)

    def main(argv):
        print("| soft | 0.341 ± 0.064 | KL(teacher ‖ arm) |")
        raise ConfigError("Δθ must be finite")
    assert train.cli(main, []) == 2
    assert out.buffer.getvalue() == b"| soft | 0.341 \\xb1 0.064 | KL(teacher \\u2016 arm) |\n"
    assert err.buffer.getvalue() == b"error: \\u0394\\u03b8 must be finite\n"


def test_cli_says_out_of_memory_in_one_line_and_leaves_other_runtime_errors_alone(capsys):
    # too many seeds or too wide a model for the device was a traceback from inside torch
    def cuda(argv):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                          "capacity of 79.19 GiB of which 1.06 GiB is free.\nmore lines")
    assert train.cli(cuda, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB. Lower n_seeds,")

    def cpu(argv):  # a real refusal: 2**50 bytes is more than a 64-bit process can map, whatever the machine
        torch.empty(2**50, dtype=torch.uint8)
    assert train.cli(cpu, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory: the CPU could not allocate 1048576.0 GiB. Lower")
    assert err.count("\n") == 1

    def other(argv):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="shapes"):
        train.cli(other, [])

    # numpy's and Python's own allocations raise MemoryError, not torch's RuntimeError: a traceback, under a memory
    # limit (ulimit -v) or on a small machine
    import numpy as np
    for big, said in [(lambda: np.empty(2**50, dtype=np.uint8), "Unable to allocate 1.00 PiB for an array"),
                      (lambda: (_ for _ in ()).throw(MemoryError()), "an allocation failed")]:
        assert train.cli(lambda argv: big(), []) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: out of memory: {said}") and err.count("\n") == 1, err


_KILLED_WORKER_SCRIPT = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import train
from experiments.world_base import parallel_map


def job(i):
    if i == 1:  # as the kernel's OOM killer would
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    return i


if __name__ == "__main__":
    sys.exit(train.cli(lambda argv: print(parallel_map(job, [(0,), (1,), (2,)], 2)), []))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_worker_killed_by_the_system_ends_the_command_in_one_line(tmp_path):
    # was a BrokenProcessPool traceback ("terminated abruptly") that did not say the usual cause or what to do
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_WORKER_SCRIPT.format(root=str(ROOT)))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: a worker process was killed, most often by the system's out-of-memory killer")
    assert p.stderr.count("\n") == 1 and p.stdout == "", (p.stdout, p.stderr)


_FAULTS_SCRIPT = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
import train
if sys.argv[1] == "keep":
    train.keep_freed_memory()
for _ in range(20):  # 64 MB, touched, freed: the heap kept grows for the first few (up to 12 seen; torch's aligned
    x = torch.ones(16 * 2**20)  # block need not fit the hole the last one left), then the same again and again
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = torch.ones(16 * 2**20)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keep_freed_memory_stops_each_new_tensor_faulting_its_pages_in_again(tmp_path):
    # cli's allocator setting: by default glibc hands a freed 64 MB block back to the system, and the next tensor of
    # that size page-faults all its 16,384 pages in again (the EM evaluation's activations: 15% of its time)
    script = tmp_path / "faults.py"
    script.write_text(_FAULTS_SCRIPT.format(root=str(ROOT)))
    faults, env = {}, {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own defaults
    for mode in ("default", "keep"):
        p = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stderr
        faults[mode] = int(p.stdout)
    assert faults["default"] >= 20 * 16384 * 0.9  # every one of the 20 faulted in afresh
    assert faults["keep"] < faults["default"] / 4, faults  # (without the warm-up: 1 to 6 of the 20 faulted)


def test_cli_names_both_paths_of_a_permission_error_and_leaves_other_os_errors_alone(capsys):
    # a rename names its source and target; one without a file names what it was; an OSError that is not about
    # permissions (an I/O error; a full disk has its own line, test above) is not said to be one
    def main(argv):
        raise PermissionError(13, "Permission denied", "/a/run.json.tmp", None, "/b/run.json")
    assert train.cli(main, []) == 2
    assert capsys.readouterr().err.startswith("error: permission denied: /a/run.json.tmp -> /b/run.json: give")

    def no_file(argv):
        raise PermissionError(1, "Operation not permitted")
    assert train.cli(no_file, []) == 2
    assert capsys.readouterr().err.startswith("error: permission denied: [Errno 1] Operation not permitted: give")

    def io_error(argv):
        raise OSError(5, "Input/output error", "/a/x")
    with pytest.raises(OSError, match="Input/output"):
        train.cli(io_error, [])
    # and, like a ConfigError, it comes after what the command printed (stdout to a pipe is block-buffered)
    script = ("import sys, train\n"
              "def main(argv):\n"
              "    print('the table so far')\n"
              "    raise PermissionError(13, 'Permission denied', '/x')\n"
              "sys.exit(train.cli(main, []))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120, env=env)
    assert p.returncode == 2 and p.stdout.splitlines()[-2] == "the table so far", p.stdout


def test_a_command_error_comes_after_what_the_command_printed_before_it():
    # stdout to a pipe or file is block-buffered: without a flush, the error (stderr) came first in a log of both
    script = ("import sys, train\n"
              "def main(argv):\n"
              "    print('the table so far')\n"
              "    raise train.ConfigError('then this')\n"
              "sys.exit(train.cli(main, []))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the buffering of a plain shell
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120, env=env)
    assert p.returncode == 2 and p.stdout.splitlines()[-2:] == ["the table so far", "error: then this"], p.stdout
    # an analysis script's own sys.exit(message) too (sn_compare printed its table's header after its error), said
    # the same way: an "error: " line and status 2 (it was the bare message, status 1)
    for exit_with in ("'then this'", "'error: then this'"):
        p = subprocess.run([sys.executable, "-c", script.replace("raise train.ConfigError('then this')",
                                                                f"sys.exit({exit_with})")],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, env=env)
        assert p.returncode == 2 and p.stdout.splitlines()[-2:] == ["the table so far", "error: then this"], p.stdout


def test_a_worker_pool_returns_results_in_job_order_from_one_thread_workers():
    from experiments.world_base import parallel_map
    assert parallel_map(pow, [(2, 3), (3, 2), (4, 2), (5, 1)], 2) == [8, 9, 16, 5]
    # each spawned worker runs one thread (two single-thread models use two cores better than one two-thread one)
    assert parallel_map(torch.get_num_threads, [(), ()], 2) == [1, 1]
    assert parallel_map(os.getpid, [()], 2) == [os.getpid()]  # one job: in this process, no pool


_FAILING_POOL_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from experiments.world_base import parallel_map

MARKS = Path({marks!r})


def job(i, seconds):  # job {fail} fails as soon as the other worker has started its job
    (MARKS / f"started_{{i}}").touch()
    if i == {fail}:
        while not (MARKS / "started_{other}").exists():
            time.sleep(0.01)
        raise ValueError("job {fail} failed")
    time.sleep(seconds)


if __name__ == "__main__":
    print("started", flush=True)
    try:
        parallel_map(job, [(0, {first}), (1, {first})] + [(i, {rest}) for i in range(2, {n})], 2)
    except ValueError as e:
        print("raised", e, flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
"""


def _failing_pool(tmp_path, fail, first, rest, n):
    marks = tmp_path / "marks"
    marks.mkdir()
    return _start(tmp_path / "failing_pool.py", _FAILING_POOL_SCRIPT.format(
        root=str(ROOT), marks=str(marks), fail=fail, other=1 - fail, first=first, rest=rest, n=n)), marks


def test_a_failing_job_cancels_the_jobs_not_started_though_an_earlier_one_still_runs(tmp_path):
    # job 1 fails while job 0 runs for 8 s and the other worker could run jobs 2-11 (0.5 s each) in that time.
    # Collecting the results in order waited for job 0 before it looked at job 1, and the pool started all twelve
    # (the parent may be a second late to see job 1 fail on a busy machine: two more jobs start, not ten)
    p, marks = _failing_pool(tmp_path, fail=1, first=8, rest=0.5, n=12)
    out, err = p.communicate(timeout=120)
    assert "raised job 1 failed" in out, err
    started = sorted(int(f.name.split("_")[1]) for f in marks.iterdir())
    # only the jobs the pool had already handed to its call queue (its workers + 1, and the ones taken) still run
    assert started[:2] == [0, 1] and len(started) <= 7, started


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(pid, SIGINT) terminates the process on Windows")
def test_ctrl_c_while_a_failed_pool_waits_for_its_jobs_in_flight_stops_at_once(tmp_path):
    # job 0 fails; job 1 (two minutes) is in flight and parallel_map waits for it to finish. Ctrl-C there escaped
    # the KeyboardInterrupt handler: the workers ignore SIGINT, and the parent then waited at exit for job 1
    p, marks = _failing_pool(tmp_path, fail=0, first=120, rest=0, n=2)
    _wait_for(lambda: {"started_0", "started_1"} <= {f.name for f in marks.iterdir()})
    time.sleep(1.5)  # job 0 has raised: the parent waits for job 1
    os.kill(p.pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("still running 30 s after Ctrl-C: it waited for the job in flight")
    assert p.returncode == 130 and "interrupted" in out and "Traceback" not in err, (out, err)


def test_an_interrupted_run_names_the_out_dir_a_rerun_must_reuse(tmp_path, monkeypatch, capsys):
    # the default out_dir is a new out/<config>/<UTC time> at each command: "the same command run again" made a new
    # run directory and reused none of the interrupted run's finished units. The line names the one to pass
    def interrupted(cfg, run):
        raise KeyboardInterrupt
    monkeypatch.setattr(lm, "run", interrupted)
    monkeypatch.chdir(tmp_path)  # the default out_dir is relative: out/lm_tiny/<UTC time> here
    assert train.main([str(ROOT / "configs/lm_tiny.py")]) == 130
    (made,) = (tmp_path / "out" / "lm_tiny").iterdir()
    err = capsys.readouterr().err
    assert err.startswith("interrupted.") and err.count("\n") == 1 and f"--out_dir={made}" in err, err
    # a command of its own (eval.py, the scripts) has no run directory to name
    assert train.cli(lambda argv: interrupted(None, None), []) == 130
    assert "the same command run again" in capsys.readouterr().err


def test_commands_started_in_the_same_second_each_take_a_default_out_dir_of_their_own(tmp_path, monkeypatch, capsys):
    # the default out_dir is out/<config>/<UTC time> to the second: a second command started in that second (`... &
    # ...`) found the first one's folder locked ("another command is using ...") or holding its run, and was refused
    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2026, 12, 6, 20, 18, 33, tzinfo=tz)
    monkeypatch.setattr(datetime, "datetime", Frozen)
    runs = []
    monkeypatch.setattr(lm, "run", lambda cfg, run: runs.append((cfg.out_dir, run.dir)))
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "out" / "lm_tiny" / "20261206-201833"
    first.mkdir(parents=True)
    fd = train.lock_run_dir(first)  # a command started in this second, still running
    try:
        assert train.main([str(ROOT / "configs/lm_tiny.py")]) == 0
        assert train.main([str(ROOT / "configs/lm_tiny.py"), "--steps=30"]) == 0  # another config, the same second
        # a folder named on the command line is that folder: refused while its run goes on (a resume names it)
        assert train.main([str(ROOT / "configs/lm_tiny.py"), f"--out_dir={first}"]) == 2
        assert "another command is using" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert runs == [(f"out/lm_tiny/20261206-201833-{n}", Path(f"out/lm_tiny/20261206-201833-{n}")) for n in (2, 3)]
    assert list(first.iterdir()) == []  # the other command's folder untouched
    made = [json.loads((first.parent / f"20261206-201833-{n}" / "config.json").read_text()) for n in (2, 3)]
    assert [(m["out_dir"], m["steps"] == 30) for m in made] == [("out/lm_tiny/20261206-201833-2", False),
                                                              ("out/lm_tiny/20261206-201833-3", True)]
    # a run refused at its start leaves nothing behind, the folder it picked included

    def refused(cfg, run):
        raise ConfigError("refused at its start")
    monkeypatch.setattr(lm, "run", refused)
    assert train.main([str(ROOT / "configs/lm_tiny.py"), "--steps=40"]) == 2
    assert sorted(p.name for p in first.parent.iterdir()) == [f"20261206-201833{s}" for s in ("", "-2", "-3")]


def test_a_file_given_for_a_run_directory_is_named_as_a_file(tmp_path):
    # `python eval.py out/run/results.json`: the path exists, so "no such directory" was wrong
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "world_base"}))
    with pytest.raises(ConfigError, match=r"config\.json is a file, not a directory: pass the directory of a run"):
        train.run_dir_config(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="nope: no such directory"):
        train.run_dir_config(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------------
# train.py's loops and model.token_ids: data that gave a wrong number or torch's error is refused, saying why

def _gpt(V=11):
    from model import GPTConfig
    return GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=8))


def test_eval_lm_over_no_target_is_an_error_not_a_perfect_loss():
    model = _gpt()
    data = {"tokens": torch.randint(11, (4, 6)), "mask": torch.ones(4, 5, dtype=torch.bool)}
    assert train.eval_lm(model, data, batch_size=2, max_rows=1) > 0  # one row is enough
    for d in (data, {"tokens": data["tokens"]}):  # with a mask or without one (a ZeroDivisionError there)
        with pytest.raises(ValueError, match=r"no target to count: 0 rows \(max_rows=0\)"):
            train.eval_lm(model, d, batch_size=2, max_rows=0)
    data["mask"][:2] = False  # the first two rows count nothing, the rest do
    for rows in (1, 2):
        with pytest.raises(ValueError, match=f"{rows} rows .*none of them with a masked-in target"):
            train.eval_lm(model, data, batch_size=2, max_rows=rows)
    assert train.eval_lm(model, data, batch_size=2, max_rows=3) > 0
    with pytest.raises(ValueError, match="no target to count: 4 rows .* of one token each"):  # no next token
        train.eval_lm(model, {"tokens": data["tokens"][:, :1]}, batch_size=2)


@pytest.mark.parametrize("which", ["train", "val"])
def test_train_lm_refuses_ids_outside_the_vocabulary_and_a_mask_with_no_target(which, tmp_path):
    model, good = _gpt(), {"tokens": torch.randint(11, (4, 6))}
    what = "data" if which == "train" else "val data"
    one_off = good["tokens"].clone()
    one_off[3, 5] = 11  # one id past the vocabulary, in the last row
    for bad, says in (({"tokens": torch.full((4, 6), 11)}, r"holds token ids 11 \.\. 11, outside the model's "
                                                           r"vocabulary 0 \.\. 10"),
                      ({"tokens": torch.full((4, 6), -1)}, r"holds token ids -1 \.\. -1"),
                      ({"tokens": one_off}, rf"holds token ids {int(one_off.min())} \.\. 11"),
                      ({"tokens": good["tokens"], "mask": torch.zeros(4, 5, dtype=torch.bool)},
                       "has a mask with no target in it"),
                      ({"tokens": good["tokens"][0]}, r"is \{'tokens': \[N, T\+1\] token ids")):  # a 1-D stream
        train_data, val = (bad, good) if which == "train" else (good, bad)
        with pytest.raises(ValueError, match=rf"train_lm's {what} {says}"):
            train.train_lm(model, train_data, val=val, steps=1, batch_size=2, lr=1e-3, progress=False)
    train.train_lm(model, good, val=good, steps=1, batch_size=2, lr=1e-3, progress=False)  # the good data trains
    # ... and so does a mask with some rows empty (the loss is over the batch's targets: an empty row adds none)
    partly = {**good, "mask": torch.ones(4, 5, dtype=torch.bool)}
    partly["mask"][:2] = False
    train.train_lm(model, partly, val=partly, steps=1, batch_size=2, lr=1e-3, progress=False)


def test_finetune_refuses_rows_with_no_trained_target():
    model = _gpt()
    data = train.pack_pairs([([1, 2], [3, 4]), ([5], [6, 7]), ([8, 9], [10])], pad_id=0)
    data["mask"][1] = False  # hand-made data: a batch of such rows had a loss of 0/0, reported as "diverged"
    with pytest.raises(ValueError, match=r"rows with no trained target \(mask all zero\): rows \[1\] of 3: drop"):
        train.finetune(model, data, steps=1, batch_size=2, lr=1e-3, seed=0)
    many = {"tokens": data["tokens"].repeat(3, 1), "mask": torch.zeros(9, data["mask"].shape[1], dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"rows \[0, 1, 2, 3, 4\] \.\.\. of 9: drop"):  # the first five, named
        train.finetune(model, many, steps=1, batch_size=2, lr=1e-3, seed=0)
    data["mask"][1, 1] = True
    train.finetune(model, data, steps=1, batch_size=2, lr=1e-3, seed=0)


def test_token_ids_refuses_booleans():
    import numpy as np
    from model import token_ids
    mask = torch.tensor([True, False, True])
    for bools in (True, [3, True], (3, True), {True}, torch.tensor([True, False]), np.array([True]), np.True_,
                  list(mask), [2, np.True_]):  # list(mask) was ids [1, 0, 1]
        with pytest.raises(ValueError, match="got booleans .*mask.nonzero"):
            token_ids(bools)
    assert token_ids(mask.nonzero()) == [0, 2]
    assert token_ids([np.int64(2), 3]) == [2, 3] and token_ids(4) == [4]
    assert token_ids(list(torch.tensor([5, 6]))) == [5, 6]  # integer tensors in a list are ids


# ----------------------------------------------------------------------------------------------------
# one "same runs" comparison and one "each pooled base once" check, shared by the analysis scripts


def test_same_runs_reads_spellings_of_one_path_as_one_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "a").mkdir(parents=True)
    assert train.same_runs(["out/a", "out/b"], [str(tmp_path / "out" / "a"), "out/b/"])
    assert not train.same_runs(["out/a", "out/b"], ["out/b", "out/a"])  # order is part of what a file holds
    assert not train.same_runs(["out/a"], ["out/a", "out/a"])


def test_distinct_pooled_bases_counts_each_base_once(tmp_path, monkeypatch):
    pull = load_script("em_base_pull")
    monkeypatch.chdir(tmp_path)
    pull.distinct_pooled_bases([("gone/a", 0), ("gone/a", 1), ("gone/b", 0)])  # runs not on disk: no config read
    for twice in ([("gone/a", 0), ("gone/a", 0)], [("gone/a", 1), (str(tmp_path / "gone" / "a"), 1)]):
        with pytest.raises(ConfigError, match=r"a base appears twice \(world \d of .*a\)"):
            pull.distinct_pooled_bases(twice)
