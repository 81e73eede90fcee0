/* error.c: per-thread error messages. Core functions record what went wrong and return a code;
 * the Lua binding raises the message as a Lua error. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lark.h"

static _Thread_local char err_msg[1024];
static _Thread_local int err_code;

int lark_set_error(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  err_code = code;
  return code;
}

const char *lark_error(void) { return err_code ? err_msg : ""; }
int lark_error_code(void) { return err_code; }
void lark_clear_error(void) {
  err_code = 0;
  err_msg[0] = 0;
}
