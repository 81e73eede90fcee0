/* bind_optim.c: the fused optimizer updates of core/ops/optim.c for lark.optim (lua/lark/optim/).
 *
 *   lark.sgd_step_(params, grads, momentum_buffers, opts [, names])
 *       opts = {lr =, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0, maximize = false};
 *       momentum_buffers (nil when momentum is 0) may hold false/nil entries: those get a new
 *       buffer, stored back into the table.
 *   lark.adamw_step_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, opts [, names])
 *       opts = {lr =, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, amsgrad = false,
 *       maximize = false}; steps: this update's 1-based count per parameter; state lists may hold
 *       false/nil entries (new zero tensors are stored back); max_exp_avg_sqs is nil unless amsgrad.
 *   lark.lerp_list_(dsts, srcs, weight [, names])     dst = dst + weight * (src - dst); ints copied
 *   lark.total_norm(tensors [, p = 2])                -> number (p may be math.huge)
 *   lark.clip_grad_norm_(grads, max_norm [, p = 2])   -> total norm (number)
 *   and sgd_step_reference_, adamw_step_reference_, lerp_list_reference_: the plain loops.
 *
 * Lists are Lua arrays; names (an array of strings, or nil) let core's messages name parameters.
 * The C arrays live in a userdata on the stack, so a Lua error in the middle leaks nothing. */
#include <math.h>
#include <string.h>

#include "binding.h"

void lb_register_optim(lua_State *L, int mod, int methods);

/* Scratch memory collected by Lua with the call's stack. */
static void *scratch(lua_State *L, size_t nbytes) { return lua_newuserdatauv(L, nbytes ? nbytes : 1, 0); }

static int list_len(lua_State *L, int idx, const char *f, const char *what) {
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: argument %d (%s): expected an array of tensors, got %s", f, idx, what, luaL_typename(L, idx));
  lua_Integer n = luaL_len(L, idx);
  if (n > 1 << 24) luaL_error(L, "%s: argument %d (%s): %I tensors is too many", f, idx, what, n);
  return (int)n;
}

/* The n tensors of the array at idx; `holes`: nil and false entries give NULL. */
static lark_tensor **read_list(lua_State *L, int idx, int n, const char *f, const char *what, bool holes) {
  int m = list_len(L, idx, f, what);
  if (m != n) luaL_error(L, "%s: argument %d (%s): %d tensors for %d parameters", f, idx, what, m, n);
  lark_tensor **ts = scratch(L, sizeof(lark_tensor *) * (size_t)n);
  for (int i = 0; i < n; i++) {
    lua_geti(L, idx, i + 1);
    if (holes && (lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1)))) {
      ts[i] = NULL;
    } else {
      if (!lb_is(L, -1))
        luaL_error(L, "%s: argument %d (%s): entry %d is %s (expected a Tensor)", f, idx, what, i + 1,
                   luaL_typename(L, -1));
      ts[i] = lb_check(L, -1, f);
    }
    lua_pop(L, 1);
  }
  return ts;
}

/* Stores the tensors core made (entries that were NULL before the call) back into the array. */
static void store_new(lua_State *L, int idx, int n, lark_tensor **before_null, lark_tensor **after) {
  for (int i = 0; i < n; i++)
    if (!before_null[i] && after[i]) {
      lb_push(L, after[i]); /* takes over the reference core gave the caller */
      lua_seti(L, idx, i + 1);
    }
}

/* names[i] for the array at idx (or NULL for nil); the strings stay alive in that table. */
static const char **read_names(lua_State *L, int idx, int n, const char *f) {
  if (lua_isnoneornil(L, idx)) return NULL;
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: argument %d (names): expected an array of strings, got %s", f, idx, luaL_typename(L, idx));
  const char **names = scratch(L, sizeof(char *) * (size_t)n);
  for (int i = 0; i < n; i++) {
    lua_geti(L, idx, i + 1);
    names[i] = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
  }
  return names;
}

static double field_number(lua_State *L, int idx, const char *key, double def, bool required, const char *f) {
  int t = lua_getfield(L, idx, key);
  double v = def;
  if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
  else if (t != LUA_TNIL) luaL_error(L, "%s: option %s: expected a number, got %s", f, key, luaL_typename(L, -1));
  else if (required) luaL_error(L, "%s: option %s is required", f, key);
  lua_pop(L, 1);
  return v;
}

