/* autograd.c: nodes, grad mode and the backward engine (the model is described in autograd.h). */
#include "autograd.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"

static _Thread_local int grad_disabled; /* a count, so nested no_grad scopes restore correctly */

bool lark_grad_enabled(void) { return grad_disabled == 0; }
void lark_set_grad_enabled(bool on) { grad_disabled = on ? 0 : 1; }

lark_tensor *lark_detach(const lark_tensor *t) {
  lark_tensor *v = lark_as_strided(t, t->ndim, t->shape, t->stride, t->offset);
  if (v) {
    v->requires_grad = false;
    v->grad_fn = NULL;
  }
  return v;
}

lark_node *lark_node_new(const char *name, lark_backward_fn fn, int ninputs, const lark_tensor *const *inputs) {
  if (!lark_grad_enabled()) return NULL;
  bool any = false;
  for (int i = 0; i < ninputs; i++) any = any || (inputs[i] && inputs[i]->requires_grad);
  if (!any) return NULL;
  /* the node and its per-input arrays in one block, the widest types first */
  size_t k = (size_t)ninputs;
  size_t size = sizeof(lark_node) + k * (sizeof(int64_t[LARK_MAX_DIMS]) + sizeof(lark_node *) +
                                         sizeof(lark_tensor *) + sizeof(int) + sizeof(lark_dtype) + sizeof(bool));
  lark_node *n = calloc(1, size);
  if (!n) return NULL; /* the op still succeeds; its output simply has no history */
  char *p = (char *)(n + 1);
  n->in_shape = (int64_t(*)[LARK_MAX_DIMS])p, p += k * sizeof(int64_t[LARK_MAX_DIMS]);
  n->next_node = (lark_node **)p, p += k * sizeof(lark_node *);
  n->next_leaf = (lark_tensor **)p, p += k * sizeof(lark_tensor *);
  n->in_ndim = (int *)p, p += k * sizeof(int);
  n->in_dtype = (lark_dtype *)p, p += k * sizeof(lark_dtype);
  n->needs_grad = (bool *)p;
  n->name = name;
  n->backward = fn;
  n->refcount = 1;
  n->ninputs = ninputs;
  for (int i = 0; i < ninputs; i++) {
    const lark_tensor *t = inputs[i];
    if (!t) continue;
    n->in_ndim[i] = t->ndim;
    memcpy(n->in_shape[i], t->shape, sizeof(int64_t) * (size_t)t->ndim);
    n->in_dtype[i] = t->dtype;
    if (!t->requires_grad) continue;
    n->needs_grad[i] = true;
    if (t->grad_fn) {
      n->next_node[i] = t->grad_fn;
      t->grad_fn->refcount++;
    } else {
      n->next_leaf[i] = lark_tensor_retain((lark_tensor *)t);
    }
  }
  return n;
}

int lark_node_save(lark_node *n, const lark_tensor *t) {
  if (n->nsaved >= LARK_NODE_MAX_SAVED) return lark_set_error(LARK_ERR_ARG, "%s: too many saved tensors", n->name);
  lark_tensor *d = lark_detach(t);
  if (!d) return lark_error_code();
  n->saved_version[n->nsaved] = t->storage ? t->storage->version : 0;
  n->saved[n->nsaved++] = d;
  return 0;
}

const lark_tensor *lark_node_saved(lark_node *n, int i) {
  const lark_tensor *t = n->saved[i];
  if (n->released || !t) {
    lark_set_error(LARK_ERR_ARG,
                   "backward: the graph through %s was already freed by an earlier backward "
                   "(pass retain_graph = true to backward through it twice)", n->name);
    return NULL;
  }
  if (!t->storage || t->storage->version != n->saved_version[i]) {
    lark_set_error(LARK_ERR_ARG,
                   "backward: a tensor that %s saved for its gradient was modified by an in-place op "
                   "(version %llu, saved at %llu); compute it out of place or clone() it first",
                   n->name, t->storage ? (unsigned long long)t->storage->version : 0ULL,
                   (unsigned long long)n->saved_version[i]);
    return NULL;
  }
  return t;
}

lark_tensor *lark_node_attach(lark_node *n, lark_tensor *out) {
  if (!n) return out;
  if (!out) {
    lark_node_release(n);
    return NULL;
  }
  n->out_ndim = out->ndim;
  memcpy(n->out_shape, out->shape, sizeof(int64_t) * (size_t)out->ndim);
  lark_node_release(out->grad_fn);
  out->grad_fn = n;
  out->requires_grad = true;
  return out;
}

static void free_saved(lark_node *n) {
  for (int i = 0; i < n->nsaved; i++) {
    lark_tensor_release(n->saved[i]);
    n->saved[i] = NULL;
  }
}

