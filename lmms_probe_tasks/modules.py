"""The command line ``python -m lmms_probe_tasks.modules PRETRAINED [GLOB]``: list a checkpoint's module names.

Prints ``name  ClassName`` for every module of the model (``named_modules()`` order,
the root left out), or for those a ``modules=`` glob selects, then a count line. The
model is built from the config alone on the ``meta`` device, so no weights are read:
it is instant even for a 70B checkpoint, and works with only ``config.json`` present.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lmms_probe_tasks.extract.module_glob import match_modules, meta_model, named_classes, parse_modules_arg

PROG = "python -m lmms_probe_tasks.modules"


def _parser() -> argparse.ArgumentParser:
    """The argument parser; its help states the glob syntax."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "List the named modules of a checkpoint's model (what modules= selects), without reading its weights. "
            "GLOB matches whole dotted names: '*' = one component, '**' = any number of components (even none), "
            "'?' = one character, everything else literal. Example: "
            f"{PROG} llava-hf/llava-1.5-7b-hf 'model.language_model.layers.*.mlp'"
        ),
    )
    parser.add_argument(
        "pretrained", metavar="PRETRAINED", help="hub id or checkpoint folder (only its config is read)"
    )
    parser.add_argument(
        "glob",
        metavar="GLOB",
        nargs="?",
        default=None,
        help="only list the modules this glob selects; a list [GLOB1,GLOB2] works as in modules=",
    )
    parser.add_argument("--revision", default="main", help="hub revision (default: main)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own model code to run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m lmms_probe_tasks.modules PRETRAINED [GLOB] [--revision R]``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success; 2 when the glob is malformed or matches nothing,
        or the checkpoint cannot be read (the message, with the closest names, on stderr).
    """
    args = _parser().parse_args(argv)
    try:
        # Check the glob's syntax before building the model: a typo fails at once.
        globs = parse_modules_arg(args.glob) if args.glob is not None else None
        model = meta_model(args.pretrained, args.revision, args.trust_remote_code)
        pairs = named_classes(model)
        picked = match_modules([n for n, _ in pairs], globs) if globs else [n for n, _ in pairs]
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    classes = dict(pairs)
    width = max((len(name) for name in picked), default=0)
    for name in picked:
        print(f"{name:<{width}}  {classes[name]}")
    total = f"{len(pairs)} modules in {type(model).__name__}"
    print(f"{len(picked)} of {total} match {args.glob!r}" if globs else total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
