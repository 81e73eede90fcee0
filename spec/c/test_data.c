/* test_data.c: the data readers and the loader (core/io/) on files and tensors the test makes:
 * IDX files plain and gzip with every header fault, digits CSV lines good and bad, the seeded
 * permutation, the batch transforms against a plain loop over what they drew, and the loader's
 * batches (coverage, drop_last, subsets, prefetch thread == synchronous path).
 * Uses only lark.h and zlib (to write .gz fixtures). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"

static char dir[64];

static const char *path_of(const char *name) {
  static char buf[256];
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

static void write_file(const char *name, const void *data, size_t n) {
  FILE *f = fopen(path_of(name), "wb");
  CHECK(f != NULL, "fopen %s", name);
  if (!f) return;
  fwrite(data, 1, n, f);
  fclose(f);
}

static void write_gz(const char *name, const void *data, size_t n) {
  gzFile f = gzopen(path_of(name), "wb");
  CHECK(f != NULL, "gzopen %s", name);
  if (!f) return;
  gzwrite(f, data, (unsigned)n);
  gzclose(f);
}

static size_t read_file(const char *name, unsigned char *buf, size_t cap) {
  FILE *f = fopen(path_of(name), "rb");
  if (!f) return 0;
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  return n;
}

/* An IDX image: magic 00 00 08 nd, big-endian sizes, then data[i] = (7 i + 3) mod 256. Returns its size. */
static size_t make_idx(unsigned char *buf, int nd, const uint32_t *dims, int dtype_byte) {
  size_t k = 0, total = 1;
  buf[k++] = 0;
  buf[k++] = 0;
  buf[k++] = (unsigned char)dtype_byte;
  buf[k++] = (unsigned char)nd;
  for (int d = 0; d < nd; d++) {
    buf[k++] = (unsigned char)(dims[d] >> 24);
    buf[k++] = (unsigned char)(dims[d] >> 16);
    buf[k++] = (unsigned char)(dims[d] >> 8);
    buf[k++] = (unsigned char)dims[d];
    total *= dims[d];
  }
  for (size_t i = 0; i < total; i++) buf[k++] = (unsigned char)((7 * i + 3) % 256);
  return k;
}

/* t holds shape[0..nd) and the first numel of the (7 i + 3) mod 256 sequence. */
static bool idx_matches(const lark_tensor *t, int nd, const int64_t *shape) {
  if (!t || t->dtype != LARK_UINT8 || t->ndim != nd) return false;
  for (int d = 0; d < nd; d++)
    if (t->shape[d] != shape[d]) return false;
  const uint8_t *p = lark_data_ptr(t);
  for (int64_t i = 0; i < lark_numel(t); i++)
    if (p[i] != (uint8_t)((7 * i + 3) % 256)) return false;
  return true;
}

/* lark_read_idx(name, max) fails with a message holding `want` and the file's path. */
static void expect_idx_error(const char *name, int64_t max, const char *want) {
  lark_clear_error();
  lark_tensor *t = lark_read_idx(path_of(name), max);
  CHECK(t == NULL, "%s: expected an error containing '%s'", name, want);
  CHECK(error_has(want), "%s: error '%s' lacks '%s'", name, lark_error(), want);
  CHECK(error_has(name), "%s: error '%s' does not name the file", name, lark_error());
  lark_tensor_release(t);
}

