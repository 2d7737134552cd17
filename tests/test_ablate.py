"""The record-stack ablation: switch-off variants against the baseline preset, errors in the switch table, and the
whole ablation at the smoke preset checked against the logs and artifacts it was made from, interrupted and resumed."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch
from model_data import interrupted_at, jsonl_corpus

from pgolf_model.config import Config, ConfigError
from pgolf_model.presets import baseline, preset
from pipelines import ablate
from pipelines.ablate import (
    ALL_ON,
    ALTERNATIVES,
    SWITCHES,
    AblationSettings,
    record_stack,
    run_ablation,
    switch_off,
    variants,
)


def fields_of(cfg) -> dict:
    """Every config field by dotted key, read through the dataclasses (not through ``ablate.flat``)."""
    out = {}

    def walk(part, prefix: str) -> None:
        for name in part.__dataclass_fields__:
            value = getattr(part, name)
            if hasattr(value, "__dataclass_fields__"):  # a nested section (eval.tilt, eval.lora, ...)
                walk(value, f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = value

    for section in ("model", "optim", "train", "quant", "eval"):
        walk(getattr(cfg, section), f"{section}.")
    return out


# --- the switch table -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "smoke"])
def test_record_stack_turns_every_switch_on_and_changes_nothing_else(name):
    base = preset(name)
    before, after, off = fields_of(base), fields_of(record_stack(base)), fields_of(baseline())
    keys = {k for ks in SWITCHES.values() for k in ks}
    assert {k for k in after if after[k] != before[k]} <= keys
    for switch, ks in SWITCHES.items():
        assert any(after[k] != off[k] for k in ks), f"{switch} is not on in record_stack({name})"


@pytest.mark.parametrize("name", list(SWITCHES))
def test_switch_off_takes_the_baseline_values_of_its_keys_only(name):
    all_on = record_stack(preset("tiny"))
    variant = switch_off(all_on, name)
    on, here, base = fields_of(all_on), fields_of(variant), fields_of(baseline())
    assert {k: here[k] for k in SWITCHES[name]} == {k: base[k] for k in SWITCHES[name]}
    assert {k for k in here if here[k] != on[k]} == {k for k in SWITCHES[name] if on[k] != base[k]} != set()
    assert variant.model.num_layers == 4  # the shape stays the preset's, not the baseline's 9 x 512


def test_ema_horizon_follows_the_run_length():
    assert record_stack(preset("tiny"), steps=4930).train.ema_decay == pytest.approx(0.9965, abs=1e-4)
    assert record_stack(preset("tiny"), steps=400).train.ema_decay == pytest.approx(1 - 1 / (400 * 286 / 4930), 1e-3)
    assert record_stack(preset("tiny"), steps=5).train.ema_decay == 0.5  # at least a 2-step average


def test_bad_switches_are_reported_by_name():
    all_on = record_stack(preset("tiny"))
    with pytest.raises(ConfigError, match=r"switch 'typo': unknown config field\(s\) model.nope"):
        switch_off(all_on, "typo", {"typo": ("model.nope",)})
    with pytest.raises(ConfigError, match=r"switch 'softcap': model\.logit_softcap already hold the baseline's values"):
        switch_off(all_on, "softcap", {"softcap": ("model.logit_softcap",)})
    # Turning off only the end of the looped range leaves an impossible recurrence: the config check says so.
    with pytest.raises(ConfigError, match=r"switch 'half_loop' off: model.loop_end = \(1, -1\): need 0 <= loop_start"):
        switch_off(all_on, "half_loop", {"half_loop": ("model.loop_end",)})
    with pytest.raises(ConfigError, match="unknown switch 'nope'; known: leaky_relu, partial_rope"):
        switch_off(all_on, "nope")
    with pytest.raises(ConfigError, match=r"unknown switch\(es\) bogus, zzz; known: leaky_relu"):
        variants(all_on, ["xsa", "zzz", "bogus"])
    assert list(variants(all_on, ["gptq", "xsa"])) == [ALL_ON, "xsa", "gptq"]  # in table order


def test_cli_errors(tmp_path, capsys):
    assert ablate.main(["--out", str(tmp_path), "--only", "nope"]) == 2
    assert "unknown switch(es) nope" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before any stage ran
    assert ablate.main(["--out", str(tmp_path), "--seeds", "0"]) == 2
    assert "seeds must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablate.main(["--steps", "5", "--budget-value", "7"])
    assert ablate.main(["--list", "--preset", "smoke"]) == 0
    assert "model.rope_dims 8 -> 0" in capsys.readouterr().out


def test_table_row_with_several_seeds():
    bpb = [1.5, 1.52, 1.49]
    row = {
        "switch": "xsa", "val_bpb": statistics.mean(bpb), "val_bpb_std": statistics.stdev(bpb), "delta_bpb": 0.01234,
        "val_bpb_before_quant": 1.4, "val_bpb_official": 1.48, "artifact_bytes": 1234.0, "delta_bytes": -56.0,
        "tokens_per_s": 9876.4, "params": 654321,
    }  # fmt: skip
    std = f"{statistics.stdev(bpb):.4f}"
    want = f"| xsa | 1.5033 ± {std} | +0.0123 | 1.4000 | 1.4800 | 1,234 | -56 | 9,876 | 654,321 |"
    assert ablate.table_row(row) == want
    assert " ± " not in ablate.table_row({**row, "val_bpb_std": math.nan})  # one seed
    assert "| 1.4000 | n/a | 1,234 |" in ablate.table_row({**row, "val_bpb_official": None})  # not SentencePiece


# --- the whole ablation ---------------------------------------------------------------------------------------------


def _records(stage: Path) -> list[dict]:
    return [json.loads(line) for line in (stage / "run" / "log.jsonl").read_text().splitlines()]


def _table(md: str) -> dict[str, list[str]]:
    """The main table's cells by row name."""
    lines = md.splitlines()
    first = lines.index(ablate.TABLE_HEAD) + 2  # after the head and the alignment row
    rows = lines[first : lines.index("", first)]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def test_whole_ablation_at_smoke(tmp_path, dev_docs):
    corpus = jsonl_corpus(tmp_path / "docs.jsonl", dev_docs[:150])
    settings = AblationSettings(
        out=tmp_path / "out", corpus=str(corpus), spec="bytes260", preset="smoke", only=("xsa", "gptq"),
        budget_value=12, val_docs=10, threads=1,
    )  # fmt: skip

    # Interrupted during the second training run: the first one is kept.
    interrupted_at(2, run_ablation, settings, log=lambda line: None)
    assert not (settings.out / "ablation.md").exists()
    lines: list[str] = []
    results = run_ablation(settings, log=lines.append)
    assert results["settings"]["stages_built"] == {"train": 2}
    md = (settings.out / "ablation.md").read_text()
    assert json.loads((settings.out / "ablation.json").read_text()) == json.loads(json.dumps(results))
    assert any(line.startswith("| xsa |") for line in lines)  # the table is printed too

    table = _table(md)
    assert list(table) == [ALL_ON, "xsa", "gptq"]
    off = fields_of(baseline())
    switch_keys = {k for ks in SWITCHES.values() for k in ks}
    ref = all_on = None
    for row in results["rows"]:
        (run,) = row["runs"]
        stage = Path(run["stage"])
        records = _records(stage)
        (result,) = [r for r in records if r["event"] == "result"]
        (start,) = [r for r in records if r["event"] == "start"]
        artifact_bytes = (stage / "run" / "model.pga").stat().st_size
        batch = start["config"]["train"]["batch_tokens"]
        # Whole-run throughput from the logged per-interval rates: total tokens over the summed interval times.
        logged = [r for r in records if r["event"] == "train"]
        steps = [0] + [r["step"] for r in logged]
        seconds = sum((b - a) * batch / r["tokens_per_s"] for a, b, r in zip(steps, steps[1:], logged))
        assert steps[-1] == result["steps"] == 12
        tokens_per_s = steps[-1] * batch / seconds
        assert row["tokens_per_s"] == pytest.approx(tokens_per_s, rel=1e-3)
        assert row["val_bpb"] == result["artifact_val_bpb"] and row["artifact_bytes"] == artifact_bytes
        ref = ref or (result["artifact_val_bpb"], artifact_bytes)
        cells = table[row["switch"]]
        assert cells[0] == f"{result['artifact_val_bpb']:.4f}"
        assert cells[1] == f"{result['artifact_val_bpb'] - ref[0]:+.4f}"
        assert cells[2] == f"{result['val_bpb']:.4f}"
        official = result.get("artifact_val_bpb_official")
        assert cells[3] == ("n/a" if official is None else f"{official:.4f}")
        assert cells[4] == f"{artifact_bytes:,}" and cells[5] == f"{artifact_bytes - ref[1]:+,}"
        assert float(cells[6].replace(",", "")) == pytest.approx(tokens_per_s, rel=1e-3)  # the log rounds times
        assert cells[7] == f"{start['params']:,}"
        # Each run trained the configuration its row names: all on, or exactly that switch at the baseline's values.
        trained = fields_of(Config.from_dict(start["config"]))
        if row["switch"] == ALL_ON:
            all_on, stack = trained, fields_of(record_stack(preset("smoke"), 12))
            assert {k: trained[k] for k in switch_keys} == {k: stack[k] for k in switch_keys}
        else:
            keys = SWITCHES[row["switch"]]
            assert {k for k in trained if trained[k] != all_on[k]} == {k for k in keys if all_on[k] != off[k]}
            assert {k: trained[k] for k in keys} == {k: off[k] for k in keys}
    assert re.search(r"\| xsa \| `model.xsa` True → False \|", md)

    # Resumed with nothing left to do: no stage is built again, and the table is the same.
    again = run_ablation(settings, log=lambda line: None)
    assert again["settings"]["stages_built"] == {}
    assert [r["val_bpb"] for r in again["rows"]] == [r["val_bpb"] for r in results["rows"]]


def test_the_two_readings_of_xsa_in_the_last_layers_keep_the_matrix_parameters():
    from pgolf_model.model import GPT

    all_on = record_stack(preset("tiny"))
    rows = variants(all_on, list(ALTERNATIVES))
    assert list(rows) == [ALL_ON, *ALTERNATIVES]
    xsa, attn = rows["xsa_last_half"].model, rows["attention_last_half"].model
    assert (xsa.xsa, xsa.xsa_last, xsa.attn_layers) == (False, 2, ())
    assert attn.xsa and attn.attn_layers == (2, 3)
    with torch.device("meta"):
        models = [GPT(m) for m in (all_on.model, xsa, attn)]
    # Every matrix the blocks hold (the attention gates of the removed attention aside: 2 x 4 heads x 12).
    matrices = [sum(p.numel() for _, p in m.param_groups()["matrix"]) for m in models]
    assert matrices[0] == matrices[1] == matrices[2]
