"""Pruning: unstructured magnitude, N:M (2:4) and structured channel removal.

Why not Intel Neural Compressor: INC 3.x has no pruning API any more, and its last
2.x release (which had one) needs onnx<1.17 and cannot share an environment with
the rest of this stack; INC is used for quantization only. Unstructured and N:M
masks go through `torch.nn.utils.prune` (torch's own masking, which keeps masks
fixed during fine-tuning); channel removal uses `torch-pruning`, whose dependency
graph keeps residual, concat and depthwise layers consistent.

Unstructured and N:M sparsity leave the exported ONNX dense: same size, same
FLOPs, same latency on CPU runtimes without sparse kernels. Structured pruning
removes channels, so the graph really shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from modelpress.errors import ModelpressError
from modelpress.optimizers.base import PassConfig, PassResult
from modelpress.optimizers.pytorch import TorchPass, check_fraction, weighted_layers


def _sparsity(t) -> float:
    return float((t == 0).sum()) / max(1, t.numel())


def _remove_masks(model) -> None:
    from torch.nn.utils import prune

    for _, m in weighted_layers(model):
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")


def _mask_report(layers) -> list[dict]:
    return [{"layer": n, "type": type(m).__name__, "shape": list(m.weight.shape), "params": m.weight.numel(),
             "sparsity": round(_sparsity(m.weight), 4)} for n, m in layers]


@dataclass
class UnstructuredConfig(PassConfig):
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"  # global: one threshold over all layers; layer: each its own share
    exclude: list[str] = field(default_factory=list)
    keep_last: bool = True

    def validate(self) -> None:
        check_fraction(self.sparsity, "prune-unstructured: sparsity")


class _MaskPrune(TorchPass):
    """Pruning by torch.nn.utils.prune masks: they stay through fine-tuning and are folded in at the end."""

    def finalize(self, model) -> None:
        _remove_masks(model)


class UnstructuredPrune(_MaskPrune):
    name = "prune-unstructured"
    primary_option = "sparsity"
    summary = "magnitude pruning of single weights (torch.nn.utils.prune); the ONNX stays dense"
    config_cls = UnstructuredConfig

    def apply(self, model, example):
        from torch.nn.utils import prune

        cfg: UnstructuredConfig = self.config
        layers = self.selected_layers(model)
        if cfg.scope == "global":
            prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                      amount=cfg.sparsity)
        else:
            for _, m in layers:
                prune.l1_unstructured(m, "weight", amount=cfg.sparsity)
        total = sum(m.weight.numel() for _, m in layers)
        zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
        return model, PassResult(self.name, cfg.to_dict(), layers=_mask_report(layers),
                                 notes=[f"{zeros / total:.1%} of the pruned layers' weights are zero; the exported "
                                        "ONNX is dense (same size and FLOPs), so only compressed size can drop"])


@dataclass
class NMConfig(PassConfig):
    n: int = 2  # zeros per group ...
    m: int = 4  # ... of this many consecutive input weights (2:4 = NVIDIA's sparse tensor core pattern)
    exclude: list[str] = field(default_factory=list)
    keep_last: bool = True
    skip_incompatible: bool = False  # leave out (and list) layers the pattern cannot fit, instead of failing

    def validate(self) -> None:
        if not 0 < self.n < self.m:
            raise ModelpressError(f"prune-nm: need 0 < n < m, got {self.n}:{self.m}")


def nm_mask(weight, n: int, m: int):
    """Keep the (m - n) largest-magnitude weights in every group of m consecutive input channels."""
    import torch

    w = weight.detach()
    # groups run along the input dimension: dim 1 of Linear [out, in] and of Conv [out, in, kh, kw] (per tap)
    moved = w.movedim(1, -1) if w.ndim > 2 else w
    groups = moved.abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(m - n, dim=1).indices, True)
    mask = keep.reshape(moved.shape)
    return (mask.movedim(-1, 1) if w.ndim > 2 else mask).to(w.dtype)


class NMPrune(_MaskPrune):
    name = "prune-nm"
    summary = "N:M semi-structured sparsity (default 2:4) via torch.nn.utils.prune masks; the ONNX stays dense"
    config_cls = NMConfig

    def apply(self, model, example):
        from torch.nn.utils import prune

        cfg: NMConfig = self.config
        layers, skipped = [], []
        for name, mod in self.selected_layers(model):
            fan_in = mod.weight.shape[1]
            if getattr(mod, "groups", 1) != 1 or fan_in % cfg.m:
                why = "a grouped convolution" if getattr(mod, "groups", 1) != 1 else \
                    f"{fan_in} input channel(s), not divisible by {cfg.m}"
                if not cfg.skip_incompatible:
                    raise ModelpressError(f"prune-nm: the {cfg.n}:{cfg.m} pattern does not fit layer {name!r} "
                                          f"({type(mod).__name__}, {why}); leave it out with --exclude {name} "
                                          "(or --option skip_incompatible=true for every such layer)")
                skipped.append(name)
                continue
            layers.append((name, mod))
        if not layers:
            raise ModelpressError(f"prune-nm: the {cfg.n}:{cfg.m} pattern fits none of the selected layers")
        for _, mod in layers:
            prune.custom_from_mask(mod, "weight", nm_mask(mod.weight, cfg.n, cfg.m))
        notes = [f"{cfg.n}:{cfg.m} sparsity: {cfg.n} of every {cfg.m} weights are zero; "
                 "CPU ONNX Runtime has no N:M kernels, so the gain needs sparse tensor cores"]
        if skipped:
            notes.append(f"left dense ({len(skipped)} layers the pattern cannot fit): {', '.join(skipped)}")
        return model, PassResult(self.name, cfg.to_dict(), layers=_mask_report(layers), notes=notes)


@dataclass
class StructuredConfig(PassConfig):
    sparsity: float = 0.5  # share of each layer's output channels removed
    importance: Literal["l1", "l2", "taylor"] = "l2"
    round_to: int = 1  # keep channel counts multiples of this (8 suits SIMD kernels)
    exclude: list[str] = field(default_factory=list)
    keep_last: bool = True

    def validate(self) -> None:
        check_fraction(self.sparsity, "prune-structured: sparsity")
        if self.round_to < 1:
            raise ModelpressError("prune-structured: round_to must be >= 1")


class StructuredPrune(TorchPass):
    name = "prune-structured"
    primary_option = "sparsity"
    summary = "remove whole channels, dependency-aware (torch-pruning): a smaller, faster dense graph"
    config_cls = StructuredConfig

    def apply(self, model, example):
        try:
            import torch_pruning as tp
        except ImportError:
            raise ModelpressError("prune-structured needs torch-pruning: pip install 'modelpress[prune]'") from None
        import torch

        cfg: StructuredConfig = self.config
        chosen = {id(m) for _, m in self.selected_layers(model)}
        before = {n: (type(m).__name__, list(m.weight.shape)) for n, m in weighted_layers(model)}
        ignored = [m for _, m in weighted_layers(model) if id(m) not in chosen]
        importance = {"l1": tp.importance.GroupMagnitudeImportance(p=1),
                      "l2": tp.importance.GroupMagnitudeImportance(p=2),
                      "taylor": tp.importance.GroupTaylorImportance()}[cfg.importance]
        try:
            pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=cfg.sparsity,
                                          ignored_layers=ignored, round_to=cfg.round_to)
            if cfg.importance == "taylor":  # Taylor importance needs gradients: one backward pass on the example
                out = model(*example)
                (out[0] if isinstance(out, (tuple, list)) else out).float().pow(2).mean().backward()
            pruner.step()
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                model.eval()(*example)
        except ModelpressError:
            raise
        except Exception as e:
            raise ModelpressError(f"prune-structured: torch-pruning cannot prune this model: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}") from None
        layers = []
        for n, m in weighted_layers(model):
            kind, shape = before.get(n, (type(m).__name__, None))
            if shape is None:
                continue
            layers.append({"layer": n, "type": kind, "shape_before": shape, "shape": list(m.weight.shape),
                           "out_channels": f"{shape[0]} -> {m.weight.shape[0]}"})
        return model, PassResult(self.name, cfg.to_dict(), layers=layers)
