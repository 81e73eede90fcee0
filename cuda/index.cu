/*
 * index.cu: the CUDA kernels of core/ops/index.c: index checks, gather (index_select too),
 * scatter_add, masked_fill, masked_select and nonzero.
 *
 * The front functions in index.c check shapes, dtypes and devices and hand over views; these
 * kernels read every operand in place through lark_cuda_launch's geometry (any strides, expanded
 * dims, storage offsets), moving elements by their size (1, 4 or 8 bytes) where the dtype does not
 * matter.
 *
 * - Index checks run on the device: each bad element lowers a flag to its row-major position with
 *   atomicMin, so the host learns the first bad one, whatever the order threads ran in, reads that
 *   one value back and words the CPU's error. Nothing is written before the check has passed.
 * - scatter_add gives each destination line (the positions of the index that share every
 *   coordinate but dim) to one thread, which adds along dim in increasing position: the CPU's order
 *   (index.c partitions its threads by destination the same way), so float sums are the CPU's bits
 *   and the result never depends on the schedule. No atomics: two lines never meet in t, because
 *   they differ in a coordinate outside dim and t is not expanded (the front refuses that).
 * - masked_select and nonzero need each selected element's place in the output: a flag per element
 *   (row-major), an exclusive prefix sum of the flags in int64 (tiles of SCAN_TILE elements scanned
 *   per block, the tile totals scanned recursively), the total read back to size the result, then
 *   every selected element writes itself at its prefix.
 */
#include <string.h>
#include <type_traits>

#include "cuda.h"

