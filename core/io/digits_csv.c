/* digits_csv.c: the reader of sklearn's digits.csv.gz (the UCI Optdigits test set, 1797 images).
 *
 * Each line holds 65 comma-separated integers: 64 pixels of an 8x8 image, row-major, in 0..16, then
 * the class 0..9. The file is gzip-compressed in sklearn, plain if someone unpacked it; gzgets reads
 * both. Images come back as float32 (N, 8, 8) divided by 16 (so in 0..1), labels as int64 with the
 * class offset by `label_base` (1 for lark's 1-based Lua surface). A malformed line is an error
 * naming the file, the line number and what was wrong; blank lines are skipped. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../lark.h"

#define DIGITS_PIXELS 64
#define DIGITS_LINE_MAX 4096 /* a valid line is at most 65 * 3 = 195 bytes */

/* Parses one line into px[64] and *label; returns 0 or an error naming path and line. */
static int parse_line(char *s, const char *path, int64_t line, float *px, int64_t *label) {
  static const char *op = "read_digits_csv";
  int field = 0;
  char *p = s;
  for (;;) {
    while (*p == ' ' || *p == '\t') p++;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    char *q = end;
    while (*q == ' ' || *q == '\t') q++;
    if (end == p || errno || (*q != ',' && *q != '\0')) {
      char tok[24];
      size_t n = strcspn(p, ",");
      if (n > sizeof tok - 1) n = sizeof tok - 1;
      memcpy(tok, p, n);
      tok[n] = '\0';
      return lark_set_error(LARK_ERR_IO, "%s: '%s' line %lld: field %d is '%s', expected an integer", op, path,
                            (long long)line, field + 1, tok);
    }
    if (field < DIGITS_PIXELS) {
      if (v < 0 || v > 16)
        return lark_set_error(LARK_ERR_IO, "%s: '%s' line %lld: pixel %d is %ld, expected 0..16", op, path,
                              (long long)line, field + 1, v);
      px[field] = (float)v / 16.0f;
    } else if (field == DIGITS_PIXELS) {
      if (v < 0 || v > 9)
        return lark_set_error(LARK_ERR_IO, "%s: '%s' line %lld: label %ld out of range, expected 0..9", op, path,
                              (long long)line, v);
      *label = v;
    }
    field++;
    if (*q == '\0') break;
    p = q + 1;
  }
  if (field != DIGITS_PIXELS + 1)
    return lark_set_error(LARK_ERR_IO,
                          "%s: '%s' line %lld: expected 65 comma-separated integers (64 pixels and a label), got %d",
                          op, path, (long long)line, field);
  return 0;
}

int lark_read_digits_csv(const char *path, int64_t label_base, lark_tensor **images, lark_tensor **labels) {
  static const char *op = "read_digits_csv";
  *images = *labels = NULL;
  if (!path) return lark_set_error(LARK_ERR_ARG, "%s: no path given", op);
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) return lark_set_error(LARK_ERR_IO, "%s: cannot open '%s': %s", op, path, errno ? strerror(errno) : "out of memory");
  float *px = NULL;
  int64_t *lab = NULL, n = 0, cap = 0, line = 0;
  char buf[DIGITS_LINE_MAX];
  int rc = 0;
  while (gzgets(f, buf, sizeof buf)) {
    line++;
    size_t len = strlen(buf);
    if (len == sizeof buf - 1 && buf[len - 1] != '\n' && !gzeof(f)) {
      rc = lark_set_error(LARK_ERR_IO, "%s: '%s' line %lld: longer than %d bytes, not a digits line", op, path,
                          (long long)line, DIGITS_LINE_MAX - 1);
      goto out;
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ')) buf[--len] = '\0';
    if (len == 0) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 2048;
      float *np = realloc(px, sizeof(float) * DIGITS_PIXELS * (size_t)cap);
      if (np) px = np;
      int64_t *nl = realloc(lab, sizeof(int64_t) * (size_t)cap);
      if (nl) lab = nl;
      if (!np || !nl) {
        rc = lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
        goto out;
      }
    }
    rc = parse_line(buf, path, line, px + DIGITS_PIXELS * n, lab + n);
    if (rc) goto out;
    lab[n] += label_base;
    n++;
  }
  int errnum = Z_OK;
  const char *zmsg = gzerror(f, &errnum);
  if (errnum != Z_OK) {
    rc = lark_set_error(LARK_ERR_IO, "%s: '%s': corrupt gzip stream after line %lld (zlib: %s)", op, path,
                        (long long)line, zmsg);
    goto out;
  }
  if (n == 0) {
    rc = lark_set_error(LARK_ERR_IO, "%s: '%s': no data lines (expected lines of 64 pixels and a label)", op, path);
    goto out;
  }
  *images = lark_empty(3, (int64_t[]){n, 8, 8}, LARK_FLOAT32, NULL);
  *labels = *images ? lark_empty(1, &n, LARK_INT64, NULL) : NULL;
  if (!*labels) {
    lark_tensor_release(*images);
    *images = NULL;
    rc = lark_error_code() ? lark_error_code() : LARK_ERR_NOMEM;
    goto out;
  }
  memcpy(lark_data_ptr(*images), px, sizeof(float) * DIGITS_PIXELS * (size_t)n);
  memcpy(lark_data_ptr(*labels), lab, sizeof(int64_t) * (size_t)n);
out:
  free(px);
  free(lab);
  gzclose(f);
  return rc;
}
