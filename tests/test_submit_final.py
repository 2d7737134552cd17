"""``submit`` of a plain ``pgolf_model.train`` run whose eval config asks for sliding windows: the folder reports the
artifact scored that way (as ``pgolf_model.evaluate`` scores it), not the trainer's round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from model_data import make_dataset, one_thread  # noqa: F401

from pgolf_model.evaluate import main as evaluate_main
from pgolf_model.presets import preset
from pgolf_model.submission import logs
from pgolf_model.submission.final import needs_final_eval
from pgolf_model.submit import main as submit_main
from pgolf_model.training.trainer import run


@pytest.fixture(scope="module")
def sliding_run(dev_docs, tmp_path_factory):
    docs = list(dict.fromkeys(d for d in dev_docs if d.strip()))[:240]
    root = tmp_path_factory.mktemp("final")
    data, tok = make_dataset(root, docs[40:], docs[:40])
    cfg = preset("smoke").override(
        {"model.vocab_size": 260, "train.iterations": 20, "train.val_every": 0, "eval.stride": 16}
    )
    run(cfg, data=data, tokenizer=tok, out_dir=root / "run", progress=False)
    return root / "run", data


def submit(run_dir: Path, out: Path, *extra: str) -> int:
    args = [str(run_dir), "--name", "Sliding", "--author", "A", "--github-id", "a", "--out", str(out), *extra]
    return submit_main(args)


def test_needs_final_eval_only_when_the_eval_differs_from_the_round_trip():
    smoke = preset("smoke")
    assert not needs_final_eval(smoke)
    assert not needs_final_eval(smoke.override({"eval.stride": smoke.train.seq_len}))
    assert needs_final_eval(smoke.override({"eval.stride": 16}))
    assert needs_final_eval(smoke.override({"eval.ttt": "lora"}))
    assert needs_final_eval(smoke.override({"eval.seq_len": 2 * smoke.train.seq_len}))


def test_a_plain_train_run_is_submitted_with_its_configured_eval(sliding_run, tmp_path, capsys):
    run_dir, data = sliding_run
    run_dir = Path(shutil.copytree(run_dir, tmp_path / "run"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not (run_dir / "eval.json").exists()
    assert submit(run_dir, tmp_path / "records", "--data", str(data)) == 0
    meta = json.loads((tmp_path / "records" / "submission.json").read_text())
    capsys.readouterr()
    assert evaluate_main([str(run_dir / "model.pga"), "--data", str(data), "--json", "--device", "cpu"]) == 0
    truth = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert truth["stride"] == 16
    seed = str(meta["seeds"][0])
    assert meta["seed_results"][seed]["val_bpb"] == pytest.approx(truth["val_bpb"], abs=1e-8)
    assert abs(truth["val_bpb"] - summary["artifact_val_bpb"]) > 1e-6  # the round trip is a different number
    facts = logs.parse((tmp_path / "records" / f"train_seed{seed}.log").read_text())
    assert facts.score.label == "final_pgolf_sliding_window_exact" and facts.score.val_bpb == pytest.approx(
        truth["val_bpb"]
    )
    recorded = json.loads((run_dir / "eval.json").read_text())
    assert recorded["scored_by"].startswith("python -m pgolf_model.submit")
    assert submit(run_dir, tmp_path / "again") == 0  # the kept eval.json: the same folder again
    for path in sorted((tmp_path / "records").rglob("*")):
        if path.is_file():
            assert (tmp_path / "again" / path.relative_to(tmp_path / "records")).read_bytes() == path.read_bytes()


def test_a_run_to_score_without_its_shards_is_refused_by_name(sliding_run, tmp_path, capsys):
    run_dir, _ = sliding_run
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    assert submit(copy, tmp_path / "records") == 2
    err = capsys.readouterr().err
    assert f"{copy}: its eval config (none TTT, stride 16) differs from the round trip" in err
    assert "give --data SHARDS" in err and not (tmp_path / "records").exists()
