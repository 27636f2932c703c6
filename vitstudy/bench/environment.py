"""Where a measurement runs: device presence, the default device, and the environment every results row records."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from typing import Any

import timm
import torch

from ..config import check

NOT_MEASURED_NO_CUDA = "not measured (no CUDA device)"  # the `note` of a row whose device is absent
# The bf16 verdict of a row on a device without bf16 kernels: there autocast falls back to a reference matmul
# hundreds of times slower than fp32, which times the fallback, not bf16, and would hold the quick report for hours.
NOT_MEASURED_NO_BF16 = "not measured (no bf16 kernels on this device)"


def device_available(device: str | torch.device) -> bool:
    """Whether `device` exists on this machine (CPU always does)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        return device.index is None or device.index < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return False


def default_device() -> str:
    """``"cuda"`` when a CUDA device is present, else ``"cpu"``: where the study computes by default."""
    return "cuda" if device_available("cuda") else "cpu"


BF16_ENV = "VITSTUDY_BF16"  # "1": time bf16 even without kernels (the fallback), "0": never; unset: detect


def bf16_native(device: str | torch.device) -> bool:
    """Whether ``device`` has bf16 matmul kernels: on a CUDA device ``torch.cuda.is_bf16_supported()``, on a CPU
    oneDNN's bf16 support (AVX-512 or newer; an AVX2-only CPU has none). Absent devices have none.
    ``$VITSTUDY_BF16`` overrides the detection on a present device: ``1`` yes, ``0`` no."""
    device = torch.device(device)
    if not device_available(device):
        return False
    override = os.environ.get(BF16_ENV)
    if override is not None:
        check(override in ("0", "1"), BF16_ENV, override, "0 (never time bf16), 1 (always) or unset (detect)")
        return override == "1"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        with contextlib.suppress(AttributeError, RuntimeError):  # a private op: a build without oneDNN lacks it
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _cpu_name() -> str:
    # platform.processor() is often empty or just "x86_64" on Linux; /proc/cpuinfo names the model.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Flat description of the device and software a measurement ran on (no host or user names)."""
    device = torch.device(device)
    if not device_available(device):
        device_name = "not available"
    elif device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        device_name = _cpu_name()
    else:
        device_name = device.type
    return {
        "device_type": device.type,
        "device_name": device_name,
        "cpu_threads": torch.get_num_threads(),
        # Two CPUs of one name may differ in vector units: the capability torch dispatches to (AVX2, AVX512, ...)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_native(device),
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "timm": timm.__version__,
        "cuda_runtime": torch.version.cuda or "none",
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def synchronize(device: torch.device) -> None:
    # Kernels launch asynchronously; without a sync the clock measures launch time, not run time.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
