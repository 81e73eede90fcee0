/* norm.c: batch_norm and layer_norm (over the last dim, and channels-first over dim 1), forward,
 * hand-written backward kernels and autograd recording.
 *
 * Both norms see x as a contiguous (outer, C, inner) block:
 *   layer_norm         (..., C)      -> outer = rows, inner = 1: statistics per (o, i) over c
 *   channels-first     (N, C, H, W)  -> outer = N, inner = H*W:  statistics per (o, i) over c
 *   batch_norm         (N, C, ...)   -> outer = N, inner = rest: statistics per c over (o, i)
 * and y = (x - mean) * rstd * w[c] + b[c] with rstd = 1 / sqrt(var + eps), var biased.
 * Sums are accumulated in double for both dtypes; the statistics kept for backward are float64.
 *
 * Backward, with xhat = (x - mean) * rstd, gy = g * w and n the count each statistic covers:
 *   dx = rstd * (gy - sum(gy) / n - xhat * sum(gy * xhat) / n)   (batch statistics)
 *   dx = gy * rstd                                                (eval batch_norm: constants)
 *   dw[c] = sum g * xhat,  db[c] = sum g.
 *
 * The ld/st kernels serve both dtypes and are the reference; float32 batch norm (the training
 * dtype) has a fast path below them that gives the same sums in a vectorisable order. */
#include <math.h>
#include <string.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"
#include "nn.h"

/* float32 / float64 element access: the branch is the same on every iteration, so it costs
 * little beside the arithmetic, and one kernel serves both dtypes. */
