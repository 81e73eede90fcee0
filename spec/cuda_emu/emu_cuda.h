/*
 * emu_cuda.h: just enough of CUDA, on the host, to run cuda/dwconv.cu and cuda/dwconv_tc.cu
 * without a GPU. emulate.py rewrites those files to include this header instead of cuda/cuda.h
 * (and turns each kernel<<<grid, block, smem>>>(args) into an emu_launch); spec/cuda_emu/
 * emu_backend.cpp registers the result as the CUDA backend of a CPU-only build, so that the GPU
 * tests (spec/c/test_dwconv_cuda.c, test_dwconv_tc.c) run their kernels' index arithmetic,
 * shared-memory use and warp-level operations here, under ASan and UBSan in CI.
 *
 * What it models: each CUDA thread of a block is a std::thread; __syncthreads is a barrier of the
 * block, and the warp operations (__syncwarp, __reduce_{min,max}_sync, mma.sync) are barriers of
 * the 32 threads of a warp that exchange values through shared arrays. Blocks run one after
 * another, and grids are capped at a few blocks (the kernels loop grid-stride over their work, so
 * every item is still done, by fewer blocks). Dynamic shared memory is poisoned with NaN before
 * each block, so a kernel that reads what it did not write shows it. mma.sync is computed from the
 * fragment layouts of the PTX ISA (m16n8k8 TF32 and m16n8k16 BF16, float32 accumulation), and
 * checks that every element of A and B is supplied. Not modelled: timing, memory coalescing,
 * bank conflicts, races between blocks, and anything the two files do not use.
 */
#pragma once
#include <barrier>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

extern "C" {
#include "lark.h"
#include "backend.h"
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* a block's static shared arrays: one per kernel instance, shared by its threads (blocks run one at
 * a time) */
#define __shared__ static

/* ---- types ---------------------------------------------------------------------------------- */

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 {
  float x, y, z, w;
};
struct double2 {
  double x, y;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
typedef int cudaError_t;
enum { cudaSuccess = 0 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

/* ---- the launch state ----------------------------------------------------------------------- */

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<> *emu_block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barrier;
inline float4 *emu_smem; /* the block's dynamic shared memory */
constexpr int EMU_SMS = 4;           /* multiprocessors the emulated device reports */
constexpr int EMU_SMEM_OPTIN = 232448; /* an H100's opt-in shared memory per block (227 KB) */
constexpr unsigned EMU_MAX_BLOCKS = 5; /* blocks a grid runs with */

inline int emu_tid() { return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }
inline int emu_nthreads() { return (int)(blockDim.x * blockDim.y * blockDim.z); }
[[noreturn]] inline void emu_fail(const char *what) {
  fprintf(stderr, "cuda emulation: %s\n", what);
  abort();
}

/* ---- synchronisation and warp operations ---------------------------------------------------- */

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline void __syncwarp() { emu_warp_barrier[emu_tid() / 32]->arrive_and_wait(); }
inline unsigned __activemask() {
  int n = emu_nthreads() - emu_tid() / 32 * 32;
  return n >= 32 ? 0xffffffffu : ((1u << n) - 1);
}
inline int emu_warp_vals[32][32];
template <typename F>
inline int emu_reduce(unsigned mask, int v, F f, int init) {
  int t = emu_tid(), w = t / 32, l = t % 32;
  if (mask != __activemask()) emu_fail("a warp reduction's mask is not the warp's lanes");
  emu_warp_vals[w][l] = v;
  emu_warp_barrier[w]->arrive_and_wait();
  int r = init;
  for (int k = 0; k < 32; k++)
    if (mask >> k & 1) r = f(r, emu_warp_vals[w][k]);
  emu_warp_barrier[w]->arrive_and_wait();
  return r;
}
inline int __reduce_min_sync(unsigned m, int v) {
  return emu_reduce(m, v, [](int a, int b) { return a < b ? a : b; }, INT_MAX);
}
inline int __reduce_max_sync(unsigned m, int v) {
  return emu_reduce(m, v, [](int a, int b) { return a > b ? a : b; }, INT_MIN);
}

/* ---- arithmetic ----------------------------------------------------------------------------- */

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
template <typename T>
inline T __ldg(const T *p) {
  return *p;
}
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
/* cvt.rna.tf32.f32: 10 mantissa bits, to nearest, ties away from zero */
inline float emu_tf32(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return __uint_as_float(u);
}
/* to nearest even (finite values) */
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) != 0x7f800000u) u = u + 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline uint16_t __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }
inline float emu_bf16_value(uint32_t bits16) { return __uint_as_float(bits16 << 16); }

