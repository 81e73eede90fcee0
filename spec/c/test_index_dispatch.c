/* test_index_dispatch.c: the device half of index.c and sort.c, run without a GPU.
 *
 * Those front functions send tensors that are not on the CPU to their backend's index_check,
 * gather, scatter_add, masked_fill, masked_select, nonzero, topk and cumsum fields (backend.h) after
 * the CPU's checks, with the views the CUDA kernels (cuda/index.cu, cuda/sort.cu) rely on:
 * index_select's index laid along dim and expanded, scatter_add's copies of aliased operands, 0-d
 * tensors seen as 1-D. A GPU runs the real kernels in spec/tensor_gpu_spec.lua; here a stand-in
 * backend, registered for the CUDA device kind, keeps its memory on the host (the CPU backend's
 * allocator and copies) and implements each field as the plainest loop that follows its contract
 * in backend.h word for word. Every result is compared with the same op on the CPU, so what is
 * checked is the front functions' side: the views and arguments the kernels get, that errors
 * (out-of-range indices above all) come back with the CPU's messages before anything is written,
 * that gradients flow through the device ops, and that a missing field reads "not implemented for
 * cuda:0" before anything is allocated.
 *
 * With a CUDA device present the same comparisons run against the real backend instead (no stand-in
 * is registered; the checks that count stand-in calls or take fields away are left out), which also
 * tests the kernels from C, the device's index check included. */
#include "check.h"

#include "autograd.h"
#include "backend.h"

static const lark_device DEV = {LARK_CUDA, 0};

/* ---- the stand-in backend ------------------------------------------------------------------- */

enum { C_CHECK, C_GATHER, C_SCATTER, C_FILL, C_SELECT, C_NONZERO, C_TOPK, C_CUMSUM, C_N };
static int calls[C_N];
static lark_backend fake;
static bool real; /* a CUDA device is present: its backend runs, not the stand-in */

static bool is_float(lark_dtype dt) { return dt == LARK_FLOAT32 || dt == LARK_FLOAT64; }

/* The element at coordinate c of any view. */
static char *elem(const lark_tensor *t, const int64_t *c) {
  return (char *)t->storage->data + offset_of(t, c) * (int64_t)lark_dtype_size(t->dtype);
}
static int64_t get_i64(const lark_tensor *t, const int64_t *c) {
  int64_t v;
  memcpy(&v, elem(t, c), sizeof v);
  return v;
}

static int fake_index_check(const lark_tensor *index, int64_t size, int64_t *bad, int64_t *bad_value) {
  calls[C_CHECK]++;
  *bad = -1;
  *bad_value = 0;
  int64_t c[LARK_MAX_DIMS] = {0}, i = 0;
  if (lark_numel(index) == 0) return 0;
  do {
    int64_t v = get_i64(index, c);
    if (v < 0 || v >= size) {
      *bad = i;
      *bad_value = v;
      return 0;
    }
    i++;
  } while (next_coord(index->ndim, index->shape, c));
  return 0;
}

static int fake_gather(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index) {
  calls[C_GATHER]++;
  CHECK(lark_is_contiguous(out) && out->ndim == t->ndim && index->ndim == out->ndim, "gather: the contract's layout");
  CHECK(!memcmp(index->shape, out->shape, sizeof(int64_t) * (size_t)out->ndim), "gather: index has out's shape");
  if (lark_numel(out) == 0) return 0;
  int64_t c[LARK_MAX_DIMS] = {0}, c2[LARK_MAX_DIMS];
  do {
    memcpy(c2, c, sizeof c2);
    c2[dim] = get_i64(index, c);
    memcpy(elem(out, c), elem(t, c2), lark_dtype_size(t->dtype));
  } while (next_coord(out->ndim, out->shape, c));
  return 0;
}

static int fake_scatter_add(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src) {
  calls[C_SCATTER]++;
  CHECK(src->dtype == t->dtype && src->storage != t->storage && index->storage != t->storage, "scatter_add: contract");
  int64_t c[LARK_MAX_DIMS] = {0}, c2[LARK_MAX_DIMS];
  if (lark_numel(index) == 0) return 0;
  /* row-major over the index: each destination's adds come in increasing position along dim */
  do {
    memcpy(c2, c, sizeof c2);
    c2[dim] = get_i64(index, c);
    char *d = elem(t, c2);
    const char *s = elem(src, c);
    switch (t->dtype) {
      case LARK_FLOAT32: *(float *)d = *(float *)d + *(const float *)s; break;
      case LARK_FLOAT64: *(double *)d = *(double *)d + *(const double *)s; break;
      case LARK_INT64: *(int64_t *)d = (int64_t)((uint64_t) * (int64_t *)d + (uint64_t) * (const int64_t *)s); break;
      case LARK_UINT8: *(uint8_t *)d = (uint8_t)(*(uint8_t *)d + *(const uint8_t *)s); break;
      default: *(uint8_t *)d = (uint8_t)(*(uint8_t *)d | *(const uint8_t *)s); break;
    }
  } while (next_coord(index->ndim, index->shape, c));
  return 0;
}

