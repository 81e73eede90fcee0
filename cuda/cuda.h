/*
 * cuda.h: what the files of the CUDA backend (the .cu files in cuda/) share. Internal: nothing outside cuda/
 * includes it; core reaches the backend only through lark_cuda_init and the kernel table.
 *
 * Conventions of the backend
 * --------------------------
 * - Every CUDA and cuBLAS call is checked; a failure becomes lark_set_error(LARK_ERR_BACKEND,
 *   "<op>: <what failed>: <cudaGetErrorString>") and a negative return, never an abort.
 * - All work goes to the legacy default stream of the tensor's device, so kernels, cuBLAS and
 *   cudaMemcpy run in issue order and a device -> host copy sees every kernel before it.
 * - Elementwise kernels read a geometry (shape and per-operand strides, in elements, innermost dim
 *   first) passed by value, loop grid-stride over an int64 linear index, and take a flat path when
 *   every operand is contiguous.
 */
#ifndef LARK_CUDA_INTERNAL_H
#define LARK_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "lark.h" /* has its own extern "C" block */

#include "backend.h"

extern "C" {

/* ---- errors and devices (backend.cu) -------------------------------------------------------- */

/* Sets "<op>: <what>: <cudaGetErrorString(err)>" (LARK_ERR_BACKEND) unless err is cudaSuccess, and
 * clears CUDA's last-error slot so the next check does not see a stale failure. Returns 0 or the
 * negative status. */
int lark_cuda_check(cudaError_t err, const char *op, const char *what);
/* The same for cuBLAS. */
int lark_cuda_check_cublas(cublasStatus_t st, const char *op, const char *what);
/* Makes dev the calling thread's current device; LARK_ERR_DEVICE if it does not exist. */
int lark_cuda_set_device(lark_device dev, const char *op);
/* How many blocks of `threads` a grid-stride kernel over n > 0 items gets on the current device. */
unsigned lark_cuda_grid(int64_t n, int threads);
/* The cuBLAS handle of dev (created on first use, bound to the default stream). */
int lark_cuda_cublas(lark_device dev, const char *op, cublasHandle_t *handle);

/* ---- kernels (contracts in core/backend.h) -------------------------------------------------- */

/* elementwise.cu */
int lark_cuda_copy(lark_tensor *dst, const lark_tensor *src);
int lark_cuda_fill(lark_tensor *t, double value);
int lark_cuda_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b);
int lark_cuda_unary(lark_unary_op op, lark_tensor *out, const lark_tensor *a);
int lark_cuda_clamp(lark_tensor *out, const lark_tensor *a, double lo, double hi);
int lark_cuda_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b);
/* gemm.cu */
int lark_cuda_gemm(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta);
/* dwconv.cu */
int lark_cuda_dwconv_forward(lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                             const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags);
int lark_cuda_dwconv_backward_input(lark_tensor *grad_in, const lark_tensor *grad_out, const lark_tensor *weight,
                                    const lark_conv2d_params *p, unsigned flags);
int lark_cuda_dwconv_backward_weight(lark_tensor *grad_w, const lark_tensor *grad_out, const lark_tensor *input,
                                     const lark_conv2d_params *p, unsigned flags);
/* dwconv_tc.cu: the tensor-core passes, for float32 with LARK_DWCONV_TF32 or _BF16 in flags. The
 * caller (dwconv.cu's tiled path) has checked stride and dilation 1 and sizes and paddings below
 * 2^28. *handled says whether they ran; when false (other cases) nothing was done and the exact
 * kernels run. The forward (input_grad false: src = input, out = output) and the
 * input gradient (input_grad true: src = grad_out, out = grad_in, bias NULL) share one entry. */
int lark_cuda_dwconv_tc_corr(const char *op, const lark_tensor *src, const lark_tensor *weight, const lark_tensor *bias,
                             lark_tensor *out, const lark_conv2d_params *p, bool input_grad, unsigned flags,
                             bool *handled);
int lark_cuda_dwconv_tc_backward_weight(const char *op, lark_tensor *grad_w, const lark_tensor *grad_out,
                                        const lark_tensor *input, const lark_conv2d_params *p, unsigned flags,
                                        bool *handled);
/* gpuidx: index.cu (index checks, gather, scatter_add, masked ops, nonzero), sort.cu (topk, cumsum) */
int lark_cuda_index_check(const lark_tensor *index, int64_t size, int64_t *bad, int64_t *bad_value);
int lark_cuda_gather(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index);
int lark_cuda_scatter_add(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src);
int lark_cuda_masked_fill(lark_tensor *t, const lark_tensor *mask, double value);
int lark_cuda_masked_select(const lark_tensor *t, const lark_tensor *mask, lark_tensor **out);
int lark_cuda_nonzero(const lark_tensor *t, lark_tensor **out);
int lark_cuda_topk(const lark_tensor *t, int dim, int64_t k, bool desc, bool sorted, lark_tensor *values,
                   lark_tensor *indices);
