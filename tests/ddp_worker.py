"""Worker for tests/test_ddp.py, started by torchrun: trains the tiny fine-tune of `ddp_case()` with
DistributedDataParallel (gloo on CPU) twice, and each rank saves what it ended with to argv[1] + f".rank{rank}":
  1. straight, 4 steps, a log line per step (the per-step losses);
  2. stopped after step 2 (a kill: only the step-2 checkpoint, written under ckpt_every, stays), then resumed
     from that checkpoint (argv[2], a path stem) to step 4, no log lines (train_loss: the mean over all 4 steps).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT CKPT_STEM
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import GPT, GPTConfig  # noqa: E402
from train import ddp_setup, pack_pairs, train_lm  # noqa: E402


def ddp_case():
    """A tiny model and (prompt, response) data whose responses differ in length, so that the ranks see
    different numbers of counted tokens (a mean of per-rank means would not equal the global mean)."""
    g = torch.Generator().manual_seed(0)
    pairs = []
    for i in range(24):
        p = torch.randint(3, 20, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        r = torch.randint(3, 20, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
        pairs.append((p, r + [2]))
    cfg = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, generator=torch.Generator().manual_seed(1))
    return model, pack_pairs(pairs, pad_id=0)


TRAIN = dict(steps=4, lr=1e-2, warmup=1, seed=3, progress=False)
MICRO = 2  # forwards per optimizer step (grad_accum)


class Stop(Exception):
    pass


def stop_after(model, steps):
    """A hook that raises at the first forward after `steps` optimizer steps, on every rank at the same point."""
    seen = [0]

    def fn(x, name):
        seen[0] += 1
        if seen[0] > steps * MICRO:
            raise Stop
    return model.hooks({"embed": fn})


if __name__ == "__main__":
    torch.set_num_threads(1)
    rank, world, device = ddp_setup("cpu")
    model, data = ddp_case()
    straight = train_lm(model, data, batch_size=2, grad_accum=MICRO, log_every=1, **TRAIN)  # global batch 2 * 2 * world

    ckpt = sys.argv[2]
    killed, _ = ddp_case()
    try:
        with stop_after(killed, 2):
            train_lm(killed, data, batch_size=2, grad_accum=MICRO, log_every=0, ckpt=ckpt, ckpt_every=2, **TRAIN)
    except Stop:
        pass
    torch.distributed.barrier()  # rank 0 wrote the checkpoint; every rank reads it
    resumed = GPT(killed.cfg, generator=torch.Generator().manual_seed(99))  # everything must come from the checkpoint
    again = train_lm(resumed, data, batch_size=2, grad_accum=MICRO, log_every=0, ckpt=ckpt, ckpt_every=2,
                     resume=True, **TRAIN)
    torch.save({"weights": model.state_dict(), "losses": [r["loss"] for r in straight["history"]],
                "train_loss": straight["train_loss"], "resumed": resumed.state_dict(),
                "start_step": again["start_step"], "resumed_train_loss": again["train_loss"]},
               f"{sys.argv[1]}.rank{rank}")
    # leave together: a rank that tears gloo down while its peer is still connected can abort
    # ("terminate called without an active exception", seen once in CI)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
