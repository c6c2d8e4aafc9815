"""Progress bars that show on a terminal and stay silent in notebooks and CI logs.

``tqdm(disable=None)`` turns itself off when stderr is not a TTY, which is exactly what we
want: a researcher running ``align-lite`` in a shell sees bars, while executed notebooks (whose
outputs are rendered into the book) and CI logs stay clean. ``ALIGN_PROGRESS=1`` forces bars on,
``ALIGN_PROGRESS=0`` forces them off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_disabled() -> bool | None:
    """``None`` lets tqdm decide by TTY; the environment variable can force either way."""
    flag = os.environ.get("ALIGN_PROGRESS")
    if flag is None:
        return None
    return flag.strip() in {"0", "false", "no", "off"}


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """``tqdm`` with the project's default for when to show a bar."""
    kwargs.setdefault("disable", progress_disabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
