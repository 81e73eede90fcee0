/*
 * dwconv.cu: the depth-wise 2-D convolution on the GPU, float32 and float64, exact (plain FMAs, no
 * TF32): forward, input gradient and weight gradient. When the flags ask for TF32 or BF16 (the
 * user lowered lark.set_float32_matmul_precision), float32 goes to cuda/dwconv_tc.cu first. Contracts in core/backend.h (the dwconv_*
 * fields), formulas in core/ops/dwconv.h; core/ops/dwconv_device.c validates and calls these.
 *
 * Three kinds of kernel:
 *   - reference kernels (LARK_DWCONV_REFERENCE): one thread per result, every tap with a bounds
 *     test, int64 indices throughout. Kept forever as what the others are tested against.
 *   - general kernels, for strides and dilations other than 1: still one thread per output (or
 *     input) element, with the tap ranges clipped to the real input; the weight gradient is one
 *     block per (channel, tap) with a fixed-order tree reduction.
 *   - tiled kernels, for stride 1 and dilation 1 (every large kernel of RepLKNet and SLaK), built
 *     on one correlation engine (corr_engine):
 *         acc[r][x] += sum_{a, b} K[a][b] * S[oy0 + r + a][ox0 + x + b]
 *     over a source tile S and a "kernel" K that both sit in shared memory. Each thread owns a
 *     register micro-tile of RY x RX results (RX = 4 columns, RY = 1, 2 or 4 rows) and walks the
 *     source rows its results need; along a row it slides a window of RX + U - 1 source values
 *     over chunks of U kernel columns, loading only the U new values per chunk (one 16-byte load
 *     for U = 4), and for each of its RY result rows the chunk's U kernel values (one address for
 *     the whole warp: a broadcast). A chunk is then RY * RX * U FMAs per 16 bytes of per-thread
 *     shared-memory traffic: 64 at RY = 4, 32 at RY = 2, against the 16 that keep a multiprocessor's
 *     shared memory (128 bytes a clock) in step with its FMA pipes (128 a clock). Kernels 3, 5 and 7 wide
 *     run in one chunk of exactly their width (no zero columns).
 *     K carries RY - 1 zero rows above and below, so that a result row whose kernel row falls
 *     outside K adds zeros instead of needing a branch, and its columns are padded with zeros to a
 *     multiple of U. Source rows and column chunks that only meet the map's zero padding are
 *     skipped when they do so for every lane of the warp (the loop bounds are the union over the
 *     warp, so that the kernel loads stay broadcasts). That saves work on large maps and at tile
 *     edges, but little where a warp's outputs span most of the kernel: a 31x31 kernel on a 32x32
 *     map still runs about all of its taps, where 42% of them read padding. Skipping those too
 *     would take splitting the kernel rows over the lanes of a warp (MegEngine's large-filter
 *     kernel does that), a later step.
 *       forward:        S = the input tile with its halo, K = the weight, results = outputs;
 *       input gradient: the forward pass over grad_out with the kernel turned 180 degrees and the
 *                       complementary padding (kh - 1 - pad_top, kw - 1 - pad_left);
 *       weight gradient: S = the input tile, K = a grad_out tile, results = the taps: per channel
 *                       a reduction over N*Ho*Wo, split over blocks, each block summing its share
 *                       in registers and across its thread slices in a fixed order, the blocks'
 *                       partial sums then added in a fixed order by a second kernel. No atomics:
 *                       the same inputs give the same bits on every run.
 *
 * A non-finite input next to a zero-padded kernel position (the RY - 1 zero rows, the columns up
 * to a multiple of U) spreads NaN to the outputs of that register tile, as the CPU's fast path
 * does; the reference kernels do not.
 *
 * Indices: plane bases are int64; inside a plane, ints (the tiled path runs only when every size
 * and padding is below 2^28; otherwise the general kernels run, which are int64 throughout).
 * Every launch is checked; grids are one-dimensional with a grid-stride loop over work items, so
 * no launch exceeds gridDim.x's limit whatever the shape.
 */
#include <limits.h>

#include "cuda.h"

