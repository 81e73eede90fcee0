/* test_vecmath.c: the vectorisable float32 exp, sigmoid and tanh of core/ops/vecmath.h against
 * libm in double, over their whole useful range and at the special values. */
#include "check.h"

#include "../../core/ops/vecmath.h"

/* Prints the worst relative error over a range and checks it against the limit. */
static void check_worst(const char *what, double worst, double limit) {
  printf("%-28s worst relative error %.3g (limit %.3g)\n", what, worst, limit);
  CHECK(worst <= limit, "%s: worst relative error %.3g is above %.3g", what, worst, limit);
}

/* got is want exactly (NaN matches NaN). */
static void expect(const char *what, float got, float want) {
  CHECK((isnan(want) && isnan(got)) || got == want, "%s: got %g, expected %g", what, got, want);
}

int main(void) {
  double w = 0;
  for (float x = -87.3f; x < 88.7f; x += 0.000731f) {
    double e = exp((double)x);
    w = fmax(w, fabs(lark_expf(x) - e) / e);
  }
  check_worst("exp on [-87.3, 88.7]", w, 3e-7); /* about 2 ulp */
  w = 0;
  for (float x = -80.0f; x < 80.0f; x += 0.000937f) {
    double e = 1 / (1 + exp(-(double)x));
    w = fmax(w, fabs(lark_sigmoidf(x) - e) / e);
  }
  check_worst("sigmoid on [-80, 80]", w, 3e-7);
  w = 0;
  for (float x = -20.0f; x < 20.0f; x += 0.0001237f) {
    double e = tanh((double)x);
    if (e != 0) w = fmax(w, fabs(lark_tanhf(x) - e) / fabs(e));
  }
  check_worst("tanh on [-20, 20]", w, 3e-7);
  w = 0;
  for (float x = 1e-30f; x < 1.0f; x *= 1.01f) w = fmax(w, fabs(lark_tanhf(x) - tanh((double)x)) / tanh((double)x));
  check_worst("tanh near 0 (1e-30 .. 1)", w, 3e-7);

  expect("exp(0)", lark_expf(0.0f), 1.0f);
  expect("exp(nan)", lark_expf(NAN), NAN);
  expect("exp(inf)", lark_expf(INFINITY), INFINITY);
  expect("exp(-inf)", lark_expf(-INFINITY), 0.0f);
  expect("exp(100)", lark_expf(100.0f), INFINITY);
  expect("exp(-100)", lark_expf(-100.0f), 0.0f);
  expect("sigmoid(inf)", lark_sigmoidf(INFINITY), 1.0f);
  expect("sigmoid(-inf)", lark_sigmoidf(-INFINITY), 0.0f);
  expect("sigmoid(nan)", lark_sigmoidf(NAN), NAN);
  expect("tanh(0)", lark_tanhf(0.0f), 0.0f);
  expect("tanh(inf)", lark_tanhf(INFINITY), 1.0f);
  expect("tanh(-inf)", lark_tanhf(-INFINITY), -1.0f);
  expect("tanh(nan)", lark_tanhf(NAN), NAN);
  return check_report("test_vecmath");
}
