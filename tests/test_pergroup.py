"""The per-group weight codec: lossless on any tensors and on real quantized weights, its row chain against a
brute-force reference, permutation ranks against lexicographic order, and clear errors on damaged blobs."""

from __future__ import annotations

import itertools
import json
import math
import struct
import sys
from pathlib import Path

import brotli
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from model_data import one_thread  # noqa: F401 (autouse fixture)
from quant_model import train_small

from pgolf_model import pergroup
from pgolf_model.export.ptq import quantize_state, tensor_groups
from pgolf_model.export.weights import rules_from_config
from pgolf_model.pergroup import PergroupError, decode, encode, nn_chain, perm_from_bytes, perm_to_bytes
from pgolf_model.quant import QuantizedState

FAST = {"level": 1}  # the frame and the transforms do not depend on the level; level 1 is the quickest
ROLES = ("attn.c_q.weight", "mlp.fc.weight", "mlp.proj.weight", "tok_emb.weight", "gate")

int8_matrix = hnp.arrays(np.int8, st.tuples(st.integers(1, 24), st.integers(1, 24)))
other_array = st.one_of(
    hnp.arrays(st.sampled_from([np.float16, np.float32, np.int8, np.uint16, np.bool_]), hnp.array_shapes(min_dims=0)),
    hnp.arrays(np.int8, st.tuples(st.integers(0, 3), st.just(0))),  # empty matrices stay in the remainder
)
names = st.builds(
    lambda layer, r: f"blocks.{layer}.{r}" if layer >= 0 else r, st.integers(-1, 3), st.sampled_from(ROLES)
)


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


@settings(max_examples=60, deadline=None)
@given(
    matrices=st.dictionaries(names, int8_matrix, max_size=8),
    others=st.dictionaries(st.text(min_size=1, max_size=8), other_array, max_size=4),
    sort_roles=st.sampled_from([None, frozenset(), pergroup.SORT_ROLES]),
    transpose=st.booleans(),
    single_group=st.booleans(),
)
def test_any_tensors_round_trip_exactly(matrices, others, sort_roles, transpose, single_group):
    tensors = {**matrices, **{f"x/{k}": v for k, v in others.items()}}
    options = {"sort_roles": sort_roles, "transpose": transpose, "single_group": single_group, "block_bytes": 64}
    blob = encode(tensors, **options, **FAST)
    assert same(decode(blob), tensors)
    assert encode(tensors, **options, **FAST) == blob  # deterministic


def reference_chain(m: np.ndarray) -> list[int]:
    """The record's rule written plainly: from row 0, the unused row at the least L1 distance, lowest index first."""
    m = m.astype(np.int64)
    order, unused = [0], set(range(1, len(m)))
    while unused:
        nxt = min(unused, key=lambda j: (int(np.abs(m[j] - m[order[-1]]).sum()), j))
        order.append(nxt)
        unused.remove(nxt)
    return order


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int8, st.tuples(st.integers(1, 30), st.integers(1, 12)), elements=st.integers(-128, 127)))
def test_chain_matches_the_brute_force_reference(m):
    assert nn_chain(m).tolist() == reference_chain(m)


def test_chain_puts_alike_rows_side_by_side():
    base = np.random.default_rng(0).integers(-31, 32, (4, 64))
    noisy = np.concatenate([base + np.random.default_rng(i).integers(-1, 2, base.shape) for i in range(5)])
    order = nn_chain(noisy.astype(np.int8))
    # 20 rows from 4 clusters of 5: the chain visits each cluster in one run, so it changes cluster 3 times.
    assert int(np.count_nonzero(np.diff(order % 4))) == 3


def test_permutation_rank_is_its_lexicographic_index():
    for index, perm in enumerate(itertools.permutations(range(5))):
        data = perm_to_bytes(np.array(perm))
        assert int.from_bytes(data, "little") == index and len(data) == 1
        assert perm_from_bytes(data, 5).tolist() == list(perm)


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 2048])
def test_permutations_take_ceil_log2_n_factorial_bits(n):
    perm = np.random.default_rng(n).permutation(n)
    data = perm_to_bytes(perm)
    assert len(data) == math.ceil(math.log2(math.factorial(n)) / 8) if n > 1 else len(data) == 0
    assert perm_from_bytes(data, n).tolist() == perm.tolist()


def test_out_of_range_permutation_rank_is_refused():
    with pytest.raises(PergroupError, match=r"permutation of 3 rows: stored rank is over 3!"):
        perm_from_bytes((6).to_bytes(1, "little"), 3)


def test_roles_follow_the_gpt_names():
    assert pergroup.role("blocks.10.attn.c_q.weight") == ("attn.c_q.weight", 10)
    assert pergroup.role("tok_emb.weight") == ("tok_emb.weight", 0)
    assert pergroup.role("blocks.x.mlp.fc.weight") == ("blocks.x.mlp.fc.weight", 0)


@pytest.fixture(scope="module")
def quantized(dev_docs) -> bytes:
    """A trained smoke model quantized with the 1.0611 record's scheme: int6 SDClip matrices, int7 embedding,
    LQER on the 3 worst (round to nearest: GPTQ changes the values, not the format)."""
    trained = train_small(dev_docs, steps=60)
    cfg = trained.cfg.override(
        {
            "quant.bits": 6,
            "quant.embed_bits": 7,
            "quant.attn_sdclip_k": 13.0,
            "quant.mlp_sdclip_k": 11.5,
            "quant.embed_sdclip_k": 14.0,
        }
    )
    state = trained.model.state_dict()
    groups = tensor_groups(trained.model)
    return quantize_state(state, groups, rules_from_config(cfg), cfg.quant, lqer_rank=4).to_bytes()


