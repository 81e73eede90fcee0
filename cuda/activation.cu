/*
 * activation.cu: the CUDA kernels of core/ops/activation.c, the exact GELU and its derivative
 * (relu, sigmoid and tanh are unary ops of elementwise.cu):
 *   y = 0.5 x (1 + erf(x / sqrt 2)),  dy/dx = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
 * float64 uses erf and exp as the CPU's float64 path does. float32 computes 1 + erf(x / sqrt 2) as
 * erfc(-x / sqrt 2) in float, as the CPU's float32 path does (it keeps the relative accuracy where
 * 1 + erf cancels, at large negative x); CUDA's erfcf stands in for the CPU's vectorisable
 * polynomial, both within a few float ulps of the exact value.
 */
#include <math.h>

#include "cuda.h"
#include "lines.cuh"

#define INV_SQRT2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

__device__ __forceinline__ float gelu_cdf2(float x) { return erfcf(-x * (float)INV_SQRT2); }
__device__ __forceinline__ double gelu_cdf2(double x) { return 1.0 + erf(x * INV_SQRT2); }

__device__ __forceinline__ float gelu_grad(float x) {
  return 0.5f * gelu_cdf2(x) + x * expf(-0.5f * x * x) * (float)INV_SQRT_2PI;
}
__device__ __forceinline__ double gelu_grad(double x) {
  return 0.5 * gelu_cdf2(x) + x * exp(-0.5 * x * x) * INV_SQRT_2PI;
}

template <typename T>
struct gelu_fn {
  T *y;       /* x's shape */
  const T *x; /* x's shape */
  __device__ void operator()(const int64_t *off) const {
    T a = x[off[1]];
    y[off[0]] = (T)0.5 * a * gelu_cdf2(a);
  }
};

template <typename T>
struct gelu_backward_fn {
  T *dx;      /* x's shape */
  const T *g; /* x's shape */
  const T *x; /* x's shape */
  __device__ void operator()(const int64_t *off) const { dx[off[0]] = g[off[1]] * gelu_grad(x[off[2]]); }
};

int lark_cuda_gelu_forward(lark_tensor *y, const lark_tensor *x) {
  const lark_tensor *ts[2] = {y, x};
  return nn_by_dtype("gelu", x, [&](auto zero) {
    typedef decltype(zero) T;
    return lark_cuda_launch<2>("gelu", ts, gelu_fn<T>{nn_mptr<T>(y), nn_cptr<T>(x)});
  });
}

int lark_cuda_gelu_backward(lark_tensor *dx, const lark_tensor *g, const lark_tensor *x) {
  const lark_tensor *ts[3] = {dx, g, x};
  return nn_by_dtype("gelu_backward", x, [&](auto zero) {
    typedef decltype(zero) T;
    return lark_cuda_launch<3>("gelu_backward", ts, gelu_backward_fn<T>{nn_mptr<T>(dx), nn_cptr<T>(g), nn_cptr<T>(x)});
  });
}
