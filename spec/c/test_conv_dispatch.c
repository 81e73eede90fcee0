/* test_conv_dispatch.c: the device half of conv.c and pool.c, run without a GPU.
 *
 * On a device, conv2d runs im2col / col2im through its backend's fields and the products through
 * the gemm field, in chunks of the batch, with GEMM views built per (sample, group); pooling calls
 * the backend's pooling fields (core/backend.h). Here a stand-in backend, registered for the CUDA
 * device kind, keeps its memory on the host and takes the CPU backend's copy, fill, elementwise
 * and gemm kernels; its im2col, col2im and pooling fields are written as cuda/conv.cu and
 * cuda/pool.cu compute them (the same index decoding, the same gathers with the same window
 * ranges and order of additions), and its depth-wise fields run the CPU's reference. Every result
 * is compared with the CPU: conv2d's outputs and both gradients (and through autograd), with the
 * chunk size shrunk so that several chunks, partial last chunks and one-sample chunks all run;
 * pooling exactly (values, indices, gradients, NaN and ties). Then the errors: mixed devices, the
 * reference loops refusing device tensors, and "not implemented for cuda:0" for a missing field.
 *
 * With a CUDA device present the real backend is the one to test (spec/conv_gpu_spec.lua does):
 * registering a stand-in would replace it in this process, so the test then says so and passes. */
#include "check.h"

#include "autograd.h"
#include "backend.h"

static const lark_device DEV = {LARK_CUDA, 0};
static lark_backend fake;
static int calls_im2col, calls_col2im, calls_pool;

/* conv.c's knob: bytes of buffers per chunk of the batch */
extern int64_t lark_conv2d_chunk_bytes;

/* ---- the stand-in's kernels ------------------------------------------------------------------ */

static int64_t out_len(int64_t n, int pa, int pb, int k, int dil, int stride) {
  return (n + pa + pb - (int64_t)dil * (k - 1) - 1) / stride + 1;
}

/* cuda/conv.cu's im2col_kernel: each col element in memory order, decoded into (s, r, q) */
static int fake_im2col(lark_tensor *col, const lark_tensor *x, const lark_conv2d_params *p, unsigned flags) {
  calls_im2col++;
  CHECK(lark_is_contiguous(col) && lark_is_contiguous(x) && col->dtype == x->dtype, "im2col operands");
  int64_t nb = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t Ho = out_len(H, p->pad_top, p->pad_bottom, p->kh, p->dil_h, p->stride_h);
  int64_t Wo = out_len(W, p->pad_left, p->pad_right, p->kw, p->dil_w, p->stride_w);
  int64_t Q = Ho * Wo, R = C * p->kh * p->kw;
  bool tap = (flags & LARK_IM2COL_TAP_MAJOR) != 0;
  int64_t want[3] = {tap ? R : nb, tap ? nb : R, Q};
  CHECK(col->ndim == 3 && !memcmp(col->shape, want, sizeof want), "im2col: col's shape");
  for (int64_t e = 0, n = lark_numel(col); e < n; e++) {
    int64_t q = e % Q, rest = e / Q, s = tap ? rest % nb : rest / R, r = tap ? rest / nb : rest % R;
    int64_t j = r % p->kw, i = r / p->kw % p->kh, c = r / p->kw / p->kh, oh = q / Wo, ow = q % Wo;
    int64_t ih = oh * p->stride_h - p->pad_top + i * p->dil_h, iw = ow * p->stride_w - p->pad_left + j * p->dil_w;
    double v = ih >= 0 && ih < H && iw >= 0 && iw < W ? data_get(x, ((s * C + c) * H + ih) * W + iw) : 0;
    data_set(col, e, v);
  }
  return 0;
}

