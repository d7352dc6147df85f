"""FCN cross layers against the official code's equations, Tri-BCE variants, embeddings, serving checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from linmix.apps.ctr.embedding import FieldEmbedding
from linmix.apps.ctr.fcn import FCNBody
from linmix.apps.ctr.losses import tri_bce
from linmix.apps.ctr.model import CTRNet, CTRNetConfig, CTRServing


def reference_fcn(body: FCNBody, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample, per-head loop over the official code's equations (salmon1802/FCN src/DCNv3.py)."""
    B, nf, _ = e.shape
    H, d = body.n_heads, body.d_model
    outs = []
    for b in range(B):
        z = {}
        for name, net in (("e", body.ecn), ("l", body.lcn)):
            heads = []
            for h in range(H):
                v = [e[b, f, h * d:(h + 1) * d] for f in range(nf)]
                x0 = torch.cat([t[: d // 2] for t in v] + [t[d // 2:] for t in v])
                x = x0
                for i in range(len(net.w)):
                    hh = net.w[i].weight @ x
                    m = torch.relu(F.layer_norm(hh, hh.shape, net.ln[i].weight, net.ln[i].bias))
                    hp = torch.cat([hh, hh * m]) + net.bias[i]
                    x = (x if name == "e" else x0) * hp + x
                heads.append(net.out.weight[0] @ x + net.out.bias[0])
            z[name] = torch.stack(heads).mean()
        outs.append(((z["e"] + z["l"]) / 2, z["e"], z["l"]))
    return tuple(torch.stack([o[k] for o in outs]) for k in range(3))


@pytest.mark.parametrize("heads", [1, 2])
def test_fcn_matches_official_equations(heads):
    torch.manual_seed(0)
    body = FCNBody(n_fields=3, d_model=4, n_heads=heads, n_layers=3, n_linear_layers=2, dropout=0.0,
                   linear_dropout=0.0).eval()
    with torch.no_grad():
        for net in (body.ecn, body.lcn):
            for ln in net.ln:
                ln.weight.normal_()
                ln.bias.normal_()
    e = torch.randn(5, 3, 4 * heads)
    got = body(e)
    want = reference_fcn(body, e)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_lcn_order_grows_linearly_ecn_exponentially():
    """Scaling x0 by s: with zero biases and no mask/norm the branch output is a polynomial in s whose top
    degree is L + 1 (LCN) or 2^L (ECN); check through finite ratios on a 1-field, 2-dim input."""
    torch.manual_seed(0)
    body = FCNBody(n_fields=1, d_model=2, n_layers=2, n_linear_layers=2, dropout=0.0, linear_dropout=0.0,
                   layer_norm=False).double().eval()
    with torch.no_grad():
        for net in (body.ecn, body.lcn):
            net.bias.zero_()
            net.out.bias.zero_()
            for w in net.w:
                w.weight.fill_(0.5)
    e = torch.tensor([[[1.0, 1.0]]], dtype=torch.double)
    # relu mask with positive weights/inputs keeps h * m = h^2 ... use large s to read the leading degree
    s1, s2 = 1e3, 2e3
    _, ze1, zl1 = body(e * s1)
    _, ze2, zl2 = body(e * s2)
    deg_e = torch.log2(ze2 / ze1).item()
    deg_l = torch.log2(zl2 / zl1).item()
    assert deg_l < deg_e
    assert deg_e > 4.5  # exponential: degree grows faster than linear


def test_tri_bce_value_and_gradients():
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    z0 = torch.tensor([2.0, -2.0, 1.5, -1.0])
    ze0 = torch.tensor([0.5, -0.2, 0.1, 0.3])
    zl0 = torch.tensor([-0.5, 0.4, 0.2, -0.1])
    z, ze, zl = (t.clone().requires_grad_() for t in (z0, ze0, zl0))
    L = F.binary_cross_entropy(torch.sigmoid(z), y)
    Le = F.binary_cross_entropy(torch.sigmoid(ze), y)
    Ll = F.binary_cross_entropy(torch.sigmoid(zl), y)
    assert Le > L and Ll > L  # both weights active for this draw
    loss = tri_bce(z, ze, zl, y, "official")
    torch.testing.assert_close(loss, L + (Le - L) * Le + (Ll - L) * Ll)
    loss.backward()
    # non-detached: (1 - Le - Ll) dL + (2Le - L) dLe + (2Ll - L) dLl
    zz = z0.clone().requires_grad_()
    dL = torch.autograd.grad(F.binary_cross_entropy(torch.sigmoid(zz), y), zz)[0]
    zze = ze0.clone().requires_grad_()
    dLe = torch.autograd.grad(F.binary_cross_entropy(torch.sigmoid(zze), y), zze)[0]
    torch.testing.assert_close(z.grad, (1 - Le - Ll).detach() * dL)
    torch.testing.assert_close(ze.grad, (2 * Le - L).detach() * dLe)
    zd, zed, zld = (t.clone().requires_grad_() for t in (z0, ze0, zl0))
    tri_bce(zd, zed, zld, y, "detach").backward()
    torch.testing.assert_close(zd.grad, dL)  # weights detached: the fused gradient is plain BCE's
    torch.testing.assert_close(zed.grad, (Le - L).detach() * dLe)
    torch.testing.assert_close(tri_bce(z0, ze0, zl0, y, "bce"), L.detach())
    # a branch better than the fused output gets weight 0
    torch.testing.assert_close(tri_bce(z0, z0 * 0 + 10 * (2 * y - 1), zl0, y, "official"),
                               (L + (Ll - L) * Ll).detach())


def test_sequence_pooling_ignores_padding_and_order():
    torch.manual_seed(0)
    emb = FieldEmbedding([5], [6], dim=4, init_std=1.0)
    idx, val = torch.tensor([[3], [3]]), torch.ones(2, 1)
    seq = torch.tensor([[[3, 4, 5, 0]], [[5, 3, 4, 0]]])
    out = emb(idx, val, seq)
    assert out.shape == (2, 2, 4)
    torch.testing.assert_close(out[0], out[1])
    manual = emb.table.weight[5 + torch.tensor([3, 4, 5])].mean(0)
    torch.testing.assert_close(out[0, 1], manual)
    # value multiplies the field vector (normalised numeric = Linear(1, d))
    torch.testing.assert_close(emb(idx, val * 2.5, seq)[0, 0], 2.5 * out[0, 0])


def test_embedding_lookup_equals_nn_embedding_in_value_and_gradient():
    """The lookup reads the table with index_select (a cheaper backward on CPU); values and the table's gradient,
    repeated rows included, must be nn.Embedding's."""
    torch.manual_seed(0)
    emb = FieldEmbedding([5, 7], [6], dim=4, init_std=1.0)
    idx = torch.tensor([[3, 4], [3, 6], [4, 4]])
    val = torch.tensor([[1.0, 0.5], [2.0, 1.0], [1.0, -1.0]])
    seq = torch.tensor([[[3, 4, 0]], [[5, 5, 3]], [[0, 0, 0]]])
    g = torch.randn(3, 3, 4)
    (emb(idx, val, seq) * g).sum().backward()
    ref = torch.nn.Embedding.from_pretrained(emb.table.weight.detach().clone(), freeze=False)
    e = ref(idx + emb.offsets) * val.unsqueeze(-1)
    mask = (seq > 0).float().unsqueeze(-1)
    pooled = (ref(seq + emb.seq_offsets.view(1, -1, 1)) * mask).sum(2) / mask.sum(2).clamp_min(1.0)
    out = torch.cat([e, pooled], 1)
    torch.testing.assert_close(emb(idx, val, seq), out)
    (out * g).sum().backward()
    torch.testing.assert_close(emb.table.weight.grad, ref.weight.grad)
    assert emb.table.weight.grad[emb.seq_offsets[0] + 5].abs().sum() > 0  # a sequence token read twice in a row


@pytest.mark.parametrize("arch", ["fcn", "dcnv2", "dnn", "lr"])
def test_serving_module_scripts_and_checks_input(arch):
    net = CTRNet(CTRNetConfig(arch=arch, field_sizes=(5, 7, 4), d_model=4, hidden=(8,), n_layers=2)).eval()
    s = torch.jit.script(CTRServing(net))
    idx = torch.tensor([[3, 6, 2], [1, 0, 3]])
    val = torch.ones(2, 3)
    p = s(idx, val)
    torch.testing.assert_close(p, torch.sigmoid(net(idx, val)))
    assert ((p > 0) & (p < 1)).all()
    with pytest.raises(Exception, match="NaN/inf in numeric input at row 1, field 2"):
        s(idx, torch.tensor([[1.0, 1, 1], [1, 1, float("inf")]]))
    with pytest.raises(Exception, match="out of range for field 1"):
        s(torch.tensor([[3, 7, 2]]), torch.ones(1, 3))
    with pytest.raises(Exception, match=r"idx must be \(B, 3\)"):
        s(idx[:, :2], val[:, :2])


def test_fcn_needs_even_d_model_and_sizes():
    with pytest.raises(ValueError, match="even d_model"):
        CTRNet(CTRNetConfig(field_sizes=(3,), d_model=5))
    with pytest.raises(ValueError, match="field_sizes is empty"):
        CTRNet(CTRNetConfig())


def test_fast_serving_paths_agree_with_eager_and_flops():
    from linmix.apps.ctr.serving import flops_per_row, serving_module

    torch.manual_seed(0)
    net = CTRNet(CTRNetConfig(arch="fcn", field_sizes=(7, 9, 5, 6), d_model=8)).eval()
    torch.nn.init.normal_(net.embedding.table.weight, std=0.1)
    idx = torch.randint(0, 5, (256, 4))
    val = torch.ones(256, 4)
    with torch.inference_mode():
        ref = net(idx, val)
        torch.testing.assert_close(serving_module(net, "script")(idx, val), ref, rtol=1e-4, atol=1e-5)
        q = serving_module(net, "int8")(idx, val)
    assert torch.corrcoef(torch.stack([q, ref]))[0, 1] > 0.995 and not torch.equal(q, ref)  # int8: close, not equal
    assert (q - ref).abs().mean() < 0.1 * ref.abs().mean()
    D = 4 * 8
    assert flops_per_row(net) == 8 * D * D + 2 * 2 * D  # 8 halved cross layers (2 * D * D/2) + 2 branch heads
    with pytest.raises(ValueError, match="serving mode"):
        serving_module(net, "fp16")
