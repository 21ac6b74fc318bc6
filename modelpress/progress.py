"""One progress display for long work (studies, fine-tuning, LoRA): rich bars on stderr, so stdout stays clean
for --json and pipes; `progress_bar(False)` yields None and callers skip their updates."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=False) as p:
        yield p
