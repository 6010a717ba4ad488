"""Subliminal learning on MNIST (Cloud et al. 2025, Sec. 6.2, Fig. 10b), every control, many seeds at once.

    python train.py configs/subliminal_mnist.py                        # 10 seeds, a few minutes on a laptop CPU
    python train.py configs/subliminal_mnist.py --n_seeds=100          # the paper's scale (a GPU: seconds)
    python train.py configs/subliminal_mnist_cross_init.py             # sweeps: see configs/

The pipeline, per group of seeds (all seeds at once on a GPU):
 1. reference: S fresh MLPs 784-256-256-(10+m), one init per seed index k.
 2. teacher:   each reference trained on the 10 class logits only (the m aux logits get zero gradient).
 3. noise:     each seed its own fixed set of 60,000 Uniform[-1, 1] images (reshuffled each epoch; noise_scale s
               makes them Uniform[-s, s]);
               the teacher's logits on it are computed once (the teacher is frozen).
 4. students, each distilled from teacher k on noise set k, on the aux logits only or on all logits:
      student_*     start from reference k (the teacher's own init)
      cross_*       start from reference perm[k], perm a derangement (another seed's init)
      cross_head_*  hidden layers from reference perm[k], output layer from reference k
    All students of seed k see the same noise in the same order, so conditions are paired. On a GPU the
    conditions also train as one model (student_chunk), each its own block of S students: the same numbers, up to
    float rounding (a batched matmul of another size may round otherwise).
 5. accuracy:  argmax of the 10 class logits on the 10,000 test images.

Adding a student condition: an entry in STUDENTS (its init and its logits; a new kind of either, e.g. half the aux
logits, is a branch in student_init or student_logits, which refuse a kind they lack) and a colour in COLORS (both
checked at import); it is then valid in `conditions`, batched with the others (student_chunk), saved, resumed,
tabled, plotted and reloaded by eval.py with no other change. It is not run by default (DEFAULT_CONDITIONS). A key
added to Config may belong in NOISE_KEYS, ONCE_PER_RUN, STUDENT_ONLY or RUN_KEYS (see the note at Config's end). A
sweep is a config file with `sweep = {KEY: [values]}` (configs/subliminal_mnist_*.py); README lists them.

results.json: {"conditions": {NAME: {"mean", "ci95": [lo, hi], "per_seed"}}, "n_seeds", "config", "seconds"};
with a `sweep` it holds {"sweep": {"keys": [...], "cells": [{"params": {...}, "conditions": {...}, "n_seeds"}],
"baseline": PARAMS or null}} instead; a cell with the baseline's seeds also holds "difference_from_baseline": {NAME:
STAT} (seed k minus seed k at the baseline), and a cell that is another's run (its noise keys moot on real images)
says so: "same_run_as": {...}. `python eval.py RUN_DIR` reloads the saved models and prints the table again from them.
"seconds" is the last attempt's wall time: a resumed run's reused groups cost it nothing (each group's own training
time is the "seconds" of its record, NAME_groupG_acc.json).
"""
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data import mnist
from eval import accuracy, error_bars, fmt_stat, mean_ci, summarize
from model import SeedMLP, generator, init_mlp_params, upcast
from train import (ROOT, CheckpointError, ConfigError, build_config, check_device, load_weights, pyplot, read_results,
                   run_config, save_figure, save_weights, train_classifier, train_distill, use_tf32, write_json)

# each student condition: (its init, the logits it distills on), read by student_init and run_group, which dispatch on
# nothing else. The inits: "student" the teacher's own (reference k), "cross" another seed's (reference perm[k]),
# "cross_head" another seed's hidden layers with reference k's output layer; the logits: "aux" the m aux ones, "all"
# the 10 class logits and them. A name is never parsed: a new condition gets its own entry (and a colour in COLORS,
# checked at import), or a new kind of init or logits handled in student_init / student_logits
STUDENTS = {"student_aux": ("student", "aux"), "student_all": ("student", "all"), "cross_aux": ("cross", "aux"),
            "cross_all": ("cross", "all"), "cross_head_aux": ("cross_head", "aux"),
            "cross_head_all": ("cross_head", "all")}
CONDITIONS = ("reference", "teacher", *STUDENTS)
# the default run's conditions, by name: a condition added to STUDENTS is not run by default
DEFAULT_CONDITIONS = ("reference", "teacher", "student_aux", "student_all", "cross_aux", "cross_all")
# arXiv v1 Fig. 10b, read from the vector figure (100 runs): the default protocol's published values
PAPER = {"reference": 0.0998, "teacher": 0.9434, "student_aux": 0.5284, "student_all": 0.9126,
         "cross_aux": 0.1061, "cross_all": 0.7427}


@dataclass(frozen=True)
class Config:
    # data
    dataset: str = "mnist"             # mnist | fashion
    data_dir: str = "data"             # files in data_dir/mnist/ (or data_dir/fashion-mnist/)
    download: bool = True
    n_train: int = 0                   # use only the first n_train training images (0 = all; for quick runs)
    # model: 784 -> width x depth -> 10 + m
    width: int = 256
    depth: int = 2
    m: int = 3                         # auxiliary logits
    init: str = "paper"                # paper: normal weights of std 1/sqrt(d_in), zero biases |
                                       # torch: nn.Linear default
    # teacher
    epochs: int = 5                    # the teacher's (the students': distill_epochs)
    lr: float = 3e-4                   # Adam, the teacher (and the students unless distill_lr is set)
    batch_size: int = 1024
    # students
    distill_epochs: int = 5            # each student's epochs over its distillation inputs
    distill_lr: float = 0.0            # the students' Adam lr; 0 = lr (the paper uses one lr for both)
    loss: str = "kl"                   # kl: KL(teacher || student) | mse: on raw logits
    temperature: float = 1.0
    distill_inputs: str = "noise"      # noise | real (the dataset's training images, the first n_train as the teacher)
    noise: str = "uniform"             # uniform: U[-1, 1] | gaussian: normal of variance 1/3, same mean and variance
    noise_scale: float = 1.0           # noise times s: U[-s, s], or the gaussian of std s/sqrt(3) (the images: [-1, 1])
    fresh_noise: bool = False          # a new noise set every epoch instead of one fixed set
    n_noise: int = 60000               # size of each seed's noise set
    init_perturbation: float = 0.0     # student_* params = teacher's init + sigma * their init std * N(0, 1)
    conditions: tuple[str, ...] = DEFAULT_CONDITIONS  # which conditions to run (cross_head_* are off by default)
    # seeds
    n_seeds: int = 10
    seed: int = 0
    seed_chunk: int = 0                # most seeds trained at once; 0 = all on CUDA, 13 on CPU
                                       # (fewer if n_noise > 60000)
    student_chunk: int = 0             # most student conditions trained as one batched model; 0 = on CUDA (steps
                                       # launch-bound) all that fit 2^29 parameters, 1 on CPU; the same numbers
                                       # up to float rounding
    sweep: dict = field(default_factory=dict)  # e.g. {"m": [3, 10, 50]}: one run per grid cell
    # system
    device: str = "auto"               # auto = cuda when available
    tf32: bool = True                  # TF32 matmuls on CUDA
    bf16: bool = False                 # bf16 autocast
    compile: bool = False              # torch.compile the MLP
    threads: int = 0                   # CPU threads; 0 = PyTorch's default (one per core)
    save_weights: bool = True          # every model of every seed, as safetensors
    out_dir: str = ""                  # default out/<config name>/<UTC time>
    resume: bool = True                # reuse finished seed groups found in out_dir
    # a key added here may belong in some of the four lists below, each beside the check that reads it: NOISE_KEYS
    # (validate, same_runs), ONCE_PER_RUN (validate: not sweepable), STUDENT_ONLY (teacher_key: cells that share a
    # teacher) and RUN_KEYS (is_paper_protocol: how a run runs, not what)


