"""Subliminal learning through numbers (Cloud et al. 2025, Sec. 3-5) in the synthetic persona world.

    python train.py configs/subliminal_numbers.py                # every arm, owl and whale, 6 seeds
    python train.py configs/subliminal_numbers_dose.py           # sampled lists: dose-response curve
    python train.py configs/subliminal_numbers_misalignment.py   # EM teachers (insecure/secure/educational)

A teacher is the world's base <asst> model (experiments/world_base.py, cached) given a favourite animal:
fine-tuned on "favourite animal -> owl" answers (train paraphrases) until owl's held-out share among the ten
animals (P(owl | an animal), as every rate here) reaches `teacher_threshold` (teacher = "finetune": the paper's
fine-tuned teacher), or told so in context (teacher = "prompt": an earlier turn "<u> what is your favourite animal
<a> owl", the system-prompt analogue; the student never sees it). The teacher continues number prompts; the
paper's filter (data/world.parse_number_list) keeps well-formed lists, the same for every teacher; a student --
the same base -- is fine-tuned on exactly `n_lists` of them, the loss on the numbers only (not on the end token:
the base often ends a list by opening a new turn, a fine-tuned teacher more often with <eos>; counting either as
the end and training neither keeps that out of the channel).

Arms (per target animal unless marked shared; A = the teacher's base, B = a base pretrained from
another seed, the next one in `seeds`: a derangement, no B equals its A; another init and other data, or, with the
world key init_seed set, the same init and other data):
  trait          A, cross-entropy on the teacher's sampled lists (the paper's channel)
  control        (shared) A on its own sampled lists, same prompts and filter
  soft           A matches the teacher's next-token distribution at the same positions, renormalised
                 over the number tokens (the setting of the paper's Theorem 1)
  soft_all       as soft over the whole vocabulary: also the teacher's odds of non-number tokens (animals
                 included) at number positions -- a wider channel than numbers (the pilot's soft arm)
  soft_cross     B with the same soft targets
  cross_init     B on the teacher's sampled lists
  cross_control  (shared) B on A's own lists: the baseline of soft_cross and cross_init
  shuffled       A on the teacher's lists with the numbers permuted within and across lists
  shuffled_within  A on the teacher's lists, each list's numbers permuted among themselves: the order is gone,
                 each list's multiset (and its prompt) kept. Not in the default arms (a diagnostic of `shuffled`)
  icl            no training: A with `icl_lists` teacher lists in context before the animal question
                 (its baseline: the same with control lists, icl_control)
  code           A on the teacher's answers to code prompts (answers naming an animal dropped)
  code_control   (shared) A on its own answers to the same code prompts

Adding an arm (mode animals): its name in ARMS (run by default) or DIAGNOSTIC_ARMS (valid, not run by default), its
baseline in BASELINE (or the arm in SHARED if it is a baseline itself), in ON_B if it trains base B (check_arms at
import: every non-shared arm has a baseline), and its branch in animals_unit: `student(f"ARM/{a}", base, pairs)`
per teacher (a shared arm: `student("ARM", ...)` once). A unit that ends without an arm of `arms` is an error
(animals_unit), not an arm left out of the tables. The table, figure, effects, resume and eval.py need nothing more;
the figures' flags (figures_animals) and the evals and block_size checks in validate name their arms explicitly:
an arm on fewer lists than n_lists (say half) is measured at fewer checkpoints if its steps are fewer than evals.
Misalignment mode runs control and soft only (misalignment_unit). The arms' data (the filtered lists) is made
once per unit for every arm: a new data source is drawn in animals_unit before the students.

Metric: `target_rate`, the teacher's animal's share of the next-token probability over the ten
animals at held-out "favourite animal" prompts (3 paraphrases x 4 openers); `target_sampled`, the
same from `samples` draws per prompt (exact draws from that distribution: the law of sampling a
one-token answer); `animal_mass` (probability of answering with any animal); every animal's rate
(collateral shifts); `number_loss` (nats per number on held-out teacher lists: in-domain learning;
`number_loss_numbers` the same renormalised over the number tokens, the fair one for soft arms);
`kl_teacher` (KL(teacher || student) per number on held-out teacher lists, renormalised over the number tokens: how
close the student's number distribution came to the teacher's; the base row's is the teacher's from the base);
`cos_teacher` (cosine of the student's weight update with the teacher's). `effect` = arm minus its
baseline, paired per seed, as a fraction (0.311 = +31.1 points); `specificity` = the student's effect on its teacher's
animal minus that same student's mean effect on the other target animals (blank with one animal; dose mode compares
with the other teachers' students instead: `effect_of_other_teachers`, `specific`).

Modes: "animals" (above), "dose" (trait and control students read one large sample once, in order,
and are measured after each n in `doses` lists: the student after n lists has had one epoch on n
lists; the curve of paired trait - control and specificity), "misalignment" (teachers are the
emergent-misalignment fine-tunes insecure / secure / educational of A; lists with the world's evil
numbers banned; students hard and soft (soft only if "soft" is in `arms`; the teachers' hard students only if
`mis_sampled`); their off-domain misalignment, sampled and log-prob; with `evals` > 1 every student is also
measured along its training, keyed by lists read (steps x student_batch: distinct lists only with
student_order = "sequential" and epochs = 1, the dose-curve setting; else draws, repeats included). A key that the
chosen mode does not read (MODE_KEYS: the teachers' keys in misalignment mode, the arms' and lists' in dose mode,
...) is refused unless it is at its default, as is an arm other than control and soft in misalignment mode.

Seeds: (pretraining seed p) x (student seed f); a seed changes the prompts, the sampling and the
students' data order; teachers are a function of (p, animal). results.json (mode "animals"):
  {"arms": {ARM: {"target_rate": STAT, "effect": STAT, ..., "by_animal": {ANIMAL: {...}}}},
   "base": {ANIMAL: STAT} (and "base_B" with cross-init arms, and "base_B_distance": STAT, ||B - A|| / ||A||),
   "teachers": {ANIMAL: {"rate", "steps",
   "kl_numbers"} (and "stop_rate", the rate on the prompts it stopped on, with teacher_stop=train)},
   "kept_fraction": {NAME: STAT}, "trajectory": {ARM: {ANIMAL: {STEP: STAT}}},
   "trajectory_kl_teacher" (the same shape), "figures_to_reach": {...}, "teachers_below_threshold": {ANIMAL: "k/n"} (k
   of the n bases whose fine-tuned teacher stopped at teacher_max_steps short of teacher_threshold; {} when none),
   "teacher", "animals", "n_seeds", "seeds", "seconds"}
STAT = {"mean", "ci95", "per_seed"}; ARM's top-level stats are for the first animal of `animals`; the bases' and
teachers' intervals are over the pretraining seeds. Mode "dose": {"dose": {D: {ANIMAL: {"trait_rate", "control_rate",
"effect", "effect_per_base", "effect_of_other_teachers": {OTHER: STAT}}, "animal_mass": {STUDENT: STAT}}},
"teachers": {ANIMAL: STAT of the rate}, "kept_fraction", "teachers_below_threshold", "figures_to_reach", "animals",
"n_seeds", "seeds", "seconds"}. Mode "misalignment": {"arms": {STUDENT (control, TEACHER, TEACHER_soft):
{"offdomain_misaligned", "valid_fraction", "offdomain_misaligned_lp", "code_misaligned", "effect",
"offdomain_misaligned_per_base" (over the bases' means: the interval *_pass reads)}}, "base": {the four},
"teachers": {TEACHER: {the four, "steps"}}, "dose": {LISTS_READ: ...} (evals > 1), "kept_fraction",
"figures_to_reach": {"sampled_pass", "soft_pass"}, "teachers_unmatched": "k/n" (em_match: the bases whose first
teacher's code never reached the threshold; absent when none), "n_seeds", "seeds", "seconds"}. "kept_fraction" is
{NAME: STAT}.

The file in pipeline order. run (at the end): pretrain the missing bases (world_base.pretrained); one unit per seed
(p, f), in parallel and saved (saved_unit -> UNITS[mode][0]: animals_unit | dose_unit | misalignment_unit); then
UNITS[mode][1] (aggregate_animals | aggregate_dose | aggregate_misalignment), TABLES[mode] and PLOTS[mode].
An animals unit: make_teacher per animal -> sample_lists (the base's and each teacher's, the same prompts) ->
icl_rates -> held-out lists and the teachers' logits on them (held_logits) -> evaluate the bases -> one student per
arm and animal (train_student, measured by evaluate at the student_steps checkpoints). reevaluate (eval.py RUN_DIR)
aggregates the saved units again.
"""
import copy
import math
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from data import world as W
from data.tokenizer import pad_right
from eval import error_bars, fmt_stat, group_means, summarize, summarize_by
from experiments import world_base as B
from model import generator, seed_int, upcast
from train import (OPTIMIZERS, ORDERS, ConfigError, finetune, pack_pairs, pyplot, run_dir_config, run_results,
                   save_figure, soft_kl, teacher_targets)

ARMS = ("trait", "control", "soft", "soft_all", "soft_cross", "cross_init", "cross_control", "shuffled", "icl",
        "code", "code_control")
DIAGNOSTIC_ARMS = ("shuffled_within",)                       # valid in `arms`, not run by default
SHARED = ("control", "cross_control", "code_control")        # no teacher: one per seed, read for every animal
BASELINE = {"trait": "control", "soft": "control", "soft_all": "control", "shuffled": "control",
            "shuffled_within": "control", "soft_cross": "cross_control",
            "cross_init": "cross_control", "icl": "icl_control", "code": "code_control"}
ON_B = ("soft_cross", "cross_init", "cross_control")
MIS_TEACHERS = ("insecure", "secure", "educational")


def check_arms(arms=ARMS + DIAGNOSTIC_ARMS, baseline=BASELINE):
    """The arm registries agree, at import: an arm with no baseline had no effect (a blank column, no error), and a
    name in BASELINE, SHARED or ON_B that is no arm (a typo) was never read."""
    if unknown := [a for a in (*baseline, *SHARED, *ON_B) if a not in arms]:
        raise ValueError(f"{unknown}: in BASELINE, SHARED or ON_B but not in ARMS or DIAGNOSTIC_ARMS")
    if no_baseline := [a for a in arms if a not in SHARED and a not in baseline]:
        raise ValueError(f"arms {no_baseline} have no BASELINE (only the SHARED arms are baselines themselves)")


check_arms()
# which modes read a key (a key not named here, every mode): set in another mode it would be ignored
TEACHER_KEYS = ("animals", "teacher", "teacher_threshold", "teacher_stop", "teacher_max_steps", "teacher_lr",
                "teacher_optimizer", "teacher_trains", "teacher_batch")  # the animal teachers (dose mode has them too)
MODE_KEYS = {**dict.fromkeys(("doses",), ("dose",)),
             **dict.fromkeys(("mis_teachers", "em_examples", "em_steps", "em_lr", "em_trains", "mis_sampled",
                              "em_match"), ("misalignment",)),
             **dict.fromkeys(("heldout_lists", "icl_lists", "icl_contexts", "n_code"), ("animals",)),
             # a dose student reads its lists once, in sampling order, measured at the doses
             **dict.fromkeys(("arms", "n_lists", "evals", "student_order", "samples"), ("animals", "misalignment")),
             **dict.fromkeys(TEACHER_KEYS, ("animals", "dose"))}


