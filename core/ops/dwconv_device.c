/* dwconv_device.c: the depth-wise convolution's front functions for tensors on a device (the CUDA
 * backend). dwconv.c keeps the CPU path and hands device tensors here (see dwconv_device.h).
 *
 * The checks are dwconv.c's (dwconv_internal.h), so a user sees the same error for a bad shape on
 * either device. What differs is the end:
 * the operands are made contiguous on their device, the result is allocated there, and the
 * backend's kernel (core/backend.h: dwconv_forward, dwconv_backward_input, dwconv_backward_weight)
 * does the arithmetic. The sums of kernels (SLaK) are one kernel call per term, each after the
 * first adding into the result (LARK_DWCONV_ACCUMULATE), so no temporary and no extra add pass. */
#include "../backend.h"
#include "dwconv.h"
#include "dwconv_device.h"
#include "dwconv_internal.h"

/* As many kernels as dwconv.c's sums take. */
#define MAX_SUM 8

/* The flags of a pass: the plain kernel, or what lark_float32_precision allows (the backend uses
 * those only for float32, and the exact kernels where it has no tensor-core path). */
static unsigned precision_flags(bool reference) {
  if (reference) return LARK_DWCONV_REFERENCE;
  switch (lark_float32_precision()) {
    case LARK_PRECISION_HIGH: return LARK_DWCONV_TF32;
    case LARK_PRECISION_MEDIUM: return LARK_DWCONV_BF16;
    default: return 0u;
  }
}

static bool off_cpu(const lark_tensor *t) { return t && t->storage && lark_tensor_device(t).kind != LARK_CPU; }

bool lark_dwconv2d_on_device(const lark_tensor *a, const lark_tensor *b, const lark_tensor *c) {
  return off_cpu(a) || off_cpu(b) || off_cpu(c);
}

bool lark_dwconv2d_sum_on_device(const lark_tensor *x, int nk, const lark_tensor *const weights[],
                                 const lark_tensor *bias) {
  if (off_cpu(x) || off_cpu(bias)) return true;
  for (int k = 0; weights && k < nk && k < MAX_SUM; k++)
    if (off_cpu(weights[k])) return true;
  return false;
}

/* ---- devices and operands -------------------------------------------------------------------- */

/* Every non-NULL tensor of ts on one device (*dev), whose backend has the three dwconv kernels. */
static int device_of(const char *op, int n, const lark_tensor *const *ts, const char *const *names,
                     const lark_backend **be, lark_device *dev) {
  const lark_tensor *tt[MAX_SUM + 2];
  const char *nn[MAX_SUM + 2];
  int m = 0;
  for (int i = 0; i < n && m < MAX_SUM + 2; i++)
    if (ts[i]) tt[m] = ts[i], nn[m++] = names[i];
  int rc = lark_check_same_device(op, m, tt, nn);
  if (rc) return rc;
  *dev = lark_tensor_device(tt[0]);
  *be = lark_backend_for(*dev);
  if (!*be || !(*be)->dwconv_forward || !(*be)->dwconv_backward_input || !(*be)->dwconv_backward_weight)
    return lark_backend_missing(op, *dev);
  return 0;
}

/* Contiguous versions (new references) of the n tensors of ts (NULL stays NULL); all or none. */
static int contiguous_all(int n, const lark_tensor *const *ts, lark_tensor **out) {
  for (int i = 0; i < n; i++) out[i] = NULL;
  for (int i = 0; i < n; i++)
    if (ts[i] && !(out[i] = lark_contiguous(ts[i]))) {
      for (int j = 0; j < i; j++) lark_tensor_release(out[j]);
      return lark_error_code();
    }
  return 0;
}

static void release_all(int n, lark_tensor **ts) {
  for (int i = 0; i < n; i++) lark_tensor_release(ts[i]);
}

/* ---- the passes ------------------------------------------------------------------------------ */

