"""Score-first test-time training (TTT): the model keeps training on validation tokens once they have been scored.

The challenge allows it under four conditions (issue #1017; docs/challenge.md, legality): the score of a
token depends only on the tokens before it, over a full softmax, is taken before any update that has seen it, and
each token is scored exactly once. Here this holds in stream order: a target's score never depends on tokens after
it (tests/test_ttt.py changes every token after a position and checks that no score up to it moves). Documents and
chunks are processed in stream order for that reason; the 2026-04 records sort documents by length instead (a GPU
load-balancing choice that lets a document's score depend on later documents through warm adapters and phases).

Modes (``EvalConfig.ttt``), each on a private copy of the model; the caller's weights never change:

- ``full`` (records/track_10min_16mb/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon, recipe of PR #461): the stream in
  chunks of 32,768 targets; score a chunk by sliding windows, then SGD on all weights over it (lr 0.002 cosine over
  chunks, momentum 0.9, 3 epochs, batches of 32 sequences, gradient clip 1.0); the last chunk is only scored.
- ``lora`` (2026-04-10_VarLenAttn, PR #1530, as tuned in 2026-04-27_..._9HpStack_1.0611): documents (split at BOS,
  each ending with the next document's BOS as its last target) in batches of 64, one set of LoRA adapters per
  document (``lora.DocLoRA``: rank 80, alpha 144), reset per batch (B zeroed, A kept warm) with a fresh AdamW (lr 1e-4,
  betas (0, 0.99), eps 1e-10, weight decay 0.5). Each document goes in chunks of 48 targets, each scored with the
  document's last <= seq_len tokens as context, then (unless it is the document's last chunk) one step on the chunk's
  mean NLL.
- ``phased`` (2026-04-14_MultiPhaseGlobalSGD_PhasedTTT, PR #1626, 3 phases over 2,500 documents in the 1.0611
  record): ``lora``, and whenever the number of scored documents reaches a phase boundary (833, 1666, 2500), SGD on
  all weights over the documents scored so far (32,768-target chunks of seq_len sequences, lr 1e-3 cosine over
  chunks, momentum 0.9, 1 epoch, clip 1.0), then fresh adapters. Chunks whose cosine rate is 0 are skipped, which for
  two or more chunks is the record's "last chunk skipped" and for a single chunk still trains.

Distributed: sliding windows and SGD sequences are split over ranks (gradients summed, so a step equals the
single-process step); document batches are dealt round-robin, and phase boundaries fall after whole rounds.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
import torch.distributed as dist

from ..config import EvalConfig, SGDPhase
from ..runtime import Runtime
from .lora import DocLoRA
from .scoring import BPBResult, Tally, make_tally, prepare, rank_slice, score, score_windows, windows


def cosine_lr(base: float, i: int, n: int) -> float:
    """``base`` at item 0 of ``n``, cosine down to 0 at item ``n - 1`` (as both TTT records)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * i / max(n - 1, 1)))


def find_docs(tokens: np.ndarray, bos_id: int) -> list[tuple[int, int]]:
    """``(start, length)`` per document: from its BOS (or the stream's start) through the next BOS inclusive, so each
    target 1..N-1 belongs to exactly one document (the next BOS is a target with 0 bytes, as in the records)."""
    starts = np.flatnonzero(tokens == bos_id)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    ends = np.append(starts[1:] + 1, len(tokens))
    return [(int(a), int(b - a)) for a, b in zip(starts, ends) if b - a >= 2]


# ---------------------------------------------------------------------------------------------------------------------
# SGD on scored tokens (full TTT and the phases' global SGD)


def train_chunk(model, opt, tokens: np.ndarray, c: int, n_chunks: int, sgd: SGDPhase, *, seq_len: int, rt: Runtime):
    """SGD on chunk ``c`` of ``n_chunks`` of the targets of ``tokens`` (``sgd.chunk_tokens`` each) at learning rate
    ``cosine_lr(sgd.lr, c, n_chunks)``; a chunk whose rate is 0 is skipped. ``sgd.epochs`` passes over the chunk's
    whole ``seq_len`` sequences, ``sgd.batch_seqs`` per step split over ranks; a step's loss is the mean NLL of its
    sequences whatever the number of ranks (local sums over the global count, gradients summed)."""
    lr = cosine_lr(sgd.lr, c, n_chunks)
    if lr == 0:
        return
    for group in opt.param_groups:
        group["lr"] = lr
    first = c * sgd.chunk_tokens
    n_seqs = min(sgd.chunk_tokens, len(tokens) - 1 - first) // seq_len
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for _, s in itertools.product(range(sgd.epochs), range(0, n_seqs, sgd.batch_seqs)):
        n = min(sgd.batch_seqs, n_seqs - s)
        lo, hi = s + n * rt.rank // rt.world_size, s + n * (rt.rank + 1) // rt.world_size
        opt.zero_grad(set_to_none=False)
        if hi > lo:
            idx = first + np.arange(lo, hi)[:, None] * seq_len + np.arange(seq_len + 1)
            span = torch.from_numpy(tokens[idx]).to(rt.device)
            with rt.autocast():
                nll = model(span[:, :-1], span[:, 1:], reduction="none")
            (nll.float().sum() / (n * seq_len)).backward()
        for p in params:
            if p.grad is None:  # a rank without sequences in this step still joins the sum
                p.grad = torch.zeros_like(p)
        if rt.distributed:  # one flat all-reduce instead of one per tensor
            grads = [p.grad for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            for g, summed in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(summed.view_as(g))
        if sgd.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, sgd.grad_clip)
        opt.step()


