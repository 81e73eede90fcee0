/* bind_dwconv.c: the depth-wise convolution kernels from Lua (core/ops/dwconv.c does the work).
 * These are the raw passes, without autograd; lark.nn.functional.conv2d builds on them.
 *
 *   lark.dwconv2d(input, weight [, bias] [, opts])                      -> (N, C, Ho, Wo)
 *   lark.dwconv2d_backward_input(grad_out, weight, input_size [, opts]) -> (N, C, H, W)
 *   lark.dwconv2d_backward_weight(grad_out, input, kernel_size [, opts]) -> (C, 1, kh, kw)
 *   lark.dwconv2d_sum(input, {w1, w2, ...} [, bias] [, {opts1, opts2, ...}]) -> (N, C, Ho, Wo)
 *   lark.dwconv2d_sum_backward_input(grad_out, {w1, w2, ...}, input_size [, {opts...}]) -> (N, C, H, W)
 *   and the same five with `_reference` appended: the plain loops the fast paths are tested against.
 *   lark.dwconv2d_masked(input, weight, mask [, bias] [, opts]) and its _backward_input/_weight,
 *   lark.dwconv2d_sum_masked(input, {w...}, {m...} [, bias] [, {opts...}]) and its _backward_input/
 *   _weight: SLaK's sparse kernels (core/ops/dwconv_sparse.c), skipping masked-out taps;
 *   lark.dwconv2d_masked records its gradient. lark.dwconv2d_sparse_path([mode]) picks the kernels.
 *
 * The _sum pair is SLaK's decomposed kernel (51x5 + 5x51 + 5x5 on the same input, summed) in one
 * pass; its options are one table per kernel (or one table for all), and without them each kernel
 * is padded (kh//2, kw//2), the "same" padding SLaK uses.
 *
 * input (N, C, H, W), weight (C, 1, kh, kw), bias (C) or nil; input_size a table {N, C, H, W};
 * kernel_size kh or {kh, kw}. opts: stride = s or {sh, sw}; padding = p, {ph, pw} or
 * {top, bottom, left, right}; dilation = d or {dh, dw}. Also the method input:dwconv2d(weight, ...).
 *
 * The module registers itself through lb_register_dwconv(L, mod, methods) (one call in
 * lua/module.c). */
#include "binding.h"
#include "../core/ops/dwconv.h"

/* An integer in [lo, hi] from the value at the top of the stack (popped). */
static int pop_int(lua_State *L, const char *fname, const char *what, lua_Integer lo, lua_Integer hi) {
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (!isint) {
    const char *tn = luaL_typename(L, -1);
    luaL_error(L, "%s: %s must be an integer, got %s", fname, what, tn);
  }
  if (v < lo || v > hi)
    luaL_error(L, "%s: %s must be in [%I, %I], got %I", fname, what, lo, hi, v);
  lua_pop(L, 1);
  return (int)v;
}

/* Reads the field `key` of the table at idx as 1, 2 or (when allow4) 4 integers into out[0..3]
 * (a single n fills all; {a, b} gives {a, a, b, b} for 4 and {a, b} for 2). Returns whether the
 * field was present. */
static bool opt_ints(lua_State *L, int idx, const char *key, const char *fname, bool allow4, lua_Integer lo,
                     int out[4]) {
  lua_getfield(L, idx, key);
  int ty = lua_type(L, -1);
  if (ty == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  const lua_Integer hi = 1 << 20;
  if (ty == LUA_TNUMBER) {
    int v = pop_int(L, fname, key, lo, hi);
    out[0] = out[1] = out[2] = out[3] = v;
    return true;
  }
  if (ty != LUA_TTABLE) luaL_error(L, "%s: %s must be an integer or a table of integers, got %s", fname, key, luaL_typename(L, -1));
  lua_Integer n = luaL_len(L, -1);
  if (!(n == 2 || (allow4 && n == 4)))
    luaL_error(L, "%s: %s must have 2%s integers, got %I", fname, key, allow4 ? " or 4" : "", n);
  int v[4];
  for (int i = 0; i < n; i++) {
    lua_geti(L, -1, i + 1);
    v[i] = pop_int(L, fname, key, lo, hi);
  }
  lua_pop(L, 1);
  if (n == 2) out[0] = out[1] = v[0], out[2] = out[3] = v[1];
  else out[0] = v[0], out[1] = v[1], out[2] = v[2], out[3] = v[3];
  return true;
}

/* opts table (or nil/none) at idx into p (kernel size left as it is). */
static void check_opts(lua_State *L, int idx, const char *fname, lark_conv2d_params *p) {
  p->stride_h = p->stride_w = p->dil_h = p->dil_w = 1;
  p->pad_top = p->pad_bottom = p->pad_left = p->pad_right = 0;
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected an options table {stride=, padding=, dilation=}, got %s", fname, idx,
               luaL_typename(L, idx));
  int v[4];
  if (opt_ints(L, idx, "stride", fname, false, 1, v)) p->stride_h = v[0], p->stride_w = v[2];
  if (opt_ints(L, idx, "dilation", fname, false, 1, v)) p->dil_h = v[0], p->dil_w = v[2];
  if (opt_ints(L, idx, "padding", fname, true, 0, v))
    p->pad_top = v[0], p->pad_bottom = v[1], p->pad_left = v[2], p->pad_right = v[3];
}

