/* test_conv.c: conv2d's im2col + GEMM passes (core/ops/conv.c) against the plain 7-deep reference
 * loops on many random shapes (groups 1, 2 and C, stride, dilation, asymmetric padding, 1x1
 * kernels, kernels as large as the padded map, batches big enough for the threads), in float32
 * and float64, the argument errors, and no leaks. */
#include "check.h"
#include "../../core/ops/conv.h"
#include "autograd.h"

static double max_rel_diff(const lark_tensor *a, const lark_tensor *b) {
  if (!a || !b || lark_numel(a) != lark_numel(b)) return INFINITY;
  double worst = 0;
  for (int64_t i = 0; i < lark_numel(a); i++) {
    double x = get_flat(a, i), y = get_flat(b, i), d = fabs(x - y) / (1 + fabs(y));
    if (!(d <= worst)) worst = d;
  }
  return worst;
}

static void one_case(lark_dtype dt, int iter) {
  int64_t G = 1 + rand_int(3), cg = 1 + rand_int(3), cog = 1 + rand_int(3);
  if (rand_int(4) == 0) cg = 1, cog = 1, G = 1 + rand_int(6); /* depth-wise */
  lark_conv2d_args a = {.stride_h = 1 + (int)rand_int(2), .stride_w = 1 + (int)rand_int(2),
                        .pad_top = (int)rand_int(3), .pad_bottom = (int)rand_int(3),
                        .pad_left = (int)rand_int(3), .pad_right = (int)rand_int(3),
                        .dil_h = 1 + (int)rand_int(2), .dil_w = 1 + (int)rand_int(2), .groups = (int)G};
  int64_t kh = 1 + rand_int(4), kw = 1 + rand_int(4);
  int64_t H = 1 + rand_int(9), W = 1 + rand_int(9);
  /* make the kernel fit the padded map */
  while (a.dil_h * (kh - 1) + 1 > H + a.pad_top + a.pad_bottom) H++;
  while (a.dil_w * (kw - 1) + 1 > W + a.pad_left + a.pad_right) W++;
  int64_t N = 1 + rand_int(iter % 5 == 0 ? 6 : 2);
  int64_t xs[4] = {N, G * cg, H, W}, ws[4] = {G * cog, cg, kh, kw}, bs[1] = {G * cog};
  lark_tensor *x = lark_empty(4, xs, dt, NULL), *w = lark_empty(4, ws, dt, NULL), *b = lark_empty(1, bs, dt, NULL);
  fill_uniform(x, -1, 1);
  fill_uniform(w, -1, 1);
  fill_uniform(b, -1, 1);
  double tol = dt == LARK_FLOAT64 ? 1e-12 : 2e-5;
  lark_tensor *y = lark_conv2d(x, w, b, &a), *yr = lark_conv2d_reference(x, w, b, &a);
  CHECK(y && yr && max_rel_diff(y, yr) <= tol, "forward case %d (%s): differs from the reference by %g", iter,
        lark_dtype_name(dt), max_rel_diff(y, yr));
  if (y) {
    lark_tensor *gy = lark_empty(4, y->shape, dt, NULL);
    fill_uniform(gy, -1, 1);
    lark_tensor *gx = lark_conv2d_backward_input(gy, w, xs, &a), *gxr = lark_conv2d_backward_input_reference(gy, w, xs, &a);
    CHECK(gx && gxr && max_rel_diff(gx, gxr) <= tol, "input gradient case %d: differs by %g", iter, max_rel_diff(gx, gxr));
    lark_tensor *gw = lark_conv2d_backward_weight(gy, x, ws, &a), *gwr = lark_conv2d_backward_weight_reference(gy, x, ws, &a);
    CHECK(gw && gwr && max_rel_diff(gw, gwr) <= tol, "weight gradient case %d: differs by %g", iter, max_rel_diff(gw, gwr));
    lark_tensor_release(gy);
    lark_tensor_release(gx);
    lark_tensor_release(gxr);
    lark_tensor_release(gw);
    lark_tensor_release(gwr);
  }
  lark_tensor_release(y);
  lark_tensor_release(yr);
  lark_tensor_release(x);
  lark_tensor_release(w);
  lark_tensor_release(b);
}