/* Iterative, so that dropping a chain of thousands of nodes cannot overflow the C stack. */
void lark_node_release(lark_node *n) {
  if (!n) return;
  lark_node **stack = NULL;
  size_t len = 0, cap = 0;
  lark_node *cur = n;
  for (;;) {
    if (cur && --cur->refcount == 0) {
      free_saved(cur);
      lark_tensor_release(cur->grad_acc);
      for (int i = 0; i < cur->ninputs; i++) {
        lark_tensor_release(cur->next_leaf[i]);
        if (cur->next_node[i]) {
          if (len == cap) {
            size_t nc = cap ? 2 * cap : 16;
            lark_node **ns = realloc(stack, nc * sizeof *ns);
            if (!ns) continue; /* out of memory: leak this branch rather than crash */
            stack = ns;
            cap = nc;
          }
          stack[len++] = cur->next_node[i];
        }
      }
      free(cur);
    }
    if (!len) break;
    cur = stack[--len];
  }
  free(stack);
}

/* ---- broadcasting in reverse ---------------------------------------------------------------- */

lark_tensor *lark_sum_to(const lark_tensor *g, int ndim, const int64_t *shape) {
  if (g->ndim == ndim && memcmp(g->shape, shape, sizeof(int64_t) * (size_t)ndim) == 0)
    return lark_tensor_retain((lark_tensor *)g);
  lark_reduce_args args = {0};
  args.keepdim = true;
  args.unbiased = true;
  args.p = 2;
  int lead = g->ndim - ndim;
  for (int d = 0; d < g->ndim; d++) {
    int sd = d - lead;
    if (sd < 0 || (shape[sd] == 1 && g->shape[d] != 1)) args.dims[args.ndims++] = d;
  }
  lark_tensor *s;
  if (args.ndims == 0) s = lark_tensor_retain((lark_tensor *)g);
  else s = lark_reduce(LARK_RED_SUM, g, &args);
  if (!s) return NULL;
  lark_tensor *r = lark_reshape(s, ndim, shape);
  lark_tensor_release(s);
  return r;
}

/* ---- in-place checks ------------------------------------------------------------------------ */

int lark_check_inplace(const char *op, const lark_tensor *t, const lark_tensor *other) {
  if (!lark_grad_enabled()) return 0;
  if (t->requires_grad && !t->grad_fn)
    return lark_set_error(LARK_ERR_ARG,
                          "%s: a leaf tensor that requires grad cannot be changed in place while grad mode is "
                          "on (wrap the update in lark.no_grad(), as optimizers do)", op);
  if (t->requires_grad || (other && other->requires_grad))
    return lark_set_error(LARK_ERR_ARG,
                          "%s: in-place ops on tensors that require grad are not supported; use the out-of-place "
                          "form (t = t + u) or detach()", op);
  return 0;
}

/* ---- the engine ----------------------------------------------------------------------------- */

static int64_t visit_epoch;

typedef struct {
  lark_node **items;
  size_t len, cap;
} node_list;

static int list_push(node_list *l, lark_node *n) {
  if (l->len == l->cap) {
    size_t nc = l->cap ? 2 * l->cap : 64;
    lark_node **ni = realloc(l->items, nc * sizeof *ni);
    if (!ni) return lark_set_error(LARK_ERR_NOMEM, "backward: out of memory");
    l->items = ni;
    l->cap = nc;
  }
  l->items[l->len++] = n;
  return 0;
}

/* g added into *acc (which may be NULL), both shaped alike. */
static int accumulate(lark_tensor **acc, lark_tensor *g) {
  if (!*acc) {
    *acc = g;
    return 0;
  }
  lark_tensor *s = lark_add(*acc, g);
  lark_tensor_release(g);
  if (!s) return lark_error_code();
  lark_tensor_release(*acc);
  *acc = s;
  return 0;
}

/* A leaf's .grad: a dense tensor of its own, as PyTorch stores it. Gradients often arrive as views
 * (the transpose in linear's backward, an expanded sum), and optimisers and users write into .grad
 * and expect it contiguous. */
static int accumulate_leaf(lark_tensor **acc, lark_tensor *g) {
  if (!*acc && !lark_is_contiguous(g)) {
    lark_tensor *c = lark_contiguous(g);
    lark_tensor_release(g);
    if (!c) return lark_error_code();
    g = c;
  }
  return accumulate(acc, g);
}

/* The input's gradient as its own dtype and shape (broadcast dims summed away). */
static lark_tensor *fit_input(lark_node *n, int i, lark_tensor *g) {
  lark_tensor *s = lark_sum_to(g, n->in_ndim[i], n->in_shape[i]);
  lark_tensor_release(g);
  if (!s) return NULL;
  if (s->dtype != n->in_dtype[i] && lark_dtype_is_float(n->in_dtype[i])) {
    lark_tensor *c = lark_cast(s, n->in_dtype[i]);
    lark_tensor_release(s);
    s = c;
  }
  return s;
}

