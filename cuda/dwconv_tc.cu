/*
 * dwconv_tc.cu: the depth-wise convolution on tensor cores, for float32 tensors whose user asked
 * for reduced precision: lark.set_float32_matmul_precision("high") runs TF32 (mma.sync m16n8k8),
 * "medium" BF16 (m16n8k16); both accumulate in float32. The default, "highest", never comes here.
 * cuda/dwconv.cu calls these first for stride 1 and dilation 1 and runs its exact kernels when
 * they decline (*handled false): other strides, float64, kernels wider than 57 columns.
 *
 * The formulation (../shared/reference/GPU.md, section 1): per channel and kernel row a, a row of
 * outputs is a product with the banded Toeplitz matrix of filter row a,
 *     Y[y, j0 + j] += sum_k X[y + a, j0 + k] * T_a[k, j],      T_a[k, j] = w[a, k - j]
 * (w zero outside the kernel). One mma takes M = 16 output rows, N = 8 output columns and
 * K = KS source columns (8 in TF32, 16 in BF16); 8 output columns of a kw-wide kernel need kw + 7
 * source columns, rounded up to KS: for kw = 31 that is 40 in TF32 (1.29x the direct loop's MACs)
 * and 48 in BF16 (1.55x), which the tensor cores (7.4x and 14.8x the FP32 FMA rate of an H100)
 * repay many times.
 *
 * The same engine (tc_accumulate) serves all three passes:
 *   - forward: source = the input tile, "kernel rows" = the weight rows, results = outputs;
 *   - input gradient: the forward over grad_out with the kernel turned 180 degrees and the
 *     complementary padding (as cuda/dwconv.cu does);
 *   - weight gradient: source = the input tile, "kernel rows" = grad_out rows, results = the taps:
 *         dW[a, b0 + j] += sum_k X[y + a, q0 + k] * G_y[k, j],      G_y[k, j] = gy[y, k - j]
 *     summed over the rows y of a slice of (N, Ho) and a chunk of grad_out columns; each warp
 *     writes its slice's partial sums and a second kernel adds the slices in a fixed order, so
 *     the result is deterministic.
 *
 * Layout: every warp works alone on its own items (no __syncthreads), with its own shared tiles:
 * the source tile (rows x ldx, already rounded to TF32 or converted to BF16) and the kernel rows
 * (rows x ldk, WOFF zeros before column 0 so that T's band needs no bounds test). ldx is chosen so
 * that a fragment load (8 rows x 4 lanes) touches 32 distinct banks. Row and column chunks that
 * read only zero padding are skipped, warp-uniformly.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8" and "...m16n8k16"), lane l,
 * g = l / 4, t = l % 4, registers r:
 *   A (16 x K, row-major): row g + 8 (r % 2), column t + 4 (r / 2) in 32-bit words;
 *   B (K x 8): column g, row (word) t + 4 r;
 *   C and D (16 x 8, float32): row g + 8 (r / 2), column 2 t + r % 2.
 * (A BF16 word holds two consecutive K elements, the lower one in the low half.)
 */
#include <cuda_bf16.h>
#include <limits.h>

#include "cuda.h"

