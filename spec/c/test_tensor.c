/* test_tensor.c: storage sharing and reference counts of views, the stride rules of every view,
 * broadcasting binary ops against a naive loop on random shapes and layouts, lark_copy_ across
 * every pair of dtypes, and the errors core reports (NULL or a negative status, with lark_error()
 * naming the op). Uses only lark.h. Returns non-zero and prints what failed. */
#include "check.h"

/* ---- small helpers ------------------------------------------------------------------------- */

static bool same_shape(const lark_tensor *t, int nd, const int64_t *shape) {
  return t && t->ndim == nd && (nd == 0 || memcmp(t->shape, shape, sizeof(int64_t) * (size_t)nd) == 0);
}

static bool same_strides(const lark_tensor *t, int nd, const int64_t *stride) {
  return t && t->ndim == nd && (nd == 0 || memcmp(t->stride, stride, sizeof(int64_t) * (size_t)nd) == 0);
}

/* 0, 1, 2, ... in a contiguous tensor of dtype dt. */
static lark_tensor *iota(int nd, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  for (int64_t i = 0; i < lark_numel(t); i++) data_set(t, i, (double)i);
  return t;
}

/* ---- views share storage and never copy ---------------------------------------------------- */

static void test_view_refcounts(void) {
  int64_t start = lark_bytes_allocated(LARK_CPU);
  int64_t shape[3] = {2, 3, 4};
  lark_tensor *t = iota(3, shape, LARK_FLOAT32);
  lark_storage *s = t->storage;
  CHECK(lark_bytes_allocated(LARK_CPU) == start + 24 * 4, "a 2x3x4 float32 tensor holds 96 bytes, counted %lld",
        (long long)(lark_bytes_allocated(LARK_CPU) - start));
  CHECK(s->refcount == 1, "fresh storage refcount %d", s->refcount);

  int64_t v1[2] = {6, 4}, r1[2] = {4, -1}, e3[4] = {5, 2, 3, 4}, st[3] = {1, 1, 1};
  int perm[3] = {2, 0, 1};
  lark_tensor *views[] = {
      lark_view(t, 2, v1),
      lark_reshape(t, 2, r1), /* viewable: no copy */
      lark_narrow(t, 1, 1, 2),
      lark_select(t, 0, 1),
      lark_slice(t, 2, 0, 4, 2),
      lark_transpose(t, 0, 2),
      lark_permute(t, 3, perm),
      lark_expand(t, 4, e3),
      lark_unsqueeze(t, 1),
      lark_squeeze(t, LARK_ALL_DIMS),
      lark_as_strided(t, 3, shape, st, 0),
  };
  int nviews = (int)(sizeof views / sizeof views[0]);
  for (int i = 0; i < nviews; i++) {
    CHECK(views[i] != NULL, "view %d failed", i);
    if (views[i]) CHECK(views[i]->storage == s, "view %d does not share the storage", i);
  }
  CHECK(s->refcount == 1 + nviews, "storage refcount %d after %d views, expected %d", s->refcount, nviews,
        1 + nviews);
  CHECK(lark_bytes_allocated(LARK_CPU) == start + 96, "views allocated %lld bytes",
        (long long)(lark_bytes_allocated(LARK_CPU) - start - 96));

  /* writing through a view changes the base: narrow(1, 1, 2) covers t[:, 1:3, :] */
  CHECK(lark_fill_(views[2], -1) == 0, "fill_ on a narrowed view");
  for (int64_t i = 0; i < 24; i++) {
    int64_t j = (i / 4) % 3;
    double want = (j == 1 || j == 2) ? -1 : (double)i;
    CHECK(data_get(t, i) == want, "element %lld is %g after filling the narrowed view, expected %g", (long long)i,
          data_get(t, i), want);
  }

  /* views of views keep the storage alive after the intermediate view is gone */
  lark_tensor *n = lark_narrow(t, 2, 1, 3);
  lark_tensor *nt = lark_transpose(n, 0, 2);
  lark_tensor *nts = lark_select(nt, 1, 2);
  lark_tensor_release(n);
  lark_tensor_release(nt);
  CHECK(s->refcount == 2 + nviews, "refcount %d with one view of a view alive", s->refcount);
  /* nts = t[:, 2, 1:4] transposed: shape (3, 2), element (i, j) = t[j, 2, 1 + i] */
  int64_t want_shape[2] = {3, 2};
  CHECK(same_shape(nts, 2, want_shape), "view of view shape");
  for (int64_t i = 0; i < 3; i++)
    for (int64_t j = 0; j < 2; j++) {
      int64_t c[2] = {i, j}, tc = j * 12 + 2 * 4 + 1 + i;
      CHECK(at(nts, c) == data_get(t, tc), "view of view element (%lld,%lld)", (long long)i, (long long)j);
    }
  lark_tensor_release(nts);

  for (int i = 0; i < nviews; i++) {
    lark_tensor_release(views[i]);
    CHECK(s->refcount == nviews - i, "refcount %d after releasing %d views", s->refcount, i + 1);
  }

  /* contiguous() of a contiguous tensor is the tensor itself */
  lark_tensor *c = lark_contiguous(t);
  CHECK(c == t && t->refcount == 2 && s->refcount == 1, "contiguous of a contiguous tensor: same header");
  lark_tensor_release(c);

  /* reshape that cannot be a view copies into fresh storage */
  lark_tensor *tt = lark_transpose(t, 1, 2);
  int64_t flat24[1] = {24};
  lark_tensor *rc = lark_reshape(tt, 1, flat24);
  CHECK(rc && rc->storage != s, "reshape of a transposed tensor must copy");
  CHECK(lark_bytes_allocated(LARK_CPU) == start + 192, "the copy holds 96 more bytes");
  if (rc)
    for (int64_t i = 0; i < 24; i++) {
      int64_t a = i / 12, b = (i / 3) % 4, cc = i % 3; /* tt is (2, 4, 3) */
      CHECK(data_get(rc, i) == data_get(t, a * 12 + cc * 4 + b), "reshape copy element %lld", (long long)i);
    }
  lark_tensor_release(rc);
  CHECK(lark_view(tt, 1, flat24) == NULL && error_has("view:"), "view of a transposed tensor must fail");
  lark_tensor *cl = lark_clone(tt);
  CHECK(cl && cl->storage != s && lark_is_contiguous(cl), "clone is a contiguous copy");
  lark_tensor_release(cl);
  lark_tensor_release(tt);
  CHECK(s->refcount == 1, "refcount %d after releasing everything but t", s->refcount);

  /* free_storage drops this header's reference only */
  lark_tensor *v = lark_narrow(t, 0, 0, 1);
  CHECK(s->refcount == 2, "refcount before free_storage");
  lark_tensor_free_storage(v);
  CHECK(s->refcount == 1 && v->storage == NULL && lark_numel(v) == 0, "free_storage of a view");
  CHECK(lark_fill_(v, 1) < 0 && error_has("fill_: the tensor was freed"), "fill_ of a freed tensor fails");
  lark_tensor_release(v);

  lark_tensor_release(t);
  CHECK(lark_bytes_allocated(LARK_CPU) == start, "bytes allocated %lld after releasing everything, expected %lld",
        (long long)lark_bytes_allocated(LARK_CPU), (long long)start);
}

