/*
 * lines.cuh: work along the lines of a contiguous (outer, L, inner) block, shared by norm.cu (layer
 * norm over dim 1, the loss rows) and softmax.cu (softmax along a dim). Line (o, i) holds the L
 * elements base + l * stride with base = o * L * inner + i and stride = inner; its index is
 * o * inner + i (the order of the layer-norm statistics on the CPU).
 *
 * A team of threads takes one line at a time. Each thread walks l = first(), first() + step(), ...
 * and the team combines its partial values with sum() and max(), which hand every thread of the
 * team the same bits: the combining order is fixed by the shape alone, so results repeat exactly
 * from run to run. Three teams, picked on the host by run_lines():
 *   warp   (inner == 1, L <= ROW_WARP_MAX): one warp per contiguous row, lanes striding, combined
 *          by a butterfly of shuffles (lane t adds lane t ^ 16, then t ^ 8, ...; the sums are the
 *          same bits in every lane because IEEE addition is commutative);
 *   block  (inner == 1, longer rows): one block per row, the warps' butterflies then the 32 warp
 *          totals added in warp order by every thread from shared memory;
 *   column (inner > 1): blockDim (32, TY): 32 neighbouring lines (i0 .. i0 + 31 of one o) side by
 *          side so that a warp's loads of one l are 32 consecutive elements, TY threads splitting
 *          each line; partials meet in shared memory and every thread adds its column's TY values
 *          in ty order.
 * Bodies receive `valid` (false for the column team's threads past the end of a row of lines):
 * such threads must still call sum() and max() (they hold __syncthreads) but read nothing.
 *
 * A body is a struct with
 *   template <typename Team> __device__ void operator()(const Team &t, int64_t base, int64_t stride,
 *                                                      int64_t line, bool valid) const;
 * whose calls to t.sum / t.max are made by every thread of the team the same number of times.
 *
 * The end of the file has the small helpers the three files' entry points share (typed data
 * pointers, the float32 / float64 switch).
 */
#ifndef LARK_CUDA_LINES_CUH
#define LARK_CUDA_LINES_CUH

#include <math.h>

#include "cuda.h"

#define LINES_FULL_MASK 0xffffffffu
#define ROW_WARP_MAX 1024     /* rows up to this long take a warp each, longer ones a block */
#define ROW_BLOCK_THREADS 512 /* threads of the block team */
#define LINES_THREADS 256     /* threads per block of the warp team (8 rows per block) */
#define COL_MAX_TY 32         /* the column team's most threads per line (32 x 32 = 1024 threads) */
#define LINES_MAX_GRID (1 << 20) /* grid-stride loops cover the rest */

/* butterfly sum and max over the 32 lanes of a warp: every lane gets the same bits */
__device__ __forceinline__ double lines_warp_sum(double v) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(LINES_FULL_MASK, v, d);
  return v;
}
/* fmax ignores a NaN, as the CPU's fmax does (a NaN then spreads through the sums instead) */
__device__ __forceinline__ double lines_warp_max(double v) {
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) v = fmax(v, __shfl_xor_sync(LINES_FULL_MASK, v, d));
  return v;
}

struct lines_warp_team {
  int lane;
  __device__ int64_t first() const { return lane; }
  __device__ int64_t step() const { return 32; }
  __device__ bool leader() const { return lane == 0; }
  __device__ double sum(double v) const { return lines_warp_sum(v); }
  __device__ double max(double v) const { return lines_warp_max(v); }
};

struct lines_block_team {
  double *shared; /* 32 doubles */
  __device__ int64_t first() const { return threadIdx.x; }
  __device__ int64_t step() const { return blockDim.x; }
  __device__ bool leader() const { return threadIdx.x == 0; }
  template <bool MAX>
  __device__ double combine(double v) const {
    v = MAX ? lines_warp_max(v) : lines_warp_sum(v);
    int nw = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = shared[0];
    for (int w = 1; w < nw; w++) t = MAX ? fmax(t, shared[w]) : t + shared[w];
    __syncthreads(); /* every thread has read `shared` before the next combine writes it */
    return t;
  }
  __device__ double sum(double v) const { return combine<false>(v); }
  __device__ double max(double v) const { return combine<true>(v); }
};

