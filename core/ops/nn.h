/* nn.h: the fused neural-network ops of norm.c, softmax.c and activation.c (forward, backward
 * kernels and autograd recording). Every function follows lark.h's conventions: 0-based dims and
 * class indices, a new tensor or NULL with lark_set_error. float32 and float64 on the CPU.
 * core/lark.h includes this header. */
#ifndef LARK_NN_H
#define LARK_NN_H

#include "../lark.h"

/* ---- norm.c ---- */

/* x (N, C, ...) normalised per channel. training: the batch statistics (mean, biased variance over
 * every dim but 1) are used, and running_mean / running_var (C) (either may be NULL) are updated in
 * place: running = (1 - momentum) * running + momentum * stat, with the UNBIASED variance.
 * Otherwise running_mean and running_var (required) are used. weight, bias (C) may be NULL. */
lark_tensor *lark_batch_norm(const lark_tensor *x, lark_tensor *running_mean, lark_tensor *running_var,
                             const lark_tensor *weight, const lark_tensor *bias, bool training, double momentum,
                             double eps);
/* x (..., C) normalised over its last dim; weight, bias (C) or NULL. */
lark_tensor *lark_layer_norm(const lark_tensor *x, const lark_tensor *weight, const lark_tensor *bias, double eps);
/* x (N, C, ...) normalised over dim 1 at every other position (ConvNeXt's channels_first
 * LayerNorm); weight, bias (C) or NULL. */
lark_tensor *lark_layer_norm_channels_first(const lark_tensor *x, const lark_tensor *weight, const lark_tensor *bias,
                                            double eps);

/* ---- softmax.c ---- */

typedef enum { LARK_REDUCTION_NONE = 0, LARK_REDUCTION_MEAN = 1, LARK_REDUCTION_SUM = 2 } lark_reduction;

lark_tensor *lark_softmax(const lark_tensor *x, int dim);     /* dim may be negative */
lark_tensor *lark_log_softmax(const lark_tensor *x, int dim);
/* log_probs (N, C), target int64 (N) of 0-based classes in [0, C). */
lark_tensor *lark_nll_loss(const lark_tensor *log_probs, const lark_tensor *target, lark_reduction reduction);
/* logits (N, C); target int64 (N) of 0-based classes, or probabilities (N, C) of logits' dtype.
 * With label smoothing e the target distribution becomes (1 - e) * target + e / C. */
lark_tensor *lark_cross_entropy(const lark_tensor *logits, const lark_tensor *target, double label_smoothing,
                                lark_reduction reduction);

/* ---- activation.c ---- */

/* 0.5 x (1 + erf(x / sqrt 2)), the exact GELU. */
lark_tensor *lark_gelu(const lark_tensor *x);

#endif
