--[[
moonwire.shadow.shared: part of moonwire.shadow, private to it (apps use require "moonwire.shadow";
this module's contents may change with any release).

The module-wide state the parts share, here so that no part requires another only to reach
it: which shadow object and which view userdata stand for what, the open shadows, and the
public module table M itself, which parts add their public functions to and call them
through (M.copy), as they did when moonwire.shadow was one file.
]]
local S = {}

S.M = {}                                      -- what require "moonwire.shadow" returns
S.priv = setmetatable({}, { __mode = "k" })  -- shadow object -> its state
S.views = setmetatable({}, { __mode = "k" }) -- view userdata -> {st, kind, path}
S.open_list = {}                              -- open shadows, in opening order

function S.label(st)
  return st.name == "" and st.thing or (st.thing .. "/" .. st.name)
end

return S