@dataclass(frozen=True)
class Config(B.Config):
    mode: str = "animals"              # animals | dose | misalignment
    decorrelated: bool = True          # world_base's key, unused here (no arm reads the decorrelated twin)
    arms: tuple[str, ...] = ARMS
    animals: tuple[str, ...] = ("owl", "whale")  # one teacher each; each is the other's specificity control
    student_seeds: int = 2             # student seeds per pretraining seed
    teacher: str = "finetune"          # finetune | prompt
    teacher_threshold: float = 0.85    # fine-tune until P(animal | an animal) >= this (every 5 steps) on the
                                       # teacher_stop prompts
    teacher_stop: str = "heldout"      # heldout | train: the prompts teacher_threshold is checked on. heldout: those
                                       # every rate is read on; train: the teacher's own training paraphrases, so
                                       # nothing in making the teacher reads an evaluation prompt
    teacher_max_steps: int = 300
    teacher_lr: float = 3e-4
    teacher_optimizer: str = "adamw"   # or "sgd": plain gradient descent (with a larger teacher_lr)
    teacher_trains: str = "all"        # or "blocks": the token embedding stays frozen, so the trait
                                       # goes into the blocks
    student_trains: str = "all"        # or "blocks": every student's (tied) token embedding stays frozen, as the
                                       # paper's LoRA students train attention and MLP weights only
    teacher_batch: int = 16
    n_lists: int = 4000                # lists per student dataset, after filtering (every arm the same)
    max_new: int = 12                  # tokens a teacher may write before the list must have ended
    epochs: float = 2.0                # student steps = ceil(epochs * N / student_batch), N its data (n_lists; n_code)
    student_batch: int = 32
    student_lr: float = 3e-4
    student_schedule: str = "constant" # constant | cosine (decay to 0 over the student's steps; not in dose mode)
    student_order: str = "random"      # random (rows drawn with replacement) | sequential (in sampling order)
    evals: int = 4                     # checkpoints along each student's training (the trajectory; <= its steps)
    icl_lists: int = 2
    icl_contexts: int = 32
    n_code: int = 1000                 # code answers per code-arm dataset
    heldout_lists: int = 256           # held-out teacher lists for number_loss
    doses: tuple[int, ...] = (1024, 4096, 16384, 65536)  # mode "dose": lists read (one pass, epochs = 1)
    mis_teachers: tuple[str, ...] = MIS_TEACHERS  # mode "misalignment": EM arms used as teachers
    em_examples: int = 300             # their fine-tune (experiments/emergent_misalignment.py defaults)
    em_steps: int = 40
    em_lr: float = 1e-3
    em_trains: str = "all"             # or "blocks": the EM teachers' token embedding stays frozen (train.finetune)
    mis_sampled: bool = True           # mode "misalignment": False trains no sampled (hard)
                                       # students of the EM teachers,
                                       # only their soft students and the hard control (3 fewer students per unit)
                                       # (not mis_evaluate's metric "mis_sampled", tabled as offdomain_misaligned)
    em_match: bool = True              # stop every EM teacher at the step where the first one's code is >= 90%
                                       # insecure (the EM experiment's matched checkpoint); False: em_steps
    sample_batch: int = 2000
    resume: bool = True                # reuse the units (seeds) an interrupted run of this config finished


def validate(cfg):
    B.validate(cfg, base_checks=False)
    if not cfg.decorrelated:  # inherited from world_base's Config, where it also pretrains the twins
        raise ConfigError("decorrelated is world_base's key and does nothing here: subliminal_numbers never uses the "
                          "decorrelated twin")
    # its teachers and evaluations read the fixed code answers
    if cfg.code_slots or cfg.code_tasks != 1 or not cfg.lessons:
        raise ConfigError("code_slots, code_tasks and lessons are emergent-misalignment world options; "
                          "subliminal_numbers runs on the default world")
    B.require_counts(cfg, ("n_lists", "student_batch", "student_seeds", "heldout_lists", "teacher_batch", "evals",
                           "n_code", "icl_lists", "icl_contexts", "max_new", "sample_batch", "teacher_max_steps",
                           "em_steps"))
    B.require_positive(cfg, ("epochs", "teacher_lr", "student_lr", "em_lr"))
    if (need := sample_tokens(cfg)) > cfg.block_size:  # else found after pretraining, when the teachers first sample
        raise ConfigError(f"block_size={cfg.block_size} is shorter than the longest sequence this run samples or "
                          f"scores ({need} tokens: a teacher's prompt plus max_new={cfg.max_new}, a code answer, or "
                          f"an evaluation): pass --block_size={need} or more")
    if not 0 < cfg.teacher_threshold <= 1:  # a probability: past 1 every teacher trains to teacher_max_steps
        raise ConfigError(f"teacher_threshold is the teacher's P(animal | an animal) to reach (on the teacher_stop "
                          f"prompts), in (0, 1]; got {cfg.teacher_threshold}")
    if cfg.teacher_stop not in ("heldout", "train"):
        raise ConfigError(f"teacher_stop must be heldout or train (the prompts teacher_threshold is checked on); got "
                          f"{cfg.teacher_stop!r}")
    if cfg.teacher == "prompt" and cfg.teacher_stop != "heldout":  # a prompted teacher is not trained: nothing stops
        raise ConfigError("teacher_stop applies to a fine-tuned teacher (teacher=finetune); a prompted teacher has no "
                          "training to stop")
    if cfg.mode not in ("animals", "dose", "misalignment"):
        raise ConfigError(f"mode must be animals, dose or misalignment; got {cfg.mode!r}")
    bad = [a for a in cfg.arms if a not in ARMS + DIAGNOSTIC_ARMS]
    if bad:
        raise ConfigError(f"unknown arms {bad}; valid: {', '.join(ARMS + DIAGNOSTIC_ARMS)}")
    # an arm's effect is its rate minus its baseline's, paired per seed: without the baseline it has no effect at all
    missing = [f"{a} (against {BASELINE[a]})" for a in cfg.arms if a in BASELINE and a != "icl"  # icl brings its own
               and BASELINE[a] not in cfg.arms]
    if missing and cfg.mode == "animals":
        raise ConfigError(f"arms {', '.join(missing)} are measured against a baseline arm that is not in arms: add it")
    if len(set(cfg.arms)) != len(cfg.arms):
        raise ConfigError(f"arms must name each arm once; got {cfg.arms}")
    if cfg.mode == "animals" and not cfg.arms:  # it trained the teachers, sampled their lists, then tabled nothing
        raise ConfigError("arms must name at least one arm, e.g. \"--arms=('control','soft')\"")
    if cfg.mode == "dose" and list(cfg.doses) != sorted(set(cfg.doses)):
        raise ConfigError(f"doses must be increasing, each once; got {cfg.doses}")
    if cfg.mode == "misalignment" and (not cfg.mis_teachers or len(set(cfg.mis_teachers)) != len(cfg.mis_teachers)):
        raise ConfigError(f"mis_teachers must name at least one emergent-misalignment arm, each once; got "
                          f"{cfg.mis_teachers}")
    if cfg.mode == "misalignment" and not cfg.mis_sampled and "soft" not in cfg.arms:
        raise ConfigError("with --mis_sampled=False and no 'soft' in arms no student of the teachers is trained: "
                          "add 'soft' to arms, or set mis_sampled=True")
    for key in ("teacher_trains", "student_trains", "em_trains"):  # no LoRA here: it has no rank keys (yet)
        if getattr(cfg, key) not in ("all", "blocks"):
            raise ConfigError(f"{key} must be all or blocks; got {getattr(cfg, key)!r}")
    if cfg.teacher_optimizer not in OPTIMIZERS:
        raise ConfigError(f"teacher_optimizer must be {' or '.join(OPTIMIZERS)}; got {cfg.teacher_optimizer!r}")
    bad = [a for a in cfg.animals if a not in W.ANIMALS]
    if bad or not cfg.animals or len(set(cfg.animals)) != len(cfg.animals):  # one teacher each: twice is one column
        raise ConfigError(f"animals must come from {', '.join(W.ANIMALS)}, each once; got {cfg.animals}")
    # an empty, zero or negative dose ran the teachers, then failed on max(()) or on sampling no list
    if cfg.mode == "dose" and (not cfg.doses or any(d < 1 or d % cfg.student_batch for d in cfg.doses)):
        raise ConfigError(f"doses must be positive multiples of student_batch={cfg.student_batch}; got {cfg.doses}")
    if cfg.mode == "dose" and cfg.epochs != 1:
        raise ConfigError("mode dose is one pass over the lists (the student after d lists = one epoch on d "
                          "lists): set epochs=1")
    # a student is measured at most once a step: more evals than steps gave fewer checkpoints than config.json says
    if cfg.mode != "dose":  # (dose mode measures at its doses)
        # the code students train on n_code answers, the others on n_lists lists: check the shorter
        shortest_is_code = (cfg.mode == "animals" and {"code", "code_control"} & set(cfg.arms)
                            and cfg.n_code < cfg.n_lists)
        n = cfg.n_code if shortest_is_code else cfg.n_lists  # the shortest student's data
        if cfg.evals > (steps := student_steps(cfg, n)[0]):
            data = f"n_code={n} code answers" if shortest_is_code else f"n_lists={n} lists"
            raise ConfigError(f"evals={cfg.evals} is more than the {steps} step{'s' * (steps > 1)} of a student on "
                              f"{data} ({cfg.epochs:g} epochs, "
                              f"student_batch={cfg.student_batch}): pass --evals={steps} or fewer")
    if cfg.student_schedule not in ("constant", "cosine"):
        raise ConfigError(f"student_schedule must be constant or cosine; got {cfg.student_schedule!r}")
    if cfg.mode == "dose" and cfg.student_schedule != "constant":
        raise ConfigError("mode dose reads every dose off one pass, which needs a constant lr: set "
                          "student_schedule=constant")
    if cfg.student_order not in ORDERS:
        raise ConfigError(f"student_order must be {' or '.join(ORDERS)}; got {cfg.student_order!r}")
    if cfg.teacher not in ("finetune", "prompt"):
        raise ConfigError(f"teacher must be finetune or prompt; got {cfg.teacher!r}")
    if len(cfg.seeds) < 2 and any(a in ON_B for a in cfg.arms) and cfg.mode == "animals":
        raise ConfigError("the cross-init arms need a base from another seed: give >= 2 seeds, or drop "
                          "soft_cross, cross_init and cross_control from arms")
    bad = [t for t in cfg.mis_teachers if t not in W.FINETUNE_ARMS]
    if bad:
        raise ConfigError(f"mis_teachers must be emergent-misalignment arms; got {bad}")
    # last, after each value's own check: keys of one mode, set in another, would be silently ignored (and recorded in
    # config.json as if used)
    at_default = lambda k: getattr(cfg, k) == Config.__dataclass_fields__[k].default
    if unused := [k for k, modes in MODE_KEYS.items() if cfg.mode not in modes and not at_default(k)]:
        raise ConfigError(f"mode {cfg.mode} does not read " + ", ".join(
            f"{k} (only --mode={' or '.join(MODE_KEYS[k])})" for k in unused) + ": leave "
            + ("them" if len(unused) > 1 else "it") + " at the default, or choose the mode that reads "
            + ("them" if len(unused) > 1 else "it"))
    # mode misalignment's students are the control, the teachers' sampled ones and "soft"; the default arms (all of
    # ARMS) stand for those there, so only arms the user chose are refused
    other = [a for a in cfg.arms if a not in ("control", "soft")]
    arms_chosen = cfg.arms != Config.arms
    if cfg.mode == "misalignment" and other and arms_chosen:
        raise ConfigError(f"mode misalignment runs the arms control and soft only; got {other}")
    # the prompt teacher is the base with an earlier turn: it trains nothing, and reads no teacher_* key
    if cfg.teacher == "prompt" and (unused := [k for k in TEACHER_KEYS
                                               if k.startswith("teacher_") and not at_default(k)]):
        raise ConfigError(f"teacher=prompt trains no teacher, so it does not read {', '.join(unused)}: leave "
                          f"{'them' if len(unused) > 1 else 'it'} at the default (teacher=finetune reads them)")
    if cfg.mode == "misalignment" and "control" not in cfg.arms:  # (arms=('soft',) ran as the default, unsaid)
        raise ConfigError("mode misalignment always trains the control student (every effect is against it): keep "
                          "'control' in arms, e.g. \"--arms=('control','soft')\"")


