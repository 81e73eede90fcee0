/* caching_alloc.c: the caching allocator of device memory (how it works: caching_alloc.h), the
 * out-of-memory hook, and what lark.h's CUDA memory functions do in a build without CUDA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caching_alloc.h"

struct lark_ca_block {
  void *ptr;
  size_t size;      /* a multiple of LARK_CA_MIN_BLOCK */
  size_t requested; /* what the allocation asked for; 0 while free */
  int device;
  int pool;         /* 0 small, 1 large */
  int allocated;
  lark_ca_block *prev, *next;         /* neighbours in the segment by address; NULL at its ends */
  lark_ca_block *bin_prev, *bin_next; /* the free bin, while free */
  lark_ca_block *hnext;               /* the hash chain, while allocated */
};

/* ---- the out-of-memory hook ----------------------------------------------------------------- */

/* Set once by the Lua binding when it loads, before any allocation can fail. */
static lark_oom_handler oom_handler;
static void *oom_handler_ud;

void lark_set_oom_handler(lark_oom_handler fn, void *ud) {
  oom_handler = fn;
  oom_handler_ud = ud;
}

void lark_run_oom_handler(void) {
  lark_oom_handler fn = oom_handler;
  if (fn) fn(oom_handler_ud);
}

/* ---- sizes ---------------------------------------------------------------------------------- */

size_t lark_caching_alloc_round(size_t nbytes) {
  if (nbytes > SIZE_MAX - LARK_CA_ROUND_LARGE) return 0;
  if (nbytes < LARK_CA_MIN_BLOCK) return LARK_CA_MIN_BLOCK;
  return (nbytes + LARK_CA_MIN_BLOCK - 1) & ~(LARK_CA_MIN_BLOCK - 1);
}

/* The segment a block of `size` (rounded) is carved from. */
static size_t segment_size(size_t size) {
  if (size <= LARK_CA_SMALL_SIZE) return LARK_CA_SMALL_SEGMENT;
  if (size < LARK_CA_LARGE_SIZE) return LARK_CA_MEDIUM_SEGMENT;
  return (size + LARK_CA_ROUND_LARGE - 1) & ~(LARK_CA_ROUND_LARGE - 1);
}

static int bin_of(size_t size) {
  int b = 0;
  while (b < LARK_CA_NBINS - 1 && (size >> (b + 1)) != 0) b++;
  return b;
}

static double mib(int64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* ---- bins ----------------------------------------------------------------------------------- */

static void bin_insert(lark_ca_device *d, lark_ca_block *b) {
  lark_ca_block **head = &d->bins[b->pool][bin_of(b->size)];
  b->bin_prev = NULL;
  b->bin_next = *head;
  if (*head) (*head)->bin_prev = b;
  *head = b;
}

static void bin_remove(lark_ca_device *d, lark_ca_block *b) {
  if (b->bin_prev) b->bin_prev->bin_next = b->bin_next;
  else d->bins[b->pool][bin_of(b->size)] = b->bin_next;
  if (b->bin_next) b->bin_next->bin_prev = b->bin_prev;
  b->bin_prev = b->bin_next = NULL;
}

/* The smallest free block of the pool of at least size bytes, taken out of its bin; NULL if none.
 * Bins partition sizes by power of two, so the first bin (from size's own) with a fitting block
 * holds the best fit. */
static lark_ca_block *take_free(lark_ca_device *d, int pool, size_t size) {
  for (int bin = bin_of(size); bin < LARK_CA_NBINS; bin++) {
    lark_ca_block *best = NULL;
    for (lark_ca_block *b = d->bins[pool][bin]; b; b = b->bin_next)
      if (b->size >= size && (!best || b->size < best->size)) best = b;
    if (best) {
      bin_remove(d, best);
      return best;
    }
  }
  return NULL;
}

/* ---- the pointer table ---------------------------------------------------------------------- */

static size_t hash_of(const lark_caching_alloc *a, const void *p) {
  uint64_t h = (uint64_t)(uintptr_t)p >> 9; /* blocks are 512-byte multiples apart */
  h *= 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 32) & (a->table_size - 1);
}

static void table_grow(lark_caching_alloc *a) {
  size_t n = a->table_size * 2;
  lark_ca_block **t = calloc(n, sizeof *t);
  if (!t) return; /* longer chains, still correct */
  lark_ca_block **old = a->table;
  size_t old_n = a->table_size;
  a->table = t;
  a->table_size = n;
  for (size_t i = 0; i < old_n; i++)
    for (lark_ca_block *b = old[i], *next; b; b = next) {
      next = b->hnext;
      size_t h = hash_of(a, b->ptr);
      b->hnext = t[h];
      t[h] = b;
    }
  free(old);
}