/* cuda/conv.cu's col2im_kernel: a gather per x element, taps in increasing row order */
static int fake_col2im(lark_tensor *x, const lark_tensor *col, const lark_conv2d_params *p) {
  calls_col2im++;
  CHECK(lark_is_contiguous(col) && lark_is_contiguous(x) && col->dtype == x->dtype, "col2im operands");
  int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t Ho = out_len(H, p->pad_top, p->pad_bottom, p->kh, p->dil_h, p->stride_h);
  int64_t Wo = out_len(W, p->pad_left, p->pad_right, p->kw, p->dil_w, p->stride_w);
  int64_t Q = Ho * Wo, R = C * p->kh * p->kw;
  for (int64_t e = 0, n = lark_numel(x); e < n; e++) {
    int64_t iw = e % W, ih = e / W % H, c = e / W / H % C, s = e / W / H / C;
    double acc = 0;
    float accf = 0;
    for (int64_t i = 0; i < p->kh; i++) {
      int64_t th = ih + p->pad_top - i * p->dil_h;
      if (th < 0) break;
      int64_t oh = th / p->stride_h;
      if (oh * p->stride_h != th || oh >= Ho) continue;
      for (int64_t j = 0; j < p->kw; j++) {
        int64_t tw = iw + p->pad_left - j * p->dil_w;
        if (tw < 0) break;
        int64_t ow = tw / p->stride_w;
        if (ow * p->stride_w != tw || ow >= Wo) continue;
        double v = data_get(col, (s * R + (c * p->kh + i) * p->kw + j) * Q + oh * Wo + ow);
        acc += v, accf += (float)v; /* the kernel adds in the tensor's dtype */
      }
    }
    data_set(x, e, x->dtype == LARK_FLOAT32 ? (double)accf : acc);
  }
  return 0;
}

typedef struct {
  int64_t planes, h, w, ho, wo, kh, kw, sh, sw, ph, pw;
} pgeom;

static pgeom pool_geom_of(const lark_tensor *big, const lark_tensor *small, const lark_pool2d_args *a, bool adaptive) {
  int nd = big->ndim;
  pgeom g = {1, big->shape[nd - 2], big->shape[nd - 1], small->shape[nd - 2], small->shape[nd - 1], 1, 1, 1, 1, 0, 0};
  for (int d = 0; d < nd - 2; d++) g.planes *= big->shape[d];
  if (!adaptive) g.kh = a->kh, g.kw = a->kw, g.sh = a->stride_h, g.sw = a->stride_w, g.ph = a->pad_h, g.pw = a->pad_w;
  return g;
}

static void plain_window(int64_t o, int64_t s, int64_t pad, int64_t k, int64_t n, int64_t *a, int64_t *b) {
  *a = o * s - pad;
  *b = *a + k;
  if (*a < 0) *a = 0;
  if (*b > n) *b = n;
}
static void adaptive_window(int64_t o, int64_t in, int64_t out, int64_t *a, int64_t *b) {
  *a = o * in / out;
  *b = ((o + 1) * in + out - 1) / out;
}
static void plain_range(int64_t i, int64_t s, int64_t pad, int64_t k, int64_t n_out, int64_t *lo, int64_t *hi) {
  int64_t t = i + pad;
  *lo = t - k < 0 ? 0 : (t - k) / s + 1;
  *hi = t / s;
  if (*hi > n_out - 1) *hi = n_out - 1;
}
static void adaptive_range(int64_t i, int64_t in, int64_t out, int64_t *lo, int64_t *hi) {
  *lo = i * out / in - 1;
  *hi = ((i + 1) * out + in - 1) / in;
  if (*lo < 0) *lo = 0;
  if (*hi > out - 1) *hi = out - 1;
}

/* the value v rounded to t's dtype */
static double as_dtype(const lark_tensor *t, double v) { return t->dtype == LARK_FLOAT32 ? (double)(float)v : v; }

