"""Device choice and the GPU eigenvalue route (torch, imported only when a GPU is used)."""

from __future__ import annotations

import os
import sys

import numpy as np

from .config import Device
from .errors import OptionError
from .spectral.esd import ESD, GRAM_SAFE_RATIO, rank_count


def _nvidia_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (torch is imported only if a driver exists)."""
    torch = sys.modules.get("torch")
    if torch is None:
        if not _nvidia_present():
            return False
        try:
            import torch  # noqa: F811
        except ImportError:
            return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def resolve_device(device: Device | str) -> str:
    """'cpu' or 'cuda' for a requested device; 'cuda' without a GPU is an error."""
    device = Device(device) if not isinstance(device, Device) else device
    if device is Device.CPU:
        return "cpu"
    available = cuda_available()
    if device is Device.CUDA and not available:
        raise OptionError("The 'device' option is 'cuda', but torch sees no CUDA device.")
    return "cuda" if available else "cpu"


def compute_esd_cuda(stack: np.ndarray, N: int) -> ESD:
    """Same as :func:`htsr.spectral.esd.compute_esd`, eigenvalues from the GPU in float64.

    All slices of a layer share a shape, so their Gram matrices are formed and
    diagonalized as one batch. A slice whose smallest eigenvalue is below
    ``GRAM_SAFE_RATIO``·λmax falls back to the CPU SVD, as on the CPU path.
    """
    import torch

    from .spectral.esd import slice_singular_values_sq

    w = torch.from_numpy(np.ascontiguousarray(stack)).to("cuda", dtype=torch.float64, non_blocking=True)
    rows, cols = stack.shape[1], stack.shape[2]
    x = w.transpose(1, 2) @ w if rows >= cols else w @ w.transpose(1, 2)
    ev = torch.linalg.eigvalsh(x).cpu().numpy()
    all_evals, sv_max, sv_min, rank_loss = [], 0.0, 0.0, 0
    for k in range(ev.shape[0]):
        e = ev[k]
        if e[-1] <= 0 or e[0] <= e[-1] * GRAM_SAFE_RATIO:
            e = slice_singular_values_sq(stack[k])
        e = np.clip(e, 0.0, None)
        sv = np.sqrt(e)
        sv_max = max(sv_max, float(sv[-1]))
        sv_min = max(sv_min, float(sv[0]))
        rank_loss += sv.size - rank_count(sv, N)
        all_evals.append(e)
    evals = np.sort(np.concatenate(all_evals)) if len(all_evals) > 1 else all_evals[0]
    return ESD(evals=evals, sv_max=sv_max, sv_min=sv_min, rank_loss=rank_loss)
