"""The GPT: the challenge baseline's architecture, written so the record stack's switches slot in.

Notable features (the 2026-03-17 naive baseline, 1.2244 BPB; STACK = ../shared/research/stack.md section 10):
- weightless RMSNorm before attention, before the MLP, on the embeddings and before the head;
- rotary position embeddings (RoPE, base 1e4) on RMS-normed queries and keys, with a learned per-head query gain;
- grouped-query attention through ``F.scaled_dot_product_attention`` (8 query heads share 4 KV heads);
- ReLU^2 MLP (from modded-nanogpt, https://arxiv.org/abs/2109.08668);
- per-block residual mix with the embedding stream x0 and per-channel output scales;
- U-Net skips: the first half of the layer sequence pushes its outputs, the second half pops them in reverse;
- tied input/output embeddings and a tanh logit soft-cap (Gemma 2, cap 30).

Record-stack switches (``ModelConfig``, all off by default; STACK section 6): LeakyReLU(0.5)^2, partial RoPE, LN
scale, XSA, sparse attention gate, BOS-fixed SmearGate, BigramHash, value embeddings, parallel residual lanes, depth
recurrence. The blocks' matrices are ``Linear`` layers that late QAT (``qat.py``) can switch to fake-quantized weights.

The layer sequence is a list of physical block indices (``encoder_layers``, ``decoder_layers``), so depth recurrence
is a different list, not a rewrite. Parameters live in fp32; on CUDA the training loop runs the forward pass under
bf16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .softcap_ce import softcap_cross_entropy


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """Rotary position embedding on the first ``rot_dim`` channels of each head (all of them in the baseline)."""

    def __init__(self, rot_dim: int, base: float) -> None:
        super().__init__()
        self.rot_dim = rot_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Rotate channel pairs (i, i + rot_dim/2) of ``x`` (B, H, T, D) by position-dependent angles."""
        t = torch.arange(x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (T, rot_dim/2); recomputed per call, cheap and compile-friendly
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        half = self.rot_dim // 2
        x1, x2, rest = x[..., :half], x[..., half : self.rot_dim], x[..., self.rot_dim :]
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


class Linear(nn.Linear):
    """A bias-free block matrix; ``fake_quant`` (set by ``qat.enable``) maps the weight on the training forward pass."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.fake_quant = None

    def forward(self, x: Tensor) -> Tensor:
        w = self.fake_quant(self.weight) if self.fake_quant is not None and self.training else self.weight
        return F.linear(x, w)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = Linear(cfg.model_dim, cfg.model_dim)
        self.c_k = Linear(cfg.model_dim, kv_dim)
        self.c_v = Linear(cfg.model_dim, kv_dim)
        self.proj = Linear(cfg.model_dim, cfg.model_dim)
        # With q and k RMS-normed, attention logits are bounded; this learned per-head gain is the temperature.
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        # Partial RoPE (records from 2026-03-21): the unrotated dims attend by content regardless of distance.
        self.rotary = Rotary(cfg.rope_dims or cfg.head_dim, cfg.rope_base)
        self.xsa = cfg.xsa
        # Sparse attention gate (stack.md section 6): a per-head sigmoid gate read from a few input dims, 0.5 at init.
        self.gate_width = cfg.attn_gate_width
        self.gate = nn.Parameter(torch.zeros(cfg.num_heads, cfg.attn_gate_width)) if cfg.attn_gate_width else None

    def forward(self, x: Tensor, ve: Tensor | None = None) -> Tensor:
        """``ve`` (B, T, Hkv * D): a value embedding added to the values (and so seen by XSA too)."""
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.c_v(x)
        if ve is not None:
            v = v + ve
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads)
        if self.xsa:
            # XSA: attention tends to copy the token's own value back; remove that direction so the layer adds
            # only information from other tokens. Head h uses KV group h // (H / Hkv), as in the GQA attention.
            v_hat = F.normalize(v, dim=-1).repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            y = y - (y * v_hat).sum(-1, keepdim=True) * v_hat
        if self.gate is not None:
            g = torch.sigmoid(0.5 * F.linear(x[..., : self.gate_width], self.gate.to(x.dtype)))  # (B, T, H)
            y = y * g.transpose(1, 2).unsqueeze(-1)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.fc = Linear(cfg.model_dim, hidden)
        self.proj = Linear(hidden, cfg.model_dim)
        self.leaky_slope = cfg.mlp_leaky_slope

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        # LeakyReLU(0.5)^2 (records from 2026-03-23) keeps a gradient for negative pre-activations.
        h = F.leaky_relu(h, self.leaky_slope) if self.leaky_slope else F.relu(h)
        return self.proj(h.square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        # x <- mix[0] * x + mix[1] * x0: each block may pull the embedding stream back in (init: identity).
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))
        # Layer-norm scaling: deeper blocks see smaller inputs, so their updates stay proportionate to the stream.
        self.in_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0
        # Parallel residuals: lane mixing r (2,) and p (2 lanes x {attn, mlp}); init r = 1.1, p = 1 (stack.md s6).
        self.parallel = bool(cfg.parallel_from) and layer_idx >= cfg.parallel_from
        if self.parallel:
            self.lane_decay = nn.Parameter(torch.full((2,), 1.1))
            self.lane_mix = nn.Parameter(torch.ones(2, 2))

    def norm(self, x: Tensor) -> Tensor:
        return rms_norm(x) * self.in_scale if self.in_scale != 1.0 else rms_norm(x)

    def forward(self, x: Tensor, x0: Tensor, ve: Tensor | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.norm(x), ve=ve)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.norm(x))

    def forward_lanes(
        self, lanes: tuple[Tensor, Tensor], x0: Tensor, ve: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Two-lane block: attention reads lane 0 (mixed with x0), the MLP reads lane 1, both write to both lanes."""
        lane0, lane1 = lanes
        mix = self.resid_mix.to(lane0.dtype)
        a = self.attn_scale.to(lane0.dtype) * self.attn(self.norm(mix[0] * lane0 + mix[1] * x0), ve=ve)
        m = self.mlp_scale.to(lane1.dtype) * self.mlp(self.norm(lane1))
        r, p = self.lane_decay.to(lane0.dtype), self.lane_mix.to(lane0.dtype)
        return r[0] * lane0 + p[0, 0] * a + p[0, 1] * m, r[1] * lane1 + p[1, 0] * a + p[1, 1] * m


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        # SmearGate, BOS-fixed (stack.md section 6): w and lambda start at 0, so the gate starts as the identity.
        self.smear = nn.Parameter(torch.zeros(13)) if cfg.smear_gate else None  # 12 gate weights, then lambda
        # BigramHash (records 2026-03-20 .. 04-04): a hashed (previous, current) token-pair embedding, zero at init.
        if cfg.bigram_buckets:
            self.bigram_emb = nn.Embedding(cfg.bigram_buckets, cfg.bigram_dim)
            self.bigram_proj = nn.Linear(cfg.bigram_dim, cfg.model_dim, bias=False)
            self.bigram_scale = nn.Parameter(torch.tensor(0.05))
        # Value embeddings (VE128, 2026-03-25 record): one table shared by the listed blocks, each with its own scale,
        # re-injects token identity into the attention values of late layers.
        self.ve_layers = cfg.ve_layers
        if self.ve_layers:
            kv_dim = cfg.num_kv_heads * cfg.head_dim
            self.ve_emb = nn.Embedding(cfg.vocab_size, cfg.ve_dim)
            self.ve_proj = nn.Linear(cfg.ve_dim, kv_dim, bias=False) if cfg.ve_dim != kv_dim else None
            self.ve_scale = nn.Parameter(torch.tensor(0.1))
            self.ve_layer_scales = nn.Parameter(torch.ones(len(self.ve_layers)))
        self.set_looping(True)
        num_skips = min(len(self.encoder_layers), len(self.decoder_layers))
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialization, as the baseline:

        | tensor                              | init                                         |
        |-------------------------------------|----------------------------------------------|
        | tok_emb (tied)                      | N(0, tied_embed_init_std^2)                  |
        | tok_emb (untied)                    | N(0, 1)                                      |
        | c_q, c_k, c_v, mlp.fc               | U(-1/sqrt(fan_in), 1/sqrt(fan_in))           |
        | attn.proj, mlp.proj, lm_head        | 0 (each block starts as the identity)        |
        | q_gain / scales / resid_mix / skips | qk_gain_init / 1 / (1, 0) / 1                |
        | ve_emb / ve_proj / ve_scale         | N(0, 0.01^2) / orthogonal / 0.1 (2026-03-25) |
        """
        std = self.cfg.tied_embed_init_std if self.cfg.tie_embeddings else 1.0
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=std)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.fc):
                bound = 1.0 / math.sqrt(lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)
            block.attn.q_gain.fill_(self.cfg.qk_gain_init)
            block.attn_scale.fill_(1.0)
            block.mlp_scale.fill_(1.0)
            block.resid_mix[0].fill_(1.0)
            block.resid_mix[1].fill_(0.0)
        self.skip_weights.fill_(1.0)
        for block in self.blocks:
            if block.attn.gate is not None:
                block.attn.gate.zero_()
            if block.parallel:
                block.lane_decay.fill_(1.1)
                block.lane_mix.fill_(1.0)
        if self.smear is not None:
            self.smear.zero_()
        if self.cfg.bigram_buckets:
            nn.init.zeros_(self.bigram_emb.weight)
            bound = 1.0 / math.sqrt(self.cfg.bigram_dim)
            nn.init.uniform_(self.bigram_proj.weight, -bound, bound)
            self.bigram_scale.fill_(0.05)
        if self.ve_layers:
            nn.init.normal_(self.ve_emb.weight, mean=0.0, std=0.01)
            if self.ve_proj is not None:
                nn.init.orthogonal_(self.ve_proj.weight)
            self.ve_scale.fill_(0.1)
            self.ve_layer_scales.fill_(1.0)
        if self.lm_head is not None:
            nn.init.zeros_(self.lm_head.weight)

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by optimizer group: ``matrix`` (Muon), ``embed``, ``head``, ``scalar`` (Adam). The BigramHash
        and value embedding tables are ``embed``, their projections ``scalar``, as in the 2026-03-25 record.

        Every parameter is in exactly one group (asserted), so a new tensor must be placed here on purpose.
        """
        matrix_ids = {id(m.weight) for block in self.blocks for m in block.modules() if isinstance(m, nn.Linear)}
        tables = {id(m.weight) for m in (getattr(self, "bigram_emb", None), getattr(self, "ve_emb", None)) if m}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embed": [], "head": [], "scalar": []}
        for name, p in self.named_parameters():
            if id(p) in matrix_ids:
                groups["matrix"].append((name, p))
            elif p is self.tok_emb.weight or id(p) in tables:
                groups["embed"].append((name, p))
            elif self.lm_head is not None and p is self.lm_head.weight:
                groups["head"].append((name, p))
            else:
                groups["scalar"].append((name, p))
        assert sum(len(g) for g in groups.values()) == len(list(self.parameters())), "a parameter is in two groups"
        return groups

    def set_looping(self, on: bool) -> None:
        """The virtual layer sequence, as physical block indices; encoder outputs feed the decoder in reverse.

        With depth recurrence on, blocks loop_start..loop_end run 1 + num_loops times (the record: 3,4,5 three
        times in 11 blocks gives 17 virtual layers); the first half of the sequence is the encoder either way.
        """
        cfg = self.cfg
        order = list(range(cfg.num_layers))
        if on and cfg.num_loops:
            looped = list(range(cfg.loop_start, cfg.loop_end + 1)) * (1 + cfg.num_loops)
            order = order[: cfg.loop_start] + looped + order[cfg.loop_end + 1 :]
        half = len(order) // 2
        self.looping = on
        self.encoder_layers, self.decoder_layers = order[:half], order[half:]

    def embed(self, idx: Tensor) -> Tensor:
        """x0: the normed token embedding, after the optional BigramHash and SmearGate."""
        e = self.tok_emb(idx)
        if self.cfg.bigram_buckets:
            buckets = self.cfg.bigram_buckets
            prev = F.pad(idx[:, :-1], (1, 0))
            h = torch.bitwise_xor(36313 * idx, 27191 * prev) % (buckets - 1)
            h[:, 0] = buckets - 1  # position 0 has no previous token
            e = e + self.bigram_scale.to(e.dtype) * self.bigram_proj(self.bigram_emb(h))
        if self.smear is not None:
            w, lam = self.smear[:12].to(e.dtype), self.smear[12].to(e.dtype)
            gate = torch.sigmoid(e[:, 1:, :12] @ w).unsqueeze(-1)
            keep = (idx[:, 1:] != self.cfg.bos_id).unsqueeze(-1).to(e.dtype)  # a document never reads the one before
            e = torch.cat((e[:, :1], e[:, 1:] + lam * gate * e[:, :-1] * keep), dim=1)
        return rms_norm(e)

    def value_embeddings(self, idx: Tensor) -> dict[int, Tensor]:
        """``{physical block: (B, T, Hkv * D)}``: the shared value embedding times each listed block's scale."""
        if not self.ve_layers:
            return {}
        h = self.ve_emb(idx)
        if self.ve_proj is not None:
            h = self.ve_proj(h)
        h = h * self.ve_scale.to(h.dtype)
        scales = self.ve_layer_scales.to(h.dtype)
        return {layer: h * scales[k] for k, layer in enumerate(self.ve_layers)}

    def hidden(self, idx: Tensor) -> Tensor:
        """Final normed hidden states (B, T, C) for token ids (B, T)."""
        x = self.embed(idx)
        x0 = x
        ves = self.value_embeddings(idx)
        skips: list[Tensor] = []
        for i in self.encoder_layers:
            x = self.blocks[i](x, x0, ve=ves.get(i))
            skips.append(x)
        lanes: tuple[Tensor, Tensor] | None = None
        for j, i in enumerate(self.decoder_layers):
            if skips:
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                if lanes is None:
                    x = x + skip
                else:
                    lanes = (lanes[0] + skip, lanes[1])
            if self.blocks[i].parallel:
                lanes = self.blocks[i].forward_lanes(lanes or (x, x), x0, ve=ves.get(i))
            elif lanes is not None:
                raise ValueError(f"block {i} follows a parallel block but is not parallel; check parallel_from")
            else:
                x = self.blocks[i](x, x0, ve=ves.get(i))
        if lanes is not None:
            x = 0.5 * (lanes[0] + lanes[1])
        return rms_norm(x)

    @property
    def head_weight(self) -> Tensor:
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def head(self, x: Tensor) -> Tensor:
        """Soft-capped logits in fp32 of final hidden states ``x``."""
        z = F.linear(x, self.head_weight.to(x.dtype)).float()
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(z / cap) if cap > 0 else z

    def logits(self, idx: Tensor) -> Tensor:
        """Soft-capped logits (B, T, V) in fp32."""
        return self.head(self.hidden(idx))

    def forward(self, idx: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy in nats: a scalar for ``reduction="mean"``, (B, T) for ``"none"``."""
        x = self.hidden(idx)
        if x.device.type == "cpu":  # chunked (softcap_ce.py); on GPU torch.compile fuses the plain form below
            weight = self.head_weight.to(x.dtype)
            loss = softcap_cross_entropy(x.flatten(0, 1), weight, targets.flatten(), self.cfg.logit_softcap, reduction)
        else:
            loss = F.cross_entropy(self.head(x).flatten(0, 1), targets.flatten(), reduction=reduction)
        return loss if reduction != "none" else loss.view_as(targets)


def count_parameters(cfg: ModelConfig) -> int:
    """Parameter count without allocating (built on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """``state_dict`` names and shapes without allocating."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in GPT(cfg).state_dict().items()}
