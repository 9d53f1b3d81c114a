"""Cost of the hidden-state extractor against a bare forward pass, of shared prefixes, and of the probe protocol.

For two families (LLaVA, Qwen2-VL) it builds a CPU-sized random model from the tiny
checkpoint's config (wider and deeper text decoder, a 32k vocabulary like real models)
and prints, on the same batches (workload ``cost``):

  (a) extraction time (all layers) / bare ``model(**inputs)`` forward time   goal <= 1.10
  (b) peak memory of extraction vs the naive ``output_hidden_states=True`` forward with logits
  (c) time with ``layers=0:k`` / time with all layers                         goal ~ k/L

Workload ``shared`` (4 documents per image, COCO-entailment-shaped: 4 captions per image
in the task's prompt): the processor gets the image-token count of the real
checkpoints (LLaVA-1.5: 576, 336 px in 14 px patches; Qwen2-VL: 391, a 640x480 COCO
image), and the whole ``generate_until`` call (processor included) is timed with
``share_prefix`` on and off, with the largest feature difference between the two:

  (d) time with shared prefixes / time without                               goal <= 0.45 (LLaVA)

(d) is the ratio of process CPU times (one torch thread by default: immune to other jobs on
a shared machine); the wall-clock ratio is printed next to it.

Workload ``sites`` (issue 14): one LLaVA-1.5-shaped checkpoint whose vision tower is scaled
from CLIP ViT-L/14-336 the way ``TEXT`` scales Llama-2-7B's decoder (width / 8, depth x 12/32:
``VISION``; 336 px, 577 positions), so the tower's share of a forward is about LLaVA-1.5-7B's.
The same documents (one per 640x480 image, ``probe_coco_multilabel``'s prompt) go through the
whole ``generate_until`` call (processor included, ``feature_cache=none``) per ``sites=`` value,
repetitions interleaved (A B C C B A ...), medians of CPU times:

  (e) sites=[vision,projector,language] / sites=language                   goal <= 1.05
  (f) sites=vision / sites=language, next to the vision tower's share of a full forward,
      timed independently on the same pixel batches (tower alone / ``model.model`` forward,
      the LM head excluded as extraction never runs it)                   goal: about that share

Workload ``protocol``: the full probe protocol (``run_protocol``, the ``paper`` preset)
on synthetic features of 12,000 docs x 9 layers x 1,024 dims against the per-layer
scikit-learn loop over the same C grid (standardise, fit, predict, one seed; from
``benchmarks/probe_fit.py``), and both scaled linearly to 33 layers x 4,096 dims.

Peak memory is the growth of the process's peak RSS (Linux VmHWM, reset through
/proc/self/clear_refs just before the measured calls) over its RSS at that moment, each
mode in a fresh subprocess (so one mode's peak cannot hide another's). Timings are
medians of repeated calls; the machine is noisy, so compare the ratios, not the seconds.

    python benchmarks/extraction.py [--workloads cost shared sites protocol] [--families llava qwen2_vl] [--batch 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=12, num_attention_heads=8, num_key_value_heads=8)
VOCAB = 32000
LLAVA_SIDE, LLAVA_PATCH = 336, 14
#: The tiny Qwen2-VL tokenises 12 px squares (6 px patches, 2 x 2 merged): 23 x 17 = 391 image
#: tokens, as Qwen2-VL's 28 px squares give for a 640 x 480 COCO image.
QWEN_IMAGE = (23 * 12, 17 * 12)
DOCS_PER_IMAGE = 4
#: COCO-like captions: each image gets 4 (its own and others', as probe_coco_entailment does).
CAPTIONS = (
    "A man riding a wave on top of a surfboard.",
    "Two dogs are playing with a frisbee in the park.",
    "A plate of food with broccoli, rice and chicken.",
    "A red double decker bus driving down a city street.",
    "A woman holding an umbrella while walking in the rain.",
    "A cat sleeping on the hood of a parked car.",
    "A group of people flying kites on a sunny beach.",
    "A kitchen with white cabinets and a stainless steel fridge.",
)
PROMPT = "Caption: {text}\nDoes the caption describe this image?"  # probe_coco_entailment's template
#: Workload ``sites``: LLaVA-1.5-7B's CLIP ViT-L/14-336 tower (24 x 1024, MLP 4096, 16 heads of 64) scaled as
#: ``TEXT`` scales its Llama-2-7B decoder (32 x 4096 -> 12 x 512): width / 8, depth x 12/32, heads of 64. Both
#: stacks' matmul FLOPs shrink alike, so the tower keeps about its real share of the forward's FLOPs: 4.5% for
#: LLaVA-1.5-7B (577 vision positions, ~615 prompt tokens), 6.0% here (attention, linear in width, shrinks less).
VISION = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=9, num_attention_heads=2)
SITES_PROMPT = "Describe the objects in this image."  # probe_coco_multilabel's prompt (image-only target)
#: The ``sites=`` values the workload times, by label.
SITES_MODES = {"all": "[vision,projector,language]", "language": "language", "vision": "vision"}


def _build(family: str, folder: Path, real_layout: bool = False, vision: dict | None = None) -> Path:
    """Tiny checkpoint for the processor, with its text config scaled up to CPU size.

    ``real_layout`` also gives the processor (and vision tower) the real checkpoints' image-token count;
    ``vision`` sets vision-config sizes (``VISION``).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

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
    if real_layout:
        processor = AutoProcessor.from_pretrained(path)
        if family == "llava":  # LLaVA-1.5: 336 px, 14 px patches -> 24 x 24 = 576 image tokens
            config.vision_config.image_size, config.vision_config.patch_size = LLAVA_SIDE, LLAVA_PATCH
            config.image_seq_length = (LLAVA_SIDE // LLAVA_PATCH) ** 2
            processor.image_processor.size = {"shortest_edge": LLAVA_SIDE}
            processor.image_processor.crop_size = {"height": LLAVA_SIDE, "width": LLAVA_SIDE}
            processor.patch_size = LLAVA_PATCH
        else:  # Qwen2-VL keeps the image's size up to max_pixels: let a QWEN_IMAGE-sized one through
            processor.image_processor.size = {"shortest_edge": 576, "longest_edge": QWEN_IMAGE[0] * QWEN_IMAGE[1] * 2}
        processor.save_pretrained(path)
    for key, value in (vision or {}).items():
        setattr(config.vision_config, key, value)
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


@contextlib.contextmanager
def _float32_features() -> Iterator[None]:
    """Features travel as extracted (float32), not rounded as a cache round trip rounds them: for comparisons.

    Patches ``compact`` wherever the package imported it (the wrapper's modules move it around).
    """
    from lmms_probe_tasks import transport

    compact = transport.compact
    users = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("lmms_probe_tasks") and getattr(module, "compact", None) is compact
    ]
    for module in users:
        module.compact = lambda feats: feats
    try:
        yield
    finally:
        for module in users:
            module.compact = compact


