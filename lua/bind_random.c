/* bind_random.c: random numbers from Lua (core/random.c does the work).
 *
 *   lark.manual_seed(s)   lark.seed() / lark.initial_seed()   lark.get_rng_state() / set_rng_state(st)
 *   lark.Generator(s)     g:manual_seed(s)  g:seed()  g:get_state()  g:set_state(st)
 *   lark.rand(shape... [, opts])  lark.randn(shape... [, opts])  opts: {dtype=, device=, generator=}
 *   lark.randint(low, high, shape... [, opts]) or lark.randint(high, shape_table [, opts]): [low, high)
 *   lark.randperm(n [, gen])  a permutation of 1..n (int64)
 *   lark.bernoulli(p [, gen]) / p:bernoulli()   t:bernoulli_(p [, gen])
 *   t:normal_([mean [, std]] [, gen])   t:uniform_([low [, high]] [, gen])   (return t)
 *
 * Wherever a generator may be passed, a lark.Generator or an options table {generator = g} works;
 * without one the global generator draws. Seeds and offsets are 64-bit: Lua integers carry them as
 * two's complement, so lark.manual_seed(-1) and a seed of 2^64 - 1 are the same. */
#include <string.h>

#include "binding.h"

#define LB_GENERATOR_MT "lark.Generator"

/* The seed a Generator gets when none is given: core's default generator starts from it too. */
#define LB_DEFAULT_SEED 67280421310721ll

/* ---- arguments ------------------------------------------------------------------------------ */

static uint64_t check_u64(lua_State *L, int idx, const char *fname, const char *what) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint) {
    if (lua_type(L, idx) == LUA_TNUMBER)
      luaL_error(L, "%s: argument %d: %s must be an integer, got %s", fname, idx, what, lua_tostring(L, idx));
    luaL_error(L, "%s: argument %d: expected %s (an integer), got %s", fname, idx, what, luaL_typename(L, idx));
  }
  return (uint64_t)v;
}

static int64_t check_int(lua_State *L, int idx, const char *fname, const char *what) {
  return (int64_t)check_u64(L, idx, fname, what);
}

/* A number at idx, or dflt when absent or nil. */
static double opt_number(lua_State *L, int idx, double dflt, const char *fname, const char *what) {
  if (lua_isnoneornil(L, idx)) return dflt;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s: argument %d: expected %s (a number), got %s", fname, idx, what, luaL_typename(L, idx));
  return lua_tonumber(L, idx);
}

static lark_generator *test_generator(lua_State *L, int idx) { return luaL_testudata(L, idx, LB_GENERATOR_MT); }

/* A generator given at idx: a Generator, an options table {generator = g}, or nothing (NULL: the
 * global one). Anything else is an error. */
static lark_generator *opt_generator(lua_State *L, int idx, const char *fname) {
  if (lua_isnoneornil(L, idx)) return NULL;
  lark_generator *g = test_generator(L, idx);
  if (g) return g;
  if (lua_istable(L, idx) && !lb_is(L, idx)) {
    lua_getfield(L, idx, "generator");
    g = test_generator(L, -1);
    bool absent = lua_isnil(L, -1);
    lua_pop(L, 1); /* the table still holds the userdata */
    if (g || absent) return g;
    luaL_error(L, "%s: argument %d: generator must be a lark.Generator", fname, idx);
  }
  luaL_error(L, "%s: argument %d: expected a lark.Generator or an options table {generator=}, got %s", fname, idx,
             luaL_typename(L, idx));
  return NULL;
}

/* The generator passed as the last argument (at or after `first`), if any: a Generator or a
 * {generator=} table. *nargs gets the count of the arguments before it. */
static lark_generator *trailing_generator(lua_State *L, int first, const char *fname, int *nargs) {
  int top = lua_gettop(L);
  *nargs = top;
  if (top >= first && (test_generator(L, top) || (lua_istable(L, top) && !lb_is(L, top)))) {
    *nargs = top - 1;
    return opt_generator(L, top, fname);
  }
  return NULL;
}

/* The numbers at 2..count+1 of an in-place fill (absent ones take their defaults); nothing else may follow. */
static void fill_numbers(lua_State *L, int nargs, const char *fname, int count, const char *const *what,
                         double *vals) {
  for (int k = 0; k < count; k++)
    if (k + 2 <= nargs) vals[k] = opt_number(L, k + 2, vals[k], fname, what[k]);
  for (int i = count + 2; i <= nargs; i++)
    if (!lua_isnil(L, i)) luaL_error(L, "%s: argument %d: unexpected %s", fname, i, luaL_typename(L, i));
}

