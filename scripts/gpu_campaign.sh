#!/usr/bin/env bash
# One ten-minute command of a GPU campaign: continue the suite's cells from the state an
# earlier command left, train K of them side by side on the one device under one deadline,
# and pack the new state into OUTDIR.
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
#   .gpu/commit           "SHA DIRTY" of the checkout, for the rows when the copy has no .git
# scripts/prepare_gpu.sh fills .gpu/ (docs/gpu.md: the whole runbook).
# What comes out, in OUTDIR (at most 8 files, each under 16 MiB), the pack written once after
# the bench (so a command cut short still returns its rows) and again at the end:
#   state.tar.gz.part-aa ...   results folder: runs/curves rows, bench rows, the report, the
#                              checkpoints of paused cells (a WRN-16-4 one with momentum is
#                              ~22 MB), logs (split -b 15M; `cat parts | tar -xz` joins them)
#   campaign.log               this command's output
# To continue: copy OUTDIR's files into .gpu/state/ of the checkout and run again.
#
# Order: pip install (--target /tmp/site), unpack CIFAR-10, unpack the carried state, bench
# (first command only: the harness step eager and captured beside the plain loop at the
# paper's batch sizes), then ONE `harness run --devices DEVICE --per-device K --order
# most-updates --stop-after LEFT`: K workers share the device (each capped at 1/K of its
# memory) and claim the cells with the most updates first, the long launch-bound ones that
# leave a GPU idle between kernels; every cell pauses at the last epoch boundary before the
# deadline (a checkpoint the next command resumes). Finished cells are skipped by `harness run`
# itself before any data loads. Then `harness report` and the packing.
#
# Settings (environment):
#   CAMPAIGN_SUITE    suite file (default suites/cifar.yaml)
#   CAMPAIGN_BUDGET   seconds for this command, packing excluded (default 540: 9 minutes)
#   CAMPAIGN_MARGIN   seconds kept for the report and packing (default 30)
#   CAMPAIGN_DEVICE   --devices for run, --device for bench (default cuda:0)
#   CAMPAIGN_WORKERS  K, cells side by side on the device (default 4)
#   CAMPAIGN_STATE    folder with the previous OUTDIR files (default .gpu/state)
#   CAMPAIGN_BENCH    0 to skip the bench (default 1)
#   CAMPAIGN_BENCH_ARGS  arguments of `harness bench` (default: wrn16_4 bf16, eager and
#                     captured, at 128,640,3200,5120, 10 steps x 3 repeats)
#   CAMPAIGN_BENCH_TIMEOUT  seconds the bench may take before it is cut off (default 120)
#   CAMPAIGN_ONLY     an --only pattern restricting the cells (default: all)
#   CAMPAIGN_RUN_ARGS more `harness run` options (e.g. --set execution.compile=true)
#   CAMPAIGN_STOP_AFTER  a smaller --stop-after (the dry-run test: one epoch a cell)
#   HARNESS_DATA      a folder already holding cifar-10-batches-py (skips the unpack)
set -euo pipefail

OUTDIR=${1:?usage: scripts/gpu_campaign.sh OUTDIR}
START=$(date +%s)
SUITE=${CAMPAIGN_SUITE:-suites/cifar.yaml}
BUDGET=${CAMPAIGN_BUDGET:-540}
MARGIN=${CAMPAIGN_MARGIN:-30}
DEVICE=${CAMPAIGN_DEVICE:-cuda:0}
WORKERS=${CAMPAIGN_WORKERS:-4}
STATE=${CAMPAIGN_STATE:-.gpu/state}
BENCH=${CAMPAIGN_BENCH:-1}
BENCH_ARGS=${CAMPAIGN_BENCH_ARGS:-"--model wrn16_4 --precision bf16 --modes eager,captured --batch-sizes 128,640,3200,5120"}
BENCH_TIMEOUT=${CAMPAIGN_BENCH_TIMEOUT:-120}
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
# A copy of the working tree has no .git: the rows name the commit prepare_gpu.sh recorded.
if [ -f .gpu/commit ] && ! git rev-parse HEAD >/dev/null 2>&1; then
    read -r HARNESS_GIT_COMMIT HARNESS_GIT_DIRTY <.gpu/commit
    export HARNESS_GIT_COMMIT HARNESS_GIT_DIRTY
    say "no git checkout here: the rows name commit $HARNESS_GIT_COMMIT (dirty $HARNESS_GIT_DIRTY)"
