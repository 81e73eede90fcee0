/*
 * elementwise.cu: the CUDA kernels for copy (with dtype conversion), fill, binary and unary ops,
 * clamp and where.
 *
 * Each kernel is a small functor holding typed data pointers; lark_cuda_launch (cuda.h) runs it
 * over every element with the operands' offsets, on the flat path when all are contiguous and on
 * the strided path (shape and strides by value, stride 0 on broadcast dims) otherwise. The element
 * formulas are those of the CPU kernels (core/cpu.c, core/ops/elementwise.c), so both backends give
 * the same bits for integers and conversions; spec/c/test_cuda.c checks that against the CPU.
 */
#include <math.h>
#include <type_traits>

#include "cuda.h"

/* ---- dtypes --------------------------------------------------------------------------------- */

/* The C type each dtype is stored as (bool is one byte, 0 or 1). */
template <int DT> struct storage_of;
template <> struct storage_of<LARK_FLOAT32> { typedef float type; };
template <> struct storage_of<LARK_FLOAT64> { typedef double type; };
template <> struct storage_of<LARK_INT64> { typedef int64_t type; };
template <> struct storage_of<LARK_UINT8> { typedef uint8_t type; };
template <> struct storage_of<LARK_BOOL> { typedef uint8_t type; };

/* Float to integer without C's undefined behaviour: NaN -> 0, out of range saturates (as cpu.c). */
__host__ __device__ __forceinline__ int64_t f2i(double x) {
  if (x != x) return 0;
  if (x >= 9.2233720368547748e18) return INT64_MAX;
  if (x <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)x;
}

/* One element of dtype DS as dtype DD, with cpu.c's rules. */
template <int DD, int DS>
__device__ __forceinline__ typename storage_of<DD>::type convert(typename storage_of<DS>::type x) {
  typedef typename storage_of<DD>::type TD;
  constexpr bool src_float = DS == LARK_FLOAT32 || DS == LARK_FLOAT64;
  if constexpr (DD == LARK_BOOL) return (TD)(x != 0);
  else if constexpr (src_float && (DD == LARK_INT64 || DD == LARK_UINT8)) return (TD)f2i((double)x);
  else return (TD)x;
}

/* Calls f(std::integral_constant<int, DT>) for the dtype dt; returns what f returns, or an error. */
template <typename F>
static int dispatch_dtype(lark_dtype dt, const char *op, F f) {
  switch (dt) {
    case LARK_FLOAT32: return f(std::integral_constant<int, LARK_FLOAT32>());
    case LARK_FLOAT64: return f(std::integral_constant<int, LARK_FLOAT64>());
    case LARK_INT64: return f(std::integral_constant<int, LARK_INT64>());
    case LARK_UINT8: return f(std::integral_constant<int, LARK_UINT8>());
    case LARK_BOOL: return f(std::integral_constant<int, LARK_BOOL>());
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: unknown dtype %d", op, (int)dt);
  }
}

/* ---- copy ----------------------------------------------------------------------------------- */

template <int DD, int DS>
struct copy_fn {
  typename storage_of<DD>::type *dst;      /* out's shape */
  const typename storage_of<DS>::type *src; /* out's shape, possibly expanded (stride 0) */
  __device__ void operator()(const int64_t *off) const { dst[off[0]] = convert<DD, DS>(src[off[1]]); }
};

int lark_cuda_copy(lark_tensor *dst, const lark_tensor *src) {
  int64_t n = lark_numel(dst);
  if (n == 0) return 0;
  /* one dtype, both contiguous: a plain device-to-device copy of the bytes */
  if (dst->dtype == src->dtype && lark_is_contiguous(dst) && lark_is_contiguous(src) && lark_numel(src) == n) {
    if (lark_cuda_set_device(lark_tensor_device(dst), "copy")) return lark_error_code();
    if (lark_data_ptr(dst) == lark_data_ptr(src)) return 0; /* copying a tensor onto itself */
    size_t nbytes = (size_t)n * lark_dtype_size(dst->dtype);
    return lark_cuda_check(cudaMemcpyAsync(lark_data_ptr(dst), lark_data_ptr(src), nbytes, cudaMemcpyDeviceToDevice, 0),
                           "copy", "cudaMemcpyAsync cuda -> cuda");
  }
  const lark_tensor *ts[2] = {dst, src};
  return dispatch_dtype(dst->dtype, "copy", [&](auto dd) {
    return dispatch_dtype(src->dtype, "copy", [&](auto ds) {
      constexpr int DD = decltype(dd)::value, DS = decltype(ds)::value;
      copy_fn<DD, DS> fn;
      fn.dst = (typename storage_of<DD>::type *)lark_data_ptr(dst);
      fn.src = (const typename storage_of<DS>::type *)lark_data_ptr(src);
      return lark_cuda_launch<2>("copy", ts, fn);
    });
  });
}

