/*
 * conv.cu: im2col and col2im of the dense and grouped 2-D convolution on the GPU, float32 and
 * float64. Contracts in core/backend.h (the im2col and col2im fields); core/ops/conv.c validates,
 * allocates, chunks the batch and calls these around the backend's cuBLAS gemm, as its CPU path
 * does around CBLAS.
 *
 *   im2col: one thread per element of col, walked in col's memory order, so that the writes (the
 *           bigger side: kh*kw copies of the input) are coalesced; neighbouring threads read
 *           neighbouring output columns, which are neighbouring input columns at stride 1.
 *   col2im: a gather, one thread per element of x summing the col entries that im2col copied it to,
 *           in increasing row order (the order the CPU's col2im adds them in), then one store. No
 *           atomics: every element is written once, the same bits on every run, and the result
 *           needs no zeroed buffer.
 *
 * Indices: a grid-stride loop over a linear index; uint32 index arithmetic and int coordinates
 * (32-bit division is several times cheaper on a GPU) when the whole problem and every plane
 * coordinate fit, int64 otherwise.
 */
#include <limits.h>

#include "cuda.h"

namespace {

/* The convolution's geometry as the kernels read it (by value). */
template <typename coord_t>
struct col_geom {
  coord_t c, h, w;      /* channels and map of x */
  coord_t ho, wo;       /* the output map: col has ho*wo columns */
  coord_t kh, kw;       /* kernel */
  coord_t sh, sw;       /* strides */
  coord_t pt, pl;       /* top and left padding */
  coord_t dh, dw;       /* dilations */
};

/* col element e (in col's memory order) = its x element, or 0 in the padding.
 * sample-major: e = (s*R + r)*Q + q; tap-major: e = (r*nb + s)*Q + q; R = c*kh*kw, Q = ho*wo,
 * r = (ch*kh + i)*kw + j, q = oh*wo + ow. */
template <typename T, typename index_t, typename coord_t, bool TAP_MAJOR>
__global__ void im2col_kernel(const T *__restrict__ x /* (nb, C, H, W) */,
                              T *__restrict__ col /* (nb, C*kh*kw, Ho*Wo) or, TAP_MAJOR, (C*kh*kw, nb, Ho*Wo) */,
                              const col_geom<coord_t> g, index_t nb /* samples in the chunk */,
                              index_t total /* elements of col */) {
  const index_t Q = (index_t)g.ho * (index_t)g.wo, R = (index_t)g.c * (index_t)g.kh * (index_t)g.kw;
  const index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    const index_t rest = e / Q, q = e - rest * Q;
    index_t s, r;
    if (TAP_MAJOR) {
      r = rest / nb;
      s = rest - r * nb;
    } else {
      s = rest / R;
      r = rest - s * R;
    }
    const index_t t = r / (index_t)g.kw, j = r - t * (index_t)g.kw;
    const index_t ch = t / (index_t)g.kh, i = t - ch * (index_t)g.kh;
    const index_t oh = q / (index_t)g.wo, ow = q - oh * (index_t)g.wo;
    const coord_t ih = (coord_t)oh * g.sh - g.pt + (coord_t)i * g.dh;
    const coord_t iw = (coord_t)ow * g.sw - g.pl + (coord_t)j * g.dw;
    T v = 0;
    if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w)
      v = x[(((int64_t)s * g.c + (int64_t)ch) * g.h + ih) * (int64_t)g.w + iw];
    col[e] = v;
  }
}

/* x element e = (s, ch, ih, iw) = the sum over taps (i, j), i outer, j inner, of the sample-major
 * col entry that im2col copied it to, where one exists. */
template <typename T, typename index_t, typename coord_t>
__global__ void col2im_kernel(const T *__restrict__ col /* (nb, C*kh*kw, Ho*Wo) */, T *__restrict__ x /* (nb, C, H, W) */,
                              const col_geom<coord_t> g, index_t total /* elements of x */) {
  const int64_t Q = (int64_t)g.ho * g.wo, R = (int64_t)g.c * g.kh * g.kw;
  const index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t e = (index_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    index_t rest = e / (index_t)g.w;
    const coord_t iw = (coord_t)(e - rest * (index_t)g.w);
    index_t rest2 = rest / (index_t)g.h;
    const coord_t ih = (coord_t)(rest - rest2 * (index_t)g.h);
    const index_t s = rest2 / (index_t)g.c, ch = rest2 - s * (index_t)g.c;
    const T *cs = col + ((int64_t)s * R + (int64_t)ch * g.kh * g.kw) * Q; /* row (ch, 0, 0) of sample s */
    T acc = 0;
    for (coord_t i = 0; i < g.kh; i++) {
      const coord_t th = ih + g.pt - i * g.dh; /* oh * sh when tap i of output row oh reads ih */
      if (th < 0) break;                      /* th only falls as i grows */
      const coord_t oh = th / g.sh;
      if (oh * g.sh != th || oh >= g.ho) continue;
      for (coord_t j = 0; j < g.kw; j++) {
        const coord_t tw = iw + g.pl - j * g.dw;
        if (tw < 0) break;
        const coord_t ow = tw / g.sw;
        if (ow * g.sw != tw || ow >= g.wo) continue;
        acc += cs[((int64_t)i * g.kw + j) * Q + (int64_t)oh * g.wo + ow];
      }
    }
    x[e] = acc;
  }
}

