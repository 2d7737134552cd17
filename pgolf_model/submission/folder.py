"""A records folder from pgolf runs: ``submission.json``, ``README.md``, ``train_seed<N>.log``, ``requirements.txt``
and ``train_gpt.py``, as the challenge's ``records/track_10min_16mb/<date>_<name>/`` folders hold them.

Every file is a function of the runs and the arguments only (the date is the newest run's, from its files), so the
same runs give the same bytes. Fields of ``submission.json`` follow the records' (e.g. the 2026-04-27 1.0611 one);
``val_bpb`` is the number the challenge compares (the official byte formula where it applies) and ``val_bpb_exact``
pgolf's exact one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pgolf_data.manifest import write_atomic

from .. import artifact
from ..cli import _show, flat
from ..presets import preset
from . import stub
from .runs import Run

LN2 = math.log(2)
TRACK = "10min_16mb"


@dataclass(frozen=True)
class Identity:
    name: str
    author: str
    github_id: str
    blurb: str = ""


@dataclass(frozen=True)
class Reference:
    """What the runs are compared with: a BPB, or a previous record's per-seed numbers."""

    label: str
    bpb: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> Reference:
        """A number, or the path of a records folder's ``submission.json``."""
        try:
            return cls(f"BPB {float(text)}", (float(text),))
        except ValueError:
            pass
        path = Path(text)
        if path.is_dir():
            path = path / "submission.json"
        if not path.is_file():
            raise FileNotFoundError(f"--compare-to {text}: neither a number nor a submission.json")
        data = json.loads(path.read_text(encoding="utf-8"))
        seeds = data.get("seed_results") or {}
        values = tuple(float(r["val_bpb"]) for r in seeds.values() if "val_bpb" in r)
        if not values and "val_bpb" not in data:
            raise ValueError(f"{path}: no val_bpb and no seed_results[].val_bpb")
        return cls(f"{data.get('name', path.parent.name)} ({path.parent.name})", values or (float(data["val_bpb"]),))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def run_date(run: Run) -> str:
    """The run's date: when it wrote ``summary.json``, its last file (UTC), so the runs fix it, not the clock."""
    stamp = os.stat(run.directory / "summary.json").st_mtime
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d")


def config_changes(run: Run) -> dict[str, object]:
    """The run's settings that differ from the baseline preset, by name."""
    base, own = flat(preset("baseline")), flat(run.config)
    return {k: v for k, v in own.items() if base.get(k) != v and k != "train.seed"}


def submission_json(runs: list[Run], who: Identity, code_bytes: int, ref: Reference | None) -> dict:
    loss = [r.final.score[0] for r in runs]
    bpb = [r.final.score[1] for r in runs]
    mean_loss, std_loss = _mean_std(loss)
    mean_bpb, std_bpb = _mean_std(bpb)
    cfg = runs[0].config
    totals = [r.artifact_bytes + code_bytes for r in runs]
    out = {
        "author": who.author,
        "github_id": who.github_id,
        "name": who.name,
        "blurb": who.blurb
        or f"pgolf preset {cfg.preset}, {runs[0].summary['params']:,} parameters, {runs[0].final.how}",
        "date": max(run_date(r) for r in runs),
        "track": TRACK,
        "val_loss": round(mean_loss, 8),
        "val_bpb": round(mean_bpb, 8),
        "val_loss_std": round(std_loss, 8),
        "val_bpb_std": round(std_bpb, 8),
        "seeds": [r.seed for r in runs],
        "seed_results": {
            str(r.seed): {
                "val_loss": round(r.final.score[0], 8),
                "val_bpb": round(r.final.score[1], 8),
                "val_bpb_exact": round(r.final.exact[1], 8) if r.final.exact else None,
                "artifact_bytes": r.artifact_bytes,
                "steps": int(r.summary["steps"]),
                "step_avg_ms": round(r.step_avg_ms, 2),
                "train_time_s": round(float(r.summary["train_seconds"]), 3),
                "eval_time_s": None if r.final.seconds is None else round(r.final.seconds, 1),
            }
            for r in runs
        },
        "bytes_code": code_bytes,
        "artifact_bytes_mean": round(float(np.mean([r.artifact_bytes for r in runs]))),
        "artifact_bytes_max": max(r.artifact_bytes for r in runs),
        "bytes_total": max(totals),
        "train_steps_mean": round(float(np.mean([int(r.summary["steps"]) for r in runs])), 2),
        "step_avg_ms_mean": round(float(np.mean([r.step_avg_ms for r in runs])), 2),
        "hardware": hardware(runs),
        "pytorch_version": runs[0].start.get("torch", "unknown"),
        "cuda_version": runs[0].host.get("cuda_version"),
        "technique_summary": technique_summary(runs[0]),
        "pgolf_preset": cfg.preset,
        "eval": runs[0].final.how,
    }
    if ref is not None:
        out["comparison_baseline_bpb"] = round(float(np.mean(ref.bpb)), 8)
        out["delta_vs_baseline_bpb"] = round(mean_bpb - float(np.mean(ref.bpb)), 8)
        out["delta_vs_baseline_nats_per_byte"] = round((mean_bpb - float(np.mean(ref.bpb))) * LN2, 8)
    return out


