"""A content-addressed cache of pipeline stages: each stage's output directory is named by a hash of its inputs.

A stage is ``(name, inputs, build)``. ``inputs`` is a JSON-able dict holding everything the output depends on (spec
content, corpus fingerprint, config, seed, a hash of the code that runs it); ``build(tmp_dir)`` writes the output into
an empty temporary directory, which is renamed into place only when ``build`` returns. So a directory under
``<root>/<name>/<key>`` is always complete, an interrupted run leaves only ``*.tmp`` directories (removed when that
stage runs again), and re-running a pipeline redoes exactly the stages whose inputs changed or never finished.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgolf_data.manifest import write_atomic

INPUTS_NAME = "inputs.json"
KEY_CHARS = 20  # 80 bits of sha256: collisions are not a practical concern for a few thousand stages


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def stage_key(name: str, inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"stage": name, "inputs": inputs}).encode()).hexdigest()[:KEY_CHARS]


@functools.cache
def source_hash(*modules: str) -> str:
    """sha256 over the source of the named modules (a package counts all ``.py`` files under it, sorted).

    Part of a stage's inputs, so that changing the code that produces an output invalidates it. Computed once per
    process: the code a process runs is the code it imported, not what an editor saves meanwhile.
    """
    h = hashlib.sha256()
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"cannot hash the source of {module!r}: module not found")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for path in files:
            h.update(f"{module}:{path.relative_to(origin.parent)}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class StageCache:
    """Stages under ``root``; ``executions`` counts the stages actually built (not reused) by this object.

    ``log`` (optional) receives one line per stage: reused, or built and how long it took.
    """

    def __init__(self, root: str | os.PathLike, log: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.executions: Counter[str] = Counter()
        self.log = log or (lambda message: None)

    def path(self, name: str, inputs: dict[str, Any]) -> Path:
        return self.root / name / stage_key(name, inputs)

    def done(self, name: str, inputs: dict[str, Any]) -> bool:
        return (self.path(name, inputs) / INPUTS_NAME).is_file()

    def run(self, name: str, inputs: dict[str, Any], build: Callable[[Path], None], *, label: str = "") -> Path:
        """The stage's output directory, built now unless a complete one exists; ``label`` names it in the log."""
        final = self.path(name, inputs)
        what = f"{name} {label}".strip()
        if (final / INPUTS_NAME).is_file():
            self.log(f"{what}: cached ({final})")
            return final
        self.log(f"{what}: running")
        start = time.perf_counter()
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted build of this same stage
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            build(tmp)
            # inputs.json is written last inside tmp: it is the mark of a complete stage.
            (tmp / INPUTS_NAME).write_text(
                json.dumps({"stage": name, "inputs": inputs}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            if final.exists():  # a directory without inputs.json is debris from an older layout: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.executions[name] += 1
        self.log(f"{what}: done in {time.perf_counter() - start:.1f} s ({final})")
        return final


def write_json(path: Path, value: Any) -> None:
    """JSON written under a temporary name and renamed, so a reader never sees half a file."""
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