/* The kernel size from a 4-D weight (its last two dims); core checks the rest. */
static void kernel_from_weight(lua_State *L, const lark_tensor *w, const char *fname, lark_conv2d_params *p) {
  if (w->ndim != 4) luaL_error(L, "%s: argument 2: weight must be 4-D (C, 1, kh, kw), got %d-D", fname, w->ndim);
  if (w->shape[2] < 1 || w->shape[3] < 1 || w->shape[2] > (1 << 16) || w->shape[3] > (1 << 16))
    luaL_error(L, "%s: argument 2: weight's kernel size must be in [1, 65536]", fname);
  p->kh = (int)w->shape[2];
  p->kw = (int)w->shape[3];
}

/* The input size {N, C, H, W} at idx into shape. */
static void input_size(lua_State *L, int idx, const char *fname, int64_t shape[LARK_MAX_DIMS]) {
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected the input size {N, C, H, W}, got %s", fname, idx, luaL_typename(L, idx));
  lua_pushvalue(L, idx);
  int nd = lb_checkshape(L, lua_gettop(L), shape, fname);
  lua_pop(L, 1);
  if (nd != 4) luaL_error(L, "%s: argument %d: the input size must have 4 entries, got %d", fname, idx, nd);
}

static int forward_impl(lua_State *L, const char *fname, bool reference) {
  lark_tensor *x = lb_check(L, 1, fname), *w = lb_check(L, 2, fname);
  lark_tensor *b = NULL;
  int oi = 3;
  if (lb_is(L, 3)) b = lb_check(L, 3, fname), oi = 4;
  else if (lua_isnil(L, 3)) oi = 4;
  lark_conv2d_params p;
  check_opts(L, oi, fname, &p);
  kernel_from_weight(L, w, fname, &p);
  lb_push(L, reference ? lark_dwconv2d_forward_reference(x, w, b, &p) : lark_dwconv2d_forward(x, w, b, &p));
  return 1;
}

static int backward_input_impl(lua_State *L, const char *fname, bool reference) {
  lark_tensor *gy = lb_check(L, 1, fname), *w = lb_check(L, 2, fname);
  int64_t shape[LARK_MAX_DIMS];
  input_size(L, 3, fname, shape);
  lark_conv2d_params p;
  check_opts(L, 4, fname, &p);
  kernel_from_weight(L, w, fname, &p);
  lb_push(L, reference ? lark_dwconv2d_backward_input_reference(gy, w, shape, &p)
                       : lark_dwconv2d_backward_input(gy, w, shape, &p));
  return 1;
}

static int backward_weight_impl(lua_State *L, const char *fname, bool reference) {
  lark_tensor *gy = lb_check(L, 1, fname), *x = lb_check(L, 2, fname);
  lark_conv2d_params p;
  check_opts(L, 4, fname, &p);
  if (lua_type(L, 3) == LUA_TNUMBER) {
    lua_pushvalue(L, 3);
    p.kh = p.kw = pop_int(L, fname, "kernel_size", 1, 1 << 16);
  } else if (lua_istable(L, 3) && !lb_is(L, 3) && luaL_len(L, 3) == 2) {
    lua_geti(L, 3, 1);
    p.kh = pop_int(L, fname, "kernel_size", 1, 1 << 16);
    lua_geti(L, 3, 2);
    p.kw = pop_int(L, fname, "kernel_size", 1, 1 << 16);
  } else {
    luaL_error(L, "%s: argument 3: expected the kernel size kh or {kh, kw}, got %s", fname, luaL_typename(L, 3));
  }
  lb_push(L, reference ? lark_dwconv2d_backward_weight_reference(gy, x, &p) : lark_dwconv2d_backward_weight(gy, x, &p));
  return 1;
}

