#!/bin/bash
# usage: [ZERO=names] [SCALE=name:factor,...] ev.sh BUNDLE OUT.json [extra eval args]  -- the acceptance prompts, with
# some branch residuals zeroed or scaled (zero_levels.py); one seed unless --seeds is passed
B=$1; OUT=$2; shift 2
mapfile -t P < <(python3 -c "from stylegen_trt.demo import data; print('\n'.join(c.prompt for c in data.all_contents()[::3]))")
args=()
for p in "${P[@]}"; do args+=(--prompt "$p"); done
python3 "$(dirname "$0")/zero_levels.py" eval --bundle "$B" "${args[@]}" --json "$OUT" --threads 2 "$@"