static int fake_avg_forward(lark_tensor *out, const lark_tensor *x, const lark_pool2d_args *a, bool adaptive) {
  calls_pool++;
  pgeom g = pool_geom_of(x, out, a, adaptive);
  for (int64_t e = 0, n = lark_numel(out); e < n; e++) {
    int64_t ow = e % g.wo, oh = e / g.wo % g.ho, pl = e / g.wo / g.ho, h0, h1, w0, w1;
    double count;
    if (adaptive) {
      adaptive_window(oh, g.h, g.ho, &h0, &h1);
      adaptive_window(ow, g.w, g.wo, &w0, &w1);
      count = (double)((h1 - h0) * (w1 - w0));
    } else {
      plain_window(oh, g.sh, g.ph, g.kh, g.h, &h0, &h1);
      plain_window(ow, g.sw, g.pw, g.kw, g.w, &w0, &w1);
      count = (double)g.kh * (double)g.kw;
    }
    double s = 0;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) s += data_get(x, (pl * g.h + ih) * g.w + iw);
    data_set(out, e, s / count);
  }
  return 0;
}

/* cuda/pool.cu's avg_backward_kernel: the windows containing each element, in output order */
static int fake_avg_backward(lark_tensor *gin, const lark_tensor *gout, const lark_pool2d_args *a, bool adaptive) {
  calls_pool++;
  pgeom g = pool_geom_of(gin, gout, a, adaptive);
  for (int64_t e = 0, n = lark_numel(gin); e < n; e++) {
    int64_t iw = e % g.w, ih = e / g.w % g.h, pl = e / g.w / g.h, oh0, oh1, ow0, ow1;
    if (adaptive) {
      adaptive_range(ih, g.h, g.ho, &oh0, &oh1);
      adaptive_range(iw, g.w, g.wo, &ow0, &ow1);
    } else {
      plain_range(ih, g.sh, g.ph, g.kh, g.ho, &oh0, &oh1);
      plain_range(iw, g.sw, g.pw, g.kw, g.wo, &ow0, &ow1);
    }
    double acc = 0;
    for (int64_t oh = oh0; oh <= oh1; oh++) {
      int64_t h0, h1;
      if (adaptive) adaptive_window(oh, g.h, g.ho, &h0, &h1);
      else plain_window(oh, g.sh, g.ph, g.kh, g.h, &h0, &h1);
      if (ih < h0 || ih >= h1) continue;
      for (int64_t ow = ow0; ow <= ow1; ow++) {
        int64_t w0, w1;
        double count;
        if (adaptive) {
          adaptive_window(ow, g.w, g.wo, &w0, &w1);
          count = (double)((h1 - h0) * (w1 - w0));
        } else {
          plain_window(ow, g.sw, g.pw, g.kw, g.w, &w0, &w1);
          count = (double)g.kh * (double)g.kw;
        }
        if (iw < w0 || iw >= w1) continue;
        acc = as_dtype(gin, acc + as_dtype(gin, data_get(gout, (pl * g.ho + oh) * g.wo + ow) / count));
      }
    }
    data_set(gin, e, acc);
  }
  return 0;
}

static int fake_max_forward(lark_tensor *out, lark_tensor *idx, const lark_tensor *x, const lark_pool2d_args *a) {
  calls_pool++;
  pgeom g = pool_geom_of(x, out, a, false);
  for (int64_t e = 0, n = lark_numel(out); e < n; e++) {
    int64_t ow = e % g.wo, oh = e / g.wo % g.ho, pl = e / g.wo / g.ho, h0, h1, w0, w1;
    plain_window(oh, g.sh, g.ph, g.kh, g.h, &h0, &h1);
    plain_window(ow, g.sw, g.pw, g.kw, g.w, &w0, &w1);
    double best = -INFINITY;
    int64_t at = h0 * g.w + w0;
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t iw = w0; iw < w1; iw++) {
        double v = data_get(x, (pl * g.h + ih) * g.w + iw);
        if ((v > best || isnan(v)) && !isnan(best)) best = v, at = ih * g.w + iw;
      }
    data_set(out, e, best);
    ((int64_t *)lark_data_ptr(idx))[e] = at;
  }
  return 0;
}

