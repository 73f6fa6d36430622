#!/usr/bin/env bash
# The verdict check of issue 12 as one run: the presets that show each failure and its cures
# (init, remedies, exploding; PRESETS overrides), trained on real MNIST, each ending in its report.
# Text results (each sweep's output and report.md) go to $OUT (default: ./preset-check), and every
# run's records with the reports in $OUT/records.tar.gz, to redraw or read them anywhere.
#
# Made for a machine with CUDA where nothing can be downloaded, as bench/gpu_check.sh (whose
# header says how MNIST travels in .mnist/); DEVICE=cpu runs it here, EXTRA="--epochs 1 --seeds 0"
# makes it shorter.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-preset-check}
work=$(mktemp -d)
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 VANISHING_DATA=$PWD/.mnist VANISHING_OFFLINE=1
export VANISHING_CACHE=$work/cache
for preset in ${PRESETS:-init remedies exploding}; do
  echo "== $preset ($(date +%T))"
  start=$(date +%s)
  # shellcheck disable=SC2086  # EXTRA is a list of options
  $py -m vanishing sweep --preset "$preset" --device "${DEVICE:-cuda}" --out "$work/$preset" \
    ${EXTRA:-} > "$out/$preset.txt" 2>&1 || echo "sweep $preset failed: exit $?"
  echo "$preset: $(($(date +%s) - start)) s"
  tail -4 "$out/$preset.txt"
  cp "$work/$preset/report.md" "$out/$preset-report.md" 2> /dev/null || true
done
tar czf "$out/records.tar.gz" -C "$work" --exclude cache --exclude '*.pt' .
rm -rf "$work"
