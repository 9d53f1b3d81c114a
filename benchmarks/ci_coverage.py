"""Coverage of the reported 95 % interval, by simulation with known truth.

Each simulated dataset is the probe-test side of a run: a fitted probe whose true accuracy
(or true mAP) on the test population is known, and test documents drawn from that
population — iid, or 4 documents per image with image-level random effects (the COCO
layout). The interval is computed by the same function the protocol reports
(``lmms_probe_tasks.probe.intervals.score_intervals``, units = images where there are
groups), and the table prints how often it covers the truth. Goal: 0.93–0.97 everywhere.

    python benchmarks/ci_coverage.py [--datasets 1000] [--map-datasets 200]
"""

from __future__ import annotations

import argparse

import numpy as np

from lmms_probe_tasks.probe.bootstrap import bootstrap_layer_scores
from lmms_probe_tasks.probe.intervals import score_intervals, unit_index

LEVEL = 0.95


def accuracy_dataset(rng, p, n, per_image, icc, n_seeds):
    """Per-doc correctness of ``n_seeds`` probes of true accuracy ``p``; image effects of intra-class corr. ``icc``."""
    n_images = n // per_image
    if icc > 0:  # beta-binomial: each image has its own difficulty, mean p
        a, b = p * (1 - icc) / icc, (1 - p) * (1 - icc) / icc
        p_image = rng.beta(a, b, n_images)
    else:
        p_image = np.full(n_images, p)
    p_doc = np.repeat(p_image, per_image)
    # Refits of one probe on the same data (seeds differ only by the dev split that picks C) err on
    # nearly the same docs: each seed redraws 10 % of its docs independently.
    u = rng.random(n)
    correct = np.stack([(u if s == 0 else np.where(rng.random(n) < 0.9, u, rng.random(n))) < p_doc
                        for s in range(n_seeds)])  # fmt: skip
    y = rng.integers(0, 3, n)
    pred = np.where(correct, y, (y + 1) % 3)[:, None, :]  # [S, 1, n]
    groups = np.repeat(np.arange(n_images), per_image) if per_image > 1 else None
    return pred, y, groups


MU = np.array([1.5, 1.0, 2.0, 0.8, 1.2, 1.5])
PREVALENCE = np.array([0.5, 0.4, 0.3, 0.3, 0.2, 0.1])


def map_dataset(rng, n, per_image):
    """Scores of a fixed multi-label scorer: positives shifted by MU, image-level shared noise."""
    n_images = n // per_image
    y = np.repeat(rng.random((n_images, MU.size)) < PREVALENCE, per_image, axis=0).astype(np.int64)
    shared = np.repeat(rng.normal(size=(n_images, MU.size)) * 0.7, per_image, axis=0)
    scores = y * MU + rng.normal(size=y.shape) + shared
    groups = np.repeat(np.arange(n_images), per_image) if per_image > 1 else None
    return scores[None, None].astype(np.float32), y, groups


def map_truth(rng):
    from sklearn.metrics import average_precision_score

    scores, y, _ = map_dataset(rng, 400_000, 1)
    return float(np.mean([average_precision_score(y[:, j], scores[0, 0, :, j]) for j in range(MU.size)]))


def coverage(make, truth, n_datasets, rng, kind, n_bootstrap=1000):
    hits = 0
    widths = []
    for i in range(n_datasets):
        pred, y, groups = make(rng)
        units = unit_index(y.shape[0], groups)
        boot = np.empty((0, 1))
        if kind == "multilabel":
            boot = bootstrap_layer_scores(pred, y, kind=kind, n_bootstrap=n_bootstrap, seed=i, groups=groups)
        low, high = score_intervals(pred, y, kind=kind, units=units, level=LEVEL, boot=boot, seed=i)
        hits += bool(low[0] <= truth <= high[0])
        widths.append(high[0] - low[0])
    return hits / n_datasets, float(np.mean(widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000, help="datasets per accuracy setting")
    parser.add_argument("--map-datasets", type=int, default=200, help="datasets per mAP setting (slower)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    settings = []
    for p in (0.8, 0.99):
        for n in (1000, 200):
            settings.append((f"accuracy {p:.2f}, iid, n_test {n}, 1 seed", p,
                             lambda r, p=p, n=n: accuracy_dataset(r, p, n, 1, 0.0, 1), "multiclass"))  # fmt: skip
        settings.append((f"accuracy {p:.2f}, iid, n_test 200, 3 seeds", p,
                         lambda r, p=p: accuracy_dataset(r, p, 200, 1, 0.0, 3), "multiclass"))  # fmt: skip
        for n in (1000, 200):
            settings.append((f"accuracy {p:.2f}, 4 docs/image (icc 0.3), n_test {n}", p,
                             lambda r, p=p, n=n: accuracy_dataset(r, p, n, 4, 0.3, 1), "multiclass"))  # fmt: skip
    truth = map_truth(rng)
    settings.append((f"mAP {truth:.3f}, iid, n_test 400", truth, lambda r: map_dataset(r, 400, 1), "multilabel"))
    settings.append(
        (f"mAP {truth:.3f}, 4 docs/image, n_test 400", truth, lambda r: map_dataset(r, 400, 4), "multilabel")
    )
    print(
        f"coverage of the reported {LEVEL:.0%} interval: {args.datasets} simulated datasets per accuracy setting, "
        f"{args.map_datasets} per mAP setting (Monte Carlo sd ~{(0.95 * 0.05 / args.datasets) ** 0.5:.3f} / "
        f"{(0.95 * 0.05 / args.map_datasets) ** 0.5:.3f})"
    )
    print(f"{'setting':<52} {'coverage':>9} {'mean width':>11}")
    for name, truth_value, make, kind in settings:
        n_sets = args.datasets if kind == "multiclass" else args.map_datasets
        cov, width = coverage(make, truth_value, n_sets, rng, kind)
        flag = "" if 0.93 <= cov <= 0.97 else "  <- outside 0.93-0.97"
        print(f"{name:<52} {cov:>9.3f} {width:>11.4f}{flag}")


if __name__ == "__main__":
    main()
