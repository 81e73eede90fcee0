/* bind_tensor.c: the Tensor userdata: construction, queries, views, copies, conversions,
 * Torch7-style indexing (t[i], t[{{1,3}, 2}], t[mask]) and lifetime (__gc, __close, free). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

static lark_device opt_device_default(void) { return LARK_DEVICE_CPU; }

/* ---- construction --------------------------------------------------------------------------- */

/* Walks a nested table once to find its shape, checking that it is rectangular. */
static void table_shape(lua_State *L, int idx, int depth, int *ndim, int64_t *shape, bool *has_bool, bool *all_int) {
  lua_Integer n = luaL_len(L, idx);
  if (depth >= LARK_MAX_DIMS) luaL_error(L, "tensor: the table is nested deeper than %d levels", LARK_MAX_DIMS);
  if (depth == *ndim) {
    shape[depth] = n;
    *ndim = depth + 1;
    if (n > 0) {
      lua_geti(L, idx, 1);
      if (lua_istable(L, -1)) table_shape(L, lua_gettop(L), depth + 1, ndim, shape, has_bool, all_int);
      lua_pop(L, 1);
    }
  } else if (shape[depth] != n) {
    luaL_error(L, "tensor: the table is not rectangular: a row at depth %d has %I elements, expected %I", depth + 1, n,
               (lua_Integer)shape[depth]);
  }
}

/* Writes the numbers of a rectangular nested table as float64 into *p (advancing it). */
static void table_fill(lua_State *L, int idx, int depth, int ndim, const int64_t *shape, double **p, bool *has_bool,
                       bool *all_int) {
  lua_Integer n = luaL_len(L, idx);
  if (n != shape[depth])
    luaL_error(L, "tensor: the table is not rectangular: a row at depth %d has %I elements, expected %I", depth + 1, n,
               (lua_Integer)shape[depth]);
  for (lua_Integer i = 1; i <= n; i++) {
    int ty = lua_geti(L, idx, i);
    if (depth + 1 < ndim) {
      if (ty != LUA_TTABLE) luaL_error(L, "tensor: expected a table at depth %d, got %s", depth + 2, lua_typename(L, ty));
      table_fill(L, lua_gettop(L), depth + 1, ndim, shape, p, has_bool, all_int);
    } else if (ty == LUA_TNUMBER) {
      if (!lua_isinteger(L, -1)) *all_int = false;
      *(*p)++ = lua_tonumber(L, -1);
    } else if (ty == LUA_TBOOLEAN) {
      *has_bool = true;
      *(*p)++ = lua_toboolean(L, -1);
    } else if (ty == LUA_TTABLE) {
      luaL_error(L, "tensor: the table is not rectangular: a table where a number was expected at depth %d", depth + 1);
    } else {
      luaL_error(L, "tensor: expected numbers or booleans in the table, got %s", lua_typename(L, ty));
    }
    lua_pop(L, 1);
  }
}

/* lark.tensor(data [, opts]): data is a number, a boolean, a nested table or a tensor (copied). */
static int l_tensor(lua_State *L) {
  lark_dtype dt = LARK_FLOAT32;
  lark_device dev = opt_device_default();
  int dt_given = 0;
  if (!lua_isnoneornil(L, 2)) {
    lark_dtype before = dt;
    lb_opt_dtype_device(L, 2, "tensor", &dt, &dev);
    dt_given = 1;
    (void)before;
  }
  if (lb_is(L, 1)) {
    lark_tensor *src = lb_opt(L, 1);
    lb_push(L, lark_to(src, dt_given ? dt : src->dtype, &dev));
    lark_tensor *c = lb_opt(L, -1);
    if (c == src) { /* lark_to shares when nothing changes; tensor() always copies */
      lua_pop(L, 1);
      lb_push(L, lark_clone(src));
    }
    return 1;
  }
  int64_t shape[LARK_MAX_DIMS];
  int ndim = 0;
  bool has_bool = false, all_int = true;
  double one;
  double *buf = &one, *p;
  if (lua_type(L, 1) == LUA_TNUMBER || lua_isboolean(L, 1)) {
    one = lua_isboolean(L, 1) ? lua_toboolean(L, 1) : lua_tonumber(L, 1);
    has_bool = lua_isboolean(L, 1);
  } else if (lua_istable(L, 1)) {
    table_shape(L, 1, 0, &ndim, shape, &has_bool, &all_int);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    buf = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof(double), 0); /* freed by the GC, even on error */
    p = buf;
    table_fill(L, 1, 0, ndim, shape, &p, &has_bool, &all_int);
  } else {
    return luaL_error(L, "tensor: argument 1: expected a table of numbers, a number or a Tensor, got %s",
                      luaL_typename(L, 1));
  }
  if (!dt_given && has_bool) dt = LARK_BOOL;
  lark_tensor *host = lark_from_blob(buf, ndim, shape, LARK_FLOAT64);
  if (!host) return lb_error(L);
  lark_tensor *t = lark_to(host, dt, &dev);
  if (t == host) { /* float64 on the CPU: still must own its memory */
    lark_tensor_release(t);
    t = lark_clone(host);
  }
  lark_tensor_release(host);
  lb_push(L, t);
  return 1;
}

