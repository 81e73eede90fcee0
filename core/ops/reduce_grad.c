/* reduce_grad.c: gradients of the reductions (reduce.c records them).
 *
 * sum spreads the output's gradient over every reduced element and mean divides it by their
 * count; var and std go through the centred input; max and min send it to the elements equal to
 * the result (split evenly among ties); norm uses sign(x) |x|^(p-1) / ||x||^(p-1). prod's gradient
 * is the product of the other elements: y / x where no element is zero, and where there are zeros,
 * the product of the non-zero ones at a single zero and 0 everywhere else (y / x would be 0/0). */
#include <math.h>
#include <string.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"

static const char *names[LARK_NREDUCE] = {"sum", "mean", "prod", "max", "min", "var", "std", "norm", "any", "all"};

/* g (and the saved output) shaped with the reduced dims put back as size 1, ready to broadcast
 * against the input; *count gets the number of elements each output reduced. */
static lark_tensor *keep_dims(lark_node *n, const lark_tensor *g, int64_t *count) {
  int nd = n->in_ndim[0], nred = (int)n->iarg[1];
  const int64_t *shape = n->in_shape[0];
  bool reduced[LARK_MAX_DIMS] = {0};
  for (int i = 0; i < nred; i++) reduced[n->iarg[2 + i]] = true;
  if (nred == 0)
    for (int d = 0; d < nd; d++) reduced[d] = true;
  int64_t kshape[LARK_MAX_DIMS];
  *count = 1;
  for (int d = 0; d < nd; d++) {
    kshape[d] = reduced[d] ? 1 : shape[d];
    if (reduced[d]) *count *= shape[d];
  }
  return lark_reshape(g, nd, kshape);
}

