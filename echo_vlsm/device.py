"""Which device and precision a step runs on: one rule for training, SDM and benchmarks.

``auto`` means CUDA when there is a GPU, else the CPU; ``cuda`` under torchrun means this
process's GPU. Precision ``auto`` is bf16 autocast on GPUs that support it, else
``gpu_fallback`` (fp16 with a gradient scaler for the VLSMs; fp32 for the SDM, whose
sampling is unstable in fp16), and fp32 on the CPU.

Examples::

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_precision("auto", resolve_device("cpu"))
    'fp32'
    >>> autocast_dtype("bf16")
    torch.bfloat16
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` means
    ``cuda:<local_rank>``.

    Raises:
        RuntimeError: a CUDA device is asked for and there is none.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use "
                           "device='cpu' or 'auto'")
    return dev


def resolve_precision(precision: str, device: torch.device, gpu_fallback: str = "fp16") -> str:
    """``auto`` -> ``bf16`` on GPUs that support it, ``gpu_fallback`` on other GPUs, ``fp32``
    on the CPU; other values pass through (checked against ``PRECISIONS``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else gpu_fallback
    return "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for a resolved precision (a null context for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
