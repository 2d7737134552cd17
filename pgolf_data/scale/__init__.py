"""``pgolf-data shard --engine datatrove``: the shard writer's work as datatrove pipelines (the ``scale`` extra).

The output is byte-identical to ``pgolf-data shard``'s for any number of tasks, because the tasks read contiguous
slices of the corpus in order and the final cut is made by the shard writer itself.

- ``slices``: the corpus cut into contiguous slices per task, and reading or counting one (no datatrove needed);
- ``partials``: one encode task's output and its record; ``merge``: the partials fed to ``sharding.write_encoded``;
- ``workdir``: the work directory (settings, plan, counts, partials, datatrove's logs and completion markers);
- ``steps``: the datatrove pipeline steps (count, read, tokenize, write partial, merge);
- ``executors``: datatrove's local, Slurm and Ray executors from ``ScaleConfig``; ``job``: planning, resuming and
  running the stages.
"""
