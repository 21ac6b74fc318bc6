"""Small models built in code for the tests (factories follow modelpress's `module:factory` contract)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def tiny_cnn():
    torch.manual_seed(0)
    return TinyCNN().eval(), torch.randn(1, 1, 16, 16)


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a) + b * 2


def two_inputs():
    return TwoInputs().eval(), (torch.randn(2, 5), torch.randn(2, 5))


class NoQuantizableOps(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + 1.0


def no_quantizable_ops():
    return NoQuantizableOps().eval(), torch.randn(2, 8)


class Eigvals(nn.Module):
    """No ONNX exporter supports linalg.eigvals: a real export failure."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x).real


def eigvals():
    return Eigvals().eval(), torch.randn(2, 4, 4)


def raises():
    raise RuntimeError("weights not found")


def wrong_return():
    return 42


NOT_CALLABLE = None


class TinyTransformerBlock(nn.Module):
    """Linear layers on [batch, seq, d] inputs export as MatMul (what weight-only and INC dynamic quantize)."""

    def __init__(self, d: int = 64) -> None:
        super().__init__()
        self.up, self.down, self.norm = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.down(nn.functional.gelu(self.up(x))))


def tiny_block():
    torch.manual_seed(0)
    return TinyTransformerBlock().eval(), torch.randn(2, 8, 64)


def strict_evaluator(model_path: str) -> float:
    """An evaluator no quantized model can satisfy: 1.0 for the float model, less for anything quantized."""
    import onnx

    ops = {n.op_type for n in onnx.load(model_path, load_external_data=False).graph.node}
    return 0.5 if "QuantizeLinear" in ops or "DequantizeLinear" in ops else 1.0


class TinyTextModel(nn.Module):
    """Token ids + mask -> masked mean embedding; the sequence axis is declared dynamic like MiniLM's."""

    modelpress_dynamic_axes = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).float()
        return (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1)


def tiny_text():
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 7))
    return TinyTextModel().eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class ResidualNet(nn.Module):
    """Conv stem, a residual block (add), a depthwise conv and a concat: what structured pruning must keep
    consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1))
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.side = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(y + self.block(y))
        y = torch.cat([self.dw(y), self.side(y)], dim=1)
        return self.head(y.mean((2, 3)))


def residual_net():
    torch.manual_seed(0)
    return ResidualNet().eval(), torch.randn(1, 4, 16, 16)


def modelpress_train_data():
    """Fine-tuning data for residual_net (random, labelled): the factory-module hook."""
    import numpy as np

    from modelpress.data import Dataset

    rng = np.random.default_rng(0)
    return Dataset({"input": rng.standard_normal((64, 4, 16, 16)).astype(np.float32)}, rng.integers(0, 10, 64))


class WideCNN(nn.Module):
    """Same interface as TinyCNN ([N, 1, 16, 16] -> [N, 10]) with far more compute: a gate must call it slower."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def wide_cnn():
    torch.manual_seed(0)
    return WideCNN().eval(), torch.randn(1, 1, 16, 16)
