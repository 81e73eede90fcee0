/*
 * reduce.cu: the CUDA kernels of the reductions of core/ops/reduce.c: sum, mean, prod, max, min,
 * var, std, norm, any and all over any set of dims, max/min with their indices (max(dim),
 * min(dim), argmax, argmin), and the per-tensor norm of clip_grad_norm (optim.c's total_norm).
 *
 * Geometry. reduce.c hands over the same coalesced view its CPU kernel plans (lark_reduce_geom in
 * backend.h): output o reduces the elements at kept_offset(o) + reduced_offset(r), r < nred. No
 * copy is made: any strides, expanded dims and a non-zero storage offset are read in place.
 *
 * Three loop shapes, picked on the host from the shape alone:
 *   thread: one thread per output, walking its reduced elements in order; used when the
 *           outputs' neighbours are the input's neighbours and the reduced elements are not
 *           (sum over the batch dim of [N, C]: a warp reads 32 neighbouring columns at once, so
 *           the loads coalesce), and for short reductions (nred <= 32) of any layout;
 *   warp:   one warp per output, lanes striding over the reduced elements, combined with warp
 *           shuffles (rows of up to WARP_MAX_RED elements);
 *   block:  one block per output, threads striding, combined with shuffles within each warp and
 *           then across the warps through shared memory (long rows, the whole-tensor sum).
 * When there are too few outputs to fill the GPU, the thread and block shapes also cut each
 * output's reduced range into chunks (blockIdx.y); each chunk writes its partial accumulator and a
 * second kernel merges the chunks in chunk order. The chunk size depends only on the shape, never
 * on the device, so a result is the same on every run and every GPU.
 *
 * Precision and order. As on the CPU, float32 and float64 accumulate in float64 and integer and
 * bool sums and products in int64 with wrap-around; max and min compare exactly in the input's
 * values. (Accumulating float32 in float64 is what makes this backend agree with the CPU, its
 * reference: the reduction is bound by memory bandwidth, and float64 adds cost nothing there on a
 * data-centre GPU.) The order of the additions differs: the CPU keeps 8 running lanes over
 * contiguous runs and adds them ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)), here each thread sums a
 * strided subsequence (r = t, t + 32, ... in a warp) and the partial sums meet in a binary tree
 * (lane t with t + 16, then t + 8, ...), chunk partials then in order. Both orders err by about
 * log2(nred) float64 roundings, so float32 results agree with the CPU's except when the float64
 * sum lies within that error of a float32 rounding boundary, and float64 results to ~1e-15
 * relative (of the sum of |x|). Integer results, any/all, max/min and their indices are exact.
 * Max and min merge partial results with a rule that does not depend on the order (NaN beats any
 * number, then the larger (smaller) value, then the smaller index), which gives exactly the CPU's
 * sequential answer: the first NaN if there is one, else the first position of the extreme.
 */
#include <math.h>
#include <string.h>
#include <type_traits>

#include "cuda.h"

/* ---- accumulators (reduce.c's rkind and racc) --------------------------------------------------- */

enum rkind {
  K_SUM, K_PROD, K_MAX, K_MIN, K_ANY, K_ALL,                           /* float and integer inputs */
  K_SQDEV, K_NORM0, K_NORM1, K_NORM2, K_NORMINF, K_NORMNINF, K_NORMP   /* float inputs only */
};

static const char *const reduce_names[LARK_NREDUCE] = {"sum", "mean", "prod", "max", "min",
                                                       "var", "std", "norm", "any", "all"};

/* One output's running state: float inputs use d (and e, var's sum of deviations); integer inputs,
 * any and all use i; max and min keep the flat reduced index of their pick in idx (-1: none yet).
 * long long rather than int64_t: the shuffle intrinsics are overloaded on it. */
struct racc {
  double d, e;
  long long i, idx;
};

/* What every kernel needs besides the geometry and the data. */
struct rparams {
  int op;                /* lark_reduce_op: how to finish (mean divides, std takes the root, ...) */
  bool unbiased;         /* var, std */
  double p;              /* norm order */
  const double *center;  /* (nout) var's means, or NULL */
  void *out;             /* (nout) contiguous, of out_dtype, or NULL */
  int out_dtype;
  long long *out_idx;    /* (nout) contiguous int64, or NULL */
  racc *partial;         /* (nchunks, nout) chunk partials, or NULL when there is one chunk */
  long long chunk;       /* reduced elements per chunk (nred when one chunk) */
  long long nchunks;
};

