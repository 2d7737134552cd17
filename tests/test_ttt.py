"""Score-first TTT: legality (no score moves when later tokens change), equality with plain scoring at learning rate
0, learning on a repetitive stream, the caller's model untouched, the LoRA adapters, and the configuration."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from model_data import byte_tokenizer, encode_stream, write_split

from pgolf_data.sidecars import write_index
from pgolf_data.tokenizer.artifact import to_artifact
from pgolf_model import artifact, evaluate
from pgolf_model.config import Config, ConfigError, EvalConfig, LoRATTT, ModelConfig, NgramTilt, PhasedTTT, SGDPhase
from pgolf_model.evaluation import ttt
from pgolf_model.evaluation.lora import DocLoRA
from pgolf_model.evaluation.scoring import score
from pgolf_model.evaluation.ttt import cosine_lr, doc_rounds, evaluate_ttt, find_docs
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState
from pgolf_model.runtime import Runtime

CPU = Runtime(torch.device("cpu"))
BOS = byte_tokenizer().bos_id
SEQ_LEN = 32

# Small settings that make every mode train hard enough to move scores within a ~1,000-token stream.
# lora: rounds of two batches, so that adapters start from the round before's (warm A); phased: a round per phase.
LORA = LoRATTT(chunk_tokens=8, batch_docs=3, rank=4, lr=0.003)
MODES = {
    "full": EvalConfig(ttt="full", stride=8, full=SGDPhase(chunk_tokens=96, batch_seqs=2, epochs=2, lr=0.05)),
    "lora": EvalConfig(ttt="lora", lora=replace(LORA, round_docs=6)),
    "phased": EvalConfig(
        ttt="phased", lora=LORA, phased=PhasedTTT(prefix_docs=6, phases=2, chunk_tokens=96, batch_seqs=2, lr=0.05)
    ),
}
FROZEN = {
    "full": EvalConfig(ttt="full", stride=8, full=SGDPhase(chunk_tokens=96, batch_seqs=2, epochs=3, lr=0.0)),
    "lora": EvalConfig(ttt="lora", lora=replace(LORA, lr=0.0)),
    "phased": EvalConfig(
        ttt="phased",
        lora=replace(LORA, lr=0.0),
        phased=PhasedTTT(prefix_docs=6, phases=2, chunk_tokens=96, batch_seqs=2, lr=0.0),
    ),
}


# The record stack's model switches, all on (docs/records.md), on a 4-block model.
RECORD_SWITCHES = dict(
    num_layers=4, mlp_leaky_slope=0.5, rope_dims=8, ln_scale=True, xsa=True, attn_gate_width=12, smear_gate=True,
    bos_id=BOS, parallel_from=3, loop_start=1, loop_end=2, num_loops=1, bigram_buckets=64, bigram_dim=16,
)  # fmt: skip


def tiny_model(seed: int = 0, **switches) -> GPT:
    torch.manual_seed(seed)
    shape = dict(vocab_size=260, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1)
    m = GPT(ModelConfig(**{**shape, **switches}))
    with torch.no_grad():
        for p in m.parameters():  # away from the identity-at-init, so that context and adapters matter
            p += 0.05 * torch.randn_like(p)
    return m


def run(model, tokens, counts, cfg, **kw):
    return evaluate_ttt(
        model, tokens, counts, cfg, seq_len=SEQ_LEN, batch_tokens=4 * SEQ_LEN, bos_id=BOS, runtime=CPU, keep_nll=True,
        **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def streams(dev_sample):
    """Two unrelated streams of short documents (with their byte counts), cut to the same length."""
    tok = byte_tokenizer()
    a, a_counts = encode_stream(tok, [d[: 60 + 23 * (i % 5)] for i, d in enumerate(dev_sample[:14])])
    b, b_counts = encode_stream(tok, [d[: 45 + 31 * (i % 4)] for i, d in enumerate(dev_sample[100:116])])
    n = min(len(a), len(b))
    return (a[:n], a_counts[:n]), (b[:n], b_counts[:n])


@pytest.fixture(scope="module")
def on_a(streams):
    """Each mode's scores of the first stream, trained and frozen, computed once."""
    (a, a_counts), _ = streams
    model = tiny_model()
    return {mode: (run(model, a, a_counts, MODES[mode]), run(model, a, a_counts, FROZEN[mode])) for mode in MODES}


