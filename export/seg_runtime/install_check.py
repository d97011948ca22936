"""Two installs of the runtime in one environment: ``seg`` (which includes it) and ``seg-runtime`` beside it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def duplicate_runtime() -> str | None:
    """A warning when both ``seg`` and ``seg-runtime`` are installed here, else None.

    ``seg`` ships ``seg_runtime`` and ``seg-run`` itself; ``pip install ./export`` in the same environment
    installs a second copy that shadows it (the one imported may be either), and ``pip uninstall
    seg-runtime`` then deletes the ``seg-run`` command both installed.
    """
    if _installed("seg") is None or (runtime := _installed("seg-runtime")) is None:
        return None
    import seg_runtime

    return (f"seg-runtime ({runtime.locate_file('')}) is installed beside seg, which already includes the "
            f"runtime and seg-run; this process uses {Path(seg_runtime.__file__).parent}. `pip install "
            "./export` is for a venv without seg. To undo it: pip uninstall seg-runtime, then reinstall seg "
            "(pip install -e <your seg checkout>), since the uninstall also removes seg-run")
