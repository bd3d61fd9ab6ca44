"""Tests for anime_avatar.data.fetch.download and the url source, against a real HTTP server on 127.0.0.1.

The server runs in a background thread on an ephemeral port, answers Range requests
with 206, and records every request, so caching and resuming can be checked exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.data.fetch import USER_AGENT, DownloadPolicy, cache_dir, cached_path, download, read_record
from anime_avatar.data.sources import collect, collect_url
from tests.conftest import section

# --- a local HTTP server with Range support -------------------------------------------------------


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}  # path -> ETag it sends and honours (If-None-Match, If-Range)
        self.last_modified: dict[str, str] = {}  # path -> Last-Modified likewise
        self.requests: list[dict[str, str | None]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.honour_ranges = True
        self.send_length = True  # False: no Content-Length, the body ends when the connection closes
        self.cut_body_at: int | None = None  # send only this many body bytes, then hang up
        # Misbehaviour for the next requests, one entry each: ("reset", n) sends n body bytes then resets
        # the connection; ("stall", n) sends n bytes then goes silent; ("silent", 0) never answers;
        # ("trickle", s) sends one byte every s seconds; ("status", code) answers with that error;
        # ("trickle_headers", s) sends its status line and headers one byte every s seconds.
        self.plan: list[tuple[str, float]] = []
        self.release = threading.Event()  # set at the end of a test: silent handlers give up

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def handle_error(self, request, client_address) -> None:  # a client that left is expected here
        pass


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        srv = self.server
        wanted = self.headers.get("Range")
        srv.requests.append({"path": self.path, "range": wanted, "user_agent": self.headers.get("User-Agent")})
        srv.headers_seen.append(dict(self.headers))
        action, arg = srv.plan.pop(0) if srv.plan else ("", 0)
        if action == "silent":
            srv.release.wait(10)
            self.close_connection = True
            return
        if action == "status":
            self.send_error(int(arg))
            return
        if action == "trickle_headers":  # the status line and headers a byte at a time, for ever
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Padding: " + b"x" * 100_000
            for i in range(len(head)):
                self.wfile.write(head[i : i + 1])
                self.wfile.flush()
                if srv.release.wait(arg):
                    break
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        data = srv.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        validators = {"ETag": srv.etags.get(path), "Last-Modified": srv.last_modified.get(path)}
        none_match, modified_since = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
        if (none_match and none_match == validators["ETag"]) or (
            not none_match and modified_since and modified_since == validators["Last-Modified"]
        ):
            self.send_response(304)
            self._send_validators(validators)
            self.end_headers()
            return
        if_range = self.headers.get("If-Range")
        start, status = 0, 200
        if wanted and srv.honour_ranges and (if_range is None or if_range in validators.values()):
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            assert match, f"unexpected Range header {wanted!r}"
            start = int(match[1])
            if start >= len(data):
                self.send_response(416, "Range Not Satisfiable")
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self._send_validators(validators)
        if srv.send_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True
        self.end_headers()
        try:
            self._send_body(body, action, arg)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first
            self.close_connection = True

    def _send_validators(self, validators: dict[str, str | None]) -> None:
        for name, value in validators.items():
            if value:
                self.send_header(name, value)

    def _send_body(self, body: bytes, action: str, arg: float) -> None:
        srv = self.server
        if action == "reset":
            self.wfile.write(body[: int(arg)])
            time.sleep(0.2)  # let the client read those bytes: a reset discards what it has not read
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # with linger 0: an RST, not a FIN
            self.close_connection = True
        elif action == "stall":
            self.wfile.write(body[: int(arg)])
            srv.release.wait(10)
            self.close_connection = True
        elif action == "trickle":
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                if srv.release.wait(arg):
                    break
            self.close_connection = True
        else:
            if srv.cut_body_at is not None:
                body = body[: srv.cut_body_at]
                self.close_connection = True
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ANIME_AVATAR_CACHE", str(folder))
    return folder


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# --- cache location ------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIME_AVATAR_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ANIME_AVATAR_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "anime-avatar"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "anime-avatar"


def test_cached_path_is_keyed_by_sha256_or_url(cache):
    digest = "ab" * 32
    assert cached_path("https://host/a/data.zip?dl=1", digest) == cache / "downloads" / digest[:16] / "data.zip"
    by_url = cached_path("https://host/a/data.zip")
    assert by_url.parent.parent == cache / "downloads"
    assert by_url.parent.name == sha256(b"https://host/a/data.zip")[:16]
    assert by_url != cached_path("https://other/a/data.zip"), "different URLs do not share a cache entry"
    assert cached_path("https://host/my%20photos.tar.gz", digest).name == "my photos.tar.gz"


@pytest.mark.parametrize("url", ["https://host/..%2F..%2Fescape.zip", "https://host/%2F", "https://host/a/%2E/"])
def test_cached_path_stays_inside_the_cache(cache, url):
    path = cached_path(url, "cd" * 32)
    assert path.parent == cache / "downloads" / ("cd" * 8)
    assert path.name not in ("", ".", "..") and "/" not in path.name


def test_a_url_whose_last_part_is_longer_than_a_file_name_downloads(server, cache):
    """A 300-character last part (or 84 percent-encoded Japanese characters) failed with OSError "File name too
    long" before any request."""
    data = payload(20_000)
    long_name = "/" + "a" * 300 + ".zip"
    server.files[long_name] = data
    path = download(server.url(long_name), sha256(data))
    assert path.read_bytes() == data and path.suffix == ".zip"
    assert len((path.name + ".part").encode()) <= 255 and len((path.name + ".json").encode()) <= 255
    unchecked = download(server.url(long_name))  # no sha256: the download's record is written beside it too
    assert unchecked.read_bytes() == data and read_record(unchecked, server.url(long_name)) is not None
    japanese = cached_path("https://host/" + "%E7%94%BB" * 90 + ".zip")  # 270 bytes of UTF-8
    assert len(japanese.name.encode()) <= 250 and japanese.name.startswith("画")