/* ---- fill ----------------------------------------------------------------------------------- */

template <typename T>
struct fill_fn {
  T *dst; /* any strides (an expanded view writes the same value to one place, which is harmless) */
  T value;
  __device__ void operator()(const int64_t *off) const { dst[off[0]] = value; }
};

int lark_cuda_fill(lark_tensor *t, double value) {
  if (lark_numel(t) == 0) return 0;
  const lark_tensor *ts[1] = {t};
  return dispatch_dtype(t->dtype, "fill", [&](auto d) {
    constexpr int DT = decltype(d)::value;
    typedef typename storage_of<DT>::type T;
    fill_fn<T> fn;
    fn.dst = (T *)lark_data_ptr(t);
    /* the value in t's dtype, converted on the host with cpu.c's rules */
    if constexpr (DT == LARK_BOOL) fn.value = (T)(value != 0);
    else if constexpr (DT == LARK_INT64 || DT == LARK_UINT8) fn.value = (T)f2i(value);
    else fn.value = (T)value;
    return lark_cuda_launch<1>("fill", ts, fn);
  });
}

/* ---- binary --------------------------------------------------------------------------------- */

/* Element formulas, one functor per op, templated on the compute type T. Integer arithmetic wraps
 * (done in unsigned) and integer fmod by 0 gives 0, as on the CPU. */
struct op_add {
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_same<T, int64_t>::value) return (int64_t)((uint64_t)x + (uint64_t)y);
    else return (T)(x + y);
  }
};
struct op_sub {
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_same<T, int64_t>::value) return (int64_t)((uint64_t)x - (uint64_t)y);
    else return (T)(x - y);
  }
};
struct op_mul {
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_same<T, int64_t>::value) return (int64_t)((uint64_t)x * (uint64_t)y);
    else return (T)(x * y);
  }
};
struct op_div {
  template <typename T> __device__ T operator()(T x, T y) const { return x / y; } /* float only */
};
struct op_pow {
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_same<T, float>::value) return powf(x, y);
    else if constexpr (std::is_same<T, double>::value) return pow(x, y);
    else { /* integer power by squaring, wrapping; negative exponents as elementwise.c's ipow */
      int64_t a = (int64_t)x, e = (int64_t)y;
      if (e < 0) return (T)(a == 1 ? 1 : a == -1 ? ((e & 1) ? -1 : 1) : 0);
      uint64_t r = 1, b = (uint64_t)a;
      while (e) {
        if (e & 1) r *= b;
        b *= b;
        e >>= 1;
      }
      return (T)(int64_t)r;
    }
  }
};
struct op_maximum { /* NaN wins on floats */
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_floating_point<T>::value) return (x != x || y != y) ? (T)NAN : (x > y ? x : y);
    else return x > y ? x : y;
  }
};
struct op_minimum {
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_floating_point<T>::value) return (x != x || y != y) ? (T)NAN : (x < y ? x : y);
    else return x < y ? x : y;
  }
};
struct op_fmod {
  template <typename T> __device__ T operator()(T x, T y) const {
    if constexpr (std::is_same<T, float>::value) return fmodf(x, y);
    else if constexpr (std::is_same<T, double>::value) return fmod(x, y);
    else if constexpr (std::is_same<T, int64_t>::value) return (y == 0 || y == -1) ? 0 : x % y;
    else return y ? (T)(x % y) : (T)0;
  }
};
struct op_eq { template <typename T> __device__ bool operator()(T x, T y) const { return x == y; } };
struct op_ne { template <typename T> __device__ bool operator()(T x, T y) const { return x != y; } };
struct op_lt { template <typename T> __device__ bool operator()(T x, T y) const { return x < y; } };
struct op_le { template <typename T> __device__ bool operator()(T x, T y) const { return x <= y; } };
struct op_gt { template <typename T> __device__ bool operator()(T x, T y) const { return x > y; } };
struct op_ge { template <typename T> __device__ bool operator()(T x, T y) const { return x >= y; } };
/* bool operands (0 or 1): add/max/or are |, mul/min/and are &, xor is ^ */
struct op_or { template <typename T> __device__ T operator()(T x, T y) const { return (T)(x | y); } };
struct op_and { template <typename T> __device__ T operator()(T x, T y) const { return (T)(x & y); } };
struct op_xor { template <typename T> __device__ T operator()(T x, T y) const { return (T)(x ^ y); } };

