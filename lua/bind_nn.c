/* bind_nn.c: the fused neural-network ops from Lua (core/ops/norm.c, softmax.c, activation.c do
 * the work); lark.nn.functional wraps them with PyTorch's names and defaults.
 *
 *   lark.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
 *   lark.layer_norm(x, weight, bias, eps)                  normalises the last dim
 *   lark.layer_norm_channels_first(x, weight, bias, eps)   normalises dim 2 of (N, C, ...)
 *   lark.softmax(x, dim), lark.log_softmax(x, dim)         also methods; dim 1-based, negative from the end
 *   lark.cross_entropy(logits, target [, reduction [, label_smoothing]])
 *   lark.nll_loss(log_probs, target [, reduction])
 *   lark.gelu(x)                                           also a method
 *
 * Class indices in target are 1-based int64; they are checked against [1, C] here (so the message
 * speaks 1-based) and converted to 0-based once. Tensor arguments after the first may be nil. */
#include <string.h>

#include "binding.h"
#include "../core/ops/nn.h"

void lb_register_nn(lua_State *L, int mod, int methods);

/* A tensor or nil at idx. */
static lark_tensor *opt_tensor(lua_State *L, int idx, const char *fname, const char *what) {
  if (lua_isnoneornil(L, idx)) return NULL;
  if (!lb_is(L, idx))
    luaL_error(L, "%s: argument %d (%s): expected a Tensor or nil, got %s", fname, idx, what, luaL_typename(L, idx));
  return lb_check(L, idx, fname);
}

static double opt_number(lua_State *L, int idx, double def, const char *fname, const char *what) {
  if (lua_isnoneornil(L, idx)) return def;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s: argument %d (%s): expected a number, got %s", fname, idx, what, luaL_typename(L, idx));
  return lua_tonumber(L, idx);
}

static int l_batch_norm(lua_State *L) {
  const char *f = "batch_norm";
  lark_tensor *x = lb_check(L, 1, f);
  lark_tensor *rm = opt_tensor(L, 2, f, "running_mean"), *rv = opt_tensor(L, 3, f, "running_var");
  lark_tensor *w = opt_tensor(L, 4, f, "weight"), *b = opt_tensor(L, 5, f, "bias");
  if (!lua_isnoneornil(L, 6) && !lua_isboolean(L, 6))
    luaL_error(L, "%s: argument 6 (training): expected a boolean, got %s", f, luaL_typename(L, 6));
  bool training = lua_toboolean(L, 6);
  double momentum = opt_number(L, 7, 0.1, f, "momentum"), eps = opt_number(L, 8, 1e-5, f, "eps");
  lb_push(L, lark_batch_norm(x, rm, rv, w, b, training, momentum, eps));
  return 1;
}

static int layer_norm_common(lua_State *L, const char *f, bool channels_first) {
  lark_tensor *x = lb_check(L, 1, f);
  lark_tensor *w = opt_tensor(L, 2, f, "weight"), *b = opt_tensor(L, 3, f, "bias");
  double eps = opt_number(L, 4, 1e-5, f, "eps");
  lb_push(L, channels_first ? lark_layer_norm_channels_first(x, w, b, eps) : lark_layer_norm(x, w, b, eps));
  return 1;
}
static int l_layer_norm(lua_State *L) { return layer_norm_common(L, "layer_norm", false); }
static int l_layer_norm_cf(lua_State *L) { return layer_norm_common(L, "layer_norm_channels_first", true); }

static int softmax_common(lua_State *L, const char *f, bool logmode) {
  lark_tensor *x = lb_check(L, 1, f);
  int dim = lb_checkdim(L, 2, x->ndim, f);
  lb_push(L, logmode ? lark_log_softmax(x, dim) : lark_softmax(x, dim));
  return 1;
}
static int l_softmax(lua_State *L) { return softmax_common(L, "softmax", false); }
static int l_log_softmax(lua_State *L) { return softmax_common(L, "log_softmax", true); }

static int l_gelu(lua_State *L) {
  lb_push(L, lark_gelu(lb_check(L, 1, "gelu")));
  return 1;
}

