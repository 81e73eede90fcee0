/*
 * backend.h: the table of kernels a backend provides, and helpers shared by core's op files.
 *
 * A front function (core/ops/ files) validates its arguments, picks the result dtype and shape,
 * allocates the result and then calls its backend's kernel through this table. Kernels see tensors
 * that are already checked: same device, operands expanded (stride 0) to the output's shape, and
 * the dtypes each field's comment promises. A NULL field means "not implemented on this backend";
 * lark_backend_missing() turns that into a clear error.
 */
#ifndef LARK_BACKEND_H
#define LARK_BACKEND_H

#include "lark.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- argument types of the reduce, random and optimizer fields (the last block of the table) ---- */

/* How a reduction sees its input (reduce.c computes it, a backend's `reduce` reads it): output
 * element o (row-major over the kept dims) reduces the nred elements at
 *   kept_offset(o) + reduced_offset(r),  r in [0, nred),
 * in elements from lark_data_ptr(input), each offset the row-major unravelling of o (r) over
 * kshape (rshape) times kstride (rstride). Size-1 dims are dropped and neighbours that step
 * through memory as one dim are merged, so a contiguous problem has one kept and one reduced dim. */
typedef struct lark_reduce_geom {
  int nk, nr;                    /* >= 1 each (one dim of size 1, stride 0, when there is none) */
  int64_t kshape[LARK_MAX_DIMS]; /* kept dims, in the output's row-major order */
  int64_t kstride[LARK_MAX_DIMS];
  int64_t rshape[LARK_MAX_DIMS]; /* reduced dims, innermost last: in the input's order when indices
                                    are wanted (r is then the flat row-major index), else by
                                    decreasing stride */
  int64_t rstride[LARK_MAX_DIMS];
  int64_t nout, nred;            /* the products of kshape and of rshape (either may be 0) */
} lark_reduce_geom;

/* A distribution of random.c's Philox scheme (its header gives the exact formulas). */
typedef enum { LARK_DIST_UNIFORM, LARK_DIST_NORMAL, LARK_DIST_RANDINT, LARK_DIST_BERNOULLI } lark_dist_kind;
typedef struct lark_dist {
  lark_dist_kind kind;
  double a, b;    /* uniform: low, high; normal: mean, std; bernoulli: p in a */
  int64_t low;    /* randint: values low + [0, range) */
  uint64_t range;
} lark_dist;

