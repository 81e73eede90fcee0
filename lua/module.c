/* module.c: `lark.core`, the C module under lark/init.lua, and the helpers every bind_*.c uses.
 *
 * Memory: Lua does not see the bytes a tensor holds, only its small userdata, so without help a
 * loop making temporaries would let gigabytes pile up before the collector runs. Core reports every
 * storage allocation; at the next safe point (pushing a tensor to Lua, on the Lua thread) we step
 * the collector by that many kilobytes, and run a full collection whenever tensor memory has grown
 * past twice what was alive after the last one (TH's heap tracking, in Lua 5.4 terms). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "binding.h"

/* ---- memory pressure ------------------------------------------------------------------------ */

static int64_t pending_bytes;        /* allocated since the last step, not yet told to Lua */
static int64_t live_after_collect;   /* tensor bytes alive after the last full collection */
static pthread_t lua_thread;
static bool have_lua_thread;

static void on_alloc(size_t nbytes, void *ud) {
  __atomic_add_fetch(&pending_bytes, (int64_t)nbytes, __ATOMIC_RELAXED);
}

static void memory_pressure(lua_State *L) {
  if (!have_lua_thread || !pthread_equal(pthread_self(), lua_thread)) return;
  int64_t pending = __atomic_exchange_n(&pending_bytes, 0, __ATOMIC_RELAXED);
  if (pending <= 0) return;
  int64_t live = lark_bytes_allocated(LARK_CPU) + lark_bytes_allocated(LARK_CUDA);
  if (live > 2 * live_after_collect + (64 << 20)) {
    lua_gc(L, LUA_GCCOLLECT);
    live_after_collect = lark_bytes_allocated(LARK_CPU) + lark_bytes_allocated(LARK_CUDA);
  } else {
    int kb = (int)(pending / 1024 > (1 << 30) ? (1 << 30) : pending / 1024);
    lua_gc(L, LUA_GCSTEP, kb);
  }
}

/* Out of device memory: tensors that only the collector still holds may be what the allocator
 * needs, so core's caching allocator calls this (lark_set_oom_handler) for a full collection before
 * it empties its cache and retries. Never re-entrant: an allocation made while this collection
 * runs finalizers finds in_oom_collect set; one made inside any finalizer gets -1 from lua_gc
 * (Lua 5.4.4 refuses collections while finalizers run; older 5.4s mark the collector stopped).
 * Only on the Lua thread, and only while the state lives (a sentinel's __gc unregisters). */
static lua_State *main_L;
static bool in_oom_collect;

static void on_oom(void *ud) {
  lua_State *L = main_L;
  if (!L || in_oom_collect || !have_lua_thread || !pthread_equal(pthread_self(), lua_thread)) return;
#if LUA_VERSION_RELEASE_NUM < 50404
  if (lua_gc(L, LUA_GCISRUNNING) == 0) return;
#endif
  in_oom_collect = true;
  lua_gc(L, LUA_GCCOLLECT);
  in_oom_collect = false;
  live_after_collect = lark_bytes_allocated(LARK_CPU) + lark_bytes_allocated(LARK_CUDA);
}

static int oom_unregister(lua_State *L) {
  lark_set_oom_handler(NULL, NULL);
  main_L = NULL;
  return 0;
}

static void register_oom_handler(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD); /* not L: a coroutine may die */
  main_L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_newuserdatauv(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, oom_unregister);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "lark.oom_sentinel");
  lark_set_oom_handler(on_oom, NULL);
}

/* ---- helpers -------------------------------------------------------------------------------- */

int lb_error(lua_State *L) {
  const char *msg = lark_error();
  lua_pushstring(L, *msg ? msg : "lark: unknown error");
  lark_clear_error();
  return lua_error(L);
}

void lb_check_status(lua_State *L, int status) {
  if (status) lb_error(L);
}

void lb_push(lua_State *L, lark_tensor *t) {
  if (!t) {
    lb_error(L);
    return;
  }
  lb_tensor *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->t = t;
  luaL_setmetatable(L, LB_TENSOR_MT);
  memory_pressure(L);
}

