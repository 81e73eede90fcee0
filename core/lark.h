/*
 * lark.h: the public C API of lark's core. No Lua in here: the Lua binding (lua/) sits on top.
 *
 * The model, in one page
 * ----------------------
 * A lark_storage is a reference-counted block of bytes on one device (the CPU or a CUDA GPU).
 * A lark_tensor is a strided view of a storage: dtype, shape, strides and offset (both counted in
 * elements, not bytes). Views (view, narrow, select, transpose, permute, expand, squeeze,
 * unsqueeze, slice) make a new lark_tensor that shares the storage and never copy. Tensors are
 * reference-counted too: lark_tensor_retain / lark_tensor_release.
 *
 *     lark_tensor *x = lark_randn(2, (int64_t[]){3, 4}, LARK_FLOAT32, NULL);  // 3x4, contiguous
 *     lark_tensor *xt = lark_transpose(x, 0, 1);       // 4x3 view, strides {1, 4}
 *     lark_tensor *y = lark_add(x, xt);                // error: [3,4] and [4,3] cannot broadcast
 *     if (!y) fprintf(stderr, "%s\n", lark_error());   // "add: shapes [3,4] and [4,3] cannot be broadcast"
 *
 * Conventions
 * -----------
 * - Every index and dim here is 0-based; negative dims count from the end where a function says
 *   so. The Lua binding converts its 1-based surface exactly once.
 * - Functions that make a tensor return it (a new reference the caller owns) or NULL on error.
 *   Functions that modify in place (names ending in `_`) or fill an `out` return 0 or a negative
 *   lark_status. On error, lark_error() gives a message that names the op, the argument and what
 *   was expected. Nothing in core aborts on bad input.
 * - Each op has one front function that checks dtypes, devices and shapes, allocates the result
 *   and calls the kernel of the tensor's backend (see backend.h). A backend that lacks a kernel
 *   gives a "not implemented for cuda" error, never a silent fallback.
 */
#ifndef LARK_H
#define LARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LARK_MAX_DIMS 16

/* ---- errors --------------------------------------------------------------------------------- */

typedef enum {
  LARK_OK = 0,
  LARK_ERR_ARG = -1,      /* a bad argument: wrong value, out of range */
  LARK_ERR_SHAPE = -2,    /* shapes that do not fit together */
  LARK_ERR_DTYPE = -3,    /* a dtype the op does not take */
  LARK_ERR_DEVICE = -4,   /* tensors on different devices, or a device that is not there */
  LARK_ERR_NOMEM = -5,    /* allocation failed */
  LARK_ERR_UNIMPL = -6,   /* the op has no kernel for this backend or dtype */
  LARK_ERR_INDEX = -7,    /* an index out of range */
  LARK_ERR_IO = -8,       /* a file could not be read or written */
  LARK_ERR_BACKEND = -9,  /* the backend (CUDA, cuBLAS) reported a failure */
} lark_status;

/* Records a printf-style message for this thread and returns `code`. */
int lark_set_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the last error on this thread ("" if none). */
const char *lark_error(void);
/* The code of the last error on this thread. */
int lark_error_code(void);
void lark_clear_error(void);

/* ---- dtypes and devices --------------------------------------------------------------------- */

typedef enum {
  LARK_FLOAT32 = 0,
  LARK_FLOAT64 = 1,
  LARK_INT64 = 2,
  LARK_UINT8 = 3,
  LARK_BOOL = 4,
  LARK_NDTYPES
} lark_dtype;

size_t lark_dtype_size(lark_dtype dt);
const char *lark_dtype_name(lark_dtype dt);        /* "float32", ... */
int lark_dtype_from_name(const char *name);         /* dtype, or -1 if unknown ("float", "double", "long" too) */
bool lark_dtype_is_float(lark_dtype dt);
/* The dtype of a binary op on a and b: bool < uint8 < int64 < float32 < float64. */
lark_dtype lark_promote(lark_dtype a, lark_dtype b);

/* How float32 products may be computed on a GPU, as PyTorch's torch.set_float32_matmul_precision:
 * HIGHEST (the default) is exact float32; HIGH allows TF32 tensor cores (10-bit mantissas,
 * float32 sums); MEDIUM allows BF16 tensor cores (8-bit mantissas, float32 sums). It governs
 * cuBLAS products (matmul, conv2d) and the depth-wise convolution on CUDA tensors; the CPU and
 * float64 are always exact. One setting per process. */
typedef enum { LARK_PRECISION_HIGHEST = 0, LARK_PRECISION_HIGH = 1, LARK_PRECISION_MEDIUM = 2 } lark_precision;
/* "highest", "high" or "medium"; anything else is LARK_ERR_ARG and leaves the setting alone. */
int lark_set_float32_precision(const char *name);
lark_precision lark_float32_precision(void);
const char *lark_float32_precision_name(void);

typedef enum { LARK_CPU = 0, LARK_CUDA = 1, LARK_NDEVICE_KINDS } lark_device_kind;

typedef struct {
  int8_t kind;  /* lark_device_kind */
  int8_t index; /* GPU ordinal; 0 for the CPU */
} lark_device;

