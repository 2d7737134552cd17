"""Train a GPT on token shards and write its budgeted artifact (``python -m pgolf_model.train`` is its command line).

Runs on CPU, one GPU, or under torchrun (NCCL on GPUs, gloo on CPUs). Before training, a config whose artifact
cannot fit the 16,000,000-byte budget is refused. Training stops at ``train.iterations`` or when ``--max-minutes``
of training time (validation excluded) have passed, then validates on the whole val split, quantizes, writes
``RUN/model.pga`` and scores the model rebuilt from that file alone. ``RUN/log.jsonl`` gets one JSON record per
logged step, validation and result; ``RUN/checkpoints/`` the resumable checkpoints (``--resume auto``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer.artifact import artifact_path, from_artifact

from .. import artifact, runtime
from ..config import Config, ConfigError
from ..evaluation.byte_counts import load_val
from ..evaluation.scoring import BPBResult, score
from ..export import estimate
from ..export.allocation import AllocationError
from ..export.weights import export_weights
from ..model import GPT
from ..runtime import Runtime
from . import checkpoint, qat
from .data import TrainLoader
from .optim import Schedule, WeightEMA, build_optimizers

ARTIFACT_NAME = "model.pga"


class RunLog:
    """Rank 0's console lines and ``log.jsonl`` records; silent on other ranks."""

    def __init__(self, path: Path | None, console: bool) -> None:
        self.path, self.console = path, console

    def record(self, event: str, **fields) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"event": event, **fields}) + "\n")

    def say(self, line: str) -> None:
        if self.console:
            from tqdm import tqdm

            tqdm.write(line)


def _check_tokens(name: str, tokens: np.ndarray, vocab_size: int) -> None:
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise ConfigError(f"{name} holds token id {int(tokens.max())}, but model.vocab_size is {vocab_size}")


@dataclass(frozen=True)
class Inputs:
    """What a run reads before it builds anything: the tokenizer artifact's bytes, the shards, the budget estimate."""

    tokenizer_bytes: bytes
    estimate: dict[str, int]
    train_shards: ShardSet
    val_tokens: np.ndarray
    val_bytes: np.ndarray


def load_inputs(cfg: Config, data: str | Path, tokenizer: str | Path, budget_limit: int) -> Inputs:
    """Check the config against the tokenizer, the budget and the shards before any training."""
    path = artifact_path(tokenizer)
    tokenizer_bytes = path.read_bytes()
    tok = from_artifact(tokenizer_bytes, where=str(path))
    if cfg.model.vocab_size != tok.vocab_size:
        raise ConfigError(f"model.vocab_size = {cfg.model.vocab_size}, but the tokenizer has {tok.vocab_size} ids")
    if cfg.model.smear_gate and cfg.model.bos_id != tok.bos_id:
        # SmearGate's document boundary is the BOS id: a wrong one would let documents read their predecessor.
        raise ConfigError(f"model.bos_id = {cfg.model.bos_id}, but the tokenizer's BOS id is {tok.bos_id}")
    sizes = estimate.check(cfg, len(tokenizer_bytes), budget_limit)
    train_shards = ShardSet.open(data, "train")
    val_tokens, val_bytes = load_val(data)
    if val_bytes is None:
        raise ConfigError(f"{data}: the val shards have no byte sidecars, so exact BPB cannot be computed")
    _check_tokens(f"{data}: val split", val_tokens, cfg.model.vocab_size)
    _check_tokens(str(train_shards.token_files[0]), np.asarray(train_shards.tokens(0)), cfg.model.vocab_size)
    return Inputs(tokenizer_bytes, sizes, train_shards, val_tokens, val_bytes)


def restore(path: Path, cfg: Config, model: GPT, optimizers, ema: WeightEMA | None) -> tuple[int, float]:
    """Load a checkpoint into ``model``, ``optimizers`` and ``ema``; returns its step and training seconds."""
    state = checkpoint.load(path)
    if state["config"]["model"] != cfg.to_dict()["model"]:
        raise ConfigError(f"{path}: checkpoint model config {state['config']['model']} differs from this run's")
    model.load_state_dict(state["model"])
    for opt, opt_state in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(opt_state)
    if ema is not None:  # a checkpoint saved without an EMA restarts it from the resumed weights
        ema.load_state_dict(state.get("ema") or WeightEMA(model, ema.decay).state_dict())
    return state["step"], state["train_seconds"]


