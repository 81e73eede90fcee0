/* test_nn_dispatch.c: the device half of norm.c, softmax.c and activation.c, run without a GPU.
 *
 * Those front functions send tensors that are not on the CPU to their backend's layer_norm_*,
 * batch_norm_*, softmax_*, loss_* and gelu_* fields (backend.h), and build the rest (the running
 * statistics' update, the loss's reduction, the gradients' buffers) from other device ops. As in
 * test_device_dispatch.c, a stand-in backend registered for the CUDA device kind keeps its memory
 * on the host (the CPU backend's allocator, copies and elementwise kernels, plus a plain sum) and
 * implements each field as the plainest loop that follows its contract in backend.h word for
 * word, checking the contract's promises (contiguous tensors on the device, the dtypes, the
 * shapes) as it goes. Every result and every gradient through autograd is compared with the same
 * op on the CPU, so what is checked is the front functions' side: routing, arguments, the running
 * statistics, reductions, errors with the CPU's messages, "not implemented for cuda:0" when a
 * field is missing, and no leaks on either device. The real kernels (cuda/norm.cu, softmax.cu,
 * activation.cu) are checked against the CPU on a GPU by spec/nn_gpu_spec.lua.
 *
 * With a CUDA device present the real backend is the one to test: registering a stand-in would
 * replace it in this process, so the test then says so and passes. */
#include "check.h"

#include "autograd.h"
#include "backend.h"

static const lark_device DEV = {LARK_CUDA, 0};

/* ---- the stand-in backend ------------------------------------------------------------------- */

enum { C_LN_F, C_LN_B, C_BN_F, C_BN_B, C_SM_F, C_SM_B, C_LOSS_F, C_LOSS_B, C_GELU_F, C_GELU_B, C_N };
static int calls[C_N];
static lark_backend fake;

/* The contract's promise about t: on the device, contiguous, of dtype dt, numel n (n < 0: any). */
static void promise(const char *op, const char *name, const lark_tensor *t, lark_dtype dt, int64_t n) {
  if (!t) return;
  CHECK(lark_tensor_device(t).kind == LARK_CUDA, "%s: %s is not on the device", op, name);
  CHECK(lark_is_contiguous(t), "%s: %s is not contiguous", op, name);
  CHECK(t->dtype == dt, "%s: %s is %s, expected %s", op, name, lark_dtype_name(t->dtype), lark_dtype_name(dt));
  CHECK(n < 0 || lark_numel(t) == n, "%s: %s has %lld elements, expected %lld", op, name, (long long)lark_numel(t),
        (long long)n);
}

static double get(const lark_tensor *t, int64_t i) { return data_get(t, i); }
static void set(lark_tensor *t, int64_t i, double v) { data_set(t, i, v); }

static int fake_ln_forward(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                           lark_tensor *mean, lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner, double eps) {
  calls[C_LN_F]++;
  const char *op = "layer_norm_forward";
  lark_dtype dt = x->dtype;
  promise(op, "x", x, dt, outer * C * inner), promise(op, "y", y, dt, outer * C * inner);
  promise(op, "w", w, dt, C), promise(op, "b", b, dt, C);
  promise(op, "mean", mean, LARK_FLOAT64, outer * inner), promise(op, "rstd", rstd, LARK_FLOAT64, outer * inner);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double s = 0, v = 0;
      for (int64_t c = 0; c < C; c++) s += get(x, (o * C + c) * inner + i);
      double m = s / (double)C;
      for (int64_t c = 0; c < C; c++) v += pow(get(x, (o * C + c) * inner + i) - m, 2);
      double r = 1.0 / sqrt(v / (double)C + eps);
      for (int64_t c = 0; c < C; c++) {
        int64_t k = (o * C + c) * inner + i;
        set(y, k, (get(x, k) - m) * r * (w ? get(w, c) : 1.0) + (b ? get(b, c) : 0.0));
      }
      set(mean, o * inner + i, m);
      set(rstd, o * inner + i, r);
    }
  return 0;
}

