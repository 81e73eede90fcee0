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
#include <stdlib.h>
#include <string.h>

#include "caching_alloc.h"
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
static void init_memory(void);

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
  if (device_count > 0) init_memory();
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

/* Device memory comes from the caching allocator of core/caching_alloc.c over cudaMalloc and
 * cudaFree: a freed tensor's block goes back to the allocator's cache and the next allocation of a
 * fitting size takes it without calling the driver (cudaFree would also wait for the whole device).
 *
 * Why a block may be reused as soon as the host frees it, while kernels reading it may still be
 * queued: every kernel, cuBLAS call and copy of this backend goes to the legacy default stream of
 * the tensor's device (cuda.h), one stream per device shared by all host threads, so whatever the
 * block's next owner queues runs after the work queued by its previous owner has finished. Work on
 * a second stream would break this: such a backend must record an event on the stream and make the
 * block wait for it before reuse (PyTorch's record_stream). Host transfers use synchronous
 * cudaMemcpy, so no host buffer outlives a copy either.
 *
 * Out of memory: the allocator runs lark_set_oom_handler's handler (the Lua binding's full garbage
 * collection), releases every cached block of the device and retries once; then the error reads
 * "cuda: out of memory allocating N bytes (X MiB) on cuda:0 (Y MiB allocated, Z MiB cached; the
 * device has F MiB free of T MiB)". */
static lark_caching_alloc device_cache; /* set up by probe() once a device answers */

static int raw_alloc(void *ud, int device, size_t nbytes, void **ptr) {
  *ptr = NULL;
  /* the device is set here, not only by cuda_malloc: the out-of-memory handler runs between two
   * tries and may free tensors of other devices */
  if (lark_cuda_check(cudaSetDevice(device), "empty", "cudaSetDevice")) return lark_error_code();
  cudaError_t err = cudaMalloc(ptr, nbytes);
  if (err == cudaSuccess) return 0;
  *ptr = NULL;
  (void)cudaGetLastError();
  if (err == cudaErrorMemoryAllocation) return LARK_ERR_NOMEM;
  return lark_set_error(LARK_ERR_BACKEND, "empty: cudaMalloc of %zu bytes on cuda:%d failed: %s", nbytes, device,
                        cudaGetErrorString(err));
}

