/* test_cuda.c: the CUDA backend against the CPU backend, through lark.h only.
 *
 * Without a CUDA device (a CPU-only build, no GPU, or no driver) it checks that asking for one
 * fails cleanly with a message naming CUDA, prints "skipped: no CUDA device" and passes. With one,
 * every result computed on the GPU is brought back and compared with the same op on the CPU:
 * exactly for integers, bools, conversions and IEEE-exact float ops, with a tolerance for pow and
 * matmul (summation order differs between OpenBLAS and cuBLAS). */
#include "check.h"

static const lark_device CPU = {LARK_CPU, 0};
static const lark_device GPU = {LARK_CUDA, 0};

/* Set when the backend is spec/cuda_emu's host emulation of the kernels (ctest's c.emu_test_cuda):
 * device memory is host memory there, so the allocator's checks (its counters, reuse, out of
 * memory, missing devices, pinned memory) do not apply and are skipped. */
static bool emulated;

/* ---- data ----------------------------------------------------------------------------------- */

/* A CPU tensor of small values every op handles exactly: floats are multiples of 1/8 in [-4, 4],
 * int64 in [-5, 5], uint8 in [0, 19], bools 0/1. */
static lark_tensor *small_values(int ndim, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(ndim, shape, dt, NULL);
  for (int64_t i = 0, n = lark_numel(t); i < n; i++) {
    uint64_t r = rand_u64();
    double v = dt == LARK_FLOAT32 || dt == LARK_FLOAT64 ? (double)((int64_t)(r % 65) - 32) / 8
               : dt == LARK_INT64                      ? (double)((int64_t)(r % 11) - 5)
               : dt == LARK_UINT8                      ? (double)(r % 20)
                                                       : (double)(r & 1);
    data_set(t, i, v);
  }
  return t;
}

/* Uniform in [-1, 1) with a full mantissa (for matmul). */
static lark_tensor *uniform(int ndim, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(ndim, shape, dt, NULL);
  fill_uniform(t, -1, 1);
  return t;
}

static lark_tensor *to_cpu(const lark_tensor *t) {
  lark_tensor *c = lark_to(t, t->dtype, &CPU);
  if (!c) return NULL;
  lark_tensor *cc = lark_contiguous(c);
  lark_tensor_release(c);
  return cc;
}

/* got (any device) equals want (CPU): same dtype and shape; integers and bools exactly, floats
 * within tol relative to the largest |want| (tol 0: exactly; NaN matches NaN). */
static void expect_equal(const char *what, const lark_tensor *got, const lark_tensor *want, double tol) {
  char a[128], b[128];
  CHECK(got != NULL, "%s: no result (%s)", what, lark_error());
  if (!got || !want) return;
  CHECK(got->dtype == want->dtype, "%s: dtype %s, expected %s", what, lark_dtype_name(got->dtype),
        lark_dtype_name(want->dtype));
  CHECK(got->ndim == want->ndim && memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)got->ndim) == 0,
        "%s: shape %s, expected %s", what, lark_shape_str(got->ndim, got->shape, a, sizeof a),
        lark_shape_str(want->ndim, want->shape, b, sizeof b));
  if (got->dtype != want->dtype || got->ndim != want->ndim) return;
  lark_tensor *g = to_cpu(got), *w = to_cpu(want);
  CHECK(g && w, "%s: copy to the CPU failed: %s", what, lark_error());
  if (g && w) {
    int64_t n = lark_numel(w), bad = -1;
    double scale = 0;
    const char *pg = lark_data_ptr(g), *pw = lark_data_ptr(w);
    if (w->dtype == LARK_FLOAT32 || w->dtype == LARK_FLOAT64) {
      for (int64_t i = 0; i < n; i++) {
        double y = w->dtype == LARK_FLOAT32 ? ((const float *)pw)[i] : ((const double *)pw)[i];
        if (isfinite(y) && fabs(y) > scale) scale = fabs(y);
      }
      for (int64_t i = 0; i < n && bad < 0; i++) {
        double x = w->dtype == LARK_FLOAT32 ? ((const float *)pg)[i] : ((const double *)pg)[i];
        double y = w->dtype == LARK_FLOAT32 ? ((const float *)pw)[i] : ((const double *)pw)[i];
        bool ok = (isnan(x) && isnan(y)) || x == y || (tol > 0 && fabs(x - y) <= tol * (scale > 1e-30 ? scale : 1));
        if (!ok) bad = i;
      }
    } else {
      size_t es = lark_dtype_size(w->dtype);
      for (int64_t i = 0; i < n && bad < 0; i++)
        if (memcmp(pg + (size_t)i * es, pw + (size_t)i * es, es)) bad = i;
    }
    if (bad >= 0) {
      double x = 0, y = 0;
      lark_get_flat(g, bad, &x);
      lark_get_flat(w, bad, &y);
      CHECK(0, "%s: element %lld is %.17g, expected %.17g", what, (long long)bad, x, y);
    } else {
      CHECK(1, "%s", what);
    }
  }
  lark_tensor_release(g);
  lark_tensor_release(w);
}

/* f() returned NULL or an error status and the message contains `needle`. */
static void expect_error(const char *what, bool failed, const char *needle) {
  CHECK(failed, "%s: expected an error", what);
  if (failed) CHECK(error_has(needle), "%s: message '%s' lacks '%s'", what, lark_error(), needle);
  lark_clear_error();
}

static lark_tensor *gpu(const lark_tensor *t) { return lark_to(t, t->dtype, &GPU); }

