"""Per-group weight codec: quantized matrices grouped by role, rows chained by similarity, ZPAQ per group.

The 1.0611 record (records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611, from
PR #1586) stores its int6/int7 matrices this way and reports ~280 KB less than brotli-11. ``encode``:

- every int8 matrix goes to the group of its role: the name without its ``blocks.<i>.`` prefix (``attn.c_q.weight``,
  ``mlp.fc.weight``, ``tok_emb.weight``, ...), layers in layer order, so one context-mixing model sees every layer's
  matrix of one kind (same shape, same value statistics);
- the rows of the matrices in ``sort_roles`` are reordered by a greedy nearest-neighbour chain in L1 distance
  (``nn_chain``), so that neighbouring rows are alike; each permutation is stored as its rank among all
  permutations (``perm_to_bytes``: ceil(log2 n!) bits, the least an unstructured permutation can take);
- matrices are stored transposed: after the chain, each column is a run of values from similar rows;
- each group is compressed with ZPAQ (``zpaq`` package, libzpaq's method ``level``; one block per ``block_bytes``,
  so decompression can use one core per block), and so is the remainder (everything else: scales, LQER factors,
  float tensors), which the record gives to brotli-11: ZPAQ made a trained one 8% smaller (23,435 vs 25,447 B); the
  manifest (names, dtypes, shapes: JSON) is brotli-11.

Frame: ``b"PGPG"``, version (1 byte), stream count (1 byte), per stream its length and CRC-32 (uint32 each,
little-endian), then the streams: manifest, remainder, permutations, one per group. ``decode`` checks all of it and
names what is wrong. ``compress``/``decompress`` apply the codec to a serialized ``quant.QuantizedState`` (the
artifact's ``weights`` part) and give back the same bytes.

Counted code (decode side): imports numpy, brotli and, lazily, zpaq.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import brotli
import numpy as np

MAGIC = b"PGPG"
VERSION = 1
# The record's choice (its _SIMSORT_KEYS): the embedding, the query and the MLP-up matrices.
SORT_ROLES = frozenset({"tok_emb.weight", "attn.c_q.weight", "mlp.fc.weight"})
LEVEL = 5
BLOCK_BYTES = 1 << 22
_FIXED = ("manifest", "remainder", "permutations")


class PergroupError(ValueError):
    """A blob that is not a well-formed per-group stream, or input the codec cannot store."""


def role(name: str) -> tuple[str, int]:
    """``("attn.c_q.weight", 3)`` for ``blocks.3.attn.c_q.weight``; ``(name, 0)`` outside the blocks."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return ".".join(parts[2:]), int(parts[1])
    return name, 0


def nn_chain(m: np.ndarray) -> np.ndarray:
    """Row order of the greedy nearest-neighbour chain in L1 distance: start at row 0, then always the closest
    unused row (the lowest index among equals). O(rows^2 * cols): each step is one vectorized pass over the unused
    rows, which are kept contiguous by moving the last one into the gap."""
    rows = m.view(np.uint8) ^ np.uint8(0x80) if m.dtype == np.int8 else m.astype(np.uint8)  # order-preserving
    rows, index = rows.copy(), np.arange(len(rows))
    order = np.empty(len(rows), dtype=np.int64)
    pos, left = 0, len(rows)
    for i in range(len(rows)):
        order[i], current = index[pos], rows[pos].copy()
        left -= 1
        rows[pos], index[pos] = rows[left], index[left]
        if left == 0:
            break
        d = (np.maximum(rows[:left], current) - np.minimum(rows[:left], current)).sum(1, dtype=np.uint32)
        ties = np.flatnonzero(d == d.min())
        pos = int(ties[np.argmin(index[ties])])
    return order


def perm_bytes(n: int) -> int:
    """Bytes of a stored permutation of ``n`` rows: ceil(log2(n!) / 8)."""
    return ((math.factorial(n) - 1).bit_length() + 7) // 8