static void table_insert(lark_caching_alloc *a, lark_ca_block *b) {
  if (a->table_count >= a->table_size) table_grow(a);
  size_t h = hash_of(a, b->ptr);
  b->hnext = a->table[h];
  a->table[h] = b;
  a->table_count++;
}

static lark_ca_block *table_remove(lark_caching_alloc *a, const void *p) {
  for (lark_ca_block **link = &a->table[hash_of(a, p)]; *link; link = &(*link)->hnext)
    if ((*link)->ptr == p) {
      lark_ca_block *b = *link;
      *link = b->hnext;
      b->hnext = NULL;
      a->table_count--;
      return b;
    }
  return NULL;
}

/* ---- segments ------------------------------------------------------------------------------- */

static void note_peaks(lark_memory_stats *s) {
  if (s->allocated > s->peak_allocated) s->peak_allocated = s->allocated;
  if (s->reserved > s->peak_reserved) s->peak_reserved = s->reserved;
}

/* A new segment of seg bytes from the raw allocator, as one free block (not in a bin). */
static int new_segment(lark_caching_alloc *a, lark_ca_device *d, int device, int pool, size_t seg,
                       lark_ca_block **out) {
  *out = NULL;
  lark_ca_block *b = calloc(1, sizeof *b);
  if (!b) return lark_set_error(LARK_ERR_NOMEM, "%s: out of host memory for the allocator", a->cfg.name);
  void *p = NULL;
  int rc = a->cfg.raw_alloc(a->cfg.ud, device, seg, &p);
  if (rc || !p) {
    free(b);
    return rc ? rc : LARK_ERR_NOMEM;
  }
  b->ptr = p;
  b->size = seg;
  b->device = device;
  b->pool = pool;
  d->stats.reserved += (int64_t)seg;
  d->stats.num_segments++;
  d->stats.num_raw_allocs++;
  note_peaks(&d->stats);
  *out = b;
  return 0;
}

/* Gives back every free segment of device d (one free block that is a whole segment). */
static void release_cached(lark_caching_alloc *a, lark_ca_device *d, int device) {
  for (int pool = 0; pool < 2; pool++)
    for (int bin = 0; bin < LARK_CA_NBINS; bin++)
      for (lark_ca_block *b = d->bins[pool][bin], *next; b; b = next) {
        next = b->bin_next;
        if (b->prev || b->next) continue; /* part of a segment that is partly in use */
        bin_remove(d, b);
        a->cfg.raw_free(a->cfg.ud, device, b->ptr);
        d->stats.reserved -= (int64_t)b->size;
        d->stats.num_segments--;
        d->stats.num_raw_frees++;
        free(b);
      }
}

/* Cuts b (free, out of any bin) to size bytes when the rest is worth keeping; the rest goes to its
 * bin. Without host memory for the record, b stays whole (it still fits). */
static void split(lark_ca_device *d, lark_ca_block *b, size_t size) {
  size_t rest = b->size - size;
  if (b->pool == 0 ? rest < LARK_CA_MIN_BLOCK : rest <= LARK_CA_SMALL_SIZE) return;
  lark_ca_block *r = calloc(1, sizeof *r);
  if (!r) return;
  r->ptr = (char *)b->ptr + size;
  r->size = rest;
  r->device = b->device;
  r->pool = b->pool;
  r->prev = b;
  r->next = b->next;
  if (b->next) b->next->prev = r;
  b->next = r;
  b->size = size;
  bin_insert(d, r);
}

/* ---- the allocator -------------------------------------------------------------------------- */

int lark_caching_alloc_init(lark_caching_alloc *a, const lark_caching_alloc_config *cfg) {
  memset(a, 0, sizeof *a);
  a->cfg = *cfg;
  if (!a->cfg.name) a->cfg.name = "device";
  a->table_size = 1024;
  a->table = calloc(a->table_size, sizeof *a->table);
  if (!a->table) return lark_set_error(LARK_ERR_NOMEM, "%s: out of host memory for the allocator", a->cfg.name);
  if (pthread_mutex_init(&a->lock, NULL)) {
    free(a->table);
    a->table = NULL;
    return lark_set_error(LARK_ERR_BACKEND, "%s: cannot create the allocator's mutex", a->cfg.name);
  }
  a->initialized = 1;
  return 0;
}

