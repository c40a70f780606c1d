#!/usr/bin/env bash
# One prepared GPU session: the study's full grid (4 schedulers x 5 seeds x 200 epochs of
# Deep-Emotion), the project's Deep-Emotion recipe and the VGG network, all sharing one GPU,
# stopped at a deadline and packed into $OUT.  Timings go to $OUT/timing.txt.
#
#   DEADLINE=470 N_JOBS=8 bash benchmarks/gpu_study.sh           # on the GPU machine
#   SMOKE=1 DEADLINE=120 N_JOBS=2 bash benchmarks/gpu_study.sh   # a tiny CPU rehearsal
#   LAUNCHER=packed GRID_ONLY=1 DEADLINE=540 bash benchmarks/gpu_study.sh
#       the grid's 20 jobs packed into one network (hydra/launcher=packed), alone on the GPU, after
#       benchmarks/packed_speed.py (20 networks one after another vs packed, float32 and bf16);
#       timing.txt gets the pack's epochs, so a pack stopped by the deadline still gives the projection
#
# Needs: FER2013 as .devdata/fer2013.txz or .tgz (or FER2013_ROOT), and, where hydra/omegaconf are
# missing, their wheels in .whl/ (benchmarks/gpu_prepare.sh makes both); where fer_sweep is missing,
# it is taken from this working tree (copied into /tmp/site as its wheel would lay it out).
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/fer_out}; mkdir -p "$OUT"; rm -f "$OUT/timing.txt"
WORK=${WORK:-/tmp/fer_work}; rm -rf "$WORK"; mkdir -p "$WORK"
DEADLINE=${DEADLINE:-470}; N_JOBS=${N_JOBS:-8}; SMOKE=${SMOKE:-0}; LAUNCHER=${LAUNCHER:-joblib}
PY=${PY:-python3}
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$WORK/timing.txt" "$OUT/timing.txt"; }  # $OUT too: a run cut short still returns it

