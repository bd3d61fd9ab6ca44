"""Peak memory of the commands on the bad inputs of issue 22, each in a fresh process (`anime_avatar.cli`).

Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/input_limits.py [--json PATH]` (about 2 minutes on 2 cores).
Each case runs `python -m anime_avatar.cli ...` in a temporary folder; its peak resident set size comes from
`os.wait4` (the child's own `ru_maxrss`). The inputs are made by another process first: Linux carries the
parent's peak over to a forked child, so the parent stays small. The stylizer is untrained, built at
params.yaml's `stylize` sizes (the memory of a trained one is the same); the translator is the one that ships
with the package. Before the fix, the pixel-budget cases went past 8 GiB within a minute and the others ended in
tracebacks or refusals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT_MIB = 2048  # what every case must stay under


def make_inputs(work: Path) -> None:
    """The stylizer, a face, a style, the 20000x2 strip, a 12000x9000 phone photo with a face, a GIF, folders."""
    import torch
    from PIL import Image
    from skimage import data

    from anime_avatar.style.features import LAYERS, build_features
    from anime_avatar.style.model_file import save_stylizer
    from anime_avatar.style.nets import FusionHead, fusion_config
    from tests.conftest import params_with

    cfg = params_with().stylize
    scales = LAYERS["inception"].fusion_scales
    encoder = build_features("inception", scales)
    torch.manual_seed(0)
    heads = {m: FusionHead(fusion_config(m, encoder, scales, cfg.key_dim, cfg.max_keys, cfg.decoder_width))
             for m in ("attention", "adain")}  # fmt: skip
    save_stylizer(work / "stylizer.pt", heads, step=0, image_size=cfg.image_size)
    astronaut = Image.fromarray(data.astronaut())
    astronaut.save(work / "face.png")
    Image.fromarray(data.chelsea()).save(work / "style.jpg")
    Image.new("RGB", (20000, 2), (90, 140, 200)).save(work / "strip.png")  # about 200 bytes
    phone = Image.new("RGB", (12000, 9000), (120, 110, 100))
    phone.paste(astronaut.resize((8000, 8000), Image.Resampling.BILINEAR), (2000, 500))  # a face 1,450 px wide
    phone.save(work / "phone.jpg", quality=85)
    del phone
    frames = [astronaut.resize((256, 256)), Image.new("RGB", (256, 256), (0, 255, 0))]
    frames[0].save(work / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    (work / "faces").mkdir()
    for i in range(3):
        astronaut.resize((300 + 20 * i, 300)).save(work / "faces" / f"face{i}.png")
    (work / "faces" / "broken.png").write_text("not an image")
    (work / "A.png").mkdir()
    (work / "FILE").write_text("kept")
    (work / "existing.png").write_bytes(b"kept")


STYLE = ["--method", "network", "--model", "stylizer.pt"]
CASES: list[tuple[str, list[str]]] = [
    ("stylize --size 100000", ["stylize", "--content", "face.png", "--style", "style.jpg", "--out", "o.png",
                               "--size", "100000", *STYLE]),
    ("avatar --size 100000", ["avatar", "--photo", "face.png", "--out", "o.png", "--size", "100000"]),
    ("stylize, 20000x2 style (205 bytes)", ["stylize", "--content", "face.png", "--style", "strip.png",
                                            "--out", "s1.png", *STYLE]),
    ("stylize, 20000x2 content", ["stylize", "--content", "strip.png", "--style", "style.jpg", "--out", "s2.png",
                                  *STYLE]),
    ("avatar --method network --no-detect, 20000x2 style", ["avatar", "--photo", "face.png", "--style", "strip.png",
                                                            "--out", "a1.png", "--no-detect", *STYLE]),
    ("translate --content 20000x2", ["translate", "--content", "strip.png", "--out", "t1.png"]),
    ("avatar --method translate --no-detect, 20000x2 photo", ["avatar", "--photo", "strip.png", "--no-detect",
                                                              "--out", "a2.png"]),
    ("stylize --out A.png (a folder)", ["stylize", "--content", "face.png", "--style", "style.jpg", "--out", "A.png",
                                        *STYLE]),
    ("avatar --out FILE/a.png", ["avatar", "--photo", "face.png", "--out", "FILE/a.png"]),
    ("stylize --content DIR --out existing-file", ["stylize", "--content", "faces", "--style", "style.jpg",
                                                   "--out", "existing.png", *STYLE]),
    ("avatar (translate), 12000x9000 JPEG with a face", ["avatar", "--photo", "phone.jpg", "--out", "a3.png"]),
    ("avatar --method network, 12000x9000 JPEG", ["avatar", "--photo", "phone.jpg", "--style", "style.jpg",
                                                  "--out", "a4.png", *STYLE]),
    ("stylize --content 12000x9000 JPEG", ["stylize", "--content", "phone.jpg", "--style", "style.jpg",
                                           "--out", "s3.png", *STYLE]),
    ("translate --content 12000x9000 JPEG", ["translate", "--content", "phone.jpg", "--out", "t2.png"]),
    ("stylize --content animated GIF", ["stylize", "--content", "anim.gif", "--style", "style.jpg", "--out", "s4.png",
                                        *STYLE]),
    ("stylize --content DIR, one unreadable of 4", ["stylize", "--content", "faces", "--style", "style.jpg",
                                                    "--out", "styled", *STYLE]),
    ("translate --content DIR, one unreadable of 4", ["translate", "--content", "faces", "--out", "translated"]),
    ("reference: stylize, 512x512 content at the default --size 256", ["stylize", "--content", "face.png",
                                                                      "--style", "style.jpg", "--out", "s5.png",
                                                                      *STYLE]),
    ("reference: the same at --size 768 (the largest)", ["stylize", "--content", "face.png", "--style", "style.jpg",
                                                          "--out", "s6.png", "--size", "768", *STYLE]),
]  # fmt: skip


def run_case(work: Path, argv: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "anime_avatar.cli", "--params", str(ROOT / "params.yaml"), *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    lines = [line for line in err.splitlines() if " WARNING " in line or " ERROR " in line or "error:" in line]
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "peak_mib": round(usage.ru_maxrss / 1024),
        "seconds": round(time.perf_counter() - start, 1),
        "said": [line.split(": ", 1)[-1] if " WARNING " in line or " ERROR " in line else line for line in lines],
        "traceback": "Traceback" in err,
        "stdout": out.strip()[-200:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--make-inputs", type=Path, help=argparse.SUPPRESS)  # the child that makes them
    args = parser.parse_args()
    if args.make_inputs:
        make_inputs(args.make_inputs)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="input-limits-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, __file__, "--make-inputs", str(work)], check=True)
        for name, argv in CASES:
            result = {"case": name, **run_case(work, argv)}
            results.append(result)
            flag = "" if result["peak_mib"] < LIMIT_MIB and not result["traceback"] else "  <-- OVER 2 GiB / TRACEBACK"
            print(f"{name:62s} exit {result['exit']:3d}  {result['peak_mib']:5d} MiB  {result['seconds']:5.1f} s{flag}")
            for line in result["said"]:
                print(f"    {line[:160]}")
    if args.json:
        args.json.write_text(json.dumps({"os_load": os.getloadavg(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
