/*
 * sort.cu: the CUDA kernels of core/ops/sort.c: sort and topk (one segmented sort), cumsum.
 *
 * Order. As in sort.c, every value becomes a 64-bit unsigned key whose integer order is the sort
 * order (floats by their bits with the sign folded, -0 as +0 and every NaN the largest key; int64
 * with its sign bit flipped; uint8 and bool as they are; all bits inverted for a descending sort),
 * and an item is the pair (key, position along the line). Items compare by key, then by position,
 * which is a strict total order: any correct sort puts them in one and the same order, the CPU's
 * stable merge sort included, so values and indices come out exactly as on the CPU. topk(k) is the
 * first k items of that order, the CPU's definition; unsorted (sorted = false) they are put back in
 * order of position, as the CPU does. The GPU always sorts whole lines (no selection): simpler, and
 * at the sizes of this project's models the sort is a small part of a step.
 *
 * The segmented sort. Lines are sorted independently, in a (lines, n) buffer of keys and positions:
 *   1. tiles of T items (T the power of two >= n, at most SORT_SLOTS) are sorted in shared memory by
 *      a bitonic network, several short lines per block (the network's stages up to T only ever
 *      compare items of one aligned T-chunk, with every chunk's direction taken ascending in the
 *      last stage), tails padded with items above every real one;
 *   2. lines longer than SORT_SLOTS are then merged pairwise, runs of SORT_SLOTS, 2 * SORT_SLOTS, ...:
 *      an item's place in the merged run is its place in its own run plus the number of items of
 *      the partner run before it (a binary search), so every item moves independently.
 *
 * cumsum keeps sort.c's precision: float32 and float64 accumulate in float64 (each running sum
 * rounded once to the output's dtype), integers and bools in wrapping int64. Lines of fewer than
 * CUMSUM_BLOCK_MIN elements, or many lines, get one thread each, which adds in the CPU's order (the
 * same bits as the CPU); a few long lines get a block each, scanning tiles in parallel, which adds
 * the same float64 numbers in another order (float64 results agree with the CPU's to rounding,
 * float32 ones nearly always exactly; integers exactly). The choice depends on the shape only.
 */
#include <limits.h>
#include <string.h>
#include <type_traits>

#include "cuda.h"

