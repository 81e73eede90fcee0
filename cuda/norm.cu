/*
 * norm.cu: the CUDA kernels of core/ops/norm.c: layer norm (over the last dim and channels-first)
 * and batch norm (training with the batch statistics, eval with given ones), forward and backward.
 *
 * The formulas are norm.c's, every sum and every per-element expression in float64 for both
 * dtypes as on the CPU (the kernels are bound by memory bandwidth; float64 arithmetic costs little
 * there on a data-centre GPU), the statistics kept as float64, results rounded once to the
 * tensor's dtype:
 *   mean = sum x / n, var = sum (x - mean)^2 / n (biased, two passes), rstd = 1 / sqrt(var + eps)
 *   y = (x - mean) * rstd * w + b                            (layer norm)
 *   y = x * scale + shift, scale = rstd * w, shift = b - mean * scale   (batch norm)
 *   layer norm dx = rstd * (gy - sum(gy) / C - xhat * sum(gy * xhat) / C), gy = g * w
 *   batch norm dx = w * rstd * (g - a - xhat * bcoef), a = sum(g) / n, bcoef = sum(g * xhat) / n
 *                   (a = bcoef = 0 in eval mode); dw = sum g * xhat, db = sum g.
 * The order of the additions differs from the CPU's (see the reductions below), so results agree
 * to float64 rounding before the final rounding to the dtype.
 *
 * Layouts. x is the contiguous (outer, C, inner) block of norm.c.
 *   Layer norm statistics and dx are per line (o, i) over c: lines.cuh's teams (a warp or a block
 *   per row when inner == 1, 32 neighbouring columns per block otherwise).
 *   Batch norm statistics and every dw, db are per channel c over (o, i): chan_partial_kernel cuts
 *   the n = outer * inner elements of each channel into chunks (blockIdx.y) so that a few channels
 *   still fill the GPU; each block adds its chunk with a fixed tree, and chan_merge_kernel adds the
 *   chunk partials in chunk order. The chunk length depends on the shape only, so a result is the
 *   same bits on every run and every GPU.
 */
#include <math.h>

#include "cuda.h"
#include "lines.cuh"

#define NORM_THREADS 256
#define CHAN_MIN_CHUNK 4096   /* elements of one channel per block, at least */
#define CHAN_TARGET_BLOCKS 2048
#define CHAN_MAX_CHUNKS 1024  /* gridDim.y, well under its limit of 65535 */

/* ---- layer norm along the lines -------------------------------------------------------------- */

template <typename T>
struct ln_forward_body {
  const T *x;    /* (outer, C, inner) */
  const T *w;    /* (C) or NULL */
  const T *b;    /* (C) or NULL */
  T *y;          /* (outer, C, inner) */
  double *mean;  /* (outer * inner) */
  double *rstd;  /* (outer * inner) */
  int64_t C;
  double eps;
  template <typename Team>
  __device__ void operator()(const Team &t, int64_t base, int64_t stride, int64_t line, bool valid) const {
    int64_t first = t.first(), step = t.step(), n = valid ? C : 0;
    double s = 0;
    for (int64_t c = first; c < n; c += step) s += (double)x[base + c * stride];
    double m = t.sum(s) / (double)C;
    double v = 0;
    for (int64_t c = first; c < n; c += step) {
      double d = (double)x[base + c * stride] - m;
      v += d * d;
    }
    double r = 1.0 / sqrt(t.sum(v) / (double)C + eps);
    for (int64_t c = first; c < n; c += step) {
      int64_t k = base + c * stride;
      double o = ((double)x[k] - m) * r;
      if (w) o *= (double)w[c];
      if (b) o += (double)b[c];
      y[k] = (T)o;
    }
    if (valid && t.leader()) mean[line] = m, rstd[line] = r;
  }
};

