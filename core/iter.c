/* iter.c: strided iteration shared by the CPU kernels.
 *
 * Kernels see operands of one shape (broadcast dims have stride 0). Before looping, dims that are
 * laid out back to back in every operand are merged, so a contiguous problem of any rank becomes a
 * single flat loop the compiler vectorises, and a transposed one keeps only the dims it needs. */
#include <omp.h>
#include <string.h>

#include "backend.h"

void lark_iter_init(lark_iter *it, int nargs, const lark_tensor *const *ts) {
  memset(it, 0, sizeof *it);
  it->nargs = nargs;
  const lark_tensor *t0 = ts[0];
  int nd = 0;
  /* drop size-1 dims: they never move any pointer */
  for (int d = 0; d < t0->ndim; d++) {
    if (t0->shape[d] == 1) continue;
    it->shape[nd] = t0->shape[d];
    for (int k = 0; k < nargs; k++) it->stride[k][nd] = ts[k]->stride[d];
    nd++;
  }
  if (nd == 0) {
    it->shape[0] = 1;
    for (int k = 0; k < nargs; k++) it->stride[k][0] = 1;
    nd = 1;
  }
  /* merge dim d into d+1 when every operand steps over d exactly as one full row of d+1 */
  int out = 0;
  for (int d = 1; d < nd; d++) {
    bool merge = true;
    for (int k = 0; k < nargs && merge; k++)
      merge = it->stride[k][out] == it->stride[k][d] * it->shape[d];
    if (merge) {
      it->shape[out] *= it->shape[d];
      for (int k = 0; k < nargs; k++) it->stride[k][out] = it->stride[k][d];
    } else {
      out++;
      it->shape[out] = it->shape[d];
      for (int k = 0; k < nargs; k++) it->stride[k][out] = it->stride[k][d];
    }
  }
  it->ndim = out + 1;
  it->numel = 1;
  for (int d = 0; d < it->ndim; d++) it->numel *= it->shape[d];
  for (int k = 0; k < nargs; k++) it->data[k] = lark_data_ptr(ts[k]);
  int64_t inner = it->shape[it->ndim - 1], rows = inner ? it->numel / inner : 0;
  it->parallel = it->numel > LARK_PARALLEL_GRAIN;
  it->chunks = 1;
  if (it->parallel) {
    int64_t nt = omp_get_max_threads(), want = rows >= 4 * nt ? 1 : (4 * nt + rows - 1) / (rows ? rows : 1);
    int64_t most = inner / 4096 > 0 ? inner / 4096 : 1; /* pieces stay long enough to vectorise */
    it->chunks = want < most ? want : most;
  }
  it->nwork = rows * it->chunks;
}

void lark_iter_work(const lark_iter *it, int64_t w, int64_t *offs, int64_t *n) {
  int64_t inner = it->shape[it->ndim - 1], r = w / it->chunks, c = w % it->chunks;
  int64_t i0 = c * inner / it->chunks, i1 = (c + 1) * inner / it->chunks;
  lark_iter_row(it, r, offs);
  for (int k = 0; k < it->nargs; k++) offs[k] += i0 * it->stride[k][it->ndim - 1];
  *n = i1 - i0;
}

void lark_iter_row(const lark_iter *it, int64_t row, int64_t *offs) {
  for (int k = 0; k < it->nargs; k++) offs[k] = 0;
  for (int d = it->ndim - 2; d >= 0; d--) {
    int64_t i = row % it->shape[d];
    row /= it->shape[d];
    for (int k = 0; k < it->nargs; k++) offs[k] += i * it->stride[k][d];
  }
}

int64_t lark_unravel(int nd, const int64_t *shape, const int64_t *stride, int skip_a, int skip_b, int64_t r) {
  int64_t off = 0;
  for (int d = nd - 1; d >= 0; d--) {
    if (d == skip_a || d == skip_b) continue;
    off += (r % shape[d]) * stride[d];
    r /= shape[d];
  }
  return off;
}
