"""Self-generated calibration: deterministic sampling (rerunning the prefix or through a model's ``decode`` hook),
and Hessians checked against inputs computed by hand on a toy model (a shared input, a layer run twice, the logit
matmul of its ``head_input`` hook), then on the real GPT and SSD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_data import one_thread  # noqa: F401 (autouse fixture)
from torch import nn

from pgolf_model import registry
from pgolf_model.export import calibration
from pgolf_model.export.ptq import tensor_groups
from pgolf_model.presets import preset
from pgolf_model.quant import tensor_format
from pgolf_model.runtime import Runtime


class Toy(nn.Module):
    """emb -> a and b read the same input -> c run twice (a loop) -> hidden; logits = hidden @ emb^T."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.tok_emb = nn.Embedding(11, 6)
        self.a, self.b, self.c = nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def stages(self, idx):
        x = self.tok_emb(idx)
        h1 = torch.tanh(self.a(x) + self.b(x))
        h2 = torch.tanh(self.c(h1))
        return x, h1, h2, torch.tanh(self.c(h2))

    def hidden(self, idx):
        return self.stages(idx)[-1]

    def logits(self, idx):
        return F.linear(self.hidden(idx), self.tok_emb.weight)


class TiedToy(Toy):
    """``Toy`` that names its logit matmul (a tied embedding) with the ``head_input`` hook."""

    def head_input(self, idx):
        return "tok_emb.weight", self.hidden(idx)


