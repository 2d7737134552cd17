"""Calibration for GPTQ from the model itself: it samples its own sequences, and their activations give the Hessians.

After training the model generates ``num_seqs`` sequences autoregressively (first token uniform at random, temperature
0.8, a fixed seed), so quantization reads neither training nor validation data: the 2026-03-25 record's "AR
self-generated calibration" (docs/records.md, self-generated calibration; 64 x 2048 tokens there, 198 s on 8xH100).

The Hessian of a matrix ``W`` used as ``y = x W^T`` is ``H = sum(x x^T) / n`` over its ``n`` calibration input rows.
Forward pre-hooks on every ``nn.Linear`` catch those inputs (q, k and v read the same normed input, so their Hessians
are equal; a block run several times by depth recurrence adds every pass). A tied embedding is the logit matmul's
weight but no ``nn.Linear``: a model that has one says so with its ``head_input`` hook (pgolf_model.registry),
which gives the matmul's input. A model with a ``decode`` hook generates token by token from its state instead of
rerunning the prefix.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..runtime import Runtime

TEMPERATURE = 0.8  # the 2026-03-25 record's sampling temperature


@torch.no_grad()
def generate(
    model: nn.Module,
    num_seqs: int,
    seq_len: int,
    *,
    batch_size: int,
    seed: int,
    temperature: float = TEMPERATURE,
    runtime: Runtime | None = None,
) -> Tensor:
    """``(num_seqs, seq_len)`` int64 token ids sampled from ``model.logits`` (or its ``decode`` hook); deterministic
    for a given seed.

    Without ``decode`` each new token reruns the prefix (no KV cache), which keeps a model free of generation code.
    """
    if num_seqs < 1 or seq_len < 1 or batch_size < 1:
        raise ValueError(
            f"calibration needs positive sizes, got {num_seqs} seqs x {seq_len} tokens, batch {batch_size}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature = {temperature}: must be positive")
    rt = runtime or Runtime(torch.device("cpu"))
    was_training = model.training
    model.eval()
    decode = getattr(model, "decode", None)
    vocab = model.logits(torch.zeros(1, 1, dtype=torch.long, device=rt.device)).size(-1)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for first in range(0, num_seqs, batch_size):
        n = min(batch_size, num_seqs - first)
        seqs = torch.randint(vocab, (n, 1), generator=gen)
        state = None
        for _ in range(seq_len - 1):
            with rt.autocast():
                if decode is not None:
                    logits, state = decode(seqs[:, -1:].to(rt.device), state)
                else:
                    logits = model.logits(seqs.to(rt.device))[:, -1]
            probs = torch.softmax(logits.float() / temperature, dim=-1).cpu().double()
            # Sampling on the CPU generator keeps the sequences identical across devices for the same logits.
            seqs = torch.cat((seqs, torch.multinomial(probs, 1, generator=gen)), dim=1)
        out.append(seqs)
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def collect_hessians(
    model: nn.Module, tokens: Tensor, *, batch_size: int, runtime: Runtime | None = None
) -> dict[str, Tensor]:
    """``{weight name: H}`` (float32, on the CPU) for every ``nn.Linear`` the forward pass runs, and the logit matmul
    the model's ``head_input`` hook names.

    H is the mean of ``x x^T`` over all input rows the matrix saw (batch and sequence positions, every pass).
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def add(name: str, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.size(-1)).float()
        if name not in sums:
            sums[name] = torch.zeros(x.size(1), x.size(1), dtype=torch.float32, device=x.device)
            counts[name] = 0
        sums[name].addmm_(x.T, x)
        counts[name] += x.size(0)

    handles = []
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name = f"{mod_name}.weight"
            handles.append(module.register_forward_pre_hook(lambda _m, args, name=name: add(name, args[0])))
    rt = runtime or Runtime(torch.device("cpu"))
    head_input = getattr(model, "head_input", None)
    was_training = model.training
    model.eval()
    try:
        for first in range(0, tokens.size(0), batch_size):
            x = tokens[first : first + batch_size].to(rt.device)
            with rt.autocast():
                if head_input is not None:
                    add(*head_input(x))
                else:
                    model.logits(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (sums[name] / counts[name]).cpu() for name in sums}
