/* elementwise.c: binary and unary elementwise ops, clamp and where, with NumPy broadcasting.
 *
 * Front functions pick the result dtype (lark_promote; true division; bool for comparisons), cast
 * the operands to the dtype the kernel computes in, expand them to the broadcast shape (stride 0,
 * no copy) and call the backend. The CPU kernels below iterate with lark_iter; contiguous operands
 * (and a broadcast scalar) take a flat loop the compiler vectorises. The reference for every op is
 * the C expression in its kernel line: the tests compare against float64 computations of the same
 * formula. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../backend.h"
#include "../cpu.h"
#include "grad.h"
#include "vecmath.h"

static const char *binary_names[LARK_NBINARY] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "fmod", "eq", "ne", "lt", "le", "gt", "ge",
    "logical_and", "logical_or", "logical_xor"};
static const char *unary_names[LARK_NUNARY] = {
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu",
    "floor", "ceil", "round", "sign", "reciprocal", "square", "logical_not"};

const char *lark_binary_op_name(lark_binary_op op) { return (unsigned)op < LARK_NBINARY ? binary_names[op] : "?"; }
const char *lark_unary_op_name(lark_unary_op op) { return (unsigned)op < LARK_NUNARY ? unary_names[op] : "?"; }

static bool is_compare(lark_binary_op op) { return op >= LARK_OP_EQ && op <= LARK_OP_GE; }
static bool is_logical(lark_binary_op op) { return op >= LARK_OP_AND && op <= LARK_OP_XOR; }

/* ---- CPU kernels ---------------------------------------------------------------------------- */

/* One binary loop: TO out, TI inputs; EXPR reads x_ and y_. The branches give the vectoriser
 * plain unit-stride loops for the common layouts. */
#define BIN_LOOP(TO, TI, EXPR)                                                                    \
  do {                                                                                           \
    int64_t nwork = it.nwork;                                                                    \
    int64_t so = it.stride[0][it.ndim - 1], sa = it.stride[1][it.ndim - 1], sb = it.stride[2][it.ndim - 1]; \
    _Pragma("omp parallel for if (it.parallel)") for (int64_t w_ = 0; w_ < nwork; w_++) { \
      int64_t off[3], inner;                                                                            \
      lark_iter_work(&it, w_, off, &inner);                                                                \
      TO *restrict o = (TO *)it.data[0] + off[0];                                                \
      const TI *pa = (const TI *)it.data[1] + off[1], *pb = (const TI *)it.data[2] + off[2];    \
      if (so == 1 && sa == 1 && sb == 1) {                                                       \
        for (int64_t i = 0; i < inner; i++) {                                                    \
          TI x_ = pa[i], y_ = pb[i];                                                             \
          o[i] = (TO)(EXPR);                                                                     \
        }                                                                                        \
      } else if (so == 1 && sa == 1 && sb == 0) {                                                \
        TI y_ = pb[0];                                                                           \
        for (int64_t i = 0; i < inner; i++) {                                                    \
          TI x_ = pa[i];                                                                         \
          o[i] = (TO)(EXPR);                                                                     \
        }                                                                                        \
      } else if (so == 1 && sa == 0 && sb == 1) {                                                \
        TI x_ = pa[0];                                                                           \
        for (int64_t i = 0; i < inner; i++) {                                                    \
          TI y_ = pb[i];                                                                         \
          o[i] = (TO)(EXPR);                                                                     \
        }                                                                                        \
      } else {                                                                                   \
        for (int64_t i = 0; i < inner; i++) {                                                    \
          TI x_ = pa[i * sa], y_ = pb[i * sb];                                                   \
          o[i * so] = (TO)(EXPR);                                                                \
        }                                                                                        \
      }                                                                                          \
    }                                                                                            \
  } while (0)

/* Integer helpers free of C's undefined behaviour (overflow wraps, division by zero gives 0). */
static inline int64_t iadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t isub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static inline int64_t imul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
static inline int64_t imod(int64_t a, int64_t b) { return (b == 0 || (b == -1)) ? 0 : a % b; }
static inline int64_t ipow(int64_t a, int64_t e) {
  if (e < 0) return a == 1 ? 1 : a == -1 ? ((e & 1) ? -1 : 1) : 0;
  uint64_t r = 1, x = (uint64_t)a;
  while (e) {
    if (e & 1) r *= x;
    x *= x;
    e >>= 1;
  }
  return (int64_t)r;
}
static inline double fmaxnan(double a, double b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }
static inline double fminnan(double a, double b) { return (a != a || b != b) ? NAN : (a < b ? a : b); }
static inline float fmaxnanf(float a, float b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }
static inline float fminnanf(float a, float b) { return (a != a || b != b) ? NAN : (a < b ? a : b); }