#define LARK_DEVICE_CPU ((lark_device){LARK_CPU, 0})
bool lark_device_eq(lark_device a, lark_device b);
/* "cpu", "cuda", "cuda:1" -> device; returns 0 or an error. */
int lark_device_parse(const char *s, lark_device *out);
/* Writes "cpu" or "cuda:0" into buf. */
const char *lark_device_str(lark_device d, char *buf, size_t n);

/* ---- storage and tensors -------------------------------------------------------------------- */

typedef struct lark_storage {
  void *data;
  size_t nbytes;
  lark_device device;
  int refcount;     /* atomic */
  uint64_t version; /* bumped by every in-place write; autograd compares it */
  bool borrowed;    /* data not owned (not freed with the storage) */
  bool host_alloc;  /* data from lark_cuda_host_alloc (lark_empty_pinned): freed with lark_cuda_host_free */
} lark_storage;

struct lark_node; /* autograd (see autograd.h) */

typedef struct lark_tensor {
  lark_storage *storage;
  int64_t offset; /* elements */
  int ndim;
  lark_dtype dtype;
  int64_t shape[LARK_MAX_DIMS];
  int64_t stride[LARK_MAX_DIMS]; /* elements; 0 for broadcast (expanded) dims */
  int refcount;                  /* atomic */
  /* autograd */
  bool requires_grad;
  struct lark_tensor *grad;
  struct lark_node *grad_fn;
} lark_tensor;

/* Total bytes of tensor storage alive on each device kind, for memory specs and the GC hook. */
int64_t lark_bytes_allocated(lark_device_kind kind);
/* Called after every storage allocation with its size (the Lua binding steps its collector). */
typedef void (*lark_alloc_hook)(size_t nbytes, void *ud);
void lark_set_alloc_hook(lark_alloc_hook hook, void *ud);

lark_tensor *lark_tensor_retain(lark_tensor *t);
void lark_tensor_release(lark_tensor *t); /* NULL is fine */
/* Drops the storage now (t:free()): the tensor becomes an empty 0-element tensor. */
void lark_tensor_free_storage(lark_tensor *t);

int64_t lark_numel(const lark_tensor *t);
bool lark_is_contiguous(const lark_tensor *t);
lark_device lark_tensor_device(const lark_tensor *t);
/* Pointer to element 0 of the view (t->storage->data + t->offset * itemsize). */
void *lark_data_ptr(const lark_tensor *t);
/* "[2,3,4]" into buf. */
const char *lark_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* A new, uninitialised, contiguous tensor. `device` NULL means the CPU. */
lark_tensor *lark_empty(int ndim, const int64_t *shape, lark_dtype dt, const lark_device *device);
/* Wraps existing host memory without copying; the caller keeps it alive (used by the binding). */
lark_tensor *lark_from_blob(void *data, int ndim, const int64_t *shape, lark_dtype dt);
/* A view with explicit geometry on t's storage (checked to stay inside the storage). */
lark_tensor *lark_as_strided(const lark_tensor *t, int ndim, const int64_t *shape,
                             const int64_t *stride, int64_t offset);

/* ---- factories ------------------------------------------------------------------------------ */

lark_tensor *lark_zeros(int ndim, const int64_t *shape, lark_dtype dt, const lark_device *device);
lark_tensor *lark_ones(int ndim, const int64_t *shape, lark_dtype dt, const lark_device *device);
lark_tensor *lark_full(int ndim, const int64_t *shape, double value, lark_dtype dt, const lark_device *device);
/* [start, end) by step, like numpy.arange. */
lark_tensor *lark_arange(double start, double end, double step, lark_dtype dt, const lark_device *device);
/* n points from start to end inclusive. */
lark_tensor *lark_linspace(double start, double end, int64_t n, lark_dtype dt, const lark_device *device);
lark_tensor *lark_eye(int64_t n, int64_t m, lark_dtype dt, const lark_device *device);
/* A 0-d tensor holding a number. */
lark_tensor *lark_scalar(double value, lark_dtype dt, const lark_device *device);

/* ---- views (never copy) --------------------------------------------------------------------- */

/* One of `shape` may be -1 (inferred). Fails if the strides do not allow a view. */
lark_tensor *lark_view(const lark_tensor *t, int ndim, const int64_t *shape);
/* A view when possible, else a contiguous copy. */
lark_tensor *lark_reshape(const lark_tensor *t, int ndim, const int64_t *shape);
lark_tensor *lark_narrow(const lark_tensor *t, int dim, int64_t start, int64_t length);
lark_tensor *lark_select(const lark_tensor *t, int dim, int64_t index);
/* Elements start, start+step, ... < stop along dim (step > 0; start/stop clamped like Python). */
lark_tensor *lark_slice(const lark_tensor *t, int dim, int64_t start, int64_t stop, int64_t step);
lark_tensor *lark_transpose(const lark_tensor *t, int dim0, int dim1);
lark_tensor *lark_permute(const lark_tensor *t, int ndim, const int *dims);
/* Size -1 keeps a dim; new leading dims may be added; only size-1 dims are expanded. */
lark_tensor *lark_expand(const lark_tensor *t, int ndim, const int64_t *shape);
/* squeeze: pass LARK_ALL_DIMS to drop every size-1 dim. */
#define LARK_ALL_DIMS INT32_MIN
lark_tensor *lark_squeeze(const lark_tensor *t, int dim);
lark_tensor *lark_unsqueeze(const lark_tensor *t, int dim);
/* Resolves a possibly negative dim against ndim; returns -1 and sets an error if out of range. */
int lark_wrap_dim(const char *op, int dim, int ndim);