static const lark_dtype all_dtypes[] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64, LARK_UINT8, LARK_BOOL};
#define NDT 5

/* ---- without a device ----------------------------------------------------------------------- */

static int no_device(void) {
  CHECK(lark_cuda_device_count() == 0, "device_count is %d without a device", lark_cuda_device_count());
  CHECK(lark_cuda_synchronize() == 0, "synchronize without a device: %s", lark_error());
  lark_tensor *e = lark_empty(1, (int64_t[]){4}, LARK_FLOAT32, &GPU);
  expect_error("empty on cuda without a device", e == NULL, "cuda");
  lark_tensor *c = lark_ones(2, (int64_t[]){2, 3}, LARK_FLOAT32, NULL);
  lark_tensor *m = lark_to(c, LARK_FLOAT32, &GPU);
  expect_error("to(cuda) without a device", m == NULL, "cuda");
  CHECK(lark_bytes_allocated(LARK_CUDA) == 0, "no CUDA bytes without a device");
  lark_tensor_release(e);
  lark_tensor_release(m);
  lark_tensor_release(c);
  printf("skipped: no CUDA device (%d checks of the CPU-only behaviour, %d failed)\n", checks, failures);
  return failures != 0;
}

/* ---- with a device -------------------------------------------------------------------------- */

static void test_round_trip(void) {
  for (int d = 0; d < NDT; d++) {
    lark_dtype dt = all_dtypes[d];
    char what[128];
    lark_tensor *x = small_values(3, (int64_t[]){3, 4, 5}, dt);
    lark_tensor *g = gpu(x);
    CHECK(g && lark_tensor_device(g).kind == LARK_CUDA, "to(cuda) %s: %s", lark_dtype_name(dt), lark_error());
    snprintf(what, sizeof what, "round trip %s", lark_dtype_name(dt));
    expect_equal(what, g, x, 0);

    /* a transposed CPU view goes up, a transposed GPU view comes down */
    lark_tensor *xt = lark_transpose(x, 0, 2), *gt = gpu(xt), *gv = g ? lark_transpose(g, 0, 2) : NULL;
    snprintf(what, sizeof what, "round trip of a transposed CPU view %s", lark_dtype_name(dt));
    expect_equal(what, gt, xt, 0);
    snprintf(what, sizeof what, "a transposed GPU view back to the CPU %s", lark_dtype_name(dt));
    expect_equal(what, gv, xt, 0);
    /* a narrowed, transposed GPU view made contiguous on the GPU (the strided copy kernel) */
    lark_tensor *gn = gv ? lark_narrow(gv, 1, 1, 2) : NULL, *gc = gn ? lark_contiguous(gn) : NULL;
    lark_tensor *xn = lark_narrow(xt, 1, 1, 2);
    snprintf(what, sizeof what, "contiguous() of a narrowed GPU view %s", lark_dtype_name(dt));
    expect_equal(what, gc, xn, 0);
    CHECK(gc && lark_is_contiguous(gc) && lark_tensor_device(gc).kind == LARK_CUDA, "contiguous() stays on cuda");

    /* 0-d and empty tensors */
    lark_tensor *s = lark_scalar(3, dt, NULL), *gs = gpu(s);
    snprintf(what, sizeof what, "0-d round trip %s", lark_dtype_name(dt));
    expect_equal(what, gs, s, 0);
    lark_tensor *z = lark_empty(2, (int64_t[]){0, 3}, dt, NULL), *gz = gpu(z);
    snprintf(what, sizeof what, "empty round trip %s", lark_dtype_name(dt));
    expect_equal(what, gz, z, 0);
    lark_tensor *ge = lark_empty(2, (int64_t[]){3, 0}, dt, &GPU), *gec = ge ? lark_clone(ge) : NULL;
    CHECK(gec != NULL, "clone of an empty GPU tensor: %s", lark_error());

    lark_tensor *ts[] = {x, g, xt, gt, gv, gn, gc, xn, s, gs, z, gz, ge, gec};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) lark_tensor_release(ts[i]);
  }
}

