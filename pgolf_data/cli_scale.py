"""The options of ``pgolf-data shard --engine datatrove`` (the scale extra), and the run they describe."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from .corpus import Corpus
from .manifest import Manifest
from .sharding import Mode, ShardConfig

HELP = """\
--engine datatrove runs the same work as datatrove pipelines (pip install -e '.[scale]'): the corpus is cut into
--tasks contiguous slices (a plain .jsonl file at byte offsets, parquet between row groups; a compressed file is not
split), a count stage finds where each slice's documents start in the corpus, an encode stage writes one partial
per task, and a merge task cuts them into the official shards with pgolf's own writer: the output is byte-identical
to the default engine's for any number of tasks. The work directory (--work-dir, default OUT.work) keeps the plan,
the partials (about the corpus' size plus the shards', deleted after the merge) and datatrove's logs and completion
markers; it must be on a filesystem every task sees. --resume reruns the stages: finished tasks are skipped unless
their output fails pgolf's checks (size, sha256), killed ones are redone. Examples:
  pgolf-data shard --tokenizer tok --corpus docs_selected.jsonl --out shards --engine datatrove --tasks 64
  pgolf-data shard ... --engine datatrove --executor slurm --tasks 512 --slurm-partition cpu --slurm-time 2:00:00
  pgolf-data shard ... --engine datatrove --executor ray --ray-address auto --tasks 256
"""


def add_scale_args(p: argparse.ArgumentParser) -> None:
    """The engine switch and the datatrove executors' options; ``HELP`` becomes the command's epilog."""
    p.epilog = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("datatrove engine (pip install -e '.[scale]')")
    g.add_argument(
        "--engine",
        choices=("pgolf", "datatrove"),
        default="pgolf",
        help="pgolf: this machine's cores, in one process pool (default); datatrove: tasks on a datatrove executor",
    )
    g.add_argument("--tasks", type=int, metavar="N", help="datatrove tasks (default: one per core)")
    g.add_argument(
        "--executor", choices=("local", "slurm", "ray"), default="local", help="where the tasks run (default: local)"
    )
    g.add_argument("--work-dir", metavar="DIR", help="plan, partials, logs and completion markers (default: OUT.work)")
    g.add_argument("--slurm-partition", metavar="NAME", help="Slurm partition (required with --executor slurm)")
    g.add_argument("--slurm-time", default="24:00:00", metavar="T", help="time limit per task (default: 24:00:00)")
    g.add_argument(
        "--slurm-cpus-per-task",
        type=int,
        default=1,
        metavar="N",
        help="CPUs per task, its tokenizer threads (default 1)",
    )
    g.add_argument("--slurm-mem-per-cpu", type=int, default=2, metavar="GB", help="memory per CPU in GB (default 2)")
    g.add_argument("--slurm-qos", metavar="QOS", help="Slurm quality of service (default: the cluster's)")
    g.add_argument("--slurm-logs", metavar="DIR", help="Slurm's own output files (default: in each stage's log folder)")
    g.add_argument(
        "--slurm-env", metavar="CMD", help="shell line run first in each job (default: activate this Python's venv)"
    )
    g.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start a local one)")
    g.add_argument("--ray-cpus-per-task", type=int, default=1, metavar="N", help="CPUs per Ray task (default 1)")


def shard_with_datatrove(
    args: argparse.Namespace, corpus: Corpus, tokenizer: bytes, config: ShardConfig, mode: Mode
) -> Manifest | None:
    """Run ``args``' datatrove engine; None when the jobs were only submitted (Slurm)."""
    for module in ("datatrove", *(("ray",) if args.executor == "ray" else ())):
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"--engine datatrove needs {module}: pip install -e '.[scale]'")
    from .scale.executors import RayOptions, ScaleConfig, SlurmOptions
    from .scale.job import TasksFailed, run_datatrove

    scale = ScaleConfig(
        executor=args.executor,
        workers=args.workers if args.workers is not None else -1,
        work_dir=args.work_dir,
        slurm=SlurmOptions(
            partition=args.slurm_partition,
            time=args.slurm_time,
            cpus_per_task=args.slurm_cpus_per_task,
            mem_per_cpu_gb=args.slurm_mem_per_cpu,
            qos=args.slurm_qos,
            logs=args.slurm_logs,
            env_command=args.slurm_env,
        ),
        ray=RayOptions(address=args.ray_address, cpus_per_task=args.ray_cpus_per_task),
        **({"tasks": args.tasks} if args.tasks is not None else {}),
    )
    try:
        manifest = run_datatrove(
            corpus, tokenizer, args.out, config, scale, mode=mode, progress=not args.quiet, log=_stderr
        )
    except TasksFailed as e:
        raise SystemExit(f"pgolf-data shard: error: {e}") from None
    if manifest is None:
        print(f"submitted; the merge job writes {args.out}/manifest.json when every task has finished")
    return manifest


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)
