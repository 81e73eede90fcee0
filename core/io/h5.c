/* h5.c: HDF5 files of tensors (lark.h5 and the checkpoints of lark.save / lark.load).
 *
 * The layout and the pitfalls are in shared/reference/CHECKPOINTS.md; what this file does about them:
 *   - only numbered API names whose signatures have not changed since 1.8 (H5Gcreate2, H5Dopen2,
 *     H5Aiterate2, H5Eset_auto2, H5Ewalk2, H5Lget_name_by_idx, ...): Debian's 1.10 maps the
 *     un-numbered macros to 1.8 signatures, 1.12+ to others;
 *   - HDF5's own stderr dump is switched off in every thread that calls in (the setting is per
 *     thread); a failure becomes one lark error naming the op, the file and the problem, with the
 *     library's innermost message appended when it adds something;
 *   - files are created with libver bounds V18..V18 (readable by any HDF5 >= 1.8, h5py included),
 *     link and attribute creation order tracked and indexed on every group (h5py then lists
 *     datasets in state_dict order), object timestamps off (two saves of the same tensors give the
 *     same bytes), and the close degree SEMI (a leaked handle makes close fail instead of leaving
 *     the metadata unwritten);
 *   - an atomic file is written as <path>.tmp.<pid>.<n> and committed by close: flush, close, fsync
 *     the file, rename over <path>, fsync the directory. A crash at any point leaves the previous
 *     <path> intact; stale temporaries of dead processes are removed by the next atomic create;
 *   - dtypes: float32/float64/int64/uint8 as little-endian IEEE and integer types, bool as h5py's
 *     enum over int8 {FALSE = 0, TRUE = 1}, 0-d tensors as scalar dataspaces, empty tensors as
 *     zero-length dataspaces with nothing written. Reading converts what fits without loss: any
 *     float of up to 4 bytes (float16, bfloat16) to float32, signed integers and unsigned ones of up
 *     to 4 bytes to int64; uint64, strings, compounds and other enums are refused by name;
 *   - bool tensors (masks) and, on request, any tensor are stored chunked (one chunk up to 1 MiB,
 *     split along the leading dims above) with shuffle + deflate + fletcher32, filters h5py reads
 *     without plugins; everything else is contiguous and uncompressed (fast to save).
 * All checkpoint I/O is meant to run on one thread at a time: Debian's libhdf5 is thread-safe, but
 * that means one global lock, and a lark_h5 handle itself is not shared between threads. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <hdf5.h>

#include "lark.h"

struct lark_h5 {
  hid_t file;
  lark_h5_mode mode;
  bool atomic;
  char *path; /* what the user named */
  char *tmp;  /* atomic: the temporary actually written */
};

/* ---- errors ----------------------------------------------------------------------------------- */

/* Silences HDF5's automatic error printing for the calling thread (the setting is per thread, so
 * every entry point calls this; after the first call it costs one TLS read). */
static void h5_quiet(void) {
  static _Thread_local bool done;
  if (done) return;
  H5open();
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  done = true;
}

typedef struct {
  char first[256], last[256];
  int n;
} h5_stack;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *ud) {
  h5_stack *s = ud;
  const char *d = e->desc && *e->desc ? e->desc : (e->func_name ? e->func_name : "");
  if (s->n == 0) snprintf(s->first, sizeof s->first, "%s", d);
  snprintf(s->last, sizeof s->last, "%s", d);
  s->n++;
  return 0;
}

/* The library's error stack as " (HDF5: outer; innermost)", then cleared; "" when empty. */
static const char *h5_stack_str(char *buf, size_t n) {
  h5_stack s = {{0}, {0}, 0};
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, &s);
  H5Eclear2(H5E_DEFAULT);
  buf[0] = 0;
  if (s.n == 0) return buf;
  if (s.n == 1 || strcmp(s.first, s.last) == 0) snprintf(buf, n, " (HDF5: %s)", s.first);
  else snprintf(buf, n, " (HDF5: %s; %s)", s.first, s.last);
  return buf;
}

/* "op: 'path': message" plus the library's stack when it has one. */
__attribute__((format(printf, 4, 5))) static int h5_error(int code, const char *op, const char *path, const char *fmt,
                                                          ...) {
  char msg[640], stack[560];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  h5_stack_str(stack, sizeof stack);
  return lark_set_error(code, "%s: '%s': %s%s", op, path, msg, stack);
}

/* ---- names and paths -------------------------------------------------------------------------- */

/* Checks an object path ("a/b/c" or "/a/b"): non-empty components, none of them "." (HDF5's "this
 * group"). An empty path or "/" is the root only when allow_root. */
static int check_name(const char *op, const lark_h5 *f, const char *name, bool allow_root) {
  if (!name) return h5_error(LARK_ERR_ARG, op, f->path, "expected a name, got NULL");
  const char *p = name;
  while (*p == '/') p++;
  if (!*p) {
    if (allow_root) return 0;
    return h5_error(LARK_ERR_ARG, op, f->path, "expected a dataset name, got '%s'", name);
  }
  for (const char *c = p; *c;) {
    const char *e = strchr(c, '/');
    size_t len = e ? (size_t)(e - c) : strlen(c);
    if (len == 0 || (len == 1 && c[0] == '.'))
      return h5_error(LARK_ERR_ARG, op, f->path,
                      "bad name '%s' (components between '/' must be non-empty and not '.')", name);
    if (!e) break;
    c = e + 1;
    if (!*c) return h5_error(LARK_ERR_ARG, op, f->path, "bad name '%s' (ends with '/')", name);
  }
  return 0;
}

/* Whether every component of path exists (H5Lexists fails, rather than saying no, when a parent
 * is missing, so the path is walked one level at a time). Returns 1, 0 or an error; *deepest gets
 * the longest existing prefix (a group, or the root "/") when given. */
