"""Score-first test-time training (TTT): the model keeps training on validation tokens once they have been scored.

The challenge allows it under four conditions (issue #1017; docs/challenge.md, legality): the score of a
token depends only on the tokens before it, over a full softmax, is taken before any update that has seen it, and
each token is scored exactly once. Here this holds in stream order: a target's score never depends on tokens after
it (tests/test_ttt.py changes every token after a position and checks that no score up to it moves). ``full`` runs the
stream in order; ``lora`` and ``phased`` sort documents by length within rounds of consecutive documents, as the
2026-04 records sort them (a GPU load-balancing choice), but so that no score depends on which batch, row or rank a
document lands in (``doc_rounds`` has the argument).

Modes (``EvalConfig.ttt``), each on a private copy of the model; the caller's weights never change:

- ``full`` (records/track_10min_16mb/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon, recipe of PR #461): the stream in
  chunks of 32,768 targets; score a chunk by sliding windows, then SGD on all weights over it (lr 0.002 cosine over
  chunks, momentum 0.9, 3 epochs, batches of 32 sequences, gradient clip 1.0); the last chunk is only scored.
- ``lora`` (2026-04-10_VarLenAttn, PR #1530, as tuned in 2026-04-27_..._9HpStack_1.0611): documents (split at BOS,
  each ending with the next document's BOS as its last target) sorted by length in batches of 64, one set of
  LoRA adapters per document and virtual layer (``lora.DocLoRA``: rank 80, alpha 144), B zeroed per batch and A
  started from the round's starting rows, with a fresh AdamW (lr 1e-4, betas (0, 0.99), eps 1e-10, weight decay
  0.5). Each document goes in chunks of 48 targets, each scored with the document's last <= seq_len tokens as
  context, then (unless it is the document's last chunk) one step on the chunk's mean NLL.
- ``phased`` (2026-04-14_MultiPhaseGlobalSGD_PhasedTTT, PR #1626, 3 phases over 2,500 documents in the 1.0611
  record): ``lora``, and whenever the number of scored documents reaches a phase boundary (833, 1666, 2500), SGD on
  all weights over the documents before it (32,768-target chunks of seq_len sequences, lr 1e-3 cosine over
  chunks, momentum 0.9, 1 epoch, clip 1.0), then freshly drawn adapters. Phase boundaries end rounds, so a phase
  trains on the documents before the boundary in the stream (the record: the first documents of its sorted order).
  Chunks whose cosine rate is 0 are skipped, which for two or more chunks is the record's "last chunk skipped" and
  for a single chunk still trains.

Distributed: sliding windows and SGD sequences are split over ranks (gradients summed, so a step equals the
single-process step); a round's batches go longest first to the least loaded rank.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config import EvalConfig, LoRATTT, SGDPhase
from ..runtime import Runtime
from .lora import DocLoRA
from .ngram_tilt import TokenTilt, make_tilt
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


def ttt_full(
    model, tokens: np.ndarray, cfg: EvalConfig, tally: Tally, *, seq_len: int, rows: int, rt: Runtime, tilt=None
):
    """Score-first full-parameter TTT (module docstring, ``full``) of all targets of ``tokens`` into ``tally``,
    ``rows`` windows per forward pass; scores tilted by ``tilt`` (a ``TokenTilt``) if given."""
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
            score_windows(model, tokens, rank_slice(chunk_wins, rt), tally, rows=rows, runtime=rt, tilt=tilt)
        if c < n_chunks - 1:  # after the last chunk nothing is left to score with what it would teach
            train_chunk(model, opt, tokens, c, n_chunks, cfg.full, seq_len=seq_len, rt=rt)


# ---------------------------------------------------------------------------------------------------------------------
# lora and phased: per-document adapters, chunk by chunk, in length-sorted rounds


@dataclass(frozen=True)
class Round:
    """Consecutive documents of the stream scored from one state: ``batches`` (document indices, longest first),
    ``ranks[i]`` the rank that runs batch i; ``sgd``: the phases' global SGD over the stream up to the round's last
    document follows it; ``carry``: the next round's adapters start from its last batch's trained A."""

    batches: tuple[tuple[int, ...], ...]
    ranks: tuple[int, ...]
    sgd: bool
    carry: bool


def chunk_widths(n_pred: int, chunk: int | LoRATTT, seq_len: int) -> list[int]:
    """The window width of each chunk of a document with ``n_pred`` targets (``_score_doc_batch``), for chunks of
    ``chunk`` targets or those of a ``LoRATTT``'s ``chunk_bounds``."""
    lora = chunk if isinstance(chunk, LoRATTT) else LoRATTT(chunk_tokens=chunk)
    return [min(hi, seq_len) for _, hi in lora.chunk_bounds(n_pred)]


