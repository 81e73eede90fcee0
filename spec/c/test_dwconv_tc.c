/* test_dwconv_tc.c: the depth-wise convolution on tensor cores (cuda/dwconv_tc.cu), reached
 * through the public front functions under lark_set_float32_precision("high") (TF32) and
 * ("medium") (BF16).
 *
 * The tensor cores see their operands rounded (TF32: 10 mantissa bits, to nearest, ties away from
 * zero, as cvt.rna; BF16: 7 bits, to nearest even) and sum exactly enough in float32. So each pass
 * is checked against the CPU's float64 reference loops run on operands rounded the same way, to
 * 2e-5 of the largest result: tight enough that the exact kernels (which differ from that by about
 * 1e-3) would fail, so the test also shows that the switch reaches the tensor cores. Shapes cover
 * one and several tiles per plane, maps smaller than the kernel, SLaK's 51x5 and 5x51, even
 * kernels with uneven padding, no padding, the widest kernel the path takes (57) and one wider
 * (58, which the exact kernels run), the summed triple (accumulating launches), and the weight
 * gradient's bits from run to run.
 *
 * Without a CUDA device it checks the setting's argument handling only, prints "skipped: no CUDA
 * device" and passes. */
#include "check.h"
#include "../../core/ops/dwconv.h"

static const lark_device CPU = {LARK_CPU, 0};
static const lark_device GPU = {LARK_CUDA, 0};

static float round_tf32(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  memcpy(&v, &u, 4);
  return v;
}

static float round_bf16(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  memcpy(&v, &u, 4);
  return v;
}

/* A float64 copy of the float32 CPU tensor t with every element rounded as the tensor cores do. */
static lark_tensor *rounded(const lark_tensor *t, bool bf16) {
  lark_tensor *r = lark_empty(t->ndim, t->shape, LARK_FLOAT64, NULL);
  for (int64_t i = 0; i < lark_numel(t); i++) {
    float v = ((const float *)lark_data_ptr(t))[i];
    ((double *)lark_data_ptr(r))[i] = bf16 ? round_bf16(v) : round_tf32(v);
  }
  return r;
}

static lark_tensor *rand_tensor(int nd, const int64_t *shape) {
  lark_tensor *t = lark_empty(nd, shape, LARK_FLOAT32, NULL);
  fill_uniform(t, -1, 1);
  return t;
}

static lark_tensor *to_gpu(const lark_tensor *t) { return t ? lark_to(t, t->dtype, &GPU) : NULL; }

/* got (float32, on the GPU) within tol of the largest |want| (float64, CPU) everywhere. */
static void expect_close(const char *what, const lark_tensor *got, const lark_tensor *want, double tol) {
  CHECK(got != NULL, "%s: no result (%s)", what, lark_error());
  if (!got) return;
  CHECK(lark_tensor_device(got).kind == LARK_CUDA, "%s: result not on the GPU", what);
  lark_tensor *g = lark_to(got, LARK_FLOAT64, &CPU);
  CHECK(g && lark_numel(g) == lark_numel(want), "%s: copy back or size", what);
  if (!g || lark_numel(g) != lark_numel(want)) {
    lark_tensor_release(g);
    return;
  }
  double scale = 1, worst = 0;
  int64_t wi = 0, n = lark_numel(want);
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(data_get(want, i)));
  for (int64_t i = 0; i < n; i++) {
    double d = fabs(data_get(g, i) - data_get(want, i));
    if (!(d <= worst)) worst = d, wi = i;
  }
  CHECK(worst <= tol * scale, "%s: element %lld is %.9g, expected %.9g (error %.3g > %.3g)", what, (long long)wi,
        data_get(g, wi), data_get(want, wi), worst, tol * scale);
  lark_tensor_release(g);
}

typedef struct {
  int64_t n, c, h, w;
  int kh, kw, pt, pb, pl, pr;
  const char *what;
} tc_case;

