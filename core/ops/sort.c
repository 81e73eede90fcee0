/* sort.c: sort, topk and cumsum along one dim.
 *
 * Order: NaN counts as larger than every number (as in PyTorch), so ascending sorts put NaNs last
 * and descending sorts put them first. Ties keep their original order (a stable sort), which makes
 * the order a strict total order on (value, position): "a comes before b" when its value comes
 * first, or the values tie and a's position is smaller. topk(k) is by definition the first k of
 * that sort; it finds them with a selection (O(n)) and sorts only those k. The full sort is the
 * reference the selection is tested against.
 *
 * The kernels here are the CPU's (static). Tensors on another device go, after the same checks, to
 * the backend's topk and cumsum fields (contracts in backend.h; sort is topk with k = n), and to
 * lark_backend_missing() when it lacks them. Lines along dim are independent: threads take whole
 * lines, so results never depend on the number of threads. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "grad.h"


/* A 0-d tensor as a 1-D view of one element; else t retained. */
static lark_tensor *at_least_1d(const lark_tensor *t) {
  if (t->ndim > 0) return lark_tensor_retain((lark_tensor *)t);
  int64_t one = 1;
  return lark_view(t, 1, &one);
}

/* ---- the order, as unsigned keys ------------------------------------------------------------ */

/* Every value becomes a 64-bit unsigned key whose integer order is the sort order: floats by their
 * bits with the sign folded (-0 as +0, every NaN the largest key), int64 with its sign bit flipped,
 * uint8 and bool as they are; a descending sort inverts the keys. One comparison then serves every
 * dtype and both directions, and (key, position) is a strict total order: ties go by position. */
typedef struct {
  uint64_t key;
  int64_t pos; /* position along the dim */
} sort_item;

static inline uint64_t key_of_double(double x) {
  if (x != x) return UINT64_MAX;
  if (x == 0) x = 0; /* -0 ties with +0 */
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return (u >> 63) ? ~u : u | (UINT64_C(1) << 63);
}

static inline bool item_before(const sort_item *a, const sort_item *b) {
  return a->key < b->key || (a->key == b->key && a->pos < b->pos);
}

/* Keys of a line of n elements (stride in elements) of dtype dt, positions 0..n-1. */
static void load_line(sort_item *a, const void *line, lark_dtype dt, int64_t n, int64_t stride, bool desc) {
  uint64_t flip = desc ? UINT64_MAX : 0;
  switch (dt) {
    case LARK_FLOAT32:
      for (int64_t i = 0; i < n; i++) a[i] = (sort_item){key_of_double(((const float *)line)[i * stride]) ^ flip, i};
      break;
    case LARK_FLOAT64:
      for (int64_t i = 0; i < n; i++) a[i] = (sort_item){key_of_double(((const double *)line)[i * stride]) ^ flip, i};
      break;
    case LARK_INT64:
      for (int64_t i = 0; i < n; i++)
        a[i] = (sort_item){((uint64_t)((const int64_t *)line)[i * stride] ^ (UINT64_C(1) << 63)) ^ flip, i};
      break;
    default: /* uint8, bool */
      for (int64_t i = 0; i < n; i++) a[i] = (sort_item){((const uint8_t *)line)[i * stride] ^ flip, i};
      break;
  }
}

/* Merge sort of a[0..n) by item_before; tmp holds n items. Insertion-sorted runs of 16, then
 * bottom-up merges. */
static void merge_sort(sort_item *a, sort_item *tmp, int64_t n) {
  const int64_t run = 16;
  for (int64_t s = 0; s < n; s += run) {
    int64_t e = s + run < n ? s + run : n;
    for (int64_t i = s + 1; i < e; i++) {
      sort_item x = a[i];
      int64_t j = i;
      while (j > s && item_before(&x, &a[j - 1])) {
        a[j] = a[j - 1];
        j--;
      }
      a[j] = x;
    }
  }
  sort_item *src = a, *dst = tmp;
  for (int64_t w = run; w < n; w *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * w) {
      int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      int64_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) dst[k++] = item_before(&src[j], &src[i]) ? src[j++] : src[i++];
      while (i < mid) dst[k++] = src[i++];
      while (j < hi) dst[k++] = src[j++];
    }
    sort_item *sw = src;
    src = dst;
    dst = sw;
  }
  if (src != a) memcpy(a, src, sizeof *a * (size_t)n);
}

