/* data_internal.h: what transform.c shares with loader.c (not part of the public API).
 *
 * The loader gathers a batch without copying it: it passes one pointer per sample into the
 * dataset's storage, and transform_rows converts, crops, flips, normalises and mixes them straight
 * into the batch tensor. lark_transform_batch (a tensor in, from Lua) goes through the same
 * function, so the prefetch thread, the synchronous path and the Lua transforms give identical
 * batches. */
#ifndef LARK_IO_DATA_INTERNAL_H
#define LARK_IO_DATA_INTERNAL_H

#include "../lark.h"

/* The geometry of one sample: ndim dims after the batch dim; spatial transforms act on the last two
 * (h, w), channels are the product of the dims before them. */
typedef struct {
  int ndim;
  int64_t shape[LARK_MAX_DIMS];
  int64_t channels, h, w;
  int64_t numel;
} sample_geom;

/* Fills g from a sample shape and checks opts against it and the input dtype; errors name op. */
int transform_geom(const char *op, int ndim, const int64_t *shape, lark_dtype dt, const lark_transform_opts *o,
                   sample_geom *g);

/* rows: n pointers to contiguous samples of dtype dt (geometry sg); hard: n labels (int64, offset by
 * o->label_base) or NULL, needed only when o mixes. Draws from gen in the documented order and makes
 * *x_out (float32, (n, ...)) and, when mixing, *y_soft (float32 (n, num_classes)); draws, when
 * given, receives what was drawn (its arrays sized n by the caller). pinned: *x_out and *y_soft in
 * pinned host memory (lark_empty_pinned), for the loader's pin_memory. */
int transform_rows(const char *op, const char *const *rows, lark_dtype dt, const sample_geom *sg, int64_t n,
                   const int64_t *hard, const lark_transform_opts *o, lark_generator *gen, bool pinned,
                   lark_tensor **x_out, lark_tensor **y_soft, lark_transform_draws *draws);

#endif