static const tc_case cases[] = {
    {2, 3, 32, 32, 31, 31, 15, 15, 15, 15, "31x31 on 32x32 (RepLKNet)"},
    {1, 2, 56, 60, 31, 31, 15, 15, 15, 15, "31x31 on 56x60: several tiles per plane"},
    {2, 3, 16, 16, 13, 13, 6, 6, 6, 6, "13x13 on 16x16: the small tile"},
    {2, 2, 7, 7, 13, 13, 6, 6, 6, 6, "13x13 on 7x7: kernel larger than the map"},
    {2, 2, 20, 23, 5, 51, 2, 2, 25, 25, "5x51 (SLaK)"},
    {2, 2, 37, 9, 51, 5, 25, 25, 2, 2, "51x5 (SLaK)"},
    {1, 2, 12, 19, 4, 6, 1, 2, 2, 3, "even 4x6, uneven padding"},
    {1, 2, 10, 70, 3, 3, 0, 0, 0, 0, "3x3, no padding"},
    {1, 1, 40, 41, 3, 57, 1, 1, 28, 28, "3x57: the widest the path takes"},
    {1, 1, 9, 30, 3, 58, 1, 1, 29, 29, "3x58: the exact kernels' forward"},
    {3, 2, 5, 6, 1, 1, 0, 0, 0, 0, "1x1"},
    {3, 7, 18, 18, 7, 7, 3, 3, 3, 3, "7x7, 21 planes: a warp's run of items crosses channels"},
    {5, 9, 17, 20, 5, 5, 2, 2, 2, 2, "5x5, 45 planes"},
};

