"""Peak memory of the served models (`mlflow models serve`) under the bad requests of issue 22, and under the
largest request the limits let through.

Run: `.venv/bin/python bench/served_memory.py` (about 5 minutes on 2 cores). It logs a stylizer of the default
params' dimensions (untrained: memory and time do not depend on the weights), a small generator and a small
translator to a temporary MLflow store, serves each on 127.0.0.1, sends each case, and prints per case: the HTTP
status, the seconds until the answer, the start of the message, and the peak RSS of the server's processes during
the case (Linux's VmHWM, reset before each case through /proc/PID/clear_refs; the sum over the process tree).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN, free_port, params_with, stop, venv_env, wait_http  # noqa: E402

SHORT_TIMEOUT_S = 5  # MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT of the server for the timed-out requests (default 60)


def png_b64(width: int, height: int, seed: int = 0) -> str:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=gen) * 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def split(columns: list[str], rows: list[list], **params) -> dict:
    body = {"dataframe_split": {"columns": columns, "data": rows}}
    return {**body, "params": params} if params else body


def log_models(work: Path) -> str:
    import mlflow

    from anime_avatar.artifacts.generator import save_generator
    from anime_avatar.core.params import load_params
    from anime_avatar.gan.nets import build_generator, net_config
    from anime_avatar.ops.generator_models import log_generator_model
    from anime_avatar.ops.stylizer_models import log_stylizer_model
    from anime_avatar.ops.translator_models import log_translator_model
    from anime_avatar.style.features import LAYERS, build_features
    from anime_avatar.style.model_file import save_stylizer
    from anime_avatar.style.nets import FusionHead, fusion_config
    from anime_avatar.translate.model_file import save_translator
    from anime_avatar.translate.nets import Generator, TranslatorConfig

    torch.manual_seed(0)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    net = build_generator(config)
    save_generator(work / "generator.pt", config.to_dict(), net.state_dict(), net.state_dict(), step=1)
    sp = load_params(ROOT / "params.yaml").stylize
    scales = LAYERS[sp.features].fusion_scales
    encoder = build_features(sp.features, scales)
    heads = {m: FusionHead(fusion_config(m, encoder, scales, sp.key_dim, sp.max_keys, sp.decoder_width))
             for m in ("attention", "adain")}  # fmt: skip
    save_stylizer(work / "stylizer.pt", heads, step=1, image_size=sp.image_size)
    cfg = TranslatorConfig(image_size=64, channels=16, n_blocks=2, attention="cam+mask", disc_channels=4, disc_layers=2)
    save_translator(work / "translator.pt", Generator(cfg), Generator(cfg), step=1, run_id="r", data_version="d")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("served-memory")
    with mlflow.start_run():
        log_generator_model(mlflow, work / "generator.pt", "gen")
        log_stylizer_model(mlflow, work / "stylizer.pt", "sty")
        log_translator_model(mlflow, work / "translator.pt", "tra")
    return uri


class Server:
    def __init__(self, name: str, work: Path, uri: str, timeout_s: int = 60):
        self.port = free_port()
        env = {
            "MLFLOW_TRACKING_URI": uri,
            "OMP_NUM_THREADS": "1",
            "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(timeout_s),
        }
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/1", "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=work, env=venv_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.port}/ping", self.process, timeout=300)
        self.url = f"http://127.0.0.1:{self.port}/invocations"

    def pids(self) -> list[int]:
        root = psutil.Process(self.process.pid)
        return [p.pid for p in [root, *root.children(recursive=True)]]

    def reset_peak(self) -> None:
        for pid in self.pids():
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS

    def peak_gib(self) -> str:
        """The sum of the peaks over the server's processes, and each (the `mlflow models serve` command first)."""
        peaks = []
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024 / 1024**3)
        return f"{sum(peaks):.2f} ({' + '.join(f'{p:.2f}' for p in peaks)})"

    def post(self, body: dict) -> httpx.Response:
        return httpx.post(self.url, json=body, timeout=600)


