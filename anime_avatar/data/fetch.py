"""Downloading files by URL into a user cache: resumable, sha256-checked, with a progress bar."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import HASH_CHUNK, sha256_file

log = logging.getLogger(__name__)

USER_AGENT = "anime-avatar/0.1 (+https://pypi.org/project/anime-avatar)"


def cache_dir() -> Path:
    """``$ANIME_AVATAR_CACHE``, else ``$XDG_CACHE_HOME/anime-avatar``, else ``~/.cache/anime-avatar``."""
    if env := os.environ.get("ANIME_AVATAR_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anime-avatar"


def cached_path(url: str, sha256: str = "") -> Path:
    """Where ``url`` is cached: keyed by its sha256 when known, else by the URL itself."""
    key = sha256 or hashlib.sha256(url.encode()).hexdigest()
    name = Path(urllib.request.url2pathname(url.split("?")[0].rstrip("/").rsplit("/", 1)[-1])).name or "download"
    return cache_dir() / "downloads" / key[:16] / name


def download(
    url: str, sha256: str = "", dest: Path | None = None, timeout: float = 60.0, local_option: str = "data.path"
) -> Path:
    """Download ``url`` to ``dest`` (default: the cache) and return the path.

    A finished file whose sha256 matches is reused. An interrupted download
    resumes from its ``.part`` file with an HTTP Range request. A wrong sha256
    deletes the download and stops with a clear message. ``local_option`` names
    the setting that takes a local copy instead, for the offline message.
    """
    dest = dest or cached_path(url, sha256)
    if dest.exists() and (not sha256 or sha256_file(dest) == sha256):
        log.info("using cached %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the .part is already complete
            response = None
        else:
            raise UserError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"cannot reach {url}: {reason}. Without network access, fetch the file elsewhere "
            f"and point {local_option} at the local copy."
        ) from None
    if response is not None:
        with response:
            if offset and response.status != 206:  # server ignored Range: start over
                offset = 0
            total = response.headers.get("Content-Length")
            total_bytes = int(total) + offset if total else None
            mode = "ab" if offset else "wb"
            with (
                open(part, mode) as f,
                tqdm(total=total_bytes, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar,
            ):
                for chunk in iter(lambda: response.read(HASH_CHUNK), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        got_bytes = part.stat().st_size
        if total_bytes is not None and got_bytes < total_bytes:  # the server hung up early
            raise UserError(
                f"download of {url} was interrupted after {got_bytes} of {total_bytes} bytes; run again to resume"
            )
    if sha256:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise UserError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; the download was deleted")
    os.replace(part, dest)
    return dest
