"""The 1.0611 record's details (skip gates, lane-0 skip, orthogonal init, int8 gates, SDClip's std) and the XSA
variants (chosen blocks; attention only in chosen blocks): each against a computation written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_record_switches import BASE, build

from pgolf_model.config import ConfigError, ModelConfig, QuantConfig
from pgolf_model.evaluation.lora import DocLoRA
from pgolf_model.export.estimate import weights_estimate
from pgolf_model.export.ptq import GroupRule, quantize_state, tensor_groups
from pgolf_model.model import GPT, count_parameters, rms_norm
from pgolf_model.quant import QuantizedState, qmax, row_scales


def perturb(model: GPT, seed: int = 1) -> GPT:
    """Random values for every tensor, so zero-initialized projections and gates all contribute."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p + 0.2 * torch.randn(p.shape, generator=g))
    return model


def tokens(seed: int = 0, shape=(2, 16)) -> torch.Tensor:
    return torch.randint(0, BASE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def reference_hidden(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The U-Net as the 1.0611 record's _forward_hidden walks it: encoder outputs pushed on a stack, each decoder
    position pops one; a gated skip is ``sig * x + (1 - sig) * w * skip``; at the first lane block the stream is
    split first and, with ``lane0_skip``, the skip joins lane 0 only."""
    cfg = model.cfg
    x0 = model.embed(idx)
    x, stack = x0, []
    for i in model.encoder_layers:
        x = model.blocks[i](x, x0)
        stack.append(x)
    lanes = None
    for j, i in enumerate(model.decoder_layers + model.lane_layers):
        lane_block = model.blocks[i].lanes is not None
        if lane_block and lanes is None and cfg.lane0_skip:
            lanes = [x, x]
        target = lanes[0] if lanes is not None else x
        if stack:
            skip = model.skip_weights[j] * stack.pop()
            if model.skip_gates is not None:
                sig = 1 / (1 + torch.exp(-model.skip_gates[j]))
                target = sig * target + (1 - sig) * skip
            else:
                target = target + skip
        if lanes is not None:
            lanes[0] = target
        else:
            x = target
        if lane_block:
            if lanes is None:
                lanes = [x, x]
            lanes = list(model.blocks[i].forward_lanes(lanes[0], lanes[1], x0, None))
        else:
            x = model.blocks[i](x, x0)
    return rms_norm(x if lanes is None else 0.5 * (lanes[0] + lanes[1]))


@pytest.mark.parametrize(
    "switches",
    [
        dict(),
        dict(skip_gates=True),
        dict(parallel_from=2),
        dict(parallel_from=2, lane0_skip=True),
        dict(parallel_from=2, lane0_skip=True, skip_gates=True),
        dict(parallel_from=3, lane0_skip=True, skip_gates=True, num_loops=1, loop_start=1, loop_end=1),
    ],
)
def test_skips_and_lanes_match_the_records_walk(switches):
    model = perturb(build(**switches))
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(idx), reference_hidden(model, idx))


def test_skip_gates_start_at_one_half_and_lane0_skip_changes_the_function():
    model = build(skip_gates=True)
    assert model.skip_gates.shape == model.skip_weights.shape and not model.skip_gates.any()
    both = perturb(build(parallel_from=2))
    lane0 = GPT(ModelConfig(**BASE, parallel_from=2, lane0_skip=True))
    lane0.load_state_dict(both.state_dict())
    with torch.no_grad():
        assert not torch.allclose(both.hidden(tokens()), lane0.hidden(tokens()))


def test_orthogonal_init_of_q_k_v_and_mlp_up():
    model = build(ortho_init=True)
    for block in model.blocks:
        for w in (block.attn.c_q.weight, block.attn.c_k.weight, block.attn.c_v.weight, block.mlp.fc.weight):
            small = min(w.shape)
            gram = w @ w.T if w.shape[0] == small else w.T @ w
            torch.testing.assert_close(gram, torch.eye(small), atol=1e-5, rtol=0)
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()
    uniform = build().blocks[0].attn.c_q.weight
    assert not torch.allclose(uniform @ uniform.T, torch.eye(uniform.shape[0]), atol=0.1)


def test_record_caseops_parameter_count_with_the_fidelity_switches():
    from pgolf_model.presets import preset

    cfg = preset("record-caseops")
    assert cfg.model.skip_gates and cfg.model.lane0_skip and cfg.model.ortho_init
    # The 4,096 gates are the record's 8 skips x 512 channels; test_presets has the count against the record's log.
    assert count_parameters(cfg.model) - count_parameters(cfg.override({"model.skip_gates": False}).model) == 8 * 512


# -- XSA on chosen blocks ------------------------------------------------------------------------------------------


def xsa_blocks(model: GPT) -> list[int]:
    return [i for i, b in enumerate(model.blocks) if b.attn is not None and b.attn.xsa]


def test_xsa_block_choices():
    assert xsa_blocks(build(xsa=True)) == [0, 1, 2, 3]
    assert xsa_blocks(build(xsa_last=3)) == [1, 2, 3]
    assert xsa_blocks(build(xsa_last=4)) == [0, 1, 2, 3]
    assert xsa_blocks(build(xsa_layers=(0, 2))) == [0, 2]
    assert xsa_blocks(build()) == []
    last = perturb(build(xsa_last=2))
    listed = GPT(ModelConfig(**BASE, xsa_layers=(2, 3)))
    listed.load_state_dict(last.state_dict())
    every = GPT(ModelConfig(**BASE, xsa=True))
    every.load_state_dict(last.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(last.logits(tokens()), listed.logits(tokens()))
        assert not torch.allclose(last.logits(tokens()), every.logits(tokens()))


def test_xsa_only_on_the_chosen_blocks_outputs():
    """On an XSA block each head's output is orthogonal to its own value; elsewhere it is not."""
    model = perturb(build(xsa_layers=(1,)))
    seen = {}
    for i, block in enumerate(model.blocks):
        block.attn.proj.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0]))
        block.attn.c_v.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(("v", i), out))
    with torch.no_grad():
        model.logits(tokens())
    for i in range(4):
        y = seen[i].view(2, 16, 4, 8)
        v = seen[("v", i)].view(2, 16, 2, 8).repeat_interleave(2, dim=2)
        along = (y * torch.nn.functional.normalize(v, dim=-1)).sum(-1)  # the component along the own value
        assert (along.abs().max() < 1e-5) == (i == 1)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (dict(xsa=True, xsa_last=2), "xsa_last"),
        (dict(xsa_last=2, xsa_layers=(1,)), "xsa_layers"),
        (dict(xsa_last=5), "xsa_last"),
        (dict(xsa_layers=(4,)), "xsa_layers"),
        (dict(xsa_layers=(1, 1)), "xsa_layers"),
        (dict(attn_layers=(9,)), "attn_layers"),
        (dict(attn_layers=(2, 3), ve_layers=(1,)), "attn_layers"),
        (dict(attn_layers=(2,), parallel_from=3), "attn_layers"),
    ],
)
def test_bad_xsa_and_attention_choices_are_rejected(bad, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**BASE, **bad)


