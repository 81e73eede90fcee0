/* index.c: index_select, gather, scatter_add, masked_fill, masked_select, nonzero.
 *
 * Index tensors are int64 and 0-based. Every front function checks all index values before it
 * allocates or writes anything, so a bad index is an error naming the value and the size, and a
 * failed scatter_add_ leaves its tensor untouched.
 *
 * The kernels below are CPU kernels (static, called when the tensor lives on the CPU). Tensors on
 * another device go, after the same checks, to the backend's fields of this family (index_check,
 * gather, scatter_add, masked_fill, masked_select, nonzero: contracts in backend.h), and to
 * lark_backend_missing() when it lacks one; index_select runs as a gather with its index expanded.
 * The CPU kernels move elements by size (1, 4 or 8 bytes) where the dtype does not matter, and loop
 * with OpenMP over independent rows. scatter_add partitions the work by destination (each
 * destination element is summed by one thread in index order), so its sums are the same for any
 * number of threads. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "grad.h"

/* ---- helpers -------------------------------------------------------------------------------- */


/* Moves one element of es bytes. */
static inline void move_elem(char *dst, const char *src, size_t es) {
  switch (es) {
    case 1: *(uint8_t *)dst = *(const uint8_t *)src; break;
    case 4: memcpy(dst, src, 4); break;
    default: memcpy(dst, src, 8); break;
  }
}

/* Float to integer without C's undefined behaviour on NaN and out-of-range values (as cpu.c). */
static inline int64_t f2i(double x) {
  if (x != x) return 0;
  if (x >= 9.2233720368547748e18) return INT64_MAX;
  if (x <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)x;
}

/* A 0-d tensor as a 1-D view of one element (the kernels want at least one dim); else t retained. */
static lark_tensor *at_least_1d(const lark_tensor *t) {
  if (t->ndim > 0) return lark_tensor_retain((lark_tensor *)t);
  int64_t one = 1;
  return lark_view(t, 1, &one);
}

static int check_index_dtype(const char *op, const lark_tensor *index) {
  if (index->dtype != LARK_INT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: the index must be an int64 tensor, got %s", op,
                          lark_dtype_name(index->dtype));
  return 0;
}

static int check_mask_dtype(const char *op, const lark_tensor *mask) {
  if (mask->dtype != LARK_BOOL && mask->dtype != LARK_UINT8)
    return lark_set_error(LARK_ERR_DTYPE, "%s: the mask must be a bool or uint8 tensor, got %s", op,
                          lark_dtype_name(mask->dtype));
  return 0;
}

/* The error for index value v outside [0, size) along dim (0-based). */
static int index_error(const char *op, int64_t v, int64_t size, int dim) {
  return lark_set_error(LARK_ERR_INDEX, "%s: index %lld is out of range for dim %d of size %lld", op, (long long)v,
                        dim + 1, (long long)size);
}

/* Checks that every element of index (int64, any strides) lies in [0, size); the error names the
 * first bad one in row-major order, whatever the number of threads. */
static int check_indices(const char *op, const lark_tensor *index, int64_t size, int dim) {
  if (lark_numel(index) == 0) return 0;
  const lark_tensor *ts[1] = {index};
  lark_iter it;
  lark_iter_init(&it, 1, ts);
  int64_t inner = it.shape[it.ndim - 1], rows = it.numel / inner, s = it.stride[0][it.ndim - 1];
  const int64_t *base = (const int64_t *)it.data[0];
  int64_t bad_row = INT64_MAX;
#pragma omp parallel for reduction(min : bad_row) if (it.numel > LARK_PARALLEL_GRAIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t off[1];
    lark_iter_row(&it, r, off);
    const int64_t *p = base + off[0];
    for (int64_t i = 0; i < inner; i++)
      if ((uint64_t)p[i * s] >= (uint64_t)size) { /* negative values wrap to huge */
        if (r < bad_row) bad_row = r;
        break;
      }
  }
  if (bad_row == INT64_MAX) return 0;
  int64_t off[1];
  lark_iter_row(&it, bad_row, off);
  const int64_t *p = base + off[0];
  int64_t v = 0;
  for (int64_t i = 0; i < inner; i++)
    if ((uint64_t)p[i * s] >= (uint64_t)size) {
      v = p[i * s];
      break;
    }
  return index_error(op, v, size, dim);
}

/* check_indices for a tensor on another device: the backend finds the first bad element there,
 * and the message is the CPU's. */
