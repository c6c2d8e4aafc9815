"""``python -m align_lite.cli ARGS`` = ``align-lite ARGS``."""

from align_lite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
