"""Cost of the hidden-state extractor against a bare forward pass, measured in one run.

For two families (LLaVA, Qwen2-VL) it builds a CPU-sized random model from the tiny
checkpoint's config (wider and deeper text decoder, a 32k vocabulary like real models)
and prints, on the same batches:

  (a) extraction time (all layers) / bare ``model(**inputs)`` forward time   goal <= 1.10
  (b) peak memory of extraction vs the naive ``output_hidden_states=True`` forward with logits
  (c) time with ``layers=0:k`` / time with all layers                         goal ~ k/L

Peak memory is the growth of the process's peak RSS (Linux VmHWM, reset through
/proc/self/clear_refs just before the measured calls) over its RSS at that moment, each
mode in a fresh subprocess (so one mode's peak cannot hide another's). Timings are
medians of repeated calls; the machine is noisy, so compare the ratios, not the seconds.

    python benchmarks/extraction.py [--families llava qwen2_vl] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=12, num_attention_heads=8, num_key_value_heads=8)
VOCAB = 32000


def _build(family: str, folder: Path) -> Path:
    """Tiny checkpoint for the processor, with its text config scaled up to CPU size."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from lmms_probe_tasks.tiny import build_tiny

    path = build_tiny(family, folder / family)
    config = AutoConfig.from_pretrained(path)
    text = config.get_text_config()
    for key, value in {**TEXT, "vocab_size": VOCAB}.items():
        setattr(text, key, value)
    if getattr(text, "layer_types", None):
        text.layer_types = [text.layer_types[0]] * TEXT["num_hidden_layers"]
    if config.model_type.startswith("qwen2"):
        config.vision_config.hidden_size = TEXT["hidden_size"]  # Qwen2-VL's merger outputs the text width
    if hasattr(text, "head_dim"):
        text.head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    if getattr(text, "rope_parameters", None) and "mrope_section" in (text.rope_parameters or {}):
        half = TEXT["hidden_size"] // TEXT["num_attention_heads"] // 2  # Qwen2-VL splits rotary dims over (t, h, w)
        text.rope_parameters["mrope_section"] = [half - 2 * (half // 4), half // 4, half // 4]
    AutoModelForImageTextToText.from_config(config).save_pretrained(path)
    return path


def _batches(wrapper, batch: int, n_batches: int = 3) -> list:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n_batches):
        texts = ["The red circle is to the left of the blue square. " * int(rng.integers(4, 8)) for _ in range(batch)]
        images = [[Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))] for _ in range(batch)]
        out.append(wrapper._inputs(texts, images))
    return out


def _median_seconds(fn, batches, repeats: int) -> float:
    fn(batches[0])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for inputs in batches:
            fn(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _modes(wrapper):
    import torch

    from lmms_probe_tasks.extract import extract_batch

    n = wrapper.meta["n_layers"]
    model = wrapper.model

    def bare(inputs):
        with torch.inference_mode():
            model(**inputs, use_cache=False)

    def naive(inputs):
        with torch.inference_mode():
            out = model(**inputs, use_cache=False, output_hidden_states=True)
            return out.hidden_states, out.logits

    return {
        "bare": bare,
        "naive": naive,
        "extract_all": lambda inputs: extract_batch(model, inputs, "last", range(n + 1)),
        "extract_quarter": lambda inputs: extract_batch(model, inputs, "last", range(n // 4 + 1)),
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark measures memory on Linux only")


def _child(path: str, mode: str, batch: int, repeats: int) -> None:
    """Run one mode in this (fresh) process and print its timing and RSS growth as JSON."""
    import torch

    from lmms_probe_tasks.models.hidden_states import HiddenStates

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    wrapper = HiddenStates(pretrained=path, dtype="float32", device="cpu")
    batches = _batches(wrapper, batch)
    fn = _modes(wrapper)[mode]
    fn(batches[0])  # allocator warm-up outside the measurement
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    before = _status_kib("VmRSS")
    seconds = _median_seconds(fn, batches, repeats)
    peak_kib = _status_kib("VmHWM") - before
    seq = int(batches[0]["input_ids"].shape[1])
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, "seq": seq, "layers": wrapper.meta["n_layers"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["llava", "qwen2_vl"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.batch, args.repeats)
        return
    print(f"text decoder: {TEXT}, vocab {VOCAB}; batch {args.batch} x 3 batches, median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            path = _build(family, Path(tmp))
            res = {}
            for mode in ("bare", "naive", "extract_all", "extract_quarter"):
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        str(path),
                        mode,
                        "--batch",
                        str(args.batch),
                        "--repeats",
                        str(args.repeats),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "HF_HUB_OFFLINE": "1"},
                )
                res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            n, seq = res["bare"]["layers"], res["bare"]["seq"]
            k = n // 4
            print(f"\n[{family}] {n} layers, sequence length {seq}")
            print(
                f"  (a) extraction / bare forward time:      {res['extract_all']['seconds'] / res['bare']['seconds']:.3f}  (goal <= 1.10)"
            )
            print(
                f"  (b) peak RSS growth, extraction vs naive: {res['extract_all']['peak_mib']:.1f} MiB vs "
                f"{res['naive']['peak_mib']:.1f} MiB  (ratio {res['extract_all']['peak_mib'] / max(res['naive']['peak_mib'], 1e-9):.2f})"
            )
            print(
                f"  (c) layers=0:{k + 1} / all time:              {res['extract_quarter']['seconds'] / res['extract_all']['seconds']:.3f}  "
                f"(k/L = {k}/{n} = {k / n:.3f})"
            )


if __name__ == "__main__":
    main()
