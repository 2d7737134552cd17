"""The pure-byte tokenizer: the challenge's byte260 layout, one token per UTF-8 byte.

Ids 0..3 are ``<pad>``, ``<s>`` (BOS), ``</s>``, ``<unk>``; byte ``b`` is id ``b + 4`` (docs/formats.md). Nothing
is learned, so the artifact holds only the spec, and every token accounts for exactly one original byte.

The challenge's export describes this tokenizer in a small JSON file (``OFFICIAL_JSON_NAME``): ``tokenizer_type``
``"pure_byte"``, the ``config`` of ids above and ``vocab_size``, keys sorted, two-space indent, a final newline.
``official_json`` writes it and ``check_official_json`` reads one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from .base import Tokenizer, TokenizerError
from .spec import TokenizerSpec

SPECIALS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
OFFSET = len(SPECIALS)
VOCAB_SIZE = OFFSET + 256
LAYOUT = "byte260"
OFFICIAL_JSON_NAME = "fineweb_pure_byte_260.json"
OFFICIAL_CONFIG = {"pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3, "byte_offset": OFFSET, "byte_count": 256}


def official_json() -> str:
    """The challenge export's description of the pure-byte tokenizer."""
    payload = {"tokenizer_type": "pure_byte", "config": OFFICIAL_CONFIG, "vocab_size": VOCAB_SIZE}
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def check_official_json(obj: object, where: str) -> None:
    """Raise unless ``obj`` (parsed JSON) describes exactly this layout."""
    want = json.loads(official_json())
    if obj != want:
        got = {k: obj.get(k) for k in want} if isinstance(obj, dict) else obj
        raise TokenizerError(f"{where}: a pure-byte tokenizer other than the byte260 layout {want}: {got}")


class ByteTokenizer(Tokenizer):
    kind = "bytes"

    def __init__(self, spec: TokenizerSpec) -> None:
        if spec.vocab_size != VOCAB_SIZE:
            raise TokenizerError(
                f"spec {spec.name!r}: the bytes kind has a fixed vocabulary of {VOCAB_SIZE} ids "
                f"({OFFSET} specials + 256 byte values), got vocab_size {spec.vocab_size}"
            )
        super().__init__(spec)

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def special_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(SPECIALS)}

    @property
    def lossless(self) -> bool:
        return True

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
            ids += OFFSET
            out.append(ids)
        return out

    def encode_with_bytes(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(ids, np.ones(len(ids), dtype=np.int32)) for ids in self.encode_batch(texts)]

    def _decode(self, ids: np.ndarray) -> str:
        raw = (ids[ids >= OFFSET] - OFFSET).astype(np.uint8).tobytes()
        return raw.decode("utf-8", errors="replace")

    def _piece(self, token_id: int) -> str:
        if token_id < OFFSET:
            return list(SPECIALS.values())[token_id]
        byte = token_id - OFFSET
        return chr(byte) if 0x21 <= byte < 0x7F else f"<0x{byte:02X}>"

    @classmethod
    def train(
        cls, spec: TokenizerSpec, texts: list[str], *, num_threads: int, sizes: Sequence[int] | None = None
    ) -> tuple[ByteTokenizer, dict]:
        cls.check_spec(spec)
        return cls(spec), {"layout": LAYOUT, "learned": "nothing (fixed layout)"}

    @classmethod
    def check_spec(cls, spec: TokenizerSpec) -> None:
        if spec.options:
            raise TokenizerError(f"spec {spec.name!r}: the bytes kind takes no options, got {sorted(spec.options)}")
        cls(spec)  # the constructor checks the vocabulary size

    def payload(self) -> tuple[dict, bytes]:
        return {"layout": LAYOUT}, b""

    @classmethod
    def from_payload(cls, spec: TokenizerSpec, header: dict, blob: bytes) -> ByteTokenizer:
        if header.get("layout") != LAYOUT or blob:
            raise TokenizerError(
                f"bytes artifact: expected layout {LAYOUT!r} and an empty blob, "
                f"got layout {header.get('layout')!r} and {len(blob)} blob bytes"
            )
        return cls(spec)
