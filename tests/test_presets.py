"""The presets against facts their records' logs print (records/track_10min_16mb/<record>/train*.log in the official
repository): parameter counts, the virtual layer order, the quantized matrices; and the ids a run takes from its
tokenizer (``bind_tokenizer``)."""

from __future__ import annotations

import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)

from pgolf_data.tokenizer.artifact import load as load_tokenizer
from pgolf_model.config import ConfigError
from pgolf_model.export.ptq import group_members, tensor_groups
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


def test_parameter_counts_match_the_records_logs():
    # 2026-03-17_NaiveBaseline/train.log: model_params:17059912.
    assert count_parameters(preset("baseline").model) == 17_059_912
    # 2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072/train_seed42.log: model_params:27067484, with the March SmearGate's
    # 512 per-channel gates where ours has 12 weights and a lambda.
    assert count_parameters(preset("record-1.11").model) == 27_067_484 - 512 + 13
    # 2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_seed42.log: model_params:35945671 (its
    # 8 x 512 sigmoid skip gates included: model.skip_gates), with its lane lambdas (2 + 2 x 2) on all 11 blocks
    # where ours are on the 3 lane blocks only: its parallel_post_lambdas / parallel_resid_lambdas of blocks 0-7
    # are allocated but never read.
    assert count_parameters(preset("record-caseops").model) == 35_945_671 - 8 * 6


@pytest.mark.parametrize(
    ("name", "lowbit", "other"),
    [
        # 2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon/README: 64,880,640 ternary parameters, 2,513,744
        # FP8 ones, of which its 8,192-entry vocabulary bias is not ours.
        ("ternary", 64_880_640, 2_513_744 - 8_192),
        # 2026-03-24_106M_Binary_..._Smear/README: 97,320,960 binary, 2,542,200 FP8, of which its vocabulary bias,
        # its cumulative-mean smear and other small tensors (19,712 together) are not ours.
        ("binary", 97_320_960, 2_542_200 - 19_712),
    ],
)
def test_lowbit_presets_match_their_records_counts(name, lowbit, other):
    from pgolf_model.export.ptq import lowbit_matrices

    model = meta_model(name)
    state = model.state_dict()
    assert sum(state[n].numel() for n in lowbit_matrices(model)) == lowbit
    assert count_parameters(preset(name).model) == lowbit + other


def test_the_virtual_layer_order_matches_the_1_0611_log():
    # Its log: "layer_loop:enabled step:2178 frac:0.350 encoder:[0, 1, 2, 3, 4, 5, 3, 4]
    # decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]", with parallel lanes from block 8 (PARALLEL_START_LAYER).
    model = meta_model("record-caseops")
    assert model.encoder_layers == [0, 1, 2, 3, 4, 5, 3, 4]
    assert model.decoder_layers + model.lane_layers == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert model.lane_layers == [8, 9, 10]
    model.set_looping(False)
    assert model.encoder_layers == [0, 1, 2, 3, 4] and model.decoder_layers + model.lane_layers == [5, 6, 7, 8, 9, 10]


def test_the_quantized_matrices_match_the_records_logs():
    # The 1.0611 log's "Quantized weights": gptq (int6) for the six block matrices (c_q, c_k, c_v, attn proj, fc, mlp
    # proj) of each of the 11 blocks, gptq (int7) for tok_emb; "GPTQ:collected 67 Hessians" (66 + the embedding).
    model = meta_model("record-caseops")
    q = preset("record-caseops").quant
    members = group_members(model.state_dict(), tensor_groups(model), q)
    assert {g: len(names) for g, names in members.items()} == {"embed": 1, "attn": 44, "mlp": 22}
    assert (q.bits_of("embed"), q.bits_of("attn"), q.bits_of("mlp"), q.method) == (7, 6, 6, "gptq")
    # The 1.1147 log: "gptq:collected hessians for 68 layers": every linear layer, the block matrices and the
    # BigramHash and value-embedding projections (its embeddings are not GPTQ'd).
    linears = [n for n, m in meta_model("record-1.11").named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 68 and {"bigram.proj", "value_embeds.proj"} <= set(linears)


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


@pytest.mark.parametrize(
    ("name", "tokenizer_bytes"),
    [("record-1.11", 2_164), ("record-caseops", 103_239), ("record-latest", 103_239), ("ternary", 22_061)],
)
def test_record_presets_pass_the_pretraining_budget_check(name, tokenizer_bytes):
    """The records fit 16,000,000 bytes with these configs, so the estimate must not refuse them before training
    (tokenizer bytes: our sp1024 artifact, the 1.0611 record's own CaseOps SP8192 one)."""
    from pgolf_model.export import estimate

    estimate.check(preset(name), tokenizer_bytes)


def test_record_latest_is_record_caseops_with_the_late_levers_only():
    """Every field it changes is one of the levers its docstring cites (PRs #1908, #1923, #1953, #2014, #2135), the
    model keeps the 1.0611 record's shape (+2 AsymLogit caps), and its progressive stages divide the batch."""
    from dataclasses import asdict

    def flat(cfg, prefix=""):
        out = {}
        for k, v in (asdict(cfg) if prefix == "" else cfg).items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    late, base = flat(preset("record-latest")), flat(preset("record-caseops"))
    changed = {k for k in late if late[k] != base[k]} - {"preset"}
    levers = {
        "model.qk_gain_init", "model.asym_softcap", "train.seq_len", "train.seq_stages", "train.seq_stage_ends",
        "train.seq_rewarm_steps", "quant.awq_groups", "quant.calib_seqs", "eval.seq_len", "eval.lora.targets",
        "eval.lora.lr", "eval.lora.batch_docs", "eval.lora.short_until", "eval.lora.short_chunks",
        "eval.phased.phases", "eval.tilt.boost",
    }  # fmt: skip
    assert changed == levers
    assert count_parameters(preset("record-latest").model) == count_parameters(preset("record-caseops").model) + 2
    cfg = preset("record-latest")
    assert all(cfg.train.device_batch_tokens % n == 0 for n in (*cfg.train.seq_stages, cfg.train.seq_len))
    assert cfg.eval.tilt.boost == 2.625 and cfg.eval.lora.targets == ("k", "o", "mlp")
