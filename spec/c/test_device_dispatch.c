/* test_device_dispatch.c: the device half of reduce.c, random.c and optim.c, run without a GPU.
 *
 * Those front functions send tensors that are not on the CPU to their backend's reduce,
 * random_fill, bernoulli, sgd_update, adamw_update, lerp and norm_part fields (backend.h), with a
 * geometry, counters and per-tensor constants that the CUDA kernels rely on. A GPU runs those
 * kernels in spec/cuda_ops_spec.lua; here a stand-in backend, registered for the CUDA device kind,
 * keeps its memory on the host (the CPU backend's allocator and copies) and implements each field
 * as the plainest loop that follows its contract in backend.h word for word. Every result is
 * compared with the same op on the CPU, so what is checked is the front functions' side: that the
 * geometry names exactly each output's elements (and r is the flat index for max/min), that the
 * generator's seed and offset reach the backend and advance after it, that errors come back with
 * the CPU's messages, that optimizer state is made on the device, and that a missing field reads
 * "not implemented for cuda:0".
 *
 * With a CUDA device present the real backend is the one to test (the GPU specs do): registering a
 * stand-in would replace it in this process, so the test then says so and passes. */
#include "check.h"

#include "backend.h"

static const lark_device DEV = {LARK_CUDA, 0};

/* ---- the stand-in backend ------------------------------------------------------------------- */

enum { C_REDUCE, C_RANDOM, C_BERNOULLI, C_SGD, C_ADAMW, C_LERP, C_NORM, C_N };
static int calls[C_N];
static lark_backend fake;

static bool is_float(lark_dtype dt) { return dt == LARK_FLOAT32 || dt == LARK_FLOAT64; }

static int fake_reduce(lark_reduce_op op, const lark_tensor *t, const lark_reduce_geom *g, const lark_reduce_args *args,
                       lark_tensor *out, lark_tensor *out_idx) {
  calls[C_REDUCE]++;
  const char *base = lark_data_ptr(t);
  bool fl = is_float(t->dtype);
  double n = (double)g->nred, p = args->p;
  for (int64_t o = 0; o < g->nout; o++) {
    int64_t ko = geom_offset(o, g->nk, g->kshape, g->kstride);
    double mean = 0;
    if (op == LARK_RED_VAR || op == LARK_RED_STD) {
      for (int64_t r = 0; r < g->nred; r++) mean += load_as(t->dtype, base, ko + geom_offset(r, g->nr, g->rshape, g->rstride));
      mean /= n;
    }
    double d = op == LARK_RED_PROD ? 1 : (op == LARK_RED_NORM && p == -INFINITY) ? INFINITY : 0, e = 0;
    int64_t i = op == LARK_RED_PROD || op == LARK_RED_ALL ? 1 : 0, idx = -1;
    for (int64_t r = 0; r < g->nred; r++) {
      double x = load_as(t->dtype, base, ko + geom_offset(r, g->nr, g->rshape, g->rstride));
      switch (op) {
        case LARK_RED_SUM: case LARK_RED_MEAN: d += x, i += (int64_t)x; break;
        case LARK_RED_PROD: d *= x, i = (int64_t)((uint64_t)i * (uint64_t)(int64_t)x); break;
        case LARK_RED_MAX:
          if (idx < 0 || x > d || (x != x && d == d)) d = x, idx = r;
          break;
        case LARK_RED_MIN:
          if (idx < 0 || x < d || (x != x && d == d)) d = x, idx = r;
          break;
        case LARK_RED_ANY: i |= x != 0; break;
        case LARK_RED_ALL: i &= x != 0; break;
        case LARK_RED_VAR: case LARK_RED_STD: d += (x - mean) * (x - mean), e += x - mean; break;
        case LARK_RED_NORM:
          if (p == 0) d += x != 0;
          else if (p == INFINITY) d = (d != d || fabs(x) <= d) ? d : fabs(x);
          else if (p == -INFINITY) d = (d != d || fabs(x) >= d) ? d : fabs(x);
          else d += pow(fabs(x), p);
          break;
        default: return lark_set_error(LARK_ERR_ARG, "fake reduce: op %d", (int)op);
      }
    }
    double v = d;
    if (op == LARK_RED_MEAN) v = d / n;
    if (op == LARK_RED_VAR || op == LARK_RED_STD) {
      double dof = n - (args->unbiased ? 1 : 0);
      v = dof <= 0 ? NAN : (d - e * e / n) / dof;
      if (v < 0) v = 0;
      if (op == LARK_RED_STD) v = sqrt(v);
    }
    if (op == LARK_RED_NORM && isfinite(p) && p != 0 && p != 1) v = pow(d, 1 / p);
    if (!fl && (op == LARK_RED_SUM || op == LARK_RED_PROD)) v = (double)i;
    if (op == LARK_RED_ANY || op == LARK_RED_ALL) v = (double)i;
    if (out) store_as(out->dtype, lark_data_ptr(out), o, v);
    if (out_idx) ((int64_t *)lark_data_ptr(out_idx))[o] = idx < 0 ? 0 : idx;
  }
  return 0;
}

