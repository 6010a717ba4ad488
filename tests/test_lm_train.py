"""The language-model loop of train.py: LR schedule, checkpoints, exact resume, overfitting, loss masking,
gradient accumulation, and a tiny end-to-end `python train.py configs/lm_tiny.py` run.

    python -m pytest tests/test_lm_train.py -q
"""
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import edit_meta
from data.tokenizer import load_tokenizer
from model import GPT, GPTConfig
from train import (CheckpointError, ConfigError, eval_lm, finetune, finetune_lr, get_lr, lm_windows, load_lm,
                   lora_adapters,
                   make_lm_optimizer, pack_pairs, save_lm, save_weights, soft_kl, stream_rows, train_lm)

ROOT = Path(__file__).resolve().parents[1]
CFG = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16)
QUIET = dict(log_every=0, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fresh(cfg=CFG, seed=1):
    return GPT(cfg, generator=torch.Generator().manual_seed(seed))


def stream_data(n=3000, seed=0):
    """Rows of a learnable stream: a fixed random sequence of 7 tokens repeated, with noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(3, 32, (7,), generator=g).repeat(n // 7 + 1)[:n]
    noise = torch.rand(n, generator=g) < 0.2
    stream = torch.where(noise, torch.randint(3, 32, (n,), generator=g), base)
    return {"tokens": lm_windows(stream, 16)}


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lr_schedule_warmup_then_cosine():
    kw = dict(lr=1.0, warmup=10, decay_steps=110, min_lr=0.1)
    lrs = [get_lr(s, **kw) for s in range(130)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # never increases after warm-up
    assert get_lr(60, **kw) == pytest.approx(0.55)  # halfway down the cosine
    assert lrs[110:] == [0.1] * 20


def test_finetune_lr_warmup_then_linear_or_cosine_decay():
    """finetune_lr: a ramp lr/W, 2lr/W, ..., lr over W warm-up steps, then a straight line or a cosine reaching 0 one
    step after the horizon; with no warm-up the cosine is get_lr's (the schedule earlier runs used)."""
    lin = [finetune_lr(s, lr=1.0, schedule="linear", warmup=5, horizon=40) for s in range(1, 42)]
    assert lin[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and lin[5] == pytest.approx(1.0)
    assert lin[19] == pytest.approx(21 / 35) and lin[39] == pytest.approx(1 / 35) and lin[40] == 0.0
    assert all(a >= b for a, b in zip(lin[4:], lin[5:]))
    for T in (4, 40):
        assert [finetune_lr(s, lr=0.5, schedule="cosine", warmup=0, horizon=T) for s in range(1, T + 1)] == \
               [get_lr(s - 1, lr=0.5, warmup=0, decay_steps=T, min_lr=0.0) for s in range(1, T + 1)]
    assert [finetune_lr(s, lr=0.5, schedule="constant", warmup=2, horizon=9)
            for s in (1, 2, 3, 9)] == [0.25, 0.5, 0.5, 0.5]
    cos = [finetune_lr(s, lr=1.0, schedule="cosine", warmup=2, horizon=10) for s in (1, 2, 3, 10)]
    assert cos == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(7 * math.pi / 8))])  # 7 of its 8 decay steps
    with pytest.raises(ValueError, match="schedule must be"):
        finetune_lr(1, lr=1.0, schedule="step", warmup=0, horizon=4)


def test_lm_windows_and_pack_pairs():
    rows = lm_windows(torch.arange(35), 8)  # [4, 9]
    assert rows.shape == (4, 9) and rows[1].tolist() == list(range(8, 17))
    # 4 x 8 + 1 tokens fill 4 windows exactly (the last one ends at the stream's last token); one token fewer, 3
    assert lm_windows(torch.arange(33), 8)[-1].tolist() == list(range(24, 33))
    assert len(lm_windows(torch.arange(32), 8)) == 3
    data = pack_pairs([([5, 6], [7, 8, 2]), ([9], [10, 2])], pad_id=0)
    assert data["tokens"].tolist() == [[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]]
    targets = data["tokens"][:, 1:]
    assert targets[0][data["mask"][0]].tolist() == [7, 8, 2] and targets[1][data["mask"][1]].tolist() == [10, 2]
    with pytest.raises(ValueError, match="pack_pairs got no"):  # was "max() arg is an empty sequence"
        pack_pairs([], pad_id=0)


@pytest.mark.parametrize("data", [{"tokens": torch.arange(40) % 32}, lm_windows(torch.arange(40) % 32, 16),
                                  {"tokens": torch.zeros(0, 17, dtype=torch.long)},
                                  # float ids (an embedding's error at step 1), one column (no next token to predict)
                                  {"tokens": torch.zeros(4, 17)}, {"tokens": torch.zeros(4, 1, dtype=torch.long)},
                                  None])  # (no data: val=None is no validation, data=None an error)
def test_train_lm_data_that_is_not_rows_says_what_it_takes(data):
    # the token stream itself (no lm_windows), the rows without their dict, no rows: an IndexError or a
    # ZeroDivisionError from inside the loop
    with pytest.raises(ValueError, match=r"train_lm's data is \{'tokens': \[N, T\+1\] token ids, N >= 1\}"):
        train_lm(fresh(), data, steps=1, batch_size=2, lr=1e-3, **QUIET)


def test_checkpoint_round_trip_is_bit_exact_and_never_leaks_orig_mod(tmp_path):
    model = fresh()
    train_lm(model, stream_data(), steps=3, batch_size=4, lr=1e-2, **QUIET)
    save_lm(tmp_path / "ck", torch.compile(model), step=3, seed=1, tokenizer="tokenizer.json")  # compile is
                                                                                                # lazy: no cost
    from safetensors.torch import load_file
    assert not any("_orig_mod" in k or k.startswith("module.") for k in load_file(tmp_path / "ck.safetensors"))
    loaded, meta = load_lm(tmp_path / "ck")
    assert same_weights(model, loaded) and meta["step"] == 3 and meta["tokenizer"] == "tokenizer.json"
    assert meta["model_config"]["n_embd"] == 16
    idx = torch.randint(0, 32, (2, 10))
    assert torch.equal(model(idx), loaded(idx))


def test_a_checkpoint_saved_from_a_ddp_model_loads_into_a_plain_one(tmp_path):
    # train_lm saves the model DDP wraps: its names must not carry DDP's "module." prefix, which no plain GPT loads
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = fresh()
        save_lm(tmp_path / "ck", torch.nn.parallel.DistributedDataParallel(model), step=0, seed=0)
    finally:
        dist.destroy_process_group()
    loaded, _ = load_lm(tmp_path / "ck")
    assert same_weights(model, loaded)


def test_train_lm_reads_the_loss_from_the_device_at_its_log_lines_only(host_reads):
    """The pretraining loop runs ahead of a GPU: its step losses are summed on the device and read at each log line
    (and once at the end), its data checked once; a read per step (an .item(), a boolean mask's index) would stall
    every step there, at no cost on a CPU (conftest.host_reads counts them)."""
    data = stream_data()
    data["mask"] = torch.ones(len(data["tokens"]), 16, dtype=torch.bool)  # the fine-tune form: a mask of targets
    counts = {}
    for steps, log_every in ((4, 0), (12, 0), (12, 4)):
        host_reads.clear()
        train_lm(fresh(), data, steps=steps, batch_size=4, lr=1e-2, log_every=log_every, progress=False)
        counts[steps, log_every] = len(host_reads)
    # 3 log lines in place of the one read at the end
    assert counts[12, 0] == counts[4, 0] and counts[12, 4] == counts[12, 0] + 3 - 1, counts


def test_a_loss_that_is_not_finite_is_said_once_at_its_log_line(capsys):
    # lr=1e6: every log line after the first read "loss nan", and the run ended with a nan table, without a word
    out = train_lm(fresh(), stream_data(), steps=6, batch_size=4, lr=1e6, log_every=2, progress=False)
    printed = capsys.readouterr().out
    assert not math.isfinite(out["train_loss"])
    assert printed.count("warning:") == 1, printed
    assert re.search(r"warning: \[lm\] the loss is not finite at step \d+ \(training diverged\): "
                     r"lower lr \(now 1e\+06\)",
                     printed), printed
    train_lm(fresh(), stream_data(), steps=6, batch_size=4, lr=1e-2, log_every=2, progress=False)
    assert "warning" not in capsys.readouterr().out


def test_a_checkpoint_with_one_integer_tensor_is_refused_naming_it(tmp_path):
    # every tensor is checked for floating point, not only the first; a bf16 one is floating point
    model = fresh()
    save_lm(tmp_path / "ck", model, step=0, seed=0)
    meta = json.loads((tmp_path / "ck.json").read_text())
    tensors = dict(model.state_dict())
    last = list(tensors)[-1]
    save_weights(tmp_path / "int", {**tensors, last: tensors[last].to(torch.int32)}, meta)
    with pytest.raises(CheckpointError, match=re.escape(f"{last}: dtype torch.int32, not floating point")):
        load_lm(tmp_path / "int")
    save_weights(tmp_path / "bf16", {**tensors, last: tensors[last].to(torch.bfloat16)}, meta)
    load_lm(tmp_path / "bf16")