template <int K>
__device__ __forceinline__ racc acc_init() {
  racc a;
  a.d = K == K_PROD ? 1.0 : K == K_NORMNINF ? (double)INFINITY : 0.0;
  a.e = 0;
  a.i = K == K_PROD || K == K_ALL ? 1 : 0;
  a.idx = -1;
  return a;
}

/* Whether candidate (bv at index bi) beats the current pick (av at ai) for max (MAX) or min,
 * whatever order the two were seen in: a NaN beats any number, then the extreme value, then the
 * smaller index. For inputs fed in increasing index order this is reduce.c's FEED rule. */
template <bool MAX, typename V>
__device__ __forceinline__ bool beats(V bv, long long bi, V av, long long ai) {
  if (ai < 0) return true;
  bool bn = bv != bv, an = av != av; /* always false for integers */
  if (bn || an) return bn && (!an || bi < ai);
  if (bv == av) return bi < ai;
  return MAX ? bv > av : bv < av;
}

/* Feeds element x (double for float inputs, long long for integer ones) at flat reduced index r;
 * c: the output's centre (var), p: the norm order. */
template <int K, typename X>
__device__ __forceinline__ void feed(racc &a, X x, long long r, double c, double p) {
  if constexpr (std::is_same<X, double>::value) {
    if constexpr (K == K_SUM) a.d += x;
    else if constexpr (K == K_PROD) a.d *= x;
    else if constexpr (K == K_MAX || K == K_MIN) {
      if (beats<K == K_MAX>(x, r, a.d, a.idx)) a.d = x, a.idx = r;
    } else if constexpr (K == K_ANY) a.i |= (x != 0);
    else if constexpr (K == K_ALL) a.i &= (x != 0);
    else if constexpr (K == K_SQDEV) {
      double dx = x - c;
      a.d += dx * dx;
      a.e += dx;
    } else if constexpr (K == K_NORM0) a.d += (x != 0);
    else if constexpr (K == K_NORM1) a.d += fabs(x);
    else if constexpr (K == K_NORM2) a.d += x * x;
    else if constexpr (K == K_NORMINF) {
      if (a.d == a.d && !(fabs(x) <= a.d)) a.d = fabs(x); /* a NaN sticks */
    } else if constexpr (K == K_NORMNINF) {
      if (a.d == a.d && !(fabs(x) >= a.d)) a.d = fabs(x);
    } else if constexpr (K == K_NORMP) a.d += pow(fabs(x), p);
  } else {
    if constexpr (K == K_SUM) a.i = (long long)((unsigned long long)a.i + (unsigned long long)x);
    else if constexpr (K == K_PROD) a.i = (long long)((unsigned long long)a.i * (unsigned long long)x);
    else if constexpr (K == K_MAX || K == K_MIN) {
      if (beats<K == K_MAX>(x, r, a.i, a.idx)) a.i = x, a.idx = r;
    } else if constexpr (K == K_ANY) a.i |= (x != 0);
    else if constexpr (K == K_ALL) a.i &= (x != 0);
  }
}

/* Merges b into a (reduce.c's acc_merge; max and min with the order-free rule above). */
template <int K, bool INT>
__device__ __forceinline__ void merge(racc &a, const racc &b) {
  if constexpr (K == K_PROD) {
    a.d *= b.d;
    a.i = (long long)((unsigned long long)a.i * (unsigned long long)b.i);
  } else if constexpr (K == K_MAX || K == K_MIN) {
    if (b.idx < 0) return;
    bool take = INT ? beats<K == K_MAX>(b.i, b.idx, a.i, a.idx) : beats<K == K_MAX>(b.d, b.idx, a.d, a.idx);
    if (take) a = b;
  } else if constexpr (K == K_ANY) a.i |= b.i;
  else if constexpr (K == K_ALL) a.i &= b.i;
  else if constexpr (K == K_NORMINF) {
    if (a.d == a.d && !(b.d <= a.d)) a.d = b.d;
  } else if constexpr (K == K_NORMNINF) {
    if (a.d == a.d && !(b.d >= a.d)) a.d = b.d;
  } else { /* additive */
    a.d += b.d;
    a.e += b.e;
    a.i = (long long)((unsigned long long)a.i + (unsigned long long)b.i);
  }
}

