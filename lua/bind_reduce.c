/* bind_reduce.c: reductions from Lua. Every function is lark.f(t, ...) and t:f(...).
 *
 *   t:sum([dim | {dims}] [, keepdim=false])   also mean, prod, any, all; no dim (or {}): every dim,
 *                                             giving a 0-d tensor
 *   t:var([dim | {dims}] [, unbiased=true] [, keepdim=false])   std likewise
 *   t:norm([p=2] [, dim | {dims}] [, keepdim=false])            p: any number, math.huge for the max
 *   t:max()                  -> 0-d tensor of the largest element (NaN if there is one)
 *   t:max(dim [, keepdim])   -> values, indices (int64, 1-based, first occurrence on ties)   min likewise
 *   t:argmax([dim] [, keepdim]) -> int64 1-based indices; without dim, the flat (row-major) index
 *
 * Dims are 1-based, negative from the end; core's are 0-based, converted here once. Indices come
 * back from core 0-based and are made 1-based here. sum and prod of integer or bool tensors give
 * int64; mean, var, std and norm take float tensors only (as PyTorch); any and all give bool. */
#include "binding.h"

/* Reads the dims at idx (nil, one dim, or a list of dims) into args (0-based; ndims 0 = all). */
static void read_dims(lua_State *L, int idx, const lark_tensor *t, const char *fname, lark_reduce_args *args) {
  args->ndims = 0;
  if (lua_isnoneornil(L, idx)) return;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    args->dims[0] = lb_checkdim(L, idx, t->ndim, fname);
    args->ndims = 1;
    return;
  }
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected a dim (integer) or a list of dims, got %s", fname, idx,
               lb_is(L, idx) ? "Tensor" : luaL_typename(L, idx));
  lua_Integer n = luaL_len(L, idx);
  if (n > LARK_MAX_DIMS)
    luaL_error(L, "%s: argument %d: %I dims given, a tensor has at most %d", fname, idx, n, LARK_MAX_DIMS);
  for (int i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    int isint;
    lua_Integer d = lua_tointegerx(L, -1, &isint);
    if (!isint || lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "%s: argument %d: dim %d of the list must be an integer, got %s", fname, idx, i,
                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
    args->dims[i - 1] = lb_dim(L, d, t->ndim, fname, idx);
    lua_pop(L, 1);
  }
  args->ndims = (int)n;
}

static bool opt_bool(lua_State *L, int idx, bool def, const char *fname, const char *what) {
  if (lua_isnoneornil(L, idx)) return def;
  if (!lua_isboolean(L, idx))
    luaL_error(L, "%s: argument %d: expected %s (a boolean), got %s", fname, idx, what, luaL_typename(L, idx));
  return lua_toboolean(L, idx);
}

/* t:op([dims] [, keepdim]) */
static int reduce_simple(lua_State *L, lark_reduce_op op, const char *fname) {
  lark_tensor *t = lb_check(L, 1, fname);
  lark_reduce_args args = {.unbiased = true, .p = 2};
  read_dims(L, 2, t, fname, &args);
  args.keepdim = opt_bool(L, 3, false, fname, "keepdim");
  lb_push(L, lark_reduce(op, t, &args));
  return 1;
}

static int lr_sum(lua_State *L) { return reduce_simple(L, LARK_RED_SUM, "sum"); }
static int lr_mean(lua_State *L) { return reduce_simple(L, LARK_RED_MEAN, "mean"); }
static int lr_prod(lua_State *L) { return reduce_simple(L, LARK_RED_PROD, "prod"); }
static int lr_any(lua_State *L) { return reduce_simple(L, LARK_RED_ANY, "any"); }
static int lr_all(lua_State *L) { return reduce_simple(L, LARK_RED_ALL, "all"); }

/* t:var([dims] [, unbiased] [, keepdim]) */
static int reduce_var(lua_State *L, lark_reduce_op op, const char *fname) {
  lark_tensor *t = lb_check(L, 1, fname);
  lark_reduce_args args = {.p = 2};
  read_dims(L, 2, t, fname, &args);
  args.unbiased = opt_bool(L, 3, true, fname, "unbiased");
  args.keepdim = opt_bool(L, 4, false, fname, "keepdim");
  lb_push(L, lark_reduce(op, t, &args));
  return 1;
}

static int lr_var(lua_State *L) { return reduce_var(L, LARK_RED_VAR, "var"); }
static int lr_std(lua_State *L) { return reduce_var(L, LARK_RED_STD, "std"); }