def test_checkpoint_loading_says_what_does_not_match(tmp_path):
    model = fresh()
    save_lm(tmp_path / "ck", model, step=0, seed=0)
    with pytest.raises(CheckpointError, match="n_embd: checkpoint 16 vs expected 32"):
        load_lm(tmp_path / "ck", expect=GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32))
    tensors = dict(model.state_dict())
    tensors["wte.weight"] = torch.zeros(31, 16)
    del tensors["ln_f.weight"]
    save_weights(tmp_path / "bad", tensors, json.loads((tmp_path / "ck.json").read_text()))
    with pytest.raises(CheckpointError, match=r"missing ln_f.weight.*wte.weight: shape \(31, 16\) vs model \(32, 16\)"):
        load_lm(tmp_path / "bad")
    tensors = dict(model.state_dict(), **{"extra.weight": torch.zeros(2)})  # e.g. a checkpoint of another model
    save_weights(tmp_path / "extra", tensors, json.loads((tmp_path / "ck.json").read_text()))
    with pytest.raises(CheckpointError, match="unexpected extra.weight"):
        load_lm(tmp_path / "extra")
    # a model_config of a newer or another GPTConfig: its unknown keys named, not GPTConfig's TypeError
    meta = json.loads((tmp_path / "ck.json").read_text())
    save_weights(tmp_path / "newer", model.state_dict(), {**meta, "model_config": {**meta["model_config"], "n_kv": 1}})
    with pytest.raises(CheckpointError, match=r"newer.json: unknown model_config keys \['n_kv'\]"):
        load_lm(tmp_path / "newer")
    # a checkpoint of another kind of model (an MNIST run's SeedMLP saves no model_config): not read as a GPT's
    save_weights(tmp_path / "mlp", model.state_dict(), {k: v for k, v in meta.items() if k != "model_config"})
    with pytest.raises(CheckpointError, match="mlp.json has no model_config: not a GPT checkpoint"):
        load_lm(tmp_path / "mlp")
    # a hand-edited value the GPT cannot be built from: named with its file, not the constructor's bare error
    for key, value, says in (("n_head", 3, "must split into n_head"), ("n_layer", "2", "'str' object")):
        save_weights(tmp_path / "edited", model.state_dict(), {**meta, "model_config": {**meta["model_config"],
                                                                                         key: value}})
        with pytest.raises(CheckpointError, match=rf"edited.json: its model_config makes no GPT: .*{says}"):
            load_lm(tmp_path / "edited")
    with pytest.raises(CheckpointError, match="needs both"):
        load_lm(tmp_path / "nothing")
    # one of the pair lost (a copy that took the weights only): named, not json's FileNotFoundError
    save_lm(tmp_path / "half", model, step=0, seed=0)
    (tmp_path / "half.json").unlink()
    with pytest.raises(CheckpointError, match="needs both half.safetensors and half.json; found half.safetensors$"):
        load_lm(tmp_path / "half")
    (tmp_path / "ck.json").write_text('{"step": ')  # cut short, as by a full disk
    with pytest.raises(CheckpointError, match="ck.json is not readable JSON"):
        load_lm(tmp_path / "ck")
    # another file copied over it (not UTF-8), or JSON of another shape: tracebacks from json and from .get
    (tmp_path / "ck.json").write_bytes((tmp_path / "ck.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="ck.json is not readable JSON"):
        load_lm(tmp_path / "ck")
    (tmp_path / "ck.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="ck.json holds a JSON list, not a checkpoint's record"):
        load_lm(tmp_path / "ck")
    # a command stopped between the two renames of a save: new weights beside the last save's .json, read as that
    # step's without a word; the .safetensors' header holds its .json's hash
    save_lm(tmp_path / "pair", model, step=1, seed=0)
    old_json = (tmp_path / "pair.json").read_bytes()
    save_lm(tmp_path / "pair", model, step=2, seed=0)
    assert load_lm(tmp_path / "pair")[1]["step"] == 2
    (tmp_path / "pair.json").write_bytes(old_json)
    with pytest.raises(CheckpointError, match=r"pair.safetensors and pair.json in .* are of two different saves \(a "
                                              r"command stopped while writing this checkpoint.*: rerun what wrote it$"):
        load_lm(tmp_path / "pair")
    # a checkpoint saved before the hash was kept (no header entry): read as before
    from safetensors.torch import load_file, save_file
    save_file(load_file(tmp_path / "pair.safetensors"), tmp_path / "pair.safetensors")
    assert load_lm(tmp_path / "pair")[1]["step"] == 1


def test_a_bad_device_is_not_blamed_on_the_checkpoint_file(tmp_path):
    # load_lm(path, device="gpu") (or "cuda" on a CPU-only torch) said the file was "not a readable safetensors file"
    # and to "rerun what wrote it": retraining a good checkpoint for a typo in the device
    model = fresh()
    save_lm(tmp_path / "ck", model, step=0, seed=0)
    with pytest.raises(CheckpointError, match="ck.safetensors read, but cannot be put on device 'gpu'") as e:
        load_lm(tmp_path / "ck", device="gpu")
    assert "not a readable" not in str(e.value) and "rerun" not in str(e.value)
    loaded, _ = load_lm(tmp_path / "ck", device="cpu")
    assert same_weights(model, loaded)


def test_a_device_out_of_memory_while_loading_stays_an_out_of_memory_error(tmp_path, monkeypatch):
    # a real device that is full is not "a device this machine lacks": its own error goes through
    from train import load_weights
    save_lm(tmp_path / "ck", fresh(), step=0, seed=0)

    def full(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(torch.Tensor, "to", full)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        load_weights(tmp_path / "ck", "cuda")


def test_a_checkpoint_loads_from_its_file_path_and_a_directory_names_its_checkpoints(tmp_path):
    # the natural first try is the file itself (model.safetensors) or the run directory, not the stem
    model = fresh()
    save_lm(tmp_path / "model", model, step=0, seed=0)
    idx = torch.randint(32, (1, 8))
    # model.state.pt too, the third file of a train_lm checkpoint: it said "needs both model.state.pt.safetensors and
    # model.state.pt.json"
    (tmp_path / "model.state.pt").write_bytes(b"")
    for path in (tmp_path / "model.safetensors", tmp_path / "model.json", str(tmp_path / "model.safetensors"),
                 tmp_path / "model.state.pt"):
        loaded, meta = load_lm(path)
        assert torch.equal(loaded(idx), model(idx)) and meta["step"] == 0
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path} is a directory: pass a checkpoint in it by its "
                                                        f"stem (it holds {tmp_path / 'model'})")):
        load_lm(tmp_path)
    with pytest.raises(CheckpointError, match="needs both other.safetensors and other.json; found neither"):
        load_lm(tmp_path / "other.safetensors")
    # a stem that itself ends like one of the files (weights.json: weights.json.safetensors + weights.json.json) is
    # that checkpoint's stem, not the file of a checkpoint "weights"
    save_lm(tmp_path / "weights.json", model, step=5, seed=0)
    assert load_lm(tmp_path / "weights.json")[1]["step"] == 5


def test_resume_is_exact(tmp_path):
    """N steps straight == k steps + save + resume + N - k steps, bit for bit on CPU."""
    kw = dict(batch_size=4, lr=1e-2, warmup=2, grad_clip=0.5, val=stream_data(300, seed=5), eval_every=3, **QUIET)
    data = stream_data()
    straight = fresh()
    train_lm(straight, data, steps=9, **kw)
    first = fresh()
    train_lm(first, data, steps=4, decay_steps=9, ckpt=tmp_path / "ck", **kw)  # stops at 4 with the schedule of 9
    resumed = fresh(seed=99)  # different init: everything must come from the checkpoint
    out = train_lm(resumed, data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    assert out["step"] == 9 and same_weights(straight, resumed)
    state = torch.load(tmp_path / "ck.state.pt", weights_only=False)
    assert state["step"] == 9 and state["data_position"] == 9 * 4
    good = (tmp_path / "ck.safetensors").read_bytes()
    (tmp_path / "ck.safetensors").write_bytes(b"cut")  # the state holds the weights: a resume does not read these
    again = fresh(seed=98)
    assert train_lm(again, data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 9
    assert same_weights(straight, again)
    # and the finished run's rerun, training nothing, wrote them again from the state (load_lm reads them, and its
    # error says to rerun what wrote them): cut, deleted, or one weight changed
    assert (tmp_path / "ck.safetensors").read_bytes() == good
    for damage in ("delete", "flip"):
        if damage == "delete":
            (tmp_path / "ck.safetensors").unlink()
        else:
            from safetensors.torch import load_file, save_file
            w = load_file(tmp_path / "ck.safetensors")
            w["wte.weight"][0, 0] += 1
            save_file(w, tmp_path / "ck.safetensors")
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
        assert (tmp_path / "ck.safetensors").read_bytes() == good, damage
    (tmp_path / "ck.safetensors").write_bytes(b"cut")
    del state["model"]  # a state saved before the weights were in it: the .safetensors are its weights
    torch.save(state, tmp_path / "ck.state.pt")
    with pytest.raises(CheckpointError, match="not a readable safetensors file.*pass --resume=False"):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    (tmp_path / "ck.safetensors").write_bytes(good)
    torch.save({"step": 9}, tmp_path / "ck.state.pt")  # a torch file, but not a resume state
    with pytest.raises(CheckpointError, match="ck.state.pt is not a resume state.*--resume=False"):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    # made by hand: an AttributeError from deep in the resume (also for real weights with one entry that is none)
    for model in ([1, 2], {"wte.weight": [1.0]}, {**fresh().state_dict(), "wte.weight": [1.0]}):
        torch.save({**state, "model": model}, tmp_path / "ck.state.pt")
        with pytest.raises(CheckpointError, match="ck.state.pt is not a resume state of this run.*--resume=False"):
            train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    (tmp_path / "ck.state.pt").write_bytes(b"")  # an empty resume state: a clear error, not torch's EOFError
    with pytest.raises(CheckpointError, match="ck.state.pt is unreadable.*--resume=False"):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    good_state = tmp_path / "ck.state.pt"
    train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", **kw)
    good_state.write_bytes(good_state.read_bytes()[:-100])  # cut short: one sentence, not torch's miniz paragraph
    with pytest.raises(CheckpointError) as e:
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    assert str(e.value) == (f"{good_state} is unreadable (cut short, or not a torch file): delete it to start from "
                            f"the beginning, or pass --resume=False to start afresh"), e.value


def test_a_resume_keeps_the_schedule_and_optimizer_settings(tmp_path):
    """A resume under another LR schedule or optimizer setting is refused, naming it: a longer run given no
    decay_steps restarted its cosine mid-run, and the optimizer's saved state put back the old betas and weight
    decay without a word. A run extended with the first run's decay_steps continues, as one longer run would."""
    kw = dict(QUIET, batch_size=4, lr=1e-2, warmup=2)
    data = stream_data()
    train_lm(fresh(), data, steps=4, ckpt=tmp_path / "ck", **kw)
    for change, said in ((dict(steps=8), "decay_steps 4 then, 8 now.*decay_steps set to the first run's"),
                         (dict(steps=4, weight_decay=0.0), "weight_decay 0.1 then, 0.0 now"),
                         (dict(steps=4, betas=(0.8, 0.95)), r"betas \[0.9, 0.95\] then, \[0.8, 0.95\] now"),
                         (dict(steps=4, min_lr=0.0), "min_lr 0.001 then, 0.0 now"),
                         (dict(steps=4, grad_clip=None), "grad_clip 1.0 then, None now"),
                         (dict(steps=4, lr=2e-2), "lr 0.01 then, 0.02 now"),
                         (dict(steps=4, warmup=1), "warmup 2 then, 1 now")):
        with pytest.raises(CheckpointError, match=f"another schedule, optimizer, precision, compilation or data: "
                                                  f"{said}.*--resume=False"):
            train_lm(fresh(), data, ckpt=tmp_path / "ck", resume=True, **{**kw, **change})
    other = {"tokens": data["tokens"].roll(1, 0)}  # the same rows in another order: the stream would go on over others
    last = data["tokens"].clone()
    last[-1, -1] = 3 if last[-1, -1] != 3 else 4  # one token, the last: every token is in the digest
    for changed in (other, {"tokens": last}):
        with pytest.raises(CheckpointError, match="data_sha256 '[0-9a-f]{16}' then, '[0-9a-f]{16}' now .other data"):
            train_lm(fresh(), changed, steps=4, ckpt=tmp_path / "ck", resume=True, **kw)
    straight = fresh()
    train_lm(straight, data, steps=8, decay_steps=4, **kw)
    extended = fresh(seed=9)
    assert train_lm(extended, data, steps=8, decay_steps=4, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 4
    assert same_weights(straight, extended)
    state = torch.load(tmp_path / "ck.state.pt", weights_only=False)
    del state["schedule"]  # a state saved before the schedule was recorded: resumed as before, unchecked
    torch.save(state, tmp_path / "ck.state.pt")
    assert train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 8


def test_a_resume_keeps_the_mask_of_its_data(tmp_path):
    """The digest covers the mask too: the same tokens trained at other positions are other data."""
    kw = dict(QUIET, batch_size=4, lr=1e-2, warmup=2, decay_steps=8)
    tokens = stream_data()["tokens"]
    mask = torch.ones(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool)
    train_lm(fresh(), {"tokens": tokens, "mask": mask}, steps=4, ckpt=tmp_path / "ck", **kw)
    other = mask.clone()
    other[0, 0] = False
    with pytest.raises(CheckpointError, match="data_sha256 '[0-9a-f]{16}' then, '[0-9a-f]{16}' now .other data"):
        train_lm(fresh(), {"tokens": tokens, "mask": other}, steps=8, ckpt=tmp_path / "ck", resume=True, **kw)
    assert train_lm(fresh(), {"tokens": tokens, "mask": mask}, steps=5, ckpt=tmp_path / "ck", resume=True,
                    **kw)["start_step"] == 4


def test_a_resume_keeps_the_precision(tmp_path):
    """A resume under the other precision (bf16 autocast on or off), or compiled where the run was not, is refused,
    naming it: the rest of the run was computed in it without a word, and reported as one run's."""
    kw = dict(QUIET, batch_size=4, lr=1e-2, warmup=2, decay_steps=8)
    data = stream_data()
    train_lm(fresh(), data, steps=4, ckpt=tmp_path / "ck", **kw)
    said = "another schedule, optimizer, precision, compilation or data: bf16 False then, True now.*--resume=False"
    with pytest.raises(CheckpointError, match=said):
        train_lm(fresh(), data, steps=8, ckpt=tmp_path / "ck", resume=True, bf16=True, **kw)
    # compiled kernels round otherwise too (refused before anything is compiled)
    with pytest.raises(CheckpointError, match="compile False then, True now.*--resume=False"):
        train_lm(fresh(), data, steps=8, ckpt=tmp_path / "ck", resume=True, compile=True, **kw)
    state = torch.load(tmp_path / "ck.state.pt", weights_only=False)
    assert state["schedule"]["compile"] is False
    del state["schedule"]["compile"]  # a state saved before compile was recorded: its compile unknown, it resumes
    torch.save(state, tmp_path / "ck.state.pt")
    assert train_lm(fresh(), data, steps=5, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 4


def test_a_checkpoints_metrics_are_both_losses_of_its_own_step(tmp_path, monkeypatch):
    """A mid-run checkpoint's val_loss is its step's evaluation, not the one an interval before (the evaluation of
    step k ran at the top of the next iteration, after step k's checkpoint); a resumed run evaluates nothing twice."""
    import train
    saved, real = [], train.save_lm
    monkeypatch.setattr(train, "save_lm", lambda stem, model, **kw: saved.append((kw["step"], kw["metrics"])) or
                        real(stem, model, **kw))
    kw = dict(QUIET, batch_size=4, lr=1e-2, warmup=2, val=stream_data(300, seed=5), eval_every=3, log_every=3,
              decay_steps=9)  # (the run extended to 9 steps below keeps its schedule)
    out = train_lm(fresh(), stream_data(), steps=7, ckpt=tmp_path / "ck", ckpt_every=3, **kw)
    val = {r["step"]: r["val_loss"] for r in out["history"] if "val_loss" in r}
    loss = {r["step"]: r["loss"] for r in out["history"] if "loss" in r}
    assert sorted(val) == [0, 3, 6, 7] and [s for s, _ in saved] == [3, 6, 7]
    assert all(m == {"train_loss": loss[s], "val_loss": val[s]} for s, m in saved)
    assert len(set(val.values())) == 4  # four different models' losses: no checkpoint could pass with a stale one
    again = train_lm(fresh(), stream_data(), steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    assert [r["step"] for r in again["history"] if "val_loss" in r] == [9]  # not step 7 again: its loss is saved


def test_a_fresh_run_evaluates_each_eval_step_once(tmp_path, capsys):
    """history (and so metrics.jsonl, lm's loss curve) holds one val record per evaluated step, in order, each after
    its step's train record: the top-of-loop evaluation is step 0's only (at every multiple of eval_every there it
    ran a second time beside the one after the step)."""
    kw = dict(batch_size=4, lr=1e-2, warmup=2, val=stream_data(300, seed=5), eval_every=3, log_every=3, progress=False)
    out = train_lm(fresh(), stream_data(), steps=7, ckpt=tmp_path / "ck", ckpt_every=3, **kw)
    assert [(r["step"], "val_loss" in r) for r in out["history"]] == [
        (0, True), (3, False), (3, True), (6, False), (6, True), (7, False), (7, True)]
    out = train_lm(fresh(), stream_data(), steps=6, **kw)  # steps a multiple of eval_every: the last once too
    assert [r["step"] for r in out["history"] if "val_loss" in r] == [0, 3, 6]
    # each evaluation is printed too, after its step's train line
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[lm] step")][-5:]
    val = [f"[lm] step {r['step']:5d} | val loss {r['val_loss']:.4f}" for r in out["history"] if "val_loss" in r]
    assert [lines[0], lines[2], lines[4]] == val and lines[1].startswith("[lm] step     3 | loss ")


@pytest.mark.parametrize("damage", ["extra tensor", "missing tensor", "json step", "dtype"])
def test_a_finished_runs_rerun_rewrites_files_that_are_not_the_states(tmp_path, damage, capsys):
    # the weights all equal but one tensor too many or too few, or the .json of another step (a run stopped between
    # the .safetensors' rename and the .json's): load_lm would refuse them, or read another step's record
    from safetensors.torch import load_file, save_file
    kw = dict(batch_size=4, lr=1e-2, warmup=2, **QUIET)
    data = stream_data()
    trained = fresh()
    train_lm(trained, data, steps=5, ckpt=tmp_path / "ck", **kw)
    good = {ext: (tmp_path / f"ck{ext}").read_bytes() for ext in (".safetensors", ".json")}
    if damage == "json step":
        (tmp_path / "ck.json").write_text(good[".json"].decode().replace('"step": 5', '"step": 4'))
    else:
        w = load_file(tmp_path / "ck.safetensors")
        if damage == "extra tensor":
            w["extra.weight"] = torch.zeros(2)
        elif damage == "dtype":  # the same values in float64 (torch.equal ignores the dtype)
            w["ln_f.weight"] = w["ln_f.weight"].double()
        else:
            del w["ln_f.weight"]
        save_file(w, tmp_path / "ck.safetensors")
    capsys.readouterr()
    assert train_lm(fresh(seed=7), data, steps=5, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 5
    assert {ext: (tmp_path / f"ck{ext}").read_bytes() for ext in good} == good
    # said, not done silently (an intact pair is not written again: the plain resume line)
    assert "at step 5 (its .safetensors and .json written again from ck.state.pt)" in capsys.readouterr().out
    train_lm(fresh(seed=7), data, steps=5, ckpt=tmp_path / "ck", resume=True, **kw)
    assert capsys.readouterr().out.splitlines()[-1].endswith("resumed from " + str(tmp_path / "ck") + " at step 5")
    loaded, meta = load_lm(tmp_path / "ck")
    assert meta["step"] == 5 and same_weights(trained, loaded)


def test_weights_without_their_resume_state_restart_from_step_0_and_say_so(tmp_path, capsys):
    kw = dict(batch_size=4, lr=1e-2, warmup=2, **QUIET)
    data = stream_data()
    straight = fresh()
    train_lm(straight, data, steps=6, **kw)
    train_lm(fresh(), data, steps=3, ckpt=tmp_path / "ck", **kw)
    (tmp_path / "ck.state.pt").unlink()  # deleted by hand: the weights alone cannot be continued exactly
    capsys.readouterr()
    again = fresh()
    out = train_lm(again, data, steps=6, ckpt=tmp_path / "ck", resume=True, **kw)
    assert out["start_step"] == 0 and same_weights(straight, again)  # trained afresh, as a run without a checkpoint
    assert "no resume state ck.state.pt beside" in capsys.readouterr().out


@pytest.mark.parametrize("killed_at", [1, 2, 3])  # the checkpoint's three files are renamed into place one by one
def test_a_run_killed_while_writing_a_checkpoint_resumes_exactly_or_is_refused(tmp_path, monkeypatch, killed_at):
    # the weights were written before the resume state: a run killed between the two resumed silently from the old
    # state's step with the new step's weights, and ended with other weights than an uninterrupted run
    import train
    kw = dict(batch_size=4, lr=1e-2, warmup=2, **QUIET)
    data = stream_data()
    straight = fresh()
    train_lm(straight, data, steps=9, **kw)
    train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=3, **kw)  # killed below, saving step 6
    calls, real = [], train.os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 3 + killed_at:  # the first save (step 3) whole, the second killed at its killed_at-th file
            raise KeyboardInterrupt
        real(src, dst)
    for f in tmp_path.glob("ck*"):
        f.unlink()
    monkeypatch.setattr(train.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=3, **kw)
    monkeypatch.setattr(train.os, "replace", real)
    # killed before the state's rename (the first), step 3's state resumes; after it, step 6's, which holds its own
    # weights (a state that did not was refused here beside step 3's .json: the run was lost)
    state = torch.load(tmp_path / "ck.state.pt", weights_only=False)
    assert state["step"] == (3 if killed_at == 1 else 6)
    resumed = fresh(seed=99)
    out = train_lm(resumed, data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    assert out["start_step"] == state["step"] and same_weights(straight, resumed)
    if killed_at > 1:  # a state saved before the weights were in it: its weights are the .safetensors, of step 3
        del state["model"]
        torch.save(state, tmp_path / "ck.state.pt")
        # the .json re-paired with its .safetensors (edit_meta): edited in place, the two were refused as a pair of two
        # saves first, and this refusal was never reached
        edit_meta(tmp_path / "ck.json", {**json.loads((tmp_path / "ck.json").read_text()), "step": 3})
        with pytest.raises(CheckpointError, match="ck.json is at step 3 but ck.state.pt at step 6: the run was stopped "
                                                  "while writing this checkpoint.*--resume=False"):
            train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)


@pytest.mark.parametrize("ckpt_every", [0, 3])
def test_a_run_killed_in_its_final_save_after_the_state_rewrites_the_weights_a_reader_loads(tmp_path, monkeypatch,
                                                                                           ckpt_every):
    # the rerun resumed at the last step from the state, trained nothing and saved nothing: the .safetensors/.json
    # that load_lm (and a finished world base's cache) read stayed at step 6, or missing with ckpt_every 0
    import train
    kw = dict(batch_size=4, lr=1e-2, warmup=2, **QUIET)
    data = stream_data()
    straight = fresh()
    train_lm(straight, data, steps=9, **kw)
    calls, real = [], train.os.replace
    final = 3 * (9 // ckpt_every - 1 if ckpt_every else 0)  # renames before the final save (3 per save)

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == final + 2:  # the final state renamed, its weights not yet
            raise KeyboardInterrupt
        real(src, dst)
    monkeypatch.setattr(train.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=ckpt_every, **kw)
    monkeypatch.setattr(train.os, "replace", real)
    assert torch.load(tmp_path / "ck.state.pt", weights_only=False)["step"] == 9
    assert not (tmp_path / "ck.json").is_file() if not ckpt_every else '"step": 6' in (tmp_path / "ck.json").read_text()
    out = train_lm(fresh(seed=99), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=ckpt_every, resume=True, **kw)
    assert out["start_step"] == 9
    loaded, meta = load_lm(tmp_path / "ck")
    assert meta["step"] == 9 and same_weights(straight, loaded)


MID_INTERVAL = dict(batch_size=4, lr=1e-2, warmup=2, log_every=3, progress=False)  # a checkpoint at 4 is mid-line


def stopped_at_step_4(tmp_path, monkeypatch):
    """An uninterrupted 9-step run's result, and the same run stopped right after its step-4 checkpoint (ck in
    tmp_path) -> (straight, data, the real train.save_lm, restored)."""
    import train
    data = stream_data()
    straight = train_lm(fresh(), data, steps=9, **MID_INTERVAL)
    real = train.save_lm

    def save_then_stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "save_lm", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=4, **MID_INTERVAL)
    monkeypatch.setattr(train, "save_lm", real)
    return straight, data, real


def test_a_resume_between_log_lines_logs_the_losses_of_an_uninterrupted_run(tmp_path, monkeypatch):
    # a checkpoint between two log lines (ckpt_every 4, log_every 3) lost the losses of the steps since the last
    # line: the resumed run's next line, and so results.json's last train loss, was the mean of fewer steps
    straight, data, _ = stopped_at_step_4(tmp_path, monkeypatch)
    kw = MID_INTERVAL
    resumed = train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", resume=True, **kw)
    assert resumed["start_step"] == 4
    assert [(r["step"], r["loss"]) for r in resumed["history"]] == [(r["step"], r["loss"])
                                                                    for r in straight["history"][1:]]
    assert resumed["train_loss"] == straight["train_loss"]


def test_rewriting_a_checkpoints_files_keeps_its_resume_states_log_interval(tmp_path, monkeypatch):
    # a mid-interval checkpoint (step 4, log_every 3) whose .safetensors went missing: the resume writes them again
    # from the state, and the state stays as it was (its loss_interval with it), so that a second stop and resume
    # still logs the losses of an uninterrupted run
    import train
    straight, data, real = stopped_at_step_4(tmp_path, monkeypatch)
    kw = MID_INTERVAL
    (tmp_path / "ck.safetensors").unlink()

    def stop_at_the_next(*a, **k):  # the next checkpoint (step 8) is never written
        if k["step"] > 4:
            raise KeyboardInterrupt
        real(*a, **k)
    monkeypatch.setattr(train, "save_lm", stop_at_the_next)
    with pytest.raises(KeyboardInterrupt):
        train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=4, resume=True, **kw)
    assert (tmp_path / "ck.safetensors").is_file()
    assert torch.load(tmp_path / "ck.state.pt", weights_only=False)["loss_interval"]["steps"] == 1
    monkeypatch.setattr(train, "save_lm", real)
    resumed = train_lm(fresh(), data, steps=9, ckpt=tmp_path / "ck", ckpt_every=4, resume=True, **kw)
    assert resumed["start_step"] == 4
    assert [(r["step"], r["loss"]) for r in resumed["history"]] == [(r["step"], r["loss"])
                                                                    for r in straight["history"][1:]]


def test_the_resume_state_sits_beside_its_checkpoint_by_the_whole_name():
    # a stem with a dot in its name (model.v2) has its own state, not model.state.pt (another stem's)
    from train import state_file
    assert state_file(Path("out/x/model.v2")) == Path("out/x/model.v2.state.pt")
    assert state_file("ck") == Path("ck.state.pt")


def test_a_resume_with_another_global_batch_is_refused(tmp_path):
    # a torchrun run resumed with another number of processes (the config the same) went on silently with another
    # global batch: not the run it continues, and its results.json counted every step's tokens at the new batch
    data, kw = stream_data(), dict(lr=1e-2, warmup=2, **QUIET)
    first = fresh()
    train_lm(first, data, steps=4, decay_steps=9, batch_size=4, ckpt=tmp_path / "ck", **kw)
    assert torch.load(tmp_path / "ck.state.pt", weights_only=False)["rows_per_step"] == 4
    with pytest.raises(CheckpointError, match=r"ck.state.pt was trained with 4 rows per optimizer step, this run takes "
                                              r"2 \(batch_size 2 x grad_accum 1 x 1 process\(es\)\).*--resume=False"):
        train_lm(fresh(), data, steps=9, batch_size=2, ckpt=tmp_path / "ck", resume=True, **kw)
    # the same global batch in another split resumes; so does a state saved before the count was recorded
    out = train_lm(fresh(), data, steps=6, decay_steps=9, batch_size=2, grad_accum=2, ckpt=tmp_path / "ck",
                   resume=True, **kw)
    assert out["start_step"] == 4
    state = torch.load(tmp_path / "ck.state.pt", weights_only=False)
    del state["rows_per_step"]
    torch.save(state, tmp_path / "ck.state.pt")
    assert train_lm(fresh(), data, steps=9, batch_size=4, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 6


def flip_a_byte_in_the_data(path, record=None):
    """Flip one bit in the middle of a checkpoint file's tensor bytes, as a disk or a copy may: the .safetensors'
    data section, or (record, the end of a zip record's name) that record of a torch.save file."""
    import struct
    import zipfile
    b = bytearray(path.read_bytes())
    if record is None:
        start = 8 + int.from_bytes(b[:8], "little")  # after the header
        pos = start + (len(b) - start) // 2
    else:
        info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith(record))
        name_len, extra_len = struct.unpack("<HH", b[info.header_offset + 26:info.header_offset + 30])
        pos = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    b[pos] ^= 0x40  # a float32's exponent bit, in most places: a weight of 1e37
    path.write_bytes(bytes(b))


def test_flipped_bits_in_a_checkpoint_are_an_error_not_other_weights(tmp_path):
    # safetensors and torch.load check no checksum: a flipped bit in a .safetensors loaded as another weight; one in
    # a finished run's resume state was resumed, and its weights written over the good .safetensors beside it
    kw = dict(batch_size=4, lr=1e-2, warmup=2, **QUIET)
    data = stream_data()
    trained = fresh()
    train_lm(trained, data, steps=5, ckpt=tmp_path / "ck", **kw)
    good = (tmp_path / "ck.safetensors").read_bytes()
    flip_a_byte_in_the_data(tmp_path / "ck.safetensors")
    with pytest.raises(CheckpointError, match=r"ck.safetensors is damaged: its weights are not the ones saved"):
        load_lm(tmp_path / "ck")
    # the resume state, intact, writes them again
    assert train_lm(fresh(), data, steps=5, ckpt=tmp_path / "ck", resume=True, **kw)["start_step"] == 5
    assert (tmp_path / "ck.safetensors").read_bytes() == good
    # a bit of the state's own weights (wte.weight, the model's first tensor: the record after the optimizer's)
    state = torch.load(tmp_path / "ck.state.pt", weights_only=False)
    n_opt = sum(len(s) for s in state["optimizer"]["state"].values())  # the optimizer's tensors come first
    flip_a_byte_in_the_data(tmp_path / "ck.state.pt", record=f"/data/{n_opt}")
    with pytest.raises(CheckpointError, match=r"ck.state.pt is damaged \(its record .*/data/\d+ does not match the "
                                              r"checksum saved with it\).*--resume=False.* \(the weights beside it, "
                                              r"ck.safetensors, load on their own"):
        train_lm(fresh(), data, steps=5, ckpt=tmp_path / "ck", resume=True, **kw)
    assert (tmp_path / "ck.safetensors").read_bytes() == good  # not written over
    assert same_weights(trained, load_lm(tmp_path / "ck")[0])
    assert "weights_sha256" in json.loads((tmp_path / "ck.json").read_text())


def test_load_lm_takes_a_gptconfig_to_expect(tmp_path):
    model = fresh()
    save_lm(tmp_path / "m", model, step=0, seed=0)
    assert same_weights(model, load_lm(tmp_path / "m", expect=model.cfg)[0])
    with pytest.raises(TypeError, match=r"expect must be a GPTConfig \(or None\), got a dict: e.g. "):
        load_lm(tmp_path / "m", expect=dataclasses.asdict(model.cfg))  # (was an AttributeError in the comparison)


def test_load_lm_keeps_the_dtype_the_weights_were_saved_in(tmp_path):
    # a .double() model's checkpoint loaded into a float32 GPT: its weights rounded, its logits off by ~1e-7
    model = fresh().double()
    with torch.no_grad():
        model.wte.weight.add_(1e-12)  # not a float32 number
    save_lm(tmp_path / "m", model, step=0, seed=0)
    loaded = load_lm(tmp_path / "m")[0]
    assert loaded.wte.weight.dtype == loaded.cos.dtype == torch.float64 and same_weights(model, loaded)
    idx = torch.randint(CFG.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(idx), model(idx))
    assert load_lm(tmp_path / "m", expect=model.cfg)[0].wte.weight.dtype == torch.float64
    save_lm(tmp_path / "f", fresh(), step=0, seed=0)  # float32 as before
    assert load_lm(tmp_path / "f")[0].wte.weight.dtype == torch.float32


def test_another_runs_resume_state_is_refused(tmp_path):
    # a state copied from a run of the same shape but another seed was resumed without a word: its weights went on
    # with this run's data order (and a finished run's rerun wrote them over its own checkpoint)
    kw = dict(batch_size=4, lr=1e-2, warmup=2, **QUIET)
    data = stream_data()
    train_lm(fresh(), data, steps=3, decay_steps=6, seed=0, ckpt=tmp_path / "a", **kw)
    train_lm(fresh(), data, steps=3, decay_steps=6, seed=1, ckpt=tmp_path / "b", **kw)
    (tmp_path / "a.state.pt").write_bytes((tmp_path / "b.state.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"a.state.pt is the resume state of a run with seed 1, this run has "
                                              r"seed 0 .*--resume=False"):
        train_lm(fresh(), data, steps=6, seed=0, ckpt=tmp_path / "a", resume=True, **kw)
    assert train_lm(fresh(), data, steps=6, seed=1, ckpt=tmp_path / "b", resume=True, **kw)["start_step"] == 3


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    data = {"tokens": torch.randint(0, 32, (4, 17), generator=torch.Generator().manual_seed(2))}
    model = fresh()
    out = train_lm(model, data, steps=150, batch_size=4, lr=1e-2, warmup=10, weight_decay=0.0, log_every=50,
                   progress=False)
    assert out["train_loss"] < 0.05, out["train_loss"]  # the mean over the last 50 steps


def finetune_pairs(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(3, 32, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist(),
             torch.randint(3, 32, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist() + [2])
            for _ in range(n)]


def test_loss_masking_gives_zero_gradient_from_masked_tokens():
    pairs = finetune_pairs()
    a, b = pack_pairs(pairs, pad_id=0), pack_pairs(pairs, pad_id=7)  # differ only in masked targets (pads)
    assert not torch.equal(a["tokens"], b["tokens"])
    kw = dict(steps=3, batch_size=4, lr=1e-2, **QUIET)
    ma, mb = fresh(), fresh()
    train_lm(ma, a, **kw)
    train_lm(mb, b, **kw)
    assert same_weights(ma, mb)
    # ... while the response tokens do count
    pairs2 = [(p, [(r[0] + 1) % 32] + r[1:]) for p, r in pairs]
    mc = fresh()
    train_lm(mc, pack_pairs(pairs2, pad_id=0), **kw)
    assert not same_weights(ma, mc)


def test_a_diverged_finetune_stops_with_one_line_at_its_first_check():
    # lr=1e38: inf weights; the experiments then evaluated them (nan numbers, or a traceback deep in sampling)
    data = pack_pairs(finetune_pairs(16), pad_id=0)
    seen = []
    with pytest.raises(ConfigError, match=r"a fine-tune diverged: its loss or weights are not finite at step 2 "
                                          r"\(of 5\): lower its lr \(now 1e\+38\)"):
        finetune(fresh(), data, steps=5, batch_size=4, lr=1e38, seed=0, at={2, 4}, on_eval=seen.append)
    assert seen == []  # stopped before its evaluation
    with pytest.raises(ConfigError, match=r"not finite at step 3 \(of 3\)"):  # no evaluation: checked at the end
        finetune(fresh(), data, steps=3, batch_size=4, lr=1e38, seed=0)
    finetune(fresh(), data, steps=3, batch_size=4, lr=1e-2, seed=0, at={2}, on_eval=seen.append)
    assert seen == [2]


def test_lora_finetune_is_gradient_descent_on_the_adapters():
    """trains="lora": two SGD steps equal autograd through W = W0 + s B @ A, s = alpha / sqrt(rank) (the adapters' own
    gradients, clipped together); every adapted weight moves by a matrix of rank <= r, nothing else moves, and
    requires_grad is as before."""
    data = pack_pairs(finetune_pairs(16), pad_id=0)
    start = fresh()
    ref = fresh()
    adapters = lora_adapters(ref, 2, seed=3)
    # the init the docstring gives, A ~ N(0, 1/in) and B = 0 (the rest below rebuilds W from these same adapters)
    a_scaled = torch.cat([(A * A.shape[1] ** 0.5).flatten() for _, _, A, _ in adapters])
    assert not any(B.any() for _, _, _, B in adapters) and abs(a_scaled.std().item() - 1) < 0.15
    name = {id(p): n for n, p in ref.named_parameters()}
    for step in range(2):  # step 1 moves only B (A's gradient is B^T dW = 0 while B = 0); step 2 moves both
        rows = torch.arange(step * 4, step * 4 + 4)
        params = {n: p.detach() for n, p in ref.named_parameters()}
        params.update({name[id(W)]: W0 + 3.0 / 2 ** 0.5 * B @ A for W, W0, A, B in adapters})
        x, y, m = data["tokens"][rows, :-1], data["tokens"][rows, 1:], data["mask"][rows]
        per_tok = torch.func.functional_call(ref, params, (x,), {"targets": y})
        ((per_tok * m).sum() / m.sum()).backward()
        trained = [t for _, _, A, B in adapters for t in (A, B)]
        scale = min(1.0, 1.0 / (float(torch.sqrt(sum((t.grad ** 2).sum() for t in trained))) + 1e-6))
        with torch.no_grad():
            for t in trained:
                t -= 0.5 * scale * t.grad
                t.grad = None
    model = finetune(fresh(), data, steps=2, batch_size=4, lr=0.5, seed=3, order="sequential", optimizer="sgd",
                     trains="lora", lora_rank=2, lora_alpha=3.0)
    adapted = {name[id(W)]: (W0 + 3.0 / 2 ** 0.5 * B @ A).detach() for W, W0, A, B in adapters}
    assert len(adapted) == 4 * CFG.n_layer  # qkv, attention out, MLP in, MLP out
    for (n, p), q in zip(model.named_parameters(), start.parameters()):
        assert p.requires_grad
        if n in adapted:
            torch.testing.assert_close(p, adapted[n], rtol=0, atol=1e-6)
            assert not torch.equal(p, q) and torch.linalg.matrix_rank(p - q, atol=1e-6) <= 2
        else:
            assert torch.equal(p, q), n
    # AdamW keeps the rank too
    model = finetune(fresh(), data, steps=5, batch_size=4, lr=1e-2, seed=0, trains="lora", lora_rank=1, lora_alpha=1.0)
    for (n, p), q in zip(model.named_parameters(), start.parameters()):
        assert (torch.linalg.matrix_rank(p - q, atol=1e-6) == 1) if n in adapted else torch.equal(p, q)
    # one target: only that matrix moves
    model = finetune(fresh(), data, steps=3, batch_size=4, lr=1e-2, seed=0, trains="lora", lora_rank=1,
                     lora_targets=("blocks.1.mlp.proj",))
    assert [n for (n, p), q in zip(model.named_parameters(), start.parameters()) if not torch.equal(p, q)] == [
        "blocks.1.mlp.proj.weight"]
    with pytest.raises(ValueError, match="unknown lora targets.*valid: blocks.0.attn.qkv"):
        finetune(fresh(), data, steps=1, batch_size=4, lr=0.1, seed=0, trains="lora", lora_targets=("blocks.1.mlp",))
    with pytest.raises(ValueError, match="lora_rank must be >= 1"):
        finetune(fresh(), data, steps=1, batch_size=4, lr=0.1, seed=0, trains="lora", lora_rank=0)
    # a rank past a matrix's smaller dimension is a full-rank update; at that dimension it is still taken
    with pytest.raises(ValueError, match=f"lora_rank {CFG.n_embd + 1} exceeds blocks.0.attn.qkv's smaller dimension"):
        finetune(fresh(), data, steps=1, batch_size=4, lr=0.1, seed=0, trains="lora", lora_rank=CFG.n_embd + 1)
    finetune(fresh(), data, steps=1, batch_size=4, lr=0.1, seed=0, trains="lora", lora_rank=CFG.n_embd)
    # the smaller side of each matrix, not one fixed side: mlp.proj is [C, 4C] (its input side is 4C)
    with pytest.raises(ValueError, match=f"lora_rank {CFG.n_embd + 1} exceeds blocks.1.mlp.proj's smaller dimension"):
        finetune(fresh(), data, steps=1, batch_size=4, lr=0.1, seed=0, trains="lora", lora_rank=CFG.n_embd + 1,
                 lora_targets=("blocks.1.mlp.proj",))


def test_betas_written_as_ints_are_the_same_optimizer():
    # torch's AdamW refuses an int beta ("both floats or both Tensors"): (0, 0), the docstring's sign step, crashed
    data = pack_pairs(finetune_pairs(8), pad_id=0)
    kw = dict(steps=2, batch_size=8, lr=1e-2, seed=0, order="sequential")
    for ints in ((0, 0), (0, 0.999)):
        floats = tuple(map(float, ints))
        a, b = finetune(fresh(), data, betas=ints, **kw), finetune(fresh(), data, betas=floats, **kw)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    a, b = (make_lm_optimizer(fresh(), 1e-3, 0.1, betas) for betas in ((0, 0), (0.0, 0.0)))
    assert a.param_groups[0]["betas"] == b.param_groups[0]["betas"] == (0.0, 0.0)


def test_adamw_betas_and_sgd_momentum_are_the_closed_form_updates():
    """The settings that take AdamW apart (scripts/em_optimizer_parts.py), two full-batch steps each against the update
    written out from the clipped gradients g1, g2: AdamW with betas (0, 0) steps lr g / (|g| + eps) every time (the
    sign step); betas (0, 0.999) divides g2 by the bias-corrected running mean of g^2 and keeps no momentum; sgd with
    momentum mu steps lr g1, then lr (mu g1 + (1 - mu) g2): a running mean of the gradient, as Adam's first moment."""
    data = pack_pairs(finetune_pairs(8), pad_id=0)
    x, y, m = data["tokens"][:, :-1], data["tokens"][:, 1:], data["mask"]

    def clipped_grads(model):
        model.zero_grad(set_to_none=True)
        ((model(x, targets=y) * m).sum() / m.sum()).backward()
        g = [p.grad.clone() for p in model.parameters()]
        scale = min(1.0, 1.0 / (float(torch.sqrt(sum((t ** 2).sum() for t in g))) + 1e-6))
        return [scale * t for t in g]

    def manual(update):  # update(step, [g1, ..., g_step]) -> the step's change of each weight, from the current ones
        model, gs = fresh(), []
        for step in (1, 2):
            gs.append(clipped_grads(model))
            with torch.no_grad():
                for i, p in enumerate(model.parameters()):
                    p += update(step, [g[i] for g in gs])
        return model, gs  # and the two steps' gradients

    lr, eps = 1e-2, 1e-8
    updates = {
        "sign": lambda t, g: -lr * g[-1] / (g[-1].abs() + eps),
        "no_momentum": lambda t, g: -lr * g[-1] / (torch.sqrt(
            sum(0.999 ** (t - 1 - k) * 0.001 * gk ** 2 for k, gk in enumerate(g)) / (1 - 0.999 ** t)) + eps),
        "momentum": lambda t, g: -0.5 * (g[0] if t == 1 else 0.9 * g[0] + 0.1 * g[1])}
    want, grads = {}, {}
    for k, u in updates.items():
        want[k], grads[k] = manual(u)
    kw = dict(steps=2, batch_size=8, seed=0, order="sequential")  # 8 rows: every step the full batch
    got = {"sign": finetune(fresh(), data, lr=lr, betas=(0.0, 0.0), **kw),
           "no_momentum": finetune(fresh(), data, lr=lr, betas=(0.0, 0.999), **kw),
           "momentum": finetune(fresh(), data, lr=0.5, optimizer="sgd", momentum=0.9, **kw)}
    start = fresh()
    tiny = lambda g: (g != 0) & (g.abs() <= 1e-6)  # (exactly 0: no step in either)
    for k in want:
        tight = []  # per weight: held to 1e-6
        for i, (p, q) in enumerate(zip(got[k].parameters(), want[k].parameters())):
            # the sign step g / (|g| + eps) has slope eps / (|g| + eps)^2, 1 / eps at g = 0: where a gradient it
            # divides is within 1e-6 of 0, the few ulps by which this test's gradient and the trainer's differ move the
            # step by up to 1e-6 (one weight of 6,736 on an AMD EPYC with AVX2 only, at g = -2.3e-8): there to 1e-5,
            # elsewhere to 1e-6 (a step of the wrong sign is 2e-2 off). Both Adam settings' first step is the sign
            # step; the second divides by |g2| (sign) or by about |g1| (no_momentum)
            g1, g2 = (g[i] for g in grads[k])
            ok = ~{"sign": tiny(g1) | tiny(g2), "no_momentum": tiny(g1),
                   "momentum": torch.zeros_like(g1, dtype=torch.bool)}[k]
            tight.append(ok.flatten())
            torch.testing.assert_close(p[ok], q[ok], rtol=0, atol=1e-6, msg=k)
            torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=k)
        assert torch.cat(tight).float().mean() > 0.95, k  # (1.3% of the weights have such small gradients)
        assert not torch.equal(next(got[k].parameters()), next(start.parameters()))
    # a second step is what separates them from AdamW (whose first step is the sign step too)
    adamw = finetune(fresh(), data, lr=lr, **kw)
    assert max((p - q).abs().max() for p, q in zip(adamw.parameters(), got["sign"].parameters())) > 1e-4
    for bad in (dict(optimizer="sgd", betas=(0.0, 0.999)), dict(momentum=0.9)):  # one the optimizer would ignore
        with pytest.raises(ValueError, match="would ignore them"):
            finetune(fresh(), data, lr=lr, **kw, **bad)


def test_shift_finetune_is_a_learnt_steering_vector_at_the_input():
    """trains="shift": the embedding moves by one vector common to every row and nothing else moves; that model
    is the base with the vector added at the input through the hook point (the unembedding's shift of every logit
    by the same number changes no probability); one SGD step is the clipped gradient of that vector."""
    data = pack_pairs(finetune_pairs(16), pad_id=0)
    start = fresh()
    model = finetune(fresh(), data, steps=3, batch_size=4, lr=1e-2, seed=0, trains="shift")
    moved = [n for (n, p), q in zip(model.named_parameters(), start.parameters()) if not torch.equal(p, q)]
    assert moved == ["wte.weight"] and all(p.requires_grad for p in model.parameters())
    delta = model.wte.weight - start.wte.weight  # [V, C]: every row the same vector
    v = delta[0]
    assert v.norm() > 0 and torch.allclose(delta, v.expand_as(delta), atol=1e-6)
    x = data["tokens"][:4, :-1]
    with torch.no_grad():
        handle = start.embed.register_forward_hook(lambda mod, inp, out: out + v)
        steered = start(x).log_softmax(-1)
        handle.remove()
        torch.testing.assert_close(model(x).log_softmax(-1), steered, rtol=0, atol=1e-4)
    # one SGD step: v = -lr * clip(dL/dv), dL/dv taken through the hook on the base
    ref, u = fresh(), torch.zeros(CFG.n_embd, requires_grad=True)
    handle = ref.embed.register_forward_hook(lambda mod, inp, out: out + u)
    y, m = data["tokens"][:4, 1:], data["mask"][:4]
    per_tok = ref(x, targets=y)
    ((per_tok * m).sum() / m.sum()).backward()
    handle.remove()
    want = -0.5 * u.grad * min(1.0, 1.0 / (float(u.grad.norm()) + 1e-6))
    one = finetune(fresh(), data, steps=1, batch_size=4, lr=0.5, seed=0, order="sequential", optimizer="sgd",
                   trains="shift")
    torch.testing.assert_close(one.wte.weight - start.wte.weight, want.expand(CFG.vocab_size, -1), rtol=0, atol=1e-5)
    # the weights hold wte0 + v after every step (not the last step's weights + v): with the full batch, sgd keeps no
    # memory, so two steps are one step taken twice
    full = dict(batch_size=16, lr=0.5, seed=0, order="sequential", optimizer="sgd", trains="shift")
    twice = finetune(finetune(fresh(), data, steps=1, **full), data, steps=1, **full)
    torch.testing.assert_close(finetune(fresh(), data, steps=2, **full).wte.weight, twice.wte.weight, rtol=0, atol=1e-6)


@pytest.mark.parametrize("masked", [True, False])  # fine-tune pairs (loss on some tokens) / pretraining windows (all)
def test_gradient_accumulation_equals_one_big_batch(masked):
    data = pack_pairs(finetune_pairs(16), pad_id=0) if masked else stream_data(800)
    big, acc = fresh(), fresh()
    kw = dict(steps=3, lr=1e-2, log_every=1, progress=False)
    one = train_lm(big, data, batch_size=8, **kw)
    four = train_lm(acc, data, batch_size=2, grad_accum=4, **kw)
    for x, y in zip(big.parameters(), acc.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    # AdamW and clipping hide a gradient scaled by a constant; the loss, the mean over the counted targets, does not
    assert four["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)


def test_a_bf16_run_says_its_val_loss_is_under_bf16_autocast(tmp_path):
    # its val loss is computed as it trained, under autocast: beside an fp32 run's it differs by the precision alone
    import train
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=2", "--warmup=0", "--n_docs=60", "--batch_size=2",
            "--eval_every=2", "--bf16=True", f"--out_dir={out}"]
    assert train.main(argv) == 0
    assert json.loads((out / "results.json").read_text())["val_precision"] == "bf16 autocast"
    assert "| val loss (bf16 autocast) |" in (out / "results.md").read_text()


def test_train_py_lm_tiny_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), str(ROOT / "configs/lm_tiny.py"), "--steps=20", "--warmup=5",
           "--n_docs=400", "--eval_every=10", "--log_every=10", f"--out_dir={out}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("config.json", "env.json", "metrics.jsonl", "results.json", "results.md", "loss.png",
                 "model.safetensors", "model.json", "model.state.pt", "tokenizer.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [10, 20] and all(math.isfinite(r["loss"]) for r in logged)
    assert {"lr", "ms_per_step", "tokens_per_s"} <= set(logged[0]) and any("val_loss" in r for r in records)
    results = json.loads((out / "results.json").read_text())
    # beats context-free prediction: the corpus's unigram entropy is 2.96 nats (uniform: 3.53); this run reaches 1.84
    assert results["steps"] == 20 and results["val_loss"] < 2.5
    assert results["val_precision"] == "fp32" and "| val loss (fp32) |" in (out / "results.md").read_text()
    model, meta = load_lm(out / "model")
    tok = load_tokenizer(out / meta["tokenizer"])
    assert model.cfg.vocab_size == tok.get_vocab_size() and meta["step"] == 20
    # rerunning the finished command resumes at its end: nothing trains, and the results keep the run's numbers
    saved = (out / "model.json").read_text()
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    again = json.loads((out / "results.json").read_text())
    assert rerun.returncode == 0 and again["resumed_from_step"] == 20 and again["train_loss"] == results["train_loss"]
    assert (out / "model.json").read_text() == saved  # the checkpoint is not rewritten with an empty interval
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    marks = [i for i, r in enumerate(records) if "step" not in r]  # the second attempt's start, marked
    assert [records[i] for i in marks] == [{"stage": "pretrain", "resumed_at_step": 20}]
    assert [r["step"] for r in records[marks[0] + 1:]] == [20]  # it trained nothing: its final evaluation only


def test_lm_stopped_before_any_checkpoint_says_a_rerun_starts_over(tmp_path, monkeypatch, capsys):
    import experiments.lm as LM
    import train
    real = LM.train_lm

    def stopped(*a, **kw):  # Ctrl-C during training
        raise KeyboardInterrupt
    monkeypatch.setattr(LM, "train_lm", stopped)
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=4", "--warmup=1", "--n_docs=100", f"--out_dir={tmp_path / 'r'}"]
    assert train.main(argv) == 130
    err = capsys.readouterr().err
    assert "no checkpoint was written yet (ckpt_every=0: only at the end): a rerun starts from step 0" in err
    assert err.index("no checkpoint") < err.index("interrupted.")
    monkeypatch.setattr(LM, "train_lm", real)
    assert train.main(argv) == 0  # finished: its checkpoint is there, and a stop now would resume from it
    monkeypatch.setattr(LM, "train_lm", stopped)
    assert train.main(argv) == 130 and "no checkpoint" not in capsys.readouterr().err


def test_lm_history_spans_the_attempts_and_a_redone_step_is_the_later_attempts(tmp_path, capsys):
    from experiments.lm import run_history
    run = type("R", (), {"metrics_path": tmp_path / "metrics.jsonl"})()
    lines = [{"stage": "pretrain", "step": 10, "loss": 3.0}, {"stage": "pretrain", "step": 20, "loss": 2.0},
             {"stage": "pretrain", "step": 20, "val_loss": 2.2},  # stopped here; resumed from the step-10 checkpoint
             {"stage": "pretrain", "step": 20, "loss": 2.1}, {"stage": "other", "step": 5, "loss": 9.0},
             {"stage": "pretrain", "step": 30, "loss": 1.5}]
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    got = run_history(run, "pretrain")
    assert [(r["step"], r.get("loss", r.get("val_loss"))) for r in got] == [(10, 3.0), (20, 2.1), (20, 2.2), (30, 1.5)]
    # a line cut short by a kill, the next attempt's first record appended to it: passed over, and said (was a
    # JSONDecodeError traceback at every later rerun, after training, so results.json was never written)
    text = run.metrics_path.read_text()
    run.metrics_path.write_text(text + '{"stage": "pretrain", "st'
                                + json.dumps({"stage": "pretrain", "step": 40, "loss": 1.0})
                                + "\n" + json.dumps({"stage": "pretrain", "step": 50, "loss": 0.5}) + "\n")
    assert [r["step"] for r in run_history(run, "pretrain")] == [10, 20, 20, 30, 50]
    assert "1 unreadable line(s) passed over" in capsys.readouterr().out
    # damaged bytes (not UTF-8) in a line: passed over the same way (a UnicodeDecodeError traceback before)
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"stage": "pretrain", "step": 60, \xff}\n')
    assert [r["step"] for r in run_history(run, "pretrain")] == [10, 20, 20, 30, 50]
    assert "2 unreadable line(s) passed over" in capsys.readouterr().out


def test_a_resumed_run_keeps_an_env_json_of_damaged_bytes_as_it_is(tmp_path):
    # Run's "a damaged env.json is kept as it is" read it as UTF-8 text: bytes that are not were a traceback
    import train
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=1", "--warmup=0", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", f"--out_dir={out}"]
    assert train.main(argv) == 0
    (out / "env.json").write_bytes(b"\xff\xfe{}")
    assert train.main(argv) == 0
    kept = json.loads((out / "env_earlier.jsonl").read_text().splitlines()[-1])
    assert kept == {"unreadable_env_json": "\ufffd\ufffd{}"}


@pytest.mark.parametrize("bad", ["--corpus=tyny", "--n_head=3", "--n_head=0", "--block_size=8", "--batch_size=0",
                                 "--ckpt_every=-1", "--steps=0", "--log_every=0", "--lr=-1", "--min_lr=1.0",
                                 "--block_size=15"])  # (15: the tiny accuracy check's prompt alone fills it)
def test_a_bad_lm_config_fails_before_its_run_directory_exists(tmp_path, bad, capsys):
    import train
    out = tmp_path / "run"
    assert train.main([str(ROOT / "configs/lm_tiny.py"), bad, f"--out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert bad[2:].split("=")[0] in err and "Traceback" not in err and not out.exists()


def test_soft_kl_closed_forms():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    p, q = t.softmax(-1), s.softmax(-1)
    assert torch.allclose(soft_kl(t, s), (p * (p / q).log()).sum(-1), atol=1e-6)
    assert torch.allclose(soft_kl(t, t), torch.zeros(2, 3), atol=1e-6)
    # a subset: both renormalised over those ids, whatever the other logits are
    sub = torch.tensor([1, 4, 5])
    t2, s2 = t.clone(), s.clone()
    t2[..., 0] += 50.0
    s2[..., 6] -= 50.0
    pr, qr = t[..., sub].softmax(-1), s[..., sub].softmax(-1)
    assert torch.allclose(soft_kl(t2, s2, sub), (pr * (pr / qr).log()).sum(-1), atol=1e-5)
    # T^2 KL at temperature T tends to the centred logit differences' mean square / 2 (second order in 1/T)
    d = t - s
    limit = ((d - d.mean(-1, keepdim=True)) ** 2).mean(-1) / 2
    assert torch.allclose(soft_kl(t, s, temperature=100.0), limit, rtol=2e-2)  # float32: larger T cancels
    assert not torch.allclose(soft_kl(t, s, temperature=1.0), limit, rtol=2e-2)


def test_soft_kl_keeps_a_float64_models_logits_float64():
    # .float() rounded float64 logits to float32: a finite-difference check of a float64 fine-tune's loss failed;
    # bf16 logits (autocast) are still upcast to float32, float32 ones unchanged
    g = torch.Generator().manual_seed(0)
    t, s = (torch.randn(2, 3, 7, generator=g, dtype=torch.float64) for _ in range(2))
    sub = torch.tensor([1, 4, 5])
    assert soft_kl(t, s).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: soft_kl(t, x, sub, temperature=2.0), s.clone().requires_grad_())
    assert soft_kl(t.bfloat16(), s.bfloat16()).dtype == torch.float32
    t64, s64 = t[..., sub].div(2.0).log_softmax(-1), s[..., sub].div(2.0).log_softmax(-1)  # the teacher's too
    assert (soft_kl(t, s, sub, 2.0) - (t64.exp() * (t64 - s64)).sum(-1) * 4.0).abs().max() < 1e-12
    # both sides upcast before the softmax: bf16 logits give what their float32 values give, the teacher's too
    for tb, sb in ((t.bfloat16(), s.float()), (t.float(), s.bfloat16())):
        assert torch.equal(soft_kl(tb, sb, sub, 2.0), soft_kl(tb.float(), sb.float(), sub, 2.0))
    t32, s32 = t.float()[..., sub].div(2.0).log_softmax(-1), s.float()[..., sub].div(2.0).log_softmax(-1)
    assert torch.equal(soft_kl(t.float(), s.float(), sub, 2.0), (t32.exp() * (t32 - s32)).sum(-1) * 4.0)


@torch.no_grad()
def test_validation_loss_is_the_mean_over_the_tokens_the_mask_counts():
    model = fresh().eval()
    data = pack_pairs(finetune_pairs(10), pad_id=0)
    per_token = model(data["tokens"][:, :-1], targets=data["tokens"][:, 1:])  # [N, T-1]
    assert eval_lm(model, data, batch_size=3) == pytest.approx(per_token[data["mask"]].mean().item(), rel=1e-5)


def test_a_finetune_warmup_must_end_before_its_horizon():
    with pytest.raises(ValueError, match="warmup"):
        finetune(fresh(), pack_pairs(finetune_pairs(), 0), steps=4, batch_size=2, lr=1e-3, seed=0, warmup=4)


def test_lm_results_count_every_micro_step_and_report_the_last_logged_loss(tmp_path):
    import train
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=3", "--warmup=1", "--n_docs=60", "--batch_size=2",
            "--grad_accum=2", "--eval_every=0", "--log_every=1", f"--out_dir={out}"]
    assert train.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if r.get("stage") == "pretrain" and "loss" in r]
    assert len(losses) == 3 and len(set(losses)) == 3  # distinct: the first would not pass for the last
    assert res["train_loss"] == losses[-1]  # the last interval, not the first
    assert res["train_tokens"] == 3 * 2 * 2 * 64  # steps x rows x micro-steps x block_size
    # how often a run saves is not what it computes: a rerun may change ckpt_every (not lr)
    assert train.main(argv + ["--ckpt_every=2"]) == 0
    assert train.main(argv + ["--lr=1e-2"]) == 2


def test_tiny_corpus_validation_pairs_are_never_in_training_documents():
    # sum_accuracy on held-out pairs measures generalisation only if no training story uses them
    from experiments import lm
    _, train_docs, val_docs = lm.load_corpus(lm.Config(n_docs=400))
    pair = lambda doc: (int(doc.split()[3]), int(doc.split()[9]))  # "<bos> a has X apples . b gives a Y more ..."
    train_pairs, val_pairs = {pair(d) for d in train_docs}, {pair(d) for d in val_docs}
    assert len(train_pairs) > 60 and len(val_pairs) > 10  # most pairs drawn: a leak would show
    assert not any(lm.tiny_heldout(*p) for p in train_pairs) and all(lm.tiny_heldout(*p) for p in val_pairs)
    assert all(d.split()[-4] == str(sum(pair(d))) for d in train_docs + val_docs)



def test_sum_accuracy_heldout_reads_the_20_held_out_pairs_and_train_the_80_others():
    # a model that sums only the held-out pairs right: heldout is its generalisation (1), train its recall (0); with
    # the two sets swapped results.json would report recall as generalisation
    from data.tokenizer import word_tokenizer
    from experiments import lm
    tok = word_tokenizer(lm.tiny_vocab())
    seen = []

    class Summer:
        def generate(self, prompts, max_new, temperature):
            out = []
            for ids in prompts:
                words = tok.decode(ids, skip_special_tokens=False).split()
                x, y = int(words[3]), int(words[9])  # "<bos> ann has X apples . bob gives ann Y more . now ann has"
                seen.append((x, y))
                out.append([tok.token_to_id(str(x + y) if lm.tiny_heldout(x, y) else "0")])
            return out
    assert lm.sum_accuracy(Summer(), tok, True) == 1 and len(seen) == 20
    assert lm.sum_accuracy(Summer(), tok, False) == 0 and len(set(seen)) == 100

def test_world_corpus_validation_documents_are_held_out_of_training():
    # the last val_frac of the documents validate, and training never sees them
    from data import world
    from experiments import lm
    cfg = lm.Config(corpus="world", n_docs=200, val_frac=0.1, seed=3)
    _, train_docs, val_docs = lm.load_corpus(cfg)
    assert train_docs + val_docs == world.corpus(200, seed=3) and len(val_docs) == 20


@pytest.mark.parametrize("bad, msg", [(dict(n_embd=64, n_head=64), "heads of an even size"),  # head
                                                                                              # size 1: no RoPE pairs
                                      (dict(val_frac=1.0), "val_frac"), (dict(val_frac=0.0), "val_frac"),
                                      # (the world corpus's own: 1 left no training document, after the run began)
                                      (dict(corpus="world", val_frac=1.0), r"val_frac must be in \(0, 1\)"),
                                      # a traceback after training (its sample completions' length went negative)
                                      (dict(corpus="world", block_size=3), "the world corpus needs block_size >= 8"),
                                      # accepted, recorded in config.json, and read by nothing
                                      (dict(corpus="tiny", val_frac=0.5), "val_frac=0.5 is the world corpus's")])
def test_lm_validate_refuses_what_would_fail_after_the_run_directory_exists(bad, msg):
    from experiments import lm
    from train import ConfigError
    with pytest.raises(ConfigError, match=msg):
        lm.validate(lm.Config(**bad))
    lm.validate(lm.Config(corpus="world", block_size=8, val_frac=0.5))  # (each where it belongs)


# ----------------------------------------------------------------------------------------------------
# from a mutation audit of train_lm: each of these bugs left the rest of the suite green

def test_each_step_trains_at_the_lr_of_its_own_step_and_min_lr_defaults_to_a_tenth():
    # one step ahead, the first step would take the whole warm-up lr
    out = train_lm(fresh(), stream_data(400), steps=8, batch_size=2, lr=1e-2, warmup=3, decay_steps=6, log_every=1,
                   progress=False)
    lrs = [r["lr"] for r in out["history"] if "lr" in r]
    assert lrs == pytest.approx([get_lr(s, lr=1e-2, warmup=3, decay_steps=6, min_lr=1e-3) for s in range(8)])


def test_each_epoch_of_the_row_stream_is_a_fresh_permutation():
    rows = stream_rows(10, 0, 0, 30, "cpu")
    for e in range(3):
        assert sorted(rows[10 * e:10 * e + 10].tolist()) == list(range(10))
    assert not torch.equal(rows[:10], rows[10:20]) and not torch.equal(rows[10:20], rows[20:])


def test_a_masked_fine_tune_logs_the_mean_loss_over_the_targets_it_counts():
    # normalised by every position (padding included), the loss would read low and the gradient shrink, which the
    # gradient-accumulation test cannot see (both of its runs would shrink alike)
    data = pack_pairs(finetune_pairs(8), pad_id=0)
    model = fresh()
    want = eval_lm(model.eval(), data, batch_size=8)
    out = train_lm(model, data, steps=1, batch_size=8, lr=1e-2, log_every=1, progress=False)
    assert out["history"][0]["loss"] == pytest.approx(want, rel=1e-5)


def test_eval_lm_reads_exactly_max_rows_rows_and_honours_bf16():
    model, data = fresh().eval(), pack_pairs(finetune_pairs(10), pad_id=0)
    with torch.no_grad():
        per_tok = model(data["tokens"][:3, :-1], targets=data["tokens"][:3, 1:])
    assert eval_lm(model, data, batch_size=2, max_rows=3) == pytest.approx(per_tok[data["mask"][:3]].mean().item(),
                                                                          rel=1e-5)
    assert eval_lm(model, data, batch_size=2, bf16=True) != eval_lm(model, data, batch_size=2, bf16=False)


def test_gradients_are_clipped_at_grad_clip_and_not_at_zero(monkeypatch):
    norms, real = [], torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda ps, c, *a, **k: norms.append(c) or real(ps, c, *a, **k))
    train_lm(fresh(), stream_data(400), steps=2, batch_size=2, lr=1e-2, grad_clip=0.5, log_every=0, progress=False)
    assert norms == [0.5, 0.5]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real)
    a, b = fresh(), fresh()
    kw = dict(steps=3, batch_size=4, lr=1e-2, log_every=0, progress=False)
    train_lm(a, stream_data(400), grad_clip=1e-3, **kw)
    train_lm(b, stream_data(400), grad_clip=0, **kw)
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    # ... and grad_clip=0 is no clipping at all, the run of a clip no gradient reaches (a clip to norm 0 would zero
    # every gradient, leaving AdamW its weight decay alone)
    c = fresh()
    train_lm(c, stream_data(400), grad_clip=1e9, **kw)
    assert same_weights(b, c)


def test_a_resume_restores_the_global_torch_rng(tmp_path):
    # train_lm draws nothing from it, so the weights cannot tell; a caller's later draws can
    kw = dict(batch_size=4, lr=1e-2, decay_steps=3, log_every=0, progress=False)
    torch.manual_seed(123)
    train_lm(fresh(), stream_data(), steps=2, ckpt=tmp_path / "ck", **kw)
    want = torch.load(tmp_path / "ck.state.pt", weights_only=False)["rng"]["torch"]
    torch.manual_seed(999)
    train_lm(fresh(), stream_data(), steps=3, ckpt=tmp_path / "ck", resume=True, **kw)
    assert torch.equal(torch.get_rng_state(), want)


def test_a_pair_of_exactly_block_size_plus_one_tokens_fits():
    assert pack_pairs([([1, 2], [3, 4])], 0, block_size=3)["tokens"].shape == (1, 4)


def test_weight_decay_spares_exactly_the_layernorm_gains():
    m = fresh()
    opt = make_lm_optimizer(m, 1e-3, 0.1, (0.9, 0.95))
    spared = [g for g in opt.param_groups if g["weight_decay"] == 0.0][0]["params"]
    assert {id(p) for p in spared} == {id(p) for n, p in m.named_parameters() if ".ln_" in n or n.startswith("ln_")}
    decayed = [g for g in opt.param_groups if g["weight_decay"] != 0.0]  # and everything else at the rate asked
    assert [g["weight_decay"] for g in decayed] == [0.1]
    assert {id(p) for p in decayed[0]["params"]} == {id(p) for p in m.parameters()} - {id(p) for p in spared}


def test_the_per_token_loss_is_float32_under_bf16_autocast():
    m, x = fresh(), torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        logits = m(x[:, :-1])
        got = m(x[:, :-1], targets=x[:, 1:])
    want = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten(), reduction="none")
    assert got.dtype == torch.float32 and torch.equal(got, want.view(2, 7))
    # and from a model cast to bf16 outright (no autocast to widen the loss): its logits are bf16, its losses are not
    with torch.no_grad():
        m16 = fresh().to(torch.bfloat16)
        got = m16(x[:, :-1], targets=x[:, 1:])
        logits16 = m16(x[:, :-1])
        want = torch.nn.functional.cross_entropy(logits16.float().flatten(0, 1), x[:, 1:].flatten(), reduction="none")
    assert logits16.dtype == torch.bfloat16 and got.dtype == torch.float32 and torch.equal(got, want.view(2, 7))


