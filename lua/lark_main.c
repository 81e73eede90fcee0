/*
 * lark_main.c: the `lark` executable, a Lua 5.4 interpreter with the lark library preloaded.
 *
 *   lark                      interactive session (REPL) when stdin is a terminal
 *   lark script.lua a b       run a script; arg and ... as in the standalone lua
 *   lark -e code | -l mod | -i | -v | -q | -E | -W | - | --
 *
 * The command line follows the standalone `lua` closely so that tools written for it (busted,
 * luacov, shebang scripts) run unchanged under lark. What lark adds: the module search path is
 * set up relative to the executable so the build tree and the installed tree both work without
 * LUA_PATH, the C module lark.core is linked in and preloaded, `lark` is a global, and the REPL
 * has readline editing, persistent history, completion of fields and methods, and auto-printing.
 */
#define _GNU_SOURCE /* pselect, getline, readlink: this file is POSIX-only anyway */

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <readline/history.h>
#include <readline/readline.h>

#ifndef LARK_VERSION
#define LARK_VERSION "unknown"
#endif

#define PROGNAME "lark"
#define PROMPT1 "lark> "
#define PROMPT2 ">> "
#define HISTORY_MAX 1000

int luaopen_lark_core(lua_State *L); /* lua/module.c, linked in through lark_bind */

/* ---- messages ------------------------------------------------------------------------------- */

static void print_usage(const char *badopt) {
  if (badopt != NULL) {
    if (badopt[1] == 'e' || badopt[1] == 'l')
      fprintf(stderr, "%s: '%s' needs an argument\n", PROGNAME, badopt);
    else
      fprintf(stderr, "%s: unrecognized option '%s'\n", PROGNAME, badopt);
  }
  fprintf(stderr,
          "usage: %s [options] [script [args]]\n"
          "Available options are:\n"
          "  -e stat   execute string 'stat'\n"
          "  -i        enter interactive mode after executing 'script'\n"
          "  -l mod    require library 'mod' into global 'mod' (-l g=mod: into global 'g')\n"
          "  -v        show version information\n"
          "  -q        no banner in interactive mode\n"
          "  -E        ignore environment variables (LUA_INIT, LUA_PATH, LUA_CPATH)\n"
          "  -W        turn warnings on\n"
          "  --        stop handling options\n"
          "  -         execute stdin and stop handling options\n",
          PROGNAME);
}

static void print_version(FILE *f) {
  fprintf(f, "lark %s (%s)\n", LARK_VERSION, LUA_RELEASE);
  fflush(f);
}

/* Errors name the program, except inside the REPL where it is obvious who is talking. */
static const char *g_progname = PROGNAME;

/* Prints the error message on top of the stack (already carrying its traceback when it came
 * through msghandler) and pops it. docall always leaves a string, but stay defensive. */
static void report(lua_State *L, int status) {
  if (status == LUA_OK) return;
  const char *msg = lua_tostring(L, -1);
  if (msg == NULL) msg = "(error object is not a string)";
  fflush(stdout); /* keep results printed before the error ahead of it when both go to a file */
  if (g_progname != NULL)
    fprintf(stderr, "%s: %s\n", g_progname, msg);
  else
    fprintf(stderr, "%s\n", msg);
  fflush(stderr);
  lua_pop(L, 1);
}

/* Message handler for every protected call: turns the error into "message + traceback" while the
 * stack of the failing code is still there to be walked. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    /* An error object: use its __tostring when it has one, else name its type. */
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* ---- Ctrl-C --------------------------------------------------------------------------------- */

/* While Lua code runs, SIGINT cannot unwind the C stack by itself (that would leave the Lua state
 * inconsistent), so the handler only installs a hook; the hook fires at the next Lua instruction,
 * call or return, and raises an ordinary error there. Setting a hook is allowed in a signal
 * handler (it only writes a few fields of the state). The handler puts back the default action,
 * so a second Ctrl-C still stops the process when the code is stuck inside a long C function and
 * never reaches the hook. While waiting for input, a different handler just records the signal:
 * the line reader then clears the line. */
