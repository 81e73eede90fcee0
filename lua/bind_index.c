/* bind_index.c: indexing from Lua.
 *
 *   t:index_select(dim, index)  (alias t:index, as in Torch7); index: int64 tensor or {i, j, ...}
 *   t:gather(dim, index), t:scatter_add(dim, index, src), t:scatter_add_(dim, index, src)
 *   t:masked_fill(mask, value), t:masked_fill_(mask, value), t:masked_select(mask)
 *   t:nonzero()                          -> (nnz, ndim) int64 of 1-based indices
 *   t:topk(k [, dim=-1] [, largest=true] [, sorted=true])  -> values, indices
 *   t:sort([dim=-1] [, descending=false]) (or t:sort(true)) -> values, indices
 *   t:cumsum(dim)                        (dim may be left out for 0-d and 1-D tensors)
 *
 * Indices are 1-based in Lua and 0-based in core. Index tensors coming in are converted here once
 * (a temporary copy minus one, checked against 1..size so that errors speak 1-based); indices
 * going out (nonzero, topk, sort) get one added. Temporaries are pushed on the Lua stack as soon as
 * they exist, so a Lua error on the way never leaks them. */
#include <limits.h>
#include <string.h>

#include "binding.h"

/* The index at argument idx (a 1-based int64 tensor, or with allow_table a Lua list of integers)
 * as a 0-based int64 tensor whose values are checked to lie in 1..size. The result is also left
 * on the Lua stack, which owns it. */
static lark_tensor *index_arg(lua_State *L, int idx, const char *fname, int dim, int64_t size, bool allow_table) {
  lark_tensor *in = lb_opt(L, idx);
  if (!in) {
    if (allow_table && lua_istable(L, idx) && !lb_is(L, idx)) {
      lua_Integer n = luaL_len(L, idx);
      int64_t shape[1] = {n < 0 ? 0 : n};
      lb_push(L, lark_empty(1, shape, LARK_INT64, NULL));
      lark_tensor *out = lb_opt(L, -1);
      int64_t *o = lark_data_ptr(out);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        isint = isint && lua_type(L, -1) == LUA_TNUMBER;
        if (!isint)
          luaL_error(L, "%s: argument %d: element %I of the index list is not an integer (got %s)", fname, idx, i,
                     lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        if (v < 1 || v > size)
          luaL_error(L, "%s: argument %d: index %I is out of range for dim %d of size %I (indices are 1-based)", fname,
                     idx, v, dim + 1, (lua_Integer)size);
        o[i - 1] = v - 1;
        lua_pop(L, 1);
      }
      return out;
    }
    luaL_error(L, "%s: argument %d: expected an int64 index tensor%s, got %s", fname, idx,
               allow_table ? " or a list of integers" : "", luaL_typename(L, idx));
  }
  if (in->dtype != LARK_INT64)
    luaL_error(L, "%s: argument %d: expected an int64 index tensor, got %s", fname, idx, lark_dtype_name(in->dtype));
  if (lark_tensor_device(in).kind != LARK_CPU) {
    /* checked on the device: the first value outside 1..size (argmax of a bool mask is its first
     * true) is read back only to name it in the message of the CPU path below */
    if (lark_numel(in) > 0) {
      lb_push(L, lark_binary_scalar(LARK_OP_LT, in, 1, true, false));
      lb_push(L, lark_binary_scalar(LARK_OP_GT, in, (double)size, true, false));
      lb_push(L, lark_binary(LARK_OP_OR, lb_opt(L, -2), lb_opt(L, -1)));
      lb_push(L, lark_argmax(lb_opt(L, -1), LARK_ALL_DIMS, false));
      double first = 0, is_bad = 0;
      lb_check_status(L, lark_get_flat(lb_opt(L, -1), 0, &first));
      lb_check_status(L, lark_get_flat(lb_opt(L, -2), (int64_t)first, &is_bad));
      if (is_bad != 0) { /* the value itself, as an int64 (a double would round large ones) */
        int64_t all = -1;
        lb_push(L, lark_reshape(in, 1, &all));
        lb_push(L, lark_narrow(lb_opt(L, -1), 0, (int64_t)first, 1));
        lb_push(L, lark_to(lb_opt(L, -1), LARK_INT64, &LARK_DEVICE_CPU));
        int64_t v = *(const int64_t *)lark_data_ptr(lb_opt(L, -1));
        luaL_error(L, "%s: argument %d: index %I is out of range for dim %d of size %I (indices are 1-based)", fname,
                   idx, (lua_Integer)v, dim + 1, (lua_Integer)size);
      }
      lua_pop(L, 4);
    }
    lb_push(L, lark_binary_scalar(LARK_OP_SUB, in, 1, true, false));
    return lb_opt(L, -1);
  }
  lb_push(L, lark_contiguous(in));
  lark_tensor *c = lb_opt(L, -1);
  lb_push(L, lark_empty(c->ndim, c->shape, LARK_INT64, NULL));
  lark_tensor *out = lb_opt(L, -1);
  int64_t n = lark_numel(c);
  const int64_t *p = n ? lark_data_ptr(c) : NULL;
  int64_t *o = n ? lark_data_ptr(out) : NULL;
  for (int64_t i = 0; i < n; i++) {
    int64_t v = p[i];
    if (v < 1 || v > size)
      luaL_error(L, "%s: argument %d: index %I is out of range for dim %d of size %I (indices are 1-based)", fname, idx,
                 (lua_Integer)v, dim + 1, (lua_Integer)size);
    o[i] = v - 1;
  }
  lua_remove(L, -2); /* the contiguous copy */
  return out;
}

