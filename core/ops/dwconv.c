/* dwconv.c: the depth-wise 2-D convolution (groups == channels, multiplier 1), NCHW, float32 and
 * float64, on the CPU: forward, gradient of the input and gradient of the weight.
 *
 * Three layers:
 *   - front functions validate (shapes, dtypes, devices, parameters), make the operands
 *     contiguous, allocate the result and pick a path;
 *   - the reference loops (`*_reference`), plain and serial, kept forever: every fast path is
 *     tested against them;
 *   - the fast paths. Stride 1 and dilation 1 (RepLKNet, SLaK) run a direct convolution (no
 *     im2col) built on one plane kernel, corr_plane:
 *         out[oh][ow] = bias + sum_{i,j} w[i][j] * src[oh + i - pt][ow + j - pl]   (src 0 outside)
 *     The forward pass is corr_plane itself; the input gradient is corr_plane of grad_out with the
 *     flipped kernel and the complementary padding (kh-1-pt, kw-1-pl). The weight gradient is a
 *     dot product per (channel, tap) over the batch and the plane. Other strides and dilations take
 *     a simpler loop (still threaded, still skipping the padding).
 *
 * corr_plane copies the source plane into a zero-bordered buffer so that the inner loops need no
 * bounds tests, then walks output tiles of R rows x V vectors (the accumulators stay in registers):
 * for each source row y the tile touches and each kernel column j, it loads V vectors of the row
 * once and multiplies them by the R weights w[y - oh - r][j] (one per output row r of the tile), so
 * each load and each broadcast feeds several FMAs. Kernel rows that fall in the padding are skipped
 * per tile (only real source rows are visited); kernel columns per vector (a tile's j range is cut
 * into segments, each running on the vectors that meet real columns for those j). The weight rows
 * are padded with zero rows so that an output row of the tile for which w[y - oh - r] is outside
 * the kernel adds zeros rather than needing a branch.
 *
 * The weight gradient runs the same kind of tile over (kernel rows x kernel columns): one loaded
 * vector of the input row serves several kernel rows, one vector of grad_out several columns.
 *
 * The vectors are GCC vector extensions (8 floats or 4 doubles = one AVX2 register); -march=native
 * turns `acc += w * x` into vfmadd (GNU C contracts a*b+c), and on a machine without AVX2 the
 * compiler splits them into what it has, so there is no separate scalar fallback to keep in sync.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "dwconv.h"
#include "dwconv_device.h"
#include "dwconv_internal.h"

/* ---- parameters and validation -------------------------------------------------------------- */

static int check_params(const char *op, const lark_conv2d_params *p) {
  if (!p) return lark_set_error(LARK_ERR_ARG, "%s: params is NULL", op);
  if (p->kh < 1 || p->kw < 1 || p->kh > 65536 || p->kw > 65536)
    return lark_set_error(LARK_ERR_ARG, "%s: kernel size must be positive, got %dx%d", op, p->kh, p->kw);
  if (p->stride_h < 1 || p->stride_w < 1)
    return lark_set_error(LARK_ERR_ARG, "%s: stride must be positive, got (%d, %d)", op, p->stride_h, p->stride_w);
  if (p->dil_h < 1 || p->dil_w < 1)
    return lark_set_error(LARK_ERR_ARG, "%s: dilation must be positive, got (%d, %d)", op, p->dil_h, p->dil_w);
  if (p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 || p->pad_right < 0)
    return lark_set_error(LARK_ERR_ARG, "%s: padding must be non-negative, got (top %d, bottom %d, left %d, right %d)",
                          op, p->pad_top, p->pad_bottom, p->pad_left, p->pad_right);
  return 0;
}

int lark_conv2d_output_size(const char *op, int64_t h, int64_t w, const lark_conv2d_params *p, int64_t *ho,
                            int64_t *wo) {
  *ho = *wo = -1;
  int rc = check_params(op, p);
  if (rc) return rc;
  int64_t eh = (int64_t)p->dil_h * (p->kh - 1) + 1, ew = (int64_t)p->dil_w * (p->kw - 1) + 1; /* dilated kernel */
  int64_t ph = h + p->pad_top + p->pad_bottom, pw = w + p->pad_left + p->pad_right;
  if (ph < eh || pw < ew)
    return lark_set_error(LARK_ERR_SHAPE,
                          "%s: the padded input (%lldx%lld) is smaller than the dilated kernel (%lldx%lld)", op,
                          (long long)ph, (long long)pw, (long long)eh, (long long)ew);
  *ho = (ph - eh) / p->stride_h + 1;
  *wo = (pw - ew) / p->stride_w + 1;
  return 0;
}

/* A float tensor of ndim dims on the CPU that still has its storage. */
static int check_tensor(const char *op, const lark_tensor *t, const char *name, int ndim) {
  if (!t) return lark_set_error(LARK_ERR_ARG, "%s: %s is NULL", op, name);
  int rc = lark_check_alive(op, t, name);
  if (rc) return rc;
  if (t->dtype != LARK_FLOAT32 && t->dtype != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s must be float32 or float64, got %s", op, name,
                          lark_dtype_name(t->dtype));
  if (t->ndim != ndim) {
    char buf[128];
    return lark_set_error(LARK_ERR_SHAPE, "%s: %s must be %d-D, got shape %s", op, name, ndim,
                          lark_shape_str(t->ndim, t->shape, buf, sizeof buf));
  }
  /* no device check: each front function hands tensors off the CPU to dwconv_device.c first */
  return 0;
}

static int check_same_dtype(const char *op, const lark_tensor *a, const char *an, const lark_tensor *b,
                            const char *bn) {
  if (a->dtype != b->dtype)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s (%s) and %s (%s) must have the same dtype", op, an,
                          lark_dtype_name(a->dtype), bn, lark_dtype_name(b->dtype));
  return 0;
}

/* weight must be (C, 1, kh, kw). */
static int check_weight(const char *op, const lark_tensor *weight, int64_t c, const lark_conv2d_params *p) {
  int rc = check_tensor(op, weight, "weight", 4);
  if (rc) return rc;
  if (weight->shape[0] != c || weight->shape[1] != 1 || weight->shape[2] != p->kh || weight->shape[3] != p->kw) {
    char buf[128];
    return lark_set_error(LARK_ERR_SHAPE, "%s: weight must have shape [%lld,1,%d,%d], got %s", op, (long long)c,
                          p->kh, p->kw, lark_shape_str(weight->ndim, weight->shape, buf, sizeof buf));
  }
  return 0;
}

/* ---- the reference loops -------------------------------------------------------------------- */

/* Geometry every kernel shares: batch, channels, input map, output map, parameters. */
typedef struct {
  int64_t n, c, h, w, ho, wo;
  int kh, kw, sh, sw, pt, pl, dh, dw;
} geom;

static geom make_geom(int64_t n, int64_t c, int64_t h, int64_t w, int64_t ho, int64_t wo, const lark_conv2d_params *p) {
  return (geom){n, c, h, w, ho, wo, p->kh, p->kw, p->stride_h, p->stride_w, p->pad_top, p->pad_left, p->dil_h, p->dil_w};
}

#define DEFINE_REFERENCE(T)                                                                                   \
  /* x (N,C,H,W), w (C,kh,kw), b (C) or NULL -> y (N,C,Ho,Wo) */                                              \
  static void ref_forward_##T(const geom *g, const T *x, const T *wt, const T *b, T *y) {                    \
    for (int64_t n = 0; n < g->n; n++)                                                                        \
      for (int64_t c = 0; c < g->c; c++)                                                                      \
        for (int64_t oh = 0; oh < g->ho; oh++)                                                                \
          for (int64_t ow = 0; ow < g->wo; ow++) {                                                            \
            T s = b ? b[c] : 0;                                                                               \
            for (int i = 0; i < g->kh; i++)                                                                   \
              for (int j = 0; j < g->kw; j++) {                                                               \
                int64_t iy = oh * g->sh - g->pt + (int64_t)i * g->dh, ix = ow * g->sw - g->pl + (int64_t)j * g->dw; \
                if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w)                                             \
                  s += wt[(c * g->kh + i) * g->kw + j] * x[((n * g->c + c) * g->h + iy) * g->w + ix];          \
              }                                                                                               \
            y[((n * g->c + c) * g->ho + oh) * g->wo + ow] = s;                                                \
          }                                                                                                   \
  }                                                                                                           \
  /* gy (N,C,Ho,Wo), w (C,kh,kw) -> gx (N,C,H,W), zeroed by the caller */                                     \
  static void ref_backward_input_##T(const geom *g, const T *gy, const T *wt, T *gx) {                       \
    for (int64_t n = 0; n < g->n; n++)                                                                        \
      for (int64_t c = 0; c < g->c; c++)                                                                      \
        for (int64_t oh = 0; oh < g->ho; oh++)                                                                \
          for (int64_t ow = 0; ow < g->wo; ow++)                                                              \
            for (int i = 0; i < g->kh; i++)                                                                   \
              for (int j = 0; j < g->kw; j++) {                                                               \
                int64_t iy = oh * g->sh - g->pt + (int64_t)i * g->dh, ix = ow * g->sw - g->pl + (int64_t)j * g->dw; \
                if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w)                                             \
                  gx[((n * g->c + c) * g->h + iy) * g->w + ix] +=                                             \
                      wt[(c * g->kh + i) * g->kw + j] * gy[((n * g->c + c) * g->ho + oh) * g->wo + ow];        \
              }                                                                                               \
  }                                                                                                           \
  /* gy (N,C,Ho,Wo), x (N,C,H,W) -> gw (C,kh,kw) */                                                           \
  static void ref_backward_weight_##T(const geom *g, const T *gy, const T *x, T *gw) {                       \
    for (int64_t c = 0; c < g->c; c++)                                                                        \
      for (int i = 0; i < g->kh; i++)                                                                         \
        for (int j = 0; j < g->kw; j++) {                                                                     \
          T s = 0;                                                                                            \
          for (int64_t n = 0; n < g->n; n++)                                                                  \
            for (int64_t oh = 0; oh < g->ho; oh++)                                                            \
              for (int64_t ow = 0; ow < g->wo; ow++) {                                                        \
                int64_t iy = oh * g->sh - g->pt + (int64_t)i * g->dh, ix = ow * g->sw - g->pl + (int64_t)j * g->dw; \
                if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w)                                             \
                  s += gy[((n * g->c + c) * g->ho + oh) * g->wo + ow] * x[((n * g->c + c) * g->h + iy) * g->w + ix]; \
              }                                                                                               \
          gw[(c * g->kh + i) * g->kw + j] = s;                                                                \
        }                                                                                                     \
  }

DEFINE_REFERENCE(float)
DEFINE_REFERENCE(double)