/* ---- stride rules -------------------------------------------------------------------------- */

static void test_view_strides(void) {
  int64_t shape[3] = {2, 3, 4};
  lark_tensor *t = iota(3, shape, LARK_FLOAT64);
  int64_t cs[3] = {12, 4, 1};
  CHECK(same_strides(t, 3, cs) && lark_is_contiguous(t) && t->offset == 0, "contiguous strides");

  lark_tensor *v = lark_transpose(t, 0, 2);
  int64_t s1[3] = {4, 3, 2}, st1[3] = {1, 4, 12};
  CHECK(same_shape(v, 3, s1) && same_strides(v, 3, st1) && !lark_is_contiguous(v), "transpose(0, 2)");
  lark_tensor_release(v);

  v = lark_transpose(t, -1, 0); /* negative dims count from the end */
  CHECK(same_shape(v, 3, s1) && same_strides(v, 3, st1), "transpose(-1, 0)");
  lark_tensor_release(v);

  v = lark_narrow(t, 1, 1, 2);
  int64_t s2[3] = {2, 2, 4};
  CHECK(same_shape(v, 3, s2) && same_strides(v, 3, cs) && v->offset == 4 && !lark_is_contiguous(v), "narrow(1, 1, 2)");
  lark_tensor_release(v);

  v = lark_narrow(t, 0, 1, 1); /* narrowing the first dim stays contiguous */
  CHECK(v && v->offset == 12 && lark_is_contiguous(v), "narrow(0, 1, 1)");
  lark_tensor_release(v);

  v = lark_select(t, 1, 2);
  int64_t s3[2] = {2, 4}, st3[2] = {12, 1};
  CHECK(same_shape(v, 2, s3) && same_strides(v, 2, st3) && v->offset == 8, "select(1, 2)");
  lark_tensor_release(v);

  v = lark_select(t, -1, -1); /* last element of the last dim */
  int64_t s3b[2] = {2, 3}, st3b[2] = {12, 4};
  CHECK(same_shape(v, 2, s3b) && same_strides(v, 2, st3b) && v->offset == 3, "select(-1, -1)");
  lark_tensor_release(v);

  v = lark_slice(t, 2, 1, 4, 2);
  int64_t s4[3] = {2, 3, 2}, st4[3] = {12, 4, 2};
  CHECK(same_shape(v, 3, s4) && same_strides(v, 3, st4) && v->offset == 1, "slice(2, 1, 4, 2)");
  lark_tensor_release(v);

  v = lark_slice(t, 2, -3, 100, 3); /* start from the end, stop clamped: elements 1 only (1, 4 > 3) */
  int64_t s4b[3] = {2, 3, 1};
  CHECK(same_shape(v, 3, s4b) && v->offset == 1 && v->stride[2] == 3, "slice(2, -3, 100, 3)");
  lark_tensor_release(v);

  v = lark_slice(t, 1, 2, 1, 1); /* stop before start: empty */
  CHECK(v && v->shape[1] == 0 && lark_numel(v) == 0, "empty slice");
  lark_tensor_release(v);

  int perm[3] = {1, 2, 0};
  v = lark_permute(t, 3, perm);
  int64_t s5[3] = {3, 4, 2}, st5[3] = {4, 1, 12};
  CHECK(same_shape(v, 3, s5) && same_strides(v, 3, st5), "permute(1, 2, 0)");
  lark_tensor_release(v);

  int64_t col_shape[2] = {3, 1};
  lark_tensor *col = iota(2, col_shape, LARK_FLOAT32);
  int64_t e[3] = {2, 3, 4}, se[3] = {0, 1, 0};
  v = lark_expand(col, 3, e);
  CHECK(same_shape(v, 3, e) && same_strides(v, 3, se), "expand [3,1] -> [2,3,4] has stride 0 on new dims");
  lark_tensor_release(v);
  int64_t ekeep[2] = {-1, 5}, skeep[2] = {3, 5};
  v = lark_expand(col, 2, ekeep);
  CHECK(same_shape(v, 2, skeep) && v->stride[0] == 1 && v->stride[1] == 0, "expand(-1, 5) keeps dim 0");
  lark_tensor_release(v);
  lark_tensor_release(col);

  v = lark_unsqueeze(t, 1);
  int64_t s6[4] = {2, 1, 3, 4}, st6[4] = {12, 12, 4, 1};
  CHECK(same_shape(v, 4, s6) && same_strides(v, 4, st6) && lark_is_contiguous(v), "unsqueeze(1)");
  lark_tensor *sq = lark_squeeze(v, 1);
  CHECK(same_shape(sq, 3, shape) && same_strides(sq, 3, cs), "squeeze(1) undoes unsqueeze(1)");
  lark_tensor_release(sq);
  sq = lark_squeeze(v, 0); /* size 2: unchanged */
  CHECK(same_shape(sq, 4, s6), "squeeze of a dim that is not 1 keeps it");
  lark_tensor_release(sq);
  lark_tensor_release(v);
  v = lark_unsqueeze(t, -1);
  int64_t s7[4] = {2, 3, 4, 1}, st7[4] = {12, 4, 1, 1};
  CHECK(same_shape(v, 4, s7) && same_strides(v, 4, st7), "unsqueeze(-1)");
  lark_tensor_release(v);

  /* view keeps what it can: a column-narrowed matrix (stride 6 rows of 3) */
  int64_t m_shape[2] = {4, 6};
  lark_tensor *m = iota(2, m_shape, LARK_FLOAT32);
  lark_tensor *mn = lark_narrow(m, 1, 0, 3); /* (4, 3) strides (6, 1) */
  int64_t ok1[3] = {2, 2, 3}, okst1[3] = {12, 6, 1};
  v = lark_view(mn, 3, ok1);
  CHECK(same_shape(v, 3, ok1) && same_strides(v, 3, okst1), "view of a narrowed matrix splitting the rows");
  lark_tensor_release(v);
  int64_t ok2[3] = {4, 3, 1};
  v = lark_view(mn, 3, ok2);
  CHECK(same_shape(v, 3, ok2) && v->stride[0] == 6 && v->stride[1] == 1, "view adding a size-1 dim");
  lark_tensor_release(v);
  int64_t bad[1] = {12};
  CHECK(lark_view(mn, 1, bad) == NULL && error_has("view: a tensor of shape [4,3]") && lark_error_code() == LARK_ERR_SHAPE,
        "view that needs a copy must fail");
  v = lark_reshape(mn, 1, bad);
  CHECK(v && v->storage != m->storage && lark_numel(v) == 12, "reshape copies when a view is impossible");
  if (v)
    for (int64_t i = 0; i < 12; i++) CHECK(data_get(v, i) == (double)(i / 3 * 6 + i % 3), "reshape copy value %lld", (long long)i);
  lark_tensor_release(v);
  int64_t inf[2] = {-1, 2};
  v = lark_view(t, 2, inf);
  int64_t s8[2] = {12, 2};
  CHECK(same_shape(v, 2, s8), "view(-1, 2) infers 12");
  lark_tensor_release(v);

  /* a transposed tensor viewed along its own dims works when the merged dims stay adjacent */
  lark_tensor *tt = lark_transpose(t, 0, 1); /* (3, 2, 4) strides (4, 12, 1) */
  int64_t ok3[4] = {3, 2, 2, 2}, okst3[4] = {4, 12, 2, 1};
  v = lark_view(tt, 4, ok3);
  CHECK(same_shape(v, 4, ok3) && same_strides(v, 4, okst3), "view splitting the inner dim of a transposed tensor");
  lark_tensor_release(v);
  lark_tensor_release(tt);

  /* 0-d tensors */
  lark_tensor *z = lark_scalar(7, LARK_INT64, NULL);
  CHECK(z && z->ndim == 0 && lark_numel(z) == 1 && lark_is_contiguous(z), "0-d scalar");
  int64_t one[1] = {1};
  v = lark_view(z, 1, one);
  CHECK(v && v->ndim == 1 && v->shape[0] == 1 && v->storage == z->storage, "0-d viewed as [1]");
  lark_tensor *back = lark_view(v, 0, NULL);
  CHECK(back && back->ndim == 0 && at(back, NULL) == 7, "[1] viewed as 0-d");
  lark_tensor_release(back);
  lark_tensor_release(v);
  v = lark_unsqueeze(z, 0);
  CHECK(v && v->ndim == 1 && v->shape[0] == 1, "unsqueeze of a 0-d");
  lark_tensor_release(v);
  lark_tensor_release(z);

  /* empty tensors view freely */
  int64_t es[2] = {0, 3}, ev[3] = {3, 0, 5};
  lark_tensor *em = lark_empty(2, es, LARK_FLOAT32, NULL);
  v = lark_view(em, 3, ev);
  CHECK(same_shape(v, 3, ev), "view of an empty tensor");
  lark_tensor_release(v);
  lark_tensor_release(em);

  lark_tensor_release(mn);
  lark_tensor_release(m);
  lark_tensor_release(t);
}

