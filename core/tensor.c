/* tensor.c: storage, tensor lifetime, views and copies.
 *
 * Views share a storage and never copy; the storage is freed when the last tensor viewing it is
 * released. Sizes are int64 and every size computation is checked for overflow, because a Lua user
 * can ask for lark.zeros(2^40, 2^40). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops/grad.h"
#include "backend.h"

static int64_t bytes_live[LARK_NDEVICE_KINDS];
static lark_alloc_hook alloc_hook;
static void *alloc_hook_ud;

int64_t lark_bytes_allocated(lark_device_kind kind) {
  return (unsigned)kind < LARK_NDEVICE_KINDS ? __atomic_load_n(&bytes_live[kind], __ATOMIC_RELAXED) : 0;
}

void lark_set_alloc_hook(lark_alloc_hook hook, void *ud) {
  alloc_hook = hook;
  alloc_hook_ud = ud;
}

const char *lark_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < ndim && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

/* ---- storage -------------------------------------------------------------------------------- */

/* pinned: page-locked host memory from lark_cuda_host_alloc (dev is the CPU), always allocated,
 * even for 0 bytes, so that it can be asked whether it is pinned; storage_release returns it. */
static lark_storage *storage_new(size_t nbytes, lark_device dev, bool pinned) {
  lark_clear_error(); /* so that a failed backend start below leaves its own reason */
  const lark_backend *be = lark_backend_for(dev);
  if (!be) {
    char d[32], why[512];
    /* keep the backend's own reason (e.g. the CUDA driver's message) when it gave one */
    snprintf(why, sizeof why, "%s", lark_error_code() ? lark_error() : "lark was built without CUDA");
    lark_set_error(LARK_ERR_DEVICE, "empty: device %s is not available (%s)", lark_device_str(dev, d, sizeof d), why);
    return NULL;
  }
  lark_storage *s = calloc(1, sizeof *s);
  if (!s) {
    lark_set_error(LARK_ERR_NOMEM, "empty: out of memory");
    return NULL;
  }
  if (pinned) {
    if (!(s->data = lark_cuda_host_alloc(nbytes))) {
      free(s);
      return NULL;
    }
    s->host_alloc = true;
  } else if (nbytes && be->malloc(dev, nbytes, &s->data)) {
    free(s);
    return NULL;
  }
  s->nbytes = nbytes;
  s->device = dev;
  s->refcount = 1;
  __atomic_add_fetch(&bytes_live[dev.kind], (int64_t)nbytes, __ATOMIC_RELAXED);
  if (alloc_hook && nbytes) alloc_hook(nbytes, alloc_hook_ud);
  return s;
}

static void storage_release(lark_storage *s) {
  if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  if (!s->borrowed && s->data) {
    if (s->host_alloc) lark_cuda_host_free(s->data);
    else lark_backend_for(s->device)->free(s->device, s->data);
    __atomic_sub_fetch(&bytes_live[s->device.kind], (int64_t)s->nbytes, __ATOMIC_RELAXED);
  }
  free(s);
}

/* ---- tensors -------------------------------------------------------------------------------- */

lark_tensor *lark_tensor_retain(lark_tensor *t) {
  if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
  return t;
}

void lark_tensor_release(lark_tensor *t) {
  if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
  storage_release(t->storage);
  lark_tensor_release(t->grad);
  lark_node_release(t->grad_fn);
  free(t);
}

void lark_tensor_free_storage(lark_tensor *t) {
  storage_release(t->storage);
  t->storage = NULL;
  t->ndim = 1;
  t->shape[0] = 0;
  t->stride[0] = 1;
  t->offset = 0;
}

int64_t lark_numel(const lark_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

bool lark_is_contiguous(const lark_tensor *t) {
  int64_t expect = 1;
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] == 0) return true; /* no element: any strides will do */
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] == 1) continue;
    if (t->stride[i] != expect) return false;
    expect *= t->shape[i];
  }
  return true;
}

lark_device lark_tensor_device(const lark_tensor *t) { return t->storage ? t->storage->device : LARK_DEVICE_CPU; }

