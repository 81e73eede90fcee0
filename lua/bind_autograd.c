/* bind_autograd.c: requires_grad, .grad, backward, detach and grad mode for Lua.
 * no_grad scopes, autograd.grad's table handling and gradcheck are in lua/lark/autograd.lua. */
#include <string.h>

#include "autograd.h"
#include "binding.h"

/* ---- properties (read through the __getters / __setters tables of the metatable) ------------ */

static int get_requires_grad(lua_State *L) {
  lua_pushboolean(L, lb_check(L, 1, "requires_grad")->requires_grad);
  return 1;
}

static int get_grad(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "grad");
  if (!t->grad) return 0;
  lb_push(L, lark_tensor_retain(t->grad));
  return 1;
}

static int get_grad_fn(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "grad_fn");
  if (!t->grad_fn) return 0;
  lua_pushstring(L, t->grad_fn->name);
  return 1;
}

static int get_is_leaf(lua_State *L) {
  lua_pushboolean(L, lb_check(L, 1, "is_leaf")->grad_fn == NULL);
  return 1;
}

static void set_requires_grad_to(lua_State *L, lark_tensor *t, bool on, const char *fname) {
  if (on && !lark_dtype_is_float(t->dtype))
    luaL_error(L, "%s: only float32 and float64 tensors can require grad, this one is %s", fname,
               lark_dtype_name(t->dtype));
  if (t->grad_fn && !on)
    luaL_error(L, "%s: this tensor is the result of %s; use detach() for a tensor without history", fname,
               t->grad_fn->name);
  t->requires_grad = on;
}

static int set_requires_grad(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "requires_grad");
  luaL_argexpected(L, lua_isboolean(L, 2), 2, "boolean");
  set_requires_grad_to(L, t, lua_toboolean(L, 2), "requires_grad");
  return 0;
}

static int set_grad(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "grad");
  if (lua_isnil(L, 2)) {
    lark_tensor_release(t->grad);
    t->grad = NULL;
    return 0;
  }
  lark_tensor *g = lb_check(L, 2, "grad");
  if (g->ndim != t->ndim || memcmp(g->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim)) {
    char a[256], b[256];
    return luaL_error(L, "grad: a gradient of shape %s does not fit a tensor of shape %s",
                      lark_shape_str(g->ndim, g->shape, a, sizeof a), lark_shape_str(t->ndim, t->shape, b, sizeof b));
  }
  lark_tensor_retain(g);
  lark_tensor_release(t->grad);
  t->grad = g;
  return 0;
}

/* ---- methods -------------------------------------------------------------------------------- */

/* t:requires_grad_([on = true]): sets the flag in place and returns t. */
static int l_requires_grad_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "requires_grad_");
  set_requires_grad_to(L, t, lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2), "requires_grad_");
  lua_settop(L, 1);
  return 1;
}

static int l_detach(lua_State *L) {
  lb_push(L, lark_detach(lb_check(L, 1, "detach")));
  return 1;
}

/* t:set_data(q): t now shows q's data (shares its storage; shape, dtype and device included), keeping
 * its own identity, requires_grad flag and grad, as PyTorch's `t.data = q`. Only for leaves (a
 * tensor with history would lose it): Module:to moves parameters this way, so an optimizer or a
 * Masking made before model:cuda() keeps working on the moved tensors. */
static int l_set_data(lua_State *L) {
  lb_tensor *ut = luaL_checkudata(L, 1, LB_TENSOR_MT);
  lark_tensor *t = lb_check(L, 1, "set_data"), *q = lb_check(L, 2, "set_data");
  if (t->grad_fn) return luaL_error(L, "set_data: only a leaf tensor (one without autograd history) can take new data");
  if (t == q) return 0;
  lark_tensor *v = lark_detach(q);
  if (!v) return lb_error(L);
  v->requires_grad = t->requires_grad;
  v->grad = t->grad; /* moved over: the caller converts it if it must follow */
  t->grad = NULL;
  ut->t = v;
  lark_tensor_release(t);
  return 0;
}