typedef struct lark_backend {
  const char *name;
  /* Raw memory on `dev`. malloc returns 0 or LARK_ERR_NOMEM (with a message naming the size). */
  int (*malloc)(lark_device dev, size_t nbytes, void **ptr);
  void (*free)(lark_device dev, void *ptr);
  /* Contiguous bytes between this device and the host: to_device != 0 copies host -> device. */
  int (*memcpy_host)(lark_device dev, void *dst, const void *src, size_t nbytes, int to_device);

  /* dst = src, same shape (src possibly expanded), any strides, dtypes may differ. */
  int (*copy)(lark_tensor *dst, const lark_tensor *src);
  /* every element of t (any strides) = value, converted to t's dtype. */
  int (*fill)(lark_tensor *t, double value);
  /* out = a op b. a and b have the same dtype and out's shape (expanded); out has that dtype, or
   * bool for comparisons and logical ops. out may alias a (in-place). */
  int (*binary)(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b);
  /* out = op(a), same shape and dtype (bool for NOT). out may alias a. */
  int (*unary)(lark_unary_op op, lark_tensor *out, const lark_tensor *a);
  /* out = clamp(a, lo, hi), NAN bound = none; same dtype. */
  int (*clamp)(lark_tensor *out, const lark_tensor *a, double lo, double hi);
  /* out = cond ? a : b; cond bool, a/b/out one dtype, all of out's shape. */
  int (*where)(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b);
  /* Batched GEMM on contiguous-or-transposed operands:
   *   out[i] (m, n) = alpha * a[i] (m, k) @ b[i] (k, n) + beta * out[i]   for i < batch
   * a, b, out are 3-D views of one dtype (float32/float64) whose batch stride may be 0. */
  int (*gemm)(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta);

  /* ---- reductions, random fills, optimizer updates (reduce.c, random.c, optim.c) -----------------
   * The CPU runs those files' own kernels, so lark_cpu_backend leaves these NULL; another backend
   * fills them to run the ops on its device (the front functions send only non-CPU tensors here). */
  /* out (contiguous, g->nout elements, the op's result dtype, or NULL) and out_idx (contiguous
   * int64, the flat index r of each max/min, or NULL) = op over g's reduced elements of t, with
   * reduce.c's semantics (NaN wins max/min, first index on ties, empty sums 0 and products 1).
   * reduce.c has checked op, dtypes and dims; args gives unbiased (var, std) and p (norm). */
  int (*reduce)(lark_reduce_op op, const lark_tensor *t, const lark_reduce_geom *g, const lark_reduce_args *args,
                lark_tensor *out, lark_tensor *out_idx);
  /* Element i of t (row-major over its shape; any strides without stride-0 repeats) = the value of
   * ds from Philox block (key seed, counter offset + i), exactly as random.c computes it. */
  int (*random_fill)(lark_tensor *t, const lark_dist *ds, uint64_t seed, uint64_t offset);
  /* out[i] (contiguous, p's shape and dtype) = 1 with probability p[i] from block (seed, offset + i);
   * p of any dtype and strides, on out's device. *bad = the first i whose p[i] is not in [0, 1] (NaN
   * included), its value in *bad_value, or -1 when every p is valid (else out is meaningless). */
  int (*bernoulli)(lark_tensor *out, const lark_tensor *p, uint64_t seed, uint64_t offset, int64_t *bad,
                   double *bad_value);
  /* One parameter's SGD update with optim.c's formulas in the tensor's precision: p, g and buf (NULL
   * without momentum) contiguous, of one float dtype and shape; first: buf was just made (takes d). */
  int (*sgd_update)(lark_tensor *p, const lark_tensor *g, lark_tensor *buf, const lark_sgd_args *a, bool first);
  /* One parameter's AdamW update (vmax NULL unless amsgrad), contiguous tensors as for SGD; decay =
   * 1 - lr * wd, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), from optim.c. */
  int (*adamw_update)(lark_tensor *p, const lark_tensor *g, lark_tensor *m, lark_tensor *v, lark_tensor *vmax,
                      const lark_adamw_args *a, double decay, double step_size, double bc2_sqrt);
  /* dst = lerp(dst, src, weight), optim.c's two-sided formula; contiguous, one float dtype and shape. */
  int (*lerp)(lark_tensor *dst, const lark_tensor *src, double weight);
  /* *out = the sum of |x|^p over a contiguous float tensor (max |x| for an infinite p), accumulated
   * in double; NaN when an element is NaN. */
  int (*norm_part)(const lark_tensor *t, double p, double *out);

  /* ---- depth-wise 2-D convolution (core/ops/dwconv_device.c calls these; formulas in dwconv.h) ----
   * The front functions have checked everything and hand over contiguous tensors of one float dtype
   * (float32 or float64) on one device, with geometry (N, C, H, W) input, (N, C, Ho, Wo) output,
   * (C, 1, kh, kw) weight, (C) bias, Ho and Wo = lark_conv2d_output_size(H, W, p); the result is
   * never empty. In the forward pass H or W may be 0 (every tap reads padding): nothing is read then.
   * flags: LARK_DWCONV_REFERENCE runs the plain kernel (one thread per result, every tap with a
   * bounds test) that the fast ones are tested against; LARK_DWCONV_ACCUMULATE adds the result to
   * what the output holds instead of overwriting it (sums of kernels, gradient accumulation). */
  /* out (N, C, Ho, Wo) = dwconv(input (N, C, H, W), weight (C, 1, kh, kw)) + bias (C) or NULL. */
  int (*dwconv_forward)(lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                        const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags);
  /* grad_in (N, C, H, W) = the input gradient of dwconv for grad_out (N, C, Ho, Wo) and weight
   * (C, 1, kh, kw); every element is written (zeros where no output depends on it). */
  int (*dwconv_backward_input)(lark_tensor *grad_in, const lark_tensor *grad_out, const lark_tensor *weight,
                               const lark_conv2d_params *p, unsigned flags);
  /* grad_w (C, 1, kh, kw) = the weight gradient of dwconv: grad_out (N, C, Ho, Wo) times input
   * (N, C, H, W) summed over N, Ho, Wo. Here N*H*W > 0 as well (the front fills zeros otherwise).
   * Deterministic: the same inputs give the same bits on every run. */
  int (*dwconv_backward_weight)(lark_tensor *grad_w, const lark_tensor *grad_out, const lark_tensor *input,
                                const lark_conv2d_params *p, unsigned flags);

  /* ---- indexing, sorting, running sums (gpuidx: core/ops/index.c, core/ops/sort.c) -----------------
   * The CPU runs those files' own kernels, so lark_cpu_backend leaves these NULL; the front functions
   * send only non-CPU tensors here, after every check, with 0-d tensors viewed as 1-D (ndim >= 1
   * wherever a dim is named). Index tensors are int64, 0-based. */
  /* *bad = the row-major position of the first element of index (any strides, not empty) outside
   * [0, size), or -1 when there is none; *bad_value = that element. */
  int (*index_check)(const lark_tensor *index, int64_t size, int64_t *bad, int64_t *bad_value);
  /* out (contiguous) = t picked along dim: out[c] = t[c with index[c] in place of c_dim] for every
   * coordinate c of out. index (checked) has out's shape and any strides (index_select passes its
   * 1-D index expanded along the other dims); t has out's ndim and dtype, any strides, and is at
   * least as large as out in every dim but dim. */
  int (*gather)(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index);
  /* t[c with index[c] in place of c_dim] += src[c] for every coordinate c of index (checked), each
   * destination summed in increasing position along dim, as index.c's CPU kernel does (so float
   * sums have its bits). t any strides but not expanded; src of t's dtype and ndim, at least as
   * large as index; neither shares memory with t. int64 and uint8 wrap, bool adds are ORs. */
  int (*scatter_add)(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src);
  /* t[c] = value (converted as fill converts it) wherever mask[c] (bool or uint8, expanded to t's
   * shape, not sharing memory with t); t any strides. */
  int (*masked_fill)(lark_tensor *t, const lark_tensor *mask, double value);
  /* *out = a new 1-D tensor on t's device holding the elements of t where mask is set, in row-major
   * order; t and mask (bool or uint8) of one shape, any strides (expanded included). */
  int (*masked_select)(const lark_tensor *t, const lark_tensor *mask, lark_tensor **out);
  /* *out = a new (nnz, ndim) int64 tensor on t's device: the coordinates of t's non-zero elements
   * (NaN counts as non-zero) in row-major order; t any dtype, strides and ndim (0-d: (nnz, 0)). */
  int (*nonzero)(const lark_tensor *t, lark_tensor **out);
  /* values and indices (int64) contiguous, t's shape with k along dim = the first k of each line of
   * t along dim in sort.c's order (NaN above every number, -0 equal to +0; desc reverses the values'
   * order, ties always by increasing position), kept in that order (sorted) or by position
   * (!sorted). t any dtype and strides, not empty; 0 < k <= t->shape[dim]. */
  int (*topk)(const lark_tensor *t, int dim, int64_t k, bool desc, bool sorted, lark_tensor *values,
              lark_tensor *indices);
  /* out (contiguous, t's shape; t's dtype for floats, int64 otherwise) = the running sums of t (any
   * strides, not empty) along dim, accumulated in float64 (floats) or wrapping int64, as sort.c. */
  int (*cumsum)(lark_tensor *out, const lark_tensor *t, int dim);
  /* ---- end of gpuidx's fields ---- */

  /* ---- dense 2-D convolution and pooling on a device (core/ops/conv.c, core/ops/pool.c) ----------
   * The CPU runs those files' own loops, so lark_cpu_backend leaves these NULL. conv.c runs a dense or
   * grouped convolution on a device as it does on the CPU: these two fields move receptive fields
   * between a map and its column matrix, the gemm field does the products. x and col are contiguous,
   * of one float dtype, on one device; x is (nb, C, H, W) (a chunk of the batch); Ho and Wo are
   * lark_conv2d_output_size(H, W, p) (both >= 1). Row r = (c*kh + i)*kw + j, column q = oh*Wo + ow of
   * sample s's matrix is x[s, c, oh*stride_h - pad_top + i*dil_h, ow*stride_w - pad_left + j*dil_w],
   * zero where that lies outside the map. */
  /* col (nb, C*kh*kw, Ho*Wo), or (C*kh*kw, nb, Ho*Wo) with LARK_IM2COL_TAP_MAJOR = im2col(x). */
  int (*im2col)(lark_tensor *col, const lark_tensor *x, const lark_conv2d_params *p, unsigned flags);
  /* x (nb, C, H, W) = for each element, the sum of the entries of col (nb, C*kh*kw, Ho*Wo) that
   * im2col copies it to, added in increasing row order (zero where none does); every element is
   * written, deterministically (no atomics). */
  int (*col2im)(lark_tensor *x, const lark_tensor *col, const lark_conv2d_params *p);
  /* Pooling over planes: x (..., H, W) and out (..., Ho, Wo) contiguous, of one float dtype, the
   * leading dims (the planes) equal, Ho and Wo as pool.c computes them from a, H, W > 0, out not
   * empty. Each kernel follows pool.c's loops exactly (same windows, same order of additions, float64
   * window sums), so the results equal the CPU's. */
  /* out = the window means: a's windows over the zero-padded map divided by kh*kw
   * (count_include_pad), or with adaptive PyTorch's adaptive windows (a unused). */
  int (*avg_pool_forward)(lark_tensor *out, const lark_tensor *x, const lark_pool2d_args *a, bool adaptive);
  /* gin (..., H, W) = the gradient of avg_pool_forward for gout (..., Ho, Wo); every element written. */
  int (*avg_pool_backward)(lark_tensor *gin, const lark_tensor *gout, const lark_pool2d_args *a, bool adaptive);
  /* out and idx (int64, out's shape) = the maximum of each window (padding ignored, NaN wins) and the
   * in-plane position ih*W + iw of its first occurrence in row-major window order. */
  int (*max_pool_forward)(lark_tensor *out, lark_tensor *idx, const lark_tensor *x, const lark_pool2d_args *a);
  /* gin (..., H, W) = the sum of gout (..., Ho, Wo) over the windows of a whose idx names each
   * element (idx from max_pool_forward with the same a); every element written. */
  int (*max_pool_backward)(lark_tensor *gin, const lark_tensor *gout, const lark_tensor *idx,
                           const lark_pool2d_args *a);

  /* ---- norms, softmax, losses, GELU (gpunorm: core/ops/norm.c, softmax.c, activation.c) -----------
   * The CPU runs those files' own kernels (these stay NULL in lark_cpu_backend); the front functions
   * send non-CPU tensors here after every check, with contiguous tensors on one device: x, y, g, dx
   * of one float dtype (float32 or float64), per-channel w, b, dw, db (C) of that dtype (w, b NULL
   * when absent; dx, dw, db NULL when not wanted), and float64 statistics mean, var, rstd. Shapes
   * are given as (outer, C or D, inner) blocks and any of them may be 0. The formulas are the ones
   * at the top of each core file, with float64 sums as on the CPU. */
  /* Layer norm over dim 1 of x (outer, C, inner): y, and mean and rstd (outer * inner). */
  int (*layer_norm_forward)(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                            lark_tensor *mean, lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner, double eps);
  /* Its gradients for g (outer, C, inner), from the saved x, w, mean and rstd. */
  int (*layer_norm_backward)(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                             const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                             const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner);
  /* Batch norm of x (outer, C, inner) per channel. training: mean and var (C) = the batch's mean and
   * biased variance over (o, i); else mean and var hold the statistics to use. Then rstd (C) =
   * 1 / sqrt(var + eps) and y = x * scale + shift, scale = rstd * w, shift = b - mean * scale. */
  int (*batch_norm_forward)(lark_tensor *y, const lark_tensor *x, const lark_tensor *w, const lark_tensor *b,
                            lark_tensor *mean, lark_tensor *var, lark_tensor *rstd, int64_t outer, int64_t C,
                            int64_t inner, double eps, bool training);
  /* Its gradients; batch_stats: mean and rstd were the batch's (training), else constants (eval). */
  int (*batch_norm_backward)(lark_tensor *dx, lark_tensor *dw, lark_tensor *db, const lark_tensor *g,
                             const lark_tensor *x, const lark_tensor *w, const lark_tensor *mean,
                             const lark_tensor *rstd, int64_t outer, int64_t C, int64_t inner, bool batch_stats);
  /* y = softmax (log_softmax when log) of x (outer, D, inner) along D. */
  int (*softmax_forward)(lark_tensor *y, const lark_tensor *x, int64_t outer, int64_t D, int64_t inner, bool log);
  /* dx from g and the saved output y, all (outer, D, inner). */
  int (*softmax_backward)(lark_tensor *dx, const lark_tensor *g, const lark_tensor *y, int64_t outer, int64_t D,
                          int64_t inner, bool log);
  /* loss (N) float64 = each row's loss from log-probabilities logp (N, C) and either target_index
   * (N) int64 or target_prob (N, C) (the other NULL), label smoothing as softmax.c. *bad = the first
   * n whose class is outside [0, C), its value in *bad_value, or -1 when all are valid (loss is
   * meaningless otherwise). */
  int (*loss_rows)(lark_tensor *loss, const lark_tensor *logp, const lark_tensor *target_index,
                   const lark_tensor *target_prob, double smoothing, int64_t *bad, int64_t *bad_value);
  /* dz (N, C): d loss / d logits (through_softmax) or d loss / d logp, and dq (N, C): d loss /
   * d target_prob, either NULL when not wanted; row n's gradient is g[n * g_step] / g_div (g
   * float64: (N) with step 1 for no reduction, one value with step 0 and g_div N for 'mean'). */
  int (*loss_backward)(lark_tensor *dz, lark_tensor *dq, const lark_tensor *g, int64_t g_step, double g_div,
                       const lark_tensor *logp, const lark_tensor *target_index, const lark_tensor *target_prob,
                       double smoothing, bool through_softmax);
  /* y = gelu(x) and dx = g * gelu'(x) (the exact GELU), one shape. */
  int (*gelu_forward)(lark_tensor *y, const lark_tensor *x);
  int (*gelu_backward)(lark_tensor *dx, const lark_tensor *g, const lark_tensor *x);
  /* ---- end of gpunorm's fields ---- */
} lark_backend;

