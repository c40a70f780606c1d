#!/usr/bin/env bash
# Prepare what benchmarks/gpu_study.sh needs on a lent GPU machine, which has PyTorch, Lightning,
# torchmetrics, matplotlib and SciPy but no Hydra and no network (../.library/device/KINDS.md):
#   .whl/       Hydra's wheels (pure Python); fer_sweep itself travels as the working tree
#   .devdata/   FER2013 as fer2013.txz
# Both folders are git-ignored: they travel with the device tool's `carry`, never into the repository.
#
# The device tool sends the working tree and the carried folders, at most 64 MiB together.  FER2013's
# 35,887 JPEGs take 53 MB as a .tgz; each is first rewritten by `jpegtran -copy none -optimize`
# (Debian's libjpeg-turbo-progs), which keeps the DCT coefficients, so every image decodes to the same
# pixels (checked below with OpenCV, as fer_sweep reads them), and xz packs them into about 49 MB.
#
#   bash benchmarks/gpu_prepare.sh            # then, with the device tool, one call:
#   run(command="LAUNCHER=packed GRID_ONLY=1 DEADLINE=480 bash benchmarks/gpu_study.sh",
#       carry=[".whl", ".devdata"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${FER2013_ROOT:-$(cd .. && pwd)/shared/data/fer2013}
PY=${PY:-python3}
[ -d "$ROOT/train" ] || { echo "gpu_prepare: no FER2013 image folders at $ROOT (set FER2013_ROOT)" >&2; exit 1; }
command -v jpegtran >/dev/null || { echo "gpu_prepare: jpegtran is missing (apt-get install libjpeg-turbo-progs); without it the data does not fit the 64 MiB a call may carry" >&2; exit 1; }
rm -rf .whl .devdata && mkdir -p .whl .devdata
$PY -m pip download -q --no-deps --only-binary=:all: -d .whl "hydra-core==1.3.2" "omegaconf==2.3.0" "hydra-joblib-launcher==1.2.0"
$PY -m pip download -q --no-deps -d .whl "antlr4-python3-runtime==4.9.3"  # a source archive only: built here into a wheel
for sdist in .whl/*.tar.gz; do [ -e "$sdist" ] && $PY -m pip wheel -q --no-deps -w .whl "$sdist" && rm "$sdist"; done
STAGE=$(mktemp -d); trap 'rm -rf "$STAGE"' EXIT
NAME=$(basename "$ROOT")
(cd "$(dirname "$ROOT")" && find "$NAME" -type d -exec mkdir -p "$STAGE/{}" \; && find "$NAME" -type f ! -name "*.jpg" -exec cp {} "$STAGE/{}" \; \
  && find "$NAME" -name "*.jpg" -print0 | xargs -0 -P2 -n 500 sh -c 'for x; do jpegtran -copy none -optimize "$x" > "$0/$x"; done' "$STAGE")
$PY - "$ROOT" "$STAGE/$NAME" <<'PYEOF'
import os, sys
import cv2, numpy as np
src, dst = sys.argv[1:3]
n = 0
for d, _, files in os.walk(src):
    for f in files:
        if f.endswith(".jpg"):
            a = cv2.imread(os.path.join(d, f), cv2.IMREAD_GRAYSCALE)
            b = cv2.imread(os.path.join(dst, os.path.relpath(os.path.join(d, f), src)), cv2.IMREAD_GRAYSCALE)
            if a is None or b is None or not np.array_equal(a, b):
                sys.exit(f"gpu_prepare: {os.path.join(d, f)} decodes differently after jpegtran; expected the same pixels")
            n += 1
print(f"gpu_prepare: {n} images re-packed losslessly (same pixels)")
PYEOF
tar cf - -C "$STAGE" "$NAME" | xz -9e -T2 > .devdata/fer2013.txz
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carry=$(du -cb .whl .devdata | tail -1 | cut -f1)
total=$((tree + carry)); limit=$((64 * 1024 * 1024))
echo "gpu_prepare: working tree $((tree / 1024)) KiB + .whl/.devdata $((carry / 1024)) KiB = $((total / 1024)) KiB of the $((limit / 1024)) KiB a call may carry"
[ "$total" -le "$limit" ] || { echo "gpu_prepare: too much to travel in one call; carry .devdata alone, or leave the data out (packed_speed.py needs none)" >&2; exit 1; }