static int fake_ln_backward(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                            const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                            const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner) {
  calls[C_LN_B]++;
  const char *op = "layer_norm_backward";
  lark_dtype dt = x->dtype;
  int64_t n = outer * C * inner;
  promise(op, "x", x, dt, n), promise(op, "g", g, dt, n), promise(op, "dx", dx, dt, n), promise(op, "w", w, dt, C);
  promise(op, "dw", dw, dt, C), promise(op, "db", db, dt, C);
  promise(op, "mean", mean, LARK_FLOAT64, outer * inner), promise(op, "rstd", rstd, LARK_FLOAT64, outer * inner);
  CHECK(dx || dw || db, "%s: called with nothing to compute", op);
  for (int64_t c = 0; c < C; c++) {
    if (dw) set(dw, c, 0);
    if (db) set(db, c, 0);
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double m = get(mean, o * inner + i), r = get(rstd, o * inner + i), s1 = 0, s2 = 0;
      for (int64_t c = 0; c < C; c++) {
        int64_t k = (o * C + c) * inner + i;
        double gy = get(g, k) * (w ? get(w, c) : 1.0), xhat = (get(x, k) - m) * r;
        s1 += gy, s2 += gy * xhat;
        if (dw) set(dw, c, get(dw, c) + get(g, k) * xhat);
        if (db) set(db, c, get(db, c) + get(g, k));
      }
      for (int64_t c = 0; dx && c < C; c++) {
        int64_t k = (o * C + c) * inner + i;
        double gy = get(g, k) * (w ? get(w, c) : 1.0), xhat = (get(x, k) - m) * r;
        set(dx, k, r * (gy - s1 / (double)C - xhat * s2 / (double)C));
      }
    }
  return 0;
}

static int fake_bn_forward(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                           lark_tensor *mean, lark_tensor *var, lark_tensor *rstd, int64_t outer, int64_t C,
                           int64_t inner, double eps, bool training) {
  calls[C_BN_F]++;
  const char *op = "batch_norm_forward";
  lark_dtype dt = x->dtype;
  promise(op, "x", x, dt, outer * C * inner), promise(op, "y", y, dt, outer * C * inner);
  promise(op, "w", w, dt, C), promise(op, "b", b, dt, C);
  promise(op, "mean", mean, LARK_FLOAT64, C), promise(op, "var", var, LARK_FLOAT64, C);
  promise(op, "rstd", rstd, LARK_FLOAT64, C);
  double n = (double)(outer * inner);
  for (int64_t c = 0; c < C; c++) {
    if (training) {
      double s = 0, v = 0;
      for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) s += get(x, (o * C + c) * inner + i);
      double m = s / n;
      for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) v += pow(get(x, (o * C + c) * inner + i) - m, 2);
      set(mean, c, m);
      set(var, c, v / n);
    }
    double r = 1.0 / sqrt(get(var, c) + eps), scale = r * (w ? get(w, c) : 1.0);
    double shift = (b ? get(b, c) : 0.0) - get(mean, c) * scale;
    set(rstd, c, r);
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t k = (o * C + c) * inner + i;
        set(y, k, get(x, k) * scale + shift);
      }
  }
  return 0;
}

static int fake_bn_backward(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                            const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                            const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner, bool batch_stats) {
  calls[C_BN_B]++;
  const char *op = "batch_norm_backward";
  lark_dtype dt = x->dtype;
  int64_t total = outer * C * inner;
  promise(op, "x", x, dt, total), promise(op, "g", g, dt, total), promise(op, "dx", dx, dt, total);
  promise(op, "w", w, dt, C), promise(op, "dw", dw, dt, C), promise(op, "db", db, dt, C);
  promise(op, "mean", mean, LARK_FLOAT64, C), promise(op, "rstd", rstd, LARK_FLOAT64, C);
  double n = (double)(outer * inner);
  for (int64_t c = 0; c < C; c++) {
    double m = get(mean, c), r = get(rstd, c), sg = 0, sgx = 0;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t k = (o * C + c) * inner + i;
        sg += get(g, k), sgx += get(g, k) * (get(x, k) - m) * r;
      }
    if (dw) set(dw, c, sgx);
    if (db) set(db, c, sg);
    double a = batch_stats ? sg / n : 0, bc = batch_stats ? sgx / n : 0, wc = w ? get(w, c) : 1.0;
    for (int64_t o = 0; dx && o < outer; o++)
      for (int64_t i = 0; i < inner; i++) {
        int64_t k = (o * C + c) * inner + i;
        set(dx, k, wc * r * (get(g, k) - a - (get(x, k) - m) * r * bc));
      }
  }
  return 0;
}

