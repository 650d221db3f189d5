#!/bin/bash
# usage: eval_bundle.sh BUNDLE OUT.json  -- the acceptance test's setting: 8 prompts x 21 held-out swatches x seeds 0,1
set -e
B=$1; OUT=$2
mapfile -t P < <(python3 -c "from stylegen_trt.demo import data; print('\n'.join(c.prompt for c in data.all_contents()[::3]))")
args=()
for p in "${P[@]}"; do args+=(--prompt "$p"); done
stylegen-trt eval --bundle "$B" "${args[@]}" --seeds 2 --json "$OUT" --threads ${THREADS:-2}
