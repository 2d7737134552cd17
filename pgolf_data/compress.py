"""Deterministic byte compressors shared by the tokenizer and model artifacts; the smallest output wins.

Each codec is identified by one byte so an artifact records how to undo itself. All three are deterministic for a
given library version: the same input gives the same bytes, which the artifact hashes rely on.
"""

from __future__ import annotations

import lzma
from concurrent.futures import ThreadPoolExecutor

import brotli
import zstandard

# Raw LZMA2 (no xz container) saves ~60 bytes of headers and checksums per stream; artifacts carry their own hashes.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]

CODECS = {
    1: ("zstd", lambda b: zstandard.ZstdCompressor(level=22).compress(b), lambda b: zstandard.decompress(b)),
    2: (
        "lzma",
        lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
        lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
    ),
    3: ("brotli", lambda b: brotli.compress(b, quality=11, lgwin=24), brotli.decompress),
}
CODEC_IDS = {name: cid for cid, (name, _, _) in CODECS.items()}


def compress(data: bytes, codecs: tuple[str, ...] = ("zstd", "lzma", "brotli")) -> tuple[int, bytes]:
    """``(codec_id, compressed)`` for the codec giving the smallest output (first listed wins ties).

    The codecs run in threads: all three release the GIL, so trying them costs about the slowest one, not the sum.
    """
    for name in codecs:
        if name not in CODEC_IDS:
            raise ValueError(f"unknown compressor {name!r}; known: {', '.join(CODEC_IDS)}")
    assert codecs, "no codec given"
    ids = [CODEC_IDS[name] for name in codecs]
    with ThreadPoolExecutor(len(ids)) as pool:
        outs = list(pool.map(lambda cid: CODECS[cid][1](data), ids))
    best = min(range(len(ids)), key=lambda i: len(outs[i]))  # min() keeps the first of equal sizes
    return ids[best], outs[best]


def decompress(codec_id: int, data: bytes) -> bytes:
    if codec_id not in CODECS:
        raise ValueError(f"unknown compressor id {codec_id}; known: {sorted(CODECS)}")
    return CODECS[codec_id][2](data)


def codec_name(codec_id: int) -> str:
    return CODECS[codec_id][0]