/* flags of the dwconv fields */
#define LARK_DWCONV_REFERENCE 1u  /* the plain kernel, for tests */
#define LARK_DWCONV_ACCUMULATE 2u /* out += result */
#define LARK_DWCONV_TF32 4u       /* float32 on TF32 tensor cores, when the backend has them */
#define LARK_DWCONV_BF16 8u       /* float32 on BF16 tensor cores (float32 accumulation) */
/* flag of the im2col field */
#define LARK_IM2COL_TAP_MAJOR 1u  /* col (C*kh*kw, nb, Ho*Wo): one row per tap across the chunk */

/* The backend that owns memory of this device kind (never NULL for LARK_CPU). */
const lark_backend *lark_backend_for(lark_device dev);
/* Registers a backend (the CUDA backend calls this from lark_cuda_init). */
void lark_backend_register(lark_device_kind kind, const lark_backend *be);
/* Sets "op: not implemented for cuda" and returns LARK_ERR_UNIMPL. */
int lark_backend_missing(const char *op, lark_device dev);

extern const lark_backend lark_cpu_backend;

/* Whether a 3-D (batch, rows, cols) view is row-major (trans false) or column-major (trans true)
 * with leading dimension ld, as BLAS reads it in place; false if neither. */
bool lark_gemm_layout(const lark_tensor *t3, bool *trans, int64_t *ld);

