/* bind_data.c: the C side of lark.data (core/io/ does the work; lua/lark/data/ is the library).
 *
 * Everything lives in lark.core._data, so the lark table is not crowded:
 *   read_idx(path [, max_records])            uint8 tensor of the file's shape
 *   read_digits_csv(path)                     images float32 (N, 8, 8) in 0..1, labels int64 1..10
 *   transform(x, y, opts [, gen [, draws]])   x float32 and y (labels, or soft targets when mixing);
 *                                             with draws = true also a table of what was drawn
 *   permutation(n, seed, epoch)               the loader's epoch order, 1-based int64 (n)
 *   stream_seed(seed, epoch, stream)          the seed of a batch's generator (stream = batch index)
 *   beta(gen, a, b), uniform(gen)             scalar draws on the Philox scheme
 *   Loader(images, labels|nil, rows|nil, opts)  -> loader: start(epoch), next() -> x, y | nil,
 *                                             stop(), num_batches(), num_samples(), __gc, __close;
 *                                             opts also batch_size, shuffle, drop_last, prefetch,
 *                                             seed, pin_memory
 * Transform options (a table; also the loader's): scale = s, normalize = {mean, std} (numbers or
 * lists, also {mean = , std = }), random_crop = {size = , padding = } (or a number: the padding),
 * hflip = p (true: 0.5), mixup = alpha, cutmix = alpha (or {alpha = }), num_classes = K.
 * Labels are 1-based here and in the draws (perm, box), converted once, here. */
#include <math.h>
#include <string.h>

#include "binding.h"

#define LB_LOADER_MT "lark.data.Loader"
#define LB_GENERATOR_MT "lark.Generator"

/* ---- options -------------------------------------------------------------------------------- */

static int field_type(lua_State *L, int t, const char *k) { return lua_getfield(L, t, k); }

