/* conv.c: dense and grouped 2-D convolution by im2col + GEMM, its two backward passes (col2im for
 * the input gradient), and the plain 7-deep loops they are tested against.
 *
 * For each sample n and group g, im2col lays the receptive fields of the group's Cg input channels
 * out as a (Cg*kh*kw, Ho*Wo) matrix `col`, so that
 *     out[n, g]     (Cout/G, Ho*Wo)   = W[g] (Cout/G, K) @ col (K, Ho*Wo)          K = Cg*kh*kw
 *     col_grad      (K, Ho*Wo)        = W[g]^T @ grad_out[n, g];  col2im adds it back into grad_in
 *     grad_W[g]     (Cout/G, K)      += grad_out[n, g] @ col^T
 * Samples are independent, so the batch is split over OpenMP threads, each with its own `col`
 * buffer (and, for the weight gradient, its own partial sum, added up at the end in a fixed order
 * so the result does not depend on timing). A 1x1 kernel with stride 1 and no padding needs no
 * im2col: the input plane is already `col`.
 *
 * Depth-wise convolutions (groups == Cin == Cout) go to the direct kernels of core/ops/dwconv.c:
 * im2col would copy every input element kh*kw times for a single multiply each. use_depthwise()
 * is the one place that decides; the plain loops below stay the reference for both paths.
 *
 * Tensors on a device run the same algorithm there ("the device path" below): the backend's
 * im2col/col2im kernels and its gemm (cuBLAS), the batch in chunks instead of OpenMP threads;
 * depth-wise ones go to dwconv.c's front functions, which dispatch to the device themselves. The
 * reference loops take CPU tensors only. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "conv.h"
#include "dwconv.h"
#include "grad.h"

typedef struct {
  int64_t N, Cin, H, W;   /* input */
  int64_t Cout, kh, kw;   /* weight (Cout, Cin/G, kh, kw) */
  int64_t Ho, Wo;         /* output */
  int64_t G;              /* groups */
} conv_geom;

/* Depth-wise with channel multiplier 1 (every group one input and one output channel). */
static bool use_depthwise(const conv_geom *g, const lark_conv2d_args *a) {
  return a->groups > 1 && g->G == g->Cin && g->Cout == g->Cin;
}

static lark_conv2d_params dw_params(const conv_geom *g, const lark_conv2d_args *a) {
  return (lark_conv2d_params){.kh = (int)g->kh, .kw = (int)g->kw, .stride_h = a->stride_h, .stride_w = a->stride_w,
                              .pad_top = a->pad_top, .pad_bottom = a->pad_bottom, .pad_left = a->pad_left,
                              .pad_right = a->pad_right, .dil_h = a->dil_h, .dil_w = a->dil_w};
}

/* ---- validation ----------------------------------------------------------------------------- */

static int check_tensor(const char *op, const lark_tensor *t, const char *name, int ndim, const char *layout) {
  if (!t) return lark_set_error(LARK_ERR_ARG, "%s: %s is missing (expected a tensor)", op, name);
  if (lark_check_alive(op, t, name)) return lark_error_code();
  if (t->ndim != ndim) {
    char s[256];
    return lark_set_error(LARK_ERR_SHAPE, "%s: %s must be %d-D %s, got shape %s", op, name, ndim, layout,
                          lark_shape_str(t->ndim, t->shape, s, sizeof s));
  }
  if (!lark_dtype_is_float(t->dtype))
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s must be float32 or float64, got %s (convert with :float())", op, name,
                          lark_dtype_name(t->dtype));
  return 0;
}

/* The operands (NULL ones skipped) on one device, *dev; the reference loops take CPU tensors only. */
static int check_devices(const char *op, const lark_tensor *a, const char *an, const lark_tensor *b, const char *bn,
                         const lark_tensor *c, const char *cn, bool reference, lark_device *dev) {
  const lark_tensor *ts[3] = {a, b, c};
  const char *names[3] = {an, bn, cn};
  int n = c ? 3 : 2;
  if (lark_check_same_device(op, n, ts, names)) return lark_error_code();
  *dev = lark_tensor_device(a);
  if (reference && dev->kind != LARK_CPU) {
    char d[32];
    return lark_set_error(LARK_ERR_DEVICE, "%s: the reference loops run on CPU tensors only, not on %s", op,
                          lark_device_str(*dev, d, sizeof d));
  }
  return 0;
}

static int check_args(const char *op, const lark_conv2d_args *a) {
  if (!a) return lark_set_error(LARK_ERR_ARG, "%s: missing arguments", op);
  if (a->stride_h < 1 || a->stride_w < 1)
    return lark_set_error(LARK_ERR_ARG, "%s: stride must be >= 1, got (%d, %d)", op, a->stride_h, a->stride_w);
  if (a->dil_h < 1 || a->dil_w < 1)
    return lark_set_error(LARK_ERR_ARG, "%s: dilation must be >= 1, got (%d, %d)", op, a->dil_h, a->dil_w);
  if (a->pad_top < 0 || a->pad_bottom < 0 || a->pad_left < 0 || a->pad_right < 0)
    return lark_set_error(LARK_ERR_ARG, "%s: padding must be >= 0, got (top %d, bottom %d, left %d, right %d)", op,
                          a->pad_top, a->pad_bottom, a->pad_left, a->pad_right);
  if (a->groups < 1) return lark_set_error(LARK_ERR_ARG, "%s: groups must be >= 1, got %d", op, a->groups);
  return 0;
}