# --- download ------------------------------------------------------------------------------------


def test_download_checks_sha256_and_caches(server, cache):
    data = payload()
    server.files["/pack/data.zip"] = data
    url = server.url("/pack/data.zip")

    path = download(url, sha256(data))

    assert path == cached_path(url, sha256(data))
    assert path.is_relative_to(cache)
    assert path.read_bytes() == data
    assert files_under(cache) == [path.relative_to(cache).as_posix()], "no .part file is left behind"
    assert server.requests == [{"path": "/pack/data.zip", "range": None, "user_agent": USER_AGENT}]


def test_cached_download_is_reused_without_a_request(server, cache):
    data = payload(50_000)
    server.files["/data.zip"] = data
    url = server.url("/data.zip")
    first = download(url, sha256(data))
    assert len(server.requests) == 1

    assert download(url, sha256(data)) == first
    assert len(server.requests) == 1, "a cached file with the right sha256 needs no request"


def test_cached_file_with_wrong_content_is_downloaded_again(server, cache):
    data = payload(40_000)
    server.files["/data.zip"] = data
    url = server.url("/data.zip")
    path = download(url, sha256(data))
    path.write_bytes(b"tampered")

    assert download(url, sha256(data)) == path
    assert path.read_bytes() == data
    assert len(server.requests) == 2


def test_download_to_explicit_dest(server, cache, tmp_path):
    server.files["/model.xml"] = b"<cascade/>"
    dest = tmp_path / "models" / "cascade.xml"
    assert download(server.url("/model.xml"), dest=dest) == dest
    assert dest.read_bytes() == b"<cascade/>"
    assert not cache.exists(), "an explicit dest bypasses the cache"


def test_sha256_mismatch_is_a_user_error_and_leaves_nothing(server, cache):
    data = payload(80_000)
    server.files["/data.zip"] = data
    url = server.url("/data.zip")
    wrong = "0" * 64

    with pytest.raises(UserError) as err:
        download(url, wrong)

    message = str(err.value)
    assert f"sha256 mismatch for {url}" in message
    assert f"expected {wrong}, got {sha256(data)}" in message
    assert "deleted" in message
    assert files_under(cache) == []


def test_interrupted_download_resumes_with_a_range_request(server, cache):
    data = payload(500_000, seed=1)
    server.files["/big.tar.gz"] = data
    url = server.url("/big.tar.gz")
    dest = cached_path(url, sha256(data))
    dest.parent.mkdir(parents=True)
    n = 123_457
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(data[:n])

    path = download(url, sha256(data))

    assert [r["range"] for r in server.requests] == [f"bytes={n}-"]
    assert path == dest
    assert path.read_bytes() == data
    assert not part.exists()


def test_resume_starts_over_when_the_server_ignores_range(server, cache):
    data = payload(200_000, seed=2)
    server.files["/data.zip"] = data
    server.honour_ranges = False
    url = server.url("/data.zip")
    dest = cached_path(url, sha256(data))
    dest.parent.mkdir(parents=True)
    stale = b"stale bytes from another file"
    dest.with_name(dest.name + ".part").write_bytes(stale)

    path = download(url, sha256(data))

    assert [r["range"] for r in server.requests] == [f"bytes={len(stale)}-"]
    assert path.read_bytes() == data, "a 200 answer replaces the .part instead of being appended to it"