/* ---- seeds and state ------------------------------------------------------------------------ */

static void push_state(lua_State *L, const lark_generator *g) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)g->seed);
  lua_setfield(L, -2, "seed");
  lua_pushinteger(L, (lua_Integer)g->offset);
  lua_setfield(L, -2, "offset");
}

static void read_state(lua_State *L, int idx, lark_generator *g, const char *fname) {
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: argument %d: expected a state table {seed=, offset=}, got %s", fname, idx, luaL_typename(L, idx));
  uint64_t v[2];
  const char *keys[2] = {"seed", "offset"};
  for (int k = 0; k < 2; k++) {
    lua_getfield(L, idx, keys[k]);
    int isint;
    lua_Integer x = lua_tointegerx(L, -1, &isint);
    if (!isint)
      luaL_error(L, "%s: argument %d: the state's %s must be an integer, got %s", fname, idx, keys[k],
                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
    v[k] = (uint64_t)x;
    lua_pop(L, 1);
  }
  g->seed = v[0];
  g->offset = v[1];
}

static int l_manual_seed(lua_State *L) {
  lark_manual_seed(check_u64(L, 1, "manual_seed", "seed"));
  return 0;
}

static int l_seed(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lark_default_generator()->seed);
  return 1;
}

static int l_get_rng_state(lua_State *L) {
  push_state(L, lark_default_generator());
  return 1;
}

static int l_set_rng_state(lua_State *L) {
  lark_generator g;
  read_state(L, 1, &g, "set_rng_state");
  *lark_default_generator() = g;
  return 0;
}

/* ---- Generator objects ---------------------------------------------------------------------- */

static lark_generator *check_generator(lua_State *L, int idx, const char *fname) {
  lark_generator *g = test_generator(L, idx);
  if (!g) luaL_error(L, "%s: argument %d: expected a lark.Generator, got %s", fname, idx, luaL_typename(L, idx));
  return g;
}

static int l_generator_new(lua_State *L) {
  uint64_t seed = lua_isnoneornil(L, 1) ? (uint64_t)LB_DEFAULT_SEED : check_u64(L, 1, "Generator", "seed");
  lark_generator *g = lua_newuserdatauv(L, sizeof *g, 0);
  lark_generator_init(g, seed);
  luaL_setmetatable(L, LB_GENERATOR_MT);
  return 1;
}

static int l_gen_manual_seed(lua_State *L) {
  lark_generator *g = check_generator(L, 1, "Generator:manual_seed");
  lark_generator_init(g, check_u64(L, 2, "Generator:manual_seed", "seed"));
  lua_settop(L, 1);
  return 1; /* the generator, so calls chain */
}

static int l_gen_seed(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_generator(L, 1, "Generator:seed")->seed);
  return 1;
}

static int l_gen_get_state(lua_State *L) {
  push_state(L, check_generator(L, 1, "Generator:get_state"));
  return 1;
}

static int l_gen_set_state(lua_State *L) {
  lark_generator *g = check_generator(L, 1, "Generator:set_state");
  read_state(L, 2, g, "Generator:set_state");
  lua_settop(L, 1);
  return 1;
}

static int l_gen_tostring(lua_State *L) {
  lark_generator *g = check_generator(L, 1, "Generator:__tostring");
  lua_pushfstring(L, "lark.Generator(seed=%I, offset=%I)", (lua_Integer)g->seed, (lua_Integer)g->offset);
  return 1;
}

/* ---- tensors of random numbers -------------------------------------------------------------- */

/* Reads shape... [, opts] from idx on: opts is {dtype=, device=, generator=}, a dtype string or a
 * Generator. Returns ndim. */
static int random_factory_args(lua_State *L, int first, const char *fname, int64_t *shape, lark_dtype *dt,
                               lark_device *dev, lark_generator **gen) {
  int ndim = lb_checkshape(L, first, shape, fname);
  int opts = lua_istable(L, first) ? first + 1 : first + ndim;
  *gen = NULL;
  if (test_generator(L, opts)) {
    *gen = test_generator(L, opts);
  } else if (!lua_isnoneornil(L, opts)) {
    lb_opt_dtype_device(L, opts, fname, dt, dev);
    if (lua_istable(L, opts)) *gen = opt_generator(L, opts, fname);
  }
  if (lua_gettop(L) > opts)
    luaL_error(L, "%s: argument %d: unexpected %s after the options", fname, opts + 1, luaL_typename(L, opts + 1));
  return ndim;
}

