/* random.c: random numbers from Philox 4x32-10, a counter-based generator (Salmon et al., "Parallel
 * random numbers: as easy as 1, 2, 3", SC 2011; the Random123 library).
 *
 * Why counter-based: a draw's element i is a pure function of (seed, offset + i), so
 *   - the numbers do not depend on how many threads fill the tensor, or in which order;
 *   - a GPU kernel computing the same function gets the same numbers;
 *   - a generator's whole state is two integers (seed, offset): checkpoints save and replay it.
 *
 * The scheme, which every backend must follow exactly:
 *   element i of a draw (row-major over the tensor's logical shape, whatever its strides) uses
 *     counter = {lo32(offset + i), hi32(offset + i), 0, 0},  key = {lo32(seed), hi32(seed)}
 *   and takes its value from that block's four words w0..w3 alone:
 *     uniform float32: (w0 >> 8) * 2^-24                                in [0, 1)
 *     uniform float64: ((w0 << 32 | w1) >> 11) * 2^-53                  in [0, 1)
 *     normal:          Box-Muller on u1 = (53 bits of w0,w1 + 1) * 2^-53 in (0, 1] (so log(u1) is
 *                      finite) and u2 = 53 bits of w2,w3 * 2^-53, in float64, then rounded
 *     randint:         low + floor(x * range / 2^128) with x = w0w1w2w3 as a 128-bit integer
 *                      (bias at most range / 2^128: none worth caring about, for any range)
 *     bernoulli:       (53 bits of w0,w1) * 2^-53 < p
 *     randperm:        sort i by the 64-bit key w0w1, ties by i
 *   after the draw the generator's offset advances by the element count.
 *
 * The CPU kernels fill chunks of consecutive elements in parallel; contiguous targets are written in
 * place, strided ones through a small buffer. Tensors on other devices go to their backend's
 * `random_fill` and `bernoulli` (backend.h), which compute the same numbers there (cuda/random.cu);
 * a backend without them gets its tensors filled on the CPU and copied over (as factory.c does for
 * sequences), which gives exactly these numbers too. randperm always sorts on the CPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* ---- Philox 4x32-10 ------------------------------------------------------------------------- */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

/* c: 4 words, in place; k0, k1: this round's key */
static inline void philox_round(uint32_t c[4], uint32_t k0, uint32_t k1) {
  uint64_t p0 = (uint64_t)PHILOX_M0 * c[0], p1 = (uint64_t)PHILOX_M1 * c[2];
  uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0, hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
  uint32_t x0 = hi1 ^ c[1] ^ k0, x2 = hi0 ^ c[3] ^ k1;
  c[0] = x0;
  c[1] = lo1;
  c[2] = x2;
  c[3] = lo0;
}

/* out (4 words) = Philox4x32-10(counter c (4 words), key k (2 words)) */
static inline void philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]}, k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; r++) {
    philox_round(c, k0, k1);
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c[0];
  out[1] = c[1];
  out[2] = c[2];
  out[3] = c[3];
}

void lark_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) { philox(ctr, key, out); }

/* The block of element index j (offset + i) under key: w (4 words). */
static inline void block_at(const uint32_t key[2], uint64_t j, uint32_t w[4]) {
  uint32_t ctr[4] = {(uint32_t)j, (uint32_t)(j >> 32), 0, 0};
  philox(ctr, key, w);
}

/* ---- words to values ------------------------------------------------------------------------ */

static inline uint64_t bits53(uint32_t a, uint32_t b) { return ((uint64_t)a << 32 | b) >> 11; }

static inline float u01_f32(const uint32_t w[4]) { return (float)(w[0] >> 8) * 0x1p-24f; }     /* [0, 1) */
static inline double u01_f64(const uint32_t w[4]) { return (double)bits53(w[0], w[1]) * 0x1p-53; } /* [0, 1) */

/* A standard normal from one block: Box-Muller in float64. u1 is in (0, 1], never 0, so the log is
 * finite and |z| <= sqrt(-2 log 2^-53) ~= 8.57. */
