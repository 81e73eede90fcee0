/* test_index.c: gather, scatter_add, index_select, sort, topk, cumsum, cat/split against naive
 * loops on random data, and scatter_add's independence of the number of threads.
 * Uses only lark.h. Returns non-zero and prints what failed. */
#include "check.h"

/* ---- small helpers ------------------------------------------------------------------------- */

/* A contiguous float64 tensor of random values; `levels` > 0 draws from that many integers (ties). */
static lark_tensor *rand_tensor(int nd, const int64_t *shape, int levels) {
  lark_tensor *t = lark_empty(nd, shape, LARK_FLOAT64, NULL);
  if (levels <= 0) {
    fill_uniform(t, -1, 1);
    return t;
  }
  double *p = lark_data_ptr(t);
  for (int64_t i = 0; i < lark_numel(t); i++) p[i] = (double)rand_int(levels);
  return t;
}

static lark_tensor *rand_index(int nd, const int64_t *shape, int64_t hi) {
  lark_tensor *t = lark_empty(nd, shape, LARK_INT64, NULL);
  int64_t *p = lark_data_ptr(t);
  for (int64_t i = 0; i < lark_numel(t); i++) p[i] = rand_int(hi);
  return t;
}

static double max_abs_diff(const lark_tensor *a, const lark_tensor *b) {
  if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim)) return INFINITY;
  if (lark_numel(a) == 0) return 0;
  int64_t c[LARK_MAX_DIMS] = {0};
  double m = 0;
  do {
    double x = at(a, c), y = at(b, c);
    double d = (x != x && y != y) ? 0 : fabs(x - y);
    if (d != d) d = INFINITY;
    if (d > m) m = d;
  } while (next_coord(a->ndim, a->shape, c));
  return m;
}

/* ---- gather --------------------------------------------------------------------------------- */

static void test_gather(void) {
  for (int trial = 0; trial < 30; trial++) {
    int nd = 1 + (int)rand_int(3);
    int64_t ts[3] = {0}, is[3] = {0};
    for (int d = 0; d < nd; d++) ts[d] = 1 + rand_int(6);
    int dim = (int)rand_int(nd);
    for (int d = 0; d < nd; d++) is[d] = d == dim ? 1 + rand_int(8) : 1 + rand_int(ts[d]);
    lark_tensor *t = rand_tensor(nd, ts, 0);
    lark_tensor *ix = rand_index(nd, is, ts[dim]);
    lark_tensor *g = lark_gather(t, trial % 2 ? dim : dim - nd, ix); /* negative dims too */
    CHECK(g, "gather returned NULL");
    if (!g) continue;
    int64_t c[3] = {0};
    bool ok = true;
    do {
      int64_t tc[3] = {0};
      memcpy(tc, c, sizeof tc);
      tc[dim] = (int64_t)at(ix, c);
      if (at(g, c) != at(t, tc)) ok = false;
    } while (next_coord(nd, is, c));
    CHECK(ok, "gather differs from the naive loop (trial %d)", trial);
    lark_tensor_release(g);
    lark_tensor_release(t);
    lark_tensor_release(ix);
  }
  /* a transposed input and a transposed index */
  int64_t s[2] = {5, 7};
  lark_tensor *t = rand_tensor(2, s, 0), *tt = lark_transpose(t, 0, 1); /* 7x5 */
  int64_t si[2] = {4, 6};
  lark_tensor *ix = rand_index(2, si, 7), *ixt = lark_transpose(ix, 0, 1); /* 6x4, values < 7 */
  lark_tensor *g = lark_gather(tt, 0, ixt);
  CHECK(g && g->shape[0] == 6 && g->shape[1] == 4, "gather of views: shape");
  bool ok = g != NULL;
  for (int64_t i = 0; ok && i < 6; i++)
    for (int64_t j = 0; j < 4; j++) {
      int64_t c[2] = {i, j}, tc[2] = {(int64_t)at(ixt, c), j};
      if (at(g, c) != at(tt, tc)) ok = false;
    }
  CHECK(ok, "gather of transposed views differs");
  lark_tensor_release(g);
  /* out of range: an error naming the value and the size */
  int64_t *ip = lark_data_ptr(ix);
  ip[5] = 9;
  CHECK(!lark_gather(tt, 0, ixt), "gather with index 9 should fail");
  CHECK(error_has("index 9 is out of range for dim 1 of size 7"), "message: %s", lark_error());
  ip[5] = -1;
  CHECK(!lark_gather(tt, 0, ixt), "gather with index -1 should fail");
  CHECK(error_has("index -1 is out of range"), "message: %s", lark_error());
  lark_tensor_release(t);
  lark_tensor_release(tt);
  lark_tensor_release(ix);
  lark_tensor_release(ixt);
}