namespace {

/* ---- constants and small helpers ------------------------------------------------------------ */

constexpr int RX = 4;                       /* result columns per thread: one 16-byte vector of floats */
constexpr int MAX_THREADS = 256;            /* threads per block of the tiled kernels */
constexpr int MAX_Z = 64;                   /* CUDA's limit on blockDim.z (planes or slices per block) */
constexpr size_t SOFT_SMEM = 48 * 1024;     /* shared memory a block grows into without opting in */
constexpr int TILED_LIMIT = 1 << 28;        /* sizes and paddings the int arithmetic of the tiled path takes */

template <typename T> __host__ __device__ constexpr int vec_width() { return 16 / (int)sizeof(T); }
__host__ __device__ constexpr int round_up(int a, int m) { return (a + m - 1) / m * m; }
__host__ __device__ constexpr int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int ceil_div(int a, int b) { return (a + b - 1) / b; }

__device__ __forceinline__ float fmadd(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fmadd(double a, double b, double c) { return fma(a, b, c); }

/* NV consecutive elements from p (16-byte aligned) into out[0 .. NV), in 16-byte loads. */
template <typename T, int NV>
__device__ __forceinline__ void load_vec(const T *p, T *out) {
  static_assert(NV % vec_width<T>() == 0, "whole vectors only");
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int k = 0; k < NV / 4; k++) {
      float4 v = reinterpret_cast<const float4 *>(p)[k];
      out[4 * k] = v.x, out[4 * k + 1] = v.y, out[4 * k + 2] = v.z, out[4 * k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < NV / 2; k++) {
      double2 v = reinterpret_cast<const double2 *>(p)[k];
      out[2 * k] = v.x, out[2 * k + 1] = v.y;
    }
  }
}

/* [lo, hi) becomes the union of the ranges of the lanes of the calling thread's warp (an empty
 * range adds nothing). Loop bounds that are the same across the warp keep the kernel loads
 * broadcasts; a lane whose own range is smaller then computes on zeros, which is harmless. Every
 * thread of the block must call it (the mask names every lane the warp has, tid being the thread's
 * linear index in a block of nthreads). */
__device__ __forceinline__ void warp_union(int &lo, int &hi, int tid, int nthreads) {
  const int lanes = nthreads - (tid & ~31);
  const unsigned mask = lanes >= 32 ? 0xffffffffu : (1u << lanes) - 1u;
  bool empty = hi <= lo;
  lo = __reduce_min_sync(mask, empty ? INT_MAX : lo);
  hi = __reduce_max_sync(mask, empty ? INT_MIN : hi);
}

/* The first chunk start (a multiple of U, >= 0) whose columns [ox0 + jb, ox0 + jb + RX + U - 1)
 * reach column vc0. */
template <int U>
__device__ __forceinline__ int first_chunk(int vc0, int ox0) {
  int lo = vc0 - ox0 - (RX + U - 2);
  return lo <= 0 ? 0 : (lo + U - 1) / U * U;
}

/* ---- the correlation engine ----------------------------------------------------------------- */

/* acc[r][x] += sum over t in [t0, t1) and chunks jb in [jb0, jb1) (step U) of
 *     sum_{jj < U} kp[(t - r + RY - 1) * ldk + jb + jj] * sp[(oy0 + t) * lds + ox0 + jb + jj + x]
 * sp: the source at this slice's origin (shared memory, row stride lds, a multiple of 4 elements);
 * kp: the kernel, whose row RY - 1 is kernel row 0 (RY - 1 zero rows above and below it), row
 * stride ldk (a multiple of 4). ox0 is a multiple of RX and jb of U (or jb = 0 when SINGLE, U
 * being then the whole kernel width), so every vector load is aligned. */
template <typename T, int RY, int U, bool SINGLE>
__device__ __forceinline__ void corr_engine(const T *__restrict__ sp, int lds, const T *__restrict__ kp, int ldk,
                                            int oy0, int ox0, int t0, int t1, int jb0, int jb1, T (&acc)[RY][RX]) {
  static_assert(SINGLE || U % 4 == 0, "chunked kernels need aligned chunks");
  constexpr int VW = vec_width<T>();
  constexpr int NB = round_up(RX + U - 1, VW); /* source values per chunk */
  constexpr int NW = round_up(U, VW);          /* kernel values per chunk and row */
  constexpr int KEEP = NB - U;                  /* values one chunk leaves to the next */
  static_assert(SINGLE || KEEP % VW == 0, "the next chunk's new values must be whole vectors");
  for (int t = t0; t < t1 && jb0 < jb1; t++) {
    const T *srow = sp + (oy0 + t) * lds + ox0;
    const T *krow = kp + (t + RY - 1) * ldk;
    T xb[NB];
    load_vec<T, NB>(srow + jb0, xb);
    for (int jb = jb0; jb < jb1; jb += U) {
      if constexpr (!SINGLE) {
        if (jb != jb0) { /* slide: keep the overlap, load only the U new values */
#pragma unroll
          for (int k = 0; k < KEEP; k++) xb[k] = xb[k + U];
          load_vec<T, U>(srow + jb + KEEP, xb + KEEP);
        }
      }
#pragma unroll
      for (int r = 0; r < RY; r++) {
        T wv[NW];
        load_vec<T, NW>(krow - r * ldk + jb, wv);
#pragma unroll
        for (int jj = 0; jj < U; jj++)
#pragma unroll
          for (int x = 0; x < RX; x++) acc[r][x] = fmadd(wv[jj], xb[x + jj], acc[r][x]);
      }
    }
  }
}

/* Copies rows x cols elements into shared memory, one row at a time: f(row, col0, step) stores
 * the columns col0, col0 + step, ... of a row. Whole warps take one row each (coalesced loads);
 * a block that is not a whole number of warps has every thread walk every row. */
template <typename F>
__device__ __forceinline__ void for_rows(int rows, int tid, int nthreads, F f) {
  if ((nthreads & 31) == 0) {
    for (int rr = tid >> 5; rr < rows; rr += nthreads >> 5) f(rr, tid & 31, 32);
  } else {
    for (int rr = 0; rr < rows; rr++) f(rr, tid, nthreads);
  }
}

/* ---- tiled forward (and input gradient) ----------------------------------------------------- */

template <typename T>
struct corr_args {
  const T *src;      /* (n, c, hs, ws): the input, or grad_out for the input gradient */
  const T *w;        /* (c, kh, kw) */
  const T *bias;     /* (c) or NULL */
  T *out;            /* (n, c, ho, wo) */
  int64_t n, c;
  int hs, ws, ho, wo, kh, kw;
  int pt, pl;        /* out (oy, ox) reads src (oy - pt + i, ox - pl + j); either sign */
  int flip;          /* use w[kh-1-i][kw-1-j] (the input gradient) */
  int accumulate;    /* out += result */
  int th, tw;        /* output tile: blockDim.y * RY rows, blockDim.x * RX columns */
  int tiles_h, tiles_w;
  int64_t ngroups;   /* batch groups of blockDim.z planes (one channel, consecutive batch elements) */
  int64_t items;     /* c * ngroups * tiles_h * tiles_w */
  int ldk;           /* kernel columns in shared memory: kw rounded up to 4, zero-padded */
  int jend;          /* chunk starts below this: ldk, or U when SINGLE */
  int sr, lds;       /* source tile rows (th + kh - 1) and row stride (a multiple of 4) */
};

/* One block: blockDim.z planes of one channel, one output tile of each. The kernel (shared by the
 * planes) and the source tiles with their halo are loaded into shared memory with zeros outside
 * the map, then every thread runs the engine on its RY x RX outputs. */
template <typename T, int RY, int U, bool SINGLE>
__global__ void __launch_bounds__(MAX_THREADS) corr_tiled_kernel(const corr_args<T> a) {
  extern __shared__ float4 smem_f4[]; /* float4: 16-byte alignment for the vector loads */
  T *kz = reinterpret_cast<T *>(smem_f4);
  const int kzr = a.kh + 2 * (RY - 1);
  T *sx = kz + round_up(kzr * a.ldk, 4);
  const int pz = blockDim.z;
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  const int ox0 = threadIdx.x * RX, oy0 = threadIdx.y * RY, z = threadIdx.z;
  for (int64_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    int64_t rest = item;
    const int tj = (int)(rest % a.tiles_w);
    rest /= a.tiles_w;
    const int ti = (int)(rest % a.tiles_h);
    rest /= a.tiles_h;
    const int64_t grp = rest % a.ngroups, ch = rest / a.ngroups;
    const int toy = ti * a.th, tox = tj * a.tw;     /* the tile's first output */
    const int sy0 = toy - a.pt, sx0 = tox - a.pl;   /* its source tile's first element */

    /* the kernel, RY - 1 zero rows above and below, zero columns up to ldk */
    const T *wc = a.w + ch * (int64_t)a.kh * a.kw;
    for (int idx = tid; idx < kzr * a.ldk; idx += nthreads) {
      int row = idx / a.ldk, col = idx - row * a.ldk, i = row - (RY - 1);
      T v = T(0);
      if (i >= 0 && i < a.kh && col < a.kw)
        v = a.flip ? wc[(a.kh - 1 - i) * a.kw + (a.kw - 1 - col)] : wc[i * a.kw + col];
      kz[idx] = v;
    }
    /* the source tiles, zero outside the map (and for batch elements past n) */
    for_rows(pz * a.sr, tid, nthreads, [&](int rr, int col0, int step) {
      const int zz = rr / a.sr, row = rr - zz * a.sr, gy = sy0 + row;
      const int64_t nb = grp * pz + zz;
      T *dst = sx + rr * a.lds;
      const bool rowok = nb < a.n && gy >= 0 && gy < a.hs;
      const T *srow = rowok ? a.src + ((nb * a.c + ch) * a.hs + gy) * (int64_t)a.ws : a.src;
      for (int col = col0; col < a.lds; col += step) {
        const int gx = sx0 + col;
        dst[col] = rowok && gx >= 0 && gx < a.ws ? srow[gx] : T(0);
      }
    });
    __syncthreads();

    const int64_t nb = grp * pz + z;
    T acc[RY][RX];
#pragma unroll
    for (int r = 0; r < RY; r++)
#pragma unroll
      for (int x = 0; x < RX; x++) acc[r][x] = T(0);
    {
      /* rows and columns of the tile that hold real input: [vr0, vr1) x [vc0, vc1) */
      const int vr0 = max(0, -sy0), vr1 = min(a.sr, a.hs - sy0);
      const int vc0 = max(0, -sx0), vc1 = min(a.lds, a.ws - sx0);
      int t0 = max(0, vr0 - oy0), t1 = min(RY + a.kh - 1, vr1 - oy0);
      if (nb >= a.n) t1 = t0;
      int jb0 = first_chunk<U>(vc0, ox0), jb1 = min(a.jend, vc1 - ox0);
      warp_union(t0, t1, tid, nthreads);
      warp_union(jb0, jb1, tid, nthreads);
      corr_engine<T, RY, U, SINGLE>(sx + z * a.sr * a.lds, a.lds, kz, a.ldk, oy0, ox0, t0, t1, jb0, jb1, acc);
    }
    if (nb < a.n) {
      const T bv = a.bias ? a.bias[ch] : T(0);
      T *op = a.out + (nb * a.c + ch) * (int64_t)a.ho * a.wo;
#pragma unroll
      for (int r = 0; r < RY; r++) {
        const int oy = toy + oy0 + r;
        if (oy >= a.ho) break;
#pragma unroll
        for (int x = 0; x < RX; x++) {
          const int ox = tox + ox0 + x;
          if (ox < a.wo) {
            T *q = op + (int64_t)oy * a.wo + ox;
            const T v = acc[r][x] + bv;
            *q = a.accumulate ? *q + v : v;
          }
        }
      }
    }
    __syncthreads(); /* before the next item overwrites shared memory */
  }
}

/* ---- tiled weight gradient ------------------------------------------------------------------ */

template <typename T>
struct wgrad_args {
  const T *x;        /* input (n, c, h, w) */
  const T *gy;       /* grad_out (n, c, ho, wo) */
  T *out;            /* splits == 1: grad_w (c, kh, kw); else partial sums (c, splits, kh, kw) */
  int64_t n, c;
  int h, w, ho, wo, kh, kw, pt, pl;
  int accumulate;    /* splits == 1: grad_w += result */
  int tth, ttw;      /* tap tile: blockDim.y * RY rows, blockDim.x * RX columns */
  int ttiles_h, ttiles_w;
  int gr, gc;        /* thread slices (blockDim.z = gr * gc): bands of the grad_out tile */
  int gth_s, gtw_s;  /* grad_out rows and columns per band (gtw_s a multiple of 4; gr == 1 unless RY == 1) */
  int gtiles_h, gtiles_w; /* grad_out tiles of (gr * gth_s) x (gc * gtw_s) per plane */
  int splits;        /* blocks sharing one channel's reduction */
  int64_t per_channel;    /* n * gtiles_h * gtiles_w grad_out tiles per channel */
  int64_t items;          /* c * ttiles_h * ttiles_w * splits */
  int ldk;           /* grad_out tile row stride in shared memory (gc * gtw_s) */
  int sr, lds;       /* input tile rows (tth + gr * gth_s - 1) and row stride (a multiple of 4) */
};

/* One block: one channel, one tap tile, one share (split) of the channel's grad_out tiles. For
 * each grad_out tile of the share, the tile (the engine's kernel) and the input under it with the
 * taps' halo (the engine's source) go to shared memory; slice z of the threads takes band z of the
 * grad_out tile, so the slices share both tiles. The slices' sums are added in slice order at the
 * end, and written to grad_w (one split) or to the split's partial sums. */
template <typename T, int RY>
__global__ void __launch_bounds__(MAX_THREADS) wgrad_tiled_kernel(const wgrad_args<T> a) {
  constexpr int U = 4;
  extern __shared__ float4 smem_f4[];
  T *base = reinterpret_cast<T *>(smem_f4);
  const int gth = a.gr * a.gth_s, gtw = a.gc * a.gtw_s;
  const int kzr = gth + 2 * (RY - 1);
  T *kz = base;
  T *sx = base + round_up(kzr * a.ldk, 4);
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  const int ox0 = threadIdx.x * RX, oy0 = threadIdx.y * RY, z = threadIdx.z;
  const int zr = z / a.gc, zc = z - (z / a.gc) * a.gc;
  const int srow0 = zr * a.gth_s, scol0 = zc * a.gtw_s; /* this slice's band */
  const int64_t gtiles = (int64_t)a.gtiles_h * a.gtiles_w;
  for (int64_t item = blockIdx.x; item < a.items; item += gridDim.x) {
    int64_t rest = item;
    const int split = (int)(rest % a.splits);
    rest /= a.splits;
    const int ttj = (int)(rest % a.ttiles_w);
    rest /= a.ttiles_w;
    const int tti = (int)(rest % a.ttiles_h);
    const int64_t ch = rest / a.ttiles_h;
    const int ti0 = tti * a.tth, tj0 = ttj * a.ttw; /* the tap tile's first tap */
    const int64_t q0 = a.per_channel * split / a.splits, q1 = a.per_channel * (split + 1) / a.splits;

    T acc[RY][RX];
#pragma unroll
    for (int r = 0; r < RY; r++)
#pragma unroll
      for (int x = 0; x < RX; x++) acc[r][x] = T(0);

    for (int64_t q = q0; q < q1; q++) {
      const int gj = (int)(q % a.gtiles_w);
      const int gi = (int)((q / a.gtiles_w) % a.gtiles_h);
      const int64_t nb = q / gtiles;
      const int goy = gi * gth, gox = gj * gtw;                 /* the grad_out tile's first element */
      const int xoy = goy - a.pt + ti0, xox = gox - a.pl + tj0; /* the input tile's */
      const T *gp = a.gy + (nb * a.c + ch) * (int64_t)a.ho * a.wo;
      const T *xp = a.x + (nb * a.c + ch) * (int64_t)a.h * a.w;
      /* the grad_out tile, RY - 1 zero rows above and below, zeros past the map */
      for_rows(kzr, tid, nthreads, [&](int rr, int col0, int step) {
        const int ar = rr - (RY - 1), gyr = goy + ar;
        const bool rowok = ar >= 0 && ar < gth && gyr < a.ho;
        T *dst = kz + rr * a.ldk;
        for (int col = col0; col < a.ldk; col += step) {
          const int gx = gox + col;
          dst[col] = rowok && gx < a.wo ? gp[(int64_t)gyr * a.wo + gx] : T(0);
        }
      });
      /* the input under it, with the taps' halo, zeros outside the map */
      for_rows(a.sr, tid, nthreads, [&](int row, int col0, int step) {
        const int iy = xoy + row;
        const bool rowok = iy >= 0 && iy < a.h;
        T *dst = sx + row * a.lds;
        for (int col = col0; col < a.lds; col += step) {
          const int ix = xox + col;
          dst[col] = rowok && ix >= 0 && ix < a.w ? xp[(int64_t)iy * a.w + ix] : T(0);
        }
      });
      __syncthreads();
      {
        /* real input rows and columns, relative to this slice's band */
        const int vr0 = max(0, -xoy) - srow0, vr1 = min(a.sr, a.h - xoy) - srow0;
        const int vc0 = max(0, -xox) - scol0, vc1 = min(a.lds, a.w - xox) - scol0;
        /* real grad_out rows and columns of the band */
        const int gvr = min(a.gth_s, a.ho - goy - srow0), gvc = min(a.gtw_s, a.wo - gox - scol0);
        int t0 = max(0, vr0 - oy0), t1 = min(min(RY + a.gth_s - 1, vr1 - oy0), gvr + RY - 1);
        if (gvr <= 0 || gvc <= 0) t1 = t0; /* a band past the edge of grad_out */
        int jb0 = first_chunk<U>(vc0, ox0), jb1 = min(min(a.gtw_s, vc1 - ox0), gvc);
        warp_union(t0, t1, tid, nthreads);
        warp_union(jb0, jb1, tid, nthreads);
        corr_engine<T, RY, U, false>(sx + srow0 * a.lds + scol0, a.lds, kz + srow0 * a.ldk + scol0, a.ldk, oy0, ox0,
                                     t0, t1, jb0, jb1, acc);
      }
      __syncthreads();
    }

    /* the slices' sums, added in slice order (the host made shared memory big enough) */
    const int taps = a.tth * a.ttw;
    T *red = base;
#pragma unroll
    for (int r = 0; r < RY; r++)
#pragma unroll
      for (int x = 0; x < RX; x++) red[z * taps + (oy0 + r) * a.ttw + ox0 + x] = acc[r][x];
    __syncthreads();
    for (int idx = tid; idx < taps; idx += nthreads) {
      T s = T(0);
      for (int zz = 0; zz < (int)blockDim.z; zz++) s += red[zz * taps + idx];
      const int i = ti0 + idx / a.ttw, j = tj0 + idx % a.ttw;
      if (i < a.kh && j < a.kw) {
        if (a.splits == 1) {
          T *d = a.out + (ch * a.kh + i) * a.kw + j;
          *d = a.accumulate ? *d + s : s;
        } else {
          a.out[((ch * a.splits + split) * a.kh + i) * a.kw + j] = s;
        }
      }
    }
    __syncthreads();
  }
}

/* grad_w (c, taps) (=, or += when accumulate) the sum of partial (c, splits, taps) over the
 * splits, in split order. */
template <typename T>
__global__ void wgrad_sum_splits_kernel(const T *__restrict__ partial, T *__restrict__ gw, int64_t c, int splits,
                                        int64_t taps, int accumulate) {
  const int64_t total = c * taps, step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t ch = idx / taps, tap = idx - ch * taps;
    const T *p = partial + ch * splits * taps + tap;
    T s = T(0);
    for (int k = 0; k < splits; k++) s += p[k * taps];
    gw[idx] = accumulate ? gw[idx] + s : s;
  }
}

