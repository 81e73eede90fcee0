/*
 * optim.cu: the fused optimizer updates of core/ops/optim.c on the GPU: SGD (momentum, dampening,
 * nesterov, weight decay, maximize), AdamW (decoupled weight decay, amsgrad, maximize) and the lerp
 * of ModelEma. (clip_grad_norm's per-tensor norm is a reduction: lark_cuda_norm_part in reduce.cu.)
 *
 * optim.c checks everything, makes missing state, makes grads contiguous and loops over the
 * parameters; each call here updates one parameter's contiguous tensors in place, one thread per
 * element (grid-stride). The formulas are optim.c's fast kernels, operation by operation, in the
 * tensor's precision, with the per-tensor constants rounded to it the same way. nvcc contracts
 * a * b + c into fused multiply-adds as GCC does for the CPU build (-ffp-contract=fast), but not
 * necessarily at the same places, so a float32 update can differ from the CPU's in the last bit;
 * sqrt and division are IEEE-rounded on both (no fast math here).
 */
#include "cuda.h"

/* ---- kernels ---------------------------------------------------------------------------------------- */

/* How SGD uses its momentum buffer (optim.c's four loops). */
enum { SGD_NO_BUF, SGD_FIRST, SGD_NESTEROV, SGD_PLAIN };

template <typename T>
struct sgd_consts {
  T lr, wd, mom, damp1, sign;
  bool nesterov;
};

template <typename T, int MODE>
__global__ void sgd_kernel(int64_t n, T *p /* (n) */, const T *g /* (n) */, T *buf /* (n), or NULL for SGD_NO_BUF */,
                           sgd_consts<T> c) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    T pi = p[i];
    T d = c.sign * g[i] + c.wd * pi;
    if constexpr (MODE == SGD_NO_BUF) {
      p[i] = pi - c.lr * d;
    } else if constexpr (MODE == SGD_FIRST) {
      buf[i] = d;
      p[i] = pi - c.lr * (c.nesterov ? d + c.mom * d : d);
    } else if constexpr (MODE == SGD_NESTEROV) {
      T b = buf[i] * c.mom + c.damp1 * d;
      buf[i] = b;
      p[i] = pi - c.lr * (d + c.mom * b);
    } else {
      T b = buf[i] * c.mom + c.damp1 * d;
      buf[i] = b;
      p[i] = pi - c.lr * b;
    }
  }
}

template <typename T>
struct adamw_consts {
  T decay, b1, b2, b1c, b2c, bc2, eps, neg_step, sign;
};

__device__ __forceinline__ float root(float x) { return sqrtf(x); }
__device__ __forceinline__ double root(double x) { return sqrt(x); }

template <typename T, bool AMSGRAD>
__global__ void adamw_kernel(int64_t n, T *p /* (n) */, const T *g /* (n) */, T *m /* (n) */, T *v /* (n) */,
                             T *vmax /* (n), or NULL unless AMSGRAD */, adamw_consts<T> c) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    T gi = c.sign * g[i];
    T pi = p[i] * c.decay;
    T mi = m[i] * c.b1 + c.b1c * gi;
    T vi = v[i] * c.b2 + c.b2c * gi * gi;
    m[i] = mi;
    v[i] = vi;
    T den = vi;
    if constexpr (AMSGRAD) {
      T wi = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = wi;
      den = wi;
    }
    p[i] = pi + c.neg_step * mi / (root(den) / c.bc2 + c.eps);
  }
}

/* torch.lerp's two-sided form, as optim.c: near weight 1 from the end point, so weight 1 gives src. */
template <typename T>
__global__ void lerp_kernel(int64_t n, T *dst /* (n) */, const T *src /* (n) */, T w, T w1, bool low_weight) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    T d = dst[i], s = src[i];
    dst[i] = low_weight ? d + w * (s - d) : s - (s - d) * w1;
  }
}

/* ---- host side -------------------------------------------------------------------------------------- */

