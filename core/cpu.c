/* cpu.c: the CPU backend: memory, copies with dtype conversion, fill, and the kernel table.
 * The kernels of each op family live beside their front functions in core/ops/. */
#include <cblas.h>
#include <malloc.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu.h"

/* Big blocks are cached: glibc hands every block over 32 MB to mmap and back, so a training loop
 * that makes a 64 MB temporary each step would fault (and the kernel zero) fresh pages every
 * time, which halves the speed of elementwise ops. Freed blocks of at least CACHE_MIN bytes are
 * kept, up to CACHE_CAP bytes in all, and reused for a request of at most their size and at least
 * half of it. lark_cpu_empty_cache() returns them. */
#define CACHE_MIN ((size_t)1 << 20)
#define CACHE_SLOTS 64
static size_t cache_cap = (size_t)2 << 30;
static struct {
  void *ptr;
  size_t size;
} cache[CACHE_SLOTS];
static size_t cache_bytes;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void *cache_take(size_t n) {
  int best = -1;
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].ptr && cache[i].size >= n && cache[i].size / 2 <= n && (best < 0 || cache[i].size < cache[best].size))
      best = i;
  void *p = NULL;
  if (best >= 0) {
    p = cache[best].ptr;
    cache_bytes -= cache[best].size;
    cache[best].ptr = NULL;
  }
  pthread_mutex_unlock(&cache_lock);
  return p;
}

static bool cache_put(void *p, size_t n) {
  bool kept = false;
  pthread_mutex_lock(&cache_lock);
  if (cache_bytes + n <= cache_cap)
    for (int i = 0; i < CACHE_SLOTS && !kept; i++)
      if (!cache[i].ptr) {
        cache[i].ptr = p;
        cache[i].size = n;
        cache_bytes += n;
        kept = true;
      }
  pthread_mutex_unlock(&cache_lock);
  return kept;
}

void lark_cpu_empty_cache(void) {
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SLOTS; i++) {
    free(cache[i].ptr);
    cache[i].ptr = NULL;
  }
  cache_bytes = 0;
  pthread_mutex_unlock(&cache_lock);
}

static int cpu_malloc(lark_device dev, size_t nbytes, void **ptr) {
  /* 64-byte alignment for AVX-512 loads; size rounded up as aligned_alloc requires */
  size_t rounded = (nbytes + 63) & ~(size_t)63;
  *ptr = NULL;
  if (rounded >= CACHE_MIN) *ptr = cache_take(rounded);
  if (!*ptr && rounded >= nbytes) *ptr = aligned_alloc(64, rounded);
  if (!*ptr && rounded >= CACHE_MIN) { /* the cache may hold what the system needs back */
    lark_cpu_empty_cache();
    *ptr = aligned_alloc(64, rounded);
  }
  if (!*ptr)
    return lark_set_error(LARK_ERR_NOMEM, "empty: cannot allocate %.3g GB on the CPU (out of memory)",
                          (double)nbytes / 1e9);
  return 0;
}

static void cpu_free(lark_device dev, void *ptr) {
  size_t n = malloc_usable_size(ptr);
  if (n >= CACHE_MIN && cache_put(ptr, n)) return;
  free(ptr);
}

static int cpu_memcpy_host(lark_device dev, void *dst, const void *src, size_t nbytes, int to_device) {
  memcpy(dst, src, nbytes);
  return 0;
}

/* Float to integer without C's undefined behaviour on NaN and out-of-range values. */
static inline int64_t f2i(double x) {
  if (x != x) return 0;
  if (x >= 9.2233720368547748e18) return INT64_MAX;
  if (x <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)x;
}

#define CVT_f32(x) ((float)(x))
#define CVT_f64(x) ((double)(x))
#define CVT_i64(x) ((int64_t)(x))
#define CVT_u8(x) ((uint8_t)(x))
#define CVT_b(x) ((uint8_t)((x) != 0))

/* one strided loop per (dst, src) dtype pair; CONV converts one element */
#define COPY_LOOP(TD, TS, CONV)                                                                   \
  do {                                                                                           \
    int64_t nwork = it.nwork;                                                                    \
    int64_t sd = it.stride[0][it.ndim - 1], ss = it.stride[1][it.ndim - 1];                      \
    _Pragma("omp parallel for if (it.parallel)") for (int64_t w_ = 0; w_ < nwork; w_++) { \
      int64_t off[2], inner;                                                                            \
      lark_iter_work(&it, w_, off, &inner);                                                                \
      TD *d = (TD *)it.data[0] + off[0];                                                         \
      const TS *s = (const TS *)it.data[1] + off[1];                                             \
      if (sd == 1 && ss == 1)                                                                    \
        for (int64_t i = 0; i < inner; i++) d[i] = CONV(s[i]);                                   \
      else                                                                                       \
        for (int64_t i = 0; i < inner; i++) d[i * sd] = CONV(s[i * ss]);                         \
    }                                                                                            \
  } while (0)