/* ---- broadcasting binary ops against a naive loop ------------------------------------------ */

static lark_dtype promote_ref(lark_dtype a, lark_dtype b) {
  /* bool < uint8 < int64 < float32 < float64 */
  static const int rank[LARK_NDTYPES] = {[LARK_BOOL] = 0, [LARK_UINT8] = 1, [LARK_INT64] = 2, [LARK_FLOAT32] = 3,
                                         [LARK_FLOAT64] = 4};
  return rank[a] >= rank[b] ? a : b;
}

/* C's conversion of a double into dtype dt, as core does it (NaN -> 0 for integers, wrap for uint8). */
static double convert_ref(double v, lark_dtype dt) {
  switch (dt) {
    case LARK_FLOAT32: return (float)v;
    case LARK_FLOAT64: return v;
    case LARK_BOOL: return v != 0;
    default: break;
  }
  if (v != v) return 0;
  double tr = trunc(v);
  if (dt == LARK_INT64) return tr;
  double m = fmod(tr, 256.0);
  return m < 0 ? m + 256 : m;
}

static double ipow_ref(double x, double e) {
  if (e < 0) return x == 1 ? 1 : x == -1 ? (fmod(e, 2) != 0 ? -1 : 1) : 0;
  double r = 1;
  for (int i = 0; i < (int)e; i++) r *= x;
  return r;
}

