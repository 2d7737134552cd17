"""Issue #1017's conditions for a legal evaluation, measured on a pgolf artifact rather than argued
(docs/challenge.md, legal test-time training):

- C1, causal: change one token and every score before it stays the same, with TTT on;
- C2, normalized: at sampled positions the model's probabilities of every vocabulary entry sum to 1;
- C3, score before update: with TTT on, by instrumenting the procedure (``Trace``): every ``torch.optim`` step is
  fingerprinted and every score records how many steps came before it; then at sampled targets the token is changed,
  and no step taken before that target was scored may change (a step that moved had seen the token). This needs one
  run per sampled target, whatever the vocabulary. For vocabularies of at most ``MAX_C3_RUNS`` ids it is backed by a
  check that needs no instrumentation: the probabilities of every value the last token could take sum to at most 1
  (a procedure that trained on a token before scoring it raises each value's probability, so the sum exceeds 1);
- C4, single pass: every target is scored exactly once (the tally refuses a second score; none is left unscored).

The artifact's eval config is used with its chunks shortened (``PROBE``: 16-target LoRA chunks and 32-target SGD
chunks in 32-token windows, one document per LoRA batch, a global phase after the first document) so that a short
stream crosses several updates; legality is a property of the procedure, not of the chunk size. Each check returns
``(passed, message)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from .. import artifact
from ..config import Config
from ..evaluation.scoring import Tally
from ..evaluation.ttt import evaluate_ttt
from ..runtime import Runtime

PROBE = {
    "eval.seq_len": 32,
    "eval.stride": 0,
    "eval.full.chunk_tokens": 32,
    "eval.lora.chunk_tokens": 16,
    "eval.lora.batch_docs": 1,
    "eval.phased.prefix_docs": 1,
    "eval.phased.phases": 1,
    "eval.phased.chunk_tokens": 32,
}  # fmt: skip  (SGD chunks hold whole windows: a chunk shorter than seq_len trains on nothing)
DOC_TOKENS = 48  # per probe document, BOS included
TOLERANCE = 1e-3  # on a sum of probabilities, and on a NLL difference
MAX_C3_RUNS = 1100  # C3's exhaustive sum scores the stream once per vocabulary entry
C3_TARGETS = 4  # targets whose token the instrumented C3 changes


class Trace:
    """While active: a fingerprint of each ``torch.optim`` step (every parameter's sum and sum of squares after it),
    in order, and for each target the number of steps taken before it was scored (the tally records every score)."""

    def __init__(self, n_targets: int):
        self.steps: list[np.ndarray] = []
        self.scored_after = np.full(n_targets, -1, dtype=np.int64)

    def _step(self, optimizer, args, kwargs) -> None:
        params = [p.detach().double() for g in optimizer.param_groups for p in g["params"]]
        self.steps.append(torch.stack([t for p in params for t in (p.sum(), (p * p).sum())]).cpu().numpy())

    def __enter__(self) -> Trace:
        trace, original = self, Tally.add_runs

        def add_runs(tally, nll, offsets, firsts, lengths):
            for f, n in zip(firsts, lengths):
                trace.scored_after[f : f + n] = len(trace.steps)
            return original(tally, nll, offsets, firsts, lengths)

        self._restore = original
        Tally.add_runs = add_runs
        self._hook = register_optimizer_step_post_hook(self._step)
        return self

    def __exit__(self, *exc) -> None:
        Tally.add_runs = self._restore
        self._hook.remove()


def _moved(a: list[np.ndarray], b: list[np.ndarray], upto: int) -> float:
    """The largest relative change between two runs' fingerprints of their first ``upto`` steps (inf: they differ
    in number or shape, so the runs took different steps)."""
    if len(a) < upto or len(b) < upto:
        return math.inf
    worst = 0.0
    for x, y in zip(a[:upto], b[:upto]):
        if x.shape != y.shape:
            return math.inf
        worst = max(worst, float(np.max(np.abs(x - y) / (np.abs(x) + 1e-30))) if x.size else 0.0)
    return worst


def probe_stream(vocab_size: int, bos_id: int, tokens: np.ndarray | None = None, docs: int = 2) -> np.ndarray:
    """``docs`` documents of ``DOC_TOKENS``: cut from ``tokens`` (a val split) where given, else seeded random ids."""
    rng = np.random.default_rng(0)
    out = []
    body = DOC_TOKENS - 1
    starts = np.flatnonzero(tokens == bos_id) if tokens is not None else np.zeros(0, dtype=np.int64)
    for d in range(docs):
        if d < len(starts) and starts[d] + DOC_TOKENS <= len(tokens) and bos_id not in tokens[starts[d] + 1 :][:body]:
            doc = tokens[starts[d] + 1 : starts[d] + DOC_TOKENS]
        else:
            doc = rng.integers(0, vocab_size - 1, body)
            doc[doc >= bos_id] += 1  # never BOS inside a document
        out += [np.array([bos_id]), np.asarray(doc, dtype=np.int64)]
    return np.concatenate(out).astype(np.int64)


class Probe:
    """An artifact's model and eval config, and the evaluator under test (``evaluate_ttt`` unless a test swaps it)."""

    def __init__(self, art_path, rt: Runtime, evaluate: Callable = evaluate_ttt, changes: dict | None = None):
        art = artifact.read(art_path)
        self.model, cfg = artifact.build_model(art, device=rt.device)
        self.bos_id = art.tokenizer().bos_id
        self.vocab = cfg.model.vocab_size
        own = Config.from_dict({"eval": art.config.get("eval", {})}, where=f"{art_path}: config")
        self.how = own.override({**PROBE, **(changes or {})}).eval
        self.rt, self.evaluate = rt, evaluate

    def nll(self, tokens: np.ndarray) -> np.ndarray:
        """Per-target NLL of ``tokens`` under the eval procedure (NaN where a target was not scored)."""
        counts = np.ones_like(tokens)
        result = self.evaluate(
            self.model, tokens, counts, self.how, seq_len=self.how.seq_len, batch_tokens=4096, bos_id=self.bos_id,
            runtime=self.rt, keep_nll=True,
        )  # fmt: skip
        return result.nll

    def c1_causal(self, tokens: np.ndarray) -> tuple[bool, str]:
        base = self.nll(tokens)
        worst, where = 0.0, None
        for p in (len(tokens) // 3, len(tokens) // 2, len(tokens) - 2):
            changed = tokens.copy()
            changed[p] = (changed[p] + 1) % self.vocab
            if changed[p] == self.bos_id or tokens[p] == self.bos_id:
                continue
            diff = float(np.nanmax(np.abs(self.nll(changed)[: p - 1] - base[: p - 1])))
            if diff > worst:
                worst, where = diff, p
        ok = worst <= TOLERANCE
        at = f" (token {where} changed)" if where is not None else ""
        return ok, f"largest change of an earlier target's NLL after changing a later token: {worst:.2e} nats{at}"

    def c4_single_pass(self, tokens: np.ndarray) -> tuple[bool, str]:
        try:
            nll = self.nll(tokens)
        except AssertionError as e:  # the tally's refusal of a second score
            return False, str(e)
        missing = int(np.isnan(nll).sum())
        if missing:
            return False, f"{missing} of {len(nll)} targets never scored"
        return True, f"all {len(nll)} targets scored exactly once"

    @torch.no_grad()
    def c2_normalized(self, tokens: np.ndarray, positions: int = 3) -> tuple[bool, str]:
        model, rt = self.model, self.rt
        model.eval()
        worst = 0.0
        for q in np.linspace(8, len(tokens) - 2, positions).astype(int):
            ctx = torch.from_numpy(tokens[max(0, q - 31) : q + 1]).to(rt.device)
            total = 0.0
            for lo in range(0, self.vocab, 512):
                values = torch.arange(lo, min(lo + 512, self.vocab), device=rt.device)
                x = ctx.repeat(len(values), 1)
                y = torch.cat([ctx[1:].repeat(len(values), 1), values[:, None]], dim=1)
                with rt.autocast():
                    nll = model(x, y, reduction="none")[:, -1].double()
                total += float(torch.exp(-nll).sum())
            worst = max(worst, abs(total - 1))
        return worst <= TOLERANCE, f"probabilities over all {self.vocab} ids sum to 1 within {worst:.2e}"

    def traced(self, tokens: np.ndarray) -> Trace:
        with Trace(len(tokens) - 1) as trace:
            self.nll(tokens)
        return trace

    def c3_score_first(self, tokens: np.ndarray) -> tuple[bool | None, str]:
        if self.how.ttt == "none":
            return True, "no test-time training: the model never changes while scoring"
        ok, message = self.c3_instrumented(tokens)
        if ok is False or self.vocab - 1 > MAX_C3_RUNS:
            return ok, message
        exhaustive, detail = self.c3_exhaustive(tokens)
        return (exhaustive if ok is None else ok and exhaustive), f"{message}; {detail}"

    def c3_instrumented(self, tokens: np.ndarray) -> tuple[bool | None, str]:
        """At ``C3_TARGETS`` sampled targets: change the token, and no step before the target's score may move."""
        base, again = self.traced(tokens), self.traced(tokens)
        if not base.steps:
            return None, f"TTT {self.how.ttt}: no torch.optim step observed, so the update order cannot be traced"
        noise = _moved(base.steps, again.steps, len(base.steps))
        if not math.isfinite(noise) or noise > TOLERANCE:
            return None, f"TTT {self.how.ttt}: two runs of the same stream take different steps ({noise:.1e})"
        limit = max(1e3 * noise, 1e-12)
        candidates = np.linspace(len(tokens) // 4, len(tokens) - 2, C3_TARGETS).astype(int)
        checked, worst = [], 0.0
        for t in candidates:  # target t is token t + 1
            if self.bos_id in (tokens[t], tokens[t + 1]):
                continue
            changed = tokens.copy()
            changed[t + 1] = (tokens[t + 1] + 1) % self.vocab
            if changed[t + 1] == self.bos_id:
                changed[t + 1] = (changed[t + 1] + 1) % self.vocab
            before = int(base.scored_after[t])
            moved = _moved(base.steps, self.traced(changed).steps, before)
            if moved > limit:
                return False, (
                    f"TTT {self.how.ttt}: changing token {t + 1} moves the optimizer steps taken before it was "
                    f"scored (by {moved:.1e}, run-to-run noise {noise:.1e}): an update saw it before its score"
                )
            checked.append(before)
            worst = max(worst, moved)
        return True, (
            f"TTT {self.how.ttt}, traced over {len(base.steps)} torch.optim steps: changing the token of each of "
            f"{len(checked)} sampled targets leaves the {', '.join(map(str, checked))} step(s) before its score "
            f"unchanged (largest relative change {worst:.1e})"
        )

    def c3_exhaustive(self, tokens: np.ndarray) -> tuple[bool, str]:
        values = [v for v in range(self.vocab) if v != self.bos_id]  # a BOS would end the document
        last = len(tokens) - 1
        total = 0.0
        for v in values:
            variant = tokens.copy()
            variant[last] = v
            total += math.exp(-float(self.nll(variant)[last - 1]))
        ok = total <= 1 + TOLERANCE
        return ok, (
            f"TTT {self.how.ttt}: the last token's {len(values)} possible non-BOS values get probability {total:.6f} "
            "in all (more than 1 would mean it was trained on before it was scored)"
        )