static int fake_sm_forward(lark_tensor *y, const lark_tensor *x, int64_t outer, int64_t D, int64_t inner, bool lg) {
  calls[C_SM_F]++;
  promise("softmax_forward", "x", x, x->dtype, outer * D * inner);
  promise("softmax_forward", "y", y, x->dtype, outer * D * inner);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double mx = -INFINITY, s = 0;
      for (int64_t d = 0; d < D; d++) mx = fmax(mx, get(x, (o * D + d) * inner + i));
      if (mx == -INFINITY) mx = 0;
      for (int64_t d = 0; d < D; d++) s += exp(get(x, (o * D + d) * inner + i) - mx);
      for (int64_t d = 0; d < D; d++) {
        int64_t k = (o * D + d) * inner + i;
        double z = get(x, k) - mx;
        set(y, k, lg ? z - log(s) : exp(z) / s);
      }
    }
  return 0;
}

static int fake_sm_backward(lark_tensor *dx, const lark_tensor *g, const lark_tensor *y, int64_t outer, int64_t D,
                            int64_t inner, bool lg) {
  calls[C_SM_B]++;
  int64_t n = outer * D * inner;
  promise("softmax_backward", "y", y, y->dtype, n), promise("softmax_backward", "g", g, y->dtype, n);
  promise("softmax_backward", "dx", dx, y->dtype, n);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double s = 0;
      for (int64_t d = 0; d < D; d++) {
        int64_t k = (o * D + d) * inner + i;
        s += lg ? get(g, k) : get(g, k) * get(y, k);
      }
      for (int64_t d = 0; d < D; d++) {
        int64_t k = (o * D + d) * inner + i;
        set(dx, k, lg ? get(g, k) - exp(get(y, k)) * s : get(y, k) * (get(g, k) - s));
      }
    }
  return 0;
}

static int fake_loss_rows(lark_tensor *loss, const lark_tensor *logp, const lark_tensor *target_index,
                          const lark_tensor *target_prob, double smoothing, int64_t *bad, int64_t *bad_value) {
  calls[C_LOSS_F]++;
  const char *op = "loss_rows";
  CHECK(logp->ndim == 2, "%s: logp is not 2-D", op);
  int64_t N = logp->shape[0], C = logp->shape[1];
  promise(op, "logp", logp, logp->dtype, N * C), promise(op, "loss", loss, LARK_FLOAT64, N);
  promise(op, "target_index", target_index, LARK_INT64, N), promise(op, "target_prob", target_prob, logp->dtype, N * C);
  CHECK(!target_index != !target_prob, "%s: exactly one target expected", op);
  *bad = -1;
  for (int64_t n = 0; n < N; n++) {
    double l = 0, all = 0;
    if (target_index) {
      int64_t t = ((const int64_t *)lark_data_ptr(target_index))[n];
      if (t < 0 || t >= C) {
        if (*bad < 0) *bad = n, *bad_value = t;
        continue;
      }
      l = -get(logp, n * C + t);
    } else {
      for (int64_t c = 0; c < C; c++) l -= get(target_prob, n * C + c) * get(logp, n * C + c);
    }
    for (int64_t c = 0; c < C; c++) all -= get(logp, n * C + c);
    set(loss, n, (1 - smoothing) * l + smoothing * all / (double)C);
  }
  return 0;
}

static int fake_loss_backward(lark_tensor *dz, lark_tensor *dq, const lark_tensor *g, int64_t g_step, double g_div,
                              const lark_tensor *logp, const lark_tensor *target_index, const lark_tensor *target_prob,
                              double smoothing, bool through_softmax) {
  calls[C_LOSS_B]++;
  const char *op = "loss_backward";
  int64_t N = logp->shape[0], C = logp->shape[1];
  promise(op, "logp", logp, logp->dtype, N * C), promise(op, "dz", dz, logp->dtype, N * C);
  promise(op, "dq", dq, logp->dtype, N * C), promise(op, "target_index", target_index, LARK_INT64, N);
  promise(op, "target_prob", target_prob, logp->dtype, N * C);
  promise(op, "g", g, LARK_FLOAT64, g_step ? N : 1);
  CHECK(!dq || target_prob, "%s: a gradient for class indices", op);
  for (int64_t n = 0; n < N; n++) {
    double gn = get(g, n * g_step) / g_div, sumq = 0;
    for (int64_t c = 0; c < C; c++) {
      double q = target_index ? (c == ((const int64_t *)lark_data_ptr(target_index))[n]) : get(target_prob, n * C + c);
      sumq += (1 - smoothing) * q + smoothing / (double)C;
    }
    for (int64_t c = 0; c < C; c++) {
      int64_t k = n * C + c;
      double q = target_index ? (c == ((const int64_t *)lark_data_ptr(target_index))[n]) : get(target_prob, k);
      q = (1 - smoothing) * q + smoothing / (double)C;
      if (dz) set(dz, k, gn * (through_softmax ? exp(get(logp, k)) * sumq - q : -q));
      if (dq) set(dq, k, -gn * (1 - smoothing) * get(logp, k));
    }
  }
  return 0;
}

