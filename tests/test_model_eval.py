"""Exact BPB against a brute-force per-document computation; rank splits; the official byte formula."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_data import byte_tokenizer, encode_stream, one_thread, write_split  # noqa: F401 (autouse fixture)

from pgolf_data.sidecars import write_index
from pgolf_data.tokenizer.artifact import to_artifact
from pgolf_model import artifact, evaluate
from pgolf_model.evaluation.byte_counts import official_byte_counts, official_byte_tables, sentencepiece_processor
from pgolf_model.evaluation.scoring import score
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState
from pgolf_model.runtime import Runtime

CPU = Runtime(torch.device("cpu"))


class Bigram(torch.nn.Module):
    """Predicts each token from the previous one only, so any windowing gives the same per-token NLL."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, x, y, reduction="mean"):
        loss = F.cross_entropy(self.table[x].flatten(0, 1), y.flatten(), reduction=reduction)
        return loss.view_as(y) if reduction == "none" else loss


@pytest.fixture(scope="module")
def corpus(dev_sample):
    docs = dev_sample[:120]
    tokens, counts = encode_stream(byte_tokenizer(), docs)
    return docs, tokens, counts


def brute_force_bpb(model: Bigram, docs: list[str], tok, n_docs: int | None = None) -> float:
    """Per document: NLL of its tokens after BOS plus the next document's BOS, over its UTF-8 length."""
    logp = torch.log_softmax(model.table.detach().double(), dim=-1).numpy()
    encoded = [np.concatenate([[tok.bos_id], ids]) for ids in tok.encode_batch(docs)]
    nll = n_bytes = 0.0
    for i, (doc, ids) in enumerate(zip(docs, encoded)):
        if n_docs is not None and i >= n_docs:
            break
        targets = list(ids[1:]) + ([tok.bos_id] if i + 1 < len(docs) else [])
        prev = ids[: len(targets)]
        nll -= sum(logp[p, t] for p, t in zip(prev, targets))
        n_bytes += len(doc.encode("utf-8"))
    return nll / math.log(2) / n_bytes


@pytest.mark.parametrize("seq_len, batch_tokens", [(64, 256), (100, 1000), (4096, 4096)])
def test_exact_bpb_equals_brute_force_per_document(corpus, seq_len, batch_tokens):
    docs, tokens, counts = corpus
    model = Bigram(260)
    result = score(model, tokens, counts, seq_len=seq_len, batch_tokens=batch_tokens, runtime=CPU)
    assert result.tokens == len(tokens) - 1
    assert result.bytes == sum(len(d.encode()) for d in docs)
    assert result.bpb == pytest.approx(brute_force_bpb(model, docs, byte_tokenizer()), rel=1e-6)


def test_val_tokens_prefix_scores_exactly_that_many_targets(corpus):
    docs, tokens, counts = corpus
    tok = byte_tokenizer()
    # Targets 1..bos[10] are documents 0..9, each with the next document's BOS as its last target.
    bos = np.flatnonzero(tokens == tok.bos_id)
    model = Bigram(260)
    result = score(model, tokens, counts, seq_len=64, batch_tokens=512, runtime=CPU, val_tokens=int(bos[10]))
    assert result.tokens == bos[10]
    assert result.bpb == pytest.approx(brute_force_bpb(model, docs[:11], tok, n_docs=10), rel=1e-6)


@pytest.mark.parametrize("world", [2, 3, 7])
def test_rank_slices_add_up_to_the_single_process_result(corpus, world):
    _, tokens, counts = corpus
    cfg = preset("smoke").model.__class__(vocab_size=260, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1)
    torch.manual_seed(0)
    model = GPT(cfg)
    for p in model.parameters():  # away from the identity-at-init so the context matters
        p.data += 0.05 * torch.randn_like(p)
    tokens, counts = tokens[:5000], counts[:5000]
    single = score(model, tokens, counts, seq_len=128, batch_tokens=512, runtime=CPU)
    parts = [
        score(
            model,
            tokens,
            counts,
            seq_len=128,
            batch_tokens=384,
            runtime=Runtime(torch.device("cpu"), rank=r, world_size=world),
        )
        for r in range(world)
    ]
    # Not distributed, so each "rank" returns its own sums.
    assert sum(p.tokens for p in parts) == single.tokens == len(tokens) - 1
    assert sum(p.bytes for p in parts) == single.bytes
    assert sum(p.nll_nats for p in parts) == pytest.approx(single.nll_nats, rel=1e-5)