static int check_indices_device(const char *op, const lark_backend *be, const lark_tensor *index, int64_t size,
                                int dim) {
  if (lark_numel(index) == 0) return 0;
  int64_t bad = -1, v = 0;
  if (be->index_check(index, size, &bad, &v)) return lark_error_code();
  return bad < 0 ? 0 : index_error(op, v, size, dim);
}

/* ---- index_select --------------------------------------------------------------------------- */

/* out (outer.., nidx, inner..) contiguous = t (outer.., size, inner..) any strides, rows picked by
 * idx (nidx, contiguous, checked) along dim. t has >= 1 dim. */
static void cpu_index_select(lark_tensor *out, const lark_tensor *t, int dim, const int64_t *idx, int64_t nidx) {
  int64_t numel = lark_numel(out);
  if (numel == 0) return;
  int nd = t->ndim;
  size_t es = lark_dtype_size(t->dtype);
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; d++) outer *= t->shape[d];
  for (int d = dim + 1; d < nd; d++) inner *= t->shape[d];
  /* the dims after `dim` read as one contiguous block? then each picked row is one memcpy */
  bool inner_contig = true;
  int64_t expect = 1;
  for (int d = nd - 1; d > dim; d--) {
    if (t->shape[d] == 1) continue;
    if (t->stride[d] != expect) inner_contig = false;
    expect *= t->shape[d];
  }
  /* otherwise: rows of the last dim, strided */
  int64_t last = dim < nd - 1 ? t->shape[nd - 1] : 1, slast = dim < nd - 1 ? t->stride[nd - 1] : 0;
  int64_t inner_rows = inner / (last ? last : 1);
  const char *src = lark_data_ptr(t);
  char *dst = lark_data_ptr(out);
  int64_t sdim = t->stride[dim], rows = outer * nidx;
  if (inner == 1) {
    /* picking single elements (dim is the last one that counts): one output row per outer index */
#define PICK_LOOP(T)                                                                                 \
  _Pragma("omp parallel for if (numel > LARK_PARALLEL_GRAIN)") for (int64_t o = 0; o < outer; o++) {   \
    const T *s = (const T *)src + lark_unravel(dim, t->shape, t->stride, -1, -1, o);                         \
    T *d = (T *)dst + o * nidx;                                                                         \
    for (int64_t k = 0; k < nidx; k++) d[k] = s[idx[k] * sdim];                                         \
  }
    switch (es) {
      case 8: PICK_LOOP(uint64_t) break;
      case 4: PICK_LOOP(uint32_t) break;
      default: PICK_LOOP(uint8_t) break;
    }
#undef PICK_LOOP
    return;
  }
#pragma omp parallel for if (numel > LARK_PARALLEL_GRAIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t o = r / nidx, k = r % nidx;
    int64_t so = lark_unravel(dim, t->shape, t->stride, -1, -1, o) + idx[k] * sdim;
    char *d = dst + (size_t)(r * inner) * es;
    if (inner_contig) {
      memcpy(d, src + (size_t)so * es, (size_t)inner * es);
      continue;
    }
    for (int64_t ir = 0; ir < inner_rows; ir++) {
      /* dims dim+1 .. nd-2 give the row; the last dim runs inside */
      int64_t ro = so + lark_unravel(nd - 1 - (dim + 1), t->shape + dim + 1, t->stride + dim + 1, -1, -1, ir);
      for (int64_t j = 0; j < last; j++, d += es) move_elem(d, src + (size_t)(ro + j * slast) * es, es);
    }
  }
}