bool lb_is(lua_State *L, int idx) { return luaL_testudata(L, idx, LB_TENSOR_MT) != NULL; }

lark_tensor *lb_opt(lua_State *L, int idx) {
  lb_tensor *u = luaL_testudata(L, idx, LB_TENSOR_MT);
  if (u && !u->t) luaL_error(L, "argument %d: the tensor was closed (used after its <close> scope ended)", idx);
  if (u && !u->t->storage) luaL_error(L, "argument %d: the tensor was freed with free()", idx);
  return u ? u->t : NULL;
}

lark_tensor *lb_check(lua_State *L, int idx, const char *fname) {
  lb_tensor *u = luaL_testudata(L, idx, LB_TENSOR_MT);
  if (!u) {
    luaL_error(L, "%s: argument %d: expected a Tensor, got %s", fname, idx, luaL_typename(L, idx));
    return NULL;
  }
  if (!u->t) luaL_error(L, "%s: argument %d: the tensor was closed (used after its <close> scope ended)", fname, idx);
  if (!u->t->storage) luaL_error(L, "%s: argument %d: the tensor was freed with free()", fname, idx);
  return u->t;
}

int lb_dim(lua_State *L, lua_Integer d, int ndim, const char *fname, int argn) {
  int n = ndim > 0 ? ndim : 1;
  if (d == 0 || d > n || d < -n) {
    if (ndim == 0) luaL_error(L, "%s: argument %d: dim %d is out of range for a 0-d tensor (expected 1 or -1)", fname, argn, (int)d);
    luaL_error(L, "%s: argument %d: dim %I is out of range for a tensor of %d dims (expected 1..%d or -%d..-1)", fname,
               argn, d, ndim, n, n);
  }
  return d > 0 ? (int)d - 1 : (int)d + n;
}

int lb_checkdim(lua_State *L, int idx, int ndim, const char *fname) {
  if (!lua_isinteger(L, idx)) {
    if (lua_type(L, idx) == LUA_TNUMBER)
      luaL_error(L, "%s: argument %d: dim must be an integer, got %s", fname, idx, lua_tostring(L, idx));
    luaL_error(L, "%s: argument %d: expected a dim (integer), got %s", fname, idx, luaL_typename(L, idx));
  }
  return lb_dim(L, lua_tointeger(L, idx), ndim, fname, idx);
}

static int64_t check_size(lua_State *L, int idx, const char *fname, int argn, int dimn) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint) {
    if (lua_type(L, idx) == LUA_TNUMBER)
      luaL_error(L, "%s: argument %d: size %d must be an integer, got %s", fname, argn, dimn, lua_tostring(L, idx));
    luaL_error(L, "%s: argument %d: expected sizes (integers), got %s", fname, argn, luaL_typename(L, idx));
  }
  if (v < 0) luaL_error(L, "%s: argument %d: size %I of dim %d is negative (expected a size >= 0)", fname, argn, v, dimn);
  return (int64_t)v;
}

int lb_checkshape(lua_State *L, int idx, int64_t *shape, const char *fname) {
  int top = lua_gettop(L);
  if (lua_istable(L, idx)) {
    lua_Integer n = luaL_len(L, idx);
    if (n > LARK_MAX_DIMS) luaL_error(L, "%s: argument %d: %I dims requested, lark supports at most %d", fname, idx, n, LARK_MAX_DIMS);
    for (int i = 1; i <= n; i++) {
      lua_geti(L, idx, i);
      shape[i - 1] = check_size(L, -1, fname, idx, i);
      lua_pop(L, 1);
    }
    return (int)n;
  }
  int n = 0;
  for (int i = idx; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
    if (n >= LARK_MAX_DIMS) luaL_error(L, "%s: too many sizes: lark supports at most %d dims", fname, LARK_MAX_DIMS);
    shape[n] = check_size(L, i, fname, i, n + 1);
    n++;
  }
  if (n == 0 && idx <= top && !lua_isnil(L, idx) && !lua_istable(L, idx))
    luaL_error(L, "%s: argument %d: expected sizes (integers or a table of them), got %s", fname, idx, luaL_typename(L, idx));
  return n;
}

