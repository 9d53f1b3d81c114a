"""Holds the settings of the probing protocol: :class:`ProtocolConfig`, its named presets and C grids.

Also fixes the seed streams: each random choice of the protocol draws from its own
stream, so adding seeds or controls never changes the dev split of an existing seed.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch

from lmms_probe_tasks.probe.mlp import MLPConfig

ProbeKind = Literal["linear", "mlp"]
PROBE_KINDS: tuple[str, ...] = ("linear", "mlp")
REFITS: tuple[str, ...] = ("train+dev", "train")
BOOTSTRAP_UNITS: tuple[str, ...] = ("doc", "group")
#: Block ends of the online code, as fractions of probe-train (Voita & Titov 2020).
MDL_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
#: Half-decade grid of C (scikit-learn's inverse L2 strength), 1e-4 .. 1e2.
PAPER_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 13))
FAST_C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

#: Seed streams, the last entry of every seed tuple ``(config.seed, seed_index, stream)``.
STREAM_DEV, STREAM_CONTROL, STREAM_SHUFFLE, STREAM_MDL, STREAM_MLP, STREAM_BOOT, STREAM_HALF, STREAM_JACK = range(8)


def _invalid(name: str, value: Any, valid: str, example: str) -> ValueError:
    """The error for a bad field: it names the value, the valid set and a fix."""
    return ValueError(
        f"ProtocolConfig {name}={value!r} is invalid; valid: {valid}. Fix: e.g. "
        f"ProtocolConfig.from_preset('paper', {name}={example})"
    )


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of :func:`lmms_probe_tasks.probe.protocol.run_protocol`; the defaults are the ``paper`` preset.

    Attributes:
        preset: Name of the preset the settings came from (recorded, not interpreted).
        probe: ``linear`` (logistic regression, L2 chosen on dev) or ``mlp``.
        c_grid: Increasing grid of scikit-learn's ``C`` (inverse L2 strength).
        n_seeds: Seeds (dev split, control labels, shuffle, MLP init).
        seed: Base seed.
        dev_fraction: Share of probe-train docs carved out as dev (by group).
        refit: ``train+dev`` (refit the chosen C on all probe-train) or ``train``.
        n_bootstrap: Bootstrap resamples of probe-test (0: no CI, no best-layer distribution).
        ci_level: Coverage of the interval (Wilson for accuracy, BCa for mAP; see
            :mod:`lmms_probe_tasks.probe.intervals`).
        bootstrap_unit: Resampling unit of the interval and the best-layer probability:
            ``group`` (the image: documents of one image are not independent; docs when
            the task has no groups) or ``doc``.
        n_halves: Refits of the task probe on random group-disjoint halves of probe-train,
            the training variability of the best-layer probability (0: no probability).
        controls: Run the control task (needs ``types``) and the shuffled-label control.
        control_min_shared: Least share of probe-test docs whose type also occurs in
            probe-train for the control task to mean anything (else it is not applicable).
        min_test_docs: Least probe-test docs for any score (minimum-evidence rule).
        min_class_docs: Least docs of every class on each side (multilabel: least positives
            of at least one class on each side).
        mdl: Compute the online codelength.
        mdl_C: C of the MDL block models; None: the C of ``c_grid`` with the shortest online
            code, paying ``log2(len(c_grid))`` bits for the choice (a two-part code).
        max_iter: L-BFGS iteration cap per fit.
        tol: L-BFGS gradient tolerance (scikit-learn's ``tol``).
        layer_chunk: Layers converted to float32 at a time (memory: ``layer_chunk * n * d * 4`` B).
        device: Torch device of the solvers (``cpu``, ``cuda``, ``cuda:1``).
        batch_mb: Budget for the solver's logit temporaries; problems beyond it are
            solved in several batches.
        mlp: Settings of the MLP probe.
    """

    preset: str = "paper"
    probe: ProbeKind = "linear"
    c_grid: tuple[float, ...] = PAPER_C_GRID
    n_seeds: int = 3
    seed: int = 0
    dev_fraction: float = 0.2
    refit: Literal["train+dev", "train"] = "train+dev"
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    bootstrap_unit: Literal["doc", "group"] = "group"
    n_halves: int = 4
    controls: bool = True
    control_min_shared: float = 0.8
    min_test_docs: int = 20
    min_class_docs: int = 5
    mdl: bool = True
    mdl_C: float | None = None
    max_iter: int = 1000
    tol: float = 1e-4
    layer_chunk: int = 4
    device: str = "cpu"
    batch_mb: int = 1024
    mlp: MLPConfig = field(default_factory=MLPConfig)

    def __post_init__(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.preset, str):
            raise _invalid("preset", self.preset, "a name such as " + ", ".join(PRESETS), "'paper'")
        if self.probe not in PROBE_KINDS:
            raise _invalid("probe", self.probe, ", ".join(PROBE_KINDS), "'linear'")
        try:
            grid = tuple(float(c) for c in self.c_grid)
        except (TypeError, ValueError):
            grid = ()
        if (
            not grid
            or not all(math.isfinite(c) and c > 0 for c in grid)
            or any(b <= a for a, b in zip(grid[:-1], grid[1:], strict=True))
        ):
            raise _invalid(
                "c_grid", self.c_grid, "a non-empty, strictly increasing tuple of positive C values", "(0.01, 0.1, 1.0)"
            )
        object.__setattr__(self, "c_grid", grid)
        if not (is_int(self.n_seeds) and self.n_seeds >= 1):
            raise _invalid("n_seeds", self.n_seeds, "an integer >= 1", "3")
        if not (is_int(self.seed) and self.seed >= 0):
            raise _invalid("seed", self.seed, "an integer >= 0", "0")
        if not (is_num(self.dev_fraction) and 0 < self.dev_fraction <= 0.5):
            raise _invalid("dev_fraction", self.dev_fraction, "a number in (0, 0.5]", "0.2")
        if self.refit not in REFITS:
            raise _invalid("refit", self.refit, ", ".join(REFITS), "'train+dev'")
        if not (is_int(self.n_bootstrap) and self.n_bootstrap >= 0):
            raise _invalid("n_bootstrap", self.n_bootstrap, "an integer >= 0 (0 disables CIs)", "1000")
        if not (is_num(self.ci_level) and 0 < self.ci_level < 1):
            raise _invalid("ci_level", self.ci_level, "a number in (0, 1)", "0.95")
        if self.bootstrap_unit not in BOOTSTRAP_UNITS:
            raise _invalid("bootstrap_unit", self.bootstrap_unit, ", ".join(BOOTSTRAP_UNITS), "'group'")
        if not (is_int(self.n_halves) and self.n_halves >= 0):
            raise _invalid("n_halves", self.n_halves, "an integer >= 0 (0: no best-layer probability)", "4")
        if not (is_num(self.control_min_shared) and 0 < self.control_min_shared <= 1):
            raise _invalid("control_min_shared", self.control_min_shared, "a number in (0, 1]", "0.8")
        for name in ("min_test_docs", "min_class_docs"):
            if not (is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise _invalid(name, getattr(self, name), "an integer >= 1", "20" if name == "min_test_docs" else "5")
        for name in ("controls", "mdl"):
            if not isinstance(getattr(self, name), bool):
                raise _invalid(name, getattr(self, name), "True or False", "True")
        if self.mdl_C is not None and not (is_num(self.mdl_C) and self.mdl_C > 0):
            raise _invalid("mdl_C", self.mdl_C, "None or a positive number", "None")
        if not (is_int(self.max_iter) and self.max_iter >= 1):
            raise _invalid("max_iter", self.max_iter, "an integer >= 1", "1000")
        if not (is_num(self.tol) and self.tol > 0):
            raise _invalid("tol", self.tol, "a positive number", "1e-4")
        if not (is_int(self.layer_chunk) and self.layer_chunk >= 1):
            raise _invalid("layer_chunk", self.layer_chunk, "an integer >= 1", "4")
        if not (is_int(self.batch_mb) and self.batch_mb >= 16):
            raise _invalid("batch_mb", self.batch_mb, "an integer >= 16 (MiB)", "1024")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise _invalid("device", self.device, "a torch device string: cpu, cuda, cuda:0, ...", "'cpu'") from None
        if not isinstance(self.mlp, MLPConfig):
            raise _invalid("mlp", self.mlp, "an MLPConfig", "MLPConfig(hidden=256)")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ProtocolConfig:
        """Build the settings of a named preset, with some fields overridden.

        Presets: ``fast`` (smoke runs: 5-value C grid, 1 seed, 100 bootstrap
        resamples, 300 L-BFGS iterations) and ``paper`` (reported numbers: 13-value C
        grid 1e-4..1e2, 3 seeds, 1000 resamples, 1000 iterations).

        Args:
            name: ``fast`` or ``paper``.
            **overrides: ProtocolConfig fields to change, e.g. ``n_seeds=5``.

        Returns:
            The settings.

        Raises:
            ValueError: Unknown preset or field, or an invalid value.
        """
        if name not in PRESETS:
            close = difflib.get_close_matches(str(name), PRESETS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown probe preset {name!r}.{hint} Valid: {', '.join(PRESETS)}. "
                "Fix: ProtocolConfig.from_preset('fast') for smoke runs, 'paper' for reported numbers"
            )
        known = [f.name for f in fields(cls)]
        for key in overrides:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown ProtocolConfig field {key!r}.{hint} Valid: {', '.join(known)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data (for JSON)."""
        out = asdict(self)
        out["c_grid"] = list(self.c_grid)
        return out


#: Named settings; ``paper`` equals the dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "c_grid": FAST_C_GRID,
        "n_seeds": 1,
        "n_bootstrap": 100,
        "max_iter": 300,
        "mlp": MLPConfig(hidden=128, max_epochs=30, patience=3),
    },
    "paper": {
        "c_grid": PAPER_C_GRID,
        "n_seeds": 3,
        "n_bootstrap": 1000,
        "max_iter": 1000,
        "mlp": MLPConfig(),
    },
}


__all__ = [
    "BOOTSTRAP_UNITS",
    "FAST_C_GRID",
    "MDL_FRACTIONS",
    "PAPER_C_GRID",
    "PRESETS",
    "PROBE_KINDS",
    "REFITS",
    "STREAM_BOOT",
    "STREAM_CONTROL",
    "STREAM_DEV",
    "STREAM_HALF",
    "STREAM_JACK",
    "STREAM_MDL",
    "STREAM_MLP",
    "STREAM_SHUFFLE",
    "ProbeKind",
    "ProtocolConfig",
]