template <typename TO, typename TI, typename Op>
struct binary_fn {
  TO *out;       /* the result's shape; may alias a */
  const TI *a;   /* out's shape, possibly expanded */
  const TI *b;   /* out's shape, possibly expanded */
  __device__ void operator()(const int64_t *off) const { out[off[0]] = (TO)Op()(a[off[1]], b[off[2]]); }
};

template <typename TO, typename TI, typename Op>
static int run_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b) {
  binary_fn<TO, TI, Op> fn;
  fn.out = (TO *)lark_data_ptr(out);
  fn.a = (const TI *)lark_data_ptr(a);
  fn.b = (const TI *)lark_data_ptr(b);
  const lark_tensor *ts[3] = {out, a, b};
  return lark_cuda_launch<3>(lark_binary_op_name(op), ts, fn);
}

#define CMP_CASES(T)                                                                 \
  case LARK_OP_EQ: return run_binary<uint8_t, T, op_eq>(op, out, a, b);             \
  case LARK_OP_NE: return run_binary<uint8_t, T, op_ne>(op, out, a, b);             \
  case LARK_OP_LT: return run_binary<uint8_t, T, op_lt>(op, out, a, b);             \
  case LARK_OP_LE: return run_binary<uint8_t, T, op_le>(op, out, a, b);             \
  case LARK_OP_GT: return run_binary<uint8_t, T, op_gt>(op, out, a, b);             \
  case LARK_OP_GE: return run_binary<uint8_t, T, op_ge>(op, out, a, b);

#define ARITH_CASES(T)                                                               \
  case LARK_OP_ADD: return run_binary<T, T, op_add>(op, out, a, b);                 \
  case LARK_OP_SUB: return run_binary<T, T, op_sub>(op, out, a, b);                 \
  case LARK_OP_MUL: return run_binary<T, T, op_mul>(op, out, a, b);                 \
  case LARK_OP_POW: return run_binary<T, T, op_pow>(op, out, a, b);                 \
  case LARK_OP_MAXIMUM: return run_binary<T, T, op_maximum>(op, out, a, b);         \
  case LARK_OP_MINIMUM: return run_binary<T, T, op_minimum>(op, out, a, b);         \
  case LARK_OP_FMOD: return run_binary<T, T, op_fmod>(op, out, a, b);

/* The same (op, dtype) pairs as lark_cpu_binary: a, b of one dtype; out of it, or bool for
 * comparisons and logical ops (the front function casts and expands). */
int lark_cuda_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b) {
  if (lark_numel(out) == 0) return 0;
  switch (a->dtype) {
    case LARK_FLOAT32:
      switch (op) {
        ARITH_CASES(float)
        CMP_CASES(float)
        case LARK_OP_DIV: return run_binary<float, float, op_div>(op, out, a, b);
        default: break;
      }
      break;
    case LARK_FLOAT64:
      switch (op) {
        ARITH_CASES(double)
        CMP_CASES(double)
        case LARK_OP_DIV: return run_binary<double, double, op_div>(op, out, a, b);
        default: break;
      }
      break;
    case LARK_INT64:
      switch (op) {
        ARITH_CASES(int64_t)
        CMP_CASES(int64_t)
        default: break;
      }
      break;
    case LARK_UINT8:
      switch (op) {
        ARITH_CASES(uint8_t)
        CMP_CASES(uint8_t)
        default: break;
      }
      break;
    case LARK_BOOL:
      switch (op) {
        case LARK_OP_ADD: case LARK_OP_MAXIMUM: case LARK_OP_OR: return run_binary<uint8_t, uint8_t, op_or>(op, out, a, b);
        case LARK_OP_MUL: case LARK_OP_MINIMUM: case LARK_OP_AND: return run_binary<uint8_t, uint8_t, op_and>(op, out, a, b);
        case LARK_OP_XOR: return run_binary<uint8_t, uint8_t, op_xor>(op, out, a, b);
        CMP_CASES(uint8_t)
        default: break;
      }
      break;
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for %s tensors", lark_binary_op_name(op),
                        lark_dtype_name(a->dtype));
}

