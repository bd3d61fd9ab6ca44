"""Tests for anime_avatar.data.sources: synthetic, local folder/archive/file and hf sources.

Everything runs on small generated images in tmp_path; nothing touches the network.
The url source is tested in test_fetch.py, next to its local HTTP server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import stat
import struct
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anime_avatar.artifacts.raw import MANIFEST_FIELDS, REJECTED_FIELDS, RawImage, synthetic_only, write_raw_set
from anime_avatar.core.errors import UserError
from anime_avatar.data.sources import (
    SYNTHETIC_LICENSE,
    collect,
    collect_from_path,
    collect_hf,
    collect_synthetic,
    extract_archive,
)
from tests.conftest import params_with, section

ESCAPES = "path escapes the archive folder"


# --- helpers -----------------------------------------------------------------------------------


def image_bytes(seed: int, width: int = 48, height: int = 32, fmt: str = "PNG") -> bytes:
    """A small noise image, different for every seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (relative posix path -> content)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def local_params(path: Path, **changes):
    return section("data", source="local", path=str(path), **changes)


def rejected_map(result) -> dict[str, str]:
    return {r.relpath: r.reason for r in result.rejected}


def synthetic_params(count: int = 3, seed: int = 7, size: int = 128, **changes):
    return section("data", synthetic={"count": count, "seed": seed, "size": size}, **changes)


