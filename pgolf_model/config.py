"""Typed run configuration: one small dataclass per section (model, optim, train, quant, eval).

Every setting is one command-line flag (``pgolf_model.cli``), applied on top of a preset (``pgolf_model.presets``).
Choices are ``Literal`` types and lists are tuples, so the checks here and the command line read both from the
annotations; each field's range sits beside its help. Each dataclass validates itself on creation and raises
``ConfigError`` naming the field and the value (with its full dotted path when built through ``Config``).
``Config.to_dict`` / ``Config.from_dict`` give the JSON saved in checkpoints and artifacts; ``from_dict`` also reads
the JSON written before the test-time-training settings were nested (flat ``eval.full_*`` keys, comma strings).

The ``model`` section is the model family's own dataclass (``ModelConfig`` is the GPT's; ``pgolf_model.registry`` has
the others), named by its ``arch``. Its JSON carries ``"arch"`` for every family but the GPT: a model section without
one is a GPT's, as every artifact written before there were other families says, and a GPT's config stays the
bytes it was.

This module is part of the artifact's counted code (it defines the model's shape), so it imports nothing from
outside the standard library.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

DEFAULT_ARCH = "gpt"  # the model family of a config whose model section names none
# Token ids are stored as uint16 in shards: np.iinfo(pgolf_data.shards.TOKEN_DTYPE).max + 1 (a test checks).
VOCAB_LIMIT = 65_536

Codec = Literal["zstd", "lzma", "brotli", "pergroup", "best"]
NSCoefficients = Literal["fixed", "polar_express"]
QuantMethod = Literal["rtn", "gptq"]
TTTMode = Literal["none", "full", "lora", "phased"]
LoRATarget = Literal["q", "k", "v", "o", "mlp"]
Rotation = Literal["vo", "input", "residual"]
LowBitKind = Literal["none", "ternary", "binary"]
TTTCompile = Literal["off", "inductor", "aot_eager"]
CalibSource = Literal["self", "train"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the value."""


class FieldError(ConfigError):
    """A field's value is wrong; the message starts with the field's name, so an enclosing section can prefix it."""


Rule = tuple[Callable[[Any], bool], str]
POSITIVE: Rule = (lambda v: v > 0, "must be positive")
POSITIVE_INT: Rule = (lambda v: isinstance(v, int) and v > 0, "must be a positive integer")
NON_NEGATIVE: Rule = (lambda v: v >= 0, "must be >= 0")
FRACTION: Rule = (lambda v: 0 <= v < 1, "must be in [0, 1)")
UNIT: Rule = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
BITS: Rule = (lambda v: 2 <= v <= 8, "must be in [2, 8]")
GROUP_BITS: Rule = (lambda v: v == 0 or 2 <= v <= 8, "must be 0 (= quant.bits) or in [2, 8]")
QUANTILE: Rule = (lambda v: 0 < v <= 1, "must be in (0, 1]")


def _field(default: Any, help: str, rule: Rule | None = None) -> Any:
    return field(default=default, metadata={"help": help, "rule": rule})


