/* dwconv_sparse.c: the depth-wise convolution with a mask on its kernel (SLaK's sparse large
 * kernels), on the CPU: forward, input gradient and weight gradient that skip the masked-out taps.
 *
 * The contract is that of dwconv.h applied to the masked weights weight * mask: the forward pass
 * and the input gradient equal the dense kernels on weight * mask, the weight gradient equals the
 * dense weight gradient times the mask (zero where the mask is off: the gradient of the masked
 * convolution). Several masked kernels on the same input (SLaK's 51x5 + 5x51 + 5x5) run as one
 * merged kernel: each kernel is placed in a common frame by its padding, and taps that land on
 * the same position are added, so a plane is read once for all of them.
 *
 * How taps are skipped. The dense kernel (dwconv.c's corr_plane) shares each loaded input vector
 * among the R output rows of a tile, one kernel row each; with a random mask those R taps are
 * almost never all off, so a tap cannot simply be dropped from the dense tile. Here the pairs
 * (source row, kernel column) of a tile are grouped by which of its rows have a live tap there
 * (pt_tile): each group's loop does one load and exactly the FMAs of its live taps. The work is
 * proportional to the live taps, but a load now feeds fewer FMAs, so the dense kernel stays faster
 * down to a fairly low density; the choice (auto) is made per call from the density (see
 * SPARSE_CORR_MAX_DENSITY).
 *
 * The weight gradient is a dot product per live tap over the batch and the plane, grouped the same
 * way (wg): kernel columns with the same live rows in a block of GR kernel rows share each loaded
 * input vector among those rows, and each loaded grad_out vector among the columns.
 *
 * Tried and measured (examples/bench/sparse_dwconv.lua, 2-core AVX-512): per-kernel-row tap lists
 * with one load per live tap and output row (load-bound, about 2x the dense cost per live tap);
 * shifted vectors from aligned loads with vpermt2ps instead of unaligned loads (slower: the
 * permutes compete with the FMAs for port 5); in the weight gradient, per-row blocks of live taps
 * (0.45x dense at full density) and interleaved row phases (no gain). Not tried: tiles of 8 rows,
 * whose loads would feed twice as many taps but need 255 pattern loops.
 *
 * Only stride 1, dilation 1 runs here; other parameters take the dense kernels on weight * mask
 * (correct, not faster). The plain reference is the dense reference on weight * mask
 * (spec/dwconv_sparse_spec.lua compares both paths with it on awkward shapes).
 *
 * On a device (any operand off the CPU: the CUDA backend) the same contract is composed from ops
 * that run there: weight * mask, then the dense front functions of dwconv.c (which send device
 * tensors to the backend's dwconv kernels), and the dense weight gradient times the mask. The
 * checks and their messages are the CPU path's, plus one device for every operand (mask
 * included). No skipping of taps there: the GPU's dense kernels are what runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "dwconv.h"
#include "dwconv_device.h"
#include "dwconv_internal.h"
#include "grad.h"


#define MAX_KERNELS 8 /* as dwconv.c's sums */

/* ---- which path --------------------------------------------------------------------------------- */

/* The sparse kernels run below these fractions of live taps, where examples/bench/sparse_dwconv.lua
 * shows them ahead of the dense kernels on this project's 2-core AVX-512 machines: for the forward
 * pass and the input gradient, with kernels of at least SPARSE_BIG_TAPS taps (31x31, 51x51, the
 * merged SLaK triple) and smaller ones (13x13, 51x5 alone: fewer pairs per tile to spread over
 * the 15 pattern loops); and for the weight gradient. A load feeds as many FMAs as live taps share
 * it, so the sparse kernels lose their edge over the dense tile (every load feeding 4 x V FMAs) as
 * the density grows; the weight gradient, whose dense kernel shares loads in two directions and
 * whose sparse one splits into many short loops, only gains at low densities. */
#define SPARSE_BIG_TAPS 400
#define SPARSE_CORR_MAX_DENSITY 0.75
#define SPARSE_CORR_MAX_DENSITY_SMALL 0.35
#define SPARSE_WEIGHT_MAX_DENSITY 0.15

static int sparse_mode; /* 0 auto, 1 always the sparse kernels, 2 always dense on weight * mask */

int lark_dwconv2d_set_sparse_path(const char *mode) {
  if (!mode) return lark_set_error(LARK_ERR_ARG, "dwconv2d_sparse_path: mode is NULL");
  if (!strcmp(mode, "auto")) sparse_mode = 0;
  else if (!strcmp(mode, "sparse")) sparse_mode = 1;
  else if (!strcmp(mode, "dense")) sparse_mode = 2;
  else return lark_set_error(LARK_ERR_ARG, "dwconv2d_sparse_path: expected \"auto\", \"sparse\" or \"dense\", got \"%s\"", mode);
  return 0;
}

const char *lark_dwconv2d_sparse_path(void) { return sparse_mode == 1 ? "sparse" : sparse_mode == 2 ? "dense" : "auto"; }

/* ---- validation and the merged frame ------------------------------------------------------------ */

/* mask (C, 1, kh, kw) bool, or NULL (every tap live); its device is checked with the other
 * operands' (on_device, check_one_device). */
static int check_mask(const char *op, const lark_tensor *mask, const lark_tensor *weight, int k, int nk,
                      int64_t c, const lark_conv2d_params *p) {
  if (!mask) return 0;
  char name[32];
  if (nk > 1) snprintf(name, sizeof name, "mask %d", k + 1);
  else snprintf(name, sizeof name, "mask");
  int rc = lark_check_alive(op, mask, name);
  if (rc) return rc;
  if (mask->dtype != LARK_BOOL)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s must be bool (true = live tap), got %s", op, name,
                          lark_dtype_name(mask->dtype));
  int64_t want[4] = {c, 1, p->kh, p->kw};
  bool ok = mask->ndim == 4;
  for (int d = 0; ok && d < 4; d++) ok = mask->shape[d] == want[d];
  if (!ok) {
    char b1[128], b2[128];
    return lark_set_error(LARK_ERR_SHAPE, "%s: %s must have the kernel's shape %s%s, got %s", op, name,
                          lark_shape_str(4, want, b1, sizeof b1), weight ? " (the weight's)" : "",
                          lark_shape_str(mask->ndim, mask->shape, b2, sizeof b2));
  }
  return 0;
}

/* The nk kernels placed in one frame: kernel k's tap (i, j) sits at (oy[k] + i, ox[k] + j) of a
 * (kh, kw) kernel with padding (pt, pl), which gives the same output as kernel k with its own
 * padding (all kernels give the same output size). */
typedef struct {
  int nk, kh, kw, pt, pl;
  int oy[MAX_KERNELS], ox[MAX_KERNELS], kkh[MAX_KERNELS], kkw[MAX_KERNELS];
} frame;

static frame make_frame(int nk, const lark_conv2d_params p[]) {
  frame f = {.nk = nk};
  for (int k = 0; k < nk; k++) {
    f.pt = p[k].pad_top > f.pt ? p[k].pad_top : f.pt;
    f.pl = p[k].pad_left > f.pl ? p[k].pad_left : f.pl;
  }
  for (int k = 0; k < nk; k++) {
    f.oy[k] = f.pt - p[k].pad_top, f.ox[k] = f.pl - p[k].pad_left;
    f.kkh[k] = p[k].kh, f.kkw[k] = p[k].kw;
    if (f.oy[k] + p[k].kh > f.kh) f.kh = f.oy[k] + p[k].kh;
    if (f.ox[k] + p[k].kw > f.kw) f.kw = f.ox[k] + p[k].kw;
  }
  return f;
}

static bool all_unit(int nk, const lark_conv2d_params p[]) {
  for (int k = 0; k < nk; k++)
    if (p[k].stride_h != 1 || p[k].stride_w != 1 || p[k].dil_h != 1 || p[k].dil_w != 1) return false;
  return true;
}

/* Live taps of the merged kernel (positions where some kernel has its mask on), summed over the
 * channels, and the taps the dense kernels would run (every tap of every kernel). */
