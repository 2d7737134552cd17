"""The compressors and the PGTK tokenizer container: round trips, the smallest codec wins, corrupt input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data import compress
from pgolf_data.tokenizer import TokenizerError, artifact
from pgolf_data.tokenizer.spec import TokenizerSpec


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3000))
def test_every_codec_round_trips(data):
    for cid in compress.CODECS:
        name = compress.codec_name(cid)
        got_id, packed = compress.compress(data, (name,))
        assert got_id == cid
        assert compress.decompress(cid, packed) == data


def test_smallest_codec_wins_and_output_is_deterministic():
    data = b"".join(i.to_bytes(2, "little") * (i % 7 + 1) for i in range(4000))
    cid, packed = compress.compress(data)
    sizes = {n: len(compress.compress(data, (n,))[1]) for n in ("zstd", "lzma", "brotli")}
    assert len(packed) == min(sizes.values())
    assert compress.compress(data) == (cid, packed)


def test_lzma_with_a_dictionary_fitted_to_the_input_matches_the_preset():
    """The shrunk dictionary only saves the preset's table set-up: same bytes as the full preset on real payloads."""
    import lzma

    from pgolf_data.tokenizer import sp_model

    preset = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    charsmap = sp_model.builtin_charsmap("nmt_nfkc")  # ~240 KB of real binary data
    source = Path(compress.__file__).read_bytes()
    for data in (b"", b"x", source, source * 40, charsmap, charsmap[:5000] * 3):
        assert compress.CODECS[2][1](data) == lzma.compress(data, format=lzma.FORMAT_RAW, filters=preset)


def test_unknown_codecs_are_refused():
    with pytest.raises(ValueError, match="unknown compressor 'gzip'"):
        compress.compress(b"x", ("gzip",))
    with pytest.raises(ValueError, match="unknown compressor id 9"):
        compress.decompress(9, b"x")


def _tokenizer():
    from pgolf_data.tokenizer.pure_bytes import ByteTokenizer

    spec = TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260)
    return ByteTokenizer.train(spec, ["some text"], num_threads=1)[0]


def test_container_round_trip_and_corruption(tmp_path):
    tok = _tokenizer()
    data = artifact.to_artifact(tok)
    assert data[:4] == artifact.MAGIC
    again = artifact.from_artifact(data)
    assert again.kind == tok.kind and again.spec == tok.spec
    assert list(again.encode("héllo ▁")) == list(tok.encode("héllo ▁"))
    with pytest.raises(TokenizerError, match="not a pgolf tokenizer artifact"):
        artifact.from_artifact(b"XXXX" + data[4:])
    with pytest.raises(TokenizerError, match="format version 7"):
        artifact.from_artifact(data[:4] + bytes([7]) + data[5:])
    with pytest.raises(TokenizerError, match="corrupt artifact body"):
        artifact.from_artifact(data[:6] + bytes(b ^ 0x5A for b in data[6:]))


def test_load_accepts_directory_or_file_and_names_missing(tmp_path):
    path = artifact.save(_tokenizer(), tmp_path / "tok", {"note": 1})
    assert artifact.load(tmp_path / "tok").kind == "bytes"
    assert artifact.load(path).kind == "bytes"
    assert artifact.load_report(path)["note"] == 1
    with pytest.raises(FileNotFoundError, match="no tokenizer artifact"):
        artifact.load(tmp_path / "nowhere")


@pytest.mark.parametrize("size", [0, 4, 5, 6])
def test_a_truncated_artifact_is_refused_in_one_line(tmp_path, size):
    data = artifact.to_artifact(_tokenizer())
    (tmp_path / "tokenizer.pgt").write_bytes(data[:size])
    with pytest.raises(TokenizerError, match=r"not a pgolf tokenizer artifact|truncated tokenizer artifact"):
        artifact.load(tmp_path)
