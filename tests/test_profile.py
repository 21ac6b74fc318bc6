"""Profiling in pinned child processes, with real onnxruntime. No wall-clock assertions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from modelpress.benchmarks.presets import PRESETS, parse_cores, resolve_profile
from modelpress.benchmarks.profiler import ProfileConfig, profile_model
from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from tests.conftest import assert_clean_error, run_cli


def test_profile_edge_1core_pins_and_reports(tiny_onnx):
    r = profile_model(tiny_onnx, PRESETS["edge-1core"], ProfileConfig(iterations=30, warmup=3, op_breakdown=True))
    s = r.stats
    assert r.affinity == [0]
    assert s.n == 30 and s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.iqr_ms >= 0 and s.std_ms >= 0 and s.throughput_items_s > 0
    assert r.cold_start_ms >= r.load_ms > 0
    assert r.peak_rss_mb > r.model_rss_mb >= 0
    assert len(r.samples_ms) == 30
    assert "Conv" in r.op_breakdown and abs(sum(r.op_breakdown.values()) - 1) < 0.01


def test_profile_duration_budget_and_batch(tiny_onnx):
    r = profile_model(tiny_onnx, PRESETS["host"], ProfileConfig(iterations=100000, duration_s=0.3, warmup=1, batch_size=4))
    assert 1 <= r.stats.n < 100000 and r.batch_size == 4
    assert r.affinity == sorted(os.sched_getaffinity(0))


def test_profile_real_inputs(tiny_onnx, tiny_data):
    r = profile_model(tiny_onnx, PRESETS["edge-1core"], ProfileConfig(iterations=10, warmup=1), data=tiny_data, data_label="x")
    assert r.inputs == "x" and r.stats.n == 10


def test_profile_rejects_wrong_inputs(tiny_onnx):
    bad = Dataset({"input": np.zeros((4, 1, 8, 8), np.float32)})
    with pytest.raises(ModelpressError, match=r"per-sample shape \[1, 8, 8\], the model wants \[1, 16, 16\]"):
        profile_model(tiny_onnx, PRESETS["edge-1core"], ProfileConfig(iterations=5), data=bad)


def test_presets_and_custom_profiles():
    assert parse_cores("0-2,5") == (0, 1, 2, 5)
    p = resolve_profile(cores="0", threads=1)
    assert p.name == "custom" and p.cores == (0,) and p.intra_op_threads == 1
    with pytest.raises(ModelpressError, match="unknown preset 'edge-9core'"):
        resolve_profile("edge-9core")
    with pytest.raises(ModelpressError, match="may use only"):
        resolve_profile(cores="4096")


def test_cli_profile_json(tiny_onnx, tiny_npz, tmp_path):
    out = tmp_path / "prof.json"
    p = run_cli("profile", str(tiny_onnx), "-p", "edge-1core", "-p", "host", "-n", "20", "--inputs", str(tiny_npz),
                "--ops", "--json", "-o", str(out))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)["results"]
    assert [r["profile"]["name"] for r in res] == ["edge-1core", "host"]
    assert res[0]["stats"]["n"] == 20 and res[0]["op_breakdown"]
    assert len(json.loads(out.read_text())["results"][0]["samples_ms"]) == 20


def test_cli_profile_table(tiny_onnx):
    p = run_cli("profile", str(tiny_onnx), "--cores", "0", "--threads", "1", "-n", "10")
    assert p.returncode == 0, p.stderr
    assert "custom" in p.stdout and "p50" in p.stdout and "cold start" in p.stdout and "latencies in ms" in p.stdout


@pytest.fixture
def bad_files(tmp_path, tiny_onnx):
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(tiny_onnx.read_bytes()[: tiny_onnx.stat().st_size // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    wrong = tmp_path / "wrong.npz"
    Dataset({"input": np.zeros((4, 3, 16, 16), np.float32)}).save(wrong)
    badname = tmp_path / "badname.npz"
    Dataset({"pixels": np.zeros((4, 1, 16, 16), np.float32)}).save(badname)
    f64 = tmp_path / "f64.npz"
    Dataset({"input": np.zeros((4, 1, 16, 16), np.float64)}).save(f64)
    return {"text": text, "trunc": trunc, "empty": empty, "wrong": wrong, "badname": badname, "f64": f64}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["missing.onnx"], "no such file"),
        (["{text}"], "not an ONNX model"),
        (["{trunc}"], "not an ONNX model or is truncated"),
        (["{empty}"], "is empty"),
        (["{model}", "--preset", "edge-64core"], "unknown preset 'edge-64core'"),
        (["{model}", "--inputs", "{wrong}"], "per-sample shape [3, 16, 16], the model wants [1, 16, 16]"),
        (["{model}", "--inputs", "{badname}"], "lacks model input(s) ['input']"),
        (["{model}", "--inputs", "{f64}"], "is float64, the model wants float32"),
        (["{model}", "--inputs", "nothere.npz"], "no such data file"),
        (["{model}", "--runtime", "tvm"], "unknown runtime 'tvm'"),
        (["{model}", "--cores", "x"], "bad --cores"),
        (["{model}", "--duration", "-1"], "--duration must be > 0"),
    ],
)
def test_cli_profile_bad_input(bad_files, tiny_onnx, args, needle):
    args = [a.format(model=tiny_onnx, **bad_files) for a in args]
    assert_clean_error(run_cli("profile", *args, "-n", "5"), 2, needle)
