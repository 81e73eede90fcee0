/*
 * gemm.cu: batched GEMM on cuBLAS, the CUDA side of lark_matmul and lark_gemm.
 *
 * The contract (core/backend.h): out[i] (m, n) = alpha * a[i] (m, k) @ b[i] (k, n) + beta * out[i],
 * with out row-major and a, b each row-major or column-major (lark_gemm_layout says which and gives
 * the leading dimension); batch strides may be 0 (a broadcast operand read for every batch).
 *
 * cuBLAS is column-major. A row-major matrix with leading dimension ld is, read column-major, its
 * transpose with the same ld, so the row-major C = A B is computed as the column-major
 * C^T = B^T A^T: cuBLAS's first operand is b, its second is a, and its (m, n) are our (n, m). An
 * operand that is already column-major (a transposed view) is read in place with CUBLAS_OP_T. Every
 * batch stride is uniform (the operands are 3-D views), so one strided-batched call covers the
 * whole batch.
 *
 * float32 is exact (cublasSgemm) unless lark.set_float32_matmul_precision allowed TF32 ("high") or
 * BF16 ("medium") tensor cores: then cublasGemmStridedBatchedEx with the matching compute type.
 */
#include <limits.h>

#include "cuda.h"

/* The leading dimension cuBLAS accepts for a stored (rows, cols) column-major matrix: ld as given,
 * or, when the matrix has at most one column (ld is never used to step), the smallest legal one.
 * Returns -1 when ld is too small for a matrix that needs it (lark_gemm_layout never gives that). */
static int64_t cublas_ld(int64_t ld, int64_t rows, int64_t cols) {
  int64_t need = rows > 1 ? rows : 1;
  if (ld >= need) return ld;
  return cols <= 1 ? need : -1;
}

int lark_cuda_gemm(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta) {
  const char *op = "matmul";
  int64_t batch = out->shape[0], m = out->shape[1], n = out->shape[2], k = a->shape[2];
  bool ta = false, tb = false, to = false;
  int64_t lda = 0, ldb = 0, ldo = 0;
  if (!lark_gemm_layout(a, &ta, &lda) || !lark_gemm_layout(b, &tb, &ldb) || !lark_gemm_layout(out, &to, &ldo) || to)
    return lark_set_error(LARK_ERR_ARG, "%s: operands need a row- or column-major layout (and a row-major out)", op);
  if (out->dtype != LARK_FLOAT32 && out->dtype != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: expected float32 or float64 tensors, got %s", op, lark_dtype_name(out->dtype));
  if (a->dtype != out->dtype || b->dtype != out->dtype)
    return lark_set_error(LARK_ERR_DTYPE, "%s: expected one dtype, got %s @ %s -> %s", op, lark_dtype_name(a->dtype),
                          lark_dtype_name(b->dtype), lark_dtype_name(out->dtype));
  if (batch == 0 || m == 0 || n == 0) return 0;
  if (batch > 1 && out->stride[0] == 0)
    return lark_set_error(LARK_ERR_ARG, "%s: out has batch stride 0, so the batches would overwrite each other", op);

  /* cuBLAS's view: first operand b^T (n, k), stored (n, k) when b is row-major, else (k, n);
   * second operand a^T (k, m), stored (k, m) when a is row-major, else (m, k); C^T (n, m). */
  int64_t ld1 = tb ? cublas_ld(ldb, k, n) : cublas_ld(ldb, n, k);
  int64_t ld2 = ta ? cublas_ld(lda, m, k) : cublas_ld(lda, k, m);
  int64_t ldc = cublas_ld(ldo, n, m);
  if (ld1 < 0 || ld2 < 0 || ldc < 0)
    return lark_set_error(LARK_ERR_ARG, "%s: a leading dimension is smaller than its matrix (lda %lld, ldb %lld, ldc %lld)",
                          op, (long long)lda, (long long)ldb, (long long)ldo);
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX || ld1 > INT_MAX || ld2 > INT_MAX || ldc > INT_MAX)
    return lark_set_error(LARK_ERR_SHAPE, "%s: a matrix dim or leading dimension exceeds cuBLAS's 32-bit sizes", op);

  cublasHandle_t h;
  if (lark_cuda_cublas(lark_tensor_device(out), op, &h)) return lark_error_code();
  cublasOperation_t op1 = tb ? CUBLAS_OP_T : CUBLAS_OP_N, op2 = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  long long s1 = b->stride[0], s2 = a->stride[0], sc = out->stride[0]; /* elements between batches */
  size_t es = lark_dtype_size(out->dtype);
  char *pb = (char *)lark_data_ptr(b), *pa = (char *)lark_data_ptr(a), *pc = (char *)lark_data_ptr(out);

  /* batchCount is an int: more batches than that go in chunks */
  for (int64_t done = 0; done < batch;) {
    int count = (int)(batch - done > INT_MAX ? INT_MAX : batch - done);
    const char *b0 = pb + (size_t)(done * s1) * es, *a0 = pa + (size_t)(done * s2) * es;
    char *c0 = pc + (size_t)(done * sc) * es;
    cublasStatus_t st;
    if (out->dtype == LARK_FLOAT32 && lark_float32_precision() != LARK_PRECISION_HIGHEST) {
      /* the user allowed tensor cores (lark.set_float32_matmul_precision): float32 in and out,
       * products in TF32 or BF16, sums in float32 */
      float al = (float)alpha, be = (float)beta;
      cublasComputeType_t ct =
          lark_float32_precision() == LARK_PRECISION_HIGH ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F_FAST_16BF;
      st = cublasGemmStridedBatchedEx(h, op1, op2, (int)n, (int)m, (int)k, &al, b0, CUDA_R_32F, (int)ld1, s1, a0,
                                      CUDA_R_32F, (int)ld2, s2, &be, c0, CUDA_R_32F, (int)ldc, sc, count, ct,
                                      CUBLAS_GEMM_DEFAULT);
    } else if (out->dtype == LARK_FLOAT32) {
      float al = (float)alpha, be = (float)beta;
      st = cublasSgemmStridedBatched(h, op1, op2, (int)n, (int)m, (int)k, &al, (const float *)b0, (int)ld1, s1,
                                     (const float *)a0, (int)ld2, s2, &be, (float *)c0, (int)ldc, sc, count);
    } else {
      st = cublasDgemmStridedBatched(h, op1, op2, (int)n, (int)m, (int)k, &alpha, (const double *)b0, (int)ld1, s1,
                                     (const double *)a0, (int)ld2, s2, &beta, (double *)c0, (int)ldc, sc, count);
    }
    if (lark_cuda_check_cublas(st, op, out->dtype == LARK_FLOAT64 ? "cublasDgemmStridedBatched" : "cublasSgemmStridedBatched(Ex)"))
      return lark_error_code();
    done += count;
  }
  return 0;
}
