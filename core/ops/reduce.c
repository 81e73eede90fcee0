/* reduce.c: reductions (sum, mean, prod, max, min, var, std, norm, any, all) over any set of dims,
 * max/min along one dim with their indices, and argmax/argmin.
 *
 * Front functions check the op, the dims (0-based, negative from the end, no duplicates), the
 * dtype and the device, allocate the result and call the CPU kernel below, or, for a tensor on
 * another device, its backend's `reduce` with the same geometry the CPU kernel plans (kept dims,
 * reduced dims, coalesced: lark_reduce_geom in backend.h); a backend without one gives
 * lark_backend_missing().
 *
 * The CPU kernel
 * --------------
 * The input is seen as a view with the kept dims first and the reduced dims last (no copy): output
 * element o is the reduction of the `nred` elements at  kept_offset(o) + reduced_offset(r),  r in
 * [0, nred). Kept dims are enumerated in the output's row-major order; reduced dims in the input's
 * row-major order (argmax needs it), or sorted by stride when the order does not matter, so that
 * the innermost loop walks the smallest stride. Dims are coalesced where memory allows, so a
 * contiguous problem of any rank becomes one loop. Two loop shapes:
 *   rows:    one output at a time (short ones grouped per work item), its elements in runs along
 *            the innermost reduced dim (the common case: reducing trailing dims, or everything);
 *   columns: when the innermost kept dim is contiguous in memory and the reduced dims are not (sum
 *            over the batch dim of [N, C], or over dim 2 of [N, C, H*W]), a block of up to
 *            COL_BLOCK neighbouring outputs takes one contiguous row of inputs per reduced index.
 * Outputs are independent and run in parallel (OpenMP). When there are too few outputs to share
 * out (the whole-tensor sum), each output's range is cut into chunks whose size depends only on
 * the shape, the chunks run in parallel and their partial results are merged in chunk order: the
 * result is bit-identical whatever the number of threads.
 *
 * Precision: float32 and float64 accumulate in float64 (sums over contiguous runs in 8 lanes, which
 * also vectorises); max and min compare exactly in the input's type, NaN winning (as PyTorch), and
 * keep the first index on ties; integer and bool sums and products accumulate in int64 with
 * wrap-around. Var and
 * std take two passes: the mean (in float64), then sum((x - mean)^2) corrected by
 * (sum(x - mean))^2 / n for the rounding of the mean (the "corrected two-pass" algorithm).
 *
 * The reference for every op is the simple loop in spec/c/test_reduce.c and spec/reduce_spec.lua. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "grad.h"

static const char *reduce_names[LARK_NREDUCE] = {"sum", "mean", "prod", "max", "min",
                                                 "var", "std", "norm", "any", "all"};

/* ---- accumulators ----------------------------------------------------------------------------- */

/* What the kernel accumulates; several public ops share one (mean and sum; var and std). */
typedef enum {
  K_SUM, K_PROD, K_MAX, K_MIN, K_ANY, K_ALL,                      /* float and integer inputs */
  K_SQDEV, K_NORM0, K_NORM1, K_NORM2, K_NORMINF, K_NORMNINF, K_NORMP, /* float inputs only */
  K_NKINDS
} rkind;

/* One output's running state. Float inputs use d (and e for var's second sum); integer inputs,
 * any and all use i; max and min keep the flat reduced index of their pick in idx (-1: none yet). */
typedef struct {
  double d, e;
  int64_t i, idx;
} racc;

static racc acc_init(rkind k) {
  racc a = {0, 0, 0, -1};
  if (k == K_PROD) a.d = 1, a.i = 1;
  if (k == K_ALL) a.i = 1;
  if (k == K_NORMNINF) a.d = INFINITY;
  return a;
}

/* Merges b (the accumulator of the chunk after a's) into a. */
static void acc_merge(rkind k, bool is_int, racc *a, const racc *b) {
  switch (k) {
    case K_PROD:
      a->d *= b->d;
      a->i = (int64_t)((uint64_t)a->i * (uint64_t)b->i);
      break;
    case K_MAX:
    case K_MIN: {
      if (b->idx < 0) break;
      bool take;
      if (is_int) take = a->idx < 0 || (k == K_MAX ? b->i > a->i : b->i < a->i);
      else take = a->idx < 0 || (k == K_MAX ? b->d > a->d : b->d < a->d) || (b->d != b->d && a->d == a->d);
      if (take) *a = *b;
      break;
    }
    case K_ANY: a->i |= b->i; break;
    case K_ALL: a->i &= b->i; break;
    case K_NORMINF:
      if (a->d == a->d && !(b->d <= a->d)) a->d = b->d;
      break;
    case K_NORMNINF:
      if (a->d == a->d && !(b->d >= a->d)) a->d = b->d;
      break;
    default: /* additive */
      a->d += b->d;
      a->e += b->e;
      a->i = (int64_t)((uint64_t)a->i + (uint64_t)b->i);
      break;
  }
}

/* ---- the plan: geometry, op and output -------------------------------------------------------- */

struct rplan;
#define COL_BLOCK 256 /* outputs per block in the columns loop: 1 KB rows of float32 stream well */

/* Accumulators of one block of neighbouring outputs, one array per field so the loops vectorise. */
typedef struct {
  double d[COL_BLOCK], e[COL_BLOCK];
  int64_t i[COL_BLOCK], idx[COL_BLOCK];
} racc_block;

/* Feeds n elements at p, p + stride, ... (flat reduced indices r0, r0 + 1, ...) into *a; c is the
 * output's centre (var's mean). */
typedef void (*seg_fn)(racc *a, const char *p, int64_t n, int64_t stride, int64_t r0, const struct rplan *P, double c);
/* For each of nrows rows (flat reduced indices r0, r0 + 1, ...; row k at p + k * rstride elements),
 * feeds element j of the row (contiguous) into output j of the block, j < nb; cs: the block's
 * centres (var) or NULL. */
typedef void (*col_fn)(racc_block *b, const char *p, int64_t nb, int64_t nrows, int64_t rstride, int64_t r0,
                       const struct rplan *P, const double *cs);