static int path_exists(lark_h5 *f, const char *name, char *deepest, size_t dn) {
  char buf[4096];
  while (*name == '/') name++;
  if (deepest) snprintf(deepest, dn, "/");
  if (!*name) return 1;
  if (strlen(name) >= sizeof buf) return lark_set_error(LARK_ERR_ARG, "h5: name too long (%zu bytes)", strlen(name));
  snprintf(buf, sizeof buf, "%s", name);
  for (char *c = buf;;) {
    char *e = strchr(c, '/');
    if (e) *e = 0;
    htri_t ex = H5Lexists(f->file, buf, H5P_DEFAULT);
    if (ex < 0) return h5_error(LARK_ERR_IO, "h5", f->path, "cannot look up '%s'", buf);
    if (ex == 0) return 0;
    if (e) {
      /* the prefix must be a group to go on */
      hid_t o = H5Oopen(f->file, buf, H5P_DEFAULT);
      if (o < 0) return h5_error(LARK_ERR_IO, "h5", f->path, "cannot open '%s'", buf);
      H5I_type_t ty = H5Iget_type(o);
      H5Oclose(o);
      if (ty != H5I_GROUP) return 0;
      if (deepest) {
        size_t l = strlen(buf) < dn ? strlen(buf) : dn - 1;
        memcpy(deepest, buf, l);
        deepest[l] = 0;
      }
      *e = '/';
      c = e + 1;
    } else {
      return 1;
    }
  }
}

/* 0 if the object is absent, else LARK_H5_GROUP / LARK_H5_DATASET / LARK_H5_OTHER, or an error. */
static int kind_of(lark_h5 *f, const char *name) {
  while (*name == '/') name++;
  if (!*name) return LARK_H5_GROUP;
  int ex = path_exists(f, name, NULL, 0);
  if (ex <= 0) return ex;
  hid_t o = H5Oopen(f->file, name, H5P_DEFAULT);
  if (o < 0) return h5_error(LARK_ERR_IO, "h5", f->path, "'%s' exists but cannot be opened (a dangling link?)", name);
  H5I_type_t ty = H5Iget_type(o);
  H5Oclose(o);
  return ty == H5I_GROUP ? LARK_H5_GROUP : ty == H5I_DATASET ? LARK_H5_DATASET : LARK_H5_OTHER;
}

/* ---- listing a group -------------------------------------------------------------------------- */

void lark_h5_free_names(char **names, int64_t n) {
  if (!names) return;
  for (int64_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* The link names of group g, in creation order when the group tracks it, else by name. */
static int list_links(lark_h5 *f, const char *op, const char *group, char ***names_out, int64_t *n_out) {
  *names_out = NULL;
  *n_out = 0;
  const char *gname = group && *group ? group : "/";
  hid_t g = H5Gopen2(f->file, gname, H5P_DEFAULT);
  if (g < 0) return h5_error(LARK_ERR_IO, op, f->path, "cannot open group '%s'", gname);
  H5G_info_t info;
  if (H5Gget_info(g, &info) < 0) {
    H5Gclose(g);
    return h5_error(LARK_ERR_IO, op, f->path, "cannot read group '%s'", gname);
  }
  H5_index_t index = H5_INDEX_NAME;
  hid_t gcpl = H5Gget_create_plist(g);
  unsigned flags = 0;
  if (gcpl >= 0 && H5Pget_link_creation_order(gcpl, &flags) >= 0 && (flags & H5P_CRT_ORDER_TRACKED))
    index = H5_INDEX_CRT_ORDER;
  if (gcpl >= 0) H5Pclose(gcpl);
  H5Eclear2(H5E_DEFAULT);
  char **names = calloc(info.nlinks ? info.nlinks : 1, sizeof *names);
  if (!names) {
    H5Gclose(g);
    return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory listing '%s'", op, gname);
  }
  for (hsize_t i = 0; i < info.nlinks; i++) {
    ssize_t len = H5Lget_name_by_idx(g, ".", index, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
    if (len < 0 && index == H5_INDEX_CRT_ORDER && i == 0) {
      /* tracked but not indexed, in dense storage: fall back to names */
      H5Eclear2(H5E_DEFAULT);
      index = H5_INDEX_NAME;
      len = H5Lget_name_by_idx(g, ".", index, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
    }
    if (len < 0 || !(names[i] = malloc((size_t)len + 1)) ||
        H5Lget_name_by_idx(g, ".", index, H5_ITER_INC, i, names[i], (size_t)len + 1, H5P_DEFAULT) < 0) {
      lark_h5_free_names(names, (int64_t)info.nlinks);
      H5Gclose(g);
      return h5_error(LARK_ERR_IO, op, f->path, "cannot list group '%s'", gname);
    }
  }
  H5Gclose(g);
  *names_out = names;
  *n_out = (int64_t)info.nlinks;
  return 0;
}

/* "a, b, c and 12 more" (the first few names of a group) into buf, for hints in error messages. */
static void names_hint(lark_h5 *f, const char *group, char *buf, size_t n) {
  char **names;
  int64_t count;
  buf[0] = 0;
  if (list_links(f, "h5", group, &names, &count) < 0) {
    lark_clear_error();
    return;
  }
  size_t used = 0;
  int64_t shown = 0;
  for (; shown < count; shown++) {
    size_t len = strlen(names[shown]) + 4;
    if (used + len + 24 >= n || shown == 8) break;
    used += (size_t)snprintf(buf + used, n - used, "%s'%s'", shown ? ", " : "", names[shown]);
  }
  if (count == 0) snprintf(buf, n, "nothing");
  else if (shown < count) snprintf(buf + used, n - used, " and %lld more", (long long)(count - shown));
  lark_h5_free_names(names, count);
}

/* A "no such dataset" error with the members of the deepest group that does exist. */
static int missing_error(lark_h5 *f, const char *op, const char *what, const char *name) {
  char deepest[1024], hint[400];
  int ex = path_exists(f, name, deepest, sizeof deepest);
  if (ex < 0) return ex;
  names_hint(f, deepest, hint, sizeof hint);
  const char *where = strcmp(deepest, "/") == 0 ? "the root group" : deepest;
  return h5_error(LARK_ERR_ARG, op, f->path, "no %s '%s' (%s holds %s)", what, name, where, hint);
}

/* ---- open and close --------------------------------------------------------------------------- */

void lark_h5_open_opts_init(lark_h5_open_opts *o) {
  o->atomic = false;
  o->locking = true;
}

static const char *mode_name(lark_h5_mode m) { return m == LARK_H5_READ ? "r" : m == LARK_H5_WRITE ? "w" : "a"; }

/* Whether the file carries HDF5's signature (at 0, 512, 1024, 2048, ...: a user block may come
 * first). Checked before H5Fopen so that a stray file gets "not an HDF5 file", not a library stack. */
static int has_signature(const char *path, off_t size) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  int found = 0;
  for (off_t at = 0; at + 8 <= size; at = at ? at * 2 : 512) {
    unsigned char b[8];
    if (pread(fd, b, 8, at) != 8) break;
    if (memcmp(b, sig, 8) == 0) {
      found = 1;
      break;
    }
  }
  close(fd);
  return found;
}

static hid_t make_fapl(const lark_h5_open_opts *o, bool pin_format) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0) return fapl;
  H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI);
  if (pin_format) H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
#if H5_VERSION_GE(1, 10, 7)
  if (!o->locking) H5Pset_file_locking(fapl, 0, 1);
#endif
  return fapl;
}