/* x op y computed in the dtype `compute` (x, y already hold values of that dtype). */
static double binary_ref(lark_binary_op op, double x, double y, lark_dtype compute) {
  bool is_int = compute == LARK_INT64 || compute == LARK_UINT8;
  switch (op) {
    case LARK_OP_ADD: return x + y;
    case LARK_OP_SUB: return x - y;
    case LARK_OP_MUL: return x * y;
    case LARK_OP_DIV: return x / y;
    case LARK_OP_POW: return is_int ? ipow_ref(x, y) : pow(x, y);
    case LARK_OP_MAXIMUM: return (x != x || y != y) ? NAN : x > y ? x : y;
    case LARK_OP_MINIMUM: return (x != x || y != y) ? NAN : x < y ? x : y;
    case LARK_OP_FMOD: return is_int ? (y == 0 ? 0 : fmod(x, y)) : fmod(x, y);
    case LARK_OP_EQ: return x == y;
    case LARK_OP_NE: return x != y;
    case LARK_OP_LT: return x < y;
    case LARK_OP_LE: return x <= y;
    case LARK_OP_GT: return x > y;
    case LARK_OP_GE: return x >= y;
    case LARK_OP_AND: return (x != 0) && (y != 0);
    case LARK_OP_OR: return (x != 0) || (y != 0);
    case LARK_OP_XOR: return (x != 0) != (y != 0);
    default: return NAN;
  }
}

/* A random value that every dtype holds exactly, for operands of dtype dt. */
static double rand_value(lark_dtype dt) {
  switch (dt) {
    case LARK_FLOAT32: case LARK_FLOAT64: return rand_unit() * 4 - 2;
    case LARK_INT64: return (double)(rand_int(13) - 6);
    case LARK_UINT8: return (double)rand_int(8);
    default: return (double)rand_int(2);
  }
}

/* A random tensor of `shape` in a random layout: contiguous, permuted (non-contiguous) or a
 * narrowed view of a bigger one. */
static lark_tensor *rand_operand(int nd, const int64_t *shape, lark_dtype dt) {
  int layout = (int)rand_int(3);
  lark_tensor *t = NULL;
  if (layout == 1 && nd >= 2) { /* build the reversed shape, then permute back */
    int64_t rs[LARK_MAX_DIMS];
    int perm[LARK_MAX_DIMS];
    for (int i = 0; i < nd; i++) rs[i] = shape[nd - 1 - i], perm[i] = nd - 1 - i;
    lark_tensor *base = lark_empty(nd, rs, dt, NULL);
    t = lark_permute(base, nd, perm);
    lark_tensor_release(base);
  } else if (layout == 2 && nd >= 1) { /* narrow the last dim of a wider tensor */
    int64_t ws[LARK_MAX_DIMS];
    memcpy(ws, shape, sizeof(int64_t) * (size_t)nd);
    ws[nd - 1] += 2;
    lark_tensor *base = lark_empty(nd, ws, dt, NULL);
    t = lark_narrow(base, nd - 1, 1, shape[nd - 1]);
    lark_tensor_release(base);
  } else {
    t = lark_empty(nd, shape, dt, NULL);
  }
  if (lark_numel(t) > 0) {
    int64_t c[LARK_MAX_DIMS] = {0};
    do put(t, c, rand_value(dt));
    while (next_coord(nd, shape, c));
  }
  return t;
}