static int fake_gelu_forward(lark_tensor *y, const lark_tensor *x) {
  calls[C_GELU_F]++;
  promise("gelu_forward", "y", y, x->dtype, lark_numel(x));
  for (int64_t i = 0, n = lark_numel(x); i < n; i++) set(y, i, 0.5 * get(x, i) * erfc(-get(x, i) / sqrt(2.0)));
  return 0;
}

static int fake_gelu_backward(lark_tensor *dx, const lark_tensor *g, const lark_tensor *x) {
  calls[C_GELU_B]++;
  promise("gelu_backward", "dx", dx, x->dtype, lark_numel(x));
  promise("gelu_backward", "g", g, x->dtype, lark_numel(x));
  for (int64_t i = 0, n = lark_numel(x); i < n; i++) {
    double a = get(x, i);
    set(dx, i, get(g, i) * (0.5 * erfc(-a / sqrt(2.0)) + a * exp(-0.5 * a * a) / sqrt(2 * M_PI)));
  }
  return 0;
}

static void install(void) {
  fake = lark_cpu_backend; /* host memory, and the CPU's copy, fill and elementwise kernels */
  fake.name = "fake cuda";
  fake.reduce = stand_in_reduce;
  fake.layer_norm_forward = fake_ln_forward;
  fake.layer_norm_backward = fake_ln_backward;
  fake.batch_norm_forward = fake_bn_forward;
  fake.batch_norm_backward = fake_bn_backward;
  fake.softmax_forward = fake_sm_forward;
  fake.softmax_backward = fake_sm_backward;
  fake.loss_rows = fake_loss_rows;
  fake.loss_backward = fake_loss_backward;
  fake.gelu_forward = fake_gelu_forward;
  fake.gelu_backward = fake_gelu_backward;
  lark_backend_register(LARK_CUDA, &fake);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static lark_tensor *to_dev(const lark_tensor *t) { return t ? lark_to(t, t->dtype, &DEV) : NULL; }

static lark_tensor *sample(int nd, const int64_t *shape, lark_dtype dt, double lo, double hi) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  for (int64_t i = 0, n = lark_numel(t); i < n; i++) data_set(t, i, lo + (hi - lo) * rand_unit());
  return t;
}

static lark_tensor *sum_all(const lark_tensor *t) { return lark_reduce(LARK_RED_SUM, t, NULL); }

/* An op on inputs in[0..n) (NULL entries allowed); dev says which side runs, ctx is the test's. */
typedef lark_tensor *(*op_fn)(lark_tensor *const *in, bool dev, void *ctx);

/* Runs f on the CPU inputs and on device copies of them, compares the results, then
 * backpropagates one random direction through both and compares the gradients of the inputs
 * whose grad[i] is set. */