void *lark_data_ptr(const lark_tensor *t) {
  if (!t->storage || !t->storage->data) return NULL;
  return (char *)t->storage->data + t->offset * (int64_t)lark_dtype_size(t->dtype);
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    stride[i] = s;
    s *= shape[i] > 0 ? shape[i] : 1;
  }
}

/* numel of a shape, or -1 with an error if a size is negative or the product overflows. */
static int64_t checked_numel(const char *op, int ndim, const int64_t *shape, size_t elsize) {
  if (ndim < 0 || ndim > LARK_MAX_DIMS) {
    lark_set_error(LARK_ERR_SHAPE, "%s: %d dims requested, lark supports at most %d", op, ndim, LARK_MAX_DIMS);
    return -1;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      lark_set_error(LARK_ERR_SHAPE, "%s: size %lld of dim %d is negative (expected a size >= 0)", op,
                     (long long)shape[i], i + 1);
      return -1;
    }
    if (shape[i] && n > INT64_MAX / shape[i] / (int64_t)elsize) {
      char buf[256];
      lark_set_error(LARK_ERR_NOMEM, "%s: a tensor of shape %s is too large to allocate", op,
                     lark_shape_str(ndim, shape, buf, sizeof buf));
      return -1;
    }
    n *= shape[i];
  }
  return n;
}

static lark_tensor *tensor_alloc_header(void) {
  lark_tensor *t = calloc(1, sizeof *t);
  if (!t) lark_set_error(LARK_ERR_NOMEM, "tensor: out of memory");
  else t->refcount = 1;
  return t;
}

static lark_tensor *empty_on(const char *op, int ndim, const int64_t *shape, lark_dtype dt, lark_device dev,
                             bool pinned) {
  if ((unsigned)dt >= LARK_NDTYPES) {
    lark_set_error(LARK_ERR_DTYPE, "%s: unknown dtype %d", op, (int)dt);
    return NULL;
  }
  int64_t n = checked_numel(op, ndim, shape, lark_dtype_size(dt));
  if (n < 0) return NULL;
  lark_tensor *t = tensor_alloc_header();
  if (!t) return NULL;
  t->storage = storage_new((size_t)n * lark_dtype_size(dt), dev, pinned);
  if (!t->storage) {
    free(t);
    return NULL;
  }
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
  contiguous_strides(ndim, shape, t->stride);
  return t;
}

lark_tensor *lark_empty(int ndim, const int64_t *shape, lark_dtype dt, const lark_device *device) {
  return empty_on("empty", ndim, shape, dt, device ? *device : LARK_DEVICE_CPU, false);
}

/* Pinned host tensors count as CPU bytes, as PyTorch counts them. */
lark_tensor *lark_empty_pinned(int ndim, const int64_t *shape, lark_dtype dt) {
  return empty_on("empty_pinned", ndim, shape, dt, LARK_DEVICE_CPU, true);
}

bool lark_is_pinned(const lark_tensor *t) {
  /* only ask about pointers lark_cuda_host_alloc made: it reads a header in front of them */
  return t->storage && t->storage->host_alloc && lark_cuda_host_is_pinned(t->storage->data);
}

lark_tensor *lark_from_blob(void *data, int ndim, const int64_t *shape, lark_dtype dt) {
  int64_t n = checked_numel("from_blob", ndim, shape, lark_dtype_size(dt));
  if (n < 0) return NULL;
  lark_tensor *t = tensor_alloc_header();
  lark_storage *s = calloc(1, sizeof *s);
  if (!t || !s) {
    free(t);
    free(s);
    lark_set_error(LARK_ERR_NOMEM, "from_blob: out of memory");
    return NULL;
  }
  s->data = data;
  s->nbytes = (size_t)n * lark_dtype_size(dt);
  s->device = LARK_DEVICE_CPU;
  s->refcount = 1;
  s->borrowed = true;
  t->storage = s;
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
  contiguous_strides(ndim, shape, t->stride);
  return t;
}

/* A new header sharing t's storage, with the geometry given. */
static lark_tensor *make_view(const lark_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                              int64_t offset) {
  lark_tensor *v = tensor_alloc_header();
  if (!v) return NULL;
  v->storage = t->storage;
  if (v->storage) __atomic_add_fetch(&v->storage->refcount, 1, __ATOMIC_RELAXED);
  v->dtype = t->dtype;
  v->ndim = ndim;
  v->offset = offset;
  if (ndim) {
    memcpy(v->shape, shape, sizeof(int64_t) * (size_t)ndim);
    memcpy(v->stride, stride, sizeof(int64_t) * (size_t)ndim);
  }
  return v;
}

