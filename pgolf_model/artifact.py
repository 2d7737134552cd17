"""The model artifact: one file with everything needed to evaluate the model, and nothing over the budget.

Layout: ``b"PGMA"``, format version (1 byte), number of parts (1 byte), then per part its name (1-byte length +
ASCII), codec id (1 byte, 0 = stored as is, else ``pgolf_data.compress``), stored length (uint32) and the part's
sha256 (32 bytes, over the codec id and the stored bytes), then the parts' bytes in the same order. ``read`` checks
every part's sha256 before decoding anything; version-1 files (no hashes) still read, marked unverified. Parts:

- ``config``: the run's ``Config`` as canonical JSON;
- ``tokenizer``: the tokenizer artifact (``tokenizer.pgt``), byte for byte: its length is what the budget counts;
- ``weights``: the quantized state (``quant.QuantizedState``), compressed (zstd level 22 by default, or the
  per-group codec ``pergroup``, codec id ``PERGROUP_ID``);
- ``code``: the counted code, the source files needed to load and score the model (``COUNTED_FILES``), compressed.

``build_model`` rebuilds the model with the counted model code (``MODEL_MODULES``). The artifact's own copy is
someone's Python: it runs only when asked (``code="artifact"``). By default (``"auto"``) the artifact's model code must
be byte for byte this package's, which then runs; an artifact whose code differs is refused, naming the files.
The writer refuses to produce a file over ``LIMIT`` bytes.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pgolf_data.compress import CODEC_IDS, compress, decompress
from pgolf_data.manifest import write_atomic

from . import pergroup

MAGIC = b"PGMA"
FORMAT_VERSION = 2  # 2: a sha256 per part; 1 (read, unverified): none
READ_VERSIONS = (1, 2)
LIMIT = 16_000_000  # the challenge's cap on code + model bytes (decimal); pgolf also counts the tokenizer
PARTS = ("config", "tokenizer", "weights", "code")
# Everything the evaluation path runs besides torch/numpy: rebuild the model, read shards, score. The package
# docstrings (``__init__.py``) hold no code and are not counted.
COUNTED_FILES = (
    "pgolf_model/config.py",
    "pgolf_model/softcap_ce.py",
    "pgolf_model/model.py",
    "pgolf_model/lowbit.py",
    "pgolf_model/hadamard.py",
    "pgolf_model/quant.py",
    "pgolf_model/artifact.py",
    "pgolf_model/pergroup.py",
    "pgolf_model/runtime.py",
    "pgolf_model/evaluation/scoring.py",
    "pgolf_model/evaluation/byte_counts.py",
    "pgolf_model/evaluation/ttt.py",
    "pgolf_model/evaluation/lora.py",
    "pgolf_model/evaluation/ngram_tilt.py",
    "pgolf_data/shards.py",
    "pgolf_data/compress.py",
)
# The counted modules that define the model; build_model imports these from the artifact itself.
MODEL_MODULES = ("config", "softcap_ce", "lowbit", "model", "hadamard", "quant")
ADDED_MODULES = frozenset({"lowbit", "hadamard"})  # model modules newer than the oldest artifacts pgolf reads


class BudgetError(ValueError):
    """An artifact (or the estimate for a config) over the byte limit; the message says by how much."""


class ArtifactError(ValueError):
    """A file that is not a well-formed model artifact."""


class UntrustedCodeError(ArtifactError):
    """An artifact whose model code differs from this package's, which ``build_model`` runs only when told to."""


PERGROUP_ID = 4  # the weights part's own codec, after pgolf_data.compress's byte codecs
WEIGHT_CODECS = {**CODEC_IDS, "pergroup": PERGROUP_ID}


def codec_for(name: str) -> tuple[str, ...]:
    """The weight codecs ``quant.codec`` names: ``best`` is all of them (the smallest output wins)."""
    return tuple(WEIGHT_CODECS) if name == "best" else (name,)


def weights_codec_name(codec_id: int) -> str:
    return next((name for name, cid in WEIGHT_CODECS.items() if cid == codec_id), "stored")


