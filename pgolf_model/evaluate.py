"""Exact bits per byte on the validation split, distributed, from a model or from an artifact alone.

BPB = (sum over scored targets of NLL in nats) / ln 2 / (sum over the same targets of their bytes). The scored
targets are positions 1..N-1 of the validation stream (or of a prefix); the stream is cut into non-overlapping
windows of ``seq_len`` (the last one shorter), so every target is scored exactly once, and the windows are split
across ranks.

Two byte counts (DESIGN.md section 3):
- ``exact``: the byte sidecar, i.e. the UTF-8 bytes of the original document text each token accounts for;
- ``official``: the challenge scorer's per-piece formula for SentencePiece vocabularies: a normal piece counts the
  UTF-8 length of its text with a leading ``▁`` counted as one byte unless the previous token is a control token
  (BOS), a byte-fallback piece counts 1, control/unknown/unused pieces 0.

How the stream is scored is the ``eval`` section of the config (the artifact's own unless flags say otherwise):
sliding windows with ``--stride`` (``sliding.py``) and score-first test-time training with ``--ttt full|lora|phased``
(``ttt.py``, on a copy of the model), every ``eval.*`` field a flag.

Usage: ``python -m pgolf_model.evaluate RUN/model.pga --data DIR [--val-tokens N] [--bytes official] [--stride 64]
[--ttt lora --eval.lora_batch_docs 16]``, also under ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf_data.shards import ShardSet

from . import artifact, runtime
from .config import Config, add_section_arguments
from .runtime import Runtime, all_reduce_sum


@dataclass(frozen=True)
class BPBResult:
    nll_nats: float  # summed over scored targets
    tokens: int
    bytes: int

    @property
    def loss(self) -> float:
        return self.nll_nats / self.tokens

    @property
    def bpb(self) -> float:
        return self.nll_nats / math.log(2) / self.bytes

    def to_dict(self) -> dict:
        return {"val_loss": self.loss, "val_bpb": self.bpb, "val_tokens": self.tokens, "val_bytes": self.bytes}


def load_val(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The validation tokens (int64) and their sidecar byte counts (None when the shards have no sidecars)."""
    shards = ShardSet.open(data_dir, "val")
    n = shards.num_tokens
    tokens = shards.read(0, n).astype(np.int64)
    return tokens, (shards.read(0, n, sidecar=True).astype(np.int64) if shards.has_bytes else None)


