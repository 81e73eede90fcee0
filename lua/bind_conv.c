/* bind_conv.c: convolution, pooling and padding from Lua (core/ops/conv.c and core/ops/pool.c do
 * the work, autograd included). lark.nn.functional wraps these with torch-like signatures.
 *
 *   lark.conv2d(input, weight [, bias] [, opts])                 -> (N, Cout, Ho, Wo)
 *     opts: stride = s or {sh, sw}; padding = p, {ph, pw} or {top, bottom, left, right};
 *           dilation = d or {dh, dw}; groups = g
 *   lark.conv2d_reference(...)                                    the plain 7-deep loops
 *   lark.conv2d_backward_input(grad_out, weight, input_size [, opts])   (and _reference)
 *   lark.conv2d_backward_weight(grad_out, input, weight_size [, opts])  (and _reference)
 *   lark.avg_pool2d(input, kernel [, stride [, padding]])         kernel etc.: n or {h, w}
 *   lark.max_pool2d(input, kernel [, stride [, padding]])         -> out, indices (1-based,
 *                                                                    ih*W + iw + 1 in each plane)
 *   lark.adaptive_avg_pool2d(input, size)                          size: n or {h, w}
 *   lark.pad(input, pads [, value])                                pads {left, right, top, bottom, ...}
 * Each is also a method: input:conv2d(weight, ...).
 *
 * Registered by lb_register_conv(L, mod, methods) (one call in lua/module.c). */
#include "binding.h"
#include "../core/ops/conv.h"

void lb_register_conv(lua_State *L, int mod, int methods);

/* An integer in [lo, hi] from the value at the top of the stack (popped). */
static int pop_int(lua_State *L, const char *fname, const char *what, lua_Integer lo, lua_Integer hi) {
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint) {
    const char *tn = lua_type(L, -1) == LUA_TNUMBER ? "a non-integer number" : luaL_typename(L, -1);
    luaL_error(L, "%s: %s must be an integer, got %s", fname, what, tn);
  }
  if (v < lo || v > hi) luaL_error(L, "%s: %s must be in [%I, %I], got %I", fname, what, lo, hi, v);
  lua_pop(L, 1);
  return (int)v;
}

/* The value at the top of the stack (popped) as 1 or 2 (or, when allow4, 4) integers into
 * out[0..3]: n gives {n, n, n, n}; {a, b} gives {a, a, b, b}; {a, b, c, d} stays. */
static void pop_ints(lua_State *L, const char *fname, const char *what, bool allow4, lua_Integer lo, int out[4]) {
  const lua_Integer hi = 1 << 20;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    int v = pop_int(L, fname, what, lo, hi);
    out[0] = out[1] = out[2] = out[3] = v;
    return;
  }
  if (!lua_istable(L, -1) || lb_is(L, -1))
    luaL_error(L, "%s: %s must be an integer or a table of integers, got %s", fname, what, luaL_typename(L, -1));
  lua_Integer n = luaL_len(L, -1);
  if (!(n == 2 || (allow4 && n == 4)))
    luaL_error(L, "%s: %s must have 2%s integers, got %I", fname, what, allow4 ? " or 4" : "", n);
  int v[4];
  for (int i = 0; i < n; i++) {
    lua_geti(L, -1, i + 1);
    v[i] = pop_int(L, fname, what, lo, hi);
  }
  lua_pop(L, 1);
  if (n == 2) out[0] = out[1] = v[0], out[2] = out[3] = v[1];
  else out[0] = v[0], out[1] = v[1], out[2] = v[2], out[3] = v[3];
}

static void check_conv_opts(lua_State *L, int idx, const char *fname, lark_conv2d_args *a) {
  *a = (lark_conv2d_args){.stride_h = 1, .stride_w = 1, .dil_h = 1, .dil_w = 1, .groups = 1};
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected an options table {stride=, padding=, dilation=, groups=}, got %s", fname,
               idx, luaL_typename(L, idx));
  int v[4];
  if (lua_getfield(L, idx, "stride") != LUA_TNIL) pop_ints(L, fname, "stride", false, 1, v), a->stride_h = v[0], a->stride_w = v[2];
  else lua_pop(L, 1);
  if (lua_getfield(L, idx, "dilation") != LUA_TNIL) pop_ints(L, fname, "dilation", false, 1, v), a->dil_h = v[0], a->dil_w = v[2];
  else lua_pop(L, 1);
  if (lua_getfield(L, idx, "padding") != LUA_TNIL)
    pop_ints(L, fname, "padding", true, 0, v), a->pad_top = v[0], a->pad_bottom = v[1], a->pad_left = v[2], a->pad_right = v[3];
  else lua_pop(L, 1);
  if (lua_getfield(L, idx, "groups") != LUA_TNIL) a->groups = pop_int(L, fname, "groups", 1, 1 << 20);
  else lua_pop(L, 1);
}

