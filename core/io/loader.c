/* loader.c: batches from in-memory tensors, made ahead by a background thread.
 *
 * A lark_loader holds a dataset's images (N, ...) and labels (N, ...) (or only images), an optional
 * list of the rows it serves (a subset), and the batch options. Each epoch has an order (the
 * identity, or a permutation seeded from (seed, epoch)); batch b gathers the rows of order[b*B ..],
 * converts them to float32 and applies the transforms (transform.c) with a generator seeded from
 * (seed, epoch, b). A batch is thus a pure function of (seed, epoch, b): the prefetch thread, the
 * synchronous path (prefetch = 0) and any timing give the same batches.
 *
 * The queue: with prefetch = P > 0, lark_loader_start spawns one pthread per epoch that makes batches
 * 0, 1, ... into a ring of P slots and waits while all P are full; lark_loader_next pops them in
 * order and waits while none is ready. The worker runs only core's plain loops (no OpenMP), so it
 * takes one core beside the training step instead of competing with its thread team. Errors in the
 * worker (out of memory, a label out of range) travel in the slot and are raised by the
 * lark_loader_next that reaches them. Starting a new epoch, or freeing the loader, stops the worker
 * first and drops the batches it made ahead.
 *
 * pin_memory: the worker allocates each batch's x and y with lark_empty_pinned and fills them in
 * place, so a batch is born in page-locked memory (no extra copy) and its move to a GPU is one DMA.
 * Pinning a fresh buffer per batch costs about a cudaMalloc, paid here on the worker thread. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"

typedef struct {
  lark_tensor *x, *y;
  int rc;
  char err[512];
} slot;

struct lark_loader {
  lark_tensor *images, *labels; /* contiguous, retained; labels may be NULL */
  int64_t *rows;                /* n rows of images served, or NULL: all */
  int64_t n, nbatches;
  sample_geom sg;
  size_t sample_bytes, label_bytes;
  lark_loader_opts o;
  bool mixing;

  uint64_t epoch;
  bool started;
  int64_t *order; /* positions 0..n-1 in this epoch's order */

  /* the prefetch queue; produced and consumed count batches of this epoch */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  bool thread_live, stop;
  slot *q;
  int64_t produced, consumed;
};

/* ---- one batch ------------------------------------------------------------------------------ */

/* Makes batch b of the current epoch into *x, *y (y: labels gathered, soft targets when mixing, or
 * NULL without labels). Touches nothing shared but the loader's read-only fields. */
static int make_batch(lark_loader *ld, int64_t b, lark_tensor **x, lark_tensor **y) {
  static const char *op = "DataLoader";
  *x = *y = NULL;
  int64_t start = b * ld->o.batch_size, cnt = ld->n - start < ld->o.batch_size ? ld->n - start : ld->o.batch_size;
  const char **rows = malloc(sizeof(char *) * (size_t)cnt);
  int64_t *hard = ld->mixing ? malloc(sizeof(int64_t) * (size_t)cnt) : NULL;
  if (!rows || (ld->mixing && !hard)) {
    free(rows);
    free(hard);
    return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
  }
  const char *img = lark_data_ptr(ld->images), *lab = ld->labels ? lark_data_ptr(ld->labels) : NULL;
  for (int64_t i = 0; i < cnt; i++) {
    int64_t pos = ld->order[start + i], r = ld->rows ? ld->rows[pos] : pos;
    rows[i] = img + (size_t)r * ld->sample_bytes;
    if (hard) hard[i] = ((const int64_t *)lab)[r];
  }
  lark_generator gen;
  lark_generator_init(&gen, lark_data_stream_seed(ld->o.seed, ld->epoch, (uint64_t)b + 1));
  lark_tensor *soft = NULL;
  int rc = transform_rows(op, rows, ld->images->dtype, &ld->sg, cnt, hard, &ld->o.transform, &gen, ld->o.pin_memory,
                          x, ld->mixing ? &soft : NULL, NULL);
  if (!rc && ld->mixing) {
    *y = soft;
  } else if (!rc && ld->labels) {
    int64_t shape[LARK_MAX_DIMS];
    memcpy(shape, ld->labels->shape, sizeof(int64_t) * (size_t)ld->labels->ndim);
    shape[0] = cnt;
    *y = ld->o.pin_memory ? lark_empty_pinned(ld->labels->ndim, shape, ld->labels->dtype)
                          : lark_empty(ld->labels->ndim, shape, ld->labels->dtype, NULL);
    if (!*y) {
      rc = lark_error_code();
      lark_tensor_release(*x);
      *x = NULL;
    } else {
      char *yd = lark_data_ptr(*y);
      for (int64_t i = 0; i < cnt; i++) {
        int64_t pos = ld->order[start + i], r = ld->rows ? ld->rows[pos] : pos;
        memcpy(yd + (size_t)i * ld->label_bytes, lab + (size_t)r * ld->label_bytes, ld->label_bytes);
      }
    }
  }
  free(rows);
  free(hard);
  return rc;
}

