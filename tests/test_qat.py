"""Late QAT: the fake-quantized forward pass is the export's dequantized weight, gradients pass straight through,
and the training loop switches it on once the learning-rate scale falls below the threshold."""

from __future__ import annotations

import json

import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)
from quant_model import CPU

from pgolf_model.export import weights as export
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.training import qat
from pgolf_model.training.optim import Schedule, build_optimizers
from pgolf_model.training.trainer import run

# int6 attention (SDClip k 3), int5 MLP at the row-quantile clip: the two clip rules of quant.row_scales.
QUANT = {"quant.attn_bits": 6, "quant.attn_sdclip_k": 3.0, "quant.mlp_bits": 5, "quant.keep_float_max_numel": 1024}


def small(**changes):
    return preset("smoke").override({"model.vocab_size": 260, **QUANT, **changes})


def tokens(seed: int, shape=(4, 64)) -> torch.Tensor:
    return torch.randint(0, 260, shape, generator=torch.Generator().manual_seed(seed))


def block_matrices(model: GPT) -> dict[str, torch.nn.Module]:
    return {f"{n}.weight": m for n, m in model.named_modules() if hasattr(m, "fake_quant")}


def test_qat_trained_weights_fake_quantize_to_the_exported_values():
    cfg = small()
    torch.manual_seed(0)
    model = GPT(cfg.model)
    assert qat.enable(model, cfg.quant) == 2 * 6  # q, k, v, o, fc, proj in each of 2 blocks
    optimizers, schedule = build_optimizers(model, cfg.optim), Schedule(cfg.optim)
    for step in range(5):
        schedule.apply(optimizers, step, 5)
        for opt in optimizers:
            opt.zero_grad()
        x = tokens(step)
        model(x[:, :-1], x[:, 1:]).backward()
        for opt in optimizers:
            opt.step()
    exported = export.export_weights(model, cfg, runtime=CPU).state
    dequantized = exported.dequantize()
    for name, module in block_matrices(model).items():
        fake = module.fake_quant.quantized(module.weight)
        assert torch.equal(fake, dequantized[name]), name
        assert exported.entries[name]["bits"] == module.fake_quant.bits
    bits = {n: exported.entries[n]["bits"] for n in block_matrices(model)}
    assert bits["blocks.0.attn.c_q.weight"] == 6 and bits["blocks.1.mlp.fc.weight"] == 5


def test_the_forward_pass_sees_quantized_weights_and_gradients_pass_straight_through():
    cfg = small()
    torch.manual_seed(1)
    model = GPT(cfg.model)
    with torch.no_grad():  # give the zero-initialized projections weights, so every matrix gets a gradient
        for m in block_matrices(model).values():
            m.weight.add_(0.05 * torch.randn_like(m.weight))
    qat.enable(model, cfg.quant)
    # The reference: the same model with every block matrix replaced by its quantized values, no fake quant.
    rounded = GPT(cfg.model)
    rounded.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, m in block_matrices(rounded).items():
            m.weight.copy_(block_matrices(model)[name].fake_quant.quantized(m.weight))
    x = tokens(7)
    loss = model(x[:, :-1], x[:, 1:])
    ref_loss = rounded(x[:, :-1], x[:, 1:])
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    ref_loss.backward()
    for name, m in block_matrices(model).items():
        ref_grad = block_matrices(rounded)[name].weight.grad
        assert m.weight.grad.abs().sum() > 0, name
        torch.testing.assert_close(m.weight.grad, ref_grad, msg=name)  # d/dw = d/dQ(w): the identity Jacobian


def test_fake_quant_only_in_training_mode_and_disable_restores():
    cfg = small()
    model = GPT(cfg.model)
    x = tokens(3)
    with torch.no_grad():
        for m in block_matrices(model).values():  # zero-initialized projections would hide the blocks
            m.weight.add_(0.05 * torch.randn_like(m.weight))
        plain = model.logits(x)
        qat.enable(model, cfg.quant)
        model.eval()
        torch.testing.assert_close(model.logits(x), plain)  # validation scores the float weights
        model.train()
        assert not torch.allclose(model.logits(x), plain)
        qat.disable(model)
        assert not qat.enabled(model)
        torch.testing.assert_close(model.logits(x), plain)


def test_small_matrices_stay_float_as_in_the_export():
    cfg = small(**{"quant.keep_float_max_numel": 64 * 64})  # the 64 x 64 attention matrices stay float16
    model = GPT(cfg.model)
    assert set(qat.block_rules(model, cfg.quant)) == {f"blocks.{i}.mlp.{m}" for i in (0, 1) for m in ("fc", "proj")}


def test_training_turns_qat_on_below_the_threshold(tmp_path, dev_sample, monkeypatch):
    data, tok = make_dataset(tmp_path / "ds", dev_sample[100:160], dev_sample[:10])
    cfg = small(
        **{
            "train.iterations": 12,
            "train.val_every": 0,
            "train.qat_threshold": 0.5,
            "train.compile_warmup_steps": 2,
            "optim.warmdown_steps": 10,
            "optim.lr_warmup_steps": 0,
        }
    )
    calls = []
    enable = qat.enable
    monkeypatch.setattr(qat, "enable", lambda model, q: calls.append(q) or enable(model, q))
    run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    (event,) = [r for r in records if r["event"] == "qat"]
    # lr scale at step s is (12 - s) / 10 from step 2 on: first below 0.5 at step 8.
    assert event["step"] == 8 and event["lr_scale"] == pytest.approx(0.4) and event["matrices"] == 12
    # Once in the compile warm-up (then switched off again, or step 8 would not have turned it on), once at step 8.
    assert len(calls) == 2
    off_cfg = cfg.override({"train.qat_threshold": 0.0})
    off = run(off_cfg, data=data, tokenizer=tok, out_dir=tmp_path / "off", progress=False)
    assert off["steps"] == 12
    assert not any(json.loads(x)["event"] == "qat" for x in (tmp_path / "off" / "log.jsonl").read_text().splitlines())
