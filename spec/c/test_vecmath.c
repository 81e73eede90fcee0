/* test_vecmath.c: the vectorisable float32 exp, sigmoid and tanh of core/ops/vecmath.h against
 * libm in double, over their whole useful range and at the special values. */
#include <math.h>
#include <stdio.h>

#include "../../core/ops/vecmath.h"

static int failures;

static void check(const char *what, double worst, double limit) {
  printf("%-28s worst relative error %.3g (limit %.3g)\n", what, worst, limit);
  if (!(worst <= limit)) failures++;
}

static void expect(const char *what, float got, float want) {
  int ok = (isnan(want) && isnan(got)) || got == want;
  if (!ok) {
    printf("FAIL %s: got %g, expected %g\n", what, got, want);
    failures++;
  }
}

int main(void) {
  double w = 0;
  for (float x = -87.3f; x < 88.7f; x += 0.000731f) {
    double e = exp((double)x);
    w = fmax(w, fabs(lark_expf(x) - e) / e);
  }
  check("exp on [-87.3, 88.7]", w, 3e-7); /* about 2 ulp */
  w = 0;
  for (float x = -80.0f; x < 80.0f; x += 0.000937f) {
    double e = 1 / (1 + exp(-(double)x));
    w = fmax(w, fabs(lark_sigmoidf(x) - e) / e);
  }
  check("sigmoid on [-80, 80]", w, 3e-7);
  w = 0;
  for (float x = -20.0f; x < 20.0f; x += 0.0001237f) {
    double e = tanh((double)x);
    if (e != 0) w = fmax(w, fabs(lark_tanhf(x) - e) / fabs(e));
  }
  check("tanh on [-20, 20]", w, 3e-7);
  w = 0;
  for (float x = 1e-30f; x < 1.0f; x *= 1.01f) w = fmax(w, fabs(lark_tanhf(x) - tanh((double)x)) / tanh((double)x));
  check("tanh near 0 (1e-30 .. 1)", w, 3e-7);

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
  if (failures) {
    printf("%d failures\n", failures);
    return 1;
  }
  printf("all vecmath checks passed\n");
  return 0;
}
