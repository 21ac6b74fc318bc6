"""Release commands: package, verify, sign-keygen, gate."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelpress.cli.common import console, emit, json_option


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Bundle to write (.mpk).")
@click.option("--report", type=click.Path(path_type=Path), help="A study's report.json: its measurements go in the manifest.")
@click.option("--variant", help="Which report row is this model (default: the row with the same sha256, else the pick).")
@click.option("--recipe", type=click.Path(path_type=Path), help="The recipe that produced it (default: the report's).")
@click.option("--name", help="Bundle name (default: the output's file name).")
@click.option("--timestamp", help="Record this creation time in the manifest (off by default: bundles are reproducible).")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path),
              help="Sign the manifest with this Ed25519 private key (PEM; see `modelpress sign-keygen`).")
@click.option("--calibration", type=click.Path(file_okay=False, path_type=Path),
              help="A TensorRT calibration table folder (`modelpress calibrate`) to ship beside the model.")
@json_option("Print the manifest as JSON.")
def package(model: Path, output: Path, report: Path | None, variant: str | None, recipe: Path | None, name: str | None,
            timestamp: str | None, sign_key: Path | None, calibration: Path | None, as_json: bool) -> None:
    """Package a model as a reproducible release bundle (.mpk = tar.gz) with manifest and model card.

    The same inputs give a byte-identical bundle: fixed mtimes, owners, modes and member order, no
    timestamp unless --timestamp. With --sign KEY.pem it also holds manifest.sig, an Ed25519 signature
    over manifest.json (deterministic: still byte-identical). Check one with `modelpress verify BUNDLE`
    (add --key PUB.pem to require the signature).
    """
    from modelpress.bundle import package as make
    from modelpress.io import guard_outputs

    guard_outputs({"MODEL": model, "--report": report, "--recipe": recipe, "--sign": sign_key,
                   "--calibration": calibration}, {"-o": output})
    manifest = make(model, output, report=report, recipe=recipe, variant=variant, name=name, timestamp=timestamp,
                    sign=sign_key, calibration=calibration)
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

    emit(as_json, {**manifest, "bundle_sha256": sha}, human)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", "key", type=click.Path(path_type=Path),
              help="Require a valid signature by this Ed25519 public key (PEM).")
@click.option("--runtime", default="ort-cpu", show_default=True,
              help="Runtime the model must load on (see `modelpress list runtimes`).")
@json_option("Print the result as JSON.")
def verify(bundle: Path, key: Path | None, runtime: str, as_json: bool) -> None:
    """Verify a bundle: safe member paths, every file's sha256 and size, no missing or extra files, the
    manifest's fields and types, the model it names is a member, loads on --runtime and its I/O
    signature matches the manifest. With --key, the manifest's signature (manifest.sig) must verify
    with that public key; without it a signature is reported but not checked.

    Exit code 0 when all hold, 3 when any check fails, 2 when BUNDLE or the key cannot be read.
    """
    from modelpress.bundle import verify as check

    res = check(bundle, key=key, runtime=runtime)
    sg = res["signing"]
    signed = (f"signed by {sg['fingerprint']}, signature verified with {key}" if sg["verified"] else
              f"signed by {sg['fingerprint']} but the signature was NOT checked (pass --key PUB.pem)" if sg["signed"]
              else "not signed")
    emit(as_json, res, lambda: click.echo(f"{bundle}: OK — {len(res['files'])} files, hashes match, model loads on {runtime}, "
                                          f"I/O signature matches ({', '.join(s['name'] for s in res['signature']['inputs'])}"
                                          f" -> {', '.join(s['name'] for s in res['signature']['outputs'])}); {signed}"))


@click.command(name="sign-keygen")
@click.argument("prefix", type=click.Path(path_type=Path))
@json_option("Print the paths and fingerprint as JSON.")
def sign_keygen(prefix: Path, as_json: bool) -> None:
    """Make an Ed25519 key pair for signing bundles: PREFIX.pem (private, mode 0600) and PREFIX.pub.pem.

    Sign with `modelpress package ... --sign PREFIX.pem`; check with `modelpress verify B.mpk --key
    PREFIX.pub.pem`. Existing files are never overwritten.
    """
    from modelpress.bundle import keygen

    res = keygen(prefix)
    emit(as_json, res, lambda: click.echo(f"wrote {res['private']} (private: keep it secret) and {res['public']} "
                                          f"(give it to verifiers); fingerprint {res['fingerprint']}"))


@click.command(name="gate")
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="The model or bundle to compare with.")
@click.option("--max-latency-regression", default="5%", show_default=True, metavar="PERCENT",
              help="Allowed p50 slow-down: a percentage such as 5%, or a fraction such as 0.05 (a bare number is "
                   "always a fraction; 1 or more is refused: write 5%).")
@click.option("--max-accuracy-drop", default="0.5pt", show_default=True, metavar="BUDGET",
              help="Allowed top-1 drop: 0.5pt (percentage points), or 1% (relative: 1% of the baseline's top-1). "
                   "A bare number is points (0.5 = 0.5pt).")
@click.option("-p", "--preset", default="edge-1core", show_default=True, help="Edge profile to measure under.")
@click.option("--rounds", default=5, show_default=True, type=int, help="Interleaved rounds (1 to 100).")
@click.option("-n", "--iterations", default=200, show_default=True, type=int, help="Timed runs per round (>= 1).")
@click.option("--data", "data_file", type=click.Path(path_type=Path),
              help="Labelled data (.npz) to measure accuracy; default: the bundles' recorded accuracy.")
@click.option("--runtime", default="ort-cpu", show_default=True,
              help="Runtime both models are profiled and evaluated on (see `modelpress list runtimes`).")
@click.option("--target", help="Measure the latency rounds on a device running `modelpress agent serve`: a URL or a "
                               "name in the targets file (accuracy is still measured here).")
@click.option("--targets", "targets_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Targets file for --target NAME [default: ./targets.yaml].")
@json_option("Print the verdict as JSON.")
def gate_cmd(new: Path, baseline: Path, max_latency_regression: str, max_accuracy_drop: str, preset: str,
             rounds: int, iterations: int, data_file: Path | None, runtime: str, target: str | None,
             targets_file: Path | None, as_json: bool) -> None:
    """Fail (exit 5) when NEW is slower or less accurate than BASELINE beyond the limits.

    Both are profiled on this machine, interleaved round by round in fresh pinned processes, so drift
    cancels; latency change is the median of the per-round ratios. NEW and BASELINE are .onnx files or
    .mpk bundles (verified first). Accuracy comes from --data, else the bundles' recorded metrics.

    \b
    Units (the verdict states them; --json has them under "limits"):
      --max-latency-regression  5% or 0.05 (fraction); 5 alone is refused (500%? 5%?)
      --max-accuracy-drop       0.5pt = 0.5 points of top-1 (a bare 0.5 means the same);
                                1% = 1% of the baseline's own top-1 (0.9 pt at 90%)

    Exit codes: 0 pass, 5 regression, 2 bad input (a limit without a readable unit, a missing file,
    different I/O signatures), 3 a bundle fails verification.
    """
    from modelpress.errors import EXIT_REGRESSION
    from modelpress.gate import gate

    remote = None
    if target:  # the rounds run as one job on the device's agent
        from modelpress.agent.client import RemoteRounds

        remote = RemoteRounds(target, targets_file, on_status=lambda m: click.echo(m, err=True))
    res = gate(new, baseline, max_latency_regression=max_latency_regression, max_accuracy_drop=max_accuracy_drop,
               profile=preset, rounds=rounds, iterations=iterations, data_file=data_file, runtime=runtime,
               remote=remote)

    def human() -> None:
        from rich.table import Table

        t = Table(title=f"gate on {res.profile} ({res.runtime}): {res.rounds} interleaved rounds", title_justify="left")
        for c in ("", "baseline", "new", "change", "limit"):
            t.add_column(c, justify="right")
        t.add_row("p50 ms", f"{res.baseline_p50_ms:.3f}", f"{res.new_p50_ms:.3f}", f"{res.latency_change:+.1%}",
                  f"+{res.max_latency_regression:.1%}")
        fmt = lambda a: "-" if a is None else f"{a * 100:.2f}%"  # noqa: E731
        stated = res.limits["max_accuracy_drop"]
        limit = (f"-{res.max_accuracy_drop_pt:.2f} pt" if stated.endswith("pt") else
                 f"-{stated} of baseline" + ("" if res.max_accuracy_drop_pt is None else
                                             f" = -{res.max_accuracy_drop_pt:.2f} pt"))
        t.add_row("top-1", fmt(res.baseline_accuracy), fmt(res.new_accuracy),
                  "-" if res.accuracy_drop_pt is None else f"{-res.accuracy_drop_pt:+.2f} pt", limit)
        console().print(t)
        if res.target:
            from modelpress.agent.client import describe_remote

            click.echo(describe_remote(res.target).splitlines()[0])
        click.echo(f"accuracy: {res.accuracy_source}")
        click.echo("PASS" if res.passed else "FAIL: " + "; ".join(res.reasons))

    emit(as_json, res.to_dict(), human)
    if not res.passed:
        sys.exit(EXIT_REGRESSION)


COMMANDS = [package, verify, sign_keygen, gate_cmd]  # registered on the `modelpress` group by modelpress.cli
