"""Every mixer (as a stack) scripts, saves with its config and reloads with equal outputs at two new lengths."""

import pytest
import torch

from linmix.shared import MIXERS, MixerStack
from linmix.shared.export import check_roundtrip, export_torchscript, load_torchscript


@pytest.mark.parametrize("kind", MIXERS)
def test_mixer_stack_export_roundtrip(kind, tmp_path):
    net = MixerStack(16, 1, mixer=kind, n_heads=2, d_state=8, chunk_size=8, backend="torch").eval()
    path = export_torchscript(net, tmp_path / f"{kind}.pt", {"mixer": kind, "d_model": 16})
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 30:] = False
    diff = check_roundtrip(net, path, [(torch.randn(2, 13, 16),), (torch.randn(3, 70, 16),),
                                       (torch.randn(2, 45, 16), mask)])
    assert diff < 1e-5
    _, cfg = load_torchscript(path)
    assert cfg == {"mixer": kind, "d_model": 16}


def test_roundtrip_detects_a_different_model(tmp_path):
    net = MixerStack(16, 1, mixer="linear", n_heads=2).eval()
    path = export_torchscript(net, tmp_path / "m.pt", {})
    other = MixerStack(16, 1, mixer="linear", n_heads=2).eval()
    with pytest.raises(AssertionError, match="max abs diff"):
        check_roundtrip(other, path, [(torch.randn(1, 5, 16),), (torch.randn(1, 9, 16),)])
    with pytest.raises(ValueError, match="two input"):
        check_roundtrip(net, path, [(torch.randn(1, 5, 16),)])
