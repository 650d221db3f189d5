#!/usr/bin/env bash
# The standard benchmark run: `stylegen-trt bench` on one config, writing the JSON with every
# figure, the config's report and stage-breakdown PNG under benchmarks/results/, and then
# benchmarks/RESULTS.md from every config's JSON there (plus the hand-written analysis.md).
#
#   benchmarks/run.sh                                   # --config small (default)
#   CONFIG=tiny benchmarks/run.sh --repeats 1
#   CONFIG=demo DEMO_WORK=demo-work benchmarks/run.sh   # the shipped demo bundle vs its training files
#   CONFIG=sd15 benchmarks/run.sh --steps 5 --repeats 1 --warmup 0 --skip style_overhead --quality dpmpp:5
#
# Extra arguments go to `stylegen-trt bench` unchanged. Run it on an otherwise idle machine:
# the report flags a busy one but cannot undo what contention does to the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${CONFIG:-small}"
mkdir -p benchmarks/results
if [ "$config" = demo ]; then
    work="${DEMO_WORK:?CONFIG=demo needs DEMO_WORK=<the --work directory of python -m stylegen_trt.demo.train>}"
    model=(--bundle stylegen_trt/demo/bundle --base "$work/sd" --vgg "$work/vgg19.pth" --branch "$work/branch.safetensors")
else
    model=(--config "$config")
fi
python -m stylegen_trt bench "${model[@]}" \
    --json "benchmarks/results/$config.json" \
    --markdown "benchmarks/results/$config.md" --plot "benchmarks/results/$config-stages.png" "$@"
runs=()
for name in demo small sd15 tiny; do
    [ -f "benchmarks/results/$name.json" ] && runs+=("benchmarks/results/$name.json")
done
python benchmarks/render.py "${runs[@]}" --markdown benchmarks/RESULTS.md --analysis benchmarks/analysis.md
