from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from anime_avatar.core.params import merge

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIME_AVATAR_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"
GRID = SHARED_DATA / "illustrations" / "Anime-Face-Dataset-grid" / "sample_grid_8x8.jpg"
GETCHU = SHARED_DATA / "faces" / "getchu-64"
BIN = Path(sys.executable).parent


class WritesMarker:
    """Unpickling this object would create the folder ``marker``: the proof that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.fixture(autouse=True)
def _tracking_uri_env_restored() -> Iterator[None]:
    """``$MLFLOW_TRACKING_URI`` as it was before each test: MLflow's ``set_tracking_uri`` exports the URI, and
    every later test's commands (which inherit this environment) would log to that test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


# The stylize and translate stages in seconds: for the tests that run the whole pipeline (dvc repro, the flows).
TINY_METHODS = {
    "stylize": {"image_size": 48, "steps": 3, "batch_size": 2, "max_styles": 3, "max_faces": 6, "threads": 1,
                "checkpoint_every": 2, "log_every": 1, "key_dim": 8, "max_keys": 64, "decoder_width": 16},
    "gatys": {"steps": 2},
    "stylize_eval": {"image_size": 64, "n_content": 2, "n_styles": 1, "timing_repeats": 1, "alphas": [0.0, 1.0],
                     "threads": 1, "methods": ["gatys-inception-softmax", "adain", "attention"]},
    "photos": {"synthetic": {"count": 8, "size": 128}},
    "translate": {"image_size": 16, "channels": 4, "n_blocks": 2, "steps": 3, "batch_size": 2, "max_images": 8,
                  "attention": "cam+mask",
                  "checkpoint_every": 2, "sample_every": 2, "log_every": 1},
    "translate_eval": {"n_images": 6, "image_size": 32, "kid_subset_size": 4, "timing_repeats": 1},
}  # fmt: skip

# The whole pipeline on tiny params: every stage runs, in seconds each (end-to-end tests change what they test).
TINY_PIPELINE = merge(TINY_METHODS, {
    "data": {"synthetic": {"count": 10, "size": 512}},
    "detect": {"image_size": 32},
    "validate": {"min_count": 8},
    "model": {"channels": 8, "attention": [16], "z_dim": 16},
    "train": {"steps": 2, "batch_size": 8, "log_every": 1, "sample_every": 2, "checkpoint_every": 2},
    "eval": {"n_samples": 24, "batch_size": 12, "kid_subset_size": 8},
})  # fmt: skip


def synthetic_jobs(folder: Path, seed: int, count: int, size: int = 256) -> list:
    """``count`` synthetic illustrations saved in ``folder``, as detection jobs (fake, distinct hashes)."""
    from anime_avatar.data.detection import FileJob
    from anime_avatar.data.synthetic import render_illustration

    jobs = []
    for i in range(count):
        path = folder / f"{i}.png"
        render_illustration(seed, i, size=size).image.save(path)
        jobs.append(FileJob(path.name, str(path), f"{i:064d}"))
    return jobs


def params_with(changes: dict | None = None):  # -> Params
    """The project's params.yaml with ``changes`` merged in (nested mappings key by key)."""
    from anime_avatar.core.params import load_params

    return load_params(ROOT / "params.yaml", changes or {})


def section(name: str, **changes):  # -> one section of Params
    """One section of the project's params with some keys changed: ``section("detect", detector="lbp")``."""
    params = params_with({name: changes})
    return params.validation if name == "validate" else getattr(params, name)


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"real-image test data {path} is absent (../shared/data)")


@pytest.fixture
def cascade() -> Path:
    if not CASCADE.is_file():
        pytest.skip(f"{CASCADE} is absent (../shared/models)")
    return CASCADE


def make_project(work: Path, changes: dict, git: bool = False) -> Path:
    """A copy of the project (code, dvc.yaml, params.yaml with changes) in a fresh DVC workspace at ``work``.

    With ``git``, the workspace is also a git repository with one commit (needed by `dvc exp` and the audit).
    """
    for name in ("anime_avatar", "stages", "pipelines"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), changes)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if git:
        shutil.copy(ROOT / ".gitignore", work / ".gitignore")
        run(["git", "init", "-q"], work)
        run(["dvc", "init", "-q"], work)
    else:
        run(["dvc", "init", "--no-scm", "-q"], work)
    run(["dvc", "config", "core.analytics", "false"], work)
    if git:
        commit(work, "project")
    return work


def commit(work: Path, message: str) -> None:
    run(["git", "add", "-A"], work)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", message], work)


@pytest.fixture
def project(tmp_path: Path) -> Callable[[dict], Path]:
    """``project(changes)``: a fresh DVC workspace with the project's code and changed params."""
    return lambda changes: make_project(tmp_path / "project", changes)


def venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(extra or {}))
    env.pop("PYTHONPATH", None)
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command of the venv (dvc, python) in ``cwd``; output captured for assertions."""
    proc = subprocess.run(cmd, cwd=cwd, env=venv_env(env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``url`` answers 200, failing early if the server process exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def prefect_rest(env: dict, method: str, path: str, body: dict | None = None) -> dict | list:
    """One call to the test Prefect server's REST API. The server answers 503 for errors it marks retryable
    (SQLite's "database is locked" while the runner writes), so this retries them as Prefect's own client does."""
    import httpx

    for attempt in range(6):
        response = httpx.request(method, env["PREFECT_API_URL"] + path, json=body, timeout=30)
        if response.status_code not in (429, 502, 503) or attempt == 5:
            break
        time.sleep(0.5 * 2**attempt)
    response.raise_for_status()
    return response.json()


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real Prefect server on localhost (its own PREFECT_HOME); yields the env that points clients at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = open(home / "server.log", "w")  # noqa: SIM115 (open for the server's lifetime)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=venv_env(env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{url}/health", server)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        stop(server)
        log.close()


def code_model_files(model_uri: str) -> tuple[Path, set[str]]:
    """Download a logged MLflow model (tracking URI from the environment): its folder and its files' relative
    paths, after checking that it holds no pickle (the project logs models as code and tensors only)."""
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    pickles = sorted(f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle")))
    assert not pickles, f"{model_uri} holds pickles: {pickles}"
    return folder, files


# --- a real browser: Debian's chromium, driven by Selenium through chromium-driver ---------------------------

CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000")


def browser_or_reason() -> tuple[str, str] | str:
    """(chromium, chromedriver), or why they cannot be used."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not (chromium and driver):
        return "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return chromium, driver


def require_browser() -> tuple[str, str]:
    """The browser, else the test is skipped with the reason; under .ci/run (ANIME_AVATAR_REQUIRE_BROWSER=1),
    where `make test` installs it, it fails instead."""
    found = browser_or_reason()
    if isinstance(found, str):
        if os.environ.get("ANIME_AVATAR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser tests cannot run: {found}", pytrace=False)
        pytest.skip(f"browser tests skipped: {found}")
    return found


@pytest.fixture(scope="module")
def browser():
    """A headless chromium driven by Selenium, one per test module."""
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def peak_traced_bytes(work: Callable[[], object]) -> int:
    """The peak of the memory Python tracks (NumPy's arrays included) while ``work`` runs."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loops' clock (``core.loops.TrainingClock``) advances one second per reading: a loop that reads
    it once per step has trained exactly as many seconds as it ran steps."""
    from types import SimpleNamespace

    from anime_avatar.core import loops

    ticks = itertools.count()
    monkeypatch.setattr(loops, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