namespace {

constexpr int TC_WARPS = 4; /* warps per block */
constexpr int WOFF = 8;     /* zeros before column 0 of a kernel row: T reads columns k - j >= -7 */

/* ---- the two instruction shapes ------------------------------------------------------------- */

struct tf32_mma {
  static constexpr int KS = 8; /* source columns (the GEMM's K) per mma */
  typedef float elem;          /* shared tiles hold floats already rounded to TF32 */
  static __device__ __forceinline__ elem convert(float v) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return __uint_as_float(r);
  }
  /* p: row 0, column 0 of the 16 x 8 A block in a tile of row stride ld */
  static __device__ __forceinline__ void load_a(const elem *p, int ld, int g, int t, uint32_t a[4]) {
    a[0] = __float_as_uint(p[g * ld + t]);
    a[1] = __float_as_uint(p[(g + 8) * ld + t]);
    a[2] = __float_as_uint(p[g * ld + t + 4]);
    a[3] = __float_as_uint(p[(g + 8) * ld + t + 4]);
  }
  /* B[k][j] = kr[k - j], kr pointing at column 0 of this K step (WOFF zeros precede the row) */
  static __device__ __forceinline__ void load_b(const elem *kr, int g, int t, uint32_t b[2]) {
    b[0] = __float_as_uint(kr[t - g]);
    b[1] = __float_as_uint(kr[t + 4 - g]);
  }
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

struct bf16_mma {
  static constexpr int KS = 16;
  typedef __nv_bfloat16 elem;
  static __device__ __forceinline__ elem convert(float v) { return __float2bfloat16_rn(v); }
  static __device__ __forceinline__ uint32_t pack(elem lo, elem hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
  }
  /* p's column is even and ld is even, so each pair is one aligned 32-bit load */
  static __device__ __forceinline__ uint32_t pair(const elem *p) { return *reinterpret_cast<const uint32_t *>(p); }
  static __device__ __forceinline__ void load_a(const elem *p, int ld, int g, int t, uint32_t a[4]) {
    a[0] = pair(p + g * ld + 2 * t);
    a[1] = pair(p + (g + 8) * ld + 2 * t);
    a[2] = pair(p + g * ld + 2 * t + 8);
    a[3] = pair(p + (g + 8) * ld + 2 * t + 8);
  }
  static __device__ __forceinline__ void load_b(const elem *kr, int g, int t, uint32_t b[2]) {
    b[0] = pack(kr[2 * t - g], kr[2 * t + 1 - g]);
    b[1] = pack(kr[2 * t + 8 - g], kr[2 * t + 9 - g]);
  }
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
};

/* ---- the engine ----------------------------------------------------------------------------- */

/* Where a warp's source tile sits: tile row r, column c holds source (sy0 + r, sx0 + c), zero
 * outside the hs x ws map. */
struct tc_window {
  int sy0, sx0, hs, ws;
};

/* acc[m][nt] (16 x 8 results at rows 16 m, columns 8 nt of the warp tile) +=
 *     sum over kernel rows r < nk, chunks v, K steps s with v = nt + (KS / 8) s of
 *     A(tile rows r + 16 m .., columns 8 v ..) x B(kernel row r, columns KS s - j ..)
 * Only the first mt_live m-tiles and nt_live n-tiles are computed (the rest lie outside the
 * result). tile: row stride ldx; krows: nk rows of stride ldk, each with WOFF zeros before it. */
template <typename SH, int S, int MT, int NT>
__device__ __forceinline__ void tc_accumulate(float (&acc)[MT][NT][4], const typename SH::elem *tile, int ldx,
                                              const tc_window &win, const typename SH::elem *krows, int ldk, int nk,
                                              int mt_live, int nt_live, int g, int t) {
  constexpr int KS = SH::KS, KQ = KS / 8, NV = NT + KQ * (S - 1);
  for (int r = 0; r < nk; r++) {
    bool mlive[MT];
    bool any = false;
#pragma unroll
    for (int m = 0; m < MT; m++) {
      const int lo = win.sy0 + r + 16 * m; /* source rows lo .. lo + 15 */
      mlive[m] = m < mt_live && lo + 15 >= 0 && lo < win.hs;
      any |= mlive[m];
    }
    if (!any) continue; /* every row this kernel row meets is padding */
    uint32_t bf[S][2];
    const typename SH::elem *kr = krows + (size_t)r * ldk + WOFF;
#pragma unroll
    for (int s = 0; s < S; s++) SH::load_b(kr + KS * s, g, t, bf[s]);
#pragma unroll
    for (int v = 0; v < NV; v++) {
      const int cx = win.sx0 + 8 * v;
      if (cx + KS <= 0 || cx >= win.ws) continue; /* the chunk reads only padding */
      uint32_t af[MT][4];
#pragma unroll
      for (int m = 0; m < MT; m++)
        if (mlive[m]) SH::load_a(tile + (size_t)(r + 16 * m) * ldx + 8 * v, ldx, g, t, af[m]);
#pragma unroll
      for (int s = 0; s < S; s++) {
        const int nt = v - KQ * s;
        if (nt < 0 || nt >= NT || nt >= nt_live) continue;
#pragma unroll
        for (int m = 0; m < MT; m++)
          if (mlive[m]) SH::mma(acc[m][nt], af[m], bf[s]);
      }
    }
  }
}

/* Fills rows x cols of a warp's tile (row stride ld) with the source at (sy0, sx0), zeros
 * outside the map. Each lane first issues FILL_BATCH loads, then converts and stores them: a warp
 * works alone, so the loads in flight per lane are what hides the memory latency. */
constexpr int FILL_BATCH = 8;
template <typename SH>
__device__ __forceinline__ void tc_fill(typename SH::elem *tile, int ld, int rows, int cols, const float *src,
                                        const tc_window &win, int lane) {
  const int total = rows * cols;
  for (int base = 0; base < total; base += 32 * FILL_BATCH) {
    float v[FILL_BATCH];
#pragma unroll
    for (int k = 0; k < FILL_BATCH; k++) {
      const int i = base + 32 * k + lane, r = i / cols, c = i - r * cols;
      const int sy = win.sy0 + r, sx = win.sx0 + c;
      v[k] = i < total && sy >= 0 && sy < win.hs && sx >= 0 && sx < win.ws ? __ldg(src + (int64_t)sy * win.ws + sx) : 0.f;
    }
#pragma unroll
    for (int k = 0; k < FILL_BATCH; k++) {
      const int i = base + 32 * k + lane, r = i / cols, c = i - r * cols;
      if (i < total) tile[(size_t)r * ld + c] = SH::convert(v[k]);
    }
  }
}

/* The source columns a warp tile of NT n-tiles reads at S K steps. */
template <typename SH>
__host__ __device__ constexpr int tc_source_cols(int nt, int s) {
  return 8 * (nt + SH::KS / 8 * (s - 1) - 1) + SH::KS;
}

/* ---- forward and input gradient ------------------------------------------------------------- */

struct tc_corr_args {
  const float *src;  /* (P, hs, ws): the input, or grad_out for the input gradient; P = N * C planes */
  const float *w;    /* (C, kh, kw) */
  const float *bias; /* (C) or NULL */
  float *out;        /* (P, ho, wo) */
  int64_t planes, c;
  int hs, ws, ho, wo, kh, kw;
  int pt, pl;        /* source rows and columns before the map that output (0, 0) starts at */
  int flip;          /* read the weight turned 180 degrees (input gradient) */
  int accumulate;    /* out += result */
  int tiles_y, tiles_x;
  int ldx, ldk;      /* row strides (elements) of the source tile and the kernel rows */
  int warp_smem;     /* bytes of shared memory per warp */
};

template <typename SH, int S, int MT, int NT>
__global__ void __launch_bounds__(32 * TC_WARPS) tc_corr_kernel(const tc_corr_args a) {
  typedef typename SH::elem E;
  constexpr int TM = 16 * MT, TN = 8 * NT, SW = tc_source_cols<SH>(NT, S);
  extern __shared__ float4 tc_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  E *tile = reinterpret_cast<E *>(reinterpret_cast<char *>(tc_smem) + (size_t)warp * a.warp_smem);
  const int rows = TM + a.kh - 1;
  E *krows = tile + (size_t)rows * a.ldx;
  /* items in channel-major order (channel, image, tile), and each warp takes a contiguous run of
   * them: consecutive items share a channel, so the kernel rows are loaded about once per run */
  const int64_t tiles = (int64_t)a.tiles_y * a.tiles_x, per_channel = a.planes / a.c * tiles;
  const int64_t items = a.planes * tiles, warps = (int64_t)gridDim.x * TC_WARPS;
  const int64_t run = (items + warps - 1) / warps, first = ((int64_t)blockIdx.x * TC_WARPS + warp) * run;
  const int64_t last = first + run < items ? first + run : items;
  int64_t loaded = -1; /* the channel whose kernel rows the warp holds */
  for (int64_t it = first; it < last; it++) {
    const int64_t ch = it / per_channel, rest = it % per_channel, plane = rest / tiles * a.c + ch;
    const int ti = (int)(rest % tiles), y0 = ti / a.tiles_x * TM, x0 = ti % a.tiles_x * TN;
    __syncwarp(); /* the previous item's fragment loads are done */
    if (ch != loaded) {
      const float *wc = a.w + ch * a.kh * a.kw;
      for (int r = 0; r < a.kh; r++)
        for (int j = lane; j < a.ldk; j += 32) {
          const int b = j - WOFF;
          float v = 0.f;
          if (b >= 0 && b < a.kw) v = a.flip ? wc[(a.kh - 1 - r) * a.kw + a.kw - 1 - b] : wc[r * a.kw + b];
          krows[(size_t)r * a.ldk + j] = SH::convert(v);
        }
      loaded = ch;
    }
    const tc_window win = {y0 - a.pt, x0 - a.pl, a.hs, a.ws};
    tc_fill<SH>(tile, a.ldx, rows, SW, a.src + plane * a.hs * a.ws, win, lane);
    __syncwarp();
    float acc[MT][NT][4] = {};
    const int mt_live = (a.ho - y0 + 15) / 16, nt_live = (a.wo - x0 + 7) / 8;
    tc_accumulate<SH, S, MT, NT>(acc, tile, a.ldx, win, krows, a.ldk, a.kh, mt_live, nt_live, g, t);
    const float bv = a.bias ? a.bias[ch] : 0.f;
    float *op = a.out + plane * a.ho * a.wo;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          const int y = y0 + 16 * m + g + 8 * (r / 2), x = x0 + 8 * nt + 2 * t + r % 2;
          if (y < a.ho && x < a.wo) {
            float *o = op + (int64_t)y * a.wo + x;
            const float v = acc[m][nt][r] + bv;
            *o = a.accumulate ? *o + v : v;
          }
        }
  }
}