static void count_taps(const frame *f, int64_t c, const bool *const masks[], int64_t *live, int64_t *dense) {
  *dense = 0;
  for (int k = 0; k < f->nk; k++) *dense += c * f->kkh[k] * f->kkw[k];
  if (f->nk == 1) { /* one kernel: its mask's count (byte sums, vectorised) */
    int64_t n = 0, all = *dense;
    const unsigned char *mb = (const unsigned char *)masks[0];
    if (!mb) n = all;
    else
      for (int64_t t = 0; t < all; t++) n += mb[t];
    *live = n;
    return;
  }
  int64_t taps = (int64_t)f->kh * f->kw, n = 0;
  unsigned char *m = malloc((size_t)taps);
  if (!m) {
    *live = *dense;
    return;
  }
  for (int64_t ch = 0; ch < c; ch++) {
    memset(m, 0, (size_t)taps);
    for (int k = 0; k < f->nk; k++) {
      int64_t kt = (int64_t)f->kkh[k] * f->kkw[k];
      const unsigned char *mk = masks[k] ? (const unsigned char *)masks[k] + ch * kt : NULL;
      for (int i = 0; i < f->kkh[k]; i++) {
        unsigned char *row = m + (int64_t)(f->oy[k] + i) * f->kw + f->ox[k];
        for (int j = 0; j < f->kkw[k]; j++) row[j] |= mk ? mk[i * f->kkw[k] + j] : 1;
      }
    }
    for (int64_t t = 0; t < taps; t++) n += m[t];
  }
  free(m);
  *live = n;
}

/* ---- vectors ------------------------------------------------------------------------------------ */

#if defined(__AVX512F__)
#define VBYTES 64
#else
#define VBYTES 32
#endif
typedef float vfloat __attribute__((vector_size(VBYTES)));
typedef double vdouble __attribute__((vector_size(VBYTES)));
typedef float vfloat_u __attribute__((vector_size(VBYTES), aligned(4), may_alias));
typedef double vdouble_u __attribute__((vector_size(VBYTES), aligned(8), may_alias));
#define VW_float (VBYTES / 4)
#define VW_double (VBYTES / 8)

static inline int64_t imax64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* ---- the merged kernel -------------------------------------------------------------------------- */

/* One channel's merged (kh, kw) kernel: W the sum of the kernels' live weights at each position
 * (zero where none is live; wts NULL leaves W zero), M whether some kernel's tap there is live. */
#define DEFINE_BUILD_MERGED(T)                                                                                \
  static void build_merged_##T(const frame *f, int64_t ch, const T *const wts[], const bool *const masks[],  \
                               T *W, unsigned char *M) {                                                    \
    int kw = f->kw;                                                                                         \
    memset(W, 0, sizeof(T) * (size_t)f->kh * (size_t)kw);                                                   \
    memset(M, 0, (size_t)f->kh * (size_t)kw);                                                               \
    /* branch-free: a random mask would mispredict every other tap */                                      \
    for (int k = 0; k < f->nk; k++) {                                                                       \
      int64_t kt = (int64_t)f->kkh[k] * f->kkw[k];                                                          \
      const bool *mk = masks[k] ? masks[k] + ch * kt : NULL;                                                \
      const T *wk = wts ? wts[k] + ch * kt : NULL;                                                          \
      for (int i = 0; i < f->kkh[k]; i++) {                                                                 \
        int64_t at = (int64_t)(f->oy[k] + i) * kw + f->ox[k], kk = (int64_t)i * f->kkw[k];                  \
        const unsigned char *mrow = mk ? (const unsigned char *)mk + kk : NULL;                             \
        for (int j = 0; j < f->kkw[k]; j++) M[at + j] |= mrow ? mrow[j] : 1;                                \
        if (wk)                                                                                             \
          for (int j = 0; j < f->kkw[k]; j++) W[at + j] += wk[kk + j] * (T)(mrow ? mrow[j] : 1);            \
      }                                                                                                     \
    }                                                                                                       \
  }
DEFINE_BUILD_MERGED(float)
DEFINE_BUILD_MERGED(double)

/* ---- forward and input gradient ----------------------------------------------------------------- */

/* A tile holds GR output rows x V vectors. For each source row rho of the tile (rho in
 * [0, kh + GR - 1), relative to its first output row) and kernel column j, the load of that
 * shifted input vector can feed output row r through kernel tap (rho - r, j) for every r < GR
 * whose tap is live: the live set is a pattern of GR bits. The channel's (rho, j) pairs are
 * grouped by pattern, and each pattern has its own loop with exactly its FMAs (the pattern is a
 * constant of the loop, so no branch and no zero weight): one load, then as many FMAs as live
 * taps share it. A dense kernel has every pair in the full pattern, which is corr_plane's tile;
 * at density d a load feeds GR*d FMAs on average instead of GR. */
#define GR 4
#define NPAT ((1 << GR) - 1)
#if defined(__AVX512F__)
#define SP_V 4 /* 4 x 4 accumulators + 4 loaded vectors + 4 weights fit AVX-512's 32 registers */
#else
#define SP_V 2 /* 4 x 2 + 2 + 4 fit AVX2's 16 */
#endif
#define TILE_LD (SP_V * VBYTES / 4) /* elements per row of a tile buffer */

/* One channel's groups for tiles of GR rows, with P rows ldp apart, for the pairs (rho, j) in the
 * window [ro0, ro1) x [jo0, jo1) (outside it a tile only reads padding):
 *   gs  (NPAT, kh + GR)  gs[(pi-1)*(kh+GR) + rho] = the first entry of pattern pi at a source row >= rho
 *   off (entries)        rho * ldp + j of each entry (entries of a pattern sorted by rho)
 *   gw  (entries, GR)    the weights of its taps, W[(rho - r) * kw + j] for bit r (0 where off)
 * from the merged kernel W, M (already flipped in both dims for the input gradient); pat is
 * scratch of (kh + GR - 1) * kw bytes. */
#define DEFINE_BUILD_GROUPS(T)                                                                               \
  static void build_groups_##T(int kh, int kw, const T *W, const unsigned char *M, int64_t ldp, int ro0,    \
                               int ro1, int jo0, int jo1, int32_t *gs, int32_t *off, T *gw,                 \
                               unsigned char *pat) {                                                        \
    int nrho = kh + GR - 1, ld = kh + GR;                                                                    \
    int32_t count[NPAT + 1] = {0}, next[NPAT + 1];                                                           \
    /* the pattern of every (rho, j), row by row of the kernel (vectorised, branch-free: a random  \
     * mask defeats branch prediction); pattern 0 (no live tap) is a bucket like the others, laid \
     * out first and never run */                                                                           \
    for (int rho = ro0; rho < ro1; rho++) {                                                                  \
      unsigned char *prow = pat + (int64_t)rho * kw;                                                         \
      memset(prow + jo0, 0, (size_t)(jo1 - jo0));                                                            \
      int rlo = rho - (kh - 1) > 0 ? rho - (kh - 1) : 0, rhi = rho < GR - 1 ? rho : GR - 1;                 \
      for (int r = rlo; r <= rhi; r++) {                                                                     \
        const unsigned char *mrow = M + (int64_t)(rho - r) * kw;                                             \
        for (int j = jo0; j < jo1; j++) prow[j] |= (unsigned char)(mrow[j] << r);                            \
      }                                                                                                      \
      for (int j = jo0; j < jo1; j++) count[prow[j]]++;                                                      \
    }                                                                                                        \
    int32_t base = 0;                                                                                        \
    for (int pi = 0; pi <= NPAT; pi++) next[pi] = base, base += count[pi];                                   \
    for (int rho = 0; rho < nrho; rho++) {                                                                   \
      for (int pi = 1; pi <= NPAT; pi++) gs[(pi - 1) * ld + rho] = next[pi];                                 \
      if (rho < ro0 || rho >= ro1) continue;                                                                 \
      int rlo = rho - (kh - 1) > 0 ? rho - (kh - 1) : 0, rhi = rho < GR - 1 ? rho : GR - 1;                 \
      const unsigned char *prow = pat + (int64_t)rho * kw;                                                   \
      for (int j = jo0; j < jo1; j++) {                                                                      \
        int32_t e = next[prow[j]]++;                                                                         \
        off[e] = (int32_t)(rho * ldp + j);                                                                   \
        T *w = gw + (int64_t)e * GR;                                                                         \
        for (int r = 0; r < GR; r++) w[r] = r >= rlo && r <= rhi ? W[(int64_t)(rho - r) * kw + j] : (T)0;   \
      }                                                                                                      \
    }                                                                                                        \
    for (int pi = 1; pi <= NPAT; pi++) gs[(pi - 1) * ld + nrho] = next[pi];                                  \
  }