namespace {

/* ---- keys ----------------------------------------------------------------------------------- */

__device__ __forceinline__ unsigned long long key_of_double(double x) {
  if (x != x) return ~0ull;
  if (x == 0) x = 0; /* -0 ties with +0 */
  unsigned long long u = (unsigned long long)__double_as_longlong(x);
  return (u >> 63) ? ~u : u | (1ull << 63);
}

/* The key of the element at offset off of a tensor of dtype DT (uint8 for bool too). */
template <int DT>
__device__ __forceinline__ unsigned long long key_at(const char *base, int64_t off) {
  if constexpr (DT == LARK_FLOAT32) return key_of_double((double)((const float *)base)[off]);
  else if constexpr (DT == LARK_FLOAT64) return key_of_double(((const double *)base)[off]);
  else if constexpr (DT == LARK_INT64) return (unsigned long long)((const int64_t *)base)[off] ^ (1ull << 63);
  else return ((const uint8_t *)base)[off];
}

/* Whether item a = (ka, pa) comes before item b. */
__device__ __forceinline__ bool before(unsigned long long ka, long long pa, unsigned long long kb, long long pb) {
  return ka < kb || (ka == kb && pa < pb);
}

template <int DT>
struct load_fn {
  unsigned long long *keys; /* (lines, n) contiguous */
  long long *pos;           /* (lines, n) contiguous */
  const char *base;         /* t with dim moved last: (lines..., n), any strides */
  int64_t n;
  unsigned long long flip;  /* all ones for a descending sort */
  __device__ void operator()(const int64_t *off) const {
    keys[off[0]] = key_at<DT>(base, off[1]) ^ flip;
    pos[off[0]] = off[0] % n;
  }
};

/* ---- the segmented sort --------------------------------------------------------------------- */

#define SORT_SLOTS 2048 /* items a block sorts in shared memory: 2048 * 16 bytes = 32 KiB */

/* Sorts every tile of T items of each line of (keys, pos) (lines of n items, tiles_per_line tiles
 * each, ntiles in all) in place; a block holds S / T tiles (S a power of two, T <= S <= SORT_SLOTS). */
__global__ void block_sort(unsigned long long *keys /* (lines, n) */, long long *pos /* (lines, n) */, int64_t n,
                           int64_t tiles_per_line, int64_t ntiles, int T, int S) {
  __shared__ unsigned long long sk[SORT_SLOTS];
  __shared__ long long sp[SORT_SLOTS];
  const int per = S / T;
  const int64_t nblocks = (ntiles + per - 1) / per;
  for (int64_t blk = blockIdx.x; blk < nblocks; blk += gridDim.x) {
    for (int s = threadIdx.x; s < S; s += blockDim.x) {
      int64_t g = blk * per + s / T, line = g / tiles_per_line, i = (g % tiles_per_line) * T + s % T;
      if (g < ntiles && i < n) {
        sk[s] = keys[line * n + i];
        sp[s] = pos[line * n + i];
      } else { /* padding: after every real item */
        sk[s] = ~0ull;
        sp[s] = LLONG_MAX;
      }
    }
    __syncthreads();
    for (int k = 2; k <= T; k <<= 1) {
      for (int j = k >> 1; j > 0; j >>= 1) {
        for (int p = threadIdx.x; p < S / 2; p += blockDim.x) {
          int i = 2 * j * (p / j) + (p % j), m = i + j; /* the pairs (i, i + j), bit j of i clear */
          bool asc = k == T || (i & k) == 0;
          unsigned long long ka = sk[i], kb = sk[m];
          long long pa = sp[i], pb = sp[m];
          if (asc ? before(kb, pb, ka, pa) : before(ka, pa, kb, pb)) {
            sk[i] = kb;
            sk[m] = ka;
            sp[i] = pb;
            sp[m] = pa;
          }
        }
        __syncthreads();
      }
    }
    for (int s = threadIdx.x; s < S; s += blockDim.x) {
      int64_t g = blk * per + s / T, line = g / tiles_per_line, i = (g % tiles_per_line) * T + s % T;
      if (g < ntiles && i < n) {
        keys[line * n + i] = sk[s];
        pos[line * n + i] = sp[s];
      }
    }
    __syncthreads(); /* the next tile's loads must not overwrite what is being stored */
  }
}

/* One merge pass: the sorted runs of w items of each line of (ks, ps) merged pairwise into (kd, pd). */
__global__ void merge_pass(const unsigned long long *ks /* (lines, n) */, const long long *ps /* (lines, n) */,
                           unsigned long long *kd /* (lines, n) */, long long *pd /* (lines, n) */, int64_t total,
                           int64_t n, int64_t w) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    int64_t base = e / n * n, i = e - base, rs = i / w * w, partner = rs ^ w; /* w is a power of two */
    unsigned long long key = ks[e];
    long long p = ps[e];
    if (partner >= n) { /* the last run of an odd count: already in place */
      kd[e] = key;
      pd[e] = p;
      continue;
    }
    int64_t lo = partner, hi = partner + w < n ? partner + w : n;
    while (lo < hi) { /* the partner's items before this one */
      int64_t mid = lo + (hi - lo) / 2;
      if (before(ks[base + mid], ps[base + mid], key, p)) lo = mid + 1;
      else hi = mid;
    }
    int64_t at = (rs < partner ? rs : partner) + (i - rs) + (lo - partner);
    kd[base + at] = key;
    pd[base + at] = p;
  }
}

/* Blocks for a grid-stride loop over n items (the loops cover what a capped grid leaves). */
unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)(b < 1 ? 1 : b);
}

/* Sorts each line of n items of (k[0], p[0]) (lines of them), using (k[1], p[1]) as scratch; *where
 * = the index of the pair that holds the result. */