/* cuda/pool.cu's max_backward_kernel */
static int fake_max_backward(lark_tensor *gin, const lark_tensor *gout, const lark_tensor *idx,
                             const lark_pool2d_args *a) {
  calls_pool++;
  pgeom g = pool_geom_of(gin, gout, a, false);
  const int64_t *ix = lark_data_ptr(idx);
  for (int64_t e = 0, n = lark_numel(gin); e < n; e++) {
    int64_t iw = e % g.w, ih = e / g.w % g.h, pl = e / g.w / g.h, oh0, oh1, ow0, ow1;
    plain_range(ih, g.sh, g.ph, g.kh, g.ho, &oh0, &oh1);
    plain_range(iw, g.sw, g.pw, g.kw, g.wo, &ow0, &ow1);
    double acc = 0;
    for (int64_t oh = oh0; oh <= oh1; oh++)
      for (int64_t ow = ow0; ow <= ow1; ow++) {
        int64_t o = (pl * g.ho + oh) * g.wo + ow;
        if (ix[o] == ih * g.w + iw) acc = as_dtype(gin, acc + data_get(gout, o));
      }
    data_set(gin, e, acc);
  }
  return 0;
}

/* the depth-wise fields: the CPU's reference loops over the same host memory */
static lark_tensor *host_view(const lark_tensor *t) {
  return t ? lark_from_blob(lark_data_ptr(t), t->ndim, t->shape, t->dtype) : NULL;
}
static int put_result(lark_tensor *dst, lark_tensor *r) {
  if (!r) return lark_error_code();
  memcpy(lark_data_ptr(dst), lark_data_ptr(r), (size_t)lark_numel(r) * lark_dtype_size(r->dtype));
  lark_tensor_release(r);
  return 0;
}
static int fake_dw_forward(lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                           const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags) {
  lark_tensor *x = host_view(input), *w = host_view(weight), *b = host_view(bias);
  int rc = put_result(out, lark_dwconv2d_forward_reference(x, w, b, p));
  lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(b);
  return rc;
}
static int fake_dw_backward_input(lark_tensor *grad_in, const lark_tensor *grad_out, const lark_tensor *weight,
                                  const lark_conv2d_params *p, unsigned flags) {
  lark_tensor *g = host_view(grad_out), *w = host_view(weight);
  int rc = put_result(grad_in, lark_dwconv2d_backward_input_reference(g, w, grad_in->shape, p));
  lark_tensor_release(g), lark_tensor_release(w);
  return rc;
}
static int fake_dw_backward_weight(lark_tensor *grad_w, const lark_tensor *grad_out, const lark_tensor *input,
                                   const lark_conv2d_params *p, unsigned flags) {
  lark_tensor *g = host_view(grad_out), *x = host_view(input);
  int rc = put_result(grad_w, lark_dwconv2d_backward_weight_reference(g, x, p));
  lark_tensor_release(g), lark_tensor_release(x);
  return rc;
}