/* Records a view's gradient (autograd.h) and hands the view back. */
static lark_tensor *rec(lark_view_kind kind, lark_tensor *v, const lark_tensor *t, int nargs, const int64_t *args) {
  if (v && t->requires_grad) lark_record_view(kind, v, t, nargs, args);
  return v;
}

lark_tensor *lark_as_strided(const lark_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                             int64_t offset) {
  if (checked_numel("as_strided", ndim, shape, lark_dtype_size(t->dtype)) < 0) return NULL;
  /* the highest and lowest element touched must lie inside the storage */
  int64_t lo = offset, hi = offset, cap = t->storage ? (int64_t)(t->storage->nbytes / lark_dtype_size(t->dtype)) : 0;
  bool empty = false;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == 0) empty = true;
    int64_t span = (shape[i] - 1) * stride[i];
    if (span > 0) hi += span;
    else lo += span;
  }
  if (!empty && (offset < 0 || lo < 0 || hi >= cap)) {
    lark_set_error(LARK_ERR_ARG, "as_strided: the view reaches elements %lld..%lld outside its storage of %lld elements",
                   (long long)lo, (long long)hi, (long long)cap);
    return NULL;
  }
  return make_view(t, ndim, shape, stride, offset);
}

int lark_wrap_dim(const char *op, int dim, int ndim) {
  int n = ndim > 0 ? ndim : 1; /* a 0-d tensor takes dim 0 or -1, as in PyTorch */
  if (dim < -n || dim >= n)
    return lark_set_error(LARK_ERR_INDEX, "%s: dim %d out of range for a tensor of %d dims", op,
                          dim >= 0 ? dim + 1 : dim, ndim);
  return dim < 0 ? dim + n : dim;
}

/* ---- views ---------------------------------------------------------------------------------- */

/* Fills out_stride for viewing t (shape, stride) as `shape`, or returns false if no view exists.
 * Works chunk by chunk: each run of t's dims that is contiguous in memory may be reshaped freely. */
static bool view_strides(const lark_tensor *t, int ndim, const int64_t *shape, int64_t *out_stride) {
  if (t->ndim == 0 || lark_numel(t) == 0) {
    contiguous_strides(ndim, shape, out_stride);
    return true;
  }
  int vd = ndim - 1;
  int64_t base = t->stride[t->ndim - 1]; /* stride of the innermost dim of the current chunk */
  int64_t tensor_numel = 1, view_numel = 1;
  for (int td = t->ndim - 1; td >= 0; td--) {
    tensor_numel *= t->shape[td];
    bool chunk_ends = td == 0 || (t->shape[td - 1] != 1 && t->stride[td - 1] != tensor_numel * base);
    if (!chunk_ends) continue;
    while (vd >= 0 && (view_numel < tensor_numel || shape[vd] == 1)) {
      out_stride[vd] = view_numel * base;
      view_numel *= shape[vd];
      vd--;
    }
    if (view_numel != tensor_numel) return false;
    if (td > 0) {
      base = t->stride[td - 1];
      tensor_numel = view_numel = 1;
    }
  }
  return vd == -1;
}

