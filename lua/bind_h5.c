/* bind_h5.c: the C side of lark.h5 (core/io/h5.c does the work; lua/lark/h5.lua is the library).
 *
 *   lark.core.h5_open(path [, mode = "r" [, {atomic =, locking =}]])  -> File
 *   f:read(name) -> tensor               f:write(name, t [, {compress =, level =}])
 *   f:keys([group]) -> {names}           f:has(name) -> bool       f:kind(name) -> "group"|"dataset"|"other"|nil
 *   f:info(name) -> {dtype =, shape =}   f:create_group(name)
 *   f:attr(name [, object]) -> value|nil f:set_attr(name, value [, object])   f:attr_names([object])
 *   f:close() (idempotent)               f:abort() (atomic files: drop the temporary)
 *   f:path(), f:mode(), f:is_open(), __close, __gc, __tostring
 * The File methods table is lark.core._h5_file, where lark/h5.lua adds the Lua ones.
 *
 * Closing: f:close() and leaving a `<close>` scope normally commit an atomic file; leaving the scope
 * by an error, f:abort() and the collector (a file nobody closed is incomplete) discard it. */
#include <string.h>

#include "binding.h"

#define LB_H5_MT "lark.h5.File"

typedef struct {
  lark_h5 *f;
} lb_h5;

static lb_h5 *check_file(lua_State *L, int idx) { return luaL_checkudata(L, idx, LB_H5_MT); }

/* The open handle at idx, or an error naming the file that was closed. */
static lark_h5 *open_file(lua_State *L, int idx, const char *fname) {
  lb_h5 *u = check_file(L, idx);
  if (!u->f) {
    lua_getiuservalue(L, idx, 1);
    luaL_error(L, "%s: the file '%s' is closed", fname, lua_tostring(L, -1));
  }
  return u->f;
}

static int l_h5_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  lark_h5_mode m;
  if (strcmp(mode, "r") == 0) m = LARK_H5_READ;
  else if (strcmp(mode, "w") == 0) m = LARK_H5_WRITE;
  else if (strcmp(mode, "a") == 0) m = LARK_H5_APPEND;
  else return luaL_error(L, "h5.open: mode must be \"r\", \"w\" or \"a\", got \"%s\"", mode);
  lark_h5_open_opts o;
  lark_h5_open_opts_init(&o);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(k, "atomic") != 0 && strcmp(k, "locking") != 0)
        return luaL_error(L, "h5.open: unknown option '%s' (expected atomic or locking)", k);
      if (!lua_isboolean(L, -1)) return luaL_error(L, "h5.open: option %s must be a boolean, got %s", k, luaL_typename(L, -1));
      if (strcmp(k, "atomic") == 0) o.atomic = lua_toboolean(L, -1);
      else o.locking = lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
  }
  lb_h5 *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->f = NULL;
  luaL_setmetatable(L, LB_H5_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  u->f = lark_h5_open(path, m, &o);
  if (!u->f) return lb_error(L);
  return 1;
}

