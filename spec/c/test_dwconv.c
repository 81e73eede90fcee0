/* test_dwconv.c: the depth-wise convolution (core/ops/dwconv.c).
 *   - the reference loops against naive formulas written independently (through check.h's at(),
 *     with gathers where the reference scatters) on tiny cases;
 *   - every fast path (stride 1 / dilation 1 direct kernels and the general path) against the
 *     reference on awkward shapes: 1x1 maps, kernels larger than the map, non-square maps, stride 2,
 *     dilation 2, batch 1, one channel, odd and even kernels, asymmetric padding, 51x5 and 5x51,
 *     padding wider than the kernel, non-contiguous operands; float64 to 1e-12, float32 to 1e-5
 *     against a float64 reference run on the same values;
 *   - the adjoint identities <fwd(x), gy> = <x, bwd_input(gy)> = <w, bwd_weight(gy, x)>;
 *   - the weight gradient does not depend on the number of threads;
 *   - the errors. */
#include "check.h"
#include "../../core/ops/dwconv.h"

typedef struct {
  int64_t n, c, h, w;
  int kh, kw, sh, sw, pt, pb, pl, pr, dh, dw;
  bool bias;
  const char *what;
} conv_case;

static lark_conv2d_params params_of(const conv_case *k) {
  return (lark_conv2d_params){k->kh, k->kw, k->sh, k->sw, k->pt, k->pb, k->pl, k->pr, k->dh, k->dw};
}

static lark_tensor *rand_tensor(int nd, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  fill_uniform(t, -1, 1);
  return t;
}

/* The same values, transposed in its last two dims in memory (a non-contiguous view). */
static lark_tensor *as_transposed_view(const lark_tensor *t) {
  int64_t s[4] = {t->shape[0], t->shape[1], t->shape[3], t->shape[2]};
  lark_tensor *base = lark_empty(4, s, t->dtype, NULL);
  lark_tensor *v = lark_transpose(base, 2, 3);
  lark_tensor_release(base);
  lark_copy_(v, t);
  return v;
}

/* Norm-wise relative error: max |a - e| over max(1, max |e|), for two tensors of the same shape
 * (any layout); 1e300 on a shape mismatch or NULL. (Element-wise relative error would be dominated
 * by rounding in sums of hundreds of terms that nearly cancel.) */
static double max_rel_err(const lark_tensor *a, const lark_tensor *e) {
  if (!a || !e || a->ndim != e->ndim) return 1e300;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != e->shape[d]) return 1e300;
  double m = 0, scale = 1;
  for (int64_t i = 0; i < lark_numel(a); i++) {
    double x = get_flat(a, i), y = get_flat(e, i);
    double r = fabs(x - y);
    if (!(r <= m)) m = r; /* NaN propagates */
    if (fabs(y) > scale) scale = fabs(y);
  }
  return m / scale;
}

static double dot_all(const lark_tensor *a, const lark_tensor *b) {
  double s = 0;
  for (int64_t i = 0; i < lark_numel(a); i++) s += get_flat(a, i) * get_flat(b, i);
  return s;
}

/* ---- naive formulas for the reference ------------------------------------------------------- */

/* x read as zero outside the map */
static double xat(const lark_tensor *x, int64_t n, int64_t c, int64_t y, int64_t xx) {
  if (y < 0 || y >= x->shape[2] || xx < 0 || xx >= x->shape[3]) return 0;
  return at(x, (int64_t[]){n, c, y, xx});
}

