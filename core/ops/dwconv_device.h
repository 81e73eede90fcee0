/*
 * dwconv_device.h: the depth-wise convolution on a non-CPU device (the CUDA backend today).
 *
 * core/ops/dwconv.c's front functions hand tensors that live on a GPU to these functions, one
 * line per pass:
 *
 *     if (lark_dwconv2d_on_device(input, weight, bias))
 *       return lark_dwconv2d_device_forward(op, reference, input, weight, bias, p);
 *
 * Each one does the whole front-function job for the device: it checks the arguments with the
 * messages the CPU path gives (dtypes, shapes, parameters), that every tensor is on one device,
 * makes the operands contiguous, allocates the result there and calls the backend's dwconv kernel
 * (core/backend.h). `reference` picks the backend's plain kernels (the _reference functions of
 * dwconv.h). Each returns a new tensor, or NULL with the error set ("<op>: not implemented for
 * cuda" when the backend has no dwconv kernels).
 */
#ifndef LARK_DWCONV_DEVICE_H
#define LARK_DWCONV_DEVICE_H

#include "../lark.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether any of the tensors (NULL ones skipped) lives off the CPU: the front function then
 * dispatches here, which also reports tensors split between the CPU and a device. */
bool lark_dwconv2d_on_device(const lark_tensor *a, const lark_tensor *b, const lark_tensor *c);
/* The same for the summed kernels: x, bias and the nk weights (weights may be NULL). */
bool lark_dwconv2d_sum_on_device(const lark_tensor *x, int nk, const lark_tensor *const weights[],
                                 const lark_tensor *bias);

/* The contracts of lark_dwconv2d_forward, _backward_input, _backward_weight, _sum_forward and
 * _sum_backward_input (dwconv.h), on the tensors' device. op names the caller in errors. */
lark_tensor *lark_dwconv2d_device_forward(const char *op, bool reference, const lark_tensor *input,
                                          const lark_tensor *weight, const lark_tensor *bias,
                                          const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_device_backward_input(const char *op, bool reference, const lark_tensor *grad_out,
                                                 const lark_tensor *weight, const int64_t input_shape[4],
                                                 const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_device_backward_weight(const char *op, bool reference, const lark_tensor *grad_out,
                                                  const lark_tensor *input, const lark_conv2d_params *p);
lark_tensor *lark_dwconv2d_device_sum_forward(const char *op, bool reference, const lark_tensor *input, int nk,
                                              const lark_tensor *const weights[], const lark_tensor *bias,
                                              const lark_conv2d_params p[]);
lark_tensor *lark_dwconv2d_device_sum_backward_input(const char *op, bool reference, const lark_tensor *grad_out,
                                                     int nk, const lark_tensor *const weights[],
                                                     const int64_t input_shape[4], const lark_conv2d_params p[]);

#ifdef __cplusplus
}
#endif
#endif /* LARK_DWCONV_DEVICE_H */