/* random.c's scheme, written out from its header comment */
static void block(uint64_t seed, uint64_t j, uint32_t w[4]) {
  uint32_t ctr[4] = {(uint32_t)j, (uint32_t)(j >> 32), 0, 0}, key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  lark_philox4x32_10(ctr, key, w);
}
static uint64_t bits53(uint32_t a, uint32_t b) { return ((uint64_t)a << 32 | b) >> 11; }

static int fake_random_fill(lark_tensor *t, const lark_dist *ds, uint64_t seed, uint64_t offset) {
  calls[C_RANDOM]++;
  char *base = (char *)lark_data_ptr(t) - t->offset * (int64_t)lark_dtype_size(t->dtype);
  for (int64_t i = 0, n = lark_numel(t); i < n; i++) {
    uint32_t w[4];
    block(seed, offset + (uint64_t)i, w);
    int64_t at = lark_offset_of(t, i);
    double u53 = (double)bits53(w[0], w[1]) * 0x1p-53;
    switch (ds->kind) {
      case LARK_DIST_UNIFORM:
        if (t->dtype == LARK_FLOAT32) {
          float top = nextafterf((float)ds->b, -INFINITY), lo = (float)ds->a;
          top = top < lo ? lo : top;
          float v = (float)fma(ds->b - ds->a, (double)((float)(w[0] >> 8) * 0x1p-24f), ds->a);
          ((float *)base)[at] = v > top ? top : v;
        } else {
          double top = nextafter(ds->b, -INFINITY);
          top = top < ds->a ? ds->a : top;
          double v = fma(ds->b - ds->a, u53, ds->a);
          ((double *)base)[at] = v > top ? top : v;
        }
        break;
      case LARK_DIST_NORMAL: {
        double u1 = (double)(bits53(w[0], w[1]) + 1) * 0x1p-53, u2 = (double)bits53(w[2], w[3]) * 0x1p-53;
        double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        store_as(t->dtype, base, at, fma(ds->b, z, ds->a));
        break;
      }
      case LARK_DIST_RANDINT: {
        unsigned __int128 x = (unsigned __int128)((uint64_t)w[0] << 32 | w[1]) << 64 | ((uint64_t)w[2] << 32 | w[3]);
        uint64_t below = (uint64_t)(((x >> 64) * ds->range + (((x & UINT64_MAX) * ds->range) >> 64)) >> 64);
        int64_t v = (int64_t)((uint64_t)ds->low + below);
        if (t->dtype == LARK_INT64) ((int64_t *)base)[at] = v; /* exact: a double would round it */
        else store_as(t->dtype, base, at, (double)v);
        break;
      }
      case LARK_DIST_BERNOULLI: store_as(t->dtype, base, at, u53 < ds->a); break;
    }
  }
  return 0;
}

