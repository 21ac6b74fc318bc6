"""The `modelpress` command: a thin click layer over the library.

Every error a user can cause prints one line on stderr and exits with a
documented code (modelpress.errors); tracebacks appear only with --debug.

The group and the entry point live here; the commands live in one module per command group
(model, data, study, release, compress, llm) and are registered below; common holds the shared helpers.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from modelpress import __version__
from modelpress._deps import missing_dependency
from modelpress.cli import agent, compress, data, llm, model, release, study, trt
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
        except BrokenPipeError:  # `modelpress list techniques | head`: the reader left; nothing is wrong
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except Exception as e:  # a bug: say so in one line, show the traceback on request
            if ctx.obj and ctx.obj.get("debug"):
                raise
            missing = missing_dependency(e, ctx.invoked_subcommand or "")  # torch & co. are optional (extras)
            if missing is not None:
                click.echo(f"modelpress: error: {missing}", err=True)
                ctx.exit(missing.exit_code)
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
    Exit codes: 0 ok, 1 internal error, 2 bad input, 3 a check failed (parity, bundle verification,
    an invalid artifact), 4 an accuracy goal was not met (inc-tune), 5 `gate` found a regression,
    6 below the fidelity floor (--min-fidelity), 143 terminated by SIGTERM.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _command in (*model.COMMANDS, *data.COMMANDS, *study.COMMANDS, *release.COMMANDS, *compress.COMMANDS,
                 *llm.COMMANDS, *agent.COMMANDS,
                 *trt.COMMANDS):
    cli.add_command(_command)
cli.add_command(study.run_cmd, name="study")  # `modelpress study RECIPE`: the same command under its study name


def main() -> None:
    """The `modelpress` entry point (pyproject's [project.scripts] and `python -m modelpress`)."""
    from modelpress.io import Terminated, install_signal_handlers

    install_signal_handlers()  # SIGTERM/SIGHUP unwind like Ctrl-C: every temp file is removed on the way out
    try:
        rc = cli.main(prog_name="modelpress", standalone_mode=False)
    except click.ClickException as e:  # usage errors too: one line, like every other error, exit 2
        where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
        click.echo(f"modelpress: error: {' '.join(e.format_message().split())}{where}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("modelpress: interrupted", err=True)
        sys.exit(130)
    except Terminated as e:
        click.echo(f"modelpress: terminated by {e.signame}", err=True)
        sys.exit(e.code)
    except SystemExit as e:
        sys.exit(e.code if e.code is not None else 0)
    sys.exit(rc if isinstance(rc, int) else 0)