#define CMP_CASES(TI)                                                  \
  case LARK_OP_EQ: BIN_LOOP(uint8_t, TI, x_ == y_); return 0;         \
  case LARK_OP_NE: BIN_LOOP(uint8_t, TI, x_ != y_); return 0;         \
  case LARK_OP_LT: BIN_LOOP(uint8_t, TI, x_ < y_); return 0;          \
  case LARK_OP_LE: BIN_LOOP(uint8_t, TI, x_ <= y_); return 0;         \
  case LARK_OP_GT: BIN_LOOP(uint8_t, TI, x_ > y_); return 0;          \
  case LARK_OP_GE: BIN_LOOP(uint8_t, TI, x_ >= y_); return 0;

int lark_cpu_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b) {
  const lark_tensor *ts[3] = {out, a, b};
  lark_iter it;
  lark_iter_init(&it, 3, ts);
  if (it.numel == 0) return 0;
  switch (a->dtype) {
    case LARK_FLOAT32:
      switch (op) {
        case LARK_OP_ADD: BIN_LOOP(float, float, x_ + y_); return 0;
        case LARK_OP_SUB: BIN_LOOP(float, float, x_ - y_); return 0;
        case LARK_OP_MUL: BIN_LOOP(float, float, x_ * y_); return 0;
        case LARK_OP_DIV: BIN_LOOP(float, float, x_ / y_); return 0;
        case LARK_OP_POW: BIN_LOOP(float, float, powf(x_, y_)); return 0;
        case LARK_OP_MAXIMUM: BIN_LOOP(float, float, fmaxnanf(x_, y_)); return 0;
        case LARK_OP_MINIMUM: BIN_LOOP(float, float, fminnanf(x_, y_)); return 0;
        case LARK_OP_FMOD: BIN_LOOP(float, float, fmodf(x_, y_)); return 0;
        CMP_CASES(float)
        default: break;
      }
      break;
    case LARK_FLOAT64:
      switch (op) {
        case LARK_OP_ADD: BIN_LOOP(double, double, x_ + y_); return 0;
        case LARK_OP_SUB: BIN_LOOP(double, double, x_ - y_); return 0;
        case LARK_OP_MUL: BIN_LOOP(double, double, x_ * y_); return 0;
        case LARK_OP_DIV: BIN_LOOP(double, double, x_ / y_); return 0;
        case LARK_OP_POW: BIN_LOOP(double, double, pow(x_, y_)); return 0;
        case LARK_OP_MAXIMUM: BIN_LOOP(double, double, fmaxnan(x_, y_)); return 0;
        case LARK_OP_MINIMUM: BIN_LOOP(double, double, fminnan(x_, y_)); return 0;
        case LARK_OP_FMOD: BIN_LOOP(double, double, fmod(x_, y_)); return 0;
        CMP_CASES(double)
        default: break;
      }
      break;
    case LARK_INT64:
      switch (op) {
        case LARK_OP_ADD: BIN_LOOP(int64_t, int64_t, iadd(x_, y_)); return 0;
        case LARK_OP_SUB: BIN_LOOP(int64_t, int64_t, isub(x_, y_)); return 0;
        case LARK_OP_MUL: BIN_LOOP(int64_t, int64_t, imul(x_, y_)); return 0;
        case LARK_OP_POW: BIN_LOOP(int64_t, int64_t, ipow(x_, y_)); return 0;
        case LARK_OP_MAXIMUM: BIN_LOOP(int64_t, int64_t, x_ > y_ ? x_ : y_); return 0;
        case LARK_OP_MINIMUM: BIN_LOOP(int64_t, int64_t, x_ < y_ ? x_ : y_); return 0;
        case LARK_OP_FMOD: BIN_LOOP(int64_t, int64_t, imod(x_, y_)); return 0;
        CMP_CASES(int64_t)
        default: break;
      }
      break;
    case LARK_UINT8:
      switch (op) {
        case LARK_OP_ADD: BIN_LOOP(uint8_t, uint8_t, x_ + y_); return 0;
        case LARK_OP_SUB: BIN_LOOP(uint8_t, uint8_t, x_ - y_); return 0;
        case LARK_OP_MUL: BIN_LOOP(uint8_t, uint8_t, x_ * y_); return 0;
        case LARK_OP_POW: BIN_LOOP(uint8_t, uint8_t, ipow(x_, y_)); return 0;
        case LARK_OP_MAXIMUM: BIN_LOOP(uint8_t, uint8_t, x_ > y_ ? x_ : y_); return 0;
        case LARK_OP_MINIMUM: BIN_LOOP(uint8_t, uint8_t, x_ < y_ ? x_ : y_); return 0;
        case LARK_OP_FMOD: BIN_LOOP(uint8_t, uint8_t, y_ ? x_ % y_ : 0); return 0;
        CMP_CASES(uint8_t)
        default: break;
      }
      break;
    case LARK_BOOL:
      switch (op) {
        case LARK_OP_ADD: case LARK_OP_MAXIMUM: case LARK_OP_OR: BIN_LOOP(uint8_t, uint8_t, x_ | y_); return 0;
        case LARK_OP_MUL: case LARK_OP_MINIMUM: case LARK_OP_AND: BIN_LOOP(uint8_t, uint8_t, x_ & y_); return 0;
        case LARK_OP_XOR: BIN_LOOP(uint8_t, uint8_t, x_ ^ y_); return 0;
        CMP_CASES(uint8_t)
        default: break;
      }
      break;
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for %s tensors", lark_binary_op_name(op),
                        lark_dtype_name(a->dtype));
}

