"""Figures' content from the artifacts: which panels, curves and labels the plots show (no pixels)."""

from __future__ import annotations

import math
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest

from lmms_probe_tasks.report import (
    COMPARISON_FILE,
    comparison_figure,
    find_probes_root,
    load_runs,
    load_task_figure,
    redraw,
    render,
    task_figure,
)
from lmms_probe_tasks.report.__main__ import main
from lmms_probe_tasks.report.comparison import model_labels
from tests.report_fixtures import report_json, write_run

PROBE_ACC = "probe (linear, test acc, 95% CI band)"
CONTROL = "control task (Hewitt & Liang)"


def _legend(fig) -> list[str]:
    return [text.get_text() for text in (fig.legends or [fig.axes[0].get_legend()])[0].get_texts()]


def test_single_model_is_one_panel_without_control_where_it_does_not_apply():
    spec = task_figure(report_json("probe_x_objects", "local", [0.4, 0.6, 0.7], metric="map"), {})
    (panel,) = spec.panels
    assert panel.labels == ["probe (linear, test mAP, 95% CI band)", "chance (constant score)"]
    assert panel.curve("control") is None
    assert panel.curve("probe").band is not None and panel.depth_of == 2
    assert panel.xlabel.startswith("layer") and panel.ylabel == "test mAP"
    fig = render(spec)
    try:
        assert len(fig.axes) == 1  # the relative-depth axis is a secondary axis of the one panel
        assert _legend(fig) == panel.labels
    finally:
        plt.close(fig)


def test_control_curve_where_the_control_applies():
    data = report_json("probe_x_entailment", "global", [0.4, 0.8, 0.6], control=[0.35, 0.4, 0.3])
    panel = task_figure(data, {}).panels[0]
    assert panel.labels == [PROBE_ACC, CONTROL, "chance (majority class)"]
    assert panel.curve("control").y == (0.35, 0.4, 0.3)
    assert panel.curve("chance").y == (0.33, 0.33)


def test_no_band_no_chance_and_unscored_layers_are_gaps():
    data = report_json("probe_x_entailment", "global", [0.4, None, 0.6], ci=False, majority=None)
    panel = task_figure(data, {}).panels[0]
    assert panel.labels == ["probe (linear, test acc)"]
    assert panel.curve("probe").band is None and math.isnan(panel.curve("probe").y[1])
    plt.close(render(task_figure(data, {})))  # NaN draws as a gap, not an error


def test_pretrained_and_random_init_twin_from_the_artifacts(tmp_path):
    root = tmp_path / "probes"
    pretrained = write_run(root, report_json("probe_x_entailment", "global", [0.4, 0.8, 0.6]))
    write_run(root, report_json("probe_x_entailment", "global", [0.4, 0.45, 0.5], init="random (seed 0)"))
    write_run(root, report_json("probe_x_entailment", "global", [0.35, 0.5, 0.45], blind="blank"))
    spec = load_task_figure(pretrained)
    (panel,) = spec.panels
    assert panel.labels == [PROBE_ACC, "random-init twin", "blind: grey image", "chance (majority class)"]
    assert panel.curve("probe").y == (0.4, 0.8, 0.6)
    assert panel.curve("random_init").y == (0.4, 0.45, 0.5) and panel.curve("random_init").hollow
    assert spec.title == "org/model"
    twin = load_task_figure(root / "org__model__init-random" / "probe_x_entailment.json")
    assert twin.title == "org/model (random-init twin)"


def _many_runs(root):
    for task, semantics in (("probe_a_entailment", "global"), ("probe_b_entailment", "global")):
        write_run(root, report_json(task, semantics, [0.4, 0.8, 0.6]))
        write_run(root, report_json(task, semantics, [0.4, 0.5, 0.5], init="random (seed 0)"))
        write_run(root, report_json(task, semantics, [0.3, 0.5, 0.5, 0.6, 0.7], model="other/deep"))
    write_run(root, report_json("probe_c_objects", "local", [0.5, 0.7, 0.9], metric="map"))
    write_run(root, report_json("probe_c_objects", "local", [0.5, 0.6, 0.6], metric="map", blind="noimage"))
    write_run(root, report_json("probe_d_misc", None, [0.5, 0.6, 0.6]))
    (root / "org__model" / "notes.json").write_text('{"not": "a report"}')