int sort_lines(const char *op, unsigned long long *const k[2], long long *const p[2], int64_t lines, int64_t n,
               int *where) {
  *where = 0;
  if (n <= 1 || lines == 0) return 0;
  int T = 1;
  while (T < n && T < SORT_SLOTS) T <<= 1;
  int64_t tiles_per_line = (n + T - 1) / T, ntiles = lines * tiles_per_line;
  int S = T;
  while (S < SORT_SLOTS && (int64_t)S < ntiles * T) S <<= 1; /* pack short lines into one block */
  int threads = S / 2 < 32 ? 32 : S / 2;                     /* S / 2 <= 1024 */
  int64_t nblocks = (ntiles + S / T - 1) / (S / T);
  block_sort<<<grid_for(nblocks, 1), threads>>>(k[0], p[0], n, tiles_per_line, ntiles, T, S);
  if (lark_cuda_check(cudaGetLastError(), op, "kernel launch failed")) return lark_error_code();
  int cur = 0;
  for (int64_t w = T; w < n; w *= 2) {
    merge_pass<<<grid_for(lines * n, 256), 256>>>(k[cur], p[cur], k[cur ^ 1], p[cur ^ 1], lines * n, n, w);
    if (lark_cuda_check(cudaGetLastError(), op, "kernel launch failed")) return lark_error_code();
    cur ^= 1;
  }
  *where = cur;
  return 0;
}

/* (kd, pd) (lines, k) = (pos, pos) of the first k items of each line of ps (lines, n): the picks,
 * to be sorted by position. */
__global__ void take_first(const long long *ps /* (lines, n) */, unsigned long long *kd /* (lines, k) */,
                           long long *pd /* (lines, k) */, int64_t total, int64_t n, int64_t k) {
  int64_t step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    long long p = ps[e / k * n + e % k];
    kd[e] = (unsigned long long)p;
    pd[e] = p;
  }
}

/* The picks to their outputs. */
template <typename T>
struct store_fn {
  T *values;            /* (lines..., k), any strides */
  int64_t *indices;     /* (lines..., k), any strides */
  const T *src;         /* t over (lines..., k) with no step along the line: each line's start */
  const long long *pos; /* the sorted positions over (lines..., k), lines L apart */
  int64_t sdim;         /* t's stride along dim */
  __device__ void operator()(const int64_t *off) const {
    long long p = pos[off[3]];
    values[off[0]] = src[off[2] + p * sdim];
    indices[off[1]] = p;
  }
};

template <int ES> struct bits_of;
template <> struct bits_of<1> { typedef uint8_t type; };
template <> struct bits_of<4> { typedef uint32_t type; };
template <> struct bits_of<8> { typedef uint64_t type; };

/* ---- cumsum --------------------------------------------------------------------------------- */

#define CUMSUM_THREADS 256
#define CUMSUM_ITEMS 8
#define CUMSUM_TILE (CUMSUM_THREADS * CUMSUM_ITEMS)
#define CUMSUM_BLOCK_MIN 1024     /* lines at least this long ... */
#define CUMSUM_BLOCK_LINES 16384  /* ... and fewer lines than this get a block each */

/* Accumulation: float64 for floats, wrapping int64 (as unsigned) for integers and bools. */
template <typename TA, typename TI>
__device__ __forceinline__ TA to_acc(TI x) {
  if constexpr (std::is_same<TA, double>::value) return (double)x;
  else return (unsigned long long)(long long)x;
}
template <typename TO, typename TA>
__device__ __forceinline__ TO from_acc(TA a) {
  if constexpr (std::is_same<TA, double>::value) return (TO)a;
  else return (TO)(long long)a;
}

template <typename TI, typename TA, typename TO>
struct cumsum_line_fn {
  TO *out;        /* over the lines (t's shape, 1 along dim): each line's start in out */
  const TI *src;  /* likewise in t */
  int64_t n, ss, os; /* the line's length, t's and out's strides along dim */
  __device__ void operator()(const int64_t *off) const {
    TA acc = 0;
    for (int64_t j = 0; j < n; j++) {
      acc += to_acc<TA>(src[off[1] + j * ss]);
      out[off[0] + j * os] = from_acc<TO>(acc);
    }
  }
};