static double num_field(lua_State *L, int t, const char *k, double dflt, const char *fname) {
  int ty = field_type(L, t, k);
  double v = dflt;
  if (ty == LUA_TNUMBER) v = lua_tonumber(L, -1);
  else if (ty != LUA_TNIL) luaL_error(L, "%s: option %s must be a number, got %s", fname, k, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

static int64_t int_field(lua_State *L, int t, const char *k, int64_t dflt, const char *fname) {
  int ty = field_type(L, t, k);
  int64_t v = dflt;
  if (ty != LUA_TNIL) {
    int isint;
    lua_Integer x = lua_tointegerx(L, -1, &isint);
    if (!isint) luaL_error(L, "%s: option %s must be an integer, got %s", fname, k, lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
    v = (int64_t)x;
  }
  lua_pop(L, 1);
  return v;
}

static bool bool_field(lua_State *L, int t, const char *k, bool dflt, const char *fname) {
  int ty = field_type(L, t, k);
  bool v = dflt;
  if (ty == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL) luaL_error(L, "%s: option %s must be a boolean, got %s", fname, k, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* mean or std at the top of the stack: a number or a list of numbers -> vals, returns the count */
static int read_stats(lua_State *L, const char *what, double *vals, const char *fname) {
  if (lua_type(L, -1) == LUA_TNUMBER) {
    vals[0] = lua_tonumber(L, -1);
    return 1;
  }
  if (!lua_istable(L, -1)) luaL_error(L, "%s: normalize %s must be a number or a list of numbers, got %s", fname, what, luaL_typename(L, -1));
  lua_Integer n = luaL_len(L, -1);
  if (n < 1 || n > LARK_DATA_MAX_CHANNELS)
    luaL_error(L, "%s: normalize %s must list 1 to %d numbers, got %d", fname, what, LARK_DATA_MAX_CHANNELS, (int)n);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, -1, i) != LUA_TNUMBER) luaL_error(L, "%s: normalize %s[%d] must be a number", fname, what, (int)i);
    vals[i - 1] = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  return (int)n;
}

/* alpha of mixup/cutmix: a number or {alpha = } */
static double alpha_field(lua_State *L, int t, const char *k, const char *fname) {
  int ty = field_type(L, t, k);
  double a = 0;
  if (ty == LUA_TNUMBER) a = lua_tonumber(L, -1);
  else if (ty == LUA_TTABLE) {
    if (lua_getfield(L, -1, "alpha") != LUA_TNUMBER) luaL_error(L, "%s: %s = {alpha = number} expected", fname, k);
    a = lua_tonumber(L, -1);
    lua_pop(L, 1);
  } else if (ty != LUA_TNIL) luaL_error(L, "%s: option %s must be an alpha (number) or {alpha = }, got %s", fname, k, luaL_typename(L, -1));
  lua_pop(L, 1);
  if (ty != LUA_TNIL && !(a > 0)) luaL_error(L, "%s: %s alpha must be > 0, got %f", fname, k, a);
  return a;
}

/* Reads the transform options of the table at t into o; scale_dflt applies when scale is absent. */
static void read_transform(lua_State *L, int t, lark_transform_opts *o, double scale_dflt, const char *fname) {
  lark_transform_opts_init(o);
  o->label_base = 1;
  o->scale = scale_dflt;
  if (lua_isnoneornil(L, t)) return;
  if (!lua_istable(L, t)) luaL_error(L, "%s: expected an options table, got %s", fname, luaL_typename(L, t));
  o->scale = num_field(L, t, "scale", scale_dflt, fname);
  if (field_type(L, t, "normalize") != LUA_TNIL) {
    int nt = lua_gettop(L);
    if (!lua_istable(L, nt)) luaL_error(L, "%s: normalize must be {mean, std} or {mean = , std = }", fname);
    double mean[LARK_DATA_MAX_CHANNELS], std[LARK_DATA_MAX_CHANNELS];
    if (lua_getfield(L, nt, "mean") == LUA_TNIL) {
      lua_pop(L, 1);
      lua_geti(L, nt, 1);
    }
    int nm = read_stats(L, "mean", mean, fname);
    lua_pop(L, 1);
    if (lua_getfield(L, nt, "std") == LUA_TNIL) {
      lua_pop(L, 1);
      lua_geti(L, nt, 2);
    }
    int ns = read_stats(L, "std", std, fname);
    lua_pop(L, 1);
    if (nm != ns && nm != 1 && ns != 1) luaL_error(L, "%s: normalize has %d means and %d stds", fname, nm, ns);
    o->nnorm = nm > ns ? nm : ns;
    for (int c = 0; c < o->nnorm; c++) {
      o->mean[c] = mean[nm == 1 ? 0 : c];
      o->std[c] = std[ns == 1 ? 0 : c];
    }
  }
  lua_pop(L, 1);
  int ty = field_type(L, t, "random_crop");
  if (ty == LUA_TNUMBER) {
    o->crop_padding = (int64_t)lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || o->crop_padding < 1) luaL_error(L, "%s: random_crop = padding must be an integer >= 1", fname);
  } else if (ty == LUA_TTABLE) {
    int ct = lua_gettop(L);
    o->crop_size = int_field(L, ct, "size", 0, fname);
    o->crop_padding = int_field(L, ct, "padding", 0, fname);
    if (o->crop_size < 0 || o->crop_padding < 0) luaL_error(L, "%s: random_crop size and padding must be >= 0", fname);
  } else if (ty != LUA_TNIL) {
    luaL_error(L, "%s: random_crop must be {size = , padding = } or a padding, got %s", fname, luaL_typename(L, -1));
  }
  lua_pop(L, 1);
  ty = field_type(L, t, "hflip");
  if (ty == LUA_TBOOLEAN) o->hflip = lua_toboolean(L, -1) ? 0.5 : 0;
  else if (ty == LUA_TNUMBER) o->hflip = lua_tonumber(L, -1);
  else if (ty != LUA_TNIL) luaL_error(L, "%s: hflip must be a probability or a boolean, got %s", fname, luaL_typename(L, -1));
  lua_pop(L, 1);
  if (o->hflip < 0 || o->hflip > 1) luaL_error(L, "%s: hflip must be a probability in [0, 1], got %f", fname, o->hflip);
  o->mixup_alpha = alpha_field(L, t, "mixup", fname);
  o->cutmix_alpha = alpha_field(L, t, "cutmix", fname);
  o->num_classes = int_field(L, t, "num_classes", 0, fname);
}

static lark_generator *opt_gen(lua_State *L, int idx, const char *fname) {
  if (lua_isnoneornil(L, idx)) return NULL;
  lark_generator *g = luaL_testudata(L, idx, LB_GENERATOR_MT);
  if (!g) luaL_error(L, "%s: argument %d: expected a lark.Generator, got %s", fname, idx, luaL_typename(L, idx));
  return g;
}

static uint64_t check_u64(lua_State *L, int idx, const char *fname, const char *what) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint) luaL_error(L, "%s: argument %d: %s must be an integer, got %s", fname, idx, what,
                         lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
  return (uint64_t)v;
}

/* ---- readers -------------------------------------------------------------------------------- */

static int l_read_idx(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer max = -1;
  if (!lua_isnoneornil(L, 2)) {
    max = (lua_Integer)check_u64(L, 2, "read_idx", "max_records");
    if (max < 0) return luaL_error(L, "read_idx: max_records must be >= 0, got %I", max);
  }
  lb_push(L, lark_read_idx(path, (int64_t)max));
  return 1;
}

static int l_read_digits_csv(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lark_tensor *im, *lab;
  lb_check_status(L, lark_read_digits_csv(path, 1, &im, &lab));
  lb_push(L, im);
  lb_push(L, lab);
  return 2;
}

/* ---- transforms ----------------------------------------------------------------------------- */

static void push_int_list(lua_State *L, const int64_t *v, int64_t n, int64_t add) {
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    lua_pushinteger(L, v[i] + add);
    lua_rawseti(L, -2, i + 1);
  }
}

