"""PyTorch-side techniques: they change the network itself (pruning, low-rank), so they run before export.

The same `Pass` hierarchy and registry as the ONNX passes (modelpress.optimizers.registry): each is a
`TorchPass` (input_kind "torch") with a typed dataclass config, so a chain such as `[prune-structured, static-int8]` can be
recorded in a recipe and replayed. `compress_model` applies the steps, optionally
fine-tunes once (masks stay in place while training), then makes every change
permanent; `compress_and_export` then hands the result to the verified exporter.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.optimizers.base import Pass, PassResult


def is_torch_technique(name: str) -> bool:
    """True for a registered technique that changes the PyTorch model (it runs before export)."""
    from modelpress.optimizers.registry import PASSES

    return name in PASSES and PASSES[name].input_kind == "torch"


def build_torch_pass(name: str, options: dict[str, Any] | None = None) -> "TorchPass":
    """build_pass, refusing ONNX techniques (a compress command takes PyTorch techniques only)."""
    from modelpress.optimizers.registry import PASSES, build_pass

    if name in PASSES and not is_torch_technique(name):
        known = ", ".join(sorted(n for n in PASSES if is_torch_technique(n)))
        raise ModelpressError(f"{str(name)[:60]!r} works on ONNX models, not on the PyTorch model; PyTorch "
                              f"techniques: {known}")
    return build_pass(name, options)  # type: ignore[return-value]


class TorchPass(Pass):
    """A pass over the PyTorch module (input_kind "torch"): `apply`, then `finalize` after any fine-tuning."""

    input_kind = "torch"

    def selected_layers(self, model) -> list[tuple[str, Any]]:
        """The layers this pass may touch, from its config's `exclude` and `keep_last`."""
        return select_layers(model, self.config.exclude, self.config.keep_last, self.name)


def weighted_layers(model, kinds: tuple[str, ...] = ("Linear", "Conv2d", "Conv1d")) -> list[tuple[str, Any]]:
    """(qualified name, module) of every Linear/Conv layer, in definition order."""
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ in kinds and hasattr(m, "weight")]


def select_layers(model, exclude: list[str], keep_last: bool, technique: str) -> list[tuple[str, Any]]:
    """The layers a technique may touch: all Linear/Conv layers less `exclude` and, by default, the last one
    (the classifier head: pruning it removes classes, not redundancy)."""
    layers = weighted_layers(model)
    names = {n for n, _ in layers}
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise ModelpressError(f"{technique}: exclude names unknown layer(s) {unknown}; layers are {sorted(names)}")
    if keep_last and layers:
        exclude = [*exclude, layers[-1][0]]
    chosen = [(n, m) for n, m in layers if n not in exclude]
    if not chosen:
        raise ModelpressError(f"{technique}: no layer left to compress (model has {len(layers)} Linear/Conv layers)")
    return chosen


def check_fraction(value: float | None, what: str) -> None:
    if value is not None and not 0.0 < value < 1.0:
        raise ModelpressError(f"{what} must be between 0 and 1 (exclusive), got {value}")


# --------------------------------------------------------------------------- fine-tuning


@dataclass
class FinetuneConfig:
    """A short fine-tune after compression. With labels: cross-entropy; without: distillation (MSE to the
    uncompressed model's outputs), so any unlabelled sample of real inputs is enough."""

    epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    # keep normalization layers' running statistics as trained (BatchNorm in eval mode; affine weights still
    # train): a few hundred fine-tuning samples re-estimate them badly and wreck a pretrained network
    freeze_norm_stats: bool = True

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ModelpressError("fine-tuning needs epochs >= 0, batch size >= 1 and lr > 0")


