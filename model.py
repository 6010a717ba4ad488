"""Every model in the project.

1. `SeedMLP`: S independent MLPs stored as one model, the seed in the leading tensor dimension
   (weights [S, d_in, d_out], one batched `torch.bmm` per layer for per-seed inputs; inputs shared by every seed
   take one plain matmul against the weights laid side by side). Used for subliminal learning on MNIST.
2. `GPT`: the single-file decoder-only transformer with named hook points (its section, after SeedMLP's, lists
   them).

Nothing here knows about training.
"""
import contextlib
import difflib
import hashlib
import inspect
import math
import numbers
import operator
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def seed_int(*parts):
    """A stable 63-bit integer from any tuple of names and numbers (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def generator(device, *parts):
    """A torch.Generator on `device` seeded from `parts`: every random stream of the project derives
    from (config seed, seed index, stream name), so seed k's numbers do not depend on how many other
    seeds run beside it. (Subliminal MNIST's cross-init partners do: they are one derangement of all n_seeds, so
    seed k's cross_* students differ between runs of different n_seeds.)"""
    g = torch.Generator(device=device)
    g.manual_seed(seed_int(*parts))
    return g


# ----------------------------------------------------------------------------------------------------
# seed-batched MLP

class SeedMLP(nn.Module):
    """S independent MLPs d_in -> width x depth (ReLU) -> n_out, evaluated in one batched matmul per layer.

    Parameters are `weights.{i}` [S, d_in, d_out] and `biases.{i}` [S, 1, d_out]. `forward(x)` takes per-seed inputs
    x [S, B, d_in] or inputs shared by all seeds x [B, d_in], and returns logits [S, B, n_out]; with
    `return_hidden=True`, (logits, [each hidden layer's post-ReLU activations, S x B x width]): seed k's layer i is
    hidden[i][k], [B, width]. It has no hook points (the GPT's `hooks` is not here): to patch a layer, run the layers
    after it by hand from `weights.{j}[k]` and `biases.{j}[k]`.
    """

    def __init__(self, n_seeds, sizes):
        super().__init__()
        self.n_seeds, self.sizes = n_seeds, list(sizes)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n_seeds, a, b)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n_seeds, 1, b)) for b in sizes[1:])

    def forward(self, x, return_hidden=False):
        hidden = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):  # w [S, d_in, d_out], b [S, 1, d_out]
            if x.dim() == 2:  # shared inputs x [B, d_in] (first layer only: its output is per seed, [S, B, d_out])
                S, d_in, d_out = w.shape
                # the S weight matrices side by side, seed s in columns s*d_out .. (s+1)*d_out: one plain matmul,
                # no S copies of x
                w_side = w.permute(1, 0, 2).reshape(d_in, S * d_out)  # [d_in, S * d_out]
                x = (x @ w_side).view(-1, S, d_out).transpose(0, 1) + b  # [B, S * d_out] -> [S, B, d_out]
            else:
                x = torch.bmm(x, w).add_(b)  # [S, B, d_out]; faster on a CPU than baddbmm with a broadcast bias
            is_hidden = i < len(self.weights) - 1  # the output layer returns logits, without a ReLU
            if is_hidden:
                x = torch.relu_(x)  # in place (autograd allows it here): big fresh tensors cost page faults on a CPU
                hidden.append(x)
        return (x, hidden) if return_hidden else x

    @torch.no_grad()
    def load_seeds(self, params):
        """Copy a dict {name: [S, ...] tensor} (from `init_mlp_params` or another model) into this model."""
        # every shape checked before any copy: copy_ broadcasts, so one seed's [1, ...] tensors made S copies of it
        if bad := [f"{n}: {list(params[n].shape) if n in params else 'missing'}, not {list(p.shape)}"
                   for n, p in self.named_parameters() if n not in params or params[n].shape != p.shape]:
            raise ValueError(f"load_seeds needs this model's {self.n_seeds} seeds of sizes {self.sizes}: "
                             f"{'; '.join(bad[:3])} (init_mlp_params(range({self.n_seeds}), ...) gives them)")
        for name, p in self.named_parameters():
            p.copy_(params[name])

    def params(self):
        """The weights as a plain dict {name: tensor} (detached clones)."""
        return {k: v.detach().clone() for k, v in self.named_parameters()}


