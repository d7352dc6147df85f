"""Optimiser defaults and mixed precision for the CTR nets: Adam's betas, bfloat16 autocast with float32 logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from linmix.apps.ctr.baselines import LogitLinear
from linmix.apps.ctr.cli import main
from linmix.apps.ctr.lit_module import CTRLitModule
from linmix.apps.ctr.losses import tri_bce
from linmix.apps.ctr.model import CTRNet, CTRNetConfig

SIZES = (33, 27, 22, 18, 15, 9)
TINY = str(Path(__file__).resolve().parents[2] / "configs" / "ctr" / "tiny.yaml")


def _batch(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randint(3, s, (n,), generator=g) for s in SIZES], 1)
    return idx, torch.ones(idx.shape), torch.randint(0, 2, (n,), generator=g).float()


def test_optimiser_is_adam_with_its_default_betas():
    lit = CTRLitModule(net=CTRNetConfig(field_sizes=SIZES), lr=1e-2)
    opt = lit.configure_optimizers()["optimizer"]
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["lr"] == 1e-2
    assert CTRLitModule(net=CTRNetConfig(field_sizes=SIZES), betas=(0.8, 0.9)).configure_optimizers()[
        "optimizer"].defaults["betas"] == (0.8, 0.9)


def test_optimiser_uses_the_fused_kernel_with_the_same_update():
    """The shared base asks for AdamW's fused kernel on CPU; a few steps on one loss equal the per-tensor loop's."""
    torch.manual_seed(0)
    cfg = CTRNetConfig(field_sizes=SIZES, embed_init_std=0.1, dropout=0.0, linear_dropout=0.0)
    lit = CTRLitModule(net=cfg, lr=1e-2, weight_decay=0.1)
    opt = lit.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"]
    w0 = lit.net.body.ecn.w[0].weight.detach().clone()
    ref_net = CTRNet(cfg)
    ref_net.load_state_dict(lit.net.state_dict())
    ref = torch.optim.AdamW([{"params": [p for p in ref_net.parameters() if p.ndim >= 2], "weight_decay": 0.1},
                             {"params": [p for p in ref_net.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.999), foreach=False)
    idx, val, y = _batch()
    for _ in range(3):
        for net, o in ((lit.net, opt), (ref_net, ref)):
            o.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(net(idx, val), y).backward()
            o.step()
    for a, b in zip(lit.net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(lit.net.body.ecn.w[0].weight, w0)  # the steps moved the weights


@pytest.mark.parametrize("arch", ["fcn", "dcnv2", "dnn"])
def test_bf16_autocast_trains_with_float32_logits(arch):
    torch.manual_seed(0)
    net = CTRNet(CTRNetConfig(arch=arch, field_sizes=SIZES, hidden=(64, 64), embed_init_std=0.1)).train()
    hidden_dtypes = []
    for m in net.modules():
        if type(m) is nn.Linear:
            m.register_forward_hook(lambda mod, inp, out: hidden_dtypes.append(out.dtype))
    idx, val, y = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = net.branch_logits(idx, val)
        loss = tri_bce(*z, y, "official" if arch == "fcn" else "bce")
    assert all(t.dtype == torch.float32 and t.shape == (256,) for t in z)
    if arch != "fcn":  # FCN's cross layers call their weights directly (the fused layer), not the Linear modules
        assert hidden_dtypes and set(hidden_dtypes) == {torch.bfloat16}  # the hidden layers ran in bfloat16
    loss.backward()  # the FCN cross layers' hand-written backward is not used under autocast
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    net.eval()
    with torch.no_grad():
        full = net(idx, val)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(idx, val)
    err = (mixed - full).abs().max().item()
    assert 0 < err < 0.05 * full.abs().max().item() + 1e-3  # bfloat16 rounding, not a different function


def test_logit_layer_keeps_float32_resolution_under_autocast():
    torch.manual_seed(0)
    lin = LogitLinear(64)
    plain = nn.Linear(64, 1)
    plain.load_state_dict(lin.state_dict())  # same parameters, same state-dict keys
    h = torch.randn(4096, 64)
    ref = lin(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kept, rounded = lin(h), plain(h).squeeze(-1)
    assert kept.dtype == torch.float32 and torch.allclose(kept, ref, atol=1e-6)
    assert rounded.dtype == torch.bfloat16 and (rounded.float() - ref).abs().max() > 1e-3
    assert kept.unique().numel() > 2 * rounded.unique().numel()  # rounded scores tie; ranked metrics blur


def test_cli_fit_in_bf16_mixed_precision(tmp_path):
    common = ["-c", TINY, "--data.data_dir", str(tmp_path / "data"), "--data.synth_rows", "3000",
              "--trainer.default_root_dir", str(tmp_path / "run"), "--model.out_dir", str(tmp_path / "out"),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "run")]
    assert main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed",
                 "--trainer.gradient_clip_val", "10"]) == 0  # clipping beside the fused AdamW kernel
    ckpt = sorted((tmp_path / "run").rglob("last.ckpt"))[0]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert {v.dtype for v in state["state_dict"].values() if v.is_floating_point()} == {torch.float32}
    auc = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")][0]["best_model_score"]
    assert 0.5 < float(auc) < 1.0


def test_logit_of_a_pair_is_the_logit_of_the_concatenation():
    torch.manual_seed(0)
    lin = LogitLinear(48)
    a, b = torch.randn(300, 20), torch.randn(300, 28)
    ref = lin(torch.cat([a, b], -1))
    torch.testing.assert_close(lin.forward_pair(a, b), ref, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = lin.forward_pair(a, b.bfloat16())
    assert mixed.dtype == torch.float32 and (mixed - ref).abs().max() < 0.05
    net = CTRNet(CTRNetConfig(arch="dcnv2", field_sizes=SIZES, hidden=(32, 16), embed_init_std=0.1)).eval()
    idx, val, _ = _batch(64)
    torch.testing.assert_close(torch.jit.script(net)(idx, val), net(idx, val), rtol=1e-6, atol=1e-6)
