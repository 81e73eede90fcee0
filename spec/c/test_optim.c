/* test_optim.c: the fused optimizer updates of core/ops/optim.c through the C API: SGD and AdamW
 * against a naive loop over each parameter written here in double (and the fast kernels against
 * the _reference loops), the state they allocate, lerp_list_, total_norm / clip_grad_norm_, the
 * error messages (a CUDA tensor faked by relabelling a storage), a failed step leaving the state as
 * it was, and no leaks. */
#include "check.h"

static lark_tensor *randt(int nd, const int64_t *shape, lark_dtype dt, double lo, double hi) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  for (int64_t i = 0; i < lark_numel(t); i++) data_set(t, i, lo + (hi - lo) * rand_unit());
  return t;
}

static double max_rel(const lark_tensor *a, const double *e, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs(data_get(a, i) - e[i]) / (1 + fabs(e[i])));
  return worst;
}

static double max_rel_t(const lark_tensor *a, const lark_tensor *b) {
  double worst = 0;
  for (int64_t i = 0; i < lark_numel(a); i++)
    worst = fmax(worst, fabs(data_get(a, i) - data_get(b, i)) / (1 + fabs(data_get(b, i))));
  return worst;
}

/* Three parameters (odd, small and past the OpenMP grain), 4 steps of SGD with momentum and
 * nesterov; fast vs reference vs a loop here. */
static void test_sgd(lark_dtype dt) {
  int64_t sizes[3] = {37, 6, 40000};
  double tol = dt == LARK_FLOAT64 ? 1e-13 : 2e-6;
  lark_sgd_args a = {.lr = 0.05, .momentum = 0.9, .dampening = 0, .weight_decay = 1e-2, .nesterov = true};
  lark_tensor *p[3], *q[3], *buf_p[3] = {NULL}, *buf_q[3] = {NULL};
  double *ref[3], *rbuf[3];
  for (int k = 0; k < 3; k++) {
    p[k] = randt(1, &sizes[k], dt, -1, 1);
    q[k] = lark_clone(p[k]);
    ref[k] = malloc(sizeof(double) * (size_t)sizes[k]);
    rbuf[k] = malloc(sizeof(double) * (size_t)sizes[k]);
    for (int64_t i = 0; i < sizes[k]; i++) ref[k][i] = data_get(p[k], i);
  }
  for (int step = 0; step < 4; step++) {
    lark_tensor *g[3];
    for (int k = 0; k < 3; k++) g[k] = randt(1, &sizes[k], dt, -1, 1);
    CHECK(lark_sgd_step_(3, p, g, buf_p, &a) == 0, "sgd_step_ failed");
    CHECK(lark_sgd_step_reference_(3, q, g, buf_q, &a) == 0, "sgd_step_reference_ failed");
    for (int k = 0; k < 3; k++)
      for (int64_t i = 0; i < sizes[k]; i++) {
        double gi = data_get(g[k], i), d = gi + a.weight_decay * ref[k][i];
        rbuf[k][i] = step == 0 ? d : rbuf[k][i] * a.momentum + d;
        if (dt == LARK_FLOAT32) rbuf[k][i] = (float)rbuf[k][i];
        ref[k][i] = ref[k][i] - a.lr * (d + a.momentum * rbuf[k][i]);
        if (dt == LARK_FLOAT32) ref[k][i] = (float)ref[k][i];
      }
    for (int k = 0; k < 3; k++) lark_tensor_release(g[k]);
  }
  for (int k = 0; k < 3; k++) {
    CHECK(buf_p[k] && buf_q[k], "momentum buffers were not made");
    CHECK(max_rel(p[k], ref[k], sizes[k]) < tol, "sgd dtype %d tensor %d: fast vs loop %g", dt, k,
          max_rel(p[k], ref[k], sizes[k]));
    CHECK(max_rel_t(p[k], q[k]) < tol, "sgd dtype %d tensor %d: fast vs reference %g", dt, k, max_rel_t(p[k], q[k]));
    if (buf_p[k]) CHECK(max_rel(buf_p[k], rbuf[k], sizes[k]) < tol, "sgd buffer %d", k);
    lark_tensor_release(p[k]), lark_tensor_release(q[k]), lark_tensor_release(buf_p[k]), lark_tensor_release(buf_q[k]);
    free(ref[k]), free(rbuf[k]);
  }
}

