"""Train a model on token shards and write its budgeted artifact (``python -m pgolf_model.train`` is its command line).

Runs on CPU, one GPU, or under torchrun (NCCL on GPUs, gloo on CPUs). ``run`` goes through named steps: check the
inputs (tokenizer, shards, the budget estimate: a config whose artifact cannot fit 16,000,000 bytes is refused),
build the ``Trainer`` (model, optimizers, EMA, loader, clock; a checkpoint restored with ``--resume``), warm up the
compiled kernels off the clock, train until ``train.iterations`` or until ``--max-minutes`` of training time
(validation excluded) have passed, validate the final model on the whole val split, then export: quantize, write
``RUN/model.pga`` and score the model rebuilt from that file alone. ``RUN/log.jsonl`` gets one JSON record per
logged step, validation and result; ``RUN/checkpoints/`` the resumable checkpoints. ``RUN`` holds one run
(``run_dir``): a resumed run must have the checkpoint's settings. SIGINT or SIGTERM during training stops at the
next check point of the clock with a checkpoint (``stop``). The steps themselves never wait for the device: the
clock synchronizes and the ranks agree only at its check points (``clock``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from pgolf_data.folder import check_ids, open_folder
from pgolf_data.manifest import write_atomic
from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer.artifact import from_artifact
from pgolf_data.tokenizer.interop import artifact_bytes

from .. import artifact, registry, runtime
from ..cli import flat
from ..config import Config, ConfigError, NgramTilt, TrainConfig
from ..evaluation.byte_counts import ValBytes, val_bytes
from ..evaluation.scoring import BPBResult, score
from ..export import calibration, estimate
from ..export.allocation import AllocationError
from ..export.weights import calibration_hessians, export_weights, shared_calibration
from ..runtime import Runtime
from . import checkpoint, context, qat, run_dir
from .clock import Clock
from .data import TrainLoader, random_windows
from .optim import Schedule, WeightEMA, build_optimizers
from .run_dir import ARTIFACT_NAME, LOG_NAME, SUMMARY_NAME
from .stop import Interrupted, PeerLost, StopRequest

# Settings a resumed run may change: they decide what is logged, checked or compiled, not what is trained.
RESUMABLE_CHANGES = frozenset(
    {
        "train.log_every",
        "train.val_every",
        "train.val_tokens",
        "train.checkpoint_every",
        "train.clock_every",
        "train.keep_checkpoints",
        "train.compile",
        "train.compile_warmup_steps",
    }
)


def compile_for_training(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile`` as the trainer (and ``bench/gpu.py``) runs it: one graph per training state, each with static
    shapes (the loader's batches never change shape; a document-masked model's document bounds are the one dynamic
    dimension); ``fullgraph`` makes a graph break an error at the first step instead of a silent slowdown."""
    if getattr(getattr(model, "cfg", None), "doc_masked", False):
        # FlashAttention's cu_seqlens has one entry per document of the batch (attention.py). Training steps get them
        # from the loader, a dynamic dimension of an input; validation finds them on the device, where Dynamo must
        # capture that data-dependent length instead of breaking the graph there.
        torch._dynamo.config.capture_dynamic_output_shape_ops = True
    return torch.compile(model, fullgraph=True, dynamic=False, backend=backend)


def warm_up_states(train: TrainConfig, model: torch.nn.Module) -> list[tuple[bool, bool]]:
    """``(looping, late QAT)`` of every graph a run can step with: both layer orders when depth recurrence starts
    mid-run (``train.loop_after``; the model is built looping), each also fake-quantized when late QAT is on."""
    loops = [False, True] if train.loop_after else [getattr(model, "looping", True)]
    return [(loop, fake) for fake in ([False, True] if train.qat_threshold else [False]) for loop in loops]


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


@dataclass(frozen=True)
class Inputs:
    """What a run reads before it builds anything: the tokenizer artifact's bytes, the shards, the budget estimate."""

    tokenizer_bytes: bytes
    estimate: dict[str, int]
    train_shards: ShardSet
    val: ValBytes
    folder: str  # what the shard folder is (pgolf's, official), for the log


