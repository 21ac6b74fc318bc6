"""The Ray executor against the local one, on a real local Ray instance (2 CPUs, every server on 127.0.0.1, one per
module, shut down at its end): the same models byte for byte and the same pick, failures recorded the same way, a
worker killed mid-write retried without a partial file, several recipes at once from the CLI, and the placement the
report records. Skipped when Ray is not installed (pip install 'modelpress[ray]')."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from modelpress.study.executors.ray import LOCAL_ONLY_ENV, PROFILER_RESOURCE

os.environ.setdefault(LOCAL_ONLY_ENV, "0")  # read by Ray when imported: its servers listen on 127.0.0.1 only
ray = pytest.importorskip("ray")

from modelpress.errors import ModelpressError  # noqa: E402
from modelpress.study import load_study_recipe, run_study  # noqa: E402
from modelpress.study.executors.ray import RayExecutor  # noqa: E402
from tests import ray_plugin  # noqa: E402,F401 - registers test-crash-once and test-always-fails
from tests.conftest import assert_clean_error, run_cli  # noqa: E402

RECIPE = """modelpress: 1
kind: study
model: fp32.onnx
data: {{eval: data.npz, calib: data.npz}}
candidates:
{candidates}
profiles: [edge-1core]
profile: {{iterations: 5, warmup: 1, op_breakdown: false{profile_extra}}}
selection: {{max_accuracy_drop: 100pt, objective: size}}
output: out
"""
CANDIDATES = """  - [dynamic-int8]
  - name: s8
    chain: [{technique: static-int8, options: {per_channel: false}}]
  - name: broken
    chain: [test-always-fails]
"""


@pytest.fixture(scope="module")
def ray_address():
    ctx = ray.init(num_cpus=2, include_dashboard=False, resources={PROFILER_RESOURCE: 1}, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()


def _study(folder: Path, tiny_onnx: Path, tiny_npz: Path, candidates: str = CANDIDATES, profile_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (folder / "data.npz").write_bytes(tiny_npz.read_bytes())
    (folder / "r.yaml").write_text(RECIPE.format(candidates=candidates, profile_extra=profile_extra))
    return folder / "r.yaml"


def _leftovers(out: Path) -> list[str]:
    """Hidden files a study left beside its models (temps of a killed write, a PyTorch export), the cache aside."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".cache")


def test_ray_builds_the_same_models_and_pick_as_local(tmp_path, tiny_onnx, tiny_npz, ray_address):
    local = run_study(load_study_recipe(_study(tmp_path / "local", tiny_onnx, tiny_npz)), show_progress=False,
                      executor="local")
    with RayExecutor() as ex:  # the module's Ray instance: used as it is, left running
        remote = run_study(load_study_recipe(_study(tmp_path / "ray", tiny_onnx, tiny_npz)), show_progress=False,
                           executor=ex)
    names = [v["name"] for v in local["variants"]]
    assert names == [v["name"] for v in remote["variants"]] == ["fp32", "dynamic-int8", "s8"]
    for name in names[1:]:  # byte-identical models, the same measured accuracy
        a, b = (tmp_path / "local/out" / f"{name}.onnx").read_bytes(), (tmp_path / "ray/out" / f"{name}.onnx").read_bytes()
        assert a == b, name
    for a, b in zip(local["variants"], remote["variants"]):
        assert (a["sha256"], a["accuracy"], a["fidelity"], a["notes"]) == (b["sha256"], b["accuracy"], b["fidelity"],
                                                                           b["notes"])
    assert local["selection"]["pick"] == remote["selection"]["pick"]
    # a failing candidate is recorded as it is locally: same stage, same reason
    assert local["failed"] == remote["failed"] and "always fails" in remote["failed"]["broken"]
    assert local["failures"] == remote["failures"]
    assert not (tmp_path / "ray/out/broken.onnx").exists() and not _leftovers(tmp_path / "ray/out")
    # the report says which node built, evaluated and timed each variant; the local report is unchanged
    assert "executor" not in local
    ex_info = remote["executor"]
    assert ex_info["name"] == "ray" and ex_info["profile_resources"] is None
    placement = ex_info["placement"]
    assert set(placement["dynamic-int8"]) == {"build", "evaluate", "profile"} and "build" not in placement["fp32"]
    node = placement["s8"]["build"]
    assert ex_info["nodes"][node]["host"] == socket.gethostname()
    assert placement["s8"]["profile"]["edge-1core"] in ex_info["nodes"]
    # the step cache works through Ray too: a second run builds, evaluates and times nothing again
    with RayExecutor() as ex:
        again = run_study(load_study_recipe(tmp_path / "ray/r.yaml"), show_progress=False, executor=ex)
    assert again["cache"]["misses"] == 1  # the broken candidate, tried again
    assert again["executor"]["placement"]["s8"] == {"build": "cache", "evaluate": "cache",
                                                    "profile": {"edge-1core": "cache"}}
    assert (tmp_path / "ray/out/s8.onnx").read_bytes() == (tmp_path / "local/out/s8.onnx").read_bytes()


