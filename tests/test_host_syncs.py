"""A training step never waits for the device: a counter over every call that does (``Runtime.synchronize``, the
collectives ``runtime.all_reduce_sum`` and the clock's, ``Tensor.item``, ``Tensor.tolist``, ``torch.nonzero``), run
through 24 steps of a document-masked smoke model on the varlen path (FlashAttention's stand-in on CPU), sees none in
the steps, and none after them but at the clock's check points (``clock.Clock.due``) and the logged steps."""

from __future__ import annotations

import collections
import functools
import os
import sys

import pytest
import torch
from model_data import make_dataset, one_thread, sdpa_per_document, synthetic_docs  # noqa: F401 (autouse fixture)

from pgolf_model import attention, runtime
from pgolf_model import model as model_module
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training import clock as clock_module
from pgolf_model.training.trainer import Trainer, run

COUNTED = [
    (Runtime, "synchronize"),
    (runtime, "all_reduce_sum"),
    (clock_module, "_max_over_ranks"),
    (torch.Tensor, "item"),
    (torch.Tensor, "tolist"),
    (torch, "nonzero"),
    (torch.Tensor, "nonzero"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), synthetic_docs(200, 1), synthetic_docs(10, 2))


def test_training_steps_wait_for_the_device_only_at_check_points_and_logs(dataset, tmp_path, monkeypatch):
    phase: list[tuple[str, int] | None] = [None]
    counts: collections.Counter = collections.Counter()

    def counting(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            # Not counted: unfused Adam reading its step counter, a CPU tensor (on CUDA the trainer's Adam is fused,
            # optim.build_optimizers, and reads nothing back).
            if phase[0] is not None and f"torch{os.sep}optim{os.sep}" not in sys._getframe(1).f_code.co_filename:
                counts[(*phase[0], name)] += 1
            return fn(*args, **kwargs)

        return wrapper

    for owner, name in COUNTED:
        monkeypatch.setattr(owner, name, counting(name, getattr(owner, name)))
    monkeypatch.setattr(attention, "VARLEN", counting("varlen", sdpa_per_document))
    monkeypatch.setattr(model_module, "use_varlen", lambda device: True)

    def in_phase(kind: str, method: str, step_of) -> None:
        real = getattr(Trainer, method)

        def wrapped(self, *args, **kwargs):
            phase[0] = (kind, step_of(self))
            try:
                return real(self, *args, **kwargs)
            finally:
                phase[0] = None

        monkeypatch.setattr(Trainer, method, wrapped)

    in_phase("step", "step", lambda t: t.clock.step + 1)  # the step that ends at this count
    in_phase("after", "should_stop", lambda t: t.clock.step)
    in_phase("log", "log_step", lambda t: t.clock.step)

    cfg = preset("smoke").override(
        {
            "model.vocab_size": 260, "model.bos_id": 1, "model.doc_masked": True,
            "train.iterations": 24, "train.log_every": 12, "train.val_every": 0, "train.checkpoint_every": 0,
            "train.clock_every": 10,
        }
    )  # fmt: skip
    data, tok = dataset
    summary = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "run", progress=False)
    assert summary["steps"] == 24

    def calls(kind: str, step: int) -> dict[str, int]:
        return {name: n for (k, s, name), n in counts.items() if (k, s) == (kind, step) and name != "varlen"}

    layers, micro = cfg.model.num_layers, cfg.train.grad_accum(1)
    for step in range(1, 25):
        assert counts[("step", step, "varlen")] == layers * micro, "the varlen path, with the loader's bounds"
        assert calls("step", step) == {}, f"step {step}"
    synced = [step for step in range(1, 25) if calls("after", step)]
    assert synced == [1, 10, 12, 20, 24]  # first step, every clock_every, every log_every, the last
    for step in synced:
        assert calls("after", step) == {"synchronize": 1, "_max_over_ranks": 1, "tolist": 1}
    assert [step for step in range(1, 25) if calls("log", step)] == [12, 24]