def init_mlp_params(seeds, sizes, n_classes, init, device, seed):
    """Fresh parameters for each seed index in `seeds` -> {name: [S, ...]}, from the config's `seed`.

    init = "paper": W ~ Normal(mean 0, std 1/sqrt(d_in)), b = 0 (the official subliminal-learning script);
    init = "torch": W, b ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (nn.Linear's default).
    The output layer's first n_classes columns and its auxiliary columns come from separate streams,
    and aux column j does not depend on how many aux columns there are: so models that differ only
    in m share their hidden layers and class head exactly (and so share their teacher).
    """
    out = {f"weights.{i}": [] for i in range(len(sizes) - 1)}
    out.update({f"biases.{i}": [] for i in range(len(sizes) - 1)})
    for k in seeds:
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            is_output = i == len(sizes) - 2
            # (columns, stream name) of each group of this layer's output columns, left to right
            col_groups = [(n_classes, "class"), (d_out - n_classes, "aux")] if is_output else [(d_out, "hidden")]
            ws, bs = [], []  # one [d_in, cols] weight and one [cols] bias per group
            if is_output and not 1 <= n_classes <= d_out:  # else torch.cat's "expected a non-empty list"
                raise ValueError(f"init_mlp_params: the output layer has {d_out} columns, fewer than n_classes="
                                 f"{n_classes} (sizes[-1] is the classes plus the aux logits)")
            for cols, stream in col_groups:
                if cols == 0:  # no aux logits (m = 0): an empty group has no block to draw
                    continue
                # drawn in fixed blocks of 64 columns, each block from its own stream, so that column j
                # is the same whatever the number of columns (torch's RNG output depends on tensor size)
                w_blocks, b_blocks = [], []  # [64, d_in] and [64] each, cut to `cols` below
                for blk in range(0, cols, 64):
                    g = generator(device, seed, k, "init", i, stream, blk)
                    if init == "paper":
                        w_blocks.append(torch.randn(64, d_in, generator=g, device=device) / math.sqrt(d_in))
                        b_blocks.append(torch.zeros(64, device=device))
                    elif init == "torch":
                        bound = 1 / math.sqrt(d_in)
                        w_blocks.append((torch.rand(64, d_in, generator=g, device=device) * 2 - 1) * bound)
                        b_blocks.append((torch.rand(64, generator=g, device=device) * 2 - 1) * bound)
                    else:
                        raise ValueError(f"unknown init {init!r}: use 'paper' or 'torch'")
                ws.append(torch.cat(w_blocks)[:cols].T)  # [d_in, cols]
                bs.append(torch.cat(b_blocks)[:cols])  # [cols]
            out[f"weights.{i}"].append(torch.cat(ws, 1))  # [d_in, d_out]
            out[f"biases.{i}"].append(torch.cat(bs)[None])  # [1, d_out]
    return {k: torch.stack(v).contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------
# GPT: a small decoder-only transformer whose every activation has a name
#
# Architecture. Pre-norm blocks (x + attn(ln(x)), then x + mlp(ln(x))), LayerNorm without bias,
# causal `F.scaled_dot_product_attention`, a GELU MLP mlp_ratio (default 4) times the width, no biases in linear
# layers, no dropout, and the unembedding tied to the token embedding (logits = final @ wte.T).
#
# Positions are rotary (RoPE, half-split form, base `rope_base`) on queries and keys; there is no
# position embedding. Attention scores then depend only on the distance between two tokens, so a
# left-padded prompt whose pads are masked gives the same logits as the prompt alone (up to float
# rounding): batched generation needs no per-row position ids.
#
# Init (nanoGPT's): every Linear and the embedding ~ Normal(0, init_std); the two projections that
# write into the residual stream (attn.proj, mlp.proj) ~ Normal(0, init_std / sqrt(2 * n_layer)), so
# the residual's variance does not grow with depth; LayerNorm gains 1. Init draws from an explicit
# torch.Generator on the CPU, so a seed gives the same weights on any device.
#
# Hook points. Each named activation passes through a `HookPoint`, an identity module, so its dotted
# module name is its hook name (B rows, T columns in this forward, C = n_embd, nh heads of size hs = C / nh,
# V = vocab_size, S key columns: T, or with a KV cache every column so far; not SeedMLP's S, the seeds):
#     embed                   token embeddings                    [B, T, C]
#     blocks.{i}.resid_pre    residual stream entering block i    [B, T, C]
#     blocks.{i}.attn.pattern attention probabilities             [B, nh, T, S]  (only when hooked)
#     blocks.{i}.attn.z       each head's output, before attn.proj [B, nh, T, hs] (zero a head here to ablate it)
#     blocks.{i}.attn_out     what attention adds to the residual [B, T, C]  (= attn.proj of the heads side by side)
#     blocks.{i}.mlp.hidden   the MLP's neurons, after the GELU   [B, T, mlp_ratio * C]
#     blocks.{i}.mlp_out      what the MLP adds to the residual   [B, T, C]  (= mlp.proj of the neurons)
#     blocks.{i}.resid_post   residual stream leaving block i     [B, T, C]  (= resid_pre of block i+1)
#     final                   residual after the final LayerNorm  [B, T, C]  (what the unembedding reads)
#     logits                  next-token logits                   [B, T, V]  ([k, V] when forward is given `keep`)
# A new point is one `HookPoint()` attribute, set in `__init__` in forward order, that `forward` passes the
# activation through: hook_names(), `hooks`, run_with_cache and tests/test_gpt.py's every-point tests take it up.
# List it above and in README's "Hook names", and in test_hook_names_are_the_design_names (which pins the list).
# A point before the KV cache update sees this forward's columns only, as every point does.
# A hook is `fn(tensor, name) -> tensor | None`: return a tensor to replace the activation (patching,
# steering; its shape and device, a float dtype cast to its dtype), None to leave it unchanged (reading). Hooks are
# PyTorch forward hooks on the HookPoint, attached only inside `with model.hooks({name: fn}):` and removed
# in `finally`. Blocks nest: on one point the hooks run in the order their blocks were opened (outer first), each on
# what the one before returned, so a `run_with_cache` or `inject` inside a patching block sees the patched activation.
# Everything else is built on that one mechanism: `run_with_cache` attaches hooks that
# store tensors, `inject` attaches a hook that adds vectors. With a KV cache the hooks see only the new
# columns ([B, 1, C] per decode step); `GPT.offset` is the column of their first position (but a `logits` hook under
# `generate` sees only the last column, [B, V]: column offset + T - 1, P - 1 at the prompt's forward).
# torch.compile does not see hooks attached after it traced the model, so while a `hooks` block is open
# a compiled GPT runs its forward eagerly (GPT.hooked). That is a graph break: under fullgraph=True a `hooks` block
# is dynamo's Unsupported error (at the forward under torch.compiler.disable; each torch version words it its own
# way). A hook registered by hand (register_forward_hook on a HookPoint, not through `hooks`) skips _run_hook's checks,
# and a compiled GPT runs without it.
#
# The attention pattern is never materialised by the fast path (SDPA). When `blocks.{i}.attn.pattern`
# is hooked, that layer also computes softmax(q k^T / sqrt(hs)) explicitly and passes it to the hook;
# if the hook returns a different tensor, the layer attends with it (pattern @ v) instead of using
# SDPA's output; so does a hook that edits the pattern in place. So reading patterns leaves the logits
# bit-identical, and writing them works either way. A pattern only read is not in the autograd graph (SDPA computed
# the output without it: its .grad stays None); for its gradient (attribution patching) the hook returns a copy,
# p.clone(), and the layer attends with that (the same logits up to float rounding).

@dataclass
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 128      # longest sequence (prompt + generated), the size of the RoPE tables
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4         # MLP hidden width = mlp_ratio * n_embd
    rope_base: float = 10000.0
    init_std: float = 0.02


def head_problem(n_embd, n_head):
    """Why n_embd cannot split into n_head attention heads, or None: the one check of the GPT's constructor and of
    the configs that build one (before their run directory exists)."""
    if n_head < 1:
        return f"n_head must be >= 1, got {n_head}"
    if n_embd % n_head or n_embd // n_head % 2:
        return (f"n_embd ({n_embd}) must split into n_head ({n_head}) heads of an even size (rotary positions rotate "
                f"pairs of dimensions)")
    return None


_forward_eagerly = None  # GPT.forward under torch.compiler.disable: made once, by _eager_forward


def _eager_forward():
    """GPT.forward under torch.compiler.disable, one wrapper for every call. A new wrapper at each hooked call of a
    compiled GPT (disable(self.forward) inside the forward) made torch 2.4's dynamo trace the rest of the forward again
    at each such call, as it guarded on the wrapper's identity (torch 2.15 advises against calling disable inside a
    compiled region). `hooks` makes it before the block's first trace once dynamo is loaded (a model compiled before
    the block); made here, at the first trace, it costs one more trace."""
    global _forward_eagerly
    if _forward_eagerly is None:
        _forward_eagerly = torch.compiler.disable(GPT.forward)
    return _forward_eagerly


class HookPoint(nn.Module):
    """An identity that gives an activation a name; hooks attach to it as forward hooks."""

    def forward(self, x):
        return x


def _run_hook(fn, h, name):
    """fn(h, name), checked: a replacement of another shape or device would fail deep inside the next layer instead.
    One of another float dtype (h + a float64 vector, or a float32 one under bf16 autocast) is cast to the activation's;
    one of no float dtype (a bool mask, integers, complex numbers) is refused. One made under torch.inference_mode()
    is copied when autograd is on, which may not save an inference tensor for backward."""
    try:
        out = fn(h, name)
    except Exception as e:  # the traceback shows the hook's line; the note says at which point it ran
        if hasattr(e, "add_note"):  # (Python 3.11+; the exception itself, unchanged, either way)
            e.add_note(f"(raised by the hook at {name!r}, on an activation of shape {tuple(h.shape)})")
        raise
    if out is None:  # the hook only looked
        return None
    if not isinstance(out, torch.Tensor):
        got = type(out).__name__
    elif out.shape != h.shape:
        got = tuple(out.shape)
    elif out.device != h.device:
        got = f"a tensor on {out.device}"
    elif not out.is_floating_point():  # a mask (h > 0), integers, complex: cast, 0/1, truncated, the real part
        got = f"a {out.dtype} tensor"
    else:  # a replacement the next layer can take
        # e.g. a cache taken under torch.inference_mode(): autograd cannot save an inference tensor for backward
        # (an error in the next layer, naming no hook point), but it can a copy made here
        if out.is_inference() and torch.is_grad_enabled():
            out = out.clone()
        return out if out.dtype == h.dtype else out.to(h.dtype)
    raise ValueError(f"the hook at {name!r} returned {got}: return None (just look) or a floating tensor of the "
                     f"activation's shape {tuple(h.shape)} on its device ({h.device})")


class _MustEnter:
    """model.hooks' context manager: one never entered attaches nothing, so a forgotten `with` would give unhooked
    results that look hooked. It warns when it is dropped unentered (a bare `model.hooks({...})` statement).
    It may be entered again, and nested in itself: each `with` attaches the hooks afresh (`ablate = inject(...)`, then
    `with ablate:` around two runs; a single-use context was contextlib's AttributeError "no attribute 'args'")."""

    def __init__(self, make, where):
        # make: a fresh context at each `with`; where: the caller's (file, line), for the warning
        self.make, self.open, self.entered, self.where = make, [], False, where

    def __enter__(self):
        self.entered = True
        cm = self.make()
        out = cm.__enter__()
        self.open.append(cm)  # the blocks open now, innermost last: each `__exit__` closes the latest
        return out

    def __exit__(self, *exc):
        return self.open.pop().__exit__(*exc)

    def __del__(self):
        if not self.entered:  # warned at the caller's line: a warning raised in __del__ would name this one
            warnings.warn_explicit("model.hooks(...) (or inject(...)) was never entered, so it attached nothing: "
                                   "write `with model.hooks({...}):` (`with inject(...):`) and run the model inside "
                                   "that block", RuntimeWarning, *self.where)


def _changed(now, before):
    """Whether `now` differs from its copy `before`; a NaN left where it was is no change (torch.equal says it is)."""
    return not bool(((now == before) | (now.isnan() & before.isnan())).all())


def rope_tables(head_size, n_pos, base, dtype=torch.float32):
    """cos, sin of the rotation angles pos * base^(-2j/hs): [n_pos, hs/2] each, computed in float64. A float64 model's
    are those; any other dtype's go through float32 (rounded once, then cast: the tables float32 and bf16 models have
    always had, bit for bit)."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # [hs/2]
    angles = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv_freq[None]  # [T, hs/2]
    cos, sin = angles.cos(), angles.sin()
    if dtype == torch.float64:
        return cos, sin
    return cos.float().to(dtype), sin.float().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate each (x_j, x_{j+hs/2}) pair of x [B, nh, T, hs] by its angle; cos, sin [T, hs/2]."""
    # q and k come as transposed views of the qkv output, whose strides cannot merge: on a CPU the elementwise ops
    # below cost about twice over them what they cost over a contiguous copy (the result is the same, bit for bit)
    x1, x2 = x.contiguous().chunk(2, dim=-1)  # [B, nh, T, hs/2] each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # keep bf16 under autocast
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # [B, nh, T, hs]


class KVCache:
    """Keys and values of every layer for the columns processed so far, for incremental decoding.
    `pos` is the number of columns filled: GPT.forward advances it by T once every layer has written the same T
    columns (update does not); `valid` [B, max_len] marks which key columns are real tokens."""

    def __init__(self, cfg, batch_size, max_len, device):
        self.shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, cfg.n_embd // cfg.n_head)  # [L, B, nh, max_len, hs]
        self.k = self.v = None  # allocated at the first write, in the dtype of the keys (bf16 under autocast)
        self.valid = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        self.pos = 0

    def update(self, layer, k, v):
        """Store k, v [B, nh, T, hs] at columns pos..pos+T; return all keys, values so far [B, nh, pos+T, hs]."""
        if self.k is None:
            self.k = torch.zeros(self.shape, dtype=k.dtype, device=k.device)
            self.v = torch.zeros(self.shape, dtype=v.dtype, device=v.device)
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.layer, self.n_head = layer, cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.pattern = HookPoint()
        self.z = HookPoint()

    def forward(self, x, cos, sin, attn_mask, cache):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # [B, T, C] each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # [B, nh, T, hs]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # [B, nh, S, hs], S = columns so far
        # attn_mask None means plain causal attention over T == S columns (training, scoring)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None)  # [B, nh, T, hs]
        if self.pattern._forward_hooks:  # someone asked for the pattern: compute it explicitly
            # which keys each query may read: attn_mask [B, 1, T, S], or causal [T, T]
            allowed = attn_mask if attn_mask is not None else torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # [B, nh, T, S]
            att = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # [B, nh, T, S]
            # softmax's backward reads its output: under autograd the hook gets a copy, so it may edit in place
            att = att.clone() if att.requires_grad else att
            # a hook may also edit the pattern in place (and return it, or None): seen by the version counter, or,
            # for an inference tensor (which has none), by a copy (NaN == NaN there: a NaN row is no edit)
            before = att.clone() if att.is_inference() else att._version  # a copy, or the version number
            hooked = self.pattern(att)  # att itself when the hook returned None or att
            edited = _changed(att, before) if att.is_inference() else att._version != before
            if hooked is not att or edited:  # a hook replaced or edited the pattern: attend with it
                y = hooked.to(v.dtype) @ v  # [B, nh, T, hs]
        # SDPA's backward reads its output too: under autograd a hook at z gets a copy, so it may edit in place
        # (e.g. zero a head while training)
        y = self.z(y.clone() if y.requires_grad and self.z._forward_hooks else y)  # [B, nh, T, hs], each head's output
        y = y.transpose(1, 2).reshape(B, T, C)  # [B, T, C]
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)
        self.hidden = HookPoint()

    def forward(self, x):
        return self.proj(self.hidden(F.gelu(self.fc(x))))  # [B, T, C] from the neurons [B, T, mlp_ratio * C]


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.resid_pre = HookPoint()  # modules in forward order, so hook_names() lists them in that order
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = Attention(cfg, layer)
        self.attn_out = HookPoint()
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.mlp = MLP(cfg)
        self.mlp_out = HookPoint()
        self.resid_post = HookPoint()

    def forward(self, x, cos, sin, attn_mask, cache):
        x = self.resid_pre(x)  # [B, T, C]
        x = x + self.attn_out(self.attn(self.ln_1(x), cos, sin, attn_mask, cache))
        x = x + self.mlp_out(self.mlp(self.ln_2(x)))
        return self.resid_post(x)  # [B, T, C]