# --- legality -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("where", ["mid-document", "before a BOS", "late"])
def test_scores_up_to_p_do_not_depend_on_tokens_after_p(streams, on_a, mode, where):
    (a, a_counts), (b, b_counts) = streams
    bos = np.flatnonzero(a == BOS)
    p = {"mid-document": 437, "before a BOS": int(bos[4]) - 1, "late": len(a) - 150}[where]
    p += int(np.argmax(a[p + 1 :] != b[p + 1 :]))  # the streams differ from position p + 1 on
    assert where != "before a BOS" or a[p + 1] == BOS
    spliced = np.concatenate([a[: p + 1], b[p + 1 :]])  # agrees with a on positions 0..p only
    spliced_counts = np.concatenate([a_counts[: p + 1], b_counts[p + 1 :]])
    trained, frozen = on_a[mode]
    other = run(tiny_model(), spliced, spliced_counts, MODES[mode])
    # Target j is stream position j + 1: the scores of positions 1..p are targets 0..p-1, and they are identical.
    np.testing.assert_array_equal(trained.nll[:p], other.nll[:p])
    assert not np.array_equal(trained.nll[p:], other.nll[p:])  # the streams do differ after p ...
    assert not np.allclose(trained.nll[:p], frozen.nll[:p])  # ... and training did move the scores before p


@pytest.mark.parametrize("mode", ["full", "phased"])
def test_legality_holds_with_the_record_switches_on(streams, mode):
    (a, a_counts), (b, b_counts) = streams
    p = 437 + int(np.argmax(a[438:] != b[438:]))
    spliced, spliced_counts = (
        np.concatenate([a[: p + 1], b[p + 1 :]]),
        np.concatenate([a_counts[: p + 1], b_counts[p + 1 :]]),
    )
    model = tiny_model(**RECORD_SWITCHES)
    on_a, on_b = run(model, a, a_counts, MODES[mode]), run(model, spliced, spliced_counts, MODES[mode])
    np.testing.assert_array_equal(on_a.nll[:p], on_b.nll[:p])
    assert not np.array_equal(on_a.nll[p:], on_b.nll[p:])


@pytest.mark.parametrize("mode", ["full", "phased"])
def test_legality_holds_with_the_ngram_tilt_on(streams, mode):
    """The tilt's hints read earlier tokens only (PR #2130/#2135 token channel): short contexts and a low gate so
    that it fires often on this stream, and still no score up to p moves."""
    (a, a_counts), (b, b_counts) = streams
    p = 437 + int(np.argmax(a[438:] != b[438:]))
    spliced = np.concatenate([a[: p + 1], b[p + 1 :]])
    spliced_counts = np.concatenate([a_counts[: p + 1], b_counts[p + 1 :]])
    cfg = replace(MODES[mode], tilt=NgramTilt(boost=2.0, order=3, threshold=0.3))
    on_a, on_b = run(tiny_model(), a, a_counts, cfg), run(tiny_model(), spliced, spliced_counts, cfg)
    np.testing.assert_array_equal(on_a.nll[:p], on_b.nll[:p])
    assert not np.array_equal(on_a.nll[p:], on_b.nll[p:])
    untilted = run(tiny_model(), a, a_counts, MODES[mode])
    assert not np.array_equal(on_a.nll[:p], untilted.nll[:p])  # the tilt did fire before p


# The PR #2014 / #1953 TTT switches: short chunks at each document's start, no Q/V adapters, a longer context.
SHORT_NO_QV = dict(short_until=(16,), short_chunks=(4,), targets=("k", "o", "mlp"))
LATEST = {
    "lora": EvalConfig(ttt="lora", seq_len=2 * SEQ_LEN, lora=replace(LORA, round_docs=6, **SHORT_NO_QV)),
    "phased": replace(MODES["phased"], seq_len=2 * SEQ_LEN, lora=replace(LORA, **SHORT_NO_QV)),
}