static inline double ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
static inline void st(void *p, int64_t i, double v, bool f64) {
  if (f64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

enum { NORM_LAYER = 0, NORM_BATCH_TRAIN = 1, NORM_BATCH_EVAL = 2 };

/* ---- kernels -------------------------------------------------------------------------------- */

/* Layer norm: statistics per (o, i) over c, one group at a time: the reference, and the path for
 * inner == 1 (the last dim, contiguous). */
static void layer_norm_forward_reference(const void *x /* (outer, C, inner) */, const void *w /* (C) or NULL */,
                                   const void *b /* (C) or NULL */, void *y /* (outer, C, inner) */,
                                   double *mean /* (outer, inner) */, double *rstd /* (outer, inner) */,
                                   int64_t outer, int64_t C, int64_t inner, double eps, bool f64) {
  int64_t groups = outer * inner;
  _Pragma("omp parallel for if (groups * C >= LARK_PARALLEL_GRAIN)")
  for (int64_t gi = 0; gi < groups; gi++) {
    int64_t base = (gi / inner) * C * inner + gi % inner;
    double s = 0, v = 0;
    for (int64_t c = 0; c < C; c++) s += ld(x, base + c * inner, f64);
    double m = s / (double)C;
    for (int64_t c = 0; c < C; c++) {
      double d = ld(x, base + c * inner, f64) - m;
      v += d * d;
    }
    double r = 1.0 / sqrt(v / (double)C + eps);
    for (int64_t c = 0; c < C; c++) {
      double o = (ld(x, base + c * inner, f64) - m) * r;
      if (w) o *= ld(w, c, f64);
      if (b) o += ld(b, c, f64);
      st(y, base + c * inner, o, f64);
    }
    mean[gi] = m;
    rstd[gi] = r;
  }
}

static void layer_norm_backward_reference(const void *g /* (outer, C, inner) */, const void *x /* (outer, C, inner) */,
                                    const void *w /* (C) or NULL */, const double *mean /* (outer, inner) */,
                                    const double *rstd /* (outer, inner) */, void *dx /* (outer, C, inner) or NULL */,
                                    void *dw /* (C) or NULL */, void *db /* (C) or NULL */, int64_t outer, int64_t C,
                                    int64_t inner, bool f64) {
  int64_t groups = outer * inner;
  if (dx) {
    _Pragma("omp parallel for if (groups * C >= LARK_PARALLEL_GRAIN)")
    for (int64_t gi = 0; gi < groups; gi++) {
      int64_t base = (gi / inner) * C * inner + gi % inner;
      double m = mean[gi], r = rstd[gi], s1 = 0, s2 = 0;
      for (int64_t c = 0; c < C; c++) {
        int64_t k = base + c * inner;
        double gy = ld(g, k, f64) * (w ? ld(w, c, f64) : 1.0);
        s1 += gy;
        s2 += gy * (ld(x, k, f64) - m) * r;
      }
      s1 /= (double)C;
      s2 /= (double)C;
      for (int64_t c = 0; c < C; c++) {
        int64_t k = base + c * inner;
        double gy = ld(g, k, f64) * (w ? ld(w, c, f64) : 1.0);
        st(dx, k, r * (gy - s1 - (ld(x, k, f64) - m) * r * s2), f64);
      }
    }
  }
  if (dw || db) {
    _Pragma("omp parallel for if (groups * C >= LARK_PARALLEL_GRAIN)")
    for (int64_t c = 0; c < C; c++) {
      double sw = 0, sb = 0;
      for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
          int64_t k = (o * C + c) * inner + i, gi = o * inner + i;
          double gv = ld(g, k, f64);
          sb += gv;
          sw += gv * (ld(x, k, f64) - mean[gi]) * rstd[gi];
        }
      if (dw) st(dw, c, sw, f64);
      if (db) st(db, c, sb, f64);
    }
  }
}

/* Channels-first (inner > 1): a group's C values lie inner apart, so walking one group at a time
 * touches a new cache line per value. Blocks of LN_BLOCK neighbouring positions are walked
 * together instead, row by row along c, which reads memory in order. */
#define LN_BLOCK 64

static void layer_norm_forward_blocked(const void *x /* (outer, C, inner) */, const void *w /* (C) or NULL */,
                                       const void *b /* (C) or NULL */, void *y /* (outer, C, inner) */,
                                       double *mean /* (outer, inner) */, double *rstd /* (outer, inner) */,
                                       int64_t outer, int64_t C, int64_t inner, double eps, bool f64) {
  int64_t nblk = (inner + LN_BLOCK - 1) / LN_BLOCK, work = outer * nblk;
  _Pragma("omp parallel for if (outer * C * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t wi = 0; wi < work; wi++) {
    int64_t o = wi / nblk, i0 = (wi % nblk) * LN_BLOCK, len = inner - i0 < LN_BLOCK ? inner - i0 : LN_BLOCK;
    int64_t base = o * C * inner + i0;
    double m[LN_BLOCK] = {0}, r[LN_BLOCK] = {0};
    for (int64_t c = 0; c < C; c++)
      for (int64_t j = 0; j < len; j++) m[j] += ld(x, base + c * inner + j, f64);
    for (int64_t j = 0; j < len; j++) m[j] /= (double)C;
    for (int64_t c = 0; c < C; c++)
      for (int64_t j = 0; j < len; j++) {
        double d = ld(x, base + c * inner + j, f64) - m[j];
        r[j] += d * d;
      }
    for (int64_t j = 0; j < len; j++) {
      r[j] = 1.0 / sqrt(r[j] / (double)C + eps);
      mean[o * inner + i0 + j] = m[j];
      rstd[o * inner + i0 + j] = r[j];
    }
    for (int64_t c = 0; c < C; c++) {
      double wc = w ? ld(w, c, f64) : 1.0, bc = b ? ld(b, c, f64) : 0.0;
      for (int64_t j = 0; j < len; j++) {
        int64_t k = base + c * inner + j;
        st(y, k, (ld(x, k, f64) - m[j]) * r[j] * wc + bc, f64);
      }
    }
  }
}

/* dx only (dw and db as in the reference). */
static void layer_norm_backward_blocked(const void *g /* (outer, C, inner) */, const void *x /* (outer, C, inner) */,
                                        const void *w /* (C) or NULL */, const double *mean /* (outer, inner) */,
                                        const double *rstd /* (outer, inner) */, void *dx /* (outer, C, inner) */,
                                        int64_t outer, int64_t C, int64_t inner, bool f64) {
  int64_t nblk = (inner + LN_BLOCK - 1) / LN_BLOCK, work = outer * nblk;
  _Pragma("omp parallel for if (outer * C * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t wi = 0; wi < work; wi++) {
    int64_t o = wi / nblk, i0 = (wi % nblk) * LN_BLOCK, len = inner - i0 < LN_BLOCK ? inner - i0 : LN_BLOCK;
    int64_t base = o * C * inner + i0;
    const double *m = mean + o * inner + i0, *r = rstd + o * inner + i0;
    double s1[LN_BLOCK] = {0}, s2[LN_BLOCK] = {0};
    for (int64_t c = 0; c < C; c++) {
      double wc = w ? ld(w, c, f64) : 1.0;
      for (int64_t j = 0; j < len; j++) {
        int64_t k = base + c * inner + j;
        double gy = ld(g, k, f64) * wc;
        s1[j] += gy;
        s2[j] += gy * (ld(x, k, f64) - m[j]) * r[j];
      }
    }
    for (int64_t j = 0; j < len; j++) s1[j] /= (double)C, s2[j] /= (double)C;
    for (int64_t c = 0; c < C; c++) {
      double wc = w ? ld(w, c, f64) : 1.0;
      for (int64_t j = 0; j < len; j++) {
        int64_t k = base + c * inner + j;
        double gy = ld(g, k, f64) * wc;
        st(dx, k, r[j] * (gy - s1[j] - (ld(x, k, f64) - m[j]) * r[j] * s2[j]), f64);
      }
    }
  }
}

static void layer_norm_forward_cpu(const void *x /* (outer, C, inner) */, const void *w /* (C) or NULL */,
                                   const void *b /* (C) or NULL */, void *y /* (outer, C, inner) */,
                                   double *mean /* (outer, inner) */, double *rstd /* (outer, inner) */,
                                   int64_t outer, int64_t C, int64_t inner, double eps, bool f64) {
  if (inner > 1) layer_norm_forward_blocked(x, w, b, y, mean, rstd, outer, C, inner, eps, f64);
  else layer_norm_forward_reference(x, w, b, y, mean, rstd, outer, C, inner, eps, f64);
}

static void layer_norm_backward_cpu(const void *g /* (outer, C, inner) */, const void *x /* (outer, C, inner) */,
                                    const void *w /* (C) or NULL */, const double *mean /* (outer, inner) */,
                                    const double *rstd /* (outer, inner) */, void *dx /* (outer, C, inner) or NULL */,
                                    void *dw /* (C) or NULL */, void *db /* (C) or NULL */, int64_t outer, int64_t C,
                                    int64_t inner, bool f64) {
  if (inner > 1 && dx) {
    layer_norm_backward_blocked(g, x, w, mean, rstd, dx, outer, C, inner, f64);
    dx = NULL; /* done; the reference adds dw and db */
  }
  layer_norm_backward_reference(g, x, w, mean, rstd, dx, dw, db, outer, C, inner, f64);
}

/* Batch norm statistics: mean and biased variance per c over (o, i). */
static void batch_stats_cpu(const void *x /* (outer, C, inner) */, double *mean /* (C) */, double *var /* (C) */,
                            int64_t outer, int64_t C, int64_t inner, bool f64) {
  double n = (double)(outer * inner);
  _Pragma("omp parallel for if (outer * C * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t c = 0; c < C; c++) {
    double s = 0, v = 0;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < inner; i++) s += ld(x, (o * C + c) * inner + i, f64);
    double m = s / n;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < inner; i++) {
        double d = ld(x, (o * C + c) * inner + i, f64) - m;
        v += d * d;
      }
    mean[c] = m;
    var[c] = v / n;
  }
}

