/* test_sparse_dispatch.c: the device half of dwconv_sparse.c (the masked depth-wise convolution),
 * run without a GPU.
 *
 * On a device the masked functions compose ops that run there: weight * mask, the dense front
 * functions of dwconv.c (which hand device tensors to the backend's dwconv fields) and the dense
 * weight gradient times the mask. Here a stand-in backend, registered for the CUDA device kind,
 * keeps its memory on the host and takes the CPU backend's copy, fill and elementwise kernels; its
 * dwconv fields run the CPU's reference loops (honouring LARK_DWCONV_ACCUMULATE, which the sums of
 * kernels use) and its reduce field sums (the bias gradient). Every result is compared with the masked functions on the CPU, under both CPU
 * paths (the tap-skipping kernels and the dense ones on weight * mask): forward, input and weight
 * gradients, single kernels and sums (SLaK's triple, NULL masks, strides, dilation, an empty
 * batch), float32 and float64, and the autograd op with both kinds of weight gradient. Then the
 * errors: the CPU's messages for bad arguments, one device for every operand (mask included) with
 * both devices named, and "not implemented for cuda:0" naming the masked op.
 *
 * With a CUDA device present the real backend is the one to test (spec/dwconv_sparse_spec.lua
 * does): registering a stand-in would replace it in this process, so the test then says so and
 * passes. */
#include "check.h"

#include "autograd.h"
#include "backend.h"
#include "../../core/ops/dwconv.h"

static const lark_device DEV = {LARK_CUDA, 0};
static lark_backend fake;
static int calls_dw;

/* ---- the stand-in's dwconv fields: the CPU reference on the same host memory ------------------ */

static lark_tensor *host_view(const lark_tensor *t) {
  return t ? lark_from_blob(lark_data_ptr(t), t->ndim, t->shape, t->dtype) : NULL;
}

/* dst = r, or dst += r with LARK_DWCONV_ACCUMULATE; takes r. */
static int put_result(lark_tensor *dst, lark_tensor *r, unsigned flags) {
  if (!r) return lark_error_code();
  int64_t n = lark_numel(r);
  if (flags & LARK_DWCONV_ACCUMULATE)
    for (int64_t i = 0; i < n; i++) data_set(dst, i, data_get(dst, i) + data_get(r, i));
  else
    memcpy(lark_data_ptr(dst), lark_data_ptr(r), (size_t)n * lark_dtype_size(r->dtype));
  lark_tensor_release(r);
  return 0;
}

static int fake_dw_forward(lark_tensor *out, const lark_tensor *input, const lark_tensor *weight,
                           const lark_tensor *bias, const lark_conv2d_params *p, unsigned flags) {
  calls_dw++;
  lark_tensor *x = host_view(input), *w = host_view(weight), *b = host_view(bias);
  int rc = put_result(out, lark_dwconv2d_forward_reference(x, w, b, p), flags);
  lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(b);
  return rc;
}
static int fake_dw_backward_input(lark_tensor *grad_in, const lark_tensor *grad_out, const lark_tensor *weight,
                                  const lark_conv2d_params *p, unsigned flags) {
  calls_dw++;
  lark_tensor *g = host_view(grad_out), *w = host_view(weight);
  int rc = put_result(grad_in, lark_dwconv2d_backward_input_reference(g, w, grad_in->shape, p), flags);
  lark_tensor_release(g), lark_tensor_release(w);
  return rc;
}
static int fake_dw_backward_weight(lark_tensor *grad_w, const lark_tensor *grad_out, const lark_tensor *input,
                                   const lark_conv2d_params *p, unsigned flags) {
  calls_dw++;
  lark_tensor *g = host_view(grad_out), *x = host_view(input);
  int rc = put_result(grad_w, lark_dwconv2d_backward_weight_reference(g, x, p), flags);
  lark_tensor_release(g), lark_tensor_release(x);
  return rc;
}