static void raw_free(void *ud, int device, void *ptr) {
  /* Errors are dropped: free cannot report them, and at exit the runtime may already be gone
   * (cudaErrorCudartUnloading), which is harmless. */
  if (cudaSetDevice(device) != cudaSuccess || cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

static void describe_device(void *ud, int device, char *buf, size_t n) {
  size_t free_b = 0, total_b = 0;
  if (cudaSetDevice(device) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  snprintf(buf, n, "; the device has %.2f MiB free of %.2f MiB", (double)free_b / 1048576.0,
           (double)total_b / 1048576.0);
}

static bool memory_ready;

static void init_memory(void) {
  lark_caching_alloc_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.name = "cuda";
  cfg.raw_alloc = raw_alloc;
  cfg.raw_free = raw_free;
  cfg.reclaim = NULL; /* lark_run_oom_handler: the Lua binding's collection */
  cfg.describe = describe_device;
  memory_ready = lark_caching_alloc_init(&device_cache, &cfg) == 0;
  if (!memory_ready) lark_clear_error(); /* cuda_malloc reports it when it matters */
}

static int cuda_malloc(lark_device dev, size_t nbytes, void **ptr) {
  *ptr = NULL;
  if (nbytes == 0) return 0;
  if (lark_cuda_set_device(dev, "empty")) return lark_error_code();
  if (!memory_ready) return lark_set_error(LARK_ERR_NOMEM, "empty: the CUDA allocator could not start (out of host memory)");
  return lark_caching_alloc_malloc(&device_cache, dev.index, nbytes, ptr);
}

static void cuda_free(lark_device dev, void *ptr) {
  if (ptr && memory_ready) lark_caching_alloc_free(&device_cache, ptr);
}

extern "C" int lark_cuda_memory_stats(int device, lark_memory_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_once(&probe_once, probe);
  if (device_count == 0) return 0; /* no device: nothing allocated, and not an error */
  if (device < 0 || device >= device_count)
    return lark_set_error(LARK_ERR_DEVICE, "memory_stats: device cuda:%d is not available (%d CUDA device%s found)",
                          device, device_count, device_count == 1 ? "" : "s");
  if (memory_ready) lark_caching_alloc_stats(&device_cache, device, out);
  return 0;
}

static void host_cache_release(void); /* the pinned blocks kept for reuse (below) */

extern "C" void lark_cuda_empty_cache(void) {
  pthread_once(&probe_once, probe);
  if (device_count == 0 || !memory_ready) return;
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess) (void)cudaGetLastError();
  lark_caching_alloc_empty_cache(&device_cache, -1);
  host_cache_release();
  if (current >= 0 && cudaSetDevice(current) != cudaSuccess) (void)cudaGetLastError(); /* raw_free moved it */
}

extern "C" void lark_cuda_reset_peak_memory_stats(int device) {
  pthread_once(&probe_once, probe);
  if (device_count > 0 && memory_ready) lark_caching_alloc_reset_peak(&device_cache, device);
}

/* ---- pinned host memory --------------------------------------------------------------------- */

/* Every host buffer starts HOST_HEADER bytes after a header saying how it was allocated, so that
 * lark_cuda_host_free calls cudaFreeHost or free without asking the driver (which may already be
 * unloading at exit). */
#define HOST_HEADER 64
#define HOST_MAGIC 0x6c61726b686f7374ull /* "larkhost" */
struct host_header {
  uint64_t magic;
  uint64_t pinned;
  size_t nbytes; /* asked for */
  size_t total;  /* allocated, header included */
};

/* Freed pinned blocks wait here for the next request they fit (at most twice their need, so that a
 * small request does not hold a large block): cudaHostAlloc costs about as much as cudaMalloc,
 * cudaFreeHost may wait for the device, and a data loader with pin_memory pins two batches of the
 * same sizes every step, from its prefetch thread (hence the lock). Up to HOST_CACHE_MAX bytes are
 * kept; lark.cuda.empty_cache() releases them. */
#define HOST_CACHE_SLOTS 64
#define HOST_CACHE_MAX ((size_t)1 << 30)
static pthread_mutex_t host_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct host_header *host_cache[HOST_CACHE_SLOTS];
static size_t host_cache_bytes;

/* A cached block of total bytes in [total, 2 total), the smallest such, taken out of the cache. */
static struct host_header *host_cache_take(size_t total) {
  pthread_mutex_lock(&host_cache_lock);
  int best = -1;
  for (int i = 0; i < HOST_CACHE_SLOTS; i++) {
    struct host_header *h = host_cache[i];
    if (h && h->total >= total && h->total / 2 < total && (best < 0 || h->total < host_cache[best]->total)) best = i;
  }
  struct host_header *h = best >= 0 ? host_cache[best] : NULL;
  if (h) host_cache[best] = NULL, host_cache_bytes -= h->total;
  pthread_mutex_unlock(&host_cache_lock);
  return h;
}

/* Keeps a freed pinned block for reuse; false when the cache is full (the caller frees it). */
static bool host_cache_put(struct host_header *h) {
  bool kept = false;
  pthread_mutex_lock(&host_cache_lock);
  if (host_cache_bytes + h->total <= HOST_CACHE_MAX)
    for (int i = 0; i < HOST_CACHE_SLOTS && !kept; i++)
      if (!host_cache[i]) host_cache[i] = h, host_cache_bytes += h->total, kept = true;
  pthread_mutex_unlock(&host_cache_lock);
  return kept;
}

static void host_cache_release(void) {
  pthread_mutex_lock(&host_cache_lock);
  for (int i = 0; i < HOST_CACHE_SLOTS; i++)
    if (host_cache[i]) {
      if (cudaFreeHost(host_cache[i]) != cudaSuccess) (void)cudaGetLastError();
      host_cache[i] = NULL;
    }
  host_cache_bytes = 0;
  pthread_mutex_unlock(&host_cache_lock);
}

extern "C" void *lark_cuda_host_alloc(size_t nbytes) {
  if (nbytes > SIZE_MAX / 2) {
    lark_set_error(LARK_ERR_NOMEM, "host_alloc: cannot allocate %zu bytes of host memory", nbytes);
    return NULL;
  }
  size_t total = HOST_HEADER + ((nbytes + 63) & ~(size_t)63); /* a multiple of 64 for aligned_alloc */
  void *base = NULL;
  bool pinned = false;
  pthread_once(&probe_once, probe);
  if (device_count > 0 && (base = host_cache_take(total)) != NULL) {
    pinned = true;
    total = ((struct host_header *)base)->total;
  } else if (device_count > 0) {
    /* portable: pinned for every device's context, not only the current one */
    if (cudaHostAlloc(&base, total, cudaHostAllocPortable) == cudaSuccess) pinned = true;
    else {
      /* no pinned memory left (it is limited by the OS): ordinary memory still works, only slower */
      (void)cudaGetLastError();
      base = NULL;
    }
  }
  if (!base) base = aligned_alloc(64, total);
  if (!base) {
    lark_set_error(LARK_ERR_NOMEM, "host_alloc: cannot allocate %zu bytes (%.2f MiB) of host memory", nbytes,
                   (double)nbytes / 1048576.0);
    return NULL;
  }
  struct host_header *h = (struct host_header *)base;
  h->magic = HOST_MAGIC;
  h->pinned = pinned;
  h->nbytes = nbytes;
  h->total = total;
  return (char *)base + HOST_HEADER;
}

static struct host_header *host_header_of(const void *ptr) {
  if (!ptr) return NULL;
  struct host_header *h = (struct host_header *)((char *)ptr - HOST_HEADER);
  return h->magic == HOST_MAGIC ? h : NULL;
}

extern "C" bool lark_cuda_host_is_pinned(const void *ptr) {
  struct host_header *h = host_header_of(ptr);
  return h && h->pinned;
}

extern "C" void lark_cuda_host_free(void *ptr) {
  struct host_header *h = host_header_of(ptr);
  if (!h) return; /* NULL, or not from lark_cuda_host_alloc: free cannot report it */
  h->magic = 0;
  if (!h->pinned) free(h);
  else if (!host_cache_put(h) && cudaFreeHost(h) != cudaSuccess) (void)cudaGetLastError(); /* as raw_free */
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
  cuda_backend.dwconv_forward = lark_cuda_dwconv_forward;
  cuda_backend.dwconv_backward_input = lark_cuda_dwconv_backward_input;
  cuda_backend.dwconv_backward_weight = lark_cuda_dwconv_backward_weight;
  /* gpuidx: indexing, sorting, running sums (index.cu, sort.cu) */
  cuda_backend.index_check = lark_cuda_index_check;
  cuda_backend.gather = lark_cuda_gather;
  cuda_backend.scatter_add = lark_cuda_scatter_add;
  cuda_backend.masked_fill = lark_cuda_masked_fill;
  cuda_backend.masked_select = lark_cuda_masked_select;
  cuda_backend.nonzero = lark_cuda_nonzero;
  cuda_backend.topk = lark_cuda_topk;
  cuda_backend.cumsum = lark_cuda_cumsum;
  /* end of gpuidx's assignments */
  /* dense convolution's im2col/col2im and pooling (conv.cu, pool.cu) */
  cuda_backend.im2col = lark_cuda_im2col;
  cuda_backend.col2im = lark_cuda_col2im;
  cuda_backend.avg_pool_forward = lark_cuda_avg_pool_forward;
  cuda_backend.avg_pool_backward = lark_cuda_avg_pool_backward;
  cuda_backend.max_pool_forward = lark_cuda_max_pool_forward;
  cuda_backend.max_pool_backward = lark_cuda_max_pool_backward;
  /* reductions, random fills, optimizer updates (reduce.cu, random.cu, optim.cu) */
  cuda_backend.reduce = lark_cuda_reduce;
  cuda_backend.random_fill = lark_cuda_random_fill;
  cuda_backend.bernoulli = lark_cuda_bernoulli;
  cuda_backend.sgd_update = lark_cuda_sgd_update;
  cuda_backend.adamw_update = lark_cuda_adamw_update;
  cuda_backend.lerp = lark_cuda_lerp;
  cuda_backend.norm_part = lark_cuda_norm_part;
  cuda_backend.unary = lark_cuda_unary; /* elementwise.cu */
  cuda_backend.clamp = lark_cuda_clamp;
  cuda_backend.where = lark_cuda_where;
  /* gpunorm: norms, softmax, losses, GELU (norm.cu, softmax.cu, activation.cu) */
  cuda_backend.layer_norm_forward = lark_cuda_layer_norm_forward;
  cuda_backend.layer_norm_backward = lark_cuda_layer_norm_backward;
  cuda_backend.batch_norm_forward = lark_cuda_batch_norm_forward;
  cuda_backend.batch_norm_backward = lark_cuda_batch_norm_backward;
  cuda_backend.softmax_forward = lark_cuda_softmax_forward;
  cuda_backend.softmax_backward = lark_cuda_softmax_backward;
  cuda_backend.loss_rows = lark_cuda_loss_rows;
  cuda_backend.loss_backward = lark_cuda_loss_backward;
  cuda_backend.gelu_forward = lark_cuda_gelu_forward;
  cuda_backend.gelu_backward = lark_cuda_gelu_backward;
  /* end of gpunorm's fields */
}
