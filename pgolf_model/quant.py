"""Weight quantization and its deterministic serialization (the artifact's ``weights`` part, before compression).

Scheme (the baseline's, generalized to any width): each matrix with more than ``keep_float_max_numel`` elements is
quantized per row, symmetric, to integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with one float16 scale per row
(the row's ``clip_quantile`` of |w|, or SDClip's ``k * std(row)``, divided by the top level); smaller tensors (gains,
mixes, skip weights) are kept as float16. Values of any width are stored one per int8 byte: the compressor removes
the unused high bits, which is what the records do for int5/int6. The bit width is recorded per tensor, so mixed
widths and other rounding rules (GPTQ, ``gptq.py``) produce the same format. A matrix may carry an LQER correction
(``lqer.py``): low-rank factors ``A`` (INT2, one scale) and ``B`` (INT4, one scale per ``group`` values) added back
as ``A B`` on dequantization. A matrix quantized in a Hadamard basis (``export/rotation.py``) carries ``rot: [out,
in]``, the block sizes of its row and column rotations (1 = none); dequantization rotates it back (``hadamard.py``).
Ternary and binary matrices (``lowbit.py``) are stored packed, five trits or eight signs per byte, with one float16
scale per ``group`` weights. A matrix with an AWQ-lite group (``export/awq.py``, PR #1908) carries ``awq: [size,
bits, start, ...]``: its columns ``start .. start + size - 1`` of each start hold ``bits``-bit integers on a second
float16 row scale.

Serialized layout: ``b"PGQW"``, uint32 header length, a canonical JSON header listing every tensor (name, shape,
format, bits, ``lqer: [rank, group]`` and ``rot: [out, in]`` where present), then the payload: all integer values,
then all row scales, then the LQER factors' integers (A then B per tensor) and their scales, then all float16
tensors, then the packed ternary/binary levels and then their group scales, then the AWQ groups' row scales, each in
header order. Grouping like
with like compresses better.

This module is part of the artifact's counted code; it imports only numpy, torch and the counted ``.config``,
``.hadamard`` and ``.lowbit``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import lowbit
from .config import QuantConfig
from .hadamard import rotate

MAGIC = b"PGQW"


def qmax(bits: int) -> int:
    """Largest level of the symmetric ``bits``-bit grid ``[-qmax, qmax]``."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits = {bits}: must be in [2, 8] (values are stored one per int8 byte)")
    return 2 ** (bits - 1) - 1