/* ---- unary ---------------------------------------------------------------------------------- */

/* One element of op OP on dtype DT, with the formula of lark_cpu_unary (core/ops/elementwise.c)
 * for the same (op, dtype) pair; unary_defined says which pairs exist (the front function has cast
 * integer inputs to float32 for exp, log, sqrt, ...). IEEE-exact ops (neg, abs, sqrt, 1 / sqrt,
 * floor, ceil, round half to even, reciprocal, square, relu, sign) give the CPU's bits: nvcc
 * divides and takes square roots correctly rounded and flushes no denormals unless told to. exp,
 * log, sin, cos, tanh and sigmoid are within a few ulp of the CPU's (its float32 exp, sigmoid and
 * tanh are vecmath.h's polynomials, CUDA's are its libdevice functions). */
__host__ __device__ constexpr bool unary_is_float(int dt) { return dt == LARK_FLOAT32 || dt == LARK_FLOAT64; }

__host__ __device__ constexpr bool unary_defined(int op, int dt) {
  return op == LARK_OP_NOT ? dt == LARK_BOOL
         : unary_is_float(dt) ? true
                              : (op == LARK_OP_NEG || op == LARK_OP_ABS || op == LARK_OP_RELU || op == LARK_OP_FLOOR ||
                                 op == LARK_OP_CEIL || op == LARK_OP_ROUND || op == LARK_OP_SIGN || op == LARK_OP_SQUARE);
}

/* fm_exp(x) is expf for float and exp for double, and so on: the libm function of x's precision. */
#define LARK_FLOAT_FN(name)                                                          \
  template <typename T> __device__ __forceinline__ T fm_##name(T x) {                \
    if constexpr (std::is_same<T, float>::value) return name##f(x);                  \
    else return name(x);                                                             \
  }
LARK_FLOAT_FN(fabs) LARK_FLOAT_FN(exp) LARK_FLOAT_FN(log) LARK_FLOAT_FN(sqrt) LARK_FLOAT_FN(sin) LARK_FLOAT_FN(cos)
LARK_FLOAT_FN(tanh) LARK_FLOAT_FN(floor) LARK_FLOAT_FN(ceil) LARK_FLOAT_FN(rint)
#undef LARK_FLOAT_FN

template <int OP, int DT>
__device__ __forceinline__ typename storage_of<DT>::type unary_elem(typename storage_of<DT>::type x) {
  typedef typename storage_of<DT>::type T;
  if constexpr (OP == LARK_OP_NOT) {
    return (T)!x;
  } else if constexpr (unary_is_float(DT)) {
    if constexpr (OP == LARK_OP_NEG) return -x;
    else if constexpr (OP == LARK_OP_ABS) return fm_fabs(x);
    else if constexpr (OP == LARK_OP_EXP) return fm_exp(x);
    else if constexpr (OP == LARK_OP_LOG) return fm_log(x);
    else if constexpr (OP == LARK_OP_SQRT) return fm_sqrt(x);
    else if constexpr (OP == LARK_OP_RSQRT) return (T)1 / fm_sqrt(x); /* not rsqrt: its bits differ */
    else if constexpr (OP == LARK_OP_SIN) return fm_sin(x);
    else if constexpr (OP == LARK_OP_COS) return fm_cos(x);
    else if constexpr (OP == LARK_OP_TANH) return fm_tanh(x);
    else if constexpr (OP == LARK_OP_SIGMOID) return (T)1 / ((T)1 + fm_exp(-x));
    else if constexpr (OP == LARK_OP_RELU) return x > 0 ? x : (x != x ? x : (T)0); /* NaN stays NaN */
    else if constexpr (OP == LARK_OP_FLOOR) return fm_floor(x);
    else if constexpr (OP == LARK_OP_CEIL) return fm_ceil(x);
    else if constexpr (OP == LARK_OP_ROUND) return fm_rint(x); /* half to even, as nearbyint */
    else if constexpr (OP == LARK_OP_SIGN) return (T)((x > 0) - (x < 0)) + (x != x ? x : (T)0); /* NaN -> NaN */
    else if constexpr (OP == LARK_OP_RECIPROCAL) return (T)1 / x;
    else return x * x; /* LARK_OP_SQUARE */
  } else { /* int64, uint8, bool (0 or 1): wrapping arithmetic, as the CPU's */
    if constexpr (OP == LARK_OP_NEG) {
      if constexpr (DT == LARK_INT64) return (T)(0 - (uint64_t)x);
      else if constexpr (DT == LARK_UINT8) return (T)(0u - x);
      else return x;
    } else if constexpr (OP == LARK_OP_ABS) {
      if constexpr (DT == LARK_INT64) return x < 0 ? (T)(0 - (uint64_t)x) : x; /* abs(INT64_MIN) wraps to itself */
      else return x;
    } else if constexpr (OP == LARK_OP_RELU) {
      return x > 0 ? x : (T)0;
    } else if constexpr (OP == LARK_OP_SIGN) {
      if constexpr (DT == LARK_INT64) return (T)((x > 0) - (x < 0));
      else return (T)(x > 0);
    } else if constexpr (OP == LARK_OP_SQUARE) {
      return (T)(int64_t)((uint64_t)(int64_t)x * (uint64_t)(int64_t)x);
    } else { /* floor, ceil, round of an integer */
      return x;
    }
  }
}

