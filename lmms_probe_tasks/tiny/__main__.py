"""Run the tiny-checkpoint command line: ``python -m lmms_probe_tasks.tiny ARCH OUT_DIR [--seed N]``."""

from __future__ import annotations

import sys

from lmms_probe_tasks.tiny.cli import main

if __name__ == "__main__":
    sys.exit(main())
