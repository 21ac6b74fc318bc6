"""GPU-path commands: `calibrate` (TensorRT calibration table, on CPU), `build-engine` (TensorRT, on a GPU),
`placement` (which provider ran each node) and `doctor` (what each runtime path needs here)."""

from __future__ import annotations

from pathlib import Path

import click

from modelpress.cli.common import emit, json_option
from modelpress.errors import ModelpressError


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", required=True, type=click.Path(path_type=Path), help="Calibration data (.npz).")
@click.option("--format", "fmt", default="tensorrt", show_default=True,
              help="Table format: tensorrt (what the TensorRT execution provider reads).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="percentile",
              show_default=True, help="How each tensor's range is calibrated (percentile: clips rare outliers; "
              "entropy: onnxruntime's KL search, slow, and it clipped MobileNetV2's ReLU6 outputs to 1/8 of their "
              "range; minmax: every value fits).")
@click.option("--max-samples", default=256, show_default=True, type=int, help="Calibrate on at most this many samples.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New folder for the table.")
@json_option("Print the result as JSON.")
def calibrate(model: Path, calib: Path, fmt: str, method: str, max_samples: int, output: Path, as_json: bool) -> None:
    """Write a calibration table for TensorRT's implicit INT8 path, computed on CPU.

    \b
    The folder gets calibration.flatbuffers (give its path to the TensorRT EP as
    trt_int8_calibration_table_name, or `runtime_options: {int8: true, int8_calibration_table: ...}`), plus
    calibration.json and calibration.cache as onnxruntime writes them. Put it in a bundle with
    `modelpress package MODEL --calibration FOLDER`.
    """
    from modelpress.data import load_npz
    from modelpress.io import guard_outputs
    from modelpress.optimizers.tensorrt import write_calibration_table

    if fmt != "tensorrt":
        raise ModelpressError(f"--format {fmt!r} is not supported; the one format is tensorrt")
    guard_outputs({"MODEL": model, "--calib": calib}, {"-o": output})
    res = write_calibration_table(model, load_npz(calib), output, method=method, max_samples=max_samples)
    emit(as_json, res, lambda: click.echo(f"wrote {output}: {res['tensors']} tensor ranges ({method}, "
                                          f"{res['samples']} samples) as {', '.join(res['files'])}"))


@click.command(name="build-engine")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Engine file [default: MODEL.PRECISION.trtVERSION.GPU.engine beside MODEL].")
@click.option("--fp16", is_flag=True, help="Allow FP16 kernels.")
@click.option("--int8", is_flag=True, help="INT8: Q/DQ models (-t trt-int8) as they are; others need --calib.")
@click.option("--strongly-typed", is_flag=True, help="Build a strongly typed network (types from the model).")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration data (.npz) for --int8 and shapes.")
@click.option("--shapes", help="trtexec-style input shapes for dynamic dims: input:1x3x224x224,mask:1x128.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Reuse and update this timing cache (builds get faster).")
@click.option("--workspace-mb", default=2048, show_default=True, type=int)
@json_option("Print the result as JSON.")
def build_engine_cmd(model: Path, output: Path | None, fp16: bool, int8: bool, strongly_typed: bool,
                     calib: Path | None, shapes: str | None, timing_cache: Path | None, workspace_mb: int,
                     as_json: bool) -> None:
    """Build a TensorRT engine from an ONNX model (needs an NVIDIA GPU and TensorRT).

    The engine's name carries the TensorRT version and GPU it was built for; a sidecar ENGINE.json
    records them and `--runtime tensorrt` refuses an engine built elsewhere. Profile it with
    `modelpress profile ENGINE --runtime tensorrt`.
    """
    from modelpress.data import load_npz
    from modelpress.runtimes import get_runner
    from modelpress.runtimes.tensorrt import build_engine

    get_runner("tensorrt")  # one line saying what is missing, before any work
    res = build_engine(model, output, fp16=fp16, int8=int8, strongly_typed=strongly_typed,
                       calib=load_npz(calib) if calib else None, shapes=shapes, timing_cache=timing_cache,
                       workspace_mb=workspace_mb)
    emit(as_json, res, lambda: click.echo(f"wrote {res['engine']} ({res['precision']}, TensorRT {res['tensorrt']}, "
                                          f"{res['gpu']}, {res['size_bytes'] / 1e6:.1f} MB)"))


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--runtime", default="ort-cpu", show_default=True, help="An ONNX Runtime runtime (ort-*).")
@click.option("--data", "data_file", type=click.Path(path_type=Path), help="Inputs (.npz); default synthetic.")
@json_option("Print provider -> nodes as JSON.")
def placement(model: Path, runtime: str, data_file: Path | None, as_json: bool) -> None:
    """Say which execution provider ran each node (TensorRT, CUDA or CPU fallback)."""
    from modelpress.data import load_npz, synthetic
    from modelpress.runtimes import create_runner

    with create_runner(runtime, model) as r:
        if not hasattr(r, "placement"):
            raise ModelpressError(f"runtime {runtime} reports no per-node placement (ONNX Runtime's do)")
        data = load_npz(data_file) if data_file else synthetic(r.inputs, batch_size=1, samples=1)
        where = r.placement([next(iter(data.batches(1)))])
    emit(as_json, {"model": str(model), "runtime": runtime, "placement": where},
         lambda: [click.echo(f"{p}: {len(n)} node(s): {', '.join(n[:12])}{' ...' if len(n) > 12 else ''}")
                  for p, n in where.items()])


@click.command()
@json_option("Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Say what each runtime path needs on this machine and how to install what is missing."""
    from modelpress.runtimes.doctor import checks

    res = {"checks": checks()}

    def human() -> None:
        for c in res["checks"]:
            click.echo(f"{'ok     ' if c['ok'] else 'missing'}  {c['name']:13} {c['detail']}")
            if not c["ok"] and c.get("fix"):
                click.echo(f"{'':22} fix: {c['fix']}")

    emit(as_json, res, human)


COMMANDS = [calibrate, build_engine_cmd, placement, doctor]  # registered on the `modelpress` group by modelpress.cli