struct lines_column_team {
  double (*shared)[32]; /* [COL_MAX_TY][32] */
  __device__ int64_t first() const { return threadIdx.y; }
  __device__ int64_t step() const { return blockDim.y; }
  __device__ bool leader() const { return threadIdx.y == 0; }
  template <bool MAX>
  __device__ double combine(double v) const {
    if (blockDim.y == 1) return v;
    shared[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    double t = shared[0][threadIdx.x];
    for (unsigned y = 1; y < blockDim.y; y++) t = MAX ? fmax(t, shared[y][threadIdx.x]) : t + shared[y][threadIdx.x];
    __syncthreads();
    return t;
  }
  __device__ double sum(double v) const { return combine<false>(v); }
  __device__ double max(double v) const { return combine<true>(v); }
};

/* rows (L contiguous elements each), one warp per row; blockDim.x a multiple of 32. The launch
 * bounds hold each kernel to the registers its largest block may have. */
template <typename Body>
__global__ void __launch_bounds__(LINES_THREADS)
    lines_warp_kernel(int64_t rows /* lines */, int64_t L /* elements per row */, Body body) {
  lines_warp_team t{(int)(threadIdx.x & 31)};
  int64_t nwarps = ((int64_t)blockDim.x * gridDim.x) >> 5;
  /* r is the same for the 32 lanes of a warp: they make the same shuffles */
  for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += nwarps)
    body(t, r * L, 1, r, true);
}

/* rows, one block per row */
template <typename Body>
__global__ void __launch_bounds__(ROW_BLOCK_THREADS)
    lines_block_kernel(int64_t rows /* lines */, int64_t L /* elements per row */, Body body) {
  __shared__ double shared[32];
  lines_block_team t{shared};
  /* r is the same for the whole block: every thread reaches the barriers the same times */
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) body(t, r * L, 1, r, true);
}

/* lines of stride inner > 1, 32 neighbouring lines per block */
template <typename Body>
__global__ void __launch_bounds__(COL_MAX_TY * 32)
    lines_column_kernel(int64_t outer, int64_t L, int64_t inner /* > 1 */, Body body) {
  __shared__ double shared[COL_MAX_TY][32];
  lines_column_team t{shared};
  int64_t iblocks = (inner + 31) / 32, groups = outer * iblocks;
  for (int64_t gi = blockIdx.x; gi < groups; gi += gridDim.x) {
    int64_t o = gi / iblocks, i = (gi - o * iblocks) * 32 + threadIdx.x;
    bool valid = i < inner;
    body(t, o * L * inner + i, inner, o * inner + i, valid);
  }
}

static inline unsigned lines_blocks(int64_t want) {
  return (unsigned)(want < 1 ? 1 : want > LINES_MAX_GRID ? LINES_MAX_GRID : want);
}

/* Runs body over every line of the (outer, L, inner) block, on the current device (the caller has
 * set it). Nothing runs when there are no lines; lines of L = 0 elements still run (a body may
 * write per-line results). Returns 0 or the launch error naming op. */
template <typename Body>
static int run_lines(const char *op, int64_t outer, int64_t L, int64_t inner, const Body &body) {
  if (outer <= 0 || inner <= 0) return 0;
  if (inner == 1) {
    if (L <= ROW_WARP_MAX) {
      int64_t per_block = LINES_THREADS / 32;
      lines_warp_kernel<Body><<<lines_blocks((outer + per_block - 1) / per_block), LINES_THREADS>>>(outer, L, body);
    } else {
      lines_block_kernel<Body><<<lines_blocks(outer), ROW_BLOCK_THREADS>>>(outer, L, body);
    }
  } else {
    int64_t groups = outer * ((inner + 31) / 32);
    /* threads per line: enough to cover short lines once, more when there are few groups to spread */
    unsigned ty = 1;
    unsigned cap = groups < 512 && L >= 256 ? COL_MAX_TY : 8;
    while (ty < cap && (int64_t)ty < L) ty <<= 1;
    lines_column_kernel<Body><<<lines_blocks(groups), dim3(32, ty)>>>(outer, L, inner, body);
  }
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

/* ---- helpers of the entry points ---------------------------------------------------------------- */

/* a tensor's data as T (NULL stays NULL) */
template <typename T>
static inline const T *nn_cptr(const lark_tensor *t) { return t ? (const T *)lark_data_ptr(t) : nullptr; }
template <typename T>
static inline T *nn_mptr(lark_tensor *t) { return t ? (T *)lark_data_ptr(t) : nullptr; }

/* f(float()) or f(double()) by x's dtype: f is a generic lambda taking the element type's zero */
template <typename F>
static inline int nn_by_dtype(const char *op, const lark_tensor *x, F f) {
  if (x->dtype == LARK_FLOAT32) return f(0.0f);
  if (x->dtype == LARK_FLOAT64) return f(0.0);
  return lark_set_error(LARK_ERR_DTYPE, "%s: float32 or float64 expected on cuda, got %s", op,
                        lark_dtype_name(x->dtype));
}

#endif
