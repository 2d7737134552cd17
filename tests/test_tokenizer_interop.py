"""Tokenizer export/import: ``.model`` round trips with models SentencePiece trained directly, the official sp1024
``.model`` but for its path, import -> shard -> export byte for byte, HF ``tokenizer.json`` read by HF itself, the
official pure-byte JSON, and every bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import caseops_reference as reference
import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, trainers

from pgolf_data import cli
from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer import TokenizerError, TokenizerSpec, artifact, interop, sp_model, training
from pgolf_data.tokenizer.artifact import from_artifact, to_artifact
from pgolf_data.tokenizer.caseops import OPERATORS, PGOLF, RECORD, transform

SPECS = Path(__file__).resolve().parents[1] / "tokenizers"
TRICKY = ["", "▁", " ▁ x", "  two  spaces ", "\t\n\r\n", "ÉCOLE Øst iPhone", "ﬁ①Ａ\u00a0\u200b", "😀e\u0301", "<s></s>",
          "\ue001A\ue004", "日本語のテキスト", "x" * 5000]  # fmt: skip
# The challenge's trainer options (its data/download_hf_docs_and_tokenize.py, stack.md section 3).
OFFICIAL = dict(reference.trainer_options(0))
del OFFICIAL["user_defined_symbols"], OFFICIAL["vocab_size"]
LOSSLESS = {
    "model_type": "bpe",
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
    "byte_fallback": True,
}


def train_direct(texts: list[str], vocab: int, options: dict, prefix: Path | None = None) -> bytes:
    """A model trained by SentencePiece itself: into memory, or to ``prefix``.model as the official script does."""
    if prefix is None:
        out = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=out, vocab_size=vocab, minloglevel=2, **options
        )
        return out.getvalue()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(prefix), vocab_size=vocab, minloglevel=2, **options
    )
    return prefix.with_suffix(".model").read_bytes()


@pytest.fixture(scope="module")
def direct_models(dev_sample, tmp_path_factory) -> dict[str, bytes]:
    docs = dev_sample[:400]
    official_input = [t for t in (d.replace("\x00", " ").strip() for d in docs) if t]
    tmp = tmp_path_factory.mktemp("models")
    return {
        "lossless": train_direct(docs, 400, LOSSLESS),
        "official": train_direct(official_input, 400, OFFICIAL, prefix=tmp / "fineweb_400_bpe"),
        "record": reference.train_model(docs, 400),
        "unigram": train_direct(official_input, 400, {"model_type": "unigram"}),
    }


def import_bytes(data: bytes, **kw):
    return interop.import_tokenizer(data, name="t", where="t.model", **kw)


# -- .model ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lossless", "official", "record", "unigram"])
def test_model_round_trips_byte_for_byte(direct_models, name):
    data = direct_models[name]
    tok = import_bytes(data)
    assert interop.export_model_proto(tok) == data
    reloaded = from_artifact(to_artifact(tok))  # through the compact artifact, as a tokenizer directory holds it
    assert interop.export_tokenizer(reloaded) == (interop.SENTENCEPIECE_MODEL, data)
    assert tok.kind == ("caseops-sp" if name == "record" else "sentencepiece")
    assert tok.lossless == (name == "lossless")


@pytest.mark.parametrize("name", ["lossless", "official", "record", "unigram"])
def test_imported_model_encodes_as_sentencepiece_does(direct_models, name, dev_sample):
    sp = spm.SentencePieceProcessor(model_proto=direct_models[name])
    tok = from_artifact(to_artifact(import_bytes(direct_models[name])))
    docs = [*dev_sample[400:700], *TRICKY]
    if name == "record":
        assert tok.case.name == RECORD and tok.operator_ids == {"title": 4, "allcaps": 5, "capnext": 6, "esc": 7}
        want = sp.encode([reference.encode(d) for d in docs])
    else:
        want = sp.encode(docs)
        if name == "lossless":  # pgolf spells a literal ▁ in byte pieces (sentencepiece_bpe.py): compare the rest
            docs, want = zip(*[(d, w) for d, w in zip(docs, want) if "▁" not in d])
    encoded = tok.encode_batch(list(docs))
    assert [ids.tolist() for ids in encoded] == list(want)
    # A lossy model refuses text it drops entirely, such as "▁" (its bytes could go to no token): leave those out.
    texts = [d for d, ids in zip(docs, encoded) if ids.size]
    assert [int(c.sum()) for _, c in tok.encode_with_bytes(texts)] == [len(d.encode("utf-8")) for d in texts]


def test_pgolf_caseops_model_needs_its_transform_named_on_import(dev_sample):
    tok, _ = training.train(TokenizerSpec.load(SPECS / "caseops_sp1024.toml"), dev_sample, num_threads=2)
    data = interop.export_model_proto(tok)
    assert "--case-transform pgolf" in interop.export_note(tok)
    as_record = import_bytes(data)
    as_pgolf = import_bytes(data, case_transform=PGOLF)
    assert as_record.case.name == RECORD and as_pgolf.case.name == PGOLF
    text = "ÉCOLE Øst, The NASA"
    assert as_pgolf.encode(text).tolist() == tok.encode(text).tolist() != as_record.encode(text).tolist()
    assert interop.export_model_proto(as_pgolf) == data


def strip_model_prefix(model: bytes) -> bytes:
    """The model without the trainer spec's model_prefix (field 2), the output path the official script passes."""
    pieces, rest = sp_model.split_model(model)
    fields = []
    for f in rest:
        if f.number == sp_model.MODEL_TRAINER:
            body = b"".join(g.raw for g in sp_model.read_fields(f.value) if g.number != 2)
            f = sp_model.Field(f.number, f.wire, body, sp_model.length_field(f.number, body))
        fields.append(f)
    return sp_model.join_model(pieces, fields)