class Bigram(nn.Module):
    """Logits from the last token only."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(11, 11, generator=torch.Generator().manual_seed(0)))

    def logits(self, idx):
        return self.table[idx]


class SteppedBigram(Bigram):
    """``Bigram`` with a ``decode`` hook that is fed one token at a time (and counts them)."""

    decoded = 0

    def decode(self, idx, state):
        self.decoded += idx.numel()
        return self.table[idx[:, -1]], (state or 0) + 1


def second_moment(*xs):
    x = torch.cat([t.reshape(-1, t.size(-1)) for t in xs])
    return x.T @ x / x.size(0)


def test_generation_is_deterministic_and_in_range():
    model = Toy()
    a = calibration.generate(model, 5, 9, batch_size=2, seed=3)
    assert a.shape == (5, 9) and a.dtype == torch.int64
    assert int(a.min()) >= 0 and int(a.max()) < 11
    assert torch.equal(a, calibration.generate(model, 5, 9, batch_size=2, seed=3))
    assert not torch.equal(a, calibration.generate(model, 5, 9, batch_size=2, seed=4))
    # The batch size only groups the work; each batch draws from the same seeded generator in turn.
    assert torch.equal(a[:2], calibration.generate(model, 2, 9, batch_size=2, seed=3))
    # One process shares the work with no one: the same stream.
    shared, share = calibration.generate_shared(model, 5, 9, batch_size=2, seed=3, runtime=Runtime(torch.device("cpu")))
    assert torch.equal(shared, a) and torch.equal(share, a)
    # Batches named (the ranks' shares): each from its own generator, seeded from (seed, batch), so any subset of
    # batches, in any order, generates those batches' rows.
    every = calibration.generate(model, 5, 9, batch_size=2, seed=3, batches=[0, 1, 2])
    some = calibration.generate(model, 5, 9, batch_size=2, seed=3, batches=[2, 0])
    assert torch.equal(some, torch.cat((every[4:], every[:2])))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_the_ranks_shares_cover_every_batch_once(world_size):
    model, n, batch = Toy(), 7, 2
    full = calibration.generate(model, n, 5, batch_size=batch, seed=1, batches=[0, 1, 2, 3])
    got = torch.full_like(full, -1)
    for rank in range(world_size):
        rt = Runtime(torch.device("cpu"), rank=rank, world_size=world_size)
        mine = calibration.rank_batches(n, batch, rt)
        assert (rank == 0) <= (0 in mine)
        rows = calibration.batch_rows(mine, n, batch)
        assert (got[rows] == -1).all(), "a row in two shares"
        got[rows] = calibration.generate(model, n, 5, batch_size=batch, seed=1, batches=mine)
    assert torch.equal(got, full)


def test_batch_seeds_are_distinct():
    seeds = {calibration.batch_seed(s, b) for s in range(4) for b in range(64)}
    assert len(seeds) == 4 * 64 and all(0 <= x < 2**64 for x in seeds)


def test_first_tokens_are_uniform():
    first = calibration.generate(Toy(), 2200, 1, batch_size=2200, seed=0)[:, 0]
    counts = torch.bincount(first, minlength=11).float()
    assert counts.min() > 140 and counts.max() < 260  # expected 200 each


def test_low_temperature_follows_the_argmax():
    model = Toy()
    seqs = calibration.generate(model, 4, 6, batch_size=4, seed=0, temperature=1e-4)
    with torch.no_grad():
        greedy = model.logits(seqs[:, :-1]).argmax(-1)
    assert torch.equal(seqs[:, 1:], greedy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_seqs": 0}, "positive sizes"),
        ({"batch_size": 0}, "positive sizes"),
        ({"temperature": 0.0}, "temperature = 0.0: must be positive"),
    ],
)
def test_bad_generation_settings_are_errors(kwargs, message):
    args = {"num_seqs": 2, "seq_len": 3, "batch_size": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        calibration.generate(Toy(), args.pop("num_seqs"), args.pop("seq_len"), **args)


def test_the_decode_hook_samples_what_rerunning_the_prefix_samples():
    model = SteppedBigram()
    stepped = calibration.generate(model, 5, 9, batch_size=2, seed=3)
    assert model.decoded == 5 * 8  # one new token per step, never the prefix again
    assert torch.equal(stepped, calibration.generate(Bigram(), 5, 9, batch_size=2, seed=3))


def test_hessians_match_the_inputs_computed_by_hand():
    model = TiedToy()
    tokens = torch.randint(11, (5, 7), generator=torch.Generator().manual_seed(1))
    H = calibration.collect_hessians(model, tokens, batch_size=2)
    with torch.no_grad():
        x, h1, h2, out = model.stages(tokens)
    assert set(H) == {"a.weight", "b.weight", "c.weight", "tok_emb.weight"}
    torch.testing.assert_close(H["a.weight"], second_moment(x))
    torch.testing.assert_close(H["b.weight"], second_moment(x))
    torch.testing.assert_close(H["c.weight"], second_moment(h1, h2))  # both passes of the loop
    torch.testing.assert_close(H["tok_emb.weight"], second_moment(out))  # the logit matmul's input
    # Without the hook only the nn.Linear inputs are caught.
    assert set(calibration.collect_hessians(Toy(), tokens, batch_size=2)) == {"a.weight", "b.weight", "c.weight"}


@pytest.mark.parametrize("arch", ["gpt", "ssd"])
def test_every_matrix_gets_a_hessian(arch):
    cfg = registry.with_arch(preset("smoke"), arch)
    torch.manual_seed(0)
    model = registry.build(cfg)
    tokens = calibration.generate(model, 3, 16, batch_size=2, seed=0)
    H = calibration.collect_hessians(model, tokens, batch_size=2)
    quantized = {n for n in tensor_groups(model) if tensor_format(model.state_dict()[n].shape, cfg.quant) == "int"}
    assert set(H) == quantized
    for name, h in H.items():
        cols = model.state_dict()[name].shape[1]
        assert h.shape == (cols, cols) and torch.allclose(h, h.T)
        assert torch.linalg.eigvalsh(h.double()).min() > -1e-5, name
    # q, k and v read the same normed input.
    mixer = "attn" if arch == "gpt" else "mixer"
    assert torch.equal(H[f"blocks.0.{mixer}.c_q.weight"], H[f"blocks.0.{mixer}.c_k.weight"])
    assert torch.equal(H[f"blocks.0.{mixer}.c_q.weight"], H[f"blocks.0.{mixer}.c_v.weight"])