def test_complete_part_file_is_accepted_on_416(server, cache):
    data = payload(30_000, seed=3)
    server.files["/data.zip"] = data
    url = server.url("/data.zip")
    dest = cached_path(url, sha256(data))
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(data)

    path = download(url, sha256(data))

    assert [r["range"] for r in server.requests] == [f"bytes={len(data)}-"]
    assert path.read_bytes() == data
    assert files_under(cache) == [dest.relative_to(cache).as_posix()]


def test_connection_dropped_mid_body_keeps_the_part_for_resume(server, cache):
    data = payload(400_000, seed=4)
    server.files["/data.zip"] = data
    server.cut_body_at = 150_000
    url = server.url("/data.zip")
    dest = cached_path(url)
    part = dest.with_name(dest.name + ".part")

    with pytest.raises(UserError) as err:
        download(url, policy=fast(retries=0))
    assert re.fullmatch(
        rf"download of {re.escape(url)} failed after \d+ s \(1 attempt failed; last: the connection closed after "
        rf"150000 of 400000 bytes\); 150000 bytes are kept in {re.escape(str(part))} and the next run resumes from "
        r"there; data\.download_retries, data\.stall_timeout_s and data\.deadline_s set how hard it tries\. "
        r"Or download it elsewhere and point data\.path at the local copy\.",
        str(err.value),
    ), str(err.value)
    assert not dest.exists(), "a short download is never taken for the finished file"
    assert part.read_bytes() == data[:150_000]

    server.cut_body_at = None
    assert download(url).read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=150000-"]
    assert not part.exists()


def test_unreachable_host_names_the_local_option(cache):
    url = f"http://127.0.0.1:{closed_port()}/x.zip"
    with pytest.raises(UserError) as err:
        download(url, policy=fast())
    message = str(err.value)
    assert message.startswith(f"cannot reach {url}: ")
    assert "point data.path at the local copy" in message

    with pytest.raises(UserError, match=r"point detect\.cascade_path at the local copy"):
        download(url, policy=fast(), local_option="detect.cascade_path")
    assert files_under(cache) == []


def test_http_404_is_a_user_error(server, cache):
    url = server.url("/missing.zip")
    with pytest.raises(UserError, match=re.escape(f"download of {url} failed: HTTP 404 Not Found")):
        download(url)
    assert len(server.requests) == 1
    assert files_under(cache) == []


# --- url source end to end -------------------------------------------------------------------------


# --- misbehaving servers: resets, stalls, trickles and errors end in bounded retries -----------------


def fast(retries: int = 3, stall: float = 0.5, deadline: float = 20.0) -> DownloadPolicy:
    """A policy with short waits, from the data section's keys as the url source builds it."""
    params = section("data", download_retries=retries, stall_timeout_s=stall, deadline_s=deadline)
    return dataclasses.replace(DownloadPolicy.from_params(params), backoff_s=0.05)


def test_connection_resets_are_retried_and_each_attempt_resumes(server, cache):
    data = payload(400_000, seed=5)
    server.files["/data.zip"] = data
    server.plan = [("reset", 100_000), ("reset", 100_000)]
    url = server.url("/data.zip")

    path = download(url, sha256(data), policy=fast())

    assert path.read_bytes() == data
    ranges = [r["range"] for r in server.requests]
    assert ranges == [None, "bytes=100000-", "bytes=200000-"], "each attempt resumes where the last one broke"


def test_connection_reset_every_time_ends_in_one_message(server, cache):
    data = payload(400_000, seed=6)
    server.files["/data.zip"] = data
    server.plan = [("reset", 50_000)] * 5
    url = server.url("/data.zip")
    part = cached_path(url).with_name("data.zip.part")

    with pytest.raises(UserError) as err:
        download(url, policy=fast(retries=2))

    assert len(server.requests) == 3
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"download of {url} failed after ")
    assert "(3 attempts failed; last: the connection broke (ConnectionResetError)); " in message
    assert f"150000 bytes are kept in {part} and the next run resumes from there; " in message
    assert "data.download_retries, data.stall_timeout_s and data.deadline_s set how hard it tries" in message
    assert part.stat().st_size == 150_000


def test_stalled_body_times_out_and_the_retry_resumes(server, cache):
    data = payload(300_000, seed=7)
    server.files["/data.zip"] = data
    server.plan = [("stall", 20_000)]
    url = server.url("/data.zip")

    assert download(url, sha256(data), policy=fast(stall=0.3)).read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=20000-"]


