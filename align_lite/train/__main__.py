"""``python -m align_lite.train ARGS`` = ``torchrun ... -m align_lite.train ARGS`` =
``align-lite train ARGS``. Only this entry point imports the command line; the package does not."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from align_lite.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
