/* emu_backend.cpp: makes the emulated kernels (cuda/*.cu run through emu_cuda.h) the CUDA backend of
 * a CPU-only build, before main runs. The table is filled like cuda/backend.cu's fill_table, field
 * for field, except for what has no host stand-in: memory is the CPU's (host memory, its copies),
 * and gemm is the CPU's (cuBLAS is not emulated). So "GPU" tensors live in host memory and every
 * kernel call on them runs the CUDA source. Here too are backend.cu's helpers that the kernel files
 * call; lark_cuda_is_available and lark_cuda_device_count replace the CPU-only build's weak ones.
 * Not modelled: the caching allocator (memory_stats reads zeros) and pinned host memory. */
#include "emu_cuda.h"

static lark_backend emulated;

#ifdef EMU_FAST_SWITCH
/* emu_switch(save_sp, new_sp): pushes rbp, rbx, r12 .. r15 and the MXCSR and x87 control words,
 * stores the stack pointer in *save_sp, then pops the same from new_sp and returns there. */
asm(R"(
  .text
  .globl emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

extern "C" bool lark_cuda_is_available(void) { return true; }
extern "C" int lark_cuda_device_count(void) { return 1; }

int lark_cuda_check(cudaError_t e, const char *op, const char *what) {
  return e ? lark_set_error(LARK_ERR_BACKEND, "%s: %s: emulated error", op, what) : 0;
}

int lark_cuda_check_cublas(cublasStatus_t st, const char *op, const char *what) {
  return st ? lark_set_error(LARK_ERR_BACKEND, "%s: %s: emulated cuBLAS error", op, what) : 0;
}

int lark_cuda_set_device(lark_device dev, const char *op) {
  if (dev.kind != LARK_CUDA || dev.index != 0) {
    char buf[32];
    return lark_set_error(LARK_ERR_DEVICE, "%s: device %s is not available (1 CUDA device found)", op,
                          lark_device_str(dev, buf, sizeof buf));
  }
  return 0;
}

/* as backend.cu's: at most 32 blocks per multiprocessor, so host code that sizes buffers by the
 * grid sees the same numbers a GPU of EMU_SMS multiprocessors would give */
unsigned lark_cuda_grid(int64_t n, int threads) {
  int64_t cap = (int64_t)EMU_SMS * 32;
  int64_t blocks = n / threads + (n % threads != 0);
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return (unsigned)blocks;
}

int lark_cuda_cublas(lark_device dev, const char *op, cublasHandle_t *handle) {
  *handle = nullptr;
  return lark_set_error(LARK_ERR_BACKEND, "%s: cuBLAS is not emulated", op);
}

__attribute__((constructor)) static void emu_register(void) {
  memset(&emulated, 0, sizeof emulated);
  emulated.name = "cuda (emulated)";
  emulated.malloc = lark_cpu_backend.malloc;
  emulated.free = lark_cpu_backend.free;
  emulated.memcpy_host = lark_cpu_backend.memcpy_host;
  emulated.gemm = lark_cpu_backend.gemm;
  emulated.copy = lark_cuda_copy;
  emulated.fill = lark_cuda_fill;
  emulated.binary = lark_cuda_binary;
  emulated.dwconv_forward = lark_cuda_dwconv_forward;
  emulated.dwconv_backward_input = lark_cuda_dwconv_backward_input;
  emulated.dwconv_backward_weight = lark_cuda_dwconv_backward_weight;
  emulated.index_check = lark_cuda_index_check;
  emulated.gather = lark_cuda_gather;
  emulated.scatter_add = lark_cuda_scatter_add;
  emulated.masked_fill = lark_cuda_masked_fill;
  emulated.masked_select = lark_cuda_masked_select;
  emulated.nonzero = lark_cuda_nonzero;
  emulated.topk = lark_cuda_topk;
  emulated.cumsum = lark_cuda_cumsum;
  emulated.im2col = lark_cuda_im2col;
  emulated.col2im = lark_cuda_col2im;
  emulated.avg_pool_forward = lark_cuda_avg_pool_forward;
  emulated.avg_pool_backward = lark_cuda_avg_pool_backward;
  emulated.max_pool_forward = lark_cuda_max_pool_forward;
  emulated.max_pool_backward = lark_cuda_max_pool_backward;
  emulated.reduce = lark_cuda_reduce;
  emulated.random_fill = lark_cuda_random_fill;
  emulated.bernoulli = lark_cuda_bernoulli;
  emulated.sgd_update = lark_cuda_sgd_update;
  emulated.adamw_update = lark_cuda_adamw_update;
  emulated.lerp = lark_cuda_lerp;
  emulated.norm_part = lark_cuda_norm_part;
  emulated.unary = lark_cuda_unary;
  emulated.clamp = lark_cuda_clamp;
  emulated.where = lark_cuda_where;
  emulated.layer_norm_forward = lark_cuda_layer_norm_forward;
  emulated.layer_norm_backward = lark_cuda_layer_norm_backward;
  emulated.batch_norm_forward = lark_cuda_batch_norm_forward;
  emulated.batch_norm_backward = lark_cuda_batch_norm_backward;
  emulated.softmax_forward = lark_cuda_softmax_forward;
  emulated.softmax_backward = lark_cuda_softmax_backward;
  emulated.loss_rows = lark_cuda_loss_rows;
  emulated.loss_backward = lark_cuda_loss_backward;
  emulated.gelu_forward = lark_cuda_gelu_forward;
  emulated.gelu_backward = lark_cuda_gelu_backward;
  lark_backend_register(LARK_CUDA, &emulated);
}