static int fake_bernoulli(lark_tensor *out, const lark_tensor *p, uint64_t seed, uint64_t offset, int64_t *bad,
                          double *bad_value) {
  calls[C_BERNOULLI]++;
  *bad = -1;
  const char *pbase = (const char *)lark_data_ptr(p) - p->offset * (int64_t)lark_dtype_size(p->dtype);
  for (int64_t i = 0, n = lark_numel(p); i < n; i++) {
    double pv = load_as(p->dtype, pbase, lark_offset_of(p, i));
    if (!(pv >= 0 && pv <= 1)) {
      *bad = i, *bad_value = pv;
      return 0;
    }
    uint32_t w[4];
    block(seed, offset + (uint64_t)i, w);
    store_as(out->dtype, lark_data_ptr(out), i, (double)bits53(w[0], w[1]) * 0x1p-53 < pv);
  }
  return 0;
}

static double get(const lark_tensor *t, int64_t i) { return load_as(t->dtype, lark_data_ptr(t), i); }
static void set(lark_tensor *t, int64_t i, double v) { store_as(t->dtype, lark_data_ptr(t), i, v); }

/* optim.c's formulas in double (its reference loops), on the contiguous host memory */
static int fake_sgd(lark_tensor *p, const lark_tensor *g, lark_tensor *buf, const lark_sgd_args *a, bool first) {
  calls[C_SGD]++;
  for (int64_t i = 0, n = lark_numel(p); i < n; i++) {
    double pi = get(p, i), d = (a->maximize ? -get(g, i) : get(g, i)) + a->weight_decay * pi;
    if (buf) {
      double b = first ? d : get(buf, i) * a->momentum + (1 - a->dampening) * d;
      set(buf, i, b);
      b = get(buf, i);
      d = a->nesterov ? d + a->momentum * b : b;
    }
    set(p, i, pi - a->lr * d);
  }
  return 0;
}

static int fake_adamw(lark_tensor *p, const lark_tensor *g, lark_tensor *m, lark_tensor *v, lark_tensor *vmax,
                      const lark_adamw_args *a, double decay, double step_size, double bc2_sqrt) {
  calls[C_ADAMW]++;
  for (int64_t i = 0, n = lark_numel(p); i < n; i++) {
    double gi = a->maximize ? -get(g, i) : get(g, i), pi = get(p, i) * decay;
    double mi = get(m, i) * a->beta1 + (1 - a->beta1) * gi, vi = get(v, i) * a->beta2 + (1 - a->beta2) * gi * gi;
    set(m, i, mi);
    set(v, i, vi);
    if (vmax) {
      vi = get(vmax, i) > vi ? get(vmax, i) : vi;
      set(vmax, i, vi);
    }
    set(p, i, pi - step_size * mi / (sqrt(vi) / bc2_sqrt + a->eps));
  }
  return 0;
}

static int fake_lerp(lark_tensor *dst, const lark_tensor *src, double w) {
  calls[C_LERP]++;
  for (int64_t i = 0, n = lark_numel(dst); i < n; i++) {
    double d = get(dst, i), s = get(src, i);
    set(dst, i, w < 0.5 ? d + w * (s - d) : s - (s - d) * (1 - w));
  }
  return 0;
}

static int fake_norm_part(const lark_tensor *t, double p, double *out) {
  calls[C_NORM]++;
  double acc = 0;
  for (int64_t i = 0, n = lark_numel(t); i < n; i++) {
    double x = fabs(get(t, i));
    if (isinf(p)) acc = (acc != acc || x <= acc) ? acc : x;
    else acc += pow(x, p);
  }
  *out = acc;
  return 0;
}

