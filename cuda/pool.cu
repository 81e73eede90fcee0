/*
 * pool.cu: avg_pool2d, adaptive_avg_pool2d and max_pool2d on the GPU, forward and backward, float32
 * and float64. Contracts in core/backend.h (the *_pool_* fields); core/ops/pool.c validates, makes
 * the operands contiguous and calls these.
 *
 * Each kernel is pool.c's loop for one result element, so the GPU gives the CPU's bits:
 *   - forward: one thread per output, the same window, the same order of additions (row-major
 *     over the window, in float64 for the means), the same NaN rule and tie rule for the maximum;
 *   - backward: a gather, one thread per input element, that visits the windows containing it in
 *     increasing output order and adds in the input's dtype what pool.c's scatter adds to it in
 *     that same order (a zeroed gradient plus each term). No atomics: deterministic, and every
 *     element is written once, so the result needs no zeroing.
 * Indices: a grid-stride loop over the linear index, uint32 when the problem fits (cheaper
 * division), uint64 otherwise; window coordinates in int64.
 */
#include <limits.h>
#include <math.h>

#include "cuda.h"

namespace {

struct pool_geom {
  int64_t h, w;     /* input map */
  int64_t ho, wo;   /* output map */
  int64_t kh, kw;   /* window */
  int64_t sh, sw;   /* strides */
  int64_t ph, pw;   /* padding (top = bottom, left = right) */
};

constexpr int THREADS = 256;

/* pool.c's windows along one axis: [start, end) for output index o. */
__device__ __forceinline__ void plain_window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t n,
                                             int64_t *start, int64_t *end) {
  *start = o * stride - pad;
  *end = *start + k;
  if (*start < 0) *start = 0; /* CLAMP_WINDOW */
  if (*end > n) *end = n;
}
__device__ __forceinline__ void adaptive_window(int64_t o, int64_t in, int64_t out, int64_t *start, int64_t *end) {
  *start = (o * in) / out;               /* floor(o * in / out) */
  *end = ((o + 1) * in + out - 1) / out; /* ceil((o + 1) * in / out) */
}

/* The output indices [*lo, *hi] whose plain windows (stride, pad, k) may contain input index i,
 * clipped to [0, n_out); empty when *lo > *hi. Callers still test membership. */
__device__ __forceinline__ void plain_range(int64_t i, int64_t stride, int64_t pad, int64_t k, int64_t n_out,
                                            int64_t *lo, int64_t *hi) {
  const int64_t t = i + pad; /* o*stride <= t < o*stride + k */
  *lo = t - k < 0 ? 0 : (t - k) / stride + 1;
  *hi = t / stride;
  if (*hi > n_out - 1) *hi = n_out - 1;
}
/* The same for adaptive windows: floor(i*out/in) .. ceil((i+1)*out/in) - 1, widened by one. */
__device__ __forceinline__ void adaptive_range(int64_t i, int64_t in, int64_t out, int64_t *lo, int64_t *hi) {
  *lo = i * out / in - 1;
  *hi = ((i + 1) * out + in - 1) / in;
  if (*lo < 0) *lo = 0;
  if (*hi > out - 1) *hi = out - 1;
}

template <typename T>
__device__ __forceinline__ bool is_nan(T v) { return v != v; }

/* out[e] = the mean of e's window of x (pool.c's avg_forward). */
template <typename T, typename index_t>
__global__ void avg_forward_kernel(const T *__restrict__ x /* (planes, H, W) */, T *__restrict__ out /* (planes, Ho, Wo) */,
                                   const pool_geom g, bool adaptive, index_t total /* planes*Ho*Wo */) {
  const index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const index_t r = e / (index_t)g.wo, pr = r / (index_t)g.ho;
    const int64_t ow = (int64_t)(e - r * (index_t)g.wo), oh = (int64_t)(r - pr * (index_t)g.ho);
    const T *xp = x + (int64_t)pr * g.h * g.w;
    int64_t h0, h1, w0, w1;
    double count;
    if (adaptive) {
      adaptive_window(oh, g.h, g.ho, &h0, &h1);
      adaptive_window(ow, g.w, g.wo, &w0, &w1);
      count = (double)((h1 - h0) * (w1 - w0));
    } else {
      plain_window(oh, g.sh, g.ph, g.kh, g.h, &h0, &h1);
      plain_window(ow, g.sw, g.pw, g.kw, g.w, &w0, &w1);
      count = (double)g.kh * (double)g.kw; /* count_include_pad */
    }
    double s = 0;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) s += (double)xp[ih * g.w + iw];
    out[e] = (T)(s / count);
  }
}

