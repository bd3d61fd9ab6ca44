#!/usr/bin/env bash
# The next borrowed-GPU translator runs, prepared and tested on the CPU so that a session lent a GPU spends its
# device minutes training, not debugging (docs: README, "How the shipped translator was made").
#
#   bash bench/gpu_translate.sh prepare    # here: .gpudata/ (selfie2anime train sets) and .whl/ (the packages
#                                          # the GPU image lacks), both git-ignored through .git/info/exclude
#   bash bench/gpu_translate.sh run        # there: device run with carry [".gpudata", ".whl"], timeout_s 570
#
# `run` trains two translators at once on the one GPU (its steps are bound by kernel launches, not arithmetic,
# so two processes share it at little cost), each for MINUTES (default 8) of wall clock:
#   b64:  128 px, batch 64, with the weight average (translate.ema 0.999: a higher face rate on the CPU
#         benchmark, README): the candidate to ship (the shipped one is batch 16, 2,800 steps, 6 minutes);
#   s256: 256 px, batch 16: the 256 px code path and its speed. The shared selfie2anime train sets are 128 px
#         re-encodes, so this one learns from upscaled images: a check of the path, not a quality run.
# Each writes $OUT/<name>/{translator.pt,train.json,translate_losses.csv,samples.png}; score them here with
# translate_eval and ship the better with bench/ship_translator.py. EXTRA adds arguments to both (a CPU smoke
# test: PY=.venv/bin/python OUT=/tmp/t MINUTES=0.2 EXTRA="--set translate.channels=4 --probe-steps 22").
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local shared=${SHARED:-../shared/data/photos/selfie2anime}
    rm -rf .gpudata .whl  # made afresh: no file of an earlier preparation stays
    grep -qx '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >>.git/info/exclude
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    # The translator's own reader (centre crop, resize) at 128 px, saved as JPEG quality 87: both domains
    # (about 36 MB) fit the device's 64 MiB transfer limit.
    .venv/bin/python - "$shared" <<'PY'
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, ".")
from anime_avatar.ops.data_versions import path_version
from anime_avatar.translate.data import load_domain

for domain in ("trainA", "trainB"):
    out = Path(".gpudata") / domain
    out.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(load_domain(str(Path(sys.argv[1]) / domain), domain, 128, 0)):
        Image.fromarray(pixels).save(out / f"{i:04d}.jpg", "JPEG", quality=87)
    print(domain, path_version(out))
PY
    # The GPU image has torch, numpy, Pillow, PyYAML and tqdm; the trainer also needs these, at the venv's versions.
    local wanted='^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions|imagehash)=='
    # shellcheck disable=SC2046  # one argument per pinned package
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        $(.venv/bin/pip freeze | grep -iE "$wanted")
    du -sh --apparent-size .gpudata .whl
}

run() {
    local py=${PY:-python3} minutes=${MINUTES:-8}
    if [ -z "${PY:-}" ]; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site
        nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    fi
    export PYTHONUNBUFFERED=1
    local common=(--photos .gpudata/trainA --anime .gpudata/trainB --minutes "$minutes" --set translate.channels=32
                  --set translate.checkpoint_every=5000 --set translate.sample_every=5000 --set translate.log_every=100)
    # shellcheck disable=SC2086  # EXTRA is a list of arguments
    train() {
        local name=$1
        shift
        "$py" bench/train_translator.py "${common[@]}" --out "$OUT/$name" "$@" ${EXTRA:-} 2>&1 |
            tr '\r' '\n' | grep --line-buffered -v -e '^translator:' -e '^$' | sed -u "s/^/[$name] /"
    }
    train b64 --set translate.image_size=128 --set translate.batch_size=64 --set translate.ema=0.999 &
    train s256 --set translate.image_size=256 --set translate.batch_size=16 &
    wait
    ls -la "$OUT"/*
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash bench/gpu_translate.sh prepare|run" >&2; exit 2 ;;
esac