class GPT(nn.Module):
    """Decoder-only transformer. `model(idx)` -> logits [B, T, V]; `model(idx, targets=y)` -> per-token
    cross-entropy [B, T] (float32), computed inside forward so that torch.compile fuses it with the
    unembedding. See the section comment above for positions, init and hook points. The weights are drawn from
    `generator` (a torch.Generator), or from seed 0 without one: two GPTs built alike are equal."""

    def __init__(self, cfg, generator=None):
        super().__init__()
        if problem := head_problem(cfg.n_embd, cfg.n_head):
            raise ValueError(problem)
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
        self.final = HookPoint()
        self.logits = HookPoint()
        # float64 when the weights are (torch's default dtype float64), else float32; `_apply` keeps them in the
        # weights' dtype
        f64 = torch.get_default_dtype() == torch.float64
        cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_base,
                               torch.float64 if f64 else torch.float32)
        self.register_buffer("cos", cos, persistent=False)  # [block_size, hs/2]; not saved: a function of cfg
        self.register_buffer("sin", sin, persistent=False)
        self.offset = 0  # column of the current forward's first position (nonzero only when decoding with a KV cache)
        self.n_hooked = 0  # `hooks` blocks open
        # whether any is: torch.compile guards on it (not on the hooks themselves); a bool, as a guard on n_hooked
        # traced the forward again at every new nesting depth
        self.hooked = False
        self.init_weights(generator)

    def _apply(self, fn, *args, **kwargs):  # (torch >= 2.1 passes `recurse`)
        """Module.to / .double() / .bfloat16() ...: when they change the RoPE tables' dtype, the tables are made again
        in it by rope_tables. A cast alone gave a .double() model float32's tables widened (its logits exact to ~1e-7
        only); any other dtype gets what a cast of the float32 tables gives, whatever casts came before."""
        was = self.cos.dtype
        super()._apply(fn, *args, **kwargs)
        if self.cos.dtype != was:
            hs = self.cfg.n_embd // self.cfg.n_head
            cos, sin = rope_tables(hs, self.cfg.block_size, self.cfg.rope_base, self.cos.dtype)
            self.cos, self.sin = cos.to(self.cos.device), sin.to(self.sin.device)
        return self

    @torch.no_grad()
    def init_weights(self, generator=None):
        if self.wte.weight.is_meta:  # built under torch.device("meta") to read shapes only
            return
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # writes into the residual stream
                p.copy_(torch.randn(p.shape, generator=g) * (std / math.sqrt(2 * self.cfg.n_layer)))
            elif p.dim() == 2:  # qkv, mlp.fc, wte
                p.copy_(torch.randn(p.shape, generator=g) * std)
            else:  # LayerNorm gains
                p.fill_(1.0)

    def unembed(self, x):
        """A residual-stream activation x [..., C] -> logits [..., V]: the final LayerNorm and the tied unembedding,
        as the forward applies them after the last block (bit for bit), without running the `final` and `logits` hook
        points. Given an earlier layer's resid_post it is the logit lens: what that layer would predict if it were
        the last."""
        return F.linear(self.ln_f(x), self.wte.weight)

    def n_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, T):
        """Training FLOPs per token (forward + backward), as nanoGPT counts them: 6 per parameter
        plus 12 * n_layer * n_embd * T for the attention scores and their weighted sum."""
        return 6 * self.n_params() + 12 * self.cfg.n_layer * self.cfg.n_embd * T

    def forward(self, idx, mask=None, cache=None, targets=None, keep=None):
        """idx [B, T] token ids. mask [B, T] bool, False at padding (only needed for left padding;
        right padding is invisible to real tokens under causal attention). cache: a KVCache, which this
        call extends by T columns. targets [B, T]: return per-token losses instead of logits.
        keep [B, T] bool: unembed only those k positions (row-major order) and return logits [k, V] or
        losses [k]; a fine-tune that trains a few positions per row skips most of the unembedding. keep may
        also be a slice of columns, the same in every row (generate's slice(-1, None): [B, V]); a slice needs
        no count of the kept positions, so on a GPU it does not wait for the device as a mask does."""
        if self.hooked and torch.compiler.is_compiling():
            # a compiled graph would silently skip hooks attached after it was traced (or keep the ones it was traced
            # with): with hooks on, torch.compile(model) runs this forward eagerly, so every hook runs as it would.
            # (Wrapped when first needed, not as a decorator: `torch.compiler.disable` imports dynamo, 2 s at every
            # import of model)
            return _eager_forward()(self, idx, mask, cache, targets, keep)
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:  # else "not enough values to unpack" on the next line
            got = f"shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor) else f"a {type(idx).__name__}"
            raise ValueError(f"idx must be a [B, T] tensor of token ids, got {got}: one sequence is "
                             f"torch.tensor([ids]), several of different lengths data.tokenizer.pad_right(rows)[0]")
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:  # else torch's "indices" error
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}: .long() a float tensor only if "
                             f"it holds whole ids")
        B, T = idx.shape
        if keep is not None and not isinstance(keep, slice) and getattr(keep, "dtype", None) != torch.bool:
            # an integer 0/1 mask indexed rows: x[keep] gathered whole rows 0 and 1 ([B, T, T, C]), silently
            raise ValueError(f"keep must be a bool mask [B, T] (True at the positions to unembed) or a slice of "
                             f"columns, got {getattr(keep, 'dtype', type(keep).__name__)}: .bool() a 0/1 mask")

        # positions: this forward reads columns t0 .. t0 + T - 1 of the sequence (t0 > 0: the columns already cached)
        t0 = cache.pos if cache is not None else 0
        if t0 + T > self.cfg.block_size:
            raise ValueError(f"sequence of {t0 + T} tokens is longer than block_size={self.cfg.block_size} (the "
                             f"model's RoPE tables): pass at most the last {self.cfg.block_size} tokens, or use a "
                             f"model of a larger block_size")
        self.offset = t0
        cos, sin = self.cos[t0:t0 + T], self.sin[t0:t0 + T]  # [T, hs/2]

        # the attention mask, [B, 1, T, S]; None (no cache, no padding: training, scoring) is plain causal attention
        if cache is not None and mask is not None:
            cache.valid[:, t0:t0 + T] = mask  # later decode steps pass no mask: the cache remembers the pads
        key_ok = cache.valid[:, :t0 + T] if cache is not None else mask  # [B, S], False at padding; or None
        attn_mask = None
        if key_ok is not None:
            q_pos = torch.arange(t0, t0 + T, device=idx.device)[:, None]  # [T, 1]
            k_pos = torch.arange(t0 + T, device=idx.device)[None, :]  # [1, S]
            # query i reads key j <= i that is a real token; it always reads its own key, so that a padding
            # query's softmax row is not all -inf (NaN)
            attn_mask = ((k_pos <= q_pos) & (key_ok[:, None, :] | (k_pos == q_pos)))[:, None]  # [B, 1, T, S]

        # the transformer
        try:
            x = self.embed(self.wte(idx))  # [B, T, C]
        except IndexError:  # a CPU lookup past the table: torch's "index out of range in self" names no id
            bad = idx[(idx < 0) | (idx >= self.cfg.vocab_size)].unique()[:5].tolist()  # (CUDA: a device assert)
            raise ValueError(f"token ids {bad} are outside the model's vocabulary 0 .. {self.cfg.vocab_size - 1}: "
                             f"encode with the tokenizer saved beside its checkpoint") from None
        for block in self.blocks:
            x = block(x, cos, sin, attn_mask, cache)  # [B, T, C]
        x = self.final(self.ln_f(x))  # [B, T, C]

        # unembed (only the kept positions, if `keep`), then the losses if there are targets
        if isinstance(keep, slice):
            x = x[:, keep].flatten(0, 1)  # [k, C], k = B * kept columns
            targets = None if targets is None else targets[:, keep].flatten()  # [k]
        elif keep is not None:
            x = x[keep]  # [k, C]
            targets = None if targets is None else targets[keep]  # [k]
        logits = self.logits(F.linear(x, self.wte.weight))  # [B, T, V] (or [k, V])
        if cache is not None:
            cache.pos += T
        if targets is None:
            return logits
        return F.cross_entropy(upcast(logits).flatten(0, -2), targets.flatten(), reduction="none").view(targets.shape)

    # --- hooks --------------------------------------------------------------------------------------

    def hook_names(self):
        return [name for name, m in self.named_modules() if isinstance(m, HookPoint)]

    def hook_point(self, name):
        module = dict(self.named_modules()).get(name)
        if not isinstance(module, HookPoint):
            names = self.hook_names()
            close = difflib.get_close_matches(str(name), names, n=1)  # a typo: the name it likely meant
            # the valid names by their pattern, each block's points once (listed out, a deep model's is a screenful)
            in_block = "|".join(dict.fromkeys(n.split(".", 2)[2] for n in names if n.startswith("blocks.")))
            blocks = f"blocks.{{i}}.({in_block}) for i in 0..{len(self.blocks) - 1}"
            valid = dict.fromkeys(blocks if n.startswith("blocks.") else n for n in names)
            raise KeyError(f"no hook point named {name!r}.{f' Did you mean {close[0]!r}?' if close else ''} "
                           f"Valid names: {', '.join(valid)}")
        return module

    def hooks(self, fns):
        """`with model.hooks({name: fn, ...}):` attach fn(tensor, name) -> tensor | None at each named
        point for the duration of the block; they are removed on exit, also after an exception. Without the `with`
        nothing is attached (a RuntimeWarning says so, at the line outside this file that asked for the hooks)."""
        caller = sys._getframe(1)
        while caller.f_code.co_filename == __file__ and caller.f_back is not None:  # inject's caller, not inject
            caller = caller.f_back
        return _MustEnter(lambda: self._hooks(fns), (caller.f_code.co_filename, caller.f_lineno))

    @contextlib.contextmanager
    def _hooks(self, fns):
        if not isinstance(fns, Mapping):  # a list of (name, fn) pairs, or of names, was an AttributeError on .items
            raise TypeError(f"model.hooks takes a dict {{name: fn(tensor, name)}}, got a {type(fns).__name__}: "
                            f"e.g. model.hooks({{'blocks.0.mlp_out': lambda h, name: None}})")
        handles, counted = [], bool(fns)  # an empty block (callers pass `hooks or {}`) keeps the compiled graph
        self.n_hooked += counted
        self.hooked = self.n_hooked > 0
        if counted and "torch._dynamo" in sys.modules:  # a GPT may be compiled: its eager forward, before any trace
            _eager_forward()
        try:
            for name, fn in fns.items():
                point = self.hook_point(name)
                if not callable(fn):  # else a TypeError at the first forward, naming nothing
                    raise TypeError(f"the hook for {name!r} is a {type(fn).__name__}, not a function fn(tensor, name)")
                try:  # a hook of one argument (lambda h: ...) was Python's bare TypeError there too
                    inspect.signature(fn).bind(None, name)
                except TypeError:
                    raise TypeError(f"the hook for {name!r} takes {inspect.signature(fn)}: it is called as "
                                    f"fn(tensor, name) (e.g. lambda h, name: ...)") from None
                except ValueError:  # no signature to read (some builtins): called as it is
                    pass
                handles.append(point.register_forward_hook(
                    lambda mod, args, out, fn=fn, name=name: _run_hook(fn, out, name)))
            yield self
        finally:
            self.n_hooked -= counted
            self.hooked = self.n_hooked > 0
            for h in handles:
                h.remove()

    def run_with_cache(self, idx, names=None, **kwargs):
        """Forward once and return (logits, {name: activation}) for the requested hook names (None:
        all of them, attention patterns included); given targets=, the per-token losses in place of the logits.
        Logits equal the plain forward bit for bit. Each cached tensor
        is a copy taken at its point, so an in-place edit by a later hook does not reach it (embed and
        blocks.0.resid_pre, or resid_post and the next block's resid_pre, are one tensor in the forward); with
        gradients on, the copies keep their graph: run under torch.no_grad() unless you want it. A copy is off the
        forward's path, so the gradient of a loss on the logits never reaches it (.grad stays None): for that, a
        hook that calls t.retain_grad() and keeps t (README, "The transformer")."""
        names = self.hook_names() if names is None else [names] if isinstance(names, str) else list(names)
        cache = {}

        def store(t, name):
            cache[name] = t.clone()

        with self.hooks({n: store for n in names}):
            logits = self(idx, **kwargs)
        return logits, cache

    # --- sampling -----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, *, temperature=1.0, top_k=None, eos_id=None, pad_id=0,
                 generator=None, use_cache=True):
        """Sample continuations for a batch of prompts (lists of token ids, any lengths >= 1). A [B, P] tensor is
        B prompts of P tokens each: padding inside it is read as prompt tokens, so pass lists to mix lengths.

        The prompts are LEFT-padded with pad_id into one [B, P] batch, so every row's next token lands in
        the same column; padded keys are masked, and with rotary positions each row gets the same logits
        as its prompt alone. temperature 0 is greedy (argmax); top_k keeps the k likeliest tokens (and any
        tied with the k-th); draws come from `generator` (a CPU one, or one on the model's device), so a
        seeded generator gives the same samples. A row stops after emitting eos_id (an id, or a list of ids: any of them
        ends the row); the loop ends when every row has stopped or after max_new_tokens.
        use_cache=False re-runs the whole sequence at every step (the reference for the KV cache). Under hooks the two
        agree when a hook patches by column (GPT.offset) or every column alike: with the cache a column is hooked once
        and kept patched, without it every column is hooked again at every step (h[:, -1] patches every generated
        column with the cache, only the newest without).
        Only each row's last column is unembedded, so a hook at `logits` sees [B, V] at every step.
        Compiled: `torch.compile(model).generate` is this method of the module itself, whose forwards run uncompiled;
        `model.compile()` compiles the module in place, and then they are compiled.
        Returns a list of lists: each row's new tokens, eos included when emitted."""
        # the arguments, checked (each error names what to do instead of failing inside the forward)
        device = self.wte.weight.device
        if isinstance(prompts, torch.Tensor):  # [B, P]: one copy to the CPU, not one sync per token checked below
            prompts = prompts.tolist()
        if isinstance(prompts, (str, bytes)) or any(isinstance(p, (str, bytes)) for p in prompts):
            # (a string has a length too: its characters were read as ids, "invalid literal for int(): '<'")
            raise ValueError("generate takes token ids, not text: encode each prompt with the model's tokenizer "
                             "first, [tok.encode(text).ids for text in texts]")
        if not all(hasattr(p, "__len__") for p in prompts):
            raise ValueError("generate takes a list of prompts, each a list of token ids: wrap a single prompt as "
                             "[prompt]")
        if len(prompts) == 0 or min(len(p) for p in prompts) < 1:
            raise ValueError("generate needs at least one prompt, and every prompt at least one token")
        prompts = [token_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]  # a float 1.9 is refused, not id 1
        whole = lambda v: not isinstance(v, bool) and isinstance(v, numbers.Integral)
        if not (whole(max_new_tokens) and (top_k is None or whole(top_k)) and not isinstance(temperature, bool)
                and isinstance(temperature, numbers.Real)):  # else a TypeError from inside torch, naming neither
            raise ValueError(f"max_new_tokens must be an int, temperature a number and top_k an int or None; got "
                             f"{max_new_tokens!r}, {temperature!r}, {top_k!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r} (a seed? "
                             f"torch.Generator(device).manual_seed(seed))")
        if bad := sorted({t for p in prompts for t in p if not 0 <= t < self.cfg.vocab_size}):  # (ints by now)
            raise ValueError(f"prompt token ids {bad[:5]} are outside the model's vocabulary 0 .. "
                             f"{self.cfg.vocab_size - 1}: encode prompts with the tokenizer saved beside its "
                             f"checkpoint")
        bad_top_k = top_k is not None and top_k < 1
        if max_new_tokens < 0 or temperature < 0 or bad_top_k:
            raise ValueError(f"max_new_tokens must be >= 0, temperature >= 0 (0: greedy) and top_k >= 1 or None; got "
                             f"{max_new_tokens}, {temperature}, {top_k}")
        B, P = len(prompts), max(len(p) for p in prompts)
        if P + max_new_tokens > self.cfg.block_size:
            raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"block_size={self.cfg.block_size}: ask for at most {max(self.cfg.block_size - P, 0)} new "
                             f"tokens, or shorten the longest prompt")

        # the prompts, left-padded into one batch: every row's last prompt token is column P - 1
        idx = torch.full((B, P), pad_id, dtype=torch.long, device=device)  # [B, P]
        mask = torch.zeros(B, P, dtype=torch.bool, device=device)  # [B, P], True at real tokens
        for i, p in enumerate(prompts):
            idx[i, P - len(p):] = torch.as_tensor(p, dtype=torch.long, device=device)
            mask[i, P - len(p):] = True
        if mask.all():
            mask = None  # no padding: plain causal attention

        # the decoding loop: one forward and one sampled token per row per step
        cache = KVCache(self.cfg, B, P + max_new_tokens, device) if use_cache else None
        done = torch.zeros(B, dtype=torch.bool, device=device)  # [B], rows that have emitted a stop token
        stops = None if eos_id is None else token_ids(eos_id, "eos_id")  # a list of ints
        if stops is not None and (bad := [t for t in stops if not 0 <= t < self.cfg.vocab_size]):
            # never sampled: every row ran to max_new_tokens, as if no end token had been asked for
            raise ValueError(f"eos_id {bad[:5]} outside the model's vocabulary 0 .. {self.cfg.vocab_size - 1}: "
                             f"a row would never stop (the tokenizer's tok.token_to_id('<eos>'))")
        stops_on_device = None if stops is None else torch.tensor(stops, dtype=torch.long, device=device)
        new, x = [], idx  # x: what the next forward reads (all columns without a cache, new ones with it)
        try:
            for _ in range(max_new_tokens):
                # unembed the last column only: the prompt's other columns would be thrown away
                logits = upcast(self(x, mask=mask, cache=cache, keep=slice(-1, None)))  # [B, V]
                nxt = sample_next(logits, temperature, top_k, generator)  # [B]
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)  # a stopped row emits pads, cut below
                new.append(nxt)
                if stops is not None:
                    done = done | torch.isin(nxt, stops_on_device)
                if use_cache:
                    x, mask = nxt[:, None], None  # [B, 1]; the cache remembers which old keys are padding
                else:
                    x = torch.cat([x, nxt[:, None]], 1)  # [B, T + 1]
                    mask = None if mask is None else torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                if stops is not None and bool(done.all()):
                    break
        finally:
            self.offset = 0  # nonzero only while decoding with a cache, also when a hook raised mid-loop

        # each row's new tokens, up to and including its first stop token (the pads after it cut)
        out = torch.stack(new, 1).tolist() if new else [[] for _ in range(B)]  # [B, n_new]
        if stops is not None:
            out = [row[:next((i + 1 for i, t in enumerate(row) if t in stops), len(row))] for row in out]
        return out


