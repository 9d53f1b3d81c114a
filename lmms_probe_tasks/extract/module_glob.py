"""Selects named modules of a model with globs: parse ``modules=``, match names, list a checkpoint's modules.

A glob is matched against the **whole** dotted name that ``model.named_modules()``
gives (it is anchored at both ends, so ``layers.*`` does not match
``model.layers.0``; write ``**.layers.*`` for that). Within a glob:

* ``*`` matches exactly one dotted component when it stands alone
  (``model.layers.*.mlp``), and any run of non-dot characters inside a component
  (``layers.*.self_attn.*_proj``);
* ``**``, a whole component, matches any number of components, none included
  (``model.**.mlp`` matches ``model.mlp`` and ``model.a.b.mlp``);
* ``?`` matches one non-dot character;
* everything else, dots included, is literal.

The module list comes from a weightless copy of the checkpoint's architecture, built
from its config on the ``meta`` device, so listing and checking globs never reads the
weights (``python -m lmms_probe_tasks.modules PRETRAINED 'GLOB'``).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Sequence
from typing import Any

from lmms_probe_tasks.extract.loading import build_skeleton, load_config

#: How many near-miss names an error lists.
N_CLOSEST = 8
#: Below this difflib ratio a name is too unlike the glob to be worth suggesting.
_MIN_RATIO = 0.4
_SYNTAX = (
    "globs match whole dotted names from named_modules(): '*' = one component (or part of one), "
    "'**' = any number of components (even none), '?' = one character, everything else literal"
)
_LIST_HINT = "list the names with: python -m lmms_probe_tasks.modules PRETRAINED 'GLOB'"
_EXAMPLE = "e.g. modules=model.language_model.layers.*.mlp, or a list modules=[GLOB1,GLOB2]"


def parse_modules_arg(value: Any) -> tuple[str, ...]:
    """Parse a ``modules=`` model arg into its globs, each checked for syntax.

    Accepted forms: one glob (``model.language_model.layers.*.mlp``); a bracketed list
    ``[g1,g2]`` (brackets keep lmms-eval's ``--model_args`` parser from splitting on the
    commas, as for ``layers=``; ``g1;g2`` also works); a list or tuple of globs (the
    value already split, as when the model args come from Python).

    Args:
        value: The raw value. lmms-eval passes the text after ``modules=`` as a string
            (quotes included, if the user quoted it), or turns ``true``/numbers into
            bools/numbers, which are no globs.

    Returns:
        The globs, unique, in the order given.

    Raises:
        ValueError: The value is empty, not text, has unbalanced brackets, or holds a
            malformed glob (naming the value and the fix).
    """
    if isinstance(value, (list, tuple)):
        items = [_split_items(v, value) for v in value]
        globs = [g for part in items for g in part]
    elif isinstance(value, str):
        globs = _split_items(value, value)
    else:
        raise ValueError(
            f"modules={value!r} is not a module glob (lmms-eval read it as a {type(value).__name__}); "
            f"give a glob over the model's module names, {_EXAMPLE}"
        )
    if not globs:
        raise ValueError(f"modules={value!r} names no module; give at least one glob, {_EXAMPLE}. {_LIST_HINT}")
    for glob in globs:
        glob_regex(glob)  # syntax errors surface here, before any model is built
    return tuple(dict.fromkeys(globs))


def _split_items(text: Any, whole: Any) -> list[str]:
    """Split one string of ``modules=`` into its globs (brackets, commas, semicolons, quotes dropped).

    Args:
        text: One string (the whole value, or one element of a list value).
        whole: The whole value, for error messages.

    Returns:
        The non-empty globs in ``text``.

    Raises:
        ValueError: ``text`` is not a string or its brackets are unbalanced.
    """
    if not isinstance(text, str):
        raise ValueError(f"modules={whole!r}: element {text!r} is not a glob string; {_EXAMPLE}")
    text = text.strip()
    if text.startswith("[") != text.endswith("]"):
        raise ValueError(
            f"modules={whole!r} has unbalanced brackets; write a list as [GLOB1,GLOB2] and quote "
            "--model_args in the shell: --model_args 'pretrained=...,modules=[GLOB1,GLOB2]'"
        )
    if text.startswith("["):
        text = text[1:-1]
    # Quotes survive lmms-eval's parser (modules="a.*"); they are never part of a module name.
    return [item.strip().strip("'\"").strip() for item in re.split(r"[,;]", text) if item.strip().strip("'\"").strip()]


def glob_regex(pattern: str) -> re.Pattern[str]:
    r"""Compile a module glob into a regex anchored at both ends of the name.

    Args:
        pattern: The glob (syntax in this module's docstring).

    Returns:
        A compiled pattern; ``.match``, ``.search`` and ``.fullmatch`` all test the
        whole name (it carries ``\A`` and ``\Z``).

    Raises:
        ValueError: The glob is empty, has an empty component (``a..b``, a leading or
            trailing dot), or uses ``**`` inside a component (``a**``).
    """
    if not isinstance(pattern, str):
        raise ValueError(f"module glob {pattern!r} is a {type(pattern).__name__}, not a string; {_EXAMPLE}")
    return _compile(pattern)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    """:func:`glob_regex` after the type check (cached: a glob is tested against every module name).

    Args:
        pattern: The glob.

    Returns:
        The anchored regex.

    Raises:
        ValueError: As :func:`glob_regex`.
    """
    if not pattern.strip():
        raise ValueError(f"module glob {pattern!r} is empty; {_EXAMPLE}")
    parts = pattern.split(".")
    if "" in parts:
        raise ValueError(
            f"module glob {pattern!r} has an empty component (two dots in a row, or a leading/trailing dot); "
            f"module names never do. Fix: remove the extra dot ({_SYNTAX})"
        )
    bad = next((p for p in parts if "**" in p and p != "**"), None)
    if bad is not None:
        raise ValueError(
            f"module glob {pattern!r}: {bad!r} mixes '**' into a component; '**' must be a whole component "
            f"(model.**.mlp) and '*' matches within one (layers.*.self_attn.*_proj)"
        )
    # Consecutive '**' mean the same as one; collapsing them keeps the regex linear.
    parts = [p for i, p in enumerate(parts) if not (p == "**" and i > 0 and parts[i - 1] == "**")]
    return re.compile(r"\A(?:" + _parts_regex(parts) + r")\Z")


def _parts_regex(parts: Sequence[str]) -> str:
    r"""The regex body for a glob's components (no empty ones, ``**`` never repeated).

    A ``**`` carries the dots around it itself, so that it can stand for zero components:
    in the middle ``\.(?:C\.)*``, first ``(?:C\.)*``, last ``(?:\.C)*`` (``C`` one component).

    Args:
        parts: The glob split on dots.

    Returns:
        The regex text, unanchored.
    """
    component = r"[^.]+"
    if list(parts) == ["**"]:
        return rf"{component}(?:\.{component})*"
    out: list[str] = []
    for i, part in enumerate(parts):
        first, last = i == 0, i == len(parts) - 1
        if part == "**":
            if first:
                out.append(rf"(?:{component}\.)*")
            else:
                out.append(rf"(?:\.{component})*" if last else rf"\.(?:{component}\.)*")
            continue
        if not first and parts[i - 1] != "**":
            out.append(r"\.")
        out.append(component if part == "*" else _component_regex(part))
    return "".join(out)


def _component_regex(part: str) -> str:
    """The regex of one glob component: ``*`` any non-dot run, ``?`` one non-dot character, the rest literal.

    Args:
        part: One component of the glob (not ``**``).

    Returns:
        The regex text.
    """
    return "".join(r"[^.]*" if ch == "*" else r"[^.]" if ch == "?" else re.escape(ch) for ch in part)


def match_modules(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The names that any of the globs matches, in the order given, each once.

    Args:
        names: Module names in ``model.named_modules()`` order; the root ``""`` (the
            model itself, which no glob names) is skipped.
        patterns: The globs (e.g. from :func:`parse_modules_arg`).

    Returns:
        The matching names, in ``names`` order, de-duplicated (a name matched by two
        globs, or listed twice, appears once).

    Raises:
        ValueError: No glob is given, a glob is malformed, or a glob matches no name
            (listing, for each such glob, up to :data:`N_CLOSEST` closest names and how to
            list them all).
    """
    if isinstance(patterns, str):  # a lone string would be iterated character by character
        patterns = (patterns,)
    if not patterns:
        raise ValueError(f"no module glob given; {_EXAMPLE}")
    regexes = [glob_regex(p) for p in patterns]
    candidates = list(dict.fromkeys(n for n in names if n))
    hit = [False] * len(regexes)
    picked: list[str] = []
    for name in candidates:
        matched = [i for i, rx in enumerate(regexes) if rx.match(name)]
        for i in matched:
            hit[i] = True
        if matched:
            picked.append(name)
    missing = [p for p, h in zip(patterns, hit) if not h]
    if missing:
        raise ValueError(_no_match_message(missing, candidates))
    return picked


def _no_match_message(missing: Sequence[str], names: Sequence[str]) -> str:
    """The error for globs that match nothing: per glob its closest names, then the syntax and the fix.

    Args:
        missing: The globs that matched no name.
        names: The model's module names (root excluded).

    Returns:
        The message.
    """
    clauses = []
    for pattern in missing:
        close = closest_names(pattern, names)
        if not names:
            where = "the model has no named submodules"
        elif close and not pattern.startswith("**") and glob_regex("**." + pattern).match(close[0]):
            where = f"did you mean '**.{pattern}' (globs are anchored at the root)? It matches: {', '.join(close)}"
        elif close:
            where = f"closest names: {', '.join(close)}"
        else:
            top = [n for n in names if "." not in n]
            where = f"no name is close; the top-level modules are: {', '.join(top[:N_CLOSEST])}"
        clauses.append(f"module glob {pattern!r} matches none of the model's {len(names)} modules; {where}")
    return "; ".join(clauses) + f". ({_SYNTAX}.) Fix: correct the glob; {_LIST_HINT}"


def closest_names(pattern: str, names: Sequence[str], n: int = N_CLOSEST) -> list[str]:
    """The names closest to a glob that matched none of them, best first.

    If the glob matches once ``**.`` is put in front, the user most likely forgot that
    globs are anchored: those matches are returned. Otherwise names sharing the
    longest prefix with the glob's literal start (the text before its first ``*`` or
    ``?``) come first (``model.language_model.layer.*.mlp`` shares
    ``model.language_model.layer`` with every ``...layers...`` name), each group
    ordered by difflib's similarity to the glob; then other names similar enough.

    Args:
        pattern: The glob.
        names: The candidate names (the root ``""`` is skipped).
        n: How many to return at most.

    Returns:
        Up to ``n`` names.
    """
    candidates = [name for name in dict.fromkeys(names) if name]
    if not candidates:
        return []
    if not pattern.startswith("**"):
        rooted = glob_regex("**." + pattern)
        hits = [name for name in candidates if rooted.match(name)]
        if hits:
            return hits[:n]
    literal = re.split(r"[*?]", pattern, maxsplit=1)[0]
    shared = [len(os.path.commonprefix([literal, name])) for name in candidates]
    longest = max(shared)
    ratios = [difflib.SequenceMatcher(None, pattern, name).ratio() for name in candidates]
    in_group = [longest > 0 and s == longest for s in shared]
    order = sorted(range(len(candidates)), key=lambda i: (not in_group[i], -ratios[i], i))
    return [candidates[i] for i in order if in_group[i] or ratios[i] >= _MIN_RATIO][:n]


def meta_model(pretrained: str, revision: str = "main", trust_remote_code: bool = False) -> Any:
    """The checkpoint's model built from its config alone, on the ``meta`` device (no weights read).

    It is the class the project loads (``AutoModelForImageTextToText``, as
    :func:`~lmms_probe_tasks.extract.loading.load_weights` and
    :func:`~lmms_probe_tasks.extract.loading.check_decoder` use), so its
    ``named_modules()`` are the names the loaded model has.

    Args:
        pretrained: Hub id or local folder (only its config is read).
        revision: Hub revision.
        trust_remote_code: Whether checkpoint code may run.

    Returns:
        The weightless model.

    Raises:
        ValueError: The config cannot be loaded or is no image-text model (from
            :func:`~lmms_probe_tasks.extract.loading.load_config`), or transformers
            cannot build the architecture.
    """
    config = load_config(pretrained, revision, trust_remote_code)
    try:
        return build_skeleton(config, trust_remote_code)
    except ValueError as exc:
        raise ValueError(f"pretrained={pretrained!r}: {exc}") from exc


def named_classes(model: Any) -> list[tuple[str, str]]:
    """``(name, class name)`` of every submodule, in ``named_modules()`` order, the root skipped.

    Args:
        model: A ``torch.nn.Module`` (a :func:`meta_model` will do).

    Returns:
        The pairs.
    """
    return [(name, type(module).__name__) for name, module in model.named_modules() if name]


def module_names(pretrained: str, revision: str = "main", trust_remote_code: bool = False) -> list[tuple[str, str]]:
    """``(name, class name)`` of every module of a checkpoint's model, in ``named_modules()`` order, weights unread.

    Args:
        pretrained: Hub id or local folder.
        revision: Hub revision.
        trust_remote_code: Whether checkpoint code may run.

    Returns:
        The pairs; the root (the model itself, name ``""``) is left out.

    Raises:
        ValueError: As :func:`meta_model`.
    """
    return named_classes(meta_model(pretrained, revision, trust_remote_code))
