"""Progressive context growth (PR #2014, record 2026-04-30_SP8192_CaseOps_Progressive3k_ShortDocTTT; docs/records.md):
training starts on short sequences, which are cheaper per token and teach local statistics first, and grows to the
full length in stages at fixed shares of the run (the record: 1024 to 10%, 2048 to 70%, then 3072, by wall clock).

The batch keeps its tokens; each stage only cuts it into more, shorter rows (``TrainLoader.tokens``), so every stage
is one static shape ``(device_batch_tokens / L, L)``: a run compiles ``len(seq_stages) + 1`` graphs, all during the
warm-up (``Trainer.warm_up`` cycles through the lengths) rather than on the clock. After a change the learning rate
ramps back up linearly over ``seq_rewarm_steps`` (the record: 32), as its ``growth_stage_rewarmup``.
"""

from __future__ import annotations

from ..config import TrainConfig


def lengths(cfg: TrainConfig) -> list[int]:
    """Every training length of a run, in order (one compiled shape each)."""
    return [*cfg.seq_stages, cfg.seq_len]


def seq_len_at(cfg: TrainConfig, fraction: float) -> int:
    """The training length at ``fraction`` of the run."""
    for length, end in zip(cfg.seq_stages, cfg.seq_stage_ends):
        if fraction < end:
            return length
    return cfg.seq_len


def rewarm(cfg: TrainConfig, steps_since_change: int | None) -> float:
    """The lr multiplier ``steps_since_change`` steps after a length change (None: no change yet)."""
    n = cfg.seq_rewarm_steps
    if steps_since_change is None or not n:
        return 1.0
    return min(1.0, (steps_since_change + 1) / n)