/* Factories take sizes as varargs or a table, then an optional options table / dtype string. */
static int factory_args(lua_State *L, int first, const char *fname, int64_t *shape, lark_dtype *dt, lark_device *dev) {
  int ndim = lb_checkshape(L, first, shape, fname);
  int opts = lua_istable(L, first) ? first + 1 : first + ndim;
  *dt = LARK_FLOAT32;
  *dev = opt_device_default();
  if (lua_gettop(L) >= opts) lb_opt_dtype_device(L, opts, fname, dt, dev);
  if (lua_gettop(L) > opts)
    luaL_error(L, "%s: argument %d: unexpected %s after the options", fname, opts + 1, luaL_typename(L, opts + 1));
  return ndim;
}

/* lark.empty(sizes... [, {dtype=, device=, pin_memory=}]): pin_memory = true makes the CPU tensor in
 * pinned host memory (ordinary memory without a GPU), as torch.empty(..., pin_memory=True). */
static int l_empty(lua_State *L) {
  int64_t shape[LARK_MAX_DIMS];
  lark_dtype dt;
  lark_device dev;
  int nd = factory_args(L, 1, "empty", shape, &dt, &dev);
  int opts = lua_istable(L, 1) ? 2 : 1 + nd; /* where factory_args found the options */
  bool pin = false;
  if (lua_istable(L, opts)) {
    int ty = lua_getfield(L, opts, "pin_memory");
    if (ty != LUA_TNIL && ty != LUA_TBOOLEAN)
      return luaL_error(L, "empty: option pin_memory must be a boolean, got %s", luaL_typename(L, -1));
    pin = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (pin && dev.kind != LARK_CPU) {
    char d[32];
    return luaL_error(L, "empty: pin_memory needs device cpu (pinned memory is host memory), got device %s",
                      lark_device_str(dev, d, sizeof d));
  }
  lb_push(L, pin ? lark_empty_pinned(nd, shape, dt) : lark_empty(nd, shape, dt, &dev));
  return 1;
}

static int l_zeros(lua_State *L) {
  int64_t shape[LARK_MAX_DIMS];
  lark_dtype dt;
  lark_device dev;
  int nd = factory_args(L, 1, "zeros", shape, &dt, &dev);
  lb_push(L, lark_zeros(nd, shape, dt, &dev));
  return 1;
}

static int l_ones(lua_State *L) {
  int64_t shape[LARK_MAX_DIMS];
  lark_dtype dt;
  lark_device dev;
  int nd = factory_args(L, 1, "ones", shape, &dt, &dev);
  lb_push(L, lark_ones(nd, shape, dt, &dev));
  return 1;
}

/* lark.full(shape_table, value [, opts]) */
static int l_full(lua_State *L) {
  int64_t shape[LARK_MAX_DIMS];
  luaL_argexpected(L, lua_istable(L, 1), 1, "a table of sizes");
  int nd = lb_checkshape(L, 1, shape, "full");
  double v = lua_isboolean(L, 2) ? lua_toboolean(L, 2) : luaL_checknumber(L, 2);
  lark_dtype dt = lua_isinteger(L, 2) ? LARK_INT64 : lua_isboolean(L, 2) ? LARK_BOOL : LARK_FLOAT32;
  lark_device dev = opt_device_default();
  lb_opt_dtype_device(L, 3, "full", &dt, &dev);
  lb_push(L, lark_full(nd, shape, v, dt, &dev));
  return 1;
}

/* lark.arange([start,] end [, step] [, opts]): [start, end) like PyTorch; int64 when all are integers. */
static int l_arange(lua_State *L) {
  int nnum = 0;
  while (lua_type(L, nnum + 1) == LUA_TNUMBER) nnum++;
  if (nnum == 0 || nnum > 3) return luaL_error(L, "arange: expected ([start,] end [, step]) numbers, got %s", luaL_typename(L, 1));
  bool all_int = true;
  for (int i = 1; i <= nnum; i++) all_int = all_int && lua_isinteger(L, i);
  double start = nnum >= 2 ? lua_tonumber(L, 1) : 0, end = nnum >= 2 ? lua_tonumber(L, 2) : lua_tonumber(L, 1);
  double step = nnum == 3 ? lua_tonumber(L, 3) : 1;
  lark_dtype dt = all_int ? LARK_INT64 : LARK_FLOAT32;
  lark_device dev = opt_device_default();
  lb_opt_dtype_device(L, nnum + 1, "arange", &dt, &dev);
  lb_push(L, lark_arange(start, end, step, dt, &dev));
  return 1;
}

/* lark.range(start, end [, step]): Torch7's inclusive range. */
static int l_range(lua_State *L) {
  double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
  bool has_step = lua_type(L, 3) == LUA_TNUMBER; /* else argument 3 may be the options */
  double s = has_step ? lua_tonumber(L, 3) : 1;
  bool all_int = lua_isinteger(L, 1) && lua_isinteger(L, 2) && (!has_step || lua_isinteger(L, 3));
  lark_dtype dt = all_int ? LARK_INT64 : LARK_FLOAT32;
  lark_device dev = opt_device_default();
  lb_opt_dtype_device(L, has_step ? 4 : 3, "range", &dt, &dev);
  if (s == 0 || s != s) return luaL_error(L, "range: step must be non-zero");
  /* checked here, not by arange, so that the message names range and the end the user gave */
  if ((s > 0 && b < a) || (s < 0 && b > a)) {
    if (all_int)
      return luaL_error(L, "range: a step of %I never goes from %I to %I", (lua_Integer)s, (lua_Integer)a, (lua_Integer)b);
    return luaL_error(L, "range: a step of %f never goes from %f to %f", s, a, b);
  }
  /* end is inclusive: stop half a step past it so rounding cannot drop or add the last value */
  lb_push(L, lark_arange(a, b + s / 2, s, dt, &dev));
  return 1;
}

static int l_linspace(lua_State *L) {
  double a = luaL_checknumber(L, 1), b = luaL_checknumber(L, 2);
  lua_Integer n = luaL_checkinteger(L, 3);
  lark_dtype dt = LARK_FLOAT32;
  lark_device dev = opt_device_default();
  lb_opt_dtype_device(L, 4, "linspace", &dt, &dev);
  lb_push(L, lark_linspace(a, b, n, dt, &dev));
  return 1;
}

static int l_eye(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  int opts = 2;
  lua_Integer m = n;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    m = luaL_checkinteger(L, 2);
    opts = 3;
  }
  if (n < 0 || m < 0) return luaL_error(L, "eye: sizes must be >= 0, got %I x %I", n, m);
  lark_dtype dt = LARK_FLOAT32;
  lark_device dev = opt_device_default();
  lb_opt_dtype_device(L, opts, "eye", &dt, &dev);
  lb_push(L, lark_eye(n, m, dt, &dev));
  return 1;
}