def perm_to_bytes(perm: np.ndarray) -> bytes:
    """The permutation's Lehmer code (digit i = rank of perm[i] among the values not yet used, radix n - i) read as
    one mixed-radix integer, little-endian in ``perm_bytes(n)`` bytes."""
    n, unused, value = len(perm), np.ones(len(perm), dtype=bool), 0
    for i, p in enumerate(perm.tolist()):
        value = value * (n - i) + int(np.count_nonzero(unused[:p]))
        unused[p] = False
    return value.to_bytes(perm_bytes(n), "little")


def perm_from_bytes(data: bytes, n: int) -> np.ndarray:
    value, digits = int.from_bytes(data, "little"), []
    for radix in range(1, n + 1):
        value, digit = divmod(value, radix)
        digits.append(digit)
    if value:
        raise PergroupError(f"permutation of {n} rows: stored rank is over {n}!")
    unused, perm = np.ones(n, dtype=bool), np.empty(n, dtype=np.int64)
    for i, digit in enumerate(reversed(digits)):
        perm[i] = np.flatnonzero(unused)[digit]
        unused[perm[i]] = False
    return perm


def _zpaq():
    try:
        import zpaq
    except ImportError as e:
        raise ImportError("the pergroup codec needs the zpaq package: pip install 'pgolf[pergroup]'") from e
    return zpaq


