#!/usr/bin/env bash
# Markdown rows of the fast CPU path (and CUDA when built and present) against the CPU reference
# on real models: `lockstep perplexity --kl-divergence` with a cpu-ref base.
#   scripts/kl-table.sh TEXT CTX CHUNKS MODEL...
# The base files go to a temporary directory (removed at exit); progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
text=$1 ctx=$2 chunks=$3
shift 3
lockstep=${LOCKSTEP:-./build/lockstep}
backends=${BACKENDS:-cpu}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| model | backend | ctx x chunks | PPL(cpu-ref) | PPL(backend) | mean KL +/- err | max KL | 99% KL | same top % |"
echo "|---|---|---|---|---|---|---|---|---|"
for model in "$@"; do
  base=$work/base.kld
  "$lockstep" perplexity -m "$model" -f "$text" -c "$ctx" --chunks "$chunks" --backend cpu-ref \
    --kl-divergence-base "$base" >"$work/ref.txt"
  for backend in $backends; do
    "$lockstep" perplexity -m "$model" --kl-divergence-base "$base" --kl-divergence \
      --backend "$backend" --parity strict >"$work/kl.txt"
    field() { grep -m1 "^$1" "$work/kl.txt" | sed "s/^$1 *: *//; s/ %\$//"; }
    echo "| $(basename "$model") | $backend | $ctx x $chunks | $(field 'Mean PPL(base)') |" \
      "$(field 'Mean PPL(Q)') | $(field 'Mean    KLD') | $(field 'Maximum KLD') |" \
      "$(field '99.0%   KLD') | $(field 'Same top p') |"
  done
  rm -f "$base"
done
