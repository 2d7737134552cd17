"""``python -m pgolf_model.submit``: a records folder from two smoke runs, its ``--check``, the failures ``--check``
must name, the generated ``train_gpt.py`` run with no pgolf importable, and the official log format."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from model_data import byte_tokenizer, encode_stream, make_dataset, one_thread, write_split  # noqa: F401

from pgolf_data.official_export import export_folder
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import HEADER_BYTES, shard_filename, sidecar_name
from pgolf_data.tokenizer import artifact as tok_artifact
from pgolf_data.tokenizer.artifact import from_artifact
from pgolf_model import artifact
from pgolf_model.evaluation.ttt import evaluate_ttt
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.submission import logs, stub
from pgolf_model.submission.check import check_folder
from pgolf_model.submission.legality import Probe, probe_stream
from pgolf_model.submit import main as submit_main
from pgolf_model.training.trainer import run
from pipelines.stats import compare

RT = Runtime(torch.device("cpu"))
SMOKE = {"train.iterations": 20, "train.val_every": 0}


def unique_docs(dev_docs, n: int, k: int = 32) -> list[str]:
    """``n`` distinct non-empty documents, none sharing a fifth of its ``k``-byte substrings with an earlier one (the
    corpora repeat some, and hold templated near-copies, which the leak checks rightly report)."""
    seen: set[bytes] = set()
    out = []
    for doc in dict.fromkeys(d for d in dev_docs if d.strip()):
        raw = doc.encode()
        grams = {raw[i : i + k] for i in range(len(raw) - k + 1)}
        if len(grams & seen) <= 0.2 * len(grams):
            seen |= grams
            out.append(doc)
    return out[:n]


@pytest.fixture(scope="module")
def docs(dev_docs):
    return unique_docs(dev_docs, 400)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, docs):
    return make_dataset(tmp_path_factory.mktemp("submit_data"), docs[40:], docs[:40])


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    data, tok = dataset
    root = tmp_path_factory.mktemp("submit_runs")
    out = []
    for seed in (1, 2):
        cfg = preset("smoke").override({"model.vocab_size": 260, "train.seed": seed, **SMOKE})
        run(cfg, data=data, tokenizer=tok, out_dir=root / f"seed{seed}", progress=False)
        out.append(root / f"seed{seed}")
    return out


def submit(runs, out: Path, *extra: str) -> Path:
    args = [*map(str, runs), "--name", "Smoke Test", "--author", "A", "--github-id", "a", "--out", str(out), *extra]
    assert submit_main(args) == 0
    return out


@pytest.fixture(scope="module")
def folder(runs, tmp_path_factory):
    return submit(runs, tmp_path_factory.mktemp("records") / "smoke", "--compare-to", "9.0")


def failing(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in report.lines:
        if line.status == "FAIL":
            out.setdefault(line.rule, []).append(str(line))
    return out


def test_submitted_smoke_runs_pass_the_check_but_for_the_seed_count(folder, dataset, runs):
    data, _ = dataset
    report = check_folder(folder, data=data, artifacts=[runs[0] / "model.pga"], rt=RT)
    assert set(failing(report)) == {"seeds"}, report.format()
    assert "2 seed(s); a record claim needs at least 3" in failing(report)["seeds"][0]
    passed = {line.rule for line in report.lines if line.status == "PASS"}
    expected = {"files", "bytes", "logs agree", "val not in train", "val near-duplicates in train", "byte accounting"}
    expected.add("significance PR #1902")
    assert expected | {"C1 causal", "C2 normalized", "C3 score before update", "C4 single pass"} <= passed
    clocks = [line for line in report.lines if line.rule.startswith("clock")]
    assert clocks and all(line.status == "CANNOT" and "cannot certify" in line.message for line in clocks)
    (art_bytes,) = [line for line in report.lines if line.rule == "bytes" and line.where == str(runs[0] / "model.pga")]
    code = artifact.read(runs[0] / "model.pga").sizes["code"]
    assert f"the artifact's {code:,}-byte copy of the evaluation code" in art_bytes.message  # counted twice, said so


def test_folder_contents_follow_the_records(folder, runs):
    names = {p.name for p in folder.iterdir()}
    assert {"submission.json", "README.md", "requirements.txt", "train_gpt.py", "tokenizers"} <= names
    assert {"train_seed1.log", "train_seed2.log"} <= names
    meta = json.loads((folder / "submission.json").read_text())
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert meta["seeds"] == [1, 2] and meta["track"] == "10min_16mb"
    assert meta["val_bpb"] == pytest.approx(np.mean([s["artifact_val_bpb"] for s in summaries]), abs=1e-8)
    assert meta["val_bpb_std"] == pytest.approx(np.std([s["artifact_val_bpb"] for s in summaries], ddof=1), abs=1e-8)
    code = (folder / "train_gpt.py").stat().st_size
    assert meta["bytes_code"] == code
    start = json.loads((runs[0] / "log.jsonl").read_text().splitlines()[0])
    assert abs(stub.estimated_bytes(start["config"], "bytes260") - code) < 100  # what budget counts before a run
    assert meta["bytes_total"] == max(s["artifact_bytes"] for s in summaries) + code
    for seed, s in zip((1, 2), summaries):
        facts = logs.parse((folder / f"train_seed{seed}.log").read_text())
        assert facts.score.val_bpb == pytest.approx(s["artifact_val_bpb"], abs=1e-8)
        assert facts.total_bytes == s["artifact_bytes"] + code and facts.code_bytes == code
        assert facts.steps == s["steps"] == SMOKE["train.iterations"]
    readme = (folder / "README.md").read_text()
    assert "`model.num_layers` = `2`" in readme and "Score-first TTT" not in readme
    assert "PR #1902" in readme and "nats/byte" in readme
    code = max(s["artifact_parts"]["code"] for s in summaries)
    assert f"the {code:,} bytes of the `code` part count twice" in readme
    tok_file = folder / "tokenizers" / "bytes260.json"
    assert from_artifact(tok_artifact.to_artifact(byte_tokenizer())).vocab_size == 260 and tok_file.is_file()
    script = (folder / "train_gpt.py").read_bytes()
    assert script.count(b"\n") == 2 and b"exec(C.decompress(B.b85decode(" in script


@pytest.mark.slow
def test_every_generated_file_is_deterministic(folder, runs, tmp_path):
    again = submit(runs, tmp_path / "again", "--compare-to", "9.0")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        assert (again / path.relative_to(folder)).read_bytes() == path.read_bytes(), path.name


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_a_total_over_the_limit_fails_bytes(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    log = bad / "train_seed2.log"
    text = log.read_text()
    total = logs.parse(text).total_bytes
    log.write_text(
        text.replace(f"Total submission size pgolf: {total} bytes", "Total submission size pgolf: 16000001 bytes")
    )
    lines = failing(check_folder(bad, rt=RT))["bytes"]
    assert len(lines) == 1 and "train_seed2.log: total 16,000,001 (limit 16,000,000)" in lines[0]


def test_a_missing_log_fails_files(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    (bad / "train_seed2.log").unlink()
    lines = failing(check_folder(bad, rt=RT))["files"]
    assert lines == [f"FAIL   files: {bad}: seed 2 of submission.json has no log (train_seed2.log)"]


def test_significance_states_both_rules(folder, tmp_path):
    report = check_folder(folder, compare_to="4.0", rt=RT)  # far better than the smoke runs
    rules = {line.rule: line for line in report.lines}
    assert rules["significance README"].status == "FAIL" and rules["significance PR #1902"].status == "FAIL"
    assert "needs < 0.01" in rules["significance README"].message
    c = compare("A", [1.20, 1.21, 1.19], "B", [1.18, 1.181, 1.179])
    assert "PR #1902 rule" in c.verdict and c.verdict.startswith("not significant")  # 0.02 BPB: under the margin
    assert 0 < c.p_candidate_ahead < 0.25 and c.p_candidate_better > 0.01


def test_a_published_reference_is_tested_one_sample():
    from scipy import stats as scipy_stats

    cand = [1.10, 1.101, 1.099]
    c = compare("record", [1.12], "new", cand)
    expected = scipy_stats.ttest_1samp(np.array(cand) * np.log(2), 1.12 * np.log(2), alternative="less").pvalue
    assert c.p_candidate_ahead == pytest.approx(expected)


def test_a_validation_document_in_train_fails(dataset, folder, docs, tmp_path):
    data, _ = dataset
    leaky = Path(shutil.copytree(data, tmp_path / "leaky"))
    tok = byte_tokenizer()
    for p in leaky.rglob("*_train_*"):
        p.unlink()
    write_split(leaky, "train", *encode_stream(tok, [*docs[40:100], docs[7]]))
    lines = failing(check_folder(folder, data=leaky, rt=RT))
    assert list(lines) == ["seeds", "val not in train", "val near-duplicates in train"]
    assert "1 of 40 val documents occur" in lines["val not in train"][0]
    assert "val document 7 is train document 60" in lines["val not in train"][0]


def test_a_sidecar_off_by_one_byte_fails(dataset, folder, tmp_path):
    data, _ = dataset
    bad = Path(shutil.copytree(data, tmp_path / "bad"))
    sidecar = bad / sidecar_name("test", "val", 0)
    raw = bytearray(sidecar.read_bytes())
    tokens = np.frombuffer(bytes((bad / shard_filename("test", "val", 0)).read_bytes()[HEADER_BYTES:]), "<u2")
    position = int(np.flatnonzero(tokens == 1)[3]) + 5  # inside val document 3
    value = np.frombuffer(raw, "<u2", count=1, offset=HEADER_BYTES + 2 * position)[0]
    raw[HEADER_BYTES + 2 * position : HEADER_BYTES + 2 * position + 2] = int(value + 1).to_bytes(2, "little")
    sidecar.write_bytes(bytes(raw))
    lines = failing(check_folder(folder, data=bad, rt=RT))["byte accounting"]
    assert len(lines) == 1 and "1 val document(s)" in lines[0] and "first: document 3" in lines[0]


def test_parser_reads_the_official_lines():
    text = "\n".join(
        [
            "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632",
            "world_size:8 grad_accum_steps:1",
            "step:6900/20000 train_loss:2.0000 train_time:598000ms step_avg:86.6ms",
            "stopping_early: wallclock_cap train_time:600109ms step:6927/20000",
            "DIAGNOSTIC post_ema val_loss:1.9155 val_bpb:1.1344 eval_time:2059ms",
            "GPTQ:collected 67 Hessians in 4.7s",
            "Code size: 101850 bytes",
            "Total submission size int6+lzma: 15863278 bytes",
            "final_int6_roundtrip val_loss:1.9225 val_bpb:1.1386 eval_time:23007ms",
            "final_int6_roundtrip_exact val_loss:1.92248956 val_bpb:1.13860661",
            "4945/20000 val_loss: 2.3539 val_bpb: 1.0756",
            "quantized_ttt_phased val_loss:2.31944212 val_bpb:1.05989454 eval_time:508785ms",
        ]
    )
    f = logs.parse(text)
    assert (f.val_tokens, f.world_size, f.code_bytes, f.total_bytes) == (62021632, 8, 101850, 15863278)
    assert (f.train_ms, f.steps, f.iterations, f.stopped_by_clock) == (600109.0, 4945, 20000, True)
    assert f.hessian_s == 4.7 and not f.calibration_self_generated
    assert f.score == logs.Score("quantized_ttt_phased", 2.31944212, 1.05989454, 508785.0)
    assert f.eval_s == pytest.approx(23.007 + 508.785)  # every counting score's eval; the diagnostic is not one
    roundtrip = logs.parse(text.rsplit("\n", 2)[0])
    assert roundtrip.score.label == "final_int6_roundtrip_exact" and roundtrip.score.val_bpb == 1.13860661


def test_check_reads_a_foreign_folder_as_far_as_its_files_allow(tmp_path):
    (tmp_path / "train_gpt.py").write_text("print('hi')\n")
    (tmp_path / "submission.json").write_text(json.dumps({"seeds": [42], "hardware": "8xH100 80GB SXM"}))
    (tmp_path / "train_seed42.log").write_text(
        "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model\n"
        "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:15500000\n"
        "step:100/20000 train_loss:2.0 train_time:598500ms step_avg:100.0ms\n"
        "GPTQ:collected 67 Hessians in 4.7s\n"
        "Code size: 12 bytes\nTotal submission size int8: 15999000 bytes\n"
        "final_x val_loss:2.0 val_bpb:1.2 eval_time:1000ms\n"
    )
    report = check_folder(tmp_path, rt=RT)
    lines = {line.rule: line for line in report.lines}
    assert lines["bytes"].status == "PASS"
    assert (
        lines["clock train"].status == "FAIL" and "GPTQ Hessians on training data 4.7 s" in lines["clock train"].message
    )
    assert lines["clock eval"].status == "PASS"
    assert lines["legality"].status == "CANNOT" and lines["significance"].status == "CANNOT"
    assert lines["val tokens"].status == "FAIL" and "canonical for fineweb_1024_bpe.model: 62,021,632" in str(
        lines["val tokens"]
    )  # a short val shard, as in PR #1923


def cheating_evaluate(model, tokens, counts, how, **kw):
    """Adapts to the whole stream before scoring it: illegal under C1 and C3."""
    cheat = copy.deepcopy(model)
    opt = torch.optim.SGD(cheat.parameters(), lr=0.5)
    x = torch.from_numpy(tokens[:-1])[None]
    y = torch.from_numpy(tokens[1:])[None]
    for _ in range(3):
        opt.zero_grad()
        cheat(x, y).backward()
        opt.step()
    return evaluate_ttt(cheat, tokens, counts, how.__class__(), **kw)


@pytest.mark.slow
def test_legality_passes_score_first_ttt_and_catches_a_cheat(runs):
    art = runs[0] / "model.pga"
    legal = Probe(art, RT, changes={"eval.ttt": "lora"})
    stream = probe_stream(legal.vocab, legal.bos_id)
    for check in (legal.c1_causal, legal.c2_normalized, legal.c3_score_first, legal.c4_single_pass):
        ok, message = check(stream)
        assert ok, message
    # The latest records' switches (PR #2014 short chunks, PR #1953 no-Q/V, PR #2135 n-gram tilt) keep it legal.
    latest = {
        "eval.ttt": "phased", "eval.lora.short_until": (8,), "eval.lora.short_chunks": (4,),
        "eval.lora.targets": ("k", "o", "mlp"), "eval.tilt.boost": 2.0, "eval.tilt.order": 2,
        "eval.tilt.threshold": 0.1,
    }  # fmt: skip
    latest_probe = Probe(art, RT, changes=latest)
    for check in (latest_probe.c1_causal, latest_probe.c3_score_first, latest_probe.c4_single_pass):
        ok, message = check(stream)
        assert ok, message
    cheat = Probe(art, RT, evaluate=cheating_evaluate, changes={"eval.ttt": "full"})
    assert not cheat.c1_causal(stream)[0]
    ok, message = cheat.c3_score_first(stream)
    assert ok is False and "an update saw it before its score" in message
    ok, message = cheat.c3_exhaustive(stream)
    assert ok is False and "more than 1" in message


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora", "phased"])
def test_c3_is_measured_above_the_exhaustive_vocabulary_limit(runs, mode, monkeypatch):
    """Past ``MAX_C3_RUNS`` ids (a record's 8,192) only the traced update order decides: it passes every score-first
    mode, with steps before the sampled targets to compare, and fails the cheat."""
    from pgolf_model.submission import legality

    monkeypatch.setattr(legality, "MAX_C3_RUNS", 16)
    art = runs[0] / "model.pga"
    legal = Probe(art, RT, changes={"eval.ttt": mode})
    stream = probe_stream(legal.vocab, legal.bos_id)
    ok, message = legal.c3_score_first(stream)
    assert ok is True and "traced over" in message and "possible non-BOS values" not in message, message
    steps = [int(s) for s in message.split("leaves the ")[1].split(" step(s)")[0].split(", ")]
    assert max(steps) > 0, message  # some sampled target was scored after updates that had to be unchanged
    cheat = Probe(art, RT, evaluate=cheating_evaluate, changes={"eval.ttt": mode})
    ok, message = cheat.c3_score_first(stream)
    assert ok is False and "an update saw it before its score" in message


@pytest.mark.slow
def test_generated_train_gpt_runs_without_pgolf_and_evaluate_agrees(tmp_path, sp1024, docs):
    tok = from_artifact(sp1024)
    shards = tmp_path / "shards"
    write_shards(docs[:200], tok, shards, ShardConfig(val_docs=30, workers=1))
    exported = export_folder(shards, "baseline", tmp_path / "official")  # token shards and the .model only
    cfg = preset("smoke").override({"model.vocab_size": 1024, **SMOKE, "eval.stride": 32})
    run(cfg, data=shards, tokenizer=shards, out_dir=tmp_path / "run", progress=False)
    folder = submit([tmp_path / "run"], tmp_path / "records", "--data", str(shards))
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(folder / "train_gpt.py", work / "train_gpt.py")
    # -S: no site processing, so the editable install's .pth hook never runs; the dependencies come from PYTHONPATH.
    env = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": sysconfig.get_paths()["purelib"], "OMP_NUM_THREADS": "1",
        **exported.env, "ITERATIONS": "20", "SEED": "5", "RUN_ID": "ci",
    }  # fmt: skip
    probe = subprocess.run([sys.executable, "-S", "-c", "import pgolf_model"], env=env, cwd=work, capture_output=True)
    assert probe.returncode != 0 and b"No module named 'pgolf_model'" in probe.stderr
    proc = subprocess.run(
        [sys.executable, "-S", "train_gpt.py"], env=env, cwd=work, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = logs.parse(proc.stdout)
    labels = {s.label for s in printed.scores}
    assert labels == {"final_pgolf_sliding_window", "final_pgolf_sliding_window_exact"}  # no sidecars: official only
    art = work / "logs" / "ci" / "model.pga"
    out = subprocess.run(
        [sys.executable, "-m", "pgolf_model.evaluate", str(art), "--data", exported.env["DATA_PATH"], "--json"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["val_bpb_official"] == pytest.approx(printed.score.val_bpb, abs=1e-8)
    assert (work / "logs" / "ci.txt").read_text().endswith(proc.stdout[proc.stdout.index("Code size") :])
    bad = subprocess.run(
        [sys.executable, "-S", "train_gpt.py"], env={**env, "TOKENIZER_PATH": str(folder / "README.md")}, cwd=work,
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "is not the tokenizer this script was made for" in bad.stderr