def test_mismatched_inputs_are_errors(corpus):
    _, tokens, counts = corpus
    with pytest.raises(ValueError, match="byte counts for"):
        score(Bigram(260), tokens, counts[:-1], seq_len=64, batch_tokens=64, runtime=CPU)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        score(Bigram(260), tokens[:1], counts[:1], seq_len=64, batch_tokens=64, runtime=CPU)


# --- the official per-piece formula ---------------------------------------------------------------------------------

LOSSLESS_SP = {
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
    "byte_fallback": True,
}


@pytest.fixture(scope="module")
def lossless_sp(dev_sample):
    from pgolf_data.tokenizer import training
    from pgolf_data.tokenizer.spec import TokenizerSpec

    spec = TokenizerSpec(name="sp400", kind="sentencepiece", vocab_size=400, options=LOSSLESS_SP)
    tok, _ = training.train(spec, dev_sample[:300], num_threads=1)
    assert tok.lossless
    return tok


def test_official_formula_agrees_with_sidecars_on_a_lossless_tokenizer(lossless_sp, dev_sample):
    docs = [d.lstrip() for d in dev_sample[300:360] if "\u2581" not in d]
    tokens, sidecar = encode_stream(lossless_sp, docs)
    official = official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(lossless_sp)))
    # Where they should agree (no document starts with whitespace), they agree token by token.
    assert np.array_equal(official[1:], sidecar[1:])
    assert sidecar.sum() == sum(len(d.encode()) for d in docs)


def test_official_formula_drops_the_leading_space_after_bos(lossless_sp):
    text = " leading space"
    tokens, sidecar = encode_stream(lossless_sp, [text])
    official = official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(lossless_sp)))
    assert sidecar.sum() == len(text.encode())
    assert official.sum() == sidecar.sum() - 1  # the official scorer counts a doc-initial "▁" as 0 bytes


def test_official_formula_needs_sentencepiece():
    with pytest.raises(ValueError, match="kind 'bytes'"):
        sentencepiece_processor(byte_tokenizer())


def official_eval_bpb(model: Bigram, tokens: np.ndarray, sp, seq_len: int) -> tuple[float, int]:
    """The official eval, written from its description (docs/bpb.md): the stream cut to whole windows of
    ``seq_len`` targets, each target counting its piece's UTF-8 bytes with a leading "▁" as one space unless it
    follows a control piece, a byte piece as 1 and a control piece as 0. Returns BPB and the number of targets."""
    logp = torch.log_softmax(model.table.detach().double(), dim=-1).numpy()
    n_targets = (len(tokens) - 1) // seq_len * seq_len
    nll = n_bytes = 0.0
    for prev, target in zip(tokens[:n_targets].tolist(), tokens[1 : n_targets + 1].tolist()):
        nll -= logp[prev, target]
        if sp.is_control(target) or sp.is_unknown(target) or sp.is_unused(target):
            continue
        if sp.is_byte(target):
            n_bytes += 1
            continue
        piece = sp.id_to_piece(target)
        if piece.startswith("\u2581"):
            n_bytes += len(piece[1:].encode()) + (0 if sp.is_control(prev) else 1)
        else:
            n_bytes += len(piece.encode())
    return nll / math.log(2) / n_bytes, n_targets


@pytest.fixture(scope="module")
def official_sp(dev_sample):
    """The challenge's options (nmt_nfkc, whitespace collapsing, dummy prefix): lossy, so the two numbers differ."""
    from pgolf_data.tokenizer import training
    from pgolf_data.tokenizer.spec import resolve_spec

    tok, _ = training.train(resolve_spec("sp1024").with_overrides(vocab_size=400), dev_sample[:300], num_threads=1)
    return tok


