/*
 * softmax.cu: the CUDA kernels of core/ops/softmax.c: softmax and log_softmax along any dim with
 * their backward, and the per-row losses of nll_loss and cross_entropy with their backward.
 *
 * softmax.c's formulas on the contiguous (outer, D, inner) block, one line along D per team of
 * lines.cuh (a warp or a block per row when inner == 1, 32 neighbouring columns per block else):
 *   mx = the line's max (a NaN ignored, 0 for a line of -inf), s = sum exp(x - mx)
 *   softmax = exp(x - mx) / s, log_softmax = (x - mx) - log(s)
 *   backward on the saved y: softmax dx = y * (g - sum(g * y)), log_softmax dx = g - exp(y) * sum(g)
 * Precision as on the CPU: s and the backward's sums in float64 always; float64 computes every
 * element in float64 (softmax.c's reference loop), float32 the exponentials and the outputs in
 * float32 (its float32 path: exp(x - mx) in float, 1 / s and log(s) rounded to float once per
 * line). The backward's elements are float64 for both dtypes, as on the CPU.
 *
 * Losses (logp (N, C) rows, one team per row): loss_n = -logp[n, t_n] or -sum_c q_nc logp_nc,
 * mixed with label smoothing e as (1 - e) loss_n + e * (-sum_c logp_nc) / C; the gradients
 * d/dz = g_n (exp(logp) sum(q') - q'), d/dlogp = -g_n q', d/dq = -g_n (1 - e) logp with
 * q' = (1 - e) q + e / C. A class index outside [0, C) is reported back to the host (the first
 * row that has one, found with atomicMin), which costs the forward pass one wait for the device:
 * core turns it into the CPU's error instead of reading out of bounds.
 */
#include <math.h>
#include <type_traits>

#include "cuda.h"
#include "lines.cuh"

/* ---- softmax ---------------------------------------------------------------------------------- */

template <typename T>
struct softmax_forward_body {
  const T *x; /* (outer, D, inner) */
  T *y;       /* (outer, D, inner) */
  int64_t D;
  bool logmode;
  template <typename Team>
  __device__ void operator()(const Team &t, int64_t base, int64_t stride, int64_t line, bool valid) const {
    int64_t first = t.first(), step = t.step(), n = valid ? D : 0;
    double mx = -INFINITY;
    for (int64_t d = first; d < n; d += step) mx = fmax(mx, (double)x[base + d * stride]);
    mx = t.max(mx);
    if (mx == -INFINITY) mx = 0; /* a line of -inf: exp gives 0s, the results NaN, as on the CPU */
    double s = 0;
    if constexpr (std::is_same<T, float>::value) {
      float mf = (float)mx; /* exact: mx is one of the floats */
      for (int64_t d = first; d < n; d += step) s += (double)expf(x[base + d * stride] - mf);
      s = t.sum(s);
      if (logmode) {
        float lse = (float)log(s);
        for (int64_t d = first; d < n; d += step) {
          int64_t k = base + d * stride;
          y[k] = (x[k] - mf) - lse;
        }
      } else {
        float inv = (float)(1.0 / s);
        for (int64_t d = first; d < n; d += step) {
          int64_t k = base + d * stride;
          y[k] = expf(x[k] - mf) * inv;
        }
      }
    } else {
      for (int64_t d = first; d < n; d += step) s += exp((double)x[base + d * stride] - mx);
      s = t.sum(s);
      double lse = log(s);
      for (int64_t d = first; d < n; d += step) {
        int64_t k = base + d * stride;
        double z = (double)x[k] - mx;
        y[k] = (T)(logmode ? z - lse : exp(z) / s);
      }
    }
  }
};

template <typename T>
struct softmax_backward_body {
  const T *g; /* (outer, D, inner) */
  const T *y; /* (outer, D, inner) */
  T *dx;      /* (outer, D, inner) */
  int64_t D;
  bool logmode;
  template <typename Team>
  __device__ void operator()(const Team &t, int64_t base, int64_t stride, int64_t line, bool valid) const {
    int64_t first = t.first(), step = t.step(), n = valid ? D : 0;
    double s = 0;
    for (int64_t d = first; d < n; d += step) {
      int64_t k = base + d * stride;
      s += logmode ? (double)g[k] : (double)g[k] * (double)y[k];
    }
    s = t.sum(s);
    for (int64_t d = first; d < n; d += step) {
      int64_t k = base + d * stride;
      double gv = (double)g[k], yv = (double)y[k];
      dx[k] = (T)(logmode ? gv - exp(yv) * s : yv * (gv - s));
    }
  }
};

