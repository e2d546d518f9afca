--[[
moonwire.provision.runner: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

The coroutine runner under the steps: a flow's task, suspending its coroutine until an
answer arrives or a timeout passes, and ending it once (closing its connections and, when
it failed, removing what it made for the new identity). Failures are StepErrors.

Adds to moonwire.provision: StepError.
]]
local timer = require "moonwire.timer"
local shared = require "moonwire.provision.shared"

local M, tasks, say = shared.M, shared.tasks, shared.say

local DEFAULT_TIMEOUT = 10  -- seconds, for one request/answer
local CONNECT_TIMEOUT = 20

local StepError = {}
StepError.__index = StepError
StepError.__tostring = function(e)
  local s = "step " .. tostring(e.step) .. " failed: "
  if e.code then s = s .. tostring(e.code) .. ": " end
  return s .. tostring(e.message)
end
M.StepError = StepError

local function running_task(step)
  local co, main = coroutine.running()
  local t = (not main) and tasks[co]
  if not t then
    error(step .. " talks to the network and must run inside a flow: prov.run(function(f) ... end)", 3)
  end
  return t
end

local function seconds(opts, default)
  local t = opts and opts.timeout or default
  if type(t) ~= "number" or t <= 0 then error("timeout must be a positive number of seconds", 3) end
  return t
end

local resume

-- Suspends the flow until resolve(...) is called (by an event) or timeout_s passes.
-- arm(resolve) starts whatever will answer; it may resolve at once.
local function suspend(task, timeout_s, what, arm)
  local result, done, tm
  local function resolve(...)
    if done then return end
    done = true
    if tm then tm:stop() end
    if task.waiting == resolve then task.waiting = nil end
    if coroutine.status(task.co) == "running" then
      result = table.pack(...)
    else
      resume(task, ...)
    end
  end
  task.waiting = resolve
  arm(resolve)
  if done then return table.unpack(result, 1, result.n) end
  tm = timer.after(math.floor(timeout_s * 1000 + 0.5), function()
    resolve(nil, string.format("%s: no answer within %g s", what, timeout_s), "ETIMEDOUT")
  end)
  return coroutine.yield()
end

local function finish(task, ok, res)
  if task.finished then return end
  task.finished = true
  for conn in pairs(task.connections) do
    if conn.c then conn.c:close(); conn.c = nil end
  end
  if ok then
    task.ok, task.result = true, res
  else
    task.ok, task.error = false, res
    -- What was made for the new identity and never committed goes away again; keys in a
    -- chip slot stay (a slot cannot be un-generated) but nothing refers to them.
    for path in pairs(task.cleanup) do
      os.remove(path)
    end
  end
  task.cleanup = {}
  if not ok and not task.on_done then say("warn", "flow " .. tostring(task.name) .. ": " .. tostring(res)) end
  if task.on_done then
    local okcb, err = pcall(task.on_done, task)
    if not okcb then say("error", "flow", task.name, "on_done failed:", err) end
  end
end

resume = function(task, ...)
  local ok, err = coroutine.resume(task.co, ...)
  if not ok then finish(task, false, setmetatable({ step = task.step or "flow", message = tostring(err), code = "ELUA" }, StepError)) end
end

return {
  StepError = StepError, running_task = running_task, seconds = seconds, suspend = suspend, finish = finish,
  resume = resume, DEFAULT_TIMEOUT = DEFAULT_TIMEOUT, CONNECT_TIMEOUT = CONNECT_TIMEOUT,
}