template <int OP, int DT>
struct unary_fn {
  typename storage_of<DT>::type *out;      /* a's shape; may alias a */
  const typename storage_of<DT>::type *a;  /* out's shape */
  __device__ void operator()(const int64_t *off) const { out[off[0]] = unary_elem<OP, DT>(a[off[1]]); }
};

template <int OP, int DT>
static int run_unary(lark_tensor *out, const lark_tensor *a) {
  typedef typename storage_of<DT>::type T;
  unary_fn<OP, DT> fn;
  fn.out = (T *)lark_data_ptr(out);
  fn.a = (const T *)lark_data_ptr(a);
  const lark_tensor *ts[2] = {out, a};
  return lark_cuda_launch<2>(lark_unary_op_name((lark_unary_op)OP), ts, fn);
}

/* The op's case for dtype DT: runs the kernel where the pair exists, else falls to the error. */
#define UNARY_CASE(OPC)                                                                       \
  case OPC:                                                                                    \
    if constexpr (unary_defined(OPC, DT)) return run_unary<OPC, DT>(out, a);                  \
    else break;

template <int DT>
static int unary_for(lark_unary_op op, lark_tensor *out, const lark_tensor *a) {
  switch (op) {
    UNARY_CASE(LARK_OP_NEG) UNARY_CASE(LARK_OP_ABS) UNARY_CASE(LARK_OP_EXP) UNARY_CASE(LARK_OP_LOG)
    UNARY_CASE(LARK_OP_SQRT) UNARY_CASE(LARK_OP_RSQRT) UNARY_CASE(LARK_OP_SIN) UNARY_CASE(LARK_OP_COS)
    UNARY_CASE(LARK_OP_TANH) UNARY_CASE(LARK_OP_SIGMOID) UNARY_CASE(LARK_OP_RELU) UNARY_CASE(LARK_OP_FLOOR)
    UNARY_CASE(LARK_OP_CEIL) UNARY_CASE(LARK_OP_ROUND) UNARY_CASE(LARK_OP_SIGN) UNARY_CASE(LARK_OP_RECIPROCAL)
    UNARY_CASE(LARK_OP_SQUARE)
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for %s tensors", lark_unary_op_name(op),
                        lark_dtype_name(a->dtype));
}
#undef UNARY_CASE

int lark_cuda_unary(lark_unary_op op, lark_tensor *out, const lark_tensor *a) {
  if (lark_numel(out) == 0) return 0;
  /* logical_not reads and writes bytes whatever the input's dtype was (the front cast it to bool) */
  if (op == LARK_OP_NOT) return run_unary<LARK_OP_NOT, LARK_BOOL>(out, a);
  switch (a->dtype) {
    case LARK_FLOAT32: return unary_for<LARK_FLOAT32>(op, out, a);
    case LARK_FLOAT64: return unary_for<LARK_FLOAT64>(op, out, a);
    case LARK_INT64: return unary_for<LARK_INT64>(op, out, a);
    case LARK_UINT8: return unary_for<LARK_UINT8>(op, out, a);
    case LARK_BOOL: return unary_for<LARK_BOOL>(op, out, a);
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "%s: not defined for %s tensors", lark_unary_op_name(op),
                        lark_dtype_name(a->dtype));
}

