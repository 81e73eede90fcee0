/* transform.c: batch transforms for the data pipeline (uint8 -> float32 conversion, random crop with
 * zero padding, horizontal flip, per-channel normalisation, mixup and cutmix with soft targets), the
 * scalar random draws they use, and the seeded epoch permutation.
 *
 * Randomness. Every draw comes from a lark_generator on random.c's Philox scheme, one counter per
 * scalar: a draw uses block (offset) and advances offset by 1, taking its value as random.c does
 * (uniform: 53 bits of w0w1; randint: floor(w0w1w2w3 * range / 2^128); normal: Box-Muller on the
 * block). The loader gives each batch its own generator, seeded from (seed, epoch, batch index), so
 * a batch depends on nothing else: not on which thread made it, nor when.
 *
 * The order of the draws for a batch of n samples (a reference implementation must follow it):
 *   1. per sample i = 0..n-1: if cropping (size or padding > 0), dy then dx (randint over the padded
 *      size - crop size + 1);
 *      if hflip > 0, one uniform u (flip when u < hflip);
 *   2. if mixing: when both mixup and cutmix are on, one uniform picks mixup (u < 0.5) or cutmix;
 *      lam ~ Beta(alpha, alpha) (Marsaglia-Tsang gammas); the partner permutation by Fisher-Yates
 *      (for i = n-1 down to 1: j = randint(i + 1), swap); for cutmix the box centre cy = randint(h),
 *      cx = randint(w) with a box of (int)(h sqrt(1 - lam)) by (int)(w sqrt(1 - lam)) clipped to the
 *      image, and lam recomputed as 1 - box area / image area (as timm does).
 *
 * Per sample, out[c][i][j] = (scale * in[c][i + dy - p][J + dx - p] - mean[c]) / std[c], with
 * J = S - 1 - j when flipped (else j) and 0 read outside the image (padding happens before
 * normalisation, as torchvision's RandomCrop before Normalize); computed as v * a + b with
 * a = scale / std, b = -mean / std, so within an ulp or two of the formula. Mixing acts on the normalised batch:
 * mixup x = lam x + (1 - lam) x[perm], cutmix pastes the partner's box; the soft target row is
 * lam onehot(y) + (1 - lam) onehot(y[perm]), which sums to 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

/* ---- scalar draws on the Philox scheme ------------------------------------------------------ */

static void next_block(lark_generator *g, uint32_t w[4]) {
  uint32_t ctr[4] = {(uint32_t)g->offset, (uint32_t)(g->offset >> 32), 0, 0};
  uint32_t key[2] = {(uint32_t)g->seed, (uint32_t)(g->seed >> 32)};
  lark_philox4x32_10(ctr, key, w);
  g->offset++;
}

static inline uint64_t bits53(uint32_t a, uint32_t b) { return ((uint64_t)a << 32 | b) >> 11; }

double lark_gen_uniform(lark_generator *g) {
  uint32_t w[4];
  next_block(g, w);
  return (double)bits53(w[0], w[1]) * 0x1p-53;
}

int64_t lark_gen_randint(lark_generator *g, int64_t range) {
  if (range <= 1) {
    g->offset++; /* a draw is a draw: the stream stays aligned whatever the range */
    return 0;
  }
  uint32_t w[4];
  next_block(g, w);
  uint64_t xhi = (uint64_t)w[0] << 32 | w[1], xlo = (uint64_t)w[2] << 32 | w[3];
  unsigned __int128 hi = (unsigned __int128)xhi * (uint64_t)range, lo = (unsigned __int128)xlo * (uint64_t)range;
  return (int64_t)((hi + (lo >> 64)) >> 64);
}

