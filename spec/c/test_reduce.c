/* test_reduce.c: every reduction against a brute-force reference written here (read every element
 * with lark_get_flat, bucket it by output, reduce in long double), on contiguous, transposed,
 * narrowed, stepped and expanded views; max/min/argmax ties and NaN; integer dtypes; empty
 * tensors; error messages; results bit-identical on 1 and 2 threads; and float32 sums of 1M+
 * elements within 1e-6 of a float64 reference. */
#include "check.h"

/* A contiguous tensor of random values: floats in [-2, 2), integers in [-5, 5), uint8 in [0, 6),
 * bools half true. */
static lark_tensor *random_tensor(int ndim, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(ndim, shape, dt, NULL);
  if (!t) {
    fprintf(stderr, "empty failed: %s\n", lark_error());
    exit(1);
  }
  int64_t n = lark_numel(t);
  void *p = lark_data_ptr(t);
  for (int64_t i = 0; i < n; i++) {
    double u = rand_unit();
    switch (dt) {
      case LARK_FLOAT32: ((float *)p)[i] = (float)(4 * u - 2); break;
      case LARK_FLOAT64: ((double *)p)[i] = 4 * u - 2; break;
      case LARK_INT64: ((int64_t *)p)[i] = (int64_t)floor(10 * u) - 5; break;
      case LARK_UINT8: ((uint8_t *)p)[i] = (uint8_t)(6 * u); break;
      default: ((uint8_t *)p)[i] = u < 0.5; break;
    }
  }
  return t;
}

/* ---- the reference ---------------------------------------------------------------------------- */

/* For each output (row-major over kept dims), the reduced elements in row-major order. */
typedef struct {
  int64_t nout, nred;
  double *vals; /* nout x nred */
} buckets;

static buckets bucketize(const lark_tensor *t, const bool *reduced) {
  buckets b = {1, 1, NULL};
  for (int d = 0; d < t->ndim; d++) {
    if (reduced[d]) b.nred *= t->shape[d];
    else b.nout *= t->shape[d];
  }
  b.vals = malloc(sizeof(double) * (size_t)(b.nout * b.nred + 1));
  int64_t n = lark_numel(t);
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, o = 0, r = 0, om = 1, rm = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
      int64_t c = rem % t->shape[d];
      rem /= t->shape[d];
      if (reduced[d]) r += c * rm, rm *= t->shape[d];
      else o += c * om, om *= t->shape[d];
    }
    b.vals[o * b.nred + r] = get_flat(t, i);
  }
  return b;
}

/* The reference value of op over n values (idx: max/min's index). */
static double ref_reduce(lark_reduce_op op, const double *v, int64_t n, bool unbiased, double p, int64_t *idx) {
  long double s = 0;
  switch (op) {
    case LARK_RED_SUM:
      for (int64_t i = 0; i < n; i++) s += v[i];
      return (double)s;
    case LARK_RED_MEAN:
      for (int64_t i = 0; i < n; i++) s += v[i];
      return (double)(s / n);
    case LARK_RED_PROD:
      s = 1;
      for (int64_t i = 0; i < n; i++) s *= v[i];
      return (double)s;
    case LARK_RED_MAX:
    case LARK_RED_MIN: {
      int64_t best = 0;
      for (int64_t i = 1; i < n; i++) {
        if (isnan(v[best])) break;
        if (isnan(v[i]) || (op == LARK_RED_MAX ? v[i] > v[best] : v[i] < v[best])) best = i;
      }
      if (idx) *idx = best;
      return v[best];
    }
    case LARK_RED_VAR:
    case LARK_RED_STD: {
      long double m = 0, q = 0;
      for (int64_t i = 0; i < n; i++) m += v[i];
      m /= n;
      for (int64_t i = 0; i < n; i++) q += (v[i] - m) * (v[i] - m);
      double dof = (double)n - (unbiased ? 1 : 0);
      double var = dof > 0 ? (double)(q / dof) : NAN;
      return op == LARK_RED_VAR ? var : sqrt(var);
    }
    case LARK_RED_NORM:
      if (isinf(p)) {
        s = p > 0 ? 0 : INFINITY;
        for (int64_t i = 0; i < n; i++) s = p > 0 ? fmaxl(s, fabs(v[i])) : fminl(s, fabs(v[i]));
        return (double)s;
      }
      if (p == 0) {
        for (int64_t i = 0; i < n; i++) s += v[i] != 0;
        return (double)s;
      }
      for (int64_t i = 0; i < n; i++) s += powl(fabsl(v[i]), p);
      return (double)powl(s, 1 / (long double)p);
    case LARK_RED_ANY:
      for (int64_t i = 0; i < n; i++)
        if (v[i] != 0) return 1;
      return 0;
    case LARK_RED_ALL:
      for (int64_t i = 0; i < n; i++)
        if (v[i] == 0) return 0;
      return 1;
    default: return NAN;
  }
}

