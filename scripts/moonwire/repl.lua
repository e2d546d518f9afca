-- moonwire.repl: the Lua half of the REPL (bindings/lb_repl.c is the C half).
--
-- Compiling an entry the way lua.c does (an expression first, then a statement; an
-- incomplete chunk asks for more lines), the environment entries run in (the live app's
-- globals, then the moonwire modules by their short names), formatting results, tab
-- completion, and the dot commands. The C side runs the compiled chunk under the time
-- budget and the interrupt check, with print() sent to the attached client.
local inspect = require "moonwire.inspect"

local M = {}

local CHUNKNAME = "=repl"

-- The app's global table: moonwire.app's live environment when the runtime has hot reload,
-- else _G. Looked up on every access, so a reload switches the REPL to the new version.
local function app_module()
  local app = package.loaded["moonwire.app"]
  if app == nil and package.preload["moonwire.app"] then
    local ok, m = pcall(require, "moonwire.app")
    if ok then app = m end
  end
  return type(app) == "table" and app or nil
end

function M.target_env()
  local app = app_module()
  local env = app and rawget(app, "env") or (app and app.env)
  if type(env) == "table" then return env end
  return _G
end

-- moonwire modules reachable by short name from the prompt (mqtt.publish(...) without a require).
M.module_names = { "mqtt", "json", "log", "timer", "device", "inspect", "app", "shadow", "se" }
local short = {}
for _, n in ipairs(M.module_names) do short[n] = "moonwire." .. n end

local function module_value(k)
  local name = short[k]
  if not name then return nil end
  if package.loaded[name] ~= nil then return package.loaded[name] end
  if package.preload[name] then
    local ok, m = pcall(require, name)
    if ok then return m end
  end
  return nil
end

-- Attached to a running runtime (set by the server), os.exit() would stop the device from
-- its prompt, which is never what "leave" means: the prompt's os refuses it.
M.attached = false
local guarded_os, guarded_for
local function os_for_prompt(real)
  if not M.attached or type(real) ~= "table" then return real end
  if guarded_for ~= real then
    guarded_for = real
    guarded_os = setmetatable({
      exit = function()
        error("os.exit() would stop the runtime this prompt is attached to; leave with .quit or Ctrl-D", 2)
      end,
    }, { __index = real, __newindex = real })
  end
  return guarded_os
end

-- Reads fall through the app's globals to the modules; writes go to the app's globals, so
-- `handler = function ... end` at the prompt replaces the app's global of that name.
M.env = setmetatable({}, {
  __index = function(_, k)
    local v = M.target_env()[k]
    if v == nil then v = module_value(k) end
    if k == "os" then v = os_for_prompt(v) end
    return v
  end,
  __newindex = function(_, k, v) M.target_env()[k] = v end,
  __name = "moonwire.repl environment",
})

-- ------------------------------------------------------------------------------ compile

local commands = {}
M.commands = commands

-- compile(text) -> fn, kind ("lua" | "command")  |  nil, "more", message  |  nil, "error", message
function M.compile(text)
  local name, args = text:match("^%s*%.([%a_][%w_]*)%s*(.-)%s*$")
  if name and not args:find("\n", 1, true) then
    local cmd = commands[name]
    if not cmd then
      return nil, "error", ("unknown command '.%s' (.help lists the commands)"):format(name)
    end
    return function() return cmd.run(args) end, "command"
  end
  if text:sub(1, 1) == "=" then text = "return " .. text:sub(2) end -- Lua 5.1 style `=expr`
  local fn = load("return " .. text .. ";", CHUNKNAME, "t", M.env)
  if fn then return fn, "lua" end
  local err
  fn, err = load(text, CHUNKNAME, "t", M.env)
  if fn then return fn, "lua" end
  if err:sub(-5) == "<eof>" then return nil, "more", err end
  return nil, "error", err
end

-- ------------------------------------------------------------------------------ results

