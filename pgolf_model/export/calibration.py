"""Calibration for GPTQ from the model itself: it samples its own sequences, and their activations give the Hessians.

After training the model generates ``num_seqs`` sequences autoregressively (first token uniform at random, temperature
0.8, a fixed seed), so quantization reads neither training nor validation data: the 2026-03-25 record's "AR
self-generated calibration" (docs/records.md, self-generated calibration; 64 x 2048 tokens there, 198 s on 8xH100).

The Hessian of a matrix ``W`` used as ``y = x W^T`` is ``H = sum(x x^T) / n`` over its ``n`` calibration input rows.
Forward pre-hooks on every ``nn.Linear`` catch those inputs (q, k and v read the same normed input, so their Hessians
are equal; a block run several times by depth recurrence adds every pass). A tied embedding is the logit matmul's
weight but no ``nn.Linear``: a model that has one says so with its ``head_input`` hook (pgolf_model.registry),
which gives the matmul's input. A model with a ``decode`` hook generates token by token from its state (the GPT's
KV cache) instead of rerunning the prefix.

Under torchrun every rank does a share of the work (``rank_batches``: batch ``b`` of ``batch_size`` sequences goes to
rank ``b % world_size``): it generates its batches, which are then all-gathered (``generate_shared``), and it
collects the Hessians' sums and row counts on its share, which are then all-reduced (``collect_hessians(...,
reduce=True)``), so every rank ends with what every other rank has (the Hessians up to float summation order).
There each batch samples from its own generator, seeded from ``(seed, b)`` (``batch_seed``), so the sequences do
not depend on the number of ranks (2 or more); one process keeps drawing every batch from one generator seeded with
``seed``, in turn, as before (the sequences, and so the GPTQ'd weights, of a one-process run stay what they were).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..runtime import Runtime, all_reduce_sum

TEMPERATURE = 0.8  # the 2026-03-25 record's sampling temperature


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch``'s own sampling generator: 64 bits of ``numpy``'s SeedSequence of ``(seed,
    batch)``, so batches draw independent streams whichever rank (and in whichever order) generates them."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1, np.uint64)[0])


def rank_batches(num_seqs: int, batch_size: int, runtime: Runtime) -> list[int]:
    """The batches (of ``batch_size`` sequences, the last one possibly shorter) that this rank works on: every
    ``world_size``-th from its rank on. Rank 0's share always holds batch 0."""
    return list(range(runtime.rank, -(-num_seqs // batch_size), runtime.world_size))


def batch_rows(batches: list[int], num_seqs: int, batch_size: int) -> Tensor:
    """The row indices of ``batches`` in a ``(num_seqs, ...)`` tensor, batch after batch."""
    rows = [torch.arange(b * batch_size, min((b + 1) * batch_size, num_seqs)) for b in batches]
    return torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)


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
    batches: list[int] | None = None,
) -> Tensor:
    """``(num_seqs, seq_len)`` int64 token ids sampled from ``model.logits`` (or its ``decode`` hook); deterministic
    for a given seed: one generator for all batches, in turn. ``batches``: generate only these batches of
    ``batch_size`` (their rows, in that order), each from its own generator (``batch_seed``).

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
    out = [torch.zeros(0, seq_len, dtype=torch.long)]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for b in range(-(-num_seqs // batch_size)) if batches is None else batches:
        if batches is not None:
            gen = torch.Generator(device="cpu").manual_seed(batch_seed(seed, b))
        n = min(batch_size, num_seqs - b * batch_size)
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


def generate_shared(
    model: nn.Module,
    num_seqs: int,
    seq_len: int,
    *,
    batch_size: int,
    seed: int,
    runtime: Runtime,
    temperature: float = TEMPERATURE,
) -> tuple[Tensor, Tensor]:
    """``generate``'s ``(num_seqs, seq_len)`` tokens, each rank generating its ``rank_batches`` and all of them
    all-gathered, on every rank; and this rank's share (its batches' rows, in order)."""
    if not runtime.distributed:
        tokens = generate(
            model, num_seqs, seq_len, batch_size=batch_size, seed=seed, temperature=temperature, runtime=runtime
        )
        return tokens, tokens
    mine = rank_batches(num_seqs, batch_size, runtime)
    share = generate(
        model, num_seqs, seq_len, batch_size=batch_size, seed=seed, temperature=temperature, runtime=runtime,
        batches=mine,
    )  # fmt: skip
    shares: list = [None] * runtime.world_size
    dist.all_gather_object(shares, (mine, share))
    tokens = torch.empty(num_seqs, seq_len, dtype=torch.long)
    for batches, rows in shares:
        tokens[batch_rows(batches, num_seqs, batch_size)] = rows
    return tokens, share


@torch.no_grad()
def collect_hessians(
    model: nn.Module, tokens: Tensor, *, batch_size: int, runtime: Runtime | None = None, reduce: bool = False
) -> dict[str, Tensor]:
    """``{weight name: H}`` (float32, on the CPU) for every ``nn.Linear`` the forward pass runs, and the logit matmul
    the model's ``head_input`` hook names.

    H is the mean of ``x x^T`` over all input rows the matrix saw (batch and sequence positions, every pass).
    ``reduce``: ``tokens`` is this rank's share (``rank_batches``); every rank must call this, and each gets the
    Hessians of all ranks' tokens together (the sums and row counts all-reduced; a rank with no rows adds zeros).
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
    if reduce and rt.distributed:
        # Rank 0's share is never empty (it holds batch 0): its matrices and widths are every rank's.
        widths = rt.broadcast({name: s.size(0) for name, s in sums.items()})
        for name, width in widths.items():
            sums.setdefault(name, torch.zeros(width, width, dtype=torch.float32, device=rt.device))
            dist.all_reduce(sums[name])
        counts = dict(zip(widths, all_reduce_sum([counts.get(name, 0) for name in widths], rt)))
    return {name: (sums[name] / counts[name]).cpu() for name in sums}