int lark_cuda_softmax_forward(lark_tensor *y, const lark_tensor *x, int64_t outer, int64_t D, int64_t inner, bool log) {
  const char *op = log ? "log_softmax" : "softmax";
  if (lark_cuda_set_device(lark_tensor_device(x), op)) return lark_error_code();
  if (D <= 0) return 0; /* no elements to write */
  return nn_by_dtype(op, x, [&](auto zero) {
    typedef decltype(zero) T;
    softmax_forward_body<T> body{nn_cptr<T>(x), nn_mptr<T>(y), D, log};
    return run_lines(op, outer, D, inner, body);
  });
}

int lark_cuda_softmax_backward(lark_tensor *dx, const lark_tensor *g, const lark_tensor *y, int64_t outer, int64_t D,
                               int64_t inner, bool log) {
  const char *op = log ? "log_softmax_backward" : "softmax_backward";
  if (lark_cuda_set_device(lark_tensor_device(y), op)) return lark_error_code();
  if (D <= 0) return 0;
  return nn_by_dtype(op, y, [&](auto zero) {
    typedef decltype(zero) T;
    softmax_backward_body<T> body{nn_cptr<T>(g), nn_cptr<T>(y), nn_mptr<T>(dx), D, log};
    return run_lines(op, outer, D, inner, body);
  });
}

/* ---- losses ----------------------------------------------------------------------------------- */

template <typename T>
struct loss_rows_body {
  const T *logp;           /* (N, C) */
  const int64_t *tidx;     /* (N) or NULL */
  const T *tprob;          /* (N, C) or NULL */
  double *loss;            /* (N) */
  unsigned long long *bad; /* (1): the least row with a class outside [0, C) */
  int64_t C;
  double smoothing;
  template <typename Team>
  __device__ void operator()(const Team &t, int64_t base, int64_t stride, int64_t line, bool valid) const {
    int64_t first = t.first(), step = t.step(), n = valid ? C : 0;
    double l = 0;
    if (tidx) {
      int64_t cls = valid ? tidx[line] : 0;
      bool ok = cls >= 0 && cls < C;
      if (valid && !ok && t.leader()) atomicMin(bad, (unsigned long long)line);
      if (valid && ok) l = -(double)logp[base + cls * stride];
    } else {
      double s = 0;
      for (int64_t c = first; c < n; c += step) {
        int64_t k = base + c * stride;
        s += (double)tprob[k] * (double)logp[k];
      }
      l = 0.0 - t.sum(s); /* the CPU's 0 - q0 p0 - q1 p1 ..., +0 for an empty row */
    }
    if (smoothing != 0) {
      double a = 0;
      for (int64_t c = first; c < n; c += step) a += (double)logp[base + c * stride];
      double all = 0.0 - t.sum(a);
      l = (1 - smoothing) * l + smoothing * all / (double)C;
    }
    if (valid && t.leader()) loss[line] = l;
  }
};

