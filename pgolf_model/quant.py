"""Weight quantization and its deterministic serialization (the artifact's ``weights`` part, before compression).

Scheme (the baseline's, generalized to any width): each matrix with more than ``keep_float_max_numel`` elements is
quantized per row, symmetric, to integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with one float16 scale per row
(the row's ``clip_quantile`` of |w| divided by the top level); smaller tensors (gains, mixes, skip weights) are kept
as float16. Values of any width are stored one per int8 byte: the compressor removes the unused high bits, which is
what the records do for int5/int6. The bit width is recorded per tensor, so mixed widths and other rounding rules
(GPTQ) produce the same format.

Serialized layout: ``b"PGQW"``, uint32 header length, a canonical JSON header listing every tensor (name, shape,
format, bits, payload offsets), then the payload: all integer values, then all row scales, then all float16 tensors,
each in header order. Grouping like with like compresses better.

This module is part of the artifact's counted code; it imports only numpy, torch and ``.config``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import QuantConfig

MAGIC = b"PGQW"


def quantize_rows(w: Tensor, bits: int, clip_quantile: float) -> tuple[Tensor, Tensor]:
    """Per-row symmetric quantization of a 2-D tensor: ``(q int8, scale float16)`` with ``w ~ q * scale``."""
    assert w.ndim == 2, f"quantize_rows needs a matrix, got shape {tuple(w.shape)}"
    qmax = 2 ** (bits - 1) - 1
    w = w.detach().float()
    clip = torch.quantile(w.abs(), clip_quantile, dim=1) if clip_quantile < 1.0 else w.abs().amax(dim=1)
    scale = (clip / qmax).to(torch.float16)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero (or underflowing) rows
    q = torch.clamp(torch.round(w / scale.float()[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.float()[:, None]


def tensor_format(shape: tuple[int, ...], cfg: QuantConfig) -> str:
    """``"int"`` for tensors quantized per row, ``"float16"`` for the ones kept in float."""
    numel = int(np.prod(shape)) if shape else 1
    return "int" if len(shape) == 2 and numel > cfg.keep_float_max_numel else "float16"


@dataclass
class QuantizedState:
    """A quantized ``state_dict``: per tensor either ``(q, scale, bits)`` or a float16 array."""

    entries: dict[str, dict]  # name -> {"shape", "format", "bits"?, "q"?, "scale"?, "value"?}

    @classmethod
    def quantize(cls, state: dict[str, Tensor], cfg: QuantConfig) -> QuantizedState:
        entries: dict[str, dict] = {}
        for name, t in state.items():
            if not t.is_floating_point():
                raise ValueError(f"state tensor {name} has dtype {t.dtype}; only float tensors are stored")
            shape = tuple(t.shape)
            if tensor_format(shape, cfg) == "int":
                q, scale = quantize_rows(t.cpu(), cfg.bits, cfg.clip_quantile)
                entries[name] = {
                    "shape": shape,
                    "format": "int",
                    "bits": cfg.bits,
                    "q": q.numpy(),
                    "scale": scale.numpy(),
                }
            else:
                entries[name] = {
                    "shape": shape,
                    "format": "float16",
                    "value": t.detach().cpu().to(torch.float16).numpy(),
                }
        return cls(entries)

    def dequantize(self) -> dict[str, Tensor]:
        out = {}
        for name, e in self.entries.items():
            if e["format"] == "int":
                out[name] = dequantize_rows(torch.from_numpy(e["q"]), torch.from_numpy(e["scale"]))
            else:
                out[name] = torch.from_numpy(e["value"].astype(np.float32))
            out[name] = out[name].reshape(e["shape"])
        return out

    def to_bytes(self) -> bytes:
        header, ints, scales, floats = [], [], [], []
        for name, e in self.entries.items():
            item = {"name": name, "shape": list(e["shape"]), "format": e["format"]}
            if e["format"] == "int":
                item["bits"] = e["bits"]
                ints.append(np.ascontiguousarray(e["q"], dtype=np.int8).tobytes())
                scales.append(np.ascontiguousarray(e["scale"], dtype="<f2").tobytes())
            else:
                floats.append(np.ascontiguousarray(e["value"], dtype="<f2").tobytes())
            header.append(item)
        head = json.dumps(header, separators=(",", ":")).encode()
        return MAGIC + struct.pack("<I", len(head)) + head + b"".join(ints + scales + floats)

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "weights") -> QuantizedState:
        if data[:4] != MAGIC:
            raise ValueError(f"{where}: not quantized weights (magic {data[:4]!r}, expected {MAGIC!r})")
        (head_len,) = struct.unpack_from("<I", data, 4)
        header = json.loads(data[8 : 8 + head_len])
        pos = 8 + head_len

        def take(n: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
            nonlocal pos
            nbytes = n * np.dtype(dtype).itemsize
            if pos + nbytes > len(data):
                raise ValueError(f"{where}: payload ends at byte {len(data)}, tensor needs up to {pos + nbytes}")
            arr = np.frombuffer(data, dtype=dtype, count=n, offset=pos).reshape(shape).copy()
            pos += nbytes
            return arr

        entries: dict[str, dict] = {}
        ints = [h for h in header if h["format"] == "int"]
        for h in ints:
            rows, cols = h["shape"]
            entries[h["name"]] = {
                "shape": tuple(h["shape"]),
                "format": "int",
                "bits": h["bits"],
                "q": take(rows * cols, "i1", (rows, cols)),
            }
        for h in ints:
            entries[h["name"]]["scale"] = take(h["shape"][0], "<f2", (h["shape"][0],))
        for h in header:
            if h["format"] == "float16":
                n = int(np.prod(h["shape"])) if h["shape"] else 1
                entries[h["name"]] = {
                    "shape": tuple(h["shape"]),
                    "format": "float16",
                    "value": take(n, "<f2", tuple(h["shape"])),
                }
        if pos != len(data):
            raise ValueError(f"{where}: {len(data) - pos} bytes after the last tensor")
        return cls({h["name"]: entries[h["name"]] for h in header})