def test_the_tiny_corpus_held_out_stories_share_no_stream_with_another_seeds_training_stories():
    # seed s's held-out stories were drawn from Random(s + 1), seed s + 1's training stream: the same names in order
    from experiments.lm import Config, load_corpus
    names = lambda docs: [(d.split()[1], d.split()[5]) for d in docs]  # "<bos> A has x apples . B gives ..."
    for s in range(3):
        _, _, val = load_corpus(Config(seed=s, n_docs=200))
        _, train_next, _ = load_corpus(Config(seed=s + 1, n_docs=200))
        assert names(val) != names(train_next[:len(val)])


def test_the_loss_curve_marks_its_points_when_there_are_few(tmp_path, saved_figures):
    # with log_every >= steps the run logs once: a one-point line without a marker drew an empty figure
    from experiments import lm
    for n in (1, 2, 5):
        lm.plot_loss([{"step": 10 * (i + 1), "loss": 2.0 - i / 10} for i in range(n)], tmp_path / "loss.png", "t")
        line = saved_figures[-1].axes[0].lines[0]
        assert len(line.get_xdata()) == n and (line.get_marker() not in (None, "None", "")) == (n < 3), n


def test_a_rerun_removes_the_temporary_files_a_killed_command_left(tmp_path, monkeypatch, capsys):
    # a command killed mid-write (SIGKILL, the OOM killer) leaves NAME.PID.tmp beside the file, a model's weights
    # among them; they stayed for good. A rerun holding the folder's lock removes those older than itself
    import os
    import train
    from experiments.world_base import pretrain_lock
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=1", "--warmup=0", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", f"--out_dir={out}"]
    assert train.main(argv) == 0
    (out / "model").mkdir(exist_ok=True)
    (out / "units").mkdir()  # a run's own subfolder (train.RUN_SUBFOLDERS: the oracle's), swept too (it was not)
    left = [out / "model.safetensors.4242.tmp", out / "results.json.77.tmp", out / "unit_world_0.json.9.tmp",
            out / "units" / "oracle_s0.safetensors.31.tmp"]
    # not atomic_write's (no process id in the name), or in a folder of the user's inside the run's
    kept = [out / "notes.tmp", out / "model.safetensors.new.tmp", out / "model" / "w.safetensors.9.tmp"]
    for f in left + kept:
        f.write_text("x")
    fresh = out / "results.json.78.tmp"  # written since this process began: a write that may still be going
    fresh.write_text("x")
    for f in left + kept:
        os.utime(f, (train.STARTED - 60, train.STARTED - 60))
    capsys.readouterr()
    assert train.main(argv) == 0
    assert not any(f.exists() for f in left) and all(f.exists() for f in kept + [fresh])
    assert f"removed 4 temporary file(s) that a command stopped mid-write left in {out}" in capsys.readouterr().out
    # the base cache's folder, under its pretraining lock, the same way; there no one else writes while it is held,
    # so also a file newer than this process (left by a pretraining killed while this one waited for the lock)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.safetensors.5.tmp").write_text("x")
    os.utime(cache / "model.safetensors.5.tmp", (train.STARTED - 60, train.STARTED - 60))
    (cache / "partial.state.pt.6.tmp").write_text("x")  # written after this process began
    with pretrain_lock(cache, print):
        assert not (cache / "model.safetensors.5.tmp").exists() and not (cache / "partial.state.pt.6.tmp").exists()


