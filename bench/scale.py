"""The datatrove engine against ``pgolf-data shard``, side by side on the same documents and the same cores.

    python bench/scale.py [--corpus SRC] [--copies K] [--cores C] [--repeats R] [--full-gb G] [--full-docs N]

The corpus' documents, ``--copies`` times over, are written as one plain .jsonl file (the challenge's format, which
the datatrove engine cuts at byte offsets), and sharded with the official sp8192 spec trained on them, validation
sidecars only. Each of these runs ``--repeats`` times, alternating, fastest counts (the machine is shared):

- pgolf: ``write_shards`` with ``--cores`` workers, and with 1;
- datatrove: the local executor with ``--cores`` tasks at once (tasks = cores), and with 1 task.

Printed: wall times and ratios (target: datatrove / pgolf on the same cores >= 0.9), tasks 1 -> 2 scaling, the
stages' times, each encode task's and the merge's peak RSS, and on paper the time to shard the challenge's full
document list on 8 and 64 cores from the throughputs measured here: per core for counting and encoding (which
scale with the tasks), and of the merge, which is one sequential pass (hashing the partials, the corpus hash,
copying the tokens into shards). The full list's size: about 15 million documents (the FineWeb 10B-token sample's
document count) of about 3.1 KB each (the published sp1024 validation set, 63,779,840 tokens of ~2.44 bytes for
50,000 documents, docs/challenge.md), so ~47 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from pgolf_data.corpus import DocsHasher, open_corpus
from pgolf_data.scale.executors import ScaleConfig
from pgolf_data.scale.job import run_datatrove
from pgolf_data.scale.slices import count_slice, plan_slices
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.spec import resolve_spec

DEV_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "web_dev.jsonl.zst"


def fresh(root: Path, name: str) -> Path:
    for path in (root / name, root / f"{name}.work"):
        shutil.rmtree(path, ignore_errors=True)
    return root / name


def run_pgolf(corpus: Path, tok: bytes, config: ShardConfig, out: Path) -> dict:
    start = time.perf_counter()
    write_shards(open_corpus(corpus), tok, out, config)
    return {"wall": time.perf_counter() - start}


def run_datatrove_local(corpus: Path, tok: bytes, config: ShardConfig, out: Path, tasks: int) -> dict:
    stages: dict[str, float] = {}

    def log(message: str) -> None:
        if " stage: " in message:  # "<stage> stage: N tasks, S s"
            stage, rest = message.split(" stage: ")
            stages[stage] = float(rest.split(", ")[1].rstrip(" s"))

    start = time.perf_counter()
    run_datatrove(open_corpus(corpus), tok, out, config, ScaleConfig(tasks=tasks, workers=tasks), log=log)
    wall = time.perf_counter() - start
    return {"wall": wall, "stages": stages, "peaks": task_peaks(Path(f"{out}.work"))}


def task_peaks(work: Path) -> dict[str, list[int]]:
    """Peak RSS of each encode task and of the merge, from the steps' datatrove stats."""
    peaks: dict[str, list[int]] = {}
    for stage in ("encode", "merge"):
        for path in sorted((work / "logs" / stage / "stats").glob("*.json")):
            for step in json.loads(path.read_text()):
                value = step["stats"].get("peak_rss_bytes")
                if value is not None:
                    peaks.setdefault(stage, []).append(int(value["total"]))
    return peaks


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default")
    parser.add_argument("--copies", type=int, default=3, help="write the corpus this many times over (default 3)")
    parser.add_argument("--cores", type=int, default=training.default_threads(), help="workers / tasks (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per method; the fastest counts (default 2)")
    parser.add_argument("--full-gb", type=float, default=47.0, help="the full document list's text, GB (default 47)")
    parser.add_argument("--full-docs", type=float, default=15e6, help="its documents (default 15 million)")
    args = parser.parse_args()
    docs = list(open_corpus(args.corpus))
    tok_obj, _ = training.train(resolve_spec("sp8192"), docs)
    tok = artifact.to_artifact(tok_obj)
    c = args.cores
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus.jsonl"
        with corpus.open("w", encoding="utf-8") as f:
            for _ in range(args.copies):
                f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
        text_mb = args.copies * sum(len(d.encode()) for d in docs) / 1e6
        n_docs = args.copies * len(docs)
        config = ShardConfig(val_docs=n_docs // 20, workers=c)
        runs = {
            "pgolf_c": (f"pgolf-data shard, {c} workers", lambda: run_pgolf(corpus, tok, config, fresh(root, "pc"))),
            "dt_c": (
                f"datatrove local, {c} tasks at once",
                lambda: run_datatrove_local(corpus, tok, config, fresh(root, "dc"), c),
            ),
            "pgolf_1": (
                "pgolf-data shard, 1 worker",
                lambda: run_pgolf(corpus, tok, ShardConfig(val_docs=n_docs // 20, workers=1), fresh(root, "p1")),
            ),
            "dt_1": ("datatrove local, 1 task", lambda: run_datatrove_local(corpus, tok, config, fresh(root, "d1"), 1)),
        }
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for key, (_, run) in runs.items():
                result = run()
                if key not in best or result["wall"] < best[key]["wall"]:
                    best[key] = result
        identical = same_files(root / "pc", root / "dc") and same_files(root / "pc", root / "d1")

        # Single-core rates of the parts, measured directly: counting a plain jsonl, the pgolf writer's reader.
        plan = plan_slices(open_corpus(corpus), 1)
        start = time.perf_counter()
        count_slice(plan.tasks[0][0])
        count_rate = text_mb / (time.perf_counter() - start)
        start = time.perf_counter()
        hasher = DocsHasher()
        for doc in open_corpus(corpus):
            hasher.update(doc)
        reader_rate = text_mb / (time.perf_counter() - start)

    print(
        f"\n{n_docs:,} documents, {text_mb:.1f} MB of text (plain jsonl), sp8192, {c} cores; fastest of {args.repeats}"
    )
    for key, (label, _) in runs.items():
        r = best[key]
        stages = "  ".join(f"{s} {t:.2f} s" for s, t in r.get("stages", {}).items())
        print(f"  {label:<36} {r['wall']:7.2f} s {text_mb / r['wall']:7.2f} MB/s   {stages}")
    wall = {k: v["wall"] for k, v in best.items()}
    print(f"  datatrove / pgolf, {c} cores          {wall['pgolf_c'] / wall['dt_c']:5.2f}x   (target >= 0.9)")
    print(f"  datatrove / pgolf, 1 core            {wall['pgolf_1'] / wall['dt_1']:5.2f}x")
    print(f"  datatrove tasks 1 -> {c}               {wall['dt_1'] / wall['dt_c']:5.2f}x   (ideal {c})")
    print(f"  pgolf workers 1 -> {c}                 {wall['pgolf_1'] / wall['pgolf_c']:5.2f}x")
    print(f"  identical bytes (pgolf, datatrove {c} tasks, 1 task): {identical}")
    for key in ("dt_c", "dt_1"):
        peaks = best[key]["peaks"]
        encode = ", ".join(f"{p / 2**20:.0f}" for p in peaks.get("encode", []))
        merge = ", ".join(f"{p / 2**20:.0f}" for p in peaks.get("merge", []))
        print(f"  peak RSS, {runs[key][0]}: encode tasks {encode} MiB; merge {merge} MiB")

    # On paper: the full document list, from the single-task stage times (the encode stage is then one core's work).
    encode_rate = text_mb / best["dt_1"]["stages"]["encode"]
    merge_rate = text_mb / best["dt_1"]["stages"]["merge"]
    pgolf_rate = text_mb / wall["pgolf_1"]
    full_mb = args.full_gb * 1e3
    print(
        f"\nper core: encode {encode_rate:.2f} MB/s (read, sp8192 + val sidecars, write the partial), count "
        f"{count_rate:.0f} MB/s; merge (one pass) {merge_rate:.0f} MB/s; pgolf's reader (one process) "
        f"{reader_rate:.0f} MB/s, pgolf per worker {pgolf_rate:.2f} MB/s"
    )
    print(f"the full document list on paper: {args.full_docs / 1e6:.0f}M documents, {args.full_gb:.0f} GB of text")
    for cores in (8, 64):
        parallel = full_mb / (cores * encode_rate) + full_mb / (cores * count_rate)
        sequential = full_mb / merge_rate
        pgolf = max(full_mb / (cores * pgolf_rate), full_mb / reader_rate)
        total = (parallel + sequential) / 60
        print(
            f"  {cores:>2} cores: datatrove {total:6.1f} min (count + encode {parallel / 60:.1f} min, merge "
            f"{sequential / 60:.1f} min);  pgolf-data shard >= {pgolf / 60:6.1f} min (its reader caps it at "
            f"{reader_rate:.0f} MB/s)"
        )


if __name__ == "__main__":
    main()
