"""Low-rank factorization: W (out x in) ~= U_r S_r V_r^T, one layer becomes two thinner ones.

A Linear becomes Linear(in, r, no bias) -> Linear(r, out); a 1x1 convolution becomes
two 1x1 convolutions. The rank is the smallest that keeps `energy` of the squared
singular values, or `rank_ratio` x min(in, out); a layer is left alone when the
factorized pair would not be smaller than the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelpress.errors import ModelpressError
from modelpress.optimizers.base import PassConfig, PassResult
from modelpress.optimizers.pytorch import TorchPass, check_fraction


@dataclass
class LowRankConfig(PassConfig):
    energy: float | None = 0.9  # keep this share of sum(sigma^2) ...
    rank_ratio: float | None = None  # ... or this share of the full rank (overrides energy)
    min_features: int = 16  # skip layers narrower than this
    exclude: list[str] = field(default_factory=list)
    keep_last: bool = True

    def validate(self) -> None:
        if self.energy is None and self.rank_ratio is None:
            raise ModelpressError("lowrank: give energy or rank_ratio")
        check_fraction(self.energy, "lowrank: energy")
        check_fraction(self.rank_ratio, "lowrank: rank_ratio")


def _set_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class LowRank(TorchPass):
    name = "lowrank"
    primary_option = "energy"
    summary = "SVD factorization of Linear and 1x1 Conv layers by energy threshold or rank ratio"
    config_cls = LowRankConfig

    def apply(self, model, example):
        import torch
        from torch import nn

        cfg: LowRankConfig = self.config
        report = []
        for name, mod in self.selected_layers(model):
            is_conv = isinstance(mod, nn.Conv2d)
            if is_conv and (mod.kernel_size != (1, 1) or mod.groups != 1 or mod.stride != (1, 1)
                            or mod.padding not in ((0, 0), "valid")):
                continue
            w = mod.weight.detach().reshape(mod.weight.shape[0], -1).float()
            out_f, in_f = w.shape
            if min(out_f, in_f) < cfg.min_features:
                continue
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            share = (s ** 2).cumsum(0) / (s ** 2).sum()
            if cfg.rank_ratio is not None:
                r = max(1, round(cfg.rank_ratio * len(s)))
            else:
                r = int((share < cfg.energy).sum()) + 1
            r = min(r, len(s))
            kept = float(share[r - 1])
            entry = {"layer": name, "type": type(mod).__name__, "shape": [out_f, in_f], "full_rank": len(s),
                     "rank": r, "energy_kept": round(kept, 4)}
            if r * (in_f + out_f) >= in_f * out_f:
                report.append({**entry, "factorized": False, "why": "the pair would not be smaller"})
                continue
            first = (s[:r].sqrt()[:, None] * vh[:r]).to(mod.weight.dtype)
            second = (u[:, :r] * s[:r].sqrt()[None, :]).to(mod.weight.dtype)
            has_bias = mod.bias is not None
            if is_conv:
                a, b = nn.Conv2d(in_f, r, 1, bias=False), nn.Conv2d(r, out_f, 1, bias=has_bias)
                a.weight.data.copy_(first[:, :, None, None])
                b.weight.data.copy_(second[:, :, None, None])
            else:
                a, b = nn.Linear(in_f, r, bias=False), nn.Linear(r, out_f, bias=has_bias)
                a.weight.data.copy_(first)
                b.weight.data.copy_(second)
            if has_bias:
                b.bias.data.copy_(mod.bias.detach())
            _set_module(model, name, nn.Sequential(a, b))
            report.append({**entry, "factorized": True, "params": f"{in_f * out_f} -> {r * (in_f + out_f)}"})
        notes = [] if any(e.get("factorized") for e in report) else \
            ["no layer was factorized: every candidate's low-rank pair would be as large as the original"]
        return model, PassResult(self.name, cfg.to_dict(), layers=report, notes=notes)
