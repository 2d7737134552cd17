"""The 8xH100 plan of an evaluation: chunk passes, tokens processed and an estimate of the evaluation clock.

``python -m pgolf_model.evaluate ART --plan`` prints it before any scoring. The passes come from the evaluation's own
schedule (``evaluation.ttt.doc_rounds``), so they are the passes a run makes. The time is a floating-point cost
(``pass_flops``) times a rate measured on the 1.0611 record
(records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611, train_seed{0,42,1234}.log):
its phased TTT took 455.1, 508.8 and 470.0 s, of which its global SGD (the ``tttg`` lines) 69.7, 77.8 and 68.2 s;
the rest, 406 s on average, is its LoRA TTT over the 50,000 validation documents sorted into 782 batches. The same
cost model applied to the record's own schedule gives that LoRA TTT's FLOPs, hence seconds per FLOP on one H100 at
the record's efficiency (FlashAttention-3, compiled, bf16): the estimate assumes pgolf's TTT runs that fast. The
record's document lengths are reconstructed from its logs: each ``ttp: bN/782 ... dl:MIN-MAX`` line gives the
shortest and longest length of sorted batch N (213 of the 782 batches over the three logs), and lengths between are
interpolated log-linearly (49.0M tokens against the 47.9M logged, ~18.2k chunk passes where the issue counts 17.9k).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .config import Config, EvalConfig, ModelConfig
from .evaluation.scoring import windows
from .evaluation.ttt import _phase_boundaries, batch_rows, chunk_widths, doc_rounds, evaluate_ttt, find_docs
from .runtime import Runtime

CLOCK_SECONDS = 600.0  # the evaluation's 10 minutes (docs/challenge.md)
WORLD = 8
RECORD_LORA_SECONDS = (455.1 - 69.7 + 508.8 - 77.8 + 470.0 - 68.2) / 3
RECORD_SGD_SECONDS = (69.7 + 77.8 + 68.2) / 3
RECORD_SGD_TOKENS = (131 + 219 + 289) * 32_768  # its three phases' chunk counts (tttg: c1/131, c1/219, c1/289)
RECORD_DOCS, RECORD_BATCH = 50_000, 64
# (sorted batch N, shortest, longest document in tokens, BOS to next BOS inclusive) from the record's logs.
# fmt: off
RECORD_BATCH_LENGTHS = (
    3, 89, 93, 5, 96, 99, 9, 105, 107, 14, 114, 115, 15, 115, 117, 23, 126, 127, 24, 127, 128, 25, 128, 129, 32,
    135, 136, 34, 137, 138, 36, 139, 140, 44, 147, 148, 45, 148, 149, 47, 150, 151, 54, 157, 158, 56, 159, 160,
    58, 161, 162, 63, 166, 166, 66, 169, 169, 71, 173, 173, 74, 175, 176, 76, 177, 178, 82, 183, 183, 84, 184,
    185, 86, 186, 187, 94, 193, 194, 98, 197, 198, 107, 205, 206, 108, 206, 207, 116, 213, 214, 118, 215, 216,
    124, 220, 222, 130, 226, 227, 131, 227, 228, 134, 230, 231, 141, 236, 237, 143, 238, 239, 146, 241, 242, 152,
    247, 248, 154, 249, 250, 162, 256, 257, 169, 263, 264, 171, 266, 266, 173, 267, 268, 177, 271, 272, 179, 273,
    274, 184, 278, 279, 192, 286, 288, 193, 288, 289, 200, 296, 297, 203, 299, 300, 208, 304, 305, 214, 310, 312,
    222, 320, 321, 223, 321, 322, 224, 322, 323, 230, 329, 330, 231, 330, 331, 234, 334, 335, 238, 338, 340, 243,
    345, 346, 244, 346, 347, 247, 350, 351, 254, 358, 360, 255, 360, 361, 262, 369, 370, 264, 371, 372, 265, 372,
    374, 274, 384, 385, 276, 387, 388, 277, 388, 389, 283, 396, 398, 284, 398, 399, 285, 399, 400, 292, 409, 410,
    293, 410, 412, 294, 412, 414, 300, 421, 422, 303, 426, 427, 305, 429, 430, 309, 435, 437, 313, 440, 442, 316,
    445, 446, 317, 446, 448, 322, 455, 457, 324, 458, 459, 325, 459, 461, 332, 469, 471, 333, 471, 472, 340, 482,
    483, 341, 483, 485, 350, 497, 498, 352, 499, 501, 355, 504, 506, 358, 510, 512, 361, 515, 517, 363, 518, 521,
    366, 524, 525, 369, 528, 530, 371, 532, 533, 374, 537, 538, 377, 542, 544, 379, 545, 547, 382, 550, 552, 387,
    559, 561, 391, 566, 568, 396, 575, 577, 400, 582, 584, 404, 590, 592, 407, 595, 597, 410, 601, 603, 415, 611,
    613, 418, 617, 618, 423, 626, 629, 424, 629, 630, 426, 632, 634, 431, 642, 643, 432, 643, 645, 434, 647, 648,
    440, 659, 662, 442, 664, 666, 448, 677, 678, 450, 680, 682, 456, 693, 695, 459, 700, 701, 463, 708, 710, 464,
    710, 712, 470, 724, 726, 473, 730, 733, 476, 738, 740, 481, 749, 752, 484, 756, 759, 488, 766, 769, 491, 773,
    776, 492, 776, 778, 497, 788, 791, 499, 794, 796, 500, 796, 799, 505, 809, 812, 508, 817, 820, 509, 820, 823,
    513, 832, 835, 516, 841, 843, 517, 843, 846, 521, 854, 858, 523, 860, 863, 529, 878, 882, 530, 882, 884, 532,
    887, 889, 537, 902, 905, 538, 905, 909, 544, 924, 927, 545, 927, 930, 546, 930, 934, 552, 949, 952, 553, 952,
    955, 554, 955, 959, 559, 972, 975, 561, 979, 983, 562, 983, 987, 567, 1001, 1004, 569, 1007, 1010, 570, 1010,
    1014, 574, 1025, 1029, 577, 1037, 1041, 578, 1041, 1044, 581, 1052, 1056, 585, 1069, 1073, 586, 1073, 1076,
    588, 1081, 1086, 593, 1103, 1107, 594, 1107, 1110, 596, 1115, 1119, 601, 1137, 1141, 602, 1141, 1146, 603,
    1146, 1150, 609, 1172, 1177, 610, 1177, 1182, 611, 1182, 1186, 617, 1211, 1216, 618, 1216, 1221, 624, 1249,
    1255, 626, 1260, 1265, 634, 1302, 1308, 635, 1308, 1314, 640, 1337, 1343, 642, 1349, 1356, 648, 1387, 1392,
    650, 1398, 1406, 656, 1439, 1445, 657, 1445, 1452, 658, 1452, 1459, 664, 1493, 1499, 666, 1507, 1514, 672,
    1553, 1562, 675, 1578, 1586, 682, 1638, 1646, 683, 1646, 1657, 688, 1696, 1706, 689, 1706, 1715, 696, 1779,
    1790, 704, 1872, 1885, 716, 2054, 2069, 726, 2254, 2276, 728, 2306, 2324, 740, 2653, 2686, 741, 2686, 2730,
    752, 3222, 3283, 754, 3345, 3397, 766, 4521, 4680, 771, 5523, 5749, 778, 9244, 10426, 782, 30339, 97114
)
# fmt: on


@dataclass(frozen=True)
class Shape:
    """What the cost of a token depends on."""

    dim: int
    kv_dim: int
    mlp_mult: int
    layers: int  # virtual layers (depth recurrence counted)
    vocab: int
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = ()

    @classmethod
    def of(cls, m: ModelConfig, ev: EvalConfig) -> Shape:
        layers = m.num_layers + (m.num_loops * (m.loop_end - m.loop_start + 1) if m.num_loops else 0)
        lora = ev.ttt in ("lora", "phased")
        return cls(
            m.model_dim, m.num_kv_heads * m.head_dim, m.mlp_mult, layers, m.vocab_size,
            ev.lora.rank if lora else 0, ev.lora.targets if lora else (),
        )  # fmt: skip

    @property
    def matmul_params(self) -> int:
        d, kv = self.dim, self.kv_dim
        return self.layers * (2 * d * d + 2 * d * kv + 2 * self.mlp_mult * d * d) + d * self.vocab

    @property
    def lora_params(self) -> int:
        d, kv = self.dim, self.kv_dim
        outs = {"q": d, "k": kv, "v": kv, "o": d, "mlp": d}
        per_layer = sum(self.lora_rank * (d + outs[t]) for t in self.lora_targets)
        return self.layers * per_layer + (self.lora_rank * (d + self.vocab) if self.lora_rank else 0)


RECORD_SHAPE = Shape(512, 256, 4, 17, 8192, 80, ("q", "k", "v", "o", "mlp"))


def pass_flops(shape: Shape, width: int, rows: int, mode: str) -> float:
    """FLOPs of one pass of ``rows`` sequences of ``width`` tokens: ``forward``; ``lora`` (forward, backward to the
    inputs through the frozen weights, the adapters' weight gradients); ``train`` (forward and full backward)."""
    p, a = shape.matmul_params, shape.lora_params
    attn = 2.0 * shape.layers * width * width * shape.dim  # causal QK^T and AV
    if mode == "forward":
        per_row = 2.0 * (p + a) * width + attn
    elif mode == "lora":
        per_row = 4.0 * (p + a) * width + 2.0 * a * width + 3.0 * attn
    else:
        per_row = 6.0 * p * width + 3.0 * attn
    return rows * per_row


def record_lengths() -> np.ndarray:
    """The record's 50,000 validation document lengths, sorted, reconstructed from its logs (module docstring)."""
    rows = np.array(RECORD_BATCH_LENGTHS, dtype=np.int64).reshape(-1, 3)
    first = RECORD_BATCH * (rows[:, 0] - 1)
    last = np.minimum(RECORD_BATCH * rows[:, 0], RECORD_DOCS) - 1
    ranks = np.concatenate([[0], np.stack([first, last], 1).ravel()])
    lengths = np.concatenate([[2], np.stack([rows[:, 1], rows[:, 2]], 1).ravel()])
    q = np.exp(np.interp(np.arange(RECORD_DOCS), ranks, np.log(lengths)))
    return np.sort(np.maximum(2, np.round(q).astype(np.int64)))


def record_lengths_in_stream_order(seed: int = 0) -> list[int]:
    """``record_lengths`` in a seeded random order (its logs do not give the stream's order)."""
    return [int(n) for n in np.random.default_rng(seed).permutation(record_lengths())]


def _lora_batch_flops(shape: Shape, n_pred: int, chunk: int, seq_len: int, rows: int) -> float:
    widths = chunk_widths(n_pred, chunk, seq_len)  # the batch's longest document sets its passes
    return sum(pass_flops(shape, w, rows, "lora" if c < len(widths) - 1 else "forward") for c, w in enumerate(widths))


def slowest_rank(costs: list[float], world: int) -> float:
    """The slowest rank's total when ``costs`` go, in order, each to the least loaded rank (the record's shared
    queue and ``doc_rounds`` both do)."""
    load = [0.0] * world
    for c in costs:
        load[load.index(min(load))] += c
    return max(load)


def _record_seconds_per_flop() -> tuple[float, float]:
    """(LoRA TTT, global SGD) seconds per FLOP on one of the record's GPUs. Its batches are cut from the shortest
    documents (the last, longest, holds 16) and run longest first; its ranks wait for each other at the phase
    boundaries (833, 1666 and 2500 documents in that order), so its time is the sum of each phase's slowest rank."""
    lengths = record_lengths()
    batches = [lengths[k : k + RECORD_BATCH] for k in range(0, RECORD_DOCS, RECORD_BATCH)][::-1]
    phases: list[list[float]] = [[]]
    done = 0
    for batch in batches:
        phases[-1].append(_lora_batch_flops(RECORD_SHAPE, int(batch[-1]) - 1, 48, 2048, len(batch)))
        done += len(batch)
        if done >= 833 * len(phases) and len(phases) < 4:
            phases.append([])
    lora = sum(slowest_rank(costs, WORLD) for costs in phases)
    sgd = pass_flops(RECORD_SHAPE, 2048, RECORD_SGD_TOKENS // 2048, "train")
    return RECORD_LORA_SECONDS / lora, RECORD_SGD_SECONDS / (sgd / WORLD)


@dataclass(frozen=True)
class Plan:
    mode: str
    documents: int
    batches: int
    passes: int  # forward(/backward) passes of the scorer (chunk passes for lora/phased, windows otherwise)
    tokens: int  # tokens those passes process, padding rows included
    sgd_tokens: int  # tokens of SGD on all weights (full TTT's chunks or the phases' global SGD)
    score_seconds: float  # the slowest rank's scoring (and LoRA) time
    sgd_seconds: float

    @property
    def seconds(self) -> float:
        return self.score_seconds + self.sgd_seconds

    def lines(self, source: str) -> list[str]:
        out = [
            f"plan ({self.mode}) over {self.documents:,} documents of {source}, {WORLD} ranks",
            f"  scoring passes {self.passes:,} ({self.batches:,} batches), tokens processed {self.tokens:,}",
            f"  SGD on all weights: {self.sgd_tokens:,} tokens",
            f"  8xH100 estimate: {self.score_seconds:.0f} s scoring + {self.sgd_seconds:.0f} s SGD = "
            f"{self.seconds:.0f} s of the {CLOCK_SECONDS:.0f} s clock (at the 1.0611 record's rate per FLOP, "
            "calibrated on its logged 455-509 s; compile warm-up not counted, as the record's)",
        ]
        if self.seconds > CLOCK_SECONDS:
            out.append(f"WARNING: {self.seconds:.0f} s cannot finish within the {CLOCK_SECONDS:.0f} s evaluation clock")
        return out


def plan(cfg: Config, lengths: list[int], world: int = WORLD) -> Plan:
    """The plan of scoring documents of ``lengths`` (stream order, BOS to next BOS inclusive) under ``cfg.eval``."""
    ev = cfg.eval
    seq_len = ev.seq_len or cfg.train.seq_len
    shape = Shape.of(cfg.model, ev)
    lora_rate, sgd_rate = _record_seconds_per_flop()
    n_targets = sum(lengths) - len(lengths) + 1  # documents share their boundary BOS
    if ev.ttt in ("lora", "phased"):
        passes = tokens = n_batches = 0
        score = 0.0
        for r in doc_rounds(lengths, ev, seq_len, world):  # ranks wait for each other at the end of a round
            load = [0.0] * world
            for batch, rank in zip(r.batches, r.ranks):
                rows = batch_rows(len(batch))
                widths = chunk_widths(lengths[batch[0]] - 1, ev.lora.chunk_tokens, seq_len)
                passes, tokens, n_batches = passes + len(widths), tokens + rows * sum(widths), n_batches + 1
                load[rank] += _lora_batch_flops(shape, lengths[batch[0]] - 1, ev.lora.chunk_tokens, seq_len, rows)
            score += max(load) * lora_rate
        bounds = _phase_boundaries(ev, len(lengths)) if ev.ttt == "phased" else []
        sgd_tokens = sum(sum(lengths[:b]) - b + 1 for b in bounds) * ev.phased.epochs
    else:
        wins = windows(n_targets, seq_len, ev.stride or seq_len)
        passes, n_batches = len(wins), len(wins)
        tokens = sum(w.width for w in wins)
        score = sum(pass_flops(shape, w.width, 1, "forward") for w in wins) / world * lora_rate
        sgd_tokens = n_targets * ev.full.epochs if ev.ttt == "full" else 0
    sgd_seconds = pass_flops(shape, seq_len, math.ceil(sgd_tokens / seq_len), "train") / world * sgd_rate
    return Plan(ev.ttt, len(lengths), n_batches, passes, tokens, sgd_tokens, score, sgd_seconds)


def time_ttt(model, tokens: np.ndarray, byte_counts: np.ndarray, cfg: Config, *, bos_id: int, runtime: Runtime,
             docs: int = 1000) -> dict:  # fmt: skip
    """Score the first ``docs`` documents of ``tokens`` under ``cfg.eval``, timed: seconds, val_bpb and the plan's
    passes and tokens for those documents (the TTT timing of ``bench/ttt_eval.py``; ``bench/gpu.py`` may call it)."""
    found = find_docs(tokens, bos_id)[:docs]
    end = found[-1][0] + found[-1][1]
    seq_len = cfg.eval.seq_len or cfg.train.seq_len
    start = time.perf_counter()
    got = evaluate_ttt(
        model, tokens[:end], byte_counts[:end], cfg.eval, seq_len=seq_len, batch_tokens=cfg.train.device_batch_tokens,
        bos_id=bos_id, runtime=runtime,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    p = plan(cfg, [n for _, n in found], world=runtime.world_size)
    return {"docs": len(found), "seconds": seconds, "val_bpb": got.bpb, "passes": p.passes, "tokens": p.tokens}