/* Checks one lark_binary result against the naive loop; returns false on the first mismatch. */
static bool check_binary(lark_binary_op op, const lark_tensor *a, const lark_tensor *b, const lark_tensor *out,
                         int nd, const int64_t *shape) {
  lark_dtype p = promote_ref(a->dtype, b->dtype), compute = p, result = p;
  if (op >= LARK_OP_AND) compute = result = LARK_BOOL;
  else if (op >= LARK_OP_EQ) result = LARK_BOOL;
  else if (op == LARK_OP_DIV && (p == LARK_INT64 || p == LARK_UINT8 || p == LARK_BOOL)) compute = result = LARK_FLOAT32;
  if (!same_shape(out, nd, shape) || out->dtype != result) {
    CHECK(false, "%s of %s and %s: wrong shape or dtype %s (expected %s)", lark_binary_op_name(op),
          lark_dtype_name(a->dtype), lark_dtype_name(b->dtype), out ? lark_dtype_name(out->dtype) : "NULL",
          lark_dtype_name(result));
    return false;
  }
  if (lark_numel(out) == 0) return true;
  int64_t c[LARK_MAX_DIMS] = {0}, ca[LARK_MAX_DIMS], cb[LARK_MAX_DIMS];
  do {
    for (int d = 0; d < a->ndim; d++) ca[d] = a->shape[d] == 1 ? 0 : c[nd - a->ndim + d];
    for (int d = 0; d < b->ndim; d++) cb[d] = b->shape[d] == 1 ? 0 : c[nd - b->ndim + d];
    double x = convert_ref(at(a, ca), compute), y = convert_ref(at(b, cb), compute);
    double want = convert_ref(binary_ref(op, x, y, compute), result), got = at(out, c);
    if (!near(got, want, result == LARK_FLOAT32 ? 1e-6 : 0)) {
      CHECK(false, "%s of %s and %s (%d dims): got %.17g, expected %.17g from %g and %g", lark_binary_op_name(op),
            lark_dtype_name(a->dtype), lark_dtype_name(b->dtype), nd, got, want, x, y);
      return false;
    }
  } while (next_coord(nd, shape, c));
  return true;
}

static void test_broadcast_random(void) {
  static const lark_dtype dts[5] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64, LARK_UINT8, LARK_BOOL};
  int tried = 0;
  for (int trial = 0; trial < 400; trial++) {
    int nd = (int)rand_int(5);
    int64_t shape[LARK_MAX_DIMS], sa[LARK_MAX_DIMS], sb[LARK_MAX_DIMS];
    for (int d = 0; d < nd; d++) shape[d] = rand_int(8) == 0 ? 0 : 1 + rand_int(5);
    int na = (int)rand_int(nd + 1), nb = nd;
    if (rand_int(2)) na = nd, nb = (int)rand_int(nd + 1); /* either side may be the shorter */
    for (int d = 0; d < na; d++) sa[d] = rand_int(3) == 0 ? 1 : shape[nd - na + d];
    for (int d = 0; d < nb; d++) sb[d] = rand_int(3) == 0 ? 1 : shape[nd - nb + d];
    /* the broadcast shape of sa and sb (a dim both made 1 stays 1) */
    int64_t want[LARK_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
      int ia = d - (nd - na), ib = d - (nd - nb);
      int64_t x = ia >= 0 ? sa[ia] : 1, y = ib >= 0 ? sb[ib] : 1;
      want[d] = x == 1 ? y : x;
    }
    lark_dtype da = dts[rand_int(5)], db = rand_int(2) ? da : dts[rand_int(5)];
    lark_tensor *a = rand_operand(na, sa, da), *b = rand_operand(nb, sb, db);
    for (int op = 0; op < LARK_NBINARY; op++) {
      lark_tensor *out = lark_binary((lark_binary_op)op, a, b);
      bool bool_err = promote_ref(da, db) == LARK_BOOL &&
                      (op == LARK_OP_SUB || op == LARK_OP_POW || op == LARK_OP_FMOD);
      if (bool_err) {
        CHECK(out == NULL && error_has(lark_binary_op_name((lark_binary_op)op)) && error_has("bool"),
              "%s of two bool tensors must fail", lark_binary_op_name((lark_binary_op)op));
      } else {
        CHECK(out != NULL, "%s failed", lark_binary_op_name((lark_binary_op)op));
        if (out) check_binary((lark_binary_op)op, a, b, out, nd, want);
        tried++;
      }
      lark_tensor_release(out);
    }
    lark_tensor_release(a);
    lark_tensor_release(b);
  }
  CHECK(tried > 4000, "only %d random binary cases ran", tried);

  /* a big problem takes the OpenMP path: compare it with the same op on the transposed layout */
  int64_t big[2] = {300, 257}, bigt[2] = {257, 300}, row[1] = {257};
  lark_tensor *a = rand_operand(2, big, LARK_FLOAT32), *r = rand_operand(1, row, LARK_FLOAT32);
  lark_tensor *at_ = rand_operand(2, bigt, LARK_FLOAT32);
  lark_tensor *att = lark_transpose(at_, 0, 1);
  lark_tensor *s1 = lark_binary(LARK_OP_MUL, a, r), *s2 = lark_binary(LARK_OP_SUB, att, r);
  check_binary(LARK_OP_MUL, a, r, s1, 2, big);
  check_binary(LARK_OP_SUB, att, r, s2, 2, big);
  lark_tensor_release(s1);
  lark_tensor_release(s2);
  lark_tensor_release(att);
  lark_tensor_release(at_);
  lark_tensor_release(a);
  lark_tensor_release(r);
}

