"""Print `name==version` for every installed distribution that modelpress[dev] needs, transitively.

`python constraints/freeze.py > constraints/ci.txt.new` after a deliberate upgrade of CI's environment: `pip freeze`
would also list whatever else the machine has; this walks pyproject's requirements through the installed metadata.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _own(extras: dict[str, list[str]], names) -> list[Requirement]:
    """The requirements of modelpress's extras `names`, with its self-references (modelpress[torch]) expanded."""
    out: list[Requirement] = []
    for name in names:
        for text in extras[name]:
            req = Requirement(text)
            out += _own(extras, req.extras) if canonicalize_name(req.name) == "modelpress" else [req]
    return out


def closure(pyproject: Path, extra: str = "dev") -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    todo = [Requirement(t) for t in project["dependencies"]] + _own(project["optional-dependencies"], [extra])
    seen: set[tuple[str, tuple[str, ...]]] = set()
    found: dict[str, str] = {}
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            print(f"# not installed: {req}", file=sys.stderr)
            continue
        found[dist.metadata["Name"]] = dist.version.split("+")[0]  # 2.13.0+cpu: a constraint without the label
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(sub)
    return found


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for name, version in sorted(closure(root / "pyproject.toml").items(), key=lambda kv: canonicalize_name(kv[0])):
        print(f"{name}=={version}")