int lark_cuda_cumsum(lark_tensor *out, const lark_tensor *t, int dim);
/* end of gpuidx's declarations */
/* conv.cu (im2col/col2im of the dense and grouped convolution), pool.cu (pooling) */
int lark_cuda_im2col(lark_tensor *col, const lark_tensor *x, const lark_conv2d_params *p, unsigned flags);
int lark_cuda_col2im(lark_tensor *x, const lark_tensor *col, const lark_conv2d_params *p);
int lark_cuda_avg_pool_forward(lark_tensor *out, const lark_tensor *x, const lark_pool2d_args *a, bool adaptive);
int lark_cuda_avg_pool_backward(lark_tensor *gin, const lark_tensor *gout, const lark_pool2d_args *a, bool adaptive);
int lark_cuda_max_pool_forward(lark_tensor *out, lark_tensor *idx, const lark_tensor *x, const lark_pool2d_args *a);
int lark_cuda_max_pool_backward(lark_tensor *gin, const lark_tensor *gout, const lark_tensor *idx,
                                const lark_pool2d_args *a);
/* reduce.cu (reductions; norm_part is optim.c's total_norm), random.cu, optim.cu */
int lark_cuda_reduce(lark_reduce_op op, const lark_tensor *t, const lark_reduce_geom *g, const lark_reduce_args *args,
                     lark_tensor *out, lark_tensor *out_idx);
int lark_cuda_norm_part(const lark_tensor *t, double p, double *out);
int lark_cuda_random_fill(lark_tensor *t, const lark_dist *ds, uint64_t seed, uint64_t offset);
int lark_cuda_bernoulli(lark_tensor *out, const lark_tensor *p, uint64_t seed, uint64_t offset, int64_t *bad,
                        double *bad_value);
int lark_cuda_sgd_update(lark_tensor *p, const lark_tensor *g, lark_tensor *buf, const lark_sgd_args *a, bool first);
int lark_cuda_adamw_update(lark_tensor *p, const lark_tensor *g, lark_tensor *m, lark_tensor *v, lark_tensor *vmax,
                           const lark_adamw_args *a, double decay, double step_size, double bc2_sqrt);
int lark_cuda_lerp(lark_tensor *dst, const lark_tensor *src, double weight);
/* gpunorm: norm.cu, softmax.cu, activation.cu (contracts in core/backend.h) */
int lark_cuda_layer_norm_forward(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                                 lark_tensor *mean, lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner,
                                 double eps);
int lark_cuda_layer_norm_backward(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                                  const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                                  const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner);
int lark_cuda_batch_norm_forward(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                                 lark_tensor *mean, lark_tensor *var, lark_tensor *rstd, int64_t outer, int64_t C,
                                 int64_t inner, double eps, bool training);
int lark_cuda_batch_norm_backward(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                                  const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                                  const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner, bool batch_stats);
int lark_cuda_softmax_forward(lark_tensor *y, const lark_tensor *x, int64_t outer, int64_t D, int64_t inner, bool log);
int lark_cuda_softmax_backward(lark_tensor *dx, const lark_tensor *g, const lark_tensor *y, int64_t outer, int64_t D,
                               int64_t inner, bool log);
int lark_cuda_loss_rows(lark_tensor *loss, const lark_tensor *logp, const lark_tensor *target_index,
                        const lark_tensor *target_prob, double smoothing, int64_t *bad, int64_t *bad_value);
int lark_cuda_loss_backward(lark_tensor *dz, lark_tensor *dq, const lark_tensor *g, int64_t g_step, double g_div,
                            const lark_tensor *logp, const lark_tensor *target_index, const lark_tensor *target_prob,
                            double smoothing, bool through_softmax);
int lark_cuda_gelu_forward(lark_tensor *y, const lark_tensor *x);
int lark_cuda_gelu_backward(lark_tensor *dx, const lark_tensor *g, const lark_tensor *x);
/* end of gpunorm's declarations */

/* lark_cuda_init is called by core/dtype.c (it declares it there, not in a header). */
int lark_cuda_init(void);

} /* extern "C" */

/* ---- C++ helpers for kernels ---------------------------------------------------------------- */

/* Threads per block of the elementwise kernels. */
#define LARK_CUDA_THREADS 256

/* Where each of N operands sits in memory: the coalesced shape of the problem and each operand's
 * strides, innermost dim first (dim 0 is the fastest). Passed to kernels by value
 * (520 bytes for N=3, well under the 4 KiB kernel parameter limit). */
template <int N>
struct lark_cuda_geom {
  int ndim;                               /* >= 1 */
  int64_t shape[LARK_MAX_DIMS];           /* shape[0] innermost */
  int64_t stride[N][LARK_MAX_DIMS];       /* elements; 0 on broadcast dims */
};

/* Element offsets of linear index i (row-major over the problem) for each operand. index_t is
 * uint32_t when the whole problem has fewer than 2^32 elements (32-bit division is several times
 * cheaper on a GPU) and uint64_t otherwise. The outermost dim needs no division: what is left of i
 * after the inner dims is its index. */
