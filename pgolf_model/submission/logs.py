"""Training logs in the official scripts' line format: read from anyone's log, written from pgolf's runs.

The challenge's scripts print ``key:value`` lines (the baseline's ``train_gpt.py`` and every record since), and
reviewers read the numbers from them. The lines this module knows, as the records print them:

- ``step:13700/20000 train_loss:2.0323 train_time:596577ms step_avg:43.55ms`` and the same with
  ``val_loss:... val_bpb:...`` (a validation during training);
- ``stopping_early: wallclock_cap train_time:600038ms step:13780/20000``;
- a score: ``<label> val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms``, e.g. ``final_int8_zlib_roundtrip``,
  ``final_int6_sliding_window_exact`` (``_exact``: the same number printed to 8 decimals) or, in the April records,
  ``quantized_ttt_phased``; ``diagnostic ...`` lines are scores that do not count;
- ``Code size: 47642 bytes``, ``Total submission size int8+zlib: 15863489 bytes``;
- the val token count, ``val_loader:shards pattern=... tokens:62021632`` or ``val_tokens: 47851520``;
- how the script counts bytes: ``val_bpb:enabled tokenizer_kind=sentencepiece`` (the per-piece SentencePiece formula;
  ``tokenizer_kind=byte``: one byte a token), ``val_bpb:byte_sidecar:enabled`` or the April records' hyperparameter
  ``caseops_enabled: True`` (a byte sidecar, ``fineweb_val_bytes_*.bin``; ``False``: the per-piece formula);
- ``total_eval_time:508.8s``; GPTQ's Hessian collection, ``GPTQ:collected 67 Hessians in 4.7s``, and its reserve
  taken from the training clock, ``gptq:reserving 8s, effective=592000ms``.

``parse`` reads them into ``LogFacts``; the tokenizer A/B's external scripts use the same parser for their final
lines. pgolf's runs write ``log.jsonl`` instead; ``write_run_log`` renders it in this format (``train_seed<N>.log``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SCORE = re.compile(
    r"^(?P<label>[A-Za-z][\w.+-]*(?: [A-Za-z][\w.+-]*)*)\s+val_loss:\s*(?P<loss>[-\d.eE+naif]+)\s+"
    r"val_bpb:\s*(?P<bpb>[-\d.eE+naif]+)(?P<rest>.*)$"
)
_STEP = re.compile(r"^(?:step:)?(?P<step>\d+)/(?P<total>\d+)\s+(?P<rest>.*)$")  # April records: no "step:"
_STOP = re.compile(r"^stopping_early:.*?train_time:\s*(?P<ms>[\d.]+)ms\s+step:\s*(?P<step>\d+)/(?P<total>\d+)")
_TRAIN_TIME = re.compile(r"train_time:\s*(?P<t>[\d.]+)(?P<unit>ms|m)\b")  # April records: minutes
_STEP_AVG = re.compile(r"step_avg:\s*(?P<ms>[\d.]+)ms")
_EVAL_MS = re.compile(r"eval_time:\s*(?P<ms>[\d.]+)ms")
_TOTAL_EVAL = re.compile(r"^total_eval_time:\s*(?P<s>[\d.]+)s")
_CODE_SIZE = re.compile(r"^Code size(?P<what>[^:]*):\s*(?P<n>\d+) bytes")
# Also mid-line, as in 2026-03-31_LegendreGPT: ``INT7+zlib model: 15370972 bytes | Total submission: 15441941 bytes``.
_TOTAL_SIZE = re.compile(r"(?:^|\| )Total submission(?: size(?P<what>[^:]*))?:\s*(?P<n>\d+) bytes")
_VAL_TOKENS = re.compile(r"^(?:val_loader:.*\stokens:|val_tokens:\s*)(?P<n>\d+)")
_HESSIANS = re.compile(r"GPTQ:collected .*? in (?P<s>[\d.]+)s", re.IGNORECASE)
_RESERVE = re.compile(r"^gptq:reserving (?P<s>[\d.]+)s", re.IGNORECASE)
_SELF_GENERATED = re.compile(r"gptq.*(self-gen|autoregressive)", re.IGNORECASE)  # calibration reads no data
_WORLD = re.compile(r"world_size:\s*(?P<n>\d+)")
_TOKENIZER = re.compile(r"tokenizer_path[=:]\s*(?P<path>\S+)")
_DEVICE = re.compile(r"^device_name:\s*(?P<name>.+)$")
_BYTE_KIND = re.compile(r"^val_bpb:enabled tokenizer_kind=(?P<kind>\w+)")
_BYTE_SIDECAR = re.compile(r"^val_bpb:byte_sidecar:enabled")
_CASEOPS = re.compile(r"^caseops_enabled:\s*(?P<on>True|False)\b")

# How a script counts the bytes under its BPB (``LogFacts.byte_formula``).
BYTE_FORMULAS = {
    "pieces": "the official per-piece formula (SentencePiece tables)",
    "sidecar": "a byte sidecar (fineweb_val_bytes_*.bin)",
    "bytes": "one byte a token (a byte-level tokenizer)",
}


@dataclass(frozen=True)
class Score:
    label: str
    val_loss: float  # nats per token
    val_bpb: float
    eval_ms: float | None

    @property
    def counts(self) -> bool:
        """Whether the line is a submission's score (a diagnostic is not)."""
        return not self.label.lower().startswith("diagnostic")


