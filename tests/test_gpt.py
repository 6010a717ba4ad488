"""The GPT of model.py: causality, hook points, caching, patching, injection, generation, scoring, tokenizer.

    python -m pytest tests/test_gpt.py -q
"""
import contextlib
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data import DataError
from data.tokenizer import load_tokenizer, pad_right, save_tokenizer, token_stream, word_tokenizer
from eval import encode, score_continuations
from model import GPT, GPTConfig, KVCache, apply_rope, inject, injection_hook, rope_tables, sample_next, upcast

V = 23


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-core shared machines: one thread avoids stalls
    yield
    torch.set_num_threads(n)


def tiny(init_std=0.02, **kw):
    cfg = GPTConfig(**{"vocab_size": V, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16, "init_std": init_std,
                       **kw})
    return GPT(cfg, generator=torch.Generator().manual_seed(0)).eval()


def tokens(B, T, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def n_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hook_names_are_the_design_names():
    names = tiny().hook_names()
    per_block = ["resid_pre", "attn.pattern", "attn.z", "attn_out", "mlp.hidden", "mlp_out", "resid_post"]
    assert names == ["embed"] + [f"blocks.{i}.{n}" for i in range(2) for n in per_block] + ["final", "logits"]


@torch.no_grad()
def test_causality_future_tokens_never_change_earlier_logits():
    model, idx = tiny(), tokens(3, 20)
    for k in (1, 7, 19):
        other = idx.clone()
        other[:, k:] = tokens(3, 20 - k, seed=k + 10)
        assert torch.equal(model(idx)[:, :k], model(other)[:, :k])
        assert not torch.equal(model(idx)[:, k:], model(other)[:, k:])


@torch.no_grad()
def test_run_with_cache_logits_bit_identical_and_only_requested_names():
    model, idx = tiny(), tokens(2, 12)
    plain = model(idx)
    logits, cache = model.run_with_cache(idx, ["blocks.1.mlp_out", "final"])
    assert torch.equal(logits, plain) and set(cache) == {"blocks.1.mlp_out", "final"}
    logits, cache = model.run_with_cache(idx)  # everything, attention patterns included
    assert torch.equal(logits, plain) and set(cache) == set(model.hook_names())
    assert torch.equal(cache["logits"], plain)
    assert torch.equal(cache["embed"], cache["blocks.0.resid_pre"])
    for i in range(model.cfg.n_layer - 1):
        assert torch.equal(cache[f"blocks.{i}.resid_post"], cache[f"blocks.{i + 1}.resid_pre"])
    for i in range(model.cfg.n_layer):  # the residual stream is the sum of what writes into it
        c = lambda n: cache[f"blocks.{i}.{n}"]
        torch.testing.assert_close(c("resid_post"), c("resid_pre") + c("attn_out") + c("mlp_out"))
        # and what attention and the MLP write is their projection of the heads' outputs and of the neurons
        block, (B, nh, T, hs) = model.blocks[i], c("attn.z").shape
        torch.testing.assert_close(c("attn_out"), block.attn.proj(c("attn.z").transpose(1, 2).reshape(B, T, nh * hs)))
        torch.testing.assert_close(c("mlp_out"), block.mlp.proj(c("mlp.hidden")))
        assert c("mlp.hidden").shape == (B, T, model.cfg.mlp_ratio * model.cfg.n_embd)
    assert n_hooks(model) == 0


@torch.no_grad()
def test_ablating_a_head_removes_its_share_of_attn_out_only():
    model, idx = tiny(init_std=0.3), tokens(2, 9)
    _, cache = model.run_with_cache(idx, ["blocks.1.attn.z", "blocks.1.attn_out", "blocks.0.resid_post"])
    z = cache["blocks.1.attn.z"]  # [B, nh, T, hs]
    hs = z.shape[-1]
    w = model.blocks[1].attn.proj.weight  # [C, nh * hs]: head h reads columns h*hs..(h+1)*hs

    def drop_head(t, name):
        t = t.clone()
        t[:, 1] = 0
        return t
    with model.hooks({"blocks.1.attn.z": drop_head}):
        ablated, after = model.run_with_cache(idx, ["blocks.1.attn_out", "blocks.0.resid_post"])
    assert torch.equal(after["blocks.0.resid_post"], cache["blocks.0.resid_post"])  # upstream untouched
    head1 = z[:, 1] @ w[:, hs:2 * hs].T  # [B, T, C]: what head 1 wrote
    torch.testing.assert_close(after["blocks.1.attn_out"], cache["blocks.1.attn_out"] - head1)
    assert head1.abs().max() > 1e-3 and not torch.allclose(ablated, model(idx))


@torch.no_grad()
def test_a_read_pattern_is_the_softmax_the_heads_attended_with_and_a_zeroed_head_its_proj_columns_zeroed():
    # what a study reads at attn.pattern must be the attention SDPA computed (softmax of the rotated q k^T / sqrt(hs),
    # causal), the one whose weighted values are attn.z; ablating head h at attn.z is zeroing its input columns of
    # attn.proj (head-pruning studies use the two interchangeably)
    model, idx = tiny(init_std=0.3), tokens(2, 9)
    plain, cache = model.run_with_cache(idx)
    B, T, C, nh, hs = 2, 9, 16, 2, 8
    for i, block in enumerate(model.blocks):
        qkv = block.attn.qkv(block.ln_1(cache[f"blocks.{i}.resid_pre"])).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in qkv)  # [B, nh, T, hs]
        q, k = apply_rope(q, model.cos[:T], model.sin[:T]), apply_rope(k, model.cos[:T], model.sin[:T])
        scores = (q @ k.transpose(-2, -1) / math.sqrt(hs)).masked_fill(torch.ones(T, T).triu(1).bool(), -math.inf)
        torch.testing.assert_close(cache[f"blocks.{i}.attn.pattern"], scores.softmax(-1))
        torch.testing.assert_close(cache[f"blocks.{i}.attn.pattern"] @ v, cache[f"blocks.{i}.attn.z"])
        for h in range(nh):
            with model.hooks({f"blocks.{i}.attn.z": lambda z, n: z.index_fill(1, torch.tensor([h]), 0.0)}):
                ablated = model(idx)
            w = block.attn.proj.weight  # [C, nh * hs]
            saved = w.clone()
            w[:, h * hs:(h + 1) * hs] = 0
            try:
                torch.testing.assert_close(ablated, model(idx))
            finally:
                w.copy_(saved)
            assert not torch.allclose(ablated, plain)


@torch.no_grad()
def test_keep_unembeds_only_the_kept_positions():
    """forward(keep=mask) returns the kept positions' logits (and losses) in row-major order, as the full
    forward's do up to float rounding, and the logits hook sees the [k, V] it computes."""
    model, idx, y = tiny(), tokens(3, 10), tokens(3, 10, seed=2)
    keep = torch.rand(3, 10, generator=torch.Generator().manual_seed(3)) < 0.4
    full, loss = model(idx), model(idx, targets=y)
    seen = []
    with model.hooks({"logits": lambda t, name: seen.append(t.shape)}):
        part = model(idx, keep=keep)
    assert part.shape == (int(keep.sum()), V) and seen == [part.shape]
    assert torch.allclose(part, full[keep], atol=1e-5)
    assert torch.allclose(model(idx, targets=y, keep=keep), loss[keep], atol=1e-5)


@torch.no_grad()
def test_keep_slice_is_the_same_columns_as_a_mask():
    """keep=slice(...) (generate's form, which needs no device sync) keeps the same positions, in the same order,
    as the bool mask of those columns: logits and losses."""
    model, idx, y = tiny(), tokens(3, 10), tokens(3, 10, seed=2)
    for cols in (slice(-1, None), slice(2, 7), slice(None, None, 3)):
        mask = torch.zeros(3, 10, dtype=torch.bool)
        mask[:, cols] = True
        torch.testing.assert_close(model(idx, keep=cols), model(idx, keep=mask))
        torch.testing.assert_close(model(idx, targets=y, keep=cols), model(idx, targets=y, keep=mask))
    assert model(idx, keep=slice(-1, None)).shape == (3, V)


@torch.no_grad()
def test_keep_refuses_an_integer_mask():
    # a 0/1 long mask indexed rows (x[keep]: rows 0 and 1, [B, T, T, C]) and gave logits of other positions, silently
    model, idx = tiny(), tokens(3, 10)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, 6:] = True
    for bad in (mask.long(), mask.float(), mask.tolist()):
        with pytest.raises(ValueError, match=r"keep must be a bool mask \[B, T\].*\.bool\(\) a 0/1 mask"):
            model(idx, keep=bad)
    assert model(idx, keep=mask).shape == (12, V)


@torch.no_grad()
def test_attention_pattern_is_causal_and_writable():
    model, idx = tiny(init_std=0.3), tokens(2, 10)
    plain = model(idx)
    _, cache = model.run_with_cache(idx, ["blocks.0.attn.pattern"])
    pat = cache["blocks.0.attn.pattern"]  # [B, nh, T, T]
    assert pat.shape == (2, 2, 10, 10)
    torch.testing.assert_close(pat.sum(-1), torch.ones(2, 2, 10))
    assert torch.all(pat.triu(1) == 0)
    with model.hooks({"blocks.0.attn.pattern": lambda p, name: p.clone()}):  # written back: pattern @ v path
        torch.testing.assert_close(model(idx), plain)
    uniform = torch.ones(10, 10).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)  # [T, T]
    with model.hooks({"blocks.0.attn.pattern": lambda p, name: uniform.expand_as(p)}):
        assert not torch.allclose(model(idx), plain)


def test_a_hook_that_returns_another_shape_is_named_in_the_error():
    # a wrong replacement used to fail inside the next layer, with a size mismatch that named no hook
    model, idx = tiny(), tokens(2, 5)
    for name, fn, says in (("blocks.0.mlp_out", lambda h, n: h[:, :-1], r"returned \(2, 4, 16\)"),
                           ("blocks.1.attn.pattern", lambda h, n: h[..., :1], r"returned \(2, 2, 5, 1\)"),
                           ("embed", lambda h, n: h.tolist(), "returned list")):
        with pytest.raises(ValueError, match=rf"hook at '{re.escape(name)}' {says}: return None .* shape \("):
            with model.hooks({name: fn}):
                model(idx)
    with model.hooks({"blocks.0.mlp_out": lambda h, n: h.new_zeros(h.shape)}):  # the same shape is a replacement
        assert model(idx).shape == (2, 5, model.cfg.vocab_size)
    # another dtype is cast to the activation's (float64 failed inside the next layer): the same logits as float32
    with model.hooks({"blocks.0.mlp_out": lambda h, n: (2 * h).double()}):
        doubled = model(idx)
    with model.hooks({"blocks.0.mlp_out": lambda h, n: 2 * h}):
        assert doubled.dtype == torch.float32 and torch.equal(doubled, model(idx))
    with pytest.raises(ValueError, match=r"hook at 'embed' returned a tensor on meta: .* on its device \(cpu\)"):
        with model.hooks({"embed": lambda h, n: h.to("meta")}):
            model(idx)


def test_a_patch_cached_under_inference_mode_trains_like_one_cached_under_no_grad():
    # activations cached under torch.inference_mode() and patched into a forward under autograd failed at the next
    # layer ("Inference tensors cannot be saved for backward"), which names no hook point
    model, a, b = tiny(init_std=0.3), tokens(2, 6, seed=1), tokens(2, 6, seed=2)
    with torch.inference_mode():
        _, fast = model.run_with_cache(b)
    with torch.no_grad():
        _, slow = model.run_with_cache(b)
    for name in ("blocks.0.resid_post", "blocks.1.attn.pattern", "blocks.1.mlp.hidden", "final"):
        grads = []
        for cache in (slow, fast):
            model.zero_grad()
            with model.hooks({name: lambda t, n: cache[n]}):
                model(a, targets=a).mean().backward()
            grads.append([p.grad for p in model.parameters()])  # None before the patched point
        assert all(g is w is None or torch.equal(g, w) for g, w in zip(*grads)), name