#define UN_LOOP(TO, TI, EXPR)                                                                     \
  do {                                                                                           \
    int64_t nwork = it.nwork;                                                                    \
    int64_t so = it.stride[0][it.ndim - 1], sa = it.stride[1][it.ndim - 1];                      \
    _Pragma("omp parallel for if (it.parallel)") for (int64_t w_ = 0; w_ < nwork; w_++) { \
      int64_t off[2], inner;                                                                            \
      lark_iter_work(&it, w_, off, &inner);                                                                \
      TO *restrict o = (TO *)it.data[0] + off[0];                                                \
      const TI *pa = (const TI *)it.data[1] + off[1];                                            \
      if (so == 1 && sa == 1) {                                                                  \
        for (int64_t i = 0; i < inner; i++) {                                                    \
          TI x_ = pa[i];                                                                         \
          o[i] = (TO)(EXPR);                                                                     \
        }                                                                                        \
      } else {                                                                                   \
        for (int64_t i = 0; i < inner; i++) {                                                    \
          TI x_ = pa[i * sa];                                                                    \
          o[i * so] = (TO)(EXPR);                                                                \
        }                                                                                        \
      }                                                                                          \
    }                                                                                            \
  } while (0)

#define FLOAT_UNARY(T, S) /* S: f for float, empty for double */                  \
  switch (op) {                                                                   \
    case LARK_OP_NEG: UN_LOOP(T, T, -x_); return 0;                               \
    case LARK_OP_ABS: UN_LOOP(T, T, fabs##S(x_)); return 0;                       \
    case LARK_OP_EXP: UN_LOOP(T, T, exp##S(x_)); return 0;                        \
    case LARK_OP_LOG: UN_LOOP(T, T, log##S(x_)); return 0;                        \
    case LARK_OP_SQRT: UN_LOOP(T, T, sqrt##S(x_)); return 0;                      \
    case LARK_OP_RSQRT: UN_LOOP(T, T, (T)1 / sqrt##S(x_)); return 0;              \
    case LARK_OP_SIN: UN_LOOP(T, T, sin##S(x_)); return 0;                        \
    case LARK_OP_COS: UN_LOOP(T, T, cos##S(x_)); return 0;                        \
    case LARK_OP_TANH: UN_LOOP(T, T, tanh##S(x_)); return 0;                      \
    case LARK_OP_SIGMOID: UN_LOOP(T, T, (T)1 / ((T)1 + exp##S(-x_))); return 0;   \
    case LARK_OP_RELU: UN_LOOP(T, T, x_ > 0 ? x_ : (x_ != x_ ? x_ : 0)); return 0; \
    case LARK_OP_FLOOR: UN_LOOP(T, T, floor##S(x_)); return 0;                    \
    case LARK_OP_CEIL: UN_LOOP(T, T, ceil##S(x_)); return 0;                      \
    case LARK_OP_ROUND: UN_LOOP(T, T, nearbyint##S(x_)); return 0;                \
    case LARK_OP_SIGN: UN_LOOP(T, T, (x_ > 0) - (x_ < 0) + (x_ != x_ ? x_ : 0)); return 0; \
    case LARK_OP_RECIPROCAL: UN_LOOP(T, T, (T)1 / x_); return 0;                  \
    case LARK_OP_SQUARE: UN_LOOP(T, T, x_ * x_); return 0;                        \
    default: break;                                                               \
  }

#define INT_UNARY(T, NEGEXPR, ABSEXPR, SIGNEXPR)                                            \
  switch (op) {                                                                   \
    case LARK_OP_NEG: UN_LOOP(T, T, NEGEXPR); return 0;                           \
    case LARK_OP_ABS: UN_LOOP(T, T, ABSEXPR); return 0;                           \
    case LARK_OP_RELU: UN_LOOP(T, T, x_ > 0 ? x_ : 0); return 0;                  \
    case LARK_OP_FLOOR: case LARK_OP_CEIL: case LARK_OP_ROUND: UN_LOOP(T, T, x_); return 0; \
    case LARK_OP_SIGN: UN_LOOP(T, T, SIGNEXPR); return 0;                         \
    case LARK_OP_SQUARE: UN_LOOP(T, T, imul(x_, x_)); return 0;                   \
    default: break;                                                               \
  }

int lark_cpu_unary(lark_unary_op op, lark_tensor *out, const lark_tensor *a) {
  const lark_tensor *ts[2] = {out, a};
  lark_iter it;
  lark_iter_init(&it, 2, ts);
  if (it.numel == 0) return 0;
  if (op == LARK_OP_NOT) {
    UN_LOOP(uint8_t, uint8_t, !x_);
    return 0;
  }
  switch (a->dtype) {
    case LARK_FLOAT32:
      /* exp, sigmoid and tanh vectorise through vecmath.h; the rest call libm */
      if (op == LARK_OP_EXP) { UN_LOOP(float, float, lark_expf(x_)); return 0; }
      if (op == LARK_OP_SIGMOID) { UN_LOOP(float, float, lark_sigmoidf(x_)); return 0; }
      if (op == LARK_OP_TANH) { UN_LOOP(float, float, lark_tanhf(x_)); return 0; }
      FLOAT_UNARY(float, f) break;
    case LARK_FLOAT64: FLOAT_UNARY(double, ) break;
    case LARK_INT64: INT_UNARY(int64_t, isub(0, x_), x_ < 0 ? isub(0, x_) : x_, (x_ > 0) - (x_ < 0)) break;
    case LARK_UINT8: INT_UNARY(uint8_t, (uint8_t)(0u - x_), x_, x_ > 0) break;
    case LARK_BOOL: INT_UNARY(uint8_t, x_, x_, x_) break;
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for %s tensors", lark_unary_op_name(op),
                        lark_dtype_name(a->dtype));
}

int lark_cpu_clamp(lark_tensor *out, const lark_tensor *a, double lo, double hi) {
  const lark_tensor *ts[2] = {out, a};
  lark_iter it;
  lark_iter_init(&it, 2, ts);
  if (it.numel == 0) return 0;
  bool has_lo = lo == lo, has_hi = hi == hi;
  /* clamp(x) = min(max(x, lo), hi) as PyTorch defines it (hi wins when lo > hi); NaN passes through */
#define CLAMP_EXPR(T) (x_ != x_ ? x_ : (has_hi && (has_lo && x_ < (T)lo ? (T)lo : x_) > (T)hi) ? (T)hi : (has_lo && x_ < (T)lo ? (T)lo : x_))
  switch (a->dtype) {
    case LARK_FLOAT32: UN_LOOP(float, float, CLAMP_EXPR(float)); return 0;
    case LARK_FLOAT64: UN_LOOP(double, double, CLAMP_EXPR(double)); return 0;
    case LARK_INT64: {
      /* integer bounds: round inward so that the result stays inside [lo, hi] */
      int64_t l = has_lo ? (lo <= -9.2e18 ? INT64_MIN : lo >= 9.2e18 ? INT64_MAX : (int64_t)ceil(lo)) : INT64_MIN;
      int64_t h = has_hi ? (hi <= -9.2e18 ? INT64_MIN : hi >= 9.2e18 ? INT64_MAX : (int64_t)floor(hi)) : INT64_MAX;
      UN_LOOP(int64_t, int64_t, (x_ < l ? l : x_) > h ? h : (x_ < l ? l : x_));
      return 0;
    }
    case LARK_UINT8: {
      double l = has_lo ? fmax(0, fmin(255, ceil(lo))) : 0, h = has_hi ? fmax(0, fmin(255, floor(hi))) : 255;
      uint8_t L = (uint8_t)l, H = (uint8_t)h;
      UN_LOOP(uint8_t, uint8_t, (x_ < L ? L : x_) > H ? H : (x_ < L ? L : x_));
      return 0;
    }
    default: break;
  }
#undef CLAMP_EXPR
  return lark_set_error(LARK_ERR_DTYPE, "clamp: not defined for %s tensors", lark_dtype_name(a->dtype));
}

/* o[i] = c[i] ? a[i*sa] : b[i*sb] for sa, sb in {0, 1}, as masks rather than branches (random
 * conditions mispredict half the time) so that the loops vectorise. */
#define DEFINE_WHERE_DENSE(T)                                                                     \
  static void where_dense_##T(T *restrict o, const uint8_t *restrict c, const T *restrict a, int64_t sa, \
                              const T *restrict b, int64_t sb, int64_t n) {                       \
    if (sa == 1 && sb == 1) {                                                                    \
      for (int64_t i = 0; i < n; i++) {                                                          \
        T m = (T)0 - (T)(c[i] != 0);                                                             \
        o[i] = (a[i] & m) | (b[i] & ~m);                                                         \
      }                                                                                          \
    } else if (sa == 1) {                                                                        \
      const T bv = b[0];                                                                         \
      for (int64_t i = 0; i < n; i++) {                                                          \
        T m = (T)0 - (T)(c[i] != 0);                                                             \
        o[i] = (a[i] & m) | (bv & ~m);                                                           \
      }                                                                                          \
    } else if (sb == 1) {                                                                        \
      const T av = a[0];                                                                         \
      for (int64_t i = 0; i < n; i++) {                                                          \
        T m = (T)0 - (T)(c[i] != 0);                                                             \
        o[i] = (av & m) | (b[i] & ~m);                                                           \
      }                                                                                          \
    } else {                                                                                     \
      const T av = a[0], bv = b[0];                                                              \
      for (int64_t i = 0; i < n; i++) {                                                          \
        T m = (T)0 - (T)(c[i] != 0);                                                             \
        o[i] = (av & m) | (bv & ~m);                                                             \
      }                                                                                          \
    }                                                                                            \
  }
DEFINE_WHERE_DENSE(uint64_t)
DEFINE_WHERE_DENSE(uint32_t)
DEFINE_WHERE_DENSE(uint8_t)

#define WHERE_LOOP(T)                                                                             \
  do {                                                                                           \
    int64_t nwork = it.nwork;                                                                    \
    int64_t so = it.stride[0][it.ndim - 1], sc = it.stride[1][it.ndim - 1];                      \
    int64_t sa = it.stride[2][it.ndim - 1], sb = it.stride[3][it.ndim - 1];                      \
    _Pragma("omp parallel for if (it.parallel)") for (int64_t w_ = 0; w_ < nwork; w_++) { \
      int64_t off[4], inner;                                                                            \
      lark_iter_work(&it, w_, off, &inner);                                                                \
      T *o = (T *)it.data[0] + off[0];                                                           \
      const uint8_t *c = (const uint8_t *)it.data[1] + off[1];                                   \
      const T *pa = (const T *)it.data[2] + off[2], *pb = (const T *)it.data[3] + off[3];        \
      if (so == 1 && sc == 1 && (sa | sb) >= 0 && (sa | sb) <= 1) {                             \
        /* dense rows, each value a row or a scalar (relu's backward): a branch-free select */    \
        where_dense_##T(o, c, pa, sa, pb, sb, inner);                                            \
      } else {                                                                                   \
        for (int64_t i = 0; i < inner; i++) o[i * so] = c[i * sc] ? pa[i * sa] : pb[i * sb];     \
      }                                                                                          \
    }                                                                                            \
  } while (0)

int lark_cpu_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b) {
  const lark_tensor *ts[4] = {out, cond, a, b};
  lark_iter it;
  lark_iter_init(&it, 4, ts);
  if (it.numel == 0) return 0;
  switch (lark_dtype_size(a->dtype)) {
    case 8: WHERE_LOOP(uint64_t); break; /* moves bits: float64 and int64 alike */
    case 4: WHERE_LOOP(uint32_t); break;
    default: WHERE_LOOP(uint8_t); break;
  }
  return 0;
}

/* ---- front functions ------------------------------------------------------------------------ */

int lark_broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                         int64_t *sout) {
  int n = na > nb ? na : nb;
  for (int i = 0; i < n; i++) {
    int ia = na - n + i, ib = nb - n + i;
    int64_t x = ia >= 0 ? sa[ia] : 1, y = ib >= 0 ? sb[ib] : 1;
    if (x != y && x != 1 && y != 1) {
      char a[256], b[256];
      return lark_set_error(LARK_ERR_SHAPE, "%s: shapes %s and %s cannot be broadcast", op,
                            lark_shape_str(na, sa, a, sizeof a), lark_shape_str(nb, sb, b, sizeof b));
    }
    sout[i] = x == 1 ? y : x;
  }
  *nout = n;
  return 0;
}

/* The dtype the kernel computes in and the dtype of the result. */
static int binary_dtypes(lark_binary_op op, lark_dtype da, lark_dtype db, lark_dtype *compute, lark_dtype *result) {
  const char *name = lark_binary_op_name(op);
  lark_dtype p = lark_promote(da, db);
  if (is_logical(op)) {
    *compute = *result = LARK_BOOL;
  } else if (is_compare(op)) {
    *compute = p;
    *result = LARK_BOOL;
  } else if (op == LARK_OP_DIV) {
    *compute = *result = lark_dtype_is_float(p) ? p : LARK_FLOAT32;
  } else if (p == LARK_BOOL && (op == LARK_OP_SUB || op == LARK_OP_POW || op == LARK_OP_FMOD)) {
    return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for two bool tensors (use logical ops, or convert with :long())",
                          name);
  } else {
    *compute = *result = p;
  }
  return 0;
}

/* Runs op into out (of the broadcast shape); casts and expands the operands as the kernel needs. */
static int binary_into(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b,
                       lark_dtype compute, lark_dtype result) {
  const char *name = lark_binary_op_name(op);
  lark_device dev = lark_tensor_device(out);
  const lark_backend *be = lark_backend_for(dev);
  if (!be->binary) return lark_backend_missing(name, dev);
  lark_tensor *ca = lark_cast(a, compute), *cb = ca ? lark_cast(b, compute) : NULL;
  lark_tensor *ea = cb ? lark_expand_to(name, ca, out->ndim, out->shape) : NULL;
  lark_tensor *eb = ea ? lark_expand_to(name, cb, out->ndim, out->shape) : NULL;
  int rc = eb ? 0 : lark_error_code();
  /* An operand that overlaps out in another layout (m:add_(m:t())) would be read after the
   * kernel has overwritten parts of it: read a private copy instead. The same view as out is
   * fine, every element is read before it is written. */
  for (int k = 0; k < 2 && !rc; k++) {
    lark_tensor **e = k ? &eb : &ea;
    if ((*e)->storage == out->storage && !lark_same_view(*e, out)) {
      lark_tensor *c = lark_clone(*e);
      if (!c) rc = lark_error_code();
      else { lark_tensor_release(*e); *e = c; }
    }
  }
  if (!rc) {
    if (out->dtype == result) {
      rc = be->binary(op, out, ea, eb);
    } else { /* out of another dtype: compute, then convert */
      lark_tensor *tmp = lark_empty(out->ndim, out->shape, result, &dev);
      rc = tmp ? be->binary(op, tmp, ea, eb) : lark_error_code();
      if (!rc) rc = lark_copy_(out, tmp);
      lark_tensor_release(tmp);
    }
  }
  lark_tensor_release(ca);
  lark_tensor_release(cb);
  lark_tensor_release(ea);
  lark_tensor_release(eb);
  if (!rc) lark_bump_version(out);
  return rc;
}

static int binary_check(lark_binary_op op, const lark_tensor *a, const lark_tensor *b) {
  const char *name = lark_binary_op_name(op);
  if ((unsigned)op >= LARK_NBINARY) return lark_set_error(LARK_ERR_ARG, "binary: unknown op %d", (int)op);
  if (lark_check_alive(name, a, "the first operand") || lark_check_alive(name, b, "the second operand")) return lark_error_code();
  const lark_tensor *ts[2] = {a, b};
  static const char *const names[2] = {"the first operand", "the second operand"};
  return lark_check_same_device(name, 2, ts, names);
}

static lark_tensor *binary_impl(lark_binary_op op, const lark_tensor *a, const lark_tensor *b) {
  if (binary_check(op, a, b)) return NULL;
  const char *name = lark_binary_op_name(op);
  lark_dtype compute = LARK_FLOAT32, result = LARK_FLOAT32;
  int nd;
  int64_t shape[LARK_MAX_DIMS];
  if (binary_dtypes(op, a->dtype, b->dtype, &compute, &result)) return NULL;
  if (lark_broadcast_shape(name, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return NULL;
  lark_device dev = lark_tensor_device(a);
  lark_tensor *out = lark_empty(nd, shape, result, &dev);
  if (out && binary_into(op, out, a, b, compute, result)) {
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

lark_tensor *lark_binary(lark_binary_op op, const lark_tensor *a, const lark_tensor *b) {
  lark_tensor *out;
  LARK_NO_GRAD(out = binary_impl(op, a, b));
  if (out && (a->requires_grad || b->requires_grad)) lark_record_binary(op, out, a, b);
  return out;
}


int lark_binary_out(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b) {
  if (binary_check(op, a, b) || lark_check_alive(lark_binary_op_name(op), out, "out") ||
      lark_check_writable(lark_binary_op_name(op), out, "out"))
    return lark_error_code();
  const char *name = lark_binary_op_name(op);
  lark_dtype compute = LARK_FLOAT32, result = LARK_FLOAT32;
  int nd;
  int64_t shape[LARK_MAX_DIMS];
  if (binary_dtypes(op, a->dtype, b->dtype, &compute, &result)) return lark_error_code();
  if (lark_broadcast_shape(name, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return lark_error_code();
  if (nd != out->ndim || memcmp(shape, out->shape, sizeof(int64_t) * (size_t)nd)) {
    char x[256], y[256];
    return lark_set_error(LARK_ERR_SHAPE, "%s: out has shape %s but the result has shape %s", name,
                          lark_shape_str(out->ndim, out->shape, x, sizeof x), lark_shape_str(nd, shape, y, sizeof y));
  }
  const lark_tensor *ts[2] = {out, a};
  static const char *const names[2] = {"out", "the first operand"};
  if (lark_check_same_device(name, 2, ts, names)) return lark_error_code();
  return binary_into(op, out, a, b, compute, result);
}

int lark_binary_(lark_binary_op op, lark_tensor *a, const lark_tensor *b) {
  if (binary_check(op, a, b)) return lark_error_code();
  const char *name = lark_binary_op_name(op);
  char inplace[32];
  snprintf(inplace, sizeof inplace, "%s_", name);
  if (lark_check_writable(inplace, a, "the tensor") || lark_check_inplace(inplace, a, b)) return lark_error_code();
  lark_dtype compute = LARK_FLOAT32, result = LARK_FLOAT32;
  if (binary_dtypes(op, a->dtype, b->dtype, &compute, &result)) return lark_error_code();
  int nd;
  int64_t shape[LARK_MAX_DIMS];
  if (lark_broadcast_shape(inplace, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return lark_error_code();
  if (nd != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)nd)) {
    char x[256], y[256];
    return lark_set_error(LARK_ERR_SHAPE, "%s_: in place, the result of shape %s would not fit the tensor of shape %s",
                          name, lark_shape_str(nd, shape, y, sizeof y), lark_shape_str(a->ndim, a->shape, x, sizeof x));
  }
  return binary_into(op, a, a, b, compute, result);
}

/* The 0-d tensor a number becomes next to tensor a: it keeps a's dtype unless a float meets an
 * integer tensor (float32), or an integer meets a bool tensor (int64), as in PyTorch. */
static lark_tensor *scalar_like(const lark_tensor *a, double s, bool s_is_int) {
  lark_dtype dt = a->dtype;
  if (!lark_dtype_is_float(dt)) {
    if (!s_is_int) dt = LARK_FLOAT32;
    else if (dt == LARK_BOOL) dt = LARK_INT64;
  }
  lark_device dev = lark_tensor_device(a);
  return lark_scalar(s, dt, &dev);
}

lark_tensor *lark_binary_scalar(lark_binary_op op, const lark_tensor *a, double s, bool s_is_int, bool scalar_first) {
  lark_tensor *st = scalar_like(a, s, s_is_int);
  if (!st) return NULL;
  lark_tensor *r = scalar_first ? lark_binary(op, st, a) : lark_binary(op, a, st);
  lark_tensor_release(st);
  return r;
}

int lark_binary_scalar_(lark_binary_op op, lark_tensor *a, double s) {
  lark_device dev = lark_tensor_device(a);
  /* The number takes the tensor's dtype where that loses nothing: always for a float tensor, and for
   * an int64 tensor when the number is an integer, so that t:add_(1) stays exact past 2^53 and agrees
   * with t + 1 (div_ still divides truly, in float64). Otherwise float64, cast back on the store. */
  lark_dtype dt = LARK_FLOAT64;
  if (lark_dtype_is_float(a->dtype)) dt = a->dtype;
  else if (a->dtype == LARK_INT64 && op != LARK_OP_DIV && s == trunc(s) && fabs(s) < 9.2e18) dt = LARK_INT64;
  lark_tensor *st = lark_scalar(s, dt, &dev);
  if (!st) return lark_error_code();
  int rc = lark_binary_(op, a, st);
  lark_tensor_release(st);
  return rc;
}

lark_tensor *lark_add(const lark_tensor *a, const lark_tensor *b) { return lark_binary(LARK_OP_ADD, a, b); }
lark_tensor *lark_sub(const lark_tensor *a, const lark_tensor *b) { return lark_binary(LARK_OP_SUB, a, b); }
lark_tensor *lark_mul(const lark_tensor *a, const lark_tensor *b) { return lark_binary(LARK_OP_MUL, a, b); }
lark_tensor *lark_div(const lark_tensor *a, const lark_tensor *b) { return lark_binary(LARK_OP_DIV, a, b); }

static bool unary_needs_float(lark_unary_op op) {
  switch (op) {
    case LARK_OP_EXP: case LARK_OP_LOG: case LARK_OP_SQRT: case LARK_OP_RSQRT: case LARK_OP_SIN:
    case LARK_OP_COS: case LARK_OP_TANH: case LARK_OP_SIGMOID: case LARK_OP_RECIPROCAL:
      return true;
    default:
      return false;
  }
}

static int unary_dtypes(lark_unary_op op, lark_dtype in, lark_dtype *compute) {
  if ((unsigned)op >= LARK_NUNARY) return lark_set_error(LARK_ERR_ARG, "unary: unknown op %d", (int)op);
  if (op == LARK_OP_NOT) *compute = LARK_BOOL;
  else if (unary_needs_float(op) && !lark_dtype_is_float(in)) *compute = LARK_FLOAT32;
  else if (op == LARK_OP_NEG && in == LARK_BOOL)
    return lark_set_error(LARK_ERR_DTYPE, "neg: not defined for bool tensors (use logical_not)");
  else *compute = in;
  return 0;
}

static lark_tensor *unary_impl(lark_unary_op op, const lark_tensor *a) {
  lark_dtype compute = LARK_FLOAT32;
  if (unary_dtypes(op, a->dtype, &compute) || lark_check_alive(lark_unary_op_name(op), a, "the input")) return NULL;
  lark_device dev = lark_tensor_device(a);
  const lark_backend *be = lark_backend_for(dev);
  if (!be->unary) {
    lark_backend_missing(lark_unary_op_name(op), dev);
    return NULL;
  }
  lark_tensor *ca = lark_cast(a, compute);
  lark_tensor *out = ca ? lark_empty(a->ndim, a->shape, compute, &dev) : NULL;
  if (out && be->unary(op, out, ca)) {
    lark_tensor_release(out);
    out = NULL;
  }
  lark_tensor_release(ca);
  return out;
}

lark_tensor *lark_unary(lark_unary_op op, const lark_tensor *a) {
  lark_tensor *out;
  LARK_NO_GRAD(out = unary_impl(op, a));
  if (out && a->requires_grad) lark_record_unary(op, out, a);
  return out;
}


int lark_unary_(lark_unary_op op, lark_tensor *a) {
  lark_dtype compute = LARK_FLOAT32;
  if (unary_dtypes(op, a->dtype, &compute) || lark_check_alive(lark_unary_op_name(op), a, "the input")) return lark_error_code();
  char inplace[32];
  snprintf(inplace, sizeof inplace, "%s_", lark_unary_op_name(op));
  if (lark_check_writable(inplace, a, "the tensor") || lark_check_inplace(inplace, a, NULL)) return lark_error_code();
  lark_device dev = lark_tensor_device(a);
  const lark_backend *be = lark_backend_for(dev);
  if (!be->unary) return lark_backend_missing(lark_unary_op_name(op), dev);
  int rc;
  if (compute == a->dtype) {
    rc = be->unary(op, a, a);
  } else {
    lark_tensor *r = lark_unary(op, a);
    rc = r ? lark_copy_(a, r) : lark_error_code();
    lark_tensor_release(r);
  }
  if (!rc) lark_bump_version(a);
  return rc;
}

static lark_tensor *clamp_impl(const lark_tensor *a, double lo, double hi) {
  lark_tensor *c = lark_clone(a);
  if (c && lark_clamp_(c, lo, hi)) {
    lark_tensor_release(c);
    return NULL;
  }
  return c;
}

lark_tensor *lark_clamp(const lark_tensor *a, double lo, double hi) {
  lark_tensor *out;
  LARK_NO_GRAD(out = clamp_impl(a, lo, hi));
  if (out && a->requires_grad) lark_record_clamp(out, a, lo, hi);
  return out;
}


int lark_clamp_(lark_tensor *a, double lo, double hi) {
  if (lark_check_alive("clamp", a, "the input") || lark_check_writable("clamp_", a, "the tensor") ||
      lark_check_inplace("clamp_", a, NULL))
    return lark_error_code();
  if (a->dtype == LARK_BOOL) return lark_set_error(LARK_ERR_DTYPE, "clamp: not defined for bool tensors");
  lark_device dev = lark_tensor_device(a);
  const lark_backend *be = lark_backend_for(dev);
  if (!be->clamp) return lark_backend_missing("clamp", dev);
  int rc = be->clamp(a, a, lo, hi);
  if (!rc) lark_bump_version(a);
  return rc;
}

static lark_tensor *where_impl(const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b) {
  const lark_tensor *ts[3] = {cond, a, b};
  static const char *const names[3] = {"the condition", "the first value", "the second value"};
  if (lark_check_same_device("where", 3, ts, names)) return NULL;
  if (cond->dtype != LARK_BOOL && cond->dtype != LARK_UINT8) {
    lark_set_error(LARK_ERR_DTYPE, "where: the condition must be a bool or uint8 tensor, got %s",
                   lark_dtype_name(cond->dtype));
    return NULL;
  }
  if (lark_check_alive("where", cond, "the condition") || lark_check_alive("where", a, "the first value") ||
      lark_check_alive("where", b, "the second value"))
    return NULL;
  int n1, nd;
  int64_t s1[LARK_MAX_DIMS], shape[LARK_MAX_DIMS];
  if (lark_broadcast_shape("where", a->ndim, a->shape, b->ndim, b->shape, &n1, s1)) return NULL;
  if (lark_broadcast_shape("where", cond->ndim, cond->shape, n1, s1, &nd, shape)) return NULL;
  lark_device dev = lark_tensor_device(a);
  const lark_backend *be = lark_backend_for(dev);
  if (!be->where) {
    lark_backend_missing("where", dev);
    return NULL;
  }
  lark_dtype dt = lark_promote(a->dtype, b->dtype);
  lark_tensor *cc = lark_cast(cond, LARK_BOOL), *ca = lark_cast(a, dt), *cb = lark_cast(b, dt);
  lark_tensor *ec = NULL, *ea = NULL, *eb = NULL, *out = NULL;
  if (cc && ca && cb && (ec = lark_expand_to("where", cc, nd, shape)) && (ea = lark_expand_to("where", ca, nd, shape)) &&
      (eb = lark_expand_to("where", cb, nd, shape)) && (out = lark_empty(nd, shape, dt, &dev))) {
    if (be->where(out, ec, ea, eb)) {
      lark_tensor_release(out);
      out = NULL;
    }
  }
  lark_tensor_release(cc);
  lark_tensor_release(ca);
  lark_tensor_release(cb);
  lark_tensor_release(ec);
  lark_tensor_release(ea);
  lark_tensor_release(eb);
  return out;
}

lark_tensor *lark_where(const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b) {
  lark_tensor *out;
  LARK_NO_GRAD(out = where_impl(cond, a, b));
  if (out && (a->requires_grad || b->requires_grad)) lark_record_where(out, cond, a, b);
  return out;
}

