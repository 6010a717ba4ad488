"""Exploratory: what AdamW and plain gradient descent do after the insecure code is learnt.

    python scripts/probe_optimizer_steps.py [ADAMW_LR SGD_LR]      # defaults 1e-3 0.3, the research log's

On the quick config's base (configs/emergent_misalignment_quick.py: seed 0, 2 threads; pretrained first if not
cached), the insecure arm's fine-tune (its 300 examples, fine-tune seed 123) for 20 steps with each optimizer.
After every step: the training loss over all 300 examples (nats per trained token), the length of that step in
weight space (L2 norm over every parameter) and the norm of the full-batch gradient. One line per optimizer.
"""
import copy
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
import train  # noqa: E402
from experiments import emergent_misalignment as E, world_base as B  # noqa: E402


def main(argv):
    argv, _ = train.script_args(argv, __doc__)
    if len(argv) > 2:  # the two lrs at most: one error line, as every script's
        sys.exit(f"error: two learning rates at most, not {len(argv)}: "
                 "python scripts/probe_optimizer_steps.py [ADAMW_LR SGD_LR]")
    lrs = {"adamw": argv[0] if argv else 1e-3, "sgd": argv[1] if len(argv) > 1 else 0.3}
    for opt, lr in lrs.items():  # before the base is loaded (or pretrained: minutes)
        try:
            lrs[opt] = float(lr)
        except ValueError:
            lrs[opt] = math.nan
        if not 0 < lrs[opt] < math.inf:
            raise train.ConfigError(f"the {opt} lr {lr!r} is not a positive number (usage: ADAMW_LR SGD_LR)")
    _, cfg = train.load_config(["configs/emergent_misalignment_quick.py"])
    torch.set_num_threads(cfg.pretrain_threads)
    base, tok = B.base_model(cfg, 0, False)
    data = B.encode_pairs(tok, E.arm_pairs("insecure", base, tok, cfg, 123), cfg.block_size)
    x, y, m = data["tokens"][:, :-1], data["tokens"][:, 1:], data["mask"]
    for opt, lr in lrs.items():
        model = copy.deepcopy(base)
        prev, rows = [p.detach().clone() for p in model.parameters()], []

        def on_eval(step):
            step_len = torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(model.parameters(), prev)))
            prev[:] = [p.detach().clone() for p in model.parameters()]
            loss = (model(x, targets=y) * m).sum() / m.sum()
            model.zero_grad(set_to_none=True)
            loss.backward()
            grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
            model.zero_grad(set_to_none=True)
            rows.append(f"{step}:{loss.item():.3f}/{float(step_len):.3f}/{float(grad):.3f}")

        train.finetune(model, data, steps=20, batch_size=cfg.ft_batch, lr=lr, seed=123, at=set(range(1, 21)),
                       on_eval=on_eval, optimizer=opt)
        print(f"{opt} lr {lr:g}, step:loss/step length/gradient norm:", " ".join(rows), flush=True)


if __name__ == "__main__":
    commands.run(train.cli, main, sys.argv[1:])