/* ---- the worker ----------------------------------------------------------------------------- */

static void *worker(void *arg) {
  lark_loader *ld = arg;
  int P = ld->o.prefetch;
  for (int64_t b = 0; b < ld->nbatches; b++) {
    pthread_mutex_lock(&ld->mu);
    while (!ld->stop && ld->produced - ld->consumed >= P) pthread_cond_wait(&ld->cv, &ld->mu);
    bool stop = ld->stop;
    pthread_mutex_unlock(&ld->mu);
    if (stop) break;
    slot s = {NULL, NULL, 0, ""};
    s.rc = make_batch(ld, b, &s.x, &s.y);
    if (s.rc) snprintf(s.err, sizeof s.err, "%s", lark_error());
    pthread_mutex_lock(&ld->mu);
    ld->q[b % P] = s;
    ld->produced++;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    if (s.rc) break;
  }
  return NULL;
}

static void stop_worker(lark_loader *ld) {
  if (ld->thread_live) {
    pthread_mutex_lock(&ld->mu);
    ld->stop = true;
    pthread_cond_broadcast(&ld->cv);
    pthread_mutex_unlock(&ld->mu);
    pthread_join(ld->thread, NULL);
    ld->thread_live = false;
  }
  /* the batches made ahead and never taken */
  for (int64_t b = ld->consumed; ld->o.prefetch > 0 && b < ld->produced; b++) {
    slot *s = &ld->q[b % ld->o.prefetch];
    lark_tensor_release(s->x);
    lark_tensor_release(s->y);
    s->x = s->y = NULL;
  }
  ld->produced = ld->consumed = 0;
  ld->stop = false;
}

/* ---- the public functions ------------------------------------------------------------------- */

void lark_loader_opts_init(lark_loader_opts *o) {
  memset(o, 0, sizeof *o);
  o->batch_size = 1;
  o->prefetch = 2;
  lark_transform_opts_init(&o->transform);
}

lark_loader *lark_loader_new(const lark_tensor *images, const lark_tensor *labels, const int64_t *rows, int64_t nrows,
                             const lark_loader_opts *o) {
  static const char *op = "DataLoader";
  char b1[256], b2[256];
  if (!images) {
    lark_set_error(LARK_ERR_ARG, "%s: no images tensor", op);
    return NULL;
  }
  if (images->ndim < 1) {
    lark_set_error(LARK_ERR_SHAPE, "%s: images must have a sample dim first (N, ...), got a 0-d tensor", op);
    return NULL;
  }
  if (lark_tensor_device(images).kind != LARK_CPU || (labels && lark_tensor_device(labels).kind != LARK_CPU)) {
    lark_set_error(LARK_ERR_DEVICE, "%s: the dataset's tensors must be on the CPU (batches move to the GPU after)", op);
    return NULL;
  }
  if (labels && (labels->ndim < 1 || labels->shape[0] != images->shape[0])) {
    lark_set_error(LARK_ERR_SHAPE, "%s: images %s and labels %s differ in their number of samples", op,
                   lark_shape_str(images->ndim, images->shape, b1, sizeof b1),
                   lark_shape_str(labels->ndim, labels->shape, b2, sizeof b2));
    return NULL;
  }
  if (o->batch_size < 1) {
    lark_set_error(LARK_ERR_ARG, "%s: batch_size must be >= 1, got %lld", op, (long long)o->batch_size);
    return NULL;
  }
  if (o->prefetch < 0 || o->prefetch > 1024) {
    lark_set_error(LARK_ERR_ARG, "%s: prefetch must be in 0..1024, got %d", op, o->prefetch);
    return NULL;
  }
  bool mixing = o->transform.mixup_alpha > 0 || o->transform.cutmix_alpha > 0;
  if (mixing && (!labels || labels->ndim != 1 || labels->dtype != LARK_INT64)) {
    lark_set_error(LARK_ERR_ARG, "%s: mixup and cutmix need hard labels, a 1-D int64 tensor of class indices", op);
    return NULL;
  }
  lark_loader *ld = calloc(1, sizeof *ld);
  if (!ld) {
    lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    return NULL;
  }
  ld->o = *o;
  ld->mixing = mixing;
  pthread_mutex_init(&ld->mu, NULL);
  pthread_cond_init(&ld->cv, NULL);
  if (transform_geom(op, images->ndim - 1, images->shape + 1, images->dtype, &o->transform, &ld->sg)) goto fail;
  ld->images = lark_contiguous(images);
  if (!ld->images) goto fail;
  if (labels && !(ld->labels = lark_contiguous(labels))) goto fail;
  ld->sample_bytes = (size_t)ld->sg.numel * lark_dtype_size(images->dtype);
  if (labels) {
    int64_t per = 1;
    for (int d = 1; d < labels->ndim; d++) per *= labels->shape[d];
    ld->label_bytes = (size_t)per * lark_dtype_size(labels->dtype);
  }
  ld->n = images->shape[0];
  if (rows) {
    ld->rows = malloc(sizeof(int64_t) * (size_t)(nrows ? nrows : 1));
    if (!ld->rows) {
      lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
      goto fail;
    }
    for (int64_t i = 0; i < nrows; i++) {
      if (rows[i] < 0 || rows[i] >= images->shape[0]) {
        lark_set_error(LARK_ERR_INDEX, "%s: subset index %lld is out of range for %lld samples", op,
                       (long long)rows[i], (long long)images->shape[0]);
        goto fail;
      }
      ld->rows[i] = rows[i];
    }
    ld->n = nrows;
  }
  ld->nbatches = o->drop_last ? ld->n / o->batch_size : (ld->n + o->batch_size - 1) / o->batch_size;
  ld->order = malloc(sizeof(int64_t) * (size_t)(ld->n ? ld->n : 1));
  ld->q = calloc((size_t)(o->prefetch ? o->prefetch : 1), sizeof(slot));
  if (!ld->order || !ld->q) {
    lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    goto fail;
  }
  return ld;
fail:
  lark_loader_free(ld);
  return NULL;
}