# -- attention only in chosen blocks -------------------------------------------------------------------------------


def test_attention_free_blocks_hold_the_attentions_parameters_in_their_mlp():
    cfg = ModelConfig(**BASE, attn_layers=(2, 3))
    model = GPT(cfg)
    assert [b.attn is None for b in model.blocks] == [True, True, False, False]
    d, kv = 32, 2 * 8
    attn_matrices = 2 * d * d + 2 * d * kv
    hidden = model.blocks[0].mlp.fc.weight.shape[0]
    assert hidden == 2 * d + d + kv and 2 * d * (hidden - 2 * d) == attn_matrices
    # Equal matrix parameters; only the attention's small tensors go: attn_scale (d) and q_gain (heads).
    assert count_parameters(ModelConfig(**BASE)) - count_parameters(cfg) == 2 * (d + 4)
    matrices = [sum(p.numel() for p in GPT(c).parameters() if p.ndim == 2) for c in (ModelConfig(**BASE), cfg)]
    assert matrices[0] == matrices[1]


def test_an_attention_free_block_is_its_mlp_residual():
    model = perturb(build(attn_layers=(1, 2, 3)))
    block, idx = model.blocks[0], tokens()
    with torch.no_grad():
        x0 = model.embed(idx)
        x = block.resid_mix[0] * x0 + block.resid_mix[1] * x0
        expected = x + block.mlp_scale * block.mlp(rms_norm(x))
        torch.testing.assert_close(block(x0, x0), expected)
        loss = model(idx, tokens(1))
    assert torch.isfinite(loss)