/* ---- queries -------------------------------------------------------------------------------- */

static int l_size(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "size");
  if (lua_isnoneornil(L, 2)) {
    lb_push_shape(L, t->ndim, t->shape);
    return 1;
  }
  lua_pushinteger(L, t->shape[lb_checkdim(L, 2, t->ndim, "size")]);
  return 1;
}

static int l_stride(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "stride");
  if (lua_isnoneornil(L, 2)) {
    lb_push_shape(L, t->ndim, t->stride);
    return 1;
  }
  lua_pushinteger(L, t->stride[lb_checkdim(L, 2, t->ndim, "stride")]);
  return 1;
}

static int l_dim(lua_State *L) {
  lua_pushinteger(L, lb_check(L, 1, "dim")->ndim);
  return 1;
}

static int l_numel(lua_State *L) {
  lua_pushinteger(L, lark_numel(lb_check(L, 1, "numel")));
  return 1;
}

static int l_dtype(lua_State *L) {
  lua_pushstring(L, lark_dtype_name(lb_check(L, 1, "dtype")->dtype));
  return 1;
}

static int l_device(lua_State *L) {
  char buf[32];
  lua_pushstring(L, lark_device_str(lark_tensor_device(lb_check(L, 1, "device")), buf, sizeof buf));
  return 1;
}

static int l_is_contiguous(lua_State *L) {
  lua_pushboolean(L, lark_is_contiguous(lb_check(L, 1, "is_contiguous")));
  return 1;
}

static int l_storage_offset(lua_State *L) {
  lua_pushinteger(L, lb_check(L, 1, "storage_offset")->offset + 1); /* 1-based, as in Torch7 */
  return 1;
}

static int l_is_tensor(lua_State *L) {
  lua_pushboolean(L, lb_is(L, 1));
  return 1;
}

/* Whether two tensors share storage (views of one another). */
static int l_is_view_of(lua_State *L) {
  lark_tensor *a = lb_check(L, 1, "shares_storage"), *b = lb_check(L, 2, "shares_storage");
  lua_pushboolean(L, a->storage && a->storage == b->storage);
  return 1;
}

/* ---- views ---------------------------------------------------------------------------------- */

static int shape_after(lua_State *L, int first, const char *fname, int64_t *shape) {
  /* like lb_checkshape, but -1 is allowed (inferred / kept) */
  int top = lua_gettop(L), n = 0;
  if (lua_istable(L, first) && !lb_is(L, first)) {
    lua_Integer len = luaL_len(L, first);
    if (len > LARK_MAX_DIMS) luaL_error(L, "%s: %I dims requested, lark supports at most %d", fname, len, LARK_MAX_DIMS);
    for (int i = 1; i <= len; i++) {
      lua_geti(L, first, i);
      int isint;
      shape[n++] = lua_tointegerx(L, -1, &isint);
      if (!isint) luaL_error(L, "%s: size %d must be an integer, got %s", fname, i, luaL_typename(L, -1));
      lua_pop(L, 1);
    }
    return n;
  }
  for (int i = first; i <= top; i++) {
    int isint;
    if (n >= LARK_MAX_DIMS) luaL_error(L, "%s: too many sizes: lark supports at most %d dims", fname, LARK_MAX_DIMS);
    shape[n++] = lua_tointegerx(L, i, &isint);
    if (!isint) luaL_error(L, "%s: argument %d: expected an integer size, got %s", fname, i, luaL_typename(L, i));
  }
  return n;
}

