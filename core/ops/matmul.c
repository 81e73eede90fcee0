/* matmul.c: numpy.matmul semantics over a batched GEMM kernel (CBLAS on the CPU, cuBLAS on CUDA).
 *
 * The front function broadcasts batch dims and hands the kernel 3-D views (batch, rows, cols) in
 * which each matrix is row-major (last stride 1) or column-major (second-last stride 1), so BLAS
 * reads transposed operands in place; anything else is copied once. The reference is the plain
 * triple loop in spec/c/test_matmul.c. */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "../backend.h"
#include "../cpu.h"
#include "grad.h"

/* Can BLAS read this (rows, cols) matrix in place? Sets trans and the leading dimension. */
static bool blas_layout(int64_t rows, int64_t cols, int64_t srow, int64_t scol, bool *trans, int64_t *ld) {
  /* A single row never steps by its row stride, and a single column never by its column stride,
   * so those are free. The other stride is not: a column expanded from one element (srow 0) must
   * not be read as if it were laid out with stride 1, so it fails below and gets copied. */
  if (rows == 1) srow = cols > 1 ? cols : 1;
  if (cols == 1) scol = 1;
  if (scol == 1 && srow >= (cols > 1 ? cols : 1)) {
    *trans = false;
    *ld = srow;
    return true;
  }
  if (srow == 1 && scol >= (rows > 1 ? rows : 1)) {
    *trans = true;
    *ld = scol;
    return true;
  }
  return false;
}

bool lark_gemm_layout(const lark_tensor *t3, bool *trans, int64_t *ld) {
  return blas_layout(t3->shape[1], t3->shape[2], t3->stride[1], t3->stride[2], trans, ld);
}

int lark_cpu_gemm(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta) {
  int64_t batch = out->shape[0], m = out->shape[1], n = out->shape[2], k = a->shape[2];
  bool ta, tb, to;
  int64_t lda, ldb, ldo;
  if (!lark_gemm_layout(a, &ta, &lda) || !lark_gemm_layout(b, &tb, &ldb) || !lark_gemm_layout(out, &to, &ldo) || to)
    return lark_set_error(LARK_ERR_ARG, "gemm: operands need a row- or column-major layout");
  if (m == 0 || n == 0) return 0;
  size_t es = lark_dtype_size(out->dtype);
  for (int64_t i = 0; i < batch; i++) {
    char *po = (char *)lark_data_ptr(out) + (size_t)(i * out->stride[0]) * es;
    const char *pa = (const char *)lark_data_ptr(a) + (size_t)(i * a->stride[0]) * es;
    const char *pb = (const char *)lark_data_ptr(b) + (size_t)(i * b->stride[0]) * es;
    if (out->dtype == LARK_FLOAT32)
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                  (int)k, (float)alpha, (const float *)pa, (int)lda, (const float *)pb, (int)ldb, (float)beta,
                  (float *)po, (int)ldo);
    else
      cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                  (int)k, alpha, (const double *)pa, (int)lda, (const double *)pb, (int)ldb, beta, (double *)po,
                  (int)ldo);
  }
  return 0;
}

/* A 3-D operand the kernel can read: t itself when its layout fits, else a contiguous copy. */
static lark_tensor *gemm_operand(lark_tensor *t) {
  bool tr;
  int64_t ld;
  if (lark_gemm_layout(t, &tr, &ld)) return t;
  lark_tensor *c = lark_contiguous(t);
  lark_tensor_release(t);
  return c;
}

static int run_gemm(lark_tensor *out3, lark_tensor *a3, lark_tensor *b3, double alpha, double beta) {
  lark_device dev = lark_tensor_device(out3);
  const lark_backend *be = lark_backend_for(dev);
  if (!be->gemm) return lark_backend_missing("matmul", dev);
  for (int i = 0; i < 3; i++) {
    int64_t d = i == 0 ? a3->shape[1] : i == 1 ? a3->shape[2] : b3->shape[2];
    if (d > INT_MAX) return lark_set_error(LARK_ERR_SHAPE, "matmul: a matrix dim of %lld exceeds BLAS's 32-bit sizes", (long long)d);
  }
  return be->gemm(out3, a3, b3, alpha, beta);
}

