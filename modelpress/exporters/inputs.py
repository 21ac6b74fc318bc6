"""Example inputs for an export: the first sample of each array of an .npz file, or random data of given shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelpress.errors import ModelpressError


def parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """'1x3x224x224' or 'name=1x3x224x224' (commas also accepted)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
    except ValueError:
        raise ModelpressError(f"bad --input-shape {text!r}: use e.g. 1x3x224x224 or input=1x3x224x224") from None
    if not shape or any(d < 1 for d in shape):
        raise ModelpressError(f"bad --input-shape {text!r}: dimensions must be >= 1")
    return (name or None) if sep else None, shape


def example_inputs(inputs_file: Path | None, input_shapes: tuple[str, ...] | list[str],
                   names: list[str] | None) -> tuple[dict[str, Any] | None, list[str] | None]:
    """-> (example {name: array} or None, input names).

    From `inputs_file` (.npz; the first sample of each array), else one float32 array of standard normal
    values (seed 0) per shape ('1x3x224x224' or 'name=1x3x224x224'), named by the shape, else by `names`,
    else input / input_0, input_1, ...; with neither, (None, names). `names` defaults to the example's keys.
    """
    import numpy as np

    from modelpress.data import load_npz

    example = None
    if inputs_file is not None:
        ds = load_npz(inputs_file)
        example = {k: v[:1] if len(v) else v for k, v in ds.inputs.items()}
        names = names or list(example)
    elif input_shapes:
        rng = np.random.default_rng(0)
        example = {}
        for i, text in enumerate(input_shapes):
            n, shape = parse_shape(text)
            n = n or (names[i] if names and i < len(names) else ("input" if len(input_shapes) == 1 else f"input_{i}"))
            example[n] = rng.standard_normal(shape).astype(np.float32)
        names = names or list(example)
    return example, names