static bool field_bool(lua_State *L, int idx, const char *key, const char *f) {
  int t = lua_getfield(L, idx, key);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "%s: option %s: expected a boolean, got %s", f, key, luaL_typename(L, -1));
  bool v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static void check_opts(lua_State *L, int idx, const char *f) {
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: argument %d (options): expected a table, got %s", f, idx, luaL_typename(L, idx));
}

/* Copies ts so that store_new can tell which entries core filled. */
static lark_tensor **copy_list(lua_State *L, lark_tensor **ts, int n) {
  lark_tensor **c = scratch(L, sizeof(lark_tensor *) * (size_t)n);
  if (n) memcpy(c, ts, sizeof(lark_tensor *) * (size_t)n);
  return c;
}

static int sgd_impl(lua_State *L, bool reference) {
  const char *f = reference ? "sgd_step_reference_" : "sgd_step_";
  lua_settop(L, 5);
  int n = list_len(L, 1, f, "params");
  lark_tensor **params = read_list(L, 1, n, f, "params", false);
  lark_tensor **grads = read_list(L, 2, n, f, "grads", false);
  check_opts(L, 4, f);
  lark_sgd_args a = {
      .lr = field_number(L, 4, "lr", 0, true, f),
      .momentum = field_number(L, 4, "momentum", 0, false, f),
      .dampening = field_number(L, 4, "dampening", 0, false, f),
      .weight_decay = field_number(L, 4, "weight_decay", 0, false, f),
      .nesterov = field_bool(L, 4, "nesterov", f),
      .maximize = field_bool(L, 4, "maximize", f),
      .names = read_names(L, 5, n, f),
  };
  lark_tensor **bufs = NULL, **before = NULL;
  if (!lua_isnil(L, 3)) {
    bufs = read_list(L, 3, n, f, "momentum_buffers", true);
    before = copy_list(L, bufs, n);
  }
  int rc = reference ? lark_sgd_step_reference_(n, params, grads, bufs, &a) : lark_sgd_step_(n, params, grads, bufs, &a);
  lb_check_status(L, rc);
  if (bufs) store_new(L, 3, n, before, bufs);
  return 0;
}
static int l_sgd_step(lua_State *L) { return sgd_impl(L, false); }
static int l_sgd_step_ref(lua_State *L) { return sgd_impl(L, true); }

