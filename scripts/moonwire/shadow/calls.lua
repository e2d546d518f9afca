--[[
moonwire.shadow.calls: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

User callbacks run protected: one failing handler does not stop the others, and the first
failure is raised again at the end of the event, so the runtime logs and counts it. One
module keeps the failures of the current event for every part of moonwire.shadow.
]]
local log = require "moonwire.log"

local failures -- messages of failed user callbacks during the current event, or nil

-- Wraps an event entry point (subscription handler, timer, listener): user callbacks that
-- fail are collected, and the first failure is raised once the event is fully processed.
local function entry(fn)
  return function(...)
    local saved = failures
    failures = {}
    local ok, err = xpcall(fn, debug.traceback, ...)
    local f = failures
    failures = saved
    if not ok then table.insert(f, 1, err) end
    if #f > 0 then error(table.concat(f, "\n"), 0) end
  end
end

local function failed(msg)
  if failures then failures[#failures + 1] = msg else error(msg, 0) end
end

local function call_user(what, fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then failed(what .. " failed: " .. tostring(err)) end
end

local function resume(co, ...)
  if coroutine.status(co) ~= "suspended" then
    failed("a coroutine waiting for a shadow result could not be resumed (" .. coroutine.status(co) .. ")")
    return
  end
  local ok, err = coroutine.resume(co, ...)
  if not ok then failed("coroutine waiting for a shadow result failed: " .. debug.traceback(co, tostring(err))) end
end

-- Failures nobody waits for (reported batches, fire-and-forget requests): the on_error
-- handlers get them, or the log when there is none.
local function report_error(st, msg, code, what)
  if #st.error_handlers == 0 then
    log.warn(msg)
    return
  end
  for _, h in ipairs(table.move(st.error_handlers, 1, #st.error_handlers, 1, {})) do
    if h.active then call_user("shadow on_error handler", h.fn, msg, code, what) end
  end
end

return { entry = entry, call_user = call_user, resume = resume, report_error = report_error }