static lua_State *g_L;
static volatile sig_atomic_t g_sigint;   /* SIGINT arrived while not running Lua code */
static volatile sig_atomic_t g_sigwinch; /* terminal resized while reading a line */
static volatile sig_atomic_t g_interrupted; /* the running handler fired */

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void on_sigint_running(int sig) {
  signal(sig, SIG_DFL);
  g_interrupted = 1;
  lua_sethook(g_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_sigint_idle(int sig) {
  (void)sig;
  g_sigint = 1;
}

static void on_sigwinch(int sig) {
  (void)sig;
  g_sigwinch = 1;
}

static void set_handler(int sig, void (*fn)(int), struct sigaction *old) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: a blocking read must return EINTR so Ctrl-C is seen */
  sigaction(sig, &sa, old);
}

/* Calls the function below narg arguments on the stack in protected mode, with a traceback on
 * error and with Ctrl-C turned into the error "interrupted!". */
static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  struct sigaction old;
  g_L = L;
  g_interrupted = 0;
  set_handler(SIGINT, on_sigint_running, &old);
  /* A Ctrl-C typed between reading the line and getting here was meant for this code. */
  if (g_sigint) {
    g_sigint = 0;
    lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  }
  int status = lua_pcall(L, narg, nres, base);
  sigaction(SIGINT, &old, NULL);
  /* A signal that landed after the code finished left the hook armed: disarm it, but leave
   * alone a hook the user set with debug.sethook. */
  if (lua_gethook(L) == interrupt_hook) lua_sethook(L, NULL, 0, 0);
  /* The terminal echoed "^C" where the cursor was: start the message on a line of its own. */
  if (g_interrupted && status != LUA_OK && isatty(STDERR_FILENO)) fputc('\n', stderr);
  lua_remove(L, base);
  return status;
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  report(L, status);
  return status;
}

static int dofile(lua_State *L, const char *name) { return dochunk(L, luaL_loadfile(L, name)); }

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* ---- setup ---------------------------------------------------------------------------------- */

/* arg as the standalone lua builds it: the script at index 0, its arguments at 1..n, the
 * interpreter and the options before the script at negative indices. Without a script, the
 * interpreter is at index 0 and the options follow. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  if (script == argc) script = 0;
  lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Prepends the library directories next to the executable to package.path. /proc/self/exe is the
 * resolved path of the binary, so this works from the build tree (<build>/bin/lark finds
 * <build>/lua/lark/) and from an install (<prefix>/bin/lark finds <prefix>/share/lua/5.4/lark/),
 * whatever the current directory and however lark was invoked (PATH, symlink). */
static void setup_path(lua_State *L) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0 || n >= (ssize_t)sizeof exe - 1) return; /* no procfs or truncated: keep defaults */
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash == NULL) return;
  *slash = '\0';
  const char *d = exe;
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "path");
  const char *old = lua_tostring(L, -1);
  lua_pushfstring(L,
                  "%s/../lua/?.lua;%s/../lua/?/init.lua;"
                  "%s/../share/lua/5.4/?.lua;%s/../share/lua/5.4/?/init.lua;%s",
                  d, d, d, d, old ? old : "");
  lua_setfield(L, -3, "path");
  lua_pop(L, 2); /* old path, package */
}

/* The C module is linked into this executable; preload wins over any lark/core.so on cpath,
 * which keeps the Lua library of this build from ever meeting the C core of another. */
static void preload_core(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_lark_core);
  lua_setfield(L, -2, "lark.core");
  lua_pop(L, 1);
}

static int handle_luainit(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv("LUA_INIT_5_4");
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv("LUA_INIT");
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dofile(L, init + 1);
  return dostring(L, init, name);
}

/* `lark` as a global. A broken Lua library must not take the interpreter down with it: the user
 * still gets a working REPL to find out what is wrong. */
static void load_lark(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lark");
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    lua_setglobal(L, "lark");
    return;
  }
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "%s: warning: could not load the lark library: %s\n", PROGNAME,
          msg ? msg : "(error object is not a string)");
  fflush(stderr);
  lua_pop(L, 1);
}

/* -l mod or -l g=mod: g = require "mod". */
static int dolibrary(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  const char *mod = eq ? eq + 1 : spec;
  lua_getglobal(L, "require");
  lua_pushstring(L, mod);
  int status = docall(L, 1, 1);
  if (status == LUA_OK) {
    if (eq)
      lua_pushlstring(L, spec, (size_t)(eq - spec));
    else
      lua_pushstring(L, spec);
    lua_insert(L, -2);
    lua_setglobal(L, lua_tostring(L, -2));
    lua_pop(L, 1); /* the name */
  }
  report(L, status);
  return status;
}