static const char *op_names[] = {"sum", "mean", "prod", "max", "min", "var", "std", "norm", "any", "all"};

/* Checks op over the dims in mask (all: ndims 0) of t against the reference; bk: t bucketized for
 * those dims. */
static void check_op(lark_reduce_op op, const lark_tensor *t, const bool *mask, bool all, bool keepdim,
                     bool unbiased, double p, const buckets *bk, const char *what) {
  lark_reduce_args args = {.ndims = 0, .keepdim = keepdim, .unbiased = unbiased, .p = p};
  bool reduced[LARK_MAX_DIMS] = {0};
  for (int d = 0; d < t->ndim; d++) {
    reduced[d] = all || mask[d];
    if (!all && mask[d]) args.dims[args.ndims++] = d - (d % 2 ? t->ndim : 0); /* some negative */
  }
  lark_tensor *r = lark_reduce(op, t, &args);
  CHECK(r != NULL, "%s %s: %s", op_names[op], what, lark_error());
  if (!r) return;
  /* shape */
  int nd = 0;
  bool shape_ok = true;
  for (int d = 0; d < t->ndim; d++) {
    if (!reduced[d]) shape_ok = shape_ok && nd < r->ndim && r->shape[nd++] == t->shape[d];
    else if (keepdim) shape_ok = shape_ok && nd < r->ndim && r->shape[nd++] == 1;
  }
  CHECK(shape_ok && nd == r->ndim, "%s %s: wrong result shape (%d dims)", op_names[op], what, r->ndim);
  /* dtype */
  lark_dtype want = t->dtype;
  if (op == LARK_RED_ANY || op == LARK_RED_ALL) want = LARK_BOOL;
  else if ((op == LARK_RED_SUM || op == LARK_RED_PROD) && !lark_dtype_is_float(t->dtype)) want = LARK_INT64;
  CHECK(r->dtype == want, "%s %s: dtype %s, expected %s", op_names[op], what, lark_dtype_name(r->dtype),
        lark_dtype_name(want));
  buckets b = *bk;
  double tol = t->dtype == LARK_FLOAT32 ? 2e-6 : 1e-12;
  if (op == LARK_RED_PROD) tol *= 10;
  int bad = 0;
  for (int64_t o = 0; o < b.nout && shape_ok; o++) {
    double e = ref_reduce(op, b.vals + o * b.nred, b.nred, unbiased, p, NULL);
    if (t->dtype == LARK_FLOAT32 && op != LARK_RED_ANY && op != LARK_RED_ALL) e = (float)e;
    double a = get_flat(r, o);
    if (!near(a, e, tol) && bad++ < 3)
      CHECK(0, "%s %s: output %lld is %.17g, expected %.17g", op_names[op], what, (long long)o, a, e);
  }
  if (!bad) CHECK(1, "ok");
  lark_tensor_release(r);
}

