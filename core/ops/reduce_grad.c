/* reduce_grad.c: gradients of the reductions (reduce.c records them).
 *
 * sum spreads the output's gradient over every reduced element; mean divides it by their count.
 * The other reductions record a node that refuses backward with a clear message until their
 * formulas land, so a gradient never silently skips them. */
#include <string.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"

static const char *names[LARK_NREDUCE] = {"sum", "mean", "prod", "max", "min", "var", "std", "norm", "any", "all"};

static int reduce_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_reduce_op op = (lark_reduce_op)n->iarg[0];
  int nd = n->in_ndim[0], nred = (int)n->iarg[1];
  const int64_t *shape = n->in_shape[0];
  if (op != LARK_RED_SUM && op != LARK_RED_MEAN)
    return lark_set_error(LARK_ERR_UNIMPL, "backward: the gradient of %s is not implemented yet", names[op]);
  /* g with the reduced dims put back as size 1, then spread over them */
  bool reduced[LARK_MAX_DIMS] = {0};
  int64_t count = 1;
  for (int i = 0; i < nred; i++) reduced[n->iarg[2 + i]] = true;
  if (nred == 0)
    for (int d = 0; d < nd; d++) reduced[d] = true;
  int64_t kshape[LARK_MAX_DIMS];
  for (int d = 0; d < nd; d++) {
    kshape[d] = reduced[d] ? 1 : shape[d];
    if (reduced[d]) count *= shape[d];
  }
  lark_tensor *k = lark_reshape(g, nd, kshape);
  lark_tensor *e = k ? lark_expand(k, nd, shape) : NULL;
  lark_tensor *c = e ? lark_contiguous(e) : NULL; /* a real tensor: users may write into .grad */
  lark_tensor_release(k);
  lark_tensor_release(e);
  if (c && op == LARK_RED_MEAN) {
    lark_tensor *m = lark_binary_scalar(LARK_OP_MUL, c, count ? 1.0 / (double)count : 0.0 / 0.0, false, false);
    lark_tensor_release(c);
    c = m;
  }
  gin[0] = c;
  return c ? 0 : lark_error_code();
}

void lark_record_reduce(lark_reduce_op op, lark_tensor *out, const lark_tensor *in, const lark_reduce_args *args) {
  if (!out || !lark_dtype_is_float(out->dtype) || op == LARK_RED_ANY || op == LARK_RED_ALL) return;
  const lark_tensor *ins[1] = {in};
  lark_node *n = lark_node_new(names[op], reduce_backward, 1, ins);
  if (!n) return;
  n->iarg[0] = op;
  n->iarg[1] = args->ndims;
  for (int i = 0; i < args->ndims; i++) n->iarg[2 + i] = args->dims[i];
  lark_node_attach(n, out);
}