static int infer_shape(const char *op, const lark_tensor *t, int ndim, const int64_t *in, int64_t *out) {
  if (ndim < 0 || ndim > LARK_MAX_DIMS)
    return lark_set_error(LARK_ERR_SHAPE, "%s: %d dims requested, lark supports at most %d", op, ndim, LARK_MAX_DIMS);
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < ndim; i++) {
    if (in[i] == -1) {
      if (infer >= 0) return lark_set_error(LARK_ERR_SHAPE, "%s: only one size may be -1", op);
      infer = i;
    } else if (in[i] < 0) {
      return lark_set_error(LARK_ERR_SHAPE, "%s: size %lld of dim %d is negative", op, (long long)in[i], i + 1);
    } else {
      if (in[i] && known > INT64_MAX / in[i]) return lark_set_error(LARK_ERR_SHAPE, "%s: shape too large", op);
      known *= in[i];
    }
    out[i] = in[i];
  }
  int64_t n = lark_numel(t);
  char a[256], b[256];
  if (infer >= 0) {
    if (known == 0 || n % known)
      return lark_set_error(LARK_ERR_SHAPE, "%s: shape %s is invalid for a tensor of %lld elements", op,
                            lark_shape_str(ndim, in, a, sizeof a), (long long)n);
    out[infer] = n / known;
  } else if (known != n) {
    return lark_set_error(LARK_ERR_SHAPE, "%s: cannot view a tensor of shape %s (%lld elements) as %s", op,
                          lark_shape_str(t->ndim, t->shape, a, sizeof a), (long long)n,
                          lark_shape_str(ndim, in, b, sizeof b));
  }
  return 0;
}

lark_tensor *lark_view(const lark_tensor *t, int ndim, const int64_t *shape_in) {
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  if (infer_shape("view", t, ndim, shape_in, shape)) return NULL;
  if (!view_strides(t, ndim, shape, stride)) {
    char a[256], b[256];
    lark_set_error(LARK_ERR_SHAPE,
                   "view: a tensor of shape %s with these strides cannot be viewed as %s without a copy "
                   "(use reshape, or contiguous() first)",
                   lark_shape_str(t->ndim, t->shape, a, sizeof a), lark_shape_str(ndim, shape, b, sizeof b));
    return NULL;
  }
  return rec(LARK_VIEW_RESHAPE, make_view(t, ndim, shape, stride, t->offset), t, 0, NULL);
}

lark_tensor *lark_reshape(const lark_tensor *t, int ndim, const int64_t *shape_in) {
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  if (infer_shape("reshape", t, ndim, shape_in, shape)) return NULL;
  if (view_strides(t, ndim, shape, stride))
    return rec(LARK_VIEW_RESHAPE, make_view(t, ndim, shape, stride, t->offset), t, 0, NULL);
  lark_tensor *c = lark_contiguous(t);
  if (!c) return NULL;
  lark_tensor *v = lark_view(c, ndim, shape);
  lark_tensor_release(c);
  return v;
}

lark_tensor *lark_narrow(const lark_tensor *t, int dim, int64_t start, int64_t length) {
  if (t->ndim == 0) {
    lark_set_error(LARK_ERR_SHAPE, "narrow: cannot narrow a 0-d tensor");
    return NULL;
  }
  if ((dim = lark_wrap_dim("narrow", dim, t->ndim)) < 0) return NULL;
  if (start < 0 || length < 0 || start > t->shape[dim] || length > t->shape[dim] - start) {
    lark_set_error(LARK_ERR_INDEX, "narrow: range of %lld elements from index %lld is out of bounds for dim %d of size %lld",
                   (long long)length, (long long)start + 1, dim + 1, (long long)t->shape[dim]);
    return NULL;
  }
  lark_tensor *v = make_view(t, t->ndim, t->shape, t->stride, t->offset + start * t->stride[dim]);
  if (v) v->shape[dim] = length;
  return rec(LARK_VIEW_NARROW, v, t, 3, (int64_t[]){dim, start, length});
}

lark_tensor *lark_select(const lark_tensor *t, int dim, int64_t index) {
  if (t->ndim == 0) {
    lark_set_error(LARK_ERR_SHAPE, "select: cannot index a 0-d tensor");
    return NULL;
  }
  if ((dim = lark_wrap_dim("select", dim, t->ndim)) < 0) return NULL;
  if (index < 0) index += t->shape[dim];
  if (index < 0 || index >= t->shape[dim]) {
    lark_set_error(LARK_ERR_INDEX, "select: index %lld is out of range for dim %d of size %lld",
                   (long long)(index < 0 ? index - t->shape[dim] : index + 1), dim + 1, (long long)t->shape[dim]);
    return NULL;
  }
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  int k = 0;
  for (int i = 0; i < t->ndim; i++)
    if (i != dim) {
      shape[k] = t->shape[i];
      stride[k++] = t->stride[i];
    }
  return rec(LARK_VIEW_SELECT, make_view(t, k, shape, stride, t->offset + index * t->stride[dim]), t, 2,
             (int64_t[]){dim, index});
}