static void test_conversions(void) {
  /* values that exercise every rule: fractions, negatives, > 255, huge, NaN, infinities */
  static const double specials[] = {0, 1, -1, 0.5, -0.5, 2.75, -3.99, 255, 256, 300.5, -7,
                                    1e10, -1e10, 1e20, -1e20, NAN, INFINITY, -INFINITY, 4096, 17};
  int n = (int)(sizeof specials / sizeof specials[0]);
  lark_tensor *f64 = lark_empty(2, (int64_t[]){4, 5}, LARK_FLOAT64, NULL);
  for (int i = 0; i < n; i++) data_set(f64, i, specials[i]);
  for (int s = 0; s < NDT; s++) {
    lark_tensor *src = lark_to(f64, all_dtypes[s], NULL); /* CPU conversion makes each source dtype */
    lark_tensor *gsrc = gpu(src), *gsrc_t = gsrc ? lark_transpose(gsrc, 0, 1) : NULL;
    lark_tensor *src_t = lark_transpose(src, 0, 1);
    for (int d = 0; d < NDT; d++) {
      char what[128];
      lark_tensor *want = lark_to(src, all_dtypes[d], NULL);
      lark_tensor *got = gsrc ? lark_to(gsrc, all_dtypes[d], NULL) : NULL; /* converted on the GPU */
      snprintf(what, sizeof what, "convert %s -> %s on cuda", lark_dtype_name(all_dtypes[s]), lark_dtype_name(all_dtypes[d]));
      expect_equal(what, got, want, 0);
      /* strided source, strided destination: copy a transposed view into a transposed view */
      lark_tensor *want_t = lark_to(src_t, all_dtypes[d], NULL);
      lark_tensor *dst = lark_empty(2, (int64_t[]){4, 5}, all_dtypes[d], &GPU);
      lark_tensor *dst_t = dst ? lark_transpose(dst, 0, 1) : NULL;
      int rc = dst_t && gsrc_t ? lark_copy_(dst_t, gsrc_t) : -1;
      CHECK(rc == 0, "copy_ into a transposed view: %s", lark_error());
      snprintf(what, sizeof what, "strided convert %s -> %s on cuda", lark_dtype_name(all_dtypes[s]),
               lark_dtype_name(all_dtypes[d]));
      expect_equal(what, dst_t, want_t, 0);
      lark_tensor_release(want);
      lark_tensor_release(got);
      lark_tensor_release(want_t);
      lark_tensor_release(dst);
      lark_tensor_release(dst_t);
    }
    lark_tensor_release(src);
    lark_tensor_release(src_t);
    lark_tensor_release(gsrc);
    lark_tensor_release(gsrc_t);
  }
  lark_tensor_release(f64);

  /* a broadcast (stride 0) source copied into a GPU tensor */
  lark_tensor *row = small_values(2, (int64_t[]){1, 5}, LARK_FLOAT32), *grow = gpu(row);
  lark_tensor *want = lark_expand(row, 2, (int64_t[]){3, 5});
  lark_tensor *dst = lark_empty(2, (int64_t[]){3, 5}, LARK_FLOAT64, &GPU);
  CHECK(dst && grow && lark_copy_(dst, grow) == 0, "copy_ of a broadcast row: %s", lark_error());
  lark_tensor *want64 = lark_to(want, LARK_FLOAT64, NULL);
  expect_equal("copy_ of a broadcast row with conversion", dst, want64, 0);
  lark_tensor *ts[] = {row, grow, want, dst, want64};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) lark_tensor_release(ts[i]);
}

static void test_fill(void) {
  static const double values[] = {0, 2.75, -3, 300, NAN, -1e30};
  for (int d = 0; d < NDT; d++) {
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
      char what[128];
      lark_dtype dt = all_dtypes[d];
      lark_tensor *want = lark_full(2, (int64_t[]){7, 9}, values[v], dt, NULL);
      lark_tensor *got = lark_full(2, (int64_t[]){7, 9}, values[v], dt, &GPU);
      snprintf(what, sizeof what, "full(%g) %s", values[v], lark_dtype_name(dt));
      expect_equal(what, got, want, 0);
      lark_tensor_release(want);
      lark_tensor_release(got);
    }
    /* fill a strided view: only its elements change */
    lark_dtype dt = all_dtypes[d];
    lark_tensor *x = small_values(2, (int64_t[]){6, 8}, dt), *g = gpu(x);
    lark_tensor *xt = lark_transpose(x, 0, 1), *xv = lark_slice(xt, 0, 1, 8, 3);
    lark_tensor *gt = g ? lark_transpose(g, 0, 1) : NULL, *gv = gt ? lark_slice(gt, 0, 1, 8, 3) : NULL;
    CHECK(gv && lark_fill_(gv, 1) == 0, "fill_ of a strided GPU view: %s", lark_error());
    lark_fill_(xv, 1);
    char what[128];
    snprintf(what, sizeof what, "fill_ of a strided view %s", lark_dtype_name(dt));
    expect_equal(what, g, x, 0);
    lark_tensor_release(xv);
    lark_tensor_release(xt);
    lark_tensor_release(x);
    lark_tensor_release(g);
    lark_tensor_release(gt);
    lark_tensor_release(gv);
  }
  /* 0-d, empty */
  lark_tensor *s = lark_scalar(0, LARK_FLOAT32, &GPU);
  CHECK(s && lark_fill_(s, 5) == 0, "fill_ of a 0-d GPU tensor: %s", lark_error());
  double v = 0;
  CHECK(s && lark_get_flat(s, 0, &v) == 0 && v == 5, "0-d fill gives %g", v);
  lark_tensor *z = lark_empty(1, (int64_t[]){0}, LARK_INT64, &GPU);
  CHECK(z && lark_fill_(z, 5) == 0, "fill_ of an empty GPU tensor: %s", lark_error());
  lark_tensor_release(s);
  lark_tensor_release(z);
}

/* op on the CPU operands a, b and on their GPU twins ga, gb (same values and shapes; the layouts
 * of the GPU twins are what the test is about). */
static void check_binary(lark_binary_op op, const lark_tensor *a, const lark_tensor *b, const lark_tensor *ga,
                         const lark_tensor *gb, const char *layout) {
  char what[160];
  snprintf(what, sizeof what, "%s %s %s (%s)", lark_binary_op_name(op), lark_dtype_name(a->dtype),
           lark_dtype_name(b->dtype), layout);
  lark_tensor *want = lark_binary(op, a, b);
  if (!want) { /* the front function refuses it on the CPU: it must refuse it on the GPU the same way */
    char msg[256];
    snprintf(msg, sizeof msg, "%s", lark_error());
    lark_clear_error();
    lark_tensor *got = lark_binary(op, ga, gb);
    CHECK(got == NULL && strcmp(lark_error(), msg) == 0, "%s: cpu says '%s', cuda says '%s'", what, msg,
          got ? "(a result)" : lark_error());
    lark_clear_error();
    lark_tensor_release(got);
    return;
  }
  lark_tensor *got = lark_binary(op, ga, gb);
  /* pow goes through libm on the CPU and CUDA's pow on the GPU: a few ulps apart */
  double tol = op == LARK_OP_POW ? (want->dtype == LARK_FLOAT32 ? 1e-6 : 1e-14) : 0;
  expect_equal(what, got, want, tol);
  lark_tensor_release(want);
  lark_tensor_release(got);
}