/* Runs the script at argv[0] with the arguments that follow it as `...`. */
static int handle_script(lua_State *L, char **argv) {
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = 0;
    for (char **a = argv + 1; *a != NULL; a++) n++;
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = 1; i <= n; i++) lua_pushstring(L, argv[i]);
    status = docall(L, n, 0);
  }
  report(L, status);
  return status;
}

/* ---- line input ----------------------------------------------------------------------------- */

enum { LINE_OK, LINE_EOF, LINE_INTR };

typedef struct {
  bool tty;           /* stdin is a terminal: readline, history, completion */
  char *history_path; /* NULL when there is no history file */
} repl_state;

/* readline runs in callback mode: the loop below waits in pselect with SIGINT unblocked only
 * there, so a Ctrl-C while editing is seen immediately and without races, and the typed line can
 * be dropped cleanly (blocking readline() would need a longjmp out of readline for that). */
static char *rl_result;
static bool rl_have_result;

static void rl_on_line(char *line) {
  rl_result = line;
  rl_have_result = true;
  /* Must happen inside the handler, or readline redisplays the prompt for the next line at once
   * (and the next line may want a different prompt, or no reading at all). */
  rl_callback_handler_remove();
}

/* Signals that arrive while a line is being edited. They are blocked except inside pselect, so
 * the handlers only record them and the loop acts on them with readline in a known state. */
static volatile sig_atomic_t g_sigtstp; /* Ctrl-Z */
static volatile sig_atomic_t g_fatal;   /* SIGTERM, SIGHUP or SIGQUIT: the signal number */

static void on_sigtstp(int sig) {
  (void)sig;
  g_sigtstp = 1;
}

static void on_fatal(int sig) { g_fatal = sig; }

/* Readline's own signal handling is off (rl_catch_signals = 0, because its SIGINT handling does
 * not fit Ctrl-C clearing the line), so what it would do for these signals is done here: put the
 * terminal back before stopping or dying, since readline turns echo off while editing. */
static const int edit_signals[] = {SIGINT, SIGWINCH, SIGTSTP, SIGTERM, SIGHUP, SIGQUIT};
#define N_EDIT_SIGNALS (int)(sizeof edit_signals / sizeof edit_signals[0])

static void catch_edit_signals(struct sigaction *saved) {
  for (int i = 0; i < N_EDIT_SIGNALS; i++) {
    int sig = edit_signals[i];
    sigaction(sig, NULL, &saved[i]);
    if (sig == SIGINT) continue; /* on_sigint_idle is in place for the whole session */
    /* A signal the parent chose to ignore (nohup, a shell without job control) stays ignored. */
    if (saved[i].sa_handler == SIG_IGN) continue;
    void (*fn)(int) = sig == SIGWINCH ? on_sigwinch : sig == SIGTSTP ? on_sigtstp : on_fatal;
    set_handler(sig, fn, NULL);
  }
}

static void restore_edit_signals(const struct sigaction *saved) {
  for (int i = 0; i < N_EDIT_SIGNALS; i++)
    if (edit_signals[i] != SIGINT) sigaction(edit_signals[i], &saved[i], NULL);
}

/* Stops the process as the default SIGTSTP action would, with the terminal restored meanwhile,
 * and takes up editing again where it was when continued (fg). */
static void suspend_editing(const struct sigaction *old_tstp) {
  sigset_t tstp;
  sigemptyset(&tstp);
  sigaddset(&tstp, SIGTSTP);
  rl_cleanup_after_signal();
  sigaction(SIGTSTP, old_tstp, NULL);
  raise(SIGTSTP);                          /* pending: SIGTSTP is blocked here */
  sigprocmask(SIG_UNBLOCK, &tstp, NULL);   /* stops now, returns after SIGCONT */
  sigprocmask(SIG_BLOCK, &tstp, NULL);
  set_handler(SIGTSTP, on_sigtstp, NULL);
  rl_reset_after_signal();
  rl_forced_update_display();
}

