/* check.h: what every C test in spec/c shares, header-only (include it as "check.h", once, in the
 * test's only translation unit): the CHECK macro and its counters, the end-of-run report, a seeded
 * xorshift64 generator, and naive readers and writers of any strided view that the references use
 * instead of core's own iteration. Uses only lark.h. */
#ifndef LARK_SPEC_CHECK_H
#define LARK_SPEC_CHECK_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lark.h"
#include "backend.h"

/* ---- checks and the report ------------------------------------------------------------------- */

static int failures, checks;

/* CHECK(cond, fmt, ...): counts one check; when cond is false, counts a failure and prints where,
 * the message and lark_error() (the last error core set, often the reason). */
#define CHECK(cond, ...)                                    \
  do {                                                      \
    checks++;                                               \
    if (!(cond)) {                                          \
      failures++;                                           \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
      fprintf(stderr, __VA_ARGS__);                         \
      fprintf(stderr, " [%s]\n", lark_error());             \
    }                                                       \
  } while (0)

/* The last line of a test: "name: all N checks passed" (returns 0) or "name: F of N checks failed"
 * (returns 1), for main() to return. */
static inline int check_report(const char *name) {
  if (failures) {
    fprintf(stderr, "%s: %d of %d checks failed\n", name, failures, checks);
    return 1;
  }
  printf("%s: all %d checks passed\n", name, checks);
  return 0;
}

/* CHECK_NO_LEAK(start): the CPU backend holds as many bytes as lark_bytes_allocated(LARK_CPU) gave
 * at the start of the test (a macro, so that a failure names the test's line). */
#define CHECK_NO_LEAK(start)                                                                      \
  CHECK(lark_bytes_allocated(LARK_CPU) == (start), "%lld bytes still allocated at the end",      \
        (long long)(lark_bytes_allocated(LARK_CPU) - (start)))

/* lark_error() contains s (for checks of error messages). */
static inline bool error_has(const char *s) { return strstr(lark_error(), s) != NULL; }

/* a within tol * (1 + |e|) of e; NaN only matches NaN and an infinity only itself (tol 0: equal). */
static inline bool near(double a, double e, double tol) {
  if (isnan(e)) return isnan(a);
  if (isinf(e)) return a == e;
  return fabs(a - e) <= tol * (1 + fabs(e));
}

/* ---- random numbers: xorshift64, seeded by each test so that its data does not change ---------- */

static uint64_t check_rng_state = 88172645463325252ull;

static inline void rand_seed(uint64_t seed) { check_rng_state = seed ? seed : 88172645463325252ull; }
static inline uint64_t rand_u64(void) {
  check_rng_state ^= check_rng_state << 13;
  check_rng_state ^= check_rng_state >> 7;
  check_rng_state ^= check_rng_state << 17;
  return check_rng_state;
}
/* Uniform in 0 .. n-1 (n > 0). */
static inline int64_t rand_int(int64_t n) { return (int64_t)(rand_u64() % (uint64_t)n); }
/* Uniform in [0, 1) with a full 53-bit mantissa. */
static inline double rand_unit(void) { return (double)(rand_u64() >> 11) / 9007199254740992.0; }

/* ---- naive element access -------------------------------------------------------------------- */

/* Advances the 0-based coordinate c over shape in row-major order; false once it wraps around. */
static inline bool next_coord(int nd, const int64_t *shape, int64_t *c) {
  for (int d = nd - 1; d >= 0; d--) {
    if (++c[d] < shape[d]) return true;
    c[d] = 0;
  }
  return false;
}

/* The storage index of coordinate c of a view (its offset plus c . strides). */
static inline int64_t offset_of(const lark_tensor *t, const int64_t *c) {
  int64_t off = t->offset;
  for (int d = 0; d < t->ndim; d++) off += c[d] * t->stride[d];
  return off;
}

/* Element i of an array of dtype dt at base, as a double. */
static inline double load_as(lark_dtype dt, const void *base, int64_t i) {
  switch (dt) {
    case LARK_FLOAT32: return ((const float *)base)[i];
    case LARK_FLOAT64: return ((const double *)base)[i];
    case LARK_INT64: return (double)((const int64_t *)base)[i];
    default: return ((const uint8_t *)base)[i];
  }
}

/* Stores v as element i of an array of dtype dt at base, with C's conversions (bools as v != 0). */
static inline void store_as(lark_dtype dt, void *base, int64_t i, double v) {
  switch (dt) {
    case LARK_FLOAT32: ((float *)base)[i] = (float)v; break;
    case LARK_FLOAT64: ((double *)base)[i] = v; break;
    case LARK_INT64: ((int64_t *)base)[i] = (int64_t)v; break;
    case LARK_UINT8: ((uint8_t *)base)[i] = (uint8_t)v; break;
    default: ((uint8_t *)base)[i] = v != 0; break;
  }
}

/* Element at coordinate c of any view, read straight from the storage. (noinline: gcc cannot see
 * that c holds t->ndim coordinates and warns when it is inlined into a caller with a short array.) */
