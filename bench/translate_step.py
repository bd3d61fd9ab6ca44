"""Translator training step: seconds per step of the project's translator with ``attention: cam``, of the same
with its layer-instance norms (LIN, AdaLIN) computed from statistics written out in torch ops (the reference:
how nets.py computed them before 2026-12-06; torch's fused layer and instance norms since), of
``attention: none`` (no CAM, AdaLIN or LIN: instance norm everywhere) and of bench/translate.py's plain CycleGAN
(32 channels, 6 blocks, float32, at 32 px and up). They alternate in one process, the order rotating every
round (bench/speed.py's :func:`alternate`), timed in CPU seconds of this process (the clock
bench/translate.py's budgets use); figures are medians over rounds.

Equal CPU time is how bench/translate.py compares the translators, so a dearer step is fewer steps: this says
how many fewer the attention costs, and how many steps of each a CPU-minute buys on this CPU (the same budget
buys different step counts on CPUs with and without AMX). Random images (the step's cost does not depend on
them). Run, one thread:

    OMP_NUM_THREADS=1 .venv/bin/python bench/translate_step.py --size 64 --batch 1
    OMP_NUM_THREADS=1 .venv/bin/python bench/translate_step.py --size 128 --batch 4 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import cpu_model  # noqa: E402
from overrides import apply_sets  # noqa: E402  (bench/ is this script's directory)
from plain_cyclegan import PlainCycleGAN  # noqa: E402
from speed import alternate, summarise  # noqa: E402
from translate import project_contender, reference_contender  # noqa: E402

from anime_avatar.core.params import load_params  # noqa: E402
from anime_avatar.translate import nets  # noqa: E402
from anime_avatar.translate.training import TranslateBatches  # noqa: E402


def written_out_mix(x: Tensor, rho: Tensor) -> Tensor:
    """The reference: ``rho * instance_norm(x) + (1 - rho) * layer_norm(x)`` from var_mean, sub, rsqrt, mul."""
    x = x.float()
    var_in, mean_in = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
    var_ln, mean_ln = torch.var_mean(x, dim=(1, 2, 3), correction=0, keepdim=True)
    x_in = (x - mean_in) * torch.rsqrt(var_in + nets.EPS)
    x_ln = (x - mean_ln) * torch.rsqrt(var_ln + nets.EPS)
    return torch.lerp(x_ln, x_in, nets._per_channel(rho))


@contextlib.contextmanager
def mixing_with(mix: Callable[[Tensor, Tensor], Tensor]) -> Iterator[None]:
    """LIN and AdaLIN compute their mix with ``mix`` inside the block (they look it up at each call)."""
    project = nets._instance_layer_mix
    nets._instance_layer_mix = mix
    try:
        yield
    finally:
        nets._instance_layer_mix = project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run (default 10)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds (default 10)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a translate key (default: params.yaml's, at 32 channels, 6 blocks)")  # fmt: skip
    args = parser.parse_args()
    if min(args.size, args.batch, args.steps, args.rounds) < 1:
        parser.error("--size, --batch, --steps and --rounds must be at least 1")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, args.size, args.size, 3), dtype=np.uint8) for _ in range(2)]
    batches = TranslateBatches(*images)

    def contender(attention: str):  # -> bench/translate.py's Contender
        raw = apply_sets({}, [f"translate.image_size={args.size}", f"translate.batch_size={args.batch}",
                              "translate.channels=32", "translate.n_blocks=6", "translate.threads=1", *args.set,
                              f"translate.attention={attention}"])  # fmt: skip
        return project_contender(load_params(ROOT / "params.yaml", raw).translate, batches)

    cam, reference, none = contender("cam"), contender("cam"), contender("none")

    def written_out() -> None:
        with mixing_with(written_out_mix):
            reference.advance(args.steps)

    runs = {"cam, LIN written out (reference)": written_out,
            "cam, fused LIN (the project)": lambda: cam.advance(args.steps),
            "none (no attention)": lambda: none.advance(args.steps)}  # fmt: skip
    try:  # the plain CycleGAN takes sides of 32 px and up, multiples of 4
        plain = reference_contender(PlainCycleGAN(args.size, 32, 6, batch_size=args.batch), batches, 0)
    except ValueError as err:
        print(f"plain CycleGAN left out: {err}")
    else:
        runs["plain CycleGAN (32 ch, 6 blocks)"] = lambda: plain.advance(args.steps)
    seconds = alternate(runs, args.rounds, clock=time.process_time)
    written_out_name, fused_name, *_ = runs
    on_reference = summarise(seconds, written_out_name, args.steps)  # img_s here: steps per second
    on_cam = summarise(seconds, fused_name, args.steps)
    print(f"{args.size} px, batch {args.batch}, {args.rounds} rounds of {args.steps} steps, 1 thread of {cpu_model()}")
    print(f"{'':36} {'CPU ms/step':>11} {'speed-up on the reference':>26} {'cam step / step':>16}")
    for name in runs:
        print(f"{name:36} {1000 / on_reference[name]['img_s']:11.1f} "
              f"{on_reference[name]['ratio']:25.2f}x {on_cam[name]['ratio']:16.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