def add_tar_member(
    tf: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, linkname: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


# --- synthetic ---------------------------------------------------------------------------------


def test_synthetic_manifest_rows_describe_the_files(tmp_path):
    out = tmp_path / "out"
    result = collect_synthetic(synthetic_params(count=3, seed=7, size=128), out, workers=1)

    assert result.rejected == []
    assert [r.relpath for r in result.images] == [f"images/synthetic/{i:06d}.png" for i in range(3)]
    assert sorted(tree(out)) == [r.relpath for r in result.images]
    for row in result.images:
        assert tuple(row.row()) == MANIFEST_FIELDS
        data = (out / row.relpath).read_bytes()
        assert row.sha256 == sha256(data)
        assert row.bytes == len(data)
        with Image.open(out / row.relpath) as im:
            assert im.format == "PNG"
            assert im.size == (row.width, row.height) == (128, 128)
        assert row.source == "synthetic:seed=7"
        assert row.license == SYNTHETIC_LICENSE
        boxes = json.loads(row.faces)
        assert 1 <= len(boxes) <= 3
        for box in boxes:
            assert len(box) == 4 and all(isinstance(v, int) for v in box)
            x, y, w, h = box
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128, box


def test_a_set_is_synthetic_only_when_every_image_is(tmp_path):
    out = tmp_path / "out"
    result = collect_synthetic(synthetic_params(count=2, seed=7, size=128), out, workers=1)
    write_raw_set(out, result.images, [])
    assert synthetic_only(out)
    real = RawImage(**{**result.images[0].row(), "relpath": "images/local/a.png", "source": "local:photos"})
    write_raw_set(out, [*result.images, real], [])
    assert not synthetic_only(out)
    assert not synthetic_only(tmp_path / "photos.zip") and not synthetic_only(tmp_path)  # no manifest: not synthetic


def test_synthetic_is_deterministic_per_seed(tmp_path):
    def digests(seed: int, count: int, name: str) -> list[str]:
        result = collect_synthetic(synthetic_params(count=count, seed=seed), tmp_path / name, workers=1)
        return [r.sha256 for r in result.images]

    first = digests(7, 3, "a")
    assert len(set(first)) == 3, "each index draws a different picture"
    assert digests(7, 3, "b") == first
    # (seed, index) alone fixes a picture: a smaller set is a prefix of a larger one
    assert digests(7, 2, "c") == first[:2]
    other = digests(8, 3, "d")
    assert set(other).isdisjoint(first)


def test_synthetic_same_output_with_worker_processes(tmp_path):
    params = synthetic_params(count=3, seed=3)
    serial = collect_synthetic(params, tmp_path / "serial", workers=1)
    parallel = collect_synthetic(params, tmp_path / "parallel", workers=2)
    assert [r.row() for r in parallel.images] == [r.row() for r in serial.images]


def test_synthetic_max_files_caps_the_count(tmp_path):
    out = tmp_path / "out"
    result = collect_synthetic(synthetic_params(count=5, max_files=2), out, workers=1)
    assert [r.relpath for r in result.images] == ["images/synthetic/000000.png", "images/synthetic/000001.png"]
    assert len(tree(out)) == 2

    uncapped = collect_synthetic(synthetic_params(count=2, max_files=10), tmp_path / "big", workers=1)
    assert len(uncapped.images) == 2, "max_files above the count does not add images"


def test_collect_dispatches_to_synthetic(tmp_path):
    result = collect(synthetic_params(count=1, seed=5), tmp_path / "out", workers=1)
    assert [r.source for r in result.images] == ["synthetic:seed=5"]


# --- local folder --------------------------------------------------------------------------------


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Two good images plus a text file, an empty file, truncated PNG/JPEG and a duplicate."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    good_png = image_bytes(1, 48, 32)
    good_jpg = image_bytes(2, 50, 20, fmt="JPEG")
    (src / "good.png").write_bytes(good_png)
    (src / "sub" / "good.jpg").write_bytes(good_jpg)
    (src / "notes.txt").write_text("not a picture\n")
    (src / "empty.png").write_bytes(b"")
    (src / "broken.png").write_bytes(good_png[: len(good_png) // 2])
    (src / "broken.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    (src / "good_copy.png").write_bytes(good_png)  # sorts after good.png
    return src


def test_local_folder_keeps_images_and_rejects_the_rest(tmp_path, messy_folder):
    before = tree(messy_folder)
    mtimes = {p: p.stat().st_mtime_ns for p in messy_folder.rglob("*")}
    out = tmp_path / "out"

    result = collect_from_path(messy_folder, local_params(messy_folder), out, source="local:src")

    assert [r.relpath for r in result.images] == ["images/good.png", "images/sub/good.jpg"]
    good, jpg = result.images
    assert (good.width, good.height, jpg.width, jpg.height) == (48, 32, 50, 20)
    for row in result.images:
        assert (out / row.relpath).read_bytes() == before[row.relpath.removeprefix("images/")]
        assert row.sha256 == sha256((out / row.relpath).read_bytes())
        assert row.bytes == (out / row.relpath).stat().st_size
        assert row.source == "local:src"
        assert row.license == "unknown"
        assert row.faces == ""
    assert sorted(tree(out)) == ["images/good.png", "images/sub/good.jpg"]

    reasons = rejected_map(result)
    assert sorted(reasons) == ["broken.jpg", "broken.png", "empty.png", "good_copy.png", "notes.txt"]
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["empty.png"] == "empty file"
    assert reasons["broken.png"].startswith("corrupt image")
    assert reasons["broken.jpg"].startswith("corrupt image") and "truncated" in reasons["broken.jpg"]
    assert reasons["good_copy.png"] == "duplicate of images/good.png"
    for r in result.rejected:
        assert tuple(r.row()) == REJECTED_FIELDS

    # the source folder is read, never changed
    assert tree(messy_folder) == before
    assert {p: p.stat().st_mtime_ns for p in messy_folder.rglob("*")} == mtimes


def test_local_folder_records_the_licence_and_honours_max_files(tmp_path, messy_folder):
    params = local_params(messy_folder, license="CC-BY-4.0", max_files=1)
    result = collect_from_path(messy_folder, params, tmp_path / "out", source="local:src")
    assert [(r.relpath, r.license) for r in result.images] == [("images/good.png", "CC-BY-4.0")]
    assert sorted(tree(tmp_path / "out")) == ["images/good.png"]


def test_local_folder_rejects_files_over_max_image_mb(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    big = image_bytes(3, 800, 800)  # noise does not compress: well over 1 MiB
    assert len(big) > 1 << 20
    (src / "big.png").write_bytes(big)
    (src / "small.png").write_bytes(image_bytes(4))
    result = collect_from_path(src, local_params(src, max_image_mb=1), tmp_path / "out", source="local:src")
    assert [r.relpath for r in result.images] == ["images/small.png"]
    assert rejected_map(result) == {"big.png": "larger than 1 MiB"}


def test_local_folder_lists_links_fifos_and_sockets_in_rejected_without_reading_them(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(image_bytes(5))
    (src / "real.png").write_bytes(image_bytes(6))
    (src / "sub" / "inner.png").write_bytes(image_bytes(7))
    os.symlink(outside / "secret.png", src / "link.png")
    os.symlink(outside, src / "linked-folder")
    os.mkfifo(src / "pipe.png")  # opening it to read would wait forever
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sub" / "control.sock"))
        result = collect_from_path(src, local_params(src), tmp_path / "out", source="local:src")

    assert [r.relpath for r in result.images] == ["images/real.png", "images/sub/inner.png"]
    assert rejected_map(result) == {
        "link.png": "symbolic link (not followed)",
        "linked-folder": "symbolic link (not followed)",
        "pipe.png": "a FIFO, not a regular file",
        "sub/control.sock": "a socket, not a regular file",
    }
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_unreadable_subfolder_is_listed_and_the_rest_is_read(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "a.png").write_bytes(image_bytes(30))
    (src / "b.png").write_bytes(image_bytes(31))
    real_scandir = os.scandir

    def scandir(path):  # as for a folder without read permission (root reads those anyway)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = collect_from_path(src, local_params(src), tmp_path / "out", source="local:src")
    assert [r.relpath for r in result.images] == ["images/b.png"]
    assert rejected_map(result) == {"locked": "unreadable folder: Permission denied"}


def test_local_data_path_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "images.zip"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"data.path: .*images.zip is a FIFO, not a folder, archive or image"):
        collect(local_params(fifo), tmp_path / "out")


def test_local_missing_path_is_a_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=r"data.path: .*nope does not exist"):
        collect(local_params(missing), tmp_path / "out")


def test_collect_dispatches_to_local_with_the_folder_name(tmp_path, messy_folder):
    result = collect(local_params(messy_folder), tmp_path / "out")
    assert {r.source for r in result.images} == {"local:src"}
    assert len(result.images) == 2 and len(result.rejected) == 5


# --- file names that are not UTF-8, and sources without images -----------------------------------


def not_utf8(name: bytes) -> str:
    """A file name as Python spells bytes that are not UTF-8 (lone surrogates)."""
    return os.fsdecode(name)


def test_names_that_are_not_utf8_are_kept_under_escaped_names_and_written_safely(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cafe, notes = image_bytes(20), b"not a picture"
    (src / not_utf8(b"caf\xe9.png")).write_bytes(cafe)
    (src / not_utf8(b"notes\xff.txt")).write_bytes(notes)
    (src / "ok.png").write_bytes(image_bytes(21))
    out = tmp_path / "out"

    result = collect_from_path(src, local_params(src), out, source="local:src")
    write_raw_set(out, result.images, result.rejected)

    assert [r.relpath for r in result.images] == ["images/caf\\xe9.png", "images/ok.png"]
    assert (out / "images" / "caf\\xe9.png").read_bytes() == cafe, "the manifest names the file that is there"
    assert rejected_map(result) == {"notes\\xff.txt": "not an image"}
    manifest = (out / "manifest.csv").read_bytes().decode("utf-8")  # strict: valid UTF-8 throughout
    assert "images/caf\\xe9.png" in manifest
    assert "notes\\xff.txt" in (out / "rejected.csv").read_bytes().decode("utf-8")
    assert all(p.name.isprintable() and "\udce9" not in p.name for p in out.rglob("*"))


def test_escaped_name_that_equals_a_real_name_is_rejected_not_overwritten(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    literal = image_bytes(22)
    (src / "caf\\xe9.png").write_bytes(literal)  # a real backslash: sorts first and is kept
    (src / not_utf8(b"caf\xe9.png")).write_bytes(image_bytes(23))
    out = tmp_path / "out"
    result = collect_from_path(src, local_params(src), out, source="local:src")
    assert [r.relpath for r in result.images] == ["images/caf\\xe9.png"]
    assert (out / "images" / "caf\\xe9.png").read_bytes() == literal
    assert rejected_map(result) == {"caf\\xe9.png": "another file already has this name once made valid UTF-8"}


def test_tar_member_names_that_are_not_utf8_are_taken(tmp_path):
    archive = tmp_path / "set.tar"
    data = image_bytes(24)
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tf:
        add_tar_member(tf, not_utf8(b"set/\x82\xa0.png"), data)  # Shift-JIS, not UTF-8
        add_tar_member(tf, not_utf8(b"set/\xff-link"), kind=tarfile.SYMTYPE, linkname="x")
    out = tmp_path / "out"
    result = collect(local_params(archive), out)
    assert [r.relpath for r in result.images] == ["images/set/\\x82\\xa0.png"]
    assert (out / "images/set/\\x82\\xa0.png").read_bytes() == data
    assert rejected_map(result) == {"set/\\xff-link": "link"}


def test_zip_member_falsely_flagged_utf8_is_rejected_and_the_others_kept(tmp_path, caplog):
    """zipfile refuses the whole archive over one such name (it decodes every name on opening): only that
    member is lost, in rejected.csv; the rest, before and after it, are kept."""
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", image_bytes(1))
        zf.writestr("caf\u00e9.png", image_bytes(25))  # stored with the UTF-8 flag: b"caf\xc3\xa9.png"
        zf.writestr("sub/b.png", image_bytes(2))
    archive.write_bytes(archive.read_bytes().replace(b"caf\xc3\xa9", b"caf\xe9\xff"))
    result = collect(local_params(archive), tmp_path / "out")
    assert sorted(r.relpath for r in result.images) == ["images/a.png", "images/sub/b.png"]
    assert (tmp_path / "out/images/sub/b.png").read_bytes() == image_bytes(2)
    reason = "member name flagged UTF-8 but not valid UTF-8 (not extracted)"
    assert rejected_map(result) == {"caf\\xe9\\xff.png": reason}
    assert f"set.zip: caf\\xe9\\xff.png: {reason}" in caplog.text


def test_zip_whose_only_bad_name_cannot_be_found_is_still_one_clear_error(tmp_path, monkeypatch):
    from anime_avatar.data import sources

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("caf\u00e9.png", image_bytes(25))
    archive.write_bytes(archive.read_bytes().replace(b"caf\xc3\xa9", b"caf\xe9\xff"))
    monkeypatch.setattr(sources, "_central_directory", lambda f: [])  # as for a zip64 directory
    with pytest.raises(UserError, match=r"set\.zip: damaged archive: a member name is flagged UTF-8 but is not"):
        collect(local_params(archive), tmp_path / "out")


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A working folder with a previous data/raw, as the download stage finds it."""
    monkeypatch.chdir(tmp_path)
    previous = tmp_path / "data" / "raw"
    previous.mkdir(parents=True)
    (previous / "manifest.csv").write_text("previous\n")
    return tmp_path


@pytest.mark.parametrize("kind", ["folder", "empty.zip", "empty.tar.gz", "only-folders.zip"])
def test_empty_source_says_it_holds_no_image_files(workspace, kind):
    from stages.download import download

    path = workspace / "src"
    if kind == "folder":
        (path / "sub").mkdir(parents=True)
    elif kind == "only-folders.zip":
        path = workspace / kind
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("a/", b"")
    else:
        path = write_archive(workspace / kind, {})
    with pytest.raises(UserError) as err:
        download(params_with({"data": {"source": "local", "path": str(path)}}))
    assert str(err.value) == f"data.path {path} holds no image files: it is empty"
    assert (workspace / "data/raw/manifest.csv").read_text() == "previous\n", "the previous data/raw stays"


def test_source_without_readable_images_lists_the_reasons(workspace):
    from stages.download import download

    src = workspace / "src"
    src.mkdir()
    (src / "notes.txt").write_text("hello")
    os.symlink(src / "notes.txt", src / "link.png")
    with pytest.raises(UserError) as err:
        download(params_with({"data": {"source": "local", "path": str(src)}}))
    assert str(err.value).splitlines() == [
        f"data.path {src} holds no image files: none of its 2 files is a readable image",
        "  link.png: symbolic link (not followed)",
        "  notes.txt: not an image",
    ]


def test_many_rejections_show_the_first_ten_and_a_count(workspace):
    from stages.download import download

    src = workspace / "src"
    src.mkdir()
    for i in range(12):
        (src / f"note{i:02d}.txt").write_text("hello")
    with pytest.raises(UserError) as err:
        download(params_with({"data": {"source": "local", "path": str(src)}}))
    lines = str(err.value).splitlines()
    assert lines[0].endswith("none of its 12 files is a readable image")
    assert lines[1:] == [f"  note{i:02d}.txt: not an image" for i in range(10)] + ["  ... and 2 more"]


def test_download_stage_with_names_that_are_not_utf8_writes_a_readable_manifest(workspace):
    from anime_avatar.artifacts.raw import read_manifest
    from stages.download import download

    src = workspace / "src"
    src.mkdir()
    (src / not_utf8(b"\xe9t\xe9.png")).write_bytes(image_bytes(26))
    download(params_with({"data": {"source": "local", "path": str(src)}}))
    [row] = read_manifest(workspace / "data" / "raw")
    assert row.relpath == "images/\\xe9t\\xe9.png"
    assert (workspace / "data" / "raw" / row.relpath).read_bytes() == image_bytes(26)


# --- single image file ---------------------------------------------------------------------------


def test_single_image_file_as_data_path(tmp_path):
    data = image_bytes(9, 40, 24, fmt="JPEG")
    path = tmp_path / "portrait.jpg"
    path.write_bytes(data)
    out = tmp_path / "out"
    result = collect(local_params(path), out)
    assert [(r.relpath, r.width, r.height, r.source) for r in result.images] == [
        ("images/portrait.jpg", 40, 24, "local:portrait.jpg")
    ]
    assert result.images[0].sha256 == sha256(data)
    assert tree(out) == {"images/portrait.jpg": data}
    assert path.read_bytes() == data


def test_single_non_image_file_is_rejected(tmp_path):
    path = tmp_path / "readme.md"
    path.write_text("# hello\n")
    result = collect(local_params(path), tmp_path / "out")
    assert result.images == []
    assert list(rejected_map(result)) == ["readme.md"]
    assert rejected_map(result)["readme.md"].startswith("not an image")


# --- archives ------------------------------------------------------------------------------------


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A zip or tar(.gz|.bz2|.xz) chosen by the suffix of ``path``."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        mode = {"tar": "w", "gz": "w:gz", "bz2": "w:bz2", "xz": "w:xz"}[path.name.rsplit(".", 1)[-1]]
        with tarfile.open(path, mode) as tf:
            for name, data in members.items():
                add_tar_member(tf, name, data)
    return path


@pytest.mark.parametrize("name", ["photos.zip", "photos.tar", "photos.tar.gz", "photos.tar.bz2", "photos.tar.xz"])
def test_archive_images_are_unpacked_and_checked(tmp_path, name):
    a, b = image_bytes(10, 30, 40), image_bytes(11, 64, 16, fmt="JPEG")
    archive = write_archive(
        tmp_path / name,
        {"set/a.png": a, "set/deeper/b.jpg": b, "set/readme.txt": b"hello", "set/a_again.png": a},
    )
    out = tmp_path / "out"
    result = collect(local_params(archive), out)

    assert [(r.relpath, r.width, r.height) for r in result.images] == [
        ("images/set/a.png", 30, 40),
        ("images/set/deeper/b.jpg", 64, 16),
    ]
    assert {r.source for r in result.images} == {f"local:{name}"}
    assert tree(out) == {"images/set/a.png": a, "images/set/deeper/b.jpg": b}, "staging folder is removed"
    reasons = rejected_map(result)
    assert reasons["set/a_again.png"] == "duplicate of images/set/a.png"
    assert reasons["set/readme.txt"].startswith("not an image")
    assert len(reasons) == 2


def test_archive_detected_by_content_without_archive_suffix(tmp_path):
    data = image_bytes(12)
    archive = write_archive(tmp_path / "bundle.zip", {"x.png": data}).rename(tmp_path / "bundle.bin")
    result = collect(local_params(archive), tmp_path / "out")
    assert [r.relpath for r in result.images] == ["images/x.png"]


def test_zip_folder_entries_written_with_a_backslash_or_the_folder_attribute_keep_their_images(tmp_path):
    """A folder entry `top\\` (DOS folder attribute) became an empty file `top`, which blocked the folder: every
    image in it was rejected ("cannot be written where its path leads")."""
    archive = tmp_path / "in" / "windows.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        folder = zipfile.ZipInfo("top\\")
        folder.external_attr = 0x10  # MS-DOS directory
        zf.writestr(folder, b"")
        unix = zipfile.ZipInfo("other")
        unix.create_system, unix.external_attr = 3, (stat.S_IFDIR | 0o755) << 16
        zf.writestr(unix, b"")
        zf.writestr("top\\a.png", image_bytes(20))
        zf.writestr("other/b.png", image_bytes(21))
        flagged = zipfile.ZipInfo("c.png")
        flagged.external_attr = 0x10  # a folder attribute on an entry with bytes: still a file
        zf.writestr(flagged, image_bytes(22))
    out = tmp_path / "out"
    out.mkdir()
    result = collect(local_params(archive), out)
    assert sorted(r.relpath for r in result.images) == ["images/c.png", "images/other/b.png", "images/top/a.png"]
    assert rejected_map(result) == {}


def test_zip_traversal_absolute_and_symlink_members_are_rejected(tmp_path):
    good = image_bytes(20)
    abs_target = tmp_path / "abs_evil.png"
    archive = tmp_path / "in" / "evil.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.png", good)
        zf.writestr("../evil.png", image_bytes(21))
        zf.writestr("ok/../../evil2.png", image_bytes(22))
        zf.writestr("..\\evil3.png", image_bytes(23))
        zf.writestr("C:\\evil4.png", image_bytes(24))
        zf.writestr(str(abs_target), image_bytes(25))
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3  # unix, so external_attr holds a mode
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../etc/passwd")
    work = tmp_path / "work"
    out = work / "out"
    out.mkdir(parents=True)

    result = collect(local_params(archive), out)

    assert [r.relpath for r in result.images] == ["images/good.png"]
    assert rejected_map(result) == {
        "../evil.png": ESCAPES,
        "ok/../../evil2.png": ESCAPES,
        "..\\evil3.png": ESCAPES,
        "C:\\evil4.png": ESCAPES,
        str(abs_target): ESCAPES,
        "link.png": "symbolic link",
    }
    assert tree(out) == {"images/good.png": good}
    assert [p.name for p in work.iterdir()] == ["out"], "nothing is written beside the output"
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == ["evil.zip"]
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_tar_links_devices_and_traversal_are_rejected(tmp_path):
    good, inner = image_bytes(30), image_bytes(31)
    abs_target = tmp_path / "abs_evil.png"
    archive = tmp_path / "in" / "evil.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tf:
        add_tar_member(tf, "good.png", good)
        add_tar_member(tf, "../evil.png", image_bytes(32))
        add_tar_member(tf, "ok/../../evil2.png", image_bytes(33))
        add_tar_member(tf, str(abs_target), image_bytes(34))
        add_tar_member(tf, "escape", kind=tarfile.SYMTYPE, linkname="../..")
        add_tar_member(tf, "escape/through_link.png", inner)  # must land in a real folder, not via the link
        add_tar_member(tf, "passwd.png", kind=tarfile.LNKTYPE, linkname="/etc/passwd")
        add_tar_member(tf, "hard_good.png", kind=tarfile.LNKTYPE, linkname="good.png")
        add_tar_member(tf, "pipe", kind=tarfile.FIFOTYPE)
        add_tar_member(tf, "dev/null", kind=tarfile.CHRTYPE)
        add_tar_member(tf, "somedir", kind=tarfile.DIRTYPE)
    with tarfile.open(archive) as tf:
        assert str(abs_target) in tf.getnames(), "the archive really holds an absolute member name"
    work = tmp_path / "work"
    out = work / "out"
    out.mkdir(parents=True)

    result = collect(local_params(archive), out)

    assert [r.relpath for r in result.images] == ["images/escape/through_link.png", "images/good.png"]
    assert rejected_map(result) == {
        "../evil.png": ESCAPES,
        "ok/../../evil2.png": ESCAPES,
        str(abs_target): ESCAPES,
        "escape": "link",
        "passwd.png": "link",
        "hard_good.png": "link",
        "pipe": "not a regular file",
        "dev/null": "not a regular file",
    }
    assert tree(out) == {"images/good.png": good, "images/escape/through_link.png": inner}
    assert [p.name for p in work.iterdir()] == ["out"], "nothing is written beside the output"
    assert sorted(p.name for p in tmp_path.rglob("*evil*")) == ["evil.tar"]
    assert not (tmp_path / "through_link.png").exists()
    assert not any(p.is_symlink() or p.is_fifo() or p.is_char_device() for p in tmp_path.rglob("*"))


def test_extract_archive_writes_only_regular_files_inside_dest(tmp_path):
    archive = tmp_path / "mixed.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_tar_member(tf, "./a/one.bin", b"1" * 10)
        add_tar_member(tf, "a/two.bin", b"22")
        add_tar_member(tf, "../up.bin", b"3")
        add_tar_member(tf, "sym", kind=tarfile.SYMTYPE, linkname="a/one.bin")
    dest = tmp_path / "dest"
    rejected = extract_archive(archive, dest, max_bytes=1 << 20)
    assert [(r.relpath, r.reason) for r in rejected] == [("../up.bin", ESCAPES), ("sym", "link")]
    assert tree(dest) == {"a/one.bin": b"1" * 10, "a/two.bin": b"22"}
    assert not (tmp_path / "up.bin").exists()


def test_a_later_archive_member_with_an_earlier_ones_path_is_reported_not_written_over_it(tmp_path):
    zipped, tarred = tmp_path / "twice.zip", tmp_path / "twice.tar"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a/one.png", b"first")
        zf.writestr("a/./one.png", b"second")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("a/one.png", b"third")
        zf.writestr("a/two.png", b"two")
    with tarfile.open(tarred, "w") as tf:
        add_tar_member(tf, "./a/one.png", b"first")
        add_tar_member(tf, "a//one.png", b"second")
        add_tar_member(tf, "a/two.png", b"two")
    for archive, later in ((zipped, ["a/./one.png", "a/one.png"]), (tarred, ["a//one.png"])):
        dest = tmp_path / archive.stem
        rejected = extract_archive(archive, dest, max_bytes=1 << 20)
        first = "./a/one.png" if archive is tarred else "a/one.png"
        assert [(r.relpath, r.reason) for r in rejected] == [
            (name, f"same path as the earlier member {first}") for name in later
        ]
        assert tree(dest) == {"a/one.png": b"first", "a/two.png": b"two"}


@pytest.mark.parametrize("name", ["bomb.zip", "bomb.tar.gz"])
def test_archive_larger_than_max_extract_mb_is_a_user_error(tmp_path, name):
    # 2 MiB of zeros packs into a few KiB: the cap counts unpacked bytes
    archive = write_archive(tmp_path / name, {"a.png": image_bytes(40), "zeros.bin": bytes(2 << 20)})
    assert archive.stat().st_size < 100_000
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"more than 1 MiB .*data\.max_extract_mb"):
        collect(local_params(archive, max_extract_mb=1), out)
    assert not (out / ".staging").exists(), "the partial unpack is cleaned up"
    assert tree(out) == {}


def test_extract_budget_boundary(tmp_path):
    archive = write_archive(tmp_path / "exact.zip", {"a.bin": b"x" * 600, "b.bin": b"y" * 400})
    extract_archive(archive, tmp_path / "fits", max_bytes=1000)
    assert tree(tmp_path / "fits") == {"a.bin": b"x" * 600, "b.bin": b"y" * 400}
    with pytest.raises(UserError, match="archive unpacks to more than"):
        extract_archive(archive, tmp_path / "over", max_bytes=999)


def test_not_an_archive_is_a_user_error(tmp_path):
    fake = tmp_path / "data.zip"
    fake.write_text("this is not a zip file\n" * 20)
    with pytest.raises(UserError, match=r"data\.zip: not a zip or tar archive"):
        collect(local_params(fake), tmp_path / "out")
    assert not (tmp_path / "out" / ".staging").exists()


def _zip_stored_bad_crc(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.bin", b"a" * 1000)
    data = bytearray(path.read_bytes())
    data[30 + len("a.bin") + 500] ^= 0xFF  # inside the stored member data
    path.write_bytes(bytes(data))


def _zip_deflate_garbage(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.bin", bytes(range(256)) * 40)
    data = bytearray(path.read_bytes())
    data[30 + len("a.bin")] = 0xFF  # first deflate block: reserved block type
    path.write_bytes(bytes(data))


def _tar_xz_corrupt(path: Path) -> None:
    payload = np.random.default_rng(0).integers(0, 40, 100_000, dtype=np.uint8).tobytes()
    with tarfile.open(path, "w:xz") as tf:
        add_tar_member(tf, "a.bin", payload)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _tar_gz_truncated(path: Path) -> None:
    payload = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    with tarfile.open(path, "w:gz") as tf:
        add_tar_member(tf, "a.bin", payload)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("corrupt.tar.xz", _tar_xz_corrupt),
        ("truncated.tar.gz", _tar_gz_truncated),
    ],
)
def test_damaged_archive_is_a_user_error(tmp_path, name, damage):
    """A tar's members come from one stream: damage there loses what follows it. (A zip's members are read one by
    one: a damaged member loses only itself, below.)"""
    archive = tmp_path / name
    damage(archive)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=re.escape(f"{name}: damaged archive: ")):
        collect(local_params(archive), out)
    assert not (out / ".staging").exists()


# --- Hugging Face ----------------------------------------------------------------------------------


def hf_params(**changes):
    return section("data", source="hf", hf_dataset="someone/avatars", **changes)


def test_hf_rows_become_checked_png_files(tmp_path):
    pil = Image.fromarray(np.random.default_rng(50).integers(0, 256, (20, 36, 3), dtype=np.uint8))
    encoded = image_bytes(51, 24, 24)
    local = tmp_path / "local.png"
    local.write_bytes(image_bytes(52, 16, 16))
    rows = [
        {"image": pil, "label": 0},
        {"image": {"bytes": encoded, "path": "x.png"}, "label": 1},
        {"image": {"bytes": b"definitely not an image"}, "label": 2},
        {"image": None, "label": 3},
        {"image": {"bytes": None, "path": "remote.png"}, "label": 4},
        {"image": pil.copy(), "label": 5},
        {"image": {"bytes": None, "path": str(local)}, "label": 6},  # loaded without decoding, from files here
        {"image": 7, "label": 7},
    ]
    calls = []

    def loader(dataset: str, split: str):
        calls.append((dataset, split))
        return rows

    out = tmp_path / "out"
    result = collect_hf(hf_params(hf_split="test", license="CC0-1.0"), out, loader=loader)

    assert calls == [("someone/avatars", "test")]
    assert [(r.relpath, r.width, r.height) for r in result.images] == [
        ("images/hf/0000000.png", 36, 20),
        ("images/hf/0000001.png", 24, 24),
        ("images/hf/0000006.png", 16, 16),
    ]
    assert {(r.source, r.license) for r in result.images} == {("hf:someone/avatars", "CC0-1.0")}
    with Image.open(out / "images/hf/0000000.png") as saved:
        assert saved.format == "PNG"
        assert np.array_equal(np.asarray(saved), np.asarray(pil))
    assert (out / "images/hf/0000001.png").read_bytes() == encoded
    assert result.images[1].sha256 == sha256(encoded)
    reasons = rejected_map(result)
    assert sorted(reasons) == [f"hf/{i:07d}.png" for i in (2, 3, 4, 5, 7)]
    assert reasons["hf/0000002.png"].startswith("not an image")
    assert reasons["hf/0000003.png"] == "no image in the row"
    assert reasons["hf/0000004.png"] == "no image bytes, and its path 'remote.png' is not a file here"
    assert reasons["hf/0000005.png"] == "duplicate of images/hf/0000000.png"
    assert reasons["hf/0000007.png"] == "not an image (int)"
    assert (out / "images/hf/0000006.png").read_bytes() == local.read_bytes()
    assert sorted(tree(out)) == [f"images/hf/{i:07d}.png" for i in (0, 1, 6)], "staging is removed"


def test_hf_images_in_modes_png_cannot_hold_are_kept_not_a_traceback(tmp_path):
    """Scraped sets have CMYK JPEGs; Pillow cannot write CMYK (or YCbCr, LAB, HSV, float) as PNG."""
    modes = {"CMYK": (0, 200, 200, 0), "YCbCr": (120, 90, 200), "LAB": (60, 140, 100), "HSV": (20, 200, 220)}
    rows = [{"image": Image.new(mode, (12 + i, 10), colour)} for i, (mode, colour) in enumerate(modes.items())]
    rows.append({"image": Image.new("F", (16, 10), 0.25)})
    result = collect_hf(hf_params(), tmp_path / "out", loader=lambda dataset, split: rows)
    names = ["0000000.png", "0000001.png", "0000002.png", "0000003.png", "0000004.tiff"]
    assert [r.relpath for r in result.images] == [f"images/hf/{name}" for name in names]
    assert [r.width for r in result.images] == [12, 13, 14, 15, 16] and not rejected_map(result)
    for name, (mode, colour) in zip(names, modes.items(), strict=False):
        with Image.open(tmp_path / "out/images/hf" / name) as saved:  # the RGB the reader would make of it
            assert saved.getpixel((0, 0)) == Image.new(mode, (1, 1), colour).convert("RGB").getpixel((0, 0))
    with Image.open(tmp_path / "out/images/hf/0000004.tiff") as grey:
        assert grey.mode == "F" and grey.getpixel((0, 0)) == 0.25  # float kept as it is, not clipped to black


def test_hf_missing_column_lists_the_columns(tmp_path):
    def loader(dataset, split):
        return [{"picture": Image.new("RGB", (8, 8)), "label": 1, "caption": "x"}]

    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        collect_hf(hf_params(), out, loader=loader)
    message = str(err.value)
    assert "data.hf_image_column: 'image' is not a column of 'someone/avatars'" in message
    assert "(columns: caption, label, picture)" in message
    assert not (out / ".staging").exists()


def test_hf_custom_column_and_max_files_stop_reading_early(tmp_path):
    consumed = []

    def long_dataset(dataset, split):
        for i in range(100):
            consumed.append(i)
            yield {"img": {"bytes": image_bytes(100 + i, 16, 16)}}

    result = collect_hf(hf_params(hf_image_column="img", max_files=3), tmp_path / "out", loader=long_dataset)
    assert [r.relpath for r in result.images] == [f"images/hf/{i:07d}.png" for i in range(3)]
    assert len(consumed) <= 4, "the dataset is not read past max_files"


def test_hf_without_datasets_package_names_the_extra(tmp_path, monkeypatch):
    # None in sys.modules makes `import datasets` fail whether or not the package is installed
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match=r"anime-avatar\[hf\]"):
        collect(hf_params(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hf_without_datasets_installed_in_this_environment(tmp_path):
    try:
        import datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the 'datasets' package is installed here")
    with pytest.raises(UserError, match=r"the 'hf' source needs .*\[hf\]"):
        collect(hf_params(), tmp_path / "out")


def test_hf_loader_errors_become_user_errors(tmp_path, monkeypatch):
    def load_dataset(dataset_id, split):
        raise FileNotFoundError(f"Dataset '{dataset_id}' doesn't exist on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(UserError, match=r"cannot load Hugging Face dataset 'someone/avatars' \(split 'train'\)"):
        collect(hf_params(), tmp_path / "out")


def test_hf_default_loader_passes_dataset_and_split(tmp_path, monkeypatch):
    seen = []

    def load_dataset(dataset_id, split):
        seen.append((dataset_id, split))
        return [{"image": {"bytes": image_bytes(60)}}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    result = collect(hf_params(hf_split="validation"), tmp_path / "out")
    assert seen == [("someone/avatars", "validation")]
    assert [r.relpath for r in result.images] == ["images/hf/0000000.png"]


def _patch_central_entry(archive: Path, name: bytes, flags: int = 0, method: int | None = None) -> None:
    """Set general-purpose flag bits (``flags``) or the compression method of one entry of a zip's central
    directory, as an encrypting or Deflate64-writing archiver would have written them."""
    data = bytearray(archive.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + length]) == name:
            struct.pack_into("<H", data, at + 8, struct.unpack_from("<H", data, at + 8)[0] | flags)
            if method is not None:
                struct.pack_into("<H", data, at + 10, method)
            break
        at = data.find(b"PK\x01\x02", at + 46)
    archive.write_bytes(bytes(data))


def test_a_zip_member_that_cannot_be_unpacked_alone_is_rejected_and_the_others_kept(tmp_path, caplog):
    """Before: an encrypted member (RuntimeError) or a Deflate64 one (NotImplementedError) was a traceback, and a
    member with a bad CRC lost the whole archive ('damaged archive: Bad CRC-32 for file ...')."""
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # stored: the members' bytes lie in the file as they are
        for seed, name in enumerate(("a.png", "locked.png", "d64.png", "crc.png", "b.png")):
            zf.writestr(name, image_bytes(seed))
    _patch_central_entry(archive, b"locked.png", flags=0x1)
    _patch_central_entry(archive, b"d64.png", method=9)
    data = bytearray(archive.read_bytes())
    data[data.index(image_bytes(3)) + 100] ^= 0xFF  # one flipped byte inside crc.png
    archive.write_bytes(bytes(data))

    result = collect(local_params(archive), tmp_path / "out")
    assert sorted(r.relpath for r in result.images) == ["images/a.png", "images/b.png"]
    assert (tmp_path / "out/images/b.png").read_bytes() == image_bytes(4)
    assert rejected_map(result) == {
        "locked.png": "encrypted (a password is needed): not extracted",
        "d64.png": "not extracted: That compression method is not supported (re-pack it with Deflate or no "
        "compression)",
        "crc.png": "damaged member: Bad CRC-32 for file 'crc.png'",
    }
    assert "set.zip: locked.png: encrypted" in caplog.text


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(_zip_stored_bad_crc, "damaged member: Bad CRC-32 for file 'a.bin'"),
     (_zip_deflate_garbage, "damaged member: Error -3 while decompressing data: invalid block type")],
)  # fmt: skip
def test_a_damaged_zip_member_loses_only_itself(tmp_path, damage, reason):
    archive = tmp_path / "set.zip"
    damage(archive)
    assert [(r.relpath, r.reason) for r in extract_archive(archive, tmp_path / "out", 1 << 20)] == [("a.bin", reason)]
    assert not (tmp_path / "out" / "a.bin").exists()  # nothing of it left half-written


def test_members_a_file_blocks_or_with_names_too_long_for_the_disk_lose_only_themselves(tmp_path):
    """Before: 'damaged archive: [Errno 17] File exists' for a tar holding a file `a` and a member `a/b.png`, and
    '[Errno 36] File name too long' for a 268-byte member name (valid on Windows and macOS): every image lost."""
    tarred, zipped = tmp_path / "clash.tar", tmp_path / "long.zip"
    long_name = "初音ミク" * 22 + ".png"  # 268 bytes in UTF-8
    with tarfile.open(tarred, "w") as tf:
        add_tar_member(tf, "a", b"a plain file")
        add_tar_member(tf, "a/b.png", image_bytes(1))
        add_tar_member(tf, "c.png", image_bytes(2))
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr(long_name, image_bytes(3))
        zf.writestr("d.png", image_bytes(4))
    clash = collect(local_params(tarred), tmp_path / "clash")
    assert [r.relpath for r in clash.images] == ["images/c.png"]
    assert rejected_map(clash)["a/b.png"] == "cannot be written where its path leads (File exists)"
    long = collect(local_params(zipped), tmp_path / "long")
    kept = sorted(r.relpath for r in long.images)
    assert kept[0] == "images/d.png" and kept[1].endswith(".png") and "~" in kept[1]
    assert len(kept[1].removeprefix("images/").encode()) <= 255 and kept[1].startswith("images/初音ミク")
    assert (tmp_path / "long" / kept[1]).read_bytes() == image_bytes(3)


def test_a_long_shift_jis_file_name_is_kept_escaped_and_shortened(tmp_path, caplog):
    """94 bytes of Shift-JIS escape to 376 characters (each byte as \\xNN), over the 255-byte limit of a name:
    before, an OSError traceback stopped the download stage."""
    src = tmp_path / "src"
    src.mkdir()
    name = not_utf8(("初音ミクのイラスト" * 5).encode("shift_jis") + b".jpg")
    (src / name).write_bytes(image_bytes(5, fmt="JPEG"))
    (src / "ok.png").write_bytes(image_bytes(6))
    result = collect_from_path(src, local_params(src), tmp_path / "out", source="local:src")
    kept = sorted(r.relpath for r in result.images)
    assert len(kept) == 2 and kept[1] == "images/ok.png" and kept[0].startswith("images/\\x8f\\x89")
    assert kept[0].endswith(".jpg") and len(kept[0].removeprefix("images/").encode()) <= 255
    assert "the file name is not valid UTF-8; kept as images/\\x8f" in caplog.text
