/* test_random.c: Philox 4x32-10 against the published Random123 known-answer vectors, and every
 * distribution against values recomputed here from lark_philox4x32_10 and the documented scheme
 * (random.c's header): element i of a draw uses counter offset + i and key = seed. */
#include "check.h"

/* ---- references, written from the scheme and not from random.c ------------------------------ */

static void ref_block(uint64_t seed, uint64_t j, uint32_t w[4]) {
  uint32_t ctr[4] = {(uint32_t)(j & 0xffffffffu), (uint32_t)(j >> 32), 0, 0};
  uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
  lark_philox4x32_10(ctr, key, w);
}
static double ref_u53(const uint32_t w[4]) { return ldexp((double)((((uint64_t)w[0] << 32) | w[1]) >> 11), -53); }
static float ref_uniform_f32(uint64_t seed, uint64_t j) {
  uint32_t w[4];
  ref_block(seed, j, w);
  return ldexpf((float)(w[0] >> 8), -24);
}
static double ref_uniform_f64(uint64_t seed, uint64_t j) {
  uint32_t w[4];
  ref_block(seed, j, w);
  return ref_u53(w);
}
static double ref_normal(uint64_t seed, uint64_t j) {
  uint32_t w[4];
  ref_block(seed, j, w);
  double u1 = ldexp((double)(((((uint64_t)w[0] << 32) | w[1]) >> 11) + 1), -53);
  double u2 = ldexp((double)(((((uint64_t)w[2] << 32) | w[3]) >> 11)), -53);
  return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static lark_tensor *new_tensor(int ndim, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_zeros(ndim, shape, dt, NULL);
  if (!t) {
    fprintf(stderr, "zeros failed: %s\n", lark_error());
    exit(1);
  }
  return t;
}

/* ---- the tests ------------------------------------------------------------------------------ */

static void test_known_answers(void) {
  /* Random123's kat_vectors for philox4x32 with 10 rounds */
  static const struct {
    uint32_t ctr[4], key[2], out[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
    uint32_t out[4];
    lark_philox4x32_10(kat[k].ctr, kat[k].key, out);
    CHECK(memcmp(out, kat[k].out, sizeof out) == 0, "philox KAT %zu: got %08x %08x %08x %08x", k, out[0], out[1],
          out[2], out[3]);
  }
}

static void test_scheme(void) {
  /* rand and randn follow the documented counter scheme, and advance the offset by numel */
  lark_manual_seed(1234);
  lark_generator *g = lark_default_generator();
  CHECK(g->seed == 1234 && g->offset == 0, "manual_seed: seed %llu offset %llu", (unsigned long long)g->seed,
        (unsigned long long)g->offset);
  lark_tensor *u = lark_rand(2, (int64_t[]){3, 5}, LARK_FLOAT32, NULL);
  CHECK(u && g->offset == 15, "rand advances the offset by 15, got %llu", (unsigned long long)g->offset);
  for (int64_t i = 0; i < 15; i++)
    CHECK(get_flat(u, i) == ref_uniform_f32(1234, (uint64_t)i), "rand float32 element %lld", (long long)i);
  lark_tensor *d = lark_rand(1, (int64_t[]){7}, LARK_FLOAT64, NULL);
  for (int64_t i = 0; i < 7; i++)
    CHECK(get_flat(d, i) == ref_uniform_f64(1234, 15 + (uint64_t)i), "rand float64 element %lld", (long long)i);
  lark_tensor *n = lark_randn(1, (int64_t[]){9}, LARK_FLOAT64, NULL);
  for (int64_t i = 0; i < 9; i++)
    CHECK(fabs(get_flat(n, i) - ref_normal(1234, 22 + (uint64_t)i)) < 1e-12, "randn float64 element %lld", (long long)i);
  CHECK(g->offset == 31, "offset after three draws: %llu", (unsigned long long)g->offset);
  lark_tensor_release(u);
  lark_tensor_release(d);
  lark_tensor_release(n);

  /* a seed above 2^32 uses both key words */
  lark_generator big;
  lark_generator_init(&big, 0x123456789abcdefull);
  lark_tensor *b = lark_rand(1, (int64_t[]){4}, LARK_FLOAT64, &big);
  for (int64_t i = 0; i < 4; i++)
    CHECK(get_flat(b, i) == ref_uniform_f64(0x123456789abcdefull, (uint64_t)i), "64-bit seed element %lld", (long long)i);
  lark_tensor_release(b);

  /* an offset past 2^32 carries into the second counter word */
  lark_generator far = {.seed = 5, .offset = 0xfffffffeull};
  lark_tensor *f = lark_rand(1, (int64_t[]){4}, LARK_FLOAT32, &far);
  for (int64_t i = 0; i < 4; i++)
    CHECK(get_flat(f, i) == ref_uniform_f32(5, 0xfffffffeull + (uint64_t)i), "offset crossing 2^32, element %lld",
          (long long)i);
  lark_tensor_release(f);
}

/* Fills a big tensor with 1 and 2 threads (both fill in parallel chunks); the bytes must agree. */
static void test_thread_independence(void) {
  int64_t shape[2] = {317, 411}; /* 130287 elements: many chunks, a partial last one */
  lark_dtype dts[2] = {LARK_FLOAT32, LARK_FLOAT64};
  int saved = lark_get_num_threads();
  for (int k = 0; k < 2; k++) {
    lark_tensor *a = new_tensor(2, shape, dts[k]), *b = new_tensor(2, shape, dts[k]);
    lark_generator g1, g2;
    lark_generator_init(&g1, 99);
    lark_generator_init(&g2, 99);
    lark_set_num_threads(1);
    lark_normal_(a, 0, 1, &g1);
    lark_set_num_threads(2);
    lark_normal_(b, 0, 1, &g2);
    size_t nb = (size_t)lark_numel(a) * lark_dtype_size(dts[k]);
    CHECK(memcmp(lark_data_ptr(a), lark_data_ptr(b), nb) == 0, "normal_ %s differs between 1 and 2 threads",
          lark_dtype_name(dts[k]));
    lark_tensor_release(a);
    lark_tensor_release(b);
  }
  lark_set_num_threads(saved);
}

/* A transposed (and a narrowed) view is filled in its logical order: the same numbers as a
 * contiguous tensor of the view's shape. */
static void test_strided_targets(void) {
  int64_t shape[2] = {150, 90};
  lark_tensor *base = new_tensor(2, shape, LARK_FLOAT64);
  lark_tensor *view = lark_transpose(base, 0, 1); /* 90 x 150, strides {1, 90} */
  lark_tensor *ref = new_tensor(2, (int64_t[]){90, 150}, LARK_FLOAT64);
  lark_generator g1, g2;
  lark_generator_init(&g1, 7);
  lark_generator_init(&g2, 7);
  CHECK(lark_uniform_(view, -2, 3, &g1) == 0, "uniform_ on a transposed view: %s", lark_error());
  lark_uniform_(ref, -2, 3, &g2);
  int bad = 0;
  for (int64_t i = 0; i < 90 * 150; i++) bad += get_flat(view, i) != get_flat(ref, i);
  CHECK(bad == 0, "transposed fill: %d elements differ from the contiguous fill", bad);
  CHECK(g1.offset == 90 * 150, "offset after the strided fill: %llu", (unsigned long long)g1.offset);

  /* a narrowed 3-d view with a partial row: only its elements change */
  lark_tensor *cube = new_tensor(3, (int64_t[]){4, 50, 60}, LARK_FLOAT32);
  lark_tensor *nar = lark_narrow(cube, 2, 5, 41);
  lark_tensor *nref = new_tensor(3, (int64_t[]){4, 50, 41}, LARK_FLOAT32);
  lark_generator_init(&g1, 8);
  lark_generator_init(&g2, 8);
  lark_normal_(nar, 1, 2, &g1);
  lark_normal_(nref, 1, 2, &g2);
  bad = 0;
  for (int64_t i = 0; i < 4 * 50 * 41; i++) bad += get_flat(nar, i) != get_flat(nref, i);
  int touched = 0;
  for (int64_t i = 0; i < 4 * 50 * 60; i++) {
    int64_t col = i % 60;
    if ((col < 5 || col >= 46) && get_flat(cube, i) != 0) touched++;
  }
  CHECK(bad == 0 && touched == 0, "narrowed fill: %d differ, %d outside the view written", bad, touched);

  /* an expanded view would race: refused */
  lark_tensor *row = new_tensor(1, (int64_t[]){5}, LARK_FLOAT32);
  lark_tensor *ex = lark_expand(row, 2, (int64_t[]){3, 5});
  CHECK(lark_uniform_(ex, 0, 1, NULL) == LARK_ERR_ARG && error_has("expanded"), "expanded target: %s",
        lark_error());
  lark_tensor_release(row);
  lark_tensor_release(ex);
  lark_tensor_release(cube);
  lark_tensor_release(nar);
  lark_tensor_release(nref);
  lark_tensor_release(base);
  lark_tensor_release(view);
  lark_tensor_release(ref);
}

static void test_statistics(void) {
  lark_manual_seed(42);
  int64_t n = 200000;
  lark_tensor *u = lark_rand(1, &n, LARK_FLOAT32, NULL), *z = lark_randn(1, &n, LARK_FLOAT64, NULL);
  const float *pu = lark_data_ptr(u);
  const double *pz = lark_data_ptr(z);
  double su = 0, suu = 0, sz = 0, szz = 0, umin = 1, umax = 0;
  for (int64_t i = 0; i < n; i++) {
    su += pu[i], suu += (double)pu[i] * pu[i], sz += pz[i], szz += pz[i] * pz[i];
    umin = fmin(umin, pu[i]), umax = fmax(umax, pu[i]);
  }
  double mu = su / n, vu = suu / n - mu * mu, mz = sz / n, vz = szz / n - mz * mz;
  /* 5 standard errors: sd(mean) = sqrt(1/12/n) ~ 6.5e-4 and 1/sqrt(n) ~ 2.2e-3 */
  CHECK(fabs(mu - 0.5) < 5 * sqrt(1.0 / 12 / n), "uniform mean %g", mu);
  CHECK(fabs(vu - 1.0 / 12) < 0.002, "uniform variance %g", vu);
  CHECK(umin >= 0 && umax < 1, "uniform range [%g, %g]", umin, umax);
  CHECK(fabs(mz) < 5 / sqrt((double)n), "normal mean %g", mz);
  CHECK(fabs(vz - 1) < 5 * sqrt(2.0 / n), "normal variance %g", vz);
  lark_tensor_release(u);
  lark_tensor_release(z);

  /* normal_ with mean/std; float32 rounding of float64 values */
  lark_tensor *y = new_tensor(1, &n, LARK_FLOAT32);
  lark_normal_(y, 3, 0.5, NULL);
  double sy = 0;
  for (int64_t i = 0; i < n; i++) sy += get_flat(y, i);
  CHECK(fabs(sy / n - 3) < 5 * 0.5 / sqrt((double)n), "normal_(3, 0.5) mean %g", sy / n);
  lark_tensor_release(y);

  /* std 0 gives the mean exactly */
  lark_tensor *c = new_tensor(1, (int64_t[]){10}, LARK_FLOAT64);
  lark_normal_(c, -1.5, 0, NULL);
  int bad = 0;
  for (int i = 0; i < 10; i++) bad += get_flat(c, i) != -1.5;
  CHECK(bad == 0, "normal_ with std 0");
  lark_tensor_release(c);
}

static void test_uniform_bounds(void) {
  /* a narrow float32 range where rounding would reach high: values stay in [low, high) */
  lark_tensor *t = new_tensor(1, (int64_t[]){100000}, LARK_FLOAT32);
  lark_uniform_(t, 1.0, 1.0000001, NULL);
  float lo = 1.0f, hi = 1.0000001f;
  int bad = 0;
  for (int64_t i = 0; i < 100000; i++) {
    float v = ((const float *)lark_data_ptr(t))[i];
    bad += !(v >= lo && v < hi);
  }
  CHECK(bad == 0, "uniform_ float32 in a 1-ulp range: %d values outside [low, high)", bad);
  lark_uniform_(t, 2, 2, NULL); /* an empty range gives low, as PyTorch does */
  CHECK(get_flat(t, 0) == 2 && get_flat(t, 99999) == 2, "uniform_(2, 2)");
  lark_tensor_release(t);
}

static void test_randint(void) {
  lark_manual_seed(3);
  int64_t n = 60000;
  lark_tensor *r = lark_randint(-3, 7, 1, &n, NULL);
  CHECK(r && r->dtype == LARK_INT64, "randint gives int64");
  int64_t count[10] = {0}, out = 0;
  const int64_t *pr = lark_data_ptr(r);
  for (int64_t i = 0; i < n; i++) {
    if (pr[i] < -3 || pr[i] >= 7) out++;
    else count[pr[i] + 3]++;
  }
  CHECK(out == 0, "randint: %lld values outside [-3, 7)", (long long)out);
  for (int k = 0; k < 10; k++) /* expected 6000 each, sd ~ 73 */
    CHECK(fabs((double)count[k] - 6000) < 6 * 73, "randint value %d drawn %lld times", k - 3, (long long)count[k]);
  lark_tensor_release(r);

  /* the full int64 range: low + 128-bit product never overflows */
  lark_tensor *w = lark_randint(INT64_MIN, INT64_MAX, 1, (int64_t[]){1000}, NULL);
  int neg = 0;
  for (int i = 0; i < 1000; i++) neg += ((const int64_t *)lark_data_ptr(w))[i] < 0;
  CHECK(neg > 400 && neg < 600, "randint over the full int64 range: %d of 1000 negative", neg);
  lark_tensor_release(w);

  /* the reference: low + floor(x * range / 2^128) */
  lark_generator g;
  lark_generator_init(&g, 11);
  lark_tensor *s = lark_randint(100, 100 + 1000003, 1, (int64_t[]){50}, &g);
  int bad = 0;
  for (int64_t i = 0; i < 50; i++) {
    uint32_t wd[4];
    ref_block(11, (uint64_t)i, wd);
    unsigned __int128 x = ((unsigned __int128)(((uint64_t)wd[0] << 32) | wd[1]) << 64) | (((uint64_t)wd[2] << 32) | wd[3]);
    /* x * range / 2^128 with range < 2^21: split x to stay in 128 bits */
    unsigned __int128 hi = (x >> 64) * 1000003u, lo = (x & ~(uint64_t)0) * (unsigned __int128)1000003u;
    int64_t want = 100 + (int64_t)((hi + (lo >> 64)) >> 64);
    bad += ((const int64_t *)lark_data_ptr(s))[i] != want;
  }
  CHECK(bad == 0, "randint against the reference: %d differ", bad);
  lark_tensor_release(s);

  /* randint_ into other dtypes */
  lark_tensor *u8 = new_tensor(1, (int64_t[]){1000}, LARK_UINT8);
  CHECK(lark_randint_(u8, 250, 256, NULL) == 0, "randint_ uint8 [250, 256): %s", lark_error());
  int oor = 0;
  for (int i = 0; i < 1000; i++) oor += get_flat(u8, i) < 250;
  CHECK(oor == 0, "randint_ uint8 range");
  CHECK(lark_randint_(u8, 0, 257, NULL) == LARK_ERR_ARG && error_has("uint8"), "uint8 overflow: %s",
        lark_error());
  lark_tensor_release(u8);
  lark_tensor *f = new_tensor(1, (int64_t[]){100}, LARK_FLOAT64);
  CHECK(lark_randint_(f, -5, 5, NULL) == 0, "randint_ float64");
  bad = 0;
  for (int i = 0; i < 100; i++) bad += get_flat(f, i) != floor(get_flat(f, i)) || get_flat(f, i) < -5 || get_flat(f, i) >= 5;
  CHECK(bad == 0, "randint_ float64 values are integers in range");
  lark_tensor_release(f);
}

static void test_bernoulli(void) {
  lark_manual_seed(5);
  int64_t n = 100000;
  lark_tensor *t = new_tensor(1, &n, LARK_BOOL);
  CHECK(lark_bernoulli_(t, 0.3, NULL) == 0, "bernoulli_ bool: %s", lark_error());
  int64_t ones = 0;
  for (int64_t i = 0; i < n; i++) ones += ((const uint8_t *)lark_data_ptr(t))[i];
  CHECK(fabs((double)ones / n - 0.3) < 5 * sqrt(0.3 * 0.7 / n), "bernoulli_ frequency %g", (double)ones / n);
  lark_tensor_release(t);

  /* p = 0 and p = 1 are exact */
  lark_tensor *e = new_tensor(1, (int64_t[]){1000}, LARK_INT64);
  lark_bernoulli_(e, 1, NULL);
  int64_t s = 0;
  for (int i = 0; i < 1000; i++) s += ((const int64_t *)lark_data_ptr(e))[i];
  CHECK(s == 1000, "bernoulli_(1) gives all ones, got %lld", (long long)s);
  lark_bernoulli_(e, 0, NULL);
  s = 0;
  for (int i = 0; i < 1000; i++) s += ((const int64_t *)lark_data_ptr(e))[i];
  CHECK(s == 0, "bernoulli_(0) gives all zeros");
  lark_tensor_release(e);

  /* bernoulli(p tensor): per-element probability, p's dtype and shape, same numbers as the scalar
   * version where p is constant */
  lark_tensor *p = lark_full(2, (int64_t[]){200, 300}, 0.25, LARK_FLOAT32, NULL);
  lark_generator g1, g2;
  lark_generator_init(&g1, 77);
  lark_generator_init(&g2, 77);
  lark_tensor *b = lark_bernoulli(p, &g1);
  lark_tensor *b2 = new_tensor(2, (int64_t[]){200, 300}, LARK_FLOAT32);
  lark_bernoulli_(b2, 0.25, &g2);
  CHECK(b && b->dtype == LARK_FLOAT32 && b->ndim == 2, "bernoulli(p) dtype and shape");
  CHECK(memcmp(lark_data_ptr(b), lark_data_ptr(b2), 60000 * sizeof(float)) == 0,
        "bernoulli(p) equals bernoulli_(0.25) for the same seed");
  CHECK(g1.offset == 60000 && g2.offset == 60000, "bernoulli offsets");
  lark_tensor_release(b);
  lark_tensor_release(b2);
  lark_tensor_release(p);

  /* p out of range */
  lark_tensor *bad = lark_full(1, (int64_t[]){3}, 0.5, LARK_FLOAT64, NULL);
  ((double *)lark_data_ptr(bad))[2] = 1.5;
  CHECK(!lark_bernoulli(bad, NULL) && error_has("[0, 1]"), "bernoulli p = 1.5: %s", lark_error());
  ((double *)lark_data_ptr(bad))[2] = NAN;
  CHECK(!lark_bernoulli(bad, NULL), "bernoulli p = NaN");
  lark_tensor_release(bad);
}

static int cmp_key(const void *a, const void *b) {
  const uint64_t *x = a, *y = b; /* {key, index} pairs */
  if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
  return x[1] < y[1] ? -1 : x[1] > y[1];
}

static void test_randperm(void) {
  int64_t sizes[] = {0, 1, 2, 10, 1000, 50001};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    int64_t n = sizes[k];
    lark_generator g;
    lark_generator_init(&g, 2024);
    g.offset = 17;
    lark_tensor *p = lark_randperm(n, &g);
    CHECK(p && p->dtype == LARK_INT64 && p->ndim == 1 && p->shape[0] == n, "randperm(%lld) shape", (long long)n);
    CHECK(g.offset == 17 + (uint64_t)n, "randperm(%lld) offset", (long long)n);
    /* reference: qsort the (key, index) pairs */
    uint64_t *pairs = malloc(sizeof(uint64_t) * 2 * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) {
      uint32_t w[4];
      ref_block(2024, 17 + (uint64_t)i, w);
      pairs[2 * i] = ((uint64_t)w[0] << 32) | w[1];
      pairs[2 * i + 1] = (uint64_t)i;
    }
    qsort(pairs, (size_t)n, 2 * sizeof(uint64_t), cmp_key);
    const int64_t *pp = lark_data_ptr(p);
    int bad = 0;
    char *seen = calloc((size_t)n + 1, 1);
    for (int64_t i = 0; i < n; i++) {
      bad += pp[i] != (int64_t)pairs[2 * i + 1];
      if (pp[i] >= 0 && pp[i] < n) seen[pp[i]]++;
    }
    int missing = 0;
    for (int64_t i = 0; i < n; i++) missing += seen[i] != 1;
    CHECK(bad == 0 && missing == 0, "randperm(%lld): %d differ from the reference, %d values missing", (long long)n,
          bad, missing);
    free(pairs);
    free(seen);
    lark_tensor_release(p);
  }
}

static void test_errors(void) {
  lark_tensor *f = new_tensor(1, (int64_t[]){4}, LARK_FLOAT32), *i = new_tensor(1, (int64_t[]){4}, LARK_INT64);
  CHECK(lark_uniform_(f, 1, 0, NULL) == LARK_ERR_ARG && error_has("low"), "uniform_ low > high: %s",
        lark_error());
  CHECK(lark_uniform_(f, 0, INFINITY, NULL) == LARK_ERR_ARG, "uniform_ infinite high");
  CHECK(lark_uniform_(i, 0, 1, NULL) == LARK_ERR_DTYPE && error_has("int64"), "uniform_ on int64: %s",
        lark_error());
  CHECK(lark_normal_(f, 0, -1, NULL) == LARK_ERR_ARG && error_has("std"), "normal_ std < 0: %s",
        lark_error());
  CHECK(lark_normal_(f, 0, NAN, NULL) == LARK_ERR_ARG && error_has("NaN"), "normal_ std NaN: %s",
        lark_error());
  CHECK(lark_normal_(i, 0, 1, NULL) == LARK_ERR_DTYPE, "normal_ on int64");
  CHECK(!lark_randn(1, (int64_t[]){3}, LARK_INT64, NULL) && error_has("randn") &&
            error_has("int64"),
        "randn int64: %s", lark_error());
  CHECK(!lark_rand(1, (int64_t[]){3}, LARK_BOOL, NULL) && error_has("bool"), "rand bool: %s", lark_error());
  CHECK(!lark_randint(5, 5, 1, (int64_t[]){3}, NULL) && error_has("low"), "randint low == high: %s",
        lark_error());
  CHECK(lark_randint_(i, 6, 5, NULL) == LARK_ERR_ARG, "randint_ low > high");
  CHECK(lark_bernoulli_(f, 1.5, NULL) == LARK_ERR_ARG && error_has("[0, 1]"), "bernoulli_ p > 1: %s",
        lark_error());
  CHECK(lark_bernoulli_(f, -0.1, NULL) == LARK_ERR_ARG, "bernoulli_ p < 0");
  CHECK(lark_bernoulli_(f, NAN, NULL) == LARK_ERR_ARG, "bernoulli_ p NaN");
  CHECK(!lark_randperm(-1, NULL) && error_has("randperm"), "randperm(-1): %s", lark_error());
  /* a failed call does not move the generator */
  lark_manual_seed(1);
  lark_normal_(f, 0, -1, NULL);
  CHECK(lark_default_generator()->offset == 0, "a failed draw advanced the offset");
  /* empty and 0-d targets */
  lark_tensor *e = new_tensor(2, (int64_t[]){0, 3}, LARK_FLOAT32), *s = new_tensor(0, NULL, LARK_FLOAT64);
  CHECK(lark_uniform_(e, 0, 1, NULL) == 0 && lark_default_generator()->offset == 0, "empty fill");
  CHECK(lark_normal_(s, 0, 1, NULL) == 0 && lark_default_generator()->offset == 1, "0-d fill draws one");
  lark_tensor_release(e);
  lark_tensor_release(s);
  lark_tensor_release(f);
  lark_tensor_release(i);
}

int main(void) {
  test_known_answers();
  test_scheme();
  test_thread_independence();
  test_strided_targets();
  test_statistics();
  test_uniform_bounds();
  test_randint();
  test_bernoulli();
  test_randperm();
  test_errors();
  return check_report("test_random");
}
