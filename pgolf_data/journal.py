"""``resume.json``: the shard writer's record of its completed shards, so that an interrupted run can continue.

After each shard (and its sidecar) is renamed into place, the writer appends it to the journal with the point where
the stream continues: the first document not completely written, how many of its tokens are already in the shards,
the corpus hash of the documents before it and the split statistics so far. The journal also holds the run's
fingerprint (tokenizer, corpus, output settings): a resumed run must have the same one. It is rewritten atomically
after every shard and deleted once ``manifest.json`` is written, so it only ever exists beside an unfinished run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .corpus import DocsHasher
from .manifest import ShardEntry, write_atomic
from .shards import ShardFormatError, Split, file_sha256, read_header

JOURNAL_NAME = "resume.json"
Stats = dict[str, dict[str, int]]  # per split: docs, tokens, bytes


def empty_stats() -> Stats:
    return {split: {"docs": 0, "tokens": 0, "bytes": 0} for split in ("val", "train")}


@dataclass(frozen=True)
class ResumePoint:
    """Where the stream continues after a completed shard."""

    next_doc: int  # first document not completely written
    offset: int  # its tokens already written
    prefix_sha256: str  # corpus hash of documents [0, next_doc)
    stats: Stats  # per split: docs, tokens, bytes of documents [0, next_doc)

    @classmethod
    def start(cls) -> ResumePoint:
        """The beginning of the corpus: nothing written yet."""
        return cls(0, 0, DocsHasher().hexdigest(), empty_stats())


@dataclass
class Journal:
    """The run's output settings and every completed shard with the point after it."""

    path: Path
    fingerprint: dict[str, Any]
    shards: list[dict[str, Any]]  # {"split", "entry": ShardEntry fields, "resume": ResumePoint fields}

    def save(self) -> None:
        data = {"fingerprint": self.fingerprint, "shards": self.shards}
        write_atomic(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, data["fingerprint"], list(data["shards"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: unreadable resume journal ({e}); use --force to start over") from None

    def record(self, split: Split, entry: ShardEntry, point: ResumePoint) -> None:
        """Append a shard whose files are complete, and the point after it."""
        self.shards.append({"split": split, "entry": asdict(entry), "resume": asdict(point)})
        self.save()

    def resume_point(self) -> ResumePoint:
        return ResumePoint(**self.shards[-1]["resume"]) if self.shards else ResumePoint.start()

    def entries(self, split: Split) -> tuple[ShardEntry, ...]:
        return tuple(ShardEntry(**s["entry"]) for s in self.shards if s["split"] == split)

    def file_names(self) -> set[str]:
        """The token shards and sidecars the journal vouches for."""
        return {name for s in self.shards for name in (s["entry"]["file"], s["entry"]["bytes_file"]) if name}


def resume(path: Path, fingerprint: dict[str, Any], log: Callable[[str], None]) -> Journal:
    """The journal of the interrupted run at ``path``, cut before its first shard that is no longer intact.

    Refuses a run whose fingerprint differs from the recorded one (its shards would not continue this run's).
    """
    recorded = Journal.load(path)
    changed = sorted(
        k for k in fingerprint.keys() | recorded.fingerprint.keys() if fingerprint.get(k) != recorded.fingerprint.get(k)
    )
    if changed:
        details = "; ".join(f"{k}: was {recorded.fingerprint.get(k)!r}, now {fingerprint.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume in {path.parent}: the settings differ from the interrupted run's ({details})")
    return Journal(path, fingerprint, _verified_prefix(path.parent, recorded.shards, log))


def _verified_prefix(out_dir: Path, shards: list[dict[str, Any]], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The recorded shards up to the first one whose files are missing or differ from the record."""
    for n, record in enumerate(shards):
        entry = ShardEntry(**record["entry"])
        pairs = [(entry.file, entry.sha256)]
        if entry.bytes_file is not None:
            pairs.append((entry.bytes_file, entry.bytes_sha256))
        for name, sha in pairs:
            problem = _problem(out_dir / name, entry.tokens, sha)
            if problem:
                log(f"resume: {name}: {problem}; rewriting from there")
                return shards[:n]
    return shards


def _problem(path: Path, tokens: int, sha256: str | None) -> str | None:
    """What is wrong with a recorded shard file, or None when it is as recorded."""
    if not path.is_file():
        return "missing"
    try:
        count = read_header(path)
    except ShardFormatError as e:
        return str(e)
    if count != tokens:
        return f"{count} tokens, the journal recorded {tokens}"
    if file_sha256(path) != sha256:
        return "sha256 differs from the journal"
    return None
