#!/usr/bin/env bash
# One GPU session in one command: the CUDA tests, then the GPU benchmark.
# Usage, on a machine with a CUDA GPU, from the repository root:
#   bash benchmarks/gpu_check.sh [MINILM.safetensors] [BLOCKS] [REPEAT]
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