template <typename T>
struct ln_backward_body {
  const T *g;          /* (outer, C, inner) */
  const T *x;          /* (outer, C, inner) */
  const T *w;          /* (C) or NULL */
  const double *mean;  /* (outer * inner) */
  const double *rstd;  /* (outer * inner) */
  T *dx;               /* (outer, C, inner) */
  int64_t C;
  template <typename Team>
  __device__ void operator()(const Team &t, int64_t base, int64_t stride, int64_t line, bool valid) const {
    int64_t first = t.first(), step = t.step(), n = valid ? C : 0;
    double m = valid ? mean[line] : 0.0, r = valid ? rstd[line] : 0.0, s1 = 0, s2 = 0;
    for (int64_t c = first; c < n; c += step) {
      int64_t k = base + c * stride;
      double gy = (double)g[k] * (w ? (double)w[c] : 1.0);
      s1 += gy;
      s2 += gy * ((double)x[k] - m) * r;
    }
    s1 = t.sum(s1) / (double)C;
    s2 = t.sum(s2) / (double)C;
    for (int64_t c = first; c < n; c += step) {
      int64_t k = base + c * stride;
      double gy = (double)g[k] * (w ? (double)w[c] : 1.0);
      dx[k] = (T)(r * (gy - s1 - ((double)x[k] - m) * r * s2));
    }
  }
};

/* ---- per-channel sums ------------------------------------------------------------------------ */

enum { CHAN_SUM, CHAN_SQDEV, CHAN_BN_GRAD, CHAN_LN_GRAD };

/* What a channel reduction reads. Channel c's elements are (o * C + c) * inner + i for o < outer,
 * i < inner; r = o * inner + i runs over [0, n). */
template <typename T>
struct chan_args {
  const T *x;          /* (outer, C, inner) */
  const T *g;          /* (outer, C, inner) (the gradient modes) */
  const double *mean;  /* (C) batch norm; (outer * inner) CHAN_LN_GRAD */
  const double *rstd;  /* as mean (the gradient modes) */
  int64_t outer, C, inner, n;
};

/* Adds element r of channel c to (a, b):
 *   CHAN_SUM:     a += x
 *   CHAN_SQDEV:   a += (x - mean[c])^2
 *   CHAN_BN_GRAD: a += g, b += g * (x - mean[c]) * rstd[c]
 *   CHAN_LN_GRAD: a += g, b += g * (x - mean[r]) * rstd[r] */
template <typename T, int MODE, typename I>
__device__ __forceinline__ void chan_feed(const chan_args<T> &A, int64_t c, int64_t r, double &a, double &b) {
  I q = (I)r / (I)A.inner;
  int64_t o = (int64_t)q, i = r - o * A.inner;
  int64_t k = (o * A.C + c) * A.inner + i;
  double xv = (double)A.x[k];
  if constexpr (MODE == CHAN_SUM) {
    a += xv;
  } else if constexpr (MODE == CHAN_SQDEV) {
    double d = xv - A.mean[c];
    a += d * d;
  } else {
    double gv = (double)A.g[k];
    int64_t s = MODE == CHAN_BN_GRAD ? c : r;
    a += gv;
    b += gv * (xv - A.mean[s]) * A.rstd[s];
  }
}

/* partial[ch * C + c] = channel c's sums over chunk ch = blockIdx.y of its n elements; I is the
 * type of the division r / inner (32 bits when n allows: several times cheaper on a GPU). */
template <typename T, int MODE, typename I>
__global__ void __launch_bounds__(NORM_THREADS)
    chan_partial_kernel(chan_args<T> A, int64_t chunk, double2 *partial /* (nchunks, C) */) {
  __shared__ double sa[32], sb[32];
  int64_t ch = blockIdx.y, lo = ch * chunk, hi = lo + chunk < A.n ? lo + chunk : A.n;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  /* c is the same for the whole block: every thread reaches the barriers the same times */
  for (int64_t c = blockIdx.x; c < A.C; c += gridDim.x) {
    double a = 0, b = 0;
    for (int64_t r = lo + threadIdx.x; r < hi; r += blockDim.x) chan_feed<T, MODE, I>(A, c, r, a, b);
    a = lines_warp_sum(a);
    b = lines_warp_sum(b);
    if (lane == 0) sa[warp] = a, sb[warp] = b;
    __syncthreads();
    if (threadIdx.x == 0) {
      double ta = sa[0], tb = sb[0];
      for (int k = 1; k < nw; k++) ta += sa[k], tb += sb[k];
      partial[ch * A.C + c] = make_double2(ta, tb);
    }
    __syncthreads(); /* thread 0 has read sa, sb before the next channel writes them */
  }
}

