/* factory.c: zeros, ones, full, arange, linspace, eye, scalar.
 * Sequences are computed on the CPU and moved, so every backend gets exactly the CPU's numbers. */
#include <math.h>
#include <stdlib.h>

#include "../backend.h"

lark_tensor *lark_full(int ndim, const int64_t *shape, double value, lark_dtype dt, const lark_device *device) {
  lark_tensor *t = lark_empty(ndim, shape, dt, device);
  if (t && lark_fill_(t, value)) {
    lark_tensor_release(t);
    return NULL;
  }
  return t;
}

lark_tensor *lark_zeros(int ndim, const int64_t *shape, lark_dtype dt, const lark_device *device) {
  return lark_full(ndim, shape, 0, dt, device);
}

lark_tensor *lark_ones(int ndim, const int64_t *shape, lark_dtype dt, const lark_device *device) {
  return lark_full(ndim, shape, 1, dt, device);
}

lark_tensor *lark_scalar(double value, lark_dtype dt, const lark_device *device) {
  return lark_full(0, NULL, value, dt, device);
}

/* Fills a fresh CPU float64 tensor with f(i), converts it to dt and moves it to the device. */
static lark_tensor *sequence(int64_t n, double a, double b, int kind, lark_dtype dt, const lark_device *device) {
  int64_t shape[1] = {n};
  lark_tensor *h = lark_empty(1, shape, LARK_FLOAT64, NULL);
  if (!h) return NULL;
  double *p = lark_data_ptr(h);
  for (int64_t i = 0; i < n; i++) {
    if (kind == 0) p[i] = a + (double)i * b; /* arange: start, step */
    else p[i] = n == 1 ? a : (i < n / 2 ? a + (b - a) / (double)(n - 1) * (double)i
                                        : b - (b - a) / (double)(n - 1) * (double)(n - 1 - i)); /* linspace, symmetric */
  }
  lark_device dev = device ? *device : LARK_DEVICE_CPU;
  lark_tensor *t = lark_to(h, dt, &dev);
  lark_tensor_release(h);
  return t;
}

lark_tensor *lark_arange(double start, double end, double step, lark_dtype dt, const lark_device *device) {
  if (step == 0 || step != step || start != start || end != end || isinf(start) || isinf(end)) {
    lark_set_error(LARK_ERR_ARG, "arange: start, end and step must be finite and step non-zero (got %g, %g, %g)", start,
                   end, step);
    return NULL;
  }
  if ((step > 0 && end < start) || (step < 0 && end > start)) {
    lark_set_error(LARK_ERR_ARG, "arange: a step of %g never goes from %g to %g", step, start, end);
    return NULL;
  }
  double n = ceil((end - start) / step);
  if (n > 1e12) {
    lark_set_error(LARK_ERR_NOMEM, "arange: %.3g elements is too many", n);
    return NULL;
  }
  return sequence((int64_t)n, start, step, 0, dt, device);
}

lark_tensor *lark_linspace(double start, double end, int64_t n, lark_dtype dt, const lark_device *device) {
  if (n < 0 || n > (int64_t)1e12) {
    lark_set_error(LARK_ERR_ARG, "linspace: the number of points must be between 0 and 1e12, got %lld", (long long)n);
    return NULL;
  }
  return sequence(n, start, end, 1, dt, device);
}

lark_tensor *lark_eye(int64_t n, int64_t m, lark_dtype dt, const lark_device *device) {
  if (m < 0) m = n;
  int64_t shape[2] = {n, m};
  lark_tensor *t = lark_zeros(2, shape, dt, device);
  if (!t) return NULL;
  int64_t k = n < m ? n : m;
  /* the diagonal is a strided view: stride m + 1 */
  int64_t dshape[1] = {k}, dstride[1] = {m + 1};
  lark_tensor *d = lark_as_strided(t, 1, dshape, dstride, 0);
  int rc = d ? lark_fill_(d, 1) : lark_error_code();
  lark_tensor_release(d);
  if (rc) {
    lark_tensor_release(t);
    return NULL;
  }
  return t;
}