def _private_copy(model, trainable: bool):
    """A copy to adapt: the caller's model is never changed."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(trainable)
    return twin


# ---------------------------------------------------------------------------------------------------------------------
# full: chunked sliding-window scoring, then SGD on each scored chunk


def ttt_full(model, tokens: np.ndarray, cfg: EvalConfig, tally: Tally, *, seq_len: int, rows: int, rt: Runtime):
    """Score-first full-parameter TTT (module docstring, ``full``) of all targets of ``tokens`` into ``tally``,
    ``rows`` windows per forward pass."""
    model = _private_copy(model, trainable=True)
    n_targets, chunk = len(tokens) - 1, cfg.full.chunk_tokens
    n_chunks = -(-n_targets // chunk)
    by_chunk: list[list] = [[] for _ in range(n_chunks)]
    for w in windows(n_targets, seq_len, cfg.stride or seq_len):  # a window goes with its first scored target
        by_chunk[w.first_scored // chunk].append(w)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.full.lr, momentum=cfg.full.momentum)
    for c, chunk_wins in enumerate(by_chunk):
        model.eval()
        with torch.no_grad():
            score_windows(model, tokens, rank_slice(chunk_wins, rt), tally, rows=rows, runtime=rt)
        if c < n_chunks - 1:  # after the last chunk nothing is left to score with what it would teach
            train_chunk(model, opt, tokens, c, n_chunks, cfg.full, seq_len=seq_len, rt=rt)


# ---------------------------------------------------------------------------------------------------------------------
# lora and phased: per-document adapters, chunk by chunk


def _score_doc_batch(
    model, lora: DocLoRA, opt, docs, tokens: np.ndarray, tally: Tally, *, chunk: int, seq_len: int, rt: Runtime
) -> None:
    """Score-then-step through a batch of documents, chunk by chunk, all rows side by side.

    Chunk ``c`` of a document is its targets ``c*chunk ..`` (fewer in its last chunk); its context window is the
    document's tokens from ``max(0, (c+1)*chunk - seq_len)``. Windows and tensor shapes depend only on ``c`` (rows of
    documents without a chunk ``c`` are padding), never on where a document ends, so no score depends on later tokens.
    """
    n_pred = [length - 1 for _, length in docs]
    n_chunks = [-(-n // chunk) for n in n_pred]
    for c in range(max(n_chunks)):
        start = max(0, (c + 1) * chunk - seq_len)
        width, offset = (c + 1) * chunk - start, c * chunk - start
        span = np.zeros((lora.bsz, width + 1), dtype=np.int64)
        firsts, lengths = [0] * lora.bsz, [0] * lora.bsz
        for b, (doc_start, _) in enumerate(docs):
            if c < n_chunks[b]:
                end = min((c + 1) * chunk, n_pred[b])  # one past the document's last target in this chunk
                span[b, : end - start + 1] = tokens[doc_start + start : doc_start + end + 1]
                firsts[b], lengths[b] = doc_start + c * chunk, end - c * chunk
        span_t = torch.from_numpy(span).to(rt.device)
        with rt.autocast():
            nll = lora.nll(model, span_t[:, :-1], span_t[:, 1:])
        tally.add_runs(nll, [offset] * lora.bsz, firsts, lengths)
        train = [c < n - 1 for n in n_chunks] + [False] * (lora.bsz - len(docs))
        if any(train):
            # Each document's own chunk mean; summed, so each adapter sees only its document's gradient.
            per_doc = nll[:, offset : offset + chunk].float().mean(dim=1)
            opt.zero_grad(set_to_none=True)
            (per_doc * torch.tensor(train, device=rt.device)).sum().backward()
            opt.step()


def _phase_boundaries(cfg: EvalConfig, n_docs: int) -> list[int]:
    prefix, phases = min(cfg.phased.prefix_docs, n_docs), cfg.phased.phases
    return [b for b in (prefix * (i + 1) // phases for i in range(phases)) if b > 0]


def _global_sgd(model, tokens: np.ndarray, sgd: SGDPhase, seq_len: int, rt: Runtime) -> None:
    """SGD on all weights over ``tokens`` (already scored documents), in cosine-scheduled chunks."""
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=sgd.lr, momentum=sgd.momentum)
    n_chunks = -(-(len(tokens) - 1) // sgd.chunk_tokens)
    for c in range(n_chunks):
        train_chunk(model, opt, tokens, c, n_chunks, sgd, seq_len=seq_len, rt=rt)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def ttt_docs(model, tokens: np.ndarray, cfg: EvalConfig, tally: Tally, *, seq_len: int, bos_id: int, rt: Runtime):
    """Score-first per-document LoRA TTT, with global SGD phases when ``cfg.ttt == "phased"`` (module docstring), of
    all targets of ``tokens`` into ``tally``."""
    if cfg.lora.chunk_tokens > seq_len:
        raise ValueError(f"eval.lora.chunk_tokens {cfg.lora.chunk_tokens} is longer than the window ({seq_len})")
    model = _private_copy(model, trainable=False)
    model.eval()
    docs = find_docs(tokens, bos_id)
    bsz, world = cfg.lora.batch_docs, rt.world_size
    batches = [docs[i : i + bsz] for i in range(0, len(docs), bsz)]
    boundaries = _phase_boundaries(cfg, len(docs)) if cfg.ttt == "phased" else []
    lora = None  # built at a rank's first batch and after each phase; B is zeroed (A kept or redrawn) per batch
    for first in range(0, len(batches), world):
        k = first + rt.rank
        if k < len(batches):
            # A is drawn from a generator seeded by the batch index: without warm starts, scores do not depend on
            # the number of ranks.
            draw = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
            if lora is None:
                lora = DocLoRA(model, bsz, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, draw)
            else:
                lora.reset(keep_a=cfg.lora.warm_start_a, generator=draw)
            opt = torch.optim.AdamW(
                lora.parameters(),
                lr=cfg.lora.lr,
                betas=(cfg.lora.beta1, cfg.lora.beta2),
                eps=cfg.lora.eps,
                weight_decay=cfg.lora.weight_decay,
            )
            _score_doc_batch(
                model, lora, opt, batches[k], tokens, tally, chunk=cfg.lora.chunk_tokens, seq_len=seq_len, rt=rt
            )
        scored = min(len(docs), (first + world) * bsz)  # every rank knows what the round scored
        while boundaries and scored >= boundaries[0]:
            doc_start, length = docs[boundaries.pop(0) - 1]
            _global_sgd(model, tokens[: doc_start + length], cfg.phased, seq_len, rt)
            lora = None


def evaluate_ttt(
    model,
    tokens: np.ndarray,
    byte_counts: np.ndarray | None,
    cfg: EvalConfig,
    *,
    seq_len: int,
    batch_tokens: int,
    bos_id: int | None,
    runtime: Runtime,
    val_tokens: int = 0,
    keep_nll: bool = False,
    official: np.ndarray | None = None,
    official_rule: str = "",
) -> BPBResult:
    """BPB of targets 1..N-1 of ``tokens`` (or the first ``val_tokens``) under ``cfg``: sliding windows, then the
    TTT mode, if any; exact from ``byte_counts`` and official from ``official`` (``scoring.score``)."""
    tokens, byte_counts, official = prepare(tokens, byte_counts, official, val_tokens=val_tokens)
    seq_len = cfg.seq_len or seq_len
    if cfg.ttt == "none":
        windowing = dict(seq_len=seq_len, stride=cfg.stride, batch_tokens=batch_tokens)
        counts = dict(official=official, official_rule=official_rule)
        return score(model, tokens, byte_counts, runtime=runtime, keep_nll=keep_nll, **windowing, **counts)
    tally = make_tally(tokens, byte_counts, official, official_rule, seq_len, runtime.device, keep_nll)
    if cfg.ttt == "full":
        ttt_full(model, tokens, cfg, tally, seq_len=seq_len, rows=max(1, batch_tokens // seq_len), rt=runtime)
    elif bos_id is None:
        raise ValueError(f"eval.ttt = {cfg.ttt!r} splits documents at BOS, but the tokenizer has no BOS id")
    else:
        ttt_docs(model, tokens, cfg, tally, seq_len=seq_len, bos_id=bos_id, rt=runtime)
    return tally.result(runtime)
