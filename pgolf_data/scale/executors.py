"""Where the stages run: datatrove's own local, Slurm and Ray executors, configured from ``ScaleConfig``."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from ..tokenizer.training import default_threads

Executor = Literal["local", "slurm", "ray"]


@dataclass(frozen=True)
class SlurmOptions:
    """``sbatch`` settings of every stage's job array (datatrove's ``SlurmPipelineExecutor``)."""

    partition: str | None = None  # required for the slurm executor
    time: str = "24:00:00"  # time limit of each task
    cpus_per_task: int = 1  # also the tokenizer threads of each task, and the merge's hashing threads
    mem_per_cpu_gb: int = 2
    qos: str | None = None
    logs: str | None = None  # folder of Slurm's own output files (default: the work directory's slurm_logs/)
    env_command: str | None = None  # shell line that makes pgolf importable (default: activate this Python's venv)
    job_name: str = "pgolf-shard"


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None starts a local one
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2


@dataclass(frozen=True)
class ScaleConfig:
    """How ``pgolf-data shard --engine datatrove`` runs: ``tasks`` tasks, at most ``workers`` at once."""

    tasks: int = field(default_factory=default_threads)
    executor: Executor = "local"
    workers: int = -1  # tasks running at once; -1: local, one per core; Slurm and Ray, no limit
    work_dir: str | None = None  # default: <out>.work beside the output directory
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    ray: RayOptions = field(default_factory=RayOptions)

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {self.tasks}")
        if self.workers == 0 or self.workers < -1:
            raise ValueError(f"workers must be >= 1 (or -1), got {self.workers}")
        if self.executor not in ("local", "slurm", "ray"):
            raise ValueError(f"executor must be local, slurm or ray, got {self.executor!r}")
        if self.executor == "slurm" and not self.slurm.partition:
            raise ValueError("the slurm executor needs a partition (--slurm-partition)")

    @property
    def threads(self) -> int:
        """Threads of one encode task's tokenizer: the CPUs a task is given (one, locally)."""
        return {"local": 1, "slurm": self.slurm.cpus_per_task, "ray": self.ray.cpus_per_task}[self.executor]

    @property
    def merge_threads(self) -> int:
        """Threads of the merge, which checks the partials' sha256 on them: locally, every core."""
        return default_threads() if self.executor == "local" else self.threads


def make_executor(
    config: ScaleConfig, stage: str, pipeline: list, tasks: int, logging_dir: str, depends: Any = None
) -> Any:
    """datatrove's executor of one stage; ``depends`` (Slurm only) is the stage's predecessor."""
    if config.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        workers = config.workers if config.workers != -1 else default_threads()
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=logging_dir)
    if config.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        ray = config.ray
        return RayPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=config.workers,
            logging_dir=logging_dir,
            cpus_per_task=ray.cpus_per_task,
            mem_per_cpu_gb=ray.mem_per_cpu_gb,
        )
    from datatrove.executor import SlurmPipelineExecutor

    slurm = config.slurm
    venv = f"{sys.prefix}/bin/activate" if sys.prefix != sys.base_prefix else None
    return SlurmPipelineExecutor(
        pipeline,
        tasks=tasks,
        time=slurm.time,
        partition=slurm.partition,  # type: ignore[arg-type]
        cpus_per_task=slurm.cpus_per_task,
        mem_per_cpu_gb=slurm.mem_per_cpu_gb,
        workers=config.workers,
        job_name=f"{slurm.job_name}-{stage}",
        qos=slurm.qos,  # type: ignore[arg-type]
        env_command=slurm.env_command,  # type: ignore[arg-type]
        venv_path=None if slurm.env_command else venv,  # type: ignore[arg-type]
        logging_dir=logging_dir,
        slurm_logs_folder=f"{slurm.logs}/{stage}" if slurm.logs else None,  # type: ignore[arg-type]
        depends=depends,
        mail_user=None,  # type: ignore[arg-type]
    )
