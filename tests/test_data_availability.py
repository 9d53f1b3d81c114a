"""Source checks: every selected probe task's data is checked before any task is built, and fails as one message."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lmms_eval.tasks import TaskManager

from lmms_probe_tasks import registry
from lmms_probe_tasks.data import coco as C
from lmms_probe_tasks.data import snli_ve as S
from lmms_probe_tasks.data import sources
from lmms_probe_tasks.data.sources import DataUnavailableError, source_problem
from lmms_probe_tasks.harness.task import ProbeTask
from tests.datasets_fixtures import write_coco, write_coco_hub, write_snli_ve, write_snli_ve_hub

REAL = ["probe_coco_entailment", "probe_coco_multilabel", "probe_coco_objects", "probe_snli_ve"]
COCO_BUILDERS = (C.coco_entailment_docs, C.coco_object_docs, C.coco_multilabel_docs)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No data folders set, offline (the conftest default), and no hub results remembered."""
    monkeypatch.delenv(C.ENV_VAR, raising=False)
    monkeypatch.delenv(S.ENV_VAR, raising=False)
    monkeypatch.setattr(sources, "_hub_ok", set())
    monkeypatch.setattr(sources, "_hub_down", {})


@pytest.fixture
def online(monkeypatch):
    """Not offline; returns a function pointing the hub client at a URL."""
    from huggingface_hub import constants

    for name in sources.OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import, from the conftest's setting

    def point_at(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)

    return point_at


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco") / "coco", n_train=8, n_val=4)


@pytest.fixture(scope="module")
def snli(tmp_path_factory):
    return write_snli_ve(tmp_path_factory.mktemp("snli") / "snli_ve")


def _manager() -> TaskManager:
    registry.install_task_path()
    registry.install_data_check()
    return TaskManager("ERROR", include_defaults=False)


# ------------------------------------------------------------ local releases
def test_a_valid_release_folder_is_available(coco, snli, monkeypatch):
    monkeypatch.setenv(C.ENV_VAR, str(coco.root))
    monkeypatch.setenv(S.ENV_VAR, str(snli.root))
    assert [source_problem(b, {}) for b in COCO_BUILDERS] == [None] * 3
    assert source_problem(S.snli_ve_docs, {}) is None
    assert source_problem(C.coco_object_docs, {"source": "local", "n_train": 5}) is None  # other kwargs pass through


def test_a_folder_without_annotations_is_named_with_the_layout(tmp_path, monkeypatch):
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "val2017").mkdir()
    monkeypatch.setenv(C.ENV_VAR, str(tmp_path / "coco"))
    problem = source_problem(C.coco_entailment_docs, {})
    assert problem is not None and problem.dataset == "COCO 2017"
    assert f"{C.ENV_VAR}={str(tmp_path / 'coco')!r} lacks annotations/instances_train2017.json" in problem.reason
    assert "annotations/captions_val2017.json" in problem.reason and "train2017/" not in problem.reason
    assert problem.fix.startswith(f"set {C.ENV_VAR} to a folder of the original release holding annotations/")
    # The object tasks read no captions: not required of them.
    assert "captions" not in source_problem(C.coco_object_docs, {}).reason


def test_a_snli_folder_without_images_and_a_missing_folder(snli, tmp_path, monkeypatch):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "snli_ve_train.jsonl").write_text((snli.root / "snli_ve_train.jsonl").read_text())
    monkeypatch.setenv(S.ENV_VAR, str(partial))
    assert source_problem(S.snli_ve_docs, {}).reason.endswith("lacks snli_ve_test.jsonl, flickr30k_images/")
    assert "is not a folder" in source_problem(S.snli_ve_docs, {"snli_ve_dir": str(tmp_path / "nowhere")}).reason
    monkeypatch.delenv(S.ENV_VAR)
    assert "needs the data folder" in source_problem(S.snli_ve_docs, {"source": "local"}).reason


def test_hub_layout_folders_are_available_offline(coco, snli, tmp_path):
    images, captions = write_coco_hub(tmp_path / "hub", coco)
    hub = {"source": "hub", "hub_images": str(images), "hub_captions": str(captions)}
    assert source_problem(C.coco_entailment_docs, hub) is None
    assert source_problem(S.snli_ve_docs, {"hub_dataset": str(write_snli_ve_hub(tmp_path / "hub", snli))}) is None
    missing = source_problem(C.coco_object_docs, {"hub_images": str(tmp_path / "no-such-copy")})
    assert "is neither a folder nor a hub dataset id" in missing.reason


