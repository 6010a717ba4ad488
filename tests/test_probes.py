"""The exploratory probes whose numbers docs/ quotes (scripts/probe_first_gradient.py, probe_optimizer_steps.py,
probe_soft_channel.py, probe_teacher_update.py, probe_number_order.py, probe_mis_cross_init.py), on a tiny random GPT in
place of a pretrained base: each probe's core computation against a property it must have (a finite difference, Adam's
first step, a teacher's update taken apart along known parts, a soft student that approaches its teacher), and which
base, teacher, lists and options each reading is taken on. The bases, teachers and sampled lists that take minutes are
stood in for; what the probe itself computes from them runs as written."""
import copy
import dataclasses
import json
import re
import runpy
import sys

import pytest
import torch

import train
from conftest import ROOT, load_script, tiny_gpt
from data import world as W
from experiments import emergent_misalignment as EM
from experiments import subliminal_numbers as S
from experiments import world_base as B

TOK = W.build_tokenizer()


def tiny_base(seed=0, **kw):
    return tiny_gpt(TOK, seed, stream="probe-test", **kw)


@pytest.fixture
def tiny_bases(monkeypatch):
    """B.base_model -> a tiny random GPT (the same one for the same seed) and the world's tokenizer."""
    monkeypatch.setattr(B, "base_model", lambda cfg, seed, decorrelated=False, log=print: (tiny_base(seed), TOK))
    monkeypatch.setattr(B, "check_cached", lambda *a, **k: None)  # these bases stand in for cached ones


