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


def _load_recipe(recipe: Path, dump_recipe: Path | None, allow_outside: bool) -> object:
    """A recipe, checked, with the output-safety rule applied to its inputs and outputs before any work."""
    from modelpress.io import guard_outputs
    from modelpress.study import load_study_recipe
    from modelpress.study.auto import possible_names
    from modelpress.study.plan import model_file

    rec = load_study_recipe(recipe, allow_outside=allow_outside)
    study = Path(rec.output)  # OUTPUT/recipe.yaml is left out: replaying it rewrites it with the same recipe
    files = [model_file(n) for c in rec.candidates for n in possible_names(c["name"], c["chain"])]
    guard_outputs({"RECIPE": recipe, "model": rec.model, **{f"data.{k}": v for k, v in rec.data.items()},
                   "source": path_source(rec.source)},
                  {"--dump-recipe": dump_recipe,
                   **{f"the study's {n}": study / n for n in ("report.json", "report.md", "report.html")},
                   **{f"the study's {f}": study / f for f in files}},
                  out_dirs={"the study's output": study})
    return rec


def _run_recipes(recipes: tuple[Path, ...], dump_recipe: Path | None, no_cache: bool, as_json: bool,
                 allow_outside: bool = False, executor: str = "local", ray_address: str | None = None) -> None:
    from modelpress.benchmarks.report import render_rich
    from modelpress.errors import CheckFailed, ModelpressError
    from modelpress.study import run_studies
    from modelpress.study.executors import get_executor

    if ray_address and executor != "ray":
        raise ModelpressError("--ray-address needs --executor ray")
    if dump_recipe is not None and len(recipes) > 1:
        raise ModelpressError("--dump-recipe takes one RECIPE (each study writes its own OUTPUT/recipe.yaml)")
    recs = [_load_recipe(r, dump_recipe, allow_outside) for r in recipes]
    outs: dict[Path, Path] = {}
    for path, rec in zip(recipes, recs):  # two studies writing one folder would overwrite each other's models
        out = Path(rec.output).resolve()
        if out in outs:
            raise ModelpressError(f"{path} and {outs[out]} write the same output folder {rec.output}")
        outs[out] = path
    with get_executor(executor, **({"address": ray_address} if ray_address else {})) as ex:
        results = run_studies(recs, executor=ex, show_progress=not as_json, use_cache=not no_cache)
    if len(recs) == 1 and isinstance(results[0], BaseException):
        raise results[0]  # one study: its error as it was
    reports = [(p, Path(rec.output), r) for p, rec, r in zip(recipes, recs, results)  # type: ignore[attr-defined]
               if not isinstance(r, BaseException)]
    failed = [(p, r) for p, r in zip(recipes, results) if isinstance(r, BaseException)]
    if dump_recipe is not None and reports:  # the same text as OUTPUT/recipe.yaml
        if str(dump_recipe) == "-":
            click.echo(reports[0][2]["recipe"], err=as_json)
        else:
            from modelpress.io import write_text

            write_text(dump_recipe, reports[0][2]["recipe"])

    def human() -> None:
        con = console()
        for path, out, report in reports:
            if len(recs) > 1:
                con.rule(str(path))
            _show(con, report, render_rich, out)
        for path, e in failed:
            con.print(f"[red]{path}: failed: {' '.join(str(e).split())}[/red]")

    if len(recs) == 1:
        emit(as_json, reports[0][2], human)
    else:
        emit(as_json, {"studies": [{"recipe": str(p), **({"error": " ".join(str(r).split())} if isinstance(
            r, BaseException) else {"report": r})} for p, r in zip(recipes, results)]}, human)  # type: ignore
    if failed:
        bug = next((e for _, e in failed if not isinstance(e, ModelpressError)), None)
        if bug is not None:
            raise bug
        text = f"{len(failed)} of {len(recs)} studies failed: " + "; ".join(
            f"{p}: {' '.join(str(e).split())}" for p, e in failed)
        raise (CheckFailed if all(isinstance(e, CheckFailed) for _, e in failed) else ModelpressError)(text)


def _show(con: object, report: dict, render_rich: object, out: Path) -> None:
    con.print(render_rich(report))  # type: ignore[attr-defined,operator]
    for prof, names in report["pareto"].items():
        con.print(f"Pareto front on {prof}: {', '.join(names)}")  # type: ignore[attr-defined]
    ex = report.get("executor")
    if ex:
        hosts = sorted({n["host"] for n in ex["nodes"].values()})
        con.print(f"ran on Ray ({ex['address']}): {len(ex['nodes'])} node(s): {', '.join(hosts)}")  # type: ignore
    c = report["cache"]
    cached = f"; cache: {c['hits']} reused, {c['misses']} computed" if c else ""
    con.print(f"wrote {out}/report.json, report.md, report.html and recipe.yaml{cached}")  # type: ignore[attr-defined]


_RUN_HELP = """Run study recipes: every candidate chain, evaluated and profiled on every target, then the pick.

    \b
    RECIPE is YAML (see `modelpress.study.recipe` or the README): source/model, data, candidates such as
    [graph, static-int8], ["prune-structured:0.5", static-int8] or [auto] (optimize -t auto's candidates for this
    CPU, named auto/..., and the report says which one -t auto would pick), profiles, metric and selection
    (max_accuracy_drop with its unit: 1pt absolute, '1%' relative, a bare 0.01 a fraction; objective latency, size
    or weighted) and min_fidelity (the validation floor, e.g. cosine=0.99; every failed candidate is recorded).
    Finished steps are cached under OUTPUT/.cache by a hash of their inputs: a re-run, or a run after
    a crash or kill, redoes only what is missing. Writes OUTPUT/report.json, report.md, report.html and
    recipe.yaml (the recipe as run, every option spelled out: replaying it gives the same artifacts).

    \b
    Several RECIPEs run with one progress view. --executor ray runs every build, evaluation and timing as a
    Ray task (pip install 'modelpress[ray]'): on the cluster at --ray-address or RAY_ADDRESS, else on a local
    Ray instance started and stopped here; studies then run side by side, timings one per node at a time.
    """


@click.command(name="run", help=_RUN_HELP)
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the work runs: this process, or Ray tasks.")
@click.option("--ray-address", metavar="ADDR",
              help="A Ray cluster (ray://HOST:PORT or HOST:PORT; default RAY_ADDRESS; none: a local instance).")
@click.option("--dump-recipe", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the recipe as run (every option) here; '-' prints it.")
@click.option("--no-cache", is_flag=True, help="Recompute every step.")
@click.option("--allow-outside", is_flag=True, help="Let the recipe's output folder lie outside the recipe's folder.")
@json_option("Print the report as JSON (several RECIPEs: {studies: [{recipe, report | error}]}).")
def run_cmd(recipes: tuple[Path, ...], executor: str, ray_address: str | None, dump_recipe: Path | None,
            no_cache: bool, allow_outside: bool, as_json: bool) -> None:
    _run_recipes(recipes, dump_recipe, no_cache, as_json, allow_outside, executor, ray_address)


COMMANDS = [demo, run_cmd]  # registered on the `modelpress` group by modelpress.cli
