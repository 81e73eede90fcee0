/* shape.c: joining (cat, stack) and splitting (split, split_sizes, chunk).
 *
 * Splitting only makes views (narrow), so the pieces share the storage with the input: writing
 * into a chunk changes the original. Joining allocates the result and copies each input into its
 * slab with lark_copy_, which converts dtypes, reads any strides and runs on every backend; so
 * these ops need no kernel of their own in the backend table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "grad.h"

/* PyTorch's legacy rule: a 1-D tensor of size 0 may be concatenated with tensors of any rank and
 * is skipped (old code used torch.Tensor() as the "nothing yet" start of a cat loop). */
static bool cat_skipped(const lark_tensor *t) { return t->ndim == 1 && t->shape[0] == 0; }

static lark_tensor *cat_impl(int n, lark_tensor *const *ts, int dim) {
  char a[256], b[256];
  if (n <= 0 || !ts) {
    lark_set_error(LARK_ERR_ARG, "cat: expected a non-empty list of tensors");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    if (!ts[i]) {
      lark_set_error(LARK_ERR_ARG, "cat: tensor %d is missing", i + 1);
      return NULL;
    }
    if (ts[i]->ndim == 0) {
      lark_set_error(LARK_ERR_SHAPE, "cat: tensor %d is 0-d and cannot be concatenated (unsqueeze it first)", i + 1);
      return NULL;
    }
  }
  /* the reference: the first tensor that is not skipped (or the first, when every one is) */
  int ref = 0;
  while (ref < n && cat_skipped(ts[ref])) ref++;
  if (ref == n) ref = 0;
  const lark_tensor *r = ts[ref];
  if ((dim = lark_wrap_dim("cat", dim, r->ndim)) < 0) return NULL;

  lark_device dev = lark_tensor_device(ts[0]);
  lark_dtype dt = ts[0]->dtype;
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    const lark_tensor *t = ts[i];
    lark_device d = lark_tensor_device(t);
    if (!lark_device_eq(d, dev)) {
      lark_set_error(LARK_ERR_DEVICE, "cat: tensor 1 is on %s but tensor %d is on %s (move one with :to())",
                     lark_device_str(dev, a, sizeof a), i + 1, lark_device_str(d, b, sizeof b));
      return NULL;
    }
    dt = lark_promote(dt, t->dtype);
    if (cat_skipped(t) && i != ref) continue;
    if (t->ndim != r->ndim) {
      lark_set_error(LARK_ERR_SHAPE, "cat: tensor %d has %d dims (shape %s) but tensor %d has %d (shape %s)", i + 1,
                     t->ndim, lark_shape_str(t->ndim, t->shape, a, sizeof a), ref + 1, r->ndim,
                     lark_shape_str(r->ndim, r->shape, b, sizeof b));
      return NULL;
    }
    for (int k = 0; k < t->ndim; k++) {
      if (k != dim && t->shape[k] != r->shape[k]) {
        lark_set_error(LARK_ERR_SHAPE,
                       "cat: tensor %d has shape %s but tensor %d has shape %s: sizes must match except along dim %d",
                       i + 1, lark_shape_str(t->ndim, t->shape, a, sizeof a), ref + 1,
                       lark_shape_str(r->ndim, r->shape, b, sizeof b), dim + 1);
        return NULL;
      }
    }
    if (t->shape[dim] > INT64_MAX - total) {
      lark_set_error(LARK_ERR_SHAPE, "cat: the result is too large");
      return NULL;
    }
    total += t->shape[dim];
  }

  int64_t shape[LARK_MAX_DIMS];
  memcpy(shape, r->shape, sizeof(int64_t) * (size_t)r->ndim);
  shape[dim] = total;
  lark_tensor *out = lark_empty(r->ndim, shape, dt, &dev);
  if (!out) return NULL;
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    const lark_tensor *t = ts[i];
    if (cat_skipped(t) && i != ref) continue;
    int64_t len = t->shape[dim];
    if (len == 0 || lark_numel(t) == 0) {
      at += len;
      continue;
    }
    lark_tensor *slab = lark_narrow(out, dim, at, len);
    int rc = slab ? lark_copy_(slab, t) : lark_error_code();
    lark_tensor_release(slab);
    if (rc) {
      lark_tensor_release(out);
      return NULL;
    }
    at += len;
  }
  return out;
}