#define F2I(x) f2i((double)(x))
#define F2U8(x) ((uint8_t)f2i((double)(x)))

static int cpu_copy(lark_tensor *dst, const lark_tensor *src) {
  const lark_tensor *ts[2] = {dst, src};
  lark_iter it;
  lark_iter_init(&it, 2, ts);
  if (it.numel == 0) return 0;
  /* plain contiguous copy of one dtype: memcpy in parallel slabs */
  if (dst->dtype == src->dtype && it.ndim == 1 && it.stride[0][0] == 1 && it.stride[1][0] == 1) {
    size_t es = lark_dtype_size(dst->dtype), nb = (size_t)it.numel * es;
    int nt = nb > (1u << 20) ? omp_get_max_threads() : 1;
#pragma omp parallel for num_threads(nt)
    for (int k = 0; k < nt; k++) {
      size_t lo = nb / (size_t)nt * (size_t)k, hi = k == nt - 1 ? nb : nb / (size_t)nt * (size_t)(k + 1);
      memcpy(it.data[0] + lo, it.data[1] + lo, hi - lo);
    }
    return 0;
  }
#define FROM(TS, TOF32, TOF64, TOI64, TOU8, TOB)                 \
  switch (dst->dtype) {                                         \
    case LARK_FLOAT32: COPY_LOOP(float, TS, TOF32); break;      \
    case LARK_FLOAT64: COPY_LOOP(double, TS, TOF64); break;     \
    case LARK_INT64: COPY_LOOP(int64_t, TS, TOI64); break;      \
    case LARK_UINT8: COPY_LOOP(uint8_t, TS, TOU8); break;       \
    case LARK_BOOL: COPY_LOOP(uint8_t, TS, TOB); break;         \
    default: break;                                             \
  }
  switch (src->dtype) {
    case LARK_FLOAT32: FROM(float, CVT_f32, CVT_f64, F2I, F2U8, CVT_b); break;
    case LARK_FLOAT64: FROM(double, CVT_f32, CVT_f64, F2I, F2U8, CVT_b); break;
    case LARK_INT64: FROM(int64_t, CVT_f32, CVT_f64, CVT_i64, CVT_u8, CVT_b); break;
    case LARK_UINT8: FROM(uint8_t, CVT_f32, CVT_f64, CVT_i64, CVT_u8, CVT_b); break;
    case LARK_BOOL: FROM(uint8_t, CVT_f32, CVT_f64, CVT_i64, CVT_u8, CVT_b); break;
    default: break;
  }
#undef FROM
  return 0;
}

#define FILL_LOOP(T, V)                                                                          \
  do {                                                                                           \
    T v = (V);                                                                                   \
    int64_t nwork = it.nwork, sd = it.stride[0][it.ndim - 1];                                 \
    _Pragma("omp parallel for if (it.parallel)") for (int64_t w_ = 0; w_ < nwork; w_++) { \
      int64_t off[1], inner;                                                                            \
      lark_iter_work(&it, w_, off, &inner);                                                                \
      T *d = (T *)it.data[0] + off[0];                                                           \
      if (sd == 1)                                                                               \
        for (int64_t i = 0; i < inner; i++) d[i] = v;                                            \
      else                                                                                       \
        for (int64_t i = 0; i < inner; i++) d[i * sd] = v;                                       \
    }                                                                                            \
  } while (0)

static int cpu_fill(lark_tensor *t, double value) {
  const lark_tensor *ts[1] = {t};
  lark_iter it;
  lark_iter_init(&it, 1, ts);
  switch (t->dtype) {
    case LARK_FLOAT32: FILL_LOOP(float, (float)value); break;
    case LARK_FLOAT64: FILL_LOOP(double, value); break;
    case LARK_INT64: FILL_LOOP(int64_t, f2i(value)); break;
    case LARK_UINT8: FILL_LOOP(uint8_t, (uint8_t)f2i(value)); break;
    case LARK_BOOL: FILL_LOOP(uint8_t, (uint8_t)(value != 0)); break;
    default: break;
  }
  return 0;
}

const lark_backend lark_cpu_backend = {
    .name = "cpu",
    .malloc = cpu_malloc,
    .free = cpu_free,
    .memcpy_host = cpu_memcpy_host,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .binary = lark_cpu_binary,
    .unary = lark_cpu_unary,
    .clamp = lark_cpu_clamp,
    .where = lark_cpu_where,
    .gemm = lark_cpu_gemm,
};

/* ---- threads -------------------------------------------------------------------------------- */

void lark_set_num_threads(int n) {
  if (n < 1) return;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}
int lark_get_num_threads(void) { return omp_get_max_threads(); }
