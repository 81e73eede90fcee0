/* bind_shape.c: joining and splitting from Lua.
 *
 *   lark.cat({a, b, c} [, dim=1])    also lark.cat(a, b, c [, dim]) and a:cat(b [, dim]), as in Torch7
 *   lark.stack({a, b} [, dim=1])     the same forms
 *   t:split(size | {sizes...} [, dim=1])  -> a Lua list of views
 *   t:chunk(n [, dim=1])             -> a Lua list of views (ceil(size / n) each, maybe fewer than n)
 *
 * Dims are 1-based (negative from the end); core's are 0-based, converted here once. */
#include <limits.h>
#include <stdlib.h>

#include "binding.h"

/* Collects the tensors of a join: a list at argument 1, or consecutive tensor arguments. Returns
 * the count and sets *dim_arg to the argument holding the dim. The array lives in a userdata left
 * on the stack, so a Lua error on the way frees it. */
static lark_tensor **join_args(lua_State *L, const char *fname, int *n, int *dim_arg) {
  if (lb_is(L, 1)) {
    int k = 1;
    while (lb_is(L, k + 1)) k++;
    lua_settop(L, k + 1); /* the dim (or nil) stays at k + 1, below what is pushed next */
    lark_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)k, 0);
    for (int i = 0; i < k; i++) ts[i] = lb_check(L, i + 1, fname);
    *n = k;
    *dim_arg = k + 1;
    return ts;
  }
  if (!lua_istable(L, 1))
    luaL_error(L, "%s: argument 1: expected a list of tensors, got %s", fname, luaL_typename(L, 1));
  lua_settop(L, 2);
  lua_Integer len = luaL_len(L, 1);
  if (len <= 0) luaL_error(L, "%s: argument 1: expected a non-empty list of tensors", fname);
  if (len > INT_MAX / 2) luaL_error(L, "%s: argument 1: too many tensors (%I)", fname, len);
  lark_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)len, 0);
  for (lua_Integer i = 1; i <= len; i++) {
    lua_geti(L, 1, i);
    lb_tensor *u = luaL_testudata(L, -1, LB_TENSOR_MT);
    if (!u) luaL_error(L, "%s: argument 1: element %I is not a Tensor (got %s)", fname, i, luaL_typename(L, -1));
    if (!u->t) luaL_error(L, "%s: argument 1: tensor %I was closed", fname, i);
    ts[i - 1] = u->t; /* the list keeps it alive */
    lua_pop(L, 1);
  }
  *n = (int)len;
  *dim_arg = 2;
  return ts;
}

/* The optional dim at argument idx (default 1) against ndim dims, 0-based. */
static int opt_dim(lua_State *L, int idx, int ndim, const char *fname) {
  if (lua_isnoneornil(L, idx)) return 0;
  return lb_checkdim(L, idx, ndim, fname);
}

static int ls_cat(lua_State *L) {
  int n, dim_arg;
  lark_tensor **ts = join_args(L, "cat", &n, &dim_arg);
  /* dims count against the first tensor that is not a skipped empty 1-D one (PyTorch's legacy) */
  int ref = 0;
  while (ref < n && ts[ref]->ndim == 1 && ts[ref]->shape[0] == 0) ref++;
  int ndim = ts[ref < n ? ref : 0]->ndim;
  /* a 0-d tensor: core says why it cannot be concatenated */
  int dim = ndim == 0 ? 0 : opt_dim(L, dim_arg, ndim, "cat");
  lb_push(L, lark_cat(n, ts, dim));
  return 1;
}

static int ls_stack(lua_State *L) {
  int n, dim_arg;
  lark_tensor **ts = join_args(L, "stack", &n, &dim_arg);
  int dim = opt_dim(L, dim_arg, ts[0]->ndim + 1, "stack");
  lb_push(L, lark_stack(n, ts, dim));
  return 1;
}

/* Pushes the pieces as a Lua list and frees the array. */
static void push_pieces(lua_State *L, lark_tensor **parts, int n) {
  if (!parts) lb_error(L);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lb_push(L, parts[i]);
    parts[i] = NULL;
    lua_rawseti(L, -2, i + 1);
  }
  free(parts);
}

static int ls_split(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "split");
  int dim = opt_dim(L, 3, t->ndim, "split");
  if (lua_istable(L, 2)) {
    lua_Integer len = luaL_len(L, 2);
    if (len < 0 || len > INT_MAX / 2) luaL_error(L, "split: argument 2: too many sizes (%I)", len);
    int64_t *sizes = lua_newuserdatauv(L, sizeof *sizes * (size_t)(len ? len : 1), 0);
    for (lua_Integer i = 1; i <= len; i++) {
      lua_geti(L, 2, i);
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      isint = isint && lua_type(L, -1) == LUA_TNUMBER;
      if (!isint) luaL_error(L, "split: argument 2: size %I is not an integer (got %s)", i, luaL_typename(L, -1));
      if (v < 0) luaL_error(L, "split: argument 2: size %I is negative (%I)", i, v);
      sizes[i - 1] = v;
      lua_pop(L, 1);
    }
    push_pieces(L, lark_split_sizes(t, (int)len, sizes, dim), (int)len);
    return 1;
  }
  int isint;
  lua_Integer size = lua_tointegerx(L, 2, &isint);
  isint = isint && lua_type(L, 2) == LUA_TNUMBER; /* no string coercion */
  if (!isint)
    luaL_error(L, "split: argument 2: expected a split size (integer) or a table of sizes, got %s",
               lua_type(L, 2) == LUA_TNUMBER ? lua_tostring(L, 2) : luaL_typename(L, 2));
  if (size <= 0 && !(size == 0 && t->ndim && t->shape[dim] == 0))
    luaL_error(L, "split: argument 2: the split size must be positive, got %I", size);
  int n = 0;
  lark_tensor **parts = lark_split(t, size, dim, &n);
  push_pieces(L, parts, n);
  return 1;
}

static int ls_chunk(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "chunk");
  int isint;
  lua_Integer chunks = lua_tointegerx(L, 2, &isint);
  isint = isint && lua_type(L, 2) == LUA_TNUMBER; /* no string coercion */
  if (!isint)
    luaL_error(L, "chunk: argument 2: expected the number of chunks (integer), got %s",
               lua_type(L, 2) == LUA_TNUMBER ? lua_tostring(L, 2) : luaL_typename(L, 2));
  if (chunks <= 0) luaL_error(L, "chunk: argument 2: the number of chunks must be positive, got %I", chunks);
  int dim = opt_dim(L, 3, t->ndim, "chunk");
  if (chunks > INT_MAX / 2) {
    /* more chunks than elements gives one element each: the same as asking for that many */
    int64_t len = t->ndim ? t->shape[dim] : 0;
    if (len == 0 || len > INT_MAX / 2) luaL_error(L, "chunk: argument 2: %I chunks are too many", chunks);
    chunks = len;
  }
  int n = 0;
  lark_tensor **parts = lark_chunk(t, (int)chunks, dim, &n);
  push_pieces(L, parts, n);
  return 1;
}

void lb_register_shape(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"cat", ls_cat}, {"stack", ls_stack}, {"split", ls_split}, {"chunk", ls_chunk}, {NULL, NULL}};
  lb_register(L, mod, fns);
  lb_register(L, methods, fns);
}