static void install(void) {
  fake = lark_cpu_backend; /* host memory, and the CPU's copy, fill, elementwise and gemm kernels */
  fake.name = "fake cuda";
  fake.im2col = fake_im2col;
  fake.col2im = fake_col2im;
  fake.avg_pool_forward = fake_avg_forward;
  fake.avg_pool_backward = fake_avg_backward;
  fake.max_pool_forward = fake_max_forward;
  fake.max_pool_backward = fake_max_backward;
  fake.dwconv_forward = fake_dw_forward;
  fake.dwconv_backward_input = fake_dw_backward_input;
  fake.dwconv_backward_weight = fake_dw_backward_weight;
  lark_backend_register(LARK_CUDA, &fake);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static lark_tensor *to_dev(const lark_tensor *t) { return t ? lark_to(t, t->dtype, &DEV) : NULL; }

static lark_tensor *uniform(int nd, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  fill_uniform(t, -1, 1);
  return t;
}

/* ---- conv2d --------------------------------------------------------------------------------- */

typedef struct {
  const char *label;
  int64_t N, Cin, H, W, Cout, kh, kw;
  lark_conv2d_args a;
  bool bias;
} conv_case;

#define ARGS(sh, sw, pt, pb, pl, pr, dh, dw, g) {sh, sw, pt, pb, pl, pr, dh, dw, g}
static const conv_case conv_cases[] = {
    {"3x3, groups 1", 2, 3, 9, 8, 4, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 1, 1, 1), true},
    {"groups 2, stride 2", 3, 4, 9, 8, 6, 3, 2, ARGS(2, 2, 1, 1, 1, 1, 1, 1, 2), true},
    {"groups 3, multiplier 2 (not depth-wise)", 3, 3, 7, 7, 6, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 1, 1, 3), true},
    {"depth-wise (groups = C)", 2, 5, 7, 7, 5, 5, 3, ARGS(1, 1, 2, 2, 1, 1, 1, 1, 5), true},
    {"1x1, groups 2 (no im2col)", 3, 6, 5, 5, 4, 1, 1, ARGS(1, 1, 0, 0, 0, 0, 1, 1, 2), true},
    {"1x1 over a 33x32 map (in place)", 3, 3, 33, 32, 4, 1, 1, ARGS(1, 1, 0, 0, 0, 0, 1, 1, 1), false},
    {"1x1, stride 2", 2, 4, 8, 8, 3, 1, 1, ARGS(2, 2, 0, 0, 0, 0, 1, 1, 1), true},
    {"7x7, stride 2, padding 3", 2, 3, 16, 15, 4, 7, 7, ARGS(2, 2, 3, 3, 3, 3, 1, 1, 1), true},
    {"dilation 2, groups 2", 3, 4, 10, 9, 4, 3, 3, ARGS(1, 1, 2, 2, 2, 2, 2, 2, 2), false},
    {"asymmetric padding, stride (1, 2)", 3, 2, 6, 7, 3, 2, 4, ARGS(1, 2, 1, 0, 2, 1, 1, 1, 1), true},
    {"batch 1, dilation (2, 1)", 1, 4, 8, 9, 4, 3, 3, ARGS(1, 1, 2, 2, 1, 1, 2, 1, 2), true},
    {"kernel = padded map", 2, 2, 3, 3, 3, 5, 5, ARGS(1, 1, 1, 1, 1, 1, 1, 1, 1), true},
    {"1x1, groups = C, multiplier 2 (K = 1)", 2, 3, 5, 5, 6, 1, 1, ARGS(1, 1, 0, 0, 0, 0, 1, 1, 3), true},
    {"1x1, stride 2, groups = C, multiplier 2", 3, 3, 5, 6, 6, 1, 1, ARGS(2, 2, 0, 0, 0, 0, 1, 1, 3), false},
    {"one output channel per group", 2, 4, 6, 6, 2, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 1, 1, 2), true},
    {"no output channels", 2, 2, 5, 5, 0, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 1, 1, 1), false},
    {"empty batch", 0, 3, 5, 5, 2, 3, 3, ARGS(1, 1, 0, 0, 0, 0, 1, 1, 1), true},
};