static inline double std_normal(const uint32_t w[4]) {
  double u1 = (double)(bits53(w[0], w[1]) + 1) * 0x1p-53;
  double u2 = (double)bits53(w[2], w[3]) * 0x1p-53;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* floor(x * range / 2^128) for the 128-bit x = w0w1w2w3: an integer in [0, range). */
static inline uint64_t below(const uint32_t w[4], uint64_t range) {
  uint64_t xhi = (uint64_t)w[0] << 32 | w[1], xlo = (uint64_t)w[2] << 32 | w[3];
  unsigned __int128 hi = (unsigned __int128)xhi * range, lo = (unsigned __int128)xlo * range;
  return (uint64_t)((hi + (lo >> 64)) >> 64);
}

/* ---- the generator -------------------------------------------------------------------------- */

/* PyTorch's default seed, so a fresh process draws the same numbers every run. */
#define LARK_DEFAULT_SEED 67280421310721ull

static lark_generator default_generator = {LARK_DEFAULT_SEED, 0};

lark_generator *lark_default_generator(void) { return &default_generator; }

void lark_generator_init(lark_generator *g, uint64_t seed) {
  g->seed = seed;
  g->offset = 0;
}

void lark_manual_seed(uint64_t seed) { lark_generator_init(&default_generator, seed); }

static lark_generator *gen_or_default(lark_generator *gen) { return gen ? gen : &default_generator; }

static void key_of(const lark_generator *g, uint32_t key[2]) {
  key[0] = (uint32_t)g->seed;
  key[1] = (uint32_t)(g->seed >> 32);
}

/* ---- one kernel for every distribution ------------------------------------------------------ */

/* The distributions (kind, parameters) are backend.h's lark_dist, shared with the backends. */
typedef lark_dist dist;

/* uniform in [low, high): computed in float64, rounded to T, and kept below high where rounding would
 * reach it (a float32 uniform in [0, 1) must never give 1). top: the largest T below high (and
 * >= low); selects instead of branches, so the loops vectorise. low + (high - low) * u (and normal's
 * mean + std * z) is one fused multiply-add, written out: GCC fused it anyway where the machine has
 * FMA (-march=native), so those builds give the numbers they always gave, while a build without FMA
 * and a GPU kernel now give the same bits too instead of depending on the compiler's contraction. */
static inline float uniform_f32(const uint32_t w[4], double low, double high, float top) {
  float v = (float)fma(high - low, (double)u01_f32(w), low);
  return v > top ? top : v;
}
static inline double uniform_f64(const uint32_t w[4], double low, double high, double top) {
  double v = fma(high - low, u01_f64(w), low);
  return v > top ? top : v;
}

/* One loop per (distribution, dtype): dst (n, contiguous, T) = values of elements j0 .. j0+n-1. */
#define GEN_LOOP(T, EXPR)                                 \
  do {                                                    \
    T *d_ = dst;                                          \
    for (int64_t i = 0; i < n; i++) {                     \
      uint32_t w[4];                                      \
      block_at(key, j0 + (uint64_t)i, w);                 \
      d_[i] = (T)(EXPR);                                  \
    }                                                     \
  } while (0)

/* Any-dtype store of a value v computed by EXPR (randint and bernoulli write every dtype). */
#define GEN_ANY_DTYPE(EXPR)                                                  \
  switch (dt) {                                                              \
    case LARK_FLOAT32: GEN_LOOP(float, EXPR); break;                         \
    case LARK_FLOAT64: GEN_LOOP(double, EXPR); break;                        \
    case LARK_INT64: GEN_LOOP(int64_t, EXPR); break;                         \
    case LARK_UINT8: GEN_LOOP(uint8_t, EXPR); break;                         \
    case LARK_BOOL: GEN_LOOP(uint8_t, (EXPR) != 0); break;                   \
    default: break;                                                          \
  }

/* dst: n contiguous elements of dtype dt; j0: counter of the first (generator offset + its index) */
static void gen_chunk(const dist *ds, const uint32_t key[2], uint64_t j0, int64_t n, lark_dtype dt, void *dst) {
  double a = ds->a, b = ds->b; /* locals: dst cannot alias them, so the loops vectorise */
  switch (ds->kind) {
    case LARK_DIST_UNIFORM:
      if (dt == LARK_FLOAT32) {
        float lo = (float)a, top = nextafterf((float)b, -INFINITY);
        top = top < lo ? lo : top; /* low == high: every value is low */
        GEN_LOOP(float, uniform_f32(w, a, b, top));
      } else {
        double top = nextafter(b, -INFINITY);
        top = top < a ? a : top;
        GEN_LOOP(double, uniform_f64(w, a, b, top));
      }
      break;
    case LARK_DIST_NORMAL:
      if (dt == LARK_FLOAT32) GEN_LOOP(float, fma(b, std_normal(w), a));
      else GEN_LOOP(double, fma(b, std_normal(w), a));
      break;
    case LARK_DIST_RANDINT: {
      /* unsigned addition: low + offset cannot overflow for any [low, high) that fits int64 */
      uint64_t lo = (uint64_t)ds->low, range = ds->range;
      GEN_ANY_DTYPE((int64_t)(lo + below(w, range)));
      break;
    }
    case LARK_DIST_BERNOULLI: GEN_ANY_DTYPE(u01_f64(w) < a); break;
  }
}

/* Elements per parallel work item: big enough to amortise the setup, small enough to balance. */
#define CHUNK 2048
/* Philox costs ~10x a copy per element, so threads pay off well below LARK_PARALLEL_GRAIN. */
#define RANDOM_GRAIN (LARK_PARALLEL_GRAIN / 8)

/* Fills a CPU tensor t (any strides without stride-0 repeats) with ds, element i from counter j0 + i. */
static void fill_cpu(lark_tensor *t, const dist *ds, const uint32_t key[2], uint64_t j0) {
  int64_t numel = lark_numel(t), nchunks = (numel + CHUNK - 1) / CHUNK;
  size_t es = lark_dtype_size(t->dtype);
  char *base = lark_data_ptr(t);
  if (lark_is_contiguous(t)) {
    _Pragma("omp parallel for schedule(static) if (numel > RANDOM_GRAIN)")
    for (int64_t c = 0; c < nchunks; c++) {
      int64_t lo = c * CHUNK, n = numel - lo < CHUNK ? numel - lo : CHUNK;
      gen_chunk(ds, key, j0 + (uint64_t)lo, n, t->dtype, base + lo * (int64_t)es);
    }
    return;
  }
  /* strided: generate a chunk into a buffer, then scatter it along the view's row-major order */
  const lark_tensor *ts[1] = {t};
  lark_iter it;
  lark_iter_init(&it, 1, ts);
  int nd = it.ndim;
  _Pragma("omp parallel for schedule(static) if (numel > RANDOM_GRAIN)")
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t lo = c * CHUNK, n = numel - lo < CHUNK ? numel - lo : CHUNK;
    uint64_t buf[CHUNK]; /* 8-byte slots fit every dtype */
    gen_chunk(ds, key, j0 + (uint64_t)lo, n, t->dtype, buf);
    /* multi-index idx (over it's coalesced dims) and element offset of linear index lo */
    int64_t idx[LARK_MAX_DIMS], off = 0, rest = lo;
    for (int d = nd - 1; d >= 0; d--) {
      idx[d] = rest % it.shape[d];
      rest /= it.shape[d];
      off += idx[d] * it.stride[0][d];
    }
    for (int64_t k = 0; k < n; k++) {
      char *p = base + off * (int64_t)es;
      switch (es) {
        case 8: ((uint64_t *)p)[0] = buf[k]; break;
        case 4: ((uint32_t *)p)[0] = ((const uint32_t *)buf)[k]; break;
        default: ((uint8_t *)p)[0] = ((const uint8_t *)buf)[k]; break;
      }
      /* step to the next element in row-major order */
      int d = nd - 1;
      idx[d]++;
      off += it.stride[0][d];
      while (d > 0 && idx[d] == it.shape[d]) {
        off -= idx[d] * it.stride[0][d];
        idx[d] = 0;
        d--;
        idx[d]++;
        off += it.stride[0][d];
      }
    }
  }
}

