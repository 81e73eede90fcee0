/* activation.c: the exact GELU, y = 0.5 x (1 + erf(x / sqrt 2)), forward, backward kernel and
 * autograd recording (relu, sigmoid and tanh are unary ops of elementwise.c).
 *   dy/dx = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi) */
#include <math.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"
#include "nn.h"
#include "vecmath.h"

#define INV_SQRT2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* 1 + erf(x / sqrt 2) = erfc(-x / sqrt 2) in float32, written so that GCC vectorises it (libm's
 * erff is a call it cannot): Numerical Recipes' erfcc, a Chebyshev fit of erfc(z) / exp(-z^2)
 * with a fractional error under 1.2e-7 over the whole line, on lark_expf. Going through erfc
 * keeps the relative accuracy where 1 + erf cancels (large negative x). The float64 path and the
 * reference are libm's erf. */
static inline float gelu_cdf2f(float x) {
  float z = x * (float)INV_SQRT2, az = fabsf(z);
  float t = 1.0f / (1.0f + 0.5f * az);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  float erfc_az = t * lark_expf(p - az * az); /* erfc(|z|) */
  return z >= 0 ? 2.0f - erfc_az : erfc_az;
}

static void gelu_forward_cpu(const void *x /* (n) */, void *y /* (n) */, int64_t n, bool f64) {
  if (f64) {
    const double *a = x;
    double *o = y;
    _Pragma("omp parallel for if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++) o[i] = 0.5 * a[i] * (1.0 + erf(a[i] * INV_SQRT2));
  } else {
    const float *a = x;
    float *o = y;
    _Pragma("omp parallel for if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++) o[i] = 0.5f * a[i] * gelu_cdf2f(a[i]);
  }
}

static void gelu_backward_cpu(const void *g /* (n) */, const void *x /* (n) */, void *dx /* (n) */, int64_t n,
                              bool f64) {
  if (f64) {
    const double *gp = g, *a = x;
    double *o = dx;
    _Pragma("omp parallel for if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++)
      o[i] = gp[i] * (0.5 * (1.0 + erf(a[i] * INV_SQRT2)) + a[i] * exp(-0.5 * a[i] * a[i]) * INV_SQRT_2PI);
  } else {
    const float *gp = g, *a = x;
    float *o = dx;
    _Pragma("omp parallel for if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++)
      o[i] = gp[i] * (0.5f * gelu_cdf2f(a[i]) + a[i] * lark_expf(-0.5f * a[i] * a[i]) * (float)INV_SQRT_2PI);
  }
}

/* saved: 0 the input (contiguous). */
static int gelu_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *x = lark_node_saved(n, 0);
  if (!x) return lark_error_code();
  lark_scope s = {0};
  lark_tensor *gc = S_CAST(&s, g, x->dtype);
  gc = gc ? lark_scope_add(&s, lark_contiguous(gc)) : NULL;
  lark_device dev = lark_tensor_device(x);
  if (gc && !(gin[0] = lark_empty(x->ndim, x->shape, x->dtype, &dev))) s.failed = true;
  if (!s.failed && dev.kind != LARK_CPU) {
    if (lark_backend_for(dev)->gelu_backward(gin[0], gc, x)) s.failed = true;
  } else if (!s.failed)
    gelu_backward_cpu(lark_data_ptr(gc), lark_data_ptr(x), lark_data_ptr(gin[0]), lark_numel(x),
                      x->dtype == LARK_FLOAT64);
  return lark_scope_end(&s, gin, 1);
}

lark_tensor *lark_gelu(const lark_tensor *x) {
  if (!x) return lark_set_error(LARK_ERR_ARG, "gelu: input is missing"), NULL;
  if (lark_check_alive("gelu", x, "input")) return NULL;
  if (x->dtype != LARK_FLOAT32 && x->dtype != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "gelu: input must be float32 or float64, got %s", lark_dtype_name(x->dtype)),
           NULL;
  lark_device dev = lark_tensor_device(x);
  const lark_backend *be = dev.kind != LARK_CPU ? lark_backend_for(dev) : NULL;
  if (dev.kind != LARK_CPU && (!be || !be->gelu_forward || !be->gelu_backward))
    return lark_backend_missing("gelu", dev), NULL;
  lark_tensor *out = NULL, *xc = NULL;
  LARK_NO_GRAD({
    xc = lark_contiguous(x);
    out = xc ? lark_empty(x->ndim, x->shape, x->dtype, &dev) : NULL;
    if (out && be) {
      if (be->gelu_forward(out, xc)) {
        lark_tensor_release(out);
        out = NULL;
      }
    } else if (out)
      gelu_forward_cpu(lark_data_ptr(xc), lark_data_ptr(out), lark_numel(x), x->dtype == LARK_FLOAT64);
  });
  if (out && x->requires_grad) {
    const lark_tensor *in[1] = {x};
    lark_node *n = lark_node_new("gelu", gelu_backward, 1, in);
    if (n) {
      if (lark_node_save(n, xc)) lark_node_release(n);
      else lark_node_attach(n, out);
    }
  }
  lark_tensor_release(xc);
  return out;
}