double lark_gen_normal(lark_generator *g) {
  uint32_t w[4];
  next_block(g, w);
  double u1 = (double)(bits53(w[0], w[1]) + 1) * 0x1p-53, u2 = (double)bits53(w[2], w[3]) * 0x1p-53;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Gamma(a, 1) by Marsaglia and Tsang (2000); a < 1 through Gamma(a + 1) * U^(1/a). */
static double gen_gamma(lark_generator *g, double a) {
  if (a < 1) {
    double u = lark_gen_uniform(g);
    return gen_gamma(g, a + 1) * pow(u > 0 ? u : 0x1p-53, 1.0 / a);
  }
  double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x = lark_gen_normal(g), v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    double u = lark_gen_uniform(g);
    if (u < 1 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0 && log(u) < 0.5 * x * x + d * (1 - v + log(v))) return d * v;
  }
}

double lark_gen_beta(lark_generator *g, double a, double b) {
  double x = gen_gamma(g, a), y = gen_gamma(g, b);
  return x + y > 0 ? x / (x + y) : 0.5;
}

/* ---- seeds and the epoch order -------------------------------------------------------------- */

/* SplitMix64's finaliser: a bijection that scatters nearby inputs (epoch 1, 2, ...) far apart. */
static uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t lark_data_stream_seed(uint64_t seed, uint64_t epoch, uint64_t stream) {
  return mix64(mix64(mix64(seed) ^ epoch) ^ stream);
}

int lark_data_permutation(int64_t n, uint64_t seed, uint64_t epoch, int64_t *out) {
  if (n < 0) return lark_set_error(LARK_ERR_ARG, "permutation: n must be >= 0, got %lld", (long long)n);
  lark_generator g;
  lark_generator_init(&g, lark_data_stream_seed(seed, epoch, LARK_DATA_STREAM_ORDER));
  for (int64_t i = 0; i < n; i++) out[i] = i;
  for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int64_t j = lark_gen_randint(&g, i + 1), t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return 0;
}

/* ---- options and geometry ------------------------------------------------------------------- */

void lark_transform_opts_init(lark_transform_opts *o) {
  memset(o, 0, sizeof *o);
  o->scale = 1.0;
}

