#!/usr/bin/env bash
# GPU readiness of IRN training (benchmarks/gpu_check.py): equivalence on the device, timed x2/x4
# training runs (float32, bfloat16, torch.compile, the other switches), torchrun on 2 GPUs when
# there are 2; writes one JSON (benchmarks/results/gpu_check.json).
#
#   bash benchmarks/gpu_check.sh              # on a machine with a GPU (about 10 minutes on one)
#   bash benchmarks/gpu_check.sh --dry-run    # CPU, tiny sizes: that it runs to the end (CI)
#
# Other options are passed on to gpu_check.py (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
exec python benchmarks/gpu_check.py "$@"