static void test_idx(void) {
  static unsigned char buf[1 << 16];
  uint32_t dims3[3] = {5, 3, 2};
  size_t n = make_idx(buf, 3, dims3, 0x08);
  write_file("a.idx", buf, n);
  write_gz("a.idx.gz", buf, n);
  for (int gz = 0; gz < 2; gz++) {
    const char *name = gz ? "a.idx.gz" : "a.idx";
    lark_tensor *t = lark_read_idx(path_of(name), -1);
    CHECK(idx_matches(t, 3, (int64_t[]){5, 3, 2}), "%s: whole file", name);
    lark_tensor_release(t);
    t = lark_read_idx(path_of(name), 2);
    CHECK(idx_matches(t, 3, (int64_t[]){2, 3, 2}), "%s: max_records 2", name);
    lark_tensor_release(t);
    t = lark_read_idx(path_of(name), 0);
    CHECK(idx_matches(t, 3, (int64_t[]){0, 3, 2}), "%s: max_records 0", name);
    lark_tensor_release(t);
    t = lark_read_idx(path_of(name), 99);
    CHECK(idx_matches(t, 3, (int64_t[]){5, 3, 2}), "%s: max_records beyond the file", name);
    lark_tensor_release(t);
  }
  /* 1-D labels, and a 0-record file */
  uint32_t dims1[1] = {300};
  n = make_idx(buf, 1, dims1, 0x08);
  write_file("labels.idx", buf, n);
  lark_tensor *t = lark_read_idx(path_of("labels.idx"), -1);
  CHECK(idx_matches(t, 1, (int64_t[]){300}), "1-D file");
  lark_tensor_release(t);
  uint32_t dims0[3] = {0, 28, 28};
  n = make_idx(buf, 3, dims0, 0x08);
  write_file("empty.idx", buf, n);
  t = lark_read_idx(path_of("empty.idx"), -1);
  CHECK(idx_matches(t, 3, (int64_t[]){0, 28, 28}), "0 records");
  lark_tensor_release(t);

  /* header faults */
  n = make_idx(buf, 3, dims3, 0x08);
  buf[0] = 1;
  write_file("badmagic.idx", buf, n);
  expect_idx_error("badmagic.idx", -1, "bad magic 01 00 08 03");
  n = make_idx(buf, 3, dims3, 0x0C);
  write_file("int32.idx", buf, n);
  expect_idx_error("int32.idx", -1, "dtype byte 0x0c (int32) is not supported");
  n = make_idx(buf, 3, dims3, 0x07);
  write_file("dtype7.idx", buf, n);
  expect_idx_error("dtype7.idx", -1, "unknown dtype byte 0x07");
  n = make_idx(buf, 0, NULL, 0x08);
  write_file("nodims.idx", buf, n);
  expect_idx_error("nodims.idx", -1, "0 dims");
  write_file("short.idx", "\0\0", 2);
  expect_idx_error("short.idx", -1, "too short for the 4-byte IDX magic");
  write_file("zero.idx", "", 0);
  expect_idx_error("zero.idx", -1, "truncated: 0 bytes");
  n = make_idx(buf, 3, dims3, 0x08);
  write_file("shorthdr.idx", buf, 4 + 4 * 2 + 1); /* the third size cut */
  expect_idx_error("shorthdr.idx", -1, "truncated header: 3 dims need 12 bytes of sizes, the file has 9");
  uint32_t huge[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
  make_idx(buf, 0, NULL, 0x08);
  buf[3] = 3;
  for (int k = 0; k < 12; k++) buf[4 + k] = (unsigned char)(huge[k / 4] >> (24 - 8 * (k % 4)));
  write_file("overflow.idx", buf, 16);
  expect_idx_error("overflow.idx", -1, "overflow");

  /* data faults */
  n = make_idx(buf, 3, dims3, 0x08);
  write_file("trunc.idx", buf, n - 1);
  write_gz("trunc.idx.gz", buf, n - 1);
  expect_idx_error("trunc.idx", -1, "truncated: the header promises 30 bytes of data (sizes [5,3,2]), the file has 29");
  expect_idx_error("trunc.idx.gz", -1, "the file has 29");
  t = lark_read_idx(path_of("trunc.idx"), 4); /* the first 4 records are all there */
  CHECK(idx_matches(t, 3, (int64_t[]){4, 3, 2}), "truncated file, records that are whole");
  lark_tensor_release(t);
  memcpy(buf + n, "garbage", 7);
  write_file("trail.idx", buf, n + 7);
  write_gz("trail.idx.gz", buf, n + 7);
  expect_idx_error("trail.idx", -1, "7 bytes of trailing garbage");
  expect_idx_error("trail.idx.gz", -1, "7 bytes of trailing garbage");
  t = lark_read_idx(path_of("trail.idx"), 3); /* only part read: the tail is not looked at */
  CHECK(idx_matches(t, 3, (int64_t[]){3, 3, 2}), "max_records before trailing bytes");
  lark_tensor_release(t);

  /* corrupt gzip: a flipped byte in the deflate stream, and a stream cut in half */
  static unsigned char big[1 << 15], gzb[1 << 16];
  uint32_t dimsb[2] = {100, 300};
  n = make_idx(big, 2, dimsb, 0x08);
  for (size_t i = 16; i < n; i++) big[i] = (unsigned char)(rand_u64() >> 60); /* compressible, not trivial */
  write_gz("big.gz", big, n);
  size_t gzn = read_file("big.gz", gzb, sizeof gzb);
  CHECK(gzn > 100, "gz fixture written (%zu bytes)", gzn);
  t = lark_read_idx(path_of("big.gz"), -1);
  CHECK(t && t->shape[0] == 100 && memcmp(lark_data_ptr(t), big + 12, 30000) == 0, "a bigger gz file reads back");
  lark_tensor_release(t);
  write_file("cut.gz", gzb, gzn / 2);
  expect_idx_error("cut.gz", -1, "corrupt gzip stream");
  unsigned char save = gzb[gzn / 2];
  gzb[gzn / 2] ^= 0xFF;
  gzb[gzn / 2 + 1] ^= 0x55;
  write_file("flip.gz", gzb, gzn);
  expect_idx_error("flip.gz", -1, "corrupt gzip stream");
  gzb[gzn / 2] = save;
  gzb[gzn - 6] ^= 0x01; /* the CRC32 in the trailer */
  write_file("crc.gz", gzb, gzn);
  expect_idx_error("crc.gz", -1, "corrupt gzip stream");

  lark_clear_error();
  t = lark_read_idx(path_of("missing.idx"), -1);
  CHECK(!t && error_has("cannot open") && error_has("missing.idx") && error_has("No such file"), "missing file");
}

/* ---- digits CSV ----------------------------------------------------------------------------- */

static void csv_line(char *out, size_t cap, int seed, int label) {
  size_t k = 0;
  for (int i = 0; i < 64; i++) k += (size_t)snprintf(out + k, cap - k, "%d,", (seed * 5 + i * 3) % 17);
  snprintf(out + k, cap - k, "%d\n", label);
}

static void expect_csv_error(const char *name, const char *want) {
  lark_tensor *im, *lab;
  lark_clear_error();
  int rc = lark_read_digits_csv(path_of(name), 1, &im, &lab);
  CHECK(rc != 0 && !im && !lab, "%s: expected an error", name);
  CHECK(error_has(want) && error_has(name), "%s: error '%s' lacks '%s' or the file name", name, lark_error(), want);
}

static void test_digits(void) {
  char text[4096] = "", line[512];
  for (int r = 0; r < 3; r++) {
    csv_line(line, sizeof line, r, (r * 4) % 10);
    strcat(text, line);
  }
  strcat(text, "\n"); /* a trailing blank line is fine */
  write_file("d.csv", text, strlen(text));
  write_gz("d.csv.gz", text, strlen(text));
  for (int gz = 0; gz < 2; gz++) {
    lark_tensor *im, *lab;
    int rc = lark_read_digits_csv(path_of(gz ? "d.csv.gz" : "d.csv"), 1, &im, &lab);
    CHECK(rc == 0 && im && lab, "digits csv reads");
    if (rc) continue;
    CHECK(im->dtype == LARK_FLOAT32 && im->ndim == 3 && im->shape[0] == 3 && im->shape[1] == 8 && im->shape[2] == 8,
          "images (3, 8, 8) float32");
    CHECK(lab->dtype == LARK_INT64 && lab->ndim == 1 && lab->shape[0] == 3, "labels (3) int64");
    bool ok = true;
    for (int r = 0; r < 3; r++) {
      ok &= data_get(lab, r) == (r * 4) % 10 + 1;
      for (int i = 0; i < 64; i++) ok &= data_get(im, r * 64 + i) == (double)((r * 5 + i * 3) % 17) / 16.0;
    }
    CHECK(ok, "digits values / 16 and labels + 1");
    lark_tensor_release(im);
    lark_tensor_release(lab);
  }
  /* malformed second lines */
  csv_line(line, sizeof line, 0, 1);
  char bad[4096];
  snprintf(bad, sizeof bad, "%s1,2,3\n", line);
  write_file("few.csv", bad, strlen(bad));
  expect_csv_error("few.csv", "line 2: expected 65 comma-separated integers (64 pixels and a label), got 3");
  snprintf(bad, sizeof bad, "%s%.*sx,1\n", line, 2 * 63, "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1");
  write_file("word.csv", bad, strlen(bad));
  expect_csv_error("word.csv", "line 2: field 64 is 'x', expected an integer");
  csv_line(bad, sizeof bad, 1, 3);
  char *p = strchr(bad, ',');
  char fixed[4096];
  snprintf(fixed, sizeof fixed, "%s17%s", line, p); /* first pixel 17 */
  write_file("pix.csv", fixed, strlen(fixed));
  expect_csv_error("pix.csv", "line 2: pixel 1 is 17, expected 0..16");
  csv_line(bad, sizeof bad, 1, 11);
  snprintf(fixed, sizeof fixed, "%s%s", line, bad);
  write_file("lab.csv", fixed, strlen(fixed));
  expect_csv_error("lab.csv", "line 2: label 11 out of range, expected 0..9");
  write_file("blank.csv", "\n\n", 2);
  expect_csv_error("blank.csv", "no data lines");
}

/* ---- permutation and draws ------------------------------------------------------------------ */

static void test_permutation(void) {
  int64_t a[1000], b[1000], c[1000];
  lark_data_permutation(1000, 42, 1, a);
  lark_data_permutation(1000, 42, 1, b);
  lark_data_permutation(1000, 42, 2, c);
  char seen[1000] = {0};
  bool perm = true;
  for (int i = 0; i < 1000; i++) {
    if (a[i] < 0 || a[i] >= 1000 || seen[a[i]]) perm = false;
    else seen[a[i]] = 1;
  }
  CHECK(perm, "a permutation of 0..999");
  CHECK(memcmp(a, b, sizeof a) == 0, "same seed and epoch, same order");
  CHECK(memcmp(a, c, sizeof a) != 0, "another epoch, another order");
  int fixed = 0;
  for (int i = 0; i < 1000; i++) fixed += a[i] == i;
  CHECK(fixed < 10, "shuffled (%d fixed points)", fixed);
  /* Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)) */
  lark_generator g;
  lark_generator_init(&g, 7);
  double alphas[3] = {0.2, 1.0, 4.0};
  for (int k = 0; k < 3; k++) {
    double s = 0, s2 = 0;
    int n = 20000;
    for (int i = 0; i < n; i++) {
      double x = lark_gen_beta(&g, alphas[k], alphas[k]);
      s += x;
      s2 += x * x;
    }
    double mean = s / n, var = s2 / n - mean * mean, want = 1 / (4 * (2 * alphas[k] + 1));
    CHECK(fabs(mean - 0.5) < 0.01 && fabs(var - want) < 0.05 * want + 0.002, "Beta(%g): mean %g var %g (want %g)",
          alphas[k], mean, var, want);
  }
}

/* ---- transforms against a plain loop -------------------------------------------------------- */

/* The reference of one output element (transform.c's formula, written out). */
static float ref_pixel(const lark_tensor *x, int64_t b, int64_t c, int64_t i, int64_t j, int64_t S, int64_t p,
                       int64_t dy, int64_t dx, bool flip, double scale, const double *mean, const double *std) {
  int64_t H = x->shape[2], W = x->shape[3];
  int64_t si = i + dy - p, sj = (flip ? S - 1 - j : j) + dx - p;
  float v = 0;
  if (si >= 0 && si < H && sj >= 0 && sj < W) v = (float)data_get(x, ((b * x->shape[1] + c) * H + si) * W + sj) * (float)scale;
  return (v - (float)mean[c]) / (float)std[c];
}

static void test_transforms(void) {
  int64_t B = 6, C = 2, H = 5, W = 7;
  lark_tensor *x = lark_empty(4, (int64_t[]){B, C, H, W}, LARK_UINT8, NULL);
  lark_tensor *y = lark_empty(1, &B, LARK_INT64, NULL);
  for (int64_t i = 0; i < lark_numel(x); i++) data_set(x, i, (double)rand_int(256));
  for (int64_t i = 0; i < B; i++) data_set(y, i, (double)(1 + rand_int(4)));
  lark_transform_opts o;
  lark_transform_opts_init(&o);
  o.scale = 1.0 / 255;
  o.nnorm = 2;
  o.mean[0] = 0.3, o.mean[1] = 0.6, o.std[0] = 0.2, o.std[1] = 0.5;
  o.crop_size = 4;
  o.crop_padding = 2;
  o.hflip = 0.5;
  o.label_base = 1;
  int64_t dy[6], dx[6], perm[6];
  uint8_t flip[6];
  lark_transform_draws d = {dy, dx, flip, perm, 0, 0, {0}};
  lark_generator g;
  lark_generator_init(&g, 11);
  lark_tensor *xo = NULL, *yo = NULL;
  int rc = lark_transform_batch(x, y, &o, &g, &xo, &yo, &d);
  CHECK(rc == 0 && xo && yo == y, "transform runs and passes hard labels through");
  CHECK(xo && xo->ndim == 4 && xo->shape[0] == B && xo->shape[1] == C && xo->shape[2] == 4 && xo->shape[3] == 4,
        "crop size 4");
  CHECK(g.offset == (uint64_t)(3 * B), "3 draws per sample (dy, dx, flip): offset %llu", (unsigned long long)g.offset);
  int nflip = 0, worst = 0;
  for (int64_t b = 0; b < B && xo; b++) {
    nflip += flip[b];
    CHECK(dy[b] >= 0 && dy[b] <= H + 4 - 4 && dx[b] >= 0 && dx[b] <= W + 4 - 4, "crop origin in range");
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 4; j++) {
          float want = ref_pixel(x, b, c, i, j, 4, 2, dy[b], dx[b], flip[b], o.scale, o.mean, o.std);
          /* within an ulp or two: the compiler may fuse scale and mean into one FMA on either side */
          worst += !near(data_get(xo, ((b * C + c) * 4 + i) * 4 + j), want, 1e-6);
        }
  }
  CHECK(worst == 0, "%d pixels differ from the plain loop", worst);
  /* float64 input takes the reference loop, uint8 and float32 the fast path: they agree */
  for (int k = 0; k < 2; k++) {
    lark_tensor *xd = lark_to(x, k ? LARK_FLOAT32 : LARK_FLOAT64, NULL), *xr = NULL;
    lark_generator_init(&g, 11);
    CHECK(lark_transform_batch(xd, NULL, &o, &g, &xr, NULL, NULL) == 0, "%s input", k ? "float32" : "float64");
    int diff = 0;
    for (int64_t i = 0; xr && xo && i < lark_numel(xo); i++) diff += !near(data_get(xr, i), data_get(xo, i), 1e-6);
    CHECK(xr && diff == 0, "%s input: %d pixels differ from uint8 input", k ? "float32" : "float64", diff);
    lark_tensor_release(xd);
    lark_tensor_release(xr);
  }
  lark_tensor_release(xo);
  lark_tensor_release(yo);

  /* replaying the same generator state gives the same batch */
  lark_generator g1, g2;
  lark_generator_init(&g1, 5);
  lark_generator_init(&g2, 5);
  lark_tensor *a = NULL, *b2 = NULL;
  lark_transform_batch(x, NULL, &o, &g1, &a, NULL, NULL);
  lark_transform_batch(x, NULL, &o, &g2, &b2, NULL, NULL);
  CHECK(a && b2 && memcmp(lark_data_ptr(a), lark_data_ptr(b2), (size_t)lark_numel(a) * 4) == 0, "same seed, same batch");
  lark_tensor_release(a);
  lark_tensor_release(b2);

  /* mixup and cutmix: soft rows sum to 1, pixels follow lam and the box */
  for (int mode = 1; mode <= 2; mode++) {
    lark_transform_opts m;
    lark_transform_opts_init(&m);
    m.label_base = 1;
    m.num_classes = 4;
    if (mode == 1) m.mixup_alpha = 0.4;
    else m.cutmix_alpha = 1.0;
    lark_transform_draws dm = {NULL, NULL, NULL, perm, 0, 0, {0}};
    lark_tensor *xf = lark_to(x, LARK_FLOAT32, NULL), *xm = NULL, *ys = NULL;
    rc = lark_transform_batch(xf, y, &m, &g, &xm, &ys, &dm);
    CHECK(rc == 0 && ys && ys->ndim == 2 && ys->shape[0] == B && ys->shape[1] == 4 && ys->dtype == LARK_FLOAT32,
          "mode %d: soft targets (B, 4)", mode);
    CHECK(dm.mix == mode && dm.lam >= 0 && dm.lam <= 1, "mode %d drawn, lam %g", mode, dm.lam);
    if (rc) continue;
    bool sums = true, pix = true, targets = true;
    for (int64_t i = 0; i < B; i++) {
      double s = 0;
      for (int k = 0; k < 4; k++) s += data_get(ys, i * 4 + k);
      sums &= fabs(s - 1) < 1e-6;
      double want_own = 0, got_own = data_get(ys, i * 4 + (int64_t)data_get(y, i) - 1);
      want_own += dm.lam;
      if (data_get(y, perm[i]) == data_get(y, i)) want_own += 1 - dm.lam;
      targets &= fabs(got_own - want_own) < 1e-6;
      for (int64_t k = 0; k < C * H * W; k++) {
        int64_t r = (k / W) % H, col = k % W;
        float own = (float)data_get(xf, i * C * H * W + k), other = (float)data_get(xf, perm[i] * C * H * W + k);
        float want;
        if (mode == 1) want = (float)dm.lam * own + (float)(1 - dm.lam) * other;
        else want = (r >= dm.box[0] && r < dm.box[2] && col >= dm.box[1] && col < dm.box[3]) ? other : own;
        pix &= near(data_get(xm, i * C * H * W + k), want, 1e-6);
      }
    }
    if (mode == 2) {
      double area = (double)((dm.box[2] - dm.box[0]) * (dm.box[3] - dm.box[1]));
      CHECK(fabs(dm.lam - (1 - area / (H * W))) < 1e-12, "cutmix lam is 1 - box area");
    }
    CHECK(sums, "mode %d: soft target rows sum to 1", mode);
    CHECK(targets, "mode %d: own class weight lam (+ 1 - lam when the partner shares it)", mode);
    CHECK(pix, "mode %d: mixed pixels follow the formula", mode);
    lark_tensor_release(xf);
    lark_tensor_release(xm);
    lark_tensor_release(ys);
  }
  /* a label out of range is an error, not a write out of bounds */
  data_set(y, 2, 9);
  lark_transform_opts m;
  lark_transform_opts_init(&m);
  m.label_base = 1;
  m.num_classes = 4;
  m.mixup_alpha = 1;
  lark_tensor *xm = NULL, *ys = NULL;
  CHECK(lark_transform_batch(x, y, &m, &g, &xm, &ys, NULL) != 0 && error_has("label 9 is out of range for 4 classes"),
        "bad label for mixup");
  o.nnorm = 3;
  CHECK(lark_transform_batch(x, NULL, &o, &g, &xm, NULL, NULL) != 0 && error_has("3 means"), "normalize channels");
  lark_transform_opts_init(&m);
  m.crop_size = 20;
  CHECK(lark_transform_batch(x, NULL, &m, &g, &xm, NULL, NULL) != 0 && error_has("does not fit"), "crop too big");
  lark_tensor_release(x);
  lark_tensor_release(y);
}