/* ---- copies --------------------------------------------------------------------------------- */

lark_tensor *lark_contiguous(const lark_tensor *t); /* t itself (retained) when already contiguous */
lark_tensor *lark_clone(const lark_tensor *t);
/* dst[...] = src broadcast to dst's shape, converting dtype, across devices. */
int lark_copy_(lark_tensor *dst, const lark_tensor *src);
/* t converted to dtype and moved to device (device NULL: keep). Returns t (retained) if nothing changes. */
lark_tensor *lark_to(const lark_tensor *t, lark_dtype dt, const lark_device *device);
int lark_fill_(lark_tensor *t, double value);
/* Reads element i (0-based, in row-major order of the view) as a double; for item() and tables. */
int lark_get_flat(const lark_tensor *t, int64_t i, double *out);

/* ---- elementwise ---------------------------------------------------------------------------- */

typedef enum {
  LARK_OP_ADD, LARK_OP_SUB, LARK_OP_MUL, LARK_OP_DIV, LARK_OP_POW,
  LARK_OP_MAXIMUM, LARK_OP_MINIMUM, LARK_OP_FMOD,
  LARK_OP_EQ, LARK_OP_NE, LARK_OP_LT, LARK_OP_LE, LARK_OP_GT, LARK_OP_GE, /* -> bool */
  LARK_OP_AND, LARK_OP_OR, LARK_OP_XOR,                                   /* logical -> bool */
  LARK_NBINARY
} lark_binary_op;

typedef enum {
  LARK_OP_NEG, LARK_OP_ABS, LARK_OP_EXP, LARK_OP_LOG, LARK_OP_SQRT, LARK_OP_RSQRT,
  LARK_OP_SIN, LARK_OP_COS, LARK_OP_TANH, LARK_OP_SIGMOID, LARK_OP_RELU,
  LARK_OP_FLOOR, LARK_OP_CEIL, LARK_OP_ROUND, LARK_OP_SIGN, LARK_OP_RECIPROCAL,
  LARK_OP_SQUARE, LARK_OP_NOT, /* logical not -> bool */
  LARK_NUNARY
} lark_unary_op;

const char *lark_binary_op_name(lark_binary_op op);
const char *lark_unary_op_name(lark_unary_op op);

/* out = a op b, broadcasting; the result dtype follows lark_promote (true division: integer / integer
 * gives float32; comparisons and logical ops give bool). */
lark_tensor *lark_binary(lark_binary_op op, const lark_tensor *a, const lark_tensor *b);
/* a op scalar (scalar_first: scalar op a). A float scalar on an integer tensor gives float32. */
lark_tensor *lark_binary_scalar(lark_binary_op op, const lark_tensor *a, double s, bool s_is_int, bool scalar_first);
/* a = a op b in place (b broadcast to a's shape, result cast to a's dtype). */
int lark_binary_(lark_binary_op op, lark_tensor *a, const lark_tensor *b);
int lark_binary_scalar_(lark_binary_op op, lark_tensor *a, double s);
/* Into a preallocated out of the broadcast shape (any dtype: the result is converted). */
int lark_binary_out(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b);

lark_tensor *lark_unary(lark_unary_op op, const lark_tensor *a); /* integer input -> float32 for exp, log, ... */
int lark_unary_(lark_unary_op op, lark_tensor *a);

/* Convenience names the rest of core uses. */
lark_tensor *lark_add(const lark_tensor *a, const lark_tensor *b);
lark_tensor *lark_sub(const lark_tensor *a, const lark_tensor *b);
lark_tensor *lark_mul(const lark_tensor *a, const lark_tensor *b);
lark_tensor *lark_div(const lark_tensor *a, const lark_tensor *b);

/* min or max may be NAN for "no bound". */
lark_tensor *lark_clamp(const lark_tensor *a, double min, double max);
int lark_clamp_(lark_tensor *a, double min, double max);
/* cond ? a : b, all three broadcast; cond must be bool or uint8. */
lark_tensor *lark_where(const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b);
/* Broadcast shape of two shapes, or an error naming op. */
int lark_broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                         int *nout, int64_t *sout);

/* ---- reductions (reduce.c) ------------------------------------------------------------------ */

typedef enum {
  LARK_RED_SUM, LARK_RED_MEAN, LARK_RED_PROD, LARK_RED_MAX, LARK_RED_MIN,
  LARK_RED_VAR, LARK_RED_STD, LARK_RED_NORM, LARK_RED_ANY, LARK_RED_ALL,
  LARK_NREDUCE
} lark_reduce_op;

typedef struct {
  int ndims;               /* 0: reduce over every dim */
  int dims[LARK_MAX_DIMS]; /* 0-based, may be negative */
  bool keepdim;
  bool unbiased; /* VAR, STD: divide by n-1 */
  double p;      /* NORM: the order (2 by default; INFINITY allowed) */
} lark_reduce_args;