def finetune(model, teacher, data: Dataset, names: list[str], cfg: FinetuneConfig, progress: Any = None) -> dict:
    import torch
    from torch import nn

    missing = [n for n in names if n not in data.inputs]
    if missing:
        raise ModelpressError(f"fine-tuning data has no array for input(s) {missing} (it has {sorted(data.inputs)})")
    data.check_finite("fine-tuning data")  # NaN inputs would train NaN weights and fail only at export parity
    torch.manual_seed(cfg.seed)
    xs = [torch.from_numpy(data.inputs[n]) for n in names]
    y = torch.from_numpy(data.labels) if data.labels is not None else None
    labelled = y is not None and not torch.is_floating_point(y)
    if labelled:
        with torch.no_grad():
            classes = int(teacher(*[x[:1] for x in xs]).shape[-1])
        if int(y.min()) < 0 or int(y.max()) >= classes:
            raise ModelpressError(f"fine-tuning data: labels must lie in 0..{classes - 1} (the model has {classes} "
                                  f"outputs), got {int(y.min())}..{int(y.max())}")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * ((len(data) + cfg.batch_size - 1) // cfg.batch_size)
    task = progress.add_task("fine-tuning", total=steps) if progress else None
    losses: list[float] = []
    model.train()
    if cfg.freeze_norm_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(data), generator=g).split(cfg.batch_size):
            batch = [x[idx] for x in xs]
            out = model(*batch)
            out = out[0] if isinstance(out, (tuple, list)) else out
            if labelled and out.ndim == 2:
                loss = nn.functional.cross_entropy(out, y[idx])
            else:
                with torch.no_grad():
                    ref = teacher(*batch)
                    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
                loss = nn.functional.mse_loss(out, ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress:
                progress.advance(task)
    model.eval()
    return {"epochs": cfg.epochs, "steps": len(losses), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "objective": "cross-entropy" if labelled else "distillation (MSE)"}


def train_data_from_source(source: str) -> Dataset | None:
    """A factory module may offer its own fine-tuning data as `modelpress_train_data()` -> Dataset."""
    if ":" not in source:
        return None
    mod = importlib.import_module(source.partition(":")[0])
    fn = getattr(mod, "modelpress_train_data", None)
    if fn is None:
        return None
    ds = fn()
    if not isinstance(ds, Dataset):
        raise ModelpressError(f"{source.partition(':')[0]}.modelpress_train_data() must return a modelpress Dataset")
    return ds


# --------------------------------------------------------------------------- the pipeline


@dataclass
class CompressResult:
    steps: list[PassResult]
    params_before: int
    params_after: int
    nonzero_after: int
    finetune: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _counts(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return total, nonzero


def compress_model(model, example, steps: list[tuple[str, dict[str, Any]]], *, finetune_cfg: FinetuneConfig | None = None,
                   train_data: Dataset | None = None, progress: Any = None) -> tuple[Any, CompressResult]:
    """Apply PyTorch techniques in order, fine-tune once if asked, then make every change permanent."""
    from modelpress.exporters.torch_onnx import normalize_example

    passes = [build_torch_pass(n, o) for n, o in steps]  # every option checked before any work
    ft = finetune_cfg or FinetuneConfig()
    ft.validate()
    if ft.epochs and train_data is None:
        raise ModelpressError("fine-tuning needs data: pass --finetune-data FILE.npz, or define "
                              "modelpress_train_data() -> Dataset in the factory's module")
    names, tensors = normalize_example(example, None)
    params_before = sum(p.numel() for p in model.parameters())
    teacher = copy.deepcopy(model).eval() if ft.epochs else None
    results = []
    for p in passes:
        model, res = p.apply(model, tensors)
        results.append(res)
    ft_report = finetune(model, teacher, train_data, names, ft, progress) if ft.epochs else None
    for p in passes:
        p.finalize(model)
    model.eval()
    total, nonzero = _counts(model)
    return model, CompressResult(results, params_before, total, nonzero, ft_report)


def compress_and_export(source: str, output: str | Path, steps: list[tuple[str, dict[str, Any]]], *,
                        finetune_cfg: FinetuneConfig | None = None, train_data: Dataset | None = None,
                        export_config=None, progress: Any = None) -> tuple[CompressResult, Any]:
    """Factory -> compressed module -> verified ONNX at `output` (nothing written if any step fails)."""
    from modelpress.exporters.torch_onnx import export_onnx, load_model_source

    for n, o in steps:
        build_torch_pass(n, o)
    module, example = load_model_source(source)
    if finetune_cfg and finetune_cfg.epochs and train_data is None:
        train_data = train_data_from_source(source)
    module, result = compress_model(module, example, steps, finetune_cfg=finetune_cfg, train_data=train_data,
                                    progress=progress)
    exported = export_onnx(module, example, output, export_config)
    return result, exported


__all__ = ["CompressResult", "FinetuneConfig", "TorchPass", "build_torch_pass", "compress_and_export", "compress_model",
           "is_torch_technique"]