int64_t lark_loader_num_batches(const lark_loader *ld) { return ld->nbatches; }
int64_t lark_loader_num_samples(const lark_loader *ld) { return ld->n; }

int lark_loader_start(lark_loader *ld, uint64_t epoch) {
  stop_worker(ld);
  ld->epoch = epoch;
  if (ld->o.shuffle) {
    int rc = lark_data_permutation(ld->n, ld->o.seed, epoch, ld->order);
    if (rc) return rc;
  } else {
    for (int64_t i = 0; i < ld->n; i++) ld->order[i] = i;
  }
  ld->started = true;
  if (ld->o.prefetch > 0 && ld->nbatches > 0) {
    /* without a thread (the system refused one) the batches are made in lark_loader_next */
    ld->thread_live = pthread_create(&ld->thread, NULL, worker, ld) == 0;
  }
  return 0;
}

int lark_loader_next(lark_loader *ld, lark_tensor **x, lark_tensor **y) {
  *x = *y = NULL;
  if (!ld->started) return lark_set_error(LARK_ERR_ARG, "DataLoader: next before start (start an epoch first)");
  if (ld->consumed >= ld->nbatches) return 0;
  if (!ld->thread_live) {
    int rc = make_batch(ld, ld->consumed, x, y);
    ld->consumed = rc ? ld->nbatches : ld->consumed + 1;
    return rc ? rc : 1;
  }
  pthread_mutex_lock(&ld->mu);
  while (ld->produced == ld->consumed) pthread_cond_wait(&ld->cv, &ld->mu);
  slot *s = &ld->q[ld->consumed % ld->o.prefetch];
  slot got = *s;
  s->x = s->y = NULL;
  ld->consumed++;
  pthread_cond_broadcast(&ld->cv);
  pthread_mutex_unlock(&ld->mu);
  if (got.rc) {
    stop_worker(ld); /* the worker stopped at the failed batch: end the epoch */
    ld->consumed = ld->produced = ld->nbatches;
    return lark_set_error(got.rc, "%s", got.err);
  }
  *x = got.x;
  *y = got.y;
  return 1;
}

void lark_loader_stop(lark_loader *ld) {
  if (!ld) return;
  stop_worker(ld);
  ld->consumed = ld->nbatches;
}

void lark_loader_free(lark_loader *ld) {
  if (!ld) return;
  if (ld->q) stop_worker(ld);
  pthread_mutex_destroy(&ld->mu);
  pthread_cond_destroy(&ld->cv);
  lark_tensor_release(ld->images);
  lark_tensor_release(ld->labels);
  free(ld->rows);
  free(ld->order);
  free(ld->q);
  free(ld);
}
