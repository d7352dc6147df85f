"""PhysGTO / MeshGraphNets / Transolver-style nets: batches of meshes of different sizes equal one-by-one runs,
node-permutation equivariance, TorchScript equality, and the PyG dataset's batching of [T, N, C] fields."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from linmix.apps.physics.config import PhysicsConfig
from linmix.apps.physics.dataset import MeshFieldDataset, scan_folder
from linmix.apps.physics.lit_module import build_net
from linmix.apps.physics.rollout import node_features

ARCH_KW = dict(d_model=32, n_layers=2, n_heads=4, n_slots=8, d_hidden=32, n_freq=3, dropout=0.0)


def _net(arch, transient=False, attention="projection", n_in=3, n_out=1, n_globals=1):
    torch.manual_seed(0)
    return build_net(PhysicsConfig(arch=arch, n_in=n_in, n_out=n_out, n_globals=n_globals, transient=transient,
                                   attention=attention, **ARCH_KW)).eval()


def _inputs(b, transient=False):
    state = b.fields[0] if transient else None
    t = torch.zeros(b.num_nodes) if transient else None
    return b.pos, node_features(state, b.inputs, b.globals[b.batch], t), b.node_type, b.edge_index, b.batch


@pytest.fixture(scope="module")
def darcy_graphs(darcy_dir):
    paths, rejects = scan_folder(darcy_dir, "darcy")
    assert not rejects
    return MeshFieldDataset(paths[:3]).items


def test_dataset_batches_fields_along_nodes(darcy_graphs):
    b = Batch.from_data_list(darcy_graphs)
    sizes = [g.num_nodes for g in darcy_graphs]
    assert len(set(sizes)) > 1  # random domains -> different mesh sizes
    assert b.fields.shape == (1, sum(sizes), 1)
    assert b.cells.max() == sum(sizes) - 1 and b.edge_index.max() == sum(sizes) - 1
    assert b.globals.shape == (3, 1)


@pytest.mark.parametrize("arch,attention", [("physgto", "projection"), ("physgto", "softmax"), ("mgn", "projection"),
                                            ("transolver", "projection")])
def test_batched_equals_one_by_one(darcy_graphs, arch, attention):
    net = _net(arch, attention=attention)
    with torch.no_grad():
        together = net(*_inputs(Batch.from_data_list(darcy_graphs)))
        alone = torch.cat([net(*_inputs(Batch.from_data_list([g]))) for g in darcy_graphs])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["physgto", "mgn", "transolver"])
def test_node_permutation_equivariance(darcy_graphs, arch):
    net = _net(arch)
    b = Batch.from_data_list(darcy_graphs[:1])
    pos, feats, nt, ei, batch = _inputs(b)
    perm = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    with torch.no_grad():
        y = net(pos, feats, nt, ei, batch)
        y_perm = net(pos[perm], feats[perm], nt[perm], inv[ei], batch)
    torch.testing.assert_close(y_perm, y[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["physgto", "mgn", "transolver"])
def test_torchscript_matches_eager_transient(heat_dir, arch):
    paths, _ = scan_folder(heat_dir, "heat")
    graphs = MeshFieldDataset(paths[:2]).items
    net = _net(arch, transient=True, n_in=1, n_out=1, n_globals=1)
    scripted = torch.jit.script(net)
    for g in graphs:  # two mesh sizes
        args = _inputs(Batch.from_data_list([g]), transient=True)
        with torch.no_grad():
            torch.testing.assert_close(scripted(*args), net(*args))


def test_physgto_rejects_unknown_attention():
    with pytest.raises(ValueError, match="projection' or 'softmax"):
        _net("physgto", attention="linear")
    with pytest.raises(ValueError, match="arch must be one of"):
        build_net(PhysicsConfig(arch="gcn", **ARCH_KW))


def test_edge_mlp_equals_mlp_on_concatenated_edge_inputs():
    from linmix.apps.physics.graph_ops import MLP, EdgeMLP

    torch.manual_seed(0)
    split, full = EdgeMLP(5, 3, 8, 4, n_hidden=2), MLP(13, 8, 4, n_hidden=2)
    with torch.no_grad():
        full.net[0].weight.copy_(torch.cat([split.w_send.weight, split.w_recv.weight, split.w_edge.weight], 1))
        full.net[0].bias.copy_(split.w_edge.bias)
        for a, b in zip(list(full.net)[2:], split.rest):
            for pa, pb in zip(a.parameters(), b.parameters()):
                pa.copy_(pb)
    h, e = torch.randn(6, 5), torch.randn(7, 3)
    ei = torch.randint(0, 6, (2, 7))
    torch.testing.assert_close(split(h, e, ei), full(torch.cat([h[ei[0]], h[ei[1]], e], 1)))


def test_flux_aggregation_equals_per_node_loops():
    """The one-buffer flux aggregation (graph-only index and degree weights built once per forward) against the
    definition: first half of each message averaged at its sender, second half at its receiver, 0 for no edges."""
    from linmix.apps.physics.graph_ops import flux_index, flux_mean_weights
    from linmix.apps.physics.model import FluxMessagePassing

    torch.manual_seed(0)
    n, n_edges, d = 7, 12, 6
    ei = torch.randint(0, n - 1, (2, n_edges))  # node n-1 has no edges
    mp = FluxMessagePassing(5, d, 8).eval()
    h, e = torch.randn(n, 5), torch.randn(n_edges, d)
    m = mp.f_edge(h, e, ei)
    want = torch.zeros(n, d)
    for i in range(n):
        out, inn = ei[0] == i, ei[1] == i
        if out.any():
            want[i, : d // 2] = m[out, : d // 2].mean(0)
        if inn.any():
            want[i, d // 2:] = m[inn, d // 2:].mean(0)
    idx = flux_index(ei, n)
    dv, de = mp(h, e, ei, idx, flux_mean_weights(idx, n, d, h.dtype))
    torch.testing.assert_close(de, m)
    torch.testing.assert_close(dv, mp.f_node(torch.cat([h, want], 1)))