static lark_tensor *index_select_impl(const lark_tensor *t, int dim, const lark_tensor *index) {
  const char *op = "index_select";
  const lark_tensor *ts[2] = {t, index};
  static const char *const names[2] = {"the input", "the index"};
  if (check_index_dtype(op, index) || lark_check_same_device(op, 2, ts, names)) return NULL;
  if (index->ndim > 1) {
    char a[256];
    lark_set_error(LARK_ERR_SHAPE, "%s: the index must be 0-d or 1-D, got shape %s", op,
                   lark_shape_str(index->ndim, index->shape, a, sizeof a));
    return NULL;
  }
  if ((dim = lark_wrap_dim(op, dim, t->ndim)) < 0) return NULL;
  int64_t nidx = lark_numel(index), size = t->ndim ? t->shape[dim] : 1;
  if (t->ndim == 0 && nidx != 1) {
    lark_set_error(LARK_ERR_SHAPE, "%s: a 0-d tensor takes exactly one index, got %lld", op, (long long)nidx);
    return NULL;
  }
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = NULL; /* another device's kernels; NULL on the CPU */
  if (dev.kind != LARK_CPU) {
    be = lark_backend_for(dev);
    if (!be || !be->index_check || !be->gather) {
      lark_backend_missing(op, dev);
      return NULL;
    }
    if (check_indices_device(op, be, index, size, dim)) return NULL;
  } else if (check_indices(op, index, size, dim)) {
    return NULL;
  }
  int64_t shape[LARK_MAX_DIMS];
  memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  if (t->ndim) shape[dim] = nidx;
  lark_tensor *out = lark_empty(t->ndim, shape, t->dtype, &dev);
  lark_tensor *ic = out ? lark_contiguous(index) : NULL;
  lark_tensor *t1 = ic ? at_least_1d(t) : NULL, *o1 = t1 ? at_least_1d(out) : NULL;
  if (o1 && be) {
    /* a gather whose index is the 1-D index laid along dim and expanded over the other dims */
    int64_t st[LARK_MAX_DIMS] = {0};
    st[dim] = 1;
    lark_tensor *ie = lark_as_strided(ic, o1->ndim, o1->shape, st, ic->offset);
    if (!ie || be->gather(o1, t1, dim, ie)) {
      lark_tensor_release(out);
      out = NULL;
    }
    lark_tensor_release(ie);
  } else if (o1) {
    cpu_index_select(o1, t1, dim, nidx ? lark_data_ptr(ic) : NULL, nidx);
  } else {
    lark_tensor_release(out);
    out = NULL;
  }
  lark_tensor_release(ic);
  lark_tensor_release(t1);
  lark_tensor_release(o1);
  return out;
}

lark_tensor *lark_index_select(const lark_tensor *t, int dim, const lark_tensor *index) {
  lark_tensor *out;
  LARK_NO_GRAD(out = index_select_impl(t, dim, index));
  if (out && t->requires_grad) lark_record_index_select(out, t, lark_wrap_dim("index_select", dim, t->ndim), index);
  return out;
}

/* ---- gather --------------------------------------------------------------------------------- */

/* out (index's shape, contiguous)[i..] = t[i.. with index[i..] in place of i_dim]; t, index of the
 * same ndim >= 1, any strides, indices checked. */
static void cpu_gather(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index) {
  int64_t numel = lark_numel(out);
  if (numel == 0) return;
  int nd = t->ndim, last = nd - 1;
  size_t es = lark_dtype_size(t->dtype);
  int64_t L = index->shape[last], rows = numel / L;
  int64_t is_last = index->stride[last], ts_last = last == dim ? 0 : t->stride[last], ts_dim = t->stride[dim];
  const char *src = lark_data_ptr(t);
  const int64_t *ip = lark_data_ptr(index);
  char *dst = lark_data_ptr(out);
#pragma omp parallel for if (numel > LARK_PARALLEL_GRAIN)
  for (int64_t r = 0; r < rows; r++) {
    /* coordinates of row r over dims 0..last-1 of the index; t shares them except along dim */
    int64_t rr = r, io = 0, to = 0;
    for (int d = last - 1; d >= 0; d--) {
      int64_t c = rr % index->shape[d];
      rr /= index->shape[d];
      io += c * index->stride[d];
      if (d != dim) to += c * t->stride[d];
    }
    char *o = dst + (size_t)(r * L) * es;
    for (int64_t j = 0; j < L; j++, o += es)
      move_elem(o, src + (size_t)(to + j * ts_last + ip[io + j * is_last] * ts_dim) * es, es);
  }
}

/* The shape rules gather and scatter_add share: index has t's ndim and fits inside t except along
 * dim (and inside src everywhere, for scatter_add). */