/* The accumulator into output element o (reduce.c's finish and finish_float). */
template <int K, bool INT>
__device__ void finish(const racc &a, long long o, const rparams &P, long long nred) {
  if (P.out_idx) P.out_idx[o] = a.idx < 0 ? 0 : a.idx;
  if (!P.out) return;
  if (INT || K == K_ANY || K == K_ALL) {
    long long v = a.i;
    switch (P.out_dtype) {
      case LARK_FLOAT32: ((float *)P.out)[o] = (float)v; break;
      case LARK_FLOAT64: ((double *)P.out)[o] = (double)v; break;
      case LARK_INT64: ((int64_t *)P.out)[o] = (int64_t)v; break;
      case LARK_UINT8: ((uint8_t *)P.out)[o] = (uint8_t)v; break;
      default: ((uint8_t *)P.out)[o] = v != 0; break;
    }
    return;
  }
  double n = (double)nred, v = a.d;
  switch (P.op) {
    case LARK_RED_MEAN: v = a.d / n; break; /* 0/0: NaN for an empty mean, as in PyTorch */
    case LARK_RED_VAR:
    case LARK_RED_STD: {
      double dof = n - (P.unbiased ? 1 : 0);
      if (dof <= 0) {
        v = NAN;
      } else {
        v = (a.d - a.e * a.e / n) / dof;
        if (v < 0) v = 0; /* rounding; keeps a NaN */
        if (P.op == LARK_RED_STD) v = sqrt(v);
      }
      break;
    }
    case LARK_RED_NORM:
      if (K == K_NORM2) v = sqrt(a.d);
      else if (K == K_NORMP) v = pow(a.d, 1.0 / P.p);
      break;
    default: break;
  }
  if (P.out_dtype == LARK_FLOAT32) ((float *)P.out)[o] = (float)v;
  else ((double *)P.out)[o] = v; /* float results are float32 or float64 */
}

/* The partial of chunk c, or the finished output when there is one chunk. */
template <int K, bool INT>
__device__ __forceinline__ void store(const racc &a, long long o, long long c, const rparams &P, long long nout,
                                      long long nred) {
  if (P.partial) P.partial[c * nout + o] = a;
  else finish<K, INT>(a, o, P, nred);
}

/* ---- geometry ------------------------------------------------------------------------------------- */

/* Row-major unravelling of q over dims [0, n) of (shape, stride): the element offset. */
__device__ __forceinline__ int64_t unravel(int64_t q, int n, const int64_t *shape, const int64_t *stride) {
  int64_t off = 0;
  for (int d = n - 1; d > 0; d--) {
    int64_t s = shape[d], k = q / s;
    off += (q - k * s) * stride[d];
    q = k;
  }
  return n > 0 ? off + q * stride[0] : 0;
}

__device__ __forceinline__ int64_t kept_offset(const lark_reduce_geom &g, int64_t o) {
  return unravel(o, g.nk, g.kshape, g.kstride);
}

/* Offset of flat reduced index r; one multiply when the reduced dims coalesced into one. */
__device__ __forceinline__ int64_t reduced_offset(const lark_reduce_geom &g, int64_t r) {
  return g.nr == 1 ? r * g.rstride[0] : unravel(r, g.nr, g.rshape, g.rstride);
}

/* Element x as the accumulation type: double for floats, long long for integers and bools. */
template <typename T>
__device__ __forceinline__ auto load(const T *x, int64_t off) {
  if constexpr (std::is_floating_point<T>::value) return (double)x[off];
  else return (long long)x[off];
}

/* ---- shuffles ------------------------------------------------------------------------------------- */

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ racc shfl_down(const racc &a, int delta) {
  racc b;
  b.d = __shfl_down_sync(FULL_MASK, a.d, delta);
  b.e = __shfl_down_sync(FULL_MASK, a.e, delta);
  b.i = __shfl_down_sync(FULL_MASK, a.i, delta);
  b.idx = __shfl_down_sync(FULL_MASK, a.idx, delta);
  return b;
}