/* ---- reference and general kernels (any stride, dilation, padding; int64) ------------------- */

template <typename T>
struct plain_args {
  const T *input;    /* (n, c, h, w) or NULL */
  const T *grad_out; /* (n, c, ho, wo) or NULL */
  const T *weight;   /* (c, kh, kw) or NULL */
  const T *bias;     /* (c) or NULL */
  T *out;            /* the pass's result */
  int64_t n, c, h, w, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw;
  int accumulate;
};

/* out (n, c, ho, wo): every tap, each with a bounds test. */
template <typename T>
__global__ void ref_forward_kernel(const plain_args<T> a) {
  const int64_t total = a.n * a.c * a.ho * a.wo, step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t ox = idx % a.wo, oy = idx / a.wo % a.ho, ch = idx / (a.wo * a.ho) % a.c, nb = idx / (a.wo * a.ho * a.c);
    T s = a.bias ? a.bias[ch] : T(0);
    for (int64_t i = 0; i < a.kh; i++)
      for (int64_t j = 0; j < a.kw; j++) {
        const int64_t iy = oy * a.sh - a.pt + i * a.dh, ix = ox * a.sw - a.pl + j * a.dw;
        if (iy >= 0 && iy < a.h && ix >= 0 && ix < a.w)
          s += a.weight[(ch * a.kh + i) * a.kw + j] * a.input[((nb * a.c + ch) * a.h + iy) * a.w + ix];
      }
    a.out[idx] = a.accumulate ? a.out[idx] + s : s;
  }
}

