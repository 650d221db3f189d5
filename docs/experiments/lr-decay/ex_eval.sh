#!/bin/bash
# usage: ex_eval.sh BUNDLE OUT.json -- the six example styles x the eval's 8 prompts x seeds 0-1
B=$1; OUT=$2; shift 2
mapfile -t P < <(python3 -c "from stylegen_trt.demo import data; print('\n'.join(c.prompt for c in data.all_contents()[::3]))")
args=(); for p in "${P[@]}"; do args+=(--prompt "$p"); done
for s in /work/main/examples/styles/*.png; do args+=(--style "$s"); done
stylegen-trt eval --bundle "$B" "${args[@]}" --seeds 2 --json "$OUT" --threads 1 --style-scale 1.0 "$@"