static void batch_norm_apply_cpu(const void *x /* (outer, C, inner) */, const void *w /* (C) or NULL */,
                                 const void *b /* (C) or NULL */, const double *mean /* (C) */,
                                 const double *rstd /* (C) */, void *y /* (outer, C, inner) */, int64_t outer,
                                 int64_t C, int64_t inner, bool f64) {
  int64_t rows = outer * C;
  _Pragma("omp parallel for if (rows * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t row = 0; row < rows; row++) {
    int64_t c = row % C;
    double scale = rstd[c] * (w ? ld(w, c, f64) : 1.0), shift = (b ? ld(b, c, f64) : 0.0) - mean[c] * scale;
    for (int64_t i = 0; i < inner; i++) st(y, row * inner + i, ld(x, row * inner + i, f64) * scale + shift, f64);
  }
}

static void batch_norm_backward_cpu(const void *g /* (outer, C, inner) */, const void *x /* (outer, C, inner) */,
                                    const void *w /* (C) or NULL */, const double *mean /* (C) */,
                                    const double *rstd /* (C) */, void *dx /* (outer, C, inner) or NULL */,
                                    void *dw /* (C) or NULL */, void *db /* (C) or NULL */, int64_t outer, int64_t C,
                                    int64_t inner, bool batch_stats, bool f64) {
  double n = (double)(outer * inner);
  _Pragma("omp parallel for if (outer * C * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t c = 0; c < C; c++) {
    double m = mean[c], r = rstd[c], wc = w ? ld(w, c, f64) : 1.0, sg = 0, sgx = 0;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t k = (o * C + c) * inner + i;
        double gv = ld(g, k, f64);
        sg += gv;
        sgx += gv * (ld(x, k, f64) - m) * r;
      }
    if (dw) st(dw, c, sgx, f64);
    if (db) st(db, c, sg, f64);
    if (!dx) continue;
    double a = batch_stats ? sg / n : 0.0, bcoef = batch_stats ? sgx / n : 0.0;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t k = (o * C + c) * inner + i;
        double xhat = (ld(x, k, f64) - m) * r;
        st(dx, k, wc * r * (ld(g, k, f64) - a - xhat * bcoef), f64);
      }
  }
}

/* ---- float32 batch norm: the fast path ------------------------------------------------------- */

/* The reference's single double accumulator makes every add wait for the one before (the compiler
 * may not reorder floating-point sums), so a channel of 8 x 14 x 14 values takes ~4 cycles each.
 * BN_LANES independent partial sums let the loop run as vectors; they are still double, so the
 * statistics keep the reference's accuracy. One channel at a time: its rows (outer x inner floats)
 * stay in L1/L2 between the statistics and the pass that writes y or dx. */
#define BN_LANES 16

/* sum of x (n) */
static double bn_sum_f32(const float *x /* (n) */, int64_t n) {
  double acc[BN_LANES] = {0}, s = 0;
  int64_t i = 0;
  for (; i + BN_LANES <= n; i += BN_LANES)
    for (int j = 0; j < BN_LANES; j++) acc[j] += (double)x[i + j];
  for (; i < n; i++) s += (double)x[i];
  for (int j = 0; j < BN_LANES; j++) s += acc[j];
  return s;
}

/* sum of (x - m)^2 over x (n) */
static double bn_sumsq_f32(const float *x /* (n) */, int64_t n, double m) {
  double acc[BN_LANES] = {0}, s = 0;
  int64_t i = 0;
  for (; i + BN_LANES <= n; i += BN_LANES)
    for (int j = 0; j < BN_LANES; j++) {
      double d = (double)x[i + j] - m;
      acc[j] += d * d;
    }
  for (; i < n; i++) {
    double d = (double)x[i] - m;
    s += d * d;
  }
  for (int j = 0; j < BN_LANES; j++) s += acc[j];
  return s;
}

