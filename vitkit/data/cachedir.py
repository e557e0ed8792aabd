"""The folder of disk image caches (``data.cache_dir``): names, metadata, lookup, eviction (imports no torch itself).

A cache is two files. ``<key>.u8`` holds the base images, ``(M, C, S, S)`` uint8, one row per file in
sorted order. ``<key>.json`` holds how they were made (S, channels, interpolation), every file as
``[path, size, mtime_ns]`` in row order, and the unreadable ones; the version of the way bases are
made (``VERSION``: a cache of another version is never reused and is removed by the next cache
written). The key hashes the sorted set of files, so any order of the same files finds the same
cache, and a request is served by any cache
whose files cover it with the same stats (training decoded train+val+test; ``vitkit eval`` asks for
the test split and reads the same file). The ``.json`` is written last and atomically: a cache
exists once its ``.json`` does. A cache's last use is its ``.u8``'s mtime (touched on every reuse).

Writing a cache removes the caches it supersedes (same S/channels/interpolation, their paths a
subset of its own: every file they could serve is in the new one, with current stats) and then the
least recently used ones until the folder is under ``data.cache_max_gb``. Temporaries are
``.<key>.<host>.<pid>.tmp``; those of processes no longer running on this host are swept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 3  # 3: timm's evaluation geometry (floor(img_size / crop_pct), whole-image decode, crop offsets)
_KEY = re.compile(r"^[0-9a-f]{24}$")
_TMP = re.compile(r"^\.(?P<key>[0-9a-f]{24})\.(?P<host>.+)\.(?P<pid>\d+)(\.json)?\.tmp$")

FileStat = tuple[str, int, int]  # resolved path, size, mtime_ns


def file_stats(files: list[Path]) -> list[FileStat]:
    """Each file's resolved path, size and mtime (what a cache is checked against)."""
    out = []
    for path in files:
        st = path.stat()
        out.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return out


def cache_key(stats: list[FileStat], in_chans: int, size: int, interpolation: str) -> str:
    """A hash of the set of files (order and repeats ignored) and of how the base images are made."""
    h = hashlib.sha256(f"v{VERSION} {in_chans} {size} {interpolation}\n".encode())
    for path, nbytes, mtime in sorted(set(stats)):
        h.update(f"{path}\t{nbytes}\t{mtime}\n".encode())
    return h.hexdigest()[:24]