def load_inputs(cfg: Config, data: str | Path, tokenizer: str | Path, budget_limit: int) -> Inputs:
    """Check the config against the tokenizer, the budget and the shards before any training: the folder must be
    finished and bound to this tokenizer (or official), every token id of both splits inside the vocabulary, and the
    val targets counting some bytes (else BPB is undefined)."""
    tokenizer_bytes = artifact_bytes(tokenizer)
    tok = from_artifact(tokenizer_bytes, where=str(tokenizer))
    if cfg.model.vocab_size != tok.vocab_size:
        raise ConfigError(f"model.vocab_size = {cfg.model.vocab_size}, but the tokenizer has {tok.vocab_size} ids")
    if getattr(cfg.model, "uses_bos", False) and cfg.model.bos_id != tok.bos_id:
        # A model's document boundary (SmearGate's, a recurrence's reset) is the BOS id: a wrong one would let
        # documents read their predecessor.
        raise ConfigError(f"model.bos_id = {cfg.model.bos_id}, but the tokenizer's BOS id is {tok.bos_id}")
    sizes = estimate.check(cfg, len(tokenizer_bytes), budget_limit)
    folder = open_folder(data)
    folder.bind(tokenizer_bytes, str(tokenizer))
    train_shards = ShardSet.open(data, "train")
    check_ids(train_shards, cfg.model.vocab_size)
    check_ids(ShardSet.open(data, "val"), cfg.model.vocab_size)
    val = val_bytes(data, tok, exact_sidecars=folder.exact_sidecars)
    for what, counts in (("sidecars", val.exact), ("official byte counts", val.official)):
        if counts is not None and not counts[1:].any():
            raise ConfigError(f"{data}: the val {what} count 0 bytes for every target, so BPB is undefined")
    return Inputs(tokenizer_bytes, sizes, train_shards, val, folder.describe())


def write_artifact(
    path: Path,
    cfg: Config,
    model: torch.nn.Module,
    tokenizer_bytes: bytes,
    limit: int,
    rt: Runtime,
    log: RunLog,
    hessians: dict[str, torch.Tensor] | None = None,
) -> None:
    """Every rank generates and collects its share of the calibration, then rank 0 quantizes (``export``: prints the
    plan; ``hessians``: GPTQ's, collected in training) and writes; every rank raises BudgetError if the file would be
    over ``limit``, OSError if it could not be written (no file is left: ``artifact.write`` is atomic)."""
    error = None
    calib = shared_calibration(model, cfg, runtime=rt, hessians=hessians)
    if rt.is_main:
        code = artifact.counted_code(type(model))
        # Everything but the weights is known before quantizing; the rest of the limit is the weights' budget.
        weights_budget = limit - len(artifact.build_compressed(cfg.to_dict(), tokenizer_bytes, (0, b""), code))
        try:
            result = export_weights(
                model, cfg, runtime=rt, weights_budget=weights_budget, hessians=calib.hessians, tokens=calib.tokens
            )
            log.say(result.table(weights_budget if cfg.quant.allocate else None))
            seconds = dict(result.seconds)  # the calibration's steps, done before on every rank, added in
            for step, spent in calib.seconds.items():
                seconds[step] = seconds.get(step, 0.0) + spent
            log.record("quant", plan=[asdict(r) for r in result.plan], seconds=seconds)
            data = artifact.build_compressed(cfg.to_dict(), tokenizer_bytes, result.compressed, code)
            artifact.write(path, data, limit)
        except (artifact.BudgetError, AllocationError) as e:
            error = (artifact.BudgetError, str(e))
        except OSError as e:
            error = (OSError, f"could not write {path}: {e.strerror or e}")
    error = rt.broadcast(error)
    if error is not None:
        raise error[0](error[1])