static void test_binary(void) {
  for (int da = 0; da < NDT; da++) {
    for (int db = 0; db < NDT; db++) {
      lark_tensor *a = small_values(3, (int64_t[]){3, 1, 5}, all_dtypes[da]);
      lark_tensor *b = small_values(2, (int64_t[]){4, 1}, all_dtypes[db]);
      lark_tensor *ga = gpu(a), *gb = gpu(b);
      for (int op = 0; op < LARK_NBINARY; op++) {
        if (!ga || !gb) break;
        check_binary((lark_binary_op)op, a, b, ga, gb, "broadcast");
      }
      lark_tensor_release(a);
      lark_tensor_release(b);
      lark_tensor_release(ga);
      lark_tensor_release(gb);
    }
  }
  /* same dtype, non-contiguous operands: transposed and sliced GPU views */
  for (int d = 0; d < NDT; d++) {
    lark_tensor *a = small_values(2, (int64_t[]){6, 7}, all_dtypes[d]), *b = small_values(2, (int64_t[]){7, 6}, all_dtypes[d]);
    lark_tensor *ga = gpu(a), *gb = gpu(b);
    lark_tensor *bt = lark_transpose(b, 0, 1), *gbt = gb ? lark_transpose(gb, 0, 1) : NULL;
    lark_tensor *as = lark_slice(a, 1, 0, 7, 2), *gas = ga ? lark_slice(ga, 1, 0, 7, 2) : NULL;
    lark_tensor *bs = lark_slice(bt, 1, 1, 7, 2), *gbs = gbt ? lark_slice(gbt, 1, 1, 7, 2) : NULL;
    for (int op = 0; op < LARK_NBINARY && gbt && gas && gbs; op++) {
      check_binary((lark_binary_op)op, a, bt, ga, gbt, "transposed");
      check_binary((lark_binary_op)op, as, bs, gas, gbs, "sliced");
    }
    /* with a number, 0-d tensors, empty tensors */
    lark_tensor *s = lark_scalar(3, all_dtypes[d], NULL), *gs = gpu(s);
    lark_tensor *e = lark_empty(2, (int64_t[]){0, 7}, all_dtypes[d], NULL), *ge = gpu(e);
    check_binary(LARK_OP_MUL, a, s, ga, gs, "0-d second");
    check_binary(LARK_OP_SUB, s, a, gs, ga, "0-d first");
    check_binary(LARK_OP_ADD, s, s, gs, gs, "0-d both");
    check_binary(LARK_OP_ADD, e, a, ge, ga, "empty");
    lark_tensor *ts[] = {a, b, ga, gb, bt, gbt, as, gas, bs, gbs, s, gs, e, ge};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) lark_tensor_release(ts[i]);
  }
  /* in place on a strided GPU view, and with a scalar: a[:, ::2] += b */
  lark_tensor *a = small_values(2, (int64_t[]){5, 8}, LARK_FLOAT32), *b = small_values(1, (int64_t[]){4}, LARK_FLOAT32);
  lark_tensor *ga = gpu(a), *gb = gpu(b);
  lark_tensor *av = lark_slice(a, 1, 0, 8, 2), *gav = ga ? lark_slice(ga, 1, 0, 8, 2) : NULL;
  CHECK(gav && lark_binary_(LARK_OP_ADD, gav, gb) == 0, "add_ on a GPU view: %s", lark_error());
  lark_binary_(LARK_OP_ADD, av, b);
  expect_equal("add_ on a strided view", ga, a, 0);
  CHECK(ga && lark_binary_scalar_(LARK_OP_MUL, ga, 0.5) == 0, "mul_ by a number on cuda: %s", lark_error());
  lark_binary_scalar_(LARK_OP_MUL, a, 0.5);
  expect_equal("mul_ by a number", ga, a, 0);
  lark_tensor *want = lark_binary_scalar(LARK_OP_DIV, a, 3, true, true), *got = ga ? lark_binary_scalar(LARK_OP_DIV, ga, 3, true, true) : NULL;
  expect_equal("3 / t", got, want, 0);
  lark_tensor *ts[] = {a, b, ga, gb, av, gav, want, got};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) lark_tensor_release(ts[i]);

  /* a problem larger than one grid (the grid-stride loop) on the strided path */
  lark_tensor *x = small_values(2, (int64_t[]){1500, 1500}, LARK_FLOAT32), *y = small_values(2, (int64_t[]){1500, 1500}, LARK_FLOAT32);
  lark_tensor *gx = gpu(x), *gy = gpu(y);
  lark_tensor *yt = lark_transpose(y, 0, 1), *gyt = gy ? lark_transpose(gy, 0, 1) : NULL;
  if (gx && gyt) check_binary(LARK_OP_ADD, x, yt, gx, gyt, "large, transposed");
  if (gx && gy) check_binary(LARK_OP_MUL, x, y, gx, gy, "large, contiguous");
  lark_tensor *ts2[] = {x, y, gx, gy, yt, gyt};
  for (size_t i = 0; i < sizeof ts2 / sizeof ts2[0]; i++) lark_tensor_release(ts2[i]);
}