def save_checkpoint(
    out_dir: Path, cfg: Config, step: int, train_seconds: float, model: GPT, optimizers, ema: WeightEMA | None
) -> None:
    """The final checkpoint holds the weights that were exported (the EMA's, when kept)."""
    state = {
        "config": cfg.to_dict(),
        "step": step,
        "train_seconds": train_seconds,
        "model": model.state_dict(),
        "optimizers": [opt.state_dict() for opt in optimizers],
        "ema": ema.state_dict() if ema is not None else None,
    }
    checkpoint.save(out_dir, step, state, cfg.train.keep_checkpoints)


def write_artifact(
    path: Path, cfg: Config, model: GPT, tokenizer_bytes: bytes, limit: int, rt: Runtime, log: RunLog
) -> None:
    """Rank 0 quantizes (``export``: prints the plan) and writes; every rank raises BudgetError if the file would be
    over ``limit``."""
    error = None
    if rt.is_main:
        code = artifact.counted_code()
        # Everything but the weights is known before quantizing; the rest of the limit is the weights' budget.
        weights_budget = limit - len(artifact.build_compressed(cfg.to_dict(), tokenizer_bytes, (0, b""), code))
        try:
            result = export_weights(model, cfg, runtime=rt, weights_budget=weights_budget)
            log.say(result.table(weights_budget if cfg.quant.allocate else None))
            log.record("quant", plan=[asdict(r) for r in result.plan], seconds=result.seconds)
            data = artifact.build_compressed(cfg.to_dict(), tokenizer_bytes, result.compressed, code)
            artifact.write(path, data, limit)
        except (artifact.BudgetError, AllocationError) as e:
            error = str(e)
    error = rt.broadcast(error)
    if error is not None:
        raise artifact.BudgetError(error)


def projected_steps(cfg: Config, step: int, start: tuple[int, float], train_seconds: float) -> int:
    """The step at which training ends: ``train.iterations``, or earlier where the clock runs out at this pace."""
    limit_s = 60.0 * cfg.train.max_minutes
    if not limit_s or step <= start[0]:
        return cfg.train.iterations
    pace = (train_seconds - start[1]) / (step - start[0])
    return min(cfg.train.iterations, step + int((limit_s - train_seconds) / pace))


def training_fraction(cfg: Config, step: int, train_seconds: float) -> float:
    """How far training is: by the clock under a time limit (as the records schedule depth recurrence), else steps."""
    if cfg.train.max_minutes:
        return max(train_seconds / (60.0 * cfg.train.max_minutes), step / cfg.train.iterations)
    return step / cfg.train.iterations


