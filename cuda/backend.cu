/*
 * backend.cu: the CUDA backend's entry points: device discovery, errors, device memory, host
 * transfers, synchronisation, and the kernel table core calls through (core/backend.h).
 *
 * core/dtype.c calls lark_cuda_init the first time a CUDA device is used. It asks the runtime once
 * how many devices there are; when one answers it registers the table below, otherwise it leaves a
 * message saying why ("cuda: no CUDA device is available (cudaGetDeviceCount: ...)") and core
 * reports the device as unavailable. Nothing here aborts: a build with CUDA runs fine on a machine
 * without a GPU or without a driver.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cuda.h"

/* lark_device.index is an int8_t: at most 128 ordinals can be named. */
#define MAX_DEVICES 128

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int device_count;                /* devices that answered (0 when none or no driver) */
static cudaError_t probe_error;         /* what cudaGetDeviceCount returned */
static lark_backend cuda_backend;       /* filled by probe(), registered by lark_cuda_init */

/* Per-device state, created on first use. */
static int device_used[MAX_DEVICES];    /* 1 once a context exists (synchronize visits these) */
static int device_sm_count[MAX_DEVICES];
static cublasHandle_t cublas_handles[MAX_DEVICES];
static pthread_mutex_t cublas_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- errors --------------------------------------------------------------------------------- */

int lark_cuda_check(cudaError_t err, const char *op, const char *what) {
  if (err == cudaSuccess) return 0;
  (void)cudaGetLastError(); /* clear the slot, or the next launch check reports this error again */
  return lark_set_error(LARK_ERR_BACKEND, "%s: %s: %s", op, what, cudaGetErrorString(err));
}

int lark_cuda_check_cublas(cublasStatus_t st, const char *op, const char *what) {
  if (st == CUBLAS_STATUS_SUCCESS) return 0;
  return lark_set_error(LARK_ERR_BACKEND, "%s: %s: %s", op, what, cublasGetStatusString(st));
}

/* ---- devices -------------------------------------------------------------------------------- */

static void fill_table(void);

static void probe(void) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  probe_error = err;
  device_count = n < 0 ? 0 : n > MAX_DEVICES ? MAX_DEVICES : n;
  fill_table();
}

extern "C" int lark_cuda_init(void) {
  pthread_once(&probe_once, probe);
  if (device_count > 0) {
    lark_backend_register(LARK_CUDA, &cuda_backend);
    return 0;
  }
  if (probe_error != cudaSuccess)
    return lark_set_error(LARK_ERR_DEVICE, "cuda: no CUDA device is available (cudaGetDeviceCount: %s)",
                          cudaGetErrorString(probe_error));
  return lark_set_error(LARK_ERR_DEVICE, "cuda: no CUDA device is available (cudaGetDeviceCount found none)");
}

extern "C" bool lark_cuda_is_available(void) {
  pthread_once(&probe_once, probe);
  return device_count > 0;
}

extern "C" int lark_cuda_device_count(void) {
  pthread_once(&probe_once, probe);
  return device_count;
}

int lark_cuda_set_device(lark_device dev, const char *op) {
  pthread_once(&probe_once, probe);
  if (dev.kind != LARK_CUDA || dev.index < 0 || dev.index >= device_count) {
    char buf[32];
    return lark_set_error(LARK_ERR_DEVICE, "%s: device %s is not available (%d CUDA device%s found)", op,
                          lark_device_str(dev, buf, sizeof buf), device_count, device_count == 1 ? "" : "s");
  }
  if (lark_cuda_check(cudaSetDevice(dev.index), op, "cudaSetDevice")) return lark_error_code();
  __atomic_store_n(&device_used[dev.index], 1, __ATOMIC_RELAXED);
  return 0;
}

unsigned lark_cuda_grid(int64_t n, int threads) {
  /* enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest */
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < MAX_DEVICES) {
    sms = __atomic_load_n(&device_sm_count[dev], __ATOMIC_RELAXED);
    if (sms <= 0 && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && sms > 0)
      __atomic_store_n(&device_sm_count[dev], sms, __ATOMIC_RELAXED);
  }
  (void)cudaGetLastError();
  int64_t cap = sms > 0 ? (int64_t)sms * 32 : 4096;
  int64_t blocks = n / threads + (n % threads != 0);
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return (unsigned)blocks;
}

