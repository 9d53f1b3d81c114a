"""Times the batched all-layer probe fit against a per-layer scikit-learn loop, and measures memmap peak memory.

Run from the repository root::

    python benchmarks/probe_fit.py                 # both parts, full-size memmap (13.5 GB temp file)
    python benchmarks/probe_fit.py --scale 0.1     # memmap part shrunk to 10 % of the docs
    python benchmarks/probe_fit.py --skip-memmap   # timing part only

Part 1 (speed): synthetic float16 features ``[layers, n, d]`` (correlated low-rank
part + noise + a label signal growing with depth). Standardise on train, fit L2
logistic regression, predict test, for every layer: (a) at one C, (b) over the C grid
of the ``fast`` and (c) the ``paper`` preset (the L2 choice of the protocol). scikit-learn fits one layer
(and one C) at a time; :func:`lmms_probe_tasks.probe.logreg.fit_logreg` fits all
layers of a chunk (and all C) in one batched L-BFGS, fed by
:func:`lmms_probe_tasks.probe.features.iter_layer_chunks` as the protocol feeds it. Both use the same tolerance and
iteration cap and the same thread count (``--threads``); ratios are measured in this
one run, on this machine, and printed, never asserted.

Part 2 (memory): features of 50,000 docs x 33 layers x 4,096 dims float16 (13.5 GB)
are written chunk-wise to a ``numpy.memmap`` in a temp file and probed in a fresh
child process with ``layer_chunk`` layers in float32 at a time. The child samples its
anonymous resident memory (``RssAnon``: everything it allocated, not the page cache
of the mapped file) and reports it with ``ru_maxrss`` (which also counts touched
pages of the mapping) and tracemalloc's peak (numpy allocations), next to the size of
one float32 chunk and of a float32 copy of all layers.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GB = 1024**3


def _synthetic(n: int, d: int, n_layers: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[n_layers, n, d]`` float16 features (rank-16 correlation + noise + signal) and ``[n]`` labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = np.empty((n_layers, n, d), np.float16)
    onehot = np.eye(n_classes, d, dtype=np.float32)[y]
    for layer in range(n_layers):
        basis = rng.normal(size=(16, d)).astype(np.float32)
        feats = 0.3 * rng.normal(size=(n, 16)).astype(np.float32) @ basis + rng.normal(size=(n, d)).astype(np.float32)
        x[layer] = feats + (1.5 * layer / max(n_layers - 1, 1)) * onehot
    return x, y


def _sklearn_loop(x: np.ndarray, y: np.ndarray, is_train: np.ndarray, grid: list[float], max_iter: int, tol: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    acc = np.empty((x.shape[0], len(grid)))
    # The same work as the batched side: standardise on train, fit on train, predict test.
    for layer in range(x.shape[0]):
        feats = x[layer].astype(np.float32)
        scaler = StandardScaler().fit(feats[is_train])
        train, test = scaler.transform(feats[is_train]), scaler.transform(feats[~is_train])
        for g, C in enumerate(grid):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(train, y[is_train])
            acc[layer, g] = np.mean(model.predict(test) == y[~is_train])
    return acc


def _batched_fit(
    x: np.ndarray,
    y: np.ndarray,
    is_train: np.ndarray,
    C: float | list[float],
    *,
    layer_chunk: int = 4,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise, fit on train, predict test for every layer and C, as the protocol does.

    Returns ``(labels [L, G, n_test], n_iter [L, G], converged [L, G])``.
    """
    from lmms_probe_tasks.probe.features import iter_layer_chunks
    from lmms_probe_tasks.probe.logreg import fit_logreg
    from lmms_probe_tasks.probe.targets import encode_targets, predict

    enc = encode_targets(y, "multiclass", fit_rows=is_train)
    grid = np.atleast_1d(np.asarray(C, dtype=np.float64))
    # Probe-train rows first: the fit reads the view xs[:, :n_train], the test rows are never fitted.
    order = np.concatenate([np.flatnonzero(is_train), np.flatnonzero(~is_train)])
    n_train = int(is_train.sum())
    targets = enc.targets[order[:n_train]]
    row_order = None if np.array_equal(order, np.arange(order.size)) else order
    chunks = iter_layer_chunks(
        x, layer_chunk, fit_rows=np.arange(order.size) < n_train, device=device, row_order=row_order
    )
    labels, iters, conv = [], [], []
    for _, _, xs in chunks:
        model = fit_logreg(
            xs[:, :n_train], targets, np.ones(n_train, np.float32), grid, loss=enc.loss, max_iter=max_iter, tol=tol
        )
        labels.append(predict(model.logits(xs[:, n_train:]), enc).transpose(0, 2, 1))  # [l, G, n_test]
        iters.append(model.n_iter)
        conv.append(model.converged)
        del xs, model  # free this chunk before the next one is read
    return np.concatenate(labels), np.concatenate(iters), np.concatenate(conv)