lark_tensor *lark_reduce(lark_reduce_op op, const lark_tensor *t, const lark_reduce_args *args);
/* max/min along one dim with the indices (int64, 0-based). */
int lark_max_dim(const lark_tensor *t, int dim, bool keepdim, lark_tensor **values, lark_tensor **indices);
int lark_min_dim(const lark_tensor *t, int dim, bool keepdim, lark_tensor **values, lark_tensor **indices);
/* Index of the max (flattened when dim == LARK_ALL_DIMS). */
lark_tensor *lark_argmax(const lark_tensor *t, int dim, bool keepdim);
lark_tensor *lark_argmin(const lark_tensor *t, int dim, bool keepdim);

/* ---- linear algebra (matmul.c) -------------------------------------------------------------- */

/* numpy.matmul: 1-D operands are promoted and squeezed back; batch dims broadcast. float32/64. */
lark_tensor *lark_matmul(const lark_tensor *a, const lark_tensor *b);
/* out = beta * out + alpha * a @ b for 2-D a, b (used by later ops). */
int lark_gemm(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta);

/* ---- joining and splitting (shape.c) -------------------------------------------------------- */

lark_tensor *lark_cat(int n, lark_tensor *const *ts, int dim);
lark_tensor *lark_stack(int n, lark_tensor *const *ts, int dim);
/* Views of t along dim of `size` each (last may be smaller); *n gets the count; caller frees the
 * array with free() and releases each tensor. */
lark_tensor **lark_split(const lark_tensor *t, int64_t size, int dim, int *n);
lark_tensor **lark_split_sizes(const lark_tensor *t, int nsizes, const int64_t *sizes, int dim);
lark_tensor **lark_chunk(const lark_tensor *t, int chunks, int dim, int *n);

/* ---- indexing (index.c, sort.c) ------------------------------------------------------------- */

/* All index tensors are int64 and 0-based; out-of-range indices are errors, not crashes. */
lark_tensor *lark_index_select(const lark_tensor *t, int dim, const lark_tensor *index);
lark_tensor *lark_gather(const lark_tensor *t, int dim, const lark_tensor *index);
/* t[index[i][j]][j] += src[i][j] (for dim 0), in place. */
int lark_scatter_add_(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src);
lark_tensor *lark_scatter_add(const lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src);
/* mask (bool/uint8) broadcast to t's shape. */
int lark_masked_fill_(lark_tensor *t, const lark_tensor *mask, double value);
lark_tensor *lark_masked_fill(const lark_tensor *t, const lark_tensor *mask, double value);
/* The elements where mask is true, as a 1-D tensor. */
lark_tensor *lark_masked_select(const lark_tensor *t, const lark_tensor *mask);
/* (nnz, ndim) int64 indices of the non-zero elements, row-major order. */
lark_tensor *lark_nonzero(const lark_tensor *t);
int lark_topk(const lark_tensor *t, int64_t k, int dim, bool largest, bool sorted,
              lark_tensor **values, lark_tensor **indices);
/* Stable sort along dim. */
int lark_sort(const lark_tensor *t, int dim, bool descending, lark_tensor **values, lark_tensor **indices);
lark_tensor *lark_cumsum(const lark_tensor *t, int dim);

/* ---- random numbers (random.c) -------------------------------------------------------------- */

/* Philox 4x32-10 is counter-based: element i of a draw depends only on (seed, offset + i), so the
 * numbers are the same whatever the number of threads, and the same on every backend. */
typedef struct lark_generator {
  uint64_t seed;
  uint64_t offset; /* counter position: advanced by every draw */
} lark_generator;

lark_generator *lark_default_generator(void);
void lark_manual_seed(uint64_t seed); /* seeds the default generator (offset 0) */
void lark_generator_init(lark_generator *g, uint64_t seed);
/* One Philox 4x32-10 block: counter (c0..c3) and key (k0, k1) -> 4 random words. */
void lark_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* gen NULL means the default generator. All fill in place, any layout, float dtypes. */
int lark_uniform_(lark_tensor *t, double low, double high, lark_generator *gen);
int lark_normal_(lark_tensor *t, double mean, double std, lark_generator *gen);
/* Integers in [low, high). */
int lark_randint_(lark_tensor *t, int64_t low, int64_t high, lark_generator *gen);
/* out[i] = 1 with probability p[i] (p broadcast), in out's dtype. */
lark_tensor *lark_bernoulli(const lark_tensor *p, lark_generator *gen);
int lark_bernoulli_(lark_tensor *t, double p, lark_generator *gen);
lark_tensor *lark_rand(int ndim, const int64_t *shape, lark_dtype dt, lark_generator *gen);
lark_tensor *lark_randn(int ndim, const int64_t *shape, lark_dtype dt, lark_generator *gen);
lark_tensor *lark_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, lark_generator *gen);
/* A random permutation of 0..n-1 (int64). */
lark_tensor *lark_randperm(int64_t n, lark_generator *gen);

/* ---- threads -------------------------------------------------------------------------------- */

void lark_set_num_threads(int n);
int lark_get_num_threads(void);

/* Returns the large blocks the CPU allocator keeps for reuse to the system. */
void lark_cpu_empty_cache(void);

