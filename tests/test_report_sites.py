"""The whole-model figures (issue 14, item 5): vision layers, the projector and decoder layers on one axis.

Content from the artifacts, not pixels: which stacks, in which x order, which rows are drawn
and which are left out (not applicable), for the per-task plot and for the comparison figure;
a decoder-only report keeps today's figure exactly.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from lmms_probe_tasks.report import (
    COMPARISON_FILE,
    Curve,
    FigureSpec,
    Panel,
    ProbeReport,
    comparison_figure,
    load_runs,
    load_task_figure,
    render,
    task_figure,
    write_report,
)
from lmms_probe_tasks.report.__main__ import main
from tests.report_fixtures import report_json, write_run

_PREFIX = {"vision": "v", "projector": "proj", "modules": "m"}
STACKS = ["vision encoder", "projector", "language decoder"]


def _na(site: str, task: str) -> str:
    """The reason a real run gives an image-only row of a text-dependent task (lmms_probe_tasks.harness.sites)."""
    return (
        f"not applicable: {site} features see only the image, and {task}'s target depends on the text too "
        "(metadata.probe.image_only is false)"
    )


def _site_rows(site: str, task: str, scores: list[float | None], metric: str) -> list[dict]:
    """One site's rows as a real run writes them under ``sites``: a null score is a not-applicable row."""
    last = max(len(scores) - 1, 1)
    return [
        {
            "site": site,
            "row": _PREFIX[site] if site == "projector" else f"{_PREFIX[site]}{i:02d}",
            "layer": i,
            "relative_depth": i / last if len(scores) > 1 else 0.0,
            metric: s,
            "ci_low": None if s is None else s - 0.05,
            "ci_high": None if s is None else s + 0.05,
            "control_score": None,
            "reason": _na(site, task) if s is None else "",
        }
        for i, s in enumerate(scores)
    ]


def with_sites(data: dict, *, language: bool = True, **sites: list[float | None]) -> dict:
    """A report of a ``sites=[...]`` run: the decoder's rows gain ``site``/``row``, the others go under ``sites``.

    Args:
        data: A :func:`report_json` report.
        language: Whether the decoder was probed (``sites=vision`` alone: empty ``layers``).
        **sites: Site -> its scores (None: not applicable).
    """
    data = json.loads(json.dumps(data))
    metric, task = data["metric"], data["task"]
    for row in data["layers"]:
        row.update(site="language", row=f"l{row['layer']:02d}", reason="")
    if not language:
        data["layers"] = []
    data["sites"] = {site: _site_rows(site, task, scores, metric) for site, scores in sites.items()}
    probed = [s for s in ("vision", "projector") if s in sites] + (["language"] if language else [])
    data["config"]["extraction"]["sites"] = probed + (["modules"] if "modules" in sites else [])
    data["summary"]["site"] = "language" if language else next(iter(sites))
    return data


def _stack_of(panel: Panel, x: float) -> str:
    return next(stack.site for stack in panel.stacks if stack.holds(x))


def test_vision_projector_and_decoder_rows_share_one_axis_in_model_order():
    data = with_sites(
        report_json("probe_x_objects", "local", [0.4, 0.6, 0.7, 0.65], metric="map"),
        vision=[0.5, 0.55, 0.6],
        projector=[0.62],
    )
    spec = task_figure(data, {})
    (panel,) = spec.panels
    assert panel.stack_labels == STACKS
    probe = panel.curve("probe")
    # One curve through the whole model, left to right: v00..v02, proj, l00..l03.
    assert [_stack_of(panel, x) for x in probe.x] == ["vision"] * 3 + ["projector"] + ["language"] * 4
    assert list(probe.x) == sorted(probe.x)
    assert probe.y == (0.5, 0.55, 0.6, 0.62, 0.4, 0.6, 0.7, 0.65)
    assert probe.band is not None and probe.band[1][3] == pytest.approx(0.67)  # the projector keeps its CI
    assert [label for _, label in panel.ticks] == ["v00", "v01", "v02", "proj", "l00", "l01", "l02", "l03"]
    assert [x for x, _ in panel.ticks] == list(probe.x)
    vision, projector, decoder = panel.stacks
    assert projector.start - vision.end > 1 and decoder.start - projector.end > 1  # a gap for the separator
    assert "proj = projector" in panel.xlabel and "l = decoder layer" in panel.xlabel
    assert panel.depth_of is None  # layer / L means nothing across stacks
    chance = panel.curve("chance")
    assert chance.x == (vision.start, decoder.end)
    assert panel.note == ""  # every row applies
    fig = render(spec)
    try:
        ax = fig.axes[0]
        assert [text.get_text() for text in ax.texts] == STACKS
        assert [t.get_text() for t in ax.get_xticklabels()] == [label for _, label in panel.ticks]
        probe_lines = [line for line in ax.get_lines() if line.get_color() == "C0" and line.get_marker() == "o"]
        assert [len(line.get_xdata()) for line in probe_lines] == [3, 1, 4]  # one segment per stack
        assert [t.get_text() for t in ax.get_legend().get_texts()] == panel.labels  # one entry per curve
    finally:
        plt.close(fig)


