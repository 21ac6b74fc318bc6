"""Single-model commands: export, profile, optimize, sensitivity, evaluate, list."""

from __future__ import annotations

from pathlib import Path

import click

from modelpress.cli.common import console, emit, split_names, path_source, step_options, json_option
from modelpress.errors import ModelpressError


@click.command()
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
@click.option("--keep-intermediate-shapes", is_flag=True,
              help="Keep shapes on intermediate tensors (types are always kept). Off by default: with them ONNX "
                   "Runtime's CPU optimizer picks a slower fused LayerNorm kernel on transformers.")
@json_option("Print the result as JSON.")
def export(source: str, output: Path, opset: int, exporter: str, dynamic_batch: bool, input_names: str | None,
           output_names: str | None, input_shapes: tuple[str, ...], inputs_file: Path | None, atol: float, rtol: float,
           keep_intermediate_shapes: bool, as_json: bool) -> None:
    """Export a PyTorch model to ONNX and check it.

    SOURCE is 'package.module:factory' (a callable returning (module, example_inputs))
    or a TorchScript file (.pt/.ts; give --input-shape or --inputs). After export the
    graph passes onnx.checker and shape inference, and ONNX Runtime's outputs are
    compared with PyTorch's (at the example batch and, with a dynamic batch, at
    another size). The result is also written to OUTPUT.export.json.
    Exit code 3 when parity is outside --atol/--rtol (the model is kept for inspection).
    """
    from modelpress.exporters import ExportConfig, export_onnx, load_model_source
    from modelpress.exporters.inputs import example_inputs
    from modelpress.exporters.torch_onnx import sidecar_path
    from modelpress.io import guard_outputs

    guard_outputs({"SOURCE": path_source(source), "--inputs": inputs_file},
                  {"-o": output, "the parity record": sidecar_path(output)})
    example, names = example_inputs(inputs_file, input_shapes, split_names(input_names))
    module, ex = load_model_source(source, example)
    cfg = ExportConfig(opset=opset, exporter=exporter, dynamic_batch=dynamic_batch, input_names=names,
                       output_names=split_names(output_names), atol=atol, rtol=rtol,
                       keep_intermediate_shapes=keep_intermediate_shapes)
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

    emit(as_json, res.to_dict(), human)


@click.command()
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
@click.option("--target", help="Profile on a device running `modelpress agent serve` instead: an http(s):// URL "
                               "(token from MODELPRESS_AGENT_TOKEN) or a name in the targets file.")
