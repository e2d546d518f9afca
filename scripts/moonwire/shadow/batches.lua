--[[
moonwire.shadow.batches: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

Reported values written through sh.reported are staged and go out as one /update per
debounce window, written against the known version; a batch that is not confirmed is merged
back under what was written since, for the next one.
]]
local json = require "moonwire.json"
local log = require "moonwire.log"
local timer = require "moonwire.timer"
local calls = require "moonwire.shadow.calls"
local requests = require "moonwire.shadow.requests"
local merge_into = require("moonwire.shadow.tables").merge_into
local label = require("moonwire.shadow.shared").label

local entry, report_error = calls.entry, calls.report_error
local new_request, send, ready = requests.new_request, requests.send, requests.ready

local flush -- forward declaration: a finished batch schedules the next flush

local function stage_merge_back(st, batch)
  -- Values written since the batch left win over the batch's own.
  st.batch = st.batch and merge_into(batch, st.batch) or batch
end

local function batch_done(st, req, ok, err, code)
  st.inflight = nil
  if st.closed then return end
  if not ok then
    local retry = code == "ETIMEDOUT" or code == "ENOTCONN" or code == "EBUSY" or code == "ECONNRESET" or code == 409
    if retry then stage_merge_back(st, req.batch) end
    if code == "ECONNRESET" then
      log.debug(("shadow %s: reported values in flight at the disconnect are sent again"):format(label(st)))
    else
      report_error(st, ("reported state of shadow %s %s: %s"):format(label(st),
        retry and "not confirmed (kept for the next update)" or "dropped", err), code, "reported")
    end
  end
  if st.batch and not st.flush_timer then
    st.flush_timer = timer.after(ok and 0 or st.debounce_ms, entry(function()
      st.flush_timer = nil
      flush(st)
    end))
  end
end

-- Sends the staged reported values as one /update, written against the known version.
function flush(st)
  if st.flush_timer then st.flush_timer:stop(); st.flush_timer = nil end
  if not st.batch or st.inflight or not ready(st) then return end
  local batch = st.batch
  st.batch = nil
  local req = new_request(st, "update", function(token)
    return json.encode { state = { reported = batch }, clientToken = token,
      version = st.doc:exists() and st.doc:version() or nil }
  end)
  req.kind, req.batch = "batch", batch
  req.on_done = function(ok, err, code) batch_done(st, req, ok, err, code) end
  st.inflight = req
  send(st, req)
end

local function schedule_flush(st)
  if st.flush_timer or st.closed then return end
  st.flush_timer = timer.after(st.debounce_ms, entry(function()
    st.flush_timer = nil
    flush(st)
  end))
end

return { flush = flush, schedule_flush = schedule_flush }
