/* elementwise_grad.c: the gradients of the elementwise ops (elementwise.c records them).
 *
 * Each backward computes with lark's own ops (grad mode is off inside backward). Broadcast inputs
 * get a gradient of the output's shape; the engine sums it down to the input's shape. */
#include <math.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"

/* ---- binary --------------------------------------------------------------------------------- */

static int binary_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_scope s = {0};
  lark_binary_op op = (lark_binary_op)n->iarg[0];
  const lark_tensor *a = NULL, *b = NULL;
  if (n->nsaved > 0 && !(a = lark_node_saved(n, 0))) return lark_error_code();
  if (n->nsaved > 1 && !(b = lark_node_saved(n, 1))) return lark_error_code();
  switch (op) {
    case LARK_OP_ADD:
      gin[0] = lark_tensor_retain((lark_tensor *)g);
      gin[1] = lark_tensor_retain((lark_tensor *)g);
      break;
    case LARK_OP_SUB:
      gin[0] = lark_tensor_retain((lark_tensor *)g);
      gin[1] = lark_unary(LARK_OP_NEG, g);
      break;
    case LARK_OP_MUL:
      if (n->needs_grad[0]) gin[0] = lark_mul(g, b);
      if (n->needs_grad[1]) gin[1] = lark_mul(g, a);
      break;
    case LARK_OP_DIV: /* d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 */
      if (n->needs_grad[0]) gin[0] = lark_div(g, b);
      if (n->needs_grad[1]) gin[1] = S_KEEP(&s, S_NEG(&s, S_DIV(&s, S_MUL(&s, g, a), S_MUL(&s, b, b))));
      break;
    case LARK_OP_POW: /* d(a^b)/da = b a^(b-1); d(a^b)/db = a^b log a (0 where a == 0) */
      if (n->needs_grad[0])
        gin[0] = S_KEEP(&s, S_MUL(&s, g, S_MUL(&s, b, S_BIN(&s, LARK_OP_POW, a, S_ADDS(&s, b, -1)))));
      if (n->needs_grad[1]) {
        lark_tensor *t = S_MUL(&s, g, S_MUL(&s, S_BIN(&s, LARK_OP_POW, a, b), S_UN(&s, LARK_OP_LOG, a)));
        lark_tensor *zero = S_SCALAR(&s, 0, t);
        gin[1] = S_KEEP(&s, S_WHERE(&s, S_BIN(&s, LARK_OP_EQ, a, zero), zero, t));
      }
      break;
    case LARK_OP_MAXIMUM:
    case LARK_OP_MINIMUM: { /* the gradient goes to the larger (smaller) side; ties split it evenly */
      lark_binary_op wins = op == LARK_OP_MAXIMUM ? LARK_OP_GT : LARK_OP_LT;
      lark_tensor *half = S_MULS(&s, S_CAST(&s, S_BIN(&s, LARK_OP_EQ, a, b), g->dtype), 0.5);
      lark_tensor *wa = S_ADD(&s, S_CAST(&s, S_BIN(&s, wins, a, b), g->dtype), half);
      lark_tensor *wb = S_ADD(&s, S_CAST(&s, S_BIN(&s, wins, b, a), g->dtype), half);
      if (n->needs_grad[0]) gin[0] = S_KEEP(&s, S_MUL(&s, g, wa));
      if (n->needs_grad[1]) gin[1] = S_KEEP(&s, S_MUL(&s, g, wb));
      break;
    }
    case LARK_OP_FMOD: /* fmod(a, b) = a - trunc(a / b) b */
      gin[0] = lark_tensor_retain((lark_tensor *)g);
      if (n->needs_grad[1]) {
        lark_tensor *q = S_DIV(&s, S_SUB(&s, a, S_BIN(&s, LARK_OP_FMOD, a, b)), b);
        gin[1] = S_KEEP(&s, S_NEG(&s, S_MUL(&s, g, q)));
      }
      break;
    default:
      break;
  }
  return lark_scope_end(&s, gin, n->ninputs);
}