/* Checks max/min with indices and argmax/argmin along dim (or all dims) against the reference. */
static void check_index(bool is_max, const lark_tensor *t, int dim, bool keepdim, const char *what) {
  bool reduced[LARK_MAX_DIMS] = {0};
  for (int d = 0; d < t->ndim; d++) reduced[d] = dim == LARK_ALL_DIMS || d == dim;
  lark_tensor *v = NULL, *ix = NULL, *am;
  if (dim != LARK_ALL_DIMS) {
    int rc = is_max ? lark_max_dim(t, dim, keepdim, &v, &ix) : lark_min_dim(t, dim, keepdim, &v, &ix);
    CHECK(rc == 0, "%s_dim %s: %s", is_max ? "max" : "min", what, lark_error());
    if (rc) return;
    CHECK(v->dtype == t->dtype && ix->dtype == LARK_INT64, "max_dim %s: dtypes", what);
  }
  am = is_max ? lark_argmax(t, dim, keepdim) : lark_argmin(t, dim, keepdim);
  CHECK(am != NULL, "argmax %s: %s", what, lark_error());
  if (!am) return;
  buckets b = bucketize(t, reduced);
  int bad = 0;
  for (int64_t o = 0; o < b.nout; o++) {
    int64_t ei = -1;
    double e = ref_reduce(is_max ? LARK_RED_MAX : LARK_RED_MIN, b.vals + o * b.nred, b.nred, false, 0, &ei);
    bool ok = get_flat(am, o) == (double)ei;
    if (v) ok = ok && near(get_flat(v, o), e, 0) && get_flat(ix, o) == (double)ei;
    if (!ok && bad++ < 3)
      CHECK(0, "%s %s: output %lld: value %g index %g argidx %g, expected %g at %lld", is_max ? "max" : "min", what,
            (long long)o, v ? get_flat(v, o) : NAN, ix ? get_flat(ix, o) : NAN, get_flat(am, o), e, (long long)ei);
  }
  if (!bad) CHECK(1, "ok");
  free(b.vals);
  lark_tensor_release(v);
  lark_tensor_release(ix);
  lark_tensor_release(am);
}

static const lark_reduce_op float_ops[] = {LARK_RED_SUM, LARK_RED_MEAN, LARK_RED_PROD, LARK_RED_MAX, LARK_RED_MIN,
                                           LARK_RED_VAR, LARK_RED_STD, LARK_RED_NORM, LARK_RED_ANY, LARK_RED_ALL};
static const double norm_ps[] = {2, 1, INFINITY, 0, 3, 0.5, -INFINITY};

/* Every op, every dim subset (and all dims), keepdim or not, on t. */
static void check_all_ops(const lark_tensor *t, const char *what) {
  int nsub = 1 << t->ndim;
  for (int m = 0; m <= nsub; m++) { /* m == nsub: all dims through ndims = 0 */
    bool mask[LARK_MAX_DIMS] = {0};
    bool all = m == nsub || m == 0;
    if (m == 0) continue; /* the empty subset is "all dims" too; covered by m == nsub */
    bool reduced[LARK_MAX_DIMS] = {0};
    for (int d = 0; d < t->ndim; d++) mask[d] = (m >> d) & 1, reduced[d] = all || mask[d];
    buckets bk = bucketize(t, reduced);
    for (int keep = 0; keep < 2; keep++) {
      for (size_t k = 0; k < sizeof float_ops / sizeof *float_ops; k++) {
        lark_reduce_op op = float_ops[k];
        bool need_float = op == LARK_RED_MEAN || op == LARK_RED_VAR || op == LARK_RED_STD || op == LARK_RED_NORM;
        if (need_float && !lark_dtype_is_float(t->dtype)) continue;
        if (op == LARK_RED_PROD && lark_numel(t) > 64 && lark_dtype_is_float(t->dtype)) continue; /* underflow */
        if (op == LARK_RED_NORM) {
          for (size_t q = 0; q < sizeof norm_ps / sizeof *norm_ps; q++)
            check_op(op, t, mask, all, keep, true, norm_ps[q], &bk, what);
        } else if (op == LARK_RED_VAR || op == LARK_RED_STD) {
          check_op(op, t, mask, all, keep, true, 2, &bk, what);
          check_op(op, t, mask, all, keep, false, 2, &bk, what);
        } else {
          check_op(op, t, mask, all, keep, true, 2, &bk, what);
        }
      }
    }
    free(bk.vals);
  }
  for (int d = 0; d < t->ndim; d++) {
    check_index(true, t, d, false, what);
    check_index(false, t, d, true, what);
  }
  if (lark_numel(t) > 0) {
    check_index(true, t, LARK_ALL_DIMS, false, what);
    check_index(false, t, LARK_ALL_DIMS, false, what);
  }
}

