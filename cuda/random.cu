/*
 * random.cu: core/random.c's Philox 4x32-10 streams on the GPU: uniform, normal, randint and
 * bernoulli fills (with a number p, or a tensor of them).
 *
 * The scheme is random.c's, which every backend must follow: element i of a draw (row-major over
 * the tensor's shape, whatever its strides) takes the four words w0..w3 of the Philox block with
 * counter {lo32(offset + i), hi32(offset + i), 0, 0} and key {lo32(seed), hi32(seed)}, and turns
 * them into a value with random.c's formulas, copied below operation by operation. The front
 * functions in random.c check the arguments and advance the generator; these kernels only draw.
 *
 * Which numbers come out bit for bit the same as on the CPU:
 *   - Philox words, randint, bernoulli and randperm's keys: integer arithmetic, always identical;
 *   - uniform: the same float64 arithmetic, low + (high - low) * u as one fma() on both sides
 *     (written out in random.c and here, so neither compiler's contraction decides it); the same
 *     holds for normal's mean + std * z;
 *   - normal: Box-Muller needs log and cos, and CUDA's float64 log and cos (within 1 and 2 ulp of
 *     the exact value) are not glibc's (nearly correctly rounded), so a float64 normal can differ
 *     from the CPU's in its last bit or two; float32 normals, rounded from those, agree except in
 *     the rare case where the two float64 values straddle a float32 rounding boundary.
 */
#include <math.h>
#include <string.h>
#include <type_traits>

#include "cuda.h"

/* ---- Philox 4x32-10 (random.c's constants and rounds) --------------------------------------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct philox_key {
  uint32_t k0, k1;
};

/* w (4 words) = Philox4x32-10 of the counter {lo32(j), hi32(j), 0, 0} under key. */
__device__ __forceinline__ void block_at(philox_key key, uint64_t j, uint32_t w[4]) {
  uint32_t c0 = (uint32_t)j, c1 = (uint32_t)(j >> 32), c2 = 0, c3 = 0, k0 = key.k0, k1 = key.k1;
#pragma unroll
  for (int r = 0; r < 10; r++) {
    /* the high and low halves of the 64-bit products M0 * c0 and M1 * c2 */
    uint32_t hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
    uint32_t hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
    uint32_t x0 = hi1 ^ c1 ^ k0, x2 = hi0 ^ c3 ^ k1;
    c0 = x0;
    c1 = lo1;
    c2 = x2;
    c3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  w[0] = c0;
  w[1] = c1;
  w[2] = c2;
  w[3] = c3;
}

/* ---- words to values (random.c's formulas) ----------------------------------------------------------- */

__device__ __forceinline__ uint64_t bits53(uint32_t a, uint32_t b) { return ((uint64_t)a << 32 | b) >> 11; }

__device__ __forceinline__ float u01_f32(const uint32_t w[4]) { return (float)(w[0] >> 8) * 0x1p-24f; }
__device__ __forceinline__ double u01_f64(const uint32_t w[4]) { return (double)bits53(w[0], w[1]) * 0x1p-53; }

/* Box-Muller in float64; u1 in (0, 1] so the log is finite. (2 * pi) is folded first, as GCC folds
 * random.c's 2.0 * M_PI * u2; the product of the root and the cosine is a plain multiply there too. */
__device__ __forceinline__ double std_normal(const uint32_t w[4]) {
  double u1 = (double)(bits53(w[0], w[1]) + 1) * 0x1p-53;
  double u2 = (double)bits53(w[2], w[3]) * 0x1p-53;
  return __dmul_rn(sqrt(-2.0 * log(u1)), cos((2.0 * M_PI) * u2));
}

/* floor(x * range / 2^128) for the 128-bit x = w0w1w2w3, from 64-bit halves:
 * (xhi * range + (xlo * range >> 64)) >> 64. */
__device__ __forceinline__ uint64_t below(const uint32_t w[4], uint64_t range) {
  uint64_t xhi = (uint64_t)w[0] << 32 | w[1], xlo = (uint64_t)w[2] << 32 | w[3];
  uint64_t hh = __umul64hi(xhi, range), hl = xhi * range, lh = __umul64hi(xlo, range);
  uint64_t sum = hl + lh;
  return hh + (sum < hl); /* the carry out of the low word */
}

/* What each kernel needs to turn a block into a value. */
struct dist_params {
  int kind;       /* lark_dist_kind */
  double a, b;    /* uniform: low, high; normal: mean, std; bernoulli: p */
  float top32;    /* uniform float32: the largest float below high (and >= low) */
  double top64;   /* uniform float64: the same in double */
  uint64_t low;   /* randint: low, as unsigned (the sum wraps exactly as random.c's) */
  uint64_t range;
};

/* Element value of dtype T from block w, as random.c's gen_chunk writes it. */
template <typename T, bool IS_BOOL>
__device__ __forceinline__ T value_of(const uint32_t w[4], const dist_params &d) {
  if constexpr (std::is_floating_point<T>::value) {
    if (d.kind == LARK_DIST_UNIFORM) {
      if constexpr (std::is_same<T, float>::value) {
        float v = (float)fma(d.b - d.a, (double)u01_f32(w), d.a);
        return v > d.top32 ? d.top32 : v;
      } else {
        double v = fma(d.b - d.a, u01_f64(w), d.a);
        return v > d.top64 ? d.top64 : v;
      }
    }
    if (d.kind == LARK_DIST_NORMAL) return (T)fma(d.b, std_normal(w), d.a);
  }
  if (d.kind == LARK_DIST_RANDINT) {
    int64_t v = (int64_t)(d.low + below(w, d.range));
    if constexpr (IS_BOOL) return (T)(v != 0);
    else return (T)v;
  }
  /* bernoulli */
  return (T)(u01_f64(w) < d.a);
}

/* ---- kernels --------------------------------------------------------------------------------------- */

/* dst (t's view) element i = value from block j0 + i; g: t's coalesced geometry (offsets of the
 * row-major index i), or contiguous when t is. Grid-stride over i. */
template <typename T, bool IS_BOOL>
__global__ void random_fill_kernel(lark_cuda_geom<1> g, bool contiguous, int64_t n, T *dst /* t's data */,
                                   philox_key key, uint64_t j0, dist_params d) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    if (contiguous) off[0] = i;
    else lark_cuda_offsets<uint64_t, 1>(g, (uint64_t)i, off);
    uint32_t w[4];
    block_at(key, j0 + (uint64_t)i, w);
    dst[off[0]] = value_of<T, IS_BOOL>(w, d);
  }
}