/* a (shape_a) @ b (shape_b) on both devices. ta/tb: the operand is the transpose of a contiguous
 * tensor (its last two dims column-major), on the CPU and, moved as the contiguous tensor and
 * transposed there, on the GPU, so cuBLAS reads it in place with CUBLAS_OP_T. */
static void check_matmul(lark_dtype dt, int na, const int64_t *sa, bool ta, int nb, const int64_t *sb, bool tb) {
  char what[256], x[64], y[64];
  snprintf(what, sizeof what, "matmul %s%s @ %s%s %s", lark_shape_str(na, sa, x, sizeof x), ta ? "(T)" : "",
           lark_shape_str(nb, sb, y, sizeof y), tb ? "(T)" : "", lark_dtype_name(dt));
  lark_tensor *cpu_ops[2] = {NULL, NULL}, *gpu_ops[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++) {
    int n = k ? nb : na;
    bool t = (k ? tb : ta) && n >= 2;
    int64_t s[LARK_MAX_DIMS];
    memcpy(s, k ? sb : sa, sizeof(int64_t) * (size_t)n);
    if (t) { /* the transposed shape, contiguous */
      int64_t tmp = s[n - 1];
      s[n - 1] = s[n - 2];
      s[n - 2] = tmp;
    }
    lark_tensor *c = uniform(n, s, dt), *g = gpu(c);
    cpu_ops[k] = t ? lark_transpose(c, -1, -2) : lark_tensor_retain(c);
    gpu_ops[k] = g && t ? lark_transpose(g, -1, -2) : lark_tensor_retain(g);
    lark_tensor_release(c);
    lark_tensor_release(g);
  }
  lark_tensor *want = lark_matmul(cpu_ops[0], cpu_ops[1]);
  CHECK(want != NULL, "%s on the CPU: %s", what, lark_error());
  lark_tensor *got = gpu_ops[0] && gpu_ops[1] ? lark_matmul(gpu_ops[0], gpu_ops[1]) : NULL;
  expect_equal(what, got, want, dt == LARK_FLOAT32 ? 1e-5 : 1e-12);
  for (int k = 0; k < 2; k++) {
    lark_tensor_release(cpu_ops[k]);
    lark_tensor_release(gpu_ops[k]);
  }
  lark_tensor_release(want);
  lark_tensor_release(got);
}

static void test_matmul(void) {
  static const int64_t mkn[][3] = {{1, 1, 1}, {3, 4, 5}, {17, 33, 9}, {64, 64, 64}, {1, 7, 1}, {5, 0, 3}, {0, 3, 4}, {130, 70, 90}};
  for (int d = 0; d < 2; d++) {
    lark_dtype dt = d ? LARK_FLOAT64 : LARK_FLOAT32;
    for (size_t i = 0; i < sizeof mkn / sizeof mkn[0]; i++) {
      int64_t m = mkn[i][0], k = mkn[i][1], n = mkn[i][2];
      for (int t = 0; t < 4; t++)
        check_matmul(dt, 2, (int64_t[]){m, k}, t & 1, 2, (int64_t[]){k, n}, t & 2);
    }
    /* batches: folded into rows, strided-batched, broadcast batch dims, a broadcast operand */
    check_matmul(dt, 4, (int64_t[]){2, 3, 4, 5}, false, 2, (int64_t[]){5, 6}, false);
    check_matmul(dt, 4, (int64_t[]){2, 3, 4, 5}, true, 2, (int64_t[]){5, 6}, true);
    check_matmul(dt, 3, (int64_t[]){4, 3, 5}, false, 3, (int64_t[]){4, 5, 2}, false);
    check_matmul(dt, 3, (int64_t[]){4, 3, 5}, true, 3, (int64_t[]){4, 5, 2}, true);
    check_matmul(dt, 4, (int64_t[]){2, 1, 3, 4}, false, 4, (int64_t[]){1, 5, 4, 6}, true);
    check_matmul(dt, 2, (int64_t[]){3, 4}, false, 3, (int64_t[]){6, 4, 2}, false);
    check_matmul(dt, 3, (int64_t[]){0, 3, 4}, false, 2, (int64_t[]){4, 2}, false);
    /* vectors */
    check_matmul(dt, 1, (int64_t[]){4}, false, 2, (int64_t[]){4, 3}, false);
    check_matmul(dt, 2, (int64_t[]){3, 4}, true, 1, (int64_t[]){4}, false);
    check_matmul(dt, 1, (int64_t[]){9}, false, 1, (int64_t[]){9}, false);
    check_matmul(dt, 3, (int64_t[]){2, 3, 4}, false, 1, (int64_t[]){4}, false);
  }
  /* lark_gemm with alpha and beta into a row-major out */
  lark_tensor *a = uniform(2, (int64_t[]){5, 6}, LARK_FLOAT32), *b = uniform(2, (int64_t[]){6, 7}, LARK_FLOAT32);
  lark_tensor *o = uniform(2, (int64_t[]){5, 7}, LARK_FLOAT32);
  lark_tensor *ga = gpu(a), *gb = gpu(b), *go = gpu(o);
  CHECK(go && lark_gemm(go, ga, gb, 2.0, 0.5) == 0, "gemm on cuda: %s", lark_error());
  lark_gemm(o, a, b, 2.0, 0.5);
  expect_equal("gemm alpha 2, beta 0.5", go, o, 1e-5);
  lark_tensor *ts[] = {a, b, o, ga, gb, go};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) lark_tensor_release(ts[i]);
}