def test_not_applicable_image_rows_are_absent_and_the_note_says_why():
    data = with_sites(
        report_json("probe_x_entailment", "global", [0.4, 0.8, 0.6]), vision=[None, None, None], projector=[None]
    )
    (panel,) = task_figure(data, {}).panels
    # Nothing image-only has a number: today's decoder axis, plus the caption.
    assert panel.stacks == () and panel.ticks == () and panel.xlabel == "layer (0 = embeddings)"
    assert panel.curve("probe").x == (0.0, 1.0, 2.0) and panel.depth_of == 2
    assert panel.note.startswith("vision (3 rows), projector (1 row) not applicable, not drawn: their features see")
    assert "probe_x_entailment's target depends on the text" in panel.note.replace("\n", " ")
    plt.close(render(task_figure(data, {})))


def test_modules_are_their_own_stack_after_the_decoder_without_their_not_applicable_rows():
    data = with_sites(
        report_json("probe_x_entailment", "global", [0.4, 0.8, 0.6]),
        vision=[None, None],
        modules=[None, 0.5, 0.7],  # m00 on the vision stream: not applicable to a text-dependent target
    )
    for i, row in enumerate(data["sites"]["modules"]):
        row.update(module=f"model.{'vision_tower' if i == 0 else 'language_model'}.layers.{i}.mlp", stream="text")
    (panel,) = task_figure(data, {}).panels
    assert panel.stack_labels == ["language decoder", "named modules"]
    assert [label for _, label in panel.ticks] == ["l00", "l01", "l02", "m01", "m02"]
    probe = panel.curve("probe")
    assert [_stack_of(panel, x) for x in probe.x] == ["language"] * 3 + ["modules"] * 2
    assert probe.y == (0.4, 0.8, 0.6, 0.5, 0.7)
    assert "vision (2 rows), modules (1 row) not applicable" in panel.note
    assert "m01=model.language_model.layers.1.mlp" in panel.note and "m00=" not in panel.note


def test_counterparts_and_the_control_follow_the_same_positions():
    base = report_json("probe_x_objects", "local", [0.4, 0.6, 0.7], metric="map", control=[0.3, 0.35, 0.4])
    data = with_sites(base, vision=[0.5, 0.55], projector=[0.6])
    twin = with_sites(
        report_json("probe_x_objects", "local", [0.4, 0.42, 0.41], metric="map", init="random (seed 0)"),
        vision=[0.45, 0.44],
        projector=[0.43],
    )
    blind = report_json("probe_x_objects", "local", [0.4, 0.45, 0.5], metric="map", blind="blank")  # decoder only
    (panel,) = task_figure(data, {"random_init": twin, "blind_blank": blind}).panels
    probe, twin_curve, blind_curve = panel.curve("probe"), panel.curve("random_init"), panel.curve("blind")
    assert twin_curve.x == probe.x and twin_curve.y == (0.45, 0.44, 0.43, 0.4, 0.42, 0.41)
    assert blind_curve.x == probe.x[-3:]  # its decoder rows, at the decoder's positions
    assert panel.curve("control").x == probe.x and panel.curve("control").y[-3:] == (0.3, 0.35, 0.4)


