"""Device choice and the GPU eigenvalue route (torch, imported only when a GPU is used).

On a GPU the Gram matrices of a layer's slices — and of consecutive layers of
the same shape, batched by the engine — are formed and diagonalized in one
call each (``torch.bmm`` and ``torch.linalg.eigvalsh``), always in float64, so
that the numbers are the CPU's (alpha within 1e-4 relative; measured on an
H100: 1.6e-14 on MiniLM, 1.4e-12 on a Llama-shaped stack). The weights travel
in their stored dtype and are widened on the GPU. A slice that the Gram route
cannot resolve (λ_min/λ_max at or below ``GRAM_SAFE_RATIO`` of
:mod:`htsr.spectral.esd`) is redone on the CPU, exactly as on the CPU path.

``fast=True`` does not change the GPU route: measured on an H100, float32
there moved alpha by up to 1.9e-4 (λmax by 1.3e-4, with TF32 off) and saved
little (MiniLM slower, a Llama-shaped stack 9% faster), so the float64 GPU
route is the GPU's only route.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from .config import Device
from .errors import OptionError
from .spectral.esd import ESD, esd_from_slices

GPU_BATCH_BYTES = 2 << 30
"""Largest batch of same-shape layers sent to the GPU at once, in float64 bytes of the weights."""


def _nvidia_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (torch is imported only if a driver exists)."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        if not _nvidia_present():
            return False
        try:
            import torch
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


def gram_eigvalsh_cuda(stacks: list[np.ndarray]) -> np.ndarray:
    """Eigenvalues (ascending, float64 numpy) of the smaller Gram matrix of every slice of ``stacks``.

    Parameters
    ----------
    stacks : list of ndarray, each (rf_k, rows, cols), one shape for all
        Matrices in any float dtype; copied to the GPU as stored.

    Returns
    -------
    ndarray, shape (Σ rf_k, min(rows, cols))
    """
    import torch

    dtype = torch.float64
    total = sum(s.shape[0] for s in stacks)
    rows, cols = stacks[0].shape[1], stacks[0].shape[2]
    w = torch.empty((total, rows, cols), dtype=dtype, device="cuda")
    k = 0
    for s in stacks:
        src = torch.from_numpy(np.ascontiguousarray(s))
        w[k:k + s.shape[0]].copy_(src.to("cuda", non_blocking=False))
        k += s.shape[0]
    wt = w.transpose(1, 2)
    x = torch.bmm(wt, w) if rows >= cols else torch.bmm(w, wt)
    del w, wt
    ev = torch.linalg.eigvalsh(x)
    del x
    return ev.to(torch.float64).cpu().numpy()


def compute_esd_cuda(stack: np.ndarray, N: int) -> ESD:
    """Same as :func:`htsr.spectral.esd.compute_esd`, eigenvalues from the GPU (all slices in one batch)."""
    return esd_from_slices(stack, gram_eigvalsh_cuda([stack]), N)


def batched_esds(stacks: list[np.ndarray | None], Ns: list[int]) -> list[ESD | None]:
    """ESDs of several same-shape layers from one GPU batch.

    Parameters
    ----------
    stacks : list of ndarray (rf, rows, cols) or None
        Each layer's matrices; None for a layer the caller computes on its own.
    Ns : list of int
        Each layer's larger dimension (the rank tolerance).

    Returns
    -------
    list of ESD or None
        None where ``stacks`` held None.
    """
    ok = [s for s in stacks if s is not None]
    if not ok:
        return [None] * len(stacks)
    ev = gram_eigvalsh_cuda(ok)
    out: list[ESD | None] = []
    k = 0
    for st, N in zip(stacks, Ns):
        if st is None:
            out.append(None)
            continue
        rf = st.shape[0]
        out.append(esd_from_slices(st, ev[k:k + rf], N))
        k += rf
    return out
