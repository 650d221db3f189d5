#!/bin/bash
# usage: CG_LAMBDA=.. CG_W=.. ev_cg.sh BUNDLE OUT.json [extra eval args]  -- ../cotrain-hold/ev.sh's acceptance setting
B=$1; OUT=$2; shift 2
HERE=$(dirname "$(readlink -f "$0")")
mapfile -t P < <(python3 -c "from stylegen_trt.demo import data; print('\n'.join(c.prompt for c in data.all_contents()[::3]))")
args=()
for p in "${P[@]}"; do args+=(--prompt "$p"); done
python "$HERE/cg_eval.py" eval --bundle "$B" "${args[@]}" --seeds 2 --json "$OUT" "$@"
