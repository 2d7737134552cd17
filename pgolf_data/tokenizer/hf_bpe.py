"""Hugging Face ``tokenizers`` byte-level BPE (GPT-2 style), stored as a list of merges.

Id layout: 0..3 are ``<pad>``, ``<s>`` (BOS), ``</s>``, ``<unk>`` as in the SentencePiece kind; 4..259 are the 256
byte-level symbols in the order the HF trainer gives them (sorted by code point of GPT-2's byte-to-unicode map);
then one id per new string a merge creates, in merge order. The compact artifact is therefore just the merges, as
pairs of ids: the whole vocabulary follows from them.

The specials live outside the HF model (its ids are ours minus 4). Given them as trainer ``special_tokens``, HF
would match a literal ``<s>`` in a document as BOS, and map a learned merge that happens to spell ``<s>`` (an HTML
strikethrough tag) onto the BOS id; both would lose text. Training without them and shifting gives the same merges
(the trainer breaks count ties by pair id, and a shift keeps that order) minus those collisions.

Lossless: there is no normalizer and every byte-level symbol is one raw byte, so a token's original byte count is
the length of its string, a per-id table lookup.

``tokenizer_json`` writes the tokenizer as a Hugging Face ``tokenizer.json`` with these ids, and
``read_tokenizer_json`` reads one back; only files in this layout can be read, since the layout is what lets the
artifact hold nothing but the merges.

Threads: encoding and training run on the rayon global pool, sized once per process by ``RAYON_NUM_THREADS``
(default: all cores) and switched off by ``TOKENIZERS_PARALLELISM=false``; a process forked after the pool was used
runs single-threaded (HF's fork guard). Training is deterministic for any thread count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from .base import Tokenizer, TokenizerError
from .spec import TokenizerSpec
from .training import default_threads

# The trainer knobs a spec may set; the others (alphabet, specials, affixes) would break the id layout or losslessness.
TRAINER_OPTIONS = {"min_frequency": 0, "max_token_length": None, "show_progress": False}


def byte_symbols() -> dict[int, str]:
    """GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the others for chr(256 + k)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for k, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + k)
    return table


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _alphabet() -> list[str]:
    """The 256 byte-level symbols in HF-model id order (the trainer sorts its alphabet by code point)."""
    symbols = sorted(byte_symbols().values())
    if set(symbols) != set(pre_tokenizers.ByteLevel.alphabet()):
        raise TokenizerError(f"tokenizers {tokenizers.__version__} uses a different byte-level alphabet than GPT-2's")
    return symbols


_ADDED_TOKEN = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}