#define MAX_KERNELS 8

/* The kernels at idx (a table of 4-D weights) into ws and their parameters into ps (options at
 * oidx: nil, one table for all, or a list of one table per kernel). Returns the count. */
static int sum_kernels(lua_State *L, int idx, int oidx, const char *fname, lark_tensor **ws, lark_conv2d_params *ps) {
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected a table of kernels {w1, w2, ...}, got %s", fname, idx, luaL_typename(L, idx));
  lua_Integer nk = luaL_len(L, idx);
  if (nk < 1 || nk > MAX_KERNELS)
    luaL_error(L, "%s: argument %d: expected 1 to %d kernels, got %I", fname, idx, MAX_KERNELS, nk);
  bool per_kernel = lua_istable(L, oidx) && !lb_is(L, oidx) && luaL_len(L, oidx) > 0;
  if (per_kernel && luaL_len(L, oidx) != nk)
    luaL_error(L, "%s: argument %d: expected one options table per kernel (%I), got %I", fname, oidx, nk,
               (lua_Integer)luaL_len(L, oidx));
  for (int k = 0; k < nk; k++) {
    lua_geti(L, idx, k + 1);
    ws[k] = lb_check(L, lua_gettop(L), fname);
    lua_pop(L, 1); /* the table keeps the tensor alive */
    if (per_kernel) {
      lua_geti(L, oidx, k + 1);
      check_opts(L, lua_gettop(L), fname, &ps[k]);
      lua_pop(L, 1);
    } else {
      check_opts(L, oidx, fname, &ps[k]);
    }
    kernel_from_weight(L, ws[k], fname, &ps[k]);
    if (lua_isnoneornil(L, oidx)) {
      ps[k].pad_top = ps[k].pad_bottom = ps[k].kh / 2;
      ps[k].pad_left = ps[k].pad_right = ps[k].kw / 2;
    }
  }
  return (int)nk;
}

static int sum_forward_impl(lua_State *L, const char *fname, bool reference) {
  lark_tensor *x = lb_check(L, 1, fname), *b = NULL, *ws[MAX_KERNELS];
  int oi = 3;
  if (lb_is(L, 3)) b = lb_check(L, 3, fname), oi = 4;
  else if (lua_isnil(L, 3)) oi = 4;
  lark_conv2d_params ps[MAX_KERNELS];
  int nk = sum_kernels(L, 2, oi, fname, ws, ps);
  const lark_tensor *cws[MAX_KERNELS];
  for (int k = 0; k < nk; k++) cws[k] = ws[k];
  lb_push(L, reference ? lark_dwconv2d_sum_forward_reference(x, nk, cws, b, ps) : lark_dwconv2d_sum_forward(x, nk, cws, b, ps));
  return 1;
}

static int sum_backward_input_impl(lua_State *L, const char *fname, bool reference) {
  lark_tensor *gy = lb_check(L, 1, fname), *ws[MAX_KERNELS];
  int64_t shape[LARK_MAX_DIMS];
  input_size(L, 3, fname, shape);
  lark_conv2d_params ps[MAX_KERNELS];
  int nk = sum_kernels(L, 2, 4, fname, ws, ps);
  const lark_tensor *cws[MAX_KERNELS];
  for (int k = 0; k < nk; k++) cws[k] = ws[k];
  lb_push(L, reference ? lark_dwconv2d_sum_backward_input_reference(gy, nk, cws, shape, ps)
                       : lark_dwconv2d_sum_backward_input(gy, nk, cws, shape, ps));
  return 1;
}

static int l_sum_forward(lua_State *L) { return sum_forward_impl(L, "dwconv2d_sum", false); }
static int l_sum_forward_ref(lua_State *L) { return sum_forward_impl(L, "dwconv2d_sum_reference", true); }
static int l_sum_backward_input(lua_State *L) { return sum_backward_input_impl(L, "dwconv2d_sum_backward_input", false); }
static int l_sum_backward_input_ref(lua_State *L) {
  return sum_backward_input_impl(L, "dwconv2d_sum_backward_input_reference", true);
}

static int l_forward(lua_State *L) { return forward_impl(L, "dwconv2d", false); }
static int l_forward_ref(lua_State *L) { return forward_impl(L, "dwconv2d_reference", true); }
static int l_backward_input(lua_State *L) { return backward_input_impl(L, "dwconv2d_backward_input", false); }
static int l_backward_input_ref(lua_State *L) {
  return backward_input_impl(L, "dwconv2d_backward_input_reference", true);
}
static int l_backward_weight(lua_State *L) { return backward_weight_impl(L, "dwconv2d_backward_weight", false); }
static int l_backward_weight_ref(lua_State *L) {
  return backward_weight_impl(L, "dwconv2d_backward_weight_reference", true);
}