static int check_target(const char *op, const lark_tensor *t) {
  if (!t->storage && lark_numel(t) != 0) return lark_set_error(LARK_ERR_ARG, "%s: the tensor was freed", op);
  /* an expanded view repeats memory: several elements would race for one location */
  for (int d = 0; d < t->ndim; d++)
    if (t->stride[d] == 0 && t->shape[d] > 1)
      return lark_set_error(LARK_ERR_ARG,
                            "%s: cannot fill an expanded tensor (dim %d has stride 0, so its elements share memory); "
                            "call contiguous() first",
                            op, d + 1);
  return 0;
}

/* Draws numel(t) values of ds into t from gen, then advances gen. Other devices: their backend's
 * random_fill, else a fill on the CPU with the same counters and a copy; the numbers are the same
 * everywhere. */
static int fill(const char *op, lark_tensor *t, const dist *ds, lark_generator *gen) {
  if (check_target(op, t)) return lark_error_code();
  lark_generator *g = gen_or_default(gen);
  int64_t numel = lark_numel(t);
  if (numel == 0) return 0;
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = dev.kind != LARK_CPU ? lark_backend_for(dev) : NULL;
  if (be && be->random_fill) {
    int rc = be->random_fill(t, ds, g->seed, g->offset);
    if (rc) return rc;
    g->offset += (uint64_t)numel;
    lark_bump_version(t);
    return 0;
  }
  if (dev.kind != LARK_CPU) {
    lark_tensor *host = lark_empty(t->ndim, t->shape, t->dtype, NULL);
    if (!host) return lark_error_code();
    int rc = fill(op, host, ds, g);
    if (!rc) rc = lark_copy_(t, host);
    lark_tensor_release(host);
    return rc;
  }
  uint32_t key[2];
  key_of(g, key);
  fill_cpu(t, ds, key, g->offset);
  g->offset += (uint64_t)numel;
  lark_bump_version(t);
  return 0;
}