/* ---- scatter_add ---------------------------------------------------------------------------- */

/* Naive: into a float64 copy, in row-major order of index. */
static lark_tensor *naive_scatter_add(const lark_tensor *t, int dim, const lark_tensor *ix, const lark_tensor *src) {
  lark_tensor *r = lark_to(t, LARK_FLOAT64, NULL);
  lark_tensor *rc = lark_clone(r);
  lark_tensor_release(r);
  if (lark_numel(ix) == 0) return rc;
  double *p = lark_data_ptr(rc);
  int64_t c[LARK_MAX_DIMS] = {0};
  do {
    int64_t tc[LARK_MAX_DIMS] = {0};
    memcpy(tc, c, sizeof(int64_t) * (size_t)t->ndim);
    tc[dim] = (int64_t)at(ix, c);
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) off += tc[d] * rc->stride[d];
    p[off] += at(src, c);
  } while (next_coord(ix->ndim, ix->shape, c));
  return rc;
}

static void test_scatter_add(void) {
  for (int trial = 0; trial < 30; trial++) {
    int nd = 1 + (int)rand_int(3);
    int64_t ts[3] = {0}, is[3] = {0}, ss[3] = {0};
    for (int d = 0; d < nd; d++) ts[d] = 1 + rand_int(6);
    int dim = (int)rand_int(nd);
    for (int d = 0; d < nd; d++) {
      is[d] = d == dim ? 1 + rand_int(10) : 1 + rand_int(ts[d]);
      ss[d] = is[d] + rand_int(2);
    }
    lark_tensor *t = rand_tensor(nd, ts, 0), *src = rand_tensor(nd, ss, 0);
    lark_tensor *ix = rand_index(nd, is, (trial % 3 == 0) ? 1 : ts[dim]); /* all-equal indices sometimes */
    lark_tensor *want = naive_scatter_add(t, dim, ix, src);
    lark_tensor *got = lark_scatter_add(t, dim, ix, src);
    CHECK(got && max_abs_diff(got, want) < 1e-12, "scatter_add differs from the naive loop (trial %d)", trial);
    /* in place on a float32 tensor, src float64 is converted */
    lark_tensor *t32 = lark_to(t, LARK_FLOAT32, NULL);
    CHECK(lark_scatter_add_(t32, dim, ix, src) == 0, "scatter_add_ float32");
    CHECK(max_abs_diff(t32, want) < 1e-4, "scatter_add_ float32 differs (trial %d)", trial);
    lark_tensor_release(t32);
    lark_tensor_release(got);
    lark_tensor_release(want);
    lark_tensor_release(t);
    lark_tensor_release(src);
    lark_tensor_release(ix);
  }
  /* int64 */
  int64_t s1[1] = {4}, s2[1] = {6};
  lark_tensor *t = lark_zeros(1, s1, LARK_INT64, NULL);
  lark_tensor *ix = lark_empty(1, s2, LARK_INT64, NULL);
  int64_t *ip = lark_data_ptr(ix);
  int64_t iv[6] = {0, 3, 3, 1, 3, 0};
  memcpy(ip, iv, sizeof iv);
  lark_tensor *src = lark_arange(1, 7, 1, LARK_INT64, NULL); /* 1..6 */
  CHECK(lark_scatter_add_(t, 0, ix, src) == 0, "scatter_add_ int64");
  int64_t *tp = lark_data_ptr(t);
  CHECK(tp[0] == 7 && tp[1] == 4 && tp[2] == 0 && tp[3] == 10, "scatter_add_ int64 sums: %lld %lld %lld %lld",
        (long long)tp[0], (long long)tp[1], (long long)tp[2], (long long)tp[3]);
  /* a failing scatter_add_ leaves the tensor untouched, even when the bad index comes last */
  ip[5] = 4;
  CHECK(lark_scatter_add_(t, 0, ix, src) == LARK_ERR_INDEX, "scatter_add_ with index 4 should fail");
  CHECK(error_has("index 4 is out of range for dim 1 of size 4"), "message: %s", lark_error());
  CHECK(tp[0] == 7 && tp[1] == 4 && tp[2] == 0 && tp[3] == 10, "a failed scatter_add_ wrote into the tensor");
  lark_tensor_release(t);
  lark_tensor_release(ix);
  lark_tensor_release(src);
  /* t as its own index and source: both are read as they were before the writes (read live, the
   * second index would be 2, out of range for size 2) */
  int64_t two = 2;
  lark_tensor *self = lark_ones(1, &two, LARK_INT64, NULL);
  CHECK(lark_scatter_add_(self, 0, self, self) == 0, "scatter_add_ of a tensor into itself");
  int64_t *sp = lark_data_ptr(self);
  CHECK(sp[0] == 1 && sp[1] == 3, "scatter_add_(t, 0, t, t) gave %lld %lld, expected 1 3", (long long)sp[0],
        (long long)sp[1]);
  lark_tensor_release(self);
}

