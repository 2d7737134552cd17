"""``train_gpt.py``: pgolf's code for one frozen run in a self-extracting exec stub that needs no pgolf installed.

The April records count a two-line wrapper, ``exec`` of base85-encoded compressed source (docs/challenge.md: 157,868
source bytes became 31,999 counted bytes in the 1.0611 record). pgolf's stub is the same shape; what it carries:

- every module of ``pgolf_model`` and ``pgolf_data`` that the entry point (``script.py``: train, quantize, write the
  artifact, score it) imports, found by reading the import statements (``closure``), plus the tokenizer kinds and the
  run's model family, which ``pgolf_data.tokenizer`` and the registry import by name;
- the frozen run: its config and the sha256 of its tokenizer (``frozen``);
- a loader that serves those modules from memory under their own names, so relative imports, tracebacks and the
  artifact's counted code (read back through the loader, ``artifact.counted_code``) work as installed.

Host modules are minified with python-minifier (docstrings dropped, locals renamed) when it is installed; the counted
modules (``artifact.COUNTED_FILES``) are carried byte for byte, so the artifact the stub writes holds exactly the
code pgolf's own artifacts hold. The payload is compressed with lzma or brotli, whichever is smaller.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import json
import lzma
from pathlib import Path

import brotli

from pgolf_data.tokenizer import _KIND_CLASSES
from pgolf_data.tokenizer.artifact import from_artifact
from pgolf_data.tokenizer.caseops_bpe import TRANSFORM_OPTION
from pgolf_data.tokenizer.interop import AUTO, export_tokenizer

from .. import artifact
from ..config import DEFAULT_ARCH, arch_of
from .runs import Run

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pgolf_model", "pgolf_data")
ENTRY = "pgolf_model.submission.script"
EXTRA = tuple(f"pgolf_data.tokenizer.{module}" for module, _ in _KIND_CLASSES.values())

# The payload's loader: modules from the dict S (path -> source), packages from P (name -> its __init__ path).
LOADER = """import sys,importlib.abc as A,importlib.util as U,linecache
class _L(A.MetaPathFinder,A.Loader):
 def find_spec(s,n,p=None,t=None):
  if n in P:return U.spec_from_loader(n,s,origin=P[n],is_package=True)
  f=n.replace('.','/')+'.py'
  if f in S:return U.spec_from_loader(n,s,origin=f)
 def create_module(s,spec):return None
 def exec_module(s,m):
  f=m.__spec__.origin;m.__file__=f;c=S[f];linecache.cache[f]=(len(c),None,c.splitlines(True),f)
  exec(compile(c,f,'exec'),m.__dict__)
 def get_data(s,f):return S[f].encode()
sys.meta_path.insert(0,_L())
from pgolf_model.submission.script import entry
entry(F,__file__)
"""


def _path(module: str) -> str:
    base = module.replace(".", "/")
    return f"{base}/__init__.py" if (REPO / base).is_dir() else f"{base}.py"


def _imports(module: str) -> set[str]:
    """The pgolf modules ``module``'s source imports (at any depth of its code), as absolute names."""
    path = _path(module)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # ``from pkg import module``
    return {name for name in found if name.split(".")[0] in PACKAGES and (REPO / _path(name)).exists()}


def family_module(arch: str) -> str:
    """The module of built-in model family ``arch``, which the registry imports by name (so ``closure`` cannot see
    it); a plugin's family is not pgolf's code, and the stub carries only that."""
    if arch not in artifact.BUILTIN_MODELS:
        raise ValueError(
            f"model.arch {arch!r} is a plugin's family: train_gpt.py carries pgolf's own code only (built-in: "
            f"{', '.join(artifact.BUILTIN_MODELS)})"
        )
    return artifact.BUILTIN_MODELS[arch].partition(":")[0]


def closure(arch: str = DEFAULT_ARCH) -> list[str]:
    """Every pgolf module the entry point, the tokenizer kinds and model family ``arch`` import, transitively, with
    the packages above them; sorted."""
    todo, seen = [ENTRY, *EXTRA, family_module(arch)], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(_imports(name) - seen)
    return sorted(seen)


