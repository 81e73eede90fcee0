/* emu_backend.cpp: makes the emulated dwconv kernels (cuda/dwconv.cu and cuda/dwconv_tc.cu run
 * through emu_cuda.h) the CUDA backend of a CPU-only build, before main runs. The backend is the
 * CPU's (host memory, its copies and elementwise kernels) with the dwconv fields replaced, so
 * "GPU" tensors live in host memory and every dwconv call on them runs the CUDA source.
 * lark_cuda_is_available and lark_cuda_device_count replace the CPU-only build's weak ones. */
#include "emu_cuda.h"

static lark_backend emulated;

extern "C" bool lark_cuda_is_available(void) { return true; }
extern "C" int lark_cuda_device_count(void) { return 1; }

__attribute__((constructor)) static void emu_register(void) {
  emulated = lark_cpu_backend;
  emulated.name = "cuda (emulated)";
  emulated.dwconv_forward = lark_cuda_dwconv_forward;
  emulated.dwconv_backward_input = lark_cuda_dwconv_backward_input;
  emulated.dwconv_backward_weight = lark_cuda_dwconv_backward_weight;
  lark_backend_register(LARK_CUDA, &emulated);
}