@pytest.mark.parametrize("mode", list(LATEST))
def test_legality_holds_with_short_document_chunks_no_qv_and_long_context(streams, mode):
    (a, a_counts), (b, b_counts) = streams
    p = int(np.flatnonzero(a == BOS)[3]) + 9  # inside a document's short chunks
    p += int(np.argmax(a[p + 1 :] != b[p + 1 :]))
    spliced = np.concatenate([a[: p + 1], b[p + 1 :]])
    spliced_counts = np.concatenate([a_counts[: p + 1], b_counts[p + 1 :]])
    on_a, on_b = run(tiny_model(), a, a_counts, LATEST[mode]), run(tiny_model(), spliced, spliced_counts, LATEST[mode])
    np.testing.assert_array_equal(on_a.nll[:p], on_b.nll[:p])
    assert not np.array_equal(on_a.nll[p:], on_b.nll[p:])
    assert not np.isnan(on_a.nll).any()
    plain = run(tiny_model(), a, a_counts, MODES[mode])
    assert not np.allclose(on_a.nll, plain.nll)  # the switches change what is scored


def test_short_chunks_start_every_document_and_then_the_plain_size():
    lora = LoRATTT(chunk_tokens=48, short_until=(256, 2000), short_chunks=(8, 24))
    bounds = lora.chunk_bounds(2100)
    sizes = [hi - lo for lo, hi in bounds]
    assert sizes == [8] * 32 + [24] * 73 + [48] * 2 and bounds[0][0] == 0 and bounds[-1][1] >= 2100
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert lora.chunk_bounds(300) == bounds[: len(lora.chunk_bounds(300))]  # a position's chunk ignores the length
    assert LoRATTT(chunk_tokens=48).chunk_bounds(100) == [(0, 48), (48, 96), (96, 144)]
    widths = ttt.padded_widths(lora, 2048)
    for _, hi in lora.chunk_bounds(4000):
        assert ttt.padded_width(min(hi, 2048), 8, 2048) in widths


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"short_until": (16,)}, "short_chunks"), ({"short_until": (16, 8), "short_chunks": (2, 4)}, "short_until")],
)
def test_bad_short_chunk_settings_are_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        LoRATTT(**changes)


def placements(tokens, cfg) -> dict[int, tuple[int, int]]:
    """Document index -> (batch, row) in the order ``ttt_docs`` runs them."""
    lengths = [n for _, n in find_docs(tokens, BOS)]
    batches = [batch for r in doc_rounds(lengths, cfg, SEQ_LEN, 1) for batch in r.batches]
    return {d: (k, row) for k, batch in enumerate(batches) for row, d in enumerate(batch)}


def resized_doc(tokens, counts, doc: int, factor: float):
    """``tokens`` with document ``doc`` cut or repeated to ``factor`` times its length (its BOS kept)."""
    start, length = find_docs(tokens, BOS)[doc]
    body = np.resize(tokens[start + 1 : start + length - 1], max(1, int(factor * (length - 2))))
    cut = start + length - 1  # the next document's BOS
    return (
        np.concatenate([tokens[: start + 1], body, tokens[cut:]]),
        np.concatenate([counts[: start + 1], np.resize(counts[start + 1 : cut], len(body)), counts[cut:]]),
    )


@pytest.mark.parametrize("mode", ["lora", "phased"])
@pytest.mark.parametrize("factor", [0.1, 4.0], ids=["short", "long"])
def test_sorting_that_moves_earlier_documents_does_not_move_their_scores(streams, on_a, mode, factor):
    """A later document made short or long re-sorts its round: earlier documents change batch or row, but keep
    every score, because they start from rows keyed by their own stream index."""
    (a, a_counts), _ = streams
    # Lengths 62 85 114 131 154 62 | 85 108 131 154 64 85 108 130: lora's first round is documents 0-5, phased's
    # last 6-13; the document resized is the round's longest made short, or a short one made longest.
    doc = {"lora": {0.1: 4, 4.0: 5}, "phased": {0.1: 9, 4.0: 10}}[mode][factor]
    p = find_docs(a, BOS)[doc][0]  # the document's BOS: positions up to it are unchanged
    tokens, counts = resized_doc(a, a_counts, doc, factor)
    before, after = placements(a, MODES[mode]), placements(tokens, MODES[mode])
    assert any(before[d] != after[d] for d in range(doc)), "the resized document moved no earlier one"
    other = run(tiny_model(), tokens, counts, MODES[mode])
    np.testing.assert_array_equal(on_a[mode][0].nll[:p], other.nll[:p])


