/* softmax.c: softmax and log_softmax along a dim, nll_loss and cross_entropy, forward, hand-written
 * backward kernels and autograd recording.
 *
 * softmax sees x as a contiguous (outer, D, inner) block and works on each line along D, shifted by
 * its max so that exp never overflows:  y = exp(x - max) / sum exp(x - max),
 * log_softmax = x - max - log(sum exp(x - max)). Backward on the saved output y:
 *   softmax:     dx = y * (g - sum(g * y))
 *   log_softmax: dx = g - exp(y) * sum(g)
 * cross_entropy (PyTorch 1.13's definition) on logits (N, C) with target distribution q per row
 * (one-hot of the class, or the given probabilities), label smoothing e making it
 * q' = (1 - e) q + e / C:  loss_n = -sum_c q'_c log p_c;  d loss_n / d z = p sum(q') - q',
 * d loss_n / d q = -(1 - e) log p.  'mean' divides the sum by N. */
#include <math.h>
#include <string.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"
#include "nn.h"
#include "vecmath.h"

static inline double ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
static inline void st(void *p, int64_t i, double v, bool f64) {
  if (f64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

/* ---- kernels -------------------------------------------------------------------------------- */

static void softmax_forward_reference(const void *x, void *y, int64_t outer, int64_t D, int64_t inner, bool logmode,
                                      bool f64);

/* The fast path for float32 along the last dim (inner 1), the usual case of classifier logits:
 * contiguous rows, exp through lark_expf so that the loops vectorise, the sum still in double.
 * softmax_forward_cpu's generic loop below is its reference (the specs compare the two). */
static void softmax_rows_f32(const float *x /* (rows, D) */, float *y /* (rows, D) */, int64_t rows, int64_t D,
                             bool logmode) {
  _Pragma("omp parallel for if (rows * D >= LARK_PARALLEL_GRAIN)")
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * D;
    float *yr = y + r * D;
    float mx = -INFINITY;
    for (int64_t d = 0; d < D; d++) mx = xr[d] > mx ? xr[d] : mx;
    if (mx == -INFINITY || mx != mx) mx = 0; /* all -inf, or a NaN (which then spreads through exp) */
    for (int64_t d = 0; d < D; d++) yr[d] = lark_expf(xr[d] - mx);
    double s = 0;
    for (int64_t d = 0; d < D; d++) s += yr[d];
    if (logmode) {
      /* (x - max) first: exact enough on its own scale, where x - (max + lse) would round the
       * shift to the ulp of max */
      float lse = (float)log(s);
      for (int64_t d = 0; d < D; d++) yr[d] = (xr[d] - mx) - lse;
    } else {
      float inv = (float)(1.0 / s);
      for (int64_t d = 0; d < D; d++) yr[d] *= inv;
    }
  }
}

static void softmax_forward_cpu(const void *x /* (outer, D, inner) */, void *y /* (outer, D, inner) */,
                                int64_t outer, int64_t D, int64_t inner, bool logmode, bool f64) {
  if (!f64 && inner == 1 && D > 0) {
    softmax_rows_f32(x, y, outer, D, logmode);
    return;
  }
  softmax_forward_reference(x, y, outer, D, inner, logmode, f64);
}

/* The plain loop: any layout, both dtypes, everything in double. */
static void softmax_forward_reference(const void *x /* (outer, D, inner) */, void *y /* (outer, D, inner) */,
                                      int64_t outer, int64_t D, int64_t inner, bool logmode, bool f64) {
  int64_t lines = outer * inner;
  _Pragma("omp parallel for if (lines * D >= LARK_PARALLEL_GRAIN)")
  for (int64_t l = 0; l < lines; l++) {
    int64_t base = (l / inner) * D * inner + l % inner;
    double mx = -INFINITY, s = 0;
    for (int64_t d = 0; d < D; d++) mx = fmax(mx, ld(x, base + d * inner, f64));
    if (mx == -INFINITY) mx = 0; /* a line of -inf: exp(-inf - 0) = 0, as PyTorch gives nan/-inf */
    for (int64_t d = 0; d < D; d++) s += exp(ld(x, base + d * inner, f64) - mx);
    double lse = log(s);
    for (int64_t d = 0; d < D; d++) {
      double z = ld(x, base + d * inner, f64) - mx;
      st(y, base + d * inner, logmode ? z - lse : exp(z) / s, f64);
    }
  }
}

static void softmax_backward_cpu(const void *g /* (outer, D, inner) */, const void *y /* (outer, D, inner) */,
                                 void *dx /* (outer, D, inner) */, int64_t outer, int64_t D, int64_t inner, bool logmode,
                                 bool f64) {
  int64_t lines = outer * inner;
  _Pragma("omp parallel for if (lines * D >= LARK_PARALLEL_GRAIN)")
  for (int64_t l = 0; l < lines; l++) {
    int64_t base = (l / inner) * D * inner + l % inner;
    double s = 0;
    for (int64_t d = 0; d < D; d++) {
      int64_t k = base + d * inner;
      s += logmode ? ld(g, k, f64) : ld(g, k, f64) * ld(y, k, f64);
    }
    for (int64_t d = 0; d < D; d++) {
      int64_t k = base + d * inner;
      double gv = ld(g, k, f64), yv = ld(y, k, f64);
      st(dx, k, logmode ? gv - exp(yv) * s : yv * (gv - s), f64);
    }
  }
}

/* Per-row loss of cross entropy / nll. target_index (N) or target_prob (N, C): one of them.
 * logp (N, C) are log-probabilities. smoothing applies to cross entropy only. */
static void loss_rows_cpu(const void *logp /* (N, C) */, const int64_t *target_index /* (N) or NULL */,
                          const void *target_prob /* (N, C) or NULL */, double *loss /* (N) */, int64_t N, int64_t C,
                          double smoothing, bool f64) {
  _Pragma("omp parallel for if (N * C >= LARK_PARALLEL_GRAIN)")
  for (int64_t n = 0; n < N; n++) {
    double l = 0, all = 0;
    if (target_index) {
      l = -ld(logp, n * C + target_index[n], f64);
    } else {
      for (int64_t c = 0; c < C; c++) l -= ld(target_prob, n * C + c, f64) * ld(logp, n * C + c, f64);
    }
    if (smoothing != 0) {
      for (int64_t c = 0; c < C; c++) all -= ld(logp, n * C + c, f64);
      l = (1 - smoothing) * l + smoothing * all / (double)C;
    }
    loss[n] = l;
  }
}

/* d loss / d logits (softmax of logp mixed in) or d loss / d logp (nll): g_row (N) is each row's
 * gradient (already divided by N for 'mean'). */
static void loss_backward_cpu(const double *g_row /* (N) */, const void *logp /* (N, C) */,
                              const int64_t *target_index /* (N) or NULL */, const void *target_prob /* (N, C) or NULL */,
                              void *dz /* (N, C) or NULL */, void *dq /* (N, C) or NULL */, int64_t N, int64_t C,
                              double smoothing, bool through_softmax, bool f64) {
  _Pragma("omp parallel for if (N * C >= LARK_PARALLEL_GRAIN)")
  for (int64_t n = 0; n < N; n++) {
    double gn = g_row[n], sumq = 0;
    if (dz) {
      /* q' summed: 1 for a class index, (1 - e) sum(q) + e for probabilities */
      if (target_index) sumq = 1;
      else {
        for (int64_t c = 0; c < C; c++) sumq += ld(target_prob, n * C + c, f64);
        sumq = (1 - smoothing) * sumq + smoothing;
      }
      for (int64_t c = 0; c < C; c++) {
        double q = target_index ? (c == target_index[n] ? 1.0 : 0.0) : ld(target_prob, n * C + c, f64);
        q = (1 - smoothing) * q + smoothing / (double)C;
        double v = through_softmax ? exp(ld(logp, n * C + c, f64)) * sumq - q : -q;
        st(dz, n * C + c, gn * v, f64);
      }
    }
    if (dq)
      for (int64_t c = 0; c < C; c++) st(dq, n * C + c, -gn * (1 - smoothing) * ld(logp, n * C + c, f64), f64);
  }
}

/* ---- checks --------------------------------------------------------------------------------- */

/* Whether the backend of dev has softmax's kernels, and the losses' too when loss. */
static bool has_kernels(lark_device dev, bool loss) {
  const lark_backend *be = lark_backend_for(dev);
  if (!be || !be->softmax_forward || !be->softmax_backward) return false;
  return !loss || (be->loss_rows && be->loss_backward);
}

static int check_float(const char *op, const char *name, const lark_tensor *x, bool loss) {
  if (!x) return lark_set_error(LARK_ERR_ARG, "%s: %s is missing", op, name);
  if (lark_check_alive(op, x, name)) return lark_error_code();
  if (x->dtype != LARK_FLOAT32 && x->dtype != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s must be float32 or float64, got %s", op, name,
                          lark_dtype_name(x->dtype));
  lark_device dev = lark_tensor_device(x);
  if (dev.kind != LARK_CPU && !has_kernels(dev, loss)) return lark_backend_missing(op, dev);
  return 0;
}

/* ---- softmax -------------------------------------------------------------------------------- */

/* saved: 0 the output (contiguous). iarg: outer, D, inner, log. */
static int softmax_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *y = lark_node_saved(n, 0);
  if (!y) return lark_error_code();
  lark_scope s = {0};
  lark_tensor *gc = S_CAST(&s, g, y->dtype);
  gc = gc ? lark_scope_add(&s, lark_contiguous(gc)) : NULL;
  lark_device dev = lark_tensor_device(y);
  if (gc && !(gin[0] = lark_empty(y->ndim, y->shape, y->dtype, &dev))) s.failed = true;
  if (!s.failed && dev.kind != LARK_CPU) {
    if (lark_backend_for(dev)->softmax_backward(gin[0], gc, y, n->iarg[0], n->iarg[1], n->iarg[2], n->iarg[3] != 0))
      s.failed = true;
  } else if (!s.failed)
    softmax_backward_cpu(lark_data_ptr(gc), lark_data_ptr(y), lark_data_ptr(gin[0]), n->iarg[0], n->iarg[1],
                         n->iarg[2], n->iarg[3] != 0, y->dtype == LARK_FLOAT64);
  return lark_scope_end(&s, gin, 1);
}