static int l_transform(lua_State *L) {
  static const char *fname = "transform";
  lark_tensor *x = lb_check(L, 1, fname);
  lark_tensor *y = lua_isnoneornil(L, 2) ? NULL : lb_check(L, 2, fname);
  lark_transform_opts o;
  read_transform(L, 3, &o, x->dtype == LARK_UINT8 ? 1.0 / 255.0 : 1.0, fname);
  lark_generator *g = opt_gen(L, 4, fname);
  bool want = lua_toboolean(L, 5);
  int64_t n = x->ndim ? x->shape[0] : 0;
  lark_transform_draws d;
  memset(&d, 0, sizeof d);
  int64_t *buf = NULL;
  if (want) {
    /* scratch from Lua, so an error below cannot leak it */
    buf = lua_newuserdatauv(L, sizeof(int64_t) * 4 * (size_t)(n ? n : 1), 0);
    d.dy = buf;
    d.dx = buf + n;
    d.perm = buf + 2 * n;
    d.flip = (uint8_t *)(buf + 3 * n);
  }
  lark_tensor *xo, *yo;
  lb_check_status(L, lark_transform_batch(x, y, &o, g, &xo, &yo, want ? &d : NULL));
  lb_push(L, xo);
  if (yo) lb_push(L, yo);
  else lua_pushnil(L);
  if (!want) return 2;
  lua_createtable(L, 0, 8);
  push_int_list(L, d.dy, n, 0);
  lua_setfield(L, -2, "dy");
  push_int_list(L, d.dx, n, 0);
  lua_setfield(L, -2, "dx");
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    lua_pushboolean(L, d.flip[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "flip");
  if (d.mix) {
    lua_pushstring(L, d.mix == 1 ? "mixup" : "cutmix");
    lua_setfield(L, -2, "mix");
    lua_pushnumber(L, d.lam);
    lua_setfield(L, -2, "lam");
    push_int_list(L, d.perm, n, 1);
    lua_setfield(L, -2, "perm");
    /* 1-based inclusive: first row, first col, last row, last col */
    int64_t box[4] = {d.box[0] + 1, d.box[1] + 1, d.box[2], d.box[3]};
    push_int_list(L, box, 4, 0);
    lua_setfield(L, -2, "box");
  }
  return 3;
}

static int l_permutation(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 0) return luaL_error(L, "permutation: n must be >= 0, got %I", n);
  uint64_t seed = check_u64(L, 2, "permutation", "seed"), epoch = check_u64(L, 3, "permutation", "epoch");
  lark_tensor *t = lark_empty(1, (int64_t[]){n}, LARK_INT64, NULL);
  if (!t) return lb_error(L);
  int64_t *p = lark_data_ptr(t);
  lark_data_permutation(n, seed, epoch, p);
  for (lua_Integer i = 0; i < n; i++) p[i] += 1;
  lb_push(L, t);
  return 1;
}

static int l_stream_seed(lua_State *L) {
  uint64_t s = lark_data_stream_seed(check_u64(L, 1, "stream_seed", "seed"), check_u64(L, 2, "stream_seed", "epoch"),
                                     check_u64(L, 3, "stream_seed", "stream"));
  lua_pushinteger(L, (lua_Integer)s);
  return 1;
}

static lark_generator *gen_or_default(lua_State *L, int idx, const char *fname) {
  lark_generator *g = opt_gen(L, idx, fname);
  return g ? g : lark_default_generator();
}

static int l_beta(lua_State *L) {
  lark_generator *g = gen_or_default(L, 1, "beta");
  double a = luaL_checknumber(L, 2), b = luaL_checknumber(L, 3);
  if (!(a > 0) || !(b > 0)) return luaL_error(L, "beta: a and b must be > 0, got %f and %f", a, b);
  lua_pushnumber(L, lark_gen_beta(g, a, b));
  return 1;
}

static int l_uniform(lua_State *L) {
  lua_pushnumber(L, lark_gen_uniform(gen_or_default(L, 1, "uniform")));
  return 1;
}

/* ---- the loader ----------------------------------------------------------------------------- */

typedef struct {
  lark_loader *ld;
} lb_loader;

static lb_loader *check_loader(lua_State *L, int idx, const char *fname) {
  lb_loader *u = luaL_checkudata(L, idx, LB_LOADER_MT);
  if (!u->ld) luaL_error(L, "%s: the loader was closed", fname);
  return u;
}