static void parity(const char *what, int n, lark_tensor *const *cin, const bool *grad, op_fn f, void *ctx,
                   double tol) {
  lark_tensor *din[4] = {NULL}, *cl[4], *dl[4], *cg[4] = {NULL}, *dg[4] = {NULL};
  int nl = 0;
  for (int i = 0; i < n; i++) {
    din[i] = to_dev(cin[i]);
    if (cin[i] && grad[i]) {
      cin[i]->requires_grad = din[i]->requires_grad = true;
      cl[nl] = cin[i], dl[nl++] = din[i];
    }
  }
  lark_tensor *yc = f(cin, false, ctx), *yd = f(din, true, ctx);
  char buf[256];
  snprintf(buf, sizeof buf, "%s: forward", what);
  expect_on_device(buf, yd, yc, tol);
  if (yc && yd && nl > 0) {
    lark_tensor *dir = sample(yc->ndim, yc->shape, yc->dtype, -1, 1), *dird = to_dev(dir);
    lark_tensor *pc = lark_mul(yc, dir), *pd = lark_mul(yd, dird);
    lark_tensor *lc = sum_all(pc), *ld = sum_all(pd);
    CHECK(lark_backward(lc, NULL, false, nl, cl, cg) == 0, "%s: CPU backward", what);
    CHECK(lark_backward(ld, NULL, false, nl, dl, dg) == 0, "%s: device backward", what);
    for (int i = 0; i < nl; i++) {
      snprintf(buf, sizeof buf, "%s: gradient of input %d", what, i);
      expect_on_device(buf, dg[i], cg[i], tol);
      lark_tensor_release(cg[i]), lark_tensor_release(dg[i]);
    }
    lark_tensor_release(dir), lark_tensor_release(dird), lark_tensor_release(pc), lark_tensor_release(pd);
    lark_tensor_release(lc), lark_tensor_release(ld);
  }
  lark_tensor_release(yc), lark_tensor_release(yd);
  for (int i = 0; i < n; i++) {
    if (cin[i]) cin[i]->requires_grad = false;
    lark_tensor_release(din[i]);
  }
  lark_clear_error();
}

/* ---- norms ---------------------------------------------------------------------------------- */

static lark_tensor *op_layer_norm(lark_tensor *const *in, bool dev, void *ctx) {
  return lark_layer_norm(in[0], in[1], in[2], 1e-5);
}
static lark_tensor *op_layer_norm_cf(lark_tensor *const *in, bool dev, void *ctx) {
  return lark_layer_norm_channels_first(in[0], in[1], in[2], 1e-6);
}

/* the running statistics of each side, and the mode */
typedef struct {
  lark_tensor *rm[2], *rv[2];
  bool training;
  double momentum;
} bn_ctx;

static lark_tensor *op_batch_norm(lark_tensor *const *in, bool dev, void *ctx) {
  bn_ctx *b = ctx;
  return lark_batch_norm(in[0], b->rm[dev], b->rv[dev], in[1], in[2], b->training, b->momentum, 1e-5);
}

