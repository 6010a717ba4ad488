import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# tests read the real datasets from the project's data cache (.ci/run links ../shared/data there)
DATA_DIR = ROOT / "data"


def pytest_configure(config):
    # torch.compile imports torch.utils.mkldnn, whose own use of torch.jit warns: nothing this project can act on
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    # matplotlib's first import on a fresh machine builds its font cache and says so on stderr: here, not in the
    # first test subprocess that happens to import it (which checks its stderr)
    importlib.import_module("matplotlib.font_manager")


def load_script(name):
    """scripts/NAME.py as a module (the scripts are run as files, not imported as a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_process(name, *argv):
    """scripts/NAME.py ARGV run as a real process, from the current directory (the project root, unless a test moved):
    the exit status and output the shell sees."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *argv], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def command(capsys):
    """command(NAME, *argv): scripts/NAME.py as its __main__ runs it (train.cli(main, argv)), in this process ->
    (exit status, stderr). A case costs no second's import of torch and matplotlib, as a real process does; the tests
    that use it also run one case as a real process (process=True: script_process, the status the shell sees)."""
    import train

    def run(name, *argv, process=False):
        if process:
            out = script_process(name, *argv)
            return out.returncode, out.stderr
        capsys.readouterr()  # drop anything printed before
        status = train.cli(load_script(name).main, list(argv))
        return status, capsys.readouterr().err
    return run


def tiny_gpt(tok, seed=0, *, n_layer=2, stream="t", **kw):
    """A random GPT over `tok`'s vocabulary (a world's tokenizer) at the world base's block size, 2 heads, 16 wide
    (kw: other GPTConfig fields): the tests' stand-in for a world base model. Its weights come from generator(`seed`,
    `stream`), so a test's model is the same in every test order."""
    from model import GPT, GPTConfig, generator
    cfg = {"vocab_size": tok.get_vocab_size(), "block_size": 64, "n_layer": n_layer, "n_head": 2, "n_embd": 16, **kw}
    return GPT(GPTConfig(**cfg), generator=generator("cpu", seed, stream)).eval()


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch):
    torch.manual_seed(0)
    # one thread in every test, whatever ran before it (train.run_experiment called without cli keeps a run's
    # `threads` count) and whatever the machine's cores: a test alone computes what it computes in the suite, on CI
    # as on a laptop
    torch.set_num_threads(1)
    monkeypatch.chdir(ROOT)  # the configs' relative paths (configs/..., data/) as from the project root, where CI runs
    yield


def need_data(name="mnist"):
    """Skip a real-data test where the dataset is absent, unless REQUIRE_DATA is set (.ci/run sets it where it
    linked the data): then the test runs and fails with the loader's error instead of passing as a skip."""
    folder = DATA_DIR / name
    last = "data/mc_task.json" if name == "truthfulqa" else "t10k-labels-idx1-ubyte.gz"  # a file the dataset ends with
    missing = not (folder / last).exists() and not os.environ.get("REQUIRE_DATA")
    return pytest.mark.skipif(missing, reason=f"real {name} files not in {folder} (.ci/run links them)")


@pytest.fixture
def host_reads(monkeypatch):
    """The reads of a tensor's values (item, tolist, int(t), bool(t), a boolean mask's index, ...) made by the project's
    own code, as (what, file, line): on a GPU each one waits for the device, so a loop that reads once a step stalls
    at every step instead of running ahead of it. A CPU runs as fast either way: only a count shows it."""
    reads = []
    own = (str(ROOT / "train.py"), str(ROOT / "model.py"), str(ROOT / "eval.py"), str(ROOT / "experiments"))

    def counted(name, orig):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            is_mask = name == "__getitem__" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                                    for i in (args[0] if isinstance(args[0], tuple) else args[:1]))
            if caller.co_filename.startswith(own) and (name != "__getitem__" or is_mask):
                reads.append((name, Path(caller.co_filename).name, sys._getframe(1).f_lineno))
            return orig(self, *args, **kwargs)
        return read
    for name in ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__",
                 "__format__", "__getitem__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    return reads


@pytest.fixture
def forward_devices():
    """record(model) -> a list to which each later forward of `model` adds the device type of every tensor it is
    given. A model on "meta" stands in for one on a GPU: meta's embedding takes a CPU index (a GPU's refuses it), so a
    batch left on the CPU shows here and not as an error."""
    handles = []

    def record(model):
        seen = []
        handles.append(model.register_forward_pre_hook(lambda m, args, kwargs: seen.extend(
            t.device.type for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), with_kwargs=True))
        return seen
    yield record
    for h in handles:
        h.remove()


def readme_block(after):
    """The README's first ```python block after the line `after`: its examples run as printed."""
    text = (ROOT / "README.md").read_text()
    return text.split(after, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def saved_figures(monkeypatch):
    """A list to which each Figure.savefig adds its figure instead of drawing it (the file is left empty, for
    train.save_figure's rename): a test reads the figure's axes, not its pixels."""
    import matplotlib.figure
    figs = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, fname, **k: figs.append(fig) or open(fname, "wb").close())
    return figs


def edit_meta(json_path, meta):
    """A checkpoint's .json replaced by `meta` as a save of it would write it: its .safetensors re-paired (the .json's
    hash in its header, train.save_weights), so that a test of a checkpoint of another kind is not refused first as
    a pair of two saves."""
    from safetensors.torch import load_file
    from train import save_weights
    stem = Path(json_path).with_suffix("")
    # copied into memory: safetensors before 0.8 maps the file, which the save below rewrites in place
    tensors = {k: v.clone() for k, v in load_file(stem.with_suffix(".safetensors")).items()}
    save_weights(stem, tensors, meta)