template <typename T>
static int sgd_typed(const char *op, lark_tensor *p, const lark_tensor *g, lark_tensor *buf, const lark_sgd_args *a,
                     bool first) {
  int64_t n = lark_numel(p);
  sgd_consts<T> c;
  c.lr = (T)a->lr;
  c.wd = (T)a->weight_decay;
  c.mom = (T)a->momentum;
  c.damp1 = (T)(1 - a->dampening);
  c.sign = a->maximize ? (T)-1 : (T)1;
  c.nesterov = a->nesterov;
  T *pp = (T *)lark_data_ptr(p), *bb = buf ? (T *)lark_data_ptr(buf) : NULL;
  const T *gg = (const T *)lark_data_ptr(g);
  unsigned blocks = lark_cuda_grid(n, LARK_CUDA_THREADS);
  if (!bb) sgd_kernel<T, SGD_NO_BUF><<<blocks, LARK_CUDA_THREADS>>>(n, pp, gg, bb, c);
  else if (first) sgd_kernel<T, SGD_FIRST><<<blocks, LARK_CUDA_THREADS>>>(n, pp, gg, bb, c);
  else if (a->nesterov) sgd_kernel<T, SGD_NESTEROV><<<blocks, LARK_CUDA_THREADS>>>(n, pp, gg, bb, c);
  else sgd_kernel<T, SGD_PLAIN><<<blocks, LARK_CUDA_THREADS>>>(n, pp, gg, bb, c);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

int lark_cuda_sgd_update(lark_tensor *p, const lark_tensor *g, lark_tensor *buf, const lark_sgd_args *a, bool first) {
  const char *op = "sgd_step";
  if (lark_numel(p) == 0) return 0;
  if (lark_cuda_set_device(lark_tensor_device(p), op)) return lark_error_code();
  switch (p->dtype) {
    case LARK_FLOAT32: return sgd_typed<float>(op, p, g, buf, a, first);
    case LARK_FLOAT64: return sgd_typed<double>(op, p, g, buf, a, first);
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: expected float32 or float64, got %s", op, lark_dtype_name(p->dtype));
  }
}

template <typename T>
static int adamw_typed(const char *op, lark_tensor *p, const lark_tensor *g, lark_tensor *m, lark_tensor *v,
                       lark_tensor *vmax, const lark_adamw_args *a, double decay, double step_size, double bc2_sqrt) {
  int64_t n = lark_numel(p);
  adamw_consts<T> c;
  c.decay = (T)decay;
  c.b1 = (T)a->beta1;
  c.b2 = (T)a->beta2;
  c.b1c = (T)(1 - a->beta1);
  c.b2c = (T)(1 - a->beta2);
  c.bc2 = (T)bc2_sqrt;
  c.eps = (T)a->eps;
  c.neg_step = (T)(-step_size);
  c.sign = a->maximize ? (T)-1 : (T)1;
  T *pp = (T *)lark_data_ptr(p), *mm = (T *)lark_data_ptr(m), *vv = (T *)lark_data_ptr(v);
  const T *gg = (const T *)lark_data_ptr(g);
  unsigned blocks = lark_cuda_grid(n, LARK_CUDA_THREADS);
  if (vmax)
    adamw_kernel<T, true><<<blocks, LARK_CUDA_THREADS>>>(n, pp, gg, mm, vv, (T *)lark_data_ptr(vmax), c);
  else
    adamw_kernel<T, false><<<blocks, LARK_CUDA_THREADS>>>(n, pp, gg, mm, vv, (T *)NULL, c);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

int lark_cuda_adamw_update(lark_tensor *p, const lark_tensor *g, lark_tensor *m, lark_tensor *v, lark_tensor *vmax,
                           const lark_adamw_args *a, double decay, double step_size, double bc2_sqrt) {
  const char *op = "adamw_step";
  if (lark_numel(p) == 0) return 0;
  if (lark_cuda_set_device(lark_tensor_device(p), op)) return lark_error_code();
  switch (p->dtype) {
    case LARK_FLOAT32: return adamw_typed<float>(op, p, g, m, v, vmax, a, decay, step_size, bc2_sqrt);
    case LARK_FLOAT64: return adamw_typed<double>(op, p, g, m, v, vmax, a, decay, step_size, bc2_sqrt);
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: expected float32 or float64, got %s", op, lark_dtype_name(p->dtype));
  }
}

template <typename T>
static int lerp_typed(lark_tensor *dst, const lark_tensor *src, double weight) {
  int64_t n = lark_numel(dst);
  lerp_kernel<T><<<lark_cuda_grid(n, LARK_CUDA_THREADS), LARK_CUDA_THREADS>>>(
      n, (T *)lark_data_ptr(dst), (const T *)lark_data_ptr(src), (T)weight, (T)(1 - weight), weight < 0.5);
  return lark_cuda_check(cudaGetLastError(), "lerp_list_", "kernel launch failed");
}

int lark_cuda_lerp(lark_tensor *dst, const lark_tensor *src, double weight) {
  const char *op = "lerp_list_";
  if (lark_numel(dst) == 0) return 0;
  if (lark_cuda_set_device(lark_tensor_device(dst), op)) return lark_error_code();
  switch (dst->dtype) {
    case LARK_FLOAT32: return lerp_typed<float>(dst, src, weight);
    case LARK_FLOAT64: return lerp_typed<double>(dst, src, weight);
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: expected float32 or float64, got %s", op, lark_dtype_name(dst->dtype));
  }
}
