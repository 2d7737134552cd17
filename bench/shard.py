"""The shard writer against a plain loop and the challenge's own export, side by side on the same documents.

    python bench/shard.py [--corpus SRC] [--max-docs N] [--repeats R] [--rss-gb G]

On the same documents, with the official sp1024 tokenizer trained on them, in one run:

- plain: one process, one thread: encode document by document, append to lists, write shards and sidecars;
- pgolf workers=1 / workers=N: ``write_shards`` with sidecars for both splits (more work than the challenge does);
- challenge: the challenge's export approach: SentencePiece batch encode (1,024 documents a call) with num_threads =
  all cores, BOS prepended, 10^8-token buffer, no sidecars.

Each runs ``--repeats`` times, alternating, fastest counts (the machine is shared). Targets: workers=1 >= plain,
workers=N / workers=1 >= 1.7 on 2 cores, workers=N (with sidecars) >= challenge. Then MB/s of text for sp1024,
sp8192 and CaseOps sp8192 with workers=N. ``--rss-gb`` runs ``pgolf-data shard`` on G GB of text (the documents
repeated) and samples the resident memory of the writer and its workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pgolf_data.corpus import open_corpus
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import MAX_SHARD_TOKENS, shard_filename, write_shard
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.spec import resolve_spec

DEV_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "web_dev.jsonl.zst"


def plain_loop(tok, docs: list[str], val_docs: int, out: Path) -> None:
    """The straightforward writer: per document encode, list appends, cut at 10^8 tokens, sidecars everywhere."""
    tok.set_threads(1)
    for split, part in (("val", docs[:val_docs]), ("train", docs[val_docs:])):
        tokens: list[int] = []
        counts: list[int] = []
        for doc in part:
            ids, doc_counts = tok.encode_with_bytes([doc])[0]
            tokens.append(tok.bos_id)
            tokens.extend(ids.tolist())
            counts.append(0)
            counts.extend(doc_counts.tolist())
        for i, lo in enumerate(range(0, len(tokens), MAX_SHARD_TOKENS)):
            write_shard(out / shard_filename("plain", split, i), np.array(tokens[lo : lo + MAX_SHARD_TOKENS]))
            write_shard(
                out / shard_filename("plain", split, i, sidecar=True), np.array(counts[lo : lo + MAX_SHARD_TOKENS])
            )


def challenge_export(model_proto: bytes, docs: list[str], val_docs: int, out: Path, threads: int) -> None:
    """The challenge's approach: batched SentencePiece encode on all cores, BOS + ids into a shard buffer."""
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    buffer = np.empty(MAX_SHARD_TOKENS, dtype=np.uint16)
    fill, index, split = 0, {"val": 0, "train": 0}, "val"

    def flush() -> None:
        nonlocal fill
        if fill:
            write_shard(out / shard_filename("challenge", split, index[split]), buffer[:fill])
            index[split] += 1
            fill = 0

    for lo in range(0, len(docs), 1024):
        batch = docs[lo : lo + 1024]
        for k, ids in enumerate(sp.encode(batch, out_type=int, num_threads=threads)):
            if (lo + k < val_docs) != (split == "val"):
                flush()
                split = "train"
            toks = np.array([sp.bos_id(), *ids], dtype=np.uint16)
            pos = 0
            while pos < len(toks):
                take = min(MAX_SHARD_TOKENS - fill, len(toks) - pos)
                buffer[fill : fill + take] = toks[pos : pos + take]
                fill, pos = fill + take, pos + take
                if fill == MAX_SHARD_TOKENS:
                    flush()
    flush()


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process and its finished children (the pool's workers)."""
    cpu = sum(getattr(resource.getrusage(who), f) for who in _WHO for f in ("ru_utime", "ru_stime"))
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    return wall, sum(getattr(resource.getrusage(who), f) for who in _WHO for f in ("ru_utime", "ru_stime")) - cpu


_WHO = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


def fresh(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def compare(docs: list[str], tok_bytes: bytes, val_docs: int, repeats: int, root: Path) -> None:
    tok = artifact.from_artifact(tok_bytes)
    n = training.default_threads()
    mb = sum(len(d.encode()) for d in docs) / 1e6

    def pgolf(workers: int, train_sidecars: bool = True):
        config = ShardConfig(val_docs=val_docs, train_sidecars=train_sidecars, workers=workers)
        return lambda: write_shards(docs, tok_bytes, fresh(root, f"w{workers}{train_sidecars}"), config)

    runs = {
        "plain": (
            "plain loop (1 process, 1 thread, sidecars)",
            lambda: plain_loop(tok, docs, val_docs, fresh(root, "plain")),
        ),
        "w1": ("pgolf workers=1 (sidecars)", pgolf(1)),
        "wn": (f"pgolf workers={n} (sidecars)", pgolf(n)),
        "wn_val": (f"pgolf workers={n} (val sidecars only)", pgolf(n, False)),
        "challenge": (
            f"challenge export ({n} threads, no sidecars)",
            lambda: challenge_export(tok.model_proto(), docs, val_docs, fresh(root, "challenge"), n),
        ),
    }
    best = {key: (float("inf"), 0.0) for key in runs}
    for _ in range(repeats):
        for key, (_, run) in runs.items():
            best[key] = min(best[key], timed(run))
    same = all(
        (root / "w1True" / f).read_bytes() == (root / "challenge" / f.replace("fineweb", "challenge")).read_bytes()
        for f in ("fineweb_val_000000.bin", "fineweb_train_000000.bin")
    )
    print(
        f"\n{len(docs):,} documents, {mb:.1f} MB of text, sp1024, {n} cores; fastest of {repeats} "
        "(wall time, and CPU time of all processes)"
    )
    for key, (label, _) in runs.items():
        wall, cpu = best[key]
        print(f"  {label:<44} {wall:7.2f} s {mb / wall:7.2f} MB/s   CPU {cpu:6.2f} s {mb / cpu:6.2f} MB/CPU-s")
    wall = {key: value[0] for key, value in best.items()}
    print(f"  workers=1 / plain                    {wall['plain'] / wall['w1']:5.2f}x   (target >= 1.0)")
    print(f"  workers={n} / workers=1                {wall['w1'] / wall['wn']:5.2f}x   (target >= 1.7 on 2 cores)")
    print(f"  workers={n} sidecars / challenge       {wall['challenge'] / wall['wn']:5.2f}x   (target >= 1.0)")
    print(f"  workers={n} val sidecars / challenge   {wall['challenge'] / wall['wn_val']:5.2f}x")
    print(f"  token shards identical to the challenge export: {same}")


def kinds(docs: list[str], train_docs: list[str], val_docs: int, root: Path, specs: list[str]) -> dict[str, bytes]:
    n = training.default_threads()
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"\nwrite_shards workers={n}, validation sidecars, {mb:.1f} MB of text:")
    trained = {}
    for name in specs:
        tok, _ = training.train(resolve_spec(name), train_docs)
        data = artifact.to_artifact(tok)
        trained[name] = data
        config = ShardConfig(val_docs=val_docs, workers=n)
        seconds, _ = timed(lambda data=data, config=config: write_shards(docs, data, fresh(root, "kind"), config))
        print(f"  {name:<16} {mb / seconds:7.2f} MB/s  ({'lossless' if tok.lossless else 'lossy'})")
    return trained


def rss(pid: int) -> dict[int, int]:
    """Resident bytes of ``pid`` and its descendants, from /proc."""
    out, stack = {}, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            out[p] = int(status.split("VmRSS:")[1].split()[0]) * 1024 if "VmRSS:" in status else 0
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return out


def measure_rss(docs: list[str], tok_bytes: bytes, gb: float, root: Path) -> None:
    import zstandard

    corpus = root / "big.jsonl.zst"
    text_bytes = 0
    with open(corpus, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as f:
        while text_bytes < gb * 1e9:
            for d in docs:
                f.write((json.dumps({"text": d}) + "\n").encode())
                text_bytes += len(d.encode())
    tok_dir = fresh(root, "tok")
    (tok_dir / "tokenizer.pgt").write_bytes(tok_bytes)
    out = root / "big"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pgolf_data", "shard", "--tokenizer", str(tok_dir), "--corpus", str(corpus)]
    cmd += ["--out", str(out), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    peak_main = peak_worker = peak_total = 0
    while proc.poll() is None:
        sizes = rss(proc.pid)
        peak_main = max(peak_main, sizes.get(proc.pid, 0))
        peak_worker = max([peak_worker, *(v for p, v in sizes.items() if p != proc.pid)])
        peak_total = max(peak_total, sum(sizes.values()))
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text()) if proc.returncode == 0 else {}
    tokens = sum(s["tokens"] for s in manifest.get("splits", {}).values())
    workers = training.default_threads()
    print(f"\npgolf-data shard on {text_bytes / 1e9:.2f} GB of text (sp1024, {workers} workers): rc {proc.returncode}")
    print(f"  {seconds:.0f} s, {text_bytes / 1e6 / seconds:.2f} MB/s, {tokens:,} tokens")
    print(
        f"  peak RSS: writer {peak_main / 2**20:.0f} MiB, largest worker {peak_worker / 2**20:.0f} MiB, "
        f"all processes together {peak_total / 2**20:.0f} MiB"
    )
    shutil.rmtree(out, ignore_errors=True)
    corpus.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default")
    parser.add_argument("--max-docs", type=int, help="use only the first N documents")
    parser.add_argument("--repeats", type=int, default=2, help="runs per method; the fastest counts (default 2)")
    parser.add_argument("--rss-gb", type=float, default=0, help="also measure peak RSS on this many GB of text")
    parser.add_argument("--specs", default="sp1024,sp8192,caseops_sp8192", help="tokenizer specs for the MB/s table")
    args = parser.parse_args()
    docs = list(open_corpus(args.corpus, max_docs=args.max_docs))
    val_docs = len(docs) // 10
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        root = Path(tmp)
        trained = kinds(docs, docs[val_docs:], val_docs, root, args.specs.split(","))
        sp1024 = trained.get("sp1024") or artifact.to_artifact(training.train(resolve_spec("sp1024"), docs)[0])
        compare(docs, sp1024, val_docs, args.repeats, root)
        if args.rss_gb:
            measure_rss(docs, sp1024, args.rss_gb, root)


if __name__ == "__main__":
    main()
