"""Where the networks run: ``--device {auto,cpu,cuda}`` resolved on the machine that runs them.

The participant workflow passes the user's word (``auto``, ``cpu`` or ``cuda``) down to the
segmentation node unchanged; the node calls :func:`resolve_device` when it runs. Under a cluster
plugin (``--plugin SLURM``) that is the compute node, not the GPU-less login node that built the
graph. torch is imported only when ``auto`` or ``cuda`` must be checked.
"""

from __future__ import annotations

__all__ = ["DEVICES", "DeviceError", "resolve_device"]

#: The words ``--device`` accepts.
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """``--device cuda`` where no CUDA device is visible (or an unknown device word)."""


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU here, else ``cpu``; ``cuda`` is checked.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        What the user asked for.

    Returns
    -------
    str
        ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    DeviceError
        ``cuda`` was asked for and torch sees no CUDA device (one line naming the fix), or
        ``device`` is not one of :data:`DEVICES`.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if device not in DEVICES:
        raise DeviceError(f"--device {device!r}: unknown; choose one of {', '.join(DEVICES)}.")
    if device == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise DeviceError("--device cuda: no CUDA device is visible (torch "
                          f"{torch.__version__}); use --device cpu or auto, or run the container "
                          "with --gpus all / apptainer --nv.")
    return "cuda"
