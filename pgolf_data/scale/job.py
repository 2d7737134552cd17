"""``pgolf-data shard --engine datatrove``: plan the slices, run the count, encode and merge stages, resume.

A run keeps its state in the work directory (workdir.py). Resuming relies on datatrove's completion markers, which
make an executor skip finished tasks, and on pgolf's own check of what each finished task left: before the stages
run again, a count whose file is missing or not this run's, and a partial that differs from its record (size,
sha256) or has none, loses its marker, so that task is redone; a marker of the merge without the manifest is
dropped, so the merge runs again (and continues from its own resume journal). Nothing half-written is merged: a
task's record is written after its files, and the merge checks every partial against its record first.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..corpus import Corpus
from ..manifest import MANIFEST_NAME, Manifest
from ..sharding import Mode, ShardConfig, our_files, shard_tokenizer
from ..tokenizer.base import Tokenizer
from .executors import ScaleConfig, make_executor
from .partials import check_all, remove_partial
from .slices import Plan, files_changed, plan_slices
from .workdir import RunSettings, WorkDir


class TasksFailed(RuntimeError):
    """Tasks of a stage did not finish (an executor that does not raise their errors, as Ray's, reports them so)."""


def default_work_dir(out_dir: Path) -> Path:
    out_dir = Path(os.path.abspath(out_dir))
    return out_dir.with_name(out_dir.name + ".work")


def run_datatrove(
    corpus: Corpus,
    tokenizer: Tokenizer | bytes,
    out_dir: str | os.PathLike,
    config: ShardConfig,
    scale: ScaleConfig,
    *,
    mode: Mode = "new",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest | None:
    """Shard ``corpus`` into ``out_dir`` as ``write_shards`` does, byte for byte, on datatrove's ``scale.executor``;
    ``tokenizer`` is an object or its artifact bytes.

    Returns the manifest, or None for Slurm, whose jobs are only submitted (the merge job writes the manifest).
    """
    log = log or (lambda message: None)
    _, artifact = shard_tokenizer(tokenizer)  # refuses a vocabulary over uint16 before anything is written
    out_dir = Path(os.path.abspath(out_dir))  # tasks may run in another directory
    work = WorkDir(Path(os.path.abspath(scale.work_dir)) if scale.work_dir else default_work_dir(out_dir))
    plan = plan_slices(corpus, scale.tasks)
    settings = RunSettings.of(corpus, artifact, config, plan)
    prepare(work, out_dir, settings, plan, artifact, mode, log)
    stages = _stages(work, settings, plan, corpus, config, scale, out_dir, progress)
    if scale.executor == "slurm":
        _submit(stages, scale, work, log)
        return None
    ray_started = scale.executor == "ray" and _start_ray(scale)
    try:
        for stage, tasks, pipeline in stages:
            executor = make_executor(scale, stage, pipeline, tasks, str(work.logs(stage)))
            started = time.perf_counter()
            executor.run()
            log(f"{stage} stage: {tasks} tasks, {time.perf_counter() - started:.2f} s")
            unfinished = executor.get_incomplete_ranks()
            if unfinished:
                raise TasksFailed(
                    f"{stage} stage: tasks {unfinished} did not finish (logs in {work.logs(stage) / 'logs'}); "
                    "run again with --resume to redo them"
                )
    finally:
        if ray_started:
            import ray

            ray.shutdown()
    return Manifest.load(out_dir)


def prepare(
    work: WorkDir,
    out_dir: Path,
    settings: RunSettings,
    plan: Plan,
    tokenizer: bytes,
    mode: Mode,
    log: Callable[[str], None],
) -> None:
    """Make the work and output directories ready for ``mode``, as ``write_shards`` treats its output directory:
    "new" refuses earlier output, "force" deletes it, "resume" keeps what the checks below vouch for."""
    ours = our_files(out_dir)
    if mode == "force":
        shutil.rmtree(work.root, ignore_errors=True)
        for path in ours:
            path.unlink()
    elif mode == "new":
        if ours:
            raise FileExistsError(
                f"{out_dir} already holds shard output ({', '.join(p.name for p in ours[:3])}); use --resume to "
                "continue an interrupted run or --force to replace it"
            )
        if work.root.exists() and any(work.root.iterdir()):
            raise FileExistsError(
                f"{work.root} holds the work of an earlier run; use --resume to continue it or --force to start over"
            )
    elif (out_dir / MANIFEST_NAME).exists():
        raise FileExistsError(f"{out_dir} holds a complete shard set ({MANIFEST_NAME}): nothing to resume; use --force")
    elif work.settings.is_file():
        _check_resumable(work, settings)
        _forget_unverified(work, plan, settings, log)
    work.save(settings, plan, tokenizer)


def _check_resumable(work: WorkDir, settings: RunSettings) -> None:
    import json

    changed = files_changed(work.load_plan())
    if changed:
        raise ValueError(
            f"cannot resume in {work.root}: corpus files changed since the interrupted run ({', '.join(changed[:3])}"
            f"{', ...' if len(changed) > 3 else ''}); use --force to start over"
        )
    differences = settings.differences(json.loads(work.settings.read_text(encoding="utf-8")))
    if differences:
        raise ValueError(
            f"cannot resume in {work.root}: the settings differ from the interrupted run's ({'; '.join(differences)}); "
            "use --force to start over"
        )


def _forget_unverified(work: WorkDir, plan: Plan, settings: RunSettings, log: Callable[[str], None]) -> None:
    """Drop the completion markers of finished tasks whose output fails pgolf's checks, so they run again."""
    run_sha = settings.sha256
    for rank, slices in enumerate(plan.tasks):
        marker = work.completion("count", rank)
        if marker.exists() and plan.needs_count(rank) and work.load_counts(rank, run_sha, len(slices)) is None:
            log(f"count task {rank}: its counts are missing or not this run's; counting again")
            marker.unlink()
    done = [rank for rank in range(settings.tasks) if work.completion("encode", rank).exists()]
    problems = check_all(work.partials, done, run_sha, threads=os.cpu_count() or 1)
    for rank in range(settings.tasks):
        if rank in problems or rank not in done:
            if rank in problems:
                log(f"encode task {rank}: {problems[rank]}; encoding again")
                work.completion("encode", rank).unlink()
            remove_partial(work.partials, rank)
    merged = work.completion("merge", 0)
    if merged.exists():
        merged.unlink()  # the merge finished only if the manifest exists, and then there is nothing to resume


def _stages(
    work: WorkDir,
    settings: RunSettings,
    plan: Plan,
    corpus: Corpus,
    config: ShardConfig,
    scale: ScaleConfig,
    out_dir: Path,
    progress: bool,
) -> list[tuple[str, int, list]]:
    """``(stage, tasks, pipeline)`` of each stage to run; the count stage only where a task needs it."""
    from .steps import CountSlices, MergeShards, ReadSlices, Tokenize, WritePartial

    root, run_sha, tasks = str(work.root), settings.sha256, settings.tasks
    stages: list[tuple[str, int, list]] = []
    if any(plan.needs_count(rank) for rank in range(tasks)):
        stages.append(("count", tasks, [CountSlices(root, run_sha)]))
    encode = [
        ReadSlices(root, run_sha, corpus.text_field, config.max_docs),
        Tokenize(root, config, scale.threads),
        WritePartial(root, run_sha),
    ]
    stages.append(("encode", tasks, encode))
    local = progress and scale.executor == "local"  # a bar, but not in the logs of Slurm or Ray tasks
    merge = MergeShards(root, run_sha, tasks, corpus, config, str(out_dir), threads=scale.merge_threads, progress=local)
    stages.append(("merge", 1, [merge]))
    return stages


def _submit(stages: list[tuple[str, int, list]], scale: ScaleConfig, work: WorkDir, log: Callable[[str], None]) -> None:
    """Submit the stages as Slurm job arrays, each depending on the previous one (``afterok``)."""
    executor = None
    for stage, tasks, pipeline in stages:
        executor = make_executor(scale, stage, pipeline, tasks, str(work.logs(stage)), depends=executor)
    executor.run()  # type: ignore[union-attr]  -- launches its dependencies first
    log(f"submitted the Slurm jobs of {', '.join(s for s, _, _ in stages)}; logs in {work.root / 'logs'}")


def _start_ray(scale: ScaleConfig) -> bool:
    """Connect to (or start) a Ray cluster; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=scale.ray.address, log_to_driver=False)
    return True