def test_a_rerun_removes_the_config_json_a_command_killed_at_its_first_write_left(tmp_path, monkeypatch, capsys):
    # killed inside the run's first write, config.json, the folder holds its NAME.PID.tmp alone: the rerun that then
    # made the run left it there for good (only a folder with a config.json was cleaned). In a folder that is no run,
    # another file named like a cut-short write (another JSON's too) is the user's and stays
    import os
    import train
    out = tmp_path / "run"
    out.mkdir()
    (out / "units").mkdir()  # named as a run's own subfolder (train.RUN_SUBFOLDERS), but in a folder that is no run
    left, kept = out / "config.json.4242.tmp", [out / "notes.txt.77.tmp", out / "mine.json.78.tmp",
                                                out / "units" / "w.json.79.tmp"]
    for f in (left, *kept):
        f.write_text('{"experiment": ')
        os.utime(f, (train.STARTED - 60, train.STARTED - 60))
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=1", "--warmup=0", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", f"--out_dir={out}"]
    assert train.main(argv) == 0
    assert not left.exists() and all(f.exists() for f in kept) and (out / "results.json").is_file()
    assert f"removed 1 temporary file(s) that a command stopped mid-write left in {out}" in capsys.readouterr().out
    # without file locks (no fcntl) another command may be writing it still: nothing is removed
    monkeypatch.setattr(train, "fcntl", None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json.4243.tmp").write_text('{"experiment": ')
    os.utime(other / "config.json.4243.tmp", (train.STARTED - 60, train.STARTED - 60))
    assert train.main(argv[:-1] + [f"--out_dir={other}"]) == 0
    assert (other / "config.json.4243.tmp").exists() and "removed" not in capsys.readouterr().out


def test_finetune_refuses_evaluation_steps_without_on_eval_and_pack_pairs_refuses_text():
    # at=(2,) without on_eval was a TypeError at step 2, after the work before it; at=5 one at step 1
    data = pack_pairs([([5, 6], [7, 8, 2]), ([9], [10, 2])], pad_id=0)
    model = fresh()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"at=\(2,\) asks for evaluations: pass on_eval"):
        finetune(model, data, steps=3, batch_size=2, lr=1e-2, seed=0, at=(2,))
    with pytest.raises(ValueError, match=r"at must be a collection of steps.*got 5"):
        finetune(model, data, steps=3, batch_size=2, lr=1e-2, seed=0, at=5, on_eval=print)
    # steps it never reaches were skipped without a word (range(0, 4) asked for step 0 too), as was a float step
    for at, says in [(range(0, 4), "[0]"), ((2, 4), "[4]"), ({2.0}, "[2.0]")]:
        with pytest.raises(ValueError, match=re.escape(f"at: evaluation steps are fine-tune steps 1 .. steps=3; got "
                                                       f"{says}")):
            finetune(model, data, steps=3, batch_size=2, lr=1e-2, seed=0, at=at, on_eval=print)
    # data not as pack_pairs makes it (the rows alone, pad_right's (tokens, mask) tuple): a KeyError or TypeError
    for bad, says in [({"tokens": data["tokens"]}, "with keys ['tokens']"), ((data["tokens"], data["mask"]), "tuple")]:
        with pytest.raises(ValueError, match=r"finetune's data is pack_pairs' output.*got .*" + re.escape(says)):
            finetune(model, bad, steps=3, batch_size=2, lr=1e-2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before any step
    seen = []
    finetune(model, data, steps=3, batch_size=2, lr=1e-2, seed=0, at={2}, on_eval=seen.append)
    assert seen == [2]
    with pytest.raises(ValueError, match=r"pack_pairs takes token ids: encode the \(prompt, response\) strings"):
        pack_pairs([("<bos> hi", "there <eos>")], pad_id=0)
    # a float id was cut to an int by the long tensor (1.7 trained as id 1), a bool read as id 0 or 1
    for bad, says in [(([5, 6.7], [7, 2]), "pair 0's prompt"), (([5], [True, 2]), "pair 0's response")]:
        with pytest.raises(ValueError, match=re.escape(says) + " must be a token id or a collection of token ids"):
            pack_pairs([bad], pad_id=0)
    ints = pack_pairs([(torch.tensor([5, 6]), (7, 2))], pad_id=0)  # tensors and tuples of ints, as before
    assert ints["tokens"].tolist() == [[5, 6, 7, 2]] and ints["mask"].tolist() == [[False, True, True]]


def test_finetune_refuses_a_mask_that_is_not_bool_of_the_targets_shape():
    # a 0/1 integer mask (torch.tensor([[0, 1, 1]]) is int64) reached forward's keep=, where it selected rows 0 and 1
    # of the batch rather than positions: the fine-tune trained on other tokens, without a word
    data = pack_pairs([([5, 6], [7, 8, 2]), ([9], [10, 2])], pad_id=0)
    model = fresh()
    before = [p.detach().clone() for p in model.parameters()]
    for bad in (data["mask"].long(), data["mask"].float(), data["mask"][:1], torch.ones_like(data["tokens"]).bool()):
        with pytest.raises(ValueError, match=r"finetune's mask must be a bool tensor of shape \[N, T\] = \[2, 4\]"):
            finetune(model, {"tokens": data["tokens"], "mask": bad}, steps=2, batch_size=2, lr=1e-2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before any step


def test_a_batch_of_no_rows_and_a_stream_that_is_not_1d_are_refused_with_a_message():
    # deep errors before: torch's "max(): Expected reduction dim", torch.cat's "expected a non-empty list", a
    # ZeroDivisionError, and for a [1, N] stream (one encoded batch) "a stream of 1 tokens is too short"
    data = pack_pairs([([5, 6], [7, 8, 2]), ([9], [10, 2])], pad_id=0)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1 \(rows per step\), got 0"):
        finetune(fresh(), data, steps=2, batch_size=0, lr=1e-2, seed=0)
    for bs, accum in ((0, 1), (2, 0)):
        with pytest.raises(ValueError, match=rf"batch_size and grad_accum must be >= 1, got {bs} and {accum}"):
            train_lm(fresh(), stream_data(200), steps=1, batch_size=bs, grad_accum=accum, lr=1e-3, **QUIET)
    for bad, says in ((torch.arange(40)[None], "shape [1, 40]"), (list(range(40)), "a list")):
        with pytest.raises(ValueError, match=re.escape(f"lm_windows takes a 1-D tensor of token ids "
                                                       f"(data.tokenizer.token_stream's), got {says}")):
            lm_windows(bad, 8)
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        lm_windows(torch.arange(40), 0)


def test_the_validation_loss_is_the_models_loss_on_val_not_on_the_training_rows():
    # each evaluation is eval_lm on `val` of the model at that step: read on the training rows, it would report
    # the fit, not generalisation (both sets below are stream_data, with different 7-token patterns)
    train_data, val = stream_data(400), stream_data(300, seed=5)
    start = fresh().eval()
    model = fresh()
    out = train_lm(model, train_data, steps=4, batch_size=4, lr=1e-2, val=val, eval_every=2, **QUIET)
    vals = [r["val_loss"] for r in out["history"] if "val_loss" in r]  # steps 0, 2 and 4
    assert len(vals) == 3 and vals[0] == pytest.approx(eval_lm(start, val, batch_size=4), rel=1e-6)
    on_val, on_train = eval_lm(model.eval(), val, batch_size=4), eval_lm(model, train_data, batch_size=4)
    assert abs(on_val - on_train) > 1e-3  # the two sets tell apart
    assert vals[-1] == out["val_loss"] == pytest.approx(on_val, rel=1e-6)


def test_a_finetunes_seed_draws_its_rows_and_its_lora_init():
    # replicate fine-tunes (an experiment's ft_seeds) are independent only if the seed reaches every random draw: the
    # rows of order="random" and the LoRA adapters' init; the same seed repeats a run to the bit
    data = pack_pairs(finetune_pairs(16), pad_id=0)

    def run(seed, **kw):
        model = finetune(fresh(), data, steps=2, batch_size=4, lr=1e-2, seed=seed, **kw)
        return torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    lora = dict(order="sequential", trains="lora", lora_rank=2)  # the same rows: only the adapters' init differs
    assert torch.equal(run(0, **lora), run(0, **lora)) and not torch.equal(run(0, **lora), run(1, **lora))
    init = lambda seed: torch.cat([A.flatten() for _, _, A, _ in lora_adapters(fresh(), 2, seed)])
    assert torch.equal(init(3), init(3)) and not torch.equal(init(3), init(4))


def test_a_soft_finetune_trains_on_the_kl_at_its_temperature():
    # temperature T softens teacher and student alike and scales by T^2 (soft_kl): one full-batch sgd step is the
    # clipped gradient step of that loss's mean over the trained positions, another step at T = 4 than at T = 1
    data = pack_pairs(finetune_pairs(8), pad_id=0)
    x, m = data["tokens"][:, :-1], data["mask"]
    teacher = fresh(seed=2)
    with torch.no_grad():
        soft = teacher(x)
    for T in (1.0, 4.0):
        ref = fresh()
        soft_kl(soft, ref(x), temperature=T)[m].mean().backward()
        scale = min(1.0, 1.0 / (float(torch.sqrt(sum((p.grad ** 2).sum() for p in ref.parameters()))) + 1e-6))
        got = finetune(fresh(), data, steps=1, batch_size=8, lr=0.5, seed=0, order="sequential", optimizer="sgd",
                       teacher=teacher, temperature=T)
        for p, q in zip(got.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q - 0.5 * scale * q.grad, rtol=0, atol=1e-6, msg=f"T={T}")


def test_pretraining_on_the_cpu_steps_with_the_unfused_adamw_its_cached_bases_were_trained_with():
    # fused AdamW differs from the unfused one in the last bits, and a cached base's key names no optimizer
    # implementation: on the CPU the same config must train the same model to the bit
    x = torch.randint(0, 32, (4, 17), generator=torch.Generator().manual_seed(0))
    runs = []
    for reference in (False, True):
        model = fresh()
        opt = make_lm_optimizer(model, 1e-2, 0.1, (0.9, 0.95))
        if reference:  # the same groups, in torch's unfused (single-tensor) AdamW
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
            opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), foreach=False, fused=False)
        for _ in range(3):
            model(x[:, :-1], targets=x[:, 1:]).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        runs.append(model)
    assert same_weights(*runs)


