"""The command line ``python -m lmms_probe_tasks.tiny ARCH OUT_DIR [--seed N] [--trained]``: parse, check, build."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lmms_probe_tasks.tiny.build import BUILDERS, build_tiny, check_arch


def _parser() -> argparse.ArgumentParser:
    """The argument parser; its help lists every architecture and warns that the weights are random unless trained."""
    names = ", ".join(sorted(BUILDERS))
    parser = argparse.ArgumentParser(
        prog="python -m lmms_probe_tasks.tiny",
        description=(
            "Build a tiny checkpoint of a real transformers image-text architecture, offline. "
            "WARNING: the weights are RANDOM - useful for testing plumbing (loading, processors, "
            "hidden-state extraction, the harness), not for meaningful scores. With --trained (llava only) "
            "the model is instead trained for a few minutes on one CPU thread on synthetic shapes scenes "
            "disjoint from the probe tasks' documents, so probing it gives a real per-layer curve. "
            f"Available ARCH values: {names}."
        ),
    )
    parser.add_argument("arch", metavar="ARCH", help=f"architecture to build; one of: {names}")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the checkpoint into (created if missing)")
    parser.add_argument(
        "--seed", type=int, default=0, help="torch seed for the weights (and, trained, the training data) (default: 0)"
    )
    parser.add_argument(
        "--trained",
        action="store_true",
        help="train the checkpoint on shapes scenes (a few minutes on a CPU; llava only) instead of random weights",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="with --trained: optimiser steps of each training stage instead of the recipe's (a quick, smaller run)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m lmms_probe_tasks.tiny ARCH OUT_DIR [--seed N] [--trained [--steps N]]``.

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
        check_arch(args.arch, args.trained)
    except ValueError as err:
        parser.error(str(err))
    if args.steps is not None and (not args.trained or args.steps < 0):
        parser.error(f"--steps {args.steps}: needs --trained and a count >= 0 (e.g. --trained --steps 20)")
    path = build_tiny(args.arch, args.out_dir, seed=args.seed, trained=args.trained, steps=args.steps)
    print(path)
    return 0