def test_comparison_has_one_panel_per_task_global_left_local_right(tmp_path):
    root = tmp_path / "probes"
    _many_runs(root)
    spec = comparison_figure(load_runs(root))
    assert spec.column_titles == ("global semantics", "local semantics", "semantics not declared")
    assert {(p.title, p.row, p.col) for p in spec.panels} == {
        ("probe_a_entailment", 0, 0),
        ("probe_b_entailment", 1, 0),
        ("probe_c_objects", 0, 1),
        ("probe_d_misc", 0, 2),
    }
    assert (spec.n_rows, spec.n_cols) == (2, 3)
    for title in ("probe_a_entailment", "probe_b_entailment"):
        panel = spec.panel(title)
        assert panel.labels == ["org/model", "org/model — random-init twin", "other/deep", "chance (majority class)"]
        assert panel.xlabel.startswith("relative depth")
        assert panel.curves[2].x == (0.0, 0.25, 0.5, 0.75, 1.0)  # a deeper model on the same axis
        assert panel.curves[0].color != panel.curves[2].color and panel.curves[0].color == panel.curves[1].color
    objects = spec.panel("probe_c_objects")
    assert objects.labels == ["org/model", "org/model — blind: no image", "chance (constant score)"]
    assert objects.ylabel == "test mAP"
    fig = render(spec)
    try:
        assert len(fig.axes) == 4  # the empty grid cells are removed
        assert set(_legend(fig)) == {label for p in spec.panels for label in p.labels}
        assert "GLOBAL SEMANTICS" in fig.axes[0].get_title()
    finally:
        plt.close(fig)


def test_model_labels_shorten_local_paths_unless_they_clash():
    assert model_labels(["/ckpt/a/tiny", "org/model"]) == {"/ckpt/a/tiny": "tiny", "org/model": "org/model"}
    assert model_labels(["/a/tiny", "/b/tiny"]) == {"/a/tiny": "/a/tiny", "/b/tiny": "/b/tiny"}


def test_redraw_rebuilds_every_plot_and_the_comparison(tmp_path):
    root = tmp_path / "out" / "probes"
    _many_runs(root)
    written = redraw(tmp_path / "out")
    assert written["comparison"] == [root / COMPARISON_FILE]
    assert len(written["plots"]) == 9  # one per report: 3 + 3 + 2 + 1
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in [*written["plots"], root / COMPARISON_FILE])
    assert (root / "org__model" / "probe_a_entailment.csv").exists()


def test_output_path_probes_folder_and_run_folder_all_lead_to_probes(tmp_path):
    root = tmp_path / "out" / "probes"
    write_run(root, report_json("probe_a_entailment", "global", [0.4, 0.8, 0.6]))
    for given in (tmp_path / "out", root, root / "org__model"):
        assert find_probes_root(given) == root
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "results.json").write_text("{}")  # lmms-eval's own results are no probe report
    with pytest.raises(FileNotFoundError, match="no probe report found in .*stray"):
        find_probes_root(tmp_path / "stray")


def test_command_redraws_or_names_the_folder_without_reports(tmp_path, capsys):
    root = tmp_path / "out" / "probes"
    write_run(root, report_json("probe_a_entailment", "global", [0.4, 0.8, 0.6]))
    assert main([str(tmp_path / "out")]) == 0
    assert "comparison figure" in capsys.readouterr().out and (root / COMPARISON_FILE).exists()
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert f"no probe report found in {tmp_path / 'empty'}" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_module_runs_as_a_command(tmp_path):
    write_run(tmp_path / "probes", report_json("probe_a_entailment", "global", [0.4, 0.8, 0.6]))
    (tmp_path / "probes" / "org__model" / "probe_a_entailment.png").unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "lmms_probe_tasks.report", str(tmp_path / "probes")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "probes" / "org__model" / "probe_a_entailment.png").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "lmms_probe_tasks.report", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "nowhere" in missing.stderr
