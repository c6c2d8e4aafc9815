"""Checkpoints of a run: written atomically, found, checked, and read back for ``--resume``.

A checkpoint folder ``checkpoint-<step>`` holds the model and tokenizer (``save_pretrained``:
``config.json``, ``model.safetensors``, tokenizer files) and the trainer's state:
``trainer_state.safetensors`` (optimizer moments, torch/CUDA/NumPy random states, the data
generator) and ``trainer_state.json`` (step, config, optimizer groups, schedule, scaler, Python
random states, data position, counters). No pickles anywhere.

:func:`write_checkpoint` stages the folder under a hidden name, fsyncs it and renames it into
place, so a killed save never leaves half a checkpoint; :func:`checkpoint_problem` says why a
folder cannot be resumed from (the damaged file, named), and :func:`newest_readable` picks the
newest folder that reads back.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from align_lite.data.tokenizer import AltTextTokenizer
from align_lite.models import save_pretrained
from align_lite.models.checkpoint import WEIGHTS_FILE, CheckpointError, fsync_tree, read_config

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FORMAT_VERSION = 1


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def find_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete ``checkpoint-*`` folders in ``out_dir``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_JSON).is_file():
            try:
                found.append((int(p.name[len(CHECKPOINT_PREFIX):]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why ``directory`` cannot be resumed from (a truncated or corrupt file, named), or None when
    its trainer state, weights and config all read back."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{directory / STATE_JSON}: {err}"
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        return f"{directory / STATE_JSON}: no step recorded"
    for name in (STATE_TENSORS, WEIGHTS_FILE):
        try:
            with safe_open(str(directory / name), framework="pt"):
                pass  # opening parses the header and checks the file holds every tensor's bytes
        except (OSError, SafetensorError) as err:
            return f"{directory / name}: {err}"
    try:
        read_config(directory)
    except (OSError, CheckpointError) as err:
        return str(err)
    return None


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def newest_readable(found: list[Path], notice: Callable[[str], None] | None = None) -> Path | None:
    """The newest of ``found`` (oldest first, as :func:`find_checkpoints` lists them) that reads
    back; ``notice`` hears about each newer, unreadable one (a run killed while the disk filled,
    say). Raises ``ValueError`` when none reads back; ``None`` when ``found`` is empty."""
    problems = []
    for candidate in reversed(found):
        problem = checkpoint_problem(candidate)
        if problem is None:
            if problems and notice is not None:
                notice(f"--resume: {len(problems)} newer checkpoint(s) cannot be read ({problems[0]}); "
                       f"resuming from {candidate.name}")
            return candidate
        problems.append(problem)
    if found:
        raise ValueError(f"--resume: none of the {len(found)} checkpoints in {found[0].parent} can be read; "
                         f"the newest: {problems[0]}")
    return None


def prune_checkpoints(out_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints (``None``: keep all)."""
    if keep is None:
        return
    for old in find_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(final: Path, model: torch.nn.Module, tokenizer: AltTextTokenizer,
                     tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the checkpoint folder ``final`` by staging, fsync and one rename."""
    staging = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_pretrained(model, staging, tokenizer)
        save_file(tensors, str(staging / STATE_TENSORS))
        (staging / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
        fsync_tree(staging)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_trainer_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(the JSON state, the tensors) of a checkpoint; a damaged or too-new one is a ValueError
    that names the folder and the file."""
    problem = checkpoint_problem(directory)
    if problem is not None:
        raise ValueError(f"cannot resume from {directory}: {problem}")
    meta = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
    if meta.get("format_version", 0) > STATE_FORMAT_VERSION:
        raise ValueError(f"{directory}: trainer state format {meta.get('format_version')} is newer "
                         "than this align_lite reads")
    return meta, load_file(str(directory / STATE_TENSORS))


# -- the optimizer's state: moments as tensors, the rest as JSON ---------------------------------


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` as safetensors (``optimizer.<param>.<key>``) + JSON."""
    tensors: dict[str, torch.Tensor] = {}
    opt = optimizer.state_dict()
    opt_meta: dict[str, dict] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                opt_meta.setdefault(str(idx), {})[key] = jsonable(value)
    return tensors, {"param_groups": jsonable(opt["param_groups"]), "state": opt_meta}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    """The inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["state"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- every process's random state ----------------------------------------------------------------


def rng_states(states: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Each process's :func:`~align_lite.train.distributed.get_rng_state` as tensors
    (``rng.<rank>.torch|cuda|numpy``) + JSON (Python's state, NumPy's position)."""
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for r, state in enumerate(states):
        tensors[f"rng.{r}.torch"] = state["torch"].cpu()
        if "cuda" in state:
            tensors[f"rng.{r}.cuda"] = state["cuda"].cpu()
        name, keys, pos, has_gauss, cached = state["numpy"]
        tensors[f"rng.{r}.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
        version, internal, gauss = state["python"]
        meta.append({"python": [version, list(internal), gauss],
                     "numpy": [name, int(pos), int(has_gauss), float(cached)]})
    return tensors, meta


def rng_state_of(rank: int, tensors: dict[str, torch.Tensor], meta: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Process ``rank``'s random state from :func:`rng_states`' output (None if not saved)."""
    if f"rng.{rank}.torch" not in tensors:
        return None
    python, numpy = meta[rank]["python"], meta[rank]["numpy"]
    state = {
        "python": (python[0], tuple(python[1]), python[2]),
        "numpy": (numpy[0], tensors[f"rng.{rank}.numpy"].numpy().astype(np.uint32), numpy[1], numpy[2], numpy[3]),
        "torch": tensors[f"rng.{rank}.torch"],
    }
    if f"rng.{rank}.cuda" in tensors:
        state["cuda"] = tensors[f"rng.{rank}.cuda"]
    return state


__all__ = ["CHECKPOINT_PREFIX", "STATE_FORMAT_VERSION", "STATE_JSON", "STATE_TENSORS", "checkpoint_name",
           "checkpoint_problem", "find_checkpoints", "jsonable", "load_optimizer_state", "newest_readable",
           "optimizer_state", "prune_checkpoints", "read_trainer_state", "rng_state_of", "rng_states",
           "write_checkpoint"]
