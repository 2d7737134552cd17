"""Record-stack ablation: turn each switch of the record stack off in turn on a small preset and tabulate the cost.

    python -m pipelines.ablate [--corpus default] [--spec sp1024] [--steps 60] [--seeds 1] [--jobs 2] [--out DIR]
    python -m pipelines.ablate --only xsa gptq --steps 60 --out DIR
    python -m pipelines.ablate --list

The reference run ("all on") is the preset (default ``tiny``) with every switch of ``SWITCHES`` on, at values chosen
for that scale (``record_stack``). Every other run turns one switch off: the switch's config keys take the
``baseline`` preset's values, the naive baseline having every switch off; the ``ALTERNATIVES`` rows replace a switch's
values instead (XSA on the last half of the blocks; attention only there). All runs use the same tokenizer, shards,
seeds and compute budget and are scored by exact BPB from their quantized artifact alone.

``--model.arch NAME`` ablates another model family (``ssd``, or a plugin's): the switches are then the record stack's
optimizer, training and quantization switches, plus the family's own from its ``ablation_switches`` hook (each with
its on and off value; pgolf_model.registry).

``DIR/ablation.md`` and ``DIR/ablation.json`` get the table (BPB, its change against all on, artifact bytes, training
throughput, parameters); it is printed too. Every stage is cached under ``DIR/cache`` by a hash of its inputs, so an
interrupted ablation, or one with more switches or seeds, redoes only what is missing.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pgolf_data.cli_args import add_corpus_args
from pgolf_data.manifest import write_atomic
from pgolf_data.tokenizer.spec import resolve_spec
from pgolf_model import registry
from pgolf_model.cli import command_parser, flat
from pgolf_model.config import DEFAULT_ARCH, Config, ConfigError
from pgolf_model.presets import baseline, bind_tokenizer, preset

from .cache import StageCache, write_json
from .recipe import RecipeSettings, add_training_args, guarded
from .stages import shard_stage, stage_tokenizer, tokenizer_stage
from .stats import Summary

Log = Callable[[str], None]
ALL_ON = "all on"

# Each switch of the record stack (docs/records.md has each technique) and the config keys it is made of.
# Turning a switch off sets its keys to the baseline preset's values; ``record_stack`` turns them all on.
# A new switch is one line here plus its on-values in ``record_stack``.
SWITCHES: dict[str, tuple[str, ...]] = {
    "leaky_relu": ("model.mlp_leaky_slope",),
    "partial_rope": ("model.rope_dims",),
    "ln_scale": ("model.ln_scale",),
    "xsa": ("model.xsa",),
    "attn_gate": ("model.attn_gate_width",),
    "smear_gate": ("model.smear_gate",),
    "parallel_lanes": ("model.parallel_from",),
    "lane0_skip": ("model.lane0_skip",),
    "skip_gates": ("model.skip_gates",),
    "ortho_init": ("model.ortho_init",),
    "depth_recurrence": ("model.num_loops", "model.loop_start", "model.loop_end", "train.loop_after"),
    "bigram_hash": ("model.bigram_buckets", "model.bigram_dim"),
    "value_embeddings": ("model.ve_layers", "model.ve_dim"),
    "qk_gain": ("model.qk_gain_init",),
    "polar_express": ("optim.muon_ns_coeffs",),
    "muon_eq_r": ("optim.muon_row_norm",),
    "grad_clip": ("optim.grad_clip_norm",),
    "weight_decay": ("optim.muon_wd", "optim.embed_wd", "optim.scalar_wd"),
    "wd_taper": ("optim.wd_taper_start", "optim.wd_taper_final"),
    "warmdown_frac": ("optim.warmdown_frac", "optim.min_lr_scale"),
    "ema": ("train.ema_decay",),
    "late_qat": ("train.qat_threshold",),
    "gptq": ("quant.method", "quant.awq_groups"),  # AWQ-lite runs inside GPTQ's solve
    "awq_lite": ("quant.awq_groups",),
    "sdclip": ("quant.sdclip_k", "quant.embed_sdclip_k"),
    "sdclip_sample_std": ("quant.sdclip_correction",),
    "gate_int8": ("quant.gate_int8",),
    "int6": ("quant.bits", "quant.embed_bits"),
    "lqer": ("quant.lqer_rank",),
    "hadamard": ("quant.rotate",),
    "asym_logit": ("model.asym_softcap",),
    "progressive_context": ("train.seq_stages", "train.seq_stage_ends", "train.seq_rewarm_steps"),
    "ngram_tilt": ("eval.tilt.boost",),
}

# The switches that hold for any model family: those without a model setting, or a quantization setting that acts on
# the GPT's own tensors (its exact rotations, its attention gates).
GPT_QUANT_KEYS = ("quant.rotate", "quant.gate_int8")
SHARED_SWITCHES = {
    name: keys
    for name, keys in SWITCHES.items()
    if not any(k.startswith("model.") or k in GPT_QUANT_KEYS for k in keys)
}


def family_switches(cfg: Config) -> dict[str, dict[str, tuple]]:
    """A non-GPT family's own switches, ``{switch: {key: (on, off)}}``, from its ``ablation_switches`` hook."""
    hook = getattr(registry.model_class(cfg.arch), "ablation_switches", None)
    return hook(cfg.model) if hook is not None else {}