static void conv_case_run(const conv_case *c, lark_dtype dt, const char *chunking) {
  char what[256];
  int64_t xs[4] = {c->N, c->Cin, c->H, c->W}, ws[4] = {c->Cout, c->Cin / c->a.groups, c->kh, c->kw}, bs[1] = {c->Cout};
  lark_tensor *x = uniform(4, xs, dt), *w = uniform(4, ws, dt), *b = c->bias ? uniform(1, bs, dt) : NULL;
  lark_tensor *xd = to_dev(x), *wd = to_dev(w), *bd = to_dev(b);
  double tol = dt == LARK_FLOAT64 ? 1e-12 : 2e-5;
  lark_tensor *y = lark_conv2d(x, w, b, &c->a), *yd = lark_conv2d(xd, wd, bd, &c->a);
  snprintf(what, sizeof what, "%s %s (%s): forward", c->label, lark_dtype_name(dt), chunking);
  expect_on_device(what, yd, y, tol);
  if (y) {
    lark_tensor *gy = uniform(4, y->shape, dt), *gyd = to_dev(gy);
    lark_tensor *gx = lark_conv2d_backward_input(gy, w, xs, &c->a), *gxd = lark_conv2d_backward_input(gyd, wd, xs, &c->a);
    snprintf(what, sizeof what, "%s %s (%s): input gradient", c->label, lark_dtype_name(dt), chunking);
    expect_on_device(what, gxd, gx, tol);
    lark_tensor *gw = lark_conv2d_backward_weight(gy, x, ws, &c->a), *gwd = lark_conv2d_backward_weight(gyd, xd, ws, &c->a);
    snprintf(what, sizeof what, "%s %s (%s): weight gradient", c->label, lark_dtype_name(dt), chunking);
    expect_on_device(what, gwd, gw, tol);
    /* through autograd: lark_conv2d's node sends device gradients to the same functions */
    xd->requires_grad = wd->requires_grad = true;
    lark_tensor *yg = lark_conv2d(xd, wd, bd, &c->a), *grads[2] = {NULL, NULL};
    lark_tensor *ins[2] = {xd, wd};
    CHECK(yg && lark_backward(yg, gyd, false, 2, ins, grads) == 0, "%s: backward", c->label);
    snprintf(what, sizeof what, "%s %s (%s): autograd input gradient", c->label, lark_dtype_name(dt), chunking);
    expect_on_device(what, grads[0], gx, tol);
    snprintf(what, sizeof what, "%s %s (%s): autograd weight gradient", c->label, lark_dtype_name(dt), chunking);
    expect_on_device(what, grads[1], gw, tol);
    lark_tensor_release(yg), lark_tensor_release(grads[0]), lark_tensor_release(grads[1]);
    lark_tensor_release(gy), lark_tensor_release(gyd), lark_tensor_release(gx), lark_tensor_release(gxd);
    lark_tensor_release(gw), lark_tensor_release(gwd);
  }
  lark_tensor_release(y), lark_tensor_release(yd);
  lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(b);
  lark_tensor_release(xd), lark_tensor_release(wd), lark_tensor_release(bd);
}

static void test_conv(void) {
  static const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64};
  /* the whole batch in one chunk; one sample per chunk; about two samples per chunk of the 7x7
   * case's forward in float64 (more for the smaller cases, and partial last chunks) */
  static const int64_t budgets[] = {(int64_t)256 << 20, 1, 2 * 147 * 64 * 8};
  static const char *const names[] = {"one chunk", "one sample per chunk", "small chunks"};
  int64_t saved = lark_conv2d_chunk_bytes;
  for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
    lark_conv2d_chunk_bytes = budgets[bi];
    for (size_t di = 0; di < 2; di++)
      for (size_t ci = 0; ci < sizeof conv_cases / sizeof conv_cases[0]; ci++) conv_case_run(&conv_cases[ci], dts[di], names[bi]);
  }
  lark_conv2d_chunk_bytes = saved;
  CHECK(calls_im2col > 0 && calls_col2im > 0, "im2col ran %d times, col2im %d times", calls_im2col, calls_col2im);

  /* mixed dtypes promote on the device as on the CPU; a transposed (non-contiguous) input */
  int64_t xs[4] = {2, 3, 6, 5}, ws[4] = {4, 3, 3, 3};
  lark_tensor *x = uniform(4, xs, LARK_FLOAT32), *w = uniform(4, ws, LARK_FLOAT64);
  lark_tensor *xd = to_dev(x), *wd = to_dev(w);
  lark_conv2d_args a = ARGS(1, 1, 1, 1, 1, 1, 1, 1, 1);
  lark_tensor *y = lark_conv2d(x, w, NULL, &a), *yd = lark_conv2d(xd, wd, NULL, &a);
  expect_on_device("float32 input, float64 weight", yd, y, 1e-12);
  lark_tensor_release(y), lark_tensor_release(yd);
  lark_tensor *xt = lark_transpose(x, 2, 3), *xtd = lark_transpose(xd, 2, 3);
  y = lark_conv2d(xt, w, NULL, &a), yd = lark_conv2d(xtd, wd, NULL, &a);
  expect_on_device("transposed input", yd, y, 1e-12);
  lark_tensor_release(y), lark_tensor_release(yd), lark_tensor_release(xt), lark_tensor_release(xtd);

  /* errors: mixed devices, reference loops, a backend without the fields */
  CHECK(!lark_conv2d(xd, w, NULL, &a) && error_has("conv2d: input is on cuda:0 but weight is on cpu"), "mixed devices");
  CHECK(!lark_conv2d_reference(xd, wd, NULL, &a) &&
            error_has("conv2d: the reference loops run on CPU tensors only, not on cuda:0"),
        "reference on the device");
  fake.im2col = NULL;
  CHECK(!lark_conv2d(xd, wd, NULL, &a) && error_has("conv2d: not implemented for cuda:0"), "conv2d without im2col");
  fake.im2col = fake_im2col;
  fake.col2im = NULL;
  int64_t ys[4] = {2, 4, 6, 5};
  lark_tensor *gyd = lark_zeros(4, ys, LARK_FLOAT64, &DEV);
  CHECK(!lark_conv2d_backward_input(gyd, wd, xs, &a) && error_has("conv2d backward: not implemented for cuda:0"),
        "backward without col2im");
  fake.col2im = fake_col2im;
  lark_tensor_release(gyd);
  lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(xd), lark_tensor_release(wd);
}

