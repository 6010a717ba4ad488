"""The seed-batched MLP, its training loops, and the paper's Lemma 1 / Theorem 1 on it."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from eval import accuracy
from experiments.subliminal_mnist import Config, derangement, make_noise, student_init, teacher_logits
from model import SeedMLP, generator, init_mlp_params
from train import distill_loss, train_classifier, train_distill

SIZES = [12, 16, 16, 4 + 3]  # 4 classes + 3 aux logits keep every test fast


def plain_forward(params, s, x, hidden=None):
    for i in range(len(SIZES) - 1):
        x = x @ params[f"weights.{i}"][s] + params[f"biases.{i}"][s, 0]
        x = torch.relu(x) if i < len(SIZES) - 2 else x
        if hidden is not None and i < len(SIZES) - 2:
            hidden.append(x)
    return x


def model_from(params):
    m = SeedMLP(params["weights.0"].shape[0], SIZES)
    m.load_seeds(params)
    return m


@pytest.mark.parametrize("init", ["paper", "torch"])
def test_batched_forward_equals_independent_mlps(init):
    params = init_mlp_params(range(3), SIZES, 4, init, "cpu", 0)
    model = model_from(params)
    x = torch.randn(3, 5, 12)
    out = model(x)
    shared = model(x[0])  # inputs shared by every seed take the no-copy path
    also, hidden = model(x, return_hidden=True)
    assert torch.equal(also, out) and [h.shape for h in hidden] == [(3, 5, 16), (3, 5, 16)]
    for s in range(3):
        plain_hidden = []
        torch.testing.assert_close(out[s], plain_forward(params, s, x[s], plain_hidden))
        torch.testing.assert_close(shared[s], plain_forward(params, s, x[0]))
        for h, plain in zip(hidden, plain_hidden):  # post-ReLU, and not overwritten by the layers after it
            torch.testing.assert_close(h[s], plain)


def test_init_statistics_and_nesting_in_m():
    p = init_mlp_params(range(4), [400, 300, 13], 10, "paper", "cpu", 0)
    assert abs(p["weights.0"].std().item() * math.sqrt(400) - 1) < 0.02 and p["biases.0"].abs().max() == 0
    t = init_mlp_params(range(4), [400, 300, 13], 10, "torch", "cpu", 0)
    assert (t["weights.0"].abs().max() <= 1 / math.sqrt(400)
            and abs(t["weights.0"].std().item() * math.sqrt(1200) - 1) < 0.02)
    # PyTorch's biases too: U(-1/sqrt(d_in), 1/sqrt(d_in)), std 1/sqrt(3 d_in)
    assert (t["biases.0"].abs().max() <= 1 / math.sqrt(400)
            and abs(t["biases.0"].std().item() * math.sqrt(1200) - 1) < 0.05)
    # models that differ only in m share hidden layers, class head and the first aux columns exactly
    for init in ("paper", "torch"):
        a = init_mlp_params([7], [20, 8, 10 + 3], 10, init, "cpu", 1)
        b = init_mlp_params([7], [20, 8, 10 + 50], 10, init, "cpu", 1)
        assert torch.equal(a["weights.0"], b["weights.0"]) and torch.equal(a["biases.0"], b["biases.0"])
        assert (torch.equal(a["weights.1"], b["weights.1"][..., :13])
                and torch.equal(a["biases.1"], b["biases.1"][..., :13]))
    # ... down to m = 0, a plain classifier (its empty aux group failed in torch.cat); fewer columns than classes
    # is refused by name
    for init in ("paper", "torch"):
        z = init_mlp_params([7], [20, 8, 10], 10, init, "cpu", 1)
        b = init_mlp_params([7], [20, 8, 10 + 50], 10, init, "cpu", 1)
        assert z["weights.1"].shape == (1, 8, 10) and torch.equal(z["weights.1"], b["weights.1"][..., :10])
        assert torch.equal(z["biases.1"], b["biases.1"][..., :10]) and torch.equal(z["weights.0"], b["weights.0"])
    with pytest.raises(ValueError, match="the output layer has 9 columns, fewer than n_classes=10"):
        init_mlp_params([7], [20, 8, 9], 10, "paper", "cpu", 1)
    with pytest.raises(ValueError, match="unknown init 'xavier': use 'paper' or 'torch'"):  # not empty weights
        init_mlp_params([7], [20, 8, 10], 10, "xavier", "cpu", 1)
    # the aux columns have their own stream: not copies of the first class columns
    assert not torch.equal(p["weights.1"][..., 10:13], p["weights.1"][..., :3])
    # each 64-column block has its own stream: column j is not a copy of column j + 64, and a layer's first columns
    # are those of a wider one (300 hidden columns above are five blocks)
    assert not torch.equal(p["weights.0"][..., :64], p["weights.0"][..., 64:128])
    narrow = init_mlp_params([7], [20, 70, 13], 10, "torch", "cpu", 1)
    wide = init_mlp_params([7], [20, 130, 13], 10, "torch", "cpu", 1)
    assert torch.equal(narrow["weights.0"], wide["weights.0"][..., :70])
    assert torch.equal(narrow["biases.0"], wide["biases.0"][..., :70])
    # seed k's init does not depend on which other seeds are drawn with it
    assert torch.equal(init_mlp_params([2], SIZES, 4, "paper", "cpu", 0)["weights.1"][0],
                       init_mlp_params(range(5), SIZES, 4, "paper", "cpu", 0)["weights.1"][2])


def test_sgd_training_equals_independent_training():
    params = init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 0)
    model = model_from(params)
    plain = [{k: v[s].clone().requires_grad_() for k, v in params.items()} for s in range(3)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opts = [torch.optim.SGD(p.values(), lr=0.1) for p in plain]
    for step in range(5):
        x, y = torch.randn(3, 8, 12), torch.randint(0, 4, (3, 8))
        loss = F.cross_entropy(model(x)[..., :4].flatten(0, 1), y.flatten(), reduction="none").view(3, -1).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for s in range(3):
            p = {k: v[None] for k, v in plain[s].items()}
            l = F.cross_entropy(plain_forward(p, 0, x[s])[:, :4], y[s])
            opts[s].zero_grad()
            l.backward()
            opts[s].step()
    for s in range(3):
        for k in params:
            torch.testing.assert_close(model.get_parameter(k)[s], plain[s][k], atol=1e-6, rtol=1e-5)


def test_seeds_are_independent_and_aux_head_untouched_by_teacher():
    x, y = torch.randn(64, 12), torch.randint(0, 4, (64,))
    params = init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 0)
    runs = []
    for other in (1, 2):  # change only seed 1's data order
        m = model_from(params)
        gens = [generator("cpu", "t", 0), generator("cpu", "t", other), generator("cpu", "t", 2)]
        train_classifier(m, x, y, epochs=2, lr=1e-2, batch_size=16, gens=gens, n_classes=4)
        runs.append(m)
    for s, same in ((0, True), (1, False), (2, True)):
        for k, p in runs[0].named_parameters():
            assert torch.equal(p[s], runs[1].get_parameter(k)[s]) == same, (k, s)
    # every parameter trained (a generator consumed by the optimizer once froze the first layer) ...
    for k, p in runs[0].named_parameters():
        trained = p[..., :4] if k.endswith(".2") else p
        assert (trained != params[k][..., :trained.shape[-1]]).all(-1).any(), k
    # ... except the aux columns, which the class-logit loss never reaches: bit-for-bit their init
    assert torch.equal(runs[0].weights[2][..., 4:], params["weights.2"][..., 4:])
    assert torch.equal(runs[0].biases[2][..., 4:], params["biases.2"][..., 4:])


def test_a_diverging_seed_leaves_the_logged_loss_of_the_others():
    # seed 1 nan: its own loss is nan, the others' train untouched; the logged epoch loss was nan for the batch
    x, y = torch.randn(64, 12), torch.randint(0, 4, (64,))
    params = init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 0)
    logged = {}
    for bad in (False, True):
        m = model_from(params)
        if bad:
            with torch.no_grad():
                m.weights[0][1].fill_(math.nan)
        records = logged[bad] = []
        train_classifier(m, x, y, epochs=1, lr=1e-2, batch_size=16, n_classes=4, log=lambda **r: records.append(r),
                         gens=[generator("cpu", "t", s) for s in range(3)])
        inputs, targets = torch.rand(3, 40, 12) * 2 - 1, torch.randn(3, 40, 7)
        train_distill(m, inputs, targets, [4, 5, 6], epochs=1, lr=1e-2, batch_size=16,
                      log=lambda **r: records.append(r), gens=[generator("cpu", "d", s) for s in range(3)])
    assert [r["stage"] for r in logged[True]] == ["teacher", "student"]
    for clean, bad in zip(logged[False], logged[True]):
        assert math.isfinite(bad["loss"]) and bad["nonfinite_seeds"] == 1 and "nonfinite_seeds" not in clean
        assert bad["loss"] != clean["loss"]  # the mean over seeds 0 and 2 alone


def test_an_epochs_logged_loss_is_the_mean_over_its_finite_seeds_alone():
    # the finite seeds' sum spread over every seed understated the loss by the share that diverged; an inf (an
    # overflowed loss) diverged too, and made the logged loss inf
    from train import epoch_loss
    assert epoch_loss([6.0, math.nan, 10.0, math.inf], 2) == {"loss": 4.0, "nonfinite_seeds": 2}
    assert epoch_loss([6.0, 10.0], 2) == {"loss": 4.0}
    none = epoch_loss([math.nan, -math.inf], 2)
    assert math.isnan(none["loss"]) and none["nonfinite_seeds"] == 2


def test_distillation_seeds_are_independent():
    params = init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 0)
    inputs = torch.rand(3, 40, 12) * 2 - 1
    targets = torch.randn(3, 40, 7)
    out = []
    for bump in (0.0, 1.0):
        inp = inputs.clone()
        inp[1] += bump  # change only seed 1's noise
        m = model_from(params)
        train_distill(m, inp, targets, [4, 5, 6], epochs=2, lr=1e-2, batch_size=16,
                      gens=[generator("cpu", "d", s) for s in range(3)])
        out.append(m)
    for k, p in out[0].named_parameters():
        assert torch.equal(p[0], out[1].get_parameter(k)[0]) and torch.equal(p[2], out[1].get_parameter(k)[2])
    assert not torch.equal(out[0].weights[0][1], out[1].weights[0][1])  # seed 1 itself did change


def test_distillation_order_is_each_seeds_own_and_each_seed_reads_its_own_targets():
    params = init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 0)
    inputs, targets = torch.rand(3, 40, 12) * 2 - 1, torch.randn(3, 40, 7)
    kw = dict(epochs=2, lr=1e-2, batch_size=16)
    runs = []
    for other in (1, 5):  # change only seed 1's data order
        m = model_from(params)
        train_distill(m, inputs, targets, [4, 5, 6], gens=[generator("cpu", "d", s) for s in (0, other, 2)], **kw)
        runs.append(m)
    for s, same in ((0, True), (1, False), (2, True)):
        assert torch.equal(runs[0].weights[0][s], runs[1].weights[0][s]) == same, s
    # inputs shared by every seed ([N, D], distill_inputs=real) with each seed's own teacher logits: the same
    # training as those inputs copied per seed
    shared, copied = model_from(params), model_from(params)
    train_distill(shared, inputs[0], targets, [4, 5, 6], gens=[generator("cpu", "d", s) for s in range(3)], **kw)
    train_distill(copied, inputs[0].expand(3, 40, 12).contiguous(), targets, [4, 5, 6],
                  gens=[generator("cpu", "d", s) for s in range(3)], **kw)
    for k, p in shared.named_parameters():
        torch.testing.assert_close(p, copied.get_parameter(k), rtol=1e-5, atol=1e-6)


def test_the_classifier_loop_is_one_adam_step_per_batch_of_each_seeds_own_order():
    # each seed's run is torch's Adam on its batches alone, in its generator's order (40 rows in batches of 16: the
    # last one partial): no gradient carries over from an earlier step, no row is skipped or repeated
    x, y = torch.randn(40, 12), torch.randint(0, 4, (40,))
    params = init_mlp_params(range(2), SIZES, 4, "paper", "cpu", 0)
    model = model_from(params)
    train_classifier(model, x, y, epochs=2, lr=1e-2, batch_size=16, n_classes=4,
                     gens=[generator("cpu", "c", s) for s in range(2)])
    for s in range(2):
        plain = {k: v[s:s + 1].clone().requires_grad_() for k, v in params.items()}
        opt, g = torch.optim.Adam(plain.values(), lr=1e-2), generator("cpu", "c", s)
        for epoch in range(2):
            order = torch.randperm(40, generator=g)
            for i in range(0, 40, 16):
                idx = order[i:i + 16]
                opt.zero_grad()
                F.cross_entropy(plain_forward(plain, 0, x[idx])[:, :4], y[idx]).backward()
                opt.step()
        for k in params:
            torch.testing.assert_close(model.get_parameter(k)[s], plain[k][0], rtol=1e-5, atol=1e-6, msg=(s, k))


def test_students_distilled_as_blocks_of_one_model_each_train_as_if_alone():
    """logit_idx a dict: model c * S + s is block c's student of seed s. It reads seed s's inputs and targets, its
    block's logits, its own generator, and trains exactly as it would alone (blocks on the same logits share a loss
    call: that must not mix them either)."""
    S, blocks = 2, {"aux": [4, 5, 6], "aux2": [4, 5, 6], "all": list(range(7))}
    params = init_mlp_params(range(S * len(blocks)), SIZES, 4, "paper", "cpu", 0)
    inputs, targets = torch.rand(S, 40, 12) * 2 - 1, torch.randn(S, 40, 7)
    kw = dict(epochs=2, lr=1e-2, batch_size=16)
    together = model_from(params)
    train_distill(together, inputs, targets, blocks, gens=[generator("cpu", "d", j) for j in range(S * len(blocks))],
                  **kw)
    for j in range(S * len(blocks)):
        c, s = divmod(j, S)
        alone = model_from({k: v[j:j + 1] for k, v in params.items()})
        train_distill(alone, inputs[s:s + 1], targets[s:s + 1], list(blocks.values())[c],
                      gens=[generator("cpu", "d", j)], **kw)
        for k, p in alone.named_parameters():
            torch.testing.assert_close(together.get_parameter(k)[j:j + 1], p, rtol=1e-5, atol=1e-6, msg=(j, k))


def test_fresh_noise_trains_each_later_epoch_on_its_own_refreshed_set():
    # refresh(epoch) is asked for every epoch after the first, and that epoch trains on what it returns: lr 0 keeps
    # the model still, so each epoch's logged loss is the loss of its own whole set
    params = init_mlp_params(range(2), SIZES, 4, "paper", "cpu", 0)
    sets = [(torch.rand(2, 24, 12) * 2 - 1, torch.randn(2, 24, 7)) for _ in range(3)]
    asked, logged = [], []
    refresh = lambda epoch: asked.append(epoch) or sets[epoch]
    train_distill(model_from(params), *sets[0], [4, 5, 6], epochs=3, lr=0.0, batch_size=10, loss="mse",
                  refresh=refresh, gens=[generator("cpu", "r", s) for s in range(2)], log=lambda **r: logged.append(r))
    assert asked == [1, 2]
    for (x, t), record in zip(sets, logged):
        whole = torch.stack([(plain_forward(params, s, x[s])[:, 4:] - t[s, :, 4:]).pow(2).mean() for s in range(2)])
        assert record["loss"] == pytest.approx(whole.mean().item(), rel=1e-5)


def test_each_epoch_draws_a_new_order_from_each_seeds_generator():
    # the generators advance by one permutation per epoch: reusing one state would repeat the first epoch's order
    x, y = torch.randn(32, 12), torch.randint(0, 4, (32,))
    params = init_mlp_params(range(2), SIZES, 4, "paper", "cpu", 0)
    for train in ("classifier", "distill"):
        gens = [generator("cpu", "e", s) for s in range(2)]
        if train == "classifier":
            train_classifier(model_from(params), x, y, epochs=3, lr=1e-2, batch_size=16, gens=gens, n_classes=4)
        else:
            train_distill(model_from(params), x, torch.randn(2, 32, 7), [4, 5, 6], epochs=3, lr=1e-2, batch_size=16,
                          gens=gens)
        for s, g in enumerate(gens):
            ref = generator("cpu", "e", s)
            orders = [torch.randperm(32, generator=ref) for _ in range(3)]
            assert torch.equal(g.get_state(), ref.get_state()), (train, s)
            assert not torch.equal(orders[0], orders[1])


def test_distill_losses_closed_form():
    s, t = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    assert torch.allclose(distill_loss(t, t, "kl", 1.0), torch.zeros(2), atol=1e-6)
    p = F.softmax(t / 2, -1)
    manual = (p * (p.log() - F.log_softmax(s / 2, -1))).sum(-1).mean(1) * 4
    torch.testing.assert_close(distill_loss(s, t, "kl", 2.0), manual)
    torch.testing.assert_close(distill_loss(s, t, "mse", 1.0), ((s - t) ** 2).mean((1, 2)))
    with pytest.raises(ValueError, match="unknown distillation loss 'ce'"):  # not None, found at backward
        distill_loss(s, t, "ce", 1.0)


def test_accuracy_reads_the_class_logits_only_per_seed_over_every_batch():
    # the model's last layer has n_classes + m aux logits: an aux logit above every class logit must not count as
    # the prediction (the argmax of all 7 would never equal a label < 4 there); batches of 2 over 5 inputs, the last
    # one short, and each seed's own fraction of all 5
    logits = torch.tensor([[[3., 0, 0, 0, 9, 0, 0], [0, 2, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 5],
                            [0, 0, 0, 4, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]],
                           [[0, 1, 0, 0, 0, 0, 0], [0, 2, 0, 0, 0, 9, 0], [0, 0, 0, 1, 0, 0, 0],
                            [0, 0, 0, 4, 0, 0, 0], [0, 0, 2, 0, 0, 0, 0]]])  # [S=2, N=5, 4 + 3]
    x, y = torch.arange(5)[:, None], torch.tensor([0, 1, 2, 3, 2])
    model = lambda xb: logits[:, xb[:, 0]]  # noqa: E731  (x [N, 1] indexes each input's row)
    assert accuracy(model, x, y, n_classes=4, batch_size=2).tolist() == pytest.approx([4 / 5, 3 / 5])


def test_accuracy_refuses_no_examples_and_a_label_count_that_is_not_the_input_count():
    model = lambda xb: torch.zeros(2, xb.shape[0], 10)  # noqa: E731  (2 seeds, every prediction class 0)
    with pytest.raises(ValueError, match="accuracy over no examples: x is empty"):
        accuracy(model, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    # one label would broadcast against all 4 predictions: a fraction of the wrong question, not an error
    for n in (1, 3):
        with pytest.raises(ValueError, match=f"x has 4 examples, y {n} labels"):
            accuracy(model, torch.zeros(4, 3), torch.zeros(n, dtype=torch.long))
    assert accuracy(model, torch.zeros(4, 3), torch.tensor([0, 0, 1, 2])).tolist() == [0.5, 0.5]


def test_load_seeds_refuses_params_of_another_seed_count_or_size():
    # copy_ broadcast one seed's [1, ...] params into every seed: S identical "independent" models, without a word
    model = model_from(init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 0))
    before = model.params()
    one = init_mlp_params([1], SIZES, 4, "paper", "cpu", 0)
    with pytest.raises(ValueError, match=r"load_seeds needs this model's 3 seeds .*weights.0: \[1, 12, 16\], not "
                                         r"\[3, 12, 16\]"):
        model.load_seeds(one)
    with pytest.raises(ValueError, match=r"biases.2: missing, not \[3, 1, 7\]"):
        model.load_seeds({k: v for k, v in before.items() if k != "biases.2"})
    assert all(torch.equal(v, model.params()[k]) for k, v in before.items())  # nothing copied
    # a [3, 1, 16] weight broadcasts too; and a bad last tensor leaves the good ones before it uncopied
    other = init_mlp_params(range(3), SIZES, 4, "paper", "cpu", 1)
    for name, bad in (("weights.1", other["weights.1"][:, :1]), ("biases.2", other["biases.2"][..., :-1])):
        with pytest.raises(ValueError, match=re.escape(f"{name}: {list(bad.shape)}, not ")):
            model.load_seeds({**other, name: bad})
        assert all(torch.equal(v, model.params()[k]) for k, v in before.items())
    model.load_seeds(other)
    assert not torch.equal(model.weights[0], before["weights.0"])


def test_params_is_a_snapshot_not_a_view_of_the_weights():
    # a teacher's params() taken before more training (or a load_seeds) must keep the weights of that moment
    model = model_from(init_mlp_params(range(2), SIZES, 4, "paper", "cpu", 0))
    snap = model.params()
    before = {k: v.clone() for k, v in snap.items()}
    with torch.no_grad():
        for w in model.parameters():
            w.add_(1.0)
    assert all(torch.equal(snap[k], before[k]) for k in snap)
    assert not torch.equal(snap["weights.0"], model.weights[0])


def test_teacher_logits_are_the_models_own_on_every_input_over_every_chunk():
    # the targets are computed in chunks: chunks of 2 over 5 inputs, the last one a single row, per-seed and shared
    # inputs; a chunk loop that stopped a row early would leave the last input without a target
    model = model_from(init_mlp_params(range(2), SIZES, 4, "torch", "cpu", 0))
    x = torch.randn(2, 5, SIZES[0])
    with torch.no_grad():
        torch.testing.assert_close(teacher_logits(model, x, batch_size=2), model(x))
        torch.testing.assert_close(teacher_logits(model, x[0], batch_size=2), model(x[0]))
        # a float64 teacher's targets stay float64 (.float() rounded them to float32)
        m64, x64 = model_from(init_mlp_params(range(2), SIZES, 4, "torch", "cpu", 0)).double(), x.double()
        got = teacher_logits(m64, x64, batch_size=2)
        assert got.dtype == torch.float64 and (got - m64(x64)).abs().max() < 1e-12  # float32's: ~1e-8


def test_a_float64_models_training_losses_see_its_float64_logits(monkeypatch):
    # upcast, not .float(): bf16 logits (amp) go to float32, a float64 model's are kept (a finite-difference check of
    # its training needs float64 throughout)
    import train
    seen, ce, dl = [], F.cross_entropy, train.distill_loss
    monkeypatch.setattr(train.F, "cross_entropy", lambda logits, *a, **k: (seen.append(logits.dtype),
                                                                             ce(logits, *a, **k))[1])
    monkeypatch.setattr(train, "distill_loss", lambda out, *a: (seen.append(out.dtype), dl(out, *a))[1])
    m = model_from(init_mlp_params(range(2), SIZES, 4, "paper", "cpu", 0)).double()
    x, y = torch.randn(32, 12, dtype=torch.float64), torch.randint(0, 4, (32,))
    gens = lambda: [generator("cpu", "t", s) for s in range(2)]
    train_classifier(m, x, y, epochs=1, lr=1e-2, batch_size=16, gens=gens(), n_classes=4)
    train_distill(m, torch.rand(2, 32, 12, dtype=torch.float64), torch.randn(2, 32, 7, dtype=torch.float64),
                  [4, 5, 6], epochs=1, lr=1e-2, batch_size=16, gens=gens())
    assert len(seen) >= 4 and set(seen) == {torch.float64}, seen


@pytest.mark.parametrize("n", [2, 3, 5, 10, 100])
def test_cross_pairing_is_a_derangement(n):
    for seed in range(20):
        p = derangement(n, seed)
        assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
    assert derangement(1, 0) == [1]  # one seed: partner is an init no teacher uses


def test_student_inits():
    cfg = Config(depth=2, init="paper")
    ref = init_mlp_params([0, 1], SIZES, 4, "paper", "cpu", 0)
    partner = init_mlp_params([1, 0], SIZES, 4, "paper", "cpu", 0)
    same = student_init("student_aux", ref, partner, cfg, [0, 1], "cpu")
    assert all(torch.equal(same[k], ref[k]) for k in ref)
    cross = student_init("cross_aux", ref, partner, cfg, [0, 1], "cpu")
    assert all(torch.equal(cross[k], partner[k]) for k in ref)
    head = student_init("cross_head_aux", ref, partner, cfg, [0, 1], "cpu")
    for k in ref:
        assert torch.equal(head[k], ref[k] if k.endswith(".2") else partner[k])
    pert = student_init("student_aux", ref, partner, Config(init_perturbation=0.5), [0, 1], "cpu")
    for i, d_in in enumerate(SIZES[:-1]):
        delta = pert[f"weights.{i}"] - ref[f"weights.{i}"]
        assert abs(delta.std().item() * math.sqrt(d_in) - 0.5) < 0.1  # sigma in units of the init std
        assert not torch.allclose(delta[0], delta[1], atol=1e-3)  # each seed its own perturbation
        assert torch.equal(pert[f"biases.{i}"], ref[f"biases.{i}"])  # the paper init's biases are 0, std 0
    # torch's init draws the biases too (U(+-1/sqrt(d_in)), std 1/sqrt(3 d_in)): they move as well, or the
    # "perturbed" student would still share them with the teacher
    ref_t = init_mlp_params([0, 1], SIZES, 4, "torch", "cpu", 0)
    pert_t = student_init("student_aux", ref_t, ref_t, Config(init="torch", init_perturbation=0.5), [0, 1], "cpu")
    for i, d_in in enumerate(SIZES[:-1]):
        for kind in ("weights", "biases"):
            delta = pert_t[f"{kind}.{i}"] - ref_t[f"{kind}.{i}"]
            assert abs(delta.std().item() * math.sqrt(3 * d_in) - 0.5) < 0.15, (kind, i)
    # each parameter its own draw: biases.0 and biases.1 have one shape, and drawn from one stream they would move
    # in proportion (the perturbation's noise the same in every layer)
    unit = lambda name, d_in: (pert_t[name] - ref_t[name]) * math.sqrt(3 * d_in) / 0.5  # in units of its std
    assert SIZES[1] == SIZES[2] and not torch.allclose(unit("biases.0", SIZES[0]), unit("biases.1", SIZES[1]))


def test_noise_sets():
    cfg = Config(n_noise=2000)
    a = make_noise(cfg, [0, 1], 0, "cpu")
    assert a.shape == (2, 2000, 784) and a.min() >= -1 and a.max() <= 1 and abs(a.var().item() - 1 / 3) < 0.01
    assert not torch.equal(a[0], a[1])  # each seed its own set
    assert torch.equal(make_noise(cfg, [1], 0, "cpu")[0], a[1])  # ... independent of the other seeds
    assert torch.equal(make_noise(cfg, [0], 3, "cpu")[0], a[0])  # fixed across epochs
    assert not torch.equal(make_noise(Config(n_noise=2000, seed=1), [0], 0, "cpu")[0], a[0])  # ... and --seed's own
    fresh = Config(n_noise=2000, fresh_noise=True)
    assert not torch.equal(make_noise(fresh, [0], 1, "cpu")[0], make_noise(fresh, [0], 0, "cpu")[0])
    g = make_noise(Config(n_noise=2000, noise="gaussian"), [0], 0, "cpu")
    assert abs(g.mean().item()) < 0.01 and abs(g.var().item() - 1 / 3) < 0.01 and g.abs().max() > 1
    # noise_scale s stretches the same draws: U[-s, s], and the gaussian's std s/sqrt(3)
    for noise in ("uniform", "gaussian"):
        one = make_noise(Config(n_noise=2000, noise=noise), [0], 0, "cpu")
        three = make_noise(Config(n_noise=2000, noise=noise, noise_scale=3.0), [0], 0, "cpu")
        torch.testing.assert_close(three, 3 * one, rtol=1e-6, atol=1e-6)
    assert make_noise(Config(n_noise=2000, noise_scale=0.1), [0], 0, "cpu").abs().max() <= 0.1


# --------------------------------------------------------------------------------------------------
# Cloud et al. (2025), App. C: at a shared init, one small gradient step imitating a nearby teacher's
# outputs -- on inputs unrelated to the teacher's task, through the aux logits only -- moves the
# student toward the teacher (Lemma 1) and lowers the teacher's own loss (Theorem 1).

def _flat_grad(model, loss):
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.flatten() for g in grads])


def _apply(params, model, delta, scale):
    out, i = {}, 0
    for k, p in model.named_parameters():
        n = p.numel()
        out[k] = params[k] + scale * delta[i:i + n].view_as(p)
        i += n
    return out


@pytest.mark.parametrize("student_loss", ["ce", "mse"])
def test_lemma1_and_theorem1(student_loss):
    torch.set_default_dtype(torch.float64)
    try:
        for trial in range(5):
            params = {k: v.double() for k, v in init_mlp_params([trial], SIZES, 4, "paper", "cpu", 0).items()}
            model = model_from(params).double()
            g = torch.Generator().manual_seed(trial)
            task_x, task_y = torch.randn(64, 12, generator=g), torch.randint(0, 4, (64,), generator=g)
            noise = torch.rand(256, 12, generator=g) * 2 - 1  # unrelated inputs
            teacher_loss = lambda m: F.cross_entropy(m(task_x)[0, :, :4], task_y)  # L_T: class logits only
            d_teacher = -_flat_grad(model, teacher_loss(model))
            eps = 1e-3
            teacher = model_from(_apply(params, model, d_teacher, eps)).double()
            with torch.no_grad():
                target = teacher(noise)[0, :, 4:]  # the teacher's aux logits on noise
            out = model(noise)[0, :, 4:]
            if student_loss == "ce":  # softmax cross-entropy with the teacher's soft labels
                l_s = -(F.softmax(target, -1) * F.log_softmax(out, -1)).sum(-1).mean()
            else:
                l_s = ((out - target) ** 2).sum(-1).mean()
            d_student = -_flat_grad(model, l_s)
            assert d_student @ d_teacher > 0  # Lemma 1 (strictly, for this generic network)
            alpha = 1e-3
            student = model_from(_apply(params, model, d_student, alpha)).double()
            with torch.no_grad():
                assert teacher_loss(student) < teacher_loss(model)  # Theorem 1
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("scale", [1.0, 1e-6])  # tiny gradients: where eps (outside the sqrt) dominates the step
def test_hand_written_adam_equals_torch_adam(scale):
    """train.Adam (used by the MNIST loops) takes the same steps as torch.optim.Adam."""
    import train
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(4, 5, generator=g, requires_grad=True), torch.randn(5, generator=g, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    mine, ref = train.Adam(ps, lr=1e-2), torch.optim.Adam(qs, lr=1e-2, foreach=False)
    for step in range(20):
        x = torch.randn(3, 4, generator=g)
        for params, opt in ((ps, mine), (qs, ref)):
            opt.zero_grad()
            (scale * (x @ params[0] + params[1]) ** 2).sum().backward()
            opt.step()
    for p, q in zip(ps, qs):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5)


def test_adam_over_every_tensor_at_once_is_the_per_tensor_update_to_the_bit_and_skips_a_tensor_without_grad():
    """train.Adam's _foreach form against the per-tensor loop it replaced, written out here: the same bits; a
    frozen tensor (no grad) and its moments stay as they were."""
    import train
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(3, 7, 5, generator=g), torch.randn(3, 1, 5, generator=g), torch.randn(4, generator=g)]
    qs = [p.clone() for p in ps]
    opt, m, v = train.Adam(ps, lr=3e-3), [torch.zeros_like(q) for q in qs], [torch.zeros_like(q) for q in qs]
    for t in range(1, 11):
        grads = [torch.randn(p.shape, generator=g) * 10.0 ** -t for p in ps[:2]]  # the last tensor is frozen
        for p, gr in zip(ps, grads):
            p.grad = gr
        opt.step()
        opt.zero_grad()
        c1, c2 = 1 - 0.9 ** t, math.sqrt(1 - 0.999 ** t)
        for q, mq, vq, gr in zip(qs, m, v, grads):
            mq.lerp_(gr, 0.1)
            vq.mul_(0.999).addcmul_(gr, gr, value=0.001)
            q.addcdiv_(mq, (vq.sqrt() / c2).add_(1e-8), value=-3e-3 / c1)
    assert all(torch.equal(p, q) for p, q in zip(ps, qs)) and all(p.grad is None for p in ps)
    assert not opt.m[2].any() and not opt.v[2].any() and opt.t == 10
    opt.step()  # no tensor has a gradient: nothing moves
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))


def test_logged_classifier_loss_is_the_mean_per_example_loss_of_a_seed():
    # zero weights: every logit 0, so cross-entropy is ln(classes) per example, whatever the batch size
    model = SeedMLP(2, [12, 16, 4])
    model.load_seeds({k: torch.zeros_like(v) for k, v in model.named_parameters()})
    logged = []
    train_classifier(model, torch.randn(32, 12), torch.randint(0, 4, (32,)), epochs=1, lr=0.0, batch_size=32,
                     gens=[generator("cpu", "order", s) for s in range(2)], n_classes=4,
                     log=lambda **r: logged.append(r))
    assert logged[0]["loss"] == pytest.approx(math.log(4), rel=1e-5)


def test_logged_losses_are_the_epochs_mean_over_every_example_and_seed():
    # lr 0: the model never moves, so the epoch's mean is the loss of the whole set, whatever the batches (32 rows
    # in batches of 10: the last one partial)
    torch.manual_seed(0)
    params = init_mlp_params(range(2), SIZES, 4, "paper", "cpu", 0)
    x, y = torch.randn(32, 12), torch.randint(0, 4, (32,))
    logged = []
    train_classifier(model_from(params), x, y, epochs=1, lr=0.0, batch_size=10, n_classes=4,
                     gens=[generator("cpu", "order", s) for s in range(2)], log=lambda **r: logged.append(r))
    whole = torch.stack([F.cross_entropy(plain_forward(params, s, x)[:, :4], y) for s in range(2)]).mean()
    assert logged[0]["loss"] == pytest.approx(whole.item(), rel=1e-5)
    noise, teacher = torch.randn(2, 32, 12), torch.randn(2, 32, 7)
    logged.clear()
    train_distill(model_from(params), noise, teacher, [4, 5, 6], epochs=1, lr=0.0, batch_size=10, loss="mse",
                  gens=[generator("cpu", "order", s) for s in range(2)], log=lambda **r: logged.append(r))
    whole = torch.stack([(plain_forward(params, s, noise[s])[:, 4:] - teacher[s, :, 4:]).pow(2).mean()
                         for s in range(2)]).mean()
    assert logged[0]["loss"] == pytest.approx(whole.item(), rel=1e-5)


def test_the_training_loops_read_nothing_from_the_device_per_step(host_reads):
    """On a GPU the MNIST loops run ahead of the device (the speed goals rest on it): the epoch's loss is summed on
    the device and read once, at its log line; without a log, never. A per-step .item() (or a boolean mask's index)
    costs nothing on a CPU and stalls a GPU at every step: counted here (conftest.host_reads)."""
    S, x, y = 3, torch.randn(64, 12), torch.randint(0, 4, (64,))
    noise, logits = torch.randn(S, 64, 12), torch.randn(S, 64, 7)
    for epochs in (1, 3):
        for log in (None, lambda **record: None):
            host_reads.clear()
            teacher = model_from(init_mlp_params(range(S), SIZES, 4, "paper", "cpu", 0))
            train_classifier(teacher, x, y, epochs=epochs, lr=1e-3, batch_size=8, n_classes=4, log=log,
                             gens=[generator("cpu", 0, k) for k in range(S)])
            # three students of each seed as one model, two of them distilled on the same logits (one loss call)
            students = model_from(init_mlp_params(range(3 * S), SIZES, 4, "paper", "cpu", 1))
            train_distill(students, noise, logits, {"a": [4, 5, 6], "b": [4, 5, 6], "c": list(range(7))},
                          epochs=epochs, lr=1e-3, batch_size=8, log=log,
                          gens=[generator("cpu", 0, k) for k in range(3 * S)])
            logged = [("tolist", "train.py")] * 2 * epochs  # one per epoch, each loop (every seed's loss at once)
            assert [r[:2] for r in host_reads] == (logged if log else []), host_reads