def test_a_report_without_sites_gives_todays_spec():
    data = report_json("probe_x_objects", "local", [0.4, 0.6, 0.7], metric="map")
    before = FigureSpec(
        title="org/model",
        panels=(
            Panel(
                title="probe_x_objects (local semantics)",
                xlabel="layer (0 = embeddings)",
                ylabel="test mAP",
                curves=(
                    Curve(
                        "probe (linear, test mAP, 95% CI band)",
                        "probe",
                        (0.0, 1.0, 2.0),
                        (0.4, 0.6, 0.7),
                        (tuple(s - 0.05 for s in (0.4, 0.6, 0.7)), tuple(s + 0.05 for s in (0.4, 0.6, 0.7))),
                        "C0",
                    ),
                    Curve("chance (constant score)", "chance", (0.0, 2.0), (0.33, 0.33), color="black", marker=None),
                ),
                depth_of=2,
            ),
        ),
    )
    assert task_figure(data, {}) == before
    assert task_figure({**data, "sites": {}}, {}) == before
    decoder_only = with_sites(data)  # sites=language: rows carry site/row, nothing else
    assert task_figure(decoder_only, {}) == before


def test_a_vision_only_run_draws_with_empty_layers(tmp_path):
    objects = with_sites(
        report_json("probe_x_objects", "local", [0.4, 0.6, 0.7], metric="map"), language=False, vision=[0.5, 0.6, 0.55]
    )
    (panel,) = task_figure(objects, {}).panels
    assert panel.stack_labels == ["vision encoder"] and panel.curve("probe").y == (0.5, 0.6, 0.55)
    entailment = report_json("probe_x_entailment", "global", [0.4, 0.8])
    entailment = with_sites(entailment, language=False, vision=[None, None])
    (empty,) = task_figure(entailment, {}).panels
    assert empty.curve("probe").x == () and empty.depth_of is None and "vision (2 rows) not applicable" in empty.note
    for data in (objects, entailment):
        plt.close(render(task_figure(data, {})))
        write_run(tmp_path / "probes", data)
    spec = comparison_figure(load_runs(tmp_path / "probes"))
    vision_panel = spec.panel("probe_x_objects")
    assert vision_panel.stack_labels == ["vision encoder"]
    assert vision_panel.curves[0].x == (-1.0, -0.65, -0.3)
    assert spec.panel("probe_x_entailment").note.startswith("nothing to draw: vision (2 rows) not applicable")
    plt.close(render(spec))


def test_comparison_puts_image_only_rows_before_the_decoder(tmp_path):
    root = tmp_path / "probes"
    write_run(
        root,
        with_sites(
            report_json("probe_x_objects", "local", [0.4, 0.6, 0.7], metric="map"),
            vision=[0.5, 0.55, 0.6, 0.58, 0.57],
            projector=[0.62],
        ),
    )
    write_run(root, report_json("probe_x_objects", "local", [0.3, 0.5, 0.5, 0.6, 0.7], metric="map", model="o/deep"))
    write_run(
        root,
        with_sites(report_json("probe_x_entailment", "global", [0.4, 0.8, 0.6]), vision=[None] * 5, projector=[None]),
    )
    spec = comparison_figure(load_runs(root))
    objects = spec.panel("probe_x_objects")
    assert objects.stack_labels == STACKS
    assert [(s.start, s.end) for s in objects.stacks] == [(-1.0, -0.3), (-0.15, -0.15), (0.0, 1.0)]
    deep, ours = objects.curves[0], objects.curves[1]  # legend order: by model name
    assert ours.label == "org/model" and deep.label == "o/deep"
    assert ours.x == pytest.approx((-1.0, -0.825, -0.65, -0.475, -0.3, -0.15, 0.0, 0.5, 1.0))
    assert ours.y == (0.5, 0.55, 0.6, 0.58, 0.57, 0.62, 0.4, 0.6, 0.7)
    assert ours.band is not None and len(ours.band[0]) == len(ours.x)
    assert deep.x == (0.0, 0.25, 0.5, 0.75, 1.0)  # a decoder-only run keeps its relative depth
    assert (-0.15, "proj") in objects.ticks and (-1.0, "0") in objects.ticks and (1.0, "1") in objects.ticks
    assert "vision −1…−0.3" in objects.xlabel and "proj −0.15" in objects.xlabel
    # Image-only rows that do not apply are not drawn: that panel is today's.
    entailment = spec.panel("probe_x_entailment")
    assert entailment.stacks == () and entailment.xlabel == "relative depth (layer / L)"
    assert entailment.curves[0].x == (0.0, 0.5, 1.0) and entailment.note == ""
    fig = render(spec)
    try:
        assert any(text.get_text() == "projector" for ax in fig.axes for text in ax.texts)
    finally:
        plt.close(fig)


