"""The one place that turns a device setting into a torch device name."""

from __future__ import annotations

from tacluster.errors import InputError


def resolve_device(device: str) -> str:
    """Map ``"cpu" | "cuda" | "cuda:N" | "auto"`` to a concrete torch device string.

    ``"auto"`` picks ``"cuda"`` when torch sees a GPU.

    Raises
    ------
    InputError
        For an unknown device, or ``cuda`` requested where torch sees no GPU.
    """
    if not isinstance(device, str):
        raise InputError(f"device={device!r} is invalid: use 'cpu', 'cuda' or 'auto'")
    dev = device.strip().lower()
    if dev == "cpu":
        return "cpu"
    if dev != "auto" and dev != "cuda" and not dev.startswith("cuda:"):
        raise InputError(f"device={device!r} is invalid: use 'cpu', 'cuda' or 'auto'")
    import torch

    has_cuda = torch.cuda.is_available()
    if dev == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise InputError(
            f"device {device!r} was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use the CPU (--device cpu or auto; device='cpu' in the API)"
        )
    return dev