/* Makes core's 0-based indices 1-based, in place (ix is a fresh tensor of ours). */
static void one_based(lua_State *L, lark_tensor *ix) {
  if (lark_numel(ix) == 0) return;
  if (lark_tensor_device(ix).kind == LARK_CPU && lark_is_contiguous(ix)) {
    int64_t n = lark_numel(ix);
    int64_t *p = n ? lark_data_ptr(ix) : NULL;
    for (int64_t i = 0; i < n; i++) p[i] += 1;
  } else {
    lb_check_status(L, lark_binary_scalar_(LARK_OP_ADD, ix, 1));
  }
}

static int64_t dim_size(const lark_tensor *t, int dim) { return t->ndim ? t->shape[dim] : 1; }

static int li_index_select(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "index_select");
  int dim = lb_checkdim(L, 2, t->ndim, "index_select");
  lark_tensor *ix = index_arg(L, 3, "index_select", dim, dim_size(t, dim), true);
  lark_device dev = lark_tensor_device(t);
  if (dev.kind != LARK_CPU && !lb_is(L, 3)) { /* a Lua list was made into a host tensor: to t's device */
    lb_push(L, lark_to(ix, LARK_INT64, &dev));
    ix = lb_opt(L, -1);
  }
  lb_push(L, lark_index_select(t, dim, ix));
  return 1;
}

static int li_gather(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "gather");
  int dim = lb_checkdim(L, 2, t->ndim, "gather");
  lark_tensor *ix = index_arg(L, 3, "gather", dim, dim_size(t, dim), false);
  lb_push(L, lark_gather(t, dim, ix));
  return 1;
}

static int scatter_add(lua_State *L, bool inplace) {
  const char *fname = inplace ? "scatter_add_" : "scatter_add";
  lark_tensor *t = lb_check(L, 1, fname);
  int dim = lb_checkdim(L, 2, t->ndim, fname);
  lark_tensor *src = lb_check(L, 4, fname);
  lark_tensor *ix = index_arg(L, 3, fname, dim, dim_size(t, dim), false);
  if (inplace) {
    lb_check_status(L, lark_scatter_add_(t, dim, ix, src));
    lua_pushvalue(L, 1);
  } else {
    lb_push(L, lark_scatter_add(t, dim, ix, src));
  }
  return 1;
}
static int li_scatter_add(lua_State *L) { return scatter_add(L, false); }
static int li_scatter_add_(lua_State *L) { return scatter_add(L, true); }

static lark_tensor *mask_arg(lua_State *L, int idx, const char *fname) {
  lark_tensor *m = lb_opt(L, idx);
  if (!m) luaL_error(L, "%s: argument %d: expected a bool or uint8 mask tensor, got %s", fname, idx, luaL_typename(L, idx));
  if (m->dtype != LARK_BOOL && m->dtype != LARK_UINT8)
    luaL_error(L, "%s: argument %d: expected a bool or uint8 mask tensor, got %s", fname, idx, lark_dtype_name(m->dtype));
  return m;
}

/* The fill value: a number, a boolean, or a one-element tensor. */
static double value_arg(lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
  if (lua_isboolean(L, idx)) return lua_toboolean(L, idx);
  lark_tensor *v = lb_opt(L, idx);
  if (v) {
    double x;
    if (lark_numel(v) != 1)
      luaL_error(L, "%s: argument %d: a tensor value must have one element, got %I", fname, idx,
                 (lua_Integer)lark_numel(v));
    lb_check_status(L, lark_get_flat(v, 0, &x));
    return x;
  }
  luaL_error(L, "%s: argument %d: expected a number, got %s", fname, idx, luaL_typename(L, idx));
  return 0;
}

