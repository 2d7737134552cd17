"""Exact BPB against a brute-force per-document computation; rank splits; the official byte formula."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_data import byte_tokenizer, encode_stream, one_thread, write_split  # noqa: F401 (autouse fixture)

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


def test_evaluate_cli_scores_an_artifact_in_both_byte_modes(lossless_sp, dev_sample, tmp_path, capsys):
    docs = [d.lstrip() for d in dev_sample[300:330] if "\u2581" not in d]
    write_split(tmp_path, "val", *encode_stream(lossless_sp, docs))
    cfg = preset("smoke").override({"model.vocab_size": lossless_sp.vocab_size})
    torch.manual_seed(0)
    weights = QuantizedState.quantize(GPT(cfg.model).state_dict(), cfg.quant).to_bytes()
    data = artifact.build(cfg.to_dict(), to_artifact(lossless_sp), weights, artifact.counted_code())
    path = artifact.write(tmp_path / "m.pga", data)
    results = {}
    for mode in ("exact", "official"):
        assert evaluate.main([str(path), "--data", str(tmp_path), "--bytes", mode, "--json"]) == 0
        results[mode] = json.loads(capsys.readouterr().out)
    assert results["exact"]["val_bytes"] == sum(len(d.encode()) for d in docs)
    assert results["official"]["val_bpb"] == pytest.approx(results["exact"]["val_bpb"], rel=1e-12)