/* Lane 0 gets the merge of the warp's 32 accumulators (lane t with t + 16, then t + 8, ...: a fixed
 * tree, so the order of the additions never changes). Every lane of the warp must call it. */
template <int K, bool INT>
__device__ __forceinline__ racc warp_reduce(racc a) {
#pragma unroll
  for (int delta = 16; delta > 0; delta >>= 1) {
    racc b = shfl_down(a, delta);
    merge<K, INT>(a, b);
  }
  return a;
}

/* Thread 0 gets the merge of the block's accumulators (blockDim.x a multiple of 32, at most 1024).
 * Every thread of the block must call it; `shared` holds 32 accumulators. */
template <int K, bool INT>
__device__ __forceinline__ racc block_reduce(racc a, racc *shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  a = warp_reduce<K, INT>(a);
  if (lane == 0) shared[warp] = a;
  __syncthreads();
  if (warp == 0) {
    a = lane < nwarps ? shared[lane] : acc_init<K>();
    a = warp_reduce<K, INT>(a);
  }
  return a;
}

/* ---- kernels -------------------------------------------------------------------------------------- */

/* thread shape: output o = this thread (grid-stride over x), chunk c = blockIdx.y; the reduced
 * elements of the chunk in order, in runs along the innermost reduced dim. */
template <typename T, int K>
__global__ void reduce_thread_kernel(lark_reduce_geom g /* t's view */, const T *x /* t's data */, rparams P) {
  constexpr bool INT = !std::is_floating_point<T>::value;
  long long c = blockIdx.y;
  int64_t lo = c * P.chunk, hi = lo + P.chunk < g.nred ? lo + P.chunk : g.nred;
  int64_t rin = g.rshape[g.nr - 1], rs = g.rstride[g.nr - 1];
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < g.nout; o += step) {
    racc a = acc_init<K>();
    double cen = P.center ? P.center[o] : 0.0;
    const T *base = x + kept_offset(g, o);
    for (int64_t r = lo; r < hi;) {
      int64_t j = r % rin, len = rin - j < hi - r ? rin - j : hi - r;
      /* the start of this run: the outer reduced dims' offset, then j along the innermost */
      const T *run = base + (g.nr == 1 ? 0 : unravel(r / rin, g.nr - 1, g.rshape, g.rstride)) + j * rs;
      for (int64_t k = 0; k < len; k++) feed<K>(a, load(run, k * rs), (long long)(r + k), cen, P.p);
      r += len;
    }
    store<K, INT>(a, o, c, P, g.nout, g.nred);
  }
}

/* warp shape: one warp per output (grid-stride over warps), lanes striding over every reduced
 * element; one chunk. blockDim.x is a multiple of 32. */
template <typename T, int K>
__global__ void reduce_warp_kernel(lark_reduce_geom g /* t's view */, const T *x /* t's data */, rparams P) {
  constexpr bool INT = !std::is_floating_point<T>::value;
  int lane = threadIdx.x & 31;
  int64_t nwarps = ((int64_t)blockDim.x * gridDim.x) >> 5;
  /* o is the same for the 32 lanes of a warp, so every lane runs warp_reduce the same times */
  for (int64_t o = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; o < g.nout; o += nwarps) {
    racc a = acc_init<K>();
    double cen = P.center ? P.center[o] : 0.0;
    const T *base = x + kept_offset(g, o);
    for (int64_t r = lane; r < g.nred; r += 32) feed<K>(a, load(base, reduced_offset(g, r)), (long long)r, cen, P.p);
    a = warp_reduce<K, INT>(a);
    if (lane == 0) finish<K, INT>(a, o, P, g.nred);
  }
}

/* block shape: one block per output (grid-stride over x), chunk c = blockIdx.y, threads striding
 * over the chunk's reduced elements. blockDim.x is a multiple of 32. */