/* The taps [k0, k1) of one axis whose input position base + k * dil lies in [0, size). */
__device__ __forceinline__ void tap_range(int64_t base, int64_t dil, int64_t size, int64_t k, int64_t *k0,
                                          int64_t *k1) {
  *k0 = base >= 0 ? 0 : (-base + dil - 1) / dil;
  *k1 = base >= size ? 0 : (size - 1 - base) / dil + 1;
  if (*k1 > k) *k1 = k;
}

/* out (n, c, ho, wo), the general path: only the taps inside the map. */
template <typename T>
__global__ void gen_forward_kernel(const plain_args<T> a) {
  const int64_t total = a.n * a.c * a.ho * a.wo, step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t ox = idx % a.wo, oy = idx / a.wo % a.ho, ch = idx / (a.wo * a.ho) % a.c, nb = idx / (a.wo * a.ho * a.c);
    const int64_t by = oy * a.sh - a.pt, bx = ox * a.sw - a.pl;
    int64_t i0, i1, j0, j1;
    tap_range(by, a.dh, a.h, a.kh, &i0, &i1);
    tap_range(bx, a.dw, a.w, a.kw, &j0, &j1);
    const T *wc = a.weight + ch * a.kh * a.kw;
    const T *xp = a.input + (nb * a.c + ch) * a.h * a.w;
    T s = T(0);
    for (int64_t i = i0; i < i1; i++) {
      const T *xr = xp + (by + i * a.dh) * a.w + bx;
      for (int64_t j = j0; j < j1; j++) s = fmadd(wc[i * a.kw + j], xr[j * a.dw], s);
    }
    if (a.bias) s += a.bias[ch];
    a.out[idx] = a.accumulate ? a.out[idx] + s : s;
  }
}

/* out (n, c, h, w) = the input gradient, gathered: each input element sums the (tap, output)
 * pairs that read it, every tap tested. */
template <typename T>
__global__ void ref_backward_input_kernel(const plain_args<T> a) {
  const int64_t total = a.n * a.c * a.h * a.w, step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t x = idx % a.w, y = idx / a.w % a.h, ch = idx / (a.w * a.h) % a.c, nb = idx / (a.w * a.h * a.c);
    T s = T(0);
    for (int64_t i = 0; i < a.kh; i++)
      for (int64_t j = 0; j < a.kw; j++) {
        const int64_t ny = y + a.pt - i * a.dh, nx = x + a.pl - j * a.dw; /* = oy * sh, ox * sw */
        if (ny < 0 || nx < 0 || ny % a.sh || nx % a.sw) continue;
        const int64_t oy = ny / a.sh, ox = nx / a.sw;
        if (oy < a.ho && ox < a.wo)
          s += a.weight[(ch * a.kh + i) * a.kw + j] * a.grad_out[((nb * a.c + ch) * a.ho + oy) * a.wo + ox];
      }
    a.out[idx] = a.accumulate ? a.out[idx] + s : s;
  }
}