static lark_tensor *softmax_impl(const char *op, const lark_tensor *x, int dim, bool logmode) {
  if (check_float(op, "input", x, false)) return NULL;
  int nd = x->ndim ? x->ndim : 1; /* a 0-d tensor is one line of one element */
  int d = lark_wrap_dim(op, dim, nd);
  if (d < 0) return NULL;
  int64_t outer = 1, D = x->ndim ? x->shape[d] : 1, inner = 1;
  for (int i = 0; i < d && i < x->ndim; i++) outer *= x->shape[i];
  for (int i = d + 1; i < x->ndim; i++) inner *= x->shape[i];
  lark_tensor *out = NULL, *xc = NULL;
  lark_device dev = lark_tensor_device(x);
  LARK_NO_GRAD({
    xc = lark_contiguous(x);
    out = xc ? lark_empty(x->ndim, x->shape, x->dtype, &dev) : NULL;
    if (out && dev.kind != LARK_CPU) {
      if (lark_backend_for(dev)->softmax_forward(out, xc, outer, D, inner, logmode)) {
        lark_tensor_release(out);
        out = NULL;
      }
    } else if (out)
      softmax_forward_cpu(lark_data_ptr(xc), lark_data_ptr(out), outer, D, inner, logmode, x->dtype == LARK_FLOAT64);
  });
  lark_tensor_release(xc);
  if (out && x->requires_grad) {
    const lark_tensor *in[1] = {x};
    lark_node *n = lark_node_new(op, softmax_backward, 1, in);
    if (n) {
      n->iarg[0] = outer, n->iarg[1] = D, n->iarg[2] = inner, n->iarg[3] = logmode;
      if (lark_node_save(n, out)) lark_node_release(n);
      else lark_node_attach(n, out);
    }
  }
  return out;
}

