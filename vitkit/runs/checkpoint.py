"""Checkpoints: written atomically, read with ``weights_only=True`` (no code runs on load)."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from vitkit.errors import UserError

_writes: Counter[str] = Counter()


def _test_kill_after_temp(path: Path) -> None:
    """Test hook: ``VITKIT_TEST_KILL_AFTER_TEMP=last.pt:3`` SIGKILLs this process on the 3rd write of
    a file named ``last.pt``, after its temp file is written and synced, before the rename."""
    spec = os.environ.get("VITKIT_TEST_KILL_AFTER_TEMP")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if path.name == name:
        _writes[name] += 1
        if _writes[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _test_kill_after_temp(path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``, atomically."""
    atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temp files that a killed ``atomic_write`` left in ``folder``; returns them."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically: a kill mid-write leaves the old file intact."""
    atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a file carrying code (a pickle payload) is refused unread."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"{path}: refused to load: not a plain-weights checkpoint ({_unpickling_reason(str(err))}); "
            "nothing in it was run. Load only checkpoints you trust; share weights as model.safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None


def _unpickling_reason(message: str) -> str:
    """The one useful line of torch's weights-only refusal: which global the file tried to call."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it would call {found.group(1)} when unpickled"
    found = re.search(r"WeightsUnpickler error: ([^\n]+)", message)
    lines = message.strip().splitlines()
    return (found.group(1) if found else lines[0] if lines else "unsupported content").strip()


def save_safetensors(model: torch.nn.Module | dict[str, torch.Tensor], path: Path, metadata: dict[str, Any]) -> None:
    """Weights (a model or its state dict) as ``safetensors`` with JSON metadata (model spec, classes, ...)."""
    from safetensors.torch import save

    state = model if isinstance(model, dict) else model.state_dict()
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    blob = save(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()})
    atomic_write(Path(path), lambda f: f.write(blob))


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` from a file written by ``save_safetensors``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors raises its own error types
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None