/* ---- weight gradient ------------------------------------------------------------------------ */

constexpr int WG_XW = 32; /* grad_out columns per chunk */
constexpr int WG_YB = 16; /* grad_out rows per shared fill */

struct tc_wgrad_args {
  const float *x;   /* (N * C, h, w) input */
  const float *gy;  /* (N * C, ho, wo) grad_out */
  float *part;      /* (C, splits, kh * kw): each split's partial sums */
  int64_t n, c;
  int h, w, ho, wo, kh, kw, pt, pl;
  int tiles_a, tiles_b; /* tap tiles: TM kernel rows x TN kernel columns */
  int xchunks;          /* grad_out column chunks of WG_XW */
  int yslices;          /* slices of the N * Ho grad_out rows */
  int64_t rows_per_slice;
  int ldx, ldk, warp_smem;
};

template <typename SH, int S, int MT, int NT>
__global__ void __launch_bounds__(32 * TC_WARPS) tc_wgrad_kernel(const tc_wgrad_args a) {
  typedef typename SH::elem E;
  constexpr int TM = 16 * MT, TN = 8 * NT, SW = tc_source_cols<SH>(NT, S);
  extern __shared__ float4 tc_smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  E *tile = reinterpret_cast<E *>(reinterpret_cast<char *>(tc_smem) + (size_t)warp * a.warp_smem);
  E *krows = tile + (size_t)(WG_YB + TM - 1) * a.ldx;
  const int splits = a.xchunks * a.yslices, taps = a.kh * a.kw;
  const int64_t tiles = (int64_t)a.tiles_a * a.tiles_b, items = a.c * tiles * splits;
  const int64_t total_rows = a.n * a.ho;
  for (int64_t it = (int64_t)blockIdx.x * TC_WARPS + warp; it < items; it += (int64_t)gridDim.x * TC_WARPS) {
    const int64_t ch = it / (tiles * splits);
    const int rest = (int)(it % (tiles * splits)), split = rest / (int)tiles, ti = rest % (int)tiles;
    const int a0 = ti / a.tiles_b * TM, b0 = ti % a.tiles_b * TN;
    const int xc = split % a.xchunks, ys = split / a.xchunks;
    const int x0 = xc * WG_XW, x1 = min(x0 + WG_XW, a.wo);
    const int64_t r_begin = ys * a.rows_per_slice, r_end = min(r_begin + a.rows_per_slice, total_rows);
    float acc[MT][NT][4] = {};
    const int mt_live = (a.kh - a0 + 15) / 16, nt_live = (a.kw - b0 + 7) / 8;
    for (int64_t r = r_begin; r < r_end;) {
      const int64_t nb = r / a.ho;
      const int y = (int)(r % a.ho);
      const int cnt = (int)min((int64_t)min(WG_YB, a.ho - y), r_end - r);
      const int64_t plane = nb * a.c + ch;
      __syncwarp(); /* the previous block's fragment loads are done */
      /* source row i of the tile: input row y + a0 - pt + i; column k: input column x0 + b0 - pl + k */
      const tc_window win = {y + a0 - a.pt, x0 + b0 - a.pl, a.h, a.w};
      tc_fill<SH>(tile, a.ldx, cnt + TM - 1, SW, a.x + plane * a.h * a.w, win, lane);
      /* kernel row i: grad_out row y + i, column j - WOFF: grad_out column x0 + j - WOFF, zero
       * outside this chunk's [x0, x1) */
      const float *gp = a.gy + plane * a.ho * a.wo;
      for (int i = 0; i < cnt; i++)
        for (int j = lane; j < a.ldk; j += 32) {
          const int col = x0 + j - WOFF;
          krows[(size_t)i * a.ldk + j] =
              SH::convert(col >= x0 && col < x1 ? __ldg(gp + (int64_t)(y + i) * a.wo + col) : 0.f);
        }
      __syncwarp();
      tc_accumulate<SH, S, MT, NT>(acc, tile, a.ldx, win, krows, a.ldk, cnt, mt_live, nt_live, g, t);
      r += cnt;
    }
    float *pp = a.part + (ch * splits + split) * taps;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
          const int ka = a0 + 16 * m + g + 8 * (q / 2), kb = b0 + 8 * nt + 2 * t + q % 2;
          if (ka < a.kh && kb < a.kw) pp[ka * a.kw + kb] = acc[m][nt][q];
        }
  }
}