/* ---- the loader ----------------------------------------------------------------------------- */

/* All batches of one epoch, concatenated: xs (N x per floats), ys (N labels); returns the batch count. */
static int64_t run_epoch(lark_loader *ld, uint64_t epoch, float *xs, int64_t *ys, int64_t per, int64_t *sizes) {
  CHECK(lark_loader_start(ld, epoch) == 0, "start");
  int64_t nb = 0, at = 0;
  lark_tensor *x, *y;
  int rc;
  while ((rc = lark_loader_next(ld, &x, &y)) == 1) {
    int64_t n = x->shape[0];
    memcpy(xs + at * per, lark_data_ptr(x), sizeof(float) * (size_t)(n * per));
    if (y) memcpy(ys + at, lark_data_ptr(y), sizeof(int64_t) * (size_t)n);
    sizes[nb++] = n;
    at += n;
    lark_tensor_release(x);
    lark_tensor_release(y);
  }
  CHECK(rc == 0, "epoch ends cleanly");
  return nb;
}

static void test_loader(void) {
  int64_t N = 23, per = 16;
  lark_tensor *im = lark_empty(4, (int64_t[]){N, 1, 4, 4}, LARK_UINT8, NULL);
  lark_tensor *lab = lark_empty(1, &N, LARK_INT64, NULL);
  for (int64_t i = 0; i < N; i++) {
    for (int k = 0; k < per; k++) data_set(im, i * per + k, (double)((i * 11 + k) % 256));
    data_set(lab, i, (double)(i + 100)); /* label = row + 100: tells which sample a batch row is */
  }
  static float xa[64 * 16], xb[64 * 16];
  int64_t ya[64], yb[64], sa[16], sb[16];
  lark_loader_opts o;
  lark_loader_opts_init(&o);
  o.batch_size = 5;
  o.shuffle = true;
  o.seed = 99;
  o.transform.scale = 1;
  lark_loader *ld = lark_loader_new(im, lab, NULL, 0, &o);
  CHECK(ld && lark_loader_num_batches(ld) == 5, "23 samples in batches of 5: 5 batches");
  int64_t nb = run_epoch(ld, 1, xa, ya, per, sa);
  CHECK(nb == 5 && sa[0] == 5 && sa[4] == 3, "batch sizes 5,5,5,5,3");
  char seen[23] = {0};
  bool once = true, rows = true;
  for (int64_t i = 0; i < N; i++) {
    int64_t r = ya[i] - 100;
    if (r < 0 || r >= N || seen[r]) once = false;
    else seen[r] = 1;
    for (int k = 0; k < per && r >= 0 && r < N; k++) rows &= xa[i * per + k] == (float)((r * 11 + k) % 256);
  }
  CHECK(once, "every sample once per epoch");
  CHECK(rows, "images travel with their labels");
  int64_t order[23];
  lark_data_permutation(N, 99, 1, order);
  bool same_order = true;
  for (int64_t i = 0; i < N; i++) same_order &= ya[i] - 100 == order[i];
  CHECK(same_order, "the epoch's order is lark_data_permutation(seed, epoch)");
  lark_loader_free(ld);

  /* prefetch thread == synchronous path, with random transforms, over two epochs */
  o.transform.crop_padding = 1;
  o.transform.hflip = 0.5;
  o.transform.nnorm = 1;
  o.transform.mean[0] = 100;
  o.transform.std[0] = 50;
  o.prefetch = 3;
  lark_loader *pre = lark_loader_new(im, lab, NULL, 0, &o);
  o.prefetch = 0;
  lark_loader *syn = lark_loader_new(im, lab, NULL, 0, &o);
  for (uint64_t e = 1; e <= 2; e++) {
    run_epoch(pre, e, xa, ya, per, sa);
    run_epoch(syn, e, xb, yb, per, sb);
    CHECK(memcmp(xa, xb, sizeof(float) * (size_t)(N * per)) == 0 && memcmp(ya, yb, sizeof(int64_t) * (size_t)N) == 0,
          "epoch %llu: prefetch and synchronous batches are identical", (unsigned long long)e);
  }
  /* an epoch abandoned half way, then a fresh one: the same as from scratch */
  lark_tensor *x, *y;
  lark_loader_start(pre, 1);
  lark_loader_next(pre, &x, &y);
  lark_tensor_release(x);
  lark_tensor_release(y);
  run_epoch(pre, 2, xa, ya, per, sa);
  CHECK(memcmp(xa, xb, sizeof(float) * (size_t)(N * per)) == 0, "a restarted epoch gives the same batches");
  lark_loader_free(pre);
  lark_loader_free(syn);

  /* drop_last and a subset */
  lark_loader_opts_init(&o);
  o.batch_size = 4;
  o.drop_last = true;
  o.transform.scale = 1.0 / 255;
  int64_t sub[7] = {3, 5, 7, 9, 11, 13, 22};
  ld = lark_loader_new(im, lab, sub, 7, &o);
  CHECK(ld && lark_loader_num_batches(ld) == 1 && lark_loader_num_samples(ld) == 7, "drop_last: 7 samples, 1 batch");
  nb = run_epoch(ld, 1, xa, ya, per, sa);
  CHECK(nb == 1 && sa[0] == 4 && ya[0] == 103 && ya[3] == 109, "subset rows in order");
  CHECK(fabs(xa[1] - (float)(3 * 11 + 1) / 255.0f) < 1e-7, "uint8 scaled by 1/255 when asked");
  lark_loader_free(ld);

  /* errors */
  int64_t badrow = 23;
  CHECK(!lark_loader_new(im, lab, &badrow, 1, &o) && error_has("subset index 23 is out of range"), "subset out of range");
  o.batch_size = 0;
  CHECK(!lark_loader_new(im, lab, NULL, 0, &o) && error_has("batch_size"), "batch_size 0");
  lark_loader_opts_init(&o);
  o.transform.mixup_alpha = 1;
  o.transform.num_classes = 3;
  CHECK(!lark_loader_new(im, NULL, NULL, 0, &o) && error_has("hard labels"), "mixup without labels");
  /* a bad label surfaces from the worker thread at the batch that holds it */
  o.transform.label_base = 100;
  o.batch_size = 8;
  o.prefetch = 2;
  ld = lark_loader_new(im, lab, NULL, 0, &o); /* labels 100..122 but only 3 classes */
  lark_loader_start(ld, 1);
  int rc = lark_loader_next(ld, &x, &y);
  CHECK(rc < 0 && error_has("out of range for 3 classes"), "a worker error reaches next(): %d", rc);
  CHECK(lark_loader_next(ld, &x, &y) == 0, "and ends the epoch");
  lark_loader_free(ld);
  lark_tensor_release(im);
  lark_tensor_release(lab);
}