int lark_backward(lark_tensor *root, const lark_tensor *grad, bool retain_graph, int ninputs,
                  lark_tensor *const *inputs, lark_tensor **grads_out) {
  char a[256], b[256];
  for (int i = 0; i < ninputs; i++) grads_out[i] = NULL;
  if (!root->requires_grad)
    return lark_set_error(LARK_ERR_ARG,
                          "backward: the tensor does not require grad and has no grad_fn (set requires_grad on the "
                          "inputs before computing it)");
  lark_tensor *g0;
  if (grad) {
    if (grad->ndim != root->ndim || memcmp(grad->shape, root->shape, sizeof(int64_t) * (size_t)root->ndim))
      return lark_set_error(LARK_ERR_SHAPE, "backward: the gradient has shape %s but the tensor has shape %s",
                            lark_shape_str(grad->ndim, grad->shape, a, sizeof a),
                            lark_shape_str(root->ndim, root->shape, b, sizeof b));
    g0 = lark_to(grad, root->dtype, NULL);
  } else {
    if (lark_numel(root) != 1)
      return lark_set_error(LARK_ERR_SHAPE,
                            "backward: a gradient can be implied only for a tensor of one element, this one has shape "
                            "%s (pass the gradient: t:backward(grad))",
                            lark_shape_str(root->ndim, root->shape, a, sizeof a));
    lark_device dev = lark_tensor_device(root);
    g0 = lark_ones(root->ndim, root->shape, root->dtype, &dev);
  }
  if (!g0) return lark_error_code();

  int was = grad_disabled;
  grad_disabled = 1; /* gradients are computed without recording a graph of their own */
  int rc = 0;

  if (!root->grad_fn) { /* a leaf: its own gradient */
    if (ninputs) {
      for (int i = 0; i < ninputs; i++)
        if (inputs[i] == root) grads_out[i] = lark_tensor_retain(g0);
      lark_tensor_release(g0);
    } else {
      rc = accumulate_leaf(&root->grad, g0);
    }
    grad_disabled = was;
    return rc;
  }

  /* 1. the nodes reachable from root, and how many consumers inside the graph each has */
  node_list all = {0}, stack = {0}, ready = {0};
  int64_t epoch = ++visit_epoch;
  root->grad_fn->visit = epoch;
  root->grad_fn->deps = 0;
  if ((rc = list_push(&stack, root->grad_fn)) || (rc = list_push(&all, root->grad_fn))) goto done;
  while (stack.len) {
    lark_node *n = stack.items[--stack.len];
    for (int i = 0; i < n->ninputs; i++) {
      lark_node *m = n->next_node[i];
      if (!m) continue;
      if (m->visit != epoch) {
        m->visit = epoch;
        m->deps = 0;
        if ((rc = list_push(&stack, m)) || (rc = list_push(&all, m))) goto done;
      }
      m->deps++;
    }
  }

  /* 2. Kahn's order: a node runs once every consumer has handed it its gradient */
  root->grad_fn->grad_acc = g0;
  g0 = NULL;
  if ((rc = list_push(&ready, root->grad_fn))) goto done;
  while (ready.len && !rc) {
    lark_node *n = ready.items[--ready.len];
    lark_tensor *g = n->grad_acc;
    n->grad_acc = NULL;
    for (int i = 0; i < ninputs; i++) /* autograd.grad of a non-leaf: its gradient is n's */
      if (inputs[i]->grad_fn == n && g) grads_out[i] = lark_tensor_retain(g);
    lark_tensor **gin = calloc((size_t)n->ninputs + 1, sizeof *gin);
    if (!gin) {
      lark_tensor_release(g);
      rc = lark_set_error(LARK_ERR_NOMEM, "backward: out of memory");
      break;
    }
    if (g) {
      rc = n->backward(n, g, gin);
      if (rc && !lark_error_code()) rc = lark_set_error(rc, "backward: %s failed", n->name);
    }
    lark_tensor_release(g);
    for (int i = 0; i < n->ninputs; i++) {
      lark_tensor *gi = gin[i];
      if (!rc && gi && n->needs_grad[i]) {
        gi = fit_input(n, i, gi);
        if (!gi) rc = lark_error_code();
      } else {
        lark_tensor_release(gi);
        gi = NULL;
      }
      lark_node *m = n->next_node[i];
      if (m) {
        if (gi && !rc) rc = accumulate(&m->grad_acc, gi);
        else lark_tensor_release(gi);
        if (--m->deps == 0 && !rc) rc = list_push(&ready, m);
      } else if (n->next_leaf[i] && gi && !rc) {
        lark_tensor *leaf = n->next_leaf[i];
        if (ninputs) {
          bool wanted = false;
          for (int k = 0; k < ninputs; k++)
            if (inputs[k] == leaf) {
              lark_tensor_retain(gi);
              if ((rc = accumulate(&grads_out[k], gi))) break;
              wanted = true;
            }
          (void)wanted;
          lark_tensor_release(gi);
        } else {
          rc = accumulate_leaf(&leaf->grad, gi);
        }
      } else {
        lark_tensor_release(gi);
      }
    }
    free(gin);
  }

done:
  for (size_t i = 0; i < all.len; i++) {
    lark_node *n = all.items[i];
    lark_tensor_release(n->grad_acc);
    n->grad_acc = NULL;
    if (!retain_graph) {
      free_saved(n);
      n->released = true;
    }
  }
  lark_tensor_release(g0);
  free(all.items);
  free(stack.items);
  free(ready.items);
  if (rc)
    for (int i = 0; i < ninputs; i++) {
      lark_tensor_release(grads_out[i]);
      grads_out[i] = NULL;
    }
  grad_disabled = was;
  return rc;
}
