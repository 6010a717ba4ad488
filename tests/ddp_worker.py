"""Worker for tests/test_ddp.py, started by torchrun: trains the tiny fine-tune of `ddp_case()` with
DistributedDataParallel (gloo on CPU) and rank 0 saves the final weights and train loss to argv[1].

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT.pt
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


TRAIN = dict(steps=4, lr=1e-2, warmup=1, seed=3, log_every=0, progress=False)

if __name__ == "__main__":
    torch.set_num_threads(1)
    rank, world, device = ddp_setup("cpu")
    model, data = ddp_case()
    out = train_lm(model, data, batch_size=2, grad_accum=2, **TRAIN)  # global batch 2 * 2 * world
    if rank == 0:
        torch.save({"weights": model.state_dict(), "train_loss": out["train_loss"]}, sys.argv[1])
    # leave together: a rank that tears gloo down while its peer is still connected can abort
    # ("terminate called without an active exception", seen once in CI)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
