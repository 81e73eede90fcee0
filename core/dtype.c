/* dtype.c: dtypes, devices and the backend registry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static const struct {
  const char *name;
  size_t size;
} dtype_info[LARK_NDTYPES] = {
    [LARK_FLOAT32] = {"float32", 4}, [LARK_FLOAT64] = {"float64", 8}, [LARK_INT64] = {"int64", 8},
    [LARK_UINT8] = {"uint8", 1},     [LARK_BOOL] = {"bool", 1},
};

size_t lark_dtype_size(lark_dtype dt) { return (unsigned)dt < LARK_NDTYPES ? dtype_info[dt].size : 0; }
const char *lark_dtype_name(lark_dtype dt) { return (unsigned)dt < LARK_NDTYPES ? dtype_info[dt].name : "?"; }
bool lark_dtype_is_float(lark_dtype dt) { return dt == LARK_FLOAT32 || dt == LARK_FLOAT64; }

/* Atomic: a data-loader thread may read it while the main thread sets it. */
static _Atomic int float32_precision = LARK_PRECISION_HIGHEST;
static const char *const precision_names[] = {"highest", "high", "medium"};

int lark_set_float32_precision(const char *name) {
  for (int i = 0; i < 3; i++)
    if (name && strcmp(name, precision_names[i]) == 0) {
      float32_precision = i;
      return 0;
    }
  return lark_set_error(LARK_ERR_ARG, "set_float32_matmul_precision: expected 'highest', 'high' or 'medium', got '%s'",
                        name ? name : "(null)");
}
lark_precision lark_float32_precision(void) { return (lark_precision)float32_precision; }
const char *lark_float32_precision_name(void) { return precision_names[float32_precision]; }

int lark_dtype_from_name(const char *s) {
  static const struct {
    const char *alias;
    lark_dtype dt;
  } aliases[] = {
      {"float32", LARK_FLOAT32}, {"float", LARK_FLOAT32}, {"float64", LARK_FLOAT64}, {"double", LARK_FLOAT64},
      {"int64", LARK_INT64},     {"long", LARK_INT64},    {"uint8", LARK_UINT8},     {"byte", LARK_UINT8},
      {"bool", LARK_BOOL},
  };
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(s, aliases[i].alias) == 0) return aliases[i].dt;
  return -1;
}

/* bool < uint8 < int64 < float32 < float64, as PyTorch orders categories. */
lark_dtype lark_promote(lark_dtype a, lark_dtype b) {
  static const int rank[LARK_NDTYPES] = {
      [LARK_BOOL] = 0, [LARK_UINT8] = 1, [LARK_INT64] = 2, [LARK_FLOAT32] = 3, [LARK_FLOAT64] = 4};
  return rank[a] >= rank[b] ? a : b;
}

bool lark_device_eq(lark_device a, lark_device b) { return a.kind == b.kind && a.index == b.index; }

int lark_device_parse(const char *s, lark_device *out) {
  if (strcmp(s, "cpu") == 0) {
    *out = LARK_DEVICE_CPU;
    return 0;
  }
  if (strncmp(s, "cuda", 4) == 0) {
    long idx = 0;
    if (s[4] == ':') {
      char *end;
      idx = strtol(s + 5, &end, 10);
      if (end == s + 5 || *end || idx < 0 || idx > 127)
        return lark_set_error(LARK_ERR_ARG, "device: '%s' is not a device (expected 'cpu', 'cuda' or 'cuda:N')", s);
    } else if (s[4]) {
      return lark_set_error(LARK_ERR_ARG, "device: '%s' is not a device (expected 'cpu', 'cuda' or 'cuda:N')", s);
    }
    *out = (lark_device){LARK_CUDA, (int8_t)idx};
    return 0;
  }
  return lark_set_error(LARK_ERR_ARG, "device: '%s' is not a device (expected 'cpu', 'cuda' or 'cuda:N')", s);
}

const char *lark_device_str(lark_device d, char *buf, size_t n) {
  if (d.kind == LARK_CPU)
    snprintf(buf, n, "cpu");
  else
    snprintf(buf, n, "cuda:%d", d.index);
  return buf;
}

/* ---- backend registry ----------------------------------------------------------------------- */

static const lark_backend *backends[LARK_NDEVICE_KINDS] = {[LARK_CPU] = &lark_cpu_backend};

#ifdef LARK_WITH_CUDA
int lark_cuda_init(void); /* cuda/backend.cu: registers the CUDA backend if a device answers */
#endif

const lark_backend *lark_backend_for(lark_device dev) {
#ifdef LARK_WITH_CUDA
  if (dev.kind == LARK_CUDA && !backends[LARK_CUDA]) lark_cuda_init();
#endif
  return (unsigned)dev.kind < LARK_NDEVICE_KINDS ? backends[dev.kind] : NULL;
}

void lark_backend_register(lark_device_kind kind, const lark_backend *be) { backends[kind] = be; }

int lark_backend_missing(const char *op, lark_device dev) {
  char buf[32];
  return lark_set_error(LARK_ERR_UNIMPL, "%s: not implemented for %s", op, lark_device_str(dev, buf, sizeof buf));
}

#ifndef LARK_WITH_CUDA
/* Weak, so that the emulated backend of spec/cuda_emu can stand in for a GPU in its tests. */
__attribute__((weak)) bool lark_cuda_is_available(void) { return false; }
__attribute__((weak)) int lark_cuda_device_count(void) { return 0; }
int lark_cuda_synchronize(void) { return 0; }
#endif