/* In place and into `out`: the result lands in the given tensor, cast to its dtype. */
static void test_binary_inplace_out(void) {
  int64_t s23[2] = {2, 3}, s3[1] = {3};
  lark_tensor *a = iota(2, s23, LARK_INT64), *b = iota(1, s3, LARK_FLOAT32);
  lark_storage *st = a->storage;
  CHECK(lark_binary_(LARK_OP_ADD, a, b) == 0, "int64 += float32 in place");
  CHECK(a->storage == st && a->dtype == LARK_INT64, "in place keeps storage and dtype");
  for (int64_t i = 0; i < 6; i++) CHECK(data_get(a, i) == (double)(i + i % 3), "add_ element %lld", (long long)i);
  CHECK(lark_binary_scalar_(LARK_OP_DIV, a, 2) == 0, "int64 /= 2 in place");
  for (int64_t i = 0; i < 6; i++)
    CHECK(data_get(a, i) == trunc((double)(i + i % 3) / 2), "div_ truncates back to int64 at %lld", (long long)i);
  CHECK(lark_binary_(LARK_OP_ADD, b, a) < 0 && error_has("add_: in place, the result of shape [2,3] would not fit"),
        "in-place result bigger than the tensor must fail");
  lark_tensor *out = lark_empty(2, s23, LARK_FLOAT64, NULL);
  CHECK(lark_binary_out(LARK_OP_MUL, out, a, b) == 0, "mul into a float64 out");
  for (int64_t i = 0; i < 6; i++)
    CHECK(data_get(out, i) == data_get(a, i) * (double)(i % 3), "binary_out element %lld", (long long)i);
  lark_tensor *small = lark_empty(1, s3, LARK_FLOAT64, NULL);
  CHECK(lark_binary_out(LARK_OP_MUL, small, a, b) < 0 && error_has("mul: out has shape [3]"), "out of the wrong shape");
  /* a transposed destination */
  lark_tensor *dst = lark_empty(2, (int64_t[]){3, 2}, LARK_FLOAT32, NULL);
  lark_tensor *dt = lark_transpose(dst, 0, 1);
  CHECK(lark_fill_(dst, 1) == 0 && lark_binary_(LARK_OP_SUB, dt, b) == 0, "sub_ on a transposed view");
  for (int64_t i = 0; i < 6; i++) CHECK(data_get(dst, i) == 1 - (double)(i / 2), "transposed sub_ element %lld", (long long)i);
  lark_tensor_release(dt);
  lark_tensor_release(dst);
  lark_tensor_release(small);
  lark_tensor_release(out);
  lark_tensor_release(a);
  lark_tensor_release(b);
}

/* ---- lark_copy_ across every pair of dtypes ------------------------------------------------ */

static void test_copy_dtypes(void) {
  static const double vals[] = {0, 1, 2, 3.75, -2.5, 255, 300, -1, 0.5, NAN, 1e10, -7.9};
  const int n = (int)(sizeof vals / sizeof vals[0]);
  int64_t shape[1] = {n};
  for (int s = 0; s < LARK_NDTYPES; s++) {
    lark_tensor *src = lark_empty(1, shape, (lark_dtype)s, NULL);
    for (int i = 0; i < n; i++) data_set(src, i, convert_ref(vals[i], (lark_dtype)s));
    for (int d = 0; d < LARK_NDTYPES; d++) {
      lark_tensor *dst = lark_empty(1, shape, (lark_dtype)d, NULL);
      CHECK(lark_copy_(dst, src) == 0, "copy %s -> %s", lark_dtype_name((lark_dtype)s), lark_dtype_name((lark_dtype)d));
      for (int i = 0; i < n; i++) {
        double from = data_get(src, i), want = convert_ref(from, (lark_dtype)d), got = data_get(dst, i);
        if (d == LARK_INT64 && from >= 9.2e18) want = 9223372036854775807.0;
        bool ok = (want != want) ? got != got : got == want;
        CHECK(ok, "copy %s -> %s of %g: got %.17g, expected %.17g", lark_dtype_name((lark_dtype)s),
              lark_dtype_name((lark_dtype)d), from, got, want);
      }
      /* lark_to gives the same numbers */
      lark_tensor *c = lark_to(src, (lark_dtype)d, NULL);
      CHECK(c && c->dtype == (lark_dtype)d && (s != d || c == src), "lark_to %s -> %s", lark_dtype_name((lark_dtype)s),
            lark_dtype_name((lark_dtype)d));
      for (int i = 0; c && i < n; i++) {
        double a = data_get(c, i), b = data_get(dst, i);
        CHECK(a == b || (a != a && b != b), "lark_to and copy_ differ at %d", i);
      }
      lark_tensor_release(c);

      /* broadcast source into a transposed destination: dst2 is (n, 3) viewed as (3, n) */
      lark_tensor *base = lark_empty(2, (int64_t[]){n, 3}, (lark_dtype)d, NULL);
      lark_tensor *dst2 = lark_transpose(base, 0, 1);
      CHECK(lark_copy_(dst2, src) == 0, "broadcast copy %s -> %s", lark_dtype_name((lark_dtype)s),
            lark_dtype_name((lark_dtype)d));
      for (int i = 0; i < n; i++)
        for (int j = 0; j < 3; j++) {
          double a = data_get(base, i * 3 + j), b = data_get(dst, i);
          CHECK(a == b || (a != a && b != b), "broadcast copy %s -> %s at (%d,%d)", lark_dtype_name((lark_dtype)s),
                lark_dtype_name((lark_dtype)d), j, i);
        }
      lark_tensor_release(dst2);
      lark_tensor_release(base);
      lark_tensor_release(dst);
    }
    lark_tensor_release(src);
  }

  /* a big strided copy (OpenMP path) with a conversion, against the element-by-element rule */
  int64_t big[2] = {200, 300};
  lark_tensor *src = rand_operand(2, big, LARK_FLOAT64);
  lark_tensor *dst = lark_empty(2, big, LARK_INT64, NULL);
  CHECK(lark_copy_(dst, src) == 0, "big float64 -> int64 copy");
  int64_t c[2] = {0, 0};
  int bad = 0;
  do {
    if (data_get(dst, c[0] * 300 + c[1]) != trunc(at(src, c))) bad++;
  } while (next_coord(2, big, c));
  CHECK(bad == 0, "%d elements of the big copy differ", bad);
  lark_tensor_release(src);
  lark_tensor_release(dst);

  /* copy_ into a smaller shape, or from a shape that does not broadcast, fails */
  lark_tensor *x = lark_empty(1, (int64_t[]){3}, LARK_FLOAT32, NULL), *y = lark_empty(1, (int64_t[]){4}, LARK_FLOAT32, NULL);
  CHECK(lark_copy_(x, y) < 0 && error_has("copy: shape [4] cannot be broadcast to [3]"), "copy_ of mismatched shapes");
  lark_tensor_release(x);
  lark_tensor_release(y);
}