static int conv_forward(lua_State *L, const char *fname, bool reference) {
  lark_tensor *x = lb_check(L, 1, fname), *w = lb_check(L, 2, fname), *b = NULL;
  int oi = 3;
  if (lb_is(L, 3)) b = lb_check(L, 3, fname), oi = 4;
  else if (lua_isnil(L, 3) && lua_gettop(L) >= 4) oi = 4;
  lark_conv2d_args a;
  check_conv_opts(L, oi, fname, &a);
  lb_push(L, reference ? lark_conv2d_reference(x, w, b, &a) : lark_conv2d(x, w, b, &a));
  return 1;
}

static void check_size4(lua_State *L, int idx, const char *fname, const char *what, int64_t shape[4]) {
  int64_t s[LARK_MAX_DIMS];
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected the %s size (a table of 4 integers), got %s", fname, idx, what,
               luaL_typename(L, idx));
  int nd = lb_checkshape(L, idx, s, fname);
  if (nd != 4) luaL_error(L, "%s: argument %d: the %s size must have 4 entries, got %d", fname, idx, what, nd);
  for (int i = 0; i < 4; i++) shape[i] = s[i];
}

static int conv_backward_input(lua_State *L, const char *fname, bool reference) {
  lark_tensor *gy = lb_check(L, 1, fname), *w = lb_check(L, 2, fname);
  int64_t shape[4];
  check_size4(L, 3, fname, "input", shape);
  lark_conv2d_args a;
  check_conv_opts(L, 4, fname, &a);
  lb_push(L, reference ? lark_conv2d_backward_input_reference(gy, w, shape, &a)
                       : lark_conv2d_backward_input(gy, w, shape, &a));
  return 1;
}

static int conv_backward_weight(lua_State *L, const char *fname, bool reference) {
  lark_tensor *gy = lb_check(L, 1, fname), *x = lb_check(L, 2, fname);
  int64_t shape[4];
  check_size4(L, 3, fname, "weight", shape);
  lark_conv2d_args a;
  check_conv_opts(L, 4, fname, &a);
  lb_push(L, reference ? lark_conv2d_backward_weight_reference(gy, x, shape, &a)
                       : lark_conv2d_backward_weight(gy, x, shape, &a));
  return 1;
}

static int l_conv2d(lua_State *L) { return conv_forward(L, "conv2d", false); }
static int l_conv2d_ref(lua_State *L) { return conv_forward(L, "conv2d_reference", true); }
static int l_conv2d_bi(lua_State *L) { return conv_backward_input(L, "conv2d_backward_input", false); }
static int l_conv2d_bi_ref(lua_State *L) { return conv_backward_input(L, "conv2d_backward_input_reference", true); }
static int l_conv2d_bw(lua_State *L) { return conv_backward_weight(L, "conv2d_backward_weight", false); }
static int l_conv2d_bw_ref(lua_State *L) { return conv_backward_weight(L, "conv2d_backward_weight_reference", true); }

/* kernel [, stride [, padding]] at 2, 3, 4: stride nil means the kernel, padding nil means 0 */
static void check_pool_args(lua_State *L, const char *fname, lark_pool2d_args *a) {
  int v[4];
  if (lua_isnoneornil(L, 2)) luaL_error(L, "%s: argument 2: expected the kernel size (n or {h, w}), got %s", fname, luaL_typename(L, 2));
  lua_pushvalue(L, 2);
  pop_ints(L, fname, "kernel_size", false, 1, v);
  a->kh = v[0], a->kw = v[2];
  a->stride_h = a->kh, a->stride_w = a->kw;
  a->pad_h = a->pad_w = 0;
  if (!lua_isnoneornil(L, 3)) {
    lua_pushvalue(L, 3);
    pop_ints(L, fname, "stride", false, 1, v);
    a->stride_h = v[0], a->stride_w = v[2];
  }
  if (!lua_isnoneornil(L, 4)) {
    lua_pushvalue(L, 4);
    pop_ints(L, fname, "padding", false, 0, v);
    a->pad_h = v[0], a->pad_w = v[2];
  }
}

