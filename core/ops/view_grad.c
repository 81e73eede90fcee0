/* view_grad.c: the gradients of views and copies (tensor.c records them).
 *
 * A view's gradient puts the output's gradient back where the view took its elements from: a
 * reshape reshapes it back, a permutation applies the inverse one, narrow/select/slice write it
 * into zeros of the input's shape, and expand sums it (the engine sums broadcast dims away). */
#include <string.h>

#include "../autograd.h"
#include "../backend.h"
#include "grad.h"

static int view_backward(lark_node *n, const lark_tensor *g, lark_tensor **gin) {
  lark_view_kind kind = (lark_view_kind)n->iarg[0];
  const int64_t *a = n->iarg + 1;
  int nd = n->in_ndim[0];
  const int64_t *shape = n->in_shape[0];
  lark_device dev = lark_tensor_device(g);
  switch (kind) {
    case LARK_VIEW_RESHAPE:
      gin[0] = lark_reshape(g, nd, shape);
      break;
    case LARK_VIEW_PERMUTE: {
      int inv[LARK_MAX_DIMS];
      for (int i = 0; i < nd; i++) inv[a[i]] = i;
      gin[0] = lark_permute(g, nd, inv);
      break;
    }
    case LARK_VIEW_EXPAND:
    case LARK_VIEW_COPY:
      gin[0] = lark_tensor_retain((lark_tensor *)g);
      if (kind == LARK_VIEW_COPY && n->iarg[1] >= 0) { /* a device move: the gradient moves back */
        lark_device back = {(int8_t)n->iarg[1], (int8_t)n->iarg[2]};
        if (!lark_device_eq(back, dev)) {
          lark_tensor *m = lark_to(g, g->dtype, &back);
          lark_tensor_release(gin[0]);
          gin[0] = m;
        }
      }
      break;
    case LARK_VIEW_NARROW:
    case LARK_VIEW_SELECT:
    case LARK_VIEW_SLICE: {
      lark_tensor *z = lark_zeros(nd, shape, g->dtype, &dev);
      if (!z) return lark_error_code();
      lark_tensor *part = kind == LARK_VIEW_NARROW   ? lark_narrow(z, (int)a[0], a[1], a[2])
                          : kind == LARK_VIEW_SELECT ? lark_select(z, (int)a[0], a[1])
                                                     : lark_slice(z, (int)a[0], a[1], a[2], a[3]);
      int rc = part ? lark_copy_(part, g) : lark_error_code();
      lark_tensor_release(part);
      if (rc) {
        lark_tensor_release(z);
        return rc;
      }
      gin[0] = z;
      break;
    }
    default:
      return lark_set_error(LARK_ERR_UNIMPL, "backward: no gradient for this view");
  }
  return gin[0] ? 0 : lark_error_code();
}

static const char *view_name(lark_view_kind kind) {
  switch (kind) {
    case LARK_VIEW_RESHAPE: return "view";
    case LARK_VIEW_NARROW: return "narrow";
    case LARK_VIEW_SELECT: return "select";
    case LARK_VIEW_SLICE: return "slice";
    case LARK_VIEW_PERMUTE: return "permute";
    case LARK_VIEW_EXPAND: return "expand";
    case LARK_VIEW_COPY: return "copy";
    default: return "view";
  }
}

void lark_record_view(lark_view_kind kind, lark_tensor *out, const lark_tensor *in, int nargs, const int64_t *args) {
  if (!out || !lark_dtype_is_float(out->dtype) || !lark_dtype_is_float(in->dtype)) return;
  const lark_tensor *ins[1] = {in};
  lark_node *n = lark_node_new(view_name(kind), view_backward, 1, ins);
  if (!n) return;
  n->iarg[0] = kind;
  if (nargs) memcpy(n->iarg + 1, args, sizeof(int64_t) * (size_t)nargs);
  if (kind == LARK_VIEW_COPY) {
    lark_device d = lark_tensor_device(in);
    n->iarg[1] = d.kind;
    n->iarg[2] = d.index;
  }
  lark_node_attach(n, out);
}
