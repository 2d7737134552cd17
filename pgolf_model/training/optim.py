"""Optimizers and the learning-rate schedule.

``Muon`` updates 2-D weight matrices with the orthogonalized momentum; Adam handles the embedding, the untied head,
and every gain, mix and skip weight (the model's ``param_groups`` decides which is which; pgolf_model.registry).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import OptimConfig

# Quintic Newton-Schulz coefficients (a, b, c) of Muon's reference implementation: chosen to push every singular
# value of the normalized input quickly into roughly [0.7, 1.2] rather than to converge exactly to 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Polar Express (Amsel et al. 2025, https://arxiv.org/abs/2505.16932): one (a, b, c) per step, each optimal for the
# singular-value range left by the previous one; the record stack uses these five (docs/records.md, Polar Express).
# Steps past the fifth repeat the last.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_coefficients(kind: str, steps: int) -> list[tuple[float, float, float]]:
    if kind == "fixed":
        return [NS_COEFFICIENTS] * steps
    if kind == "polar_express":
        return [POLAR_EXPRESS[min(i, len(POLAR_EXPRESS) - 1)] for i in range(steps)]
    raise ValueError(f"unknown Newton-Schulz coefficients {kind!r}; known: fixed, polar_express")


def newton_schulz(
    G: Tensor,
    steps: int,
    dtype: torch.dtype = torch.bfloat16,
    eps: float = 1e-7,
    coeffs: str = "fixed",
) -> Tensor:
    """Approximately orthogonalize a 2-D matrix: ``U V^T`` of its SVD ``U S V^T``, with every singular value near 1.

    Each step maps ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``, an odd polynomial in the singular values.
    Runs in ``dtype``: bf16 on GPUs as the reference implementation does, fp32 on CPUs (where bf16 is slow).
    """
    assert G.ndim == 2, f"Newton-Schulz needs a matrix, got shape {tuple(G.shape)}"
    X = G.to(dtype)
    X = X / (X.norm() + eps)  # spectral norm <= Frobenius norm <= 1, inside the iteration's basin
    transposed = X.size(0) > X.size(1)
    if transposed:  # iterate on the wide orientation: A = X X^T is the smaller Gram matrix
        X = X.T
    for a, b, c in ns_coefficients(coeffs, steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if transposed else X


class Muon(torch.optim.Optimizer):
    """Muon: momentum SGD whose update is orthogonalized by a Newton-Schulz iteration.

    Source: Keller Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024),
    https://kellerjordan.github.io/posts/muon/ and github.com/KellerJordan/modded-nanogpt; this is the variant of the
    Parameter Golf baseline: Nesterov momentum ``buf = mu buf + g; u = g + mu buf``, orthogonalize ``u``, scale by
    ``sqrt(max(1, rows/cols))`` so tall matrices get the same per-element step size, ``p -= lr * update``. With
    ``weight_decay`` > 0 each matrix first shrinks, ``p *= 1 - lr * wd`` (decoupled, as AdamW; the records from
    2026-03-20 on: 0.04 in March, 0.095 in the 1.0611 record; docs/records.md, weight decay).

    Only for 2-D hidden-layer weights. Embeddings, output heads, and gains/biases/vectors must use Adam: their
    gradients are not "matrix-like" and orthogonalizing them hurts.

    Under ``torch.distributed`` the gradients must already be averaged (DDP does it); each rank then orthogonalizes
    every world_size-th matrix and one all-reduce shares the updates, so the Newton-Schulz work is split, not repeated.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float,
        ns_steps: int,
        nesterov: bool = True,
        ns_dtype: torch.dtype | None = None,
        ns_coeffs: str = "fixed",
        row_norm: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, ns_steps=ns_steps, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        ns_coefficients(ns_coeffs, 1)  # reject an unknown name now, not at the first step
        self.ns_coeffs, self.row_norm = ns_coeffs, row_norm

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=params[0].dtype)
            offset = 0
            for i, p in enumerate(params):
                if p.grad is not None:
                    # Every rank keeps every momentum buffer (cheap), so rank 0's checkpoint holds the full state.
                    buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    if i % world == rank:
                        u = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                        dtype = self.ns_dtype or (torch.bfloat16 if u.is_cuda else torch.float32)
                        if self.row_norm:  # MuonEq-R (docs/records.md): equalize row norms before NS
                            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-7)
                        u = newton_schulz(u, group["ns_steps"], dtype=dtype, coeffs=self.ns_coeffs)
                        u = u * max(1.0, u.size(0) / u.size(1)) ** 0.5
                        flat[offset : offset + p.numel()] = u.reshape(-1)
                offset += p.numel()
            if distributed and world > 1:
                dist.all_reduce(flat)
            offset = 0
            for p in params:
                if group.get("weight_decay", 0.0) > 0:  # checkpoints from before weight decay lack the key
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(flat[offset : offset + p.numel()].view_as(p), alpha=-group["lr"])
                offset += p.numel()


PARAM_GROUPS = ("matrix", "embed", "head", "scalar")  # the model interface's optimizer groups