static void test_layouts(void) {
  const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64, LARK_UINT8, LARK_BOOL};
  for (size_t k = 0; k < sizeof dts / sizeof *dts; k++) {
    lark_dtype dt = dts[k];
    char what[128];
    /* contiguous 1-D to 4-D */
    int64_t shapes[][4] = {{7}, {5, 6}, {3, 4, 5}, {2, 3, 4, 5}, {1, 9, 1}};
    int ndims[] = {1, 2, 3, 4, 3};
    for (int s = 0; s < 5; s++) {
      lark_tensor *t = random_tensor(ndims[s], shapes[s], dt);
      snprintf(what, sizeof what, "%s contiguous %dd", lark_dtype_name(dt), ndims[s]);
      check_all_ops(t, what);
      lark_tensor_release(t);
    }
    /* transposed, narrowed, stepped, expanded 3-D views */
    lark_tensor *base = random_tensor(3, (int64_t[]){4, 5, 6}, dt);
    lark_tensor *tr = lark_transpose(base, 0, 2);
    snprintf(what, sizeof what, "%s transpose", lark_dtype_name(dt));
    check_all_ops(tr, what);
    lark_tensor *nw = lark_narrow(base, 2, 1, 4);
    snprintf(what, sizeof what, "%s narrow", lark_dtype_name(dt));
    check_all_ops(nw, what);
    lark_tensor *sl = lark_slice(base, 1, 0, 5, 2);
    snprintf(what, sizeof what, "%s slice step 2", lark_dtype_name(dt));
    check_all_ops(sl, what);
    lark_tensor *row = random_tensor(3, (int64_t[]){4, 1, 6}, dt);
    lark_tensor *ex = lark_expand(row, 3, (int64_t[]){4, 5, 6});
    snprintf(what, sizeof what, "%s expand", lark_dtype_name(dt));
    check_all_ops(ex, what);
    lark_tensor *sc = random_tensor(0, NULL, dt);
    snprintf(what, sizeof what, "%s 0-d", lark_dtype_name(dt));
    check_all_ops(sc, what);
    lark_tensor *trx = lark_transpose(ex, 0, 1);
    snprintf(what, sizeof what, "%s expand+transpose", lark_dtype_name(dt));
    check_all_ops(trx, what);
    lark_tensor_release(base);
    lark_tensor_release(tr);
    lark_tensor_release(nw);
    lark_tensor_release(sl);
    lark_tensor_release(row);
    lark_tensor_release(ex);
    lark_tensor_release(trx);
    lark_tensor_release(sc);
  }
}

/* Bigger shapes, to reach the parallel, chunked and columns paths. */
static void test_big_paths(void) {
  const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64};
  /* one op per loop family: additive lanes, max/min, two-pass var, int-valued any */
  const lark_reduce_op ops[] = {LARK_RED_SUM, LARK_RED_MAX, LARK_RED_VAR, LARK_RED_ANY};
  int64_t shapes[][2] = {{300, 257}, {5, 40000}, {40000, 5}, {70000, 1}, {3, 100}};
  for (size_t k = 0; k < 3; k++)
    for (int s = 0; s < 5; s++) {
      lark_tensor *t = random_tensor(2, shapes[s], dts[k]);
      lark_tensor *tt = lark_transpose(t, 0, 1);
      char what[128];
      for (int m = 1; m <= 3; m++) {
        bool mask[2] = {m & 1, (m >> 1) & 1};
        buckets bt = bucketize(t, mask), btt = bucketize(tt, mask);
        for (size_t q = 0; q < sizeof ops / sizeof *ops; q++) {
          bool need_float = ops[q] == LARK_RED_MEAN || ops[q] == LARK_RED_VAR || ops[q] == LARK_RED_NORM;
          if (need_float && dts[k] == LARK_INT64) continue;
          snprintf(what, sizeof what, "%s [%lld,%lld] mask %d", lark_dtype_name(dts[k]), (long long)shapes[s][0],
                   (long long)shapes[s][1], m);
          check_op(ops[q], t, mask, false, false, true, 2, &bt, what);
          strcat(what, " transposed");
          check_op(ops[q], tt, mask, false, false, true, 2, &btt, what);
        }
        free(bt.vals);
        free(btt.vals);
      }
      snprintf(what, sizeof what, "%s [%lld,%lld]", lark_dtype_name(dts[k]), (long long)shapes[s][0],
               (long long)shapes[s][1]);
      check_index(true, t, 0, false, what);
      check_index(true, t, 1, false, what);
      check_index(false, tt, 0, false, what);
      check_index(true, t, LARK_ALL_DIMS, false, what);
      lark_tensor_release(t);
      lark_tensor_release(tt);
    }
  /* the columns loop over several reduced dims that do not merge (a narrowed middle dim) */
  for (size_t k = 0; k < 3; k++) {
    lark_tensor *base = random_tensor(3, (int64_t[]){6, 7, 40}, dts[k]);
    lark_tensor *nw = lark_narrow(base, 1, 1, 5);
    check_all_ops(nw, "narrowed [6,5,40]");
    lark_tensor *b4 = random_tensor(4, (int64_t[]){3, 4, 5, 24}, dts[k]);
    lark_tensor *s4 = lark_slice(b4, 2, 0, 5, 2);
    check_all_ops(s4, "stepped [3,4,3,24]");
    lark_tensor_release(base);
    lark_tensor_release(nw);
    lark_tensor_release(b4);
    lark_tensor_release(s4);
  }
}