typedef struct rplan {
  rkind kind;
  lark_reduce_op op; /* how to finish: mean divides, std takes the root, ... */
  bool is_int;       /* integer or bool input: accumulate in int64 */
  double p;          /* norm order */
  bool unbiased;     /* var, std */
  const double *center; /* (nout) var's means, or NULL */
  seg_fn seg;
  col_fn col;
  /* input geometry, coalesced: kept dims in output order, reduced dims innermost last */
  const char *data;
  int64_t esize;
  int nk, nr;
  int64_t kshape[LARK_MAX_DIMS], kstride[LARK_MAX_DIMS];
  int64_t rshape[LARK_MAX_DIMS], rstride[LARK_MAX_DIMS];
  int64_t nout, nred;
  /* outputs, contiguous, nout elements each; either may be NULL */
  void *out;
  lark_dtype out_dtype;
  int64_t *out_idx;
} rplan;

/* ---- element loops ---------------------------------------------------------------------------- */

/* One FEED per accumulator kind, written with placeholders for the state so the same text makes
 * both loop shapes: D, E, I, IDX (the state), X (the element, double or int64), R (its flat
 * reduced index), C (the centre) and PW (the norm order). */
#define FEED_FSUM D += X
#define FEED_FPROD D *= X
#define FEED_FMAX if (IDX < 0 || X > D || (X != X && D == D)) D = X, IDX = R
#define FEED_FMIN if (IDX < 0 || X < D || (X != X && D == D)) D = X, IDX = R
#define FEED_FANY I |= (X != 0)
#define FEED_FALL I &= (X != 0)
#define FEED_FSQDEV D += (X - C) * (X - C), E += X - C
#define FEED_FNORM0 D += (X != 0)
#define FEED_FNORM1 D += fabs(X)
#define FEED_FNORM2 D += X * X
#define FEED_FNORMINF if (D == D && !(fabs(X) <= D)) D = fabs(X) /* a NaN sticks */
#define FEED_FNORMNINF if (D == D && !(fabs(X) >= D)) D = fabs(X)
#define FEED_FNORMP D += pow(fabs(X), PW)
#define FEED_ISUM I = (int64_t)((uint64_t)I + (uint64_t)X)
#define FEED_IPROD I = (int64_t)((uint64_t)I * (uint64_t)X)
#define FEED_IMAX if (IDX < 0 || X > I) I = X, IDX = R
#define FEED_IMIN if (IDX < 0 || X < I) I = X, IDX = R
#define FEED_IANY I |= (X != 0)
#define FEED_IALL I &= (X != 0)

/* The kinds each input class has, with the FEED of each: ENTRY(kind, feed name). */
#define FLOAT_KINDS(ENTRY)                                                                          \
  ENTRY(K_SUM, FSUM) ENTRY(K_PROD, FPROD) ENTRY(K_MAX, FMAX) ENTRY(K_MIN, FMIN) ENTRY(K_ANY, FANY) \
  ENTRY(K_ALL, FALL) ENTRY(K_SQDEV, FSQDEV) ENTRY(K_NORM0, FNORM0) ENTRY(K_NORM1, FNORM1)          \
  ENTRY(K_NORM2, FNORM2) ENTRY(K_NORMINF, FNORMINF) ENTRY(K_NORMNINF, FNORMNINF) ENTRY(K_NORMP, FNORMP)
#define INT_KINDS(ENTRY)                                                                            \
  ENTRY(K_SUM, ISUM) ENTRY(K_PROD, IPROD) ENTRY(K_MAX, IMAX) ENTRY(K_MIN, IMIN) ENTRY(K_ANY, IANY) \
  ENTRY(K_ALL, IALL)

/* Function names: RNAME(seg, FSUM, f32) is seg_FSUM_f32 (two levels so TN_ expands first). */
#define RNAME_(pre, feed, tn) pre##_##feed##_##tn
#define RNAME(pre, feed, tn) RNAME_(pre, feed, tn)

/* rows: a run of n elements with a stride, state in locals */
#define D d_
#define E e_
#define I i_
#define IDX idx_
#define X x_
#define R r_
#define C c
#define PW pw_
#define DEF_SEG(T, TN, XT, FEED)                                                                   \
  static void RNAME(seg, FEED, TN)(racc *a, const char *p, int64_t n, int64_t stride, int64_t r0,     \
                                const rplan *P, double c) {                                        \
    const T *src = (const T *)p;                                                                   \
    double d_ = a->d, e_ = a->e, pw_ = P->p;                                                       \
    int64_t i_ = a->i, idx_ = a->idx;                                                              \
    (void)pw_;                                                                                     \
    if (stride == 1) {                                                                             \
      for (int64_t k = 0; k < n; k++) {                                                            \
        XT x_ = (XT)src[k];                                                                        \
        int64_t r_ = r0 + k;                                                                       \
        (void)r_;                                                                                  \
        FEED_##FEED;                                                                               \
      }                                                                                            \
    } else {                                                                                       \
      for (int64_t k = 0; k < n; k++) {                                                            \
        XT x_ = (XT)src[k * stride];                                                               \
        int64_t r_ = r0 + k;                                                                       \
        (void)r_;                                                                                  \
        FEED_##FEED;                                                                               \
      }                                                                                            \
    }                                                                                              \
    a->d = d_, a->e = e_, a->i = i_, a->idx = idx_;                                                \
  }
#define SEG_FLOAT_KIND(K, FEED) DEF_SEG(T_, TN_, double, FEED)
#define SEG_INT_KIND(K, FEED) DEF_SEG(T_, TN_, int64_t, FEED)

/* The kinds that only add (sum, squared deviations, norms 0/1/2) get a contiguous loop with 8
 * float64 lanes: it vectorises, and pairs the additions a little better than one running sum. The
 * lanes are fixed by the position in the run, so the result does not depend on the threads. */