/* out (C, taps) (+)= the sum over splits of part (C, splits, taps), in split order. */
__global__ void tc_sum_splits_kernel(const float *part, float *out, int64_t c, int splits, int taps, int accumulate) {
  const int64_t total = c * taps;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ch = i / taps, tap = i % taps;
    const float *p = part + ch * splits * taps + tap;
    float s = 0.f;
    for (int k = 0; k < splits; k++) s += p[(int64_t)k * taps];
    out[i] = accumulate ? out[i] + s : s;
  }
}

/* ---- host side ------------------------------------------------------------------------------ */


/* The smallest stride >= need whose fragment loads hit 32 distinct banks: 4 (mod 32) words. */
template <typename SH>
static int tc_stride(int need) {
  const int per_word = 4 / (int)sizeof(typename SH::elem); /* elements per 32-bit word */
  int words = (need + per_word - 1) / per_word;
  words += ((4 - words) % 32 + 32) % 32;
  return words * per_word;
}

static int tc_warp_smem(size_t elem, int rows, int ldx, int krows, int ldk) {
  size_t bytes = elem * ((size_t)rows * ldx + (size_t)krows * ldk);
  return (int)((bytes + 15) / 16 * 16);
}

template <typename SH, int S, int MT, int NT>
static int launch_corr(const char *op, tc_corr_args &a, int sms, int optin, bool *handled) {
  a.tiles_y = (a.ho + 16 * MT - 1) / (16 * MT);
  a.tiles_x = (a.wo + 8 * NT - 1) / (8 * NT);
  a.ldx = tc_stride<SH>(tc_source_cols<SH>(NT, S));
  a.ldk = (WOFF + SH::KS * S + 1) / 2 * 2;
  a.warp_smem = tc_warp_smem(sizeof(typename SH::elem), 16 * MT + a.kh - 1, a.ldx, a.kh, a.ldk);
  const int smem = a.warp_smem * TC_WARPS;
  if (smem > optin) return 0; /* tall kernels: the exact path */
  auto k = tc_corr_kernel<SH, S, MT, NT>;
  if (lark_cuda_allow_smem(op, k, (size_t)smem)) return lark_error_code();
  /* a few waves of blocks, each warp a contiguous run of items (see the kernel) */
  const int64_t items = a.planes * a.tiles_y * a.tiles_x;
  int64_t blocks = (items + TC_WARPS - 1) / TC_WARPS;
  if (blocks > (int64_t)sms * 8) blocks = (int64_t)sms * 8;
  k<<<(unsigned)blocks, 32 * TC_WARPS, smem>>>(a);
  *handled = true;
  return lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
}