def minify(source: str) -> str:
    """``source`` without docstrings and with short local names (python-minifier), or as is without it."""
    try:
        import python_minifier
    except ImportError:
        return source
    return python_minifier.minify(
        source, remove_literal_statements=True, rename_globals=False, rename_locals=True, remove_annotations=False,
        hoist_literals=False,
    )  # fmt: skip


@functools.cache  # minifying takes seconds; the sources do not change while a process runs
def sources(minified: bool = True, arch: str = DEFAULT_ARCH) -> dict[str, str]:
    """``{path: source}`` of the carried modules for model family ``arch``; the counted ones byte for byte."""
    out = {}
    for module in closure(arch):
        path = _path(module)
        text = (REPO / path).read_text(encoding="utf-8")
        out[path] = text if path in artifact.COUNTED_FILES or not minified else minify(text)
    return out


def tokenizer_file(tok) -> str:
    """The name ``TOKENIZER_PATH`` has in the records folder: the official one for a SentencePiece model."""
    fmt, _ = export_tokenizer(tok)
    return f"fineweb_{tok.vocab_size}_bpe.model" if fmt == "sentencepiece-model" else f"{tok.spec.name}.json"


def run_tokenizer(run: Run) -> tuple[object, bytes, bytes]:
    """``(tokenizer, its pgolf artifact, its export for TOKENIZER_PATH)``, from the run's model artifact."""
    tokenizer_bytes = artifact.read(run.directory / "model.pga").tokenizer_bytes
    tok = from_artifact(tokenizer_bytes)
    return tok, tokenizer_bytes, export_tokenizer(tok)[1]


def frozen(run: Run) -> dict:
    """What the stub fixes: the run's config (its seed is SEED's default) and its tokenizer's identity."""
    tok, tokenizer_bytes, exported = run_tokenizer(run)
    return {
        "config": run.start["config"],
        "tokenizer_name": tok.spec.name,
        "tokenizer_file": tokenizer_file(tok),
        "tokenizer_sha256": hashlib.sha256(tokenizer_bytes).hexdigest(),
        "tokenizer_export_sha256": hashlib.sha256(exported).hexdigest(),
        "case_transform": tok.spec.options.get(TRANSFORM_OPTION, AUTO),
    }


def payload(frozen_run: dict, minified: bool = True) -> str:
    """The source the stub executes: the modules, the frozen run, the loader."""
    files = sources(minified, arch_of(frozen_run["config"]) if frozen_run else DEFAULT_ARCH)
    packages = {path[: -len("/__init__.py")].replace("/", "."): path for path in files if path.endswith("__init__.py")}
    return (
        f"S={files!r}\nP={packages!r}\nF={json.dumps(frozen_run, sort_keys=True)!r}\nimport json\nF=json.loads(F)\n"
        + LOADER
    )


def wrap(source: str) -> bytes:
    """The two-line exec stub around ``source``, compressed by lzma or brotli, whichever is smaller."""
    raw = source.encode("utf-8")
    packed = {
        "lzma": lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME),
        "brotli": brotli.compress(raw, quality=11, lgwin=24),
    }
    codec = min(packed, key=lambda k: len(packed[k]))
    text = base64.b85encode(packed[codec]).decode("ascii")
    return f'import {codec} as C,base64 as B\nexec(C.decompress(B.b85decode("{text}")))\n'.encode("ascii")


def estimated_bytes(config: dict, tokenizer_name: str) -> int:
    """``build``'s size for a run of ``config`` before there is one: the frozen run's tokenizer fields stand in at
    their lengths (an exported file name; two sha256s, as hex digits as incompressible as theirs), within a few
    dozen bytes of the stub of a real run."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    frozen_run = {
        "config": config,
        "tokenizer_name": tokenizer_name,
        "tokenizer_file": f"{tokenizer_name}.model",
        "tokenizer_sha256": digest,
        "tokenizer_export_sha256": hashlib.sha256(digest.encode()).hexdigest(),
        "case_transform": AUTO,
    }
    return len(wrap(payload(frozen_run)))


def build(run: Run, minified: bool = True) -> bytes:
    """``train_gpt.py`` for ``run``'s config: its bytes, deterministic for the same run and pgolf."""
    return wrap(payload(frozen(run), minified))