def test_sp1024_export_is_the_official_model_but_for_its_path(dev_sample, tmp_path):
    tok, _ = training.train(TokenizerSpec.load(SPECS / "sp1024.toml"), dev_sample, num_threads=2)
    official_input = [t for t in (d.replace("\x00", " ").strip() for d in dev_sample) if t]
    official = train_direct(official_input, 1024, OFFICIAL, prefix=tmp_path / "fineweb_1024_bpe")
    assert str(tmp_path / "fineweb_1024_bpe").encode() in official
    ours = interop.export_model_proto(tok)
    assert ours != official and ours == strip_model_prefix(official)


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out + err


def test_import_shard_export_is_byte_identical(direct_models, dev_sample, tmp_path, capsys):
    model = tmp_path / "fineweb_400_bpe.model"
    model.write_bytes(direct_models["official"])
    corpus = tmp_path / "docs.jsonl"
    docs = dev_sample[:120]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    code, out = run_cli(capsys, "import-tokenizer", model, "--out", tmp_path / "tok")
    assert code == 0, out
    assert "imported from" in out and "sentencepiece" in out
    shards = tmp_path / "shards"
    code, out = run_cli(
        capsys, "shard", "--tokenizer", tmp_path / "tok", "--corpus", corpus, "--out", shards, "--val-docs", 20,
        "--workers", 1, "--quiet",
    )  # fmt: skip
    assert code == 0, out
    code, out = run_cli(capsys, "verify", shards, "--corpus", corpus)
    assert code == 0, out
    sp = spm.SentencePieceProcessor(model_proto=direct_models["official"])
    val = ShardSet.open(shards, "val")
    want = np.concatenate([[sp.bos_id(), *ids] for ids in sp.encode(docs[:20])])
    assert np.array_equal(val.read(0, val.num_tokens), want)
    code, out = run_cli(capsys, "export-tokenizer", shards, "--out", tmp_path / "back.model")
    assert code == 0, out
    assert (tmp_path / "back.model").read_bytes() == model.read_bytes()


