/* bind_elementwise.c: elementwise ops, their in-place `_` forms, the arithmetic metamethods,
 * clamp, where and matmul. `*` is elementwise (as in PyTorch); matrix products are t:matmul(u). */
#include <math.h>
#include <string.h>

#include "binding.h"

/* a op b where either side may be a number (but not both). */
static int binary(lua_State *L, lark_binary_op op) {
  const char *name = lark_binary_op_name(op);
  lark_tensor *a = lb_opt(L, 1), *b = lb_opt(L, 2);
  if (a && b) {
    lb_push(L, lark_binary(op, a, b));
  } else if (a && (lua_type(L, 2) == LUA_TNUMBER || lua_isboolean(L, 2))) {
    double s = lua_isboolean(L, 2) ? lua_toboolean(L, 2) : lua_tonumber(L, 2);
    lb_push(L, lark_binary_scalar(op, a, s, lua_isinteger(L, 2) || lua_isboolean(L, 2), false));
  } else if (b && lua_type(L, 1) == LUA_TNUMBER) {
    lb_push(L, lark_binary_scalar(op, b, lua_tonumber(L, 1), lua_isinteger(L, 1), true));
  } else if (lua_type(L, 1) == LUA_TNUMBER && lua_type(L, 2) == LUA_TNUMBER) {
    return luaL_error(L, "%s: expected at least one Tensor, got two numbers", name);
  } else {
    int bad = a || lua_type(L, 1) == LUA_TNUMBER ? 2 : 1;
    return luaL_error(L, "%s: argument %d: expected a Tensor or a number, got %s", name, bad, luaL_typename(L, bad));
  }
  return 1;
}

static int binary_inplace(lua_State *L, lark_binary_op op) {
  char name[64];
  snprintf(name, sizeof name, "%s_", lark_binary_op_name(op));
  lark_tensor *a = lb_check(L, 1, name);
  if (lb_is(L, 2)) {
    lb_check_status(L, lark_binary_(op, a, lb_opt(L, 2)));
  } else if (lua_type(L, 2) == LUA_TNUMBER || lua_isboolean(L, 2)) {
    lb_check_status(L, lark_binary_scalar_(op, a, lua_isboolean(L, 2) ? lua_toboolean(L, 2) : lua_tonumber(L, 2)));
  } else {
    return luaL_error(L, "%s: argument 2: expected a Tensor or a number, got %s", name, luaL_typename(L, 2));
  }
  lua_settop(L, 1);
  return 1;
}

/* add/sub take an optional alpha: a + alpha * b, as in PyTorch. */
static int add_like(lua_State *L, lark_binary_op op, bool inplace) {
  if (!lua_isnoneornil(L, 3)) {
    double alpha = luaL_checknumber(L, 3);
    bool alpha_is_int = lua_isinteger(L, 3); /* an integer alpha keeps integer tensors integer */
    lua_Integer ialpha = alpha_is_int ? lua_tointeger(L, 3) : 0;
    lua_settop(L, 2);
    if (lb_is(L, 2)) {
      lb_push(L, lark_binary_scalar(LARK_OP_MUL, lb_opt(L, 2), alpha, alpha_is_int, false));
      lua_replace(L, 2);
    } else if (lua_isinteger(L, 2) && alpha_is_int) {
      lua_pushinteger(L, (lua_Integer)((lua_Unsigned)lua_tointeger(L, 2) * (lua_Unsigned)ialpha));
      lua_replace(L, 2);
    } else if (lua_type(L, 2) == LUA_TNUMBER) {
      lua_pushnumber(L, lua_tonumber(L, 2) * alpha);
      lua_replace(L, 2);
    }
  }
  return inplace ? binary_inplace(L, op) : binary(L, op);
}

#define BINARY_FN(NAME, OP)                                            \
  static int le_##NAME(lua_State *L) { return binary(L, OP); }          \
  static int le_##NAME##_(lua_State *L) { return binary_inplace(L, OP); }
BINARY_FN(mul, LARK_OP_MUL)
BINARY_FN(div, LARK_OP_DIV)
BINARY_FN(pow, LARK_OP_POW)
BINARY_FN(maximum, LARK_OP_MAXIMUM)
BINARY_FN(minimum, LARK_OP_MINIMUM)
BINARY_FN(fmod, LARK_OP_FMOD)
BINARY_FN(eq, LARK_OP_EQ)
BINARY_FN(ne, LARK_OP_NE)
BINARY_FN(lt, LARK_OP_LT)
BINARY_FN(le, LARK_OP_LE)
BINARY_FN(gt, LARK_OP_GT)
BINARY_FN(ge, LARK_OP_GE)
BINARY_FN(logical_and, LARK_OP_AND)
BINARY_FN(logical_or, LARK_OP_OR)
BINARY_FN(logical_xor, LARK_OP_XOR)
static int le_add(lua_State *L) { return add_like(L, LARK_OP_ADD, false); }
static int le_add_(lua_State *L) { return add_like(L, LARK_OP_ADD, true); }
static int le_sub(lua_State *L) { return add_like(L, LARK_OP_SUB, false); }
static int le_sub_(lua_State *L) { return add_like(L, LARK_OP_SUB, true); }

static int le_unm(lua_State *L) {
  lb_push(L, lark_unary(LARK_OP_NEG, lb_check(L, 1, "neg")));
  return 1;
}