static lark_tensor *from_doubles(int n, const double *v) {
  lark_tensor *t = lark_empty(1, (int64_t[]){n}, LARK_FLOAT64, NULL);
  memcpy(lark_data_ptr(t), v, sizeof(double) * (size_t)n);
  return t;
}

static void test_ties_nan(void) {
  /* ties: the first occurrence */
  lark_tensor *t = from_doubles(6, (double[]){1, 5, 2, 5, -3, -3});
  lark_tensor *am = lark_argmax(t, 0, false), *an = lark_argmin(t, LARK_ALL_DIMS, false);
  CHECK(get_flat(am, 0) == 1 && get_flat(an, 0) == 4, "ties: argmax %g (1), argmin %g (4)", get_flat(am, 0), get_flat(an, 0));
  lark_tensor_release(am);
  lark_tensor_release(an);
  lark_tensor_release(t);
  /* NaN: propagates as the max and the min, at its first position */
  t = from_doubles(5, (double[]){1, NAN, 7, NAN, -1});
  lark_tensor *v, *ix;
  CHECK(lark_max_dim(t, 0, false, &v, &ix) == 0 && isnan(get_flat(v, 0)) && get_flat(ix, 0) == 1, "max with NaN");
  lark_tensor_release(v);
  lark_tensor_release(ix);
  CHECK(lark_min_dim(t, -1, true, &v, &ix) == 0 && isnan(get_flat(v, 0)) && get_flat(ix, 0) == 1 && v->ndim == 1,
        "min with NaN");
  lark_tensor_release(v);
  lark_tensor_release(ix);
  lark_tensor *r = lark_reduce(LARK_RED_MAX, t, NULL);
  CHECK(r && isnan(get_flat(r, 0)) && r->ndim == 0, "max of all with NaN");
  lark_tensor_release(r);
  lark_reduce_args inf = {.p = INFINITY};
  r = lark_reduce(LARK_RED_NORM, t, &inf);
  CHECK(r && isnan(get_flat(r, 0)), "inf-norm with NaN");
  lark_tensor_release(r);
  lark_tensor_release(t);
  /* NaN first in a long row that takes the chunked path */
  int64_t n = 200000;
  lark_tensor *big = lark_zeros(1, &n, LARK_FLOAT32, NULL);
  ((float *)lark_data_ptr(big))[150000] = NAN;
  ((float *)lark_data_ptr(big))[190000] = NAN;
  ((float *)lark_data_ptr(big))[5] = 3;
  am = lark_argmax(big, 0, false);
  CHECK(am && get_flat(am, 0) == 150000, "argmax NaN in a long row: %g", am ? get_flat(am, 0) : -1);
  lark_tensor_release(am);
  ((float *)lark_data_ptr(big))[150000] = 0;
  ((float *)lark_data_ptr(big))[190000] = 0;
  ((float *)lark_data_ptr(big))[100000] = 3;
  am = lark_argmax(big, 0, false);
  CHECK(am && get_flat(am, 0) == 5, "argmax ties across chunks: %g", am ? get_flat(am, 0) : -1);
  lark_tensor_release(am);
  lark_tensor_release(big);
  /* var of one element: nan unbiased, 0 biased */
  t = from_doubles(1, (double[]){4});
  r = lark_reduce(LARK_RED_VAR, t, NULL);
  CHECK(r && isnan(get_flat(r, 0)), "var of one element is nan");
  lark_tensor_release(r);
  lark_reduce_args biased = {.unbiased = false};
  r = lark_reduce(LARK_RED_STD, t, &biased);
  CHECK(r && get_flat(r, 0) == 0, "biased std of one element is 0");
  lark_tensor_release(r);
  lark_tensor_release(t);
}

