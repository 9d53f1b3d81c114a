"""Identifies the weights a ``pretrained=`` checkpoint names, cheaply, so the feature cache keys on them.

A local folder is identified by a fingerprint of its weight files (name, size, mtime,
and a hash of each file's safetensors header, of each ``*.index.json``, and of three
64 KiB samples of each file): metadata plus a few hundred KiB per file, never a full
read of a many-GB checkpoint, so an unchanged folder is re-probed without loading the
weights. A hub id is identified by the commit its revision resolves to in the local
HF cache (offline); when that cannot be resolved, by a fingerprint of the cached
snapshot folder; failing both, by nothing (the caller turns the cache off).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

#: File-name endings of weights ``from_pretrained`` reads (index files name the shards).
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
_SAMPLE = 64 << 10
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _is_weight_file(path: Path) -> bool:
    """True for a weight file or a shard index (not for ``training_args.bin``-style extras)."""
    name = path.name
    if name.endswith(".index.json"):
        return True
    return path.suffix in (".safetensors", ".bin", ".pt", ".pth") and name != "training_args.bin"


def _file_digest(path: Path, size: int) -> str:
    """SHA-256 of a file's cheap parts: the safetensors header (or a whole index) and three samples."""
    h = hashlib.sha256()
    with path.open("rb") as handle:
        if path.name.endswith(".index.json"):
            h.update(handle.read())
            return h.hexdigest()
        if path.suffix == ".safetensors" and size >= 8:
            (n_header,) = struct.unpack("<Q", handle.read(8))
            h.update(handle.read(min(n_header, size - 8)))
        for offset in sorted({0, max(size // 2 - _SAMPLE // 2, 0), max(size - _SAMPLE, 0)}):
            handle.seek(offset)
            h.update(handle.read(_SAMPLE))
    return h.hexdigest()


def folder_fingerprint(folder: str | os.PathLike) -> dict[str, Any]:
    """Fingerprint the weight files of a checkpoint folder (top level, as ``from_pretrained`` reads it).

    Args:
        folder: The checkpoint folder.

    Returns:
        ``{"folder", "files", "bytes", "sha256"}``: the absolute folder, the number and total
        size of its weight files, and a digest over each file's name, size, mtime and
        :func:`_file_digest`.

    Raises:
        ValueError: The folder holds no weight file (names the folder and the suffixes looked for).
    """
    root = Path(folder).expanduser().resolve()
    files = sorted(p for p in root.iterdir() if p.is_file() and _is_weight_file(p))
    if not any(not p.name.endswith(".index.json") for p in files):
        raise ValueError(
            f"checkpoint folder {root} holds no weight file (looked for *{', *'.join(WEIGHT_SUFFIXES[:4])}). "
            "Fix: save the model there (model.save_pretrained(folder)), point pretrained= at the folder that "
            "holds the weights, or pass init=random to probe the architecture with random weights."
        )
    h, total = hashlib.sha256(), 0
    for path in files:
        stat = path.stat()
        total += stat.st_size
        entry = [path.name, stat.st_size, stat.st_mtime_ns, _file_digest(path, stat.st_size)]
        h.update(json.dumps(entry).encode())
    return {"folder": str(root), "files": len(files), "bytes": total, "sha256": h.hexdigest()}


def hub_commit(repo_id: str, revision: str) -> str | None:
    """Resolve a hub revision to its commit from the local HF cache, offline.

    Args:
        repo_id: The hub id.
        revision: A branch, tag or commit.

    Returns:
        The 40-hex commit, or None when the cache cannot tell.
    """
    if _SHA.match(revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed id or an old huggingface_hub: treated as unresolvable
        return None
    if isinstance(found, str):
        commit = Path(found).parent.name  # .../snapshots/<commit>/config.json
        return commit if _SHA.match(commit) else None
    return None


def weights_identity(pretrained: str, revision: str, config: Any, init: str) -> dict[str, Any] | None:
    """Identify the weights the features come from (recorded in results, part of the cache key).

    Args:
        pretrained: Hub id or local folder.
        revision: Hub revision asked for.
        config: The checkpoint's config (its ``_commit_hash`` is a last resort for hub ids).
        init: ``pretrained`` or ``random`` (random weights depend on config and seed only).

    Returns:
        ``{"source": "local", ...folder_fingerprint}``, ``{"source": "hub", "repo", "commit"}``,
        ``{"source": "hub snapshot", ...}``, ``{"source": "random init"}``, or None when
        the weights cannot be identified (the feature cache must then be off).

    Raises:
        ValueError: A local folder without weight files (``init=pretrained``).
    """
    local = os.path.isdir(os.path.expanduser(pretrained))
    if init == "random":
        folder = str(Path(pretrained).expanduser().resolve()) if local else pretrained
        return {"source": "random init", "checkpoint": folder}
    if local:
        return {"source": "local", **folder_fingerprint(pretrained)}
    commit = hub_commit(pretrained, str(revision)) or getattr(config, "_commit_hash", None)
    if commit and _SHA.match(str(commit)):
        return {"source": "hub", "repo": pretrained, "commit": str(commit)}
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(pretrained, revision=str(revision), local_files_only=True)
        return {"source": "hub snapshot", "repo": pretrained, **folder_fingerprint(snapshot)}
    except Exception:
        return None