template <typename index_t, int N>
__device__ __forceinline__ void lark_cuda_offsets(const lark_cuda_geom<N> &g, index_t i, int64_t *off) {
#pragma unroll
  for (int k = 0; k < N; k++) off[k] = 0;
#pragma unroll
  for (int d = 0; d < LARK_MAX_DIMS; d++) {
    if (d == g.ndim - 1) {
#pragma unroll
      for (int k = 0; k < N; k++) off[k] += (int64_t)i * g.stride[k][d];
      break;
    }
    index_t size = (index_t)g.shape[d];
    index_t q = i / size, r = i - q * size;
#pragma unroll
    for (int k = 0; k < N; k++) off[k] += (int64_t)r * g.stride[k][d];
    i = q;
  }
}

/* fn(off) for every element: off[k] is operand k's element offset. */
template <typename index_t, int N, typename Fn>
__global__ void lark_cuda_strided_kernel(lark_cuda_geom<N> g, index_t n, Fn fn) {
  index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N];
    lark_cuda_offsets<index_t, N>(g, i, off);
    fn(off);
  }
}

/* The flat path: every operand contiguous, so every offset is the linear index. */
template <int N, typename Fn>
__global__ void lark_cuda_contiguous_kernel(int64_t n, Fn fn) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N];
#pragma unroll
    for (int k = 0; k < N; k++) off[k] = i;
    fn(off);
  }
}

/* The geometry of a host iterator for the strided kernels: lark_iter lists dims outermost first,
 * the geometry innermost first; unused dims have size 1 and stride 0. */
template <int N>
lark_cuda_geom<N> lark_cuda_geom_of(const lark_iter &it) {
  lark_cuda_geom<N> g;
  g.ndim = it.ndim;
  for (int d = 0; d < it.ndim; d++) {
    int src = it.ndim - 1 - d;
    g.shape[d] = it.shape[src];
    for (int k = 0; k < N; k++) g.stride[k][d] = it.stride[k][src];
  }
  for (int d = it.ndim; d < LARK_MAX_DIMS; d++) {
    g.shape[d] = 1;
    for (int k = 0; k < N; k++) g.stride[k][d] = 0;
  }
  return g;
}

/* The current device's multiprocessors (at least 1) and the most dynamic shared memory a block
 * may opt into: what kernels with large shared tiles size their launches by. */
inline int lark_cuda_device_limits(const char *op, int *sms, int *smem_optin) {
  int dev = 0;
  if (lark_cuda_check(cudaGetDevice(&dev), op, "cudaGetDevice") ||
      lark_cuda_check(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev), op,
                      "cudaDeviceGetAttribute(multiprocessors)") ||
      lark_cuda_check(cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), op,
                      "cudaDeviceGetAttribute(shared memory per block)"))
    return lark_error_code();
  if (*sms < 1) *sms = 1;
  return 0;
}

/* Lets kernel use smem bytes of dynamic shared memory (an opt-in above 48 KB). */
template <typename K>
int lark_cuda_allow_smem(const char *op, K kernel, size_t smem) {
  if (smem <= 48 * 1024) return 0;
  return lark_cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), op,
                         "cudaFuncSetAttribute(max dynamic shared memory)");
}

/* Whether a grid-stride loop over n items of `blocks` blocks may count in uint32: n + one step of
 * the whole grid must not wrap. */
inline bool lark_cuda_fits32(int64_t n, unsigned blocks, int threads) {
  return n < (int64_t)UINT32_MAX - (int64_t)blocks * threads;
}

/* Runs fn over the N tensors ts (one shape; ts[0] is the output, the others may be expanded).
 * fn holds the data pointers; it is called with each element's offsets. Sets the current device
 * to ts[0]'s. Returns 0 or a negative status naming op. */
template <int N, typename Fn>
int lark_cuda_launch(const char *op, const lark_tensor *const *ts, Fn fn) {
  if (lark_cuda_set_device(lark_tensor_device(ts[0]), op)) return lark_error_code();
  lark_iter it; /* coalesces dims on the host, exactly as the CPU kernels see them */
  lark_iter_init(&it, N, ts);
  if (it.numel <= 0) return 0; /* a grid of 0 blocks is an invalid launch */
  bool contiguous = it.ndim == 1;
  for (int k = 0; k < N; k++) contiguous = contiguous && it.stride[k][0] == 1;
  unsigned blocks = lark_cuda_grid(it.numel, LARK_CUDA_THREADS);
  if (contiguous) {
    lark_cuda_contiguous_kernel<N, Fn><<<blocks, LARK_CUDA_THREADS>>>(it.numel, fn);
  } else {
    lark_cuda_geom<N> g = lark_cuda_geom_of<N>(it);
    if (lark_cuda_fits32(it.numel, blocks, LARK_CUDA_THREADS))
      lark_cuda_strided_kernel<uint32_t, N, Fn><<<blocks, LARK_CUDA_THREADS>>>(g, (uint32_t)it.numel, fn);
    else
      lark_cuda_strided_kernel<uint64_t, N, Fn><<<blocks, LARK_CUDA_THREADS>>>(g, (uint64_t)it.numel, fn);
  }
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

#endif