def test_server_that_never_answers_gives_up_after_the_retries(server, cache):
    server.files["/data.zip"] = b"x"
    server.plan = [("silent", 0)] * 3
    url = server.url("/data.zip")
    with pytest.raises(UserError, match=r"\(3 attempts failed; last: no answer within 0\.3 s\); nothing kept"):
        download(url, policy=fast(retries=2, stall=0.3))
    assert len(server.requests) == 3


def test_trickling_server_is_stopped_by_the_deadline(server, cache):
    data = payload(10_000, seed=8)  # at one byte per 0.05 s: over eight minutes
    server.files["/data.zip"] = data
    server.plan = [("trickle", 0.05)] * 10
    url = server.url("/data.zip")
    part = cached_path(url).with_name("data.zip.part")

    with pytest.raises(UserError) as err:
        download(url, policy=fast(retries=5, stall=0.5, deadline=1.0))

    message = str(err.value)
    assert "(the deadline of 1 s passed); " in message
    assert 0 < part.stat().st_size < len(data)
    assert f"bytes are kept in {part} and the next run resumes from there" in message
    assert len(server.requests) == 1, "a trickle is no stall: the deadline ends it, not a retry"


def test_a_server_trickling_its_headers_is_stopped_by_the_deadline(server, cache):
    """urlopen reads the status line and headers with only the stall timeout per byte: a server sending a header
    byte every 0.05 s kept a download with a 1 s deadline going as long as it liked."""
    server.files["/data.zip"] = b"x"
    server.plan = [("trickle_headers", 0.05)] * 3
    url = server.url("/data.zip")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"failed after 1 s \(the deadline of 1 s passed\); nothing kept"):
        download(url, policy=fast(retries=2, stall=0.5, deadline=1.0))
    assert time.monotonic() - started < 5
    assert len(server.requests) == 1


def test_a_deadline_that_passes_while_connecting_still_stops_a_header_trickle(server, cache, monkeypatch):
    """The watchdog shut the sockets it knew when the deadline came; one still connecting (a slow DNS lookup or
    handshake) was registered after that, and its trickled headers then ran unbounded."""
    import socket

    server.files["/data.zip"] = b"x"
    server.plan = [("trickle_headers", 0.05)] * 3
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(1.3) or connect(*a, **k))
    started = time.monotonic()
    with pytest.raises(UserError, match=r"\(the deadline of 1 s passed"):
        download(server.url("/data.zip"), policy=fast(retries=2, stall=2.0, deadline=1.0))
    assert time.monotonic() - started < 5


def test_server_errors_are_retried_and_client_errors_are_not(server, cache):
    data = payload(1_000, seed=9)
    server.files["/data.zip"] = data
    server.plan = [("status", 503), ("status", 502)]
    url = server.url("/data.zip")
    assert download(url, sha256(data), policy=fast()).read_bytes() == data
    assert len(server.requests) == 3

    server.plan = [("status", 403)]
    with pytest.raises(UserError, match=r"download of .* failed: HTTP 403 Forbidden"):
        download(server.url("/data.zip?again"), policy=fast())


# --- downloads without a sha256: verified by size, revalidated, never a short body taken as whole -----


def test_short_body_without_length_or_sha256_is_flagged_and_never_reused(server, cache, caplog):
    data = payload(50_000, seed=10)
    server.files["/data.zip"] = data
    server.send_length = False
    server.cut_body_at = 20_000  # the server hangs up early; without a length nothing shows it
    url = server.url("/data.zip")

    first = download(url)

    assert first.read_bytes() == data[:20_000]
    assert "UNVERIFIED download" in caplog.text and sha256(data[:20_000]) in caplog.text
    assert read_record(first, url).complete is False

    server.cut_body_at = None
    caplog.clear()
    again = download(url)
    assert "cannot be shown complete and unchanged" in caplog.text
    assert again.read_bytes() == data, "the unverified copy was downloaded again, not reused"
    assert [r["range"] for r in server.requests] == [None, None]


def test_cached_download_without_sha256_is_revalidated_by_etag(server, cache):
    old, new = payload(30_000, seed=11), payload(40_000, seed=12)
    server.files["/data.zip"] = old
    server.etags["/data.zip"] = '"v1"'
    url = server.url("/data.zip")

    path = download(url)
    assert read_record(path, url).complete is True
    assert download(url).read_bytes() == old
    assert server.headers_seen[1]["If-None-Match"] == '"v1"', "a conditional request"
    assert len(server.requests) == 2

    server.files["/data.zip"] = new  # the same URL, new content
    server.etags["/data.zip"] = '"v2"'
    assert download(url).read_bytes() == new
    assert read_record(path, url).etag == '"v2"'