def test_adapters_started_by_row_would_let_the_sort_leak(streams, on_a, monkeypatch):
    """The check has teeth: starting rows taken by place in the batch make earlier scores move."""
    (a, a_counts), _ = streams
    tokens, counts = resized_doc(a, a_counts, 5, 4.0)  # as the test above: the round's longest document
    p = find_docs(a, BOS)[5][0]
    monkeypatch.setattr(ttt, "doc_rows", lambda batch, bsz: [b % bsz for b in range(ttt.batch_rows(len(batch)))])
    on_a_by_row = run(tiny_model(), a, a_counts, MODES["lora"])
    other = run(tiny_model(), tokens, counts, MODES["lora"])
    assert not np.array_equal(on_a_by_row.nll[:p], other.nll[:p])


def test_a_scoring_order_that_peeks_ahead_would_fail_the_legality_check(streams):
    """The check has teeth: a model trained on the whole stream before scoring changes scores before p."""
    (a, a_counts), (b, b_counts) = streams
    p = 437
    spliced = np.concatenate([a[: p + 1], b[p + 1 :]])
    spliced_counts = np.concatenate([a_counts[: p + 1], b_counts[p + 1 :]])
    peeked = []
    for tokens, counts in ((a, a_counts), (spliced, spliced_counts)):
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.from_numpy(tokens[:-1])[None], torch.from_numpy(tokens[1:])[None]
        model(x, y).backward()
        opt.step()
        peeked.append(run(model, tokens, counts, EvalConfig()).nll)
    assert not np.array_equal(peeked[0][:p], peeked[1][:p])


# --- learning rate 0 is plain scoring -------------------------------------------------------------------------------


def test_full_ttt_at_learning_rate_0_is_sliding_window_scoring(streams):
    (a, a_counts), _ = streams
    model = tiny_model()
    got = run(model, a, a_counts, FROZEN["full"])
    want = score(model, a, a_counts, seq_len=SEQ_LEN, stride=8, batch_tokens=SEQ_LEN, runtime=CPU, keep_nll=True)
    np.testing.assert_allclose(got.nll, want.nll, rtol=1e-5, atol=1e-6)
    assert (got.tokens, got.bytes) == (len(a) - 1, a_counts[1:].sum())


