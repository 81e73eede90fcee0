/* cpu.h: the CPU kernels the backend table in cpu.c points at (contracts in backend.h). */
#ifndef LARK_CPU_H
#define LARK_CPU_H

#include "backend.h"

int lark_cpu_binary(lark_binary_op op, lark_tensor *out, const lark_tensor *a, const lark_tensor *b);
int lark_cpu_unary(lark_unary_op op, lark_tensor *out, const lark_tensor *a);
int lark_cpu_clamp(lark_tensor *out, const lark_tensor *a, double lo, double hi);
int lark_cpu_where(lark_tensor *out, const lark_tensor *cond, const lark_tensor *a, const lark_tensor *b);
int lark_cpu_gemm(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta);

#endif
