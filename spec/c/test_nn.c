/* test_nn.c: the C API of core/ops/nn.h (norm.c, softmax.c, activation.c) against naive loops in
 * double: softmax / log_softmax (the float32 fast path included), layer_norm channels-first,
 * batch_norm's running statistics, cross_entropy, gelu, the 0-based error messages, no leaks. */
#include "check.h"
#include "ops/nn.h"

static lark_tensor *randt(int nd, const int64_t *shape, lark_dtype dt, double lo, double hi) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  for (int64_t i = 0; i < lark_numel(t); i++) data_set(t, i, lo + (hi - lo) * rand_unit());
  return t;
}

static void test_softmax(void) {
  int64_t widths[] = {1, 3, 17, 64, 1001};
  for (int k = 0; k < 5; k++) {
    int64_t shape[2] = {6, widths[k]};
    for (int dt = 0; dt < 2; dt++) {
      lark_tensor *x = randt(2, shape, dt ? LARK_FLOAT64 : LARK_FLOAT32, -20, 20);
      for (int lg = 0; lg < 2; lg++) {
        lark_tensor *y = lg ? lark_log_softmax(x, -1) : lark_softmax(x, 1);
        CHECK(y, "softmax returned NULL");
        if (!y) continue;
        double worst = 0;
        for (int64_t r = 0; r < shape[0]; r++) {
          double mx = -INFINITY, s = 0;
          for (int64_t d = 0; d < shape[1]; d++) mx = fmax(mx, data_get(x, r * shape[1] + d));
          for (int64_t d = 0; d < shape[1]; d++) s += exp(data_get(x, r * shape[1] + d) - mx);
          for (int64_t d = 0; d < shape[1]; d++) {
            double z = data_get(x, r * shape[1] + d) - mx, e = lg ? z - log(s) : exp(z) / s;
            worst = fmax(worst, fabs(data_get(y, r * shape[1] + d) - e) / (1 + fabs(e)));
          }
        }
        CHECK(worst < (dt ? 1e-13 : 1e-6), "%s width %lld dtype %d: error %g", lg ? "log_softmax" : "softmax",
              (long long)widths[k], dt, worst);
        lark_tensor_release(y);
      }
      lark_tensor_release(x);
    }
  }
}

static void test_layer_norm_cf(void) {
  int64_t shape[4] = {2, 5, 3, 4}, C = 5;
  lark_tensor *x = randt(4, shape, LARK_FLOAT64, -2, 2), *w = randt(1, &C, LARK_FLOAT64, -1, 1),
              *b = randt(1, &C, LARK_FLOAT64, -1, 1);
  lark_tensor *y = lark_layer_norm_channels_first(x, w, b, 1e-6);
  CHECK(y, "layer_norm_channels_first returned NULL");
  double worst = 0;
  for (int64_t n = 0; n < 2 && y; n++)
    for (int64_t p = 0; p < 12; p++) {
      double u = 0, v = 0;
      for (int64_t c = 0; c < C; c++) u += data_get(x, (n * C + c) * 12 + p) / C;
      for (int64_t c = 0; c < C; c++) v += pow(data_get(x, (n * C + c) * 12 + p) - u, 2) / C;
      for (int64_t c = 0; c < C; c++) {
        double e = (data_get(x, (n * C + c) * 12 + p) - u) / sqrt(v + 1e-6) * data_get(w, c) + data_get(b, c);
        worst = fmax(worst, fabs(data_get(y, (n * C + c) * 12 + p) - e));
      }
    }
  CHECK(worst < 1e-12, "layer_norm_channels_first: error %g", worst);
  lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(b), lark_tensor_release(y);
}

static void test_batch_norm(void) {
  int64_t shape[2] = {3, 2}, C = 2;
  double xs[6] = {1, 10, 2, 20, 6, 30};
  lark_tensor *x = lark_empty(2, shape, LARK_FLOAT64, NULL), *rm = lark_zeros(1, &C, LARK_FLOAT64, NULL),
              *rv = lark_ones(1, &C, LARK_FLOAT64, NULL);
  for (int i = 0; i < 6; i++) data_set(x, i, xs[i]);
  lark_tensor *y = lark_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 0.0);
  CHECK(y && near(data_get(y, 0), -2 / sqrt(14.0 / 3), 1e-12), "batch_norm output");
  CHECK(near(data_get(rm, 0), 0.3, 1e-12) && near(data_get(rm, 1), 2.0, 1e-12), "running mean");
  CHECK(near(data_get(rv, 0), 0.9 + 0.7, 1e-12) && near(data_get(rv, 1), 0.9 + 10.0, 1e-12), "running var (unbiased)");
  lark_tensor *bad = lark_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5);
  CHECK(!bad && error_has("running_mean and running_var are required"), "eval without running stats");
  lark_tensor_release(x), lark_tensor_release(rm), lark_tensor_release(rv), lark_tensor_release(y);
}

static void test_cross_entropy_gelu(void) {
  int64_t shape[2] = {2, 3}, N = 2;
  lark_tensor *x = randt(2, shape, LARK_FLOAT64, -1, 1), *t = lark_empty(1, &N, LARK_INT64, NULL);
  ((int64_t *)lark_data_ptr(t))[0] = 2, ((int64_t *)lark_data_ptr(t))[1] = 0;
  lark_tensor *l = lark_cross_entropy(x, t, 0.0, LARK_REDUCTION_SUM), *lp = lark_log_softmax(x, 1);
  CHECK(l && lp && near(data_get(l, 0), -data_get(lp, 2) - data_get(lp, 3), 1e-12), "cross_entropy sum");
  ((int64_t *)lark_data_ptr(t))[1] = 3;
  lark_tensor *bad = lark_cross_entropy(x, t, 0.0, LARK_REDUCTION_MEAN);
  CHECK(!bad && error_has("cross_entropy: target 3 (at position 1) is out of range for 3 classes"), "class out of range");
  lark_tensor *g = lark_gelu(x);
  CHECK(g && near(data_get(g, 0), 0.5 * data_get(x, 0) * (1 + erf(data_get(x, 0) / sqrt(2.0))), 1e-13), "gelu");
  lark_tensor_release(x), lark_tensor_release(t), lark_tensor_release(l), lark_tensor_release(lp),
      lark_tensor_release(g);
}

int main(void) {
  rand_seed(3);
  int64_t start = lark_bytes_allocated(LARK_CPU);
  test_softmax();
  test_layer_norm_cf();
  test_batch_norm();
  test_cross_entropy_gelu();
  CHECK_NO_LEAK(start);
  return check_report("test_nn");
}