static int read_line_tty(const char *prompt, char **out) {
  sigset_t block, old;
  sigemptyset(&block);
  for (int i = 0; i < N_EDIT_SIGNALS; i++) sigaddset(&block, edit_signals[i]);
  sigprocmask(SIG_BLOCK, &block, &old);
  struct sigaction saved[N_EDIT_SIGNALS];
  catch_edit_signals(saved);
  g_sigint = g_sigwinch = g_sigtstp = g_fatal = 0;
  rl_have_result = false;
  rl_result = NULL;
  fflush(stdout);
  rl_callback_handler_install(prompt, rl_on_line);
  int rc = LINE_OK;
  int fd = fileno(rl_instream ? rl_instream : stdin);
  while (!rl_have_result) {
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(fd, &fds);
    int n = pselect(fd + 1, &fds, NULL, NULL, NULL, &old);
    if (n < 0 && errno != EINTR) { /* input went away: end the session as on Ctrl-D */
      rl_callback_handler_remove();
      rc = LINE_EOF;
      break;
    }
    if (g_fatal) {
      int sig = g_fatal;
      rl_callback_sigcleanup();
      rl_callback_handler_remove(); /* restores the terminal mode */
      restore_edit_signals(saved);
      sigprocmask(SIG_SETMASK, &old, NULL);
      raise(sig); /* with the disposition from before: normally the process ends here */
      return LINE_EOF;
    }
    if (g_sigtstp) {
      g_sigtstp = 0;
      for (int i = 0; i < N_EDIT_SIGNALS; i++)
        if (edit_signals[i] == SIGTSTP) suspend_editing(&saved[i]);
    }
    if (g_sigwinch) {
      g_sigwinch = 0;
      rl_resize_terminal();
    }
    if (g_sigint) {
      /* Ctrl-C while editing: show it, drop the line (and any search in progress), and go
       * back to a fresh primary prompt. */
      g_sigint = 0;
      rl_callback_sigcleanup();
      rl_free_line_state();
      rl_point = rl_end;
      rl_redisplay();
      rl_echo_signal_char(SIGINT);
      rl_callback_handler_remove(); /* restores the terminal mode */
      fputc('\n', rl_outstream ? rl_outstream : stdout);
      rc = LINE_INTR;
      break;
    }
    if (n > 0) rl_callback_read_char();
  }
  restore_edit_signals(saved);
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (rc != LINE_OK) return rc;
  if (rl_result == NULL) { /* Ctrl-D on an empty line */
    fputc('\n', rl_outstream ? rl_outstream : stdout);
    return LINE_EOF;
  }
  *out = rl_result;
  return LINE_OK;
}

/* Without a terminal there is no one to edit lines; prompts go to stderr so that stdout carries
 * only results when lark -i is driven through pipes. */
static int read_line_plain(const char *prompt, char **out) {
  fputs(prompt, stderr);
  fflush(stderr);
  fflush(stdout);
  g_sigint = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, stdin);
  if (n < 0) {
    free(line);
    if (errno == EINTR && g_sigint) {
      g_sigint = 0;
      clearerr(stdin);
      fputc('\n', stderr);
      return LINE_INTR;
    }
    return LINE_EOF;
  }
  if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
  *out = line;
  return LINE_OK;
}

static bool blank(const char *s) {
  for (; *s; s++)
    if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return false;
  return true;
}

/* Reads one line (malloc'd into *out) and records it in the history. */
static int read_line(repl_state *r, const char *prompt, char **out) {
  int rc = r->tty ? read_line_tty(prompt, out) : read_line_plain(prompt, out);
  if (rc != LINE_OK || !r->tty || blank(*out)) return rc;
  HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
  if (last == NULL || strcmp(last->line, *out) != 0) {
    add_history(*out);
    /* Appending after every line keeps the history even when the session ends by os.exit, a
     * crash or a killed terminal. A failure (read-only HOME, ...) just means no history. */
    if (r->history_path != NULL) append_history(1, r->history_path);
  }
  return rc;
}

/* ---- completion ----------------------------------------------------------------------------- */

static const char *const lua_keywords[] = {
    "and",  "break", "do",  "else", "elseif", "end",    "false", "for",   "function", "goto", "if",
    "in",   "local", "nil", "not",  "or",     "repeat", "return", "then", "true",     "until",
    "while", NULL};