static void test_errors(void) {
  lark_tensor *c = lark_ones(2, (int64_t[]){2, 2}, LARK_FLOAT32, NULL), *g = gpu(c);
  lark_tensor *r = g ? lark_add(g, c) : NULL;
  expect_error("add across devices", r == NULL, "add: the first operand is on cuda:0 but the second operand is on cpu");
  lark_tensor_release(r);
  r = g ? lark_matmul(c, g) : NULL;
  expect_error("matmul across devices", r == NULL, "matmul: the first operand is on cpu but the second operand is on cuda:0");
  lark_tensor_release(r);
  /* cumsum, once an op this backend lacked, runs (test_device_dispatch.c checks a missing kernel's error) */
  r = g ? lark_cumsum(g, 0) : NULL;
  CHECK(r != NULL, "cumsum on cuda");
  lark_tensor_release(r);
  if (emulated) {
    lark_tensor_release(c);
    lark_tensor_release(g);
    return;
  }
  /* a device ordinal that is not there */
  lark_device missing = {LARK_CUDA, (int8_t)lark_cuda_device_count()};
  r = lark_empty(1, (int64_t[]){3}, LARK_FLOAT32, &missing);
  expect_error("empty on a missing GPU", r == NULL, "not available");
  lark_tensor_release(r);
  /* more memory than any GPU has */
  r = lark_empty(1, (int64_t[]){(int64_t)1 << 50}, LARK_UINT8, &GPU);
  expect_error("a 1 PB tensor", r == NULL, "cuda: out of memory allocating 1125899906842624 bytes (1073741824.00 MiB) on cuda:0");
  CHECK(lark_error_code() == LARK_OK, "clear_error");
  lark_tensor_release(r);
  lark_tensor_release(c);
  lark_tensor_release(g);
}

/* ---- unary, clamp, where ------------------------------------------------------------------- */

/* A 4x5 CPU tensor of dt holding the corner cases: NaN, infinities, -0, halves (round to even),
 * the int64 extremes (neg and abs wrap), uint8's top half, through lark_to's conversions. */
static lark_tensor *edge_values(lark_dtype dt) {
  static const double f[] = {NAN, INFINITY, -INFINITY, -0.0, 0.5, 1.5, 2.5, -2.5, -0.5, 3,
                             -7.25, 1e-3, 100, -100, 1e-30, 42.75, -1e10, 0.1, 88.5, -88.5};
  static const int64_t i[] = {INT64_MIN, INT64_MAX, 0, -1, 1, -3, 3037000500, -5, 7, 255,
                              256, -256, 128, 127, 200, 1000000007, -99, 2, 3, 4};
  lark_tensor *t = lark_empty(2, (int64_t[]){4, 5}, dt, NULL);
  for (int k = 0; k < 20; k++) {
    if (dt == LARK_INT64) ((int64_t *)lark_data_ptr(t))[k] = i[k];
    else if (dt == LARK_UINT8) ((uint8_t *)lark_data_ptr(t))[k] = (uint8_t)i[k];
    else if (dt == LARK_BOOL) ((uint8_t *)lark_data_ptr(t))[k] = (uint8_t)(k % 3 == 0);
    else data_set(t, k, f[k]);
  }
  return t;
}

/* want = cpu_result (or NULL with cpu_msg), got = the GPU's: the same error, or equal results. */
static void expect_same_outcome(const char *what, lark_tensor *got, lark_tensor *want, const char *cpu_msg, double tol) {
  if (!want) {
    CHECK(got == NULL && strcmp(lark_error(), cpu_msg) == 0, "%s: cpu says '%s', cuda says '%s'", what, cpu_msg,
          got ? "(a result)" : lark_error());
    lark_clear_error();
  } else {
    expect_equal(what, got, want, tol);
  }
  lark_tensor_release(want);
  lark_tensor_release(got);
}

