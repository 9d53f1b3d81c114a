"""The probe stage at scale: 50,000 docs x 33 layers x 4,096 dims of float16 features on a 24 GB machine.

It writes synthetic per-document feature-cache files (what ``hidden_states`` leaves on
disk; 13.5 GB at full size, not timed), then runs exactly what rank 0 does in the
aggregation of a probe task and prints time and peak memory of each stage:

  1. ``transport.layer_major``: read every cache file (checksummed) into one float16
     ``[layers, docs, dims]`` array, a ``numpy.memmap`` past 2 GiB;
  2. ``protocol.run_protocol``: all layers, streamed ``layer_chunk`` layers at a time.

Two peaks are printed per stage: peak RSS (Linux VmHWM, reset before the stage), which
also counts the memmap's file pages while resident (the kernel may drop them at will), and
peak *anonymous* RSS (RssAnon sampled every 20 ms), the memory the process really holds.
A float32 copy of all layers is printed beside them for comparison.

    python benchmarks/scale.py                       # full size (needs ~28 GB of disk)
    python benchmarks/scale.py --docs 5000 --dims 1024 --preset fast
    python benchmarks/scale.py --max-iter 5        # full size, memory-focused (a converged CPU fit takes hours)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark measures memory on Linux only")


class _AnonPeak:
    """Samples RssAnon in a thread; ``peak_gib`` is its growth over the start value."""

    def __enter__(self) -> _AnonPeak:
        import threading

        self._start = self.peak = _status_kib("RssAnon")
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, _status_kib("RssAnon"))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gib(self) -> float:
        return (self.peak - self._start) / 2**20


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--layers", type=int, default=33)
    parser.add_argument("--dims", type=int, default=4096)
    parser.add_argument("--preset", default="fast", choices=("fast", "paper"))
    parser.add_argument("--workdir", default=None, help="where the synthetic cache goes (default: a temp folder)")
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="cap L-BFGS iterations (peak memory does not depend on it; time does)",
    )
    args = parser.parse_args()

    from lmms_probe_tasks.numerics import flush_denormals
    from lmms_probe_tasks.probe import ProtocolConfig, run_protocol
    from lmms_probe_tasks.transport.feature_cache import FeatureCache
    from lmms_probe_tasks.transport.stacking import layer_major

    n, n_layers, d = args.docs, args.layers, args.dims
    work = Path(tempfile.mkdtemp(prefix="lmms_probe_scale_", dir=args.workdir))
    try:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, n)
        is_train = np.arange(n) < int(n * 0.8)
        groups = np.array([str(i // 2) for i in range(n)])  # two docs per image
        signal_layer = n_layers // 2
        cache = FeatureCache(work / "cache")
        items = []
        start = time.perf_counter()
        for i in range(n):
            feats = rng.standard_normal((n_layers, d), dtype=np.float32)
            feats[signal_layer, :3] += 1.5 * np.eye(3, dtype=np.float32)[y[i]]
            path = cache.put(f"{i:064x}", feats.astype(np.float16))
            items.append({"x_path": str(path)})
        print(
            f"synthetic cache: {n} docs x {n_layers} layers x {d} dims float16 = "
            f"{n * n_layers * d * 2 / 2**30:.1f} GiB in {time.perf_counter() - start:.0f} s (setup, not part of the probe stage)"
        )
        print(f"a float32 copy of all layers would take {n * n_layers * d * 4 / 2**30:.1f} GiB")

        base = _reset_peak()
        start = time.perf_counter()
        with _AnonPeak() as anon:
            x = layer_major(items)
        print(
            f"1. layer_major: {time.perf_counter() - start:.1f} s, peak RSS +{(_status_kib('VmHWM') - base) / 2**20:.2f} GiB, "
            f"peak anonymous RSS +{anon.peak_gib:.2f} GiB ({type(x).__name__})"
        )

        overrides = {"max_iter": args.max_iter} if args.max_iter else {}
        config = ProtocolConfig.from_preset(args.preset, **overrides)
        base = _reset_peak()
        start = time.perf_counter()
        with flush_denormals(), _AnonPeak() as anon:
            result = run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups, types=groups)
        seconds = time.perf_counter() - start
        print(
            f"2. run_protocol ({args.preset}, layer_chunk {config.layer_chunk}, max_iter {config.max_iter}): {seconds:.0f} s, "
            f"peak RSS +{(_status_kib('VmHWM') - base) / 2**20:.2f} GiB, peak anonymous RSS +{anon.peak_gib:.2f} GiB"
        )
        print(
            f"   best layer {result.best_layer} (planted at {signal_layer}), score there {result.score[signal_layer]:.3f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