def brute_force_doc_nll(model, tokens: np.ndarray, chunk: int, upto: int) -> np.ndarray:
    """Targets ``0..upto-1`` one by one: a target's context is its own document from its chunk's window start."""
    out = np.full(upto, np.nan)
    with torch.no_grad():
        for start, length in find_docs(tokens, BOS):
            for i in range(min(length - 1, upto - start)):  # document target i is stream target start + i
                lo = max(0, (i // chunk + 1) * chunk - SEQ_LEN)
                x = torch.from_numpy(tokens[start + lo : start + i + 1])[None]
                y = torch.from_numpy(tokens[start + lo + 1 : start + i + 2])[None]
                out[start + i] = model(x, y, reduction="none")[0, -1].item()
    return out


def test_lora_ttt_at_learning_rate_0_scores_each_document_by_its_own_chunk_windows(streams, on_a):
    (a, a_counts), _ = streams
    got = on_a["lora"][1]
    want = brute_force_doc_nll(tiny_model(), a, chunk=8, upto=600)
    np.testing.assert_allclose(got.nll[:600], want, rtol=1e-5, atol=1e-5)
    assert (got.tokens, got.bytes) == (len(a) - 1, a_counts[1:].sum())
    assert got.bpb == pytest.approx(np.nansum(got.nll) / math.log(2) / a_counts[1:].sum(), rel=1e-12)


def test_phased_ttt_at_learning_rate_0_is_lora_ttt(on_a):
    np.testing.assert_array_equal(on_a["phased"][1].nll, on_a["lora"][1].nll)


# --- TTT learns, on a copy ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repetitive():
    """One random 48-byte phrase, longer than the 32-token window, repeated within and across documents: only
    weights that learned the phrase can predict it."""
    rng = np.random.default_rng(0)
    phrase = rng.integers(4, 260, size=48)
    doc = np.concatenate([[BOS], np.tile(phrase, 4)])
    tokens = np.concatenate([np.tile(doc, 8), [BOS]])
    return tokens, (tokens != BOS).astype(np.int64)


@pytest.mark.parametrize("mode", list(MODES))
def test_ttt_learns_a_repeated_document(repetitive, mode):
    tokens, counts = repetitive
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen, adapted = run(model, tokens, counts, FROZEN[mode]), run(model, tokens, counts, MODES[mode])
    assert adapted.loss < 0.8 * frozen.loss, (mode, adapted.loss, frozen.loss)
    # The caller's model is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


# --- ranks ---------------------------------------------------------------------------------------------------------


def _rank_worker(rank: int, world: int, init_file: str, tokens, counts, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rt = Runtime(torch.device("cpu"), rank, world)
        for mode, cfg in MODES.items():
            got = evaluate_ttt(
                tiny_model(), tokens, counts, cfg, seq_len=SEQ_LEN, batch_tokens=4 * SEQ_LEN, bos_id=BOS,
                runtime=rt, keep_nll=True,
            )  # fmt: skip
            np.save(f"{out}/{mode}-{rank}.npy", np.append(got.nll, [got.nll_nats, got.tokens, got.bytes]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_score_like_one(streams, tmp_path):
    (a, a_counts), _ = streams
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), a, a_counts, str(tmp_path)), nprocs=2)
    for mode, cfg in MODES.items():
        single = run(tiny_model(), a, a_counts, cfg)
        parts = [np.load(tmp_path / f"{mode}-{r}.npy") for r in range(2)]
        nll = [p[:-3] for p in parts]
        assert (sum(~np.isnan(x) for x in nll) == 1).all(), mode  # each target scored on exactly one rank
        np.testing.assert_allclose(np.nansum(nll, axis=0), single.nll, rtol=1e-4, atol=1e-5, err_msg=mode)
        for p in parts:  # the totals are summed over ranks
            assert p[-2:].tolist() == [single.tokens, single.bytes]
            assert p[-3] == pytest.approx(single.nll_nats, rel=1e-5)


# --- pieces ---------------------------------------------------------------------------------------------------------


def test_find_docs_gives_every_target_to_one_document():
    tokens = np.array([BOS, 5, 6, BOS, 7, BOS, BOS, 8, 9, 10])
    assert find_docs(tokens, BOS) == [(0, 4), (3, 3), (5, 2), (6, 4)]
    # Not starting with BOS, and no BOS at all: the stream's start opens the first document.
    assert find_docs(np.array([5, 6, BOS, 7]), BOS) == [(0, 3), (2, 2)]
    assert find_docs(np.array([5, 6, 7]), BOS) == [(0, 3)]
    for tokens in (np.array([BOS, 5, 6, BOS, 7, BOS, BOS, 8, 9, 10]), np.array([5, BOS, BOS])):
        covered = [start + i for start, length in find_docs(tokens, BOS) for i in range(length - 1)]
        assert covered == list(range(len(tokens) - 1))


def test_cosine_lr_runs_from_base_to_zero():
    assert [round(cosine_lr(1.0, i, 5), 6) for i in range(5)] == [1.0, 0.853553, 0.5, 0.146447, 0.0]
    assert cosine_lr(0.3, 0, 1) == 0.3


def fresh_lora(model, bsz, rank, alpha, targets) -> DocLoRA:
    lora = DocLoRA(model, bsz, rank, alpha, targets)
    lora.load(lora.draw(bsz, torch.Generator().manual_seed(0)), list(range(bsz)))
    return lora


@pytest.mark.parametrize("switches", [{}, RECORD_SWITCHES], ids=["baseline", "record switches"])
def test_fresh_adapters_leave_the_model_unchanged_and_rows_are_independent(switches):
    model = tiny_model(**switches)
    lora = fresh_lora(model, 3, 4, 8.0, DocLoRA.TARGETS)
    x = torch.randint(0, 260, (3, 20), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 260, (3, 20), generator=torch.Generator().manual_seed(2))

    def plain_nll():  # the formulation DocLoRA.nll uses (GPT.forward on CPU chunks it: equal up to rounding)
        return F.cross_entropy(model.logits(x).flatten(0, 1), y.flatten(), reduction="none").view_as(y)

    with torch.no_grad():
        plain = plain_nll()
        torch.testing.assert_close(model(x, y, reduction="none"), plain)
        assert torch.equal(lora.nll(x, y), plain)
        for m in lora.modules():
            if hasattr(m, "B"):
                m.B[1].normal_()  # adapt row 1 only
        adapted = lora.nll(x, y)
        assert torch.equal(adapted[[0, 2]], plain[[0, 2]]) and not torch.allclose(adapted[1], plain[1])
        assert torch.equal(plain_nll(), plain)  # detached again after each use
    assert all(type(b.attn).__name__ == "CausalSelfAttention" for b in model.blocks)


def test_a_looped_block_has_adapters_per_virtual_layer():
    """RECORD_SWITCHES loop blocks 1-2 twice: layers 0 1 2 1 2 3, six adapter sets; block 1's two visits differ."""
    model = tiny_model(**RECORD_SWITCHES)
    lora = fresh_lora(model, 1, 2, 2.0, ("q",))
    starts = lora.draw(1, torch.Generator().manual_seed(0))
    assert len(lora.slots) == 6
    x = torch.randint(0, 260, (1, 12), generator=torch.Generator().manual_seed(1))
    outs = []
    with torch.no_grad():
        for slot in (1, 3):
            lora.load(starts, [0])
            lora.slots[slot]["q"].B.normal_(generator=torch.Generator().manual_seed(2))
            outs.append(lora.nll(x, x))
        lora.load(starts, [0])
        plain = lora.nll(x, x)
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], plain)
    assert model.encoder_layers + model.decoder_layers + model.lane_layers == [0, 1, 2, 1, 2, 3]  # model untouched