/* The dtype named by the string at stack index `idx`; `argn` is the argument the user wrote. */
static lark_dtype dtype_at(lua_State *L, int idx, int argn, const char *fname) {
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  int dt = s ? lark_dtype_from_name(s) : -1;
  if (dt < 0)
    luaL_error(L, "%s: argument %d: expected a dtype ('float32', 'float64', 'int64', 'uint8' or 'bool'), got %s", fname,
               argn, s ? s : luaL_typename(L, idx));
  return (lark_dtype)dt;
}

lark_dtype lb_checkdtype(lua_State *L, int idx, const char *fname) { return dtype_at(L, idx, idx, fname); }

static lark_device check_device_str(lua_State *L, int idx, const char *fname) {
  const char *s = lua_tostring(L, idx);
  lark_device d;
  if (!s || lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: device must be a string ('cpu' or 'cuda'), got %s", fname, luaL_typename(L, idx));
  if (lark_device_parse(s, &d)) luaL_error(L, "%s: %s", fname, lark_error());
  return d;
}

void lb_opt_dtype_device(lua_State *L, int idx, const char *fname, lark_dtype *dt, lark_device *dev) {
  if (lua_isnoneornil(L, idx)) return;
  if (lua_type(L, idx) == LUA_TSTRING) { /* a bare dtype string */
    *dt = lb_checkdtype(L, idx, fname);
    return;
  }
  if (!lua_istable(L, idx))
    luaL_error(L, "%s: argument %d: expected an options table {dtype=, device=}, got %s", fname, idx, luaL_typename(L, idx));
  if (lua_getfield(L, idx, "dtype") != LUA_TNIL) *dt = dtype_at(L, lua_gettop(L), idx, fname);
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "device") != LUA_TNIL) *dev = check_device_str(L, lua_gettop(L), fname);
  lua_pop(L, 1);
}

void lb_push_shape(lua_State *L, int ndim, const int64_t *shape) {
  lua_createtable(L, ndim, 0);
  for (int i = 0; i < ndim; i++) {
    lua_pushinteger(L, shape[i]);
    lua_rawseti(L, -2, i + 1);
  }
  /* Size metatable (lark/init.lua fills it): printing and comparison of shapes */
  luaL_getmetatable(L, "lark.Size");
  if (lua_istable(L, -1)) lua_setmetatable(L, -2);
  else lua_pop(L, 1);
}

lark_tensor *lb_tensor_or_number(lua_State *L, int idx, const lark_tensor *like, const char *fname) {
  if (lb_is(L, idx)) return lark_tensor_retain(lb_opt(L, idx));
  if (lua_type(L, idx) == LUA_TNUMBER || lua_isboolean(L, idx)) {
    double v = lua_isboolean(L, idx) ? lua_toboolean(L, idx) : lua_tonumber(L, idx);
    lark_device dev = like ? lark_tensor_device(like) : LARK_DEVICE_CPU;
    lark_dtype dt = like ? like->dtype : LARK_FLOAT32;
    if (lua_isinteger(L, idx) && !lark_dtype_is_float(dt)) dt = dt == LARK_BOOL ? LARK_INT64 : dt;
    else if (!lua_isinteger(L, idx) && !lua_isboolean(L, idx) && !lark_dtype_is_float(dt)) dt = LARK_FLOAT32;
    lark_tensor *t = lark_scalar(v, dt, &dev);
    if (!t) lb_error(L);
    return t;
  }
  luaL_error(L, "%s: argument %d: expected a Tensor or a number, got %s", fname, idx, luaL_typename(L, idx));
  return NULL;
}

void lb_register(lua_State *L, int table, const luaL_Reg *regs) {
  lua_pushvalue(L, table);
  luaL_setfuncs(L, regs, 0);
  lua_pop(L, 1);
}