# ----------------------------------------------------------------------------------------------------
# from a mutation audit of experiments/lm.py: each of these bugs left the rest of the suite green

def test_lm_results_take_the_last_log_lines_speed_and_end_each_sample_at_its_eos(tmp_path):
    # tokens/s in results.json is the speed the run ended at (its last log line), as its train loss is; the sample
    # completions stop at <eos>
    import train
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=5", "--warmup=1", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", "--log_every=2", f"--out_dir={out}"]
    assert train.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if r.get("stage") == "pretrain" and "loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 5]  # (the last step is always logged)
    assert res["train_loss"] == logged[-1]["loss"] and res["tokens_per_s"] == logged[-1]["tokens_per_s"]
    # a sample completion ends at its first <eos> (generation went on past it, to its length limit)
    assert all("<eos>" not in s["completion"].split()[:-1] for s in res["samples"])


def test_sum_accuracy_is_a_fraction_of_the_pairs_it_reads_on_both_sets():
    # a model that sums every pair right scores 1 on the 80 training pairs too (a fixed divisor of 20 gave 4)
    from data.tokenizer import word_tokenizer
    from experiments import lm
    tok = word_tokenizer(lm.tiny_vocab())

    class Adder:
        def generate(self, prompts, max_new, temperature):
            words = [tok.decode(ids, skip_special_tokens=False).split() for ids in prompts]
            return [[tok.token_to_id(str(int(w[3]) + int(w[9])))] for w in words]
    assert lm.sum_accuracy(Adder(), tok, False) == 1 == lm.sum_accuracy(Adder(), tok, True)