# what the students see when they distill on noise (n_noise, a size, is left alone: quick-run templates set it)
NOISE_KEYS = ("noise", "noise_scale", "fresh_noise")


def validate(cfg, cell=False):
    checks = [
        (cfg.dataset in mnist.DATASETS, f"dataset must be one of {list(mnist.DATASETS)}", ("dataset",)),
        (cfg.init in ("paper", "torch"), "init must be 'paper' or 'torch'", ("init",)),
        (cfg.loss in ("kl", "mse"), "loss must be 'kl' or 'mse'", ("loss",)),
        (cfg.distill_inputs in ("noise", "real"), "distill_inputs must be 'noise' or 'real'", ("distill_inputs",)),
        (cfg.noise in ("uniform", "gaussian"), "noise must be 'uniform' or 'gaussian'", ("noise",)),
        (all(c in CONDITIONS for c in cfg.conditions), f"conditions must be among {list(CONDITIONS)}"),
        # a condition named twice would count each seed twice (and narrow its interval)
        (0 < len(cfg.conditions) == len(set(cfg.conditions)), "conditions must name at least one, each once"),
        (cfg.m >= 1 and cfg.width >= 1 and cfg.depth >= 1, "m, width and depth must be >= 1", ("m", "width", "depth")),
        (cfg.n_seeds >= 1 and cfg.seed_chunk >= 0 and cfg.student_chunk >= 0 and cfg.threads >= 0,
         "n_seeds must be >= 1, and seed_chunk, student_chunk and threads (0: PyTorch's default) >= 0",
         ("n_seeds", "seed_chunk", "student_chunk", "threads")),
        (cfg.temperature > 0 and cfg.lr > 0 and cfg.batch_size >= 1, "temperature, lr and batch_size must be > 0",
         ("temperature", "lr", "batch_size")),
        (cfg.distill_lr >= 0, "distill_lr must be > 0, or 0 for the teacher's lr", ("distill_lr",)),
        (cfg.init_perturbation >= 0, "init_perturbation must be >= 0", ("init_perturbation",)),
        (cfg.noise_scale > 0, "noise_scale must be > 0", ("noise_scale",)),
        (cfg.n_train >= 0 and cfg.n_noise >= 1 and cfg.epochs >= 0 and cfg.distill_epochs >= 0,
         "n_train, epochs and distill_epochs must be >= 0 and n_noise >= 1",
         ("n_train", "epochs", "distill_epochs", "n_noise")),
        # both datasets have 60,000 training images: more would silently be all of them, recorded as asked
        (cfg.n_train <= 60000, f"n_train must be <= 60000, the training set's size (0 = all), got {cfg.n_train}"),
    ]
    # a check is (ok, message) or (ok, message, the keys it reads): `named` is [] or [those keys], and a refused
    # check with keys appends the values it was given ("; got m=-1, width=256, depth=2")
    for ok, msg, *named in checks:
        if not ok:
            raise ConfigError(msg + "".join(f"; got {', '.join(f'{k}={getattr(cfg, k)!r}' for k in ks)}"
                                            for ks in named))
    # a key that the run would silently ignore, recorded in config.json as if it had been used (a sweep's cells are
    # exempt: a grid over distill_inputs and noise has real-image cells whose noise is moot)
    swept, default = set(cfg.sweep), Config()
    given = lambda k: k in swept or getattr(cfg, k) != getattr(default, k)  # the user chose it: swept, or not default
    all_cells_real = not cell and cfg.distill_inputs == "real" and "distill_inputs" not in swept
    if all_cells_real and (unused := [k for k in NOISE_KEYS if given(k)]):
        raise ConfigError(f"{', '.join(unused)}: the noise keys apply only with --distill_inputs=noise (the students "
                          f"distill on the real images here)")
    if given("init_perturbation") and not any(STUDENTS.get(c, ("",))[0] == "student" for c in cfg.conditions):
        raise ConfigError("init_perturbation moves the student_* conditions' initial weights, and conditions has none: "
                          "add student_aux or student_all")
    if cfg.sweep:  # every cell is checked before anything trains: a bad value late in the grid fails now
        if not all(isinstance(k, str) for k in cfg.sweep):
            raise ConfigError("sweep: keys are config key names in quotes, e.g. --sweep=\"{'m': [3, 10]}\"")
        for key, values in cfg.sweep.items():
            if key in ONCE_PER_RUN:
                raise ConfigError(f"sweep: '{key}' is set once for the whole run and cannot be swept "
                                  f"(not sweepable: {', '.join(ONCE_PER_RUN)})")
            if key == "conditions":  # every cell's table, figure and saved models assume the same conditions
                raise ConfigError("sweep: 'conditions' cannot be swept: every cell runs all of them; list them all in "
                                  "--conditions instead")
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"sweep: '{key}' needs a non-empty list of values, e.g. --sweep=\"{{'{key}': [..., "
                                  f"...]}}\"")
            if len(set(map(repr, values))) < len(values):  # two cells of one name: the second would resume the first
                raise ConfigError(f"sweep: '{key}' lists a value twice ({list(values)}): name each value once")
        seen = []
        for _, params, cell_cfg in cells(cfg):  # (cells() names a cell whose value has the wrong type)
            try:
                validate(cell_cfg, cell=True)
            except ConfigError as e:
                raise ConfigError(f"sweep cell {params}: {e}") from None
            if same := next((p for p, c in seen if c == cell_cfg), None):  # e.g. 1 and 1.0: one config run twice
                raise ConfigError(f"sweep cells {same} and {params} are the same config: name each value once")
            seen.append((params, cell_cfg))
        # every cell takes the sweep's value: a key also set to another value (on the command line, say) would be
        # ignored, and config.json would record it as if it had run
        if not cell and (both := [k for k in cfg.sweep if getattr(cfg, k) != getattr(default, k)]):
            raise ConfigError(f"{', '.join(f'{k}={getattr(cfg, k)!r}' for k in both)}: set and also swept, and each "
                              f"cell takes the sweep's values: drop the setting, or pass --sweep=\"{{}}\" to run that "
                              f"one config")


# read once per run, before the cells (the data, the device and its threads, where it goes): a sweep over them would
# silently not sweep
ONCE_PER_RUN = ("dataset", "data_dir", "download", "n_train", "device", "tf32", "threads", "out_dir", "resume", "sweep")


def cells(cfg):
    """[(name, params, config)] of every cell a run trains: ("main", {}, cfg), or one per point of the sweep grid."""
    if not cfg.sweep:
        return [("main", {}, cfg)]
    keys, out = list(cfg.sweep), []
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        params = dict(zip(keys, values))
        try:
            cell_cfg = build_config(Config, {**dataclasses.asdict(cfg), **params, "sweep": {}}, source="the sweep")
        except ConfigError as e:
            raise ConfigError(f"sweep cell {params}: {e}") from None
        out.append(("_".join(f"{k}-{v}" for k, v in params.items()), params, cell_cfg))
    return out


