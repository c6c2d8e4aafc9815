"""Saving and loading a dual encoder: safetensors weights + a JSON config, never pickle.

A checkpoint is a folder:

    config.json             the AlignConfig, plus format_version, align_lite_version, architecture
    model.safetensors       the state dict (weights and batch-norm statistics)
    tokenizer.json          } only when a tokenizer was given
    tokenizer_config.json   } (AltTextTokenizer.save; also loads with PreTrainedTokenizerFast)

Writes are atomic: everything is written into a temporary folder beside ``directory`` first. A new
``directory`` appears by one rename; an existing one gets each file replaced by a rename,
``config.json`` last, and files that are not ours are left alone. Loading checks the format
version and that the weights fit the model the config describes, naming the tensors that do not.

Tensors that share memory (tied weights) are stored once; the other names are recorded as
aliases in the safetensors metadata and filled back in on loading.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from align_lite import __version__
from align_lite.data.tokenizer import TOKENIZER_FILE, AltTextTokenizer
from align_lite.models.dual_encoder import AlignConfig, AlignDualEncoder

FORMAT_VERSION = 1
ARCHITECTURE = "AlignDualEncoder"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_ALIASES_KEY = "align_lite.aliases"
_SHOW = 5  # how many offending tensor names an error lists


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded into a model (bad config, version or weights)."""


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_pretrained(model: AlignDualEncoder, directory: str | Path,
                    tokenizer: AltTextTokenizer | None = None) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``directory``; returns the folder."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} exists and is not a directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        tensors, aliases = _tensors_for_saving(model.state_dict())
        save_file(tensors, str(staging / WEIGHTS_FILE),
                  metadata={"format": "pt", _ALIASES_KEY: json.dumps(aliases)})
        if tokenizer is not None:
            tokenizer.save(staging)
        config = {
            "architecture": ARCHITECTURE,
            "format_version": FORMAT_VERSION,
            "align_lite_version": __version__,
            **model.config.to_dict(),
        }
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        fsync_tree(staging)
        if not directory.exists():
            os.rename(staging, directory)  # the whole folder appears at once
        else:
            written = sorted(p.name for p in staging.iterdir() if p.name != CONFIG_FILE) + [CONFIG_FILE]
            for name in written:
                os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk, before the folder is renamed
    into place, so that a crash cannot leave a name whose bytes never reached the disk."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _tensors_for_saving(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous tensors safetensors accepts, and ``{alias: stored name}`` for tied tensors.

    Identical views of one storage (tied weights) are stored once. Any remaining partial overlap
    (different views of one storage) is cloned, since safetensors refuses shared memory.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                tuple(tensor.stride()), tensor.dtype, tensor.device)
        if tensor.numel() and view in seen:
            aliases[name] = seen[view]
            continue
        seen[view] = name
        tensors[name] = tensor.contiguous()
    storages = Counter(t.untyped_storage().data_ptr() for t in tensors.values() if t.numel())
    for name, tensor in tensors.items():
        if not tensor.numel() or storages[tensor.untyped_storage().data_ptr()] > 1:
            tensors[name] = tensor.clone()
    return tensors, aliases


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_config(directory: str | Path) -> AlignConfig:
    """The :class:`AlignConfig` of a checkpoint folder, after checking format and architecture."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE} (not an align_lite checkpoint?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    architecture = data.pop("architecture", None)
    version = data.pop("format_version", None)
    data.pop("align_lite_version", None)
    if architecture != ARCHITECTURE:
        raise CheckpointError(f"{path}: architecture {architecture!r}, expected {ARCHITECTURE!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: missing or invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} is newer than this align_lite ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade align_lite"
        )
    try:
        config = AlignConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from err
    _check_fits_in_memory(config, path)
    return config


def _check_fits_in_memory(config: AlignConfig, path: Path) -> None:
    """Refuse a config whose word-piece table alone exceeds this machine's memory (a tampered
    ``vocab_size`` of 1e12), before anything is allocated."""
    if not hasattr(os, "sysconf"):
        return
    text = config.text
    needed = text.vocab_size * text.hidden_size * 4  # float32 bytes
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise CheckpointError(f"{path}: text.vocab_size {text.vocab_size:,} × hidden_size {text.hidden_size} "
                              f"needs {needed / 2**30:,.0f} GiB for the word-piece table alone, more than this "
                              f"machine's {memory / 2**30:,.0f} GiB")


def from_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> AlignDualEncoder:
    """Build the model described by ``config.json``, load ``model.safetensors`` into it, put it on
    ``map_location`` in eval mode. Weights are cast to the model's dtype (float32)."""
    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_FILE}")
    device = torch.device(map_location)
    try:
        with safe_open(str(weights), framework="pt", device=str(device)) as f:
            aliases = json.loads((f.metadata() or {}).get(_ALIASES_KEY, "{}"))
            state = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{weights}: cannot read ({err})") from err
    for alias, name in aliases.items():
        if name in state:
            state[alias] = state[name]
    model = AlignDualEncoder(config).to(device)
    _check_fits(model.state_dict(), state, weights)
    model.load_state_dict(state)
    return model.eval()


def _check_fits(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: Path) -> None:
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    shapes = [
        f"{name} {tuple(found[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in expected.items() if name in found and found[name].shape != tensor.shape
    ]
    problems = []
    groups = (("missing", missing), ("unexpected", unexpected), ("shape mismatch (checkpoint vs model)", shapes))
    for label, names in groups:
        if names:
            more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
            problems.append(f"{len(names)} {label}: {', '.join(names[:_SHOW])}{more}")
    if problems:
        raise CheckpointError(f"{where} does not fit the model in {CONFIG_FILE}: " + "; ".join(problems))


def load_tokenizer(directory: str | Path) -> AltTextTokenizer | None:
    """The tokenizer saved with the model, or None if the folder has none."""
    directory = Path(directory)
    if not (directory / TOKENIZER_FILE).is_file():
        return None
    return AltTextTokenizer.load(directory)


__all__ = [
    "ARCHITECTURE", "CONFIG_FILE", "FORMAT_VERSION", "WEIGHTS_FILE",
    "CheckpointError", "from_pretrained", "fsync_tree", "load_tokenizer", "read_config", "save_pretrained",
]
