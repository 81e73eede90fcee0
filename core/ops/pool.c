/* pool.c: avg_pool2d, max_pool2d, adaptive_avg_pool2d and constant padding, with their gradients.
 *
 * The pools see their input as planes (N*C, H, W), contiguous, and run one plane per OpenMP work
 * item; each plane's kernel is the plain window loop, which is also its own reference (the specs
 * compare it with Lua loops and PyTorch). pad is built from views: fill the result with the value,
 * then copy the part of the input that survives; its gradient is pad of the gradient with the pads
 * negated (cropping what padding added, zero-filling what cropping removed).
 *
 * Tensors on a device go to their backend's pooling kernels (backend.h: avg_pool_forward,
 * avg_pool_backward, max_pool_forward, max_pool_backward), which follow the loops below exactly;
 * the checks, shapes and autograd records are the same on every device. */
#include <math.h>
#include <string.h>

#include "../backend.h"
#include "conv.h"
#include "grad.h"

typedef struct {
  int64_t planes, H, W, Ho, Wo;
} pool_geom;

/* A window along one axis: [start, end) of the input, for output index o. */
static inline void avg_window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t *start, int64_t *end) {
  *start = o * stride - pad;
  *end = *start + k;
}
static inline void adaptive_window(int64_t o, int64_t in, int64_t out, int64_t *start, int64_t *end) {
  *start = (o * in) / out;                      /* floor(o * in / out) */
  *end = ((o + 1) * in + out - 1) / out;        /* ceil((o + 1) * in / out) */
}

#define CLAMP_WINDOW(s, e, n) \
  do {                        \
    if ((s) < 0) (s) = 0;     \
    if ((e) > (n)) (e) = (n); \
  } while (0)