def report(server: Server, case: str, send) -> None:
    server.reset_peak()
    start = time.perf_counter()
    answers = send()
    seconds = time.perf_counter() - start
    answers = answers if isinstance(answers, list) else [answers]
    statuses = sorted({a.status_code for a in answers})
    last = answers[-1]
    message = "(images)" if last.status_code == 200 else last.text
    if last.status_code != 200 and last.text.startswith("{"):
        message = last.json().get("message", "").split("Error: ")[-1]
    print(f"| {case} | {'/'.join(map(str, statuses))} x{len(answers)} | {seconds:.1f} | {server.peak_gib()} | "
          f"{message[:90]} |", flush=True)  # fmt: skip


def concurrently(server: Server, bodies: list[dict]) -> list[httpx.Response]:
    answers: list = [None] * len(bodies)
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, server.post(bodies[i])))
               for i in range(len(bodies))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def main() -> None:
    # No options; the parser gives --help its page (it used to run the whole benchmark).
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # MLflow puts the artifacts of a sqlite store in ./mlruns
        uri = log_models(work)
        small, style = png_b64(64, 48), png_b64(96, 64, 1)
        print("| case | status | s | peak RSS (GiB) | message |\n|---|---|---|---|---|", flush=True)

        server = Server("sty", work, uri)
        try:
            report(server, "stylizer idle (one good 256 px request)",
                   lambda: server.post(split(["content", "style"], [[small, style]])))  # fmt: skip
            report(server, "stylizer: 20000x2 style image",
                   lambda: server.post(split(["content", "style"], [[small, png_b64(20000, 2)]])))  # fmt: skip
            report(server, "stylizer: size 100000",
                   lambda: server.post(split(["content", "style"], [[small, style]], size=100000)))  # fmt: skip
            bad = [split(["content", "style"], [[small, png_b64(20000, 2)]]),
                   split(["content", "style"], [[small, style]], size=100000),
                   split(["content", "style"], [[small, style]] * 65, size=64),
                   split(["content", "style"], [[base64.b64encode(b"junk").decode(), style]]),
                   split(["photo"], [[small]])]  # fmt: skip
            report(server, "stylizer: 20 concurrent bad requests", lambda: concurrently(server, bad * 4))
            big = png_b64(1024, 1024, 2)
            report(server, "stylizer: largest row (768 px, 1024x1024 content and style)",
                   lambda: server.post(split(["content", "style"], [[big, big]], size=768)))  # fmt: skip
        finally:
            stop(server.process)

        server = Server("sty", work, uri, SHORT_TIMEOUT_S)
        try:
            one = split(["content", "style"], [[big, big]], size=768)  # about 8 s of work, past the timeout
            report(server, f"stylizer: 3 timed-out requests in a row (768 px, {SHORT_TIMEOUT_S} s timeout)",
                   lambda: [server.post(one) for _ in range(3)])  # fmt: skip
            report(server, "stylizer: a good request right after them",
                   lambda: server.post(split(["content", "style"], [[small, style]])))  # fmt: skip
            time.sleep(10)
            report(server, "stylizer: a good request 10 s later",
                   lambda: server.post(split(["content", "style"], [[small, style]])))  # fmt: skip
        finally:
            stop(server.process)

        server = Server("gen", work, uri)
        try:
            report(server, "generator: seed 2**63", lambda: server.post(split(["seed"], [[2**63]])))
            report(server, "generator: 20000 rows", lambda: server.post(split(["seed"], [[s] for s in range(20000)])))
        finally:
            stop(server.process)

        server = Server("tra", work, uri)
        try:
            report(server, "translator: size 100000",
                   lambda: server.post(split(["photo"], [[small]], size=100000)))  # fmt: skip
            largest = split(["photo"], [[png_b64(1024, 1024, 3)]], size=768)
            report(server, "translator: largest request (1 row at 768 px)", lambda: server.post(largest))
            report(server, "translator: 20 concurrent largest requests", lambda: concurrently(server, [largest] * 20))
        finally:
            stop(server.process)


if __name__ == "__main__":
    main()
