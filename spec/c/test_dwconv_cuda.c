/* test_dwconv_cuda.c: the depth-wise convolution on the GPU (cuda/dwconv.cu through
 * core/ops/dwconv_device.c) against the CPU reference loops of core/ops/dwconv.c.
 *
 * It calls the device front functions (lark_dwconv2d_device_*) directly, so it checks the CUDA
 * kernels whether or not dwconv.c's front functions dispatch to them yet. For every case, dtype and
 * pass: the fast kernels and the GPU reference kernels against the CPU reference (float64 to 1e-12,
 * float32 to 2e-5 of the largest result), the summed kernels (SLaK's triple) through the
 * accumulating calls, the weight gradient bit-identical from run to run, non-contiguous operands,
 * and the errors (mixed devices, shapes, dtypes) with the CPU path's messages.
 *
 * Without a CUDA device it checks that the device functions refuse CPU tensors cleanly and that
 * lark_dwconv2d_on_device says no, prints "skipped: no CUDA device" and passes. */
#include "check.h"
#include "../../core/ops/dwconv.h"
#include "../../core/ops/dwconv_device.h"

static const lark_device CPU = {LARK_CPU, 0};
static const lark_device GPU = {LARK_CUDA, 0};

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

static lark_tensor *to_gpu(const lark_tensor *t) { return t ? lark_to(t, t->dtype, &GPU) : NULL; }

static lark_tensor *to_cpu(const lark_tensor *t) {
  lark_tensor *c = lark_to(t, t->dtype, &CPU);
  if (!c) return NULL;
  lark_tensor *cc = lark_contiguous(c);
  lark_tensor_release(c);
  return cc;
}

/* got (on the GPU) matches want (CPU): same shape, every element within tol of the largest |want|. */
static void expect_close(const char *what, const lark_tensor *got, const lark_tensor *want, double tol) {
  CHECK(got != NULL, "%s: no result", what);
  if (!got || !want) return;
  CHECK(lark_tensor_device(got).kind == LARK_CUDA, "%s: result not on the GPU", what);
  CHECK(got->ndim == want->ndim && memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)got->ndim) == 0,
        "%s: wrong shape", what);
  lark_tensor *g = to_cpu(got);
  CHECK(g != NULL, "%s: copy back failed", what);
  if (!g) return;
  int64_t n = lark_numel(want);
  double scale = 1, worst = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(data_get(want, i)));
  for (int64_t i = 0; i < n; i++) {
    double d = fabs(data_get(g, i) - data_get(want, i));
    if (!(d <= worst)) worst = d, wi = i; /* NaN counts as worst */
  }
  CHECK(worst <= tol * scale, "%s: element %lld is %.9g, expected %.9g (error %.3g > %.3g)", what, (long long)wi,
        n ? data_get(g, wi) : 0.0, n ? data_get(want, wi) : 0.0, worst, tol * scale);
  lark_tensor_release(g);
}

/* Bit-identical tensors on the GPU. */
static bool same_bits(const lark_tensor *a, const lark_tensor *b) {
  lark_tensor *x = to_cpu(a), *y = to_cpu(b);
  bool same = x && y && lark_numel(x) == lark_numel(y) &&
              memcmp(lark_data_ptr(x), lark_data_ptr(y), (size_t)lark_numel(x) * lark_dtype_size(x->dtype)) == 0;
  lark_tensor_release(x);
  lark_tensor_release(y);
  return same;
}

