"""Which torch device to run on: `auto` is CUDA where there is one, else the CPU.

Imported only on the paths that use torch (`train`, `scan --device`), never by the daemon.
"""

from __future__ import annotations

import functools
import threading

from imgrank.errors import ImgrankError


def resolve_device(name: str | None) -> str:
    """`auto` -> `cuda` if torch sees a GPU, else `cpu`; `cuda`/`cuda:N` only where torch sees one."""
    try:
        import torch
    except ImportError:
        raise ImgrankError(f"--device {name} needs torch: pip install 'imgrank[train]'") from None

    name = (name or "cpu").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = (
            "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        )
        raise ImgrankError(
            f"--device {name}: torch {torch.__version__} here has no CUDA device ({build}); "
            "use --device auto or cpu"
        )
    try:
        torch.device(name)
    except RuntimeError as e:
        raise ImgrankError(f"--device {name}: not a torch device ({e})") from None
    return name


def torch_device(name: str):
    """The torch device (`auto`: CUDA where there is one), or one clear line when there is no such device."""
    resolved = resolve_device(name)  # one clear line without torch
    import torch

    device = torch.device(resolved)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ImgrankError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "cuda":
        _start_cuda(str(device))
    return device


@functools.cache
def _start_cuda(device: str) -> None:
    """CUDA's start-up (the context and its libraries: about 3 s on an H200) in the background,
    while this process reads the labels, groups near-duplicates and makes the folds on the CPU.
    torch's lazy initialisation is locked: the first real use waits for it if it is not done."""
    import torch

    threading.Thread(target=torch.zeros, args=(1,), kwargs={"device": device}, daemon=True).start()