static int l_view(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "view");
  int64_t shape[LARK_MAX_DIMS];
  int n;
  if (lb_is(L, 2)) { /* view_as */
    lark_tensor *o = lb_opt(L, 2);
    n = o->ndim;
    memcpy(shape, o->shape, sizeof(int64_t) * (size_t)n);
  } else {
    n = shape_after(L, 2, "view", shape);
  }
  lb_push(L, lark_view(t, n, shape));
  return 1;
}

static int l_reshape(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "reshape");
  int64_t shape[LARK_MAX_DIMS];
  int n = shape_after(L, 2, "reshape", shape);
  lb_push(L, lark_reshape(t, n, shape));
  return 1;
}

/* t:flatten([start_dim=1 [, end_dim=-1]]) */
static int l_flatten(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "flatten");
  if (t->ndim == 0) {
    int64_t one = 1;
    lb_push(L, lark_reshape(t, 1, &one));
    return 1;
  }
  int s = lua_isnoneornil(L, 2) ? 0 : lb_checkdim(L, 2, t->ndim, "flatten");
  int e = lua_isnoneornil(L, 3) ? t->ndim - 1 : lb_checkdim(L, 3, t->ndim, "flatten");
  if (s > e) return luaL_error(L, "flatten: start dim %d comes after end dim %d", s + 1, e + 1);
  int64_t shape[LARK_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < s; i++) shape[n++] = t->shape[i];
  int64_t m = 1;
  for (int i = s; i <= e; i++) m *= t->shape[i];
  shape[n++] = m;
  for (int i = e + 1; i < t->ndim; i++) shape[n++] = t->shape[i];
  lb_push(L, lark_reshape(t, n, shape));
  return 1;
}

/* t:narrow(dim, start, length): start is 1-based. */
static int l_narrow(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "narrow");
  if (t->ndim == 0) return luaL_error(L, "narrow: cannot narrow a 0-d tensor");
  int d = lb_checkdim(L, 2, t->ndim, "narrow");
  lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
  if (start < 0) start += t->shape[d] + 1;
  if (start < 1 || len < 0 || start - 1 + len > t->shape[d])
    return luaL_error(L, "narrow: %I elements from index %I do not fit dim %d of size %I (expected 1 <= start, start + length - 1 <= size)",
                      len, start, d + 1, (lua_Integer)t->shape[d]);
  lb_push(L, lark_narrow(t, d, start - 1, len));
  return 1;
}

static int64_t index_1based(lua_State *L, lua_Integer given, int64_t size, const char *fname, int dim) {
  lua_Integer i = given < 0 ? given + size + 1 : given;
  if (i < 1 || i > size) /* the message names the index as the user wrote it */
    luaL_error(L, "%s: index %I is out of range for dim %d of size %I (indices are 1-based)", fname, given, dim + 1,
               (lua_Integer)size);
  return i - 1;
}

/* t:select(dim, index): index 1-based, negative from the end. */
static int l_select(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "select");
  if (t->ndim == 0) return luaL_error(L, "select: cannot select from a 0-d tensor");
  int d = lb_checkdim(L, 2, t->ndim, "select");
  int64_t i = index_1based(L, luaL_checkinteger(L, 3), t->shape[d], "select", d);
  lb_push(L, lark_select(t, d, i));
  return 1;
}

static int l_transpose(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "transpose");
  if (t->ndim < 2 && lua_isnoneornil(L, 2)) {
    lb_push(L, lark_tensor_retain(t));
    return 1;
  }
  int d0 = lua_isnoneornil(L, 2) ? 0 : lb_checkdim(L, 2, t->ndim, "transpose");
  int d1 = lua_isnoneornil(L, 3) ? 1 : lb_checkdim(L, 3, t->ndim, "transpose");
  lb_push(L, lark_transpose(t, d0, d1));
  return 1;
}

/* t:t(): transpose of a matrix (a vector stays). */
static int l_t(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "t");
  if (t->ndim > 2) return luaL_error(L, "t: expected a tensor of at most 2 dims, got %d (use transpose(d1, d2))", t->ndim);
  lb_push(L, t->ndim < 2 ? lark_tensor_retain(t) : lark_transpose(t, 0, 1));
  return 1;
}

static int l_permute(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "permute");
  int dims[LARK_MAX_DIMS], n = 0;
  int64_t raw[LARK_MAX_DIMS];
  int nr = shape_after(L, 2, "permute", raw);
  if (nr != t->ndim) return luaL_error(L, "permute: %d dims given for a tensor of %d dims", nr, t->ndim);
  for (int i = 0; i < nr; i++) dims[n++] = lb_dim(L, raw[i], t->ndim, "permute", i + 2);
  lb_push(L, lark_permute(t, n, dims));
  return 1;
}

static int l_expand(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "expand");
  int64_t shape[LARK_MAX_DIMS];
  int n;
  if (lb_is(L, 2)) {
    lark_tensor *o = lb_opt(L, 2);
    n = o->ndim;
    memcpy(shape, o->shape, sizeof(int64_t) * (size_t)n);
  } else {
    n = shape_after(L, 2, "expand", shape);
  }
  lb_push(L, lark_expand(t, n, shape));
  return 1;
}

