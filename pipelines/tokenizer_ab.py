"""Tokenizer A/B: is tokenizer B better than tokenizer A under one artifact budget?

    python -m pipelines.tokenizer_ab --specs tokenizers/sp1024.toml tokenizers/caseops_sp8192.toml \\
        --corpus SRC --seeds 3 --preset tiny --out DIR [--budget-mode steps|tokens|wall-clock]
    python -m pipelines.tokenizer_ab --specs sp1024 sp4096 --corpus SRC --preset tiny --model.arch ssd --out DIR
    python -m pipelines.tokenizer_ab --screen --specs sp1024 sp4096 sp8192 ... --corpus SRC --out DIR

For each spec: train the tokenizer on the corpus' training documents, shard the same documents (the first
``--val-docs`` are validation), size the preset's model so that its estimated artifact -- tokenizer, embedding table,
other weights and code -- fits the same byte budget (``pipelines.sizing``), train it under the same compute budget
for each seed, and take the exact BPB of the quantized artifact on every validation byte. ``DIR/report.md`` (with
plots) gives mean ± std per spec, the difference to the first spec in BPB and nats per byte, Welch's t-tests and the
verdict in the challenge's terms (``pipelines.stats``). ``--screen`` skips the model: tokens per byte and n-gram
BPB for many specs in minutes (``pipelines.screening``).

``--model.arch NAME`` runs the comparison with another model family: ``ssd`` (built in) or a plugin's, a class a
package registers under the entry-point group ``pgolf.models`` (``[project.entry-points."pgolf.models"] NAME =
"package.module:Class"``; README: Model families: bring your own model). Its sizing varies the field its
``size_step`` hook names.

``--trainer external:PATH/train_gpt.py`` trains with an official-style script instead (the baseline's, a record's,
your own): each spec's shards are exported as the folder it reads (``pgolf-data export --for``, ``--export-for``),
and it runs once per seed in its own directory with ``DATA_PATH``, ``TOKENIZER_PATH``, ``VOCAB_SIZE``, ``SEED``,
``RUN_ID``, the compute budget (steps: ``ITERATIONS`` with ``MAX_WALLCLOCK_SECONDS=0``; wall-clock:
``MAX_WALLCLOCK_SECONDS``; tokens: steps of ``--env TRAIN_BATCH_TOKENS``; no ``--budget-value``: the script's own)
and every ``--env K=V``, under ``torchrun --nproc_per_node N`` with ``--nproc``. The report gives the score it
printed last (``final_..._exact`` preferred, TTT lines included), its ``Total submission size`` and how it counted
bytes (the official per-piece formula or a byte sidecar, from the lines it printed or else its source), with the same
statistics. The script sizes its own model: ``--preset``, ``--model.arch``, ``--budget`` and ``--shrink`` do not
apply. A run that fails or prints no final ``val_loss``/``val_bpb`` line stops the A/B with the tail of its stderr.

    python -m pipelines.tokenizer_ab --trainer external:../parameter-golf/train_gpt.py --specs sp1024 sp4096 \\
        --corpus SRC --seeds 3 --budget-value 2000 --nproc 8 --env TRAIN_BATCH_TOKENS=524288 --out DIR

Every stage is cached under ``--cache`` (default ``DIR/cache``) by a hash of its inputs, so an interrupted run or one
with more seeds redoes only what is missing (an external run's key holds its script's sha256 and its environment).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pgolf_data.official_export import TARGETS
from pgolf_data.tokenizer import TokenizerSpec
from pgolf_data.tokenizer.spec import SpecError, resolve_spec
from pgolf_model.cli import command_parser
from pgolf_model.config import DEFAULT_ARCH

from .cache import StageCache, write_json
from .recipe import RecipeSettings, add_training_args, guarded
from .screening import DEFAULT_SAMPLE_BYTES
from .stages import shard_stage, stage_tokenizer, tokenizer_stage

Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class ABSettings(RecipeSettings):
    specs: tuple[str, ...]  # spec names or TOML paths; the first is the reference
    corpus: str
    seeds: int = 3
    val_docs: int = 1000
    artifact_budget: int | None = None  # bytes; None = the preset's model with the first spec's tokenizer
    shrink: str = "width"  # width | layers (pipelines.sizing)
    max_scale: float = 2.0
    trainer: str = "pgolf"  # pgolf | external:PATH/train_gpt.py (pipelines.external)
    env: tuple[str, ...] = ()  # external: K=V for every run
    nproc: int | None = None  # external: torchrun --nproc_per_node N (None: plain python)
    export_for: str = "baseline"  # external: the folder layout the script reads (pgolf-data export --for)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.specs:
            raise ValueError("give at least one spec (--specs)")
        if self.artifact_budget is not None and self.artifact_budget <= 0:
            raise ValueError(f"the artifact budget must be a positive number of bytes, got {self.artifact_budget}")
        if self.trainer != "pgolf":
            if self.artifact_budget is not None:
                raise ValueError("--budget sizes pgolf's model; an external script sizes its own (drop --budget)")
            if self.arch != DEFAULT_ARCH:
                raise ValueError(f"--model.arch {self.arch} picks pgolf's model; an external script brings its own")
            self.external()  # the script exists and the flags make sense, before any stage runs

    def external(self):
        """The external trainer of ``--trainer external:PATH``."""
        from .external import ExternalTrainer, parse_env

        return ExternalTrainer.from_flag(
            self.trainer, env=parse_env(self.env), nproc=self.nproc, export_for=self.export_for
        )


def load_specs(names: tuple[str, ...]) -> list[TokenizerSpec]:
    specs = [resolve_spec(name) for name in names]
    seen: dict[str, str] = {}
    for name, spec in zip(names, specs):
        if spec.name in seen:
            raise SpecError(f"specs {seen[spec.name]!r} and {name!r} are both named {spec.name!r}; names must differ")
        seen[spec.name] = name
    return specs


def run_ab(settings: ABSettings, log: Log = print) -> dict:
    """The whole comparison; writes ``results.json`` and ``report.md`` (+ plots) into ``settings.out``."""
    from pgolf_model.presets import bind_tokenizer

    from . import sizing
    from .model_stages import TrainRequest, apply_compute_budget, train_stages

    if settings.trainer != "pgolf":
        return run_external_ab(settings, log)
    start = time.perf_counter()
    if settings.shrink not in sizing.SHRINK_MODES:
        raise ValueError(f"shrink must be one of {', '.join(sizing.SHRINK_MODES)}, got {settings.shrink!r}")
    specs = load_specs(settings.specs)
    split = settings.split()
    cache = StageCache(settings.cache_dir, log)
    base, compute = apply_compute_budget(settings.base_config(), settings.budget_mode, settings.budget_value)

    # 1. Tokenizer and shards per spec, all from the same documents.
    prepared = _prepare(settings, specs, split, cache)

    # 2. One artifact budget; each spec's model, with its tokenizer's ids, sized to fit it.
    tokenizers = [stage_tokenizer(tok_dir) for _, tok_dir, _, _ in prepared]
    bound = [bind_tokenizer(base, tok) for tok, _ in tokenizers]
    artifact_budget = settings.artifact_budget
    budget_source = f"given (--budget {artifact_budget:,})" if artifact_budget else ""
    if artifact_budget is None:
        artifact_budget = sizing.reference_budget(bound[0], tokenizers[0][1])
        budget_source = f"the estimated artifact of preset {settings.preset} with {specs[0].name}"
    sized = []
    for spec, cfg, (_, tok_bytes) in zip(specs, bound, tokenizers):
        fitted = sizing.fit(cfg, tok_bytes, artifact_budget, shrink=settings.shrink, max_scale=settings.max_scale)
        log(f"{spec.name}: model {sizing.shape(fitted.config)}, estimated artifact {fitted.total:,} bytes")
        sized.append(fitted)

    # 3. Every (spec, seed) trained under the same compute budget and scored from its artifact.
    seeds = settings.seed_list()
    requests = [
        TrainRequest(tok_dir, shard_dir, fitted.config.override({"train.seed": seed}), f"{spec.name} seed {seed}")
        for (spec, tok_dir, shard_dir, _), fitted in zip(prepared, sized)
        for seed in seeds
    ]
    stages = train_stages(cache, requests, jobs=settings.jobs, threads=settings.threads)

    # 4. Results, statistics and the report.
    val_bytes = split.fingerprint()["val"]["bytes"]
    rows = [
        _spec_row(item, fitted, seeds, stages[i * len(seeds) : (i + 1) * len(seeds)], val_bytes)
        for i, (item, fitted) in enumerate(zip(prepared, sized))
    ]
    own = {
        "preset": settings.preset,
        "arch": base.arch,
        "artifact_budget": artifact_budget,
        "budget_source": budget_source,
        "shrink": settings.shrink,
    }
    return _write_results(settings, _results(settings, own, rows, split, compute, seeds, cache, start), log)


def _prepare(settings: ABSettings, specs: list[TokenizerSpec], split, cache: StageCache) -> list[tuple]:
    """``(spec, tokenizer stage, shard stage, manifest)`` per spec: tokenizer and shards from the same documents."""
    from .model_stages import read_manifest

    prepared = []
    for spec in specs:
        tok_dir = tokenizer_stage(cache, spec, split, threads=settings.threads)
        shard_dir = shard_stage(cache, tok_dir, split, workers=settings.threads, label=spec.name)
        prepared.append((spec, tok_dir, shard_dir, read_manifest(shard_dir)))
    return prepared


def _write_results(settings: ABSettings, results: dict, log: Log) -> dict:
    from .report import write_ab_report

    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / "results.json", results)
    report = write_ab_report(results, settings.out)
    for c in results["comparisons"]:
        log(f"verdict, {c['candidate']} vs {c['reference']}: {c['verdict']}")
    log(f"report: {report} ({results['settings']['seconds']:.0f} s)")
    return results


def run_external_ab(settings: ABSettings, log: Log = print) -> dict:
    """The comparison with an external official-style script as the trainer (``pipelines.external``): each spec's
    shards exported as the script's folder, one run per seed, the numbers read from what each run printed."""
    from . import external

    start = time.perf_counter()
    trainer = settings.external()
    budget, compute = external.budget_env(settings.budget_mode, settings.budget_value, dict(trainer.env))
    split = settings.split()
    cache = StageCache(settings.cache_dir, log)
    prepared = _prepare(settings, load_specs(settings.specs), split, cache)
    exports = [
        external.export_stage(cache, shard_dir, split, trainer.export_for, label=spec.name)
        for spec, _, shard_dir, _ in prepared
    ]
    seeds = settings.seed_list()
    requests = [
        external.ExternalRequest(
            export_dir,
            external.run_env(trainer, manifest["tokenizer"]["vocab_size"], seed, budget),
            f"{spec.name} seed {seed}",
        )
        for (spec, _, _, manifest), export_dir in zip(prepared, exports)
        for seed in seeds
    ]
    stages = external.run_stages(cache, trainer, requests, jobs=settings.jobs, threads=settings.threads)
    rows = []
    for i, (item, export_dir) in enumerate(zip(prepared, exports)):
        runs = [
            {"seed": seed, "stage": str(stage), **external.run_result(stage)}
            for seed, stage in zip(seeds, stages[i * len(seeds) : (i + 1) * len(seeds)])
        ]
        row = _tokenizer_facts(item)
        row["stages"]["export"] = str(export_dir)
        rows.append({**row, "runs": runs})
    own = {
        "trainer": settings.trainer,
        "script_sha256": trainer.sources()[trainer.script.name],
        "command": [Path(trainer.command()[0]).name, *trainer.command()[1:]],
        "env": dict(trainer.env),
        "budget_env": budget,
        "export_for": trainer.export_for,
    }
    return _write_results(settings, _results(settings, own, rows, split, compute, seeds, cache, start), log)


