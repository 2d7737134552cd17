"""Export of trained weights: the default is the baseline RTN path byte for byte, the allocation fits a tight budget
for real, GPTQ + LQER round trip, and the training entry point prints the plan and writes an artifact that fits."""

from __future__ import annotations

import json

import pytest
from model_data import (
    make_dataset,
    one_thread,  # noqa: F401 (autouse fixture)
)
from quant_model import CPU, train_small

from pgolf_data.compress import compress
from pgolf_model import artifact
from pgolf_model.config import ConfigError
from pgolf_model.export import weights as export
from pgolf_model.export.ptq import GroupRule
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState
from pgolf_model.training.trainer import run


@pytest.fixture(scope="module")
def trained(dev_docs):
    return train_small(dev_docs, steps=150)


def quant(trained, **changes):
    return trained.cfg.override({"quant.calib_seqs": 16, "quant.calib_batch": 16, **changes})


def test_default_export_is_the_baseline_round_to_nearest(trained):
    out = export.export_weights(trained.model, trained.cfg, runtime=CPU)
    baseline = QuantizedState.quantize(trained.model.state_dict(), trained.cfg.quant).to_bytes()
    assert out.weights == baseline and out.compressed == compress(baseline, ("zstd",))
    assert out.seconds.keys() == {"quantize"}  # no calibration without GPTQ or allocation
    assert [(r.group, r.bits, r.cost) for r in out.plan] == [("embed", 8, None), ("attn", 8, None), ("mlp", 8, None)]
    assert sum(r.params for r in out.plan) == sum(e["q"].size for e in out.state.entries.values() if "q" in e)


def test_allocation_fits_a_tight_budget(trained):
    full = export.export_weights(trained.model, quant(trained), runtime=CPU)
    narrow = export.export_weights(trained.model, quant(trained, **{"quant.bits": 5}), runtime=CPU)
    budget = (len(full.compressed[1]) + len(narrow.compressed[1])) // 2
    out = export.export_weights(
        trained.model, quant(trained, **{"quant.allocate": True}), runtime=CPU, weights_budget=budget
    )
    assert len(out.compressed[1]) <= budget
    bits = {r.group: r.bits for r in out.plan}
    assert min(bits.values()) < 8 and all(5 <= b <= 8 for b in bits.values()), bits
    assert all(r.cost is not None for r in out.plan) and {"calibration", "quantize"} <= out.seconds.keys()
    # What the plan says is what the weights hold.
    held = {e["bits"] for e in out.state.entries.values() if e["format"] == "int"}
    assert held == set(bits.values())
    with pytest.raises(ValueError, match=r"quant\.allocate needs the byte budget"):
        export.export_weights(trained.model, quant(trained, **{"quant.allocate": True}), runtime=CPU)


def test_gptq_with_lqer_round_trips(trained):
    cfg = quant(trained, **{"quant.method": "gptq", "quant.lqer_rank": 4, "quant.bits": 5, "quant.codec": "best"})
    out = export.export_weights(trained.model, cfg, runtime=CPU)
    assert {"calibration", "hessians", "quantize"} <= out.seconds.keys()
    assert sum("lqer" in e for e in out.state.entries.values()) == 3
    back = QuantizedState.from_bytes(artifact.decompress_weights(*out.compressed))
    assert back.to_bytes() == out.weights
    model = type(trained.model)(trained.cfg.model)
    model.load_state_dict(back.dequantize())
    rtn = type(trained.model)(trained.cfg.model)
    rtn.load_state_dict(QuantizedState.quantize(trained.model.state_dict(), cfg.quant).dequantize())
    base = trained.bpb()
    assert trained.bpb(model) - base < trained.bpb(rtn) - base, "GPTQ + LQER int5 should beat RTN int5"


def test_training_entry_point_prints_the_plan_and_fits(dev_sample, tmp_path, capsys):
    data, tok = make_dataset(tmp_path / "ds", dev_sample[100:500], dev_sample[:30])
    changes = {"quant.method": "gptq", "quant.allocate": True, "quant.lqer_rank": 4, "quant.calib_seqs": 8}
    changes["quant.codec"] = "best"
    cfg = preset("smoke").override({"model.vocab_size": 260, "train.iterations": 40, **changes})
    first = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "a", progress=True)
    printed = capsys.readouterr().out
    assert "quantization plan (fit to" in printed and "calib loss +" in printed, printed
    # Squeeze: a limit 25% of the weights below what the all-int8 plan took.
    parts = first["artifact_parts"]
    limit = first["artifact_bytes"] - parts["weights"] // 4
    second = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "b", budget_limit=limit, progress=False)
    assert second["artifact_bytes"] <= limit
    records = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    (plan,) = [r for r in records if r["event"] == "quant"]
    assert min(row["bits"] for row in plan["plan"]) < 8
    art = artifact.read(tmp_path / "b" / "model.pga")
    widths = {e["bits"] for e in QuantizedState.from_bytes(art.weights).entries.values() if e["format"] == "int"}
    assert widths == {row["bits"] for row in plan["plan"]}
    sizes = {codec: len(artifact.compress_weights(art.weights, (codec,))[1]) for codec in artifact.WEIGHT_CODECS}
    assert art.sizes["weights"] == min(sizes.values()) and sizes[art.weights_codec] == art.sizes["weights"]
    assert abs(second["artifact_val_bpb"] - second["val_bpb"]) < 0.1


def test_group_rules_from_the_config():
    cfg = preset("smoke").override(
        {"quant.bits": 6, "quant.embed_bits": 7, "quant.sdclip_k": 12.0, "quant.mlp_sdclip_k": 11.5}
    )
    rules = export.rules_from_config(cfg)
    assert rules["embed"] == GroupRule(7, 12.0) and rules["mlp"] == GroupRule(6, 11.5)
    assert rules["attn"] == rules["other"] == GroupRule(6, 12.0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("quant.method", "awq", "quant.method = 'awq': must be one of rtn, gptq"),
        ("quant.attn_bits", 9, r"quant.attn_bits = 9: must be 0 \(= quant.bits\) or in \[2, 8\]"),
        ("quant.mlp_sdclip_k", -1.0, r"quant.mlp_sdclip_k = -1.0: must be >= 0"),
        ("quant.calib_seqs", 0, "quant.calib_seqs = 0: must be positive"),
        ("quant.lqer_rank", -2, r"quant.lqer_rank = -2: must be >= 0"),
    ],
)
def test_bad_quant_settings_are_config_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        preset("smoke").override({field: value})