/* mma.sync.aligned.m16n8k{8,16}.row.col.f32.{tf32,bf16}: d (16 x 8) += a (16 x ks) b (ks x 8),
 * each lane holding the registers the PTX ISA assigns it (lane l, g = l / 4, t = l % 4, register
 * r; BF16 words hold two consecutive k, the lower in the low half):
 *   A: row g + 8 (r % 2), word column t + 4 (r / 2);  B: word row t + 4 r, column g;
 *   C, D: row g + 8 (r / 2), column 2 t + r % 2. */
inline uint32_t emu_mma_a[32][32][4], emu_mma_b[32][32][2];
inline void emu_mma(int ks, float d[4], const uint32_t a[4], const uint32_t b[2]) {
  int tid = emu_tid(), w = tid / 32, l = tid % 32;
  if (__activemask() != 0xffffffffu) emu_fail("mma.sync in a partial warp");
  memcpy(emu_mma_a[w][l], a, sizeof emu_mma_a[w][l]);
  memcpy(emu_mma_b[w][l], b, sizeof emu_mma_b[w][l]);
  emu_warp_barrier[w]->arrive_and_wait();
  float A[16][16], B[16][8];
  bool seen_a[16][16] = {}, seen_b[16][8] = {};
  for (int lane = 0; lane < 32; lane++) {
    int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; r++) {
      int row = g + 8 * (r % 2), col = t + 4 * (r / 2);
      uint32_t v = emu_mma_a[w][lane][r];
      if (ks == 8) {
        A[row][col] = __uint_as_float(v), seen_a[row][col] = true;
        if (v & 0x1fffu) emu_fail("mma.sync: a TF32 operand of A has more than 10 mantissa bits");
      } else {
        A[row][2 * col] = emu_bf16_value(v & 0xffffu), A[row][2 * col + 1] = emu_bf16_value(v >> 16);
        seen_a[row][2 * col] = seen_a[row][2 * col + 1] = true;
      }
    }
    for (int r = 0; r < 2; r++) {
      int row = t + 4 * r, col = g;
      uint32_t v = emu_mma_b[w][lane][r];
      if (ks == 8) {
        B[row][col] = __uint_as_float(v), seen_b[row][col] = true;
        if (v & 0x1fffu) emu_fail("mma.sync: a TF32 operand of B has more than 10 mantissa bits");
      } else {
        B[2 * row][col] = emu_bf16_value(v & 0xffffu), B[2 * row + 1][col] = emu_bf16_value(v >> 16);
        seen_b[2 * row][col] = seen_b[2 * row + 1][col] = true;
      }
    }
  }
  for (int i = 0; i < 16; i++)
    for (int k = 0; k < ks; k++)
      if (!seen_a[i][k]) emu_fail("mma.sync: an element of A was not supplied");
  for (int k = 0; k < ks; k++)
    for (int j = 0; j < 8; j++)
      if (!seen_b[k][j]) emu_fail("mma.sync: an element of B was not supplied");
  int g = l / 4, t = l % 4;
  for (int r = 0; r < 4; r++) {
    int row = g + 8 * (r / 2), col = 2 * t + r % 2;
    float s = d[r];
    for (int k = 0; k < ks; k++) s = fmaf(A[row][k], B[k][col], s);
    d[r] = s;
  }
  emu_warp_barrier[w]->arrive_and_wait();
}