/* out (n, contiguous) element i = (u01_f64(block j0 + i) < p[i]), p read through g (p's view); an
 * invalid p[i] lowers *bad to i instead. */
template <typename T>
__global__ void bernoulli_kernel(lark_cuda_geom<1> g, bool contiguous, int64_t n, T *out /* (n) */,
                                 const T *p /* p's data */, philox_key key, uint64_t j0,
                                 unsigned long long *bad /* (1) */) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    if (contiguous) off[0] = i;
    else lark_cuda_offsets<uint64_t, 1>(g, (uint64_t)i, off);
    double pv = (double)p[off[0]];
    if (!(pv >= 0 && pv <= 1)) {
      atomicMin(bad, (unsigned long long)i);
      continue;
    }
    uint32_t w[4];
    block_at(key, j0 + (uint64_t)i, w);
    out[i] = (T)(u01_f64(w) < pv);
  }
}

/* ---- host side -------------------------------------------------------------------------------------- */

/* t's coalesced geometry (lark_iter, whose dim order keeps the row-major index), innermost first. */
static void geom_of(const lark_tensor *t, lark_cuda_geom<1> *g, bool *contiguous) {
  const lark_tensor *ts[1] = {t};
  lark_iter it;
  lark_iter_init(&it, 1, ts);
  *contiguous = it.ndim == 1 && it.stride[0][0] == 1;
  g->ndim = it.ndim;
  for (int d = 0; d < LARK_MAX_DIMS; d++) {
    int src = it.ndim - 1 - d;
    g->shape[d] = d < it.ndim ? it.shape[src] : 1;
    g->stride[0][d] = d < it.ndim ? it.stride[0][src] : 0;
  }
}

static philox_key key_of(uint64_t seed) {
  philox_key k;
  k.k0 = (uint32_t)seed;
  k.k1 = (uint32_t)(seed >> 32);
  return k;
}

template <typename T, bool IS_BOOL>
static int launch_fill(lark_tensor *t, const dist_params &d, uint64_t seed, uint64_t offset) {
  lark_cuda_geom<1> g;
  bool contiguous;
  geom_of(t, &g, &contiguous);
  int64_t n = lark_numel(t);
  random_fill_kernel<T, IS_BOOL><<<lark_cuda_grid(n, LARK_CUDA_THREADS), LARK_CUDA_THREADS>>>(
      g, contiguous, n, (T *)lark_data_ptr(t), key_of(seed), offset, d);
  return lark_cuda_check(cudaGetLastError(), "random", "kernel launch failed");
}

