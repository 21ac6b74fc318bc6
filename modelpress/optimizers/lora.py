"""LoRA fine-tuning of a causal LM with `peft`, merged back into the weights so the result exports and
quantizes like any other model.

The text is real English prose that ships with Python (the pydoc topics) unless a file is given; the
last 10% of it is never trained on. QLoRA (LoRA over a 4-bit base) needs bitsandbytes' 4-bit layers,
which peft only wires up for CUDA devices; on a CPU modelpress trains LoRA over the FP32 base and
quantizes after merging (see `qlora_support`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modelpress.errors import ModelpressError


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    steps: int = 60
    seq_len: int = 128
    batch_size: int = 4
    lr: float = 5e-4
    seed: int = 0

    def validate(self) -> None:
        if self.rank < 1 or self.alpha < 1 or self.steps < 1 or self.seq_len < 8 or self.batch_size < 1:
            raise ModelpressError("LoRA needs rank, alpha, steps, batch size >= 1 and seq_len >= 8")
        if not 0 <= self.dropout < 1:
            raise ModelpressError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def qlora_support() -> tuple[bool, str]:
    """Whether LoRA over a 4-bit base can train here, and why not."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False, ("QLoRA needs bitsandbytes' 4-bit layers (not installed), and peft's prepare_model_for_kbit_training "
                       "targets CUDA; this machine has no GPU, so modelpress trains LoRA on the FP32 base and "
                       "quantizes the merged model to int4 afterwards")
    if not torch.cuda.is_available():
        return False, "bitsandbytes is installed but no CUDA device is present for its 4-bit training path"
    return True, "bitsandbytes 4-bit base with CUDA"


def _chunks(tok, text: str, seq_len: int):
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    n = (len(ids) // seq_len) * seq_len
    if n == 0:
        raise ModelpressError(f"the training text has {len(ids)} tokens, fewer than one sequence of {seq_len}")
    return ids[:n].reshape(-1, seq_len)


def lora_finetune(model, tok, text: str, settings: LoraSettings, progress: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train LoRA adapters on `text` (90%), measure held-out loss (10%) before and after, merge and return the
    plain model. Deterministic for a seed."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ModelpressError("LoRA needs peft: pip install 'modelpress[llm]'") from None
    import torch

    settings.validate()
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in settings.target_modules if t not in names]
    if missing:
        raise ModelpressError(f"LoRA target module(s) {missing} not in the model; it has e.g. "
                              f"{sorted(n for n in names if n.endswith('proj'))[:8]}")
    torch.manual_seed(settings.seed)
    data = _chunks(tok, text, settings.seq_len)
    split = max(1, len(data) // 10)
    train, held = data[:-split], data[-split:]
    if len(train) == 0:
        raise ModelpressError("the training text is too short: need at least two sequences")
    cfg = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=settings.target_modules, task_type="CAUSAL_LM", bias="none")
    peft_model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)

    def held_loss() -> float:
        peft_model.eval()
        with torch.inference_mode():
            losses = [float(peft_model(input_ids=b[None], labels=b[None]).loss) for b in held[:8]]
        return sum(losses) / len(losses)

    before = held_loss()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    task = progress.add_task("LoRA fine-tuning", total=settings.steps) if progress else None
    losses = []
    peft_model.train()
    for _ in range(settings.steps):
        batch = train[torch.randint(len(train), (settings.batch_size,), generator=g)]
        loss = peft_model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress:
            progress.advance(task)
    after = held_loss()
    merged = peft_model.merge_and_unload().eval()
    return merged, {"settings": asdict(settings), "trainable_params": trainable,
                    "train_sequences": len(train), "heldout_sequences": len(held),
                    "loss_first": losses[0], "loss_last": losses[-1],
                    "heldout_loss_before": round(before, 4), "heldout_loss_after": round(after, 4)}


def lora_and_export(source: str, output: Any, settings: LoraSettings, text: str | None = None,
                    progress: Any = None) -> tuple[Any, dict[str, Any]]:
    """The whole LoRA job: load the causal LM, fine-tune on `text` (default: the training part of the Python
    documentation prose), merge, export with a KV cache to `output` (greedy parity checked). Returns the export
    result and the provenance (LoRA report, QLoRA support)."""
    from modelpress.exporters.llm import check_output, export_loaded, load_causal_lm
    from modelpress.models.text import heldout_text

    settings.validate()
    check_output(output)
    model, tok, prov = load_causal_lm(source)
    merged, report = lora_finetune(model, tok, text if text is not None else heldout_text("train"), settings, progress)
    prov = {**prov, "lora": report, "qlora": qlora_support()[1]}
    return export_loaded(merged, tok, prov, output), prov
