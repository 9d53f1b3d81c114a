"""The command line ``python -m lmms_probe_tasks.tiny ARCH OUT_DIR [--seed N]``: parse, validate, build, print."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lmms_probe_tasks.tiny.build import BUILDERS, build_tiny, check_arch


def _parser() -> argparse.ArgumentParser:
    """The argument parser; its help lists every architecture and warns that the weights are random."""
    names = ", ".join(sorted(BUILDERS))
    parser = argparse.ArgumentParser(
        prog="python -m lmms_probe_tasks.tiny",
        description=(
            "Build a tiny checkpoint of a real transformers image-text architecture, offline. "
            "WARNING: the weights are RANDOM - useful for testing plumbing (loading, processors, "
            "hidden-state extraction, the harness), not for meaningful scores. "
            f"Available ARCH values: {names}."
        ),
    )
    parser.add_argument("arch", metavar="ARCH", help=f"architecture to build; one of: {names}")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the checkpoint into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m lmms_probe_tasks.tiny ARCH OUT_DIR [--seed N]``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit status (0 on success; argparse exits with 2 on bad arguments).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    # Validate up front (before torch/transformers are imported, so a typo fails fast)
    # and only here turn the ValueError into a usage error: a ValueError raised while
    # building is a real failure and keeps its traceback.
    try:
        check_arch(args.arch)
    except ValueError as err:
        parser.error(str(err))
    path = build_tiny(args.arch, args.out_dir, seed=args.seed)
    print(path)
    return 0