lark_tensor *lark_softmax(const lark_tensor *x, int dim) { return softmax_impl("softmax", x, dim, false); }
lark_tensor *lark_log_softmax(const lark_tensor *x, int dim) { return softmax_impl("log_softmax", x, dim, true); }

/* ---- nll_loss and cross_entropy ------------------------------------------------------------- */

/* saved: 0 logp (N, C) contiguous, 1 target (contiguous int64 or probabilities). iarg: N, C,
 * reduction, through_softmax, target is an index. darg: smoothing. Inputs: {logits or logp, target}. */
static int loss_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *logp = lark_node_saved(n, 0), *target = lark_node_saved(n, 1);
  if (!logp || !target) return lark_error_code();
  int64_t N = n->iarg[0], C = n->iarg[1], shape[2] = {N, C};
  lark_reduction red = (lark_reduction)n->iarg[2];
  bool f64 = logp->dtype == LARK_FLOAT64, index = n->iarg[4] != 0;
  lark_scope s = {0};
  lark_tensor *g64 = S_CAST(&s, g, LARK_FLOAT64);
  g64 = g64 ? lark_scope_add(&s, lark_contiguous(g64)) : NULL;
  lark_device dev = lark_tensor_device(logp);
  if (dev.kind != LARK_CPU) {
    /* the device's kernel reads row n's gradient as g64[n * step] / div, as r[] is made below */
    for (int i = 0; i < 2 && !s.failed; i++)
      if (n->needs_grad[i] && !(i == 1 && index) && !(gin[i] = lark_empty(2, shape, logp->dtype, &dev)))
        s.failed = true;
    if (!s.failed &&
        lark_backend_for(dev)->loss_backward(gin[0], gin[1], g64, red == LARK_REDUCTION_NONE ? 1 : 0,
                                             red == LARK_REDUCTION_MEAN ? (double)N : 1.0, logp, index ? target : NULL,
                                             index ? NULL : target, n->darg[0], n->iarg[3] != 0))
      s.failed = true;
    return lark_scope_end(&s, gin, 2);
  }
  lark_tensor *rows = lark_scope_add(&s, lark_empty(1, &N, LARK_FLOAT64, NULL));
  for (int i = 0; i < 2 && !s.failed; i++)
    if (n->needs_grad[i] && !(i == 1 && index) && !(gin[i] = lark_empty(2, shape, logp->dtype, NULL))) s.failed = true;
  if (!s.failed) {
    const double *gp = lark_data_ptr(g64);
    double *r = lark_data_ptr(rows);
    for (int64_t k = 0; k < N; k++)
      r[k] = red == LARK_REDUCTION_NONE ? gp[k] : red == LARK_REDUCTION_MEAN ? gp[0] / (double)N : gp[0];
    loss_backward_cpu(r, lark_data_ptr(logp), index ? lark_data_ptr(target) : NULL, index ? NULL : lark_data_ptr(target),
                      gin[0] ? lark_data_ptr(gin[0]) : NULL, gin[1] ? lark_data_ptr(gin[1]) : NULL, N, C, n->darg[0],
                      n->iarg[3] != 0, f64);
  }
  return lark_scope_end(&s, gin, 2);
}

