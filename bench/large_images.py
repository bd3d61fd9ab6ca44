"""Peak memory of face detection on very large images (8000x8000), per detector and worker count.

Run: `.venv/bin/python bench/large_images.py` (about a minute). Each configuration runs in a
fresh process that detects ``workers`` copies of the image through the detect stage's own
executor (``detect.workers`` processes); the peak resident set size of the largest worker and of
the parent come from ``getrusage``. The baseline row is the same process before detection
(imports only), so the difference is what detection itself costs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASCADE = ROOT.parent / "shared" / "models" / "lbpcascade_animeface.xml"


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def make_image(path: Path, side: int) -> None:
    from PIL import Image

    from anime_avatar.data.synthetic import render_illustration

    small = render_illustration(3, 0, size=2048).image
    small.resize((side, side), Image.Resampling.BICUBIC).save(path, quality=92)


def child(image: str, detector: str, workers: int) -> None:
    from anime_avatar.data.detection import FileJob
    from anime_avatar.data.executors import detect_results
    from tests.conftest import section

    changes = {"detector": detector, "workers": workers}
    if detector == "lbp":
        changes["cascade_path"] = str(CASCADE)
    params = section("detect", **changes)
    jobs = [FileJob(f"copy{i}", image, f"{i:064d}") for i in range(max(1, workers))]
    before = peak_mib(resource.RUSAGE_SELF)
    start = time.perf_counter()
    faces = sum(len(r.crops) for r in detect_results(jobs, params))
    print(json.dumps({
        "imports_mib": round(before), "parent_mib": round(peak_mib(resource.RUSAGE_SELF)),
        "largest_worker_mib": round(peak_mib(resource.RUSAGE_CHILDREN)), "faces": faces,
        "seconds": round(time.perf_counter() - start, 1),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--child", nargs=3, metavar=("IMAGE", "DETECTOR", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    detectors = ["animeface", "none"] + (["lbp"] if CASCADE.is_file() else [])
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / f"large-{args.side}.jpg"
        make_image(image, args.side)
        print(f"{args.side}x{args.side} JPEG ({image.stat().st_size >> 20} MiB)")
        print(f"{'detector':10} {'workers':>7} {'imports MiB':>11} {'parent MiB':>10} {'worker MiB':>10} "
              f"{'faces':>5} {'s':>6}")  # fmt: skip
        for detector in detectors:
            for workers in (1, 2):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(image), detector, str(workers)],
                    capture_output=True, text=True, cwd=ROOT,
                )  # fmt: skip
                if out.returncode != 0:
                    print(f"{detector:10} {workers:>7} failed: {out.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{detector:10} {workers:>7} {r['imports_mib']:>11} {r['parent_mib']:>10} "
                      f"{r['largest_worker_mib']:>10} {r['faces']:>5} {r['seconds']:>6}")  # fmt: skip


if __name__ == "__main__":
    main()