static int l_squeeze(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "squeeze");
  int d = lua_isnoneornil(L, 2) ? LARK_ALL_DIMS : lb_checkdim(L, 2, t->ndim, "squeeze");
  lb_push(L, lark_squeeze(t, d));
  return 1;
}

static int l_unsqueeze(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "unsqueeze");
  lua_Integer d = luaL_checkinteger(L, 2);
  int n = t->ndim + 1;
  if (d == 0 || d > n || d < -n)
    return luaL_error(L, "unsqueeze: dim %I is out of range for a result of %d dims (expected 1..%d or -%d..-1)", d, n, n, n);
  lb_push(L, lark_unsqueeze(t, d > 0 ? (int)d - 1 : (int)(d + n)));
  return 1;
}

/* t:unfold(dim, size, step): Torch7's sliding windows as a view (used by pooling and im2col). */
static int l_unfold(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "unfold");
  int d = lb_checkdim(L, 2, t->ndim, "unfold");
  lua_Integer size = luaL_checkinteger(L, 3), step = luaL_checkinteger(L, 4);
  int64_t n = t->ndim ? t->shape[d] : 1;
  if (size < 0 || size > n || step < 1)
    return luaL_error(L, "unfold: window %I with step %I does not fit dim %d of size %I", size, step, d + 1, (lua_Integer)n);
  if (t->ndim >= LARK_MAX_DIMS) return luaL_error(L, "unfold: too many dims");
  int64_t shape[LARK_MAX_DIMS], stride[LARK_MAX_DIMS];
  for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i], stride[i] = t->stride[i];
  shape[d] = (n - size) / step + 1;
  stride[d] = t->stride[d] * step;
  shape[t->ndim] = size;
  stride[t->ndim] = t->stride[d];
  lb_push(L, lark_as_strided(t, t->ndim + 1, shape, stride, t->offset));
  return 1;
}

/* ---- copies and conversions ----------------------------------------------------------------- */

static int l_contiguous(lua_State *L) {
  lb_push(L, lark_contiguous(lb_check(L, 1, "contiguous")));
  return 1;
}

static int l_clone(lua_State *L) {
  lb_push(L, lark_clone(lb_check(L, 1, "clone")));
  return 1;
}

static int l_copy_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "copy_");
  lark_tensor *s = lb_check(L, 2, "copy_");
  lb_check_status(L, lark_copy_(t, s));
  lua_settop(L, 1);
  return 1;
}

static int l_fill_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "fill_");
  double v = lua_isboolean(L, 2) ? lua_toboolean(L, 2) : luaL_checknumber(L, 2);
  lb_check_status(L, lark_fill_(t, v));
  lua_settop(L, 1);
  return 1;
}

static int l_zero_(lua_State *L) {
  lb_check_status(L, lark_fill_(lb_check(L, 1, "zero_"), 0));
  lua_settop(L, 1);
  return 1;
}

/* t:to(dtype | device | {dtype=, device=}) */
static int l_to(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "to");
  lark_dtype dt = t->dtype;
  lark_device dev = lark_tensor_device(t);
  for (int i = 2; i <= lua_gettop(L); i++) {
    if (lua_type(L, i) == LUA_TSTRING) {
      const char *s = lua_tostring(L, i);
      int d = lark_dtype_from_name(s);
      if (d >= 0) dt = (lark_dtype)d;
      else if (lark_device_parse(s, &dev))
        return luaL_error(L, "to: argument %d: '%s' is neither a dtype (float32, float64, int64, uint8, bool) nor a device (cpu, cuda, cuda:N)", i, s);
    } else if (lua_istable(L, i)) {
      lb_opt_dtype_device(L, i, "to", &dt, &dev);
    } else if (lb_is(L, i)) { /* like another tensor */
      lark_tensor *o = lb_opt(L, i);
      dt = o->dtype;
      dev = lark_tensor_device(o);
    } else {
      return luaL_error(L, "to: argument %d: expected a dtype, a device, an options table or a tensor, got %s", i,
                        luaL_typename(L, i));
    }
  }
  if (dt == t->dtype && lark_device_eq(dev, lark_tensor_device(t))) {
    lua_settop(L, 1); /* converting to what it already is returns self, as in Torch7 */
    return 1;
  }
  lb_push(L, lark_to(t, dt, &dev));
  return 1;
}

/* t:pin_memory(): t itself when pinned, else a pinned copy (ordinary memory without a GPU: CPU-only
 * machines run the same scripts); t:is_pinned(). As in PyTorch. */
static int l_pin_memory(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "pin_memory");
  if (lark_is_pinned(t)) {
    lua_settop(L, 1);
    return 1;
  }
  lb_push(L, lark_pin_memory(t));
  return 1;
}

static int l_is_pinned(lua_State *L) {
  lua_pushboolean(L, lark_is_pinned(lb_check(L, 1, "is_pinned")));
  return 1;
}