static int check_index_shape(const char *op, const lark_tensor *t, int dim, const lark_tensor *index,
                             const lark_tensor *src) {
  char a[256], b[256];
  if (index->ndim != t->ndim)
    return lark_set_error(LARK_ERR_SHAPE, "%s: the index has %d dims (shape %s) but the tensor has %d (shape %s)", op,
                          index->ndim, lark_shape_str(index->ndim, index->shape, a, sizeof a), t->ndim,
                          lark_shape_str(t->ndim, t->shape, b, sizeof b));
  for (int d = 0; d < t->ndim; d++)
    if (d != dim && index->shape[d] > t->shape[d])
      return lark_set_error(LARK_ERR_SHAPE,
                            "%s: the index has shape %s but the tensor has shape %s: size %lld of dim %d exceeds %lld",
                            op, lark_shape_str(index->ndim, index->shape, a, sizeof a),
                            lark_shape_str(t->ndim, t->shape, b, sizeof b), (long long)index->shape[d], d + 1,
                            (long long)t->shape[d]);
  if (!src) return 0;
  if (src->ndim != t->ndim)
    return lark_set_error(LARK_ERR_SHAPE, "%s: the source has %d dims (shape %s) but the tensor has %d (shape %s)", op,
                          src->ndim, lark_shape_str(src->ndim, src->shape, a, sizeof a), t->ndim,
                          lark_shape_str(t->ndim, t->shape, b, sizeof b));
  for (int d = 0; d < t->ndim; d++)
    if (index->shape[d] > src->shape[d])
      return lark_set_error(LARK_ERR_SHAPE,
                            "%s: the index has shape %s but the source has shape %s: size %lld of dim %d exceeds %lld",
                            op, lark_shape_str(index->ndim, index->shape, a, sizeof a),
                            lark_shape_str(src->ndim, src->shape, b, sizeof b), (long long)index->shape[d], d + 1,
                            (long long)src->shape[d]);
  return 0;
}

static lark_tensor *gather_impl(const lark_tensor *t, int dim, const lark_tensor *index) {
  const char *op = "gather";
  const lark_tensor *ts[2] = {t, index};
  static const char *const names[2] = {"the input", "the index"};
  if (check_index_dtype(op, index) || lark_check_same_device(op, 2, ts, names)) return NULL;
  if ((dim = lark_wrap_dim(op, dim, t->ndim)) < 0) return NULL;
  if (check_index_shape(op, t, dim, index, NULL)) return NULL;
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = NULL; /* another device's kernels; NULL on the CPU */
  if (dev.kind != LARK_CPU) {
    be = lark_backend_for(dev);
    if (!be || !be->index_check || !be->gather) {
      lark_backend_missing(op, dev);
      return NULL;
    }
    if (check_indices_device(op, be, index, t->ndim ? t->shape[dim] : 1, dim)) return NULL;
  } else if (check_indices(op, index, t->ndim ? t->shape[dim] : 1, dim)) {
    return NULL;
  }
  lark_tensor *out = lark_empty(index->ndim, index->shape, t->dtype, &dev);
  lark_tensor *t1 = out ? at_least_1d(t) : NULL, *i1 = t1 ? at_least_1d(index) : NULL;
  lark_tensor *o1 = i1 ? at_least_1d(out) : NULL;
  if (o1 && be) {
    if (be->gather(o1, t1, dim, i1)) {
      lark_tensor_release(out);
      out = NULL;
    }
  } else if (o1) cpu_gather(o1, t1, dim, i1);
  else {
    lark_tensor_release(out);
    out = NULL;
  }
  lark_tensor_release(t1);
  lark_tensor_release(i1);
  lark_tensor_release(o1);
  return out;
}

lark_tensor *lark_gather(const lark_tensor *t, int dim, const lark_tensor *index) {
  lark_tensor *out;
  LARK_NO_GRAD(out = gather_impl(t, dim, index));
  if (out && t->requires_grad) lark_record_gather(out, t, lark_wrap_dim("gather", dim, t->ndim), index);
  return out;
}

/* ---- scatter_add ---------------------------------------------------------------------------- */

#define SCATTER_TILE 64

/* t[i.. with index[i..] in place of i_dim] += src[i..] over index's shape; t, index, src of one
 * ndim >= 1, src of t's dtype, indices checked.
 * Work is split by destination: a "line" is every position of index that shares the coordinates
 * outside dim, and all of a line's adds land on one line of t. Each thread owns whole lines and
 * adds along them in index order, so every sum is formed in the same order whatever the threads.
 * Lines next to each other in the last dim are done together (a tile), so that for dim < last the
 * inner loop walks memory contiguously. */
