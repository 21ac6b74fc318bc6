"""PyTorch-side compression commands: prune, lowrank (compress, optionally fine-tune, export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelpress.cli.common import console, emit, parse_options, path_source, json_option
from modelpress.errors import ModelpressError


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
        json_option("Print the result as JSON."),
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

    guard_outputs({"SOURCE": path_source(source), "--finetune-data": finetune_data},
                  {"-o": output, "the parity record": sidecar_path(output)})
    cfg = FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size)
    data = load_npz(finetune_data) if finetune_data else None
    from modelpress.progress import progress_bar

    with progress_bar(not as_json) as prog:
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
        console().print(t)
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

    emit(as_json, payload, human)


@click.command()
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
    options = parse_options(option_pairs)
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


@click.command()
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
    options = parse_options(option_pairs)
    if energy is not None and rank_ratio is not None:
        raise ModelpressError("give --energy or --rank-ratio, not both")
    options.setdefault("energy", None if rank_ratio is not None else (0.9 if energy is None else energy))
    if rank_ratio is not None:
        options["rank_ratio"] = rank_ratio
    if exclude:
        options["exclude"] = list(exclude)
    _run_compress(source, "lowrank", options, output, finetune_data, epochs, lr, batch_size, as_json)


COMMANDS = [prune, lowrank]  # registered on the `modelpress` group by modelpress.cli
