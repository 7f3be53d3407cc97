#!/usr/bin/env bash
# Fill .gpu/ (ignored by git, carried to the device machine) with what scripts/gpu_campaign.sh
# needs there and the GPU image lacks: the cp312 wheels of pydantic & co and ruamel.yaml, and
# the CIFAR-10 pack with its unpack.py. Run it here, in the checkout, before the device call.
#
#   scripts/prepare_gpu.sh [SHARED]     (SHARED: the folder beside the checkout, default ../shared)
#
# A .gpu/state/ folder (the previous command's OUTDIR files) is left as it is. Run it after the
# last commit: .gpu/commit records the commit the rows will name. docs/gpu.md says what next.
set -euo pipefail

SHARED=${1:-../shared}
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
if ! git check-ignore -q .gpu/; then
    echo "prepare_gpu: .gpu/ is not ignored by git here; add '/.gpu/' to .gitignore" >&2
    exit 2
fi
for need in "$SHARED/gpu/wheels" "$SHARED/data/cifar10/jpeg/unpack.py"; do
    if [ ! -e "$need" ]; then
        echo "prepare_gpu: $need: not found; pass the shared folder as the first argument" >&2
        exit 2
    fi
done
mkdir -p .gpu
rm -rf .gpu/wheels .gpu/cifar10-jpeg
cp -r "$SHARED/gpu/wheels" .gpu/wheels
cp -r "$SHARED/data/cifar10/jpeg" .gpu/cifar10-jpeg
for module in pydantic pydantic_core ruamel_yaml annotated_types typing_extensions; do
    if ! compgen -G ".gpu/wheels/${module}-*.whl" >/dev/null; then
        echo "prepare_gpu: no ${module} wheel in $SHARED/gpu/wheels (the GPU image lacks it)" >&2
        exit 2
    fi
done
# The copy sent to the GPU is no git checkout: the commit it is made from travels beside it,
# for the rows' provenance (HARNESS_GIT_COMMIT / HARNESS_GIT_DIRTY, exported by the campaign).
dirty=0
if [ -n "$(git status --porcelain --untracked-files=no -- harness suites)" ]; then
    dirty=1
fi
echo "$(git rev-parse HEAD) $dirty" >.gpu/commit
parts=0
if compgen -G ".gpu/state/state.tar.gz.part-*" >/dev/null; then
    parts=$(ls .gpu/state/state.tar.gz.part-* | wc -l)
fi
echo "prepare_gpu: .gpu holds $(du -sh .gpu | cut -f1) (the device call carries at most 64 MiB);" \
    "$(ls .gpu/wheels | wc -l) wheels, the CIFAR-10 pack, $parts carried state part(s);" \
    "commit $(cut -c1-10 .gpu/commit)$([ "$dirty" = 1 ] && echo ' (dirty)')"