int transform_geom(const char *op, int ndim, const int64_t *shape, lark_dtype dt, const lark_transform_opts *o,
                   sample_geom *g) {
  char b[256];
  if (dt != LARK_UINT8 && dt != LARK_FLOAT32 && dt != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: images must be uint8, float32 or float64, got %s", op, lark_dtype_name(dt));
  g->ndim = ndim;
  memcpy(g->shape, shape, sizeof(int64_t) * (size_t)ndim);
  g->h = ndim >= 2 ? shape[ndim - 2] : 1;
  g->w = ndim >= 1 ? shape[ndim - 1] : 1;
  g->channels = 1;
  for (int d = 0; d < ndim - 2; d++) g->channels *= shape[d];
  g->numel = g->channels * g->h * g->w;
  bool spatial = o->crop_size > 0 || o->crop_padding > 0 || o->hflip > 0 || o->cutmix_alpha > 0;
  if (spatial && ndim < 2)
    return lark_set_error(LARK_ERR_SHAPE,
                          "%s: random crop, flip and cutmix need samples of at least 2 dims (..., H, W), got %s", op,
                          lark_shape_str(ndim, shape, b, sizeof b));
  if (o->crop_padding < 0 || o->crop_size < 0)
    return lark_set_error(LARK_ERR_ARG, "%s: random_crop size and padding must be >= 0, got %lld and %lld", op,
                          (long long)o->crop_size, (long long)o->crop_padding);
  if (o->crop_size > 0 && (o->crop_size > g->h + 2 * o->crop_padding || o->crop_size > g->w + 2 * o->crop_padding))
    return lark_set_error(LARK_ERR_ARG, "%s: random_crop size %lld does not fit in %lldx%lld images padded by %lld", op,
                          (long long)o->crop_size, (long long)g->h, (long long)g->w, (long long)o->crop_padding);
  if (o->hflip < 0 || o->hflip > 1) return lark_set_error(LARK_ERR_ARG, "%s: hflip must be a probability in [0, 1], got %g", op, o->hflip);
  if (o->nnorm > 1 && o->nnorm != g->channels)
    return lark_set_error(LARK_ERR_SHAPE, "%s: normalize has %d means, the samples %s have %lld channels (expected 1 or %lld)",
                          op, o->nnorm, lark_shape_str(ndim, shape, b, sizeof b), (long long)g->channels,
                          (long long)g->channels);
  if (o->nnorm < 0 || o->nnorm > LARK_DATA_MAX_CHANNELS)
    return lark_set_error(LARK_ERR_ARG, "%s: normalize takes 1 to %d means, got %d", op, LARK_DATA_MAX_CHANNELS, o->nnorm);
  for (int c = 0; c < o->nnorm; c++)
    if (!(o->std[c] > 0) || !isfinite(o->mean[c]))
      return lark_set_error(LARK_ERR_ARG, "%s: normalize std[%d] must be > 0 and mean finite, got mean %g std %g", op,
                            c + 1, o->mean[c], o->std[c]);
  if (o->mixup_alpha < 0 || o->cutmix_alpha < 0)
    return lark_set_error(LARK_ERR_ARG, "%s: mixup and cutmix alpha must be > 0, got %g and %g", op, o->mixup_alpha, o->cutmix_alpha);
  if ((o->mixup_alpha > 0 || o->cutmix_alpha > 0) && o->num_classes <= 0)
    return lark_set_error(LARK_ERR_ARG, "%s: mixup and cutmix need num_classes (the width of the soft targets)", op);
  return 0;
}

/* ---- the per-sample kernel ------------------------------------------------------------------ */

static inline double load(const char *src, lark_dtype dt, int64_t k) {
  switch (dt) {
    case LARK_UINT8: return ((const uint8_t *)src)[k];
    case LARK_FLOAT32: return ((const float *)src)[k];
    default: return ((const double *)src)[k];
  }
}

/* The per-channel affine map of a pixel v: (v * scale - mean) / std folded into v * a + b (one
 * multiply-add per pixel instead of a division; within an ulp of the unfolded form). */
static void channel_affine(const lark_transform_opts *o, int64_t c, float *a, float *b) {
  double mean = 0, std = 1;
  if (o->nnorm) {
    mean = o->mean[o->nnorm == 1 ? 0 : c];
    std = o->std[o->nnorm == 1 ? 0 : c];
  }
  *a = (float)(o->scale / std);
  *b = (float)(-mean / std);
}

/* The reference loop (and the path for float64 input): out (C, S, T) float32 contiguous from src
 * (C, H, W) of dtype dt; (dy, dx): crop origin in the image padded by p; flip: mirror the crop's
 * columns. Padding reads 0, so a padded pixel is b. */
static void sample_kernel_ref(float *out, const char *src, lark_dtype dt, const sample_geom *g, int64_t s, int64_t t,
                              int64_t p, int64_t dy, int64_t dx, bool flip, const lark_transform_opts *o) {
  int64_t h = g->h, w = g->w;
  for (int64_t c = 0; c < g->channels; c++) {
    float a, b;
    channel_affine(o, c, &a, &b);
    const char *plane = src + (size_t)(c * h * w) * lark_dtype_size(dt);
    for (int64_t i = 0; i < s; i++)
      for (int64_t j = 0; j < t; j++) {
        int64_t si = i + dy - p, sj = (flip ? t - 1 - j : j) + dx - p;
        float v = si >= 0 && si < h && sj >= 0 && sj < w ? (float)load(plane, dt, si * w + sj) : 0.0f;
        out[(c * s + i) * t + j] = v * a + b;
      }
  }
}

/* The fast path for uint8 and float32: per output row, the columns that fall inside the image read
 * a contiguous source run (forwards, or backwards when flipped), the rest is padding. */
static void sample_kernel(float *out, const char *src, lark_dtype dt, const sample_geom *g, int64_t s, int64_t t,
                          int64_t p, int64_t dy, int64_t dx, bool flip, const lark_transform_opts *o) {
  if (dt != LARK_UINT8 && dt != LARK_FLOAT32) {
    sample_kernel_ref(out, src, dt, g, s, t, p, dy, dx, flip, o);
    return;
  }
  int64_t h = g->h, w = g->w;
  /* columns j whose source column sj = (flip ? t-1-j : j) + dx - p lies in [0, w) */
  int64_t j0 = flip ? t - w - p + dx : p - dx, j1 = flip ? t - p + dx : w + p - dx;
  j0 = j0 < 0 ? 0 : (j0 > t ? t : j0);
  j1 = j1 < j0 ? j0 : (j1 > t ? t : j1);
  int64_t sj0 = (flip ? t - 1 - j0 : j0) + dx - p, n = j1 - j0;
  for (int64_t c = 0; c < g->channels; c++) {
    float a, b;
    channel_affine(o, c, &a, &b);
    for (int64_t i = 0; i < s; i++) {
      float *orow = out + (c * s + i) * t;
      int64_t si = i + dy - p;
      if (si < 0 || si >= h) {
        for (int64_t j = 0; j < t; j++) orow[j] = b;
        continue;
      }
      for (int64_t j = 0; j < j0; j++) orow[j] = b;
      for (int64_t j = j1; j < t; j++) orow[j] = b;
      if (n == 0) continue;
      float *o2 = orow + j0;
      int64_t at = (c * h + si) * w + sj0;
      if (dt == LARK_UINT8) {
        const uint8_t *sp = (const uint8_t *)src + at;
        if (flip) for (int64_t k = 0; k < n; k++) o2[k] = (float)sp[-k] * a + b;
        else for (int64_t k = 0; k < n; k++) o2[k] = (float)sp[k] * a + b;
      } else {
        const float *sp = (const float *)src + at;
        if (flip) for (int64_t k = 0; k < n; k++) o2[k] = sp[-k] * a + b;
        else for (int64_t k = 0; k < n; k++) o2[k] = sp[k] * a + b;
      }
    }
  }
}

/* ---- a batch -------------------------------------------------------------------------------- */

/* A batch output: ordinary or pinned memory, zero-filled when asked (the soft targets accumulate). */
static lark_tensor *batch_empty(int ndim, const int64_t *shape, bool pinned, bool zero) {
  if (!pinned)
    return zero ? lark_zeros(ndim, shape, LARK_FLOAT32, NULL) : lark_empty(ndim, shape, LARK_FLOAT32, NULL);
  lark_tensor *t = lark_empty_pinned(ndim, shape, LARK_FLOAT32);
  if (t && zero) memset(lark_data_ptr(t), 0, t->storage->nbytes);
  return t;
}

int transform_rows(const char *op, const char *const *rows, lark_dtype dt, const sample_geom *sg, int64_t n,
                   const int64_t *hard, const lark_transform_opts *o, lark_generator *gen, bool pinned,
                   lark_tensor **x_out, lark_tensor **y_soft, lark_transform_draws *draws) {
  *x_out = NULL;
  if (y_soft) *y_soft = NULL;
  /* crop_size 0 with padding: a window of the image's own size (torchvision's RandomCrop(28, 4) on 28x28) */
  bool crop = o->crop_size > 0 || o->crop_padding > 0;
  int64_t p = o->crop_padding, s = o->crop_size > 0 ? o->crop_size : sg->h, t = o->crop_size > 0 ? o->crop_size : sg->w;
  int64_t shape[LARK_MAX_DIMS + 1];
  shape[0] = n;
  memcpy(shape + 1, sg->shape, sizeof(int64_t) * (size_t)sg->ndim);
  if (sg->ndim >= 2) {
    shape[sg->ndim - 1] = s;
    shape[sg->ndim] = t;
  }
  int mix = 0;
  if (o->mixup_alpha > 0 || o->cutmix_alpha > 0) {
    if (!hard) return lark_set_error(LARK_ERR_ARG, "%s: mixup and cutmix need int64 class labels", op);
    for (int64_t i = 0; i < n; i++)
      if (hard[i] < o->label_base || hard[i] >= o->label_base + o->num_classes)
        return lark_set_error(LARK_ERR_INDEX, "%s: label %lld is out of range for %lld classes (expected %lld..%lld)",
                              op, (long long)hard[i], (long long)o->num_classes,
                              (long long)o->label_base, (long long)(o->label_base + o->num_classes - 1));
  }
  /* without mixing x is the batch itself; with it, a scratch the mixed batch is made from */
  bool mixing = o->mixup_alpha > 0 || o->cutmix_alpha > 0;
  lark_tensor *x = batch_empty(sg->ndim + 1, shape, pinned && !mixing, false);
  if (!x) return lark_error_code();
  float *xd = lark_data_ptr(x);
  int64_t per = sg->channels * s * t;
  /* 1. crops and flips, sample by sample, in draw order */
  for (int64_t i = 0; i < n; i++) {
    int64_t dy = 0, dx = 0;
    bool flip = false;
    if (crop) {
      dy = lark_gen_randint(gen, sg->h + 2 * p - s + 1);
      dx = lark_gen_randint(gen, sg->w + 2 * p - t + 1);
    }
    if (o->hflip > 0) flip = lark_gen_uniform(gen) < o->hflip;
    if (draws) {
      if (draws->dy) draws->dy[i] = dy;
      if (draws->dx) draws->dx[i] = dx;
      if (draws->flip) draws->flip[i] = flip;
    }
    sample_kernel(xd + i * per, rows[i], dt, sg, s, t, p, dy, dx, flip, o);
  }
  if (draws) draws->mix = 0;
  if (!mixing) {
    *x_out = x;
    return 0;
  }
  /* 2. mixing */
  if (o->mixup_alpha > 0 && o->cutmix_alpha > 0) mix = lark_gen_uniform(gen) < 0.5 ? 1 : 2;
  else mix = o->mixup_alpha > 0 ? 1 : 2;
  double alpha = mix == 1 ? o->mixup_alpha : o->cutmix_alpha;
  double lam = lark_gen_beta(gen, alpha, alpha);
  int64_t *perm = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  lark_tensor *mixed = NULL, *y = NULL;
  if (!perm) {
    lark_tensor_release(x);
    return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
  }
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = lark_gen_randint(gen, i + 1), tmp = perm[i];
    perm[i] = perm[j];
    perm[j] = tmp;
  }
  int64_t box[4] = {0, 0, 0, 0};
  if (mix == 2) {
    double r = sqrt(1 - lam);
    int64_t ch = (int64_t)((double)s * r), cw = (int64_t)((double)t * r);
    int64_t cy = lark_gen_randint(gen, s), cx = lark_gen_randint(gen, t);
    box[0] = cy - ch / 2 < 0 ? 0 : cy - ch / 2;
    box[1] = cx - cw / 2 < 0 ? 0 : cx - cw / 2;
    box[2] = cy + ch / 2 > s ? s : cy + ch / 2;
    box[3] = cx + cw / 2 > t ? t : cx + cw / 2;
    lam = 1 - (double)((box[2] - box[0]) * (box[3] - box[1])) / (double)(s * t);
  }
  if (draws) {
    draws->mix = mix;
    draws->lam = lam;
    memcpy(draws->box, box, sizeof box);
    if (draws->perm) memcpy(draws->perm, perm, sizeof(int64_t) * (size_t)n);
  }
  mixed = batch_empty(sg->ndim + 1, shape, pinned, false);
  y = mixed ? batch_empty(2, (int64_t[]){n, o->num_classes}, pinned, true) : NULL;
  if (!y) {
    free(perm);
    lark_tensor_release(x);
    lark_tensor_release(mixed);
    return lark_error_code() ? lark_error_code() : LARK_ERR_NOMEM;
  }
  float *md = lark_data_ptr(mixed), *yd = lark_data_ptr(y);
  float fl = (float)lam, fr = (float)(1 - lam);
  for (int64_t i = 0; i < n; i++) {
    const float *a = xd + i * per, *b = xd + perm[i] * per;
    float *m = md + i * per;
    if (mix == 1) {
      for (int64_t k = 0; k < per; k++) m[k] = fl * a[k] + fr * b[k];
    } else {
      memcpy(m, a, sizeof(float) * (size_t)per);
      for (int64_t c = 0; c < sg->channels; c++)
        for (int64_t r = box[0]; r < box[2]; r++)
          memcpy(m + (c * s + r) * t + box[1], b + (c * s + r) * t + box[1], sizeof(float) * (size_t)(box[3] - box[1]));
    }
    yd[i * o->num_classes + (hard[i] - o->label_base)] += fl;
    yd[i * o->num_classes + (hard[perm[i]] - o->label_base)] += fr;
  }
  free(perm);
  lark_tensor_release(x);
  *x_out = mixed;
  if (y_soft) *y_soft = y;
  else lark_tensor_release(y);
  return 0;
}