def _report(data: dict) -> ProbeReport:
    """The :class:`ProbeReport` a run would have written as ``data``."""
    return ProbeReport(
        data["task"], data["metric"], data["layers"], data["summary"], data["config"], data.get("sites", {})
    )


def test_write_report_and_the_redraw_command_on_a_sites_run(tmp_path, capsys):
    root = tmp_path / "out" / "probes"
    objects = with_sites(
        report_json("probe_x_objects", "local", [0.4, 0.6, 0.7], metric="map"), vision=[0.5, 0.6], projector=[0.62]
    )
    entailment = with_sites(report_json("probe_x_entailment", "global", [0.4, 0.8, 0.6]), vision=[None, None])
    paths = write_report(_report(objects), root)
    write_report(_report(entailment), root)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG" and paths["comparison"].exists()
    paths["png"].unlink()
    assert main([str(tmp_path / "out")]) == 0
    assert "2 per-task plot(s)" in capsys.readouterr().out and paths["png"].exists()
    assert load_task_figure(paths["json"]).panels[0].stack_labels == STACKS
    assert load_task_figure(root / "org__model" / "probe_x_entailment.json").panels[0].stacks == ()
    vision_only = with_sites(
        report_json("probe_y_objects", "local", [0.4, 0.6], metric="map", model="org/vis"),
        language=False,
        vision=[0.5, 0.6],
    )
    assert write_report(_report(vision_only), root)["png"].exists()  # empty decoder rows
    assert main([str(tmp_path / "out")]) == 0 and (root / COMPARISON_FILE).exists()


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_the_redraw_command_on_a_real_sites_run(tmp_path):
    """A real ``sites=[vision,projector,language]`` run on tiny LLaVA, redrawn from its JSON alone."""
    from lmms_probe_tasks.tiny import build_tiny
    from tests.test_cli_e2e import _lmms_eval, _results

    build_tiny("llava", tmp_path / "tiny")
    model_args = "pretrained=./tiny,sites=[vision,projector,language],feature_cache=none"
    tasks = "probe_shapes_objects,probe_shapes_entailment"
    args = ["--model", "hidden_states", "--model_args", model_args, "--tasks", tasks, "--limit", "60"]
    log = _lmms_eval([*args, "--output_path", "out"], cwd=tmp_path)
    _results(tmp_path / "out", log)
    folder = tmp_path / "out" / "probes" / "tiny"
    for png in folder.glob("*.png"):
        png.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "lmms_probe_tasks.report", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert {p.name for p in folder.glob("*.png")} == {"probe_shapes_objects.png", "probe_shapes_entailment.png"}
    objects = load_task_figure(folder / "probe_shapes_objects.json").panels[0]
    assert objects.stack_labels == STACKS  # the image-only target: every stack drawn
    probe = objects.curve("probe")
    assert [label for _, label in objects.ticks][:4] == ["v00", "v01", "v02", "proj"]
    assert [_stack_of(objects, x) for x in probe.x][:4] == ["vision", "vision", "vision", "projector"]
    entailment = load_task_figure(folder / "probe_shapes_entailment.json").panels[0]
    assert entailment.stacks == () and "not applicable, not drawn" in entailment.note
    comparison = comparison_figure(load_runs(tmp_path / "out" / "probes")).panel("probe_shapes_objects")
    assert comparison.curves[0].x[:4] == (-1.0, -0.65, -0.3, -0.15)
    assert all(not math.isnan(y) for y in comparison.curves[0].y)