enum { FILL_UNIFORM, FILL_NORMAL };

static int random_factory(lua_State *L, const char *fname, int kind) {
  int64_t shape[LARK_MAX_DIMS];
  lark_dtype dt = LARK_FLOAT32;
  lark_device dev = LARK_DEVICE_CPU;
  lark_generator *gen;
  int nd = random_factory_args(L, 1, fname, shape, &dt, &dev, &gen);
  if (!lark_dtype_is_float(dt))
    return luaL_error(L, "%s: dtype %s is not a float dtype (expected float32 or float64)", fname,
                      lark_dtype_name(dt));
  lark_tensor *t = lark_empty(nd, shape, dt, &dev);
  if (!t) return lb_error(L);
  int rc = kind == FILL_UNIFORM ? lark_uniform_(t, 0, 1, gen) : lark_normal_(t, 0, 1, gen);
  if (rc) {
    lark_tensor_release(t);
    return lb_error(L);
  }
  lb_push(L, t);
  return 1;
}

static int l_rand(lua_State *L) { return random_factory(L, "rand", FILL_UNIFORM); }
static int l_randn(lua_State *L) { return random_factory(L, "randn", FILL_NORMAL); }

/* lark.randint(low, high, shape... [, opts]) or lark.randint(high, shape_table [, opts]) */
static int l_randint(lua_State *L) {
  int64_t low = 0, high;
  int first;
  if (lua_istable(L, 2) && !lb_is(L, 2)) {
    high = check_int(L, 1, "randint", "high");
    first = 2;
  } else {
    low = check_int(L, 1, "randint", "low");
    high = check_int(L, 2, "randint", "high");
    first = 3;
  }
  if (low >= high) return luaL_error(L, "randint: low (%I) must be < high (%I)", (lua_Integer)low, (lua_Integer)high);
  int64_t shape[LARK_MAX_DIMS];
  lark_dtype dt = LARK_INT64;
  lark_device dev = LARK_DEVICE_CPU;
  lark_generator *gen;
  int nd = random_factory_args(L, first, "randint", shape, &dt, &dev, &gen);
  lark_tensor *t = lark_empty(nd, shape, dt, &dev);
  if (!t) return lb_error(L);
  if (lark_randint_(t, low, high, gen)) {
    lark_tensor_release(t);
    return lb_error(L);
  }
  lb_push(L, t);
  return 1;
}

/* lark.randperm(n [, gen or opts]): 1..n in random order, int64 (opts may give dtype and device). */
static int l_randperm(lua_State *L) {
  int64_t n = check_int(L, 1, "randperm", "n");
  if (n < 0) return luaL_error(L, "randperm: argument 1: n must be >= 0, got %I", (lua_Integer)n);
  lark_generator *gen = opt_generator(L, 2, "randperm");
  lark_dtype dt = LARK_INT64;
  lark_device dev = LARK_DEVICE_CPU;
  if (lua_istable(L, 2)) lb_opt_dtype_device(L, 2, "randperm", &dt, &dev);
  lark_tensor *p = lark_randperm(n, gen);
  if (!p) return lb_error(L);
  int64_t *v = lark_data_ptr(p); /* fresh, contiguous, on the CPU */
  for (int64_t i = 0; i < n; i++) v[i] += 1; /* Lua's indices are 1-based */
  lark_tensor *out = lark_to(p, dt, &dev);
  lark_tensor_release(p);
  lb_push(L, out);
  return 1;
}

/* lark.bernoulli(p [, gen]) / p:bernoulli([gen]): 1 with probability p[i], in p's dtype. */
static int l_bernoulli(lua_State *L) {
  lark_tensor *p = lb_check(L, 1, "bernoulli");
  lark_generator *gen = opt_generator(L, 2, "bernoulli");
  lb_push(L, lark_bernoulli(p, gen));
  return 1;
}