static int check_float(const char *op, const lark_tensor *t) {
  if (!lark_dtype_is_float(t->dtype))
    return lark_set_error(LARK_ERR_DTYPE, "%s: expected a float32 or float64 tensor, got %s", op,
                          lark_dtype_name(t->dtype));
  return 0;
}

/* ---- front functions ------------------------------------------------------------------------ */

int lark_uniform_(lark_tensor *t, double low, double high, lark_generator *gen) {
  if (check_float("uniform_", t)) return lark_error_code();
  if (!isfinite(low) || !isfinite(high))
    return lark_set_error(LARK_ERR_ARG, "uniform_: low and high must be finite, got %g and %g", low, high);
  if (low > high)
    return lark_set_error(LARK_ERR_ARG, "uniform_: low (%g) must be <= high (%g)", low, high);
  if (!isfinite(high - low))
    return lark_set_error(LARK_ERR_ARG, "uniform_: the range [%g, %g) is too wide (high - low overflows)", low, high);
  dist ds = {.kind = LARK_DIST_UNIFORM, .a = low, .b = high};
  return fill("uniform_", t, &ds, gen);
}

int lark_normal_(lark_tensor *t, double mean, double std, lark_generator *gen) {
  if (check_float("normal_", t)) return lark_error_code();
  if (!isfinite(mean)) return lark_set_error(LARK_ERR_ARG, "normal_: mean must be finite, got %g", mean);
  if (std != std) return lark_set_error(LARK_ERR_ARG, "normal_: std is NaN (expected a number >= 0)");
  if (std < 0 || isinf(std))
    return lark_set_error(LARK_ERR_ARG, "normal_: std must be finite and >= 0, got %g", std);
  dist ds = {.kind = LARK_DIST_NORMAL, .a = mean, .b = std};
  return fill("normal_", t, &ds, gen);
}