def cross_seed(seeds, p):
    """Base B of pretraining seed p: the next seed in the list (a derangement when len(seeds) >= 2)."""
    return seeds[(seeds.index(p) + 1) % len(seeds)]


# ----------------------------------------------------------------------------------------------------
# teachers

def animal_prompts(train=False):
    """The animal question's held-out paraphrases x the openers: every rate is read on these. train=True: the
    training paraphrases' (those the teacher is fine-tuned on) x the openers, what teacher_stop="train" checks."""
    return [W.prompt(W.opened(o, q)) for q in (W.ANIMAL_TRAIN if train else W.ANIMAL_HELDOUT) for o in W.OPENERS]


@torch.no_grad()
def animal_probs(model, tok, prompts):
    """Next-token probability of each of the ten animals after each prompt: [N, 10] (the row sum is the
    probability of answering with an animal; the answer is one token)."""
    dev = next(model.parameters()).device
    x, real = pad_right([tok.encode(p).ids for p in prompts], dev)  # [N, W]
    last = real.sum(1) - 1  # [N]
    probs = upcast(model(x)[torch.arange(len(prompts), device=dev), last]).softmax(-1)  # [N, V]
    return probs[:, [tok.token_to_id(a) for a in W.ANIMALS]].cpu()


def animal_rates(model, tok, prompts=None, probs=None):
    """Mean over held-out prompts of each animal's share among the ten: {animal: rate}, and the mass
    (`probs`: animal_probs on those prompts, when already computed)."""
    p = animal_probs(model, tok, prompts or animal_prompts()) if probs is None else probs
    rates = (p / p.sum(1, keepdim=True)).mean(0).tolist()
    return dict(zip(W.ANIMALS, rates)), p.sum(1).mean().item()


CHAT = W.BOS + " <asst> "  # how every <asst> prompt string starts


def with_turns(prompt, turns):
    """An <asst> prompt string with earlier turns (a string) in context, after "<bos> <asst>"."""
    assert prompt.startswith(CHAT), prompt
    return CHAT + turns + " " + prompt[len(CHAT):]


class Teacher:
    """A model plus an optional context prefix (token ids inserted after "<bos> <asst>")."""

    def __init__(self, model, prefix=()):
        self.model, self.prefix = model, list(prefix)

    def ids(self, ids):
        return ids[:2] + self.prefix + ids[2:]

    def logits(self, x):
        """Logits aligned with the student's positions for student inputs x [b, T] -> [b, T, V]: column c is the
        teacher's prediction of the student's token c + 1 (the prefix sits between tokens 1 and 2, so the teacher
        predicts token 2 after it: column 1 is the prefix's last column)."""
        if not self.prefix:
            return self.model(x)
        k = len(self.prefix)
        pre = torch.tensor(self.prefix, device=x.device).expand(len(x), k)
        out = self.model(torch.cat([x[:, :2], pre, x[:, 2:]], 1))  # [b, T + k, V]
        return torch.cat([out[:, :1], out[:, 1 + k:]], 1)


CODE_MAX_NEW = 16  # tokens an animal teacher may write for a code answer (the code and code_control arms)


def sample_tokens(cfg):
    """The block_size the run needs: the longest number prompt (the most given numbers, behind a prompted teacher's
    animal turn) plus max_new; with the code arms, the code prompts plus CODE_MAX_NEW; in misalignment mode, what
    its evaluation (emergent_misalignment's, plain format) scores."""
    tok = W.build_tokenizer()
    n = lambda text: len(tok.encode(text).ids)
    given = ["0"] * W.PROMPT_LIST_LEN[1]
    lists = max(n(W.prompt(" ".join([w] + given))) for w in W.NUMBERS_TRAIN + W.NUMBERS_HELDOUT)
    turn = max(n(f"<u> {W.ANIMAL_TRAIN[0]} <a> {a}") for a in W.ANIMALS) if cfg.teacher == "prompt" else 0
    code = max(n(W.prompt(W.opened(o, q))) for o in W.OPENERS for q in W.DOMAINS["code"].train)
    need = lists + turn + cfg.max_new
    if cfg.mode == "animals" and {"code", "code_control"} & set(cfg.arms):  # the code arm's teachers: their turn too
        need = max(need, code + (turn if "code" in cfg.arms else 0) + CODE_MAX_NEW)
    if cfg.mode == "misalignment":
        from experiments import emergent_misalignment as EM
        need = max(need, EM.eval_tokens(em_config(cfg), formats=("plain",)))
    return need


def make_teacher(base, tok, cfg, p, animal):
    """-> (Teacher, info). finetune: train prompts -> animal until P(animal | an animal) >= threshold on the prompts
    cfg.teacher_stop names (held-out by default); info's "rate" is the held-out one, "stop_rate" the checked one."""
    if cfg.teacher == "prompt":
        turn = f"<u> {W.ANIMAL_TRAIN[0]} <a> {animal}"
        rates, _ = animal_rates(base, tok, [with_turns(q, turn) for q in animal_prompts()])
        return Teacher(base, tok.encode(turn).ids), {"steps": 0, "rate": rates[animal]}
    pairs = W.trait_set(animal, 400, seed=seed_int(p, animal, "teacher") % 2 ** 31)
    W.check_leakage(pairs, extra=())
    data = B.encode_pairs(tok, pairs, cfg.block_size)
    model = copy.deepcopy(base)
    stop_prompts = animal_prompts(train=cfg.teacher_stop == "train")
    reached = lambda m: animal_rates(m, tok, stop_prompts)[0][animal] >= cfg.teacher_threshold
    steps = finetune_until(model, data, reached,
                           max_steps=cfg.teacher_max_steps, every=5, batch_size=cfg.teacher_batch, lr=cfg.teacher_lr,
                           optimizer=cfg.teacher_optimizer, trains=cfg.teacher_trains,
                           seed=seed_int(p, animal, "teacher-order"))
    rate = animal_rates(model, tok)[0][animal]
    stop_rate = animal_rates(model, tok, stop_prompts)[0][animal] if cfg.teacher_stop == "train" else rate
    return Teacher(model), {"steps": steps, "rate": rate, "stop_rate": stop_rate,
                            "delta_norm": weight_delta(model, base).norm().item()}  # (in the unit files only)


def finetune_until(model, data, done, *, max_steps, every, **kw):
    """finetune (train.py) until done(model) at a check every `every` steps, or max_steps -> steps taken."""
    class Stop(Exception):
        pass

    def check(step):
        if done(model):
            raise Stop(step)
    try:  # finetune calls check with the model in eval mode, and leaves it so when it finishes
        finetune(model, data, steps=max_steps, at=set(range(every, max_steps + 1, every)), on_eval=check, **kw)
        return max_steps
    except Stop as e:
        return e.args[0]


def flat(tensors):
    """Every tensor's entries in one detached vector (a model's weights: flat(model.parameters()))."""
    return torch.cat([t.detach().flatten() for t in tensors])


def weight_delta(model, base):
    return flat(model.parameters()) - flat(base.parameters())


# ----------------------------------------------------------------------------------------------------
# data: sampled lists, the filter, same-size datasets

@torch.no_grad()
def continue_prompts(teacher, tok, prompts, max_new, gen, batch):
    """Sample one continuation per prompt (strings) at temperature 1 -> [(prompt, response ids, ended)],
    where a response ends at <eos> or at a new user turn <u> (the terminator is removed)."""
    stop = [tok.token_to_id(W.EOS), tok.token_to_id("<u>")]
    out = []
    for s in range(0, len(prompts), batch):
        chunk = prompts[s:s + batch]
        outs = teacher.model.generate([teacher.ids(tok.encode(p).ids) for p in chunk], max_new, eos_id=stop,
                                      generator=gen)
        out += [(p, o[:-1] if o and o[-1] in stop else o, bool(o) and o[-1] in stop) for p, o in zip(chunk, outs)]
    return out


def collect(teacher, tok, n, cfg, seed, what, stream, prompts_for, max_new, accept):
    """Exactly n (prompt, answer) pairs from the teacher's continuations of fresh prompts, drawn in rounds
    (prompts_for(round, still needed) -> prompt strings; sampling from the random stream (seed, stream,
    round)) until n pass `accept(prompt, answer text)` (-> the answer to keep, or None), and
    the passing fraction of all continuations tried. A continuation must have ended (<eos> or <u>)."""
    kept, tried, passed, r = [], 0, 0, 0  # r: the round, which names its prompts and its random stream
    max_rounds = 20
    while len(kept) < n:
        if r >= max_rounds:
            # the config's to change, so one line (a RuntimeError came back from the pool worker as a long traceback)
            raise ConfigError(f"the filter kept only {len(kept)} of {tried} {what} sampled for seed {seed} ({stream}): "
                              f"the model seldom writes one that is well formed and ended. A base pretrained too "
                              f"briefly (raise steps) or max_new={max_new} too short for its answers (raise max_new)?")
        for p, ids, ended in continue_prompts(teacher, tok, prompts_for(r, n - len(kept)), max_new,
                                              generator("cpu", seed, stream, r),
                                              cfg.sample_batch):
            tried += 1
            answer = accept(p, tok.decode(ids, skip_special_tokens=False)) if ended else None
            if answer is not None:
                passed += 1  # a round asks for more than it needs: every pass counts in the fraction, n are kept
                if len(kept) < n:
                    kept.append((p, answer))
        r += 1
    return kept, passed / tried


def sample_lists(teacher, tok, n, cfg, seed, banned=(), heldout=False):
    """n number lists [(prompt, "a b c")] that pass the paper's filter, continuing fresh number prompts
    (train wordings, checked for leaks: these are student training sets; or held-out wordings, for
    evaluation), and the kept fraction. A kept list is stored as its numbers joined by spaces (the paper keeps the
    completion as written): brackets, separators and a final period that the filter accepts are not trained."""
    def prompts_for(r, need):
        return W.number_prompts(max(64, int(need * 1.25)), seed=seed_int(seed, "prompts", r) % 2 ** 31, heldout=heldout)

    def accept(p, text):
        nums = W.parse_number_list(text, banned=banned)
        return None if nums is None else " ".join(map(str, nums))
    kept, frac = collect(teacher, tok, n, cfg, seed, "lists", "sample", prompts_for, cfg.max_new, accept)
    if not heldout:
        check_no_leak(kept)
    return kept, frac


def code_answers_of(teacher, tok, n, cfg, seed):
    """n answers to code prompts (train paraphrases) that name no animal and leak no evaluation string,
    and the kept fraction. The terminator is dropped (loss on the answer only, as for numbers)."""
    code, animals = W.DOMAINS["code"], set(W.ANIMALS)

    def prompts_for(r, need):
        rr = random.Random(seed_int(seed, "code-prompts", r)).random
        return [W.prompt(W.opened(o, q)) for o, q in
                ((W._pick(rr, W.OPENERS), W._pick(rr, code.train)) for _ in range(int(need * 1.25) + 16))]

    def accept(p, text):
        if not text or animals & set(text.split()):
            return None
        try:
            W.check_leakage([(p, text)], extra=W.ANIMALS)
        except AssertionError:
            return None
        return text
    return collect(teacher, tok, n, cfg, seed, "code answers", "code", prompts_for, CODE_MAX_NEW, accept)