def _require(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise FieldError(f"{name} = {value!r}: {why}")


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def choices(kind: Any) -> tuple | None:
    """The values a ``Literal`` type (or a tuple of one) allows; None for other types."""
    if get_origin(kind) is tuple:
        kind = get_args(kind)[0]
    return get_args(kind) if get_origin(kind) is Literal else None


class Section:
    """Validation on creation: each field's rule, ``Literal`` choices and tuple types, then the section's ``check``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value, kind = getattr(self, f.name), type_hints(type(self))[f.name]
            allowed = choices(kind)
            if get_origin(kind) is tuple:
                _require(isinstance(value, tuple), f.name, value, "must be a tuple")
                bad = [v for v in value if allowed is not None and v not in allowed]
                why = f"unknown item(s) {', '.join(map(str, bad))}; choose from {', '.join(allowed or ())}"
                _require(not bad, f.name, value, why)
            elif allowed is not None:
                _require(value in allowed, f.name, value, f"must be one of {', '.join(allowed)}")
            if f.metadata.get("rule"):
                test, why = f.metadata["rule"]
                try:
                    ok = test(value)
                except TypeError:  # a value of another type (say a string in a JSON file) fails the rule too
                    ok = False
                _require(ok, f.name, value, why)
        self.check()

    def check(self) -> None:
        """Checks that involve several fields."""


@dataclass(frozen=True)
class ModelConfig(Section):
    """The GPT's settings (``model.GPT``)."""

    arch: ClassVar[str] = DEFAULT_ARCH
    vocab_size: int = _field(1024, "token ids the model predicts; set from the tokenizer when not given", POSITIVE_INT)
    num_layers: int = _field(9, "transformer blocks; the first half feeds U-Net skips into the second", POSITIVE_INT)
    model_dim: int = _field(512, "width of the residual stream", POSITIVE_INT)
    num_heads: int = _field(8, "query heads per attention layer", POSITIVE_INT)
    num_kv_heads: int = _field(4, "key/value heads (grouped-query attention); must divide num_heads", POSITIVE_INT)
    mlp_mult: int = _field(2, "MLP hidden width as a multiple of model_dim", POSITIVE_INT)
    rope_base: float = _field(10000.0, "RoPE frequency base", POSITIVE)
    qk_gain_init: float = _field(1.5, "initial per-head gain on the RMS-normed queries (a learned temperature)")
    logit_softcap: float = _field(30.0, "logits pass through cap*tanh(z/cap); 0 disables the cap", NON_NEGATIVE)
    asym_softcap: bool = _field(
        False, "AsymLogit: learned caps for positive and negative logits, both from logit_softcap, trained by the loss"
    )
    tie_embeddings: bool = _field(True, "share the input embedding with the output projection")
    tied_embed_init_std: float = _field(0.005, "init std of the token embedding", POSITIVE)
    embed_bf16: bool = _field(
        False,
        "keep the embedding tables in bf16 (training too) and start every tensor bf16-rounded, as the baseline's and "
        "the records' model.bfloat16() cast does",
    )
    # Record-stack switches (docs/records.md); every default is off = the baseline.
    mlp_leaky_slope: float = _field(0.0, "MLP leaky_relu(x, slope)^2; 0 = relu^2, the records use 0.5", NON_NEGATIVE)
    rope_dims: int = _field(0, "partial RoPE: rotate only the first this many dims of each head; 0 = all")
    ln_scale: bool = _field(False, "scale each block's normed inputs by 1/sqrt(layer_idx + 1)")
    xsa: bool = _field(False, "XSA: remove from each head's output its component along the token's own value")
    xsa_last: int = _field(0, "XSA on the last this many blocks only (the XSA4 records: 4); 0 = off", NON_NEGATIVE)
    xsa_layers: tuple[int, ...] = _field((), "XSA on these blocks only (e.g. 8,9,10); () = off")
    attn_layers: tuple[int, ...] = _field(
        (), "attention only in these blocks; the others are MLP-only, widened by the attention's parameters; () = all"
    )
    attn_gate_width: int = _field(0, "sparse attention gate on the first this many normed input dims; 0 = off")
    smear_gate: bool = _field(False, "SmearGate on the embeddings: add a gated copy of the previous token's")
    bos_id: int = _field(1, "the tokenizer's BOS id: SmearGate never smears across it")
    parallel_from: int = _field(0, "decoder blocks with physical index >= this run two parallel lanes; 0 = off")
    lane0_skip: bool = _field(False, "the first lane block's U-Net skip joins lane 0 only, not the unsplit stream")
    skip_gates: bool = _field(False, "U-Net skips as lerp(w * skip, x, sigmoid(g)), g per channel from 0")
    ortho_init: bool = _field(False, "initialize the Q, K, V and MLP-up matrices orthogonal (not uniform)")
    loop_start: int = _field(0, "depth recurrence: first physical block of the looped range")
    loop_end: int = _field(-1, "depth recurrence: last physical block of the looped range (inclusive)")
    num_loops: int = _field(0, "depth recurrence: extra passes over blocks loop_start..loop_end; 0 = off", NON_NEGATIVE)
    bigram_buckets: int = _field(0, "BigramHash embedding buckets added to the token embedding; 0 = off", NON_NEGATIVE)
    bigram_dim: int = _field(128, "BigramHash embedding width, projected to model_dim", POSITIVE)
    ve_layers: tuple[int, ...] = _field((), "value embeddings: the blocks (e.g. 9,10) whose values get a shared table")
    ve_dim: int = _field(128, "value embedding table width, projected to the key/value width", POSITIVE)
    embed_dim: int = _field(
        0, "factored embedding: table width, projected to and from model_dim; 0 = model_dim", NON_NEGATIVE
    )
    lowbit: LowBitKind = _field(
        "none", "block matrices ternary {-1,0,1} or binary {-1,1} from step 0 (STE); none = off"
    )
    lowbit_group: int = _field(128, "weights per absmean scale of the ternary/binary matrices", POSITIVE_INT)
    yarn_factor: float = _field(
        1.0, "YaRN: RoPE low frequencies stretched by this (eval length / train length)", POSITIVE
    )
    doc_masked: bool = _field(
        False,
        "attention (and BigramHash's previous token) within each document only (BOS to BOS): FlashAttention varlen "
        "on CUDA, else a mask",
    )

    def check(self) -> None:
        dim, heads, kv, layers = self.model_dim, self.num_heads, self.num_kv_heads, self.num_layers
        _require(
            self.vocab_size <= VOCAB_LIMIT,
            "vocab_size",
            self.vocab_size,
            f"shards store ids as uint16 (<= {VOCAB_LIMIT})",
        )
        _require(dim % heads == 0, "model_dim", dim, f"must be divisible by num_heads = {heads}")
        _require(heads % kv == 0, "num_kv_heads", kv, f"must divide num_heads = {heads}")
        _require(self.head_dim % 2 == 0, "model_dim", dim, f"head_dim {self.head_dim} must be even")
        why = f"must be 0 or an even number <= head_dim {self.head_dim}"
        _require(self.rope_dims % 2 == 0 and 0 <= self.rope_dims <= self.head_dim, "rope_dims", self.rope_dims, why)
        _require(
            0 <= self.attn_gate_width <= dim,
            "attn_gate_width",
            self.attn_gate_width,
            f"must be in [0, model_dim {dim}]",
        )
        _require(0 <= self.bos_id < self.vocab_size, "bos_id", self.bos_id, "must be a token id")
        why = f"must be 0 (off) or a decoder block index in [num_layers//2, {layers})"
        ok = self.parallel_from == 0 or layers // 2 <= self.parallel_from < layers
        _require(ok, "parallel_from", self.parallel_from, why)
        if self.num_loops:
            ok = 0 <= self.loop_start <= self.loop_end < layers
            why = f"need 0 <= loop_start <= loop_end < num_layers = {layers}"
            _require(ok, "loop_end", (self.loop_start, self.loop_end), why)
            # The lanes must be last: a looped block would run again after they have started.
            why = f"the looped blocks must all come before parallel_from = {self.parallel_from}"
            _require(not self.parallel_from or self.loop_end < self.parallel_from, "loop_end", self.loop_end, why)
        why = "AsymLogit learns the two caps of a soft-cap: needs logit_softcap > 0"
        _require(not self.asym_softcap or self.logit_softcap > 0, "asym_softcap", self.asym_softcap, why)
        why = "a factored embedding needs tie_embeddings (the head reads the table through factored.down)"
        _require(not self.embed_dim or self.tie_embeddings, "embed_dim", self.embed_dim, why)
        if self.lowbit != "none":
            why = f"must divide model_dim = {dim} (the groups run along each matrix's rows)"
            _require(dim % self.lowbit_group == 0, "lowbit_group", self.lowbit_group, why)
        for name in ("ve_layers", "xsa_layers", "attn_layers"):
            listed = getattr(self, name)
            ok = all(isinstance(i, int) and 0 <= i < layers for i in listed) and len(set(listed)) == len(listed)
            _require(ok, name, listed, f"must be distinct block indices in [0, {layers})")
        _require(self.xsa_last <= layers, "xsa_last", self.xsa_last, f"must be <= num_layers = {layers}")
        ways = [name for name in ("xsa", "xsa_last", "xsa_layers") if getattr(self, name)]
        _require(len(ways) <= 1, ways[-1] if ways else "xsa", ways, "choose one of xsa, xsa_last and xsa_layers")
        if self.attn_layers:
            # An attention-free block has no values to inject into, and a lane block's first lane is attention's.
            lanes = range(self.parallel_from, layers) if self.parallel_from else range(0)
            needs = sorted({*self.ve_layers, *lanes} - set(self.attn_layers))
            why = f"blocks {needs} (value embeddings, parallel lanes) need attention"
            _require(not needs, "attn_layers", self.attn_layers, why)

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def uses_bos(self) -> bool:
        """Whether ``bos_id`` changes what the model computes (SmearGate's and the attention mask's document
        boundary)."""
        return self.smear_gate or self.doc_masked

    def has_attention(self, block: int) -> bool:
        return not self.attn_layers or block in self.attn_layers

    def has_xsa(self, block: int) -> bool:
        """XSA on every block (``xsa``), the last ``xsa_last`` or the listed ones, where the block has attention."""
        last = self.xsa_last > 0 and block >= self.num_layers - self.xsa_last
        return (self.xsa or last or block in self.xsa_layers) and self.has_attention(block)

    def mlp_hidden(self, block: int) -> int:
        """The MLP width of ``block``: ``mlp_mult * model_dim``, plus ``model_dim + kv width`` in an attention-free
        block, which gives its MLP the attention's matrix parameters (2 d (d + kv): Q and O d x d, K and V kv x d),
        so that moving attention between blocks keeps the parameter count, and so the bytes, equal."""
        extra = 0 if self.has_attention(block) else self.model_dim + self.num_kv_heads * self.head_dim
        return self.mlp_mult * self.model_dim + extra


@dataclass(frozen=True)
class OptimConfig(Section):
    matrix_lr: float = _field(0.04, "Muon learning rate for the 2-D weights of the blocks", NON_NEGATIVE)
    scalar_lr: float = _field(0.04, "Adam learning rate for gains, mixes, skips and other small tensors", NON_NEGATIVE)
    tied_embed_lr: float = _field(0.05, "Adam learning rate for the tied token embedding", NON_NEGATIVE)
    embed_lr: float = _field(0.6, "Adam learning rate for the input embedding when embeddings are untied", NON_NEGATIVE)
    head_lr: float = _field(0.008, "Adam learning rate for the output head when embeddings are untied", NON_NEGATIVE)
    muon_momentum: float = _field(0.95, "Muon momentum after its warm-up", FRACTION)
    muon_momentum_start: float = _field(0.85, "Muon momentum at step 0, raised linearly to muon_momentum", FRACTION)
    muon_momentum_warmup_steps: int = _field(500, "steps over which Muon momentum rises; 0 = constant", NON_NEGATIVE)
    muon_ns_steps: int = _field(5, "Newton-Schulz iterations per Muon update", POSITIVE)
    muon_ns_coeffs: NSCoefficients = _field("fixed", "NS coefficients: fixed (3.4445, -4.775, 2.0315) or polar_express")
    muon_row_norm: bool = _field(False, "MuonEq-R: scale each row of the momentum update to unit L2 norm before NS")
    adam_beta1: float = _field(0.9, "Adam beta1", FRACTION)
    adam_beta2: float = _field(0.95, "Adam beta2", FRACTION)
    adam_eps: float = _field(1e-8, "Adam epsilon", NON_NEGATIVE)
    grad_clip_norm: float = _field(0.0, "clip the global gradient norm to this; 0 = no clipping", NON_NEGATIVE)
    lr_warmup_steps: int = _field(0, "linear learning-rate warm-up steps", NON_NEGATIVE)
    warmdown_steps: int = _field(1200, "linear decay to 0 over the last this many (projected) steps", NON_NEGATIVE)
    warmdown_frac: float = _field(0.0, "linear decay over the last this fraction of training; 0 = warmdown_steps", UNIT)
    min_lr_scale: float = _field(0.0, "floor of the warm-down's lr multiplier (records: MIN_LR 0.1)", FRACTION)
    muon_wd: float = _field(0.0, "Muon decoupled weight decay: p <- p * (1 - lr * wd) before each update", NON_NEGATIVE)
    embed_wd: float = _field(0.0, "Adam decoupled weight decay of the embedding tables and untied head", NON_NEGATIVE)
    scalar_wd: float = _field(0.0, "Adam decoupled weight decay of gains, mixes and other small tensors", NON_NEGATIVE)
    wd_taper_start: float = _field(0.0, "Muon weight-decay taper from this fraction of training; 0 = off", FRACTION)
    wd_taper_final: float = _field(0.5, "Muon weight-decay multiplier reached at the end of the taper", NON_NEGATIVE)


@dataclass(frozen=True)
class TrainConfig(Section):
    seq_len: int = _field(1024, "tokens per training sequence (and per validation window)", POSITIVE)
    batch_tokens: int = _field(524_288, "tokens per optimizer step, summed over ranks and accumulation steps", POSITIVE)
    device_batch_tokens: int = _field(65_536, "tokens per forward pass on one rank; sets grad accumulation", POSITIVE)
    iterations: int = _field(20_000, "maximum optimizer steps", POSITIVE)
    max_minutes: float = _field(10.0, "wall-clock limit on training (validation excluded); 0 = none", NON_NEGATIVE)
    val_every: int = _field(1000, "validate every this many steps and at the end; 0 = only at the end", NON_NEGATIVE)
    val_tokens: int = _field(0, "score the first this many validation targets during training; 0 = all", NON_NEGATIVE)
    log_every: int = _field(200, "print and log the training loss every this many steps", NON_NEGATIVE)
    checkpoint_every: int = _field(0, "save a checkpoint every this many steps; 0 = only at the end", NON_NEGATIVE)
    clock_every: int = _field(
        10,
        "the ranks agree on the training clock (a device sync and a two-number collective) at least every this many "
        "steps; between, its seconds advance at the agreed pace. Rare enough that the host stays ahead of the GPU, "
        "often enough that the pace follows a slower phase (depth recurrence, late QAT) within about a second",
        POSITIVE_INT,
    )
    keep_checkpoints: int = _field(2, "how many of the newest step checkpoints to keep", POSITIVE)
    seed: int = _field(1337, "seed for initialization and the data order")
    shuffle: bool = _field(False, "read training windows in a seeded random order instead of sequentially")
    compile: bool = _field(False, "torch.compile the model")
    compile_warmup_steps: int = _field(0, "steps run before the clock starts, then undone (to compile)", NON_NEGATIVE)
    ema_decay: float = _field(0.0, "fp32 EMA of all weights (decay per step), for eval and export; 0 = off", FRACTION)
    loop_after: float = _field(0.0, "depth recurrence from this share of the run (time or steps); 0 = always", FRACTION)
    qat_threshold: float = _field(0.0, "late QAT: fake-quantized matrices once lr scale < this; 0 = off", UNIT)
    seq_stages: tuple[int, ...] = _field(
        (), "progressive context: shorter training lengths before seq_len (PR #2014: 1024,2048 before 3072)"
    )
    seq_stage_ends: tuple[float, ...] = _field((), "where each of seq_stages ends, a share of training (0.1,0.7)")
    seq_rewarm_steps: int = _field(
        0, "after each length change the lr ramps up again over this many steps", NON_NEGATIVE
    )
    calib_reserve_s: float = _field(
        0.0, "seconds of max_minutes kept for GPTQ calibration on training tokens (GPTQ_RESERVE_SECONDS)", NON_NEGATIVE
    )

    @property
    def limit_seconds(self) -> float:
        """Training seconds the steps may use: ``max_minutes`` less the calibration reserve; 0 = no limit."""
        return 60.0 * self.max_minutes - self.calib_reserve_s if self.max_minutes else 0.0

    def check(self) -> None:
        why = f"must leave training time in max_minutes = {self.max_minutes}"
        ok = not self.max_minutes or self.calib_reserve_s < 60.0 * self.max_minutes
        _require(ok, "calib_reserve_s", self.calib_reserve_s, why)
        device, seq = self.device_batch_tokens, self.seq_len
        _require(device % seq == 0, "device_batch_tokens", device, f"must be a multiple of seq_len = {seq}")
        why = f"must give as many ends as seq_stages {self.seq_stages}"
        _require(len(self.seq_stage_ends) == len(self.seq_stages), "seq_stage_ends", self.seq_stage_ends, why)
        ok = all(isinstance(n, int) and n > 0 and device % n == 0 for n in self.seq_stages)
        why = f"each must be a positive divisor of device_batch_tokens = {device}"
        _require(ok, "seq_stages", self.seq_stages, why)
        ends = self.seq_stage_ends
        ok = all(0 < e < 1 for e in ends) and list(ends) == sorted(set(ends))
        _require(ok, "seq_stage_ends", ends, "must be increasing shares of training in (0, 1)")
        why = f"must be a multiple of device_batch_tokens = {device}"
        _require(self.batch_tokens % device == 0, "batch_tokens", self.batch_tokens, why)

    def grad_accum(self, world_size: int) -> int:
        per_step = self.device_batch_tokens * world_size
        if self.batch_tokens % per_step:
            raise ConfigError(
                f"train.batch_tokens = {self.batch_tokens} is not a multiple of device_batch_tokens x world size = "
                f"{self.device_batch_tokens} x {world_size}"
            )
        return self.batch_tokens // per_step


@dataclass(frozen=True)
class QuantConfig(Section):
    """Post-training quantization (``export``): per tensor group (``embed``, ``attn``, ``mlp``, ``other``) a width
    and a clip rule, round-to-nearest or GPTQ, optional LQER, optional budget-driven widths."""

    bits: int = _field(8, "bits per quantized weight (symmetric, one scale per row); the default of every group", BITS)
    embed_bits: int = _field(0, "bits of the embedding / untied head matrices; 0 = quant.bits", GROUP_BITS)
    attn_bits: int = _field(0, "bits of the attention matrices; 0 = quant.bits", GROUP_BITS)
    mlp_bits: int = _field(0, "bits of the MLP matrices; 0 = quant.bits", GROUP_BITS)
    clip_quantile: float = _field(0.9999984, "per-row clip at this quantile of |w| (without SDClip)", QUANTILE)
    sdclip_k: float = _field(0.0, "SDClip: row scale = k * std(row) / qmax; 0 = clip at clip_quantile", NON_NEGATIVE)
    sdclip_correction: int = _field(
        0,
        "SDClip's std: 0 = population (/ n), 1 = sample (/ (n - 1)), as the records' torch.std",
        (lambda v: v in (0, 1), "must be 0 or 1"),
    )
    embed_sdclip_k: float = _field(0.0, "SDClip k of the embedding matrices; 0 = quant.sdclip_k", NON_NEGATIVE)
    attn_sdclip_k: float = _field(0.0, "SDClip k of the attention matrices; 0 = quant.sdclip_k", NON_NEGATIVE)
    mlp_sdclip_k: float = _field(0.0, "SDClip k of the MLP matrices; 0 = quant.sdclip_k", NON_NEGATIVE)
    method: QuantMethod = _field("rtn", "rtn (round to nearest) or gptq (Hessians from self-generated calibration)")
    allocate: bool = _field(False, "choose each group's bits in int5..int8 to fit the byte budget (ignores *bits)")
    lqer_rank: int = _field(0, "LQER: rank of the error correction of the 3 worst matrices; 0 = off", NON_NEGATIVE)
    calib_source: CalibSource = _field(
        "self", "GPTQ calibration: self (sequences the model generates) or train (training windows, inside the clock)"
    )
    calib_seqs: int = _field(64, "calibration sequences (for gptq or allocate)", POSITIVE)
    calib_seq_len: int = _field(0, "calibration sequence length; 0 = train.seq_len", NON_NEGATIVE)
    calib_batch: int = _field(8, "calibration sequences per forward pass", POSITIVE)
    keep_float_max_numel: int = _field(65_536, "tensors with at most this many elements stay float16", NON_NEGATIVE)
    gate_int8: bool = _field(False, "store the attention gates int8 per row (scale max|w| / 127), not float16")
    codec: Codec = _field(
        "zstd", "weight compressor: zstd (level 22), lzma, brotli, pergroup (ZPAQ per role) or best (the smallest)"
    )
    rotate: tuple[Rotation, ...] = _field((), "Hadamard rotations before quantizing (vo, input, residual); () = none")
    awq_groups: int = _field(
        0,
        "AWQ-lite: the most salient this many column groups of the model go to awq_bits inside GPTQ; 0 = off",
        NON_NEGATIVE,
    )
    awq_group_size: int = _field(64, "AWQ-lite: columns per group", POSITIVE_INT)
    awq_bits: int = _field(8, "AWQ-lite: bits of the chosen groups", BITS)

    def check(self) -> None:
        why = "AWQ-lite reads the activations from the GPTQ Hessians: needs quant.method = gptq"
        _require(not self.awq_groups or self.method == "gptq", "awq_groups", self.awq_groups, why)
        # The allocation scores each width on the calibration tokens after training: training tokens there would be
        # read outside the training clock.
        why = "calib_source train is for gptq; quant.allocate measures losses on the tokens after training"
        _require(not (self.allocate and self.calib_source == "train"), "calib_source", self.calib_source, why)

    def bits_of(self, group: str) -> int:
        return getattr(self, f"{group}_bits", 0) or self.bits

    def sdclip_k_of(self, group: str) -> float:
        return getattr(self, f"{group}_sdclip_k", 0.0) or self.sdclip_k


@dataclass(frozen=True)
class SGDPhase(Section):
    """Score-first SGD on all weights over scored targets, in chunks, each trained at a learning rate that falls by a
    cosine over the chunks (``evaluation.ttt.train_chunk``). The defaults are the 1.0611 record's global SGD."""

    lr: float = _field(0.001, "SGD learning rate, cosine to 0 over the chunks", NON_NEGATIVE)
    momentum: float = _field(0.9, "SGD momentum", NON_NEGATIVE)
    epochs: int = _field(1, "passes over each chunk", NON_NEGATIVE)
    chunk_tokens: int = _field(32_768, "targets per chunk", POSITIVE)
    batch_seqs: int = _field(32, "sequences of seq_len per SGD step", POSITIVE)
    grad_clip: float = _field(1.0, "gradient norm clip; 0 = none", NON_NEGATIVE)


@dataclass(frozen=True)
class PhasedTTT(SGDPhase):
    """The global SGD of phased TTT, and where its phases fall."""

    prefix_docs: int = _field(2500, "documents scored before the last global SGD phase", NON_NEGATIVE)
    phases: int = _field(3, "global SGD phases, at evenly spaced document counts", POSITIVE)


@dataclass(frozen=True)
class LoRATTT(Section):
    """Per-document LoRA adapters, trained chunk by chunk (the 1.0611 record's values)."""

    rank: int = _field(80, "adapter rank", POSITIVE)
    alpha: float = _field(144.0, "adapter output scale is alpha / rank", NON_NEGATIVE)
    targets: tuple[LoRATarget, ...] = _field(("q", "k", "v", "o", "mlp"), "adapted modules besides the head")
    lr: float = _field(1e-4, "AdamW learning rate", NON_NEGATIVE)
    beta1: float = _field(0.0, "AdamW beta1", FRACTION)
    beta2: float = _field(0.99, "AdamW beta2", FRACTION)
    eps: float = _field(1e-10, "AdamW epsilon", NON_NEGATIVE)
    weight_decay: float = _field(0.5, "AdamW decoupled weight decay", NON_NEGATIVE)
    chunk_tokens: int = _field(48, "targets per chunk (score it, then one step on it)", POSITIVE)
    short_until: tuple[int, ...] = _field(
        (), "short-document chunks: a document's targets before these positions (256,2000) go in short_chunks"
    )
    short_chunks: tuple[int, ...] = _field((), "chunk sizes before each of short_until (PR #2014: 8,24)")
    batch_docs: int = _field(64, "documents adapted side by side, one adapter set each", POSITIVE)
    round_docs: int = _field(
        0, "documents sorted by length together (a round); 0 = all between two phases' global SGD", NON_NEGATIVE
    )
    warm_start_a: bool = _field(True, "start each round's adapters from a trained A of the round before")
    compile: TTTCompile = _field(
        "off", "torch.compile the chunk forward/backward (static shapes: windows padded to chunk * 2^k)"
    )

    def check(self) -> None:
        why = f"must give one chunk size per position of short_until {self.short_until}"
        _require(len(self.short_chunks) == len(self.short_until), "short_chunks", self.short_chunks, why)
        ok = all(isinstance(c, int) and c > 0 for c in self.short_chunks)
        _require(ok, "short_chunks", self.short_chunks, "must be positive integers")
        ok = list(self.short_until) == sorted(set(self.short_until)) and all(u > 0 for u in self.short_until)
        _require(ok, "short_until", self.short_until, "must be increasing positive positions")

    def chunk_bounds(self, n_pred: int) -> list[tuple[int, int]]:
        """Targets ``[lo, hi)`` of each chunk of a document with ``n_pred`` targets: ``short_chunks`` sizes before
        the ``short_until`` positions, then ``chunk_tokens``. They depend on the position in the document only, so a
        longer document's chunks begin with a shorter one's."""
        bounds, lo = [], 0
        while lo < n_pred:
            size = next((c for u, c in zip(self.short_until, self.short_chunks) if lo < u), self.chunk_tokens)
            bounds.append((lo, lo + size))
            lo += size
        return bounds


@dataclass(frozen=True)
class NgramTilt(Section):
    """Token-only n-gram tilt of the scored distribution (``evaluation.ngram_tilt``; PR #2130/#2135, the 1.0565
    record: order 16, threshold 0.8, boost 2.625)."""

    boost: float = _field(0.0, "log-boost of the hinted token, renormalized over the vocabulary; 0 = off", NON_NEGATIVE)
    order: int = _field(
        16,
        "n-gram order: the hint reads the order - 1 tokens before the target",
        (lambda v: 2 <= v <= 65, "must be in [2, 65]"),
    )
    threshold: float = _field(0.8, "hint only where the top next token has this share of the context's count", QUANTILE)


@dataclass(frozen=True)
class EvalConfig(Section):
    """How the validation split is scored: window stride and score-first test-time training
    (``pgolf_model.evaluation.ttt`` has each mode and its record)."""

    stride: int = _field(0, "window stride in tokens (sliding windows, the records: 64); 0 = seq_len", NON_NEGATIVE)
    seq_len: int = _field(0, "evaluation window and TTT context in tokens; 0 = train.seq_len", NON_NEGATIVE)
    ttt: TTTMode = _field("none", "score-first test-time training: none, full, lora or phased")
    seed: int = _field(0, "seed of the LoRA adapters' initialization")
    full: SGDPhase = _field(SGDPhase(lr=0.002, epochs=3), "full TTT: SGD on all weights over each scored chunk")
    lora: LoRATTT = _field(LoRATTT(), "LoRA TTT (and phased)")
    phased: PhasedTTT = _field(PhasedTTT(), "phased TTT: global SGD over the documents scored so far")
    tilt: NgramTilt = _field(NgramTilt(), "token-only n-gram tilt of every score (after TTT's adaptation)")


SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "quant": QuantConfig, "eval": EvalConfig}


