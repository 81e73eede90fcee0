/*
 * dwconv.h: the depth-wise 2-D convolution (groups == channels, channel multiplier 1), NCHW,
 * float32 and float64, on the CPU (and, through dwconv_device.c, on a GPU): forward, gradient of
 * the input, gradient of the weight.
 *
 * core/lark.h includes this header.
 *
 *     out[n][c][oh][ow] = bias[c] + sum_{i<kh, j<kw} weight[c][0][i][j] *
 *                         input[n][c][oh*stride_h - pad_top + i*dil_h][ow*stride_w - pad_left + j*dil_w]
 *
 * with input elements outside the map read as zero. Ho = (H + pad_top + pad_bottom - dil_h*(kh-1) - 1)
 * / stride_h + 1, and the same for Wo.
 */
#ifndef LARK_DWCONV_H
#define LARK_DWCONV_H

#include "../lark.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int kh, kw;                                      /* kernel rows and columns (>= 1) */
  int stride_h, stride_w;                          /* >= 1 */
  int pad_top, pad_bottom, pad_left, pad_right;    /* >= 0 */
  int dil_h, dil_w;                                /* >= 1 */
} lark_conv2d_params;

/* The output size (Ho, Wo) of an (H, W) map, or -1 in both and an error naming op when the
 * parameters are invalid or the padded map is smaller than the dilated kernel. Returns 0 or <0. */
int lark_conv2d_output_size(const char *op, int64_t h, int64_t w, const lark_conv2d_params *p,
                            int64_t *ho, int64_t *wo);

/* out (N, C, Ho, Wo) = dwconv(input (N, C, H, W), weight (C, 1, kh, kw)) + bias (C) or NULL. */
lark_tensor *lark_dwconv2d_forward(const lark_tensor *input, const lark_tensor *weight,
                                   const lark_tensor *bias, const lark_conv2d_params *p);
/* grad_input (N, C, H, W) from grad_out (N, C, Ho, Wo); input_shape = {N, C, H, W}. */
lark_tensor *lark_dwconv2d_backward_input(const lark_tensor *grad_out, const lark_tensor *weight,
                                          const int64_t input_shape[4], const lark_conv2d_params *p);
/* grad_weight (C, 1, kh, kw) from grad_out (N, C, Ho, Wo) and input (N, C, H, W). (The bias
 * gradient is grad_out summed over N, Ho, Wo: a plain reduction.) */
lark_tensor *lark_dwconv2d_backward_weight(const lark_tensor *grad_out, const lark_tensor *input,
                                           const lark_conv2d_params *p);

/* The plain loops, kept as the reference the fast paths are tested against. Same contracts and
 * validation as the functions above; no padding skipping, no vectors, no threads. */
