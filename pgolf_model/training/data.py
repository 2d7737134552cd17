"""The distributed training loader over a split's shards.

A batch is a pure function of ``(step, micro_step, rank)``: there is no iterator state, so a run resumes at any
step by asking for that step's batch, and every rank reads only its own slice of the token stream.

The unit is a *slot*: ``device_batch_tokens`` consecutive input tokens plus one for the shifted targets. Slot
``k = (step * grad_accum + micro_step) * world_size + rank``. With ``shuffle=False`` slot ``k`` is stream positions
``[k (D+1), (k+1)(D+1))``, the official baseline's order, so one process with accumulation 2 and two processes
without it read the same tokens for the same step. With ``shuffle=True`` each row of a slot is a ``seq_len + 1``
window picked by a seeded permutation of all windows, a fresh permutation per epoch.

A batch may be asked for at a shorter length than ``seq_len`` (progressive context, ``context.py``): the same slot
is cut into more, shorter rows (in shuffled order, windows of that length with their own permutations).

For a document-masked model (``model.doc_masked``) the loader also gives each batch's document bounds, found on the
host before the tokens are copied (``document_bounds``): the model would otherwise find them on the device with
``torch.nonzero``, a host sync in every forward pass.
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf_data.shards import ShardSet


class TokenStream:
    """The shards of one split as one virtual array, read by position (wrapping around at the end)."""

    def __init__(self, shards: ShardSet) -> None:
        self.parts = [shards.tokens(i) for i in range(len(shards.token_files))]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.total = int(self.starts[-1])
        if self.total < 2:
            raise ValueError(f"{shards.directory}: the {shards.split} split has {self.total} tokens, need >= 2")

    def read(self, start: int, n: int) -> np.ndarray:
        """``n`` tokens from ``start`` (taken modulo the stream length), as int64."""
        out = np.empty(n, dtype=np.int64)
        pos, filled = start % self.total, 0
        while filled < n:
            part = int(np.searchsorted(self.starts, pos, side="right")) - 1
            offset = pos - int(self.starts[part])
            take = min(n - filled, len(self.parts[part]) - offset)
            out[filled : filled + take] = self.parts[part][offset : offset + take]
            filled += take
            pos = (pos + take) % self.total
        return out


def random_windows(stream: TokenStream, num: int, length: int, seed: int) -> torch.Tensor:
    """``(num, length)`` int64 windows of ``stream`` at seeded random starts: GPTQ calibration from training tokens
    (``quant.calib_source train``; the 1.0611 record's calibration loader draws random windows of the train split)."""
    rng = np.random.default_rng([seed, length])
    starts = rng.integers(0, max(1, stream.total - length), size=num)
    return torch.from_numpy(np.stack([stream.read(int(s), length) for s in starts]))


def document_bounds(inputs: np.ndarray, bos_id: int) -> np.ndarray:
    """FlashAttention's ``cu_seqlens`` of (B, T) input rows flattened, int32: where each document starts, at each BOS
    and at each row's first token (a row may open inside a document), then ``B * T``; as ``attention.documents``
    finds them on the device."""
    starts = inputs == bos_id
    starts[:, 0] = True
    return np.append(np.flatnonzero(starts), inputs.size).astype(np.int32)


class TrainLoader:
    def __init__(
        self,
        shards: ShardSet,
        *,
        seq_len: int,
        device_batch_tokens: int,
        grad_accum: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        assert device_batch_tokens % seq_len == 0, "device_batch_tokens must be a multiple of seq_len"
        self.stream = TokenStream(shards)
        self.seq_len, self.slot_tokens = seq_len, device_batch_tokens
        self.grad_accum, self.rank, self.world_size = grad_accum, rank, world_size
        self.seed, self.shuffle, self.device = seed, shuffle, torch.device(device)
        self.num_windows = self.windows_of(seq_len)
        if shuffle and self.num_windows < 1:
            raise ValueError(f"{shards.directory}: {self.stream.total} training tokens, fewer than one window")
        self._perm: tuple[int, int, np.ndarray] | None = None

    def windows_of(self, seq_len: int) -> int:
        """How many whole windows of ``seq_len + 1`` tokens the stream has (a shorter length: progressive context)."""
        return (self.stream.total - 1) // seq_len

    def slot(self, step: int, micro_step: int) -> int:
        return (step * self.grad_accum + micro_step) * self.world_size + self.rank

    def _window(self, row: int, seq_len: int) -> int:
        n = self.windows_of(seq_len)
        epoch, i = divmod(row, n)
        if self._perm is None or self._perm[:2] != (epoch, seq_len):
            key = [self.seed, epoch] if seq_len == self.seq_len else [self.seed, epoch, seq_len]
            self._perm = (epoch, seq_len, np.random.default_rng(key).permutation(n))
        return int(self._perm[2][i])

    def tokens(self, step: int, micro_step: int, seq_len: int = 0) -> np.ndarray:
        """The slot's tokens as (rows, L + 1) for ``L = seq_len or self.seq_len`` (a divisor of the slot): inputs are
        ``[:, :-1]``, targets ``[:, 1:]``."""
        k, L = self.slot(step, micro_step), seq_len or self.seq_len
        if self.slot_tokens % L:
            raise ValueError(f"sequence length {L} does not divide device_batch_tokens {self.slot_tokens}")
        if not self.shuffle:
            flat = self.stream.read(k * (self.slot_tokens + 1), self.slot_tokens + 1)
            return np.lib.stride_tricks.sliding_window_view(flat, L + 1)[::L]
        rows = self.slot_tokens // L
        return np.stack([self.stream.read(self._window(k * rows + j, L) * L, L + 1) for j in range(rows)])

    def batch(self, step: int, micro_step: int, seq_len: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (rows, L) on the loader's device (``tokens``)."""
        rows = self._to_device(np.ascontiguousarray(self.tokens(step, micro_step, seq_len)))
        return rows[:, :-1], rows[:, 1:]

    def batch_and_documents(
        self, step: int, micro_step: int, bos_id: int, seq_len: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``batch`` and its inputs' ``document_bounds``, on the device. The bounds' length (the count of documents
        + 1) changes from batch to batch: it is marked dynamic, so one compiled graph takes every count."""
        rows = np.ascontiguousarray(self.tokens(step, micro_step, seq_len))
        bounds = self._to_device(document_bounds(rows[:, :-1], bos_id))
        torch._dynamo.mark_dynamic(bounds, 0)
        rows = self._to_device(rows)
        return rows[:, :-1], rows[:, 1:], bounds

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array)
        return t.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else t