#define LANES 8
/* Kept out of line: when GCC sees this tree sum its SLP vectoriser gives up on the lane loops. */
__attribute__((noinline)) static double lanes_total(const double *l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
#define DEF_SEG_ADD(T, TN, FEED, TERM_D, TERM_E)                                                   \
  static void RNAME(seg_lanes, FEED, TN)(racc *a, const char *p, int64_t n, int64_t stride, int64_t r0, \
                                      const rplan *P, double c) {                                  \
    if (stride != 1 || n < 2 * LANES) {                                                            \
      RNAME(seg, FEED, TN)(a, p, n, stride, r0, P, c);                                                \
      return;                                                                                      \
    }                                                                                              \
    const T *src = (const T *)p;                                                                   \
    double ld[LANES] = {0}, le[LANES] = {0}, cl[LANES];                                            \
    for (int j = 0; j < LANES; j++) cl[j] = c; /* a centre per lane: GCC then vectorises */        \
    (void)cl;                                                                                      \
    int64_t k = 0;                                                                                 \
    for (; k + LANES <= n; k += LANES)                                                             \
      for (int j = 0; j < LANES; j++) {                                                            \
        double x_ = (double)src[k + j];                                                            \
        ld[j] += TERM_D(x_, cl[j]);                                                                \
        le[j] += TERM_E(x_, cl[j]);                                                                \
      }                                                                                            \
    double d_ = lanes_total(ld), e_ = lanes_total(le);                                             \
    for (; k < n; k++) {                                                                           \
      double x_ = (double)src[k];                                                                  \
      d_ += TERM_D(x_, c);                                                                         \
      e_ += TERM_E(x_, c);                                                                         \
    }                                                                                              \
    a->d += d_;                                                                                    \
    a->e += e_;                                                                                    \
  }

#define T_ float
#define TN_ f32
FLOAT_KINDS(SEG_FLOAT_KIND)
#undef T_
#undef TN_
#define T_ double
#define TN_ f64
FLOAT_KINDS(SEG_FLOAT_KIND)
#undef T_
#undef TN_
#define T_ int64_t
#define TN_ i64
INT_KINDS(SEG_INT_KIND)
#undef T_
#undef TN_
#define T_ uint8_t
#define TN_ u8
INT_KINDS(SEG_INT_KIND)
#undef T_
#undef TN_

/* max and min without indices over a contiguous run: per-lane extremes in the input's type (exact)
 * and per-lane NaN flags, with no branch on the index; the FEED loop keeps the index when wanted. */
#define DEF_SEG_EXT(T, TN, FEED, CMP)                                                              \
  static void RNAME(seg_lanes, FEED, TN)(racc *a, const char *p, int64_t n, int64_t stride, int64_t r0, \
                                         const rplan *P, double c) {                               \
    if (stride != 1 || n < 2 * LANES || P->out_idx) {                                              \
      RNAME(seg, FEED, TN)(a, p, n, stride, r0, P, c);                                             \
      return;                                                                                      \
    }                                                                                              \
    const T *src = (const T *)p;                                                                   \
    T m[LANES];                                                                                    \
    int nan[LANES] = {0};                                                                          \
    for (int j = 0; j < LANES; j++) m[j] = src[j], nan[j] = src[j] != src[j];                      \
    int64_t k = LANES;                                                                             \
    for (; k + LANES <= n; k += LANES)                                                             \
      for (int j = 0; j < LANES; j++) {                                                            \
        T x_ = src[k + j];                                                                         \
        m[j] = x_ CMP m[j] ? x_ : m[j];                                                            \
        nan[j] |= x_ != x_;                                                                        \
      }                                                                                            \
    T best = m[0];                                                                                 \
    int any_nan = nan[0];                                                                          \
    for (int j = 1; j < LANES; j++) best = m[j] CMP best ? m[j] : best, any_nan |= nan[j];        \
    for (; k < n; k++) best = src[k] CMP best ? src[k] : best, any_nan |= src[k] != src[k];       \
    double v = any_nan ? NAN : (double)best;                                                       \
    if (a->idx < 0 || v CMP a->d || (v != v && a->d == a->d)) a->d = v, a->idx = r0;             \
  }

/* the terms each additive kind sums into d and e, for element x and centre c */
#define TD_SUM(x, c) (x)
#define TD_SQDEV(x, c) (((x) - (c)) * ((x) - (c)))
#define TE_SQDEV(x, c) ((x) - (c))
#define TD_NORM0(x, c) ((double)((x) != 0))
#define TD_NORM1(x, c) fabs(x)
#define TD_NORM2(x, c) ((x) * (x))
#define TE_ZERO(x, c) 0.0
#define LANE_KINDS(T, TN)                                         \
  DEF_SEG_ADD(T, TN, FSUM, TD_SUM, TE_ZERO)                      \
  DEF_SEG_ADD(T, TN, FSQDEV, TD_SQDEV, TE_SQDEV)                 \
  DEF_SEG_ADD(T, TN, FNORM0, TD_NORM0, TE_ZERO)                  \
  DEF_SEG_ADD(T, TN, FNORM1, TD_NORM1, TE_ZERO)                  \
  DEF_SEG_ADD(T, TN, FNORM2, TD_NORM2, TE_ZERO)                  \
  DEF_SEG_EXT(T, TN, FMAX, >)                                    \
  DEF_SEG_EXT(T, TN, FMIN, <)
LANE_KINDS(float, f32)
LANE_KINDS(double, f64)

#undef D
#undef E
#undef I
#undef IDX
#undef X
#undef R
#undef C
#undef PW

/* columns: element j of a contiguous row into output j of a block, state in the block's arrays */
#define D b->d[j]
#define E b->e[j]
#define I b->i[j]
#define IDX b->idx[j]
#define X x_
#define R r
#define C cs[j]
#define PW pw_
#define DEF_COL(T, TN, XT, FEED)                                                                   \
  static void RNAME(col, FEED, TN)(racc_block *b, const char *p, int64_t nb, int64_t nrows,         \
                                   int64_t rstride, int64_t r0, const rplan *P, const double *cs) {  \
    double pw_ = P->p;                                                                             \
    (void)pw_;                                                                                     \
    for (int64_t k = 0; k < nrows; k++) {                                                          \
      const T *src = (const T *)p + k * rstride;                                                   \
      int64_t r = r0 + k;                                                                          \
      (void)r;                                                                                     \
      for (int64_t j = 0; j < nb; j++) {                                                           \
        XT x_ = (XT)src[j];                                                                        \
        FEED_##FEED;                                                                               \
      }                                                                                            \
    }                                                                                              \
  }
#define COL_FLOAT_KIND(K, FEED) DEF_COL(T_, TN_, double, FEED)
#define COL_INT_KIND(K, FEED) DEF_COL(T_, TN_, int64_t, FEED)

#define T_ float
#define TN_ f32
FLOAT_KINDS(COL_FLOAT_KIND)
#undef T_
#undef TN_
#define T_ double
#define TN_ f64
FLOAT_KINDS(COL_FLOAT_KIND)
#undef T_
#undef TN_
#define T_ int64_t
#define TN_ i64
INT_KINDS(COL_INT_KIND)
#undef T_
#undef TN_
#define T_ uint8_t
#define TN_ u8
INT_KINDS(COL_INT_KIND)
#undef T_
#undef TN_

#undef D
#undef E
#undef I
#undef IDX
#undef X
#undef R
#undef C
#undef PW

/* Loop tables by storage type (0 float32, 1 float64, 2 int64, 3 uint8 and bool) and kind. */
#define SEG_ENTRY(K, FEED) [K] = RNAME(seg, FEED, TN_),
#define COL_ENTRY(K, FEED) [K] = RNAME(col, FEED, TN_),
#define TN_ f32
static const seg_fn seg_f32[K_NKINDS] = {FLOAT_KINDS(SEG_ENTRY)};
static const col_fn col_f32[K_NKINDS] = {FLOAT_KINDS(COL_ENTRY)};
#undef TN_
#define TN_ f64
static const seg_fn seg_f64[K_NKINDS] = {FLOAT_KINDS(SEG_ENTRY)};
static const col_fn col_f64[K_NKINDS] = {FLOAT_KINDS(COL_ENTRY)};
#undef TN_
#define TN_ i64
static const seg_fn seg_i64[K_NKINDS] = {INT_KINDS(SEG_ENTRY)};
static const col_fn col_i64[K_NKINDS] = {INT_KINDS(COL_ENTRY)};
#undef TN_
#define TN_ u8
static const seg_fn seg_u8[K_NKINDS] = {INT_KINDS(SEG_ENTRY)};
static const col_fn col_u8[K_NKINDS] = {INT_KINDS(COL_ENTRY)};
#undef TN_

static seg_fn pick_seg(lark_dtype dt, rkind k) {
  switch (dt) {
    case LARK_FLOAT32:
      switch (k) {
        case K_SUM: return seg_lanes_FSUM_f32;
        case K_SQDEV: return seg_lanes_FSQDEV_f32;
        case K_NORM0: return seg_lanes_FNORM0_f32;
        case K_NORM1: return seg_lanes_FNORM1_f32;
        case K_NORM2: return seg_lanes_FNORM2_f32;
        case K_MAX: return seg_lanes_FMAX_f32;
        case K_MIN: return seg_lanes_FMIN_f32;
        default: return seg_f32[k];
      }
    case LARK_FLOAT64:
      switch (k) {
        case K_SUM: return seg_lanes_FSUM_f64;
        case K_SQDEV: return seg_lanes_FSQDEV_f64;
        case K_NORM0: return seg_lanes_FNORM0_f64;
        case K_NORM1: return seg_lanes_FNORM1_f64;
        case K_NORM2: return seg_lanes_FNORM2_f64;
        case K_MAX: return seg_lanes_FMAX_f64;
        case K_MIN: return seg_lanes_FMIN_f64;
        default: return seg_f64[k];
      }
    case LARK_INT64: return seg_i64[k];
    default: return seg_u8[k];
  }
}

static col_fn pick_col(lark_dtype dt, rkind k) {
  switch (dt) {
    case LARK_FLOAT32: return col_f32[k];
    case LARK_FLOAT64: return col_f64[k];
    case LARK_INT64: return col_i64[k];
    default: return col_u8[k];
  }
}

/* ---- finishing: accumulator -> output element -------------------------------------------------- */

static double finish_float(const rplan *P, const racc *a) {
  double n = (double)P->nred;
  switch (P->op) {
    case LARK_RED_MEAN: return a->d / n; /* 0/0: NaN for an empty mean, as in PyTorch */
    case LARK_RED_VAR:
    case LARK_RED_STD: {
      double dof = n - (P->unbiased ? 1 : 0);
      if (dof <= 0) return NAN; /* PyTorch 1.13: var of one element (unbiased) is nan */
      double v = (a->d - a->e * a->e / n) / dof;
      if (v < 0) v = 0; /* rounding; keeps a NaN */
      return P->op == LARK_RED_STD ? sqrt(v) : v;
    }
    case LARK_RED_NORM:
      if (P->kind == K_NORM2) return sqrt(a->d);
      if (P->kind == K_NORMP) return pow(a->d, 1.0 / P->p);
      return a->d;
    default: return a->d;
  }
}

static void finish(const rplan *P, const racc *a, int64_t o) {
  if (P->out_idx) P->out_idx[o] = a->idx < 0 ? 0 : a->idx;
  if (!P->out) return;
  bool int_result = P->is_int || P->kind == K_ANY || P->kind == K_ALL;
  if (int_result) {
    int64_t v = a->i;
    switch (P->out_dtype) {
      case LARK_FLOAT32: ((float *)P->out)[o] = (float)v; break;
      case LARK_FLOAT64: ((double *)P->out)[o] = (double)v; break;
      case LARK_INT64: ((int64_t *)P->out)[o] = v; break;
      case LARK_UINT8: ((uint8_t *)P->out)[o] = (uint8_t)v; break;
      default: ((uint8_t *)P->out)[o] = v != 0; break;
    }
  } else {
    double v = finish_float(P, a);
    switch (P->out_dtype) {
      case LARK_FLOAT32: ((float *)P->out)[o] = (float)v; break;
      default: ((double *)P->out)[o] = v; break; /* float results are float32 or float64 */
    }
  }
}

/* ---- the driver ------------------------------------------------------------------------------- */

/* Element offset of kept position o (row-major over kept dims [0, nk_used)), with its coordinates. */
static int64_t kept_offset(const rplan *P, int nk_used, int64_t o, int64_t *pos) {
  int64_t off = 0;
  for (int d = nk_used - 1; d >= 0; d--) {
    pos[d] = o % P->kshape[d];
    o /= P->kshape[d];
    off += pos[d] * P->kstride[d];
  }
  return off;
}

/* Element offset of run q of the innermost reduced dim (from every reduced dim but that one). */
static int64_t reduced_offset(const rplan *P, int64_t q) {
  int64_t off = 0;
  for (int d = P->nr - 2; d >= 0; d--) {
    off += (q % P->rshape[d]) * P->rstride[d];
    q /= P->rshape[d];
  }
  return off;
}

/* Feeds reduced elements [lo, hi) at base into *a (rows) or blk (columns), in runs along the
 * innermost reduced dim. */
static void feed_range(const rplan *P, const char *base, int64_t lo, int64_t hi, racc *a, racc_block *blk,
                       int64_t nb, double c, const double *cs) {
  int64_t rin = P->rshape[P->nr - 1], rs = P->rstride[P->nr - 1];
  for (int64_t r = lo; r < hi;) {
    int64_t j = r % rin, len = rin - j < hi - r ? rin - j : hi - r;
    const char *p = base + (reduced_offset(P, r / rin) + j * rs) * P->esize;
    if (a) P->seg(a, p, len, rs, r, P, c);
    else P->col(blk, p, nb, len, rs, r, P, cs);
    r += len;
  }
}

/* rows: outputs [o_lo, o_hi) one at a time, each over reduced elements [lo, hi). */
static void run_rows(const rplan *P, int64_t o_lo, int64_t o_hi, int64_t lo, int64_t hi, racc *partial) {
  int64_t pos[LARK_MAX_DIMS];
  int64_t koff = kept_offset(P, P->nk, o_lo, pos);
  for (int64_t o = o_lo; o < o_hi; o++) {
    racc a = acc_init(P->kind);
    double c = P->center ? P->center[o] : 0;
    if (lo < hi && P->nr == 1) /* one run: skip feed_range's index arithmetic for short rows */
      P->seg(&a, P->data + (koff + lo * P->rstride[0]) * P->esize, hi - lo, P->rstride[0], lo, P, c);
    else if (lo < hi)
      feed_range(P, P->data + koff * P->esize, lo, hi, &a, NULL, 1, c, NULL);
    if (partial) partial[o] = a;
    else finish(P, &a, o);
    for (int d = P->nk - 1; d >= 0; d--) { /* step to the next output */
      koff += P->kstride[d];
      if (++pos[d] < P->kshape[d]) break;
      koff -= P->kstride[d] * P->kshape[d];
      pos[d] = 0;
    }
  }
}

/* columns: block b of up to COL_BLOCK neighbouring outputs along the innermost kept dim (contiguous
 * in memory), over reduced elements [lo, hi), one row of inputs per reduced index. */
static void run_cols(const rplan *P, int64_t b, int64_t lo, int64_t hi, racc *partial) {
  int64_t kin = P->kshape[P->nk - 1], per_row = (kin + COL_BLOCK - 1) / COL_BLOCK;
  int64_t j0 = (b % per_row) * COL_BLOCK, nb = kin - j0 < COL_BLOCK ? kin - j0 : COL_BLOCK;
  int64_t o0 = (b / per_row) * kin + j0, pos[LARK_MAX_DIMS];
  racc_block blk;
  racc a0 = acc_init(P->kind);
  for (int64_t j = 0; j < nb; j++) blk.d[j] = a0.d, blk.e[j] = a0.e, blk.i[j] = a0.i, blk.idx[j] = a0.idx;
  if (lo < hi) {
    const char *base = P->data + (kept_offset(P, P->nk - 1, b / per_row, pos) + j0) * P->esize;
    feed_range(P, base, lo, hi, NULL, &blk, nb, 0, P->center ? P->center + o0 : NULL);
  }
  for (int64_t j = 0; j < nb; j++) {
    racc a = {blk.d[j], blk.e[j], blk.i[j], blk.idx[j]};
    if (partial) partial[o0 + j] = a;
    else finish(P, &a, o0 + j);
  }
}

/* Work for one chunk when a few outputs share the threads, and at most this many chunks; rows
 * mode gives each work item about ROWS_WORK elements' worth of outputs. */
#define CHUNK_WORK 32768
#define MAX_CHUNKS 1024
#define ROWS_WORK 8192

static int run_plan(const rplan *P) {
  if (P->nout == 0) return 0;
  int64_t kin = P->kshape[P->nk - 1];
  /* columns when the outputs' neighbours are the input's neighbours and the reduced elements are not */
  bool cols = P->kstride[P->nk - 1] == 1 && kin >= 2 && P->rstride[P->nr - 1] != 1 && P->nred > 1;
  int64_t width = cols ? (kin < COL_BLOCK ? kin : COL_BLOCK) : 1;
  int64_t per_row = cols ? (kin + COL_BLOCK - 1) / COL_BLOCK : 1;
  int64_t nblocks = cols ? P->nout / kin * per_row : P->nout;
  /* Cut each output's range in chunks when the blocks alone cannot keep the threads busy. The
   * chunk size depends on the shape only, never on the number of threads. */
  int64_t chunk = P->nred > 0 ? P->nred : 1, nchunks = 1;
  if (nblocks < 32 && P->nred * width > 2 * CHUNK_WORK) {
    chunk = CHUNK_WORK / width > 1 ? CHUNK_WORK / width : 1;
    if ((P->nred + chunk - 1) / chunk > MAX_CHUNKS) chunk = (P->nred + MAX_CHUNKS - 1) / MAX_CHUNKS;
    nchunks = (P->nred + chunk - 1) / chunk;
  }
  /* rows mode without chunks: several short outputs per work item (grouping never changes a result) */
  int64_t rows_per_item = 1;
  if (!cols && nchunks == 1 && P->nred < ROWS_WORK) rows_per_item = ROWS_WORK / (P->nred > 0 ? P->nred : 1);
  if (!cols) nblocks = (P->nout + rows_per_item - 1) / rows_per_item;
  racc *partial = NULL;
  if (nchunks > 1) {
    partial = malloc(sizeof(racc) * (size_t)(nchunks * P->nout));
    if (!partial)
      return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory for %lld partial results", reduce_names[P->op],
                            (long long)(nchunks * P->nout));
  }
  int64_t items = nblocks * nchunks;
  bool par = items > 1 && P->nout * P->nred > LARK_PARALLEL_GRAIN;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t w = 0; w < items; w++) {
    int64_t b = w / nchunks, c = w % nchunks;
    int64_t lo = c * chunk, hi = lo + chunk < P->nred ? lo + chunk : P->nred;
    racc *part = partial ? partial + c * P->nout : NULL;
    if (cols) {
      run_cols(P, b, lo, hi, part);
    } else {
      int64_t o_lo = b * rows_per_item, o_hi = o_lo + rows_per_item < P->nout ? o_lo + rows_per_item : P->nout;
      run_rows(P, o_lo, o_hi, lo, hi, part);
    }
  }
  if (partial) {
#pragma omp parallel for schedule(static) if (P->nout > 256)
    for (int64_t o = 0; o < P->nout; o++) {
      racc a = partial[o];
      for (int64_t c = 1; c < nchunks; c++) acc_merge(P->kind, P->is_int, &a, &partial[c * P->nout + o]);
      finish(P, &a, o);
    }
    free(partial);
  }
  return 0;
}