static int adamw_impl(lua_State *L, bool reference) {
  const char *f = reference ? "adamw_step_reference_" : "adamw_step_";
  lua_settop(L, 8);
  int n = list_len(L, 1, f, "params");
  lark_tensor **params = read_list(L, 1, n, f, "params", false);
  lark_tensor **grads = read_list(L, 2, n, f, "grads", false);
  lark_tensor **m = read_list(L, 3, n, f, "exp_avgs", true), **m0 = copy_list(L, m, n);
  lark_tensor **v = read_list(L, 4, n, f, "exp_avg_sqs", true), **v0 = copy_list(L, v, n);
  check_opts(L, 7, f);
  lark_adamw_args a = {
      .lr = field_number(L, 7, "lr", 0, true, f),
      .eps = field_number(L, 7, "eps", 1e-8, false, f),
      .weight_decay = field_number(L, 7, "weight_decay", 1e-2, false, f),
      .amsgrad = field_bool(L, 7, "amsgrad", f),
      .maximize = field_bool(L, 7, "maximize", f),
      .beta1 = 0.9,
      .beta2 = 0.999,
  };
  if (lua_getfield(L, 7, "betas") != LUA_TNIL) {
    if (!lua_istable(L, -1)) luaL_error(L, "%s: option betas: expected a table {beta1, beta2}, got %s", f, luaL_typename(L, -1));
    for (int k = 1; k <= 2; k++) {
      if (lua_geti(L, -1, k) != LUA_TNUMBER)
        luaL_error(L, "%s: option betas: entry %d is %s (expected a number)", f, k, luaL_typename(L, -1));
      (k == 1 ? &a.beta1 : &a.beta2)[0] = lua_tonumber(L, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lark_tensor **w = NULL, **w0 = NULL;
  if (a.amsgrad) {
    if (lua_isnil(L, 5)) luaL_error(L, "%s: amsgrad needs the max_exp_avg_sqs list (argument 5)", f);
    w = read_list(L, 5, n, f, "max_exp_avg_sqs", true);
    w0 = copy_list(L, w, n);
  }
  int sn = list_len(L, 6, f, "steps");
  if (sn != n) luaL_error(L, "%s: argument 6 (steps): %d step counts for %d parameters", f, sn, n);
  int64_t *steps = scratch(L, sizeof(int64_t) * (size_t)n);
  for (int i = 0; i < n; i++) {
    lua_geti(L, 6, i + 1);
    int isint;
    lua_Integer s = lua_tointegerx(L, -1, &isint);
    if (!isint) luaL_error(L, "%s: argument 6 (steps): entry %d is %s (expected an integer)", f, i + 1, luaL_typename(L, -1));
    steps[i] = (int64_t)s;
    lua_pop(L, 1);
  }
  a.names = read_names(L, 8, n, f);
  int rc = reference ? lark_adamw_step_reference_(n, params, grads, m, v, w, steps, &a)
                     : lark_adamw_step_(n, params, grads, m, v, w, steps, &a);
  lb_check_status(L, rc);
  store_new(L, 3, n, m0, m);
  store_new(L, 4, n, v0, v);
  if (w) store_new(L, 5, n, w0, w);
  return 0;
}
static int l_adamw_step(lua_State *L) { return adamw_impl(L, false); }
static int l_adamw_step_ref(lua_State *L) { return adamw_impl(L, true); }

static int lerp_impl(lua_State *L, bool reference) {
  const char *f = reference ? "lerp_list_reference_" : "lerp_list_";
  lua_settop(L, 4);
  int n = list_len(L, 1, f, "dsts");
  lark_tensor **dst = read_list(L, 1, n, f, "dsts", false);
  lark_tensor **src = read_list(L, 2, n, f, "srcs", false);
  double weight = luaL_checknumber(L, 3);
  const char **names = read_names(L, 4, n, f);
  lb_check_status(L, reference ? lark_lerp_list_reference_(n, dst, src, weight, names)
                               : lark_lerp_list_(n, dst, src, weight, names));
  return 0;
}
static int l_lerp_list(lua_State *L) { return lerp_impl(L, false); }
static int l_lerp_list_ref(lua_State *L) { return lerp_impl(L, true); }

static double norm_type_at(lua_State *L, int idx, const char *f) {
  if (lua_isnoneornil(L, idx)) return 2;
  if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "inf") == 0) return HUGE_VAL;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s: argument %d (norm_type): expected a number or 'inf', got %s", f, idx, luaL_typename(L, idx));
  return lua_tonumber(L, idx);
}

static int l_total_norm(lua_State *L) {
  const char *f = "total_norm";
  lua_settop(L, 2); /* read_list pushes scratch memory above the arguments */
  int n = list_len(L, 1, f, "tensors");
  lark_tensor **ts = read_list(L, 1, n, f, "tensors", false);
  double out;
  lb_check_status(L, lark_total_norm(n, ts, norm_type_at(L, 2, f), &out));
  lua_pushnumber(L, out);
  return 1;
}

static int l_clip_grad_norm(lua_State *L) {
  const char *f = "clip_grad_norm";
  lua_settop(L, 3);
  int n = list_len(L, 1, f, "grads");
  lark_tensor **ts = read_list(L, 1, n, f, "grads", false);
  double max_norm = luaL_checknumber(L, 2), out;
  lb_check_status(L, lark_clip_grad_norm_(n, ts, max_norm, norm_type_at(L, 3, f), &out));
  lua_pushnumber(L, out);
  return 1;
}

void lb_register_optim(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"sgd_step_", l_sgd_step},
      {"sgd_step_reference_", l_sgd_step_ref},
      {"adamw_step_", l_adamw_step},
      {"adamw_step_reference_", l_adamw_step_ref},
      {"lerp_list_", l_lerp_list},
      {"lerp_list_reference_", l_lerp_list_ref},
      {"total_norm", l_total_norm},
      {"clip_grad_norm_", l_clip_grad_norm},
      {NULL, NULL},
  };
  lb_register(L, mod, fns);
}
