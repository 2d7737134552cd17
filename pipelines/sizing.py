"""Budget-fair model sizing: for each tokenizer, the largest model of a preset's shape whose artifact fits the budget.

A comparison gives every tokenizer the same artifact budget (tokenizer + embedding table + other weights + code), so
a larger vocabulary must pay for its bigger embedding table and tokenizer with a smaller rest of the model. The
default budget is the estimated artifact of the preset's model with the reference (first) tokenizer.

The search is deterministic and walks a ladder of candidates from the preset's own size. ``shrink="width"`` varies
the model's width, ``shrink="layers"`` its depth, each by the field and step its family's ``size_step`` hook names
(the GPT: ``model_dim`` in steps of ``2 * num_heads``, so the head dimension stays even as RoPE needs, or
``num_layers`` in steps of one; pgolf_model.registry). When the preset's
size fits, the walk grows while the next size still fits (up to ``max_scale`` times the preset), so a tokenizer with
a smaller vocabulary than the reference may get a larger model; otherwise it shrinks until a size fits. Estimates come
from ``pgolf_model.export.estimate`` (exact except the compressed weights, which it estimates from a Gaussian sample).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pgolf_model import registry
from pgolf_model.artifact import BudgetError
from pgolf_model.config import Config, ConfigError
from pgolf_model.export.estimate import estimate as estimate_artifact

Shrink = Literal["width", "layers"]
SHRINK_MODES = ("width", "layers")
Estimator = Callable[[Config, int], dict[str, int]]


@dataclass(frozen=True)
class Sizing:
    config: Config
    estimate: dict[str, int]  # artifact bytes per part, as pgolf_model.export.estimate gives them
    budget: int
    tried: tuple[tuple[int, int], ...]  # (model_dim or num_layers, estimated total bytes) in the order walked

    @property
    def total(self) -> int:
        return sum(self.estimate.values())


def size_field(cfg: Config, shrink: Shrink) -> tuple[str, int]:
    """The model field that ``shrink`` varies and its step, from the model family's ``size_step`` hook."""
    if shrink not in SHRINK_MODES:
        raise ValueError(f"shrink must be one of {', '.join(SHRINK_MODES)}, got {shrink!r}")
    size_step = getattr(registry.model_class(cfg.arch), "size_step", None)
    if size_step is None:
        raise ConfigError(f"model.arch {cfg.arch} has no size_step hook: the A/B cannot size it to the budget")
    return size_step(cfg.model, shrink)


def ladder(base: Config, shrink: Shrink, max_scale: float) -> tuple[list[Config], int]:
    """The candidate configs, smallest first, and the index of the preset's own size in that list."""
    name, step = size_field(base, shrink)
    size = getattr(base.model, name)
    if size % step:
        raise ValueError(f"the preset's {name} {size} is not a multiple of its sizing step {step}")
    sizes = list(range(step, int(size * max_scale) + 1, step))
    return [base.override({f"model.{name}": s}) for s in sizes], sizes.index(size)


def size_of(cfg: Config, shrink: Shrink) -> int:
    return getattr(cfg.model, size_field(cfg, shrink)[0])


def shape(cfg: Config) -> str:
    """``layers×width`` of a model, as its family's sizing fields give them."""
    return f"{size_of(cfg, 'layers')}×{size_of(cfg, 'width')}"


def reference_budget(base: Config, tokenizer_bytes: int, estimate: Estimator = estimate_artifact) -> int:
    """The estimated artifact bytes of the preset's own model (``base``, bound to the reference tokenizer)."""
    return sum(estimate(base, tokenizer_bytes).values())


def fit(
    base: Config,
    tokenizer_bytes: int,
    budget_bytes: int,
    *,
    shrink: Shrink = "width",
    max_scale: float = 2.0,
    estimate: Estimator = estimate_artifact,
) -> Sizing:
    """Walk the ladder from the preset's size (see the module docstring) to the size that fits ``budget_bytes``;
    ``base`` carries the tokenizer's ids (``pgolf_model.presets.bind_tokenizer``)."""
    if max_scale < 1:
        raise ValueError(f"max_scale must be >= 1 (the preset's own size is always a candidate), got {max_scale}")
    configs, i = ladder(base, shrink, max_scale)
    tried: list[tuple[int, int]] = []

    def measure(j: int) -> dict[str, int]:
        parts = estimate(configs[j], tokenizer_bytes)
        tried.append((size_of(configs[j], shrink), sum(parts.values())))
        return parts

    parts = measure(i)
    if sum(parts.values()) <= budget_bytes:
        while i + 1 < len(configs):
            bigger = measure(i + 1)
            if sum(bigger.values()) > budget_bytes:
                break
            i, parts = i + 1, bigger
        return Sizing(configs[i], parts, budget_bytes, tuple(tried))
    while i > 0:
        i -= 1
        parts = measure(i)
        if sum(parts.values()) <= budget_bytes:
            return Sizing(configs[i], parts, budget_bytes, tuple(tried))
    field = size_field(base, shrink)[0]
    size, total = tried[-1]
    raise BudgetError(
        f"nothing fits: with vocab {base.model.vocab_size} and a {tokenizer_bytes:,}-byte tokenizer, the smallest "
        f"candidate ({field} {size}) is estimated at {total:,} bytes, over the {budget_bytes:,}-byte budget by "
        f"{total - budget_bytes:,}; raise --budget" + (" or use --shrink width" if shrink == "layers" else "")
    )