#define DEFINE_POOL_TYPED(T, SUF)                                                                               \
  /* out (P, Ho, Wo) = window means of x (P, H, W); adaptive: PyTorch's adaptive windows */                    \
  static void avg_forward_##SUF(const T *x, T *out, const pool_geom *g, const lark_pool2d_args *a, bool adaptive) { \
    _Pragma("omp parallel for if (g->planes * g->H * g->W > LARK_PARALLEL_GRAIN)")                              \
    for (int64_t p = 0; p < g->planes; p++) {                                                                   \
      const T *xp = x + p * g->H * g->W;                                                                        \
      for (int64_t oh = 0; oh < g->Ho; oh++)                                                                    \
        for (int64_t ow = 0; ow < g->Wo; ow++) {                                                                \
          int64_t h0, h1, w0, w1;                                                                               \
          double count;                                                                                         \
          if (adaptive) {                                                                                       \
            adaptive_window(oh, g->H, g->Ho, &h0, &h1);                                                         \
            adaptive_window(ow, g->W, g->Wo, &w0, &w1);                                                         \
            count = (double)((h1 - h0) * (w1 - w0));                                                            \
          } else {                                                                                              \
            avg_window(oh, a->stride_h, a->pad_h, a->kh, &h0, &h1);                                             \
            avg_window(ow, a->stride_w, a->pad_w, a->kw, &w0, &w1);                                             \
            count = (double)a->kh * a->kw; /* count_include_pad */                                              \
            CLAMP_WINDOW(h0, h1, g->H);                                                                         \
            CLAMP_WINDOW(w0, w1, g->W);                                                                         \
          }                                                                                                     \
          double s = 0;                                                                                         \
          for (int64_t ih = h0; ih < h1; ih++)                                                                  \
            for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * g->W + iw];                                       \
          out[(p * g->Ho + oh) * g->Wo + ow] = (T)(s / count);                                                  \
        }                                                                                                       \
    }                                                                                                           \
  }                                                                                                             \
  /* gin (P, H, W), zeroed, += gout (P, Ho, Wo) spread evenly over each window */                              \
  static void avg_backward_##SUF(const T *gout, T *gin, const pool_geom *g, const lark_pool2d_args *a, bool adaptive) { \
    _Pragma("omp parallel for if (g->planes * g->H * g->W > LARK_PARALLEL_GRAIN)")                              \
    for (int64_t p = 0; p < g->planes; p++) {                                                                   \
      T *gp = gin + p * g->H * g->W;                                                                            \
      for (int64_t oh = 0; oh < g->Ho; oh++)                                                                    \
        for (int64_t ow = 0; ow < g->Wo; ow++) {                                                                \
          int64_t h0, h1, w0, w1;                                                                               \
          double count;                                                                                         \
          if (adaptive) {                                                                                       \
            adaptive_window(oh, g->H, g->Ho, &h0, &h1);                                                         \
            adaptive_window(ow, g->W, g->Wo, &w0, &w1);                                                         \
            count = (double)((h1 - h0) * (w1 - w0));                                                            \
          } else {                                                                                              \
            avg_window(oh, a->stride_h, a->pad_h, a->kh, &h0, &h1);                                             \
            avg_window(ow, a->stride_w, a->pad_w, a->kw, &w0, &w1);                                             \
            count = (double)a->kh * a->kw;                                                                      \
            CLAMP_WINDOW(h0, h1, g->H);                                                                         \
            CLAMP_WINDOW(w0, w1, g->W);                                                                         \
          }                                                                                                     \
          T v = (T)(gout[(p * g->Ho + oh) * g->Wo + ow] / count);                                               \
          for (int64_t ih = h0; ih < h1; ih++)                                                                  \
            for (int64_t iw = w0; iw < w1; iw++) gp[ih * g->W + iw] += v;                                       \
        }                                                                                                       \
    }                                                                                                           \
  }                                                                                                             \
  /* out (P, Ho, Wo) = window maxima of x (P, H, W); idx the 0-based ih*W + iw of the first max */             \
  static void max_forward_##SUF(const T *x, T *out, int64_t *idx, const pool_geom *g, const lark_pool2d_args *a) { \
    _Pragma("omp parallel for if (g->planes * g->H * g->W > LARK_PARALLEL_GRAIN)")                              \
    for (int64_t p = 0; p < g->planes; p++) {                                                                   \
      const T *xp = x + p * g->H * g->W;                                                                        \
      for (int64_t oh = 0; oh < g->Ho; oh++)                                                                    \
        for (int64_t ow = 0; ow < g->Wo; ow++) {                                                                \
          int64_t h0, h1, w0, w1;                                                                               \
          avg_window(oh, a->stride_h, a->pad_h, a->kh, &h0, &h1);                                               \
          avg_window(ow, a->stride_w, a->pad_w, a->kw, &w0, &w1);                                               \
          CLAMP_WINDOW(h0, h1, g->H);                                                                           \
          CLAMP_WINDOW(w0, w1, g->W);                                                                           \
          T best = (T)-INFINITY;                                                                                \
          int64_t at = h0 * g->W + w0;                                                                          \
          for (int64_t ih = h0; ih < h1; ih++)                                                                  \
            for (int64_t iw = w0; iw < w1; iw++) {                                                              \
              T v = xp[ih * g->W + iw];                                                                         \
              /* strictly greater keeps the first of ties; NaN wins and stays */                               \
              if ((v > best || isnan(v)) && !isnan(best)) best = v, at = ih * g->W + iw;                        \
            }                                                                                                   \
          out[(p * g->Ho + oh) * g->Wo + ow] = best;                                                            \
          idx[(p * g->Ho + oh) * g->Wo + ow] = at;                                                              \
        }                                                                                                       \
    }                                                                                                           \
  }                                                                                                             \
  /* gin (P, H, W), zeroed, += gout at each window's argmax */                                                  \
  static void max_backward_##SUF(const T *gout, const int64_t *idx, T *gin, const pool_geom *g) {              \
    _Pragma("omp parallel for if (g->planes * g->H * g->W > LARK_PARALLEL_GRAIN)")                              \
    for (int64_t p = 0; p < g->planes; p++)                                                                     \
      for (int64_t o = 0; o < g->Ho * g->Wo; o++)                                                               \
        gin[p * g->H * g->W + idx[p * g->Ho * g->Wo + o]] += gout[p * g->Ho * g->Wo + o];                       \
  }

DEFINE_POOL_TYPED(float, f32)
DEFINE_POOL_TYPED(double, f64)

/* ---- validation and geometry ---------------------------------------------------------------- */