/* ---- masked kernels (core/ops/dwconv_sparse.c) ---------------------------------------------- */

/* The masks at idx: a list with one entry per kernel, each a bool tensor or false (dense). */
static void sum_masks(lua_State *L, int idx, int nk, const char *fname, const lark_tensor **ms) {
  if (!lua_istable(L, idx) || lb_is(L, idx))
    luaL_error(L, "%s: argument %d: expected a table of masks {m1, m2, ...} (false for a dense kernel), got %s", fname,
               idx, luaL_typename(L, idx));
  if (luaL_len(L, idx) > nk)
    luaL_error(L, "%s: argument %d: expected one mask per kernel (%d), got %I", fname, idx, nk,
               (lua_Integer)luaL_len(L, idx));
  for (int k = 0; k < nk; k++) {
    lua_geti(L, idx, k + 1);
    ms[k] = lua_toboolean(L, -1) ? lb_check(L, lua_gettop(L), fname) : NULL;
    lua_pop(L, 1);
  }
}

/* opts.dense_grad (default false) */
static bool opt_dense_grad(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || lb_is(L, idx)) return false;
  lua_getfield(L, idx, "dense_grad");
  bool d = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return d;
}

/* lark.dwconv2d_masked(input, weight, mask [, bias] [, opts]) -> (N, C, Ho, Wo): the convolution
 * with weight * mask, skipping masked-out taps; records its gradient (autograd). opts as
 * dwconv2d's, plus dense_grad = true for the dense weight gradient (gradient growth). */
static int l_masked(lua_State *L) {
  const char *fname = "dwconv2d_masked";
  lark_tensor *x = lb_check(L, 1, fname), *w = lb_check(L, 2, fname), *m = lb_check(L, 3, fname), *b = NULL;
  int oi = 4;
  if (lb_is(L, 4)) b = lb_check(L, 4, fname), oi = 5;
  else if (lua_isnil(L, 4)) oi = 5;
  lark_conv2d_params p;
  check_opts(L, oi, fname, &p);
  kernel_from_weight(L, w, fname, &p);
  lb_push(L, lark_dwconv2d_masked(x, w, m, b, &p, opt_dense_grad(L, oi)));
  return 1;
}

/* lark.dwconv2d_masked_backward_input(grad_out, weight, mask, input_size [, opts]) -> (N, C, H, W) */
static int l_masked_backward_input(lua_State *L) {
  const char *fname = "dwconv2d_masked_backward_input";
  lark_tensor *gy = lb_check(L, 1, fname), *w = lb_check(L, 2, fname), *m = lb_check(L, 3, fname);
  int64_t shape[LARK_MAX_DIMS];
  input_size(L, 4, fname, shape);
  lark_conv2d_params p;
  check_opts(L, 5, fname, &p);
  kernel_from_weight(L, w, fname, &p);
  lb_push(L, lark_dwconv2d_masked_backward_input(gy, w, m, shape, &p));
  return 1;
}

/* lark.dwconv2d_masked_backward_weight(grad_out, input, mask [, opts]) -> (C, 1, kh, kw), zero at
 * masked-out taps (the kernel size is the mask's) */
static int l_masked_backward_weight(lua_State *L) {
  const char *fname = "dwconv2d_masked_backward_weight";
  lark_tensor *gy = lb_check(L, 1, fname), *x = lb_check(L, 2, fname), *m = lb_check(L, 3, fname);
  lark_conv2d_params p;
  check_opts(L, 4, fname, &p);
  if (m->ndim != 4) luaL_error(L, "%s: argument 3: mask must be 4-D (C, 1, kh, kw), got %d-D", fname, m->ndim);
  kernel_from_weight(L, m, fname, &p);
  lb_push(L, lark_dwconv2d_masked_backward_weight(gy, x, m, &p));
  return 1;
}

