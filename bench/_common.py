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