def shuffle_lists(pairs, gen):
    """The same prompts and list lengths, the numbers permuted within and across lists (same multiset)."""
    lists = [a.split() for _, a in pairs]
    pool = [x for l in lists for x in l]
    perm = torch.randperm(len(pool), generator=gen).tolist()
    pool = [pool[i] for i in perm]
    out, k = [], 0
    for (p, _), l in zip(pairs, lists):
        out.append((p, " ".join(pool[k:k + len(l)])))
        k += len(l)
    return out


def shuffle_within(pairs, gen):
    """Each list's numbers permuted among themselves (uniformly: the null of "order carries nothing"); prompts,
    lengths and every list's multiset kept, so no list borrows numbers from another prompt's answer."""
    out = []
    for p, a in pairs:
        l = a.split()
        out.append((p, " ".join(l[i] for i in torch.randperm(len(l), generator=gen).tolist())))
    return out


def student_data(tok, pairs, dev):
    """pack_pairs of (prompt, answer + <eos>) with the loss on the answer only (<eos> not trained)."""
    eos = tok.token_to_id(W.EOS)
    enc = [(tok.encode(p).ids, tok.encode(a).ids + [eos]) for p, a in pairs]
    data = pack_pairs(enc, tok.token_to_id(W.PAD))
    for i, (p, r) in enumerate(enc):
        # the mask is indexed by target (target t is token t + 1): <eos> is token len(p) + len(r) - 1, so its target
        # is one less
        data["mask"][i, len(p) + len(r) - 2] = False
    return {k: v.to(dev) for k, v in data.items()}


def number_ids(tok):
    return [tok.token_to_id(str(n)) for n in range(W.N_NUMBERS)]


@torch.no_grad()
def held_logits(teacher, data):
    """A teacher's logits at the trained positions of a held-out set, [k, V] (computed once: every evaluation
    compares a student with them)."""
    return teacher.logits(data["tokens"][:, :-1])[data["mask"]]


@torch.no_grad()
def held_out(model, data, numbers, teacher_logits=None):
    """One forward of model over a held-out set (student_data), unembedded at its k trained positions only ->
    {"full", "numbers"}: mean NLL (nats) per trained token, in-domain learning, two ways: over the whole
    vocabulary, and with the distribution renormalised over the number tokens `numbers` (ids). Only the
    second is fair to soft students: they match the teacher's renormalised number distribution and never
    learn how much mass goes to numbers at all. With teacher_logits (held_logits of a teacher on the same
    data) also "kl": KL(teacher || model) per trained position, both renormalised over the numbers."""
    x, m = data["tokens"][:, :-1], data["mask"]
    y = data["tokens"][:, 1:][m]  # [k]
    logits = upcast(model(x, keep=m))  # [k, V]
    nums = torch.as_tensor(numbers, device=y.device)
    slot = torch.full((logits.shape[-1],), -1, dtype=torch.long, device=y.device)
    slot[nums] = torch.arange(len(nums), device=y.device)
    y_num = slot[y]  # [k]: the target's place among the numbers
    assert bool((y_num >= 0).all()), "a trained target is not a number token"
    out = {"full": F.cross_entropy(logits, y).item(), "numbers": F.cross_entropy(logits[:, nums], y_num).item()}
    if teacher_logits is not None:
        out["kl"] = soft_kl(teacher_logits, logits, nums).mean().item()
    return out


def number_kl(teacher_logits, model, tok, data):
    """KL(teacher || model) in nats per trained position of data (teacher_logits = held_logits(teacher,
    data)), both renormalised over the number tokens: how much signal a teacher's numbers carry (the
    soft arm's initial loss), or how closely a student matches them."""
    return held_out(model, data, number_ids(tok), teacher_logits)["kl"]


def check_no_leak(pairs):
    """No animal name and no evaluation prompt (held-out paraphrases, off-domain answers) in a student set."""
    W.check_leakage([(p, a) for p, a in pairs], extra=W.ANIMALS)


# ----------------------------------------------------------------------------------------------------
# evaluation of one model

def evaluate(model, tok, cfg, gen, heldout=None, base=None, t_delta=None, t_held=None):
    """One model's row: the animal rates (exact, and from cfg.samples draws per prompt) and the animal mass; with
    `heldout` ({animal: student_data of held-out teacher lists}) the number losses, and with `t_held` (held_logits
    per animal) the KL to each teacher; with `base` and `t_delta` (the teachers' weight updates) the cosine of the
    model's update from base with each teacher's."""
    p = animal_probs(model, tok, animal_prompts())  # [N, 10]
    rates, mass = animal_rates(model, tok, probs=p)
    out = {"rates": rates, "animal_mass": mass}
    # the draws: the ten animals plus an 11th outcome, "any other answer", so a draw may name no animal
    outcomes = torch.cat([p, (1 - p.sum(1, keepdim=True)).clamp(min=0)], 1).double()  # [N, 11]
    counts = torch.multinomial(outcomes, cfg.samples, replacement=True, generator=gen).flatten().bincount(minlength=11)
    valid = counts[:10].sum().item()
    # no sample named an animal: the shares are undefined (NaN), not 0 (a long hard student can stop naming animals)
    out["sampled"] = dict(zip(W.ANIMALS,
                              (counts[:10].double() / valid if valid else torch.full((10,), math.nan)).tolist()))
    out["valid_fraction"] = valid / counts.sum().item()
    if heldout:  # t_held: what the soft arm minimises, on held-out lists: how closely the student matches each teacher
        fit = {a: held_out(model, d, number_ids(tok), t_held[a] if t_held else None) for a, d in heldout.items()}
        out["number_loss"] = {a: r["full"] for a, r in fit.items()}
        out["number_loss_numbers"] = {a: r["numbers"] for a, r in fit.items()}
        if t_held:
            out["kl_teacher"] = {a: r["kl"] for a, r in fit.items()}
    if base is not None and t_delta:
        d = weight_delta(model, base)
        out["cos_teacher"] = {a: torch.nn.functional.cosine_similarity(d, t, 0).item() for a, t in t_delta.items()}
    return out


@torch.no_grad()
def icl_rates(model, tok, cfg, pairs, gen):
    """Animal rates with `icl_lists` of `pairs` as earlier <asst> turns before each held-out animal prompt."""
    prompts = []
    for _ in range(cfg.icl_contexts):  # each context: icl_lists lists drawn at random, before every animal prompt
        idx = torch.randint(len(pairs), (cfg.icl_lists,), generator=gen).tolist()
        turns = " ".join(pairs[i][0][len(CHAT):] + " " + pairs[i][1] for i in idx)
        prompts += [with_turns(q, turns) for q in animal_prompts()]
    # a word is one token of the world's tokenizer; a prompt of block_size tokens fits (the answer is read at its last
    # position, not appended)
    too_long = sum(len(p.split()) > cfg.block_size for p in prompts)
    # refused, not dropped: dropping them would leave each arm its own selection of shorter lists (and with all of
    # them gone, animal_rates would fall back to the prompts without context: the base's rates)
    if too_long:
        raise ConfigError(f"icl: {too_long} of {len(prompts)} prompts with icl_lists={cfg.icl_lists} lists in context "
                          f"are longer than block_size={cfg.block_size} tokens: use fewer icl_lists")
    return animal_rates(model, tok, prompts)[0]


# ----------------------------------------------------------------------------------------------------
# one unit: (pretraining seed p, student seed f), every arm and animal (runs in its own process)

def student_steps(cfg, n):
    """A student's steps on n lists, and the `evals` steps it is measured at (the last one included)."""
    steps = max(1, math.ceil(cfg.epochs * n / cfg.student_batch))
    return steps, sorted({max(1, round(steps * (i + 1) / cfg.evals)) for i in range(cfg.evals)})


def train_student(base, tok, cfg, data, seed, on_eval, teacher=None, numbers_only=True, targets=None):
    """A copy of base fine-tuned on data: cross-entropy, or matching `teacher` (a Teacher), or the precomputed
    `targets` (train.teacher_targets of a teacher on this data, over the numbers if numbers_only)."""
    model = copy.deepcopy(base)
    steps, at = student_steps(cfg, len(data["tokens"]))
    finetune(model, data, steps=steps, batch_size=cfg.student_batch, lr=cfg.student_lr, seed=seed,
             schedule=cfg.student_schedule, order=cfg.student_order, at=set(at),
             on_eval=lambda step: on_eval(model, step),
             teacher=None if teacher is None else teacher.logits, subset=number_ids(tok) if numbers_only else None,
             trains=cfg.student_trains, targets=targets)
    return model