def _shared_child(path: str, batch: int, repeats: int, n_images: int, threads: int) -> None:
    """Time ``generate_until`` on 4 documents per image with share_prefix on and off; print JSON."""
    import numpy as np
    import torch
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from lmms_probe_tasks import transport
    from lmms_probe_tasks.extract import families
    from lmms_probe_tasks.extract.prefix_plan import plan_prefix_batches
    from lmms_probe_tasks.extract.shared_prefix import doc_tokens
    from lmms_probe_tasks.models.hidden_states import HiddenStates

    torch.set_num_threads(threads)
    wrapper = HiddenStates(pretrained=path, dtype="float32", device="cpu", feature_cache="none", batch_size=batch)
    rng = np.random.default_rng(0)
    size = QWEN_IMAGE if wrapper.meta["model_type"].startswith("qwen") else (640, 480)
    images = [Image.fromarray(rng.integers(0, 255, size[::-1] + (3,), dtype=np.uint8)) for _ in range(n_images)]
    docs = [
        {"image": image, "text": PROMPT.format(text=CAPTIONS[(i + k) % len(CAPTIONS)])}
        for i, image in enumerate(images)
        for k in range(DOCS_PER_IMAGE)
    ]
    wrapper.task_dict = {"bench": {"test": docs}}
    requests = [
        Instance("generate_until", (d["text"], {"probe": True}, lambda doc: [doc["image"]], i, "bench", "test"), i,
                 {"task": "bench", "doc_id": i, "repeats": 1})
        for i, d in enumerate(docs)
    ]  # fmt: skip

    def run(share: bool) -> np.ndarray:
        wrapper.share_prefix = share
        keys = wrapper.generate_until(requests)
        return np.stack([transport.STORE.take(key)["language"].layers for key in keys]).astype(np.float32)

    with _float32_features():
        on, off = run(True), run(False)  # warm-up, and the features to compare
    scale = np.abs(off).max(axis=(0, 2))
    wall: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for share in (True, False):  # alternate: drift on a shared machine hits both
            start, start_cpu = time.perf_counter(), time.process_time()
            run(share)
            wall[share].append(time.perf_counter() - start)
            cpu[share].append(time.process_time() - start_cpu)
    prompts = [wrapper.build_prompt(d["text"], 1) for d in docs[:DOCS_PER_IMAGE]]
    inputs = wrapper._processor_inputs(prompts, [[images[0]]] * DOCS_PER_IMAGE)
    found = doc_tokens(inputs, families.image_positions(wrapper._config, wrapper.family, inputs), ["0"] * len(prompts))
    (batch_plan,), _ = plan_prefix_batches(dict(enumerate(found)), max_groups=1)
    result = {
        "on": statistics.median(cpu[True]),
        "off": statistics.median(cpu[False]),
        "wall_on": statistics.median(wall[True]),
        "wall_off": statistics.median(wall[False]),
        "max_rel_diff": float((np.abs(on - off).max(axis=(0, 2)) / scale).max()),
        "prefix": batch_plan.length,
        "tokens": float(np.mean([len(f.tokens) for f in found])),
        "docs": len(docs),
    }
    print(json.dumps(result))