def read_tokenizer_json(obj: object, where: str) -> tuple[np.ndarray, list[str]]:
    """The merges (as our ids) of a ``tokenizer.json`` in the hf-bpe layout, and the added tokens after the
    vocabulary (their contents in id order). Raises ``TokenizerError`` naming the first thing that differs."""

    def bad(what: str) -> TokenizerError:
        return TokenizerError(f"{where}: {what}; pgolf reads byte-level BPE tokenizer.json files in its hf-bpe layout")

    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise bad(f"model type {model.get('type') if isinstance(model, dict) else None!r} is not BPE")
    if obj.get("normalizer") is not None:
        raise bad(f"it has a normalizer ({obj['normalizer'].get('type')!r})")
    pre = obj.get("pre_tokenizer") or {}
    if (pre.get("type"), pre.get("add_prefix_space"), pre.get("use_regex")) != ("ByteLevel", False, True):
        raise bad(f"its pre-tokenizer is {pre!r}, not ByteLevel(add_prefix_space=false, use_regex=true)")
    for key, allowed in (("dropout", (None,)), ("unk_token", (None,)), ("continuing_subword_prefix", (None, "")),
                         ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False))):  # fmt: skip
        if model.get(key) not in allowed:
            raise bad(f"model.{key} is {model.get(key)!r}")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise bad("its vocabulary ids are not 0, 1, 2, ...")
    layout = [*HFByteLevelBPETokenizer.SPECIALS.values(), *_alphabet()]
    for k, (got, want) in enumerate(zip(sorted(vocab, key=vocab.get), layout)):
        if got != want:
            raise bad(f"id {k} is {got!r} where the layout has {want!r} (4 specials, then the byte symbols in order)")
    added = sorted(obj.get("added_tokens") or [], key=lambda t: t["id"])
    for t in added:  # an added token spelling a special marks it special; HF then keeps its vocabulary id
        if t["content"] in HFByteLevelBPETokenizer.SPECIALS.values() and vocab.get(t["content"]) != t["id"]:
            raise bad(f"the added token {t['content']!r} has id {t['id']}, not its vocabulary id")
    extra = [t for t in added if t["content"] not in vocab]
    if [t["id"] for t in extra] != list(range(len(vocab), len(vocab) + len(extra))):
        raise bad("its added tokens outside the vocabulary do not follow it")
    try:
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges", [])]
        merges = np.array([[vocab[a], vocab[b]] for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"a merge names a token outside the vocabulary ({e})") from None
    return merges, [t["content"] for t in extra]


@contextmanager
def _parallelism(num_threads: int) -> Iterator[None]:
    """One thread means HF's serial path; more means its rayon pool (whose size only RAYON_NUM_THREADS sets)."""
    key = "TOKENIZERS_PARALLELISM"
    old = os.environ.get(key)
    os.environ[key] = "false" if num_threads <= 1 else "true"
    try:
        yield
    finally:
        if old is None:
            del os.environ[key]
        else:
            os.environ[key] = old


def _rayon_threads() -> int:
    value = os.environ.get("RAYON_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else default_threads()


class HFByteLevelBPETokenizer(Tokenizer):
    kind = "hf-bpe"
    streams_training = True  # the HF trainer counts words as the texts arrive
    SPECIALS: ClassVar[dict[str, str]] = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}

    def __init__(self, spec: TokenizerSpec, merges: np.ndarray) -> None:
        """``merges``: (n, 2) ids in our layout; merge k joins the two ids' strings."""
        super().__init__(spec)
        offset = len(self.SPECIALS)
        merges = np.asarray(merges, dtype=np.int64).reshape(-1, 2)
        symbols = _alphabet()
        index = {s: i for i, s in enumerate(symbols)}
        pairs: list[tuple[str, str]] = []
        for k, (a, b) in enumerate((merges - offset).tolist()):
            if not (0 <= a < len(symbols) and 0 <= b < len(symbols)):
                raise TokenizerError(
                    f"hf-bpe merge {k} joins ids {a + offset} and {b + offset}, "
                    f"but only ids below {len(symbols) + offset} exist at that point"
                )
            pairs.append((symbols[a], symbols[b]))
            joined = symbols[a] + symbols[b]
            if joined not in index:  # two merges may spell the same string; the trainer then reuses its id
                index[joined] = len(symbols)
                symbols.append(joined)
        self.merges = merges.astype(np.uint16)
        self._hf = HFTokenizer(models.BPE(vocab=index, merges=pairs))
        self._hf.pre_tokenizer = _pre_tokenizer()
        to_byte = {s: b for b, s in byte_symbols().items()}
        self._raw = [b""] * offset + [bytes(to_byte[c] for c in s) for s in symbols]
        self._byte_counts = np.array([len(r) for r in self._raw], dtype=np.int32)

    @property
    def vocab_size(self) -> int:
        return len(self._raw)

    @property
    def special_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.SPECIALS)}

    @property
    def lossless(self) -> bool:
        return True

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        offset = len(self.SPECIALS)
        out = []
        for enc in self._hf.encode_batch_fast(list(texts), add_special_tokens=False):
            ids = np.array(enc.ids, dtype=np.int32)
            ids += offset
            out.append(ids)
        return out

    def encode_with_bytes(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(ids, self._byte_counts[ids]) for ids in self.encode_batch(texts)]

    def tokenizer_json(self, extra_tokens: Sequence[str] = ()) -> str:
        """A Hugging Face ``tokenizer.json`` that encodes every text to the ids ``encode_batch`` gives.

        The specials are plain vocabulary entries 0..3, not HF added tokens: HF would match a literal ``<s>`` in
        text as BOS, and renumbers added tokens after the vocabulary on load. No merge can spell them (the
        pre-tokenizer splits ``<``, letters and ``>`` apart), so encoding never yields them. ``extra_tokens``
        (e.g. the CaseOps operators) are added tokens after the vocabulary, matched in text.
        """
        offset = len(self.SPECIALS)
        hf_vocab = self._hf.get_vocab()
        symbols = sorted(hf_vocab, key=hf_vocab.get)
        if set(symbols) & set(self.SPECIALS.values()):
            raise TokenizerError(f"hf-bpe {self.spec.name!r}: a merge spells a special's string; no tokenizer.json")
        vocab = {**{c: i for i, c in enumerate(self.SPECIALS.values())}, **{s: i + offset for s, i in hf_vocab.items()}}
        pairs = [(symbols[a - offset], symbols[b - offset]) for a, b in self.merges.tolist()]
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=pairs))
        hf.pre_tokenizer = _pre_tokenizer()
        hf.decoder = decoders.ByteLevel()
        obj = json.loads(hf.to_str())  # the installed library's own schema
        obj["added_tokens"] = [
            {"id": self.vocab_size + k, "content": c, **_ADDED_TOKEN, "special": False}
            for k, c in enumerate(extra_tokens)
        ]
        return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_tokenizer_json(cls, spec: TokenizerSpec, obj: object, where: str) -> HFByteLevelBPETokenizer:
        """The tokenizer a ``tokenizer.json`` in this layout describes; added tokens after the vocabulary are the
        caller's (``read_tokenizer_json`` lists them)."""
        merges, _ = read_tokenizer_json(obj, where)
        tok = cls(spec, merges)
        offset = len(cls.SPECIALS)
        want = {s: i for s, i in obj["model"]["vocab"].items() if i >= offset}
        if {s: i + offset for s, i in tok._hf.get_vocab().items()} != want:
            raise TokenizerError(
                f"{where}: the vocabulary the merges build differs from the file's; pgolf's hf-bpe layout numbers "
                "each merge's string in merge order"
            )
        return tok

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (empty for specials)."""
        self.check_ids(np.array([token_id], dtype=np.int64))
        return self._raw[token_id]

    def _decode(self, ids: np.ndarray) -> str:
        raw = self._raw
        return b"".join([raw[i] for i in ids.tolist()]).decode("utf-8", errors="replace")

    def _piece(self, token_id: int) -> str:
        if token_id < len(self.SPECIALS):
            return list(self.SPECIALS.values())[token_id]
        return self._raw[token_id].decode("utf-8", errors="backslashreplace")

    @classmethod
    def trainer_options(cls, spec: TokenizerSpec) -> dict:
        unknown = sorted(set(spec.options) - set(TRAINER_OPTIONS))
        if unknown:
            known = ", ".join(TRAINER_OPTIONS)
            raise TokenizerError(f"spec {spec.name!r}: unknown hf-bpe option(s) {', '.join(unknown)}; known: {known}")
        options = {**TRAINER_OPTIONS, **spec.options}
        min_freq, max_len = options["min_frequency"], options["max_token_length"]
        if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 0:
            raise TokenizerError(f"spec {spec.name!r}: min_frequency must be an integer >= 0, got {min_freq!r}")
        if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
            raise TokenizerError(f"spec {spec.name!r}: max_token_length must be an integer >= 1, got {max_len!r}")
        if not isinstance(options["show_progress"], bool):
            raise TokenizerError(f"spec {spec.name!r}: show_progress must be true or false")
        return options

    @classmethod
    def check_spec(cls, spec: TokenizerSpec) -> dict:
        """The trainer options, once the vocabulary size and options are known to be usable."""
        offset = len(cls.SPECIALS)
        if spec.vocab_size < offset + 256:
            raise TokenizerError(
                f"spec {spec.name!r}: hf-bpe needs vocab_size >= {offset + 256} "
                f"({offset} specials + 256 byte symbols), got {spec.vocab_size}"
            )
        return cls.trainer_options(spec)

    @classmethod
    def train(
        cls, spec: TokenizerSpec, texts: Iterable[str], *, num_threads: int, sizes: Sequence[int] | None = None
    ) -> tuple[HFByteLevelBPETokenizer, dict]:
        """``num_threads`` 1 trains serially; any other value uses the rayon pool (see the module docstring)."""
        offset = len(cls.SPECIALS)
        options = cls.check_spec(spec)
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = _pre_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size - offset,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            **options,
        )
        with _parallelism(num_threads):
            hf.train_from_iterator(texts, trainer, length=len(texts) if isinstance(texts, Sized) else None)
        model = json.loads(hf.to_str())["model"]
        vocab = model["vocab"]
        if sorted(vocab, key=vocab.get)[:256] != _alphabet():
            raise TokenizerError(
                f"tokenizers {tokenizers.__version__} numbered the byte symbols differently; "
                "the compact hf-bpe format assumes the alphabet sorted by code point"
            )
        # tokenizers < 0.20 writes a merge as "a b"; byte-level symbols never contain a space.
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        merges = np.array([[vocab[a], vocab[b]] for a, b in pairs], dtype=np.int64).reshape(-1, 2) + offset
        tok = cls(spec, merges)
        if tok._hf.get_vocab() != vocab:
            raise TokenizerError("hf-bpe: the vocabulary rebuilt from the merges differs from the trained one")
        stats = {
            "merges": len(merges),
            "threads": 1 if num_threads <= 1 else _rayon_threads(),
            "tokenizers_version": tokenizers.__version__,
            "trainer_options": options,
        }
        return tok, stats

    def payload(self) -> tuple[dict, bytes]:
        """The merges as little-endian uint16 id pairs, in merge order."""
        return {"merges": len(self.merges)}, self.merges.astype("<u2").tobytes()

    @classmethod
    def from_payload(cls, spec: TokenizerSpec, header: dict, blob: bytes) -> HFByteLevelBPETokenizer:
        n = header.get("merges")
        if not isinstance(n, int) or len(blob) != 4 * n:
            raise TokenizerError(f"hf-bpe artifact: header says {n!r} merges but the blob has {len(blob)} bytes")
        return cls(spec, np.frombuffer(blob, dtype="<u2").reshape(n, 2))
