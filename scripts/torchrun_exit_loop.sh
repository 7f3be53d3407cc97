#!/usr/bin/env bash
# Run a tiny two-process gloo `harness run` N times under torchrun and count the runs that do
# not exit cleanly (a process aborted at exit: "terminate called without an active exception").
# The check behind harness.train.replica.shutdown's garbage collection; a flake, so counted.
#
#   scripts/torchrun_exit_loop.sh [N]     (default 24; about 4 s a run on 2 CPU cores)
set -uo pipefail

N=${1:-24}
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/exitloop.XXXXXX")
cat >"$WORK/ddp.yaml" <<'YAML'
name: ddp
dataset: {name: synthetic, train_size: 256, test_size: 128, augment: true}
models: {tiny: {name: small_cnn, width: 4}}
optimizers: {momentum: {kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {epochs: 3, shape: step, milestones: [1, 2], factor: 2, batch_size: 48}
schedules: {hybrid: {realization: hybrid, batch_drops: 1}}
training: {ghost_batch_size: 16, precision: fp64}
execution: {max_micro_batch: 16, eval_batch_size: 48}
experiments: [{name: ddp, optimizers: [momentum], schedules: [hybrid], seeds: [0]}]
YAML
fails=0
for i in $(seq 1 "$N"); do
    OMP_NUM_THREADS=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" timeout 300 \
        "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m harness run \
        "$WORK/ddp.yaml" --results "$WORK/r$i" --device cpu >"$WORK/log$i" 2>&1
    rc=$?
    if [ "$rc" != 0 ] || grep -q "terminate called" "$WORK/log$i"; then
        fails=$((fails + 1))
        echo "run $i: exit $rc ($(grep -m1 'terminate called' "$WORK/log$i" || echo 'see its log'))"
    fi
done
echo "$fails of $N two-process runs did not exit cleanly (logs in $WORK)"
[ "$fails" = 0 ]