static void check_reference_naive(const conv_case *k) {
  lark_conv2d_params p = params_of(k);
  lark_tensor *x = rand_tensor(4, (int64_t[]){k->n, k->c, k->h, k->w}, LARK_FLOAT64);
  lark_tensor *w = rand_tensor(4, (int64_t[]){k->c, 1, k->kh, k->kw}, LARK_FLOAT64);
  lark_tensor *b = rand_tensor(1, (int64_t[]){k->c}, LARK_FLOAT64);
  lark_tensor *y = lark_dwconv2d_forward_reference(x, w, b, &p);
  CHECK(y != NULL, "%s: reference forward", k->what);
  if (!y) goto done;
  int64_t ho = y->shape[2], wo = y->shape[3];
  lark_tensor *gy = rand_tensor(4, y->shape, LARK_FLOAT64);
  lark_tensor *gx = lark_dwconv2d_backward_input_reference(gy, w, x->shape, &p);
  lark_tensor *gw = lark_dwconv2d_backward_weight_reference(gy, x, &p);
  CHECK(gx && gw, "%s: reference backward", k->what);
  double err = 0;
  for (int64_t n = 0; n < k->n; n++)
    for (int64_t c = 0; c < k->c; c++) {
      for (int64_t oh = 0; oh < ho; oh++)
        for (int64_t ow = 0; ow < wo; ow++) {
          double s = at(b, (int64_t[]){c});
          for (int i = 0; i < k->kh; i++)
            for (int j = 0; j < k->kw; j++)
              s += at(w, (int64_t[]){c, 0, i, j}) *
                   xat(x, n, c, oh * k->sh - k->pt + i * k->dh, ow * k->sw - k->pl + j * k->dw);
          err = fmax(err, fabs(at(y, (int64_t[]){n, c, oh, ow}) - s));
        }
      /* input gradient as a gather: the (oh, i) with oh*sh - pt + i*dh == iy */
      for (int64_t iy = 0; gx && iy < k->h; iy++)
        for (int64_t ix = 0; ix < k->w; ix++) {
          double s = 0;
          for (int i = 0; i < k->kh; i++)
            for (int j = 0; j < k->kw; j++) {
              int64_t ty = iy + k->pt - i * k->dh, tx = ix + k->pl - j * k->dw;
              if (ty < 0 || tx < 0 || ty % k->sh || tx % k->sw || ty / k->sh >= ho || tx / k->sw >= wo) continue;
              s += at(w, (int64_t[]){c, 0, i, j}) * at(gy, (int64_t[]){n, c, ty / k->sh, tx / k->sw});
            }
          err = fmax(err, fabs(at(gx, (int64_t[]){n, c, iy, ix}) - s));
        }
    }
  for (int64_t c = 0; gw && c < k->c; c++)
    for (int i = 0; i < k->kh; i++)
      for (int j = 0; j < k->kw; j++) {
        double s = 0;
        for (int64_t n = 0; n < k->n; n++)
          for (int64_t oh = 0; oh < ho; oh++)
            for (int64_t ow = 0; ow < wo; ow++)
              s += at(gy, (int64_t[]){n, c, oh, ow}) *
                   xat(x, n, c, oh * k->sh - k->pt + i * k->dh, ow * k->sw - k->pl + j * k->dw);
        err = fmax(err, fabs(at(gw, (int64_t[]){c, 0, i, j}) - s));
      }
  CHECK(err < 1e-12, "%s: reference vs naive formula, max error %g", k->what, err);
  lark_tensor_release(gy);
  lark_tensor_release(gx);
  lark_tensor_release(gw);
done:
  lark_tensor_release(x);
  lark_tensor_release(w);
  lark_tensor_release(b);
  lark_tensor_release(y);
}

/* ---- fast paths against the reference ------------------------------------------------------- */

