/*
 * emu_cuda.h: just enough of CUDA, on the host, to run the kernels of cuda/*.cu (all but gemm.cu's
 * cuBLAS calls and backend.cu's device memory) without a GPU. emulate.py rewrites those files (and
 * cuda/cuda.h, cuda/lines.cuh) to include this header instead of cuda/cuda.h, and turns each
 * kernel<<<grid, block, smem>>>(args) into an emu_launch; spec/cuda_emu/emu_backend.cpp registers
 * the result as the CUDA backend of a CPU-only build, so that the GPU tests (spec/c/test_*.c and
 * the GPU specs, run with bin/lark_emu) run their kernels' index arithmetic, shared-memory use and
 * warp-level operations here, under ASan and UBSan in CI.
 *
 * What it models: each CUDA thread of a block is a fiber (ucontext) of the one host thread that
 * launched the kernel; a fiber runs until it waits at a barrier, then the next runs. __syncthreads
 * is a barrier of the block, and the warp operations (__syncwarp, __shfl*_sync, __ballot_sync,
 * __reduce_{min,max}_sync, mma.sync) are barriers of the lanes in their mask that exchange values
 * through shared arrays; a mask must name only lanes that exist and the calling lane, all lanes of a
 * warp operation must pass the same mask, and a shuffle must read a lane of the mask. A barrier
 * that can never complete (a divergent __syncthreads, a thread that exited) stops the program
 * instead of hanging. Blocks run one after another, all of gridDim.y and .z, and gridDim.x capped at
 * a few blocks (the kernels loop grid-stride over x, so every item is still done, by fewer blocks).
 * Atomics are plain read-modify-writes (only one fiber runs at a time, and launches hold a mutex).
 * Dynamic shared memory is poisoned with NaN before each block, so a kernel that reads what it did
 * not write shows it. mma.sync is computed from the fragment layouts of the PTX ISA (m16n8k8 TF32
 * and m16n8k16 BF16, float32 accumulation), and checks that every element of A and B is supplied.
 * Not modelled: timing, memory coalescing, bank conflicts, races between blocks or between threads
 * that a GPU would run at once (fibers only switch at barriers), streams (every call is
 * synchronous), and anything the files do not use.
 */
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