/* loss_impl on a non-CPU device, after its checks: the backend's log_softmax (cross entropy) and
 * per-row losses, which also find a class index out of range; the reduction sums the float64 row
 * losses with the device's reduction (in float64, in a different order than the CPU's loop) and
 * rounds the total to the input's dtype once, as the CPU does. */
static lark_tensor *loss_device(const char *op, const lark_tensor *input, const lark_tensor *target, double smoothing,
                                lark_reduction red, bool logits, lark_tensor **logp_out, lark_tensor **target_out) {
  lark_device dev = lark_tensor_device(input);
  const lark_backend *be = lark_backend_for(dev);
  bool index = target->dtype == LARK_INT64;
  int64_t N = input->shape[0], C = input->shape[1], shape[2] = {N, C}, bad = -1, bad_value = 0;
  lark_tensor *xc = lark_contiguous(input), *tc = lark_contiguous(target), *logp = NULL, *loss = NULL, *out = NULL;
  if (!xc || !tc) goto fail;
  if (logits) {
    if (!(logp = lark_empty(2, shape, input->dtype, &dev))) goto fail;
    if (be->softmax_forward(logp, xc, N, C, 1, true)) goto fail;
  } else {
    logp = lark_tensor_retain(xc);
  }
  if (!(loss = lark_empty(1, &N, LARK_FLOAT64, &dev))) goto fail;
  if (be->loss_rows(loss, logp, index ? tc : NULL, index ? NULL : tc, logits ? smoothing : 0.0, &bad, &bad_value))
    goto fail;
  if (bad >= 0) {
    lark_set_error(LARK_ERR_INDEX, "%s: target %lld (at position %lld) is out of range for %lld classes", op,
                   (long long)bad_value, (long long)bad, (long long)C);
    goto fail;
  }
  if (red == LARK_REDUCTION_NONE) {
    out = lark_cast(loss, input->dtype);
  } else {
    lark_reduce_args args = {0};
    lark_tensor *total = lark_reduce(LARK_RED_SUM, loss, &args), *mean = NULL;
    /* N = 0 gives 0 / 0 = nan, as on the CPU */
    if (total && red == LARK_REDUCTION_MEAN) mean = lark_binary_scalar(LARK_OP_DIV, total, (double)N, false, false);
    out = red == LARK_REDUCTION_MEAN ? (mean ? lark_cast(mean, input->dtype) : NULL)
                                     : (total ? lark_cast(total, input->dtype) : NULL);
    lark_tensor_release(total);
    lark_tensor_release(mean);
  }
  if (!out) goto fail;
  lark_tensor_release(xc);
  lark_tensor_release(loss);
  *logp_out = logp, *target_out = tc;
  return out;
fail:
  lark_tensor_release(xc);
  lark_tensor_release(tc);
  lark_tensor_release(logp);
  lark_tensor_release(loss);
  return NULL;
}

