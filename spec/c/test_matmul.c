/* test_matmul.c: lark_matmul against a naive triple loop in double, for random shapes of every
 * numpy.matmul case (1-D operands, batches, broadcast batches), random layouts (transposed,
 * narrowed, expanded) and both float dtypes; lark_gemm with alpha and beta; and the errors.
 * Uses only lark.h. Returns non-zero and prints what failed. */
#include "check.h"

/* A random float tensor of `shape` in a random layout. Layout 1 transposes the last two dims (the
 * BLAS "T" case), 2 narrows the last dim of a wider matrix (leading dimension > cols), 3 reverses
 * every dim (batch strides out of order), 4 expands a size-1 dim of the last two (stride 0). */
static lark_tensor *rand_operand(int nd, const int64_t *shape, lark_dtype dt, int layout) {
  int64_t s[LARK_MAX_DIMS];
  memcpy(s, shape, sizeof(int64_t) * (size_t)nd);
  lark_tensor *t = NULL;
  if (layout == 1 && nd >= 2) {
    s[nd - 1] = shape[nd - 2], s[nd - 2] = shape[nd - 1];
    lark_tensor *base = lark_empty(nd, s, dt, NULL);
    t = lark_transpose(base, nd - 2, nd - 1);
    lark_tensor_release(base);
  } else if (layout == 2 && nd >= 1) {
    s[nd - 1] += 3;
    lark_tensor *base = lark_empty(nd, s, dt, NULL);
    t = lark_narrow(base, nd - 1, 2, shape[nd - 1]);
    lark_tensor_release(base);
  } else if (layout == 3 && nd >= 2) {
    int perm[LARK_MAX_DIMS];
    for (int i = 0; i < nd; i++) s[i] = shape[nd - 1 - i], perm[i] = nd - 1 - i;
    lark_tensor *base = lark_empty(nd, s, dt, NULL);
    t = lark_permute(base, nd, perm);
    lark_tensor_release(base);
  } else if (layout == 4 && nd >= 1) {
    int d = nd >= 2 && rand_int(2) ? nd - 2 : nd - 1;
    s[d] = 1;
    lark_tensor *base = lark_empty(nd, s, dt, NULL);
    fill_uniform(base, -1, 1);
    t = lark_expand(base, nd, shape);
    lark_tensor_release(base);
    return t;
  } else {
    t = lark_empty(nd, shape, dt, NULL);
  }
  fill_uniform(t, -1, 1);
  return t;
}

/* numpy.matmul in double: returns the result shape in (*ond, oshape) and the values row-major,
 * each with the sum of |a||b| of its terms (the scale of its rounding error). */