def _results(settings: ABSettings, own: dict, rows: list[dict], split, compute, seeds, cache, start: float) -> dict:
    """``results.json``: the settings (the trainer's ``own`` ones, then what every A/B records), rows, comparisons."""
    return {
        "settings": {
            **own,
            "specs": list(settings.specs),
            "corpus": split.fingerprint(),
            "budget_mode": settings.budget_mode,
            "compute": compute,
            "seeds": seeds,
            "cache": str(settings.cache_dir),
            "stages_built": dict(cache.executions),
            "seconds": round(time.perf_counter() - start, 1),
        },
        "specs": rows,
        "comparisons": _comparisons(rows),
    }


def _tokenizer_facts(prepared: tuple) -> dict:
    """A spec's tokenizer and validation facts, from its shards' manifest."""
    spec, tok_dir, shard_dir, manifest = prepared
    tok, val = manifest["tokenizer"], manifest["splits"]["val"]
    return {
        "spec": spec.name,
        "spec_definition": spec.to_dict(),
        "kind": spec.kind,
        "vocab_size": tok["vocab_size"],
        "lossless": tok["lossless"],
        "tokenizer_bytes": tok["artifact"]["bytes"],
        "tokens_per_byte": (val["tokens"] - val["docs"]) / val["bytes"],  # validation, BOS (one a document) excluded
        "val_tokens": val["tokens"],
        "val_bytes": val["bytes"],
        "stages": {"tokenizer": str(tok_dir), "shards": str(shard_dir)},
    }