static int l_item(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "item");
  if (lark_numel(t) != 1) {
    char buf[256];
    return luaL_error(L, "item: expected a tensor of one element, got shape %s (%I elements)",
                      lark_shape_str(t->ndim, t->shape, buf, sizeof buf), (lua_Integer)lark_numel(t));
  }
  if (t->dtype == LARK_INT64) {
    /* read the int64 itself: a double holds integers exactly only up to 2^53 */
    lark_tensor *h = lark_to(t, LARK_INT64, &LARK_DEVICE_CPU);
    if (!h) return lb_error(L);
    int64_t i = *(const int64_t *)lark_data_ptr(h); /* one element: it sits at the view's offset */
    lark_tensor_release(h);
    lua_pushinteger(L, (lua_Integer)i);
    return 1;
  }
  double v;
  lb_check_status(L, lark_get_flat(t, 0, &v));
  if (t->dtype == LARK_BOOL) lua_pushboolean(L, v != 0);
  else if (t->dtype == LARK_INT64 || t->dtype == LARK_UINT8) lua_pushinteger(L, (lua_Integer)v);
  else lua_pushnumber(L, v);
  return 1;
}

/* Pushes element values of a CPU contiguous tensor as a nested table. */
static void push_table(lua_State *L, const lark_tensor *c, int dim, int64_t *pos) {
  const char *base = lark_data_ptr(c);
  if (dim == c->ndim) {
    int64_t i = (*pos)++;
    switch (c->dtype) {
      case LARK_FLOAT32: lua_pushnumber(L, ((const float *)base)[i]); break;
      case LARK_FLOAT64: lua_pushnumber(L, ((const double *)base)[i]); break;
      case LARK_INT64: lua_pushinteger(L, ((const int64_t *)base)[i]); break;
      case LARK_UINT8: lua_pushinteger(L, ((const uint8_t *)base)[i]); break;
      case LARK_BOOL: lua_pushboolean(L, ((const uint8_t *)base)[i]); break;
      default: lua_pushnil(L);
    }
    return;
  }
  int64_t n = c->shape[dim];
  luaL_checkstack(L, 4, "table: nested too deep");
  lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    push_table(L, c, dim + 1, pos);
    lua_rawseti(L, -2, i + 1);
  }
}

static int l_table(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "table");
  lark_tensor *c = lark_to(t, t->dtype, &LARK_DEVICE_CPU);
  if (!c) return lb_error(L);
  lark_tensor *cc = lark_contiguous(c);
  lark_tensor_release(c);
  if (!cc) return lb_error(L);
  lb_push(L, cc); /* keeps it alive (and collectable) if pushing the table raises */
  int64_t pos = 0;
  push_table(L, cc, 0, &pos);
  return 1;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static int l_gc(lua_State *L) {
  lb_tensor *u = luaL_checkudata(L, 1, LB_TENSOR_MT);
  lark_tensor_release(u->t);
  u->t = NULL;
  return 0;
}

/* t:free(): release the memory now; the tensor becomes empty (other views keep the storage). */
static int l_free(lua_State *L) {
  lb_tensor *u = luaL_checkudata(L, 1, LB_TENSOR_MT);
  if (u->t) lark_tensor_free_storage(u->t);
  return 0;
}

/* ---- indexing ------------------------------------------------------------------------------- */

lark_tensor *lark_masked_select(const lark_tensor *t, const lark_tensor *mask);
lark_tensor *lark_index_select(const lark_tensor *t, int dim, const lark_tensor *index);

/* Entry e of the range table at r as an integer (def when nil); false if it is not an integer.
 * Never raises, so the caller can release what it holds first. */
static bool range_entry(lua_State *L, int r, lua_Integer e, lua_Integer def, lua_Integer *out) {
  int ty = lua_geti(L, r, e), isint = 1;
  *out = ty == LUA_TNIL ? def : lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  return ty == LUA_TNIL || (ty == LUA_TNUMBER && isint);
}

/* The view t[key] for a table key: per dim, an integer selects, {} keeps all, {a}, {a,b} or
 * {a,b,step} takes a 1-based inclusive range (negative counts from the end). */