static int l_close(lua_State *L) {
  lb_h5 *u = check_file(L, 1);
  lark_h5 *f = u->f;
  u->f = NULL;
  if (f && lark_h5_close(f)) return lb_error(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_abort(lua_State *L) {
  lb_h5 *u = check_file(L, 1);
  lark_h5 *f = u->f;
  u->f = NULL;
  if (f && lark_h5_abort(f)) return lb_error(L);
  return 0;
}

/* __close(f, err): commit on a normal exit, discard an atomic file when an error is unwinding. */
static int l_mt_close(lua_State *L) {
  lb_h5 *u = check_file(L, 1);
  if (!u->f) return 0;
  if (!lua_isnoneornil(L, 2) && lark_h5_is_atomic(u->f)) return l_abort(L);
  return l_close(L);
}

/* __gc: never commit what nobody closed; close read and plain files quietly. */
static int l_gc(lua_State *L) {
  lb_h5 *u = check_file(L, 1);
  lark_h5 *f = u->f;
  u->f = NULL;
  if (f) {
    if (lark_h5_is_atomic(f)) lark_h5_abort(f);
    else lark_h5_close(f);
    lark_clear_error();
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  lb_h5 *u = check_file(L, 1);
  lua_getiuservalue(L, 1, 1);
  const char *path = lua_tostring(L, -1);
  if (!u->f) lua_pushfstring(L, "lark.h5.File('%s', closed)", path);
  else {
    lark_h5_mode m = lark_h5_get_mode(u->f);
    lua_pushfstring(L, "lark.h5.File('%s', \"%s\"%s)", path, m == LARK_H5_READ ? "r" : m == LARK_H5_WRITE ? "w" : "a",
                    lark_h5_is_atomic(u->f) ? ", atomic" : "");
  }
  return 1;
}

static int l_path(lua_State *L) {
  check_file(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int l_mode(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:mode");
  lark_h5_mode m = lark_h5_get_mode(f);
  lua_pushstring(L, m == LARK_H5_READ ? "r" : m == LARK_H5_WRITE ? "w" : "a");
  return 1;
}

static int l_is_open(lua_State *L) {
  lua_pushboolean(L, check_file(L, 1)->f != NULL);
  return 1;
}

static int l_read(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:read");
  lb_push(L, lark_h5_read(f, luaL_checkstring(L, 2)));
  return 1;
}

static int l_write(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:write");
  const char *name = luaL_checkstring(L, 2);
  lark_tensor *t = lb_check(L, 3, "h5:write");
  lark_h5_write_opts o;
  lark_h5_write_opts_init(&o);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 4)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      if (strcmp(k, "compress") == 0) {
        if (!lua_isboolean(L, -1)) return luaL_error(L, "h5:write: option compress must be a boolean, got %s", luaL_typename(L, -1));
        o.compress = lua_toboolean(L, -1) ? 1 : 0;
      } else if (strcmp(k, "level") == 0) {
        if (!lua_isinteger(L, -1)) return luaL_error(L, "h5:write: option level must be an integer 0..9");
        o.level = (int)lua_tointeger(L, -1);
      } else {
        return luaL_error(L, "h5:write: unknown option '%s' (expected compress or level)", k);
      }
      lua_pop(L, 1);
    }
  }
  lb_check_status(L, lark_h5_write(f, name, t, &o));
  return 0;
}

static void push_names(lua_State *L, char **names, int64_t n) {
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lark_h5_free_names(names, n);
}

static int l_keys(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:keys");
  char **names;
  int64_t n;
  lb_check_status(L, lark_h5_keys(f, luaL_optstring(L, 2, "/"), &names, &n));
  push_names(L, names, n);
  return 1;
}

static int l_kind(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:kind");
  int k = lark_h5_kind_of(f, luaL_checkstring(L, 2));
  if (k < 0) return lb_error(L);
  if (k == LARK_H5_NONE) lua_pushnil(L);
  else lua_pushstring(L, k == LARK_H5_GROUP ? "group" : k == LARK_H5_DATASET ? "dataset" : "other");
  return 1;
}

static int l_has(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:has");
  int k = lark_h5_kind_of(f, luaL_checkstring(L, 2));
  if (k < 0) return lb_error(L);
  lua_pushboolean(L, k != LARK_H5_NONE);
  return 1;
}

static int l_info(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:info");
  lark_dtype dt;
  int ndim;
  int64_t shape[LARK_MAX_DIMS];
  lb_check_status(L, lark_h5_dataset_info(f, luaL_checkstring(L, 2), &dt, &ndim, shape));
  lua_createtable(L, 0, 2);
  lua_pushstring(L, lark_dtype_name(dt));
  lua_setfield(L, -2, "dtype");
  lb_push_shape(L, ndim, shape);
  lua_setfield(L, -2, "shape");
  return 1;
}

static int l_create_group(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:create_group");
  lb_check_status(L, lark_h5_create_group(f, luaL_checkstring(L, 2)));
  return 0;
}

static void push_attr_value(lua_State *L, const lark_h5_attr *a, int64_t i) {
  switch (a->type) {
  case LARK_H5_ATTR_STRING: lua_pushstring(L, a->s); break;
  case LARK_H5_ATTR_INT: lua_pushinteger(L, (lua_Integer)a->i[i]); break;
  case LARK_H5_ATTR_BOOL: lua_pushboolean(L, a->i[i] != 0); break;
  case LARK_H5_ATTR_FLOAT: lua_pushnumber(L, a->d[i]); break;
  }
}

/* f:attr(name [, object]): the value (string, integer, number, boolean, or a list of numbers for
 * an array attribute), nil when there is no such attribute. */
static int l_attr(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:attr");
  const char *name = luaL_checkstring(L, 2), *object = luaL_optstring(L, 3, "/");
  lark_h5_attr a;
  int rc = lark_h5_get_attr(f, object, name, &a);
  if (rc < 0) return lb_error(L);
  if (rc == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (a.is_array) {
    lua_createtable(L, (int)a.n, 0);
    for (int64_t i = 0; i < a.n; i++) {
      push_attr_value(L, &a, i);
      lua_rawseti(L, -2, i + 1);
    }
  } else {
    push_attr_value(L, &a, 0);
  }
  lark_h5_attr_free(&a);
  return 1;
}

static int l_set_attr(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:set_attr");
  const char *name = luaL_checkstring(L, 2), *object = luaL_optstring(L, 4, "/");
  int rc;
  switch (lua_type(L, 3)) {
  case LUA_TSTRING: rc = lark_h5_set_attr_string(f, object, name, lua_tostring(L, 3)); break;
  case LUA_TBOOLEAN: rc = lark_h5_set_attr_bool(f, object, name, lua_toboolean(L, 3)); break;
  case LUA_TNUMBER:
    rc = lua_isinteger(L, 3) ? lark_h5_set_attr_int(f, object, name, (int64_t)lua_tointeger(L, 3))
                             : lark_h5_set_attr_float(f, object, name, lua_tonumber(L, 3));
    break;
  default:
    return luaL_error(L, "h5:set_attr: attribute '%s': expected a string, number or boolean, got %s (encode tables "
                         "as JSON with lark.json)", name, luaL_typename(L, 3));
  }
  lb_check_status(L, rc);
  return 0;
}

static int l_attr_names(lua_State *L) {
  lark_h5 *f = open_file(L, 1, "h5:attr_names");
  char **names;
  int64_t n;
  lb_check_status(L, lark_h5_attr_names(f, luaL_optstring(L, 2, "/"), &names, &n));
  push_names(L, names, n);
  return 1;
}

void lb_register_h5(lua_State *L, int mod, int methods) {
  (void)methods;
  if (luaL_newmetatable(L, LB_H5_MT)) {
    static const luaL_Reg m[] = {{"read", l_read},         {"write", l_write},
                                 {"keys", l_keys},         {"has", l_has},
                                 {"kind", l_kind},         {"info", l_info},
                                 {"create_group", l_create_group},
                                 {"attr", l_attr},         {"set_attr", l_set_attr},
                                 {"attr_names", l_attr_names},
                                 {"close", l_close},       {"abort", l_abort},
                                 {"path", l_path},         {"mode", l_mode},
                                 {"is_open", l_is_open},   {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, m, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_setfield(L, mod, "_h5_file");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_mt_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushstring(L, LB_H5_MT);
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"h5_open", l_h5_open}, {NULL, NULL}};
  lb_register(L, mod, fns);
}