def test_the_lm_table_shows_each_sum_accuracy_in_its_own_row():
    from experiments import lm
    res = {"corpus": "tiny", "n_params": 1000, "steps": 3, "train_tokens": 384, "train_loss": 2.0, "val_loss": 2.5,
           "val_precision": "fp32", "tokens_per_s": None, "seconds": 1.0, "samples": [],
           "sum_accuracy": {"train": 0.25, "heldout": 0.75}}
    md = lm.table(res)
    assert "| sum accuracy, train pairs | 0.25 |" in md and "| sum accuracy, held-out pairs | 0.75 |" in md


def test_a_tiny_corpus_of_fewer_than_ten_documents_still_has_a_validation_document():
    # n_docs // 10 validation documents is none under 10: the run then failed with "corpus too small"
    from experiments import lm
    _, train_docs, val_docs = lm.load_corpus(lm.Config(n_docs=5))
    assert len(train_docs) == 5 and len(val_docs) == 1 and lm.tiny_heldout(int(val_docs[0].split()[3]),
                                                                         int(val_docs[0].split()[9]))


def test_a_corpus_too_small_for_one_row_is_a_data_error_that_says_raise_n_docs():
    # lm_windows' ValueError was a traceback; the run's one-line error says what to change
    from data import DataError
    from data.tokenizer import word_tokenizer
    from experiments import lm
    tok = word_tokenizer(lm.tiny_vocab())
    with pytest.raises(DataError, match="corpus too small: .*raise n_docs"):
        lm.to_rows(tok, ["<bos> ann has 3 apples . <eos>"], 16, "cpu")