template <typename T>
struct loss_backward_body {
  const double *g;     /* row gradients: row n's is g[n * g_step] / g_div */
  int64_t g_step;
  double g_div;
  const T *logp;       /* (N, C) */
  const int64_t *tidx; /* (N) or NULL */
  const T *tprob;      /* (N, C) or NULL */
  T *dz;               /* (N, C) or NULL */
  T *dq;               /* (N, C) or NULL */
  int64_t C;
  double e;            /* label smoothing */
  bool through_softmax;
  template <typename Team>
  __device__ void operator()(const Team &t, int64_t base, int64_t stride, int64_t line, bool valid) const {
    int64_t first = t.first(), step = t.step(), n = valid ? C : 0;
    double gn = valid ? g[line * g_step] / g_div : 0.0;
    if (dz) {
      /* q' summed: 1 for a class index, (1 - e) sum(q) + e for probabilities */
      double sumq = 1;
      if (!tidx) {
        double s = 0;
        for (int64_t c = first; c < n; c += step) s += (double)tprob[base + c * stride];
        sumq = (1 - e) * t.sum(s) + e;
      }
      int64_t cls = tidx && valid ? tidx[line] : -1;
      for (int64_t c = first; c < n; c += step) {
        int64_t k = base + c * stride;
        double q = tidx ? (c == cls ? 1.0 : 0.0) : (double)tprob[k];
        q = (1 - e) * q + e / (double)C;
        double v = through_softmax ? exp((double)logp[k]) * sumq - q : -q;
        dz[k] = (T)(gn * v);
      }
    }
    if (dq)
      for (int64_t c = first; c < n; c += step) {
        int64_t k = base + c * stride;
        dq[k] = (T)(-gn * (1 - e) * (double)logp[k]);
      }
  }
};

int lark_cuda_loss_rows(lark_tensor *loss, const lark_tensor *logp, const lark_tensor *target_index,
                        const lark_tensor *target_prob, double smoothing, int64_t *bad, int64_t *bad_value) {
  const char *op = "cross_entropy";
  *bad = -1;
  *bad_value = 0;
  lark_device dev = lark_tensor_device(logp);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  int64_t N = logp->shape[0], C = logp->shape[1];
  if (N <= 0) return 0;
  lark_tensor *flag = NULL;
  unsigned long long *fp = nullptr;
  if (target_index) {
    int64_t one = 1;
    if (!(flag = lark_empty(1, &one, LARK_INT64, &dev))) return lark_error_code();
    fp = (unsigned long long *)lark_data_ptr(flag);
    /* all ones: no bad row yet (atomicMin keeps the least row index) */
    if (lark_cuda_check(cudaMemsetAsync(fp, 0xff, sizeof *fp, 0), op, "cudaMemsetAsync")) {
      lark_tensor_release(flag);
      return lark_error_code();
    }
  }
  int rc = nn_by_dtype(op, logp, [&](auto zero) {
    typedef decltype(zero) T;
    loss_rows_body<T> body{nn_cptr<T>(logp), nn_cptr<int64_t>(target_index), nn_cptr<T>(target_prob),
                           nn_mptr<double>(loss), fp, C, smoothing};
    return run_lines(op, N, C, 1, body);
  });
  if (!rc && fp) {
    unsigned long long first = 0;
    rc = lark_cuda_check(cudaMemcpy(&first, fp, sizeof first, cudaMemcpyDeviceToHost), op, "cudaMemcpy cuda -> host");
    if (!rc && first < (unsigned long long)N) {
      *bad = (int64_t)first;
      rc = lark_cuda_check(cudaMemcpy(bad_value, nn_cptr<int64_t>(target_index) + first, sizeof *bad_value,
                                      cudaMemcpyDeviceToHost),
                           op, "cudaMemcpy cuda -> host");
    }
  }
  lark_tensor_release(flag);
  return rc;
}

int lark_cuda_loss_backward(lark_tensor *dz, lark_tensor *dq, const lark_tensor *g, int64_t g_step, double g_div,
                            const lark_tensor *logp, const lark_tensor *target_index, const lark_tensor *target_prob,
                            double smoothing, bool through_softmax) {
  const char *op = "cross_entropy_backward";
  if (lark_cuda_set_device(lark_tensor_device(logp), op)) return lark_error_code();
  int64_t N = logp->shape[0], C = logp->shape[1];
  if (N <= 0 || C <= 0 || (!dz && !dq)) return 0;
  return nn_by_dtype(op, logp, [&](auto zero) {
    typedef decltype(zero) T;
    loss_backward_body<T> body{nn_cptr<double>(g), g_step, g_div, nn_cptr<T>(logp), nn_cptr<int64_t>(target_index),
                               nn_cptr<T>(target_prob), nn_mptr<T>(dz), nn_mptr<T>(dq), C, smoothing, through_softmax};
    return run_lines(op, N, C, 1, body);
  });
}