/* AdamW with amsgrad, per-parameter step counts, 3 updates. */
static void test_adamw(lark_dtype dt) {
  int64_t sizes[2] = {40001, 5};
  double tol = dt == LARK_FLOAT64 ? 1e-13 : 2e-6;
  lark_adamw_args a = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.05, .amsgrad = true};
  lark_tensor *p[2], *q[2], *m[2] = {NULL}, *v[2] = {NULL}, *w[2] = {NULL}, *mq[2] = {NULL}, *vq[2] = {NULL},
                            *wq[2] = {NULL};
  double *ref[2], *rm[2], *rv[2], *rw[2];
  for (int k = 0; k < 2; k++) {
    p[k] = randt(1, &sizes[k], dt, -1, 1);
    q[k] = lark_clone(p[k]);
    ref[k] = malloc(sizeof(double) * (size_t)sizes[k]);
    rm[k] = calloc((size_t)sizes[k], sizeof(double));
    rv[k] = calloc((size_t)sizes[k], sizeof(double));
    rw[k] = calloc((size_t)sizes[k], sizeof(double));
    for (int64_t i = 0; i < sizes[k]; i++) ref[k][i] = data_get(p[k], i);
  }
  for (int t = 1; t <= 3; t++) {
    int64_t steps[2] = {t, t + 10};
    lark_tensor *g[2];
    for (int k = 0; k < 2; k++) g[k] = randt(1, &sizes[k], dt, -2, 2);
    CHECK(lark_adamw_step_(2, p, g, m, v, w, steps, &a) == 0, "adamw_step_ failed");
    CHECK(lark_adamw_step_reference_(2, q, g, mq, vq, wq, steps, &a) == 0, "adamw_step_reference_ failed");
    for (int k = 0; k < 2; k++) {
      double bc1 = 1 - pow(a.beta1, (double)steps[k]), bc2 = 1 - pow(a.beta2, (double)steps[k]);
      for (int64_t i = 0; i < sizes[k]; i++) {
        double gi = data_get(g[k], i);
        rm[k][i] = a.beta1 * rm[k][i] + (1 - a.beta1) * gi;
        rv[k][i] = a.beta2 * rv[k][i] + (1 - a.beta2) * gi * gi;
        rw[k][i] = fmax(rw[k][i], rv[k][i]);
        ref[k][i] = ref[k][i] * (1 - a.lr * a.weight_decay) -
                    a.lr / bc1 * rm[k][i] / (sqrt(rw[k][i]) / sqrt(bc2) + a.eps);
      }
    }
    for (int k = 0; k < 2; k++) lark_tensor_release(g[k]);
  }
  for (int k = 0; k < 2; k++) {
    CHECK(m[k] && v[k] && w[k], "adamw state was not made");
    /* float32 state rounds each step; the loop here does not: a looser bound there */
    double loop_tol = dt == LARK_FLOAT64 ? 1e-12 : 1e-5;
    CHECK(max_rel(p[k], ref[k], sizes[k]) < loop_tol, "adamw dtype %d tensor %d: fast vs loop %g", dt, k,
          max_rel(p[k], ref[k], sizes[k]));
    CHECK(max_rel_t(p[k], q[k]) < tol, "adamw dtype %d tensor %d: fast vs reference %g", dt, k, max_rel_t(p[k], q[k]));
    if (m[k] && mq[k]) CHECK(max_rel_t(m[k], mq[k]) < tol, "adamw exp_avg %d", k);
    if (w[k] && wq[k]) CHECK(max_rel_t(w[k], wq[k]) < tol, "adamw max_exp_avg_sq %d", k);
    if (w[k]) CHECK(max_rel(w[k], rw[k], sizes[k]) < loop_tol, "adamw max_exp_avg_sq %d vs loop", k);
    lark_tensor_release(p[k]), lark_tensor_release(q[k]);
    lark_tensor_release(m[k]), lark_tensor_release(v[k]), lark_tensor_release(w[k]);
    lark_tensor_release(mq[k]), lark_tensor_release(vq[k]), lark_tensor_release(wq[k]);
    free(ref[k]), free(rm[k]), free(rv[k]), free(rw[k]);
  }
}