#define SCATTER_LOOP(T, ADD)                                                                         \
  do {                                                                                              \
    T *tp = (T *)lark_data_ptr(t);                                                                  \
    const T *sp = (const T *)lark_data_ptr(src);                                                    \
    _Pragma("omp parallel for if (numel > LARK_PARALLEL_GRAIN)") for (int64_t w = 0; w < items; w++) { \
      int64_t o = w / ntiles, c0 = (w % ntiles) * tile, c1 = c0 + tile < width ? c0 + tile : width;  \
      int64_t tb = lark_unravel(nd, index->shape, t->stride, dim, cd, o);                                \
      int64_t ib = lark_unravel(nd, index->shape, index->stride, dim, cd, o);                            \
      int64_t sb = lark_unravel(nd, index->shape, src->stride, dim, cd, o);                              \
      for (int64_t j = 0; j < n; j++)                                                               \
        for (int64_t c = c0; c < c1; c++) {                                                         \
          int64_t ix = ip[ib + j * is_dim + c * is_cd];                                             \
          T *dp = tp + tb + ix * ts_dim + c * ts_cd;                                                \
          T v = sp[sb + j * ss_dim + c * ss_cd];                                                    \
          *dp = ADD(*dp, v);                                                                        \
        }                                                                                           \
    }                                                                                               \
  } while (0)

#define ADD_PLAIN(a, b) ((a) + (b))
#define ADD_WRAP64(a, b) ((int64_t)((uint64_t)(a) + (uint64_t)(b)))
#define ADD_U8(a, b) ((uint8_t)((a) + (b)))
#define ADD_OR(a, b) ((uint8_t)((a) | (b)))

static void cpu_scatter_add(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src) {
  int64_t numel = lark_numel(index);
  if (numel == 0) return;
  int nd = t->ndim;
  int cd = dim == nd - 1 ? -1 : nd - 1; /* the dim tiles run along, if any */
  int64_t n = index->shape[dim], width = cd < 0 ? 1 : index->shape[cd], tile = cd < 0 ? 1 : SCATTER_TILE;
  int64_t lines = numel / (n * width); /* counted without the tiled dim */
  /* narrower tiles when there are too few to keep every thread busy */
  while (tile > 8 && lines * ((width + tile - 1) / tile) < 4 * (int64_t)omp_get_max_threads()) tile /= 2;
  int64_t ntiles = (width + tile - 1) / tile, items = lines * ntiles;
  int64_t is_dim = index->stride[dim], ts_dim = t->stride[dim], ss_dim = src->stride[dim];
  int64_t is_cd = cd < 0 ? 0 : index->stride[cd], ts_cd = cd < 0 ? 0 : t->stride[cd],
          ss_cd = cd < 0 ? 0 : src->stride[cd];
  const int64_t *ip = lark_data_ptr(index);
  switch (t->dtype) {
    case LARK_FLOAT32: SCATTER_LOOP(float, ADD_PLAIN); break;
    case LARK_FLOAT64: SCATTER_LOOP(double, ADD_PLAIN); break;
    case LARK_INT64: SCATTER_LOOP(int64_t, ADD_WRAP64); break;
    case LARK_UINT8: SCATTER_LOOP(uint8_t, ADD_U8); break;
    case LARK_BOOL: SCATTER_LOOP(uint8_t, ADD_OR); break;
    default: break;
  }
}

int lark_scatter_add_(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src) {
  const char *op = "scatter_add";
  const lark_tensor *ts[3] = {t, index, src};
  static const char *const names[3] = {"the tensor", "the index", "the source"};
  if (check_index_dtype(op, index) || lark_check_same_device(op, 3, ts, names)) return lark_error_code();
  if ((dim = lark_wrap_dim(op, dim, t->ndim)) < 0) return lark_error_code();
  if (check_index_shape(op, t, dim, index, src)) return lark_error_code();
  for (int d = 0; d < t->ndim; d++)
    if (t->stride[d] == 0 && t->shape[d] > 1)
      return lark_set_error(LARK_ERR_ARG,
                            "scatter_add_: the tensor is expanded (dim %d has stride 0), so several elements share "
                            "memory; clone() it before adding in place",
                            d + 1);
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = NULL; /* another device's kernels; NULL on the CPU */
  if (dev.kind != LARK_CPU) {
    be = lark_backend_for(dev);
    if (!be || !be->index_check || !be->scatter_add) return lark_backend_missing(op, dev);
    if (check_indices_device(op, be, index, t->ndim ? t->shape[dim] : 1, dim)) return lark_error_code();
  } else if (check_indices(op, index, t->ndim ? t->shape[dim] : 1, dim)) {
    return lark_error_code();
  }
  if (lark_numel(index) == 0) return 0;
  /* an index or a source that shares memory with t would change under the writes (an index
   * could even leave its checked range): read them from copies */
  bool src_aliases = src->storage && src->storage == t->storage;
  bool index_aliases = index->storage && index->storage == t->storage;
  lark_tensor *sc = src_aliases && src->dtype == t->dtype ? lark_clone(src) : lark_cast(src, t->dtype);
  lark_tensor *ic = index_aliases ? lark_clone(index) : lark_tensor_retain((lark_tensor *)index);
  lark_tensor *t1 = sc && ic ? at_least_1d(t) : NULL, *i1 = t1 ? at_least_1d(ic) : NULL;
  lark_tensor *s1 = i1 ? at_least_1d(sc) : NULL;
  int rc = s1 ? 0 : lark_error_code();
  if (!rc && be) {
    rc = be->scatter_add(t1, dim, i1, s1);
    if (!rc) lark_bump_version(t);
  } else if (!rc) {
    cpu_scatter_add(t1, dim, i1, s1);
    lark_bump_version(t);
  }
  lark_tensor_release(sc);
  lark_tensor_release(ic);
  lark_tensor_release(t1);
  lark_tensor_release(i1);
  lark_tensor_release(s1);
  return rc;
}