/* ---- CUDA ----------------------------------------------------------------------------------- */

bool lark_cuda_is_available(void);  /* built with CUDA and a device answers */
int lark_cuda_device_count(void);
int lark_cuda_synchronize(void);

/* Counters of one device's caching allocator (core/caching_alloc.h). Byte counts are block sizes
 * (requests rounded up to 512 bytes) except `requested`. */
typedef struct lark_memory_stats {
  int64_t allocated;      /* bytes in blocks handed out and not yet freed */
  int64_t requested;      /* the bytes those allocations asked for */
  int64_t reserved;       /* bytes held from the device: allocated + cached */
  int64_t cached;         /* reserved but free: kept for reuse */
  int64_t peak_allocated; /* highest `allocated` since the start or the last reset */
  int64_t peak_reserved;
  int64_t num_allocs;     /* successful allocations */
  int64_t num_frees;
  int64_t num_cache_hits; /* allocations served from held memory, without asking the device */
  int64_t num_segments;   /* blocks of device memory held now (cudaMalloc'd and not freed) */
  int64_t num_raw_allocs; /* cudaMalloc calls that succeeded */
  int64_t num_raw_frees;  /* cudaFree calls */
  int64_t num_ooms;       /* allocations that failed for lack of memory, after the retry */
  int64_t num_retries;    /* times an allocation ran out, reclaimed memory and tried again */
} lark_memory_stats;
/* The counters of cuda:device. All zeros without CUDA or without a device; LARK_ERR_DEVICE for a
 * device that is not there when there are devices. */
int lark_cuda_memory_stats(int device, lark_memory_stats *out);
/* Gives the device memory the caching allocator holds but no tensor uses back to the driver (all
 * devices). Tensors alive are untouched. A no-op without CUDA. */
void lark_cuda_empty_cache(void);
/* peak_allocated and peak_reserved = their current values, on cuda:device or all when device < 0. */
void lark_cuda_reset_peak_memory_stats(int device);
/* When a device allocation runs out of memory, the allocator calls fn(ud) once (with no lock held;
 * fn may free tensors), then releases its cache and retries. The Lua binding registers a full
 * garbage collection. NULL removes the handler. */
typedef void (*lark_oom_handler)(void *ud);
void lark_set_oom_handler(lark_oom_handler fn, void *ud);

/* Page-locked ("pinned") host memory, for buffers copied to a GPU: the copy is DMA'd straight from
 * it (no staging copy in the driver) and can overlap kernels. Falls back to ordinary memory without
 * CUDA or without a device (lark_cuda_host_is_pinned tells which). Always 64-byte aligned; never
 * NULL for nbytes 0; NULL with LARK_ERR_NOMEM on failure. Free only with lark_cuda_host_free
 * (NULL is ignored). Pinning is slow (about as slow as cudaMalloc) and pinned pages cannot be
 * swapped: allocate a few buffers once and reuse them. */
void *lark_cuda_host_alloc(size_t nbytes);
void lark_cuda_host_free(void *ptr);
bool lark_cuda_host_is_pinned(const void *ptr);
/* A contiguous CPU tensor whose storage comes from lark_cuda_host_alloc and goes back with
 * lark_cuda_host_free when the storage dies (torch.empty(..., pin_memory=True)): copies of it to a
 * GPU are DMA'd straight from it. Without CUDA or a device it is ordinary memory, and
 * lark_is_pinned says false, so the same code runs on a CPU-only machine. */
lark_tensor *lark_empty_pinned(int ndim, const int64_t *shape, lark_dtype dt);
/* Whether t's storage is page-locked host memory (false for GPU tensors and without a device). */
bool lark_is_pinned(const lark_tensor *t);
/* t (retained) when it is pinned already, else a contiguous copy of the CPU tensor t made by
 * lark_empty_pinned (ordinary memory without a device: no error). A GPU tensor: LARK_ERR_DEVICE. */
lark_tensor *lark_pin_memory(const lark_tensor *t);

/* ---- optimizer updates (core/ops/optim.c) --------------------------------------------------- */

/* Fused in-place updates of a list of n parameters: one call per step and parameter group, the
 * loop over tensors in C, OpenMP over the elements of big tensors. Every parameter, grad and state
 * tensor is a contiguous float32 or float64 tensor (a non-contiguous grad is read through a
 * copy), on the CPU or on a GPU whose backend has the update (its state is then made there too);
 * a parameter's grad and state have its shape and dtype, and different parameters may
 * differ. Errors name a parameter by names[i] when the args give names, else by its 0-based
 * index; a device without the kernel gives "<op>: not implemented for cuda:N". Either every
 * parameter is updated or, on an error, none (short of a failing device). Each function has a
 * _reference twin: the plain double-precision loop, single-threaded, CPU tensors only, kept as what
 * the fast kernels are tested against. */

typedef struct {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;             /* needs momentum > 0 and dampening == 0 */
  bool maximize;             /* ascend: the gradient's sign is flipped */
  const char *const *names;  /* n parameter names for error messages, or NULL */
} lark_sgd_args;