/* The root group of a new file tracks the creation order of its links and attributes too. */
static hid_t make_fcpl(void) {
  hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
  if (fcpl < 0) return fcpl;
  H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  return fcpl;
}

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

/* Whether process pid still runs: it exists and, where /proc tells, is not a zombie (a writer
 * killed mid-save stays a zombie until its parent reaps it, and a zombie writes nothing). */
static bool process_alive(long pid) {
  if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) return false;
  char p[64], buf[256];
  snprintf(p, sizeof p, "/proc/%ld/stat", pid);
  FILE *fp = fopen(p, "r");
  if (!fp) return true;
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = 0;
  const char *close_paren = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
  return !(close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X'));
}

/* Removes <path>.tmp.<pid>.<n> files whose writer is gone (a crash mid-save). A temporary of a
 * live process, this one included, is left alone (on a filesystem shared between machines, a pid is
 * only meaningful on the machine that wrote it: write checkpoints from one machine). */
static void remove_stale_tmps(const char *path) {
  char *dir = dir_of(path);
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t blen = strlen(base);
  DIR *d = dir ? opendir(dir) : NULL;
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      const char *nm = e->d_name;
      if (strncmp(nm, base, blen) != 0 || strncmp(nm + blen, ".tmp.", 5) != 0) continue;
      const char *digits = nm + blen + 5;
      char *end;
      long pid = strtol(digits, &end, 10);
      if (end == digits || pid <= 0) continue;
      if (*end == '.') { /* <pid>.<n> */
        const char *seq = end + 1;
        strtol(seq, &end, 10);
        if (end == seq) continue;
      }
      if (*end || pid == (long)getpid() || process_alive(pid)) continue;
      size_t n = strlen(dir) + strlen(nm) + 2;
      char *full = malloc(n);
      if (full) {
        snprintf(full, n, "%s/%s", dir, nm);
        unlink(full);
        free(full);
      }
    }
    closedir(d);
  }
  free(dir);
}

static void free_handle(lark_h5 *f) {
  if (!f) return;
  free(f->path);
  free(f->tmp);
  free(f);
}

