"""A small GPT trained for a few seconds on byte-tokenized development text, for the quantization tests and bench.

Training is a plain loop over random windows (no shards, no artifact), so it takes ~7 s on one CPU thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from model_data import byte_tokenizer, encode_stream

from pgolf_model.config import Config
from pgolf_model.evaluation.scoring import score
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training.optim import Schedule, build_optimizers

CPU = Runtime(torch.device("cpu"))


@dataclass
class Trained:
    cfg: Config
    model: GPT
    val_tokens: np.ndarray
    val_bytes: np.ndarray

    def bpb(self, model: torch.nn.Module | None = None) -> float:
        seq = self.cfg.train.seq_len
        return score(
            model or self.model, self.val_tokens, self.val_bytes, seq_len=seq, batch_tokens=32 * seq, runtime=CPU
        ).bpb


def train_small(docs: list[str], *, preset_name: str = "smoke", steps: int = 300, rows: int = 16) -> Trained:
    """A ``preset_name``-shaped model (vocab 260, bytes), ``steps`` steps of ``rows`` windows; val = docs[:60]."""
    tok = byte_tokenizer()
    train, _ = encode_stream(tok, docs[100:800])
    val, val_bytes = encode_stream(tok, docs[:60])
    cfg = preset(preset_name).override({"model.vocab_size": 260})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    optimizers, schedule = build_optimizers(model, cfg.optim), Schedule(cfg.optim)
    seq, rng = cfg.train.seq_len, np.random.default_rng(0)
    for step in range(steps):
        schedule.apply(optimizers, step, steps)
        starts = rng.integers(0, len(train) - seq - 1, rows)
        xy = torch.from_numpy(np.stack([train[s : s + seq + 1] for s in starts]))
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        model(xy[:, :-1], xy[:, 1:]).backward()
        for opt in optimizers:
            opt.step()
    return Trained(cfg, model.eval(), val, val_bytes)