if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import hydra, fer_sweep" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  if ! PYTHONPATH=/tmp/site $PY -c "import fer_sweep" 2>/dev/null; then  # the package from this tree, laid out as its wheel
    mkdir -p /tmp/site/hydra_plugins && cp -r src/fer_sweep /tmp/site/ && cp -r conf /tmp/site/fer_sweep/conf && cp -r src/hydra_plugins/* /tmp/site/hydra_plugins/
  fi
  export PYTHONPATH=/tmp/site
fi
if [ -z "${FER2013_ROOT:-}" ] && { [ -f .devdata/fer2013.txz ] || [ -f .devdata/fer2013.tgz ]; }; then
  ARCHIVE=$(ls .devdata/fer2013.txz .devdata/fer2013.tgz 2>/dev/null | head -1)
  mkdir -p /tmp/fer_data
  # Python's tarfile (lzma built in): the machine may have no xz program
  $PY -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$ARCHIVE" /tmp/fer_data || { echo "gpu_study: cannot unpack $ARCHIVE" >&2; exit 1; }
  export FER2013_ROOT=/tmp/fer_data/fer2013
fi
[ -n "${FER2013_ROOT:-}" ] || { echo "gpu_study: no FER2013: set FER2013_ROOT or carry .devdata (benchmarks/gpu_prepare.sh)" >&2; exit 1; }
export FER_SWEEP_CACHE=${FER_SWEEP_CACHE:-/tmp/fer_cache} PYTHONUNBUFFERED=1
log "setup done; torch: $($PY -c 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
$PY -c "from fer_sweep.data.cache import load_fer2013; print(len(load_fer2013('$FER2013_ROOT').labels), 'images cached')" || exit 1
log "data cached"

if [ "$SMOKE" = 1 ]; then
  TRAINER="trainer=cpu"; GRID_EPOCHS=${GRID_EPOCHS:-2}; DE_EPOCHS=2; VGG_EPOCHS=1; EXTRA="data.subset=0.03 threads=1"
  GRID="scheduler=step,cosine seed=0,1"
else
  TRAINER="trainer=gpu"; GRID_EPOCHS=200; DE_EPOCHS=${DE_EPOCHS:-250}; VGG_EPOCHS=${VGG_EPOCHS:-50}  # as in conf/experiment
  EXTRA="threads=1"  # 12 processes x 2 threads oversubscribed the 16 cores
  GRID=${GRID:-experiment=scheduler_study}
  if nvidia-cuda-mps-control -d >/dev/null 2>&1; then
    if $PY -c "import torch; torch.zeros(1).cuda(); print('ok')" >/dev/null 2>&1; then log "CUDA MPS daemon started"
    else echo quit | nvidia-cuda-mps-control; log "CUDA MPS unusable here; stopped it"; fi
  else log "no CUDA MPS"; fi
  (nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 > "$WORK/nvidia_smi.csv" 2>&1 &)
fi
COMMON="$TRAINER callbacks=none logger=none $EXTRA"

if [ "$LAUNCHER" = packed ]; then
  LAUNCH="hydra/launcher=packed $( [ "$SMOKE" = 1 ] && echo hydra.launcher.pack_on_cpu=true )"
  for prec in 32 bf16; do  # each under a time limit: the grid's deadline counts from the start
    timeout 90 $PY benchmarks/packed_speed.py --k 20 --steps $( [ "$SMOKE" = 1 ] && echo "2 --warmup 1 --rounds 1 --k 2" || echo 30 ) --precision $prec --json "$OUT/packed_speed_$prec.json" 2>&1 | tee -a "$WORK/timing.txt" "$OUT/timing.txt" | tail -4
  done
  # the grid (float32) in the faster layout of the two packed_speed.py timed
  LAYOUT=$($PY -c "import json, sys; m = json.load(open(sys.argv[1]))['median_step_s']; print('model.channels_last=false' if m['packed'] < m['packed_cl'] else '')" "$OUT/packed_speed_32.json" 2>/dev/null || true)
  LAUNCH="$LAUNCH $LAYOUT"
  log "packed_speed done; grid layout: ${LAYOUT:-channels-last (model.channels_last=true)}"
else
  LAUNCH="hydra/launcher=joblib hydra.launcher.n_jobs=$N_JOBS"
fi
log "launch: grid ($GRID, $GRID_EPOCHS epochs, launcher $LAUNCHER, $N_JOBS jobs if joblib), deep_emotion_plus ($DE_EPOCHS), vgg ($VGG_EPOCHS)"
setsid $PY -m fer_sweep -m $GRID $COMMON $( [ "$SMOKE" = 1 ] && echo trainer.max_epochs=$GRID_EPOCHS ) $LAUNCH hydra.sweep.dir=$WORK/grid > "$WORK/grid.log" 2>&1 &
G=$!
D=""; V=""
[ "${GRID_ONLY:-0}" = 1 ] || {
setsid $PY -m fer_sweep experiment=deep_emotion_plus $COMMON trainer.max_epochs=$DE_EPOCHS hydra.run.dir=$WORK/deep_emotion_plus > "$WORK/deep_emotion_plus.log" 2>&1 &
D=$!
setsid $PY -m fer_sweep experiment=vgg $COMMON trainer.max_epochs=$VGG_EPOCHS $( [ "$SMOKE" = 1 ] || echo trainer.precision=bf16-mixed ) hydra.run.dir=$WORK/vgg > "$WORK/vgg.log" 2>&1 &
V=$!
}

while [ $(( $(date +%s) - T0 )) -lt "$DEADLINE" ]; do
  if ! kill -0 $G 2>/dev/null && ! kill -0 $D 2>/dev/null \
     && ! kill -0 $V 2>/dev/null; then break; fi
  cp "$WORK/grid.log" "$OUT/grid.log" 2>/dev/null  # the pack's epoch lines come back even if the call is cut short
  sleep 5
done
cp "$WORK/grid.log" "$OUT/grid.log" 2>/dev/null
# SIGTERM first: a run records itself "interrupted" (a pack also writes each job's best.ckpt), then SIGKILL what is left
for p in $G $D $V; do kill -0 $p 2>/dev/null && log "deadline: stopping pid $p (SIGTERM, then SIGKILL after 20 s)" && kill -TERM -- -$p 2>/dev/null; done
for _ in $(seq 20); do kill -0 $G 2>/dev/null || kill -0 $D 2>/dev/null || kill -0 $V 2>/dev/null || break; sleep 1; done
for p in $G $D $V; do kill -KILL -- -$p 2>/dev/null; done
pkill -KILL -f "fer_sweep" 2>/dev/null
log "training stopped; grid jobs completed: $(grep -l '"completed"' $WORK/grid/*/results.json 2>/dev/null | wc -l)"
grep -E "packed run:|epoch [0-9]+/[0-9]+:" "$WORK/grid.log" | sed -n '1p;2p;3p;$p' | tee -a "$WORK/timing.txt" >> "$OUT/timing.txt"  # a pack's pace: first and last epochs, with times

# Summaries (also for a grid cut by the deadline), slim weights, then pack for $OUT.
$PY -c "from fer_sweep.sweep.summary import write_summary; write_summary('$WORK/grid')" 2>&1 | tail -2
for run in $WORK/deep_emotion_plus $WORK/vgg $WORK/grid/*cosine*; do
  [ -f "$run/checkpoints/best.ckpt" ] && $PY -m fer_sweep.models.export "$run/checkpoints/best.ckpt" "$run/best_weights.pt" $( [[ $run == *vgg* ]] && echo --int8 )
done
find $WORK -name "*.ckpt" -delete
cp "$WORK/grid.log" "$OUT/grid.log" 2>/dev/null
tar czf "$OUT/grid.tgz" -C "$WORK" grid
[ -d "$WORK/vgg" ] && tar czf "$OUT/runs.tgz" -C "$WORK" deep_emotion_plus vgg
tar czf "$OUT/logs.tgz" -C "$WORK" $(cd $WORK && ls *.log *.csv 2>/dev/null)  # with timing.txt, grid.log and 2 JSON: at most 7 files in $OUT
log "packed: $(ls -la $OUT | tr '\n' ' ')"
