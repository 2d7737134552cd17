"""The machine a run is on: device, torch.distributed (from torchrun's environment), autocast."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .config import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """bf16 autocast on CUDA; CPUs run fp32 (bf16 matmuls are slow on most of them)."""
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# Rank 0 alone exports (self-generated calibration, GPTQ, the codecs) while the other ranks wait in ``broadcast``:
# minutes for the record presets, where NCCL's default 10-minute timeout would kill the waiting ranks.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


def setup(device: str = "auto") -> Runtime:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPUs) and pick the device."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but torch sees no CUDA device")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=dev, timeout=COLLECTIVE_TIMEOUT)
        else:
            dist.init_process_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    return Runtime(dev, rank, world_size, local_rank)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float | int], runtime: Runtime, dtype: torch.dtype = torch.float64) -> list[float]:
    """Sum a few numbers over ranks (identity without torch.distributed)."""
    t = torch.tensor(values, dtype=dtype, device=runtime.device)
    if runtime.distributed:
        dist.all_reduce(t)
    return t.tolist()