static void check_case(const conv_case *k, bool noncontig) {
  lark_conv2d_params p = params_of(k);
  int64_t xs[4] = {k->n, k->c, k->h, k->w}, ws[4] = {k->c, 1, k->kh, k->kw};
  lark_tensor *x64 = rand_tensor(4, xs, LARK_FLOAT64), *w64 = rand_tensor(4, ws, LARK_FLOAT64);
  lark_tensor *b64 = k->bias ? rand_tensor(1, (int64_t[]){k->c}, LARK_FLOAT64) : NULL;
  lark_tensor *ry = lark_dwconv2d_forward_reference(x64, w64, b64, &p);
  CHECK(ry != NULL, "%s: reference forward", k->what);
  if (!ry) {
    lark_tensor_release(x64), lark_tensor_release(w64), lark_tensor_release(b64);
    return;
  }
  lark_tensor *gy64 = rand_tensor(4, ry->shape, LARK_FLOAT64);
  lark_tensor *rgx = lark_dwconv2d_backward_input_reference(gy64, w64, xs, &p);
  lark_tensor *rgw = lark_dwconv2d_backward_weight_reference(gy64, x64, &p);

  for (int d = 0; d < 2; d++) {
    lark_dtype dt = d == 0 ? LARK_FLOAT64 : LARK_FLOAT32;
    double tol = d == 0 ? 1e-12 : 1e-5;
    lark_tensor *x = lark_to(x64, dt, NULL), *w = lark_to(w64, dt, NULL), *gy = lark_to(gy64, dt, NULL);
    lark_tensor *b = b64 ? lark_to(b64, dt, NULL) : NULL;
    if (noncontig) {
      lark_tensor *xv = as_transposed_view(x), *gv = as_transposed_view(gy);
      lark_tensor_release(x), lark_tensor_release(gy);
      x = xv, gy = gv;
    }
    lark_tensor *y = lark_dwconv2d_forward(x, w, b, &p);
    lark_tensor *gx = lark_dwconv2d_backward_input(gy, w, xs, &p);
    lark_tensor *gw = lark_dwconv2d_backward_weight(gy, x, &p);
    double e1 = max_rel_err(y, ry), e2 = max_rel_err(gx, rgx), e3 = max_rel_err(gw, rgw);
    const char *dn = lark_dtype_name(dt);
    CHECK(e1 <= tol, "%s %s%s: forward vs reference, error %g", k->what, dn, noncontig ? " (views)" : "", e1);
    CHECK(e2 <= tol, "%s %s%s: input gradient vs reference, error %g", k->what, dn, noncontig ? " (views)" : "", e2);
    CHECK(e3 <= tol, "%s %s%s: weight gradient vs reference, error %g", k->what, dn, noncontig ? " (views)" : "", e3);
    CHECK(y && y->dtype == dt && gx && gx->dtype == dt && gw && gw->dtype == dt, "%s: result dtypes", k->what);
    lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(gy), lark_tensor_release(b);
    lark_tensor_release(y), lark_tensor_release(gx), lark_tensor_release(gw);
  }

  /* adjoint identities in float64 (independent of the reference's loops) */
  if (!k->bias && rgx && rgw) {
    double a = dot_all(ry, gy64), bx = dot_all(x64, rgx), bw = dot_all(w64, rgw);
    CHECK(near(bx, a, 1e-10) && near(bw, a, 1e-10), "%s: adjoint <y,gy> %.15g, <x,gx> %.15g, <w,gw> %.15g",
          k->what, a, bx, bw);
  }
  lark_tensor_release(x64), lark_tensor_release(w64), lark_tensor_release(b64);
  lark_tensor_release(ry), lark_tensor_release(gy64), lark_tensor_release(rgx), lark_tensor_release(rgw);
}

/* The weight gradient (threaded over channels) is the same bit for bit on 1 and 2 threads. */
static void check_threads(void) {
  lark_conv2d_params p = {7, 7, 1, 1, 3, 3, 3, 3, 1, 1};
  lark_tensor *x = rand_tensor(4, (int64_t[]){3, 8, 20, 20}, LARK_FLOAT32);
  lark_tensor *gy = rand_tensor(4, (int64_t[]){3, 8, 20, 20}, LARK_FLOAT32);
  int nt = lark_get_num_threads();
  lark_set_num_threads(1);
  lark_tensor *g1 = lark_dwconv2d_backward_weight(gy, x, &p);
  lark_set_num_threads(2);
  lark_tensor *g2 = lark_dwconv2d_backward_weight(gy, x, &p);
  lark_set_num_threads(nt);
  CHECK(g1 && g2 && memcmp(lark_data_ptr(g1), lark_data_ptr(g2), sizeof(float) * (size_t)lark_numel(g1)) == 0,
        "weight gradient differs between 1 and 2 threads");
  lark_tensor_release(x), lark_tensor_release(gy), lark_tensor_release(g1), lark_tensor_release(g2);
}

