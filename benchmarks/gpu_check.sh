#!/usr/bin/env bash
# A user's acceptance test for a GPU box: TensorRT engines for the SD-1.5-size random-weight bundle (the
# bench's `sd15` config) at 512 px, `verify` (fp16 vs the fp32 reference), generate with and without a
# style, and the latency benchmark against PyTorch fp16 on CUDA. Writes one JSON with every figure.
#
# WRITTEN, NOT RUN: this project's machines have no GPU with TensorRT; until someone runs it, treat it as
# untested (see README, "What was verified where").
#
# usage: benchmarks/gpu_check.sh [--dry-run] [--out gpu_check.json] [--work DIR]
# Needs: an NVIDIA GPU and driver, Python 3.10+, pip access to PyPI and pypi.nvidia.com.
# Each stage runs under `timeout`; a stage that overruns or fails is recorded (status, seconds, log tail)
# and the rest go on. Budgets sum to under 10 minutes on an H100-class GPU (install and the sd15 model
# build dominate; a second run reuses both).
set -u -o pipefail

OUT="gpu_check.json"
WORK="${STYLEGEN_GPU_CHECK_WORK:-$PWD/gpu-check-work}"
DRY_RUN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
export STYLEGEN_TRT_CACHE="$WORK/cache"
LOGS="$WORK/logs"
RESULTS="$WORK/stages.jsonl"

# name | seconds allowed | command
STAGES=(
    "install|120|$PY -m pip install --quiet --extra-index-url https://pypi.nvidia.com '${REPO}[trt,export]'"
    "gpu|10|nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader"
    "prepare_sd15|120|$PY -c 'from stylegen_trt.bench.configs import prepare; m = prepare(\"sd15\"); print(m.bundle)'"
    "build_fp16|150|stylegen-trt build --bundle \"\$(cat $WORK/bundle_path)\" --backend trt --static --height 512 --width 512 --n 1"
    "verify_fp16|45|stylegen-trt verify --bundle \"\$(cat $WORK/bundle_path)\" --backend trt --precision fp16 --static --steps 10 --json $WORK/verify.json"
    "generate_plain|25|stylegen-trt generate --bundle \"\$(cat $WORK/bundle_path)\" --backend trt --static --cuda-graph -p 'a lighthouse' --steps 50 --seed 1 --out $WORK/plain.png"
    "generate_styled|25|stylegen-trt generate --bundle \"\$(cat $WORK/bundle_path)\" --backend trt --static --cuda-graph -p 'a lighthouse' --style $WORK/swatch.png --steps 50 --seed 1 --out $WORK/styled.png"
    "bench_vs_torch_fp16|100|stylegen-trt bench --config sd15 --backend trt --static --cuda-graph --steps 50 --repeats 3 --warmup 1 --skip cold_start --skip steps_for_quality --tolerance 64 --json $WORK/bench.json"
)

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check: dry run; work dir $WORK, JSON -> $OUT"
    total=0
    for stage in "${STAGES[@]}"; do
        IFS='|' read -r name budget command <<< "$stage"
        total=$((total + budget))
        printf '%-20s %4ss  %s\n' "$name" "$budget" "$command"
    done
    echo "total budget: ${total}s"
    exit 0
fi

mkdir -p "$LOGS" "$STYLEGEN_TRT_CACHE"
: > "$RESULTS"

json_string() { "$PY" -c 'import json, sys; print(json.dumps(sys.stdin.read()))'; }

run_stage() {  # name budget command
    local name="$1" budget="$2" command="$3" start rc status
    start=$SECONDS
    timeout --kill-after=10 "$budget" bash -c "$command" > "$LOGS/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status="ok" ;;
        124|137) status="timed out after ${budget}s: skipped" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '{"stage": "%s", "status": "%s", "exit_code": %d, "seconds": %s, "budget_s": %s, "log_tail": %s}\n' \
        "$name" "$status" "$rc" "$((SECONDS - start))" "$budget" "$(tail -c 2000 "$LOGS/$name.log" | json_string)" \
        >> "$RESULTS"
    echo "gpu_check: $name: $status" >&2
    return $rc
}

for stage in "${STAGES[@]}"; do
    IFS='|' read -r name budget command <<< "$stage"
    case "$name" in
        build_fp16)  # the bundle path and a style image, once the model exists
            "$PY" -c 'from stylegen_trt.bench.configs import prepare; print(prepare("sd15").bundle)' \
                > "$WORK/bundle_path" 2>/dev/null || true
            "$PY" -c "from stylegen_trt.runtime.images import procedural_swatch, save_png; save_png(procedural_swatch(512), '$WORK/swatch.png')" \
                2>/dev/null || true ;;
    esac
    if [ "$name" != "install" ] && [ "$name" != "gpu" ] && ! command -v stylegen-trt > /dev/null; then
        printf '{"stage": "%s", "status": "skipped: stylegen-trt not installed", "exit_code": -1, "seconds": 0, "budget_s": %s, "log_tail": ""}\n' \
            "$name" "$budget" >> "$RESULTS"
        continue
    fi
    run_stage "$name" "$budget" "$command" || true
done

"$PY" - "$RESULTS" "$WORK" "$OUT" <<'EOF'
import json, sys, time
from pathlib import Path

results, work, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
stages = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]

def load(name):
    try:
        return json.loads((work / name).read_text())
    except (OSError, ValueError):
        return None

report = {"schema": "stylegen-trt-gpu-check-v1", "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "stages": stages, "verify": load("verify.json"), "bench": load("bench.json"),
          "passed": all(s["status"] == "ok" for s in stages)}
out.write_text(json.dumps(report, indent=2) + "\n")
print(f"gpu_check: wrote {out} ({'all stages ok' if report['passed'] else 'some stages did not pass: see stages'})")
EOF
