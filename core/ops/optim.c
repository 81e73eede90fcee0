/* optim.c: the optimizer updates, fused over a list of parameters (SGD, AdamW), the lerp over a
 * list that ModelEma uses, and the total norm and scaling of clip_grad_norm.
 *
 * One call updates a whole parameter group: the loop over tensors is here, not in Lua, so a
 * ConvNet with hundreds of small tensors (biases, norms) pays one binding crossing per step instead
 * of several tensor ops per parameter. Big tensors split their elements over OpenMP threads; small
 * ones run on the calling thread, where a fork/join would cost more than the work.
 *
 * The updates follow PyTorch 1.13's single-tensor paths operation by operation, so that float32
 * results round the same way up to an ulp or two:
 *
 *   SGD     d = g + wd * p
 *           buf = d (first step)  or  buf = momentum * buf + (1 - dampening) * d
 *           d = nesterov ? d + momentum * buf : buf          (when momentum != 0)
 *           p = p - lr * d
 *   AdamW   p = p * (1 - lr * wd)                             (decoupled weight decay)
 *           m = beta1 * m + (1 - beta1) * g
 *           v = beta2 * v + (1 - beta2) * g * g
 *           vmax = max(vmax, v)                               (amsgrad: vmax replaces v below)
 *           p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * The fast kernels compute in the tensor's own precision (float32 arithmetic vectorises twice as
 * wide, and it is what PyTorch does); the reference loops beside them compute every element in
 * double, one at a time, with no threads, and are what spec/c/test_optim.c and spec/optim_spec.lua
 * check the fast kernels against.
 *
 * Tensors on another device go to its backend's sgd_update, adamw_update, lerp and norm_part
 * (backend.h; cuda/optim.cu computes the fast kernels' formulas there), one call per parameter
 * after the same checks; the reference loops run on CPU tensors only. Missing state is made on the
 * parameter's device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"

/* ---- checks shared by every entry point ----------------------------------------------------- */

/* "parameter 'name'" or "parameter 3" into buf, for messages. */
static const char *param_name(const char *const *names, int i, char *buf, size_t n) {
  if (names && names[i]) snprintf(buf, n, "parameter '%s'", names[i]);
  else snprintf(buf, n, "parameter %d", i);
  return buf;
}

/* Whether op ("sgd_step", "adamw_step") runs on dev: always on the CPU, elsewhere when the backend
 * has the update. */
static bool has_update(const char *op, lark_device dev) {
  if (dev.kind == LARK_CPU) return true;
  const lark_backend *be = lark_backend_for(dev);
  if (!be) return false;
  if (strcmp(op, "sgd_step") == 0) return be->sgd_update != NULL;
  if (strcmp(op, "adamw_step") == 0) return be->adamw_update != NULL;
  return false;
}

/* t is a live, contiguous float tensor on a device that has op; `what` is the role (the parameter,
 * its grad, exp_avg). */
static int check_float_tensor(const char *op, const char *pname, const lark_tensor *t, const char *what) {
  char buf[32];
  if (!t) return lark_set_error(LARK_ERR_ARG, "%s: %s: %s is missing", op, pname, what);
  if (!t->storage) return lark_set_error(LARK_ERR_ARG, "%s: %s: %s was freed", op, pname, what);
  if (t->dtype != LARK_FLOAT32 && t->dtype != LARK_FLOAT64)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s: %s is %s (expected float32 or float64)", op, pname, what,
                          lark_dtype_name(t->dtype));
  if (!has_update(op, lark_tensor_device(t)))
    return lark_set_error(LARK_ERR_UNIMPL, "%s: not implemented for %s (%s: %s)", op,
                          lark_device_str(lark_tensor_device(t), buf, sizeof buf), pname, what);
  if (!lark_is_contiguous(t))
    return lark_set_error(LARK_ERR_ARG, "%s: %s: %s is not contiguous (expected a contiguous tensor; "
                          "use :contiguous() when making it)", op, pname, what);
  return 0;
}

/* other (the grad or a state tensor of parameter p) lives where p does; checked before anything
 * else, so that a CPU grad beside a GPU parameter reads as the mismatch it is. */
static int check_device(const char *op, const char *pname, const lark_tensor *p, const lark_tensor *other,
                        const char *what) {
  char a[32], b[32];
  if (p && p->storage && other && other->storage && !lark_device_eq(lark_tensor_device(p), lark_tensor_device(other)))
    return lark_set_error(LARK_ERR_DEVICE, "%s: %s: %s is on %s but the parameter is on %s", op, pname, what,
                          lark_device_str(lark_tensor_device(other), a, sizeof a),
                          lark_device_str(lark_tensor_device(p), b, sizeof b));
  return 0;
}

/* other is usable beside parameter p: a float tensor of p's shape and dtype, and contiguous
 * when it is written (state) rather than only read (a grad, which is read through a copy). */