template <typename SH, int S>
static int corr_tiles(const char *op, tc_corr_args &a, int sms, int optin, bool *handled) {
  if (a.ho <= 16 && a.wo <= 16) return launch_corr<SH, S, 1, 2>(op, a, sms, optin, handled);
  return launch_corr<SH, S, 2, 4>(op, a, sms, optin, handled);
}

template <typename SH>
static int corr(const char *op, tc_corr_args &a, int sms, int optin, bool *handled) {
  const int s = (a.kw + 7 + SH::KS - 1) / SH::KS;
  if constexpr (SH::KS == 8) {
    switch (s) {
      case 1: return corr_tiles<SH, 1>(op, a, sms, optin, handled);
      case 2: return corr_tiles<SH, 2>(op, a, sms, optin, handled);
      case 3: return corr_tiles<SH, 3>(op, a, sms, optin, handled);
      case 4: return corr_tiles<SH, 4>(op, a, sms, optin, handled);
      case 5: return corr_tiles<SH, 5>(op, a, sms, optin, handled);
      case 6: return corr_tiles<SH, 6>(op, a, sms, optin, handled);
      case 7: return corr_tiles<SH, 7>(op, a, sms, optin, handled);
      case 8: return corr_tiles<SH, 8>(op, a, sms, optin, handled);
    }
  } else {
    switch (s) {
      case 1: return corr_tiles<SH, 1>(op, a, sms, optin, handled);
      case 2: return corr_tiles<SH, 2>(op, a, sms, optin, handled);
      case 3: return corr_tiles<SH, 3>(op, a, sms, optin, handled);
      case 4: return corr_tiles<SH, 4>(op, a, sms, optin, handled);
    }
  }
  return 0; /* wider kernels: the exact path */
}