/* An in-place target must not repeat memory (expanded dims), which core checks for scalars too. */
static void check_not_expanded(lua_State *L, const lark_tensor *t, const char *fname) {
  for (int d = 0; d < t->ndim; d++)
    if (t->stride[d] == 0 && t->shape[d] > 1)
      luaL_error(L, "%s: cannot fill an expanded tensor (dim %d has stride 0, so its elements share memory); "
                 "call contiguous() first", fname, d + 1);
}

/* t:bernoulli_([p] [, gen]): p (0.5 by default) a number, or a tensor broadcast to t's shape. Returns t. */
static int l_bernoulli_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "bernoulli_");
  int nargs;
  lark_generator *gen = trailing_generator(L, 3, "bernoulli_", &nargs);
  if (nargs >= 2 && lb_is(L, 2)) {
    if (nargs > 2) return luaL_error(L, "bernoulli_: argument 3: unexpected %s", luaL_typename(L, 3));
    check_not_expanded(L, t, "bernoulli_");
    lark_tensor *p = lb_opt(L, 2);
    lark_tensor *pe = lark_expand(p, t->ndim, t->shape);
    if (!pe) {
      char a[256], b[256];
      lark_clear_error();
      return luaL_error(L, "bernoulli_: p of shape %s cannot be broadcast to the tensor's shape %s",
                        lark_shape_str(p->ndim, p->shape, a, sizeof a), lark_shape_str(t->ndim, t->shape, b, sizeof b));
    }
    lark_tensor *draw = lark_bernoulli(pe, gen);
    lark_tensor_release(pe);
    if (!draw) return lb_error(L);
    int rc = lark_copy_(t, draw);
    lark_tensor_release(draw);
    lb_check_status(L, rc);
  } else {
    static const char *const what[1] = {"p"};
    double p[1] = {0.5};
    fill_numbers(L, nargs, "bernoulli_", 1, what, p);
    lb_check_status(L, lark_bernoulli_(t, p[0], gen));
  }
  lua_pushvalue(L, 1);
  return 1;
}

/* t:normal_([mean [, std]] [, gen]): returns t. */
static int l_normal_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "normal_");
  int nargs;
  lark_generator *gen = trailing_generator(L, 2, "normal_", &nargs);
  static const char *const what[2] = {"mean", "std"};
  double v[2] = {0, 1};
  fill_numbers(L, nargs, "normal_", 2, what, v);
  lb_check_status(L, lark_normal_(t, v[0], v[1], gen));
  lua_pushvalue(L, 1);
  return 1;
}

/* t:uniform_([low [, high]] [, gen]): returns t. */
static int l_uniform_(lua_State *L) {
  lark_tensor *t = lb_check(L, 1, "uniform_");
  int nargs;
  lark_generator *gen = trailing_generator(L, 2, "uniform_", &nargs);
  static const char *const what[2] = {"low", "high"};
  double v[2] = {0, 1};
  fill_numbers(L, nargs, "uniform_", 2, what, v);
  lb_check_status(L, lark_uniform_(t, v[0], v[1], gen));
  lua_pushvalue(L, 1);
  return 1;
}

void lb_register_random(lua_State *L, int mod, int methods) {
  static const luaL_Reg gen_methods[] = {{"manual_seed", l_gen_manual_seed}, {"seed", l_gen_seed},
                                         {"initial_seed", l_gen_seed},       {"get_state", l_gen_get_state},
                                         {"set_state", l_gen_set_state},     {NULL, NULL}};
  luaL_newmetatable(L, LB_GENERATOR_MT);
  lua_newtable(L);
  luaL_setfuncs(L, gen_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_gen_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  static const luaL_Reg funcs[] = {
      {"manual_seed", l_manual_seed}, {"seed", l_seed},         {"initial_seed", l_seed},
      {"get_rng_state", l_get_rng_state}, {"set_rng_state", l_set_rng_state}, {"Generator", l_generator_new},
      {"rand", l_rand},               {"randn", l_randn},       {"randint", l_randint},
      {"randperm", l_randperm},       {NULL, NULL}};
  static const luaL_Reg meths[] = {{"bernoulli", l_bernoulli}, {"bernoulli_", l_bernoulli_}, {"normal_", l_normal_},
                                   {"uniform_", l_uniform_},   {NULL, NULL}};
  lb_register(L, mod, funcs);
  lb_register(L, mod, meths);
  lb_register(L, methods, meths);
}