def encode(
    tensors: dict[str, np.ndarray],
    *,
    level: int = LEVEL,
    sort_roles: frozenset[str] | None = SORT_ROLES,
    transpose: bool = True,
    block_bytes: int = BLOCK_BYTES,
    single_group: bool = False,
    workers: int = 0,
) -> bytes:
    """``tensors`` (name -> array) as one per-group blob. Every 2-D int8 array is grouped; ``sort_roles`` (None: all)
    get the row chain; ``single_group`` puts every matrix in one stream (an ablation); ``workers`` threads compress
    the groups side by side (0: one per group)."""
    if not 0 <= level <= 5:
        raise PergroupError(f"zpaq level {level}: must be in 0..5")
    manifest, remainder, groups, chained = [], [], {}, set()
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype.hasobject or arr.dtype.kind == "V":
            raise PergroupError(f"tensor {name}: dtype {arr.dtype} has no byte representation")
        if arr.dtype == np.int8 and arr.ndim == 2 and arr.size:
            key, layer = role(name)
            if sort_roles is None or key in sort_roles:
                chained.add(len(manifest))
            key = "*" if single_group else key
            groups.setdefault(key, []).append((layer, len(manifest), arr))
            manifest.append([name, arr.dtype.str, list(arr.shape), key])
        else:
            remainder.append(np.ascontiguousarray(arr).tobytes())
            manifest.append([name, arr.dtype.str, list(arr.shape), None])
    order = sorted(groups)
    for key in order:
        groups[key].sort(key=lambda item: item[:2])

    def pack(key: str) -> tuple[bytes, bytes]:
        body, perms = [], []
        for _, i, arr in groups[key]:
            if i in chained:
                perm = nn_chain(arr)
                perms.append(perm_to_bytes(perm))
                arr = arr[perm]
            body.append(np.ascontiguousarray(arr.T if transpose else arr).tobytes())
        raw = b"".join(body)
        blocks = max(1, -(-len(raw) // block_bytes))
        return _zpaq().compress(raw, level=level, threads=blocks, hints=False), b"".join(perms)

    # Largest group first: the pool's wall time is then close to the total work over the workers.
    by_size = sorted(order, key=lambda key: -sum(arr.size for _, _, arr in groups[key]))
    with ThreadPoolExecutor(workers or max(1, len(order))) as pool:
        done = dict(zip(by_size, pool.map(pack, by_size)))
    packed = [done[key] for key in order]
    head = {"transpose": transpose, "groups": order, "chained": sorted(chained), "tensors": manifest}
    streams = [
        brotli.compress(json.dumps(head, separators=(",", ":")).encode(), quality=11),
        _zpaq().compress(b"".join(remainder), level=level, threads=1, hints=False),
        b"".join(p for _, p in packed),
        *(z for z, _ in packed),
    ]
    if len(streams) > 255:
        raise PergroupError(f"{len(streams) - len(_FIXED)} groups: the frame holds at most {255 - len(_FIXED)}")
    table = b"".join(struct.pack("<II", len(s), zlib.crc32(s)) for s in streams)
    return MAGIC + bytes([VERSION, len(streams)]) + table + b"".join(streams)


def _streams(blob: bytes, where: str) -> list[bytes]:
    if blob[:4] != MAGIC:
        raise PergroupError(f"{where}: not a per-group weight blob (magic {blob[:4]!r}, expected {MAGIC!r})")
    if len(blob) < 6:
        raise PergroupError(f"{where}: truncated header ({len(blob)} bytes)")
    if blob[4] != VERSION:
        raise PergroupError(f"{where}: per-group format version {blob[4]}, this pgolf reads {VERSION}")
    count, pos = blob[5], 6 + 8 * blob[5]
    if count < len(_FIXED) or len(blob) < pos:
        raise PergroupError(f"{where}: truncated stream table ({count} streams, {len(blob)} bytes)")
    streams = []
    for i in range(count):
        size, crc = struct.unpack_from("<II", blob, 6 + 8 * i)
        label = _FIXED[i] if i < len(_FIXED) else f"group {i - len(_FIXED)}"
        data = blob[pos : pos + size]
        if len(data) < size:
            raise PergroupError(f"{where}: {label} stream needs bytes {pos}..{pos + size}, blob has {len(blob)}")
        if zlib.crc32(data) != crc:
            raise PergroupError(f"{where}: {label} stream is corrupt (CRC-32 mismatch)")
        streams.append(data)
        pos += size
    if pos != len(blob):
        raise PergroupError(f"{where}: {len(blob) - pos} unexpected bytes after the last stream")
    return streams


def decode(blob: bytes, *, where: str = "pergroup", workers: int = 0) -> dict[str, np.ndarray]:
    """The tensors ``encode`` was given, bit for bit, in the same order."""
    streams = _streams(blob, where)
    try:
        head = json.loads(brotli.decompress(streams[0]))
    except (brotli.error, ValueError) as e:
        raise PergroupError(f"{where}: the manifest does not decompress: {e}") from None
    groups, manifest, chained = head["groups"], head["tensors"], set(head["chained"])
    if len(streams) != len(_FIXED) + len(groups):
        raise PergroupError(f"{where}: {len(streams)} streams for {len(groups)} groups")

    labels = {1: "the remainder", **{len(_FIXED) + g: f"group {key}" for g, key in enumerate(groups)}}

    def unpack(i: int) -> bytes:
        try:
            return _zpaq().decompress(streams[i])
        except Exception as e:  # libzpaq reports a bad stream as zpaq.Error or RuntimeError
            raise PergroupError(f"{where}: {labels[i]} does not decompress: {e}") from None

    by_size = sorted(labels, key=lambda i: -len(streams[i]))  # the largest first, as in encode
    with ThreadPoolExecutor(workers or len(labels)) as pool:
        raws = dict(zip(by_size, pool.map(unpack, by_size)))
    remainder = raws.pop(1)
    raws = {groups[i - len(_FIXED)]: raw for i, raw in raws.items()}
    members = {key: [] for key in groups}
    for i, (_, _, _, key) in enumerate(manifest):
        if key is not None:
            members[key].append(i)
    out: dict[int, np.ndarray] = {}
    perms, perm_pos = streams[2], 0
    for key in groups:
        raw, pos = raws[key], 0
        for i in sorted(members[key], key=lambda i: (role(manifest[i][0])[1], i)):
            rows, cols = manifest[i][2]
            if pos + rows * cols > len(raw):
                raise PergroupError(f"{where}: group {key} holds {len(raw)} bytes, {manifest[i][0]} needs more")
            arr = np.frombuffer(raw, np.int8, rows * cols, pos)
            arr = arr.reshape(cols, rows).T if head["transpose"] else arr.reshape(rows, cols)
            pos += rows * cols
            if i in chained:
                n = perm_bytes(rows)
                if perm_pos + n > len(perms):
                    raise PergroupError(f"{where}: permutation stream ends before the one of {manifest[i][0]}")
                inverse = np.empty(rows, dtype=np.int64)
                inverse[perm_from_bytes(perms[perm_pos : perm_pos + n], rows)] = np.arange(rows)
                arr, perm_pos = arr[inverse], perm_pos + n
            out[i] = np.ascontiguousarray(arr)
        if pos != len(raw):
            raise PergroupError(f"{where}: group {key} has {len(raw) - pos} bytes beyond its tensors")
    if perm_pos != len(perms):
        raise PergroupError(f"{where}: {len(perms) - perm_pos} unused bytes in the permutation stream")
    pos = 0
    for i, (name, dtype, shape, key) in enumerate(manifest):
        if key is None:
            dt = np.dtype(dtype)
            n = int(np.prod(shape)) * dt.itemsize
            if pos + n > len(remainder):
                raise PergroupError(f"{where}: the remainder ends before tensor {name}")
            out[i] = np.frombuffer(remainder, dt, int(np.prod(shape)), pos).reshape(shape).copy()
            pos += n
    if pos != len(remainder):
        raise PergroupError(f"{where}: {len(remainder) - pos} unused bytes in the remainder")
    return {manifest[i][0]: out[i] for i in range(len(manifest))}


_LQER_PARTS = ("a_q", "b_q", "a_scale", "b_scale")


def state_tensors(weights: bytes) -> dict[str, np.ndarray]:
    """A serialized ``quant.QuantizedState`` as arrays for ``encode``: each matrix's integers under its name (so they
    are grouped), its row scales, LQER factors (flattened: not grouped) and the float16 tensors under
    ``name#part``, and the serialization's header (magic, length, JSON) under ``""``."""
    from .quant import QuantizedState

    qs = QuantizedState.from_bytes(weights)
    (head_len,) = struct.unpack_from("<I", weights, 4)
    out = {"": np.frombuffer(weights, np.uint8, 8 + head_len)}
    for name, e in qs.entries.items():
        if e["format"] not in ("int", "float16"):
            raise PergroupError(f"weights: {name} is {e['format']}, packed already; use zstd, lzma or brotli")
        if e["format"] != "int":
            out[f"{name}#value"] = e["value"]
            continue
        out[name], out[f"{name}#scale"] = e["q"], e["scale"]
        for part in _LQER_PARTS if "lqer" in e else ():
            out[f"{name}#{part}"] = e["lqer"][part].reshape(-1)
    return out


def state_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """The inverse of ``state_tensors``: the serialized ``QuantizedState``."""
    from .quant import QuantizedState

    entries = {}
    for h in json.loads(tensors[""][8:].tobytes()):
        name, shape = h["name"], tuple(h["shape"])
        if h["format"] != "int":
            entries[name] = {"shape": shape, "format": h["format"], "value": tensors[f"{name}#value"]}
            continue
        e = {"shape": shape, "format": "int", "bits": h["bits"], "q": tensors[name], "scale": tensors[f"{name}#scale"]}
        if "lqer" in h:
            (rows, cols), (rank, group) = shape, h["lqer"]
            f = {part: tensors[f"{name}#{part}"] for part in _LQER_PARTS}
            f["a_q"], f["b_q"] = f["a_q"].reshape(rows, rank), f["b_q"].reshape(rank, cols)
            e["lqer"] = {"rank": rank, "group": group, **f}
        if "rot" in h:
            e["rot"] = tuple(h["rot"])
        entries[name] = e
    return QuantizedState(entries).to_bytes()


def compress(weights: bytes, **options) -> bytes:
    """The codec on a serialized ``QuantizedState`` (``encode``'s ``options``); ``decompress`` gives it back."""
    tensors = state_tensors(weights)
    if state_bytes(tensors) != weights:
        raise PergroupError("weights: not in QuantizedState.to_bytes' canonical form, so not stored losslessly")
    return encode(tensors, **options)


def decompress(blob: bytes, *, where: str = "weights") -> bytes:
    try:
        return state_bytes(decode(blob, where=where))
    except (KeyError, ValueError) as e:
        if isinstance(e, PergroupError):
            raise
        raise PergroupError(f"{where}: the tensors do not form quantized weights: {e}") from None
