"""Peak memory of the GAN's training loop on a large training set: the set read in place (memory-mapped shards,
each batch gathered from them: what the train stage does since 2026-12-07) against one copy of it in memory (what
it did before). Each way runs in its own process (peak RSS from getrusage) for a few steps of a small net.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_memory.py --images 20000 --side 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = """
import resource, sys, numpy as np
sys.path.insert(0, {root!r})
from pathlib import Path
from anime_avatar.artifacts.trainset import load_train_images, open_train_images
from anime_avatar.core.params import load_params, merge, parse_params, read_params_file
from anime_avatar.gan.training import train
raw = merge(read_params_file(Path({root!r}) / "params.yaml"), {{
    "model": {{"arch": "dcgan", "channels": 4, "z_dim": 16, "attention": []}},
    "train": {{"steps": 3, "batch_size": 16, "device": "cpu", "amp": False, "sample_every": 1000,
               "checkpoint_every": 1000, "log_every": 1, "threads": 1}}}})
params = parse_params(raw)
folder = Path({folder!r})
images = open_train_images(folder) if {in_place} else np.asarray(load_train_images(folder, mmap=False))
train(params.model, params.train, images, folder.parent / "{name}.pt")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from anime_avatar.artifacts.trainset import Variant, write_train_set

    with tempfile.TemporaryDirectory(prefix="train-memory-") as tmp:
        folder = Path(tmp) / "train"
        folder.mkdir()
        rng = np.random.default_rng(0)
        images = (rng.integers(0, 256, (args.side, args.side, 3), dtype=np.uint8) for _ in range(args.images))
        write_train_set(folder, images, [Variant(str(i), 0) for i in range(args.images)], 4096, 1)
        set_mib = args.images * args.side * args.side * 3 / 2**20
        results = {"images": args.images, "side": args.side, "set_mib": round(set_mib)}
        for name, in_place in (("whole_copy", False), ("in_place", True)):
            code = RUN.format(root=str(ROOT), folder=str(folder), in_place=in_place, name=name)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            results[f"{name}_peak_mib"] = round(int(out.stdout.split()[-1]) / 1024)
            print(f"{name}: peak RSS {results[f'{name}_peak_mib']} MiB (training set {set_mib:.0f} MiB)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
