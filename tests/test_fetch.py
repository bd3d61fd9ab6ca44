"""Tests for anime_avatar.data.fetch.download and the url source, against a real HTTP server on 127.0.0.1.

The server runs in a background thread on an ephemeral port, answers Range requests
with 206, and records every request, so caching and resuming can be checked exactly.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.data.fetch import USER_AGENT, cache_dir, cached_path, download
from anime_avatar.data.sources import collect, collect_url
from tests.conftest import section

# --- a local HTTP server with Range support -------------------------------------------------------


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, str | None]] = []
        self.honour_ranges = True
        self.cut_body_at: int | None = None  # send only this many body bytes, then hang up

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        srv = self.server
        wanted = self.headers.get("Range")
        srv.requests.append({"path": self.path, "range": wanted, "user_agent": self.headers.get("User-Agent")})
        data = srv.files.get(urlsplit(self.path).path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        if wanted and srv.honour_ranges:
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
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
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

    # without a sha256 the cache is keyed by URL and reused as well
    unchecked = download(url)
    assert download(url) == unchecked
    assert len(server.requests) == 2
    assert unchecked.read_bytes() == data


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

    with pytest.raises(UserError, match=r"interrupted after 150000 of 400000 bytes"):
        download(url)
    assert not dest.exists(), "a short download is never taken for the finished file"
    assert part.read_bytes() == data[:150_000]

    server.cut_body_at = None
    assert download(url).read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=150000-"]
    assert not part.exists()


def test_unreachable_host_names_the_local_option(cache):
    url = f"http://127.0.0.1:{closed_port()}/x.zip"
    with pytest.raises(UserError) as err:
        download(url, timeout=5)
    message = str(err.value)
    assert message.startswith(f"cannot reach {url}: ")
    assert "point data.path at the local copy" in message

    with pytest.raises(UserError, match=r"point detect\.cascade_path at the local copy"):
        download(url, timeout=5, local_option="detect.cascade_path")
    assert files_under(cache) == []


def test_http_404_is_a_user_error(server, cache):
    url = server.url("/missing.zip")
    with pytest.raises(UserError, match=re.escape(f"download of {url} failed: HTTP 404 Not Found")):
        download(url)
    assert len(server.requests) == 1
    assert files_under(cache) == []


# --- url source end to end -------------------------------------------------------------------------


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