lark_h5 *lark_h5_open(const char *path, lark_h5_mode mode, const lark_h5_open_opts *opts) {
  h5_quiet();
  const char *op = "h5.open";
  lark_h5_open_opts dflt;
  if (!opts) {
    lark_h5_open_opts_init(&dflt);
    opts = &dflt;
  }
  if (!path || !*path) {
    lark_set_error(LARK_ERR_ARG, "%s: expected a file path, got an empty one", op);
    return NULL;
  }
  if (mode != LARK_H5_READ && mode != LARK_H5_WRITE && mode != LARK_H5_APPEND) {
    lark_set_error(LARK_ERR_ARG, "%s: '%s': mode must be read, write or append", op, path);
    return NULL;
  }
  if (opts->atomic && mode != LARK_H5_WRITE) {
    lark_set_error(LARK_ERR_ARG, "%s: '%s': atomic files are written whole (mode \"w\"), not opened with \"%s\"", op,
                   path, mode_name(mode));
    return NULL;
  }
  lark_h5 *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free_handle(f);
    lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    return NULL;
  }
  f->mode = mode;
  f->atomic = opts->atomic;
  f->file = -1;

  struct stat st;
  bool exists = stat(path, &st) == 0;
  if (mode == LARK_H5_READ || (mode == LARK_H5_APPEND && exists)) {
    if (!exists) {
      if (errno == ENOENT) lark_set_error(LARK_ERR_IO, "%s: '%s': no such file", op, path);
      else lark_set_error(LARK_ERR_IO, "%s: '%s': %s", op, path, strerror(errno));
      free_handle(f);
      return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
      lark_set_error(LARK_ERR_IO, "%s: '%s' is a directory, not an HDF5 file", op, path);
      free_handle(f);
      return NULL;
    }
    int sig = has_signature(path, st.st_size);
    if (sig < 0) {
      lark_set_error(LARK_ERR_IO, "%s: '%s': %s", op, path, strerror(errno));
      free_handle(f);
      return NULL;
    }
    if (sig == 0) {
      lark_set_error(LARK_ERR_IO, "%s: '%s' is not an HDF5 file (no HDF5 signature in its %lld bytes)", op, path,
                     (long long)st.st_size);
      free_handle(f);
      return NULL;
    }
    hid_t fapl = make_fapl(opts, false);
    f->file = H5Fopen(path, mode == LARK_H5_READ ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (f->file < 0) {
      h5_error(LARK_ERR_IO, op, path, "cannot open for %s: the file is truncated, corrupt or locked by a writer",
               mode == LARK_H5_READ ? "reading" : "appending");
      free_handle(f);
      return NULL;
    }
    return f;
  }

  /* create: the target itself, or the temporary of an atomic write */
  const char *target = path;
  if (f->atomic) {
    size_t n = strlen(path) + 32;
    if (!(f->tmp = malloc(n))) {
      free_handle(f);
      lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
      return NULL;
    }
    static unsigned seq; /* several atomic writes of one process never share a temporary */
    snprintf(f->tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    remove_stale_tmps(path);
    target = f->tmp;
  }
  hid_t fapl = make_fapl(opts, true), fcpl = make_fcpl();
  f->file = H5Fcreate(target, f->atomic ? H5F_ACC_EXCL : H5F_ACC_TRUNC, fcpl, fapl);
  H5Pclose(fapl);
  H5Pclose(fcpl);
  if (f->file < 0) {
    int err = errno;
    char *dir = dir_of(path);
    struct stat ds;
    if (dir && (stat(dir, &ds) != 0 || !S_ISDIR(ds.st_mode)))
      h5_error(LARK_ERR_IO, op, path, "cannot create: the directory '%s' does not exist", dir);
    else if (dir && access(dir, W_OK) != 0)
      h5_error(LARK_ERR_IO, op, path, "cannot create: the directory '%s' is not writable", dir);
    else
      h5_error(LARK_ERR_IO, op, path, "cannot create%s%s", err ? ": " : "", err ? strerror(err) : "");
    free(dir);
    free_handle(f);
    return NULL;
  }
  return f;
}

const char *lark_h5_path(const lark_h5 *f) { return f ? f->path : ""; }
lark_h5_mode lark_h5_get_mode(const lark_h5 *f) { return f->mode; }
bool lark_h5_is_atomic(const lark_h5 *f) { return f->atomic; }

static int fsync_path(const char *p, bool dir) {
  int fd = open(p, O_RDONLY | (dir ? O_DIRECTORY : 0));
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  errno = err;
  return rc;
}

/* Closes the HDF5 file; fails (and still closes what it can) when a handle inside was left open. */
static int close_file(lark_h5 *f, const char *op) {
  if (f->file < 0) return 0;
  int rc = 0;
  ssize_t open_objs = H5Fget_obj_count(f->file, H5F_OBJ_ALL | H5F_OBJ_LOCAL);
  if (open_objs > 1)
    rc = h5_error(LARK_ERR_IO, op, f->path, "%lld objects are still open in the file (a leaked handle)",
                  (long long)open_objs - 1);
  if (f->mode != LARK_H5_READ && H5Fflush(f->file, H5F_SCOPE_GLOBAL) < 0 && !rc)
    rc = h5_error(LARK_ERR_IO, op, f->path, "cannot flush: %s", strerror(errno));
  if (H5Fclose(f->file) < 0 && !rc) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot close");
  f->file = -1;
  return rc;
}

int lark_h5_close(lark_h5 *f) {
  if (!f) return 0;
  h5_quiet();
  const char *op = "h5.close";
  int rc = close_file(f, op);
  if (f->atomic && f->tmp) {
    if (rc == 0 && fsync_path(f->tmp, false) < 0)
      rc = lark_set_error(LARK_ERR_IO, "%s: '%s': cannot fsync %s: %s (the previous file is kept)", op, f->path, f->tmp,
                          strerror(errno));
    if (rc == 0 && rename(f->tmp, f->path) < 0)
      rc = lark_set_error(LARK_ERR_IO, "%s: '%s': cannot rename %s over it: %s (the previous file is kept)", op,
                          f->path, f->tmp, strerror(errno));
    if (rc == 0) {
      char *dir = dir_of(f->path);
      if (dir && fsync_path(dir, true) < 0)
        rc = lark_set_error(LARK_ERR_IO, "%s: '%s': saved, but cannot fsync the directory %s: %s", op, f->path, dir,
                            strerror(errno));
      free(dir);
    } else {
      unlink(f->tmp);
    }
  }
  free_handle(f);
  return rc;
}

int lark_h5_abort(lark_h5 *f) {
  if (!f) return 0;
  h5_quiet();
  if (!f->atomic) return lark_h5_close(f);
  if (f->file >= 0) H5Fclose(f->file);
  H5Eclear2(H5E_DEFAULT);
  f->file = -1;
  if (f->tmp) unlink(f->tmp);
  free_handle(f);
  return 0;
}

/* ---- dtypes ----------------------------------------------------------------------------------- */

/* h5py's bool: an enum over int8 with FALSE = 0 and TRUE = 1. base: H5T_STD_I8LE in files,
 * H5T_NATIVE_INT8 in memory. */
static hid_t bool_type(hid_t base) {
  hid_t t = H5Tenum_create(base);
  if (t < 0) return t;
  int8_t v = 0;
  H5Tenum_insert(t, "FALSE", &v);
  v = 1;
  H5Tenum_insert(t, "TRUE", &v);
  return t;
}

static bool is_bool_enum(hid_t t) {
  if (H5Tget_nmembers(t) != 2) return false;
  hid_t super = H5Tget_super(t);
  bool ok = super >= 0 && H5Tget_class(super) == H5T_INTEGER && H5Tget_size(super) == 1;
  if (super >= 0) H5Tclose(super);
  for (unsigned i = 0; ok && i < 2; i++) {
    char *nm = H5Tget_member_name(t, i);
    int8_t v = -1;
    ok = nm && H5Tget_member_value(t, i, &v) >= 0 &&
         ((strcmp(nm, "FALSE") == 0 && v == 0) || (strcmp(nm, "TRUE") == 0 && v == 1));
    if (nm) H5free_memory(nm);
  }
  return ok;
}

/* The file type a dtype is written as (caller closes). */
static hid_t file_type_of(lark_dtype dt) {
  switch (dt) {
  case LARK_FLOAT32: return H5Tcopy(H5T_IEEE_F32LE);
  case LARK_FLOAT64: return H5Tcopy(H5T_IEEE_F64LE);
  case LARK_INT64: return H5Tcopy(H5T_STD_I64LE);
  case LARK_UINT8: return H5Tcopy(H5T_STD_U8LE);
  case LARK_BOOL: return bool_type(H5T_STD_I8LE);
  default: return -1;
  }
}

/* The memory type of a dtype (caller closes). */
static hid_t mem_type_of(lark_dtype dt) {
  switch (dt) {
  case LARK_FLOAT32: return H5Tcopy(H5T_NATIVE_FLOAT);
  case LARK_FLOAT64: return H5Tcopy(H5T_NATIVE_DOUBLE);
  case LARK_INT64: return H5Tcopy(H5T_NATIVE_INT64);
  case LARK_UINT8: return H5Tcopy(H5T_NATIVE_UINT8);
  case LARK_BOOL: return bool_type(H5T_NATIVE_INT8);
  default: return -1;
  }
}

static const char *class_name(H5T_class_t c) {
  switch (c) {
  case H5T_INTEGER: return "integer";
  case H5T_FLOAT: return "float";
  case H5T_TIME: return "time";
  case H5T_STRING: return "string";
  case H5T_BITFIELD: return "bitfield";
  case H5T_OPAQUE: return "opaque";
  case H5T_COMPOUND: return "compound";
  case H5T_REFERENCE: return "reference";
  case H5T_ENUM: return "enum";
  case H5T_VLEN: return "variable-length";
  case H5T_ARRAY: return "array";
  default: return "unknown";
  }
}

/* The dtype a file type is read as, or -1 with why (e.g. "uint64", "string") filled. */
static int dtype_of_file_type(hid_t t, char *why, size_t n) {
  H5T_class_t c = H5Tget_class(t);
  size_t size = H5Tget_size(t);
  if (c == H5T_FLOAT) {
    if (size <= 4) return LARK_FLOAT32; /* float16 and bfloat16 convert to float32 exactly */
    if (size == 8) return LARK_FLOAT64;
    snprintf(why, n, "%zu-byte float", size);
    return -1;
  }
  if (c == H5T_INTEGER) {
    bool sign = H5Tget_sign(t) == H5T_SGN_2;
    if (!sign && size == 1) return LARK_UINT8;
    if (size <= 8 && (sign || size < 8)) return LARK_INT64;
    snprintf(why, n, "%s%zu", sign ? "int" : "uint", size * 8);
    return -1;
  }
  if (c == H5T_ENUM && is_bool_enum(t)) return LARK_BOOL;
  if (c == H5T_ENUM) snprintf(why, n, "enum (other than h5py's bool {FALSE = 0, TRUE = 1})");
  else snprintf(why, n, "%s", class_name(c));
  return -1;
}

/* ---- datasets --------------------------------------------------------------------------------- */

/* Creates the missing groups of path's parents (each tracking creation order), one level at a
 * time; a component that exists but is not a group is an error. */
static hid_t make_gcpl(void) {
  hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
  if (gcpl < 0) return gcpl;
  H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  H5Pset_attr_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  H5Pset_obj_track_times(gcpl, 0);
  return gcpl;
}

/* Makes group `name` and its missing parents; with last = false only the parents of name. */
static int ensure_groups(lark_h5 *f, const char *op, const char *name, bool last) {
  char buf[4096];
  while (*name == '/') name++;
  if (strlen(name) >= sizeof buf) return lark_set_error(LARK_ERR_ARG, "%s: name too long", op);
  snprintf(buf, sizeof buf, "%s", name);
  for (char *c = buf; *c;) {
    char *e = strchr(c, '/');
    if (!e && !last) break;
    if (e) *e = 0;
    htri_t ex = H5Lexists(f->file, buf, H5P_DEFAULT);
    if (ex < 0) return h5_error(LARK_ERR_IO, op, f->path, "cannot look up '%s'", buf);
    if (ex) {
      hid_t o = H5Oopen(f->file, buf, H5P_DEFAULT);
      H5I_type_t ty = o >= 0 ? H5Iget_type(o) : H5I_BADID;
      if (o >= 0) H5Oclose(o);
      if (ty != H5I_GROUP) return h5_error(LARK_ERR_ARG, op, f->path, "'%s' exists and is not a group", buf);
    } else {
      hid_t gcpl = make_gcpl();
      hid_t g = H5Gcreate2(f->file, buf, H5P_DEFAULT, gcpl, H5P_DEFAULT);
      H5Pclose(gcpl);
      if (g < 0) return h5_error(LARK_ERR_IO, op, f->path, "cannot create group '%s'", buf);
      H5Gclose(g);
    }
    if (!e) break;
    *e = '/';
    c = e + 1;
  }
  return 0;
}

int lark_h5_create_group(lark_h5 *f, const char *name) {
  h5_quiet();
  const char *op = "h5.create_group";
  if (!f || f->file < 0) return lark_set_error(LARK_ERR_ARG, "%s: the file is closed", op);
  if (check_name(op, f, name, true)) return lark_error_code();
  if (f->mode == LARK_H5_READ) return lark_set_error(LARK_ERR_ARG, "%s: '%s' is open read-only", op, f->path);
  return ensure_groups(f, op, name, true);
}

void lark_h5_write_opts_init(lark_h5_write_opts *o) {
  o->compress = -1;
  o->level = 4;
}

/* Chunk dims: the whole tensor when it is at most 1 MiB, else split along the leading dims so a
 * chunk stays near 1 MiB (HDF5's default chunk cache) and far under the 4 GiB limit. */
static void chunk_dims(int ndim, const int64_t *shape, size_t itemsize, hsize_t *chunk) {
  const size_t target = 1 << 20;
  for (int d = 0; d < ndim; d++) chunk[d] = (hsize_t)shape[d];
  for (int d = 0; d < ndim; d++) {
    size_t inner = itemsize;
    for (int k = d + 1; k < ndim; k++) inner *= (size_t)chunk[k];
    if (inner * chunk[d] <= target) break;
    size_t rows = target / inner;
    if (rows >= 1) {
      chunk[d] = rows;
      break;
    }
    chunk[d] = 1;
  }
}

int lark_h5_write(lark_h5 *f, const char *name, const lark_tensor *t, const lark_h5_write_opts *opts) {
  h5_quiet();
  const char *op = "h5.write";
  if (!f || f->file < 0) return lark_set_error(LARK_ERR_ARG, "%s: the file is closed", op);
  if (check_name(op, f, name, false)) return lark_error_code();
  if (f->mode == LARK_H5_READ)
    return lark_set_error(LARK_ERR_ARG, "%s: '%s' is open read-only (open it with \"w\" or \"a\")", op, f->path);
  if (!t || !t->storage) return h5_error(LARK_ERR_ARG, op, f->path, "'%s': expected a tensor", name);
  lark_h5_write_opts dflt;
  if (!opts) {
    lark_h5_write_opts_init(&dflt);
    opts = &dflt;
  }
  if (opts->level < 0 || opts->level > 9)
    return h5_error(LARK_ERR_ARG, op, f->path, "'%s': deflate level %d is out of range (expected 0..9)", name, opts->level);
  if (ensure_groups(f, op, name, false)) return lark_error_code();
  int kind = kind_of(f, name);
  if (kind < 0) return kind;
  if (kind == LARK_H5_GROUP || kind == LARK_H5_OTHER)
    return h5_error(LARK_ERR_ARG, op, f->path, "'%s' exists and is a group, not a dataset", name);
  if (kind == LARK_H5_DATASET && H5Ldelete(f->file, name, H5P_DEFAULT) < 0)
    return h5_error(LARK_ERR_IO, op, f->path, "cannot replace the dataset '%s'", name);

  /* host, contiguous data */
  lark_tensor *host = lark_to(t, t->dtype, &LARK_DEVICE_CPU);
  lark_tensor *c = host ? lark_contiguous(host) : NULL;
  lark_tensor_release(host);
  if (!c) return lark_error_code();
  int64_t numel = lark_numel(c);
  hsize_t dims[LARK_MAX_DIMS], chunk[LARK_MAX_DIMS];
  for (int d = 0; d < c->ndim; d++) dims[d] = (hsize_t)c->shape[d];
  hid_t space = c->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(c->ndim, dims, NULL);
  hid_t ftype = file_type_of(c->dtype), mtype = mem_type_of(c->dtype);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  int rc = 0;
  if (space < 0 || ftype < 0 || mtype < 0 || dcpl < 0) {
    rc = h5_error(LARK_ERR_IO, op, f->path, "'%s': cannot set up a %s dataset", name, lark_dtype_name(c->dtype));
    goto done;
  }
  H5Pset_obj_track_times(dcpl, 0);
  bool compress = opts->compress > 0 || (opts->compress < 0 && c->dtype == LARK_BOOL);
  if (compress && c->ndim > 0 && numel > 0) { /* scalars and empty tensors cannot be chunked */
    chunk_dims(c->ndim, c->shape, lark_dtype_size(c->dtype), chunk);
    if (H5Pset_chunk(dcpl, c->ndim, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
        (opts->level > 0 && H5Pset_deflate(dcpl, (unsigned)opts->level) < 0) || H5Pset_fletcher32(dcpl) < 0) {
      rc = h5_error(LARK_ERR_IO, op, f->path, "'%s': cannot set up compression", name);
      goto done;
    }
  }
  hid_t ds = H5Dcreate2(f->file, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) {
    rc = h5_error(LARK_ERR_IO, op, f->path, "cannot create the dataset '%s'", name);
    goto done;
  }
  if (numel > 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, lark_data_ptr(c)) < 0)
    rc = h5_error(LARK_ERR_IO, op, f->path, "cannot write the dataset '%s' (%lld bytes): %s", name,
                  (long long)(numel * (int64_t)lark_dtype_size(c->dtype)), errno ? strerror(errno) : "write failed");
  if (H5Dclose(ds) < 0 && !rc) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot close the dataset '%s'", name);
done:
  if (space >= 0) H5Sclose(space);
  if (ftype >= 0) H5Tclose(ftype);
  if (mtype >= 0) H5Tclose(mtype);
  if (dcpl >= 0) H5Pclose(dcpl);
  lark_tensor_release(c);
  return rc;
}

/* Opens dataset `name` with its type and space; an error names what is missing or wrong. */
static hid_t open_dataset(lark_h5 *f, const char *op, const char *name) {
  if (!f || f->file < 0) {
    lark_set_error(LARK_ERR_ARG, "%s: the file is closed", op);
    return -1;
  }
  if (check_name(op, f, name, false)) return -1;
  int kind = kind_of(f, name);
  if (kind < 0) return -1;
  if (kind == 0) {
    missing_error(f, op, "dataset", name);
    return -1;
  }
  if (kind != LARK_H5_DATASET) {
    char hint[400];
    names_hint(f, name, hint, sizeof hint);
    h5_error(LARK_ERR_ARG, op, f->path, "'%s' is a group, not a dataset (it holds %s)", name, hint);
    return -1;
  }
  hid_t ds = H5Dopen2(f->file, name, H5P_DEFAULT);
  if (ds < 0) h5_error(LARK_ERR_IO, op, f->path, "cannot open the dataset '%s'", name);
  return ds;
}

/* The dtype and shape dataset ds is read as. */
static int dataset_geometry(lark_h5 *f, const char *op, const char *name, hid_t ds, lark_dtype *dt, int *ndim,
                            int64_t *shape) {
  hid_t ftype = H5Dget_type(ds), space = H5Dget_space(ds);
  int rc = 0;
  if (ftype < 0 || space < 0) {
    rc = h5_error(LARK_ERR_IO, op, f->path, "cannot read the type of '%s'", name);
    goto done;
  }
  char why[128];
  int d = dtype_of_file_type(ftype, why, sizeof why);
  if (d < 0) {
    rc = h5_error(LARK_ERR_DTYPE, op, f->path,
                  "'%s' has an unsupported dtype: %s (lark reads float16/32/64, bfloat16, integers up to int64, "
                  "uint8 and h5py's bool)", name, why);
    goto done;
  }
  *dt = (lark_dtype)d;
  H5S_class_t sc = H5Sget_simple_extent_type(space);
  if (sc == H5S_SCALAR) {
    *ndim = 0;
  } else if (sc == H5S_SIMPLE) {
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd < 0 || nd > LARK_MAX_DIMS) {
      rc = h5_error(LARK_ERR_SHAPE, op, f->path, "'%s' has %d dims (lark supports at most %d)", name, nd, LARK_MAX_DIMS);
      goto done;
    }
    hsize_t dims[LARK_MAX_DIMS];
    H5Sget_simple_extent_dims(space, dims, NULL);
    for (int k = 0; k < nd; k++) shape[k] = (int64_t)dims[k];
    *ndim = nd;
  } else {
    rc = h5_error(LARK_ERR_SHAPE, op, f->path, "'%s' has a null dataspace (no data at all)", name);
  }
done:
  if (ftype >= 0) H5Tclose(ftype);
  if (space >= 0) H5Sclose(space);
  return rc;
}

