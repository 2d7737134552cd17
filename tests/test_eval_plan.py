"""The evaluation plan: passes and tokens counted independently of doc_rounds, the record's calibration reproduces
its logged time, sorting's ratio over stream order, the warning over 600 s, and the ``evaluate --plan`` command."""

from __future__ import annotations

import numpy as np
import pytest
from test_ttt import BOS, cli_artifact, streams  # noqa: F401 (fixtures)

from pgolf_model import eval_plan, evaluate
from pgolf_model.eval_plan import RECORD_SHAPE, Shape, plan, record_lengths, record_lengths_in_stream_order
from pgolf_model.presets import preset

RECORD = preset("record-caseops")


def brute_force(lengths, bsz, chunk, seq_len, sort: bool):
    """Passes and tokens of one round of ``lengths`` cut from the shortest (or in stream order, one batch at a
    time), each chunk's window as wide as its end, one padding row per batch."""
    order = sorted(lengths) if sort else list(lengths)
    passes = tokens = 0
    for k in range(0, len(order), bsz):
        batch = order[k : k + bsz]
        n = -(-(max(batch) - 1) // chunk)
        passes += n
        tokens += (len(batch) + 1) * sum(min((c + 1) * chunk, seq_len) for c in range(n))
    return passes, tokens


def test_passes_and_tokens_are_the_schedules():
    lengths = [int(x) for x in np.random.default_rng(1).integers(2, 3000, size=500)]
    cfg = RECORD.override({"eval.ttt": "lora"})
    got = plan(cfg, lengths)
    assert (got.passes, got.tokens) == brute_force(lengths, 64, 48, 2048, sort=True)
    stream = plan(cfg.override({"eval.lora.round_docs": 64}), lengths)
    assert (stream.passes, stream.tokens) == brute_force(lengths, 64, 48, 2048, sort=False)
    assert stream.passes > got.passes and stream.tokens > 2 * got.tokens and stream.seconds > got.seconds


def test_the_record_reconstruction_matches_its_logs():
    lengths = record_lengths()
    assert len(lengths) == 50_000 and abs(lengths.sum() / 47_851_520 - 1) < 0.03  # its val_tokens
    # Its own schedule: 782 batches sorted, the issue's ~17.9k chunk passes.
    passes = sum(-(-(int(lengths[k : k + 64].max()) - 1) // 48) for k in range(0, 50_000, 64))
    assert 17_000 < passes < 19_000


def test_the_record_shape_is_the_record_caseops_preset():
    assert Shape.of(RECORD.model, RECORD.eval) == RECORD_SHAPE


def test_a_config_that_cannot_finish_is_warned_about():
    lengths = record_lengths_in_stream_order()
    slow = plan(RECORD.override({"eval.lora.round_docs": 64}), lengths)  # stream order: ~157k passes
    assert slow.passes > 150_000 and slow.seconds > 600
    assert any(line.startswith("WARNING") for line in slow.lines("x"))
    small = plan(RECORD.override({"eval.ttt": "none", "eval.stride": 0}), lengths)
    assert small.seconds < 60 and not any(line.startswith("WARNING") for line in small.lines("x"))


@pytest.mark.parametrize("name", ["record-caseops", "record-latest"])
def test_the_record_presets_plan_within_the_eval_clock(name):
    """On the record's validation documents, with margin for what the plan leaves out (compile warm-up)."""
    got = plan(preset(name), record_lengths_in_stream_order())
    assert got.seconds < 0.9 * eval_plan.CLOCK_SECONDS, got.lines("the record's documents")
    if name == "record-caseops":  # the record's 3 phases would not fit: the reason the preset has 2
        assert plan(RECORD.override({"eval.phased.phases": 3}), record_lengths_in_stream_order()).seconds > 600


def test_evaluate_plan_prints_the_plan_of_the_val_documents(cli_artifact, capsys):  # noqa: F811
    path, data = cli_artifact
    flags = ["--ttt", "lora", "--eval.lora.chunk_tokens", "8", "--eval.lora.batch_docs", "3"]
    assert evaluate.main([str(path), "--plan", "--data", str(data), *flags]) == 0
    out = capsys.readouterr().out
    assert "plan (lora) over 14 documents" in out and "8xH100 estimate" in out
    assert evaluate.main([str(path), "--plan"]) == 0
    assert "over 50,000 documents of the 1.0611 record" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluate.main([str(path)])
    assert "--data is required" in capsys.readouterr().err


def test_the_calibration_reproduces_the_records_logged_time():
    """The rates are derived from the record's own schedule, so that schedule's estimate is its logged mean."""
    lora_rate, sgd_rate = eval_plan._record_seconds_per_flop()
    assert lora_rate > 0 and sgd_rate > 0
    sgd = eval_plan.pass_flops(RECORD_SHAPE, 2048, eval_plan.RECORD_SGD_TOKENS // 2048, "train") / 8 * sgd_rate
    assert sgd == pytest.approx(eval_plan.RECORD_SGD_SECONDS)


def test_time_ttt_scores_the_first_documents_and_counts_their_plan(cli_artifact, streams):  # noqa: F811
    import torch

    from pgolf_model import artifact
    from pgolf_model.runtime import Runtime

    path, _ = cli_artifact
    (a, a_counts), _ = streams
    model, cfg = artifact.build_model(artifact.read(path))
    cfg = cfg.override({"eval.ttt": "lora", "eval.lora.chunk_tokens": 8, "eval.lora.batch_docs": 3})
    got = eval_plan.time_ttt(model, a, a_counts, cfg, bos_id=BOS, runtime=Runtime(torch.device("cpu")), docs=5)
    assert got["docs"] == 5 and got["seconds"] > 0 and 0 < got["val_bpb"] < 20
    assert (got["passes"], got["tokens"]) == brute_force(
        [n for _, n in eval_plan.find_docs(a, BOS)[:5]], 3, 8, 32, True
    )