def _spec_row(prepared: tuple, fitted, seeds: list[int], stages: list[Path], val_bytes: int) -> dict:
    """One spec's entry of ``results.json``: tokenizer facts, sizing, and each seed's numbers from its run files."""
    from . import sizing
    from .model_stages import run_result

    runs = []
    for seed, stage in zip(seeds, stages):
        result = run_result(stage)
        if result["val_bytes"] != val_bytes:
            raise AssertionError(
                f"{stage}: scored {result['val_bytes']:,} bytes, but the validation documents have {val_bytes:,}: "
                "the runs would not be comparable"
            )
        runs.append({"seed": seed, "stage": str(stage), **result})
    return {
        **_tokenizer_facts(prepared),
        "sizing": {
            "estimate": fitted.estimate,
            "estimated_total": fitted.total,
            "tried": fitted.tried,
            "shape": sizing.shape(fitted.config),
        },
        "runs": runs,
    }


def _comparisons(rows: list[dict]) -> list[dict]:
    """Every spec against the first (the reference)."""
    from .stats import compare

    out = []
    ref = rows[0]
    for row in rows[1:]:
        c = compare(ref["spec"], [r["val_bpb"] for r in ref["runs"]], row["spec"], [r["val_bpb"] for r in row["runs"]])
        out.append({**asdict(c), "delta_nats": c.delta_nats, "verdict": c.verdict})
    return out


