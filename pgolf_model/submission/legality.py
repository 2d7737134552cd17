"""Issue #1017's conditions for a legal evaluation, measured on a pgolf artifact rather than argued
(docs/challenge.md, legal test-time training):

- C1, causal: change one token and every score before it stays the same, with TTT on;
- C2, normalized: at sampled positions the model's probabilities of every vocabulary entry sum to 1;
- C3, score before update: with TTT on, the probabilities of every value the last token could take sum to at most 1
  (a procedure that trained on a token before scoring it raises each value's probability, so the sum exceeds 1);
- C4, single pass: every target is scored exactly once (the tally refuses a second score; none is left unscored).

The artifact's eval config is used with its chunks shortened (``PROBE``: 16-target chunks in 32-token windows, one
document per LoRA batch, a global phase after the first document) so that a short stream crosses several updates;
legality is a property of the procedure, not of the chunk size. Each check returns ``(passed, message)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .. import artifact
from ..config import Config
from ..evaluation.ttt import evaluate_ttt
from ..runtime import Runtime

PROBE = {
    "eval.seq_len": 32, "eval.stride": 0, "eval.full.chunk_tokens": 16, "eval.lora.chunk_tokens": 16,
    "eval.lora.batch_docs": 1, "eval.phased.prefix_docs": 1, "eval.phased.phases": 1, "eval.phased.chunk_tokens": 16,
}  # fmt: skip
DOC_TOKENS = 48  # per probe document, BOS included
TOLERANCE = 1e-3  # on a sum of probabilities, and on a NLL difference
MAX_C3_RUNS = 1100  # C3 scores the stream once per vocabulary entry


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

    def c3_score_first(self, tokens: np.ndarray) -> tuple[bool | None, str]:
        if self.how.ttt == "none":
            return True, "no test-time training: the model never changes while scoring"
        values = [v for v in range(self.vocab) if v != self.bos_id]  # a BOS would end the document
        if len(values) > MAX_C3_RUNS:
            return None, f"needs {len(values):,} TTT runs (one per id), over the {MAX_C3_RUNS:,} this check allows"
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