static bool is_keyword(const char *s, size_t len) {
  for (const char *const *k = lua_keywords; *k; k++)
    if (strlen(*k) == len && memcmp(*k, s, len) == 0) return true;
  return false;
}

static bool is_ident_char(char c, bool first) {
  return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (!first && c >= '0' && c <= '9');
}

static bool is_identifier(const char *s, size_t len) {
  if (len == 0) return false;
  for (size_t i = 0; i < len; i++)
    if (!is_ident_char(s[i], i == 0)) return false;
  return !is_keyword(s, len);
}

/* Where to look next for the fields of the value at the top of the stack, replacing it: its
 * metatable's __index when that is a table, else the metatable's __methods table (the binding
 * keeps the tensor methods there because its __index is a function). Returns false, popping the
 * value, when there is nowhere to go. Only raw accesses: completing must never run user code. */
static bool next_in_chain(lua_State *L) {
  if (!lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    return false;
  }
  lua_pushliteral(L, "__index");
  lua_rawget(L, -2);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "__methods");
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 3);
      return false;
    }
  }
  lua_replace(L, -3); /* the value becomes the next table */
  lua_pop(L, 1);      /* metatable */
  return true;
}

/* Pushes v[key] for the value v at the top (replacing it), following the chain above, or
 * returns false having popped v. */
static bool lookup_field(lua_State *L, const char *key, size_t len) {
  for (int depth = 0; depth < 32; depth++) { /* bounded: __index chains may loop */
    if (lua_istable(L, -1)) {
      lua_pushlstring(L, key, len);
      lua_rawget(L, -2);
      if (!lua_isnil(L, -1)) {
        lua_replace(L, -2);
        return true;
      }
      lua_pop(L, 1);
    }
    if (!next_in_chain(L)) return false;
  }
  lua_pop(L, 1);
  return false;
}

static bool is_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TFUNCTION) return true;
  bool callable = false;
  if (lua_getmetatable(L, idx)) {
    lua_pushliteral(L, "__call");
    lua_rawget(L, -2);
    callable = !lua_isnil(L, -1);
    lua_pop(L, 2);
  }
  return callable;
}

/* Adds prefix..key to the result set (a table at index res) for each identifier key starting with
 * `part` in the value at the top and along its chain; pops the value. */
static void collect_fields(lua_State *L, int res, const char *prefix, const char *part,
                           bool methods_only) {
  size_t plen = strlen(part);
  for (int depth = 0; depth < 32; depth++) {
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
          size_t klen;
          const char *k = lua_tolstring(L, -2, &klen);
          if (klen >= plen && memcmp(k, part, plen) == 0 && is_identifier(k, klen) &&
              (!methods_only || is_callable(L, -1))) {
            lua_pushstring(L, prefix);
            lua_pushvalue(L, -3);
            lua_concat(L, 2);
            lua_pushboolean(L, 1);
            lua_rawset(L, res);
          }
        }
        lua_pop(L, 1);
      }
    }
    if (!next_in_chain(L)) return;
  }
  lua_pop(L, 1);
}

/* Walks the path before the last separator, "a.b" of "a.b.c" or "t" of "t:ad": identifiers
 * joined by '.', looked up with raw accesses, nothing evaluated. Pushes the value it names, or
 * returns false with nothing pushed. */
static bool walk_path(lua_State *L, const char *text, const char *sep) {
  /* An empty path (the word was cut at a bracket or a call, as in "t[1].x") names nothing. */
  if (sep == text) return false;
  lua_pushglobaltable(L);
  const char *seg = text;
  while (seg < sep) {
    const char *end = seg;
    while (end < sep && *end != '.' && *end != ':') end++;
    /* A ':' before the last separator ("t:m.x") or a non-name ("1..x") is not a path. */
    if ((*end == ':' && end != sep) || !is_identifier(seg, (size_t)(end - seg))) {
      lua_pop(L, 1);
      return false;
    }
    if (!lookup_field(L, seg, (size_t)(end - seg))) return false;
    seg = end + 1;
  }
  return true;
}

/* Protected: the completions of the word at 1 ("pri", "lark.ma", "a.b.c", "t:ad") as the keys
 * of a table. */