/* The same, the general path: the kernel rows and columns that can reach an output are found
 * first, then only the ones on the stride's grid are visited. */
template <typename T>
__global__ void gen_backward_input_kernel(const plain_args<T> a) {
  const int64_t total = a.n * a.c * a.h * a.w, step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t x = idx % a.w, y = idx / a.w % a.h, ch = idx / (a.w * a.h) % a.c, nb = idx / (a.w * a.h * a.c);
    const T *wc = a.weight + ch * a.kh * a.kw;
    const T *gp = a.grad_out + (nb * a.c + ch) * a.ho * a.wo;
    /* tap i reaches output row (y + pt - i*dh) / sh: needs 0 <= y + pt - i*dh <= (ho-1)*sh */
    const int64_t ry = y + a.pt, rx = x + a.pl;
    int64_t i0 = ry - (a.ho - 1) * a.sh <= 0 ? 0 : (ry - (a.ho - 1) * a.sh + a.dh - 1) / a.dh;
    int64_t i1 = ry < 0 ? 0 : ry / a.dh + 1;
    int64_t j0 = rx - (a.wo - 1) * a.sw <= 0 ? 0 : (rx - (a.wo - 1) * a.sw + a.dw - 1) / a.dw;
    int64_t j1 = rx < 0 ? 0 : rx / a.dw + 1;
    if (i1 > a.kh) i1 = a.kh;
    if (j1 > a.kw) j1 = a.kw;
    T s = T(0);
    for (int64_t i = i0; i < i1; i++) {
      const int64_t ny = ry - i * a.dh;
      if (ny % a.sh) continue;
      const T *gr = gp + (ny / a.sh) * a.wo;
      for (int64_t j = j0; j < j1; j++) {
        const int64_t nx = rx - j * a.dw;
        if (nx % a.sw == 0) s = fmadd(wc[i * a.kw + j], gr[nx / a.sw], s);
      }
    }
    a.out[idx] = a.accumulate ? a.out[idx] + s : s;
  }
}

/* out (c, kh, kw): one thread per tap, a serial sum over (n, oy, ox) in that order. */
template <typename T>
__global__ void ref_backward_weight_kernel(const plain_args<T> a) {
  const int64_t total = a.c * a.kh * a.kw, step = (int64_t)blockDim.x * gridDim.x;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t j = idx % a.kw, i = idx / a.kw % a.kh, ch = idx / (a.kw * a.kh);
    T s = T(0);
    for (int64_t nb = 0; nb < a.n; nb++)
      for (int64_t oy = 0; oy < a.ho; oy++)
        for (int64_t ox = 0; ox < a.wo; ox++) {
          const int64_t iy = oy * a.sh - a.pt + i * a.dh, ix = ox * a.sw - a.pl + j * a.dw;
          if (iy >= 0 && iy < a.h && ix >= 0 && ix < a.w)
            s += a.grad_out[((nb * a.c + ch) * a.ho + oy) * a.wo + ox] * a.input[((nb * a.c + ch) * a.h + iy) * a.w + ix];
        }
    a.out[idx] = a.accumulate ? a.out[idx] + s : s;
  }
}

constexpr int GEN_WGRAD_THREADS = 256;

/* out (c, kh, kw), the general path: one block per tap; its threads split the outputs whose
 * input position is inside the map (fixed ranges), then a fixed tree in shared memory adds the
 * threads' sums. */
template <typename T>
__global__ void __launch_bounds__(GEN_WGRAD_THREADS) gen_backward_weight_kernel(const plain_args<T> a) {
  __shared__ T part[GEN_WGRAD_THREADS];
  const int64_t total = a.c * a.kh * a.kw;
  for (int64_t item = blockIdx.x; item < total; item += gridDim.x) {
    const int64_t j = item % a.kw, i = item / a.kw % a.kh, ch = item / (a.kw * a.kh);
    /* outputs whose tap (i, j) lands inside the map: oy in [oy0, oy1), ox in [ox0, ox1) */
    const int64_t by = i * a.dh - a.pt, bx = j * a.dw - a.pl; /* iy = oy * sh + by */
    int64_t oy0, oy1, ox0, ox1;
    tap_range(by, a.sh, a.h, a.ho, &oy0, &oy1);
    tap_range(bx, a.sw, a.w, a.wo, &ox0, &ox1);
    const int64_t nyy = oy1 > oy0 ? oy1 - oy0 : 0, nxx = ox1 > ox0 ? ox1 - ox0 : 0;
    const int64_t count = a.n * nyy * nxx;
    T s = T(0);
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int64_t ox = ox0 + e % nxx, oy = oy0 + e / nxx % nyy, nb = e / (nxx * nyy);
      const int64_t plane = nb * a.c + ch;
      s = fmadd(a.grad_out[(plane * a.ho + oy) * a.wo + ox], a.input[(plane * a.h + oy * a.sh + by) * a.w + ox * a.sw + bx], s);
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
      if ((int)threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) a.out[item] = a.accumulate ? a.out[item] + part[0] : part[0];
    __syncthreads();
  }
}

/* ---- host side: configurations and launches ------------------------------------------------- */

struct device_info {
  int sms;          /* multiprocessors */
  int smem_optin;   /* the most dynamic shared memory a block may opt into */
};

static int query_device(const char *op, device_info *d) { return lark_cuda_device_limits(op, &d->sms, &d->smem_optin); }

/* Grid of a grid-stride loop over `items` blocks' worth of work. */
static unsigned blocks_for(int64_t items) { return (unsigned)(items < INT_MAX ? (items > 0 ? items : 1) : INT_MAX); }

/* Result rows per thread for a kernel of kh rows: more rows share each source load, but RY - 1
 * zero rows are multiplied per kernel row walk, and small maps want more threads. */
template <typename T>
static int rows_per_thread(int kh, int64_t map_elems) {
  int ry = kh >= 24 ? 4 : kh >= 4 ? 2 : 1;
  if (sizeof(T) == 8 && ry > 2) ry = 2; /* float64 keeps two variants */
  if (map_elems <= 256 && ry > 2) ry = 2;
  return ry;
}

/* The row stride (>= need, a multiple of 4) that spreads one quarter-warp's 16-byte source loads
 * over distinct bank groups, for threads laid out tx wide with ry rows each. */
