"""The tokenizer A/B with an external official-style script (``--trainer external:PATH``): the lines it reads, the
environment it sets, failures, and whole comparisons with the project's own official-style script
(``tests/fixtures/official_style/train_gpt.py``) checked against the files each run wrote."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from model_data import jsonl_corpus
from scipy import stats as scipy_stats

from pgolf_model.submission import logs
from pipelines import external
from pipelines.stats import LN2
from pipelines.tokenizer_ab import ABSettings, main, run_ab

SCRIPT = Path(__file__).parent / "fixtures" / "official_style" / "train_gpt.py"
SP512 = 'name = "sp512"\nkind = "sentencepiece"\nvocab_size = 512\npreprocess = "official"\nlong_docs = "drop"\n'
EXACT = re.compile(r"^final_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, dev_docs) -> dict:
    """A corpus of 300 documents, a 512-piece spec, and one stage cache the tests share (tokenizers, shards)."""
    root = tmp_path_factory.mktemp("external")
    (root / "sp512.toml").write_text(SP512, encoding="utf-8")
    return {
        "corpus": str(jsonl_corpus(root / "docs.jsonl", dev_docs[:300])),
        "sp512": str(root / "sp512.toml"),
        "cache": root / "cache",
    }


def settings(inputs: dict, out: Path, script: Path = SCRIPT, **kwargs) -> ABSettings:
    given = {"specs": (inputs["sp512"],), "seeds": 1, "budget_value": 8, **kwargs}
    return ABSettings(
        corpus=inputs["corpus"], out=out, cache=inputs["cache"], val_docs=30, threads=1,
        trainer=f"external:{script}", **given,
    )  # fmt: skip


# --- what a script printed -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "formula"),
    [
        ("val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./tokenizers/fineweb_1024_bpe.model", "pieces"),
        ("val_bpb:enabled tokenizer_kind=byte", "bytes"),
        ("val_bpb:byte_sidecar:enabled", "sidecar"),
        ("caseops_enabled: True", "sidecar"),
        ("caseops_enabled: False", "pieces"),
        ("val_bpb:enabled", None),
    ],
)  # fmt: skip
def test_the_byte_formula_is_read_from_the_line_a_script_printed(line, formula):
    assert logs.parse(f"seed:1\n{line}\nstep:1/2 train_loss:3.0\n").byte_formula == formula


def test_a_submission_size_in_the_middle_of_a_line_is_read():
    text = "Code size: 80288 bytes\nINT7+zlib model: 15370972 bytes | Total submission: 15441941 bytes\n"
    assert logs.parse(text).total_bytes == 15441941
    assert logs.parse("Total submission size int8+zlib: 15863489 bytes\n").total_bytes == 15863489


def test_the_source_says_the_formula_when_no_line_does():
    silent = logs.parse("final_x val_loss:2.0 val_bpb:1.2\n")
    pieces = "base_bytes_lut, has_leading_space_lut, is_boundary_token_lut = build_sentencepiece_luts(sp)"
    sidecar = pieces + "\nval_bytes = load('fineweb_val_bytes_*.bin') if caseops_enabled else None"
    assert external.byte_formula(silent, pieces, {})[0] == "pieces"
    assert external.byte_formula(silent, sidecar, {"CASEOPS_ENABLED": "1"})[0] == "sidecar"
    assert external.byte_formula(silent, sidecar, {})[0] == "unknown"  # both paths in the source, the switch unset
    printed = logs.parse("val_bpb:byte_sidecar:enabled\n")
    assert external.byte_formula(printed, pieces, {}) == ("sidecar", "printed by the script")


# --- the environment -----------------------------------------------------------------------------------------------


def test_env_items_are_checked():
    assert external.parse_env(["NUM_LAYERS=4", "QK_GAIN_INIT=1.5=x"]) == (
        ("NUM_LAYERS", "4"),
        ("QK_GAIN_INIT", "1.5=x"),
    )
    for bad, message in [
        ("NUM_LAYERS", "expected NAME=VALUE"),
        ("1X=2", "expected NAME=VALUE"),
        ("SEED=3", "sets DATA_PATH, TOKENIZER_PATH, VOCAB_SIZE, SEED, RUN_ID itself"),
        ("DATA_PATH=/x", "sets DATA_PATH"),
    ]:
        with pytest.raises(ValueError, match=message):
            external.parse_env([bad])
    with pytest.raises(ValueError, match="given twice"):
        external.parse_env(["A=1", "A=2"])


def test_the_compute_budget_becomes_the_official_variables():
    assert external.budget_env("steps", 200, {}) == (
        {"ITERATIONS": "200", "MAX_WALLCLOCK_SECONDS": "0"},
        "200 steps per run",
    )
    env, sentence = external.budget_env("tokens", 2500, {"TRAIN_BATCH_TOKENS": "1000"})
    assert env == {"ITERATIONS": "3", "MAX_WALLCLOCK_SECONDS": "0"} and "3,000 training tokens" in sentence
    assert external.budget_env("wall-clock", 1.5, {})[0] == {"MAX_WALLCLOCK_SECONDS": "90"}
    assert external.budget_env("steps", None, {"ITERATIONS": "7"}) == ({}, "the script's own budget (ITERATIONS=7)")
    with pytest.raises(ValueError, match="needs --env TRAIN_BATCH_TOKENS"):
        external.budget_env("tokens", 2500, {})
    with pytest.raises(ValueError, match="--env ITERATIONS and --budget-value both"):
        external.budget_env("steps", 10, {"ITERATIONS": "7"})
    with pytest.raises(ValueError, match="whole number"):
        external.budget_env("steps", 2.5, {})


def test_settings_refuse_what_an_external_script_cannot_use(tmp_path):
    common = {"specs": ("sp1024",), "corpus": "default", "out": tmp_path}
    with pytest.raises(FileNotFoundError, match="no such file"):
        ABSettings(**common, trainer=f"external:{tmp_path / 'missing.py'}")
    with pytest.raises(ValueError, match="expected 'pgolf' or 'external:PATH"):
        ABSettings(**common, trainer="torchrun")
    with pytest.raises(ValueError, match="--budget sizes pgolf's model"):
        ABSettings(**common, trainer=f"external:{SCRIPT}", artifact_budget=10**6)
    with pytest.raises(ValueError, match="an external script brings its own"):
        ABSettings(**common, trainer=f"external:{SCRIPT}", arch="ssd")
    with pytest.raises(ValueError, match="--nproc must be >= 1"):
        ABSettings(**common, trainer=f"external:{SCRIPT}", nproc=0)


def test_the_key_holds_the_script_the_env_and_the_helpers_beside_it(tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text("print('a')\n")
    request = external.ExternalRequest(tmp_path / "export" / "k1", {"SEED": "1", "VOCAB_SIZE": "512"}, "x")
    trainer = external.ExternalTrainer(script)
    key = external.run_inputs(trainer, request)
    assert key == external.run_inputs(external.ExternalTrainer(script, nproc=None), request)
    assert key != external.run_inputs(trainer, external.ExternalRequest(request.export_dir, {"SEED": "2"}, "x"))
    assert key != external.run_inputs(external.ExternalTrainer(script, nproc=2), request)
    (tmp_path / "lossless_caps.py").write_text("X = 1\n")  # a record imports its helpers from beside the script
    assert key != external.run_inputs(trainer, request)
    script.write_text("print('b')\n")
    assert key["script"]["train_gpt.py"] != external.run_inputs(trainer, request)["script"]["train_gpt.py"]


# --- failures ------------------------------------------------------------------------------------------------------


def test_a_failing_script_stops_the_ab_with_its_stderr_tail(inputs, tmp_path, capsys):
    script = tmp_path / "crash" / "train_gpt.py"
    script.parent.mkdir()
    script.write_text(
        "import os, sys\nprint('step:1/8 train_loss:5.0')\n"
        "print('seed is', os.environ['SEED'], file=sys.stderr)\nraise RuntimeError('CUDA out of memory')\n"
    )
    s = settings(inputs, tmp_path / "out", script)
    with pytest.raises(external.ExternalRunError) as e:
        run_ab(s, log=lambda line: None)
    message = str(e.value)
    assert message.startswith("sp512 seed 1337: ") and "exited with status 1" in message
    assert "  | seed is 1337" in message and "  | RuntimeError: CUDA out of memory" in message
    kept = inputs["cache"] / "failed" / "sp512_seed_1337"
    assert f"(its output is kept in {kept})" in message
    assert "CUDA out of memory" in (kept / "stderr.txt").read_text()
    assert not list((inputs["cache"] / "external").glob("*/inputs.json"))  # nothing cached for it

    argv = ["--trainer", f"external:{script}", "--specs", inputs["sp512"], "--corpus", inputs["corpus"], "--out",
            str(tmp_path / "cli"), "--cache", str(inputs["cache"]), "--val-docs", "30", "--seeds", "1",
            "--budget-value", "8", "--threads", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sp512 seed 1337: ") and "CUDA out of memory" in err
    assert all(line.startswith("  | ") for line in err.splitlines() if "Traceback" in line)  # the script's, not ours


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("print('step:8/8 train_loss:4.0')\nprint('Total submission size int8+zlib: 1000 bytes')\n",
         "printed no final val_loss/val_bpb line"),
        ("print('final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan')\n",
         "scored final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan"),
        ("print('diagnostic quantized val_loss:2.0 val_bpb:1.2')\n", "printed no final val_loss/val_bpb line"),
    ],
)  # fmt: skip
def test_a_script_without_a_final_score_is_an_error_not_a_nan(inputs, tmp_path, body, message):
    script = tmp_path / "quiet" / "train_gpt.py"
    script.parent.mkdir()
    script.write_text(body)
    with pytest.raises(external.ExternalRunError, match=re.escape(message)):
        run_ab(settings(inputs, tmp_path / "out", script), log=lambda line: None)
    assert not (tmp_path / "out" / "results.json").exists()


# --- whole comparisons ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_tokenizers_two_seeds_with_an_official_style_script(inputs, tmp_path, monkeypatch):
    s = settings(inputs, tmp_path / "out", specs=("sp1024", inputs["sp512"]), seeds=2, env=("MODEL_DIM=8",))
    # Ctrl-C during the last run: the three finished runs are kept, and the same command runs only the last.
    real_run, calls = subprocess.run, []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(external.subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ab(s, log=lambda line: None)
    monkeypatch.undo()
    assert not (s.out / "report.md").exists()
    results = run_ab(s, log=lambda line: None)
    assert results["settings"]["stages_built"] == {"external": 1}
    md = (s.out / "report.md").read_text()
    values = []
    for spec in results["specs"]:
        export = Path(spec["stages"]["export"]) / "official"
        names = sorted(p.name for p in export.iterdir())
        assert names == [
            f"fineweb_{spec['vocab_size']}_bpe.model",
            "fineweb_train_000000.bin",
            "fineweb_val_000000.bin",
        ]
        for run in spec["runs"]:
            out = Path(run["stage"]) / "run"
            stdout = (out / "stdout.txt").read_text()
            loss, bpb = (float(x) for x in EXACT.findall(stdout)[-1])
            assert (run["val_bpb"], run["val_loss"]) == (bpb, loss)
            # The submission size the script printed is its code and the compressed model it wrote.
            assert run["artifact_bytes"] == SCRIPT.stat().st_size + (out / "final_model.int8.ptz").stat().st_size
            assert run["steps"] == run["iterations"] == 8 and f"seed:{run['seed']}" in stdout
            assert run["env"]["MODEL_DIM"] == "8" and run["env"]["VOCAB_SIZE"] == str(spec["vocab_size"])
            assert f"model_params:{spec['vocab_size'] * 8}" in stdout
            assert (run["byte_formula"], run["byte_formula_from"]) == ("pieces", "printed by the script")
        values.append([r["val_bpb"] for r in spec["runs"]])
        mean, std = float(np.mean(values[-1])), float(np.std(values[-1], ddof=1))
        assert f"| {mean:.4f} ± {std:.4f} (n=2) |" in md and "| `final_int8_zlib_roundtrip_exact` | pieces |" in md
    (c,) = results["comparisons"]
    p = scipy_stats.ttest_ind(values[0], values[1], equal_var=False).pvalue
    assert c["p_two_sided"] == pytest.approx(p, rel=1e-12) and not math.isnan(p)
    delta = float(np.mean(values[1]) - np.mean(values[0]))
    assert f"| sp1024 | sp512 | {delta:+.4f} | {delta * LN2:+.4f} | {p:.3g} |" in md
    assert f"- **sp512 vs sp1024**: {c['verdict']}" in md and "PR #1902 rule" in c["verdict"]
    assert "- `pieces`: the official per-piece formula" in md and "Warning" not in md
    assert json.loads((s.out / "results.json").read_text())["comparisons"] == results["comparisons"]

    # The same command again runs nothing; one more seed runs only the two new runs, two at once.
    again = run_ab(s, log=lambda line: None)
    assert again["settings"]["stages_built"] == {} and again["specs"] == results["specs"]
    more = run_ab(ABSettings(**{**s.__dict__, "seeds": 3, "jobs": 2, "threads": 2}), log=lambda line: None)
    assert more["settings"]["stages_built"] == {"external": 2}
    assert [r["val_bpb"] for r in more["specs"][0]["runs"][:2]] == values[0]


@pytest.mark.slow
def test_torchrun_and_the_records_sidecar_layout(inputs, tmp_path):
    """Two processes under torchrun on a CaseOps tokenizer's folder exported for the records' script: the script
    reads the records' sidecars (CASEOPS_ENABLED=1), and says so."""
    s = settings(inputs, tmp_path / "out", specs=("caseops_sp1024",), nproc=2, export_for="caseops-record")
    (spec,) = run_ab(s, log=lambda line: None)["specs"]
    (run,) = spec["runs"]
    assert run["world_size"] == 2 and run["env"]["CASEOPS_ENABLED"] == "1"
    assert run["command"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert (run["byte_formula"], run["byte_formula_from"]) == ("sidecar", "printed by the script")
    export = Path(spec["stages"]["export"]) / "official"
    assert sorted(p.name for p in export.glob("fineweb_val_bytes_*.bin")) == ["fineweb_val_bytes_000000.bin"]
    md = (s.out / "report.md").read_text()
    assert "- `sidecar`: a byte sidecar (fineweb_val_bytes_*.bin)" in md