/* Checks that an input of in_shape and a weight of w_shape fit under a, and fills g. */
static int conv_geometry(const char *op, const int64_t in[4], const int64_t w[4], const lark_conv2d_args *a,
                         conv_geom *g) {
  if (check_args(op, a)) return lark_error_code();
  g->N = in[0], g->Cin = in[1], g->H = in[2], g->W = in[3];
  g->Cout = w[0], g->kh = w[2], g->kw = w[3], g->G = a->groups;
  if (g->Cin % g->G)
    return lark_set_error(LARK_ERR_ARG, "%s: groups (%lld) must divide the input channels (%lld)", op,
                          (long long)g->G, (long long)g->Cin);
  if (g->Cout % g->G)
    return lark_set_error(LARK_ERR_ARG, "%s: groups (%lld) must divide the output channels (%lld, weight dim 1)", op,
                          (long long)g->G, (long long)g->Cout);
  if (w[1] != g->Cin / g->G)
    return lark_set_error(LARK_ERR_SHAPE,
                          "%s: weight has %lld input channels per group (dim 2) but the input has %lld channels / %lld "
                          "groups = %lld",
                          op, (long long)w[1], (long long)g->Cin, (long long)g->G, (long long)(g->Cin / g->G));
  if (g->kh < 1 || g->kw < 1)
    return lark_set_error(LARK_ERR_SHAPE, "%s: the kernel must be at least 1x1, got %lldx%lld", op, (long long)g->kh,
                          (long long)g->kw);
  int64_t eh = (int64_t)a->dil_h * (g->kh - 1) + 1, ew = (int64_t)a->dil_w * (g->kw - 1) + 1;
  int64_t ph = g->H + a->pad_top + a->pad_bottom, pw = g->W + a->pad_left + a->pad_right;
  if (eh > ph || ew > pw)
    return lark_set_error(LARK_ERR_SHAPE,
                          "%s: the (dilated) kernel %lldx%lld is larger than the padded input %lldx%lld", op,
                          (long long)eh, (long long)ew, (long long)ph, (long long)pw);
  g->Ho = (ph - eh) / a->stride_h + 1;
  g->Wo = (pw - ew) / a->stride_w + 1;
  int64_t K = g->Cin / g->G * g->kh * g->kw, P = g->Ho * g->Wo;
  if (K > INT_MAX || P > INT_MAX || g->H * g->W > INT_MAX || g->Cout > INT_MAX)
    return lark_set_error(LARK_ERR_SHAPE, "%s: a matrix dim exceeds BLAS's 32-bit sizes", op);
  return 0;
}

/* t as a contiguous tensor of dtype dt (t itself, retained, when it already is one). */
static lark_tensor *dense(const lark_tensor *t, lark_dtype dt) {
  if (!t) return NULL;
  lark_tensor *c = lark_cast(t, dt);
  if (!c) return NULL;
  lark_tensor *r = lark_contiguous(c);
  lark_tensor_release(c);
  return r;
}

/* ---- typed pieces: im2col, col2im, bias, sums ----------------------------------------------- */

#define DEFINE_CONV_TYPED(T, SUF)                                                                        \
  /* col (C*kh*kw, Ho*Wo) = the receptive fields of x (C, H, W), zeros in the padding */              \
  static void im2col_##SUF(const T *x, T *col, int64_t C, const conv_geom *g, const lark_conv2d_args *a) { \
    for (int64_t c = 0; c < C; c++)                                                                      \
      for (int64_t i = 0; i < g->kh; i++)                                                                \
        for (int64_t j = 0; j < g->kw; j++) {                                                            \
          T *row = col + ((c * g->kh + i) * g->kw + j) * g->Ho * g->Wo;                                  \
          for (int64_t oh = 0; oh < g->Ho; oh++) {                                                       \
            int64_t ih = oh * a->stride_h - a->pad_top + i * a->dil_h;                                   \
            T *r = row + oh * g->Wo;                                                                     \
            if (ih < 0 || ih >= g->H) {                                                                  \
              for (int64_t ow = 0; ow < g->Wo; ow++) r[ow] = 0;                                          \
              continue;                                                                                  \
            }                                                                                            \
            const T *xr = x + (c * g->H + ih) * g->W;                                                    \
            for (int64_t ow = 0; ow < g->Wo; ow++) {                                                     \
              int64_t iw = ow * a->stride_w - a->pad_left + j * a->dil_w;                                \
              r[ow] = iw >= 0 && iw < g->W ? xr[iw] : (T)0;                                              \
            }                                                                                            \
          }                                                                                              \
        }                                                                                                \
  }                                                                                                      \
  /* x (C, H, W) += the columns of col (C*kh*kw, Ho*Wo) put back where im2col took them */             \
  static void col2im_##SUF(const T *col, T *x, int64_t C, const conv_geom *g, const lark_conv2d_args *a) { \
    for (int64_t c = 0; c < C; c++)                                                                      \
      for (int64_t i = 0; i < g->kh; i++)                                                                \
        for (int64_t j = 0; j < g->kw; j++) {                                                            \
          const T *row = col + ((c * g->kh + i) * g->kw + j) * g->Ho * g->Wo;                            \
          for (int64_t oh = 0; oh < g->Ho; oh++) {                                                       \
            int64_t ih = oh * a->stride_h - a->pad_top + i * a->dil_h;                                   \
            if (ih < 0 || ih >= g->H) continue;                                                          \
            const T *r = row + oh * g->Wo;                                                               \
            T *xr = x + (c * g->H + ih) * g->W;                                                          \
            for (int64_t ow = 0; ow < g->Wo; ow++) {                                                     \
              int64_t iw = ow * a->stride_w - a->pad_left + j * a->dil_w;                                \
              if (iw >= 0 && iw < g->W) xr[iw] += r[ow];                                                 \
            }                                                                                            \
          }                                                                                              \
        }                                                                                                \
  }                                                                                                      \
  /* out (C, P) += bias (C) along each row */                                                           \
  static void add_bias_##SUF(T *out, const T *bias, int64_t C, int64_t P) {                              \
    for (int64_t c = 0; c < C; c++)                                                                      \
      for (int64_t p = 0; p < P; p++) out[c * P + p] += bias[c];                                         \
  }                                                                                                      \
  /* dst (n) = sum over k < nparts of parts[k] (n each, laid out one after another) */                  \
  static void sum_parts_##SUF(T *dst, const T *parts, int nparts, int64_t n) {                           \
    for (int64_t i = 0; i < n; i++) {                                                                    \
      T s = 0;                                                                                           \
      for (int k = 0; k < nparts; k++) s += parts[(int64_t)k * n + i];                                   \
      dst[i] = s;                                                                                        \
    }                                                                                                    \
  }

DEFINE_CONV_TYPED(float, f32)
DEFINE_CONV_TYPED(double, f64)

static void im2col(lark_dtype dt, const void *x, void *col, int64_t C, const conv_geom *g, const lark_conv2d_args *a) {
  if (dt == LARK_FLOAT32) im2col_f32(x, col, C, g, a);
  else im2col_f64(x, col, C, g, a);
}
static void col2im(lark_dtype dt, const void *col, void *x, int64_t C, const conv_geom *g, const lark_conv2d_args *a) {
  if (dt == LARK_FLOAT32) col2im_f32(col, x, C, g, a);
  else col2im_f64(col, x, C, g, a);
}

