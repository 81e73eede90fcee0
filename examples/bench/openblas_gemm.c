/* openblas_gemm.c: cblas_sgemm called directly, the ceiling lark.matmul is measured against.
 *
 *   build/bin/bench_openblas_gemm M N K REPS THREADS
 *
 * Prints the median milliseconds and GFLOP/s of C (M,N) = A (M,K) @ B (K,N) in float32. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s M N K REPS THREADS\n", argv[0]);
    return 1;
  }
  int m = atoi(argv[1]), n = atoi(argv[2]), k = atoi(argv[3]), reps = atoi(argv[4]), threads = atoi(argv[5]);
  if (m <= 0 || n <= 0 || k <= 0 || reps <= 0 || reps > 1000 || threads <= 0) {
    fprintf(stderr, "%s: sizes, reps and threads must be positive\n", argv[0]);
    return 1;
  }
  openblas_set_num_threads(threads);
  float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)k * n),
        *c = malloc(sizeof(float) * (size_t)m * n);
  double *ts = malloc(sizeof(double) * (size_t)reps);
  if (!a || !b || !c || !ts) {
    fprintf(stderr, "%s: out of memory\n", argv[0]);
    return 1;
  }
  for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)(i % 7) * 0.25f;
  for (size_t i = 0; i < (size_t)k * n; i++) b[i] = (float)(i % 5) * 0.5f;
  for (int r = -1; r < reps; r++) { /* r = -1 warms up */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (r >= 0) ts[r] = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  }
  qsort(ts, (size_t)reps, sizeof(double), cmp);
  double med = ts[reps / 2];
  printf("%.6f %.2f\n", med * 1e3, 2.0 * m * n * k / med / 1e9);
  free(a);
  free(b);
  free(c);
  free(ts);
  return 0;
}