def upcast(logits):
    """Logits in at least float32 for a softmax or a loss: bf16 ones (autocast) upcast, a float64 model's kept
    (.float() would round them to float32)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def token_ids(ids, what="ids"):
    """A token id or a collection of them (Python or numpy ints, integer tensors, a list, a set) -> a list of Python
    ints; anything else (a float, a string, a bool: True is not id 1) is a ValueError rather than an id cut from it."""
    # a Python, numpy or torch bool; a list of a mask's elements, list(mask), holds 0-d bool tensors, which
    # operator.index would make ids 0 and 1
    is_bool = lambda t: isinstance(t, bool) or str(getattr(t, "dtype", "")) in ("torch.bool", "bool")
    if is_bool(ids) or (isinstance(ids, (list, tuple, set)) and any(is_bool(t) for t in ids)):
        raise ValueError(f"{what} must be a token id or a collection of token ids (integers); got booleans {ids!r} "
                         f"(a mask? its ids are mask.nonzero())")
    try:
        return [operator.index(ids)]
    except TypeError:
        pass
    try:
        return [operator.index(t) for t in (ids.reshape(-1) if hasattr(ids, "reshape") else ids)]
    except TypeError:
        raise ValueError(f"{what} must be a token id or a collection of token ids (integers); got {ids!r}") from None


def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    """One token per row from logits [B, V] -> [B]."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)  # [B, V]
    if generator is not None and generator.device != probs.device:  # e.g. a CPU generator for a CUDA model
        return torch.multinomial(probs.to(generator.device), 1, generator=generator)[:, 0].to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def injection_hook(positions, vectors, offset, detach_norm=False):
    """A hook that adds, at each (row, position), the vector scaled to the residual's norm there:
    h <- h + ||h|| * v / ||v|| (the activation-oracle injection; a zero vector adds nothing). ||h|| is the norm
    before this hook: a position given twice gets both vectors at that one scale (two nested inject blocks instead
    scale the inner one to the norm the outer one left). detach_norm: no gradient through ||h|| (Karvonen et al.'s
    training code detaches it; the forward is the same).
    positions: [B, K] columns (or [K], the same for every row); vectors: [B, K, C], [K, C] or [C].
    `offset()` is the column of the hooked tensor's first position (GPT.offset when decoding with a
    KV cache), so positions are always columns of the full sequence."""
    def fn(h, name):  # h [B, T, C]
        B, T, C = h.shape
        pos = torch.as_tensor(positions, device=h.device)
        vec = torch.as_tensor(vectors, device=h.device, dtype=h.dtype)
        # per-row positions or vectors for another batch size failed in `expand`, naming neither argument
        pos_rows_wrong = pos.dim() == 2 and pos.shape[0] != B
        vec_rows_wrong = vec.dim() == 3 and vec.shape[0] not in (1, B)
        if pos_rows_wrong or vec_rows_wrong:
            raise ValueError(f"inject: positions [B, K] and vectors [B, K, C] need one row per row of the batch (B = "
                             f"{B}), got positions of shape {tuple(pos.shape)} and vectors of {tuple(vec.shape)}")
        pos = (pos if pos.dim() == 2 else pos.expand(B, -1)) - offset()  # [B, K] columns of this forward
        vec = vec.expand(B, pos.shape[1], C)  # [B, K, C]
        rows = torch.arange(B, device=h.device)[:, None].expand_as(pos)  # [B, K]
        inside = (pos >= 0) & (pos < T)  # [B, K], positions among this forward's columns (a decode step has one)
        if not bool(inside.any()):
            return None
        rows, pos, vec = rows[inside], pos[inside], vec[inside]  # [N], [N], [N, C]
        unit = vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-30)  # [N, C], zero stays zero
        norm = h[rows, pos].norm(dim=-1, keepdim=True)  # [N, 1]
        add = (norm.detach() if detach_norm else norm) * unit  # [N, C]
        return h.index_put((rows, pos), add, accumulate=True)  # [B, T, C], out of place
    return fn


