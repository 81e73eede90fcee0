/*
 * caching_alloc.h: a caching allocator of device memory, generic over the raw allocator under it.
 *
 * Asking a GPU driver for memory is slow (cudaMalloc takes tens of microseconds to milliseconds)
 * and giving it back is worse (cudaFree waits for the whole device), while a training loop frees
 * and re-allocates the same sizes every step. So freed blocks stay with this allocator and are
 * handed out again; only empty_cache, or an allocation that fails, gives memory back.
 *
 * How it works (the scheme of PyTorch's CUDA caching allocator, without streams):
 * - Sizes are rounded up to a multiple of 512 bytes, so every block of a segment stays 512-byte
 *   aligned and near sizes share blocks.
 * - Memory comes from the raw allocator in segments: a 2 MiB segment carved into blocks for
 *   requests up to 1 MiB (the small pool), a 20 MiB segment for requests up to 10 MiB, and the
 *   request rounded up to 2 MiB beyond that (the large pool).
 * - Free blocks sit in bins by size (one bin per power of two, per pool, per device). A request
 *   takes the smallest free block that fits (best fit) and splits off the rest when the rest is
 *   worth keeping (>= 512 bytes in the small pool, > 1 MiB in the large one). A freed block merges
 *   with free neighbours of its segment.
 * - Out of memory: when a 2 or 20 MiB segment does not fit, a segment of just the request's size
 *   is tried. When that fails too, the reclaim callback runs (the Lua binding's full garbage
 *   collection, through lark_set_oom_handler); a block it freed is taken if one fits, else every
 *   cached segment of the device is released and the raw allocator is asked once more. If that
 *   fails, the error names the size in bytes and MiB and what the allocator holds.
 * - One mutex guards everything, so any thread may allocate and free. The reclaim callback runs
 *   without it held, because it frees memory through this allocator.
 *
 * Reuse is only safe when the memory is no longer in use by the device. The allocator does not
 * know about streams: its user must guarantee that work touching a block is ordered before work
 * queued by the block's next owner (the CUDA backend queues everything on one stream per device,
 * see cuda/backend.cu).
 */
#ifndef LARK_CACHING_ALLOC_H
#define LARK_CACHING_ALLOC_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "lark.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Devices an allocator can serve: ordinals 0 .. LARK_CA_MAX_DEVICES - 1. */
#define LARK_CA_MAX_DEVICES 128
/* Granularity of block sizes, and the smallest block. */
#define LARK_CA_MIN_BLOCK ((size_t)512)
/* Requests up to this size come from the small pool's segments. */
#define LARK_CA_SMALL_SIZE ((size_t)1 << 20)
/* The small pool's segment size. */
#define LARK_CA_SMALL_SEGMENT ((size_t)2 << 20)
/* Requests below this size get a LARK_CA_MEDIUM_SEGMENT segment; larger ones get their size. */
#define LARK_CA_LARGE_SIZE ((size_t)10 << 20)
#define LARK_CA_MEDIUM_SEGMENT ((size_t)20 << 20)
/* Large segments are multiples of this. */
#define LARK_CA_ROUND_LARGE ((size_t)2 << 20)
/* One bin per power of two of the size (bin b holds blocks of 2^b .. 2^(b+1) - 1 bytes). */
#define LARK_CA_NBINS 64

typedef struct lark_ca_block lark_ca_block;

typedef struct lark_caching_alloc_config {
  /* The device kind in messages: "cuda" gives "cuda: out of memory ... on cuda:0". */
  const char *name;
  /* Gets nbytes of memory on device. Returns 0, or LARK_ERR_NOMEM when the device is out of
   * memory (no message needed), or another negative status after lark_set_error for any other
   * failure (which is returned as it is, without a retry). */
  int (*raw_alloc)(void *ud, int device, size_t nbytes, void **ptr);
  /* Gives back a pointer raw_alloc returned. Cannot fail. */
  void (*raw_free)(void *ud, int device, void *ptr);
  /* Called once before the retry of an allocation that ran out of memory, with no lock held, to
   * free what it can (it may free blocks of this allocator). NULL: lark_run_oom_handler. */
  void (*reclaim)(void *ud);
  /* Optional: appends a note about the device to an out-of-memory message (e.g. "; 3.1 GiB free
   * of 79.6 GiB on the device"). Called with the lock held: it must not allocate here. */
  void (*describe)(void *ud, int device, char *buf, size_t n);
  void *ud;
} lark_caching_alloc_config;

/* One device's state: its free bins and its counters. */
typedef struct lark_ca_device {
  lark_ca_block *bins[2][LARK_CA_NBINS]; /* [0] small pool, [1] large pool: free blocks */
  lark_memory_stats stats;
} lark_ca_device;

typedef struct lark_caching_alloc {
  lark_caching_alloc_config cfg;
  pthread_mutex_t lock;
  lark_ca_device *devices[LARK_CA_MAX_DEVICES]; /* created on first use */
  /* allocated blocks by pointer, for free(): a chained hash table */
  lark_ca_block **table;
  size_t table_size; /* a power of two, or 0 before the first allocation */
  size_t table_count;
  int initialized;
} lark_caching_alloc;

/* Sets up a (zeroed or static) allocator. Returns 0, or an error if the mutex cannot be made. */
int lark_caching_alloc_init(lark_caching_alloc *a, const lark_caching_alloc_config *cfg);
/* Releases every cached block and frees the allocator's own memory. Blocks still allocated are
 * leaked to the raw allocator (their owner may still use them); the allocator cannot be used
 * again until the next init. */
void lark_caching_alloc_destroy(lark_caching_alloc *a);

/* *ptr = a block of at least nbytes on device (NULL for nbytes 0). Returns 0, LARK_ERR_NOMEM with
 * "<name>: out of memory allocating N bytes (X MiB) on <name>:D (Y MiB allocated, Z MiB cached)",
 * or the raw allocator's own error. */
int lark_caching_alloc_malloc(lark_caching_alloc *a, int device, size_t nbytes, void **ptr);
/* Returns a block to the cache. NULL is ignored; so is a pointer this allocator did not hand out
 * (free cannot report an error; counted in no statistic). */
void lark_caching_alloc_free(lark_caching_alloc *a, void *ptr);
/* Gives every cached segment that holds no allocated block back to the raw allocator, on one
 * device, or on all when device < 0. */
void lark_caching_alloc_empty_cache(lark_caching_alloc *a, int device);
/* The counters of one device (zeros for a device never used or out of range). */
void lark_caching_alloc_stats(lark_caching_alloc *a, int device, lark_memory_stats *out);
/* peak_* = the current values, on one device or on all when device < 0. */
void lark_caching_alloc_reset_peak(lark_caching_alloc *a, int device);
/* The block size a request of nbytes gets (0 on overflow). */
size_t lark_caching_alloc_round(size_t nbytes);

/* Runs the handler lark_set_oom_handler registered, if any (what reclaim NULL means). */
void lark_run_oom_handler(void);

#ifdef __cplusplus
}
#endif
#endif