/* The exclusive prefix of v over the block's CUMSUM_THREADS threads and their total. Every thread
 * calls it; it may be called again right after. */
template <typename TA>
__device__ TA block_exclusive(TA v, TA *total) {
  __shared__ TA warp_sums[CUMSUM_THREADS / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = CUMSUM_THREADS / 32;
  TA x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    TA y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    TA s = lane < nwarps ? warp_sums[lane] : (TA)0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      TA y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    if (lane < nwarps) warp_sums[lane] = s;
  }
  /* the exclusive prefix within the warp is the neighbour's inclusive one (x - v would round) */
  TA excl = __shfl_up_sync(0xffffffffu, x, 1);
  if (lane == 0) excl = 0;
  __syncthreads();
  TA prior = warp > 0 ? warp_sums[warp - 1] : (TA)0;
  *total = warp_sums[nwarps - 1];
  __syncthreads();
  return prior + excl;
}

/* Where each line starts: the dims of t other than dim, with t's and out's strides. */
struct line_geom {
  int nd;
  int64_t shape[LARK_MAX_DIMS], sstride[LARK_MAX_DIMS], ostride[LARK_MAX_DIMS];
};

/* One block per line: tiles of CUMSUM_TILE elements, each thread scanning CUMSUM_ITEMS neighbours. */
template <typename TI, typename TA, typename TO>
__global__ void cumsum_block(TO *out, const TI *src, int64_t lines, int64_t n, int64_t ss /* t's stride along dim */,
                             int64_t os /* out's */, line_geom g) {
  for (int64_t line = blockIdx.x; line < lines; line += gridDim.x) {
    int64_t sb = 0, ob = 0, r = line;
    for (int d = g.nd - 1; d >= 0; d--) {
      int64_t c = r % g.shape[d];
      r /= g.shape[d];
      sb += c * g.sstride[d];
      ob += c * g.ostride[d];
    }
    TA carry = 0;
    for (int64_t base = 0; base < n; base += CUMSUM_TILE) {
      int64_t i0 = base + (int64_t)threadIdx.x * CUMSUM_ITEMS;
      TA v[CUMSUM_ITEMS], s = 0, total;
#pragma unroll
      for (int q = 0; q < CUMSUM_ITEMS; q++) {
        if (i0 + q < n) s += to_acc<TA>(src[sb + (i0 + q) * ss]);
        v[q] = s; /* inclusive within the thread */
      }
      TA prior = carry + block_exclusive<TA>(s, &total);
#pragma unroll
      for (int q = 0; q < CUMSUM_ITEMS; q++)
        if (i0 + q < n) out[ob + (i0 + q) * os] = from_acc<TO>(prior + v[q]);
      carry += total;
    }
  }
}

template <typename TI, typename TA, typename TO>
int run_cumsum(lark_tensor *out, const lark_tensor *t, int dim) {
  const char *op = "cumsum";
  int nd = t->ndim;
  int64_t n = t->shape[dim], lines = lark_numel(t) / n;
  if (n >= CUMSUM_BLOCK_MIN && lines < CUMSUM_BLOCK_LINES) {
    if (lark_cuda_set_device(lark_tensor_device(out), op)) return lark_error_code();
    line_geom g;
    memset(&g, 0, sizeof g);
    for (int d = 0; d < nd; d++) {
      if (d == dim) continue;
      g.shape[g.nd] = t->shape[d];
      g.sstride[g.nd] = t->stride[d];
      g.ostride[g.nd] = out->stride[d];
      g.nd++;
    }
    unsigned blocks = (unsigned)(lines < 65535 ? lines : 65535);
    cumsum_block<TI, TA, TO><<<blocks, CUMSUM_THREADS>>>((TO *)lark_data_ptr(out), (const TI *)lark_data_ptr(t),
                                                         lines, n, t->stride[dim], out->stride[dim], g);
    return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  }
  int64_t ls[LARK_MAX_DIMS];
  memcpy(ls, t->shape, sizeof(int64_t) * (size_t)nd);
  ls[dim] = 1;
  lark_tensor *ol = lark_as_strided(out, nd, ls, out->stride, out->offset);
  lark_tensor *tl = ol ? lark_as_strided(t, nd, ls, t->stride, t->offset) : NULL;
  int rc = tl ? 0 : lark_error_code();
  if (!rc) {
    cumsum_line_fn<TI, TA, TO> fn;
    fn.out = (TO *)lark_data_ptr(out);
    fn.src = (const TI *)lark_data_ptr(t);
    fn.n = n;
    fn.ss = t->stride[dim];
    fn.os = out->stride[dim];
    const lark_tensor *ts[2] = {ol, tl};
    rc = lark_cuda_launch<2>(op, ts, fn);
  }
  lark_tensor_release(ol);
  lark_tensor_release(tl);
  return rc;
}

} /* namespace */

