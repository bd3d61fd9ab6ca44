"""Atomic outputs get the permissions any other new file would get under the process's umask."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from anime_avatar.core.fsutil import atomic_dir, atomic_write_bytes, current_umask, utf8_name


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077])
def test_atomic_files_and_folders_honour_the_umask(tmp_path, mask):
    with umask(mask):
        assert current_umask() == mask
        atomic_write_bytes(tmp_path / "file.bin", b"data")
        with atomic_dir(tmp_path / "folder") as out:
            (out / "inside.txt").write_text("x")
        # what open() and mkdir() make under the same umask
        (tmp_path / "plain.bin").write_bytes(b"data")
        (tmp_path / "plain").mkdir()
    assert oct((tmp_path / "file.bin").stat().st_mode & 0o777) == oct(0o666 & ~mask)
    assert oct((tmp_path / "folder").stat().st_mode & 0o777) == oct(0o777 & ~mask)
    assert (tmp_path / "file.bin").stat().st_mode == (tmp_path / "plain.bin").stat().st_mode
    assert (tmp_path / "folder").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_replacing_a_file_gives_it_the_umask_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o600)
    with umask(0o022):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644


def test_utf8_name_escapes_only_bytes_that_are_not_utf8():
    assert utf8_name("été/ok.png") == "été/ok.png"
    assert utf8_name(os.fsdecode(b"caf\xe9/\xff.png")) == "caf\\xe9/\\xff.png"
    assert utf8_name("\ud800.png") == "\\ud800.png"  # a surrogate no file name byte gives


def test_a_temporary_folder_a_killed_run_left_is_removed_by_the_next_and_no_other(tmp_path):
    """A detect stage killed with SIGKILL left data/.faces.di_leqvv.tmp/ with its partial crops for good."""
    stale = tmp_path / ".faces.di_leqvv.tmp"
    (stale / "crops").mkdir(parents=True)
    (stale / "crops" / "a.png").write_bytes(b"partial")
    others = [tmp_path / ".faces-old.x.tmp", tmp_path / ".train.y.tmp", tmp_path / "faces.z.tmp"]
    for other in others:
        other.mkdir()
    with atomic_dir(tmp_path / "faces") as out:
        (out / "new.png").write_bytes(b"new")
    assert not stale.exists() and all(other.is_dir() for other in others)
    assert [p.name for p in (tmp_path / "faces").iterdir()] == ["new.png"]
