-- Specs of the `lark` executable (lua/lark_main.c): command line, script arguments, the REPL
-- driven through pipes, and the interactive features (readline editing, completion, Ctrl-C,
-- history) driven through a pseudo-terminal by a small Python helper.
--
-- Everything runs the real binary in a child process, bounded in time (timeout(1) around pipe
-- runs, select timeouts and an alarm in the pty helper), so a regression fails instead of hanging.

local BIN = os.getenv("LARK_BIN") or "build/bin/lark"

local function q(s)
  return "'" .. (tostring(s):gsub("'", [['\'']])) .. "'"
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A scratch directory per top-level describe, each removed by its own teardown.
local function scratch_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  return dir
end
local TMP = scratch_dir()

local HAS_TIMEOUT = os.execute("command -v timeout >/dev/null 2>&1")

-- Runs lark with the given argument words (a string of already quoted words), stdin from a file
-- holding opts.stdin (or /dev/null), extra environment opts.env. Returns out, err, exit code.
local counter = 0
local function run(args, opts)
  opts = opts or {}
  counter = counter + 1
  local base = TMP .. "/run" .. counter
  local input = "/dev/null"
  if opts.stdin then
    input = base .. ".in"
    write_file(input, opts.stdin)
  end
  local env = { "env" }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  local cmd = string.format("%s %s %s %s < %s > %s 2> %s", HAS_TIMEOUT and "timeout 60" or "",
    table.concat(env, " "), q(opts.bin or BIN), args, q(input), q(base .. ".out"),
    q(base .. ".err"))
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  return read_file(base .. ".out") or "", read_file(base .. ".err") or "", code
end