-- Cuts the traceback to the frames that say something: not the REPL's own plumbing, and
-- none at all when the error happened right in the entered chunk.
function M.error_text(err)
  if type(err) ~= "string" then
    return "error object: " .. inspect(err)
  end
  local msg, trace = err:match("^(.-)\nstack traceback:\n(.*)$")
  if not msg then return err end
  local lines = {}
  for line in trace:gmatch("[^\n]+") do
    lines[#lines + 1] = line
    if line:match("^%s*repl:%d+: in main chunk") then break end
  end
  while lines[1] and lines[1]:match("^%s*%[C%]: in function 'error'") do table.remove(lines, 1) end
  if #lines <= 1 or (#lines == 1 and lines[1]:match("in main chunk")) then return msg end
  return msg .. "\nstack traceback:\n" .. table.concat(lines, "\n")
end

-- format(ok, value, kind, raw, width) -> "ok" | "error", text
-- value: the packed results {n = ...} when ok, else the error object.
function M.format(ok, value, kind, raw, width)
  if not ok then return "error", M.error_text(value) end
  if kind == "command" then
    if value[1] == nil and value[2] ~= nil then return "error", tostring(value[2]) end
    return "ok", value[1] ~= nil and tostring(value[1]) or ""
  end
  local opts = { width = (width and width > 20) and width or 80 }
  local parts, multiline = {}, false
  for i = 1, value.n or #value do
    local v = value[i]
    local s
    if raw and type(v) == "string" then s = v else s = inspect(v, opts) end
    if s:find("\n", 1, true) then multiline = true end
    parts[i] = s
  end
  return "ok", table.concat(parts, multiline and "\n" or "\t")
end

-- ------------------------------------------------------------------------------ completion

local lua_keywords = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
                       "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true",
                       "until", "while" }

-- Keys of t and of the tables its __index chain leads to (no metamethod is called).
local function collect_keys(t, into, depth)
  if depth > 5 then return end
  if type(t) == "table" then
    for k, v in next, t do
      if inspect.is_identifier(k) and into[k] == nil then into[k] = v end
    end
  end
  local mt = getmetatable(t)
  if type(mt) == "table" then
    local idx = rawget(mt, "__index")
    if type(idx) == "table" then collect_keys(idx, into, depth + 1) end
  end
end

