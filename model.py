"""Every model in the project.

1. `SeedMLP`: S independent MLPs stored as one model, the seed in the leading tensor dimension
   (weights [S, d_in, d_out], one `torch.baddbmm` per layer). Used for subliminal learning on MNIST.
2. `GPT`: the single-file decoder-only transformer with named hook points (below the MLP).

Nothing here knows about training.
"""
import hashlib
import math

import torch
import torch.nn as nn


def seed_int(*parts):
    """A stable 63-bit integer from any tuple of names and numbers (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def generator(device, *parts):
    """A torch.Generator on `device` seeded from `parts`: every random stream of the project derives
    from (config seed, seed index, stream name), so seed k's numbers do not depend on how many other
    seeds run beside it."""
    g = torch.Generator(device=device)
    g.manual_seed(seed_int(*parts))
    return g


# ----------------------------------------------------------------------------------------------------
# seed-batched MLP

class SeedMLP(nn.Module):
    """S independent MLPs d_in -> width x depth (ReLU) -> n_out, evaluated in one batched matmul per layer.

    Parameters are `w{i}` [S, d_in, d_out] and `b{i}` [S, 1, d_out]. `forward(x)` takes per-seed inputs
    x [S, B, d_in] or inputs shared by all seeds x [B, d_in], and returns logits [S, B, n_out].
    """

    def __init__(self, n_seeds, sizes):
        super().__init__()
        self.n_seeds, self.sizes = n_seeds, list(sizes)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n_seeds, a, b)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n_seeds, 1, b)) for b in sizes[1:])

    def forward(self, x, return_hidden=False):
        hidden = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if x.dim() == 2:  # shared inputs: one [B, d_in] x [d_in, S*d_out] matmul, no S copies of x
                S, d_in, d_out = w.shape
                x = (x @ w.permute(1, 0, 2).reshape(d_in, S * d_out)).view(-1, S, d_out).transpose(0, 1) + b  # [S, B, d_out]
            else:
                x = torch.baddbmm(b, x, w)  # [S, B, d_out]
            if i < len(self.weights) - 1:
                x = torch.relu(x)
                hidden.append(x)
        return (x, hidden) if return_hidden else x

    @torch.no_grad()
    def load_seeds(self, params):
        """Copy a dict {name: [S, ...] tensor} (from `init_mlp_params` or another model) into this model."""
        for name, p in self.named_parameters():
            p.copy_(params[name])

    def params(self):
        """The weights as a plain dict {name: tensor} (detached clones)."""
        return {k: v.detach().clone() for k, v in self.named_parameters()}


def mlp_layer_names(depth):
    return [f"weights.{i}" for i in range(depth + 1)] + [f"biases.{i}" for i in range(depth + 1)]


def init_mlp_params(seeds, sizes, n_classes, init, device, tag):
    """Fresh parameters for each seed index in `seeds` -> {name: [S, ...]}.

    init = "paper": W ~ Normal(0, 1/sqrt(d_in)), b = 0 (the official subliminal-learning script);
    init = "torch": W, b ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (nn.Linear's default).
    The output layer's first n_classes columns and its auxiliary columns come from separate streams,
    and aux column j does not depend on how many aux columns there are: so models that differ only
    in m share their hidden layers and class head exactly (and so share their teacher).
    """
    out = {f"weights.{i}": [] for i in range(len(sizes) - 1)}
    out.update({f"biases.{i}": [] for i in range(len(sizes) - 1)})
    for k in seeds:
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            parts = [(n_classes, "class"), (d_out - n_classes, "aux")] if last else [(d_out, "hidden")]
            ws, bs = [], []
            for cols, stream in parts:
                g = generator(device, tag, k, "init", i, stream)
                if init == "paper":
                    w = torch.randn(cols, d_in, generator=g, device=device).T / math.sqrt(d_in)
                    b = torch.zeros(cols, device=device)
                elif init == "torch":
                    bound = 1 / math.sqrt(d_in)
                    w = (torch.rand(cols, d_in, generator=g, device=device).T * 2 - 1) * bound
                    gb = generator(device, tag, k, "init", i, stream, "bias")  # own stream: nested in m too
                    b = (torch.rand(cols, generator=gb, device=device) * 2 - 1) * bound
                else:
                    raise ValueError(f"unknown init {init!r}: use 'paper' or 'torch'")
                ws.append(w)
                bs.append(b)
            out[f"weights.{i}"].append(torch.cat(ws, 1))
            out[f"biases.{i}"].append(torch.cat(bs)[None])
    return {k: torch.stack(v).contiguous() for k, v in out.items()}