/* Sets the plan's geometry: kept dims (reduced[d] false) in order, reduced dims in order or, when
 * `sort_reduced`, by decreasing stride (expanded stride-0 dims outermost); size-1 dims dropped and
 * neighbours that step through memory as one dim merged. */
static void plan_geometry(rplan *P, const lark_tensor *t, const bool *reduced, bool sort_reduced) {
  int64_t ks[LARK_MAX_DIMS], kst[LARK_MAX_DIMS], rsh[LARK_MAX_DIMS], rst[LARK_MAX_DIMS];
  int nk = 0, nr = 0;
  P->nout = 1;
  P->nred = 1;
  for (int d = 0; d < t->ndim; d++) {
    if (reduced[d]) {
      P->nred *= t->shape[d];
      if (t->shape[d] != 1) rsh[nr] = t->shape[d], rst[nr] = t->stride[d], nr++;
    } else {
      P->nout *= t->shape[d];
      if (t->shape[d] != 1) ks[nk] = t->shape[d], kst[nk] = t->stride[d], nk++;
    }
  }
  if (sort_reduced) { /* insertion sort, stable */
    for (int a = 1; a < nr; a++) {
      int64_t sh = rsh[a], st = rst[a];
      uint64_t key = st == 0 ? UINT64_MAX : (uint64_t)(st < 0 ? -st : st);
      int b = a - 1;
      for (; b >= 0; b--) {
        uint64_t kb = rst[b] == 0 ? UINT64_MAX : (uint64_t)(rst[b] < 0 ? -rst[b] : rst[b]);
        if (kb >= key) break;
        rsh[b + 1] = rsh[b], rst[b + 1] = rst[b];
      }
      rsh[b + 1] = sh, rst[b + 1] = st;
    }
  }
  /* merge dim d into the next when d's stride is one full run of the next */
  P->nk = 0;
  for (int d = 0; d < nk; d++) {
    if (P->nk > 0 && P->kstride[P->nk - 1] == kst[d] * ks[d]) {
      P->kshape[P->nk - 1] *= ks[d];
      P->kstride[P->nk - 1] = kst[d];
    } else {
      P->kshape[P->nk] = ks[d], P->kstride[P->nk] = kst[d], P->nk++;
    }
  }
  P->nr = 0;
  for (int d = 0; d < nr; d++) {
    if (P->nr > 0 && P->rstride[P->nr - 1] == rst[d] * rsh[d]) {
      P->rshape[P->nr - 1] *= rsh[d];
      P->rstride[P->nr - 1] = rst[d];
    } else {
      P->rshape[P->nr] = rsh[d], P->rstride[P->nr] = rst[d], P->nr++;
    }
  }
  if (P->nk == 0) P->kshape[0] = 1, P->kstride[0] = 0, P->nk = 1;
  if (P->nr == 0) P->rshape[0] = 1, P->rstride[0] = 0, P->nr = 1;
  P->data = lark_data_ptr(t);
  P->esize = (int64_t)lark_dtype_size(t->dtype);
}

