"""Precision and memory format: how a model computes, two settings resolved once per experiment.

    numerics = Numerics.resolve("cuda")                      # bf16, channels_last: the defaults on CUDA
    numerics = Numerics.resolve("cpu", "bf16", "contiguous")
    with numerics.autocast():
        logits = model(numerics.input(x_uint8))

`precision` is "fp32" or "bf16" (bf16 autocast: convolutions and matmuls in bf16, losses and softmax in fp32 as
every loop here computes them); `memory_format` is "channels_last" or "contiguous" for models and their inputs.
On CUDA the defaults are bf16 + channels_last (≈1.2–2× faster convolutions, no loss scaling needed with bf16);
on a CPU they are fp32 + channels_last (bf16 is slower there, and fp32 is the reference; channels_last trains
these CNNs 4–26 % faster per step than contiguous on a CPU too, BENCHMARKS.md). Both are settings of the
experiment (`ExperimentSpec.precision` / `memory_format`, the CLIs' --precision / --memory-format), so the bf16
path also runs on a CPU (the tests compare it with fp32) and a result names what it was computed in.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16")
MEMORY_FORMATS = ("contiguous", "channels_last")


def default_precision(device_type: str) -> str:
    """bf16 on CUDA, fp32 elsewhere."""
    return "bf16" if device_type == "cuda" else "fp32"


def default_memory_format(device_type: str) -> str:
    """channels_last on every device: the faster layout for these CNNs on CUDA and on CPUs alike."""
    return "channels_last"


def check_numerics(precision: Optional[str], memory_format: Optional[str]) -> None:
    """Known names (None: the device's default), or ConfigError."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if memory_format is not None and memory_format not in MEMORY_FORMATS:
        raise ConfigError(f"unknown memory format {memory_format!r}; valid: {', '.join(MEMORY_FORMATS)}")


@dataclass(frozen=True)
class Numerics:
    """The precision and memory format of one experiment on one kind of device (see the module docstring)."""

    device_type: str = "cpu"
    precision: str = "fp32"
    memory_format: str = "channels_last"

    def __post_init__(self):
        check_numerics(self.precision, self.memory_format)

    @classmethod
    def resolve(cls, device, precision: Optional[str] = None, memory_format: Optional[str] = None) -> "Numerics":
        """The settings on `device` (a torch.device or its name), None meaning that device's default."""
        kind = torch.device(device).type
        return cls(kind, precision or default_precision(kind), memory_format or default_memory_format(kind))

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def autocast(self):
        """The context every forward pass runs in: bf16 autocast, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """Images as a model takes them: uint8 → float in [0, 1] (float inputs as they are), in the memory format."""
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def place(self, model: torch.nn.Module, device) -> torch.nn.Module:
        """`model` on `device` in the memory format; on CUDA cuDNN also picks its kernels (fixed input shapes:
        autotuning pays back after a few batches)."""
        if torch.device(device).type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            return model.to(device, memory_format=torch.channels_last)
        return model.to(device)

    def record(self) -> dict:
        """What a result records: {"precision", "memory_format"}."""
        return {"precision": self.precision, "memory_format": self.memory_format}