static int complete_collect(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  lua_newtable(L);
  int res = lua_gettop(L);
  const char *sep = NULL;
  for (const char *p = text; *p; p++)
    if (*p == '.' || *p == ':') sep = p;
  if (sep == NULL) {
    lua_pushglobaltable(L);
    collect_fields(L, res, "", text, false);
    size_t tlen = strlen(text);
    for (const char *const *k = lua_keywords; *k; k++) {
      if (strncmp(*k, text, tlen) == 0) {
        lua_pushboolean(L, 1);
        lua_setfield(L, res, *k);
      }
    }
  } else if (walk_path(L, text, sep)) {
    lua_pushlstring(L, text, (size_t)(sep - text + 1)); /* the prefix, kept below the value */
    lua_insert(L, -2);
    collect_fields(L, res, lua_tostring(L, -2), sep + 1, *sep == ':');
  }
  lua_settop(L, res);
  return 1;
}

static char **completion_list;
static size_t completion_count, completion_next;

static void free_completion_list(void) {
  for (size_t i = 0; i < completion_count; i++) free(completion_list[i]);
  free(completion_list);
  completion_list = NULL;
  completion_count = completion_next = 0;
}

static char *completion_generator(const char *text, int state) {
  (void)text;
  if (state == 0) completion_next = 0;
  if (completion_next >= completion_count) return NULL;
  return strdup(completion_list[completion_next++]);
}

static char **lark_completion(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* never fall back to file names */
  rl_completion_append_character = '\0';
  free_completion_list();
  lua_State *L = g_L;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) return NULL;
  lua_pushcfunction(L, complete_collect);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      n++;
      lua_pop(L, 1);
    }
    completion_list = n ? calloc(n, sizeof *completion_list) : NULL;
    if (completion_list != NULL) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        /* keys are strings by construction; lua_tostring on a string key is safe in lua_next */
        char *s = strdup(lua_tostring(L, -2));
        if (s != NULL) completion_list[completion_count++] = s;
        lua_pop(L, 1);
      }
    }
  }
  lua_settop(L, top);
  if (completion_count == 0) return NULL;
  return rl_completion_matches(text, completion_generator); /* sorts and finds the common part */
}

/* ---- the REPL ------------------------------------------------------------------------------- */

static bool incomplete(lua_State *L, int status) {
  if (status != LUA_ERRSYNTAX) return false;
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  static const char mark[] = "<eof>";
  size_t mlen = sizeof mark - 1;
  return msg != NULL && len >= mlen && strcmp(msg + len - mlen, mark) == 0;
}

/* Reads lines until they form a chunk that compiles, leaving the compiled function on the stack.
 * A line is first tried as an expression ("return <line>") so that results print without `=` or
 * `return`, then as a statement. While either form fails only because the input ended early
 * (the syntax error is "... near <eof>"), more lines are read with the continuation prompt.
 * Returns LUA_OK, LINE_EOF/LINE_INTR (nothing pushed, offset by 100 to stay apart from Lua
 * statuses), or a load status with the message pushed. */
#define CHUNK_EOF 100
#define CHUNK_INTR 101

static int read_chunk(lua_State *L, repl_state *r) {
  char *line = NULL;
  int rc = read_line(r, PROMPT1, &line);
  if (rc == LINE_EOF) return CHUNK_EOF;
  if (rc == LINE_INTR) return CHUNK_INTR;
  /* "=expr" was the way to print in Lua 5.1-5.3; keep old habits working. */
  if (line[0] == '=')
    lua_pushfstring(L, "return %s", line + 1);
  else
    lua_pushstring(L, line);
  free(line);
  int buf = lua_gettop(L);
  for (;;) {
    size_t len;
    const char *code = lua_tolstring(L, buf, &len);
    const char *ret = lua_pushfstring(L, "return %s", code);
    int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
    if (status == LUA_OK) {
      lua_replace(L, buf); /* function over the buffer */
      lua_settop(L, buf);
      return LUA_OK;
    }
    bool more = incomplete(L, status);
    lua_pop(L, 2); /* message, "return ..." */
    status = luaL_loadbuffer(L, code, len, "=stdin");
    if (status == LUA_OK) {
      lua_replace(L, buf);
      return LUA_OK;
    }
    more = more || incomplete(L, status);
    if (!more) {
      lua_replace(L, buf); /* the message */
      return status;
    }
    rc = read_line(r, PROMPT2, &line);
    if (rc == LINE_INTR) {
      lua_settop(L, buf - 1);
      return CHUNK_INTR;
    }
    if (rc == LINE_EOF) { /* the input ended inside a chunk: show why it does not compile */
      lua_replace(L, buf);
      return status;
    }
    lua_pop(L, 1); /* the statement's message */
    lua_pushliteral(L, "\n");
    lua_pushstring(L, line);
    free(line);
    lua_concat(L, 3);
  }
}