-- complete(word) -> newline-separated candidates that start with word
-- word is the text before the cursor back to the last separator: "pri", "mqtt.sub", "s:up", ".su".
function M.complete(word)
  local out = {}
  local function add(cand) out[#out + 1] = cand end
  if word:match("^%.[%a_]*$") then
    for name in pairs(commands) do
      if ("." .. name):sub(1, #word) == word then add("." .. name) end
    end
    for _, extra in ipairs({ ".log", ".quit" }) do
      if not commands[extra:sub(2)] and extra:sub(1, #word) == word then add(extra) end
    end
  else
    local path, sep, partial = word:match("^([%a_][%w_%.:]-)([%.:])([%a_]?[%w_]*)$")
    local keys = {}
    if path then
      -- Only a chain of names is resolved (nothing is called, though __index may run).
      if path:find(":", 1, true) or path:find("%.%.") or path:find("%.$") then return "" end
      local v = M.env
      for name in path:gmatch("[^%.]+") do
        if type(v) ~= "table" and type(v) ~= "string" and type(v) ~= "userdata" then return "" end
        if not inspect.is_identifier(name) then return "" end
        local ok, nv = pcall(function() return v[name] end)
        if not ok then return "" end
        v = nv
      end
      if type(v) == "string" then v = string end
      collect_keys(v, keys, 0)
      for k, val in pairs(keys) do
        if k:sub(1, #partial) == partial and (sep == "." or type(val) == "function") then
          add(path .. sep .. k .. (type(val) == "function" and "(" or ""))
        end
      end
    else
      partial = word
      if not word:match("^[%a_][%w_]*$") and word ~= "" then return "" end
      collect_keys(M.target_env(), keys, 0)
      -- the modules by short name, without loading one just to complete its name
      for _, n in ipairs(M.module_names) do
        if keys[n] == nil and (package.loaded[short[n]] ~= nil or package.preload[short[n]]) then
          keys[n] = package.loaded[short[n]] or true
        end
      end
      for k, val in pairs(keys) do
        if k:sub(1, #partial) == partial then add(k .. (type(val) == "function" and "(" or "")) end
      end
      for _, k in ipairs(lua_keywords) do
        if k:sub(1, #partial) == partial then add(k) end
      end
    end
  end
  table.sort(out)
  local seen, uniq = {}, {}
  for _, c in ipairs(out) do
    if not seen[c] then seen[c] = true; uniq[#uniq + 1] = c end
    if #uniq >= 500 then break end
  end
  return table.concat(uniq, "\n")
end

-- ------------------------------------------------------------------------------ commands

local function fmt_bytes(n)
  if not n then return "?" end
  if n < 1024 then return ("%d B"):format(n) end
  if n < 1024 * 1024 then return ("%.1f KiB"):format(n / 1024) end
  return ("%.1f MiB"):format(n / (1024 * 1024))
end

local function fmt_duration(ms)
  local s = ms // 1000
  local d, h, m = s // 86400, (s // 3600) % 24, (s // 60) % 60
  s = s % 60
  if d > 0 then return ("%dd %02dh %02dm %02ds"):format(d, h, m, s) end
  if h > 0 then return ("%dh %02dm %02ds"):format(h, m, s) end
  if m > 0 then return ("%dm %02ds"):format(m, s) end
  return ("%ds"):format(s)
end

-- Left-aligned columns (the last may be ragged).
local function columns(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i] or 0, #c) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      cells[i] = i < #r and c .. (" "):rep(widths[i] - #c) or c
    end
    lines[#lines + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  return table.concat(lines, "\n")
end
M.columns = columns

local order = { "help", "subs", "shadow", "reload", "stats", "log", "quit" }

commands.help = {
  summary = "this list",
  run = function()
    local lines = {
      "Enter Lua: statements run in the app's global environment, expressions print their",
      "values (=expr works too). A chunk continues over several lines until it is complete.",
      "The moonwire modules are there by short name: mqtt, json, log, timer, device, inspect,",
      "app, shadow, se. `local` variables last for one entry; use globals to keep values.",
      "",
    }
    local rows = {}
    for _, name in ipairs(order) do
      local c = commands[name]
      rows[#rows + 1] = { "." .. name, c and c.summary or M.client_commands[name] }
    end
    lines[#lines + 1] = columns(rows)
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Tab completes names and fields; Ctrl-C interrupts a running entry or clears the line;"
    lines[#lines + 1] = "Ctrl-D leaves. Entries run under the same time budget as handlers."
    return table.concat(lines, "\n")
  end,
}

-- Handled by the client (they change the session, not the runtime); listed by .help.
M.client_commands = {
  log = "on | off: follow the runtime's log in this session",
  quit = "leave the prompt (Ctrl-D does the same)",
}

commands.subs = {
  summary = "live subscriptions: filter, QoS, messages handled, errors",
  run = function()
    local mqtt = require "moonwire.mqtt"
    local subs = mqtt.subscriptions()
    if #subs == 0 then return "no subscriptions" end
    local rows = { { "filter", "qos", "messages", "errors", "state" } }
    for _, s in ipairs(subs) do
      local state = {}
      if s.quarantined then state[#state + 1] = "quarantined" end
      if s.granted == 0x80 then state[#state + 1] = "refused by the broker"
      elseif s.granted == nil and mqtt.connected() then state[#state + 1] = "awaiting SUBACK" end
      if s.active == false then state[#state + 1] = "inactive" end
      rows[#rows + 1] = { s.filter or "?", tostring(s.qos or 0), tostring(s.messages or 0),
                          s.errors ~= nil and tostring(s.errors) or "-", table.concat(state, ", ") }
    end
    return columns(rows)
  end,
}

commands.shadow = {
  summary = "the last known document of every open device shadow",
  run = function()
    local shadow = package.loaded["moonwire.shadow"]
    if type(shadow) ~= "table" or type(shadow.opened) ~= "function" then return "no shadow open" end
    local list = shadow.opened()
    if type(list) ~= "table" or #list == 0 then return "no shadow open" end
    local out = {}
    for _, sh in ipairs(list) do
      local title = sh.name and ("shadow '%s' of %s"):format(sh.name, tostring(sh.thing))
                    or ("classic shadow of %s"):format(tostring(sh.thing))
      local ok, doc = pcall(function() return sh:document() end)
      if not ok then
        out[#out + 1] = title .. ": " .. tostring(doc)
      elseif doc == nil then
        out[#out + 1] = title .. ": no document received yet"
      else
        out[#out + 1] = title .. ":\n" .. inspect(doc, { depth = 8, width = 100 })
      end
    end
    return table.concat(out, "\n")
  end,
}

commands.reload = {
  summary = "reload the app's script (hot reload; app.state survives)",
  run = function()
    local app = app_module()
    if not app or type(app.reload) ~= "function" then
      return nil, "hot reload is not available: this runtime has no moonwire.app"
    end
    local v, msg, code = app.reload()
    if not v then return nil, ("reload failed: %s%s"):format(tostring(msg), code and (" (" .. code .. ")") or "") end
    local hash = type(app.hash) == "string" and (" (" .. app.hash:sub(1, 12) .. ")") or ""
    return ("reloaded %s: version %s%s"):format(tostring(app.file or "the app"), tostring(v), hash)
  end,
}

commands.stats = {
  summary = "uptime, messages in/out, handler errors, memory",
  run = function()
    local info = M.rtinfo and M.rtinfo() or {}
    local mqtt = require "moonwire.mqtt"
    local st = mqtt.stats()
    local device = package.loaded["moonwire.device"] or module_value("device")
    local rows = {}
    local function row(k, v) rows[#rows + 1] = { k, v } end
    row("uptime", info.uptime_ms and fmt_duration(info.uptime_ms) or "?")
    if info.broker then
      row("mqtt", (mqtt.connected() and "connected to %s as %s" or "not connected (broker %s, client %s)")
        :format(info.broker, tostring(info.client_id)))
    else
      row("mqtt", "no broker configured")
    end
    if type(device) == "table" and device.thing then row("thing", tostring(device.thing)) end
    row("messages", ("in %d, out %d"):format(st.messages_in or 0, st.messages_out or 0))
    row("bytes", ("in %s, out %s"):format(fmt_bytes(st.bytes_in), fmt_bytes(st.bytes_out)))
    row("connects", ("%d (%d failed, %d lost)"):format(st.connects or 0, st.connect_failures or 0,
                                                        st.disconnects or 0))
    row("inflight", tostring(st.inflight or 0))
    row("subscriptions", tostring(#mqtt.subscriptions()))
    row("handler errors", tostring(st.handler_errors or 0))
    row("lua calls", ("%d (handlers, timers, callbacks, prompt entries)"):format(info.handler_calls or 0))
    local mem = ("%s (peak %s"):format(fmt_bytes(info.mem_used), fmt_bytes(info.mem_peak))
    if info.mem_limit and info.mem_limit > 0 then mem = mem .. ", limit " .. fmt_bytes(info.mem_limit) end
    row("lua memory", mem .. ")")
    if info.rss then row("process rss", fmt_bytes(info.rss)) end
    if info.sessions then row("repl sessions", tostring(info.sessions)) end
    local app = app_module()
    if app and app.version then
      row("app", ("%s version %s%s"):format(tostring(app.file or "?"), tostring(app.version),
                                          type(app.hash) == "string" and (" (" .. app.hash:sub(1, 12) .. ")") or ""))
    end
    return columns(rows)
  end,
}

return M
