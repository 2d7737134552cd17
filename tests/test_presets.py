"""The record presets against the numbers of their records (../shared/research/stack.md), and the token ids a run
takes from its tokenizer."""

from __future__ import annotations

import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)

from pgolf_data.tokenizer.artifact import load as load_tokenizer
from pgolf_model.config import ConfigError
from pgolf_model.model import GPT, count_parameters
from pgolf_model.presets import PRESETS, bind_tokenizer, preset
from pgolf_model.train import main
from pgolf_model.training.trainer import load_inputs


def meta_model(name: str) -> GPT:
    with torch.device("meta"):
        return GPT(preset(name).model)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_groups_every_parameter(name):
    model = meta_model(name)
    groups = model.param_groups()  # asserts each parameter is in exactly one group
    assert sum(p.numel() for g in groups.values() for _, p in g) == count_parameters(preset(name).model)


def test_record_caseops_model_is_the_1_0611_stack():
    cfg = preset("record-caseops")
    m = cfg.model
    assert (m.vocab_size, m.num_layers, m.model_dim, m.mlp_mult) == (8192, 11, 512, 4)
    assert (m.num_heads, m.num_kv_heads, m.tie_embeddings, m.logit_softcap) == (8, 4, True, 30.0)
    assert (m.mlp_leaky_slope, m.xsa, m.rope_dims, m.ln_scale, m.qk_gain_init) == (0.5, True, 16, True, 5.0)
    assert (m.attn_gate_width, m.smear_gate, m.parallel_from, m.bigram_buckets, m.ve_layers) == (12, True, 8, 0, ())
    model = meta_model("record-caseops")
    # STACK section 6: emb 4,194,304 + 11 x (786,432 attention + 2,097,152 MLP) in the quantized matrices.
    matrices = model.tok_emb.weight.numel() + sum(p.numel() for _, p in model.param_groups()["matrix"])
    assert matrices == 4_194_304 + 11 * (786_432 + 2_097_152)
    # Blocks 3..5 three times: 17 virtual layers, encoder [0,1,2,3,4,5,3,4], decoder [5,3,4,5,6,7,8,9,10].
    assert model.encoder_layers == [0, 1, 2, 3, 4, 5, 3, 4]
    assert model.decoder_layers == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    model.set_looping(False)
    assert model.encoder_layers == [0, 1, 2, 3, 4] and model.decoder_layers == [5, 6, 7, 8, 9, 10]
    assert [b.layer_idx for b in model.blocks if b.parallel] == [8, 9, 10]
    assert cfg.train.loop_after == 0.35


def test_record_caseops_optimizer_quant_and_eval():
    cfg = preset("record-caseops")
    o, t, q, e = cfg.optim, cfg.train, cfg.quant, cfg.eval
    assert (o.matrix_lr, o.muon_momentum_start, o.muon_momentum) == (0.026, 0.92, 0.97)
    assert o.muon_momentum_warmup_steps == 1500
    assert (o.muon_ns_coeffs, o.muon_row_norm, o.muon_wd) == ("polar_express", True, 0.095)
    assert (o.tied_embed_lr, o.embed_wd, o.scalar_lr, o.scalar_wd) == (0.03, 0.085, 0.02, 0.02)
    assert (o.adam_beta1, o.adam_beta2, o.grad_clip_norm, o.lr_warmup_steps) == (0.9, 0.99, 0.3, 0)
    assert (o.warmdown_frac, o.min_lr_scale, o.wd_taper_start) == (0.85, 0.1, 0.0)
    assert (t.seq_len, t.batch_tokens, t.ema_decay, t.qat_threshold) == (2048, 786_432, 0.9965, 0.0)
    assert (q.method, q.lqer_rank, q.codec) == ("gptq", 4, "brotli")
    assert [(q.bits_of(g), q.sdclip_k_of(g)) for g in ("embed", "attn", "mlp", "other")] == [
        (7, 14.0),
        (6, 13.0),
        (6, 11.5),
        (6, 12.85),
    ]
    assert (q.calib_seqs, q.calib_seq_len, q.calib_batch) == (64, 2048, 8)
    assert (e.ttt, e.phased.prefix_docs, e.phased.phases, e.lora.rank, e.lora.alpha) == ("phased", 2500, 3, 80, 144.0)
    assert (e.lora.lr, e.lora.beta2, e.lora.weight_decay, e.lora.chunk_tokens) == (1e-4, 0.99, 0.5, 48)
    assert (e.phased.lr, e.phased.momentum, e.lora.batch_docs) == (1e-3, 0.9, 64)


def test_record_1_11_uses_the_march_switches():
    cfg = preset("record-1.11")
    assert (cfg.model.ve_layers, cfg.model.ve_dim) == ((9, 10), 128)
    assert (cfg.optim.muon_wd, cfg.optim.embed_wd, cfg.optim.scalar_wd) == (0.04, 0.04, 0.04)
    assert cfg.train.qat_threshold == 0.15
    q = cfg.quant
    assert (q.method, q.bits_of("attn"), q.bits_of("mlp"), q.bits_of("embed"), q.codec) == ("gptq", 6, 6, 8, "lzma")
    assert (q.calib_seqs, q.calib_seq_len, q.calib_batch, cfg.eval.stride) == (64, 2048, 8, 64)
    model = meta_model("record-1.11")
    assert "ve_emb.weight" in dict(model.named_parameters()) and model.ve_layers == (9, 10)


# ---------------------------------------------------------------------------------------------------------------------
# Ids from the tokenizer


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:160], dev_sample[:10])


def test_vocab_size_and_bos_id_come_from_the_tokenizer(dataset):
    _, tok_dir = dataset
    tok = load_tokenizer(tok_dir)
    cfg = preset("smoke").override({"model.bos_id": 5})
    got = bind_tokenizer(cfg, tok)
    assert (got.model.vocab_size, got.model.bos_id) == (260, 1)  # bytes260: pad 0, bos 1
    kept = bind_tokenizer(cfg.override({"model.vocab_size": 300}), tok, keep={"model.vocab_size", "model.bos_id"})
    assert (kept.model.vocab_size, kept.model.bos_id) == (300, 5)  # given on the command line: left for the check


def test_a_smear_gate_with_the_wrong_bos_id_is_refused(dataset, capsys):
    data, tok = dataset
    cfg = preset("smoke").override({"model.vocab_size": 260, "model.smear_gate": True, "model.bos_id": 2})
    with pytest.raises(ConfigError, match=r"model\.bos_id = 2, but the tokenizer's BOS id is 1"):
        load_inputs(cfg, data, tok, budget_limit=16_000_000)
    load_inputs(cfg.override({"model.bos_id": 1}), data, tok, budget_limit=16_000_000)
    load_inputs(cfg.override({"model.smear_gate": False}), data, tok, budget_limit=16_000_000)  # bos unused
    argv = ["--data", str(data), "--tokenizer", str(tok), "--preset", "smoke", "--model.smear_gate", "true"]
    assert main([*argv, "--model.bos_id", "2", "--no-progress"]) == 2
    assert "model.bos_id = 2" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "tokenizer_bytes"), [("record-1.11", 2_164), ("record-caseops", 22_061)])
def test_record_presets_pass_the_pretraining_budget_check(name, tokenizer_bytes):
    """The records fit 16,000,000 bytes with these configs, so the Gaussian estimate must not refuse them before
    training (tokenizer bytes: our sp1024 and sp8192 artifacts)."""
    from pgolf_model.export import estimate

    estimate.check(preset(name), tokenizer_bytes)