static void errors(void) {
  int64_t xs[4] = {1, 4, 5, 5}, ws[4] = {2, 3, 3, 3}, w2[4] = {3, 2, 3, 3}, w3[4] = {2, 4, 7, 1};
  lark_tensor *x = lark_zeros(4, xs, LARK_FLOAT32, NULL), *w = lark_zeros(4, ws, LARK_FLOAT32, NULL),
              *wb = lark_zeros(4, w2, LARK_FLOAT32, NULL), *wc = lark_zeros(4, w3, LARK_FLOAT32, NULL);
  lark_conv2d_args a = {1, 1, 0, 0, 0, 0, 1, 1, 1};
  CHECK(!lark_conv2d(x, w, NULL, &a) && error_has("weight has 3 input channels per group"), "channel mismatch");
  a.groups = 3;
  CHECK(!lark_conv2d(x, wb, NULL, &a) && error_has("groups (3) must divide the input channels (4)"), "groups");
  a.groups = 2;
  CHECK(!lark_conv2d(x, wb, NULL, &a) && error_has("must divide the output channels (3"), "groups out");
  a.groups = 1;
  CHECK(!lark_conv2d(x, wc, NULL, &a) && error_has("larger than the padded input 5x5"), "kernel too large");
  a.stride_h = 0;
  CHECK(!lark_conv2d(x, wc, NULL, &a) && error_has("stride must be >= 1"), "stride 0");
  CHECK(!lark_conv2d(NULL, wc, NULL, &a) && error_has("input is missing"), "NULL input");
  lark_tensor_release(x);
  lark_tensor_release(w);
  lark_tensor_release(wb);
  lark_tensor_release(wc);
}

/* Sum of all elements of t. */
static double total(const lark_tensor *t) {
  double s = 0;
  for (int64_t i = 0; t && i < lark_numel(t); i++) s += get_flat(t, i);
  return s;
}

/* The pools and pad on random shapes, through autograd with a gradient of ones: every output
 * element hands exactly 1 back to the input (max: to one element; avg and adaptive: spread
 * evenly, less what falls in padding; pad: to the element it copied, none for fill). */