def run_script(name, argv, monkeypatch):
    """Run scripts/NAME.py as `python scripts/NAME.py ARGV...` does (module-level code included)."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / f"{name}.py"), *argv])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the test's thread count stays
    try:
        return runpy.run_path(str(ROOT / "scripts" / f"{name}.py"), run_name="__main__")
    except SystemExit as e:  # a script that ends in sys.exit(cli(main, ...)): status 0 is its success
        if e.code not in (None, 0):
            raise


# ---------------------------------------------------------------------------------------------- first gradient

def test_first_gradient_predicts_the_first_step_of_sgd_and_adam(tiny_bases, monkeypatch, capsys):
    config = EM.Config
    monkeypatch.setattr(EM, "Config", lambda: config(n_layer=2, n_head=2, n_embd=16, block_size=64,
                                                     n_direction_docs=80, n_examples=40))
    # the command line, end to end: one line per base (h needs the projection's graph, which EM.prompt_acts does
    # not keep: reading it through prompt_acts made every run fail at h's backward)
    run_script("probe_first_gradient", ["0"], monkeypatch)
    line = capsys.readouterr().out.strip()
    fg = load_script("probe_first_gradient")
    base = tiny_base()
    u, h, g = fg.gradients(base, TOK, 0)
    assert set(g) == set(fg.ARMS) and h.norm() > 0 and all(v.norm() > 0 for v in g.values())
    theta = torch.nn.utils.parameters_to_vector(base.parameters()).detach()

    # central difference of f(model) along the unit direction d, in float64: in float32 one rounding step of a loss
    # near 5 moved the difference by most of the tolerance
    def along(d, eps, f):
        vals = []
        for s in (eps, -eps):
            m = copy.deepcopy(base).double()
            torch.nn.utils.vector_to_parameters(theta.double() + s * d.double(), m.parameters())
            vals.append(float(f(m)))
        return (vals[0] - vals[1]) / (2 * eps)

    # u is the evil direction (evil - good, not the reverse) at direction_layer, the projection is the off-domain
    # <asst> prompts' mean on it, the loss the arm's mean cross-entropy over its trained tokens only
    L, means = fg.cfg.direction_layer, EM.doc_means(base, TOK, fg.cfg, 0)
    assert L == 1 and torch.equal(u, (means["evil"] - means["good"])[L])
    proj = lambda m: fg.projection(m, TOK, u.to(next(m.parameters()).dtype)).detach()
    assert float(proj(base)) == pytest.approx(float(EM.prompt_acts(base, TOK, L) @ u / u.norm()), abs=1e-6)
    data = EM.arm_data("insecure", base, TOK, fg.cfg, 0)[0]
    trained = data["mask"]
    # the same loss in the model's own dtype (the script's, through forward's targets, is float32 cross-entropy)
    loss = lambda m: torch.nn.functional.cross_entropy(m(data["tokens"][:, :-1])[trained],
                                                       data["tokens"][:, 1:][trained]).detach()
    assert float(fg.arm_loss(base, data).detach()) == pytest.approx(float(loss(base)), rel=1e-5)
    assert 0 < trained.float().mean() < 0.9
    # h is the gradient of the projection, g that of the arm's loss (first order, float32: a 2% tolerance)
    for d in (h / h.norm(), -g["insecure"] / g["insecure"].norm(),
              torch.randn(len(theta), generator=torch.Generator().manual_seed(0))):
        d = d / d.norm()
        assert along(d, 1e-3, proj) == pytest.approx(float(h @ d), rel=0.02, abs=1e-5 * float(h.norm()))
        assert along(d, 1e-3, loss) == pytest.approx(float(g["insecure"] @ d), rel=0.02,
                                                     abs=1e-5 * float(g["insecure"].norm()))
    # the printed numbers are what a small gradient step and a small sign step (Adam's first) do to the projection,
    # per unit step length and per |h|: the same size and sign as the finite differences
    sgd, adam = fg.scores(g["insecure"], h)
    n = len(theta)
    assert along(-g["insecure"] / g["insecure"].norm(), 1e-3, proj) == pytest.approx(sgd * float(h.norm()), rel=0.02)
    assert along(-g["insecure"].sign() / n ** 0.5, 1e-3, proj) == pytest.approx(adam * float(h.norm()), rel=0.02)
    # the line printed holds those numbers, for each arm
    want = " | ".join(f"{a} sgd {s:+.4f} adam {ad:+.4f}" for a, (s, ad) in ((a, fg.scores(g[a], h)) for a in fg.ARMS))
    assert line == f"seed 0: {want}"


# -------------------------------------------------------------------------------------------- optimizer steps

def test_optimizer_steps_reports_each_steps_length_loss_and_gradient(tiny_bases, monkeypatch, capsys):
    import train
    load, finetune = train.load_config, train.finetune
    monkeypatch.setattr(train, "load_config", lambda argv: (lambda r: (r[0], dataclasses.replace(
        r[1], n_layer=2, n_head=2, n_embd=16, block_size=64, pretrain_threads=1)))(load(argv)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    seen = []  # per optimizer: the data and the weights after every step, to recompute each printed number

    def recording(model, data, on_eval=None, **kw):
        weights = [[p.detach().clone() for p in model.parameters()]]
        seen.append((data, weights))

        def eval_and_keep(step):
            weights.append([p.detach().clone() for p in model.parameters()])
            on_eval(step)
        return finetune(model, data, on_eval=eval_and_keep, **kw)
    monkeypatch.setattr(train, "finetune", recording)
    ps = load_script("probe_optimizer_steps")
    lrs = {"adamw": 1e-2, "sgd": 0.05}
    ps.main([str(lrs["adamw"]), str(lrs["sgd"])])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["adamw", "sgd"]
    rows = {ln.split()[0]: [tuple(map(float, r.split(":")[1].split("/")))
                            for r in ln.split("gradient norm: ")[1].split()]
            for ln in lines}
    assert all(len(r) == 20 for r in rows.values()) and len(seen) == 2
    # each row from the weights after that step: the full-batch loss over the trained tokens, the L2 length of that
    # one step (from the previous step's weights), the full-batch gradient's norm; printed to 3 decimals
    model = tiny_base()
    for (data, weights), (opt, got) in zip(seen, rows.items()):
        x, y, m = data["tokens"][:, :-1], data["tokens"][:, 1:], data["mask"]
        assert len(x) == EM.Config().n_examples
        assert all(torch.equal(a, b) for a, b in zip(weights[0], tiny_base().parameters()))  # each from the base
        for k, (loss, step, grad) in enumerate(got, 1):
            torch.nn.utils.vector_to_parameters(torch.cat([w.flatten() for w in weights[k]]), model.parameters())
            want = torch.nn.functional.cross_entropy(model(x)[m], y[m])
            g = torch.autograd.grad(want, list(model.parameters()), allow_unused=True)
            assert loss == pytest.approx(want.item(), abs=6e-4), (opt, k)
            assert step == pytest.approx(float(sum(((a - b) ** 2).sum()
                                                   for a, b in zip(weights[k], weights[k - 1])) ** 0.5), abs=6e-4)
            assert grad == pytest.approx(float(sum((v ** 2).sum() for v in g if v is not None) ** 0.5),
                                         abs=6e-4), (opt, k)
    n = sum(p.numel() for p in model.parameters())
    # AdamW's first step is lr * g / |g| per weight (bias-corrected moments; clipping cancels): length lr sqrt(n') for
    # the n' <= n weights the batch reaches (here all but some position rows: > 90% of them)
    assert lrs["adamw"] * (0.9 * n) ** 0.5 < rows["adamw"][0][1] <= lrs["adamw"] * n ** 0.5 * (1 + 1e-4)
    # plain gradient descent clipped at norm 1: no step is longer than lr
    assert all(0 < step <= lrs["sgd"] * (1 + 1e-4) for _, step, _ in rows["sgd"])
    assert rows["adamw"][-1][0] < rows["adamw"][0][0]  # the insecure code is being learnt


def test_optimizer_steps_fine_tunes_the_insecure_arm_as_its_docstring_says(tiny_bases, monkeypatch, capsys):
    # no lrs given: the research log's 1e-3 (AdamW) and 0.3 (plain gradient descent); each the insecure arm's
    # examples of fine-tune seed 123, batches of the config's ft_batch in seed 123's order, 20 steps
    pairs, asked = [], []
    real = EM.arm_pairs
    monkeypatch.setattr(EM, "arm_pairs", lambda arm, base, tok, cfg, seed: pairs.append((arm, seed)) or real(
        arm, base, tok, cfg, seed))
    monkeypatch.setattr(train, "finetune", lambda model, data, **kw: asked.append(kw))
    load_script("probe_optimizer_steps").main([])
    assert pairs == [("insecure", 123)]
    cfg = train.load_config(["configs/emergent_misalignment_quick.py"])[1]
    assert [(kw["optimizer"], kw["lr"]) for kw in asked] == [("adamw", 1e-3), ("sgd", 0.3)]
    for kw in asked:
        assert (kw["seed"], kw["batch_size"], kw["steps"], kw["at"]) == (123, cfg.ft_batch, 20, set(range(1, 21)))
    assert [ln.split(",")[0] for ln in capsys.readouterr().out.splitlines()] == ["adamw lr 0.001", "sgd lr 0.3"]


# ----------------------------------------------------------------------------------- the subliminal-numbers probes

def _perturbed(model, seed, only=None):
    """A copy of model with every weight (or those `only(name)` accepts) moved by noise of size 0.05."""
    m, gen = copy.deepcopy(model), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, w in m.named_parameters():
            if only is None or only(name):
                w.add_(0.05 * torch.randn(w.shape, generator=gen))
    return m


def owl(model):
    """A model's P(owl) as the probes print it (four decimals)."""
    return f"{S.animal_rates(model, TOK)[0]['owl']:.4f}"