template <typename SH, int MT, int NT>
static int wgrad(const char *op, tc_wgrad_args &a, lark_tensor *grad_w_t, bool accumulate, int sms, int optin,
                 bool *handled) {
  constexpr int S = (WG_XW + 7 + SH::KS - 1) / SH::KS;
  a.tiles_a = (a.kh + 16 * MT - 1) / (16 * MT);
  a.tiles_b = (a.kw + 8 * NT - 1) / (8 * NT);
  a.xchunks = (a.wo + WG_XW - 1) / WG_XW;
  a.ldx = tc_stride<SH>(tc_source_cols<SH>(NT, S));
  a.ldk = (WOFF + SH::KS * S + 1) / 2 * 2;
  a.warp_smem = tc_warp_smem(sizeof(typename SH::elem), WG_YB + 16 * MT - 1, a.ldx, WG_YB, a.ldk);
  const int smem = a.warp_smem * TC_WARPS;
  if (smem > optin) return 0;
  /* enough warps for 8 per multiprocessor, slices of at least WG_YB rows */
  const int64_t total_rows = a.n * a.ho, base = a.c * a.tiles_a * a.tiles_b * a.xchunks;
  int64_t want = ((int64_t)sms * 8 * TC_WARPS + base - 1) / base, most = (total_rows + WG_YB - 1) / WG_YB;
  if (want > most) want = most;
  if (want > 4096) want = 4096;
  if (want < 1) want = 1;
  a.rows_per_slice = (total_rows + want - 1) / want;
  a.yslices = (int)((total_rows + a.rows_per_slice - 1) / a.rows_per_slice);
  const int splits = a.xchunks * a.yslices, taps = a.kh * a.kw;
  auto k = tc_wgrad_kernel<SH, S, MT, NT>;
  if (lark_cuda_allow_smem(op, k, (size_t)smem)) return lark_error_code();
  const lark_device d = lark_tensor_device(grad_w_t);
  const int64_t part_shape[1] = {a.c * splits * taps};
  lark_tensor *part = lark_empty(1, part_shape, LARK_FLOAT32, &d);
  if (!part) return lark_error_code();
  a.part = (float *)lark_data_ptr(part);
  float *grad_w = (float *)lark_data_ptr(grad_w_t);
  const int64_t items = a.c * a.tiles_a * a.tiles_b * splits, blocks = (items + TC_WARPS - 1) / TC_WARPS;
  k<<<(unsigned)(blocks < INT_MAX ? blocks : INT_MAX), 32 * TC_WARPS, smem>>>(a);
  int rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  if (!rc) {
    tc_sum_splits_kernel<<<lark_cuda_grid(a.c * taps, 256), 256>>>(a.part, grad_w, a.c, splits, taps, accumulate);
    rc = lark_cuda_check(cudaGetLastError(), op, "kernel launch failed");
  }
  lark_tensor_release(part); /* freed after the kernels on the default stream, which run in order */
  *handled = true;
  return rc;
}

} /* namespace */

