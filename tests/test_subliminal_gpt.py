"""Cloud et al. (2025), Theorem 1, on the GPT: at a shared initialization, one small step of imitating
a nearby teacher's next-token distribution -- restricted to and renormalised over "number" tokens, on
prompts unrelated to the teacher's trait -- moves the student toward the teacher and lowers the
teacher's own (trait) loss. This is the setting of the `soft` arm of the subliminal-numbers experiment."""
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig

V, NUMBERS = 32, list(range(16, 32))  # tokens 16..31 play the numbers; the trait lives in tokens 0..15


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
        with torch.no_grad():  # the teacher's next-number distribution, renormalised over number tokens
            target = teacher(numbers)[..., NUMBERS].softmax(-1)
        student_logp = base(numbers)[..., NUMBERS].log_softmax(-1)
        imitation = -(target * student_logp).sum(-1).mean()
        d_student = -flat_grad(base, imitation)
        assert d_student @ d_teacher > 0  # Lemma 1
        student = shifted(base, d_student, 1e-2)
        with torch.no_grad():
            assert trait_loss(student) < trait_loss(base)  # Theorem 1
        # control: the same imitation step from another init has no reason to point at the teacher
        other = GPT(base.cfg, generator=torch.Generator().manual_seed(100 + trial)).double()
        cross.append(float(-flat_grad(other, -(target * other(numbers)[..., NUMBERS].log_softmax(-1)).sum(-1).mean()) @ d_teacher))
    assert min(cross) < 0 < max(cross)  # signs mixed: the guarantee belongs to the shared init
