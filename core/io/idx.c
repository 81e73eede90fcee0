/* idx.c: the IDX reader (MNIST, Fashion-MNIST), plain or gzip-compressed.
 *
 * The format (LeCun's MNIST page): a 4-byte magic 00 00 T D, where T is the dtype byte (0x08 is
 * uint8) and D the number of dims; then D big-endian uint32 sizes; then the row-major data, exactly
 * the product of the sizes times the element size. Nothing may follow.
 *
 * zlib's gzopen/gzread read a .gz file and an uncompressed file alike (gzdirect tells which), so
 * one code path serves both. The data goes straight from gzread into the tensor's storage: the
 * 47 MB MNIST training images cost one memcpy-speed pass, Fashion-MNIST's gzip one inflate pass.
 *
 * Every way a file can be wrong is an error naming the file and the fault: missing or unreadable,
 * a bad magic, an unsupported dtype byte, a header or data shorter than the header promises, bytes
 * after the data, a corrupt gzip stream (zlib's own message). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "../lark.h"

/* What a gzread that returned less than asked means: a zlib error (corrupt or cut-off gzip
 * stream) gives zlib's message and returns true; a clean end of file returns false. */
static bool gz_failed(gzFile f, const char *path, const char *op) {
  int errnum = Z_OK;
  const char *msg = gzerror(f, &errnum);
  if (errnum == Z_OK) return false;
  if (errnum == Z_ERRNO)
    lark_set_error(LARK_ERR_IO, "%s: '%s': read error: %s", op, path, strerror(errno));
  else
    lark_set_error(LARK_ERR_IO, "%s: '%s': corrupt gzip stream (zlib: %s)", op, path, msg && *msg ? msg : "error");
  return true;
}

/* Reads up to n bytes (any size: gzread takes an unsigned int, so in chunks); returns the count
 * read, or -1 after a zlib error (already reported). */
static int64_t gz_read_all(gzFile f, void *buf, int64_t n, const char *path, const char *op) {
  int64_t done = 0;
  while (done < n) {
    int64_t want = n - done > (1 << 30) ? (1 << 30) : n - done;
    int got = gzread(f, (char *)buf + done, (unsigned)want);
    if (got < 0) {
      gz_failed(f, path, op);
      return -1;
    }
    done += got;
    if (got < want) {
      if (gz_failed(f, path, op)) return -1;
      break;
    }
  }
  return done;
}

static const char *idx_dtype_name(int b) {
  switch (b) {
    case 0x08: return "uint8";
    case 0x09: return "int8";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return NULL;
  }
}

lark_tensor *lark_read_idx(const char *path, int64_t max_records) {
  static const char *op = "read_idx";
  if (!path) {
    lark_set_error(LARK_ERR_ARG, "%s: no path given", op);
    return NULL;
  }
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) {
    lark_set_error(LARK_ERR_IO, "%s: cannot open '%s': %s", op, path, errno ? strerror(errno) : "out of memory");
    return NULL;
  }
  gzbuffer(f, 1 << 18); /* fewer, larger reads: the default 8 KB buffer costs ~20% on big files */
  lark_tensor *t = NULL;
  unsigned char magic[4];
  int64_t got = gz_read_all(f, magic, 4, path, op);
  if (got < 0) goto done;
  if (got < 4) {
    lark_set_error(LARK_ERR_IO, "%s: '%s': truncated: %lld bytes, too short for the 4-byte IDX magic", op, path,
                   (long long)got);
    goto done;
  }
  if (magic[0] != 0 || magic[1] != 0) {
    lark_set_error(LARK_ERR_IO,
                   "%s: '%s': bad magic %02x %02x %02x %02x: an IDX file starts with 00 00, a dtype byte (08 for "
                   "uint8) and the number of dims",
                   op, path, magic[0], magic[1], magic[2], magic[3]);
    goto done;
  }
  if (magic[2] != 0x08) {
    const char *name = idx_dtype_name(magic[2]);
    if (name)
      lark_set_error(LARK_ERR_IO, "%s: '%s': dtype byte 0x%02x (%s) is not supported: lark reads uint8 IDX files (0x08)",
                     op, path, magic[2], name);
    else
      lark_set_error(LARK_ERR_IO,
                     "%s: '%s': unknown dtype byte 0x%02x in the magic (IDX knows 08, 09, 0B, 0C, 0D, 0E; lark reads 08, uint8)",
                     op, path, magic[2]);
    goto done;
  }
  int ndim = magic[3];
  if (ndim == 0 || ndim > LARK_MAX_DIMS) {
    lark_set_error(LARK_ERR_IO, "%s: '%s': the magic says %d dims, expected 1 to %d", op, path, ndim, LARK_MAX_DIMS);
    goto done;
  }
  unsigned char raw[4 * LARK_MAX_DIMS];
  got = gz_read_all(f, raw, 4 * ndim, path, op);
  if (got < 0) goto done;
  if (got < 4 * ndim) {
    lark_set_error(LARK_ERR_IO, "%s: '%s': truncated header: %d dims need %d bytes of sizes, the file has %lld", op,
                   path, ndim, 4 * ndim, (long long)got);
    goto done;
  }
  int64_t shape[LARK_MAX_DIMS], total = 1;
  for (int d = 0; d < ndim; d++) {
    const unsigned char *p = raw + 4 * d;
    shape[d] = (int64_t)p[0] << 24 | (int64_t)p[1] << 16 | (int64_t)p[2] << 8 | (int64_t)p[3];
    /* sizes are < 2^32 each; the product may still overflow int64 (a corrupt header) */
    if (shape[d] && total > INT64_MAX / shape[d]) {
      char b[256];
      lark_set_error(LARK_ERR_IO, "%s: '%s': the header's sizes %s overflow 64 bits (a corrupt header?)", op, path,
                     lark_shape_str(ndim, shape, b, sizeof b));
      goto done;
    }
    total *= shape[d];
  }
  int64_t records = shape[0], per_record = records ? total / records : 1;
  for (int d = 1; d < ndim && !records; d++) per_record *= shape[d];
  int64_t keep = max_records >= 0 && max_records < records ? max_records : records;
  int64_t out_shape[LARK_MAX_DIMS];
  memcpy(out_shape, shape, sizeof(int64_t) * (size_t)ndim);
  out_shape[0] = keep;
  t = lark_empty(ndim, out_shape, LARK_UINT8, NULL);
  if (!t) goto done;
  int64_t want = keep * per_record;
  got = gz_read_all(f, lark_data_ptr(t), want, path, op);
  if (got < 0) goto fail;
  if (got < want) {
    char b[256];
    lark_set_error(LARK_ERR_IO, "%s: '%s': truncated: the header promises %lld bytes of data (sizes %s), the file has %lld",
                   op, path, (long long)total, lark_shape_str(ndim, shape, b, sizeof b), (long long)got);
    goto fail;
  }
  if (keep == records) {
    /* all of it read: anything more is garbage (reading on also makes zlib check the gzip CRC) */
    char extra[256];
    int64_t more = gz_read_all(f, extra, sizeof extra, path, op);
    if (more < 0) goto fail;
    if (more > 0) {
      char b[256];
      lark_set_error(LARK_ERR_IO, "%s: '%s': %s%lld bytes of trailing garbage after the %lld bytes of data (sizes %s)", op,
                     path, more == (int64_t)sizeof extra ? "at least " : "", (long long)more, (long long)total,
                     lark_shape_str(ndim, shape, b, sizeof b));
      goto fail;
    }
  }
  goto done;
fail:
  lark_tensor_release(t);
  t = NULL;
done:
  gzclose(f);
  return t;
}