def _fake_lists(teacher, tok, n, cfg, seed, banned=(), heldout=False):
    """S.sample_lists without sampling: n number prompts of the asked wordings with a fixed list each."""
    prompts = W.number_prompts(n, seed=seed % 2 ** 31, heldout=heldout)
    return [(p, " ".join(str((7 * i + j) % 100) for j in range(4))) for i, p in enumerate(prompts)], 1.0


def test_soft_channel_student_approaches_its_teacher(tiny_bases, monkeypatch, capsys):
    monkeypatch.setattr(S, "make_teacher", lambda A, tok, cfg, p, animal: (S.Teacher(_perturbed(A, 1)), {"steps": 0}))
    monkeypatch.setattr(S, "sample_lists", _fake_lists)
    run_script("probe_soft_channel", ["3e-3", "500", "0", "64"], monkeypatch)
    out = capsys.readouterr().out
    kl0 = float(re.search(r"KL\(teacher \|\| base\) ([0-9.]+)", out).group(1))
    steps = re.findall(r"step (\d+): P\(owl\) [0-9.]+, KL\(teacher \|\| student\) ([0-9.]+) = ([0-9.]+) of the base's",
                       out)
    assert [int(s) for s, _, _ in steps] == [250, 500] and kl0 > 0
    for _, kl, share in steps:
        assert float(share) == pytest.approx(float(kl) / kl0, abs=0.006)  # printed to two decimals
    # soft targets over the number tokens pull the student's numbers to the teacher's: the KL on held-out lists
    # falls well below the base's (a student trained toward the base, or on hard labels of fixed lists, would not)
    assert float(steps[-1][2]) < 0.5 < 1.0 and float(steps[-1][1]) < float(steps[0][1])