/* ---- topk and sort -------------------------------------------------------------------------- */

int lark_cuda_topk(const lark_tensor *t, int dim, int64_t k, bool desc, bool sorted, lark_tensor *values,
                   lark_tensor *indices) {
  const char *op = "sort"; /* topk too: the errors here are CUDA failures */
  int nd = t->ndim;
  int64_t n = t->shape[dim], numel = lark_numel(t);
  if (numel == 0 || k == 0) return 0;
  int64_t lines = numel / n;
  lark_device dev = lark_tensor_device(t);
  if (lark_cuda_set_device(dev, op)) return lark_error_code();

  /* views with dim moved last: (lines..., n) for t, (lines..., k) for the results */
  int perm[LARK_MAX_DIMS], q = 0;
  for (int d = 0; d < nd; d++)
    if (d != dim) perm[q++] = d;
  perm[q] = dim;
  lark_tensor *tp = lark_permute(t, nd, perm);
  lark_tensor *vp = tp ? lark_permute(values, nd, perm) : NULL;
  lark_tensor *ip = vp ? lark_permute(indices, nd, perm) : NULL;
  /* two (keys, positions) buffers of lines * n items: the sort's input and its scratch */
  int64_t total = lines * n;
  lark_tensor *buf[4] = {NULL, NULL, NULL, NULL};
  for (int b = 0; b < 4 && ip; b++)
    if (!(buf[b] = lark_empty(1, &total, LARK_INT64, &dev))) break;
  lark_tensor *kv = NULL, *tline = NULL, *pv = NULL;
  int rc = buf[3] ? 0 : lark_error_code();
  unsigned long long *keys[2] = {NULL, NULL};
  long long *poss[2] = {NULL, NULL};
  if (!rc) {
    for (int b = 0; b < 2; b++) {
      keys[b] = (unsigned long long *)lark_data_ptr(buf[2 * b]);
      poss[b] = (long long *)lark_data_ptr(buf[2 * b + 1]);
    }
    int64_t cst[LARK_MAX_DIMS], s = 1;
    for (int d = nd - 1; d >= 0; d--) {
      cst[d] = s;
      s *= tp->shape[d];
    }
    kv = lark_as_strided(buf[0], nd, tp->shape, cst, 0);
    rc = kv ? 0 : lark_error_code();
  }
  /* 1. keys and positions */
  if (!rc) {
    const lark_tensor *ts[2] = {kv, tp};
    unsigned long long flip = desc ? ~0ull : 0ull;
    auto load = [&](auto dt) {
      load_fn<decltype(dt)::value> fn;
      fn.keys = keys[0];
      fn.pos = poss[0];
      fn.base = (const char *)lark_data_ptr(t);
      fn.n = n;
      fn.flip = flip;
      return lark_cuda_launch<2>(op, ts, fn);
    };
    switch (t->dtype) {
      case LARK_FLOAT32: rc = load(std::integral_constant<int, LARK_FLOAT32>()); break;
      case LARK_FLOAT64: rc = load(std::integral_constant<int, LARK_FLOAT64>()); break;
      case LARK_INT64: rc = load(std::integral_constant<int, LARK_INT64>()); break;
      case LARK_UINT8:
      case LARK_BOOL: rc = load(std::integral_constant<int, LARK_UINT8>()); break;
      default: rc = lark_set_error(LARK_ERR_DTYPE, "%s: unsupported dtype %s", op, lark_dtype_name(t->dtype)); break;
    }
  }
  /* 2. sort each line; unsorted topk sorts its k picks again, by position */
  int where = 0;
  int64_t L = n; /* the distance between lines of the sorted positions */
  if (!rc) rc = sort_lines(op, keys, poss, lines, n, &where);
  if (!rc && !sorted) {
    unsigned long long *k2[2] = {keys[where ^ 1], keys[where]};
    long long *p2[2] = {poss[where ^ 1], poss[where]};
    take_first<<<grid_for(lines * k, 256), 256>>>(poss[where], k2[0], p2[0], lines * k, n, k);
    rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
    int w2 = 0;
    if (!rc) rc = sort_lines(op, k2, p2, lines, k, &w2);
    where = w2 == 0 ? where ^ 1 : where;
    L = k;
  }
  /* 3. values and indices */
  if (!rc) {
    int64_t ks[LARK_MAX_DIMS], lst[LARK_MAX_DIMS], pst[LARK_MAX_DIMS], s = 1;
    memcpy(ks, tp->shape, sizeof(int64_t) * (size_t)nd);
    ks[nd - 1] = k;
    memcpy(lst, tp->stride, sizeof(int64_t) * (size_t)nd);
    lst[nd - 1] = 0;
    for (int d = nd - 1; d >= 0; d--) {
      pst[d] = s;
      s *= d == nd - 1 ? L : tp->shape[d];
    }
    tline = lark_as_strided(t, nd, ks, lst, t->offset);
    pv = tline ? lark_as_strided(buf[2 * where + 1], nd, ks, pst, 0) : NULL;
    rc = pv ? 0 : lark_error_code();
  }
  if (!rc) {
    const lark_tensor *ts[4] = {vp, ip, tline, pv};
    int64_t sdim = t->stride[dim];
    const long long *sorted_pos = poss[where];
    auto store = [&](auto es) {
      typedef typename bits_of<decltype(es)::value>::type T;
      store_fn<T> fn;
      fn.values = (T *)lark_data_ptr(values);
      fn.indices = (int64_t *)lark_data_ptr(indices);
      fn.src = (const T *)lark_data_ptr(t);
      fn.pos = sorted_pos;
      fn.sdim = sdim;
      return lark_cuda_launch<4>(op, ts, fn);
    };
    switch (lark_dtype_size(t->dtype)) {
      case 1: rc = store(std::integral_constant<int, 1>()); break;
      case 4: rc = store(std::integral_constant<int, 4>()); break;
      default: rc = store(std::integral_constant<int, 8>()); break;
    }
  }
  lark_tensor_release(tp);
  lark_tensor_release(vp);
  lark_tensor_release(ip);
  for (int b = 0; b < 4; b++) lark_tensor_release(buf[b]);
  lark_tensor_release(kv);
  lark_tensor_release(tline);
  lark_tensor_release(pv);
  return rc;
}

/* ---- cumsum --------------------------------------------------------------------------------- */

int lark_cuda_cumsum(lark_tensor *out, const lark_tensor *t, int dim) {
  if (lark_numel(t) == 0) return 0;
  switch (t->dtype) {
    case LARK_FLOAT32: return run_cumsum<float, double, float>(out, t, dim);
    case LARK_FLOAT64: return run_cumsum<double, double, double>(out, t, dim);
    case LARK_INT64: return run_cumsum<int64_t, unsigned long long, int64_t>(out, t, dim);
    case LARK_UINT8:
    case LARK_BOOL: return run_cumsum<uint8_t, unsigned long long, int64_t>(out, t, dim);
    default: return lark_set_error(LARK_ERR_DTYPE, "cumsum: unsupported dtype %s", lark_dtype_name(t->dtype));
  }
}