static rkind norm_kind(double p) {
  if (p == 0) return K_NORM0;
  if (p == 1) return K_NORM1;
  if (p == 2) return K_NORM2;
  if (p == INFINITY) return K_NORMINF;
  if (p == -INFINITY) return K_NORMNINF;
  return K_NORMP;
}

/* The CPU kernel: out (contiguous, reduced shape) and/or out_idx (contiguous int64) from t.
 * Index ops keep the reduced dims in order, so the indices count in t's row-major order. */
static int cpu_reduce(lark_reduce_op op, const lark_tensor *t, const bool *reduced, const lark_reduce_args *args,
                      lark_tensor *out, lark_tensor *out_idx) {
  rplan P;
  memset(&P, 0, sizeof P);
  P.op = op;
  P.is_int = !lark_dtype_is_float(t->dtype);
  P.p = args->p;
  P.unbiased = args->unbiased;
  switch (op) {
    case LARK_RED_SUM: case LARK_RED_MEAN: P.kind = K_SUM; break;
    case LARK_RED_PROD: P.kind = K_PROD; break;
    case LARK_RED_MAX: P.kind = K_MAX; break;
    case LARK_RED_MIN: P.kind = K_MIN; break;
    case LARK_RED_ANY: P.kind = K_ANY; break;
    case LARK_RED_ALL: P.kind = K_ALL; break;
    case LARK_RED_VAR: case LARK_RED_STD: P.kind = K_SQDEV; break;
    case LARK_RED_NORM: P.kind = norm_kind(args->p); break;
    default: return lark_set_error(LARK_ERR_ARG, "reduce: unknown op %d", (int)op);
  }
  plan_geometry(&P, t, reduced, out_idx == NULL);
  P.out = out ? lark_data_ptr(out) : NULL;
  P.out_dtype = out ? out->dtype : LARK_INT64;
  P.out_idx = out_idx ? lark_data_ptr(out_idx) : NULL;
  P.col = pick_col(t->dtype, P.kind);
  P.seg = pick_seg(t->dtype, P.kind);
  if (P.kind != K_SQDEV) return run_plan(&P);

  /* var, std: the means first (float64, never rounded to the input's dtype), then the deviations */
  double *mean = malloc(sizeof(double) * (size_t)(P.nout > 0 ? P.nout : 1));
  if (!mean) return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", reduce_names[op]);
  rplan M = P;
  M.kind = K_SUM;
  M.op = LARK_RED_MEAN;
  M.seg = pick_seg(t->dtype, K_SUM);
  M.col = pick_col(t->dtype, K_SUM);
  M.out = mean;
  M.out_dtype = LARK_FLOAT64;
  int rc = run_plan(&M);
  P.center = mean;
  if (!rc) rc = run_plan(&P);
  free(mean);
  return rc;
}