/* ---- entry points (cuda/cuda.h) ------------------------------------------------------------- */

extern "C" int lark_cuda_dwconv_tc_corr(const char *op, const lark_tensor *src, const lark_tensor *weight,
                                        const lark_tensor *bias, lark_tensor *out, const lark_conv2d_params *p,
                                        bool input_grad, unsigned flags, bool *handled) {
  *handled = false;
  if (!(flags & (LARK_DWCONV_TF32 | LARK_DWCONV_BF16)) || out->dtype != LARK_FLOAT32) return 0;
  const int64_t hs = src->shape[2], ws = src->shape[3], ho = out->shape[2], wo = out->shape[3];
  if (hs == 0 || ws == 0) return 0;
  int sms = 0, optin = 0;
  if (lark_cuda_device_limits(op, &sms, &optin)) return lark_error_code();
  tc_corr_args a = {};
  a.src = (const float *)lark_data_ptr(src), a.w = (const float *)lark_data_ptr(weight);
  a.bias = bias ? (const float *)lark_data_ptr(bias) : NULL, a.out = (float *)lark_data_ptr(out);
  a.planes = out->shape[0] * out->shape[1], a.c = out->shape[1];
  a.hs = (int)hs, a.ws = (int)ws, a.ho = (int)ho, a.wo = (int)wo, a.kh = p->kh, a.kw = p->kw;
  /* the input gradient reads grad_out (y - (kh-1-pt) + i, x - (kw-1-pl) + j) with weight
   * (kh-1-i, kw-1-j) */
  a.pt = input_grad ? p->kh - 1 - p->pad_top : p->pad_top;
  a.pl = input_grad ? p->kw - 1 - p->pad_left : p->pad_left;
  a.flip = input_grad, a.accumulate = (flags & LARK_DWCONV_ACCUMULATE) != 0;
  if (a.planes == 0 || ho == 0 || wo == 0) return 0;
  return flags & LARK_DWCONV_TF32 ? corr<tf32_mma>(op, a, sms, optin, handled)
                                   : corr<bf16_mma>(op, a, sms, optin, handled);
}

extern "C" int lark_cuda_dwconv_tc_backward_weight(const char *op, lark_tensor *grad_w, const lark_tensor *grad_out,
                                                   const lark_tensor *input, const lark_conv2d_params *p,
                                                   unsigned flags, bool *handled) {
  *handled = false;
  if (!(flags & (LARK_DWCONV_TF32 | LARK_DWCONV_BF16)) || grad_w->dtype != LARK_FLOAT32) return 0;
  const int64_t n = input->shape[0], c = input->shape[1], h = input->shape[2], w = input->shape[3];
  const int64_t ho = grad_out->shape[2], wo = grad_out->shape[3];
  if (n * c * h * w == 0 || ho == 0 || wo == 0) return 0;
  int sms = 0, optin = 0;
  if (lark_cuda_device_limits(op, &sms, &optin)) return lark_error_code();
  tc_wgrad_args a = {};
  a.x = (const float *)lark_data_ptr(input), a.gy = (const float *)lark_data_ptr(grad_out);
  a.n = n, a.c = c, a.h = (int)h, a.w = (int)w, a.ho = (int)ho, a.wo = (int)wo;
  a.kh = p->kh, a.kw = p->kw, a.pt = p->pad_top, a.pl = p->pad_left;
  const bool acc = (flags & LARK_DWCONV_ACCUMULATE) != 0;
  const bool narrow = p->kw <= 8; /* SLaK's 51x5: one n-tile of taps */
  if (flags & LARK_DWCONV_TF32)
    return narrow ? wgrad<tf32_mma, 2, 1>(op, a, grad_w, acc, sms, optin, handled)
                  : wgrad<tf32_mma, 2, 4>(op, a, grad_w, acc, sms, optin, handled);
  return narrow ? wgrad<bf16_mma, 2, 1>(op, a, grad_w, acc, sms, optin, handled)
                : wgrad<bf16_mma, 2, 4>(op, a, grad_w, acc, sms, optin, handled);
}