static int check_like(const char *op, const char *pname, const lark_tensor *p, const lark_tensor *other,
                      const char *what, bool written) {
  char a[256], b[256];
  if (!other) return lark_set_error(LARK_ERR_ARG, "%s: %s: %s is missing", op, pname, what);
  if (!other->storage) return lark_set_error(LARK_ERR_ARG, "%s: %s: %s was freed", op, pname, what);
  if (other->ndim != p->ndim || memcmp(other->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim))
    return lark_set_error(LARK_ERR_SHAPE, "%s: %s: %s has shape %s but the parameter has shape %s", op, pname, what,
                          lark_shape_str(other->ndim, other->shape, a, sizeof a),
                          lark_shape_str(p->ndim, p->shape, b, sizeof b));
  if (other->dtype != p->dtype)
    return lark_set_error(LARK_ERR_DTYPE, "%s: %s: %s is %s but the parameter is %s", op, pname, what,
                          lark_dtype_name(other->dtype), lark_dtype_name(p->dtype));
  if (written) return check_float_tensor(op, pname, other, what);
  return 0;
}

static int check_list(const char *op, int n, const void *list, const char *what) {
  if (n < 0) return lark_set_error(LARK_ERR_ARG, "%s: %d tensors (expected a count >= 0)", op, n);
  if (n > 0 && !list) return lark_set_error(LARK_ERR_ARG, "%s: the list of %s is missing", op, what);
  return 0;
}

/* Fills the NULL entries of state[0..n) with new zero tensors shaped like params[i]. On failure
 * the tensors made here are released and their entries set back to NULL, so a failed step leaves
 * the caller's state as it was. made[i] tells which entries were filled (for SGD's first step). */
static int fill_missing_state(const char *op, int n, lark_tensor *const *params, lark_tensor **state, bool *made) {
  for (int i = 0; i < n; i++) {
    made[i] = false;
    if (state[i]) continue;
    lark_device dev = lark_tensor_device(params[i]);
    state[i] = lark_zeros(params[i]->ndim, params[i]->shape, params[i]->dtype, &dev);
    if (!state[i]) {
      for (int j = 0; j < i; j++)
        if (made[j]) {
          lark_tensor_release(state[j]);
          state[j] = NULL;
          made[j] = false;
        }
      return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory making the optimizer state of %s", op,
                            lark_error());
    }
    made[i] = true;
  }
  return 0;
}

static void undo_missing_state(int n, lark_tensor **state, const bool *made) {
  for (int i = 0; i < n; i++)
    if (made[i]) {
      lark_tensor_release(state[i]);
      state[i] = NULL;
    }
}

/* Contiguous copies of non-contiguous grads (they are only read), the others retained; a grad
 * sharing its parameter's storage is copied too, as the kernels write one while reading the other. */
static int contiguous_grads(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **out) {
  for (int i = 0; i < n; i++) {
    out[i] = grads[i]->storage == params[i]->storage ? lark_clone(grads[i]) : lark_contiguous(grads[i]);
    if (!out[i]) {
      for (int j = 0; j < i; j++) lark_tensor_release(out[j]);
      return lark_error_code();
    }
  }
  return 0;
}

static void release_all(int n, lark_tensor **ts) {
  for (int i = 0; i < n; i++) lark_tensor_release(ts[i]);
}

/* The reference loops read and write memory on the host: they take CPU tensors only. */
static int check_reference_cpu(const char *op, const char *pname, const lark_tensor *t, bool reference) {
  char buf[32];
  if (reference && lark_tensor_device(t).kind != LARK_CPU)
    return lark_set_error(LARK_ERR_UNIMPL, "%s: %s: the reference loop runs on CPU tensors only, not on %s", op,
                          pname, lark_device_str(lark_tensor_device(t), buf, sizeof buf));
  return 0;
}

/* Scratch arrays of n pointers and n flags, one allocation. */
typedef struct {
  lark_tensor **grads;
  bool *made1, *made2, *made3;
} scratch;

static int scratch_alloc(const char *op, int n, scratch *s) {
  size_t np = (size_t)(n > 0 ? n : 1);
  char *mem = calloc(1, np * sizeof(lark_tensor *) + 3 * np * sizeof(bool));
  if (!mem) return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory for %d tensors", op, n);
  s->grads = (lark_tensor **)mem;
  s->made1 = (bool *)(mem + np * sizeof(lark_tensor *));
  s->made2 = s->made1 + np;
  s->made3 = s->made2 + np;
  return 0;
}

static void scratch_free(scratch *s) { free(s->grads); }