@dataclass
class LogFacts:
    """What a log says; None where it does not say."""

    scores: list[Score] = field(default_factory=list)
    steps: int | None = None
    iterations: int | None = None
    train_ms: float | None = None
    step_avg_ms: float | None = None
    stopped_by_clock: bool = False
    code_bytes: int | None = None
    total_bytes: int | None = None
    val_tokens: int | None = None
    eval_s: float | None = None  # total_eval_time, or the sum of the counting scores' eval_time
    hessian_s: float | None = None
    reserve_s: float | None = None
    calibration_self_generated: bool = False
    world_size: int | None = None
    device_name: str | None = None
    tokenizer_file: str | None = None  # the file name of the log's tokenizer_path
    byte_formula: str | None = None  # a key of BYTE_FORMULAS, when the log says

    @property
    def score(self) -> Score | None:
        """The submission's number: the last counting score line, preferring its ``_exact`` (8-decimal) twin."""
        counting = [s for s in self.scores if s.counts]
        if not counting:
            return None
        last = counting[-1]
        base = last.label.removesuffix("_exact")
        twins = [s for s in counting if s.label in (base, f"{base}_exact")]
        exact = [s for s in twins if s.label.endswith("_exact")]
        return exact[-1] if exact else last


def parse(text: str) -> LogFacts:
    """The facts of a log in the official line format (unknown lines are skipped)."""
    facts = LogFacts()
    for raw in text.splitlines():
        line = raw.strip()
        if m := _STEP.match(line):
            facts.steps, facts.iterations = int(m["step"]), int(m["total"])
            rest = m["rest"]
            if t := _TRAIN_TIME.search(rest):
                facts.train_ms = float(t["t"]) * (1 if t["unit"] == "ms" else 60_000)
            if a := _STEP_AVG.search(rest):
                facts.step_avg_ms = float(a["ms"])
            continue
        if m := _STOP.match(line):
            facts.stopped_by_clock = True
            facts.train_ms, facts.steps, facts.iterations = float(m["ms"]), int(m["step"]), int(m["total"])
        elif m := _SCORE.match(line):
            e = _EVAL_MS.search(m["rest"])
            score = Score(m["label"], float(m["loss"]), float(m["bpb"]), float(e["ms"]) if e else None)
            facts.scores.append(score)
        elif m := _TOTAL_EVAL.match(line):
            facts.eval_s = float(m["s"])
        elif m := _CODE_SIZE.match(line):
            if "uncompressed" not in m["what"]:  # the April records print both; the compressed one counts
                facts.code_bytes = int(m["n"])
        elif m := _TOTAL_SIZE.search(line):
            facts.total_bytes = int(m["n"])
        elif m := _VAL_TOKENS.match(line):
            facts.val_tokens = int(m["n"])
        elif m := _RESERVE.match(line):
            facts.reserve_s = float(m["s"])
        elif m := _DEVICE.match(line):
            facts.device_name = m["name"].strip()
        elif m := _BYTE_KIND.match(line):
            facts.byte_formula = "bytes" if m["kind"] == "byte" else "pieces"
        elif _BYTE_SIDECAR.match(line):
            facts.byte_formula = "sidecar"
        elif m := _CASEOPS.match(line):
            facts.byte_formula = "sidecar" if m["on"] == "True" else "pieces"
        if (m := _TOKENIZER.search(line)) and "{" not in m["path"]:  # not a source line the April logs echo
            facts.tokenizer_file = m["path"].rstrip("\"',);").rsplit("/", 1)[-1]
        if _SELF_GENERATED.search(line):
            facts.calibration_self_generated = True
        if m := _HESSIANS.search(line):
            facts.hessian_s = float(m["s"])
        if (m := _WORLD.search(line)) and line.startswith("world_size"):
            facts.world_size = int(m["n"])
    if facts.eval_s is None:  # no total printed: every counting score's eval time (the 4-decimal lines carry it)
        timed = [s.eval_ms for s in facts.scores if s.counts and s.eval_ms is not None]
        if timed:
            facts.eval_s = sum(timed) / 1000
    return facts


# -- writing ---------------------------------------------------------------------------------------------------


def score_lines(tag: str, official: tuple[float, float] | None, exact: tuple[float, float] | None, eval_ms: int):
    """The final lines of a pgolf run: ``(val_loss, val_bpb)`` by the official byte formula and by the sidecars.

    ``final_<tag>`` (4 decimals, with the eval time) and ``final_<tag>_exact`` (8 decimals) hold the number the
    challenge compares: the official formula's when there is one (SentencePiece tokenizers), else the exact one;
    ``final_<tag>_bytes_exact`` holds pgolf's exact number (the original bytes, from the sidecars) when known.
    """
    main = official or exact
    if main is None:
        raise ValueError("a run's final lines need at least one of the official and the exact numbers")
    lines = [
        f"final_{tag} val_loss:{main[0]:.4f} val_bpb:{main[1]:.4f} eval_time:{eval_ms}ms",
        f"final_{tag}_exact val_loss:{main[0]:.8f} val_bpb:{main[1]:.8f}",
    ]
    if exact is not None:
        lines.insert(0, f"final_{tag}_bytes_exact val_loss:{exact[0]:.8f} val_bpb:{exact[1]:.8f}")
    return lines