/* input (N, C) log-probabilities (nll) or logits (cross entropy). */
static lark_tensor *loss_impl(const char *op, const lark_tensor *input, const lark_tensor *target, double smoothing,
                              lark_reduction red, bool logits, lark_tensor **logp_out, lark_tensor **target_out) {
  char b1[128], b2[128];
  if (check_float(op, "input", input, true)) return NULL;
  if (input->ndim != 2)
    return lark_set_error(LARK_ERR_SHAPE, "%s: input must be 2-D (N, C), got shape %s", op,
                          lark_shape_str(input->ndim, input->shape, b1, sizeof b1)), NULL;
  int64_t N = input->shape[0], C = input->shape[1];
  if (!target) return lark_set_error(LARK_ERR_ARG, "%s: target is missing", op), NULL;
  if (lark_check_alive(op, target, "target")) return NULL;
  if (red != LARK_REDUCTION_NONE && red != LARK_REDUCTION_MEAN && red != LARK_REDUCTION_SUM)
    return lark_set_error(LARK_ERR_ARG, "%s: unknown reduction %d", op, (int)red), NULL;
  if (!(smoothing >= 0 && smoothing <= 1))
    return lark_set_error(LARK_ERR_ARG, "%s: label_smoothing must be in [0, 1], got %g", op, smoothing), NULL;
  bool index = target->dtype == LARK_INT64;
  if (index) {
    if (target->ndim != 1 || target->shape[0] != N)
      return lark_set_error(LARK_ERR_SHAPE, "%s: target of class indices must have shape [%lld] for input %s, got %s", op,
                            (long long)N, lark_shape_str(2, input->shape, b1, sizeof b1),
                            lark_shape_str(target->ndim, target->shape, b2, sizeof b2)), NULL;
  } else {
    if (!logits)
      return lark_set_error(LARK_ERR_DTYPE, "%s: target must be int64 class indices, got %s", op,
                            lark_dtype_name(target->dtype)), NULL;
    if (target->dtype != input->dtype)
      return lark_set_error(LARK_ERR_DTYPE, "%s: target must be int64 class indices or probabilities of the input's dtype %s, got %s",
                            op, lark_dtype_name(input->dtype), lark_dtype_name(target->dtype)), NULL;
    if (target->ndim != 2 || target->shape[0] != N || target->shape[1] != C)
      return lark_set_error(LARK_ERR_SHAPE, "%s: target of probabilities must have the input's shape %s, got %s", op,
                            lark_shape_str(2, input->shape, b1, sizeof b1),
                            lark_shape_str(target->ndim, target->shape, b2, sizeof b2)), NULL;
  }
  if (!lark_device_eq(lark_tensor_device(target), lark_tensor_device(input)))
    return lark_set_error(LARK_ERR_DEVICE, "%s: target must be on the input's device", op), NULL;
  if (lark_tensor_device(input).kind != LARK_CPU)
    return loss_device(op, input, target, smoothing, red, logits, logp_out, target_out);
  bool f64 = input->dtype == LARK_FLOAT64;
  int64_t shape[2] = {N, C};
  lark_tensor *xc = lark_contiguous(input), *tc = lark_contiguous(target), *logp = NULL, *loss = NULL, *out = NULL;
  if (!xc || !tc) goto fail;
  if (index) {
    const int64_t *t = lark_data_ptr(tc);
    for (int64_t k = 0; k < N; k++)
      if (t[k] < 0 || t[k] >= C) {
        lark_set_error(LARK_ERR_INDEX, "%s: target %lld (at position %lld) is out of range for %lld classes", op,
                       (long long)t[k], (long long)k, (long long)C);
        goto fail;
      }
  }
  if (logits) {
    if (!(logp = lark_empty(2, shape, input->dtype, NULL))) goto fail;
    softmax_forward_cpu(lark_data_ptr(xc), lark_data_ptr(logp), N, C, 1, true, f64);
  } else {
    logp = lark_tensor_retain(xc);
  }
  if (!(loss = lark_empty(1, &N, LARK_FLOAT64, NULL))) goto fail;
  double *l = lark_data_ptr(loss);
  loss_rows_cpu(lark_data_ptr(logp), index ? lark_data_ptr(tc) : NULL, index ? NULL : lark_data_ptr(tc), l, N, C,
                logits ? smoothing : 0.0, f64);
  if (red == LARK_REDUCTION_NONE) {
    out = lark_cast(loss, input->dtype);
  } else {
    double total = 0;
    for (int64_t k = 0; k < N; k++) total += l[k];
    if (red == LARK_REDUCTION_MEAN) total /= (double)N; /* N = 0 gives nan, as PyTorch */
    out = lark_scalar(total, input->dtype, NULL);
  }
  if (!out) goto fail;
  lark_tensor_release(xc);
  lark_tensor_release(loss);
  *logp_out = logp, *target_out = tc;
  return out;
fail:
  lark_tensor_release(xc);
  lark_tensor_release(tc);
  lark_tensor_release(logp);
  lark_tensor_release(loss);
  return NULL;
}

