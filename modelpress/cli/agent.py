"""`modelpress agent`: run the profiling agent on a device (serve), or ask one what it is (info)."""

from __future__ import annotations

from pathlib import Path

import click

from modelpress.cli.common import emit, json_option


@click.group()
def agent() -> None:
    """Profile on the real device: run `agent serve` there, then `modelpress profile M.onnx --target URL|NAME` here.

    \b
    On the board (Python 3.10+, ARM or x86 Linux; no GPU needed):
      pip install 'modelpress[agent]'
      modelpress agent serve                  # 127.0.0.1:8765; token in ~/.cache/modelpress-agent/token
    Here, through an SSH tunnel:
      ssh -N -L 8765:127.0.0.1:8765 pi@board &
      export MODELPRESS_AGENT_TOKEN=...       # the content of the board's token file
      modelpress profile m.onnx -p edge-4core --target http://127.0.0.1:8765
    """


@agent.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens it to the network (then give --tls-cert/--tls-key).")
@click.option("--port", default=8765, show_default=True, type=int, help="Port; 0 picks a free one (printed).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Bearer token file, created 0600 with a new token when missing [default: STATE_DIR/token].")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where models and data are kept [default: ~/.cache/modelpress-agent].")
@click.option("--max-upload-mb", default=512.0, show_default=True, type=float, help="Largest model or data upload.")
@click.option("--ttl-s", default=3600.0, show_default=True, type=float,
              help="Delete a model or data file unused for this many seconds.")
@click.option("--queue", default=2, show_default=True, type=int,
              help="Jobs that may wait behind the running one; more are refused as busy (HTTP 429).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="The certificate's private key (PEM).")
def serve(host: str, port: int, token_file: Path | None, state_dir: Path | None, max_upload_mb: float, ttl_s: float,
          queue: int, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve profiling jobs on this machine: one at a time, with the same profiler as `modelpress profile`.

    Every request needs the bearer token (compared in constant time). Models and data are stored by their
    verified sha256 (a model already here is not sent again) and deleted --ttl-s seconds after last use.
    Stops on Ctrl-C or SIGTERM.
    """
    from modelpress.agent.server import AgentConfig, serve as run_server
    from modelpress.agent.store import default_state_dir

    run_server(AgentConfig(host=host, port=port, token_file=token_file, state_dir=state_dir or default_state_dir(),
                           max_upload_mb=max_upload_mb, ttl_s=ttl_s, queue=queue, tls_cert=tls_cert, tls_key=tls_key))


@agent.command()
@click.option("--target", required=True, help="The agent: a URL (token from MODELPRESS_AGENT_TOKEN) or a name in targets.yaml.")
@click.option("--targets", "targets_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Targets file [default: ./targets.yaml].")
@json_option("Print the agent's answer as JSON.")
def info(target: str, targets_file: Path | None, as_json: bool) -> None:
    """Check that an agent answers and the token works; show its device facts and limits."""
    from modelpress.agent.client import AgentClient
    from modelpress.agent.targets import resolve_target

    res = AgentClient(resolve_target(target, targets_file)).info()

    def human() -> None:
        d, lim, jobs = res.get("device", {}), res.get("limits", {}), res.get("jobs", {})
        mem = (d.get("memory") or {}).get("total_mb")
        click.echo(f"{target}: {d.get('cpu')} ({d.get('arch')}), {d.get('usable_cores')} usable cores, "
                   f"{mem and f'{mem / 1024:.1f} GiB' or '? GiB'}, {d.get('os')}; python {d.get('python')}, "
                   f"onnxruntime {d.get('onnxruntime')}, openvino {d.get('openvino') or 'not installed'}")
        click.echo(f"  ISA: {', '.join(d.get('isa') or []) or 'none of the listed'}")
        energy = d.get("energy") or {}
        how = energy.get("source") if energy.get("available") else f"not available — {energy.get('reason')}"
        click.echo(f"  energy: {how}")
        click.echo(f"  limits: uploads up to {lim.get('max_upload_bytes', 0) / 1e6:g} MB, queue {lim.get('queue')}, "
                   f"models kept {lim.get('ttl_s')} s; jobs running {jobs.get('running')}, queued {jobs.get('queued')}")

    emit(as_json, res, human)


COMMANDS = [agent]  # registered on the `modelpress` group by modelpress.cli