def speed(args: argparse.Namespace) -> None:
    """Part 1: batched fit vs per-layer scikit-learn loop."""
    import torch

    from lmms_probe_tasks.numerics import flush_denormals
    from lmms_probe_tasks.probe import FAST_C_GRID, PAPER_C_GRID

    x, y = _synthetic(args.n, args.d, args.layers, args.classes)
    is_train = np.arange(args.n) < int(0.75 * args.n)
    print(
        f"[speed] n={args.n} docs ({is_train.sum()} train / {(~is_train).sum()} test), d={args.d}, "
        f"layers={args.layers}, classes={args.classes}, float16 features; threads={args.threads} "
        f"(torch + BLAS/OpenMP); max_iter={args.max_iter}, tol={args.tol}; layer_chunk={args.layer_chunk}; "
        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    # Warm up both sides (imports, allocator, BLAS dispatch) so the first timing is not penalised.
    small = np.arange(200)
    _batched_fit(x[:1, small], y[small], is_train[small] | (small < 150), 1.0, device=args.device)
    _sklearn_loop(x[:1, small], y[small], small < 150, [1.0], args.max_iter, args.tol)
    grids = [
        ("one C (C=1)", [1.0]),
        (f"C grid of the fast preset ({len(FAST_C_GRID)} values)", list(FAST_C_GRID)),
        (f"C grid of the paper preset ({len(PAPER_C_GRID)} values)", list(PAPER_C_GRID)),
    ]
    if args.quick:
        grids = grids[:2]
    for label, grid in grids:
        # Alternate the two sides and keep the best of --repeats: other jobs on a shared machine
        # only ever slow a run down. Process CPU time is reported too (immune to time-slicing).
        wall = {"batched": [], "sklearn": []}
        cpu = {"batched": [], "sklearn": []}
        for _ in range(args.repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            with flush_denormals():  # as the harness runs the protocol
                labels, n_iter, converged = _batched_fit(
                    x, y, is_train, grid, layer_chunk=args.layer_chunk, max_iter=args.max_iter, tol=args.tol,
                    device=args.device,
                )  # fmt: skip
            wall["batched"].append(time.perf_counter() - w0)
            cpu["batched"].append(time.process_time() - c0)
            w0, c0 = time.perf_counter(), time.process_time()
            theirs = _sklearn_loop(x, y, is_train, grid, args.max_iter, args.tol)
            wall["sklearn"].append(time.perf_counter() - w0)
            cpu["sklearn"].append(time.process_time() - c0)
        ours = (labels == y[~is_train]).mean(-1)
        tb, ts = min(wall["batched"]), min(wall["sklearn"])
        cb, cs = min(cpu["batched"]), min(cpu["sklearn"])
        print(
            f"[speed] {label}: batched {tb:.2f} s ({args.device}; mean {n_iter.mean():.0f} L-BFGS iterations, "
            f"{converged.mean():.0%} converged) | sklearn per-layer loop {ts:.2f} s "
            f"({args.layers * len(grid)} fits) "
            f"| speed-up {ts / tb:.1f}x wall, {cs / cb:.1f}x CPU time (best of {args.repeats}; medians "
            f"{np.median(wall['batched']):.2f} / {np.median(wall['sklearn']):.2f} s) | max |accuracy difference| "
            f"{100 * np.abs(ours - theirs).max():.2f} points"
        )
    print(f"[speed] load average at end {os.getloadavg()[0]:.1f}; torch {torch.__version__}")


def _write_memmap(path: Path, n: int, n_layers: int, d: int, signal_layer: int, y: np.ndarray) -> None:
    """Write ``[n_layers, n, d]`` float16 features layer by layer, rows in blocks (never the whole array)."""
    rng = np.random.default_rng(1)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n_layers, n, d))
    block = 8192
    for layer in range(n_layers):
        for r0 in range(0, n, block):
            rows = rng.standard_normal((min(block, n - r0), d), dtype=np.float32)
            if layer == signal_layer:
                rows[:, :3] += 2.0 * np.eye(3, dtype=np.float32)[y[r0 : r0 + block]]
            mm[layer, r0 : r0 + block] = rows
        mm.flush()
    del mm