/* Moves the k first items (by item_before) into a[0..k), in no particular order: quickselect with
 * a median-of-3 pivot, falling back to the merge sort if the partitions keep coming out lopsided
 * (so the worst case stays n log n). 0 < k < n; tmp holds n items. */
static void select_first(sort_item *a, sort_item *tmp, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1, target = k - 1, budget = 128;
  sort_item x;
  while (lo < hi) {
    if (budget-- == 0) {
      merge_sort(a + lo, tmp, hi - lo + 1);
      return;
    }
    int64_t mid = lo + (hi - lo) / 2;
    if (item_before(&a[mid], &a[lo])) x = a[mid], a[mid] = a[lo], a[lo] = x;
    if (item_before(&a[hi], &a[lo])) x = a[hi], a[hi] = a[lo], a[lo] = x;
    if (item_before(&a[mid], &a[hi])) x = a[mid], a[mid] = a[hi], a[hi] = x;
    sort_item pivot = a[hi]; /* the median of the three */
    int64_t store = lo;
    for (int64_t i = lo; i < hi; i++)
      if (item_before(&a[i], &pivot)) x = a[i], a[i] = a[store], a[store++] = x;
    a[hi] = a[store];
    a[store] = pivot;
    if (store == target) return;
    if (store < target) lo = store + 1;
    else hi = store - 1;
  }
}

static int by_position(const void *x, const void *y) {
  int64_t a = ((const sort_item *)x)->pos, b = ((const sort_item *)y)->pos;
  return (a > b) - (a < b);
}

/* values[j] = line[a[j].pos] for j < k (element strides ostride and stride), elements of es bytes. */
static void store_values(void *values, int64_t ostride, const void *line, int64_t stride, const sort_item *a,
                         int64_t k, size_t es) {
  switch (es) {
    case 8:
      for (int64_t j = 0; j < k; j++) ((uint64_t *)values)[j * ostride] = ((const uint64_t *)line)[a[j].pos * stride];
      break;
    case 4:
      for (int64_t j = 0; j < k; j++) ((uint32_t *)values)[j * ostride] = ((const uint32_t *)line)[a[j].pos * stride];
      break;
    default:
      for (int64_t j = 0; j < k; j++) ((uint8_t *)values)[j * ostride] = ((const uint8_t *)line)[a[j].pos * stride];
      break;
  }
}

/* values/indices (contiguous, t's shape with k along dim) = the k first of each line of t (any
 * strides, >= 1 dim) in the order (sorted), or in their order along the line (!sorted). k == n is
 * the full sort: one merge sort per line, the reference the selection path is tested against. */
static int cpu_topk(const lark_tensor *t, int dim, int64_t k, bool desc, bool sorted, lark_tensor *values,
                    lark_tensor *indices) {
  int nd = t->ndim;
  int64_t n = t->shape[dim], numel = lark_numel(t);
  if (numel == 0 || k == 0) return 0;
  int64_t lines = numel / n, sdim = t->stride[dim], odim = values->stride[dim];
  size_t es = lark_dtype_size(t->dtype);
  int nt = numel > LARK_PARALLEL_GRAIN / 8 && lines > 1 ? omp_get_max_threads() : 1;
  if (nt > lines) nt = (int)lines;
  sort_item *buf = malloc(sizeof *buf * 2 * (size_t)n * (size_t)nt);
  if (!buf) return lark_set_error(LARK_ERR_NOMEM, "sort: out of memory for %lld elements", (long long)n);
  const char *src = lark_data_ptr(t);
  char *vo = lark_data_ptr(values);
  int64_t *io = lark_data_ptr(indices);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < lines; r++) {
    sort_item *a = buf + 2 * n * omp_get_thread_num(), *tmp = a + n;
    const char *line = src + (size_t)lark_unravel(nd, t->shape, t->stride, dim, -1, r) * es;
    load_line(a, line, t->dtype, n, sdim, desc);
    if (k < n) select_first(a, tmp, n, k);
    if (sorted) merge_sort(a, tmp, k);
    else qsort(a, (size_t)k, sizeof *a, by_position);
    int64_t ob = lark_unravel(nd, values->shape, values->stride, dim, -1, r);
    store_values(vo + (size_t)ob * es, odim, line, sdim, a, k, es);
    for (int64_t j = 0; j < k; j++) io[ob + j * odim] = a[j].pos;
  }
  free(buf);
  return 0;
}