int lark_transform_batch(const lark_tensor *x, const lark_tensor *labels, const lark_transform_opts *o,
                         lark_generator *gen, lark_tensor **x_out, lark_tensor **y_out, lark_transform_draws *draws) {
  static const char *op = "transform";
  *x_out = NULL;
  if (y_out) *y_out = NULL;
  if (!gen) gen = lark_default_generator();
  if (lark_tensor_device(x).kind != LARK_CPU)
    return lark_set_error(LARK_ERR_DEVICE, "%s: the batch must be on the CPU", op);
  if (x->ndim < 1) return lark_set_error(LARK_ERR_SHAPE, "%s: expected a batch (B, ...), got a 0-d tensor", op);
  sample_geom sg;
  int rc = transform_geom(op, x->ndim - 1, x->shape + 1, x->dtype, o, &sg);
  if (rc) return rc;
  int64_t n = x->shape[0];
  bool mixing = o->mixup_alpha > 0 || o->cutmix_alpha > 0;
  if (labels) {
    if (lark_tensor_device(labels).kind != LARK_CPU) return lark_set_error(LARK_ERR_DEVICE, "%s: the labels must be on the CPU", op);
    if (labels->ndim < 1 || labels->shape[0] != n)
      return lark_set_error(LARK_ERR_SHAPE, "%s: %lld labels for a batch of %lld", op,
                            (long long)(labels->ndim ? labels->shape[0] : 0), (long long)n);
  }
  if (mixing && (!labels || labels->ndim != 1 || labels->dtype != LARK_INT64))
    return lark_set_error(LARK_ERR_ARG, "%s: mixup and cutmix need hard labels, a 1-D int64 tensor of class indices", op);
  lark_tensor *xc = lark_contiguous(x), *lc = labels && mixing ? lark_contiguous(labels) : NULL;
  const char **rows = malloc(sizeof(char *) * (size_t)(n ? n : 1));
  if (!xc || (labels && mixing && !lc) || !rows) {
    rc = lark_error_code() ? lark_error_code() : lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    goto out;
  }
  size_t bytes = (size_t)sg.numel * lark_dtype_size(x->dtype);
  for (int64_t i = 0; i < n; i++) rows[i] = (const char *)lark_data_ptr(xc) + (size_t)i * bytes;
  lark_tensor *soft = NULL;
  rc = transform_rows(op, rows, x->dtype, &sg, n, lc ? lark_data_ptr(lc) : NULL, o, gen, false, x_out,
                      mixing ? &soft : NULL, draws);
  if (!rc && y_out) *y_out = mixing ? soft : (labels ? lark_tensor_retain((lark_tensor *)labels) : NULL);
  else if (soft) lark_tensor_release(soft);
out:
  free(rows);
  lark_tensor_release(xc);
  lark_tensor_release(lc);
  return rc;
}
