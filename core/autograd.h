/*
 * autograd.h: define-by-run reverse-mode differentiation, in C.
 *
 * The mental model is micrograd's: every differentiable op that sees an input requiring grad (with
 * grad mode on) records a node on its output: the backward function, the tensors it will need, and
 * edges to the nodes (or leaf tensors) that produced its inputs. lark_backward() walks the nodes
 * reachable from the root in reverse topological order, hands each its output's gradient, sums
 * what flows into each input, and accumulates into the `.grad` of leaves.
 *
 *     x (leaf, requires_grad) --\
 *                                MulBackward -- y --> SumBackward -- s
 *     w (leaf, requires_grad) --/   saves x, w
 *
 * Ownership: a tensor owns its grad_fn node; a node owns the nodes and leaves of its inputs and
 * detached aliases of what it saved (never a tensor with a grad_fn), so the graph has no cycles
 * and is freed when its last output goes. Saved tensors record their storage's version; if an
 * in-place op changed them before backward, backward fails with a message naming the op.
 */
#ifndef LARK_AUTOGRAD_H
#define LARK_AUTOGRAD_H

#include "lark.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LARK_NODE_MAX_SAVED 4

typedef struct lark_node lark_node;

/* Computes the gradients of the inputs from `grad` (the gradient of the node's output, shaped like
 * it). Sets grad_inputs[i] to a new tensor for each input with needs_grad[i] (shaped like that
 * input, or broadcastable to be summed down to it) or leaves it NULL for a zero gradient. */
typedef int (*lark_backward_fn)(lark_node *n, const lark_tensor *grad, lark_tensor **grad_inputs);

struct lark_node {
  const char *name; /* "mul", "sum", ... as in error messages */
  lark_backward_fn backward;
  int refcount;
  int ninputs;
  /* one entry per input, allocated with the node */
  bool *needs_grad;
  lark_node **next_node;   /* the input's grad_fn, or NULL */
  lark_tensor **next_leaf; /* the input itself when it is a leaf needing grad */
  int *in_ndim;
  int64_t (*in_shape)[LARK_MAX_DIMS];
  lark_dtype *in_dtype;
  int out_ndim;
  int64_t out_shape[LARK_MAX_DIMS];
  int nsaved;
  lark_tensor *saved[LARK_NODE_MAX_SAVED];
  uint64_t saved_version[LARK_NODE_MAX_SAVED];
  int64_t iarg[LARK_MAX_DIMS + 4]; /* op parameters (dims, sizes, flags) */
  double darg[4];
  bool released; /* saved tensors freed after a backward without retain_graph */
  /* scratch of the engine */
  int deps;
  lark_tensor *grad_acc;
  int64_t visit;
};

/* Grad mode (per thread). */
bool lark_grad_enabled(void);
void lark_set_grad_enabled(bool on);

/* A node for an op on these inputs, or NULL (and no error) when grad mode is off or no input needs
 * a gradient. NULL inputs (optional arguments) are allowed. */
lark_node *lark_node_new(const char *name, lark_backward_fn fn, int ninputs, const lark_tensor *const *inputs);
/* Saves a detached alias of t (and its version) for backward; returns 0 or an error. */
int lark_node_save(lark_node *n, const lark_tensor *t);
/* The i-th saved tensor, or NULL with an error if it was modified in place or freed. */
const lark_tensor *lark_node_saved(lark_node *n, int i);
/* Makes n the grad_fn of out (out takes the caller's reference to n) and marks out as requiring
 * grad. Returns out; on n == NULL does nothing. */
lark_tensor *lark_node_attach(lark_node *n, lark_tensor *out);
void lark_node_release(lark_node *n);

/* A view sharing t's storage with no grad_fn and requires_grad false. */
lark_tensor *lark_detach(const lark_tensor *t);
/* g summed over the dims that broadcasting added or expanded, giving shape (ndim, shape). */
lark_tensor *lark_sum_to(const lark_tensor *g, int ndim, const int64_t *shape);

/* Backpropagates from root (grad NULL: root must hold one element, and its gradient is 1).
 * When ninputs is 0, gradients accumulate into the .grad of the leaves; otherwise they are
 * returned in grads_out[i] for inputs[i] (NULL where no path leads) and no .grad changes.
 * Without retain_graph the saved tensors of the graph are freed afterwards. */
int lark_backward(lark_tensor *root, const lark_tensor *grad, bool retain_graph, int ninputs,
                  lark_tensor *const *inputs, lark_tensor **grads_out);

/* Refuses in-place ops that would break the graph: writing into a leaf that requires grad, or
 * into / from a tensor that requires grad while grad mode is on. */
int lark_check_inplace(const char *op, const lark_tensor *t, const lark_tensor *other);

#ifdef __cplusplus
}
#endif
#endif