/* PyTorch's SGD: d = g + wd * p; with momentum != 0, buf = momentum * buf + (1 - dampening) * d
 * (buf = d on its first step) and d = nesterov ? d + momentum * buf : buf; then p -= lr * d.
 * momentum_buffers (n entries, may be NULL when momentum == 0): a NULL entry is a parameter's
 * first step; a new buffer is made and stored there, a reference the caller then owns. */
int lark_sgd_step_(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **momentum_buffers,
                   const lark_sgd_args *args);
int lark_sgd_step_reference_(int n, lark_tensor *const *params, lark_tensor *const *grads,
                             lark_tensor **momentum_buffers, const lark_sgd_args *args);

typedef struct {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad;
  bool maximize;
  const char *const *names;  /* n parameter names for error messages, or NULL */
} lark_adamw_args;

/* PyTorch's AdamW (decoupled weight decay): p *= 1 - lr * wd; m = beta1 m + (1 - beta1) g;
 * v = beta2 v + (1 - beta2) g^2; (amsgrad: vmax = max(vmax, v), used for v below);
 * p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), t = steps[i] (this update's
 * 1-based count for parameter i). exp_avg, exp_avg_sq and (amsgrad only) max_exp_avg_sq hold n
 * entries; NULL entries get new zero tensors, references the caller then owns. */
int lark_adamw_step_(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **exp_avg,
                     lark_tensor **exp_avg_sq, lark_tensor **max_exp_avg_sq, const int64_t *steps,
                     const lark_adamw_args *args);
int lark_adamw_step_reference_(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **exp_avg,
                               lark_tensor **exp_avg_sq, lark_tensor **max_exp_avg_sq, const int64_t *steps,
                               const lark_adamw_args *args);

/* dst[i] = lerp(dst[i], src[i], weight) = dst + weight * (src - dst) (torch.lerp's formula) for
 * float tensors, dst[i] = src[i] for integer and bool ones: an EMA update with weight = 1 - decay.
 * Same shapes and dtypes pairwise; names (n, or NULL) for error messages. */
int lark_lerp_list_(int n, lark_tensor *const *dst, lark_tensor *const *src, double weight, const char *const *names);
int lark_lerp_list_reference_(int n, lark_tensor *const *dst, lark_tensor *const *src, double weight,
                              const char *const *names);

/* The p-norm of all elements of n float tensors taken together (p > 0, or INFINITY for the max
 * absolute value), accumulated in double; NaN if any element is NaN. */
int lark_total_norm(int n, lark_tensor *const *ts, double p, double *out);
/* torch.nn.utils.clip_grad_norm_: total = lark_total_norm(grads, p); when max_norm / (total + 1e-6)
 * is below 1, every grad is scaled by it in place. *total_norm (may be NULL) gets the norm. */
int lark_clip_grad_norm_(int n, lark_tensor *const *grads, double max_norm, double p, double *total_norm);

#ifdef __cplusplus
}
#endif

/* ---- op families with headers of their own ---------------------------------------------------- */
/* Each keeps its contracts beside its kernels' file; including lark.h gives them all.
 *   core/ops/conv.h    conv2d (dense, grouped, depth-wise routed to dwconv), pooling, pad
 *   core/ops/dwconv.h  the depth-wise kernels: forward, input and weight gradients, SLaK's sums
 *   core/ops/nn.h      batch and layer norm, softmax, losses, activations, dropout */
#include "ops/conv.h"
#include "ops/dwconv.h"
#include "ops/nn.h"

#endif /* LARK_H */

/* ---- data readers (core/io/...) ------------------------------------------------------------- */
/* File readers (core/io/idx.c, core/io/digits_csv.c), batch transforms (core/io/transform.c) and the
 * prefetching batch loader (core/io/loader.c) behind lark.data. Kept apart from the rest of this
 * header, with its own guard. */