static const conv_case cases[] = {
    {2, 3, 17, 19, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, "3x3 same"},
    {2, 3, 17, 19, 13, 13, 1, 1, 6, 6, 6, 6, 1, 1, false, "13x13 same"},
    {2, 2, 33, 30, 31, 31, 1, 1, 15, 15, 15, 15, 1, 1, true, "31x31 same"},
    {1, 2, 32, 32, 51, 51, 1, 1, 25, 25, 25, 25, 1, 1, false, "51x51 same, batch 1"},
    {2, 3, 28, 28, 51, 5, 1, 1, 25, 25, 2, 2, 1, 1, false, "51x5 (SLaK)"},
    {2, 3, 28, 28, 5, 51, 1, 1, 2, 2, 25, 25, 1, 1, true, "5x51 (SLaK)"},
    {2, 3, 28, 28, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, false, "5x5 (SLaK)"},
    {2, 3, 10, 12, 4, 6, 1, 1, 1, 2, 3, 2, 1, 1, true, "even kernel, asymmetric padding"},
    {2, 2, 9, 9, 7, 7, 1, 1, 0, 0, 0, 0, 1, 1, false, "no padding"},
    {1, 2, 6, 7, 3, 3, 1, 1, 5, 4, 6, 2, 1, 1, true, "padding wider than the kernel"},
    {1, 1, 3, 3, 9, 9, 1, 1, 4, 4, 4, 4, 1, 1, false, "kernel larger than the map"},
    {2, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, "1x1 map"},
    {2, 3, 11, 13, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true, "stride 2"},
    {2, 2, 12, 11, 5, 3, 1, 1, 4, 4, 2, 2, 2, 2, false, "dilation 2"},
    {1, 2, 13, 15, 7, 5, 2, 3, 3, 2, 2, 1, 2, 1, true, "stride and dilation"},
    {1, 1, 5, 140, 3, 9, 1, 1, 1, 1, 4, 4, 1, 1, false, "two column tiles"},
    {1, 1, 600, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, false, "several row tiles"},
    {1, 1, 100, 100, 31, 31, 1, 1, 15, 15, 15, 15, 1, 1, false, "a tile smaller than the map"},
    {9, 2, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, "weight gradient split over blocks"},
    {1, 1, 20, 20, 101, 101, 1, 1, 50, 50, 50, 50, 1, 1, true, "101x101: opted-in shared memory"},
    {2, 2, 0, 5, 3, 3, 1, 1, 2, 2, 1, 1, 1, 1, true, "empty input, output from the padding"},
};