def test_cached_download_without_sha256_is_revalidated_by_last_modified(server, cache):
    server.files["/data.zip"] = payload(20_000, seed=13)
    server.last_modified["/data.zip"] = "Tue, 01 Sep 2026 10:00:00 GMT"
    url = server.url("/data.zip")
    download(url)
    download(url)
    assert server.headers_seen[1]["If-Modified-Since"] == "Tue, 01 Sep 2026 10:00:00 GMT"

    server.files["/data.zip"] = changed = payload(20_000, seed=14)
    server.last_modified["/data.zip"] = "Wed, 02 Sep 2026 10:00:00 GMT"
    assert download(url).read_bytes() == changed


def test_cached_download_the_server_cannot_revalidate_is_downloaded_again(server, cache, caplog):
    data = payload(10_000, seed=15)
    server.files["/data.zip"] = data
    url = server.url("/data.zip")
    download(url)
    download(url)
    assert len(server.requests) == 2
    assert "cannot be shown complete and unchanged" in caplog.text


def test_resume_of_a_file_that_changed_meanwhile_starts_over(server, cache):
    old, new = payload(200_000, seed=16), payload(200_000, seed=17)
    server.files["/data.zip"] = old
    server.etags["/data.zip"] = '"v1"'
    server.cut_body_at = 70_000
    url = server.url("/data.zip")
    with pytest.raises(UserError, match="70000 bytes are kept"):
        download(url, policy=fast(retries=0))

    server.cut_body_at = None
    server.files["/data.zip"] = new
    server.etags["/data.zip"] = '"v2"'
    assert download(url).read_bytes() == new, "no splice of the old file's start and the new file's end"
    assert server.headers_seen[1]["Range"] == "bytes=70000-" and server.headers_seen[1]["If-Range"] == '"v1"'


def png(seed: int, width: int, height: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def served_zip(server) -> tuple[str, bytes, dict[str, bytes]]:
    members = {"faces/a.png": png(1, 32, 32), "faces/b.png": png(2, 40, 24), "LICENSE.txt": b"CC-BY-4.0\n"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    server.files["/datasets/avatars.zip"] = buf.getvalue()
    return server.url("/datasets/avatars.zip?download=1"), buf.getvalue(), members


def test_collect_url_end_to_end(server, cache, served_zip, tmp_path):
    url, archive, members = served_zip
    params = section("data", source="url", url=url, sha256=sha256(archive), license="CC-BY-4.0")
    out = tmp_path / "out"

    result = collect_url(params, out)

    assert [(r.relpath, r.width, r.height) for r in result.images] == [
        ("images/faces/a.png", 32, 32),
        ("images/faces/b.png", 40, 24),
    ]
    for row in result.images:
        original = members[row.relpath.removeprefix("images/")]
        assert (out / row.relpath).read_bytes() == original
        assert row.sha256 == sha256(original)
        assert row.source == f"url:{url}"
        assert row.license == "CC-BY-4.0"
    assert [(r.relpath, r.reason.split(" ")[0]) for r in result.rejected] == [("LICENSE.txt", "not")]
    assert files_under(out) == ["images/faces/a.png", "images/faces/b.png"], "staging is removed"
    cached = cached_path(url, sha256(archive))
    assert cached.name == "avatars.zip"
    assert cached.read_bytes() == archive, "the archive itself stays in the cache"

    again = collect(params, tmp_path / "again")
    assert [r.sha256 for r in again.images] == [r.sha256 for r in result.images]
    assert len(server.requests) == 1, "the second run unpacks the cached archive"


def test_collect_url_with_wrong_sha256_writes_no_images(server, cache, served_zip, tmp_path):
    url, _, _ = served_zip
    params = section("data", source="url", url=url, sha256="1" * 64)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="sha256 mismatch"):
        collect(params, out)
    assert not out.exists()
    assert files_under(cache) == []


def test_collect_url_unreachable_names_data_path(cache, tmp_path):
    params = section("data", source="url", url=f"http://127.0.0.1:{closed_port()}/avatars.zip")
    with pytest.raises(UserError, match=r"cannot reach .*point data\.path at the local copy"):
        collect(params, tmp_path / "out")


def test_collect_url_survives_a_connection_reset(server, cache, served_zip, tmp_path):
    url, archive, _ = served_zip
    server.plan = [("reset", 200)]
    params = section("data", source="url", url=url, sha256=sha256(archive), download_retries=1)
    result = collect(params, tmp_path / "out")
    assert [r.relpath for r in result.images] == ["images/faces/a.png", "images/faces/b.png"]
    assert [r["range"] for r in server.requests] == [None, "bytes=200-"]