static void install(void) {
  fake = lark_cpu_backend; /* host memory, and the CPU's copy, fill and elementwise kernels */
  fake.name = "fake cuda";
  fake.reduce = fake_reduce;
  fake.random_fill = fake_random_fill;
  fake.bernoulli = fake_bernoulli;
  fake.sgd_update = fake_sgd;
  fake.adamw_update = fake_adamw;
  fake.lerp = fake_lerp;
  fake.norm_part = fake_norm_part;
  lark_backend_register(LARK_CUDA, &fake);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static lark_tensor *to_dev(const lark_tensor *t) { return lark_to(t, t->dtype, &DEV); }

/* A CPU tensor of shape with values of dt that every op handles: floats uniform in [-2, 2), int64
 * in [-5, 5], uint8 in [0, 9], bools; ties are common in the integers. */
static lark_tensor *sample(int nd, const int64_t *shape, lark_dtype dt) {
  lark_tensor *t = lark_empty(nd, shape, dt, NULL);
  for (int64_t i = 0, n = lark_numel(t); i < n; i++)
    data_set(t, i, is_float(dt) ? 4 * rand_unit() - 2 : dt == LARK_INT64 ? (double)(rand_int(11) - 5)
                                                   : dt == LARK_UINT8 ? (double)rand_int(10) : (double)rand_int(2));
  return t;
}

/* The views one input is read through, built the same way on both devices: 0 contiguous, 1 first
 * and last dims swapped, 2 narrowed along dim 0 (an offset), 3 dim 0 expanded from its first entry. */
static lark_tensor *view_of(const lark_tensor *t, int kind) {
  if (kind == 1 && t->ndim >= 2) return lark_transpose(t, 0, t->ndim - 1);
  if (kind == 2 && t->ndim >= 1 && t->shape[0] >= 3) return lark_narrow(t, 0, 1, t->shape[0] - 2);
  if (kind == 3 && t->ndim >= 2 && t->shape[0] >= 1) {
    lark_tensor *first = lark_narrow(t, 0, 0, 1);
    lark_tensor *e = lark_expand(first, t->ndim, t->shape);
    lark_tensor_release(first);
    return e;
  }
  return kind == 0 ? lark_tensor_retain((lark_tensor *)t) : NULL;
}

/* ---- reductions ----------------------------------------------------------------------------- */

static void test_reductions(void) {
  static const int64_t shapes[][5] = {{0}, {1, 0}, {1, 5}, {2, 3, 4}, {3, 2, 0, 3}, {3, 4, 5, 6}, {4, 2, 3, 4, 5}};
  static const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64, LARK_UINT8, LARK_BOOL};
  static const double ps[] = {2, 1, 0, 3, INFINITY, -INFINITY};
  int before = calls[C_REDUCE];
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    int nd = (int)shapes[si][0];
    const int64_t *shape = shapes[si] + 1;
    for (size_t di = 0; di < sizeof dts / sizeof dts[0]; di++) {
      lark_dtype dt = dts[di];
      lark_tensor *c = sample(nd, shape, dt), *g = lark_to(c, dt, &DEV);
      for (int vk = 0; vk < 4; vk++) {
        lark_tensor *cv = view_of(c, vk), *gv = view_of(g, vk);
        if (!cv) continue;
        /* dim lists: every dim, each dim, the first and last, keepdim both ways */
        int lists[LARK_MAX_DIMS + 2][2], nlists = 0, lens[LARK_MAX_DIMS + 2];
        lens[nlists++] = 0;
        for (int d = 0; d < nd; d++) lists[nlists][0] = d, lens[nlists++] = 1;
        if (nd >= 2) lists[nlists][0] = 0, lists[nlists][1] = -1, lens[nlists++] = 2;
        for (int li = 0; li < nlists; li++)
          for (int keep = 0; keep < 2; keep++) {
            lark_reduce_args args = {.ndims = lens[li], .keepdim = keep, .unbiased = true, .p = 2};
            for (int k = 0; k < lens[li]; k++) args.dims[k] = lists[li][k];
            char what[160];
            for (int op = 0; op < LARK_NREDUCE; op++) {
              bool float_only = op == LARK_RED_MEAN || op == LARK_RED_VAR || op == LARK_RED_STD || op == LARK_RED_NORM;
              if (float_only && !is_float(dt)) continue;
              int nvariants = op == LARK_RED_NORM ? 6 : (op == LARK_RED_VAR || op == LARK_RED_STD) ? 2 : 1;
              for (int var = 0; var < nvariants; var++) {
                if (op == LARK_RED_NORM) args.p = ps[var];
                if (op == LARK_RED_VAR || op == LARK_RED_STD) args.unbiased = var == 0;
                lark_tensor *want = lark_reduce((lark_reduce_op)op, cv, &args);
                lark_clear_error();
                lark_tensor *got = lark_reduce((lark_reduce_op)op, gv, &args);
                snprintf(what, sizeof what, "op %d variant %d %s shape %d view %d dims %d keep %d", op, var,
                         lark_dtype_name(dt), (int)si, vk, li, keep);
                if (!want) { /* max/min of an empty set: the same error */
                  CHECK(!got, "%s: the device reduced what the CPU refused", what);
                  lark_tensor_release(got);
                  continue;
                }
                expect_on_device(what, got, want, dt == LARK_FLOAT32 ? 1e-6 : 1e-12);
                lark_tensor_release(want);
                lark_tensor_release(got);
              }
            }
          }
        /* max/min with indices and argmax/argmin, along each dim and over everything */
        bool empty = lark_numel(cv) == 0;
        for (int d = -1; d < nd && !empty; d++)
          for (int keep = 0; keep < 2; keep++) {
            char what[160];
            snprintf(what, sizeof what, "%s shape %d view %d dim %d keep %d", lark_dtype_name(dt), (int)si, vk, d, keep);
            int dim = d < 0 ? LARK_ALL_DIMS : d;
            lark_tensor *wi = lark_argmax(cv, dim, keep), *gi = lark_argmax(gv, dim, keep);
            expect_on_device(what, gi, wi, 0);
            lark_tensor_release(wi);
            lark_tensor_release(gi);
            wi = lark_argmin(cv, dim, keep), gi = lark_argmin(gv, dim, keep);
            expect_on_device(what, gi, wi, 0);
            lark_tensor_release(wi);
            lark_tensor_release(gi);
            if (d < 0) continue;
            lark_tensor *wv, *gvv;
            CHECK(lark_max_dim(cv, d, keep, &wv, &wi) == 0 && lark_max_dim(gv, d, keep, &gvv, &gi) == 0, "%s: max_dim", what);
            expect_on_device(what, gvv, wv, 0);
            expect_on_device(what, gi, wi, 0);
            lark_tensor_release(wv), lark_tensor_release(wi), lark_tensor_release(gvv), lark_tensor_release(gi);
            CHECK(lark_min_dim(cv, d, keep, &wv, &wi) == 0 && lark_min_dim(gv, d, keep, &gvv, &gi) == 0, "%s: min_dim", what);
            expect_on_device(what, gvv, wv, 0);
            expect_on_device(what, gi, wi, 0);
            lark_tensor_release(wv), lark_tensor_release(wi), lark_tensor_release(gvv), lark_tensor_release(gi);
          }
        lark_tensor_release(cv);
        lark_tensor_release(gv);
      }
      lark_tensor_release(c);
      lark_tensor_release(g);
    }
  }
  CHECK(calls[C_REDUCE] > before + 1000, "the device reductions went through the backend (%d calls)",
        calls[C_REDUCE] - before);

  /* the error of an empty max names the op, on the device as on the CPU */
  int64_t s[2] = {3, 0};
  lark_tensor *e = lark_zeros(2, s, LARK_FLOAT32, &DEV), *v = NULL, *ix = NULL;
  CHECK(lark_max_dim(e, 1, false, &v, &ix) != 0 && error_has("max: cannot reduce over an empty dim"), "empty max");
  lark_tensor_release(e);

  /* without the field: not implemented, before anything is allocated */
  fake.reduce = NULL;
  int64_t three = 3;
  lark_tensor *t = lark_ones(1, &three, LARK_FLOAT32, &DEV);
  int64_t live = lark_bytes_allocated(LARK_CUDA);
  CHECK(!lark_reduce(LARK_RED_SUM, t, NULL) && error_has("sum: not implemented for cuda:0"), "sum without reduce");
  CHECK(!lark_argmax(t, 0, false) && error_has("argmax: not implemented for cuda:0"), "argmax without reduce");
  CHECK(lark_bytes_allocated(LARK_CUDA) == live, "nothing allocated for an op the device lacks");
  lark_tensor_release(t);
  fake.reduce = fake_reduce;
}

