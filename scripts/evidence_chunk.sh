#!/usr/bin/env bash
# Run the pre-registered evidence study (suites/evidence-cpu.yaml) in its pre-registered order,
# one cell at a time on one thread, for at most BUDGET seconds: the claims' pairs seed by seed.
# Finished cells are skipped, a killed one resumes; commit results/evidence-cpu after a chunk.
#   scripts/evidence_chunk.sh [BUDGET_S] [RESULTS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET="${1:-3600}"
RESULTS="${2:-results/evidence-cpu}"
SUITE=suites/evidence-cpu.yaml
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
# The claims' arms in the order of report.preregistration.order, each as optimizer/schedule.
ARMS=(
  momentum/decaying_lr momentum/increasing_batch
  momentum/hybrid
  momentum/increased_lr
  momentum/increased_momentum
  momentum/increased_momentum_extra
  sgd/decaying_lr sgd/increasing_batch
  nesterov/decaying_lr nesterov/increasing_batch
  adam/decaying_lr adam/increasing_batch
  sgd/first_drop_only
  momentum/n_over_10
)
# The primary pair goes seed by seed (decaying lr, then increasing batch); the rest arm by arm.
plan=()
for seed in 0 1 2 3 4 5 6 7 8 9; do
  plan+=("/momentum/decaying_lr/seed$seed" "/momentum/increasing_batch/seed$seed")
done
for arm in "${ARMS[@]:2}"; do
  for seed in 0 1 2 3 4 5 6 7 8 9; do plan+=("/$arm/seed$seed"); done
done
for only in "${plan[@]}"; do
  left=$(( BUDGET - ($(date +%s) - start) ))
  if (( left < 120 )); then echo "budget spent; stopping before $only"; break; fi
  harness run "$SUITE" --results "$RESULTS" --device cpu --only "*$only" --stop-after "$left"
done
