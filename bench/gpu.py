"""Training throughput, MFU and peak memory of the record presets on one CUDA GPU, against the official baseline
script on the same GPU, with the cost of each record switch and the TTT evaluation time: a table plus JSON.

    python bench/gpu.py [--official train_gpt.py --official-data DIR --official-tokenizer FILE] [--json OUT]
    python bench/gpu.py --tiny --backend aot_eager     # the same code at tiny shapes on CPU (what its test runs)

Each preset (``baseline``, ``record-1.11``, ``record-caseops``) is built as the trainer builds it, compiled as the
trainer compiles it (``compile_for_training``) and timed on its per-GPU share of an 8-GPU step (``batch_tokens / 8``
tokens, 98,304 for the records), forward, backward, clip and optimizer steps, in the state most of its run trains in
(depth recurrence on, late QAT off). Tokens/s, MFU (``eval_plan.pass_flops`` training FLOPs over the GPU's dense bf16
peak) and peak allocated memory are reported.

Self-checks (the exit status is 1 when one fails, after the table): the compiled loss equals the eager loss of the
same weights on the same batch within ``--rtol`` (bf16 autocast on CUDA), and the compiled model steps without a
graph break. Goals (issue 16; reported, not enforced): ``baseline`` tokens/s >= 1.0x the official script's, and
``record-caseops`` step time <= 1.1x the 1.0611 record's 121.7 ms for 98,304 tokens per GPU.

``--official PATH`` runs the official ``train_gpt.py`` on this GPU (one process: 8 accumulation steps of 65,536
tokens) with ``--official-data`` / ``--official-tokenizer`` (an sp1024 shard folder and its ``.model``) for
``--official-steps`` steps, reads its ``step_avg`` and stops it before its final evaluation: the ratio anchor.

Muon: Newton-Schulz over ``record-caseops``'s 66 block matrices one by one against ``orthogonalize_all``'s
same-shape banks (compiled on CUDA).

Record switches: each switch of ``bench/record_switches.py`` on the ``baseline`` model at seq 2048, eager by default
(compiling 15 variants would not fit the 8 minutes; ``--switch-mode compiled`` when time allows), as tokens/s ratios
to the model with every switch off, measured in alternating rounds.

TTT: ``eval_plan.time_ttt`` on ``record-caseops`` (phased TTT, its evaluation settings) for ``--docs`` synthetic
documents whose lengths follow the record's validation documents (``eval_plan.record_lengths_in_stream_order``);
the weights are the initial ones, which changes nothing of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from record_switches import VARIANTS  # bench/record_switches.py (run as a script, bench/ is on sys.path)

from pgolf_model import eval_plan
from pgolf_model.config import Config
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training import qat
from pgolf_model.training.data import document_bounds
from pgolf_model.training.optim import build_optimizers, newton_schulz, orthogonalize_all
from pgolf_model.training.trainer import compile_for_training

PRESETS = ("baseline", "record-1.11", "record-caseops")
WORLD = 8  # the challenge's GPUs: each is timed on its share of a step
RECORD_STEP_MS, RECORD_STEP_TOKENS = 121.7, 98_304  # the 1.0611 record, per GPU (issue 16)
GOAL_BASELINE, GOAL_CASEOPS = 1.0, 1.1
# Dense bf16 peak FLOP/s by device name (vendor data sheets; the SXM parts). Unknown GPUs: --peak-tflops.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.1, "B200": 2250.0}
# --tiny: every preset shrunk to seconds on a CPU, keeping its switches and its layer sequence.
TINY = {
    "model.model_dim": 64, "model.num_heads": 4, "model.num_kv_heads": 2,
    "train.seq_len": 64, "train.batch_tokens": 8 * 128, "train.device_batch_tokens": 128,
    "eval.seq_len": 64, "eval.lora.rank": 4, "eval.lora.chunk_tokens": 16, "eval.lora.batch_docs": 4,
    "eval.phased.prefix_docs": 4, "eval.phased.batch_seqs": 2, "eval.phased.chunk_tokens": 256,
}  # fmt: skip
STEP_LOG = re.compile(r"^step:(\d+)/(\d+) train_loss:\S+ train_time:\S+ step_avg:([0-9.]+)ms")


@dataclass
class PresetTiming:
    preset: str
    tokens_per_step: int
    step_ms: float
    tokens_per_s: float
    mfu: float
    peak_mem_gib: float
    compile_s: float
    eager_loss: float
    compiled_loss: float
    check: bool


def step_fn(model, net, optimizers, clip: float):
    def step(x, y, **docs):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss = net(x, y, **docs)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for opt in optimizers:
            opt.step()
        return loss.detach()

    return step


def batch(cfg: Config, tokens: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids with a BOS every ~700 tokens (SmearGate and document masks see documents): inputs, targets and
    the inputs' document bounds, found on the host as the trainer's loader does (``documents``)."""
    gen = torch.Generator().manual_seed(seed)
    rows = tokens // cfg.train.seq_len
    ids = torch.randint(2, cfg.model.vocab_size, (rows, cfg.train.seq_len + 1), generator=gen)
    ids[torch.rand(ids.shape, generator=gen) < 1 / 700] = cfg.model.bos_id
    bounds = torch.from_numpy(document_bounds(ids[:, :-1].numpy(), cfg.model.bos_id)).to(device)
    torch._dynamo.mark_dynamic(bounds, 0)
    ids = ids.to(device)
    return ids[:, :-1], ids[:, 1:], bounds