/* Whether every integer in [low, high) is exact in dt; names the limit in the error. */
static int check_int_range(const char *op, lark_dtype dt, int64_t low, int64_t high) {
  int64_t lo_ok = INT64_MIN, hi_ok = INT64_MAX; /* allowed values, inclusive */
  switch (dt) {
    case LARK_FLOAT32: lo_ok = -(1ll << 24), hi_ok = 1ll << 24; break;
    case LARK_FLOAT64: lo_ok = -(1ll << 53), hi_ok = 1ll << 53; break;
    case LARK_UINT8: lo_ok = 0, hi_ok = 255; break;
    case LARK_BOOL: lo_ok = 0, hi_ok = 1; break;
    default: break;
  }
  if (low < lo_ok || high - 1 > hi_ok)
    return lark_set_error(LARK_ERR_ARG, "%s: the range [%lld, %lld) does not fit a %s tensor (values %lld..%lld)", op,
                          (long long)low, (long long)high, lark_dtype_name(dt), (long long)lo_ok, (long long)hi_ok);
  return 0;
}

int lark_randint_(lark_tensor *t, int64_t low, int64_t high, lark_generator *gen) {
  if (low >= high)
    return lark_set_error(LARK_ERR_ARG, "randint: low (%lld) must be < high (%lld)", (long long)low, (long long)high);
  if (check_int_range("randint", t->dtype, low, high)) return lark_error_code();
  dist ds = {.kind = LARK_DIST_RANDINT, .low = low, .range = (uint64_t)high - (uint64_t)low};
  return fill("randint", t, &ds, gen);
}

int lark_bernoulli_(lark_tensor *t, double p, lark_generator *gen) {
  if (!(p >= 0 && p <= 1)) return lark_set_error(LARK_ERR_ARG, "bernoulli_: p must be in [0, 1], got %g", p);
  dist ds = {.kind = LARK_DIST_BERNOULLI, .a = p};
  return fill("bernoulli_", t, &ds, gen);
}

/* lark_bernoulli on p's device by its backend: one kernel checks p and draws; on an invalid p the
 * draw is dropped and the generator stays where it was, as on the CPU. */
static lark_tensor *device_bernoulli(const lark_backend *be, const lark_tensor *p, lark_generator *g) {
  lark_device dev = lark_tensor_device(p);
  lark_tensor *out = lark_empty(p->ndim, p->shape, p->dtype, &dev);
  if (!out) return NULL;
  int64_t bad = -1;
  double bad_value = 0;
  int rc = be->bernoulli(out, p, g->seed, g->offset, &bad, &bad_value);
  if (!rc && bad >= 0)
    rc = lark_set_error(LARK_ERR_ARG, "bernoulli: p must be in [0, 1], got %g at element %lld", bad_value,
                        (long long)bad + 1);
  if (rc) {
    lark_tensor_release(out);
    return NULL;
  }
  g->offset += (uint64_t)lark_numel(p);
  return out;
}