/* lark.dwconv2d_sum_masked(input, {w1, ...}, {m1 or false, ...} [, bias] [, {opts...}]) */
static int l_sum_masked(lua_State *L) {
  const char *fname = "dwconv2d_sum_masked";
  lark_tensor *x = lb_check(L, 1, fname), *b = NULL, *ws[MAX_KERNELS];
  int oi = 4;
  if (lb_is(L, 4)) b = lb_check(L, 4, fname), oi = 5;
  else if (lua_isnil(L, 4)) oi = 5;
  lark_conv2d_params ps[MAX_KERNELS];
  int nk = sum_kernels(L, 2, oi, fname, ws, ps);
  const lark_tensor *cws[MAX_KERNELS], *ms[MAX_KERNELS];
  for (int k = 0; k < nk; k++) cws[k] = ws[k];
  sum_masks(L, 3, nk, fname, ms);
  lb_push(L, lark_dwconv2d_masked_sum_forward(x, nk, cws, ms, b, ps));
  return 1;
}

/* lark.dwconv2d_sum_masked_backward_input(grad_out, {w1, ...}, {m1, ...}, input_size [, {opts...}]) */
static int l_sum_masked_backward_input(lua_State *L) {
  const char *fname = "dwconv2d_sum_masked_backward_input";
  lark_tensor *gy = lb_check(L, 1, fname), *ws[MAX_KERNELS];
  int64_t shape[LARK_MAX_DIMS];
  input_size(L, 4, fname, shape);
  lark_conv2d_params ps[MAX_KERNELS];
  int nk = sum_kernels(L, 2, 5, fname, ws, ps);
  const lark_tensor *cws[MAX_KERNELS], *ms[MAX_KERNELS];
  for (int k = 0; k < nk; k++) cws[k] = ws[k];
  sum_masks(L, 3, nk, fname, ms);
  lb_push(L, lark_dwconv2d_masked_sum_backward_input(gy, nk, cws, ms, shape, ps));
  return 1;
}

/* lark.dwconv2d_sum_masked_backward_weight(grad_out, input, {w1, ...}, {m1, ...} [, {opts...}])
 * -> {gw1, gw2, ...}: each kernel's weight gradient (zero at its masked-out taps); the weights
 * only give the kernel sizes. */
static int l_sum_masked_backward_weight(lua_State *L) {
  const char *fname = "dwconv2d_sum_masked_backward_weight";
  lark_tensor *gy = lb_check(L, 1, fname), *x = lb_check(L, 2, fname), *ws[MAX_KERNELS];
  lark_conv2d_params ps[MAX_KERNELS];
  int nk = sum_kernels(L, 3, 5, fname, ws, ps);
  const lark_tensor *ms[MAX_KERNELS];
  sum_masks(L, 4, nk, fname, ms);
  lark_tensor *gs[MAX_KERNELS];
  if (lark_dwconv2d_masked_sum_backward_weight(gy, x, nk, ms, ps, gs)) return lb_error(L);
  lua_createtable(L, nk, 0);
  for (int k = 0; k < nk; k++) {
    lb_push(L, gs[k]);
    lua_seti(L, -2, k + 1);
  }
  return 1;
}

/* lark.dwconv2d_sparse_path([mode]) -> the mode before: "auto" (the sparse kernels where they are
 * faster), "sparse" or "dense" (for tests and benchmarks). */
static int l_sparse_path(lua_State *L) {
  const char *before = lark_dwconv2d_sparse_path();
  if (!lua_isnoneornil(L, 1) && lark_dwconv2d_set_sparse_path(luaL_checkstring(L, 1))) return lb_error(L);
  lua_pushstring(L, before);
  return 1;
}

void lb_register_dwconv(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"dwconv2d", l_forward},
      {"dwconv2d_reference", l_forward_ref},
      {"dwconv2d_backward_input", l_backward_input},
      {"dwconv2d_backward_input_reference", l_backward_input_ref},
      {"dwconv2d_backward_weight", l_backward_weight},
      {"dwconv2d_backward_weight_reference", l_backward_weight_ref},
      {"dwconv2d_sum", l_sum_forward},
      {"dwconv2d_sum_reference", l_sum_forward_ref},
      {"dwconv2d_sum_backward_input", l_sum_backward_input},
      {"dwconv2d_sum_backward_input_reference", l_sum_backward_input_ref},
      {"dwconv2d_masked", l_masked},
      {"dwconv2d_masked_backward_input", l_masked_backward_input},
      {"dwconv2d_masked_backward_weight", l_masked_backward_weight},
      {"dwconv2d_sum_masked", l_sum_masked},
      {"dwconv2d_sum_masked_backward_input", l_sum_masked_backward_input},
      {"dwconv2d_sum_masked_backward_weight", l_sum_masked_backward_weight},
      {"dwconv2d_sparse_path", l_sparse_path},
      {NULL, NULL}};
  lb_register(L, mod, fns);
  lb_register(L, methods, fns);
}