/* Checks a pooling input: float, 3-D (C, H, W) or 4-D (N, C, H, W), on any device. */
static int check_pool_input(const char *op, const lark_tensor *t) {
  if (!t) return lark_set_error(LARK_ERR_ARG, "%s: input is missing (expected a tensor)", op);
  if (lark_check_alive(op, t, "input")) return lark_error_code();
  if (t->ndim != 3 && t->ndim != 4) {
    char s[256];
    return lark_set_error(LARK_ERR_SHAPE, "%s: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape %s", op,
                          lark_shape_str(t->ndim, t->shape, s, sizeof s));
  }
  if (!lark_dtype_is_float(t->dtype))
    return lark_set_error(LARK_ERR_DTYPE, "%s: input must be float32 or float64, got %s (convert with :float())", op,
                          lark_dtype_name(t->dtype));
  return 0;
}

/* The backend of a tensor off the CPU (NULL for the CPU), or NULL with "op: not implemented for
 * <device>" set in *rc when it lacks the field `has` says. */
static const lark_backend *device_backend(const char *op, const lark_tensor *t, bool (*has)(const lark_backend *),
                                          int *rc) {
  lark_device dev = lark_tensor_device(t);
  *rc = 0;
  if (dev.kind == LARK_CPU) return NULL;
  const lark_backend *be = lark_backend_for(dev);
  if (!be || !has(be)) *rc = lark_backend_missing(op, dev);
  return *rc ? NULL : be;
}
static bool has_avg_forward(const lark_backend *be) { return be->avg_pool_forward != NULL; }
static bool has_avg_backward(const lark_backend *be) { return be->avg_pool_backward != NULL; }
static bool has_max_forward(const lark_backend *be) { return be->max_pool_forward != NULL; }
static bool has_max_backward(const lark_backend *be) { return be->max_pool_backward != NULL; }

static int pool_geometry(const char *op, const lark_tensor *t, const lark_pool2d_args *a, pool_geom *g) {
  if (check_pool_input(op, t)) return lark_error_code();
  if (!a) return lark_set_error(LARK_ERR_ARG, "%s: missing arguments", op);
  if (a->kh < 1 || a->kw < 1)
    return lark_set_error(LARK_ERR_ARG, "%s: kernel size must be >= 1, got (%d, %d)", op, a->kh, a->kw);
  if (a->stride_h < 1 || a->stride_w < 1)
    return lark_set_error(LARK_ERR_ARG, "%s: stride must be >= 1, got (%d, %d)", op, a->stride_h, a->stride_w);
  if (a->pad_h < 0 || a->pad_w < 0 || 2 * a->pad_h > a->kh || 2 * a->pad_w > a->kw)
    return lark_set_error(LARK_ERR_ARG, "%s: padding must be >= 0 and at most half the kernel (%d, %d), got (%d, %d)",
                          op, a->kh, a->kw, a->pad_h, a->pad_w);
  int nd = t->ndim;
  g->H = t->shape[nd - 2], g->W = t->shape[nd - 1];
  g->planes = t->shape[nd - 3] * (nd == 4 ? t->shape[0] : 1);
  if (g->H == 0 || g->W == 0)
    return lark_set_error(LARK_ERR_SHAPE, "%s: input has an empty map (%lldx%lld)", op, (long long)g->H, (long long)g->W);
  int64_t ph = g->H + 2 * (int64_t)a->pad_h, pw = g->W + 2 * (int64_t)a->pad_w;
  if (a->kh > ph || a->kw > pw)
    return lark_set_error(LARK_ERR_SHAPE, "%s: the kernel %dx%d is larger than the padded input %lldx%lld", op, a->kh,
                          a->kw, (long long)ph, (long long)pw);
  g->Ho = (ph - a->kh) / a->stride_h + 1;
  g->Wo = (pw - a->kw) / a->stride_w + 1;
  return 0;
}

/* The output shape: the input's with the last two dims (Ho, Wo). */
static void out_shape(const lark_tensor *t, const pool_geom *g, int64_t *shape) {
  memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  shape[t->ndim - 2] = g->Ho;
  shape[t->ndim - 1] = g->Wo;
}

/* ---- avg_pool2d and adaptive_avg_pool2d -------------------------------------------------------- */