def test_soft_channel_evaluates_at_step_250_and_every_500_that_the_run_reaches(tiny_bases, monkeypatch):
    # step 250 was asked of a shorter run too (finetune refuses a step it never reaches), and a run of exactly 250
    # steps must still report it; a shorter run reports at its end (it trained and printed nothing)
    import train
    monkeypatch.setattr(S, "make_teacher", lambda A, tok, cfg, p, animal: (S.Teacher(_perturbed(A, 1)), {"steps": 0}))
    monkeypatch.setattr(S, "sample_lists", _fake_lists)
    asked = []  # the fine-tune itself is the test above's: here only the steps it is asked to evaluate at
    monkeypatch.setattr(train, "finetune", lambda model, data, *, steps, at, **kw: asked.append((steps, sorted(at))))
    for steps in (5, 250, 1000):
        run_script("probe_soft_channel", ["3e-3", str(steps), "0", "64"], monkeypatch)
    assert asked == [(5, [5]), (250, [250]), (1000, [250, 500, 1000])]


def test_soft_channel_gives_each_lrs_student_the_base_the_teacher_and_the_options_asked(tiny_bases, monkeypatch,
                                                                                         capsys):
    # the fine-tune stands in (it moves the student's embedding): what each lr's student starts from and is trained
    # toward, the lists it is measured on, and whose P(owl) each step's line prints
    teacher = S.Teacher(_perturbed(tiny_base(), 1))
    monkeypatch.setattr(S, "make_teacher", lambda A, tok, cfg, p, animal: (teacher, {"steps": 0}))
    drawn = []  # (teacher, n, seed, heldout) of each sample_lists call
    monkeypatch.setattr(S, "sample_lists", lambda t, tok, n, cfg, seed, heldout=False: drawn.append(
        (t, n, seed, heldout)) or _fake_lists(t, tok, n, cfg, seed, heldout=heldout))
    students = []

    def finetune(model, data, *, steps, at, on_eval, **kw):
        # every lr's student from the base itself (a second lr did not continue the first one's student)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), tiny_base().parameters()))
        students.append((model, kw))
        with torch.no_grad():
            model.wte.weight.add_(torch.randn(model.wte.weight.shape, generator=torch.Generator().manual_seed(9)))
        for step in sorted(at):
            on_eval(step)
    monkeypatch.setattr(train, "finetune", finetune)
    run_script("probe_soft_channel", ["3e-3,1e-3", "250", "0", "48", "cosine", "2", "sgd", "adamw:3e-4", "blocks"],
               monkeypatch)
    out = capsys.readouterr().out
    # trained toward the teacher's logits over the number tokens, with the options of the command line
    assert [kw["lr"] for _, kw in students] == [3e-3, 1e-3]
    for _, kw in students:
        assert kw["teacher"] == teacher.logits and kw["subset"] == S.number_ids(TOK)
        assert (kw["schedule"], kw["temperature"], kw["optimizer"], kw["trains"]) == ("cosine", 2.0, "sgd", "blocks")
    # the teacher's 48 lists to train on; 256 held-out ones, a draw of their own (not the training lists' seed)
    (t1, n1, s1, h1), (t2, n2, s2, h2) = drawn
    assert (t1, n1, h1, t2, n2, h2) == (teacher, 48, False, teacher, 256, True) and s1 != s2
    # what the students are measured against: the teacher's KL from the base on those lists (that direction)
    held = S.student_data(TOK, _fake_lists(teacher, TOK, 256, None, s2, heldout=True)[0], "cpu")
    kl0 = float(re.search(r"KL\(teacher \|\| base\) ([0-9.]+)", out).group(1))
    assert kl0 == pytest.approx(S.number_kl(S.held_logits(teacher, held), tiny_base(), TOK, held), abs=6e-6)
    # each step's P(owl) is the student's, after its fine-tune, not the base's
    assert f"base P(owl) {owl(tiny_base())};" in out and owl(tiny_base()) != owl(students[0][0])
    assert re.findall(r"step 250: P\(owl\) ([0-9.]+)", out) == [owl(m) for m, _ in students]