static void test_norms(void) {
  static const int64_t shapes[][5] = {{2, 6, 5}, {3, 2, 3, 4}, {4, 3, 4, 2, 3}, {3, 2, 0, 4}, {2, 1, 7}};
  static const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64};
  int before_ln = calls[C_LN_F] + calls[C_LN_B], before_bn = calls[C_BN_F] + calls[C_BN_B];
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    int nd = (int)shapes[si][0];
    const int64_t *shape = shapes[si] + 1;
    for (int di = 0; di < 2; di++) {
      lark_dtype dt = dts[di];
      double tol = dt == LARK_FLOAT32 ? 2e-5 : 1e-12;
      for (int affine = 0; affine < 2; affine++) {
        char what[160];
        int64_t Cl = shape[nd - 1], Cc = shape[1];
        lark_tensor *x = sample(nd, shape, dt, -3, 3);
        bool grad[3] = {true, true, true};
        /* layer norm over the last dim */
        lark_tensor *in[3] = {x, affine ? sample(1, &Cl, dt, -1, 1) : NULL, affine ? sample(1, &Cl, dt, -1, 1) : NULL};
        snprintf(what, sizeof what, "layer_norm %s shape %d affine %d", lark_dtype_name(dt), (int)si, affine);
        parity(what, 3, in, grad, op_layer_norm, NULL, tol);
        lark_tensor_release(in[1]), lark_tensor_release(in[2]);
        /* channels first, and batch norm, over dim 1 */
        in[1] = affine ? sample(1, &Cc, dt, -1, 1) : NULL, in[2] = affine ? sample(1, &Cc, dt, -1, 1) : NULL;
        snprintf(what, sizeof what, "layer_norm_channels_first %s shape %d affine %d", lark_dtype_name(dt), (int)si,
                 affine);
        parity(what, 3, in, grad, op_layer_norm_cf, NULL, tol);
        int64_t per_channel = lark_numel(x) / (Cc ? Cc : 1);
        for (int mode = 0; mode < 3; mode++) { /* train with running stats, train without, eval */
          if (mode < 2 && per_channel <= 1) continue;
          bn_ctx b = {{NULL, NULL}, {NULL, NULL}, mode < 2, 0.25};
          if (mode != 1) {
            lark_tensor *rm = sample(1, &Cc, dt, -1, 1), *rv = sample(1, &Cc, dt, 0.5, 2);
            b.rm[0] = rm, b.rv[0] = rv, b.rm[1] = to_dev(rm), b.rv[1] = to_dev(rv);
          }
          snprintf(what, sizeof what, "batch_norm mode %d %s shape %d affine %d", mode, lark_dtype_name(dt), (int)si,
                   affine);
          parity(what, 3, in, grad, op_batch_norm, &b, tol);
          if (mode != 1) {
            /* the running statistics: the same float64 arithmetic on both sides */
            char w2[200];
            snprintf(w2, sizeof w2, "%s: running_mean", what);
            expect_on_device(w2, b.rm[1], b.rm[0], dt == LARK_FLOAT32 ? 1e-6 : 1e-14);
            snprintf(w2, sizeof w2, "%s: running_var", what);
            expect_on_device(w2, b.rv[1], b.rv[0], dt == LARK_FLOAT32 ? 1e-6 : 1e-14);
          }
          for (int k = 0; k < 2; k++) lark_tensor_release(b.rm[k]), lark_tensor_release(b.rv[k]);
        }
        lark_tensor_release(in[1]), lark_tensor_release(in[2]);
        lark_tensor_release(x);
      }
    }
  }
  CHECK(calls[C_LN_F] + calls[C_LN_B] > before_ln + 20, "layer norm went through the backend");
  CHECK(calls[C_BN_F] + calls[C_BN_B] > before_bn + 20, "batch norm went through the backend");

  /* a non-contiguous input and parameters arrive contiguous (the fakes check it) */
  int64_t s3[3] = {4, 5, 6}, C = 4;
  lark_tensor *x = sample(3, s3, LARK_FLOAT64, -1, 1), *xt = lark_transpose(x, 0, 2), *xd = to_dev(x);
  lark_tensor *xdt = lark_transpose(xd, 0, 2);
  lark_tensor *w2 = sample(2, (int64_t[]){4, 2}, LARK_FLOAT64, -1, 1), *wcol = lark_select(w2, 1, 1);
  lark_tensor *wd2 = to_dev(w2), *wdcol = lark_select(wd2, 1, 1);
  lark_tensor *want = lark_layer_norm(xt, wcol, NULL, 1e-5), *got = lark_layer_norm(xdt, wdcol, NULL, 1e-5);
  expect_on_device("layer_norm of views", got, want, 1e-12);
  lark_tensor_release(want), lark_tensor_release(got);
  want = lark_batch_norm(xt, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
  got = lark_batch_norm(xdt, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
  expect_on_device("batch_norm of views", got, want, 1e-12);
  lark_tensor_release(want), lark_tensor_release(got);
  (void)C;

  /* the CPU's errors, before the backend is called */
  int n_before = calls[C_BN_F];
  lark_tensor *rm = lark_zeros(1, (int64_t[]){5}, LARK_FLOAT64, NULL);
  CHECK(!lark_batch_norm(xdt, rm, NULL, NULL, NULL, true, 0.1, 1e-5) && error_has("must be on the input's device"),
        "running_mean on the CPU");
  CHECK(!lark_batch_norm(xdt, NULL, NULL, NULL, NULL, false, 0.1, 1e-5) &&
            error_has("running_mean and running_var are required in eval mode"),
        "eval without statistics");
  CHECK(calls[C_BN_F] == n_before, "no backend call for refused arguments");

  /* without the fields: not implemented, before anything is allocated */
  int64_t live = lark_bytes_allocated(LARK_CUDA);
  fake.batch_norm_backward = NULL;
  CHECK(!lark_batch_norm(xdt, NULL, NULL, NULL, NULL, true, 0.1, 1e-5) &&
            error_has("batch_norm: not implemented for cuda:0"),
        "batch_norm without its backward kernel");
  fake.batch_norm_backward = fake_bn_backward;
  fake.layer_norm_forward = NULL;
  CHECK(!lark_layer_norm(xdt, NULL, NULL, 1e-5) && error_has("layer_norm: not implemented for cuda:0"),
        "layer_norm without its kernel");
  CHECK(!lark_layer_norm_channels_first(xdt, NULL, NULL, 1e-5) &&
            error_has("layer_norm_channels_first: not implemented for cuda:0"),
        "channels-first without its kernel");
  fake.layer_norm_forward = fake_ln_forward;
  CHECK(lark_bytes_allocated(LARK_CUDA) == live, "nothing allocated for an op the device lacks");
  lark_tensor_release(rm);
  lark_tensor_release(x), lark_tensor_release(xt), lark_tensor_release(xd), lark_tensor_release(xdt);
  lark_tensor_release(w2), lark_tensor_release(wcol), lark_tensor_release(wd2), lark_tensor_release(wdcol);
}

/* ---- softmax and the losses ----------------------------------------------------------------- */

typedef struct {
  int dim;
  bool log;
} sm_ctx;

static lark_tensor *op_softmax(lark_tensor *const *in, bool dev, void *ctx) {
  sm_ctx *c = ctx;
  return c->log ? lark_log_softmax(in[0], c->dim) : lark_softmax(in[0], c->dim);
}

typedef struct {
  lark_tensor *target[2]; /* class indices of each side, or NULL (probabilities in in[1]) */
  lark_reduction red;
  double smoothing;
  bool nll;
} loss_ctx;

static lark_tensor *op_loss(lark_tensor *const *in, bool dev, void *ctx) {
  loss_ctx *c = ctx;
  const lark_tensor *t = c->target[dev] ? c->target[dev] : in[1];
  if (!c->nll) return lark_cross_entropy(in[0], t, c->smoothing, c->red);
  lark_tensor *lp = lark_log_softmax(in[0], 1), *out = lark_nll_loss(lp, t, c->red);
  lark_tensor_release(lp);
  return out;
}

static void test_softmax_losses(void) {
  static const int64_t shapes[][5] = {{0}, {1, 7}, {3, 3, 4, 5}, {2, 0, 3}, {2, 6, 1}};
  static const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64};
  int before = calls[C_SM_F] + calls[C_SM_B];
  bool grad[2] = {true, true};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    int nd = (int)shapes[si][0];
    for (int di = 0; di < 2; di++) {
      lark_tensor *x = sample(nd, shapes[si] + 1, dts[di], -6, 6);
      for (int d = -1; d < (nd ? nd : 1); d++)
        for (int lg = 0; lg < 2; lg++) {
          sm_ctx c = {d, lg};
          char what[128];
          snprintf(what, sizeof what, "%s %s shape %d dim %d", lg ? "log_softmax" : "softmax",
                   lark_dtype_name(dts[di]), (int)si, d);
          parity(what, 1, &x, grad, op_softmax, &c, dts[di] == LARK_FLOAT32 ? 2e-6 : 1e-13);
        }
      lark_tensor_release(x);
    }
  }
  CHECK(calls[C_SM_F] + calls[C_SM_B] > before + 40, "softmax went through the backend");

  before = calls[C_LOSS_F] + calls[C_LOSS_B];
  static const int64_t sizes[][2] = {{5, 4}, {1, 1}, {0, 3}, {7, 11}};
  for (int si = 0; si < 4; si++)
    for (int di = 0; di < 2; di++) {
      lark_dtype dt = dts[di];
      double tol = dt == LARK_FLOAT32 ? 2e-6 : 1e-13;
      int64_t N = sizes[si][0], C = sizes[si][1];
      lark_tensor *z = sample(2, sizes[si], dt, -4, 4), *q0 = sample(2, sizes[si], dt, 0, 1);
      lark_tensor *q = lark_softmax(q0, 1);
      lark_tensor *t = lark_empty(1, &N, LARK_INT64, NULL);
      for (int64_t k = 0; k < N; k++) ((int64_t *)lark_data_ptr(t))[k] = rand_int(C);
      lark_tensor *td = to_dev(t);
      for (int red = 0; red < 3; red++)
        for (int kind = 0; kind < 4; kind++) { /* indices, indices smoothed, probabilities smoothed, nll */
          loss_ctx c = {{kind == 2 ? NULL : t, kind == 2 ? NULL : td}, (lark_reduction)red,
                        kind == 0 || kind == 3 ? 0 : 0.2, kind == 3};
          lark_tensor *in[2] = {z, kind == 2 ? q : NULL};
          char what[128];
          snprintf(what, sizeof what, "loss kind %d %s [%lld, %lld] reduction %d", kind, lark_dtype_name(dt),
                   (long long)N, (long long)C, red);
          parity(what, 2, in, grad, op_loss, &c, tol);
        }
      lark_tensor_release(z), lark_tensor_release(q0), lark_tensor_release(q), lark_tensor_release(t);
      lark_tensor_release(td);
    }
  CHECK(calls[C_LOSS_F] + calls[C_LOSS_B] > before + 50, "the losses went through the backend");

  /* a class out of range: the CPU's message, naming the first bad position */
  int64_t s[2] = {4, 3}, n4 = 4;
  lark_tensor *z = sample(2, s, LARK_FLOAT32, -1, 1), *t = lark_empty(1, &n4, LARK_INT64, NULL);
  int64_t *tp = lark_data_ptr(t);
  tp[0] = 1, tp[1] = 3, tp[2] = -1, tp[3] = 7;
  lark_tensor *zd = to_dev(z), *td = to_dev(t);
  char want[256];
  CHECK(!lark_cross_entropy(z, t, 0, LARK_REDUCTION_MEAN), "CPU accepts a bad class");
  snprintf(want, sizeof want, "%s", lark_error());
  CHECK(!lark_cross_entropy(zd, td, 0, LARK_REDUCTION_MEAN) && !strcmp(lark_error(), want),
        "device message %s, expected %s", lark_error(), want);
  CHECK(!lark_nll_loss(z, t, LARK_REDUCTION_SUM), "CPU accepts a bad class");
  snprintf(want, sizeof want, "%s", lark_error());
  CHECK(!lark_nll_loss(zd, td, LARK_REDUCTION_SUM) && !strcmp(lark_error(), want), "device message %s, expected %s",
        lark_error(), want);

  int64_t live = lark_bytes_allocated(LARK_CUDA);
  fake.loss_backward = NULL;
  CHECK(!lark_cross_entropy(zd, td, 0, LARK_REDUCTION_MEAN) && error_has("cross_entropy: not implemented for cuda:0"),
        "cross_entropy without its backward kernel");
  fake.loss_backward = fake_loss_backward;
  fake.softmax_backward = NULL;
  CHECK(!lark_softmax(zd, 1) && error_has("softmax: not implemented for cuda:0"), "softmax without its backward");
  fake.softmax_backward = fake_sm_backward;
  CHECK(lark_bytes_allocated(LARK_CUDA) == live, "nothing allocated for an op the device lacks");
  lark_tensor_release(z), lark_tensor_release(t), lark_tensor_release(zd), lark_tensor_release(td);
}

