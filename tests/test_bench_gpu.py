"""bench/gpu.py at tiny shapes on CPU (every part of it that does not need CUDA), and its reading of the official
script's log through a stand-in that prints the official log format."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from model_data import one_thread  # noqa: F401 (autouse fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    import gpu as bench  # bench/gpu.py
    from record_switches import VARIANTS
finally:
    sys.path.pop(0)


def fake_official(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "train_gpt.py"
    script.write_text(textwrap.dedent(body))
    return script


@pytest.mark.slow
def test_tiny_run_measures_every_part_and_checks_the_compiled_loss(tmp_path, capsys):
    # The eager backend: Dynamo's capture (fullgraph: a graph break fails the run) without code generation.
    out = tmp_path / "gpu.json"
    argv = ["--tiny", "--backend", "eager", "--steps", "1", "--docs", "3", "--switch-steps", "1"]
    assert bench.main([*argv, "--switch-rounds", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [p["preset"] for p in result["presets"]] == list(bench.PRESETS)
    for p in result["presets"]:
        assert p["check"] and p["tokens_per_step"] == 128 and p["tokens_per_s"] > 0
        assert p["compiled_loss"] == pytest.approx(p["eager_loss"], rel=1e-4)
    assert result["muon"]["matrices"] == 66 and result["muon"]["speedup"] > 0
    assert set(result["switches"]) == set(VARIANTS) and result["switches"]["off"] == 1.0
    assert result["ttt"]["docs"] == 3 and result["ttt"]["mode"] == "phased" and result["ttt"]["seconds"] > 0
    assert result["checks_ok"] and not result["errors"]
    table = capsys.readouterr().out
    assert "record-caseops" in table and "TTT (phased) on 3 documents" in table


def test_official_step_time_is_read_from_its_log_and_it_is_stopped(tmp_path):
    script = fake_official(
        tmp_path,
        """
        import os, time
        n = int(os.environ["ITERATIONS"])
        assert os.environ["VAL_LOSS_EVERY"] == "0" and os.environ["DATA_PATH"] == "DATA"
        print("warmup_step:20/20")
        print(f"step:1/{n} train_loss:6.9 train_time:50ms step_avg:50.00ms")
        print(f"step:{n}/{n} train_loss:4.2 train_time:1234ms step_avg:41.13ms")
        time.sleep(60)  # its final evaluation: the bench must not wait for it
        """,
    )
    got = bench.run_official(str(script), "DATA", "TOK", steps=30, timeout_s=30)
    assert got["step_ms"] == 41.13 and got["tokens_per_s"] == pytest.approx(524_288 / 0.04113)


def test_official_without_its_step_line_is_an_error_with_its_output(tmp_path):
    script = fake_official(tmp_path, 'raise SystemExit("CUDA is required")\n')
    with pytest.raises(RuntimeError, match=r"(?s)no .step:5/5 ... step_avg. line.*CUDA is required"):
        bench.run_official(str(script), "DATA", "TOK", steps=5, timeout_s=30)


def test_official_needs_its_data(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--official", "train_gpt.py"])
    assert "--official needs --official-data and --official-tokenizer" in capsys.readouterr().err
