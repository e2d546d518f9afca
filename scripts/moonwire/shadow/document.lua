--[[
moonwire.shadow.document: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

The last known document as the other parts see it: the snapshot views read (rebuilt after a
change only), and the SQLite cache it is written to behind the changes, so an app that
starts offline sees its previous state. The document itself is kept by the C core
(moonwire.shadow.core: the service's merge rules).
]]
local timer = require "moonwire.timer"
local log = require "moonwire.log"
local core = require "moonwire.shadow.core"
local entry = require("moonwire.shadow.calls").entry
local label = require("moonwire.shadow.shared").label

local CACHE_INTERVAL_MS = 1000 -- the cache is written at most once a second (and at exit)

local caches = {} -- path -> core cache, or false (could not open)

local function snapshot(st)
  if st.snap == nil then st.snap = st.doc:table() or false end
  return st.snap or nil
end

local function save_cache(st)
  st.last_save = timer.now()
  local ok, err = st.doc:save()
  if not ok and not st.save_warned then
    st.save_warned = true
    log.warn(("shadow %s: the cache is not written: %s"):format(label(st), err))
  end
end

-- The document changed: views re-read it, and the cache gets it (write-behind).
local function changed(st)
  st.snap = nil
  if not st.cached or st.save_timer or st.closed then return end
  local wait = st.last_save + CACHE_INTERVAL_MS - timer.now()
  if wait <= 0 then
    save_cache(st)
  else
    st.save_timer = timer.after(wait, entry(function()
      st.save_timer = nil
      if not st.closed and st.doc:dirty() then save_cache(st) end
    end))
  end
end

local function default_cache()
  local dir = os.getenv("STATE_DIRECTORY")
  dir = dir and dir:match("^[^:]+") or "."
  return dir .. "/moonwire-shadow.db"
end

local function get_cache(path)
  if caches[path] == nil then
    local c, err = core.cache(path)
    if not c then log.warn(("shadow: %s; the last known document is kept in memory only"):format(err)) end
    caches[path] = c or false
  end
  return caches[path] or nil
end

return { snapshot = snapshot, save_cache = save_cache, changed = changed, default_cache = default_cache,
  get_cache = get_cache }