/* (the bias gradient is a sum over (N, H, W): check.h's stand_in_reduce) */
static void install(void) {
  fake = lark_cpu_backend; /* host memory, and the CPU's copy, fill and elementwise kernels */
  fake.name = "fake cuda";
  fake.dwconv_forward = fake_dw_forward;
  fake.dwconv_backward_input = fake_dw_backward_input;
  fake.dwconv_backward_weight = fake_dw_backward_weight;
  fake.reduce = stand_in_reduce;
  lark_backend_register(LARK_CUDA, &fake);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static lark_tensor *to_dev(const lark_tensor *t) { return t ? lark_to(t, t->dtype, &DEV) : NULL; }

static lark_tensor *uniform(int nd, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  fill_uniform(t, -1, 1);
  return t;
}

/* A (C, 1, kh, kw) bool mask, each tap live with probability d. */
static lark_tensor *random_mask(int64_t c, const lark_conv2d_params *p, double d) {
  lark_tensor *m = lark_empty(4, (int64_t[]){c, 1, p->kh, p->kw}, LARK_BOOL, NULL);
  for (int64_t i = 0, n = lark_numel(m); i < n; i++) data_set(m, i, rand_unit() < d);
  return m;
}

static void release_n(int n, lark_tensor **ts) {
  for (int i = 0; i < n; i++) lark_tensor_release(ts[i]);
}

/* ---- parity with the CPU --------------------------------------------------------------------- */

#define P(kh, kw, sh, sw, pt, pb, pl, pr, dh, dw) {kh, kw, sh, sw, pt, pb, pl, pr, dh, dw}
typedef struct {
  const char *label;
  int64_t n, c, h, w;
  int nk;                      /* 1: the single-kernel functions; more: the sums */
  lark_conv2d_params p[3];
  bool dense[3];               /* a NULL mask for that kernel (sums only) */
  bool bias;
} sparse_case;

static const sparse_case cases[] = {
    {"7x7, stride 1", 2, 3, 12, 11, 1, {P(7, 7, 1, 1, 3, 3, 3, 3, 1, 1)}, {false}, true},
    {"5x3, stride 2, uneven padding", 2, 4, 11, 9, 1, {P(5, 3, 2, 2, 2, 1, 1, 0, 1, 1)}, {false}, true},
    {"3x3, dilation 2", 1, 2, 9, 10, 1, {P(3, 3, 1, 1, 2, 2, 2, 2, 2, 2)}, {false}, false},
    {"3x3, empty batch", 0, 2, 5, 5, 1, {P(3, 3, 1, 1, 1, 1, 1, 1, 1, 1)}, {false}, true},
    {"SLaK triple 13x13 + 13x3 + 3x3 (dense 3x3)", 2, 4, 14, 13, 3,
     {P(13, 13, 1, 1, 6, 6, 6, 6, 1, 1), P(13, 3, 1, 1, 6, 6, 1, 1, 1, 1), P(3, 3, 1, 1, 1, 1, 1, 1, 1, 1)},
     {false, false, true}, true},
    {"5x5 + 3x3, stride 2", 2, 3, 10, 9, 2, {P(5, 5, 2, 2, 2, 2, 2, 2, 1, 1), P(3, 3, 2, 2, 1, 1, 1, 1, 1, 1)},
     {false, false}, false},
};

static void test_parity(void) {
  static const char *paths[] = {"sparse", "dense"};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const sparse_case *k = &cases[ci];
    for (int dti = 0; dti < 2; dti++) {
      lark_dtype dt = dti ? LARK_FLOAT64 : LARK_FLOAT32;
      double tol = dti ? 1e-12 : 2e-5;
      int nk = k->nk;
      lark_tensor *x = uniform(4, (int64_t[]){k->n, k->c, k->h, k->w}, dt);
      lark_tensor *b = k->bias ? uniform(1, &k->c, dt) : NULL;
      lark_tensor *w[3] = {0}, *m[3] = {0}, *wd[3] = {0}, *md[3] = {0};
      for (int j = 0; j < nk; j++) {
        w[j] = uniform(4, (int64_t[]){k->c, 1, k->p[j].kh, k->p[j].kw}, dt);
        m[j] = k->dense[j] ? NULL : random_mask(k->c, &k->p[j], 0.4);
        wd[j] = to_dev(w[j]), md[j] = to_dev(m[j]);
      }
      lark_tensor *xd = to_dev(x), *bd = to_dev(b);
      const lark_tensor *const *cw = (const lark_tensor *const *)w, *const *cm = (const lark_tensor *const *)m;
      const lark_tensor *const *cwd = (const lark_tensor *const *)wd, *const *cmd = (const lark_tensor *const *)md;
      /* the device's results, once; then the CPU's under each of its paths */
      lark_tensor *yd = nk == 1 ? lark_dwconv2d_masked_forward(xd, wd[0], md[0], bd, &k->p[0])
                                : lark_dwconv2d_masked_sum_forward(xd, nk, cwd, cmd, bd, k->p);
      lark_tensor *gy = yd ? uniform(4, yd->shape, dt) : NULL, *gyd = to_dev(gy);
      lark_tensor *gxd = NULL, *gwd[3] = {0};
      if (gyd) {
        gxd = nk == 1 ? lark_dwconv2d_masked_backward_input(gyd, wd[0], md[0], x->shape, &k->p[0])
                      : lark_dwconv2d_masked_sum_backward_input(gyd, nk, cwd, cmd, x->shape, k->p);
        if (nk == 1) gwd[0] = lark_dwconv2d_masked_backward_weight(gyd, xd, md[0], &k->p[0]);
        else CHECK(lark_dwconv2d_masked_sum_backward_weight(gyd, xd, nk, cmd, k->p, gwd) == 0, "%s: sum weight grads", k->label);
      }
      CHECK(yd && gxd && gwd[0], "%s %s: device results", k->label, lark_dtype_name(dt));
      for (int pi = 0; pi < 2; pi++) {
        char what[160];
        CHECK(lark_dwconv2d_set_sparse_path(paths[pi]) == 0, "sparse path %s", paths[pi]);
        lark_tensor *y = nk == 1 ? lark_dwconv2d_masked_forward(x, w[0], m[0], b, &k->p[0])
                                 : lark_dwconv2d_masked_sum_forward(x, nk, cw, cm, b, k->p);
        lark_tensor *gx = nk == 1 ? lark_dwconv2d_masked_backward_input(gy, w[0], m[0], x->shape, &k->p[0])
                                  : lark_dwconv2d_masked_sum_backward_input(gy, nk, cw, cm, x->shape, k->p);
        lark_tensor *gw[3] = {0};
        if (nk == 1) gw[0] = lark_dwconv2d_masked_backward_weight(gy, x, m[0], &k->p[0]);
        else CHECK(lark_dwconv2d_masked_sum_backward_weight(gy, x, nk, cm, k->p, gw) == 0, "%s: CPU weight grads", k->label);
        snprintf(what, sizeof what, "%s %s (CPU %s): forward", k->label, lark_dtype_name(dt), paths[pi]);
        expect_on_device(what, yd, y, tol);
        snprintf(what, sizeof what, "%s %s (CPU %s): input gradient", k->label, lark_dtype_name(dt), paths[pi]);
        expect_on_device(what, gxd, gx, tol);
        for (int j = 0; j < nk; j++) {
          snprintf(what, sizeof what, "%s %s (CPU %s): weight gradient %d", k->label, lark_dtype_name(dt), paths[pi],
                   j + 1);
          expect_on_device(what, gwd[j], gw[j], tol);
        }
        lark_tensor_release(y), lark_tensor_release(gx);
        release_n(nk, gw);
      }
      CHECK(lark_dwconv2d_set_sparse_path("auto") == 0, "sparse path auto");
      lark_tensor_release(x), lark_tensor_release(xd), lark_tensor_release(b), lark_tensor_release(bd);
      lark_tensor_release(yd), lark_tensor_release(gy), lark_tensor_release(gyd), lark_tensor_release(gxd);
      release_n(nk, w), release_n(nk, m), release_n(nk, wd), release_n(nk, md), release_n(nk, gwd);
    }
  }
  CHECK(calls_dw > 0, "the stand-in's dwconv fields never ran");
}

