#!/bin/bash
# usage: ev.sh BUNDLE OUT.json [extra eval args]  -- acceptance setting with extra options
B=$1; OUT=$2; shift 2
mapfile -t P < <(python3 -c "from stylegen_trt.demo import data; print('\n'.join(c.prompt for c in data.all_contents()[::3]))")
args=()
for p in "${P[@]}"; do args+=(--prompt "$p"); done
stylegen-trt eval --bundle "$B" "${args[@]}" --seeds 2 --json "$OUT" --threads 2 "$@"