static void test_lerp_and_norm(void) {
  int64_t n = 50000, two = 2;
  lark_tensor *d = randt(1, &n, LARK_FLOAT32, -1, 1), *s = randt(1, &n, LARK_FLOAT32, -1, 1);
  lark_tensor *d2 = lark_clone(d);
  lark_tensor *i1 = lark_zeros(1, &two, LARK_INT64, NULL), *i2 = lark_full(1, &two, 5, LARK_INT64, NULL);
  lark_tensor *dl[2] = {d, i1}, *sl[2] = {s, i2}, *dl2[1] = {d2};
  CHECK(lark_lerp_list_(2, dl, sl, 1e-3, NULL) == 0, "lerp_list_");
  CHECK(lark_lerp_list_reference_(1, dl2, sl, 1e-3, NULL) == 0, "lerp_list_reference_");
  CHECK(max_rel_t(d, d2) < 1e-6, "lerp fast vs reference %g", max_rel_t(d, d2));
  CHECK(data_get(i1, 0) == 5 && data_get(i1, 1) == 5, "integer tensor copied");
  /* norm of {d, s} against a loop */
  lark_tensor *both[2] = {d, s};
  double sq = 0, mx = 0, l1 = 0, out = 0;
  for (int64_t i = 0; i < n; i++) {
    double x = data_get(d, i), y = data_get(s, i);
    sq += x * x + y * y;
    l1 += fabs(x) + fabs(y);
    mx = fmax(mx, fmax(fabs(x), fabs(y)));
  }
  CHECK(lark_total_norm(2, both, 2, &out) == 0 && near(out, sqrt(sq), 1e-12), "total_norm 2: %g vs %g", out, sqrt(sq));
  CHECK(lark_total_norm(2, both, 1, &out) == 0 && near(out, l1, 1e-12), "total_norm 1");
  CHECK(lark_total_norm(2, both, INFINITY, &out) == 0 && out == mx, "total_norm inf");
  double total = 0, x0 = data_get(d, 0);
  CHECK(lark_clip_grad_norm_(2, both, 1.0, 2, &total) == 0 && near(total, sqrt(sq), 1e-12), "clip_grad_norm_");
  CHECK(near(data_get(d, 0), x0 / (sqrt(sq) + 1e-6), 1e-6), "clip scales");
  CHECK(lark_total_norm(2, both, 2, &out) == 0 && near(out, 1, 1e-5), "clipped norm %g", out);
  lark_tensor_release(d), lark_tensor_release(s), lark_tensor_release(d2), lark_tensor_release(i1),
      lark_tensor_release(i2);
}