namespace { /* everything but the entry points is private to this file */

/* ---- helpers -------------------------------------------------------------------------------- */

/* The unsigned type of an element of ES bytes: elements are moved as bits. */
template <int ES> struct bits_of;
template <> struct bits_of<1> { typedef uint8_t type; };
template <> struct bits_of<4> { typedef uint32_t type; };
template <> struct bits_of<8> { typedef uint64_t type; };

/* Calls f(std::integral_constant<int, ES>) for the element size of dtype dt. */
template <typename F>
int dispatch_size(lark_dtype dt, const char *op, F f) {
  switch (lark_dtype_size(dt)) {
    case 1: return f(std::integral_constant<int, 1>());
    case 4: return f(std::integral_constant<int, 4>());
    case 8: return f(std::integral_constant<int, 8>());
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: unsupported dtype %s", op, lark_dtype_name(dt));
  }
}

/* Float to integer as cpu.c converts (NaN -> 0, out of range saturates). */
int64_t host_f2i(double x) {
  if (x != x) return 0;
  if (x >= 9.2233720368547748e18) return INT64_MAX;
  if (x <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)x;
}

/* fn(i, off) for every element i (row-major over the problem) of the N tensors ts, one shape:
 * lark_cuda_launch's strided path, with the linear index passed along (the index check needs the
 * position of what it finds, nonzero the coordinates). */
template <typename index_t, int N, typename Fn>
__global__ void linear_kernel(lark_cuda_geom<N> g, index_t n, Fn fn) {
  index_t step = (index_t)blockDim.x * gridDim.x;
  for (index_t i = (index_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[N];
    lark_cuda_offsets<index_t, N>(g, i, off);
    fn((int64_t)i, off);
  }
}

template <int N, typename Fn>
int launch_linear(const char *op, const lark_tensor *const *ts, Fn fn) {
  if (lark_cuda_set_device(lark_tensor_device(ts[0]), op)) return lark_error_code();
  lark_iter it;
  lark_iter_init(&it, N, ts);
  if (it.numel <= 0) return 0;
  unsigned blocks = lark_cuda_grid(it.numel, LARK_CUDA_THREADS);
  lark_cuda_geom<N> g = lark_cuda_geom_of<N>(it);
  if (lark_cuda_fits32(it.numel, blocks, LARK_CUDA_THREADS))
    linear_kernel<uint32_t, N, Fn><<<blocks, LARK_CUDA_THREADS>>>(g, (uint32_t)it.numel, fn);
  else
    linear_kernel<uint64_t, N, Fn><<<blocks, LARK_CUDA_THREADS>>>(g, (uint64_t)it.numel, fn);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

/* A device int64 tensor of n elements (n >= 1). */
lark_tensor *device_int64(lark_device dev, int64_t n) { return lark_empty(1, &n, LARK_INT64, &dev); }

/* *v = element i (row-major) of t, read across the bus (8 bytes at most). */
int read_element(const char *op, const lark_tensor *t, int64_t i, void *v) {
  size_t es = lark_dtype_size(t->dtype);
  /* lark_offset_of counts from the storage's start, lark_data_ptr from the view's first element */
  const char *src = (const char *)lark_data_ptr(t) + (lark_offset_of(t, i) - t->offset) * (int64_t)es;
  return lark_cuda_check(cudaMemcpy(v, src, es, cudaMemcpyDeviceToHost), op, "cudaMemcpy cuda -> host");
}

/* ---- index checks --------------------------------------------------------------------------- */

struct check_fn {
  const int64_t *idx;       /* the index, any strides */
  uint64_t size;            /* valid values: [0, size) */
  unsigned long long *bad;  /* (1) the first bad position, all ones while none */
  __device__ void operator()(int64_t i, const int64_t *off) const {
    if ((uint64_t)idx[off[0]] >= size) atomicMin(bad, (unsigned long long)i); /* negatives wrap to huge */
  }
};

} /* namespace */

int lark_cuda_index_check(const lark_tensor *index, int64_t size, int64_t *bad, int64_t *bad_value) {
  const char *op = "index";
  *bad = -1;
  *bad_value = 0;
  if (lark_numel(index) == 0) return 0;
  lark_device dev = lark_tensor_device(index);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  lark_tensor *flag = device_int64(dev, 1);
  if (!flag) return lark_error_code();
  unsigned long long *dflag = (unsigned long long *)lark_data_ptr(flag), hflag = 0;
  int rc = lark_cuda_check(cudaMemsetAsync(dflag, 0xff, sizeof *dflag, 0), op, "cudaMemsetAsync");
  if (!rc) {
    check_fn fn;
    fn.idx = (const int64_t *)lark_data_ptr(index);
    fn.size = (uint64_t)size;
    fn.bad = dflag;
    const lark_tensor *ts[1] = {index};
    rc = launch_linear<1>(op, ts, fn);
  }
  /* synchronous on the default stream: waits for the kernel */
  if (!rc) rc = lark_cuda_check(cudaMemcpy(&hflag, dflag, sizeof hflag, cudaMemcpyDeviceToHost), op, "cudaMemcpy cuda -> host");
  lark_tensor_release(flag);
  if (rc || hflag == ~0ull) return rc;
  *bad = (int64_t)hflag;
  return read_element(op, index, *bad, bad_value);
}

namespace {

/* ---- gather (and index_select) -------------------------------------------------------------- */

template <typename T>
struct gather_fn {
  T *out;             /* out's shape, contiguous */
  const T *src;       /* t viewed with out's shape and stride 0 along dim: the start of each line */
  const int64_t *idx; /* out's shape, any strides */
  int64_t sdim;       /* t's stride along dim */
  __device__ void operator()(const int64_t *off) const { out[off[0]] = src[off[1] + idx[off[2]] * sdim]; }
};

} /* namespace */

int lark_cuda_gather(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index) {
  const char *op = "gather";
  if (lark_numel(out) == 0) return 0;
  /* t with out's shape and no step along dim: its offsets are where each picked line starts */
  int64_t st[LARK_MAX_DIMS];
  memcpy(st, t->stride, sizeof(int64_t) * (size_t)t->ndim);
  st[dim] = 0;
  lark_tensor *tv = lark_as_strided(t, out->ndim, out->shape, st, t->offset);
  if (!tv) return lark_error_code();
  const lark_tensor *ts[3] = {out, tv, index};
  int64_t sdim = t->stride[dim];
  int rc = dispatch_size(t->dtype, op, [&](auto es) {
    typedef typename bits_of<decltype(es)::value>::type T;
    gather_fn<T> fn;
    fn.out = (T *)lark_data_ptr(out);
    fn.src = (const T *)lark_data_ptr(t);
    fn.idx = (const int64_t *)lark_data_ptr(index);
    fn.sdim = sdim;
    return lark_cuda_launch<3>(op, ts, fn);
  });
  lark_tensor_release(tv);
  return rc;
}

namespace {

/* ---- scatter_add ---------------------------------------------------------------------------- */

/* dst + v in t's dtype with index.c's rules: wrap for integers, OR for bool. */
template <int DT, typename T>
__device__ __forceinline__ T scatter_sum(T a, T b) {
  if constexpr (DT == LARK_INT64) return (T)((uint64_t)a + (uint64_t)b);
  else if constexpr (DT == LARK_UINT8) return (T)(a + b);
  else if constexpr (DT == LARK_BOOL) return (T)(a | b);
  else return a + b;
}

template <int DT, typename T>
struct scatter_fn {
  T *dst;             /* t viewed over the lines (index's shape, 1 along dim): the start of each line */
  const int64_t *idx; /* index over the lines likewise */
  const T *src;       /* src over the lines likewise */
  int64_t n;          /* index's size along dim */
  int64_t ts_dim, is_dim, ss_dim; /* strides along dim of t, index, src */
  __device__ void operator()(const int64_t *off) const {
    for (int64_t j = 0; j < n; j++) {
      T *d = dst + off[0] + idx[off[1] + j * is_dim] * ts_dim;
      *d = scatter_sum<DT, T>(*d, src[off[2] + j * ss_dim]);
    }
  }
};

} /* namespace */

int lark_cuda_scatter_add(lark_tensor *t, int dim, const lark_tensor *index, const lark_tensor *src) {
  const char *op = "scatter_add";
  if (lark_numel(index) == 0) return 0;
  int nd = index->ndim;
  int64_t lines[LARK_MAX_DIMS];
  memcpy(lines, index->shape, sizeof(int64_t) * (size_t)nd);
  lines[dim] = 1;
  lark_tensor *tl = lark_as_strided(t, nd, lines, t->stride, t->offset);
  lark_tensor *il = tl ? lark_as_strided(index, nd, lines, index->stride, index->offset) : NULL;
  lark_tensor *sl = il ? lark_as_strided(src, nd, lines, src->stride, src->offset) : NULL;
  int rc = sl ? 0 : lark_error_code();
  if (!rc) {
    const lark_tensor *ts[3] = {tl, il, sl};
    auto run = [&](auto dt) {
      constexpr int DT = decltype(dt)::value;
      typedef typename std::conditional<DT == LARK_FLOAT32, float,
              typename std::conditional<DT == LARK_FLOAT64, double,
              typename std::conditional<DT == LARK_INT64, int64_t, uint8_t>::type>::type>::type T;
      scatter_fn<DT, T> fn;
      fn.dst = (T *)lark_data_ptr(t);
      fn.idx = (const int64_t *)lark_data_ptr(index);
      fn.src = (const T *)lark_data_ptr(src);
      fn.n = index->shape[dim];
      fn.ts_dim = t->stride[dim];
      fn.is_dim = index->stride[dim];
      fn.ss_dim = src->stride[dim];
      return lark_cuda_launch<3>(op, ts, fn);
    };
    switch (t->dtype) {
      case LARK_FLOAT32: rc = run(std::integral_constant<int, LARK_FLOAT32>()); break;
      case LARK_FLOAT64: rc = run(std::integral_constant<int, LARK_FLOAT64>()); break;
      case LARK_INT64: rc = run(std::integral_constant<int, LARK_INT64>()); break;
      case LARK_UINT8: rc = run(std::integral_constant<int, LARK_UINT8>()); break;
      case LARK_BOOL: rc = run(std::integral_constant<int, LARK_BOOL>()); break;
      default: rc = lark_set_error(LARK_ERR_DTYPE, "%s: unsupported dtype %s", op, lark_dtype_name(t->dtype)); break;
    }
  }
  lark_tensor_release(tl);
  lark_tensor_release(il);
  lark_tensor_release(sl);
  return rc;
}

namespace {

/* ---- masked_fill ---------------------------------------------------------------------------- */

template <typename T>
struct masked_fill_fn {
  T *dst;              /* t, any strides */
  const uint8_t *mask; /* t's shape, expanded */
  T value;
  __device__ void operator()(const int64_t *off) const {
    if (mask[off[1]]) dst[off[0]] = value;
  }
};

} /* namespace */

int lark_cuda_masked_fill(lark_tensor *t, const lark_tensor *mask, double value) {
  const char *op = "masked_fill";
  if (lark_numel(t) == 0) return 0;
  const lark_tensor *ts[2] = {t, mask};
  /* the value in t's dtype, converted on the host with index.c's rules, as the low bytes of bits */
  uint64_t bits = 0;
  switch (t->dtype) {
    case LARK_FLOAT32: { float v = (float)value; uint32_t u; memcpy(&u, &v, sizeof u); bits = u; break; }
    case LARK_FLOAT64: memcpy(&bits, &value, sizeof bits); break;
    case LARK_INT64: bits = (uint64_t)host_f2i(value); break;
    case LARK_UINT8: bits = (uint8_t)host_f2i(value); break;
    default: bits = value != 0; break; /* bool */
  }
  return dispatch_size(t->dtype, op, [&](auto es) {
    typedef typename bits_of<decltype(es)::value>::type T;
    masked_fill_fn<T> fn;
    fn.dst = (T *)lark_data_ptr(t);
    fn.mask = (const uint8_t *)lark_data_ptr(mask);
    fn.value = (T)bits;
    return lark_cuda_launch<2>(op, ts, fn);
  });
}

namespace {

/* ---- exclusive prefix sums of int64 --------------------------------------------------------- */

#define SCAN_THREADS 256
#define SCAN_ITEMS 8
#define SCAN_TILE (SCAN_THREADS * SCAN_ITEMS)

/* The exclusive prefix of v over the block's threads (in thread order), and the block's total in
 * *total. Every thread of the block must call it; it may be called again right after. */
__device__ long long block_exclusive(long long v, long long *total) {
  __shared__ long long warp_sums[SCAN_THREADS / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = SCAN_THREADS / 32;
  long long x = v; /* inclusive scan within the warp */
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    long long y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    long long s = lane < nwarps ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      long long y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    if (lane < nwarps) warp_sums[lane] = s; /* inclusive over the warps */
  }
  __syncthreads();
  long long before = warp > 0 ? warp_sums[warp - 1] : 0;
  *total = warp_sums[nwarps - 1];
  __syncthreads(); /* warp_sums is read above before the next call overwrites it */
  return before + x - v;
}

/* sums[b] = the sum of tile b of d (n elements). */
__global__ void scan_tile_sums(const long long *d /* (n) */, int64_t n, long long *sums /* (ntiles) */,
                               int64_t ntiles) {
  for (int64_t b = blockIdx.x; b < ntiles; b += gridDim.x) {
    int64_t base = b * SCAN_TILE + (int64_t)threadIdx.x * SCAN_ITEMS;
    long long s = 0, total;
#pragma unroll
    for (int k = 0; k < SCAN_ITEMS; k++)
      if (base + k < n) s += d[base + k];
    block_exclusive(s, &total);
    if (threadIdx.x == 0) sums[b] = total;
  }
}

/* d (n elements) = its exclusive prefix sums, tile by tile, each tile starting at sums[b] (the
 * scanned tile totals) or at 0 when sums is NULL (a single tile). */
__global__ void scan_tiles(long long *d /* (n) */, int64_t n, const long long *sums /* (ntiles) or NULL */,
                           int64_t ntiles) {
  for (int64_t b = blockIdx.x; b < ntiles; b += gridDim.x) {
    int64_t base = b * SCAN_TILE + (int64_t)threadIdx.x * SCAN_ITEMS;
    long long v[SCAN_ITEMS], s = 0, total;
#pragma unroll
    for (int k = 0; k < SCAN_ITEMS; k++) {
      v[k] = base + k < n ? d[base + k] : 0;
      s += v[k];
    }
    long long run = block_exclusive(s, &total) + (sums ? sums[b] : 0);
#pragma unroll
    for (int k = 0; k < SCAN_ITEMS; k++) {
      if (base + k < n) d[base + k] = run;
      run += v[k];
    }
  }
}

/* d (n >= 1 int64 elements on dev) = its exclusive prefix sums. */
int scan_exclusive(long long *d, int64_t n, lark_device dev, const char *op) {
  int64_t ntiles = (n + SCAN_TILE - 1) / SCAN_TILE;
  unsigned blocks = (unsigned)(ntiles < 65535 ? ntiles : 65535); /* the loops stride over the rest */
  if (ntiles == 1) {
    scan_tiles<<<1, SCAN_THREADS>>>(d, n, NULL, 1);
    return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  }
  lark_tensor *sums = device_int64(dev, ntiles);
  if (!sums) return lark_error_code();
  long long *ds = (long long *)lark_data_ptr(sums);
  scan_tile_sums<<<blocks, SCAN_THREADS>>>(d, n, ds, ntiles);
  int rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  if (!rc) rc = scan_exclusive(ds, ntiles, dev, op); /* depth log_2048(n): 3 for 8e9 elements */
  if (!rc) {
    scan_tiles<<<blocks, SCAN_THREADS>>>(d, n, ds, ntiles);
    rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  }
  lark_tensor_release(sums); /* the caching allocator keeps it until the queued kernels are done */
  return rc;
}

/* Whether an element is non-zero, read by size and dtype (NaN is non-zero). */
template <int DT>
__device__ __forceinline__ bool is_set(const char *base, int64_t off) {
  if constexpr (DT == LARK_FLOAT32) return ((const float *)base)[off] != 0;
  else if constexpr (DT == LARK_FLOAT64) return ((const double *)base)[off] != 0;
  else if constexpr (DT == LARK_INT64) return ((const int64_t *)base)[off] != 0;
  else return ((const uint8_t *)base)[off] != 0;
}

template <int DT>
struct flag_fn {
  long long *pos;   /* (n + 1) contiguous */
  const char *base; /* the flagged tensor, any strides */
  __device__ void operator()(int64_t i, const int64_t *off) const { pos[i] = is_set<DT>(base, off[0]); }
};

/* Calls f(std::integral_constant<int, DT>) for the dtype of t, as is_set reads it. */
template <typename F>
int dispatch_flag(lark_dtype dt, const char *op, F f) {
  switch (dt) {
    case LARK_FLOAT32: return f(std::integral_constant<int, LARK_FLOAT32>());
    case LARK_FLOAT64: return f(std::integral_constant<int, LARK_FLOAT64>());
    case LARK_INT64: return f(std::integral_constant<int, LARK_INT64>());
    case LARK_UINT8:
    case LARK_BOOL: return f(std::integral_constant<int, LARK_UINT8>());
    default: return lark_set_error(LARK_ERR_DTYPE, "%s: unsupported dtype %s", op, lark_dtype_name(dt));
  }
}

/* *pos = a fresh (n + 1) int64 device tensor holding the exclusive prefix sums of the flags "t is
 * non-zero" (row-major over t), and *total = their sum (pos[n]). */
int prefix_of_flags(const char *op, const lark_tensor *t, lark_tensor **pos, int64_t *total) {
  *pos = NULL;
  *total = 0;
  int64_t n = lark_numel(t);
  lark_device dev = lark_tensor_device(t);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  lark_tensor *p = device_int64(dev, n + 1);
  if (!p) return lark_error_code();
  long long *dp = (long long *)lark_data_ptr(p);
  const lark_tensor *ts[1] = {t};
  int rc = lark_cuda_check(cudaMemsetAsync(dp + n, 0, sizeof *dp, 0), op, "cudaMemsetAsync");
  if (!rc)
    rc = dispatch_flag(t->dtype, op, [&](auto dt) {
      flag_fn<decltype(dt)::value> fn;
      fn.pos = dp;
      fn.base = (const char *)lark_data_ptr(t);
      return launch_linear<1>(op, ts, fn);
    });
  if (!rc) rc = scan_exclusive(dp, n + 1, dev, op);
  long long h = 0;
  if (!rc) rc = lark_cuda_check(cudaMemcpy(&h, dp + n, sizeof h, cudaMemcpyDeviceToHost), op, "cudaMemcpy cuda -> host");
  if (rc) {
    lark_tensor_release(p);
    return rc;
  }
  *pos = p;
  *total = (int64_t)h;
  return 0;
}

/* ---- masked_select -------------------------------------------------------------------------- */

template <typename T>
struct select_fn {
  T *out;               /* (total) */
  const long long *pos; /* (n + 1) the prefix sums of the mask */
  const T *src;         /* t, any strides */
  const uint8_t *mask;  /* t's shape, any strides */
  __device__ void operator()(int64_t i, const int64_t *off) const {
    if (mask[off[1]]) out[pos[i]] = src[off[0]];
  }
};

} /* namespace */

int lark_cuda_masked_select(const lark_tensor *t, const lark_tensor *mask, lark_tensor **out) {
  const char *op = "masked_select";
  *out = NULL;
  lark_device dev = lark_tensor_device(t);
  int64_t total = 0;
  if (lark_numel(t) == 0) {
    *out = lark_empty(1, &total, t->dtype, &dev);
    return *out ? 0 : lark_error_code();
  }
  lark_tensor *pos = NULL;
  if (prefix_of_flags(op, mask, &pos, &total)) return lark_error_code();
  lark_tensor *o = lark_empty(1, &total, t->dtype, &dev);
  int rc = o ? 0 : lark_error_code();
  if (!rc && total > 0) {
    const lark_tensor *ts[2] = {t, mask};
    rc = dispatch_size(t->dtype, op, [&](auto es) {
      typedef typename bits_of<decltype(es)::value>::type T;
      select_fn<T> fn;
      fn.out = (T *)lark_data_ptr(o);
      fn.pos = (const long long *)lark_data_ptr(pos);
      fn.src = (const T *)lark_data_ptr(t);
      fn.mask = (const uint8_t *)lark_data_ptr(mask);
      return launch_linear<2>(op, ts, fn);
    });
  }
  lark_tensor_release(pos);
  if (rc) {
    lark_tensor_release(o);
    return rc;
  }
  *out = o;
  return 0;
}

namespace {

/* ---- nonzero -------------------------------------------------------------------------------- */

struct nonzero_shape {
  int nd;
  int64_t shape[LARK_MAX_DIMS];
};

template <int DT>
struct nonzero_fn {
  int64_t *out;         /* (total, nd) */
  const long long *pos; /* (n + 1) the prefix sums of the flags */
  const char *base;     /* t, any strides */
  nonzero_shape s;      /* t's shape: the coordinates of linear index i */
  __device__ void operator()(int64_t i, const int64_t *off) const {
    if (!is_set<DT>(base, off[0])) return;
    int64_t *o = out + pos[i] * s.nd, r = i;
    for (int d = s.nd - 1; d >= 0; d--) {
      o[d] = r % s.shape[d];
      r /= s.shape[d];
    }
  }
};

} /* namespace */

int lark_cuda_nonzero(const lark_tensor *t, lark_tensor **out) {
  const char *op = "nonzero";
  *out = NULL;
  lark_device dev = lark_tensor_device(t);
  int64_t shape[2] = {0, t->ndim};
  if (lark_numel(t) == 0) {
    *out = lark_empty(2, shape, LARK_INT64, &dev);
    return *out ? 0 : lark_error_code();
  }
  lark_tensor *pos = NULL;
  if (prefix_of_flags(op, t, &pos, &shape[0])) return lark_error_code();
  lark_tensor *o = lark_empty(2, shape, LARK_INT64, &dev);
  int rc = o ? 0 : lark_error_code();
  if (!rc && shape[0] > 0 && t->ndim > 0) {
    const lark_tensor *ts[1] = {t};
    rc = dispatch_flag(t->dtype, op, [&](auto dt) {
      nonzero_fn<decltype(dt)::value> fn;
      fn.out = (int64_t *)lark_data_ptr(o);
      fn.pos = (const long long *)lark_data_ptr(pos);
      fn.base = (const char *)lark_data_ptr(t);
      fn.s.nd = t->ndim;
      memset(fn.s.shape, 0, sizeof fn.s.shape);
      memcpy(fn.s.shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
      return launch_linear<1>(op, ts, fn);
    });
  }
  lark_tensor_release(pos);
  if (rc) {
    lark_tensor_release(o);
    return rc;
  }
  *out = o;
  return 0;
}

