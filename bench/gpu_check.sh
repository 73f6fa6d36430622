#!/usr/bin/env bash
# The GPU checks of the performance work, as one run on a machine with CUDA: every benchmark
# figure (bench_speed.py), then the grouped GPU path against one-at-a-time training, then a
# grouped compare killed mid-way and resumed. Text results go to $OUT (default: ./gpu-check).
#
# Nothing can be downloaded on such a machine, so MNIST travels with the repository as the four
# .gz files in .mnist/ (keep it out of git: echo /.mnist/ >> .git/info/exclude). Make it here:
#   .venv/bin/vanishing data fetch && mkdir -p .mnist &&
#   for f in ~/.cache/vanishing/mnist/*-ubyte; do gzip -c "$f" > .mnist/"$(basename "$f")".gz; done
# The package runs from src/ with the machine's own torch (PYTHONPATH), nothing installed.
# DEVICE=cpu FRACTION=0.01 EPOCHS=1 runs the same steps on the CPU, to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
work=$(mktemp -d)
mkdir -p "$out"
device=${DEVICE:-cuda}
fraction=${FRACTION:-0.2}
epochs=${EPOCHS:-2}
py=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 VANISHING_DATA=$PWD/.mnist VANISHING_OFFLINE=1
export VANISHING_CACHE=$work/cache

step() { echo; echo "== $* ($(date +%T))"; }

step "machine"
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step "1. benchmark: matmul limit, reference loop, single, groups, compile, CUDA graphs"
ks=4,16,64
if [ "$device" = cpu ]; then ks=2,4; fi
$py bench/bench_speed.py --device "$device" --ks "$ks" --compile --epochs-fraction "$fraction" \
  --repeats 2 --no-vmap 2>&1 | grep -v '^\[' | tee "$out/bench_speed.txt"

step "2. compare: grouped against one at a time ($epochs epochs, 4 activations x 3 seeds)"
common=(--device "$device" --epochs "$epochs" --workers 1)
group=(); if [ "$device" = cpu ]; then group=(--no-group); fi  # the CPU has no groups to check
# Wall time too: checkpoints (K of them at each epoch end) are written outside the timed epochs.
start=$(date +%s.%N)
$py -m vanishing compare "${common[@]}" "${group[@]}" --out "$work/grouped" \
  > "$out/compare_grouped.txt" 2> "$work/grouped.err"
middle=$(date +%s.%N)
$py -m vanishing compare "${common[@]}" --no-group --out "$work/single" \
  > "$out/compare_single.txt" 2> "$work/single.err"
end=$(date +%s.%N)
$py -c "print(f'wall: grouped {$middle - $start:.1f} s, one at a time {$end - $middle:.1f} s')" \
  | tee "$out/compare_wall.txt"
$py - "$work/grouped" "$work/single" <<'EOF' | tee "$out/compare_agreement.txt"
import json, sys
from pathlib import Path
grouped, single = (Path(p) for p in sys.argv[1:3])
worst = 0.0
for run in sorted(d.name for d in grouped.iterdir() if d.is_dir()):
    a, b = (json.loads((root / run / "result.json").read_text()) for root in (grouped, single))
    gap = abs(a["test_accuracy"] - b["test_accuracy"]) * 100
    worst = max(worst, gap)
    print(f"{run:20s} grouped {a['test_accuracy']:.4f} single {b['test_accuracy']:.4f} "
          f"train s {a['train_seconds']:.1f} vs {b['train_seconds']:.1f}")
print(f"largest accuracy gap {worst:.2f} points (float-level differences grow over training)")
EOF

step "3. a grouped compare killed with SIGKILL after its first checkpoint, then --resume"
resume=(--device "$device" --epochs 3 --workers 1 --seeds 0,1 --out "$work/killed")
$py -m vanishing compare "${resume[@]}" > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
  if compgen -G "$work/killed/*/checkpoint.pt" > /dev/null; then break; fi
  sleep 0.1
done
kill -9 "$pid" || true
wait "$pid" || true
ls "$work"/killed/*/checkpoint.pt | wc -l | sed 's/^/checkpoints left: /'
$py -m vanishing compare "${resume[@]}" --resume > "$out/compare_resumed.txt" 2> "$work/resume.err" \
  && echo "resumed: exit 0" || { echo "resume failed:"; tail -5 "$work/resume.err"; }
ls "$work"/killed/*/result.json | wc -l | sed 's/^/runs finished: /'
tail -6 "$out/compare_resumed.txt"
rm -rf "$work"
