"""linmix: four domain applications on one shared linear-complexity mixer core.

One import root for the whole distribution: ``linmix.shared`` (the core: mixers, blocks, Lightning base, export) and
``linmix.apps.<app>`` for ``ehr``, ``ctr``, ``speech``, ``physics`` and ``lm``. The source tree keeps the folders
``apps/`` and ``shared/`` at the repository root; ``pyproject.toml`` maps them under ``linmix`` (setuptools
``package-dir``), so an installed linmix adds exactly one top-level package to site-packages.
"""

__version__ = "0.1.0"