/* saved: nothing; iarg: kh, kw, sh, sw, ph, pw, adaptive, Ho, Wo */
static int avg_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_pool2d_args a = {(int)n->iarg[0], (int)n->iarg[1], (int)n->iarg[2], (int)n->iarg[3], (int)n->iarg[4], (int)n->iarg[5]};
  bool adaptive = n->iarg[6] != 0;
  int nd = n->in_ndim[0];
  const int64_t *shape = n->in_shape[0];
  pool_geom pg = {shape[nd - 3] * (nd == 4 ? shape[0] : 1), shape[nd - 2], shape[nd - 1], n->iarg[7], n->iarg[8]};
  int rc;
  const lark_backend *be = device_backend(n->name, g, has_avg_backward, &rc);
  if (rc) return rc;
  if (be) { /* the device's kernel writes every element: no zeroing */
    lark_device dev = lark_tensor_device(g);
    lark_tensor *gc = lark_contiguous(g), *r = gc ? lark_empty(nd, shape, g->dtype, &dev) : NULL;
    rc = !r ? lark_error_code() : lark_numel(r) > 0 ? be->avg_pool_backward(r, gc, &a, adaptive) : 0;
    lark_tensor_release(gc);
    if (rc) {
      lark_tensor_release(r);
      return rc;
    }
    gin[0] = r;
    return 0;
  }
  lark_tensor *gc = lark_contiguous(g), *r = gc ? lark_zeros(nd, shape, g->dtype, NULL) : NULL;
  if (!r) {
    lark_tensor_release(gc);
    return lark_error_code();
  }
  if (g->dtype == LARK_FLOAT32) avg_backward_f32(lark_data_ptr(gc), lark_data_ptr(r), &pg, &a, adaptive);
  else avg_backward_f64(lark_data_ptr(gc), lark_data_ptr(r), &pg, &a, adaptive);
  lark_tensor_release(gc);
  gin[0] = r;
  return 0;
}

static lark_tensor *avg_pool(const char *op, const lark_tensor *input, const lark_pool2d_args *a, const pool_geom *g,
                             bool adaptive) {
  lark_tensor *x = NULL, *out = NULL;
  int64_t shape[4];
  out_shape(input, g, shape);
  int rc;
  const lark_backend *be = device_backend(op, input, has_avg_forward, &rc);
  if (rc) return NULL;
  lark_device dev = lark_tensor_device(input);
  LARK_NO_GRAD(x = lark_contiguous(input);
               out = x ? lark_empty(input->ndim, shape, input->dtype, be ? &dev : NULL) : NULL);
  if (!out) {
    lark_tensor_release(x);
    return NULL;
  }
  if (be) {
    if (lark_numel(out) > 0 && be->avg_pool_forward(out, x, a, adaptive)) {
      lark_tensor_release(x);
      lark_tensor_release(out);
      return NULL;
    }
  } else if (input->dtype == LARK_FLOAT32) {
    avg_forward_f32(lark_data_ptr(x), lark_data_ptr(out), g, a, adaptive);
  } else {
    avg_forward_f64(lark_data_ptr(x), lark_data_ptr(out), g, a, adaptive);
  }
  lark_tensor_release(x);
  if (input->requires_grad) {
    lark_node *n = lark_node_new(op, avg_backward, 1, &input);
    if (n) {
      int64_t args[9] = {a->kh, a->kw, a->stride_h, a->stride_w, a->pad_h, a->pad_w, adaptive, g->Ho, g->Wo};
      memcpy(n->iarg, args, sizeof args);
      lark_node_attach(n, out);
    }
  }
  return out;
}

lark_tensor *lark_avg_pool2d(const lark_tensor *input, const lark_pool2d_args *a) {
  pool_geom g;
  if (pool_geometry("avg_pool2d", input, a, &g)) return NULL;
  return avg_pool("avg_pool2d", input, a, &g, false);
}

lark_tensor *lark_adaptive_avg_pool2d(const lark_tensor *input, int64_t out_h, int64_t out_w) {
  const char *op = "adaptive_avg_pool2d";
  if (check_pool_input(op, input)) return NULL;
  int nd = input->ndim;
  pool_geom g = {input->shape[nd - 3] * (nd == 4 ? input->shape[0] : 1), input->shape[nd - 2], input->shape[nd - 1],
                 out_h, out_w};
  if (out_h < 1 || out_w < 1 || out_h > (1 << 30) || out_w > (1 << 30)) {
    lark_set_error(LARK_ERR_ARG, "%s: output size must be >= 1, got (%lld, %lld)", op, (long long)out_h, (long long)out_w);
    return NULL;
  }
  if ((g.H == 0 || g.W == 0) && g.planes > 0) {
    lark_set_error(LARK_ERR_SHAPE, "%s: input has an empty map (%lldx%lld)", op, (long long)g.H, (long long)g.W);
    return NULL;
  }
  lark_pool2d_args a = {1, 1, 1, 1, 0, 0}; /* unused by the adaptive windows */
  return avg_pool(op, input, &a, &g, true);
}