static int l_avg_pool2d(lua_State *L) {
  lark_tensor *x = lb_check(L, 1, "avg_pool2d");
  lark_pool2d_args a;
  check_pool_args(L, "avg_pool2d", &a);
  lb_push(L, lark_avg_pool2d(x, &a));
  return 1;
}

static int l_max_pool2d(lua_State *L) {
  lark_tensor *x = lb_check(L, 1, "max_pool2d");
  lark_pool2d_args a;
  check_pool_args(L, "max_pool2d", &a);
  lark_tensor *idx = NULL, *out = lark_max_pool2d(x, &a, &idx);
  if (!out) return lb_error(L);
  lb_push(L, out);
  /* 1-based positions for Lua */
  lark_tensor *one = lark_binary_scalar(LARK_OP_ADD, idx, 1, true, false);
  lark_tensor_release(idx);
  lb_push(L, one);
  return 2;
}

static int l_adaptive_avg_pool2d(lua_State *L) {
  lark_tensor *x = lb_check(L, 1, "adaptive_avg_pool2d");
  int v[4];
  if (lua_isnoneornil(L, 2)) luaL_error(L, "adaptive_avg_pool2d: argument 2: expected the output size (n or {h, w}), got %s", luaL_typename(L, 2));
  lua_pushvalue(L, 2);
  pop_ints(L, "adaptive_avg_pool2d", "output_size", false, 1, v);
  lb_push(L, lark_adaptive_avg_pool2d(x, v[0], v[2]));
  return 1;
}

static int l_pad(lua_State *L) {
  lark_tensor *x = lb_check(L, 1, "pad");
  if (!lua_istable(L, 2) || lb_is(L, 2))
    luaL_error(L, "pad: argument 2: expected a table of pads {left, right, top, bottom, ...}, got %s", luaL_typename(L, 2));
  lua_Integer n = luaL_len(L, 2);
  if (n % 2 || n > 2 * x->ndim)
    luaL_error(L, "pad: argument 2: expected an even number of pads, at most 2 per dim (%d for %d dims), got %I",
               2 * x->ndim, x->ndim, n);
  int64_t pads[2 * LARK_MAX_DIMS];
  for (int i = 0; i < n; i++) {
    lua_geti(L, 2, i + 1);
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint) luaL_error(L, "pad: argument 2: pad %d must be an integer, got %s", i + 1, luaL_typename(L, -1));
    if (v > (1 << 30) || v < -(1 << 30)) luaL_error(L, "pad: argument 2: pad %d (%I) is out of range", i + 1, v);
    pads[i] = v;
    lua_pop(L, 1);
  }
  double value = 0;
  if (!lua_isnoneornil(L, 3)) {
    if (lua_type(L, 3) != LUA_TNUMBER) luaL_error(L, "pad: argument 3: expected a number (the fill value), got %s", luaL_typename(L, 3));
    value = lua_tonumber(L, 3);
  }
  lb_push(L, lark_pad(x, (int)n, pads, value));
  return 1;
}

void lb_register_conv(lua_State *L, int mod, int methods) {
  static const luaL_Reg both[] = {
      {"conv2d", l_conv2d},         {"avg_pool2d", l_avg_pool2d}, {"max_pool2d", l_max_pool2d},
      {"adaptive_avg_pool2d", l_adaptive_avg_pool2d}, {"pad", l_pad}, {NULL, NULL}};
  static const luaL_Reg only_mod[] = {{"conv2d_reference", l_conv2d_ref},
                                      {"conv2d_backward_input", l_conv2d_bi},
                                      {"conv2d_backward_input_reference", l_conv2d_bi_ref},
                                      {"conv2d_backward_weight", l_conv2d_bw},
                                      {"conv2d_backward_weight_reference", l_conv2d_bw_ref},
                                      {NULL, NULL}};
  lb_register(L, mod, both);
  lb_register(L, methods, both);
  lb_register(L, mod, only_mod);
}
