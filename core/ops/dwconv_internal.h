/* dwconv_internal.h: the argument checks of core/ops/dwconv.c, shared with the files that run the
 * same passes elsewhere (dwconv_device.c on a GPU, dwconv_sparse.c with masks), so a bad argument
 * gets the same message on every path. They check shapes, dtypes and parameters, not devices. */
#ifndef LARK_DWCONV_INTERNAL_H
#define LARK_DWCONV_INTERNAL_H

#include "dwconv.h"

/* x is the input (N, C, H, W) (input_shape NULL) or the grad_out of an input of input_shape; the
 * nk kernels (C, 1, kh_k, kw_k) of x's dtype all give the output (*ho, *wo) (weights NULL: the
 * params alone, for weight gradients); bias (C) or NULL. Returns 0 or the error set. */
int lark_dwconv_check_args(const char *op, const lark_tensor *x, const int64_t input_shape[4], int nk,
                           const lark_tensor *const weights[], const lark_tensor *bias, const lark_conv2d_params p[],
                           int64_t *ho, int64_t *wo);
/* a and b: 4-D float tensors with storage, of one dtype (the single-kernel passes' message). */
int lark_dwconv_check_pair(const char *op, const lark_tensor *a, const char *an, const lark_tensor *b, const char *bn);

#endif