/* ---- max_pool2d ------------------------------------------------------------------------------ */

/* saved: 0 the argmax indices (planes, Ho, Wo layout of the output); iarg: Ho, Wo, then kh, kw, sh,
 * sw, ph, pw (the windows, which a device's gather visits) */
static int max_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *idx = lark_node_saved(n, 0);
  if (!idx) return lark_error_code();
  int nd = n->in_ndim[0];
  const int64_t *shape = n->in_shape[0];
  pool_geom pg = {shape[nd - 3] * (nd == 4 ? shape[0] : 1), shape[nd - 2], shape[nd - 1], n->iarg[0], n->iarg[1]};
  int rc;
  const lark_backend *be = device_backend(n->name, g, has_max_backward, &rc);
  if (rc) return rc;
  if (be) { /* the device's kernel writes every element: no zeroing */
    lark_pool2d_args a = {(int)n->iarg[2], (int)n->iarg[3], (int)n->iarg[4], (int)n->iarg[5], (int)n->iarg[6],
                          (int)n->iarg[7]};
    lark_device dev = lark_tensor_device(g);
    lark_tensor *gc = lark_contiguous(g), *r = gc ? lark_empty(nd, shape, g->dtype, &dev) : NULL;
    rc = !r ? lark_error_code() : lark_numel(r) > 0 ? be->max_pool_backward(r, gc, idx, &a) : 0;
    lark_tensor_release(gc);
    if (rc) {
      lark_tensor_release(r);
      return rc;
    }
    gin[0] = r;
    return 0;
  }
  lark_tensor *gc = lark_contiguous(g), *r = gc ? lark_zeros(nd, shape, g->dtype, NULL) : NULL;
  if (!r) {
    lark_tensor_release(gc);
    return lark_error_code();
  }
  if (g->dtype == LARK_FLOAT32) max_backward_f32(lark_data_ptr(gc), lark_data_ptr(idx), lark_data_ptr(r), &pg);
  else max_backward_f64(lark_data_ptr(gc), lark_data_ptr(idx), lark_data_ptr(r), &pg);
  lark_tensor_release(gc);
  gin[0] = r;
  return 0;
}

lark_tensor *lark_max_pool2d(const lark_tensor *input, const lark_pool2d_args *a, lark_tensor **indices) {
  pool_geom g;
  if (indices) *indices = NULL;
  if (pool_geometry("max_pool2d", input, a, &g)) return NULL;
  lark_tensor *x = NULL, *out = NULL, *idx = NULL;
  int64_t shape[4];
  out_shape(input, &g, shape);
  int rc;
  const lark_backend *be = device_backend("max_pool2d", input, has_max_forward, &rc);
  if (rc) return NULL;
  lark_device dev = lark_tensor_device(input);
  const lark_device *on = be ? &dev : NULL;
  LARK_NO_GRAD(x = lark_contiguous(input); out = x ? lark_empty(input->ndim, shape, input->dtype, on) : NULL;
               idx = out ? lark_empty(input->ndim, shape, LARK_INT64, on) : NULL);
  if (!idx) {
    lark_tensor_release(x);
    lark_tensor_release(out);
    return NULL;
  }
  if (be) {
    if (lark_numel(out) > 0 && be->max_pool_forward(out, idx, x, a)) {
      lark_tensor_release(x);
      lark_tensor_release(out);
      lark_tensor_release(idx);
      return NULL;
    }
  } else if (input->dtype == LARK_FLOAT32) {
    max_forward_f32(lark_data_ptr(x), lark_data_ptr(out), lark_data_ptr(idx), &g, a);
  } else {
    max_forward_f64(lark_data_ptr(x), lark_data_ptr(out), lark_data_ptr(idx), &g, a);
  }
  lark_tensor_release(x);
  if (input->requires_grad) {
    lark_node *n = lark_node_new("max_pool2d", max_backward, 1, &input);
    if (n) {
      int64_t args[8] = {g.Ho, g.Wo, a->kh, a->kw, a->stride_h, a->stride_w, a->pad_h, a->pad_w};
      memcpy(n->iarg, args, sizeof args);
      if (lark_node_save(n, idx)) {
        lark_node_release(n);
        lark_tensor_release(out);
        lark_tensor_release(idx);
        return NULL;
      }
      lark_node_attach(n, out);
    }
  }
  if (indices) *indices = idx;
  else lark_tensor_release(idx);
  return out;
}