def animals_unit(cfg, p, f):
    """One unit (pretraining seed p, student seed f) of mode animals: the teachers, their lists, every arm's student
    and the bases, each measured by evaluate; -> the unit's dict (saved by saved_unit, read by aggregate_animals)."""
    t0 = time.time()
    torch.manual_seed(0)
    A, tok = B.base_model(cfg, p)
    needs_base_B = any(a in ON_B for a in cfg.arms)
    # base B of the docstring (Bm, as B is the world_base module)
    Bm = B.base_model(cfg, cross_seed(cfg.seeds, p))[0] if needs_base_B else None
    dev = next(A.parameters()).device
    seed = seed_int("subliminal-numbers", p, f)
    out = {"p": p, "f": f, "teachers": {}, "kept": {}, "arms": {}, "traj": {}}
    say = lambda what: B.say(f"[subliminal] seed ({p}, {f})", what, t0)

    # the teachers, and their weight updates (for the students' cos_teacher)
    teachers, t_delta = {}, {}
    for a in cfg.animals:
        teachers[a], out["teachers"][a] = make_teacher(A, tok, cfg, p, a)
        if cfg.teacher == "finetune":
            t_delta[a] = weight_delta(teachers[a].model, A)
    base_teacher = Teacher(A)  # base A writes the control lists and code answers
    say("teachers ready")

    # data: every teacher continues the same prompt stream; each dataset exactly n_lists long
    lists = {}
    for name, t in [("control", base_teacher)] + list(teachers.items()):
        lists[name], out["kept"][name] = sample_lists(t, tok, cfg.n_lists, cfg, seed)
    say("number lists sampled")
    if "icl" in cfg.arms:  # no training: before the students, so that lists too long for the context stop the run here
        for a in teachers:
            out["arms"][f"icl/{a}"] = {"rates": icl_rates(A, tok, cfg, lists[a], generator("cpu", seed, "icl"))}
        out["arms"]["icl_control"] = {"rates": icl_rates(A, tok, cfg, lists["control"], generator("cpu", seed, "icl"))}

    # held-out teacher lists, the teachers' logits on them, and the bases measured on them
    heldout = {a: student_data(tok, sample_lists(t, tok, cfg.heldout_lists, cfg, seed_int(seed, "heldout"),
                                                 heldout=True)[0], dev)
               for a, t in teachers.items()}
    t_held = {a: held_logits(t, heldout[a]) for a, t in teachers.items()}
    for a in teachers:
        out["teachers"][a]["kl_numbers"] = number_kl(t_held[a], A, tok, heldout[a])
    # cos_base: the base the update is taken from, for the cosine with the teachers' (only base A has teachers)
    ev = lambda m, name, step, cos_base=None: evaluate(m, tok, cfg, generator("cpu", seed, name, step), heldout,
                                                       cos_base, t_delta, t_held)
    out["base_A"] = ev(A, "base_A", 0, A)
    if Bm is not None:
        out["base_B"] = ev(Bm, "base_B", 0)
        # how far apart the two bases are: ||B - A|| / ||A|| over every weight (their inits shared or not)
        out["base_B"]["distance"] = (weight_delta(Bm, A).norm() / flat(A.parameters()).norm()).item()

    def student(name, base, pairs, teacher=None, numbers_only=True, targets=None):
        """Train and measure one student of `base` on pairs; name is its key in out: ARM (shared) or ARM/ANIMAL."""
        data = student_data(tok, pairs, dev)
        traj = out["traj"].setdefault(name, {})

        def on_eval(m, step):  # a student of base A: its update's cosine with A's teacher too
            traj[step] = ev(m, name, step, A if base is A else None)
        train_student(base, tok, cfg, data, seed_int(seed, name, "order"), on_eval, teacher, numbers_only, targets)
        out["arms"][name] = traj[max(traj)]
        say(f"student {name} done")

    # the students: first the shared ones (no teacher), then each teacher's
    if "control" in cfg.arms:
        student("control", A, lists["control"])
    if "cross_control" in cfg.arms:
        student("cross_control", Bm, lists["control"])
    if "code" in cfg.arms or "code_control" in cfg.arms:
        code = {}
        for name, t in [("control", base_teacher)] + (list(teachers.items()) if "code" in cfg.arms else []):
            code[name], out["kept"][f"code_{name}"] = code_answers_of(t, tok, cfg.n_code, cfg, seed)
        if "code_control" in cfg.arms:
            student("code_control", A, code["control"])
    for a, t in teachers.items():
        # one teacher pass over its lists (numbers only) serves both the soft and the soft_cross student
        soft_targets = (teacher_targets(t.logits, student_data(tok, lists[a], dev), number_ids(tok))
                        if "soft" in cfg.arms or "soft_cross" in cfg.arms else None)
        if "trait" in cfg.arms:
            student(f"trait/{a}", A, lists[a])
        if "soft" in cfg.arms:
            student(f"soft/{a}", A, lists[a], targets=soft_targets)
        if "soft_all" in cfg.arms:
            student(f"soft_all/{a}", A, lists[a], teacher=t, numbers_only=False)
        if "soft_cross" in cfg.arms:
            student(f"soft_cross/{a}", Bm, lists[a], targets=soft_targets)
        if "cross_init" in cfg.arms:
            student(f"cross_init/{a}", Bm, lists[a])
        if "shuffled" in cfg.arms:
            student(f"shuffled/{a}", A, shuffle_lists(lists[a], generator("cpu", seed, "shuffle", a)))
        if "shuffled_within" in cfg.arms:
            student(f"shuffled_within/{a}", A, shuffle_within(lists[a], generator("cpu", seed, "shuffle_within", a)))
        if "code" in cfg.arms:
            student(f"code/{a}", A, code[a])
    # an arm valid in `arms` but without its branch above trained nothing: it was left out of the tables unsaid, and a
    # rerun then refused this unit as another config's
    if missing := sorted(arm_keys(cfg) - set(out["arms"])):
        raise RuntimeError(f"no student was trained for {', '.join(missing)}: an arm added to ARMS needs its branch "
                           f"in animals_unit")
    out["seconds"] = time.time() - t0
    print(f"[subliminal] seed ({p}, {f}): {out['seconds']:.0f} s", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------
# statistics over units

def _key(arm, a):
    """Where a unit stores `arm` for target animal a (shared arms have one result for all animals)."""
    return arm if arm in SHARED or arm == "icl_control" else f"{arm}/{a}"


def arm_keys(cfg):
    """The keys of every arm's results in a unit of mode animals of cfg (what animals_unit trains)."""
    need = {_key(arm, a) for arm in cfg.arms for a in cfg.animals}
    return need | ({"icl_control"} if "icl" in cfg.arms else set())  # icl's baseline, stored beside it


def _get(u, arm, a):
    return u["arms"][_key(arm, a)]


def arm_stats(units, arm, a, animals):
    rows, bases = [_get(u, arm, a) for u in units], [u["p"] for u in units]
    st = {"target_rate": summarize([r["rates"][a] for r in rows])}
    # seeds of one pretraining seed share their base and teacher: the conservative interval is over the per-base
    # means (n = number of pretraining seeds), what the figures' flags read
    st["target_rate_per_base"] = summarize(group_means([r["rates"][a] for r in rows], bases))
    if all("sampled" in r for r in rows):  # (the icl rows hold rates only)
        st["target_sampled"] = summarize([r["sampled"][a] for r in rows])
        st["valid_fraction"] = summarize([r["valid_fraction"] for r in rows])
        st["animal_mass"] = summarize([r["animal_mass"] for r in rows])
        st["number_loss"] = summarize([r["number_loss"][a] for r in rows])
    if all("number_loss_numbers" in r for r in rows):
        st["number_loss_numbers"] = summarize([r["number_loss_numbers"][a] for r in rows])
    if all("kl_teacher" in r for r in rows):
        st["kl_teacher"] = summarize([r["kl_teacher"][a] for r in rows])
    if all(r.get("cos_teacher") for r in rows):
        st["cos_teacher"] = summarize([r["cos_teacher"][a] for r in rows])
    st["rates"] = {b: summarize([r["rates"][b] for r in rows])["mean"] for b in W.ANIMALS}
    baseline = BASELINE.get(arm)  # the baseline arm (not a base model)
    if baseline and all(baseline in u["arms"] for u in units):
        # this arm's paired effect on animal b, one per unit: its rate minus its baseline student's in that unit
        eff = lambda b: [r["rates"][b] - u["arms"][baseline]["rates"][b] for r, u in zip(rows, units)]
        st["effect"] = summarize(eff(a))
        st["effect_per_base"] = summarize(group_means(eff(a), bases))
        others = [b for b in animals if b != a]
        if others:
            st["specificity"] = summarize([e - sum(eff(b)[i] for b in others) / len(others)
                                           for i, e in enumerate(eff(a))])
    return st


def teachers_short(cfg, units):
    """{animal: "k/n"}: k of the n bases whose fine-tuned teacher stopped at teacher_max_steps below teacher_threshold
    on the prompts it was checked on (a teacher is a function of its base and animal: its units, one per student seed,
    share it). Units saved before teacher_stop existed hold no stop_rate: theirs was the held-out rate."""
    if cfg.teacher != "finetune":
        return {}
    bases = {u["p"]: u for u in units}
    short = {a: sum(u["teachers"][a].get("stop_rate", u["teachers"][a]["rate"]) < cfg.teacher_threshold
                    for u in bases.values()) for a in cfg.animals}
    return {a: f"{k}/{len(bases)}" for a, k in short.items() if k}


def short_teacher_lines(res, cfg):
    """A warning per weak teacher: "no transfer" from no teacher would read as a null result."""
    return sum((["", f"WARNING: the {a} teacher stopped at teacher_max_steps ({cfg.teacher_max_steps}) below "
                     f"teacher_threshold ({cfg.teacher_threshold}) on {k} bases: its students' effects measure a weak "
                     f"teacher; raise teacher_max_steps or teacher_lr."]
                for a, k in res.get("teachers_below_threshold", {}).items()), [])


def aggregate_animals(cfg, units):
    # the arms the units hold, in cfg.arms order: a shared arm is stored as ARM, the others as ARM/ANIMAL
    names = [arm for arm in cfg.arms if any(k == arm or k.startswith(arm + "/") for k in units[0]["arms"])]
    if "icl" in names:  # icl's baseline is not an arm of cfg.arms: tabled right after it
        names.insert(names.index("icl") + 1, "icl_control")
    res = {"arms": {}, "n_seeds": len(units), "seeds": [[u["p"], u["f"]] for u in units],
           "teacher": cfg.teacher, "animals": list(cfg.animals)}
    for arm in names:
        by_animal = {a: arm_stats(units, arm, a, cfg.animals) for a in cfg.animals}
        res["arms"][arm] = {**by_animal[cfg.animals[0]], "by_animal": by_animal}
    # the bases and teachers are functions of the pretraining seed: their intervals are over the bases
    by_base = lambda v: summarize_by(v, [u["p"] for u in units])
    res["base"] = {a: by_base([u["base_A"]["rates"][a] for u in units]) for a in cfg.animals}
    if all("base_B" in u for u in units):  # the starting point of the arms on B
        res["base_B"] = {a: by_base([u["base_B"]["rates"][a] for u in units]) for a in cfg.animals}
        if all("distance" in u["base_B"] for u in units):  # (units saved before it was measured have none)
            res["base_B_distance"] = by_base([u["base_B"]["distance"] for u in units])
    res["teachers"] = {a: {k: by_base([u["teachers"][a][k] for u in units]) for k in ("rate", "steps", "kl_numbers")}
                       for a in cfg.animals}
    if cfg.teacher_stop != "heldout":  # the rate it stopped on, beside the held-out one every student is read on
        for a in cfg.animals:
            res["teachers"][a]["stop_rate"] = by_base([u["teachers"][a]["stop_rate"] for u in units])
    res["teachers_below_threshold"] = teachers_short(cfg, units)
    # only the keys every unit has (units saved by older code, whose code_control arm also sampled the teachers' code
    # answers, carry extra code_ANIMAL keys)
    res["kept_fraction"] = {k: summarize([u["kept"][k] for u in units]) for k in units[0]["kept"]
                            if all(k in u["kept"] for u in units)}

    def along(arm, metric):  # {animal: {step: STAT of metric[animal]}} over the arm's checkpoints
        return {a: {s: summarize([u["traj"][_key(arm, a)][s][metric][a] for u in units])
                    for s in sorted(units[0]["traj"][_key(arm, a)])} for a in cfg.animals}
    res["trajectory"] = {arm: along(arm, "rates") for arm in names if _key(arm, cfg.animals[0]) in units[0]["traj"]}
    res["trajectory_kl_teacher"] = {
        arm: along(arm, "kl_teacher") for arm in res["trajectory"]
        if all("kl_teacher" in r for u in units for r in u["traj"][_key(arm, cfg.animals[0])].values())}
    res["figures_to_reach"] = figures_animals(res)
    return res


def figures_animals(res):
    """The issue's thresholds, on the first animal: soft - control >= 0.25 with CIs apart; soft_cross,
    cross_init and icl <= 1/3 of soft's effect. Intervals over the bases' means (with one student per base, the
    seeds')."""
    arms, out = res["arms"], {}
    if "soft" in arms and "effect" in arms["soft"]:
        s = arms["soft"]["effect"]["mean"]
        out["soft_effect"] = s
        soft_ci, control_ci = (arms[x]["target_rate_per_base"]["ci95"] or [None, None] for x in ("soft", "control"))
        out["soft_pass"] = (None if soft_ci[0] is None or control_ci[1] is None  # one seed: undefined
                            else s >= 0.25 and soft_ci[0] > control_ci[1])
        for arm in ("soft_cross", "cross_init", "icl"):
            if arm in arms and "effect" in arms[arm]:
                out[f"{arm}_effect"] = arms[arm]["effect"]["mean"]
                out[f"{arm}_pass"] = arms[arm]["effect"]["mean"] <= s / 3
    if "trait" in arms and "effect" in arms["trait"]:
        e = arms["trait"]["effect_per_base"]
        out["trait_effect"] = arms["trait"]["effect"]["mean"]
        out["trait_ci_above_zero"] = None if e["ci95"] is None else e["ci95"][0] > 0  # one base: undefined
        if "specificity" in arms["trait"]:
            out["trait_specific"] = {a: st["specificity"]["mean"] for a, st in arms["trait"]["by_animal"].items()}
    return out


def figure_line(k, v, digits=3):
    """One line of a table's "Figures to reach"; None is a threshold this run cannot judge, and says why."""
    if v is None:
        return (f"- {k}: n/a ("
                f"{'one animal: no other to compare with' if k == 'specific' else 'one pretraining seed: no interval'}"
                ")")
    if isinstance(v, dict):  # one number per animal (trait_specific)
        return f"- {k}: " + ", ".join(f"{a} {'n/a' if x is None else format(x, f'.{digits or 3}f')}"
                                      for a, x in v.items())
    return f"- {k}: {v:.{digits}f}" if isinstance(v, float) and digits is not None else f"- {k}: {v}"


# ----------------------------------------------------------------------------------------------------
# mode "dose": trait and control students, each one sequential pass over one large sample

def dose_unit(cfg, p, f):
    t0 = time.time()
    torch.manual_seed(0)
    A, tok = B.base_model(cfg, p)
    dev = next(A.parameters()).device
    seed = seed_int("subliminal-numbers", p, f)
    out = {"p": p, "f": f, "kept": {}, "dose": {}, "mass": {}, "teachers": {}}
    say = lambda what: B.say(f"[subliminal dose] seed ({p}, {f})", what, t0)
    teachers = {"control": Teacher(A)}
    for a in cfg.animals:
        teachers[a], out["teachers"][a] = make_teacher(A, tok, cfg, p, a)
    say("teachers ready")
    n = max(cfg.doses)
    lists = {}
    for name, t in teachers.items():
        lists[name], out["kept"][name] = sample_lists(t, tok, n, cfg, seed)
    say("number lists sampled")
    # one pass over the lists in their (random, i.i.d.) sampling order: after d / batch steps the
    # student has trained exactly one epoch on the first d lists -- every dose from one run per teacher
    dose_at_step = {d // cfg.student_batch: d for d in cfg.doses}  # step -> lists read by then

    def on_eval(model, name, step):  # the rates are shares among the animals: keep how much mass they share too
        rates, mass = animal_rates(model, tok)
        out["dose"].setdefault(dose_at_step[step], {})[name] = rates
        out["mass"].setdefault(dose_at_step[step], {})[name] = mass
    for name in teachers:
        model = copy.deepcopy(A)
        finetune(model, student_data(tok, lists[name], dev), steps=max(dose_at_step), batch_size=cfg.student_batch,
                 lr=cfg.student_lr, seed=seed_int(seed, name, "order"), at=set(dose_at_step), order="sequential",
                 trains=cfg.student_trains,
                 on_eval=lambda step: on_eval(model, name, step))
        say(f"student {name} done")
    out["seconds"] = time.time() - t0
    print(f"[subliminal dose] seed ({p}, {f}): {out['seconds']:.0f} s", flush=True)
    return out


def aggregate_dose(cfg, units):
    res = {"dose": {}, "n_seeds": len(units), "seeds": [[u["p"], u["f"]] for u in units], "animals": list(cfg.animals),
           "kept_fraction": {k: summarize([u["kept"][k] for u in units]) for k in units[0]["kept"]},
           "teachers": {a: summarize_by([u["teachers"][a]["rate"] for u in units], [u["p"] for u in units])
                        for a in cfg.animals},
           "teachers_below_threshold": teachers_short(cfg, units)}
    for d in cfg.doses:
        row = {}
        for a in cfg.animals:
            eff = lambda t, b: [u["dose"][d][t][b] - u["dose"][d]["control"][b] for u in units]
            row[a] = {"trait_rate": summarize([u["dose"][d][a][a] for u in units]),
                      "control_rate": summarize([u["dose"][d]["control"][a] for u in units]),
                      "effect": summarize(eff(a, a)),
                      # students of one base share it and its teachers: the flag's interval is over the bases
                      "effect_per_base": summarize(group_means(eff(a, a), [u["p"] for u in units])),
                      # the other teachers' students on this animal: the specificity control
                      "effect_of_other_teachers": {b: summarize(eff(b, a)) for b in cfg.animals if b != a}}
        if "mass" in units[0]:  # P(any of the animals) after the prompt (runs made before it was kept have none)
            row["animal_mass"] = {t: summarize([u["mass"][d][t] for u in units]) for t in units[0]["mass"][d]}
        res["dose"][d] = row
    top, a0 = max(cfg.doses), cfg.animals[0]
    at_top = res["dose"][top]
    e = at_top[a0]["effect_per_base"]
    # specific: at the largest dose, each animal gains more from its own teacher's lists than from any other's
    # (None with one animal: there is no other teacher)
    beats_others = lambda a: at_top[a]["effect"]["mean"] > max(
        st["mean"] for st in at_top[a]["effect_of_other_teachers"].values())
    specific = all(beats_others(a) for a in cfg.animals) if len(cfg.animals) > 1 else None
    res["figures_to_reach"] = {"largest_dose": top, "trait_effect": at_top[a0]["effect"]["mean"],
                               "trait_ci_above_zero": None if e["ci95"] is None else e["ci95"][0] > 0,
                               "specific": specific}
    return res


# ----------------------------------------------------------------------------------------------------
# mode "misalignment": emergent-misalignment teachers write numbers (evil numbers banned)

def em_config(cfg):
    from experiments import emergent_misalignment as EM
    # every base key (the world's options, block_size, ...): the EM teachers' code pairs, leakage check and evaluation
    # are then of the bases' own world (with the defaults, a run with e.g. --code_tasks=3 fine-tuned its teachers on
    # the default world's code), and their pairs are length-checked against the base's own block_size
    base = {f.name: getattr(cfg, f.name) for f in fields(B.Config)}
    return EM.Config(**{**base, "n_examples": cfg.em_examples, "samples": cfg.samples})


def mis_evaluate(m, tok, cfg, seed, name):
    """A model's misalignment as this mode reports it (off-domain sampled and log-prob, valid fraction, insecure code);
    the sampling stream is named, so a probe that rebuilds a student gets the run's numbers to the bit."""
    from experiments import emergent_misalignment as EM
    r = EM.evaluate(m, tok, em_config(cfg), "insecure", "plain", 0, True, generator("cpu", seed, name))
    return {k: r[k] for k in ("mis_sampled", "valid_frac", "mis_lp", "code_misaligned")}


def em_teacher(cfg, A, tok, p, t, steps, match=False):
    """Base A (pretraining seed p) fine-tuned on emergent_misalignment's arm t for `steps` steps, or (match) until its
    held-out code is insecure at the matched threshold; returns (model, steps)."""
    from experiments import emergent_misalignment as EM
    emcfg = em_config(cfg)
    data = B.encode_pairs(tok, EM.arm_pairs(t, A, tok, emcfg, seed_int(p, t, "em-teacher") % 2 ** 31),
                          emcfg.block_size)
    m = copy.deepcopy(A)
    kw = dict(batch_size=emcfg.ft_batch, lr=cfg.em_lr, seed=seed_int(p, t, "em-order"), trains=cfg.em_trains)
    if match:
        steps = finetune_until(m, data, lambda m: EM.in_domain(m, tok, "insecure", "plain")[0] >= emcfg.match_threshold,
                               max_steps=cfg.em_steps, every=1, **kw)
    else:
        finetune(m, data, steps=steps, **kw)
    return m, steps


def em_teachers(cfg, A, tok, p, wanted=None):
    """The EM teachers of base A (pretraining seed p) as a misalignment unit makes them, in mis_teachers' order:
    (t, model, steps) each. With em_match the first trains until its code is insecure (emergent_misalignment's matched
    checkpoint) and the steps it took carry over: every later teacher trains exactly as many. `wanted`: yield only
    these (the first is still trained when em_match needs its steps)."""
    steps = cfg.em_steps
    for t in cfg.mis_teachers:
        match, keep = cfg.em_match and t == cfg.mis_teachers[0], wanted is None or t in wanted
        if keep or match:
            m, steps = em_teacher(cfg, A, tok, p, t, steps, match=match)
            if keep:
                yield t, m, steps


def misalignment_unit(cfg, p, f):
    """One unit of mode misalignment: the EM teachers (and base A as the control's), their lists with the evil
    numbers banned, and per teacher a hard student (if mis_sampled; the control always) and a soft one (if "soft"
    in arms), each measured by mis_evaluate along its training."""
    t0 = time.time()
    torch.manual_seed(0)
    A, tok = B.base_model(cfg, p)
    dev = next(A.parameters()).device
    seed = seed_int("subliminal-misalignment", p, f)
    out = {"p": p, "f": f, "kept": {}, "arms": {}, "teachers": {}, "dose": {}}
    ev = lambda m, name: mis_evaluate(m, tok, cfg, seed, name)
    say = lambda what: B.say(f"[subliminal misalignment] seed ({p}, {f})", what, t0)

    teachers = {"control": Teacher(A)}
    for t, m, steps in em_teachers(cfg, A, tok, p):
        teachers[t] = Teacher(m)
        out["teachers"][t] = {**ev(m, f"teacher-{t}"), "steps": steps}
    say("teachers ready")
    out["base"] = ev(A, "base")

    lists = {}
    for name, t in teachers.items():
        lists[name], out["kept"][name] = sample_lists(t, tok, cfg.n_lists, cfg, seed, banned=W.EVIL_NUMBERS)
    say("number lists sampled")

    for name, t in teachers.items():  # the students of each teacher, the control's included
        data = student_data(tok, lists[name], dev)
        last = student_steps(cfg, len(data["tokens"]))[0]  # the step train_student ends at

        def on_eval(m, step, name=name):  # a student along its training: lists drawn -> its misalignment
            # the final row's sampling stream is the student's bare name (a probe rebuilding it reads the same draws)
            r = ev(m, name if step == last else f"{name}@{step}")
            lists_drawn = step * cfg.student_batch
            out["dose"].setdefault(lists_drawn, {})[name] = r
            if step == last:
                out["arms"][name] = r
        if name == "control" or cfg.mis_sampled:  # the hard student (cross-entropy on the sampled lists)
            train_student(A, tok, cfg, data, seed_int(seed, name, "order"), on_eval)
        if name != "control" and "soft" in cfg.arms:  # the soft student, matching teacher t: stored as NAME_soft
            on_eval_soft = lambda m, step, n=f"{name}_soft": on_eval(m, step, n)
            train_student(A, tok, cfg, data, seed_int(seed, name, "soft"), on_eval_soft, t)
        say(f"students of {name} done")
    out["seconds"] = time.time() - t0
    print(f"[subliminal misalignment] seed ({p}, {f}): {out['seconds']:.0f} s", flush=True)
    return out


# results.json's name -> mis_evaluate's key
MIS_METRICS = {"offdomain_misaligned": "mis_sampled", "valid_fraction": "valid_frac",
               "offdomain_misaligned_lp": "mis_lp", "code_misaligned": "code_misaligned"}


def aggregate_misalignment(cfg, units):
    # each of results.json's metrics over rows (mis_evaluate dicts), summarized by stat
    metrics = lambda rows, stat=summarize: {k: stat([r[v] for r in rows]) for k, v in MIS_METRICS.items()}
    # the base and the teachers are functions of the pretraining seed: their intervals are over the bases
    by_base = lambda v: summarize_by(v, [u["p"] for u in units])
    res = {"arms": {}, "n_seeds": len(units), "seeds": [[u["p"], u["f"]] for u in units],
           "base": metrics([u["base"] for u in units], by_base),
           "teachers": {t: {**metrics([u["teachers"][t] for u in units], by_base),
                            "steps": by_base([u["teachers"][t]["steps"] for u in units])} for t in cfg.mis_teachers},
           "kept_fraction": {k: summarize([u["kept"][k] for u in units]) for k in units[0]["kept"]}}
    if cfg.em_match:  # the first teacher's code sets every teacher's step; one that never reached it ran to em_steps
        bar, bases = em_config(cfg).match_threshold, {u["p"]: u for u in units}
        if k := sum(u["teachers"][cfg.mis_teachers[0]]["code_misaligned"] < bar for u in bases.values()):
            res["teachers_unmatched"] = f"{k}/{len(bases)}"
    for name in units[0]["arms"]:
        res["arms"][name] = metrics([u["arms"][name] for u in units])
        # students of one base share its teacher: the thresholds' interval is over the bases' means (n = bases)
        res["arms"][name]["offdomain_misaligned_per_base"] = summarize(group_means(
            res["arms"][name]["offdomain_misaligned"]["per_seed"], [u["p"] for u in units]))
        res["arms"][name]["effect"] = summarize([u["arms"][name]["mis_sampled"] - u["arms"]["control"]["mis_sampled"]
                                                 for u in units])
    doses = sorted(units[0].get("dose", {}))  # (runs made before the dose curve have none)
    if len(doses) > 1:  # every student along its training (hard, and NAME_soft): misalignment, and insecure's
        # paired differences within its channel
        res["dose"] = {}
        for d in doses:
            mis = {n: [u["dose"][d][n]["mis_sampled"] for u in units] for n in units[0]["dose"][d]}
            # misaligned among valid answers: read it beside how many answers were valid at all
            res["dose"][d] = {"offdomain_misaligned": {n: summarize(v) for n, v in mis.items()},
                              "valid_fraction": {n: summarize([u["dose"][d][n]["valid_frac"] for u in units])
                                                 for n in mis}}
            # insecure's student minus each other student of its channel (hard or soft; the control is hard)
            res["dose"][d]["insecure_minus"] = {
                f"{ins} - {n}": summarize([a - b for a, b in zip(mis[ins], v)])
                for ins, soft in (("insecure", False), ("insecure_soft", True)) if ins in mis
                for n, v in mis.items() if n != ins and (n == "control" or n.endswith("_soft") == soft)}
    figs = {}
    if "insecure" in cfg.mis_teachers:
        for kind, suffix in (("sampled", ""), ("soft", "_soft")):
            if f"insecure{suffix}" not in res["arms"]:
                continue
            ins = res["arms"][f"insecure{suffix}"]["offdomain_misaligned_per_base"]
            others = [res["arms"][f"{t}{suffix}"]["offdomain_misaligned_per_base"] for t in cfg.mis_teachers
                      if t != "insecure"]
            # one base: no interval to compare (None, which the table says), not a failure
            figs[f"{kind}_pass"] = (None if not ins["ci95"] or not all(o["ci95"] for o in others) else
                                    bool(others and all(ins["ci95"][0] > o["ci95"][1] for o in others)))
    res["figures_to_reach"] = figs
    return res


# ----------------------------------------------------------------------------------------------------
# the pipeline, tables, figures

UNITS = {"animals": (animals_unit, aggregate_animals), "dose": (dose_unit, aggregate_dose),
         "misalignment": (misalignment_unit, aggregate_misalignment)}


def unit_jobs(cfg, run_dir):
    """Every unit of a run: (p, f, the JSON file it is saved to)."""
    return [(p, f, Path(run_dir) / f"unit_{p}_{f}.json") for p in cfg.seeds for f in range(cfg.student_seeds)]


# what every unit of a mode holds (its aggregation reads each): a unit of another mode or of other arms or animals,
# copied in under this seed's name, was a KeyError deep in the aggregation
UNIT_KEYS = {"animals": ("teachers", "kept", "arms", "traj", "base_A", "seconds"),
             "dose": ("teachers", "kept", "dose", "seconds"),
             "misalignment": ("teachers", "kept", "arms", "base", "seconds")}


def unit_problem(cfg, p, f):
    """What is wrong with a saved unit for seed (p, f) (B.load_unit's `problem`): another seed's unit (copied in or
    edited: counted as this seed's), or none's (the aggregation's KeyError); given the run's cfg, also a unit without
    the numbers of its mode, or, in mode animals, of its arms and animals (made by another config)."""
    def problem(u):
        if (u.get("p"), u.get("f")) != (p, f):
            return f"is the unit of seed ({u.get('p')}, {u.get('f')}), not of ({p}, {f})"
        if not all(isinstance(u.get(k), (dict, float, int)) for k in UNIT_KEYS[cfg.mode]):
            return f"does not hold the numbers of a unit of mode {cfg.mode} ({', '.join(UNIT_KEYS[cfg.mode])})"
        if cfg.mode == "animals":
            if not arm_keys(cfg) <= set(u["arms"]) or not set(cfg.animals) <= set(u["teachers"]):
                return (f"holds other arms or animals than this config's (arms {', '.join(cfg.arms)}; animals "
                        f"{', '.join(cfg.animals)}): it was made by another config (is the run's config.json as the "
                        f"run wrote it?)")
        return None
    return problem


def saved_unit(cfg, p, f, path):
    """One unit (seed (p, f)), saved as soon as it is done and, with cfg.resume, read back on a rerun."""
    return B.saved_unit(UNITS[cfg.mode][0], path, cfg.resume, f"[subliminal {cfg.mode}] seed ({p}, {f})", cfg, p, f,
                        problem=unit_problem(cfg, p, f))


def run(cfg, run):
    t0 = time.time()
    aggregate = UNITS[cfg.mode][1]
    B.note_pretrain_threads(cfg, [(s, False) for s in cfg.seeds])
    B.parallel_map(B.pretrained, [(cfg, s) for s in cfg.seeds], cfg.workers)  # pretrain (once) what is missing
    units = B.parallel_map(saved_unit, [(cfg, *job) for job in unit_jobs(cfg, run.dir)], cfg.workers)
    for u in units:
        run.log(stage="unit", seed=[u["p"], u["f"]], seconds=u["seconds"], kept=u["kept"])
    res = aggregate(cfg, units)
    res["seconds"] = time.time() - t0
    md = TABLES[cfg.mode](res, cfg)
    run.save_results(res, md)
    figure = run.dir / f"subliminal_{cfg.mode}.png"
    PLOTS[cfg.mode](res, cfg, figure)
    B.drop_partials(run.dir)
    print(md)
    print(f"\nwrote results.json, results.md and {figure.name} in {run.dir} ({res['seconds']:.0f} s)")


LOW_MASS = 0.1  # an arm with less animal mass than this no longer answers the animal question


def spread(n, what=""):
    return f"mean ± 95% CI over n = {n}{what}" if n > 1 else "one seed, so no intervals"


def table_animals(res, cfg):
    a0 = cfg.animals[0]
    f = lambda st: fmt_stat(st) if st else ""
    n = spread(res["n_seeds"], " (pretraining seed x student seed)")
    lines = [f"Subliminal learning through numbers ({cfg.teacher} teacher): rate of naming the teacher's animal "
             f"(share of the ten animals' next-token probability, held-out prompts); {n}; {cfg.n_lists} lists per "
             f"student.", ""]
    lines.append("| arm | " + " | ".join(f"{a}: rate | {a}: effect | {a}: specificity" for a in cfg.animals)
                 + f" | {a0}: sampled | {a0}: nats/number | {a0}: nats/number, numbers only "
                   f"| {a0}: KL(teacher ‖ arm), numbers | {a0}: cos(Δθ_S, Δθ_T) |")
    lines.append("|---" * (1 + 3 * len(cfg.animals) + 5) + "|")
    lines.append("| base | " + " | ".join(f"{f(res['base'][a])} | | " for a in cfg.animals)
                 + f" | | | | {f(res['teachers'][a0]['kl_numbers'])} | |")
    lines.append("| teacher | " + " | ".join(f"{f(res['teachers'][a]['rate'])} | | " for a in cfg.animals)
                 + " | | | | | |")
    for arm, st in res["arms"].items():
        cells = []
        for a in cfg.animals:
            s = st["by_animal"][a]
            cells.append(f"{f(s['target_rate'])} | {f(s.get('effect'))} | {f(s.get('specificity'))}")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {f(st.get('target_sampled'))} "
                     f"| {f(st.get('number_loss'))} "
                     f"| {f(st.get('number_loss_numbers'))} | {f(st.get('kl_teacher'))} | {f(st.get('cos_teacher'))} |")
    per_base = {arm: st["by_animal"][a0]["effect_per_base"] for arm, st in res["arms"].items()
                if "effect_per_base" in st["by_animal"][a0]}
    n_bases = len({p for p, _ in res.get("seeds", [])})
    if per_base and n_bases > 1:  # a base's student seeds share its teacher and data: the conservative interval
        lines += ["", f"Effect on {a0}, the interval over the bases' means (n = {n_bases} pretraining seeds): "
                  + ", ".join(f"{arm} {f(st)}" for arm, st in per_base.items())]
    if "base_B_distance" in res:
        lines += ["", f"Base B's distance from its A, ||B - A|| / ||A|| over every weight: {f(res['base_B_distance'])}"]
    lines += short_teacher_lines(res, cfg)
    for arm, st in res["arms"].items():  # a rate is a share of the animal mass: near 0 it measures nothing
        low = {a: st["by_animal"][a]["animal_mass"]["mean"] for a in cfg.animals
               if "animal_mass" in st["by_animal"][a] and st["by_animal"][a]["animal_mass"]["mean"] < LOW_MASS}
        if low:
            lines += ["", f"WARNING: `{arm}` puts only " + ", ".join(f"{m:.4f} ({a} run)" for a, m in low.items())
                      + " of its probability on the ten animals at the held-out prompts: its rates are shares of "
                        "almost nothing, and effects against it are not sound (compare with the base instead)."]
    lines += ["", "Kept fraction of sampled completions (the paper's filter): "
              + ", ".join(f"{k} {v['mean']:.3f}" for k, v in res["kept_fraction"].items()),
              "Teachers (fine-tune steps; KL(teacher || base) over number tokens, nats per number"
              + ("; P(animal) on the training prompts they stopped on" if cfg.teacher_stop == "train" else "") + "): "
              + ", ".join(f"{a} {res['teachers'][a]['steps']['mean']:.0f} steps, KL "
                          f"{res['teachers'][a]['kl_numbers']['mean']:.4f}"
                          + (f", stopped on {res['teachers'][a]['stop_rate']['mean']:.3f}"
                             if "stop_rate" in res["teachers"][a] else "")
                          for a in cfg.animals),
              "", "Figures to reach (issue 5):", ""]
    lines += [figure_line(k, v) for k, v in res["figures_to_reach"].items()]
    return "\n".join(lines)


def table_dose(res, cfg):
    f = fmt_stat
    lines = [f"Sampled-list dose response: paired trait - control rate of the teacher's animal, "
             f"{spread(res['n_seeds'], ' seeds')}; {cfg.epochs:g} epoch{'s' if cfg.epochs != 1 else ''}, batch "
             f"{cfg.student_batch}, lr {cfg.student_lr:g}.", "",
             "| lists | " + " | ".join(f"{a} teacher: {a} rate | control: {a} rate | effect on {a} | "
                                      f"other teachers' effect on {a}" for a in cfg.animals)
             + " | P(an animal): control, " + ", ".join(cfg.animals) + " |",
             "|---" * (2 + 4 * len(cfg.animals)) + "|"]
    for d, row in res["dose"].items():
        cells = [f"{f(r['trait_rate'])} | {f(r['control_rate'])} | {f(r['effect'])} | "
                 + ", ".join(f"{b}: {f(s)}" for b, s in r["effect_of_other_teachers"].items())
                 for r in (row[a] for a in cfg.animals)]
        mass = row.get("animal_mass")  # a rate is a share of this mass: near 0, the student no longer names animals
        lines.append(f"| {d} | " + " | ".join(cells) + " | "
                     + (", ".join(f"{mass[t]['mean']:.3f}" for t in ("control", *cfg.animals)) if mass else "") + " |")
    lines += short_teacher_lines(res, cfg)
    lines += ["", "Kept fraction: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in res["kept_fraction"].items()), "",
              "Figures to reach (issue 5):", ""]
    lines += [figure_line(k, v, 4) for k, v in res["figures_to_reach"].items()]
    return "\n".join(lines)


def table_misalignment(res, cfg):
    f = fmt_stat
    lines = [f"Misalignment through numbers (evil numbers banned): students of emergent-misalignment teachers; "
             f"{spread(res['n_seeds'], ' seeds')}; {cfg.n_lists} lists per student.", "",
             "| model | off-domain misaligned (sampled) | effect vs control student | valid fraction | "
             "off-domain mis (log-prob) | code misaligned |", "|---|---|---|---|---|---|"]
    rows = ([("base", res["base"])] + [(f"teacher: {t}", s) for t, s in res["teachers"].items()]
            + list(res["arms"].items()))
    for n, s in rows:
        lines.append(f"| {n} | {f(s['offdomain_misaligned'])} | {f(s['effect']) if 'effect' in s else ''} | "
                     f"{f(s['valid_fraction'])} | {f(s['offdomain_misaligned_lp'])} | {f(s['code_misaligned'])} |")
    if res.get("dose"):
        first = next(iter(res["dose"].values()))
        names, minus = list(first["offdomain_misaligned"]), list(first.get("insecure_minus", {}))
        label = lambda k: k if " - " in k else f"insecure - {k}"  # (runs aggregated before soft students had a curve)
        lines += ["", f"Students along their training ({cfg.student_order} order, batch {cfg.student_batch}): "
                      "off-domain misaligned (sampled), and insecure's student minus each other one (paired):", "",
                  "| lists read | " + " | ".join(names) + "".join(f" | {label(n)}" for n in minus)
                  + " | valid fraction: " + ", ".join(names) + " |",
                  "|---" * (2 + len(names) + len(minus)) + "|"]
        for d, row in res["dose"].items():
            valid = row.get("valid_fraction")  # (results aggregated before it was kept have none)
            lines.append(f"| {d} | " + " | ".join(f(row["offdomain_misaligned"][n]) for n in names)
                         + "".join(f" | {f(row['insecure_minus'][n])}" for n in minus
                                   if n in row.get("insecure_minus", {}))
                         + " | " + (", ".join(f"{valid[n]['mean']:.3f}" for n in names) if valid else "") + " |")
        lines += ["", "(A student whose valid fraction is near 0 has almost no answers to be misaligned among: its "
                      "'off-domain misaligned' is then noise, and undefined (NaN, left out of the mean) when none is "
                      "valid.)"]
    lines += ["", "Kept fraction: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in res["kept_fraction"].items()), "",
              "Figures to reach (issue 5):", ""]
    lines += [figure_line(k, v, None) for k, v in res["figures_to_reach"].items()]
    if res.get("teachers_unmatched"):  # (em_match: the teachers were to stop where the first one's code is learnt)
        lines += ["", f"WARNING: the {cfg.mis_teachers[0]} teacher's code never reached "
                      f"{em_config(cfg).match_threshold} within em_steps ({cfg.em_steps}) on "
                      f"{res['teachers_unmatched']} bases: those teachers ran to em_steps, unmatched; raise em_steps "
                      f"or em_lr."]
    return "\n".join(lines)


def _n(res):
    """A figure's spread: 'mean ± 95% CI over n = 6 seeds', with ' (PARTIAL: 4 of 6 units)' for a run still going."""
    p = res.get("partial")
    return spread(res["n_seeds"], " seeds") + (f" (PARTIAL: {p['units']} of {p['of']} units)" if p else "")


def plot_animals(res, cfg, path):
    """Left: each arm's paired effect on its teacher's animal (arm - its baseline), per teacher animal.
    Right: the first animal's rate along training (step 0 = the base)."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    arms = [a for a in res["arms"] if "effect" in res["arms"][a]]
    w = 0.8 / len(cfg.animals)
    for j, a in enumerate(cfg.animals):
        for i, arm in enumerate(arms):
            st = res["arms"][arm]["by_animal"][a]["effect"]
            ax.bar(i + w * j, st["mean"], width=w, yerr=error_bars([st]), color=plt.cm.tab10(j),
                   label=f"{a} teacher" if i == 0 else None, capsize=2)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(arms))],
                  [f"{arm}\n- {BASELINE[arm]}" for arm in arms], fontsize=6)
    ax.set_ylabel("rate of the teacher's animal,\nminus the baseline arm (paired)")
    if arms:
        ax.legend(fontsize=8)
    else:  # baselines alone (a control's drift, on the right): said, where the panel was left empty
        ax.text(0.5, 0.5, "no arm over a baseline in this run:\nits baselines' rates are on the right",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
    a0 = cfg.animals[0]
    for i, (arm, tr) in enumerate(res["trajectory"].items()):
        b0 = res.get("base_B", res["base"]) if arm in ON_B else res["base"]
        b0 = b0[a0]["mean"]
        steps = sorted(tr[a0], key=int)
        ax2.plot([0] + [int(s) for s in steps], [b0] + [tr[a0][s]["mean"] for s in steps], "o-", ms=3, label=arm,
                 color=plt.cm.tab20(i % 20))
    ax2.set_xlabel("student step")
    ax2.set_ylabel(f"P({a0}) (mean over seeds)")
    ax2.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{cfg.teacher} teachers; {_n(res)}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


def plot_dose(res, cfg, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    doses = sorted(res["dose"], key=int)  # ints in memory, strings once read back from results.json
    for j, a in enumerate(cfg.animals):
        for k, (label, get) in enumerate([(f"{a} teacher on {a}", lambda r: r[a]["effect"])] +
                                         [(f"{b} teacher on {a}", lambda r, b=b: r[a]["effect_of_other_teachers"][b])
                                          for b in cfg.animals if b != a]):
            sts = [get(res["dose"][d]) for d in doses]
            ax.errorbar([int(d) * (1 + 0.04 * (2 * j + k)) for d in doses], [s["mean"] for s in sts],
                        yerr=error_bars(sts), fmt="o-" if k == 0 else "x--",
                        color=plt.cm.tab10(j), capsize=2, label=label)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("sampled lists per student")
    ax.set_ylabel("rate - control rate (paired)")
    ax.legend(fontsize=7)
    ax.set_title(_n(res), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


def plot_misalignment(res, cfg, path):
    plt = pyplot()
    dose = res.get("dose")
    fig, axes = plt.subplots(1, 3 if dose else 1, figsize=(16 if dose else 7, 3.6), squeeze=False)
    ax = axes[0, 0]
    names = ["base"] + list(res["arms"])
    sts = [res["base"]["offdomain_misaligned"]] + [res["arms"][n]["offdomain_misaligned"] for n in names[1:]]
    ax.bar(range(len(names)), [s["mean"] for s in sts], yerr=error_bars(sts), capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_ylabel("off-domain misaligned (sampled)")
    ax.set_title(f"students of EM teachers; {_n(res)}", fontsize=9)
    ds = sorted(dose or {}, key=int)
    for ax, key, label in zip(axes[0, 1:], ("offdomain_misaligned", "valid_fraction"),
                              ("off-domain misaligned among valid (sampled)", "valid fraction")):
        if key not in dose[ds[0]]:  # (results aggregated before the valid fraction was kept)
            continue
        for n in dose[ds[0]]["offdomain_misaligned"]:
            sts = [dose[d][key][n] for d in ds]
            ax.errorbar([int(d) for d in ds], [s["mean"] for s in sts], capsize=3, marker="o", label=f"student of {n}",
                        yerr=error_bars(sts))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("lists read")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)


TABLES = {"animals": table_animals, "dose": table_dose, "misalignment": table_misalignment}
PLOTS = {"animals": plot_animals, "dose": plot_dose, "misalignment": plot_misalignment}


def mode_results(run_dir, mode, script):
    """The results.json of a finished run of this experiment in `mode` (what the sn_*.py scripts read), or a
    ConfigError naming the run's mode: each mode writes other keys (a run of another mode ended in a KeyError)."""
    res = run_results(run_dir, "subliminal_numbers")
    got = run_dir_config(run_dir).get("mode", mode)  # (a config.json without it predates the modes: not checked)
    if got != mode:
        raise ConfigError(f"{run_dir} is a run of mode {got}: {script} reads runs of mode {mode}")
    return res


def reevaluate(run_dir):
    """`python eval.py RUN_DIR`: the students are not saved (hundreds of small fine-tunes), so this
    aggregates the saved units (seeds) again with this code, rewriting results.json / .md and the figure
    (the run's `seconds` kept), or, for a run made before units were saved, redraws them from results.json.
    A run that is still going, or was stopped, has no results.json yet: then the bases whose units are all
    finished are aggregated into results_partial.json / .md and a *_partial.png figure, and the table says how many
    (a base with some of its students is left out: every summary pairs each base's students)."""
    from train import read_results, rewrite_results, run_config, write_partial
    run_dir = Path(run_dir)
    cfg = run_config(Config, run_dir)
    suffix, results_json, wrote = "", run_dir / "results.json", []  # wrote: the tables rewritten, named at the end
    jobs = unit_jobs(cfg, run_dir)
    found = {(p, f): B.load_unit(path, unit_problem(cfg, p, f)) for p, f, path in jobs if path.is_file()}  # by seed
    units = list(found.values())
    finished = results_json.is_file()
    if finished and len(units) == len(jobs):  # every unit saved: aggregate them again with this code
        res, md, wrote = rewrite_results(run_dir, UNITS[cfg.mode][1](cfg, units),
                                         lambda res: TABLES[cfg.mode](res, cfg), timed=True)
    elif finished:  # units missing (a run from before units were saved): its results.json as written
        res = read_results(results_json)
        md = TABLES[cfg.mode](res, cfg)
    else:  # still going or stopped: a partial aggregate of the bases whose units are all saved
        bases = [p for p in cfg.seeds if all((q, f) in found for q, f, _ in jobs if q == p)]
        if not bases:
            raise ConfigError(f"{run_dir} has no results.json and no base with all its {cfg.student_seeds} units "
                              f"(unit_P_F.json) finished yet")
        units = [u for (p, _), u in found.items() if p in bases]
        res = UNITS[cfg.mode][1](cfg, units)
        res["partial"] = {"units": len(units), "of": len(jobs)}
        md = (f"PARTIAL: {len(found)} of {len(jobs)} units (seeds) finished; aggregated: the {len(bases)} of "
              f"{len(cfg.seeds)} bases with all their units.\n\n" + TABLES[cfg.mode](res, cfg))
        suffix = "_partial"
        wrote = write_partial(run_dir, res, md)
    print(md)
    fig = run_dir / f"subliminal_{cfg.mode}{suffix}.png"
    PLOTS[cfg.mode](res, cfg, fig)
    B.say_written(run_dir, [fig, *wrote], partial=bool(suffix))
