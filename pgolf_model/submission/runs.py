"""A pgolf run directory as a submission sees it: its config, clocks, bytes and final score, and its log rendered
in the official line format (``logs``).

A run directory is what ``python -m pgolf_model.train`` writes (``log.jsonl``, ``summary.json``, ``model.pga``) or
what a generated ``train_gpt.py`` writes (the same, plus ``eval.json``: the artifact scored as its config says, with
the official formula's number and the exact one). Without ``eval.json`` the score is the trainer's own round trip of
the artifact (windows of ``train.seq_len``, no TTT), with the numbers its summary holds; ``final.score_run`` writes
the ``eval.json`` of such a run whose eval config asks for more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from . import logs

EVAL_NAME = "eval.json"


class RunError(ValueError):
    """A run directory that is missing a file or a field a submission needs."""


@dataclass(frozen=True)
class FinalEval:
    """The artifact's score: ``(val_loss, val_bpb)`` by the official byte formula and by the sidecars."""

    tag: str  # the final lines' label: final_<tag>
    official: tuple[float, float] | None
    exact: tuple[float, float] | None
    seconds: float | None
    targets: int
    how: str  # what was scored: windows, stride, TTT mode

    @property
    def score(self) -> tuple[float, float]:
        """The number the challenge compares: the official formula's when there is one."""
        return self.official or self.exact  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {
            "tag": self.tag,
            "official": list(self.official) if self.official else None,
            "exact": list(self.exact) if self.exact else None,
            "seconds": self.seconds,
            "targets": self.targets,
            "how": self.how,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FinalEval:
        official, exact = data.get("official"), data.get("exact")
        return cls(
            data["tag"],
            tuple(official) if official else None,
            tuple(exact) if exact else None,
            data.get("seconds"),
            int(data["targets"]),
            data.get("how", ""),
        )


@dataclass(frozen=True)
class Run:
    directory: Path
    summary: dict
    start: dict  # log.jsonl's start record
    records: tuple[dict, ...]  # every log.jsonl record, in order
    final: FinalEval
    host: dict  # eval.json's device_name and cuda_version, when the run wrote one

    @property
    def config(self) -> Config:
        return Config.from_dict(self.start["config"], where=f"{self.directory}/log.jsonl: config")

    @property
    def seed(self) -> int:
        return self.config.train.seed

    @property
    def artifact_bytes(self) -> int:
        return int(self.summary["artifact_bytes"])

    @property
    def step_avg_ms(self) -> float:
        steps = int(self.summary["steps"])
        return 1000 * float(self.summary["train_seconds"]) / steps if steps else 0.0

    @property
    def device_name(self) -> str:
        return str(self.host.get("device_name") or self.start.get("device", "unknown"))

    def log_text(self, code_bytes: int) -> str:
        """The run's log in the official line format; ``code_bytes``: the counted code (``train_gpt.py``)."""
        s, start, iterations = self.summary, self.start, self.config.train.iterations
        lines = [
            f"pgolf_run preset:{s['preset']} seed:{self.seed}",
            f"device_name:{self.device_name}",
            f"world_size:{start.get('world_size', 1)} grad_accum_steps:{start.get('grad_accum', 1)}",
            f"torch_version:{start.get('torch', 'unknown')}",
            f"model_params:{s['params']}",
            f"val_tokens: {self.final.targets}",
        ]
        for r in self.records:
            step = r.get("step")
            if r["event"] == "train":
                ms = 1000 * r["elapsed_s"]
                lines.append(
                    f"step:{step}/{iterations} train_loss:{r['train_loss']:.4f} train_time:{ms:.0f}ms "
                    f"step_avg:{ms / max(step, 1):.2f}ms"
                )
            elif r["event"] == "val":
                ms = 1000 * r["elapsed_s"]
                suffix = "" if "val_bpb" in r else "_official"  # an official folder has no exact number
                loss, bpb = r[f"val_loss{suffix}"], r[f"val_bpb{suffix}"]
                lines.append(
                    f"step:{step}/{iterations} val_loss:{loss:.4f} val_bpb:{bpb:.4f} "
                    f"train_time:{ms:.0f}ms step_avg:{ms / max(step, 1):.2f}ms"
                )
            elif r["event"] == "qat":
                lines.append(f"late_qat:enabled step:{step} scale:{r['lr_scale']:.4f}")
            elif r["event"] == "quant":
                seconds = r["seconds"]
                times = " ".join(f"{k}:{v:.1f}s" for k, v in seconds.items())
                lines.append(f"quant:{self.config.quant.method} {times}".rstrip())
                if "hessians" in seconds:  # pgolf's calibration samples the model itself: no data is read
                    lines.append(f"GPTQ:collected Hessians from self-generated sequences in {seconds['hessians']:.1f}s")
        if s.get("stopped_by_clock"):
            lines.append(
                f"stopping_early: wallclock_cap train_time:{1000 * s['train_seconds']:.0f}ms step:{s['steps']}"
            )
        parts = ", ".join(f"{name} {size}" for name, size in s["artifact_parts"].items())
        lines += [
            f"Code size: {code_bytes} bytes",
            f"Serialized model pgolf: {self.artifact_bytes} bytes ({parts})",
            f"Total submission size pgolf: {self.artifact_bytes + code_bytes} bytes",
            f"eval: {self.final.how}",
        ]
        seconds = self.final.seconds
        lines += logs.score_lines(self.final.tag, self.final.official, self.final.exact, round(1000 * (seconds or 0)))
        if seconds is not None:
            lines.append(f"total_eval_time:{seconds:.1f}s")
        return "\n".join(lines) + "\n"


def load_run(directory: str | Path) -> Run:
    directory = Path(directory)
    summary_path, log_path = directory / "summary.json", directory / "log.jsonl"
    for path in (summary_path, log_path):
        if not path.is_file():
            raise RunError(f"{path} does not exist: {directory} is not a finished pgolf run")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    records = tuple(json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip())
    starts = [r for r in records if r["event"] == "start"]
    if not starts:
        raise RunError(f"{log_path}: no start record")
    eval_path = directory / EVAL_NAME
    host: dict = {}
    if eval_path.is_file():
        host = json.loads(eval_path.read_text(encoding="utf-8"))
        final = FinalEval.from_dict(host)
    else:
        official = summary.get("artifact_val_bpb_official")
        exact = summary.get("artifact_val_bpb")
        final = FinalEval(
            "pgolf_roundtrip",
            (summary["artifact_val_loss_official"], official) if official is not None else None,
            (summary["artifact_val_loss"], exact) if exact is not None else None,
            summary.get("artifact_eval_seconds"),
            int(summary.get("val_targets") or summary["val_targets_official"]),
            f"artifact round trip, windows of train.seq_len = {starts[-1]['config']['train']['seq_len']}, no TTT",
        )
    return Run(directory, summary, starts[-1], records, final, host)
