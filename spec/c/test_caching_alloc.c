/* test_caching_alloc.c: the caching allocator (core/caching_alloc.h) over a fake device: a raw
 * allocator of host memory with a capacity per device, which counts its calls and says "out of
 * memory" past the capacity. Runs on any machine; the CUDA backend uses the same code over
 * cudaMalloc and cudaFree. */
#include <pthread.h>

#include "caching_alloc.h"
#include "check.h"

#define MiB ((size_t)1 << 20)

/* ---- the fake device ------------------------------------------------------------------------ */

typedef struct {
  size_t capacity[2]; /* bytes each of two devices has */
  size_t live[2];     /* bytes raw_alloc handed out and raw_free did not take back */
  int allocs, frees, failures;
  int fail_with;      /* nonzero: every raw_alloc fails with this status (after lark_set_error) */
  int reclaims;
  void *reclaim_frees; /* a pointer the reclaim callback frees (the "garbage" a collection finds) */
  lark_caching_alloc *owner;
} fake_device;

static int fake_alloc(void *ud, int device, size_t nbytes, void **ptr) {
  fake_device *f = ud;
  *ptr = NULL;
  if (f->fail_with) return lark_set_error(f->fail_with, "fake: the driver is gone");
  if (f->live[device] + nbytes > f->capacity[device]) {
    f->failures++;
    return LARK_ERR_NOMEM;
  }
  /* a 512-byte header before the block remembers its size (nbytes is a multiple of 512) */
  char *real = aligned_alloc(512, nbytes + 512);
  if (!real) return LARK_ERR_NOMEM;
  memcpy(real, &nbytes, sizeof nbytes);
  *ptr = real + 512;
  f->live[device] += nbytes;
  f->allocs++;
  return 0;
}

static void fake_free(void *ud, int device, void *ptr) {
  fake_device *f = ud;
  char *real = (char *)ptr - 512;
  size_t nbytes;
  memcpy(&nbytes, real, sizeof nbytes);
  f->live[device] -= nbytes;
  f->frees++;
  free(real);
}

static void fake_reclaim(void *ud) {
  fake_device *f = ud;
  f->reclaims++;
  if (f->reclaim_frees) {
    /* frees through the allocator: this deadlocks if the allocator still held its lock */
    lark_caching_alloc_free(f->owner, f->reclaim_frees);
    f->reclaim_frees = NULL;
  }
}

static void fake_describe(void *ud, int device, char *buf, size_t n) {
  fake_device *f = ud;
  snprintf(buf, n, "; %zu MiB on the fake device", f->capacity[device] / MiB);
}

static void make(lark_caching_alloc *a, fake_device *f, size_t capacity, bool with_reclaim) {
  memset(f, 0, sizeof *f);
  f->capacity[0] = f->capacity[1] = capacity;
  f->owner = a;
  lark_caching_alloc_config cfg = {"fake", fake_alloc, fake_free, with_reclaim ? fake_reclaim : NULL, fake_describe, f};
  CHECK(lark_caching_alloc_init(a, &cfg) == 0, "init");
}

static lark_memory_stats stats_of(lark_caching_alloc *a, int device) {
  lark_memory_stats s;
  lark_caching_alloc_stats(a, device, &s);
  return s;
}