template <typename T, int K>
__global__ void reduce_block_kernel(lark_reduce_geom g /* t's view */, const T *x /* t's data */, rparams P) {
  constexpr bool INT = !std::is_floating_point<T>::value;
  __shared__ racc shared[32];
  long long c = blockIdx.y;
  int64_t lo = c * P.chunk, hi = lo + P.chunk < g.nred ? lo + P.chunk : g.nred;
  /* o is the same for the whole block, so every thread reaches the barriers the same times */
  for (int64_t o = blockIdx.x; o < g.nout; o += gridDim.x) {
    racc a = acc_init<K>();
    double cen = P.center ? P.center[o] : 0.0;
    const T *base = x + kept_offset(g, o);
    for (int64_t r = lo + threadIdx.x; r < hi; r += blockDim.x)
      feed<K>(a, load(base, reduced_offset(g, r)), (long long)r, cen, P.p);
    a = block_reduce<K, INT>(a, shared);
    if (threadIdx.x == 0) store<K, INT>(a, o, c, P, g.nout, g.nred);
    __syncthreads(); /* warp 0 has read `shared` before the next output writes it */
  }
}

/* The chunks of each output merged in chunk order, then finished (grid-stride over outputs). */
template <int K, bool INT>
__global__ void reduce_merge_kernel(int64_t nout, int64_t nred, rparams P) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < nout; o += step) {
    racc a = P.partial[o];
    for (long long c = 1; c < P.nchunks; c++) merge<K, INT>(a, P.partial[c * nout + o]);
    finish<K, INT>(a, o, P, nred);
  }
}

/* ---- the host side -------------------------------------------------------------------------------- */

#define REDUCE_THREADS 256
#define THREAD_MAX_RED 32      /* reductions this short take the thread shape whatever the layout */
#define WARP_MAX_RED 4096      /* rows up to this long take the warp shape, longer ones the block */
#define BLOCK_CHUNK 16384      /* at least this many elements per chunk in the block shape */
#define THREAD_CHUNK 64        /* ... and in the thread shape */
#define TARGET_BLOCKS 1024     /* chunking stops once outputs x chunks reach this many blocks */
#define TARGET_THREADS (1 << 18)  /* ... or this many threads in the thread shape */
#define MAX_CHUNKS 1024        /* gridDim.y, well under its limit of 65535 */
#define MAX_GRID_X (1 << 20)   /* grid-stride loops cover the rest */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The number of chunks for a range of nred elements: at most `want`, each at least `min_chunk`
 * long; *chunk gets the chunk length. Depends on the shape only. */
static int64_t plan_chunks(int64_t nred, int64_t want, int64_t min_chunk, int64_t *chunk) {
  int64_t n = want;
  if (n > nred / min_chunk) n = nred / min_chunk;
  if (n > MAX_CHUNKS) n = MAX_CHUNKS;
  if (n < 1) n = 1;
  *chunk = n > 1 ? ceil_div(nred, n) : (nred > 0 ? nred : 1);
  return n > 1 ? ceil_div(nred, *chunk) : 1;
}

/* Runs kind K over g's elements of x (dtype of T) into P's outputs. */
template <typename T, int K>
static int launch(const char *name, lark_device dev, const lark_reduce_geom &g, const T *x, rparams P) {
  constexpr bool INT = !std::is_floating_point<T>::value;
  if (g.nout <= 0) return 0;
  bool kin_contiguous = g.kstride[g.nk - 1] == 1 && g.kshape[g.nk - 1] >= 2;
  bool rin_contiguous = g.rstride[g.nr - 1] == 1;
  int shape; /* 0 thread, 1 warp, 2 block */
  if (g.nred <= THREAD_MAX_RED || (kin_contiguous && !rin_contiguous && g.nout >= 128)) shape = 0;
  else if (g.nred <= WARP_MAX_RED) shape = 1;
  else shape = 2;

  int64_t chunk = g.nred > 0 ? g.nred : 1, nchunks = 1;
  if (shape == 0 && g.nout < TARGET_THREADS)
    nchunks = plan_chunks(g.nred, ceil_div(TARGET_THREADS, g.nout), THREAD_CHUNK, &chunk);
  else if (shape == 2 && g.nout < TARGET_BLOCKS)
    nchunks = plan_chunks(g.nred, ceil_div(TARGET_BLOCKS, g.nout), BLOCK_CHUNK, &chunk);

  lark_tensor *partial = NULL;
  if (nchunks > 1) {
    int64_t nbytes = nchunks * g.nout * (int64_t)sizeof(racc);
    partial = lark_empty(1, &nbytes, LARK_UINT8, &dev);
    if (!partial) return lark_error_code();
    P.partial = (racc *)lark_data_ptr(partial);
  }
  P.chunk = chunk;
  P.nchunks = nchunks;

  int rc = 0;
  if (shape == 0) {
    int64_t bx = ceil_div(g.nout, REDUCE_THREADS);
    dim3 grid((unsigned)(bx < MAX_GRID_X ? bx : MAX_GRID_X), (unsigned)nchunks);
    reduce_thread_kernel<T, K><<<grid, REDUCE_THREADS>>>(g, x, P);
  } else if (shape == 1) {
    int64_t bx = ceil_div(g.nout, REDUCE_THREADS / 32);
    reduce_warp_kernel<T, K><<<(unsigned)(bx < MAX_GRID_X ? bx : MAX_GRID_X), REDUCE_THREADS>>>(g, x, P);
  } else {
    dim3 grid((unsigned)(g.nout < MAX_GRID_X ? g.nout : MAX_GRID_X), (unsigned)nchunks);
    reduce_block_kernel<T, K><<<grid, REDUCE_THREADS>>>(g, x, P);
  }
  rc = lark_cuda_check(cudaGetLastError(), name, "kernel launch failed");
  if (!rc && nchunks > 1) {
    reduce_merge_kernel<K, INT><<<lark_cuda_grid(g.nout, REDUCE_THREADS), REDUCE_THREADS>>>(g.nout, g.nred, P);
    rc = lark_cuda_check(cudaGetLastError(), name, "kernel launch failed");
  }
  /* freeing before the kernels finish is safe: they run in issue order on the one stream, and the
   * memory is not handed out again to work that could run before them */
  lark_tensor_release(partial);
  return rc;
}

