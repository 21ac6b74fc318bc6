"""The demo end to end: real MNIST digits, real training, export, quantization, profiling."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


def test_mnist_split_is_real_and_stratified():
    import numpy as np

    from modelpress.demo import mnist_5k, split

    x, y = mnist_5k()
    assert x.shape == (5000, 1, 28, 28) and np.bincount(y).tolist() == [500] * 10
    train, test = split(x, y)
    assert len(train) == 4000 and np.bincount(test.labels).tolist() == [100] * 10


@pytest.mark.slow
def test_demo_default_end_to_end(tmp_path):
    out = tmp_path / "demo"
    p = run_cli("demo", "-o", str(out), timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Pick:" in p.stdout and "Traceback" not in p.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema_version"] == 1
    names = [v["name"] for v in rep["variants"]]
    assert names == ["fp32", "dynamic-int8", "static-int8"]
    for v in rep["variants"]:
        assert v["size_bytes"] > 0 and v["accuracy"]["top1"] > 0.9
        assert set(v["latency"]) == {"edge-1core", "edge-2core"}
        assert all(s["p50_ms"] > 0 and s["op_breakdown"] for s in v["latency"].values())
    assert rep["variants"][2]["size_ratio"] < 0.3  # INT8 weights: about a quarter of FP32
    assert (out / "report.md").read_text().startswith("# modelpress demo")
    assert rep["selection"]["pick"] in names
    # the demo runs through a recipe and ends with a verified bundle
    assert (out / "recipe.yaml").is_file() and (out / "report.html").is_file()
    bundle = out / f"digits-{rep['selection']['pick']}.mpk"
    assert "Release bundle:" in p.stdout and bundle.is_file()
    v = run_cli("verify", str(bundle))
    assert v.returncode == 0, v.stderr