/* t:norm([p] [, dims] [, keepdim]) */
static int lr_norm(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "norm");
  lark_reduce_args args = {.unbiased = true, .p = 2};
  if (!lua_isnoneornil(L, 2)) {
    if (lua_type(L, 2) != LUA_TNUMBER)
      luaL_error(L, "norm: argument 2: expected the order p (a number, math.huge for the max norm), got %s",
                 luaL_typename(L, 2));
    args.p = lua_tonumber(L, 2);
  }
  read_dims(L, 3, t, "norm", &args);
  args.keepdim = opt_bool(L, 4, false, "norm", "keepdim");
  lb_push(L, lark_reduce(LARK_RED_NORM, t, &args));
  return 1;
}

/* Makes core's 0-based indices 1-based, in place (ix is a fresh tensor of ours). */
static void one_based(lua_State *L, lark_tensor *ix) {
  int64_t n = lark_numel(ix);
  if (n == 0) return;
  if (lark_tensor_device(ix).kind == LARK_CPU && lark_is_contiguous(ix)) {
    int64_t *p = lark_data_ptr(ix);
    for (int64_t i = 0; i < n; i++) p[i] += 1;
  } else {
    lb_check_status(L, lark_binary_scalar_(LARK_OP_ADD, ix, 1));
  }
}

/* The dim of max/min/argmax/argmin at idx: one integer (a Tensor means the caller wanted the
 * elementwise maximum). */
static int check_one_dim(lua_State *L, int idx, const lark_tensor *t, const char *fname, bool is_max) {
  if (lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected a dim (integer), got Tensor (for the elementwise one use lark.%s(a, b))",
               fname, idx, is_max ? "maximum" : "minimum");
  return lb_checkdim(L, idx, t->ndim, fname);
}

/* t:max() -> 0-d tensor; t:max(dim [, keepdim]) -> values, 1-based indices */
static int minmax(lua_State *L, bool is_max) {
  const char *fname = is_max ? "max" : "min";
  lark_tensor *t = lb_check(L, 1, fname);
  if (lua_isnoneornil(L, 2)) {
    lark_reduce_args args = {.unbiased = true, .p = 2};
    args.keepdim = opt_bool(L, 3, false, fname, "keepdim");
    lb_push(L, lark_reduce(is_max ? LARK_RED_MAX : LARK_RED_MIN, t, &args));
    return 1;
  }
  int dim = check_one_dim(L, 2, t, fname, is_max);
  bool keepdim = opt_bool(L, 3, false, fname, "keepdim");
  lark_tensor *values = NULL, *indices = NULL;
  int rc = is_max ? lark_max_dim(t, dim, keepdim, &values, &indices) : lark_min_dim(t, dim, keepdim, &values, &indices);
  lb_check_status(L, rc);
  lb_push(L, values);
  lb_push(L, indices);
  one_based(L, indices);
  return 2;
}

static int lr_max(lua_State *L) { return minmax(L, true); }
static int lr_min(lua_State *L) { return minmax(L, false); }

/* t:argmax([dim] [, keepdim]) -> 1-based int64 indices */
static int argminmax(lua_State *L, bool is_max) {
  const char *fname = is_max ? "argmax" : "argmin";
  lark_tensor *t = lb_check(L, 1, fname);
  int dim = lua_isnoneornil(L, 2) ? LARK_ALL_DIMS : check_one_dim(L, 2, t, fname, is_max);
  bool keepdim = opt_bool(L, 3, false, fname, "keepdim");
  lark_tensor *ix = is_max ? lark_argmax(t, dim, keepdim) : lark_argmin(t, dim, keepdim);
  lb_push(L, ix);
  one_based(L, ix);
  return 1;
}

static int lr_argmax(lua_State *L) { return argminmax(L, true); }
static int lr_argmin(lua_State *L) { return argminmax(L, false); }

void lb_register_reduce(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"sum", lr_sum}, {"mean", lr_mean}, {"prod", lr_prod}, {"var", lr_var},       {"std", lr_std},
      {"norm", lr_norm}, {"any", lr_any}, {"all", lr_all},   {"max", lr_max},       {"min", lr_min},
      {"argmax", lr_argmax}, {"argmin", lr_argmin}, {NULL, NULL}};
  lb_register(L, mod, fns);
  lb_register(L, methods, fns);
}