def build_optimizers(model, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    """Muon for the block matrices, Adam for the rest; each group records its ``base_lr`` (and Muon its ``base_wd``)
    for the schedule. Adam's weight decay is decoupled (AdamW), so 0 is plain Adam."""
    groups = {name: [] for name in PARAM_GROUPS} | model.param_groups()
    placed = sorted(id(p) for group in groups.values() for _, p in group)
    if set(groups) != set(PARAM_GROUPS) or placed != sorted(id(p) for p in model.parameters()):
        raise ValueError(
            f"{type(model).__name__}.param_groups must put every parameter in exactly one of {', '.join(PARAM_GROUPS)}"
        )
    embed_lr = cfg.embed_lr if groups["head"] else cfg.tied_embed_lr  # an untied head has its own group
    fused = next(model.parameters()).is_cuda
    adam_groups = [
        {"params": [p for _, p in groups[name]], "lr": lr, "base_lr": lr, "weight_decay": wd, "name": name}
        for name, lr, wd in (
            ("embed", embed_lr, cfg.embed_wd),
            ("head", cfg.head_lr, cfg.embed_wd),
            ("scalar", cfg.scalar_lr, cfg.scalar_wd),
        )
        if groups[name]
    ]
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    adam = torch.optim.Adam(adam_groups, betas=betas, eps=cfg.adam_eps, fused=fused, decoupled_weight_decay=True)
    muon = Muon(
        [p for _, p in groups["matrix"]],
        lr=cfg.matrix_lr,
        momentum=cfg.muon_momentum,
        ns_steps=cfg.muon_ns_steps,
        ns_coeffs=cfg.muon_ns_coeffs,
        row_norm=cfg.muon_row_norm,
        weight_decay=cfg.muon_wd,
    )
    for group in muon.param_groups:
        group["base_lr"], group["base_wd"], group["name"] = cfg.matrix_lr, cfg.muon_wd, "matrix"
    return [adam, muon]


class WeightEMA:
    """An fp32 exponential moving average of every weight, updated after each step and used for eval and export.

    The records keep one from 2026-03-22 on (decay 0.997, later 0.9965; docs/records.md, EMA): averaging the last few
    hundred steps of the warm-down lands in a flatter point than the final iterate.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: t.detach().float().clone() for name, t in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                self.shadow[name].lerp_(t.float(), 1.0 - self.decay)
            else:
                self.shadow[name].copy_(t)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: dict[str, torch.Tensor]) -> None:
        if set(shadow) != set(self.shadow):
            raise ValueError(f"EMA state for tensors {sorted(set(shadow) ^ set(self.shadow))} does not match the model")
        self.shadow = {name: t.to(self.shadow[name].device, torch.float32).clone() for name, t in shadow.items()}

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for name, t in model.state_dict().items():
            t.copy_(self.shadow[name].to(t.dtype))


@dataclass(frozen=True)
class Schedule:
    """Learning-rate multiplier, Muon momentum and Muon weight-decay multiplier as functions of the step.

    The warm-down is linear to 0 over the last ``warmdown_steps`` of ``total_steps``, or over the last
    ``warmdown_frac`` of them, never below ``min_lr_scale`` (the 1.0611 record: fraction 0.85, floor 0.1;
    docs/records.md, warm-down fraction). Under a wall-clock limit the trainer passes the projected total (the step
    at which time runs out at the current pace), so ``step / total_steps`` is the records' wall-clock fraction
    written in steps.

    The weight-decay taper (2026-04-18 record): Muon's decay is full until ``wd_taper_start`` of training, then falls
    linearly to ``wd_taper_final`` times at the end.
    """

    cfg: OptimConfig

    def lr_scale(self, step: int, total_steps: int) -> float:
        warmup = self.cfg.lr_warmup_steps
        warmdown = self.cfg.warmdown_frac * total_steps if self.cfg.warmdown_frac else self.cfg.warmdown_steps
        scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if warmdown > 0 and step >= total_steps - warmdown:
            scale = min(scale, max(max(total_steps - step, 0) / warmdown, self.cfg.min_lr_scale))
        return scale

    def wd_scale(self, step: int, total_steps: int) -> float:
        start, final = self.cfg.wd_taper_start, self.cfg.wd_taper_final
        frac = step / total_steps if total_steps > 0 else 1.0
        if not start or frac <= start:
            return 1.0
        return 1.0 + (final - 1.0) * min((frac - start) / (1.0 - start), 1.0)

    def muon_momentum(self, step: int) -> float:
        n = self.cfg.muon_momentum_warmup_steps
        frac = min(step / n, 1.0) if n > 0 else 1.0
        return (1 - frac) * self.cfg.muon_momentum_start + frac * self.cfg.muon_momentum

    def apply(self, optimizers: list[torch.optim.Optimizer], step: int, total_steps: int) -> float:
        scale, wd_scale = self.lr_scale(step, total_steps), self.wd_scale(step, total_steps)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
                if isinstance(opt, Muon):
                    group["momentum"] = self.muon_momentum(step)
                    group["weight_decay"] = group.get("base_wd", 0.0) * wd_scale
        return scale