/* ---- other devices ------------------------------------------------------------------------------ */

/* Whether t's device can reduce: the CPU always, another device when its backend has `reduce`. */
static bool reduce_supported(lark_device dev) {
  if (dev.kind == LARK_CPU) return true;
  const lark_backend *be = lark_backend_for(dev);
  return be && be->reduce;
}

/* The CPU kernel for CPU tensors; otherwise the backend's `reduce` on the geometry the CPU plan
 * would use (reduced dims in order when indices are wanted, else sorted by stride). */
static int device_reduce(lark_reduce_op op, const lark_tensor *t, const bool *reduced, const lark_reduce_args *args,
                         lark_tensor *out, lark_tensor *out_idx) {
  lark_device dev = lark_tensor_device(t);
  if (dev.kind == LARK_CPU) return cpu_reduce(op, t, reduced, args, out, out_idx);
  const lark_backend *be = lark_backend_for(dev);
  if (!be || !be->reduce) return lark_backend_missing(reduce_names[op], dev);
  rplan P;
  memset(&P, 0, sizeof P);
  plan_geometry(&P, t, reduced, out_idx == NULL);
  lark_reduce_geom g;
  memset(&g, 0, sizeof g);
  g.nk = P.nk;
  g.nr = P.nr;
  memcpy(g.kshape, P.kshape, sizeof g.kshape);
  memcpy(g.kstride, P.kstride, sizeof g.kstride);
  memcpy(g.rshape, P.rshape, sizeof g.rshape);
  memcpy(g.rstride, P.rstride, sizeof g.rstride);
  g.nout = P.nout;
  g.nred = P.nred;
  return be->reduce(op, t, &g, args, out, out_idx);
}