/* ---- pad --------------------------------------------------------------------------------------- */

static lark_tensor *pad_impl(const lark_tensor *input, int npads, const int64_t *pads, double value) {
  const char *op = "pad";
  if (!input) {
    lark_set_error(LARK_ERR_ARG, "%s: input is missing (expected a tensor)", op);
    return NULL;
  }
  if (lark_check_alive(op, input, "input")) return NULL;
  if (npads < 0 || npads % 2 || npads > 2 * input->ndim) {
    lark_set_error(LARK_ERR_ARG, "%s: expected an even number of pads, at most 2 per dim (%d for %d dims), got %d", op,
                   2 * input->ndim, input->ndim, npads);
    return NULL;
  }
  int nd = input->ndim;
  int64_t shape[LARK_MAX_DIMS];
  memcpy(shape, input->shape, sizeof(int64_t) * (size_t)nd);
  for (int k = 0; k < npads / 2; k++) {
    int d = nd - 1 - k;
    int64_t lo = pads[2 * k], hi = pads[2 * k + 1];
    if (lo > (1LL << 40) || hi > (1LL << 40) || lo < -(1LL << 40) || hi < -(1LL << 40) || shape[d] + lo + hi < 0) {
      lark_set_error(LARK_ERR_ARG, "%s: pads (%lld, %lld) on dim %d of size %lld give a negative size", op,
                     (long long)lo, (long long)hi, d + 1, (long long)shape[d]);
      return NULL;
    }
    shape[d] += lo + hi;
  }
  lark_device dev = lark_tensor_device(input);
  lark_tensor *out = lark_full(nd, shape, value, input->dtype, &dev);
  if (!out) return NULL;
  /* the surviving part: in the input from max(0, -lo), in the output from max(0, lo) */
  lark_tensor *src = lark_tensor_retain((lark_tensor *)input), *dst = lark_tensor_retain(out);
  bool empty = false;
  for (int k = 0; k < npads / 2 && src && dst; k++) {
    int d = nd - 1 - k;
    int64_t lo = pads[2 * k], hi = pads[2 * k + 1];
    int64_t len = input->shape[d] - (lo < 0 ? -lo : 0) - (hi < 0 ? -hi : 0);
    if (len <= 0) {
      empty = true;
      break;
    }
    lark_tensor *s2 = lark_narrow(src, d, lo < 0 ? -lo : 0, len), *d2 = lark_narrow(dst, d, lo > 0 ? lo : 0, len);
    lark_tensor_release(src);
    lark_tensor_release(dst);
    src = s2, dst = d2;
  }
  int rc = !src || !dst ? lark_error_code() : 0;
  if (!rc && !empty && lark_numel(src) > 0) rc = lark_copy_(dst, src);
  lark_tensor_release(src);
  lark_tensor_release(dst);
  if (rc) {
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

/* iarg: npads, then the pads */
static int pad_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  int npads = (int)n->iarg[0];
  int64_t neg[2 * LARK_MAX_DIMS];
  for (int i = 0; i < npads; i++) neg[i] = -n->iarg[1 + i];
  gin[0] = pad_impl(g, npads, neg, 0.0);
  return gin[0] ? 0 : lark_error_code();
}

lark_tensor *lark_pad(const lark_tensor *input, int npads, const int64_t *pads, double value) {
  lark_tensor *out;
  LARK_NO_GRAD(out = pad_impl(input, npads, pads, value));
  if (out && input->requires_grad) {
    /* the node keeps the pads in iarg, which holds LARK_MAX_DIMS + 4 numbers */
    if (npads + 1 > LARK_MAX_DIMS + 4) {
      lark_tensor_release(out);
      lark_set_error(LARK_ERR_ARG, "pad: autograd supports padding at most %d dims", (LARK_MAX_DIMS + 3) / 2);
      return NULL;
    }
    lark_node *n = lark_node_new("pad", pad_backward, 1, &input);
    if (n) {
      n->iarg[0] = npads;
      for (int i = 0; i < npads; i++) n->iarg[1 + i] = pads[i];
      lark_node_attach(n, out);
    }
  }
  return out;
}
