"""The style-transfer methods on the translation benchmark's photos: what restyling a selfie after an anime
image does, in the numbers of bench/translate.py (KID x100 and FID at 128 px against testB, the anime
detector's face rate, edge SSIM against the photo, seconds per avatar).

Each of selfie2anime's 100 testA photos is stylised at --size px in the style of one anime face (--style,
default trainB's first image in name order) by each --methods entry: ``adain`` and ``attention`` (the nets of
--stylizer, trained by the stylize_train stage) and ``gatys-inception-softmax`` (optimisation, params.yaml's
gatys section; --gatys-photos of the photos only, as it takes seconds per image). Rows are appended to
``<out>/styles.csv``, each naming what made it: the stylizer file (its sha256's first 12 digits; gatys has
none), the style image and the size.

    OMP_NUM_THREADS=1 .venv/bin/python bench/translate_styles.py --stylizer models/stylizer.pt
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from translate import EVAL_SIZE, CachedFeatures, anime_face_finder, load_eval_sets  # noqa: E402

from anime_avatar.core.fsutil import sha256_file  # noqa: E402
from anime_avatar.core.params import load_params  # noqa: E402
from anime_avatar.data.image_sets import image_files, read_image  # noqa: E402
from anime_avatar.metrics.features import extract_features  # noqa: E402
from anime_avatar.translate.evaluation import evaluate_translator  # noqa: E402

METRICS = ["kid_x100", "fid", "face_rate", "structure"]
COLUMNS = ["method", "stylizer", "style", "size", "photos", *METRICS, "seconds_per_avatar"]


def style_translator(method, style, size: int):  # -> anime_avatar.translate.evaluation.Translator
    """A style method as a Translator: each photo (uint8 HWC) restyled after ``style`` at ``size`` px."""
    from PIL import Image

    from anime_avatar.style.transfer import stylize_image

    def run(photos: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(stylize_image(method, Image.fromarray(p), style, size).convert("RGB"))
                         for p in photos])  # fmt: skip

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/photos/selfie2anime")
    parser.add_argument("--stylizer", type=Path, default=ROOT / "models/stylizer.pt")
    parser.add_argument("--style", type=Path, help="the anime style image (default: trainB's first)")
    parser.add_argument("--methods", default="adain,attention,gatys-inception-softmax")
    parser.add_argument("--size", type=int, default=EVAL_SIZE)
    parser.add_argument("--gatys-photos", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/translate")
    args = parser.parse_args()
    from anime_avatar.style.transfer import make_method

    style_path = args.style or image_files(args.data / "trainB")[0]
    style = read_image(style_path, "--style")
    sets = load_eval_sets(args.data, args.size)
    features = CachedFeatures(lambda images: extract_features(images, progress=False, backend="auto"))
    finds_face = anime_face_finder()
    gatys = load_params(ROOT / "params.yaml").gatys
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "styles.csv"
    new = not path.is_file()
    if not new and path.read_text().splitlines()[:1] != [",".join(COLUMNS)]:
        sys.exit(f"{path} has other columns (an older version of this script): move it away, or name another --out")
    stylizer = f"{args.stylizer.name}@{sha256_file(args.stylizer)[:12]}" if args.stylizer.is_file() else ""
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for name in args.methods.split(","):
            method = (
                make_method(name, gatys=gatys)
                if name.startswith("gatys")
                else make_method(name, stylizer=args.stylizer)
            )
            photos = sets.photos[: args.gatys_photos] if name.startswith("gatys") else sets.photos
            metrics, _ = evaluate_translator(style_translator(method, style, args.size), args.size, photos, sets.anime,
                                             sets.reference, EVAL_SIZE, features.scorer, finds_face, 3)  # fmt: skip
            row = {"method": name, "stylizer": "" if name.startswith("gatys") else stylizer,
                   "style": style_path.name, "size": args.size, "photos": len(photos),
                   **{k: metrics["translated"][k] for k in METRICS},
                   "seconds_per_avatar": metrics["seconds_per_avatar"]}  # fmt: skip
            writer.writerow(row)
            f.flush()
            print(row, flush=True)
    print(f"style: {style_path}; rows appended to {path}")


if __name__ == "__main__":
    main()
