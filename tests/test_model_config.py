"""Config: presets, validation errors naming field and value, CLI overrides and help, JSON round trip."""

from __future__ import annotations

import argparse
import json
from typing import get_args

import numpy as np
import pytest

from pgolf_data.shards import TOKEN_DTYPE
from pgolf_model.cli import add_config_arguments, config_from_args, settings
from pgolf_model.config import VOCAB_LIMIT, Codec, Config, ConfigError, ModelConfig, TrainConfig
from pgolf_model.model import count_parameters
from pgolf_model.presets import PRESETS, preset


def parse(argv: list[str]) -> tuple[Config, dict]:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_baseline_has_the_official_parameter_count():
    # records/track_10min_16mb/2026-03-17_NaiveBaseline/train.log: model_params:17059912.
    assert count_parameters(preset("baseline").model) == 17_059_912


def test_the_vocab_limit_is_what_a_shard_id_can_hold():
    # config.py imports only the standard library (it is counted code), so it keeps the number as a literal.
    assert np.iinfo(TOKEN_DTYPE).max + 1 == VOCAB_LIMIT
    ModelConfig(vocab_size=VOCAB_LIMIT)
    with pytest.raises(ConfigError, match=f"vocab_size = {VOCAB_LIMIT + 1}"):
        ModelConfig(vocab_size=VOCAB_LIMIT + 1)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = preset(name)
    assert cfg.preset == name
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # JSON lists come back as tuples


def test_cli_overrides_apply_on_top_of_the_preset():
    cfg, given = parse(
        [
            "--preset",
            "tiny",
            "--model.num_layers",
            "6",
            "--max-minutes",
            "2.5",
            "--compile",
            "--train.shuffle",
            "false",
            "--quant.codec",
            "best",
        ]
    )
    assert cfg.model.num_layers == 6 and cfg.model.model_dim == preset("tiny").model.model_dim
    assert cfg.train.max_minutes == 2.5 and cfg.train.compile is True and cfg.train.shuffle is False
    assert cfg.quant.codec == "best"
    assert set(given) == {"model.num_layers", "train.max_minutes", "train.compile", "train.shuffle", "quant.codec"}


def test_help_lists_every_setting_with_its_meaning():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    text = " ".join(parser.format_help().split())
    keys = [key for key, *_ in settings()]
    assert "eval.phased.lr" in keys and "eval.lora.targets" in keys and "model.ve_layers" in keys
    for key, f, *_ in settings():
        assert f"--{key}" in text
        assert " ".join(f.metadata["help"].split()[:3]) in text
    assert "baseline 9, tiny 4, smoke 2" in text
    assert "record-1.11 9,10" in text  # tuples shown as they are written


def test_flags_parse_tuples_literal_choices_and_nested_settings():
    cfg, given = parse(
        ["--preset", "smoke", "--model.ve_layers", "0,1", "--eval.lora.targets", "q,v", "--eval.phased.lr", "0.01"]
    )
    assert cfg.model.ve_layers == (0, 1) and cfg.eval.lora.targets == ("q", "v") and cfg.eval.phased.lr == 0.01
    assert set(given) == {"model.ve_layers", "eval.lora.targets", "eval.phased.lr"}
    assert parse(["--preset", "record-1.11", "--model.ve_layers", ""])[0].model.ve_layers == ()
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    codec = next(a for a in parser._actions if "--quant.codec" in a.option_strings)
    assert tuple(codec.choices) == get_args(Codec)  # the choices come from the Literal type
    with pytest.raises(SystemExit):
        parse(["--quant.codec", "zip"])
    with pytest.raises(ConfigError, match=r"eval\.lora\.targets = \('q', 'w'\): unknown item\(s\) w"):
        parse(["--eval.lora.targets", "q,w"])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model.num_kv_heads": 3}, r"model.num_kv_heads = 3: must divide num_heads = 8"),
        ({"model.model_dim": 500}, r"model.model_dim = 500: must be divisible by num_heads = 8"),
        ({"model.num_layers": 0}, r"model.num_layers = 0: must be a positive integer"),
        ({"model.vocab_size": 70_000}, r"model.vocab_size = 70000"),
        ({"train.device_batch_tokens": 1000}, r"train.device_batch_tokens = 1000: must be a multiple of seq_len"),
        ({"train.batch_tokens": 100_000}, r"train.batch_tokens = 100000: must be a multiple of device_batch"),
        ({"optim.adam_beta2": 1.0}, r"optim.adam_beta2 = 1.0: must be in \[0, 1\)"),
        ({"quant.bits": 9}, r"quant.bits = 9: must be in \[2, 8\]"),
        ({"quant.codec": "zip"}, r"quant.codec = 'zip'"),
        ({"optim.warmdown_frac": 1.5}, r"optim.warmdown_frac = 1.5: must be in \[0, 1\]"),
        ({"optim.min_lr_scale": 1.0}, r"optim.min_lr_scale = 1.0: must be in \[0, 1\)"),
        ({"optim.muon_wd": -0.1}, r"optim.muon_wd = -0.1: must be >= 0"),
        ({"optim.wd_taper_start": 1.0}, r"optim.wd_taper_start = 1.0: must be in \[0, 1\)"),
        ({"train.qat_threshold": 2.0}, r"train.qat_threshold = 2.0: must be in \[0, 1\]"),
        ({"model.ve_layers": (9, 10)}, r"model.ve_layers = \(9, 10\): must be distinct block indices in \[0, 9\)"),
        ({"model.ve_layers": "9"}, r"model.ve_layers = '9': must be a tuple"),
        ({"optim.muon_ns_coeffs": "quintic"}, r"optim.muon_ns_coeffs = 'quintic': must be one of fixed, polar_express"),
        ({"model.layers": 3}, r"unknown config field 'model.layers'"),
        ({"train.seq_len": "64"}, r"train.seq_len = '64': must be positive"),
    ],
)
def test_bad_values_name_the_field_and_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        preset("baseline").override(changes)


def test_unknown_preset_and_unknown_json_keys():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")
    data = preset("smoke").to_dict()
    data["model"]["depth"] = 3
    with pytest.raises(ConfigError, match=r"ckpt: unknown field\(s\) model.depth"):
        Config.from_dict(data, where="ckpt")
    data = preset("smoke").to_dict()
    data["eval"]["lora"]["rank"] = 0
    with pytest.raises(ConfigError, match=r"ckpt: eval.lora.rank = 0: must be positive"):
        Config.from_dict(data, where="ckpt")


def test_grad_accum_follows_world_size():
    t = TrainConfig()
    assert [t.grad_accum(w) for w in (1, 2, 8)] == [8, 4, 1]
    with pytest.raises(ConfigError, match="device_batch_tokens x world size = 65536 x 16"):
        t.grad_accum(16)


def test_head_dim_must_be_even_for_rope():
    with pytest.raises(ConfigError, match="head_dim 3 must be even"):
        ModelConfig(model_dim=12, num_heads=4, num_kv_heads=2)