DEFINE_BUILD_GROUPS(float)
DEFINE_BUILD_GROUPS(double)

/* The loop of one pattern PI inside a tile (see pt_tile). */
#define PATTERN_LOOP(T, NPL, VPP, PI)                                                                        \
  {                                                                                                          \
    int32_t e1 = gs[(PI - 1) * ld + rho1];                                                                   \
    for (int32_t e = gs[(PI - 1) * ld + rho0]; e < e1; e++) {                                                \
      const T *p = P + off[e], *w = gw + (int64_t)e * GR;                                                    \
      v##T x[NPL * VPP];                                                                                     \
      _Pragma("GCC unroll 4") for (int k = 0; k < NPL; k++)                                                  \
      _Pragma("GCC unroll 4") for (int v = 0; v < VPP; v++)                                                  \
        x[k * VPP + v] = *(const v##T##_u *)(p + k * pstride + v * VW_##T);                                  \
      _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++) {                                                 \
        if (!((PI >> r) & 1)) continue;                                                                      \
        T wr = w[r];                                                                                         \
        _Pragma("GCC unroll 4") for (int v = 0; v < NPL * VPP; v++) acc[r][v] += wr * x[v];                  \
      }                                                                                                      \
    }                                                                                                        \
  }

/* pt_tile: GR output rows x VPP vectors of each of NPL planes of one channel (the same groups
 * serve them all: on narrow maps, where a row has one or two vectors, this gives every loaded
 * weight and every loop step up to 4 vectors of work) = bias + the entries of every pattern with
 * a source row in [rho0, rho1) (the others meet only padding rows).
 *   P    the zero-bordered source of the first plane at the tile's first output row and column;
 *        plane k's is pstride further (entry offsets are relative to it)
 *   gs, off, gw: the channel's groups (ld = kh + GR)
 *   dst  (NPL, GR, ldd) the tile's outputs, planes dstride apart, VPP vectors per row */
#define DEFINE_PT_TILE(T, NPL, VPP)                                                                          \
  static void pt_tile_##T##_##NPL##_##VPP(const T *restrict P, int64_t pstride, const int32_t *restrict gs,  \
                                          int ld, int rho0, int rho1, const int32_t *restrict off,           \
                                          const T *restrict gw, T *restrict dst, int64_t ldd, int64_t dstride, \
                                          T bias) {                                                          \
    v##T acc[GR][NPL * VPP];                                                                                 \
    _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++)                                                     \
    _Pragma("GCC unroll 4") for (int v = 0; v < NPL * VPP; v++) acc[r][v] = (v##T){0} + bias;                \
    PATTERN_LOOP(T, NPL, VPP, 1) PATTERN_LOOP(T, NPL, VPP, 2) PATTERN_LOOP(T, NPL, VPP, 3)                   \
    PATTERN_LOOP(T, NPL, VPP, 4) PATTERN_LOOP(T, NPL, VPP, 5) PATTERN_LOOP(T, NPL, VPP, 6)                   \
    PATTERN_LOOP(T, NPL, VPP, 7) PATTERN_LOOP(T, NPL, VPP, 8) PATTERN_LOOP(T, NPL, VPP, 9)                   \
    PATTERN_LOOP(T, NPL, VPP, 10) PATTERN_LOOP(T, NPL, VPP, 11) PATTERN_LOOP(T, NPL, VPP, 12)                \
    PATTERN_LOOP(T, NPL, VPP, 13) PATTERN_LOOP(T, NPL, VPP, 14) PATTERN_LOOP(T, NPL, VPP, 15)                \
    _Pragma("GCC unroll 4") for (int k = 0; k < NPL; k++)                                                    \
    _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++)                                                     \
    _Pragma("GCC unroll 4") for (int v = 0; v < VPP; v++)                                                    \
      *(v##T##_u *)(dst + k * dstride + r * ldd + v * VW_##T) = acc[r][k * VPP + v];                         \
  }
typedef void (*pt_tile_float_fn)(const float *, int64_t, const int32_t *, int, int, int, const int32_t *,
                                 const float *, float *, int64_t, int64_t, float);
typedef void (*pt_tile_double_fn)(const double *, int64_t, const int32_t *, int, int, int, const int32_t *,
                                  const double *, double *, int64_t, int64_t, double);
