"""Model families by name, and the interface each one implements (host only).

``--model.arch NAME`` picks the family: a built-in (``gpt``: ``model.GPT``, the record stack's transformer; ``ssd``:
``ssd.SSD``, a state-space / gated linear recurrence LM) or a class that an installed package registers under the
entry-point group ``pgolf.models``, in its ``pyproject.toml``::

    [project.entry-points."pgolf.models"]
    tinylm = "my_package.model:TinyLM"

Everything downstream (trainer, artifact, export, evaluation, budget, A/B, ablation) talks to a model through
``LanguageModel`` and checks for an optional hook before it uses one. Nothing has to subclass ``LanguageModel``; it
documents what ``model_class`` checks. The loading side (``artifact.BUILTIN_MODELS``, ``artifact.model_entry``) is
counted code; this module is not.
"""

from __future__ import annotations

import functools
from dataclasses import fields, is_dataclass, replace
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from . import artifact
from .config import DEFAULT_ARCH, Config, ConfigError, arch_of
from .quant import TensorRole


class LanguageModel(Protocol):
    """A model family. Required:

    - ``Config``: its settings, a dataclass (ideally a ``config.Section``, whose fields validate themselves) with a
      ``ClassVar`` ``arch`` equal to the name it is registered under, and a ``vocab_size`` field (set from the
      tokenizer, as ``bos_id`` is when it has one). Every field is a ``--model.<field>`` flag, typed by its annotation
      (int, float, bool, str, ``Literal``, tuples) and explained by ``metadata={"help": ...}``.
    - ``counted_modules``: the modules (``"my_package.model"``) an artifact must carry besides pgolf's own core
      (``artifact.CORE_FILES``) to rebuild the model: their bytes count in the budget.
    - ``Model(cfg.model)`` builds it, initialized from torch's global RNG (seeded by the trainer).
    - ``forward``, ``logits``, ``param_groups``, ``tensor_roles``: below.

    Optional hooks (a caller checks for each and says so when one it needs is missing):

    - ``set_looping(on)``: the looping schedule of ``train.loop_after`` (depth recurrence).
    - ``lora_sites()``, ``hidden(idx)``, ``head(h, delta)``: score-first LoRA TTT (``eval.ttt lora|phased``):
      ``(view, sites, head)``: a view of the model (shallow copies sharing its parameters, ``layers.shallow``, one
      block per virtual layer) whose modules the adapters wrap, per virtual layer ``{target: (parent module in the
      view, attribute, in, out)}`` for targets among q, k, v, o, mlp, and the head adapter's ``(in, out)``; the
      view's ``hidden`` gives the final hidden states, its ``head`` their logits with ``delta`` added before any
      soft-cap. Full TTT needs no hook.
    - ``head_input(idx)``: ``(weight name, its input)`` of an output matmul that is not an ``nn.Linear`` (a tied
      embedding), so GPTQ gets its Hessian; ``nn.Linear`` inputs are caught by hooks anyway.
    - ``decode(idx, state)``: incremental decoding for the self-generated calibration: the logits of the last
      position after feeding ``idx`` (B, T) on top of ``state`` (None at the start), and the new state.
    - ``flops_per_token(seq_len)``: training FLOPs per token, for comparisons at equal compute.
    - ``size_step(cfg, shrink)``: ``(field, step)`` the A/B's sizing varies for ``"width"`` or ``"layers"``.
    - ``preset_sizes``: ``{preset name: {field: value}}``, its model section for pgolf's presets (otherwise every
      preset gets the ``Config`` defaults).
    - ``ablation_switches(cfg)``: ``{switch: {"model.<field>": (on, off)}}``, its own switches for
      ``pipelines.ablate``.
    """

    Config: ClassVar[type]
    counted_modules: ClassVar[tuple[str, ...]]

    def forward(self, idx: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy in nats of predicting ``targets`` (B, T) from ``idx`` (B, T), each position from itself and
        the ones before it only: a scalar for ``reduction="mean"``, (B, T) for ``"none"``."""

    def logits(self, idx: Tensor) -> Tensor:
        """Next-token logits (B, T, V) in fp32, consistent with ``forward``."""

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every parameter in one optimizer group: ``matrix`` (Muon: 2-D hidden matrices), ``embed`` (Adam: token
        tables), ``head`` (Adam: an untied output head; empty when tied) or ``scalar`` (Adam: the rest)."""

    def tensor_roles(self) -> dict[str, TensorRole]:
        """Every 2-D parameter by state-dict name: its quantization group, role, layer and whether it is a
        vocabulary table (``quant.TensorRole``)."""


REQUIRED = ("Config", "counted_modules", "forward", "logits", "param_groups", "tensor_roles")


def names() -> list[str]:
    """Installed families: the built-ins, then the plugins."""
    return artifact.installed_archs()


@functools.cache
def model_class(arch: str) -> type:
    """The class of family ``arch``, checked against the interface; ConfigError says what is wrong."""
    try:
        target = artifact.model_entry(arch)
    except artifact.ArtifactError as e:
        raise ConfigError(str(e)) from None
    if target is None:
        raise ConfigError(
            f"model.arch = {arch!r}: no such model family is installed (known: {', '.join(names())}); a package "
            f"adds one by registering its class under the entry-point group {artifact.MODEL_GROUP!r}"
        )
    try:
        cls = artifact.load_entry(target)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"model.arch = {arch!r}: its entry point {target} does not load: {e}") from None
    missing = [name for name in REQUIRED if not hasattr(cls, name)]
    if missing:
        raise ConfigError(f"model.arch = {arch!r}: {target} lacks {', '.join(missing)} of the model interface")
    config = cls.Config
    if not is_dataclass(config) or getattr(config, "arch", None) != arch:
        raise ConfigError(f"model.arch = {arch!r}: {target}.Config must be a dataclass whose arch is {arch!r}")
    if "vocab_size" not in {f.name for f in fields(config)}:
        raise ConfigError(f"model.arch = {arch!r}: {target}.Config has no vocab_size field")
    return cls


def build(cfg: Config) -> nn.Module:
    """``cfg``'s model, initialized from torch's global RNG."""
    return model_class(cfg.arch)(cfg.model)


def config_from_dict(data: dict[str, Any], *, where: str = "config") -> Config:
    """``Config.from_dict`` for any installed family."""
    arch = arch_of(data)
    return Config.from_dict(data, model_class=None if arch == DEFAULT_ARCH else model_class(arch).Config, where=where)


def with_arch(cfg: Config, arch: str) -> Config:
    """``cfg`` with the model section of family ``arch``: its ``preset_sizes`` for ``cfg.preset`` over its defaults,
    keeping ``cfg``'s vocabulary size and BOS id (the tokenizer's)."""
    if arch == cfg.arch:
        return cfg
    config = model_class(arch).Config
    names_ = {f.name for f in fields(config)}
    keep = {k: getattr(cfg.model, k) for k in ("vocab_size", "bos_id") if k in names_ and hasattr(cfg.model, k)}
    sizes = getattr(model_class(arch), "preset_sizes", {}).get(cfg.preset, {})
    try:
        return replace(cfg, model=config(**{**keep, **sizes}))
    except ConfigError as e:
        raise ConfigError(f"model.{e}") from None


def parameter_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """``state_dict`` names and shapes of ``cfg``'s model, without allocating (built on the meta device)."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in build(cfg).state_dict().items()}