/* ---- pooling -------------------------------------------------------------------------------- */

typedef struct {
  int kind; /* 0 avg, 1 max, 2 adaptive */
  int nd;
  int64_t shape[4];
  lark_pool2d_args a;
  int64_t oh, ow; /* adaptive */
} pool_case;

static const pool_case pool_cases[] = {
    {0, 4, {2, 3, 9, 8}, {3, 3, 2, 2, 1, 1}, 0, 0},
    {0, 3, {3, 7, 6}, {2, 3, 1, 2, 1, 1}, 0, 0},
    {0, 4, {1, 2, 5, 5}, {5, 5, 1, 1, 2, 2}, 0, 0},
    {0, 4, {2, 2, 6, 6}, {2, 2, 2, 2, 0, 0}, 0, 0},
    {1, 4, {2, 3, 9, 8}, {3, 3, 2, 2, 1, 1}, 0, 0},
    {1, 3, {3, 7, 6}, {2, 3, 1, 2, 1, 1}, 0, 0},
    {1, 4, {2, 2, 6, 7}, {3, 2, 3, 1, 0, 1}, 0, 0},
    {1, 4, {1, 1, 4, 4}, {4, 4, 1, 1, 2, 2}, 0, 0},
    {2, 4, {2, 3, 7, 9}, {0, 0, 0, 0, 0, 0}, 3, 4},
    {2, 3, {2, 5, 5}, {0, 0, 0, 0, 0, 0}, 7, 3},
    {2, 4, {2, 2, 6, 6}, {0, 0, 0, 0, 0, 0}, 1, 1},
    {2, 4, {0, 2, 6, 6}, {0, 0, 0, 0, 0, 0}, 2, 2},
};

static lark_tensor *pool_run(const pool_case *c, const lark_tensor *x, lark_tensor **idx) {
  if (c->kind == 0) return lark_avg_pool2d(x, &c->a);
  if (c->kind == 1) return lark_max_pool2d(x, &c->a, idx);
  return lark_adaptive_avg_pool2d(x, c->oh, c->ow);
}