@torch.no_grad()
def test_a_hook_that_returns_a_mask_or_integers_is_named_in_the_error():
    # another float dtype is cast to the activation's, but a mask (h > 0), integers or complex numbers were cast too:
    # the forward went on with 0s and 1s, truncated values or the real part, and said nothing
    model, idx = tiny(), tokens(2, 5)
    for fn, dtype in ((lambda h, n: h > 0, "torch.bool"), (lambda h, n: h.long(), "torch.int64"),
                      (lambda h, n: h.to(torch.complex64), "torch.complex64")):
        with pytest.raises(ValueError, match=rf"hook at 'blocks.0.mlp_out' returned a {dtype} tensor: .* floating"):
            with model.hooks({"blocks.0.mlp_out": fn}):
                model(idx)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_an_attention_pattern_edited_in_place_is_attended_with(mode):
    # the idiom that patches every other hook point (edit h in place, return it or None) must not be dropped
    # silently at the pattern: the layer attends with the edited pattern, as with a new tensor
    model, idx = tiny(init_std=0.3), tokens(2, 10)
    with contextlib.ExitStack() as stack:
        if mode == "inference_mode":
            stack.enter_context(torch.inference_mode())
        plain = model(idx)

        def clone_edit(p, name):
            p = p.clone()
            p[..., 0] = 0.0  # no attention to the first token
            return p

        def edit_in_place(p, name):
            p[..., 0] = 0.0

        with model.hooks({"blocks.0.attn.pattern": clone_edit}):
            want = model(idx)
        assert not torch.allclose(want, plain)
        for fn in (edit_in_place, lambda p, name: edit_in_place(p, name) or p):  # returning None, or the tensor
            with model.hooks({"blocks.0.attn.pattern": fn}):
                torch.testing.assert_close(model(idx), want)
        # reading it (or returning it unedited) still leaves the logits bit-identical
        for fn in (lambda p, name: None, lambda p, name: p):
            with model.hooks({"blocks.0.attn.pattern": fn}):
                assert torch.equal(model(idx), plain)


@pytest.mark.parametrize("name", ["blocks.1.attn.pattern", "blocks.1.attn.z"])
def test_an_in_place_edit_under_autograd_has_the_gradients_of_an_edited_copy(name):
    # softmax's and SDPA's backward read their outputs: an in-place edit there (zeroing a head at attn.z, as the
    # hook table suggests) failed at backward() with torch's "modified by an inplace operation"
    model, idx = tiny(init_std=0.3), tokens(2, 6)

    def grads(fn):
        model.zero_grad()
        with model.hooks({name: fn}):
            loss = model(idx, targets=idx).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def copy_edit(h, n):
        h = h.clone()
        h[:, 0] = 0.0  # head 0 ablated (its pattern, or its output)
        return h

    def in_place(h, n):
        h[:, 0] = 0.0

    want_loss, want = grads(copy_edit)
    plain_loss, _ = grads(lambda h, n: None)
    assert not torch.allclose(want_loss, plain_loss)  # the edit matters
    loss, got = grads(in_place)
    torch.testing.assert_close(loss, want_loss)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    # the hook's tensor keeps its graph: the other head's queries and keys still learn through the edited pattern
    # (a detached copy would have both ways agree, with no gradient for them)
    C = model.cfg.n_embd
    assert got[[n for n, _ in model.named_parameters()].index("blocks.1.attn.qkv.weight")][:2 * C].abs().sum() > 0


def test_a_returned_pattern_copy_carries_the_gradient_attribution_patching_reads():
    # a pattern only read is not in the graph (SDPA made the heads' output), so its .grad stays None; a returned copy is
    # attended with, and its gradient is the chain rule's through z = pattern @ v: dL/dpattern = dL/dz v^T
    model, idx, seen = tiny(init_std=0.3), tokens(2, 7), {}

    def read(t, name):
        t.retain_grad()
        seen[name] = t

    def copy(p, name):
        p = p.clone()
        read(p, name)
        return p
    with model.hooks({"blocks.1.attn.pattern": read}):
        model(idx, targets=idx).mean().backward()
    assert seen["blocks.1.attn.pattern"].grad is None
    _, cache = model.run_with_cache(idx, ["blocks.1.resid_pre"])
    with model.hooks({"blocks.1.attn.pattern": copy, "blocks.1.attn.z": read}):
        model(idx, targets=idx).mean().backward()
    block = model.blocks[1]
    v = block.attn.qkv(block.ln_1(cache["blocks.1.resid_pre"])).split(16, dim=2)[2]  # [B, T, C]
    v = v.view(2, 7, 2, 8).transpose(1, 2)  # [B, nh, T, hs]
    grad = seen["blocks.1.attn.pattern"].grad  # [B, nh, T, T]
    torch.testing.assert_close(grad, seen["blocks.1.attn.z"].grad @ v.transpose(-2, -1))
    assert grad.abs().max() > 1e-4


def test_the_gradient_at_a_point_is_read_by_a_retaining_hook_not_from_run_with_cache():
    # README: run_with_cache's copies are off the forward's path, so a loss's gradient never reaches them (.grad
    # None, not zeros); a read hook that retains the activation's grad gets it, here against the later block by hand
    model, idx, name = tiny(init_std=0.3), tokens(2, 7), "blocks.0.resid_post"
    logits, cache = model.run_with_cache(idx, [name])
    logits.logsumexp(-1).sum().backward()
    with pytest.warns(UserWarning, match="not a leaf Tensor"):  # torch's word for it, when .grad is read
        assert cache[name].requires_grad and cache[name].grad is None
    seen = {}

    def keep(t, n):
        t.retain_grad()
        seen[n] = t
    with model.hooks({name: keep}):
        model(idx).logsumexp(-1).sum().backward()
    x = cache[name].detach().requires_grad_()  # block 1, the final norm and the unembedding by hand, from a leaf
    x1 = model.blocks[1](x, model.cos[:7], model.sin[:7], None, None)
    (model.ln_f(x1) @ model.wte.weight.T).logsumexp(-1).sum().backward()
    torch.testing.assert_close(seen[name].grad, x.grad)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_reading_a_pattern_with_a_nan_in_it_leaves_the_other_rows_bit_identical(mode):
    # under inference_mode an edit is seen by comparing the pattern with a copy: NaN != NaN made a NaN row (here from
    # a NaN embedding in row 1) count as an edit, and the whole batch took pattern @ v instead of SDPA
    model, idx = tiny(init_std=0.3), tokens(2, 10)

    def poison(h, name):
        h = h.clone()
        h[1] = float("nan")
        return h
    with torch.inference_mode() if mode == "inference_mode" else torch.no_grad():
        with model.hooks({"embed": poison}):
            plain = model(idx)
        with model.hooks({"embed": poison, "blocks.0.attn.pattern": lambda p, name: None}):
            read = model(idx)
    assert torch.equal(read[0], plain[0]) and read[1].isnan().all()


def test_hooks_are_removed_after_the_block_and_after_an_exception():
    model, idx = tiny(), tokens(1, 5)
    seen = []
    with model.hooks({"embed": lambda t, n: seen.append(n), "blocks.1.resid_post": lambda t, n: seen.append(n)}):
        assert n_hooks(model) == 2
        model(idx)
    assert n_hooks(model) == 0 and seen == ["embed", "blocks.1.resid_post"]
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks({"final": lambda t, n: None}):
            assert n_hooks(model) == 1
            raise RuntimeError("boom")
    assert n_hooks(model) == 0
    with pytest.raises(RuntimeError, match="inside a hook"):
        with model.hooks({"final": lambda t, n: (_ for _ in ()).throw(RuntimeError("inside a hook"))}):
            model(idx)
    assert n_hooks(model) == 0
    with pytest.raises(KeyError, match="blocks.0.resid_pre"):  # unknown names give the valid ones
        with model.hooks({"embed": lambda t, n: None, "blocks.0.resid_mid": lambda t, n: None}):
            pass
    assert n_hooks(model) == 0
    with pytest.raises(KeyError, match=r"'blocks.0.mlp_hidden'. Did you mean 'blocks.0.mlp.hidden'\? Valid names"):
        model.hook_point("blocks.0.mlp_hidden")  # a typo: the name it likely meant comes first


def test_unknown_hook_name_error_gives_the_names_by_pattern_not_every_name():
    # listed out, a 12-layer model's valid names were a ~1800-character line; the pattern is the same for any depth
    model = tiny(n_layer=12)
    for name, did_you_mean in [("blocks.3.resid_mid", "blocks.3.resid_pre"), ("nope", None), (3, None)]:
        with pytest.raises(KeyError) as e:
            with model.hooks({name: lambda t, n: None}):
                pass
        msg = e.value.args[0]
        assert msg.startswith(f"no hook point named {name!r}.") and len(msg) < 250 and "blocks.11." not in msg
        assert (f"Did you mean {did_you_mean!r}?" in msg) == (did_you_mean is not None)
        # the pattern is made from the model's own points: expanded, it gives hook_names() back, in order
        valid = msg.split("Valid names: ")[1].split(", ")
        assert valid[1].endswith(" for i in 0..11")
        in_block = valid[1].removeprefix("blocks.{i}.(").removesuffix(") for i in 0..11").split("|")
        expanded = valid[:1] + [f"blocks.{i}.{n}" for i in range(12) for n in in_block] + valid[2:]
        assert expanded == model.hook_names()


@torch.no_grad()
def test_nested_hook_blocks_on_one_point_run_outer_first_each_on_what_the_last_returned():
    # patching studies rely on the order (a cache or an injection opened inside a patch sees the patched activation);
    # an inner block run first, or on the clean activation, would cache or steer the unpatched one
    model, idx, name = tiny(init_std=0.3), tokens(2, 6), "blocks.0.mlp_out"
    _, clean = model.run_with_cache(idx, [name])
    with model.hooks({name: lambda h, n: 2 * h}):
        outer = model(idx)
        with model.hooks({name: lambda h, n: h + 1}):
            nested = model(idx)
        _, cache = model.run_with_cache(idx, [name])
        with pytest.raises(RuntimeError, match="inner"):  # an exception leaves the outer block's hook in place
            with model.hooks({name: lambda h, n: h + 1}):
                raise RuntimeError("inner")
        assert n_hooks(model) == 1 and torch.equal(model(idx), outer)
    with model.hooks({name: lambda h, n: 2 * h + 1}):
        assert torch.equal(nested, model(idx))
    assert torch.equal(cache[name], 2 * clean[name]) and n_hooks(model) == 0


@torch.no_grad()
def test_hooks_run_on_a_compiled_model_and_leave_it_with_the_block():
    """torch.compile guards on neither hook dicts nor the hook functions: a compiled model ran its cached graph
    without the hooks attached later (a reading hook never called, a patch silently not applied), or kept the ones
    it was traced with. The eager backend is enough to see it: the guards are dynamo's, not the compiler's."""
    model, idx = tiny(init_std=0.3), tokens(2, 9)
    compiled = torch.compile(model, backend="eager")
    plain = compiled(idx)  # traced without hooks
    assert torch.equal(plain, model(idx))
    seen = {}
    with model.hooks({"blocks.0.mlp_out": lambda t, n: seen.__setitem__(n, t.clone()),
                      "blocks.1.attn.pattern": lambda t, n: seen.__setitem__(n, t.clone())}):
        read = compiled(idx)
    assert sorted(seen) == ["blocks.0.mlp_out", "blocks.1.attn.pattern"] and torch.equal(read, plain)
    for patch in (lambda t, n: torch.zeros_like(t), lambda t, n: 2 * t):  # each block's own hook, not the first one's
        with model.hooks({"blocks.0.mlp_out": patch}):
            want, got = model(idx), compiled(idx)
        assert torch.equal(got, want) and not torch.allclose(got, plain)
    assert torch.equal(compiled(idx), plain)  # and none left after the block
    with model.hooks({}):  # no hooks (callers pass `hooks or {}`): the compiled graph stays in use
        assert model.n_hooked == 0 and torch.equal(compiled(idx), plain)