#ifndef LARK_DATA_API_H
#define LARK_DATA_API_H
#ifdef __cplusplus
extern "C" {
#endif

/* An IDX file (MNIST, Fashion-MNIST), plain or gzip: a uint8 tensor of the file's shape, its first
 * dim cut to max_records when 0 <= max_records < that dim (max_records < 0: everything). Errors name
 * the file and the fault: missing, bad magic, unsupported dtype byte, truncated header or data,
 * trailing garbage (checked when the whole file is read), corrupt gzip stream. */
lark_tensor *lark_read_idx(const char *path, int64_t max_records);

/* sklearn's digits.csv(.gz): lines of 64 pixels (0..16) and a label (0..9). *images: float32
 * (N, 8, 8) divided by 16; *labels: int64 (N), label + label_base. Malformed lines are errors naming
 * the line. Returns 0 or an error (both outputs NULL then). */
int lark_read_digits_csv(const char *path, int64_t label_base, lark_tensor **images, lark_tensor **labels);

/* Scalar draws on random.c's Philox scheme (one counter per draw; offset advances by 1): uniform in
 * [0, 1), an integer in [0, range), a standard normal, Beta(a, b). */
double lark_gen_uniform(lark_generator *g);
int64_t lark_gen_randint(lark_generator *g, int64_t range);
double lark_gen_normal(lark_generator *g);
double lark_gen_beta(lark_generator *g, double a, double b);

/* The seed of stream `stream` of epoch `epoch` under a loader seed (stream 0: the epoch's order;
 * stream b + 1: batch b's transforms). */
#define LARK_DATA_STREAM_ORDER 0
uint64_t lark_data_stream_seed(uint64_t seed, uint64_t epoch, uint64_t stream);
/* out (n) = a permutation of 0..n-1 by Fisher-Yates, seeded from (seed, epoch). */
int lark_data_permutation(int64_t n, uint64_t seed, uint64_t epoch, int64_t *out);

#define LARK_DATA_MAX_CHANNELS 64

/* Batch transforms, applied in this order: conversion to float32 times `scale`, random crop after
 * zero padding, horizontal flip, normalisation, then mixup or cutmix. Zero fields switch a step off
 * (lark_transform_opts_init: scale 1, nothing else). */
typedef struct {
  double scale;      /* multiplies the input as it becomes float32 (1/255 for uint8 images) */
  int nnorm;         /* 0: no normalisation; 1: one mean/std for every channel; C: one per channel */
  double mean[LARK_DATA_MAX_CHANNELS], std[LARK_DATA_MAX_CHANNELS];
  int64_t crop_size;    /* > 0: a random crop_size x crop_size window (0 with padding: the image's size) ... */
  int64_t crop_padding; /* ... of the image padded with crop_padding zeros on each side */
  double hflip;         /* probability of mirroring each sample left-right */
  double mixup_alpha;   /* > 0: mixup with lam ~ Beta(alpha, alpha) */
  double cutmix_alpha;  /* > 0: cutmix (both on: one of the two per batch, even odds) */
  int64_t num_classes;  /* width of the soft targets mixing makes */
  int64_t label_base;   /* the label value of the first class (the Lua binding passes 1) */
} lark_transform_opts;

/* What one batch drew (for tests and for replaying a batch); arrays of n or NULL, filled when given. */
typedef struct {
  int64_t *dy, *dx; /* crop origins in the padded image */
  uint8_t *flip;    /* 1: mirrored */
  int64_t *perm;    /* each sample's partner in the mix (0-based) */
  int mix;          /* 0: none, 1: mixup, 2: cutmix */
  double lam;       /* the weight of the sample itself (cutmix: 1 - box area / image area) */
  int64_t box[4];   /* cutmix: rows box[0]..box[2]-1, columns box[1]..box[3]-1 from the partner */
} lark_transform_draws;

void lark_transform_opts_init(lark_transform_opts *o);
/* x (B, ...) uint8/float32/float64 on the CPU -> *x_out float32; *y_out: labels retained, or soft
 * targets (B, num_classes) float32 when mixing (labels then int64 (B)); y_out may be NULL. gen NULL:
 * the default generator. draws may be NULL. */
int lark_transform_batch(const lark_tensor *x, const lark_tensor *labels, const lark_transform_opts *o,
                         lark_generator *gen, lark_tensor **x_out, lark_tensor **y_out, lark_transform_draws *draws);

typedef struct lark_loader lark_loader;
typedef struct {
  int64_t batch_size;
  bool shuffle;      /* a new permutation each epoch, from (seed, epoch) */
  bool drop_last;    /* drop the last batch when it is short */
  uint64_t seed;
  int prefetch;      /* batches a background thread makes ahead; 0: made in lark_loader_next */
  bool pin_memory;   /* each batch's x and y in pinned host memory (lark_empty_pinned), ready for a GPU */
  lark_transform_opts transform;
} lark_loader_opts;

void lark_loader_opts_init(lark_loader_opts *o); /* batch 1, prefetch 2, no shuffle, no transforms */
/* images (N, ...) uint8/float32/float64 and labels (N, ...) (or NULL) on the CPU, retained; rows: the
 * nrows samples served (0-based rows of images, a subset), or NULL for all. */
lark_loader *lark_loader_new(const lark_tensor *images, const lark_tensor *labels, const int64_t *rows, int64_t nrows,
                             const lark_loader_opts *o);
int64_t lark_loader_num_batches(const lark_loader *ld);
int64_t lark_loader_num_samples(const lark_loader *ld);
/* Begins an epoch (any epoch number; stops the previous one's worker and drops its batches). */
int lark_loader_start(lark_loader *ld, uint64_t epoch);
/* The next batch: returns 1 with *x (float32) and *y (labels, soft targets or NULL) owned by the
 * caller, 0 at the end of the epoch, or an error. Batch b is a pure function of (seed, epoch, b). */
int lark_loader_next(lark_loader *ld, lark_tensor **x, lark_tensor **y);
/* Ends the epoch now (stops the worker). */
void lark_loader_stop(lark_loader *ld);
void lark_loader_free(lark_loader *ld);

#ifdef __cplusplus
}
#endif
#endif /* LARK_DATA_API_H */

/* ---- HDF5 (core/io/h5.c) -------------------------------------------------------------------- */
/* Files of tensors and attributes in HDF5, the layout of shared/reference/CHECKPOINTS.md: behind
 * lark.h5 and lark.save / lark.load. Names are paths ("model_state_dict/stem.0.conv.weight": only
 * '/' separates; dots are plain characters). Errors name the op, the file and the problem (missing
 * file, not an HDF5 file, truncated, missing dataset with the names that are there, unsupported
 * dtype); HDF5's own stderr dump is switched off. One handle is used by one thread at a time. */