static void *take(lark_caching_alloc *a, int device, size_t n) {
  void *p = NULL;
  int rc = lark_caching_alloc_malloc(a, device, n, &p);
  CHECK(rc == 0 && p, "malloc of %zu bytes on device %d: rc %d", n, device, rc);
  return p;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_rounding(void) {
  CHECK(lark_caching_alloc_round(1) == 512, "1 -> 512");
  CHECK(lark_caching_alloc_round(512) == 512, "512 -> 512");
  CHECK(lark_caching_alloc_round(513) == 1024, "513 -> 1024");
  CHECK(lark_caching_alloc_round(3 * MiB + 1) == 3 * MiB + 512, "3 MiB + 1");
  CHECK(lark_caching_alloc_round(SIZE_MAX) == 0, "SIZE_MAX overflows to 0");
  CHECK(lark_caching_alloc_round(SIZE_MAX - 100) == 0, "SIZE_MAX - 100 overflows to 0");
}

static void test_reuse_and_split(void) {
  lark_caching_alloc a;
  fake_device f;
  make(&a, &f, 1024 * MiB, true);
  /* a small request gets a 2 MiB segment; the next one is carved from it */
  char *p1 = take(&a, 0, 1000), *p2 = take(&a, 0, 1000);
  CHECK(f.allocs == 1, "one segment for two small blocks, got %d raw allocations", f.allocs);
  CHECK(p2 == p1 + 1024, "the second block follows the first (%p, %p)", (void *)p1, (void *)p2);
  lark_memory_stats s = stats_of(&a, 0);
  CHECK(s.allocated == 2048 && s.requested == 2000, "allocated %lld requested %lld", (long long)s.allocated,
        (long long)s.requested);
  CHECK(s.reserved == (int64_t)(2 * MiB) && s.cached == s.reserved - 2048, "reserved %lld cached %lld",
        (long long)s.reserved, (long long)s.cached);
  CHECK(s.num_allocs == 2 && s.num_cache_hits == 1 && s.num_raw_allocs == 1 && s.num_segments == 1,
        "allocs %lld hits %lld raw %lld segments %lld", (long long)s.num_allocs, (long long)s.num_cache_hits,
        (long long)s.num_raw_allocs, (long long)s.num_segments);
  /* the memory is real and the blocks do not overlap */
  memset(p1, 0x11, 1000);
  memset(p2, 0x22, 1000);
  CHECK(p1[999] == 0x11 && p2[0] == 0x22, "blocks overlap");
  /* a freed block comes back for the same size, from the cache */
  lark_caching_alloc_free(&a, p1);
  char *p3 = take(&a, 0, 900);
  CHECK(p3 == p1, "the freed block is reused");
  CHECK(f.allocs == 1, "no new segment");
  s = stats_of(&a, 0);
  CHECK(s.num_frees == 1 && s.num_cache_hits == 2, "frees %lld hits %lld", (long long)s.num_frees,
        (long long)s.num_cache_hits);
  /* large requests: a 20 MiB segment below 10 MiB, split; the rest serves the next one */
  char *l1 = take(&a, 0, 3 * MiB), *l2 = take(&a, 0, 5 * MiB);
  CHECK(f.allocs == 2, "one 20 MiB segment for 3 + 5 MiB, got %d raw allocations", f.allocs);
  CHECK(l2 == l1 + 3 * MiB, "5 MiB follows 3 MiB in the segment");
  lark_caching_alloc_free(&a, l1);
  lark_caching_alloc_free(&a, l2);
  /* the segment merged back into one free block: a 19 MiB request fits without a new segment */
  char *l3 = take(&a, 0, 19 * MiB);
  CHECK(l3 == l1 && f.allocs == 2, "merged blocks serve 19 MiB (%d raw allocations)", f.allocs);
  lark_caching_alloc_free(&a, l3);
  /* small and large requests never share a pool: 1 MiB is small, 1 MiB + 1 is large */
  char *s1 = take(&a, 0, MiB);
  CHECK(s1 < l1 || s1 >= l1 + 20 * MiB, "a small request came from the large pool");
  lark_caching_alloc_free(&a, s1);
  lark_caching_alloc_free(&a, p2);
  lark_caching_alloc_free(&a, p3);
  /* freeing NULL or a pointer it never gave out is ignored */
  lark_caching_alloc_free(&a, NULL);
  int x;
  lark_caching_alloc_free(&a, &x);
  s = stats_of(&a, 0);
  CHECK(s.allocated == 0 && s.requested == 0, "all freed: allocated %lld", (long long)s.allocated);
  CHECK(s.num_frees == s.num_allocs, "frees %lld of %lld", (long long)s.num_frees, (long long)s.num_allocs);
  lark_caching_alloc_destroy(&a);
  CHECK(f.frees == f.allocs, "destroy gave back %d of %d segments", f.frees, f.allocs);
}

static void test_best_fit(void) {
  lark_caching_alloc a;
  fake_device f;
  make(&a, &f, 1024 * MiB, true);
  /* three separate segments (>= 10 MiB: one each, of the size rounded to 2 MiB) */
  void *b12 = take(&a, 0, 12 * MiB), *b16 = take(&a, 0, 16 * MiB), *b14 = take(&a, 0, 14 * MiB);
  CHECK(f.allocs == 3, "three segments");
  lark_caching_alloc_free(&a, b12);
  lark_caching_alloc_free(&a, b16);
  lark_caching_alloc_free(&a, b14);
  /* 11 MiB: 12 is the best fit (14, freed last, is first in their bin); 1 MiB left over is not
   * worth a split in the large pool */
  void *q = take(&a, 0, 11 * MiB);
  CHECK(q == b12, "11 MiB took the 12 MiB block");
  lark_memory_stats s = stats_of(&a, 0);
  CHECK(s.allocated == (int64_t)(12 * MiB), "the whole 12 MiB block is allocated: %lld", (long long)s.allocated);
  /* 13 MiB: 14 is the best fit of what is left (16 would do too) */
  void *p = take(&a, 0, 13 * MiB);
  CHECK(p == b14, "13 MiB took the 14 MiB block");
  /* 4 MiB from the 16 MiB block: split, 12 MiB stays cached */
  void *r = take(&a, 0, 4 * MiB);
  CHECK(r == b16 && f.allocs == 3, "4 MiB split from the 16 MiB block");
  s = stats_of(&a, 0);
  CHECK(s.cached == (int64_t)(12 * MiB), "12 MiB cached, got %lld", (long long)s.cached);
  lark_caching_alloc_free(&a, p);
  lark_caching_alloc_free(&a, q);
  lark_caching_alloc_free(&a, r);
  lark_caching_alloc_destroy(&a);
}

static void test_stats_and_empty_cache(void) {
  lark_caching_alloc a;
  fake_device f;
  make(&a, &f, 1024 * MiB, true);
  void *p = take(&a, 0, 12 * MiB), *q = take(&a, 0, 30 * MiB), *r = take(&a, 0, 100);
  lark_memory_stats s = stats_of(&a, 0);
  CHECK(s.peak_allocated == (int64_t)(42 * MiB + 512), "peak %lld", (long long)s.peak_allocated);
  lark_caching_alloc_free(&a, q);
  s = stats_of(&a, 0);
  CHECK(s.allocated == (int64_t)(12 * MiB + 512), "allocated after a free: %lld", (long long)s.allocated);
  CHECK(s.peak_allocated == (int64_t)(42 * MiB + 512), "the peak stays");
  CHECK(s.reserved == (int64_t)(44 * MiB), "reserved 12 + 30 + 2 MiB, got %lld", (long long)s.reserved);
  CHECK(s.peak_reserved == s.reserved, "peak reserved");
  lark_caching_alloc_reset_peak(&a, -1);
  s = stats_of(&a, 0);
  CHECK(s.peak_allocated == s.allocated && s.peak_reserved == s.reserved, "reset_peak");
  /* empty_cache gives back the free 30 MiB segment, not the ones in use */
  int frees = f.frees;
  lark_caching_alloc_empty_cache(&a, -1);
  s = stats_of(&a, 0);
  CHECK(f.frees == frees + 1, "one segment released, got %d", f.frees - frees);
  CHECK(s.reserved == (int64_t)(14 * MiB) && s.num_segments == 2 && s.num_raw_frees == 1,
        "reserved %lld segments %lld raw frees %lld", (long long)s.reserved, (long long)s.num_segments,
        (long long)s.num_raw_frees);
  /* once everything is freed, empty_cache releases everything */
  lark_caching_alloc_free(&a, p);
  lark_caching_alloc_free(&a, r);
  lark_caching_alloc_empty_cache(&a, 0);
  s = stats_of(&a, 0);
  CHECK(s.reserved == 0 && s.cached == 0 && s.num_segments == 0 && f.live[0] == 0,
        "nothing reserved after empty_cache: %lld", (long long)s.reserved);
  CHECK(f.frees == f.allocs, "every segment given back: %d of %d", f.frees, f.allocs);
  /* devices are separate */
  void *d1 = take(&a, 1, 5000);
  CHECK(stats_of(&a, 1).allocated == 5120 && stats_of(&a, 0).allocated == 0, "device 1's own counters");
  lark_caching_alloc_free(&a, d1);
  lark_caching_alloc_empty_cache(&a, 0); /* device 0 only */
  CHECK(stats_of(&a, 1).reserved == (int64_t)(2 * MiB), "device 1 keeps its cache");
  lark_caching_alloc_empty_cache(&a, 1);
  CHECK(stats_of(&a, 1).reserved == 0, "device 1 emptied");
  /* out-of-range devices: zeros, and an error on malloc */
  CHECK(stats_of(&a, -1).num_allocs == 0 && stats_of(&a, 500).num_allocs == 0, "zeros out of range");
  void *bad = NULL;
  CHECK(lark_caching_alloc_malloc(&a, 200, 10, &bad) == LARK_ERR_DEVICE && !bad, "device 200");
  /* nothing for nothing */
  void *z = &z;
  CHECK(lark_caching_alloc_malloc(&a, 0, 0, &z) == 0 && z == NULL, "0 bytes: NULL");
  lark_caching_alloc_destroy(&a);
  lark_clear_error();
}

static void test_out_of_memory(void) {
  lark_caching_alloc a;
  fake_device f;
  make(&a, &f, 65 * MiB, true);
  /* a: 30 MiB that only "the collector" frees; b: 20 MiB freed into the cache */
  void *held = take(&a, 0, 30 * MiB), *b = take(&a, 0, 20 * MiB);
  lark_caching_alloc_free(&a, b);
  /* 30 MiB more: 30 + 20 + 30 > 65. The reclaim callback frees `held`, whose block then serves */
  f.reclaim_frees = held;
  void *c = take(&a, 0, 30 * MiB);
  lark_memory_stats s = stats_of(&a, 0);
  CHECK(f.reclaims == 1 && s.num_retries == 1 && s.num_ooms == 0, "reclaims %d retries %lld ooms %lld", f.reclaims,
        (long long)s.num_retries, (long long)s.num_ooms);
  CHECK(c == held, "the reclaimed block is reused");
  CHECK(s.reserved == (int64_t)(50 * MiB), "the cache was not released when the reclaim sufficed");
  /* 34 MiB: the reclaim frees nothing; releasing the 20 MiB cached block makes room */
  void *d = take(&a, 0, 34 * MiB);
  s = stats_of(&a, 0);
  CHECK(f.reclaims == 2 && s.num_retries == 2 && s.num_raw_frees == 1, "reclaims %d retries %lld raw frees %lld",
        f.reclaims, (long long)s.num_retries, (long long)s.num_raw_frees);
  CHECK(s.reserved == (int64_t)(64 * MiB) && f.live[0] == 64 * MiB, "30 + 34 MiB reserved, got %lld",
        (long long)s.reserved);
  /* a request that cannot fit: an error naming the size in bytes and MiB and what is held */
  void *e = &e;
  int rc = lark_caching_alloc_malloc(&a, 0, 100 * MiB, &e);
  CHECK(rc == LARK_ERR_NOMEM && e == NULL && lark_error_code() == LARK_ERR_NOMEM, "100 MiB: rc %d", rc);
  CHECK(error_has("fake: out of memory allocating 104857600 bytes (100.00 MiB) on fake:0 (64.00 MiB allocated, "
                  "0.00 MiB cached; 65 MiB on the fake device)"),
        "the message");
  s = stats_of(&a, 0);
  CHECK(s.num_ooms == 1 && s.num_retries == 3 && f.reclaims == 3, "ooms %lld retries %lld", (long long)s.num_ooms,
        (long long)s.num_retries);
  lark_clear_error();
  /* a nearly full device (1 MiB left) still fits a small request that a 2 MiB segment would not,
   * without a reclaim */
  int before = f.reclaims;
  void *small = take(&a, 0, 1000);
  CHECK(stats_of(&a, 0).reserved == (int64_t)(64 * MiB + 1024), "an exact 1 KiB segment: reserved %lld",
        (long long)stats_of(&a, 0).reserved);
  CHECK(f.reclaims == before, "no reclaim for it");
  /* sizes that overflow: out of memory at once, no call to the device */
  int allocs = f.allocs, raw_failures = f.failures;
  rc = lark_caching_alloc_malloc(&a, 0, SIZE_MAX - 5, &e);
  CHECK(rc == LARK_ERR_NOMEM && error_has("out of memory allocating"), "SIZE_MAX - 5");
  CHECK(f.allocs == allocs && f.failures == raw_failures, "no raw call for an impossible size");
  lark_clear_error();
  /* another failure of the raw allocator is returned as it is, without a retry */
  f.fail_with = LARK_ERR_BACKEND;
  int reclaims = f.reclaims;
  rc = lark_caching_alloc_malloc(&a, 0, 40 * MiB, &e);
  CHECK(rc == LARK_ERR_BACKEND && error_has("fake: the driver is gone") && f.reclaims == reclaims,
        "a backend error: rc %d", rc);
  f.fail_with = 0;
  lark_clear_error();
  lark_caching_alloc_free(&a, c);
  lark_caching_alloc_free(&a, d);
  lark_caching_alloc_free(&a, small);
  lark_caching_alloc_destroy(&a);
  CHECK(f.frees == f.allocs, "destroy gave back %d of %d segments", f.frees, f.allocs);
}

/* With reclaim NULL the allocator runs the global handler of lark_set_oom_handler. */
static int global_calls;
static void global_handler(void *ud) {
  global_calls++;
  CHECK(ud == &global_calls, "the handler's ud");
}

static void test_global_handler(void) {
  lark_caching_alloc a;
  fake_device f;
  make(&a, &f, 8 * MiB, false);
  void *e = NULL;
  int rc = lark_caching_alloc_malloc(&a, 0, 9 * MiB, &e); /* no handler yet: just the error */
  CHECK(rc == LARK_ERR_NOMEM, "9 MiB of 8");
  lark_set_oom_handler(global_handler, &global_calls);
  rc = lark_caching_alloc_malloc(&a, 0, 9 * MiB, &e);
  CHECK(rc == LARK_ERR_NOMEM && global_calls == 1, "the global handler ran once: %d", global_calls);
  lark_set_oom_handler(NULL, NULL);
  rc = lark_caching_alloc_malloc(&a, 0, 9 * MiB, &e);
  CHECK(rc == LARK_ERR_NOMEM && global_calls == 1, "removed");
  lark_caching_alloc_destroy(&a);
  lark_clear_error();
}

/* ---- threads -------------------------------------------------------------------------------- */

typedef struct {
  lark_caching_alloc *a;
  uint64_t seed;
  int id;
  int bad;
} worker_arg;

static void *worker(void *p) {
  worker_arg *w = p;
  uint64_t s = w->seed;
  enum { SLOTS = 16 };
  unsigned char *blocks[SLOTS] = {0};
  size_t sizes[SLOTS] = {0};
  for (int it = 0; it < 4000; it++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    int k = (int)(s % SLOTS);
    if (blocks[k]) {
      /* the block still holds this thread's pattern: nobody else was given it */
      unsigned char tag = (unsigned char)(w->id * SLOTS + k + 1);
      if (blocks[k][0] != tag || blocks[k][sizes[k] - 1] != tag) w->bad++;
      lark_caching_alloc_free(w->a, blocks[k]);
      blocks[k] = NULL;
    } else {
      size_t n = (s >> 8) % 4 == 0 ? ((s >> 16) % 12 + 1) * MiB : (s >> 16) % 70000 + 1;
      int device = (int)((s >> 40) & 1);
      void *q = NULL;
      if (lark_caching_alloc_malloc(w->a, device, n, &q) || !q) {
        w->bad++;
        continue;
      }
      blocks[k] = q;
      sizes[k] = n;
      unsigned char tag = (unsigned char)(w->id * SLOTS + k + 1);
      blocks[k][0] = blocks[k][n - 1] = tag;
    }
  }
  for (int k = 0; k < SLOTS; k++) lark_caching_alloc_free(w->a, blocks[k]);
  return NULL;
}

static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
static int locked_alloc(void *ud, int device, size_t nbytes, void **ptr) {
  pthread_mutex_lock(&fake_lock); /* the fake's counters are not atomic */
  int rc = fake_alloc(ud, device, nbytes, ptr);
  pthread_mutex_unlock(&fake_lock);
  return rc;
}
static void locked_free(void *ud, int device, void *ptr) {
  pthread_mutex_lock(&fake_lock);
  fake_free(ud, device, ptr);
  pthread_mutex_unlock(&fake_lock);
}

static void test_threads(void) {
  lark_caching_alloc a;
  fake_device f;
  memset(&f, 0, sizeof f);
  f.capacity[0] = f.capacity[1] = (size_t)16 << 30; /* never the limit: this is about races */
  lark_caching_alloc_config cfg = {"fake", locked_alloc, locked_free, NULL, NULL, &f};
  CHECK(lark_caching_alloc_init(&a, &cfg) == 0, "init");
  enum { NT = 4 };
  pthread_t th[NT];
  worker_arg args[NT];
  for (int i = 0; i < NT; i++) {
    args[i] = (worker_arg){&a, 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1), i, 0};
    CHECK(pthread_create(&th[i], NULL, worker, &args[i]) == 0, "pthread_create");
  }
  for (int i = 0; i < NT; i++) {
    pthread_join(th[i], NULL);
    CHECK(args[i].bad == 0, "thread %d saw %d bad blocks or failed allocations", i, args[i].bad);
  }
  for (int dev = 0; dev < 2; dev++) {
    lark_memory_stats s = stats_of(&a, dev);
    CHECK(s.allocated == 0 && s.requested == 0 && s.num_allocs == s.num_frees,
          "device %d: allocated %lld after every free (%lld allocs, %lld frees)", dev, (long long)s.allocated,
          (long long)s.num_allocs, (long long)s.num_frees);
    CHECK(s.num_cache_hits > 0, "device %d: the cache served something", dev);
  }
  lark_caching_alloc_empty_cache(&a, -1);
  CHECK(stats_of(&a, 0).reserved == 0 && stats_of(&a, 1).reserved == 0, "all released");
  CHECK(f.frees == f.allocs, "every segment given back: %d of %d", f.frees, f.allocs);
  lark_caching_alloc_destroy(&a);
}