def run(
    cfg: Config,
    *,
    data: str | Path,
    tokenizer: str | Path,
    out_dir: str | Path,
    resume: str | None = None,
    rt: Runtime | None = None,
    budget_limit: int = artifact.LIMIT,
    progress: bool = True,
) -> dict:
    """Train ``cfg`` and write the artifact; returns the run summary (also saved as ``RUN/summary.json``)."""
    rt = rt or Runtime(torch.device("cpu"))
    out_dir = Path(out_dir)
    inputs = load_inputs(cfg, data, tokenizer, budget_limit)
    grad_accum = cfg.train.grad_accum(rt.world_size)
    if rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    rt.barrier()
    log = RunLog(out_dir / "log.jsonl" if rt.is_main else None, console=rt.is_main and progress)

    # -- model, optimizers, resume ------------------------------------------------------------------------------
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model).to(rt.device)
    optimizers = build_optimizers(model, cfg.optim)
    schedule = Schedule(cfg.optim)
    step, train_seconds = 0, 0.0
    ema = WeightEMA(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    if resume is not None:
        path = checkpoint.latest(out_dir) if resume == "auto" else Path(resume)
        if path is None:
            raise FileNotFoundError(f"--resume auto: no checkpoints in {checkpoint.checkpoint_dir(out_dir)}")
        step, train_seconds = restore(path, cfg, model, optimizers, ema)
        log.say(f"resumed from {path} at step {step} ({train_seconds:.1f}s of training)")
    net = torch.compile(model) if cfg.train.compile else model
    ddp = None
    if rt.distributed:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        ddp = DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=False)
    loader = TrainLoader(
        inputs.train_shards,
        seq_len=cfg.train.seq_len,
        device_batch_tokens=cfg.train.device_batch_tokens,
        grad_accum=grad_accum,
        rank=rt.rank,
        world_size=rt.world_size,
        seed=cfg.train.seed,
        shuffle=cfg.train.shuffle,
        device=rt.device,
    )

    def train_step(at: int) -> torch.Tensor:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=rt.device)
        for micro in range(grad_accum):
            x, y = loader.batch(at, micro)
            # DDP all-reduces gradients on the last micro-step only.
            sync = contextlib.nullcontext() if ddp is None or micro == grad_accum - 1 else ddp.no_sync()
            with sync:
                with rt.autocast():
                    loss = (ddp or net)(x, y)
                (loss / grad_accum).backward()
            total += loss.detach()
        if cfg.optim.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        return total / grad_accum

    def score_val(scored_model, prefix: int = 0) -> BPBResult:
        """Exact BPB of the first ``prefix`` validation targets (0: all), in windows of the training length."""
        return score(
            scored_model,
            inputs.val_tokens,
            inputs.val_bytes,
            seq_len=cfg.train.seq_len,
            batch_tokens=cfg.train.device_batch_tokens,
            runtime=rt,
            val_tokens=prefix,
        )

    def validate(at: int, prefix: int) -> BPBResult:
        result = score_val(net, prefix)
        log.record("val", step=at, **result.to_dict(), full=prefix == 0, elapsed_s=round(train_seconds, 3))
        log.say(
            f"step {at:>6}  val_loss {result.loss:.4f}  val_bpb {result.bpb:.4f}  "
            f"({result.tokens:,} targets)  train_time {train_seconds:.1f}s"
        )
        return result

    if cfg.train.compile_warmup_steps:
        # Compile (and warm up) on real steps before the clock starts, then put everything back.
        saved = copy.deepcopy(model.state_dict()), [copy.deepcopy(o.state_dict()) for o in optimizers]
        for i in range(cfg.train.compile_warmup_steps):
            if cfg.train.qat_threshold and i == cfg.train.compile_warmup_steps // 2:
                qat.enable(model, cfg.quant)  # compile the late-QAT graph now too, not on the clock
            schedule.apply(optimizers, step + i, cfg.train.iterations)
            train_step(step + i)
        qat.disable(model)
        model.load_state_dict(saved[0])
        for opt, opt_state in zip(optimizers, saved[1]):
            opt.load_state_dict(opt_state)

    n_params = sum(p.numel() for p in model.parameters())
    log.record(
        "start",
        config=cfg.to_dict(),
        params=n_params,
        world_size=rt.world_size,
        grad_accum=grad_accum,
        device=str(rt.device),
        torch=torch.__version__,
        python=platform.python_version(),
        budget_estimate=inputs.estimate,
        resumed_at=step,
    )
    log.say(
        f"{cfg.preset}: {n_params:,} parameters, {rt.world_size} rank(s) on {rt.device}, grad_accum "
        f"{grad_accum}, estimated artifact {sum(inputs.estimate.values()):,} bytes"
    )
    if (over := estimate.warning(inputs.estimate, budget_limit)) is not None:
        log.say(over)

    # -- the loop: validate, step, log, stop on the clock -------------------------------------------------------
    from tqdm import tqdm

    show_bar = rt.is_main and progress and sys.stderr.isatty()
    bar = tqdm(total=cfg.train.iterations, initial=step, disable=not show_bar, unit="step", dynamic_ncols=True)
    start = (step, train_seconds)
    last_log = start
    stopped_by_clock = False
    while True:
        last = step >= cfg.train.iterations or stopped_by_clock
        if last:  # the final model: depth recurrence on (as at eval in the records), EMA weights if kept
            model.set_looping(True)
            if ema is not None:
                ema.copy_to(model)
        if last or (cfg.train.val_every and step % cfg.train.val_every == 0 and (step > start[0] or step == 0)):
            final_val = validate(step, 0 if last else cfg.train.val_tokens)
            bar.set_postfix(val_bpb=f"{final_val.bpb:.4f}")
            if last:
                break
        lr_scale = schedule.apply(optimizers, step, projected_steps(cfg, step, start, train_seconds))
        late = step >= cfg.optim.lr_warmup_steps and lr_scale < cfg.train.qat_threshold
        if late and not qat.enabled(model):  # late QAT (March records): on once the warm-down passes the threshold
            n = qat.enable(model, cfg.quant)
            log.record("qat", step=step, lr_scale=lr_scale, matrices=n)
            log.say(f"step {step:>6}  late QAT on for {n} matrices (lr scale {lr_scale:.3f})")
        if cfg.train.loop_after:
            model.set_looping(training_fraction(cfg, step, train_seconds) >= cfg.train.loop_after)
        rt.synchronize()
        t0 = time.perf_counter()
        loss = train_step(step)
        if ema is not None:
            ema.update(model)
        rt.synchronize()
        train_seconds += time.perf_counter() - t0
        step += 1
        bar.update(1)

        if cfg.train.log_every and (step % cfg.train.log_every == 0 or step == cfg.train.iterations):
            (mean_loss,) = runtime.all_reduce_sum([loss.item() / rt.world_size], rt)
            dt = train_seconds - last_log[1]
            tok_s = (step - last_log[0]) * cfg.train.batch_tokens / dt if dt > 0 else math.nan
            last_log = (step, train_seconds)
            elapsed = round(train_seconds, 3)
            log.record(
                "train", step=step, train_loss=mean_loss, lr_scale=lr_scale, tokens_per_s=tok_s, elapsed_s=elapsed
            )
            log.say(f"step {step:>6}  loss {mean_loss:.4f}  lr {lr_scale:.3f}  {tok_s:>10,.0f} tok/s  time {elapsed}s")
            bar.set_postfix(loss=f"{mean_loss:.3f}")
        if cfg.train.max_minutes:
            # Every rank stops at the same step: the first one out of time decides.
            (over,) = runtime.all_reduce_sum([float(train_seconds >= 60.0 * cfg.train.max_minutes)], rt)
            stopped_by_clock = over > 0 and step < cfg.train.iterations
            if stopped_by_clock:
                log.say(f"stopping at step {step}: {train_seconds:.1f}s reached --max-minutes {cfg.train.max_minutes}")
        if rt.is_main and cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            save_checkpoint(out_dir, cfg, step, train_seconds, model, optimizers, ema)
    bar.close()

    # -- the artifact, and the model rebuilt from it alone -------------------------------------------------------
    if rt.is_main:
        save_checkpoint(out_dir, cfg, step, train_seconds, model, optimizers, ema)
    art_path = out_dir / ARTIFACT_NAME
    try:
        write_artifact(art_path, cfg, model, inputs.tokenizer_bytes, budget_limit, rt, log)
    except artifact.BudgetError as e:
        log.record("error", message=str(e))
        raise artifact.BudgetError(f"{e}; the trained weights are in {checkpoint.latest(out_dir)}") from None
    art = artifact.read(art_path)
    rebuilt, _ = artifact.build_model(art, device=rt.device)
    roundtrip = score_val(rebuilt)
    summary = {
        "preset": cfg.preset,
        "steps": step,
        "train_seconds": round(train_seconds, 3),
        "stopped_by_clock": stopped_by_clock,
        "params": n_params,
        "val_bpb": final_val.bpb,
        "val_loss": final_val.loss,
        "artifact_val_bpb": roundtrip.bpb,
        "artifact_val_loss": roundtrip.loss,
        "val_targets": roundtrip.tokens,
        "val_bytes": roundtrip.bytes,
        "artifact": str(art_path),
        "artifact_bytes": art.total_bytes,
        "artifact_parts": art.sizes,
    }
    log.record("result", **summary)
    if rt.is_main:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        log.say(f"val_bpb {final_val.bpb:.4f} before quantization, {roundtrip.bpb:.4f} from {art_path}")
        log.say(estimate.format_table(art.sizes, budget_limit, title=str(art_path)))
    return summary
