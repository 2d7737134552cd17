"""What ``train_gpt.py`` costs in counted bytes: the carried source as is, minified (python-minifier), and each
compressed with lzma and brotli, side by side, with the 2026-04-27 1.0611 record's stub for scale (157,868 source
bytes, 31,999 counted; docs/challenge.md).

    python bench/stub_size.py

The counted modules (``artifact.COUNTED_FILES``) are never minified: the artifact the stub writes must hold pgolf's
own code. The stub's frozen run is left out (a few hundred bytes of config JSON).
"""

from __future__ import annotations

import base64
import lzma
import time

import brotli

from pgolf_model import artifact
from pgolf_model.submission import stub


def main() -> None:
    modules = stub.closure()
    print(
        f"{len(modules)} modules carried, {sum(p in artifact.COUNTED_FILES for p in map(stub._path, modules))} counted"
    )
    rows = {}
    for label, minified in (("as is", False), ("minified", True)):
        start = time.perf_counter()
        source = stub.payload({}, minified).encode()
        seconds = time.perf_counter() - start
        packed = {
            "lzma": lzma.compress(source, preset=9 | lzma.PRESET_EXTREME),
            "brotli": brotli.compress(source, quality=11, lgwin=24),
        }
        rows[label] = (len(source), {k: len(base64.b85encode(v)) for k, v in packed.items()}, seconds)
    base = rows["as is"][1]["lzma"]
    print(f"{'source':<10}{'bytes':>10}{'lzma+b85':>11}{'brotli+b85':>12}{'vs as-is lzma':>15}{'build s':>9}")
    for label, (size, packed, seconds) in rows.items():
        best = min(packed.values())
        print(f"{label:<10}{size:>10,}{packed['lzma']:>11,}{packed['brotli']:>12,}{best / base:>15.3f}{seconds:>9.1f}")


if __name__ == "__main__":
    main()
