"""The artifact of a run scored as its config says (sliding windows, score-first TTT): the numbers a submission
reports. A generated ``train_gpt.py`` scores its artifact right after training; ``submit`` scores a run of plain
``python -m pgolf_model.train``, whose summary holds only the trainer's round trip (windows of ``train.seq_len``, no
TTT), when its eval config asks for more (``needs_final_eval``), on the shard folder given. Both write ``eval.json``
into the run directory, which ``runs.load_run`` prefers to the summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pgolf_data.folder import open_folder
from pgolf_data.manifest import write_atomic

from .. import artifact
from ..config import Config
from ..evaluation.byte_counts import val_bytes
from ..evaluation.ttt import evaluate_ttt
from .runs import EVAL_NAME, FinalEval, Run, RunError, load_run


def final_eval(art_path: Path, data: str, rt) -> FinalEval:
    """The artifact scored as its config says: the exact number (pgolf's sidecars) and, for a SentencePiece-based
    tokenizer, the official eval's, as ``pgolf_model.evaluate`` measures them."""
    art = artifact.read(art_path)
    model, cfg = artifact.build_model(art, device=rt.device)
    tok = art.tokenizer()
    folder = open_folder(data)
    folder.bind(art.tokenizer_bytes, f"the tokenizer of {art_path}")
    val = val_bytes(data, tok, exact_sidecars=folder.exact_sidecars)
    how = cfg.eval
    seq_len = how.seq_len or cfg.train.seq_len
    rt.synchronize()
    start = time.perf_counter()
    result = evaluate_ttt(
        model, val.tokens, val.exact, how, seq_len=seq_len, batch_tokens=cfg.train.device_batch_tokens,
        bos_id=tok.bos_id, runtime=rt, official=val.official, official_rule=val.official_rule,
    )  # fmt: skip
    rt.synchronize()
    seconds = time.perf_counter() - start
    official = result.official or (result if result.measure == "official" else None)
    stride = f"stride {how.stride or seq_len}" if how.ttt in ("none", "full") else "per-document chunks"
    if how.ttt != "none":
        tag = f"pgolf_{how.ttt}_ttt"
    else:
        tag = "pgolf_sliding_window" if how.stride and how.stride != seq_len else "pgolf_roundtrip"
    return FinalEval(
        tag,
        (official.loss, official.bpb) if official else None,
        (result.loss, result.bpb) if result.measure == "exact" else None,
        round(seconds, 3),
        result.tokens,
        f"windows of {seq_len} tokens, {stride}, TTT {how.ttt}, {folder.describe()}"
        + (f"; official: {val.official_rule}" if official else ""),
    )


def needs_final_eval(cfg: Config) -> bool:
    """The eval config scores differently from the trainer's round trip (windows of train.seq_len, no TTT)."""
    how = cfg.eval
    seq_len = how.seq_len or cfg.train.seq_len
    return how.ttt != "none" or seq_len != cfg.train.seq_len or bool(how.stride and how.stride != seq_len)


def score_run(run: Run, data: str | Path | None, rt) -> Run:
    """``run`` with its final eval: as it is when it has one or its config asks only for the round trip, else its
    artifact scored on ``data`` (the shard folder with its val split; a run does not record its path), written to
    its ``eval.json``."""
    if (run.directory / EVAL_NAME).is_file() or not needs_final_eval(run.config):
        return run
    if data is None:
        raise RunError(
            f"{run.directory}: its eval config ({run.config.eval.ttt} TTT, stride {run.config.eval.stride}) differs "
            "from the round trip its summary holds: give --data SHARDS (its shard folder) to score its artifact"
        )
    final = final_eval(run.directory / "model.pga", str(data), rt)
    if rt.is_main:
        record = {**final.to_dict(), "scored_by": f"python -m pgolf_model.submit on {rt.device}"}
        write_atomic(run.directory / EVAL_NAME, (json.dumps(record, indent=2) + "\n").encode())
    return load_run(run.directory)