static lark_tensor *loss_front(const char *op, const lark_tensor *input, const lark_tensor *target, double smoothing,
                               lark_reduction red, bool logits) {
  lark_tensor *out, *logp = NULL, *tc = NULL;
  LARK_NO_GRAD(out = loss_impl(op, input, target, smoothing, red, logits, &logp, &tc));
  bool index = target && target->dtype == LARK_INT64;
  if (out && (input->requires_grad || (!index && target->requires_grad))) {
    const lark_tensor *in[2] = {input, index ? NULL : target};
    lark_node *n = lark_node_new(op, loss_backward, 2, in);
    if (n) {
      n->iarg[0] = input->shape[0], n->iarg[1] = input->shape[1], n->iarg[2] = red, n->iarg[3] = logits,
      n->iarg[4] = index;
      n->darg[0] = logits ? smoothing : 0.0;
      /* a fresh result of ours if the target was contiguous already: save the caller's values */
      if (lark_node_save(n, logp) || lark_node_save(n, tc)) lark_node_release(n);
      else lark_node_attach(n, out);
    }
  }
  lark_tensor_release(logp);
  lark_tensor_release(tc);
  return out;
}

lark_tensor *lark_nll_loss(const lark_tensor *log_probs, const lark_tensor *target, lark_reduction reduction) {
  return loss_front("nll_loss", log_probs, target, 0.0, reduction, false);
}

lark_tensor *lark_cross_entropy(const lark_tensor *logits, const lark_tensor *target, double label_smoothing,
                                lark_reduction reduction) {
  return loss_front("cross_entropy", logits, target, label_smoothing, reduction, true);
}
