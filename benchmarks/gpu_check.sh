#!/usr/bin/env bash
# One GPU session in one command: the CUDA tests, the GPU benchmark, then Llama-2-7B's 224 matrices.
# Usage, on a machine with a CUDA GPU (and ~32 GB of host memory), from the repository root:
#   bash benchmarks/gpu_check.sh [MINILM.safetensors] [BLOCKS] [REPEAT]
# LLAMA7B=0 skips the Llama-2-7B part (bench_gpu.py --llama7b: all 224 matrices on the GPU, the first
# CPU_BLOCKS blocks on the CPU for the agreement, the projected Llama-2-70B time); ~5 minutes on an H100.
# Needs python3 with torch (CUDA), numpy, scipy, pandas, safetensors, pytest; htsr is taken from ./src.
# Logs go to $OUT (default /tmp/htsr-gpu).
set -u
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
MINILM=${1:-.gpu/minilm_no_word_emb.safetensors}
BLOCKS=${2:-4}
REPEAT=${3:-2}
TESTS=${TESTS:-tests/test_gpu.py tests/test_engine_parallel.py tests/test_powerlaw_exact.py}
OUT=${OUT:-/tmp/htsr-gpu}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  nproc
  $PY -c "import torch, numpy, scipy, pandas; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'scipy', scipy.__version__)"
} 2>&1 | tee "$OUT/env.log"
HTSR_GPU_MINILM="$MINILM" timeout 120 $PY -m pytest -q -p no:cacheprovider -rs \
  $TESTS 2>&1 | tee "$OUT/tests.log"
timeout ${BENCH_TIMEOUT:-300} $PY benchmarks/bench_gpu.py --minilm "$MINILM" --blocks "$BLOCKS" --repeat "$REPEAT" 2>&1 | tee "$OUT/bench.log"
if [ "${LLAMA7B:-1}" != 0 ]; then
  timeout ${LLAMA_TIMEOUT:-420} $PY benchmarks/bench_gpu.py --llama7b --cpu-blocks "${CPU_BLOCKS:-2}" 2>&1 | tee "$OUT/llama7b.log"
fi