/* ---- the module ----------------------------------------------------------------------------- */

static int l_bytes_allocated(lua_State *L) {
  const char *kind = luaL_optstring(L, 1, "cpu");
  lua_pushinteger(L, lark_bytes_allocated(strcmp(kind, "cuda") == 0 ? LARK_CUDA : LARK_CPU));
  return 1;
}

/* lark.clock(): seconds on a monotonic wall clock, for timing (os.clock is CPU time). */
static int l_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
  return 1;
}

/* lark.isatty([fd = 1]): whether the file descriptor is a terminal (progress bars redraw a line
 * there and print plain lines elsewhere). */
static int l_isatty(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 1);
  lua_pushboolean(L, fd >= 0 && fd <= 1 << 20 && isatty((int)fd));
  return 1;
}

/* lark.memcpy_bandwidth(nbytes, reps [, threads]): the best GB/s (bytes read + written) of plain
 * memcpy between two buffers, split across threads: the machine's ceiling for elementwise ops,
 * which the benchmarks print beside lark's own numbers. */
static int l_memcpy_bandwidth(lua_State *L) {
  lua_Integer nbytes = luaL_checkinteger(L, 1), reps = luaL_optinteger(L, 2, 10);
  if (nbytes <= 0 || nbytes > ((lua_Integer)1 << 34) || reps < 1)
    return luaL_error(L, "memcpy_bandwidth: expected 0 < nbytes <= 16 GiB and reps >= 1");
  int64_t shape[1] = {nbytes};
  lark_tensor *a = lark_ones(1, shape, LARK_UINT8, NULL), *b = a ? lark_zeros(1, shape, LARK_UINT8, NULL) : NULL;
  if (!b) {
    lark_tensor_release(a);
    return lb_error(L);
  }
  double best = 0;
  for (lua_Integer r = 0; r < reps; r++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = lark_copy_(b, a); /* same dtype, contiguous: parallel slabs of memcpy */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc) break;
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    double gbs = 2.0 * (double)nbytes / s / 1e9;
    if (gbs > best) best = gbs;
  }
  lark_tensor_release(a);
  lark_tensor_release(b);
  lua_pushnumber(L, best);
  return 1;
}

int luaopen_lark_core(lua_State *L) {
  lua_thread = pthread_self();
  have_lua_thread = true;
  lark_set_alloc_hook(on_alloc, NULL);
  register_oom_handler(L);

  lua_newtable(L); /* module */
  int mod = lua_gettop(L);
  luaL_newmetatable(L, LB_TENSOR_MT);
  int mt = lua_gettop(L);
  lua_newtable(L); /* methods */
  int methods = lua_gettop(L);
  lua_pushvalue(L, methods);
  lua_setfield(L, mt, "__methods");
  lua_pushvalue(L, methods);
  lua_setfield(L, mod, "_methods");
  lua_pushvalue(L, mt);
  lua_setfield(L, mod, "_metatable");
  luaL_newmetatable(L, "lark.Size");
  lua_setfield(L, mod, "_size_metatable");

  lb_register_tensor(L, mod, methods);
  lb_register_elementwise(L, mod, methods);
  lb_register_reduce(L, mod, methods);
  lb_register_shape(L, mod, methods);
  lb_register_index(L, mod, methods);
  lb_register_random(L, mod, methods);
  lb_register_cuda(L, mod, methods);
  lb_register_autograd(L, mod, methods);
  lb_register_nn(L, mod, methods);
  lb_register_conv(L, mod, methods);
  lb_register_dwconv(L, mod, methods);
  lb_register_data(L, mod, methods);
  lb_register_optim(L, mod, methods);
  lb_register_h5(L, mod, methods);

  static const luaL_Reg misc[] = {{"bytes_allocated", l_bytes_allocated}, {"clock", l_clock}, {"isatty", l_isatty},
                                  {"memcpy_bandwidth", l_memcpy_bandwidth}, {NULL, NULL}};
  lb_register(L, mod, misc);
  lua_settop(L, mod);
  return 1;
}