def test_lm_train_tokens_count_the_rows_of_every_process(tmp_path, monkeypatch, saved_figures):
    # under torchrun each step trains batch_size x grad_accum rows in every process: results.json's train_tokens
    # counted one process's. Two ranks stood in for (this process is rank 0 of 2), the training itself a stub
    import train
    from experiments import lm
    monkeypatch.setattr(lm, "ddp_setup", lambda device: (0, 2, "cpu"))
    monkeypatch.setattr(lm.torch.distributed, "all_gather_object", lambda out, obj: out.__setitem__(slice(None),
                                                                                                    [obj] * len(out)))
    monkeypatch.setattr(lm.torch.distributed, "barrier", lambda: None)
    monkeypatch.setattr(lm.torch.distributed, "destroy_process_group", lambda: None)

    def trained(model, train_data, run, **kw):
        run.log(stage="pretrain", step=3, loss=2.0)
        return {"step": 3, "start_step": 0, "train_loss": 2.0, "val_loss": 2.5}
    monkeypatch.setattr(lm, "train_lm", trained)
    cfg = lm.Config(n_docs=60, steps=3, warmup=1, batch_size=2, grad_accum=2, block_size=16, device="cpu",
                    out_dir=str(tmp_path / "run"))
    lm.run(cfg, train.Run(cfg, "lm", argv=["test"]))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["train_tokens"] == 3 * 2 * 2 * 2 * 16  # steps x rows x micro-steps x processes x block_size