static void test_errors(void) {
  int64_t three = 3, four = 4, sh2[2] = {3, 4};
  lark_tensor *p = lark_zeros(1, &three, LARK_FLOAT32, NULL), *g4 = lark_zeros(1, &four, LARK_FLOAT32, NULL);
  lark_tensor *g64 = lark_zeros(1, &three, LARK_FLOAT64, NULL), *gi = lark_zeros(1, &three, LARK_INT64, NULL);
  lark_tensor *g = lark_zeros(1, &three, LARK_FLOAT32, NULL);
  const char *names[1] = {"blocks.1.weight"};
  lark_sgd_args s = {.lr = 0.1, .momentum = 0.9, .names = names};
  lark_tensor *buf[1] = {NULL};

  CHECK(lark_sgd_step_(1, &p, &g4, buf, &s) == LARK_ERR_SHAPE &&
            error_has("sgd_step: parameter 'blocks.1.weight': its grad has shape [4] but the parameter has shape [3]"),
        "grad shape");
  CHECK(buf[0] == NULL, "a failed step made a buffer");
  CHECK(lark_sgd_step_(1, &p, &g64, buf, &s) == LARK_ERR_DTYPE && error_has("its grad is float64 but the parameter is float32"),
        "grad dtype");
  s.names = NULL;
  CHECK(lark_sgd_step_(1, &gi, &gi, buf, &s) == LARK_ERR_DTYPE &&
            error_has("sgd_step: parameter 0: the parameter is int64 (expected float32 or float64)"),
        "int parameter");
  lark_sgd_args bad = s;
  bad.lr = -1;
  CHECK(lark_sgd_step_(1, &p, &g, buf, &bad) == LARK_ERR_ARG && error_has("sgd_step: lr is -1 (expected lr >= 0)"), "lr");
  bad = s;
  bad.nesterov = true, bad.dampening = 0.5;
  CHECK(lark_sgd_step_(1, &p, &g, buf, &bad) == LARK_ERR_ARG && error_has("nesterov needs momentum > 0 and dampening == 0"),
        "nesterov");
  CHECK(lark_sgd_step_(1, &p, &g, NULL, &s) == LARK_ERR_ARG && error_has("needs the list of momentum buffers"), "buffers");

  lark_tensor *m2 = lark_zeros(2, sh2, LARK_FLOAT32, NULL), *mt = lark_transpose(m2, 0, 1);
  lark_tensor *gt = lark_zeros(2, (int64_t[]){4, 3}, LARK_FLOAT32, NULL);
  CHECK(lark_sgd_step_(1, &mt, &gt, buf, &s) == LARK_ERR_ARG && error_has("the parameter is not contiguous"),
        "non-contiguous parameter");
  /* a non-contiguous grad is read through a copy */
  lark_tensor *p43 = lark_zeros(2, (int64_t[]){4, 3}, LARK_FLOAT32, NULL);
  lark_tensor *ones = lark_ones(2, sh2, LARK_FLOAT32, NULL), *ones_t = lark_transpose(ones, 0, 1);
  lark_sgd_args plain = {.lr = 0.5};
  CHECK(lark_sgd_step_(1, &p43, &ones_t, NULL, &plain) == 0 && data_get(p43, 5) == -0.5f, "non-contiguous grad");

  /* AdamW: bad betas, bad steps, a state tensor of another shape; nothing allocated on failure */
  lark_adamw_args a = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 1.0, .eps = 1e-8};
  lark_tensor *m[1] = {NULL}, *v[1] = {NULL};
  int64_t step = 1;
  CHECK(lark_adamw_step_(1, &p, &g, m, v, NULL, &step, &a) == LARK_ERR_ARG && error_has("betas[2] is 1"), "beta2");
  a.beta2 = 0.999;
  int64_t zero = 0;
  CHECK(lark_adamw_step_(1, &p, &g, m, v, NULL, &zero, &a) == LARK_ERR_ARG && error_has("step 0"), "step 0");
  lark_tensor *v_bad[1] = {g4};
  CHECK(lark_adamw_step_(1, &p, &g, m, v_bad, NULL, &step, &a) == LARK_ERR_SHAPE &&
            error_has("adamw_step: parameter 0: its exp_avg_sq has shape [4] but the parameter has shape [3]"),
        "exp_avg_sq shape");
  CHECK(m[0] == NULL, "a failed step made exp_avg");
  a.amsgrad = true;
  CHECK(lark_adamw_step_(1, &p, &g, m, v, NULL, &step, &a) == LARK_ERR_ARG && error_has("max_exp_avg_sq"),
        "amsgrad without its list");

  /* a tensor relabelled as living on a GPU: the "not implemented for cuda" error, before any access.
   * Only where no CUDA backend is registered: a real one (or the emulated one) would run its kernels
   * on these host pointers. */
  lark_tensor *gc = NULL;
  if (!lark_cuda_is_available()) {
    lark_device saved = p->storage->device;
    p->storage->device = (lark_device){LARK_CUDA, 0};
    gc = lark_zeros(1, &three, LARK_FLOAT32, NULL);
    gc->storage->device = (lark_device){LARK_CUDA, 0};
    a.amsgrad = false;
    CHECK(lark_adamw_step_(1, &p, &gc, m, v, NULL, &step, &a) == LARK_ERR_UNIMPL &&
              error_has("adamw_step: not implemented for cuda:0"),
          "cuda adamw");
    CHECK(lark_sgd_step_(1, &p, &g, buf, &s) == LARK_ERR_DEVICE &&
              error_has("its grad is on cpu but the parameter is on cuda:0"),
          "mixed devices");
    CHECK(lark_lerp_list_(1, &p, &gc, 0.5, NULL) == LARK_ERR_UNIMPL && error_has("lerp_list_: not implemented for cuda"),
          "cuda lerp");
    CHECK(lark_total_norm(1, &gc, 2, &(double){0}) == LARK_ERR_UNIMPL && error_has("total_norm: not implemented for cuda"),
          "cuda norm");
    CHECK(lark_clip_grad_norm_(1, &gc, 1, 2, NULL) == LARK_ERR_UNIMPL &&
              error_has("clip_grad_norm: not implemented for cuda"),
          "cuda clip");
    p->storage->device = saved;
    gc->storage->device = saved;
  }

  CHECK(lark_total_norm(1, &g, 0, &(double){0}) == LARK_ERR_ARG && error_has("norm_type is 0"), "norm type 0");
  CHECK(lark_lerp_list_(1, &p, &g4, 0.5, names) == LARK_ERR_SHAPE &&
            error_has("lerp_list_: parameter 'blocks.1.weight': the source has shape [4] but the destination [3]"),
        "lerp shapes");
  CHECK(lark_sgd_step_(0, NULL, NULL, NULL, &s) == 0, "an empty list is fine");

  lark_tensor_release(p), lark_tensor_release(g4), lark_tensor_release(g64), lark_tensor_release(gi);
  lark_tensor_release(g), lark_tensor_release(m2), lark_tensor_release(mt), lark_tensor_release(gt);
  lark_tensor_release(p43), lark_tensor_release(ones), lark_tensor_release(ones_t), lark_tensor_release(gc);
}

int main(void) {
  int64_t start = lark_bytes_allocated(LARK_CPU);
  rand_seed(42);
  test_sgd(LARK_FLOAT32);
  test_sgd(LARK_FLOAT64);
  test_adamw(LARK_FLOAT32);
  test_adamw(LARK_FLOAT64);
  test_lerp_and_norm();
  test_errors();
  CHECK_NO_LEAK(start);
  return check_report("test_optim");
}