lark_tensor *lark_bernoulli(const lark_tensor *p, lark_generator *gen) {
  if (!p->storage && lark_numel(p) != 0) {
    lark_set_error(LARK_ERR_ARG, "bernoulli: the tensor p was freed");
    return NULL;
  }
  lark_generator *g = gen_or_default(gen);
  lark_device dev = lark_tensor_device(p);
  const lark_backend *be = dev.kind != LARK_CPU ? lark_backend_for(dev) : NULL;
  if (be && be->bernoulli) return device_bernoulli(be, p, g);
  /* p as contiguous float64 on the CPU: one pass to check it, one to draw */
  lark_device cpu = LARK_DEVICE_CPU;
  lark_tensor *ph = lark_to(p, LARK_FLOAT64, &cpu), *pc = ph ? lark_contiguous(ph) : NULL;
  lark_tensor_release(ph);
  if (!pc) return NULL;
  int64_t n = lark_numel(pc);
  const double *pv = lark_data_ptr(pc);
  for (int64_t i = 0; i < n; i++)
    if (!(pv[i] >= 0 && pv[i] <= 1)) {
      lark_set_error(LARK_ERR_ARG, "bernoulli: p must be in [0, 1], got %g at element %lld", pv[i], (long long)i + 1);
      lark_tensor_release(pc);
      return NULL;
    }
  lark_tensor *out = lark_empty(p->ndim, p->shape, p->dtype, NULL);
  if (!out) {
    lark_tensor_release(pc);
    return NULL;
  }
  uint32_t key[2];
  key_of(g, key);
  uint64_t j0 = g->offset;
  lark_dtype dt = out->dtype;
  char *base = lark_data_ptr(out);
  size_t es = lark_dtype_size(dt);
  int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  _Pragma("omp parallel for schedule(static) if (n > RANDOM_GRAIN)")
  for (int64_t c = 0; c < nchunks; c++) {
    int64_t lo = c * CHUNK, m = n - lo < CHUNK ? n - lo : CHUNK;
    for (int64_t i = lo; i < lo + m; i++) {
      uint32_t w[4];
      block_at(key, j0 + (uint64_t)i, w);
      int v = u01_f64(w) < pv[i];
      char *o = base + i * (int64_t)es;
      switch (dt) {
        case LARK_FLOAT32: *(float *)o = (float)v; break;
        case LARK_FLOAT64: *(double *)o = v; break;
        case LARK_INT64: *(int64_t *)o = v; break;
        default: *(uint8_t *)o = (uint8_t)v; break;
      }
    }
  }
  lark_tensor_release(pc);
  g->offset += (uint64_t)n;
  if (dev.kind != LARK_CPU) {
    lark_tensor *moved = lark_to(out, dt, &dev);
    lark_tensor_release(out);
    return moved;
  }
  return out;
}

lark_tensor *lark_rand(int ndim, const int64_t *shape, lark_dtype dt, lark_generator *gen) {
  if ((unsigned)dt < LARK_NDTYPES && !lark_dtype_is_float(dt)) {
    lark_set_error(LARK_ERR_DTYPE, "rand: dtype %s is not a float dtype (expected float32 or float64)",
                   lark_dtype_name(dt));
    return NULL;
  }
  lark_tensor *t = lark_empty(ndim, shape, dt, NULL);
  if (t && lark_uniform_(t, 0, 1, gen)) {
    lark_tensor_release(t);
    return NULL;
  }
  return t;
}

lark_tensor *lark_randn(int ndim, const int64_t *shape, lark_dtype dt, lark_generator *gen) {
  if ((unsigned)dt < LARK_NDTYPES && !lark_dtype_is_float(dt)) {
    lark_set_error(LARK_ERR_DTYPE, "randn: dtype %s is not a float dtype (expected float32 or float64)",
                   lark_dtype_name(dt));
    return NULL;
  }
  lark_tensor *t = lark_empty(ndim, shape, dt, NULL);
  if (t && lark_normal_(t, 0, 1, gen)) {
    lark_tensor_release(t);
    return NULL;
  }
  return t;
}

lark_tensor *lark_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, lark_generator *gen) {
  if (low >= high) {
    lark_set_error(LARK_ERR_ARG, "randint: low (%lld) must be < high (%lld)", (long long)low, (long long)high);
    return NULL;
  }
  lark_tensor *t = lark_empty(ndim, shape, LARK_INT64, NULL);
  if (t && lark_randint_(t, low, high, gen)) {
    lark_tensor_release(t);
    return NULL;
  }
  return t;
}

/* ---- randperm: sort the indices by one random 64-bit key each ------------------------------- */