@dataclass
class Cache:
    """One complete cache of a folder: its key and metadata."""

    folder: Path
    key: str
    meta: dict[str, Any]

    @property
    def data_path(self) -> Path:
        return self.folder / f"{self.key}.u8"

    @property
    def meta_path(self) -> Path:
        return self.folder / f"{self.key}.json"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta["shape"])

    @property
    def nbytes(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def last_used(self) -> float:
        try:
            return self.data_path.stat().st_mtime
        except OSError:
            return 0.0

    def made_like(self, in_chans: int, size: int, interpolation: str) -> bool:
        meta = self.meta
        return (meta["in_chans"], meta["size"], meta["interpolation"]) == (in_chans, size, interpolation)

    def rows_of(self, stats: list[FileStat]) -> list[int] | None:
        """The row of each file (same path, size and mtime), or None if one is missing."""
        index = {(p, s, m): row for row, (p, s, m) in enumerate(self.meta["files"])}
        rows = [index.get(stat) for stat in stats]
        return None if any(row is None for row in rows) else rows  # type: ignore[return-value]

    def touch(self) -> None:
        """Mark it used now (the eviction order)."""
        with contextlib.suppress(OSError):  # a read-only folder: reuse still works
            os.utime(self.data_path)


def read_cache(meta_path: Path) -> Cache | None:
    """The cache of this ``.json``, or None when it is not a complete cache of this version."""
    if not _KEY.match(meta_path.stem):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        cache = Cache(meta_path.parent, meta_path.stem, meta)
        if meta.get("version") != VERSION or len(meta["files"]) != cache.shape[0]:
            return None
        if cache.data_path.stat().st_size != cache.nbytes:
            return None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return cache


def caches(folder: Path) -> list[Cache]:
    """Every complete cache in ``folder``, most recently used first."""
    if not folder.is_dir():
        return []
    found = [c for c in map(read_cache, sorted(folder.glob("*.json"))) if c is not None]
    return sorted(found, key=lambda c: c.last_used, reverse=True)


def find_covering(
    folder: Path, key: str, stats: list[FileStat], in_chans: int, size: int, interpolation: str
) -> tuple[Cache, list[int]] | None:
    """A cache holding every file of ``stats`` made the same way, and their rows: the one named ``key``
    first, else the smallest that covers them."""
    exact = read_cache(folder / f"{key}.json")
    candidates = [exact] if exact is not None else []
    candidates += sorted((c for c in caches(folder) if c.key != key), key=lambda c: c.nbytes)
    for cache in candidates:
        if cache.made_like(in_chans, size, interpolation) and cache.shape[0] >= len(set(stats)):
            rows = cache.rows_of(stats)
            if rows is not None:
                return cache, rows
    return None


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """``path`` holds either its old content or all of ``data``, never a part."""
    tmp = temporary(path.parent, path.stem, ".json")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary(folder: Path, key: str, suffix: str = "") -> Path:
    """This process's temporary file for cache ``key`` (its name says which host and process)."""
    return folder / f".{key}.{socket.gethostname()}.{os.getpid()}{suffix}.tmp"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporaries left by processes of this host that are no longer running (killed mid-decode)."""
    host = socket.gethostname()
    out = []
    for path in folder.glob(".*.tmp") if folder.is_dir() else ():
        match = _TMP.match(path.name)
        if match and match["host"] == host and not _running(int(match["pid"])):
            out.append(path)
    return out


def sweep_temporaries(folder: Path) -> None:
    """Remove the temporaries of processes that are gone."""
    for path in stale_temporaries(folder):
        path.unlink(missing_ok=True)


def remove(cache: Cache) -> int:
    """Delete a cache (its ``.json`` first, so it stops counting at once); the bytes freed."""
    nbytes = cache.nbytes
    try:
        cache.meta_path.unlink(missing_ok=True)
        cache.data_path.unlink(missing_ok=True)
    except OSError:  # in use where open files cannot be deleted (Windows): keep it
        return 0
    return nbytes


def outdated(folder: Path, orphans: bool = False) -> list[Path]:
    """Files of caches an older vitkit wrote (their ``.json`` has another version: never reused), and with
    ``orphans`` the ``.u8`` files without a ``.json`` (a write stopped between the two, or one under way)."""
    out = []
    for meta_path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            version = json.loads(meta_path.read_text()).get("version")
        except (OSError, ValueError, AttributeError):
            continue
        data = meta_path.with_suffix(".u8")
        if _KEY.match(meta_path.stem) and version != VERSION:
            out += [meta_path, data] if data.exists() else [meta_path]
    if orphans:
        out += [p for p in folder.glob("*.u8") if _KEY.match(p.stem) and not p.with_suffix(".json").exists()]
    return out


def evict(folder: Path, keep: Cache, max_bytes: int) -> list[tuple[Cache, str]]:
    """Remove the caches ``keep`` supersedes, then the least recently used until the folder holds at
    most ``max_bytes`` (``keep`` always stays); each cache removed, and why."""
    paths = {p for p, _, _ in keep.meta["files"]}
    made = (keep.meta["in_chans"], keep.meta["size"], keep.meta["interpolation"])
    removed: list[tuple[Cache, str]] = []
    others = []
    for cache in caches(folder):  # most recently used first
        if cache.key == keep.key:
            continue
        if cache.made_like(*made) and {p for p, _, _ in cache.meta["files"]} <= paths and remove(cache):
            removed.append((cache, "superseded: the new cache holds all its files"))
        else:
            others.append(cache)
    total = keep.nbytes + sum(c.nbytes for c in others)
    while others and total > max_bytes:
        cache = others.pop()
        if remove(cache):
            removed.append((cache, "least recently used, over data.cache_max_gb"))
            total -= cache.nbytes
    return removed


def clear(folder: Path) -> list[tuple[Path, int]]:
    """Remove every cache of ``folder``, outdated and orphaned cache files and the temporaries of gone
    processes; (file, bytes) removed."""
    removed = []
    for cache in caches(folder):
        if remove(cache):
            removed.append((cache.data_path, cache.nbytes))
    for path in [*outdated(folder, orphans=True), *stale_temporaries(folder)]:
        try:
            nbytes = path.stat().st_size
            path.unlink()
        except OSError:  # gone meanwhile
            continue
        removed.append((path, nbytes))
    return removed


def cache_folder(path: Path) -> Path:
    """The folder of caches a user names: a data root's ``.vitkit-cache``, or the folder itself."""
    return path / ".vitkit-cache" if (path / ".vitkit-cache").is_dir() else path


def age(when: float) -> str:
    """How long ago the time ``when`` was: '3 min ago', '2 h ago', '5 days ago'."""
    seconds = max(0.0, time.time() - when)
    for unit, span in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit} ago"
    return "just now"