class Trainer:
    """One run's model, optimizers, schedule, EMA, loader and clock, and the steps ``run`` takes with them."""

    def __init__(
        self, cfg: Config, inputs: Inputs, rt: Runtime, out_dir: Path, log: RunLog, resume: Path | None = None
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
        self.hessians: dict[str, torch.Tensor] | None = None  # GPTQ's from training tokens (calib_source train)
        self.stop = StopRequest()
        self.seq_len, self.stage_start = 0, None  # progressive context: the current length, the step it began
        if resume is not None:
            self.resume(resume)
        self.net = compile_for_training(self.model) if cfg.train.compile else self.model
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

    def resume(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``: weights, optimizers, EMA, clock. Its run must have had this run's
        settings (but for ``RESUMABLE_CHANGES``) and tokenizer."""
        state = checkpoint.load(path)
        saved = registry.config_from_dict(state["config"], where=str(path))
        was, now = flat(saved), flat(self.cfg)  # another model family: its own settings are missing on one side
        keys = [*was, *(key for key in now if key not in was)]
        changed = [key for key in keys if was.get(key) != now.get(key) and key not in RESUMABLE_CHANGES]
        if changed:
            diffs = ", ".join(f"{key} {was.get(key)!r} (now {now.get(key)!r})" for key in changed[:6])
            raise run_dir.RunDirError(
                f"--resume {path}: the checkpoint's run had other settings: {diffs}; resume with its settings, or "
                "start a new run (--force, or another --out)"
            )
        tokenizer = state.get("tokenizer_sha256")
        if tokenizer is not None and tokenizer != self.tokenizer_sha256:
            raise run_dir.RunDirError(
                f"--resume {path}: the checkpoint's run used tokenizer sha256 {tokenizer}, this one "
                f"{self.tokenizer_sha256}"
            )
        self.model.load_state_dict(state["model"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        if self.ema is not None:  # a checkpoint saved without an EMA restarts it from the resumed weights
            self.ema.load_state_dict(state.get("ema") or WeightEMA(self.model, self.ema.decay).state_dict())
        self.clock = Clock(state["step"], state["train_seconds"])
        self.seq_len, self.stage_start = state.get("context", (0, None))
        self.log.say(f"resumed from {path} at step {self.clock.step} ({self.clock.seconds:.1f}s of training)")

    @property
    def tokenizer_sha256(self) -> str:
        return hashlib.sha256(self.inputs.tokenizer_bytes).hexdigest()

    def save_checkpoint(self) -> Path:
        """The final checkpoint holds the weights that were exported (the EMA's, when kept)."""
        state = {
            "config": self.cfg.to_dict(),
            "tokenizer_sha256": self.tokenizer_sha256,
            "step": self.clock.step,
            "train_seconds": self.clock.seconds,
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "context": [self.seq_len, self.stage_start],
        }
        return checkpoint.save(self.out_dir, self.clock.step, state, self.cfg.train.keep_checkpoints)

    # -- one step and one validation --------------------------------------------------------------------------------

    def forward_backward(self, step: int, seq_len: int = 0) -> torch.Tensor:
        """Gradients of ``step``'s batch (in rows of ``seq_len``, 0: the loader's), accumulated over its micro-batches,
        then the optimizers' step; the loss."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.rt.device)
        doc_masked = getattr(self.cfg.model, "doc_masked", False)
        for micro in range(self.grad_accum):
            docs = {}
            if doc_masked:  # the document bounds from the host: no device sync in the forward pass
                x, y, bounds = self.loader.batch_and_documents(step, micro, self.cfg.model.bos_id, seq_len)
                docs = {"cu_seqlens": bounds}
            else:
                x, y = self.loader.batch(step, micro, seq_len)
            # DDP all-reduces gradients on the last micro-step only.
            last = self.ddp is None or micro == self.grad_accum - 1
            with contextlib.nullcontext() if last else self.ddp.no_sync():
                with self.rt.autocast():
                    loss = (self.ddp or self.net)(x, y, **docs)
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
        seq_len = self.context_step(step)
        ramp = context.rewarm(cfg.train, None if self.stage_start is None else step - self.stage_start)
        if ramp < 1.0:
            lr_scale *= ramp
            for opt in self.optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * lr_scale
        with self.clock.timed_step():
            loss = self.forward_backward(step, seq_len)
            if self.ema is not None:
                self.ema.update(self.model)
        return loss, lr_scale

    def context_step(self, step: int) -> int:
        """This step's training length (progressive context, ``context.py``); a change is logged and starts the lr
        re-warm-up."""
        seq_len = context.seq_len_at(self.cfg.train, self.clock.fraction(self.cfg.train))
        if seq_len != self.seq_len:
            if self.seq_len:  # not the run's (or the resumed run's) first step
                self.stage_start = step
                self.log.record("context", step=step, seq_len=seq_len)
                self.log.say(f"step {step:>6}  training length {self.seq_len} -> {seq_len}")
            self.seq_len = seq_len
        return seq_len

    def score_val(self, model, prefix: int = 0, tilt: NgramTilt | None = None) -> BPBResult:
        """BPB of the first ``prefix`` validation targets (0: all), in windows of the training length: exact, and
        official for a SentencePiece-based tokenizer (only official on an official folder without sidecars); with
        the n-gram ``tilt`` if given."""
        val = self.inputs.val
        return score(
            model,
            val.tokens,
            val.exact,
            seq_len=self.cfg.train.seq_len,
            batch_tokens=self.cfg.train.device_batch_tokens,
            runtime=self.rt,
            val_tokens=prefix,
            official=val.official,
            official_rule=val.official_rule,
            tilt=tilt,
        )

    def validate(self, prefix: int) -> BPBResult:
        result = self.score_val(self.net, prefix)
        at, seconds = self.clock.step, self.clock.seconds
        self.log.record("val", step=at, **result.to_dict(), full=prefix == 0, elapsed_s=round(seconds, 3))
        self.log.say(f"step {at:>6}  val_loss {result.loss:.4f}  {result.line()}  train_time {seconds:.1f}s")
        return result

    # -- the run's phases -------------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compile (and warm up) on real steps before the clock starts, then put everything back.

        The steps are shared out over every pair of ``warm_up_states`` and progressive-context length (at least one
        step each), so that switching depth recurrence or late QAT on, or the next training length, finds its graph
        compiled instead of recompiling forward and backward on the clock.
        """
        warmup, step = self.cfg.train.compile_warmup_steps, self.clock.step
        if not warmup:
            return
        graphs = [
            (state, n) for state in warm_up_states(self.cfg.train, self.model) for n in context.lengths(self.cfg.train)
        ]
        warmup = max(warmup, len(graphs))
        looping = getattr(self.model, "looping", None)  # a model family without depth recurrence: None
        saved = copy.deepcopy(self.model.state_dict()), [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        for i in range(warmup):
            (loop, fake), length = graphs[i * len(graphs) // warmup]
            if looping is not None:
                self.model.set_looping(loop)
            if fake and not qat.enabled(self.model):
                qat.enable(self.model, self.cfg.quant)
            self.schedule.apply(self.optimizers, step + i, self.cfg.train.iterations)
            self.forward_backward(step + i, length)
        qat.disable(self.model)
        if looping is not None:
            self.model.set_looping(looping)
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
            data=self.inputs.folder,
            official_rule=self.inputs.val.official_rule or None,
        )
        self.log.say(
            f"{cfg.preset}: {self.num_params:,} parameters, {rt.world_size} rank(s) on {rt.device}, grad_accum "
            f"{self.grad_accum}, estimated artifact {sum(sizes.values()):,} bytes"
        )
        val = self.inputs.val
        numbers = ["val_bpb (exact: byte sidecars)"] if val.exact is not None else []
        numbers += [f"val_bpb_official ({val.official_rule})"] if val.official is not None else []
        self.log.say(f"data: {self.inputs.folder}; scored as {' and '.join(numbers)}")
        if (over := estimate.warning(sizes, cfg.quant, budget_limit)) is not None:
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
            with self.stop:
                while self.clock.step < t.iterations and not self.stopped_by_clock:
                    step = self.clock.step
                    if t.val_every and step % t.val_every == 0 and (step > self.clock.start.step or step == 0):
                        result = self.validate(t.val_tokens)
                        bar.set_postfix({result.key: f"{result.bpb:.4f}"})
                    loss, lr_scale = self.step()
                    bar.update(1)
                    self.stopped_by_clock, signalled = self.should_stop()  # first: a logged step is a check point
                    if t.log_every and (self.clock.step % t.log_every == 0 or self.clock.step == t.iterations):
                        bar.set_postfix(loss=f"{self.log_step(loss, lr_scale):.3f}")
                    due = t.checkpoint_every and self.clock.step % t.checkpoint_every == 0
                    saved = self.save_checkpoint() if self.rt.is_main and (due or signalled) else None
                    if signalled:
                        self.log.record("interrupted", step=self.clock.step, checkpoint=str(saved))
                        raise Interrupted(self.stop.signum or signal.SIGTERM, self.clock.step, saved)
            if hasattr(self.model, "set_looping"):
                self.model.set_looping(True)
            if self.ema is not None:
                self.ema.copy_to(self.model)
            self.calibrate_on_training_tokens()
            final = self.validate(0)
            bar.set_postfix({final.key: f"{final.bpb:.4f}"})
        return final

    def calibrate_on_training_tokens(self) -> None:
        """With ``quant.calib_source train``: the GPTQ Hessians of the final weights from random training windows,
        on the training clock, in the time ``train.calib_reserve_s`` kept (the 1.0611 record's calibration; reading
        training data counts as training, so it must end inside the 600 s: docs/records.md, GPTQ calibration)."""
        q, t = self.cfg.quant, self.cfg.train
        if q.method != "gptq" or q.calib_source != "train":
            return
        self.rt.synchronize()
        t0 = time.perf_counter()
        # Every rank on its share of the windows (rank 0 exports with the all-reduced Hessians).
        tokens = random_windows(self.loader.stream, q.calib_seqs, q.calib_seq_len or t.seq_len, t.seed)
        mine = calibration.rank_batches(q.calib_seqs, q.calib_batch, self.rt)
        share = calibration.batch_rows(mine, q.calib_seqs, q.calib_batch)
        self.hessians = calibration_hessians(self.model, self.cfg, tokens[share], runtime=self.rt, reduce=True)
        seconds = self.rt.broadcast(time.perf_counter() - t0)
        self.clock.seconds += seconds
        over = t.max_minutes and self.clock.seconds > 60.0 * t.max_minutes
        self.log.record("calibration", source="train", seconds=round(seconds, 3), train_seconds=self.clock.seconds)
        self.log.say(
            f"GPTQ calibration on {q.calib_seqs} training windows: {seconds:.1f}s (reserve {t.calib_reserve_s}s)"
            + (f"; training time {self.clock.seconds:.1f}s is over --max-minutes {t.max_minutes}" if over else "")
        )

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

    def should_stop(self) -> tuple[bool, bool]:
        """After a step: ``(out of time, signalled)``, the same on every rank. Both change only at the clock's check
        points, where the ranks agree on its seconds and on any rank's signal, so every rank stops at the same step;
        a lone process has nothing to agree with and takes a signal at once."""
        t, clock = self.cfg.train, self.clock
        signalled = False
        if clock.due(t) or (self.stop.requested and not self.rt.distributed):
            signalled = clock.check(self.rt, t, self.stop.requested)
        over = clock.out_of_time(t) and clock.step < t.iterations
        if over:
            self.log.say(
                f"stopping at step {clock.step}: {clock.seconds:.1f}s of training, and another step would pass "
                f"--max-minutes {t.max_minutes} ({t.limit_seconds:.1f}s for the steps)"
            )
        return over, signalled

    def export_and_score(self, final_val: BPBResult, budget_limit: int) -> dict:
        """Checkpoint the final weights, write the artifact, score the model rebuilt from it alone; the summary."""
        rt, out_dir = self.rt, self.out_dir
        if rt.is_main:
            self.save_checkpoint()
        art_path = out_dir / ARTIFACT_NAME
        try:
            write_artifact(
                art_path, self.cfg, self.model, self.inputs.tokenizer_bytes, budget_limit, rt, self.log, self.hessians
            )
        except (artifact.BudgetError, OSError) as e:
            self.log.record("error", message=str(e))
            raise type(e)(f"{e}; the trained weights are in {checkpoint.latest(out_dir)}") from None
        art = artifact.read(art_path)
        rebuilt, _ = artifact.build_model(art, device=rt.device)
        eval_start = time.perf_counter()
        roundtrip = self.score_val(rebuilt, tilt=self.cfg.eval.tilt)  # the tilt reads the scored stream only
        eval_seconds = time.perf_counter() - eval_start
        summary = {
            "preset": self.cfg.preset,
            "steps": self.clock.step,
            "train_seconds": round(self.clock.seconds, 3),
            "stopped_by_clock": self.stopped_by_clock,
            "params": self.num_params,
            "data": self.inputs.folder,
            **summary_numbers(final_val, roundtrip),
            "artifact_eval_seconds": round(eval_seconds, 3),
            "artifact": str(art_path),
            "artifact_bytes": art.total_bytes,
            "artifact_parts": art.sizes,
        }
        self.log.record("result", **summary)
        if rt.is_main:
            write_atomic(out_dir / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
            self.log.say(f"before quantization: {final_val.line()}")
            self.log.say(f"from {art_path}: {roundtrip.line()}")
            self.log.say(estimate.format_table(art.sizes, budget_limit, title=str(art_path)))
        return summary


def summary_numbers(before: BPBResult, after: BPBResult) -> dict:
    """``val_bpb``/``val_loss`` before quantization, ``artifact_val_bpb``/``_loss`` from the artifact and the targets
    and bytes scored, each also with ``_official`` where that number was measured."""
    numbers = {k: v for k, v in before.to_dict().items() if k.startswith(("val_bpb", "val_loss"))}
    for k, v in after.to_dict().items():
        numbers[f"artifact_{k}" if k.startswith(("val_bpb", "val_loss")) else k.replace("tokens", "targets")] = v
    return numbers


def run(
    cfg: Config,
    *,
    data: str | Path,
    tokenizer: str | Path,
    out_dir: str | Path,
    resume: str | None = None,
    force: bool = False,
    rt: Runtime | None = None,
    budget_limit: int = artifact.LIMIT,
    progress: bool = True,
) -> dict:
    """Train ``cfg`` and write the artifact; returns the run summary (also saved as ``RUN/summary.json``).

    ``out_dir`` must be empty unless ``resume`` (a checkpoint, or "auto": its newest) continues the run in it or
    ``force`` replaces that run (``run_dir``: only its own files are deleted, once the inputs have been checked).
    """
    rt = rt or Runtime(torch.device("cpu"))
    plan = _plan_out_dir(Path(out_dir), resume, force, rt)
    inputs = load_inputs(cfg, data, tokenizer, budget_limit)
    log = RunLog(plan.out_dir / LOG_NAME if rt.is_main else None, console=rt.is_main and progress)
    trainer = Trainer(cfg, inputs, rt, plan.out_dir, log, plan.resume_from)  # refuses what cannot run
    if rt.is_main:
        if plan.clear:
            for path in run_dir.clear(plan.out_dir):
                log.say(f"--force: removed {path}")
        plan.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        rt.barrier()
        trainer.warm_up()
        trainer.log_start(budget_limit)
        final_val = trainer.train(progress)
        return trainer.export_and_score(final_val, budget_limit)
    except RuntimeError as e:
        if not rt.distributed:
            raise
        # gloo and NCCL report a dead peer as a RuntimeError from whichever collective this rank was in.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PeerLost(
            f"rank {rt.rank}: a collective failed at step {trainer.clock.step} ({first}); another rank has probably "
            f"died, see its output. The last checkpoint is {checkpoint.latest(plan.out_dir)}: relaunch with "
            "--resume auto to continue"
        ) from e


def _plan_out_dir(out_dir: Path, resume: str | None, force: bool, rt: Runtime) -> run_dir.Plan:
    """Rank 0's ``run_dir.plan`` (it owns the directory), on every rank; its refusal is raised on every rank."""
    plan, error = None, None
    if rt.is_main:
        try:
            plan = run_dir.plan(out_dir, resume=resume, force=force)
        except run_dir.RunDirError as e:
            error = str(e)
    plan, error = rt.broadcast((plan, error))
    if error is not None:
        raise run_dir.RunDirError(error)
    return plan