/* ---- front functions -------------------------------------------------------------------------- */

static int check_input(const char *name, const lark_tensor *t) {
  if (!t) return lark_set_error(LARK_ERR_ARG, "%s: the input tensor is NULL", name);
  if (!t->storage && lark_numel(t) != 0) return lark_set_error(LARK_ERR_ARG, "%s: the input tensor was freed", name);
  return 0;
}

/* reduced[d] for each of t's dims from a list of dims (0-based, negative from the end); an empty
 * list means every dim. */
static int parse_dims(const char *name, const lark_tensor *t, int ndims, const int *dims, bool *reduced) {
  if (ndims < 0 || ndims > LARK_MAX_DIMS)
    return lark_set_error(LARK_ERR_ARG, "%s: %d dims to reduce given (expected 0 to %d)", name, ndims, LARK_MAX_DIMS);
  for (int d = 0; d < LARK_MAX_DIMS; d++) reduced[d] = ndims == 0;
  for (int i = 0; i < ndims; i++) {
    int d = lark_wrap_dim(name, dims[i], t->ndim);
    if (d < 0) return lark_error_code();
    if (t->ndim > 0 && reduced[d])
      return lark_set_error(LARK_ERR_ARG, "%s: dim %d appears more than once in the dims to reduce", name, d + 1);
    if (t->ndim == 0 && i > 0)
      return lark_set_error(LARK_ERR_ARG, "%s: dim %d appears more than once in the dims to reduce", name, 1);
    reduced[d] = true;
  }
  return 0;
}

/* The result's shape: reduced dims dropped, or kept as size 1. */
static int reduced_shape(const lark_tensor *t, const bool *reduced, bool keepdim, int64_t *shape) {
  int nd = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (!reduced[d]) shape[nd++] = t->shape[d];
    else if (keepdim) shape[nd++] = 1;
  }
  return nd;
}

/* max, min, argmax, argmin have no value for an empty set. */
static int check_nonempty(const char *name, const lark_tensor *t, const bool *reduced) {
  for (int d = 0; d < t->ndim; d++)
    if (reduced[d] && t->shape[d] == 0) {
      char s[256];
      return lark_set_error(LARK_ERR_SHAPE, "%s: cannot reduce over an empty dim of size 0 (dim %d of shape %s)",
                            name, d + 1, lark_shape_str(t->ndim, t->shape, s, sizeof s));
    }
  return 0;
}

