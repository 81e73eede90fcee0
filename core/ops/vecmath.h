/* vecmath.h: float32 exp written so that GCC vectorises loops calling it.
 *
 * libm's expf is a call the compiler cannot vectorise, which leaves exp, sigmoid and friends at a
 * tenth of memory bandwidth. This one is branch-free: exp(x) = 2^n * exp(r) with n = round(x /
 * ln 2) and |r| <= ln(2)/2, exp(r) by a degree-6 minimax polynomial (the classic Cephes
 * coefficients), and 2^n built in the exponent bits. Relative error stays under 2 ulp over the
 * normal range; results below FLT_MIN flush to 0 (libm would give a denormal), above FLT_MAX give
 * inf, and NaN stays NaN. spec/c/test_vecmath.c compares it with libm's exp in double. */
#ifndef LARK_VECMATH_H
#define LARK_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float lark_expf(float x) {
  const float hi = 88.72283935546875f, lo = -87.33654022216797f; /* ln(FLT_MAX), ln(FLT_MIN) */
  float xc = x > hi ? hi : (x < lo ? lo : x);
  xc = xc == xc ? xc : 0.0f; /* NaN: keep the integer maths below defined; the result is NaN anyway */
  /* round to nearest by the 1.5 * 2^23 trick: floorf would need -fno-trapping-math to vectorise */
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  /* r = xc - n ln2, with ln2 split in two so that n * ln2_hi is exact */
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * (r * r) + r + 1.0f;
  /* 2^n in two halves, so that n = 128 (just below the overflow) and n = -126 both stay normal */
  int32_t ni = (int32_t)n, n1 = ni >> 1, n2 = ni - n1;
  uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  memcpy(&s1, &b1, sizeof s1);
  memcpy(&s2, &b2, sizeof s2);
  y = y * s1 * s2;
  y = x > hi ? INFINITY : y;
  y = x < lo ? 0.0f : y;
  return x != x ? x : y;
}

static inline float lark_sigmoidf(float x) { return 1.0f / (1.0f + lark_expf(-x)); }

/* tanh: for |x| >= 0.625, 1 - 2 / (exp(2|x|) + 1) with the sign put back; nearer 0 that form loses
 * relative accuracy, so an odd polynomial (Cephes' minimax for tanhf) takes over. Both are
 * computed and one is selected, which keeps the loop branch-free. */
static inline float lark_tanhf(float x) {
  float a = fabsf(x);
  float big = 1.0f - 2.0f / (lark_expf(2.0f * a) + 1.0f);
  big = x < 0 ? -big : big;
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * x + x;
  return a < 0.625f ? small : big;
}

#endif