@pytest.mark.slow
def test_imported_tokenizer_trains_a_model(direct_models, dev_sample, tmp_path, capsys):
    from pgolf_model.train import main as train_main

    model = tmp_path / "m.model"
    model.write_bytes(direct_models["official"])
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in dev_sample[:400]), encoding="utf-8")
    assert run_cli(capsys, "import-tokenizer", model, "--out", tmp_path / "tok")[0] == 0
    shards = tmp_path / "shards"
    args = ["--tokenizer", tmp_path / "tok", "--corpus", corpus, "--out", shards, "--val-docs", 40, "--quiet"]
    assert run_cli(capsys, "shard", *args)[0] == 0
    argv = ["--data", shards, "--tokenizer", tmp_path / "tok", "--preset", "smoke", "--out", tmp_path / "run"]
    assert train_main([str(a) for a in [*argv, "--no-progress"]]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < summary["val_bpb"] < 8


# -- tokenizer.json and the pure-byte JSON ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizers(dev_sample):
    out = {}
    for name in ("hf_bpe1024", "caseops_hf_bpe1024"):
        spec = TokenizerSpec.load(SPECS / f"{name}.toml").with_overrides(vocab_size=600)
        out[name] = training.train(spec, dev_sample[:400], num_threads=1)[0]
    return out


@pytest.mark.parametrize("name", ["hf_bpe1024", "caseops_hf_bpe1024"])
def test_tokenizer_json_is_read_by_hf_with_our_ids(hf_tokenizers, name, dev_sample):
    tok = hf_tokenizers[name]
    fmt, data = interop.export_tokenizer(tok)
    assert fmt == interop.HF_TOKENIZER_JSON
    hf = HFTokenizer.from_str(data.decode())
    docs = [*dev_sample[400:600], *[t for t in TRICKY if t]]
    case = transform(PGOLF).encode if tok.caseops else (lambda t: t)
    got = [e.ids for e in hf.encode_batch([case(d) for d in docs], add_special_tokens=False)]
    assert got == [ids.tolist() for ids in tok.encode_batch(docs)]
    assert [hf.id_to_token(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert hf.get_vocab_size() == tok.vocab_size
    if tok.caseops:
        assert {name: hf.token_to_id(op) for name, op in OPERATORS.items()} == tok.operator_ids
    for doc in docs[:50]:
        decoded = hf.decode(tok.encode(doc).tolist(), skip_special_tokens=False)
        assert (transform(PGOLF).decode(decoded) if tok.caseops else decoded) == doc


@pytest.mark.parametrize("name", ["hf_bpe1024", "caseops_hf_bpe1024"])
def test_tokenizer_json_round_trips(hf_tokenizers, name, dev_sample):
    tok = hf_tokenizers[name]
    _, data = interop.export_tokenizer(tok)
    back = from_artifact(to_artifact(interop.import_tokenizer(data, name="x", where="tokenizer.json")))
    assert back.kind == tok.kind and back.vocab_size == tok.vocab_size
    assert interop.export_tokenizer(back)[1] == data
    docs = dev_sample[:100]
    assert [ids.tolist() for ids in back.encode_batch(docs)] == [ids.tolist() for ids in tok.encode_batch(docs)]


def test_foreign_tokenizer_json_is_refused_with_the_reason(dev_sample):
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(dev_sample[:100], trainers.BpeTrainer(vocab_size=400, show_progress=False))
    message = r"tokenizer\.json: id 0 is '!' where the layout has '<pad>'.*in its hf-bpe layout"
    with pytest.raises(TokenizerError, match=message):
        interop.import_tokenizer(hf.to_str().encode(), name="x", where="tokenizer.json")
    obj = json.loads(hf.to_str())
    obj["model"]["vocab"] = {s: i + 4 for s, i in obj["model"]["vocab"].items()}
    with pytest.raises(TokenizerError, match=r"vocabulary ids are not 0, 1, 2"):
        interop.import_tokenizer(json.dumps(obj).encode(), name="x", where="tokenizer.json")
    hf.normalizer = normalizers.NFKC()
    with pytest.raises(TokenizerError, match="it has a normalizer"):
        interop.import_tokenizer(hf.to_str().encode(), name="x", where="tokenizer.json")


def test_pure_byte_json_is_the_official_file(tmp_path):
    """The challenge export writes {tokenizer_type, config, vocab_size} with sorted keys, indent 2, a newline."""
    official = {
        "config": {"bos_id": 1, "byte_count": 256, "byte_offset": 4, "eos_id": 2, "pad_id": 0, "unk_id": 3},
        "tokenizer_type": "pure_byte",
        "vocab_size": 260,
    }
    want = json.dumps(official, indent=2, sort_keys=True) + "\n"
    tok = training.train(TokenizerSpec.load(SPECS / "bytes260.toml"), ["x"])[0]
    fmt, data = interop.export_tokenizer(tok)
    assert fmt == interop.PURE_BYTE_JSON and data.decode() == want
    back = interop.import_tokenizer(data, name="b", where="fineweb_pure_byte_260.json")
    assert back.kind == "bytes" and back.encode("é").tolist() == [0xC3 + 4, 0xA9 + 4]
    bad = json.dumps({**official, "config": {**official["config"], "byte_offset": 3}}).encode()
    with pytest.raises(TokenizerError, match="other than the byte260 layout"):
        interop.import_tokenizer(bad, name="b", where="b.json")


# -- bad input --------------------------------------------------------------------------------------------------------


def synthetic_big_model(base: bytes, n: int) -> bytes:
    pieces, rest = sp_model.split_model(base)
    extra = [sp_model.Piece(f"<u{i}>", 0.0, sp_model.USER_DEFINED) for i in range(n - len(pieces))]
    return sp_model.join_model(pieces + extra, rest)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: b"", "neither a SentencePiece .model .*it is empty"),
        (lambda m: b"hello world\n", "neither a SentencePiece .model .*this file with 68"),
        (lambda m: b"[1, 2]", "neither a SentencePiece .model"),
        (lambda m: b'{"text": 1}', "neither a tokenizer.json"),
        (lambda m: b'{"model": ', "not valid JSON"),
        (lambda m: b'{"model": {"type": "Unigram"}}', "model type 'Unigram' is not BPE"),
        (lambda m: b'{"model": {"type": "BPE", "vocab": 5}, "pre_tokenizer": 3}', "malformed hf-tokenizer-json"),
        (lambda m: m[: len(m) // 2], "corrupt SentencePiece model: truncated"),
        (lambda m: m[:-3], "corrupt SentencePiece model|SentencePiece rejects"),
        (lambda m: b"\x0a\x05\x0a\x03\xff\xfe\xfd", "corrupt SentencePiece model"),
        (lambda m: synthetic_big_model(m, 70_000), r"vocab_size 70000 is outside \[256, 65536\]"),
    ],
)
def test_bad_files_are_clear_errors(direct_models, tmp_path, capsys, make, message):
    bad = tmp_path / "bad.model"
    bad.write_bytes(make(direct_models["official"]))
    with pytest.raises(TokenizerError, match=message):
        interop.import_tokenizer(bad.read_bytes(), name="x", where=str(bad))
    code, out = run_cli(capsys, "import-tokenizer", bad, "--out", tmp_path / "tok")
    assert code == 2 and "bad.model" in out and not (tmp_path / "tok").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.model"]  # nothing half-written


def test_model_without_bos_is_refused(dev_sample):
    data = train_direct(dev_sample[:200], 600, {**LOSSLESS, "bos_id": -1})
    with pytest.raises(TokenizerError, match="no BOS piece"):
        import_bytes(data)


def test_existing_outputs_are_replaced_only_when_forced_and_ours(direct_models, tmp_path, capsys):
    model = tmp_path / "a.model"
    model.write_bytes(direct_models["official"])
    out_dir = tmp_path / "tok"
    assert run_cli(capsys, "import-tokenizer", model, "--out", out_dir)[0] == 0
    code, out = run_cli(capsys, "import-tokenizer", model, "--out", out_dir)
    assert code == 2 and "exists; pass --force" in out
    assert run_cli(capsys, "import-tokenizer", model, "--out", out_dir, "--force", "--name", "again")[0] == 0
    assert artifact.load(out_dir).spec.name == "again"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, out = run_cli(capsys, "import-tokenizer", model, "--out", mine, "--force")
    assert code == 2 and "not a pgolf tokenizer directory" in out and (mine / "notes.txt").read_text() == "keep"

    target = tmp_path / "x.model"
    assert run_cli(capsys, "export-tokenizer", out_dir, "--out", target)[0] == 0
    code, out = run_cli(capsys, "export-tokenizer", out_dir, "--out", target)
    assert code == 2 and "exists; pass --force" in out
    assert run_cli(capsys, "export-tokenizer", out_dir, "--out", target, "--force")[0] == 0
    assert target.read_bytes() == model.read_bytes()
    other = tmp_path / "notes.model"
    other.write_text("not a tokenizer")
    code, out = run_cli(capsys, "export-tokenizer", out_dir, "--out", other, "--force")
    assert code == 2 and "not a tokenizer file" in out and other.read_text() == "not a tokenizer"
    code, out = run_cli(capsys, "export-tokenizer", out_dir, "--out", tmp_path / "x.json")
    assert code == 2 and "is named *.model" in out and not (tmp_path / "x.json").exists()
    code, out = run_cli(capsys, "import-tokenizer", tmp_path / "missing.model", "--out", tmp_path / "t2")
    assert code == 2 and "no tokenizer file" in out


def test_operators_as_user_defined_pieces_make_a_caseops_tokenizer(direct_models):
    tok = import_bytes(direct_models["record"])
    assert tok.caseops and set(tok.operator_ids) == set(OPERATORS)
    assert import_bytes(direct_models["official"]).kind == "sentencepiece"
