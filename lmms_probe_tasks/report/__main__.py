"""Redraws an output folder's probe figures from its JSON reports: ``python -m lmms_probe_tasks.report OUT_DIR``."""

from __future__ import annotations

import argparse
import sys

from lmms_probe_tasks.report.artifacts import redraw


def main(argv: list[str] | None = None) -> int:
    """Rewrite every per-task plot and CSV and ``probes/comparison.png``; no model is loaded.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when drawn, 2 when the folder holds no probe report.
    """
    parser = argparse.ArgumentParser(
        prog="python -m lmms_probe_tasks.report",
        description="Redraw the per-task plots (and CSVs) and probes/comparison.png from the JSON reports.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="an lmms-eval --output_path, or its probes/ folder")
    args = parser.parse_args(argv)
    try:
        written = redraw(args.out_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folders = sorted({str(path.parent) for path in written["plots"]})
    print(f"{len(written['plots'])} per-task plot(s) redrawn in {len(folders)} run folder(s): {', '.join(folders)}")
    for path in written["comparison"]:
        print(f"comparison figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