/* pt_tiles[NPL - 1][VPP - 1], for NPL * VPP <= SP_V (NULL elsewhere) */
#if SP_V == 4
#define DEFINE_PT_TILES(T)                                                                                   \
  DEFINE_PT_TILE(T, 1, 1) DEFINE_PT_TILE(T, 1, 2) DEFINE_PT_TILE(T, 1, 3) DEFINE_PT_TILE(T, 1, 4)            \
  DEFINE_PT_TILE(T, 2, 1) DEFINE_PT_TILE(T, 2, 2) DEFINE_PT_TILE(T, 3, 1) DEFINE_PT_TILE(T, 4, 1)            \
  static const pt_tile_##T##_fn pt_tiles_##T[SP_V][SP_V] = {                                                 \
      {pt_tile_##T##_1_1, pt_tile_##T##_1_2, pt_tile_##T##_1_3, pt_tile_##T##_1_4},                          \
      {pt_tile_##T##_2_1, pt_tile_##T##_2_2, NULL, NULL},                                                    \
      {pt_tile_##T##_3_1, NULL, NULL, NULL},                                                                 \
      {pt_tile_##T##_4_1, NULL, NULL, NULL}};
#else
#define DEFINE_PT_TILES(T)                                                                                   \
  DEFINE_PT_TILE(T, 1, 1) DEFINE_PT_TILE(T, 1, 2) DEFINE_PT_TILE(T, 2, 1)                                    \
  static const pt_tile_##T##_fn pt_tiles_##T[SP_V][SP_V] = {{pt_tile_##T##_1_1, pt_tile_##T##_1_2},          \
                                                            {pt_tile_##T##_2_1, NULL}};
#endif
DEFINE_PT_TILES(float)
DEFINE_PT_TILES(double)

/* P's row length and rows for an output (ho, wo) and a kernel (kh, kw): a tile reads up to
 * column round_up(wo, VW * SP_V) + kw - 1 + VW and row ho - 1 + kh + GR - 1. */
static int64_t sp_ldp(int64_t wo, int kw, int vw) { return round_up(wo, (int64_t)vw * SP_V) + kw + vw; }
static int64_t sp_rows(int64_t ho, int kh) { return ho + kh + GR; }

/* Planes of one channel a tile spans: all of a row's vectors come from one plane when it has
 * SP_V or more, otherwise SP_V / nvec planes side by side. */
static int planes_per_tile(int64_t nvec) { return nvec >= SP_V ? 1 : (int)(SP_V / nvec); }

/* sp_planes: for k < npl, out[k] (ho, wo) = bias + the correlation of src[k] (hs, ws) (zero
 * outside, offset by (pt, pl), either may be negative) with one channel's groups. P (npl planes
 * of sp_rows x ldp, pstride apart) is scratch, zero on entry except where an earlier call of the
 * same geometry wrote its interior (the borders stay zero). Every tile computes GR rows and whole
 * vectors (the extra ones read zeros) and writes what lies inside the output. */
#define DEFINE_SP_PLANES(T)                                                                                 \
  static void sp_planes_##T(int npl, const T *const *src, int64_t hs, int64_t ws, int kh, const int32_t *gs, \
                            const int32_t *off, const T *gw, int64_t pt, int64_t pl, T bias, T *const *out,  \
                            int64_t ho, int64_t wo, T *P, int64_t ldp, int64_t pstride) {                   \
    const int vw = VW_##T;                                                                                  \
    int64_t rows = sp_rows(ho, kh);                                                                         \
    int64_t y0 = imax64(0, pt), y1 = imin64(rows, pt + hs);   /* real rows of P */                          \
    int64_t x0 = imax64(0, pl), x1 = imin64(ldp, pl + ws);    /* real columns of P */                       \
    for (int k = 0; k < npl; k++)                                                                           \
      for (int64_t y = y0; y < y1; y++) {                                                                   \
        T *restrict prow = P + k * pstride + y * ldp + x0;                                                  \
        const T *restrict srow = src[k] + (y - pt) * ws + (x0 - pl);                                        \
        for (int64_t c_ = 0; c_ < x1 - x0; c_++) prow[c_] = srow[c_];                                       \
      }                                                                                                     \
    int64_t nvec = (wo + vw - 1) / vw;                                                                      \
    int ld = kh + GR, nrho = kh + GR - 1;                                                                   \
    T tile[SP_V * GR * TILE_LD] __attribute__((aligned(VBYTES)));                                           \
    for (int64_t oh0 = 0; oh0 < ho; oh0 += GR) {                                                            \
      int nr = (int)imin64(GR, ho - oh0);                                                                   \
      int rho0 = (int)imax64(0, y0 - oh0), rho1 = (int)imin64(nrho, y1 - oh0);                              \
      if (rho1 < rho0) rho1 = rho0;                                                                         \
      for (int64_t v0 = 0; v0 < nvec; v0 += SP_V) {                                                         \
        int V = (int)imin64(SP_V, nvec - v0);                                                               \
        int64_t ow0 = v0 * vw, ncols = imin64((int64_t)V * vw, wo - ow0);                                   \
        const T *Pt = P + oh0 * ldp + ow0;                                                                  \
        if (npl == 1 && nr == GR && ncols == (int64_t)V * vw) { /* whole: straight into the output */      \
          pt_tiles_##T[0][V - 1](Pt, pstride, gs, ld, rho0, rho1, off, gw, out[0] + oh0 * wo + ow0, wo, 0, bias); \
          continue;                                                                                         \
        }                                                                                                   \
        pt_tiles_##T[npl - 1][V - 1](Pt, pstride, gs, ld, rho0, rho1, off, gw, tile, TILE_LD, GR * TILE_LD, bias); \
        for (int k = 0; k < npl; k++)                                                                       \
          for (int r = 0; r < nr; r++)                                                                      \
            memcpy(out[k] + (oh0 + r) * wo + ow0, tile + k * GR * TILE_LD + r * TILE_LD, sizeof(T) * (size_t)ncols); \
      }                                                                                                     \
    }                                                                                                       \
  }
DEFINE_SP_PLANES(float)
DEFINE_SP_PLANES(double)

static bool worth_threads(int64_t items, int64_t work) { return items > 1 && work > LARK_PARALLEL_GRAIN; }

/* Every (n, c) plane: forward (src = input (N, C, H, W), dst = output) or input gradient (src =
 * grad_out, dst = grad_input, the kernel flipped and the padding complemented). Work items are
 * runs of planes_per_tile planes of one channel, channel by channel, so that a thread builds each
 * channel's groups once for its run of the batch. */
#define DEFINE_SP_CORR(T)                                                                                   \
  static int sp_corr_##T(const frame *f, int64_t n, int64_t c, bool backward, const T *src, int64_t hs,     \
                         int64_t ws, const T *const wts[], const bool *const masks[], const T *b, T *dst,   \
                         int64_t hd, int64_t wd, int64_t live) {                                            \
    int kh = f->kh, kw = f->kw;                                                                             \
    int64_t pt = backward ? kh - 1 - f->pt : f->pt, pl = backward ? kw - 1 - f->pl : f->pl;                 \
    int64_t taps = (int64_t)kh * kw, ldp = sp_ldp(wd, kw, VW_##T);                                          \
    int64_t entries = (int64_t)(kh + GR - 1) * kw;                                                          \
    int npt = planes_per_tile((wd + VW_##T - 1) / VW_##T);                                                  \
    int64_t runs = (n + npt - 1) / npt, items = runs * c, pstride = sp_rows(hd, kh) * ldp;                  \
    /* the window of pairs (rho, j) that meet real input in some tile: rows, from the first tile's     \
     * first real row to the last; columns, when a row is one block of vectors (v0 = 0 only) */        \
    int64_t nvec = (wd + VW_##T - 1) / VW_##T, y0 = imax64(0, pt), y1 = imin64(sp_rows(hd, kh), pt + hs);   \
    int64_t x0 = imax64(0, pl), x1 = imin64(ldp, pl + ws), last = (hd - 1) / GR * GR;                       \
    int ro0 = (int)imax64(0, y0 - last), ro1 = (int)imax64(ro0, imin64(kh + GR - 1, y1));                   \
    int jo0 = 0, jo1 = kw;                                                                                  \
    if (nvec <= SP_V) {                                                                                     \
      jo0 = (int)imin64(kw, imax64(0, x0 - nvec * VW_##T + 1));                                             \
      jo1 = (int)imax64(jo0, imin64(kw, x1));                                                               \
    }                                                                                                       \
    int failed = 0;                                                                                         \
    _Pragma("omp parallel if (worth_threads(items, hd * wd * (live / (c ? c : 1)) * n * c))")               \
    {                                                                                                       \
      T *P = calloc((size_t)(npt * pstride), sizeof(T));                                                    \
      T *W = malloc(sizeof(T) * (size_t)(taps + entries * GR));                                             \
      unsigned char *M = malloc((size_t)(taps + entries));                                                  \
      int32_t *ints = malloc(sizeof(int32_t) * (size_t)(entries + NPAT * (kh + GR)));                       \
      if (!P || !W || !M || !ints) {                                                                        \
        _Pragma("omp atomic write") failed = 1;                                                             \
      } else {                                                                                              \
        T *gw = W + taps;                                                                                   \
        unsigned char *pat = M + taps;                                                                      \
        int32_t *off = ints, *gs = off + entries;                                                           \
        int64_t built = -1;                                                                                 \
        _Pragma("omp for schedule(static)")                                                                 \
        for (int64_t q = 0; q < items; q++) {                                                               \
          int64_t ch = q / runs, b0 = (q % runs) * npt;                                                     \
          int npl = (int)imin64(npt, n - b0);                                                               \
          if (ch != built) {                                                                                \
            build_merged_##T(f, ch, wts, masks, W, M);                                                      \
            if (backward) /* the flipped kernel: reverse both arrays in place */                            \
              for (int64_t t = 0; t < taps / 2; t++) {                                                      \
                T wt_ = W[t];                                                                               \
                unsigned char mt_ = M[t];                                                                   \
                W[t] = W[taps - 1 - t], M[t] = M[taps - 1 - t];                                             \
                W[taps - 1 - t] = wt_, M[taps - 1 - t] = mt_;                                               \
              }                                                                                             \
            build_groups_##T(kh, kw, W, M, ldp, ro0, ro1, jo0, jo1, gs, off, gw, pat);                      \
            built = ch;                                                                                     \
          }                                                                                                 \
          const T *sp[SP_V];                                                                                \
          T *dp[SP_V];                                                                                      \
          for (int k = 0; k < npl; k++) {                                                                   \
            sp[k] = src + ((b0 + k) * c + ch) * hs * ws;                                                    \
            dp[k] = dst + ((b0 + k) * c + ch) * hd * wd;                                                    \
          }                                                                                                 \
          sp_planes_##T(npl, sp, hs, ws, kh, gs, off, gw, pt, pl, b ? b[ch] : (T)0, dp, hd, wd, P, ldp, pstride); \
        }                                                                                                   \
      }                                                                                                     \
      free(P);                                                                                              \
      free(W);                                                                                              \
      free(M);                                                                                              \
      free(ints);                                                                                           \
    }                                                                                                       \
    return failed ? LARK_ERR_NOMEM : 0;                                                                     \
  }
DEFINE_SP_CORR(float)
DEFINE_SP_CORR(double)

/* ---- weight gradient ---------------------------------------------------------------------------- */

/* wg: the weight gradient of a block of GR kernel rows [i0, i0 + GR) at NC kernel columns cols[]
 * that all have the live-row pattern PI (bit r: tap (i0 + r, col) live), over source rows
 * [y0, y1) and vectors [v0, v1):
 *   accm[(i0 + r) * kw + col] += sum_y sum_v G[y - i0 - r][v] * P[y][v + col]   (vectors of VW)
 *   G0  grad_out rows 0.. (ldg apart), with GR - 1 zero rows above and below;  P the zero-bordered
 *       input (ldp apart). As in the forward pass, a loaded input vector feeds every live tap of its
 *       column (the pattern's rows) and a loaded grad_out vector every column of the block:
 *       NC * PB accumulators (PB = bits of PI, NC <= WG_NC columns, NC * PB <= WG_ACC). */
#if defined(__AVX512F__)
#define WG_ACC 16 /* accumulators: 16 + 4 grad_out vectors + 1 input vector of AVX-512's 32 registers */
#else
#define WG_ACC 8 /* of AVX2's 16 */
#endif
#define WG_NC 4 /* columns per call at most (their pointers stay in general registers) */
#define DEFINE_WG(T, PI, NC)                                                                                \
  static void wg_##T##_##PI##_##NC(const T *restrict G0, int64_t ldg, const T *restrict P, int64_t ldp,     \
                                   int64_t y0, int64_t y1, int i0, int64_t v0, int64_t v1,                  \
                                   const int32_t *restrict cols, v##T *restrict accm, int kw) {             \
    v##T a[NC][GR];                                                                                         \
    int64_t co[NC];                                                                                         \
    _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) {                                                  \
      co[c] = cols[c];                                                                                      \
      _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++)                                                  \
        a[c][r] = (PI >> r) & 1 ? accm[(int64_t)(i0 + r) * kw + co[c]] : (v##T){0};                         \
    }                                                                                                       \
    for (int64_t y = y0; y < y1; y++) {                                                                     \
      const T *prow = P + y * ldp, *grow = G0 + (y - i0) * ldg;                                             \
      for (int64_t v = v0; v < v1; v++) {                                                                   \
        v##T g[GR];                                                                                         \
        _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++)                                                \
          if ((PI >> r) & 1) g[r] = *(const v##T##_u *)(grow - r * ldg + v * VW_##T);                       \
        _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) {                                              \
          v##T xv = *(const v##T##_u *)(prow + v * VW_##T + co[c]);                                         \
          _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++)                                              \
            if ((PI >> r) & 1) a[c][r] += g[r] * xv;                                                        \
        }                                                                                                   \
      }                                                                                                     \
    }                                                                                                       \
    _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++)                                                    \
    _Pragma("GCC unroll 4") for (int r = 0; r < GR; r++)                                                    \
      if ((PI >> r) & 1) accm[(int64_t)(i0 + r) * kw + co[c]] = a[c][r];                                    \
  }
#define DEFINE_WG_NC(T, PI) DEFINE_WG(T, PI, 1) DEFINE_WG(T, PI, 2) DEFINE_WG(T, PI, 3) DEFINE_WG(T, PI, 4)
#define WG_ROW(T, PI) {wg_##T##_##PI##_1, wg_##T##_##PI##_2, wg_##T##_##PI##_3, wg_##T##_##PI##_4}
#define DEFINE_WGS(T)                                                                                       \
  DEFINE_WG_NC(T, 1) DEFINE_WG_NC(T, 2) DEFINE_WG_NC(T, 3) DEFINE_WG_NC(T, 4) DEFINE_WG_NC(T, 5)            \
  DEFINE_WG_NC(T, 6) DEFINE_WG_NC(T, 7) DEFINE_WG_NC(T, 8) DEFINE_WG_NC(T, 9) DEFINE_WG_NC(T, 10)           \
  DEFINE_WG_NC(T, 11) DEFINE_WG_NC(T, 12) DEFINE_WG_NC(T, 13) DEFINE_WG_NC(T, 14) DEFINE_WG_NC(T, 15)       \
  typedef void (*wg_##T##_fn)(const T *, int64_t, const T *, int64_t, int64_t, int64_t, int, int64_t, int64_t, \
                              const int32_t *, v##T *, int);                                                \
  static const wg_##T##_fn wgs_##T[NPAT + 1][WG_NC] = {                                                     \
      {NULL, NULL, NULL, NULL}, WG_ROW(T, 1), WG_ROW(T, 2), WG_ROW(T, 3), WG_ROW(T, 4), WG_ROW(T, 5),        \
      WG_ROW(T, 6), WG_ROW(T, 7), WG_ROW(T, 8), WG_ROW(T, 9), WG_ROW(T, 10), WG_ROW(T, 11), WG_ROW(T, 12),   \
      WG_ROW(T, 13), WG_ROW(T, 14), WG_ROW(T, 15)};
DEFINE_WGS(float)
DEFINE_WGS(double)

/* grads[k] (C, kh_k, kw_k) = the weight gradient of kernel k at its live taps, 0 elsewhere, from
 * grad_out gy (N, C, ho, wo) and input x (N, C, h, w). One channel per thread; the batch is summed
 * in order, so the result does not depend on the number of threads. */
#define DEFINE_SP_WEIGHT(T)                                                                                 \
  static int sp_weight_##T(const frame *f, int64_t n, int64_t c, int64_t h, int64_t w, int64_t ho,         \
                           int64_t wo, const T *gy, const T *x, const bool *const masks[], T *const grads[], \
                           int64_t live) {                                                                  \
    const int vw = VW_##T;                                                                                  \
    int kh = f->kh, kw = f->kw, nblk = (kh + GR - 1) / GR;                                                  \
    int64_t taps = (int64_t)kh * kw, ldg = round_up(wo, vw), ldp = ldg + kw + vw, prows = ho + kh - 1;      \
    int64_t nvec = ldg / vw, x0 = f->pl, x1 = f->pl + w, grows = ho + 2 * (GR - 1);                         \
    int failed = 0;                                                                                         \
    _Pragma("omp parallel if (worth_threads(c, n * ho * wo * live))")                                       \
    {                                                                                                       \
      T *P = calloc((size_t)(prows * ldp), sizeof(T));                                                      \
      T *G = calloc((size_t)(grows * ldg), sizeof(T));                                                      \
      T *W = malloc(sizeof(T) * (size_t)taps);                                                              \
      unsigned char *M = malloc((size_t)taps);                                                              \
      /* per block of GR kernel rows: the columns of each pattern (pstart[blk][pi] .. [pi + 1]) */         \
      int32_t *pcols = malloc(sizeof(int32_t) * (size_t)(nblk * kw));                                       \
      int32_t *pstart = malloc(sizeof(int32_t) * (size_t)(nblk * (NPAT + 2)));                              \
      v##T *acc = aligned_alloc(VBYTES, sizeof(v##T) * (size_t)taps);                                       \
      if (!P || !G || !W || !M || !pcols || !pstart || !acc) {                                              \
        _Pragma("omp atomic write") failed = 1;                                                             \
      } else {                                                                                              \
        T *G0 = G + (GR - 1) * ldg;                                                                         \
        _Pragma("omp for schedule(dynamic, 1)")                                                             \
        for (int64_t ch = 0; ch < c; ch++) {                                                                \
          build_merged_##T(f, ch, NULL, masks, W, M);                                                       \
          for (int blk = 0; blk < nblk; blk++) {                                                            \
            int i0 = blk * GR, cnt[NPAT + 2] = {0};                                                         \
            int32_t *ps = pstart + blk * (NPAT + 2), *pc = pcols + blk * kw;                                \
            for (int pass = 0; pass < 2; pass++) {                                                          \
              if (pass == 1) {                                                                              \
                ps[0] = 0;                                                                                  \
                for (int pi = 0; pi <= NPAT; pi++) ps[pi + 1] = ps[pi] + cnt[pi];                           \
                for (int pi = 0; pi <= NPAT; pi++) cnt[pi] = ps[pi];                                        \
              }                                                                                             \
              for (int j = 0; j < kw; j++) {                                                                \
                int pi = 0;                                                                                 \
                for (int r = 0; r < GR && i0 + r < kh; r++) pi |= M[(int64_t)(i0 + r) * kw + j] << r;      \
                if (pass == 0) cnt[pi]++;                                                                   \
                else pc[cnt[pi]++] = j;                                                                     \
              }                                                                                             \
            }                                                                                               \
          }                                                                                                 \
          memset(acc, 0, sizeof(v##T) * (size_t)taps);                                                      \
          for (int64_t b = 0; b < n; b++) {                                                                 \
            const T *xp = x + (b * c + ch) * h * w, *gp = gy + (b * c + ch) * ho * wo;                      \
            for (int64_t r = 0; r < h; r++) memcpy(P + (f->pt + r) * ldp + f->pl, xp + r * w, sizeof(T) * (size_t)w); \
            for (int64_t r = 0; r < ho; r++) memcpy(G0 + r * ldg, gp + r * wo, sizeof(T) * (size_t)wo);     \
            for (int blk = 0; blk < nblk; blk++) {                                                          \
              int i0 = blk * GR;                                                                            \
              const int32_t *ps = pstart + blk * (NPAT + 2), *pc = pcols + blk * kw;                        \
              /* real rows of P that meet a grad_out row of some kernel row of the block */                \
              int64_t y0 = imax64(f->pt, i0), y1 = imin64(f->pt + h, i0 + GR - 1 + ho);                     \
              if (y1 <= y0) continue;                                                                       \
              for (int pi = 1; pi <= NPAT; pi++) {                                                          \
                int ncmax = (int)imin64(WG_NC, WG_ACC / __builtin_popcount((unsigned)pi));                  \
                for (int32_t t = ps[pi]; t < ps[pi + 1]; t += ncmax) {                                      \
                  int nc = (int)imin64(ncmax, ps[pi + 1] - t);                                              \
                  /* vectors where some column of the block reads a real column */                         \
                  int64_t jmin = pc[t], jmax = pc[t + nc - 1], v0 = 0, v1 = nvec;                           \
                  while (v0 < v1 && v0 * vw + jmax + vw - 1 < x0) v0++;                                     \
                  while (v1 > v0 && (v1 - 1) * vw + jmin >= x1) v1--;                                       \
                  if (v1 > v0) wgs_##T[pi][nc - 1](G0, ldg, P, ldp, y0, y1, i0, v0, v1, pc + t, acc, kw);  \
                }                                                                                           \
              }                                                                                             \
            }                                                                                               \
          }                                                                                                 \
          /* the merged taps' sums, scattered to each kernel's live taps */                                \
          for (int64_t t = 0; t < taps; t++) {                                                              \
            T s_ = 0;                                                                                       \
            for (int k = 0; k < vw; k++) s_ += acc[t][k];                                                   \
            W[t] = M[t] ? s_ : (T)0;                                                                        \
          }                                                                                                 \
          for (int k = 0; k < f->nk; k++) {                                                                 \
            int64_t kt = (int64_t)f->kkh[k] * f->kkw[k];                                                    \
            const bool *mk = masks[k] ? masks[k] + ch * kt : NULL;                                          \
            T *gk = grads[k] + ch * kt;                                                                     \
            for (int i = 0; i < f->kkh[k]; i++)                                                             \
              for (int j = 0; j < f->kkw[k]; j++)                                                           \
                gk[i * f->kkw[k] + j] = !mk || mk[i * f->kkw[k] + j]                                        \
                                            ? W[(int64_t)(f->oy[k] + i) * kw + f->ox[k] + j] : (T)0;        \
          }                                                                                                 \
        }                                                                                                   \
      }                                                                                                     \
      free(P);                                                                                              \
      free(G);                                                                                              \
      free(W);                                                                                              \
      free(M);                                                                                              \
      free(pcols);                                                                                          \
      free(pstart);                                                                                         \
      free(acc);                                                                                            \
    }                                                                                                       \
    return failed ? LARK_ERR_NOMEM : 0;                                                                     \
  }
DEFINE_SP_WEIGHT(float)
DEFINE_SP_WEIGHT(double)

/* ---- front functions ---------------------------------------------------------------------------- */

static void release_all(int n, lark_tensor **ts) {
  for (int i = 0; i < n; i++) lark_tensor_release(ts[i]);
}

/* weights[k] * masks[k] (weights[k] itself, retained, where masks[k] is NULL) */
static int masked_weights(int nk, const lark_tensor *const weights[], const lark_tensor *const masks[],
                          lark_tensor *out[]) {
  for (int k = 0; k < nk; k++) {
    out[k] = NULL;
    if (!masks[k]) {
      out[k] = lark_tensor_retain((lark_tensor *)weights[k]);
    } else {
      lark_tensor *m = lark_cast(masks[k], weights[k]->dtype);
      out[k] = m ? lark_binary(LARK_OP_MUL, weights[k], m) : NULL;
      lark_tensor_release(m);
    }
    if (!out[k]) {
      release_all(k, out);
      return lark_error_code();
    }
  }
  return 0;
}

/* Contiguous views of the masks' data (NULL stays NULL), and their pointers. */
static int mask_data(int nk, const lark_tensor *const masks[], lark_tensor *held[], const bool *ptrs[]) {
  for (int k = 0; k < nk; k++) {
    held[k] = NULL, ptrs[k] = NULL;
    if (!masks[k]) continue;
    if (!(held[k] = lark_contiguous(masks[k]))) {
      release_all(k, held);
      return lark_error_code();
    }
    ptrs[k] = lark_data_ptr(held[k]);
  }
  return 0;
}

/* Whether the sparse kernels run for these kernels and masks (and the live tap count). */
/* Whether the sparse kernels run for these kernels and masks (and the live tap count); wd is the
 * width of the pass's output (the forward output or the input gradient). In auto mode: at a live
 * fraction below max_density, for kernels of at least SPARSE_MIN_TAPS taps (small kernels are
 * cheap dense), and not where the dense pass puts 16 channels in a vector (dwconv.c's narrow-map
 * path for float32 on AVX-512, which no per-channel mask can thin out). */
#define SPARSE_MIN_TAPS 49
static bool use_sparse(int nk, const lark_conv2d_params p[], const frame *f, int64_t c, int64_t wd, lark_dtype dt,
                       const bool *const mp[], double max_density, int64_t *live) {
  int64_t dense;
  *live = 0;
  if (!all_unit(nk, p) || sparse_mode == 2) return false;
  count_taps(f, c, mp, live, &dense);
  if (sparse_mode == 1) return true;
#if defined(__AVX512F__)
  if (nk == 1 && dt == LARK_FLOAT32 && c % 16 == 0 && wd <= 24 && f->kw <= 13 && f->kh <= 64) return false;
#else
  (void)dt, (void)wd;
#endif
  int64_t frame_taps = (int64_t)f->kh * f->kw;
  if (frame_taps < SPARSE_BIG_TAPS && max_density > SPARSE_CORR_MAX_DENSITY_SMALL) max_density = SPARSE_CORR_MAX_DENSITY_SMALL;
  return frame_taps >= SPARSE_MIN_TAPS && (double)*live < max_density * (double)dense;
}

/* Whether any operand lives off the CPU (NULL ones skipped): x, y, the nk weights (weights may be
 * NULL) and the masks (masks may be NULL). Then the device path runs, which also reports operands
 * split between the CPU and a device. */
static bool on_device(const lark_tensor *x, const lark_tensor *y, int nk, const lark_tensor *const weights[],
                      const lark_tensor *const masks[]) {
  if (nk < 1 || nk > MAX_KERNELS) return false; /* the argument checks report it */
  if (lark_dwconv2d_sum_on_device(x, weights ? nk : 0, weights, y)) return true;
  for (int k = 0; masks && k < nk; k++)
    if (lark_dwconv2d_on_device(masks[k], NULL, NULL)) return true;
  return false;
}

/* The device path's operands all on one device: x (named xn), y (yn; may be NULL), the weights and
 * the masks (NULL entries skipped), named as the argument checks name them; and that device's
 * backend has the dense kernels (else "op: not implemented for <device>", naming this op). */
static int check_one_device(const char *op, const lark_tensor *x, const char *xn, const lark_tensor *y,
                            const char *yn, int nk, const lark_tensor *const weights[],
                            const lark_tensor *const masks[]) {
  const lark_tensor *ts[2 * MAX_KERNELS + 2];
  const char *names[2 * MAX_KERNELS + 2];
  char buf[2 * MAX_KERNELS][24];
  int n = 0;
  ts[n] = x, names[n++] = xn;
  if (y) ts[n] = y, names[n++] = yn;
  for (int k = 0; k < nk; k++) {
    const lark_tensor *pair[2] = {weights ? weights[k] : NULL, masks[k]};
    for (int i = 0; i < 2; i++) {
      if (!pair[i]) continue;
      if (nk > 1) snprintf(buf[2 * k + i], sizeof buf[0], "%s %d", i ? "mask" : "weight", k + 1);
      else snprintf(buf[2 * k + i], sizeof buf[0], "%s", i ? "mask" : "weight");
      ts[n] = pair[i], names[n++] = buf[2 * k + i];
    }
  }
  int rc = lark_check_same_device(op, n, ts, names);
  if (rc) return rc;
  lark_device dev = lark_tensor_device(x);
  const lark_backend *be = lark_backend_for(dev);
  if (!be || !be->dwconv_forward || !be->dwconv_backward_input || !be->dwconv_backward_weight)
    return lark_backend_missing(op, dev);
  return 0;
}

static int check_masks(const char *op, int nk, const lark_tensor *const weights[], const lark_tensor *const masks[],
                       int64_t c, const lark_conv2d_params p[]) {
  if (!masks) return lark_set_error(LARK_ERR_ARG, "%s: masks is NULL (pass NULL entries for dense kernels)", op);
  for (int k = 0; k < nk; k++) {
    int rc = check_mask(op, masks[k], weights ? weights[k] : NULL, k, nk, c, &p[k]);
    if (rc) return rc;
  }
  return 0;
}

/* The dense kernels on weights * masks (dwconv.c's front functions, on the operands' device): the
 * CPU's path where skipping taps does not pay, and the device path. Arguments as masked_corr's. */
static lark_tensor *dense_corr(bool backward, const lark_tensor *x, int nk, const lark_tensor *const weights[],
                               const lark_tensor *const masks[], const lark_tensor *bias,
                               const int64_t input_shape[4], const lark_conv2d_params p[]) {
  lark_tensor *mw[MAX_KERNELS], *out;
  if (masked_weights(nk, weights, masks, mw)) return NULL;
  const lark_tensor *const *cw = (const lark_tensor *const *)mw;
  out = backward ? lark_dwconv2d_sum_backward_input(x, nk, cw, input_shape, p)
                 : lark_dwconv2d_sum_forward(x, nk, cw, bias, p);
  release_all(nk, mw);
  return out;
}

/* forward (backward false: x = input, shape its own) or input gradient (x = grad_out, shape =
 * input_shape) of the sum of the masked kernels. */
static lark_tensor *masked_corr(const char *op, bool backward, const lark_tensor *x, int nk,
                                const lark_tensor *const weights[], const lark_tensor *const masks[],
                                const lark_tensor *bias, const int64_t input_shape[4], const lark_conv2d_params p[]) {
  int64_t ho, wo;
  if (!weights) return (lark_set_error(LARK_ERR_ARG, "%s: weights is NULL", op), NULL);
  bool dev = on_device(x, bias, nk, weights, masks);
  if (lark_dwconv_check_args(op, x, backward ? input_shape : NULL, nk, weights, bias, p, &ho, &wo)) return NULL;
  const int64_t *in = backward ? input_shape : x->shape;
  int64_t n = in[0], c = in[1], h = in[2], w = in[3];
  if (check_masks(op, nk, weights, masks, c, p)) return NULL;
  if (dev) {
    if (check_one_device(op, x, backward ? "grad_out" : "input", bias, "bias", nk, weights, masks)) return NULL;
    return dense_corr(backward, x, nk, weights, masks, bias, input_shape, p);
  }
  lark_tensor *mheld[MAX_KERNELS];
  const bool *mp[MAX_KERNELS];
  if (mask_data(nk, masks, mheld, mp)) return NULL;
  frame f = make_frame(nk, p);
  int64_t live;
  lark_tensor *out = NULL;
  if (!use_sparse(nk, p, &f, c, backward ? w : wo, x->dtype, mp, SPARSE_CORR_MAX_DENSITY, &live)) {
    release_all(nk, mheld);
    return dense_corr(backward, x, nk, weights, masks, bias, input_shape, p);
  }
  int64_t oshape[4] = {n, c, backward ? h : ho, backward ? w : wo};
  out = lark_empty(4, oshape, x->dtype, NULL);
  if (!out || lark_numel(out) == 0) {
    release_all(nk, mheld);
    return out;
  }
  lark_tensor *ops[MAX_KERNELS + 2] = {lark_contiguous(x), bias ? lark_contiguous(bias) : NULL};
  bool ok = ops[0] && (!bias || ops[1]);
  for (int k = 0; k < nk; k++) ok = (ops[2 + k] = lark_contiguous(weights[k])) && ok;
  int rc = ok ? 0 : lark_error_code();
  int64_t hs = backward ? ho : h, ws = backward ? wo : w;
  if (ok && x->dtype == LARK_FLOAT32) {
    const float *wts[MAX_KERNELS];
    for (int k = 0; k < nk; k++) wts[k] = lark_data_ptr(ops[2 + k]);
    rc = sp_corr_float(&f, n, c, backward, lark_data_ptr(ops[0]), hs, ws, wts, mp,
                       bias ? lark_data_ptr(ops[1]) : NULL, lark_data_ptr(out), oshape[2], oshape[3], live);
  } else if (ok) {
    const double *wts[MAX_KERNELS];
    for (int k = 0; k < nk; k++) wts[k] = lark_data_ptr(ops[2 + k]);
    rc = sp_corr_double(&f, n, c, backward, lark_data_ptr(ops[0]), hs, ws, wts, mp,
                        bias ? lark_data_ptr(ops[1]) : NULL, lark_data_ptr(out), oshape[2], oshape[3], live);
  }
  release_all(nk + 2, ops);
  release_all(nk, mheld);
  if (rc) {
    if (ok) lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    lark_tensor_release(out);
    return NULL;
  }
  return out;
}

/* The dense weight gradients (dwconv.c's front function, on the operands' device) times the masks,
 * into grads[0 .. nk); all or none (the rest NULL). */
static int dense_weight_grads(const lark_tensor *grad_out, const lark_tensor *input, int nk,
                              const lark_tensor *const masks[], const lark_conv2d_params p[], lark_tensor *grads[]) {
  int rc = 0;
  for (int k = 0; k < nk && !rc; k++) {
    lark_tensor *g = lark_dwconv2d_backward_weight(grad_out, input, &p[k]);
    if (g && masks[k]) {
      lark_tensor *m = lark_cast(masks[k], g->dtype);
      lark_tensor *gm = m ? lark_binary(LARK_OP_MUL, g, m) : NULL;
      lark_tensor_release(m);
      lark_tensor_release(g);
      g = gm;
    }
    if (!(grads[k] = g)) rc = lark_error_code();
  }
  if (rc) {
    release_all(nk, grads);
    for (int k = 0; k < nk; k++) grads[k] = NULL;
  }
  return rc;
}

static int masked_weight_grads(const char *op, const lark_tensor *grad_out, const lark_tensor *input, int nk,
                               const lark_tensor *const masks[], const lark_conv2d_params p[], lark_tensor *grads[]) {
  int64_t ho, wo;
  if (!grads) return lark_set_error(LARK_ERR_ARG, "%s: grads is NULL", op);
  for (int k = 0; k < nk && k < MAX_KERNELS; k++) grads[k] = NULL;
  bool dev = on_device(grad_out, input, nk, NULL, masks);
  int rc = lark_dwconv_check_args(op, input, NULL, nk, NULL, NULL, p, &ho, &wo);
  if (rc) return rc;
  const int64_t *in = input->shape;
  int64_t n = in[0], c = in[1], h = in[2], w = in[3];
  if ((rc = lark_dwconv_check_args(op, grad_out, in, nk, NULL, NULL, p, &ho, &wo))) return rc;
  if (grad_out->dtype != input->dtype)
    return lark_set_error(LARK_ERR_DTYPE, "%s: grad_out (%s) and input (%s) must have the same dtype", op,
                          lark_dtype_name(grad_out->dtype), lark_dtype_name(input->dtype));
  if ((rc = check_masks(op, nk, NULL, masks, c, p))) return rc;
  if (dev) {
    if ((rc = check_one_device(op, grad_out, "grad_out", input, "input", nk, NULL, masks))) return rc;
    return dense_weight_grads(grad_out, input, nk, masks, p, grads);
  }
  lark_tensor *mheld[MAX_KERNELS];
  const bool *mp[MAX_KERNELS];
  if ((rc = mask_data(nk, masks, mheld, mp))) return rc;
  frame f = make_frame(nk, p);
  int64_t live;
  if (!use_sparse(nk, p, &f, c, wo, input->dtype, mp, SPARSE_WEIGHT_MAX_DENSITY, &live) || n * ho * wo == 0) {
    rc = dense_weight_grads(grad_out, input, nk, masks, p, grads);
  } else {
    for (int k = 0; k < nk && !rc; k++)
      if (!(grads[k] = lark_empty(4, (int64_t[]){c, 1, p[k].kh, p[k].kw}, input->dtype, NULL))) rc = lark_error_code();
    lark_tensor *gy = rc ? NULL : lark_contiguous(grad_out), *x = rc ? NULL : lark_contiguous(input);
    if (!rc && (!gy || !x)) rc = lark_error_code();
    if (!rc && input->dtype == LARK_FLOAT32) {
      float *gp[MAX_KERNELS];
      for (int k = 0; k < nk; k++) gp[k] = lark_data_ptr(grads[k]);
      if ((rc = sp_weight_float(&f, n, c, h, w, ho, wo, lark_data_ptr(gy), lark_data_ptr(x), mp, gp, live)))
        lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    } else if (!rc) {
      double *gp[MAX_KERNELS];
      for (int k = 0; k < nk; k++) gp[k] = lark_data_ptr(grads[k]);
      if ((rc = sp_weight_double(&f, n, c, h, w, ho, wo, lark_data_ptr(gy), lark_data_ptr(x), mp, gp, live)))
        lark_set_error(rc, "%s: out of memory for the scratch buffers", op);
    }
    lark_tensor_release(gy);
    lark_tensor_release(x);
  }
  release_all(nk, mheld);
  if (rc) {
    release_all(nk, grads);
    for (int k = 0; k < nk; k++) grads[k] = NULL;
  }
  return rc;
}

lark_tensor *lark_dwconv2d_masked_sum_forward(const lark_tensor *input, int nk, const lark_tensor *const weights[],
                                              const lark_tensor *const masks[], const lark_tensor *bias,
                                              const lark_conv2d_params p[]) {
  return masked_corr("dwconv2d_sum (masked)", false, input, nk, weights, masks, bias, NULL, p);
}
lark_tensor *lark_dwconv2d_masked_sum_backward_input(const lark_tensor *grad_out, int nk,
                                                     const lark_tensor *const weights[],
                                                     const lark_tensor *const masks[], const int64_t input_shape[4],
                                                     const lark_conv2d_params p[]) {
  return masked_corr("dwconv2d_sum_backward_input (masked)", true, grad_out, nk, weights, masks, NULL, input_shape, p);
}
int lark_dwconv2d_masked_sum_backward_weight(const lark_tensor *grad_out, const lark_tensor *input, int nk,
                                             const lark_tensor *const masks[], const lark_conv2d_params p[],
                                             lark_tensor *grads[]) {
  return masked_weight_grads("dwconv2d_sum_backward_weight (masked)", grad_out, input, nk, masks, p, grads);
}

lark_tensor *lark_dwconv2d_masked_forward(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *mask,
                                          const lark_tensor *bias, const lark_conv2d_params *p) {
  return masked_corr("dwconv2d (masked)", false, input, 1, &weight, &mask, bias, NULL, p);
}
lark_tensor *lark_dwconv2d_masked_backward_input(const lark_tensor *grad_out, const lark_tensor *weight,
                                                 const lark_tensor *mask, const int64_t input_shape[4],
                                                 const lark_conv2d_params *p) {
  return masked_corr("dwconv2d_backward_input (masked)", true, grad_out, 1, &weight, &mask, NULL, input_shape, p);
}
lark_tensor *lark_dwconv2d_masked_backward_weight(const lark_tensor *grad_out, const lark_tensor *input,
                                                  const lark_tensor *mask, const lark_conv2d_params *p) {
  lark_tensor *g = NULL;
  if (masked_weight_grads("dwconv2d_backward_weight (masked)", grad_out, input, 1, &mask, p, &g)) return NULL;
  return g;
}

/* ---- autograd ----------------------------------------------------------------------------------- */

static lark_conv2d_params params_of(const lark_node *n) {
  const int64_t *a = n->iarg;
  return (lark_conv2d_params){(int)a[0], (int)a[1], (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[6], (int)a[7],
                              (int)a[8], (int)a[9]};
}

/* inputs: 0 input, 1 weight, 2 bias (may be absent); saved: 0 input, 1 weight, 2 mask; iarg[10]:
 * dense weight gradient */
static int masked_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_conv2d_params p = params_of(n);
  const lark_tensor *mask = lark_node_saved(n, 2);
  int rc = mask ? 0 : lark_error_code();
  if (!rc && n->needs_grad[0]) {
    const lark_tensor *w = lark_node_saved(n, 1);
    if (!w || !(gin[0] = lark_dwconv2d_masked_backward_input(g, w, mask, n->in_shape[0], &p))) rc = lark_error_code();
  }
  if (!rc && n->needs_grad[1]) {
    const lark_tensor *x = lark_node_saved(n, 0);
    if (!x || !(gin[1] = n->iarg[10] ? lark_dwconv2d_backward_weight(g, x, &p)
                                     : lark_dwconv2d_masked_backward_weight(g, x, mask, &p)))
      rc = lark_error_code();
  }
  if (!rc && n->ninputs > 2 && n->needs_grad[2]) {
    lark_reduce_args r = {.ndims = 3, .dims = {0, 2, 3}, .keepdim = false, .p = 2};
    if (!(gin[2] = lark_reduce(LARK_RED_SUM, g, &r))) rc = lark_error_code();
  }
  if (rc) {
    for (int i = 0; i < n->ninputs; i++) {
      lark_tensor_release(gin[i]);
      gin[i] = NULL;
    }
    return rc;
  }
  return 0;
}

lark_tensor *lark_dwconv2d_masked(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *mask,
                                  const lark_tensor *bias, const lark_conv2d_params *p, bool dense_grad) {
  lark_tensor *out;
  LARK_NO_GRAD(out = lark_dwconv2d_masked_forward(input, weight, mask, bias, p));
  if (!out || !(input->requires_grad || weight->requires_grad || (bias && bias->requires_grad))) return out;
  const lark_tensor *in[3] = {input, weight, bias};
  lark_node *n = lark_node_new("dwconv2d_masked", masked_backward, bias ? 3 : 2, in);
  if (!n) return out;
  int64_t args[11] = {p->kh, p->kw, p->stride_h, p->stride_w, p->pad_top, p->pad_bottom,
                      p->pad_left, p->pad_right, p->dil_h, p->dil_w, dense_grad};
  memcpy(n->iarg, args, sizeof args);
  if (lark_node_save(n, input) || lark_node_save(n, weight) || lark_node_save(n, mask)) {
    lark_node_release(n);
    lark_tensor_release(out);
    return NULL;
  }
  lark_node_attach(n, out);
  return out;
}