static lark_tensor *sum_forward(const char *op, bool reference, const lark_tensor *input, int nk,
                                const lark_tensor *const weights[], const lark_tensor *bias,
                                const lark_conv2d_params p[]) {
  int64_t ho, wo;
  if (!weights) return (lark_set_error(LARK_ERR_ARG, "%s: weights is NULL", op), NULL);
  if (lark_dwconv_check_args(op, input, NULL, nk, weights, bias, p, &ho, &wo)) return NULL;
  const lark_tensor *ts[MAX_SUM + 2] = {input, bias};
  const char *names[MAX_SUM + 2] = {"input", "bias"};
  for (int k = 0; k < nk; k++) ts[2 + k] = weights[k], names[2 + k] = "weight";
  const lark_backend *be;
  lark_device dev;
  if (device_of(op, nk + 2, ts, names, &be, &dev)) return NULL;
  lark_tensor *out = lark_empty(4, (int64_t[]){input->shape[0], input->shape[1], ho, wo}, input->dtype, &dev);
  if (!out || lark_numel(out) == 0) return out;
  lark_tensor *cs[MAX_SUM + 2];
  if (contiguous_all(nk + 2, ts, cs)) {
    lark_tensor_release(out);
    return NULL;
  }
  int rc = 0;
  for (int k = 0; k < nk && !rc; k++) {
    unsigned flags = precision_flags(reference) | (k > 0 ? LARK_DWCONV_ACCUMULATE : 0u);
    rc = be->dwconv_forward(out, cs[0], cs[2 + k], k == 0 ? cs[1] : NULL, &p[k], flags);
  }
  release_all(nk + 2, cs);
  if (rc) {
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

static lark_tensor *sum_backward_input(const char *op, bool reference, const lark_tensor *grad_out, int nk,
                                       const lark_tensor *const weights[], const int64_t input_shape[4],
                                       const lark_conv2d_params p[]) {
  int64_t ho, wo;
  if (!weights) return (lark_set_error(LARK_ERR_ARG, "%s: weights is NULL", op), NULL);
  if (lark_dwconv_check_args(op, grad_out, input_shape, nk, weights, NULL, p, &ho, &wo)) return NULL;
  const lark_tensor *ts[MAX_SUM + 1] = {grad_out};
  const char *names[MAX_SUM + 1] = {"grad_out"};
  for (int k = 0; k < nk; k++) ts[1 + k] = weights[k], names[1 + k] = "weight";
  const lark_backend *be;
  lark_device dev;
  if (device_of(op, nk + 1, ts, names, &be, &dev)) return NULL;
  lark_tensor *gx = lark_empty(4, input_shape, grad_out->dtype, &dev);
  if (!gx || lark_numel(gx) == 0) return gx;
  lark_tensor *cs[MAX_SUM + 1];
  if (contiguous_all(nk + 1, ts, cs)) {
    lark_tensor_release(gx);
    return NULL;
  }
  int rc = 0;
  for (int k = 0; k < nk && !rc; k++) {
    unsigned flags = precision_flags(reference) | (k > 0 ? LARK_DWCONV_ACCUMULATE : 0u);
    rc = be->dwconv_backward_input(gx, cs[0], cs[1 + k], &p[k], flags);
  }
  release_all(nk + 1, cs);
  if (rc) {
    lark_tensor_release(gx);
    return NULL;
  }
  return gx;
}

lark_tensor *lark_dwconv2d_device_forward(const char *op, bool reference, const lark_tensor *input,
                                          const lark_tensor *weight, const lark_tensor *bias,
                                          const lark_conv2d_params *p) {
  if (!p) return (lark_set_error(LARK_ERR_ARG, "%s: params is NULL", op), NULL);
  /* one kernel: the dtype message of the single pass rather than the sum's "kernel 1 is ..." */
  if (lark_dwconv_check_pair(op, input, "input", weight, "weight")) return NULL;
  return sum_forward(op, reference, input, 1, &weight, bias, p);
}

lark_tensor *lark_dwconv2d_device_backward_input(const char *op, bool reference, const lark_tensor *grad_out,
                                                 const lark_tensor *weight, const int64_t input_shape[4],
                                                 const lark_conv2d_params *p) {
  if (!p) return (lark_set_error(LARK_ERR_ARG, "%s: params is NULL", op), NULL);
  if (lark_dwconv_check_pair(op, grad_out, "grad_out", weight, "weight")) return NULL;
  return sum_backward_input(op, reference, grad_out, 1, &weight, input_shape, p);
}

lark_tensor *lark_dwconv2d_device_backward_weight(const char *op, bool reference, const lark_tensor *grad_out,
                                                  const lark_tensor *input, const lark_conv2d_params *p) {
  int64_t ho, wo;
  if (lark_dwconv_check_pair(op, input, "input", grad_out, "grad_out") ||
      lark_dwconv_check_args(op, grad_out, input->shape, 1, NULL, NULL, p, &ho, &wo))
    return NULL;
  int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3];
  const lark_tensor *ts[2] = {grad_out, input};
  const char *names[2] = {"grad_out", "input"};
  const lark_backend *be;
  lark_device dev;
  if (device_of(op, 2, ts, names, &be, &dev)) return NULL;
  lark_tensor *gw = lark_empty(4, (int64_t[]){c, 1, p->kh, p->kw}, input->dtype, &dev);
  if (!gw || lark_numel(gw) == 0) return gw;
  if (n * h * w == 0) { /* no input element: every tap's sum is empty */
    if (lark_fill_(gw, 0)) {
      lark_tensor_release(gw);
      return NULL;
    }
    return gw;
  }
  lark_tensor *cs[2];
  if (contiguous_all(2, ts, cs)) {
    lark_tensor_release(gw);
    return NULL;
  }
  int rc = be->dwconv_backward_weight(gw, cs[0], cs[1], p, precision_flags(reference));
  release_all(2, cs);
  if (rc) {
    lark_tensor_release(gw);
    return NULL;
  }
  return gw;
}

lark_tensor *lark_dwconv2d_device_sum_forward(const char *op, bool reference, const lark_tensor *input, int nk,
                                              const lark_tensor *const weights[], const lark_tensor *bias,
                                              const lark_conv2d_params p[]) {
  return sum_forward(op, reference, input, nk, weights, bias, p);
}

lark_tensor *lark_dwconv2d_device_sum_backward_input(const char *op, bool reference, const lark_tensor *grad_out,
                                                     int nk, const lark_tensor *const weights[],
                                                     const int64_t input_shape[4], const lark_conv2d_params p[]) {
  return sum_backward_input(op, reference, grad_out, nk, weights, input_shape, p);
}
