#!/usr/bin/env bash
# The one prepared run on the lent H200 (device tool; no TensorRT there, no network): carried wheels, the CUDA
# training tests as a gate, the PyTorch CUDA reference (benchmarks/cuda_reference.py) alone on the GPU, then the
# co-training sweep (sweep.sh) with the real-CUDA device-path tests beside it. Everything it prints goes to
# $OUT/device.log too. Run from the repository root with .whl and .carry carried.
set -u -o pipefail
export PYTHONUNBUFFERED=1
log=$OUT/device.log
exec > >(tee -a "$log") 2>&1
t0=$SECONDS
stamp() { echo "## [$((SECONDS - t0)) s] $*"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
stamp "setup"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
python3 -c "import torch, numpy, onnxruntime, diffusers, transformers, polygraphy; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), '| numpy', numpy.__version__, '| ort', onnxruntime.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| polygraphy', polygraphy.__version__)"
stamp "gate: CUDA training tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k cuda -rs 2>&1 | tail -n 25
stamp "PyTorch CUDA reference (alone on the GPU)"
timeout 100 python3 benchmarks/cuda_reference.py --configs tiny,small --repeats 3 --steps 10 --cache-dir /tmp/sg-cache --json "$OUT/cuda-reference.json" 2>&1 | tail -n 30
stamp "sweep start: $RUNS"
bash docs/experiments/gpu-cotrain/sweep.sh "$PWD/.carry" "$OUT" "${SWEEP_DEADLINE:-300}" &
sweep=$!
sleep 20
stamp "real-CUDA device path tests (beside the sweep)"
STYLEGEN_TRT_REAL_CUDA=1 timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_real_cuda.py -rs 2>&1 | tail -n 25
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
wait $sweep
stamp "sweep done"; cat "$OUT/sweep.log"; ls -la "$OUT"