/* What the merged sums of channel c become (the fields a mode does not write may be NULL). */
template <typename T>
struct chan_out {
  double *mean;    /* CHAN_SUM: (C) sum / n */
  double *var;     /* CHAN_SQDEV: (C) sum / n ... */
  double *rstd;    /* ... and 1 / sqrt(var + eps) */
  double eps;
  T *dw, *db;      /* gradient modes: (C) sum g * xhat, sum g, or NULL */
  double *ka, *kb; /* CHAN_BN_GRAD: (C) sum g / n and sum g * xhat / n (0 when !batch_stats), or NULL */
  bool batch_stats;
};

template <typename T, int MODE>
__global__ void chan_merge_kernel(const double2 *partial /* (nchunks, C) */, int64_t nchunks, int64_t C, double n,
                                  chan_out<T> O) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += step) {
    double a = partial[c].x, b = partial[c].y;
    for (int64_t ch = 1; ch < nchunks; ch++) a += partial[ch * C + c].x, b += partial[ch * C + c].y;
    if constexpr (MODE == CHAN_SUM) {
      O.mean[c] = a / n;
    } else if constexpr (MODE == CHAN_SQDEV) {
      double v = a / n;
      O.var[c] = v;
      O.rstd[c] = 1.0 / sqrt(v + O.eps);
    } else {
      if (O.dw) O.dw[c] = (T)b;
      if (O.db) O.db[c] = (T)a;
      if (O.ka) O.ka[c] = O.batch_stats ? a / n : 0.0;
      if (O.kb) O.kb[c] = O.batch_stats ? b / n : 0.0;
    }
  }
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Runs the channel reduction MODE over every channel of A and finishes it into O. */
template <typename T, int MODE>
static int chan_reduce(const char *op, lark_device dev, const chan_args<T> &A, const chan_out<T> &O) {
  if (A.C <= 0) return 0;
  /* chunks: enough blocks to fill the GPU when there are few channels, each at least
   * CHAN_MIN_CHUNK long; from the shape alone */
  int64_t nchunks = ceil_div(CHAN_TARGET_BLOCKS, A.C);
  if (nchunks > A.n / CHAN_MIN_CHUNK) nchunks = A.n / CHAN_MIN_CHUNK;
  if (nchunks > CHAN_MAX_CHUNKS) nchunks = CHAN_MAX_CHUNKS;
  if (nchunks < 1) nchunks = 1;
  int64_t chunk = A.n > 0 ? ceil_div(A.n, nchunks) : 1;
  nchunks = A.n > 0 ? ceil_div(A.n, chunk) : 1;
  int64_t nbytes = nchunks * A.C * (int64_t)sizeof(double2);
  lark_tensor *partial = lark_empty(1, &nbytes, LARK_UINT8, &dev);
  if (!partial) return lark_error_code();
  double2 *p = (double2 *)lark_data_ptr(partial);
  dim3 grid(lines_blocks(A.C), (unsigned)nchunks);
  if (A.n <= (int64_t)UINT32_MAX)
    chan_partial_kernel<T, MODE, uint32_t><<<grid, NORM_THREADS>>>(A, chunk, p);
  else
    chan_partial_kernel<T, MODE, uint64_t><<<grid, NORM_THREADS>>>(A, chunk, p);
  int rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  if (!rc) {
    chan_merge_kernel<T, MODE><<<lark_cuda_grid(A.C, NORM_THREADS), NORM_THREADS>>>(p, nchunks, A.C, (double)A.n, O);
    rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  }
  /* released after the launches: the kernels run in issue order on the one stream before any
   * later owner of the block (see cuda/backend.cu) */
  lark_tensor_release(partial);
  return rc;
}

/* ---- batch norm elementwise passes ----------------------------------------------------------- */