static double *matmul_ref(const lark_tensor *a, const lark_tensor *b, int *ond, int64_t *oshape, double **scale) {
  int64_t as[LARK_MAX_DIMS + 1], bs[LARK_MAX_DIMS + 1];
  int an = a->ndim, bn = b->ndim;
  memcpy(as, a->shape, sizeof(int64_t) * (size_t)an);
  memcpy(bs, b->shape, sizeof(int64_t) * (size_t)bn);
  if (a->ndim == 1) as[1] = as[0], as[0] = 1, an = 2; /* a row */
  if (b->ndim == 1) bs[1] = 1, bn = 2;                 /* a column */
  int64_t m = as[an - 2], k = as[an - 1], n = bs[bn - 1];
  int nb = (an > bn ? an : bn) - 2;
  int64_t batch[LARK_MAX_DIMS];
  for (int i = 0; i < nb; i++) {
    int ia = i - (nb - (an - 2)), ib = i - (nb - (bn - 2));
    int64_t x = ia >= 0 ? as[ia] : 1, y = ib >= 0 ? bs[ib] : 1;
    batch[i] = x == 1 ? y : x;
  }
  int on = nb;
  memcpy(oshape, batch, sizeof(int64_t) * (size_t)nb);
  if (a->ndim > 1) oshape[on++] = m;
  if (b->ndim > 1) oshape[on++] = n;
  *ond = on;
  int64_t nbatch = 1;
  for (int i = 0; i < nb; i++) nbatch *= batch[i];
  double *out = calloc((size_t)(nbatch * m * n) + 1, sizeof(double));
  *scale = calloc((size_t)(nbatch * m * n) + 1, sizeof(double));
  int64_t bc[LARK_MAX_DIMS] = {0};
  for (int64_t bi = 0; bi < nbatch; bi++) {
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double sum = 0, sc = 0;
        for (int64_t p = 0; p < k; p++) {
          int64_t ca[LARK_MAX_DIMS + 1], cb[LARK_MAX_DIMS + 1];
          /* batch coords, broadcast */
          for (int d = 0; d < a->ndim - 2; d++) ca[d] = a->shape[d] == 1 ? 0 : bc[nb - (a->ndim - 2) + d];
          for (int d = 0; d < b->ndim - 2; d++) cb[d] = b->shape[d] == 1 ? 0 : bc[nb - (b->ndim - 2) + d];
          if (a->ndim == 1) ca[0] = p;
          else ca[a->ndim - 2] = i, ca[a->ndim - 1] = p;
          if (b->ndim == 1) cb[0] = p;
          else cb[b->ndim - 2] = p, cb[b->ndim - 1] = j;
          double x = at(a, ca), y = at(b, cb);
          sum += x * y;
          sc += fabs(x * y);
        }
        out[(bi * m + i) * n + j] = sum;
        (*scale)[(bi * m + i) * n + j] = sc;
      }
    next_coord(nb, batch, bc);
  }
  return out;
}

/* Checks lark_matmul(a, b) against the reference; tol is relative to the sum of |terms|. */
static void check_matmul(const lark_tensor *a, const lark_tensor *b, double tol, const char *what) {
  int ond;
  int64_t oshape[LARK_MAX_DIMS + 2];
  double *scale;
  double *want = matmul_ref(a, b, &ond, oshape, &scale);
  lark_tensor *out = lark_matmul(a, b);
  char sa[128], sb[128];
  lark_shape_str(a->ndim, a->shape, sa, sizeof sa);
  lark_shape_str(b->ndim, b->shape, sb, sizeof sb);
  lark_dtype dt = a->dtype == LARK_FLOAT64 || b->dtype == LARK_FLOAT64 ? LARK_FLOAT64 : LARK_FLOAT32;
  if (!out || out->ndim != ond || memcmp(out->shape, oshape, sizeof(int64_t) * (size_t)ond) || out->dtype != dt) {
    CHECK(false, "%s: matmul %s @ %s: wrong result shape or dtype", what, sa, sb);
  } else {
    int64_t c[LARK_MAX_DIMS] = {0}, i = 0;
    int bad = 0;
    if (lark_numel(out) > 0) do {
        double got = at(out, c);
        if (!(fabs(got - want[i]) <= tol * (scale[i] + 1e-30)) && !(got == 0 && want[i] == 0)) {
          if (!bad)
            fprintf(stderr, "  %s %s @ %s: element %lld is %.17g, expected %.17g\n", what, sa, sb, (long long)i, got,
                    want[i]);
          bad++;
        }
        i++;
      } while (next_coord(out->ndim, out->shape, c));
    CHECK(bad == 0, "%s: matmul %s @ %s (%s): %d elements differ", what, sa, sb, lark_dtype_name(dt), bad);
  }
  lark_tensor_release(out);
  free(want);
  free(scale);
}