static int l_loader_new(lua_State *L) {
  static const char *fname = "DataLoader";
  lark_tensor *images = lb_check(L, 1, fname);
  lark_tensor *labels = lua_isnoneornil(L, 2) ? NULL : lb_check(L, 2, fname);
  lark_tensor *rows = lua_isnoneornil(L, 3) ? NULL : lb_check(L, 3, fname);
  luaL_checktype(L, 4, LUA_TTABLE);
  lark_loader_opts o;
  lark_loader_opts_init(&o);
  read_transform(L, 4, &o.transform, images->dtype == LARK_UINT8 ? 1.0 / 255.0 : 1.0, fname);
  o.batch_size = int_field(L, 4, "batch_size", 1, fname);
  o.shuffle = bool_field(L, 4, "shuffle", false, fname);
  o.drop_last = bool_field(L, 4, "drop_last", false, fname);
  o.prefetch = (int)int_field(L, 4, "prefetch", 2, fname);
  o.pin_memory = bool_field(L, 4, "pin_memory", false, fname);
  if (field_type(L, 4, "seed") != LUA_TNIL) o.seed = check_u64(L, lua_gettop(L), fname, "seed");
  lua_pop(L, 1);
  lb_loader *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->ld = NULL;
  luaL_setmetatable(L, LB_LOADER_MT);
  int64_t *r = NULL, nr = 0;
  lark_tensor *r0 = NULL;
  if (rows) {
    if (rows->dtype != LARK_INT64 || rows->ndim != 1)
      return luaL_error(L, "%s: the subset rows must be a 1-D int64 tensor of 1-based indices", fname);
    /* 1-based -> 0-based once, here */
    r0 = lark_binary_scalar(LARK_OP_SUB, rows, 1, true, false);
    lark_tensor *rc = r0 ? lark_contiguous(r0) : NULL;
    lark_tensor_release(r0);
    if (!rc) return lb_error(L);
    r0 = rc;
    r = lark_data_ptr(r0);
    nr = r0->shape[0];
  }
  u->ld = lark_loader_new(images, labels, r, nr, &o);
  lark_tensor_release(r0);
  if (!u->ld) return lb_error(L);
  return 1;
}

static int l_loader_start(lua_State *L) {
  lb_loader *u = check_loader(L, 1, "Loader:start");
  lb_check_status(L, lark_loader_start(u->ld, check_u64(L, 2, "Loader:start", "epoch")));
  return 0;
}

static int l_loader_next(lua_State *L) {
  lb_loader *u = check_loader(L, 1, "Loader:next");
  lark_tensor *x, *y;
  int rc = lark_loader_next(u->ld, &x, &y);
  if (rc < 0) return lb_error(L);
  if (rc == 0) {
    lua_pushnil(L);
    return 1;
  }
  lb_push(L, x);
  if (y) lb_push(L, y);
  else lua_pushnil(L);
  return 2;
}

static int l_loader_stop(lua_State *L) {
  lb_loader *u = luaL_checkudata(L, 1, LB_LOADER_MT);
  if (u->ld) lark_loader_stop(u->ld);
  return 0;
}

static int l_loader_num_batches(lua_State *L) {
  lua_pushinteger(L, lark_loader_num_batches(check_loader(L, 1, "Loader:num_batches")->ld));
  return 1;
}

static int l_loader_num_samples(lua_State *L) {
  lua_pushinteger(L, lark_loader_num_samples(check_loader(L, 1, "Loader:num_samples")->ld));
  return 1;
}

static int l_loader_gc(lua_State *L) {
  lb_loader *u = luaL_checkudata(L, 1, LB_LOADER_MT);
  lark_loader_free(u->ld);
  u->ld = NULL;
  return 0;
}

void lb_register_data(lua_State *L, int mod, int methods) {
  (void)methods;
  if (luaL_newmetatable(L, LB_LOADER_MT)) {
    static const luaL_Reg m[] = {{"start", l_loader_start},
                                 {"next", l_loader_next},
                                 {"stop", l_loader_stop},
                                 {"num_batches", l_loader_num_batches},
                                 {"num_samples", l_loader_num_samples},
                                 {NULL, NULL}};
    luaL_newlib(L, m);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_loader_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_loader_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"read_idx", l_read_idx},
                                 {"read_digits_csv", l_read_digits_csv},
                                 {"transform", l_transform},
                                 {"permutation", l_permutation},
                                 {"stream_seed", l_stream_seed},
                                 {"beta", l_beta},
                                 {"uniform", l_uniform},
                                 {"Loader", l_loader_new},
                                 {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_setfield(L, mod, "_data");
}