static lark_tensor *matmul_impl(const lark_tensor *a, const lark_tensor *b) {
  char x[256], y[256];
  const lark_tensor *ts[2] = {a, b};
  static const char *const names[2] = {"the first operand", "the second operand"};
  if (lark_check_same_device("matmul", 2, ts, names)) return NULL;
  if (a->ndim == 0 || b->ndim == 0) {
    lark_set_error(LARK_ERR_SHAPE, "matmul: both operands need at least 1 dim, got shapes %s and %s",
                   lark_shape_str(a->ndim, a->shape, x, sizeof x), lark_shape_str(b->ndim, b->shape, y, sizeof y));
    return NULL;
  }
  if (!lark_dtype_is_float(a->dtype) || !lark_dtype_is_float(b->dtype)) {
    lark_set_error(LARK_ERR_DTYPE, "matmul: expected float32 or float64 tensors, got %s and %s (convert with :float())",
                   lark_dtype_name(a->dtype), lark_dtype_name(b->dtype));
    return NULL;
  }
  lark_dtype dt = lark_promote(a->dtype, b->dtype);
  /* 1-D operands become a row (a) or a column (b) and lose that dim again in the result */
  lark_tensor *A = a->ndim == 1 ? lark_unsqueeze(a, 0) : lark_cast(a, dt);
  lark_tensor *B = b->ndim == 1 ? lark_unsqueeze(b, 1) : lark_cast(b, dt);
  lark_tensor *out = NULL, *A3 = NULL, *B3 = NULL, *O3 = NULL;
  if (!A || !B) goto done;
  if (A->dtype != dt) { lark_tensor *c = lark_cast(A, dt); lark_tensor_release(A); if (!(A = c)) goto done; }
  if (B->dtype != dt) { lark_tensor *c = lark_cast(B, dt); lark_tensor_release(B); if (!(B = c)) goto done; }
  int64_t m = A->shape[A->ndim - 2], k = A->shape[A->ndim - 1], k2 = B->shape[B->ndim - 2], n = B->shape[B->ndim - 1];
  if (k != k2) {
    lark_set_error(LARK_ERR_SHAPE, "matmul: shapes %s and %s do not fit (inner sizes %lld and %lld differ)",
                   lark_shape_str(a->ndim, a->shape, x, sizeof x), lark_shape_str(b->ndim, b->shape, y, sizeof y),
                   (long long)k, (long long)k2);
    goto done;
  }
  int nb;
  int64_t bshape[LARK_MAX_DIMS + 2];
  if (lark_broadcast_shape("matmul", A->ndim - 2, A->shape, B->ndim - 2, B->shape, &nb, bshape)) goto done;
  int64_t batch = 1;
  for (int i = 0; i < nb; i++) batch *= bshape[i];
  lark_device dev = lark_tensor_device(a);

  /* result shape: batch dims, then m and n unless they came from a 1-D operand */
  int64_t oshape[LARK_MAX_DIMS + 2];
  int on = nb;
  memcpy(oshape, bshape, sizeof(int64_t) * (size_t)nb);
  if (a->ndim > 1) oshape[on++] = m;
  if (b->ndim > 1) oshape[on++] = n;
  if (on > LARK_MAX_DIMS) {
    lark_set_error(LARK_ERR_SHAPE, "matmul: result would have more than %d dims", LARK_MAX_DIMS);
    goto done;
  }
  out = lark_empty(on, oshape, dt, &dev);
  if (!out) goto done;

  if (B->ndim == 2 && A->ndim > 2 && lark_is_contiguous(A)) {
    /* (..., m, k) @ (k, n): fold the batch into the rows, one big GEMM */
    int64_t s3a[3] = {1, batch * m, k}, s3b[3] = {1, k, n}, s3o[3] = {1, batch * m, n};
    A3 = lark_reshape(A, 3, s3a);
    B3 = lark_reshape(B, 3, s3b);
    O3 = lark_view(out, 3, s3o);
  } else {
    int64_t ea[LARK_MAX_DIMS + 2], eb[LARK_MAX_DIMS + 2];
    memcpy(ea, bshape, sizeof(int64_t) * (size_t)nb);
    memcpy(eb, bshape, sizeof(int64_t) * (size_t)nb);
    ea[nb] = m, ea[nb + 1] = k, eb[nb] = k, eb[nb + 1] = n;
    lark_tensor *Ae = lark_expand_to("matmul", A, nb + 2, ea), *Be = Ae ? lark_expand_to("matmul", B, nb + 2, eb) : NULL;
    int64_t s3a[3] = {batch, m, k}, s3b[3] = {batch, k, n}, s3o[3] = {batch, m, n};
    /* a fully broadcast batch (stride 0 everywhere) stays one matrix read many times */
    if (Ae && Be) {
      bool a_bcast = true, b_bcast = true;
      for (int i = 0; i < nb; i++) {
        if (Ae->stride[i] != 0 && Ae->shape[i] != 1) a_bcast = false;
        if (Be->stride[i] != 0 && Be->shape[i] != 1) b_bcast = false;
      }
      if (a_bcast) {
        int64_t st[3] = {0, Ae->stride[nb], Ae->stride[nb + 1]};
        A3 = lark_as_strided(Ae, 3, s3a, st, Ae->offset);
      } else {
        A3 = lark_reshape(Ae, 3, s3a);
      }
      if (b_bcast) {
        int64_t st[3] = {0, Be->stride[nb], Be->stride[nb + 1]};
        B3 = lark_as_strided(Be, 3, s3b, st, Be->offset);
      } else {
        B3 = lark_reshape(Be, 3, s3b);
      }
      O3 = lark_view(out, 3, s3o);
    }
    lark_tensor_release(Ae);
    lark_tensor_release(Be);
  }
  if (!A3 || !B3 || !O3 || !(A3 = gemm_operand(A3)) || !(B3 = gemm_operand(B3))) goto fail;
  if (k == 0) {
    if (lark_fill_(out, 0)) goto fail;
  } else if (run_gemm(O3, A3, B3, 1.0, 0.0)) {
    goto fail;
  }
  goto done;
fail:
  lark_tensor_release(out);
  out = NULL;
done:
  lark_tensor_release(A);
  lark_tensor_release(B);
  lark_tensor_release(A3);
  lark_tensor_release(B3);
  lark_tensor_release(O3);
  return out;
}