/* adds the sum of g to *sg and the sum of g * (x - m) to *sgd, over g, x (n) */
static void bn_sums_grad_f32(const float *g /* (n) */, const float *x /* (n) */, int64_t n, double m, double *sg,
                             double *sgd) {
  double a1[BN_LANES] = {0}, a2[BN_LANES] = {0}, s1 = 0, s2 = 0;
  int64_t i = 0;
  for (; i + BN_LANES <= n; i += BN_LANES)
    for (int j = 0; j < BN_LANES; j++) {
      double gv = (double)g[i + j];
      a1[j] += gv;
      a2[j] += gv * ((double)x[i + j] - m);
    }
  for (; i < n; i++) {
    s1 += (double)g[i];
    s2 += (double)g[i] * ((double)x[i] - m);
  }
  for (int j = 0; j < BN_LANES; j++) s1 += a1[j], s2 += a2[j];
  *sg += s1;
  *sgd += s2;
}

/* y (n) = x * scale + shift, in double as the reference rounds it */
static void bn_apply_row_f32(const float *x /* (n) */, float *y /* (n) */, int64_t n, double scale, double shift) {
  for (int64_t i = 0; i < n; i++) y[i] = (float)((double)x[i] * scale + shift);
}

/* Training forward: batch statistics and y in one pass over the channels; mean, var (biased) and
 * rstd come back for the running statistics and for backward. */
static void batch_norm_train_f32(const float *x /* (outer, C, inner) */, const float *w /* (C) or NULL */,
                                 const float *b /* (C) or NULL */, float *y /* (outer, C, inner) */,
                                 double *mean /* (C) */, double *var /* (C) */, double *rstd /* (C) */, int64_t outer,
                                 int64_t C, int64_t inner, double eps) {
  double n = (double)(outer * inner);
  _Pragma("omp parallel for if (outer * C * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t c = 0; c < C; c++) {
    double s = 0, v = 0;
    for (int64_t o = 0; o < outer; o++) s += bn_sum_f32(x + (o * C + c) * inner, inner);
    double m = s / n;
    for (int64_t o = 0; o < outer; o++) v += bn_sumsq_f32(x + (o * C + c) * inner, inner, m);
    double r = 1.0 / sqrt(v / n + eps);
    double scale = r * (w ? (double)w[c] : 1.0), shift = (b ? (double)b[c] : 0.0) - m * scale;
    for (int64_t o = 0; o < outer; o++)
      bn_apply_row_f32(x + (o * C + c) * inner, y + (o * C + c) * inner, inner, scale, shift);
    mean[c] = m, var[c] = v / n, rstd[c] = r;
  }
}

/* Eval forward: y with the given statistics. */
static void batch_norm_apply_f32(const float *x /* (outer, C, inner) */, const float *w /* (C) or NULL */,
                                 const float *b /* (C) or NULL */, const double *mean /* (C) */,
                                 const double *rstd /* (C) */, float *y /* (outer, C, inner) */, int64_t outer,
                                 int64_t C, int64_t inner) {
  int64_t rows = outer * C;
  _Pragma("omp parallel for if (rows * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t row = 0; row < rows; row++) {
    int64_t c = row % C;
    double scale = rstd[c] * (w ? (double)w[c] : 1.0), shift = (b ? (double)b[c] : 0.0) - mean[c] * scale;
    bn_apply_row_f32(x + row * inner, y + row * inner, inner, scale, shift);
  }
}

/* Backward, as batch_norm_backward_cpu. */
static void batch_norm_backward_f32(const float *g /* (outer, C, inner) */, const float *x /* (outer, C, inner) */,
                                    const float *w /* (C) or NULL */, const double *mean /* (C) */,
                                    const double *rstd /* (C) */, float *dx /* (outer, C, inner) or NULL */,
                                    float *dw /* (C) or NULL */, float *db /* (C) or NULL */, int64_t outer, int64_t C,
                                    int64_t inner, bool batch_stats) {
  double n = (double)(outer * inner);
  _Pragma("omp parallel for if (outer * C * inner >= LARK_PARALLEL_GRAIN)")
  for (int64_t c = 0; c < C; c++) {
    double m = mean[c], r = rstd[c], wc = w ? (double)w[c] : 1.0, sg = 0, sgd = 0;
    for (int64_t o = 0; o < outer; o++)
      bn_sums_grad_f32(g + (o * C + c) * inner, x + (o * C + c) * inner, inner, m, &sg, &sgd);
    double sgx = sgd * r; /* sum g * xhat */
    if (dw) dw[c] = (float)sgx;
    if (db) db[c] = (float)sg;
    if (!dx) continue;
    /* dx = wc r (g - a - (x - m) r bcoef) = k1 g + k2 x + k0 */
    double a = batch_stats ? sg / n : 0.0, bcoef = batch_stats ? sgx / n : 0.0;
    double k1 = wc * r, k2 = -wc * r * r * bcoef, k0 = -wc * r * a - k2 * m;
    for (int64_t o = 0; o < outer; o++) {
      const float *gr = g + (o * C + c) * inner, *xr = x + (o * C + c) * inner;
      float *dr = dx + (o * C + c) * inner;
      for (int64_t i = 0; i < inner; i++) dr[i] = (float)(k1 * (double)gr[i] + k2 * (double)xr[i] + k0);
    }
  }
}