def doc_rounds(lengths: list[int], cfg: EvalConfig, seq_len: int, world: int) -> list[Round]:
    """The documents (``lengths`` in stream order, as ``find_docs``) in rounds of batches, sorted by length.

    Sorting is what keeps the chunk passes down: a batch runs as many passes as its longest document has chunks, so
    batches of documents of similar length waste few rows (the 1.0611 record sorts all 50,000 documents: ~18k passes
    where stream order takes ~160k; the bench ``bench/ttt_eval.py`` measures the ratio). The record sorts across its
    phase boundaries, so its phases train on the longest documents wherever they sit in the stream; here rounds are
    consecutive documents, never crossing a phase boundary (``eval.phased``), ``eval.lora.round_docs`` each (0: all
    between two boundaries).

    Legality (docs/challenge.md, C1: a score depends only on the tokens before it). A round is sorted using every
    document's length, i.e. the positions of later BOS tokens, so a document's batch, row and rank depend on later
    tokens; nothing it is scored with does. Its scores are a function of
    - its own tokens up to each target (each chunk's window ends at the chunk; causal attention);
    - the base weights, changed only by global SGD after a round, over documents before the next round;
    - its adapters' start: B = 0 and A = the round's starting row ``i % batch_docs`` for document ``i`` (its index
      in the stream, i.e. the number of BOS before it), whatever its row; the starting rows are drawn from the seed and
      the phase, or (``warm_start_a``) are the trained A of the round before's last batch, all earlier documents;
    - its own optimizer state: a fresh AdamW per batch acts on each row's slice of the adapters alone, and the step
      count at a document's chunk c is c (every earlier chunk of it trained);
    - nothing of the other rows: adapters are per row, the base weights frozen, each row's loss its own; the width
      depends on the chunk index alone. The row count does depend on the sort (the round's partial batch, its
      longest documents, has fewer): that a row's arithmetic does not change with it is kernel behaviour, true of
      the CPU kernels the tests run (a document moved out of the partial batch keeps every score), not a theorem.
    After a document's last chunk its row keeps decaying (AdamW's weight decay at zero gradient) while longer
    documents run; that reaches only the A carried to the next round. The starting rows are the same on every rank
    (the last batch's rank broadcasts them), so the scores do not depend on the number of ranks either. A batch has
    one padding row (``batch_rows``), so the round's partial batch (its longest documents) runs fewer rows.
    ``tests/test_ttt.py`` changes every token after a position (which re-sorts the rounds) and checks that no score
    up to it moves.
    """
    bsz = cfg.lora.batch_docs
    bounds = _phase_boundaries(cfg, len(lengths)) if cfg.ttt == "phased" else []
    edges = sorted({0, *bounds, len(lengths)})
    rounds = []
    for lo, hi in itertools.pairwise(edges):
        step = cfg.lora.round_docs or hi - lo
        for a in range(lo, hi, step):
            b = min(a + step, hi)
            # Cut from the shortest, so that the partial batch holds the longest documents (fewest rows), as the
            # record's; batches run longest first.
            order = sorted(range(a, b), key=lambda i: (lengths[i], -i))
            batches = [tuple(order[k : k + bsz][::-1]) for k in range(0, len(order), bsz)][::-1]
            cost = [
                batch_rows(len(batch)) * sum(chunk_widths(lengths[batch[0]] - 1, cfg.lora, seq_len))
                for batch in batches
            ]
            load, ranks = [0] * world, []
            for c in cost:  # longest batches first, each to the least loaded rank
                r = load.index(min(load))
                ranks.append(r)
                load[r] += c
            last = b == hi
            sgd = last and hi in bounds
            rounds.append(Round(tuple(batches), tuple(ranks), sgd, cfg.lora.warm_start_a and not last))
    return rounds


def padded_width(width: int, chunk: int, seq_len: int) -> int:
    """The compiled forward's width for a window of ``width``: ``chunk * 2^k`` up to ``seq_len``, so that a run
    compiles a handful of static shapes (the positions after the window are padding, unseen by causal attention)."""
    return min(seq_len, chunk * 2 ** math.ceil(math.log2(width / chunk)))


