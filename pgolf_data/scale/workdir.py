"""The work directory of a datatrove shard run (``<out>.work`` unless chosen), on a filesystem every task sees.

::

    run.json              the settings every file depends on; a resumed run must have the same ones
    plan.json             each task's slices (slices.Plan)
    tokenizer.pgt         the tokenizer artifact the tasks load
    counts/NNNNN.json     the count stage's document counts of task NNNNN's slices
    partials/NNNNN.*      the encode stage's partial of task NNNNN (partials.py); deleted once the shards are merged
    logs/<stage>/         datatrove's logging folder of each stage: logs/, stats/, and completions/NNNNN, the
                          markers by which a rerun skips finished tasks
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..corpus import Corpus
from ..manifest import TOKENIZER_NAME, write_atomic
from ..sharding import ShardConfig
from .slices import Plan, Slice, SliceCount, TaskStart, task_start

STAGES = ("count", "encode", "merge")


@dataclass(frozen=True)
class RunSettings:
    """What the files of a run depend on: corpus, tokenizer, shard settings, tasks and plan."""

    corpus: dict[str, Any]  # corpus.describe()
    tokenizer_sha256: str
    shard: dict[str, Any]  # name and ShardConfig.output_settings()
    tasks: int
    plan_sha256: str

    @classmethod
    def of(cls, corpus: Corpus, tokenizer: bytes, config: ShardConfig, plan: Plan) -> RunSettings:
        return cls(
            corpus=corpus.describe(),
            tokenizer_sha256=hashlib.sha256(tokenizer).hexdigest(),
            shard={"name": config.name, **config.output_settings()},
            tasks=len(plan.tasks),
            plan_sha256=hashlib.sha256(plan.to_json().encode()).hexdigest(),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def differences(self, other: dict[str, Any]) -> list[str]:
        """``key: was ..., now ...`` for each setting that differs from the recorded ``other``."""
        mine = json.loads(self.to_json())
        return [
            f"{k}: was {other.get(k)!r}, now {mine.get(k)!r}"
            for k in sorted(mine.keys() | other.keys())
            if mine.get(k) != other.get(k)
        ]


class WorkDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = root / "run.json"
        self.plan = root / "plan.json"
        self.tokenizer = root / TOKENIZER_NAME
        self.counts = root / "counts"
        self.partials = root / "partials"

    def logs(self, stage: str) -> Path:
        return self.root / "logs" / stage

    def completion(self, stage: str, rank: int) -> Path:
        """datatrove's marker of a finished task (``PipelineExecutor.mark_rank_as_completed``)."""
        return self.logs(stage) / "completions" / f"{rank:05d}"

    def save(self, settings: RunSettings, plan: Plan, tokenizer: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.tokenizer, tokenizer)
        write_atomic(self.plan, plan.to_json().encode())
        write_atomic(self.settings, settings.to_json().encode())

    def load_tokenizer(self) -> bytes:
        """The run's tokenizer artifact, checked against the settings' sha256."""
        data = self.tokenizer.read_bytes()
        expected = json.loads(self.settings.read_text(encoding="utf-8"))["tokenizer_sha256"]
        if hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"{self.tokenizer}: sha256 differs from the run's tokenizer ({expected})")
        return data

    def load_plan(self) -> Plan:
        return Plan.from_json(self.plan.read_text(encoding="utf-8"))

    def save_counts(self, rank: int, counts: list[SliceCount], run_sha256: str) -> None:
        self.counts.mkdir(parents=True, exist_ok=True)
        data = {"run_sha256": run_sha256, "slices": [[c.docs, c.lines] for c in counts]}
        write_atomic(self.counts / f"{rank:05d}.json", json.dumps(data).encode())

    def load_counts(self, rank: int, run_sha256: str, slices: int) -> list[SliceCount] | None:
        """Task ``rank``'s counts, or None when they are missing or not this run's."""
        try:
            data = json.loads((self.counts / f"{rank:05d}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if data.get("run_sha256") != run_sha256 or len(data.get("slices", ())) != slices:
            return None
        return [SliceCount(docs, lines) for docs, lines in data["slices"]]

    def task(self, rank: int, run_sha256: str) -> tuple[tuple[Slice, ...], TaskStart]:
        """Task ``rank``'s slices and where its documents start, from the plan and the count stage's counts."""
        plan = self.load_plan()
        counts = {}
        for r in range(rank):
            if plan.needs_count(r):
                found = self.load_counts(r, run_sha256, len(plan.tasks[r]))
                if found is None:
                    raise ValueError(f"task {rank}: the count of task {r} is missing from {self.counts}")
                counts[r] = found
        return plan.tasks[rank], task_start(plan, counts, rank)