/* ---- checks --------------------------------------------------------------------------------- */

/* Whether the backend of dev has the kernels of layer norm (batch false) or batch norm. */
static bool has_norm_kernels(lark_device dev, bool batch) {
  const lark_backend *be = lark_backend_for(dev);
  if (!be) return false;
  return batch ? be->batch_norm_forward && be->batch_norm_backward
               : be->layer_norm_forward && be->layer_norm_backward;
}

static int check_input(const char *op, const lark_tensor *x, int min_ndim, const char *layout, bool batch) {
  if (!x) return lark_set_error(LARK_ERR_ARG, "%s: input is missing", op);
  if (lark_check_alive(op, x, "input")) return lark_error_code();
  if (x->dtype != LARK_FLOAT32 && x->dtype != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: input must be float32 or float64, got %s", op, lark_dtype_name(x->dtype));
  if (x->ndim < min_ndim)
    return lark_set_error(LARK_ERR_SHAPE, "%s: input must be %s (at least %d dims), got %d dims", op, layout, min_ndim,
                          x->ndim);
  lark_device dev = lark_tensor_device(x);
  if (dev.kind != LARK_CPU && !has_norm_kernels(dev, batch)) return lark_backend_missing(op, dev);
  return 0;
}

/* A per-channel vector (C) of x's dtype on x's device; NULL passes. */
static int check_param(const char *op, const char *name, const lark_tensor *p, const lark_tensor *x, int64_t C) {
  if (!p) return 0;
  char buf[128];
  if (lark_check_alive(op, p, name)) return lark_error_code();
  if (p->ndim != 1 || p->shape[0] != C)
    return lark_set_error(LARK_ERR_SHAPE, "%s: %s must have shape [%lld] (one value per channel), got %s", op, name,
                          (long long)C, lark_shape_str(p->ndim, p->shape, buf, sizeof buf));
  if (p->dtype != x->dtype)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s must have the input's dtype %s, got %s", op, name,
                          lark_dtype_name(x->dtype), lark_dtype_name(p->dtype));
  if (!lark_device_eq(lark_tensor_device(p), lark_tensor_device(x)))
    return lark_set_error(LARK_ERR_DEVICE, "%s: %s must be on the input's device", op, name);
  return 0;
}

/* ---- autograd ------------------------------------------------------------------------------- */

/* saved: 0 x (contiguous), 1 mean, 2 rstd (float64), 3 weight when iarg[4]. iarg: kind, outer, C,
 * inner, has weight. */
static int norm_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *x = lark_node_saved(n, 0), *mean = lark_node_saved(n, 1), *rstd = lark_node_saved(n, 2);
  const lark_tensor *w = n->iarg[4] ? lark_node_saved(n, 3) : NULL;
  if (!x || !mean || !rstd || (n->iarg[4] && !w)) return lark_error_code();
  int kind = (int)n->iarg[0];
  int64_t outer = n->iarg[1], C = n->iarg[2], inner = n->iarg[3];
  bool f64 = x->dtype == LARK_FLOAT64;
  lark_scope s = {0};
  lark_tensor *gc = S_CAST(&s, g, x->dtype);
  gc = gc ? lark_scope_add(&s, lark_contiguous(gc)) : NULL;
  lark_tensor *wc = w ? lark_scope_add(&s, lark_contiguous(w)) : NULL;
  lark_device dev = lark_tensor_device(x);
  for (int i = 0; i < 3 && !s.failed; i++)
    if (n->needs_grad[i]) {
      gin[i] = i == 0 ? lark_empty(x->ndim, x->shape, x->dtype, &dev) : lark_empty(1, &C, x->dtype, &dev);
      if (!gin[i]) s.failed = true;
    }
  if (!s.failed && dev.kind != LARK_CPU) {
    /* the device's kernels (checked to exist when the node was recorded) */
    const lark_backend *be = lark_backend_for(dev);
    int rc = kind == NORM_LAYER
                 ? be->layer_norm_backward(gin[0], gin[1], gin[2], gc, x, wc, mean, rstd, outer, C, inner)
                 : be->batch_norm_backward(gin[0], gin[1], gin[2], gc, x, wc, mean, rstd, outer, C, inner,
                                           kind == NORM_BATCH_TRAIN);
    if (rc) s.failed = true;
  } else if (!s.failed) {
    void *dx = gin[0] ? lark_data_ptr(gin[0]) : NULL, *dw = gin[1] ? lark_data_ptr(gin[1]) : NULL,
         *db = gin[2] ? lark_data_ptr(gin[2]) : NULL;
    const void *wp = wc ? lark_data_ptr(wc) : NULL;
    if (kind == NORM_LAYER)
      layer_norm_backward_cpu(lark_data_ptr(gc), lark_data_ptr(x), wp, lark_data_ptr(mean), lark_data_ptr(rstd), dx, dw,
                              db, outer, C, inner, f64);
    else if (!f64)
      batch_norm_backward_f32(lark_data_ptr(gc), lark_data_ptr(x), wp, lark_data_ptr(mean), lark_data_ptr(rstd), dx, dw,
                              db, outer, C, inner, kind == NORM_BATCH_TRAIN);
    else
      batch_norm_backward_cpu(lark_data_ptr(gc), lark_data_ptr(x), wp, lark_data_ptr(mean), lark_data_ptr(rstd), dx, dw,
                              db, outer, C, inner, kind == NORM_BATCH_TRAIN, f64);
  }
  return lark_scope_end(&s, gin, 3);
}