/* Bitwise the same float32 sums with 1 and with several threads, on a problem above the grain. */
static void test_scatter_add_threads(void) {
  int64_t ts[2] = {50, 300}, is[2] = {4000, 300};
  lark_tensor *t0 = lark_zeros(2, ts, LARK_FLOAT32, NULL);
  lark_tensor *ix = rand_index(2, is, 50);
  lark_tensor *src64 = rand_tensor(2, is, 0);
  lark_tensor *src = lark_to(src64, LARK_FLOAT32, NULL);
  lark_tensor *ix1 = rand_index(1, is, 50);
  int64_t nsrc = is[0] * is[1];
  lark_tensor *src1 = lark_view(src, 1, &nsrc);
  int saved = lark_get_num_threads();
  lark_tensor *r[2][2];
  for (int k = 0; k < 2; k++) {
    lark_set_num_threads(k == 0 ? 1 : 4);
    r[k][0] = lark_scatter_add(t0, 0, ix, src);   /* dim 0: tiles of columns */
    lark_tensor *src1n = lark_narrow(src1, 0, 0, is[0]);
    lark_tensor *t1 = lark_zeros(1, ts, LARK_FLOAT32, NULL);
    r[k][1] = lark_scatter_add(t1, 0, ix1, src1n); /* 1-D: one line */
    lark_tensor_release(src1n);
    lark_tensor_release(t1);
  }
  lark_set_num_threads(saved);
  for (int j = 0; j < 2; j++) {
    CHECK(r[0][j] && r[1][j], "scatter_add (threads) returned NULL");
    if (r[0][j] && r[1][j])
      CHECK(memcmp(lark_data_ptr(r[0][j]), lark_data_ptr(r[1][j]), (size_t)lark_numel(r[0][j]) * 4) == 0,
            "scatter_add gives different float32 sums with 1 and 4 threads (case %d)", j);
    lark_tensor_release(r[0][j]);
    lark_tensor_release(r[1][j]);
  }
  /* and the sums are right */
  lark_tensor *want = naive_scatter_add(t0, 0, ix, src);
  lark_tensor *got = lark_scatter_add(t0, 0, ix, src);
  CHECK(got && max_abs_diff(got, want) < 1e-3, "scatter_add (large) differs from the naive loop");
  lark_tensor_release(want);
  lark_tensor_release(got);
  lark_tensor_release(t0);
  lark_tensor_release(ix);
  lark_tensor_release(ix1);
  lark_tensor_release(src64);
  lark_tensor_release(src);
  lark_tensor_release(src1);
}

/* ---- index_select --------------------------------------------------------------------------- */

static void test_index_select(void) {
  for (int trial = 0; trial < 20; trial++) {
    int nd = 1 + (int)rand_int(3);
    int64_t ts[3] = {0};
    for (int d = 0; d < nd; d++) ts[d] = 1 + rand_int(5);
    int dim = (int)rand_int(nd);
    lark_tensor *t0 = rand_tensor(nd, ts, 0);
    /* a non-contiguous input half the time: reverse the dims with a permute */
    lark_tensor *t = t0;
    int perm[3] = {nd - 1, 1, 0};
    if (trial % 2 && nd > 1) t = lark_permute(t0, nd, nd == 2 ? (int[]){1, 0} : perm);
    else lark_tensor_retain(t0);
    int64_t k = rand_int(7);
    lark_tensor *ix = rand_index(1, &k, t->shape[dim]);
    lark_tensor *r = lark_index_select(t, dim, ix);
    CHECK(r, "index_select returned NULL");
    if (r) {
      int64_t want_shape[3];
      memcpy(want_shape, t->shape, sizeof want_shape);
      want_shape[dim] = k;
      CHECK(r->ndim == nd && memcmp(r->shape, want_shape, sizeof(int64_t) * (size_t)nd) == 0, "index_select shape");
      bool ok = true;
      int64_t c[3] = {0};
      if (lark_numel(r))
        do {
          int64_t tc[3] = {0};
          memcpy(tc, c, sizeof tc);
          tc[dim] = ((int64_t *)lark_data_ptr(ix))[c[dim]];
          if (at(r, c) != at(t, tc)) ok = false;
        } while (next_coord(nd, r->shape, c));
      CHECK(ok, "index_select differs from the naive loop (trial %d)", trial);
    }
    lark_tensor_release(r);
    lark_tensor_release(ix);
    lark_tensor_release(t);
    lark_tensor_release(t0);
  }
}