static lark_tensor *index_view(lua_State *L, lark_tensor *t, int key, const char *fname) {
  lua_Integer n = luaL_len(L, key);
  if (n > t->ndim) {
    luaL_error(L, "%s: %I indices given for a tensor of %d dims", fname, n, t->ndim);
    return NULL;
  }
  lark_tensor *v = lark_tensor_retain(t);
  int dim = 0; /* dim of v the next index applies to */
  for (lua_Integer k = 1; k <= n; k++) {
    int ty = lua_geti(L, key, k);
    lark_tensor *next = NULL;
    if (ty == LUA_TNUMBER) {
      int isint;
      lua_Integer i = lua_tointegerx(L, -1, &isint);
      if (!isint) {
        lark_tensor_release(v);
        luaL_error(L, "%s: index %I must be an integer, got %s", fname, k, lua_tostring(L, -1));
      }
      int64_t size = v->shape[dim];
      if (i < 0) i += size + 1;
      if (i < 1 || i > size) {
        lark_tensor_release(v);
        luaL_error(L, "%s: index %I is out of range for dim %d of size %I (indices are 1-based)", fname,
                   lua_tointeger(L, -1), (int)k, (lua_Integer)size);
      }
      next = lark_select(v, dim, i - 1);
    } else if (ty == LUA_TTABLE) {
      int r = lua_gettop(L);
      lua_Integer len = luaL_len(L, r);
      int64_t size = v->shape[dim];
      lua_Integer a = 1, b = size, step = 1;
      bool ok = true;
      if (len >= 1) ok = range_entry(L, r, 1, 1, &a), b = a;
      if (ok && len >= 2) ok = range_entry(L, r, 2, size, &b);
      if (ok && len >= 3) ok = range_entry(L, r, 3, 1, &step);
      if (!ok || len > 3) { /* v is ours until returned: release it before raising */
        lark_tensor_release(v);
        if (!ok) luaL_error(L, "%s: index %I: a range {first, last, step} takes integers", fname, k);
        luaL_error(L, "%s: a range has at most 3 entries {first, last, step}, got %I", fname, len);
      }
      lua_Integer a0 = a, b0 = b; /* as written, for the message */
      if (a < 0) a += size + 1;
      if (b < 0) b += size + 1;
      if (step < 1 || a < 1 || a > size + 1 || b > size || b < a - 1) {
        lark_tensor_release(v);
        luaL_error(L, "%s: range {%I, %I, %I} does not fit dim %d of size %I (1-based, inclusive, step >= 1)", fname,
                   a0, b0, step, (int)k, (lua_Integer)size);
      }
      next = lark_slice(v, dim, a - 1, b, step);
      dim++;
    } else {
      lark_tensor_release(v);
      luaL_error(L, "%s: index %I: expected an integer or a range table, got %s", fname, k, lua_typename(L, ty));
    }
    lua_pop(L, 1);
    lark_tensor_release(v);
    if (!next) lb_error(L);
    v = next;
  }
  return v;
}

static int l_index(lua_State *L) {
  lb_tensor *u = luaL_checkudata(L, 1, LB_TENSOR_MT);
  int kt = lua_type(L, 2);
  if (kt == LUA_TSTRING) {
    /* methods first; then the few properties */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    const char *k = lua_tostring(L, 2);
    if (u->t && strcmp(k, "shape") == 0) {
      lb_push_shape(L, u->t->ndim, u->t->shape);
      return 1;
    }
    /* properties defined in Lua (lark/init.lua) live in the `__getters` table */
    if (lua_getfield(L, lua_upvalueindex(2), k) != LUA_TNIL) {
      lua_pushvalue(L, 1);
      lua_call(L, 1, 1);
      return 1;
    }
    return 1; /* nil */
  }
  lark_tensor *t = lb_check(L, 1, "index");
  if (kt == LUA_TNUMBER) {
    if (t->ndim == 0) return luaL_error(L, "index: cannot index a 0-d tensor (use item())");
    int isint;
    lua_Integer i = lua_tointegerx(L, 2, &isint);
    if (!isint) return luaL_error(L, "index: index must be an integer, got %s", lua_tostring(L, 2));
    lark_tensor *v = lark_select(t, 0, index_1based(L, i, t->shape[0], "index", 0));
    if (v && v->ndim == 0) { /* a number, as in Torch7 */
      lb_push(L, v);
      lua_replace(L, 1);
      lua_settop(L, 1);
      return l_item(L);
    }
    lb_push(L, v);
    return 1;
  }
  if (kt == LUA_TTABLE) {
    lark_tensor *v = index_view(L, t, 2, "index");
    lb_push(L, v);
    if (v->ndim == 0 && luaL_len(L, 2) == t->ndim) {
      bool all_numbers = true;
      for (lua_Integer k = 1; k <= luaL_len(L, 2); k++) {
        lua_geti(L, 2, k);
        all_numbers = all_numbers && lua_type(L, -1) == LUA_TNUMBER;
        lua_pop(L, 1);
      }
      if (all_numbers) {
        lua_replace(L, 1);
        lua_settop(L, 1);
        return l_item(L);
      }
    }
    return 1;
  }
  lark_tensor *k = lb_opt(L, 2);
  if (k && (k->dtype == LARK_BOOL || k->dtype == LARK_UINT8)) {
    lb_push(L, lark_masked_select(t, k));
    return 1;
  }
  if (k && k->dtype == LARK_INT64) { /* 1-based indices along dim 1 */
    lark_tensor *z = lark_binary_scalar(LARK_OP_SUB, k, 1, true, false);
    if (!z) return lb_error(L);
    lark_tensor *r = lark_index_select(t, 0, z);
    lark_tensor_release(z);
    lb_push(L, r);
    return 1;
  }
  return luaL_error(L, "index: expected an integer, a table of ranges, a bool mask or an int64 index tensor, got %s",
                    k ? lark_dtype_name(k->dtype) : luaL_typename(L, 2));
}

int lark_masked_fill_(lark_tensor *t, const lark_tensor *mask, double value);

static void assign(lua_State *L, lark_tensor *dst, int vidx) {
  if (lua_type(L, vidx) == LUA_TNUMBER || lua_isboolean(L, vidx)) {
    lb_check_status(L, lark_fill_(dst, lua_isboolean(L, vidx) ? lua_toboolean(L, vidx) : lua_tonumber(L, vidx)));
  } else if (lb_is(L, vidx)) {
    lb_check_status(L, lark_copy_(dst, lb_opt(L, vidx)));
  } else {
    luaL_error(L, "newindex: can only assign a number, a boolean or a Tensor, got %s", luaL_typename(L, vidx));
  }
}