/* y = x * scale + shift with channel c's scale = rstd[c] * w[c], shift = b[c] - mean[c] * scale */
template <typename T, typename I>
__global__ void bn_apply_kernel(const T *x /* (outer, C, inner) */, const T *w /* (C) or NULL */,
                                const T *b /* (C) or NULL */, const double *mean /* (C) */,
                                const double *rstd /* (C) */, T *y /* (outer, C, inner) */, int64_t total,
                                int64_t C, int64_t inner) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += step) {
    int64_t c = (int64_t)(((I)k / (I)inner) % (I)C);
    double scale = rstd[c] * (w ? (double)w[c] : 1.0), shift = (b ? (double)b[c] : 0.0) - mean[c] * scale;
    y[k] = (T)((double)x[k] * scale + shift);
  }
}

/* dx = w * rstd * (g - ka - (x - mean) * rstd * kb) per channel */
template <typename T, typename I>
__global__ void bn_backward_dx_kernel(const T *g /* (outer, C, inner) */, const T *x /* (outer, C, inner) */,
                                      const T *w /* (C) or NULL */, const double *mean /* (C) */,
                                      const double *rstd /* (C) */, const double *ka /* (C) */,
                                      const double *kb /* (C) */, T *dx /* (outer, C, inner) */, int64_t total,
                                      int64_t C, int64_t inner) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += step) {
    int64_t c = (int64_t)(((I)k / (I)inner) % (I)C);
    double r = rstd[c], wc = w ? (double)w[c] : 1.0;
    double xhat = ((double)x[k] - mean[c]) * r;
    dx[k] = (T)(wc * r * ((double)g[k] - ka[c] - xhat * kb[c]));
  }
}

/* rstd[c] = 1 / sqrt(var[c] + eps) (eval mode) */
__global__ void bn_rstd_kernel(const double *var /* (C) */, double *rstd /* (C) */, int64_t C, double eps) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += step) rstd[c] = 1.0 / sqrt(var[c] + eps);
}

/* ---- entry points ---------------------------------------------------------------------------- */

int lark_cuda_layer_norm_forward(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                                 lark_tensor *mean, lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner,
                                 double eps) {
  const char *op = "layer_norm";
  if (lark_cuda_set_device(lark_tensor_device(x), op)) return lark_error_code();
  return nn_by_dtype(op, x, [&](auto zero) {
    typedef decltype(zero) T;
    ln_forward_body<T> body{nn_cptr<T>(x),          nn_cptr<T>(w),          nn_cptr<T>(b), nn_mptr<T>(y),
                            nn_mptr<double>(mean), nn_mptr<double>(rstd), C,             eps};
    return run_lines(op, outer, C, inner, body);
  });
}

int lark_cuda_layer_norm_backward(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                                  const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                                  const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner) {
  const char *op = "layer_norm_backward";
  lark_device dev = lark_tensor_device(x);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  return nn_by_dtype(op, x, [&](auto zero) {
    typedef decltype(zero) T;
    if (dx) {
      ln_backward_body<T> body{nn_cptr<T>(g),           nn_cptr<T>(x),           nn_cptr<T>(w), nn_cptr<double>(mean),
                               nn_cptr<double>(rstd), nn_mptr<T>(dx),          C};
      if (run_lines(op, outer, C, inner, body)) return lark_error_code();
    }
    if (!dw && !db) return 0;
    chan_args<T> A{nn_cptr<T>(x), nn_cptr<T>(g), nn_cptr<double>(mean), nn_cptr<double>(rstd),
                   outer,         C,             inner,                 outer * inner};
    chan_out<T> O{};
    O.dw = nn_mptr<T>(dw);
    O.db = nn_mptr<T>(db);
    return chan_reduce<T, CHAN_LN_GRAD>(op, dev, A, O);
  });
}