/* gin[e] = the sum, over the windows containing e in increasing output order, of each window's
 * gradient share (T)(gout / count) (pool.c's avg_backward). */
template <typename T, typename index_t>
__global__ void avg_backward_kernel(const T *__restrict__ gout /* (planes, Ho, Wo) */, T *__restrict__ gin /* (planes, H, W) */,
                                    const pool_geom g, bool adaptive, index_t total /* planes*H*W */) {
  const index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const index_t r = e / (index_t)g.w, pr = r / (index_t)g.h;
    const int64_t iw = (int64_t)(e - r * (index_t)g.w), ih = (int64_t)(r - pr * (index_t)g.h);
    const T *gp = gout + (int64_t)pr * g.ho * g.wo;
    int64_t oh0, oh1, ow0, ow1;
    if (adaptive) {
      adaptive_range(ih, g.h, g.ho, &oh0, &oh1);
      adaptive_range(iw, g.w, g.wo, &ow0, &ow1);
    } else {
      plain_range(ih, g.sh, g.ph, g.kh, g.ho, &oh0, &oh1);
      plain_range(iw, g.sw, g.pw, g.kw, g.wo, &ow0, &ow1);
    }
    T acc = 0;
    for (int64_t oh = oh0; oh <= oh1; oh++) {
      int64_t h0, h1;
      if (adaptive) adaptive_window(oh, g.h, g.ho, &h0, &h1);
      else plain_window(oh, g.sh, g.ph, g.kh, g.h, &h0, &h1);
      if (ih < h0 || ih >= h1) continue;
      for (int64_t ow = ow0; ow <= ow1; ow++) {
        int64_t w0, w1;
        double count;
        if (adaptive) {
          adaptive_window(ow, g.w, g.wo, &w0, &w1);
          count = (double)((h1 - h0) * (w1 - w0));
        } else {
          plain_window(ow, g.sw, g.pw, g.kw, g.w, &w0, &w1);
          count = (double)g.kh * (double)g.kw;
        }
        if (iw < w0 || iw >= w1) continue;
        acc += (T)((double)gp[oh * g.wo + ow] / count);
      }
    }
    gin[e] = acc;
  }
}

/* out[e], idx[e] = the maximum of e's window of x and the in-plane position of its first
 * occurrence; NaN wins and stays (pool.c's max_forward). */
template <typename T, typename index_t>
__global__ void max_forward_kernel(const T *__restrict__ x /* (planes, H, W) */, T *__restrict__ out /* (planes, Ho, Wo) */,
                                   int64_t *__restrict__ idx /* (planes, Ho, Wo) */, const pool_geom g,
                                   index_t total /* planes*Ho*Wo */) {
  const index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const index_t r = e / (index_t)g.wo, pr = r / (index_t)g.ho;
    const int64_t ow = (int64_t)(e - r * (index_t)g.wo), oh = (int64_t)(r - pr * (index_t)g.ho);
    const T *xp = x + (int64_t)pr * g.h * g.w;
    int64_t h0, h1, w0, w1;
    plain_window(oh, g.sh, g.ph, g.kh, g.h, &h0, &h1);
    plain_window(ow, g.sw, g.pw, g.kw, g.w, &w0, &w1);
    T best = (T)-INFINITY;
    int64_t at = h0 * g.w + w0;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) {
        const T v = xp[ih * g.w + iw];
        /* strictly greater keeps the first of ties; NaN wins and stays */
        if ((v > best || is_nan(v)) && !is_nan(best)) best = v, at = ih * g.w + iw;
      }
    out[e] = best;
    idx[e] = at;
  }
}

/* gin[e] = the sum of gout over the windows containing e whose idx names e, in increasing output
 * order (pool.c's max_backward scatters them in that order). */
