"""Cloud et al. (2025), Theorem 1, on the GPT: at a shared initialization, one small step of imitating a nearby
teacher's next-token distribution -- restricted to and renormalised over "number" tokens, on prompts unrelated to the
teacher's trait -- moves the student toward the teacher and lowers the teacher's own (trait) loss. This is the setting
of the `soft` arm of the subliminal-numbers experiment, and the student's loss is that arm's own (`train.soft_kl`). The
theorem holds for any differentiable model (to first order the step is a positive semi-definite matrix times the
teacher's displacement): this checks the arm's loss and its number subset, not the GPT's forward, which
tests/test_gpt.py covers."""
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from train import soft_kl

V, NUMBERS = 32, list(range(16, 32))  # tokens 16..31 play the numbers; the trait lives in tokens 0..15
subset = torch.tensor(NUMBERS)


def flat_grad(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


def shifted(model, delta, scale):
    out = GPT(model.cfg).double()
    with torch.no_grad():
        i = 0
        for (name, p), q in zip(model.named_parameters(), out.parameters()):
            q.copy_(p + scale * delta[i:i + p.numel()].view_as(p))
            i += p.numel()
    return out


def test_theorem1_on_the_gpt():
    cross = []
    for trial in range(6):
        g = torch.Generator().manual_seed(trial)
        base = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, init_std=0.2),
                   generator=g).double()
        trait_x = torch.randint(0, 16, (8, 6), generator=g)  # "favourite animal" prompts
        trait_y = torch.randint(0, 16, (8,), generator=g)     # the teacher's trait answers
        numbers = torch.randint(16, 32, (16, 8), generator=g)  # unrelated number prompts
        trait_loss = lambda m: F.cross_entropy(m(trait_x)[:, -1], trait_y)
        d_teacher = -flat_grad(base, trait_loss(base))
        teacher = shifted(base, d_teacher, 1e-2)
        with torch.no_grad():
            target = teacher(numbers)  # [16, 8, V]
        imitation = lambda m: soft_kl(target, m(numbers), subset=subset).mean()  # the soft arm's loss
        d_student = -flat_grad(base, imitation(base))
        # it is the cross-entropy to the teacher's next-number distribution renormalised over the numbers (the
        # two differ by the teacher's entropy, a constant): the loss of the theorem
        p = target[..., NUMBERS].softmax(-1)
        manual = -flat_grad(base, -(p * base(numbers)[..., NUMBERS].log_softmax(-1)).sum(-1).mean())
        torch.testing.assert_close(d_student, manual, rtol=1e-4, atol=1e-6)
        # the subset is applied: tokens 0..15 are neither read (the prompts are numbers) nor scored, so their rows
        # of the tied embedding get no gradient at all
        assert not d_student[:V * base.cfg.n_embd].view(V, -1)[:16].any()
        assert d_student @ d_teacher > 0  # Lemma 1
        student = shifted(base, d_student, 1e-2)
        with torch.no_grad():
            assert trait_loss(student) < trait_loss(base)  # Theorem 1
        # control: the same imitation step from another init has no reason to point at the teacher
        other = GPT(base.cfg, generator=torch.Generator().manual_seed(100 + trial)).double()
        cross.append(float(-flat_grad(other, imitation(other)) @ d_teacher))
    assert min(cross) < 0 < max(cross)  # signs mixed: the guarantee belongs to the shared init