/* ---- random ------------------------------------------------------------------------------------ */

/* The same draw on the device and the CPU from two generators of one state; both then at one offset. */
typedef int (*draw_fn)(lark_tensor *t, lark_generator *g);
static int draw_uniform(lark_tensor *t, lark_generator *g) { return lark_uniform_(t, -3.25, 7.5, g); }
static int draw_normal(lark_tensor *t, lark_generator *g) { return lark_normal_(t, 0.5, 2.5, g); }
static int draw_randint(lark_tensor *t, lark_generator *g) {
  return lark_randint_(t, t->dtype == LARK_INT64 ? INT64_MIN + 3 : 0, t->dtype == LARK_BOOL ? 2 : 10, g);
}
static int draw_bernoulli(lark_tensor *t, lark_generator *g) { return lark_bernoulli_(t, 0.3, g); }

static void test_random(void) {
  static const draw_fn draws[] = {draw_uniform, draw_normal, draw_randint, draw_bernoulli};
  static const lark_dtype dts[] = {LARK_FLOAT32, LARK_FLOAT64, LARK_INT64, LARK_UINT8, LARK_BOOL};
  int before = calls[C_RANDOM];
  int64_t shape[2] = {7, 9};
  for (int k = 0; k < 4; k++)
    for (size_t di = 0; di < 5; di++) {
      lark_dtype dt = dts[di];
      if (k < 2 && !is_float(dt)) continue;
      for (int strided = 0; strided < 2; strided++) {
        lark_generator gc, gg;
        lark_generator_init(&gc, 0x123456789abull);
        lark_generator_init(&gg, 0x123456789abull);
        gc.offset = gg.offset = (1ull << 32) - 20; /* crosses into the counter's high word */
        lark_tensor *c = lark_zeros(2, shape, dt, NULL), *g = lark_zeros(2, shape, dt, &DEV);
        lark_tensor *cv = strided ? lark_transpose(c, 0, 1) : lark_tensor_retain(c);
        lark_tensor *gv = strided ? lark_transpose(g, 0, 1) : lark_tensor_retain(g);
        CHECK(draws[k](cv, &gc) == 0 && draws[k](gv, &gg) == 0, "draw %d %s", k, lark_dtype_name(dt));
        char what[64];
        snprintf(what, sizeof what, "draw %d %s strided %d", k, lark_dtype_name(dt), strided);
        expect_on_device(what, g, c, 0);
        CHECK(gc.offset == gg.offset && gg.offset == (1ull << 32) - 20 + 63, "%s: offsets %llu and %llu", what,
              (unsigned long long)gc.offset, (unsigned long long)gg.offset);
        lark_tensor_release(cv), lark_tensor_release(gv), lark_tensor_release(c), lark_tensor_release(g);
      }
    }
  CHECK(calls[C_RANDOM] == before + 2 * (2 * 2 + 2 * 5), "every device draw went through random_fill (%d)",
        calls[C_RANDOM] - before);

  /* bernoulli with a tensor p: a strided p, then an invalid one (the CPU's message, no advance) */
  lark_tensor *pc = lark_empty(2, shape, LARK_FLOAT64, NULL);
  for (int64_t i = 0; i < 63; i++) data_set(pc, i, rand_unit());
  lark_tensor *pg = lark_to(pc, LARK_FLOAT64, &DEV);
  lark_tensor *pct = lark_transpose(pc, 0, 1), *pgt = lark_transpose(pg, 0, 1);
  lark_generator gc, gg;
  lark_generator_init(&gc, 5);
  lark_generator_init(&gg, 5);
  lark_tensor *wc = lark_bernoulli(pct, &gc), *wg = lark_bernoulli(pgt, &gg);
  expect_on_device("bernoulli(p transposed)", wg, wc, 0);
  CHECK(gc.offset == 63 && gg.offset == 63, "bernoulli advances by numel");
  lark_tensor_release(wc), lark_tensor_release(wg);
  data_set(pc, 20, 1.5); /* pc (2, 2), which is (2, 2) of the 9x7 transpose: its element 2 * 7 + 2 + 1 = 17 */
  lark_tensor *pg2 = to_dev(pc), *bad = lark_transpose(pg2, 0, 1);
  CHECK(!lark_bernoulli(pct, &gc), "bernoulli refuses p = 1.5 on the CPU");
  char cpu_msg[256];
  snprintf(cpu_msg, sizeof cpu_msg, "%s", lark_error());
  CHECK(!lark_bernoulli(bad, &gg) && strcmp(lark_error(), cpu_msg) == 0, "device message '%s' vs CPU '%s'", lark_error(),
        cpu_msg);
  CHECK(error_has("got 1.5 at element 17"), "the message names the element: %s", lark_error());
  CHECK(gc.offset == 63 && gg.offset == 63, "a refused bernoulli does not advance the generator");
  lark_tensor_release(bad), lark_tensor_release(pg2), lark_tensor_release(pct), lark_tensor_release(pgt),
      lark_tensor_release(pc), lark_tensor_release(pg);
  CHECK(calls[C_BERNOULLI] == 2, "bernoulli(p) went through the backend (%d)", calls[C_BERNOULLI]);

  /* a backend without random_fill still gets the CPU's numbers (filled there and copied) */
  fake.random_fill = NULL;
  lark_generator_init(&gc, 9);
  lark_generator_init(&gg, 9);
  lark_tensor *c = lark_zeros(2, shape, LARK_FLOAT32, NULL), *g = lark_zeros(2, shape, LARK_FLOAT32, &DEV);
  CHECK(lark_normal_(c, 0, 1, &gc) == 0 && lark_normal_(g, 0, 1, &gg) == 0, "normal_ without random_fill");
  expect_on_device("normal_ without random_fill", g, c, 0);
  CHECK(gc.offset == gg.offset, "offsets without random_fill");
  lark_tensor_release(c), lark_tensor_release(g);
  fake.random_fill = fake_random_fill;
}