lark_tensor *lark_scatter_add(const lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src) {
  lark_tensor *c = lark_clone(t);
  if (c && lark_scatter_add_(c, dim, index, src)) {
    lark_tensor_release(c);
    return NULL;
  }
  return c;
}

/* ---- masked_fill ---------------------------------------------------------------------------- */

#define FILL_MASKED(T, V)                                                                            \
  do {                                                                                              \
    T v = (V);                                                                                      \
    _Pragma("omp parallel for if (it.numel > LARK_PARALLEL_GRAIN)") for (int64_t r = 0; r < rows; r++) { \
      int64_t off[2];                                                                               \
      lark_iter_row(&it, r, off);                                                                   \
      T *p = (T *)it.data[0] + off[0];                                                              \
      const uint8_t *m = (const uint8_t *)it.data[1] + off[1];                                      \
      for (int64_t i = 0; i < inner; i++)                                                           \
        if (m[i * sm]) p[i * st] = v;                                                               \
    }                                                                                               \
  } while (0)

/* t[i] = value where mask[i]; t any strides, mask (uint8/bool) expanded to t's shape. */
static void cpu_masked_fill(lark_tensor *t, const lark_tensor *mask, double value) {
  const lark_tensor *ts[2] = {t, mask};
  lark_iter it;
  lark_iter_init(&it, 2, ts);
  if (it.numel == 0) return;
  int64_t inner = it.shape[it.ndim - 1], rows = it.numel / inner;
  int64_t st = it.stride[0][it.ndim - 1], sm = it.stride[1][it.ndim - 1];
  switch (t->dtype) {
    case LARK_FLOAT32: FILL_MASKED(float, (float)value); break;
    case LARK_FLOAT64: FILL_MASKED(double, value); break;
    case LARK_INT64: FILL_MASKED(int64_t, f2i(value)); break;
    case LARK_UINT8: FILL_MASKED(uint8_t, (uint8_t)f2i(value)); break;
    case LARK_BOOL: FILL_MASKED(uint8_t, (uint8_t)(value != 0)); break;
    default: break;
  }
}

int lark_masked_fill_(lark_tensor *t, const lark_tensor *mask, double value) {
  const char *op = "masked_fill";
  const lark_tensor *ts[2] = {t, mask};
  static const char *const names[2] = {"the tensor", "the mask"};
  if (check_mask_dtype(op, mask) || lark_check_same_device(op, 2, ts, names)) return lark_error_code();
  /* a mask sharing memory with t (t:masked_fill_(t, 0)) would change under the writes */
  lark_tensor *mc = mask->storage && mask->storage == t->storage ? lark_clone(mask) : lark_tensor_retain((lark_tensor *)mask);
  if (!mc) return lark_error_code();
  lark_tensor *em = lark_expand(mc, t->ndim, t->shape);
  lark_tensor_release(mc);
  if (!em) {
    char a[256], b[256];
    return lark_set_error(LARK_ERR_SHAPE, "%s: the mask of shape %s cannot be broadcast to the tensor's shape %s", op,
                          lark_shape_str(mask->ndim, mask->shape, a, sizeof a),
                          lark_shape_str(t->ndim, t->shape, b, sizeof b));
  }
  lark_device dev = lark_tensor_device(t);
  int rc = 0;
  if (dev.kind != LARK_CPU) {
    const lark_backend *be = lark_backend_for(dev);
    rc = be && be->masked_fill ? be->masked_fill(t, em, value) : lark_backend_missing(op, dev);
    if (!rc) lark_bump_version(t);
  } else {
    cpu_masked_fill(t, em, value);
    lark_bump_version(t);
  }
  lark_tensor_release(em);
  return rc;
}

