"""``PhysicsConfig``: the one network config of the physics app (PhysGTO, MeshGraphNets, Transolver-style).

``PhysicsLitModule(net=PhysicsConfig(...))``, ``build_net(cfg)`` and each network's constructor take it whole, so a
size is named once (YAML ``model.net.<field>``) and never passed by position. ``n_in``, ``n_out``, ``n_globals`` and
``transient`` are the problem's, linked from the data module (``PhysicsCLI.links``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ARCHS", "PhysicsConfig"]

ARCHS = ("physgto", "mgn", "transolver")


@dataclass
class PhysicsConfig:
    """Network hyperparameters; official PhysGTO task1 Darcy: d_model 64, 4 blocks, 4 heads, 64 slots, hidden 256.

    Attributes:
        arch: ``physgto`` (the operator), ``mgn`` (MeshGraphNets baseline) or ``transolver`` (Transolver-style).
        n_in, n_out, n_globals, transient: per-node inputs F_in, output channels C, per-graph globals G and whether
            the problem is time-dependent (from the data).
        d_model: latent width (PhysGTO: even, split in two flux halves).
        n_layers: blocks (PhysGTO / Transolver) or processor steps (MeshGraphNets).
        n_heads, n_slots: attention heads and projection slots / Transolver slices (not MeshGraphNets).
        d_hidden: hidden width of the MLPs.
        n_freq: Fourier frequencies of the position features (PhysGTO).
        dropout: attention dropout (PhysGTO).
        attention: ``projection`` (linear in the nodes) or ``softmax`` (quadratic reference), PhysGTO only.
    """

    arch: Literal["physgto", "mgn", "transolver"] = "physgto"
    n_in: int = 3
    n_out: int = 1
    n_globals: int = 1
    transient: bool = False
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_slots: int = 32
    d_hidden: int = 128
    n_freq: int = 7
    dropout: float = 0.0
    attention: Literal["projection", "softmax"] = "projection"