def compress_weights(
    weights: bytes, codecs: tuple[str, ...], roles: dict[str, tuple[str, int]] | None = None
) -> tuple[int, bytes]:
    """``(codec id, bytes)`` of the smallest of ``codecs`` on a serialized ``QuantizedState``; ``roles`` groups the
    matrices for ``pergroup`` (``pergroup.encode``). The byte codecs run beside the per-group one."""
    plain = tuple(c for c in codecs if c != "pergroup")
    with ThreadPoolExecutor(1) as pool:
        grouped = pool.submit(pergroup.compress, weights, roles=roles) if "pergroup" in codecs else None
        outs = [compress(weights, plain)] if plain else []
        if grouped is not None:
            outs.append((PERGROUP_ID, grouped.result()))
    return min(outs, key=lambda out: len(out[1]))  # the first listed wins ties


def decompress_weights(codec_id: int, data: bytes) -> bytes:
    return pergroup.decompress(data) if codec_id == PERGROUP_ID else decompress(codec_id, data)


def counted_code() -> dict[str, bytes]:
    """The counted files' bytes as their modules' loader holds them: the files of the installed package, or the
    sources a generated ``train_gpt.py`` carries (``submission.stub``)."""
    out = {}
    for path in COUNTED_FILES:
        spec = importlib.util.find_spec(path.removesuffix(".py").replace("/", "."))
        out[path] = spec.loader.get_data(spec.origin)
    return out


def pack_code(files: dict[str, bytes]) -> bytes:
    """Files as ``uint16 path length, path, uint32 size, bytes``, in the given order."""
    out = bytearray()
    for path, data in files.items():
        name = path.encode()
        out += struct.pack("<H", len(name)) + name + struct.pack("<I", len(data)) + data
    return bytes(out)


def unpack_code(blob: bytes) -> dict[str, bytes]:
    files, pos = {}, 0
    while pos < len(blob):
        (n,) = struct.unpack_from("<H", blob, pos)
        path = blob[pos + 2 : pos + 2 + n].decode()
        (size,) = struct.unpack_from("<I", blob, pos + 2 + n)
        start = pos + 6 + n
        files[path] = blob[start : start + size]
        pos = start + size
    return files


def pack(parts: dict[str, tuple[int, bytes]]) -> bytes:
    """``{name: (codec_id, stored_bytes)}`` -> the artifact file's bytes."""
    head = MAGIC + bytes([FORMAT_VERSION, len(parts)])
    for name, (codec, data) in parts.items():
        head += bytes([len(name)]) + name.encode("ascii") + bytes([codec]) + struct.pack("<I", len(data))
        head += part_sha256(codec, data)
    return head + b"".join(data for _, data in parts.values())


def part_sha256(codec: int, stored: bytes) -> bytes:
    """A part's digest: over its codec id too, so that a flipped codec byte cannot decode intact bytes wrongly."""
    return hashlib.sha256(bytes([codec]) + stored).digest()


def container_bytes(names: tuple[str, ...] = PARTS) -> int:
    """The container's own bytes (magic, version, part table) for parts named ``names``: independent of content."""
    return len(pack({name: (0, b"") for name in names}))


def build(
    config_dict: dict, tokenizer_bytes: bytes, weights: bytes, code: dict[str, bytes], weights_codec: str = "zstd"
) -> bytes:
    return build_compressed(config_dict, tokenizer_bytes, compress_weights(weights, codec_for(weights_codec)), code)


def build_compressed(
    config_dict: dict, tokenizer_bytes: bytes, weights: tuple[int, bytes], code: dict[str, bytes]
) -> bytes:
    """``build`` with the weights already compressed, as ``(codec id, bytes)``."""
    config_json = json.dumps(config_dict, sort_keys=True, separators=(",", ":")).encode()
    return pack(
        {
            "config": compress(config_json),
            "tokenizer": (0, tokenizer_bytes),
            "weights": weights,
            "code": compress(pack_code(code)),
        }
    )


def write(path: str | os.PathLike, data: bytes, limit: int = LIMIT) -> Path:
    """Write atomically; refuse (BudgetError, nothing written) when ``data`` is over ``limit`` bytes."""
    if len(data) > limit:
        sizes = ", ".join(f"{name} {size:,}" for name, size in part_sizes(data).items())
        raise BudgetError(
            f"artifact is {len(data):,} bytes, over the {limit:,}-byte limit by {len(data) - limit:,} ({sizes}); "
            f"not written to {path}"
        )
    path = Path(path)
    write_atomic(path, data)
    return path