/* index.c's conversion of a fill value to an integer */
static int64_t f2i(double x) {
  if (x != x) return 0;
  if (x >= 9.2233720368547748e18) return INT64_MAX;
  if (x <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)x;
}

static int fake_masked_fill(lark_tensor *t, const lark_tensor *mask, double value) {
  calls[C_FILL]++;
  CHECK(mask->ndim == t->ndim && mask->storage != t->storage, "masked_fill: contract");
  int64_t c[LARK_MAX_DIMS] = {0};
  if (lark_numel(t) == 0) return 0;
  do {
    if (!*(const uint8_t *)elem(mask, c)) continue;
    char *d = elem(t, c);
    switch (t->dtype) {
      case LARK_FLOAT32: *(float *)d = (float)value; break;
      case LARK_FLOAT64: *(double *)d = value; break;
      case LARK_INT64: *(int64_t *)d = f2i(value); break;
      case LARK_UINT8: *(uint8_t *)d = (uint8_t)f2i(value); break;
      default: *(uint8_t *)d = value != 0; break;
    }
  } while (next_coord(t->ndim, t->shape, c));
  return 0;
}

static int fake_masked_select(const lark_tensor *t, const lark_tensor *mask, lark_tensor **out) {
  calls[C_SELECT]++;
  int64_t c[LARK_MAX_DIMS] = {0}, n = 0;
  bool any = lark_numel(t) > 0;
  if (any) do n += *(const uint8_t *)elem(mask, c) != 0;
    while (next_coord(t->ndim, t->shape, c));
  *out = lark_empty(1, &n, t->dtype, &DEV);
  if (!*out) return lark_error_code();
  size_t es = lark_dtype_size(t->dtype);
  char *o = lark_data_ptr(*out);
  memset(c, 0, sizeof c);
  if (any) do
      if (*(const uint8_t *)elem(mask, c)) {
        memcpy(o, elem(t, c), es);
        o += es;
      }
    while (next_coord(t->ndim, t->shape, c));
  return 0;
}

static int fake_nonzero(const lark_tensor *t, lark_tensor **out) {
  calls[C_NONZERO]++;
  int64_t c[LARK_MAX_DIMS] = {0}, n = 0, numel = lark_numel(t);
  if (numel) do n += load_as(t->dtype, t->storage->data, offset_of(t, c)) != 0;
    while (next_coord(t->ndim, t->shape, c));
  int64_t shape[2] = {n, t->ndim};
  *out = lark_empty(2, shape, LARK_INT64, &DEV);
  if (!*out) return lark_error_code();
  int64_t *o = lark_data_ptr(*out);
  memset(c, 0, sizeof c);
  if (numel) do
      if (load_as(t->dtype, t->storage->data, offset_of(t, c)) != 0)
        for (int d = 0; d < t->ndim; d++) *o++ = c[d];
    while (next_coord(t->ndim, t->shape, c));
  return 0;
}

/* sort.c's order on (value, position): NaN above every number, ties by position. */
typedef struct {
  double v;
  int64_t pos;
} item;
static bool sort_desc;
static int by_order(const void *x, const void *y) {
  const item *a = x, *b = y;
  bool an = a->v != a->v, bn = b->v != b->v;
  int c = an && bn ? 0 : an ? 1 : bn ? -1 : a->v < b->v ? -1 : a->v > b->v ? 1 : 0;
  if (sort_desc) c = -c;
  return c ? c : (a->pos > b->pos) - (a->pos < b->pos);
}
static int by_pos(const void *x, const void *y) {
  const item *a = x, *b = y;
  return (a->pos > b->pos) - (a->pos < b->pos);
}