/* The front of sort and topk: checks, allocates (t's shape with k along dim) and runs. */
static int sort_front(const char *op, const lark_tensor *t, int64_t k, int dim, bool desc, bool sorted,
                      lark_tensor **values, lark_tensor **indices) {
  if (!values || !indices) return lark_set_error(LARK_ERR_ARG, "%s: values and indices must not be NULL", op);
  *values = *indices = NULL;
  if ((dim = lark_wrap_dim(op, dim, t->ndim)) < 0) return lark_error_code();
  int64_t n = t->ndim ? t->shape[dim] : 1;
  if (k < 0 || k > n)
    return lark_set_error(LARK_ERR_ARG, "%s: k = %lld is out of range for dim %d of size %lld (expected 0..%lld)", op,
                          (long long)k, dim + 1, (long long)n, (long long)n);
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = NULL; /* another device's kernels; NULL on the CPU */
  if (dev.kind != LARK_CPU) {
    be = lark_backend_for(dev);
    if (!be || !be->topk) return lark_backend_missing(op, dev);
  }
  int64_t shape[LARK_MAX_DIMS];
  int nd = t->ndim;
  memcpy(shape, t->shape, sizeof(int64_t) * (size_t)nd);
  if (nd) shape[dim] = k;
  else if (k == 0) shape[nd++] = 0; /* topk(0) of a 0-d tensor: an empty 1-D result */
  lark_tensor *v = lark_empty(nd, shape, t->dtype, &dev), *ix = v ? lark_empty(nd, shape, LARK_INT64, &dev) : NULL;
  lark_tensor *t1 = ix ? at_least_1d(t) : NULL, *v1 = t1 ? at_least_1d(v) : NULL, *i1 = v1 ? at_least_1d(ix) : NULL;
  int rc = !i1 ? lark_error_code()
           : !be ? cpu_topk(t1, dim, k, desc, sorted, v1, i1)
           : lark_numel(t1) == 0 || k == 0 ? 0 /* nothing to sort or pick */
           : be->topk(t1, dim, k, desc, sorted, v1, i1);
  lark_tensor_release(t1);
  lark_tensor_release(v1);
  lark_tensor_release(i1);
  if (rc) {
    lark_tensor_release(v);
    lark_tensor_release(ix);
    return rc;
  }
  *values = v;
  *indices = ix;
  return 0;
}

static int sort_impl(const lark_tensor *t, int dim, bool descending, lark_tensor **values, lark_tensor **indices) {
  int d = lark_wrap_dim("sort", dim, t->ndim);
  if (d < 0) return lark_error_code();
  return sort_front("sort", t, t->ndim ? t->shape[d] : 1, d, descending, true, values, indices);
}

int lark_sort(const lark_tensor *t, int dim, bool descending, lark_tensor **values, lark_tensor **indices) {
  bool want = t->requires_grad && lark_grad_enabled();
  lark_tensor *own = NULL;
  int rc;
  LARK_NO_GRAD(rc = sort_impl(t, dim, descending, values, indices ? indices : (want ? &own : NULL)));
  if (!rc && want && values && *values) {
    if (t->ndim == 0) lark_record_view(LARK_VIEW_COPY, *values, t, 0, NULL);
    else lark_record_pick("sort", *values, t, lark_wrap_dim("sort", dim, t->ndim), false, indices ? *indices : own);
  }
  lark_tensor_release(own);
  return rc;
}

static int topk_impl(const lark_tensor *t, int64_t k, int dim, bool largest, bool sorted, lark_tensor **values,
              lark_tensor **indices) {
  return sort_front("topk", t, k, dim, largest, sorted, values, indices);
}

int lark_topk(const lark_tensor *t, int64_t k, int dim, bool largest, bool sorted, lark_tensor **values,
              lark_tensor **indices) {
  bool want = t->requires_grad && lark_grad_enabled();
  lark_tensor *own = NULL;
  int rc;
  LARK_NO_GRAD(rc = topk_impl(t, k, dim, largest, sorted, values, indices ? indices : (want ? &own : NULL)));
  if (!rc && want && values && *values) {
    if (t->ndim == 0) lark_record_view(LARK_VIEW_COPY, *values, t, 0, NULL);
    else lark_record_pick("topk", *values, t, lark_wrap_dim("topk", dim, t->ndim), false, indices ? *indices : own);
  }
  lark_tensor_release(own);
  return rc;
}

/* ---- cumsum --------------------------------------------------------------------------------- */

#define CUMSUM_TILE 64

/* out (contiguous, TO) = running sums of t (any strides, TI) along dim, accumulated in TA.
 * Lines are independent; for dim < last, lines next to each other in the last dim go together
 * (a tile) so the inner loop walks memory contiguously. */