/* Pinned tensors (lark_empty_pinned, lark_pin_memory, lark_is_pinned) and the loader's pin_memory:
 * the same bytes as ordinary memory, pinned exactly when the host allocator pins, released with their
 * storage (the ASan build's leak check and the byte counter see it). */
static void test_pinned(void) {
  /* whether the host allocator pins at all: with a GPU it does (test_cuda checks that), without one
   * or under spec/cuda_emu's emulated backend it gives ordinary memory */
  void *probe = lark_cuda_host_alloc(64);
  bool dev = probe && lark_cuda_host_is_pinned(probe);
  lark_cuda_host_free(probe);
  int64_t before = lark_bytes_allocated(LARK_CPU);
  lark_tensor *p = lark_empty_pinned(2, (int64_t[]){3, 5}, LARK_FLOAT64);
  CHECK(p && p->storage->host_alloc && lark_is_contiguous(p) && p->dtype == LARK_FLOAT64 && lark_numel(p) == 15,
        "empty_pinned: a contiguous 3x5 float64 from host_alloc");
  CHECK(((uintptr_t)lark_data_ptr(p) & 63) == 0, "empty_pinned is 64-byte aligned");
  CHECK(lark_is_pinned(p) == dev, "pinned exactly when the host allocator pins");
  CHECK(lark_bytes_allocated(LARK_CPU) - before == 15 * 8, "counted as CPU bytes");
  lark_tensor *q = lark_pin_memory(p);
  CHECK(q == p || !dev, "pin_memory of a pinned tensor is itself");
  lark_tensor_release(q);
  lark_tensor_free_storage(p); /* t:free() takes the host_alloc path too */
  CHECK(lark_bytes_allocated(LARK_CPU) == before, "free gives the bytes back");
  lark_tensor_release(p);
  lark_tensor *z = lark_empty_pinned(1, (int64_t[]){0}, LARK_INT64);
  CHECK(z && lark_numel(z) == 0, "empty_pinned of 0 elements");
  lark_tensor_release(z);
  CHECK(!lark_empty_pinned(1, (int64_t[]){-1}, LARK_FLOAT32) && error_has("negative"), "a negative size");
  CHECK(!lark_empty_pinned(2, (int64_t[]){INT64_MAX / 4, 8}, LARK_FLOAT32) && lark_error_code() == LARK_ERR_NOMEM,
        "an impossible size");

  /* pin_memory of a strided view: a contiguous copy with the same values */
  lark_tensor *a = lark_empty(2, (int64_t[]){4, 3}, LARK_INT64, NULL);
  for (int64_t i = 0; i < 12; i++) data_set(a, i, (double)(i * 7 - 20));
  lark_tensor *at = lark_transpose(a, 0, 1);
  lark_tensor *pa = at ? lark_pin_memory(at) : NULL;
  bool same = pa && lark_is_contiguous(pa) && pa->storage->host_alloc && pa->shape[0] == 3 && pa->shape[1] == 4;
  for (int64_t r = 0; same && r < 3; r++)
    for (int64_t c = 0; c < 4; c++) same &= ((const int64_t *)lark_data_ptr(pa))[r * 4 + c] == c * 21 + r * 7 - 20;
  CHECK(same, "pin_memory(a transposed view): contiguous, same values");
  CHECK(lark_is_pinned(pa) == dev && !lark_is_pinned(a), "only the copy is pinned");
  lark_tensor_release(pa);
  lark_tensor_release(at);
  lark_tensor_release(a);

  /* the loader: pin_memory gives the very same batches, in host_alloc memory */
  int64_t N = 19, per = 16;
  lark_tensor *im = lark_empty(4, (int64_t[]){N, 1, 4, 4}, LARK_UINT8, NULL);
  lark_tensor *lab = lark_empty(1, &N, LARK_INT64, NULL);
  for (int64_t i = 0; i < N; i++) {
    for (int k = 0; k < per; k++) data_set(im, i * per + k, (double)((i * 13 + k * 5) % 256));
    data_set(lab, i, (double)(i % 4 + 1));
  }
  for (int mix = 0; mix < 2; mix++) {
    for (int prefetch = 0; prefetch <= 2; prefetch += 2) {
      lark_loader_opts o;
      lark_loader_opts_init(&o);
      o.batch_size = 6;
      o.shuffle = true;
      o.seed = 7;
      o.prefetch = prefetch;
      o.transform.scale = 1.0 / 255;
      o.transform.crop_padding = 1;
      o.transform.hflip = 0.5;
      o.transform.label_base = 1;
      if (mix) {
        o.transform.mixup_alpha = 0.4;
        o.transform.cutmix_alpha = 1;
        o.transform.num_classes = 4;
      }
      lark_loader *plain = lark_loader_new(im, lab, NULL, 0, &o);
      o.pin_memory = true;
      lark_loader *pinned = lark_loader_new(im, lab, NULL, 0, &o);
      CHECK(plain && pinned, "loaders");
      if (!plain || !pinned) {
        lark_loader_free(plain);
        lark_loader_free(pinned);
        continue;
      }
      bool bits = true, host = true, pin = true;
      int64_t nb = 0;
      lark_loader_start(plain, 2);
      lark_loader_start(pinned, 2);
      lark_tensor *x0, *y0, *x1, *y1;
      while (lark_loader_next(plain, &x0, &y0) == 1) {
        if (lark_loader_next(pinned, &x1, &y1) != 1) {
          bits = false;
          lark_tensor_release(x0);
          lark_tensor_release(y0);
          break;
        }
        nb++;
        bits &= x0->storage->nbytes == x1->storage->nbytes && y0->storage->nbytes == y1->storage->nbytes &&
                memcmp(lark_data_ptr(x0), lark_data_ptr(x1), x0->storage->nbytes) == 0 &&
                memcmp(lark_data_ptr(y0), lark_data_ptr(y1), y0->storage->nbytes) == 0;
        host &= x1->storage->host_alloc && y1->storage->host_alloc && !x0->storage->host_alloc;
        pin &= lark_is_pinned(x1) == dev && lark_is_pinned(y1) == dev;
        lark_tensor_release(x0);
        lark_tensor_release(y0);
        lark_tensor_release(x1);
        lark_tensor_release(y1);
      }
      CHECK(nb == 4 && bits, "mix %d prefetch %d: pinned batches equal the ordinary ones bit for bit", mix, prefetch);
      CHECK(host && pin, "mix %d prefetch %d: x and y in host_alloc memory, pinned when the allocator pins", mix,
            prefetch);
      /* batches made ahead and never taken are freed with the loader */
      lark_loader_start(pinned, 3);
      lark_loader_free(plain);
      lark_loader_free(pinned);
    }
  }
  lark_tensor_release(im);
  lark_tensor_release(lab);
  CHECK(lark_bytes_allocated(LARK_CPU) == before, "no pinned bytes left behind");
}

int main(void) {
  int64_t start = lark_bytes_allocated(LARK_CPU);
  rand_seed(1234);
  snprintf(dir, sizeof dir, "/tmp/lark_test_data_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_idx();
  test_digits();
  test_permutation();
  test_transforms();
  test_loader();
  test_pinned();
  CHECK_NO_LEAK(start);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return check_report("test_data");
}
