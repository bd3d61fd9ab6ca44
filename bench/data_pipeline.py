"""Data-stage benchmark: throughput of rendering and detection, parallel speed-up, and recall.

Run: `make bench` (or `.venv/bin/python bench/data_pipeline.py --images 120`; `--images 2000` for the
2,000-image synthetic set). Every speed is printed with its ratio to a reference run in the same process
(one worker), so numbers compare across machines. Detection is also timed over the real illustrations in
``--illustrations`` (../shared/data/illustrations by default; skipped when absent), for each detector.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anime_avatar.core.fsutil import sha256_file  # noqa: E402
from anime_avatar.core.params import load_params  # noqa: E402
from anime_avatar.data.detection import FileJob  # noqa: E402
from anime_avatar.data.executors import local_results  # noqa: E402
from anime_avatar.data.images import IMAGE_SUFFIXES  # noqa: E402
from anime_avatar.data.synthetic import render_illustration  # noqa: E402
from tests.test_detection import iou  # noqa: E402

CASCADE = ROOT.parent / "shared" / "models" / "lbpcascade_animeface.xml"
ILLUSTRATIONS = ROOT.parent / "shared" / "data" / "illustrations"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def detect_params(name: str):  # -> DetectParams
    changes = {"detector": name, "cascade_path": str(CASCADE) if name == "lbp" else ""}
    return load_params(ROOT / "params.yaml", {"detect": changes}).detect


def bench_real_illustrations(folder: Path) -> None:
    """images/s of each detector over real illustrations: all cores against one worker, same jobs."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    jobs = [FileJob(str(p.relative_to(folder)), str(p), sha256_file(p)) for p in files]
    for name in ["animeface", "none"] + (["lbp"] if CASCADE.is_file() else []):
        params = detect_params(name)
        one, t1 = timed(lambda p=params: list(local_results(jobs, p.model_copy(update={"workers": 1}))))
        many, tn = timed(lambda p=params: list(local_results(jobs, p.model_copy(update={"workers": 0}))))
        assert [r.crops for r in one] == [r.crops for r in many]
        faces = sum(len(r.crops) for r in one)
        print(f"real {name:9s} {len(jobs) / tn:7.2f} img/s all cores, {len(jobs) / t1:6.2f} img/s one "
              f"(ratio {t1 / tn:4.2f}x); {faces} faces in {len(jobs)} illustrations from {folder}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--illustrations", type=Path, default=ILLUSTRATIONS, help="real images to detect faces in")
    args = parser.parse_args()
    if args.illustrations.is_dir():
        bench_real_illustrations(args.illustrations)
    else:
        print(f"{args.illustrations} is absent: detection on real illustrations skipped")

    illustrations, seconds = timed(lambda: [render_illustration(args.seed, i) for i in range(args.images)])
    print(f"render      {args.images / seconds:7.1f} img/s (1 process, 512x512)")
    truth = [ill.face_boxes for ill in illustrations]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i, ill in enumerate(illustrations):
            path = Path(tmp) / f"{i}.png"
            ill.image.save(path)
            jobs.append(FileJob(path.name, str(path), f"{i:064x}"))
        detectors = ["animeface"] + (["lbp"] if CASCADE.is_file() else [])
        for name in detectors:
            params = detect_params(name)
            one, t1 = timed(lambda p=params: list(local_results(jobs, p.model_copy(update={"workers": 1}))))
            many, tn = timed(lambda p=params: list(local_results(jobs, p.model_copy(update={"workers": 0}))))
            assert [r.crops for r in one] == [r.crops for r in many]
            found = total = 0
            for boxes, result in zip(truth, one, strict=True):
                for t in boxes:
                    total += 1
                    found += any(iou(t, c.box) >= 0.5 for c in result.crops)
            print(
                f"detect {name:9s} {len(jobs) / tn:7.1f} img/s all cores, {len(jobs) / t1:6.1f} img/s one "
                f"(ratio {t1 / tn:4.2f}x); recall {found / total:.3f} of {total} faces (IoU >= 0.5)"
            )


if __name__ == "__main__":
    main()