/* ---- the CUDA functions on a machine without a device --------------------------------------- */

static void test_cuda_api(void) {
  lark_memory_stats s;
  memset(&s, 0xff, sizeof s);
  int rc = lark_cuda_memory_stats(0, &s);
  if (!lark_cuda_is_available()) {
    CHECK(rc == 0 && s.allocated == 0 && s.reserved == 0 && s.num_allocs == 0, "zeros without a device");
    lark_cuda_empty_cache(); /* no-ops */
    lark_cuda_reset_peak_memory_stats(-1);
  } else {
    CHECK(rc == 0, "memory_stats(0)");
    CHECK(lark_cuda_memory_stats(lark_cuda_device_count(), &s) == LARK_ERR_DEVICE, "a device that is not there");
    lark_clear_error();
  }
  /* host buffers: pinned with a device, ordinary without; 64-byte aligned and writable either way */
  unsigned char *h = lark_cuda_host_alloc(1000);
  CHECK(h && ((uintptr_t)h & 63) == 0, "host_alloc(1000) aligned");
  if (h) {
    memset(h, 7, 1000);
    CHECK(h[999] == 7, "writable");
    CHECK(lark_cuda_host_is_pinned(h) == lark_cuda_is_available(), "pinned exactly when there is a device");
  }
  lark_cuda_host_free(h);
  void *z = lark_cuda_host_alloc(0);
  CHECK(z != NULL, "host_alloc(0) is not NULL");
  lark_cuda_host_free(z);
  lark_cuda_host_free(NULL);
  CHECK(lark_cuda_host_alloc(SIZE_MAX - 10) == NULL && lark_error_code() == LARK_ERR_NOMEM, "an impossible size");
  lark_clear_error();
}

int main(void) {
  test_rounding();
  test_reuse_and_split();
  test_best_fit();
  test_stats_and_empty_cache();
  test_out_of_memory();
  test_global_handler();
  test_threads();
  test_cuda_api();
  return check_report("test_caching_alloc");
}