int lark_h5_dataset_info(lark_h5 *f, const char *name, lark_dtype *dt, int *ndim, int64_t *shape) {
  h5_quiet();
  const char *op = "h5.info";
  hid_t ds = open_dataset(f, op, name);
  if (ds < 0) return lark_error_code();
  int rc = dataset_geometry(f, op, name, ds, dt, ndim, shape);
  H5Dclose(ds);
  return rc;
}

lark_tensor *lark_h5_read(lark_h5 *f, const char *name) {
  h5_quiet();
  const char *op = "h5.read";
  hid_t ds = open_dataset(f, op, name);
  if (ds < 0) return NULL;
  lark_dtype dt;
  int ndim;
  int64_t shape[LARK_MAX_DIMS];
  lark_tensor *t = NULL;
  if (dataset_geometry(f, op, name, ds, &dt, &ndim, shape) == 0) t = lark_empty(ndim, shape, dt, NULL);
  if (t && lark_numel(t) > 0) {
    hid_t mtype = mem_type_of(dt);
    herr_t rc = mtype >= 0 ? H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, lark_data_ptr(t)) : -1;
    if (mtype >= 0) H5Tclose(mtype);
    if (rc < 0) {
      h5_error(LARK_ERR_IO, op, f->path, "cannot read the dataset '%s' (truncated or corrupt data?)", name);
      lark_tensor_release(t);
      t = NULL;
    }
  }
  H5Dclose(ds);
  return t;
}

