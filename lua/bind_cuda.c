/* bind_cuda.c: the `lark.cuda` table: whether a GPU is there, how many, waiting for it, how much
 * tensor memory lives on it, and the caching allocator's counters and cache. Moving tensors (t:cuda(), t:to("cuda")) is bind_tensor.c's. */
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

/* The device argument at idx of the memory functions: nil (cuda:0), an ordinal as in "cuda:N"
 * (0-based, like the device strings), or "cuda" / "cuda:N". */
static int opt_device(lua_State *L, int idx, const char *fname) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_type(L, idx) == LUA_TSTRING) {
    lark_device d;
    if (lark_device_parse(lua_tostring(L, idx), &d)) lb_error(L);
    if (d.kind != LARK_CUDA) luaL_error(L, "%s: argument %d: expected a CUDA device, got '%s'", fname, idx, lua_tostring(L, idx));
    return d.index;
  }
  int isint;
  lua_Integer i = lua_tointegerx(L, idx, &isint);
  if (!isint || i < 0 || i > 127)
    luaL_error(L, "%s: argument %d: expected a device ordinal (0 for cuda:0) or 'cuda:N', got %s", fname, idx,
               lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
  return (int)i;
}

/* lark.cuda.memory_stats([device]) -> table: the caching allocator's counters for cuda:0 or the
 * given device (an ordinal, 0 for cuda:0, or "cuda:N"):
 *   allocated       bytes in blocks that tensors hold (sizes rounded up to 512 bytes)
 *   requested       the bytes those tensors asked for
 *   reserved        bytes held from the GPU: allocated + cached
 *   cached          reserved bytes no tensor uses, kept for reuse (empty_cache gives them back)
 *   peak_allocated, peak_reserved   the highest values since the start or reset_peak_memory_stats
 *   num_allocs, num_frees           allocations and frees
 *   num_cache_hits  allocations served from reserved memory without asking the GPU
 *   num_segments    blocks of GPU memory held now; num_raw_allocs, num_raw_frees: cudaMalloc and
 *                   cudaFree calls so far
 *   num_ooms        allocations that failed for lack of memory; num_retries: times an allocation
 *                   ran out, ran a full garbage collection, emptied the cache and tried again
 * All zeros without a GPU (or without CUDA in the build). */
static int l_memory_stats(lua_State *L) {
  int dev = opt_device(L, 1, "memory_stats");
  lark_memory_stats s;
  lb_check_status(L, lark_cuda_memory_stats(dev, &s));
  const struct {
    const char *name;
    int64_t value;
  } fields[] = {
      {"allocated", s.allocated},           {"requested", s.requested},         {"reserved", s.reserved},
      {"cached", s.cached},                 {"peak_allocated", s.peak_allocated}, {"peak_reserved", s.peak_reserved},
      {"num_allocs", s.num_allocs},         {"num_frees", s.num_frees},         {"num_cache_hits", s.num_cache_hits},
      {"num_segments", s.num_segments},     {"num_raw_allocs", s.num_raw_allocs}, {"num_raw_frees", s.num_raw_frees},
      {"num_ooms", s.num_ooms},             {"num_retries", s.num_retries},
  };
  lua_createtable(L, 0, (int)(sizeof fields / sizeof fields[0]));
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    lua_pushinteger(L, (lua_Integer)fields[i].value);
    lua_setfield(L, -2, fields[i].name);
  }
  return 1;
}

/* lark.cuda.empty_cache(): gives the GPU memory that no tensor uses back to the driver, on every
 * device, so that other processes (or cudaMalloc outside lark) can have it, and the pinned host
 * blocks kept for reuse too. Tensors Lua has not
 * collected yet still hold theirs: call collectgarbage() first to release those too. Allocation
 * gets slower until the cache fills again. A no-op without a GPU. */
static int l_empty_cache(lua_State *L) {
  lark_cuda_empty_cache();
  return 0;
}

/* lark.cuda.reset_peak_memory_stats([device]): peak_allocated and peak_reserved start again from
 * the current values, on cuda:0 or the given device. A no-op without a GPU. */
static int l_reset_peak_memory_stats(lua_State *L) {
  lark_cuda_reset_peak_memory_stats(opt_device(L, 1, "reset_peak_memory_stats"));
  return 0;
}

/* lark.set_float32_matmul_precision(p): "highest" (the default: exact float32), "high" (TF32
 * tensor cores allowed) or "medium" (BF16 tensor cores allowed), as PyTorch's function of that
 * name. It governs float32 matmul, conv2d and the depth-wise convolution on CUDA tensors (sums
 * stay float32); the CPU and float64 are always exact. Returns the previous setting. */
static int l_set_float32_matmul_precision(lua_State *L) {
  const char *prev = lark_float32_precision_name();
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "set_float32_matmul_precision: expected 'highest', 'high' or 'medium', got %s%s",
                      lua_isnone(L, 1) ? "" : "a ", lua_isnone(L, 1) ? "nothing" : luaL_typename(L, 1));
  lb_check_status(L, lark_set_float32_precision(lua_tostring(L, 1)));
  lua_pushstring(L, prev);
  return 1;
}

/* lark.get_float32_matmul_precision() -> "highest" | "high" | "medium" */
static int l_get_float32_matmul_precision(lua_State *L) {
  lua_pushstring(L, lark_float32_precision_name());
  return 1;
}

void lb_register_cuda(lua_State *L, int mod, int methods) {
  static const luaL_Reg fns[] = {
      {"is_available", l_is_available},
      {"device_count", l_device_count},
      {"synchronize", l_synchronize},
      {"bytes_allocated", l_bytes_allocated},
      {"memory_allocated", l_bytes_allocated}, /* PyTorch's name */
      {"memory_stats", l_memory_stats},
      {"empty_cache", l_empty_cache},
      {"reset_peak_memory_stats", l_reset_peak_memory_stats},
      {NULL, NULL},
  };
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  lua_setfield(L, mod, "cuda");
  lua_pushcfunction(L, l_set_float32_matmul_precision);
  lua_setfield(L, mod, "set_float32_matmul_precision");
  lua_pushcfunction(L, l_get_float32_matmul_precision);
  lua_setfield(L, mod, "get_float32_matmul_precision");
}
