"""``submit --check``: a records folder against the challenge's rules, one line per rule, ours or anyone's.

Each line is PASS, FAIL or CANNOT (the folder's files cannot tell) with the file and the value it read. What is read:
``submission.json``, ``train_gpt.py`` (its size is the counted code: for an exec stub, the stub), the logs
(``*.log``, ``*.txt``: ``logs.parse``), and when given, the shard folder (``--data``) and pgolf artifacts. The rules
(docs/challenge.md; the complaints behind each: challenge issues #683, #1603, #1642, #2127):

- files: the folder's files, and a log per seed;
- bytes: code + model <= 16,000,000 in every log, in ``submission.json`` and for every given artifact;
- clocks: training <= 600 s including GPTQ Hessians collected from training data (#677, #1950), evaluation <= 600 s,
  certified only on 8xH100; the cap is checked after each step, so up to two steps past it are allowed (the records
  stop 38-137 ms late);
- statistics: >= 3 seeds for a record claim; ``submission.json`` agrees with its logs; against X, the README's
  0.005 nats/byte at p < 0.01 and PR #1902's one-sided Welch p < 0.25;
- data: the val token count against the canonical count for the tokenizer (#1923); no validation document among the
  training documents (#2127), by hashing every document of both splits, nor with small edits (sampled token
  n-grams shared with the train shards: ``overlap``); sidecar sums against the bytes of each
  val document: its original (``--val-text``), or for a lossless tokenizer its decoding (#897, #1604); and with the
  originals, decode-and-compare: each val document is the tokenizer's encoding of its original, id for id, and
  decodes to the original as the tokenizer normalizes it (``Tokenizer.normalize``: NFKC and whitespace for sp1024);
- legality: C1-C4 measured on each artifact (``legality``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf_data.manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest
from pgolf_data.shards import HEADER_BYTES, ShardSet

from .. import artifact
from ..runtime import Runtime
from . import logs, overlap
from .legality import Probe, probe_stream

TRAIN_LIMIT_S = 600.0
EVAL_LIMIT_S = 600.0
MIN_SEEDS = 3
# Val token counts the records' logs print, by tokenizer file: after each script's cut to whole windows of its
# training length. sp1024 has two: 63,779,840 in the 2026-03-17 baseline's log (docs/challenge.md), 62,021,632 in the
# later records' logs (their val_loader line). Others: sp4096 in 2026-04-01_Vocab4096_MLPMult4_WD085, sp8192 and the
# CaseOps model in the April records.
CANONICAL_VAL_TOKENS = {
    "fineweb_1024_bpe.model": (62_021_632, 63_779_840),
    "fineweb_4096_bpe.model": (45_508_608,),
    "fineweb_8192_bpe.model": (40_540_160,),
    "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model": (47_851_520,),
}
_H100 = re.compile(r"8\s*[x×]\s*(NVIDIA\s+)?H100", re.IGNORECASE)


@dataclass(frozen=True)
class Line:
    rule: str
    status: str  # PASS, FAIL, CANNOT
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.status:<6} {self.rule}: {self.where}: {self.message}"


@dataclass
class Report:
    directory: Path
    lines: list[Line] = field(default_factory=list)

    def add(self, rule: str, status: bool | None, where, message: str) -> None:
        word = "CANNOT" if status is None else "PASS" if status else "FAIL"
        self.lines.append(Line(rule, word, str(where), message))

    @property
    def ok(self) -> bool:
        return all(line.status != "FAIL" for line in self.lines)

    def format(self) -> str:
        counts = {s: sum(line.status == s for line in self.lines) for s in ("PASS", "FAIL", "CANNOT")}
        summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        verdict = "no rule fails" if self.ok else "FAILS"
        return "\n".join([*map(str, self.lines), f"{self.directory}: {verdict} ({summary})"])


@dataclass(frozen=True)
class Folder:
    directory: Path
    meta: dict | None  # submission.json
    code_bytes: int | None
    stub: bool  # train_gpt.py is a self-extracting exec stub (its size is what counts)
    logs: dict[str, logs.LogFacts]  # file name -> facts

    def seed_log(self, seed) -> str | None:
        """The log of ``seed``: named for it (``train_seed42.log``, ``train_seed42_rerun.log``: the first by name),
        or a folder's only log when it has one seed (the baseline's ``train.log``)."""
        pattern = re.compile(rf"seed[_-]?{re.escape(str(seed))}(?!\d)")
        names = sorted(n for n in self.logs if pattern.search(n))
        if not names and len(self.logs) == 1 and len((self.meta or {}).get("seeds") or []) == 1:
            names = list(self.logs)
        return names[0] if names else None


def read_folder(directory: Path, report: Report) -> Folder:
    meta = None
    path = directory / "submission.json"
    if path.is_file():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            report.add("files", True, path, "readable")
        except json.JSONDecodeError as e:
            report.add("files", False, path, f"not valid JSON: {e}")
    else:
        report.add("files", False, path, "missing")
    script = directory / "train_gpt.py"
    code = script.stat().st_size if script.is_file() else None
    head = script.read_bytes()[:4096].split(b"\n")[:3] if code is not None else []
    stub = any(b"exec(" in line and b"decompress(" in line for line in head)
    report.add("files", code is not None, script, f"{code:,} bytes" if code is not None else "missing")
    found = {}
    for p in sorted(directory.iterdir()):
        if p.suffix in (".log", ".txt") and p.is_file() and p.name != "requirements.txt":
            facts = logs.parse(p.read_text(encoding="utf-8", errors="replace"))
            if facts.scores or facts.steps is not None:
                found[p.name] = facts
    folder = Folder(directory, meta, code, stub, found)
    seeds = (meta or {}).get("seeds") or []
    if not found:
        report.add("files", False, directory, "no training log (*.log, *.txt with the official lines)")
    for seed in seeds:
        if folder.seed_log(seed) is None:
            report.add("files", False, directory, f"seed {seed} of submission.json has no log (train_seed{seed}.log)")
    return folder


def check_bytes(folder: Folder, artifacts: list[Path], report: Report) -> None:
    limit = artifact.LIMIT
    for name, facts in folder.logs.items():
        where = folder.directory / name
        if facts.total_bytes is None:
            report.add("bytes", None, where, "no 'Total submission size' line")
            continue
        report.add("bytes", facts.total_bytes <= limit, where, f"total {facts.total_bytes:,} (limit {limit:,})")
        if facts.code_bytes is not None and folder.code_bytes is not None and facts.code_bytes != folder.code_bytes:
            as_is = facts.total_bytes - facts.code_bytes + folder.code_bytes
            message = (
                f"the log counts {facts.code_bytes:,} bytes of code, but train_gpt.py is {folder.code_bytes:,} "
                f"(counting the file as it is: {as_is:,})"
            )
            # An exec stub is what it counts; a plain script may count a compressed form of itself the folder lacks.
            report.add("bytes", False if folder.stub else None, where, message)
    if folder.meta and "bytes_total" in folder.meta:
        total = int(folder.meta["bytes_total"])
        report.add("bytes", total <= limit, folder.directory / "submission.json", f"bytes_total {total:,}")
    for path in artifacts:
        total = path.stat().st_size + (folder.code_bytes or 0)
        twice = artifact.read(path).sizes.get("code", 0) if folder.stub else 0
        note = (
            f" (conservative: the artifact's {twice:,}-byte copy of the evaluation code, which the exec stub also "
            "carries, counts twice, as the files are shipped)"
            if twice
            else ""
        )
        report.add("bytes", total <= limit, path, f"{path.stat().st_size:,} + train_gpt.py = {total:,}{note}")


def _hardware(folder: Folder) -> tuple[bool, str]:
    claimed = str((folder.meta or {}).get("hardware", ""))
    names = {f.device_name for f in folder.logs.values() if f.device_name}
    worlds = {f.world_size for f in folder.logs.values() if f.world_size}
    h100 = bool(_H100.search(claimed)) and all("H100" in n for n in names) and worlds <= {8}
    said = claimed or ", ".join(sorted(names)) or "not stated"
    return h100, f"hardware {said}" + (f", world size {sorted(worlds)}" if worlds else "")


def check_clocks(folder: Folder, report: Report) -> None:
    h100, hardware = _hardware(folder)
    for name, f in folder.logs.items():
        where = folder.directory / name
        if f.train_ms is None:
            report.add("clock train", None, where, "no train_time in the log")
        else:
            seconds = f.train_ms / 1000
            hessians = f.hessian_s if f.hessian_s is not None and not f.calibration_self_generated else 0.0
            total = seconds + hessians
            slack = 2 * (f.step_avg_ms or 0) / 1000  # the cap is checked after a step: the last may end past it
            detail = f"{seconds:.3f} s" + (f" + GPTQ Hessians on training data {hessians:.1f} s" if hessians else "")
            verdict = total <= TRAIN_LIMIT_S + slack
            if not h100:
                report.add("clock train", None, where, f"{detail}; {hardware}: cannot certify the 8xH100 clock")
            else:
                report.add("clock train", verdict, where, f"{detail} = {total:.3f} s (limit {TRAIN_LIMIT_S:.0f} s)")
        if f.eval_s is None:
            report.add("clock eval", None, where, "no eval time in the log")
        elif not h100:
            report.add("clock eval", None, where, f"{f.eval_s:.1f} s; {hardware}: cannot certify the 8xH100 clock")
        else:
            report.add("clock eval", f.eval_s <= EVAL_LIMIT_S, where, f"{f.eval_s:.1f} s (limit {EVAL_LIMIT_S:.0f} s)")


def seed_scores(folder: Folder) -> dict[str, float]:
    """BPB per seed from the logs (the evidence), falling back to ``submission.json``."""
    out = {}
    seeds = (folder.meta or {}).get("seeds") or []
    for seed in seeds:
        name = folder.seed_log(seed)
        score = folder.logs[name].score if name else None
        if score is not None:
            out[str(seed)] = score.val_bpb
    if not seeds:
        out = {name: f.score.val_bpb for name, f in folder.logs.items() if f.score is not None}
    return out


def check_statistics(folder: Folder, compare_to: str | None, report: Report) -> None:
    from pipelines.stats import compare

    meta, where = folder.meta or {}, folder.directory / "submission.json"
    scores = seed_scores(folder)
    n = len(meta.get("seeds") or []) or len(scores)
    report.add("seeds", n >= MIN_SEEDS, where, f"{n} seed(s); a record claim needs at least {MIN_SEEDS}")
    for seed, result in (meta.get("seed_results") or {}).items():
        if seed in scores and "val_bpb" in result:
            agree = abs(float(result["val_bpb"]) - scores[seed]) <= 5e-8
            report.add(
                "logs agree", agree, where, f"seed {seed}: val_bpb {result['val_bpb']} here, {scores[seed]} in its log"
            )
    reference = compare_to if compare_to is not None else meta.get("comparison_baseline_bpb")
    if reference is None:
        report.add("significance", None, where, "nothing to compare with: give --compare-to X")
        return
    from .folder import Reference

    ref = Reference.parse(str(reference))
    if len(scores) < 2:
        report.add("significance", None, where, f"{len(scores)} seed score(s) in the logs: no test possible")
        return
    c = compare(ref.label, list(ref.bpb), "submission", list(scores.values()))
    delta = f"Δ {c.delta_bpb:+.5f} BPB = {c.delta_nats:+.5f} nats/byte against {ref.label}"
    p_margin, p_any = c.p_candidate_better, c.p_candidate_ahead
    report.add(
        "significance README", None if np.isnan(p_margin) else p_margin < c.alpha, where,
        f"{delta}; improvement of at least {c.margin_nats:g} nats/byte at p = {p_margin:.3g} (needs < {c.alpha:g})",
    )  # fmt: skip
    report.add(
        "significance PR #1902", None if np.isnan(p_any) else p_any < 0.25, where,
        f"one-sided Welch p = {p_any:.3g} for any improvement (needs < 0.25)",
    )  # fmt: skip


def _tokenizer_names(folder: Folder) -> list[str]:
    """The folder's official tokenizer files: in ``tokenizers/`` or named by a log's ``tokenizer_path``."""
    names = {p.name for p in (folder.directory / "tokenizers").glob("*")} | {
        f.tokenizer_file for f in folder.logs.values() if f.tokenizer_file
    }
    return sorted(n for n in names if n in CANONICAL_VAL_TOKENS)


def matches_canonical(count: int, canonical: tuple[int, ...]) -> bool:
    """``count`` is a canonical count, or a whole split that a script's cut to whole windows would make one."""
    return any(
        count == c or (count > c and any(c % w == 0 and count // w * w == c for w in (1024, 2048))) for c in canonical
    )


def check_val_count(folder: Folder, data: Path | None, report: Report) -> None:
    names = _tokenizer_names(folder)
    canonical = CANONICAL_VAL_TOKENS[names[0]] if names else None
    counts = {str(folder.directory / n): f.val_tokens for n, f in folder.logs.items() if f.val_tokens is not None}
    if data is not None:
        tokens = ShardSet.open(data, "val").num_tokens
        counts[str(data)] = tokens - 1  # the logs count targets: every token but the first
        manifest = _manifest(data)
        if manifest is not None:
            claimed = manifest.splits["val"].tokens
            report.add(
                "val tokens", tokens == claimed, data / MANIFEST_NAME,
                f"{tokens:,} val tokens in the shards, {claimed:,} in the manifest "
                f"({manifest.splits['val'].docs:,} documents of {manifest.corpus.get('source', 'the corpus')})",
            )  # fmt: skip
    if not counts:
        report.add("val tokens", None, folder.directory, "no val token count in the logs (and no --data)")
    for where, n in counts.items():
        if canonical is None:
            report.add("val tokens", None, where, f"{n:,} targets; no canonical count known for this tokenizer")
        else:
            ok = matches_canonical(n, canonical)
            canon = ", ".join(f"{c:,}" for c in canonical)
            report.add("val tokens", ok, where, f"{n:,} targets; canonical for {names[0]}: {canon}")


def _manifest(data: Path) -> Manifest | None:
    return Manifest.load(data) if (data / MANIFEST_NAME).is_file() else None


def _doc_hashes(shards: ShardSet, bos_id: int) -> dict[bytes, int]:
    """sha256 of each document's token bytes (BOS to BOS) -> its index, streaming the split."""
    out: dict[bytes, int] = {}
    carry = np.zeros(0, dtype=np.uint16)
    index = 0
    for _, tokens, _ in shards.chunks():
        tokens = np.concatenate([carry, tokens])
        starts = np.flatnonzero(tokens == bos_id)
        for a, b in itertools.pairwise(starts):
            out.setdefault(hashlib.sha256(tokens[a:b].tobytes()).digest(), index)
            index += 1
        carry = tokens[starts[-1] :] if starts.size else tokens
    if carry.size:
        out.setdefault(hashlib.sha256(carry.tobytes()).digest(), index)
    return out


def check_leak(data: Path, bos_id: int, report: Report) -> None:
    val = _doc_hashes(ShardSet.open(data, "val"), bos_id)
    train = ShardSet.open(data, "train")
    leaked = [(i, val[h]) for h, i in _doc_hashes(train, bos_id).items() if h in val]
    files = f"{len(train.token_files)} train shard(s)"
    if leaked:
        first_train, first_val = min(leaked)
        report.add(
            "val not in train", False, data,
            f"{len(leaked):,} of {len(val):,} val documents occur among the {files}' documents "
            f"(e.g. val document {first_val} is train document {first_train})",
        )  # fmt: skip
    else:
        report.add("val not in train", True, data, f"none of {len(val):,} val documents occurs in the {files}")


def _bytes_per_token(val: ShardSet, bos_id: int, tok) -> float | None:
    """The val split's bytes per document token (BOS aside): from its sidecars, else by decoding its first 65,536."""
    if val.has_bytes:
        chunks = list(val.chunks())
        tokens = sum(len(t) - int((t == bos_id).sum()) for _, t, _ in chunks)
        return sum(int(c.sum()) for _, _, c in chunks) / max(tokens, 1)
    if tok is None:
        return None
    ids = [i for i in val.read(0, min(val.num_tokens, 1 << 16)).tolist() if i != bos_id]
    return len(tok.decode(ids).encode("utf-8")) / max(len(ids), 1)


def check_near_duplicates(data: Path, bos_id: int, tok, report: Report) -> None:
    """Val documents in the train shards with small edits (#2127): shared sampled token n-grams (``overlap``)."""
    val, train = ShardSet.open(data, "val"), ShardSet.open(data, "train")
    n = overlap.ngram_length(_bytes_per_token(val, bos_id, tok))
    found = overlap.overlap(val, train, bos_id, n=n)
    near = found.near_duplicates()
    measured = int(np.isfinite(found.share).sum())
    share = len(near) / max(measured, 1)
    examples = "; ".join(
        f"val document {d} ({found.share[d]:.0%} of its n-grams) near token {found.offset[d]} of "
        f"{train.token_files[found.shard[d]].name}"
        for d in near[:3]
    )
    short = len(found.share) - measured
    report.add(
        "val near-duplicates in train", share <= overlap.DOCS_LIMIT, data,
        f"{len(near):,} of {measured:,} val documents ({share:.2%}; limit {overlap.DOCS_LIMIT:.0%}) share at least "
        f"{overlap.DOC_SHARE:.0%} of their {overlap.SAMPLES} sampled {n}-token n-grams with the "
        f"{len(train.token_files)} train shard(s)" + (f" ({short} shorter than {n} tokens unmeasured)" if short else "")
        + (f"; e.g. {examples}" if examples else ""),
    )  # fmt: skip


def val_texts(source: str, n_docs: int) -> list[str]:
    """The first ``n_docs`` documents of the corpus ``source``: the val split's originals (pgolf's shards and the
    challenge's both take the first documents of their corpus for val)."""
    from pgolf_data.corpus import open_corpus

    return list(open_corpus(source, max_docs=n_docs))


def _first_difference(a, b) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_sidecars(data: Path, tok, val_text: str | None, report: Report) -> None:
    """The byte accounting (sidecar sums against each val document's original bytes: from the corpus ``val_text``
    where given, else from decoding, which only a lossless tokenizer allows) and the decode-and-compare of every val
    document against its original, as the tokenizer normalizes it (#897, #1604)."""
    val = ShardSet.open(data, "val")
    starts = np.append(val.doc_starts(tok.bos_id), val.num_tokens)
    n_docs = len(starts) - 1
    texts = val_texts(val_text, n_docs) if val_text else None
    if texts is not None and len(texts) != n_docs:
        for rule in ("byte accounting", "decode and compare"):
            report.add(rule, False, data, f"{n_docs:,} val documents in the shards, {len(texts):,} in {val_text}")
        return
    docs = [val.read(int(starts[i]) + 1, int(starts[i + 1])) for i in range(n_docs)]
    check_byte_sums(data, val, tok, starts, docs, texts, report)
    check_decode(data, tok, docs, texts, report)


def check_byte_sums(data: Path, val: ShardSet, tok, starts, docs: list[np.ndarray], texts, report: Report) -> None:
    if not val.has_bytes:
        report.add("byte accounting", None, data, "no byte sidecars: BPB rests on the official formula alone")
        return
    if texts is None and not tok.lossless:
        report.add(
            "byte accounting", None, data,
            f"tokenizer {tok.spec.name} is lossy: decoding cannot give the original bytes; give --val-text CORPUS",
        )  # fmt: skip
        return
    sums = val.doc_byte_sums(tok.bos_id)
    source = "original" if texts is not None else "decoded"
    lengths = [len(t.encode("utf-8")) for t in texts] if texts is not None else [
        len(tok.decode(ids).encode("utf-8")) for ids in docs
    ]  # fmt: skip
    bad = [(i, int(sums[i]), n) for i, n in enumerate(lengths) if n != sums[i]]
    if bad:
        i, side, length = bad[0]
        offset = HEADER_BYTES + 2 * int(starts[i])
        report.add(
            "byte accounting", False, data,
            f"{len(bad)} val document(s) whose sidecar sum differs from their {source} UTF-8 length; first: document "
            f"{i} (stream offset {offset} of the split) sums to {side}, its {source} text has {length} bytes",
        )  # fmt: skip
    else:
        report.add("byte accounting", True, data, f"all {len(sums):,} val documents: sidecar sum = {source} bytes")


def check_decode(data: Path, tok, docs: list[np.ndarray], texts: list[str] | None, report: Report) -> None:
    """Each val document is the tokenizer's encoding of its original, id for id, and decodes to the original as the
    tokenizer normalizes it (the original itself for a lossless tokenizer)."""
    if texts is None:
        report.add("decode and compare", None, data, "needs the val documents' originals: give --val-text CORPUS")
        return
    normalized = [tok.normalize(t) for t in texts]
    if any(n is None for n in normalized):
        report.add("decode and compare", None, data, f"tokenizer {tok.spec.name} cannot say how it normalizes text")
        return
    what = "the original text" if tok.lossless else f"the original as {tok.spec.name} normalizes it"
    encoded = itertools.chain.from_iterable(tok.encode_batch(texts[i : i + 1024]) for i in range(0, len(texts), 1024))
    for i, (ids, norm, enc) in enumerate(zip(docs, normalized, encoded)):
        if not np.array_equal(ids, enc):
            at = _first_difference(ids.tolist(), enc.tolist())
            report.add(
                "decode and compare", False, data,
                f"val document {i} is not the tokenizer's encoding of its original: first difference at token {at} "
                f"of {len(ids)} (the shards hold {ids[at:at + 1].tolist()}, encoding gives {enc[at:at + 1].tolist()})",
            )  # fmt: skip
            return
        decoded = tok.decode(ids)
        if decoded != norm:
            at = _first_difference(decoded, norm)
            report.add(
                "decode and compare", False, data,
                f"val document {i} decodes to text that differs from {what} at character {at}: "
                f"{decoded[at:at + 20]!r} vs {norm[at:at + 20]!r}",
            )  # fmt: skip
            return
    report.add(
        "decode and compare", True, data,
        f"all {len(docs):,} val documents are the tokenizer's encoding of their originals, id for id, and decode to "
        f"{what}" + ("" if tok.lossless else "; the sidecars, not decoding, give the original bytes"),
    )  # fmt: skip


def _data_tokenizer(data: Path, artifacts: list[Path], directory: Path):
    """The shards' tokenizer: the shard folder's ``tokenizer.pgt``, an artifact's, or the records folder's file in
    ``tokenizers/`` (a ``.model`` or tokenizer JSON), in that order; None without any."""
    from pgolf_data.tokenizer.artifact import from_artifact
    from pgolf_data.tokenizer.interop import import_tokenizer

    if (data / TOKENIZER_NAME).is_file():
        return from_artifact((data / TOKENIZER_NAME).read_bytes(), where=str(data / TOKENIZER_NAME))
    if artifacts:
        return artifact.read(artifacts[0]).tokenizer()
    files = sorted(p for p in (directory / "tokenizers").glob("*") if p.suffix in (".model", ".json"))
    if files:
        return import_tokenizer(files[0].read_bytes(), name=files[0].stem, where=str(files[0]))
    return None


def check_legality(path: Path, data: Path | None, rt: Runtime, report: Report) -> None:
    probe = Probe(path, rt)
    val = ShardSet.open(data, "val").read(0, min(4096, ShardSet.open(data, "val").num_tokens)) if data else None
    stream = probe_stream(probe.vocab, probe.bos_id, None if val is None else val.astype(np.int64))
    for rule, run in (
        ("C1 causal", probe.c1_causal),
        ("C2 normalized", probe.c2_normalized),
        ("C3 score before update", probe.c3_score_first),
        ("C4 single pass", probe.c4_single_pass),
    ):
        ok, message = run(stream)
        report.add(rule, ok, path, message)


def check_folder(
    directory: str | Path,
    *,
    data: str | Path | None = None,
    artifacts: list[str | Path] = (),
    compare_to: str | None = None,
    val_text: str | None = None,
    rt: Runtime,
) -> Report:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"records folder {directory} does not exist")
    report = Report(directory)
    found = sorted(directory.glob("*.pga"))
    arts = [Path(a) for a in artifacts] + [p for p in found if p not in [Path(a) for a in artifacts]]
    folder = read_folder(directory, report)
    check_bytes(folder, arts, report)
    check_clocks(folder, report)
    check_statistics(folder, compare_to, report)
    data_dir = Path(data) if data is not None else None
    check_val_count(folder, data_dir, report)
    if data_dir is None:
        for rule in ("val not in train", "val near-duplicates in train", "byte accounting", "decode and compare"):
            report.add(rule, None, directory, "needs the shard folder: give --data SHARDS")
    else:
        tok = _data_tokenizer(data_dir, arts, directory)
        bos = tok.bos_id if tok is not None else int(ShardSet.open(data_dir, "val").read(0, 1)[0])
        check_leak(data_dir, bos, report)
        check_near_duplicates(data_dir, bos, tok, report)
        if tok is None:
            for rule in ("byte accounting", "decode and compare"):
                report.add(rule, None, data_dir, "no tokenizer to decode with (tokenizer.pgt, artifact, tokenizers/)")
        else:
            check_sidecars(data_dir, tok, val_text, report)
    if not arts:
        report.add("legality", None, directory, "no pgolf artifact (give --artifact RUN/model.pga): C1-C4 unmeasured")
    for path in arts:
        check_legality(path, data_dir, rt, report)
    return report