int lark_h5_kind_of(lark_h5 *f, const char *name) {
  h5_quiet();
  if (!f || f->file < 0) return lark_set_error(LARK_ERR_ARG, "h5.has: the file is closed");
  if (check_name("h5.has", f, name, true)) return lark_error_code();
  return kind_of(f, name);
}

int lark_h5_keys(lark_h5 *f, const char *group, char ***names, int64_t *n) {
  h5_quiet();
  const char *op = "h5.keys";
  *names = NULL;
  *n = 0;
  if (!f || f->file < 0) return lark_set_error(LARK_ERR_ARG, "%s: the file is closed", op);
  if (!group) group = "/";
  if (check_name(op, f, group, true)) return lark_error_code();
  int kind = kind_of(f, group);
  if (kind < 0) return kind;
  if (kind == 0) return missing_error(f, op, "group", group);
  if (kind != LARK_H5_GROUP) return h5_error(LARK_ERR_ARG, op, f->path, "'%s' is a dataset, not a group", group);
  return list_links(f, op, group, names, n);
}

/* ---- attributes ------------------------------------------------------------------------------- */

/* Opens the object an attribute lives on ("" or "/" for the root). */
static hid_t open_object(lark_h5 *f, const char *op, const char *object) {
  if (!f || f->file < 0) {
    lark_set_error(LARK_ERR_ARG, "%s: the file is closed", op);
    return -1;
  }
  if (!object || !*object) object = "/";
  if (check_name(op, f, object, true)) return -1;
  int kind = kind_of(f, object);
  if (kind < 0) return -1;
  if (kind == 0) {
    missing_error(f, op, "object", object);
    return -1;
  }
  hid_t o = H5Oopen(f->file, object, H5P_DEFAULT);
  if (o < 0) h5_error(LARK_ERR_IO, op, f->path, "cannot open '%s'", object);
  return o;
}