/* float32 / float64 element access for the reference loops. */
static inline double ld(const void *p, int64_t i, bool f64) {
  return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
static inline void st(void *p, int64_t i, double v, bool f64) {
  if (f64) ((double *)p)[i] = v;
  else ((float *)p)[i] = (float)v;
}

/* The fast kernels are plain loops over a range with restrict pointers, which GCC vectorises; this
 * runs one over [0, n) in chunks, on the OpenMP threads when n is big. (An `omp parallel for simd`
 * around the loop itself came out scalar: the outlined body loses restrict and the attributes.)
 * CALL is a statement using lo and len, the chunk's start and length. */
#define OPTIM_CHUNK 16384
#define RUN_CHUNKED(n, CALL)                                                           \
  do {                                                                                 \
    int64_t n_ = (n);                                                                  \
    if (n_ < LARK_PARALLEL_GRAIN) {                                                    \
      int64_t lo = 0, len = n_;                                                        \
      CALL;                                                                            \
    } else {                                                                           \
      int64_t nchunks_ = (n_ + OPTIM_CHUNK - 1) / OPTIM_CHUNK;                          \
      _Pragma("omp parallel for schedule(static)")                                     \
      for (int64_t c_ = 0; c_ < nchunks_; c_++) {                                       \
        int64_t lo = c_ * OPTIM_CHUNK, len = n_ - lo < OPTIM_CHUNK ? n_ - lo : OPTIM_CHUNK; \
        CALL;                                                                          \
      }                                                                                \
    }                                                                                  \
  } while (0)

/* ---- SGD ------------------------------------------------------------------------------------ */

static int sgd_check_args(const char *op, const lark_sgd_args *a) {
  if (!a) return lark_set_error(LARK_ERR_ARG, "%s: the options are missing", op);
  if (!(a->lr >= 0)) return lark_set_error(LARK_ERR_ARG, "%s: lr is %g (expected lr >= 0)", op, a->lr);
  if (!(a->momentum >= 0))
    return lark_set_error(LARK_ERR_ARG, "%s: momentum is %g (expected momentum >= 0)", op, a->momentum);
  if (!(a->weight_decay >= 0))
    return lark_set_error(LARK_ERR_ARG, "%s: weight_decay is %g (expected weight_decay >= 0)", op, a->weight_decay);
  if (!isfinite(a->dampening)) return lark_set_error(LARK_ERR_ARG, "%s: dampening is %g (expected a finite number)", op, a->dampening);
  if (a->nesterov && (a->momentum <= 0 || a->dampening != 0))
    return lark_set_error(LARK_ERR_ARG,
                          "%s: nesterov needs momentum > 0 and dampening == 0 (got momentum %g, dampening %g)", op,
                          a->momentum, a->dampening);
  return 0;
}

/* The SGD update of n elements in T's precision. `first`: buf has just been made and takes d. */
#define DEFINE_SGD_KERNEL(T, NAME)                                                                         \
  static void NAME(T *restrict p /* (n) */, const T *restrict g /* (n) */, T *restrict buf /* (n) or NULL */, \
                   int64_t n, const lark_sgd_args *a, bool first) {                                       \
    const T lr = (T)a->lr, wd = (T)a->weight_decay, mom = (T)a->momentum, damp1 = (T)(1 - a->dampening);   \
    const T sign = a->maximize ? (T)-1 : (T)1;                                                            \
    if (!buf) {                                                                                            \
      for (int64_t i = 0; i < n; i++) p[i] = p[i] - lr * (sign * g[i] + wd * p[i]);                        \
    } else if (first) {                                                                                    \
      for (int64_t i = 0; i < n; i++) {                                                                    \
        T d = sign * g[i] + wd * p[i];                                                                     \
        buf[i] = d;                                                                                        \
        p[i] = p[i] - lr * (a->nesterov ? d + mom * d : d);                                                \
      }                                                                                                    \
    } else if (a->nesterov) {                                                                              \
      for (int64_t i = 0; i < n; i++) {                                                                    \
        T d = sign * g[i] + wd * p[i];                                                                     \
        T b = buf[i] * mom + damp1 * d;                                                                    \
        buf[i] = b;                                                                                        \
        p[i] = p[i] - lr * (d + mom * b);                                                                  \
      }                                                                                                    \
    } else {                                                                                               \
      for (int64_t i = 0; i < n; i++) {                                                                    \
        T d = sign * g[i] + wd * p[i];                                                                     \
        T b = buf[i] * mom + damp1 * d;                                                                    \
        buf[i] = b;                                                                                        \
        p[i] = p[i] - lr * b;                                                                              \
      }                                                                                                    \
    }                                                                                                      \
  }
DEFINE_SGD_KERNEL(float, sgd_kernel_f32)
DEFINE_SGD_KERNEL(double, sgd_kernel_f64)

static void sgd_kernel_reference(void *p /* (n) */, const void *g /* (n) */, void *buf /* (n) or NULL */, int64_t n,
                                 const lark_sgd_args *a, bool first, bool f64) {
  for (int64_t i = 0; i < n; i++) {
    double pi = ld(p, i, f64), gi = ld(g, i, f64);
    if (a->maximize) gi = -gi;
    double d = gi + a->weight_decay * pi;
    if (buf) {
      double b = first ? d : ld(buf, i, f64) * a->momentum + (1 - a->dampening) * d;
      st(buf, i, b, f64);
      b = ld(buf, i, f64); /* what the next step will read */
      d = a->nesterov ? d + a->momentum * b : b;
    }
    st(p, i, pi - a->lr * d, f64);
  }
}

static int sgd_common(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **bufs,
                      const lark_sgd_args *a, bool reference) {
  const char *op = "sgd_step";
  char pname[320];
  if (sgd_check_args(op, a) || check_list(op, n, params, "parameters") || check_list(op, n, grads, "gradients"))
    return lark_error_code();
  bool use_buf = a->momentum != 0;
  if (use_buf && n > 0 && !bufs)
    return lark_set_error(LARK_ERR_ARG, "%s: momentum %g needs the list of momentum buffers", op, a->momentum);
  for (int i = 0; i < n; i++) {
    param_name(a->names, i, pname, sizeof pname);
    lark_tensor *b = use_buf ? bufs[i] : NULL;
    if (check_device(op, pname, params[i], grads[i], "its grad") ||
        check_device(op, pname, params[i], b, "its momentum_buffer") ||
        check_float_tensor(op, pname, params[i], "the parameter") || lark_check_writable(op, params[i], pname) ||
        check_like(op, pname, params[i], grads[i], "its grad", false) ||
        (b && check_like(op, pname, params[i], b, "its momentum_buffer", true)) ||
        check_reference_cpu(op, pname, params[i], reference))
      return lark_error_code();
  }
  scratch s = {0};
  if (scratch_alloc(op, n, &s)) return lark_error_code();
  if (use_buf && fill_missing_state(op, n, params, bufs, s.made1)) {
    scratch_free(&s);
    return lark_error_code();
  }
  if (contiguous_grads(n, params, grads, s.grads)) {
    if (use_buf) undo_missing_state(n, bufs, s.made1);
    scratch_free(&s);
    return lark_error_code();
  }
  for (int i = 0; i < n; i++) {
    lark_tensor *p = params[i], *b = use_buf ? bufs[i] : NULL;
    int64_t ne = lark_numel(p);
    bool f64 = p->dtype == LARK_FLOAT64, first = use_buf && s.made1[i];
    void *bp = b ? lark_data_ptr(b) : NULL;
    lark_device dev = lark_tensor_device(p);
    if (dev.kind != LARK_CPU) {
      /* a device failure here is a broken device: the state made by this call is dropped again
       * (the caller never sees it), the parameters already updated stay updated */
      if (lark_backend_for(dev)->sgd_update(p, s.grads[i], b, a, first)) {
        release_all(n, s.grads);
        if (use_buf) undo_missing_state(n, bufs, s.made1);
        scratch_free(&s);
        return lark_error_code();
      }
    } else if (reference)
      sgd_kernel_reference(lark_data_ptr(p), lark_data_ptr(s.grads[i]), bp, ne, a, first, f64);
    else if (f64) {
      double *pp = lark_data_ptr(p), *bb = bp;
      const double *gg = lark_data_ptr(s.grads[i]);
      RUN_CHUNKED(ne, sgd_kernel_f64(pp + lo, gg + lo, bb ? bb + lo : NULL, len, a, first));
    } else {
      float *pp = lark_data_ptr(p), *bb = bp;
      const float *gg = lark_data_ptr(s.grads[i]);
      RUN_CHUNKED(ne, sgd_kernel_f32(pp + lo, gg + lo, bb ? bb + lo : NULL, len, a, first));
    }
    lark_bump_version(p);
    if (b) lark_bump_version(b);
  }
  release_all(n, s.grads);
  scratch_free(&s);
  return 0;
}

int lark_sgd_step_(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **momentum_buffers,
                   const lark_sgd_args *args) {
  return sgd_common(n, params, grads, momentum_buffers, args, false);
}

int lark_sgd_step_reference_(int n, lark_tensor *const *params, lark_tensor *const *grads,
                             lark_tensor **momentum_buffers, const lark_sgd_args *args) {
  return sgd_common(n, params, grads, momentum_buffers, args, true);
}

/* ---- AdamW ---------------------------------------------------------------------------------- */

static int adamw_check_args(const char *op, const lark_adamw_args *a) {
  if (!a) return lark_set_error(LARK_ERR_ARG, "%s: the options are missing", op);
  if (!(a->lr >= 0)) return lark_set_error(LARK_ERR_ARG, "%s: lr is %g (expected lr >= 0)", op, a->lr);
  if (!(a->eps >= 0)) return lark_set_error(LARK_ERR_ARG, "%s: eps is %g (expected eps >= 0)", op, a->eps);
  if (!(a->beta1 >= 0 && a->beta1 < 1))
    return lark_set_error(LARK_ERR_ARG, "%s: betas[1] is %g (expected 0 <= beta1 < 1)", op, a->beta1);
  if (!(a->beta2 >= 0 && a->beta2 < 1))
    return lark_set_error(LARK_ERR_ARG, "%s: betas[2] is %g (expected 0 <= beta2 < 1)", op, a->beta2);
  if (!(a->weight_decay >= 0))
    return lark_set_error(LARK_ERR_ARG, "%s: weight_decay is %g (expected weight_decay >= 0)", op, a->weight_decay);
  return 0;
}

/* Per-tensor constants of one AdamW update, computed in double as PyTorch does in Python. */
typedef struct {
  double decay;     /* 1 - lr * wd */
  double step_size; /* lr / (1 - beta1^t) */
  double bc2_sqrt;  /* sqrt(1 - beta2^t) */
} adamw_consts;

static adamw_consts adamw_consts_for(const lark_adamw_args *a, int64_t step) {
  adamw_consts c;
  c.decay = 1 - a->lr * a->weight_decay;
  c.step_size = a->lr / (1 - pow(a->beta1, (double)step));
  c.bc2_sqrt = sqrt(1 - pow(a->beta2, (double)step));
  return c;
}

/* The AdamW update of n elements in T's precision. v >= 0 always (a NaN gradient gives NaN either
 * way), so the square root needs none of libm's errno handling, which would keep the loop from
 * vectorising: hence no-math-errno on these two. */
#define DEFINE_ADAMW_KERNEL(T, NAME, SQRT)                                                                    \
  __attribute__((optimize("no-math-errno"))) static void NAME(                                                \
      T *restrict p /* (n) */, const T *restrict g /* (n) */, T *restrict m /* (n) */, T *restrict v /* (n) */, \
      T *restrict vmax /* (n) or NULL */, int64_t n, const lark_adamw_args *a, adamw_consts c) {               \
    const T decay = (T)c.decay, b1 = (T)a->beta1, b2 = (T)a->beta2, b1c = (T)(1 - a->beta1),                  \
            b2c = (T)(1 - a->beta2), bc2 = (T)c.bc2_sqrt, eps = (T)a->eps, neg_step = (T)(-c.step_size);      \
    const T sign = a->maximize ? (T)-1 : (T)1;                                                                \
    if (vmax) {                                                                                               \
      for (int64_t i = 0; i < n; i++) {                                                                       \
        T gi = sign * g[i];                                                                                   \
        T pi = p[i] * decay;                                                                                  \
        T mi = m[i] * b1 + b1c * gi;                                                                          \
        T vi = v[i] * b2 + b2c * gi * gi;                                                                     \
        T wi = vmax[i] > vi ? vmax[i] : vi;                                                                   \
        m[i] = mi, v[i] = vi, vmax[i] = wi;                                                                   \
        p[i] = pi + neg_step * mi / (SQRT(wi) / bc2 + eps);                                                   \
      }                                                                                                       \
    } else {                                                                                                  \
      for (int64_t i = 0; i < n; i++) {                                                                       \
        T gi = sign * g[i];                                                                                   \
        T pi = p[i] * decay;                                                                                  \
        T mi = m[i] * b1 + b1c * gi;                                                                          \
        T vi = v[i] * b2 + b2c * gi * gi;                                                                     \
        m[i] = mi, v[i] = vi;                                                                                 \
        p[i] = pi + neg_step * mi / (SQRT(vi) / bc2 + eps);                                                   \
      }                                                                                                       \
    }                                                                                                         \
  }
DEFINE_ADAMW_KERNEL(float, adamw_kernel_f32, sqrtf)
DEFINE_ADAMW_KERNEL(double, adamw_kernel_f64, sqrt)

static void adamw_kernel_reference(void *p /* (n) */, const void *g /* (n) */, void *m /* (n) */, void *v /* (n) */,
                                   void *vmax /* (n) or NULL */, int64_t n, const lark_adamw_args *a,
                                   adamw_consts c, bool f64) {
  for (int64_t i = 0; i < n; i++) {
    double gi = a->maximize ? -ld(g, i, f64) : ld(g, i, f64);
    double pi = ld(p, i, f64) * c.decay;
    double mi = ld(m, i, f64) * a->beta1 + (1 - a->beta1) * gi;
    double vi = ld(v, i, f64) * a->beta2 + (1 - a->beta2) * gi * gi;
    st(m, i, mi, f64);
    st(v, i, vi, f64);
    double denom_of = vi;
    if (vmax) {
      double w = ld(vmax, i, f64);
      denom_of = w > vi ? w : vi;
      st(vmax, i, denom_of, f64);
    }
    st(p, i, pi - c.step_size * mi / (sqrt(denom_of) / c.bc2_sqrt + a->eps), f64);
  }
}

static int adamw_common(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **exp_avg,
                        lark_tensor **exp_avg_sq, lark_tensor **max_exp_avg_sq, const int64_t *steps,
                        const lark_adamw_args *a, bool reference) {
  const char *op = "adamw_step";
  char pname[320];
  if (adamw_check_args(op, a) || check_list(op, n, params, "parameters") || check_list(op, n, grads, "gradients") ||
      check_list(op, n, exp_avg, "exp_avg tensors") || check_list(op, n, exp_avg_sq, "exp_avg_sq tensors") ||
      check_list(op, n, steps, "step counts") ||
      (a->amsgrad && check_list(op, n, max_exp_avg_sq, "max_exp_avg_sq tensors (amsgrad)")))
    return lark_error_code();
  for (int i = 0; i < n; i++) {
    param_name(a->names, i, pname, sizeof pname);
    lark_tensor *w = a->amsgrad ? max_exp_avg_sq[i] : NULL;
    if (check_device(op, pname, params[i], grads[i], "its grad") ||
        check_device(op, pname, params[i], exp_avg[i], "its exp_avg") ||
        check_device(op, pname, params[i], exp_avg_sq[i], "its exp_avg_sq") ||
        check_device(op, pname, params[i], w, "its max_exp_avg_sq") ||
        check_float_tensor(op, pname, params[i], "the parameter") || lark_check_writable(op, params[i], pname) ||
        check_like(op, pname, params[i], grads[i], "its grad", false) ||
        (exp_avg[i] && check_like(op, pname, params[i], exp_avg[i], "its exp_avg", true)) ||
        (exp_avg_sq[i] && check_like(op, pname, params[i], exp_avg_sq[i], "its exp_avg_sq", true)) ||
        (w && check_like(op, pname, params[i], w, "its max_exp_avg_sq", true)) ||
        check_reference_cpu(op, pname, params[i], reference))
      return lark_error_code();
    if (steps[i] < 1)
      return lark_set_error(LARK_ERR_ARG, "%s: %s: step %lld (expected the count of this update, >= 1)", op, pname,
                            (long long)steps[i]);
  }
  scratch s = {0};
  if (scratch_alloc(op, n, &s)) return lark_error_code();
  int rc = fill_missing_state(op, n, params, exp_avg, s.made1);
  if (!rc && (rc = fill_missing_state(op, n, params, exp_avg_sq, s.made2))) undo_missing_state(n, exp_avg, s.made1);
  if (!rc && a->amsgrad && (rc = fill_missing_state(op, n, params, max_exp_avg_sq, s.made3))) {
    undo_missing_state(n, exp_avg, s.made1);
    undo_missing_state(n, exp_avg_sq, s.made2);
  }
  if (!rc && (rc = contiguous_grads(n, params, grads, s.grads))) {
    undo_missing_state(n, exp_avg, s.made1);
    undo_missing_state(n, exp_avg_sq, s.made2);
    if (a->amsgrad) undo_missing_state(n, max_exp_avg_sq, s.made3);
  }
  if (rc) {
    scratch_free(&s);
    return rc;
  }
  for (int i = 0; i < n; i++) {
    lark_tensor *p = params[i];
    int64_t ne = lark_numel(p);
    bool f64 = p->dtype == LARK_FLOAT64;
    adamw_consts c = adamw_consts_for(a, steps[i]);
    void *pp = lark_data_ptr(p), *mp = lark_data_ptr(exp_avg[i]), *vp = lark_data_ptr(exp_avg_sq[i]);
    void *wp = a->amsgrad ? lark_data_ptr(max_exp_avg_sq[i]) : NULL;
    const void *gp = lark_data_ptr(s.grads[i]);
    lark_device dev = lark_tensor_device(p);
    if (dev.kind != LARK_CPU) {
      /* as in SGD: a device failure drops the state made by this call */
      if (lark_backend_for(dev)->adamw_update(p, s.grads[i], exp_avg[i], exp_avg_sq[i],
                                              a->amsgrad ? max_exp_avg_sq[i] : NULL, a, c.decay, c.step_size,
                                              c.bc2_sqrt)) {
        release_all(n, s.grads);
        undo_missing_state(n, exp_avg, s.made1);
        undo_missing_state(n, exp_avg_sq, s.made2);
        if (a->amsgrad) undo_missing_state(n, max_exp_avg_sq, s.made3);
        scratch_free(&s);
        return lark_error_code();
      }
    } else if (reference) adamw_kernel_reference(pp, gp, mp, vp, wp, ne, a, c, f64);
    else if (f64) {
      double *P = pp, *Mm = mp, *V = vp, *W = wp;
      const double *G = gp;
      RUN_CHUNKED(ne, adamw_kernel_f64(P + lo, G + lo, Mm + lo, V + lo, W ? W + lo : NULL, len, a, c));
    } else {
      float *P = pp, *Mm = mp, *V = vp, *W = wp;
      const float *G = gp;
      RUN_CHUNKED(ne, adamw_kernel_f32(P + lo, G + lo, Mm + lo, V + lo, W ? W + lo : NULL, len, a, c));
    }
    lark_bump_version(p);
    lark_bump_version(exp_avg[i]);
    lark_bump_version(exp_avg_sq[i]);
    if (wp) lark_bump_version(max_exp_avg_sq[i]);
  }
  release_all(n, s.grads);
  scratch_free(&s);
  return 0;
}

int lark_adamw_step_(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **exp_avg,
                     lark_tensor **exp_avg_sq, lark_tensor **max_exp_avg_sq, const int64_t *steps,
                     const lark_adamw_args *args) {
  return adamw_common(n, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, steps, args, false);
}

int lark_adamw_step_reference_(int n, lark_tensor *const *params, lark_tensor *const *grads, lark_tensor **exp_avg,
                               lark_tensor **exp_avg_sq, lark_tensor **max_exp_avg_sq, const int64_t *steps,
                               const lark_adamw_args *args) {
  return adamw_common(n, params, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, steps, args, true);
}

/* ---- lerp over a list (ModelEma) ------------------------------------------------------------ */

/* torch.lerp's two-sided form: near weight 1 it is computed from the end point, which keeps
 * lerp(a, b, 1) == b exactly. */
#define DEFINE_LERP_KERNEL(T, NAME)                                                                      \
  static void NAME(T *restrict dst /* (n) */, const T *restrict src /* (n) */, int64_t n, double weight) { \
    const T w = (T)weight, w1 = (T)(1 - weight);                                                        \
    if (weight < 0.5)                                                                                   \
      for (int64_t i = 0; i < n; i++) dst[i] = dst[i] + w * (src[i] - dst[i]);                          \
    else                                                                                                \
      for (int64_t i = 0; i < n; i++) dst[i] = src[i] - (src[i] - dst[i]) * w1;                         \
  }
DEFINE_LERP_KERNEL(float, lerp_kernel_f32)
DEFINE_LERP_KERNEL(double, lerp_kernel_f64)

static void lerp_kernel_reference(void *dst /* (n) */, const void *src /* (n) */, int64_t n, double weight, bool f64) {
  for (int64_t i = 0; i < n; i++) {
    double d = ld(dst, i, f64), s = ld(src, i, f64);
    st(dst, i, weight < 0.5 ? d + weight * (s - d) : s - (s - d) * (1 - weight), f64);
  }
}

static int lerp_common(int n, lark_tensor *const *dst, lark_tensor *const *src, double weight, const char *const *names,
                       bool reference) {
  const char *op = "lerp_list_";
  char pname[320], a[256], b[256];
  if (check_list(op, n, dst, "destinations") || check_list(op, n, src, "sources")) return lark_error_code();
  if (!isfinite(weight)) return lark_set_error(LARK_ERR_ARG, "%s: weight is %g (expected a finite number)", op, weight);
  for (int i = 0; i < n; i++) {
    param_name(names, i, pname, sizeof pname);
    const lark_tensor *d = dst[i], *s = src[i];
    if (!d || !s) return lark_set_error(LARK_ERR_ARG, "%s: %s: a tensor is missing", op, pname);
    if (!d->storage || !s->storage) return lark_set_error(LARK_ERR_ARG, "%s: %s: a tensor was freed", op, pname);
    if (!lark_device_eq(lark_tensor_device(d), lark_tensor_device(s)))
      return lark_set_error(LARK_ERR_DEVICE, "%s: %s: the source is on %s but the destination on %s", op, pname,
                            lark_device_str(lark_tensor_device(s), a, sizeof a),
                            lark_device_str(lark_tensor_device(d), b, sizeof b));
    lark_device dev = lark_tensor_device(d);
    if (dev.kind != LARK_CPU && lark_dtype_is_float(d->dtype)) { /* integer entries are copied: any backend */
      const lark_backend *be = lark_backend_for(dev);
      if (!be || !be->lerp) return lark_backend_missing(op, dev);
      if (check_reference_cpu(op, pname, d, reference)) return lark_error_code();
    }
    if (d->ndim != s->ndim || memcmp(d->shape, s->shape, sizeof(int64_t) * (size_t)d->ndim))
      return lark_set_error(LARK_ERR_SHAPE, "%s: %s: the source has shape %s but the destination %s", op, pname,
                            lark_shape_str(s->ndim, s->shape, a, sizeof a), lark_shape_str(d->ndim, d->shape, b, sizeof b));
    if (d->dtype != s->dtype)
      return lark_set_error(LARK_ERR_DTYPE, "%s: %s: the source is %s but the destination %s", op, pname,
                            lark_dtype_name(s->dtype), lark_dtype_name(d->dtype));
    if (lark_dtype_is_float(d->dtype) && !lark_is_contiguous(d))
      return lark_set_error(LARK_ERR_ARG, "%s: %s: the destination is not contiguous", op, pname);
    if (lark_check_writable(op, d, pname)) return lark_error_code();
  }
  for (int i = 0; i < n; i++) {
    lark_tensor *d = dst[i];
    if (!lark_dtype_is_float(d->dtype)) { /* counters such as num_batches_tracked: copied */
      if (lark_copy_(d, src[i])) return lark_error_code();
      continue;
    }
    lark_tensor *s = lark_contiguous(src[i]);
    if (!s) return lark_error_code();
    int64_t ne = lark_numel(d);
    bool f64 = d->dtype == LARK_FLOAT64;
    lark_device dev = lark_tensor_device(d);
    if (dev.kind != LARK_CPU) {
      int rc = lark_backend_for(dev)->lerp(d, s, weight);
      lark_tensor_release(s);
      if (rc) return rc;
      lark_bump_version(d);
      continue;
    }
    if (reference) lerp_kernel_reference(lark_data_ptr(d), lark_data_ptr(s), ne, weight, f64);
    else if (f64) {
      double *D = lark_data_ptr(d);
      const double *S = lark_data_ptr(s);
      RUN_CHUNKED(ne, lerp_kernel_f64(D + lo, S + lo, len, weight));
    } else {
      float *D = lark_data_ptr(d);
      const float *S = lark_data_ptr(s);
      RUN_CHUNKED(ne, lerp_kernel_f32(D + lo, S + lo, len, weight));
    }
    lark_tensor_release(s);
    lark_bump_version(d);
  }
  return 0;
}

int lark_lerp_list_(int n, lark_tensor *const *dst, lark_tensor *const *src, double weight, const char *const *names) {
  return lerp_common(n, dst, src, weight, names, false);
}

int lark_lerp_list_reference_(int n, lark_tensor *const *dst, lark_tensor *const *src, double weight,
                              const char *const *names) {
  return lerp_common(n, dst, src, weight, names, true);
}

/* ---- gradient norm and clipping ------------------------------------------------------------- */

/* sum |x|^p (or max |x| when p is infinite) of one contiguous tensor, in double. */
static double norm_part(const void *x /* (n) */, int64_t n, double p, bool f64) {
  double acc = 0;
  if (isinf(p)) {
    int64_t nans = 0; /* an OpenMP max reduction may drop a NaN; count them on the side */
    _Pragma("omp parallel for reduction(max : acc) reduction(+ : nans) if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++) {
      double v = fabs(ld(x, i, f64));
      if (v != v) nans++;
      else if (v > acc) acc = v;
    }
    return nans ? NAN : acc;
  }
  if (p == 2) {
    _Pragma("omp parallel for reduction(+ : acc) if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++) {
      double v = ld(x, i, f64);
      acc += v * v;
    }
    return acc;
  }
  if (p == 1) {
    _Pragma("omp parallel for reduction(+ : acc) if (n >= LARK_PARALLEL_GRAIN)")
    for (int64_t i = 0; i < n; i++) acc += fabs(ld(x, i, f64));
    return acc;
  }
  _Pragma("omp parallel for reduction(+ : acc) if (n >= LARK_PARALLEL_GRAIN)")
  for (int64_t i = 0; i < n; i++) acc += pow(fabs(ld(x, i, f64)), p);
  return acc;
}

int lark_total_norm(int n, lark_tensor *const *ts, double p, double *out) {
  const char *op = "total_norm";
  char pname[32];
  if (check_list(op, n, ts, "tensors")) return lark_error_code();
  if (!out) return lark_set_error(LARK_ERR_ARG, "%s: the output pointer is missing", op);
  if (!(p > 0)) return lark_set_error(LARK_ERR_ARG, "%s: norm_type is %g (expected a number > 0 or inf)", op, p);
  double acc = 0;
  bool nan_seen = false;
  for (int i = 0; i < n; i++) {
    const lark_tensor *t = ts[i];
    snprintf(pname, sizeof pname, "tensor %d", i);
    if (!t) return lark_set_error(LARK_ERR_ARG, "%s: %s is missing", op, pname);
    if (!t->storage) return lark_set_error(LARK_ERR_ARG, "%s: %s was freed", op, pname);
    lark_device dev = lark_tensor_device(t);
    const lark_backend *be = dev.kind != LARK_CPU ? lark_backend_for(dev) : NULL;
    if (dev.kind != LARK_CPU && (!be || !be->norm_part)) return lark_backend_missing(op, dev);
    if (!lark_dtype_is_float(t->dtype))
      return lark_set_error(LARK_ERR_DTYPE, "%s: %s is %s (expected float32 or float64)", op, pname,
                            lark_dtype_name(t->dtype));
  }
  for (int i = 0; i < n; i++) {
    lark_tensor *c = lark_contiguous(ts[i]);
    if (!c) return lark_error_code();
    double part;
    lark_device dev = lark_tensor_device(c);
    if (dev.kind != LARK_CPU) {
      int rc = lark_backend_for(dev)->norm_part(c, p, &part);
      if (rc) {
        lark_tensor_release(c);
        return rc;
      }
    } else {
      part = norm_part(lark_data_ptr(c), lark_numel(c), p, c->dtype == LARK_FLOAT64);
    }
    lark_tensor_release(c);
    if (part != part) nan_seen = true;
    if (isinf(p)) acc = part > acc ? part : acc;
    else acc += part;
  }
  *out = nan_seen ? NAN : isinf(p) ? acc : (p == 2 ? sqrt(acc) : p == 1 ? acc : pow(acc, 1 / p));
  return 0;
}

int lark_clip_grad_norm_(int n, lark_tensor *const *grads, double max_norm, double p, double *total_norm) {
  const char *op = "clip_grad_norm";
  if (!(max_norm >= 0))
    return lark_set_error(LARK_ERR_ARG, "%s: max_norm is %g (expected a number >= 0)", op, max_norm);
  double total;
  if (lark_total_norm(n, grads, p, &total)) {
    /* say which entry point the user called */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", lark_error());
    const char *rest = strncmp(msg, "total_norm: ", 12) == 0 ? msg + 12 : msg;
    return lark_set_error(lark_error_code(), "%s: %s", op, rest);
  }
  if (total_norm) *total_norm = total;
  /* PyTorch's rule: scale by max_norm / (total + 1e-6) when that is below 1 (a NaN total scales
   * by NaN, as there, so a diverged step shows instead of being hidden) */
  double coef = max_norm / (total + 1e-6);
  if (!(coef < 1) && coef == coef) return 0;
  for (int i = 0; i < n; i++) {
    if (lark_check_writable(op, grads[i], "a gradient") || lark_binary_scalar_(LARK_OP_MUL, grads[i], coef))
      return lark_error_code();
  }
  return 0;
}
