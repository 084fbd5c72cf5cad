"""Shared by the benchmark scripts (run as `python bench/NAME.py`, which puts bench/ on sys.path)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"


def device_name() -> str:
    """File-name-safe device label for result files: the GPU's name, or cpu<threads>_<arch>."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name().lower().replace(" ", "_")
    return f"cpu{torch.get_num_threads()}_{platform.machine()}"


def base_refs(store, recipe, base: str | None = None, world: str | None = None) -> dict:
    """The recipe's artifacts in the store (latest run with this recipe's configs), with the base
    checkpoint and the world dataset replaceable by explicit directories."""
    from r1flow.data.store import ArtifactRef
    from r1flow.stages import latest_refs

    refs = latest_refs(store, recipe)
    for stage, kind, path in (("pretrain", "checkpoint", base), ("world", "dataset", world)):
        if path:
            refs[stage] = ArtifactRef(id=Path(path).name, path=str(Path(path).resolve()), kind=kind, stage=stage)
    return refs