/* The autograd op: output and the gradients of input, weight and bias, with the weight gradient
 * masked and dense (dense_grad), against the CPU. */
static void test_autograd(void) {
  lark_conv2d_params p = {9, 7, 1, 1, 4, 4, 3, 3, 1, 1};
  for (int dti = 0; dti < 2; dti++)
    for (int dense = 0; dense < 2; dense++) {
      lark_dtype dt = dti ? LARK_FLOAT64 : LARK_FLOAT32;
      double tol = dti ? 1e-12 : 2e-5;
      lark_tensor *in[2][3], *out[2], *grads[2][3] = {{0}};
      lark_tensor *x = uniform(4, (int64_t[]){2, 3, 10, 9}, dt), *w = uniform(4, (int64_t[]){3, 1, 9, 7}, dt);
      lark_tensor *b = uniform(1, (int64_t[]){3}, dt), *m = random_mask(3, &p, 0.3), *md = to_dev(m);
      lark_tensor *gy = NULL;
      for (int side = 0; side < 2; side++) { /* 0 CPU, 1 device */
        in[side][0] = side ? to_dev(x) : lark_tensor_retain(x);
        in[side][1] = side ? to_dev(w) : lark_tensor_retain(w);
        in[side][2] = side ? to_dev(b) : lark_tensor_retain(b);
        for (int i = 0; i < 3; i++) in[side][i]->requires_grad = true;
        out[side] = lark_dwconv2d_masked(in[side][0], in[side][1], side ? md : m, in[side][2], &p, dense);
        CHECK(out[side] != NULL, "autograd forward on %s", side ? "the device" : "the CPU");
        if (!out[side]) continue;
        if (!gy) gy = uniform(4, out[side]->shape, dt);
        lark_tensor *g = side ? to_dev(gy) : lark_tensor_retain(gy);
        CHECK(lark_backward(out[side], g, false, 3, in[side], grads[side]) == 0, "backward on %s",
              side ? "the device" : "the CPU");
        lark_tensor_release(g);
      }
      static const char *names[] = {"input", "weight", "bias"};
      char what[128];
      snprintf(what, sizeof what, "dwconv2d_masked %s dense_grad=%d: output", lark_dtype_name(dt), dense);
      expect_on_device(what, out[1], out[0], tol);
      for (int i = 0; i < 3; i++) {
        snprintf(what, sizeof what, "dwconv2d_masked %s dense_grad=%d: %s gradient", lark_dtype_name(dt), dense, names[i]);
        expect_on_device(what, grads[1][i], grads[0][i], tol);
      }
      /* the masked weight gradient is zero at every masked-out tap; the dense one is not */
      if (grads[0][1]) {
        int64_t off_nonzero = 0;
        for (int64_t i = 0, n = lark_numel(m); i < n; i++)
          if (!data_get(m, i) && get_flat(grads[0][1], i) != 0) off_nonzero++;
        CHECK(dense ? off_nonzero > 0 : off_nonzero == 0, "dense_grad=%d: %lld masked-out taps with a gradient", dense,
              (long long)off_nonzero);
      }
      for (int s = 0; s < 2; s++) {
        release_n(3, in[s]), release_n(3, grads[s]);
        lark_tensor_release(out[s]);
      }
      lark_tensor_release(x), lark_tensor_release(w), lark_tensor_release(b), lark_tensor_release(m);
      lark_tensor_release(md), lark_tensor_release(gy);
    }
}

