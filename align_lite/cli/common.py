"""What every command shares: the one-line error, the error handler, and small helpers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


# Errors that mean "unusable input or settings": one line on stderr, exit status 1 (a data
# module's DataFormatError is a ValueError, so commands let it through). Anything else is a bug
# and keeps its traceback.
KNOWN_ERRORS = (CommandError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def run_handler(args: argparse.Namespace) -> int:
    """Run the command ``args`` chose; known errors become ``align-lite: error: ...`` (exit 1),
    Ctrl-C becomes ``align-lite: interrupted`` (exit 130)."""
    try:
        args.handler(args)
    except KNOWN_ERRORS as err:
        print(f"align-lite: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("align-lite: interrupted", file=sys.stderr)
        return 130
    return 0


def print_skips(log) -> None:
    """``bad input: none``, or the count by reason with the first example of each."""
    if not log.total:
        print("bad input: none")
        return
    print(f"bad input: {log.summary()}")
    for reason, examples in sorted(log.examples.items()):
        if examples:
            print(f"  e.g. {reason}: {examples[0]}")


def model_folder(run: Path) -> Path:
    for candidate in (run / "final", run):
        if (candidate / "config.json").is_file():
            return candidate
    raise CommandError(f"{run}: no model here (expected {run / 'final'} or a folder with config.json)")


def load_model(folder: Path):
    """(model, tokenizer) saved in ``folder``; a one-line error when the tokenizer is missing."""
    from align_lite.models import from_pretrained, load_tokenizer

    model, tokenizer = from_pretrained(folder), load_tokenizer(folder)
    if tokenizer is None:
        raise CommandError(f"{folder}: the model has no tokenizer files")
    return model, tokenizer


__all__ = ["KNOWN_ERRORS", "CommandError", "load_model", "model_folder", "print_skips", "run_handler"]