int lark_cuda_cublas(lark_device dev, const char *op, cublasHandle_t *handle) {
  if (lark_cuda_set_device(dev, op)) return lark_error_code();
  pthread_mutex_lock(&cublas_lock);
  int rc = 0;
  if (!cublas_handles[dev.index]) {
    cublasHandle_t h = NULL;
    rc = lark_cuda_check_cublas(cublasCreate(&h), op, "cublasCreate");
    /* the legacy default stream, like every kernel here; full fp32 (no TF32) for float32 */
    if (!rc) rc = lark_cuda_check_cublas(cublasSetStream(h, 0), op, "cublasSetStream");
    if (!rc) rc = lark_cuda_check_cublas(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), op, "cublasSetMathMode");
    if (!rc) cublas_handles[dev.index] = h;
    else if (h) cublasDestroy(h);
  }
  *handle = cublas_handles[dev.index];
  pthread_mutex_unlock(&cublas_lock);
  return rc;
}

extern "C" int lark_cuda_synchronize(void) {
  pthread_once(&probe_once, probe);
  if (device_count == 0) return 0; /* nothing can be in flight */
  int current = 0;
  if (lark_cuda_check(cudaGetDevice(&current), "synchronize", "cudaGetDevice")) return lark_error_code();
  int rc = 0;
  for (int d = 0; d < device_count && !rc; d++) {
    if (!__atomic_load_n(&device_used[d], __ATOMIC_RELAXED)) continue; /* never touched: no context */
    char what[64];
    snprintf(what, sizeof what, "cudaDeviceSynchronize on cuda:%d", d);
    rc = lark_cuda_check(cudaSetDevice(d), "synchronize", "cudaSetDevice");
    if (!rc) rc = lark_cuda_check(cudaDeviceSynchronize(), "synchronize", what);
  }
  (void)cudaSetDevice(current);
  return rc;
}

/* ---- device memory -------------------------------------------------------------------------- */

/* Plain cudaMalloc / cudaFree for now. The caching allocator replaces exactly these two functions
 * (same contract: the current device is already set, OOM is LARK_ERR_NOMEM with the size in GB), so
 * the table entries and everything above them stay as they are. */
static int device_alloc(int device, size_t nbytes, void **ptr) {
  cudaError_t err = cudaMalloc(ptr, nbytes);
  if (err == cudaSuccess) return 0;
  *ptr = NULL;
  (void)cudaGetLastError();
  if (err == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
    return lark_set_error(LARK_ERR_NOMEM, "empty: cannot allocate %.3g GB on cuda:%d (out of memory: %.3g GB free of %.3g GB)",
                          (double)nbytes / 1e9, device, (double)free_b / 1e9, (double)total_b / 1e9);
  }
  return lark_set_error(LARK_ERR_BACKEND, "empty: cudaMalloc of %.3g GB on cuda:%d failed: %s", (double)nbytes / 1e9,
                        device, cudaGetErrorString(err));
}

static void device_free(int device, void *ptr) {
  /* Errors are dropped: free cannot report them, and at exit the runtime may already be gone
   * (cudaErrorCudartUnloading), which is harmless. */
  if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

static int cuda_malloc(lark_device dev, size_t nbytes, void **ptr) {
  *ptr = NULL;
  if (nbytes == 0) return 0;
  if (lark_cuda_set_device(dev, "empty")) return lark_error_code();
  return device_alloc(dev.index, nbytes, ptr);
}

static void cuda_free(lark_device dev, void *ptr) {
  if (!ptr || dev.index < 0 || dev.index >= device_count) return;
  if (cudaSetDevice(dev.index) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  device_free(dev.index, ptr);
}

static int cuda_memcpy_host(lark_device dev, void *dst, const void *src, size_t nbytes, int to_device) {
  if (nbytes == 0) return 0;
  if (lark_cuda_set_device(dev, "copy")) return lark_error_code();
  char what[64];
  snprintf(what, sizeof what, to_device ? "cudaMemcpy host -> cuda:%d" : "cudaMemcpy cuda:%d -> host", dev.index);
  /* synchronous on the legacy default stream: a device -> host copy waits for every kernel before it */
  return lark_cuda_check(cudaMemcpy(dst, src, nbytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost),
                         "copy", what);
}

/* ---- the kernel table ----------------------------------------------------------------------- */

/* Filled field by field (C++17 has no designated initialisers) so that new fields of lark_backend
 * stay NULL, which core reports as "not implemented for cuda". */
static void fill_table(void) {
  memset(&cuda_backend, 0, sizeof cuda_backend);
  cuda_backend.name = "cuda";
  cuda_backend.malloc = cuda_malloc;
  cuda_backend.free = cuda_free;
  cuda_backend.memcpy_host = cuda_memcpy_host;
  cuda_backend.copy = lark_cuda_copy;
  cuda_backend.fill = lark_cuda_fill;
  cuda_backend.binary = lark_cuda_binary;
  cuda_backend.gemm = lark_cuda_gemm;
  /* unary, clamp, where: later issues */
}