static void test_pool(void) {
  static const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64};
  static const char *const kinds[] = {"avg_pool2d", "max_pool2d", "adaptive_avg_pool2d"};
  char what[256];
  for (size_t di = 0; di < 2; di++)
    for (size_t ci = 0; ci < sizeof pool_cases / sizeof pool_cases[0]; ci++) {
      const pool_case *c = &pool_cases[ci];
      lark_dtype dt = dts[di];
      lark_tensor *x = lark_empty(c->nd, c->shape, dt, NULL);
      /* small integers: many ties for the maximum; a NaN and an infinity somewhere */
      for (int64_t i = 0, n = lark_numel(x); i < n; i++) data_set(x, i, (double)(rand_int(5) - 2));
      if (lark_numel(x) > 7) data_set(x, 5, NAN), data_set(x, 7, -INFINITY);
      lark_tensor *xd = to_dev(x), *idx = NULL, *idxd = NULL;
      x->requires_grad = xd->requires_grad = true;
      lark_tensor *y = pool_run(c, x, &idx), *yd = pool_run(c, xd, &idxd);
      snprintf(what, sizeof what, "%s case %zu %s: forward", kinds[c->kind], ci, lark_dtype_name(dt));
      expect_on_device(what, yd, y, 0);
      if (c->kind == 1) {
        snprintf(what, sizeof what, "%s case %zu %s: indices", kinds[c->kind], ci, lark_dtype_name(dt));
        expect_on_device(what, idxd, idx, 0);
      }
      if (y && yd) {
        lark_tensor *gy = lark_empty(y->ndim, y->shape, dt, NULL);
        for (int64_t i = 0, n = lark_numel(gy); i < n; i++) data_set(gy, i, rand_unit() * 4 - 2);
        lark_tensor *gyd = to_dev(gy), *gx = NULL, *gxd = NULL;
        CHECK(lark_backward(y, gy, false, 1, &x, &gx) == 0 && lark_backward(yd, gyd, false, 1, &xd, &gxd) == 0,
              "%s case %zu: backward", kinds[c->kind], ci);
        snprintf(what, sizeof what, "%s case %zu %s: gradient", kinds[c->kind], ci, lark_dtype_name(dt));
        if (lark_numel(x) > 0) expect_on_device(what, gxd, gx, 0);
        lark_tensor_release(gy), lark_tensor_release(gyd), lark_tensor_release(gx), lark_tensor_release(gxd);
      }
      lark_tensor_release(y), lark_tensor_release(yd), lark_tensor_release(idx), lark_tensor_release(idxd);
      lark_tensor_release(x), lark_tensor_release(xd);
    }
  CHECK(calls_pool > 0, "the pooling fields never ran");

  /* a backend without the fields */
  int64_t xs[4] = {1, 1, 4, 4};
  lark_tensor *xd = lark_zeros(4, xs, LARK_FLOAT32, &DEV);
  lark_pool2d_args a = {2, 2, 2, 2, 0, 0};
  fake.max_pool_forward = NULL;
  CHECK(!lark_max_pool2d(xd, &a, NULL) && error_has("max_pool2d: not implemented for cuda:0"), "max without the field");
  fake.max_pool_forward = fake_max_forward;
  fake.avg_pool_forward = NULL;
  CHECK(!lark_adaptive_avg_pool2d(xd, 2, 2) && error_has("adaptive_avg_pool2d: not implemented for cuda:0"),
        "adaptive without the field");
  fake.avg_pool_forward = fake_avg_forward;
  fake.avg_pool_backward = NULL;
  xd->requires_grad = true;
  lark_tensor *y = lark_avg_pool2d(xd, &a), *gx = NULL;
  lark_tensor *gy = y ? lark_ones(y->ndim, y->shape, LARK_FLOAT32, &DEV) : NULL;
  CHECK(y && gy && lark_backward(y, gy, false, 1, &xd, &gx) != 0 && error_has("avg_pool2d: not implemented for cuda:0"),
        "avg backward without the field");
  fake.avg_pool_backward = fake_avg_backward;
  lark_tensor_release(gx), lark_tensor_release(gy), lark_tensor_release(y), lark_tensor_release(xd);
}

int main(void) {
  if (lark_cuda_is_available()) {
    printf("skipped: a CUDA device is present (spec/conv_gpu_spec.lua tests the real backend)\n");
    return 0;
  }
  install();
  rand_seed(77);
  int64_t cpu0 = lark_bytes_allocated(LARK_CPU);
  test_conv();
  test_pool();
  CHECK_NO_LEAK(cpu0);
  CHECK(lark_bytes_allocated(LARK_CUDA) == 0, "%lld device bytes still allocated", (long long)lark_bytes_allocated(LARK_CUDA));
  return check_report("test_conv_dispatch");
}