/* ---- sort and topk -------------------------------------------------------------------------- */

/* Naive stable sort of one line: insertion sort of (value, position); NaN largest. */
static bool naive_before(double a, int64_t ia, double b, int64_t ib, bool desc) {
  bool an = a != a, bn = b != b;
  bool gt = (a > b) || (an && !bn), lt = (b > a) || (bn && !an);
  if (gt) return desc;
  if (lt) return !desc;
  return ia < ib;
}

static void check_sorted_lines(const lark_tensor *t, int dim, bool desc, int64_t k, const lark_tensor *v,
                               const lark_tensor *ix, const char *what) {
  int nd = t->ndim;
  int64_t n = t->shape[dim];
  double *val = malloc(sizeof(double) * (size_t)(n ? n : 1));
  int64_t *pos = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  int64_t oshape[LARK_MAX_DIMS];
  memcpy(oshape, t->shape, sizeof(int64_t) * (size_t)nd);
  oshape[dim] = 1;
  int64_t c[LARK_MAX_DIMS] = {0};
  bool ok = v->shape[dim] == k && ix->shape[dim] == k;
  if (lark_numel(t))
    do {
      for (int64_t i = 0; i < n; i++) {
        int64_t tc[LARK_MAX_DIMS] = {0};
        memcpy(tc, c, sizeof tc);
        tc[dim] = i;
        val[i] = at(t, tc);
        pos[i] = i;
      }
      for (int64_t i = 1; i < n; i++)
        for (int64_t j = i; j > 0 && naive_before(val[j], pos[j], val[j - 1], pos[j - 1], desc); j--) {
          double x = val[j];
          val[j] = val[j - 1];
          val[j - 1] = x;
          int64_t y = pos[j];
          pos[j] = pos[j - 1];
          pos[j - 1] = y;
        }
      for (int64_t i = 0; ok && i < k; i++) {
        int64_t oc[LARK_MAX_DIMS] = {0};
        memcpy(oc, c, sizeof oc);
        oc[dim] = i;
        double got = at(v, oc);
        if (!near(got, val[i], 0) || (int64_t)at(ix, oc) != pos[i]) ok = false;
      }
    } while (next_coord(nd, oshape, c));
  CHECK(ok, "%s differs from the naive stable sort", what);
  free(val);
  free(pos);
}