INJECT_SITES = ("resid_pre", "attn_out", "mlp_out", "resid_post")  # the block's [B, T, C] points


def inject(model, layer, positions, vectors, site="resid_post", detach_norm=False):
    """Context manager: inject vectors into the residual stream of block `layer` (its output by
    default, `site="resid_pre"` for its input; any [B, T, C] point of the block, e.g. "attn_out") at the given
    positions, on every forward inside the block:
        with inject(model, 1, positions, vectors):
            logits = model(idx)
    The activation oracle of Karvonen et al. injects after block 1: inject(model, 1, ...). Positions are
    columns 0 .. block_size - 1; one not reached by a forward (a later decode step's) adds nothing there.
    detach_norm=True: no gradient flows through the residual's norm ||h|| (the paper's training; see injection_hook)."""
    n_layer = model.cfg.n_layer
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= layer < n_layer:
        # (-1, "the last block", was a KeyError suggesting blocks.1: hook names count from 0)
        raise ValueError(f"inject: layer must be a block, 0 .. {n_layer - 1}, got {layer!r}")
    if site not in INJECT_SITES:  # another point's shape ([B, nh, T, hs], [B, T, 4C]) failed deep inside the hook
        raise ValueError(f"inject: site must be one of the block's [B, T, C] points {', '.join(INJECT_SITES)}, got "
                         f"{site!r}; write a hook of your own (model.hooks) for any other point")
    try:
        pos = torch.as_tensor(positions)
    except (ValueError, TypeError):  # rows of different lengths: torch's "expected sequence of length 1 at dim 1"
        pos = None
    not_ints = pos is not None and pos.numel() and (pos.is_floating_point() or pos.dtype == torch.bool)
    if pos is None or pos.dim() not in (1, 2) or not_ints:
        # (else an IndexError or a failed `expand` at the first forward, inside the hook)
        raise ValueError(f"inject: positions must be integer columns, [K] for every row or [B, K] with K in every row "
                         f"(give a row's spare columns a zero vector: it adds nothing), got "
                         f"{positions if pos is None else f'{pos.dtype} of shape {tuple(pos.shape)}'}")
    if pos.numel() and not (0 <= int(pos.min()) and int(pos.max()) < model.cfg.block_size):
        # a negative one would otherwise never match a column: -1 for "the last token" silently added nothing
        raise ValueError(f"inject: positions must be columns 0 .. {model.cfg.block_size - 1} of the sequence, got "
                         f"{pos.min().item()} .. {pos.max().item()}; they are columns of the batch as the model sees "
                         f"it: in generate's left-padded batch every row's last prompt token is column P - 1 (P: the "
                         f"longest prompt), in a right-padded one row i's is its length - 1")
    vec = torch.as_tensor(vectors)
    if vec.dim() == 0 or vec.shape[-1] != model.cfg.n_embd:  # else a bare broadcast error at the first forward
        raise ValueError(f"inject: vectors must end in the residual width n_embd={model.cfg.n_embd} ([C], [K, C] or "
                         f"[B, K, C]), got shape {tuple(vec.shape)}")
    k_wrong = vec.dim() >= 2 and vec.shape[-2] not in (1, pos.shape[-1])  # K must be one vector per position (or 1)
    if vec.dim() > 3 or k_wrong:
        raise ValueError(f"inject: vectors must be [C], [K, C] or [B, K, C] with K = {pos.shape[-1]}, the number of "
                         f"positions per row; got shape {tuple(vec.shape)}")
    return model.hooks({f"blocks.{layer}.{site}": injection_hook(positions, vectors, lambda: model.offset,
                                                                 detach_norm)})
