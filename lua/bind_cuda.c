/* bind_cuda.c: the `lark.cuda` table: whether a GPU is there, how many, waiting for it, and how
 * much tensor memory lives on it. Moving tensors (t:cuda(), t:to("cuda")) is bind_tensor.c's. */
#include "binding.h"

/* lark.cuda.is_available() -> boolean: built with CUDA and at least one device answers. */
static int l_is_available(lua_State *L) {
  lua_pushboolean(L, lark_cuda_is_available());
  return 1;
}

/* lark.cuda.device_count() -> integer (0 without CUDA or without a device). */
static int l_device_count(lua_State *L) {
  lua_pushinteger(L, lark_cuda_device_count());
  return 1;
}

/* lark.cuda.synchronize(): waits until every kernel queued on every GPU in use has finished (and
 * raises the error of one that failed). A no-op without a GPU. */
static int l_synchronize(lua_State *L) {
  lb_check_status(L, lark_cuda_synchronize());
  return 0;
}

/* lark.cuda.bytes_allocated() -> integer: bytes of tensor storage alive on CUDA devices. */
static int l_bytes_allocated(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lark_bytes_allocated(LARK_CUDA));
  return 1;
}

void lb_register_cuda(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"is_available", l_is_available},
      {"device_count", l_device_count},
      {"synchronize", l_synchronize},
      {"bytes_allocated", l_bytes_allocated},
      {"memory_allocated", l_bytes_allocated}, /* PyTorch's name */
      {NULL, NULL},
  };
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  lua_setfield(L, mod, "cuda");
}