static void check_errors(void) {
  lark_conv2d_params p = {3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  lark_tensor *x = rand_tensor(4, (int64_t[]){2, 4, 6, 6}, LARK_FLOAT32);
  lark_tensor *w = rand_tensor(4, (int64_t[]){4, 1, 3, 3}, LARK_FLOAT32);
  lark_tensor *w64 = rand_tensor(4, (int64_t[]){4, 1, 3, 3}, LARK_FLOAT64);
  lark_tensor *x3 = rand_tensor(3, (int64_t[]){4, 6, 6}, LARK_FLOAT32);
  lark_tensor *wbad = rand_tensor(4, (int64_t[]){4, 1, 3, 5}, LARK_FLOAT32);
  lark_tensor *wc = rand_tensor(4, (int64_t[]){3, 1, 3, 3}, LARK_FLOAT32);
  lark_tensor *b5 = rand_tensor(1, (int64_t[]){5}, LARK_FLOAT32);
  lark_tensor *xi = lark_zeros(4, (int64_t[]){2, 4, 6, 6}, LARK_INT64, NULL);
  lark_tensor *gy = rand_tensor(4, (int64_t[]){2, 4, 6, 6}, LARK_FLOAT32);
  lark_tensor *gybad = rand_tensor(4, (int64_t[]){2, 4, 5, 6}, LARK_FLOAT32);

  CHECK(!lark_dwconv2d_forward(x3, w, NULL, &p) && error_has("input must be 4-D"), "3-D input");
  CHECK(!lark_dwconv2d_forward(NULL, w, NULL, &p) && error_has("input is NULL"), "NULL input");
  CHECK(!lark_dwconv2d_forward(x, wbad, NULL, &p) && error_has("weight must have shape [4,1,3,3]"), "weight kw");
  CHECK(!lark_dwconv2d_forward(x, wc, NULL, &p) && error_has("weight must have shape"), "weight channels");
  CHECK(!lark_dwconv2d_forward(x, w64, NULL, &p) && error_has("same dtype"), "dtype mismatch");
  CHECK(!lark_dwconv2d_forward(xi, w, NULL, &p) && error_has("input must be float32 or float64"), "int64 input");
  CHECK(!lark_dwconv2d_forward(x, w, b5, &p) && error_has("bias must have 4 elements"), "bias length");
  CHECK(!lark_dwconv2d_forward(x, w, NULL, NULL) && error_has("params is NULL"), "NULL params");
  lark_conv2d_params q = p;
  q.stride_h = 0;
  CHECK(!lark_dwconv2d_forward(x, w, NULL, &q) && error_has("stride must be positive"), "stride 0");
  q = p, q.dil_w = -1;
  CHECK(!lark_dwconv2d_forward(x, w, NULL, &q) && error_has("dilation must be positive"), "dilation -1");
  q = p, q.pad_left = -2;
  CHECK(!lark_dwconv2d_forward(x, w, NULL, &q) && error_has("padding must be non-negative"), "negative padding");
  q = p, q.kh = 0;
  CHECK(!lark_dwconv2d_forward(x, w, NULL, &q) && error_has("kernel size must be positive"), "kernel 0");
  q = (lark_conv2d_params){9, 3, 1, 1, 0, 0, 1, 1, 1, 1};
  lark_tensor *w93 = rand_tensor(4, (int64_t[]){4, 1, 9, 3}, LARK_FLOAT32);
  CHECK(!lark_dwconv2d_forward(x, w93, NULL, &q) && error_has("smaller than the dilated kernel"), "kernel > map");
  CHECK(!lark_dwconv2d_backward_input(gybad, w, x->shape, &p) && error_has("grad_out must have shape [2,4,6,6]"),
        "backward_input grad_out shape");
  CHECK(!lark_dwconv2d_backward_input(gy, w, NULL, &p) && error_has("input_shape is NULL"), "NULL input_shape");
  CHECK(!lark_dwconv2d_backward_input(gy, w, (int64_t[]){2, -4, 6, 6}, &p) && error_has("non-negative"),
        "negative input_shape");
  CHECK(!lark_dwconv2d_backward_weight(gybad, x, &p) && error_has("grad_out must have shape"), "backward_weight shape");
  CHECK(!lark_dwconv2d_backward_weight(gy, xi, &p) && error_has("input must be float32"), "backward_weight dtype");
  CHECK(!lark_dwconv2d_backward_weight_reference(gy, x3, &p) && error_has("dwconv2d_backward_weight_reference"),
        "reference names itself");

  /* empty batch: empty results, no error */
  lark_tensor *x0 = lark_empty(4, (int64_t[]){0, 4, 6, 6}, LARK_FLOAT32, NULL);
  lark_tensor *y0 = lark_dwconv2d_forward(x0, w, NULL, &p);
  CHECK(y0 && y0->shape[0] == 0 && y0->shape[2] == 6, "empty batch forward");
  lark_tensor *gw0 = y0 ? lark_dwconv2d_backward_weight(y0, x0, &p) : NULL;
  CHECK(gw0 && lark_numel(gw0) == 36 && get_flat(gw0, 5) == 0, "empty batch weight gradient is zero");
  lark_tensor_release(x0), lark_tensor_release(y0), lark_tensor_release(gw0);

  lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(w64), lark_tensor_release(x3);
  lark_tensor_release(wbad), lark_tensor_release(wc), lark_tensor_release(b5), lark_tensor_release(xi);
  lark_tensor_release(gy), lark_tensor_release(gybad), lark_tensor_release(w93);
}

int main(void) {
  rand_seed(20261122);
  int64_t start = lark_bytes_allocated(LARK_CPU);
  /*  n  c   h   w  kh kw sh sw pt pb pl pr dh dw bias */
  static const conv_case cases[] = {
      {2, 3, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, "1x1 map, 3x3"},
      {2, 2, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, true, "1x1 map, 1x1 kernel"},
      {2, 3, 5, 4, 9, 7, 1, 1, 4, 4, 3, 3, 1, 1, true, "kernel larger than the map"},
      {1, 2, 7, 13, 5, 3, 1, 1, 2, 2, 1, 1, 1, 1, false, "non-square map, 5x3"},
      {2, 3, 9, 10, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true, "stride 2"},
      {2, 2, 11, 9, 3, 5, 1, 1, 2, 2, 4, 4, 2, 2, false, "dilation 2"},
      {1, 2, 12, 11, 4, 3, 2, 1, 1, 2, 0, 3, 2, 3, false, "stride 2x1, dilation 2x3, asymmetric"},
      {1, 1, 20, 17, 13, 13, 1, 1, 6, 6, 6, 6, 1, 1, true, "batch 1, one channel, 13x13"},
      {2, 2, 8, 9, 4, 6, 1, 1, 1, 2, 3, 2, 1, 1, false, "even 4x6 kernel, asymmetric padding"},
      {1, 3, 24, 12, 51, 5, 1, 1, 25, 25, 2, 2, 1, 1, false, "51x5"},
      {1, 3, 12, 24, 5, 51, 1, 1, 2, 2, 25, 25, 1, 1, true, "5x51"},
      {2, 3, 32, 32, 31, 31, 1, 1, 15, 15, 15, 15, 1, 1, false, "31x31 on 32x32"},
      {1, 2, 16, 16, 63, 63, 1, 1, 31, 31, 31, 31, 1, 1, false, "63x63 on 16x16"},
      {2, 2, 6, 40, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, false, "no padding, wide map"},
      {1, 2, 5, 5, 3, 3, 1, 1, 4, 1, 0, 5, 1, 1, false, "padding wider than the kernel"},
      {2, 2, 15, 21, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1, true, "7x7, odd map"},
      {1, 2, 14, 14, 27, 27, 1, 1, 13, 13, 13, 13, 1, 1, false, "27x27 on 14x14"},
      {3, 2, 10, 3, 2, 2, 1, 1, 0, 1, 1, 0, 1, 1, false, "2x2, narrow map"},
      {1, 1, 3, 70, 1, 11, 1, 1, 0, 0, 5, 5, 1, 1, false, "1x11 on a long row"},
      /* wide kernels run on transposed planes: whole 8x8 blocks and ragged edges */
      {2, 3, 32, 32, 5, 51, 1, 1, 2, 2, 25, 25, 1, 1, true, "5x51 on 32x32 (transposed)"},
      {1, 2, 17, 35, 3, 13, 1, 1, 1, 1, 6, 6, 1, 1, false, "3x13 on 17x35 (transposed)"},
      /* narrow maps with channels in multiples of 16 take the 16-channel-vector path (AVX-512) */
      {2, 32, 16, 16, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1, true, "16-channel vectors, 7x7 on 16x16"},
      {1, 16, 14, 14, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, false, "16-channel vectors, 5x5 on 14x14"},
      {1, 16, 9, 20, 13, 3, 1, 1, 6, 5, 0, 2, 1, 1, true, "16-channel vectors, 13x3, asymmetric padding"},
      {3, 16, 5, 5, 13, 13, 1, 1, 6, 6, 6, 6, 1, 1, false, "16-channel vectors, kernel larger than the map"},
      {1, 48, 12, 11, 4, 6, 1, 1, 1, 2, 3, 2, 1, 1, true, "16-channel vectors, even 4x6"},
      {2, 16, 7, 23, 1, 13, 1, 1, 0, 0, 6, 6, 1, 1, false, "16-channel vectors, 1x13 on 7x23"},
  };
  int ncases = (int)(sizeof cases / sizeof cases[0]);
  for (int i = 0; i < ncases; i++) check_case(&cases[i], false);
  check_case(&cases[3], true);
  check_case(&cases[11], true);
  check_case(&cases[6], true);
  check_case(&cases[ncases - 8], true);

  /* random stride-1 configurations (the fast path) and a few general ones */
  for (int t = 0; t < 40; t++) {
    conv_case k = {1 + rand_int(3), 1 + rand_int(4), 1 + rand_int(24), 1 + rand_int(40), 1 + (int)rand_int(15),
                   1 + (int)rand_int(15), 1, 1, 0, 0, 0, 0, 1, 1, rand_int(2) == 0, "random"};
    if (t % 4 == 3) k.sh = 1 + (int)rand_int(3), k.sw = 1 + (int)rand_int(3), k.dh = 1 + (int)rand_int(2), k.dw = 1 + (int)rand_int(2);
    k.pt = (int)rand_int(k.kh + 1), k.pb = (int)rand_int(k.kh + 1), k.pl = (int)rand_int(k.kw + 1), k.pr = (int)rand_int(k.kw + 1);
    /* keep the padded map at least as large as the dilated kernel */
    while (k.h + k.pt + k.pb < (int64_t)k.dh * (k.kh - 1) + 1) k.pb++;
    while (k.w + k.pl + k.pr < (int64_t)k.dw * (k.kw - 1) + 1) k.pr++;
    check_case(&k, false);
  }

  /* the reference against the naive formulas */
  static const conv_case tiny[] = {
      {2, 2, 4, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, "tiny 3x3"},
      {1, 2, 5, 4, 2, 3, 2, 1, 0, 1, 2, 0, 1, 2, true, "tiny stride/dilation"},
      {1, 1, 3, 3, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, true, "tiny kernel > map"},
      {2, 1, 6, 7, 3, 2, 2, 3, 2, 2, 1, 1, 2, 1, true, "tiny mixed"},
  };
  for (int i = 0; i < 4; i++) check_reference_naive(&tiny[i]);

  check_threads();
  check_errors();
  CHECK_NO_LEAK(start);
  return check_report("test_dwconv");
}
