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
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": _LZMA_PRESET}]
_LZMA_MAX_DICT = 64 << 20  # the preset's own dictionary


def _lzma_compress(data: bytes) -> bytes:
    """The preset, with the dictionary shrunk to the next power of two >= the input.

    The preset's 64 MiB dictionary makes liblzma allocate and zero a 64 MB match-finder hash table per call (~40 ms,
    holding the GIL), which dominated compressing a few-KB tokenizer artifact. A dictionary at least as long as the
    input still reaches every byte of it (the output matched the preset's byte for byte on every tokenizer and model
    buffer we compared), and a raw stream records no dictionary size, so ``_LZMA_FILTERS`` decodes it.
    """
    dict_size = min(max(4096, 1 << (len(data) - 1).bit_length()), _LZMA_MAX_DICT)
    filters = [{"id": lzma.FILTER_LZMA2, "preset": _LZMA_PRESET, "dict_size": dict_size}]
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


CODECS = {
    1: ("zstd", lambda b: zstandard.ZstdCompressor(level=22).compress(b), lambda b: zstandard.decompress(b)),
    2: ("lzma", _lzma_compress, lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)),
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
