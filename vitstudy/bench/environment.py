"""Where a measurement runs: device presence, the default device, and the environment every results row records."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import timm
import torch

NOT_MEASURED_NO_CUDA = "not measured (no CUDA device)"  # the `note` of a row whose device is absent


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