lark_tensor *lark_slice(const lark_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
  if (t->ndim == 0) {
    lark_set_error(LARK_ERR_SHAPE, "slice: cannot slice a 0-d tensor");
    return NULL;
  }
  if ((dim = lark_wrap_dim("slice", dim, t->ndim)) < 0) return NULL;
  if (step <= 0) {
    lark_set_error(LARK_ERR_ARG, "slice: step must be positive, got %lld", (long long)step);
    return NULL;
  }
  int64_t n = t->shape[dim];
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  start = start < 0 ? 0 : start > n ? n : start;
  stop = stop < start ? start : stop > n ? n : stop;
  lark_tensor *v = make_view(t, t->ndim, t->shape, t->stride, t->offset + start * t->stride[dim]);
  if (v) {
    v->shape[dim] = (stop - start + step - 1) / step;
    v->stride[dim] *= step;
  }
  return rec(LARK_VIEW_SLICE, v, t, 4, (int64_t[]){dim, start, stop, step});
}

lark_tensor *lark_transpose(const lark_tensor *t, int d0, int d1) {
  if (t->ndim == 0) return make_view(t, 0, t->shape, t->stride, t->offset);
  if ((d0 = lark_wrap_dim("transpose", d0, t->ndim)) < 0) return NULL;
  if ((d1 = lark_wrap_dim("transpose", d1, t->ndim)) < 0) return NULL;
  lark_tensor *v = make_view(t, t->ndim, t->shape, t->stride, t->offset);
  if (v) {
    v->shape[d0] = t->shape[d1];
    v->shape[d1] = t->shape[d0];
    v->stride[d0] = t->stride[d1];
    v->stride[d1] = t->stride[d0];
  }
  int64_t perm[LARK_MAX_DIMS];
  for (int i = 0; i < t->ndim; i++) perm[i] = i == d0 ? d1 : i == d1 ? d0 : i;
  return rec(LARK_VIEW_PERMUTE, v, t, t->ndim, perm);
}

lark_tensor *lark_permute(const lark_tensor *t, int ndim, const int *dims) {
  if (ndim != t->ndim) {
    lark_set_error(LARK_ERR_ARG, "permute: %d dims given for a tensor of %d dims", ndim, t->ndim);
    return NULL;
  }
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  bool seen[LARK_MAX_DIMS] = {0};
  for (int i = 0; i < ndim; i++) {
    int d = lark_wrap_dim("permute", dims[i], ndim);
    if (d < 0) return NULL;
    if (seen[d]) {
      lark_set_error(LARK_ERR_ARG, "permute: dim %d appears twice", d + 1);
      return NULL;
    }
    seen[d] = true;
    shape[i] = t->shape[d];
    stride[i] = t->stride[d];
  }
  int64_t perm[LARK_MAX_DIMS];
  for (int i = 0; i < ndim; i++) perm[i] = lark_wrap_dim("permute", dims[i], ndim);
  return rec(LARK_VIEW_PERMUTE, make_view(t, ndim, shape, stride, t->offset), t, ndim, perm);
}

lark_tensor *lark_expand(const lark_tensor *t, int ndim, const int64_t *shape_in) {
  char a[256], b[256];
  if (ndim < t->ndim || ndim > LARK_MAX_DIMS) {
    lark_set_error(LARK_ERR_SHAPE, "expand: cannot expand a tensor of shape %s to %d dims",
                   lark_shape_str(t->ndim, t->shape, a, sizeof a), ndim);
    return NULL;
  }
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  int lead = ndim - t->ndim;
  for (int i = 0; i < ndim; i++) {
    int64_t want = shape_in[i];
    if (i < lead) {
      if (want < 0) {
        lark_set_error(LARK_ERR_SHAPE, "expand: size -1 is not allowed for the new leading dim %d", i + 1);
        return NULL;
      }
      shape[i] = want;
      stride[i] = 0;
      continue;
    }
    int64_t have = t->shape[i - lead];
    if (want == -1 || want == have) {
      shape[i] = have;
      stride[i] = t->stride[i - lead];
    } else if (have == 1 && want >= 0) {
      shape[i] = want;
      stride[i] = 0;
    } else {
      lark_set_error(LARK_ERR_SHAPE, "expand: cannot expand shape %s to %s (dim %d has size %lld, not 1)",
                     lark_shape_str(t->ndim, t->shape, a, sizeof a), lark_shape_str(ndim, shape_in, b, sizeof b),
                     i + 1, (long long)have);
      return NULL;
    }
  }
  /* no memory is needed, but the element count must still fit an int64 */
  if (checked_numel("expand", ndim, shape, 1) < 0) return NULL;
  return rec(LARK_VIEW_EXPAND, make_view(t, ndim, shape, stride, t->offset), t, 0, NULL);
}

