"""Reports: ``report.md`` with PNG plots for an A/B run, ``screening.md`` with one plot for a screening run.

Both are rendered from the JSON the pipeline writes next to them (``results.json``, ``screening.json``), so every
number in the text can be traced to a file. matplotlib (Agg backend) is imported only when plotting.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pgolf_data.manifest import write_atomic

from .stats import LN2, Summary

PLOTS = {"bpb": "bpb.png", "tokens_per_byte": "tokens_per_byte.png", "budget": "budget.png"}
SPLIT_PARTS = ("tokenizer", "embeddings", "other_weights", "code")
SPLIT_LABELS = {"tokenizer": "tokenizer", "embeddings": "embeddings", "other_weights": "other weights",
                "code": "code + config"}  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _p(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"


def _pm(summary: Summary, digits: int = 4) -> str:
    std = "n/a" if math.isnan(summary.std) else f"{summary.std:.{digits}f}"
    return f"{summary.mean:.{digits}f} ± {std}"


def spec_summary(spec: dict) -> Summary:
    return Summary(tuple(run["val_bpb"] for run in spec["runs"]))


def _official_mean(spec: dict) -> str:
    values = [run.get("val_bpb_official") for run in spec["runs"]]
    return "n/a" if None in values else f"{sum(values) / len(values):.4f}"


def mean_split(spec: dict) -> dict[str, float]:
    runs = spec["runs"]
    return {part: sum(run["budget_split"][part] for run in runs) / len(runs) for part in SPLIT_PARTS}


# --- A/B ---------------------------------------------------------------------------------------------------------


def ab_markdown(results: dict) -> str:
    s = results["settings"]
    specs = results["specs"]
    corpus = s["corpus"]
    lines = [
        "# Tokenizer A/B",
        "",
        f"- corpus: `{corpus['description']['source']}`: {corpus['val']['docs']:,} validation documents "
        f"({corpus['val']['bytes']:,} bytes, sha256 `{corpus['val']['sha256'][:16]}…`), "
        f"{corpus['train']['docs']:,} training documents ({corpus['train']['bytes']:,} bytes)",
        f"- model: preset `{s['preset']}` (`model.arch {s['arch']}`), sized per tokenizer to an artifact budget of "
        f"**{s['artifact_budget']:,} bytes** ({s['budget_source']}; shrink mode `{s['shrink']}`)",
        f"- compute: {s['compute']} (budget mode `{s['budget_mode']}`)",
        f"- seeds: {', '.join(str(x) for x in s['seeds'])}",
        "- BPB: `val_bpb`, exact (byte sidecars: original UTF-8 bytes), every validation target, scored from the "
        "quantized artifact alone; the comparison and the test use it. Official BPB: `val_bpb_official`, the "
        "leaderboard's rule (the official eval's byte count over its whole windows), for SentencePiece-based "
        "tokenizers only: it is not comparable across tokenizers (docs/bpb.md)",
        "",
        "## Results",
        "",
        "| tokenizer | vocab | tokenizer bytes | tokens/byte | model | params | estimated bytes | artifact bytes | "
        "BPB mean ± std | per seed | official BPB mean |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    budget = s["artifact_budget"]
    for spec in specs:
        summary = spec_summary(spec)
        sizes = sorted(run["artifact_bytes"] for run in spec["runs"])
        estimated = spec["sizing"]["estimated_total"]
        cells = [
            spec["spec"],
            f"{spec['vocab_size']:,}",
            f"{spec['tokenizer_bytes']:,}",
            f"{spec['tokens_per_byte']:.4f}",
            spec["sizing"]["shape"],
            f"{spec['runs'][0]['params']:,}",
            f"{estimated:,} ({100 * estimated / budget:.1f}%)",
            f"{sizes[0]:,}" + (f"–{sizes[-1]:,}" if sizes[-1] > sizes[0] else ""),
            f"{_pm(summary)} (n={summary.n})",
            ", ".join(f"{v:.4f}" for v in summary.values),
            _official_mean(spec),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    over = [
        f"{spec['spec']} seed {run['seed']} ({run['artifact_bytes']:,} bytes)"
        for spec in specs
        for run in spec["runs"]
        if run["artifact_bytes"] > s["artifact_budget"]
    ]
    lines += [
        "",
        "Estimated bytes: the sizing estimate the model was chosen by, with the share of the budget it uses (the "
        "model grows or shrinks in whole steps, so some budget is left over). Artifact bytes: the files written.",
    ]
    if over:
        lines += ["", f"Over the budget (the sizing estimate was low): {', '.join(over)}."]
    code_versions = {run["code_sha256"] for spec in specs for run in spec["runs"]}
    if len(code_versions) > 1:
        lines += [
            "",
            f"**Warning**: the artifacts carry {len(code_versions)} different versions of the counted code (the "
            "source changed while the runs were made), so their code bytes and training code may differ.",
        ]
    lines += [
        "",
        "## Budget split (bytes, mean over seeds)",
        "",
        "| tokenizer | " + " | ".join(SPLIT_LABELS[p] for p in SPLIT_PARTS) + " | total |",
        "|---|" + "---:|" * (len(SPLIT_PARTS) + 1),
    ]
    for spec in specs:
        split = mean_split(spec)
        lines.append(
            f"| {spec['spec']} | "
            + " | ".join(f"{split[p]:,.0f}" for p in SPLIT_PARTS)
            + f" | {sum(split.values()):,.0f} |"
        )
    lines += [
        "",
        "## Comparisons",
        "",
        "Δ = candidate − reference (negative: the candidate is better); nats/byte = BPB × ln 2. p (two-sided): Welch's "
        "t-test of equal means. p (margin): one-sided Welch test that the better one wins by at least "
        f"{results['comparisons'][0]['margin_nats'] if results['comparisons'] else 0.005:g} nats/byte, the challenge's "
        "rule.",
        "",
        "| reference | candidate | Δ BPB | Δ nats/byte | p (two-sided) | p (margin, candidate better) | "
        "p (margin, reference better) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in results["comparisons"]:
        lines.append(
            f"| {c['reference']} | {c['candidate']} | {c['delta_bpb']:+.4f} | {c['delta_nats']:+.4f} | "
            f"{_p(c['p_two_sided'])} | {_p(c['p_candidate_better'])} | {_p(c['p_reference_better'])} |"
        )
    lines += ["", "## Verdict", ""]
    lines += [f"- **{c['candidate']} vs {c['reference']}**: {c['verdict']}" for c in results["comparisons"]]
    lines += [
        "",
        f"![BPB per tokenizer]({PLOTS['bpb']})",
        f"![tokens per byte]({PLOTS['tokens_per_byte']})",
        f"![budget split]({PLOTS['budget']})",
        "",
    ]
    return "\n".join(lines)


def ab_plots(results: dict, out_dir: Path) -> None:
    plt = _pyplot()
    specs = results["specs"]
    names = [spec["spec"] for spec in specs]
    x = range(len(specs))

    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(specs), 3.6))
    for i, spec in enumerate(specs):
        summary = spec_summary(spec)
        ax.scatter([i] * summary.n, summary.values, color="tab:blue", alpha=0.6, s=18, zorder=3)
        std = 0.0 if math.isnan(summary.std) else summary.std
        ax.errorbar(i + 0.15, summary.mean, yerr=std, fmt="o", color="black", capsize=4, zorder=4)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("validation BPB (exact, from the artifact)")
    ax.set_title("BPB per seed (dots) and mean ± std")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out_dir / PLOTS["bpb"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(specs), 3.2))
    ax.bar(list(x), [spec["tokens_per_byte"] for spec in specs], color="tab:green")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("validation tokens per byte")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out_dir / PLOTS["tokens_per_byte"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(2.8 + 1.4 * len(specs), 3.6))
    bottom = [0.0] * len(specs)
    for part in SPLIT_PARTS:
        values = [mean_split(spec)[part] / 1e3 for spec in specs]
        ax.bar(list(x), values, bottom=bottom, label=SPLIT_LABELS[part])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axhline(results["settings"]["artifact_budget"] / 1e3, color="black", linestyle="--", linewidth=1, label="budget")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("artifact kB")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    _save(fig, out_dir / PLOTS["budget"])
    plt.close(fig)


def write_ab_report(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    ab_plots(results, out_dir)
    path = out_dir / "report.md"
    write_atomic(path, ab_markdown(results).encode("utf-8"))
    return path


# --- screening ---------------------------------------------------------------------------------------------------


def screen_markdown(rows: list[dict], settings: dict) -> str:
    corpus = settings["corpus"]
    sm = rows[0]["smoothing"] if rows else {}
    lines = [
        "# Tokenizer screening",
        "",
        f"- corpus: `{corpus['description']['source']}`; held out: the first {corpus['val']['docs']:,} documents "
        f"({corpus['val']['bytes']:,} bytes); tokenizers trained on the {corpus['train']['docs']:,} documents after "
        "them",
        f"- n-gram counts from {settings['sample']}",
        f"- smoothing: unigram additive α = {sm.get('unigram_alpha')}; bigram interpolated absolute discounting "
        f"D = {sm.get('bigram_discount')} (see `pipelines/ngram.py`)",
        "- BPB = bits of the held-out token stream (BOS included as a target) / original UTF-8 bytes",
        "",
        "| tokenizer | kind | vocab | lossless | tokenizer bytes | tokens/byte | unigram BPB | bigram BPB | "
        "bigram nats/byte | seconds |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        seconds = r["seconds"]["tokenizer"] + r["seconds"]["screen"]
        lines.append(
            f"| {r['spec']} | {r['kind']} | {r['vocab_size']:,} | {'yes' if r['lossless'] else 'no'} | "
            f"{r['tokenizer_bytes']:,} | {r['val']['tokens_per_byte']:.4f} | {r['unigram_bpb']:.4f} | "
            f"{r['bigram_bpb']:.4f} | {r['bigram_bpb'] * LN2:.4f} | {seconds:.1f} |"
        )
    lines += ["", f"Total: {settings['seconds']:.1f} s.", "", "![screening](screening.png)", ""]
    return "\n".join(lines)


def screen_plot(rows: list[dict], out_dir: Path) -> None:
    plt = _pyplot()
    names = [r["spec"] for r in rows]
    x = list(range(len(rows)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(3 + 2 * len(rows), 3.6))
    left.bar(x, [r["val"]["tokens_per_byte"] for r in rows], color="tab:green")
    left.set_ylabel("held-out tokens per byte")
    right.bar([i - 0.2 for i in x], [r["unigram_bpb"] for r in rows], width=0.4, label="unigram")
    right.bar([i + 0.2 for i in x], [r["bigram_bpb"] for r in rows], width=0.4, label="bigram")
    right.set_ylabel("held-out BPB")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    _save(fig, out_dir / "screening.png")
    plt.close(fig)


def write_screen_report(rows: list[dict], settings: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    screen_plot(rows, out_dir)
    path = out_dir / "screening.md"
    write_atomic(path, screen_markdown(rows, settings).encode("utf-8"))
    return path
