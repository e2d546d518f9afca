--[[
moonwire.provision.flows: part of moonwire.provision, private to it (flows use
require "moonwire.provision"; this module's contents may change with any release).

Flows: the flow context f whose steps stop the flow on failure (and only print the plan in
a dry run), parameters, finding a flow (shipped or a file), running it in its coroutine,
and the entry point of `moonwire provision`.

Adds to moonwire.provision: STEPS, flows, load, run, _main.
]]
local values = require "moonwire.provision.values"
local runner = require "moonwire.provision.runner"
local report = require "moonwire.provision.report"
local shared = require "moonwire.provision.shared"

local copy, file_exists = values.copy, values.file_exists
local StepError, finish, resume = runner.StepError, runner.finish, runner.resume
local summary, placeholder, describe = report.summary, report.placeholder, report.describe
local M, tasks, say = shared.M, shared.tasks, shared.say

M.STEPS = { "keygen", "save_key", "csr", "connect", "disconnect", "create_certificate_from_csr",
            "create_keys_and_certificate", "register_thing", "register_certificate", "sign_csr",
            "store_certificate", "write_config", "verify", "commit" }

local function make_context(task, flow, params, opts)
  local f = { config = opts.config, config_path = opts.config_path, params = params, dry_run = opts.dry_run,
              name = flow.name, task = task }
  task.n = 0
  -- f.fail(message [, code]): stops the flow like a failed step (the step is the last one run).
  f.fail = function(...)
    local args = table.pack(...)
    if args[1] == f then table.remove(args, 1) end
    error(setmetatable({ step = task.step or "flow", n = task.n, message = tostring(args[1]), code = args[2] },
                       StepError), 0)
  end
  for _, name in ipairs(M.STEPS) do
    f[name] = function(...)
      local args = table.pack(...)
      if args[1] == f then table.remove(args, 1); args.n = args.n - 1 end
      task.n = task.n + 1
      task.step = name
      if task.dry_run then
        local shown = {}
        for i = 1, args.n do shown[i] = describe(args[i], f) end
        task.out(string.format("  %2d. %-28s %s", task.n, name, table.concat(shown, "  ")))
        return placeholder(string.format("step %d %s", task.n, name))
      end
      say("info", string.format("step %d %s ...", task.n, name))
      local r, msg, code, status = M[name](table.unpack(args, 1, args.n))
      if r == nil then
        error(setmetatable({ step = name, n = task.n, message = msg, code = code, status = status }, StepError), 0)
      end
      say("info", string.format("step %d %s: %s", task.n, name, summary(name, r, args)))
      return r
    end
  end
  return f
end

-- Checks params against the flow's declarations and fills in defaults. -> table | nil, message
local function check_params(flow, given)
  local spec = flow.params or {}
  local out = {}
  for k, v in pairs(given or {}) do
    if not spec[k] and not flow.any_params then
      local known = {}
      for name in pairs(spec) do known[#known + 1] = name end
      table.sort(known)
      return nil, string.format("flow %s has no parameter '%s' (it has: %s)", flow.name, k, table.concat(known, ", "))
    end
    out[k] = v
  end
  local missing = {}
  for k, s in pairs(spec) do
    if out[k] == nil then out[k] = s.default end
    if out[k] == nil and s.required then missing[#missing + 1] = k end
  end
  table.sort(missing)
  if #missing > 0 then
    return nil, string.format("flow %s needs parameter(s): %s", flow.name, table.concat(missing, ", "))
  end
  return out
end

-- prov.flows() -> names of the flows shipped in the binary (scripts/provision/*.lua)
function M.flows()
  local names = {}
  for mod in pairs(package.preload) do
    local n = mod:match("^provision%.(.+)$")
    if n then names[#names + 1] = n end
  end
  table.sort(names)
  return names
end

-- prov.load(name_or_path) -> flow | nil, message
function M.load(what)
  local flow
  if type(what) == "table" then
    flow = what
  elseif type(what) == "function" then
    flow = { name = "inline", run = what }
  elseif type(what) == "string" and file_exists(what) then
    local chunk, err = loadfile(what, "t")
    if not chunk then return nil, err end
    local ok, r = pcall(chunk)
    if not ok then return nil, tostring(r) end
    flow = r
    if type(flow) == "table" and not flow.name then flow.name = what:match("([^/]+)%.lua$") or what end
  elseif type(what) == "string" and package.preload["provision." .. what] then
    flow = require("provision." .. what)
  else
    return nil, string.format("no flow '%s': not a file, and not a shipped flow (%s)", tostring(what),
                              table.concat(M.flows(), ", "))
  end
  if type(flow) ~= "table" or type(flow.run) ~= "function" then
    return nil, tostring(what) .. ": a flow returns a table with a run(f, params) function"
  end
  flow.name = flow.name or "flow"
  return flow
end

-- prov.run(flow, params [, opts]) -> task | nil, message
-- flow: a table {name, description, params = {NAME = {required, default, help}}, run = function(f, p)},
-- a function(f, p), a shipped flow's name or a file. opts: config (table), config_path,
-- dry_run, on_done(task), out (print function for dry runs). The flow starts at once and
-- runs while the loop runs; task.ok is nil until it ends, then true (task.result) or false
-- (task.error, a StepError). task:cancel(reason) stops it at its next wait.
function M.run(what, params, opts)
  opts = opts or {}
  local flow, err = M.load(what)
  if not flow then return nil, err end
  local p, perr = check_params(flow, params)
  if not p then return nil, perr end
  local task = { name = flow.name, flow = flow, params = p, connections = {}, cleanup = {}, dry_run = opts.dry_run,
                 on_done = opts.on_done, out = opts.out or print }
  function task.cancel(self, reason)
    self = self or task
    self.cancelled = reason or "cancelled"
    if self.waiting then self.waiting(nil, self.cancelled, "ECANCELED") end
  end
  if opts.dry_run then
    local names = {}
    for k in pairs(p) do names[#names + 1] = k end
    table.sort(names)
    task.out("parameters:")
    for _, k in ipairs(names) do task.out(string.format("  %-14s %s", k, describe(p[k]))) end
    task.out("plan:")
  end
  opts = copy(opts)
  opts.config = opts.config and copy(opts.config)
  local f = make_context(task, flow, p, opts)
  task.context = f
  task.co = coroutine.create(function()
    local ok, res = xpcall(flow.run, function(e)
      if getmetatable(e) == StepError then return e end
      return setmetatable({ step = task.step or "flow", n = task.n, code = "ELUA",
                            message = debug.traceback(tostring(e), 2) }, StepError)
    end, f, p)
    finish(task, ok, res)
  end)
  tasks[task.co] = task
  resume(task)
  return task
end

-- The entry point of `moonwire provision`: runs a flow, reports, sets task.exit_code.
function M._main(args)
  local out = args.out or print
  local flow, err = M.load(args.flow)
  if not flow then
    return { finished = true, exit_code = 2, message = err }
  end
  local cfg = args.config and copy(args.config) or nil
  local ov = args.overrides or {}
  if cfg and ov.host then
    cfg.broker = cfg.broker or {}
    cfg.broker.host, cfg.broker.port = ov.host, ov.port
  end
  if cfg and ov.thing then cfg.thing, cfg.client_id = ov.thing, nil end
  if args.dry_run then
    out(string.format("flow %s%s", flow.name, flow.description and (": " .. flow.description) or ""))
    out("configuration: " .. tostring(args.config_path))
  end
  local task, rerr = M.run(flow, args.params, {
    config = cfg, config_path = args.config_path, dry_run = args.dry_run, out = out,
    on_done = function(t)
      if t.ok then
        t.exit_code = 0
        if t.dry_run then
          out("dry run: nothing was changed")
        else
          local r = t.result
          say("info", string.format("flow %s done%s", t.name, type(r) == "table" and r.path and (": " .. r.path .. " holds the new identity") or ""))
        end
      else
        t.exit_code = 1
        t.message = tostring(t.error) .. (t.committed and "" or "; nothing was switched over: the previous identity is untouched")
      end
    end,
  })
  if not task then return { finished = true, exit_code = 2, message = rerr } end
  return task
end