/* ---- errors ---------------------------------------------------------------------------------- */

/* Both calls fail, the device one with the message the CPU one gives. */
#define SAME_ERROR(what, cpu_call, dev_call)                                                           \
  do {                                                                                                 \
    char cpu_msg_[512];                                                                                \
    lark_tensor *r1_ = (cpu_call);                                                                     \
    snprintf(cpu_msg_, sizeof cpu_msg_, "%s", lark_error());                                           \
    lark_tensor *r2_ = (dev_call);                                                                     \
    CHECK(!r1_ && !r2_ && !strcmp(cpu_msg_, lark_error()), "%s: device error \"%s\", CPU error \"%s\"", what, \
          lark_error(), cpu_msg_);                                                                     \
    lark_tensor_release(r1_), lark_tensor_release(r2_);                                                \
  } while (0)

static void test_errors(void) {
  lark_conv2d_params p = {3, 3, 1, 1, 1, 1, 1, 1, 1, 1}, p5 = {5, 5, 1, 1, 2, 2, 2, 2, 1, 1};
  int64_t xs[4] = {1, 2, 6, 6};
  lark_tensor *x = uniform(4, xs, LARK_FLOAT32), *w = uniform(4, (int64_t[]){2, 1, 3, 3}, LARK_FLOAT32);
  lark_tensor *m = random_mask(2, &p, 0.5), *b = uniform(1, (int64_t[]){2}, LARK_FLOAT32);
  lark_tensor *xd = to_dev(x), *wd = to_dev(w), *md = to_dev(m), *bd = to_dev(b);
  lark_tensor *mf = lark_cast(m, LARK_FLOAT32), *mfd = to_dev(mf);
  lark_tensor *m5 = random_mask(2, &p5, 0.5), *m5d = to_dev(m5);
  lark_tensor *x64 = lark_cast(x, LARK_FLOAT64), *x64d = to_dev(x64);
  lark_tensor *b3 = uniform(1, (int64_t[]){3}, LARK_FLOAT32), *b3d = to_dev(b3);
  lark_tensor *gy = uniform(4, xs, LARK_FLOAT32), *gyd = to_dev(gy);

  /* bad arguments: the CPU's messages */
  SAME_ERROR("float mask", lark_dwconv2d_masked_forward(x, w, mf, b, &p), lark_dwconv2d_masked_forward(xd, wd, mfd, bd, &p));
  CHECK(error_has("mask must be bool"), "float mask message");
  SAME_ERROR("mask of another kernel size", lark_dwconv2d_masked_forward(x, w, m5, b, &p),
             lark_dwconv2d_masked_forward(xd, wd, m5d, bd, &p));
  CHECK(error_has("mask must have the kernel's shape"), "mask shape message");
  SAME_ERROR("float64 input, float32 weight", lark_dwconv2d_masked_forward(x64, w, m, NULL, &p),
             lark_dwconv2d_masked_forward(x64d, wd, md, NULL, &p));
  SAME_ERROR("bias of 3 for 2 channels", lark_dwconv2d_masked_forward(x, w, m, b3, &p),
             lark_dwconv2d_masked_forward(xd, wd, md, b3d, &p));
  SAME_ERROR("input gradient, mask shape", lark_dwconv2d_masked_backward_input(gy, w, m5, xs, &p),
             lark_dwconv2d_masked_backward_input(gyd, wd, m5d, xs, &p));
  SAME_ERROR("weight gradient, float mask", lark_dwconv2d_masked_backward_weight(gy, x, mf, &p),
             lark_dwconv2d_masked_backward_weight(gyd, xd, mfd, &p));
  SAME_ERROR("weight gradient, dtypes", lark_dwconv2d_masked_backward_weight(gy, x64, m, &p),
             lark_dwconv2d_masked_backward_weight(gyd, x64d, md, &p));
  const lark_tensor *ws[2] = {w, w}, *wsd[2] = {wd, wd}, *ms[2] = {m, m5}, *msd[2] = {md, m5d};
  lark_conv2d_params ps[2] = {p, p};
  SAME_ERROR("sum, mask 2 of another size", lark_dwconv2d_masked_sum_forward(x, 2, ws, ms, NULL, ps),
             lark_dwconv2d_masked_sum_forward(xd, 2, wsd, msd, NULL, ps));
  CHECK(error_has("mask 2"), "sum mask message names mask 2");

  /* every operand on one device, both devices named */
  lark_tensor *r;
  CHECK(!(r = lark_dwconv2d_masked_forward(x, wd, md, NULL, &p)) &&
            error_has("dwconv2d (masked): input is on cpu but weight is on cuda:0"),
        "CPU input, device weight");
  lark_tensor_release(r);
  CHECK(!(r = lark_dwconv2d_masked_forward(xd, wd, m, bd, &p)) &&
            error_has("dwconv2d (masked): input is on cuda:0 but mask is on cpu"),
        "device operands, CPU mask");
  lark_tensor_release(r);
  CHECK(!(r = lark_dwconv2d_masked_forward(x, w, md, b, &p)) &&
            error_has("dwconv2d (masked): input is on cpu but mask is on cuda:0"),
        "CPU operands, device mask");
  lark_tensor_release(r);
  CHECK(!(r = lark_dwconv2d_masked_forward(xd, wd, md, b, &p)) &&
            error_has("dwconv2d (masked): input is on cuda:0 but bias is on cpu"),
        "CPU bias");
  lark_tensor_release(r);
  CHECK(!(r = lark_dwconv2d_masked_backward_input(gyd, w, md, xs, &p)) &&
            error_has("dwconv2d_backward_input (masked): grad_out is on cuda:0 but weight is on cpu"),
        "input gradient, CPU weight");
  lark_tensor_release(r);
  CHECK(!(r = lark_dwconv2d_masked_backward_weight(gyd, x, md, &p)) &&
            error_has("dwconv2d_backward_weight (masked): grad_out is on cuda:0 but input is on cpu"),
        "weight gradient, CPU input");
  lark_tensor_release(r);
  CHECK(!(r = lark_dwconv2d_masked_backward_weight(gyd, xd, m, &p)) &&
            error_has("dwconv2d_backward_weight (masked): grad_out is on cuda:0 but mask is on cpu"),
        "weight gradient, CPU mask");
  lark_tensor_release(r);
  const lark_tensor *msd2[2] = {md, m};
  CHECK(!(r = lark_dwconv2d_masked_sum_forward(xd, 2, wsd, msd2, NULL, ps)) &&
            error_has("dwconv2d_sum (masked): input is on cuda:0 but mask 2 is on cpu"),
        "sum, CPU mask 2");
  lark_tensor_release(r);
  lark_tensor *gws[2] = {0};
  CHECK(lark_dwconv2d_masked_sum_backward_weight(gyd, xd, 2, msd2, ps, gws) != 0 && !gws[0] && !gws[1] &&
            error_has("dwconv2d_sum_backward_weight (masked): grad_out is on cuda:0 but mask 2 is on cpu"),
        "sum weight gradients, CPU mask 2");
  CHECK(!(r = lark_dwconv2d_masked(xd, w, md, NULL, &p, false)) &&
            error_has("dwconv2d (masked): input is on cuda:0 but weight is on cpu"),
        "autograd op, CPU weight");
  lark_tensor_release(r);

  /* a device without the dwconv fields: the masked op's name */
  fake.dwconv_forward = NULL;
  CHECK(!(r = lark_dwconv2d_masked_forward(xd, wd, md, bd, &p)) && error_has("dwconv2d (masked): not implemented for cuda:0"),
        "no dwconv_forward");
  lark_tensor_release(r);
  fake.dwconv_forward = fake_dw_forward;
  fake.dwconv_backward_weight = NULL;
  CHECK(!(r = lark_dwconv2d_masked_backward_weight(gyd, xd, md, &p)) &&
            error_has("dwconv2d_backward_weight (masked): not implemented for cuda:0"),
        "no dwconv_backward_weight");
  lark_tensor_release(r);
  fake.dwconv_backward_weight = fake_dw_backward_weight;

  lark_tensor *all[] = {x, w, m, b, xd, wd, md, bd, mf, mfd, m5, m5d, x64, x64d, b3, b3d, gy, gyd};
  release_n((int)(sizeof all / sizeof all[0]), all);
}

int main(void) {
  if (lark_cuda_is_available()) {
    printf("skipped: a CUDA device is present (spec/dwconv_sparse_spec.lua tests the real backend)\n");
    return 0;
  }
  install();
  rand_seed(5151);
  int64_t cpu0 = lark_bytes_allocated(LARK_CPU);
  test_parity();
  test_autograd();
  test_errors();
  CHECK_NO_LEAK(cpu0);
  CHECK(lark_bytes_allocated(LARK_CUDA) == 0, "%lld device bytes still allocated", (long long)lark_bytes_allocated(LARK_CUDA));
  return check_report("test_sparse_dispatch");
}
