/* test_h5.c: core/io/h5.c through lark.h alone: bit-exact round trips of every dtype (0-d, empty
 * and strided views included), groups and creation order, attributes, compression, atomic files
 * (commit, abort, stale temporaries), and errors that name the file and the problem while HDF5
 * prints nothing on stderr, in the main thread and in a second one. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char dir[64];

static const char *path_of(const char *name) {
  static char buf[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

static bool exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* same dtype, shape and bytes */
static bool same_bytes(const lark_tensor *a, const lark_tensor *b) {
  if (!a || !b || a->dtype != b->dtype || a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  lark_tensor *ca = lark_contiguous(a), *cb = lark_contiguous(b);
  bool same = ca && cb &&
              (lark_numel(ca) == 0 ||
               memcmp(lark_data_ptr(ca), lark_data_ptr(cb), (size_t)lark_numel(ca) * lark_dtype_size(a->dtype)) == 0);
  lark_tensor_release(ca);
  lark_tensor_release(cb);
  return same;
}

/* A tensor of dtype dt and shape (ndim, shape) filled with awkward values for its dtype. */
static lark_tensor *sample(lark_dtype dt, int ndim, const int64_t *shape) {
  lark_tensor *t = lark_empty(ndim, shape, dt, NULL);
  if (!t) return NULL;
  int64_t n = lark_numel(t);
  uint64_t s = 88172645463325252ull;
  for (int64_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    switch (dt) {
    case LARK_FLOAT32: {
      uint32_t bits = (uint32_t)s;
      memcpy((float *)lark_data_ptr(t) + i, &bits, 4); /* any bit pattern: NaNs, denormals, -0 */
      break;
    }
    case LARK_FLOAT64: memcpy((double *)lark_data_ptr(t) + i, &s, 8); break;
    case LARK_INT64: ((int64_t *)lark_data_ptr(t))[i] = (int64_t)s; break;
    case LARK_UINT8: ((uint8_t *)lark_data_ptr(t))[i] = (uint8_t)s; break;
    case LARK_BOOL: ((bool *)lark_data_ptr(t))[i] = s & 1; break;
    default: break;
    }
  }
  return t;
}

static void test_round_trip(void) {
  const char *p = path_of("rt.h5");
  lark_h5 *f = lark_h5_open(p, LARK_H5_WRITE, NULL);
  CHECK(f != NULL, "create %s", p);
  if (!f) return;
  const int64_t shape[3] = {3, 4, 5}, empty[2] = {0, 7};
  lark_tensor *full[LARK_NDTYPES], *scalar[LARK_NDTYPES], *none[LARK_NDTYPES];
  char name[64];
  for (int dt = 0; dt < LARK_NDTYPES; dt++) {
    full[dt] = sample((lark_dtype)dt, 3, shape);
    scalar[dt] = sample((lark_dtype)dt, 0, NULL);
    none[dt] = lark_empty(2, empty, (lark_dtype)dt, NULL);
    snprintf(name, sizeof name, "full/%s.x", lark_dtype_name((lark_dtype)dt));
    CHECK(lark_h5_write(f, name, full[dt], NULL) == 0, "write %s", name);
    snprintf(name, sizeof name, "scalar/%s", lark_dtype_name((lark_dtype)dt));
    CHECK(lark_h5_write(f, name, scalar[dt], NULL) == 0, "write %s", name);
    snprintf(name, sizeof name, "empty/%s", lark_dtype_name((lark_dtype)dt));
    CHECK(lark_h5_write(f, name, none[dt], NULL) == 0, "write %s", name);
  }
  /* a transposed view is written in its logical order; compression is lossless */
  lark_tensor *tr = lark_transpose(full[LARK_FLOAT64], 0, 2);
  CHECK(lark_h5_write(f, "strided", tr, NULL) == 0, "write strided");
  lark_h5_write_opts wo;
  lark_h5_write_opts_init(&wo);
  wo.compress = 1;
  wo.level = 9;
  CHECK(lark_h5_write(f, "deflated", full[LARK_FLOAT32], &wo) == 0, "write deflated");
  CHECK(lark_h5_close(f) == 0, "close");

  f = lark_h5_open(p, LARK_H5_READ, NULL);
  CHECK(f != NULL, "open %s", p);
  if (!f) return;
  for (int dt = 0; dt < LARK_NDTYPES; dt++) {
    const char *dn = lark_dtype_name((lark_dtype)dt);
    snprintf(name, sizeof name, "full/%s.x", dn);
    lark_tensor *t = lark_h5_read(f, name);
    CHECK(same_bytes(t, full[dt]), "%s round trip", name);
    lark_tensor_release(t);
    snprintf(name, sizeof name, "scalar/%s", dn);
    t = lark_h5_read(f, name);
    CHECK(t && t->ndim == 0 && same_bytes(t, scalar[dt]), "%s round trip", name);
    lark_tensor_release(t);
    snprintf(name, sizeof name, "empty/%s", dn);
    t = lark_h5_read(f, name);
    CHECK(t && same_bytes(t, none[dt]), "%s round trip", name);
    lark_tensor_release(t);
    lark_dtype got;
    int nd;
    int64_t sh[LARK_MAX_DIMS];
    snprintf(name, sizeof name, "full/%s.x", dn);
    CHECK(lark_h5_dataset_info(f, name, &got, &nd, sh) == 0 && got == (lark_dtype)dt && nd == 3 && sh[2] == 5,
          "info %s", name);
    lark_tensor_release(full[dt]);
    lark_tensor_release(scalar[dt]);
    lark_tensor_release(none[dt]);
  }
  lark_tensor *t = lark_h5_read(f, "strided");
  CHECK(t && same_bytes(t, tr), "strided round trip");
  lark_tensor_release(t);
  lark_tensor_release(tr);
  t = lark_h5_read(f, "deflated");
  lark_tensor *ref = lark_h5_read(f, "full/float32.x");
  CHECK(t && same_bytes(t, ref), "deflated round trip");
  lark_tensor_release(t);
  lark_tensor_release(ref);
  CHECK(lark_h5_close(f) == 0, "close");
}

static void test_groups_and_attrs(void) {
  const char *p = path_of("g.h5");
  lark_h5 *f = lark_h5_open(p, LARK_H5_WRITE, NULL);
  CHECK(f != NULL, "create");
  if (!f) return;
  const char *names[] = {"stem.0.conv.weight", "head.bias", "a", "stages.0.blocks.1.pw1.bn.weight"};
  lark_tensor *one = lark_ones(1, (int64_t[]){2}, LARK_FLOAT32, NULL);
  char full[128];
  for (int i = 0; i < 4; i++) {
    snprintf(full, sizeof full, "model_state_dict/%s", names[i]);
    CHECK(lark_h5_write(f, full, one, NULL) == 0, "write %s", full);
  }
  CHECK(lark_h5_create_group(f, "x/y/z") == 0, "create_group");
  CHECK(lark_h5_set_attr_string(f, "/", "format", "lark-checkpoint") == 0, "attr");
  CHECK(lark_h5_set_attr_int(f, NULL, "epoch", INT64_MIN) == 0, "attr");
  CHECK(lark_h5_set_attr_float(f, "", "lr", 0.1) == 0, "attr");
  CHECK(lark_h5_set_attr_bool(f, "x/y", "flag", true) == 0, "attr");
  CHECK(lark_h5_set_attr_string(f, "model_state_dict/a", "dtype", "bfloat16") == 0, "attr on a dataset");
  CHECK(lark_h5_set_attr_int(f, "/", "epoch", 42) == 0, "replace attr");
  CHECK(lark_h5_close(f) == 0, "close");

  f = lark_h5_open(p, LARK_H5_APPEND, NULL);
  CHECK(f != NULL, "open a");
  if (!f) return;
  char **keys;
  int64_t n;
  CHECK(lark_h5_keys(f, "model_state_dict", &keys, &n) == 0 && n == 4, "keys");
  for (int64_t i = 0; i < n && i < 4; i++) CHECK(strcmp(keys[i], names[i]) == 0, "key %lld: %s", (long long)i, keys[i]);
  lark_h5_free_names(keys, n);
  CHECK(lark_h5_keys(f, "/", &keys, &n) == 0 && n == 2 && strcmp(keys[0], "model_state_dict") == 0 &&
            strcmp(keys[1], "x") == 0, "root keys");
  lark_h5_free_names(keys, n);
  CHECK(lark_h5_kind_of(f, "x/y/z") == LARK_H5_GROUP, "kind group");
  CHECK(lark_h5_kind_of(f, "model_state_dict/a") == LARK_H5_DATASET, "kind dataset");
  CHECK(lark_h5_kind_of(f, "x/nothing/deeper") == LARK_H5_NONE, "kind none (missing parent)");
  lark_h5_attr a;
  CHECK(lark_h5_get_attr(f, "/", "format", &a) == 1 && a.type == LARK_H5_ATTR_STRING && strcmp(a.s, "lark-checkpoint") == 0,
        "string attr");
  lark_h5_attr_free(&a);
  CHECK(lark_h5_get_attr(f, "/", "epoch", &a) == 1 && a.type == LARK_H5_ATTR_INT && a.i[0] == 42 && !a.is_array, "int attr");
  lark_h5_attr_free(&a);
  CHECK(lark_h5_get_attr(f, "/", "lr", &a) == 1 && a.type == LARK_H5_ATTR_FLOAT && a.d[0] == 0.1, "float attr");
  lark_h5_attr_free(&a);
  CHECK(lark_h5_get_attr(f, "x/y", "flag", &a) == 1 && a.type == LARK_H5_ATTR_BOOL && a.i[0] == 1, "bool attr");
  lark_h5_attr_free(&a);
  CHECK(lark_h5_get_attr(f, "/", "missing", &a) == 0, "missing attr");
  CHECK(lark_h5_attr_names(f, "/", &keys, &n) == 0 && n == 3 && strcmp(keys[0], "format") == 0 &&
            strcmp(keys[1], "lr") == 0 && strcmp(keys[2], "epoch") == 0, "attr names in creation order");
  lark_h5_free_names(keys, n);
  /* writing a name again replaces the dataset */
  lark_tensor *two = lark_full(2, (int64_t[]){2, 2}, 2.0, LARK_INT64, NULL);
  CHECK(lark_h5_write(f, "model_state_dict/a", two, NULL) == 0, "replace");
  lark_tensor *t = lark_h5_read(f, "model_state_dict/a");
  CHECK(same_bytes(t, two), "replaced");
  lark_tensor_release(t);
  lark_tensor_release(two);
  lark_tensor_release(one);
  CHECK(lark_h5_close(f) == 0, "close");
}

/* fn fails with a message holding want */
#define EXPECT_FAIL(call, want)                                                                   \
  do {                                                                                            \
    lark_clear_error();                                                                           \
    bool failed_ = (call);                                                                        \
    CHECK(failed_, "%s: expected a failure", #call);                                              \
    CHECK(error_has(want), "%s: error '%s' lacks '%s'", #call, lark_error(), want);               \
  } while (0)

static void test_errors(void) {
  EXPECT_FAIL(lark_h5_open(path_of("missing.h5"), LARK_H5_READ, NULL) == NULL, "missing.h5': no such file");
  FILE *fp = fopen(path_of("text.h5"), "w");
  fputs("not hdf5\n", fp);
  fclose(fp);
  EXPECT_FAIL(lark_h5_open(path_of("text.h5"), LARK_H5_READ, NULL) == NULL, "is not an HDF5 file");
  EXPECT_FAIL(lark_h5_open("/nonexistent/dir/x.h5", LARK_H5_WRITE, NULL) == NULL, "the directory '/nonexistent/dir' does not exist");
  /* truncated: keep the first half of a real file */
  const char *p = path_of("trunc.h5");
  lark_h5 *f = lark_h5_open(p, LARK_H5_WRITE, NULL);
  lark_tensor *big = lark_zeros(1, (int64_t[]){4096}, LARK_FLOAT64, NULL);
  CHECK(f && lark_h5_write(f, "x", big, NULL) == 0 && lark_h5_close(f) == 0, "write");
  CHECK(truncate(p, file_size(p) / 2) == 0, "truncate");
  EXPECT_FAIL(lark_h5_open(p, LARK_H5_READ, NULL) == NULL, "truncated, corrupt");

  p = path_of("errors.h5");
  f = lark_h5_open(p, LARK_H5_WRITE, NULL);
  CHECK(f != NULL, "create");
  if (!f) return;
  CHECK(lark_h5_write(f, "sd/w.1", big, NULL) == 0 && lark_h5_write(f, "sd/w.2", big, NULL) == 0, "write");
  EXPECT_FAIL(lark_h5_read(f, "sd/w.3") == NULL, "no dataset 'sd/w.3' (sd holds 'w.1', 'w.2')");
  EXPECT_FAIL(lark_h5_read(f, "sd") == NULL, "'sd' is a group, not a dataset");
  EXPECT_FAIL(lark_h5_read(f, "a//b") == NULL, "bad name 'a//b'");
  EXPECT_FAIL(lark_h5_write(f, "sd/w.1/x", big, NULL) != 0, "'sd/w.1' exists and is not a group");
  EXPECT_FAIL(lark_h5_write(f, "sd", big, NULL) != 0, "exists and is a group");
  EXPECT_FAIL(lark_h5_read(f, "") == NULL, "expected a dataset name");
  char **keys;
  int64_t n;
  EXPECT_FAIL(lark_h5_keys(f, "nope", &keys, &n) != 0, "no group 'nope'");
  lark_h5_write_opts wo;
  lark_h5_write_opts_init(&wo);
  wo.level = 10;
  EXPECT_FAIL(lark_h5_write(f, "y", big, &wo) != 0, "deflate level 10 is out of range");
  CHECK(strstr(lark_error(), p) != NULL, "errors name the file: %s", lark_error());
  CHECK(lark_h5_close(f) == 0, "close");
  f = lark_h5_open(p, LARK_H5_READ, NULL);
  EXPECT_FAIL(lark_h5_write(f, "y", big, NULL) != 0, "is open read-only");
  lark_h5_close(f);
  lark_tensor_release(big);
}

static void test_atomic(void) {
  const char *p = path_of("atomic.h5");
  lark_h5_open_opts o;
  lark_h5_open_opts_init(&o);
  o.atomic = true;
  lark_tensor *v1 = lark_full(1, (int64_t[]){3}, 1.0, LARK_FLOAT32, NULL);
  lark_tensor *v2 = lark_full(1, (int64_t[]){3}, 2.0, LARK_FLOAT32, NULL);
  lark_h5 *f = lark_h5_open(p, LARK_H5_WRITE, &o);
  CHECK(f && lark_h5_write(f, "v", v1, NULL) == 0, "atomic write");
  CHECK(!exists(p), "nothing at the path before the commit");
  CHECK(lark_h5_close(f) == 0, "commit");
  CHECK(exists(p), "committed");
  char tmp[300], tmp2[300];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld.2", p, (long)getpid()); /* this process's second atomic file */
  snprintf(tmp2, sizeof tmp2, "%s.tmp.%ld.3", p, (long)getpid());
  f = lark_h5_open(p, LARK_H5_WRITE, &o);
  CHECK(f && lark_h5_write(f, "v", v2, NULL) == 0, "second write");
  CHECK(exists(tmp), "the temporary %s exists while writing", tmp);
  /* a second atomic write of the same path in the same process has a temporary of its own */
  lark_h5 *g = lark_h5_open(p, LARK_H5_WRITE, &o);
  CHECK(g && exists(tmp) && exists(tmp2), "two temporaries");
  CHECK(lark_h5_abort(g) == 0 && !exists(tmp2), "abort the second");
  CHECK(lark_h5_abort(f) == 0, "abort");
  CHECK(!exists(tmp), "abort removed the temporary");
  f = lark_h5_open(p, LARK_H5_READ, NULL);
  lark_tensor *t = f ? lark_h5_read(f, "v") : NULL;
  CHECK(same_bytes(t, v1), "the previous file is intact after an abort");
  lark_tensor_release(t);
  lark_h5_close(f);
  /* a dead writer's temporary goes, a live one's stays */
  char dead[300], dead2[300], live[300];
  snprintf(dead, sizeof dead, "%s.tmp.999999999", p);
  snprintf(dead2, sizeof dead2, "%s.tmp.999999998.7", p);
  snprintf(live, sizeof live, "%s.tmp.1", p);
  FILE *fp = fopen(dead, "w");
  fclose(fp);
  fp = fopen(dead2, "w");
  fclose(fp);
  fp = fopen(live, "w");
  fclose(fp);
  f = lark_h5_open(p, LARK_H5_WRITE, &o);
  CHECK(f && lark_h5_write(f, "v", v2, NULL) == 0 && lark_h5_close(f) == 0, "third write");
  CHECK(!exists(dead) && !exists(dead2), "stale temporaries removed");
  CHECK(exists(live), "live process's temporary kept");
  unlink(live);
  f = lark_h5_open(p, LARK_H5_READ, NULL);
  t = f ? lark_h5_read(f, "v") : NULL;
  CHECK(same_bytes(t, v2), "committed the new content");
  lark_tensor_release(t);
  lark_h5_close(f);
  lark_h5_open_opts_init(&o);
  o.atomic = true;
  EXPECT_FAIL(lark_h5_open(p, LARK_H5_APPEND, &o) == NULL, "atomic files are written whole");
  lark_tensor_release(v1);
  lark_tensor_release(v2);
}

/* Failing calls in this thread; returns how many failed as expected. */
static void *failing_calls(void *arg) {
  int *ok = arg;
  *ok = 0;
  lark_h5 *f = lark_h5_open(path_of("missing2.h5"), LARK_H5_READ, NULL);
  *ok += f == NULL && error_has("no such file");
  f = lark_h5_open(path_of("rt.h5"), LARK_H5_READ, NULL);
  if (f) {
    *ok += lark_h5_read(f, "nothing/here") == NULL;
    lark_h5_attr a;
    *ok += lark_h5_get_attr(f, "nope", "x", &a) < 0;
    lark_h5_close(f);
  }
  *ok += lark_h5_open(path_of("trunc.h5"), LARK_H5_READ, NULL) == NULL;
  return NULL;
}

static void test_quiet_stderr(void) {
  /* HDF5's error printing is per thread: both threads must print nothing */
  char log[256];
  snprintf(log, sizeof log, "%s", path_of("stderr.txt"));
  fflush(stderr);
  int saved = dup(2);
  int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  close(fd);
  int ok_main = 0, ok_thread = 0;
  failing_calls(&ok_main);
  pthread_t th;
  pthread_create(&th, NULL, failing_calls, &ok_thread);
  pthread_join(th, NULL);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  CHECK(ok_main == 4 && ok_thread == 4, "failures seen: main %d, thread %d (expected 4)", ok_main, ok_thread);
  CHECK(file_size(log) == 0, "HDF5 printed %ld bytes on stderr", file_size(log));
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/lark_test_h5_XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  int64_t start = lark_bytes_allocated(LARK_CPU);
  test_round_trip();
  test_groups_and_attrs();
  test_errors();
  test_atomic();
  test_quiet_stderr();
  CHECK_NO_LEAK(start);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return check_report("test_h5");
}
