"""One separation example as files on disk, shared by the data readers (:mod:`.data`) and dynamic mixing
(:mod:`.dynamic_mix`). Standard library only."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class MixtureRecord:
    """One mixture: id, mixture file, S source files, length in samples (at the metadata's rate; -1 = unknown)."""

    mixture_id: str
    mix_path: Path
    source_paths: list[Path]
    length: int = -1