lark_tensor *lark_squeeze(const lark_tensor *t, int dim) {
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  int k = 0;
  if (dim != LARK_ALL_DIMS) {
    if ((dim = lark_wrap_dim("squeeze", dim, t->ndim)) < 0) return NULL;
    if (t->ndim == 0) return make_view(t, 0, shape, stride, t->offset);
  }
  for (int i = 0; i < t->ndim; i++) {
    bool drop = t->shape[i] == 1 && (dim == LARK_ALL_DIMS || dim == i);
    if (!drop) {
      shape[k] = t->shape[i];
      stride[k++] = t->stride[i];
    }
  }
  return rec(LARK_VIEW_RESHAPE, make_view(t, k, shape, stride, t->offset), t, 0, NULL);
}

lark_tensor *lark_unsqueeze(const lark_tensor *t, int dim) {
  if (t->ndim >= LARK_MAX_DIMS) {
    lark_set_error(LARK_ERR_SHAPE, "unsqueeze: a tensor of %d dims cannot grow (at most %d)", t->ndim, LARK_MAX_DIMS);
    return NULL;
  }
  if (dim < -(t->ndim + 1) || dim > t->ndim) {
    lark_set_error(LARK_ERR_INDEX, "unsqueeze: dim %d out of range for a tensor of %d dims (expected 1..%d)",
                   dim >= 0 ? dim + 1 : dim, t->ndim, t->ndim + 1);
    return NULL;
  }
  if (dim < 0) dim += t->ndim + 1;
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  for (int i = 0, k = 0; i <= t->ndim; i++) {
    if (i == dim) {
      shape[i] = 1;
      stride[i] = dim < t->ndim ? t->shape[dim] * t->stride[dim] : 1;
    } else {
      shape[i] = t->shape[k];
      stride[i] = t->stride[k++];
    }
  }
  return rec(LARK_VIEW_RESHAPE, make_view(t, t->ndim + 1, shape, stride, t->offset), t, 0, NULL);
}

/* ---- copies --------------------------------------------------------------------------------- */

int64_t lark_offset_of(const lark_tensor *t, int64_t linear) {
  int64_t off = t->offset;
  for (int i = t->ndim - 1; i >= 0; i--) {
    int64_t n = t->shape[i];
    off += (linear % n) * t->stride[i];
    linear /= n;
  }
  return off;
}

bool lark_same_view(const lark_tensor *a, const lark_tensor *b) {
  if (a->storage != b->storage || a->offset != b->offset || a->ndim != b->ndim || a->dtype != b->dtype) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->stride[i] != b->stride[i])) return false;
  return true;
}

void lark_bump_version(lark_tensor *t) {
  if (t->storage) __atomic_add_fetch(&t->storage->version, 1, __ATOMIC_RELAXED);
}

lark_tensor *lark_expand_to(const char *op, const lark_tensor *t, int ndim, const int64_t *shape) {
  if (t->ndim == ndim && memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) == 0)
    return lark_tensor_retain((lark_tensor *)t);
  lark_tensor *v = lark_expand(t, ndim, shape);
  if (!v) {
    char a[256], b[256];
    lark_set_error(LARK_ERR_SHAPE, "%s: shape %s cannot be broadcast to %s", op,
                   lark_shape_str(t->ndim, t->shape, a, sizeof a), lark_shape_str(ndim, shape, b, sizeof b));
  }
  return v;
}