/* C (m, n) = alpha * op(A) @ op(B) + beta * C, row-major, op = transpose when ta / tb. */
static void gemm(lark_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *A, int64_t lda,
                 const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
  if (dt == LARK_FLOAT32)
    cblas_sgemm(CblasRowMajor, TA, TB, (int)m, (int)n, (int)k, 1.0f, A, (int)lda, B, (int)ldb, (float)beta, C, (int)ldc);
  else
    cblas_dgemm(CblasRowMajor, TA, TB, (int)m, (int)n, (int)k, 1.0, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* A 1x1 kernel at stride 1 without padding reads the input plane as its own col matrix. */
static bool needs_no_im2col(const conv_geom *g, const lark_conv2d_args *a) {
  return g->kh == 1 && g->kw == 1 && a->stride_h == 1 && a->stride_w == 1 && a->pad_top == 0 &&
         a->pad_bottom == 0 && a->pad_left == 0 && a->pad_right == 0;
}

/* Threads for a loop over the batch: one per sample at most, and one when the work is small. */
static int batch_threads(const conv_geom *g) {
  int64_t work = g->N * g->Cout * g->Ho * g->Wo * (g->Cin / g->G) * g->kh * g->kw;
  int nt = omp_get_max_threads();
  if (g->N < 2 || work < LARK_PARALLEL_GRAIN) return 1;
  return g->N < nt ? (int)g->N : nt;
}

/* While the batch runs on several OpenMP threads, each GEMM runs on its caller's thread: OpenBLAS
 * (pthread build) would otherwise queue the concurrent calls on its one thread pool, and the
 * threads would wait on each other. Returns the setting to restore (0: nothing changed). */
static int blas_single_thread(int nt) {
  if (nt <= 1) return 0;
  int was = openblas_get_num_threads();
  if (was > 1) openblas_set_num_threads(1);
  return was > 1 ? was : 0;
}
static void blas_restore(int was) {
  if (was > 1) openblas_set_num_threads(was);
}

/* One col buffer (K, P) per thread, or NULL with an error. */
static void *col_buffers(const char *op, int nt, int64_t K, int64_t P, size_t es) {
  size_t n = (size_t)nt * (size_t)(K * P > 0 ? K * P : 1) * es;
  void *p = malloc(n);
  if (!p) lark_set_error(LARK_ERR_NOMEM, "%s: out of memory for %zu bytes of im2col buffers", op, n);
  return p;
}

/* ---- the im2col passes (operands contiguous, one dtype, validated) --------------------------- */

/* out (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cg, kh, kw)) + bias (Cout) or NULL */
static int forward_im2col(const lark_tensor *x, const lark_tensor *w, const lark_tensor *bias, lark_tensor *out,
                          const conv_geom *g, const lark_conv2d_args *a) {
  lark_dtype dt = out->dtype;
  size_t es = lark_dtype_size(dt);
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G, K = Cg * g->kh * g->kw, P = g->Ho * g->Wo;
  bool direct = needs_no_im2col(g, a);
  int nt = batch_threads(g);
  char *cols = direct ? NULL : col_buffers("conv2d", nt, K, P, es);
  if (!direct && !cols) return lark_error_code();
  const char *xd = lark_data_ptr(x), *wd = lark_data_ptr(w), *bd = bias ? lark_data_ptr(bias) : NULL;
  char *od = lark_data_ptr(out);
  int blas_was = blas_single_thread(nt);
  _Pragma("omp parallel for num_threads(nt) schedule(static)") for (int64_t n = 0; n < g->N; n++) {
    char *col = direct ? NULL : cols + (size_t)omp_get_thread_num() * (size_t)(K * P) * es;
    char *on = od + (size_t)(n * g->Cout * P) * es;
    for (int64_t gi = 0; gi < g->G; gi++) {
      const char *xg = xd + (size_t)((n * g->Cin + gi * Cg) * g->H * g->W) * es;
      char *og = on + (size_t)(gi * Cog * P) * es;
      if (K == 0) { /* no input channels: only the bias */
        memset(og, 0, (size_t)(Cog * P) * es);
        continue;
      }
      if (!direct) im2col(dt, xg, col, Cg, g, a);
      gemm(dt, false, false, Cog, P, K, wd + (size_t)(gi * Cog * K) * es, K, direct ? xg : col, P, 0.0, og, P);
    }
    if (bd) {
      if (dt == LARK_FLOAT32) add_bias_f32((float *)on, (const float *)bd, g->Cout, P);
      else add_bias_f64((double *)on, (const double *)bd, g->Cout, P);
    }
  }
  blas_restore(blas_was);
  free(cols);
  return 0;
}

/* gin (N, Cin, H, W), zeroed by the caller, += col2im(w^T @ gout (N, Cout, Ho, Wo)) */
static int backward_input_im2col(const lark_tensor *gout, const lark_tensor *w, lark_tensor *gin, const conv_geom *g,
                                 const lark_conv2d_args *a) {
  lark_dtype dt = gin->dtype;
  size_t es = lark_dtype_size(dt);
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G, K = Cg * g->kh * g->kw, P = g->Ho * g->Wo;
  if (K == 0 || Cog == 0) return 0; /* nothing connects: the gradient stays zero */
  bool direct = needs_no_im2col(g, a);
  int nt = batch_threads(g);
  char *cols = direct ? NULL : col_buffers("conv2d backward", nt, K, P, es);
  if (!direct && !cols) return lark_error_code();
  const char *god = lark_data_ptr(gout), *wd = lark_data_ptr(w);
  char *gid = lark_data_ptr(gin);
  int blas_was = blas_single_thread(nt);
  _Pragma("omp parallel for num_threads(nt) schedule(static)") for (int64_t n = 0; n < g->N; n++) {
    char *col = direct ? NULL : cols + (size_t)omp_get_thread_num() * (size_t)(K * P) * es;
    for (int64_t gi = 0; gi < g->G; gi++) {
      char *xg = gid + (size_t)((n * g->Cin + gi * Cg) * g->H * g->W) * es;
      const char *gg = god + (size_t)((n * g->Cout + gi * Cog) * P) * es;
      /* col (K, P) = w[g]^T (K, Cog) @ gout[n, g] (Cog, P); direct: straight into the zeroed plane */
      gemm(dt, true, false, K, P, Cog, wd + (size_t)(gi * Cog * K) * es, K, gg, P, 0.0, direct ? xg : col, P);
      if (!direct) col2im(dt, col, xg, Cg, g, a);
    }
  }
  blas_restore(blas_was);
  free(cols);
  return 0;
}

/* gw (Cout, Cg, kh, kw) = sum over n of gout[n, g] @ im2col(x[n, g])^T */
static int backward_weight_im2col(const lark_tensor *gout, const lark_tensor *x, lark_tensor *gw, const conv_geom *g,
                                  const lark_conv2d_args *a) {
  lark_dtype dt = gw->dtype;
  size_t es = lark_dtype_size(dt);
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G, K = Cg * g->kh * g->kw, P = g->Ho * g->Wo;
  int64_t wn = g->Cout * K;
  if (wn == 0) return 0;
  bool direct = needs_no_im2col(g, a);
  int nt = batch_threads(g);
  char *cols = direct ? NULL : col_buffers("conv2d backward", nt, K, P, es);
  /* one partial gradient per thread, summed in thread order afterwards */
  char *parts = calloc((size_t)nt * (size_t)wn, es);
  if ((!direct && !cols) || !parts) {
    free(cols);
    free(parts);
    return lark_set_error(LARK_ERR_NOMEM, "conv2d backward: out of memory for the weight gradient's buffers");
  }
  const char *god = lark_data_ptr(gout), *xd = lark_data_ptr(x);
  int blas_was = blas_single_thread(nt);
  _Pragma("omp parallel for num_threads(nt) schedule(static)") for (int64_t n = 0; n < g->N; n++) {
    int t = omp_get_thread_num();
    char *col = direct ? NULL : cols + (size_t)t * (size_t)(K * P) * es;
    char *part = parts + (size_t)t * (size_t)wn * es;
    for (int64_t gi = 0; gi < g->G; gi++) {
      const char *xg = xd + (size_t)((n * g->Cin + gi * Cg) * g->H * g->W) * es;
      const char *gg = god + (size_t)((n * g->Cout + gi * Cog) * P) * es;
      if (!direct) im2col(dt, xg, col, Cg, g, a);
      /* part[g] (Cog, K) += gout[n, g] (Cog, P) @ col^T (P, K) */
      gemm(dt, false, true, Cog, K, P, gg, P, direct ? xg : col, P, 1.0, part + (size_t)(gi * Cog * K) * es, K);
    }
  }
  blas_restore(blas_was);
  if (dt == LARK_FLOAT32) sum_parts_f32(lark_data_ptr(gw), (const float *)parts, nt, wn);
  else sum_parts_f64(lark_data_ptr(gw), (const double *)parts, nt, wn);
  free(cols);
  free(parts);
  return 0;
}

/* ---- the device path (operands contiguous, one dtype, validated) ------------------------------ *
 * On a device (the CUDA backend) the same algorithm runs with the backend's kernels: im2col and
 * col2im (backend.h) move receptive fields, the gemm field (cuBLAS) does the products, with the
 * same 1x1 shortcut. What changes is the unit of work: instead of one sample per CPU thread, the
 * batch goes in chunks whose col matrices fit lark_conv2d_chunk_bytes (256 MiB), and each GEMM
 * call covers a whole chunk (one strided-batched call per group over the chunk's samples, or per
 * sample over the groups, whichever is fewer calls). The weight gradient lays its col matrix out tap-major,
 * (C*kh*kw, samples*Ho*Wo), with grad_out permuted to (Cout, samples*Ho*Wo) beside it, so that a
 * chunk's sum over samples is a single GEMM whose inner dimension runs over all of them; chunks
 * add into the gradient in order (beta = 1), so the result is the same on every run. */

/* Bytes of col (and permuted grad_out) buffers one chunk may take. Not static so that
 * spec/c/test_conv_dispatch.c can shrink it and run several chunks on small shapes. */
extern int64_t lark_conv2d_chunk_bytes;
int64_t lark_conv2d_chunk_bytes = (int64_t)256 << 20;

/* One operand of the per-(sample, group) products: matrix (s, g) starts at storage element
 * off + s*ss + g*gs of t, and its element (r, c) sits r*rs + c*cs further. */
typedef struct {
  const lark_tensor *t;
  int64_t off, ss, gs, rs, cs;
} mat_ref;

static mat_ref mat(const lark_tensor *t, int64_t off, int64_t ss, int64_t gs, int64_t rs, int64_t cs) {
  return (mat_ref){t, t->offset + off, ss, gs, rs, cs};
}

/* For every sample s < ns and group g < ng: o(s, g) (m, n) = a(s, g) (m, k) @ b(s, g) (k, n) +
 * beta * o(s, g), through the backend's batched gemm on 3-D views (k > 0). */
static int gemm_sg(const lark_backend *be, const mat_ref *o, const mat_ref *a, const mat_ref *b, int64_t ns,
                   int64_t ng, int64_t m, int64_t n, int64_t k, double beta) {
  if (ns == 0 || ng == 0 || m == 0 || n == 0) return 0;
  bool by_group = ng <= ns; /* one call per group, batched over the samples */
  int64_t outer = by_group ? ng : ns, batch = by_group ? ns : ng;
  const mat_ref *ops[3] = {o, a, b};
  const int64_t rows[3] = {m, m, k}, cols[3] = {n, k, n};
  int rc = 0;
  for (int64_t i = 0; i < outer && !rc; i++) {
    lark_tensor *v[3] = {NULL, NULL, NULL};
    for (int j = 0; j < 3 && !rc; j++) {
      const mat_ref *r = ops[j];
      int64_t shape[3] = {batch, rows[j], cols[j]};
      int64_t stride[3] = {by_group ? r->ss : r->gs, r->rs, r->cs};
      if (!(v[j] = lark_as_strided(r->t, 3, shape, stride, r->off + i * (by_group ? r->gs : r->ss))))
        rc = lark_error_code();
    }
    if (!rc) rc = be->gemm(v[0], v[1], v[2], 1.0, beta);
    for (int j = 0; j < 3; j++) lark_tensor_release(v[j]);
  }
  return rc;
}

/* Samples per chunk when each takes per_sample bytes of buffers: at least 1, at most N, and few
 * enough that samples * P stays a 32-bit GEMM size. */
static int64_t chunk_samples(const conv_geom *g, int64_t per_sample) {
  int64_t nb = per_sample > 0 ? lark_conv2d_chunk_bytes / per_sample : g->N;
  int64_t P = g->Ho * g->Wo, cap = P > 0 ? INT_MAX / P : g->N;
  if (nb > cap) nb = cap;
  if (nb > g->N) nb = g->N;
  return nb < 1 ? 1 : nb;
}

/* A contiguous (d0, d1, d2) view at the start of buf. */
static lark_tensor *buf3(const lark_tensor *buf, int64_t d0, int64_t d1, int64_t d2) {
  return lark_as_strided(buf, 3, (int64_t[]){d0, d1, d2}, (int64_t[]){d1 * d2, d2, 1}, buf->offset);
}

/* out (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cg, kh, kw)) + bias (Cout) or NULL */
static int device_forward(const lark_tensor *x, const lark_tensor *w, const lark_tensor *bias, lark_tensor *out,
                          const conv_geom *g, const lark_conv2d_args *a) {
  const char *op = "conv2d";
  lark_device dev = lark_tensor_device(out);
  const lark_backend *be = lark_backend_for(dev);
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G, K = Cg * g->kh * g->kw, P = g->Ho * g->Wo, CK = g->G * K;
  bool direct = needs_no_im2col(g, a);
  if (!be || !be->gemm || (!direct && !be->im2col)) return lark_backend_missing(op, dev);
  if (lark_numel(out) == 0) return 0;
  double beta = 0;
  if (bias) { /* out starts as the bias, and the GEMMs add the products to it (beta = 1) */
    lark_tensor *bv = lark_as_strided(bias, 4, (int64_t[]){g->N, g->Cout, g->Ho, g->Wo},
                                      (int64_t[]){0, bias->stride[0], 0, 0}, bias->offset);
    int rc = bv ? lark_copy_(out, bv) : lark_error_code();
    lark_tensor_release(bv);
    if (rc) return rc;
    beta = 1;
  }
  if (K == 0) return bias ? 0 : lark_fill_(out, 0); /* no input channels: only the bias */
  mat_ref wr = mat(w, 0, 0, Cog * K, K, 1);
  if (direct) { /* the input planes are the col matrices */
    mat_ref o = mat(out, 0, g->Cout * P, Cog * P, P, 1), b = mat(x, 0, g->Cin * P, K * P, P, 1);
    return gemm_sg(be, &o, &wr, &b, g->N, g->G, Cog, P, K, beta);
  }
  lark_conv2d_params p = dw_params(g, a);
  int64_t nb = chunk_samples(g, CK * P * (int64_t)lark_dtype_size(out->dtype));
  lark_tensor *col = lark_empty(1, (int64_t[]){nb * CK * P}, out->dtype, &dev);
  int rc = col ? 0 : lark_error_code();
  for (int64_t n0 = 0; n0 < g->N && !rc; n0 += nb) {
    int64_t m = g->N - n0 < nb ? g->N - n0 : nb;
    lark_tensor *xc = lark_narrow(x, 0, n0, m), *cv = buf3(col, m, CK, P);
    rc = !xc || !cv ? lark_error_code() : be->im2col(cv, xc, &p, 0);
    lark_tensor_release(xc);
    lark_tensor_release(cv);
    /* out[n, g] (Cog, P) = w[g] (Cog, K) @ col[n, g] (K, P) */
    mat_ref o = mat(out, n0 * g->Cout * P, g->Cout * P, Cog * P, P, 1), b = mat(col, 0, CK * P, K * P, P, 1);
    if (!rc) rc = gemm_sg(be, &o, &wr, &b, m, g->G, Cog, P, K, beta);
  }
  lark_tensor_release(col);
  return rc;
}

/* gin (N, Cin, H, W) = col2im(w^T @ gout (N, Cout, Ho, Wo)); every element written when Cout > 0
 * (the caller zeroes gin otherwise) */
static int device_backward_input(const lark_tensor *gout, const lark_tensor *w, lark_tensor *gin, const conv_geom *g,
                                 const lark_conv2d_args *a) {
  const char *op = "conv2d backward";
  lark_device dev = lark_tensor_device(gin);
  const lark_backend *be = lark_backend_for(dev);
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G, K = Cg * g->kh * g->kw, P = g->Ho * g->Wo, CK = g->G * K;
  bool direct = needs_no_im2col(g, a);
  if (!be || !be->gemm || (!direct && !be->col2im)) return lark_backend_missing(op, dev);
  if (K == 0 || Cog == 0 || lark_numel(gin) == 0) return 0; /* nothing connects: the gradient stays zero */
  mat_ref wt = mat(w, 0, 0, Cog * K, 1, K); /* w[g]^T (K, Cog), read in place */
  if (direct) { /* col (K, P) = w[g]^T @ gout[n, g], straight into the input planes */
    mat_ref o = mat(gin, 0, g->Cin * P, K * P, P, 1), b = mat(gout, 0, g->Cout * P, Cog * P, P, 1);
    return gemm_sg(be, &o, &wt, &b, g->N, g->G, K, P, Cog, 0.0);
  }
  lark_conv2d_params p = dw_params(g, a);
  int64_t nb = chunk_samples(g, CK * P * (int64_t)lark_dtype_size(gin->dtype));
  lark_tensor *col = lark_empty(1, (int64_t[]){nb * CK * P}, gin->dtype, &dev);
  int rc = col ? 0 : lark_error_code();
  for (int64_t n0 = 0; n0 < g->N && !rc; n0 += nb) {
    int64_t m = g->N - n0 < nb ? g->N - n0 : nb;
    /* col[n, g] (K, P) = w[g]^T (K, Cog) @ gout[n, g] (Cog, P) */
    mat_ref o = mat(col, 0, CK * P, K * P, P, 1), b = mat(gout, n0 * g->Cout * P, g->Cout * P, Cog * P, P, 1);
    rc = gemm_sg(be, &o, &wt, &b, m, g->G, K, P, Cog, 0.0);
    if (rc) break;
    lark_tensor *gc = lark_narrow(gin, 0, n0, m), *cv = buf3(col, m, CK, P);
    rc = !gc || !cv ? lark_error_code() : be->col2im(gc, cv, &p);
    lark_tensor_release(gc);
    lark_tensor_release(cv);
  }
  lark_tensor_release(col);
  return rc;
}

/* gw (Cout, Cg, kh, kw), zeroed by the caller, += sum over n of gout[n, g] @ im2col(x[n, g])^T */
static int device_backward_weight(const lark_tensor *gout, const lark_tensor *x, lark_tensor *gw, const conv_geom *g,
                                  const lark_conv2d_args *a) {
  const char *op = "conv2d backward";
  lark_device dev = lark_tensor_device(gw);
  const lark_backend *be = lark_backend_for(dev);
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G, K = Cg * g->kh * g->kw, P = g->Ho * g->Wo, CK = g->G * K;
  bool direct = needs_no_im2col(g, a);
  /* a 1x1 kernel over a big map reads x and grad_out in place, one sample per GEMM, whose inner
   * dimension (the map) is long enough on its own; otherwise chunks of samples go tap-major */
  bool in_place = direct && P >= 1024;
  if (!be || !be->gemm || (!in_place && !be->im2col)) return lark_backend_missing(op, dev);
  if (g->Cout * K == 0 || g->N == 0) return 0; /* empty sums: the gradient stays zero */
  size_t es = lark_dtype_size(gw->dtype);
  int64_t nb = in_place ? 1 : chunk_samples(g, (CK + g->Cout) * P * (int64_t)es);
  lark_tensor *col = NULL, *gt = NULL;
  int rc = 0;
  if (nb > 1) {
    col = lark_empty(1, (int64_t[]){nb * CK * P}, gw->dtype, &dev);
    gt = col ? lark_empty(1, (int64_t[]){nb * g->Cout * P}, gw->dtype, &dev) : NULL;
    if (!gt) rc = lark_error_code();
  } else if (!direct && !(col = lark_empty(1, (int64_t[]){CK * P}, gw->dtype, &dev))) {
    rc = lark_error_code();
  }
  lark_conv2d_params p = dw_params(g, a);
  mat_ref o = mat(gw, 0, 0, Cog * K, K, 1);
  for (int64_t n0 = 0; n0 < g->N && !rc; n0 += nb) {
    int64_t m = g->N - n0 < nb ? g->N - n0 : nb, mp = m * P;
    /* A: grad_out of the chunk as (Cout, m*P); B: its col matrix, tap-major (CK, m*P). One sample
     * is already laid out that way (and, with a 1x1 kernel, x is its own col matrix). */
    const lark_tensor *A = gout, *B = x;
    int64_t aoff = n0 * g->Cout * P, boff = n0 * g->Cin * P;
    if (m > 1) {
      lark_tensor *dst = buf3(gt, g->Cout, m, P);
      lark_tensor *src = lark_as_strided(gout, 3, (int64_t[]){g->Cout, m, P}, (int64_t[]){P, g->Cout * P, 1},
                                         gout->offset + aoff);
      rc = !dst || !src ? lark_error_code() : lark_copy_(dst, src);
      lark_tensor_release(dst);
      lark_tensor_release(src);
      A = gt, aoff = 0;
    }
    if (!rc && (m > 1 || !direct)) {
      lark_tensor *xc = lark_narrow(x, 0, n0, m), *cv = buf3(col, CK, m, P);
      rc = !xc || !cv ? lark_error_code() : be->im2col(cv, xc, &p, LARK_IM2COL_TAP_MAJOR);
      lark_tensor_release(xc);
      lark_tensor_release(cv);
      B = col, boff = 0;
    }
    /* gw[g] (Cog, K) += A[g] (Cog, m*P) @ B[g]^T (m*P, K) */
    mat_ref ar = mat(A, aoff, 0, Cog * mp, mp, 1), br = mat(B, boff, 0, K * mp, 1, mp);
    if (!rc) rc = gemm_sg(be, &o, &ar, &br, 1, g->G, Cog, K, mp, 1.0);
  }
  lark_tensor_release(col);
  lark_tensor_release(gt);
  return rc;
}

/* ---- the reference loops (float64) ------------------------------------------------------------ */

/* The input coordinate tap (i, j) of output (oh, ow) reads, or false in the padding. */
static bool tap(const conv_geom *g, const lark_conv2d_args *a, int64_t oh, int64_t ow, int64_t i, int64_t j,
                int64_t *ih, int64_t *iw) {
  *ih = oh * a->stride_h - a->pad_top + i * a->dil_h;
  *iw = ow * a->stride_w - a->pad_left + j * a->dil_w;
  return *ih >= 0 && *ih < g->H && *iw >= 0 && *iw < g->W;
}

static void forward_reference(const double *x, const double *w, const double *b, double *out, const conv_geom *g,
                              const lark_conv2d_args *a) {
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G;
  for (int64_t n = 0; n < g->N; n++)
    for (int64_t co = 0; co < g->Cout; co++)
      for (int64_t oh = 0; oh < g->Ho; oh++)
        for (int64_t ow = 0; ow < g->Wo; ow++) {
          double s = b ? b[co] : 0;
          for (int64_t ci = 0; ci < Cg; ci++)
            for (int64_t i = 0; i < g->kh; i++)
              for (int64_t j = 0; j < g->kw; j++) {
                int64_t ih, iw, c = co / Cog * Cg + ci;
                if (tap(g, a, oh, ow, i, j, &ih, &iw))
                  s += w[((co * Cg + ci) * g->kh + i) * g->kw + j] * x[((n * g->Cin + c) * g->H + ih) * g->W + iw];
              }
          out[((n * g->Cout + co) * g->Ho + oh) * g->Wo + ow] = s;
        }
}

/* the same loops, sending gout back to gin (zeroed) or gw (zeroed) */
static void backward_reference(const double *gout, const double *x, const double *w, double *gin, double *gw,
                               const conv_geom *g, const lark_conv2d_args *a) {
  int64_t Cg = g->Cin / g->G, Cog = g->Cout / g->G;
  for (int64_t n = 0; n < g->N; n++)
    for (int64_t co = 0; co < g->Cout; co++)
      for (int64_t oh = 0; oh < g->Ho; oh++)
        for (int64_t ow = 0; ow < g->Wo; ow++) {
          double go = gout[((n * g->Cout + co) * g->Ho + oh) * g->Wo + ow];
          for (int64_t ci = 0; ci < Cg; ci++)
            for (int64_t i = 0; i < g->kh; i++)
              for (int64_t j = 0; j < g->kw; j++) {
                int64_t ih, iw, c = co / Cog * Cg + ci;
                if (!tap(g, a, oh, ow, i, j, &ih, &iw)) continue;
                int64_t xi = ((n * g->Cin + c) * g->H + ih) * g->W + iw, wi = ((co * Cg + ci) * g->kh + i) * g->kw + j;
                if (gin) gin[xi] += go * w[wi];
                if (gw) gw[wi] += go * x[xi];
              }
        }
}

/* ---- front functions -------------------------------------------------------------------------- */

static lark_tensor *forward_impl(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *bias,
                                 const lark_conv2d_args *a, bool reference) {
  const char *op = "conv2d";
  if (check_tensor(op, input, "input", 4, "(N, Cin, H, W)") || check_tensor(op, weight, "weight", 4, "(Cout, Cin/groups, kh, kw)"))
    return NULL;
  if (bias && check_tensor(op, bias, "bias", 1, "(Cout)")) return NULL;
  conv_geom g;
  if (conv_geometry(op, input->shape, weight->shape, a, &g)) return NULL;
  if (bias && bias->shape[0] != g.Cout) {
    lark_set_error(LARK_ERR_SHAPE, "conv2d: bias has %lld elements, expected one per output channel (%lld)",
                   (long long)bias->shape[0], (long long)g.Cout);
    return NULL;
  }
  lark_device dev;
  if (check_devices(op, input, "input", weight, "weight", bias, "bias", reference, &dev)) return NULL;
  bool gpu = dev.kind != LARK_CPU;
  lark_dtype dt = lark_promote(input->dtype, weight->dtype);
  if (bias) dt = lark_promote(dt, bias->dtype);
  if (reference) dt = LARK_FLOAT64;
  lark_tensor *x = dense(input, dt), *w = dense(weight, dt), *b = bias ? dense(bias, dt) : NULL, *out = NULL;
  int64_t oshape[4] = {g.N, g.Cout, g.Ho, g.Wo};
  bool dw = !reference && use_depthwise(&g, a);
  if (!x || !w || (bias && !b) || (!dw && !(out = lark_empty(4, oshape, dt, gpu ? &dev : NULL)))) goto fail;
  if (reference) {
    forward_reference(lark_data_ptr(x), lark_data_ptr(w), b ? lark_data_ptr(b) : NULL, lark_data_ptr(out), &g, a);
  } else if (dw) {
    lark_conv2d_params p = dw_params(&g, a);
    if (!(out = lark_dwconv2d_forward(x, w, b, &p))) goto fail;
  } else if (gpu ? device_forward(x, w, b, out, &g, a) : forward_im2col(x, w, b, out, &g, a)) {
    goto fail;
  }
  goto done;
fail:
  lark_tensor_release(out);
  out = NULL;
done:
  lark_tensor_release(x);
  lark_tensor_release(w);
  lark_tensor_release(b);
  return out;
}

/* Checks grad_out against the output shape the geometry gives. */
static int check_grad_out(const lark_tensor *gout, const conv_geom *g) {
  if (check_tensor("conv2d backward", gout, "grad_out", 4, "(N, Cout, Ho, Wo)")) return lark_error_code();
  int64_t want[4] = {g->N, g->Cout, g->Ho, g->Wo};
  for (int d = 0; d < 4; d++)
    if (gout->shape[d] != want[d]) {
      char s[256], t[256];
      return lark_set_error(LARK_ERR_SHAPE, "conv2d backward: grad_out has shape %s, expected the output's %s",
                            lark_shape_str(4, gout->shape, s, sizeof s), lark_shape_str(4, want, t, sizeof t));
    }
  return 0;
}

static lark_tensor *backward_input_impl(const lark_tensor *gout, const lark_tensor *weight, const int64_t in_shape[4],
                                        const lark_conv2d_args *a, bool reference) {
  const char *op = "conv2d backward";
  conv_geom g;
  if (check_tensor(op, weight, "weight", 4, "(Cout, Cin/groups, kh, kw)")) return NULL;
  for (int d = 0; d < 4; d++)
    if (in_shape[d] < 0) {
      lark_set_error(LARK_ERR_SHAPE, "%s: input size %d is negative", op, d + 1);
      return NULL;
    }
  lark_device dev;
  if (conv_geometry(op, in_shape, weight->shape, a, &g) || check_grad_out(gout, &g) ||
      check_devices(op, gout, "grad_out", weight, "weight", NULL, NULL, reference, &dev))
    return NULL;
  bool gpu = dev.kind != LARK_CPU;
  lark_dtype dt = reference ? LARK_FLOAT64 : lark_promote(gout->dtype, weight->dtype);
  lark_tensor *go = dense(gout, dt), *w = dense(weight, dt), *gin = NULL;
  bool dw = !reference && use_depthwise(&g, a);
  /* col2im adds into gin, so it starts at zero; the 1x1 path's GEMMs (beta = 0) write all of it,
   * so zeroing first would be a wasted pass over the largest tensor of the op. The device's col2im
   * writes every element too. */
  bool whole = !reference && !dw && (needs_no_im2col(&g, a) || gpu) && g.Cout > 0;
  const lark_device *on = gpu ? &dev : NULL;
  if (!go || !w || (!dw && !(gin = whole ? lark_empty(4, in_shape, dt, on) : lark_zeros(4, in_shape, dt, on))))
    goto fail;
  if (reference) {
    backward_reference(lark_data_ptr(go), NULL, lark_data_ptr(w), lark_data_ptr(gin), NULL, &g, a);
  } else if (dw) {
    lark_conv2d_params p = dw_params(&g, a);
    if (!(gin = lark_dwconv2d_backward_input(go, w, in_shape, &p))) goto fail;
  } else if (gpu ? device_backward_input(go, w, gin, &g, a) : backward_input_im2col(go, w, gin, &g, a)) {
    goto fail;
  }
  goto done;
fail:
  lark_tensor_release(gin);
  gin = NULL;
done:
  lark_tensor_release(go);
  lark_tensor_release(w);
  return gin;
}

static lark_tensor *backward_weight_impl(const lark_tensor *gout, const lark_tensor *input, const int64_t w_shape[4],
                                         const lark_conv2d_args *a, bool reference) {
  const char *op = "conv2d backward";
  conv_geom g;
  if (check_tensor(op, input, "input", 4, "(N, Cin, H, W)")) return NULL;
  for (int d = 0; d < 4; d++)
    if (w_shape[d] < 0) {
      lark_set_error(LARK_ERR_SHAPE, "%s: weight size %d is negative", op, d + 1);
      return NULL;
    }
  lark_device dev;
  if (conv_geometry(op, input->shape, w_shape, a, &g) || check_grad_out(gout, &g) ||
      check_devices(op, gout, "grad_out", input, "input", NULL, NULL, reference, &dev))
    return NULL;
  bool gpu = dev.kind != LARK_CPU;
  lark_dtype dt = reference ? LARK_FLOAT64 : lark_promote(gout->dtype, input->dtype);
  lark_tensor *go = dense(gout, dt), *x = dense(input, dt), *gw = NULL;
  bool dw = !reference && use_depthwise(&g, a);
  if (!go || !x || (!dw && !(gw = lark_zeros(4, w_shape, dt, gpu ? &dev : NULL)))) goto fail;
  if (reference) {
    backward_reference(lark_data_ptr(go), lark_data_ptr(x), NULL, NULL, lark_data_ptr(gw), &g, a);
  } else if (dw) {
    lark_conv2d_params p = dw_params(&g, a);
    if (!(gw = lark_dwconv2d_backward_weight(go, x, &p))) goto fail;
  } else if (gpu ? device_backward_weight(go, x, gw, &g, a) : backward_weight_im2col(go, x, gw, &g, a)) {
    goto fail;
  }
  goto done;
fail:
  lark_tensor_release(gw);
  gw = NULL;
done:
  lark_tensor_release(go);
  lark_tensor_release(x);
  return gw;
}

/* The reference results come in float64; hand them back in the operands' dtype. */
static lark_tensor *to_dtype(lark_tensor *t, lark_dtype dt) {
  if (!t || t->dtype == dt) return t;
  lark_tensor *c = lark_cast(t, dt);
  lark_tensor_release(t);
  return c;
}

lark_tensor *lark_conv2d_reference(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *bias,
                                   const lark_conv2d_args *a) {
  lark_tensor *out;
  LARK_NO_GRAD(out = forward_impl(input, weight, bias, a, true));
  if (!out) return NULL;
  lark_dtype dt = lark_promote(input->dtype, weight->dtype);
  return to_dtype(out, bias ? lark_promote(dt, bias->dtype) : dt);
}

lark_tensor *lark_conv2d_backward_input(const lark_tensor *grad_out, const lark_tensor *weight,
                                        const int64_t input_shape[4], const lark_conv2d_args *a) {
  lark_tensor *r;
  LARK_NO_GRAD(r = backward_input_impl(grad_out, weight, input_shape, a, false));
  return r;
}
lark_tensor *lark_conv2d_backward_input_reference(const lark_tensor *grad_out, const lark_tensor *weight,
                                                  const int64_t input_shape[4], const lark_conv2d_args *a) {
  lark_tensor *r;
  LARK_NO_GRAD(r = backward_input_impl(grad_out, weight, input_shape, a, true));
  return r ? to_dtype(r, lark_promote(grad_out->dtype, weight->dtype)) : NULL;
}
lark_tensor *lark_conv2d_backward_weight(const lark_tensor *grad_out, const lark_tensor *input,
                                         const int64_t weight_shape[4], const lark_conv2d_args *a) {
  lark_tensor *r;
  LARK_NO_GRAD(r = backward_weight_impl(grad_out, input, weight_shape, a, false));
  return r;
}
lark_tensor *lark_conv2d_backward_weight_reference(const lark_tensor *grad_out, const lark_tensor *input,
                                                   const int64_t weight_shape[4], const lark_conv2d_args *a) {
  lark_tensor *r;
  LARK_NO_GRAD(r = backward_weight_impl(grad_out, input, weight_shape, a, true));
  return r ? to_dtype(r, lark_promote(grad_out->dtype, input->dtype)) : NULL;
}

/* ---- autograd ----------------------------------------------------------------------------------- */

static lark_conv2d_args args_of(const lark_node *n) {
  lark_conv2d_args a = {(int)n->iarg[0], (int)n->iarg[1], (int)n->iarg[2], (int)n->iarg[3], (int)n->iarg[4],
                        (int)n->iarg[5], (int)n->iarg[6], (int)n->iarg[7], (int)n->iarg[8]};
  return a;
}

/* inputs: 0 input, 1 weight, 2 bias (may be absent); saved: 0 input, 1 weight */
static int conv2d_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_conv2d_args a = args_of(n);
  int rc = 0;
  if (n->needs_grad[0]) {
    const lark_tensor *w = lark_node_saved(n, 1);
    if (!w || !(gin[0] = lark_conv2d_backward_input(g, w, n->in_shape[0], &a))) rc = lark_error_code();
  }
  if (!rc && n->needs_grad[1]) {
    const lark_tensor *x = lark_node_saved(n, 0);
    if (!x || !(gin[1] = lark_conv2d_backward_weight(g, x, n->in_shape[1], &a))) rc = lark_error_code();
  }
  if (!rc && n->ninputs > 2 && n->needs_grad[2]) {
    lark_reduce_args r = {.ndims = 3, .dims = {0, 2, 3}, .keepdim = false, .p = 2};
    if (!(gin[2] = lark_reduce(LARK_RED_SUM, g, &r))) rc = lark_error_code();
  }
  if (rc) {
    for (int i = 0; i < n->ninputs; i++) {
      lark_tensor_release(gin[i]);
      gin[i] = NULL;
    }
    return rc ? rc : LARK_ERR_NOMEM;
  }
  return 0;
}

lark_tensor *lark_conv2d(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *bias,
                         const lark_conv2d_args *a) {
  lark_tensor *out;
  LARK_NO_GRAD(out = forward_impl(input, weight, bias, a, false));
  if (!out || !(input->requires_grad || weight->requires_grad || (bias && bias->requires_grad))) return out;
  const lark_tensor *in[3] = {input, weight, bias};
  lark_node *n = lark_node_new("conv2d", conv2d_backward, bias ? 3 : 2, in);
  if (!n) return out;
  int64_t args[9] = {a->stride_h, a->stride_w, a->pad_top, a->pad_bottom, a->pad_left,
                     a->pad_right, a->dil_h, a->dil_w, a->groups};
  memcpy(n->iarg, args, sizeof args);
  if (lark_node_save(n, input) || lark_node_save(n, weight)) {
    lark_node_release(n);
    lark_tensor_release(out);
    return NULL;
  }
  lark_node_attach(n, out);
  return out;
}