extern "C" {
#include "lark.h"
#include "backend.h"
}

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
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
struct float2 {
  float x, y;
};
inline double2 make_double2(double x, double y) { return double2{x, y}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct __nv_bfloat16 {
  uint16_t bits;
};
typedef int cudaError_t;
enum { cudaSuccess = 0 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
typedef void *cudaStream_t;
/* cuda.h declares the cuBLAS helpers; nothing emulated calls cuBLAS (gemm.cu is not emulated) */
typedef struct emu_cublas *cublasHandle_t;
typedef int cublasStatus_t;

/* ---- fibers: one per CUDA thread of the running block ---------------------------------------- */

constexpr size_t EMU_STACK = 256 * 1024; /* per fiber, with a guard page below */
/* the switch between fibers: emu_switch (emu_backend.cpp, x86-64) saves the callee-saved registers
 * on the current stack and resumes the stack new_sp; ucontext elsewhere (slower: a system call
 * per switch) */
#if defined(__x86_64__)
#define EMU_FAST_SWITCH 1
extern "C" void emu_switch(void **save_sp, void *new_sp);
#endif
struct emu_fiber {
#ifdef EMU_FAST_SWITCH
  void *sp = nullptr;
#else
  ucontext_t ctx;
#endif
  char *stack = nullptr; /* EMU_STACK bytes above a guard page, kept for the next launches */
  dim3 tid;
  bool done = false;
  const unsigned long *wait = nullptr; /* the generation of the barrier it waits at */
  unsigned long wait_gen = 0;          /* ... until it is no longer this */
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::vector<emu_fiber> emu_fibers;
#ifdef EMU_FAST_SWITCH
inline void *emu_main_sp;
#else
inline ucontext_t emu_main_ctx;
#endif
inline int emu_current = -1;       /* the fiber running, -1 for the scheduler */
inline const std::function<void()> *emu_kernel;
inline float4 *emu_smem; /* the block's dynamic shared memory */
inline std::mutex emu_launch_lock; /* the launch state above is global: one launch at a time */
constexpr int EMU_SMS = 4;           /* multiprocessors the emulated device reports */
constexpr int EMU_SMEM_OPTIN = 232448; /* an H100's opt-in shared memory per block (227 KB) */
constexpr unsigned EMU_MAX_BLOCKS = 5; /* blocks of gridDim.x a grid runs with */
#ifdef EMU_ASAN
inline const void *emu_main_stack_bottom;
inline size_t emu_main_stack_size;
#endif

inline int emu_tid() { return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }
inline int emu_nthreads() { return (int)(blockDim.x * blockDim.y * blockDim.z); }
[[noreturn]] inline void emu_fail(const char *what) {
  fprintf(stderr, "cuda emulation: %s (block %u,%u,%u thread %u,%u,%u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z,
          threadIdx.x, threadIdx.y, threadIdx.z);
  abort();
}

/* back to the scheduler (from a fiber) */
inline void emu_yield() {
  emu_fiber &f = emu_fibers[(size_t)emu_current];
#ifdef EMU_ASAN
  void *fake = nullptr;
  __sanitizer_start_switch_fiber(f.done ? nullptr : &fake, emu_main_stack_bottom, emu_main_stack_size);
#endif
#ifdef EMU_FAST_SWITCH
  emu_switch(&f.sp, emu_main_sp);
#else
  swapcontext(&f.ctx, &emu_main_ctx);
#endif
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

inline void emu_fiber_main() {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &emu_main_stack_bottom, &emu_main_stack_size);
#endif
  (*emu_kernel)();
  emu_fibers[(size_t)emu_current].done = true;
  emu_yield(); /* never returns: the scheduler does not resume a finished fiber */
}

/* A barrier of `expected` fibers; every arrival must name the same count. */
struct emu_bar {
  int expected = 0, arrived = 0;
  unsigned key = 0; /* a warp barrier's mask */
  unsigned long gen = 0;
  void arrive_and_wait(int n, unsigned k = 0) {
    if (arrived == 0) expected = n, key = k;
    else if (n != expected || k != key) emu_fail("threads meet at a barrier with different masks");
    if (++arrived == expected) {
      arrived = 0, gen++;
      return;
    }
    emu_fiber &f = emu_fibers[(size_t)emu_current];
    f.wait = &gen, f.wait_gen = gen; /* the scheduler resumes it once the barrier completes */
    emu_yield();
    f.wait = nullptr;
  }
};
inline emu_bar emu_block_bar;
inline emu_bar emu_warp_bar[32];

/* ---- synchronisation and warp operations ---------------------------------------------------- */

inline void __syncthreads() { emu_block_bar.arrive_and_wait(emu_nthreads()); }
/* the lanes that exist in the calling thread's warp */
inline unsigned __activemask() {
  int n = emu_nthreads() - emu_tid() / 32 * 32;
  return n >= 32 ? 0xffffffffu : ((1u << n) - 1);
}
/* checks a warp operation's mask and waits for its lanes */
inline void emu_warp_sync(unsigned mask) {
  int t = emu_tid();
  if (mask & ~__activemask()) emu_fail("a warp operation's mask names lanes past the end of the block");
  if (!(mask >> (t % 32) & 1)) emu_fail("a warp operation called by a lane outside its mask");
  emu_warp_bar[t / 32].arrive_and_wait(__builtin_popcount(mask), mask);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu_warp_sync(mask & __activemask()); }
inline uint64_t emu_warp_words[32][32];
/* every lane of mask puts v, then reads lane src's (src < 0: its own); all lanes of mask meet twice */
template <typename T>
inline T emu_exchange(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8, "a shuffle of more than 8 bytes");
  int t = emu_tid(), w = t / 32;
  memcpy(&emu_warp_words[w][t % 32], &v, sizeof v);
  emu_warp_sync(mask);
  T r = v;
  if (src >= 0) {
    if (!(mask >> src & 1)) emu_fail("a shuffle reads a lane outside its mask");
    memcpy(&r, &emu_warp_words[w][src], sizeof r);
  }
  emu_warp_sync(mask);
  return r;
}
inline void emu_check_width(int width) {
  if (width < 1 || width > 32 || (width & (width - 1))) emu_fail("a shuffle width that is not a power of 2 up to 32");
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  emu_check_width(width);
  int l = emu_tid() % 32;
  return emu_exchange(mask, v, (l & ~(width - 1)) + (src & (width - 1)));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  emu_check_width(width);
  int l = emu_tid() % 32, s = l ^ lane_mask;
  return emu_exchange(mask, v, (s & ~(width - 1)) > (l & ~(width - 1)) ? -1 : s);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  emu_check_width(width);
  int l = emu_tid() % 32, s = l + (int)delta;
  return emu_exchange(mask, v, (s & ~(width - 1)) != (l & ~(width - 1)) ? -1 : s);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  emu_check_width(width);
  int l = emu_tid() % 32, s = l - (int)delta;
  return emu_exchange(mask, v, s < (l & ~(width - 1)) ? -1 : s);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  int t = emu_tid(), w = t / 32;
  emu_warp_words[w][t % 32] = pred != 0;
  emu_warp_sync(mask);
  unsigned r = 0;
  for (int k = 0; k < 32; k++)
    if (mask >> k & 1 && emu_warp_words[w][k]) r |= 1u << k;
  emu_warp_sync(mask);
  return r;
}
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
template <typename F>
inline int emu_reduce(unsigned mask, int v, F f, int init) {
  int t = emu_tid(), w = t / 32;
  emu_warp_words[w][t % 32] = (uint64_t)(int64_t)v;
  emu_warp_sync(mask);
  int r = init;
  for (int k = 0; k < 32; k++)
    if (mask >> k & 1) r = f(r, (int)(int64_t)emu_warp_words[w][k]);
  emu_warp_sync(mask);
  return r;
}
inline int __reduce_min_sync(unsigned m, int v) {
  if (m != __activemask()) emu_fail("a warp reduction's mask is not the warp's lanes");
  return emu_reduce(m, v, [](int a, int b) { return a < b ? a : b; }, INT_MAX);
}
inline int __reduce_max_sync(unsigned m, int v) {
  if (m != __activemask()) emu_fail("a warp reduction's mask is not the warp's lanes");
  return emu_reduce(m, v, [](int a, int b) { return a > b ? a : b; }, INT_MIN);
}

/* ---- atomics: fibers switch only at barriers, so a plain read-modify-write is atomic ---------- */

template <typename T>
inline T atomicAdd(T *p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
inline T atomicMin(T *p, T v) {
  T old = *p;
  if (v < old) *p = v;
  return old;
}
template <typename T>
inline T atomicMax(T *p, T v) {
  T old = *p;
  if (v > old) *p = v;
  return old;
}
template <typename T>
inline T atomicExch(T *p, T v) {
  T old = *p;
  *p = v;
  return old;
}
template <typename T>
inline T atomicCAS(T *p, T cmp, T v) {
  T old = *p;
  if (old == cmp) *p = v;
  return old;
}

/* ---- arithmetic ----------------------------------------------------------------------------- */

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return (uint32_t)((uint64_t)a * b >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)((unsigned __int128)a * b >> 64);
}
/* a product that must not be contracted into an FMA: the host compiles without contraction of
 * this call */
inline double __dmul_rn(double a, double b) {
  volatile double r = a * b;
  return r;
}
inline long long __double_as_longlong(double d) {
  long long r;
  memcpy(&r, &d, 8);
  return r;
}
inline double __longlong_as_double(long long v) {
  double r;
  memcpy(&r, &v, 8);
  return r;
}
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
  emu_warp_sync(0xffffffffu);
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
  emu_warp_sync(0xffffffffu);
}

/* ---- launches ------------------------------------------------------------------------------- */

struct emu_cfg {
  dim3 grid, block;
  size_t smem;
  emu_cfg(dim3 g, dim3 b, size_t s = 0) : grid(g), block(b), smem(s) {}
};

/* runs kernel as cfg's grid of blocks; blocks one after another, each block's threads as fibers */
inline void emu_launch(emu_cfg c, const std::function<void()> &kernel) {
  std::lock_guard<std::mutex> hold(emu_launch_lock);
  const unsigned n = c.block.x * c.block.y * c.block.z;
  if (n == 0 || n > 1024 || c.block.z > 64 || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 ||
      c.grid.y > 65535 || c.grid.z > 65535)
    emu_fail("invalid launch configuration");
  if (c.smem > (size_t)EMU_SMEM_OPTIN) emu_fail("more dynamic shared memory than a block may have");
  gridDim = dim3(c.grid.x < EMU_MAX_BLOCKS ? c.grid.x : EMU_MAX_BLOCKS, c.grid.y, c.grid.z);
  blockDim = c.block;
  emu_kernel = &kernel;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (emu_fibers.size() < n) emu_fibers.resize(n);
  for (unsigned t = 0; t < n; t++) {
    emu_fiber &f = emu_fibers[t];
    if (!f.stack) {
      void *m = mmap(nullptr, EMU_STACK + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) emu_fail("no memory for a fiber's stack");
      mprotect(m, page, PROT_NONE); /* an overflow faults instead of writing the next stack */
      f.stack = (char *)m + page;
    }
    f.tid = dim3(t % c.block.x, t / c.block.x % c.block.y, t / (c.block.x * c.block.y));
  }
  std::vector<float4> smem((c.smem + 15) / 16);
  const dim3 self = threadIdx;
  for (unsigned bz = 0; bz < gridDim.z; bz++)
    for (unsigned by = 0; by < gridDim.y; by++)
      for (unsigned bx = 0; bx < gridDim.x; bx++) {
        for (auto &v : smem) v = float4{NAN, NAN, NAN, NAN};
        emu_smem = smem.empty() ? nullptr : smem.data();
        blockIdx = dim3(bx, by, bz);
        emu_block_bar = emu_bar();
        for (auto &b : emu_warp_bar) b = emu_bar();
        for (unsigned t = 0; t < n; t++) {
          emu_fiber &f = emu_fibers[t];
#ifdef EMU_ASAN
          /* the last kernel's fiber never returned from its outermost frames: clear their poison */
          __asan_unpoison_memory_region(f.stack, EMU_STACK);
#endif
#ifdef EMU_FAST_SWITCH
          /* what emu_switch pops: the FP control words, r15 .. rbp, then it returns to
           * emu_fiber_main with the stack aligned as after a call */
          void **top = (void **)(f.stack + EMU_STACK);
          top[-1] = nullptr;
          top[-2] = (void *)emu_fiber_main;
          for (int r = 3; r <= 8; r++) top[-r] = nullptr;
          uint32_t fp[2] = {0x1f80, 0x37f}; /* MXCSR and the x87 control word at their defaults */
          memcpy(&top[-9], fp, 8);
          f.sp = &top[-9];
#else
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack;
          f.ctx.uc_stack.ss_size = EMU_STACK;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, emu_fiber_main, 0);
#endif
          f.done = false, f.wait = nullptr;
        }
        /* round robin over the fibers that can run until every one is done; a whole round in which
         * none can is a deadlock */
        unsigned left = n;
        while (left) {
          bool ran = false;
          for (unsigned t = 0; t < n; t++) {
            emu_fiber &f = emu_fibers[t];
            if (f.done || (f.wait && *f.wait == f.wait_gen)) continue;
            ran = true;
            emu_current = (int)t;
            threadIdx = f.tid;
#ifdef EMU_ASAN
            void *fake = nullptr;
            __sanitizer_start_switch_fiber(&fake, f.stack, EMU_STACK);
#endif
#ifdef EMU_FAST_SWITCH
            emu_switch(&emu_main_sp, f.sp);
#else
            swapcontext(&emu_main_ctx, &f.ctx);
#endif
#ifdef EMU_ASAN
            __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
            if (f.done) left--;
          }
          if (left && !ran) {
            threadIdx = self;
            emu_fail("a barrier that cannot complete: threads diverge at __syncthreads or a warp operation, or "
                     "some exited before it");
          }
        }
      }
  emu_current = -1;
  threadIdx = self;
  blockIdx = dim3(0, 0, 0);
}

/* ---- the runtime calls the files make (memory is host memory; every call is synchronous) ------- */

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
inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline int cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind) {
  if (n) memcpy(dst, src, n);
  return 0;
}
inline int cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, n, k);
}
inline int cudaMemset(void *p, int v, size_t n) {
  if (n) memset(p, v, n);
  return 0;
}
inline int cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t = nullptr) { return cudaMemset(p, v, n); }
inline int cudaMemsetAsync(void *p, int v, size_t n, int) { return cudaMemset(p, v, n); }
inline int cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, int) {
  return cudaMemcpy(dst, src, n, k);
}

/* the generated copy of cuda/cuda.h: the backend's declarations and launch helpers (backend.cu's
 * helpers, lark_cuda_check and friends, are emu_backend.cpp's) */
#include "cuda.emu.h"