static void check_case(const tc_case *k, bool bf16) {
  lark_conv2d_params p = {k->kh, k->kw, 1, 1, k->pt, k->pb, k->pl, k->pr, 1, 1};
  int64_t ho, wo;
  CHECK(lark_conv2d_output_size("test", k->h, k->w, &p, &ho, &wo) == 0, "%s: geometry", k->what);
  const int64_t xs[4] = {k->n, k->c, k->h, k->w}, ws[4] = {k->c, 1, k->kh, k->kw}, bs[1] = {k->c},
                ys[4] = {k->n, k->c, ho, wo};
  lark_tensor *x = rand_tensor(4, xs), *w = rand_tensor(4, ws), *b = rand_tensor(1, bs), *gy = rand_tensor(4, ys);
  lark_tensor *xr = rounded(x, bf16), *wr = rounded(w, bf16), *gyr = rounded(gy, bf16);
  lark_tensor *b64 = lark_to(b, LARK_FLOAT64, &CPU);
  lark_tensor *xg = to_gpu(x), *wg = to_gpu(w), *bg = to_gpu(b), *gyg = to_gpu(gy);
  char what[256];
  const char *mode = bf16 ? "bf16" : "tf32";
  /* 3x58's forward and input gradient run the exact kernels, so they are held to the exact result */
  const bool wide = k->kw > 57;

  lark_tensor *x64 = lark_to(x, LARK_FLOAT64, &CPU), *w64 = lark_to(w, LARK_FLOAT64, &CPU);
  lark_tensor *want = wide ? lark_dwconv2d_forward_reference(x64, w64, b64, &p) : lark_dwconv2d_forward_reference(xr, wr, b64, &p);
  snprintf(what, sizeof what, "%s %s forward", k->what, mode);
  lark_tensor *got = lark_dwconv2d_forward(xg, wg, bg, &p);
  expect_close(what, got, want, 2e-5);
  lark_tensor_release(got);
  lark_tensor_release(want);

  if (!wide) {
    want = lark_dwconv2d_backward_input_reference(gyr, wr, xs, &p);
    snprintf(what, sizeof what, "%s %s input gradient", k->what, mode);
    got = lark_dwconv2d_backward_input(gyg, wg, xs, &p);
    expect_close(what, got, want, 2e-5);
    lark_tensor_release(got);
    lark_tensor_release(want);
  }

  want = lark_dwconv2d_backward_weight_reference(gyr, xr, &p);
  snprintf(what, sizeof what, "%s %s weight gradient", k->what, mode);
  got = lark_dwconv2d_backward_weight(gyg, xg, &p);
  expect_close(what, got, want, 2e-5);
  lark_tensor *again = lark_dwconv2d_backward_weight(gyg, xg, &p);
  if (got && again) {
    lark_tensor *a = lark_to(got, LARK_FLOAT32, &CPU), *c = lark_to(again, LARK_FLOAT32, &CPU);
    CHECK(a && c && memcmp(lark_data_ptr(a), lark_data_ptr(c), sizeof(float) * (size_t)lark_numel(a)) == 0,
          "%s: the weight gradient's bits change from run to run", what);
    lark_tensor_release(a);
    lark_tensor_release(c);
  }
  lark_tensor_release(again);
  lark_tensor_release(got);
  lark_tensor_release(want);

  lark_tensor *all[] = {x, w, b, gy, xr, wr, gyr, b64, x64, w64, xg, wg, bg, gyg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lark_tensor_release(all[i]);
}

/* SLaK's triple through the summed kernels: the second and third kernels accumulate. */
static void check_sum(bool bf16) {
  const int64_t xs[4] = {2, 3, 23, 26}, bs[1] = {3};
  const int64_t wsh[3][4] = {{3, 1, 51, 5}, {3, 1, 5, 51}, {3, 1, 5, 5}};
  lark_conv2d_params p[3] = {{51, 5, 1, 1, 25, 25, 2, 2, 1, 1}, {5, 51, 1, 1, 2, 2, 25, 25, 1, 1},
                             {5, 5, 1, 1, 2, 2, 2, 2, 1, 1}};
  lark_tensor *x = rand_tensor(4, xs), *b = rand_tensor(1, bs), *gy = rand_tensor(4, xs);
  lark_tensor *w[3], *wr[3], *wg[3];
  for (int i = 0; i < 3; i++) w[i] = rand_tensor(4, wsh[i]), wr[i] = rounded(w[i], bf16), wg[i] = to_gpu(w[i]);
  lark_tensor *xr = rounded(x, bf16), *gyr = rounded(gy, bf16), *b64 = lark_to(b, LARK_FLOAT64, &CPU);
  lark_tensor *xg = to_gpu(x), *bg = to_gpu(b), *gyg = to_gpu(gy);
  const char *mode = bf16 ? "bf16" : "tf32";
  char what[128];

  lark_tensor *want = lark_dwconv2d_sum_forward_reference(xr, 3, (const lark_tensor *const *)wr, b64, p);
  lark_tensor *got = lark_dwconv2d_sum_forward(xg, 3, (const lark_tensor *const *)wg, bg, p);
  snprintf(what, sizeof what, "SLaK sum %s forward", mode);
  expect_close(what, got, want, 2e-5);
  lark_tensor_release(got);
  lark_tensor_release(want);
  want = lark_dwconv2d_sum_backward_input_reference(gyr, 3, (const lark_tensor *const *)wr, xs, p);
  got = lark_dwconv2d_sum_backward_input(gyg, 3, (const lark_tensor *const *)wg, xs, p);
  snprintf(what, sizeof what, "SLaK sum %s input gradient", mode);
  expect_close(what, got, want, 2e-5);
  lark_tensor_release(got);
  lark_tensor_release(want);

  lark_tensor *all[] = {x, b, gy, xr, gyr, b64, xg, bg, gyg};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lark_tensor_release(all[i]);
  for (int i = 0; i < 3; i++) lark_tensor_release(w[i]), lark_tensor_release(wr[i]), lark_tensor_release(wg[i]);
}

int main(void) {
  rand_seed(20261130);
  CHECK(lark_float32_precision() == LARK_PRECISION_HIGHEST, "the default precision is highest");
  CHECK(lark_set_float32_precision("fast") < 0 && error_has("expected 'highest', 'high' or 'medium', got 'fast'"),
        "a bad precision name is refused");
  CHECK(lark_set_float32_precision(NULL) < 0, "a NULL name is refused");
  CHECK(lark_float32_precision() == LARK_PRECISION_HIGHEST, "a refused name leaves the setting alone");
  CHECK(lark_set_float32_precision("medium") == 0 && lark_float32_precision() == LARK_PRECISION_MEDIUM &&
            strcmp(lark_float32_precision_name(), "medium") == 0,
        "medium is set and named");
  lark_set_float32_precision("highest");
  if (!lark_cuda_is_available()) {
    printf("skipped: no CUDA device\n");
    return check_report("test_dwconv_tc");
  }
  for (int bf16 = 0; bf16 < 2; bf16++) {
    CHECK(lark_set_float32_precision(bf16 ? "medium" : "high") == 0, "set the precision");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], bf16);
    check_sum(bf16);
  }
  lark_set_float32_precision("highest");
  CHECK(lark_cuda_synchronize() == 0, "synchronize after every kernel");
  return check_report("test_dwconv_tc");
}
