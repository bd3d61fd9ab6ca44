"""File helpers: atomic outputs, hashing, CSV.

Every output is written to a temporary sibling and renamed into place, so an
interrupted stage never leaves a half-written file or folder that DVC could cache.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utf8_name(name: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` escapes.

    Python keeps such bytes of a file name as lone surrogates (surrogateescape), which cannot be
    written to a CSV file, a JSON file or most tools; names that are valid UTF-8 are unchanged.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name's byte
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


NAME_MAX = 255  # bytes in one file or folder name on Linux, macOS and Windows file systems


def fitting_name(relpath: str, limit: int = NAME_MAX) -> str:
    """``relpath`` (a UTF-8 path with ``/``) with each part longer than ``limit`` bytes shortened to its start, ``~``,
    12 hex digits of its sha256 and its suffix: a file name escaped by :func:`utf8_name` (each byte of a Shift-JIS
    name becomes four characters) or an archive member's long name can then be written. A ``limit`` below
    NAME_MAX leaves room for a suffix added later."""

    def size(text: str) -> int:  # bytes on disk; a name's bytes that are not UTF-8 are lone surrogates here
        return len(text.encode("utf-8", "surrogateescape"))

    parts = []
    for part in relpath.split("/"):
        if size(part) > limit:
            stem, dot, suffix = part.rpartition(".")
            if not dot or len(suffix) > 16:
                stem, suffix = part, ""
            tag = f"~{hashlib.sha256(part.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"
            tag += f".{suffix}" if suffix else ""
            while size(stem) + size(tag) > limit:  # by characters: a character is never cut in two
                stem = stem[:-1]
            part = stem + tag
        parts.append(part)
    return "/".join(parts)


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name is the target's and 14 more bytes: a target name near NAME_MAX is shortened for it.
    fd, tmp = tempfile.mkstemp(prefix=f".{fitting_name(path.name, NAME_MAX - 14)}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600 whatever the umask: give it the mode open() would have given it.
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def csv_text(rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    atomic_write_text(path, csv_text(rows, fieldnames))


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``target`` when the block succeeds.

    On an exception the temporary folder is removed and ``target`` is left as it was; one that a run killed
    outright (SIGKILL, a power cut) left beside ``target`` is removed by the next.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):  # left by a run killed outright
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700 whatever the umask, as mkdir would not
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
