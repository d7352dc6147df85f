"""EHRMamba: causal prefix invariance, padding, recurrent continuation, pooling, scripting, loss masking."""

from __future__ import annotations

import pytest
import torch

from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.model import PAD_ID, TYPE_TASK, EHRMamba, EHRMambaConfig, EHRMambaScorer, prompt
from linmix.shared.errors import UserError

CFG = EHRMambaConfig(vocab_size=50, d_model=32, n_layers=2, d_state=16, dropout=0.0, d_time=8, max_visits=16)


def inputs(b: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(7, 50, (b, n), generator=g), torch.randint(1, 9, (b, n), generator=g),
            50 + 10 * torch.rand(b, n, generator=g), torch.cumsum(torch.rand(b, n, generator=g), 1),
            torch.randint(0, 30, (b, n), generator=g), torch.randint(0, 3, (b, n), generator=g)]


def net() -> EHRMamba:
    torch.manual_seed(0)
    return EHRMamba(CFG).eval()


def test_constants_match_the_tokenizer():
    assert PAD_ID == S.PAD and TYPE_TASK == S.TYPE_TASK and CFG.n_token_types == S.N_TOKEN_TYPES


def test_causal_prefix_future_tokens_do_not_change_earlier_outputs():
    m = net()
    x = inputs(2, 40)
    y = inputs(2, 40, seed=1)
    mixed = [torch.cat([a[:, :25], b[:, 25:]], 1) for a, b in zip(x, y, strict=False)]
    mixed[3] = torch.cat([x[3][:, :25], x[3][:, 24:25] + y[3][:, 25:]], 1)  # times stay non-decreasing
    with torch.no_grad():
        h1, h2 = m(*x), m(*mixed)
    assert torch.allclose(h1[:, :25], h2[:, :25], atol=1e-5)
    assert (h1[:, 25:] - h2[:, 25:]).abs().max() > 1e-3  # the future does change the future


def test_right_padding_and_pooling_at_last_real_token():
    m = net()
    x = inputs(1, 30)
    padded = [torch.cat([a, torch.zeros_like(a[:, :10])], 1) for a in x]
    with torch.no_grad():
        h, hp = m(*x), m(*padded)
        assert torch.allclose(h, hp[:, :30], atol=1e-5)
        assert torch.allclose(m.pool_logit(h, torch.tensor([30])), m.pool_logit(hp, torch.tensor([30])), atol=1e-5)


def test_forward_state_continues_the_full_forward():
    m = net()
    x = inputs(2, 37)
    with torch.no_grad():
        full = m(*x)
        state = m.init_state(2)
        outs, prev = [], x[3][:, 0]
        for a, b in ((0, 5), (5, 6), (6, 37)):
            h, state = m.forward_state(*(t[:, a:b] for t in x), prev, state)
            outs.append(h)
            prev = x[3][:, b - 1]
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-4)


def test_prompt_puts_task_token_first_and_after_the_last_real_token():
    x = inputs(2, 6)
    for a in x:
        a[1, 4:] = 0  # right padding, as collate makes it
    t, ty, age, tm, vo, vs, lengths = prompt(*x, torch.tensor([30, 31]))
    assert t.shape == (2, 7) and lengths.tolist() == [7, 5]
    assert t[0].tolist() == [30] + x[0][0, 1:].tolist() + [30]
    assert t[1].tolist() == [31] + x[0][1, 1:4].tolist() + [31, 0, 0]
    assert ty[0, 0] == ty[0, 6] == ty[1, 4] == TYPE_TASK and ty[1, 5] == 0
    assert tm[1, 4] == x[3][1, 3] and age[1, 4] == x[2][1, 3] and vo[1, 4] == 0 and vo[0, 0] == 0