template <typename Launch>
static int elementwise_launch(const char *op, int64_t total, Launch launch) {
  if (total <= 0) return 0;
  unsigned blocks = lark_cuda_grid(total, NORM_THREADS);
  launch(blocks, total <= (int64_t)UINT32_MAX);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

int lark_cuda_batch_norm_forward(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                                 lark_tensor *mean, lark_tensor *var, lark_tensor *rstd, int64_t outer, int64_t C,
                                 int64_t inner, double eps, bool training) {
  const char *op = "batch_norm";
  lark_device dev = lark_tensor_device(x);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  return nn_by_dtype(op, x, [&](auto zero) {
    typedef decltype(zero) T;
    double *m = nn_mptr<double>(mean), *v = nn_mptr<double>(var), *r = nn_mptr<double>(rstd);
    if (training) {
      chan_args<T> A{nn_cptr<T>(x), nullptr, m, nullptr, outer, C, inner, outer * inner};
      chan_out<T> O{};
      O.mean = m, O.var = v, O.rstd = r, O.eps = eps;
      /* the means first, then the squared deviations from them (two passes, as on the CPU) */
      if (chan_reduce<T, CHAN_SUM>(op, dev, A, O) || chan_reduce<T, CHAN_SQDEV>(op, dev, A, O))
        return lark_error_code();
    } else if (C > 0) {
      bn_rstd_kernel<<<lark_cuda_grid(C, NORM_THREADS), NORM_THREADS>>>(v, r, C, eps);
      if (lark_cuda_check(cudaGetLastError(), op, "kernel launch failed")) return lark_error_code();
    }
    const T *xp = nn_cptr<T>(x), *wp = nn_cptr<T>(w), *bp = nn_cptr<T>(b);
    T *yp = nn_mptr<T>(y);
    int64_t total = outer * C * inner;
    return elementwise_launch(op, total, [&](unsigned blocks, bool small) {
      if (small) bn_apply_kernel<T, uint32_t><<<blocks, NORM_THREADS>>>(xp, wp, bp, m, r, yp, total, C, inner);
      else bn_apply_kernel<T, uint64_t><<<blocks, NORM_THREADS>>>(xp, wp, bp, m, r, yp, total, C, inner);
    });
  });
}

int lark_cuda_batch_norm_backward(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                                  const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                                  const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner, bool batch_stats) {
  const char *op = "batch_norm_backward";
  lark_device dev = lark_tensor_device(x);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  if (C <= 0) return 0;
  /* ka, kb (C): the per-channel coefficients of dx */
  int64_t two_c = 2 * C;
  lark_tensor *coef = dx ? lark_empty(1, &two_c, LARK_FLOAT64, &dev) : NULL;
  if (dx && !coef) return lark_error_code();
  double *ka = coef ? nn_mptr<double>(coef) : nullptr, *kb = coef ? ka + C : nullptr;
  int rc = nn_by_dtype(op, x, [&](auto zero) {
    typedef decltype(zero) T;
    chan_args<T> A{nn_cptr<T>(x), nn_cptr<T>(g), nn_cptr<double>(mean), nn_cptr<double>(rstd),
                   outer,         C,             inner,                 outer * inner};
    chan_out<T> O{};
    O.dw = nn_mptr<T>(dw), O.db = nn_mptr<T>(db), O.ka = ka, O.kb = kb, O.batch_stats = batch_stats;
    if (chan_reduce<T, CHAN_BN_GRAD>(op, dev, A, O)) return lark_error_code();
    if (!dx) return 0;
    const T *gp = nn_cptr<T>(g), *xp = nn_cptr<T>(x), *wp = nn_cptr<T>(w);
    const double *mp = nn_cptr<double>(mean), *rp = nn_cptr<double>(rstd);
    T *dp = nn_mptr<T>(dx);
    int64_t total = outer * C * inner;
    return elementwise_launch(op, total, [&](unsigned blocks, bool small) {
      if (small)
        bn_backward_dx_kernel<T, uint32_t><<<blocks, NORM_THREADS>>>(gp, xp, wp, mp, rp, ka, kb, dp, total, C, inner);
      else
        bn_backward_dx_kernel<T, uint64_t><<<blocks, NORM_THREADS>>>(gp, xp, wp, mp, rp, ka, kb, dp, total, C, inner);
    });
  });
  lark_tensor_release(coef); /* after the launches, in stream order */
  return rc;
}