@dataclass(frozen=True)
class Config:
    model: Any = field(default_factory=ModelConfig)  # the model family's section: a dataclass with an ``arch``
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        if not is_dataclass(self.model) or not isinstance(getattr(type(self.model), "arch", None), str):
            raise ConfigError(f"model section {self.model!r}: must be a model family's config dataclass (with arch)")

    @property
    def arch(self) -> str:
        return type(self.model).arch

    def sections(self) -> dict[str, type]:
        """Each section's dataclass, the model family's for ``model``."""
        return {**SECTIONS, "model": type(self.model)}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.arch != DEFAULT_ARCH:
            out["model"] = {"arch": self.arch, **out["model"]}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, model_class: type | None = None, where: str = "config") -> Config:
        """``model_class``: the config dataclass of the family ``arch_of(data)`` names (needed for any but gpt)."""
        try:
            data = _upgrade(data)
            model = dict(data.get("model", {}))
            arch = model.pop("arch", DEFAULT_ARCH)
            model_class = model_class or (ModelConfig if arch == DEFAULT_ARCH else None)
            if model_class is None or getattr(model_class, "arch", None) != arch:
                raise ConfigError(f"model.arch = {arch!r}: no config class for it was given")
            return _build(cls, {**data, "model": _build(model_class, model, "model.")}, "")
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def override(self, changes: dict[str, Any]) -> Config:
        """Apply ``{"model.num_layers": 11, "eval.lora.rank": 8, ...}``; each changed section is re-validated."""
        return _override(self, changes, "")


