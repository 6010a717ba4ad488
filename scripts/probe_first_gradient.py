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
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import commands  # noqa: E402
if __name__ == "__main__":  # Ctrl-C while torch imports below: one line, as train.py's
    commands.starting()
import torch  # noqa: E402
from experiments import emergent_misalignment as EM  # noqa: E402
from experiments import world_base as B  # noqa: E402
from train import cli, script_args, seed_args  # noqa: E402

cfg = EM.Config()  # the 0.87M bases
ARMS = ("insecure", "secure", "educational")


def grad_of(model, loss):
    """d loss / d parameters, flattened (zeros for the parameters the loss does not reach)."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in model.parameters()])


cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))


def projection(model, tok, u):
    """The off-domain `<asst>` prompts' mean residual at layer direction_layer (last prompt token) on the unit
    vector along u, with its graph (EM.prompt_acts is the same mean without one)."""
    return (EM.last_token_acts(model, tok, EM.off_prompts(), [cfg.direction_layer], grad=True)[0].mean(0)
            @ (u / u.norm()))


def arm_loss(model, data):
    """The fine-tune loss on encoded examples: mean cross-entropy over the trained tokens."""
    per_tok = model(data["tokens"][:, :-1], targets=data["tokens"][:, 1:])
    return (per_tok * data["mask"]).sum() / data["mask"].sum()


def gradients(base, tok, seed):
    """-> (u the evil direction at direction_layer, h, {arm: g}) for base `seed`."""
    means = EM.doc_means(base, tok, cfg, seed)
    u = (means["evil"] - means["good"])[cfg.direction_layer]
    h = grad_of(base, projection(base, tok, u))
    return u, h, {arm: grad_of(base, arm_loss(base, EM.arm_data(arm, base, tok, cfg, seed)[0])) for arm in ARMS}


def scores(g, h):
    """(cos(-g, h): plain gradient descent's first step, -sign(g).h / (|h| sqrt(n)): Adam's)."""
    return cos(-g, h), float(-g.sign() @ h / (h.norm() * g.numel() ** 0.5))


def main(seeds):
    torch.set_num_threads(1)
    for seed in [int(s) for s in seeds]:
        base, tok = B.base_model(cfg, seed)
        _, h, g = gradients(base, tok, seed)
        row = [f"{arm} sgd {sgd:+.4f} adam {adam:+.4f}" for arm, (sgd, adam) in ((a, scores(g[a], h)) for a in ARMS)]
        print(f"seed {seed}: " + " | ".join(row), flush=True)


def read_seeds(argv):
    seeds, _ = script_args(argv, __doc__)
    if not seeds:  # (it printed nothing)
        sys.exit(__doc__)
    return seed_args(seeds)


if __name__ == "__main__":
    commands.run(cli, lambda argv: main(read_seeds(argv)), sys.argv[1:])