/* ---- launches ------------------------------------------------------------------------------- */

struct emu_cfg {
  dim3 grid, block;
  size_t smem;
  emu_cfg(dim3 g, dim3 b, size_t s = 0) : grid(g), block(b), smem(s) {}
};

inline void emu_launch(emu_cfg c, const std::function<void()> &kernel) {
  const unsigned n = c.block.x * c.block.y * c.block.z;
  if (n == 0 || n > 1024 || c.block.z > 64 || c.grid.x == 0 || c.grid.y > 65535 || c.grid.z > 65535)
    emu_fail("invalid launch configuration");
  if (c.smem > (size_t)EMU_SMEM_OPTIN) emu_fail("more dynamic shared memory than a block may have");
  gridDim = dim3(c.grid.x < EMU_MAX_BLOCKS ? c.grid.x : EMU_MAX_BLOCKS, 1, 1);
  blockDim = c.block;
  std::vector<float4> smem((c.smem + 15) / 16);
  for (unsigned bx = 0; bx < gridDim.x; bx++) {
    for (auto &v : smem) v = float4{NAN, NAN, NAN, NAN};
    emu_smem = smem.empty() ? nullptr : smem.data();
    std::barrier<> block_barrier((std::ptrdiff_t)n);
    emu_block_barrier = &block_barrier;
    emu_warp_barrier.clear();
    for (unsigned w = 0; w * 32 < n; w++)
      emu_warp_barrier.emplace_back(new std::barrier<>((std::ptrdiff_t)(n - w * 32 >= 32 ? 32 : n - w * 32)));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < n; t++)
      threads.emplace_back([&, t, bx]() {
        threadIdx = dim3(t % c.block.x, t / c.block.x % c.block.y, t / (c.block.x * c.block.y));
        blockIdx = dim3(bx, 0, 0);
        kernel();
      });
    for (auto &t : threads) t.join();
  }
}

/* ---- the runtime calls and backend helpers the two files use -------------------------------- */

inline int cudaGetDevice(int *d) {
  *d = 0;
  return 0;
}
inline int cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? EMU_SMS : EMU_SMEM_OPTIN;
  return 0;
}
template <typename K>
inline int cudaFuncSetAttribute(K, cudaFuncAttribute, int v) {
  return v <= EMU_SMEM_OPTIN ? 0 : 1;
}
inline int cudaGetLastError() { return 0; }
inline int lark_cuda_check(cudaError_t e, const char *op, const char *what) {
  return e ? lark_set_error(LARK_ERR_BACKEND, "%s: %s: emulated error", op, what) : 0;
}
inline int lark_cuda_set_device(lark_device, const char *) { return 0; }
inline unsigned lark_cuda_grid(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b < INT_MAX ? b : INT_MAX);
}

/* the entry points of the two files (cuda/cuda.h declares them for the real build) */
extern "C" {
int lark_cuda_dwconv_forward(lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                             const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags);
int lark_cuda_dwconv_backward_input(lark_tensor *grad_in, const lark_tensor *grad_out, const lark_tensor *weight,
                                    const lark_conv2d_params *p, unsigned flags);
int lark_cuda_dwconv_backward_weight(lark_tensor *grad_w, const lark_tensor *grad_out, const lark_tensor *input,
                                     const lark_conv2d_params *p, unsigned flags);
int lark_cuda_dwconv_tc_corr(const char *op, const lark_tensor *src, const lark_tensor *weight, const lark_tensor *bias,
                             lark_tensor *out, const lark_conv2d_params *p, bool input_grad, unsigned flags,
                             bool *handled);
int lark_cuda_dwconv_tc_backward_weight(const char *op, lark_tensor *grad_w, const lark_tensor *grad_out,
                                        const lark_tensor *input, const lark_conv2d_params *p, unsigned flags,
                                        bool *handled);
}