def official_byte_tables(sp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(base_bytes, has_leading_space, is_boundary)`` per id from a ``sentencepiece.SentencePieceProcessor``."""
    n = sp.vocab_size()
    base = np.zeros(n, dtype=np.int64)
    leading = np.zeros(n, dtype=bool)
    boundary = np.ones(n, dtype=bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("▁"):
            leading[i], piece = True, piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, leading, boundary


def official_byte_counts(tokens: np.ndarray, tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Bytes of each position's token as a target (position 0 has no predecessor and gets 0)."""
    base, leading, boundary = tables
    if tokens.size and tokens.max() >= len(base):
        raise ValueError(f"token id {int(tokens.max())} is outside the tokenizer's {len(base)} pieces")
    counts = np.zeros(tokens.size, dtype=np.int64)
    tgt, prev = tokens[1:], tokens[:-1]
    counts[1:] = base[tgt] + (leading[tgt] & ~boundary[prev])
    return counts


def sentencepiece_processor(tokenizer):
    """The SentencePiece model of a pgolf tokenizer, for the official byte formula."""
    import sentencepiece as spm

    if not hasattr(tokenizer, "model_proto"):
        raise ValueError(
            f"the official byte formula needs a SentencePiece tokenizer; this one is of kind {tokenizer.kind!r}"
        )
    return spm.SentencePieceProcessor(model_proto=tokenizer.model_proto())


@torch.no_grad()
def score(
    model,
    tokens: np.ndarray,
    byte_counts: np.ndarray,
    *,
    seq_len: int,
    batch_tokens: int,
    runtime: Runtime,
    val_tokens: int = 0,
) -> BPBResult:
    """Score targets 1..N-1 of ``tokens`` (or the first ``val_tokens`` of them) with ``model(x, y, "none")``."""
    if len(byte_counts) != len(tokens):
        raise ValueError(f"{len(byte_counts)} byte counts for {len(tokens)} tokens")
    if val_tokens:
        tokens, byte_counts = tokens[: val_tokens + 1], byte_counts[: val_tokens + 1]
    n_targets = len(tokens) - 1
    if n_targets < 1:
        raise ValueError("the validation split has fewer than 2 tokens")
    n_windows = -(-n_targets // seq_len)
    first = n_windows * runtime.rank // runtime.world_size
    last = n_windows * (runtime.rank + 1) // runtime.world_size
    rows = max(1, batch_tokens // seq_len)
    was_training = model.training
    model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=runtime.device)
    n_full, w = n_targets // seq_len, first
    while w < last:
        if w < n_full:  # full windows in batches of ``rows``
            n, width = min(rows, min(last, n_full) - w), seq_len
        else:  # the stream's shorter last window, alone
            n, width = 1, n_targets - w * seq_len
        span = torch.from_numpy(tokens[w * seq_len : w * seq_len + n * width + 1]).to(runtime.device)
        x, y = span[:-1].view(n, width), span[1:].view(n, width)
        with runtime.autocast():
            nll += model(x, y, reduction="none").double().sum()
        w += n
    lo, hi = first * seq_len + 1, min(last * seq_len, n_targets) + 1  # this rank's target positions
    local_tokens, local_bytes = max(0, hi - lo), int(byte_counts[lo:hi].sum()) if hi > lo else 0
    total_nll, total_tokens, total_bytes = all_reduce_sum([nll.item(), local_tokens, local_bytes], runtime)
    model.train(was_training)
    if total_bytes <= 0:
        raise ValueError("the scored validation targets account for 0 bytes; are the sidecars empty?")
    return BPBResult(total_nll, int(total_tokens), int(total_bytes))


def main(argv: list[str] | None = None) -> int:
    from .ttt import evaluate_ttt  # ttt builds on this module's BPBResult

    parser = argparse.ArgumentParser(prog="python -m pgolf_model.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="model artifact written by pgolf_model.train (e.g. runs/X/model.pga)")
    parser.add_argument("--data", required=True, help="shard directory with the val split (and its byte sidecars)")
    parser.add_argument("--val-tokens", type=int, default=0, help="score only the first N targets (0 = all)")
    parser.add_argument("--bytes", choices=("exact", "official"), default="exact", help="byte count (see above)")
    parser.add_argument("--batch-tokens", type=int, default=0, help="tokens per forward pass (0 = training's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--host-code",
        action="store_true",
        help="build the model from the installed pgolf_model instead of the artifact's own counted code",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_section_arguments(parser, "eval")
    args = parser.parse_args(argv)
    if args.val_tokens < 0 or args.batch_tokens < 0:
        parser.error(f"--val-tokens {args.val_tokens} and --batch-tokens {args.batch_tokens} must be >= 0")
    try:
        rt = runtime.setup(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        art = artifact.read(args.artifact)
        model, cfg = artifact.build_model(art, device=rt.device, embedded_code=not args.host_code)
        tokens, sidecar = load_val(args.data)
        if args.bytes == "exact":
            if sidecar is None:
                raise ValueError(f"{args.data}: the val shards have no byte sidecars; use --bytes official")
            counts = sidecar
        else:
            counts = official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(art.tokenizer())))
        given = {k: v for k, v in vars(args).items() if k.startswith("eval.") and v is not None}
        how = Config.from_dict({"eval": art.config.get("eval", {})}, where=f"{art.path}: config").override(given).eval
        seq_len = how.seq_len or cfg.train.seq_len
        common = dict(batch_tokens=args.batch_tokens or cfg.train.device_batch_tokens, runtime=rt)
        start = time.perf_counter()
        if how.ttt == "none" and how.stride in (0, seq_len):
            result = score(model, tokens, counts, seq_len=seq_len, val_tokens=args.val_tokens, **common)
        else:
            bos_id = art.tokenizer().bos_id
            result = evaluate_ttt(
                model, tokens, counts, how, seq_len=seq_len, bos_id=bos_id, val_tokens=args.val_tokens, **common
            )
        seconds = time.perf_counter() - start
        if rt.is_main:
            out = {
                **result.to_dict(),
                "stride": how.stride or seq_len if how.ttt in ("none", "full") else None,  # lora/phased: per-doc chunks
                "ttt": how.ttt,
                "bytes_mode": args.bytes,
                "artifact_bytes": art.total_bytes,
                "eval_seconds": round(seconds, 2),
            }
            if args.json:
                print(json.dumps(out))
            else:
                print(
                    f"val_bpb {result.bpb:.6f}  val_loss {result.loss:.6f}  targets {result.tokens:,}  "
                    f"bytes {result.bytes:,} ({args.bytes})  stride {out['stride'] or '-'}  ttt {how.ttt}  "
                    f"artifact {art.total_bytes:,} B  {seconds:.1f}s"
                )
    except (ValueError, FileNotFoundError) as e:  # bad artifact, shards, tokenizer or byte mode: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        runtime.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