def test_lora_ttt_adapts_only_the_mlp_of_an_attention_free_block():
    model = build(attn_layers=(2, 3))
    lora = DocLoRA(model, 2, 2, 4.0, ("q", "v", "mlp"))
    assert [sorted(slot) for slot in lora.slots] == [["mlp"], ["mlp"], ["mlp", "q", "v"], ["mlp", "q", "v"]]
    with torch.no_grad():
        assert torch.isfinite(lora.view.logits(tokens())).all()


# -- quantization details ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("correction", [0, 1])
def test_sdclip_std_correction(correction):
    w = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    k, bits = 12.85, 6
    rows = w.double().numpy()
    std = np.sqrt(((rows - rows.mean(1, keepdims=True)) ** 2).sum(1) / (rows.shape[1] - correction))
    expected = torch.tensor(k * std / qmax(bits)).half()
    assert torch.equal(row_scales(w, bits, sdclip_k=k, sdclip_correction=correction), expected)
    with pytest.raises(ConfigError, match="sdclip_correction"):
        QuantConfig(sdclip_correction=2)


def test_attention_gate_stored_int8_per_row():
    model = perturb(build(attn_gate_width=12))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    groups = tensor_groups(model)
    rules = {g: GroupRule(8) for g in ("embed", "attn", "mlp", "other")}
    cfg = QuantConfig(keep_float_max_numel=256, gate_int8=True)
    qs = QuantizedState.from_bytes(quantize_state(state, groups, rules, cfg).to_bytes())
    out = qs.dequantize()
    for i in range(4):
        name = f"blocks.{i}.attn.gate"
        entry, w = qs.entries[name], state[name]
        assert (entry["format"], entry["bits"], entry["q"].dtype) == ("int", 8, np.int8)
        scale = (w.abs().amax(dim=1) / 127).half().float()[:, None]  # the record's _quantize_gate_int8_row
        torch.testing.assert_close(out[name], torch.clamp(torch.round(w / scale), -127, 127) * scale)
    plain = quantize_state(state, groups, rules, QuantConfig(keep_float_max_numel=256))
    assert plain.entries["blocks.0.attn.gate"]["format"] == "float16"
    assert len(plain.to_bytes()) - len(qs.to_bytes()) > 4 * (2 * 48 - 48 - 2 * 4) - 200  # header grows a little


def test_the_estimate_counts_an_int8_gate():
    from pgolf_model.presets import preset

    cfg = preset("record-caseops")
    on, off = (weights_estimate(cfg.override({"quant.gate_int8": v})) for v in (True, False))
    m = cfg.model
    gates = m.num_layers * m.num_heads * m.attn_gate_width
    # float16 values (2 bytes each) become int8 ones (1 byte each) and a float16 scale per row: at most that is
    # saved; the header, which now names their width, grows a little.
    assert gates / 2 < off - on <= gates - 2 * m.num_layers * m.num_heads