def test_a_worker_killed_mid_write_is_retried_and_leaves_no_partial_file(tmp_path, tiny_onnx, tiny_npz, ray_address):
    marker = tmp_path / "died-once"
    crashy = f"  - name: q\n    chain: [{{technique: test-crash-once, options: {{marker: '{marker}'}}}}]\n"
    with RayExecutor(max_retries=1) as ex:
        rep = run_study(load_study_recipe(_study(tmp_path / "ray", tiny_onnx, tiny_npz, crashy)), show_progress=False,
                        executor=ex)
    assert marker.is_file()  # the first attempt died (SIGKILL, half a model in its temp file) ...
    assert rep["failed"] == {} and [v["name"] for v in rep["variants"]] == ["fp32", "q"]  # ... the retry built it
    local = run_study(load_study_recipe(_study(tmp_path / "local", tiny_onnx, tiny_npz, "  - name: q\n    chain: "
                                               "[dynamic-int8]\n")), show_progress=False)
    assert (tmp_path / "ray/out/q.onnx").read_bytes() == (tmp_path / "local/out/q.onnx").read_bytes()
    assert rep["variants"][1]["sha256"] == local["variants"][1]["sha256"]
    assert not _leftovers(tmp_path / "ray/out")

    # no retries left: the death is recorded as the candidate's failure, and nothing of it stays
    marker.unlink()
    with RayExecutor(max_retries=0) as ex, pytest.raises(ModelpressError, match="no candidate completed"):
        run_study(load_study_recipe(_study(tmp_path / "ray0", tiny_onnx, tiny_npz, crashy)), show_progress=False,
                  use_cache=False, executor=ex)
    rep0 = json.loads((tmp_path / "ray0/out/report.json").read_text())
    assert rep0["failures"][0]["stage"] == "build" and "failed after 0 retries" in rep0["failed"]["q"]
    assert not (tmp_path / "ray0/out/q.onnx").exists() and not _leftovers(tmp_path / "ray0/out")


def test_several_recipes_at_once_from_the_cli(tmp_path, tiny_onnx, tiny_npz, ray_address):
    a = _study(tmp_path / "a", tiny_onnx, tiny_npz, "  - [dynamic-int8]\n")
    b = _study(tmp_path / "b", tiny_onnx, tiny_npz, "  - [static-int8]\n")
    p = run_cli("run", str(a), str(b), "--executor", "ray", "--ray-address", ray_address, "--json")
    assert p.returncode == 0, p.stderr
    studies = json.loads(p.stdout)["studies"]  # stdout is the JSON alone: Ray's logs stay out of it
    assert [s["recipe"] for s in studies] == [str(a), str(b)]
    assert [[v["name"] for v in s["report"]["variants"]] for s in studies] == [["fp32", "dynamic-int8"],
                                                                               ["fp32", "static-int8"]]
    assert all(s["report"]["executor"]["name"] == "ray" for s in studies)
    assert (tmp_path / "a/out/dynamic-int8.onnx").is_file() and (tmp_path / "b/out/static-int8.onnx").is_file()


def test_timings_need_a_node_with_the_recipes_labels(tmp_path, tiny_onnx, tiny_npz, ray_address):
    r = _study(tmp_path / "s", tiny_onnx, tiny_npz, "  - [dynamic-int8]\n", ", ray_resources: {device_rpi5: 1}")
    rec = load_study_recipe(r)
    assert rec.ray_resources == {"device_rpi5": 1.0} and "ray_resources:\n    device_rpi5: 1.0" in rec.to_yaml()
    p = run_cli("run", str(r), "--executor", "ray", "--ray-address", ray_address)
    assert_clean_error(p, 2, "no node of the Ray cluster offers")
    assert not (tmp_path / "s/out/dynamic-int8.onnx").exists()  # refused before any work


def test_cli_refuses_bad_executor_options_in_one_line(tmp_path, tiny_onnx, tiny_npz):
    r = _study(tmp_path / "s", tiny_onnx, tiny_npz, "  - [dynamic-int8]\n")
    assert_clean_error(run_cli("run", str(r), "--ray-address", "127.0.0.1:1"), 2, "--ray-address needs --executor ray")
    assert_clean_error(run_cli("run", str(r), str(r), "--executor", "ray"), 2, "write the same output folder")
    assert_clean_error(run_cli("run", str(r), str(r), "--dump-recipe", "-"), 2, "--dump-recipe takes one RECIPE")


def test_without_an_address_a_local_instance_is_started_and_stopped(tmp_path, tiny_onnx, tiny_npz, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    r = _study(tmp_path / "s", tiny_onnx, tiny_npz, "  - [dynamic-int8]\n")
    p = run_cli("run", str(r), "--executor", "ray", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["executor"]["address"] == "a local instance"
    assert all(n["ip"] == "127.0.0.1" for n in rep["executor"]["nodes"].values())  # loopback only


def test_ray_is_imported_only_when_asked_for():
    import subprocess
    import sys

    code = ("import sys, modelpress, modelpress.study, modelpress.cli, modelpress.study.executors;"
            "from modelpress.study.executors import get_executor; get_executor('ray');"
            "assert 'ray' not in sys.modules, 'ray imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_without_ray_installed_the_executor_is_a_one_line_error(tmp_path, tiny_onnx, tiny_npz):
    import subprocess
    import sys

    r = _study(tmp_path / "s", tiny_onnx, tiny_npz, "  - [dynamic-int8]\n")
    code = ("import sys; sys.modules['ray'] = None; from modelpress.cli import main;"  # as if Ray were not installed
            f"sys.argv = ['modelpress', 'run', {str(r)!r}, '--executor', 'ray']; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_clean_error(p, 2, "pip install 'modelpress[ray]'")
    assert not (tmp_path / "s/out").exists()
