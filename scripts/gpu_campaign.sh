#!/usr/bin/env bash
# One ten-minute command of a GPU campaign: continue the suite's cells from the state an
# earlier command left, train as many as fit, and pack the new state into OUTDIR.
#
#   scripts/gpu_campaign.sh OUTDIR
#
# A campaign is a chain of such commands on machines that keep nothing between them and
# reach no network. What travels in (an ignored folder of the checkout, carried):
#   .gpu/wheels/          cp312 wheels the image lacks: pydantic & co (/work/shared/gpu/README.md)
#                         and ruamel.yaml, which the suite reader needs and the image lacks:
#                         `pip download --no-deps --only-binary=:all: -d .gpu/wheels
#                         ruamel.yaml==0.19.1` (pure Python; its optional C loader is unused)
#   .gpu/cifar10-jpeg/    the CIFAR-10 pack and its unpack.py
#   .gpu/state/           the previous command's OUTDIR files (absent on the first command)
# What comes out, in OUTDIR (at most 8 files, each under 16 MiB):
#   state.tar.gz.part-aa ...   results folder: runs/curves rows, bench rows, checkpoints of
#                              paused cells, logs (split -b 15M; `cat parts | tar -xz` joins)
#   campaign.log               this command's output
# To continue: copy OUTDIR's files into .gpu/state/ of the checkout and run again.
#
# Order: pip install (--target /tmp/site), unpack CIFAR-10, unpack the carried state, bench
# (first command only), then cells with the fewest updates first, each `harness run --only`
# with --stop-after set to what is left of the budget, so a cell that does not fit pauses at
# an epoch boundary and the next command resumes it. Finished cells are skipped by
# `harness run` itself before any data loads.
#
# Settings (environment):
#   CAMPAIGN_SUITE    suite file (default suites/cifar.yaml)
#   CAMPAIGN_BUDGET   seconds for this command, packing excluded (default 540: 9 minutes)
#   CAMPAIGN_MARGIN   seconds kept for packing (default 30)
#   CAMPAIGN_DEVICE   --device for run and bench (default cuda)
#   CAMPAIGN_STATE    folder with the previous OUTDIR files (default .gpu/state)
#   CAMPAIGN_BENCH    0 to skip the bench (default 1)
#   CAMPAIGN_BENCH_ARGS  arguments of `harness bench` (default: wrn16_4 bf16 at 128,512,5120)
#   CAMPAIGN_ONLY     a pattern passed to `harness plan --only` to restrict the cells
#   CAMPAIGN_STOP_AFTER  a smaller --stop-after per cell (the dry-run test: one epoch a cell)
#   HARNESS_DATA      a folder already holding cifar-10-batches-py (skips the unpack)
set -euo pipefail

OUTDIR=${1:?usage: scripts/gpu_campaign.sh OUTDIR}
START=$(date +%s)
SUITE=${CAMPAIGN_SUITE:-suites/cifar.yaml}
BUDGET=${CAMPAIGN_BUDGET:-540}
MARGIN=${CAMPAIGN_MARGIN:-30}
DEVICE=${CAMPAIGN_DEVICE:-cuda}
STATE=${CAMPAIGN_STATE:-.gpu/state}
BENCH=${CAMPAIGN_BENCH:-1}
BENCH_ARGS=${CAMPAIGN_BENCH_ARGS:-"--model wrn16_4 --precision bf16 --batch-sizes 128,512,5120"}
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/campaign.XXXXXX")
RESULTS=$WORK/results

mkdir -p "$OUTDIR" "$RESULTS"
LOG=$OUTDIR/campaign.log
exec > >(tee -a "$LOG") 2>&1

say() { echo "[campaign $(($(date +%s) - START))s] $*"; }
left() { echo $((BUDGET - MARGIN - ($(date +%s) - START))); }

# Dependencies the image lacks. A machine that already has them (the CPU dry run) skips this.
if ! "$PYTHON" -c "import pydantic" 2>/dev/null; then
    say "installing carried wheels into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
fi
export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH}

if [ -z "${HARNESS_DATA:-}" ] || [ ! -e "$HARNESS_DATA/cifar-10-batches-py/data_batch_1" ]; then
    say "unpacking CIFAR-10"
    "$PYTHON" .gpu/cifar10-jpeg/unpack.py /tmp/data/cifar-10-batches-py
    export HARNESS_DATA=/tmp/data
fi

first=1
if compgen -G "$STATE/state.tar.gz.part-*" >/dev/null; then
    first=0
    say "continuing from $(ls "$STATE"/state.tar.gz.part-* | wc -l) carried part(s)"
    cat "$STATE"/state.tar.gz.part-* | tar -xz -C "$RESULTS"
fi

if [ "$first" = 1 ] && [ "$BENCH" = 1 ]; then
    say "bench: $BENCH_ARGS"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    "$PYTHON" -m harness bench --device "$DEVICE" --out "$RESULTS/bench" $BENCH_ARGS ||
        say "bench failed (rows of the cells still follow)"
fi

# Cells with the fewest updates first: the most finished cells per GPU-minute.
cells=$("$PYTHON" - "$SUITE" "${CAMPAIGN_ONLY:-}" <<'EOF'
import json, subprocess, sys
args = [sys.executable, "-m", "harness", "plan", sys.argv[1], "--json"]
if sys.argv[2]:
    args += ["--only", sys.argv[2]]
plan = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
for cell in sorted(plan["cells"], key=lambda c: (c["updates"], c["cell_id"])):
    print(cell["cell_id"])
EOF
)

for cell in $cells; do
    remaining=$(left)
    if [ "$remaining" -le 0 ]; then
        say "time is up; the remaining cells wait for the next command"
        break
    fi
    if [ -n "${CAMPAIGN_STOP_AFTER:-}" ]; then
        remaining=$CAMPAIGN_STOP_AFTER
    fi
    say "cell $cell (--stop-after $remaining)"
    "$PYTHON" -m harness run "$SUITE" --results "$RESULTS" --only "$cell" --device "$DEVICE" \
        --stop-after "$remaining" || say "cell $cell: harness run exited $? (see its row)"
done

say "packing $(du -sh "$RESULTS" | cut -f1) of results"
rm -f "$OUTDIR"/state.tar.gz.part-*
# Lock files belong to live runners, and none is left.
tar -cz -C "$RESULTS" --exclude='*.lock' . | split -b 15M - "$OUTDIR/state.tar.gz.part-"
parts=$(ls "$OUTDIR"/state.tar.gz.part-* | wc -l)
if [ "$parts" -gt 7 ]; then
    say "ERROR: $parts parts: more than 7 files plus the log; carry fewer checkpoints"
    exit 1
fi
rm -rf "$WORK"
say "done: $parts part(s) and campaign.log in $OUTDIR"