def _sites_child(path: str, batch: int, repeats: int, n_docs: int, threads: int) -> None:
    """Time ``generate_until`` per ``sites=`` value and the vision tower alone vs a full forward; print JSON."""
    import numpy as np
    import torch
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from lmms_probe_tasks import transport
    from lmms_probe_tasks.models.hidden_states import HiddenStates
    from lmms_probe_tasks.numerics import flush_denormals

    torch.set_num_threads(threads)
    wrappers = {
        label: HiddenStates(pretrained=path, dtype="float32", device="cpu", feature_cache="none", batch_size=batch,
                            sites=value)
        for label, value in SITES_MODES.items()
    }  # fmt: skip
    first = wrappers["language"]
    model = first.model  # one copy of the weights for every wrapper: the same work, the same memory
    for wrapper in wrappers.values():
        wrapper._model, wrapper._decoder = model, first._decoder
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(n_docs)]
    docs = [{"image": image, "text": SITES_PROMPT} for image in images]  # one document per image
    requests = [
        Instance("generate_until", (d["text"], {"probe": True}, lambda doc: [doc["image"]], i, "bench", "test"), i,
                 {"task": "bench", "doc_id": i, "repeats": 1})
        for i, d in enumerate(docs)
    ]  # fmt: skip
    for wrapper in wrappers.values():
        wrapper.task_dict = {"bench": {"test": docs}}

    def run(label: str) -> dict[str, np.ndarray]:
        keys = wrappers[label].generate_until(requests)
        taken = [transport.STORE.take(key) for key in keys]
        return {site: np.stack([t[site].layers for t in taken]).astype(np.float32) for site in taken[0]}

    # The independent measurement: the same processor output, the tower alone vs the whole model below the head.
    prompts = [first.build_prompt(SITES_PROMPT, 1)] * n_docs

    def processor() -> list:
        return [
            first._processor_inputs(prompts[i : i + batch], [[image] for image in images[i : i + batch]])
            for i in range(0, n_docs, batch)
        ]

    batches = processor()

    def tower() -> None:
        with torch.inference_mode(), flush_denormals():
            for inputs in batches:
                model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True, return_dict=True)

    def full() -> None:
        with torch.inference_mode(), flush_denormals():
            for inputs in batches:
                model.model(**inputs, use_cache=False)

    with _float32_features():
        feats = {label: run(label) for label in SITES_MODES}  # warm-up, and the features to compare
    tower()  # (the decoder is warm from the runs above)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).max() / np.abs(b).max())

    timed = {**{label: (lambda label=label: run(label)) for label in SITES_MODES}, "tower": tower, "full": full,
             "processor": processor}  # fmt: skip
    wall: dict[str, list[float]] = {label: [] for label in timed}
    cpu: dict[str, list[float]] = {label: [] for label in timed}
    order = list(timed)
    for _ in range(repeats):
        for label in order:  # interleaved: drift on a shared machine hits every mode
            start, start_cpu = time.perf_counter(), time.process_time()
            timed[label]()
            wall[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)
        order.reverse()  # A B C .. C B A: no mode always runs first (or last) in its repetition
    config = model.config
    result = {
        "cpu": {label: statistics.median(times) for label, times in cpu.items()},
        "wall": {label: statistics.median(times) for label, times in wall.items()},
        "cpu_runs": cpu,
        # Per repetition, the two sides ran back to back: these cancel drift between repetitions.
        "paired": {
            a: statistics.median(x / y for x, y in zip(cpu[a], cpu[b]))
            for a, b in (("all", "language"), ("vision", "language"), ("tower", "full"))
        },
        "diff_language": rel(feats["all"]["language"], feats["language"]["language"]),
        "diff_vision": rel(feats["all"]["vision"], feats["vision"]["vision"]),
        "sites": {label: sorted(f) for label, f in feats.items()},
        "seq": int(batches[0]["input_ids"].shape[1]),
        "vision_seq": (config.vision_config.image_size // config.vision_config.patch_size) ** 2 + 1,  # + CLS
        "vision_layers": int(config.vision_config.num_hidden_layers),
        "vision_hidden": int(config.vision_config.hidden_size),
        "docs": n_docs,
    }
    print(json.dumps(result))


def _spawn(*args: str) -> dict:
    """Run this script with ``args`` in a fresh process; return the JSON of its last line."""
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cost(args: argparse.Namespace, tmp: Path) -> None:
    """Workload ``cost``: (a)-(c), each mode in a fresh process."""
    print(f"text decoder: {TEXT}, vocab {VOCAB}; batch {args.batch} x 3 batches, median of {args.repeats}")
    for family in args.families:
        path = _build(family, tmp / "cost")
        res = {}
        for mode in ("bare", "naive", "extract_all", "extract_quarter"):
            res[mode] = _spawn("--child", str(path), mode, "--batch", str(args.batch), "--repeats", str(args.repeats))
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


def shared(args: argparse.Namespace, tmp: Path) -> None:
    """Workload ``shared``: (d), 4 documents per image, sharing on vs off in one fresh process per family."""
    from lmms_probe_tasks.extract import families

    print(
        f"\n[shared] {DOCS_PER_IMAGE} captions per image x {args.images} images, batch {args.batch}, text decoder "
        f"{TEXT['num_hidden_layers']} x {TEXT['hidden_size']}, {args.shared_threads} torch thread(s), whole "
        f"generate_until call (processor included), median of {args.repeats}"
    )
    for family in args.families:
        if not families.FAMILIES[family].prefix_sharing:
            print(f"  [{family}] prefix sharing is off for this family (see extract/families.py)")
            continue
        path = _build(family, tmp / "shared", real_layout=True)
        res = _spawn("--shared-child", str(path), "--batch", str(args.batch), "--repeats", str(args.repeats),
                     "--images", str(args.images), "--shared-threads", str(args.shared_threads))  # fmt: skip
        print(
            f"  [{family}] prompt {res['tokens']:.0f} tokens, shared prefix {res['prefix']} "
            f"({res['prefix'] / res['tokens']:.0%}); {res['docs']} docs, CPU time {res['on']:.2f} s shared vs "
            f"{res['off']:.2f} s whole -> (d) ratio {res['on'] / res['off']:.3f} (goal <= 0.45; wall-clock "
            f"{res['wall_on'] / res['wall_off']:.3f}); largest float32 feature difference {res['max_rel_diff']:.1e} "
            "of the layer's largest value"
        )


def sites(args: argparse.Namespace, tmp: Path) -> None:
    """Workload ``sites``: (e) and (f), every ``sites=`` value in one fresh process, repetitions interleaved."""
    path = _build("llava", tmp / "sites", real_layout=True, vision=VISION)
    res = _spawn("--sites-child", str(path), "--batch", str(args.batch), "--repeats", str(args.repeats),
                 "--sites-docs", str(args.sites_docs), "--shared-threads", str(args.shared_threads))  # fmt: skip
    cpu, wall, paired = res["cpu"], res["wall"], res["paired"]
    print(
        f"\n[sites] llava: vision tower {res['vision_layers']} x {res['vision_hidden']} over {res['vision_seq']} "
        f"positions, text decoder {TEXT['num_hidden_layers']} x {TEXT['hidden_size']} over {res['seq']} tokens; "
        f"{res['docs']} docs (one per 640x480 image), batch {args.batch}, {args.shared_threads} torch thread(s), whole "
        f"generate_until call (processor included, feature_cache=none), median of {args.repeats} interleaved"
    )
    print(
        f"  (e) sites={SITES_MODES['all']} / sites=language: CPU time {cpu['all']:.2f} s vs {cpu['language']:.2f} s "
        f"-> {cpu['all'] / cpu['language']:.3f} (goal <= 1.05; median of the per-repetition ratios "
        f"{paired['all']:.3f}; wall-clock {wall['all'] / wall['language']:.3f}); "
        f"its language rows differ from sites=language's by {res['diff_language']:.1e} of the largest value"
    )
    print(
        f"  (f) sites=vision / sites=language: CPU time {cpu['vision']:.2f} s vs {cpu['language']:.2f} s -> "
        f"{cpu['vision'] / cpu['language']:.3f} (per-repetition {paired['vision']:.3f}; wall-clock "
        f"{wall['vision'] / wall['language']:.3f}) | vision tower alone / full forward (model.model, no LM head) on "
        f"the same pixel batches: {cpu['tower']:.2f} s / {cpu['full']:.2f} s = {cpu['tower'] / cpu['full']:.3f} "
        f"(goal: (f) about that share; per-repetition {paired['tower']:.3f}; wall-clock "
        f"{wall['tower'] / wall['full']:.3f}); its vision rows differ from sites=[...]'s by {res['diff_vision']:.1e}"
    )
    print(
        f"      sites=vision - tower alone = {cpu['vision'] - cpu['tower']:.3f} s "
        f"({(cpu['vision'] - cpu['tower']) / cpu['language']:.3f} of sites=language), of which the processor "
        f"{cpu['processor']:.3f} s; the rest: pooling, image hashing, request plumbing"
    )


def protocol(args: argparse.Namespace) -> None:
    """Workload ``protocol``: run_protocol (paper) vs the per-layer scikit-learn loop, and the scaled estimate."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from probe_fit import _limit_threads, _sklearn_loop, _synthetic

    from lmms_probe_tasks.numerics import flush_denormals
    from lmms_probe_tasks.probe import PAPER_C_GRID, ProtocolConfig, run_protocol

    _limit_threads(args.threads, quiet=True)
    n, n_layers, d = args.protocol_size
    x, y = _synthetic(n, d, n_layers, 2)
    groups = np.arange(n) // DOCS_PER_IMAGE  # 4 docs per image, as probe_coco_entailment
    is_train = groups % 6 != 0  # image-disjoint, 5/6 train
    types = np.arange(n) % (n // 8)  # captions that recur across images (the control task applies)
    config = ProtocolConfig.from_preset("paper")
    start = time.perf_counter()
    with flush_denormals():
        result = run_protocol(x, y, is_train, kind="multiclass", config=config, groups=groups, types=types)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    _sklearn_loop(x, y, is_train, list(PAPER_C_GRID), config.max_iter, config.tol)
    theirs = time.perf_counter() - start
    factor = (33 / n_layers) * (4096 / d)
    print(
        f"\n[protocol] {n} docs x {n_layers} layers x {d} dims, binary, {args.threads} threads: run_protocol (paper: "
        f"{len(PAPER_C_GRID)} C x {config.n_seeds} seeds, refit, {config.n_bootstrap} bootstrap, {config.n_halves} "
        f"half-sample refits, control + shuffled controls, MDL) {ours:.0f} s | scikit-learn per-layer loop "
        f"({len(PAPER_C_GRID)} C, one seed, nothing else) {theirs:.0f} s | ratio {ours / theirs:.2f} "
        f"(best layer {result.best_layer})"
    )
    print(
        f"[protocol] scaled linearly to 33 layers x 4,096 dims (x{factor:.1f}): run_protocol ~{ours * factor / 60:.0f} "
        f"min, scikit-learn loop ~{theirs * factor / 60:.0f} min (an estimate: time per L-BFGS iteration is linear "
        "in layers x dims; the iteration counts are not)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["cost", "shared", "sites", "protocol"],
                        choices=("cost", "shared", "sites", "protocol"))  # fmt: skip
    parser.add_argument("--families", nargs="+", default=["llava", "qwen2_vl"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=4, help="images of the shared workload (4 docs each)")
    parser.add_argument(
        "--protocol-size", nargs=3, type=int, default=[12000, 9, 1024], metavar=("DOCS", "LAYERS", "DIMS")
    )
    parser.add_argument(
        "--threads", type=int, default=max(1, os.cpu_count() or 1), help="protocol workload, both sides"
    )
    parser.add_argument("--shared-threads", type=int, default=1, help="torch threads of the shared and sites workloads")
    parser.add_argument("--sites-docs", type=int, default=4, help="documents (one image each) of the sites workload")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--shared-child", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--sites-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.batch, args.repeats)
        return
    if args.shared_child:
        _shared_child(args.shared_child, args.batch, args.repeats, args.images, args.shared_threads)
        return
    if args.sites_child:
        _sites_child(args.sites_child, args.batch, args.repeats, args.sites_docs, args.shared_threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if "cost" in args.workloads:
            cost(args, Path(tmp))
        if "shared" in args.workloads:
            shared(args, Path(tmp))
        if "sites" in args.workloads:
            sites(args, Path(tmp))
    if "protocol" in args.workloads:
        protocol(args)


if __name__ == "__main__":
    main()
