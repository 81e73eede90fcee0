/* matmul_grad.c: the gradient of matmul (matmul.c records it).
 *
 * With 1-D operands promoted to a row (a) or a column (b) as the forward did:
 *   grad_a = grad @ b^T,  grad_b = a^T @ grad,
 * then summed over broadcast batch dims and shaped back like the operands. */
#include "../autograd.h"
#include "../backend.h"
#include "grad.h"

/* x with its last two dims swapped (a 1-D x is first made a row or a column). */
static lark_tensor *promote(const lark_tensor *x, bool row) {
  return x->ndim == 1 ? lark_unsqueeze(x, row ? 0 : 1) : lark_tensor_retain((lark_tensor *)x);
}

static int matmul_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  const lark_tensor *a = lark_node_saved(n, 0), *b = lark_node_saved(n, 1);
  if (!a || !b) return lark_error_code();
  lark_scope s = {0};
  lark_tensor *A = lark_scope_add(&s, promote(a, true)), *B = lark_scope_add(&s, promote(b, false));
  /* the output's gradient with the dims that 1-D operands dropped put back */
  lark_tensor *G = NULL;
  if (A && B) {
    int64_t shape[LARK_MAX_DIMS];
    int nb = g->ndim - (a->ndim > 1) - (b->ndim > 1), nd = 0;
    for (int i = 0; i < nb; i++) shape[nd++] = g->shape[i];
    shape[nd++] = a->ndim > 1 ? g->shape[nb] : 1;
    shape[nd++] = b->ndim > 1 ? g->shape[g->ndim - 1] : 1;
    G = lark_scope_add(&s, lark_reshape(g, nd, shape));
  }
  for (int i = 0; i < 2 && !s.failed; i++) {
    if (!n->needs_grad[i]) continue;
    lark_tensor *r = i == 0 ? lark_scope_add(&s, lark_matmul(G, lark_scope_add(&s, lark_transpose(B, -2, -1))))
                            : lark_scope_add(&s, lark_matmul(lark_scope_add(&s, lark_transpose(A, -2, -1)), G));
    const lark_tensor *p = i == 0 ? A : B;
    /* batch dims summed down to the promoted operand, then its 1-D shape restored */
    lark_tensor *sum = r ? lark_scope_add(&s, lark_sum_to(r, p->ndim, p->shape)) : NULL;
    gin[i] = sum ? lark_reshape(sum, n->in_ndim[i], n->in_shape[i]) : NULL;
    if (sum && !gin[i]) s.failed = true;
  }
  return lark_scope_end(&s, gin, 2);
}

void lark_record_matmul(lark_tensor *out, const lark_tensor *a, const lark_tensor *b) {
  if (!out) return;
  const lark_tensor *in[2] = {a, b};
  lark_node *n = lark_node_new("matmul", matmul_backward, 2, in);
  if (!n) return;
  if (lark_node_save(n, a) || lark_node_save(n, b)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}