static void test_int_exact(void) {
  /* int64 sums stay exact beyond 2^53; uint8 and bool sum to int64 without wrapping at 256 */
  lark_tensor *t = lark_full(1, (int64_t[]){3}, 0, LARK_INT64, NULL);
  int64_t *p = lark_data_ptr(t);
  p[0] = (int64_t)1 << 60, p[1] = 1, p[2] = 2;
  lark_tensor *r = lark_reduce(LARK_RED_SUM, t, NULL);
  CHECK(r && ((int64_t *)lark_data_ptr(r))[0] == ((int64_t)1 << 60) + 3, "int64 sum exact");
  lark_tensor_release(r);
  r = lark_reduce(LARK_RED_MAX, t, NULL);
  CHECK(r && r->dtype == LARK_INT64 && ((int64_t *)lark_data_ptr(r))[0] == (int64_t)1 << 60, "int64 max exact");
  lark_tensor_release(r);
  lark_tensor_release(t);
  t = lark_full(1, (int64_t[]){1000}, 200, LARK_UINT8, NULL);
  r = lark_reduce(LARK_RED_SUM, t, NULL);
  CHECK(r && r->dtype == LARK_INT64 && get_flat(r, 0) == 200000, "uint8 sum to int64: %g", r ? get_flat(r, 0) : -1);
  lark_tensor_release(r);
  r = lark_reduce(LARK_RED_MAX, t, NULL);
  CHECK(r && r->dtype == LARK_UINT8 && get_flat(r, 0) == 200, "uint8 max keeps uint8");
  lark_tensor_release(r);
  lark_tensor_release(t);
  t = lark_full(1, (int64_t[]){70000}, 1, LARK_BOOL, NULL);
  r = lark_reduce(LARK_RED_SUM, t, NULL);
  CHECK(r && r->dtype == LARK_INT64 && get_flat(r, 0) == 70000, "bool sum counts");
  lark_tensor_release(r);
  r = lark_reduce(LARK_RED_PROD, t, NULL);
  CHECK(r && r->dtype == LARK_INT64 && get_flat(r, 0) == 1, "bool prod");
  lark_tensor_release(r);
  lark_tensor_release(t);
}

static void test_empty(void) {
  lark_tensor *e = lark_empty(2, (int64_t[]){3, 0}, LARK_FLOAT32, NULL);
  lark_reduce_args d1 = {.ndims = 1, .dims = {1}, .unbiased = true};
  struct {
    lark_reduce_op op;
    double want;
  } cases[] = {{LARK_RED_SUM, 0}, {LARK_RED_PROD, 1}, {LARK_RED_MEAN, NAN}, {LARK_RED_VAR, NAN},
               {LARK_RED_NORM, 0}, {LARK_RED_ANY, 0}, {LARK_RED_ALL, 1}};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    lark_tensor *r = lark_reduce(cases[k].op, e, &d1);
    CHECK(r && r->ndim == 1 && r->shape[0] == 3, "%s over an empty dim: shape", op_names[cases[k].op]);
    if (r)
      for (int i = 0; i < 3; i++)
        CHECK(near(get_flat(r, i), cases[k].want, 0), "%s over an empty dim: %g", op_names[cases[k].op], get_flat(r, i));
    lark_tensor_release(r);
    r = lark_reduce(cases[k].op, e, NULL);
    CHECK(r && r->ndim == 0 && near(get_flat(r, 0), cases[k].want, 0), "%s of an empty tensor", op_names[cases[k].op]);
    lark_tensor_release(r);
  }
  /* reducing the other dim: an empty result */
  lark_reduce_args d0 = {.ndims = 1, .dims = {0}, .keepdim = true};
  lark_tensor *r = lark_reduce(LARK_RED_MAX, e, &d0);
  CHECK(r && r->ndim == 2 && r->shape[0] == 1 && r->shape[1] == 0, "max over a full dim of an empty tensor");
  lark_tensor_release(r);
  r = lark_reduce(LARK_RED_MAX, e, &d1);
  CHECK(!r && error_has("max: cannot reduce over an empty dim of size 0"), "max over empty: %s",
        lark_error());
  lark_tensor *v = NULL, *ix = NULL;
  CHECK(lark_min_dim(e, 1, false, &v, &ix) != 0 && !v && !ix &&
            error_has("min: cannot reduce over an empty dim of size 0"),
        "min_dim over empty: %s", lark_error());
  CHECK(!lark_argmax(e, LARK_ALL_DIMS, false) && error_has("argmax: cannot reduce over an empty dim"),
        "argmax of empty: %s", lark_error());
  lark_tensor_release(e);
}