def switches_for(cfg: Config) -> dict[str, tuple[str, ...]]:
    """The switch table of ``cfg``'s model family: ``SWITCHES`` for the GPT, else the shared ones and its own."""
    if cfg.arch == DEFAULT_ARCH:
        return SWITCHES
    return {**SHARED_SWITCHES, **{name: tuple(keys) for name, keys in family_switches(cfg).items()}}


def off_values(cfg: Config) -> dict:
    """What each switch key is when its switch is off: the baseline preset's values, a family's own switches' off."""
    own = {key: off for keys in family_switches(cfg).values() for key, (_, off) in keys.items()}
    return {**flat(baseline()), **own} if cfg.arch != DEFAULT_ARCH else flat(baseline())


# Rows that replace a switch's values instead of turning it off: the two readings of "XSA in the last layers"
# (issue 17 item 4; docs/records.md, XSA). Both keep the parameter count of all on (XSA adds none; an attention-free
# block's MLP is widened by its attention's matrix parameters, ModelConfig.mlp_hidden), so they compare at equal
# bytes, up to how well each compresses.
ALTERNATIVES: dict[str, Callable[[Config], dict]] = {
    "xsa_last_half": lambda cfg: {"model.xsa": False, "model.xsa_last": cfg.model.num_layers // 2},
    "attention_last_half": lambda cfg: {
        "model.attn_layers": tuple(range(cfg.model.num_layers // 2, cfg.model.num_layers))
    },
}

RECORD_STEPS = 4930  # optimizer steps of the 1.0611 record in its 600 s (its three seeds' logs stop at 4917-4945)
RECORD_EMA_HORIZON = 286 / RECORD_STEPS  # its EMA decay 0.9965 averages over ~1/(1-0.9965) = 286 steps: ~6% of the run


def record_stack(cfg: Config, steps: int | None = None) -> Config:
    """``cfg`` with every switch of ``SWITCHES`` on, at values that suit its (small) shape; ``steps``: the run length
    the EMA is sized for (default ``cfg.train.iterations``).

    Values (the records' in brackets; docs/records.md has each technique's record):
    - ``mlp_leaky_slope`` 0.5, ``ln_scale``, ``xsa`` on every layer: scale-free, as the records (section 6).
    - ``rope_dims`` min(16, head_dim / 2) [16 of 64]: the record's 16 rotated dims where the head is wide enough; at
      tiny's head_dim 32 a quarter would leave only 4 rotation frequencies, so half of the head rotates.
    - ``attn_gate_width`` 12 [12]: the gate reads the first 12 normed input dims, far fewer than any width here.
    - ``smear_gate`` on [BOS-fixed]; ``model.bos_id`` is the tokenizer's (``bind_tokenizer``, by the caller).
    - ``parallel_from``: the last ~3/11 of the blocks run two lanes [blocks 8-10 of 11]; at 4 blocks, the last one.
    - depth recurrence: the middle block [3-5 of 11] runs 1 + 2 extra passes [num_loops 2], from 35% of training
      [loop_after 0.35]; it stays before the parallel lanes, as the model requires.
    - ``bigram_buckets`` 2048 x ``bigram_dim`` model_dim / 4 [3072 x 112 of 512]: the smallest table the records
      used (2048-10240), at their width ratio (~1/4), so it stays a small part of a small model.
    - value embeddings on the last ~2/11 of the blocks, ``ve_dim`` model_dim / 4 [blocks 9,10 of 11, 128 of 512]; at 4
      blocks, the last one.
    - ``qk_gain_init`` 5.0 [5.0; 5.25 in #1667]: the later records' query temperature at init.
    - Muon: Polar-Express Newton-Schulz coefficients and MuonEq-R row normalization [both]; grad clip 0.3 [0.3].
    - weight decay: Muon 0.095, embedding 0.085, scalars 0.02 [the 1.0611 record's]; its taper from 70% of training
      down to 0.5x [the 2026-04-18 record's]; warm-down over the last 85% of training to a floor of 0.1 [1.0611]:
      fractions of the run, so they carry over to any length.
    - the 1.0611 record's details: sigmoid-gated skips, the first lane block's skip into lane 0 only, orthogonal
      Q/K/V/MLP-up init, SDClip on the sample std, int8 attention gates [all as the record].
    - ``ema_decay`` 1 - 1/h with h = 6% of the run (at least 2 steps) [0.9965 over ~4,930 steps]: the record's
      averaging horizon as a share of training, since a 286-step horizon would average a 60-step run's early weights.
    - late QAT below lr scale 0.15 [record 1.11's LATE_QAT_THRESHOLD].
    - quantization: GPTQ [self-generated calibration] with SDClip k 12.85 on the int6 matrices and k 20 on the int8
      embedding [PR #1394: int6 k 12.85, embedding int8 k 20]; LQER rank 4 on the 3 worst matrices [1.0611].
    - Hadamard rotation of the V/O pairs and of every matrix's input side [no record; PRs #1224, #2130: the exact
      ones of ``export/rotation.py``; the stream side is already among the input sides].
    - AWQ-lite: the single most salient group of 64 columns at int8 inside GPTQ [PR #1908: top 1 of 64].
    - AsymLogit: learned caps per logit sign [PR #1923, trained here; docs/records.md].
    - progressive context: a quarter of seq_len to 10% of training, half to 70%, then seq_len [PR #2014: 1024, 2048,
      3072 at the same shares], the lr re-warmed over the record's share of steps (32 of ~4,900), at least 1.
    - n-gram tilt of the artifact's scores: order 16, gate 0.8, boost 2.625 [PR #2135; the order is the record's
      even at small scale: it only fires on repeated spans].

    Another model family gets the optimizer, training and quantization values and its own switches' on values.
    """
    horizon = max(2.0, RECORD_EMA_HORIZON * (steps or cfg.train.iterations))
    shared = {
        "optim.muon_ns_coeffs": "polar_express",
        "optim.muon_row_norm": True,
        "optim.grad_clip_norm": 0.3,
        "optim.muon_wd": 0.095,
        "optim.embed_wd": 0.085,
        "optim.scalar_wd": 0.02,
        "optim.wd_taper_start": 0.7,
        "optim.wd_taper_final": 0.5,
        "optim.warmdown_frac": 0.85,
        "optim.min_lr_scale": 0.1,
        "train.ema_decay": round(1 - 1 / horizon, 4),
        "train.qat_threshold": 0.15,
        "quant.method": "gptq",
        "quant.sdclip_k": 12.85,
        "quant.embed_sdclip_k": 20.0,
        "quant.bits": 6,
        "quant.embed_bits": 8,
        "quant.lqer_rank": 4,
        "quant.sdclip_correction": 1,
        "quant.awq_groups": 1,
        "train.seq_stages": (cfg.train.seq_len // 4, cfg.train.seq_len // 2),
        "train.seq_stage_ends": (0.1, 0.7),
        "train.seq_rewarm_steps": max(1, round(32 * (steps or cfg.train.iterations) / RECORD_STEPS)),
        "eval.tilt.boost": 2.625,
    }
    if cfg.arch != DEFAULT_ARCH:
        own = {key: on for keys in family_switches(cfg).values() for key, (on, _) in keys.items()}
        return replace(cfg.override({**shared, **own}), preset=f"{cfg.preset}+record-stack")
    m = cfg.model
    layers = m.num_layers
    lanes = max(1, round(3 * layers / 11))
    middle = (layers - 1) // 2
    on = cfg.override(
        {
            "model.mlp_leaky_slope": 0.5,
            "model.rope_dims": min(16, m.head_dim // 2) // 2 * 2,
            "model.ln_scale": True,
            "model.xsa": True,
            "model.attn_gate_width": min(12, m.model_dim),
            "model.smear_gate": True,
            "model.parallel_from": max(layers // 2, layers - lanes),
            "model.lane0_skip": True,
            "model.skip_gates": True,
            "model.ortho_init": True,
            "model.num_loops": 2,
            "model.loop_start": middle,
            "model.loop_end": middle,
            "train.loop_after": 0.35,
            "model.bigram_buckets": 2048,
            "model.bigram_dim": max(8, m.model_dim // 4),
            "model.ve_layers": tuple(range(layers - max(1, round(2 * layers / 11)), layers)),
            "model.ve_dim": max(8, m.model_dim // 4),
            "model.qk_gain_init": 5.0,
            "model.asym_softcap": True,
            **shared,
            "quant.gate_int8": True,
            "quant.rotate": ("vo", "input"),  # the GPT's exact rotations (export/rotation.py)
        }
    )
    return replace(on, preset=f"{cfg.preset}+record-stack")


def run_settings(cfg: Config) -> Config:
    """What every run of an ablation shares besides the switches: no intermediate validation
    (only the final scores are compared, and each validation costs time), and a GPTQ calibration of 16 sequences of
    64 tokens [64 x 2048 in the record]: sampling has no KV cache, so a batch costs its length squared; 256-token
    sequences took minutes per run at tiny on a busy 2-core machine, 64-token ones seconds."""
    return cfg.override(
        {
            "train.val_every": 0,
            "quant.calib_seqs": 16,
            "quant.calib_seq_len": 64,
            "quant.calib_batch": 8,
        }
    )


def switch_off(cfg: Config, name: str, switches: Mapping[str, tuple[str, ...]] | None = None) -> Config:
    """``cfg`` with switch ``name``'s keys at their off values (``off_values``); ConfigError (naming the switch) when a
    key is unknown, when the switch is already off in ``cfg``, or when the result is not a valid config. ``switches``:
    default the table of ``cfg``'s family (``switches_for``)."""
    switches = switches_for(cfg) if switches is None else switches
    if name not in switches:
        raise ConfigError(f"unknown switch {name!r}; known: {', '.join(switches)}")
    off, on = off_values(cfg), flat(cfg)
    keys = switches[name]
    unknown = [k for k in keys if k not in off]
    if unknown or not keys:
        raise ConfigError(f"switch {name!r}: unknown config field(s) {', '.join(unknown) or '(none given)'}")
    if all(on[k] == off[k] for k in keys):
        raise ConfigError(
            f"switch {name!r}: {', '.join(keys)} already hold the baseline's values, so turning it off changes "
            "nothing; record_stack must turn it on"
        )
    try:
        return replace(cfg.override({k: off[k] for k in keys}), preset=f"{cfg.preset}-{name}-off")
    except ConfigError as e:
        raise ConfigError(f"switch {name!r} off: {e}") from None


def variants(
    all_on: Config, names: list[str] | None = None, switches: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, Config]:
    """``{"all on": all_on, name: all_on with that switch off, ...}`` for ``names`` (default every switch), and, for
    the GPT, all on with an alternative's values for the ``ALTERNATIVES`` named (default all of them)."""
    switches = switches_for(all_on) if switches is None else switches
    alternatives = ALTERNATIVES if all_on.arch == DEFAULT_ARCH else {}
    known = [*switches, *alternatives]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ConfigError(f"unknown switch(es) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [n for n in switches if names is None or n in names]
    rows = {ALL_ON: all_on, **{name: switch_off(all_on, name, switches) for name in chosen}}
    for name, values in alternatives.items():
        if names is None or name in names:
            rows[name] = replace(all_on.override(values(all_on)), preset=f"{all_on.preset}-{name}")
    return rows


@dataclass(frozen=True, kw_only=True)
class AblationSettings(RecipeSettings):
    spec: str = "sp1024"
    only: tuple[str, ...] | None = None  # switch names; None = all of them


def run_ablation(settings: AblationSettings, log: Log = print) -> dict:
    """The whole ablation; writes ``ablation.json`` and ``ablation.md`` into ``settings.out`` and returns the JSON."""
    from .model_stages import TrainRequest, apply_compute_budget, read_manifest, train_stages

    start = time.perf_counter()
    split = settings.split()
    spec = resolve_spec(settings.spec)
    base, compute = apply_compute_budget(settings.base_config(), settings.budget_mode, settings.budget_value)
    steps = base.train.iterations if not base.train.max_minutes else preset(settings.preset).train.iterations
    # Switch names are checked before any stage runs: a typo in --only must not cost a tokenizer training.
    variants(record_stack(base, steps), list(settings.only) if settings.only is not None else None)

    cache = StageCache(settings.cache_dir, log)
    tok_dir = tokenizer_stage(cache, spec, split, threads=settings.threads)
    shard_dir = shard_stage(cache, tok_dir, split, workers=settings.threads, label=spec.name)
    tok = read_manifest(shard_dir)["tokenizer"]
    all_on = record_stack(run_settings(bind_tokenizer(base, stage_tokenizer(tok_dir)[0])), steps)
    configs = variants(all_on, list(settings.only) if settings.only is not None else None)

    seeds = settings.seed_list()
    total = len(configs) * len(seeds)
    requests = [
        TrainRequest(tok_dir, shard_dir, cfg.override({"train.seed": seed}), f"[{i * len(seeds) + j + 1}/{total}] "
                     f"{name if name in (ALL_ON, *ALTERNATIVES) else name + ' off'}, seed {seed}")
        for i, (name, cfg) in enumerate(configs.items())
        for j, seed in enumerate(seeds)
    ]  # fmt: skip
    log(f"{len(configs)} configurations x {len(seeds)} seed(s), {compute}, {settings.jobs} at a time")
    stages = train_stages(cache, requests, jobs=settings.jobs, threads=settings.threads)

    rows = [
        _row(name, cfg, all_on, seeds, stages[i * len(seeds) : (i + 1) * len(seeds)])
        for i, (name, cfg) in enumerate(configs.items())
    ]
    ref = rows[0]
    for row in rows:
        row["delta_bpb"] = row["val_bpb"] - ref["val_bpb"]
        row["delta_bytes"] = row["artifact_bytes"] - ref["artifact_bytes"]
    results = {
        "settings": {
            "preset": settings.preset,
            "arch": base.arch,
            "spec": spec.name,
            "tokenizer": {k: tok[k] for k in ("name", "vocab_size", "bos_id", "lossless")}
            | {"bytes": tok["artifact"]["bytes"]},
            "corpus": split.fingerprint(),
            "budget_mode": settings.budget_mode,
            "compute": compute,
            "seeds": seeds,
            "jobs": settings.jobs,
            "threads": settings.threads,
            "all_on_config": all_on.to_dict(),
            "cache": str(settings.cache_dir),
            "stages_built": dict(cache.executions),
            "seconds": round(time.perf_counter() - start, 1),
        },
        "rows": rows,
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / "ablation.json", results)
    md = ablation_markdown(results)
    write_atomic(settings.out / "ablation.md", md.encode("utf-8"))
    for line in md.splitlines():
        if line.startswith("|"):
            log(line)
    log(f"report: {settings.out / 'ablation.md'} ({results['settings']['seconds']:.0f} s)")
    return results


def _row(name: str, cfg: Config, all_on: Config, seeds: list[int], stages: list[Path]) -> dict:
    """One configuration's entry: its keys that differ from all on, and each seed's numbers from its run files."""
    from .model_stages import run_result

    on, here = flat(all_on), flat(cfg)
    runs = []
    for seed, stage in zip(seeds, stages):
        r = run_result(stage)
        runs.append(
            {
                "seed": seed,
                "stage": str(stage),
                **{k: r[k] for k in ("val_bpb", "val_bpb_before_quant", "val_bpb_official", "val_bytes", "steps")},
                "train_seconds": r["train_seconds"],
                **{k: r[k] for k in ("params", "artifact_bytes")},
                # train.py logs tokens/s per logging interval; over the whole run that is steps x batch / time.
                "tokens_per_s": r["steps"] * r["config"]["train"]["batch_tokens"] / r["train_seconds"],
            }
        )
    bpb = Summary(tuple(r["val_bpb"] for r in runs))
    return {
        "switch": name,
        "off": {k: {"all_on": on[k], "off": here[k]} for k in here if here[k] != on[k]},
        "runs": runs,
        "val_bpb": bpb.mean,
        "val_bpb_std": bpb.std,
        "val_bpb_before_quant": _mean(runs, "val_bpb_before_quant"),
        "val_bpb_official": None if runs[0]["val_bpb_official"] is None else _mean(runs, "val_bpb_official"),
        "artifact_bytes": _mean(runs, "artifact_bytes"),
        "tokens_per_s": _mean(runs, "tokens_per_s"),
        "params": runs[0]["params"],
    }


def _mean(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


TABLE_HEAD = (
    "| switch off | BPB | ΔBPB vs all on | BPB before quant | official BPB | artifact bytes | Δbytes | "
    "train tokens/s (steps × batch tokens / train s) | params |"
)


def table_row(row: dict) -> str:
    std = "" if math.isnan(row["val_bpb_std"]) else f" ± {row['val_bpb_std']:.4f}"
    official = "n/a" if row.get("val_bpb_official") is None else f"{row['val_bpb_official']:.4f}"
    return (
        f"| {row['switch']} | {row['val_bpb']:.4f}{std} | {row['delta_bpb']:+.4f} | "
        f"{row['val_bpb_before_quant']:.4f} | {official} | {row['artifact_bytes']:,.0f} | {row['delta_bytes']:+,.0f} | "
        f"{row['tokens_per_s']:,.0f} | {row['params']:,} |"
    )


def ablation_markdown(results: dict) -> str:
    s = results["settings"]
    corpus, tok = s["corpus"], s["tokenizer"]
    one_seed = "" if len(s["seeds"]) > 1 else " (one seed: a ΔBPB within the seed-to-seed spread is no evidence)"
    lines = [
        "# Record-stack ablation",
        "",
        f"- base: preset `{s['preset']}` (`model.arch {s['arch']}`) with every record-stack switch on "
        "(`pipelines.ablate.record_stack`); each other row turns one switch off, setting its keys to the `baseline` "
        "preset's values (a model family's own switches: to their off values; an alternative's row: to the "
        "alternative's values)",
        f"- corpus: `{corpus['description']['source']}`: {corpus['val']['docs']:,} validation documents "
        f"({corpus['val']['bytes']:,} bytes), {corpus['train']['docs']:,} training documents "
        f"({corpus['train']['bytes']:,} bytes)",
        f"- tokenizer: `{s['spec']}`, vocab {tok['vocab_size']:,}, {tok['bytes']:,} bytes",
        f"- compute: {s['compute']}; seeds: {', '.join(str(x) for x in s['seeds'])}{one_seed}",
        "- BPB: `val_bpb`, exact (byte sidecars: original bytes), every validation target, scored from the quantized "
        "artifact alone; ΔBPB > 0 means the switch helps (turning it off costs BPB). Official BPB: `val_bpb_official`, "
        "the leaderboard's rule (the official eval's byte count, its whole windows only), for SentencePiece-based "
        "tokenizers",
        f"- tokens/s: {s['jobs']} run(s) at a time sharing {s['threads']} thread(s); comparable within this table "
        "only, and only as far as the machine's other load stayed the same",
        "",
        TABLE_HEAD,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(table_row(row) for row in results["rows"]),
        "",
        "## Switches",
        "",
        "| switch | all on → off |",
        "|---|---|",
        *(
            f"| {row['switch']} | "
            + ", ".join(f"`{k}` {v['all_on']!r} → {v['off']!r}" for k, v in row["off"].items())
            + " |"
            for row in results["rows"][1:]
        ),
        "",
    ]
    return "\n".join(lines)


def list_switches(preset_name: str, arch: str = DEFAULT_ARCH) -> str:
    """The switch table for a preset: each switch's keys, on-value and off value."""
    all_on = record_stack(registry.with_arch(preset(preset_name), arch))
    on = flat(all_on)
    configs = variants(all_on)
    lines = [f"switches on preset {preset_name}, model.arch {arch} (on -> off):"]
    for name, keys in switches_for(all_on).items():
        off = flat(configs[name])
        lines.append(f"  {name:<17} " + ", ".join(f"{k} {on[k]!r} -> {off[k]!r}" for k in keys))
    if arch == DEFAULT_ARCH:
        lines.append("alternatives (all on with these values instead):")
    for name, values in (ALTERNATIVES if arch == DEFAULT_ARCH else {}).items():
        lines.append(f"  {name:<17} " + ", ".join(f"{k} {on[k]!r} -> {v!r}" for k, v in values(all_on).items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:

    parser = command_parser("python -m pipelines.ablate", __doc__)
    add_corpus_args(parser)
    parser.add_argument("--spec", default="sp1024", help="tokenizer spec name or TOML file (default sp1024)")
    add_training_args(parser, seeds=1, per="configuration")
    parser.add_argument("--only", nargs="+", metavar="SWITCH", help="turn off only these switches (see --list)")
    parser.add_argument("--list", action="store_true", help="print the switches with their on and off values")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (= --budget-mode steps --budget-value N)")
    parser.add_argument("--val-docs", type=int, default=40, help="first N documents = validation (default 40)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablate"), help="output directory (default runs/ablate)")
    args = parser.parse_args(argv)
    if args.steps is not None and (args.budget_mode != "steps" or args.budget_value is not None):
        parser.error("--steps N is --budget-mode steps --budget-value N; give one or the other")

    def body() -> None:
        if args.list:
            print(list_switches(args.preset, args.arch))
            return
        budget_value = args.steps if args.steps is not None else args.budget_value
        only = tuple(args.only) if args.only else None
        settings = AblationSettings.from_args(args, only=only, budget_value=budget_value)
        run_ablation(settings, log=lambda line: print(f"[ablate] {line}", flush=True))

    return guarded(body, args.cache or args.out / "cache")


if __name__ == "__main__":  # training workers are spawned: keep module import side-effect free
    sys.exit(main())