static void test_unary(void) {
  for (int d = 0; d < NDT; d++) {
    lark_dtype dt = all_dtypes[d];
    lark_tensor *inputs[2] = {edge_values(dt), small_values(2, (int64_t[]){6, 7}, dt)};
    for (int in = 0; in < 2; in++) {
      lark_tensor *x = inputs[in], *g = gpu(x);
      lark_tensor *xt = lark_transpose(x, 0, 1), *gt = g ? lark_transpose(g, 0, 1) : NULL;
      for (int op = 0; op < LARK_NUNARY; op++) {
        if (!g) break;
        lark_unary_op u = (lark_unary_op)op;
        /* libm functions differ between the CPU and CUDA in the last bits; small_values keep the
         * results small, so the tolerance relative to the largest result is meaningful there */
        bool approx = u == LARK_OP_EXP || u == LARK_OP_LOG || u == LARK_OP_SIN || u == LARK_OP_COS ||
                      u == LARK_OP_TANH || u == LARK_OP_SIGMOID;
        if (approx && in == 0) continue; /* exp(100) next to exp(0.001): checked by the Lua spec per element */
        double tol = approx ? (dt == LARK_FLOAT64 ? 1e-14 : 1e-6) : 0;
        char what[160], msg[256];
        /* contiguous */
        snprintf(what, sizeof what, "%s %s (%s)", lark_unary_op_name(u), lark_dtype_name(dt), in ? "small" : "edges");
        lark_tensor *want = lark_unary(u, x);
        snprintf(msg, sizeof msg, "%s", lark_error());
        lark_clear_error();
        expect_same_outcome(what, lark_unary(u, g), want, msg, tol);
        /* a transposed view */
        snprintf(what, sizeof what, "%s %s (%s, transposed)", lark_unary_op_name(u), lark_dtype_name(dt),
                 in ? "small" : "edges");
        want = lark_unary(u, xt);
        snprintf(msg, sizeof msg, "%s", lark_error());
        lark_clear_error();
        expect_same_outcome(what, lark_unary(u, gt), want, msg, tol);
        /* in place on a transposed view of a copy (not for libm functions into an integer tensor:
         * a one-ulp difference of exp(19) is a different uint8) */
        if (approx && !lark_dtype_is_float(dt)) continue;
        lark_tensor *xc = lark_clone(x), *gc = lark_clone(g);
        lark_tensor *xct = lark_transpose(xc, 0, 1), *gct = gc ? lark_transpose(gc, 0, 1) : NULL;
        int rc_cpu = lark_unary_(u, xct);
        snprintf(msg, sizeof msg, "%s", lark_error());
        lark_clear_error();
        int rc_gpu = gct ? lark_unary_(u, gct) : -1;
        snprintf(what, sizeof what, "%s_ %s (%s, in place)", lark_unary_op_name(u), lark_dtype_name(dt),
                 in ? "small" : "edges");
        CHECK(rc_cpu == rc_gpu && (rc_cpu == 0 || strcmp(msg, lark_error()) == 0), "%s: cpu %d '%s', cuda %d '%s'", what,
              rc_cpu, msg, rc_gpu, lark_error());
        lark_clear_error();
        if (rc_cpu == 0 && rc_gpu == 0) expect_equal(what, gc, xc, tol);
        lark_tensor *ts[] = {xc, gc, xct, gct};
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) lark_tensor_release(ts[k]);
      }
      lark_tensor_release(g);
      lark_tensor_release(xt);
      lark_tensor_release(gt);
      lark_tensor_release(x);
    }
  }
}

static void test_clamp(void) {
  static const double bounds[][2] = {{-1, 2}, {-2.5, 3.7}, {NAN, 0.5}, {0.5, NAN}, {3, -1}, {-1e30, 1e30},
                                     {-10, 300}, {130, 140}, {-1e19, 1e19}, {INFINITY, -INFINITY}};
  for (int d = 0; d < NDT; d++) {
    lark_dtype dt = all_dtypes[d];
    lark_tensor *x = edge_values(dt), *g = gpu(x);
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0] && g; b++) {
      double lo = bounds[b][0], hi = bounds[b][1];
      char what[160], msg[256];
      snprintf(what, sizeof what, "clamp(%g, %g) %s", lo, hi, lark_dtype_name(dt));
      lark_tensor *want = lark_clamp(x, lo, hi);
      snprintf(msg, sizeof msg, "%s", lark_error());
      lark_clear_error();
      expect_same_outcome(what, lark_clamp(g, lo, hi), want, msg, 0);
      /* in place through a transposed view */
      lark_tensor *xc = lark_clone(x), *gc = lark_clone(g);
      lark_tensor *xct = lark_transpose(xc, 0, 1), *gct = gc ? lark_transpose(gc, 0, 1) : NULL;
      int rc_cpu = lark_clamp_(xct, lo, hi);
      lark_clear_error();
      int rc_gpu = gct ? lark_clamp_(gct, lo, hi) : -1;
      lark_clear_error();
      snprintf(what, sizeof what, "clamp_(%g, %g) %s (transposed)", lo, hi, lark_dtype_name(dt));
      CHECK(rc_cpu == rc_gpu, "%s: cpu %d, cuda %d", what, rc_cpu, rc_gpu);
      if (rc_cpu == 0 && rc_gpu == 0) expect_equal(what, gc, xc, 0);
      lark_tensor *ts[] = {xc, gc, xct, gct};
      for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) lark_tensor_release(ts[k]);
    }
    lark_tensor_release(x);
    lark_tensor_release(g);
  }
}

static void test_where(void) {
  for (int da = 0; da < NDT; da++) {
    for (int db = 0; db < NDT; db += 2) { /* a few mixed pairs: the front promotes them */
      lark_tensor *cond = small_values(3, (int64_t[]){2, 1, 5}, LARK_BOOL);
      lark_tensor *a = small_values(2, (int64_t[]){4, 1}, all_dtypes[da]);
      lark_tensor *b = small_values(3, (int64_t[]){2, 4, 5}, all_dtypes[db]);
      lark_tensor *gcond = gpu(cond), *ga = gpu(a), *gb = gpu(b);
      char what[160];
      snprintf(what, sizeof what, "where %s %s (broadcast)", lark_dtype_name(all_dtypes[da]),
               lark_dtype_name(all_dtypes[db]));
      lark_tensor *want = lark_where(cond, a, b);
      expect_same_outcome(what, gcond && ga && gb ? lark_where(gcond, ga, gb) : NULL, want, "", 0);
      /* a transposed b and a uint8 condition of full shape */
      lark_tensor *c8 = small_values(3, (int64_t[]){2, 5, 4}, LARK_UINT8), *gc8 = gpu(c8);
      lark_tensor *c8t = lark_transpose(c8, 1, 2), *gc8t = gc8 ? lark_transpose(gc8, 1, 2) : NULL;
      lark_tensor *bt = lark_contiguous(b), *btt = lark_transpose(bt, 0, 2);
      lark_tensor *gbt = gpu(btt), *gbtt = gbt ? lark_transpose(gbt, 0, 2) : NULL;
      lark_tensor *btt2 = lark_transpose(btt, 0, 2);
      snprintf(what, sizeof what, "where %s %s (strided)", lark_dtype_name(all_dtypes[da]),
               lark_dtype_name(all_dtypes[db]));
      want = lark_where(c8t, btt2, a);
      expect_same_outcome(what, gc8t && gbtt && ga ? lark_where(gc8t, gbtt, ga) : NULL, want, "", 0);
      lark_tensor *ts[] = {cond, a, b, gcond, ga, gb, c8, gc8, c8t, gc8t, bt, btt, gbt, gbtt, btt2};
      for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) lark_tensor_release(ts[k]);
    }
  }
}