def run_screen(settings: ABSettings, sample_bytes: int | None = DEFAULT_SAMPLE_BYTES, log: Log = print) -> list[dict]:
    """Screening of every spec; writes ``screening.json`` and ``screening.md`` (+ plot) into ``settings.out``."""
    from .report import write_screen_report
    from .screening import ScreenConfig, screen

    start = time.perf_counter()
    split = settings.split()
    config = ScreenConfig(sample_bytes=sample_bytes)
    cache = StageCache(settings.cache_dir, log)
    rows = screen(load_specs(settings.specs), split, cache, config, threads=settings.threads, log=log)
    sample = f"whole training documents, up to {sample_bytes:,} bytes" if sample_bytes else "all training documents"
    meta = {
        "corpus": split.fingerprint(),
        "sample": sample,
        "stages_built": dict(cache.executions),
        "seconds": round(time.perf_counter() - start, 1),
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / "screening.json", {"settings": meta, "specs": rows})
    report = write_screen_report(rows, meta, settings.out)
    log(f"report: {report} ({meta['seconds']:.0f} s)")
    return rows


def main(argv: list[str] | None = None) -> int:
    from .sizing import SHRINK_MODES

    parser = command_parser("python -m pipelines.tokenizer_ab", __doc__)
    parser.add_argument(
        "--specs", nargs="+", required=True, help="spec names or TOML files; the first is the reference"
    )
    parser.add_argument("--corpus", required=True, help="corpus source (file, directory, hf:NAME or 'default')")
    parser.add_argument("--out", required=True, type=Path, help="output directory for the report")
    parser.add_argument("--screen", action="store_true", help="screening only: tokens per byte and n-gram BPB")
    add_training_args(parser, seeds=3, per="spec")
    parser.add_argument("--budget", type=int, help="artifact budget in bytes (default: preset model, first spec)")
    parser.add_argument("--shrink", default="width", choices=SHRINK_MODES, help="what sizing varies (default width)")
    parser.add_argument("--max-scale", type=float, default=2.0, help="largest model, x the preset's (default 2)")
    parser.add_argument(
        "--trainer", default="pgolf", metavar="pgolf|external:PATH",
        help="pgolf's trainer (default), or an official-style train_gpt.py run per tokenizer and seed on its exported "
        "folder (see above)",
    )  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="external: a variable for every run")
    parser.add_argument("--nproc", type=int, help="external: run under torchrun --standalone --nproc_per_node N")
    parser.add_argument(
        "--export-for", default="baseline", choices=list(TARGETS),
        help="external: the folder layout the script reads, as pgolf-data export --for (default baseline)",
    )  # fmt: skip
    parser.add_argument("--val-docs", type=int, default=1000, help="first N documents = validation (default 1000)")
    parser.add_argument("--max-docs", type=int, help="read at most this many documents")
    parser.add_argument("--text-field", default="text", help="JSON field or parquet column holding the text")
    parser.add_argument(
        "--sample-bytes", type=int, default=DEFAULT_SAMPLE_BYTES,
        help=f"screening: training text for the n-gram counts, 0 = all (default {DEFAULT_SAMPLE_BYTES:,})",
    )  # fmt: skip
    args = parser.parse_args(argv)

    def body() -> None:
        settings = ABSettings.from_args(args, specs=tuple(args.specs), artifact_budget=args.budget, env=tuple(args.env))
        if args.screen:
            run_screen(settings, args.sample_bytes or None)
        else:
            run_ab(settings)

    return guarded(body, args.cache or args.out / "cache")


if __name__ == "__main__":
    sys.exit(main())