#define CUMSUM_LOOP(TI, TA, TO, ADD)                                                                 \
  do {                                                                                              \
    const TI *sp = (const TI *)lark_data_ptr(t);                                                    \
    TO *op = (TO *)lark_data_ptr(out);                                                              \
    _Pragma("omp parallel for if (numel > LARK_PARALLEL_GRAIN)") for (int64_t w = 0; w < items; w++) { \
      int64_t o = w / ntiles, c0 = (w % ntiles) * tile, c1 = c0 + tile < width ? c0 + tile : width;  \
      int64_t sb = lark_unravel(nd, t->shape, t->stride, dim, cd, o);                                    \
      int64_t ob = lark_unravel(nd, out->shape, out->stride, dim, cd, o);                                \
      TA acc[CUMSUM_TILE] = {0};                                                                    \
      for (int64_t j = 0; j < n; j++)                                                               \
        for (int64_t c = c0; c < c1; c++) {                                                         \
          acc[c - c0] = ADD(acc[c - c0], (TA)sp[sb + j * ss_dim + c * ss_cd]);                      \
          op[ob + j * os_dim + c * os_cd] = (TO)acc[c - c0];                                        \
        }                                                                                           \
    }                                                                                               \
  } while (0)

#define CADD(a, b) ((a) + (b))
#define CADD_WRAP(a, b) ((int64_t)((uint64_t)(a) + (uint64_t)(b)))

static void cpu_cumsum(lark_tensor *out, const lark_tensor *t, int dim) {
  int64_t numel = lark_numel(t);
  if (numel == 0) return;
  int nd = t->ndim;
  int cd = dim == nd - 1 ? -1 : nd - 1;
  int64_t n = t->shape[dim], width = cd < 0 ? 1 : t->shape[cd], tile = cd < 0 ? 1 : CUMSUM_TILE;
  int64_t ntiles = (width + tile - 1) / tile, items = numel / (n * width) * ntiles;
  int64_t ss_dim = t->stride[dim], os_dim = out->stride[dim];
  int64_t ss_cd = cd < 0 ? 0 : t->stride[cd], os_cd = cd < 0 ? 0 : out->stride[cd];
  switch (t->dtype) {
    /* float32 sums in float64, as PyTorch's CPU kernel does, and rounds each running sum once */
    case LARK_FLOAT32: CUMSUM_LOOP(float, double, float, CADD); break;
    case LARK_FLOAT64: CUMSUM_LOOP(double, double, double, CADD); break;
    case LARK_INT64: CUMSUM_LOOP(int64_t, int64_t, int64_t, CADD_WRAP); break;
    case LARK_UINT8: case LARK_BOOL: CUMSUM_LOOP(uint8_t, int64_t, int64_t, CADD_WRAP); break;
    default: break;
  }
}

static lark_tensor *cumsum_impl(const lark_tensor *t, int dim) {
  if ((dim = lark_wrap_dim("cumsum", dim, t->ndim)) < 0) return NULL;
  lark_device dev = lark_tensor_device(t);
  const lark_backend *be = NULL; /* another device's kernels; NULL on the CPU */
  if (dev.kind != LARK_CPU) {
    be = lark_backend_for(dev);
    if (!be || !be->cumsum) {
      lark_backend_missing("cumsum", dev);
      return NULL;
    }
  }
  /* integer and bool sums would overflow their dtype quickly: they give int64, as in PyTorch */
  lark_dtype odt = lark_dtype_is_float(t->dtype) ? t->dtype : LARK_INT64;
  lark_tensor *out = lark_empty(t->ndim, t->shape, odt, &dev);
  lark_tensor *t1 = out ? at_least_1d(t) : NULL, *o1 = t1 ? at_least_1d(out) : NULL;
  if (o1 && be) {
    if (lark_numel(t1) > 0 && be->cumsum(o1, t1, dim)) {
      lark_tensor_release(out);
      out = NULL;
    }
  } else if (o1) cpu_cumsum(o1, t1, dim);
  else {
    lark_tensor_release(out);
    out = NULL;
  }
  lark_tensor_release(t1);
  lark_tensor_release(o1);
  return out;
}

lark_tensor *lark_cumsum(const lark_tensor *t, int dim) {
  lark_tensor *out;
  LARK_NO_GRAD(out = cumsum_impl(t, dim));
  if (out && t->requires_grad) lark_record_cumsum(out, t, lark_wrap_dim("cumsum", dim, t->ndim));
  return out;
}