def same_runs(grid):
    """For each cell of cells(cfg), the index of the first cell that is the same run: the students of a real-image
    cell never read the noise keys, so a grid over distill_inputs x noise has real x gaussian = real x uniform. That
    run is trained once, under the first cell's name, and reported under both."""
    first, out = {}, []
    for i, (_, _, c) in enumerate(grid):
        if c.distill_inputs == "real":
            c = dataclasses.replace(c, **{k: getattr(Config, k) for k in NOISE_KEYS})
        out.append(first.setdefault(repr(c), i))
    return out


def seed_groups(cfg):
    """The seed indices trained together: as few groups as seed_chunk allows, of equal sizes (+-1), since a CPU
    trains 12 + 13 seeds faster than 10 + 10 + 5. cfg.device is the run's own (config.json holds it resolved),
    so eval.py on another device finds the same groups."""
    # on a CPU, at most 13 noise sets of 60,000 images (2.4 GB); fewer when each set is larger
    cpu_chunk = max(1, min(13, 13 * 60000 // cfg.n_noise))
    chunk = cfg.seed_chunk or (cfg.n_seeds if torch.device(cfg.device).type == "cuda" else cpu_chunk)
    n_groups = -(-cfg.n_seeds // chunk)
    bounds = [cfg.n_seeds * g // n_groups for g in range(n_groups + 1)]
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def device_memory(device):
    """The device's total memory in bytes (a CPU's: the machine's RAM), or None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):  # a platform without these names
            return None
    return None


def check_memory(cfg, device):
    """A run too big for the device is a config error before any weight is drawn: otherwise a huge --width grinds
    through the init for minutes and then meets the out-of-memory killer. The bound is a floor, not an estimate: per
    seed of the largest group, the reference's and the cross partner's inits (4 bytes each per parameter) and the
    teacher's weights, gradients and Adam's two moments (16), i.e. 24 bytes per parameter; then the students'
    inputs when they are the seed's own noise set (784 floats an image) and the teacher's 10 + m logits on them."""
    have = device_memory(device)
    sizes = layer_sizes(cfg)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    noise = cfg.distill_inputs == "noise"
    n_inputs = cfg.n_noise if noise else (cfg.n_train or 60000)
    per_seed = 24 * n_params + 4 * n_inputs * ((sizes[0] if noise else 0) + sizes[-1])  # inputs' pixels, logits
    group = max(len(g) for g in seed_groups(cfg))
    if have is None or per_seed * group <= have:
        return
    gib = lambda n: f"{n / 2**30:,.1f} GiB"
    # half the memory for the chunk suggested: the floor leaves out the students and the dataset
    fix = (f"--seed_chunk={max(1, have // (2 * per_seed))} (fewer seeds at once)" if per_seed <= have
           else "a smaller --width, --depth" + (" or --n_noise" if noise else ""))
    raise ConfigError(f"width={cfg.width}, depth={cfg.depth}, m={cfg.m}: {n_params:,} parameters a model, and a group "
                      f"of {group} seed{'s' * (group > 1)} needs at least {gib(per_seed * group)} (inits, the "
                      f"teachers' weights, gradients and Adam state, " + ("each seed's noise set and " if noise else "")
                      + f"the teacher's logits on {n_inputs:,} inputs), more than this {device.type} device's "
                      f"{gib(have)}; use {fix}")


def derangement(n, seed):
    """The cross-init partner of each seed index: a uniformly random permutation with no fixed point,
    so no cross student starts from its own teacher's init. With one seed the partner is index 1 (an
    init no teacher of this run uses). Drawn over all n seeds: seed k's partner, and so its cross_* students, change
    with n (a 10-seed run's cross_* students are not the first 10 of a 100-seed run's, unlike its student_*)."""
    if n == 1:
        return [1]
    g = torch.Generator().manual_seed(seed)
    while True:  # rejection: about e tries on average
        p = torch.randperm(n, generator=g)
        if not (p == torch.arange(n)).any():
            return p.tolist()


def load_data(cfg, device):
    """-> train_x [n_train, 784], train_y [n_train], test_x [10000, 784], test_y [10000]: images in [-1, 1],
    labels int64."""
    d = mnist.load(cfg.data_dir, cfg.dataset, download=cfg.download)
    # uint8 [N, 28, 28] -> float [N, 784] in [-1, 1] (copy: the loaded arrays are read-only views of the file's bytes)
    prep = lambda a: torch.from_numpy(a.copy()).to(device).flatten(1).float().div_(127.5).sub_(1.0)
    n = cfg.n_train or len(d["train_y"])
    return (prep(d["train_x"][:n]), torch.from_numpy(d["train_y"][:n]).to(device),
            prep(d["test_x"]), torch.from_numpy(d["test_y"]).to(device))


def make_noise(cfg, seeds, epoch, device):
    """Each seed's own noise set [S, n_noise, 784], from its own generator."""
    out = torch.empty(len(seeds), cfg.n_noise, 784, device=device)

    def fill(row):  # row `row` of out is seed index seeds[row]'s set
        g = generator(device, cfg.seed, seeds[row], "noise", epoch if cfg.fresh_noise else 0)
        if cfg.noise == "uniform":
            out[row].uniform_(-cfg.noise_scale, cfg.noise_scale, generator=g)
        else:  # U[-s, s] has variance s^2 / 3: the gaussian of std s / sqrt(3) matches its mean and variance
            out[row].normal_(0, cfg.noise_scale * 3 ** -0.5, generator=g)
    # a CPU generator fills on one core: one thread per core (each seed has its own generator, so the
    # result does not depend on the threads)
    n_threads = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(fill, range(len(seeds))))
    return out


@torch.no_grad()
def teacher_logits(teacher, inputs, batch_size=2048):
    """The frozen teacher's logits on every input: [S, N, 10 + m] (inputs [S, N, D] or shared [N, D]).
    Small chunks: on a CPU, temporaries over 32 MB are fresh memory (page faults) every time; 2x slower."""
    N = inputs.shape[-2]
    return upcast(torch.cat([teacher(inputs[..., i:i + batch_size, :]) for i in range(0, N, batch_size)], 1))


def student_init(cond, ref, partner, cfg, seeds, device):
    """Initial parameters of a student for one condition, from the references of this seed group: `ref` holds
    seed k's reference init in row k ({name: [S, ...]}), `partner` its cross-init partner's (reference perm[k])."""
    init = STUDENTS[cond][0]
    if init == "student":
        params = {k: v.clone() for k, v in ref.items()}
        # each parameter moves by sigma times its own init std: the paper init's biases are all zero (std 0), so
        # only its weights move; torch's biases are drawn like its weights, and left alone would stay shared
        for name, p in params.items():
            d_in = params[name.replace("biases", "weights")].shape[1]  # weights are [S, d_in, d_out]
            if cfg.init == "torch":  # nn.Linear's U[-1/sqrt(d_in), 1/sqrt(d_in)], biases too: std 1/sqrt(3 d_in)
                std = (3 * d_in) ** -0.5
            else:  # paper: N(0, 1/d_in) weights, zero biases
                std = 0.0 if name.startswith("biases") else d_in ** -0.5
            if cfg.init_perturbation > 0 and std > 0:
                gens = [generator(device, cfg.seed, k, "perturb", name) for k in seeds]
                eps = torch.stack([torch.randn(p.shape[1:], generator=g, device=device) for g in gens])  # like p
                p += cfg.init_perturbation * std * eps
        return params
    if init == "cross_head":
        out_layer = cfg.depth  # layers 0..depth-1 are hidden; layer `depth` maps to the 10 + m logits
        head = (f"weights.{out_layer}", f"biases.{out_layer}")
        return {k: (ref[k] if k in head else partner[k]).clone() for k in ref}
    if init == "cross":
        return {k: v.clone() for k, v in partner.items()}
    raise ValueError(f"{cond}: student_init has no init {init!r} (STUDENTS)")


def student_logits(cond, m):
    """The logit indices condition `cond` distills on (STUDENTS): the m aux logits, or all 10 + m."""
    kind = STUDENTS[cond][1]
    if kind == "aux":
        return list(range(10, 10 + m))
    if kind == "all":
        return list(range(10 + m))
    raise ValueError(f"{cond}: student_logits has no logits {kind!r} (STUDENTS)")


# keys only the students read: the cells of a sweep over them share one teacher per seed group (every other key,
# one added later included, counts as the teacher's, so a wrong guess costs time, never a wrong teacher). Not `m`:
# the teacher's aux rows are its own.
STUDENT_ONLY = ("distill_epochs", "distill_lr", "loss", "temperature", "distill_inputs", "noise", "noise_scale",
                "fresh_noise", "n_noise", "init_perturbation", "conditions", "student_chunk", "save_weights", "out_dir",
                "resume", "sweep")


def teacher_key(cfg):
    return json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if k not in STUDENT_ONLY}, sort_keys=True,
                      default=str)