void lark_caching_alloc_destroy(lark_caching_alloc *a) {
  if (!a->initialized) return;
  lark_caching_alloc_empty_cache(a, -1);
  pthread_mutex_lock(&a->lock);
  for (int dev = 0; dev < LARK_CA_MAX_DEVICES; dev++) {
    lark_ca_device *d = a->devices[dev];
    if (!d) continue;
    for (int pool = 0; pool < 2; pool++)
      for (int bin = 0; bin < LARK_CA_NBINS; bin++)
        for (lark_ca_block *b = d->bins[pool][bin], *next; b; b = next) {
          next = b->bin_next;
          free(b);
        }
    free(d);
  }
  for (size_t i = 0; i < a->table_size; i++)
    for (lark_ca_block *b = a->table[i], *next; b; b = next) {
      next = b->hnext;
      free(b);
    }
  free(a->table);
  pthread_mutex_unlock(&a->lock);
  pthread_mutex_destroy(&a->lock);
  memset(a, 0, sizeof *a);
}

static lark_ca_device *device_state(lark_caching_alloc *a, int device) {
  if (!a->devices[device]) a->devices[device] = calloc(1, sizeof(lark_ca_device));
  return a->devices[device];
}

/* Takes a block for size bytes from the cache, else from a new segment. 0, LARK_ERR_NOMEM (device
 * out of memory) or another error. */
static int get_block(lark_caching_alloc *a, lark_ca_device *d, int device, size_t size, lark_ca_block **out,
                     bool *hit) {
  int pool = size <= LARK_CA_SMALL_SIZE ? 0 : 1;
  *out = take_free(d, pool, size);
  *hit = *out != NULL;
  if (*out) return 0;
  size_t seg = segment_size(size);
  int rc = new_segment(a, d, device, pool, seg, out);
  /* a nearly full device may still fit the request but not a whole 2 or 20 MiB segment */
  if (rc == LARK_ERR_NOMEM && seg > size) rc = new_segment(a, d, device, pool, size, out);
  return rc;
}