template <typename T>
static int padded_stride(int need, int tx, int ry) {
  need = round_up(need, 4);
  if (tx >= 8) return need; /* a quarter-warp reads one row, 8 consecutive vectors */
  int best = need, best_score = INT_MAX;
  for (int pad = 0; pad < 32; pad += 4) {
    int lds = need + pad, score = 0;
    for (int q = 0; q < 4; q++) { /* quarter-warps of the first warp */
      int seen[8] = {0};
      for (int l = 8 * q; l < 8 * q + 8; l++) {
        long addr = (long)(l / tx) * ry * lds + (l % tx) * RX; /* elements */
        seen[(addr * (long)sizeof(T) / 16) % 8]++;
      }
      int worst = 0;
      for (int b = 0; b < 8; b++) worst = seen[b] > worst ? seen[b] : worst;
      score += worst;
    }
    if (score < best_score) best = lds, best_score = score;
  }
  return best;
}


/* ---- tiled forward / input gradient ---- */

template <typename T>
using corr_kernel_t = void (*)(const corr_args<T>);

template <typename T, int RY>
static corr_kernel_t<T> pick_corr_u(int u) {
  if constexpr (sizeof(T) == 4) {
    switch (u) {
      case 3: return corr_tiled_kernel<T, RY, 3, true>;
      case 5: return corr_tiled_kernel<T, RY, 5, true>;
      case 7: return corr_tiled_kernel<T, RY, 7, true>;
      default: break;
    }
  }
  return corr_tiled_kernel<T, RY, 4, false>;
}

template <typename T>
static corr_kernel_t<T> pick_corr(int ry, int u) {
  if constexpr (sizeof(T) == 4) {
    if (ry == 4) return pick_corr_u<T, 4>(u);
  }
  return ry == 2 ? pick_corr_u<T, 2>(u) : pick_corr_u<T, 1>(u);
}

/* A tiled correlation, filled in by plan_corr. */
struct corr_plan {
  int ry, u;          /* rows per thread, taps per chunk (u == kw: one chunk, "SINGLE") */
  int tx, ty, pz;     /* block */
  size_t smem;
};

/* Shared memory of a corr_args layout with pz planes. */
template <typename T>
static size_t corr_smem(const corr_args<T> &a, int ry, int pz) {
  return ((size_t)round_up((a.kh + 2 * (ry - 1)) * a.ldk, 4) + (size_t)pz * a.sr * a.lds) * sizeof(T);
}

/* Tiles and block for out (ho, wo) from src (hs, ws); false when even one row of threads does not
 * fit in shared memory (the caller runs the general kernel). */
template <typename T>
static bool plan_corr(corr_args<T> &a, const device_info &dev, corr_plan *pl) {
  const int ry = rows_per_thread<T>(a.kh, (int64_t)a.ho * a.wo);
  const bool single = sizeof(T) == 4 && (a.kw == 3 || a.kw == 5 || a.kw == 7);
  const int u = single ? a.kw : 4;
  const int vw = vec_width<T>(), nb = round_up(RX + u - 1, vw);
  a.ldk = round_up(a.kw, 4);
  a.jend = single ? u : a.ldk;
  /* widest tile: up to 32 threads across, 256 in all; then balanced so the last tile is not mostly empty */
  int cols = ceil_div(a.wo, RX), rows = ceil_div(a.ho, ry);
  int tx = cols < 32 ? cols : 32;
  int ty = rows < MAX_THREADS / tx ? rows : MAX_THREADS / tx;
  if (ty < 1) ty = 1;
  for (;;) {
    int tiles_w = ceil_div(cols, tx), tiles_h = ceil_div(rows, ty);
    int btx = ceil_div(cols, tiles_w), bty = ceil_div(rows, tiles_h);
    a.tw = btx * RX, a.th = bty * ry, a.tiles_w = tiles_w, a.tiles_h = tiles_h;
    a.sr = a.th + a.kh - 1;
    a.lds = padded_stride<T>(a.tw - RX + a.jend - u + nb, btx, ry);
    size_t one = corr_smem(a, ry, 1);
    /* kernels whose own shared copy is large: accept up to half of the opt-in limit (two blocks
     * a multiprocessor) before making the tile smaller than 64 threads */
    if (one <= SOFT_SMEM || (one <= (size_t)dev.smem_optin / 2 && btx * bty <= 64) || (tx == 1 && ty == 1)) {
      if (one > (size_t)dev.smem_optin) return false;
      tx = btx, ty = bty;
      break;
    }
    if (ty > 1) ty = ceil_div(ty, 2); /* shorter tiles first: a warp keeps loading whole rows */
    else tx = ceil_div(tx, 2);
  }
  /* batch elements per block: up to 256 threads, within the soft shared-memory budget */
  int64_t pz = MAX_THREADS / (tx * ty);
  if (pz > MAX_Z) pz = MAX_Z;
  if (pz > a.n) pz = a.n;
  if (pz < 1) pz = 1;
  while (pz > 1 && corr_smem(a, ry, (int)pz) > SOFT_SMEM) pz--;
  a.ngroups = ceil_div64(a.n, pz);
  a.items = a.c * a.ngroups * a.tiles_h * a.tiles_w;
  pl->ry = ry, pl->u = u, pl->tx = tx, pl->ty = ty, pl->pz = (int)pz;
  pl->smem = corr_smem(a, ry, (int)pz);
  return true;
}

