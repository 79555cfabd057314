#!/usr/bin/env bash
# Train the detector and its cross-vendor control on a lent GPU machine in one go, from scratch:
# the generator writes parcels on most of the cores while both models train from the growing
# pool, augmented on the GPU (models/device_augment.py). Each run records its length and the
# pool's growth in its .train.json, which models/train.py replays on any device (a recipe's
# Stage(pool_record=...), or `--pool-record` for a single run). The cross-vendor control
# (train.XVENDOR) and the 3.0.0 candidate (models/candidates/) came from the first form.
#
#   OUT=dir BUDGET_S=450 models/lent_gpu.sh
#   OUT=dir BUDGET_S=250 INIT=models/runs/xray-detector-stage1.onnx LR=0.001 XVENDOR=0 \
#       models/lent_gpu.sh        (a further stage of the detector alone, from an export)
#
# Writes $OUT/detector.{onnx,train.json}, $OUT/xvendor.{onnx,train.json} and the logs.
set -euo pipefail
OUT=${OUT:?set OUT to a folder for the results}
BUDGET_S=${BUDGET_S:-450}  # training seconds of each run (each stops by 1.1 x this)
DATA=${DATA:-/tmp/lent-gpu-data}
PARCELS=${PARCELS:-200000}  # more than the runs can read: the generator is stopped after them
GEN_WORKERS=${GEN_WORKERS:-$(( $(nproc) - 4 ))}
BATCH=${BATCH:-256}
LR=${LR:-0.002}
MIN_POOL=${MIN_POOL:-1500}
INIT=${INIT:-}  # start the detector from this export (our ONNX) instead of from scratch
XVENDOR=${XVENDOR:-1}  # 0: no cross-vendor control
VERSION=${VERSION:-3.0.0}  # the detector export's version
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$DATA"
nvidia-smi -L || true
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available() and
                                torch.cuda.get_device_name(0))'

python3 -m models.synth --out "$DATA" --train "$PARCELS" --test 0 --workers "$GEN_WORKERS" \
    >/tmp/lent-gpu-gen.log 2>&1 &
gen=$!
trap 'kill $gen 2>/dev/null || true' EXIT

common=(--data "$DATA" --device-augment --limit-images "$PARCELS" --time-budget-s "$BUDGET_S"
        --batch "$BATCH" --lr "$LR" --invert-p 0.2 --min-pool "$MIN_POOL" --threads 1
        --no-evaluate --no-flips)
python3 -m models.train "${common[@]}" --out "$OUT/detector.onnx" --version "$VERSION" \
    ${INIT:+--init "$INIT"} --checkpoint-every-s 60 >"$OUT/detector.log" 2>&1 &
main=$!
status=0
if [ "$XVENDOR" != 0 ]; then
    python3 -m models.train "${common[@]}" --styles A,B --out "$OUT/xvendor.onnx" \
        --version xvendor >"$OUT/xvendor.log" 2>&1 &
    wait $! || status=$?
fi
wait $main || status=$?
kill $gen 2>/dev/null || true
echo "parcels written: $(find "$DATA/meta/train" -name '*.json' | wc -l)" | tee "$OUT/generator.log"
tail -c 2000 /tmp/lent-gpu-gen.log >>"$OUT/generator.log" || true
tail -n 5 "$OUT"/*.log
exit $status