static lark_reduction check_reduction(lua_State *L, int idx, const char *f) {
  if (lua_isnoneornil(L, idx)) return LARK_REDUCTION_MEAN;
  const char *r = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  if (r && !strcmp(r, "mean")) return LARK_REDUCTION_MEAN;
  if (r && !strcmp(r, "sum")) return LARK_REDUCTION_SUM;
  if (r && !strcmp(r, "none")) return LARK_REDUCTION_NONE;
  luaL_error(L, "%s: argument %d (reduction): expected 'mean', 'sum' or 'none', got %s", f, idx,
             r ? r : luaL_typename(L, idx));
  return LARK_REDUCTION_MEAN;
}

/* target with 1-based class indices checked against [1, C] and made 0-based; other targets are
 * passed on as they are (a new reference either way). Core checks shapes and dtypes. */
static lark_tensor *zero_based_target(lua_State *L, const lark_tensor *input, lark_tensor *target, const char *f) {
  if (target->dtype != LARK_INT64 || input->ndim != 2 || target->ndim != 1)
    return lark_tensor_retain(target);
  int64_t C = input->shape[1];
  lark_tensor *tc = lark_contiguous(target);
  if (!tc) lb_error(L);
  /* gpunorm: a target on a GPU is read through a host copy (its memory cannot be read in place) */
  lark_tensor *host = NULL;
  if (lark_tensor_device(tc).kind != LARK_CPU && !(host = lark_to(tc, LARK_INT64, &LARK_DEVICE_CPU))) {
    lark_tensor_release(tc);
    lb_error(L);
  }
  const int64_t *t = lark_data_ptr(host ? host : tc);
  int64_t n = lark_numel(tc);
  for (int64_t k = 0; k < n; k++)
    if (t[k] < 1 || t[k] > C) {
      lua_Integer v = (lua_Integer)t[k], pos = (lua_Integer)(k + 1);
      lark_tensor_release(host);
      lark_tensor_release(tc);
      luaL_error(L, "%s: target %I (at position %I) is out of range for %I classes (expected 1..%I)", f, v, pos,
                 (lua_Integer)C, (lua_Integer)C);
    }
  lark_tensor_release(host);
  lark_tensor *z = lark_binary_scalar(LARK_OP_SUB, tc, 1, true, false);
  lark_tensor_release(tc);
  if (!z) lb_error(L);
  return z;
}

static int l_cross_entropy(lua_State *L) {
  const char *f = "cross_entropy";
  lark_tensor *x = lb_check(L, 1, f), *target = lb_check(L, 2, f);
  lark_reduction red = check_reduction(L, 3, f);
  double smoothing = opt_number(L, 4, 0.0, f, "label_smoothing");
  lark_tensor *t0 = zero_based_target(L, x, target, f);
  lark_tensor *out = lark_cross_entropy(x, t0, smoothing, red);
  lark_tensor_release(t0);
  lb_push(L, out);
  return 1;
}

static int l_nll_loss(lua_State *L) {
  const char *f = "nll_loss";
  lark_tensor *x = lb_check(L, 1, f), *target = lb_check(L, 2, f);
  lark_reduction red = check_reduction(L, 3, f);
  lark_tensor *t0 = zero_based_target(L, x, target, f);
  lark_tensor *out = lark_nll_loss(x, t0, red);
  lark_tensor_release(t0);
  lb_push(L, out);
  return 1;
}

void lb_register_nn(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"batch_norm", l_batch_norm},
      {"layer_norm", l_layer_norm},
      {"layer_norm_channels_first", l_layer_norm_cf},
      {"softmax", l_softmax},
      {"log_softmax", l_log_softmax},
      {"gelu", l_gelu},
      {"cross_entropy", l_cross_entropy},
      {"nll_loss", l_nll_loss},
      {NULL, NULL},
  };
  static const luaL_Reg meths[] = {
      {"softmax", l_softmax},
      {"log_softmax", l_log_softmax},
      {"gelu", l_gelu},
      {NULL, NULL},
  };
  lb_register(L, mod, fns);
  lb_register(L, methods, meths);
}
