"""The tokenizer A/B: statistics against a hand computation, budget sizing, compute budgets, and the whole pipeline
at the smoke preset checked against the artifacts and logs it was made from."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from model_data import interrupted_at, jsonl_corpus
from scipy import stats as scipy_stats

from pgolf_data.shards import ShardSet
from pgolf_model import artifact as model_artifact
from pgolf_model.artifact import BudgetError
from pgolf_model.model import parameter_shapes
from pgolf_model.presets import preset
from pipelines import sizing
from pipelines.model_stages import apply_compute_budget
from pipelines.report import ab_markdown
from pipelines.stats import LN2, Summary, compare
from pipelines.tokenizer_ab import ABSettings, run_ab

# --- statistics -----------------------------------------------------------------------------------------------------


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom, by Simpson's rule on the density (no scipy)."""
    const = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))

    def pdf(x: float) -> float:
        return const * (1 + x * x / df) ** (-(df + 1) / 2)

    # Substitute x = t + u / (1 - u), u in [0, 1), which maps the infinite tail onto a finite interval.
    n = 20_000
    h = 1.0 / n
    total = 0.0
    for i in range(n):  # the last point (u = 1) contributes 0
        u = i * h
        weight = 1 if i == 0 else (4 if i % 2 else 2)
        total += weight * pdf(t + u / (1 - u)) / (1 - u) ** 2
    return total * h / 3