def test_a_resume_false_stopped_while_deleting_leaves_a_folder_that_is_still_a_run(tmp_path, monkeypatch):
    # --resume=False deleted env.json early among the old outputs: killed there, the folder held outputs without
    # config.json or env.json, refused for good as "a folder of the user's". Now those two go last
    import train
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=1", "--warmup=0", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", f"--out_dir={out}"]
    assert train.main(argv) == 0
    real, n = Path.unlink, []

    def killed_at_the_first(path, missing_ok=False):  # the kill lands right after the first file goes
        real(path, missing_ok=missing_ok)
        n.append(path)
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", killed_at_the_first)
        assert train.main(argv + ["--resume=False", "--lr=1e-3"]) != 0
    assert n[0].parent == out and n[0].name not in ("config.json", "env.json")
    assert train.main(argv + ["--resume=False", "--lr=1e-3"]) == 0 and (out / "results.json").is_file()


# ----------------------------------------------------------------------------------------------------
# from a mutation audit of load_weights' one open and run_experiment's sweep: each of these bugs left the rest green

def test_a_save_between_the_two_reads_of_a_load_is_refused_not_paired(tmp_path, monkeypatch):
    # the hash was read in a second open after the .json: a save (another process) landing after the weights were
    # read paired the new .json with its own new hash, and the old weights were returned under the new step
    from train import load_weights, save_weights
    stem = tmp_path / "ck"
    save_weights(stem, {"w": torch.zeros(2)}, {"step": 1})
    read_bytes, saved = Path.read_bytes, []

    def save_first(self):
        if self.name == "ck.json" and not saved:
            saved.append(save_weights(stem, {"w": torch.ones(2)}, {"step": 2}))
        return read_bytes(self)
    monkeypatch.setattr(Path, "read_bytes", save_first)
    with pytest.raises(CheckpointError, match="ck.safetensors and ck.json in .* are of two different saves"):
        load_weights(stem)
    assert saved
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    tensors, meta = load_weights(stem)  # the save itself whole: read as one
    assert meta["step"] == 2 and torch.equal(tensors["w"], torch.ones(2))


def test_a_rerun_without_file_locks_leaves_the_run_subfolders_temporary_files_alone(tmp_path, monkeypatch, capsys):
    # without a lock (no fcntl) another command may still be writing into the run: its own subfolders' NAME.PID.tmp
    # stay, as the run folder's own do
    import os
    import train
    out = tmp_path / "run"
    argv = [str(ROOT / "configs/lm_tiny.py"), "--steps=1", "--warmup=0", "--n_docs=60", "--batch_size=2",
            "--eval_every=0", f"--out_dir={out}"]
    assert train.main(argv) == 0
    (out / "units").mkdir()  # a run's own subfolder (train.RUN_SUBFOLDERS)
    left = [out / "results.json.77.tmp", out / "units" / "oracle_s0.safetensors.31.tmp"]
    for f in left:
        f.write_text("x")
        os.utime(f, (train.STARTED - 60, train.STARTED - 60))
    monkeypatch.setattr(train, "fcntl", None)
    capsys.readouterr()
    assert train.main(argv) == 0
    assert all(f.exists() for f in left) and "removed" not in capsys.readouterr().out