/* ---- fill, factories ----------------------------------------------------------------------- */

static void test_factories(void) {
  lark_tensor *t = lark_arange(0, 5, 1, LARK_INT64, NULL);
  CHECK(t && t->ndim == 1 && t->shape[0] == 5 && t->dtype == LARK_INT64, "arange(0, 5)");
  for (int64_t i = 0; t && i < 5; i++) CHECK(data_get(t, i) == (double)i, "arange value %lld", (long long)i);
  lark_tensor_release(t);
  t = lark_arange(1, 0, -0.25, LARK_FLOAT64, NULL);
  CHECK(t && t->shape[0] == 4, "arange(1, 0, -0.25) has 4 elements");
  for (int64_t i = 0; t && i < 4; i++) CHECK(data_get(t, i) == 1 - 0.25 * (double)i, "arange down value");
  lark_tensor_release(t);
  t = lark_linspace(-1, 1, 5, LARK_FLOAT64, NULL);
  for (int64_t i = 0; t && i < 5; i++) CHECK(data_get(t, i) == -1 + 0.5 * (double)i, "linspace value %lld", (long long)i);
  lark_tensor_release(t);
  t = lark_eye(3, 4, LARK_UINT8, NULL);
  for (int64_t i = 0; t && i < 12; i++) CHECK(data_get(t, i) == (i / 4 == i % 4), "eye(3, 4) element %lld", (long long)i);
  lark_tensor_release(t);
  t = lark_full(2, (int64_t[]){2, 2}, -3.7, LARK_INT64, NULL);
  for (int64_t i = 0; t && i < 4; i++) CHECK(data_get(t, i) == -3, "full int64 truncates -3.7");
  lark_tensor_release(t);
  t = lark_full(1, (int64_t[]){3}, NAN, LARK_UINT8, NULL);
  for (int64_t i = 0; t && i < 3; i++) CHECK(data_get(t, i) == 0, "full uint8 of NaN is 0");
  lark_tensor_release(t);
  double v = 0;
  t = lark_scalar(2.5, LARK_FLOAT32, NULL);
  CHECK(t && t->ndim == 0 && lark_get_flat(t, 0, &v) == 0 && v == 2.5, "scalar 2.5");
  CHECK(lark_get_flat(t, 1, &v) < 0 && error_has("item: index 2 out of range"), "get_flat out of range");
  lark_tensor_release(t);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_errors(void) {
  int64_t s23[2] = {2, 3}, s4[1] = {4};
  lark_tensor *a = iota(2, s23, LARK_FLOAT32), *b = iota(1, s4, LARK_FLOAT32);
  lark_clear_error();
  CHECK(lark_add(a, b) == NULL && strcmp(lark_error(), "add: shapes [2,3] and [4] cannot be broadcast") == 0 &&
            lark_error_code() == LARK_ERR_SHAPE,
        "add of [2,3] and [4]");
  CHECK(lark_binary(LARK_OP_GE, a, b) == NULL && error_has("ge: shapes [2,3] and [4]"), "ge names itself");
  CHECK(lark_view(a, 1, (int64_t[]){5}) == NULL && error_has("view: cannot view a tensor of shape [2,3] (6 elements) as [5]"),
        "view to the wrong numel");
  CHECK(lark_view(a, 2, (int64_t[]){-1, -1}) == NULL && error_has("view: only one size may be -1"), "two -1 sizes");
  CHECK(lark_reshape(a, 2, (int64_t[]){4, -1}) == NULL && error_has("reshape: shape [4,-1] is invalid for a tensor of 6"),
        "reshape with an impossible -1");
  CHECK(lark_narrow(a, 1, 2, 2) == NULL && error_has("narrow:") && lark_error_code() == LARK_ERR_INDEX,
        "narrow past the end");
  CHECK(lark_narrow(a, 2, 0, 1) == NULL && error_has("narrow: dim 3 out of range"), "narrow of a missing dim");
  CHECK(lark_select(a, 0, 2) == NULL && error_has("select: index 3 is out of range for dim 1 of size 2"),
        "select out of range");
  CHECK(lark_select(a, 1, -4) == NULL && error_has("select: index -4 is out of range for dim 2 of size 3"),
        "select negative out of range");
  CHECK(lark_slice(a, 0, 0, 2, 0) == NULL && error_has("slice: step must be positive"), "slice step 0");
  CHECK(lark_transpose(a, 0, 5) == NULL && error_has("transpose: dim 6 out of range"), "transpose bad dim");
  CHECK(lark_permute(a, 2, (int[]){0, 0}) == NULL && error_has("permute: dim 1 appears twice"), "permute twice");
  CHECK(lark_permute(a, 1, (int[]){0}) == NULL && error_has("permute: 1 dims given for a tensor of 2 dims"),
        "permute too few");
  CHECK(lark_expand(a, 2, (int64_t[]){4, 3}) == NULL && error_has("expand: cannot expand shape [2,3] to [4,3]"),
        "expand a dim that is not 1");
  CHECK(lark_expand(a, 1, (int64_t[]){3}) == NULL && error_has("expand:"), "expand to fewer dims");
  CHECK(lark_unsqueeze(a, 4) == NULL && error_has("unsqueeze: dim 5 out of range"), "unsqueeze out of range");
  CHECK(lark_squeeze(a, -3) == NULL && error_has("squeeze: dim -3 out of range"), "squeeze out of range");
  CHECK(lark_empty(2, (int64_t[]){2, -1}, LARK_FLOAT32, NULL) == NULL && error_has("empty: size -1 of dim 2 is negative"),
        "negative size");
  CHECK(lark_empty(2, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40}, LARK_FLOAT32, NULL) == NULL &&
            error_has("empty: a tensor of shape [1099511627776,1099511627776] is too large"),
        "overflowing size");
  CHECK(lark_empty(1, (int64_t[]){1}, (lark_dtype)42, NULL) == NULL && error_has("empty: unknown dtype"), "bad dtype");
  CHECK(lark_as_strided(a, 1, (int64_t[]){4}, (int64_t[]){2}, 0) == NULL && error_has("as_strided:"),
        "as_strided past the storage");
  CHECK(lark_arange(0, 1, 0, LARK_FLOAT32, NULL) == NULL && error_has("arange: "), "arange step 0");
  CHECK(lark_arange(0, 1, -1, LARK_FLOAT32, NULL) == NULL && error_has("arange: a step of -1 never goes"), "arange backwards");
  CHECK(lark_linspace(0, 1, -1, LARK_FLOAT32, NULL) == NULL && error_has("linspace:"), "linspace of -1 points");
  CHECK(lark_binary_(LARK_OP_ADD, b, a) < 0 && error_has("add_: shapes [4] and [2,3] cannot be broadcast"),
        "in place with shapes that do not broadcast");
  CHECK(lark_where(a, a, a) == NULL && error_has("where: the condition must be a bool or uint8 tensor, got float32"),
        "where on a float condition");
  lark_tensor *row = lark_zeros(2, (int64_t[]){1, 3}, LARK_FLOAT32, NULL);
  lark_tensor *ex = lark_expand(row, 2, s23);
  CHECK(lark_binary_(LARK_OP_ADD, ex, a) < 0 && error_has("add_: the tensor is an expanded view"), "add_ into an expanded view");
  CHECK(lark_binary_out(LARK_OP_ADD, ex, a, a) < 0 && error_has("add: out is an expanded view"), "out= an expanded view");
  CHECK(lark_unary_(LARK_OP_EXP, ex) < 0 && error_has("exp_: the tensor is an expanded view"), "exp_ of an expanded view");
  CHECK(lark_clamp_(ex, 0, 1) < 0 && error_has("clamp_: the tensor is an expanded view"), "clamp_ of an expanded view");
  CHECK(data_get(row, 0) == 0 && data_get(row, 1) == 0 && data_get(row, 2) == 0, "the expanded base is untouched");
  lark_tensor_release(ex);
  lark_tensor_release(row);
  lark_tensor *bo = lark_ones(1, (int64_t[]){2}, LARK_BOOL, NULL);
  CHECK(lark_binary(LARK_OP_SUB, bo, bo) == NULL && error_has("sub: not defined for two bool tensors"), "bool - bool");
  CHECK(lark_unary(LARK_OP_NEG, bo) == NULL && error_has("neg: not defined for bool"), "-bool");
  CHECK(lark_clamp(bo, 0, 1) == NULL && error_has("clamp: not defined for bool"), "clamp bool");
  lark_tensor_release(bo);

  /* a freed tensor is empty: ops that need its elements say so */
  lark_tensor *f = iota(1, s4, LARK_FLOAT32);
  lark_tensor *fv = lark_narrow(f, 0, 1, 2);
  lark_tensor_free_storage(f);
  CHECK(lark_numel(f) == 0 && f->ndim == 1, "freed tensor is empty");
  CHECK(fv->storage && data_get(fv, 0) == 1 && data_get(fv, 1) == 2, "a view keeps the storage of a freed tensor");
  lark_tensor_release(fv);
  lark_tensor_release(f);

  lark_tensor_release(a);
  lark_tensor_release(b);
}

int main(void) {
  rand_seed(0x2545F4914F6CDD1Dull);
  lark_set_num_threads(2);
  int64_t start = lark_bytes_allocated(LARK_CPU);
  test_view_refcounts();
  test_view_strides();
  test_broadcast_random();
  test_binary_inplace_out();
  test_copy_dtypes();
  test_factories();
  test_errors();
  CHECK_NO_LEAK(start);
  return check_report("test_tensor");
}
