"""The compiled training step: one full graph per training state, all of them compiled by the warm-up before the
clock starts, so neither depth recurrence nor late QAT switching on mid-run recompiles anything.

aot_eager runs the same Dynamo capture, guards and autograd graphs as inductor without its C++ code generation
(minutes on a shared CPU); graph breaks and recompilations are Dynamo's, so they show the same under both.
"""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)
from torch._dynamo.utils import counters

from pgolf_model import artifact
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training import qat
from pgolf_model.training import trainer as trainer_module
from pgolf_model.training.trainer import RunLog, Trainer, load_inputs, warm_up_states

# Every switch that adds code to the forward pass, with depth recurrence from half-way and late QAT from lr scale 0.5.
SWITCHES = {
    "model.vocab_size": 260, "model.num_layers": 4, "model.bos_id": 1,
    "model.mlp_leaky_slope": 0.5, "model.rope_dims": 8, "model.ln_scale": True, "model.xsa": True,
    "model.attn_gate_width": 8, "model.smear_gate": True, "model.bigram_buckets": 64, "model.bigram_dim": 16,
    "model.ve_layers": (3,), "model.ve_dim": 16, "model.parallel_from": 3,
    "model.num_loops": 1, "model.loop_start": 1, "model.loop_end": 1,
    "optim.warmdown_steps": 6, "optim.lr_warmup_steps": 0,
    "train.iterations": 8, "train.loop_after": 0.5, "train.qat_threshold": 0.5,
    "train.compile": True, "train.compile_warmup_steps": 4, "train.val_every": 0,
    "quant.keep_float_max_numel": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:300], dev_sample[:10])


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    # Dynamo's structured trace (whole graphs, at DEBUG) would reach pytest's log capture: 5x slower compiles.
    monkeypatch.setattr(logging.getLogger("torch.__trace"), "propagate", False)
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def trainer(dataset, tmp_path, **changes) -> Trainer:
    cfg = preset("smoke").override({**SWITCHES, **changes})
    data, tok = dataset
    inputs = load_inputs(cfg, data, tok, artifact.LIMIT)
    return Trainer(cfg, inputs, Runtime(torch.device("cpu")), tmp_path, RunLog(None, console=False))


def states_of_steps(t: Trainer) -> list[tuple[bool, bool]]:
    """Step the run to its end; the (looping, QAT) state each step ran in."""
    seen = []
    while t.clock.step < t.cfg.train.iterations:
        t.step()
        seen.append((t.model.looping, qat.enabled(t.model)))
    return seen


def test_warm_up_states_cover_what_the_run_switches():
    cfg = preset("smoke").override(SWITCHES)
    model = GPT(cfg.model)
    assert warm_up_states(cfg.train, model) == [(False, False), (True, False), (False, True), (True, True)]
    plain = cfg.override({"train.loop_after": 0.0, "train.qat_threshold": 0.0})
    assert warm_up_states(plain.train, model) == [(True, False)]


@pytest.mark.slow
def test_no_graph_break_and_no_recompile_after_warm_up(dataset, tmp_path, aot_eager, monkeypatch):
    t = trainer(dataset, tmp_path)
    before = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
    t.warm_up()
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert t.clock.step == 0 and t.model.looping and not qat.enabled(t.model)
    for k, v in t.model.state_dict().items():  # the warm-up is undone
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 4  # one per (looping, QAT) state; more if Dynamo splits the backward's graph
    with torch._dynamo.config.patch(error_on_recompile=True):
        seen = states_of_steps(t)
    assert set(seen) >= {(False, False), (True, False), (True, True)}, seen  # the run did cross both toggles
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"]


@pytest.mark.slow
def test_a_state_left_out_of_the_warm_up_recompiles_on_the_clock(dataset, tmp_path, aot_eager, monkeypatch):
    """The check above can fail: warming only the looped graph (what the warm-up did before) recompiles at step 0."""
    t = trainer(dataset, tmp_path, **{"train.qat_threshold": 0.0})
    monkeypatch.setattr(trainer_module, "warm_up_states", lambda train, model: [(True, False)])
    t.warm_up()
    with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(torch._dynamo.exc.RecompileError):
        t.step()