static int reduce_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_reduce_op op = (lark_reduce_op)n->iarg[0];
  int nd = n->in_ndim[0];
  const int64_t *shape = n->in_shape[0];
  int64_t count;
  lark_scope s = {0};
  lark_tensor *gk = lark_scope_add(&s, keep_dims(n, g, &count));
  lark_tensor *r = NULL;
  switch (op) {
    case LARK_RED_SUM:
    case LARK_RED_MEAN: {
      lark_tensor *e = gk ? lark_scope_add(&s, lark_expand(gk, nd, shape)) : NULL;
      /* a real tensor, not a stride-0 view: users may write into .grad */
      r = e ? lark_scope_add(&s, lark_contiguous(e)) : NULL;
      if (op == LARK_RED_MEAN) r = S_MULS(&s, r, count ? 1.0 / (double)count : NAN);
      break;
    }
    case LARK_RED_PROD: {
      const lark_tensor *x = lark_node_saved(n, 0);
      if (!x) {
        s.failed = true;
        break;
      }
      lark_reduce_args a = {.ndims = (int)n->iarg[1], .keepdim = true, .p = 2};
      for (int i = 0; i < a.ndims; i++) a.dims[i] = (int)n->iarg[2 + i];
      lark_tensor *zero = S_SCALAR(&s, 0, x), *one = S_SCALAR(&s, 1, x);
      lark_tensor *is_zero = S_BIN(&s, LARK_OP_EQ, x, zero);
      lark_tensor *zf = S_CAST(&s, is_zero, x->dtype);
      lark_tensor *nzeros = zf ? lark_scope_add(&s, lark_reduce(LARK_RED_SUM, zf, &a)) : NULL;
      lark_tensor *x_nz = S_WHERE(&s, is_zero, one, x);
      lark_tensor *p_nz = x_nz ? lark_scope_add(&s, lark_reduce(LARK_RED_PROD, x_nz, &a)) : NULL;
      lark_tensor *no_zero = S_BIN(&s, LARK_OP_EQ, nzeros, zero);
      /* at the single zero of a slice with one: the product of the rest; 0 elsewhere */
      lark_tensor *single = S_MUL(&s, S_CAST(&s, S_BIN(&s, LARK_OP_EQ, nzeros, one), x->dtype), zf);
      r = S_MUL(&s, S_WHERE(&s, no_zero, S_DIV(&s, p_nz, x_nz), S_MUL(&s, single, p_nz)), gk);
      break;
    }
    case LARK_RED_VAR:
    case LARK_RED_STD:
    case LARK_RED_MAX:
    case LARK_RED_MIN:
    case LARK_RED_NORM: {
      const lark_tensor *x = lark_node_saved(n, 0), *y = lark_node_saved(n, 1);
      if (!x || !y) {
        s.failed = true;
        break;
      }
      int64_t c2;
      lark_tensor *yk = lark_scope_add(&s, keep_dims(n, y, &c2));
      if (op == LARK_RED_VAR || op == LARK_RED_STD) {
        /* d var / dx = 2 (x - mean) / (N - unbiased); d std = d var / (2 std) */
        lark_reduce_args a = {.ndims = (int)n->iarg[1], .keepdim = true, .unbiased = true, .p = 2};
        for (int i = 0; i < a.ndims; i++) a.dims[i] = (int)n->iarg[2 + i];
        lark_tensor *mean = lark_scope_add(&s, lark_reduce(LARK_RED_MEAN, x, &a));
        double denom = (double)count - (n->iarg[LARK_MAX_DIMS + 2] ? 1.0 : 0.0);
        lark_tensor *d = S_MULS(&s, S_SUB(&s, x, mean), 2.0 / denom);
        if (op == LARK_RED_STD) d = S_DIV(&s, S_MULS(&s, d, 0.5), yk);
        r = S_MUL(&s, d, gk);
      } else if (op == LARK_RED_MAX || op == LARK_RED_MIN) {
        /* to the elements equal to the result, split evenly among ties */
        lark_tensor *hit = S_CAST(&s, S_BIN(&s, LARK_OP_EQ, x, yk), g->dtype);
        lark_reduce_args a = {.ndims = (int)n->iarg[1], .keepdim = true, .unbiased = true, .p = 2};
        for (int i = 0; i < a.ndims; i++) a.dims[i] = (int)n->iarg[2 + i];
        lark_tensor *ties = hit ? lark_scope_add(&s, lark_reduce(LARK_RED_SUM, hit, &a)) : NULL;
        r = S_MUL(&s, S_DIV(&s, hit, ties), gk);
      } else { /* norm of order p */
        double p = n->darg[0];
        lark_tensor *sign = S_UN(&s, LARK_OP_SIGN, x);
        if (p == 0) {
          r = S_MULS(&s, x, 0);
        } else if (p == 1) {
          r = S_MUL(&s, sign, gk);
        } else if (isinf(p)) {
          lark_tensor *ax = S_UN(&s, LARK_OP_ABS, x);
          lark_tensor *hit = S_CAST(&s, S_BIN(&s, LARK_OP_EQ, ax, yk), g->dtype);
          lark_reduce_args a = {.ndims = (int)n->iarg[1], .keepdim = true, .unbiased = true, .p = 2};
          for (int i = 0; i < a.ndims; i++) a.dims[i] = (int)n->iarg[2 + i];
          lark_tensor *ties = hit ? lark_scope_add(&s, lark_reduce(LARK_RED_SUM, hit, &a)) : NULL;
          r = S_MUL(&s, S_MUL(&s, S_DIV(&s, hit, ties), sign), gk);
        } else {
          /* d ||x||_p / dx = sign(x) |x|^(p-1) / ||x||^(p-1), 0 where the norm is 0 */
          lark_tensor *num = S_MUL(&s, sign, S_BIN(&s, LARK_OP_POW, S_UN(&s, LARK_OP_ABS, x), S_SCALAR(&s, p - 1, x)));
          lark_tensor *den = S_BIN(&s, LARK_OP_POW, yk, S_SCALAR(&s, p - 1, x));
          lark_tensor *q = S_DIV(&s, num, den);
          lark_tensor *zero = S_SCALAR(&s, 0, x);
          q = S_WHERE(&s, S_BIN(&s, LARK_OP_EQ, yk, zero), zero, q);
          r = S_MUL(&s, q, gk);
        }
      }
      break;
    }
    default:
      lark_scope_end(&s, gin, 1);
      return lark_set_error(LARK_ERR_UNIMPL, "backward: the gradient of %s is not implemented yet", names[op]);
  }
  gin[0] = S_KEEP(&s, r);
  if (!r) s.failed = true;
  return lark_scope_end(&s, gin, 1);
}

void lark_record_reduce(lark_reduce_op op, lark_tensor *out, const lark_tensor *in, const lark_reduce_args *args) {
  if (!out || !lark_dtype_is_float(out->dtype) || op == LARK_RED_ANY || op == LARK_RED_ALL) return;
  const lark_tensor *ins[1] = {in};
  lark_node *n = lark_node_new(names[op], reduce_backward, 1, ins);
  if (!n) return;
  n->iarg[0] = op;
  n->iarg[1] = args->ndims;
  for (int i = 0; i < args->ndims; i++) n->iarg[2 + i] = args->dims[i];
  n->iarg[LARK_MAX_DIMS + 2] = args->unbiased;
  n->darg[0] = args->p;
  bool needs = op == LARK_RED_PROD || op == LARK_RED_VAR || op == LARK_RED_STD || op == LARK_RED_MAX || op == LARK_RED_MIN || op == LARK_RED_NORM;
  if (needs && (lark_node_save(n, in) || lark_node_save(n, out))) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}