/* The kind a (op, p) accumulates, as reduce.c picks it. */
static int kind_of(lark_reduce_op op, double p) {
  switch (op) {
    case LARK_RED_SUM: case LARK_RED_MEAN: return K_SUM;
    case LARK_RED_PROD: return K_PROD;
    case LARK_RED_MAX: return K_MAX;
    case LARK_RED_MIN: return K_MIN;
    case LARK_RED_ANY: return K_ANY;
    case LARK_RED_ALL: return K_ALL;
    case LARK_RED_VAR: case LARK_RED_STD: return K_SQDEV;
    case LARK_RED_NORM:
      if (p == 0) return K_NORM0;
      if (p == 1) return K_NORM1;
      if (p == 2) return K_NORM2;
      if (p == INFINITY) return K_NORMINF;
      if (p == -INFINITY) return K_NORMNINF;
      return K_NORMP;
    default: return -1;
  }
}

/* launch<T, kind> for a kind known at run time; float-only kinds exist only for float T. */
template <typename T>
static int launch_kind(const char *name, lark_device dev, int kind, const lark_reduce_geom &g, const T *x,
                       const rparams &P) {
  switch (kind) {
    case K_SUM: return launch<T, K_SUM>(name, dev, g, x, P);
    case K_PROD: return launch<T, K_PROD>(name, dev, g, x, P);
    case K_MAX: return launch<T, K_MAX>(name, dev, g, x, P);
    case K_MIN: return launch<T, K_MIN>(name, dev, g, x, P);
    case K_ANY: return launch<T, K_ANY>(name, dev, g, x, P);
    case K_ALL: return launch<T, K_ALL>(name, dev, g, x, P);
    default: break;
  }
  if constexpr (std::is_floating_point<T>::value) {
    switch (kind) {
      case K_SQDEV: return launch<T, K_SQDEV>(name, dev, g, x, P);
      case K_NORM0: return launch<T, K_NORM0>(name, dev, g, x, P);
      case K_NORM1: return launch<T, K_NORM1>(name, dev, g, x, P);
      case K_NORM2: return launch<T, K_NORM2>(name, dev, g, x, P);
      case K_NORMINF: return launch<T, K_NORMINF>(name, dev, g, x, P);
      case K_NORMNINF: return launch<T, K_NORMNINF>(name, dev, g, x, P);
      case K_NORMP: return launch<T, K_NORMP>(name, dev, g, x, P);
      default: break;
    }
  }
  return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for this dtype on cuda", name);
}

