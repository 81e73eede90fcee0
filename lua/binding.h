/*
 * binding.h: helpers shared by the files of the Lua binding (lua/bind_*.c).
 *
 * The binding is thin: it checks Lua arguments, converts the 1-based Lua surface to core's 0-based
 * API exactly once, calls core, and turns a core error into a Lua error. Each bind_*.c file owns one
 * op family and registers its functions with lb_register_<family>(L, module_table, methods_table).
 */
#ifndef LARK_BINDING_H
#define LARK_BINDING_H

#include <lauxlib.h>
#include <lua.h>

#include "lark.h"

#define LB_TENSOR_MT "lark.Tensor"

/* The userdata: a pointer to a core tensor (one reference owned by the userdata). */
typedef struct {
  lark_tensor *t;
} lb_tensor;

/* Pushes a tensor userdata that takes over the caller's reference. t NULL raises lark_error(). */
void lb_push(lua_State *L, lark_tensor *t);
/* The tensor at idx, or a Lua error "fname: argument N: expected Tensor, got X". */
lark_tensor *lb_check(lua_State *L, int idx, const char *fname);
lark_tensor *lb_opt(lua_State *L, int idx); /* NULL if not a tensor */
bool lb_is(lua_State *L, int idx);
/* Raises lark_error() as a Lua error (never returns). */
int lb_error(lua_State *L);
/* Raises unless status == 0. */
void lb_check_status(lua_State *L, int status);
/* A 1-based Lua dim (negative from the end: -1 is the last) as a 0-based dim for ndim dims. */
int lb_checkdim(lua_State *L, int idx, int ndim, const char *fname);
/* Converts a 1-based dim value (already read) to 0-based, raising on range errors. */
int lb_dim(lua_State *L, lua_Integer d, int ndim, const char *fname, int argn);
/* Reads a shape given as varargs of integers from idx..top, or one table of integers, or a size
 * table; returns ndim. Sizes must be >= 0. */
int lb_checkshape(lua_State *L, int idx, int64_t *shape, const char *fname);
/* dtype from a string ("float32", "float", "double", "long", "int64", "uint8", "byte", "bool"). */
lark_dtype lb_checkdtype(lua_State *L, int idx, const char *fname);
/* Reads an options table at idx (or nothing): dtype = ..., device = ... */
void lb_opt_dtype_device(lua_State *L, int idx, const char *fname, lark_dtype *dt, lark_device *dev);
/* Pushes a Lua table of the shape (1-based list of integers). */
void lb_push_shape(lua_State *L, int ndim, const int64_t *shape);
/* A tensor from a Lua number or tensor at idx (numbers become 0-d tensors of `like`'s dtype). */
lark_tensor *lb_tensor_or_number(lua_State *L, int idx, const lark_tensor *like, const char *fname);

/* Sets the functions of regs into the table at absolute index `table`. */
void lb_register(lua_State *L, int table, const luaL_Reg *regs);

/* Registration of the families: each adds functions to the module table (at index `mod`) and methods
 * to the Tensor methods table (at index `methods`). */
void lb_register_tensor(lua_State *L, int mod, int methods);
void lb_register_elementwise(lua_State *L, int mod, int methods);
void lb_register_reduce(lua_State *L, int mod, int methods);
void lb_register_shape(lua_State *L, int mod, int methods);
void lb_register_index(lua_State *L, int mod, int methods);
void lb_register_random(lua_State *L, int mod, int methods);
void lb_register_cuda(lua_State *L, int mod, int methods);
void lb_register_autograd(lua_State *L, int mod, int methods);
void lb_register_nn(lua_State *L, int mod, int methods);
void lb_register_conv(lua_State *L, int mod, int methods);
void lb_register_dwconv(lua_State *L, int mod, int methods);
void lb_register_data(lua_State *L, int mod, int methods);
void lb_register_optim(lua_State *L, int mod, int methods);
void lb_register_h5(lua_State *L, int mod, int methods);

/* The C module `lark.core` (lua/module.c). The lark executable preloads it. */
int luaopen_lark_core(lua_State *L);

#endif