def test_each_lora_target_adapts_its_module():
    model = tiny_model()
    x = torch.randint(0, 260, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(x, x, reduction="none")
        for target in (*DocLoRA.TARGETS, None):
            lora = fresh_lora(model, 1, 2, 2.0, (target,) if target else ())
            for m in lora.modules():
                if hasattr(m, "B"):
                    m.B.normal_()
            assert not torch.allclose(lora.nll(x, x), plain), target  # None: the head adapter alone
    with pytest.raises(ValueError, match="unknown LoRA target"):
        DocLoRA(model, 1, 2, 2.0, ("w",))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("ttt", "sometimes", "must be one of none, full, lora, phased"),
        ("stride", -1, "must be >= 0"),
        ("lora.rank", 0, "must be positive"),
        ("lora.beta2", 1.0, r"must be in \[0, 1\)"),
        ("lora.targets", ("q", "z"), "unknown item"),
        ("full.lr", -0.1, "must be >= 0"),
        ("phased.phases", 0, "must be positive"),
    ],
)
def test_bad_eval_settings_are_errors_naming_the_setting(key, value, match):
    with pytest.raises(ConfigError, match=rf"eval\.{key} = {re.escape(repr(value))}: {match}"):
        Config().override({f"eval.{key}": value})


def test_bad_inputs_are_errors(streams):
    (a, a_counts), _ = streams
    model = tiny_model()
    with pytest.raises(ValueError, match="no BOS id"):
        evaluate_ttt(model, a, a_counts, MODES["lora"], seq_len=32, batch_tokens=32, bos_id=None, runtime=CPU)
    with pytest.raises(ValueError, match=r"lora\.chunk_tokens 48 is longer than the window"):
        evaluate_ttt(model, a, a_counts, EvalConfig(ttt="lora"), seq_len=32, batch_tokens=32, bos_id=BOS, runtime=CPU)
    with pytest.raises(ValueError, match="byte counts for"):
        run(model, a, a_counts[:-1], MODES["full"])


# --- the evaluate command -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_artifact(streams, tmp_path_factory):
    """A smoke-shaped model artifact whose config asks for stride 16, and a val split of the first stream."""
    root = tmp_path_factory.mktemp("cli")
    (a, a_counts), _ = streams
    write_split(root, "val", a, a_counts)
    write_index(root, byte_tokenizer(), to_artifact(byte_tokenizer()), {"source": "test"}, ("val",))
    cfg = preset("smoke").override({"model.vocab_size": 260, "train.seq_len": 32, "eval.stride": 16})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.05 * torch.randn_like(p)
    weights = QuantizedState.quantize(model.state_dict(), cfg.quant).to_bytes()
    data = artifact.build(cfg.to_dict(), to_artifact(byte_tokenizer()), weights, artifact.counted_code())
    return artifact.write(root / "m.pga", data), root