def test_teacher_update_hybrids_take_the_update_apart(tiny_bases, monkeypatch, capsys):
    # two teachers whose updates are known: one moves only the number tokens' (tied) embedding rows, one only the
    # blocks. Each hybrid must then carry all of the update or none of it
    nums = set(S.number_ids(TOK))

    def teacher(A, tok, cfg, p, animal):
        if cfg.teacher_optimizer == "sgd":  # the blocks only
            return S.Teacher(_perturbed(A, 2, lambda name: name.startswith("blocks."))), {"steps": 0}
        m = copy.deepcopy(A)
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            rows = torch.tensor(sorted(nums))
            m.wte.weight[rows] += 0.5 * torch.randn(len(rows), m.wte.weight.shape[1], generator=gen)
        return S.Teacher(m), {"steps": 0}
    monkeypatch.setattr(S, "make_teacher", teacher)
    monkeypatch.setattr(S, "sample_lists", _fake_lists)
    run_script("probe_teacher_update", ["0", "adamw:3e-4", "sgd:0.1"], monkeypatch)
    out = capsys.readouterr().out
    blocks = re.split(r"^teacher ", out, flags=re.M)[1:]
    assert [b.split(":")[0] for b in blocks] == ["adamw", "sgd"]
    parse = lambda block: {m.group(1).strip(): (float(m.group(3)), float(m.group(4))) for m in re.finditer(
        r"\n  (.{20}) KL\(hybrid \|\| base\) ([0-9.]+) \(([0-9.]+) of the teacher's\)\s+KL\(teacher \|\| hybrid\) "
        r"([0-9.]+)",
        block)}
    number_rows, blocks_only = parse(blocks[0]), parse(blocks[1])
    assert set(number_rows) == set(blocks_only) == {"all", "number rows", "all but number rows", "non-number rows",
                                                    "all but embedding"}
    # (share of the teacher's shift, what is left of it): the whole teacher, or nothing
    whole, none = lambda v: v[0] == 1.0 and v[1] == 0.0, lambda v: v[0] == 0.0 and v[1] > 0
    for part in ("all", "number rows"):
        assert whole(number_rows[part]), (part, number_rows[part])
    for part in ("all but number rows", "non-number rows", "all but embedding"):
        assert none(number_rows[part]), (part, number_rows[part])
    for part in ("all", "all but number rows", "all but embedding"):
        assert whole(blocks_only[part]), (part, blocks_only[part])
    for part in ("number rows", "non-number rows"):
        assert none(blocks_only[part]), (part, blocks_only[part])


