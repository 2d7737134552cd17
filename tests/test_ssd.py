"""The ``ssd`` family: the chunked scan against a brute-force sum and against the model's own recurrence, document
restarts, causality, its interface (groups, roles, LoRA sites, FLOPs against torch's counter), and end to end: trained,
quantized, within the budget, scored from its artifact (sliding windows, TTT), under torchrun, in the A/B and the
ablation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import jsonl_corpus, make_dataset, one_thread  # noqa: F401 (autouse fixture)
from torch.utils.flop_counter import FlopCounterMode

from pgolf_data.shards import ShardSet
from pgolf_model import artifact, budget, evaluate, registry
from pgolf_model.config import ConfigError
from pgolf_model.evaluation.lora import DocLoRA
from pgolf_model.presets import preset
from pgolf_model.quant import TensorRole
from pgolf_model.ssd import SSD, SSDConfig, ssd_scan
from pgolf_model.training.optim import build_optimizers
from pgolf_model.training.trainer import run

REPO = Path(__file__).resolve().parents[1]
SMALL = {"vocab_size": 50, "bos_id": 1, "num_layers": 2, "model_dim": 32, "num_heads": 4, "state_dim": 8}


def perturbed(seed: int = 0, **changes) -> SSD:
    """A small SSD whose every tensor is moved off its init (the output projections start at 0)."""
    torch.manual_seed(seed)
    model = SSD(SSDConfig(**{**SMALL, **changes}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def tokens(seed: int, shape=(3, 23), bos_at=((0, 7), (1, 0), (2, 12), (2, 13))) -> torch.Tensor:
    idx = torch.randint(2, 50, shape, generator=torch.Generator().manual_seed(seed))
    for row, col in bos_at:
        idx[row, col] = 1
    return idx


def brute_force_scan(q, k, v, log_a):
    """``y_t = sum_{s <= t} prod_{s < r <= t} a_r (q_t . k_s) v_s``, one pair at a time in float64."""
    q, k, v, a = (t.double() for t in (q, k, v, log_a.exp()))
    B, T, H, _ = q.shape
    y = torch.zeros(B, T, H, v.size(-1), dtype=torch.float64)
    for t in range(T):
        for s in range(t + 1):
            decay = a[:, s + 1 : t + 1].prod(dim=1)  # (B, H)
            y[:, t] += (decay * (q[:, t] * k[:, s]).sum(-1))[..., None] * v[:, s]
    return y


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 19),
    chunk=st.integers(1, 8),
    resets=st.lists(st.integers(0, 18), max_size=3),
    seed=st.integers(0, 99),
)
def test_the_chunked_scan_is_the_sum_it_stands_for(T, chunk, resets, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, T, 3, 4, generator=g), torch.randn(2, T, 3, 4, generator=g)
    v = torch.randn(2, T, 3, 5, generator=g)
    log_a = -torch.rand(2, T, 3, generator=g) * 2
    for r in resets:
        if r < T:
            log_a[0, r] = -math.inf  # a restart: nothing before r reaches r or later
    got = ssd_scan(q, k, v, log_a, chunk).double()  # fp32 arithmetic
    torch.testing.assert_close(got, brute_force_scan(q, k, v, log_a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("changes", [{}, {"chunk_size": 5}, {"conv_kernel": 0, "output_gate": False}])
def test_the_chunked_model_is_its_recurrence(changes):
    model, idx = perturbed(**changes), tokens(1)
    with torch.no_grad():
        full = model.logits(idx)
        state, steps = None, []
        for t in range(idx.size(1)):
            logits, state = model.decode(idx[:, t : t + 1], state)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=2e-5, rtol=1e-5)
        # Fed all at once, decode gives the last position's logits too.
        torch.testing.assert_close(model.decode(idx)[0], full[:, -1], atol=2e-5, rtol=1e-5)


def test_a_document_never_reads_the_one_before():
    model, idx = perturbed(), tokens(2)
    other = idx.clone()
    other[0, :7] = torch.randint(2, 50, (7,), generator=torch.Generator().manual_seed(9))  # before row 0's BOS
    with torch.no_grad():
        assert torch.equal(model.logits(other)[0, 7:], model.logits(idx)[0, 7:])
        assert not torch.allclose(model.logits(other)[0, :7], model.logits(idx)[0, :7])
        leaky = perturbed(reset_at_bos=False)
        assert not torch.allclose(leaky.logits(other)[0, 7:], leaky.logits(idx)[0, 7:])


def test_no_position_reads_a_later_one():
    model, idx = perturbed(), tokens(3)
    later = idx.clone()
    later[:, 15:] = 3
    with torch.no_grad():
        assert torch.equal(model.logits(later)[:, :15], model.logits(idx)[:, :15])


def test_gradients_are_finite_across_restarts():
    model, idx = perturbed(), tokens(4)
    model(idx[:, :-1], idx[:, 1:]).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_groups_roles_and_lora_sites():
    model = perturbed()
    build_optimizers(model, preset("smoke").optim)  # refuses groups that miss or repeat a parameter
    groups = {name: g for g, members in model.param_groups().items() for name, _ in members}
    assert groups["tok_emb.weight"] == "embed" and groups["blocks.0.mixer.c_q.weight"] == "matrix"
    assert groups["blocks.1.mixer.A_log"] == "scalar" and groups["blocks.1.mixer.conv"] == "scalar"
    roles = model.tensor_roles()
    assert set(roles) == {n for n, p in model.named_parameters() if p.ndim == 2}
    assert roles["tok_emb.weight"].vocab and roles["blocks.1.mixer.proj.weight"] == TensorRole(
        "attn", "mixer.proj.weight", 1
    )
    assert roles["blocks.0.mlp.fc.weight"].group == "mlp" and roles["blocks.0.mixer.dt_proj"].group == "other"
    # Fresh adapters (B = 0) change nothing, and they wrap a view: the model keeps its own modules.
    idx = tokens(5)
    lora = DocLoRA(model, 3, 2, 4.0, ("q", "k", "v", "o", "mlp"))
    lora.load(lora.draw(3, torch.Generator().manual_seed(0)), [0, 1, 2])
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(
            model.logits(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten(), reduction="none"
        )
        torch.testing.assert_close(lora.nll(idx[:, :-1], idx[:, 1:]).flatten(), plain)
    assert type(model.blocks[0].mixer).__name__ == "Mixer" and type(model.blocks[0].mixer.c_q).__name__ == "Linear"


@pytest.mark.parametrize("arch", ["gpt", "ssd"])
def test_flops_per_token_counts_what_torch_counts(arch):
    """The hook against ``FlopCounterMode`` over a forward and backward pass: equal but for the causal work, which
    the hook counts at its average length and the counter as run (the SSD's whole chunks; the CPU's attention kernel
    it does not count at all)."""
    cfg = registry.with_arch(preset("smoke"), arch).override({"model.vocab_size": 260})
    model, T = registry.build(cfg), cfg.train.seq_len
    with FlopCounterMode(display=False) as counter:
        model.logits(torch.randint(0, 260, (2, T))).logsumexp(-1).mean().backward()
    m = cfg.model
    if arch == "gpt":  # forward FLOPs of QK^T and AV: causal over (T + 1) / 2 keys on average; not counted on CPU
        causal, as_run = m.num_layers * 2 * 2 * m.model_dim * (T + 1) / 2, 0.0
    else:  # q.k and scores.v within chunks of L: causal over (L + 1) / 2 positions; run over all L
        L, width = min(m.chunk_size, T), m.num_heads * (m.state_dim + m.head_dim)
        causal, as_run = m.num_layers * 2 * width * (L + 1) / 2, m.num_layers * 2 * width * L
    assert model.flops_per_token(T) == pytest.approx(counter.get_total_flops() / (2 * T) + 3 * (causal - as_run))


# --- end to end -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:500], dev_sample[:30])


def ssd_smoke(**changes):
    return registry.with_arch(preset("smoke"), "ssd").override({"model.vocab_size": 260, **changes})


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    data, tok = dataset
    out = tmp_path_factory.mktemp("run")
    changes = {"quant.method": "gptq", "quant.calib_seqs": 4, "quant.calib_seq_len": 32, "train.qat_threshold": 0.3}
    return out, run(ssd_smoke(**changes), data=data, tokenizer=tok, out_dir=out, progress=False)


def test_it_trains_quantizes_and_scores_from_its_artifact(dataset, trained, capsys):
    out, summary = trained
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["event"] == "train"]
    # Learned from context: below the entropy of the training split's token frequencies (the best context-free
    # prediction), in nats as the loss is; a ratio to the first logged loss moved with the init's RNG stream.
    shards = ShardSet.open(dataset[0], "train")
    train = shards.read(0, shards.num_tokens)
    p = np.bincount(train) / train.size
    unigram_nats = -(p[p > 0] * np.log(p[p > 0])).sum()
    assert losses[-1] < unigram_nats - 0.2 and summary["val_loss"] < unigram_nats - 0.2, (losses[-1], unigram_nats)
    assert any(r["event"] == "qat" for r in records)  # late QAT found the SSD's block matrices
    art = artifact.read(out / "model.pga")
    assert art.config["model"]["arch"] == "ssd"
    assert "pgolf_model/ssd.py" in art.code and "pgolf_model/model.py" not in art.code  # only its own family's code
    assert artifact.ENTRY_FILE not in art.code  # built in: no entry point to carry
    assert summary["artifact_val_bpb"] == pytest.approx(summary["val_bpb"], abs=0.05)
    embedded, cfg = artifact.build_model(art, code="artifact")
    host, _ = artifact.build_model(art, code="host")
    assert type(embedded).__module__.startswith("_pgolf_artifact_") and type(host) is SSD and cfg.arch == "ssd"
    assert art.foreign_model_code() == [] and type(artifact.build_model(art)[0]) is SSD  # auto: the same code
    x = torch.randint(0, 260, (2, 40), generator=torch.Generator().manual_seed(0))
    assert torch.equal(embedded.logits(x), host.logits(x))
    data = str(dataset[0])
    assert evaluate.main([str(out / "model.pga"), "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_bpb"] == summary["artifact_val_bpb"]
    assert evaluate.main([str(out / "model.pga"), "--data", data, "--json", "--stride", "16"]) == 0
    sliding = json.loads(capsys.readouterr().out)
    assert sliding["stride"] == 16 and sliding["val_bytes"] == summary["val_bytes"]
    assert budget.main([str(out / "model.pga")]) == 0
    assert "fits" in capsys.readouterr().out


@pytest.mark.parametrize("ttt", ["full", "lora"])
def test_ttt_scores_every_target_once(dataset, trained, capsys, ttt):
    out, summary = trained
    flags = {
        "full": ["--eval.full.chunk_tokens", "1024", "--eval.full.batch_seqs", "4", "--eval.full.epochs", "1"],
        "lora": ["--eval.lora.chunk_tokens", "16", "--eval.lora.batch_docs", "8", "--eval.lora.rank", "2"],
    }[ttt]
    argv = [str(out / "model.pga"), "--data", str(dataset[0]), "--json", "--ttt", ttt, *flags]
    assert evaluate.main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["val_tokens"], got["val_bytes"]) == (summary["val_targets"], summary["val_bytes"])
    # Score-first TTT may gain a lot on an 8-step model (full TTT: 3.87 -> 3.63 on the embedded corpus), so only a
    # loss is bounded: adapting on already-scored tokens must not wreck the scores that follow.
    assert 0 < got["val_bpb"] < summary["artifact_val_bpb"] + 0.2


def test_looping_is_refused_for_a_family_without_it(dataset, tmp_path):
    data, tok = dataset
    with pytest.raises(ConfigError, match=r"train\.loop_after = 0\.5: model\.arch ssd has no looping"):
        run(ssd_smoke(**{"train.loop_after": 0.5}), data=data, tokenizer=tok, out_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_two_process_gloo_training_matches_one_process(dataset, tmp_path):
    data, tok = dataset
    flags = {"train.iterations": 6, "train.log_every": 1, "train.val_every": 0, "train.batch_tokens": 2048}
    single = run(ssd_smoke(**flags), data=data, tokenizer=tok, out_dir=tmp_path / "one", progress=False)
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519", "-m",
            "pgolf_model.train", "--preset", "smoke", "--model.arch", "ssd", "--data", str(data), "--tokenizer",
            str(tok), "--out", str(tmp_path / "two"), "--no-progress"]  # fmt: skip
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def losses(d):
        records = [json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
        return [r["train_loss"] for r in records if r["event"] == "train"]

    np.testing.assert_allclose(losses("two"), losses("one"), rtol=2e-4)
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["artifact_val_bpb"] == pytest.approx(single["artifact_val_bpb"], rel=2e-4)


@pytest.mark.slow
def test_the_ab_and_the_ablation_run_it(tmp_path, dev_docs):
    from pipelines.ablate import AblationSettings, run_ablation
    from pipelines.tokenizer_ab import ABSettings, run_ab

    corpus = jsonl_corpus(tmp_path / "docs.jsonl", dev_docs[:150])
    ab = ABSettings(specs=("bytes260", "sp1024"), corpus=str(corpus), out=tmp_path / "ab", seeds=1, preset="smoke",
                    arch="ssd", budget_value=8, val_docs=10, threads=1)  # fmt: skip
    results = run_ab(ab, log=lambda line: None)
    assert results["settings"]["arch"] == "ssd" and len(results["comparisons"]) == 1
    for spec in results["specs"]:
        (r,) = spec["runs"]
        assert r["config"]["model"]["arch"] == "ssd" and r["steps"] == 8
        assert (
            r["budget_split"]["embeddings"] > 0
            and spec["sizing"]["estimated_total"] <= results["settings"]["artifact_budget"]
        )
    assert "`model.arch ssd`" in (ab.out / "report.md").read_text()

    ablation = AblationSettings(out=tmp_path / "abl", corpus=str(corpus), spec="bytes260", preset="smoke", arch="ssd",
                                only=("bos_reset", "gptq"), budget_value=6, val_docs=10, threads=1)  # fmt: skip
    rows = {row["switch"]: row for row in run_ablation(ablation, log=lambda line: None)["rows"]}
    assert list(rows) == ["all on", "gptq", "bos_reset"]  # the switch table's order: shared ones first
    assert rows["bos_reset"]["off"] == {"model.reset_at_bos": {"all_on": True, "off": False}}
    assert rows["gptq"]["off"] == {  # AWQ-lite runs inside GPTQ's solve: off with it
        "quant.method": {"all_on": "gptq", "off": "rtn"},
        "quant.awq_groups": {"all_on": 1, "off": 0},
    }
