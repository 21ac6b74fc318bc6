"""Whole-job commands: demo, and run / study (a study recipe)."""

from __future__ import annotations

from pathlib import Path

import click

from modelpress.cli.common import console, emit, path_source, json_option


@click.command()
@click.option("-o", "--out", "out_dir", default="modelpress-demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for models, data and reports.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1, 50), help="Training epochs.")
@click.option("-n", "--iterations", default=200, show_default=True, type=click.IntRange(10), help="Timed iterations per profile.")
@click.option("-p", "--preset", "presets", multiple=True, help="Edge profiles (default: edge-1core, edge-2core).")
@json_option("Print report.json instead of the table.")
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
        con = console()
        con.print(render_rich(report, wide=con.width >= 110))
        b = report["bundle"]
        con.print(f"Release bundle: {b['path']} ({'verified' if b['verified'] else 'NOT verified'}; sha256 {b['sha256'][:16]}…)")
        con.print(f"[dim]wrote {out_dir}/report.json, report.md, report.html, recipe.yaml (replay: modelpress run "
                  f"{out_dir}/recipe.yaml) and the models in {report['wall_s']:.0f}s[/dim]")

    emit(as_json, report, human)


def _run_recipe(recipe: Path, dump_recipe: Path | None, no_cache: bool, as_json: bool, allow_outside: bool = False) -> None:
    from modelpress.benchmarks.report import render_rich
    from modelpress.study import load_study_recipe, run_study

    from modelpress.io import guard_outputs

    rec = load_study_recipe(recipe, allow_outside=allow_outside)
    study = Path(rec.output)  # OUTPUT/recipe.yaml is left out: replaying it rewrites it with the same recipe
    guard_outputs({"RECIPE": recipe, "model": rec.model, **{f"data.{k}": v for k, v in rec.data.items()},
                   "source": path_source(rec.source)},
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
        con = console()
        con.print(render_rich(report))
        for prof, names in report["pareto"].items():
            con.print(f"Pareto front on {prof}: {', '.join(names)}")
        c = report["cache"]
        cached = f"; cache: {c['hits']} reused, {c['misses']} computed" if c else ""
        con.print(f"wrote {out}/report.json, report.md, report.html and recipe.yaml{cached}")

    emit(as_json, report, human)


_RUN_HELP = """Run a study recipe: every candidate chain, evaluated and profiled on every target, then the pick.

    \b
    RECIPE is YAML (see `modelpress.study.recipe` or the README): source/model, data, candidates such as
    [graph, static-int8] or ["prune-structured:0.5", static-int8], profiles, metric and selection
    (max_accuracy_drop with its unit: 1pt absolute, '1%' relative, a bare 0.01 a fraction; objective latency, size
    or weighted) and min_fidelity (the validation floor, e.g. cosine=0.99; every failed candidate is recorded).
    Finished steps are cached under OUTPUT/.cache by a hash of their inputs: a re-run, or a run after
    a crash or kill, redoes only what is missing. Writes OUTPUT/report.json, report.md, report.html and
    recipe.yaml (the recipe as run, every option spelled out: replaying it gives the same artifacts).
    """


@click.command(name="run", help=_RUN_HELP)
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--dump-recipe", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the recipe as run (every option) here; '-' prints it.")
@click.option("--no-cache", is_flag=True, help="Recompute every step.")
@click.option("--allow-outside", is_flag=True, help="Let the recipe's output folder lie outside the recipe's folder.")
@json_option("Print the report as JSON.")
def run_cmd(recipe: Path, dump_recipe: Path | None, no_cache: bool, allow_outside: bool, as_json: bool) -> None:
    _run_recipe(recipe, dump_recipe, no_cache, as_json, allow_outside)


COMMANDS = [demo, run_cmd]  # registered on the `modelpress` group by modelpress.cli
