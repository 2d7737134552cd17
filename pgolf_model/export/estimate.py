"""The byte budget before training: an estimate of each artifact part for a config, the refusal of one that cannot fit,
and the per-part table (``python -m pgolf_model.budget`` prints it for an artifact or a config).

The estimate is exact for everything but the compressed weights. For those it quantizes a seeded Gaussian sample of
each matrix width with the config's scheme and measures what the config's compressor makes of it. Trained weights
have heavier tails than a Gaussian, so their quantized values carry less entropy and compress a little better (the
baseline's weights estimate, 15,833,683 bytes at zstd-22, is 0.1% above its published int8 + zlib-9 size,
15,815,847); weights still near their uniform initialization compress worse (about 2% on a ``tiny`` model after
42 steps). The writer's check is the hard one.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch

from pgolf_data.compress import compress

from .. import registry
from ..artifact import LIMIT, PARTS, BudgetError, codec_for, container_bytes, counted_code, pack_code
from ..config import Config, QuantConfig
from ..quant import round_to_nearest, row_scales, tensor_format
from .allocation import MIN_BITS
from .ptq import tensor_groups

_SAMPLE_ELEMENTS = 1 << 18


@functools.lru_cache(maxsize=64)
def compressed_bytes_per_value(bits: int, cols: int, clip_quantile: float, sdclip_k: float, codec: str) -> float:
    """Compressed bytes per quantized value for Gaussian rows of width ``cols``."""
    rows = max(8, _SAMPLE_ELEMENTS // cols)
    w = torch.from_numpy(np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32))
    q = round_to_nearest(w, row_scales(w, bits, clip_quantile=clip_quantile, sdclip_k=sdclip_k), bits)
    return len(compress(q.numpy().tobytes(), codec_for(codec))[1]) / q.numel()


def weights_estimate(cfg: Config) -> int:
    """With ``quant.allocate`` every group is estimated at ``allocation.MIN_BITS``: the least the plan can spend."""
    with torch.device("meta"):
        model = registry.build(cfg)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return _weights_estimate(shapes, tensor_groups(model), cfg.quant)


def _weights_estimate(shapes: dict[str, tuple[int, ...]], groups: dict[str, str], q: QuantConfig) -> int:
    total = 8  # magic + header length
    header = []
    for name, shape in shapes.items():
        numel = int(np.prod(shape))
        if tensor_format(shape, q) == "int":
            rows, cols = shape
            group = groups.get(name, "other")
            bits = MIN_BITS if q.allocate else q.bits_of(group)
            per_value = compressed_bytes_per_value(bits, cols, q.clip_quantile, q.sdclip_k_of(group), q.codec)
            total += round(numel * per_value) + 2 * rows
            header.append({"name": name, "shape": list(shape), "format": "int", "bits": bits})
        else:
            total += 2 * numel
            header.append({"name": name, "shape": list(shape), "format": "float16"})
    return total + len(json.dumps(header, separators=(",", ":")))


def estimate(cfg: Config, tokenizer_bytes: int) -> dict[str, int]:
    """Bytes per artifact part for ``cfg``; exact except ``weights``."""
    config_json = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    sizes = {
        "config": len(compress(config_json)[1]),
        "tokenizer": tokenizer_bytes,
        "weights": weights_estimate(cfg),
        "code": len(compress(pack_code(counted_code(registry.model_class(cfg.arch))))[1]),
    }
    return {**sizes, "container": container_bytes(PARTS)}


# The estimate's Gaussian rows overstate trained weights (see the module docstring), the more so the wider the clip:
# with the record presets' configs it is 1.6% over the 1.0611 record's brotli'd weights (SDClip; about 15.92 MB in
# PR #1851) and 18% over the 1.1147 record's whole 15,984,850-byte artifact (per-row absmax int6, lzma). An
# estimate over the limit by no more than this share of its weights is only a warning; the writer's check decides.
ESTIMATE_SLACK = 0.20


def check(cfg: Config, tokenizer_bytes: int, limit: int = LIMIT) -> dict[str, int]:
    """The estimate, or BudgetError saying by how much the config cannot fit (beyond ``ESTIMATE_SLACK``)."""
    sizes = estimate(cfg, tokenizer_bytes)
    total = sum(sizes.values())
    if total > limit + ESTIMATE_SLACK * sizes["weights"]:
        parts = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        params = sum(int(np.prod(s)) for s in registry.parameter_shapes(cfg).values())
        raise BudgetError(
            f"the estimated artifact is {total:,} bytes, over the {limit:,}-byte limit by {total - limit:,} "
            f"({parts}; {params:,} parameters at {cfg.quant.bits} bits), more than trained weights save over the "
            "estimate: shrink the model or lower quant.bits (or the group widths quant.*_bits, or let quant.allocate "
            "choose them)"
        )
    return sizes


def warning(sizes: dict[str, int], limit: int = LIMIT) -> str | None:
    """A sentence for an estimate that ``check`` let through although it is over ``limit``."""
    total = sum(sizes.values())
    if total <= limit:
        return None
    return (
        f"warning: the estimated artifact is {total:,} bytes, {total - limit:,} over the {limit:,}-byte limit; "
        f"trained weights usually compress smaller than the estimate (up to {ESTIMATE_SLACK:.0%}), and the artifact "
        "writer refuses a file that is really over (the trained weights are kept in a checkpoint)"
    )


def format_table(sizes: dict[str, int], limit: int = LIMIT, title: str = "artifact") -> str:
    total = sum(sizes.values())
    width = max(len(k) for k in sizes) + 2
    lines = [f"{title}", *(f"  {k:<{width}}{v:>14,}  {100 * v / limit:6.2f}%" for k, v in sizes.items())]
    lines.append(f"  {'total':<{width}}{total:>14,}  {100 * total / limit:6.2f}%")
    verdict = "fits" if total <= limit else "OVER"
    lines.append(f"  {'limit':<{width}}{limit:>14,}  {verdict}: {limit - total:+,} bytes to spare")
    return "\n".join(lines)