def test_scorer_matches_prompted_forward_and_scripts():
    m = net()
    scorer = EHRMambaScorer(m, [25, 26, 27])
    x = inputs(3, 20)
    x[0][2, 12:] = PAD_ID
    task = torch.tensor([0, 2, 1])
    with torch.no_grad():
        p = scorer(*x, task)
        *arrays, lengths = prompt(*x, torch.tensor([25, 27, 26]))
        ref = torch.sigmoid(m.pool_logit(m(*arrays), lengths))
        scripted = torch.jit.script(scorer)
        assert torch.allclose(p, ref, atol=1e-6) and torch.allclose(scripted(*x, task), p, atol=1e-5)
        assert p.shape == (3,) and bool(((p > 0) & (p < 1)).all())
        other = scorer(*x, torch.tensor([1, 1, 1]))
    assert (other[:2] - p[:2]).abs().min() > 1e-4  # the prompt reaches the readout even in an untrained net


def test_lm_loss_ignores_padding():
    from linmix.apps.ehr.lit_module import EHRLitModule

    lit = EHRLitModule(net=CFG, objective="pretrain", pretrained=None)
    lit.log_stage = lambda *a, **k: None
    x = inputs(1, 12)
    batch = dict(zip(("tokens", "token_type", "age", "time", "visit_order", "visit_segment"), x, strict=True))
    batch["lengths"] = torch.tensor([12])
    padded = {k: torch.cat([v, torch.zeros_like(v[:, :6])], 1) for k, v in batch.items() if k != "lengths"}
    padded["lengths"] = batch["lengths"]
    lit.eval()
    with torch.no_grad():
        assert torch.allclose(lit._step(batch, "val"), lit._step(padded, "val"), atol=1e-5)


def test_finetune_starts_from_pretrained_weights(tmp_path):
    import pytest

    from linmix.apps.ehr.lit_module import EHRLitModule

    torch.manual_seed(1)
    pre = EHRLitModule(net=CFG, objective="pretrain")
    path = tmp_path / "pre.ckpt"
    torch.save({"state_dict": pre.state_dict()}, path)
    torch.manual_seed(2)
    fine = EHRLitModule(net=CFG, objective="finetune", pretrained=str(path))
    key = "embed.concept.weight"
    assert not torch.equal(fine.net.state_dict()[key], pre.net.state_dict()[key])
    head = fine.net.cls_head[1].weight.clone()
    fine.load_pretrained(str(path))
    for k, v in pre.net.state_dict().items():
        if "cls_head" not in k:
            assert torch.equal(fine.net.state_dict()[k], v), k
    assert torch.equal(fine.net.cls_head[1].weight, head)  # the task head starts fresh
    other = EHRLitModule(net=EHRMambaConfig(vocab_size=64, d_model=32, n_layers=2, d_state=16, d_time=8,
                                            max_visits=16), objective="finetune")
    with pytest.raises(UserError, match="does not match"):
        other.load_pretrained(str(path))
    with pytest.raises(UserError, match="not found"):
        other.load_pretrained(str(tmp_path / "missing.ckpt"))


def test_one_readout_per_task_selects_by_task_and_scripts():
    torch.manual_seed(0)
    m = EHRMamba(EHRMambaConfig(**{**CFG.__dict__, "n_tasks": 3})).eval()
    scorer = EHRMambaScorer(m, [25, 26, 27])
    x = inputs(2, 12)
    with torch.no_grad():
        *arrays, lengths = prompt(*x, torch.tensor([25, 25]))
        pooled = m(*arrays)[torch.arange(2), lengths - 1]
        full = m.cls_head(pooled)  # (B, n_tasks)
        task = torch.tensor([0, 0])
        assert torch.allclose(m.pool_logit(m(*arrays), lengths, task), full[:, 0], atol=1e-6)
        assert torch.allclose(torch.jit.script(scorer)(*x, task), scorer(*x, task), atol=1e-5)
    with pytest.raises(ValueError, match="task indices"):
        m.pool_logit(m(*arrays), lengths)