/* keys, vals: n each, sorted by key in place, stably */
static void insertion_sort(uint64_t *keys, int64_t *vals, int64_t n) {
  for (int64_t i = 1; i < n; i++) {
    uint64_t k = keys[i];
    int64_t v = vals[i], j = i;
    for (; j > 0 && keys[j - 1] > k; j--) { /* strict: equal keys stay in order */
      keys[j] = keys[j - 1];
      vals[j] = vals[j - 1];
    }
    keys[j] = k;
    vals[j] = v;
  }
}

/* Stable sort of (keys, vals) by key: equal keys keep their order, so the result is a function of the
 * keys alone. Most-significant-digit radix sort, 8 bits a pass: the keys are uniform random, so
 * each pass splits a range into 256 nearly equal buckets and after a pass or two every bucket fits
 * in cache; buckets of a few elements finish with an insertion sort. `used`: the high bits all keys
 * of this range already share. tk, tv: scratch of n each. */
static void msd_radix_sort(uint64_t *keys, int64_t *vals, uint64_t *tk, int64_t *tv, int64_t n, int used,
                           bool parallel) {
  if (n <= 48 || used >= 64) {
    insertion_sort(keys, vals, n);
    return;
  }
  int shift = 56 - used;
  int64_t start[257] = {0};
  for (int64_t i = 0; i < n; i++) start[((keys[i] >> shift) & 0xff) + 1]++;
  for (int b = 0; b < 256; b++) start[b + 1] += start[b];
  int64_t next[256];
  memcpy(next, start, sizeof next);
  for (int64_t i = 0; i < n; i++) { /* stable scatter */
    int64_t pos = next[(keys[i] >> shift) & 0xff]++;
    tk[pos] = keys[i];
    tv[pos] = vals[i];
  }
  memcpy(keys, tk, (size_t)n * sizeof *keys);
  memcpy(vals, tv, (size_t)n * sizeof *vals);
  /* buckets are disjoint ranges: sorting them in parallel gives the same result in any order */
  _Pragma("omp parallel for schedule(dynamic) if (parallel)")
  for (int b = 0; b < 256; b++) {
    int64_t lo = start[b], m = start[b + 1] - lo;
    msd_radix_sort(keys + lo, vals + lo, tk + lo, tv + lo, m, used + 8, false);
  }
}

lark_tensor *lark_randperm(int64_t n, lark_generator *gen) {
  if (n < 0) {
    lark_set_error(LARK_ERR_ARG, "randperm: n must be >= 0, got %lld", (long long)n);
    return NULL;
  }
  lark_generator *g = gen_or_default(gen);
  lark_tensor *out = lark_empty(1, (int64_t[]){n}, LARK_INT64, NULL);
  if (!out || n == 0) return out;
  uint64_t *keys = malloc((size_t)n * sizeof *keys), *tmp_k = malloc((size_t)n * sizeof *tmp_k);
  int64_t *tmp_v = malloc((size_t)n * sizeof *tmp_v);
  if (!keys || !tmp_k || !tmp_v) {
    free(keys);
    free(tmp_k);
    free(tmp_v);
    lark_tensor_release(out);
    lark_set_error(LARK_ERR_NOMEM, "randperm: out of memory for %lld elements", (long long)n);
    return NULL;
  }
  int64_t *perm = lark_data_ptr(out);
  uint32_t key[2];
  key_of(g, key);
  uint64_t j0 = g->offset;
  _Pragma("omp parallel for schedule(static) if (n > RANDOM_GRAIN)")
  for (int64_t i = 0; i < n; i++) {
    uint32_t w[4];
    block_at(key, j0 + (uint64_t)i, w);
    keys[i] = (uint64_t)w[0] << 32 | w[1];
    perm[i] = i;
  }
  msd_radix_sort(keys, perm, tmp_k, tmp_v, n, 0, n > RANDOM_GRAIN);
  free(keys);
  free(tmp_k);
  free(tmp_v);
  g->offset += (uint64_t)n;
  return out;
}