# ---------------------------------------------------------------- the hub
def test_offline_mode_never_tries_the_hub(monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "dataset_info", lambda *a, **k: pytest.fail("the hub was tried offline"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    problem = source_problem(C.coco_entailment_docs, {})
    assert "offline mode is on (HF_DATASETS_OFFLINE=1)" in problem.reason
    assert f"{C.ENV_VAR} is not set" in problem.reason
    assert problem.fix.endswith(
        "or unset HF_DATASETS_OFFLINE and allow network access to the hub datasets "
        "detection-datasets/coco and phiyodr/coco2017"
    )


def test_offline_open_stream_fails_before_loading(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset was called"))
    with pytest.raises(RuntimeError, match=f"offline mode is on.*{S.ENV_VAR}"):
        sources.open_stream(S.HUB_DATASET, "train", ["label"], S.ENV_VAR)


def test_an_unreachable_hub_is_tried_once_briefly(online, monkeypatch):
    import socket

    from huggingface_hub import HfApi

    tried: list[str] = []
    real = HfApi.dataset_info
    monkeypatch.setattr(HfApi, "dataset_info", lambda self, repo, **k: tried.append(repo) or real(self, repo, **k))
    with socket.socket() as sock:  # a port nobody listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    online(f"http://127.0.0.1:{port}")
    start = time.monotonic()
    coco = source_problem(C.coco_entailment_docs, {})
    snli = source_problem(S.snli_ve_docs, {})
    assert time.monotonic() - start < sources.HUB_TIMEOUT_S  # no retries
    assert f"the hub at http://127.0.0.1:{port} cannot be reached (ConnectError" in coco.reason
    assert tried == ["detection-datasets/coco"]  # one request, no retries; the down hub is remembered
    assert snli.reason.endswith(coco.reason.split("streamed: ")[1])
    assert snli.fix.endswith("or allow network access to the hub dataset sedrickkeh/snli-ve")


class _FakeHub(BaseHTTPRequestHandler):
    """Knows one dataset; answers like the hub for any other (404 + RepoNotFound)."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 -- the http.server API
        _FakeHub.hits.append(self.path)
        if self.path.startswith(f"/api/datasets/{S.HUB_DATASET}"):
            body, status, headers = json.dumps({"id": S.HUB_DATASET, "_id": "x"}).encode(), 200, {}
        else:
            body, status, headers = b'{"error": "Repository not found"}', 404, {"X-Error-Code": "RepoNotFound"}
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_reachable_hub_is_asked_once_and_unknown_ids_are_named(online):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online(f"http://127.0.0.1:{server.server_address[1]}")
        _FakeHub.hits.clear()
        assert source_problem(S.snli_ve_docs, {}) is None
        assert source_problem(S.snli_ve_docs, {}) is None  # remembered: asked once (below)
        assert [h for h in _FakeHub.hits if h.startswith("/api/datasets/")] == [f"/api/datasets/{S.HUB_DATASET}"]
        problem = source_problem(C.coco_object_docs, {})
        assert "has no dataset 'detection-datasets/coco'" in problem.reason
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------- all selected tasks, one message
def test_one_message_names_every_unavailable_task_before_any_is_built(monkeypatch):
    built: list[str] = []
    monkeypatch.setattr(ProbeTask, "download", lambda self, *a, **k: built.append(self.config.task))
    manager = _manager()
    names = manager.match_tasks(["probe_*"])  # single process: matching never raises
    with pytest.raises(DataUnavailableError) as caught:
        manager.load_task_or_group(names)
    message = str(caught.value)
    assert built == []
    assert message.startswith("the data of 4 selected probe tasks cannot be read")
    for task in REAL:
        assert task in message
    assert message.count(f"set {C.ENV_VAR} to a folder") == 2  # entailment (captions) vs objects + multilabel
    assert f"set {S.ENV_VAR} to a folder" in message and "sedrickkeh/snli-ve" in message
    assert "still runnable: probe_shapes_entailment, probe_shapes_objects" in message


def test_groups_resolve_and_available_data_passes(coco, snli, monkeypatch):
    manager = _manager()
    assert set(registry.selected_probe_tasks(manager, ["lmms_probe_paper"])) == {
        "probe_coco_entailment",
        "probe_coco_objects",
    }
    assert registry.selected_probe_tasks(manager, ["not_a_task", {"task": "nope"}]) == {}
    with pytest.raises(DataUnavailableError, match="the data of 2 selected probe tasks"):
        registry.check_probe_data(manager, ["lmms_probe_paper", "probe_shapes_objects"])
    monkeypatch.setenv(C.ENV_VAR, str(coco.root))
    monkeypatch.setenv(S.ENV_VAR, str(snli.root))
    registry.check_probe_data(manager, manager.match_tasks(["probe_*"]))  # no error


def test_a_task_built_another_way_fails_the_same_way():
    manager = _manager()
    with pytest.raises(DataUnavailableError, match=r"probe_snli_ve \(SNLI-VE\): LMMS_PROBE_SNLI_VE_DIR is not set"):
        manager.load_config({"task": "probe_snli_ve"})  # bypasses load_task_or_group: download checks


def test_under_data_parallel_matching_checks_on_every_rank(monkeypatch):
    manager = _manager()
    monkeypatch.setattr(registry, "_distributed", lambda: True)
    with pytest.raises(DataUnavailableError, match="probe_snli_ve"):
        manager.match_tasks(["probe_snli_*"])
    assert manager.match_tasks(["probe_shapes_*"]) == ["probe_shapes_entailment", "probe_shapes_objects"]


def test_generated_data_needs_no_check():
    from lmms_probe_tasks.data import shapes

    assert ProbeTask.data_problem({"builder": "lmms_probe_tasks.data.shapes.entailment_docs"}) is None
    assert ProbeTask.data_problem({"builder": "no.such.builder"}) is None  # the build raises its own error
    assert not hasattr(shapes.entailment_docs, "check_source")
