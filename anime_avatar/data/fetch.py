"""Downloading files by URL into a user cache: resumable, verified, bounded in time, with a progress bar.

A download is complete when its sha256 matches, or, without a sha256, when it has the size the
server announced. A cached file is reused without a request only when its sha256 matches; without
one it is revalidated with a conditional request (ETag / Last-Modified, kept in ``<file>.json``)
and downloaded again when that cannot show it complete and unchanged. A connection reset, a
stalled or failing server and a short body are retried a bounded number of times, each attempt
resuming from the ``.part`` file with an HTTP Range request; a stall timeout bounds each wait and
a deadline the whole download.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import NAME_MAX, atomic_write_json, fitting_name, sha256_file
from anime_avatar.core.params import DataParams

log = logging.getLogger(__name__)

USER_AGENT = "anime-avatar/0.1 (+https://pypi.org/project/anime-avatar)"
READ_CHUNK = 1 << 16  # small reads, so that the deadline is checked while a server trickles
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})  # worth another attempt


@dataclass(frozen=True)
class DownloadPolicy:
    """How hard one download tries: attempts after the first, seconds without a byte, seconds in all.

    The values here serve the detect stage's cascade file (60 kB, pinned by sha256); dataset
    downloads take theirs from the data section of params.yaml (:meth:`from_params`).
    """

    retries: int = 3
    stall_timeout_s: float = 30.0
    deadline_s: float = 600.0
    backoff_s: float = 1.0  # the first pause between attempts; it doubles each time
    settings: str = ""  # the options that set these, named in the final message

    @classmethod
    def from_params(cls, params: DataParams) -> DownloadPolicy:
        return cls(
            retries=params.download_retries,
            stall_timeout_s=params.stall_timeout_s,
            deadline_s=params.deadline_s,
            settings=", ".join(f"{params.section}.{k}" for k in ("download_retries", "stall_timeout_s"))
            + f" and {params.section}.deadline_s",
        )


@dataclass(frozen=True)
class CacheRecord:
    """What the server said about a download cached without a sha256 (``<file>.json`` beside it)."""

    url: str
    etag: str = ""
    last_modified: str = ""
    size: int | None = None  # the full size the server announced, if it did
    complete: bool = False  # the file has that size (never true when no size was announced)

    def validator(self) -> str:
        """The ETag (strong validators first), else Last-Modified: what If-Range and conditional requests send."""
        return self.etag or self.last_modified

    def conditional_headers(self) -> dict[str, str]:
        if self.etag:
            return {"If-None-Match": self.etag}
        return {"If-Modified-Since": self.last_modified} if self.last_modified else {}


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
    # Room for the ".part" of a download under way and the ".json" of its record (a URL's last part may be
    # longer than a file name can be: OSError "File name too long" before any request).
    return cache_dir() / "downloads" / key[:16] / fitting_name(name, NAME_MAX - len(".part"))


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def read_record(dest: Path, url: str) -> CacheRecord | None:
    """The record of ``dest`` if it is one of ``url``'s (a damaged or foreign record counts as none)."""
    try:
        record = CacheRecord(**json.loads(record_path(dest).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return record if record.url == url else None


def download(
    url: str,
    sha256: str = "",
    dest: Path | None = None,
    policy: DownloadPolicy = DownloadPolicy(),  # noqa: B008 (frozen, so one shared instance is safe)
    local_option: str = "data.path",
) -> Path:
    """Download ``url`` to ``dest`` (default: the cache) and return the path.

    A wrong sha256 deletes the download and stops with a clear message. ``local_option`` names the
    setting that takes a local copy instead, for the offline message.
    """
    dest = dest or cached_path(url, sha256)
    if sha256 and dest.exists() and sha256_file(dest) == sha256:
        log.info("using cached %s", dest)
        return dest
    record = None if sha256 else read_record(dest, url)
    conditional: dict[str, str] = {}
    if not sha256 and dest.exists():
        if record and record.complete and record.conditional_headers():
            conditional = record.conditional_headers()
        else:
            log.warning(
                "%s: the cached copy cannot be shown complete and unchanged (no sha256, and the server gave no "
                "size with an ETag or Last-Modified): downloading it again",
                url,
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetch = _Fetch(url, part, policy, local_option, conditional, record.validator() if record else "")
    if not sha256:
        fetch.on_headers = lambda r: atomic_write_json(record_path(dest), asdict(r))
    outcome = fetch.run()
    if outcome is None:  # 304: the cached copy is the server's current one
        log.info("%s is unchanged on the server (HTTP 304): using cached %s", url, dest)
        return dest
    if sha256:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise UserError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; the download was deleted")
    elif outcome.size is None:
        log.warning(
            "%s: UNVERIFIED download: the server announced no size and no sha256 is set, so a body cut short "
            "cannot be told from a whole one. It will be downloaded again next time; to check and cache it, "
            "pin it with its sha256 (%s)",
            url,
            sha256_file(part),
        )
    os.replace(part, dest)
    if not sha256:
        complete = outcome.size is not None  # then the size was checked; else nothing shows it whole
        atomic_write_json(record_path(dest), asdict(CacheRecord(**{**asdict(outcome), "complete": complete})))
    return dest


class _Retry(Exception):
    """A failure that another attempt, resuming from the .part file, may get past."""


class _Fetch:
    """One download: attempts, each resuming from ``part``, within the policy's retries and deadline."""

    def __init__(
        self,
        url: str,
        part: Path,
        policy: DownloadPolicy,
        local_option: str,
        conditional: dict[str, str],
        if_range: str,
    ) -> None:
        self.url, self.part, self.policy, self.local_option = url, part, policy, local_option
        self.conditional = conditional  # headers of a conditional request for the cached copy
        self.if_range = if_range  # the validator of the entity the .part file holds
        self.on_headers = lambda record: None  # called with what the server says, before the body
        self.deadline = 0.0

    def run(self) -> CacheRecord | None:
        """The server's record of the downloaded file (size None: unannounced), or None for HTTP 304."""
        start = time.monotonic()
        self.deadline = start + self.policy.deadline_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt()
            except _Retry as err:
                reason = str(err)
            pause = min(self.policy.backoff_s * 2 ** (attempt - 1), self.deadline - time.monotonic())
            if attempt > self.policy.retries or pause < 0:
                raise UserError(self._gave_up(attempt, reason, time.monotonic() - start)) from None
            log.warning("%s: %s; attempt %d of %d in %.1f s", self.url, reason, attempt + 1,
                        self.policy.retries + 1, pause)  # fmt: skip
            time.sleep(pause)

    def _gave_up(self, attempts: int, reason: str, seconds: float) -> str:
        kept = self.part.stat().st_size if self.part.exists() else 0
        where = f"{kept} bytes are kept in {self.part} and the next run resumes from there" if kept else "nothing kept"
        if time.monotonic() >= self.deadline:
            why = self._late() if reason == self._late() else f"{self._late()}; last: {reason}"
        else:
            why = f"{attempts} attempt{'s' * (attempts > 1)} failed; last: {reason}"
        settings = f"; {self.policy.settings} set how hard it tries" if self.policy.settings else ""
        return (
            f"download of {self.url} failed after {seconds:.0f} s ({why}); {where}{settings}. "
            f"Or download it elsewhere and point {self.local_option} at the local copy."
        )

    def _late(self) -> str:
        return f"the deadline of {self.policy.deadline_s:g} s passed"

    def _timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Retry(self._late())
        return min(self.policy.stall_timeout_s, left)

    def _open(self, offset: int) -> http.client.HTTPResponse | None:
        """The response to one request; None for 304 Not Modified."""
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.if_range:  # the server sends the whole file if it changed since the .part began
                headers["If-Range"] = self.if_range
        else:
            headers.update(self.conditional)
        request = urllib.request.Request(self.url, headers=headers)
        timeout = self._timeout()
        with _Watchdog(self.deadline - time.monotonic()) as watchdog:
            try:
                response = self._answer(watchdog.opener(), request, offset, timeout)
            except (_Retry, UserError):
                if watchdog.fired.is_set():  # what failed is the cut connection
                    raise _Retry(self._late()) from None
                raise
        if watchdog.fired.is_set():  # headers cut short by the watchdog: not the server's answer
            if response is not None:
                response.close()
            raise _Retry(self._late())
        return response

    def _answer(
        self, opener: urllib.request.OpenerDirector, request: urllib.request.Request, offset: int, timeout: float
    ) -> http.client.HTTPResponse | None:
        try:
            return opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code == 304 and not offset and self.conditional:
                return None
            if err.code == 416 and offset:  # nothing left to send: the .part may already be whole
                total = _total_from_content_range(err.headers.get("Content-Range", ""))
                if total == offset:
                    raise _Whole(total) from None
                self.part.unlink()
                raise _Retry("the server cannot resume this file (HTTP 416): starting over") from None
            if err.code in RETRY_STATUS:
                raise _Retry(f"HTTP {err.code} {err.reason}") from None
            raise UserError(f"download of {self.url} failed: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise _Retry(f"no answer within {self.policy.stall_timeout_s:g} s") from None
            if isinstance(err.reason, ConnectionResetError | ConnectionAbortedError):
                raise _Retry("the connection was reset before an answer") from None
            raise UserError(
                f"cannot reach {self.url}: {err.reason}. Without network access, fetch the file elsewhere "
                f"and point {self.local_option} at the local copy."
            ) from None
        except TimeoutError:
            raise _Retry(f"no answer within {self.policy.stall_timeout_s:g} s") from None
        except (ConnectionError, http.client.HTTPException) as err:
            raise _Retry(f"the connection failed before an answer ({type(err).__name__})") from None

    def _attempt(self) -> CacheRecord | None:
        offset = self.part.stat().st_size if self.part.exists() else 0
        try:
            response = self._open(offset)
        except _Whole as whole:
            return CacheRecord(self.url, size=whole.size)
        if response is None:
            return None
        with response:
            start = _resumed_at(response) if offset else 0
            if start not in (0, offset):
                self.part.unlink()
                raise _Retry(f"the server resumed at byte {start}, not {offset}: starting over")
            offset = start  # 0: the server sent the whole file (Range ignored, or the file changed)
            length = response.headers.get("Content-Length")
            size = offset + int(length) if length and length.isdigit() else None
            record = CacheRecord(self.url, response.headers.get("ETag", ""), response.headers.get("Last-Modified", ""),
                                 size)  # fmt: skip
            self.if_range = record.validator()
            self.on_headers(record)
            self._read_body(response, offset, size)
        got = self.part.stat().st_size
        if size is not None and got < size:
            raise _Retry(f"the connection closed after {got} of {size} bytes")
        if size is not None and got > size:
            self.part.unlink()
            raise _Retry(f"the server sent {got} bytes after announcing {size}: starting over")
        return record

    def _read_body(self, response: http.client.HTTPResponse, offset: int, size: int | None) -> None:
        with (
            open(self.part, "ab" if offset else "wb") as f,
            tqdm(total=size, initial=offset, unit="B", unit_scale=True, desc=self.part.stem, leave=False) as bar,
        ):
            while True:
                if time.monotonic() >= self.deadline:
                    raise _Retry(self._late())
                try:
                    chunk = response.read1(READ_CHUNK)
                except TimeoutError:
                    raise _Retry(f"stalled: no data for {self.policy.stall_timeout_s:g} s") from None
                except (ConnectionError, http.client.HTTPException, OSError) as err:
                    raise _Retry(f"the connection broke ({type(err).__name__})") from None
                if not chunk:
                    return
                f.write(chunk)
                bar.update(len(chunk))


class _Watchdog:
    """Shuts the sockets of a request when the download's deadline passes. The stall timeout bounds each wait for
    a byte and the body is read in small chunks with the deadline checked between them, but a server that
    trickles its status line and headers (a byte every few seconds) keeps ``urlopen`` reading them for ever."""

    def __init__(self, seconds: float) -> None:
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _cut(self) -> None:
        with self._lock:
            self.fired.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def watch(self, sock: socket.socket) -> None:
        """A connection's socket, once connected: shut at once if the deadline passed while it connected."""
        with self._lock:
            self._sockets.append(sock)
            late = self.fired.is_set()
        if late:
            _shut(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's opener, its HTTP(S) connections (redirects' included) registering their sockets here."""
        return urllib.request.build_opener(_WatchedHTTP(self), _WatchedHTTPS(self))


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # (already closed)
        sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once; the response then fails


def _watched(base: type[http.client.HTTPConnection], watchdog: _Watchdog) -> type:
    class Watched(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    return Watched


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self.watchdog), req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPSConnection, self.watchdog), req, context=self._context)


class _Whole(Exception):
    """HTTP 416 for a .part file that already holds the whole file."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _total_from_content_range(value: str) -> int | None:
    match = re.fullmatch(r"bytes (?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(match[1]) if match else None


def _resumed_at(response: http.client.HTTPResponse) -> int:
    """Where a 206 answer's body starts in the file (0 for any other answer)."""
    if response.status != 206:
        return 0
    match = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", response.headers.get("Content-Range", "").strip())
    return int(match[1]) if match else -1