int lark_caching_alloc_malloc(lark_caching_alloc *a, int device, size_t nbytes, void **ptr) {
  const char *name = a->cfg.name;
  *ptr = NULL;
  if (nbytes == 0) return 0;
  if (device < 0 || device >= LARK_CA_MAX_DEVICES)
    return lark_set_error(LARK_ERR_DEVICE, "%s: device %d is out of range", name, device);
  size_t size = lark_caching_alloc_round(nbytes);
  pthread_mutex_lock(&a->lock);
  lark_ca_device *d = device_state(a, device);
  if (!d) {
    pthread_mutex_unlock(&a->lock);
    return lark_set_error(LARK_ERR_NOMEM, "%s: out of host memory for the allocator", name);
  }
  lark_ca_block *b = NULL;
  bool hit = false;
  int rc = size ? get_block(a, d, device, size, &b, &hit) : LARK_ERR_NOMEM;
  if (rc == LARK_ERR_NOMEM && size) {
    /* Out of memory: let the owner free what it can (a full garbage collection frees tensors
     * that only Lua's collector still holds), then give the cache back and try once more. The
     * callback frees through this allocator, so the lock is released around it. */
    pthread_mutex_unlock(&a->lock);
    if (a->cfg.reclaim) a->cfg.reclaim(a->cfg.ud);
    else lark_run_oom_handler();
    pthread_mutex_lock(&a->lock);
    d->stats.num_retries++;
    b = take_free(d, size <= LARK_CA_SMALL_SIZE ? 0 : 1, size); /* what the collection freed */
    hit = b != NULL;
    rc = b ? 0 : LARK_ERR_NOMEM;
    if (!b) {
      release_cached(a, d, device);
      rc = get_block(a, d, device, size, &b, &hit);
    }
  }
  if (rc) {
    if (rc == LARK_ERR_NOMEM) {
      d->stats.num_ooms++;
      char note[256] = "";
      if (a->cfg.describe) a->cfg.describe(a->cfg.ud, device, note, sizeof note);
      int64_t cached = d->stats.reserved - d->stats.allocated;
      lark_set_error(LARK_ERR_NOMEM,
                     "%s: out of memory allocating %zu bytes (%.2f MiB) on %s:%d (%.2f MiB allocated, %.2f MiB "
                     "cached%s)",
                     name, nbytes, mib((int64_t)(nbytes > INT64_MAX ? INT64_MAX : nbytes)), name, device,
                     mib(d->stats.allocated), mib(cached), note);
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
  }
  split(d, b, size);
  b->allocated = 1;
  b->requested = nbytes;
  table_insert(a, b);
  d->stats.allocated += (int64_t)b->size;
  d->stats.requested += (int64_t)nbytes;
  d->stats.num_allocs++;
  if (hit) d->stats.num_cache_hits++;
  note_peaks(&d->stats);
  *ptr = b->ptr;
  pthread_mutex_unlock(&a->lock);
  return 0;
}

void lark_caching_alloc_free(lark_caching_alloc *a, void *ptr) {
  if (!ptr) return;
  pthread_mutex_lock(&a->lock);
  lark_ca_block *b = table_remove(a, ptr);
  if (!b) {
    pthread_mutex_unlock(&a->lock);
    return;
  }
  lark_ca_device *d = a->devices[b->device];
  d->stats.allocated -= (int64_t)b->size;
  d->stats.requested -= (int64_t)b->requested;
  d->stats.num_frees++;
  b->allocated = 0;
  b->requested = 0;
  /* merge with free neighbours, so that a segment whose blocks are all free is one block again */
  lark_ca_block *p = b->prev;
  if (p && !p->allocated) {
    bin_remove(d, p);
    p->size += b->size;
    p->next = b->next;
    if (b->next) b->next->prev = p;
    free(b);
    b = p;
  }
  lark_ca_block *n = b->next;
  if (n && !n->allocated) {
    bin_remove(d, n);
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    free(n);
  }
  bin_insert(d, b);
  pthread_mutex_unlock(&a->lock);
}

void lark_caching_alloc_empty_cache(lark_caching_alloc *a, int device) {
  if (!a->initialized) return;
  pthread_mutex_lock(&a->lock);
  for (int dev = 0; dev < LARK_CA_MAX_DEVICES; dev++)
    if ((device < 0 || dev == device) && a->devices[dev]) release_cached(a, a->devices[dev], dev);
  pthread_mutex_unlock(&a->lock);
}

void lark_caching_alloc_stats(lark_caching_alloc *a, int device, lark_memory_stats *out) {
  memset(out, 0, sizeof *out);
  if (!a->initialized || device < 0 || device >= LARK_CA_MAX_DEVICES) return;
  pthread_mutex_lock(&a->lock);
  if (a->devices[device]) {
    *out = a->devices[device]->stats;
    out->cached = out->reserved - out->allocated;
  }
  pthread_mutex_unlock(&a->lock);
}

void lark_caching_alloc_reset_peak(lark_caching_alloc *a, int device) {
  if (!a->initialized) return;
  pthread_mutex_lock(&a->lock);
  for (int dev = 0; dev < LARK_CA_MAX_DEVICES; dev++) {
    lark_ca_device *d = a->devices[dev];
    if ((device < 0 || dev == device) && d) {
      d->stats.peak_allocated = d->stats.allocated;
      d->stats.peak_reserved = d->stats.reserved;
    }
  }
  pthread_mutex_unlock(&a->lock);
}

/* ---- without CUDA --------------------------------------------------------------------------- */

#ifndef LARK_WITH_CUDA
/* The CUDA backend (cuda/backend.cu) defines these when it is built; without it there is no device
 * memory to count or release, and host buffers are ordinary aligned memory. */
int lark_cuda_memory_stats(int device, lark_memory_stats *out) {
  memset(out, 0, sizeof *out);
  return 0;
}

void lark_cuda_empty_cache(void) {}

void lark_cuda_reset_peak_memory_stats(int device) {}

void *lark_cuda_host_alloc(size_t nbytes) {
  size_t n = nbytes < 64 ? 64 : nbytes + 63;
  void *p = n >= nbytes ? aligned_alloc(64, n & ~(size_t)63) : NULL;
  if (!p) lark_set_error(LARK_ERR_NOMEM, "host_alloc: cannot allocate %zu bytes (%.2f MiB) of host memory", nbytes,
                         mib((int64_t)(nbytes > INT64_MAX ? INT64_MAX : nbytes)));
  return p;
}

void lark_cuda_host_free(void *ptr) { free(ptr); }

bool lark_cuda_host_is_pinned(const void *ptr) { return false; }
#endif
