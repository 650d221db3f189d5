#!/usr/bin/env bash
# The standard benchmark run: `stylegen-trt bench` on one config, writing the JSON with every
# figure, benchmarks/RESULTS.md (with the command that produced it) and the stage-breakdown PNG.
#
#   benchmarks/run.sh                       # --config small (default)
#   CONFIG=tiny benchmarks/run.sh --repeats 1
#   CONFIG=sd15 benchmarks/run.sh --steps 20 --repeats 1 --warmup 0    # hours on a laptop CPU: see README.md
#
# Extra arguments go to `stylegen-trt bench` unchanged. Run it on an otherwise idle machine:
# the report flags a busy one (load average) but cannot undo what contention does to the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${CONFIG:-small}"
mkdir -p benchmarks/results
exec python -m stylegen_trt bench --config "$config" \
    --json "benchmarks/results/$config.json" \
    --markdown benchmarks/RESULTS.md --plot "benchmarks/results/$config-stages.png" "$@"