static void test_sort_topk(void) {
  for (int trial = 0; trial < 40; trial++) {
    int nd = 1 + (int)rand_int(3);
    int64_t ts[3] = {0};
    for (int d = 0; d < nd; d++) ts[d] = 1 + rand_int(trial < 30 ? 7 : 60);
    int dim = (int)rand_int(nd);
    lark_tensor *t = rand_tensor(nd, ts, trial % 2 ? 3 : 0); /* many ties half the time */
    if (trial % 5 == 0) ((double *)lark_data_ptr(t))[0] = NAN;
    bool desc = trial % 4 < 2;
    lark_tensor *v = NULL, *ix = NULL;
    CHECK(lark_sort(t, dim - (trial % 3 == 0 ? nd : 0), desc, &v, &ix) == 0, "sort failed");
    if (v) check_sorted_lines(t, dim, desc, ts[dim], v, ix, "sort");
    lark_tensor_release(v);
    lark_tensor_release(ix);
    /* float32 and int64 copies of the same data */
    lark_dtype dts[2] = {LARK_FLOAT32, LARK_INT64};
    for (int j = 0; j < 2; j++) {
      lark_tensor *c = lark_to(t, dts[j], NULL);
      CHECK(lark_sort(c, dim, desc, &v, &ix) == 0, "sort (%s) failed", lark_dtype_name(dts[j]));
      if (v) check_sorted_lines(c, dim, desc, ts[dim], v, ix, dts[j] == LARK_INT64 ? "sort int64" : "sort float32");
      lark_tensor_release(v);
      lark_tensor_release(ix);
      lark_tensor_release(c);
    }
    /* topk = the first k of the stable sort */
    int64_t k = rand_int(ts[dim] + 1);
    CHECK(lark_topk(t, k, dim, desc, true, &v, &ix) == 0, "topk failed");
    if (v) check_sorted_lines(t, dim, desc, k, v, ix, "topk");
    lark_tensor_release(v);
    lark_tensor_release(ix);
    /* a transposed view */
    if (nd >= 2) {
      lark_tensor *tt = lark_transpose(t, 0, nd - 1);
      int tdim = dim == 0 ? nd - 1 : dim == nd - 1 ? 0 : dim;
      CHECK(lark_topk(tt, 1 + rand_int(tt->shape[tdim]), tdim, desc, true, &v, &ix) == 0, "topk (view) failed");
      if (v) check_sorted_lines(tt, tdim, desc, v->shape[tdim], v, ix, "topk of a view");
      lark_tensor_release(v);
      lark_tensor_release(ix);
      lark_tensor_release(tt);
    }
    lark_tensor_release(t);
  }
  /* a long line with many ties exercises the selection against the full sort */
  int64_t n = 5000;
  lark_tensor *t = rand_tensor(1, &n, 50);
  lark_tensor *sv, *si, *v, *ix;
  CHECK(lark_sort(t, 0, true, &sv, &si) == 0, "sort long");
  CHECK(lark_topk(t, 123, 0, true, true, &v, &ix) == 0, "topk long");
  CHECK(memcmp(lark_data_ptr(ix), lark_data_ptr(si), 123 * 8) == 0, "topk(123) indices differ from sort's first 123");
  lark_tensor_release(v);
  lark_tensor_release(ix);
  /* unsorted topk: the same set, in order of position */
  CHECK(lark_topk(t, 123, 0, true, false, &v, &ix) == 0, "topk unsorted");
  int64_t *p = lark_data_ptr(ix);
  bool ok = true;
  for (int i = 1; i < 123; i++) ok = ok && p[i - 1] < p[i];
  int64_t want[123];
  memcpy(want, lark_data_ptr(si), sizeof want);
  for (int i = 1; i < 123; i++) /* sort the first 123 sort positions to compare as sets */
    for (int j = i; j > 0 && want[j] < want[j - 1]; j--) {
      int64_t x = want[j];
      want[j] = want[j - 1];
      want[j - 1] = x;
    }
  CHECK(ok && memcmp(p, want, sizeof want) == 0, "unsorted topk is not the top set in position order");
  lark_tensor_release(v);
  lark_tensor_release(ix);
  lark_tensor_release(sv);
  lark_tensor_release(si);
  CHECK(lark_topk(t, n + 1, 0, true, true, &v, &ix) == LARK_ERR_ARG, "topk with k > n should fail");
  CHECK(error_has("k = 5001 is out of range for dim 1 of size 5000"), "message: %s", lark_error());
  lark_tensor_release(t);
}

/* ---- cumsum --------------------------------------------------------------------------------- */

static void test_cumsum(void) {
  for (int trial = 0; trial < 20; trial++) {
    int nd = 1 + (int)rand_int(3);
    int64_t ts[3] = {0};
    for (int d = 0; d < nd; d++) ts[d] = 1 + rand_int(trial < 15 ? 6 : 100);
    int dim = (int)rand_int(nd);
    lark_tensor *t = rand_tensor(nd, ts, trial % 2 ? 10 : 0);
    lark_tensor *src = trial % 2 ? lark_to(t, LARK_INT64, NULL) : lark_tensor_retain(t);
    lark_tensor *r = lark_cumsum(src, dim);
    CHECK(r && r->dtype == (trial % 2 ? LARK_INT64 : LARK_FLOAT64), "cumsum dtype");
    bool ok = r != NULL;
    int64_t c[3] = {0};
    if (ok) do {
        double s = 0;
        int64_t tc[3] = {0};
        memcpy(tc, c, sizeof tc);
        for (int64_t i = 0; i <= c[dim]; i++) {
          tc[dim] = i;
          s += at(t, tc);
        }
        if (fabs(at(r, c) - s) > 1e-9) ok = false;
      } while (next_coord(nd, ts, c));
    CHECK(ok, "cumsum differs from the naive loop (trial %d)", trial);
    lark_tensor_release(r);
    lark_tensor_release(src);
    lark_tensor_release(t);
  }
}

