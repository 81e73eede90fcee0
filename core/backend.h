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
} lark_backend;

/* flags of the dwconv fields */
#define LARK_DWCONV_REFERENCE 1u  /* the plain kernel, for tests */
#define LARK_DWCONV_ACCUMULATE 2u /* out += result */

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