/* ---- small helpers -------------------------------------------------------------------------- */

static inline int64_t imax64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }
/* First k >= 0 with lo <= base + k*step, for step > 0 (the first tap inside the map). */
static inline int64_t first_at_least(int64_t base, int64_t step, int64_t lo) {
  return base >= lo ? 0 : (lo - base + step - 1) / step;
}

/* Work across planes is worth threads when there is more than a few microseconds of it. */
static bool worth_threads(int64_t planes, int64_t flops_per_plane) { return planes > 1 && planes * flops_per_plane > LARK_PARALLEL_GRAIN; }

/* ---- the general path (any stride and dilation): plain loops over valid taps, per plane --------- */

#define DEFINE_GENERAL(T)                                                                                     \
  static void gen_forward_##T(const geom *g, const T *x, const T *wt, const T *b, T *y) {                    \
    int64_t planes = g->n * g->c;                                                                             \
    _Pragma("omp parallel for schedule(dynamic, 1) if (worth_threads(planes, g->ho * g->wo * g->kh * g->kw))") \
    for (int64_t pl_ = 0; pl_ < planes; pl_++) {                                                              \
      int64_t c = pl_ % g->c;                                                                                 \
      const T *xp = x + pl_ * g->h * g->w, *wp = wt + c * g->kh * g->kw;                                     \
      T *yp = y + pl_ * g->ho * g->wo;                                                                        \
      for (int64_t oh = 0; oh < g->ho; oh++) {                                                                \
        int64_t by = oh * g->sh - g->pt;                                                                      \
        int64_t i0 = first_at_least(by, g->dh, 0), i1 = imin64(g->kh, first_at_least(by, g->dh, g->h));      \
        for (int64_t ow = 0; ow < g->wo; ow++) {                                                              \
          int64_t bx = ow * g->sw - g->pl;                                                                    \
          int64_t j0 = first_at_least(bx, g->dw, 0), j1 = imin64(g->kw, first_at_least(bx, g->dw, g->w));    \
          T s = b ? b[c] : 0;                                                                                 \
          for (int64_t i = i0; i < i1; i++)                                                                   \
            for (int64_t j = j0; j < j1; j++) s += wp[i * g->kw + j] * xp[(by + i * g->dh) * g->w + bx + j * g->dw]; \
          yp[oh * g->wo + ow] = s;                                                                            \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }                                                                                                           \
  /* gx zeroed by the caller; each plane belongs to one thread, so the scatter is race-free */               \
  static void gen_backward_input_##T(const geom *g, const T *gy, const T *wt, T *gx) {                       \
    int64_t planes = g->n * g->c;                                                                             \
    _Pragma("omp parallel for schedule(dynamic, 1) if (worth_threads(planes, g->ho * g->wo * g->kh * g->kw))") \
    for (int64_t pl_ = 0; pl_ < planes; pl_++) {                                                              \
      int64_t c = pl_ % g->c;                                                                                 \
      const T *gp = gy + pl_ * g->ho * g->wo, *wp = wt + c * g->kh * g->kw;                                  \
      T *xp = gx + pl_ * g->h * g->w;                                                                         \
      for (int64_t oh = 0; oh < g->ho; oh++) {                                                                \
        int64_t by = oh * g->sh - g->pt;                                                                      \
        int64_t i0 = first_at_least(by, g->dh, 0), i1 = imin64(g->kh, first_at_least(by, g->dh, g->h));      \
        for (int64_t ow = 0; ow < g->wo; ow++) {                                                              \
          int64_t bx = ow * g->sw - g->pl;                                                                    \
          int64_t j0 = first_at_least(bx, g->dw, 0), j1 = imin64(g->kw, first_at_least(bx, g->dw, g->w));    \
          T v = gp[oh * g->wo + ow];                                                                          \
          for (int64_t i = i0; i < i1; i++)                                                                   \
            for (int64_t j = j0; j < j1; j++) xp[(by + i * g->dh) * g->w + bx + j * g->dw] += v * wp[i * g->kw + j]; \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }                                                                                                           \
  /* one channel per thread, the batch summed in order: the result does not depend on the threads */        \
  static void gen_backward_weight_##T(const geom *g, const T *gy, const T *x, T *gw) {                       \
    _Pragma("omp parallel for schedule(dynamic, 1) if (worth_threads(g->c, g->n * g->ho * g->wo * g->kh * g->kw))") \
    for (int64_t c = 0; c < g->c; c++) {                                                                      \
      T *wp = gw + c * g->kh * g->kw;                                                                         \
      for (int64_t t = 0; t < (int64_t)g->kh * g->kw; t++) wp[t] = 0;                                        \
      for (int64_t n = 0; n < g->n; n++) {                                                                    \
        const T *gp = gy + (n * g->c + c) * g->ho * g->wo, *xp = x + (n * g->c + c) * g->h * g->w;           \
        for (int64_t oh = 0; oh < g->ho; oh++) {                                                              \
          int64_t by = oh * g->sh - g->pt;                                                                    \
          int64_t i0 = first_at_least(by, g->dh, 0), i1 = imin64(g->kh, first_at_least(by, g->dh, g->h));    \
          for (int64_t ow = 0; ow < g->wo; ow++) {                                                            \
            int64_t bx = ow * g->sw - g->pl;                                                                  \
            int64_t j0 = first_at_least(bx, g->dw, 0), j1 = imin64(g->kw, first_at_least(bx, g->dw, g->w));  \
            T v = gp[oh * g->wo + ow];                                                                        \
            for (int64_t i = i0; i < i1; i++)                                                                 \
              for (int64_t j = j0; j < j1; j++) wp[i * g->kw + j] += v * xp[(by + i * g->dh) * g->w + bx + j * g->dw]; \
          }                                                                                                   \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
  }

DEFINE_GENERAL(float)
DEFINE_GENERAL(double)

/* ---- the fast path: stride 1, dilation 1 ------------------------------------------------------ */

/* One vector register: with AVX-512, 16 floats or 8 doubles; otherwise 8 floats or 4 doubles (AVX2,
 * or whatever the compiler splits them into). The _u types are the unaligned, aliasing versions
 * used for loads and stores from plain arrays. */
#if defined(__AVX512F__)
#define VBYTES 64
#else
#define VBYTES 32
#endif
typedef float vfloat __attribute__((vector_size(VBYTES)));
typedef double vdouble __attribute__((vector_size(VBYTES)));
typedef float vfloat_u __attribute__((vector_size(VBYTES), aligned(4), may_alias));
typedef double vdouble_u __attribute__((vector_size(VBYTES), aligned(8), may_alias));
#define VW_float (VBYTES / 4)
#define VW_double (VBYTES / 8)

/* KEEP_IN_REGISTER(v): GCC otherwise folds a vector load into every FMA that uses it (vfmadd
 * ymm, ymm, mem), turning one load shared by R FMAs into R loads, and the kernels become bound by
 * the load ports. An empty asm that "modifies" the register pins the loaded value there ("v": any
 * of the 32 AVX-512 registers; "x": the 16 AVX ones). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__AVX512F__)
#define KEEP_IN_REGISTER(v) __asm__("" : "+v"(v))
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__AVX__)
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define KEEP_IN_REGISTER(v) ((void)0)
#endif

#define MAX_R 4 /* output rows per tile */
#define MAX_V 4 /* vectors per tile row */

/* corr_tile: one tile of R output rows x V vectors of corr_plane, accumulated into `tile`.
 *   P    (rows, ldp) the zero-bordered source, P[y][x] = src[y - pt][x - pl]; column ow0 + j + k is
 *        read for j in [j0, j1), k < V*VW, rows y in [y0, y1)
 *   wz   the kernel rows, with rows -(R-1) .. -1 and kh .. kh+R-2 zero: wz + i*kw for those i
 *   tile (R, TILE_LD) the partial sums of the tile's output rows, V vectors read and written back
 * Output row r of the tile is output row oh0 + r; source row y meets kernel row y - oh0 - r. */
#define TILE_LD (MAX_V * VBYTES / 4) /* elements per row of a tile buffer: MAX_V float vectors */
#define DEFINE_TILE(T, R, V)                                                                                  \
  static void corr_tile_##T##_##R##_##V(const T *restrict P, int64_t ldp, int64_t y0, int64_t y1, int64_t oh0, \
                                        const T *restrict wz, int kw, int64_t j0, int64_t j1, int64_t ow0,     \
                                        T *restrict dst, int64_t ldd, bool from_bias, T bias) {               \
    v##T acc[R][V];                                                                                           \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                                       \
    _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                                                       \
      acc[r][v] = from_bias ? (v##T){0} + bias : (v##T) * (v##T##_u *)(dst + r * ldd + v * VW_##T);         \
    for (int64_t y = y0; y < y1; y++) {                                                                       \
      const T *prow = P + y * ldp + ow0;                                                                      \
      const T *wrow[R];                                                                                       \
      _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) wrow[r] = wz + (y - oh0 - r) * kw;                  \
      for (int64_t j = j0; j < j1; j++) {                                                                     \
        v##T xv[V];                                                                                           \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) {                                                 \
          xv[v] = *(const v##T##_u *)(prow + j + v * VW_##T);                                                 \
          KEEP_IN_REGISTER(xv[v]);                                                                            \
        }                                                                                                     \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                                 \
          T wv = wrow[r][j];                                                                                  \
          _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) acc[r][v] += wv * xv[v];                        \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                                       \
    _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) *(v##T##_u *)(dst + r * ldd + v * VW_##T) = acc[r][v]; \
  }

#define DEFINE_TILES_R(T, R) DEFINE_TILE(T, R, 1) DEFINE_TILE(T, R, 2) DEFINE_TILE(T, R, 3) DEFINE_TILE(T, R, 4)
#define DEFINE_TILES(T) DEFINE_TILES_R(T, 1) DEFINE_TILES_R(T, 2) DEFINE_TILES_R(T, 3) DEFINE_TILES_R(T, 4)

typedef void (*corr_tile_float_fn)(const float *, int64_t, int64_t, int64_t, int64_t, const float *, int, int64_t,
                                   int64_t, int64_t, float *, int64_t, bool, float);
typedef void (*corr_tile_double_fn)(const double *, int64_t, int64_t, int64_t, int64_t, const double *, int, int64_t,
                                    int64_t, int64_t, double *, int64_t, bool, double);
DEFINE_TILES(float)
DEFINE_TILES(double)
#define TILE_TABLE(T)                                                                                         \
  static const corr_tile_##T##_fn corr_tiles_##T[MAX_R][MAX_V] = {                                           \
      {corr_tile_##T##_1_1, corr_tile_##T##_1_2, corr_tile_##T##_1_3, corr_tile_##T##_1_4},                   \
      {corr_tile_##T##_2_1, corr_tile_##T##_2_2, corr_tile_##T##_2_3, corr_tile_##T##_2_4},                   \
      {corr_tile_##T##_3_1, corr_tile_##T##_3_2, corr_tile_##T##_3_3, corr_tile_##T##_3_4},                   \
      {corr_tile_##T##_4_1, corr_tile_##T##_4_2, corr_tile_##T##_4_3, corr_tile_##T##_4_4}};
TILE_TABLE(float)
TILE_TABLE(double)

/* Output rows per tile for a kernel of kh rows: a tile visits kh + R - 1 source rows for R * kh
 * useful ones, so short kernels take fewer rows. */
static int tile_rows(int kh) {
#ifdef __AVX512VL__
  const int big = 4; /* 4 x 4 accumulators + 4 loaded vectors need the 32 registers of AVX-512VL */
#else
  const int big = 3; /* 12 accumulators fit AVX2's 16 registers */
#endif
  return kh >= 9 ? big : kh >= 2 ? 2 : 1;
}

/* Buffer sizes (in elements) of corr_plane for an output of (ho, wo) and a kernel (kh, kw). */
static int64_t corr_ldp(int64_t wo, int kw, int vw) { return round_up(wo, (int64_t)vw * MAX_V) + kw + vw; }
static int64_t corr_buf_elems(int64_t ho, int64_t wo, int kh, int kw, int vw) {
  return (ho + kh) * corr_ldp(wo, kw, vw);
}
static int64_t corr_wz_elems(int kh, int kw) { return (int64_t)(kh + 2 * (MAX_R - 1)) * kw; }

/* corr_plane: out (ho, wo) = bias + correlation of src (hs, ws) with w (kh, kw) (flipped in both
 * dims when flip), src read as zero outside, offset by (pt, pl) (either may be negative: a crop);
 * with accumulate, out += the correlation instead (bias ignored).
 * P (corr_buf_elems) and wzbuf (corr_wz_elems) are scratch, zeroed before the first plane.
 *
 * Columns: in an output block of V vectors, vector v (columns ow0 + v*VW ...) meets a real column
 * for the kernel columns j in [a_v, b_v), and both bounds fall as v grows, so the j range of the
 * block splits into at most 2V - 1 segments, each with a contiguous run of live vectors; each
 * segment runs the tile kernel on just those vectors. Columns of the kernel that only meet the
 * padding are skipped at a granularity of one vector (8 floats), not one block. */
#define DEFINE_CORR_PLANE(T)                                                                                  \
  static void corr_plane_##T(const T *src, int64_t hs, int64_t ws, const T *w, bool flip, int kh, int kw,     \
                             int64_t pt, int64_t pl, T bias, bool accumulate, T *out, int64_t ho, int64_t wo, \
                             T *P, T *wzbuf) {                                                                \
    const int vw = VW_##T;                                                                                    \
    const int R = tile_rows(kh);                                                                              \
    int64_t ldp = corr_ldp(wo, kw, vw), rows = ho + kh - 1;                                                   \
    /* source rows that exist: y in [y0, y1) of P */                                                          \
    int64_t y0 = imax64(0, pt), y1 = imin64(rows, pt + hs);                                                   \
    int64_t x0 = imax64(0, pl), x1 = imin64(ldp, pl + ws); /* real columns of P */                           \
    /* P and wzbuf arrive zeroed (by the caller, once per thread): only the interior is written, \
     * the same cells for every plane of the same geometry, so the borders stay zero */           \
    for (int64_t y = y0; y < y1; y++) {                                                                       \
      T *restrict prow = P + y * ldp + x0;                                                                    \
      const T *restrict srow = src + (y - pt) * ws + (x0 - pl);                                               \
      for (int64_t k = 0; k < x1 - x0; k++) prow[k] = srow[k];                                                \
    }                                                                                                         \
    T *wz = wzbuf + (int64_t)(R - 1) * kw;                                                                    \
    for (int i = 0; i < kh; i++)                                                                              \
      for (int j = 0; j < kw; j++) wz[i * kw + j] = flip ? w[(kh - 1 - i) * kw + (kw - 1 - j)] : w[i * kw + j]; \
    int64_t nvec = (wo + vw - 1) / vw;                                                                        \
    T tile[MAX_R * TILE_LD] __attribute__((aligned(VBYTES)));                                                     \
    for (int64_t oh0 = 0; oh0 < ho; oh0 += R) {                                                               \
      int64_t nr = imin64(R, ho - oh0);                                                                       \
      int64_t ty0 = imax64(y0, oh0), ty1 = imin64(y1, oh0 + nr - 1 + kh);                                     \
      for (int64_t v0 = 0; v0 < nvec; v0 += MAX_V) {                                                          \
        int V = (int)imin64(MAX_V, nvec - v0);                                                                \
        int64_t ow0 = v0 * vw;                                                                                \
        int64_t ncols = imin64((int64_t)V * vw, wo - ow0);                                                    \
        /* live kernel columns of each vector, and the segment bounds */                                     \
        int64_t a[MAX_V], b[MAX_V], cut[2 * MAX_V];                                                           \
        int ncut = 0;                                                                                         \
        for (int v = 0; v < V; v++) {                                                                         \
          a[v] = imax64(0, x0 - ow0 - v * vw - vw + 1);                                                       \
          b[v] = imin64(kw, x1 - ow0 - v * vw);                                                               \
          cut[ncut++] = a[v];                                                                                 \
          cut[ncut++] = b[v];                                                                                 \
        }                                                                                                     \
        if (a[0] == a[V - 1] && b[0] == b[V - 1]) {                                                           \
          /* one segment, every vector live for the same j (small kernels, inner blocks): one call, */       \
          /* straight into the output when the tile is whole */                                              \
          bool whole = nr == R && ncols == (int64_t)V * vw;                                                   \
          int64_t je = ty1 > ty0 ? imax64(a[0], b[0]) : a[0];                                                 \
          if (!whole && accumulate)                                                                           \
            for (int64_t r = 0; r < nr; r++) memcpy(tile + r * TILE_LD, out + (oh0 + r) * wo + ow0, sizeof(T) * (size_t)ncols); \
          corr_tiles_##T[R - 1][V - 1](P, ldp, ty0, ty1, oh0, wz, kw, a[0], je, ow0,                          \
                                       whole ? out + oh0 * wo + ow0 : tile, whole ? wo : TILE_LD, !accumulate, bias); \
          if (whole) continue;                                                                                \
          ncut = 0;                                                                                           \
        } else if (accumulate) {                                                                              \
          for (int64_t r = 0; r < nr; r++) memcpy(tile + r * TILE_LD, out + (oh0 + r) * wo + ow0, sizeof(T) * (size_t)ncols); \
        } else {                                                                                              \
          /* vector stores, as the tile kernel reads them (scalar stores would stall its loads) */          \
          for (int r = 0; r < R; r++)                                                                         \
            for (int v = 0; v < V; v++) *(v##T##_u *)(tile + r * TILE_LD + v * vw) = (v##T){0} + bias;       \
        }                                                                                                     \
        for (int s = 1; s < ncut; s++) /* insertion sort of at most 8 values */                              \
          for (int q = s; q > 0 && cut[q - 1] > cut[q]; q--) {                                                \
            int64_t t_ = cut[q];                                                                              \
            cut[q] = cut[q - 1];                                                                              \
            cut[q - 1] = t_;                                                                                  \
          }                                                                                                   \
        for (int s = 0; ty1 > ty0 && s + 1 < ncut; s++) {                                                     \
          int64_t js = cut[s], je = cut[s + 1];                                                               \
          if (js >= je) continue;                                                                             \
          int vlo = 0;                                                                                        \
          while (vlo < V && !(a[vlo] <= js && b[vlo] >= je)) vlo++;                                           \
          int vhi = vlo;                                                                                      \
          while (vhi < V && a[vhi] <= js && b[vhi] >= je) vhi++;                                              \
          if (vhi == vlo) continue;                                                                           \
          corr_tiles_##T[R - 1][vhi - vlo - 1](P, ldp, ty0, ty1, oh0, wz, kw, js, je, ow0 + vlo * vw, tile + vlo * vw, TILE_LD, false, bias); \
        }                                                                                                     \
        for (int64_t r = 0; r < nr; r++) memcpy(out + (oh0 + r) * wo + ow0, tile + r * TILE_LD, sizeof(T) * (size_t)ncols); \
      }                                                                                                       \
    }                                                                                                         \
  }

DEFINE_CORR_PLANE(float)
DEFINE_CORR_PLANE(double)

/* The work corr_plane does for an output of (ho, wo) and a kernel of (kh, kw), in FMAs of whole
 * vectors: rows are rounded up to vectors, and a tile of R rows visits kh + R - 1 source rows. */
static double corr_cost(int64_t ho, int64_t wo, int kh, int kw, int vw) {
  int R = tile_rows(kh);
  return (double)round_up(wo, vw) * (double)(round_up(ho, R) / R) * (double)kw * (double)(kh + R - 1) * R;
}

/* Whether to run a plane transposed (rows and columns swapped in source, kernel and output): a
 * kernel much wider than tall, such as SLaK's 5x51, wastes most of a row tile on zero kernel rows
 * (5 useful of 8 at R = 4) while its transpose, 51x5, wastes almost nothing; two transposes of a
 * plane cost far less than the taps. */
static bool corr_transposed(int64_t ho, int64_t wo, int kh, int kw, int vw) {
  return kw > kh && corr_cost(wo, ho, kw, kh, vw) < 0.9 * corr_cost(ho, wo, kh, kw, vw);
}

/* dst (cols, rows) = transpose of src (rows, cols). The float version moves 8x8 blocks through
 * AVX registers (a plain loop costs as much as the convolution it serves: every store is strided). */
static void transpose_double(const double *restrict src, int64_t rows, int64_t cols, double *restrict dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      int64_t r1 = imin64(rows, r0 + 8), c1 = imin64(cols, c0 + 8);
      for (int64_t r = r0; r < r1; r++)
        for (int64_t c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
    }
}
#if defined(__AVX__)
#include <immintrin.h>
/* d (8 rows of stride ldd) = transpose of s (8 rows of stride lds), 8 floats each */
static inline void transpose8x8_float(const float *s, int64_t lds, float *d, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  /* rows 0..3 hold columns {0,1,2,3} of source rows 0-3 (low lanes) and 4-7... in lane halves */
  for (int i = 0; i < 4; i++) {
    _mm256_storeu_ps(d + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(d + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}
#endif
static void transpose_float(const float *restrict src, int64_t rows, int64_t cols, float *restrict dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      int64_t r1 = imin64(rows, r0 + 8), c1 = imin64(cols, c0 + 8);
#if defined(__AVX__)
      if (r1 - r0 == 8 && c1 - c0 == 8) {
        transpose8x8_float(src + r0 * cols + c0, cols, dst + c0 * rows + r0, rows);
        continue;
      }
#endif
      for (int64_t r = r0; r < r1; r++)
        for (int64_t c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
    }
}

/* The small-plane route (cv_corr_float, below the plane kernels) for float32 with AVX-512. */
#if defined(__AVX512F__)
static int cv_corr_float(int64_t n, int64_t c, const float *src, int64_t hs, int64_t ws, const float *w, bool flip,
                         int kh, int kw, int64_t pt, int64_t pl, const float *b, float *dst, int64_t hd, int64_t wd);
static bool use_channel_vectors(int64_t c, int64_t hd, int64_t wd, int kh, int kw);
#define CHANNEL_VECTORS_float(g, backward, src, hs, ws, wt, pt, pl, b, dst, hd, wd)                           \
  if (use_channel_vectors((g)->c, hd, wd, (g)->kh, (g)->kw))                                                  \
    return cv_corr_float((g)->n, (g)->c, src, hs, ws, wt, backward, (g)->kh, (g)->kw, pt, pl, b, dst, hd, wd);
#else
#define CHANNEL_VECTORS_float(g, backward, src, hs, ws, wt, pt, pl, b, dst, hd, wd)
#endif
#define CHANNEL_VECTORS_double(g, backward, src, hs, ws, wt, pt, pl, b, dst, hd, wd)

/* Forward and input gradient on every (n, c) plane, each thread with its own scratch. The input
 * gradient is the correlation of grad_out with the flipped kernel, offset by (kh-1-pt, kw-1-pl).
 * Wide kernels run on transposed planes (corr_transposed). Returns 0 or LARK_ERR_NOMEM. */
#define DEFINE_FAST_CORR(T)                                                                                   \
  static int fast_corr_##T(const geom *g, bool backward, const T *src, const T *wt, const T *b, T *dst) {     \
    int64_t planes = g->n * g->c;                                                                             \
    int64_t hs = backward ? g->ho : g->h, ws = backward ? g->wo : g->w;                                       \
    int64_t hd = backward ? g->h : g->ho, wd = backward ? g->w : g->wo;                                       \
    int64_t pt = backward ? g->kh - 1 - g->pt : g->pt, pl = backward ? g->kw - 1 - g->pl : g->pl;             \
    CHANNEL_VECTORS_##T(g, backward, src, hs, ws, wt, pt, pl, b, dst, hd, wd)                                 \
    bool tr = corr_transposed(hd, wd, g->kh, g->kw, VW_##T);                                                  \
    /* the geometry corr_plane sees */                                                                        \
    int kh = tr ? g->kw : g->kh, kw = tr ? g->kh : g->kw;                                                     \
    int64_t phs = tr ? ws : hs, pws = tr ? hs : ws, phd = tr ? wd : hd, pwd = tr ? hd : wd;                   \
    int64_t ppt = tr ? pl : pt, ppl = tr ? pt : pl;                                                           \
    int failed = 0;                                                                                           \
    _Pragma("omp parallel if (worth_threads(planes, hd * wd * g->kh * g->kw))")                               \
    {                                                                                                         \
      T *P = malloc(sizeof(T) * (size_t)corr_buf_elems(phd, pwd, kh, kw, VW_##T));                            \
      T *wz = malloc(sizeof(T) * (size_t)corr_wz_elems(kh, kw));                                              \
      T *sT = tr ? malloc(sizeof(T) * (size_t)(hs * ws + hd * wd + (int64_t)kh * kw)) : NULL;                 \
      if (!P || !wz || (tr && !sT)) {                                                                         \
        _Pragma("omp atomic write") failed = 1;                                                               \
      } else {                                                                                                \
        T *oT = tr ? sT + hs * ws : NULL, *wT = tr ? oT + hd * wd : NULL;                                     \
        memset(P, 0, sizeof(T) * (size_t)corr_buf_elems(phd, pwd, kh, kw, VW_##T));                          \
        memset(wz, 0, sizeof(T) * (size_t)corr_wz_elems(kh, kw));                                            \
        _Pragma("omp for schedule(static)") /* planes cost the same */                                       \
        for (int64_t p_ = 0; p_ < planes; p_++) {                                                             \
          int64_t c = p_ % g->c;                                                                              \
          const T *sp = src + p_ * hs * ws, *wp = wt + c * g->kh * g->kw;                                     \
          T *dp = dst + p_ * hd * wd;                                                                         \
          if (tr) {                                                                                           \
            transpose_##T(sp, hs, ws, sT);                                                                    \
            transpose_##T(wp, g->kh, g->kw, wT);                                                              \
            sp = sT, wp = wT, dp = oT;                                                                        \
          }                                                                                                   \
          corr_plane_##T(sp, phs, pws, wp, backward, kh, kw, ppt, ppl, b ? b[c] : (T)0, false, dp, phd, pwd, P, wz); \
          if (tr) transpose_##T(oT, wd, hd, dst + p_ * hd * wd);                                              \
        }                                                                                                     \
      }                                                                                                       \
      free(P);                                                                                                \
      free(wz);                                                                                               \
      free(sT);                                                                                               \
    }                                                                                                         \
    return failed ? LARK_ERR_NOMEM : 0;                                                                       \
  }


/* ---- small planes: 16 channels per vector (AVX-512, float32) ------------------------------------
 *
 * On a 16x16 plane a row is one vector, so the row tiles of corr_plane reuse nothing across
 * columns: every FMA needs its own load or broadcast, and small kernels lose to PyTorch's blocked
 * layout. Here 16 channels go side by side in one vector instead (a (rows, cols, 16) buffer, as
 * oneDNN's nChw16c): a weight vector holds one tap of 16 channels and serves a whole row of
 * outputs, and one kernel row of input, loaded once into registers, serves every kernel column.
 * Per kernel row and 8 outputs: 8 + kw - 1 input loads and kw weight loads for 8 * kw FMAs. The
 * planes go in and out through 8x8 transposes. Used for narrow maps (wo <= 24), kernels up to
 * 13 wide and channel counts that are multiples of 16; every result equals corr_plane's up to
 * the order of the sums. */
#if defined(__AVX512F__)
#define CV_T 8 /* outputs per register tile */
#define CV_MAX_KW 13
typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));

/* one output row: O (wr, 16) += sum_{i<kh, j<KW} Wb[i][j] (16) * B[i][x + j] (16), rows of B ldb apart */
#define DEFINE_CV_ROW(KW)                                                                                     \
  static void cv_row_##KW(const float *restrict B, int64_t ldb, const float *restrict Wb, int kh,           \
                          float *restrict O, int64_t wr, const float *restrict bias16, bool from_bias) {      \
    for (int64_t x0 = 0; x0 < wr; x0 += CV_T) {                                                               \
      v16f acc[CV_T];                                                                                         \
      _Pragma("GCC unroll 8") for (int t = 0; t < CV_T; t++)                                                  \
        acc[t] = from_bias ? (v16f) * (const v16f_u *)bias16 : (v16f){0};                                          \
      for (int i = 0; i < kh; i++) {                                                                          \
        const float *brow = B + i * ldb + x0 * 16;                                                            \
        v16f row[CV_T + KW - 1];                                                                              \
        _Pragma("GCC unroll 20") for (int k = 0; k < CV_T + KW - 1; k++) {                                    \
          row[k] = *(const v16f_u *)(brow + k * 16);                                                          \
          KEEP_IN_REGISTER(row[k]);                                                                           \
        }                                                                                                     \
        const float *wrow = Wb + (int64_t)i * KW * 16;                                                        \
        _Pragma("GCC unroll 13") for (int j = 0; j < KW; j++) {                                               \
          v16f wv = *(const v16f_u *)(wrow + j * 16);                                                         \
          _Pragma("GCC unroll 8") for (int t = 0; t < CV_T; t++) acc[t] += wv * row[t + j];                   \
        }                                                                                                     \
      }                                                                                                       \
      _Pragma("GCC unroll 8") for (int t = 0; t < CV_T; t++) *(v16f_u *)(O + (x0 + t) * 16) = acc[t];        \
    }                                                                                                         \
  }
DEFINE_CV_ROW(1) DEFINE_CV_ROW(2) DEFINE_CV_ROW(3) DEFINE_CV_ROW(4) DEFINE_CV_ROW(5) DEFINE_CV_ROW(6)
DEFINE_CV_ROW(7) DEFINE_CV_ROW(8) DEFINE_CV_ROW(9) DEFINE_CV_ROW(10) DEFINE_CV_ROW(11) DEFINE_CV_ROW(12)
DEFINE_CV_ROW(13)
typedef void (*cv_row_fn)(const float *, int64_t, const float *, int, float *, int64_t, const float *, bool);
static const cv_row_fn cv_rows[CV_MAX_KW + 1] = {NULL,       cv_row_1,  cv_row_2,  cv_row_3, cv_row_4,
                                                 cv_row_5,   cv_row_6,  cv_row_7,  cv_row_8, cv_row_9,
                                                 cv_row_10,  cv_row_11, cv_row_12, cv_row_13};

static bool use_channel_vectors(int64_t c, int64_t hd, int64_t wd, int kh, int kw) {
  return c % 16 == 0 && wd <= 24 && hd <= 64 && kw <= CV_MAX_KW && kh <= 64;
}

/* dst planes (N, C, hd, wd) = bias + correlation of src planes (N, C, hs, ws) with w (C, kh, kw)
 * (flipped when flip) at offsets (pt, pl), 16 channels at a time. Returns 0 or LARK_ERR_NOMEM. */
static int cv_corr_float(int64_t n, int64_t c, const float *src, int64_t hs, int64_t ws, const float *w, bool flip,
                         int kh, int kw, int64_t pt, int64_t pl, const float *b, float *dst, int64_t hd, int64_t wd) {
  int64_t wr = round_up(wd, CV_T);          /* output columns computed per row */
  int64_t hp = hd + kh - 1, wp = wr + kw - 1; /* the zero-bordered source, (hp, wp, 16) */
  int64_t blocks = c / 16, items = n * blocks;
  /* weights and biases, 16 channels interleaved: Wb[cb][i][j][16] */
  float *Wb = malloc(sizeof(float) * (size_t)(blocks * kh * kw * 16 + blocks * 16));
  if (!Wb) return LARK_ERR_NOMEM;
  float *bias16 = Wb + blocks * kh * kw * 16;
  for (int64_t cb = 0; cb < blocks; cb++)
    for (int k = 0; k < 16; k++) {
      const float *wc = w + (cb * 16 + k) * kh * kw;
      for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++)
          Wb[((cb * kh + i) * kw + j) * 16 + k] = flip ? wc[(kh - 1 - i) * kw + (kw - 1 - j)] : wc[i * kw + j];
      bias16[cb * 16 + k] = b ? b[cb * 16 + k] : 0.0f;
    }
  /* the source rows and columns that hold real data: y in [y0, y1), x in [x0, x1) of B */
  int64_t y0 = imax64(0, pt), y1 = imin64(hp, pt + hs), x0 = imax64(0, pl), x1 = imin64(wp, pl + ws);
  int failed = 0;
  _Pragma("omp parallel if (worth_threads(items, hd * wd * kh * kw * 16))")
  {
    float *B = aligned_alloc(64, sizeof(float) * (size_t)(hp * wp * 16));
    float *O = aligned_alloc(64, sizeof(float) * (size_t)(wr * 16));
    if (!B || !O) {
      _Pragma("omp atomic write") failed = 1;
    } else {
      memset(B, 0, sizeof(float) * (size_t)(hp * wp * 16));
      _Pragma("omp for schedule(static)")
      for (int64_t it = 0; it < items; it++) {
        int64_t nn = it / blocks, cb = it % blocks;
        const float *sp = src + (nn * c + cb * 16) * hs * ws;
        float *dp = dst + (nn * c + cb * 16) * hd * wd;
        /* B[y][x][k] = plane k at (y - pt, x - pl): 8 channels x 8 columns per transpose */
        for (int64_t y = y0; y < y1; y++)
          for (int kb = 0; kb < 16; kb += 8) {
            int64_t x = x0;
            for (; x + 8 <= x1; x += 8)
              transpose8x8_float(sp + kb * hs * ws + (y - pt) * ws + (x - pl), hs * ws, B + (y * wp + x) * 16 + kb, 16);
            for (; x < x1; x++)
              for (int k = kb; k < kb + 8; k++) B[(y * wp + x) * 16 + k] = sp[k * hs * ws + (y - pt) * ws + (x - pl)];
          }
        for (int64_t oh = 0; oh < hd; oh++) {
          /* only the kernel rows that meet real source rows */
          int i0 = (int)imax64(0, y0 - oh), i1 = (int)imin64(kh, y1 - oh);
          if (i1 > i0)
            cv_rows[kw](B + (oh + i0) * wp * 16, wp * 16, Wb + (cb * kh + i0) * kw * 16, i1 - i0, O, wr,
                        bias16 + cb * 16, true);
          else
            for (int64_t x = 0; x < wr; x++) memcpy(O + x * 16, bias16 + cb * 16, sizeof(float) * 16);
          /* O (wr, 16) -> 16 planes' row oh */
          for (int kb = 0; kb < 16; kb += 8) {
            int64_t x = 0;
            for (; x + 8 <= wd; x += 8) transpose8x8_float(O + x * 16 + kb, 16, dp + kb * hd * wd + oh * wd + x, hd * wd);
            for (; x < wd; x++)
              for (int k = kb; k < kb + 8; k++) dp[k * hd * wd + oh * wd + x] = O[x * 16 + k];
          }
        }
      }
    }
    free(B);
    free(O);
  }
  free(Wb);
  return failed ? LARK_ERR_NOMEM : 0;
}
#endif

DEFINE_FAST_CORR(float)
DEFINE_FAST_CORR(double)

/* The sum of several correlations of the same plane (SLaK's 51x5 + 5x51 + 5x5), one pass per
 * plane: the source plane is read once and stays in cache for every kernel, and each kernel adds
 * into the same output plane (no separate outputs to add up afterwards). gs[k] is the geometry of
 * kernel k (all give the same output size); wts[k] its weights (C, kh_k, kw_k). Plain kernels
 * accumulate straight into the output; wide ones (corr_transposed) into its transpose, which is
 * transposed back once at the end. The bias (forward only) goes in with the first kernel. */
#define MAX_SUM 8
#define DEFINE_FAST_SUM(T)                                                                                    \
  static int fast_sum_##T(const geom *gs, int nk, bool backward, const T *src, const T *const *wts, const T *b, \
                          T *dst) {                                                                           \
    const geom *g = &gs[0];                                                                                   \
    int64_t planes = g->n * g->c;                                                                             \
    int64_t hs = backward ? g->ho : g->h, ws = backward ? g->wo : g->w;                                       \
    int64_t hd = backward ? g->h : g->ho, wd = backward ? g->w : g->wo;                                       \
    bool tr[MAX_SUM], any_tr = false;                                                                         \
    int64_t pt[MAX_SUM], pl[MAX_SUM], work = 0, maxtaps = 0;                                                  \
    for (int k = 0; k < nk; k++) {                                                                            \
      const geom *q = &gs[k];                                                                                 \
      pt[k] = backward ? q->kh - 1 - q->pt : q->pt;                                                           \
      pl[k] = backward ? q->kw - 1 - q->pl : q->pl;                                                           \
      tr[k] = corr_transposed(hd, wd, q->kh, q->kw, VW_##T);                                                  \
      any_tr |= tr[k];                                                                                        \
      work += hd * wd * q->kh * q->kw;                                                                        \
      maxtaps = imax64(maxtaps, (int64_t)q->kh * q->kw);                                                      \
    }                                                                                                         \
    int failed = 0;                                                                                           \
    _Pragma("omp parallel if (worth_threads(planes, work))")                                                  \
    {                                                                                                         \
      T *P[MAX_SUM] = {0}, *wz[MAX_SUM] = {0};                                                                \
      T *sT = any_tr ? malloc(sizeof(T) * (size_t)(hs * ws + hd * wd + maxtaps)) : NULL;                      \
      bool ok = !any_tr || sT;                                                                                \
      for (int k = 0; k < nk && ok; k++) {                                                                    \
        int kh = tr[k] ? gs[k].kw : gs[k].kh, kw = tr[k] ? gs[k].kh : gs[k].kw;                               \
        int64_t phd = tr[k] ? wd : hd, pwd = tr[k] ? hd : wd;                                                 \
        size_t np = (size_t)corr_buf_elems(phd, pwd, kh, kw, VW_##T), nw = (size_t)corr_wz_elems(kh, kw);    \
        P[k] = calloc(np, sizeof(T));                                                                         \
        wz[k] = calloc(nw, sizeof(T));                                                                        \
        ok = P[k] && wz[k];                                                                                   \
      }                                                                                                       \
      if (!ok) {                                                                                              \
        _Pragma("omp atomic write") failed = 1;                                                               \
      } else {                                                                                                \
        T *oT = any_tr ? sT + hs * ws : NULL, *wT = any_tr ? oT + hd * wd : NULL;                             \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t p_ = 0; p_ < planes; p_++) {                                                             \
          int64_t c = p_ % g->c;                                                                              \
          const T *sp = src + p_ * hs * ws;                                                                   \
          T *dp = dst + p_ * hd * wd, bias = b ? b[c] : (T)0;                                                 \
          bool first = true;                                                                                  \
          for (int k = 0; k < nk; k++) {                                                                      \
            if (tr[k]) continue;                                                                              \
            const geom *q = &gs[k];                                                                           \
            corr_plane_##T(sp, hs, ws, wts[k] + c * q->kh * q->kw, backward, q->kh, q->kw, pt[k], pl[k], bias, \
                           !first, dp, hd, wd, P[k], wz[k]);                                                  \
            first = false;                                                                                    \
          }                                                                                                   \
          if (!any_tr) continue;                                                                              \
          transpose_##T(sp, hs, ws, sT);                                                                      \
          if (!first) transpose_##T(dp, hd, wd, oT);                                                          \
          for (int k = 0; k < nk; k++) {                                                                      \
            if (!tr[k]) continue;                                                                             \
            const geom *q = &gs[k];                                                                           \
            transpose_##T(wts[k] + c * q->kh * q->kw, q->kh, q->kw, wT);                                      \
            corr_plane_##T(sT, ws, hs, wT, backward, q->kw, q->kh, pl[k], pt[k], bias, !first, oT, wd, hd,     \
                           P[k], wz[k]);                                                                      \
            first = false;                                                                                    \
          }                                                                                                   \
          transpose_##T(oT, wd, hd, dp);                                                                      \
        }                                                                                                     \
      }                                                                                                       \
      for (int k = 0; k < nk; k++) {                                                                          \
        free(P[k]);                                                                                           \
        free(wz[k]);                                                                                          \
      }                                                                                                       \
      free(sT);                                                                                               \
    }                                                                                                         \
    return failed ? LARK_ERR_NOMEM : 0;                                                                       \
  }

DEFINE_FAST_SUM(float)
DEFINE_FAST_SUM(double)

/* Weight gradient, stride 1, dilation 1. gw[c][i][j] = sum_n sum_{oh,ow} G[oh][ow] * P[oh+i][ow+j]
 * with P the zero-bordered input plane and G the grad_out plane. A block of I kernel rows x J
 * kernel columns walks the real rows y of P: row y meets G row y - i for kernel row i, so each
 * step along ow loads J shifted vectors of P row y and I vectors of G (one per kernel row) for
 * I*J FMAs. G has I-1 zero rows above and below, so a kernel row for which y - i falls outside
 * the map adds zeros instead of needing a branch; only the columns where some tap of the block
 * reads a real column are visited. One channel per thread, the batch summed in order, so the
 * result does not depend on the number of threads. */
#define MAX_I 4
/* kernel rows per block: 4 x 4 accumulators + 4 loaded vectors need AVX-512VL's 32 registers */
#ifdef __AVX512VL__
#define DOT_ROWS 4
#else
#define DOT_ROWS 3
#endif
#define DEFINE_DOT_TILE(T, I, J)                                                                              \
  static void dot_tile_##T##_##I##_##J(const T *restrict G, int64_t ldg, const T *restrict P, int64_t ldp,    \
                                       int64_t y0, int64_t y1, int64_t i0, int64_t j0, int64_t ow0,           \
                                       int64_t ow1, v##T *restrict accv, int64_t kw) {                        \
    v##T acc[I][J];                                                                                           \
    _Pragma("GCC unroll 4") for (int a = 0; a < I; a++)                                                       \
    _Pragma("GCC unroll 4") for (int k = 0; k < J; k++) acc[a][k] = (v##T){0};                                \
    for (int64_t y = y0; y < y1; y++) {                                                                       \
      const T *prow = P + y * ldp + j0;                                                                       \
      const T *grow[I];                                                                                       \
      _Pragma("GCC unroll 4") for (int a = 0; a < I; a++) grow[a] = G + (y - i0 - a) * ldg;                   \
      for (int64_t ow = ow0; ow < ow1; ow += VW_##T) {                                                        \
        v##T pv[J];                                                                                           \
        _Pragma("GCC unroll 4") for (int k = 0; k < J; k++) {                                                 \
          pv[k] = *(const v##T##_u *)(prow + ow + k);                                                         \
          KEEP_IN_REGISTER(pv[k]);                                                                            \
        }                                                                                                     \
        _Pragma("GCC unroll 4") for (int a = 0; a < I; a++) {                                                 \
          v##T gv = *(const v##T##_u *)(grow[a] + ow);                                                        \
          _Pragma("GCC unroll 4") for (int k = 0; k < J; k++) acc[a][k] += gv * pv[k];                        \
        }                                                                                                     \
      }                                                                                                       \
    }                                                                                                         \
    _Pragma("GCC unroll 4") for (int a = 0; a < I; a++)                                                       \
    _Pragma("GCC unroll 4") for (int k = 0; k < J; k++) accv[(i0 + a) * kw + j0 + k] += acc[a][k];            \
  }
#define DEFINE_DOT_TILES_I(T, I) DEFINE_DOT_TILE(T, I, 1) DEFINE_DOT_TILE(T, I, 2) DEFINE_DOT_TILE(T, I, 4)
#define DEFINE_DOT_TILES(T) DEFINE_DOT_TILES_I(T, 1) DEFINE_DOT_TILES_I(T, 2) DEFINE_DOT_TILES_I(T, 3) DEFINE_DOT_TILES_I(T, 4)
DEFINE_DOT_TILES(float)
DEFINE_DOT_TILES(double)
typedef void (*dot_tile_float_fn)(const float *, int64_t, const float *, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  int64_t, int64_t, vfloat *, int64_t);
typedef void (*dot_tile_double_fn)(const double *, int64_t, const double *, int64_t, int64_t, int64_t, int64_t,
                                   int64_t, int64_t, int64_t, vdouble *, int64_t);
#define DOT_TABLE(T)                                                                                          \
  static const dot_tile_##T##_fn dot_tiles_##T[MAX_I][3] = {                                                 \
      {dot_tile_##T##_1_1, dot_tile_##T##_1_2, dot_tile_##T##_1_4},                                           \
      {dot_tile_##T##_2_1, dot_tile_##T##_2_2, dot_tile_##T##_2_4},                                           \
      {dot_tile_##T##_3_1, dot_tile_##T##_3_2, dot_tile_##T##_3_4},                                           \
      {dot_tile_##T##_4_1, dot_tile_##T##_4_2, dot_tile_##T##_4_4}};
DOT_TABLE(float)
DOT_TABLE(double)

#define DEFINE_FAST_WEIGHT(T)                                                                                 \
  static int fast_weight_##T(const geom *g, const T *gy, const T *x, T *gw) {                                 \
    const int vw = VW_##T;                                                                                    \
    int64_t ldg = round_up(g->wo, vw), ldp = ldg + g->kw + vw, prow_n = g->ho + g->kh;                       \
    int64_t grow_n = g->ho + 2 * (MAX_I - 1);                                                                 \
    int64_t taps = (int64_t)g->kh * g->kw;                                                                    \
    int failed = 0;                                                                                           \
    _Pragma("omp parallel if (worth_threads(g->c, g->n * g->ho * g->wo * taps))")                             \
    {                                                                                                         \
      T *P = malloc(sizeof(T) * (size_t)(prow_n * ldp));                                                      \
      T *gbuf = malloc(sizeof(T) * (size_t)(grow_n * ldg));                                                   \
      v##T *accv = aligned_alloc(VBYTES, sizeof(v##T) * (size_t)taps);                                            \
      if (!P || !gbuf || !accv) {                                                                             \
        _Pragma("omp atomic write") failed = 1;                                                               \
      } else {                                                                                                \
        memset(P, 0, sizeof(T) * (size_t)(prow_n * ldp));                                                     \
        memset(gbuf, 0, sizeof(T) * (size_t)(grow_n * ldg));                                                  \
        T *G = gbuf + (MAX_I - 1) * ldg; /* rows -(MAX_I-1) .. ho+MAX_I-2 readable, zero outside the map */ \
        _Pragma("omp for schedule(dynamic, 1)")                                                               \
        for (int64_t c = 0; c < g->c; c++) {                                                                  \
          memset(accv, 0, sizeof(v##T) * (size_t)taps);                                                       \
          for (int64_t n = 0; n < g->n; n++) {                                                                \
            const T *xp = x + (n * g->c + c) * g->h * g->w, *gp = gy + (n * g->c + c) * g->ho * g->wo;       \
            /* P[y][xc] = x[y - pt][xc - pl]: only the interior changes, the border stays zero */            \
            for (int64_t r = 0; r < g->h; r++)                                                                \
              memcpy(P + (g->pt + r) * ldp + g->pl, xp + r * g->w, sizeof(T) * (size_t)g->w);                 \
            for (int64_t r = 0; r < g->ho; r++) memcpy(G + r * ldg, gp + r * g->wo, sizeof(T) * (size_t)g->wo); \
            for (int64_t i0 = 0; i0 < g->kh;) {                                                               \
              int I = (int)imin64(DOT_ROWS, g->kh - i0);                                                      \
              /* real rows of P that meet a G row of some kernel row of the block */                         \
              int64_t y0 = imax64(g->pt, i0), y1 = imin64(g->pt + g->h, g->ho + i0 + I - 1);                 \
              for (int64_t j0 = 0; y1 > y0 && j0 < g->kw;) {                                                  \
                int64_t left = g->kw - j0;                                                                    \
                int jk = left >= 4 ? 2 : left >= 2 ? 1 : 0, J = 1 << jk;                                      \
                int64_t ow0 = imax64(0, g->pl - (j0 + J - 1)), ow1 = imin64(g->wo, g->pl + g->w - j0);        \
                ow0 = ow0 / vw * vw;                                                                          \
                ow1 = round_up(ow1, vw);                                                                      \
                if (ow1 > ow0) dot_tiles_##T[I - 1][jk](G, ldg, P, ldp, y0, y1, i0, j0, ow0, ow1, accv, g->kw); \
                j0 += J;                                                                                      \
              }                                                                                               \
              i0 += I;                                                                                        \
            }                                                                                                 \
          }                                                                                                   \
          T *wp = gw + c * taps;                                                                              \
          for (int64_t t = 0; t < taps; t++) {                                                                \
            T s = 0;                                                                                          \
            for (int k = 0; k < vw; k++) s += accv[t][k];                                                     \
            wp[t] = s;                                                                                        \
          }                                                                                                   \
        }                                                                                                     \
      }                                                                                                       \
      free(P);                                                                                                \
      free(gbuf);                                                                                             \
      free(accv);                                                                                             \
    }                                                                                                         \
    return failed ? LARK_ERR_NOMEM : 0;                                                                       \
  }

DEFINE_FAST_WEIGHT(float)
DEFINE_FAST_WEIGHT(double)

/* ---- front functions ------------------------------------------------------------------------ */

static bool is_fast(const lark_conv2d_params *p) {
  return p->stride_h == 1 && p->stride_w == 1 && p->dil_h == 1 && p->dil_w == 1;
}

/* Strides without dilation run as the stride-1 fast path on the full output grid: the forward
 * pass keeps every stride-th output; both gradients put grad_out on that grid with zeros between
 * (the zeros add nothing). That is stride_h * stride_w times the taps, but vectorised, and the
 * plain strided loops are an order of magnitude slower per tap for the 3x3 stride-2 convolutions
 * of RepLKNet's stem and transitions. */
static bool via_stride_one(const lark_conv2d_params *p) {
  return p->dil_h == 1 && p->dil_w == 1 && (int64_t)p->stride_h * p->stride_w <= 16;
}

static lark_conv2d_params stride_one(const lark_conv2d_params *p) {
  lark_conv2d_params p1 = *p;
  p1.stride_h = p1.stride_w = 1;
  return p1;
}

/* The (ho, wo) outputs at every stride-th position of t (N, C, Ho1, Wo1): a strided view. */
static lark_tensor *every_stride(const lark_tensor *t, int64_t ho, int64_t wo, const lark_conv2d_params *p) {
  lark_tensor *a = lark_slice(t, 2, 0, (ho - 1) * p->stride_h + 1, p->stride_h);
  lark_tensor *b = a ? lark_slice(a, 3, 0, (wo - 1) * p->stride_w + 1, p->stride_w) : NULL;
  lark_tensor_release(a);
  return b;
}

/* grad_out (N, C, ho, wo) spread onto the stride-1 grid (N, C, Ho1, Wo1), zeros between. */
static lark_tensor *spread_grad(const lark_tensor *grad_out, int64_t h, int64_t w, const lark_conv2d_params *p) {
  lark_conv2d_params p1 = stride_one(p);
  int64_t ho1, wo1;
  if (lark_conv2d_output_size("dwconv2d", h, w, &p1, &ho1, &wo1)) return NULL;
  lark_tensor *full = lark_zeros(4, (int64_t[]){grad_out->shape[0], grad_out->shape[1], ho1, wo1}, grad_out->dtype, NULL);
  lark_tensor *v = full ? every_stride(full, grad_out->shape[2], grad_out->shape[3], p) : NULL;
  int rc = v ? lark_copy_(v, grad_out) : -1;
  lark_tensor_release(v);
  if (rc) {
    lark_tensor_release(full);
    return NULL;
  }
  return full;
}

/* contiguous copies of the operands, released by release_all */
static void release_all(int n, lark_tensor **ts) {
  for (int i = 0; i < n; i++) lark_tensor_release(ts[i]);
}

/* bias (C) or NULL, of the input's dtype */
static int check_bias(const char *op, const lark_tensor *bias, const lark_tensor *input, int64_t c) {
  if (!bias) return 0;
  int rc = check_tensor(op, bias, "bias", 1);
  if (rc || (rc = check_same_dtype(op, input, "input", bias, "bias"))) return rc;
  if (bias->shape[0] != c)
    return lark_set_error(LARK_ERR_SHAPE, "%s: bias must have %lld elements (one per channel), got %lld", op,
                          (long long)c, (long long)bias->shape[0]);
  return 0;
}

/* input_shape: 4 sizes, none negative */
static int check_input_shape(const char *op, const int64_t input_shape[4]) {
  if (!input_shape) return lark_set_error(LARK_ERR_ARG, "%s: input_shape is NULL", op);
  for (int d = 0; d < 4; d++)
    if (input_shape[d] < 0) {
      char buf[128];
      return lark_set_error(LARK_ERR_SHAPE, "%s: input_shape must be non-negative, got %s", op,
                            lark_shape_str(4, input_shape, buf, sizeof buf));
    }
  return 0;
}

/* grad_out must be (N, C, ho, wo), the output of an input of input_shape */
static int check_grad_out(const char *op, const lark_tensor *grad_out, const int64_t input_shape[4], int64_t ho,
                          int64_t wo) {
  const int64_t want[4] = {input_shape[0], input_shape[1], ho, wo};
  for (int d = 0; d < 4; d++)
    if (grad_out->shape[d] != want[d]) {
      char b1[128], b2[128], b3[128];
      return lark_set_error(LARK_ERR_SHAPE, "%s: grad_out must have shape %s (the output of input %s), got %s", op,
                            lark_shape_str(4, want, b1, sizeof b1), lark_shape_str(4, input_shape, b2, sizeof b2),
                            lark_shape_str(4, grad_out->shape, b3, sizeof b3));
    }
  return 0;
}

static lark_tensor *dwconv_forward(const char *op, bool reference, const lark_tensor *input,
                                   const lark_tensor *weight, const lark_tensor *bias, const lark_conv2d_params *p) {
  if (lark_dwconv2d_on_device(input, weight, bias)) /* a GPU's tensors: the backend's kernels */
    return lark_dwconv2d_device_forward(op, reference, input, weight, bias, p);
  if (check_tensor(op, input, "input", 4) || check_params(op, p)) return NULL;
  int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3], ho, wo;
  if (check_weight(op, weight, c, p) || check_same_dtype(op, input, "input", weight, "weight") ||
      check_bias(op, bias, input, c))
    return NULL;
  if (lark_conv2d_output_size(op, h, w, p, &ho, &wo)) return NULL;
  if (!reference && !is_fast(p) && via_stride_one(p) && n * c * ho * wo > 0) {
    lark_conv2d_params p1 = stride_one(p);
    lark_tensor *full = dwconv_forward(op, false, input, weight, bias, &p1);
    lark_tensor *v = full ? every_stride(full, ho, wo, p) : NULL;
    lark_tensor *r = v ? lark_contiguous(v) : NULL;
    lark_tensor_release(v);
    lark_tensor_release(full);
    return r;
  }
  lark_tensor *out = lark_empty(4, (int64_t[]){n, c, ho, wo}, input->dtype, NULL);
  if (!out) return NULL;
  if (lark_numel(out) == 0) return out;
  lark_tensor *ops[3] = {lark_contiguous(input), lark_contiguous(weight), bias ? lark_contiguous(bias) : NULL};
  if (!ops[0] || !ops[1] || (bias && !ops[2])) {
    release_all(3, ops);
    lark_tensor_release(out);
    return NULL;
  }
  geom g = make_geom(n, c, h, w, ho, wo, p);
  int rc = 0;
  if (input->dtype == LARK_FLOAT32) {
    const float *x = lark_data_ptr(ops[0]), *wt = lark_data_ptr(ops[1]), *b = bias ? lark_data_ptr(ops[2]) : NULL;
    float *y = lark_data_ptr(out);
    if (reference) ref_forward_float(&g, x, wt, b, y);
    else if (is_fast(p)) rc = fast_corr_float(&g, false, x, wt, b, y);
    else gen_forward_float(&g, x, wt, b, y);
  } else {
    const double *x = lark_data_ptr(ops[0]), *wt = lark_data_ptr(ops[1]), *b = bias ? lark_data_ptr(ops[2]) : NULL;
    double *y = lark_data_ptr(out);
    if (reference) ref_forward_double(&g, x, wt, b, y);
    else if (is_fast(p)) rc = fast_corr_double(&g, false, x, wt, b, y);
    else gen_forward_double(&g, x, wt, b, y);
  }
  release_all(3, ops);
  if (rc) {
    lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

static lark_tensor *dwconv_backward_input(const char *op, bool reference, const lark_tensor *grad_out,
                                          const lark_tensor *weight, const int64_t input_shape[4],
                                          const lark_conv2d_params *p) {
  if (lark_dwconv2d_on_device(grad_out, weight, NULL))
    return lark_dwconv2d_device_backward_input(op, reference, grad_out, weight, input_shape, p);
  if (check_tensor(op, grad_out, "grad_out", 4) || check_params(op, p) || check_input_shape(op, input_shape))
    return NULL;
  int64_t n = input_shape[0], c = input_shape[1], h = input_shape[2], w = input_shape[3], ho, wo;
  if (check_weight(op, weight, c, p) || check_same_dtype(op, grad_out, "grad_out", weight, "weight")) return NULL;
  if (lark_conv2d_output_size(op, h, w, p, &ho, &wo) || check_grad_out(op, grad_out, input_shape, ho, wo)) return NULL;
  if (!reference && !is_fast(p) && via_stride_one(p) && n * c * h * w > 0) {
    lark_conv2d_params p1 = stride_one(p);
    lark_tensor *full = spread_grad(grad_out, h, w, p);
    lark_tensor *r = full ? dwconv_backward_input(op, false, full, weight, input_shape, &p1) : NULL;
    lark_tensor_release(full);
    return r;
  }
  /* the fast path writes every element; the others accumulate into zeros */
  lark_tensor *gx = reference || !is_fast(p) ? lark_zeros(4, input_shape, grad_out->dtype, NULL)
                                             : lark_empty(4, input_shape, grad_out->dtype, NULL);
  if (!gx) return NULL;
  if (lark_numel(gx) == 0) return gx;
  lark_tensor *ops[2] = {lark_contiguous(grad_out), lark_contiguous(weight)};
  if (!ops[0] || !ops[1]) {
    release_all(2, ops);
    lark_tensor_release(gx);
    return NULL;
  }
  geom g = make_geom(n, c, h, w, ho, wo, p);
  int rc = 0;
  if (grad_out->dtype == LARK_FLOAT32) {
    const float *gy = lark_data_ptr(ops[0]), *wt = lark_data_ptr(ops[1]);
    float *d = lark_data_ptr(gx);
    if (reference) ref_backward_input_float(&g, gy, wt, d);
    else if (is_fast(p)) rc = fast_corr_float(&g, true, gy, wt, NULL, d);
    else gen_backward_input_float(&g, gy, wt, d);
  } else {
    const double *gy = lark_data_ptr(ops[0]), *wt = lark_data_ptr(ops[1]);
    double *d = lark_data_ptr(gx);
    if (reference) ref_backward_input_double(&g, gy, wt, d);
    else if (is_fast(p)) rc = fast_corr_double(&g, true, gy, wt, NULL, d);
    else gen_backward_input_double(&g, gy, wt, d);
  }
  release_all(2, ops);
  if (rc) {
    lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    lark_tensor_release(gx);
    return NULL;
  }
  return gx;
}

static lark_tensor *dwconv_backward_weight(const char *op, bool reference, const lark_tensor *grad_out,
                                           const lark_tensor *input, const lark_conv2d_params *p) {
  if (lark_dwconv2d_on_device(grad_out, input, NULL))
    return lark_dwconv2d_device_backward_weight(op, reference, grad_out, input, p);
  if (check_tensor(op, grad_out, "grad_out", 4) || check_tensor(op, input, "input", 4) || check_params(op, p) ||
      check_same_dtype(op, input, "input", grad_out, "grad_out"))
    return NULL;
  int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3], ho, wo;
  if (lark_conv2d_output_size(op, h, w, p, &ho, &wo) || check_grad_out(op, grad_out, input->shape, ho, wo)) return NULL;
  if (!reference && !is_fast(p) && via_stride_one(p) && n * c * ho * wo > 0) {
    lark_conv2d_params p1 = stride_one(p);
    lark_tensor *full = spread_grad(grad_out, h, w, p);
    lark_tensor *r = full ? dwconv_backward_weight(op, false, full, input, &p1) : NULL;
    lark_tensor_release(full);
    return r;
  }
  lark_tensor *gw = lark_zeros(4, (int64_t[]){c, 1, p->kh, p->kw}, input->dtype, NULL);
  if (!gw) return NULL;
  if (lark_numel(gw) == 0 || n == 0) return gw;
  lark_tensor *ops[2] = {lark_contiguous(grad_out), lark_contiguous(input)};
  if (!ops[0] || !ops[1]) {
    release_all(2, ops);
    lark_tensor_release(gw);
    return NULL;
  }
  geom g = make_geom(n, c, h, w, ho, wo, p);
  int rc = 0;
  if (input->dtype == LARK_FLOAT32) {
    const float *gy = lark_data_ptr(ops[0]), *x = lark_data_ptr(ops[1]);
    float *d = lark_data_ptr(gw);
    if (reference) ref_backward_weight_float(&g, gy, x, d);
    else if (is_fast(p)) rc = fast_weight_float(&g, gy, x, d);
    else gen_backward_weight_float(&g, gy, x, d);
  } else {
    const double *gy = lark_data_ptr(ops[0]), *x = lark_data_ptr(ops[1]);
    double *d = lark_data_ptr(gw);
    if (reference) ref_backward_weight_double(&g, gy, x, d);
    else if (is_fast(p)) rc = fast_weight_double(&g, gy, x, d);
    else gen_backward_weight_double(&g, gy, x, d);
  }
  release_all(2, ops);
  if (rc) {
    lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    lark_tensor_release(gw);
    return NULL;
  }
  return gw;
}

lark_tensor *lark_dwconv2d_forward(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *bias,
                                   const lark_conv2d_params *p) {
  return dwconv_forward("dwconv2d", false, input, weight, bias, p);
}
lark_tensor *lark_dwconv2d_forward_reference(const lark_tensor *input, const lark_tensor *weight,
                                             const lark_tensor *bias, const lark_conv2d_params *p) {
  return dwconv_forward("dwconv2d_reference", true, input, weight, bias, p);
}
lark_tensor *lark_dwconv2d_backward_input(const lark_tensor *grad_out, const lark_tensor *weight,
                                          const int64_t input_shape[4], const lark_conv2d_params *p) {
  return dwconv_backward_input("dwconv2d_backward_input", false, grad_out, weight, input_shape, p);
}
lark_tensor *lark_dwconv2d_backward_input_reference(const lark_tensor *grad_out, const lark_tensor *weight,
                                                    const int64_t input_shape[4], const lark_conv2d_params *p) {
  return dwconv_backward_input("dwconv2d_backward_input_reference", true, grad_out, weight, input_shape, p);
}
lark_tensor *lark_dwconv2d_backward_weight(const lark_tensor *grad_out, const lark_tensor *input,
                                           const lark_conv2d_params *p) {
  return dwconv_backward_weight("dwconv2d_backward_weight", false, grad_out, input, p);
}
lark_tensor *lark_dwconv2d_backward_weight_reference(const lark_tensor *grad_out, const lark_tensor *input,
                                                     const lark_conv2d_params *p) {
  return dwconv_backward_weight("dwconv2d_backward_weight_reference", true, grad_out, input, p);
}

/* ---- sums of depth-wise convolutions on the same input (SLaK's decomposed kernel) --------------- */

/* Validates the nk kernels against a map of (c, h, w) channels: every one (C, 1, kh_k, kw_k) of
 * dtype dt, all giving the same output (ho, wo). */
static int check_sum_kernels(const char *op, int nk, const lark_tensor *const weights[], const lark_conv2d_params p[],
                             int64_t c, int64_t h, int64_t w, lark_dtype dt, int64_t *ho, int64_t *wo) {
  if (nk < 1 || nk > MAX_SUM)
    return lark_set_error(LARK_ERR_ARG, "%s: expected 1 to %d kernels, got %d", op, MAX_SUM, nk);
  if (!p) return lark_set_error(LARK_ERR_ARG, "%s: params is NULL", op);
  for (int k = 0; k < nk; k++) {
    int64_t kho, kwo;
    int rc = check_params(op, &p[k]);
    if (rc || (weights && (rc = check_weight(op, weights[k], c, &p[k])))) return rc;
    if (weights && weights[k]->dtype != dt)
      return lark_set_error(LARK_ERR_DTYPE, "%s: kernel %d is %s, expected %s like the input", op, k + 1,
                            lark_dtype_name(weights[k]->dtype), lark_dtype_name(dt));
    if ((rc = lark_conv2d_output_size(op, h, w, &p[k], &kho, &kwo))) return rc;
    if (k == 0) {
      *ho = kho, *wo = kwo;
    } else if (kho != *ho || kwo != *wo) {
      return lark_set_error(LARK_ERR_SHAPE,
                            "%s: every kernel must give the same output size: kernel 1 gives %lldx%lld, kernel %d "
                            "(%dx%d) gives %lldx%lld",
                            op, (long long)*ho, (long long)*wo, k + 1, p[k].kh, p[k].kw, (long long)kho, (long long)kwo);
    }
  }
  return 0;
}

int lark_dwconv_check_pair(const char *op, const lark_tensor *a, const char *an, const lark_tensor *b, const char *bn) {
  int rc = check_tensor(op, a, an, 4);
  if (rc || (rc = check_tensor(op, b, bn, 4))) return rc;
  return check_same_dtype(op, a, an, b, bn);
}

int lark_dwconv_check_args(const char *op, const lark_tensor *x, const int64_t input_shape[4], int nk,
                           const lark_tensor *const weights[], const lark_tensor *bias, const lark_conv2d_params p[],
                           int64_t *ho, int64_t *wo) {
  int rc = check_tensor(op, x, input_shape ? "grad_out" : "input", 4);
  if (rc || (input_shape && (rc = check_input_shape(op, input_shape)))) return rc;
  const int64_t *shape = input_shape ? input_shape : x->shape;
  if ((rc = check_sum_kernels(op, nk, weights, p, shape[1], shape[2], shape[3], x->dtype, ho, wo))) return rc;
  if (input_shape && (rc = check_grad_out(op, x, input_shape, *ho, *wo))) return rc;
  return check_bias(op, bias, x, shape[1]);
}

static lark_tensor *dwconv_sum_forward(const char *op, bool reference, const lark_tensor *input, int nk,
                                       const lark_tensor *const weights[], const lark_tensor *bias,
                                       const lark_conv2d_params p[]) {
  if (lark_dwconv2d_sum_on_device(input, nk, weights, bias))
    return lark_dwconv2d_device_sum_forward(op, reference, input, nk, weights, bias, p);
  if (check_tensor(op, input, "input", 4)) return NULL;
  int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3], ho, wo;
  if (!weights) return (lark_set_error(LARK_ERR_ARG, "%s: weights is NULL", op), NULL);
  if (check_sum_kernels(op, nk, weights, p, c, h, w, input->dtype, &ho, &wo)) return NULL;
  bool fast = !reference;
  for (int k = 0; k < nk; k++) fast = fast && is_fast(&p[k]);
  if (!fast) {
    /* one convolution at a time, added up: the reference, and the route for strides and dilations */
    lark_tensor *out = NULL;
    for (int k = 0; k < nk; k++) {
      lark_tensor *t = dwconv_forward(op, reference, input, weights[k], k == 0 ? bias : NULL, &p[k]);
      if (!t) {
        lark_tensor_release(out);
        return NULL;
      }
      if (out) {
        int rc = lark_binary_(LARK_OP_ADD, out, t);
        lark_tensor_release(t);
        if (rc) {
          lark_tensor_release(out);
          return NULL;
        }
      } else {
        out = t;
      }
    }
    return out;
  }
  if (check_bias(op, bias, input, c)) return NULL;
  lark_tensor *out = lark_empty(4, (int64_t[]){n, c, ho, wo}, input->dtype, NULL);
  if (!out || lark_numel(out) == 0) return out;
  lark_tensor *ops[MAX_SUM + 2] = {lark_contiguous(input), bias ? lark_contiguous(bias) : NULL};
  bool ok = ops[0] && (!bias || ops[1]);
  for (int k = 0; k < nk; k++) ok = (ops[2 + k] = lark_contiguous(weights[k])) && ok;
  geom gs[MAX_SUM];
  for (int k = 0; k < nk; k++) gs[k] = make_geom(n, c, h, w, ho, wo, &p[k]);
  int rc = ok ? 0 : lark_error_code();
  if (ok && input->dtype == LARK_FLOAT32) {
    const float *wts[MAX_SUM];
    for (int k = 0; k < nk; k++) wts[k] = lark_data_ptr(ops[2 + k]);
    rc = fast_sum_float(gs, nk, false, lark_data_ptr(ops[0]), wts, bias ? lark_data_ptr(ops[1]) : NULL, lark_data_ptr(out));
  } else if (ok) {
    const double *wts[MAX_SUM];
    for (int k = 0; k < nk; k++) wts[k] = lark_data_ptr(ops[2 + k]);
    rc = fast_sum_double(gs, nk, false, lark_data_ptr(ops[0]), wts, bias ? lark_data_ptr(ops[1]) : NULL, lark_data_ptr(out));
  }
  release_all(nk + 2, ops);
  if (rc) {
    if (ok) lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

static lark_tensor *dwconv_sum_backward_input(const char *op, bool reference, const lark_tensor *grad_out, int nk,
                                              const lark_tensor *const weights[], const int64_t input_shape[4],
                                              const lark_conv2d_params p[]) {
  if (lark_dwconv2d_sum_on_device(grad_out, nk, weights, NULL))
    return lark_dwconv2d_device_sum_backward_input(op, reference, grad_out, nk, weights, input_shape, p);
  if (check_tensor(op, grad_out, "grad_out", 4) || check_input_shape(op, input_shape)) return NULL;
  int64_t n = input_shape[0], c = input_shape[1], h = input_shape[2], w = input_shape[3], ho, wo;
  if (!weights) return (lark_set_error(LARK_ERR_ARG, "%s: weights is NULL", op), NULL);
  if (check_sum_kernels(op, nk, weights, p, c, h, w, grad_out->dtype, &ho, &wo)) return NULL;
  bool fast = !reference;
  for (int k = 0; k < nk; k++) fast = fast && is_fast(&p[k]);
  if (!fast) {
    lark_tensor *gx = NULL;
    for (int k = 0; k < nk; k++) {
      lark_tensor *t = dwconv_backward_input(op, reference, grad_out, weights[k], input_shape, &p[k]);
      if (!t) {
        lark_tensor_release(gx);
        return NULL;
      }
      if (gx) {
        int rc = lark_binary_(LARK_OP_ADD, gx, t);
        lark_tensor_release(t);
        if (rc) {
          lark_tensor_release(gx);
          return NULL;
        }
      } else {
        gx = t;
      }
    }
    return gx;
  }
  if (check_grad_out(op, grad_out, input_shape, ho, wo)) return NULL;
  lark_tensor *gx = lark_empty(4, input_shape, grad_out->dtype, NULL);
  if (!gx || lark_numel(gx) == 0) return gx;
  lark_tensor *ops[MAX_SUM + 1] = {lark_contiguous(grad_out)};
  bool ok = ops[0] != NULL;
  for (int k = 0; k < nk; k++) ok = (ops[1 + k] = lark_contiguous(weights[k])) && ok;
  geom gs[MAX_SUM];
  for (int k = 0; k < nk; k++) gs[k] = make_geom(n, c, h, w, ho, wo, &p[k]);
  int rc = ok ? 0 : lark_error_code();
  if (ok && grad_out->dtype == LARK_FLOAT32) {
    const float *wts[MAX_SUM];
    for (int k = 0; k < nk; k++) wts[k] = lark_data_ptr(ops[1 + k]);
    rc = fast_sum_float(gs, nk, true, lark_data_ptr(ops[0]), wts, NULL, lark_data_ptr(gx));
  } else if (ok) {
    const double *wts[MAX_SUM];
    for (int k = 0; k < nk; k++) wts[k] = lark_data_ptr(ops[1 + k]);
    rc = fast_sum_double(gs, nk, true, lark_data_ptr(ops[0]), wts, NULL, lark_data_ptr(gx));
  }
  release_all(nk + 1, ops);
  if (rc) {
    if (ok) lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    lark_tensor_release(gx);
    return NULL;
  }
  return gx;
}

lark_tensor *lark_dwconv2d_sum_forward(const lark_tensor *input, int nk, const lark_tensor *const weights[],
                                       const lark_tensor *bias, const lark_conv2d_params p[]) {
  return dwconv_sum_forward("dwconv2d_sum", false, input, nk, weights, bias, p);
}
lark_tensor *lark_dwconv2d_sum_forward_reference(const lark_tensor *input, int nk, const lark_tensor *const weights[],
                                                 const lark_tensor *bias, const lark_conv2d_params p[]) {
  return dwconv_sum_forward("dwconv2d_sum_reference", true, input, nk, weights, bias, p);
}
lark_tensor *lark_dwconv2d_sum_backward_input(const lark_tensor *grad_out, int nk, const lark_tensor *const weights[],
                                              const int64_t input_shape[4], const lark_conv2d_params p[]) {
  return dwconv_sum_backward_input("dwconv2d_sum_backward_input", false, grad_out, nk, weights, input_shape, p);
}
lark_tensor *lark_dwconv2d_sum_backward_input_reference(const lark_tensor *grad_out, int nk,
                                                        const lark_tensor *const weights[],
                                                        const int64_t input_shape[4], const lark_conv2d_params p[]) {
  return dwconv_sum_backward_input("dwconv2d_sum_backward_input_reference", true, grad_out, nk, weights, input_shape, p);
}