/* Threads per block of both kernels. */
constexpr int THREADS = 256;

template <typename coord_t>
static col_geom<coord_t> make_geom(int64_t c, int64_t h, int64_t w, int64_t ho, int64_t wo,
                                   const lark_conv2d_params *p) {
  col_geom<coord_t> g;
  g.c = (coord_t)c, g.h = (coord_t)h, g.w = (coord_t)w, g.ho = (coord_t)ho, g.wo = (coord_t)wo;
  g.kh = (coord_t)p->kh, g.kw = (coord_t)p->kw, g.sh = (coord_t)p->stride_h, g.sw = (coord_t)p->stride_w;
  g.pt = (coord_t)p->pad_top, g.pl = (coord_t)p->pad_left, g.dh = (coord_t)p->dil_h, g.dw = (coord_t)p->dil_w;
  return g;
}

/* Whether every in-plane coordinate the kernels form (sizes, paddings, dilated kernel extents,
 * products of an output index and a stride, and the channel count) fits an int with room to spare,
 * and the linear index of `total` elements a uint32 through the grid-stride loop. */
static bool small_problem(int64_t total, unsigned blocks, int64_t c, int64_t h, int64_t w, int64_t ho, int64_t wo,
                          const lark_conv2d_params *p) {
  const int64_t lim = (int64_t)1 << 30;
  const int64_t v[] = {c,
                       h + p->pad_top + p->pad_bottom,
                       w + p->pad_left + p->pad_right,
                       (int64_t)p->dil_h * p->kh,
                       (int64_t)p->dil_w * p->kw,
                       ho * p->stride_h,
                       wo * p->stride_w,
                       (int64_t)p->kh * p->kw * c};
  for (int64_t x : v)
    if (x < 0 || x >= lim) return false;
  return lark_cuda_fits32(total, blocks, THREADS);
}

/* Ho and Wo of an (H, W) map under p, or -1 when the padded map is smaller than the dilated kernel. */
static void out_size(int64_t h, int64_t w, const lark_conv2d_params *p, int64_t *ho, int64_t *wo) {
  const int64_t eh = (int64_t)p->dil_h * (p->kh - 1) + 1, ew = (int64_t)p->dil_w * (p->kw - 1) + 1;
  const int64_t ph = h + p->pad_top + p->pad_bottom, pw = w + p->pad_left + p->pad_right;
  *ho = ph < eh ? -1 : (ph - eh) / p->stride_h + 1;
  *wo = pw < ew ? -1 : (pw - ew) / p->stride_w + 1;
}

/* The checks both entry points share: dtypes, contiguity, parameters, and col's shape against x's. */
static int check_pair(const char *op, const lark_tensor *x, const lark_tensor *col, const lark_conv2d_params *p,
                      bool tap_major, int64_t *ho, int64_t *wo) {
  if (x->dtype != col->dtype || (x->dtype != LARK_FLOAT32 && x->dtype != LARK_FLOAT64))
    return lark_set_error(LARK_ERR_DTYPE, "%s: expected one float dtype, got x %s and col %s", op,
                          lark_dtype_name(x->dtype), lark_dtype_name(col->dtype));
  if (x->ndim != 4 || col->ndim != 3 || !lark_is_contiguous(x) || !lark_is_contiguous(col))
    return lark_set_error(LARK_ERR_ARG, "%s: expected a contiguous 4-D x and a contiguous 3-D col", op);
  if (p->kh < 1 || p->kw < 1 || p->stride_h < 1 || p->stride_w < 1 || p->dil_h < 1 || p->dil_w < 1 ||
      p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0)
    return lark_set_error(LARK_ERR_ARG, "%s: invalid convolution parameters", op);
  out_size(x->shape[2], x->shape[3], p, ho, wo);
  const int64_t nb = x->shape[0], rows = x->shape[1] * p->kh * p->kw;
  const int64_t want[3] = {tap_major ? rows : nb, tap_major ? nb : rows, *ho * *wo};
  if (*ho < 1 || *wo < 1 || col->shape[0] != want[0] || col->shape[1] != want[1] || col->shape[2] != want[2]) {
    char a[128], b[128], c[128];
    return lark_set_error(LARK_ERR_SHAPE, "%s: col has shape %s, expected %s for x %s", op,
                          lark_shape_str(3, col->shape, a, sizeof a), lark_shape_str(3, want, b, sizeof b),
                          lark_shape_str(4, x->shape, c, sizeof c));
  }
  return 0;
}