def welch_by_hand(a: list[float], b: list[float], shift: float = 0.0) -> tuple[float, float]:
    """Welch's t statistic of mean(a) - shift - mean(b) and the Welch-Satterthwaite degrees of freedom."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return (ma - shift - mb) / math.sqrt(se2), df


def test_comparison_matches_a_hand_computation():
    ref = [1.2210, 1.2250, 1.2190]  # BPB of the reference over three seeds
    cand = [1.2100, 1.2060, 1.2160]  # a larger spread than the reference: Welch and pooled t-tests differ
    c = compare("A", ref, "B", cand)
    assert c.delta_bpb == pytest.approx(sum(cand) / 3 - sum(ref) / 3, abs=1e-15)
    assert c.delta_nats == pytest.approx(c.delta_bpb * math.log(2), abs=1e-15)

    t, df = welch_by_hand(ref, cand)
    assert c.p_two_sided == pytest.approx(2 * student_t_sf(abs(t), df), rel=1e-6)
    nats = [x * math.log(2) for x in ref], [x * math.log(2) for x in cand]
    t_margin, df_margin = welch_by_hand(*nats, shift=0.005)
    assert df_margin == pytest.approx(df, rel=1e-12)  # shifting and scaling both samples keeps the degrees of freedom
    assert c.p_candidate_better == pytest.approx(student_t_sf(t_margin, df_margin), rel=1e-6)
    t_rev, _ = welch_by_hand(nats[1], nats[0], shift=0.005)
    assert c.p_reference_better == pytest.approx(student_t_sf(t_rev, df), rel=1e-6)
    # For this data B is 0.0110 BPB = 0.00762 nats/byte better, but 0.005 is not shown at 1% (p ~ 0.17).
    assert c.delta_nats == pytest.approx(-0.0076249, abs=1e-6)
    assert c.p_candidate_better > 0.01 and c.p_two_sided > 0.01  # the difference itself is not significant either
    assert c.verdict.startswith("not significant: B is ahead by 0.0076 nats/byte")


def test_verdict_in_the_challenges_terms():
    ref = [1.30, 1.31, 1.29]
    better = [1.20, 1.205, 1.195]  # 0.1 BPB = 0.069 nats/byte better, tight spread
    assert compare("A", ref, "B", better).verdict.startswith("B beats A by at least 0.005 nats/byte at p = ")
    assert compare("B", better, "A", ref).verdict.startswith("B beats A by at least 0.005 nats/byte at p = ")
    close = [1.2960, 1.3060, 1.2860]  # 0.004 BPB = 0.0028 nats/byte: below the margin however many seeds
    assert compare("A", ref, "C", close).verdict.startswith("not significant")
    one_seed = compare("A", [1.3], "B", [1.2])
    assert math.isnan(one_seed.p_two_sided) and one_seed.verdict.startswith("no verdict")
    identical = compare("A", [1.3, 1.3], "B", [1.2, 1.2])  # no spread: a t-test is undefined
    assert identical.verdict.startswith("no verdict")


def test_summary_uses_the_sample_standard_deviation():
    s = Summary((1.0, 2.0, 4.0))
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert math.isnan(Summary((1.0,)).std)


# --- sizing ---------------------------------------------------------------------------------------------------------


def bytes_per_param(cfg, tokenizer_bytes: int) -> dict[str, int]:
    """An exact, monotone stand-in for the artifact estimate: one byte per parameter."""
    params = sum(math.prod(s) for s in parameter_shapes(cfg.model).values())
    return {"tokenizer": tokenizer_bytes, "weights": params}


def with_vocab(base, vocab: int):
    return base.override({"model.vocab_size": vocab})


def largest_fitting(base, vocab, tok_bytes, budget, shrink, max_scale):
    """Brute force: every candidate size, keep the largest that fits."""
    configs, _ = sizing.ladder(with_vocab(base, vocab), shrink, max_scale)
    fitting = [c for c in configs if sum(bytes_per_param(c, tok_bytes).values()) <= budget]
    return fitting[-1] if fitting else None


@pytest.mark.parametrize("shrink", ["width", "layers"])
@pytest.mark.parametrize("vocab", [260, 1024, 4096])
def test_fit_finds_the_largest_model_under_the_budget(shrink, vocab):
    base = preset("smoke")
    budget = sizing.reference_budget(with_vocab(base, 1024), 2000, estimate=bytes_per_param)
    expected = largest_fitting(base, vocab, 2000 + vocab, budget, shrink, 2.0)
    if expected is None:  # e.g. 4096 x 64 embeddings alone exceed the budget: no layer count can fit
        with pytest.raises(BudgetError, match="nothing fits"):
            sizing.fit(with_vocab(base, vocab), 2000 + vocab, budget, shrink=shrink, estimate=bytes_per_param)
        assert shrink == "layers"
        return
    sized = sizing.fit(with_vocab(base, vocab), 2000 + vocab, budget, shrink=shrink, estimate=bytes_per_param)
    assert sized.config == expected
    assert sized.total <= budget and sized.config.model.vocab_size == vocab
    if vocab > 1024:  # a larger vocabulary pays with a smaller rest of the model
        field = "model_dim" if shrink == "width" else "num_layers"
        assert getattr(sized.config.model, field) < getattr(base.model, field)


def test_reference_keeps_the_preset_size_and_smaller_vocab_grows():
    base = preset("smoke")
    budget = sizing.reference_budget(base, 2000, estimate=bytes_per_param)
    same = sizing.fit(base, 2000, budget, estimate=bytes_per_param)
    assert same.config.model == base.model
    assert [size for size, _ in same.tried] == [64, 72]  # tried one step up, which did not fit
    grown = sizing.fit(with_vocab(base, 260), 2000, budget, estimate=bytes_per_param)
    assert grown.config.model.model_dim > base.model.model_dim


def test_fit_refuses_an_impossible_budget():
    base = preset("smoke")
    with pytest.raises(BudgetError, match=r"num_layers 1\) is estimated at .* over the 50,000-byte budget by"):
        sizing.fit(with_vocab(base, 8192), 2000, 50_000, shrink="layers", estimate=bytes_per_param)
    with pytest.raises(ValueError, match="max_scale"):
        sizing.fit(base, 2000, 10**6, max_scale=0.5, estimate=bytes_per_param)


def test_fit_with_the_model_packages_estimate():
    base = preset("smoke")
    budget = sizing.reference_budget(base, 2000)
    sized = sizing.fit(with_vocab(base, 8192), 20_000, budget)
    assert sized.total <= budget and sized.config.model.model_dim < base.model.model_dim


# --- compute budgets ------------------------------------------------------------------------------------------------


def test_compute_budget_modes():
    base = preset("tiny")
    cfg, text = apply_compute_budget(base, "steps", None)
    assert (cfg.train.iterations, cfg.train.max_minutes) == (base.train.iterations, 0.0)
    assert text == f"{base.train.iterations:,} steps per run"
    cfg, text = apply_compute_budget(base, "tokens", 100_000)
    assert cfg.train.iterations == math.ceil(100_000 / base.train.batch_tokens) and cfg.train.max_minutes == 0
    assert text.startswith(f"{cfg.train.iterations * base.train.batch_tokens:,} training tokens per run")
    cfg, _ = apply_compute_budget(base, "steps", base.train.iterations // 10)  # the schedule shrinks with the run
    o, b = cfg.optim, base.optim
    assert (o.warmdown_steps, o.lr_warmup_steps) == (round(b.warmdown_steps / 10), round(b.lr_warmup_steps / 10))
    assert o.muon_momentum_warmup_steps == round(b.muon_momentum_warmup_steps / 10) and o.warmdown_steps > 0
    cfg, text = apply_compute_budget(base, "wall-clock", 2.5)
    assert cfg.train.max_minutes == 2.5 and cfg.train.iterations > 10**6
    with pytest.raises(ValueError, match="whole number"):
        apply_compute_budget(base, "steps", 10.5)
    with pytest.raises(ValueError, match="must be positive"):
        apply_compute_budget(base, "tokens", -1)
    with pytest.raises(ValueError, match="no wall-clock limit"):
        apply_compute_budget(preset("smoke"), "wall-clock", None)
    with pytest.raises(ValueError, match="budget mode"):
        apply_compute_budget(base, "flops", None)


def test_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        ABSettings(specs=("bytes260",), corpus="default", out=tmp_path, seeds=0)
    with pytest.raises(ValueError, match="at least one spec"):
        ABSettings(specs=(), corpus="default", out=tmp_path)
    with pytest.raises(ValueError, match="artifact budget"):
        ABSettings(specs=("bytes260",), corpus="default", out=tmp_path, artifact_budget=0)


# --- the whole pipeline ---------------------------------------------------------------------------------------------


def _log_result(stage: Path) -> dict:
    records = [json.loads(line) for line in (stage / "run" / "log.jsonl").read_text().splitlines()]
    (result,) = [r for r in records if r["event"] == "result"]
    return result


@pytest.mark.slow
def test_whole_pipeline_at_smoke(tmp_path, dev_docs):
    corpus = jsonl_corpus(tmp_path / "docs.jsonl", dev_docs[:400])
    settings = ABSettings(
        specs=("sp1024", "bytes260"), corpus=str(corpus), out=tmp_path / "out", seeds=2, preset="smoke",
        budget_value=30, val_docs=40, threads=1,
    )  # fmt: skip

    # An interruption during the last training run: everything finished before it is kept.
    interrupted_at(4, run_ab, settings, log=lambda line: None)
    assert not (settings.out / "report.md").exists()
    results = run_ab(settings, log=lambda line: None)
    assert results["settings"]["stages_built"] == {"train": 1}
    md = (settings.out / "report.md").read_text()
    val_bytes = sum(len(d.encode()) for d in dev_docs[:40])

    for spec in results["specs"]:
        shard_dir = Path(spec["stages"]["shards"]) / "shards"
        bos = json.loads((shard_dir / "manifest.json").read_text())["tokenizer"]["bos_id"]
        shards = ShardSet.open(shard_dir, "val")
        tokens = np.asarray(shards.read(0, shards.num_tokens))
        assert int(np.asarray(shards.read(0, shards.num_tokens, sidecar=True)).sum()) == val_bytes
        assert spec["tokens_per_byte"] == (tokens.size - int((tokens == bos).sum())) / val_bytes
        for run in spec["runs"]:
            stage = Path(run["stage"])
            logged = _log_result(stage)
            art_path = stage / "run" / "model.pga"
            data = art_path.read_bytes()
            assert run["val_bpb"] == logged["artifact_val_bpb"]
            assert run["val_bytes"] == logged["val_bytes"] == val_bytes  # every spec scored on the same bytes
            assert run["artifact_bytes"] == len(data) == sum(model_artifact.part_sizes(data).values())
            assert sum(run["budget_split"].values()) == len(data)
            assert run["budget_split"]["tokenizer"] == spec["tokenizer_bytes"]
            assert run["config"]["train"]["seed"] == run["seed"] and run["steps"] == 30
        values = [_log_result(Path(r["stage"]))["artifact_val_bpb"] for r in spec["runs"]]
        mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
        assert f"| {mean:.4f} ± {std:.4f} (n=2) | {values[0]:.4f}, {values[1]:.4f} |" in md

    ref, cand = ([_log_result(Path(r["stage"]))["artifact_val_bpb"] for r in s["runs"]] for s in results["specs"])
    (c,) = results["comparisons"]
    delta = float(np.mean(cand) - np.mean(ref))
    p = scipy_stats.ttest_ind(ref, cand, equal_var=False).pvalue
    assert c["delta_bpb"] == pytest.approx(delta, abs=1e-12)
    assert f"| sp1024 | bytes260 | {delta:+.4f} | {delta * LN2:+.4f} | {p:.3g} |" in md
    assert f"- **bytes260 vs sp1024**: {c['verdict']}" in md
    sizes = re.findall(r"budget of \*\*([\d,]+) bytes\*\*", md)
    assert sizes == [f"{results['settings']['artifact_budget']:,}"]
    for spec in results["specs"]:
        assert spec["sizing"]["estimated_total"] <= results["settings"]["artifact_budget"]
    assert "Warning" not in md
    mixed = json.loads(json.dumps(results))
    mixed["specs"][1]["runs"][0]["code_sha256"] = "0" * 64
    assert "carry 2 different versions of the counted code" in ab_markdown(mixed)
    for png in ("bpb.png", "tokens_per_byte.png", "budget.png"):
        assert (settings.out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # One more seed: only the two new training runs are built (side by side, in worker processes).
    more = run_ab(ABSettings(**{**settings.__dict__, "seeds": 3, "jobs": 2, "threads": 2}), log=lambda line: None)
    assert more["settings"]["stages_built"] == {"train": 2}
    assert [r["val_bpb"] for r in more["specs"][0]["runs"][:2]] == [r["val_bpb"] for r in results["specs"][0]["runs"]]


def test_ctrl_c_exits_130_keeping_the_finished_stages(tmp_path, monkeypatch, capsys):
    from pipelines import tokenizer_ab

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer_ab, "run_ab", interrupted)
    argv = ["--specs", "bytes260", "--corpus", "default", "--out", str(tmp_path / "ab")]
    assert tokenizer_ab.main(argv) == 130
    err = capsys.readouterr().err
    assert f"interrupted: the finished stages under {tmp_path / 'ab' / 'cache'} are kept" in err
    assert "Traceback" not in err