static int l_newindex(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "newindex");
  int kt = lua_type(L, 2);
  lark_tensor *v = NULL;
  if (kt == LUA_TNUMBER) {
    if (t->ndim == 0) return luaL_error(L, "newindex: cannot index a 0-d tensor (use fill_())");
    int isint;
    lua_Integer i = lua_tointegerx(L, 2, &isint);
    if (!isint) return luaL_error(L, "newindex: index must be an integer, got %s", lua_tostring(L, 2));
    v = lark_select(t, 0, index_1based(L, i, t->shape[0], "newindex", 0));
  } else if (kt == LUA_TTABLE) {
    v = index_view(L, t, 2, "newindex");
  } else if (lb_is(L, 2) && (lb_opt(L, 2)->dtype == LARK_BOOL || lb_opt(L, 2)->dtype == LARK_UINT8)) {
    if (lua_type(L, 3) != LUA_TNUMBER && !lua_isboolean(L, 3))
      return luaL_error(L, "newindex: t[mask] = value takes a number, got %s", luaL_typename(L, 3));
    lb_check_status(L, lark_masked_fill_(t, lb_opt(L, 2), lua_isboolean(L, 3) ? lua_toboolean(L, 3) : lua_tonumber(L, 3)));
    return 0;
  } else if (kt == LUA_TSTRING) {
    /* settable properties are defined in Lua (`__setters`) */
    if (lua_getfield(L, lua_upvalueindex(1), lua_tostring(L, 2)) != LUA_TNIL) {
      lua_pushvalue(L, 1);
      lua_pushvalue(L, 3);
      lua_call(L, 2, 0);
      return 0;
    }
    return luaL_error(L, "newindex: cannot set field '%s' of a Tensor", lua_tostring(L, 2));
  } else {
    return luaL_error(L, "newindex: expected an integer, a table of ranges or a bool mask as index, got %s",
                      luaL_typename(L, 2));
  }
  if (!v) return lb_error(L);
  lb_push(L, v); /* owned by Lua from here, so an error below cannot leak it */
  assign(L, v, 3);
  return 0;
}

static int l_len(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "len");
  lb_push_shape(L, t->ndim, t->shape); /* #t is the size, as in Torch7 */
  return 1;
}

/* ---- threads -------------------------------------------------------------------------------- */

static int l_set_num_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 1 || n > 1024) return luaL_error(L, "set_num_threads: expected 1..1024 threads, got %I", n);
  lark_set_num_threads((int)n);
  return 0;
}

static int l_get_num_threads(lua_State *L) {
  lua_pushinteger(L, lark_get_num_threads());
  return 1;
}

void lb_register_tensor(lua_State *L, int mod, int methods) {
  static const luaL_Reg funcs[] = {
      {"tensor", l_tensor}, {"empty", l_empty}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
      {"arange", l_arange}, {"range", l_range}, {"linspace", l_linspace}, {"eye", l_eye},
      {"is_tensor", l_is_tensor}, {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads},
      {NULL, NULL}};
  static const luaL_Reg meths[] = {
      {"size", l_size}, {"stride", l_stride}, {"dim", l_dim}, {"nDimension", l_dim}, {"numel", l_numel},
      {"nElement", l_numel}, {"dtype", l_dtype}, {"device", l_device}, {"is_contiguous", l_is_contiguous},
      {"isContiguous", l_is_contiguous}, {"storage_offset", l_storage_offset}, {"shares_storage", l_is_view_of},
      {"view", l_view}, {"view_as", l_view}, {"reshape", l_reshape}, {"flatten", l_flatten}, {"narrow", l_narrow},
      {"select", l_select}, {"transpose", l_transpose}, {"t", l_t}, {"permute", l_permute}, {"expand", l_expand},
      {"expand_as", l_expand}, {"squeeze", l_squeeze}, {"unsqueeze", l_unsqueeze}, {"unfold", l_unfold},
      {"contiguous", l_contiguous}, {"clone", l_clone}, {"copy_", l_copy_}, {"copy", l_copy_}, {"fill_", l_fill_},
      {"zero_", l_zero_}, {"to", l_to}, {"item", l_item}, {"table", l_table}, {"free", l_free},
      {"pin_memory", l_pin_memory}, {"is_pinned", l_is_pinned}, {NULL, NULL}};
  lb_register(L, mod, funcs);
  lb_register(L, methods, meths);
  /* the same functions are reachable as lark.view(t, ...) etc. */
  lb_register(L, mod, meths);

  luaL_getmetatable(L, LB_TENSOR_MT);
  int mt = lua_gettop(L);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__getters");
  lua_pushvalue(L, methods);
  lua_insert(L, -2);
  lua_pushcclosure(L, l_index, 2);
  lua_setfield(L, mt, "__index");
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__setters");
  lua_pushcclosure(L, l_newindex, 1);
  lua_setfield(L, mt, "__newindex");
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, mt, "__gc");
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, mt, "__close");
  lua_pushcfunction(L, l_len);
  lua_setfield(L, mt, "__len");
  lua_pushstring(L, "Tensor");
  lua_setfield(L, mt, "__name");
  lua_pop(L, 1);
}