def _score_doc_batch(
    lora: DocLoRA,
    opt,
    docs,
    tokens: np.ndarray,
    tally: Tally,
    *,
    lora_cfg: LoRATTT,
    seq_len: int,
    rt: Runtime,
    pad: bool,
    tilt: TokenTilt | None = None,
) -> None:
    """Score-then-step through a batch of documents, chunk by chunk, all rows side by side.

    Chunk ``c`` of a document is its targets ``lo .. hi - 1`` of ``lora_cfg.chunk_bounds`` (fewer in its last
    chunk); its context window is the document's tokens from ``max(0, hi - seq_len)``. The bounds, windows and tensor
    shapes depend only on ``c`` (rows of documents without a chunk ``c`` are padding), never on where a document ends,
    so no score depends on later tokens. Short-document chunks (PR #2014) are short chunks at the start of every
    document: the record picks a batch's chunk size from its longest document, which a later token can change.
    ``pad``: windows are padded on the right to ``padded_width`` (for the compiled forward). ``tilt``: the scores
    (not the adapters' loss, as PR #2130) are the n-gram tilted ones.
    """
    n_pred = [length - 1 for _, length in docs]
    bounds = lora_cfg.chunk_bounds(max(n_pred))
    n_chunks = [sum(lo < n for lo, _ in bounds) for n in n_pred]
    base = min((lora_cfg.chunk_tokens, *lora_cfg.short_chunks))
    for c, (lo, hi) in enumerate(bounds):
        start = max(0, hi - seq_len)
        width, offset = hi - start, lo - start
        span = np.zeros((lora.bsz, (padded_width(width, base, seq_len) if pad else width) + 1), dtype=np.int64)
        firsts, lengths = [0] * lora.bsz, [0] * lora.bsz
        for b, (doc_start, _) in enumerate(docs):
            if c < n_chunks[b]:
                end = min(hi, n_pred[b])  # one past the document's last target in this chunk
                span[b, : end - start + 1] = tokens[doc_start + start : doc_start + end + 1]
                firsts[b], lengths[b] = doc_start + lo, end - lo
        span_t, offsets = torch.from_numpy(span).to(rt.device), [offset] * lora.bsz
        x, y = span_t[:, :-1], span_t[:, 1:]
        with rt.autocast():
            if tilt is None:
                nll = scored = lora.nll(x, y)
            else:
                logits = lora.logits(x)
                nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
                scored = tilt.nll(logits.detach(), y, tilt.columns(offsets, firsts, y.size(1)))
        tally.add_runs(scored, offsets, firsts, lengths)
        train = [c < n - 1 for n in n_chunks] + [False] * (lora.bsz - len(docs))
        if any(train):
            # Each document's own chunk mean; summed, so each adapter sees only its document's gradient.
            per_doc = nll[:, offset : offset + hi - lo].float().mean(dim=1)
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


def batch_rows(n_docs: int) -> int:
    """Rows of a batch of ``n_docs`` documents: one more, and the last is always padding. CPU kernels compute the
    last ``numel % vector width`` elements of a tensor with scalar code, rounded differently, so a document in the
    last row would score differently by a few ulp depending on where the sort put it."""
    return n_docs + 1


def doc_rows(batch: tuple[int, ...], bsz: int) -> list[int]:
    """The starting row of each document of ``batch`` (by its stream index, never by its place in the batch), then
    the padding row's."""
    return [i % bsz for i in batch] + [0] * (batch_rows(len(batch)) - len(batch))


def padded_widths(lora: LoRATTT, seq_len: int) -> list[int]:
    """Every ``padded_width`` of a run's windows (a chunk ends at most ``seq_len + chunk_tokens`` in before every
    later window is ``seq_len`` wide)."""
    base = min((lora.chunk_tokens, *lora.short_chunks))
    ends = [hi for _, hi in lora.chunk_bounds(max((seq_len, *lora.short_until)) + lora.chunk_tokens)]
    return sorted({padded_width(min(hi, seq_len), base, seq_len) for hi in ends})


def warm_up(loras: list[DocLoRA], widths: list[int], rt: Runtime) -> None:
    """Compile every shape a run will use (each adapter set's rows at each padded width) on random tokens, forward
    and backward, before any validation token is seen (the record warms up on random tokens too, PR #1530's
    legality thread); the adapters are untouched (``load`` resets them before use)."""
    draw = torch.Generator().manual_seed(0)
    for lora, width in itertools.product(loras, widths):
        x = torch.randint(0, lora.head.B.size(1), (lora.bsz, width + 1), generator=draw).to(rt.device)
        with rt.autocast():
            nll = lora.nll(x[:, :-1], x[:, 1:])
        nll.float().mean(dim=1).sum().backward()
        for p in lora.parameters():
            p.grad = None