lark_tensor *lark_reduce(lark_reduce_op op, const lark_tensor *t, const lark_reduce_args *args_in) {
  if ((unsigned)op >= LARK_NREDUCE) {
    lark_set_error(LARK_ERR_ARG, "reduce: unknown op %d", (int)op);
    return NULL;
  }
  const char *name = reduce_names[op];
  lark_reduce_args args = {.ndims = 0, .keepdim = false, .unbiased = true, .p = 2};
  if (args_in) args = *args_in;
  bool reduced[LARK_MAX_DIMS];
  if (check_input(name, t) || parse_dims(name, t, args.ndims, args.dims, reduced)) return NULL;

  bool is_float = lark_dtype_is_float(t->dtype);
  if (!is_float && (op == LARK_RED_MEAN || op == LARK_RED_VAR || op == LARK_RED_STD || op == LARK_RED_NORM)) {
    lark_set_error(LARK_ERR_DTYPE, "%s: expected a float32 or float64 tensor, got %s (convert it with :float() or :double())",
                   name, lark_dtype_name(t->dtype));
    return NULL;
  }
  if (op == LARK_RED_NORM && isnan(args.p)) {
    lark_set_error(LARK_ERR_ARG, "norm: the order p is NaN (expected a number, or inf)");
    return NULL;
  }
  if ((op == LARK_RED_MAX || op == LARK_RED_MIN) && check_nonempty(name, t, reduced)) return NULL;

  lark_dtype out_dt = t->dtype;
  if (op == LARK_RED_ANY || op == LARK_RED_ALL) out_dt = LARK_BOOL;
  else if ((op == LARK_RED_SUM || op == LARK_RED_PROD) && !is_float) out_dt = LARK_INT64; /* as PyTorch */

  lark_device dev = lark_tensor_device(t);
  if (!reduce_supported(dev)) {
    lark_backend_missing(name, dev);
    return NULL;
  }
  int64_t shape[LARK_MAX_DIMS];
  int nd = reduced_shape(t, reduced, args.keepdim, shape);
  lark_tensor *out = lark_empty(nd, shape, out_dt, &dev);
  if (out && device_reduce(op, t, reduced, &args, out, NULL)) {
    lark_tensor_release(out);
    return NULL;
  }
  if (out && t->requires_grad) {
    /* the reduced dims, resolved, for the gradient (reduce_grad.c) */
    lark_reduce_args r = args;
    r.ndims = 0;
    for (int d = 0; d < t->ndim; d++)
      if (reduced[d]) r.dims[r.ndims++] = d;
    lark_record_reduce(op, out, t, &r);
  }
  return out;
}

/* max/min (values and indices) and argmax/argmin (indices only) along dim, or over every dim when
 * dim == LARK_ALL_DIMS (flat row-major index). */
static int minmax_index(lark_reduce_op op, const char *name, const lark_tensor *t, int dim, bool keepdim,
                        lark_tensor **values, lark_tensor **indices) {
  if (values) *values = NULL;
  if (indices) *indices = NULL;
  if (!indices) return lark_set_error(LARK_ERR_ARG, "%s: the indices pointer is NULL", name);
  bool reduced[LARK_MAX_DIMS];
  if (check_input(name, t)) return lark_error_code();
  if (parse_dims(name, t, dim == LARK_ALL_DIMS ? 0 : 1, &dim, reduced)) return lark_error_code();
  if (check_nonempty(name, t, reduced)) return lark_error_code();
  lark_device dev = lark_tensor_device(t);
  if (!reduce_supported(dev)) return lark_backend_missing(name, dev);
  int64_t shape[LARK_MAX_DIMS];
  int nd = reduced_shape(t, reduced, keepdim, shape);
  lark_tensor *v = values ? lark_empty(nd, shape, t->dtype, &dev) : NULL;
  lark_tensor *ix = !values || v ? lark_empty(nd, shape, LARK_INT64, &dev) : NULL;
  lark_reduce_args args = {.ndims = 0, .keepdim = keepdim, .unbiased = false, .p = 0};
  int rc = ix ? device_reduce(op, t, reduced, &args, v, ix) : lark_error_code();
  if (rc) {
    lark_tensor_release(v);
    lark_tensor_release(ix);
    return rc;
  }
  if (values) *values = v;
  *indices = ix;
  return 0;
}

static int max_dim_impl(const lark_tensor *t, int dim, bool keepdim, lark_tensor **values, lark_tensor **indices) {
  if (!values) return lark_set_error(LARK_ERR_ARG, "max: the values pointer is NULL");
  if (dim == LARK_ALL_DIMS) return lark_set_error(LARK_ERR_ARG, "max: expected a dim (use lark_reduce for the max of every element)");
  return minmax_index(LARK_RED_MAX, "max", t, dim, keepdim, values, indices);
}

int lark_max_dim(const lark_tensor *t, int dim, bool keepdim, lark_tensor **values, lark_tensor **indices) {
  bool want = t->requires_grad && lark_grad_enabled();
  lark_tensor *own = NULL;
  int rc;
  LARK_NO_GRAD(rc = max_dim_impl(t, dim, keepdim, values, indices ? indices : (want ? &own : NULL)));
  if (!rc && want && values && *values) {
    if (t->ndim == 0) lark_record_view(LARK_VIEW_COPY, *values, t, 0, NULL);
    else lark_record_pick("max", *values, t, lark_wrap_dim("max", dim, t->ndim), !keepdim, indices ? *indices : own);
  }
  lark_tensor_release(own);
  return rc;
}

static int min_dim_impl(const lark_tensor *t, int dim, bool keepdim, lark_tensor **values, lark_tensor **indices) {
  if (!values) return lark_set_error(LARK_ERR_ARG, "min: the values pointer is NULL");
  if (dim == LARK_ALL_DIMS) return lark_set_error(LARK_ERR_ARG, "min: expected a dim (use lark_reduce for the min of every element)");
  return minmax_index(LARK_RED_MIN, "min", t, dim, keepdim, values, indices);
}

int lark_min_dim(const lark_tensor *t, int dim, bool keepdim, lark_tensor **values, lark_tensor **indices) {
  bool want = t->requires_grad && lark_grad_enabled();
  lark_tensor *own = NULL;
  int rc;
  LARK_NO_GRAD(rc = min_dim_impl(t, dim, keepdim, values, indices ? indices : (want ? &own : NULL)));
  if (!rc && want && values && *values) {
    if (t->ndim == 0) lark_record_view(LARK_VIEW_COPY, *values, t, 0, NULL);
    else lark_record_pick("min", *values, t, lark_wrap_dim("min", dim, t->ndim), !keepdim, indices ? *indices : own);
  }
  lark_tensor_release(own);
  return rc;
}

lark_tensor *lark_argmax(const lark_tensor *t, int dim, bool keepdim) {
  lark_tensor *ix = NULL;
  minmax_index(LARK_RED_MAX, "argmax", t, dim, keepdim, NULL, &ix);
  return ix;
}

lark_tensor *lark_argmin(const lark_tensor *t, int dim, bool keepdim) {
  lark_tensor *ix = NULL;
  minmax_index(LARK_RED_MIN, "argmin", t, dim, keepdim, NULL, &ix);
  return ix;
}