template <typename T>
static int im2col(lark_tensor *col, const lark_tensor *x, const lark_conv2d_params *p, bool tap_major) {
  const char *op = "conv2d";
  int64_t ho, wo;
  if (check_pair(op, x, col, p, tap_major, &ho, &wo)) return lark_error_code();
  const int64_t total = lark_numel(col);
  if (total == 0) return 0; /* a grid of 0 blocks is an invalid launch */
  const int64_t nb = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
  const T *xd = (const T *)lark_data_ptr(x);
  T *cd = (T *)lark_data_ptr(col);
  const unsigned blocks = lark_cuda_grid(total, THREADS);
  if (small_problem(total, blocks, c, h, w, ho, wo, p)) {
    const col_geom<int> g = make_geom<int>(c, h, w, ho, wo, p);
    if (tap_major)
      im2col_kernel<T, uint32_t, int, true><<<blocks, THREADS>>>(xd, cd, g, (uint32_t)nb, (uint32_t)total);
    else
      im2col_kernel<T, uint32_t, int, false><<<blocks, THREADS>>>(xd, cd, g, (uint32_t)nb, (uint32_t)total);
  } else {
    const col_geom<int64_t> g = make_geom<int64_t>(c, h, w, ho, wo, p);
    if (tap_major)
      im2col_kernel<T, uint64_t, int64_t, true><<<blocks, THREADS>>>(xd, cd, g, (uint64_t)nb, (uint64_t)total);
    else
      im2col_kernel<T, uint64_t, int64_t, false><<<blocks, THREADS>>>(xd, cd, g, (uint64_t)nb, (uint64_t)total);
  }
  return lark_cuda_check(cudaGetLastError(), op, "im2col kernel launch failed");
}

template <typename T>
static int col2im(lark_tensor *x, const lark_tensor *col, const lark_conv2d_params *p) {
  const char *op = "conv2d backward";
  int64_t ho, wo;
  if (check_pair(op, x, col, p, false, &ho, &wo)) return lark_error_code();
  const int64_t total = lark_numel(x);
  if (total == 0) return 0;
  const int64_t c = x->shape[1], h = x->shape[2], w = x->shape[3];
  const T *cd = (const T *)lark_data_ptr(col);
  T *xd = (T *)lark_data_ptr(x);
  const unsigned blocks = lark_cuda_grid(total, THREADS);
  if (small_problem(total, blocks, c, h, w, ho, wo, p))
    col2im_kernel<T, uint32_t, int><<<blocks, THREADS>>>(cd, xd, make_geom<int>(c, h, w, ho, wo, p), (uint32_t)total);
  else
    col2im_kernel<T, uint64_t, int64_t><<<blocks, THREADS>>>(cd, xd, make_geom<int64_t>(c, h, w, ho, wo, p),
                                                             (uint64_t)total);
  return lark_cuda_check(cudaGetLastError(), op, "col2im kernel launch failed");
}

} /* namespace */

/* ---- the backend's entry points (core/backend.h) -------------------------------------------- */

extern "C" int lark_cuda_im2col(lark_tensor *col, const lark_tensor *x, const lark_conv2d_params *p, unsigned flags) {
  if (lark_cuda_set_device(lark_tensor_device(col), "conv2d")) return lark_error_code();
  const bool tap_major = (flags & LARK_IM2COL_TAP_MAJOR) != 0;
  return col->dtype == LARK_FLOAT32 ? im2col<float>(col, x, p, tap_major) : im2col<double>(col, x, p, tap_major);
}

extern "C" int lark_cuda_col2im(lark_tensor *x, const lark_tensor *col, const lark_conv2d_params *p) {
  if (lark_cuda_set_device(lark_tensor_device(x), "conv2d backward")) return lark_error_code();
  return x->dtype == LARK_FLOAT32 ? col2im<float>(x, col, p) : col2im<double>(x, col, p);
}
