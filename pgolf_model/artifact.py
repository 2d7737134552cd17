"""The model artifact: one file with everything needed to evaluate the model, and nothing over the budget.

Layout: ``b"PGMA"``, format version (1 byte), number of parts (1 byte), then per part its name (1-byte length +
ASCII), codec id (1 byte, 0 = stored as is, else ``pgolf_data.compress``) and stored length (uint32), then the parts'
bytes in the same order. Parts:

- ``config``: the run's ``Config`` as canonical JSON;
- ``tokenizer``: the tokenizer artifact (``tokenizer.pgt``), byte for byte: its length is what the budget counts;
- ``weights``: the quantized state (``quant.QuantizedState``), compressed (zstd level 22 by default);
- ``code``: the counted code, the source files needed to load and score the model (``CORE_FILES`` and the model
  family's own modules, ``counted_code``), compressed.

A built-in model family is rebuilt from the artifact's own ``config.py``, ``quant.py`` and model modules
(``build_model``), so the counted code is the code that runs; a plugin's family from the installed plugin, or from
the code the artifact carries when the caller trusts it. The writer refuses to produce a file over ``LIMIT`` bytes.
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
from dataclasses import dataclass
from pathlib import Path

from pgolf_data.compress import CODEC_IDS, compress, decompress
from pgolf_data.manifest import write_atomic

MAGIC = b"PGMA"
FORMAT_VERSION = 1
LIMIT = 16_000_000  # the challenge's cap on code + model bytes (decimal); pgolf also counts the tokenizer
PARTS = ("config", "tokenizer", "weights", "code")
_REPO = Path(__file__).resolve().parent.parent
# What every artifact's code part holds besides its model family's own modules (the family's ``counted_modules``):
# the settings, the weights format, this loader, the runtime, the scorer, shards and compressors. The package
# docstrings (``__init__.py``) hold no code and are not counted.
CORE_FILES = (
    "pgolf_model/config.py",
    "pgolf_model/quant.py",
    "pgolf_model/artifact.py",
    "pgolf_model/runtime.py",
    "pgolf_model/evaluation/scoring.py",
    "pgolf_model/evaluation/byte_counts.py",
    "pgolf_model/evaluation/ttt.py",
    "pgolf_model/evaluation/lora.py",
    "pgolf_data/shards.py",
    "pgolf_data/compress.py",
)
# The built-in model families, ``arch -> "module:class"``; a plugin registers its own under the entry-point group
# ``MODEL_GROUP`` (pgolf_model.registry). COUNTED_FILES: all counted pgolf code, the built-in families' included.
BUILTIN_MODELS = {"gpt": "pgolf_model.model:GPT", "ssd": "pgolf_model.ssd:SSD"}
MODEL_GROUP = "pgolf.models"
COUNTED_FILES = (
    *CORE_FILES,
    "pgolf_model/model.py",
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


def codec_for(name: str) -> tuple[str, ...]:
    return ("zstd", "lzma", "brotli") if name == "best" else (name,)


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


def counted_code(model_class: type | None = None) -> dict[str, bytes]:
    """The code part of an artifact of ``model_class`` (default: the GPT): ``CORE_FILES``, then the modules the
    family lists in its ``counted_modules``, and for a plugin's family ``ENTRY_FILE``."""
    model_class = model_class or load_entry(BUILTIN_MODELS["gpt"])
    files = {path: (_REPO / path).read_bytes() for path in CORE_FILES}
    for name in model_class.counted_modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ArtifactError(f"counted module {name!r} of {model_class.__name__} is not a Python source file")
        package = spec.submodule_search_locations is not None
        files[name.replace(".", "/") + ("/__init__.py" if package else ".py")] = Path(spec.origin).read_bytes()
    arch, target = model_class.Config.arch, f"{model_class.__module__}:{model_class.__qualname__}"
    if BUILTIN_MODELS.get(arch) != target:
        files[ENTRY_FILE] = f"[{MODEL_GROUP}]\n{arch} = {target}\n".encode()
    return files


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
    return head + b"".join(data for _, data in parts.values())


def build(
    config_dict: dict, tokenizer_bytes: bytes, weights: bytes, code: dict[str, bytes], weights_codec: str = "zstd"
) -> bytes:
    return build_compressed(config_dict, tokenizer_bytes, compress(weights, codec_for(weights_codec)), code)


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