def ttt_docs(
    model, tokens: np.ndarray, cfg: EvalConfig, tally: Tally, *, seq_len: int, bos_id: int, rt: Runtime, tilt=None
):
    """Score-first per-document LoRA TTT, with global SGD phases when ``cfg.ttt == "phased"`` (module docstring), of
    all targets of ``tokens`` into ``tally``, in the rounds of ``doc_rounds``; scores tilted by ``tilt`` if given."""
    for name, chunk in [("chunk_tokens", cfg.lora.chunk_tokens), *(("short_chunks", c) for c in cfg.lora.short_chunks)]:
        if chunk > seq_len:
            raise ValueError(f"eval.lora.{name} {chunk} is longer than the window ({seq_len})")
    model = _private_copy(model, trainable=False)
    model.eval()
    docs = find_docs(tokens, bos_id)
    bsz = cfg.lora.batch_docs
    loras: dict[int, DocLoRA] = {}  # by rows: a partial batch (the round's longest documents) runs fewer

    def lora_of(rows: int) -> DocLoRA:
        if rows not in loras:
            loras[rows] = DocLoRA(model, rows, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
            if cfg.lora.compile != "off":  # with a tilt the scorer reads the logits, so they are what compiles
                fn = "logits" if tilt is not None else "nll"
                compiled = torch.compile(
                    getattr(loras[rows], fn), backend=cfg.lora.compile, fullgraph=True, dynamic=False
                )
                setattr(loras[rows], fn, compiled)
        return loras[rows]

    rounds = doc_rounds([length for _, length in docs], cfg, seq_len, rt.world_size)
    if cfg.lora.compile != "off":
        rows = {batch_rows(len(b)) for r in rounds for b, rank in zip(r.batches, r.ranks) if rank == rt.rank}
        widths = padded_widths(cfg.lora, seq_len)
        # One static graph per (rows, width), all of the same function: more than dynamo's default 8.
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, len(rows) * len(widths))
        warm_up([lora_of(n) for n in sorted(rows)], widths, rt)
    phase = 0
    starts = lora_of(batch_rows(bsz)).draw(bsz, torch.Generator().manual_seed(cfg.seed * 1_000_003))
    for r in rounds:
        last = len(r.batches) - 1  # its trained A starts the next round (warm start): it runs last on its rank
        mine = [k for k, rank in enumerate(r.ranks) if rank == rt.rank]
        for k in sorted(mine, key=lambda k: r.carry and k == last):
            batch = r.batches[k]
            lora = lora_of(batch_rows(len(batch)))
            lora.load(starts, doc_rows(batch, bsz))
            opt = torch.optim.AdamW(
                lora.parameters(),
                lr=cfg.lora.lr,
                betas=(cfg.lora.beta1, cfg.lora.beta2),
                eps=cfg.lora.eps,
                weight_decay=cfg.lora.weight_decay,
            )
            batch_docs = [docs[i] for i in batch]
            _score_doc_batch(
                lora, opt, batch_docs, tokens, tally, lora_cfg=cfg.lora, seq_len=seq_len, rt=rt,
                pad=cfg.lora.compile != "off", tilt=tilt,
            )  # fmt: skip
            if r.carry and k == last:
                lora.keep(starts, len(batch))
        if r.carry and rt.distributed:
            for start in starts:
                dist.broadcast(start, src=r.ranks[last])
        if r.sgd:
            doc_start, length = docs[max(max(batch) for batch in r.batches)]
            _global_sgd(model, tokens[: doc_start + length], cfg.phased, seq_len, rt)
            phase += 1
            starts = lora_of(batch_rows(bsz)).draw(bsz, torch.Generator().manual_seed(cfg.seed * 1_000_003 + phase))


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
        counts = dict(official=official, official_rule=official_rule, tilt=cfg.tilt)
        return score(model, tokens, byte_counts, runtime=runtime, keep_nll=keep_nll, **windowing, **counts)
    tally = make_tally(tokens, byte_counts, official, official_rule, seq_len, runtime.device, keep_nll)
    tilt = make_tilt(tokens, cfg.tilt, runtime.device)
    if cfg.ttt == "full":
        rows = max(1, batch_tokens // seq_len)
        ttt_full(model, tokens, cfg, tally, seq_len=seq_len, rows=rows, rt=runtime, tilt=tilt)
    elif bos_id is None:
        raise ValueError(f"eval.ttt = {cfg.ttt!r} splits documents at BOS, but the tokenizer has no BOS id")
    else:
        ttt_docs(model, tokens, cfg, tally, seq_len=seq_len, bos_id=bos_id, rt=runtime, tilt=tilt)
    return tally.result(runtime)