static void test_errors(void) {
  lark_tensor *t = random_tensor(3, (int64_t[]){2, 3, 4}, LARK_FLOAT32);
  lark_reduce_args a = {.ndims = 1, .dims = {3}};
  CHECK(!lark_reduce(LARK_RED_SUM, t, &a) && error_has("sum: dim") && error_has("out of range"),
        "bad dim: %s", lark_error());
  lark_reduce_args dup = {.ndims = 2, .dims = {1, -2}};
  CHECK(!lark_reduce(LARK_RED_MEAN, t, &dup) && error_has("mean: dim 2 appears more than once"),
        "duplicate dims: %s", lark_error());
  lark_reduce_args many = {.ndims = -1};
  CHECK(!lark_reduce(LARK_RED_SUM, t, &many), "negative ndims");
  CHECK(!lark_reduce((lark_reduce_op)99, t, NULL) && error_has("unknown op"), "bad op");
  CHECK(!lark_reduce(LARK_RED_SUM, NULL, NULL) && error_has("sum:"), "NULL input");
  lark_reduce_args pn = {.p = NAN};
  CHECK(!lark_reduce(LARK_RED_NORM, t, &pn) && error_has("norm:"), "nan p");
  lark_tensor *v, *ix;
  CHECK(lark_max_dim(t, 5, false, &v, &ix) != 0 && error_has("max: dim"), "max_dim bad dim: %s",
        lark_error());
  CHECK(!lark_argmin(t, -4, false) && error_has("argmin: dim"), "argmin bad dim");
  lark_tensor *i = random_tensor(1, (int64_t[]){4}, LARK_INT64);
  const lark_reduce_op need_float[] = {LARK_RED_MEAN, LARK_RED_VAR, LARK_RED_STD, LARK_RED_NORM};
  for (int k = 0; k < 4; k++) {
    char want[64];
    snprintf(want, sizeof want, "%s: expected a float32 or float64 tensor, got int64", op_names[need_float[k]]);
    CHECK(!lark_reduce(need_float[k], i, NULL) && error_has(want), "int %s: %s", op_names[need_float[k]],
          lark_error());
  }
  lark_tensor *b = random_tensor(1, (int64_t[]){4}, LARK_BOOL);
  CHECK(!lark_reduce(LARK_RED_MEAN, b, NULL) && error_has("got bool"), "bool mean");
  lark_tensor_release(b);
  lark_tensor_release(i);
  lark_tensor_release(t);
}

