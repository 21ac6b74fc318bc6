"""`modelpress data`: make .npz data files from images or text."""

from __future__ import annotations

from pathlib import Path

import click

from modelpress.cli.common import emit, json_option
from modelpress.errors import ModelpressError


@click.group()
def data() -> None:
    """Make .npz data files (calibration, evaluation, profiling inputs) from images or text."""


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ModelpressError(f"expected comma-separated numbers, got {text!r}") from None


def _save_data(ds, output: Path, as_json: bool) -> None:
    ds.save(output)
    payload = {"output": str(output), "samples": len(ds),
               "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in ds.inputs.items()},
               "labels": None if ds.labels is None else int(ds.labels.max()) + 1}
    emit(as_json, payload, lambda: click.echo(
        f"wrote {output}: {len(ds)} samples; " + ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in ds.inputs.items())
        + ("" if ds.labels is None else f"; labels for {payload['labels']} classes")))


@data.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", default=224, show_default=True, help="Center-crop size.")
@click.option("--resize", default=256, show_default=True, help="Shorter side before the crop.")
@click.option("--mean", default="0.485,0.456,0.406", show_default=True)
@click.option("--std", default="0.229,0.224,0.225", show_default=True)
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True)
@click.option("--grayscale", is_flag=True, help="One channel (give one mean and one std).")
@click.option("--input-name", default="input", show_default=True, help="The model input the images feed.")
@click.option("--labels-from-subfolders", is_flag=True, help="Each subfolder is a class (sorted names -> 0, 1, ...).")
@json_option()
def images(folder: Path, output: Path, size: int, resize: int, mean: str, std: str, layout: str, grayscale: bool,
           input_name: str, labels_from_subfolders: bool, as_json: bool) -> None:
    """A folder of images -> .npz, preprocessed like torchvision's ImageNet eval transform by default."""
    from modelpress.data import IMAGE_SUFFIXES, ImageSpec, from_image_folder
    from modelpress.io import guard_outputs

    guard_outputs({"FOLDER": (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)  # the images read
                   if folder.is_dir() else folder}, {"-o": output})
    spec = ImageSpec(size, resize, _floats(mean), _floats(std), layout, grayscale)
    _save_data(from_image_folder(folder, spec, input_name, labels_from_subfolders), output, as_json)


@data.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tokenizer", required=True, type=click.Path(path_type=Path), help="A Hugging Face tokenizer folder.")
@click.option("--max-length", default=128, show_default=True)
@json_option()
def text(file: Path, output: Path, tokenizer: Path, max_length: int, as_json: bool) -> None:
    """A text file (one sample per line) -> token ids, attention mask and token types (.npz)."""
    from modelpress.data import from_text
    from modelpress.io import guard_outputs

    guard_outputs({"FILE": file, "--tokenizer": tokenizer}, {"-o": output})
    _save_data(from_text(file, tokenizer, max_length), output, as_json)


COMMANDS = [data]  # registered on the `modelpress` group by modelpress.cli
