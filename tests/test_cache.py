"""The decode-once disk cache of imagefolder: one cache per set of files whatever its order, reused by
eval and by runs on a saved split, trimmed to data.cache_max_gb, listed and cleared by ``vitkit cache``;
``auto`` measures MemAvailable; torchrun's ranks on one machine share one copy; a reader never sees a
half-written ``.json``, and an interrupted decode leaves no temporary behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitkit.data import cache as cache_module
from vitkit.data.cache import build_cache
from vitkit.data.datasets import ImageFolder

from .photos import folder_recipe, tiny_folder


def _images(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def _build(files: list[Path], cache_dir: Path, **kwargs):
    return build_cache(files, 3, 18, "bilinear", "disk", cache_dir, 4.0, 0, **kwargs)


def _caches(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.glob("*.u8"))


def test_i22_8_eval_and_runs_on_a_saved_split_reuse_the_training_cache(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos")
    recipe = folder_recipe(tmp_path, root)
    code, out, err = cli("run", recipe, "--set", 'data.cache="disk"')
    assert code == 0, err
    cache_dir = root / ".vitkit-cache"
    (written,) = _caches(cache_dir)
    assert "written" in out
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    for split in ("test", "val"):
        code, out, err = cli("eval", run_dir, "--split", split)  # split.json lists the files in split order
        assert code == 0, err
        assert "reused" in out and "written" not in out and _caches(cache_dir) == [written]
    # what --resume and compare do: train on the run's split.json
    code, out, err = cli(
        "run", recipe, "--set", 'data.cache="disk"', "--set", f'data.split_file="{run_dir}/split.json"'
    )
    assert code == 0, err
    assert "reused" in out and _caches(cache_dir) == [written]
    assert not list(cache_dir.glob(".*"))  # no temporaries either


def test_i22_8_any_order_or_subset_of_the_files_is_served_by_one_cache(tmp_path, capsys):
    files = _images(tiny_folder(tmp_path / "photos", per_class=4))
    cache_dir = tmp_path / "cache"
    store, rows, bad = _build(files, cache_dir)
    assert "written" in capsys.readouterr().out and not bad
    images = store[rows].clone()
    again, again_rows, _ = _build(files[::-1], cache_dir)
    assert "reused" in capsys.readouterr().out
    assert torch.equal(again[again_rows], images.flip(0))  # files[i] is row rows[i], whatever the order
    subset = files[1::3]
    part, part_rows, _ = _build(subset, cache_dir)
    assert "reused" in capsys.readouterr().out
    assert torch.equal(part[part_rows], images[1::3])
    assert len(_caches(cache_dir)) == 1


def test_i22_8_new_caches_evict_the_least_recently_used_beyond_the_cap(tmp_path, capsys):
    files = _images(tiny_folder(tmp_path / "photos", per_class=4))  # 12 files: four disjoint sets of 3
    groups = [files[i::4] for i in range(4)]
    cache_dir = tmp_path / "cache"
    one = 3 * 3 * 18 * 18  # bytes of a cache of 3 files
    cap_gb = 2.5 * one / 2**30  # room for two
    cache_dir.mkdir()
    old = cache_dir / f"{'c' * 24}.json"  # a cache written by an older vitkit (no version): never reused
    old.write_text(json.dumps({"shape": [1, 3, 18, 18], "bad": {}}))
    old.with_suffix(".u8").write_bytes(bytes(3 * 18 * 18))
    _build(groups[0], cache_dir, max_gb=cap_gb)
    assert not old.exists() and not old.with_suffix(".u8").exists()
    (a,) = _caches(cache_dir)
    os.utime(cache_dir / a, (1000, 1000))  # last used long ago (set, not waited for)
    _build(groups[1], cache_dir, max_gb=cap_gb)
    (b,) = set(_caches(cache_dir)) - {a}
    os.utime(cache_dir / b, (2000, 2000))  # used after a
    capsys.readouterr()
    _build(groups[0], cache_dir, max_gb=cap_gb)  # reusing a makes it the most recently used
    assert "reused" in capsys.readouterr().out
    _build(groups[2], cache_dir, max_gb=cap_gb)  # a third cache: over the cap, b goes
    kept = _caches(cache_dir)
    assert len(kept) == 2 and a in kept and b not in kept
    assert "least recently used" in capsys.readouterr().out
    assert sum(p.stat().st_size for p in cache_dir.glob("*.u8")) <= cap_gb * 2**30


def test_i22_8_vitkit_cache_lists_and_clears_a_data_roots_caches(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=4)
    ImageFolder(16, root=str(root), cache="disk").load()  # the default 2 decode workers
    cache_dir = root / ".vitkit-cache"
    (name,) = _caches(cache_dir)
    leftover = cache_dir / f".{'0' * 24}.{socket.gethostname()}.{_gone_pid()}.tmp"  # a killed decode's
    leftover.write_bytes(b"x" * 10)
    old = cache_dir / f"{'c' * 24}.json"  # a cache written by an older vitkit (no version): never reused
    old.write_text(json.dumps({"shape": [1, 3, 18, 18], "bad": {}}))
    old.with_suffix(".u8").write_bytes(bytes(3 * 18 * 18))
    code, out, err = cli("cache", root)
    assert code == 0, err
    assert name in out and " 12 " in out  # the cache and its number of files
    code, out, err = cli("cache", "--clear", root)
    assert code == 0, err
    assert f"removed {cache_dir / name}" in out and f"removed {leftover}" in out and f"removed {old}" in out
    assert "4 removed" in out
    assert list(cache_dir.iterdir()) == []
    code, out, _ = cli("cache", "--clear", cache_dir)  # the cache folder itself works too
    assert code == 0 and "no caches" in out
    code, _, err = cli("cache", tmp_path / "missing")
    assert code == 2 and "is not a folder" in err and "Traceback" not in err


def _meminfo(free_kb: int, available_kb: int) -> str:
    return f"MemTotal:       33554432 kB\nMemFree:        {free_kb} kB\nMemAvailable:   {available_kb} kB\n"


def test_i22_9_auto_counts_available_memory_not_free_memory(monkeypatch, tmp_path):
    page = 4096
    free_kb = 1 << 20  # 1 GiB free (what sysconf's available pages count) ...
    sysconf = {"SC_AVPHYS_PAGES": free_kb * 1024 // page, "SC_PAGE_SIZE": page}
    monkeypatch.setattr(os, "sysconf", lambda name: sysconf[name])
    monkeypatch.setattr(cache_module, "_meminfo_text", lambda: _meminfo(free_kb, 24 << 20), raising=False)
    four_gib = 4 * 2**30  # ... while 24 GiB are available (page cache the kernel gives back)
    assert cache_module.choose_mode("auto", four_gib, 100.0, tmp_path) == ("memory", "")
    monkeypatch.setattr(cache_module, "_meminfo_text", lambda: _meminfo(free_kb, 6 << 20), raising=False)
    mode, why = cache_module.choose_mode("auto", four_gib, 100.0, tmp_path)  # over half of 6 GiB available
    assert mode == "off" and "half the available RAM" in why


@pytest.mark.slow
def test_i22_9_torchrun_ranks_of_a_machine_share_one_cache_file(tmp_path):
    from .test_distributed import _torchrun

    root = tiny_folder(tmp_path / "photos")
    recipe = folder_recipe(tmp_path, root)
    code, out, err = _torchrun(
        ["run", str(recipe), "--set", 'data.cache="memory"'],
        tmp_path,  # the default 2 workers per rank
    )
    assert code == 0, err[-3000:]
    assert "shared by the 2 processes of this machine" in out and out.count("written") == 1, out[-3000:] + err[-3000:]
    cache_dir = root / ".vitkit-cache"
    (name,) = _caches(cache_dir)  # one copy, which both ranks mapped (rank 1 reads it after the barrier)
    meta = json.loads((cache_dir / name).with_suffix(".json").read_text())
    assert len(meta["files"]) == 30 and not list(cache_dir.glob(".*"))


def test_i22_11_a_reader_never_sees_a_partial_cache_json(monkeypatch, tmp_path):
    files = _images(tiny_folder(tmp_path / "photos", per_class=4))
    cache_dir = tmp_path / "cache"
    seen = []

    def check() -> None:  # what a reader listing the folder at this moment would read
        for meta_path in cache_dir.glob("*.json"):
            meta = json.loads(meta_path.read_text())  # raises on a partial file
            data = meta_path.with_suffix(".u8")
            assert data.stat().st_size == torch.Size(meta["shape"]).numel()  # its data is complete
            seen.append(meta_path.name)

    write_text, replace = Path.write_text, os.replace

    def opened_then_written(self, text, *args, **kwargs):
        with open(self, "w"):  # the moment between open() and write() of any text file
            check()
        return write_text(self, text, *args, **kwargs)

    def checked_replace(src, dst):
        check()
        replace(src, dst)
        check()

    monkeypatch.setattr(Path, "write_text", opened_then_written)
    monkeypatch.setattr(os, "replace", checked_replace)
    _build(files, cache_dir)
    _build(files[:5], cache_dir)  # reused
    monkeypatch.undo()
    assert seen  # the checks ran once the cache existed
    (meta_path,) = cache_dir.glob("*.json")
    check()


def test_i22_11_an_interrupted_decode_leaves_no_temporary_file(monkeypatch, tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=4)
    cache_dir = tmp_path / "cache"
    from vitkit.data import decode

    load_base, calls = decode.load_base, []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the first pass
        return load_base(*args, **kwargs)

    monkeypatch.setattr(decode, "load_base", interrupted)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C reaches the main process: decode there (workers would re-raise it)
        ImageFolder(16, root=str(root), cache="disk", cache_dir=str(cache_dir), num_workers=0).load()
    assert len(calls) == 5 and list(cache_dir.iterdir()) == []


def test_i22_11_ctrl_c_while_workers_decode_leaves_no_temporary_file(monkeypatch, tmp_path):
    """The default path: DataLoader workers decode, Ctrl-C reaches the main process after the first batch."""
    from rich.progress import Progress

    root = tiny_folder(tmp_path / "photos", per_class=24)  # 72 images: 3 decode batches of 32
    cache_dir = tmp_path / "cache"
    update, calls = Progress.update, []

    def interrupted(self, task, **kwargs):
        if kwargs.get("completed"):
            calls.append(kwargs["completed"])
            raise KeyboardInterrupt
        return update(self, task, **kwargs)

    monkeypatch.setattr(Progress, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ImageFolder(16, root=str(root), cache="disk", cache_dir=str(cache_dir)).load()  # 2 workers, as users have
    assert calls == [32] and list(cache_dir.iterdir()) == []


def _gone_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_i22_11_temporaries_of_gone_processes_are_swept(tmp_path):
    files = _images(tiny_folder(tmp_path / "photos", per_class=4))
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    host = socket.gethostname()
    gone = cache_dir / f".{'a' * 24}.{host}.{_gone_pid()}.tmp"
    running = cache_dir / f".{'b' * 24}.{host}.{os.getppid()}.tmp"  # a decode still under way
    for path in (gone, running):
        path.write_bytes(b"\0" * 100)
    _build(files, cache_dir)
    assert not gone.exists() and running.exists()