/* ---- helpers for op files ------------------------------------------------------------------- */

/* A tensor's view with its dims broadcast to (ndim, shape): stride 0 on expanded dims. */
lark_tensor *lark_expand_to(const char *op, const lark_tensor *t, int ndim, const int64_t *shape);
/* Returns t (retained) if it already has dtype dt, else a converted contiguous copy. */
lark_tensor *lark_cast(const lark_tensor *t, lark_dtype dt);
/* Checks that every tensor lives on the same device; names op and the arguments. */
int lark_check_same_device(const char *op, int n, const lark_tensor *const *ts, const char *const *names);
/* Element offsets of a row-major linear index into a view. */
int64_t lark_offset_of(const lark_tensor *t, int64_t linear);
/* "op: <name> was freed" unless t still has its storage. */
int lark_check_alive(const char *op, const lark_tensor *t, const char *name);
/* Refuses to write through an expanded view (a stride-0 dim of size > 1): several elements share
 * one memory location, so the result would depend on the order of writes. `op` names the
 * in-place form (add_, copy_). */
int lark_check_writable(const char *op, const lark_tensor *t, const char *name);
/* Whether two tensors view the same elements of one storage in the same layout. */
bool lark_same_view(const lark_tensor *a, const lark_tensor *b);
/* Bumps the storage version after an in-place write (autograd checks it). */
void lark_bump_version(lark_tensor *t);

