"""Stale MPICH shared-memory segments are found and removed, live ones
never."""

from __future__ import annotations

import mmap
import os
import time

from datajax.shm import remove_stale_segments, stale_segments


def _segment(folder, name, age_seconds):
    path = folder / name
    path.write_bytes(b"\0" * mmap.PAGESIZE)
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_only_old_unmapped_segments_are_stale(tmp_path):
    old = _segment(tmp_path, "mpich_shm_1a2b_0", 3600)
    older = _segment(tmp_path, "mpich_shm_3c4d_0", 7200)
    young = _segment(tmp_path, "mpich_shm_5e6f_0", 1)
    mapped = _segment(tmp_path, "mpich_shm_7a8b_0", 3600)
    other = _segment(tmp_path, "not_mpich_0", 3600)

    with open(mapped, "r+b") as stream, mmap.mmap(stream.fileno(), 0):
        found = stale_segments(min_age=60, folder=str(tmp_path))
        removed = remove_stale_segments(min_age=60, folder=str(tmp_path))

    assert found == [str(older), str(old)]
    assert removed == found
    assert not old.exists() and not older.exists()
    assert young.exists() and mapped.exists() and other.exists()
    # once unmapped and old, the last one goes too
    assert remove_stale_segments(min_age=60, folder=str(tmp_path)) == [
        str(mapped)
    ]


def test_a_folder_reached_through_a_symlink_still_sees_mappings(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    mapped = _segment(real, "mpich_shm_9c9d_0", 3600)

    with open(mapped, "r+b") as stream, mmap.mmap(stream.fileno(), 0):
        removed = remove_stale_segments(min_age=60, folder=str(link))

    assert removed == []
    assert mapped.exists()