int lark_check_same_device(const char *op, int n, const lark_tensor *const *ts, const char *const *names) {
  for (int i = 1; i < n; i++) {
    if (!lark_device_eq(lark_tensor_device(ts[0]), lark_tensor_device(ts[i]))) {
      char a[32], b[32];
      return lark_set_error(LARK_ERR_DEVICE, "%s: %s is on %s but %s is on %s (move one with :to())", op, names[0],
                            lark_device_str(lark_tensor_device(ts[0]), a, sizeof a), names[i],
                            lark_device_str(lark_tensor_device(ts[i]), b, sizeof b));
    }
  }
  return 0;
}

int lark_check_alive(const char *op, const lark_tensor *t, const char *name) {
  if (!t->storage) return lark_set_error(LARK_ERR_ARG, "%s: %s was freed", op, name);
  return 0;
}

int lark_check_writable(const char *op, const lark_tensor *t, const char *name) {
  for (int d = 0; d < t->ndim; d++)
    if (t->stride[d] == 0 && t->shape[d] > 1)
      return lark_set_error(LARK_ERR_ARG,
                            "%s: %s is an expanded view whose elements share memory (dim %d has stride 0); "
                            "clone() it before writing into it",
                            op, name, d + 1);
  return 0;
}

int lark_copy_(lark_tensor *dst, const lark_tensor *src) {
  if (lark_check_alive("copy_", dst, "the destination") || lark_check_alive("copy_", src, "the source") ||
      lark_check_writable("copy_", dst, "the destination"))
    return lark_error_code();
  lark_tensor *s = lark_expand_to("copy", src, dst->ndim, dst->shape);
  if (!s) return lark_error_code();
  if (s->storage == dst->storage && !lark_same_view(s, dst) && lark_numel(dst) > 0) {
    /* overlapping source and destination (shifting a tensor along itself): copy via a private
     * buffer, as the kernel reads and writes in no particular order */
    lark_tensor *c = lark_clone(s);
    lark_tensor_release(s);
    if (!c) return lark_error_code();
    s = c;
  }
  int rc = 0;
  lark_device dd = lark_tensor_device(dst), sd = lark_tensor_device(src);
  if (lark_numel(dst) == 0) {
    /* nothing to move */
  } else if (lark_device_eq(dd, sd)) {
    const lark_backend *be = lark_backend_for(dd);
    rc = be->copy ? be->copy(dst, s) : lark_backend_missing("copy", dd);
  } else {
    /* Across devices: make a contiguous buffer of dst's dtype on the source device, move its bytes,
     * then copy into dst's (possibly strided) layout on the destination device. A source or
     * destination that is such a buffer already serves as its own: no staging copy, and a pinned
     * batch is DMA'd straight from its page-locked pages (a staging buffer would be pageable). */
    bool s_direct = s->dtype == dst->dtype && lark_is_contiguous(s), d_direct = lark_is_contiguous(dst);
    lark_tensor *sc = s_direct ? lark_tensor_retain(s) : lark_empty(dst->ndim, dst->shape, dst->dtype, &sd);
    lark_tensor *dc = !sc      ? NULL
                      : d_direct ? lark_tensor_retain(dst)
                                 : lark_empty(dst->ndim, dst->shape, dst->dtype, &dd);
    rc = dc ? 0 : lark_error_code();
    if (!rc && !s_direct) rc = lark_copy_(sc, s);
    if (!rc) {
      size_t nbytes = (size_t)lark_numel(dst) * lark_dtype_size(dst->dtype);
      if (dd.kind == LARK_CPU) {
        const lark_backend *be = lark_backend_for(sd);
        rc = be->memcpy_host(sd, lark_data_ptr(dc), lark_data_ptr(sc), nbytes, 0);
      } else if (sd.kind == LARK_CPU) {
        const lark_backend *be = lark_backend_for(dd);
        rc = be->memcpy_host(dd, lark_data_ptr(dc), lark_data_ptr(sc), nbytes, 1);
      } else {
        rc = lark_set_error(LARK_ERR_UNIMPL, "copy: direct copies between two GPUs are not implemented");
      }
    }
    if (!rc && !d_direct) rc = lark_copy_(dst, dc);
    lark_tensor_release(sc);
    lark_tensor_release(dc);
  }
  lark_tensor_release(s);
  if (!rc) lark_bump_version(dst);
  return rc;
}