static lark_tensor *masked_fill_impl(const lark_tensor *t, const lark_tensor *mask, double value) {
  const char *op = "masked_fill";
  const lark_tensor *ts[2] = {t, mask};
  static const char *const names[2] = {"the tensor", "the mask"};
  if (check_mask_dtype(op, mask) || lark_check_same_device(op, 2, ts, names)) return NULL;
  /* out of place, the tensor and the mask broadcast together (as in PyTorch) */
  int nd;
  int64_t shape[LARK_MAX_DIMS];
  if (lark_broadcast_shape(op, t->ndim, t->shape, mask->ndim, mask->shape, &nd, shape)) return NULL;
  lark_device dev = lark_tensor_device(t);
  if (dev.kind != LARK_CPU) {
    const lark_backend *be = lark_backend_for(dev);
    if (!be || !be->masked_fill) {
      lark_backend_missing(op, dev);
      return NULL;
    }
  }
  lark_tensor *out = lark_empty(nd, shape, t->dtype, &dev);
  if (out && (lark_copy_(out, t) || lark_masked_fill_(out, mask, value))) {
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

lark_tensor *lark_masked_fill(const lark_tensor *t, const lark_tensor *mask, double value) {
  lark_tensor *out;
  LARK_NO_GRAD(out = masked_fill_impl(t, mask, value));
  if (out && t->requires_grad) lark_record_masked_fill(out, t, mask);
  return out;
}

/* ---- masked_select and nonzero -------------------------------------------------------------- */

/* How many pieces to cut n units of work into: one below the grain, else a few per thread. */
static int64_t pieces_for(int64_t n, int64_t numel) {
  if (numel <= LARK_PARALLEL_GRAIN || n <= 1) return 1;
  int64_t p = 4 * (int64_t)omp_get_max_threads();
  return p < n ? p : n;
}

/* The elements of t where mask is set, row-major, into a new 1-D tensor. t and mask expanded to
 * one shape (any strides). Two passes: count per piece, then write at the prefix sums. */
static lark_tensor *cpu_masked_select(const lark_tensor *t, const lark_tensor *mask) {
  const lark_tensor *ts[2] = {t, mask};
  lark_iter it;
  lark_iter_init(&it, 2, ts);
  lark_device dev = LARK_DEVICE_CPU;
  if (it.numel == 0) {
    int64_t zero = 0;
    return lark_empty(1, &zero, t->dtype, &dev);
  }
  size_t es = lark_dtype_size(t->dtype);
  int64_t inner = it.shape[it.ndim - 1], rows = it.numel / inner;
  int64_t st = it.stride[0][it.ndim - 1], sm = it.stride[1][it.ndim - 1];
  int64_t np = pieces_for(rows, it.numel);
  int64_t *start = calloc((size_t)np + 1, sizeof *start);
  if (!start) {
    lark_set_error(LARK_ERR_NOMEM, "masked_select: out of memory");
    return NULL;
  }
#pragma omp parallel for if (np > 1)
  for (int64_t p = 0; p < np; p++) {
    int64_t count = 0;
    for (int64_t r = rows * p / np; r < rows * (p + 1) / np; r++) {
      int64_t off[2];
      lark_iter_row(&it, r, off);
      const uint8_t *m = (const uint8_t *)it.data[1] + off[1];
      for (int64_t i = 0; i < inner; i++) count += m[i * sm] != 0;
    }
    start[p + 1] = count;
  }
  for (int64_t p = 0; p < np; p++) start[p + 1] += start[p];
  int64_t total = start[np];
  lark_tensor *out = lark_empty(1, &total, t->dtype, &dev);
  if (out && total) {
    char *dst = lark_data_ptr(out);
#pragma omp parallel for if (np > 1)
    for (int64_t p = 0; p < np; p++) {
      char *d = dst + (size_t)start[p] * es;
      for (int64_t r = rows * p / np; r < rows * (p + 1) / np; r++) {
        int64_t off[2];
        lark_iter_row(&it, r, off);
        const char *s = it.data[0] + (size_t)off[0] * es;
        const uint8_t *m = (const uint8_t *)it.data[1] + off[1];
        for (int64_t i = 0; i < inner; i++)
          if (m[i * sm]) {
            move_elem(d, s + (size_t)(i * st) * es, es);
            d += es;
          }
      }
    }
  }
  free(start);
  return out;
}

lark_tensor *lark_masked_select(const lark_tensor *t, const lark_tensor *mask) {
  const char *op = "masked_select";
  const lark_tensor *ts[2] = {t, mask};
  static const char *const names[2] = {"the tensor", "the mask"};
  if (check_mask_dtype(op, mask) || lark_check_same_device(op, 2, ts, names)) return NULL;
  int nd;
  int64_t shape[LARK_MAX_DIMS];
  if (lark_broadcast_shape(op, t->ndim, t->shape, mask->ndim, mask->shape, &nd, shape)) return NULL;
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = NULL; /* another device's kernels; NULL on the CPU */
  if (dev.kind != LARK_CPU) {
    be = lark_backend_for(dev);
    if (!be || !be->masked_select) {
      lark_backend_missing(op, dev);
      return NULL;
    }
  }
  lark_tensor *et = lark_expand_to(op, t, nd, shape), *em = et ? lark_expand_to(op, mask, nd, shape) : NULL;
  lark_tensor *out = NULL;
  if (em && be) {
    if (be->masked_select(et, em, &out)) out = NULL;
  } else if (em) {
    out = cpu_masked_select(et, em);
  }
  lark_tensor_release(et);
  lark_tensor_release(em);
  return out;
}

/* Whether element i of a contiguous array of dtype dt is non-zero (NaN is non-zero). */
static inline bool nonzero_at(const void *p, lark_dtype dt, int64_t i) {
  switch (dt) {
    case LARK_FLOAT32: return ((const float *)p)[i] != 0;
    case LARK_FLOAT64: return ((const double *)p)[i] != 0;
    case LARK_INT64: return ((const int64_t *)p)[i] != 0;
    default: return ((const uint8_t *)p)[i] != 0;
  }
}

/* (nnz, ndim) int64 coordinates of the non-zero elements of c (contiguous), row-major. Pieces of
 * the flat range are counted, then each piece writes its coordinates from its prefix sum, walking
 * an odometer from its first element. */
static lark_tensor *cpu_nonzero(const lark_tensor *c) {
  int64_t n = lark_numel(c);
  int nd = c->ndim;
  lark_dtype dt = c->dtype;
  const void *p = lark_data_ptr(c);
  int64_t np = pieces_for(n, n);
  int64_t *start = calloc((size_t)np + 1, sizeof *start);
  lark_device dev = LARK_DEVICE_CPU;
  if (!start) {
    lark_set_error(LARK_ERR_NOMEM, "nonzero: out of memory");
    return NULL;
  }
#pragma omp parallel for if (np > 1)
  for (int64_t k = 0; k < np; k++) {
    int64_t count = 0;
    for (int64_t i = n * k / np; i < n * (k + 1) / np; i++) count += nonzero_at(p, dt, i);
    start[k + 1] = count;
  }
  for (int64_t k = 0; k < np; k++) start[k + 1] += start[k];
  int64_t shape[2] = {start[np], nd};
  lark_tensor *out = lark_empty(2, shape, LARK_INT64, &dev);
  if (out && shape[0] && nd) {
    int64_t *dst = lark_data_ptr(out);
#pragma omp parallel for if (np > 1)
    for (int64_t k = 0; k < np; k++) {
      int64_t lo = n * k / np, hi = n * (k + 1) / np, coord[LARK_MAX_DIMS], rest = lo;
      for (int d = nd - 1; d >= 0; d--) {
        coord[d] = rest % c->shape[d];
        rest /= c->shape[d];
      }
      int64_t *o = dst + start[k] * nd;
      for (int64_t i = lo; i < hi; i++) {
        if (nonzero_at(p, dt, i)) {
          memcpy(o, coord, sizeof(int64_t) * (size_t)nd);
          o += nd;
        }
        for (int d = nd - 1; d >= 0 && ++coord[d] == c->shape[d]; d--) coord[d] = 0;
      }
    }
  }
  free(start);
  return out;
}

lark_tensor *lark_nonzero(const lark_tensor *t) {
  lark_device dev = lark_tensor_device(t);
  if (dev.kind != LARK_CPU) {
    const lark_backend *be = lark_backend_for(dev);
    lark_tensor *out = NULL;
    if (!be || !be->nonzero) lark_backend_missing("nonzero", dev);
    else if (be->nonzero(t, &out)) out = NULL;
    return out;
  }
  lark_tensor *c = lark_contiguous(t);
  lark_tensor *out = c ? cpu_nonzero(c) : NULL;
  lark_tensor_release(c);
  return out;
}
