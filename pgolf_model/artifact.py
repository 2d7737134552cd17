"""The model artifact: one file with everything needed to evaluate the model, and nothing over the budget.

Layout: ``b"PGMA"``, format version (1 byte), number of parts (1 byte), then per part its name (1-byte length +
ASCII), codec id (1 byte, 0 = stored as is, else ``pgolf_data.compress``), stored length (uint32) and the part's
sha256 (32 bytes, over the codec id and the stored bytes), then the parts' bytes in the same order. ``read`` checks
every part's sha256 before decoding anything; version-1 files (no hashes) still read, marked unverified. Parts:

- ``config``: the run's ``Config`` as canonical JSON;
- ``tokenizer``: the tokenizer artifact (``tokenizer.pgt``), byte for byte: its length is what the budget counts;
- ``weights``: the quantized state (``quant.QuantizedState``), compressed (zstd level 22 by default, or the
  per-group codec ``pergroup``, codec id ``PERGROUP_ID``);
- ``code``: the counted code, the source files needed to load and score the model (``CORE_FILES`` and the model
  family's own modules, ``counted_code``), compressed.

``build_model`` rebuilds the model with the counted model code of its family (``model_code``): ``config.py``,
``quant.py`` and the family's modules. The artifact's own copy is someone's Python: it runs only when asked
(``code="artifact"``). By default (``"auto"``) the artifact's model code must be byte for byte the installed code's
(this package's for a built-in family, the installed plugin's for a plugin's), which then runs; an artifact whose
code differs, or whose family is not installed, is refused, naming the files. The writer refuses to produce a file
over ``LIMIT`` bytes.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.metadata
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
# What every artifact's code part holds besides its model family's own modules (the family's ``counted_modules``):
# the settings, the weights format, this loader, the runtime, the scorer, shards and compressors. The package
# docstrings (``__init__.py``) hold no code and are not counted.
CORE_FILES = (
    "pgolf_model/config.py",
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
# The core files that build_model runs with a family's own modules: the rest is loaded by the host's import.
MODEL_CORE_FILES = (
    "pgolf_model/config.py",
    "pgolf_model/quant.py",
    "pgolf_model/lowbit.py",
    "pgolf_model/hadamard.py",
)
# The built-in model families, ``arch -> "module:class"``; a plugin registers its own under the entry-point group
# ``MODEL_GROUP`` (pgolf_model.registry). COUNTED_FILES: all counted pgolf code, the built-in families' included.
BUILTIN_MODELS = {"gpt": "pgolf_model.model:GPT", "ssd": "pgolf_model.ssd:SSD"}
MODEL_GROUP = "pgolf.models"
COUNTED_FILES = (
    *CORE_FILES,
    "pgolf_model/model.py",
    "pgolf_model/attention.py",
    "pgolf_model/ssd.py",
    "pgolf_model/layers.py",
    "pgolf_model/softcap_ce.py",
)
# The code part of a plugin model's artifact also holds this member: ``[pgolf.models]`` then ``NAME = module:class``,
# the entry point the plugin registered, so that trusted code can be rebuilt where the plugin is not installed.
ENTRY_FILE = "entry_points.txt"


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


def model_entry(arch: str) -> str | None:
    """``"module:class"`` of the installed model family ``arch`` (built-in or a plugin's entry point), or None."""
    if arch in BUILTIN_MODELS:
        return BUILTIN_MODELS[arch]
    values = sorted({ep.value for ep in importlib.metadata.entry_points(group=MODEL_GROUP, name=arch)})
    if len(values) > 1:
        raise ArtifactError(f"model.arch {arch!r} is registered by several packages: {', '.join(values)}")
    return values[0] if values else None


def installed_archs() -> list[str]:
    """The built-in families, then the plugins' (sorted)."""
    plugins = sorted({ep.name for ep in importlib.metadata.entry_points(group=MODEL_GROUP)} - set(BUILTIN_MODELS))
    return [*BUILTIN_MODELS, *plugins]


def load_entry(target: str):
    """The object ``"module:attr"`` names."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _source(module: str, owner: str = "pgolf") -> tuple[str, bytes]:
    """``(path in the code part, bytes)`` of a module's source as its loader holds it: the installed file, or the
    source a generated ``train_gpt.py`` carries (``submission.stub``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ArtifactError(f"counted module {module!r} of {owner} is not a Python source file")
    package = spec.submodule_search_locations is not None
    return module.replace(".", "/") + ("/__init__.py" if package else ".py"), spec.loader.get_data(spec.origin)


def counted_code(model_class: type | None = None) -> dict[str, bytes]:
    """The code part of an artifact of ``model_class`` (default: the GPT): ``CORE_FILES``, then the modules the
    family lists in its ``counted_modules``, and for a plugin's family ``ENTRY_FILE`` (each source as ``_source``
    reads it)."""
    model_class = model_class or load_entry(BUILTIN_MODELS["gpt"])
    files = {path: _source(path.removesuffix(".py").replace("/", "."))[1] for path in CORE_FILES}
    for name in model_class.counted_modules:
        path, data = _source(name, model_class.__name__)
        files[path] = data
    arch, target = model_class.Config.arch, f"{model_class.__module__}:{model_class.__qualname__}"
    if BUILTIN_MODELS.get(arch) != target:
        files[ENTRY_FILE] = f"[{MODEL_GROUP}]\n{arch} = {target}\n".encode()
    return files


def model_code(model_class: type | None = None) -> dict[str, bytes]:
    """The part of ``counted_code(model_class)`` that defines the model, which ``build_model`` runs: the settings
    (``config.py``), the weights format (``quant.py``), the family's own modules and a plugin's ``ENTRY_FILE``."""
    files = counted_code(model_class)
    return {path: data for path, data in files.items() if path in MODEL_CORE_FILES or path not in CORE_FILES}


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
        """The model code files (``model_code`` of its family) that differ from the installed code's, or are missing;
        [] if none. A family not installed here: the plugin files the artifact carries, all foreign."""
        from .config import arch_of

        target = model_entry(arch_of(self.config))
        if target is None:
            return sorted({*_plugin_files(self.code), *[ENTRY_FILE] * (ENTRY_FILE in self.code)})
        host = model_code(load_entry(target))
        return [key for key in host if key not in self.code or _digest(self.code[key]) != _digest(host[key])]


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
    """Serves modules from source held in memory: ``{module name: (source, is a package, its file in the code
    part)}``."""

    def __init__(self, modules: dict[str, tuple[bytes, bool, str]], origin: str) -> None:
        self.modules, self.origin = modules, origin

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.modules:
            return None
        is_package = self.modules[fullname][1]
        return importlib.util.spec_from_loader(
            fullname, self, origin=f"{self.origin}:{fullname}", is_package=is_package
        )

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        source, _, filename = self.modules[module.__name__]
        module.__pgolf_source__ = source
        where = f"{self.origin}:{filename}"
        try:
            exec(compile(source, where, "exec"), module.__dict__)
        except Exception as e:  # the artifact's own code: whatever it raises, the artifact is at fault
            raise ArtifactError(f"{where}: the artifact's code fails to load: {type(e).__name__}: {e}") from None


def _import_from(modules: dict[str, tuple[bytes, bool, str]], names: list[str], origin: str) -> list[object]:
    """Import ``names`` with ``modules`` served from memory (modules already imported from the same source are
    reused; another source under the same name is refused)."""
    for name, (source, *_) in modules.items():
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__pgolf_source__", source) != source:
            raise ArtifactError(f"{origin}: another version of module {name} is already loaded in this process")
    before = set(sys.modules)
    importer = _CodeImporter(modules, origin)
    sys.meta_path.insert(0, importer)
    try:
        return [importlib.import_module(name) for name in names]
    except ArtifactError:
        for name in modules.keys() - before:
            sys.modules.pop(name, None)  # a half-imported package must not be reused by the next call
        raise
    finally:
        sys.meta_path.remove(importer)


def _embedded_builtin(art: Artifact, target: str) -> tuple[type, object, object]:
    """The class ``target`` names, and the config and quant modules, from the artifact's own counted code: its
    ``pgolf_model/*.py`` files served as one private package, so their relative imports stay inside the artifact."""
    sources = {
        path.removeprefix("pgolf_model/").removesuffix(".py"): data
        for path, data in art.code.items()
        if path.startswith("pgolf_model/") and path.count("/") == 1 and path.endswith(".py")
    }
    module, _, attr = target.partition(":")
    needed = ("config", "quant", module.rpartition(".")[2])
    missing = [f"pgolf_model/{name}.py" for name in needed if name not in sources]
    if missing:
        raise ArtifactError(f"{art.path}: the counted code has no {', '.join(missing)}")
    digest = hashlib.sha256(b"".join(name.encode() + sources[name] for name in sorted(sources))).hexdigest()[:16]
    package = f"_pgolf_artifact_{digest}"
    modules = {
        package: (b"", True, "pgolf_model/__init__.py"),
        **{f"{package}.{name}": (data, False, f"pgolf_model/{name}.py") for name, data in sources.items()},
    }
    config_mod, quant_mod, model_mod = _import_from(modules, [f"{package}.{name}" for name in needed], art.path)
    return getattr(model_mod, attr), config_mod, quant_mod


def _carried_plugin(art: Artifact, arch: str) -> str:
    """Serve the plugin modules the artifact carries under their own names; the ``"module:class"`` it names."""
    lines = art.code.get(ENTRY_FILE, b"").decode().splitlines()
    target = next((v.strip() for k, _, v in (line.partition("=") for line in lines[1:]) if k.strip() == arch), None)
    if target is None:
        raise ArtifactError(f"{art.path}: model.arch {arch!r}, but its code part has no {ENTRY_FILE} naming the class")
    modules: dict[str, tuple[bytes, bool, str]] = {}
    for path in _plugin_files(art.code):
        name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        modules[name] = (art.code[path], path.endswith("/__init__.py"), path)
        parts = name.split(".")
        for i in range(1, len(parts)):  # namespace parents the artifact does not carry
            parent = ".".join(parts[:i])
            modules.setdefault(parent, (b"", True, parent.replace(".", "/") + "/__init__.py"))
    _import_from(modules, [target.partition(":")[0]], art.path)
    return target


def _plugin_files(code: dict[str, bytes]) -> list[str]:
    """The code part's files outside pgolf: a plugin family's modules."""
    return [path for path in code if path.endswith(".py") and not path.startswith(("pgolf_model/", "pgolf_data/"))]


def _with_gpt_hooks(model_class: type) -> type:
    """A GPT from an artifact written before the model interface, with the LoRA TTT hooks it lacks: its layout is
    the one the host GPT's ``lora_sites`` and ``head`` read (the head computes the same logits, and takes the
    adapter's ``delta``)."""
    from .model import GPT

    hooks = {"lora_sites": GPT.lora_sites, "head": GPT.head, "logit_caps": None}  # None: one cap, as theirs
    return type(model_class.__name__, (model_class,), hooks)


# Which model code ``build_model`` runs: "auto" the installed code when the artifact's is byte for byte the same (else
# UntrustedCodeError), "artifact" the artifact's own (someone's Python: only when the user trusts it), "host" the
# installed code whatever the artifact holds (this pgolf's, or the installed plugin's).
CodeSource = Literal["auto", "artifact", "host"]


def build_model(art: Artifact, *, device="cpu", code: CodeSource = "auto"):
    """``(model, config)`` with dequantized weights, built by the model code ``code`` chooses.

    A built-in family's (``BUILTIN_MODELS``) artifact code is imported as a private package; a plugin family's
    carried modules under their own names, with this pgolf's config and quant. "auto" and "host" need the family
    installed (UntrustedCodeError names the families that are, and the way out).
    """
    from . import config as host_config
    from . import quant as host_quant

    arch = host_config.arch_of(art.config)
    if code == "artifact":
        if arch in BUILTIN_MODELS:
            model_class, config_mod, quant_mod = _embedded_builtin(art, BUILTIN_MODELS[arch])
            if arch == host_config.DEFAULT_ARCH and not hasattr(model_class, "lora_sites"):
                model_class = _with_gpt_hooks(model_class)
        else:
            model_class, config_mod, quant_mod = load_entry(_carried_plugin(art, arch)), host_config, host_quant
    else:
        target = model_entry(arch)
        if target is None:
            raise UntrustedCodeError(
                f"{art.path}: model.arch {arch!r} is not installed here (installed: {', '.join(installed_archs())}); "
                f"install the package that registers it under the entry-point group {MODEL_GROUP!r}, or pass "
                "--trust-artifact-code to run the code the artifact carries (arbitrary Python: only for artifacts you "
                "trust)"
            )
        if code == "auto" and (foreign := art.foreign_model_code()):
            raise UntrustedCodeError(
                f"{art.path}: its model code differs from this pgolf's ({', '.join(foreign)}); loading it would run "
                "that Python: pass --trust-artifact-code if you trust its author, or --host-code to build the model "
                "with this pgolf's code"
            )
        model_class, config_mod, quant_mod = load_entry(target), host_config, host_quant
    family = {} if arch == host_config.DEFAULT_ARCH else {"model_class": model_class.Config}
    cfg = config_mod.Config.from_dict(art.config, where=f"{art.path}: config", **family)
    model = model_class(cfg.model)
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