template <typename T, typename index_t>
__global__ void max_backward_kernel(const T *__restrict__ gout /* (planes, Ho, Wo) */,
                                    const int64_t *__restrict__ idx /* (planes, Ho, Wo) */,
                                    T *__restrict__ gin /* (planes, H, W) */, const pool_geom g,
                                    index_t total /* planes*H*W */) {
  const index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const index_t r = e / (index_t)g.w, pr = r / (index_t)g.h;
    const int64_t iw = (int64_t)(e - r * (index_t)g.w), ih = (int64_t)(r - pr * (index_t)g.h);
    const int64_t base = (int64_t)pr * g.ho * g.wo, me = ih * g.w + iw;
    int64_t oh0, oh1, ow0, ow1;
    plain_range(ih, g.sh, g.ph, g.kh, g.ho, &oh0, &oh1);
    plain_range(iw, g.sw, g.pw, g.kw, g.wo, &ow0, &ow1);
    T acc = 0;
    for (int64_t oh = oh0; oh <= oh1; oh++)
      for (int64_t ow = ow0; ow <= ow1; ow++) {
        const int64_t o = base + oh * g.wo + ow;
        if (idx[o] == me) acc += gout[o];
      }
    gin[e] = acc;
  }
}

/* Checks the operands of one call: big (..., H, W) and small (..., Ho, Wo), contiguous, one float
 * dtype, the same leading dims, non-empty maps; fills g (a's window, or the adaptive sizes). */
static int check_pool(const char *op, const lark_tensor *big, const lark_tensor *small, const lark_pool2d_args *a,
                      bool adaptive, pool_geom *g, int64_t *planes) {
  if (big->dtype != small->dtype || (big->dtype != LARK_FLOAT32 && big->dtype != LARK_FLOAT64))
    return lark_set_error(LARK_ERR_DTYPE, "%s: expected one float dtype, got %s and %s", op, lark_dtype_name(big->dtype),
                          lark_dtype_name(small->dtype));
  const int nd = big->ndim;
  bool ok = nd >= 3 && small->ndim == nd && lark_is_contiguous(big) && lark_is_contiguous(small);
  for (int d = 0; ok && d < nd - 2; d++) ok = big->shape[d] == small->shape[d];
  if (!ok) return lark_set_error(LARK_ERR_ARG, "%s: expected contiguous (..., H, W) and (..., Ho, Wo) operands", op);
  g->h = big->shape[nd - 2], g->w = big->shape[nd - 1], g->ho = small->shape[nd - 2], g->wo = small->shape[nd - 1];
  if (adaptive) {
    g->kh = g->kw = g->sh = g->sw = 1, g->ph = g->pw = 0;
  } else {
    if (!a || a->kh < 1 || a->kw < 1 || a->stride_h < 1 || a->stride_w < 1 || a->pad_h < 0 || a->pad_w < 0)
      return lark_set_error(LARK_ERR_ARG, "%s: invalid pooling parameters", op);
    g->kh = a->kh, g->kw = a->kw, g->sh = a->stride_h, g->sw = a->stride_w, g->ph = a->pad_h, g->pw = a->pad_w;
  }
  *planes = 1;
  for (int d = 0; d < nd - 2; d++) *planes *= big->shape[d];
  if (*planes > 0 && (g->h < 1 || g->w < 1 || g->ho < 1 || g->wo < 1))
    return lark_set_error(LARK_ERR_SHAPE, "%s: expected non-empty maps, got %lldx%lld -> %lldx%lld", op,
                          (long long)g->h, (long long)g->w, (long long)g->ho, (long long)g->wo);
  return 0;
}

