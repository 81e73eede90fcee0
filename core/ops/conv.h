/*
 * conv.h: dense and grouped 2-D convolution (im2col + GEMM), pooling and constant padding, NCHW,
 * float32 and float64, on the CPU and (through the backend's im2col/col2im and pooling kernels,
 * cuBLAS for the GEMMs) on a GPU, with autograd.
 *
 * core/lark.h includes this header.
 *
 *     out[n][co][oh][ow] = bias[co] + sum_{ci < Cin/groups, i < kh, j < kw} weight[co][ci][i][j] *
 *         input[n][g*Cin/groups + ci][oh*stride_h - pad_top + i*dil_h][ow*stride_w - pad_left + j*dil_w]
 *
 * with g = co / (Cout/groups) and input elements outside the map read as zero.
 * Ho = (H + pad_top + pad_bottom - dil_h*(kh-1) - 1) / stride_h + 1, and the same for Wo.
 */
#ifndef LARK_CONV_H
#define LARK_CONV_H

#include "../lark.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int stride_h, stride_w;                       /* >= 1 */
  int pad_top, pad_bottom, pad_left, pad_right; /* >= 0 */
  int dil_h, dil_w;                             /* >= 1 */
  int groups;                                   /* >= 1, divides Cin and Cout */
} lark_conv2d_args;

/* out (N, Cout, Ho, Wo) = conv2d(input (N, Cin, H, W), weight (Cout, Cin/groups, kh, kw)) + bias
 * (Cout) or NULL. Records autograd (gradients for input, weight and bias). */
lark_tensor *lark_conv2d(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *bias,
                         const lark_conv2d_args *a);
/* grad_input (N, Cin, H, W) from grad_out (N, Cout, Ho, Wo); input_shape = {N, Cin, H, W}. */
lark_tensor *lark_conv2d_backward_input(const lark_tensor *grad_out, const lark_tensor *weight,
                                        const int64_t input_shape[4], const lark_conv2d_args *a);
/* grad_weight (Cout, Cin/groups, kh, kw) from grad_out and input; weight_shape its shape. */
lark_tensor *lark_conv2d_backward_weight(const lark_tensor *grad_out, const lark_tensor *input,
                                         const int64_t weight_shape[4], const lark_conv2d_args *a);

/* The plain 7-deep loops (in float64, result in the operands' dtype), no autograd: the reference
 * the im2col path is tested against. Same validation as above. */
lark_tensor *lark_conv2d_reference(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *bias,
                                   const lark_conv2d_args *a);
lark_tensor *lark_conv2d_backward_input_reference(const lark_tensor *grad_out, const lark_tensor *weight,
                                                  const int64_t input_shape[4], const lark_conv2d_args *a);
lark_tensor *lark_conv2d_backward_weight_reference(const lark_tensor *grad_out, const lark_tensor *input,
                                                   const int64_t weight_shape[4], const lark_conv2d_args *a);

/* ---- pooling and padding (pool.c) ----------------------------------------------------------- */

typedef struct {
  int kh, kw;             /* window, >= 1 */
  int stride_h, stride_w; /* >= 1 */
  int pad_h, pad_w;       /* >= 0 and at most half the window, as PyTorch requires */
} lark_pool2d_args;

/* Over (N, C, H, W) or (C, H, W) inputs; Ho = (H + 2 pad_h - kh) / stride_h + 1. All record autograd. */
/* Mean over each window, padding counted as zeros in the divisor kh*kw (count_include_pad). */
lark_tensor *lark_avg_pool2d(const lark_tensor *input, const lark_pool2d_args *a);
/* Max over each window (padding ignored); indices (optional, NULL to skip) gets the int64 0-based
 * position ih*W + iw of the first maximum in each window. NaN wins, as in PyTorch. */
lark_tensor *lark_max_pool2d(const lark_tensor *input, const lark_pool2d_args *a, lark_tensor **indices);
/* Mean over windows [floor(i*H/oh), ceil((i+1)*H/oh)) x the same for columns. */
lark_tensor *lark_adaptive_avg_pool2d(const lark_tensor *input, int64_t out_h, int64_t out_w);
/* Constant padding as torch.nn.functional.pad: pads = {left, right} of the last dim, then {top,
 * bottom} of the one before, ...; npads even, <= 2*ndim; negative pads crop. Any dtype. */
lark_tensor *lark_pad(const lark_tensor *input, int npads, const int64_t *pads, double value);

#ifdef __cplusplus
}
#endif
#endif /* LARK_CONV_H */