/* Protected: prints its arguments as `print` would, tab-separated, via tostring/__tostring. */
static int print_values(lua_State *L) {
  int n = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(L, i, &len);
    if (i > 1) fputc('\t', stdout);
    fwrite(s, 1, len, stdout);
    lua_pop(L, 1);
  }
  fputc('\n', stdout);
  fflush(stdout);
  return 0;
}

static char *history_file(void) {
  const char *env = getenv("LARK_HISTORY");
  if (env != NULL) return env[0] ? strdup(env) : NULL; /* LARK_HISTORY= turns history off */
  const char *home = getenv("HOME");
  if (home == NULL || home[0] == '\0') return NULL;
  size_t n = strlen(home) + sizeof "/.lark_history";
  char *p = malloc(n);
  if (p != NULL) snprintf(p, n, "%s/.lark_history", home);
  return p;
}

static void init_readline(repl_state *r) {
  rl_readline_name = PROGNAME; /* for $if lark in ~/.inputrc */
  rl_catch_signals = 0;        /* SIGINT and SIGWINCH are handled here, see read_line_tty */
  rl_catch_sigwinch = 0;
  rl_change_environment = 0; /* do not export LINES/COLUMNS into the environment of scripts */
  /* '.' and ':' are not word breaks, so "lark.ma" and "t:ad" reach the completer whole. */
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
  rl_completer_word_break_characters = rl_basic_word_break_characters;
  rl_attempted_completion_function = lark_completion;
  stifle_history(HISTORY_MAX);
  r->history_path = history_file();
  if (r->history_path != NULL) {
    if (read_history(r->history_path) != 0) {
      /* Most likely the file does not exist yet: create it so that append_history, which does
       * not create files, can add to it. Any failure is ignored: no history, same session. */
      write_history(r->history_path);
    }
    history_truncate_file(r->history_path, HISTORY_MAX);
  }
}

static void repl(lua_State *L, bool quiet) {
  repl_state r = {.tty = isatty(STDIN_FILENO) != 0, .history_path = NULL};
  if (r.tty) init_readline(&r);
  if (!quiet) {
    FILE *f = r.tty ? stdout : stderr;
    fprintf(f, "lark %s (%s)  Ctrl-D exits, Ctrl-C interrupts, TAB completes\n", LARK_VERSION,
            LUA_RELEASE);
    fflush(f);
  }
  struct sigaction old_int;
  g_L = L;
  g_progname = NULL;
  set_handler(SIGINT, on_sigint_idle, &old_int);
  for (;;) {
    lua_settop(L, 0);
    int status = read_chunk(L, &r);
    if (status == CHUNK_EOF) break;
    if (status == CHUNK_INTR) continue;
    if (status != LUA_OK) {
      report(L, status);
      continue;
    }
    status = docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK && lua_gettop(L) > 0) {
      int n = lua_gettop(L);
      luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
      lua_pushcfunction(L, print_values);
      lua_insert(L, 1);
      status = docall(L, n, 0);
    }
    report(L, status);
  }
  lua_settop(L, 0);
  sigaction(SIGINT, &old_int, NULL);
  g_progname = PROGNAME;
  free(r.history_path);
  free_completion_list();
  fflush(stdout);
}

/* ---- main ----------------------------------------------------------------------------------- */

typedef struct {
  int script; /* index of the script in argv, or argc when there is none */
  bool has_e, has_i, has_v, quiet, no_env, warnings;
  const char *badopt;
} options;

/* First pass over the options: flags, and where the script starts. -e and -l run later, in
 * order, in run_options. Returns false on a bad option. */
