/* index_grad.c: gradients of cat, the indexing ops, max/min along a dim, sort/topk and cumsum
 * (shape.c, index.c, reduce.c and sort.c record them).
 *
 * Most of them move elements, so their gradient moves the output's gradient back: into zeros of
 * the input's shape with scatter_add at the indices the forward read from. */
#include <string.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"

/* zeros shaped like input 0 of n, with g added at `index` along dim (index and g alike in shape) */
static lark_tensor *scatter_back(lark_node *n, int dim, const lark_tensor *index, const lark_tensor *g) {
  lark_device dev = lark_tensor_device(g);
  lark_tensor *z = lark_zeros(n->in_ndim[0], n->in_shape[0], g->dtype, &dev);
  if (z && lark_scatter_add_(z, dim, index, g)) {
    lark_tensor_release(z);
    return NULL;
  }
  return z;
}

/* ---- gather and index_select ---------------------------------------------------------------- */

static int gather_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *index = lark_node_saved(n, 0);
  if (!index) return lark_error_code();
  gin[0] = scatter_back(n, (int)n->iarg[0], index, g);
  return gin[0] ? 0 : lark_error_code();
}

void lark_record_gather(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  const lark_tensor *in[1] = {t};
  lark_node *n = lark_node_new("gather", gather_backward, 1, in);
  if (!n) return;
  n->iarg[0] = dim;
  if (lark_node_save(n, index)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

static int index_select_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *index = lark_node_saved(n, 0);
  if (!index) return lark_error_code();
  int dim = (int)n->iarg[0];
  /* the 1-D index laid along dim and expanded to g's shape: gather's index for the same picks */
  int64_t shape[LARK_MAX_DIMS];
  for (int d = 0; d < g->ndim; d++) shape[d] = d == dim ? g->shape[d] : 1;
  lark_tensor *v = lark_reshape(index, g->ndim, shape);
  lark_tensor *e = v ? lark_expand(v, g->ndim, g->shape) : NULL;
  lark_tensor *c = e ? lark_contiguous(e) : NULL;
  gin[0] = c ? scatter_back(n, dim, c, g) : NULL;
  lark_tensor_release(v);
  lark_tensor_release(e);
  lark_tensor_release(c);
  return gin[0] ? 0 : lark_error_code();
}

void lark_record_index_select(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  const lark_tensor *in[1] = {t};
  lark_node *n = lark_node_new("index_select", index_select_backward, 1, in);
  if (!n) return;
  n->iarg[0] = dim;
  if (lark_node_save(n, index)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

/* ---- masked_fill ---------------------------------------------------------------------------- */

static int masked_fill_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *mask = lark_node_saved(n, 0);
  if (!mask) return lark_error_code();
  gin[0] = lark_masked_fill(g, mask, 0); /* filled elements did not come from the input */
  return gin[0] ? 0 : lark_error_code();
}

void lark_record_masked_fill(lark_tensor *out, const lark_tensor *t, const lark_tensor *mask) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  const lark_tensor *in[1] = {t};
  lark_node *n = lark_node_new("masked_fill", masked_fill_backward, 1, in);
  if (!n) return;
  if (lark_node_save(n, mask)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

/* ---- values picked along a dim: max/min with indices, sort, topk ---------------------------- */

static int pick_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *indices = lark_node_saved(n, 0);
  if (!indices) return lark_error_code();
  int dim = (int)n->iarg[0];
  bool squeezed = n->iarg[1] != 0; /* keepdim false: the dim was dropped */
  lark_tensor *ind = squeezed ? lark_unsqueeze(indices, dim) : lark_tensor_retain((lark_tensor *)indices);
  lark_tensor *gg = squeezed ? lark_unsqueeze(g, dim) : lark_tensor_retain((lark_tensor *)g);
  gin[0] = ind && gg ? scatter_back(n, dim, ind, gg) : NULL;
  lark_tensor_release(ind);
  lark_tensor_release(gg);
  return gin[0] ? 0 : lark_error_code();
}

void lark_record_pick(const char *name, lark_tensor *values, const lark_tensor *t, int dim, bool squeezed,
                      const lark_tensor *indices) {
  if (!values || !indices || !lark_dtype_is_float(values->dtype)) return;
  const lark_tensor *in[1] = {t};
  lark_node *n = lark_node_new(name, pick_backward, 1, in);
  if (!n) return;
  n->iarg[0] = dim;
  n->iarg[1] = squeezed;
  /* a private copy: callers (the Lua binding) turn the indices they get 1-based in place */
  lark_tensor *own = lark_clone(indices);
  int rc = own ? lark_node_save(n, own) : lark_error_code();
  lark_tensor_release(own);
  if (rc) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, values);
}

/* ---- cumsum: the gradient of a running sum is the reversed running sum ---------------------- */

static int cumsum_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_scope s = {0};
  int dim = (int)n->iarg[0];
  lark_reduce_args args = {.ndims = 1, .dims = {dim}, .keepdim = true, .unbiased = true, .p = 2};
  if (g->ndim == 0) args.ndims = 0;
  lark_tensor *total = lark_scope_add(&s, lark_reduce(LARK_RED_SUM, g, &args));
  lark_tensor *run = lark_scope_add(&s, lark_cumsum(g, dim));
  /* sum_{j >= i} g_j = total - sum_{j <= i} g_j + g_i */
  gin[0] = S_KEEP(&s, S_ADD(&s, S_SUB(&s, total, run), g));
  return lark_scope_end(&s, gin, 1);
}

void lark_record_cumsum(lark_tensor *out, const lark_tensor *t, int dim) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  const lark_tensor *in[1] = {t};
  lark_node *n = lark_node_new("cumsum", cumsum_backward, 1, in);
  if (!n) return;
  n->iarg[0] = dim;
  lark_node_attach(n, out);
}

/* ---- cat: each input gets its slice of the gradient ----------------------------------------- */

static int cat_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  int dim = (int)n->iarg[0];
  int64_t off = 0;
  for (int i = 0; i < n->ninputs; i++) {
    if (n->in_ndim[i] != g->ndim) continue; /* an empty 1-D input cat skipped */
    int64_t len = n->in_shape[i][dim];
    if (n->needs_grad[i]) {
      gin[i] = lark_narrow(g, dim, off, len);
      if (!gin[i]) return lark_error_code();
    }
    off += len;
  }
  return 0;
}

void lark_record_cat(lark_tensor *out, int n, lark_tensor *const *ts, int dim) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  lark_node *node = lark_node_new("cat", cat_backward, n, (const lark_tensor *const *)ts);
  if (!node) return;
  node->iarg[0] = lark_wrap_dim("cat", dim, out->ndim);
  lark_node_attach(node, out);
}