static void test_matmul_cases(void) {
  static const lark_dtype dts[2] = {LARK_FLOAT32, LARK_FLOAT64};
  for (int di = 0; di < 2; di++) {
    lark_dtype dt = dts[di];
    double tol = dt == LARK_FLOAT64 ? 1e-12 : 1e-5;
    struct {
      int na, nb;
      int64_t a[5], b[5];
      const char *what;
    } cases[] = {
        {1, 1, {7}, {7}, "1-D . 1-D"},
        {2, 1, {5, 7}, {7}, "2-D . 1-D"},
        {1, 2, {7}, {7, 3}, "1-D . 2-D"},
        {2, 2, {5, 7}, {7, 3}, "2-D . 2-D"},
        {3, 3, {4, 5, 7}, {4, 7, 3}, "3-D . 3-D"},
        {4, 3, {2, 1, 5, 7}, {3, 7, 6}, "broadcast batch (2,1,m,k) . (3,k,n)"},
        {4, 2, {2, 3, 5, 7}, {7, 6}, "N-D . 2-D"},
        {2, 4, {5, 7}, {2, 3, 7, 6}, "2-D . N-D"},
        {3, 1, {4, 5, 7}, {7}, "3-D . 1-D"},
        {1, 3, {7}, {4, 7, 3}, "1-D . 3-D"},
        {3, 3, {1, 5, 7}, {4, 7, 3}, "batch 1 . batch 4"},
        {2, 2, {5, 0}, {0, 3}, "k = 0"},
        {3, 3, {2, 0, 4}, {2, 4, 3}, "m = 0"},
        {2, 2, {1, 1}, {1, 1}, "1x1 . 1x1"},
        {2, 2, {33, 65}, {65, 17}, "odd sizes"},
        {1, 1, {0}, {0}, "empty dot"},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
      for (int la = 0; la < 5; la++)
        for (int lb = 0; lb < 5; lb++) {
          lark_tensor *a = rand_operand(cases[ci].na, cases[ci].a, dt, la);
          lark_tensor *b = rand_operand(cases[ci].nb, cases[ci].b, dt, lb);
          check_matmul(a, b, tol, cases[ci].what);
          lark_tensor_release(a);
          lark_tensor_release(b);
        }
  }

  /* random shapes: batches of up to 3 dims with size-1 dims broadcast, mixed dtypes and layouts */
  for (int trial = 0; trial < 300; trial++) {
    int nbatch = (int)rand_int(4), na = nbatch + 2, nb = nbatch + 2;
    int64_t m = 1 + rand_int(9), k = rand_int(9), n = 1 + rand_int(9);
    int64_t sa[6], sb[6];
    for (int i = 0; i < nbatch; i++) {
      int64_t s = 1 + rand_int(3);
      sa[i] = rand_int(3) == 0 ? 1 : s;
      sb[i] = rand_int(3) == 0 ? 1 : s;
    }
    sa[nbatch] = m, sa[nbatch + 1] = k, sb[nbatch] = k, sb[nbatch + 1] = n;
    int dropa = (int)rand_int(nbatch + 1), dropb = (int)rand_int(nbatch + 1); /* fewer batch dims on one side */
    if (rand_int(2)) dropa = 0;
    else dropb = 0;
    lark_dtype da = rand_int(2) ? LARK_FLOAT32 : LARK_FLOAT64, db = rand_int(3) ? da : (da == LARK_FLOAT32 ? LARK_FLOAT64 : LARK_FLOAT32);
    lark_tensor *a = rand_operand(na - dropa, sa + dropa, da, (int)rand_int(5));
    lark_tensor *b = rand_operand(nb - dropb, sb + dropb, db, (int)rand_int(5));
    double tol = (da == LARK_FLOAT64 && db == LARK_FLOAT64) ? 1e-12 : 1e-5;
    check_matmul(a, b, tol, "random");
    lark_tensor_release(a);
    lark_tensor_release(b);
  }

  /* a column expanded from one element (stride 0 down the rows): it must not be read as stride 1 */
  lark_tensor *one = lark_full(2, (int64_t[]){1, 1}, 2, LARK_FLOAT64, NULL);
  lark_tensor *col = lark_expand(one, 2, (int64_t[]){3, 1});
  lark_tensor *row = lark_full(2, (int64_t[]){1, 2}, 1.5, LARK_FLOAT64, NULL);
  lark_tensor *out = lark_matmul(col, row);
  for (int64_t i = 0; out && i < 6; i++)
    CHECK(((double *)lark_data_ptr(out))[i] == 3, "expanded column @ row: element %lld", (long long)i);
  lark_tensor_release(out);
  lark_tensor_release(row);
  lark_tensor_release(col);
  lark_tensor_release(one);
}

/* lark_gemm: out = beta * out + alpha * a @ b on 2-D operands, in place in out. */
static void test_gemm(void) {
  static const lark_dtype dts[2] = {LARK_FLOAT32, LARK_FLOAT64};
  static const double ab[][2] = {{1, 0}, {2, 0}, {1, 1}, {-0.5, 3}, {0, 2}};
  for (int di = 0; di < 2; di++)
    for (size_t ai = 0; ai < sizeof ab / sizeof ab[0]; ai++)
      for (int la = 0; la < 3; la++)
        for (int lb = 0; lb < 3; lb++)
          for (int64_t k = 0; k < 8; k += 7) {
            lark_dtype dt = dts[di];
            double alpha = ab[ai][0], beta = ab[ai][1], tol = dt == LARK_FLOAT64 ? 1e-12 : 1e-5;
            int64_t m = 6, n = 5;
            lark_tensor *a = rand_operand(2, (int64_t[]){m, k}, dt, la);
            lark_tensor *b = rand_operand(2, (int64_t[]){k, n}, dt, lb);
            /* out is a row-major view with a leading dimension wider than n */
            lark_tensor *obase = lark_empty(2, (int64_t[]){m, n + 2}, dt, NULL);
            lark_tensor *out = lark_narrow(obase, 1, 1, n);
            fill_uniform(obase, -1, 1);
            double before[6][5];
            for (int64_t i = 0; i < m; i++)
              for (int64_t j = 0; j < n; j++) before[i][j] = at(out, (int64_t[]){i, j});
            CHECK(lark_gemm(out, a, b, alpha, beta) == 0, "gemm alpha %g beta %g", alpha, beta);
            int bad = 0;
            for (int64_t i = 0; i < m; i++)
              for (int64_t j = 0; j < n; j++) {
                double sum = 0, sc = fabs(beta * before[i][j]);
                for (int64_t p = 0; p < k; p++) {
                  double x = at(a, (int64_t[]){i, p}) * at(b, (int64_t[]){p, j});
                  sum += x;
                  sc += fabs(alpha * x);
                }
                double want = beta * before[i][j] + alpha * sum, got = at(out, (int64_t[]){i, j});
                if (!(fabs(got - want) <= tol * (sc + 1e-30)) && !(got == 0 && want == 0)) bad++;
              }
            /* the padding columns of out's storage are untouched */
            for (int64_t i = 0; i < m; i++) {
              int64_t c0[2] = {i, 0}, c1[2] = {i, n + 1};
              double v0 = at(obase, c0), v1 = at(obase, c1);
              if (!(v0 >= -1 && v0 <= 1 && v1 >= -1 && v1 <= 1)) bad++;
            }
            CHECK(bad == 0, "gemm %s alpha %g beta %g layouts %d %d k %lld: %d elements wrong", lark_dtype_name(dt), alpha,
                  beta, la, lb, (long long)k, bad);
            lark_tensor_release(out);
            lark_tensor_release(obase);
            lark_tensor_release(a);
            lark_tensor_release(b);
          }

  /* errors */
  lark_tensor *a = lark_zeros(2, (int64_t[]){2, 3}, LARK_FLOAT32, NULL), *b = lark_zeros(2, (int64_t[]){4, 2}, LARK_FLOAT32, NULL);
  lark_tensor *o = lark_zeros(2, (int64_t[]){2, 2}, LARK_FLOAT32, NULL), *od = lark_zeros(2, (int64_t[]){2, 2}, LARK_FLOAT64, NULL);
  lark_tensor *b32 = lark_zeros(2, (int64_t[]){3, 2}, LARK_FLOAT32, NULL);
  CHECK(lark_gemm(o, a, b, 1, 0) == LARK_ERR_SHAPE && error_has("gemm: shapes [2,3] @ [4,2] -> [2,2] do not fit"),
        "gemm of mismatched shapes");
  CHECK(lark_gemm(od, a, b32, 1, 0) == LARK_ERR_DTYPE && error_has("gemm: expected one float dtype"),
        "gemm of mixed dtypes");
  lark_tensor *ot = lark_transpose(o, 0, 1);
  CHECK(lark_gemm(ot, a, b32, 1, 0) < 0 && error_has("gemm: out must be row-major"), "gemm into a transposed out");
  lark_tensor *o11 = lark_zeros(2, (int64_t[]){1, 1}, LARK_FLOAT32, NULL);
  lark_tensor *oe = lark_expand(o11, 2, (int64_t[]){2, 1});
  lark_tensor *b1 = lark_zeros(2, (int64_t[]){3, 1}, LARK_FLOAT32, NULL);
  CHECK(lark_gemm(oe, a, b1, 1, 0) < 0 && error_has("gemm: out must be row-major"),
        "gemm into an expanded out (stride 0) must not write past it");
  lark_tensor_release(oe);
  lark_tensor_release(o11);
  lark_tensor_release(b1);
  lark_tensor_release(ot);
  lark_tensor_release(a);
  lark_tensor_release(b);
  lark_tensor_release(o);
  lark_tensor_release(od);
  lark_tensor_release(b32);
}

static void test_matmul_errors(void) {
  lark_tensor *a = lark_zeros(2, (int64_t[]){2, 3}, LARK_FLOAT32, NULL), *b = lark_zeros(2, (int64_t[]){4, 5}, LARK_FLOAT32, NULL);
  CHECK(lark_matmul(a, b) == NULL && error_has("matmul: shapes [2,3] and [4,5] do not fit (inner sizes 3 and 4 differ)"),
        "inner size mismatch");
  lark_tensor *v = lark_zeros(1, (int64_t[]){4}, LARK_FLOAT32, NULL);
  CHECK(lark_matmul(a, v) == NULL && error_has("matmul: shapes [2,3] and [4] do not fit"), "matrix @ wrong vector");
  lark_tensor *i64 = lark_zeros(2, (int64_t[]){3, 2}, LARK_INT64, NULL);
  CHECK(lark_matmul(a, i64) == NULL && lark_error_code() == LARK_ERR_DTYPE &&
            error_has("matmul: expected float32 or float64 tensors, got float32 and int64"),
        "int64 operand");
  lark_tensor *s = lark_scalar(1, LARK_FLOAT32, NULL);
  CHECK(lark_matmul(s, a) == NULL && error_has("matmul: both operands need at least 1 dim, got shapes [] and [2,3]"),
        "0-d operand");
  lark_tensor *b3 = lark_zeros(3, (int64_t[]){2, 3, 4}, LARK_FLOAT32, NULL), *c3 = lark_zeros(3, (int64_t[]){3, 4, 5}, LARK_FLOAT32, NULL);
  CHECK(lark_matmul(b3, c3) == NULL && error_has("matmul:") && error_has("cannot be broadcast"),
        "batch dims that do not broadcast");
  lark_tensor_release(a);
  lark_tensor_release(b);
  lark_tensor_release(v);
  lark_tensor_release(i64);
  lark_tensor_release(s);
  lark_tensor_release(b3);
  lark_tensor_release(c3);
}

int main(void) {
  rand_seed(0xD1B54A32D192ED03ull);
  lark_set_num_threads(2);
  int64_t start = lark_bytes_allocated(LARK_CPU);
  test_matmul_cases();
  test_gemm();
  test_matmul_errors();
  CHECK_NO_LEAK(start);
  return check_report("test_matmul");
}