def documents(cfg: Config, bounds: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward pass's document bounds, as the trainer passes them to a doc-masked model (no device sync)."""
    return {"cu_seqlens": bounds} if getattr(cfg.model, "doc_masked", False) else {}


def time_preset(
    name: str, cfg: Config, rt: Runtime, steps: int, rtol: float, peak_flops: float, backend: str
) -> PresetTiming:
    """Time ``steps`` training steps of one GPU's share of ``cfg``'s step, compiled; check the compiled loss of the
    first micro-batch against the eager loss of the same weights."""
    device = rt.device
    tokens = cfg.train.batch_tokens // WORLD
    accum = tokens // cfg.train.device_batch_tokens
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    model.set_looping(True)
    pool = [batch(cfg, cfg.train.device_batch_tokens, device, seed=s) for s in range(4)]  # made before the timing
    x0, y0, bounds0 = pool[0]
    with rt.autocast():
        eager_loss = model(x0, y0, **documents(cfg, bounds0)).item()
    net = compile_for_training(model, backend)
    optimizers = build_optimizers(model, cfg.optim)

    def train_step(i: int) -> float:
        """One GPU's share of a step (its micro-batches, as DDP runs them, without the all-reduce): the first
        micro-batch's loss, read after the step."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        losses = []
        for micro in range(accum):
            x, y, bounds = pool[(i * accum + micro) % len(pool)]
            with rt.autocast():
                loss = net(x, y, **documents(cfg, bounds))
            (loss / accum).backward()
            losses.append(loss.detach())
        if cfg.optim.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        return losses[0]

    start = time.perf_counter()
    compiled_loss = train_step(0).item()  # the training graph compiles here
    train_step(1)
    rt.synchronize()
    compile_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(2 + i)
    rt.synchronize()
    step_s = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    shape = eval_plan.Shape.of(cfg.model, replace(cfg.eval, ttt="none"))  # training: no adapters
    flops = eval_plan.pass_flops(shape, cfg.train.seq_len, tokens // cfg.train.seq_len, "train")
    ok = abs(compiled_loss - eager_loss) <= rtol * abs(eager_loss)
    return PresetTiming(
        name, tokens, 1000 * step_s, tokens / step_s, flops / step_s / peak_flops if peak_flops else float("nan"),
        peak, compile_s, eager_loss, compiled_loss, ok,
    )  # fmt: skip


def run_official(path: str, data: str, tokenizer: str, steps: int, timeout_s: float) -> dict:
    """The official script's ``step_avg`` after ``steps`` steps (its own 20 warm-up steps excluded); the process is
    stopped at that log line, before its final evaluation and serialization."""
    env = {
        **os.environ, "DATA_PATH": data, "TOKENIZER_PATH": tokenizer, "ITERATIONS": str(steps),
        "TRAIN_LOG_EVERY": str(steps), "VAL_LOSS_EVERY": "0", "MAX_WALLCLOCK_SECONDS": "0", "RUN_ID": "bench_gpu",
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, path], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        cwd=Path(path).resolve().parent,
    )  # fmt: skip
    tail: list[str] = []
    try:
        for line in proc.stdout:
            tail = [*tail[-20:], line.rstrip()]
            m = STEP_LOG.match(line.strip())
            if m and int(m.group(1)) == steps:
                step_ms = float(m.group(3))
                return {"path": path, "steps": steps, "step_ms": step_ms, "tokens_per_s": 524_288 / step_ms * 1000}
            if time.perf_counter() - start > timeout_s:
                break
        raise RuntimeError(f"{path}: no 'step:{steps}/{steps} ... step_avg' line; its last output:\n" + "\n".join(tail))
    finally:
        proc.kill()
        proc.wait()


def time_switches(cfg: Config, rt: Runtime, steps: int, rounds: int, backend: str | None) -> dict[str, float]:
    """tokens/s of each switch as a ratio to every switch off, medians over alternating rounds; compiled with
    ``backend`` unless it is None."""
    last = cfg.model.num_layers - 1
    variants = {}
    for name, changes in VARIANTS.items():
        changes = {k: (last if v == -1 else v) for k, v in changes.items()}
        vcfg = cfg.override(changes)
        torch.manual_seed(0)
        model = GPT(vcfg.model).to(rt.device)
        if vcfg.train.qat_threshold:
            qat.enable(model, vcfg.quant)
        net = compile_for_training(model, backend) if backend else model
        variants[name] = (step_fn(model, net, build_optimizers(model, vcfg.optim), 0.0), vcfg)
    x, y, bounds = batch(cfg, cfg.train.device_batch_tokens, rt.device, seed=0)
    for step, vcfg in variants.values():  # warm-up (compilation)
        with rt.autocast():
            step(x, y, **documents(vcfg, bounds))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (step, vcfg) in variants.items():
            rt.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                with rt.autocast():
                    step(x, y, **documents(vcfg, bounds))
            rt.synchronize()
            times[name].append((time.perf_counter() - t0) / steps)
    off = statistics.median(times["off"])
    return {name: off / statistics.median(t) for name, t in times.items()}


def time_muon(cfg: Config, rt: Runtime, reps: int) -> dict:
    """Newton-Schulz of every block matrix of ``cfg``'s model: one chain per matrix (Muon before the banks) against
    ``orthogonalize_all``'s banks (compiled on CUDA), in alternating rounds; milliseconds per optimizer step."""
    with torch.device(rt.device):
        model = GPT(cfg.model)
    updates = [p.detach().clone().normal_() for _, p in model.param_groups()["matrix"]]
    dtype = torch.bfloat16 if rt.device.type == "cuda" else torch.float32
    steps, coeffs = cfg.optim.muon_ns_steps, cfg.optim.muon_ns_coeffs
    ways = {
        "loop": lambda: [newton_schulz(u, steps, dtype=dtype, coeffs=coeffs) for u in updates],
        "banked": lambda: orthogonalize_all(updates, steps, dtype, coeffs),
    }
    for way in ways.values():  # warm-up: the banks compile here
        way()
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(reps):
        for name, way in ways.items():
            rt.synchronize()
            t0 = time.perf_counter()
            way()
            rt.synchronize()
            times[name].append(1000 * (time.perf_counter() - t0))
    loop, banked = statistics.median(times["loop"]), statistics.median(times["banked"])
    return {"matrices": len(updates), "loop_ms": loop, "banked_ms": banked, "speedup": loop / banked}


def synthetic_val(cfg: Config, docs: int, seed: int = 0, max_len: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validation tokens of ``docs`` documents with the record's length distribution, and byte counts (1-6 a token,
    BOS 0)."""
    rng = np.random.default_rng(seed)
    lengths = eval_plan.record_lengths_in_stream_order(seed)[:docs]
    if max_len:
        lengths = [min(n, max_len) for n in lengths]
    parts = []
    for n in lengths:
        doc = rng.integers(2, cfg.model.vocab_size, n)
        doc[0] = cfg.model.bos_id
        parts.append(doc)
    tokens = np.concatenate(parts).astype(np.int64)
    counts = np.where(tokens == cfg.model.bos_id, 0, rng.integers(1, 7, len(tokens)))
    return tokens, counts


def time_ttt(cfg: Config, rt: Runtime, docs: int, max_len: int) -> dict:
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model).to(rt.device)
    tokens, counts = synthetic_val(cfg, docs, max_len=max_len)
    got = eval_plan.time_ttt(model, tokens, counts, cfg, bos_id=cfg.model.bos_id, runtime=rt, docs=docs)
    got["mode"] = cfg.eval.ttt
    got["estimate_8gpu_50k_docs_s"] = got["seconds"] * eval_plan.RECORD_DOCS / got["docs"] / WORLD
    return got


def peak_tflops(device: torch.device, given: float) -> float:
    if given:
        return given
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)


def report(result: dict) -> str:
    lines = [f"device: {result['device']}  torch {result['torch']}  peak {result['peak_tflops']} TFLOP/s bf16"]
    lines.append(
        f"{'preset':<15} {'tok/step':>9} {'step ms':>9} {'tok/s':>12} {'MFU':>6} {'peak GiB':>9} {'compile s':>9} "
        f"{'check':>6}"
    )
    for p in result["presets"]:
        lines.append(
            f"{p['preset']:<15} {p['tokens_per_step']:9,} {p['step_ms']:9.2f} {p['tokens_per_s']:12,.0f} "
            f"{p['mfu']:6.1%} {p['peak_mem_gib']:9.2f} {p['compile_s']:9.1f} {'ok' if p['check'] else 'FAIL':>6}"
        )
    goals = result["goals"]
    if "baseline_vs_official" in goals:
        o = result["official"]
        lines.append(
            f"official train_gpt.py: {o['step_ms']:.2f} ms / 524,288 tokens = {o['tokens_per_s']:,.0f} tok/s; "
            f"baseline / official tokens/s = {goals['baseline_vs_official']:.3f} (goal >= {GOAL_BASELINE})"
        )
    if "caseops_vs_record" in goals:
        lines.append(
            f"record-caseops step / the record's {RECORD_STEP_MS} ms = {goals['caseops_vs_record']:.3f} "
            f"(goal <= {GOAL_CASEOPS})"
        )
    if result.get("muon"):
        m = result["muon"]
        lines.append(
            f"Muon Newton-Schulz, record-caseops's {m['matrices']} matrices: {m['loop_ms']:.2f} ms one by one, "
            f"{m['banked_ms']:.2f} ms in banks ({m['speedup']:.2f}x)"
        )
    if result.get("switches"):
        lines.append(f"\nrecord switches on baseline ({result['switch_mode']}), tokens/s ratio to all off:")
        lines += [f"  {name:<16} {ratio:6.3f}" for name, ratio in result["switches"].items()]
    if result.get("ttt"):
        t = result["ttt"]
        lines.append(
            f"\nTTT ({t['mode']}) on {t['docs']:,} documents: {t['seconds']:.1f} s, {t['passes']:,} chunk passes, "
            f"{t['tokens']:,} tokens; x {eval_plan.RECORD_DOCS:,} docs / {WORLD} GPUs = "
            f"{t['estimate_8gpu_50k_docs_s']:.0f} s (clock {eval_plan.CLOCK_SECONDS:.0f} s)"
        )
    lines += [f"ERROR {part}: {error}" for part, error in result["errors"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, runs on CPU in seconds (tests)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no code generation)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per preset")
    parser.add_argument("--rtol", type=float, default=0.0, help="compiled vs eager loss (default: 1e-2 CUDA, 1e-4 CPU)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's dense bf16 peak (default: by name)")
    parser.add_argument("--official", help="the official train_gpt.py: its step time is the ratio anchor")
    parser.add_argument("--official-data", help="its DATA_PATH (an sp1024 shard folder)")
    parser.add_argument("--official-tokenizer", help="its TOKENIZER_PATH (the sp1024 .model)")
    parser.add_argument("--official-steps", type=int, default=30)
    parser.add_argument("--switch-mode", choices=("eager", "compiled", "off"), default="eager")
    parser.add_argument("--switch-steps", type=int, default=3)
    parser.add_argument("--switch-rounds", type=int, default=3)
    parser.add_argument("--docs", type=int, default=1000, help="TTT documents (0 = skip the TTT timing)")
    parser.add_argument("--json", default="bench_gpu.json", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.official and not (args.official_data and args.official_tokenizer):
        parser.error("--official needs --official-data and --official-tokenizer")

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rt = Runtime(device)
    rtol = args.rtol or (1e-2 if device.type == "cuda" else 1e-4)
    peak = peak_tflops(device, args.peak_tflops)
    t_start = time.perf_counter()

    def config(name: str) -> Config:
        cfg = preset(name)
        return cfg.override(TINY) if args.tiny else cfg

    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "peak_tflops": peak, "tiny": args.tiny, "backend": args.backend,
        "presets": [], "goals": {}, "errors": {},
    }  # fmt: skip

    def attempt(part: str, fn, *fn_args):
        """``fn(*fn_args)``, or None with its error kept (an out-of-memory preset must not cost the other figures;
        the error is in the table and the JSON, and the exit status is 1)."""
        try:
            return fn(*fn_args)
        except Exception as e:
            result["errors"][part] = f"{type(e).__name__}: {e}"
            print(f"{part}: {type(e).__name__}: {e}", file=sys.stderr)
            return None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for name in PRESETS:
        timing = attempt(name, time_preset, name, config(name), rt, args.steps, rtol, peak * 1e12, args.backend)
        if timing is not None:
            result["presets"].append(asdict(timing))
    timings = {p["preset"]: p for p in result["presets"]}
    if args.official:
        official = (args.official, args.official_data, args.official_tokenizer, args.official_steps)
        result["official"] = attempt("official", run_official, *official, 300)
        if result["official"] and "baseline" in timings:
            ours, theirs = timings["baseline"]["tokens_per_s"], result["official"]["tokens_per_s"]
            result["goals"]["baseline_vs_official"] = ours / theirs
    if not args.tiny and "record-caseops" in timings:
        caseops = timings["record-caseops"]
        ms_per_record_step = caseops["step_ms"] * RECORD_STEP_TOKENS / caseops["tokens_per_step"]
        result["goals"]["caseops_vs_record"] = ms_per_record_step / RECORD_STEP_MS
    result["muon"] = attempt("muon", time_muon, config("record-caseops"), rt, 5)
    if args.switch_mode != "off":
        base = config("baseline").override({"train.seq_len": 2048} if not args.tiny else {})
        result["switch_mode"] = args.switch_mode
        backend = args.backend if args.switch_mode == "compiled" else None
        switches = (base, rt, args.switch_steps, args.switch_rounds, backend)
        result["switches"] = attempt("switches", time_switches, *switches)
    if args.docs:
        max_len = 128 if args.tiny else 0
        result["ttt"] = attempt("ttt", time_ttt, config("record-caseops"), rt, args.docs, max_len)
    result["seconds"] = time.perf_counter() - t_start
    result["checks_ok"] = not result["errors"] and all(p["check"] for p in result["presets"])
    print(report(result))
    print(f"\n{result['seconds']:.0f} s in all; JSON in {args.json}")
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["checks_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
