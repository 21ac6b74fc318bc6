"""Calibration reading: one small class over a Dataset that meets ONNX Runtime's `CalibrationDataReader`
protocol (`get_next` / `rewind`), shared by the ORT and INC quantizers, weight-only GPTQ and the sensitivity
analysis, so no pass module has to import another to get it."""

from __future__ import annotations

import functools

import numpy as np

from modelpress.data import Dataset


class _ReaderBase:
    """Batches of a Dataset, by position (ORT's GPTQ deep-copies the reader: no generators inside)."""

    def __init__(self, data: Dataset, batch_size: int) -> None:
        self._data, self._bs, self._pos = data, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._data):
            return None
        i, self._pos = self._pos, self._pos + self._bs
        return {k: v[i : i + self._bs] for k, v in self._data.inputs.items()}

    def rewind(self) -> None:
        self._pos = 0


@functools.lru_cache(maxsize=1)
def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    return type("Reader", (_ReaderBase, CalibrationDataReader), {})


def Reader(data: Dataset, batch_size: int):  # noqa: N802 - a class factory: ORT wants its own ABC as base
    """An ORT CalibrationDataReader over a Dataset (also accepted by INC, which duck-types get_next)."""
    return _reader_class()(data, batch_size)