lark_tensor *lark_matmul(const lark_tensor *a, const lark_tensor *b) {
  lark_tensor *out;
  LARK_NO_GRAD(out = matmul_impl(a, b));
  if (out && (a->requires_grad || b->requires_grad)) lark_record_matmul(out, a, b);
  return out;
}

int lark_gemm(lark_tensor *out, const lark_tensor *a, const lark_tensor *b, double alpha, double beta) {
  char x[256], y[256], z[256];
  if (a->ndim != 2 || b->ndim != 2 || out->ndim != 2 || a->shape[1] != b->shape[0] || out->shape[0] != a->shape[0] ||
      out->shape[1] != b->shape[1])
    return lark_set_error(LARK_ERR_SHAPE, "gemm: shapes %s @ %s -> %s do not fit (expected (m,k) @ (k,n) -> (m,n))",
                          lark_shape_str(a->ndim, a->shape, x, sizeof x), lark_shape_str(b->ndim, b->shape, y, sizeof y),
                          lark_shape_str(out->ndim, out->shape, z, sizeof z));
  if (a->dtype != out->dtype || b->dtype != out->dtype || !lark_dtype_is_float(out->dtype))
    return lark_set_error(LARK_ERR_DTYPE, "gemm: expected one float dtype, got %s @ %s -> %s", lark_dtype_name(a->dtype),
                          lark_dtype_name(b->dtype), lark_dtype_name(out->dtype));
  int64_t s3a[3] = {1, a->shape[0], a->shape[1]}, s3b[3] = {1, b->shape[0], b->shape[1]},
          s3o[3] = {1, out->shape[0], out->shape[1]};
  int64_t ta[3] = {0, a->stride[0], a->stride[1]}, tb[3] = {0, b->stride[0], b->stride[1]},
          to[3] = {0, out->stride[0], out->stride[1]};
  lark_tensor *A3 = lark_as_strided(a, 3, s3a, ta, a->offset), *B3 = lark_as_strided(b, 3, s3b, tb, b->offset),
              *O3 = lark_as_strided(out, 3, s3o, to, out->offset);
  int rc;
  bool tr;
  int64_t ld;
  if (!A3 || !B3 || !O3 || !(A3 = gemm_operand(A3)) || !(B3 = gemm_operand(B3))) rc = lark_error_code();
  else if (!lark_gemm_layout(O3, &tr, &ld) || tr) rc = lark_set_error(LARK_ERR_ARG, "gemm: out must be row-major");
  else rc = run_gemm(O3, A3, B3, alpha, beta);
  lark_tensor_release(A3);
  lark_tensor_release(B3);
  lark_tensor_release(O3);
  if (!rc) lark_bump_version(out);
  return rc;
}