@click.option("--targets", "targets_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Targets file for --target NAME [default: ./targets.yaml].")
@json_option("Print the results as JSON.")
def profile(model: Path, presets: tuple[str, ...], cores: str | None, threads: int | None, iterations: int,
            duration: float | None, warmup: int, batch_size: int, inputs_file: Path | None, runtime: str, graph_opt: str,
            ops: bool, output: Path | None, target: str | None, targets_file: Path | None, as_json: bool) -> None:
    """Measure latency, throughput, cold start and peak memory of an ONNX model.

    Each profile runs in a fresh child process pinned to its cores with fixed
    thread pools, so a bigger machine can stand in for a small device. Reports
    mean, p50/p90/p99, std, IQR, throughput (items/s), cold start (session
    creation + first inference) and peak resident memory. With --target the same profiler runs on the
    device's agent (`modelpress agent --help`) and the record adds the device's facts.
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
    cfg = ProfileConfig(warmup=warmup, iterations=iterations, duration_s=duration, batch_size=batch_size, runner=runtime,
                        graph_optimization=graph_opt, op_breakdown=ops)
    where: dict = {}
    if target:  # the same profiler on the device's agent; presets and cores are resolved there
        from modelpress.agent.client import profile_on_target

        given = click.get_current_context().get_parameter_source("runtime") != click.core.ParameterSource.DEFAULT
        remote = profile_on_target(target, targets_file, model, presets, cores, threads, cfg, inputs_file, given,
                                   on_status=lambda m: click.echo(m, err=True))
        results, where, runtime = remote.results, {"target": remote.target}, remote.results[0].runner
    else:
        profs = [resolve_profile(p, cores, threads) for p in presets] if presets else [resolve_profile(None, cores, threads)]
        data = load_npz(inputs_file) if inputs_file else None
        results = [profile_model(model, p, cfg, data, data_label=str(inputs_file) if inputs_file else None) for p in profs]
    payload = {"model": str(model), "results": [r.to_dict(samples=False) for r in results], **where}
    if output:
        write_json(output, {"model": str(model), "results": [r.to_dict() for r in results], **where})

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
        con = console()
        con.print(f"[bold]{model}[/bold]: batch {batch_size}, {results[0].inputs} inputs, {runtime}, "
                  f"{results[0].stats.n} timed runs; latencies in ms (std and all fields: --json)")
        con.print(t)
        if where:
            from modelpress.agent.client import describe_remote

            con.print(describe_remote(where["target"], results), markup=False, highlight=False)
        for r in results:
            con.print(f"[dim]{r.profile['name']}: {r.profile['description']}[/dim]")
            if r.op_breakdown:
                top = ", ".join(f"{k} {v:.0%}" for k, v in list(r.op_breakdown.items())[:6])
                con.print(f"  kernel time by op: {top}")

    emit(as_json, payload, human)


@click.command()
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
                   "or none [default: cosine=0.97]. Below it the technique's repairs run; if none reaches it, exit 6.")
@click.option("--data", "data_file", type=click.Path(path_type=Path),
              help="Samples to check fidelity on (.npz; default: --calib, else synthetic inputs, and it says so).")
@click.option("--keep-best", is_flag=True, help="Below the floor, keep the best try as OUTPUT-stem.below-floor.onnx.")
@click.option("--allow-outside", is_flag=True, help="Let a --recipe write its output outside the recipe's folder.")
@click.option("-p", "--preset", default="edge-1core", show_default=True,
              help="-t auto: the edge profile the candidates are timed under.")
@json_option("Print the result as JSON.")
def optimize(model: Path | None, techniques: tuple[str, ...], output: Path | None, calib: Path | None,
             option_pairs: tuple[str, ...], recipe: Path | None, dump_recipe: Path | None, min_fidelity: str | None,
             data_file: Path | None, keep_best: bool, allow_outside: bool, preset: str, as_json: bool) -> None:
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
      modelpress optimize m.onnx -t auto --calib calib.npz -p edge-1core -o best.onnx   # fastest faithful here

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
    from modelpress.recipe import Recipe, Step, load_recipe, run_recipe

    if techniques == ("auto",) and recipe is None:
        return _optimize_auto(model, output, calib, data_file, min_fidelity, preset, option_pairs, as_json)
    if recipe is not None:
        if model or techniques or output or option_pairs or calib:
            raise ModelpressError("--recipe replays a run: give no MODEL, -t, -o, --calib or --option with it")
        rec = load_recipe(recipe, allow_outside=allow_outside)
    else:
        if model is None or not techniques or output is None:
            raise ModelpressError("give MODEL, at least one -t TECHNIQUE and -o OUTPUT (or --recipe FILE)")
        opts = step_options(option_pairs, list(techniques))
        rec = Recipe(str(model), str(output), [Step(t, o) for t, o in zip(techniques, opts)], str(calib) if calib else None)
    from modelpress.io import guard_outputs

    guard_outputs({"MODEL": rec.model, "--calib": rec.calib, "--recipe": recipe, "--data": data_file},
                  {"-o" if recipe is None else f"the output of {recipe}": rec.output, "--dump-recipe": dump_recipe})
    from modelpress.validate import FidelityFloor

    FidelityFloor.parse(min_fidelity)  # a bad value fails before any data is read
    # a replayed recipe keeps its floor unless the command line overrides it
    results, ran = run_recipe(rec, min_fidelity=min_fidelity, data=load_npz(data_file) if data_file else None,
                              keep_best=keep_best)
    floor = ran.min_fidelity if ran.min_fidelity != "none" else None
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

    emit(as_json, payload, human)


def _optimize_auto(model: Path | None, output: Path | None, calib: Path | None, data_file: Path | None,
                   min_fidelity: str | None, preset: str, option_pairs: tuple[str, ...], as_json: bool) -> None:
    """`-t auto`: build, validate and time the candidates that can win on this CPU; write the fastest faithful."""
    from modelpress.data import load_npz
    from modelpress.io import guard_outputs
    from modelpress.optimizers.auto import auto_optimize
    from modelpress.validate import FidelityFloor

    if model is None or output is None:
        raise ModelpressError("give MODEL and -o OUTPUT with -t auto")
    if option_pairs:
        raise ModelpressError("-t auto chooses every option itself: give no --option")
    guard_outputs({"MODEL": model, "--calib": calib, "--data": data_file}, {"-o": output})
    floor = FidelityFloor.parse(min_fidelity)
    res = auto_optimize(model, output, load_npz(calib) if calib else None,
                        data=load_npz(data_file) if data_file else None, min_fidelity=floor, profile=preset,
                        show_progress=not as_json)

    def human() -> None:
        click.echo(f"auto: wrote {res.output}: {res.pick} was the fastest faithful artifact on {res.profile} "
                   f"({res.runtime}; ISA {', '.join(res.isa) or 'baseline'})")
        for r in res.rows:
            speed = "-" if r["speed_vs_fp32"] is None else f"{r['speed_vs_fp32']:.2f}x"
            fid = "-" if r["fidelity"] is None else f"{r['fidelity']:.4f}"
            click.echo(f"  {r['name']:18} {speed:>7} vs FP32, worst fidelity {fid}"
                       f"{'  <- picked' if r['name'] == res.pick else '  ' + (r['why_not'] or '')[:160]}")
        if res.note:
            click.echo(f"  note: {res.note}")

    emit(as_json, res.to_dict(), human)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", required=True, type=click.Path(path_type=Path), help="Real inputs (.npz).")
@click.option("--top", default=10, show_default=True, help="Show the N most sensitive layers.")
@click.option("--samples", default=32, show_default=True, help="Samples to measure on.")
@click.option("--technique", default="static-int8", show_default=True,
              help="Rank as this technique quantizes: only its op types (trt-int8: Conv/ConvTranspose/MatMul/Gemm), "
                   "so the ranking names nodes worth keeping in FP32 for it.")
@json_option("Print every layer as JSON.")
def sensitivity(model: Path, calib: Path, top: int, samples: int, technique: str, as_json: bool) -> None:
    """Rank layers by how much static INT8 hurts each (SQNR in dB of each layer's own quantization; lower is worse).

    Feed the ranking back with `optimize -t static-int8 --option exclude_most_sensitive=K`,
    or let `-t inc-tune` find K against an accuracy budget. The repairs of every INT8 technique use
    the same ranking, measured with the technique's op types (see --technique).
    """
    from modelpress.data import load_npz
    from modelpress.onnxutil import check_onnx_file
    from modelpress.optimizers import build_onnx_pass
    from modelpress.optimizers.ort_quant import quantized_op_types
    from modelpress.optimizers.sensitivity import layer_sensitivity

    check_onnx_file(model)
    ops = quantized_op_types(build_onnx_pass(technique))
    ranked = [s for s in layer_sensitivity(model, load_npz(calib), {"op_types": sorted(ops)} if ops else None,
                                           max_samples=samples) if ops is None or s.op_type in ops]
    payload = {"model": str(model), "technique": technique, "layers": [s.to_dict() for s in ranked]}

    def human() -> None:
        fmt = lambda v: "-" if v is None else "sentinel" if v == float("-inf") else f"{v:.1f}"  # noqa: E731
        click.echo(f"{'rank':>4}  {'node':40} {'op':14} {'activation dB':>13} {'weight dB':>9} {'input dB':>9}")
        for i, s in enumerate(ranked[:top], 1):
            click.echo(f"{i:>4}  {s.node[:40]:40} {s.op_type:14} {fmt(s.activation_sqnr_db):>13} "
                       f"{fmt(s.weight_sqnr_db):>9} {fmt(s.input_sqnr_db):>9}")

    emit(as_json, payload, human)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data_file", required=True, type=click.Path(path_type=Path),
              help="Evaluation data (.npz) with a `labels` array for top-1.")
@click.option("--reference", type=click.Path(path_type=Path), help="FP32 model to measure fidelity against.")
@click.option("-b", "--batch-size", default=64, show_default=True)
@click.option("--runtime", default="ort-cpu", show_default=True,
              help="Runtime to run MODEL (and --reference) on; see `modelpress list runtimes`.")
@json_option("Print the result as JSON.")
def evaluate(model: Path, data_file: Path, reference: Path | None, batch_size: int, runtime: str, as_json: bool) -> None:
    """Top-1 accuracy on labelled data, and fidelity to a reference model (top-1 agreement, cosine, max abs error)."""
    from modelpress.benchmarks.evaluate import evaluate as run_eval
    from modelpress.benchmarks.evaluate import predict
    from modelpress.data import load_npz

    data = load_npz(data_file)
    ref = predict(reference, data, batch_size, runtime) if reference else None
    res, _ = run_eval(model, data, ref, batch_size, runtime)

    def human() -> None:
        click.echo(f"{model}: {res.samples} samples")
        if res.top1 is not None:
            click.echo(f"  top-1 accuracy: {res.top1 * 100:.2f}%")
        if res.fidelity:
            f = res.fidelity
            click.echo(f"  vs {reference}: top-1 agreement {f.top1_agreement * 100:.2f}%, cosine mean {f.cosine_mean:.5f} "
                       f"(min {f.cosine_min:.5f}), max abs err {f.max_abs_err:.4g}")

    emit(as_json, res.to_dict(), human)


@click.command(name="list")
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

        for name, cls in sorted(PASSES.items()):
            opts = ", ".join(f"{f.name}={f.default if f.default is not dataclasses.MISSING else '[]'}"
                             for f in dataclasses.fields(cls.config_cls))
            kind = "PyTorch model, before export" if cls.input_kind == "torch" else "ONNX model"
            click.echo(f"{name:18} {cls.summary}\n{'':18} input: {kind}; options: {opts}")


COMMANDS = [export, profile, optimize, sensitivity, evaluate, list_]  # registered on the `modelpress` group by modelpress.cli