static void check_case(const conv_case *k, lark_dtype dt) {
  lark_conv2d_params p = params_of(k);
  int64_t ho, wo;
  CHECK(lark_conv2d_output_size("test", k->h, k->w, &p, &ho, &wo) == 0, "%s: invalid case", k->what);
  const int64_t xs[4] = {k->n, k->c, k->h, k->w}, ws[4] = {k->c, 1, k->kh, k->kw}, bs[1] = {k->c},
                ys[4] = {k->n, k->c, ho, wo};
  lark_tensor *x = rand_tensor(4, xs, dt), *w = rand_tensor(4, ws, dt), *b = k->bias ? rand_tensor(1, bs, dt) : NULL;
  lark_tensor *gy = rand_tensor(4, ys, dt);
  lark_tensor *xg = to_gpu(x), *wg = to_gpu(w), *bg = to_gpu(b), *gyg = to_gpu(gy);
  CHECK(xg && wg && gyg && (!b || bg), "%s: upload failed", k->what);
  const double tol = dt == LARK_FLOAT64 ? 1e-12 : 2e-5;
  char what[256];
  for (int ref = 0; ref < 2; ref++) {
    const char *kind = ref ? "GPU reference" : "GPU fast";
    lark_tensor *want = lark_dwconv2d_forward_reference(x, w, b, &p);
    lark_tensor *got = lark_dwconv2d_device_forward("dwconv2d", ref, xg, wg, bg, &p);
    snprintf(what, sizeof what, "%s %s %s forward", k->what, lark_dtype_name(dt), kind);
    expect_close(what, got, want, tol);
    lark_tensor_release(want);
    lark_tensor_release(got);
    if (k->n * k->c * k->h * k->w > 0) {
      want = lark_dwconv2d_backward_input_reference(gy, w, xs, &p);
      got = lark_dwconv2d_device_backward_input("dwconv2d_backward_input", ref, gyg, wg, xs, &p);
      snprintf(what, sizeof what, "%s %s %s input gradient", k->what, lark_dtype_name(dt), kind);
      expect_close(what, got, want, tol);
      lark_tensor_release(want);
      lark_tensor_release(got);
    }
    want = lark_dwconv2d_backward_weight_reference(gy, x, &p);
    got = lark_dwconv2d_device_backward_weight("dwconv2d_backward_weight", ref, gyg, xg, &p);
    snprintf(what, sizeof what, "%s %s %s weight gradient", k->what, lark_dtype_name(dt), kind);
    expect_close(what, got, want, tol);
    if (!ref && got) { /* the same bits on a second run: no atomics, fixed orders */
      lark_tensor *again = lark_dwconv2d_device_backward_weight("dwconv2d_backward_weight", false, gyg, xg, &p);
      CHECK(again && same_bits(got, again), "%s: the weight gradient changed between runs", what);
      lark_tensor_release(again);
    }
    lark_tensor_release(want);
    lark_tensor_release(got);
  }
  lark_tensor *all[] = {x, w, b, gy, xg, wg, bg, gyg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lark_tensor_release(all[i]);
}

/* SLaK's triple summed on the GPU (one accumulating call per kernel) against the CPU reference. */
static void check_sums(lark_dtype dt) {
  const int64_t n = 2, c = 4, h = 23, w = 26;
  const int ks[3][2] = {{51, 5}, {5, 51}, {5, 5}};
  lark_conv2d_params ps[3];
  lark_tensor *ws[3], *wg[3];
  const int64_t xs[4] = {n, c, h, w}, bs[1] = {c};
  for (int k = 0; k < 3; k++) {
    ps[k] = (lark_conv2d_params){ks[k][0], ks[k][1], 1, 1, ks[k][0] / 2, ks[k][0] / 2, ks[k][1] / 2, ks[k][1] / 2, 1, 1};
    const int64_t s[4] = {c, 1, ks[k][0], ks[k][1]};
    ws[k] = rand_tensor(4, s, dt);
    wg[k] = to_gpu(ws[k]);
  }
  lark_tensor *x = rand_tensor(4, xs, dt), *b = rand_tensor(1, bs, dt), *gy = rand_tensor(4, xs, dt);
  lark_tensor *xg = to_gpu(x), *bg = to_gpu(b), *gyg = to_gpu(gy);
  const double tol = dt == LARK_FLOAT64 ? 1e-12 : 2e-5;
  char what[128];
  for (int ref = 0; ref < 2; ref++) {
    lark_tensor *want = lark_dwconv2d_sum_forward_reference(x, 3, (const lark_tensor *const *)ws, b, ps);
    lark_tensor *got = lark_dwconv2d_device_sum_forward("dwconv2d_sum", ref, xg, 3, (const lark_tensor *const *)wg, bg, ps);
    snprintf(what, sizeof what, "SLaK sum %s %s forward", lark_dtype_name(dt), ref ? "reference" : "fast");
    expect_close(what, got, want, tol);
    lark_tensor_release(want);
    lark_tensor_release(got);
    want = lark_dwconv2d_sum_backward_input_reference(gy, 3, (const lark_tensor *const *)ws, xs, ps);
    got = lark_dwconv2d_device_sum_backward_input("dwconv2d_sum_backward_input", ref, gyg, 3,
                                                  (const lark_tensor *const *)wg, xs, ps);
    snprintf(what, sizeof what, "SLaK sum %s %s input gradient", lark_dtype_name(dt), ref ? "reference" : "fast");
    expect_close(what, got, want, tol);
    lark_tensor_release(want);
    lark_tensor_release(got);
  }
  for (int k = 0; k < 3; k++) lark_tensor_release(ws[k]), lark_tensor_release(wg[k]);
  lark_tensor *all[] = {x, b, gy, xg, bg, gyg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lark_tensor_release(all[i]);
}

/* A transposed view on the GPU goes through a contiguous copy and gives the same result. */
static void check_views(void) {
  const int64_t s[4] = {2, 3, 12, 9}, ws[4] = {3, 1, 5, 5};
  lark_conv2d_params p = {5, 5, 1, 1, 2, 2, 2, 2, 1, 1};
  lark_tensor *x = rand_tensor(4, s, LARK_FLOAT32), *w = rand_tensor(4, ws, LARK_FLOAT32);
  lark_tensor *xg = to_gpu(x), *wg = to_gpu(w);
  lark_tensor *xt = xg ? lark_transpose(xg, 2, 3) : NULL; /* (2, 3, 9, 12), not contiguous */
  lark_tensor *xtc = x ? lark_transpose(x, 2, 3) : NULL;
  lark_tensor *want = xtc ? lark_dwconv2d_forward_reference(xtc, w, NULL, &p) : NULL;
  lark_tensor *got = xt ? lark_dwconv2d_device_forward("dwconv2d", false, xt, wg, NULL, &p) : NULL;
  expect_close("transposed input", got, want, 2e-5);
  lark_tensor *all[] = {x, w, xg, wg, xt, xtc, want, got};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lark_tensor_release(all[i]);
}

static void check_errors(void) {
  const int64_t s[4] = {1, 2, 5, 5}, ws[4] = {2, 1, 3, 3}, bad[4] = {3, 1, 3, 3};
  lark_conv2d_params p = {3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
  lark_tensor *x = rand_tensor(4, s, LARK_FLOAT32), *w = rand_tensor(4, ws, LARK_FLOAT32);
  lark_tensor *wb = rand_tensor(4, bad, LARK_FLOAT32), *w64 = rand_tensor(4, ws, LARK_FLOAT64);
  lark_tensor *xg = to_gpu(x), *wg = to_gpu(w), *wbg = to_gpu(wb), *w64g = to_gpu(w64);
  CHECK(lark_dwconv2d_on_device(xg, NULL, NULL) && lark_dwconv2d_on_device(x, w, wg) && !lark_dwconv2d_on_device(x, w, NULL),
        "lark_dwconv2d_on_device");
  lark_tensor *r = lark_dwconv2d_device_forward("dwconv2d", false, xg, w, NULL, &p);
  CHECK(!r && lark_error_code() == LARK_ERR_DEVICE && error_has("cpu") && error_has("cuda"),
        "mixed devices: expected a device error naming both");
  lark_tensor_release(r);
  r = lark_dwconv2d_device_forward("dwconv2d", false, xg, wbg, NULL, &p);
  CHECK(!r && error_has("dwconv2d: weight must have shape [2,1,3,3], got [3,1,3,3]"), "weight shape message");
  lark_tensor_release(r);
  r = lark_dwconv2d_device_forward("dwconv2d", false, xg, w64g, NULL, &p);
  CHECK(!r && error_has("dwconv2d: input (float32) and weight (float64) must have the same dtype"), "dtype message");
  lark_tensor_release(r);
  lark_conv2d_params big = {9, 9, 1, 1, 0, 0, 0, 0, 1, 1};
  const int64_t w9s[4] = {2, 1, 9, 9};
  lark_tensor *w9 = rand_tensor(4, w9s, LARK_FLOAT32), *w9g = to_gpu(w9);
  r = lark_dwconv2d_device_forward("dwconv2d", false, xg, w9g, NULL, &big);
  CHECK(!r && error_has("smaller than the dilated kernel"), "kernel larger than the padded map");
  lark_tensor_release(r);
  lark_tensor_release(w9);
  lark_tensor_release(w9g);
  const int64_t wrong[4] = {1, 2, 4, 5};
  lark_tensor *gy = rand_tensor(4, wrong, LARK_FLOAT32), *gyg = to_gpu(gy);
  r = lark_dwconv2d_device_backward_weight("dwconv2d_backward_weight", false, gyg, xg, &p);
  CHECK(!r && error_has("grad_out must have shape [1,2,5,5]"), "grad_out shape message");
  lark_tensor_release(r);
  lark_tensor *all[] = {x, w, wb, w64, xg, wg, wbg, w64g, gy, gyg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lark_tensor_release(all[i]);
}

int main(void) {
  rand_seed(20240611);
  if (!lark_cuda_is_available()) {
    /* the device path refuses what it cannot run, with an error rather than a crash */
    const int64_t s[4] = {1, 1, 4, 4}, ws[4] = {1, 1, 3, 3};
    lark_conv2d_params p = {3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
    lark_tensor *x = rand_tensor(4, s, LARK_FLOAT32), *w = rand_tensor(4, ws, LARK_FLOAT32);
    CHECK(!lark_dwconv2d_on_device(x, w, NULL), "CPU tensors are not on a device");
    lark_tensor *r = lark_dwconv2d_device_forward("dwconv2d", false, x, w, NULL, &p);
    CHECK(!r && error_has("dwconv2d: not implemented for cpu"), "the device path on CPU tensors");
    lark_tensor_release(r);
    lark_tensor_release(x);
    lark_tensor_release(w);
    printf("skipped: no CUDA device\n");
    return check_report("test_dwconv_cuda");
  }
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    check_case(&cases[i], LARK_FLOAT32);
    check_case(&cases[i], LARK_FLOAT64);
  }
  check_sums(LARK_FLOAT32);
  check_sums(LARK_FLOAT64);
  check_views();
  check_errors();
  CHECK(lark_cuda_synchronize() == 0, "synchronize after every kernel");
  return check_report("test_dwconv_cuda");
}
