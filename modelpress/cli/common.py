"""Helpers shared by the command modules: JSON or human output, --option parsing, shared option decorators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from modelpress.errors import ModelpressError


def json_option(help_text: str | None = None):
    """The `--json` flag (parameter `as_json`) every command that prints a result takes."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def emit(as_json: bool, payload: dict, human) -> None:
    """JSON on stdout for machines, or the human rendering."""
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    else:
        human()


def console():
    from rich.console import Console

    return Console()


def split_names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def path_source(source: str | None) -> Path | None:
    """A model source that is a file or folder (TorchScript, GGUF, HF folder), for the output-safety rule."""
    return Path(source) if source and Path(source).exists() else None


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
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


def step_options(pairs: tuple[str, ...], techniques: list[str]) -> list[dict[str, Any]]:
    """--option key=value (one technique) or TECHNIQUE.key=value (a chain) -> options per step."""
    per: list[dict[str, Any]] = [{} for _ in techniques]
    for key, value in parse_options(pairs).items():
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
