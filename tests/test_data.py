from __future__ import annotations

import numpy as np
import pytest

from modelpress.data import Dataset, batch_size_for, load_npz, synthetic
from modelpress.errors import ModelpressError
from modelpress.runtimes.base import TensorSpec


def test_npz_round_trip_and_batches(tmp_path):
    d = Dataset({"x": np.arange(10, dtype=np.float32).reshape(5, 2)}, np.arange(5))
    back = load_npz(d.save(tmp_path / "d.npz"))
    assert np.array_equal(back.inputs["x"], d.inputs["x"]) and np.array_equal(back.labels, d.labels)
    assert [len(b["x"]) for b in back.batches(2)] == [2, 2, 1]
    assert len(back.take(3)) == 3


def test_mismatched_sample_counts():
    with pytest.raises(ModelpressError, match="disagree on the number of samples"):
        Dataset({"x": np.zeros((3, 2))}, np.zeros(4))


def test_not_an_npz(tmp_path):
    p = tmp_path / "d.npz"
    p.write_text("nope")
    with pytest.raises(ModelpressError, match="not a readable .npz"):
        load_npz(p)


def test_synthetic_from_signature():
    specs = [TensorSpec("ids", "int64", ("batch", 7)), TensorSpec("img", "float32", ("batch", 3, 4))]
    d = synthetic(specs, batch_size=2, samples=3)
    assert d.inputs["ids"].shape == (6, 7) and d.inputs["ids"].dtype == np.int64
    assert d.inputs["img"].shape == (6, 3, 4)
    with pytest.raises(ModelpressError, match="symbolic dimension seq"):
        synthetic([TensorSpec("ids", "int64", ("batch", "seq"))])
    assert synthetic([TensorSpec("ids", "int64", ("batch", "seq"))], dims={"seq": 5}).inputs["ids"].shape == (8, 5)


def test_fixed_batch_wins():
    assert batch_size_for([TensorSpec("x", "float32", (1, 3))], 16) == 1
    assert batch_size_for([TensorSpec("x", "float32", ("batch", 3))], 16) == 16