template <typename T>
static int launch_corr(const char *op, corr_args<T> &a, const corr_plan &pl) {
  corr_kernel_t<T> k = pick_corr<T>(pl.ry, pl.u);
  if (lark_cuda_allow_smem(op, k, pl.smem)) return lark_error_code();
  dim3 block(pl.tx, pl.ty, pl.pz);
  k<<<blocks_for(a.items), block, pl.smem>>>(a);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

/* Whether the int arithmetic of the tiled kernels holds: maps and paddings below 2^28, kernels
 * small enough for shared memory (larger ones would not fit anyway). */
static bool tiled_sizes_ok(int64_t a, int64_t b, int64_t c, int64_t d, const lark_conv2d_params *p) {
  return a < TILED_LIMIT && b < TILED_LIMIT && c < TILED_LIMIT && d < TILED_LIMIT && p->kh <= 4096 &&
         p->kw <= 4096 && (int64_t)p->kh * p->kw <= (1 << 20) && p->pad_top < TILED_LIMIT &&
         p->pad_left < TILED_LIMIT;
}

static bool unit_stride(const lark_conv2d_params *p) {
  return p->stride_h == 1 && p->stride_w == 1 && p->dil_h == 1 && p->dil_w == 1;
}

template <typename T>
static plain_args<T> make_plain(int64_t n, int64_t c, int64_t h, int64_t w, int64_t ho, int64_t wo,
                                const lark_conv2d_params *p, unsigned flags) {
  plain_args<T> a = {};
  a.n = n, a.c = c, a.h = h, a.w = w, a.ho = ho, a.wo = wo;
  a.kh = p->kh, a.kw = p->kw, a.sh = p->stride_h, a.sw = p->stride_w, a.pt = p->pad_top, a.pl = p->pad_left;
  a.dh = p->dil_h, a.dw = p->dil_w;
  a.accumulate = (flags & LARK_DWCONV_ACCUMULATE) != 0;
  return a;
}

template <typename T>
static int forward(const char *op, lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                   const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags) {
  const int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3];
  const int64_t ho = out->shape[2], wo = out->shape[3];
  const T *x = (const T *)lark_data_ptr(input), *wt = (const T *)lark_data_ptr(weight);
  const T *b = bias ? (const T *)lark_data_ptr(bias) : NULL;
  T *y = (T *)lark_data_ptr(out);
  const bool empty_input = h == 0 || w == 0; /* every tap reads padding: the plain kernels read nothing */
  if (!(flags & LARK_DWCONV_REFERENCE) && !empty_input && unit_stride(p) && tiled_sizes_ok(h, w, ho, wo, p)) {
    if constexpr (sizeof(T) == 4) { /* tensor cores, when the precision asks for them */
      bool handled = false;
      int rc = lark_cuda_dwconv_tc_corr(op, input, weight, bias, out, p, false, flags, &handled);
      if (rc || handled) return rc;
    }
    device_info dev;
    if (query_device(op, &dev)) return lark_error_code();
    corr_args<T> a = {};
    a.src = x, a.w = wt, a.bias = b, a.out = y, a.n = n, a.c = c;
    a.hs = (int)h, a.ws = (int)w, a.ho = (int)ho, a.wo = (int)wo, a.kh = p->kh, a.kw = p->kw;
    a.pt = p->pad_top, a.pl = p->pad_left, a.flip = 0, a.accumulate = (flags & LARK_DWCONV_ACCUMULATE) != 0;
    corr_plan pl;
    if (plan_corr(a, dev, &pl)) return launch_corr(op, a, pl);
  }
  plain_args<T> a = make_plain<T>(n, c, h, w, ho, wo, p, flags);
  a.input = x, a.weight = wt, a.bias = b, a.out = y;
  const int64_t total = n * c * ho * wo;
  if (flags & LARK_DWCONV_REFERENCE)
    ref_forward_kernel<T><<<lark_cuda_grid(total, 256), 256>>>(a);
  else
    gen_forward_kernel<T><<<lark_cuda_grid(total, 256), 256>>>(a);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

template <typename T>
static int backward_input(const char *op, lark_tensor *grad_in, const lark_tensor *grad_out, const lark_tensor *weight,
                          const lark_conv2d_params *p, unsigned flags) {
  const int64_t n = grad_in->shape[0], c = grad_in->shape[1], h = grad_in->shape[2], w = grad_in->shape[3];
  const int64_t ho = grad_out->shape[2], wo = grad_out->shape[3];
  const T *gy = (const T *)lark_data_ptr(grad_out), *wt = (const T *)lark_data_ptr(weight);
  T *gx = (T *)lark_data_ptr(grad_in);
  if (!(flags & LARK_DWCONV_REFERENCE) && unit_stride(p) && tiled_sizes_ok(h, w, ho, wo, p)) {
    if constexpr (sizeof(T) == 4) {
      bool handled = false;
      int rc = lark_cuda_dwconv_tc_corr(op, grad_out, weight, NULL, grad_in, p, true, flags, &handled);
      if (rc || handled) return rc;
    }
    device_info dev;
    if (query_device(op, &dev)) return lark_error_code();
    /* the forward pass over grad_out with the kernel turned 180 degrees: grad_in (y, x) reads
     * grad_out (y - (kh-1-pt) + i, x - (kw-1-pl) + j) with weight (kh-1-i, kw-1-j) */
    corr_args<T> a = {};
    a.src = gy, a.w = wt, a.bias = NULL, a.out = gx, a.n = n, a.c = c;
    a.hs = (int)ho, a.ws = (int)wo, a.ho = (int)h, a.wo = (int)w, a.kh = p->kh, a.kw = p->kw;
    a.pt = p->kh - 1 - p->pad_top, a.pl = p->kw - 1 - p->pad_left, a.flip = 1;
    a.accumulate = (flags & LARK_DWCONV_ACCUMULATE) != 0;
    corr_plan pl;
    if (plan_corr(a, dev, &pl)) return launch_corr(op, a, pl);
  }
  plain_args<T> a = make_plain<T>(n, c, h, w, ho, wo, p, flags);
  a.grad_out = gy, a.weight = wt, a.out = gx;
  const int64_t total = n * c * h * w;
  if (flags & LARK_DWCONV_REFERENCE)
    ref_backward_input_kernel<T><<<lark_cuda_grid(total, 256), 256>>>(a);
  else
    gen_backward_input_kernel<T><<<lark_cuda_grid(total, 256), 256>>>(a);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

/* ---- tiled weight gradient ---- */

template <typename T>
using wgrad_kernel_t = void (*)(const wgrad_args<T>);

template <typename T>
static wgrad_kernel_t<T> pick_wgrad(int ry) {
  if constexpr (sizeof(T) == 4) {
    if (ry == 4) return wgrad_tiled_kernel<T, 4>;
  }
  return ry == 2 ? wgrad_tiled_kernel<T, 2> : wgrad_tiled_kernel<T, 1>;
}

template <typename T>
static size_t wgrad_smem(const wgrad_args<T> &a, int ry, int slices) {
  const int kzr = a.gr * a.gth_s + 2 * (ry - 1);
  size_t tiles = ((size_t)round_up(kzr * a.ldk, 4) + (size_t)a.sr * a.lds) * sizeof(T);
  size_t red = (size_t)slices * a.tth * a.ttw * sizeof(T);
  return tiles > red ? tiles : red;
}

struct wgrad_plan {
  int ry, tx, ty, slices;
  size_t smem;
};

/* Tap tiles, grad_out bands and splits; false when nothing fits in shared memory. */
template <typename T>
static bool plan_wgrad(wgrad_args<T> &a, const device_info &dev, wgrad_plan *pl) {
  constexpr int U = 4;
  const int ry = rows_per_thread<T>(a.kh, (int64_t)a.kh * a.kw);
  /* the taps: up to 16 threads across (64 taps), 256 threads in all, balanced */
  int cols = ceil_div(a.kw, RX), rows = ceil_div(a.kh, ry);
  int tx = cols < 16 ? cols : 16;
  int ty = rows < MAX_THREADS / tx ? rows : MAX_THREADS / tx;
  a.ttiles_w = ceil_div(cols, tx), a.ttiles_h = ceil_div(rows, ty);
  tx = ceil_div(cols, a.ttiles_w), ty = ceil_div(rows, a.ttiles_h);
  a.ttw = tx * RX, a.tth = ty * ry;
  /* slices: bands of a grad_out tile of up to 32 x 64, as many as 256 threads allow */
  const int per_slice = tx * ty;
  int gmax = MAX_THREADS / per_slice;
  gmax = gmax < 1 ? 1 : gmax > MAX_Z ? MAX_Z : gmax;
  const int gtw_want = round_up(a.wo < 64 ? a.wo : 64, U), gth_want = a.ho < 32 ? a.ho : 32;
  a.gc = gtw_want / U < gmax ? gtw_want / U : gmax;
  if (a.gc < 1) a.gc = 1;
  a.gtw_s = round_up(ceil_div(gtw_want, a.gc), U);
  a.gr = 1;
  if (ry == 1) { /* without zero rows in the kernel, row bands are free too */
    int gr = gmax / a.gc;
    a.gr = gr < gth_want ? (gr > 0 ? gr : 1) : gth_want;
  }
  a.gth_s = ceil_div(gth_want, a.gr);
  const int vw = vec_width<T>(), nb = round_up(RX + U - 1, vw);
  for (;;) {
    a.ldk = a.gc * a.gtw_s;
    a.sr = a.tth + a.gr * a.gth_s - 1;
    a.lds = padded_stride<T>(a.ttw - RX + a.ldk - U + nb, tx, ry);
    size_t smem = wgrad_smem(a, ry, a.gr * a.gc);
    if (smem <= SOFT_SMEM) break;
    if (a.gth_s > 1) a.gth_s = ceil_div(a.gth_s, 2);
    else if (a.gtw_s > U) a.gtw_s = round_up(a.gtw_s / 2, U);
    else if (a.gc > 1) a.gc = ceil_div(a.gc, 2);
    else if (smem <= (size_t)dev.smem_optin) break;
    else return false;
  }
  a.gtiles_h = ceil_div(a.ho, a.gr * a.gth_s), a.gtiles_w = ceil_div(a.wo, a.gc * a.gtw_s);
  a.per_channel = a.n * a.gtiles_h * a.gtiles_w;
  /* splits: blocks enough for several per multiprocessor, each with at least two tiles */
  const int64_t base = a.c * a.ttiles_h * a.ttiles_w, want = (int64_t)dev.sms * 8;
  int64_t splits = base >= want ? 1 : ceil_div64(want, base);
  if (splits > a.per_channel / 2) splits = a.per_channel / 2;
  if (splits > 1024) splits = 1024;
  if (splits < 1) splits = 1;
  a.splits = (int)splits;
  a.items = base * splits;
  pl->ry = ry, pl->tx = tx, pl->ty = ty, pl->slices = a.gr * a.gc;
  pl->smem = wgrad_smem(a, ry, pl->slices);
  return true;
}

template <typename T>
static int backward_weight(const char *op, lark_tensor *grad_w, const lark_tensor *grad_out, const lark_tensor *input,
                           const lark_conv2d_params *p, unsigned flags) {
  const int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3];
  const int64_t ho = grad_out->shape[2], wo = grad_out->shape[3];
  const T *gy = (const T *)lark_data_ptr(grad_out), *x = (const T *)lark_data_ptr(input);
  T *gw = (T *)lark_data_ptr(grad_w);
  const bool accumulate = (flags & LARK_DWCONV_ACCUMULATE) != 0;
  if (!(flags & LARK_DWCONV_REFERENCE) && unit_stride(p) && tiled_sizes_ok(h, w, ho, wo, p)) {
    if constexpr (sizeof(T) == 4) {
      bool handled = false;
      int rc = lark_cuda_dwconv_tc_backward_weight(op, grad_w, grad_out, input, p, flags, &handled);
      if (rc || handled) return rc;
    }
    device_info dev;
    if (query_device(op, &dev)) return lark_error_code();
    wgrad_args<T> a = {};
    a.x = x, a.gy = gy, a.n = n, a.c = c, a.h = (int)h, a.w = (int)w, a.ho = (int)ho, a.wo = (int)wo;
    a.kh = p->kh, a.kw = p->kw, a.pt = p->pad_top, a.pl = p->pad_left;
    wgrad_plan pl;
    if (plan_wgrad(a, dev, &pl)) {
      wgrad_kernel_t<T> k = pick_wgrad<T>(pl.ry);
      if (lark_cuda_allow_smem(op, k, pl.smem)) return lark_error_code();
      dim3 block(pl.tx, pl.ty, pl.slices);
      const int64_t taps = (int64_t)p->kh * p->kw;
      if (a.splits == 1) {
        a.out = gw, a.accumulate = accumulate;
        k<<<blocks_for(a.items), block, pl.smem>>>(a);
        return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
      }
      /* partial sums per split, then their sum in split order: deterministic, no atomics */
      lark_device d = lark_tensor_device(grad_w);
      const int64_t part_shape[1] = {c * a.splits * taps};
      lark_tensor *part = lark_empty(1, part_shape, grad_w->dtype, &d);
      if (!part) return lark_error_code();
      a.out = (T *)lark_data_ptr(part);
      k<<<blocks_for(a.items), block, pl.smem>>>(a);
      int rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
      if (!rc) {
        wgrad_sum_splits_kernel<T><<<lark_cuda_grid(c * taps, 256), 256>>>(a.out, gw, c, a.splits, taps, accumulate);
        rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
      }
      lark_tensor_release(part); /* freed after the kernels on the default stream, which are in order */
      return rc;
    }
  }
  plain_args<T> a = make_plain<T>(n, c, h, w, ho, wo, p, flags);
  a.input = x, a.grad_out = gy, a.out = gw;
  const int64_t taps = c * p->kh * p->kw;
  if (flags & LARK_DWCONV_REFERENCE)
    ref_backward_weight_kernel<T><<<lark_cuda_grid(taps, 128), 128>>>(a);
  else
    gen_backward_weight_kernel<T><<<blocks_for(taps), GEN_WGRAD_THREADS>>>(a);
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

} /* namespace */

/* ---- the backend's entry points (core/backend.h) -------------------------------------------- */

extern "C" int lark_cuda_dwconv_forward(lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                                        const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags) {
  const char *op = flags & LARK_DWCONV_REFERENCE ? "dwconv2d_reference" : "dwconv2d";
  if (lark_cuda_set_device(lark_tensor_device(out), op)) return lark_error_code();
  return out->dtype == LARK_FLOAT32 ? forward<float>(op, out, input, weight, bias, p, flags)
                                    : forward<double>(op, out, input, weight, bias, p, flags);
}

extern "C" int lark_cuda_dwconv_backward_input(lark_tensor *grad_in, const lark_tensor *grad_out,
                                               const lark_tensor *weight, const lark_conv2d_params *p,
                                               unsigned flags) {
  const char *op = flags & LARK_DWCONV_REFERENCE ? "dwconv2d_backward_input_reference" : "dwconv2d_backward_input";
  if (lark_cuda_set_device(lark_tensor_device(grad_in), op)) return lark_error_code();
  return grad_in->dtype == LARK_FLOAT32 ? backward_input<float>(op, grad_in, grad_out, weight, p, flags)
                                        : backward_input<double>(op, grad_in, grad_out, weight, p, flags);
}

extern "C" int lark_cuda_dwconv_backward_weight(lark_tensor *grad_w, const lark_tensor *grad_out,
                                                const lark_tensor *input, const lark_conv2d_params *p,
                                                unsigned flags) {
  const char *op = flags & LARK_DWCONV_REFERENCE ? "dwconv2d_backward_weight_reference" : "dwconv2d_backward_weight";
  if (lark_cuda_set_device(lark_tensor_device(grad_w), op)) return lark_error_code();
  return grad_w->dtype == LARK_FLOAT32 ? backward_weight<float>(op, grad_w, grad_out, input, p, flags)
                                       : backward_weight<double>(op, grad_w, grad_out, input, p, flags);
}
