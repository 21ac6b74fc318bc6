"""Accuracy and fidelity numbers on cases whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.benchmarks.evaluate import evaluate, fidelity, predict, top1
from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from tests.conftest import run_cli


def test_top1_and_fidelity_arithmetic():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    f = fidelity(logits, logits)
    assert f.top1_agreement == 1 and f.cosine_min == pytest.approx(1) and f.max_abs_err == 0
    flipped = fidelity(logits[:, ::-1].copy(), logits)
    assert flipped.top1_agreement == 0
    with pytest.raises(ModelpressError, match="needs a \\[samples, classes\\] output"):
        top1(np.zeros((3, 2, 2)), np.zeros(3))


def test_evaluate_model_against_its_own_predictions(tiny_onnx, tiny_data):
    out = predict(tiny_onnx, tiny_data)
    labelled = Dataset(tiny_data.inputs, out.argmax(1))
    metrics, _ = evaluate(tiny_onnx, labelled, reference=out)
    assert metrics.top1 == 1.0 and metrics.fidelity.top1_agreement == 1.0 and metrics.samples == 48


def test_cli_evaluate(tiny_onnx, tiny_npz):
    p = run_cli("evaluate", str(tiny_onnx), "--data", str(tiny_npz), "--reference", str(tiny_onnx), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert 0 <= res["top1"] <= 1 and res["fidelity"]["cosine_mean"] == pytest.approx(1)