/* Runs kernel32 (args..., total) over `total` items, or kernel64 when a uint32 index could wrap. */
template <typename K32, typename K64, typename... Args>
static int launch_items(const char *op, int64_t total, K32 kernel32, K64 kernel64, Args... args) {
  if (total == 0) return 0;
  const unsigned blocks = lark_cuda_grid(total, THREADS);
  if (lark_cuda_fits32(total, blocks, THREADS)) kernel32<<<blocks, THREADS>>>(args..., (uint32_t)total);
  else kernel64<<<blocks, THREADS>>>(args..., (uint64_t)total);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

template <typename T>
static int avg_forward(lark_tensor *out, const lark_tensor *x, const lark_pool2d_args *a, bool adaptive) {
  const char *op = adaptive ? "adaptive_avg_pool2d" : "avg_pool2d";
  pool_geom g;
  int64_t planes;
  if (check_pool(op, x, out, a, adaptive, &g, &planes)) return lark_error_code();
  return launch_items(op, lark_numel(out), avg_forward_kernel<T, uint32_t>, avg_forward_kernel<T, uint64_t>,
                      (const T *)lark_data_ptr(x), (T *)lark_data_ptr(out), g, adaptive);
}

template <typename T>
static int avg_backward(lark_tensor *gin, const lark_tensor *gout, const lark_pool2d_args *a, bool adaptive) {
  const char *op = adaptive ? "adaptive_avg_pool2d backward" : "avg_pool2d backward";
  pool_geom g;
  int64_t planes;
  if (check_pool(op, gin, gout, a, adaptive, &g, &planes)) return lark_error_code();
  return launch_items(op, lark_numel(gin), avg_backward_kernel<T, uint32_t>, avg_backward_kernel<T, uint64_t>,
                      (const T *)lark_data_ptr(gout), (T *)lark_data_ptr(gin), g, adaptive);
}

/* idx: int64, the shape of `like` and contiguous. */
static int check_idx(const char *op, const lark_tensor *idx, const lark_tensor *like) {
  bool ok = idx->dtype == LARK_INT64 && idx->ndim == like->ndim && lark_is_contiguous(idx);
  for (int d = 0; ok && d < idx->ndim; d++) ok = idx->shape[d] == like->shape[d];
  return ok ? 0 : lark_set_error(LARK_ERR_ARG, "%s: expected contiguous int64 indices of the output's shape", op);
}

template <typename T>
static int max_forward(lark_tensor *out, lark_tensor *idx, const lark_tensor *x, const lark_pool2d_args *a) {
  const char *op = "max_pool2d";
  pool_geom g;
  int64_t planes;
  if (check_pool(op, x, out, a, false, &g, &planes) || check_idx(op, idx, out)) return lark_error_code();
  return launch_items(op, lark_numel(out), max_forward_kernel<T, uint32_t>, max_forward_kernel<T, uint64_t>,
                      (const T *)lark_data_ptr(x), (T *)lark_data_ptr(out), (int64_t *)lark_data_ptr(idx), g);
}

template <typename T>
static int max_backward(lark_tensor *gin, const lark_tensor *gout, const lark_tensor *idx, const lark_pool2d_args *a) {
  const char *op = "max_pool2d backward";
  pool_geom g;
  int64_t planes;
  if (check_pool(op, gin, gout, a, false, &g, &planes) || check_idx(op, idx, gout)) return lark_error_code();
  return launch_items(op, lark_numel(gin), max_backward_kernel<T, uint32_t>, max_backward_kernel<T, uint64_t>,
                      (const T *)lark_data_ptr(gout), (const int64_t *)lark_data_ptr(idx), (T *)lark_data_ptr(gin), g);
}

} /* namespace */

/* ---- the backend's entry points (core/backend.h) -------------------------------------------- */

extern "C" int lark_cuda_avg_pool_forward(lark_tensor *out, const lark_tensor *x, const lark_pool2d_args *a,
                                          bool adaptive) {
  if (lark_cuda_set_device(lark_tensor_device(out), adaptive ? "adaptive_avg_pool2d" : "avg_pool2d"))
    return lark_error_code();
  return out->dtype == LARK_FLOAT32 ? avg_forward<float>(out, x, a, adaptive) : avg_forward<double>(out, x, a, adaptive);
}

extern "C" int lark_cuda_avg_pool_backward(lark_tensor *gin, const lark_tensor *gout, const lark_pool2d_args *a,
                                           bool adaptive) {
  if (lark_cuda_set_device(lark_tensor_device(gin), adaptive ? "adaptive_avg_pool2d backward" : "avg_pool2d backward"))
    return lark_error_code();
  return gin->dtype == LARK_FLOAT32 ? avg_backward<float>(gin, gout, a, adaptive)
                                    : avg_backward<double>(gin, gout, a, adaptive);
}

extern "C" int lark_cuda_max_pool_forward(lark_tensor *out, lark_tensor *idx, const lark_tensor *x,
                                          const lark_pool2d_args *a) {
  if (lark_cuda_set_device(lark_tensor_device(out), "max_pool2d")) return lark_error_code();
  return out->dtype == LARK_FLOAT32 ? max_forward<float>(out, idx, x, a) : max_forward<double>(out, idx, x, a);
}

extern "C" int lark_cuda_max_pool_backward(lark_tensor *gin, const lark_tensor *gout, const lark_tensor *idx,
                                           const lark_pool2d_args *a) {
  if (lark_cuda_set_device(lark_tensor_device(gin), "max_pool2d backward")) return lark_error_code();
  return gin->dtype == LARK_FLOAT32 ? max_backward<float>(gin, gout, idx, a) : max_backward<double>(gin, gout, idx, a);
}
