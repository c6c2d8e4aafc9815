"""The set-up every chapter runs in its first cell.

    from align_lite.notebook import setup
    run = setup(seed=0)

Seeds Python, NumPy and torch; picks the device (CUDA when present); decides between the
default short CPU run and the full-size run (``ALIGN_FULL_RUN=1``, or a GPU present; force the
short run on a GPU with ``ALIGN_FULL_RUN=0``); sets plotting defaults so figures look the same
everywhere.
"""

from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch

FULL_RUN_ENV = "ALIGN_FULL_RUN"


@dataclass(frozen=True)
class Run:
    """What a chapter needs to know about where it runs."""

    device: torch.device
    full_run: bool
    seed: int

    def pick(self, short, full):
        """``full`` in a full-size run, else ``short`` (e.g. ``run.pick(5_000, 200_000)``)."""
        return full if self.full_run else short


def full_run_requested(cuda_available: bool | None = None) -> bool:
    """``ALIGN_FULL_RUN`` if set ("1"/"0"), else whether a GPU is present."""
    flag = os.environ.get(FULL_RUN_ENV)
    if flag is not None and flag.strip() != "":
        return flag.strip().lower() in {"1", "true", "yes", "on"}
    return torch.cuda.is_available() if cuda_available is None else cuda_available


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, quiet: bool = False) -> Run:
    """Seed, choose device and run size, style plots; print one line saying so."""
    seed_everything(seed)
    _quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = Run(device=device, full_run=full_run_requested(), seed=seed)
    _style_plots()
    if not quiet:
        size = "full-size run" if run.full_run else f"short CPU run (set {FULL_RUN_ENV}=1 for full size)"
        print(f"align_lite: device={device.type}, {size}, seed={seed}")
    return run


def _quiet_libraries() -> None:
    """Keep library progress bars and notices out of stored outputs (they hold timings).

    Hugging Face libraries read ``HF_HUB_DISABLE_PROGRESS_BARS`` when first imported, which in a
    chapter happens after this first cell; tqdm's notice about missing notebook widgets is noise.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # Milvus Lite's gRPC logs fork notices on `!` shell cells
    warnings.filterwarnings("ignore", message="IProgress not found")


def _style_plots() -> None:
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (6.4, 4.0),
        "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
        "svg.hashsalt": "align_lite",
    })