def _build(cls: type, values: dict[str, Any], path: str) -> Any:
    """``cls`` from JSON values: nested sections from dicts, tuples from lists; errors named by their full path."""
    hints = type_hints(cls)
    bad = sorted(set(values) - {f.name for f in fields(cls)})
    if bad:
        raise ConfigError(f"unknown field(s) {', '.join(path + b for b in bad)}")
    kwargs = {}
    for name, value in values.items():
        if is_dataclass(hints[name]):
            value = _build(hints[name], value, f"{path}{name}.")
        elif get_origin(hints[name]) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise FieldError(f"{path}{e}") from None
    except ConfigError:
        raise
    except ValueError as e:  # a plugin's config that validates itself without Section
        raise ConfigError(f"{path.rstrip('.') or cls.__name__}: {e}") from None


def _override(obj: Any, changes: dict[str, Any], path: str) -> Any:
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        name, _, rest = key.partition(".")
        inner = getattr(obj, name, None)
        if name not in type_hints(type(obj)) or bool(rest) != is_dataclass(inner):
            raise ConfigError(f"unknown config field {path + key!r}")
        if rest:
            nested.setdefault(name, {})[rest] = value
        else:
            direct[name] = value
    for name, sub in nested.items():
        direct[name] = _override(getattr(obj, name), sub, f"{path}{name}.")
    try:
        return replace(obj, **direct)
    except FieldError as e:
        raise FieldError(f"{path}{e}") from None


def arch_of(data: dict[str, Any]) -> str:
    """The model family a config's JSON names."""
    return data.get("model", {}).get("arch", DEFAULT_ARCH)


# Configs written before the TTT settings were nested: eval.<prefix><name> is now eval.<section>.<name>.
_OLD_EVAL = {"full_": "full", "lora_": "lora", "phased_": "phased", "global_": "phased"}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """An old config's JSON in today's shape: flat TTT keys nested, comma strings split (new JSON is unchanged)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    model, ev = data.get("model", {}), data.get("eval", {})
    if isinstance(model.get("ve_layers"), str):
        model["ve_layers"] = [int(i) for i in model["ve_layers"].split(",") if i.strip()]
    for key in [k for k in ev if not isinstance(ev[k], dict)]:
        prefix = next((p for p in _OLD_EVAL if key.startswith(p)), None)
        if prefix is not None:
            ev.setdefault(_OLD_EVAL[prefix], {})[key[len(prefix) :]] = ev.pop(key)
    lora = ev.get("lora", {})
    if isinstance(lora.get("targets"), str):
        lora["targets"] = [t.strip() for t in lora["targets"].split(",") if t.strip()]
    return data