/* ---- cat and split -------------------------------------------------------------------------- */

static void test_cat_split(void) {
  int64_t sa[2] = {2, 3}, sb[2] = {2, 4}, se[1] = {0};
  lark_tensor *a = rand_tensor(2, sa, 0), *b = lark_ones(2, sb, LARK_INT64, NULL), *e = lark_empty(1, se, LARK_FLOAT32, NULL);
  lark_tensor *ts[3] = {a, e, b};
  lark_tensor *r = lark_cat(3, ts, -1);
  CHECK(r && r->ndim == 2 && r->shape[0] == 2 && r->shape[1] == 7 && r->dtype == LARK_FLOAT64, "cat shape/dtype");
  bool ok = r != NULL;
  for (int64_t i = 0; ok && i < 2; i++)
    for (int64_t j = 0; j < 7; j++) {
      int64_t c[2] = {i, j};
      double want = j < 3 ? at(a, c) : 1;
      if (at(r, c) != want) ok = false;
    }
  CHECK(ok, "cat values");
  lark_tensor_release(r);
  CHECK(!lark_cat(3, ts, 0), "cat along dim 0 of [2,3] and [2,4] should fail");
  CHECK(error_has("tensor 3 has shape [2,4] but tensor 1 has shape [2,3]"), "message: %s", lark_error());

  int n = 0;
  lark_tensor **parts = lark_split(r = lark_cat(3, ts, 1), 3, 1, &n);
  CHECK(parts && n == 3 && parts[2]->shape[1] == 1, "split into 3,3,1");
  if (parts) {
    /* views: writing a piece changes the original */
    CHECK(lark_fill_(parts[1], 42) == 0, "fill piece");
    int64_t c[2] = {1, 4};
    CHECK(at(r, c) == 42, "a split piece is not a view");
    for (int i = 0; i < n; i++) lark_tensor_release(parts[i]);
    free(parts);
  }
  parts = lark_chunk(r, 4, 1, &n); /* 7 in 4 chunks: 2,2,2,1 */
  CHECK(parts && n == 4 && parts[3]->shape[1] == 1, "chunk 7 in 4");
  if (parts) {
    for (int i = 0; i < n; i++) lark_tensor_release(parts[i]);
    free(parts);
  }
  int64_t six = 6;
  lark_tensor *s6 = lark_zeros(1, &six, LARK_FLOAT32, NULL);
  parts = lark_chunk(s6, 4, 0, &n); /* 6 in 4 chunks: 2,2,2 (fewer chunks, as in PyTorch) */
  CHECK(parts && n == 3, "chunk 6 in 4 gives 3 pieces, got %d", n);
  if (parts) {
    for (int i = 0; i < n; i++) lark_tensor_release(parts[i]);
    free(parts);
  }
  int64_t sizes[3] = {1, 4, 1};
  parts = lark_split_sizes(s6, 3, sizes, 0);
  CHECK(parts && parts[1]->shape[0] == 4 && parts[2]->offset == 5, "split_sizes");
  if (parts) {
    for (int i = 0; i < 3; i++) lark_tensor_release(parts[i]);
    free(parts);
  }
  sizes[1] = 3;
  CHECK(!lark_split_sizes(s6, 3, sizes, 0), "split_sizes summing to 5 should fail");
  CHECK(error_has("sum to 5 but dim 1 has size 6"), "message: %s", lark_error());
  lark_tensor *st[2] = {a, a};
  lark_tensor *sk = lark_stack(2, st, -1);
  CHECK(sk && sk->ndim == 3 && sk->shape[2] == 2 && sk->shape[0] == 2 && sk->shape[1] == 3, "stack at -1");
  lark_tensor_release(sk);
  lark_tensor_release(s6);
  lark_tensor_release(r);
  lark_tensor_release(a);
  lark_tensor_release(b);
  lark_tensor_release(e);
}

int main(void) {
  rand_seed(0x9E3779B97F4A7C15ull);
  test_gather();
  test_scatter_add();
  test_scatter_add_threads();
  test_index_select();
  test_sort_topk();
  test_cumsum();
  test_cat_split();
  return check_report("test_index");
}
