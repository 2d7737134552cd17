"""Train a model on token shards and write its budgeted artifact (``python -m pgolf_model.train`` is its command line).

Runs on CPU, one GPU, or under torchrun (NCCL on GPUs, gloo on CPUs). ``run`` goes through named steps: check the
inputs (tokenizer, shards, the budget estimate: a config whose artifact cannot fit 16,000,000 bytes is refused),
build the ``Trainer`` (model, optimizers, EMA, loader, clock; a checkpoint restored with ``--resume``), warm up the
compiled kernels off the clock, train until ``train.iterations`` or until ``--max-minutes`` of training time
(validation excluded) have passed, validate the final model on the whole val split, then export: quantize, write
``RUN/model.pga`` and score the model rebuilt from that file alone. ``RUN/log.jsonl`` gets one JSON record per
logged step, validation and result; ``RUN/checkpoints/`` the resumable checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer.artifact import artifact_path, from_artifact

from .. import artifact, registry, runtime
from ..config import Config, ConfigError
from ..evaluation.byte_counts import load_val
from ..evaluation.scoring import BPBResult, score
from ..export import estimate
from ..export.allocation import AllocationError
from ..export.weights import export_weights
from ..runtime import Runtime
from . import checkpoint, qat
from .clock import Clock
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
    if getattr(cfg.model, "uses_bos", False) and cfg.model.bos_id != tok.bos_id:
        # A model's document boundary (SmearGate's, a recurrence's reset) is the BOS id: a wrong one would let
        # documents read their predecessor.
        raise ConfigError(f"model.bos_id = {cfg.model.bos_id}, but the tokenizer's BOS id is {tok.bos_id}")
    sizes = estimate.check(cfg, len(tokenizer_bytes), budget_limit)
    train_shards = ShardSet.open(data, "train")
    val_tokens, val_bytes = load_val(data)
    if val_bytes is None:
        raise ConfigError(f"{data}: the val shards have no byte sidecars, so exact BPB cannot be computed")
    _check_tokens(f"{data}: val split", val_tokens, cfg.model.vocab_size)
    _check_tokens(str(train_shards.token_files[0]), np.asarray(train_shards.tokens(0)), cfg.model.vocab_size)
    return Inputs(tokenizer_bytes, sizes, train_shards, val_tokens, val_bytes)


def write_artifact(
    path: Path, cfg: Config, model: torch.nn.Module, tokenizer_bytes: bytes, limit: int, rt: Runtime, log: RunLog
) -> None:
    """Rank 0 quantizes (``export``: prints the plan) and writes; every rank raises BudgetError if the file would be
    over ``limit``."""
    error = None
    if rt.is_main:
        code = artifact.counted_code(type(model))
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


class Trainer:
    """One run's model, optimizers, schedule, EMA, loader and clock, and the steps ``run`` takes with them."""

    def __init__(
        self, cfg: Config, inputs: Inputs, rt: Runtime, out_dir: Path, log: RunLog, resume: str | None = None
    ) -> None:
        self.cfg, self.inputs, self.rt, self.out_dir, self.log = cfg, inputs, rt, out_dir, log
        self.grad_accum = cfg.train.grad_accum(rt.world_size)
        torch.manual_seed(cfg.train.seed)
        self.model = registry.build(cfg).to(rt.device)
        if cfg.train.loop_after and not hasattr(self.model, "set_looping"):
            raise ConfigError(f"train.loop_after = {cfg.train.loop_after}: model.arch {cfg.arch} has no looping")
        self.optimizers = build_optimizers(self.model, cfg.optim)
        self.schedule = Schedule(cfg.optim)
        self.ema = WeightEMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.clock = Clock()
        self.stopped_by_clock = False
        if resume is not None:
            self.resume(resume)
        self.net = torch.compile(self.model) if cfg.train.compile else self.model
        self.ddp = None
        if rt.distributed:  # after a resume: DDP broadcasts rank 0's weights when it is built
            device_ids = [rt.device.index] if rt.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.net, device_ids=device_ids, broadcast_buffers=False)
        self.loader = TrainLoader(
            inputs.train_shards,
            seq_len=cfg.train.seq_len,
            device_batch_tokens=cfg.train.device_batch_tokens,
            grad_accum=self.grad_accum,
            rank=rt.rank,
            world_size=rt.world_size,
            seed=cfg.train.seed,
            shuffle=cfg.train.shuffle,
            device=rt.device,
        )

    # -- checkpoints ------------------------------------------------------------------------------------------------

    def resume(self, which: str) -> None:
        """Continue from a checkpoint (``auto``: the run directory's newest): weights, optimizers, EMA, clock."""
        path = checkpoint.latest(self.out_dir) if which == "auto" else Path(which)
        if path is None:
            raise FileNotFoundError(f"--resume auto: no checkpoints in {checkpoint.checkpoint_dir(self.out_dir)}")
        state = checkpoint.load(path)
        if registry.config_from_dict(state["config"], where=str(path)).model != self.cfg.model:
            raise ConfigError(f"{path}: checkpoint model config {state['config']['model']} differs from this run's")
        self.model.load_state_dict(state["model"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        if self.ema is not None:  # a checkpoint saved without an EMA restarts it from the resumed weights
            self.ema.load_state_dict(state.get("ema") or WeightEMA(self.model, self.ema.decay).state_dict())
        self.clock = Clock(state["step"], state["train_seconds"])
        self.log.say(f"resumed from {path} at step {self.clock.step} ({self.clock.seconds:.1f}s of training)")

    def save_checkpoint(self) -> None:
        """The final checkpoint holds the weights that were exported (the EMA's, when kept)."""
        state = {
            "config": self.cfg.to_dict(),
            "step": self.clock.step,
            "train_seconds": self.clock.seconds,
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }
        checkpoint.save(self.out_dir, self.clock.step, state, self.cfg.train.keep_checkpoints)

    # -- one step and one validation --------------------------------------------------------------------------------

    def forward_backward(self, step: int) -> torch.Tensor:
        """Gradients of ``step``'s batch, accumulated over its micro-batches, then the optimizers' step; the loss."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.rt.device)
        for micro in range(self.grad_accum):
            x, y = self.loader.batch(step, micro)
            # DDP all-reduces gradients on the last micro-step only.
            last = self.ddp is None or micro == self.grad_accum - 1
            with contextlib.nullcontext() if last else self.ddp.no_sync():
                with self.rt.autocast():
                    loss = (self.ddp or self.net)(x, y)
                (loss / self.grad_accum).backward()
            total += loss.detach()
        if self.cfg.optim.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()
        return total / self.grad_accum

    def step(self) -> tuple[torch.Tensor, float]:
        """One timed optimizer step at the schedule's rate for this step (against the projected end), with late QAT
        and depth recurrence switched on when due; ``(loss, lr_scale)``."""
        cfg, step = self.cfg, self.clock.step
        lr_scale = self.schedule.apply(self.optimizers, step, self.clock.projected_steps(cfg.train))
        late = step >= cfg.optim.lr_warmup_steps and lr_scale < cfg.train.qat_threshold
        if late and not qat.enabled(self.model):  # late QAT (March records): on once the warm-down passes it
            n = qat.enable(self.model, cfg.quant)
            self.log.record("qat", step=step, lr_scale=lr_scale, matrices=n)
            self.log.say(f"step {step:>6}  late QAT on for {n} matrices (lr scale {lr_scale:.3f})")
        if cfg.train.loop_after:
            self.model.set_looping(self.clock.fraction(cfg.train) >= cfg.train.loop_after)
        with self.clock.timed_step(self.rt):
            loss = self.forward_backward(step)
            if self.ema is not None:
                self.ema.update(self.model)
        return loss, lr_scale

    def score_val(self, model, prefix: int = 0) -> BPBResult:
        """Exact BPB of the first ``prefix`` validation targets (0: all), in windows of the training length."""
        return score(
            model,
            self.inputs.val_tokens,
            self.inputs.val_bytes,
            seq_len=self.cfg.train.seq_len,
            batch_tokens=self.cfg.train.device_batch_tokens,
            runtime=self.rt,
            val_tokens=prefix,
        )

    def validate(self, prefix: int) -> BPBResult:
        result = self.score_val(self.net, prefix)
        at, seconds = self.clock.step, self.clock.seconds
        self.log.record("val", step=at, **result.to_dict(), full=prefix == 0, elapsed_s=round(seconds, 3))
        self.log.say(
            f"step {at:>6}  val_loss {result.loss:.4f}  val_bpb {result.bpb:.4f}  "
            f"({result.tokens:,} targets)  train_time {seconds:.1f}s"
        )
        return result

    # -- the run's phases -------------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compile (and warm up) on real steps before the clock starts, then put everything back."""
        warmup, step = self.cfg.train.compile_warmup_steps, self.clock.step
        if not warmup:
            return
        saved = copy.deepcopy(self.model.state_dict()), [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        for i in range(warmup):
            if self.cfg.train.qat_threshold and i == warmup // 2:
                qat.enable(self.model, self.cfg.quant)  # compile the late-QAT graph now too, not on the clock
            self.schedule.apply(self.optimizers, step + i, self.cfg.train.iterations)
            self.forward_backward(step + i)
        qat.disable(self.model)
        self.model.load_state_dict(saved[0])
        for opt, opt_state in zip(self.optimizers, saved[1]):
            opt.load_state_dict(opt_state)

    def log_start(self, budget_limit: int) -> None:
        cfg, rt, sizes = self.cfg, self.rt, self.inputs.estimate
        self.log.record(
            "start",
            config=cfg.to_dict(),
            params=self.num_params,
            world_size=rt.world_size,
            grad_accum=self.grad_accum,
            device=str(rt.device),
            torch=torch.__version__,
            python=platform.python_version(),
            budget_estimate=sizes,
            resumed_at=self.clock.step,
        )
        self.log.say(
            f"{cfg.preset}: {self.num_params:,} parameters, {rt.world_size} rank(s) on {rt.device}, grad_accum "
            f"{self.grad_accum}, estimated artifact {sum(sizes.values()):,} bytes"
        )
        if (over := estimate.warning(sizes, budget_limit)) is not None:
            self.log.say(over)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def train(self, progress: bool) -> BPBResult:
        """Steps until ``train.iterations`` or the end of the clock, validating every ``train.val_every`` steps;
        then the final model (depth recurrence on, as at eval in the records; the EMA's weights if kept) validated on
        the whole split."""
        from tqdm import tqdm

        t = self.cfg.train
        show_bar = self.rt.is_main and progress and sys.stderr.isatty()
        bar = tqdm(total=t.iterations, initial=self.clock.step, disable=not show_bar, unit="step", dynamic_ncols=True)
        with bar:
            while self.clock.step < t.iterations and not self.stopped_by_clock:
                step = self.clock.step
                if t.val_every and step % t.val_every == 0 and (step > self.clock.start.step or step == 0):
                    bar.set_postfix(val_bpb=f"{self.validate(t.val_tokens).bpb:.4f}")
                loss, lr_scale = self.step()
                bar.update(1)
                if t.log_every and (self.clock.step % t.log_every == 0 or self.clock.step == t.iterations):
                    bar.set_postfix(loss=f"{self.log_step(loss, lr_scale):.3f}")
                if t.max_minutes:
                    self.stopped_by_clock = self.out_of_time()
                if self.rt.is_main and t.checkpoint_every and self.clock.step % t.checkpoint_every == 0:
                    self.save_checkpoint()
            if hasattr(self.model, "set_looping"):
                self.model.set_looping(True)
            if self.ema is not None:
                self.ema.copy_to(self.model)
            final = self.validate(0)
            bar.set_postfix(val_bpb=f"{final.bpb:.4f}")
        return final

    def log_step(self, loss: torch.Tensor, lr_scale: float) -> float:
        """Log the training loss (averaged over ranks) and the throughput since the last log; the mean loss."""
        (mean_loss,) = runtime.all_reduce_sum([loss.item() / self.rt.world_size], self.rt)
        tok_s = self.clock.tokens_per_s(self.cfg.train.batch_tokens)
        step, elapsed = self.clock.step, round(self.clock.seconds, 3)
        self.log.record(
            "train", step=step, train_loss=mean_loss, lr_scale=lr_scale, tokens_per_s=tok_s, elapsed_s=elapsed
        )
        self.log.say(f"step {step:>6}  loss {mean_loss:.4f}  lr {lr_scale:.3f}  {tok_s:>10,.0f} tok/s  time {elapsed}s")
        return mean_loss

    def out_of_time(self) -> bool:
        """Whether training stops here for the clock: every rank stops at the same step, the first one out decides."""
        (over,) = runtime.all_reduce_sum([float(self.clock.out_of_time(self.cfg.train))], self.rt)
        stop = over > 0 and self.clock.step < self.cfg.train.iterations
        if stop:
            self.log.say(
                f"stopping at step {self.clock.step}: {self.clock.seconds:.1f}s reached --max-minutes "
                f"{self.cfg.train.max_minutes}"
            )
        return stop

    def export_and_score(self, final_val: BPBResult, budget_limit: int) -> dict:
        """Checkpoint the final weights, write the artifact, score the model rebuilt from it alone; the summary."""
        rt, out_dir = self.rt, self.out_dir
        if rt.is_main:
            self.save_checkpoint()
        art_path = out_dir / ARTIFACT_NAME
        try:
            write_artifact(art_path, self.cfg, self.model, self.inputs.tokenizer_bytes, budget_limit, rt, self.log)
        except artifact.BudgetError as e:
            self.log.record("error", message=str(e))
            raise artifact.BudgetError(f"{e}; the trained weights are in {checkpoint.latest(out_dir)}") from None
        art = artifact.read(art_path)
        rebuilt, _ = artifact.build_model(art, device=rt.device)
        roundtrip = self.score_val(rebuilt)
        summary = {
            "preset": self.cfg.preset,
            "steps": self.clock.step,
            "train_seconds": round(self.clock.seconds, 3),
            "stopped_by_clock": self.stopped_by_clock,
            "params": self.num_params,
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
        self.log.record("result", **summary)
        if rt.is_main:
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            self.log.say(f"val_bpb {final_val.bpb:.4f} before quantization, {roundtrip.bpb:.4f} from {art_path}")
            self.log.say(estimate.format_table(art.sizes, budget_limit, title=str(art_path)))
        return summary


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
    log = RunLog(out_dir / "log.jsonl" if rt.is_main else None, console=rt.is_main and progress)
    trainer = Trainer(cfg, inputs, rt, out_dir, log, resume)  # refuses what cannot run before anything is written
    if rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    rt.barrier()
    trainer.warm_up()
    trainer.log_start(budget_limit)
    final_val = trainer.train(progress)
    return trainer.export_and_score(final_val, budget_limit)