def parse_parts(data: bytes, where: str) -> tuple[dict[str, tuple[int, bytes]], bool]:
    """``({name: (codec, stored bytes)}, verified)``: every part's sha256 checked (version 2), or none to check (1)."""
    if data[:4] != MAGIC:
        raise ArtifactError(f"{where}: not a pgolf model artifact (magic {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < 6 or data[4] not in READ_VERSIONS:
        version = data[4] if len(data) > 4 else "missing"
        raise ArtifactError(
            f"{where}: artifact format version {version}, this pgolf reads {', '.join(map(str, READ_VERSIONS))}"
        )
    hashed = data[4] >= 2
    pos, entries = 6, []
    for _ in range(data[5]):
        n = data[pos] if pos < len(data) else 0
        end = pos + 6 + n + 32 * hashed
        if end > len(data):
            raise ArtifactError(f"{where}: truncated part table at byte {pos}")
        name = data[pos + 1 : pos + 1 + n].decode("ascii", "replace")
        codec = data[pos + 1 + n]
        (size,) = struct.unpack_from("<I", data, pos + 2 + n)
        entries.append((name, codec, size, data[pos + 6 + n : end] if hashed else None))
        pos = end
    parts = {}
    for name, codec, size, digest in entries:
        if pos + size > len(data):
            raise ArtifactError(f"{where}: part {name!r} needs bytes {pos}..{pos + size}, file has {len(data)}")
        stored = data[pos : pos + size]
        if digest is not None and part_sha256(codec, stored) != digest:
            raise ArtifactError(
                f"{where}: part {name!r} (bytes {pos}..{pos + size}) does not match its sha256: the file is corrupt"
            )
        parts[name] = (codec, stored)
        pos += size
    if pos != len(data):
        raise ArtifactError(f"{where}: {len(data) - pos} unexpected bytes after the last part")
    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise ArtifactError(f"{where}: missing part(s) {', '.join(missing)}")
    return parts, hashed


def part_sizes(data: bytes, where: str = "artifact") -> dict[str, int]:
    """Stored bytes per part, plus ``container`` (magic, version and part table); sums to ``len(data)``."""
    parts, _ = parse_parts(data, where)
    sizes = {name: len(stored) for name, (_, stored) in parts.items()}
    return {**sizes, "container": len(data) - sum(sizes.values())}


@dataclass(frozen=True)
class Artifact:
    path: str
    config: dict
    tokenizer_bytes: bytes
    weights: bytes  # serialized QuantizedState, decompressed
    code: dict[str, bytes]
    sizes: dict[str, int]
    weights_codec: str
    verified: bool = True  # every part matched its sha256; False: a version-1 file, which has none

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def unverified_note(self) -> str | None:
        if self.verified:
            return None
        return f"{self.path}: a version-1 artifact without part hashes: its integrity is unverified"

    def tokenizer(self):
        from pgolf_data.tokenizer.artifact import from_artifact

        return from_artifact(self.tokenizer_bytes, where=f"{self.path}: tokenizer part")

    def foreign_model_code(self) -> list[str]:
        """The model code files (``MODEL_MODULES``) that differ from this package's, or are missing; [] if none."""
        host = counted_code()
        keys = [f"pgolf_model/{name}.py" for name in MODEL_MODULES]
        return [key for key in keys if key not in self.code or _digest(self.code[key]) != _digest(host[key])]


def _digest(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def read(path: str | os.PathLike) -> Artifact:
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model artifact at {path}")
    data = Path(path).read_bytes()
    parts, verified = parse_parts(data, path)

    def open_part(name: str) -> bytes:
        codec, stored = parts[name]
        if codec == 0:
            return stored
        try:
            return decompress_weights(codec, stored) if name == "weights" else decompress(codec, stored)
        except Exception as e:  # any codec failure means the same thing: a corrupt part
            raise ArtifactError(f"{path}: part {name!r} does not decompress: {e}") from None

    try:
        config = json.loads(open_part("config"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: part 'config' is not valid JSON: {e}") from None
    try:
        code = unpack_code(open_part("code"))
    except (struct.error, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: part 'code' is not a file list: {e}") from None
    sizes = {name: len(stored) for name, (_, stored) in parts.items()}
    return Artifact(
        path=path,
        config=config,
        tokenizer_bytes=open_part("tokenizer"),
        weights=open_part("weights"),
        code=code,
        sizes={**sizes, "container": len(data) - sum(sizes.values())},
        weights_codec=weights_codec_name(parts["weights"][0]),
        verified=verified,
    )


class _CodeImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``<package>.<module>`` from source held in memory."""

    def __init__(self, package: str, sources: dict[str, bytes], origin: str) -> None:
        self.package, self.sources, self.origin = package, sources, origin

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.package:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        prefix, _, name = fullname.rpartition(".")
        if prefix == self.package and name in self.sources:
            return importlib.util.spec_from_loader(fullname, self, origin=f"{self.origin}:{name}.py")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        name = module.__name__.rpartition(".")[2]
        if module.__name__ != self.package:
            where = f"{self.origin}:pgolf_model/{name}.py"
            try:
                exec(compile(self.sources[name], where, "exec"), module.__dict__)
            except Exception as e:  # the artifact's own code: whatever it raises, the artifact is at fault
                raise ArtifactError(f"{where}: the artifact's code fails to load: {type(e).__name__}: {e}") from None


def model_modules(art: Artifact) -> dict[str, object]:
    """The artifact's own ``MODEL_MODULES``, imported from its counted code. A module added after the artifact was
    written (``ADDED_MODULES``) may be absent: that artifact's own code does not import it."""
    sources = {}
    for name in MODEL_MODULES:
        key = f"pgolf_model/{name}.py"
        if key in art.code:
            sources[name] = art.code[key]
        elif name not in ADDED_MODULES:
            raise ArtifactError(f"{art.path}: the counted code has no {key}")
    digest = hashlib.sha256(b"".join(sources.values())).hexdigest()[:16]
    package = f"_pgolf_artifact_{digest}"
    if package not in sys.modules:
        importer = _CodeImporter(package, sources, art.path)
        sys.meta_path.insert(0, importer)
        try:
            for name in sources:
                importlib.import_module(f"{package}.{name}")
        except ArtifactError:
            for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
                del sys.modules[name]  # a half-imported package must not be reused by the next call
            raise
        finally:
            sys.meta_path.remove(importer)
    return {name: sys.modules[f"{package}.{name}"] for name in sources}


# Which model code ``build_model`` runs: "auto" this package's when the artifact's is byte for byte the same (else
# UntrustedCodeError), "artifact" the artifact's own (someone's Python: only when the user trusts it), "host" this
# package's whatever the artifact holds.
CodeSource = Literal["auto", "artifact", "host"]


def build_model(art: Artifact, *, device="cpu", code: CodeSource = "auto"):
    """``(model, config)`` with dequantized weights, built by the model code ``code`` chooses."""
    if code == "auto" and (foreign := art.foreign_model_code()):
        raise UntrustedCodeError(
            f"{art.path}: its model code differs from this pgolf's ({', '.join(foreign)}); loading it would run "
            "that Python: pass --trust-artifact-code if you trust its author, or --host-code to build the model with "
            "this pgolf's code"
        )
    if code == "artifact":
        mods = model_modules(art)
        config_mod, model_mod, quant_mod = mods["config"], mods["model"], mods["quant"]
    else:
        from . import config as config_mod
        from . import model as model_mod
        from . import quant as quant_mod
    cfg = config_mod.Config.from_dict(art.config, where=f"{art.path}: config")
    model = model_mod.GPT(cfg.model)
    state = quant_mod.QuantizedState.from_bytes(art.weights, where=f"{art.path}: weights").dequantize()
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        built_by = "its own code" if code == "artifact" else "this pgolf_model"
        way_out = "" if code == "artifact" else " (an older artifact needs its own code: --trust-artifact-code)"
        raise ArtifactError(
            f"{art.path}: the weights do not fit the model built by {built_by}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}{way_out}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device), cfg