@torch.no_grad()
def test_nesting_hook_blocks_does_not_recompile_a_compiled_model():
    """torch.compile guarded on the number of open `hooks` blocks: each new nesting depth (a run_with_cache inside a
    patch inside an inject) traced the forward again, and 8 such entries hit dynamo's recompile limit, after which
    new shapes ran uncompiled. Whether any block is open is all the forward asks, so two entries at most."""
    from torch._dynamo.utils import counters
    model, idx = tiny(init_std=0.3), tokens(2, 9)
    torch.compiler.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")
    compiled(idx)
    with model.hooks({"embed": lambda t, n: None}):
        compiled(idx)
        traced = counters["frames"]["total"]  # frames traced so far: without hooks, and with one block open
        with model.hooks({"blocks.0.mlp_out": lambda t, n: 2 * t}), model.hooks({"final": lambda t, n: None}):
            want, got = model(idx), compiled(idx)  # three blocks open: the patch still applies
    assert torch.equal(got, want) and counters["frames"]["total"] == traced
    torch.compiler.reset()


@torch.no_grad()
def test_the_compiled_hook_limits_the_readme_states():
    # README: under fullgraph=True a hooks block is dynamo's error (the eager forward is a graph break), and a hook
    # registered by hand, outside model.hooks, is skipped by a compiled model; if torch changes either, so must README
    model, idx = tiny(init_std=0.3), tokens(2, 9)
    torch.compiler.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    plain = compiled(idx)
    # (torch 2.4 says "call torch._dynamo.disable() wrapped function", 2.13 and 2.15 "Skip calling ... disable()`d")
    with pytest.raises(torch._dynamo.exc.Unsupported, match="disable"):
        with model.hooks({"blocks.0.mlp_out": lambda t, n: None}):
            compiled(idx)
    torch.compiler.reset()
    compiled = torch.compile(model, backend="eager")
    compiled(idx)
    handle = model.blocks[0].mlp_out.register_forward_hook(lambda mod, args, out: torch.zeros_like(out))
    try:
        assert torch.equal(compiled(idx), plain) and not torch.equal(model(idx), plain)
    finally:
        handle.remove()
    torch.compiler.reset()


@torch.no_grad()
def test_generate_is_compiled_through_model_compile_not_through_the_wrapper():
    # README and generate's docstring: torch.compile(model).generate is the module's own method, whose forwards run
    # uncompiled; model.compile() compiles the module in place, so generate's forwards are compiled
    from torch._dynamo.utils import counters
    model = tiny()
    torch.compiler.reset()
    counters.clear()
    want = model.generate([[1, 2, 3]], 4, temperature=0)
    assert torch.compile(model, backend="eager").generate([[1, 2, 3]], 4, temperature=0) == want
    assert counters["frames"]["total"] == 0
    model.compile(backend="eager")
    assert model.generate([[1, 2, 3]], 4, temperature=0) == want
    assert counters["frames"]["total"] > 0
    torch.compiler.reset()


def test_the_training_forward_compiles_to_one_graph():
    """train_lm (and bench.py gpt) compile the training forward on a GPU: a graph break (an .item(), a branch on a
    tensor's value, a call dynamo cannot trace) splits it without a word and costs the GPU its fusions. dynamo traces
    alike on every device, so fullgraph=True finds one here (the eager backend: no compiler needed); also under bf16
    autocast, and for generate's last-column logits."""
    model, x, y = tiny(init_std=0.3).train(), tokens(2, 9, seed=1), tokens(2, 9, seed=2)
    torch.compiler.reset()  # other tests' compiled GPTs count against dynamo's recompile limit
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    for precision in (contextlib.nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16)):
        with precision:
            assert torch.equal(compiled(x, targets=y), model(x, targets=y))
    with torch.no_grad():
        assert torch.equal(compiled(x, keep=slice(-1, None)), model(x, keep=slice(-1, None)))


@torch.no_grad()
def test_patching_a_layer_output_transfers_the_other_runs_logits():
    model = tiny(init_std=0.3)
    a, b = tokens(2, 9, seed=1), tokens(2, 9, seed=2)
    logits_b, cache_b = model.run_with_cache(b, ["blocks.0.resid_post"])
    with model.hooks({"blocks.0.resid_post": lambda t, n: cache_b[n]}):
        patched = model(a)
    assert torch.equal(patched, logits_b)
    assert not torch.allclose(model(a), logits_b)
    # patching only the last position changes only the last position's logits (causality)
    def last(t, n):
        t = t.clone()
        t[:, -1] = cache_b[n][:, -1]
        return t
    with model.hooks({"blocks.0.resid_post": last}):
        patched = model(a)
    assert torch.equal(patched[:, :-1], model(a)[:, :-1]) and not torch.allclose(patched[:, -1], model(a)[:, -1])


@pytest.mark.parametrize("mode", ["no_grad", "grad", "inference_mode", "bf16"])
def test_patching_from_a_cache_is_exact_and_causal_in_every_mode(mode):
    # the equivalences activation patching rests on, under autograd and bf16 autocast too: a point patched with its
    # own cached value changes nothing; the whole residual stream from run b gives b's logits; b's values at some
    # positions leave every earlier position's logits bit-identical and change the first patched one
    model, a, b = tiny(init_std=0.3), tokens(2, 8, seed=1), tokens(2, 8, seed=2)
    modes = {"no_grad": torch.no_grad, "grad": contextlib.nullcontext, "inference_mode": torch.inference_mode,
             "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    with modes[mode]():
        plain, cache_a = model.run_with_cache(a)
        logits_b, cache_b = model.run_with_cache(b)
        for name in model.hook_names():
            if name.endswith("attn.pattern"):  # a returned pattern is attended with: equal up to rounding only
                continue
            with model.hooks({name: lambda t, n: cache_a[n]}):
                assert torch.equal(model(a), plain), name
            if name in ("embed", "final") or name.endswith("resid_pre") or name.endswith("resid_post"):
                with model.hooks({name: lambda t, n: cache_b[n]}):
                    assert torch.equal(model(a), logits_b), name
            if name == "logits":
                continue

            def some(t, n):  # positions 3 and 5 (dim 2 of the heads' [B, nh, T, hs])
                t, cols = t.clone(), (slice(None),) * (2 if t.dim() == 4 else 1) + ([3, 5],)
                t[cols] = cache_b[n][cols]
                return t
            with model.hooks({name: some}):
                got = model(a)
            assert torch.equal(got[:, :3], plain[:, :3]) and not torch.allclose(got[:, 3], plain[:, 3]), name


@torch.no_grad()
def test_injection_zero_vector_changes_nothing_and_matches_the_formula():
    model, idx = tiny(), tokens(2, 8)
    plain = model(idx)
    positions = torch.tensor([[1, 5], [0, 7]])  # [B, K]
    with inject(model, 1, positions, torch.zeros(2, 2, 16)):
        assert torch.equal(model(idx), plain)
    v = torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(3))  # [B, K, C]
    _, before = model.run_with_cache(idx, ["blocks.0.resid_post"])
    with inject(model, 0, positions, v):
        logits, after = model.run_with_cache(idx, ["blocks.0.resid_post"])
    h, h2 = before["blocks.0.resid_post"], after["blocks.0.resid_post"]  # [B, T, C]
    expect = h.clone()
    for b in range(2):
        for k in range(2):
            p = positions[b, k]
            expect[b, p] = h[b, p] + h[b, p].norm() * v[b, k] / v[b, k].norm()
    torch.testing.assert_close(h2, expect)
    assert not torch.allclose(logits, plain) and n_hooks(model) == 0
    # -1 ("the last token", in Python) and a column past the model's length never match a column: refused, not a
    # silent no-op
    for bad in ([-1], [[0, model.cfg.block_size]]):
        with pytest.raises(ValueError, match="positions must be columns 0 .. "):
            inject(model, 0, bad, v[0, 0])
    # a layer that is no block: -1 ("the last block") was a KeyError suggesting blocks.1
    for bad in (-1, model.cfg.n_layer, 1.0, True):
        with pytest.raises(ValueError, match=f"inject: layer must be a block, 0 .. {model.cfg.n_layer - 1}, got"):
            inject(model, bad, [1], v[0, 0])
    # a vector of another width failed inside the first forward, naming neither the argument nor the width
    for bad in (v[0, 0, :-1], torch.tensor(1.0)):
        with pytest.raises(ValueError, match=f"vectors must end in the residual width n_embd={model.cfg.n_embd}"):
            inject(model, 0, [1], bad)
    # positions that are not [K] or [B, K] integers, or vectors not one per position, failed at the first forward
    # inside the hook (an IndexError, a failed `expand`), naming neither argument
    for bad_pos, bad_vec, says in (([[1], [2, 3]], v[0, 0], "positions must be integer columns"),
                                   ([1.0, 2.0], v[0, 0], "positions must be integer columns"),
                                   ([[[1]]], v[0, 0], "positions must be integer columns"),
                                   ([True, False], v[0, 0], "positions must be integer columns"),  # a mask: no columns
                                   ([1, 2], torch.randn(3, 16), "vectors must be .* with K = 2"),
                                   ([1, 2], torch.randn(1, 1, 2, 16), "vectors must be .* with K = 2")):
        with pytest.raises(ValueError, match=says):
            inject(model, 0, bad_pos, bad_vec)
    for bad_pos, bad_vec in (([[1], [2], [3]], v[0, 0]), ([[1], [2]], torch.randn(3, 1, 16))):  # batch B = 2
        with pytest.raises(ValueError, match=r"need one row per row of the batch \(B = 2\)"):
            with inject(model, 0, bad_pos, bad_vec):
                model(idx)
    # the broadcasts the checks allow: one vector row for every batch row ([1, K, C]), one vector for every position
    # ([1, C]); no positions at all add nothing (a refusal of these would break callers that pass them)
    def injected(pos, vec):
        with inject(model, 0, pos, vec):
            return model(idx)
    torch.testing.assert_close(injected(positions, v[:1]), injected(positions, v[:1].expand(2, 2, 16)))
    torch.testing.assert_close(injected(positions, v[0, :1]), injected(positions, v[0, :1].expand(2, 16)))
    assert torch.equal(injected([], v[0, 0]), plain)
    assert n_hooks(model) == 0


@torch.no_grad()
def test_a_position_injected_twice_gets_both_vectors_at_the_norm_before_the_hook():
    # one call: each vector scaled to the norm the hook found; nested blocks: the inner one to what the outer left
    model, idx = tiny(), tokens(1, 6)
    g = torch.Generator().manual_seed(4)
    v1, v2 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    name = "blocks.0.resid_post"
    h = model.run_with_cache(idx, [name])[1][name][0, 2]  # [C]
    with inject(model, 0, [2, 2], torch.stack([v1, v2])):
        once = model.run_with_cache(idx, [name])[1][name][0, 2]
    torch.testing.assert_close(once, h + h.norm() * (v1 / v1.norm() + v2 / v2.norm()))
    with inject(model, 0, [2], v1), inject(model, 0, [2], v2):
        nested = model.run_with_cache(idx, [name])[1][name][0, 2]
    h1 = h + h.norm() * v1 / v1.norm()
    torch.testing.assert_close(nested, h1 + h1.norm() * v2 / v2.norm())


def test_detach_norm_keeps_the_forward_and_takes_the_norm_out_of_the_gradient():
    # the paper's oracle training detaches ||h||: the same logits, and the gradient of the injected stream is that of
    # h + c v / ||v|| with c a constant, not the gradient through c = ||h||
    model, idx = tiny(), tokens(1, 6)
    v = torch.randn(16, generator=torch.Generator().manual_seed(5))
    name = "blocks.0.resid_post"
    h = model.run_with_cache(idx, [name])[1][name].detach().requires_grad_(True)  # [1, T, C], a leaf to differentiate
    w = torch.randn(16, generator=torch.Generator().manual_seed(6))
    grads, outs = [], []
    for detach in (False, True):
        hook = injection_hook([2], v, lambda: 0, detach_norm=detach)
        out = hook(h, name)
        (g,) = torch.autograd.grad((out[0, 2] * w).sum(), h)
        grads.append(g), outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    assert torch.allclose(grads[1][0, 2], w) and not torch.allclose(grads[0][0, 2], w)
    # the chain rule through ||h||: w + (w . v/||v||) h / ||h||
    u, h2 = v / v.norm(), h[0, 2].detach()
    torch.testing.assert_close(grads[0][0, 2], w + (w @ u) * h2 / h2.norm())
    with torch.no_grad():
        with inject(model, 0, [2], v, detach_norm=True):
            a = model(idx)
        with inject(model, 0, [2], v):
            assert torch.equal(model(idx), a)