def memory(args: argparse.Namespace) -> None:
    """Part 2: write the memmap, then probe it in a fresh child process."""
    n = max(1000, int(round(50_000 * args.scale)))
    n_layers, d = 33, 4096
    size = n_layers * n * d * 2
    tmpdir = Path(tempfile.mkdtemp(prefix="probe_fit_", dir=args.tmpdir))
    path = tmpdir / "features.npy"
    y = np.random.default_rng(0).integers(0, 3, n)
    np.save(tmpdir / "y.npy", y)
    print(
        f"[memory] scale={args.scale}: {n} docs x {n_layers} layers x {d} dims float16 = {size / GB:.2f} GiB at {path}"
    )
    try:
        t0 = time.perf_counter()
        _write_memmap(path, n, n_layers, d, signal_layer=16, y=y)
        print(f"[memory] written chunk-wise in {time.perf_counter() - t0:.0f} s")
        cmd = [sys.executable, __file__, "--_child", str(tmpdir), "--layer-chunk", str(args.memmap_chunk)]
        cmd += ["--memmap-iter", str(args.memmap_iter), "--threads", str(args.threads), "--device", args.device]
        subprocess.run(cmd, check=True)
    finally:
        for f in tmpdir.iterdir():
            f.unlink()
        tmpdir.rmdir()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> None:
    """Probe the memmap and report peak memory (runs in a fresh process)."""
    from lmms_probe_tasks.numerics import flush_denormals

    tmpdir = Path(args._child)
    x = np.load(tmpdir / "features.npy", mmap_mode="r")
    y = np.load(tmpdir / "y.npy")
    n_layers, n, d = x.shape
    is_train = np.arange(n) < int(0.8 * n)
    peak = {"anon": _status_kib("RssAnon")}
    baseline_kib = peak["anon"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], _status_kib("RssAnon"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    with flush_denormals():
        labels, _, _ = _batched_fit(
            x, y, is_train, 1.0, layer_chunk=args.layer_chunk, max_iter=args.memmap_iter, device=args.device
        )
    elapsed = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    stop.set()
    sampler.join()
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    acc = (labels[:, 0] == y[~is_train]).mean(-1)
    chunk = args.layer_chunk * n * d * 4
    full = n_layers * n * d * 4
    print(
        f"[memory] probed {n_layers} layers in {elapsed:.0f} s (layer_chunk={args.layer_chunk}, "
        f"max_iter={args.memmap_iter} L-BFGS iterations: memory does not depend on it); "
        f"accuracy at the signal layer 16: {acc[16]:.3f}, other layers mean {np.delete(acc, 16).mean():.3f}"
    )
    print(
        f"[memory] peak anonymous RSS {peak['anon'] / 1024**2:.2f} GiB (at start {baseline_kib / 1024**2:.2f} GiB) | "
        f"tracemalloc peak (numpy) {traced_peak / GB:.2f} GiB | ru_maxrss {maxrss_kib / 1024**2:.2f} GiB "
        f"(includes touched pages of the mapped file, which the kernel can drop)"
    )
    grown = (peak["anon"] - baseline_kib) * 1024
    print(
        f"[memory] one float32 chunk = {chunk / GB:.2f} GiB; a float32 copy of all layers: {full / GB:.2f} GiB; "
        f"anonymous memory grew by {grown / GB:.2f} GiB during the probe ({grown / chunk:.2f} chunks, "
        f"{grown / full:.1%} of an all-layer copy): no float32 copy of all layers was held"
    )


def main() -> None:
    """Parse the flags and run the requested parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="docs in the speed part")
    parser.add_argument("--d", type=int, default=256, help="feature dims in the speed part")
    parser.add_argument("--layers", type=int, default=33, help="layers in the speed part")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--layer-chunk", type=int, default=8, help="layers per batched solve (speed part)")
    parser.add_argument("--quick", action="store_true", help="skip the 13-value paper grid in the speed part")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats per timing (best is reported)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, BLAS and OpenMP (both sides)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the 50,000 memmap docs to use")
    parser.add_argument("--memmap-chunk", type=int, default=2, help="layer_chunk of the memmap part")
    parser.add_argument("--memmap-iter", type=int, default=5, help="L-BFGS iterations per chunk in the memmap part")
    parser.add_argument("--tmpdir", default=None, help="where the temp memmap goes (default: system temp)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memmap", action="store_true")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _limit_threads(args.threads, quiet=bool(args._child))
    if args._child:
        child(args)
        return
    if not args.skip_speed:
        speed(args)
    if not args.skip_memmap:
        memory(args)


def _limit_threads(n: int, quiet: bool) -> None:
    import sklearn.linear_model  # noqa: F401  (load its OpenMP and scipy's BLAS before limiting them)
    import sklearn.preprocessing  # noqa: F401
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)  # numpy/scipy BLAS and scikit-learn's OpenMP, as loaded now
    pools = sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()})
    if not quiet:
        print(f"[setup] thread pools: {pools}; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