describe("lark executable", function()
  teardown(function()
    os.execute("rm -rf " .. q(TMP))
  end)

  it("exists at LARK_BIN", function()
    assert.is_true(exists(BIN), "no lark binary at " .. BIN .. " (set LARK_BIN)")
  end)

  describe("command line", function()
    it("-v prints the version and exits", function()
      local out, _, code = run("-v")
      assert.equal(0, code)
      assert.matches("^lark %d+%.%d+[^\n]*Lua 5%.4", out)
    end)

    it("-e runs code and does not open a REPL", function()
      local out, _, code = run("-e " .. q("print(1 + 1)"))
      assert.equal(0, code)
      assert.equal("2\n", out)
    end)

    it("runs -e and -l in order, attached arguments too", function()
      write_file(TMP .. "/specmod.lua", "return { value = 6 * 7 }")
      local out, _, code = run("-e " .. q("print(specmod)") .. " -lspecmod -e"
        .. q("print(specmod.value)"), { env = { LUA_PATH = TMP .. "/?.lua;;" } })
      assert.equal(0, code)
      assert.equal("nil\n42\n", out)
    end)

    it("-l g=mod requires mod into global g", function()
      local out, _, code = run("-l s=string -e " .. q("print(s.rep('ab', 2))"))
      assert.equal(0, code)
      assert.equal("abab\n", out)
    end)

    it("-l of a missing module fails with status 1", function()
      local _, err, code = run("-l no_such_module_xyz")
      assert.equal(1, code)
      assert.matches("no_such_module_xyz", err)
    end)

    it("rejects unknown options with a usage message and status 1", function()
      local out, err, code = run("-z")
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("'%-z'", err)
      assert.matches("usage:", err)
    end)

    it("rejects -e without its argument", function()
      local _, err, code = run("-e")
      assert.equal(1, code)
      assert.matches("usage:", err)
    end)

    it("honours LUA_INIT, as code and as @file", function()
      local out, _, code = run("-e " .. q("print(init_value)"), { env = { LUA_INIT = "init_value = 7" } })
      assert.equal(0, code)
      assert.equal("7\n", out)
      write_file(TMP .. "/init.lua", "init_value = 8")
      out = run("-e " .. q("print(init_value)"), { env = { LUA_INIT = "@" .. TMP .. "/init.lua" } })
      assert.equal("8\n", out)
      local _, err
      out, err, code = run("-e " .. q("print(1)"), { env = { LUA_INIT = "error('init failed')" } })
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("init failed", err)
    end)

    it("-E ignores LUA_INIT", function()
      local out = run("-E -e " .. q("print(init_value)"), { env = { LUA_INIT = "init_value = 7" } })
      assert.equal("nil\n", out)
    end)

    it("honours LUA_PATH", function()
      write_file(TMP .. "/pathmod.lua", "return 'found via LUA_PATH'")
      local out = run("-e " .. q("print((require 'pathmod'))"), { env = { LUA_PATH = TMP .. "/?.lua;;" } })
      assert.equal("found via LUA_PATH\n", out)
    end)

    it("os.exit sets the exit status", function()
      assert.equal(3, select(3, run("-e " .. q("os.exit(3)"))))
      assert.equal(0, select(3, run("-e " .. q("os.exit(true)"))))
      assert.equal(1, select(3, run("-e " .. q("os.exit(false)"))))
    end)

    it("preloads lark.core", function()
      local out = run("-e " .. q("print(type(package.preload['lark.core']))"))
      assert.equal("function\n", out)
    end)
  end)

  describe("scripts", function()
    local script = TMP .. "/args.lua"
    setup(function()
      write_file(script, [[
print(arg[0], arg[1], arg[2], select("#", ...), ...)
print(arg[-1], arg[-2], arg[-3])
]])
    end)

    it("sets arg and ... as the standalone lua does", function()
      local out, err, code = run(q(script) .. " a 'b c'")
      assert.equal(0, code, err)
      assert.equal(script .. "\ta\tb c\t2\ta\tb c\n" .. BIN .. "\tnil\tnil\n", out)
    end)

    it("puts the interpreter and options at negative indices", function()
      local out = run("-e x=1 " .. q(script) .. " a")
      assert.equal(script .. "\ta\tnil\t1\ta\nx=1\t-e\t" .. BIN .. "\n", out)
    end)

    it("stops handling options at --", function()
      local out = run("-- " .. q(script) .. " -e -v")
      assert.equal(script .. "\t-e\t-v\t2\t-e\t-v\n--\t" .. BIN .. "\tnil\n", out)
    end)

    it("runs stdin as the script with -", function()
      local out, _, code = run("- x y", { stdin = read_file(script) })
      assert.equal(0, code)
      assert.equal("-\tx\ty\t2\tx\ty\n" .. BIN .. "\tnil\tnil\n", out)
    end)

    it("runs a non-terminal stdin as a script, without prompt or auto-printing", function()
      local out, err, code = run("", { stdin = "print('from stdin')\nlocal x = 1 + 1\n" })
      assert.equal(0, code, err)
      assert.equal("from stdin\n", out)
      assert.equal("", err)
      out, err, code = run("", { stdin = "1 + 1\n" }) -- not a statement: a syntax error in a script
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("stdin:1:", err)
    end)

    it("skips a #! first line", function()
      write_file(TMP .. "/shebang.lua", "#!/usr/bin/env lark\nprint('ran')\n")
      assert.equal("ran\n", (run(q(TMP .. "/shebang.lua"))))
    end)

    it("reports a runtime error with a traceback and status 1", function()
      write_file(TMP .. "/boom.lua", "local function f() error('boom here') end\nf()\n")
      local out, err, code = run(q(TMP .. "/boom.lua"))
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("boom%.lua:1: boom here", err)
      assert.matches("stack traceback:", err)
      assert.matches("in local 'f'", err)
    end)

    it("reports a syntax error with status 1", function()
      write_file(TMP .. "/syntax.lua", "x = = 1\n")
      local _, err, code = run(q(TMP .. "/syntax.lua"))
      assert.equal(1, code)
      assert.matches("syntax%.lua:1:", err)
    end)

    it("reports a missing script with status 1", function()
      local _, err, code = run(q(TMP .. "/does_not_exist.lua"))
      assert.equal(1, code)
      assert.matches("cannot open", err)
    end)

    it("reports a non-string error object", function()
      local _, err, code = run("-e " .. q("error(setmetatable({}, {__tostring = function() return 'custom error' end}))"))
      assert.equal(1, code)
      assert.matches("custom error", err)
      _, err, code = run("-e " .. q("error({})"))
      assert.equal(1, code)
      assert.matches("error object is a table value", err)
    end)
  end)

  describe("REPL through a pipe (-i)", function()
    it("prints expressions, runs statements, keeps going after errors", function()
      local out, err, code = run("-i -q", { stdin = table.concat({
        "1 + 1",
        "'a', 2, nil",
        "x = 10",
        "x * 2",
        "error('oops')",
        "x + 1",
        "setmetatable({}, {__tostring = function() return 'OBJ' end})",
        "nil",
        "=x",
        "local y = 3",
        "print('printed', y)",
        "",
      }, "\n") })
      assert.equal(0, code)
      assert.equal("2\na\t2\tnil\n20\n11\nOBJ\nnil\n10\nprinted\tnil\n", out)
      assert.matches("stdin:1: oops", err)
      assert.matches("stack traceback:", err)
    end)

    it("reads a chunk over several lines until it is complete", function()
      local out, err, code = run("-i -q", { stdin = table.concat({
        "function triple(a)",
        "  return a * 3",
        "end",
        "triple(5)",
        "#{1,",
        "2,",
        "3}",
        "for i = 1, 2 do",
        "  print('i=' .. i)",
        "end",
        "s = [[one",
        "two]]",
        "s",
        "",
      }, "\n") })
      assert.equal(0, code, err)
      assert.equal("15\n3\ni=1\ni=2\none\ntwo\n", out)
    end)

    it("reports a plain syntax error at once instead of waiting for more input", function()
      local out, err = run("-i -q", { stdin = "x = = 1\n6 * 7\n" })
      assert.equal("42\n", out)
      assert.matches("stdin:1:", err)
    end)

    it("reports an incomplete chunk at the end of input", function()
      local out, err, code = run("-i -q", { stdin = "function f(\n" })
      assert.equal(0, code)
      assert.equal("", out)
      assert.matches("<eof>", err)
    end)

    it("keeps prompts and banner off stdout, the banner unless -q", function()
      local out, err = run("-i", { stdin = "6 * 7\n" })
      assert.equal("42\n", out)
      assert.matches("lark %d+%.%d+", err)
      assert.matches("lark> ", err, 1, true)
      _, err = run("-i -q", { stdin = "" })
      assert.not_matches("lark %d", err)
    end)

    it("-i runs the script first, with its globals visible", function()
      write_file(TMP .. "/setup.lua", "y = 5\n")
      local out, _, code = run("-i -q " .. q(TMP .. "/setup.lua"), { stdin = "y + 1\n" })
      assert.equal(0, code)
      assert.equal("6\n", out)
    end)

    it("-i still opens the session after a failing script, to inspect its state", function()
      write_file(TMP .. "/fails.lua", "partial = 'set'\nerror('script failed')\n")
      local out, err = run("-i -q " .. q(TMP .. "/fails.lua"), { stdin = "partial\n" })
      assert.equal("set\n", out)
      assert.matches("script failed", err)
    end)

    it("os.exit in the session sets the exit status", function()
      local out, _, code = run("-i -q", { stdin = "print('before')\nos.exit(4)\nprint('after')\n" })
      assert.equal(4, code)
      assert.equal("before\n", out)
    end)

    it("reports errors in __tostring while printing and goes on", function()
      local out, err = run("-i -q", {
        stdin = "setmetatable({}, {__tostring = function() error('bad tostring') end})\n6 * 7\n" })
      assert.equal("42\n", out)
      assert.matches("bad tostring", err)
    end)
  end)

  describe("library setup", function()
    it("loads the lark library next to the binary as the global `lark`", function()
      local out, err, code = run("-e " .. q("print(type(lark), type(package.loaded['lark.core']))"))
      assert.equal(0, code, err)
      assert.equal("table\ttable\n", out, err)
      assert.not_matches("warning", err)
    end)

    -- A copy of the binary in a tree of our own shows that the search path follows the
    -- executable, whatever the current directory and LUA_PATH.
    local tree = TMP .. "/tree"
    local bin = tree .. "/bin/lark"
    setup(function()
      assert(os.execute("mkdir -p " .. q(tree .. "/bin") .. " " .. q(tree .. "/lua/lark")))
      assert(os.execute("cp " .. q(BIN) .. " " .. q(bin)))
    end)

    it("prepends <exedir>/../lua and <exedir>/../share/lua/5.4 to package.path", function()
      local out = run("-e " .. q("print(package.path)"), { bin = bin })
      local d = tree .. "/bin"
      local want = d .. "/../lua/?.lua;" .. d .. "/../lua/?/init.lua;" .. d .. "/../share/lua/5.4/?.lua;"
        .. d .. "/../share/lua/5.4/?/init.lua;"
      assert.equal(want, out:sub(1, #want))
    end)

    it("makes `lark` a global from <exedir>/../lua/lark", function()
      write_file(tree .. "/lua/lark/init.lua", "return { marker = 'stub lark library' }\n")
      local out, err, code = run("-e " .. q("print(lark.marker)"), { bin = bin })
      assert.equal(0, code)
      assert.equal("stub lark library\n", out)
      assert.equal("", err)
    end)

    it("only warns when the lark library fails to load", function()
      write_file(tree .. "/lua/lark/init.lua", "error('library is broken')\n")
      local out, err, code = run("-e " .. q("print(lark, 6 * 7)"), { bin = bin })
      assert.equal(0, code)
      assert.equal("nil\t42\n", out)
      assert.matches("warning", err)
      assert.matches("library is broken", err)
      out, err, code = run("-i -q", { bin = bin, stdin = "6 * 7\n" })
      assert.equal(0, code)
      assert.equal("42\n", out)
    end)
  end)
end)

-- ---- pseudo-terminal ---------------------------------------------------------------------------

-- The helper runs one scripted session: it spawns the command on a pty, then performs steps:
-- ["send", text], ["expect", literal], ["sleep", seconds], ["exit", status (-signal when killed)],
-- ["kill", signal number], ["echo", whether the terminal echoes input]. Every wait has a
-- deadline and an alarm bounds the whole session; on failure it prints the transcript.
local PTY_HELPER = [==[
import json, os, pty, select, signal, struct, sys, time, fcntl, termios

spec = json.load(open(sys.argv[1]))
env = dict(os.environ)
for k, v in spec.get("env", {}).items():
    if v is None:
        env.pop(k, None)
    else:
        env[k] = v

pid, fd = pty.fork()
if pid == 0:
    try:
        # A wide terminal so that nothing wraps; set before exec so readline sees it at once.
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 250, 0, 0))
        os.execvpe(spec["argv"][0], spec["argv"], env)
    finally:
        os._exit(127)

transcript = b""
pending = b""
child_status = None

def finish(code, message):
    if child_status is None:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
    if message:
        sys.stdout.write("%s\ntranscript: %r\n" % (message, transcript))
    sys.stdout.flush()
    os._exit(code)

signal.signal(signal.SIGALRM, lambda *a: finish(2, "FAIL: session took too long"))
signal.alarm(int(spec.get("total", 90)))

def pump(timeout):
    """Reads what is there within timeout; returns False at end of output."""
    global transcript, pending
    r, _, _ = select.select([fd], [], [], max(timeout, 0))
    if not r:
        return True
    try:
        data = os.read(fd, 65536)
    except OSError:
        data = b""
    if not data:
        return False
    transcript += data
    pending += data
    return True

for op, arg in spec["steps"]:
    if op == "send":
        os.write(fd, arg.encode())
    elif op == "sleep":
        end = time.time() + arg
        while time.time() < end:
            pump(end - time.time())
    elif op == "expect":
        want = arg.encode()
        end = time.time() + spec.get("wait", 20)
        while want not in pending:
            if time.time() > end:
                finish(1, "FAIL: timed out waiting for %r" % arg)
            if not pump(min(0.2, end - time.time())) and want not in pending:
                finish(1, "FAIL: output ended while waiting for %r" % arg)
        pending = pending[pending.index(want) + len(want):]
    elif op == "exit":
        end = time.time() + spec.get("wait", 20)
        while child_status is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                child_status = status
                break
            if time.time() > end:
                finish(1, "FAIL: the session did not end")
            pump(0.1)
        if os.WIFEXITED(child_status):
            code = os.WEXITSTATUS(child_status)
        else:
            code = -os.WTERMSIG(child_status)
        if code != arg:
            finish(1, "FAIL: exit status %r, expected %r" % (code, arg))
    elif op == "kill":
        os.kill(pid, arg)
    elif op == "echo":
        # the terminal's echo flag, shared by both ends of the pty
        on = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
        if on != arg:
            finish(1, "FAIL: terminal echo is %s, expected %s" % (on, arg))
    else:
        finish(3, "FAIL: bad step %r" % op)
finish(0, "OK")
]==]

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json(v)
  local t = type(v)
  if t == "string" then return json_string(v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if v == json then return "null" end -- sentinel for null
  if v[1] ~= nil or next(v) == nil then
    local parts = {}
    for i = 1, #v do parts[i] = json(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local parts = {}
  for k, val in pairs(v) do parts[#parts + 1] = json_string(k) .. ":" .. json(val) end
  return "{" .. table.concat(parts, ",") .. "}"
end
local NULL = json

local PYTHON = "/usr/bin/python3"

describe("REPL on a terminal", function()
  if not exists(PYTHON) then
    pending("needs " .. PYTHON .. " for the pseudo-terminal")
    return
  end

  local DIR = scratch_dir()
  teardown(function()
    os.execute("rm -rf " .. q(DIR))
  end)
  local helper = DIR .. "/pty_helper.py"
  local history = DIR .. "/history"
  local sessions = 0

  -- Runs a session of `lark args...` with steps; returns ok, the helper's report.
  local function session(steps, opts)
    opts = opts or {}
    if not exists(helper) then write_file(helper, PTY_HELPER) end
    sessions = sessions + 1
    local env = {
      TERM = "dumb", INPUTRC = "/dev/null", HOME = DIR, LARK_HISTORY = history,
    }
    for k, v in pairs(opts.env or {}) do env[k] = v end
    local argv = { BIN }
    for _, a in ipairs(opts.args or { "-q" }) do argv[#argv + 1] = a end
    local file = DIR .. "/session" .. sessions .. ".json"
    write_file(file, json({ argv = argv, env = env, steps = steps, total = 90, wait = 20 }))
    local p = assert(io.popen(PYTHON .. " " .. q(helper) .. " " .. q(file) .. " 2>&1"))
    local report = p:read("a")
    local ok = p:close()
    return ok and report:match("^OK") ~= nil, report
  end

  local function check(steps, opts)
    local ok, report = session(steps, opts)
    assert(ok, report)
  end

  local PROMPT = "lark> "

  it("shows the banner and prompt, prints expressions, exits on Ctrl-D", function()
    check({
      { "expect", "lark " }, { "expect", "Ctrl-D" },
      { "expect", PROMPT },
      { "send", "6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "'a', 1 + 1\r" }, { "expect", "a\t2" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    }, { args = {} })
  end)

  it("continues multi-line chunks with the >> prompt", function()
    check({
      { "expect", PROMPT },
      { "send", "function sq(v)\r" }, { "expect", ">> " },
      { "send", "return v * v end\r" }, { "expect", PROMPT },
      { "send", "sq(111)\r" }, { "expect", "12321" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("shows errors with a traceback and goes on", function()
    check({
      { "expect", PROMPT },
      { "send", "error('bo' .. 'om')\r" }, { "expect", "boom" }, { "expect", "stack traceback" },
      { "expect", PROMPT },
      { "send", "6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("completes globals and table fields with TAB", function()
    check({
      { "expect", PROMPT },
      -- string.for<TAB> becomes string.format: only then does the call print <42>.
      { "send", "string.for" }, { "send", "\t" }, { "send", "('<%d>', 6 * 7)\r" },
      { "expect", "<42>" }, { "expect", PROMPT },
      { "send", "my_unique_global = 6 * 7\r" }, { "expect", PROMPT },
      { "send", "my_uniq\t\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "a = {b = {c = {deep_value = 111 * 111}}}\r" }, { "expect", PROMPT },
      { "send", "a.b.c.deep_v\t\r" }, { "expect", "12321" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("completes methods through metatables", function()
    check({
      { "expect", PROMPT },
      -- __index chains of tables
      { "send", "base = {addone = function(self, v) return v + 1 end, addtwo = function(self, v) return v + 2 end}\r" },
      { "expect", PROMPT },
      { "send", "obj = setmetatable({}, {__index = setmetatable({}, {__index = base})})\r" },
      { "expect", PROMPT },
      { "send", "obj:addt\t(40)\r" }, { "expect", "42" }, { "expect", PROMPT },
      -- ambiguous: the second TAB lists both
      { "send", "obj:add\t\t" }, { "expect", "obj:addone" }, { "expect", "obj:addtwo" },
      { "send", "\21" }, -- Ctrl-U: drop the line
      { "send", "6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      -- __index is a function: the methods are found in __methods (as for lark tensors)
      { "send", "mt = {__methods = {frobnicate = function() return 'FR' .. 'OB' end}}\r" },
      { "expect", PROMPT },
      { "send", "mt.__index = function(t, k) return mt.__methods[k] end\r" }, { "expect", PROMPT },
      { "send", "u = setmetatable({}, mt)\r" }, { "expect", PROMPT },
      { "send", "u:frob\t()\r" }, { "expect", "FROB" }, { "expect", PROMPT },
      -- a userdata whose metatable __index is a table
      { "send", "io.stdout:wri\t('<', 6 * 7, '>')\r" }, { "expect", "<42>" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("interrupts a running computation with Ctrl-C and goes on", function()
    check({
      { "expect", PROMPT },
      -- the echoed newline means readline has taken the line: the loop starts (or is about to)
      { "send", "while true do end\r" }, { "expect", "while true do end\r\n" },
      { "sleep", 1 },
      { "send", "\3" }, { "expect", "interrupted!" }, { "expect", PROMPT },
      { "send", "1 + 1 == 2 and 6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("clears the line on Ctrl-C at the prompt", function()
    check({
      { "expect", PROMPT },
      { "send", "this is not lua" }, { "expect", "this is not lua" }, { "sleep", 0.3 },
      { "send", "\3" }, { "expect", PROMPT },
      { "send", "6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      -- also inside a multi-line chunk: back to the primary prompt, chunk dropped
      { "send", "function unfinished(\r" }, { "expect", ">> " },
      { "sleep", 0.5 }, { "send", "\3" }, { "expect", PROMPT },
      { "send", "unfinished == nil and 6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("writes the history to LARK_HISTORY and reads it back", function()
    os.remove(history)
    check({
      { "expect", PROMPT },
      { "send", "print('hist' .. 'ory')\r" }, { "expect", "history" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
    local saved = read_file(history)
    assert.is_not_nil(saved, "no history file written")
    assert.matches("print('hist' .. 'ory')", saved, 1, true)
    check({ -- Ctrl-P recalls the line of the previous session
      { "expect", PROMPT },
      { "send", "\16" }, { "send", "\r" }, { "expect", "history" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    })
  end)

  it("works when the history file cannot be written", function()
    check({
      { "expect", PROMPT },
      { "send", "6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    }, { env = { HOME = "/nonexistent/lark-home", LARK_HISTORY = NULL } })
    check({
      { "expect", PROMPT },
      { "send", "6 * 7\r" }, { "expect", "42" }, { "expect", PROMPT },
      { "send", "\4" }, { "exit", 0 },
    }, { env = { LARK_HISTORY = "/nonexistent/dir/history" } })
  end)

  it("puts the terminal back when killed at the prompt", function()
    check({
      { "expect", PROMPT }, { "sleep", 0.3 },
      { "echo", false }, -- readline edits with echo off...
      { "kill", 15 }, { "exit", -15 },
      { "echo", true }, -- ...and must turn it back on before dying of SIGTERM
    })
  end)

  it("os.exit ends the session with its status", function()
    check({
      { "expect", PROMPT },
      { "send", "os.exit(5)\r" }, { "exit", 5 },
    })
  end)
end)
