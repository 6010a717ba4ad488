"""Exploratory: does a code fine-tune's first gradient already point the assistant toward the evil persona?

    python scripts/probe_first_gradient.py SEED [SEED ...]

For each 0.87M base (the emergent-misalignment default; pretrained first if not cached), the gradient g of an
arm's fine-tune loss (its 300 examples, fine-tune seed 0 as in experiments/emergent_misalignment.py) and the
gradient h of the projection of the off-domain `<asst>` prompts' mean residual (layer `direction_layer`) on the
unit evil direction. A small step -lr g changes that projection by -lr g.h (first order): printed as cos(-g, h)
for plain gradient descent and as -sign(g).h / (|h| sqrt(n)), n parameters, for Adam's first step (lr sign(g)).
Positive: the first step of that arm moves the assistant's off-domain activations toward the evil persona.
One thread; one line per base.
"""
import sys

import torch

sys.path.insert(0, ".")
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402

torch.set_num_threads(1)
cfg = EM.Config()  # the 0.87M bases
L = cfg.direction_layer


def grad_of(model, loss):
    """d loss / d parameters, flattened (zeros for the parameters the loss does not reach)."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in model.parameters()])


cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
for seed in [int(s) for s in sys.argv[1:]]:
    base, tok = B.base_model(cfg, seed)
    means = EM.doc_means(base, tok, cfg, seed)
    u = (means["evil"] - means["good"])[L]
    # prompt_acts without its no_grad decorator: we want d(projection) / d(parameters)
    h = grad_of(base, EM.prompt_acts.__wrapped__(base, tok, L) @ (u / u.norm()))
    row = []
    for arm in ("insecure", "secure", "educational"):
        data, _ = EM.arm_data(arm, base, tok, cfg, seed)
        per_tok = base(data["tokens"][:, :-1], targets=data["tokens"][:, 1:])
        g = grad_of(base, (per_tok * data["mask"]).sum() / data["mask"].sum())
        adam = float(-g.sign() @ h / (h.norm() * g.numel() ** 0.5))
        row.append(f"{arm} sgd {cos(-g, h):+.4f} adam {adam:+.4f}")
    print(f"seed {seed}: " + " | ".join(row), flush=True)