#ifndef LARK_H5_API_H
#define LARK_H5_API_H
#ifdef __cplusplus
extern "C" {
#endif

typedef struct lark_h5 lark_h5;
typedef enum { LARK_H5_READ, LARK_H5_WRITE, LARK_H5_APPEND } lark_h5_mode; /* "r", "w" (truncate), "a" (create or update) */

typedef struct {
  bool atomic;  /* WRITE: write <path>.tmp.<pid>.<n>; lark_h5_close commits it (flush, fsync, rename, fsync
                   the directory), lark_h5_abort deletes it. Stale temporaries of dead processes go. */
  bool locking; /* false: no HDF5 file locks (filesystems where flock fails) */
} lark_h5_open_opts;
void lark_h5_open_opts_init(lark_h5_open_opts *o); /* not atomic, locking on */

/* NULL and an error on failure. opts NULL: the defaults. */
lark_h5 *lark_h5_open(const char *path, lark_h5_mode mode, const lark_h5_open_opts *opts);
/* Closes (and, atomic, commits) and frees f, even on error; a handle left open inside is an error. */
int lark_h5_close(lark_h5 *f);
/* Atomic: discards the temporary (the previous file stays); otherwise lark_h5_close. Frees f. */
int lark_h5_abort(lark_h5 *f);
const char *lark_h5_path(const lark_h5 *f);
lark_h5_mode lark_h5_get_mode(const lark_h5 *f);
bool lark_h5_is_atomic(const lark_h5 *f);

typedef struct {
  int compress; /* < 0: bool tensors only (the default), 0: never, > 0: always. Compressed = chunked
                   (chunks near 1 MiB) + shuffle + deflate(level) + fletcher32 */
  int level;    /* deflate level 0..9 (4) */
} lark_h5_write_opts;
void lark_h5_write_opts_init(lark_h5_write_opts *o);

/* Writes t (any device and layout; 0-d and empty too) as dataset `name`, creating the missing
 * parent groups (creation order tracked) and replacing a dataset of that name. */
int lark_h5_write(lark_h5 *f, const char *name, const lark_tensor *t, const lark_h5_write_opts *opts);
/* Dataset `name` as a new CPU tensor: float32 (also from float16/bfloat16), float64, int64 (from any
 * signed or narrower unsigned integer), uint8, bool (h5py's enum); NULL and an error otherwise. */
lark_tensor *lark_h5_read(lark_h5 *f, const char *name);
/* The dtype, ndim and shape (LARK_MAX_DIMS entries) lark_h5_read would give, without reading. */
int lark_h5_dataset_info(lark_h5 *f, const char *name, lark_dtype *dt, int *ndim, int64_t *shape);

typedef enum { LARK_H5_NONE = 0, LARK_H5_GROUP = 1, LARK_H5_DATASET = 2, LARK_H5_OTHER = 3 } lark_h5_kind;
/* What `name` is (LARK_H5_NONE when absent, any missing parent included), or an error. */
int lark_h5_kind_of(lark_h5 *f, const char *name);
/* Makes group `name` and its missing parents. */
int lark_h5_create_group(lark_h5 *f, const char *name);
/* The member names of a group ("" or "/": the root), in creation order where the group tracks it,
 * else alphabetical. *names: an array of *n strings, freed with lark_h5_free_names. */
int lark_h5_keys(lark_h5 *f, const char *group, char ***names, int64_t *n);
void lark_h5_free_names(char **names, int64_t n);

/* Attributes on an object ("" or "/": the root). Written as scalars: strings as variable-length
 * UTF-8, integers as int64, numbers as float64, booleans as h5py's bool. */
typedef enum { LARK_H5_ATTR_STRING, LARK_H5_ATTR_INT, LARK_H5_ATTR_FLOAT, LARK_H5_ATTR_BOOL } lark_h5_attr_type;
typedef struct {
  lark_h5_attr_type type;
  bool is_array; /* a simple dataspace (numbers only); false: a scalar */
  int64_t n;     /* values in i or d (1 for scalars and strings) */
  char *s;       /* STRING */
  int64_t *i;    /* INT, BOOL (0/1) */
  double *d;     /* FLOAT */
} lark_h5_attr;
int lark_h5_set_attr_string(lark_h5 *f, const char *object, const char *name, const char *value);
int lark_h5_set_attr_int(lark_h5 *f, const char *object, const char *name, int64_t value);
int lark_h5_set_attr_float(lark_h5 *f, const char *object, const char *name, double value);
int lark_h5_set_attr_bool(lark_h5 *f, const char *object, const char *name, bool value);
/* 1 with *out filled (free with lark_h5_attr_free), 0 when the object has no such attribute, or an
 * error (missing object, unsupported type: string arrays, compounds, ...). */
int lark_h5_get_attr(lark_h5 *f, const char *object, const char *name, lark_h5_attr *out);
void lark_h5_attr_free(lark_h5_attr *a);
/* Attribute names of an object, in creation order where tracked; free with lark_h5_free_names. */
int lark_h5_attr_names(lark_h5 *f, const char *object, char ***names, int64_t *n);

#ifdef __cplusplus
}
#endif
#endif /* LARK_H5_API_H */