/* ---- strided iteration for CPU kernels ------------------------------------------------------ */

/* Up to LARK_ITER_MAX operands of one shape, with dims coalesced where every operand allows, so a
 * contiguous problem becomes one dim. Kernels loop over the last dim inside, the rest outside. */
#define LARK_ITER_MAX 4
typedef struct {
  int nargs;
  int ndim; /* >= 1 */
  int64_t numel;
  int64_t shape[LARK_MAX_DIMS];
  int64_t stride[LARK_ITER_MAX][LARK_MAX_DIMS];
  char *data[LARK_ITER_MAX]; /* element 0 of each operand */
  /* Work split: rows (all dims but the last) times `chunks` pieces of each row, so that one long
   * contiguous row still spreads over every thread. */
  int64_t chunks;
  int64_t nwork;  /* rows * chunks */
  bool parallel;  /* big enough to be worth the threads */
} lark_iter;

void lark_iter_init(lark_iter *it, int nargs, const lark_tensor *const *ts);
/* Offsets (in elements) of operand k at the start of outer row `row` (row < numel / inner). */
void lark_iter_row(const lark_iter *it, int64_t row, int64_t *offs);
/* Offsets of work item w (< it->nwork) for each operand, and the number of elements it covers
 * along the last dim. */
void lark_iter_work(const lark_iter *it, int64_t w, int64_t *offs, int64_t *n);
/* Offset (in elements, from element 0 of a view) of the r-th position in row-major order over the
 * dims of (nd, shape, stride) other than skip_a and skip_b (-1: none): the start of the r-th line
 * along a dim, for ops that work line by line (gather, sort, cumsum). */
int64_t lark_unravel(int nd, const int64_t *shape, const int64_t *stride, int skip_a, int skip_b, int64_t r);
/* Work below this many elements runs on one thread. */
#define LARK_PARALLEL_GRAIN 32768

#ifdef __cplusplus
}
#endif
#endif
