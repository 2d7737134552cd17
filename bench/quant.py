"""Quantization error and time on CPU: round-to-nearest vs GPTQ at int5..int8, side by side on one trained model.

    python bench/quant.py [--preset tiny] [--steps 300] [--threads 2] [--val-tokens 200000]
    python bench/quant.py --run RUN_DIR --data SHARD_DIR     # a model trained by pgolf_model.train

Without ``--run`` it trains the preset on the development corpus (byte-level tokens, vocab 260) with
``pgolf_model.train``. Then, on the same model and the same validation targets:

- BPB delta of the dequantized weights vs the float model, for RTN and GPTQ (self-generated calibration, act-order,
  damping 0.01) at each width, both with the same row scales (``--sdclip-k`` or the config's clip quantile);
- compressed bytes of the integers (zstd-22) for each;
- time: self-generated calibration, Hessians, GPTQ of every matrix at one width, against RTN and one training step.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgolf_data.compress import compress
from pgolf_model import quant
from pgolf_model.config import Config
from pgolf_model.evaluation.byte_counts import load_val
from pgolf_model.evaluation.scoring import score
from pgolf_model.export import calibration, gptq
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training import checkpoint
from pgolf_model.training.optim import build_optimizers

DEV_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "web_dev.jsonl.zst"
CPU = Runtime(torch.device("cpu"))


def byte_dataset(root: Path, val_docs: int = 300, max_docs: int = 6000) -> tuple[Path, Path]:
    """Byte-tokenized train/val shards with sidecars from the development corpus (or the embedded default)."""
    from pgolf_data.corpus import open_corpus
    from pgolf_data.shards import shard_filename, write_shard
    from pgolf_data.tokenizer import artifact as tok_artifact
    from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
    from pgolf_data.tokenizer.spec import TokenizerSpec

    tok = ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260))
    tok_artifact.save(tok, root / "tokenizer", report={})
    source = str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default"
    docs = list(open_corpus(source, max_docs=max_docs))
    (root / "data").mkdir()
    for split, part in (("val", docs[:val_docs]), ("train", docs[val_docs:])):
        ids, counts = [], []
        for doc_ids, doc_bytes in tok.encode_with_bytes(part):
            ids += [np.array([tok.bos_id]), doc_ids]
            counts += [np.array([0]), doc_bytes]
        write_shard(root / "data" / shard_filename("bench", split, 0), np.concatenate(ids))
        write_shard(root / "data" / shard_filename("bench", split, 0, sidecar=True), np.concatenate(counts))
    return root / "data", root / "tokenizer"


def trained_model(args) -> tuple[GPT, Config, Path]:
    if args.run:
        model, cfg, _, _ = checkpoint.newest_model(args.run)
        return model, cfg, Path(args.data)
    from pgolf_model.training.trainer import run

    root = Path(tempfile.mkdtemp(prefix="pgolf-bench-quant-"))
    data, tok = byte_dataset(root)
    cfg = preset(args.preset).override(
        {"model.vocab_size": 260, "train.iterations": args.steps, "train.val_every": 0, "train.max_minutes": 0.0}
    )
    print(f"training {args.preset} for {args.steps} steps on byte tokens in {root} ...")
    run(cfg, data=data, tokenizer=tok, out_dir=root / "run", progress=False)
    model, cfg, _, _ = checkpoint.newest_model(root / "run")
    return model, cfg, data


def step_seconds(model: GPT, cfg: Config, repeats: int = 3) -> float:
    """Median seconds of one training step (forward, backward, optimizer) at the preset's batch, on a copy."""
    net = copy.deepcopy(model).train()
    optimizers = build_optimizers(net, cfg.optim)
    rows, seq = cfg.train.device_batch_tokens // cfg.train.seq_len, cfg.train.seq_len
    x = torch.randint(cfg.model.vocab_size, (rows, seq + 1), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net(x[:, :-1], x[:, 1:]).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def add_model_args(parser: argparse.ArgumentParser, steps: int) -> None:
    """The flags of ``trained_model`` (a run's newest checkpoint, or a preset trained here) and of the scoring."""
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=steps, help="training steps when no --run is given")
    parser.add_argument("--run", help="a pgolf_model.train run directory (its newest checkpoint is used)")
    parser.add_argument("--data", help="the run's shard directory (with --run)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--val-tokens", type=int, default=200_000, help="validation targets scored per variant")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser, steps=300)
    parser.add_argument("--calib-seqs", type=int, default=32, help="self-generated calibration sequences")
    parser.add_argument("--calib-len", type=int, default=128, help="their length")
    parser.add_argument("--calib-batch", type=int, default=32)
    parser.add_argument("--sdclip-k", type=float, default=0.0, help="SDClip k for the row scales (0: clip quantile)")
    args = parser.parse_args(argv)
    if args.run and not args.data:
        parser.error("--run needs --data")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, cfg, data = trained_model(args)
    tokens, counts = load_val(data)
    seq = cfg.train.seq_len

    def bpb(m: GPT) -> float:
        return score(
            m,
            tokens,
            counts,
            seq_len=seq,
            batch_tokens=cfg.train.device_batch_tokens,
            runtime=CPU,
            val_tokens=args.val_tokens,
        ).bpb

    base = bpb(model)
    t0 = time.perf_counter()
    calib = calibration.generate(
        model, args.calib_seqs, args.calib_len, batch_size=args.calib_batch, seed=0, runtime=CPU
    )
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    hessians = calibration.collect_hessians(model, calib, batch_size=args.calib_batch, runtime=CPU)
    t_hess = time.perf_counter() - t0
    state = model.state_dict()
    names = [n for n, w in state.items() if w.ndim == 2 and w.numel() > cfg.quant.keep_float_max_numel]
    params = sum(state[n].numel() for n in names)

    rows, times = [], {"rtn": [], "gptq": []}
    for bits in (5, 6, 7, 8):
        result = {}
        for method in ("rtn", "gptq"):
            quantized = copy.deepcopy(model)
            qstate, ints = quantized.state_dict(), []
            t0 = time.perf_counter()
            for n in names:
                w = state[n]
                scale = quant.row_scales(w, bits, clip_quantile=cfg.quant.clip_quantile, sdclip_k=args.sdclip_k)
                if method == "gptq":
                    q = gptq.gptq(w, hessians[n], scale, bits)
                else:
                    q = quant.round_to_nearest(w, scale, bits)
                qstate[n].copy_(q.float() * scale.float()[:, None])
                ints.append(q.numpy().reshape(-1))
            times[method].append(time.perf_counter() - t0)
            size = len(compress(np.concatenate(ints).tobytes(), ("zstd",))[1])
            result[method] = (bpb(quantized) - base, size)
        rows.append((bits, result))

    clip = f"SDClip k={args.sdclip_k}" if args.sdclip_k else f"clip quantile {cfg.quant.clip_quantile}"
    print(
        f"\n{cfg.preset}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(names)} quantized "
        f"matrices ({params:,} values), {clip}; float val_bpb {base:.4f} on {args.val_tokens:,} targets"
    )
    print(f"{'bits':>5}{'RTN dBPB':>11}{'GPTQ dBPB':>11}{'GPTQ/RTN':>10}{'RTN bytes':>12}{'GPTQ bytes':>12}")
    for bits, r in rows:
        (d_rtn, b_rtn), (d_gptq, b_gptq) = r["rtn"], r["gptq"]
        ratio = d_gptq / d_rtn if d_rtn > 0 else float("nan")
        print(f"{'int' + str(bits):>5}{d_rtn:>11.4f}{d_gptq:>11.4f}{ratio:>10.2f}{b_rtn:>12,}{b_gptq:>12,}")
    step = step_seconds(model, cfg)
    t_gptq, t_rtn = float(np.median(times["gptq"])), float(np.median(times["rtn"]))
    print(f"\ntime (1 CPU process, {torch.get_num_threads()} threads), median over widths:")
    print(f"  calibration: generate {args.calib_seqs} x {args.calib_len} tokens {t_gen:.2f}s, Hessians {t_hess:.2f}s")
    print(f"  GPTQ all matrices {t_gptq:.2f}s = {t_gptq / t_rtn:.0f}x RTN ({t_rtn:.3f}s)")
    total = t_gen + t_hess + t_gptq
    print(f"  calibration + Hessians + GPTQ {total:.2f}s = {total / step:.1f} training steps ({step:.3f}s each)")


if __name__ == "__main__":
    main()