def test_a_float64_models_gradients_through_hooks_and_an_injection_match_finite_differences():
    # the hook machinery copies activations under autograd (pattern, z) and rescales by ||h|| (inject): checked here
    # against finite differences, not against another autograd path; every parameter an input
    model, idx = tiny(init_std=0.3).double(), tokens(2, 5)
    names = [n for n, _ in model.named_parameters()]
    v = torch.randn(2, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def halve_head(h, n):  # an in-place edit of one head, at a point whose backward reads its output
        h[:, 1] *= 0.5

    def loss(*params):
        hooks = {"blocks.0.attn.pattern": halve_head, "blocks.1.attn.z": halve_head}
        with model.hooks(hooks), inject(model, 0, [1, 3], v):
            return torch.func.functional_call(model, dict(zip(names, params)), (idx,), {"targets": idx}).sum()

    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("positions", [[1, 3], [0, 6]])  # prompt columns; the first column and a generated one
def test_injection_during_cached_generation_matches_full_reforward(positions):
    model = tiny(init_std=0.3)
    prompts = [[3, 4, 5, 6], [7, 8]]
    v = torch.randn(2, 16, generator=torch.Generator().manual_seed(4))  # same columns in each row
    with inject(model, 1, positions, v, site="resid_pre"):
        cached = model.generate(prompts, 6, temperature=0)
        full = model.generate(prompts, 6, temperature=0, use_cache=False)
    assert cached == full
    assert cached != model.generate(prompts, 6, temperature=0)


@torch.no_grad()
def test_a_hook_on_this_forwards_last_column_keeps_every_generated_column_patched_with_the_cache():
    # README: a column hooked at its decode step stays patched in the cache, while use_cache=False hooks every column
    # again at every step; so h[:, -1] with the cache is "every column from the prompt's last on" without it
    model, prompts, P, name = tiny(init_std=0.3), [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], 5, "blocks.0.resid_post"

    def scaled(cols):
        def fn(h, n):
            h = h.clone()
            h[:, cols] *= 3
            return h
        return fn

    def logits(hook, use_cache):
        seen = []
        with model.hooks({name: hook, "logits": lambda t, n: seen.append(t.clone())}):
            model.generate(prompts, 4, temperature=0, use_cache=use_cache)
        return torch.stack(seen)  # [steps, B, V]
    cached = logits(scaled(-1), True)
    torch.testing.assert_close(cached, logits(scaled(slice(P - 1, None)), False))
    assert not torch.allclose(cached, logits(scaled(-1), False))  # the same hook without the cache: another run


@torch.no_grad()
def test_hooked_cached_generation_of_left_padded_prompts_equals_each_prompt_alone():
    # the KV cache shows a hook the prompt once, then one column per step at model.offset: a head zeroed in place and
    # a vector added at every third column of the sequence must give, for each left-padded row, the tokens of repeated
    # full forwards on its prompt alone with the same hook (its columns shifted by its padding), with and without cache
    model, prompts, n = tiny(init_std=0.3), [[5, 1, 9, 2], [7], [3, 8]], 6
    vec = 3 * torch.randn(16, generator=torch.Generator().manual_seed(6))
    P = max(map(len, prompts))

    def hooks(pad):
        def every_third(h, name):  # h [B, T, C]: columns offset .. offset + T - 1 of the batch
            cols = pad + model.offset + torch.arange(h.shape[1])
            return h + vec * (cols % 3 == 0)[:, None]

        def zero_head(z, name):  # in place, returning None
            z[:, 1] = 0.0
        return {"blocks.0.attn.z": zero_head, "blocks.1.resid_pre": every_third}

    with model.hooks(hooks(0)):
        cached = model.generate(prompts, n, temperature=0)
        full = model.generate(prompts, n, temperature=0, use_cache=False)
    want = []
    for p in prompts:
        with model.hooks(hooks(P - len(p))):
            want.append(greedy_reference(model, p, n))
    assert cached == full == want
    assert cached != model.generate(prompts, n, temperature=0)


def greedy_reference(model, prompt, n, eos_id=None):
    """Argmax of repeated full forwards on the prompt alone (no padding, no cache)."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        if seq[-1] == eos_id:
            break
    return seq[len(prompt):]


@torch.no_grad()
def test_kv_cache_generation_equals_full_forward_greedy_with_padding():
    model = tiny(init_std=0.3)
    prompts = [[5], [1, 2, 3], [9, 8, 7, 6, 5, 4], [11, 12]]
    ref = [greedy_reference(model, p, 10) for p in prompts]
    assert model.generate(prompts, 10, temperature=0) == ref
    assert model.generate(prompts, 10, temperature=0, use_cache=False) == ref
    assert len({tuple(r) for r in ref}) > 1  # a degenerate model would make this test vacuous
    eos = ref[1][2]  # a token some row emits: rows stop right after it, others run on
    ref_eos = [greedy_reference(model, p, 10, eos_id=eos) for p in prompts]
    assert model.generate(prompts, 10, temperature=0, eos_id=eos) == ref_eos
    assert ref_eos[1] == ref[1][:ref[1].index(eos) + 1]
    assert any(len(r) > len(ref_eos[1]) for r in ref_eos)  # other rows went on
    # several stop tokens: each row ends after the first of any of them
    stops = [ref[0][3], ref[2][1]]
    cut = lambda r: r[:next((i + 1 for i, t in enumerate(r) if t in stops), len(r))]
    assert model.generate(prompts, 10, temperature=0, eos_id=stops) == [cut(r) for r in ref]
    # an id read from an array or a tensor is an id like any other (a numpy int is not a Python int)
    for same in (np.int64(eos), torch.tensor(eos)):
        assert model.generate(prompts, 10, temperature=0, eos_id=same) == ref_eos, same
    for same in (np.array(stops), torch.tensor(stops), set(stops), [np.int64(t) for t in stops]):
        assert model.generate(prompts, 10, temperature=0, eos_id=same) == [cut(r) for r in ref], same
    for bad in (float(eos) + 0.5, "2", torch.tensor([1.0, 2.0])):  # not cut to an id
        with pytest.raises(ValueError, match="eos_id must be a token id"):
            model.generate(prompts, 10, temperature=0, eos_id=bad)


@torch.no_grad()
def test_sampling_is_deterministic_given_a_generator():
    model = tiny(init_std=0.3)
    prompts = [[1, 2], [3, 4, 5]]
    draw = lambda seed, **kw: model.generate(prompts, 12, generator=torch.Generator().manual_seed(seed), **kw)
    assert draw(0, top_k=5) == draw(0, top_k=5)
    assert draw(0) != draw(1)
    assert draw(0, top_k=1) == model.generate(prompts, 12, temperature=0)  # top-1 sampling is greedy
    assert draw(0, temperature=1e-6) == model.generate(prompts, 12, temperature=0)
    as_tensor = model.generate(torch.tensor(prompts[:1]), 4, temperature=0)  # a [B, P] tensor of prompts works too
    assert as_tensor == model.generate(prompts[:1], 4, temperature=0)
    for bad in (dict(prompts=[]), dict(prompts=[[]]), dict(top_k=0), dict(temperature=-1.0), dict(max_new_tokens=-1)):
        kw = {"prompts": prompts, "max_new_tokens": 4, **bad}
        with pytest.raises(ValueError, match="at least one prompt|must be >= 0"):  # not a shape error from deep inside
            model.generate(kw.pop("prompts"), kw.pop("max_new_tokens"), **kw)
    with pytest.raises(ValueError, match=r"n_embd \(100\) must split into n_head \(3\) heads"):
        GPT(GPTConfig(vocab_size=8, n_embd=100, n_head=3))


@torch.no_grad()
def test_scoring_equals_a_manual_sum_of_log_probs():
    model = tiny(init_std=0.3)
    eos = 2
    pairs = [([1, 5, 6], [7]), ([4], [8, 9, 10, 3]), ([3, 3, 3, 3, 3], [])]
    sums, per_token = score_continuations(model, pairs, eos_id=eos, batch_size=2)
    for (p, c), s, pt in zip(pairs, sums, per_token):
        ids = torch.tensor([p + c + [eos]])  # [1, L]
        logp = model(ids[:, :-1]).log_softmax(-1)[0]  # [L-1, V]
        manual = [logp[len(p) - 1 + j, tok] for j, tok in enumerate(c + [eos])]
        assert len(pt) == len(c) + 1
        torch.testing.assert_close(pt, torch.stack(manual), rtol=0, atol=1e-5)
        torch.testing.assert_close(s, torch.stack(manual).sum(), rtol=0, atol=1e-5)


@torch.no_grad()
def test_scoring_checks_every_pair_of_a_batch_and_appends_an_end_token_of_id_0():
    model = tiny()
    # one continuation of several already ending in the end token is refused too, not only a batch where all do
    with pytest.raises(ValueError, match="already ends with the end token"):
        score_continuations(model, [([1, 3], [5, 6]), ([1, 3], [5, 2])], eos_id=2)
    # an empty prompt leaves no position to predict the continuation's first token, whatever the end token adds
    for pairs, eos in [([([1], [4]), ([], [5, 6])], 2), ([([1], [])], None)]:
        with pytest.raises(ValueError, match="every prompt and every continuation .* needs at least one token"):
            score_continuations(model, pairs, eos_id=eos)
    # id 0 is an end token like any other (falsy: a truthiness test scored the pair without it)
    sums, per_token = score_continuations(model, [([1, 3], [5])], eos_id=0)
    assert len(per_token[0]) == 2 and torch.equal(sums, score_continuations(model, [([1, 3], [5, 0])])[0])


def test_tokenizer_round_trip_and_save_load(tmp_path):
    words = ["ann", "has", "3", "apples", "."]
    tok = word_tokenizer(words)
    text = "<bos> ann has 3 apples . <eos>"
    ids = tok.encode(text).ids
    assert ids == [1, 3, 4, 5, 6, 7, 2]
    assert tok.decode(ids, skip_special_tokens=False) == text
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode(text).ids == ids and again.get_vocab() == tok.get_vocab()

    class Broken:  # a write that fails halfway: the old file stays whole, and no temp file is left beside it
        def save(self, path):
            Path(path).write_text("{half")
            raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        save_tokenizer(Broken(), tmp_path / "tokenizer.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]
    assert load_tokenizer(tmp_path / "tokenizer.json").get_vocab() == tok.get_vocab()
    # the library itself says an OS error as a bare Exception ("... (os error 2)"): made the OSError it is, which a
    # command says in one line (a full disk, a folder one may not write: cli), naming the file
    with pytest.raises(FileNotFoundError) as e:
        save_tokenizer(tok, tmp_path / "no_such_folder" / "tokenizer.json")
    assert e.value.filename == str(tmp_path / "no_such_folder" / "tokenizer.json")

    class Says:
        def __init__(self, text):
            self.text = text

        def save(self, path):
            raise Exception(self.text)
    with pytest.raises(OSError) as e:
        save_tokenizer(Says("No space left on device (os error 28)"), tmp_path / "t.json")
    assert e.value.errno == 28 and e.value.filename == str(tmp_path / "t.json")
    with pytest.raises(PermissionError):
        save_tokenizer(Says("Permission denied (os error 13)"), tmp_path / "t.json")
    with pytest.raises(Exception, match="^some other failure$") as e:  # not an OS error: as it came
        save_tokenizer(Says("some other failure"), tmp_path / "t.json")
    assert not isinstance(e.value, OSError)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path} is a folder: pass its tokenizer file "
                                                  f"({tmp_path / 'tokenizer.json'})")):
        load_tokenizer(tmp_path)  # (a run's folder, where "not found" left the file beside it unsaid)
    (tmp_path / "config.json").write_text("{}")  # a run's other JSON files are not offered as its tokenizer
    with pytest.raises(DataError, match=re.escape(f"pass its tokenizer file ({tmp_path / 'tokenizer.json'})")):
        load_tokenizer(tmp_path)
    with pytest.raises(Exception, match="UNK|unk"):
        tok.encode("ann has 4 apples")  # an unknown word is an error, not a silent <unk>
    with pytest.raises(ValueError, match=r"not in the tokenizer's vocabulary: \['4'\]"):  # and scoring names it
        score_continuations(tiny(), [("<bos> ann has", "4 apples .")], tokenizer=tok)
    # so does the pretraining stream (a world extended without its words was a traceback naming none)
    with pytest.raises(DataError, match=re.escape("words not in the tokenizer's vocabulary: ['4', 'pears']: build")):
        token_stream(tok, ["<bos> ann has apples", "<bos> ann has 4 pears 4"])
    assert token_stream(tok, ["<bos> ann has apples"]).tolist() == tok.encode("<bos> ann has apples").ids
    # texts given as a generator are named too (read once); the first ten words and a count of the rest; one line,
    # not chained to the library's error
    with pytest.raises(DataError, match=re.escape(f"{[f'w{i}' for i in range(10)]} and 2 more: build")) as err:
        token_stream(tok, (f"<bos> w{i}" for i in range(12)))
    assert err.value.__cause__ is None and err.value.__suppress_context__
    # a failure that is no missing word (\x1c splits words for str.split, not for the tokenizer) stays the library's
    # error, not a DataError naming no word
    with pytest.raises(Exception, match="UNK") as err:
        token_stream(tok, ["<bos> ann\x1chas"])
    assert not isinstance(err.value, DataError)
    with pytest.raises(Exception, match="UNK") as err:  # so does scoring's (it named an empty list)
        score_continuations(tiny(), [("<bos> ann", "ann\x1chas")], tokenizer=tok)
    assert not isinstance(err.value, ValueError)
    with pytest.raises(Exception, match="TextEncodeInput") as err:  # no text: the library's error, not the split's
        token_stream(tok, ["<bos> ann", None])
    assert not isinstance(err.value, (DataError, AttributeError))
    with pytest.raises(ValueError, match=re.escape("vocabulary: ['4'] (in 'apples 4')")):  # the text's last word too
        score_continuations(tiny(), [("<bos> ann has", "apples 4")], tokenizer=tok)
    english = " ".join(f"w{i} w{i}" for i in range(12))  # a text of another vocabulary: each word once, the first ten
    with pytest.raises(ValueError, match=re.escape(f"{[f'w{i}' for i in range(10)]} and 2 more (in")):
        score_continuations(tiny(), [("<bos> ann has", english)], tokenizer=tok)
    model = tiny()
    sums, _ = score_continuations(model, [("<bos> ann has", "3 apples .")], tokenizer=tok)
    ids_sums, _ = score_continuations(model, [([1, 3, 4], [5, 6, 7])], eos_id=2)
    assert torch.equal(sums, ids_sums)
    # an answer string that already ends in "<eos>" (as the world's do) was scored with "<eos> <eos>", silently
    with pytest.raises(ValueError, match="already ends with the end token"):
        score_continuations(model, [("<bos> ann has", "3 apples . <eos>")], tokenizer=tok)
    # pairs as an iterator (a zip) are read once: the end-token check consumed it, and nothing was scored, silently
    assert torch.equal(score_continuations(model, zip([[1, 3, 4]], [[5, 6, 7]]), eos_id=2)[0], ids_sums)
    # eos_id as the token's text, or generate's list of several ids, failed inside pad_right naming nothing; one id
    # in any integer form is that id
    for bad in ("<eos>", [2, 3], []):  # ([] is falsy: a truthiness test let it through)
        with pytest.raises(ValueError, match="eos_id must be one token id"):
            score_continuations(model, [([1, 3, 4], [5, 6, 7])], eos_id=bad)
    for same in ([2], torch.tensor(2), np.int64(2)):
        assert torch.equal(score_continuations(model, [([1, 3, 4], [5, 6, 7])], eos_id=same)[0], ids_sums)


def test_unknown_words_are_named_alike_by_the_pretraining_stream_and_by_scoring():
    # both name the first ten missing words and a count of the rest with one piece of code (each wrote it out, and
    # scoring's said "not in the tokenizer's vocabulary" where the stream's said "words not in ...")
    tok = word_tokenizer(["ann", "has"])
    text = " ".join(f"w{i}" for i in range(12))
    named = f"words not in the tokenizer's vocabulary: {[f'w{i}' for i in range(10)]} and 2 more"
    with pytest.raises(DataError) as stream:
        token_stream(tok, [text])
    with pytest.raises(ValueError) as scoring:
        encode(tok, text)
    assert str(stream.value).startswith(f"{named}: build") and str(scoring.value).startswith(f"{named} (in ")


@torch.no_grad()
def test_left_padded_rows_attend_somewhere_and_their_pattern_sums_to_one():
    # a pad query has no valid key but its own: without that exception its softmax row is all -inf (NaN)
    model = tiny(init_std=0.3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :3] = False
    names = ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    logits, cache = model.run_with_cache(tokens(2, 6), names, mask=mask)
    assert torch.isfinite(logits).all()
    for p in cache.values():
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))


def test_top_k_samples_the_k_likeliest_in_their_renormalised_proportions():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).expand(8000, -1)
    draws = sample_next(logits, 1.0, 3, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert freq[3:].sum() == 0
    torch.testing.assert_close(freq[:3], torch.softmax(torch.tensor([3.0, 2.0, 1.0]), 0), atol=0.02, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_unembeds_each_rows_last_column_only_and_a_logits_hook_steers_it(use_cache):
    model, prompts, seen = tiny(init_std=0.3), [[3, 4, 5, 6], [7, 8]], []
    with model.hooks({"logits": lambda h, name: seen.append(tuple(h.shape))}):
        out = model.generate(prompts, 5, temperature=0, use_cache=use_cache)
    assert out == model.generate(prompts, 5, temperature=0, use_cache=use_cache)  # looking changes nothing
    assert seen == [(2, V)] * 5  # one [B, V] per step, the prompt's earlier columns never unembedded
    def force(h, name):  # the hook edits what is sampled: token 9 wins every step
        h[:, 9] = h.max() + 1
    with model.hooks({"logits": force}):
        assert model.generate(prompts, 5, temperature=0, use_cache=use_cache) == [[9] * 5] * 2
    assert out != [[9] * 5] * 2


@torch.no_grad()
@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_stops_once_every_row_has_stopped_at_different_steps(use_cache):
    # row 0 stops at step 0, row 1 at step 1: the loop must end there, not run on to max_new_tokens because the
    # row that stopped first (now emitting pads) is no longer counted as stopped
    model, eos, steps = tiny(init_std=0.3), 2, []
    def force(h, name):  # step 0: row 0 says eos, row 1 token 9; later steps: every row says eos
        steps.append(len(steps))
        h[:, 9 if len(steps) == 1 else eos] = h.max() + 1
        h[0, eos] = h.max() + 1
    with model.hooks({"logits": force}):
        out = model.generate([[3, 4], [5, 6, 7]], 10, temperature=0, eos_id=eos, use_cache=use_cache)
    assert out == [[eos], [9, eos]] and len(steps) == 2


@torch.no_grad()
def test_a_prompt_and_continuation_may_fill_the_context_exactly():
    model = tiny(block_size=8)
    assert len(model.generate([[1, 2, 3]], 5, temperature=0)[0]) == 5
    with pytest.raises(ValueError, match="exceeds block_size=8: ask for at most 5 new tokens"):
        model.generate([[1, 2, 3]], 6, temperature=0)
    with pytest.raises(ValueError, match="longer than block_size=8 .*pass at most the last 8 tokens"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_tokenizer_drops_duplicates_refuses_spaces_and_marks_its_specials(tmp_path):
    tok = word_tokenizer(["ann", "has", "ann", "<bos>"])  # a repeated word keeps its first id: no holes
    assert tok.get_vocab() == {"<pad>": 0, "<bos>": 1, "<eos>": 2, "ann": 3, "has": 4}
    for bad in ("two words", "tab\there", ""):
        with pytest.raises(ValueError, match="non-empty and without spaces"):
            word_tokenizer(["ann", bad])
    # a string was read letter by letter: words "ann" made a, n; specials "<eos>" made <, e, o, s and > special
    for kw in ({"words": "ann"}, {"words": ["ann"], "specials": "<eos>"}):
        with pytest.raises(ValueError, match=r"must be a list of tokens, got the string"):
            word_tokenizer(**kw)
    ids = tok.encode("<bos> ann has <eos>").ids
    assert tok.decode(ids) == "ann has"  # the specials are special: skipped when decoding
    with pytest.raises(DataError, match="saved beside the checkpoint"):
        load_tokenizer(tmp_path / "missing.json")


def test_pad_right_marks_only_the_real_tokens():
    ids, real = pad_right([[5, 6, 7], [8], [9, 4]], pad_id=3)
    assert ids.tolist() == [[5, 6, 7], [8, 3, 3], [9, 4, 3]]
    assert real.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    # both on the device asked for ("meta" stands in for a GPU): ids left on the CPU fail at the model's embedding
    ids, real = pad_right([[5, 6, 7], [8]], device="meta")
    assert ids.device.type == real.device.type == "meta" and ids.dtype == torch.long and real.dtype == torch.bool


def test_each_hook_is_its_own_function():
    # hooks attached together must each run their own function, not the last one's
    model, seen = tiny(), []
    with model.hooks({"embed": lambda t, n: seen.append(("first", n)),
                      "final": lambda t, n: seen.append(("second", n))}):
        model(tokens(1, 4))
    assert seen == [("first", "embed"), ("second", "final")]


@torch.no_grad()
def test_every_named_site_can_be_written_and_final_is_what_the_unembedding_reads():
    # what a hook returns must reach the forward at every site: a site that only read would never patch
    model, a, b = tiny(init_std=0.3), tokens(2, 9, seed=1), tokens(2, 9, seed=2)
    plain, cache_a = model.run_with_cache(a)
    logits_b, cache_b = model.run_with_cache(b)
    for name in model.hook_names():
        if name.endswith("attn.pattern"):
            continue  # written in test_attention_pattern_is_causal_and_writable
        with model.hooks({name: lambda t, n: torch.zeros_like(t)}):
            assert not torch.allclose(model(a), plain), name
        with model.hooks({name: lambda t, n: t.clone()}):
            assert torch.equal(model(a), plain), name
    for name in ["embed", "final"] + [f"blocks.{i}.{s}" for i in range(2) for s in ("resid_pre", "resid_post")]:
        with model.hooks({name: lambda t, n: cache_b[n]}):  # the whole residual stream: run b's logits
            assert torch.equal(model(a), logits_b), name
    torch.testing.assert_close(cache_a["final"], model.ln_f(cache_a["blocks.1.resid_post"]))
    torch.testing.assert_close(plain, cache_a["final"] @ model.wte.weight.T)
    assert set(model.run_with_cache(a, "final")[1]) == {"final"}  # one name as a string


@torch.no_grad()
def test_each_block_is_attention_then_an_mlp_on_the_residual_attention_left():
    # pre-norm and sequential: the MLP reads ln_2(resid_pre + attn_out), not ln_2(resid_pre) (a parallel block), and
    # the residual is the sum of the three; ln_2 gets gains of its own, or ln_1 in its place would read the same
    model, idx = tiny(init_std=0.3), tokens(2, 9)
    for block in model.blocks:
        block.ln_2.weight.copy_(torch.linspace(0.5, 2.0, 16))
    _, c = model.run_with_cache(idx)
    for i, block in enumerate(model.blocks):
        pre, attn, mlp = (c[f"blocks.{i}.{s}"] for s in ("resid_pre", "attn_out", "mlp_out"))
        hidden = torch.nn.functional.gelu(block.ln_2(pre + attn) @ block.mlp.fc.weight.T)
        torch.testing.assert_close(c[f"blocks.{i}.mlp.hidden"], hidden)
        torch.testing.assert_close(mlp, hidden @ block.mlp.proj.weight.T)
        torch.testing.assert_close(c[f"blocks.{i}.resid_post"], pre + attn + mlp)


@torch.no_grad()
def test_the_per_token_loss_is_of_the_patched_logits():
    # model(x, targets=y) computes its losses inside forward: a hook that patches `logits` (or any earlier point)
    # must reach them, as it reaches the logits, with and without `keep`
    model, x, y = tiny(init_std=0.3), tokens(2, 9, seed=1), tokens(2, 9, seed=2)
    for name in ("logits", "final"):
        with model.hooks({name: lambda t, n: t * 0.5 + 1.0}):
            patched = model(x)  # [B, T, V]
            want = torch.nn.functional.cross_entropy(patched.flatten(0, 1), y.flatten(), reduction="none").view(2, 9)
            torch.testing.assert_close(model(x, targets=y), want)
            keep = torch.zeros(2, 9, dtype=torch.bool)
            keep[:, 4:] = True
            torch.testing.assert_close(model(x, targets=y, keep=keep), want[keep])
        assert not torch.allclose(model(x, targets=y), want), name  # the patch changed the losses


@torch.no_grad()
def test_cached_activations_are_not_changed_by_the_rest_of_the_forward():
    model, idx = tiny(init_std=0.3), tokens(2, 7)
    _, cache = model.run_with_cache(idx, ["blocks.0.resid_pre", "blocks.1.resid_pre"])
    assert torch.equal(cache["blocks.0.resid_pre"], model.wte(idx))  # not the residual block 0 went on to build
    assert not torch.allclose(cache["blocks.0.resid_pre"], cache["blocks.1.resid_pre"])


@torch.no_grad()
@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "mlp_out", "resid_post"])
def test_injection_lands_at_the_named_site_in_every_row(site):
    # positions given once ([K]) apply to every row; the vector is added at the site asked for, nowhere earlier
    model, idx = tiny(), tokens(3, 8)
    positions, v = [2, 6], torch.randn(2, 16, generator=torch.Generator().manual_seed(5))  # [K], [K, C]
    name, before = f"blocks.1.{site}", "blocks.0.mlp_out"  # (block 0's resid_post is block 1's resid_pre)
    _, plain = model.run_with_cache(idx, [name, before])
    with inject(model, 1, positions, v, site=site):
        _, got = model.run_with_cache(idx, [name, before])
    assert torch.equal(got[before], plain[before])
    expect = plain[name].clone()
    for row in range(3):
        for k, p in enumerate(positions):
            h = plain[name][row, p]
            expect[row, p] = h + h.norm() * v[k] / v[k].norm()
    torch.testing.assert_close(got[name], expect)


@torch.no_grad()
def test_attention_pattern_of_left_padded_rows_never_attends_to_a_pad():
    model, idx = tiny(init_std=0.3), tokens(2, 6)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :3] = False
    plain, cache = model.run_with_cache(idx, ["blocks.0.attn.pattern"], mask=mask)
    pat = cache["blocks.0.attn.pattern"]  # [B, nh, T, S]
    assert torch.all(pat[0, :, 3:, :3] == 0) and torch.all(pat[1].triu(1) == 0)
    with model.hooks({"blocks.0.attn.pattern": lambda p, name: p.clone()}):  # written back: the same logits
        torch.testing.assert_close(model(idx, mask=mask)[:, 3:], plain[:, 3:])


@torch.no_grad()
def test_a_written_attention_pattern_weights_the_values_of_every_row():
    # a uniform causal pattern written at layer 0: its output is the running mean of the values, in each row
    model, idx = tiny(init_std=0.3), tokens(3, 8)
    uniform = torch.ones(8, 8).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)  # [T, T]
    with model.hooks({"blocks.0.attn.pattern": lambda p, name: uniform.expand_as(p)}):
        _, cache = model.run_with_cache(idx, ["blocks.0.attn_out"])
    attn = model.blocks[0].attn
    v = attn.qkv(model.blocks[0].ln_1(model.wte(idx))).split(16, dim=2)[2]  # [B, T, C]
    v = v.view(3, 8, 2, 8).transpose(1, 2)  # [B, nh, T, hs]
    want = attn.proj((uniform @ v).transpose(1, 2).reshape(3, 8, 16))
    torch.testing.assert_close(cache["blocks.0.attn_out"], want)


def sampled_reference(model, prompts, n, generator, temperature=1.0, top_k=None, stops=()):
    """generate's law written out slowly: each row's logits from a full forward on its own tokens (no padding, no
    cache), softmax(logits / temperature) over the top_k likeliest by hand, one torch.multinomial call per step on
    the [B, V] probabilities (so the same generator state gives the same draws); a row stops after a stop token."""
    seqs, out, done = [list(p) for p in prompts], [[] for _ in prompts], [False] * len(prompts)
    for _ in range(n):
        logits = torch.stack([model(torch.tensor([s]))[0, -1] for s in seqs]) / temperature  # [B, V]
        if top_k is not None:
            kth = logits.sort(-1, descending=True).values[:, top_k - 1:top_k]  # [B, 1]
            logits = torch.where(logits >= kth, logits, torch.full_like(logits, float("-inf")))
        p = (logits - logits.max(-1, keepdim=True).values).exp()
        for i, t in enumerate(torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator)[:, 0].tolist()):
            if not done[i]:
                out[i].append(t)
                seqs[i].append(t)
                done[i] = t in stops
        if all(done):
            break
    return out


@torch.no_grad()
@pytest.mark.parametrize("kw", [{}, {"temperature": 0.6}, {"top_k": 4}, {"temperature": 1.7, "top_k": 7}])
def test_sampled_generation_equals_a_slow_reference_with_the_same_generator(kw):
    # prompts of several lengths (left padding), one that fills the context with its new tokens, and stop tokens
    model, prompts = tiny(init_std=0.3, block_size=12), [[5], [1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2, 1], [11, 12]]
    gen = lambda seed: torch.Generator().manual_seed(seed)
    for seed in range(3):
        ref = sampled_reference(model, prompts, 3, gen(seed), **kw)
        assert model.generate(prompts, 3, generator=gen(seed), **kw) == ref, seed
        assert model.generate(prompts, 3, generator=gen(seed), use_cache=False, **kw) == ref, seed
    assert len({tuple(r) for r in ref}) > 1
    stops = (3, 7, 15)
    for seed in range(4):
        ref = sampled_reference(model, prompts, 3, gen(seed), stops=stops, **kw)
        assert model.generate(prompts, 3, generator=gen(seed), eos_id=list(stops), **kw) == ref, seed


@torch.no_grad()
def test_generated_tokens_follow_the_softmax_at_the_temperature_over_the_top_k():
    # a fixed next-token distribution (the logits hook replaces every position's logits): at each of three steps
    # the 4000 rows' tokens pass a chi-square test against softmax(logits / temperature) over the top k
    model = GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=2, n_embd=8))
    fixed = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
    n = 4000

    def chi2(tokens, p):
        counts = torch.bincount(torch.tensor(tokens), minlength=8).double()
        assert counts[p == 0].sum() == 0  # never a token outside the top k
        e = n * p[p > 0].double()
        return float(((counts[p > 0] - e) ** 2 / e).sum()), int((p > 0).sum()) - 1
    firsts = {}
    with model.hooks({"logits": lambda h, name: fixed.expand(h.shape).clone()}):
        for temperature, top_k, use_cache in [(1.0, None, True), (0.5, None, False), (2.0, 3, True)]:
            out = model.generate([[1]] * n, 3, temperature=temperature, top_k=top_k, use_cache=use_cache,
                                 generator=torch.Generator().manual_seed(0))
            logits = fixed / temperature
            if top_k is not None:
                logits = logits.masked_fill(logits < logits.sort(descending=True).values[top_k - 1], float("-inf"))
            p = logits.softmax(-1)
            for step in range(3):
                stat, df = chi2([o[step] for o in out], p)
                assert stat < {7: 24.32, 2: 13.82}[df], (temperature, top_k, step, stat)  # the 0.999 quantiles
            firsts[temperature] = [o[0] for o in out]
    # the test has power: draws at temperature 0.5 are far from the temperature-1 softmax
    assert chi2(firsts[0.5], fixed.softmax(-1))[0] > 100


@torch.no_grad()
def test_scoring_without_an_end_token_and_at_the_full_context_is_the_hand_sum():
    # eos_id None and no tokenizer: nothing is appended; a pair of block_size + 1 tokens (the last only a target)
    # scores in one batch with shorter ones; each sum is the float64 log-softmax of the pair's own forward
    model = tiny(init_std=0.3, block_size=8)
    pairs = [([1, 2, 3, 4, 5], [6, 7, 8, 9]), ([3], [4]), ([9, 9], [1, 2, 3, 4, 5, 6])]
    sums, per_token = score_continuations(model, pairs)
    for (p, c), s, pt in zip(pairs, sums, per_token):
        logp = model(torch.tensor([p + c[:-1]]))[0].double().log_softmax(-1)  # [L-1, V]
        want = [float(logp[len(p) - 1 + k, t]) for k, t in enumerate(c)]
        assert len(pt) == len(c) and pt.tolist() == pytest.approx(want, abs=1e-5)
        assert float(s) == pytest.approx(sum(want), abs=1e-5)
    with pytest.raises(ValueError, match="longer than block_size"):
        score_continuations(model, [([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])])


def test_rope_rotates_each_pair_by_position_times_its_frequency():
    # the rotation's tables and direction: a swapped cos/sin, other frequencies or the other sense keep attention
    # relative (the cache tests pass) but change every trained model's logits
    hs, n, base = 8, 5, 10000.0
    cos, sin = rope_tables(hs, n, base)
    angle = torch.tensor([[p * base ** (-2 * j / hs) for j in range(hs // 2)] for p in range(n)], dtype=torch.float64)
    torch.testing.assert_close(cos, angle.cos().float())
    torch.testing.assert_close(sin, angle.sin().float())
    x = torch.randn(1, 1, n, hs, generator=torch.Generator().manual_seed(0))
    z = torch.complex(x[..., :hs // 2].double(), x[..., hs // 2:].double()) * torch.polar(torch.ones_like(angle), angle)
    torch.testing.assert_close(apply_rope(x, cos, sin), torch.cat([z.real, z.imag], -1).float(), atol=1e-6, rtol=0)
    # far positions too: angles computed in float32 are off by ~1e-4 at position 2000, a long context's keys
    cos, sin = rope_tables(hs, 2048, base)
    far = torch.arange(2048, dtype=torch.float64)[:, None] * base ** (-torch.arange(0, hs, 2).double() / hs)
    torch.testing.assert_close(cos, far.cos().float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(sin, far.sin().float(), atol=1e-6, rtol=0)



def float64_reference(model, idx):
    """The GPT's forward written out in float64 from its weights, its rotation a complex multiply by angles computed
    from Python floats (none of model.py's tables): logits [B, T, V]."""
    cfg, (B, T) = model.cfg, idx.shape
    C, nh = cfg.n_embd, cfg.n_head
    hs = C // nh
    w = {k: v.detach().double() for k, v in model.state_dict().items()}
    ln = lambda x, g: torch.nn.functional.layer_norm(x, (C,), g)
    angle = torch.tensor([[p * cfg.rope_base ** (-2 * j / hs) for j in range(hs // 2)] for p in range(T)],
                         dtype=torch.float64)
    turn = torch.polar(torch.ones_like(angle), angle)  # [T, hs/2]
    rope = lambda x: (lambda z: torch.cat([z.real, z.imag], -1))(torch.complex(*x.chunk(2, -1)) * turn)
    x = w["wte.weight"][idx]
    for i in range(cfg.n_layer):
        b = lambda n: w[f"blocks.{i}.{n}"]
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (ln(x, b("ln_1.weight")) @ b("attn.qkv.weight").T)
                   .split(C, -1))
        scores = rope(q) @ rope(k).transpose(-2, -1) / math.sqrt(hs)
        z = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf).softmax(-1) @ v
        x = x + z.transpose(1, 2).reshape(B, T, C) @ b("attn.proj.weight").T
        x = x + torch.nn.functional.gelu(ln(x, b("ln_2.weight")) @ b("mlp.fc.weight").T) @ b("mlp.proj.weight").T
    return ln(x, w["ln_f.weight"]) @ w["wte.weight"].T


@torch.no_grad()
def test_a_float64_model_computes_in_float64_to_its_rope_tables():
    # .double() used to widen the float32 RoPE tables: logits off a float64 reference by ~5e-7 (a finite-difference
    # check or an exact patching comparison then sees float32's error); made again in float64, ~1e-14
    idx = tokens(2, 30)
    want = float64_reference(tiny(init_std=0.3), idx)
    assert want.abs().max() > 1  # logits large enough that a float32 table's error would show
    # .double(), .to(float64), and a model cast through bf16 and float32 first whose weights are then loaded again
    rebuilt = tiny(init_std=0.3).bfloat16().float().double()
    rebuilt.load_state_dict(tiny(init_std=0.3).state_dict())
    for model in (tiny(init_std=0.3).double(), tiny(init_std=0.3).to(torch.float64), rebuilt):
        assert model.cos.dtype == model.sin.dtype == torch.float64
        got = model(idx)
        assert got.dtype == torch.float64 and (got - want).abs().max() < 1e-12
        cache = KVCache(model.cfg, 2, 30, "cpu")  # the decode path reads the same tables
        stepped = torch.cat([model(idx[:, :17], cache=cache), model(idx[:, 17:], cache=cache)], 1)
        assert (stepped - want).abs().max() < 1e-12
    # a GPT built under a float64 default has float64 weights (other draws), and so float64 tables
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = tiny(init_std=0.3)
    finally:
        torch.set_default_dtype(before)
    assert model.cos.dtype == torch.float64 and (model(idx) - float64_reference(model, idx)).abs().max() < 1e-12


@torch.no_grad()
def test_rope_tables_of_float32_and_bf16_models_are_the_float32_ones_whatever_casts_came_before():
    # the float64 tables must not move a float32 or bf16 model's numbers: each dtype's tables are the float64 angles'
    # cos and sin rounded to float32 (then to the dtype), also after a round trip through float64
    cfg = tiny().cfg
    hs = cfg.n_embd // cfg.n_head
    angle = torch.arange(cfg.block_size, dtype=torch.float64)[:, None] * cfg.rope_base ** (
        -torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    idx, model = tokens(2, 30), tiny()
    plain = model(idx)
    assert torch.equal(model.cos, angle.cos().float()) and torch.equal(model.sin, angle.sin().float())
    back = tiny().double().float()
    assert back.cos.dtype == torch.float32 and torch.equal(back.cos, model.cos) and torch.equal(back.sin, model.sin)
    assert torch.equal(back(idx), plain)
    for dtype in (torch.bfloat16, torch.float16):
        direct, through = tiny().to(dtype), tiny().double().to(dtype)  # through float64: the same tables
        for m in (direct, through):
            assert torch.equal(m.cos, angle.cos().float().to(dtype))
            assert torch.equal(m.sin, angle.sin().float().to(dtype))
        assert torch.equal(direct(idx), through(idx))
    assert rope_tables(hs, 5, cfg.rope_base)[0].dtype == torch.float32  # the default, as before
    assert torch.equal(rope_tables(hs, 5, cfg.rope_base, torch.float64)[0], angle[:5].cos())
    # not saved: checkpoints hold the weights only, in either direction
    assert not {"cos", "sin"} & set(tiny().double().state_dict())
    model64 = tiny().double()
    model64.load_state_dict(tiny().state_dict())  # float32 weights into a float64 model: its tables stay float64
    assert model64.cos.dtype == torch.float64 and (model64(idx) - float64_reference(tiny(), idx)).abs().max() < 1e-12


@torch.no_grad()
def test_a_float64_models_scores_and_sampled_logits_stay_float64(monkeypatch):
    # score_continuations rounded a float64 model's log-probs to float32 (.float()); upcast keeps them, and a float32
    # model's scores are the float32 ones they were
    pairs = [([1, 2, 3, 4, 5], [6, 7, 8, 9]), ([3], [4]), ([9, 9], [1, 2, 3, 4, 5, 6])]
    model = tiny(init_std=0.3).double()
    sums, per_token = score_continuations(model, pairs)
    assert sums.dtype == torch.float64 and all(pt.dtype == torch.float64 for pt in per_token)
    for (p, c), s, pt in zip(pairs, sums, per_token):
        logp = float64_reference(model, torch.tensor([p + c[:-1]]))[0].log_softmax(-1)  # [L-1, V]
        want = torch.stack([logp[len(p) - 1 + k, t] for k, t in enumerate(c)])
        assert (pt - want).abs().max() < 1e-12 and abs(float(s) - float(want.sum())) < 1e-12
    sums32, per_token32 = score_continuations(tiny(init_std=0.3), pairs)
    assert sums32.dtype == torch.float32 and (sums32.double() - sums).abs().max() > 1e-9  # float32's own rounding
    # generate samples from the float64 logits, not their float32 rounding
    seen, real = [], sample_next
    monkeypatch.setattr(sys.modules["model"], "sample_next", lambda logits, *a: (seen.append(logits.dtype),
                                                                                 real(logits, *a))[1])
    model.generate([[1, 2, 3]], 2, temperature=0)
    tiny().generate([[1, 2, 3]], 1, temperature=0)
    assert seen == [torch.float64, torch.float64, torch.float32]

def test_rope_keeps_bf16_queries_and_keys_in_bf16():
    # under bf16 autocast q and k arrive in bf16: float32 tables must not promote them (the KV cache takes the keys'
    # dtype, and would be allocated at twice the memory)
    cos, sin = rope_tables(8, 5, 10000.0)
    x = torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    out = apply_rope(x.bfloat16(), cos, sin)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), apply_rope(x, cos, sin), atol=0.05, rtol=0.02)
    model = tiny()
    cache = KVCache(model.cfg, 2, 8, "cpu")
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        model(tokens(2, 4), cache=cache)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16


def test_init_scales_every_residual_write_down_by_depth():
    # GPT-2's init: matrices N(0, init_std), the two projections into the residual stream (attention's and the MLP's)
    # init_std / sqrt(2 n_layer), LayerNorm gains 1
    m = GPT(GPTConfig(vocab_size=512, block_size=8, n_layer=4, n_head=4, n_embd=128, init_std=0.02))
    names = set()
    for name, p in m.named_parameters():
        if p.dim() < 2:
            assert torch.all(p == 1), name
            continue
        want = 0.02 / math.sqrt(8) if name.endswith("proj.weight") else 0.02
        if name.endswith("proj.weight"):
            names.add(name.split(".")[-3])  # blocks.L.attn.proj.weight -> attn
        assert p.std().item() == pytest.approx(want, rel=0.05), name
    assert names == {"attn", "mlp"}  # both projections were among them


@torch.no_grad()
def test_a_cached_activation_is_a_copy_taken_at_its_point():
    # resid_post of block 0 is the very tensor block 1 reads as resid_pre: an in-place edit there by a later hook
    # rewrote what the cache held for the earlier point
    model, idx = tiny(init_std=0.3), tokens(2, 6)
    _, clean = model.run_with_cache(idx, ["blocks.0.resid_post", "blocks.1.resid_pre"])
    torch.testing.assert_close(clean["blocks.0.resid_post"], clean["blocks.1.resid_pre"], rtol=0, atol=0)
    with model.hooks({"blocks.1.resid_pre": lambda h, name: h.zero_()}):
        _, cache = model.run_with_cache(idx, ["blocks.0.resid_post"])
    assert torch.equal(cache["blocks.0.resid_post"], clean["blocks.0.resid_post"])
    assert not torch.equal(cache["blocks.0.resid_post"], torch.zeros_like(cache["blocks.0.resid_post"]))


def test_hook_mistakes_are_named_where_they_are_made():
    model, idx = tiny(), tokens(1, 4)
    with pytest.raises(TypeError, match=r"the hook for 'final' is a int, not a function"):
        with model.hooks({"final": 3}):
            pass
    with pytest.raises(TypeError, match=r"the hook for 'final' takes \(h\): it is called as fn\(tensor, name\)"):
        with model.hooks({"final": lambda h: None}):
            pass
    with model.hooks({"final": max}):  # a builtin with no signature to check: registered as it is, not a ValueError
        pass
    # a list of (name, fn) pairs, or of names: an AttributeError ('list' object has no attribute 'items')
    for fns in ([("final", lambda h, name: None)], ["final"]):
        with pytest.raises(TypeError, match=r"model.hooks takes a dict \{name: fn\(tensor, name\)\}, got a list"):
            with model.hooks(fns):
                pass
    with model.hooks({"final": lambda *a: None, "blocks.0.resid_post": lambda h, name, scale=2: None}):
        model(idx)  # any function that takes (tensor, name)
    def broken(h, name):
        return h[:, 7]  # a position past this forward's columns
    with pytest.raises(IndexError) as e:
        with model.hooks({"blocks.1.resid_post": broken}):
            model(idx)
    if sys.version_info >= (3, 11):  # (exception notes are 3.11's; before, the exception passes unchanged)
        assert "raised by the hook at 'blocks.1.resid_post', on an activation of shape (1, 4, 16)" in "".join(
            e.value.__notes__)
    assert model.n_hooked == 0 and n_hooks(model) == 0


@torch.no_grad()
def test_hooks_or_inject_without_with_attach_nothing_and_warn_at_the_callers_line():
    import warnings
    model, idx = tiny(), tokens(1, 4)
    plain = model(idx)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1  # the next line's
        model.hooks({"embed": lambda h, name: h * 0})
        assert n_hooks(model) == 0 and torch.equal(model(idx)[0], plain)  # unhooked: the warning is all there is
        with model.hooks({"embed": lambda h, name: h * 0}):  # entered: attached, and no warning
            assert not torch.equal(model(idx)[0], plain)
        with contextlib.ExitStack() as stack:  # entered another way: no warning either
            stack.enter_context(model.hooks({"embed": lambda h, name: None}))
        # inject asks model.hooks for its hook: the line named is still the caller's, not inject's in model.py
        inject(model, 0, [1], torch.ones(model.cfg.n_embd))
        assert torch.equal(model(idx)[0], plain)
    assert [(w.category, w.filename, w.lineno) for w in caught] == [(RuntimeWarning, __file__, line),
                                                                    (RuntimeWarning, __file__, line + 7)]
    assert "never entered, so it attached nothing: write `with model.hooks({...}):`" in str(caught[0].message)
    assert "(or inject(...)) was never entered" in str(caught[1].message)


@torch.no_grad()
def test_a_hooks_or_inject_context_can_be_entered_again_and_nested_in_itself():
    # `ablate = model.hooks({...})` (or inject(...)) kept and used in two `with` blocks: the second was contextlib's
    # AttributeError "'_GeneratorContextManager' object has no attribute 'args'"
    model, idx = tiny(init_std=0.3), tokens(1, 4)
    plain = model(idx)
    double = model.hooks({"blocks.0.mlp_out": lambda h, name: h * 2})
    with double:
        once = model(idx)
    with double:  # again: the same hooks, attached afresh
        assert torch.equal(model(idx), once) and n_hooks(model) == 1
        with double:  # nested in itself: applied twice, then the inner block's hook alone removed
            twice = model(idx)
            assert n_hooks(model) == 2 and model.n_hooked == 2
        assert torch.equal(model(idx), once) and n_hooks(model) == 1
    assert not torch.equal(once, plain) and not torch.equal(twice, once)
    assert n_hooks(model) == 0 and model.n_hooked == 0 and torch.equal(model(idx), plain)
    steer = inject(model, 0, [1], torch.ones(model.cfg.n_embd))
    with steer:
        first = model(idx)
    with steer:
        assert torch.equal(model(idx), first)
    assert n_hooks(model) == 0


@torch.no_grad()
def test_a_float64_model_keeps_its_losses_in_float64():
    # the losses upcast bf16 logits with .float(), which also rounded a float64 model's (a finite-difference check
    # in float64 then saw float32 noise)
    model, idx, y = tiny().double(), tokens(2, 6), tokens(2, 6, seed=2)
    losses = model(idx, targets=y)
    manual = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
    assert losses.dtype == torch.float64 and torch.allclose(losses, manual, rtol=0, atol=1e-13)
    assert model.float()(idx, targets=y).dtype == torch.float32


@torch.no_grad()
def test_upcast_takes_half_precision_logits_to_float32_and_keeps_float64():
    # the one rule for logits before a softmax or a loss: at least float32, and a float64 model's not rounded
    for dtype, want in ((torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                        (torch.float32, torch.float32), (torch.float64, torch.float64)):
        assert upcast(torch.zeros(2, 3, dtype=dtype)).dtype == want, dtype
    model, idx, y = tiny(), tokens(2, 6), tokens(2, 6, seed=2)
    with torch.autocast("cpu", torch.bfloat16):  # bf16 logits, float32 losses
        assert model(idx).dtype == torch.bfloat16 and model(idx, targets=y).dtype == torch.float32


@torch.no_grad()
def test_unembed_of_the_last_resid_post_is_the_logits_and_of_an_earlier_one_a_logit_lens():
    model, idx = tiny(init_std=0.3), tokens(2, 5)
    # final LayerNorm gains away from their init (all 1: then every LayerNorm of the model is the same map)
    model.ln_f.weight.normal_(1.0, 0.5, generator=torch.Generator().manual_seed(0))
    logits, cache = model.run_with_cache(idx)
    assert torch.equal(model.unembed(cache["blocks.1.resid_post"]), logits)  # what the forward does after block 1
    lens = model.unembed(cache["blocks.0.resid_post"])  # block 0's prediction: a different one, of the same shape
    assert lens.shape == logits.shape and not torch.allclose(lens, logits)
    manual = torch.nn.functional.layer_norm(cache["blocks.0.resid_post"], (model.cfg.n_embd,), model.ln_f.weight,
                                            model.ln_f.bias) @ model.wte.weight.T
    assert torch.allclose(lens, manual, atol=1e-5)

@torch.no_grad()
def test_generate_refuses_a_bare_prompt_and_ids_outside_the_vocabulary():
    model = tiny()
    with pytest.raises(ValueError, match=r"a list of prompts, each a list of token ids: wrap a single prompt"):
        model.generate([1, 4, 9], 2)
    with pytest.raises(ValueError, match=rf"prompt token ids \[{V}, {V + 3}\] are outside the model's vocabulary"):
        model.generate([[1, V], [V + 3, 2]], 2)
    with pytest.raises(ValueError, match=r"prompt token ids \[-1\]"):
        model.generate([[1, -1]], 2)
    for eos in (V, [2, V + 1], -1):  # an end token never sampled: every row ran on to max_new_tokens, silently
        with pytest.raises(ValueError, match=r"eos_id \[-?\d+\] outside the model's vocabulary.*never stop"):
            model.generate([[1, 2]], 2, eos_id=eos)
    assert model.generate(torch.tensor([[1, 2], [3, 4]]), 2, temperature=0) == model.generate([[1, 2], [3, 4]], 2,
                                                                                                temperature=0)


@torch.no_grad()
def test_generate_and_the_forward_refuse_ids_and_arguments_of_the_wrong_type():
    # a float 1.9 ran as id 1 (int() and a long tensor cut it), True as id 1; a float max_new_tokens, a string
    # temperature, a float top_k or an int generator failed inside torch with its own TypeError
    model = tiny()
    for prompts in ([[1.9, 2]], [[True, False]], [torch.tensor([1.0, 2.0])]):
        with pytest.raises(ValueError, match=r"prompt 0 must be a token id or a collection of token ids"):
            model.generate(prompts, 2)
    for kw in ({"max_new_tokens": 2.0}, {"max_new_tokens": None}, {"temperature": "0"}, {"top_k": 2.5},
               {"max_new_tokens": True}):
        with pytest.raises(ValueError, match=r"max_new_tokens must be an int, temperature a number and top_k"):
            model.generate([[1, 2]], **{"max_new_tokens": 2, **kw})
    with pytest.raises(ValueError, match=r"generator must be a torch.Generator or None, got 3"):
        model.generate([[1, 2]], 2, generator=3)
    assert model.generate([[1, 2]], 2, temperature=1, top_k=3, generator=torch.Generator().manual_seed(0))
    assert model.generate([(1, 2)], 2, temperature=0) == model.generate([[1, 2]], 2, temperature=0)
    # the forward: a float idx was torch's "Expected tensor for argument #1 'indices'", an id past the table
    # "index out of range in self", naming neither the dtype nor the id
    with pytest.raises(ValueError, match=r"idx must hold integer token ids, got dtype torch.float32"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=rf"token ids \[{V}\] are outside the model's vocabulary 0 .. {V - 1}"):
        model(torch.tensor([[1, V]]))
    assert torch.equal(model(torch.tensor([[1, 2]], dtype=torch.int32)), model(torch.tensor([[1, 2]])))


def test_plausible_input_mistakes_get_a_message_that_says_what_to_pass():
    # a text prompt has a length too: generate read its characters as ids ("invalid literal for int(): '<'");
    # a 1-D idx or a list failed on `B, T = idx.shape`; inject at a point of another shape failed inside its hook
    model = tiny()
    for prompts in (["<bos> hi"], "<bos> hi"):
        with pytest.raises(ValueError, match=r"generate takes token ids, not text: encode each prompt"):
            model.generate(prompts, 2)
    with pytest.raises(ValueError, match=r"idx must be a \[B, T\] tensor of token ids, got shape \(5,\)"):
        model.run_with_cache(tokens(1, 5)[0], ["blocks.0.resid_post"])
    with pytest.raises(ValueError, match=r"idx must be a \[B, T\] tensor of token ids, got a list"):
        model([[1, 2, 3]])
    for site in ("attn.z", "mlp.hidden", "resid_mid"):
        with pytest.raises(ValueError, match=rf"site must be one of the block's \[B, T, C\] points .*got '{site}'"):
            with inject(model, 1, [0], torch.ones(16), site=site):
                model(tokens(1, 4))
    assert n_hooks(model) == 0


def test_scoring_names_text_without_a_tokenizer_and_a_pair_longer_than_the_model_reads():
    model = tiny(block_size=8)
    with pytest.raises(ValueError, match=r"given text without a tokenizer: pass tokenizer="):
        score_continuations(model, [("a b", "c")], eos_id=2)
    # block_size + 1 tokens fit (the last is only a target); one more is refused, naming the pair
    score_continuations(model, [([1], [3]), ([1, 2, 3, 4], [5, 6, 7, 8])], eos_id=2)  # 4 + 4 + eos = 9
    with pytest.raises(ValueError, match=r"1 pair\(s\) longer than block_size \+ 1 = 9 tokens .*: pair 1 has 5 "
                                         r"prompt \+ 5 continuation tokens"):
        score_continuations(model, [([1], [3]), ([1, 2, 3, 4, 5], [5, 6, 7, 8])], eos_id=2)
    tok = word_tokenizer(["a", "b", "c"])  # with a tokenizer, text and ids may be mixed within a pair
    s1, _ = score_continuations(model, [("a b", [tok.token_to_id("c")])], tokenizer=tok)
    s2, _ = score_continuations(model, [("a b", "c")], tokenizer=tok)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)


def test_scoring_gives_a_continuation_no_special_tokens_and_refuses_ids_it_would_cut_or_could_not_read():
    # a tokenizer whose post-processor adds <bos> (a BPE one's, say) put it inside every text continuation; a float
    # id was cut to an int by pad_right's long tensor, an id past the table was torch's IndexError
    from tokenizers.processors import TemplateProcessing
    model = tiny()
    tok = word_tokenizer(["a", "b", "c"])
    bos = tok.token_to_id("<bos>")
    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    ids = lambda text: tok.encode(text, add_special_tokens=False).ids
    s_text, per = score_continuations(model, [("a b", "c")], tokenizer=tok)
    s_ids, _ = score_continuations(model, [([bos] + ids("a b"), ids("c"))], eos_id=tok.token_to_id("<eos>"))
    assert len(per[0]) == 2  # "c <eos>": the prompt has its <bos>, the continuation none
    torch.testing.assert_close(s_text, s_ids, rtol=0, atol=0)
    # an empty prompt is that <bos> alone (a text scored from its start), not no token at all (refused)
    s_text, _ = score_continuations(model, [("", "c")], tokenizer=tok)
    s_ids, _ = score_continuations(model, [([bos], ids("c"))], eos_id=tok.token_to_id("<eos>"))
    torch.testing.assert_close(s_text, s_ids, rtol=0, atol=0)
    for pair, says in ((([1, 2], [3.5]), "pair 0's continuation must be a token id"),
                       (([1.0, 2], [3]), "pair 0's prompt must be a token id"),
                       (([1, True], [3]), "pair 0's prompt must be a token id .* got booleans")):
        with pytest.raises(ValueError, match=says):
            score_continuations(model, [pair])
    with pytest.raises(ValueError, match=rf"1 pair\(s\) hold token ids outside the model's vocabulary 0 .. {V - 1} "
                                         r"\(pair 1\)"):
        score_continuations(model, [([1], [2]), ([1, -2], [3])])
    with pytest.raises(ValueError, match=r"outside the model's vocabulary"):  # the end token is checked too
        score_continuations(model, [([1], [2])], eos_id=V)
    for bad in (0, -1, 1.5, True):  # -1 scored nothing (range(0, n, -1)): the caller's lookup failed after it
        with pytest.raises(ValueError, match=rf"batch_size must be a whole number >= 1, got {bad}"):
            score_continuations(model, [([1], [2])], batch_size=bad)
    # a numpy int is a whole number (generate's max_new_tokens takes one): it was refused as "not a whole number"
    assert torch.equal(score_continuations(model, [([1], [2])], batch_size=np.int64(2))[0],
                       score_continuations(model, [([1], [2])], batch_size=2)[0])


def test_random_shapes_a_kv_cache_fed_in_chunks_and_each_row_alone_give_the_full_forwards_logits():
    # seeded random shapes (a property check): a cache filled a few columns per call, as score_shared_prompts does
    # after its prompts, and a row run without the others, read what one full forward reads
    rng = torch.Generator().manual_seed(0)
    draw = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=rng))
    for _ in range(30):
        n_head = draw(1, 2)
        cfg = GPTConfig(vocab_size=draw(3, 30), block_size=draw(2, 20), n_layer=draw(1, 3), n_head=n_head,
                        n_embd=n_head * 2 * draw(1, 4), mlp_ratio=draw(1, 4), init_std=0.3)
        model = GPT(cfg, generator=rng).double().eval()
        B, T = draw(1, 4), draw(1, cfg.block_size)
        idx = torch.randint(0, cfg.vocab_size, (B, T), generator=rng)
        with torch.no_grad():
            full = model(idx)
            cache, start, parts = KVCache(cfg, B, cfg.block_size, "cpu"), 0, []
            while start < T:
                n = draw(1, T - start)
                parts.append(model(idx[:, start:start + n], cache=cache))
                start += n
            assert torch.allclose(torch.cat(parts, 1), full, atol=1e-10, rtol=0), cfg
            for i in range(B):
                assert torch.allclose(model(idx[i:i + 1])[0], full[i], atol=1e-10, rtol=0), cfg


def test_a_post_processor_end_token_after_the_prompt_is_not_scored_as_context():
    # a tokenizer whose post-processor appends an end token ("$A </s>") put it between prompt and continuation:
    # "a b" then "c" was scored as P(c | a b </s>); a leading one (<bos> $A) stays, as before
    from tokenizers.processors import TemplateProcessing
    tok = word_tokenizer(["ann", "has", "3", "apples", ".", "</s>"])
    sep = tok.token_to_id("</s>")
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", sep)])
    assert tok.encode("<bos> ann has").ids[-1] == sep  # (the post-processor's end token)
    model = tiny()
    sums, _ = score_continuations(model, [("<bos> ann has", "3 apples .")], tokenizer=tok)
    assert torch.equal(sums, score_continuations(model, [([1, 3, 4], [5, 6, 7])], eos_id=2)[0])
    bos = tok.token_to_id("<bos>")
    tok.post_processor = TemplateProcessing(single="<bos> $A </s>", special_tokens=[("<bos>", bos), ("</s>", sep)])
    sums, _ = score_continuations(model, [("ann has", "3 apples .")], tokenizer=tok)
    assert torch.equal(sums, score_continuations(model, [([1, 3, 4], [5, 6, 7])], eos_id=2)[0])