void lark_record_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b) {
  if (!out || !lark_dtype_is_float(out->dtype)) return; /* comparisons, logical ops, integers */
  const lark_tensor *in[2] = {a, b};
  lark_node *n = lark_node_new(lark_binary_op_name(op), binary_backward, 2, in);
  if (!n) return;
  n->iarg[0] = op;
  bool save = op != LARK_OP_ADD && op != LARK_OP_SUB;
  if (save && (lark_node_save(n, a) || lark_node_save(n, b))) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

/* ---- unary ---------------------------------------------------------------------------------- */

static int unary_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_scope s = {0};
  lark_unary_op op = (lark_unary_op)n->iarg[0];
  const lark_tensor *x = lark_node_saved(n, 0), *y = lark_node_saved(n, 1); /* input, output */
  if (!x || !y) return lark_error_code();
  lark_tensor *r = NULL;
  switch (op) {
    case LARK_OP_NEG: r = S_NEG(&s, g); break;
    case LARK_OP_ABS: r = S_MUL(&s, g, S_UN(&s, LARK_OP_SIGN, x)); break;
    case LARK_OP_EXP: r = S_MUL(&s, g, y); break;
    case LARK_OP_LOG: r = S_DIV(&s, g, x); break;
    case LARK_OP_SQRT: r = S_DIV(&s, S_MULS(&s, g, 0.5), y); break;
    case LARK_OP_RSQRT: r = S_MUL(&s, S_MULS(&s, g, -0.5), S_MUL(&s, y, S_MUL(&s, y, y))); break;
    case LARK_OP_SIN: r = S_MUL(&s, g, S_UN(&s, LARK_OP_COS, x)); break;
    case LARK_OP_COS: r = S_NEG(&s, S_MUL(&s, g, S_UN(&s, LARK_OP_SIN, x))); break;
    case LARK_OP_TANH: r = S_MUL(&s, g, S_RSUBS(&s, 1, S_MUL(&s, y, y))); break;
    case LARK_OP_SIGMOID: r = S_MUL(&s, g, S_MUL(&s, y, S_RSUBS(&s, 1, y))); break;
    case LARK_OP_RELU: { /* g where x > 0: a byte mask and one select, not a float mask and a multiply */
      lark_tensor *zero = S_SCALAR(&s, 0, g);
      r = S_WHERE(&s, S_BIN(&s, LARK_OP_GT, x, S_SCALAR(&s, 0, x)), g, zero);
      break;
    }
    case LARK_OP_SQUARE: r = S_MUL(&s, S_MULS(&s, g, 2), x); break;
    case LARK_OP_RECIPROCAL: r = S_NEG(&s, S_MUL(&s, g, S_MUL(&s, y, y))); break;
    case LARK_OP_FLOOR: case LARK_OP_CEIL: case LARK_OP_ROUND: case LARK_OP_SIGN:
      r = S_MULS(&s, g, 0); /* piecewise constant: zero almost everywhere, as PyTorch returns */
      break;
    default: break;
  }
  gin[0] = S_KEEP(&s, r);
  return lark_scope_end(&s, gin, 1);
}

void lark_record_unary(lark_unary_op op, lark_tensor *out, const lark_tensor *a) {
  if (!out || !lark_dtype_is_float(out->dtype) || op == LARK_OP_NOT) return;
  const lark_tensor *in[1] = {a};
  lark_node *n = lark_node_new(lark_unary_op_name(op), unary_backward, 1, in);
  if (!n) return;
  n->iarg[0] = op;
  if (lark_node_save(n, a) || lark_node_save(n, out)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

/* ---- clamp and where ------------------------------------------------------------------------ */

static int clamp_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_scope s = {0};
  const lark_tensor *x = lark_node_saved(n, 0);
  if (!x) return lark_error_code();
  double lo = n->darg[0], hi = n->darg[1];
  /* the gradient passes where the input was inside [lo, hi] */
  lark_tensor *keep = S_CAST(&s, S_SCALAR(&s, 1, g), LARK_BOOL);
  if (lo == lo) keep = S_BIN(&s, LARK_OP_AND, keep, S_BIN(&s, LARK_OP_GE, x, S_SCALAR(&s, lo, x)));
  if (hi == hi) keep = S_BIN(&s, LARK_OP_AND, keep, S_BIN(&s, LARK_OP_LE, x, S_SCALAR(&s, hi, x)));
  gin[0] = S_KEEP(&s, S_MUL(&s, g, S_CAST(&s, keep, g->dtype)));
  return lark_scope_end(&s, gin, 1);
}

void lark_record_clamp(lark_tensor *out, const lark_tensor *a, double lo, double hi) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  const lark_tensor *in[1] = {a};
  lark_node *n = lark_node_new("clamp", clamp_backward, 1, in);
  if (!n) return;
  n->darg[0] = lo;
  n->darg[1] = hi;
  if (lark_node_save(n, a)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}

static int where_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_scope s = {0};
  const lark_tensor *c = lark_node_saved(n, 0);
  if (!c) return lark_error_code();
  lark_tensor *zero = S_SCALAR(&s, 0, g);
  if (n->needs_grad[1]) gin[1] = S_KEEP(&s, S_WHERE(&s, c, g, zero));
  if (n->needs_grad[2]) gin[2] = S_KEEP(&s, S_WHERE(&s, c, zero, g));
  return lark_scope_end(&s, gin, 3);
}

void lark_record_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b) {
  if (!out || !lark_dtype_is_float(out->dtype)) return;
  const lark_tensor *in[3] = {NULL, a, b};
  lark_node *n = lark_node_new("where", where_backward, 3, in);
  if (!n) return;
  if (lark_node_save(n, cond)) {
    lark_node_release(n);
    return;
  }
  lark_node_attach(n, out);
}