static void record_norm(const char *name, int kind, lark_tensor *out, const lark_tensor *x, const lark_tensor *xc,
                        const lark_tensor *w, const lark_tensor *b, const lark_tensor *mean, const lark_tensor *rstd,
                        int64_t outer, int64_t C, int64_t inner) {
  const lark_tensor *in[3] = {x, w, b};
  lark_node *n = lark_node_new(name, norm_backward, 3, in);
  if (!n) return;
  n->iarg[0] = kind, n->iarg[1] = outer, n->iarg[2] = C, n->iarg[3] = inner, n->iarg[4] = w != NULL;
  if (lark_node_save(n, xc) || lark_node_save(n, mean) || lark_node_save(n, rstd) || (w && lark_node_save(n, w))) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

/* ---- front functions ------------------------------------------------------------------------ */

/* Layer norm over dim 1 of the (outer, C, inner) view of x. */
static lark_tensor *layer_norm_impl(const char *op, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                                    double eps, bool channels_first) {
  if (check_input(op, x, channels_first ? 2 : 1, channels_first ? "(N, C, ...)" : "(..., C)", false)) return NULL;
  int cdim = channels_first ? 1 : x->ndim - 1;
  int64_t C = x->shape[cdim], outer = 1, inner = 1;
  for (int d = 0; d < cdim; d++) outer *= x->shape[d];
  for (int d = cdim + 1; d < x->ndim; d++) inner *= x->shape[d];
  if (check_param(op, "weight", w, x, C) || check_param(op, "bias", b, x, C)) return NULL;
  if (!(eps >= 0)) return lark_set_error(LARK_ERR_ARG, "%s: eps must be >= 0, got %g", op, eps), NULL;
  lark_tensor *out = NULL, *xc = NULL, *wc = NULL, *bc = NULL, *mean = NULL, *rstd = NULL;
  lark_device dev = lark_tensor_device(x);
  LARK_NO_GRAD({
    int64_t gs = outer * inner;
    xc = lark_contiguous(x);
    wc = w ? lark_contiguous(w) : NULL;
    bc = b ? lark_contiguous(b) : NULL;
    mean = lark_empty(1, &gs, LARK_FLOAT64, &dev);
    rstd = lark_empty(1, &gs, LARK_FLOAT64, &dev);
    out = lark_empty(x->ndim, x->shape, x->dtype, &dev);
    bool ready = xc && (!w || wc) && (!b || bc) && mean && rstd && out;
    if (ready && dev.kind != LARK_CPU) {
      if (lark_backend_for(dev)->layer_norm_forward(out, xc, wc, bc, mean, rstd, outer, C, inner, eps)) {
        lark_tensor_release(out);
        out = NULL;
      }
    } else if (ready)
      layer_norm_forward_cpu(lark_data_ptr(xc), wc ? lark_data_ptr(wc) : NULL, bc ? lark_data_ptr(bc) : NULL,
                             lark_data_ptr(out), lark_data_ptr(mean), lark_data_ptr(rstd), outer, C, inner, eps,
                             x->dtype == LARK_FLOAT64);
    else {
      lark_tensor_release(out);
      out = NULL;
    }
  });
  if (out && (x->requires_grad || (w && w->requires_grad) || (b && b->requires_grad)))
    record_norm("layer_norm", NORM_LAYER, out, x, xc, w, b, mean, rstd, outer, C, inner);
  lark_tensor_release(xc);
  lark_tensor_release(wc);
  lark_tensor_release(bc);
  lark_tensor_release(mean);
  lark_tensor_release(rstd);
  return out;
}

lark_tensor *lark_layer_norm(const lark_tensor *x, const lark_tensor *weight, const lark_tensor *bias, double eps) {
  return layer_norm_impl("layer_norm", x, weight, bias, eps, false);
}

lark_tensor *lark_layer_norm_channels_first(const lark_tensor *x, const lark_tensor *weight, const lark_tensor *bias,
                                            double eps) {
  return layer_norm_impl("layer_norm_channels_first", x, weight, bias, eps, true);
}

/* running = (1 - momentum) * running + momentum * stat, written in place through any layout. */
static int update_running(lark_tensor *running, const double *stat, double momentum, int64_t C) {
  lark_tensor *old = lark_cast(running, LARK_FLOAT64), *oc = old ? lark_contiguous(old) : NULL;
  lark_tensor *upd = lark_empty(1, &C, LARK_FLOAT64, NULL);
  int rc = oc && upd ? 0 : lark_error_code();
  if (!rc) {
    const double *o = lark_data_ptr(oc);
    double *u = lark_data_ptr(upd);
    for (int64_t c = 0; c < C; c++) u[c] = (1.0 - momentum) * o[c] + momentum * stat[c];
    rc = lark_copy_(running, upd);
  }
  lark_tensor_release(old);
  lark_tensor_release(oc);
  lark_tensor_release(upd);
  return rc;
}

/* The same update on another device, through its elementwise kernels: update_running's float64
 * arithmetic in its order, so given the same statistics both devices write the same bits. */
static int update_running_device(lark_tensor *running, const lark_tensor *stat /* (C) float64 */, double momentum) {
  lark_tensor *old = lark_cast(running, LARK_FLOAT64);
  lark_tensor *a = old ? lark_binary_scalar(LARK_OP_MUL, old, 1.0 - momentum, false, true) : NULL;
  lark_tensor *b = lark_binary_scalar(LARK_OP_MUL, stat, momentum, false, false);
  lark_tensor *upd = a && b ? lark_binary(LARK_OP_ADD, a, b) : NULL;
  int rc = upd ? lark_copy_(running, upd) : lark_error_code();
  lark_tensor_release(old);
  lark_tensor_release(a);
  lark_tensor_release(b);
  lark_tensor_release(upd);
  return rc;
}

/* batch_norm_impl on a non-CPU device, after its checks: the statistics are float64 tensors on the
 * device, the backend's batch_norm_forward computes them (training) or takes the running ones
 * (eval) and writes y. */
static lark_tensor *batch_norm_device(const lark_tensor *x, lark_tensor *rm, lark_tensor *rv, const lark_tensor *w,
                                      const lark_tensor *b, bool training, double momentum, double eps,
                                      lark_tensor **mean_out, lark_tensor **rstd_out, lark_tensor **xc_out,
                                      const int64_t dims[3]) {
  int64_t outer = dims[0], C = dims[1], inner = dims[2];
  lark_device dev = lark_tensor_device(x);
  const lark_backend *be = lark_backend_for(dev);
  lark_tensor *xc = lark_contiguous(x), *wc = w ? lark_contiguous(w) : NULL, *bc = b ? lark_contiguous(b) : NULL;
  lark_tensor *mean = lark_empty(1, &C, LARK_FLOAT64, &dev), *rstd = lark_empty(1, &C, LARK_FLOAT64, &dev);
  lark_tensor *var = lark_empty(1, &C, LARK_FLOAT64, &dev), *out = lark_empty(x->ndim, x->shape, x->dtype, &dev);
  bool ok = xc && (!w || wc) && (!b || bc) && mean && rstd && var && out;
  /* eval: the running statistics, converted to float64 as the CPU reads them */
  if (ok && !training && (lark_copy_(mean, rm) || lark_copy_(var, rv))) ok = false;
  if (ok && be->batch_norm_forward(out, xc, wc, bc, mean, var, rstd, outer, C, inner, eps, training)) ok = false;
  if (ok && training) {
    double n = (double)(outer * inner);
    if (rm && update_running_device(rm, mean, momentum)) ok = false;
    if (ok && rv) {
      /* unbiased, as PyTorch keeps it: var * (n / (n - 1)), the CPU's product */
      lark_tensor *unbiased = lark_binary_scalar(LARK_OP_MUL, var, n / (n - 1.0), false, false);
      if (!unbiased || update_running_device(rv, unbiased, momentum)) ok = false;
      lark_tensor_release(unbiased);
    }
  }
  lark_tensor_release(wc);
  lark_tensor_release(bc);
  lark_tensor_release(var);
  if (!ok) {
    lark_tensor_release(out);
    lark_tensor_release(xc);
    lark_tensor_release(mean);
    lark_tensor_release(rstd);
    return NULL;
  }
  *mean_out = mean, *rstd_out = rstd, *xc_out = xc;
  return out;
}

static lark_tensor *batch_norm_impl(const lark_tensor *x, lark_tensor *rm, lark_tensor *rv, const lark_tensor *w,
                                    const lark_tensor *b, bool training, double momentum, double eps,
                                    lark_tensor **mean_out, lark_tensor **rstd_out, lark_tensor **xc_out,
                                    int64_t dims[3]) {
  const char *op = "batch_norm";
  if (check_input(op, x, 2, "(N, C, ...)", true)) return NULL;
  int64_t C = x->shape[1], outer = x->shape[0], inner = 1;
  for (int d = 2; d < x->ndim; d++) inner *= x->shape[d];
  dims[0] = outer, dims[1] = C, dims[2] = inner;
  if (check_param(op, "weight", w, x, C) || check_param(op, "bias", b, x, C) ||
      check_param(op, "running_mean", rm, x, C) || check_param(op, "running_var", rv, x, C))
    return NULL;
  if (training && ((rm && lark_check_writable(op, rm, "running_mean")) || (rv && lark_check_writable(op, rv, "running_var"))))
    return NULL;
  if (!training && (!rm || !rv))
    return lark_set_error(LARK_ERR_ARG, "batch_norm: running_mean and running_var are required in eval mode"), NULL;
  if (training && outer * inner <= 1) {
    char buf[128];
    return lark_set_error(LARK_ERR_SHAPE, "batch_norm: expected more than 1 value per channel when training, got input of shape %s",
                          lark_shape_str(x->ndim, x->shape, buf, sizeof buf)), NULL;
  }
  if (!(eps >= 0)) return lark_set_error(LARK_ERR_ARG, "batch_norm: eps must be >= 0, got %g", eps), NULL;
  if (training && (rm || rv) && !(momentum >= 0 && momentum <= 1))
    return lark_set_error(LARK_ERR_ARG, "batch_norm: momentum must be in [0, 1], got %g", momentum), NULL;
  if (lark_tensor_device(x).kind != LARK_CPU)
    return batch_norm_device(x, rm, rv, w, b, training, momentum, eps, mean_out, rstd_out, xc_out, dims);
  bool f64 = x->dtype == LARK_FLOAT64;
  lark_tensor *xc = lark_contiguous(x), *wc = w ? lark_contiguous(w) : NULL, *bc = b ? lark_contiguous(b) : NULL;
  lark_tensor *mean = lark_empty(1, &C, LARK_FLOAT64, NULL), *rstd = lark_empty(1, &C, LARK_FLOAT64, NULL);
  lark_tensor *var = lark_empty(1, &C, LARK_FLOAT64, NULL), *out = lark_empty(x->ndim, x->shape, x->dtype, NULL);
  bool ok = xc && (!w || wc) && (!b || bc) && mean && rstd && var && out;
  if (ok) {
    double *m = lark_data_ptr(mean), *r = lark_data_ptr(rstd), *v = lark_data_ptr(var);
    /* float32 training writes y with the statistics (the running ones are updated after) */
    bool fused = training && !f64;
    if (fused) {
      batch_norm_train_f32(lark_data_ptr(xc), wc ? lark_data_ptr(wc) : NULL, bc ? lark_data_ptr(bc) : NULL,
                           lark_data_ptr(out), m, v, r, outer, C, inner, eps);
    } else if (training) {
      batch_stats_cpu(lark_data_ptr(xc), m, v, outer, C, inner, f64);
      for (int64_t c = 0; c < C; c++) r[c] = 1.0 / sqrt(v[c] + eps);
    }
    if (training) {
      double n = (double)(outer * inner);
      if (rm && update_running(rm, m, momentum, C)) ok = false;
      if (ok && rv) {
        for (int64_t c = 0; c < C; c++) v[c] *= n / (n - 1.0); /* unbiased, as PyTorch keeps it */
        if (update_running(rv, v, momentum, C)) ok = false;
      }
    } else {
      lark_tensor *m64 = lark_cast(rm, LARK_FLOAT64), *v64 = lark_cast(rv, LARK_FLOAT64);
      lark_tensor *mc = m64 ? lark_contiguous(m64) : NULL, *vc = v64 ? lark_contiguous(v64) : NULL;
      if (mc && vc) {
        const double *pm = lark_data_ptr(mc), *pv = lark_data_ptr(vc);
        for (int64_t c = 0; c < C; c++) m[c] = pm[c], r[c] = 1.0 / sqrt(pv[c] + eps);
      } else {
        ok = false;
      }
      lark_tensor_release(m64);
      lark_tensor_release(v64);
      lark_tensor_release(mc);
      lark_tensor_release(vc);
    }
    if (ok && !fused && !f64)
      batch_norm_apply_f32(lark_data_ptr(xc), wc ? lark_data_ptr(wc) : NULL, bc ? lark_data_ptr(bc) : NULL, m, r,
                           lark_data_ptr(out), outer, C, inner);
    else if (ok && !fused)
      batch_norm_apply_cpu(lark_data_ptr(xc), wc ? lark_data_ptr(wc) : NULL, bc ? lark_data_ptr(bc) : NULL, m, r,
                           lark_data_ptr(out), outer, C, inner, f64);
  }
  lark_tensor_release(wc);
  lark_tensor_release(bc);
  lark_tensor_release(var);
  if (!ok) {
    lark_tensor_release(out);
    lark_tensor_release(xc);
    lark_tensor_release(mean);
    lark_tensor_release(rstd);
    return NULL;
  }
  *mean_out = mean, *rstd_out = rstd, *xc_out = xc;
  return out;
}

lark_tensor *lark_batch_norm(const lark_tensor *x, lark_tensor *running_mean, lark_tensor *running_var,
                             const lark_tensor *weight, const lark_tensor *bias, bool training, double momentum,
                             double eps) {
  lark_tensor *out, *mean = NULL, *rstd = NULL, *xc = NULL;
  int64_t dims[3] = {0, 0, 0};
  LARK_NO_GRAD(out = batch_norm_impl(x, running_mean, running_var, weight, bias, training, momentum, eps, &mean, &rstd,
                                     &xc, dims));
  if (out && (x->requires_grad || (weight && weight->requires_grad) || (bias && bias->requires_grad)))
    record_norm("batch_norm", training ? NORM_BATCH_TRAIN : NORM_BATCH_EVAL, out, x, xc, weight, bias, mean, rstd,
                dims[0], dims[1], dims[2]);
  lark_tensor_release(xc);
  lark_tensor_release(mean);
  lark_tensor_release(rstd);
  return out;
}