lark_tensor *lark_cat(int n, lark_tensor *const *ts, int dim) {
  lark_tensor *out;
  LARK_NO_GRAD(out = cat_impl(n, ts, dim));
  bool any = false;
  for (int i = 0; out && i < n; i++) any = any || ts[i]->requires_grad;
  if (any) lark_record_cat(out, n, ts, dim);
  return out;
}

lark_tensor *lark_stack(int n, lark_tensor *const *ts, int dim) {
  char a[256], b[256];
  if (n <= 0 || !ts) {
    lark_set_error(LARK_ERR_ARG, "stack: expected a non-empty list of tensors");
    return NULL;
  }
  for (int i = 0; i < n; i++)
    if (!ts[i]) {
      lark_set_error(LARK_ERR_ARG, "stack: tensor %d is missing", i + 1);
      return NULL;
    }
  const lark_tensor *r = ts[0];
  int nd = r->ndim + 1; /* the result has one more dim; dim may be -1 .. -(nd) or 0 .. nd-1 */
  if (nd > LARK_MAX_DIMS) {
    lark_set_error(LARK_ERR_SHAPE, "stack: tensors of %d dims cannot be stacked (lark supports at most %d dims)", r->ndim,
                   LARK_MAX_DIMS);
    return NULL;
  }
  if (dim < -nd || dim >= nd) {
    lark_set_error(LARK_ERR_INDEX, "stack: dim %d out of range for a result of %d dims", dim >= 0 ? dim + 1 : dim, nd);
    return NULL;
  }
  if (dim < 0) dim += nd;
  lark_device dev = lark_tensor_device(r);
  for (int i = 1; i < n; i++) {
    const lark_tensor *t = ts[i];
    lark_device d = lark_tensor_device(t);
    if (!lark_device_eq(d, dev)) {
      lark_set_error(LARK_ERR_DEVICE, "stack: tensor 1 is on %s but tensor %d is on %s (move one with :to())",
                     lark_device_str(dev, a, sizeof a), i + 1, lark_device_str(d, b, sizeof b));
      return NULL;
    }
    if (t->ndim != r->ndim || memcmp(t->shape, r->shape, sizeof(int64_t) * (size_t)r->ndim)) {
      lark_set_error(LARK_ERR_SHAPE, "stack: tensor %d has shape %s but tensor 1 has shape %s (stack needs equal shapes)",
                     i + 1, lark_shape_str(t->ndim, t->shape, a, sizeof a),
                     lark_shape_str(r->ndim, r->shape, b, sizeof b));
      return NULL;
    }
  }
  /* stack = cat of the inputs each unsqueezed at dim */
  lark_tensor **us = calloc((size_t)n, sizeof *us);
  if (!us) {
    lark_set_error(LARK_ERR_NOMEM, "stack: out of memory");
    return NULL;
  }
  lark_tensor *out = NULL;
  int i = 0;
  for (; i < n; i++)
    if (!(us[i] = lark_unsqueeze(ts[i], dim))) break;
  if (i == n) out = lark_cat(n, us, dim);
  for (int k = 0; k < n; k++) lark_tensor_release(us[k]);
  free(us);
  return out;
}

/* Views of t along dim with the given sizes (already checked to sum to the dim's size). */
static lark_tensor **split_views(const char *op, const lark_tensor *t, int nparts, const int64_t *sizes,
                                 int64_t uniform, int dim) {
  lark_tensor **parts = calloc((size_t)(nparts > 0 ? nparts : 1), sizeof *parts);
  if (!parts) {
    lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    return NULL;
  }
  int64_t at = 0, n = t->shape[dim];
  for (int i = 0; i < nparts; i++) {
    int64_t len = sizes ? sizes[i] : (uniform < n - at ? uniform : n - at);
    parts[i] = lark_narrow(t, dim, at, len);
    if (!parts[i]) {
      for (int k = 0; k < i; k++) lark_tensor_release(parts[k]);
      free(parts);
      return NULL;
    }
    at += len;
  }
  return parts;
}

