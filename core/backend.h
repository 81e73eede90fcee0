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
} lark_backend;

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