__attribute__((noinline, unused)) static double at(const lark_tensor *t, const int64_t *c) {
  return load_as(t->dtype, t->storage->data, offset_of(t, c));
}

/* Writes v at coordinate c of any view (see store_as). */
__attribute__((noinline, unused)) static void put(lark_tensor *t, const int64_t *c, double v) {
  store_as(t->dtype, t->storage->data, offset_of(t, c), v);
}

/* Element i of a contiguous tensor's data (row-major), read or set with the conversions above. */
static inline double data_get(const lark_tensor *t, int64_t i) { return load_as(t->dtype, lark_data_ptr(t), i); }
static inline void data_set(lark_tensor *t, int64_t i, double v) { store_as(t->dtype, lark_data_ptr(t), i, v); }

/* Element i in row-major order of any view, through lark_get_flat; a failure counts as a failed
 * check (and reads NaN). */
static inline double get_flat(const lark_tensor *t, int64_t i) {
  double v = NAN;
  if (lark_get_flat(t, i, &v) != 0) CHECK(false, "lark_get_flat(%lld)", (long long)i);
  return v;
}

/* lo + (hi - lo) * rand_unit() in every element of any view, in row-major order (an expanded view
 * gets its shared elements rewritten: references read the view afterwards). */
static inline void fill_uniform(lark_tensor *t, double lo, double hi) {
  if (lark_numel(t) == 0) return;
  int64_t c[LARK_MAX_DIMS] = {0};
  do put(t, c, lo + (hi - lo) * rand_unit());
  while (next_coord(t->ndim, t->shape, c));
}

/* got (on a device; read through one host copy) equals want (CPU): dtype, shape, and values (within
 * tol * (1 + |want|), or equal). The device dispatch tests compare every device result this way. */
static inline void expect_on_device(const char *what, const lark_tensor *got, const lark_tensor *want, double tol) {
  char a[128], b[128];
  CHECK(got && want, "%s: no result", what);
  if (!got || !want) return;
  CHECK(lark_tensor_device(got).kind != LARK_CPU, "%s: the result is not on the device", what);
  CHECK(got->dtype == want->dtype, "%s: dtype %s, expected %s", what, lark_dtype_name(got->dtype),
        lark_dtype_name(want->dtype));
  bool same_shape = got->ndim == want->ndim && !memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)got->ndim);
  CHECK(same_shape, "%s: shape %s, expected %s", what, lark_shape_str(got->ndim, got->shape, a, sizeof a),
        lark_shape_str(want->ndim, want->shape, b, sizeof b));
  if (!same_shape) return;
  lark_tensor *host = lark_to(got, got->dtype, &LARK_DEVICE_CPU);
  CHECK(host != NULL, "%s: copy to the host", what);
  if (!host) return;
  int64_t n = lark_numel(want), bad = -1;
  double x = 0, y = 0;
  for (int64_t i = 0; i < n && bad < 0; i++) {
    x = get_flat(host, i);
    y = get_flat(want, i);
    if (!(near(x, y, tol) || x == y)) bad = i;
  }
  lark_tensor_release(host);
  CHECK(bad < 0, "%s: element %lld is %.17g, expected %.17g", what, (long long)bad, x, y);
}

/* ---- for host stand-ins of a device backend (the test_*_dispatch.c tests) -------------------- */

/* The storage offset of the q-th of the elements (row-major order) of n dims of shape and stride:
 * how core/backend.h's reduce geometry lists the kept and the reduced indices. */
static inline int64_t geom_offset(int64_t q, int n, const int64_t *shape, const int64_t *stride) {
  int64_t off = 0;
  for (int d = n - 1; d >= 0; d--) {
    off += (q % shape[d]) * stride[d];
    q /= shape[d];
  }
  return off;
}

/* A reduce field that sums and averages, by backend.h's geometry (what the stand-ins' losses, bias
 * gradients and the specs' sums need); other ops and index outputs are refused. */
static inline int stand_in_reduce(lark_reduce_op op, const lark_tensor *t, const lark_reduce_geom *g,
                                  const lark_reduce_args *args, lark_tensor *out, lark_tensor *out_idx) {
  (void)args;
  if ((op != LARK_RED_SUM && op != LARK_RED_MEAN) || out_idx)
    return lark_set_error(LARK_ERR_UNIMPL, "the stand-in reduces by sums and means only (op %d)", (int)op);
  const char *base = (const char *)lark_data_ptr(t);
  for (int64_t o = 0; o < g->nout; o++) {
    int64_t ko = geom_offset(o, g->nk, g->kshape, g->kstride);
    double d = 0;
    for (int64_t r = 0; r < g->nred; r++) d += load_as(t->dtype, base, ko + geom_offset(r, g->nr, g->rshape, g->rstride));
    if (op == LARK_RED_MEAN) d /= (double)g->nred;
    if (out) store_as(out->dtype, lark_data_ptr(out), o, d);
  }
  return 0;
}

#endif