lark_tensor *lark_dwconv2d_forward_reference(const lark_tensor *input, const lark_tensor *weight,
                                             const lark_tensor *bias, const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_backward_input_reference(const lark_tensor *grad_out, const lark_tensor *weight,
                                                    const int64_t input_shape[4], const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_backward_weight_reference(const lark_tensor *grad_out, const lark_tensor *input,
                                                     const lark_conv2d_params *p);

/* SLaK's decomposed kernel: nk (1..8) depth-wise kernels on the same input, summed, in one pass
 * over each plane (51x5 + 5x51 + 5x5 read the input once and write one output):
 *     out (N, C, Ho, Wo) = bias (C) or NULL + sum_k dwconv(input (N, C, H, W), weights[k] (C, 1, kh_k, kw_k), p[k])
 * Every kernel must give the same output size (SLaK pads each (kh_k//2, kw_k//2)). */
lark_tensor *lark_dwconv2d_sum_forward(const lark_tensor *input, int nk, const lark_tensor *const weights[],
                                       const lark_tensor *bias, const lark_conv2d_params p[]);
/* grad_input (N, C, H, W) of that sum: sum_k dwconv2d_backward_input(grad_out, weights[k], p[k]), one
 * pass. (Each kernel's weight gradient is lark_dwconv2d_backward_weight(grad_out, input, &p[k]).) */
lark_tensor *lark_dwconv2d_sum_backward_input(const lark_tensor *grad_out, int nk, const lark_tensor *const weights[],
                                              const int64_t input_shape[4], const lark_conv2d_params p[]);
/* The same, one reference convolution at a time, added up. */
lark_tensor *lark_dwconv2d_sum_forward_reference(const lark_tensor *input, int nk, const lark_tensor *const weights[],
                                                 const lark_tensor *bias, const lark_conv2d_params p[]);
lark_tensor *lark_dwconv2d_sum_backward_input_reference(const lark_tensor *grad_out, int nk,
                                                        const lark_tensor *const weights[],
                                                        const int64_t input_shape[4], const lark_conv2d_params p[]);

/* ---- masked kernels (core/ops/dwconv_sparse.c) -----------------------------------------------
 *
 * SLaK's sparse kernels: each kernel carries a mask (C, 1, kh, kw) bool (true = live tap) or NULL
 * (dense). The results are those of the dense kernels on weight * mask; the weight gradient is the
 * dense one times the mask (0 at masked-out taps; for the "dense gradients" of gradient growth, use
 * lark_dwconv2d_backward_weight). At stride 1, dilation 1 the masked-out taps are skipped when few
 * enough taps are live (see lark_dwconv2d_set_sparse_path); other parameters run the dense
 * kernels on weight * mask. On a device (every operand, masks included, on one GPU) they run the
 * device's dense kernels on weight * mask, with the same checks and messages. */
lark_tensor *lark_dwconv2d_masked_forward(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *mask,
                                          const lark_tensor *bias, const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_masked_backward_input(const lark_tensor *grad_out, const lark_tensor *weight,
                                                 const lark_tensor *mask, const int64_t input_shape[4],
                                                 const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_masked_backward_weight(const lark_tensor *grad_out, const lark_tensor *input,
                                                  const lark_tensor *mask, const lark_conv2d_params *p);
/* The forward pass that records its gradient (autograd): input and weight gradients as above; with
 * dense_grad the weight gradient is the dense one (every tap, for gradient growth). */
lark_tensor *lark_dwconv2d_masked(const lark_tensor *input, const lark_tensor *weight, const lark_tensor *mask,
                                  const lark_tensor *bias, const lark_conv2d_params *p, bool dense_grad);
/* The summed kernels of lark_dwconv2d_sum_*, each with its mask (masks[k] may be NULL), merged
 * into one kernel whose live taps are the union of theirs: one pass per plane. The weight
 * gradients come back in grads[0 .. nk) (C, 1, kh_k, kw_k), new references; returns 0 or <0. */
lark_tensor *lark_dwconv2d_masked_sum_forward(const lark_tensor *input, int nk, const lark_tensor *const weights[],
                                              const lark_tensor *const masks[], const lark_tensor *bias,
                                              const lark_conv2d_params p[]);
lark_tensor *lark_dwconv2d_masked_sum_backward_input(const lark_tensor *grad_out, int nk,
                                                     const lark_tensor *const weights[],
                                                     const lark_tensor *const masks[], const int64_t input_shape[4],
                                                     const lark_conv2d_params p[]);
int lark_dwconv2d_masked_sum_backward_weight(const lark_tensor *grad_out, const lark_tensor *input, int nk,
                                             const lark_tensor *const masks[], const lark_conv2d_params p[],
                                             lark_tensor *grads[]);
/* Which kernels the masked functions run: "auto" (the sparse ones below a density where they win,
 * the default), "sparse" (always, at stride 1 and dilation 1) or "dense" (the dense kernels on
 * weight * mask). For tests and benchmarks; process-wide. Returns 0 or LARK_ERR_ARG. */
int lark_dwconv2d_set_sparse_path(const char *mode);
const char *lark_dwconv2d_sparse_path(void);

#ifdef __cplusplus
}
#endif
#endif /* LARK_DWCONV_H */