/* ---- optimizer updates ------------------------------------------------------------------------ */

static void test_optim(void) {
  const int n = 3;
  int64_t shapes[3][2] = {{5, 7}, {1, 3}, {0, 2}};
  for (int dti = 0; dti < 2; dti++) {
    lark_dtype dt = dti ? LARK_FLOAT64 : LARK_FLOAT32;
    double tol = dti ? 1e-13 : 2e-6;
    lark_tensor *pc[3], *pg[3], *gc[3], *gg[3], *bc[3] = {0}, *bg[3] = {0};
    for (int i = 0; i < n; i++) {
      pc[i] = sample(2, shapes[i], dt);
      pg[i] = to_dev(pc[i]);
    }
    lark_sgd_args sa = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true};
    lark_adamw_args aa = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.05, .amsgrad = true};
    lark_tensor *mc[3] = {0}, *mg[3] = {0}, *vc[3] = {0}, *vg[3] = {0}, *wc[3] = {0}, *wg[3] = {0};
    for (int step = 1; step <= 3; step++) {
      for (int i = 0; i < n; i++) {
        lark_tensor *g0 = sample(2, shapes[i], dt);
        if (step == 2) { /* a transposed (non-contiguous) grad of the same values, read through a copy */
          lark_tensor *t = lark_transpose(g0, 0, 1), *tc = lark_contiguous(t), *td = to_dev(tc);
          gc[i] = lark_transpose(tc, 0, 1);
          gg[i] = lark_transpose(td, 0, 1);
          lark_tensor_release(t), lark_tensor_release(tc), lark_tensor_release(td);
        } else {
          gc[i] = lark_tensor_retain(g0);
          gg[i] = to_dev(g0);
        }
        lark_tensor_release(g0);
      }
      CHECK(lark_sgd_step_(n, pc, gc, bc, &sa) == 0 && lark_sgd_step_(n, pg, gg, bg, &sa) == 0, "sgd step %d", step);
      int64_t steps[3] = {step, step + 2, 1};
      CHECK(lark_adamw_step_(n, pc, gc, mc, vc, wc, steps, &aa) == 0 && lark_adamw_step_(n, pg, gg, mg, vg, wg, steps, &aa) == 0,
            "adamw step %d", step);
      for (int i = 0; i < n; i++) lark_tensor_release(gc[i]), lark_tensor_release(gg[i]);
    }
    for (int i = 0; i < n; i++) {
      char what[64];
      snprintf(what, sizeof what, "%s parameter %d", lark_dtype_name(dt), i);
      expect_on_device(what, pg[i], pc[i], tol);
      expect_on_device(what, bg[i], bc[i], tol); /* made on the device (expect_on_device checks) */
      expect_on_device(what, mg[i], mc[i], tol);
      expect_on_device(what, vg[i], vc[i], tol);
      expect_on_device(what, wg[i], wc[i], tol);
    }
    /* lerp (both branches) and the total norm */
    for (int wi = 0; wi < 2; wi++) {
      double w = wi ? 0.7 : 0.01;
      CHECK(lark_lerp_list_(n, pc, mc, w, NULL) == 0 && lark_lerp_list_(n, pg, mg, w, NULL) == 0, "lerp");
      for (int i = 0; i < n; i++) expect_on_device("lerp", pg[i], pc[i], tol);
    }
    static const double ps[] = {2, 1, 3, INFINITY};
    for (int k = 0; k < 4; k++) {
      double a = 0, b = 0;
      CHECK(lark_total_norm(n, pc, ps[k], &a) == 0 && lark_total_norm(n, pg, ps[k], &b) == 0 && near(b, a, tol),
            "total_norm p=%g: %.17g vs %.17g", ps[k], b, a);
    }
    for (int i = 0; i < n; i++) {
      lark_tensor_release(pc[i]), lark_tensor_release(pg[i]), lark_tensor_release(bc[i]), lark_tensor_release(bg[i]);
      lark_tensor_release(mc[i]), lark_tensor_release(mg[i]), lark_tensor_release(vc[i]), lark_tensor_release(vg[i]);
      lark_tensor_release(wc[i]), lark_tensor_release(wg[i]);
    }
  }
  CHECK(calls[C_SGD] == 2 * 3 * 3 && calls[C_ADAMW] == 2 * 3 * 3 && calls[C_LERP] == 2 * 2 * 3 && calls[C_NORM] == 2 * 4 * 3,
        "optimizer calls: sgd %d adamw %d lerp %d norm %d", calls[C_SGD], calls[C_ADAMW], calls[C_LERP], calls[C_NORM]);

  /* reference loops refuse device tensors; a device without the update says so; nothing leaks */
  int64_t three = 3;
  lark_tensor *p = lark_ones(1, &three, LARK_FLOAT32, &DEV), *g = lark_ones(1, &three, LARK_FLOAT32, &DEV);
  lark_sgd_args sa = {.lr = 0.1};
  CHECK(lark_sgd_step_reference_(1, &p, &g, NULL, &sa) != 0 &&
        error_has("sgd_step: parameter 0: the reference loop runs on CPU tensors only, not on cuda:0"),
        "sgd reference on the device");
  fake.sgd_update = NULL;
  CHECK(lark_sgd_step_(1, &p, &g, NULL, &sa) != 0 && error_has("sgd_step: not implemented for cuda:0"),
        "sgd without sgd_update");
  fake.sgd_update = fake_sgd;
  fake.lerp = NULL;
  CHECK(lark_lerp_list_(1, &p, &g, 0.5, NULL) != 0 && error_has("lerp_list_: not implemented for cuda:0"), "lerp without lerp");
  fake.lerp = fake_lerp;
  fake.norm_part = NULL;
  double tn;
  CHECK(lark_total_norm(1, &g, 2, &tn) != 0 && error_has("total_norm: not implemented for cuda:0"), "norm without norm_part");
  fake.norm_part = fake_norm_part;
  lark_tensor_release(p), lark_tensor_release(g);
}

int main(void) {
  if (lark_cuda_is_available()) {
    printf("skipped: a CUDA device is present (spec/cuda_ops_spec.lua tests the real backend)\n");
    return 0;
  }
  install();
  rand_seed(2024);
  int64_t cpu0 = lark_bytes_allocated(LARK_CPU);
  test_reductions();
  test_random();
  test_optim();
  CHECK_NO_LEAK(cpu0);
  CHECK(lark_bytes_allocated(LARK_CUDA) == 0, "%lld device bytes still allocated", (long long)lark_bytes_allocated(LARK_CUDA));
  return check_report("test_device_dispatch");
}