/* ---- clamp ---------------------------------------------------------------------------------- */

/* min(max(x, lo), hi) as PyTorch defines it (hi wins when lo > hi). Floats: a NaN element stays
 * NaN, a NaN bound means "no bound" (has_lo, has_hi false), and the bounds are rounded to T once
 * on the host, exactly as the CPU's (T)lo. Integers: the bounds were rounded inward and saturated
 * on the host, with has_lo and has_hi true. */
template <typename T>
struct clamp_fn {
  T *out;      /* a's shape; may alias a */
  const T *a;  /* out's shape */
  T lo, hi;
  bool has_lo, has_hi;
  __device__ void operator()(const int64_t *off) const {
    T x = a[off[1]];
    if (x != x) {
      out[off[0]] = x;
      return;
    }
    T y = has_lo && x < lo ? lo : x;
    out[off[0]] = has_hi && y > hi ? hi : y;
  }
};

template <typename T>
static int run_clamp(lark_tensor *out, const lark_tensor *a, T lo, T hi, bool has_lo, bool has_hi) {
  clamp_fn<T> fn;
  fn.out = (T *)lark_data_ptr(out);
  fn.a = (const T *)lark_data_ptr(a);
  fn.lo = lo;
  fn.hi = hi;
  fn.has_lo = has_lo;
  fn.has_hi = has_hi;
  const lark_tensor *ts[2] = {out, a};
  return lark_cuda_launch<2>("clamp", ts, fn);
}

int lark_cuda_clamp(lark_tensor *out, const lark_tensor *a, double lo, double hi) {
  if (lark_numel(out) == 0) return 0;
  bool has_lo = lo == lo, has_hi = hi == hi;
  switch (a->dtype) {
    case LARK_FLOAT32:
      return run_clamp<float>(out, a, has_lo ? (float)lo : 0.0f, has_hi ? (float)hi : 0.0f, has_lo, has_hi);
    case LARK_FLOAT64: return run_clamp<double>(out, a, lo, hi, has_lo, has_hi);
    case LARK_INT64: {
      /* the CPU's rounding of the bounds, to the digit: inward, saturating beyond +-9.2e18 */
      int64_t l = has_lo ? (lo <= -9.2e18 ? INT64_MIN : lo >= 9.2e18 ? INT64_MAX : (int64_t)ceil(lo)) : INT64_MIN;
      int64_t h = has_hi ? (hi <= -9.2e18 ? INT64_MIN : hi >= 9.2e18 ? INT64_MAX : (int64_t)floor(hi)) : INT64_MAX;
      return run_clamp<int64_t>(out, a, l, h, true, true);
    }
    case LARK_UINT8: {
      double l = has_lo ? fmax(0, fmin(255, ceil(lo))) : 0, h = has_hi ? fmax(0, fmin(255, floor(hi))) : 255;
      return run_clamp<uint8_t>(out, a, (uint8_t)l, (uint8_t)h, true, true);
    }
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "clamp: not defined for %s tensors", lark_dtype_name(a->dtype));
}

/* ---- where ---------------------------------------------------------------------------------- */

/* Moves bits: one kernel per element size serves every dtype of that size, as on the CPU. */
template <typename T>
struct where_fn {
  T *out;              /* the broadcast shape */
  const uint8_t *cond; /* bool, out's shape, possibly expanded */
  const T *a;          /* out's shape, possibly expanded */
  const T *b;          /* out's shape, possibly expanded */
  __device__ void operator()(const int64_t *off) const { out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]]; }
};

template <typename T>
static int run_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b) {
  where_fn<T> fn;
  fn.out = (T *)lark_data_ptr(out);
  fn.cond = (const uint8_t *)lark_data_ptr(cond);
  fn.a = (const T *)lark_data_ptr(a);
  fn.b = (const T *)lark_data_ptr(b);
  const lark_tensor *ts[4] = {out, cond, a, b};
  return lark_cuda_launch<4>("where", ts, fn);
}

int lark_cuda_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b) {
  if (lark_numel(out) == 0) return 0;
  switch (lark_dtype_size(a->dtype)) {
    case 8: return run_where<uint64_t>(out, cond, a, b);
    case 4: return run_where<uint32_t>(out, cond, a, b);
    case 1: return run_where<uint8_t>(out, cond, a, b);
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "where: not defined for %s tensors", lark_dtype_name(a->dtype));
}