static int launch_dtype(const char *name, lark_device dev, lark_dtype dt, int kind, const lark_reduce_geom &g,
                        const void *x, const rparams &P) {
  switch (dt) {
    case LARK_FLOAT32: return launch_kind<float>(name, dev, kind, g, (const float *)x, P);
    case LARK_FLOAT64: return launch_kind<double>(name, dev, kind, g, (const double *)x, P);
    case LARK_INT64: return launch_kind<int64_t>(name, dev, kind, g, (const int64_t *)x, P);
    case LARK_UINT8:
    case LARK_BOOL: return launch_kind<uint8_t>(name, dev, kind, g, (const uint8_t *)x, P);
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: unknown dtype %d", name, (int)dt);
  }
}

int lark_cuda_reduce(lark_reduce_op op, const lark_tensor *t, const lark_reduce_geom *g, const lark_reduce_args *args,
                     lark_tensor *out, lark_tensor *out_idx) {
  if ((unsigned)op >= LARK_NREDUCE) return lark_set_error(LARK_ERR_ARG, "reduce: unknown op %d", (int)op);
  const char *name = reduce_names[op];
  int kind = kind_of(op, args->p);
  if (g->nout <= 0) return 0;
  lark_device dev = lark_tensor_device(t);
  if (lark_cuda_set_device(dev, name)) return lark_error_code();
  rparams P;
  memset(&P, 0, sizeof P);
  P.op = (int)op;
  P.unbiased = args->unbiased;
  P.p = args->p;
  P.out = out ? lark_data_ptr(out) : NULL;
  P.out_dtype = out ? (int)out->dtype : (int)LARK_INT64;
  P.out_idx = out_idx ? (long long *)lark_data_ptr(out_idx) : NULL;
  const void *x = lark_data_ptr(t);
  if (kind != K_SQDEV) return launch_dtype(name, dev, t->dtype, kind, *g, x, P);

  /* var, std: the means first, in float64 on the device (never rounded to the input's dtype), then
   * the squared deviations from them, as reduce.c does */
  int64_t nout = g->nout;
  lark_tensor *mean = lark_empty(1, &nout, LARK_FLOAT64, &dev);
  if (!mean) return lark_error_code();
  rparams M = P;
  M.op = LARK_RED_MEAN;
  M.out = lark_data_ptr(mean);
  M.out_dtype = LARK_FLOAT64;
  M.out_idx = NULL;
  int rc = launch_dtype(name, dev, t->dtype, K_SUM, *g, x, M);
  P.center = (const double *)lark_data_ptr(mean);
  if (!rc) rc = launch_dtype(name, dev, t->dtype, K_SQDEV, *g, x, P);
  lark_tensor_release(mean); /* after the launches, in stream order: see launch() */
  return rc;
}

int lark_cuda_norm_part(const lark_tensor *t, double p, double *out) {
  const char *name = "total_norm";
  *out = 0;
  int64_t n = lark_numel(t);
  if (n == 0) return 0;
  lark_device dev = lark_tensor_device(t);
  if (lark_cuda_set_device(dev, name)) return lark_error_code();
  /* the whole contiguous tensor as one reduced dim; kind from p > 0, finished as a plain sum (no
   * root): optim.c adds the parts of every tensor before taking it */
  lark_reduce_geom g;
  memset(&g, 0, sizeof g);
  g.nk = g.nr = 1;
  g.kshape[0] = 1;
  g.kstride[0] = 0;
  g.rshape[0] = n;
  g.rstride[0] = 1;
  g.nout = 1;
  g.nred = n;
  int kind = isinf(p) ? K_NORMINF : p == 1 ? K_NORM1 : p == 2 ? K_NORM2 : K_NORMP;
  int64_t one = 1;
  lark_tensor *res = lark_empty(1, &one, LARK_FLOAT64, &dev);
  if (!res) return lark_error_code();
  rparams P;
  memset(&P, 0, sizeof P);
  P.op = LARK_RED_SUM;
  P.p = p;
  P.out = lark_data_ptr(res);
  P.out_dtype = LARK_FLOAT64;
  int rc = launch_dtype(name, dev, t->dtype, kind, g, lark_data_ptr(t), P);
  if (!rc)
    rc = lark_cuda_check(cudaMemcpy(out, lark_data_ptr(res), sizeof(double), cudaMemcpyDeviceToHost), name,
                         "cudaMemcpy cuda -> host");
  lark_tensor_release(res);
  return rc;
}