@pytest.mark.parametrize("seq_len, stride", [(64, 0), (100, 25), (37, 0)])
def test_both_numbers_equal_brute_force(official_sp, dev_sample, seq_len, stride):
    docs = dev_sample[300:340]
    tokens, sidecar = encode_stream(official_sp, docs)
    model = Bigram(official_sp.vocab_size)
    counts = official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(official_sp)))
    result = score(
        model, tokens, sidecar, seq_len=seq_len, stride=stride, batch_tokens=512, runtime=CPU,
        official=counts, official_rule="SentencePiece piece formula",
    )  # fmt: skip
    assert result.key == "val_bpb" and result.bpb == pytest.approx(brute_force_bpb(model, docs, official_sp), rel=1e-6)
    want, n_targets = official_eval_bpb(model, tokens, sentencepiece_processor(official_sp), seq_len)
    assert result.official.key == "val_bpb_official" and result.official.tokens == n_targets < result.tokens
    assert result.official.bpb == pytest.approx(want, rel=1e-6) and result.official.bpb != result.bpb
    assert {"val_bpb", "val_bpb_official", "val_tokens_official", "val_bytes_official"} <= set(result.to_dict())
    assert "(exact: original bytes, every target" in result.line() and "(official: SentencePiece" in result.line()


def test_official_number_alone_without_exact_byte_counts(official_sp, dev_sample):
    docs = dev_sample[300:320]
    tokens, _ = encode_stream(official_sp, docs)
    counts = official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(official_sp)))
    model = Bigram(official_sp.vocab_size)
    result = score(model, tokens, None, seq_len=64, batch_tokens=512, runtime=CPU, official=counts, official_rule="r")
    want, n_targets = official_eval_bpb(model, tokens, sentencepiece_processor(official_sp), 64)
    assert result.measure == "official" and result.official is None and result.tokens == n_targets
    assert result.bpb == pytest.approx(want, rel=1e-6)
    assert set(result.to_dict()) == {
        "val_loss_official",
        "val_bpb_official",
        "val_tokens_official",
        "val_bytes_official",
    }
    assert result.line().startswith("val_bpb_official ")
    with pytest.raises(ValueError, match="fewer than one official window"):
        score(model, tokens[:50], None, seq_len=64, batch_tokens=512, runtime=CPU, official=counts[:50])


def test_evaluate_cli_prints_both_numbers(lossless_sp, dev_sample, tmp_path, capsys):
    docs = [d.lstrip() for d in dev_sample[300:330] if "\u2581" not in d]
    tokens, sidecar = encode_stream(lossless_sp, docs)
    write_split(tmp_path, "val", tokens, sidecar)
    write_index(tmp_path, lossless_sp, to_artifact(lossless_sp), {"source": "test"}, ("val",))
    cfg = preset("smoke").override({"model.vocab_size": lossless_sp.vocab_size})
    torch.manual_seed(0)
    weights = QuantizedState.quantize(GPT(cfg.model).state_dict(), cfg.quant).to_bytes()
    data = artifact.build(cfg.to_dict(), to_artifact(lossless_sp), weights, artifact.counted_code())
    path = artifact.write(tmp_path / "m.pga", data)
    assert evaluate.main([str(path), "--data", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_bytes"] == sum(len(d.encode()) for d in docs) and result["val_tokens"] == len(tokens) - 1
    assert result["val_tokens_official"] == (len(tokens) - 1) // cfg.train.seq_len * cfg.train.seq_len
    assert (
        result["val_bytes_official"]
        == official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(lossless_sp)))[
            1 : result["val_tokens_official"] + 1
        ].sum()
    )
    assert evaluate.main([str(path), "--data", str(tmp_path)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("val_bpb ") and "val_bpb_official" in line
    other = to_artifact(byte_tokenizer())
    write_index(tmp_path, byte_tokenizer(), other, {"source": "test"}, ("val",))  # the shards bound to another one
    assert evaluate.main([str(path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "tokenizer mismatch" in err and hashlib.sha256(other).hexdigest() in err
    assert hashlib.sha256(to_artifact(lossless_sp)).hexdigest() in err
