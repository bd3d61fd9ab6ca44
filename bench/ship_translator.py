"""Ship a translator that a workspace trained and evaluated: copy its models/translator.pt into the package
(anime_avatar/translate/shipped/) with a JSON record of how it was made and what it scored.

    .venv/bin/python bench/ship_translator.py WORKSPACE [--name selfie2anime] [--training train.json] [--data-note TEXT]

WORKSPACE ran `translate_train` and `translate_eval` (its reports/translate.json is the score recorded). The
record holds the file's sha256, its step, the translate params it was trained with, the digests of both
domains, the evaluation's numbers and params, and the command that reproduces the file; with --training, the
train.json of bench/train_translator.py (the device, torch version and seconds of a run made off the stage).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anime_avatar.artifacts.translator import SHIPPED_TRANSLATOR, read_translator  # noqa: E402
from anime_avatar.core.fsutil import atomic_write_text  # noqa: E402
from anime_avatar.core.params import semantic_keys  # noqa: E402

MAX_BYTES = 20 << 20


# What the training code did before a key existed, for a record made then: without these, the command would train
# with today's defaults (translate.ema 0.999 would save the weight average, not the weights shipped).
BEFORE_THE_KEY = {"ema": 0.0, "mask_weight": 0.0}  # (mask_min_drawn does nothing at mask_weight 0)


def reproduce_command(params: dict) -> str:
    """``dvc exp run`` with every translate key that changes the output set to its value in ``params``, so that
    the command stays true when a default in params.yaml changes later (as translate.ema's did); a key newer
    than the record gets the value that reproduces what the code did before it (:data:`BEFORE_THE_KEY`)."""
    names = [key.removeprefix("translate.") for key in semantic_keys("translate")]
    values = {**BEFORE_THE_KEY, **params}
    sets = " ".join(f"-S translate.{name}={values[name]}" for name in names if name in values)
    return f"dvc exp run translate_train {sets}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--name", default=SHIPPED_TRANSLATOR.stem)
    parser.add_argument("--training", type=Path, help="train.json of bench/train_translator.py, if it made the file")
    parser.add_argument("--data-note", default="", help="how the training folders were made from the dataset")
    args = parser.parse_args()
    source = args.workspace / "models/translator.pt"
    target = SHIPPED_TRANSLATOR.with_name(f"{args.name}.pt")
    if source.stat().st_size > MAX_BYTES:
        sys.exit(f"{source} is {source.stat().st_size / 2**20:.1f} MiB: the package ships at most 20 MiB")
    payload = read_translator(source)  # weights only: refuses anything else
    info = payload.get("info", {})
    evaluation = json.loads((args.workspace / "reports/translate.json").read_text())
    eval_params = yaml.safe_load((args.workspace / "params.yaml").read_text())["translate_eval"]
    training = (
        {k: v for k, v in json.loads(args.training.read_text()).items() if k != "params"} if args.training else {}
    )
    record = {
        "file": target.name,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "bytes": source.stat().st_size,
        "step": int(payload["step"]),
        "config": payload["config"],
        "translate_params": info.get("params", {}),
        "domains": info.get("domains", {}),
        "evaluation": evaluation,
        "evaluation_params": {k: v for k, v in eval_params.items() if k not in ("device", "threads")},
        "reproduce": reproduce_command(info.get("params", {})),
        **({"training": training} if training else {}),
        **({"data_note": args.data_note} if args.data_note else {}),
        "data_licence": "selfie2anime (U-GAT-IT, Kim et al. 2020): research use only; its selfies are all of women",
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    atomic_write_text(target.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(f"{target} ({record['bytes'] / 2**20:.1f} MiB, step {record['step']}) and {target.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
