#!/bin/sh
# spec/cuda_emu/run_gpu_specs.sh BUILD_DIR [SPEC...]: runs the GPU specs with BUILD_DIR/bin/lark_emu,
# the lark executable whose CUDA backend is the emulated kernels of spec/cuda_emu (a CPU-only build,
# -DLARK_CUDA=OFF). Without SPEC names, every spec that has GPU blocks. Exit status: failures seen.
# Left out, because the emulation does not model them: pinned host memory (data_spec's "pinned
# memory" blocks) and the caching allocator (cuda_memory_spec). Takes about 2.5 minutes on the
# 2-core development machine without cuda_ops_spec's two big reduction parity tests; with them
# (EMU_SLOW=1), ten minutes more.
set -u
build=${1:?usage: run_gpu_specs.sh BUILD_DIR [SPEC...]}
shift
cd "$(dirname "$0")/../.." || exit 2
[ $# -gt 0 ] || set -- cuda_ops tensor_gpu nn_gpu conv_gpu cuda train_gpu dwconv_sparse precision data dwconv_gpu
busted=$(command -v busted) || { echo "busted not found"; exit 2; }
# busted with the emulated lark, without the big reduction parity tests unless EMU_SLOW is set
run() {
  if [ -n "${EMU_SLOW:-}" ]; then
    LARK_BIN="$build/bin/lark_emu" LARK_BUILD_DIR="$build" OMP_NUM_THREADS=2 \
      "$build/bin/lark_emu" "$busted" --helper=spec/helper.lua -o utfTerminal --filter-out="pinned memory" "$@"
  else
    LARK_BIN="$build/bin/lark_emu" LARK_BUILD_DIR="$build" OMP_NUM_THREADS=2 \
      "$build/bin/lark_emu" "$busted" --helper=spec/helper.lua -o utfTerminal --filter-out="pinned memory" \
      --filter-out="sum, mean, prod, var" --filter-out="max, min, argmax" "$@"
  fi
}
failed=0
for s in "$@"; do
  echo "== spec/${s}_spec.lua"
  run "spec/${s}_spec.lua" || failed=$((failed + 1))
done
exit $failed