lark_tensor *lark_contiguous(const lark_tensor *t) {
  if (lark_is_contiguous(t)) return lark_tensor_retain((lark_tensor *)t);
  return lark_clone(t);
}

lark_tensor *lark_clone(const lark_tensor *t) {
  lark_device d = lark_tensor_device(t);
  lark_tensor *c = lark_empty(t->ndim, t->shape, t->dtype, &d);
  if (c && lark_copy_(c, t)) {
    lark_tensor_release(c);
    return NULL;
  }
  return rec(LARK_VIEW_COPY, c, t, 0, NULL);
}

lark_tensor *lark_pin_memory(const lark_tensor *t) {
  if (lark_check_alive("pin_memory", t, "the tensor")) return NULL;
  if (lark_tensor_device(t).kind != LARK_CPU) {
    char d[32];
    lark_set_error(LARK_ERR_DEVICE, "pin_memory: expected a CPU tensor, got one on %s (only host memory is pinned)",
                   lark_device_str(lark_tensor_device(t), d, sizeof d));
    return NULL;
  }
  if (lark_is_pinned(t)) return lark_tensor_retain((lark_tensor *)t);
  lark_tensor *c = lark_empty_pinned(t->ndim, t->shape, t->dtype);
  if (c && lark_copy_(c, t)) {
    lark_tensor_release(c);
    return NULL;
  }
  return rec(LARK_VIEW_COPY, c, t, 0, NULL);
}

lark_tensor *lark_cast(const lark_tensor *t, lark_dtype dt) {
  if (t->dtype == dt) return lark_tensor_retain((lark_tensor *)t);
  return lark_to(t, dt, NULL);
}

lark_tensor *lark_to(const lark_tensor *t, lark_dtype dt, const lark_device *device) {
  lark_device d = device ? *device : lark_tensor_device(t);
  if (dt == t->dtype && lark_device_eq(d, lark_tensor_device(t))) return lark_tensor_retain((lark_tensor *)t);
  lark_tensor *c = lark_empty(t->ndim, t->shape, dt, &d);
  if (c && lark_copy_(c, t)) {
    lark_tensor_release(c);
    return NULL;
  }
  return rec(LARK_VIEW_COPY, c, t, 0, NULL);
}

int lark_fill_(lark_tensor *t, double value) {
  if (lark_check_alive("fill_", t, "the tensor")) return lark_error_code();
  if (lark_numel(t) == 0) return 0;
  const lark_backend *be = lark_backend_for(lark_tensor_device(t));
  int rc = be->fill ? be->fill(t, value) : lark_backend_missing("fill", lark_tensor_device(t));
  if (!rc) lark_bump_version(t);
  return rc;
}

int lark_get_flat(const lark_tensor *t, int64_t i, double *out) {
  int64_t n = lark_numel(t);
  if (i < 0 || i >= n)
    return lark_set_error(LARK_ERR_INDEX, "item: index %lld out of range for %lld elements", (long long)i + 1,
                          (long long)n);
  const lark_tensor *src = t;
  lark_tensor *host = NULL;
  if (lark_tensor_device(t).kind != LARK_CPU) {
    /* one element across the bus: narrow to it, then copy */
    lark_tensor *one = lark_as_strided(t, 0, NULL, NULL, lark_offset_of(t, i));
    if (!one) return lark_error_code();
    host = lark_to(one, t->dtype, &LARK_DEVICE_CPU);
    lark_tensor_release(one);
    if (!host) return lark_error_code();
    src = host;
    i = 0;
  }
  int64_t off = lark_offset_of(src, i);
  const char *base = src->storage->data;
  switch (src->dtype) {
    case LARK_FLOAT32: *out = ((const float *)base)[off]; break;
    case LARK_FLOAT64: *out = ((const double *)base)[off]; break;
    case LARK_INT64: *out = (double)((const int64_t *)base)[off]; break;
    case LARK_UINT8: *out = ((const uint8_t *)base)[off]; break;
    case LARK_BOOL: *out = ((const uint8_t *)base)[off] != 0; break;
    default: break;
  }
  lark_tensor_release(host);
  return 0;
}