def test_quantized_weights_round_trip_byte_for_byte(quantized):
    blob = pergroup.compress(quantized, level=3)
    assert pergroup.decompress(blob) == quantized
    tensors = decode(blob)
    qs = QuantizedState.from_bytes(quantized)
    grouped = {n for n, a in tensors.items() if a.dtype == np.int8 and a.ndim == 2}
    assert grouped == {n for n, e in qs.entries.items() if e["format"] == "int"}
    assert sum("lqer" in e for e in qs.entries.values()) == 3
    head = json.loads(brotli.decompress(pergroup._streams(blob, "t")[0]))
    assert head["groups"] == sorted({pergroup.role(n)[0] for n in grouped})
    chained = {head["tensors"][i][0] for i in head["chained"]}
    assert chained == {n for n in grouped if pergroup.role(n)[0] in pergroup.SORT_ROLES} and chained


def test_any_serialization_with_the_integers_first_round_trips(quantized):
    """The codec cuts only the integer matrices out of the payload; a header it did not write (spaced JSON) and
    bytes of a format it does not know (another packing after the integers) pass through unchanged."""
    (n,) = struct.unpack_from("<I", quantized, 4)
    spaced = quantized[8 : 8 + n].replace(b'"shape":', b'"shape": ')
    other = quantized[:4] + struct.pack("<I", len(spaced)) + spaced + quantized[8 + n :] + bytes(range(256))
    assert pergroup.decompress(pergroup.compress(other, **FAST)) == other


def test_roles_given_by_the_model_decide_the_groups(quantized):
    names = [h["name"] for h in json.loads(quantized[8 : 8 + struct.unpack_from("<I", quantized, 4)[0]])]
    ints = [n for n in names if n.startswith("blocks.")]
    blob = pergroup.compress(quantized, roles={n: ("one", i) for i, n in enumerate(ints)}, **FAST)
    head = json.loads(brotli.decompress(pergroup._streams(blob, "t")[0]))
    assert "one" in head["groups"] and not any(g.startswith(("attn.", "mlp.")) for g in head["groups"])
    assert pergroup.decompress(blob) == quantized


def serialized(header: bytes, payload: bytes = b"") -> bytes:
    return b"PGQW" + struct.pack("<I", len(header)) + header + payload


@pytest.mark.parametrize(
    "weights, message",
    [
        (b"PGPG\0\0\0\0", r"w: not serialized quantized weights \(magic b'PGPG'"),
        (serialized(b"[{"), r"w: the quantized weights' header is not JSON"),
        (serialized(b'[{"name":"m","shape":[4,4],"format":"int"}]', bytes(15)), r"w: the payload ends before .* of m"),
        (serialized(b'[{"name":"#rest","shape":[2]}]'), r"w: tensor name '#rest' is reserved or repeated"),
    ],
)
def test_bad_weights_are_named(weights, message):
    with pytest.raises(PergroupError, match=message):
        pergroup.compress(weights, where="w")


@pytest.fixture(scope="module")
def blob() -> bytes:
    rng = np.random.default_rng(0)
    tensors = {f"blocks.{i}.mlp.fc.weight": rng.integers(-31, 32, (40, 16)).astype(np.int8) for i in range(2)}
    return encode({**tensors, "scale": rng.standard_normal(40).astype(np.float16)}, **FAST)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"PGQW" + b[4:], r"not a per-group weight blob \(magic b'PGQW'"),
        (lambda b: b[:4] + bytes([9]) + b[5:], r"per-group format version 9, this pgolf reads 2"),
        (lambda b: b[:5], r"truncated header \(5 bytes\)"),
        (lambda b: b[:20], r"truncated stream table \(4 streams, 20 bytes\)"),
        (lambda b: b[:-3], r"group 0 stream needs bytes \d+\.\.\d+, blob has \d+"),
        (lambda b: b + b"\0", r"1 unexpected bytes after the last stream"),
    ],
)
def test_malformed_frames_are_named(blob, damage, message):
    with pytest.raises(PergroupError, match=message):
        decode(damage(blob), where="w.pga")


@pytest.mark.parametrize("stream, label", [(0, "manifest"), (1, "remainder"), (2, "permutations"), (3, "group 0")])
def test_a_flipped_byte_names_its_stream(blob, stream, label):
    sizes = [struct.unpack_from("<I", blob, 6 + 8 * i)[0] for i in range(blob[5])]
    if sizes[stream] == 0:
        pytest.skip("empty stream")
    pos = 6 + 8 * blob[5] + sum(sizes[:stream])
    damaged = blob[:pos] + bytes([blob[pos] ^ 0x40]) + blob[pos + 1 :]
    with pytest.raises(PergroupError, match=rf"w\.pga: {label} stream is corrupt \(CRC-32 mismatch\)"):
        decode(damaged, where="w.pga")


def test_bad_input_is_refused():
    with pytest.raises(PergroupError, match=r"zpaq level 6: must be in 0\.\.5"):
        encode({}, level=6)
    with pytest.raises(PergroupError, match=r"tensor x: dtype object has no byte representation"):
        encode({"x": np.array([None])})
    with pytest.raises(PergroupError, match=r"weights: not a per-group weight blob"):
        pergroup.decompress(b"PGQW\0\0\0\0")


@pytest.mark.slow
def test_bench_quick_runs(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import pergroup as bench  # bench/pergroup.py
    finally:
        sys.path.pop(0)
    bench.main(["--quick", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert "pergroup (level 3)" in out and "no row chain" in out and "vs brotli-11" in out
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert {r["codec"] for r in rows} >= {"zstd", "lzma", "brotli", "pergroup (level 3)"}