static void pools(void) {
  for (int iter = 0; iter < 40; iter++) {
    lark_dtype dt = iter % 2 ? LARK_FLOAT32 : LARK_FLOAT64;
    lark_pool2d_args a = {.kh = 1 + (int)rand_int(4), .kw = 1 + (int)rand_int(4)};
    a.stride_h = 1 + (int)rand_int(3), a.stride_w = 1 + (int)rand_int(3);
    a.pad_h = (int)rand_int(a.kh / 2 + 1), a.pad_w = (int)rand_int(a.kw / 2 + 1);
    int64_t shape[4] = {1 + rand_int(2), 1 + rand_int(3), a.kh + rand_int(6), a.kw + rand_int(6)};
    lark_tensor *x = lark_empty(4, shape, dt, NULL);
    fill_uniform(x, -1, 1);
    x->requires_grad = true;
    for (int op = 0; op < 4; op++) {
      int64_t pads[4] = {rand_int(5) - 2, rand_int(5) - 2, rand_int(5) - 2, rand_int(5) - 2};
      lark_tensor *y = op == 0   ? lark_max_pool2d(x, &a, NULL)
                       : op == 1 ? lark_avg_pool2d(x, &a)
                       : op == 2 ? lark_adaptive_avg_pool2d(x, 1 + rand_int(7), 1 + rand_int(7))
                                 : lark_pad(x, 4, pads, 3.0);
      bool crop_too_much = op == 3 && (shape[3] + pads[0] + pads[1] < 0 || shape[2] + pads[2] + pads[3] < 0);
      if (crop_too_much) {
        CHECK(!y && error_has("give a negative size"), "pad case %d: cropping below 0 must fail", iter);
        lark_tensor_release(y);
        continue;
      }
      CHECK(y != NULL, "pool op %d case %d failed", op, iter);
      if (!y) continue;
      lark_tensor *g = lark_ones(y->ndim, y->shape, dt, NULL), *gx = NULL;
      lark_tensor *in[1] = {x};
      CHECK(lark_backward(y, g, false, 1, in, &gx) == 0 && gx, "pool op %d case %d: backward failed", op, iter);
      double want = (double)lark_numel(y);
      if (op == 1) { /* avg: each window gives back the share of its taps inside the map */
        want = 0;
        int64_t Ho = y->shape[2], Wo = y->shape[3];
        for (int64_t oh = 0; oh < Ho; oh++)
          for (int64_t ow = 0; ow < Wo; ow++) {
            int64_t in_h = 0, in_w = 0;
            for (int64_t i = 0; i < a.kh; i++) in_h += oh * a.stride_h - a.pad_h + i >= 0 && oh * a.stride_h - a.pad_h + i < shape[2];
            for (int64_t j = 0; j < a.kw; j++) in_w += ow * a.stride_w - a.pad_w + j >= 0 && ow * a.stride_w - a.pad_w + j < shape[3];
            want += (double)(in_h * in_w) / (double)(a.kh * a.kw);
          }
        want *= (double)(shape[0] * shape[1]);
      }
      if (op == 3) { /* pad: the input elements that survive the crop */
        int64_t h = shape[2] - (pads[2] < 0 ? -pads[2] : 0) - (pads[3] < 0 ? -pads[3] : 0);
        int64_t w = shape[3] - (pads[0] < 0 ? -pads[0] : 0) - (pads[1] < 0 ? -pads[1] : 0);
        want = h > 0 && w > 0 ? (double)(shape[0] * shape[1] * h * w) : 0;
      }
      CHECK(gx && near(total(gx), want, dt == LARK_FLOAT32 ? 1e-5 : 1e-12), "pool op %d case %d: gradient sums to %g, expected %g",
            op, iter, total(gx), want);
      lark_tensor_release(g);
      lark_tensor_release(gx);
      lark_tensor_release(y);
    }
    lark_tensor_release(x);
  }
}

int main(void) {
  int64_t start = lark_bytes_allocated(LARK_CPU);
  rand_seed(12345);
  for (int i = 0; i < 60; i++) one_case(i % 2 ? LARK_FLOAT32 : LARK_FLOAT64, i);
  /* one batch large enough for the threaded path, in both dtypes */
  for (int d = 0; d < 2; d++) {
    lark_dtype dt = d ? LARK_FLOAT32 : LARK_FLOAT64;
    int64_t xs[4] = {6, 8, 14, 13}, ws[4] = {8, 4, 3, 3};
    lark_conv2d_args a = {2, 1, 1, 2, 0, 1, 1, 2, 2};
    lark_tensor *x = lark_empty(4, xs, dt, NULL), *w = lark_empty(4, ws, dt, NULL);
    fill_uniform(x, -1, 1);
    fill_uniform(w, -1, 1);
    lark_tensor *y = lark_conv2d(x, w, NULL, &a), *yr = lark_conv2d_reference(x, w, NULL, &a);
    CHECK(y && yr && max_rel_diff(y, yr) <= (d ? 2e-5 : 1e-12), "threaded forward differs by %g", max_rel_diff(y, yr));
    lark_tensor *gw = y ? lark_conv2d_backward_weight(y, x, ws, &a) : NULL,
                *gwr = y ? lark_conv2d_backward_weight_reference(y, x, ws, &a) : NULL;
    CHECK(gw && gwr && max_rel_diff(gw, gwr) <= (d ? 1e-4 : 1e-12), "threaded weight gradient differs by %g",
          max_rel_diff(gw, gwr));
    lark_tensor_release(x);
    lark_tensor_release(w);
    lark_tensor_release(y);
    lark_tensor_release(yr);
    lark_tensor_release(gw);
    lark_tensor_release(gwr);
  }
  errors();
  pools();
  lark_clear_error();
  CHECK_NO_LEAK(start);
  return check_report("test_conv");
}