def hardware(runs: list[Run]) -> str:
    names = sorted({f"{r.start.get('world_size', 1)}x{r.device_name}" for r in runs})
    return ", ".join(names)


def technique_summary(run: Run) -> str:
    changes = config_changes(run)
    shown = ", ".join(f"{k}={_show(v)}" for k, v in changes.items())
    return f"pgolf preset {run.config.preset}" + (f"; against the baseline: {shown}" if shown else "")


def comparison_lines(runs: list[Run], ref: Reference) -> list[str]:
    from pipelines.stats import compare

    bpb = [r.final.score[1] for r in runs]
    c = compare(ref.label, list(ref.bpb), "this submission", bpb)
    return [
        f"Against {ref.label} (mean {np.mean(ref.bpb):.8f} BPB over {len(ref.bpb)} value(s)):",
        "",
        f"- Δ BPB {c.delta_bpb:+.8f}, Δ nats/byte {c.delta_nats:+.8f}",
        f"- one-sided Welch p for an improvement of at least {c.margin_nats:g} nats/byte: {c.p_candidate_better:.4g}",
        f"- one-sided Welch p for any improvement (PR #1902): {c.p_candidate_ahead:.4g}",
        f"- verdict: {c.verdict}",
    ]


def readme(runs: list[Run], who: Identity, code_bytes: int, ref: Reference | None, meta: dict, tok_file: str) -> str:
    cfg, first = runs[0].config, runs[0]
    changes = config_changes(first)
    lines = [
        f"# {who.name}",
        "",
        f"**{meta['val_bpb']:.8f} BPB** (mean of {len(runs)} seed(s), std {meta['val_bpb_std']:.8f}); "
        f"{meta['bytes_total']:,} bytes at most (artifact + `train_gpt.py`). By {who.author} (@{who.github_id}), "
        f"made with pgolf (preset `{cfg.preset}`).",
        "",
        "## The model",
        "",
        f"{first.summary['params']:,} parameters. Settings that differ from the challenge's baseline "
        "(pgolf's `baseline` preset), by name:",
        "",
    ]
    lines += [f"- `{k}` = `{_show(v)}`" for k, v in changes.items()] or ["- none"]
    lines += [
        "",
        f"Evaluation: {first.final.how}.",
        "",
        "## Results",
        "",
        "| seed | val_loss | val_bpb | val_bpb (exact bytes) | steps | step_avg | train time | eval time | artifact |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        exact = f"{r.final.exact[1]:.8f}" if r.final.exact else "-"
        ev = "-" if r.final.seconds is None else f"{r.final.seconds:.1f} s"
        lines.append(
            f"| {r.seed} | {r.final.score[0]:.8f} | {r.final.score[1]:.8f} | {exact} | {r.summary['steps']} | "
            f"{r.step_avg_ms:.2f} ms | {float(r.summary['train_seconds']):.1f} s | {ev} | {r.artifact_bytes:,} |"
        )
    lines += [
        "",
        f"Mean ± std: val_bpb {meta['val_bpb']:.8f} ± {meta['val_bpb_std']:.8f}, "
        f"val_loss {meta['val_loss']:.8f} ± {meta['val_loss_std']:.8f}. "
        "`val_bpb` is the official byte formula's number where the tokenizer has one (SentencePiece), else the exact "
        "one; the exact column divides by the original UTF-8 bytes of the documents (byte sidecars).",
        "",
        "## Bytes",
        "",
        f"| part | bytes (largest seed) | share of {artifact.LIMIT:,} |",
        "|---|---:|---:|",
    ]
    largest = max(runs, key=lambda r: r.artifact_bytes)
    parts = {"train_gpt.py (counted code)": code_bytes}
    parts |= {f"model.pga: {k}": v for k, v in largest.summary["artifact_parts"].items()}
    lines += [f"| {k} | {v:,} | {100 * v / artifact.LIMIT:.2f}% |" for k, v in parts.items()]
    total = sum(parts.values())
    lines += [
        f"| **total** | **{total:,}** | {100 * total / artifact.LIMIT:.2f}% |",
        "",
        "The artifact `model.pga` holds the config, the tokenizer (pgolf counts it; the official rules do not), the "
        "compressed weights and its own copy of the evaluation code. The challenge counts the files as they are "
        "shipped, `train_gpt.py` plus the model file, and `train_gpt.py` carries the same modules, so the "
        f"{largest.summary['artifact_parts'].get('code', 0):,} bytes of the `code` part count twice: the total is "
        "conservative by that much. The copy stays in the artifact because `python -m pgolf_model.evaluate` checks the "
        "model code it runs against it (an artifact is scored by the code it was written with, or refused).",
    ]
    if ref is not None:
        lines += ["", "## Comparison", "", *comparison_lines(runs, ref)]
    lines += [
        "",
        "## Compliance",
        "",
        *compliance_lines(cfg),
        "",
        "## Reproducing",
        "",
        *reproduce_lines(runs, tok_file),
    ]
    return "\n".join(lines) + "\n"


def compliance_lines(cfg) -> list[str]:
    ttt = cfg.eval.ttt
    lines = [
        "- No validation data during training: the trainer reads only the `train` split of `DATA_PATH`; the "
        "validation split is scored after training.",
    ]
    if cfg.quant.method == "gptq" or cfg.quant.allocate:
        lines.append(
            "- Calibration is self-generated: GPTQ's Hessians come from sequences the trained model samples itself, "
            "so no training or validation data is read after the training clock stops."
        )
    else:
        lines.append(f"- No calibration data: the weights are quantized by `{cfg.quant.method}` from themselves.")
    if ttt == "none":
        lines.append("- No test-time training: each validation target is scored once by the fixed model.")
    else:
        lines.append(
            f"- Score-first TTT (`{ttt}`, issue #1017 C1-C4): every chunk is scored before the model trains on it, "
            "each target once, left to right, with full softmax distributions over the vocabulary."
        )
    return lines


def reproduce_lines(runs: list[Run], tok_file: str) -> list[str]:
    seeds = " ".join(str(r.seed) for r in runs)
    vocab = runs[0].config.model.vocab_size
    return [
        "```bash",
        "pip install -r requirements.txt",
        f"for SEED in {seeds}; do",
        f"  DATA_PATH=./data/datasets/fineweb10B_sp{vocab} TOKENIZER_PATH=tokenizers/{tok_file} \\",
        "    SEED=$SEED RUN_ID=seed$SEED torchrun --standalone --nproc_per_node=8 train_gpt.py",
        "done",
        "```",
        "",
        f"`train_gpt.py` carries pgolf's code compressed; it needs no pgolf installed. `tokenizers/{tok_file}` is the "
        "runs' tokenizer (the script refuses any other); `DATA_PATH` must hold shards made with it "
        "(`pgolf-data shard`, then `pgolf-data export --for baseline`).",
    ]


def requirements(runs: list[Run]) -> str:
    torch_version = runs[0].start.get("torch", "")
    lines = ["# Install with: pip install -r requirements.txt", f"torch=={torch_version}" if torch_version else "torch"]
    lines += ["numpy", "sentencepiece", "zstandard", "brotli"]
    return "\n".join(lines) + "\n"


def write_folder(runs: list[Run], who: Identity, out: str | Path, ref: Reference | None = None) -> Path:
    """Write the records folder for ``runs`` (one per seed) into ``out``; returns it."""
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two runs share a seed: {seeds}; a records folder has one run per seed")
    configs = {json.dumps({**r.start["config"], "train": {**r.start["config"]["train"], "seed": 0}}) for r in runs}
    if len(configs) != 1:
        raise ValueError("the runs differ in more than their seed; a records folder holds one configuration")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    script = stub.build(runs[0])
    code_bytes = len(script)
    meta = submission_json(runs, who, code_bytes, ref)
    files = {
        "submission.json": json.dumps(meta, indent=2) + "\n",
        "README.md": readme(runs, who, code_bytes, ref, meta, stub.tokenizer_file(stub.run_tokenizer(runs[0])[0])),
        "requirements.txt": requirements(runs),
        **{f"train_seed{r.seed}.log": r.log_text(code_bytes) for r in runs},
    }
    for name, text in files.items():
        write_atomic(out / name, text.encode("utf-8"))
    write_atomic(out / "train_gpt.py", script)
    tok, _, exported = stub.run_tokenizer(runs[0])
    (out / "tokenizers").mkdir(exist_ok=True)
    write_atomic(out / "tokenizers" / stub.tokenizer_file(tok), exported)
    return out