fi

if [ -z "${HARNESS_DATA:-}" ] || [ ! -e "$HARNESS_DATA/cifar-10-batches-py/data_batch_1" ]; then
    say "unpacking CIFAR-10"
    "$PYTHON" .gpu/cifar10-jpeg/unpack.py /tmp/data/cifar-10-batches-py
    export HARNESS_DATA=/tmp/data
fi

# The results folder as OUTDIR/state.tar.gz.part-* (15 MiB each, at most 7 beside the log),
# written aside and then put in place of the previous pack, so a command cut short while
# packing still returns the last whole one.
pack() {
    say "packing $(du -sh "$RESULTS" | cut -f1) of results ($1)"
    rm -f "$WORK"/pack.part-*
    # Lock files belong to live runners, and none is left.
    tar -cz -C "$RESULTS" --exclude='*.lock' . | split -b 15M - "$WORK/pack.part-"
    local parts
    parts=$(ls "$WORK"/pack.part-* | wc -l)
    if [ "$parts" -gt 7 ]; then
        say "ERROR: $parts parts: more than 7 files plus the log; carry fewer checkpoints"
        exit 1
    fi
    rm -f "$OUTDIR"/state.tar.gz.part-*
    for part in "$WORK"/pack.part-*; do
        mv "$part" "$OUTDIR/state.tar.gz.part-${part##*.part-}"
    done
}

first=1
if compgen -G "$STATE/state.tar.gz.part-*" >/dev/null; then
    first=0
    say "continuing from $(ls "$STATE"/state.tar.gz.part-* | wc -l) carried part(s)"
    cat "$STATE"/state.tar.gz.part-* | tar -xz -C "$RESULTS"
fi

if [ "$first" = 1 ] && [ "$BENCH" = 1 ]; then
    say "bench: $BENCH_ARGS"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    timeout "$BENCH_TIMEOUT" "$PYTHON" -m harness bench --device "$DEVICE" --out "$RESULTS/bench" \
        $BENCH_ARGS || say "bench failed or ran past ${BENCH_TIMEOUT}s (the cells still follow)"
    pack "the bench's rows, before any cell"
fi

only=()
if [ -n "${CAMPAIGN_ONLY:-}" ]; then
    only=(--only "$CAMPAIGN_ONLY")
fi
remaining=$(left)
if [ -n "${CAMPAIGN_STOP_AFTER:-}" ]; then
    remaining=$CAMPAIGN_STOP_AFTER
elif [ "$remaining" -le 0 ]; then
    remaining=""
fi
if [ -n "$remaining" ]; then
    say "cells: $WORKERS side by side on $DEVICE, longest first (--stop-after $remaining)"
    # shellcheck disable=SC2086  # CAMPAIGN_RUN_ARGS is a list of words
    "$PYTHON" -m harness run "$SUITE" --results "$RESULTS" ${only[@]+"${only[@]}"} --devices "$DEVICE" \
        --per-device "$WORKERS" --order most-updates --stop-after "$remaining" \
        ${CAMPAIGN_RUN_ARGS:-} || say "harness run exited $? (paused cells resume next command)"
else
    say "time is up before any cell; the cells wait for the next command"
fi

"$PYTHON" -m harness status "$SUITE" --results "$RESULTS" ${only[@]+"${only[@]}"} || true
if [ -d "$RESULTS/runs" ]; then  # rows exist once a cell has finished
    "$PYTHON" -m harness report "$RESULTS" --out "$RESULTS/report/REPORT.md" >/dev/null ||
        say "report failed (the rows are packed all the same)"
fi

pack "final"
rm -rf "$WORK"
say "done: $(ls "$OUTDIR"/state.tar.gz.part-* | wc -l) part(s) and campaign.log in $OUTDIR"