/* The same bits on 1 and 2 threads, and float32 sums of 1M+ elements within 1e-6 of float64. */
static void test_threads_accuracy(void) {
  int64_t n = 21 * 50000 + 21 * 113; /* 1M+, a multiple of 21 for the views below */
  lark_tensor *t = lark_empty(1, &n, LARK_FLOAT32, NULL);
  float *p = lark_data_ptr(t);
  long double ref = 0, ref_abs = 0, ref_sq = 0;
  for (int64_t i = 0; i < n; i++) {
    p[i] = (float)(rand_unit() * 2 - 0.9); /* mean ~0.1: some cancellation */
    ref += p[i];
    ref_abs += fabsl((long double)p[i]);
    ref_sq += (long double)p[i] * p[i];
  }
  /* float32 accumulation would be ~1e-4 off here */
  lark_reduce_args none = {.unbiased = true, .p = 2};
  lark_tensor *views[4];
  views[0] = lark_tensor_retain(t);
  views[1] = lark_view(t, 2, (int64_t[]){-1, 7});          /* columns of 7 */
  views[2] = views[1] ? lark_transpose(views[1], 0, 1) : NULL; /* 7 rows, stride 7 inside */
  views[3] = lark_view(t, 3, (int64_t[]){7, -1, 3});
  const lark_reduce_op ops[] = {LARK_RED_SUM, LARK_RED_MEAN, LARK_RED_VAR, LARK_RED_NORM, LARK_RED_MAX, LARK_RED_PROD};
  for (int vi = 0; vi < 4; vi++) {
    lark_tensor *x = views[vi];
    CHECK(x != NULL, "view %d: %s", vi, lark_error());
    if (!x) continue;
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
      for (int nd = 0; nd <= x->ndim && nd <= 2; nd++) {
        lark_reduce_args a = none;
        a.ndims = nd; /* all dims; or dim 0; or dims 0,1 */
        for (int d = 0; d < nd; d++) a.dims[d] = d;
        lark_set_num_threads(1);
        lark_tensor *r1 = lark_reduce(ops[k], x, &a);
        lark_set_num_threads(2);
        lark_tensor *r2 = lark_reduce(ops[k], x, &a);
        CHECK(r1 && r2 && memcmp(lark_data_ptr(r1), lark_data_ptr(r2), (size_t)lark_numel(r1) * 4) == 0,
              "%s view %d ndims %d: 1 and 2 threads differ", op_names[ops[k]], vi, nd);
        lark_tensor_release(r1);
        lark_tensor_release(r2);
      }
    }
    /* argmax too */
    lark_set_num_threads(1);
    lark_tensor *a1 = lark_argmax(x, LARK_ALL_DIMS, false);
    lark_set_num_threads(2);
    lark_tensor *a2 = lark_argmax(x, LARK_ALL_DIMS, false);
    CHECK(a1 && a2 && get_flat(a1, 0) == get_flat(a2, 0), "argmax view %d: threads differ", vi);
    lark_tensor_release(a1);
    lark_tensor_release(a2);
  }
  lark_tensor *s = lark_reduce(LARK_RED_SUM, t, NULL);
  double rel = fabs(get_flat(s, 0) - (double)ref) / fabs((double)ref);
  CHECK(rel < 1e-6, "float32 sum of %lld: %.9g vs %.9Lg (relative %.3g)", (long long)n, get_flat(s, 0), ref, rel);
  lark_tensor_release(s);
  for (int vi = 1; vi < 4; vi++) { /* the same sum through other layouts */
    s = lark_reduce(LARK_RED_SUM, views[vi], NULL);
    rel = fabs(get_flat(s, 0) - (double)ref) / fabs((double)ref);
    CHECK(rel < 1e-6, "float32 sum view %d: relative %.3g", vi, rel);
    lark_tensor_release(s);
  }
  s = lark_reduce(LARK_RED_MEAN, t, NULL);
  CHECK(fabs(get_flat(s, 0) - (double)(ref / n)) < 1e-6 * fabs((double)(ref / n)), "float32 mean of 1M");
  lark_tensor_release(s);
  lark_reduce_args p1 = {.p = 1};
  s = lark_reduce(LARK_RED_NORM, t, &p1);
  CHECK(fabs(get_flat(s, 0) - (double)ref_abs) < 1e-6 * (double)ref_abs, "float32 1-norm of 1M");
  lark_tensor_release(s);
  s = lark_reduce(LARK_RED_NORM, t, NULL);
  CHECK(fabs(get_flat(s, 0) - sqrt((double)ref_sq)) < 1e-6 * sqrt((double)ref_sq), "float32 2-norm of 1M");
  lark_tensor_release(s);
  /* var: a large offset that a one-pass sum of squares would lose */
  for (int64_t i = 0; i < n; i++) p[i] = 1000.0f + (float)(i % 7);
  long double m = 0, q = 0;
  for (int64_t i = 0; i < n; i++) m += p[i];
  m /= n;
  for (int64_t i = 0; i < n; i++) q += (p[i] - m) * (p[i] - m);
  s = lark_reduce(LARK_RED_VAR, t, NULL);
  double want = (double)(q / (n - 1));
  CHECK(fabs(get_flat(s, 0) - want) < 1e-6 * want, "var with offset: %.9g vs %.9g", get_flat(s, 0), want);
  lark_tensor_release(s);
  for (int vi = 0; vi < 4; vi++) lark_tensor_release(views[vi]);
  lark_tensor_release(t);
}

int main(void) {
  rand_seed(88172645463325252ull);
  test_layouts();
  test_big_paths();
  test_ties_nan();
  test_int_exact();
  test_empty();
  test_errors();
  test_threads_accuracy();
  return check_report("test_reduce");
}