int lark_cuda_random_fill(lark_tensor *t, const lark_dist *ds, uint64_t seed, uint64_t offset) {
  if (lark_numel(t) == 0) return 0;
  if (lark_cuda_set_device(lark_tensor_device(t), "random")) return lark_error_code();
  dist_params d;
  d.kind = (int)ds->kind;
  d.a = ds->a;
  d.b = ds->b;
  d.low = (uint64_t)ds->low;
  d.range = ds->range;
  /* uniform's upper clamp, on the host exactly as random.c computes it */
  float lo32 = (float)ds->a, top32 = nextafterf((float)ds->b, -INFINITY);
  d.top32 = top32 < lo32 ? lo32 : top32;
  double top64 = nextafter(ds->b, -INFINITY);
  d.top64 = top64 < ds->a ? ds->a : top64;
  bool float_only = ds->kind == LARK_DIST_UNIFORM || ds->kind == LARK_DIST_NORMAL;
  switch (t->dtype) {
    case LARK_FLOAT32: return launch_fill<float, false>(t, d, seed, offset);
    case LARK_FLOAT64: return launch_fill<double, false>(t, d, seed, offset);
    case LARK_INT64: if (!float_only) return launch_fill<int64_t, false>(t, d, seed, offset); break;
    case LARK_UINT8: if (!float_only) return launch_fill<uint8_t, false>(t, d, seed, offset); break;
    case LARK_BOOL: if (!float_only) return launch_fill<uint8_t, true>(t, d, seed, offset); break;
    default: break;
  }
  return lark_set_error(LARK_ERR_DTYPE, "random: cannot draw this distribution into a %s tensor",
                        lark_dtype_name(t->dtype));
}

template <typename T>
static int launch_bernoulli(lark_tensor *out, const lark_tensor *p, uint64_t seed, uint64_t offset,
                            unsigned long long *bad) {
  lark_cuda_geom<1> g;
  bool contiguous;
  geom_of(p, &g, &contiguous);
  int64_t n = lark_numel(p);
  bernoulli_kernel<T><<<lark_cuda_grid(n, LARK_CUDA_THREADS), LARK_CUDA_THREADS>>>(
      g, contiguous, n, (T *)lark_data_ptr(out), (const T *)lark_data_ptr(p), key_of(seed), offset, bad);
  return lark_cuda_check(cudaGetLastError(), "bernoulli", "kernel launch failed");
}

int lark_cuda_bernoulli(lark_tensor *out, const lark_tensor *p, uint64_t seed, uint64_t offset, int64_t *bad,
                        double *bad_value) {
  const char *op = "bernoulli";
  *bad = -1;
  *bad_value = 0;
  int64_t n = lark_numel(p);
  if (n == 0) return 0;
  lark_device dev = lark_tensor_device(out);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  /* the first invalid index, lowered by atomicMin from all ones (none) */
  int64_t one = 1;
  lark_tensor *flag = lark_empty(1, &one, LARK_INT64, &dev);
  if (!flag) return lark_error_code();
  unsigned long long *dflag = (unsigned long long *)lark_data_ptr(flag), hflag = 0;
  int rc = lark_cuda_check(cudaMemsetAsync(dflag, 0xff, sizeof *dflag, 0), op, "cudaMemsetAsync");
  if (!rc) {
    switch (p->dtype) {
      case LARK_FLOAT32: rc = launch_bernoulli<float>(out, p, seed, offset, dflag); break;
      case LARK_FLOAT64: rc = launch_bernoulli<double>(out, p, seed, offset, dflag); break;
      case LARK_INT64: rc = launch_bernoulli<int64_t>(out, p, seed, offset, dflag); break;
      case LARK_UINT8:
      case LARK_BOOL: rc = launch_bernoulli<uint8_t>(out, p, seed, offset, dflag); break;
      default: rc = lark_set_error(LARK_ERR_DTYPE, "%s: unknown dtype %d", op, (int)p->dtype); break;
    }
  }
  /* synchronous on the default stream: waits for the kernel */
  if (!rc) rc = lark_cuda_check(cudaMemcpy(&hflag, dflag, sizeof hflag, cudaMemcpyDeviceToHost), op, "cudaMemcpy cuda -> host");
  lark_tensor_release(flag);
  if (rc || hflag == ~0ull) return rc;
  /* an invalid p: read that one element back to name it */
  *bad = (int64_t)hflag;
  size_t es = lark_dtype_size(p->dtype);
  unsigned char buf[8] = {0};
  /* lark_offset_of counts from the storage's start, lark_data_ptr from the view's first element */
  const char *src = (const char *)lark_data_ptr(p) + (lark_offset_of(p, *bad) - p->offset) * (int64_t)es;
  rc = lark_cuda_check(cudaMemcpy(buf, src, es, cudaMemcpyDeviceToHost), op, "cudaMemcpy cuda -> host");
  if (rc) return rc;
  switch (p->dtype) {
    case LARK_FLOAT32: { float v; memcpy(&v, buf, sizeof v); *bad_value = v; break; }
    case LARK_FLOAT64: { double v; memcpy(&v, buf, sizeof v); *bad_value = v; break; }
    case LARK_INT64: { int64_t v; memcpy(&v, buf, sizeof v); *bad_value = (double)v; break; }
    default: *bad_value = buf[0]; break;
  }
  return 0;
}