def cli(capsys, *argv) -> dict:
    assert evaluate.main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_uses_the_artifacts_eval_settings_unless_flags_say_otherwise(cli_artifact, streams, capsys):
    path, data = cli_artifact
    (a, a_counts), _ = streams
    model, cfg = artifact.build_model(artifact.read(path))
    kw = dict(seq_len=32, batch_tokens=cfg.train.device_batch_tokens, runtime=CPU)
    own = cli(capsys, path, "--data", data)
    assert (own["stride"], own["ttt"]) == (16, "none")
    assert own["val_bpb"] == pytest.approx(score(model, a, a_counts, stride=16, **kw).bpb, rel=1e-12)
    plain = cli(capsys, path, "--data", data, "--stride", 0)
    assert plain["stride"] == 32 and plain["val_bpb"] == pytest.approx(score(model, a, a_counts, **kw).bpb, rel=1e-12)
    flags = ["--eval.lora.chunk_tokens", 8, "--eval.lora.batch_docs", 3, "--eval.lora.rank", 4]
    lora = cli(capsys, path, "--data", data, "--ttt", "lora", *flags, "--eval.lora.warm_start_a", "false")
    how = EvalConfig(stride=16, ttt="lora", lora=LoRATTT(chunk_tokens=8, batch_docs=3, rank=4, warm_start_a=False))
    want = evaluate_ttt(model, a, a_counts, how, bos_id=BOS, **kw)
    assert lora["ttt"] == "lora" and lora["val_bpb"] == pytest.approx(want.bpb, rel=1e-12)
    assert lora["val_tokens"] == len(a) - 1 and lora["val_bytes"] == a_counts[1:].sum()


def test_evaluate_rejects_bad_eval_settings(cli_artifact, capsys):
    path, data = cli_artifact
    assert evaluate.main([str(path), "--data", str(data), "--eval.lora.rank", "0"]) == 2
    assert "eval.lora.rank = 0: must be positive" in capsys.readouterr().err
    assert evaluate.main([str(path), "--data", str(data), "--stride", "33"]) == 2
    assert "stride 33: must be in [1, seq_len = 32]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main([str(path), "--data", str(data), "--ttt", "sometimes"])


# --- the compiled chunk forward/backward ----------------------------------------------------------------------------


def test_padded_widths_are_few_and_cover_every_window():
    assert ttt.padded_widths(LoRATTT(chunk_tokens=48), 2048) == [48, 96, 192, 384, 768, 1536, 2048]
    for w in range(48, 2048 + 48, 48):
        assert min(w, 2048) <= ttt.padded_width(min(w, 2048), 48, 2048) <= 2048


@pytest.mark.slow
def test_compiled_ttt_scores_as_eager_without_recompiling_after_warm_up(monkeypatch):
    """aot_eager on CPU: the warm-up compiles every (rows, width) graph; scoring then compiles nothing. Small: two
    widths (8, 16) and full batches only, one graph each (compiling is slow on a loaded CPU)."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([*(np.r_[BOS, rng.integers(4, 260, size=int(n))] for n in (30, 22, 41, 12, 35, 27)), [BOS]])
    counts = (tokens != BOS).astype(np.int64)
    counters = torch._dynamo.utils.counters
    after_warm_up = {}
    real_warm_up = ttt.warm_up

    def warm_up(*args):
        real_warm_up(*args)
        after_warm_up["graphs"] = counters["stats"]["unique_graphs"]
        monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)

    monkeypatch.setattr(ttt, "warm_up", warm_up)
    torch._dynamo.reset()
    counters.clear()  # earlier tests' compilations count too
    cfg = EvalConfig(ttt="lora", lora=replace(LORA, round_docs=3))

    def score(compile):
        how = replace(cfg, lora=replace(cfg.lora, compile=compile))
        return evaluate_ttt(
            tiny_model(), tokens, counts, how, seq_len=16, batch_tokens=64, bos_id=BOS, runtime=CPU, keep_nll=True
        )

    compiled = score("aot_eager")
    assert after_warm_up["graphs"] == 2 and counters["stats"]["unique_graphs"] == 2
    np.testing.assert_allclose(compiled.nll, score("off").nll, rtol=1e-4, atol=1e-4)  # padding rounds differently