def row_scales(
    w: Tensor, bits: int, *, clip_quantile: float = 1.0, sdclip_k: float = 0.0, sdclip_correction: int = 0
) -> Tensor:
    """One float16 scale per row: ``sdclip_k * std(row) / qmax`` when ``sdclip_k > 0`` (SDClip, 2026-04-05 record),
    else the row's ``clip_quantile`` of ``|w|`` over ``qmax``. Rows whose scale would be 0 get 1 (they round to 0).
    ``sdclip_correction`` is the std's: 0 divides by n, 1 by n - 1, as the records' ``W.std(dim=1)`` (1.0611's
    gptq_quantize_weight)."""
    assert w.ndim == 2, f"row_scales needs a matrix, got shape {tuple(w.shape)}"
    w = w.detach().float()
    if sdclip_k > 0:
        clip = sdclip_k * w.std(dim=1, correction=sdclip_correction)
    elif clip_quantile < 1.0:
        clip = torch.quantile(w.abs(), clip_quantile, dim=1)
    else:
        clip = w.abs().amax(dim=1)
    scale = (clip / qmax(bits)).to(torch.float16)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def round_to_nearest(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """``clamp(round(w / scale), -qmax, qmax)`` per row, as int8."""
    top = qmax(bits)
    return torch.clamp(torch.round(w.detach().float() / scale.float()[:, None]), -top, top).to(torch.int8)


def quantize_rows(w: Tensor, bits: int, clip_quantile: float) -> tuple[Tensor, Tensor]:
    """Per-row symmetric quantization of a 2-D tensor: ``(q int8, scale float16)`` with ``w ~ q * scale``."""
    scale = row_scales(w, bits, clip_quantile=clip_quantile)
    return round_to_nearest(w, scale, bits), scale


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    return q.float() * scale.float()[:, None]


def dequantize_int(e: dict) -> Tensor:
    """An ``int`` entry's ``q * scale`` (its AWQ groups on their own scale), before any LQER term or rotation."""
    w = dequantize_rows(torch.from_numpy(e["q"]), torch.from_numpy(e["scale"]))
    if "awq" in e:
        size, _, *starts = e["awq"]
        for a in starts:
            w[:, a : a + size] = dequantize_rows(
                torch.from_numpy(e["q"][:, a : a + size]), torch.from_numpy(e["awq_scale"])
            )
    return w


def lqer_correction(f: dict) -> Tensor:
    """``A_hat B_hat`` (float32) from LQER factors ``{"group", "a_q", "a_scale", "b_q", "b_scale"}`` (numpy)."""
    a = torch.from_numpy(f["a_q"]).float() * float(f["a_scale"][0])
    b = torch.from_numpy(f["b_q"]).float()
    b_scale = torch.from_numpy(f["b_scale"].astype(np.float32)).repeat_interleave(f["group"])[: b.numel()]
    return a @ (b.reshape(-1) * b_scale).view_as(b)


def unrotate(w: Tensor, rot: tuple[int, int] | list[int] | None) -> Tensor:
    """A matrix stored in the Hadamard basis ``rot = (out, in)`` back in the model's basis (``H`` is self-inverse)."""
    if rot is None:
        return w
    return rotate(rotate(w, 0, rot[0]), 1, rot[1])


class TensorRole(NamedTuple):
    """What a matrix is for, as its model declares it (``tensor_roles``, the model interface): what export, bit
    allocation and per-group coding read instead of tensor names."""

    group: str  # width group of ``QuantConfig``: embed, attn (the sequence mixer), mlp or other
    role: str  # the tensor's job whatever its layer (e.g. ``attn.c_q.weight``): per-group coding joins its layers
    layer: int | None = None  # the physical layer it belongs to, if any
    vocab: bool = False  # one row per token id: its size follows the vocabulary (the token table, an untied head)


def tensor_format(shape: tuple[int, ...], cfg: QuantConfig) -> str:
    """``"int"`` for tensors quantized per row, ``"float16"`` for the ones kept in float."""
    numel = int(np.prod(shape)) if shape else 1
    return "int" if len(shape) == 2 and numel > cfg.keep_float_max_numel else "float16"


@dataclass
class QuantizedState:
    """A quantized ``state_dict``: per tensor either ``(q, scale, bits)`` or a float16 array."""

    entries: dict[str, dict]  # name -> {"shape", "format", "bits"?, "q"?, "scale"?, "lqer"?, "value"?}

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
                out[name] = dequantize_int(e)
                if "lqer" in e:
                    out[name] += lqer_correction(e["lqer"])
                out[name] = unrotate(out[name], e.get("rot"))
            elif e["format"] in lowbit.KINDS:
                q, scale = torch.from_numpy(e["q"]), torch.from_numpy(e["scale"])
                out[name] = lowbit.dequantize(q, scale, e["format"], e["group"])
            else:
                out[name] = torch.from_numpy(e["value"].astype(np.float32))
            out[name] = out[name].reshape(e["shape"])
        return out

    def to_bytes(self) -> bytes:
        header, ints, scales, lqer_ints, lqer_scales, floats, packed, group_scales = [], [], [], [], [], [], [], []
        awq_scales = []
        for name, e in self.entries.items():
            item = {"name": name, "shape": list(e["shape"]), "format": e["format"]}
            if e["format"] == "int":
                item["bits"] = e["bits"]
                if "rot" in e:
                    item["rot"] = list(e["rot"])
                if "awq" in e:
                    item["awq"] = list(e["awq"])
                    awq_scales.append(np.ascontiguousarray(e["awq_scale"], dtype="<f2").tobytes())
                ints.append(np.ascontiguousarray(e["q"], dtype=np.int8).tobytes())
                scales.append(np.ascontiguousarray(e["scale"], dtype="<f2").tobytes())
                if "lqer" in e:
                    f = e["lqer"]
                    item["lqer"] = [f["rank"], f["group"]]
                    lqer_ints += [np.ascontiguousarray(f[k], dtype=np.int8).tobytes() for k in ("a_q", "b_q")]
                    lqer_scales += [np.ascontiguousarray(f[k], dtype="<f2").tobytes() for k in ("a_scale", "b_scale")]
            elif e["format"] in lowbit.KINDS:
                item["group"] = e["group"]
                packed.append(lowbit.pack(e["q"], e["format"]).tobytes())
                group_scales.append(np.ascontiguousarray(e["scale"], dtype="<f2").tobytes())
            else:
                floats.append(np.ascontiguousarray(e["value"], dtype="<f2").tobytes())
            header.append(item)
        head = json.dumps(header, separators=(",", ":")).encode()
        payload = ints + scales + lqer_ints + lqer_scales + floats + packed + group_scales + awq_scales
        return MAGIC + struct.pack("<I", len(head)) + head + b"".join(payload)

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
            if "rot" in h:
                entries[h["name"]]["rot"] = tuple(h["rot"])
            if "awq" in h:
                entries[h["name"]]["awq"] = tuple(h["awq"])
        for h in ints:
            entries[h["name"]]["scale"] = take(h["shape"][0], "<f2", (h["shape"][0],))
        corrected = [h for h in ints if "lqer" in h]
        for h in corrected:
            (rows, cols), (rank, group) = h["shape"], h["lqer"]
            f = {"rank": rank, "group": group, "a_q": take(rows * rank, "i1", (rows, rank))}
            entries[h["name"]]["lqer"] = {**f, "b_q": take(rank * cols, "i1", (rank, cols))}
        for h in corrected:
            (_, cols), (rank, group) = h["shape"], h["lqer"]
            f = entries[h["name"]]["lqer"]
            f["a_scale"] = take(1, "<f2", (1,))
            f["b_scale"] = take(-(-rank * cols // group), "<f2", (-(-rank * cols // group),))
        for h in header:
            if h["format"] == "float16":
                n = int(np.prod(h["shape"])) if h["shape"] else 1
                entries[h["name"]] = {
                    "shape": tuple(h["shape"]),
                    "format": "float16",
                    "value": take(n, "<f2", tuple(h["shape"])),
                }
        packed = [h for h in header if h["format"] in lowbit.KINDS]
        for h in packed:
            n, kind = int(np.prod(h["shape"])), h["format"]
            try:
                q = lowbit.unpack(take(lowbit.packed_size(n, kind), "u1", (-1,)), kind, n)
            except ValueError as e:
                raise ValueError(f"{where}: {h['name']}: {e}") from None
            shape = tuple(h["shape"])
            entries[h["name"]] = {"shape": shape, "format": kind, "group": h["group"], "q": q.reshape(shape)}
        for h in packed:
            groups = int(np.prod(h["shape"])) // h["group"]
            entries[h["name"]]["scale"] = take(groups, "<f2", (groups,))
        for h in ints:
            if "awq" in h:
                entries[h["name"]]["awq_scale"] = take(h["shape"][0], "<f2", (h["shape"][0],))
        if pos != len(data):
            raise ValueError(f"{where}: {len(data) - pos} bytes after the last tensor")
        return cls({h["name"]: entries[h["name"]] for h in header})