static bool parse_options(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->script = argc;
  int i_bad = 0;
  for (int i = 1; i < argc; i++) {
    i_bad = i;
    const char *a = argv[i];
    if (a[0] != '-') { /* the script */
      o->script = i;
      return true;
    }
    switch (a[1]) {
    case '\0': /* "-": stdin is the script */
      o->script = i;
      return true;
    case '-':
      if (a[2] != '\0') goto bad;
      o->script = i + 1 < argc ? i + 1 : argc;
      return true;
    case 'i':
      if (a[2] != '\0') goto bad;
      o->has_i = true;
      break;
    case 'v':
      if (a[2] != '\0') goto bad;
      o->has_v = true;
      break;
    case 'q':
      if (a[2] != '\0') goto bad;
      o->quiet = true;
      break;
    case 'E':
      if (a[2] != '\0') goto bad;
      o->no_env = true;
      break;
    case 'W':
      if (a[2] != '\0') goto bad;
      o->warnings = true;
      break;
    case 'e':
    case 'l':
      if (a[1] == 'e') o->has_e = true;
      if (a[2] == '\0') { /* the argument is the next word */
        if (i + 1 >= argc) goto bad;
        i++;
      }
      break;
    default:
      goto bad;
    }
  }
  return true;
bad:
  o->badopt = argv[i_bad];
  return false;
}

static int run_options(lua_State *L, int argc, char **argv, int script, bool keep_going) {
  int result = LUA_OK;
  for (int i = 1; i < script && i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
    const char *val = a[2] != '\0' ? a + 2 : argv[++i];
    int status = a[1] == 'e' ? dostring(L, val, "=(command line)") : dolibrary(L, val);
    if (status != LUA_OK) {
      result = status;
      if (!keep_going) return status;
    }
  }
  return result;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  lua_settop(L, 0);
  options o;
  if (!parse_options(argc, argv, &o)) {
    print_usage(o.badopt);
    return 0;
  }
  luaL_checkversion(L);
  if (o.has_v) print_version(stdout);
  if (o.no_env) { /* tells luaopen_package to ignore LUA_PATH and LUA_CPATH */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  create_arg_table(L, argv, argc, o.script);
  if (o.warnings) lua_warning(L, "@on", 0);
  setup_path(L);
  preload_core(L);
  if (!o.no_env && handle_luainit(L) != LUA_OK) return 0;
  load_lark(L);

  /* With -i, errors in -e, -l or the script are reported and the session still opens, so the
   * state they left behind can be inspected; without it the first error ends the run. */
  if (run_options(L, argc, argv, o.script, o.has_i) != LUA_OK && !o.has_i) return 0;
  if (o.script < argc && handle_script(L, argv + o.script) != LUA_OK && !o.has_i) return 0;
  if (o.has_i) {
    repl(L, o.quiet);
  } else if (o.script == argc && !o.has_e && !o.has_v) {
    if (isatty(STDIN_FILENO)) {
      repl(L, o.quiet);
    } else if (dofile(L, NULL) != LUA_OK) { /* stdin is a file or pipe: run it as a script */
      return 0;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* OpenBLAS (0.3.21, Debian 12) picks its GEMM kernels from the CPU model when it loads; it does
 * not know some recent Xeons and falls back to its SSE3 "Prescott" kernels, 4x slower at every
 * 1x1 convolution and matmul. Then lark sets OPENBLAS_CORETYPE for what the CPU can do and runs
 * itself again (once: the variable is then set). LARK_KEEP_OPENBLAS=1 turns this off. */
extern char *openblas_get_corename(void) __attribute__((weak));

static void fix_openblas_kernels(char **argv) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!openblas_get_corename || getenv("OPENBLAS_CORETYPE") || getenv("LARK_KEEP_OPENBLAS")) return;
  const char *core = openblas_get_corename();
  static const char *old[] = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "northwood",
                              "katmai", "coppermine", "banias", "unknown"};
  bool outdated = core == NULL;
  for (size_t i = 0; !outdated && i < sizeof old / sizeof old[0]; i++) outdated = strcasecmp(core, old[i]) == 0;
  if (!outdated) return;
  __builtin_cpu_init();
  const char *want = __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : NULL;
  if (!want) return;
  setenv("OPENBLAS_CORETYPE", want, 1);
  execv("/proc/self/exe", argv); /* returns only on failure: carry on with the slow kernels */
#else
  (void)argv;
#endif
}

int main(int argc, char **argv) {
  fix_openblas_kernels(argv);
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", PROGNAME);
    return EXIT_FAILURE;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  bool ok = status == LUA_OK && lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