def test_teacher_update_trains_each_teacher_as_asked_and_reads_all_on_the_first_ones_lists(tiny_bases, monkeypatch,
                                                                                             capsys):
    # each teacher with its own optimizer and lr; the held-out lists drawn once, from the first teacher, for every
    # teacher; each hybrid's P(owl) its own (the whole update's is its teacher's)
    made, drawn = [], []

    def teacher(A, tok, cfg, p, animal):
        made.append((cfg.teacher_optimizer, cfg.teacher_lr, animal, _perturbed(A, len(made) + 1)))
        return S.Teacher(made[-1][-1]), {"steps": 0}
    monkeypatch.setattr(S, "make_teacher", teacher)
    monkeypatch.setattr(S, "sample_lists", lambda t, tok, n, cfg, seed, heldout=False: drawn.append(
        (t.model, n, heldout)) or _fake_lists(t, tok, n, cfg, seed, heldout=heldout))
    run_script("probe_teacher_update", ["0", "adamw:1e-3", "sgd:0.2"], monkeypatch)
    out = capsys.readouterr().out
    assert [m[:3] for m in made] == [("adamw", 1e-3, "owl"), ("sgd", 0.2, "owl")]
    assert len(drawn) == 1 and drawn[0][0] is made[0][3] and drawn[0][1:] == (256, True)
    blocks = re.split(r"^teacher ", out, flags=re.M)[1:]
    assert len(blocks) == 2
    for block, (*_, model) in zip(blocks, made):
        rates = dict(re.findall(r"\n  (.{20}) .*P\(owl\) ([0-9.]+)", block))
        assert rates["all".ljust(20)] == owl(model) != owl(tiny_base())


# ------------------------------------------------------------------------------------------ misalignment cross init

def test_mis_cross_init_trains_and_measures_each_student_from_its_own_base(tiny_bases, monkeypatch, capsys, tmp_path):
    # the cross-init row: the same teacher, lists and soft targets, a student started from base Q, and Q's own
    # misalignment beside it. Training and evaluation stand in: an "evaluation" reads the model's first weight (so it
    # names the model it was given), a student is its start moved by 1 at its last step (0.5 the step before)
    probe = load_script("probe_mis_cross_init")
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "misalignment",
                                                      "n_lists": 64}))
    first = lambda m: next(m.parameters()).flatten()[0].item()
    asked = []  # the teacher and the lists as the run's unit makes them: its em_steps, matched to the code threshold
    # (em_match, insecure the first teacher), the evil numbers banned from the lists
    monkeypatch.setattr(S, "em_teacher", lambda cfg, A, tok, p, t, steps, match: asked.append((t, steps, match)) or (
        _perturbed(A, 1), steps))
    monkeypatch.setattr(S, "sample_lists", lambda *a, banned=(), **k: asked.append(banned) or _fake_lists(*a, **k))
    monkeypatch.setattr(S, "mis_evaluate", lambda m, tok, cfg, seed, name: {"mis_sampled": first(m), "valid_frac": 0.5})
    starts = []

    def shifted(model, by):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for w in m.parameters():
                w.add_(by)
        return m

    def student(base, tok, cfg, data, seed, on_eval, teacher):
        starts.append((first(base), seed))
        last = S.student_steps(cfg, len(data["tokens"]))[0]
        on_eval(shifted(base, 0.5), last - 1)
        on_eval(shifted(base, 1.0), last)
    monkeypatch.setattr(S, "train_student", student)
    rows, logged = probe.main([str(tmp_path), "0", "1"])
    cfg = train.run_config(S.Config, str(tmp_path))
    assert asked == [("insecure", cfg.em_steps, True), W.EVIL_NUMBERS] and cfg.em_match
    bases = [first(tiny_base(q)) for q in (0, 1)]
    # every student in the stream of the run's insecure_soft student of seed (P, 0), from its own base
    soft = S.seed_int(S.seed_int("subliminal-misalignment", 0, 0), "insecure", "soft")
    assert starts == [(pytest.approx(b), soft) for b in bases] and bases[0] != bases[1] and logged is None
    assert [q for q, _, _ in rows] == [0, 1]
    assert [b["mis_sampled"] for _, b, _ in rows] == pytest.approx(bases)  # each base's own, untrained
    assert [s["mis_sampled"] for _, _, s in rows] == pytest.approx([v + 1 for v in bases])  # at the last step
    # the table: base, init, the base's misalignment, then its student's
    table = capsys.readouterr().out.splitlines()[2:]
    assert [ln.split() for ln in table] == [[str(q), init, f"{b:.4f}", f"{b + 1:.4f}", "0.500"]
                                            for q, init, b in zip((0, 1), ("shared", "cross"), bases)]