static int split_dim(const char *op, const lark_tensor *t, int dim) {
  if (t->ndim == 0)
    return lark_set_error(LARK_ERR_SHAPE, "%s: cannot split a 0-d tensor", op);
  return lark_wrap_dim(op, dim, t->ndim);
}

lark_tensor **lark_split(const lark_tensor *t, int64_t size, int dim, int *n) {
  if (n) *n = 0;
  if ((dim = split_dim("split", t, dim)) < 0) return NULL;
  int64_t len = t->shape[dim];
  if (size < 0 || (size == 0 && len > 0)) {
    lark_set_error(LARK_ERR_ARG, "split: split size must be positive, got %lld", (long long)size);
    return NULL;
  }
  /* like PyTorch, a dim of size 0 still gives one (empty) piece */
  int64_t parts = size == 0 ? 1 : len / size + (len % size != 0); /* ceil, without overflow near INT64_MAX */
  if (parts < 1) parts = 1;
  if (parts > INT32_MAX / 2) {
    lark_set_error(LARK_ERR_ARG, "split: %lld pieces are too many", (long long)parts);
    return NULL;
  }
  lark_tensor **r = split_views("split", t, (int)parts, NULL, size, dim);
  if (r && n) *n = (int)parts;
  return r;
}

lark_tensor **lark_split_sizes(const lark_tensor *t, int nsizes, const int64_t *sizes, int dim) {
  if ((dim = split_dim("split", t, dim)) < 0) return NULL;
  if (nsizes < 0 || (nsizes > 0 && !sizes)) {
    lark_set_error(LARK_ERR_ARG, "split: expected a list of sizes");
    return NULL;
  }
  int64_t sum = 0;
  for (int i = 0; i < nsizes; i++) {
    if (sizes[i] < 0) {
      lark_set_error(LARK_ERR_ARG, "split: size %d is negative (%lld)", i + 1, (long long)sizes[i]);
      return NULL;
    }
    if (sizes[i] > INT64_MAX - sum) {
      lark_set_error(LARK_ERR_ARG, "split: the sizes overflow");
      return NULL;
    }
    sum += sizes[i];
  }
  if (sum != t->shape[dim]) {
    lark_set_error(LARK_ERR_ARG, "split: the sizes sum to %lld but dim %d has size %lld", (long long)sum, dim + 1,
                   (long long)t->shape[dim]);
    return NULL;
  }
  return split_views("split", t, nsizes, sizes, 0, dim);
}

lark_tensor **lark_chunk(const lark_tensor *t, int chunks, int dim, int *n) {
  if (n) *n = 0;
  if ((dim = split_dim("chunk", t, dim)) < 0) return NULL;
  if (chunks <= 0) {
    lark_set_error(LARK_ERR_ARG, "chunk: the number of chunks must be positive, got %d", chunks);
    return NULL;
  }
  int64_t len = t->shape[dim];
  int64_t size = len / chunks + (len % chunks != 0); /* ceil, without overflow */
  if (size == 0) {
    /* PyTorch: an empty dim gives `chunks` empty pieces */
    int64_t *zeros = calloc((size_t)chunks, sizeof *zeros);
    if (!zeros) {
      lark_set_error(LARK_ERR_NOMEM, "chunk: out of memory");
      return NULL;
    }
    lark_tensor **r = split_views("chunk", t, chunks, zeros, 0, dim);
    free(zeros);
    if (r && n) *n = chunks;
    return r;
  }
  /* pieces of ceil(len / chunks): the count may come out below `chunks` (5 in 4 chunks: 2,2,1) */
  int parts = (int)(len / size + (len % size != 0));
  lark_tensor **r = split_views("chunk", t, parts, NULL, size, dim);
  if (r && n) *n = parts;
  return r;
}