#define UNARY_FN(NAME, OP)                                                          \
  static int le_##NAME(lua_State *L) {                                               \
    lb_push(L, lark_unary(OP, lb_check(L, 1, #NAME)));                              \
    return 1;                                                                       \
  }                                                                                 \
  static int le_##NAME##_(lua_State *L) {                                            \
    lb_check_status(L, lark_unary_(OP, lb_check(L, 1, #NAME "_")));                 \
    lua_settop(L, 1);                                                               \
    return 1;                                                                       \
  }
UNARY_FN(neg, LARK_OP_NEG)
UNARY_FN(abs, LARK_OP_ABS)
UNARY_FN(exp, LARK_OP_EXP)
UNARY_FN(log, LARK_OP_LOG)
UNARY_FN(sqrt, LARK_OP_SQRT)
UNARY_FN(rsqrt, LARK_OP_RSQRT)
UNARY_FN(sin, LARK_OP_SIN)
UNARY_FN(cos, LARK_OP_COS)
UNARY_FN(tanh, LARK_OP_TANH)
UNARY_FN(sigmoid, LARK_OP_SIGMOID)
UNARY_FN(relu, LARK_OP_RELU)
UNARY_FN(floor, LARK_OP_FLOOR)
UNARY_FN(ceil, LARK_OP_CEIL)
UNARY_FN(round, LARK_OP_ROUND)
UNARY_FN(sign, LARK_OP_SIGN)
UNARY_FN(reciprocal, LARK_OP_RECIPROCAL)
UNARY_FN(square, LARK_OP_SQUARE)
UNARY_FN(logical_not, LARK_OP_NOT)

/* t:clamp(min, max): either may be nil. */
static void clamp_bounds(lua_State *L, const char *name, double *lo, double *hi) {
  *lo = lua_isnoneornil(L, 2) ? NAN : luaL_checknumber(L, 2);
  *hi = lua_isnoneornil(L, 3) ? NAN : luaL_checknumber(L, 3);
  if (lua_isnoneornil(L, 2) && lua_isnoneornil(L, 3))
    luaL_error(L, "%s: at least one of min and max must be given", name);
}

static int le_clamp(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "clamp");
  double lo, hi;
  clamp_bounds(L, "clamp", &lo, &hi);
  lb_push(L, lark_clamp(t, lo, hi));
  return 1;
}

static int le_clamp_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "clamp_");
  double lo, hi;
  clamp_bounds(L, "clamp_", &lo, &hi);
  lb_check_status(L, lark_clamp_(t, lo, hi));
  lua_settop(L, 1);
  return 1;
}

/* lark.where(cond, a, b): a and b may be numbers. */
static int le_where(lua_State *L) {
  lark_tensor *c = lb_check(L, 1, "where");
  lark_tensor *a0 = lb_opt(L, 2), *b0 = lb_opt(L, 3);
  const lark_tensor *like = a0 ? a0 : b0 ? b0 : NULL;
  lark_tensor *a = lb_tensor_or_number(L, 2, like, "where");
  lb_push(L, a);
  lark_tensor *b = lb_tensor_or_number(L, 3, like ? like : a, "where");
  lb_push(L, b);
  lb_push(L, lark_where(c, a, b));
  return 1;
}

static int le_matmul(lua_State *L) {
  lb_push(L, lark_matmul(lb_check(L, 1, "matmul"), lb_check(L, 2, "matmul")));
  return 1;
}

/* a:dot(b) for 1-D tensors: a number-valued 0-d tensor. */
static int le_dot(lua_State *L) {
  lark_tensor *a = lb_check(L, 1, "dot"), *b = lb_check(L, 2, "dot");
  if (a->ndim != 1 || b->ndim != 1)
    return luaL_error(L, "dot: expected two 1-D tensors, got %d-D and %d-D (use matmul)", a->ndim, b->ndim);
  lb_push(L, lark_matmul(a, b));
  return 1;
}

void lb_register_elementwise(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
#define R(n) {#n, le_##n}, {#n "_", le_##n##_}
      R(add), R(sub), R(mul), R(div), R(pow), R(maximum), R(minimum), R(fmod), R(eq), R(ne), R(lt), R(le), R(gt),
      R(ge), R(logical_and), R(logical_or), R(logical_xor), R(neg), R(abs), R(exp), R(log), R(sqrt), R(rsqrt),
      R(sin), R(cos), R(tanh), R(sigmoid), R(relu), R(floor), R(ceil), R(round), R(sign), R(reciprocal), R(square),
      R(logical_not), R(clamp),
#undef R
      {"cmul", le_mul}, {"cdiv", le_div}, {"matmul", le_matmul}, {"mm", le_matmul}, {"bmm", le_matmul}, {"mv", le_matmul},
      {"dot", le_dot}, {NULL, NULL}};
  lb_register(L, mod, fns);
  lb_register(L, methods, fns);
  lua_pushcfunction(L, le_where);
  lua_setfield(L, mod, "where");

  static const luaL_Reg meta[] = {{"__add", le_add}, {"__sub", le_sub}, {"__mul", le_mul}, {"__div", le_div},
                                  {"__pow", le_pow}, {"__unm", le_unm}, {NULL, NULL}};
  luaL_getmetatable(L, LB_TENSOR_MT);
  luaL_setfuncs(L, meta, 0);
  lua_pop(L, 1);
}
