/* grad.h: helpers for writing backward functions, and the record hooks the op files call.
 *
 * A backward formula chains several ops, any of which may fail. A lark_scope collects every
 * temporary; each S_ helper returns NULL (and marks the scope failed) when an argument is NULL,
 * so a formula reads as one expression and is cleaned up once by lark_scope_end. */
#ifndef LARK_GRAD_H
#define LARK_GRAD_H

#include "../autograd.h"
#include "../backend.h"

#define LARK_SCOPE_MAX 48

typedef struct {
  lark_tensor *t[LARK_SCOPE_MAX];
  int n;
  bool failed;
} lark_scope;

static inline lark_tensor *lark_scope_add(lark_scope *s, lark_tensor *t) {
  if (!t || s->n >= LARK_SCOPE_MAX) {
    if (t) lark_tensor_release(t);
    if (!lark_error_code()) lark_set_error(LARK_ERR_ARG, "backward: formula too long for its scope");
    s->failed = true;
    return NULL;
  }
  s->t[s->n++] = t;
  return t;
}

static inline lark_tensor *S_BIN(lark_scope *s, lark_binary_op op, const lark_tensor *a, const lark_tensor *b) {
  if (!a || !b) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_binary(op, a, b));
}
static inline lark_tensor *S_UN(lark_scope *s, lark_unary_op op, const lark_tensor *a) {
  if (!a) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_unary(op, a));
}
static inline lark_tensor *S_ADD(lark_scope *s, const lark_tensor *a, const lark_tensor *b) { return S_BIN(s, LARK_OP_ADD, a, b); }
static inline lark_tensor *S_SUB(lark_scope *s, const lark_tensor *a, const lark_tensor *b) { return S_BIN(s, LARK_OP_SUB, a, b); }
static inline lark_tensor *S_MUL(lark_scope *s, const lark_tensor *a, const lark_tensor *b) { return S_BIN(s, LARK_OP_MUL, a, b); }
static inline lark_tensor *S_DIV(lark_scope *s, const lark_tensor *a, const lark_tensor *b) { return S_BIN(s, LARK_OP_DIV, a, b); }
static inline lark_tensor *S_NEG(lark_scope *s, const lark_tensor *a) { return S_UN(s, LARK_OP_NEG, a); }
/* a * c, a + c and c - a for a number c */
static inline lark_tensor *S_MULS(lark_scope *s, const lark_tensor *a, double c) {
  if (!a) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_binary_scalar(LARK_OP_MUL, a, c, false, false));
}
static inline lark_tensor *S_ADDS(lark_scope *s, const lark_tensor *a, double c) {
  if (!a) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_binary_scalar(LARK_OP_ADD, a, c, false, false));
}
static inline lark_tensor *S_RSUBS(lark_scope *s, double c, const lark_tensor *a) {
  if (!a) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_binary_scalar(LARK_OP_SUB, a, c, false, true));
}
static inline lark_tensor *S_CAST(lark_scope *s, const lark_tensor *a, lark_dtype dt) {
  if (!a) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_cast(a, dt));
}
/* A 0-d tensor of value c with like's dtype and device. */
static inline lark_tensor *S_SCALAR(lark_scope *s, double c, const lark_tensor *like) {
  if (!like) return (s->failed = true, NULL);
  lark_device d = lark_tensor_device(like);
  return lark_scope_add(s, lark_scalar(c, like->dtype, &d));
}
static inline lark_tensor *S_WHERE(lark_scope *s, const lark_tensor *c, const lark_tensor *a, const lark_tensor *b) {
  if (!c || !a || !b) return (s->failed = true, NULL);
  return lark_scope_add(s, lark_where(c, a, b));
}
/* A new reference to t, to hand out as a gradient (NULL stays NULL). */
static inline lark_tensor *S_KEEP(lark_scope *s, const lark_tensor *t) {
  (void)s;
  return t ? lark_tensor_retain((lark_tensor *)t) : NULL;
}
/* Releases the temporaries; on failure also the gradients handed out, and returns the error. */
static inline int lark_scope_end(lark_scope *s, lark_tensor **gin, int n) {
  for (int i = 0; i < s->n; i++) lark_tensor_release(s->t[i]);
  s->n = 0;
  if (!s->failed) return 0;
  for (int i = 0; i < n; i++) {
    lark_tensor_release(gin[i]);
    gin[i] = NULL;
  }
  return lark_error_code() ? lark_error_code() : LARK_ERR_NOMEM;
}

/* Runs a front function's body with grad mode off, so that the views and casts it makes of its
 * inputs record nothing; the caller records one node for the whole op afterwards. */
#define LARK_NO_GRAD(expr)                       \
  do {                                           \
    bool lark_was_grad_ = lark_grad_enabled();   \
    lark_set_grad_enabled(false);                \
    expr;                                        \
    lark_set_grad_enabled(lark_was_grad_);       \
  } while (0)

/* ---- record hooks: the front functions call these on their result --------------------------- */

void lark_record_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b);
void lark_record_unary(lark_unary_op op, lark_tensor *out, const lark_tensor *a);
void lark_record_clamp(lark_tensor *out, const lark_tensor *a, double lo, double hi);
void lark_record_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b);

/* Views (tensor.c): kind and its parameters in args. */
typedef enum {
  LARK_VIEW_RESHAPE, /* view, reshape, squeeze, unsqueeze, flatten */
  LARK_VIEW_NARROW,  /* args: dim, start, length */
  LARK_VIEW_SELECT,  /* args: dim, index */
  LARK_VIEW_SLICE,   /* args: dim, start, stop, step (after clamping) */
  LARK_VIEW_PERMUTE, /* args: the permutation (transpose too) */
  LARK_VIEW_EXPAND,
  LARK_VIEW_STRIDED, /* as_strided, unfold: gradient through a scatter-add of the view */
  LARK_VIEW_COPY,    /* clone, contiguous, dtype conversions: the gradient passes through */
} lark_view_kind;
void lark_record_view(lark_view_kind kind, lark_tensor *out, const lark_tensor *in, int nargs, const int64_t *args);
void lark_record_matmul(lark_tensor *out, const lark_tensor *a, const lark_tensor *b);
void lark_record_reduce(lark_reduce_op op, lark_tensor *out, const lark_tensor *in, const lark_reduce_args *args);
void lark_record_gather(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index);
void lark_record_index_select(lark_tensor *out, const lark_tensor *t, int dim, const lark_tensor *index);
void lark_record_masked_fill(lark_tensor *out, const lark_tensor *t, const lark_tensor *mask);
/* values picked from t along dim at indices (max/min with a dim, sort, topk); squeezed: the dim
 * was dropped from values and indices (keepdim false) */
void lark_record_pick(const char *name, lark_tensor *values, const lark_tensor *t, int dim, bool squeezed,
                      const lark_tensor *indices);
void lark_record_cumsum(lark_tensor *out, const lark_tensor *t, int dim);
void lark_record_cat(lark_tensor *out, int n, lark_tensor *const *ts, int dim);

#endif