static int fake_topk(const lark_tensor *t, int dim, int64_t k, bool desc, bool sorted, lark_tensor *values,
                     lark_tensor *indices) {
  calls[C_TOPK]++;
  CHECK(t->ndim >= 1 && lark_numel(t) > 0 && k > 0 && k <= t->shape[dim], "topk: contract");
  CHECK(lark_is_contiguous(values) && lark_is_contiguous(indices) && values->shape[dim] == k, "topk: outputs");
  int64_t n = t->shape[dim], lshape[LARK_MAX_DIMS], c[LARK_MAX_DIMS] = {0};
  memcpy(lshape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  lshape[dim] = 1;
  item *a = malloc(sizeof *a * (size_t)n);
  size_t es = lark_dtype_size(t->dtype);
  sort_desc = desc;
  do {
    int64_t cc[LARK_MAX_DIMS];
    memcpy(cc, c, sizeof cc);
    for (int64_t i = 0; i < n; i++) {
      cc[dim] = i;
      a[i] = (item){load_as(t->dtype, t->storage->data, offset_of(t, cc)), i};
    }
    qsort(a, (size_t)n, sizeof *a, by_order);
    if (!sorted) qsort(a, (size_t)k, sizeof *a, by_pos);
    for (int64_t j = 0; j < k; j++) {
      int64_t co[LARK_MAX_DIMS];
      memcpy(co, c, sizeof co);
      co[dim] = a[j].pos;
      cc[dim] = j;
      memcpy(elem(values, cc), elem(t, co), es);
      *(int64_t *)elem(indices, cc) = a[j].pos;
    }
  } while (next_coord(t->ndim, lshape, c));
  free(a);
  return 0;
}

static int fake_cumsum(lark_tensor *out, const lark_tensor *t, int dim) {
  calls[C_CUMSUM]++;
  CHECK(t->ndim >= 1 && lark_numel(t) > 0 && lark_is_contiguous(out), "cumsum: contract");
  int64_t lshape[LARK_MAX_DIMS], c[LARK_MAX_DIMS] = {0};
  memcpy(lshape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  lshape[dim] = 1;
  do {
    double acc = 0;
    int64_t iacc = 0, cc[LARK_MAX_DIMS];
    memcpy(cc, c, sizeof cc);
    for (int64_t j = 0; j < t->shape[dim]; j++) {
      cc[dim] = j;
      double x = load_as(t->dtype, t->storage->data, offset_of(t, cc));
      if (is_float(t->dtype)) {
        acc += x;
        store_as(out->dtype, out->storage->data, offset_of(out, cc), acc);
      } else {
        iacc += (int64_t)x;
        *(int64_t *)elem(out, cc) = iacc;
      }
    }
  } while (next_coord(t->ndim, lshape, c));
  return 0;
}

static void install(void) {
  fake = lark_cpu_backend; /* host memory, and the CPU's copy, fill, elementwise and reduce kernels */
  fake.name = "fake cuda";
  fake.index_check = fake_index_check;
  fake.gather = fake_gather;
  fake.scatter_add = fake_scatter_add;
  fake.masked_fill = fake_masked_fill;
  fake.masked_select = fake_masked_select;
  fake.nonzero = fake_nonzero;
  fake.topk = fake_topk;
  fake.cumsum = fake_cumsum;
  fake.reduce = stand_in_reduce;
  lark_backend_register(LARK_CUDA, &fake);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static lark_tensor *to_dev(const lark_tensor *t) { return lark_to(t, t->dtype, &DEV); }

/* calls[k] grew by more than min since before (only the stand-in counts). */
#define CHECK_CALLS(now, before, min, what) CHECK(real || (now) > (before) + (min), "%s went through the backend (%d calls)", what, (now) - (before))

/* A CPU tensor of shape with values of dt: floats uniform in [-2, 2), int64 in [-5, 5], uint8 in
 * [0, 9], bools; ties are common in the integers. */
static lark_tensor *sample(int nd, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  for (int64_t i = 0, n = lark_numel(t); i < n; i++)
    data_set(t, i, is_float(dt) ? 4 * rand_unit() - 2 : dt == LARK_INT64 ? (double)(rand_int(11) - 5)
                                                   : dt == LARK_UINT8 ? (double)rand_int(10) : (double)rand_int(2));
  return t;
}

/* An int64 CPU tensor of shape with values in [lo, hi). */
static lark_tensor *indices(int nd, const int64_t *shape, int64_t lo, int64_t hi) {
  lark_tensor *t = lark_empty(nd, shape, LARK_INT64, NULL);
  for (int64_t i = 0, n = lark_numel(t); i < n; i++) data_set(t, i, (double)(lo + rand_int(hi - lo)));
  return t;
}

/* The view t is read through: 0 itself, 1 first and last dims swapped (when >= 2 dims). */
static lark_tensor *view_of(const lark_tensor *t, int kind) {
  if (kind == 1 && t->ndim >= 2) return lark_transpose(t, 0, t->ndim - 1);
  return kind == 0 ? lark_tensor_retain((lark_tensor *)t) : NULL;
}

static const lark_dtype DTS[] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64, LARK_UINT8, LARK_BOOL};
#define NDTS (sizeof DTS / sizeof DTS[0])
static const int64_t SHAPES[][4] = {{0}, {1, 5}, {2, 4, 6}, {3, 3, 4, 5}, {2, 3, 0}};
#define NSHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* ---- index_select, gather, scatter_add -------------------------------------------------------- */

static void test_pick(void) {
  int before = calls[C_GATHER];
  for (size_t si = 0; si < NSHAPES; si++) {
    int nd = (int)SHAPES[si][0];
    const int64_t *shape = SHAPES[si] + 1;
    for (size_t di = 0; di < NDTS; di++) {
      lark_tensor *c = sample(nd, shape, DTS[di]), *g = to_dev(c);
      for (int vk = 0; vk < 2; vk++) {
        lark_tensor *cv = view_of(c, vk), *gv = view_of(g, vk);
        if (!cv) continue;
        for (int dim = 0; dim < (nd ? nd : 1); dim++) {
          int64_t size = nd ? cv->shape[dim] : 1;
          if (size == 0) continue;
          char what[128];
          /* index_select: 0, 1 and 7 picks, repeats included */
          for (int64_t nidx = 0; nidx <= 7; nidx += nidx ? 6 : 1) {
            if (nd == 0 && nidx != 1) continue; /* a 0-d tensor takes exactly one index */
            lark_tensor *ic = indices(1, &nidx, 0, size), *ig = to_dev(ic);
            snprintf(what, sizeof what, "index_select %s shape %zu view %d dim %d picks %lld", lark_dtype_name(DTS[di]),
                     si, vk, dim, (long long)nidx);
            lark_tensor *w = lark_index_select(cv, dim, ic), *r = lark_index_select(gv, dim, ig);
            expect_on_device(what, r, w, 0);
            lark_tensor_release(w), lark_tensor_release(r), lark_tensor_release(ic), lark_tensor_release(ig);
          }
          /* gather: an index narrower than t outside dim, longer along it, read transposed */
          int64_t ishape[LARK_MAX_DIMS];
          for (int d = 0; d < nd; d++) ishape[d] = d == dim ? 4 : (cv->shape[d] > 1 ? cv->shape[d] - 1 : cv->shape[d]);
          lark_tensor *ic = indices(nd, ishape, 0, size), *ig = to_dev(ic);
          for (int ik = 0; ik < 2 && nd; ik++) {
            /* ik 1: the same index values stored transposed (a non-contiguous index of the same shape) */
            lark_tensor *ict = ik ? lark_transpose(ic, 0, nd - 1) : NULL, *igt = ik ? lark_transpose(ig, 0, nd - 1) : NULL;
            lark_tensor *icc = ik ? lark_contiguous(ict) : NULL, *igc = ik ? lark_contiguous(igt) : NULL;
            lark_tensor *icv = ik ? lark_transpose(icc, 0, nd - 1) : lark_tensor_retain(ic);
            lark_tensor *igv = ik ? lark_transpose(igc, 0, nd - 1) : lark_tensor_retain(ig);
            snprintf(what, sizeof what, "gather %s shape %zu view %d dim %d index layout %d", lark_dtype_name(DTS[di]),
                     si, vk, dim, ik);
            lark_tensor *w = lark_gather(cv, dim, icv), *r = lark_gather(gv, dim, igv);
            expect_on_device(what, r, w, 0);
            lark_tensor *tensors[] = {w, r, ict, igt, icc, igc, icv, igv};
            for (size_t j = 0; j < sizeof tensors / sizeof tensors[0]; j++) lark_tensor_release(tensors[j]);
          }
          lark_tensor_release(ic), lark_tensor_release(ig);
        }
        lark_tensor_release(cv), lark_tensor_release(gv);
      }
      lark_tensor_release(c), lark_tensor_release(g);
    }
  }
  /* a gather through a transposed (non-contiguous) index of a square tensor */
  int64_t sq[2] = {5, 5};
  lark_tensor *c = sample(2, sq, LARK_FLOAT32), *g = to_dev(c);
  lark_tensor *ic = indices(2, sq, 0, 5), *ig = to_dev(ic);
  lark_tensor *ict = lark_transpose(ic, 0, 1), *igt = lark_transpose(ig, 0, 1);
  lark_tensor *w = lark_gather(c, 1, ict), *r = lark_gather(g, 1, igt);
  expect_on_device("gather with a transposed index", r, w, 0);
  lark_tensor_release(w), lark_tensor_release(r);
  /* 0-d: index_select and gather of a scalar */
  lark_tensor *s = lark_scalar(2.5, LARK_FLOAT64, NULL), *sg = to_dev(s);
  lark_tensor *z = lark_zeros(0, NULL, LARK_INT64, NULL), *zg = to_dev(z);
  w = lark_index_select(s, 0, z), r = lark_index_select(sg, 0, zg);
  expect_on_device("index_select of a 0-d tensor", r, w, 0);
  lark_tensor_release(w), lark_tensor_release(r);
  w = lark_gather(s, 0, z), r = lark_gather(sg, 0, zg);
  expect_on_device("gather of a 0-d tensor", r, w, 0);
  lark_tensor_release(w), lark_tensor_release(r);
  /* out-of-range indices: the CPU's message, found on the device, nothing allocated */
  int64_t three = 3;
  lark_tensor *bad = lark_empty(1, &three, LARK_INT64, NULL);
  data_set(bad, 0, 1), data_set(bad, 1, 5), data_set(bad, 2, -1);
  lark_tensor *badg = to_dev(bad);
  int64_t live = lark_bytes_allocated(LARK_CUDA);
  CHECK(!lark_index_select(g, 1, badg) && error_has("index_select: index 5 is out of range for dim 2 of size 5"),
        "index_select with a bad index");
  CHECK(lark_bytes_allocated(LARK_CUDA) == live, "nothing allocated for a bad index");
  lark_tensor *bad2 = lark_view(badg, 2, (int64_t[]){3, 1});
  CHECK(!lark_gather(g, 0, bad2) && error_has("gather: index 5 is out of range for dim 1 of size 5"), "gather, bad index");
  lark_tensor *cpu_bad2 = lark_view(bad, 2, (int64_t[]){3, 1});
  CHECK(!lark_gather(c, 0, cpu_bad2) && error_has("gather: index 5 is out of range for dim 1 of size 5"),
        "gather, bad index, the CPU's message");
  lark_tensor_release(bad2), lark_tensor_release(cpu_bad2);
  lark_tensor_release(bad), lark_tensor_release(badg), lark_tensor_release(s), lark_tensor_release(sg);
  lark_tensor_release(z), lark_tensor_release(zg), lark_tensor_release(ict), lark_tensor_release(igt);
  lark_tensor_release(ic), lark_tensor_release(ig), lark_tensor_release(c), lark_tensor_release(g);
  CHECK_CALLS(calls[C_GATHER], before, 100, "index_select and gather");
}

static void test_scatter(void) {
  int before = calls[C_SCATTER];
  for (size_t di = 0; di < NDTS; di++) {
    lark_dtype dt = DTS[di];
    int64_t tshape[3] = {4, 5, 3}, ishape[3] = {3, 7, 2};
    for (int dim = 0; dim < 3; dim++) {
      int64_t is[3] = {ishape[0], ishape[1], ishape[2]};
      is[dim] = 7; /* many adds per destination */
      for (int d = 0; d < 3; d++)
        if (d != dim && is[d] > tshape[d]) is[d] = tshape[d];
      lark_tensor *c = sample(3, tshape, dt), *g = to_dev(c);
      lark_tensor *ic = indices(3, is, 0, tshape[dim]), *ig = to_dev(ic);
      lark_tensor *sc = sample(3, is, dt), *sg = to_dev(sc);
      char what[96];
      snprintf(what, sizeof what, "scatter_add_ %s dim %d", lark_dtype_name(dt), dim);
      CHECK(lark_scatter_add_(c, dim, ic, sc) == 0 && lark_scatter_add_(g, dim, ig, sg) == 0, "%s", what);
      expect_on_device(what, g, c, 0);
      /* out of place, through a transposed target */
      lark_tensor *ct = lark_transpose(c, 0, 2), *gt = lark_transpose(g, 0, 2);
      lark_tensor *ict = lark_transpose(ic, 0, 2), *igt = lark_transpose(ig, 0, 2);
      lark_tensor *sct = lark_transpose(sc, 0, 2), *sgt = lark_transpose(sg, 0, 2);
      lark_tensor *w = lark_scatter_add(ct, 2 - dim, ict, sct), *r = lark_scatter_add(gt, 2 - dim, igt, sgt);
      snprintf(what, sizeof what, "scatter_add %s transposed dim %d", lark_dtype_name(dt), dim);
      expect_on_device(what, r, w, 0);
      lark_tensor *tensors[] = {c, g, ic, ig, sc, sg, ct, gt, ict, igt, sct, sgt, w, r};
      for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) lark_tensor_release(tensors[i]);
    }
  }
  /* the source is the tensor itself: read from a copy */
  int64_t n = 6;
  lark_tensor *c = sample(1, &n, LARK_FLOAT64), *g = to_dev(c);
  lark_tensor *ic = indices(1, &n, 0, 6), *ig = to_dev(ic);
  CHECK(lark_scatter_add_(c, 0, ic, c) == 0 && lark_scatter_add_(g, 0, ig, g) == 0, "scatter_add_ of itself");
  expect_on_device("scatter_add_ of itself", g, c, 0);
  /* a bad index: the CPU's message, the tensor untouched */
  data_set(ic, 3, 6);
  lark_tensor *ig2 = to_dev(ic);
  CHECK(lark_scatter_add_(g, 0, ig2, g) != 0 && error_has("scatter_add: index 6 is out of range for dim 1 of size 6"),
        "scatter_add_ with a bad index");
  CHECK(lark_scatter_add_(c, 0, ic, c) != 0 && error_has("scatter_add: index 6 is out of range for dim 1 of size 6"),
        "scatter_add_ with a bad index, the CPU's message");
  expect_on_device("scatter_add_ with a bad index leaves the tensor", g, c, 0);
  lark_tensor_release(ig2);
  lark_tensor_release(c), lark_tensor_release(g), lark_tensor_release(ic), lark_tensor_release(ig);
  CHECK_CALLS(calls[C_SCATTER], before, 20, "scatter_add");
}

/* ---- masks and nonzero ---------------------------------------------------------------------- */

static void test_masks(void) {
  int before = calls[C_FILL] + calls[C_SELECT] + calls[C_NONZERO];
  static const double values[] = {2.5, -1, 300, 0, NAN};
  for (size_t si = 0; si < NSHAPES; si++) {
    int nd = (int)SHAPES[si][0];
    const int64_t *shape = SHAPES[si] + 1;
    for (size_t di = 0; di < NDTS; di++) {
      lark_tensor *c = sample(nd, shape, DTS[di]), *g = to_dev(c);
      /* a mask broadcast from the last dim (or a full one), bool and uint8 */
      int64_t mshape[LARK_MAX_DIMS];
      for (int d = 0; d < nd; d++) mshape[d] = d == 0 ? 1 : shape[d];
      for (int mk = 0; mk < 2; mk++) {
        lark_tensor *mc = sample(nd, mshape, mk ? LARK_UINT8 : LARK_BOOL);
        if (mk) { /* uint8 masks hold 0 and 1 */
          for (int64_t i = 0, m = lark_numel(mc); i < m; i++) data_set(mc, i, data_get(mc, i) > 4);
        }
        lark_tensor *mg = to_dev(mc);
        for (size_t vi = 0; vi < sizeof values / sizeof values[0]; vi++) {
          char what[128];
          snprintf(what, sizeof what, "masked_fill %s shape %zu mask %d value %g", lark_dtype_name(DTS[di]), si, mk,
                   values[vi]);
          lark_tensor *w = lark_masked_fill(c, mc, values[vi]), *r = lark_masked_fill(g, mg, values[vi]);
          expect_on_device(what, r, w, 0);
          lark_tensor_release(w), lark_tensor_release(r);
        }
        char what[128];
        snprintf(what, sizeof what, "masked_select %s shape %zu mask %d", lark_dtype_name(DTS[di]), si, mk);
        lark_tensor *w = lark_masked_select(c, mc), *r = lark_masked_select(g, mg);
        expect_on_device(what, r, w, 0);
        lark_tensor_release(w), lark_tensor_release(r);
        /* in place through a transposed view */
        lark_tensor *cc = lark_clone(c), *gc = lark_clone(g);
        lark_tensor *cv = view_of(cc, 1), *gv = view_of(gc, 1);
        lark_tensor *mcv = view_of(mc, 1), *mgv = view_of(mg, 1);
        if (cv && mcv) {
          lark_tensor *mce = lark_expand(mcv, cv->ndim, cv->shape), *mge = lark_expand(mgv, gv->ndim, gv->shape);
          CHECK(lark_masked_fill_(cv, mce, 7) == 0 && lark_masked_fill_(gv, mge, 7) == 0, "masked_fill_ transposed");
          snprintf(what, sizeof what, "masked_fill_ %s shape %zu transposed", lark_dtype_name(DTS[di]), si);
          expect_on_device(what, gc, cc, 0);
          lark_tensor_release(mce), lark_tensor_release(mge);
        }
        lark_tensor_release(cc), lark_tensor_release(gc), lark_tensor_release(cv), lark_tensor_release(gv);
        lark_tensor_release(mcv), lark_tensor_release(mgv);
        lark_tensor_release(mc), lark_tensor_release(mg);
      }
      for (int vk = 0; vk < 2; vk++) {
        lark_tensor *cv = view_of(c, vk), *gv = view_of(g, vk);
        if (!cv) continue;
        char what[128];
        snprintf(what, sizeof what, "nonzero %s shape %zu view %d", lark_dtype_name(DTS[di]), si, vk);
        lark_tensor *w = lark_nonzero(cv), *r = lark_nonzero(gv);
        expect_on_device(what, r, w, 0);
        lark_tensor_release(w), lark_tensor_release(r), lark_tensor_release(cv), lark_tensor_release(gv);
      }
      lark_tensor_release(c), lark_tensor_release(g);
    }
  }
  /* 0-d */
  lark_tensor *s = lark_scalar(3, LARK_INT64, NULL), *sg = to_dev(s);
  lark_tensor *w = lark_nonzero(s), *r = lark_nonzero(sg);
  expect_on_device("nonzero of a 0-d tensor", r, w, 0);
  lark_tensor_release(w), lark_tensor_release(r), lark_tensor_release(s), lark_tensor_release(sg);
  CHECK_CALLS(calls[C_FILL] + calls[C_SELECT] + calls[C_NONZERO], before, 100, "the masks");
}

/* ---- sort, topk, cumsum --------------------------------------------------------------------- */

static void test_sort(void) {
  int before = calls[C_TOPK] + calls[C_CUMSUM];
  for (size_t si = 0; si < NSHAPES; si++) {
    int nd = (int)SHAPES[si][0];
    const int64_t *shape = SHAPES[si] + 1;
    for (size_t di = 0; di < NDTS; di++) {
      lark_tensor *c = sample(nd, shape, DTS[di]), *g = to_dev(c);
      if (is_float(DTS[di]) && lark_numel(c) > 3) { /* NaN and -0 among them */
        data_set(c, 1, NAN), data_set(c, 2, -0.0), data_set(c, 3, 0.0);
        lark_tensor_release(g);
        g = to_dev(c);
      }
      for (int vk = 0; vk < 2; vk++) {
        lark_tensor *cv = view_of(c, vk), *gv = view_of(g, vk);
        if (!cv) continue;
        for (int dim = 0; dim < nd; dim++) {
          char what[128];
          for (int desc = 0; desc < 2; desc++) {
            lark_tensor *wv, *wi, *rv, *ri;
            CHECK(lark_sort(cv, dim, desc, &wv, &wi) == 0 && lark_sort(gv, dim, desc, &rv, &ri) == 0, "sort");
            snprintf(what, sizeof what, "sort %s shape %zu view %d dim %d desc %d", lark_dtype_name(DTS[di]), si, vk,
                     dim, desc);
            expect_on_device(what, rv, wv, 0);
            expect_on_device(what, ri, wi, 0);
            lark_tensor_release(wv), lark_tensor_release(wi), lark_tensor_release(rv), lark_tensor_release(ri);
            int64_t n = cv->shape[dim];
            for (int64_t k = 0; k <= n; k += n > 2 ? n / 2 : 1)
              for (int sorted = 0; sorted < 2; sorted++) {
                CHECK(lark_topk(cv, k, dim, desc, sorted, &wv, &wi) == 0 && lark_topk(gv, k, dim, desc, sorted, &rv, &ri) == 0,
                      "topk");
                snprintf(what, sizeof what, "topk %s shape %zu view %d dim %d largest %d k %lld sorted %d",
                         lark_dtype_name(DTS[di]), si, vk, dim, desc, (long long)k, sorted);
                expect_on_device(what, rv, wv, 0);
                expect_on_device(what, ri, wi, 0);
                lark_tensor_release(wv), lark_tensor_release(wi), lark_tensor_release(rv), lark_tensor_release(ri);
              }
          }
          snprintf(what, sizeof what, "cumsum %s shape %zu view %d dim %d", lark_dtype_name(DTS[di]), si, vk, dim);
          lark_tensor *w = lark_cumsum(cv, dim), *r = lark_cumsum(gv, dim);
          expect_on_device(what, r, w, DTS[di] == LARK_FLOAT32 ? 1e-6 : 1e-12);
          lark_tensor_release(w), lark_tensor_release(r);
        }
        lark_tensor_release(cv), lark_tensor_release(gv);
      }
      lark_tensor_release(c), lark_tensor_release(g);
    }
  }
  /* 0-d tensors: sort, topk(1), topk(0), cumsum */
  lark_tensor *s = lark_scalar(-4, LARK_FLOAT32, NULL), *sg = to_dev(s), *wv, *wi, *rv, *ri;
  for (int64_t k = 0; k <= 1; k++) {
    CHECK(lark_topk(s, k, 0, true, true, &wv, &wi) == 0 && lark_topk(sg, k, 0, true, true, &rv, &ri) == 0, "topk 0-d");
    expect_on_device("topk of a 0-d tensor", rv, wv, 0);
    expect_on_device("topk of a 0-d tensor (indices)", ri, wi, 0);
    lark_tensor_release(wv), lark_tensor_release(wi), lark_tensor_release(rv), lark_tensor_release(ri);
  }
  lark_tensor *w = lark_cumsum(s, 0), *r = lark_cumsum(sg, 0);
  expect_on_device("cumsum of a 0-d tensor", r, w, 0);
  lark_tensor_release(w), lark_tensor_release(r), lark_tensor_release(s), lark_tensor_release(sg);
  CHECK_CALLS(calls[C_TOPK] + calls[C_CUMSUM], before, 100, "sort, topk and cumsum");
}

/* ---- gradients through the device ops ------------------------------------------------------- */

static void test_grads(void) {
  int64_t shape[2] = {4, 6}, ishape[2] = {4, 3};
  lark_tensor *c = sample(2, shape, LARK_FLOAT64), *g = to_dev(c);
  c->requires_grad = g->requires_grad = true;
  lark_tensor *ic = indices(2, ishape, 0, 6), *ig = to_dev(ic);
  int64_t three = 3;
  lark_tensor *sc = indices(1, &three, 0, 4), *sgi = to_dev(sc);
  lark_tensor *loss[2];
  for (int k = 0; k < 2; k++) {
    lark_tensor *t = k ? g : c, *ix = k ? ig : ic, *sx = k ? sgi : sc;
    lark_tensor *a = lark_gather(t, 1, ix), *b = lark_index_select(t, 0, sx), *v, *i;
    lark_topk(t, 2, 1, true, false, &v, &i);
    lark_tensor *cs = lark_cumsum(t, 1);
    lark_tensor *sa = lark_reduce(LARK_RED_SUM, a, NULL), *sb = lark_reduce(LARK_RED_SUM, b, NULL);
    lark_tensor *sv = lark_reduce(LARK_RED_SUM, v, NULL), *scs = lark_reduce(LARK_RED_SUM, cs, NULL);
    lark_tensor *s1 = lark_add(sa, sb), *s2 = lark_add(sv, scs);
    loss[k] = lark_add(s1, s2);
    CHECK(loss[k] && lark_backward(loss[k], NULL, false, 0, NULL, NULL) == 0, "backward through the device ops (%d)", k);
    lark_tensor *tensors[] = {a, b, v, i, cs, sa, sb, sv, scs, s1, s2};
    for (size_t j = 0; j < sizeof tensors / sizeof tensors[0]; j++) lark_tensor_release(tensors[j]);
  }
  expect_on_device("gradient through gather, index_select, topk and cumsum", g->grad, c->grad, 1e-12);
  lark_tensor *tensors[] = {c, g, ic, ig, sc, sgi, loss[0], loss[1]};
  for (size_t j = 0; j < sizeof tensors / sizeof tensors[0]; j++) lark_tensor_release(tensors[j]);
}

/* ---- a backend without the fields ----------------------------------------------------------- */

static void test_missing(void) {
  lark_backend saved = fake;
  fake.topk = NULL, fake.cumsum = NULL, fake.gather = NULL, fake.scatter_add = NULL, fake.masked_fill = NULL;
  fake.masked_select = NULL, fake.nonzero = NULL, fake.index_check = NULL;
  int64_t shape[2] = {3, 4}, three = 3;
  lark_tensor *t = lark_ones(2, shape, LARK_FLOAT32, &DEV), *ix = lark_zeros(1, &three, LARK_INT64, &DEV);
  lark_tensor *ix2 = lark_zeros(2, shape, LARK_INT64, &DEV), *m = lark_zeros(2, shape, LARK_BOOL, &DEV), *v, *i;
  int64_t live = lark_bytes_allocated(LARK_CUDA);
  CHECK(lark_sort(t, 1, false, &v, &i) != 0 && error_has("sort: not implemented for cuda:0"), "sort without topk");
  CHECK(lark_topk(t, 2, 1, true, true, &v, &i) != 0 && error_has("topk: not implemented for cuda:0"), "topk");
  CHECK(!lark_cumsum(t, 0) && error_has("cumsum: not implemented for cuda:0"), "cumsum");
  CHECK(!lark_index_select(t, 1, ix) && error_has("index_select: not implemented for cuda:0"), "index_select");
  CHECK(!lark_gather(t, 1, ix2) && error_has("gather: not implemented for cuda:0"), "gather");
  CHECK(lark_scatter_add_(t, 1, ix2, t) != 0 && error_has("scatter_add: not implemented for cuda:0"), "scatter_add");
  CHECK(!lark_masked_fill(t, m, 1) && error_has("masked_fill: not implemented for cuda:0"), "masked_fill");
  CHECK(lark_masked_fill_(t, m, 1) != 0 && error_has("masked_fill: not implemented for cuda:0"), "masked_fill_");
  CHECK(!lark_masked_select(t, m) && error_has("masked_select: not implemented for cuda:0"), "masked_select");
  CHECK(!lark_nonzero(t) && error_has("nonzero: not implemented for cuda:0"), "nonzero");
  CHECK(lark_bytes_allocated(LARK_CUDA) == live, "nothing allocated for an op the device lacks");
  lark_tensor_release(t), lark_tensor_release(ix), lark_tensor_release(ix2), lark_tensor_release(m);
  fake = saved;
}

int main(void) {
  real = lark_cuda_is_available();
  if (real) printf("a CUDA device is present: testing its backend\n");
  else install();
  rand_seed(77);
  int64_t cpu0 = lark_bytes_allocated(LARK_CPU);
  test_pick();
  test_scatter();
  test_masks();
  test_sort();
  test_grads();
  if (!real) test_missing();
  CHECK_NO_LEAK(cpu0);
  CHECK(lark_bytes_allocated(LARK_CUDA) == 0, "%lld device bytes still allocated", (long long)lark_bytes_allocated(LARK_CUDA));
  return check_report("test_index_dispatch");
}