static int masked_fill(lua_State *L, bool inplace) {
  const char *fname = inplace ? "masked_fill_" : "masked_fill";
  lark_tensor *t = lb_check(L, 1, fname);
  lark_tensor *m = mask_arg(L, 2, fname);
  double v = value_arg(L, 3, fname);
  if (inplace) {
    lb_check_status(L, lark_masked_fill_(t, m, v));
    lua_pushvalue(L, 1);
  } else {
    lb_push(L, lark_masked_fill(t, m, v));
  }
  return 1;
}
static int li_masked_fill(lua_State *L) { return masked_fill(L, false); }
static int li_masked_fill_(lua_State *L) { return masked_fill(L, true); }

static int li_masked_select(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "masked_select");
  lark_tensor *m = mask_arg(L, 2, "masked_select");
  lb_push(L, lark_masked_select(t, m));
  return 1;
}

static int li_nonzero(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "nonzero");
  lb_push(L, lark_nonzero(t));
  one_based(L, lb_opt(L, -1));
  return 1;
}

/* An optional boolean at idx (default def). */
static bool opt_bool(lua_State *L, int idx, bool def, const char *fname, const char *what) {
  if (lua_isnoneornil(L, idx)) return def;
  if (!lua_isboolean(L, idx))
    luaL_error(L, "%s: argument %d: expected %s (a boolean), got %s", fname, idx, what, luaL_typename(L, idx));
  return lua_toboolean(L, idx);
}

/* Pushes values and 1-based indices. */
static int push_values_indices(lua_State *L, int status, lark_tensor *values, lark_tensor *indices) {
  lb_check_status(L, status);
  lb_push(L, values);
  lb_push(L, indices);
  one_based(L, indices);
  return 2;
}

static int li_topk(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "topk");
  int isint;
  lua_Integer k = lua_tointegerx(L, 2, &isint);
  isint = isint && lua_type(L, 2) == LUA_TNUMBER; /* no string coercion */
  if (!isint)
    luaL_error(L, "topk: argument 2: expected k (an integer), got %s",
               lua_type(L, 2) == LUA_TNUMBER ? lua_tostring(L, 2) : luaL_typename(L, 2));
  int dim = lua_isnoneornil(L, 3) ? lb_dim(L, -1, t->ndim, "topk", 3) : lb_checkdim(L, 3, t->ndim, "topk");
  bool largest = opt_bool(L, 4, true, "topk", "largest");
  bool sorted = opt_bool(L, 5, true, "topk", "sorted");
  int64_t n = dim_size(t, dim);
  if (k < 0 || k > n)
    luaL_error(L, "topk: argument 2: k = %I is out of range for dim %d of size %I (expected 0..%I)", k, dim + 1,
               (lua_Integer)n, (lua_Integer)n);
  lark_tensor *values = NULL, *indices = NULL;
  int rc = lark_topk(t, k, dim, largest, sorted, &values, &indices);
  return push_values_indices(L, rc, values, indices);
}

static int li_sort(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "sort");
  int dim;
  bool descending;
  if (lua_isboolean(L, 2)) { /* t:sort(true): descending along the last dim */
    dim = lb_dim(L, -1, t->ndim, "sort", 2);
    descending = lua_toboolean(L, 2);
  } else {
    dim = lua_isnoneornil(L, 2) ? lb_dim(L, -1, t->ndim, "sort", 2) : lb_checkdim(L, 2, t->ndim, "sort");
    descending = opt_bool(L, 3, false, "sort", "descending");
  }
  lark_tensor *values = NULL, *indices = NULL;
  int rc = lark_sort(t, dim, descending, &values, &indices);
  return push_values_indices(L, rc, values, indices);
}

static int li_cumsum(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "cumsum");
  if (lua_isnoneornil(L, 2) && t->ndim > 1)
    luaL_error(L, "cumsum: argument 2: expected a dim (integer) for a tensor of %d dims, got no value", t->ndim);
  int dim = lua_isnoneornil(L, 2) ? 0 : lb_checkdim(L, 2, t->ndim, "cumsum");
  lb_push(L, lark_cumsum(t, dim));
  return 1;
}

void lb_register_index(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"index_select", li_index_select}, {"index", li_index_select},       {"gather", li_gather},
      {"scatter_add", li_scatter_add},   {"scatter_add_", li_scatter_add_}, {"masked_fill", li_masked_fill},
      {"masked_fill_", li_masked_fill_}, {"masked_select", li_masked_select}, {"nonzero", li_nonzero},
      {"topk", li_topk},                 {"sort", li_sort},                 {"cumsum", li_cumsum},
      {NULL, NULL}};
  lb_register(L, mod, fns);
  lb_register(L, methods, fns);
}