static const char *obj_label(const char *object) { return !object || !*object || strcmp(object, "/") == 0 ? "/" : object; }

void lark_h5_attr_free(lark_h5_attr *a) {
  if (!a) return;
  free(a->s);
  free(a->i);
  free(a->d);
  memset(a, 0, sizeof *a);
}

/* Replaces attribute `name` of the object with one of file type ftype and space holding buf (in
 * memory type mtype). */
static int put_attr(lark_h5 *f, const char *op, const char *object, const char *name, hid_t ftype, hid_t mtype,
                    hid_t space, const void *buf) {
  if (f && f->mode == LARK_H5_READ)
    return lark_set_error(LARK_ERR_ARG, "%s: '%s' is open read-only (open it with \"w\" or \"a\")", op, f->path);
  if (!name || !*name) return lark_set_error(LARK_ERR_ARG, "%s: expected an attribute name", op);
  hid_t o = open_object(f, op, object);
  if (o < 0) return lark_error_code();
  int rc = 0;
  htri_t ex = H5Aexists(o, name);
  if (ex > 0 && H5Adelete(o, name) < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot replace attribute '%s'", name);
  if (!rc) {
    hid_t a = H5Acreate2(o, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot create attribute '%s' on %s", name, obj_label(object));
    else {
      if (H5Awrite(a, mtype, buf) < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot write attribute '%s'", name);
      H5Aclose(a);
    }
  }
  H5Oclose(o);
  return rc;
}

int lark_h5_set_attr_string(lark_h5 *f, const char *object, const char *name, const char *value) {
  h5_quiet();
  if (!value) return lark_set_error(LARK_ERR_ARG, "h5.set_attr: attribute '%s': expected a string, got NULL", name);
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  hid_t s = H5Screate(H5S_SCALAR);
  int rc = put_attr(f, "h5.set_attr", object, name, t, t, s, &value);
  H5Tclose(t);
  H5Sclose(s);
  return rc;
}

int lark_h5_set_attr_int(lark_h5 *f, const char *object, const char *name, int64_t value) {
  h5_quiet();
  hid_t s = H5Screate(H5S_SCALAR);
  int rc = put_attr(f, "h5.set_attr", object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s, &value);
  H5Sclose(s);
  return rc;
}

int lark_h5_set_attr_float(lark_h5 *f, const char *object, const char *name, double value) {
  h5_quiet();
  hid_t s = H5Screate(H5S_SCALAR);
  int rc = put_attr(f, "h5.set_attr", object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s, &value);
  H5Sclose(s);
  return rc;
}

int lark_h5_set_attr_bool(lark_h5 *f, const char *object, const char *name, bool value) {
  h5_quiet();
  hid_t s = H5Screate(H5S_SCALAR), ft = bool_type(H5T_STD_I8LE), mt = bool_type(H5T_NATIVE_INT8);
  int8_t v = value ? 1 : 0;
  int rc = put_attr(f, "h5.set_attr", object, name, ft, mt, s, &v);
  H5Tclose(ft);
  H5Tclose(mt);
  H5Sclose(s);
  return rc;
}

int lark_h5_get_attr(lark_h5 *f, const char *object, const char *name, lark_h5_attr *out) {
  h5_quiet();
  const char *op = "h5.attr";
  memset(out, 0, sizeof *out);
  if (!name || !*name) return lark_set_error(LARK_ERR_ARG, "%s: expected an attribute name", op);
  hid_t o = open_object(f, op, object);
  if (o < 0) return lark_error_code();
  htri_t ex = H5Aexists(o, name);
  if (ex <= 0) {
    H5Oclose(o);
    if (ex < 0) return h5_error(LARK_ERR_IO, op, f->path, "cannot look up attribute '%s'", name);
    return 0;
  }
  hid_t a = H5Aopen(o, name, H5P_DEFAULT);
  hid_t type = a >= 0 ? H5Aget_type(a) : -1, space = a >= 0 ? H5Aget_space(a) : -1;
  int rc = 1;
  if (type < 0 || space < 0) {
    rc = h5_error(LARK_ERR_IO, op, f->path, "cannot open attribute '%s' of %s", name, obj_label(object));
    goto done;
  }
  hssize_t npoints = H5Sget_simple_extent_npoints(space);
  H5S_class_t sc = H5Sget_simple_extent_type(space);
  out->is_array = sc == H5S_SIMPLE;
  out->n = npoints < 0 ? 0 : (int64_t)npoints;
  if (sc == H5S_NULL || npoints > (1 << 24)) {
    rc = h5_error(LARK_ERR_ARG, op, f->path, "attribute '%s' of %s is %s", name, obj_label(object),
                  sc == H5S_NULL ? "empty (null dataspace)" : "too large");
    goto done;
  }
  H5T_class_t c = H5Tget_class(type);
  if (c == H5T_STRING) {
    if (npoints != 1) {
      rc = h5_error(LARK_ERR_DTYPE, op, f->path, "attribute '%s' of %s is an array of %lld strings (unsupported)", name,
                    obj_label(object), (long long)npoints);
      goto done;
    }
    out->type = LARK_H5_ATTR_STRING;
    out->is_array = false;
    out->n = 1;
    if (H5Tis_variable_str(type) > 0) {
      hid_t m = H5Tcopy(H5T_C_S1);
      H5Tset_size(m, H5T_VARIABLE);
      H5Tset_cset(m, H5Tget_cset(type));
      char *s = NULL;
      if (H5Aread(a, m, &s) < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot read attribute '%s'", name);
      else {
        out->s = strdup(s ? s : "");
        if (s) H5free_memory(s);
      }
      H5Tclose(m);
    } else {
      size_t size = H5Tget_size(type);
      out->s = calloc(size + 1, 1);
      if (out->s && H5Aread(a, type, out->s) < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot read attribute '%s'", name);
      /* fixed-length strings are padded with NULs or spaces */
      if (out->s && H5Tget_strpad(type) == H5T_STR_SPACEPAD)
        for (size_t k = strlen(out->s); k > 0 && out->s[k - 1] == ' '; k--) out->s[k - 1] = 0;
    }
    if (rc == 1 && !out->s) rc = lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
  } else if (c == H5T_INTEGER || (c == H5T_ENUM && is_bool_enum(type))) {
    out->type = c == H5T_ENUM ? LARK_H5_ATTR_BOOL : LARK_H5_ATTR_INT;
    out->i = calloc((size_t)(npoints ? npoints : 1), sizeof *out->i);
    if (!out->i) rc = lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    else if (c == H5T_ENUM) {
      int8_t *b = calloc((size_t)(npoints ? npoints : 1), 1);
      hid_t m = bool_type(H5T_NATIVE_INT8);
      if (!b || H5Aread(a, m, b) < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot read attribute '%s'", name);
      else
        for (hssize_t k = 0; k < npoints; k++) out->i[k] = b[k];
      H5Tclose(m);
      free(b);
    } else if (H5Aread(a, H5T_NATIVE_INT64, out->i) < 0) {
      rc = h5_error(LARK_ERR_IO, op, f->path, "cannot read attribute '%s'", name);
    }
  } else if (c == H5T_FLOAT) {
    out->type = LARK_H5_ATTR_FLOAT;
    out->d = calloc((size_t)(npoints ? npoints : 1), sizeof *out->d);
    if (!out->d) rc = lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    else if (H5Aread(a, H5T_NATIVE_DOUBLE, out->d) < 0) rc = h5_error(LARK_ERR_IO, op, f->path, "cannot read attribute '%s'", name);
  } else {
    char why[128];
    dtype_of_file_type(type, why, sizeof why);
    rc = h5_error(LARK_ERR_DTYPE, op, f->path, "attribute '%s' of %s has an unsupported type: %s", name,
                  obj_label(object), why);
  }
done:
  if (rc != 1) lark_h5_attr_free(out);
  if (type >= 0) H5Tclose(type);
  if (space >= 0) H5Sclose(space);
  if (a >= 0) H5Aclose(a);
  H5Oclose(o);
  return rc;
}

typedef struct {
  char **names;
  int64_t n, cap;
  bool nomem;
} attr_list;

static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *ud) {
  attr_list *l = ud;
  if (l->n == l->cap) {
    int64_t cap = l->cap ? 2 * l->cap : 8;
    char **nn = realloc(l->names, (size_t)cap * sizeof *nn);
    if (!nn) {
      l->nomem = true;
      return -1;
    }
    l->names = nn;
    l->cap = cap;
  }
  if (!(l->names[l->n] = strdup(name))) {
    l->nomem = true;
    return -1;
  }
  l->n++;
  return 0;
}

int lark_h5_attr_names(lark_h5 *f, const char *object, char ***names, int64_t *n) {
  h5_quiet();
  const char *op = "h5.attrs";
  *names = NULL;
  *n = 0;
  hid_t o = open_object(f, op, object);
  if (o < 0) return lark_error_code();
  attr_list l = {NULL, 0, 0, false};
  hsize_t idx = 0;
  herr_t rc = H5Aiterate2(o, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, attr_cb, &l);
  if (rc < 0 && !l.nomem && l.n == 0) { /* creation order not tracked on this object: by name */
    H5Eclear2(H5E_DEFAULT);
    idx = 0;
    rc = H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, &l);
  }
  H5Oclose(o);
  if (rc < 0) {
    lark_h5_free_names(l.names, l.n);
    if (l.nomem) return lark_set_error(LARK_ERR_NOMEM, "%s: out of memory", op);
    return h5_error(LARK_ERR_IO, op, f->path, "cannot list the attributes of %s", obj_label(object));
  }
  *names = l.names;
  *n = l.n;
  return 0;
}