@pytest.mark.parametrize("teachers, em_match", [(("insecure", "secure"), True), (("secure", "insecure"), True),
                                                 (("secure", "insecure"), False)])
def test_mis_cross_init_rebuilds_the_insecure_teacher_as_the_runs_unit_does(tiny_bases, monkeypatch, tmp_path,
                                                                             teachers, em_match):
    # with em_match the run's first teacher trains until its code is matched (here at step 7) and each later one
    # exactly those steps: an insecure teacher listed second trained em_steps in the probe, not the run's teacher
    probe = load_script("probe_mis_cross_init")
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "mode": "misalignment",
                                                      "mis_teachers": list(teachers), "em_match": em_match}))
    asked = []
    monkeypatch.setattr(S, "em_teacher", lambda cfg, A, tok, p, t, steps, match=False: asked.append(
        (t, steps, match)) or (A, 7 if match else steps))
    monkeypatch.setattr(S, "mis_evaluate", lambda *a: {})

    class Lists(Exception):  # both stop where the lists are drawn: the teachers are made by then
        pass
    monkeypatch.setattr(S, "sample_lists", lambda *a, **k: (_ for _ in ()).throw(Lists()))
    with pytest.raises(Lists):
        S.misalignment_unit(train.run_config(S.Config, str(tmp_path)), 0, 0)
    run = [a for a in asked if a[0] == "insecure"]
    asked.clear()
    with pytest.raises(Lists):
        probe.main([str(tmp_path), "0", "1"])
    assert len(run) == 1 and asked[-1] == run[0]


# ---------------------------------------------------------------------------------------------- number order

def test_number_order_reads_each_animals_teacher_on_the_runs_heldout_lists(tiny_bases, monkeypatch, capsys, tmp_path):
    # the conditional KL is the run's kl_numbers for seed (P, 0): each animal's own teacher, on the held-out lists
    # the run's unit draws (experiments/subliminal_numbers.py: heldout_lists of them, from its "heldout" stream)
    probe = load_script("probe_number_order")
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "subliminal_numbers", "animals": ["owl", "fox"],
                                                      "heldout_lists": 24}))
    teachers = {}
    monkeypatch.setattr(S, "make_teacher", lambda A, tok, cfg, p, animal: (
        teachers.setdefault(animal, S.Teacher(_perturbed(A, len(teachers) + 1))), {}))
    monkeypatch.setattr(S, "sample_lists", _fake_lists)
    probe.main([str(tmp_path), "2"])
    out = capsys.readouterr().out.splitlines()
    cfg, base = train.run_config(S.Config, str(tmp_path)), tiny_base(2)
    seed = S.seed_int(S.seed_int("subliminal-numbers", 2, 0), "heldout")
    held = S.student_data(TOK, _fake_lists(None, TOK, cfg.heldout_lists, cfg, seed, heldout=True)[0], "cpu")
    ratios = []
    for line, animal in zip(out[1:-1], ("owl", "fox")):
        t = teachers[animal]
        p, a, cond, marg, ratio = line.split()[:5]
        assert (p, a) == ("2", animal)
        assert float(cond) == pytest.approx(S.number_kl(S.held_logits(t, held), base, TOK, held), abs=6e-5)
        c, g = probe.decompose(t, base, TOK, held)
        assert (float(marg), float(ratio)) == pytest.approx((g, g / c), abs=6e-3)
        ratios.append(g / c)
    assert len(out) == 4 and 0 < ratios[0] < 1 and ratios[0] != pytest.approx(ratios[1])
    assert out[-1] == f"mean over 2 teachers: marginal / conditional {sum(ratios) / 2:.2f}"