/* The caching allocator on the device: reuse, counters, empty_cache, pinned host buffers. */
static void test_caching(void) {
  CHECK(lark_cuda_synchronize() == 0, "synchronize: %s", lark_error());
  lark_memory_stats s0, s1, s2, s3;
  CHECK(lark_cuda_memory_stats(0, &s0) == 0, "memory_stats: %s", lark_error());
  lark_tensor *t = lark_empty(1, (int64_t[]){1000}, LARK_FLOAT32, &GPU);
  lark_cuda_memory_stats(0, &s1);
  CHECK(t && s1.allocated == s0.allocated + 4096 && s1.requested == s0.requested + 4000 &&
            s1.num_allocs == s0.num_allocs + 1,
        "one 4 KiB block: allocated %lld -> %lld", (long long)s0.allocated, (long long)s1.allocated);
  void *p = t ? lark_data_ptr(t) : NULL;
  lark_tensor_release(t);
  t = lark_empty(1, (int64_t[]){1000}, LARK_FLOAT32, &GPU);
  lark_cuda_memory_stats(0, &s2);
  CHECK(t && lark_data_ptr(t) == p && s2.num_cache_hits == s1.num_cache_hits + 1 &&
            s2.num_raw_allocs == s1.num_raw_allocs && s2.num_frees == s1.num_frees + 1,
        "the freed block is reused from the cache");
  CHECK(t && lark_fill_(t, 2.5) == 0, "fill_ the reused block: %s", lark_error());
  double v = 0;
  CHECK(t && lark_get_flat(t, 999, &v) == 0 && v == 2.5, "the reused block holds 2.5, got %g", v);
  lark_tensor_release(t);
  /* a big block of its own goes back to the driver with empty_cache */
  t = lark_empty(1, (int64_t[]){(int64_t)64 << 20}, LARK_UINT8, &GPU);
  lark_tensor_release(t);
  lark_cuda_memory_stats(0, &s2);
  lark_cuda_empty_cache();
  lark_cuda_memory_stats(0, &s3);
  CHECK(s3.reserved <= s2.reserved - ((int64_t)64 << 20) && s3.num_raw_frees > s2.num_raw_frees &&
            s3.allocated == s2.allocated,
        "empty_cache: reserved %lld -> %lld", (long long)s2.reserved, (long long)s3.reserved);
  lark_cuda_reset_peak_memory_stats(0);
  lark_cuda_memory_stats(0, &s3);
  CHECK(s3.peak_allocated == s3.allocated && s3.peak_reserved == s3.reserved, "reset_peak");
  CHECK(lark_cuda_memory_stats(lark_cuda_device_count(), &s3) == LARK_ERR_DEVICE, "a device that is not there");
  lark_clear_error();
  /* pinned host memory, and a copy from it */
  float *h = lark_cuda_host_alloc(256 * sizeof(float));
  CHECK(h && lark_cuda_host_is_pinned(h), "host_alloc gives pinned memory: %s", lark_error());
  if (h) {
    for (int i = 0; i < 256; i++) h[i] = (float)i;
    lark_tensor *ht = lark_from_blob(h, 1, (int64_t[]){256}, LARK_FLOAT32);
    lark_tensor *gh = ht ? gpu(ht) : NULL;
    CHECK(gh && lark_get_flat(gh, 255, &v) == 0 && v == 255, "a copy from pinned memory: %g", v);
    lark_tensor_release(gh);
    lark_tensor_release(ht);
  }
  lark_cuda_host_free(h);
}

static void test_memory(void) {
  CHECK(lark_cuda_synchronize() == 0, "synchronize: %s", lark_error());
  int64_t before = lark_bytes_allocated(LARK_CUDA);
  lark_tensor *t = lark_zeros(2, (int64_t[]){100, 10}, LARK_FLOAT64, &GPU);
  CHECK(t && lark_bytes_allocated(LARK_CUDA) - before == 8000, "8000 bytes on cuda, got %lld",
        (long long)(lark_bytes_allocated(LARK_CUDA) - before));
  lark_tensor_release(t);
  CHECK(lark_bytes_allocated(LARK_CUDA) == before, "freed");
}

int main(void) {
  rand_seed(88172645463325252ull);
  if (!lark_cuda_is_available()) return no_device();
  emulated = getenv("LARK_CUDA_EMULATED") != NULL;
  if (emulated) printf("the emulated backend: the caching allocator's checks are skipped\n");
  printf("%d CUDA device(s)\n", lark_cuda_device_count());
  test_round_trip();
  test_conversions();
  test_fill();
  test_binary();
  test_matmul();
  test_errors();
  test_unary();
  test_clamp();
  test_where();
  if (!emulated) test_caching();
  test_memory();
  CHECK(lark_cuda_synchronize() == 0, "final synchronize: %s", lark_error());
  return check_report("test_cuda");
}