def _parse(data: bytes, where: str) -> dict[str, tuple[int, bytes]]:
    if data[:4] != MAGIC:
        raise ArtifactError(f"{where}: not a pgolf model artifact (magic {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < 6 or data[4] != FORMAT_VERSION:
        version = data[4] if len(data) > 4 else "missing"
        raise ArtifactError(f"{where}: artifact format version {version}, this pgolf reads {FORMAT_VERSION}")
    pos, entries = 6, []
    for _ in range(data[5]):
        if pos >= len(data):
            raise ArtifactError(f"{where}: truncated part table at byte {pos}")
        n = data[pos]
        name = data[pos + 1 : pos + 1 + n].decode("ascii", "replace")
        codec = data[pos + 1 + n]
        (size,) = struct.unpack_from("<I", data, pos + 2 + n)
        entries.append((name, codec, size))
        pos += 6 + n
    parts = {}
    for name, codec, size in entries:
        if pos + size > len(data):
            raise ArtifactError(f"{where}: part {name!r} needs bytes {pos}..{pos + size}, file has {len(data)}")
        parts[name] = (codec, data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise ArtifactError(f"{where}: {len(data) - pos} unexpected bytes after the last part")
    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise ArtifactError(f"{where}: missing part(s) {', '.join(missing)}")
    return parts


def part_sizes(data: bytes, where: str = "artifact") -> dict[str, int]:
    """Stored bytes per part, plus ``container`` (magic, version and part table); sums to ``len(data)``."""
    parts = _parse(data, where)
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

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def tokenizer(self):
        from pgolf_data.tokenizer.artifact import from_artifact

        return from_artifact(self.tokenizer_bytes, where=f"{self.path}: tokenizer part")


def read(path: str | os.PathLike) -> Artifact:
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model artifact at {path}")
    data = Path(path).read_bytes()
    parts = _parse(data, path)

    def open_part(name: str) -> bytes:
        codec, stored = parts[name]
        if codec == 0:
            return stored
        try:
            return decompress(codec, stored)
        except Exception as e:  # any codec failure means the same thing: a corrupt part
            raise ArtifactError(f"{path}: part {name!r} does not decompress: {e}") from None

    codec_names = {cid: name for name, cid in CODEC_IDS.items()}
    return Artifact(
        path=path,
        config=json.loads(open_part("config")),
        tokenizer_bytes=open_part("tokenizer"),
        weights=open_part("weights"),
        code=unpack_code(open_part("code")),
        sizes=part_sizes(data, path),
        weights_codec=codec_names.get(parts["weights"][0], "stored"),
    )


class _CodeImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves modules from source held in memory: ``{module name: (source, is a package)}``."""

    def __init__(self, modules: dict[str, tuple[bytes, bool]], origin: str) -> None:
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
        source = self.modules[module.__name__][0]
        module.__pgolf_source__ = source
        exec(compile(source, f"{self.origin}:{module.__name__}", "exec"), module.__dict__)


def _import_from(modules: dict[str, tuple[bytes, bool]], names: list[str], origin: str) -> list[object]:
    """Import ``names`` with ``modules`` served from memory (modules already imported from the same source are
    reused; another source under the same name is refused)."""
    for name, (source, _) in modules.items():
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__pgolf_source__", source) != source:
            raise ArtifactError(f"{origin}: another version of module {name} is already loaded in this process")
    importer = _CodeImporter(modules, origin)
    sys.meta_path.insert(0, importer)
    try:
        return [importlib.import_module(name) for name in names]
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
    modules = {package: (b"", True), **{f"{package}.{name}": (data, False) for name, data in sources.items()}}
    config_mod, quant_mod, model_mod = _import_from(modules, [f"{package}.{name}" for name in needed], art.path)
    return getattr(model_mod, attr), config_mod, quant_mod


def _carried_plugin(art: Artifact, arch: str) -> str:
    """Serve the plugin modules the artifact carries under their own names; the ``"module:class"`` it names."""
    lines = art.code.get(ENTRY_FILE, b"").decode().splitlines()
    target = next((v.strip() for k, _, v in (line.partition("=") for line in lines[1:]) if k.strip() == arch), None)
    if target is None:
        raise ArtifactError(f"{art.path}: model.arch {arch!r}, but its code part has no {ENTRY_FILE} naming the class")
    modules: dict[str, tuple[bytes, bool]] = {}
    for path, data in art.code.items():
        if path.endswith(".py") and not path.startswith(("pgolf_model/", "pgolf_data/")):
            name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            modules[name] = (data, path.endswith("/__init__.py"))
            parts = name.split(".")
            for i in range(1, len(parts)):  # namespace parents the artifact does not carry
                modules.setdefault(".".join(parts[:i]), (b"", True))
    _import_from(modules, [target.partition(":")[0]], art.path)
    return target


def _with_gpt_hooks(model_class: type) -> type:
    """A GPT from an artifact written before the model interface, with the LoRA TTT hooks it lacks: its layout is
    the one the host GPT's ``lora_sites`` and ``head`` read (the head computes the same logits, and takes the
    adapter's ``delta``)."""
    from .model import GPT

    return type(model_class.__name__, (model_class,), {"lora_sites": GPT.lora_sites, "head": GPT.head})


def build_model(art: Artifact, *, device="cpu", embedded_code: bool = True, trust_code: bool = False):
    """``(model, config)`` with dequantized weights.

    A built-in family (``BUILTIN_MODELS``) is rebuilt from the artifact's own code, or with ``embedded_code=False``
    from the installed package's. A plugin's family runs the installed plugin; where it is not installed, the code
    the artifact carries runs only with ``trust_code`` (it is arbitrary Python), else ArtifactError says so.
    """
    from . import config as host_config
    from . import quant as host_quant

    arch = host_config.arch_of(art.config)
    if arch in BUILTIN_MODELS and embedded_code:
        model_class, config_mod, quant_mod = _embedded_builtin(art, BUILTIN_MODELS[arch])
        if arch == host_config.DEFAULT_ARCH and not hasattr(model_class, "lora_sites"):
            model_class = _with_gpt_hooks(model_class)
    else:
        target = model_entry(arch)
        if target is None and not trust_code:
            raise ArtifactError(
                f"{art.path}: model.arch {arch!r} is not installed here (installed: {', '.join(installed_archs())}); "
                f"install the package that registers it under the entry-point group {MODEL_GROUP!r}, or pass "
                "--trust-artifact-code to run the code the artifact carries (arbitrary Python: only for artifacts you "
                "trust)"
            )
        model_class = load_entry(target or _carried_plugin(art, arch))
        config_mod, quant_mod = host_config, host_quant
    family = {} if arch == host_config.DEFAULT_ARCH else {"model_class": model_class.Config}
    cfg = config_mod.Config.from_dict(art.config, where=f"{art.path}: config", **family)
    model = model_class(cfg.model)
    state = quant_mod.QuantizedState.from_bytes(art.weights, where=f"{art.path}: weights").dequantize()
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        code = "its own counted code" if embedded_code else "this pgolf_model (an older artifact runs its own code)"
        raise ArtifactError(
            f"{art.path}: the weights do not fit the model built by {code}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device), cfg