/* t:backward([grad] [, retain_graph | {retain_graph = bool}]) */
static int l_backward(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "backward");
  lark_tensor *g = NULL;
  int opt = 2;
  if (lb_is(L, 2)) {
    g = lb_opt(L, 2);
    opt = 3;
  } else if (lua_isnil(L, 2)) {
    opt = 3;
  }
  bool retain = false;
  if (lua_isboolean(L, opt)) {
    retain = lua_toboolean(L, opt);
  } else if (lua_istable(L, opt)) {
    lua_getfield(L, opt, "retain_graph");
    retain = lua_toboolean(L, -1);
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, opt)) {
    return luaL_error(L, "backward: argument %d: expected a gradient tensor, retain_graph (boolean) or an options table, got %s",
                      opt, luaL_typename(L, opt));
  }
  lb_check_status(L, lark_backward(t, g, retain, 0, NULL, NULL));
  return 0;
}

/* lark.autograd._grad(output, {inputs}, grad_output_or_nil, retain_graph): the list of gradients
 * (nil where no path leads). */
static int l_grad(lua_State *L) {
  lark_tensor *out = lb_check(L, 1, "autograd.grad");
  luaL_argexpected(L, lua_istable(L, 2), 2, "a table of tensors");
  int n = (int)luaL_len(L, 2);
  if (n < 1 || n > 4096) return luaL_error(L, "autograd.grad: expected 1 to 4096 inputs, got %d", n);
  lark_tensor **ins = lua_newuserdatauv(L, sizeof(lark_tensor *) * (size_t)n * 2, 0);
  lark_tensor **outs = ins + n;
  for (int i = 0; i < n; i++) {
    lua_geti(L, 2, i + 1);
    lark_tensor *t = lb_opt(L, -1);
    if (!t) return luaL_error(L, "autograd.grad: input %d is not a Tensor", i + 1);
    if (!t->requires_grad) return luaL_error(L, "autograd.grad: input %d does not require grad", i + 1);
    ins[i] = t;
    lua_pop(L, 1);
  }
  lark_tensor *g = lb_opt(L, 3);
  bool retain = lua_toboolean(L, 4);
  lb_check_status(L, lark_backward(out, g, retain, n, ins, outs));
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    if (outs[i]) lb_push(L, outs[i]);
    else lua_pushnil(L);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int l_is_grad_enabled(lua_State *L) {
  lua_pushboolean(L, lark_grad_enabled());
  return 1;
}

static int l_set_grad_enabled(lua_State *L) {
  luaL_argexpected(L, lua_isboolean(L, 1), 1, "boolean");
  lark_set_grad_enabled(lua_toboolean(L, 1));
  return 0;
}

void lb_register_autograd(lua_State *L, int mod, int methods) {
  static const luaL_Reg meths[] = {{"requires_grad_", l_requires_grad_}, {"detach", l_detach}, {"set_data", l_set_data},
                                   {"backward", l_backward}, {NULL, NULL}};
  lb_register(L, methods, meths);
  static const luaL_Reg funcs[] = {{"is_grad_enabled", l_is_grad_enabled}, {"set_grad_enabled", l_set_grad_enabled},
                                   {"_autograd_grad", l_grad}, {NULL, NULL}};
  lb_register(L, mod, funcs);

  luaL_getmetatable(L, LB_TENSOR_MT);
  lua_getfield(L, -1, "__getters");
  static const luaL_Reg getters[] = {{"requires_grad", get_requires_grad}, {"grad", get_grad},
                                     {"grad_fn", get_grad_fn}, {"is_leaf", get_is_leaf}, {NULL, NULL}};
  luaL_setfuncs(L, getters, 0);
  lua_pop(L, 1);
  lua_getfield(L, -1, "__setters");
  static const luaL_Reg setters[] = {{"requires_grad", set_requires_grad}, {"grad", set_grad}, {NULL, NULL}};
  luaL_setfuncs(L, setters, 0);
  lua_pop(L, 2);
}