/* ---- gelu ----------------------------------------------------------------------------------- */

static lark_tensor *op_gelu(lark_tensor *const *in, bool dev, void *ctx) { return lark_gelu(in[0]); }

static void test_gelu(void) {
  int64_t shape[2] = {9, 13};
  bool grad[1] = {true};
  for (int di = 0; di < 2; di++) {
    lark_dtype dt = di ? LARK_FLOAT64 : LARK_FLOAT32;
    lark_tensor *x = sample(2, shape, dt, -8, 8), *xt = lark_transpose(x, 0, 1);
    parity("gelu", 1, &x, grad, op_gelu, NULL, di ? 1e-13 : 1e-5);
    parity("gelu of a transposed view", 1, &xt, grad, op_gelu, NULL, di ? 1e-13 : 1e-5);
    lark_tensor_release(x), lark_tensor_release(xt);
  }
  CHECK(calls[C_GELU_F] == 4 && calls[C_GELU_B] == 4, "gelu calls: %d forward, %d backward", calls[C_GELU_F],
        calls[C_GELU_B]);
  lark_tensor *x = lark_zeros(2, shape, LARK_FLOAT32, &DEV);
  fake.gelu_forward = NULL;
  CHECK(!lark_gelu(x) && error_has("gelu: not implemented for cuda:0"), "gelu without its kernel");
  fake.gelu_forward = fake_gelu_forward;
  lark_tensor_release(x);
}

int main(void) {
  if (lark_cuda_is_available()) {
    printf("skipped: a CUDA device is present (spec/nn_gpu_spec.lua tests the real backend)\n");
    return 0;
  }
  install();
  rand_seed(77);
  int64_t cpu0 = lark_bytes_allocated(LARK_CPU);
  test_norms();
  test_softmax_losses();
  test_gelu();
  CHECK_NO_LEAK(cpu0);
  CHECK(lark_bytes_allocated(LARK_CUDA) == 0, "%lld device bytes still allocated",
        (long long)lark_bytes_allocated(LARK_CUDA));
  return check_report("test_nn_dispatch");
}
