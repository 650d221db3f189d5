#!/bin/bash
# usage: sw2_eval.sh BUNDLE OUT.json -- 42 fresh held-out swatches (eval_swatches seed 2, 2 per family) x 8 prompts x seed 0
B=$1; OUT=$2; shift 2
mapfile -t P < <(python3 -c "from stylegen_trt.demo import data; print('\n'.join(c.prompt for c in data.all_contents()[::3]))")
args=(); for p in "${P[@]}"; do args+=(--prompt "$p"); done
for s in /work/look/sw2/*.png; do args+=(--style "$s"); done
stylegen-trt eval --bundle "$B" "${args[@]}" --seeds 1 --json "$OUT" --threads 1 --style-scale 1.0 "$@"