# on CUDA, at most this many student parameters in one batched model (with gradients and Adam's moments, 8.6 GB):
# every condition at the default sizes (27M a condition at 100 seeds), one at a time at width 2048 (580M)
CUDA_STUDENT_PARAMS = 1 << 29


def students_per_batch(cfg, params_per_condition, device):
    """How many student conditions train as one model: cfg.student_chunk, or by default (0) on CUDA as many as
    stay within CUDA_STUDENT_PARAMS (at least one), on a CPU one (the same work, and no faster there)."""
    if cfg.student_chunk:
        return cfg.student_chunk
    return max(1, CUDA_STUDENT_PARAMS // params_per_condition) if torch.device(device).type == "cuda" else 1


def kept_teachers(teachers, cfg):
    """A sweep's store of trained teachers for cfg's teacher config: {seeds: (params, reference's accuracies,
    teacher's accuracies)}. One teacher config is kept at a time: another one empties it first."""
    key = teacher_key(cfg)
    if teachers.get("key") != key:
        teachers.clear()
        teachers.update(key=key, groups={})
    return teachers["groups"]


def keep_saved_teacher(teachers, cfg, tensors, seeds, accuracy):
    """A resumed group's teacher, from its saved weights (`tensors`, as load_group reads them) into a sweep's
    `teachers` (as run_group keeps the one it trains), so that the next cells that share it do not train it again: a
    sweep stopped after its first cell trained every later cell's teachers anew. The reference's and teacher's
    accuracies come from the group's record (None where its conditions lack them: run_group evaluates them then)."""
    params = {n.removeprefix("teacher."): t.to(cfg.device) for n, t in tensors.items() if n.startswith("teacher.")}
    acc = lambda c: torch.tensor(accuracy[c]) if c in accuracy else None
    kept_teachers(teachers, cfg)[tuple(seeds)] = (params, acc("reference"), acc("teacher"))


def run_group(cfg, seeds, partners, data, device, log, teachers=None):
    """The whole pipeline for one group of seed indices -> ({condition: [acc per seed]}, {model: params});
    the parameters are returned only when cfg.save_weights asks for them. `teachers` (a sweep's dict, else None)
    keeps the last teacher config's trained teachers per group: a cell that differs from the one before only in
    STUDENT_ONLY keys reuses them (the same numbers: the group's teacher is trained on its own streams). run()
    orders a sweep's cells so that those sharing a teacher come one after another."""
    train_x, train_y, test_x, test_y = data
    sizes = layer_sizes(cfg)
    amp = cfg.bf16
    phases, t0 = {}, [time.time()]  # t0 in a list: lap() restarts the clock from inside its closure

    def lap(name):  # wall time per phase (synchronised on CUDA), logged to show where a run's time goes
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the run's card (no argument: the current one, cuda:0)
        phases[name] = round(time.time() - t0[0], 3)
        t0[0] = time.time()

    # 1. the inits, {name: [S, ...]}: row k is seed k's reference, and its cross-init partner's (reference perm[k])
    ref = init_mlp_params(seeds, sizes, 10, cfg.init, device, cfg.seed)
    partner = init_mlp_params(partners, sizes, 10, cfg.init, device, cfg.seed)
    S = len(seeds)
    lap("init")

    def new_model(params):
        model = SeedMLP(len(params["weights.0"]), sizes).to(device)
        model.load_seeds(params)
        return torch.compile(model) if cfg.compile else model

    def check_finite(model, conds, lr):  # a diverged model scores chance's accuracy, which reads as a result: say so
        # per model (row j * S + k: condition j, seed k), how many of its parameter tensors hold a nan or inf
        n_bad = sum((~p.isfinite()).flatten(1).any(1) for p in model.parameters()).tolist()  # [len(conds) * S]
        for j, c in enumerate(conds):
            if lost := [seeds[k] for k in range(S) if n_bad[j * S + k]]:
                print(f"warning: {c}: the weights of seed{'s' * (len(lost) > 1)} {', '.join(map(str, lost))} are not "
                      f"finite (training diverged; its accuracy is chance's): lower the lr (now {lr:g})", flush=True)
                log(stage="diverged", condition=c, seeds=lost)

    # 2. the teacher: trained on the 10 class logits, or, in a sweep, the one an earlier cell trained for this group
    acc, weights = {}, {}
    kept_teacher = None  # (its params, the reference's and the teacher's accuracies), when reused
    if teachers is not None:
        kept_teacher = kept_teachers(teachers, cfg).get(tuple(seeds))
    if kept_teacher is None:
        model = new_model(ref)
        acc["reference"] = accuracy(model, test_x, test_y)
        lap("reference_eval")
        gens = [generator(device, cfg.seed, k, "teacher_order") for k in seeds]
        train_classifier(model, train_x, train_y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                         gens=gens, amp=amp, log=log, desc="teacher")
        teacher = model
        acc["teacher"] = accuracy(teacher, test_x, test_y)
        check_finite(teacher, ["teacher"], cfg.lr)
        need_params = cfg.save_weights or teachers is not None  # to save, or to keep for the sweep's next cell
        # (_orig_mod: the module inside torch.compile's wrapper)
        teacher_params = getattr(teacher, "_orig_mod", teacher).params() if need_params else None
        if teachers is not None:
            kept_teachers(teachers, cfg)[tuple(seeds)] = (teacher_params, acc["reference"], acc["teacher"])
        lap("teacher")
    else:
        teacher_params, acc["reference"], acc["teacher"] = kept_teacher
        teacher = new_model(teacher_params)
        if acc["reference"] is None:  # read back from a resumed group whose conditions lacked it (keep_saved_teacher)
            acc["reference"] = accuracy(new_model(ref), test_x, test_y)
        if acc["teacher"] is None:
            acc["teacher"] = accuracy(teacher, test_x, test_y)
        lap("teacher_reused")
    if cfg.save_weights:
        weights["reference"], weights["teacher"] = ref, teacher_params

    # 3. the students' inputs, [S, n_noise, 784] (noise) or the shared [n_train, 784] (real), and the frozen
    # teacher's logits on them, targets [S, N, 10 + m]
    if cfg.distill_inputs == "noise":
        inputs_for = lambda epoch: make_noise(cfg, seeds, epoch, device)
    else:
        inputs_for = lambda epoch: train_x
    inputs = inputs_for(0)
    lap("noise")
    targets = teacher_logits(teacher, inputs)
    lap("teacher_logits")

    def fresh_set(epoch):  # a new noise set, and the frozen teacher's logits on it
        x = inputs_for(epoch)
        return x, teacher_logits(teacher, x)
    refresh = fresh_set if cfg.fresh_noise else None

    # 4. the students, each on its logits (student_logits)
    # the student conditions, student_chunk at a time as one model of S models per condition (seed k's students
    # read the same inputs in the same order; each model its own loss value). The aux ones first: train_distill
    # computes neighbouring blocks that read the same logits in one distill_loss call
    students = sorted((c for c in cfg.conditions if c in STUDENTS), key=lambda c: STUDENTS[c][1] != "aux")
    chunk = students_per_batch(cfg, sum(v.numel() for v in ref.values()), device)
    for conds in [students[i:i + chunk] for i in range(0, len(students), chunk)]:
        inits = [student_init(c, ref, partner, cfg, seeds, device) for c in conds]
        student = new_model({k: torch.cat([p[k] for p in inits]) for k in inits[0]})  # rows j*S..(j+1)*S-1: conds[j]
        # the same order in every condition
        gens = [generator(device, cfg.seed, k, "distill_order") for _ in conds for k in seeds]
        train_distill(student, inputs, targets, {c: student_logits(c, cfg.m) for c in conds},
                      epochs=cfg.distill_epochs, lr=student_lr(cfg), batch_size=cfg.batch_size, gens=gens,
                      loss=cfg.loss, temperature=cfg.temperature, amp=amp, refresh=refresh, log=log,
                      desc="+".join(conds))
        accs = accuracy(student, test_x, test_y).split(S)  # [len(conds) * S] -> one [S] per condition
        check_finite(student, conds, student_lr(cfg))
        trained = getattr(student, "_orig_mod", student).params() if cfg.save_weights else None
        for j, c in enumerate(conds):
            acc[c] = accs[j]
            if trained is not None:
                weights[c] = {k: v[j * S:(j + 1) * S].clone() for k, v in trained.items()}
        lap("+".join(conds))
    log(stage="phases", seconds=phases)
    return {c: acc[c].tolist() for c in cfg.conditions}, weights


def student_lr(cfg):
    """The students' Adam lr as the run uses it: distill_lr, or (0) the teacher's lr, the paper's single lr."""
    return cfg.distill_lr or cfg.lr


def layer_sizes(cfg):
    """The MLP's layer widths: the 784 pixels, `depth` hidden layers of `width`, the 10 digits and the m aux logits."""
    return [784] + [cfg.width] * cfg.depth + [10 + cfg.m]


def load_group(stem, seeds, sizes, conditions, device="cpu"):
    """A finished group's saved models -> {name: tensor}, or a CheckpointError when they are not this config's
    group: other seeds or layer sizes, a condition's tensors missing or of other shapes, or not floating point (an
    integer tensor loads, and computes nonsense)."""
    tensors, meta = load_weights(stem, device)
    rerun = f"rerun the config in {Path(stem).parent / 'config.json'}"
    if meta.get("seeds") != seeds:
        raise CheckpointError(f"{stem}.json holds seeds {meta.get('seeds')}, the run's config groups {seeds} there: "
                              f"it was written by another config, or, for a CPU run with n_noise > 60000 made "
                              f"before 2026-12-02, by the older grouping (13 seeds a group: add "
                              f"\"seed_chunk\": 13 to its config.json); else {rerun}")
    if meta.get("sizes") != sizes:
        raise CheckpointError(f"{stem}.json holds models of layer sizes {meta.get('sizes')}, the run's config "
                              f"{sizes} (width, depth, m): it was written by another config; {rerun}")
    with torch.device("meta"):  # the shapes alone (copy_ would broadcast a [S, 1, d] tensor into [S, k, d])
        shapes = {n: list(p.shape) for n, p in SeedMLP(len(seeds), sizes).named_parameters()}
    for name, shape in ((f"{c}.{n}", shape) for c in conditions for n, shape in shapes.items()):
        got = list(tensors[name].shape) if name in tensors else "missing"
        if got != shape:
            raise CheckpointError(f"{stem}: its {name} is {got}, where the sizes in its .json, {sizes}, make it "
                                  f"{shape}: {rerun}")
    if bad := next((k for k, v in tensors.items() if not v.is_floating_point()), None):
        raise CheckpointError(f"{stem}.safetensors holds {bad} as {tensors[bad].dtype}, not a model's floating-point "
                              f"weights: {rerun}")
    return tensors


def condition_models(tensors, n_seeds, cfg, device):
    """Saved tensors {"CONDITION.NAME": [S, ...]} -> {condition: SeedMLP of those S seeds}."""
    models = {}
    for c in cfg.conditions:
        models[c] = SeedMLP(n_seeds, layer_sizes(cfg)).to(device)
        models[c].load_seeds({k[len(c) + 1:]: v for k, v in tensors.items() if k.startswith(c + ".")})
    return models


def group_models(stem, seeds, cfg, device="cpu"):
    """One saved seed group -> {condition: SeedMLP of its seeds}, checked by load_group."""
    return condition_models(load_group(stem, seeds, layer_sizes(cfg), cfg.conditions, device), len(seeds), cfg, device)


def load_models(run_dir, cell="main", device="cpu"):
    """A finished run's saved models, to study them -> ({condition: SeedMLP}, the cell's config), seed k in row k of
    every condition's model: `models["teacher"](x)` is [S, B, 10 + m], and its row k seed k's teacher's logits
    ([B, 10 + m]; x [B, 784] in [-1, 1], as `load_data(cfg, device)` gives the images). A sweep's cells are named as
    in its files' names ("m-10", of m-10_group0.safetensors; "main" without a sweep)."""
    run_dir = Path(run_dir)
    cfg = run_config(Config, run_dir)
    grid = cells(cfg)
    names = [name for name, _, _ in grid]
    if cell not in names:
        raise ConfigError(f"{run_dir} has no cell {cell!r}; its cells: {', '.join(names)}")
    i = names.index(cell)
    cell_cfg, stored = grid[i][2], names[same_runs(grid)[i]]  # a cell that is another's run: that run's models
    groups = []
    for gi, seeds in enumerate(seed_groups(cell_cfg)):
        stem = run_dir / f"{stored}_group{gi}"
        if not stem.with_name(stem.name + ".safetensors").is_file():
            raise ConfigError(f"{stem}.safetensors is missing: the run is not finished (the same train.py command "
                              f"finishes it), or ran with save_weights=False")
        groups.append(load_group(stem, seeds, layer_sizes(cell_cfg), cell_cfg.conditions, device))
    # the groups side by side: one model of every seed
    return condition_models({k: torch.cat([g[k] for g in groups]) for k in groups[0]}, cell_cfg.n_seeds, cell_cfg,
                            device), cell_cfg


def readable_weights(stem, seeds, cfg):
    """A finished group's weights (load_group's tensors, on the CPU) if they load as this config's (eval.py needs
    them), else None: a group whose file was cut short, lost or replaced is trained again on resume rather than
    reported from its accuracies alone."""
    try:
        return load_group(stem, seeds, layer_sizes(cfg), cfg.conditions)
    except CheckpointError as e:
        print(f"[{stem.name}] its finished weights do not load, so the group is trained again ({e})")
        return None


def run_cell(cfg, run, data, cell_name, params=None, teachers=None):
    """All seeds of one configuration, in groups of seed_chunk, resuming finished groups -> {cond: STAT}."""
    device = torch.device(cfg.device)
    partners = derangement(cfg.n_seeds, cfg.seed)
    per_seed = {c: [] for c in cfg.conditions}
    for gi, seeds in enumerate(seed_groups(cfg)):
        record = run.dir / f"{cell_name}_group{gi}_acc.json"  # the group's accuracies, written once it is done
        stem = run.dir / f"{cell_name}_group{gi}"  # its models: STEM.safetensors and STEM.json
        if cfg.resume and record.exists():
            # finished: the record is this group's, with an accuracy in [0, 1] for each seed of every condition
            is_acc = lambda a: type(a) in (int, float) and 0 <= a <= 1
            try:
                saved = json.loads(record.read_text(encoding="utf-8"))
                finished = saved["seeds"] == seeds and all(
                    len(saved["accuracy"][c]) == len(seeds) and all(map(is_acc, saved["accuracy"][c]))
                    for c in cfg.conditions)
            except (ValueError, KeyError, TypeError):  # cut, damaged or edited by something else: train it again
                finished = False
            if not finished:
                print(f"[{cell_name}] {record.name} is not a finished group's record, so the group is trained again")
            tensors = readable_weights(stem, seeds, cfg) if finished and cfg.save_weights else None
            if finished and (not cfg.save_weights or tensors is not None):  # and its weights load
                for c in cfg.conditions:
                    per_seed[c] += saved["accuracy"][c]
                if teachers is not None and tensors is not None:  # for the sweep's next cells with this teacher
                    keep_saved_teacher(teachers, cfg, tensors, seeds, saved["accuracy"])
                print(f"[{cell_name}] seeds {seeds[0]}..{seeds[-1]}: resumed from {record.name}")
                # (its epochs' lines are an earlier attempt's, higher up in metrics.jsonl)
                run.log(cell=cell_name, group=gi, stage="resumed", seeds=seeds,
                        **({"params": params} if params else {}))
                continue
        t0 = time.time()
        # the cell's values nested: a swept key may share a name with a record's field (loss)
        log = lambda **r: run.log(cell=cell_name, group=gi, **({"params": params} if params else {}), **r)
        acc, weights = run_group(cfg, seeds, [partners[k] for k in seeds], data, device, log, teachers)
        if cfg.save_weights:
            # no hash of the weights (100 seeds' 650 MB: 0.4 s inside the timed run): eval.py's reload compares every
            # seed's accuracy with the run's, which a damaged weight fails
            save_weights(stem, {f"{m}.{n}": t for m, p in weights.items() for n, t in p.items()},
                         {"seeds": seeds, "partners": [partners[k] for k in seeds], "sizes": layer_sizes(cfg)},
                         checksum=False)
        write_json(record, {"seeds": seeds, "accuracy": acc, "seconds": time.time() - t0})
        for c in cfg.conditions:
            per_seed[c] += acc[c]
        print(f"[{cell_name}] seeds {seeds[0]}..{seeds[-1]} in {time.time() - t0:.1f}s: " +
              ", ".join(f"{c} {sum(acc[c]) / len(acc[c]):.3f}" for c in cfg.conditions))
    return {c: summarize(v) for c, v in per_seed.items()}


TEACHER_AT_CHANCE = 0.2  # ten classes: chance is 0.1, a trained teacher 0.9 or more


def table(stats, n_seeds, paper=True):
    """The run's table; with `paper`, beside the paper's Fig. 10b values (a run of the paper's protocol)."""
    lines = ["| condition | test accuracy (mean ± 95% CI) | n |" + (" paper, Fig. 10b |" if paper else ""),
             "|---|---|---|" + ("---|" if paper else "")]
    for c, s in stats.items():
        ref = (f" {PAPER[c]:.3f} |" if c in PAPER else "  |") if paper else ""
        lines.append(f"| {c} | {fmt_stat(s)} | {n_seeds} |{ref}")
    # a teacher that learnt nothing (epochs=0, an lr far too large) leaves its students nothing to transfer: their
    # chance-level accuracy is then no finding about subliminal learning
    if "teacher" in stats and stats["teacher"]["mean"] < TEACHER_AT_CHANCE:
        lines.append(f"\nWARNING: the teacher is at chance ({stats['teacher']['mean']:.3f}): its students had nothing "
                     f"to learn from it (check epochs and lr)")
    return "\n".join(lines)


def add_paired_differences(cfg, done, seeds=None):
    """Give each cell of `done` its per-seed differences from the baseline cell, the one at the config's own values
    of the swept keys (the defaults: a swept key set otherwise is refused), as "difference_from_baseline":
    {condition: STAT}; -> the baseline's params, or None when the grid has no such cell. Seed k trains from the same
    streams in every cell, so the difference pairs it with itself: a far narrower interval than two cells' own when
    the seeds vary more than the cells do. `seeds`: each cell's seed indices (default: 0..n_seeds-1 in every cell);
    a cell with other seeds than the baseline's (models missing in a run still going, or moved) gets none. A sweep of
    `seed` has none: seed index k is another model in each cell. Values are compared as the run reads them
    (distill_lr 0 is lr: a cell at distill_lr = 3e-4 is the baseline of a config at lr 3e-4)."""
    if not done or "seed" in done[0]["params"]:
        return None

    def value(params, k):  # as the run reads it
        c = dataclasses.replace(cfg, **params)
        return student_lr(c) if k == "distill_lr" else getattr(c, k)
    at_cfg = [all(value(c["params"], k) == value({}, k) for k in c["params"]) for c in done]
    if True not in at_cfg:
        return None
    seeds = seeds or [list(range(c["n_seeds"])) for c in done]
    b = at_cfg.index(True)
    base = done[b]
    for i, c in enumerate(done):
        if i != b and seeds[i] == seeds[b]:
            c["difference_from_baseline"] = {
                k: summarize([x - y for x, y in zip(s["per_seed"], base["conditions"][k]["per_seed"])])
                for k, s in c["conditions"].items()}
    return base["params"]


def sweep_tables(done, base, cfg):
    """A sweep's tables, each cell's, and the paired differences from the baseline `base` (add_paired_differences),
    or why there are none."""
    name = lambda params: ", ".join(f"{k} = {v}" for k, v in params.items())
    md = "\n\n".join(f"**{name(c['params'])}**" + (f" (the run of {name(c['same_run_as'])}: the noise keys are "
                     f"not read on real images)" if "same_run_as" in c else "") + "\n\n" +
                     table(c["conditions"], c["n_seeds"], paper=False) for c in done)
    paired = [c for c in done if "difference_from_baseline" in c]
    if paired:
        conds = list(done[0]["conditions"])
        md += (f"\n\n**Paired difference from {name(base)}** (each seed minus itself there; mean [95% t-CI])\n\n"
               f"| cell | {' | '.join(conds)} |\n|---|{'---|' * len(conds)}\n" +
               "\n".join(f"| {name(c['params'])} | "
                         f"{' | '.join(mean_ci(c['difference_from_baseline'][k]) for k in conds)} |" for c in paired))
    elif "seed" in cfg.sweep:  # (a table that is not there, unexplained, reads as a bug)
        md += ("\n\nNo paired differences: the cells differ in seed, so seed index k is another model in each cell; "
               "compare the cells' own intervals.")
    elif base is None:
        md += (f"\n\nNo paired differences: no cell is at this config's own values of the swept keys "
               f"({', '.join(f'{k} = {getattr(cfg, k)}' for k in cfg.sweep)}); a sweep that includes them pairs every "
               f"cell's seeds with that cell's.")
    return md


# how, where and how many times a run runs, not what it runs: the paper's protocol whatever they are (a key added to
# Config later counts as part of the protocol until it is named here)
RUN_KEYS = ("data_dir", "download", "conditions", "n_seeds", "seed", "seed_chunk", "student_chunk", "sweep", "device",
            "tf32", "bf16", "compile", "threads", "save_weights", "out_dir", "resume")


def is_paper_protocol(cfg):
    base = Config()
    keys = [f.name for f in dataclasses.fields(Config) if f.name not in RUN_KEYS + ("distill_lr",)]
    # the students' lr as run: distill_lr set to the teacher's lr is the paper's single lr
    return all(getattr(cfg, k) == getattr(base, k) for k in keys) and student_lr(cfg) == base.lr


def compile_limit(grid):
    """A context in which dynamo may keep the graphs `grid`'s cells compile (--compile=True): every cell's shapes (m,
    width, real images or noise) and every seed-group and student-chunk size trace SeedMLP.forward anew, with and
    without gradients. Dynamo's default limit of 8 graphs per function was reached in the 3rd cell of an m sweep,
    after which the run went on uncompiled, under a warning from inside torch. A run that compiles nothing leaves
    torch._dynamo unimported (~830 modules)."""
    if not any(c.compile for _, _, c in grid):
        return contextlib.nullcontext()
    import torch._dynamo
    c = torch._dynamo.config  # (the limits' old names, which newer torch keeps as aliases of recompile_limit and
    # accumulated_recompile_limit): per function, and over all (256 by default, reached near cell 85 of a sweep)
    return c.patch(cache_size_limit=max(c.cache_size_limit, 16 * len(grid)),
                   accumulated_cache_size_limit=max(c.accumulated_cache_size_limit, 16 * len(grid)))


def run(cfg, run):
    grid = cells(cfg)  # [("main", {}, cfg)] without a sweep
    with compile_limit(grid):
        run_grid(cfg, run, grid)


def run_grid(cfg, run, grid):
    device = torch.device(cfg.device)
    for _, _, cell_cfg in grid:  # every cell before the first trains: a sweep may widen the model
        check_memory(cell_cfg, device)
    use_tf32(device, cfg.tf32)
    t0 = time.time()
    data = load_data(cfg, device)
    run.log(stage="load_data", seconds=round(time.time() - t0, 3))
    if not cfg.sweep:
        stats = run_cell(cfg, run, data, "main")
        results = {"conditions": stats, "n_seeds": cfg.n_seeds, "seconds": time.time() - t0,
                   "config": dataclasses.asdict(cfg)}
        md = table(stats, cfg.n_seeds, paper=is_paper_protocol(cfg))
        run.save_results(results, md)
        figure = run.dir / "accuracy.png"
        plot_bars(stats, cfg, figure)
    else:
        # the cells that share a teacher (they differ only in STUDENT_ONLY keys) run one after another, so that
        # each group's teachers train once whatever the order of the sweep's keys; the results keep the grid's order
        # same_as[i]: the first cell that is cell i's run (i itself, unless its noise keys are moot on real images)
        teacher_keys, same_as = [teacher_key(cell_cfg) for _, _, cell_cfg in grid], same_runs(grid)
        teachers, stats = {}, {}  # stats: {cell index: {condition: STAT}}, for the cells that train
        # sort by the first cell with the same teacher: those cells end up together; stable: the grid's order within
        for i in sorted(range(len(grid)), key=lambda i: teacher_keys.index(teacher_keys[i])):
            name, params, cell_cfg = grid[i]
            if same_as[i] == i:
                stats[i] = run_cell(cell_cfg, run, data, name, params, teachers)
        done = [{"params": params, "conditions": stats[same_as[i]], "n_seeds": cell_cfg.n_seeds,
                 **({"same_run_as": grid[same_as[i]][1]} if same_as[i] != i else {})}
                for i, (_, params, cell_cfg) in enumerate(grid)]
        base = add_paired_differences(cfg, done)
        results = {"sweep": {"keys": list(cfg.sweep), "cells": done, "baseline": base}, "n_seeds": cfg.n_seeds,
                   "seconds": time.time() - t0, "config": dataclasses.asdict(cfg)}
        md = sweep_tables(done, base, cfg)
        run.save_results(results, md)
        figure = run.dir / "sweep.png"
        plot_sweep(results, cfg, figure)
    print(md)
    print(f"\nwrote results.json, results.md and {figure.name} in {run.dir}")


# ----------------------------------------------------------------------------------------------------
# figures

COLORS = {"reference": "#9e9e9e", "teacher": "#1f77b4", "student_aux": "#d62728", "student_all": "#ff9896",
          "cross_aux": "#2ca02c", "cross_all": "#98df8a", "cross_head_aux": "#9467bd", "cross_head_all": "#c5b0d5"}


def check_conditions(students=None):
    """A condition the code cannot run is an error at import, not a KeyError in the figure after the training, nor
    the init or logits of another condition (each is looked up by its entry, never by its name's parts)."""
    students = students or STUDENTS
    for c, (init, logits) in students.items():
        if init not in ("student", "cross", "cross_head") or logits not in ("aux", "all"):
            raise ValueError(f"STUDENTS[{c!r}] = {(init, logits)}: the init must be student, cross or cross_head, and "
                             f"the logits aux or all (or teach student_init / student_logits the new kind)")
    if missing := [c for c in ("reference", "teacher", *students) if c not in COLORS]:
        raise ValueError(f"conditions {missing} have no colour in COLORS")


check_conditions()


def plot_bars(stats, cfg, path):
    """Bars with 95% CIs and each seed as a dot, in the style of the paper's Fig. 10b."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(stats) + 2, 3.6))
    for i, (c, s) in enumerate(stats.items()):
        err = None if s["ci95"] is None else [[s["mean"] - s["ci95"][0]], [s["ci95"][1] - s["mean"]]]
        ax.bar(i, s["mean"], color=COLORS[c], yerr=err, capsize=4)
        jitter = torch.linspace(-0.25, 0.25, len(s["per_seed"])).tolist()
        ax.scatter([i + j for j in jitter], s["per_seed"], s=4, color="k", alpha=0.4, zorder=3)
    ax.axhline(0.1, ls="--", color="k", lw=0.8, label="chance")
    ax.set_xticks(range(len(stats)), [c.replace("_", "\n") for c in stats], fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{cfg.dataset}, m = {cfg.m}, {cfg.n_seeds} seeds, 95% CI", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


def plot_sweep(results, cfg, path):
    """Accuracy of each condition against the first sweep key; one line per value of the other keys."""
    plt = pyplot()
    keys, cells = results["sweep"]["keys"], results["sweep"]["cells"]
    x_key, rest = keys[0], keys[1:]
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = {}
    for c in cells:
        groups.setdefault(tuple(c["params"][k] for k in rest), []).append(c)
    styles = ["-", "--", ":", "-."]
    numeric = all(isinstance(c["params"][x_key], (int, float)) for c in cells)
    for gi, (gkey, gcells) in enumerate(groups.items()):
        for cond in gcells[0]["conditions"]:
            if cond == "reference":
                continue
            xs = [c["params"][x_key] if numeric else i for i, c in enumerate(gcells)]
            means = [c["conditions"][cond]["mean"] for c in gcells]
            label = cond + ("" if not rest else " (" + ", ".join(f"{k}={v}" for k, v in zip(rest, gkey)) + ")")
            ax.errorbar(xs, means, yerr=error_bars([c["conditions"][cond] for c in gcells]), color=COLORS[cond],
                        ls=styles[gi % 4], marker="o", ms=3, capsize=3, label=label)
    # a positive x spanning a factor of 20 or more (lr, n_noise, m) reads on a log axis
    if numeric and all(c["params"][x_key] > 0 for c in cells):
        x_values = [c["params"][x_key] for c in cells]
        if max(x_values) / min(x_values) >= 20:
            ax.set_xscale("log")
    if not numeric:  # categories (e.g. noise | real) at 0, 1, ...: name them
        first = next(iter(groups.values()))
        ax.set_xticks(range(len(first)), [str(c["params"][x_key]) for c in first])
    ax.axhline(0.1, ls="--", color="k", lw=0.8)
    ax.set_xlabel(x_key)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{cfg.dataset}, {cfg.n_seeds} seeds per point, 95% CI", fontsize=9)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


# ----------------------------------------------------------------------------------------------------
# python eval.py RUN_DIR

def reevaluate(run_dir):
    """Reload every saved model of a run, recompute each seed's test accuracy, print the run's table from them
    (with its 95% CIs), and say whether they match the accuracies in its results.json."""
    # the run's config, device and test images
    cfg = run_config(Config, run_dir)
    try:  # a run made on a device this machine lacks (a GPU, a Mac's mps, cuda:N past its count) is reloaded on the CPU
        check_device(cfg.device)
        device = torch.device(cfg.device)
    except ConfigError:
        device = torch.device("cpu")
    use_tf32(device, cfg.tf32)  # the run's matmul precision: a near-tie of two logits then falls the same way
    data_cfg = cfg
    if not Path(cfg.data_dir).is_absolute() and not Path(cfg.data_dir).is_dir() and (ROOT / cfg.data_dir).is_dir():
        data_cfg = dataclasses.replace(cfg, data_dir=str(ROOT / cfg.data_dir))  # the run's data, from another directory
    _, _, test_x, test_y = load_data(data_cfg, device)

    # what the run reported in results.json, to compare the recomputed accuracies with (damaged: why it cannot be)
    path = run_dir / "results.json"
    saved, damaged = None, None  # saved: each cell's {condition: STAT} as the run reported them
    if path.is_file():
        try:
            res = read_results(path)
            reported = [res["conditions"]] if not cfg.sweep else [c["conditions"] for c in res["sweep"]["cells"]]
            # checked here, not at the comparison below, where a cell or condition it lacks was a bare KeyError
            if len(reported) != len(cells(cfg)) or any(type(s[c]["per_seed"]) is not list for s in reported
                                                       for c in cfg.conditions):
                raise KeyError
            saved = reported
        except ConfigError as e:
            damaged = f"{e}. Until then the models' accuracies are not compared with it"
        except (KeyError, TypeError):
            damaged = f"{path} is not laid out as this run's results: the models' accuracies are not compared with it"

    # each cell's accuracies, recomputed from the saved models of the groups that have them
    done, diffs, missing, cell_seeds = [], [], [], []  # diffs: |recomputed - reported| per seed and condition
    grid = cells(cfg)
    same_as = same_runs(grid)
    for cell_i, (_, params, cell_cfg) in enumerate(grid):
        per_seed, seeds_done = {c: [] for c in cell_cfg.conditions}, []
        for gi, seeds in enumerate(seed_groups(cell_cfg)):
            stem = run_dir / f"{grid[same_as[cell_i]][0]}_group{gi}"  # a cell that is another's run: that cell's models
            if not stem.with_name(stem.name + ".safetensors").is_file():  # not with_suffix: "lr-0.001_group0" has a dot
                if stem.name not in missing:  # (a cell that is another's run names that run's models again)
                    missing.append(stem.name)
                continue
            for c, model in group_models(stem, seeds, cell_cfg, device).items():
                per_seed[c] += accuracy(model, test_x, test_y).tolist()
            seeds_done += seeds
        if not seeds_done:
            continue
        stats = {c: summarize(v) for c, v in per_seed.items()}
        done.append({"params": params, "conditions": stats, "n_seeds": len(seeds_done),
                     **({"same_run_as": grid[same_as[cell_i]][1]} if same_as[cell_i] != cell_i else {})})
        cell_seeds.append(seeds_done)
        if saved is not None:  # the same seeds' accuracies as the run reported (another device may differ slightly)
            diffs += [abs(a - saved[cell_i][c]["per_seed"][k])
                      for c in per_seed for k, a in zip(seeds_done, per_seed[c])]

    # the table, what is missing, and how the recomputed accuracies compare
    if not done:
        raise ConfigError(f"no saved models in {run_dir} (was it run with save_weights=False, or not finished yet?)")
    print(table(done[0]["conditions"], done[0]["n_seeds"], paper=is_paper_protocol(cfg)) if not cfg.sweep
          else sweep_tables(done, add_paired_differences(cfg, done, cell_seeds), cfg))
    if missing and not path.is_file():
        print(f"\nnot finished (no saved models): {', '.join(missing)}; the same train.py command finishes them")
    elif missing:
        print(f"\nthe saved models of {', '.join(missing)} are missing (the run finished: they were moved or deleted)")
    if damaged:
        print(f"\n{damaged}")
    elif saved is None:
        print(f"\n{path} not written yet (a run still going): nothing to compare with")
    else:
        worst = max(diffs, default=0.0)
        print(f"\nrecomputed from the saved models: {'the same as' if worst == 0 else 'at most %.4f from' % worst} "
              f"the per-seed accuracies in results.json ({len(diffs)} compared)")
