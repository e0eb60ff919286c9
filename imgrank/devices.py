"""Which torch device to run on: `auto` is CUDA where there is one, else the CPU.

Imported only on the paths that use torch (`train`, `scan --device`), never by the daemon.
"""

from __future__ import annotations

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
