-- moonwire.inspect: readable, bounded text for any Lua value; the REPL prints results with it.
--
--   local inspect = require "moonwire.inspect"
--   print(inspect({1, 2, name = "car-01", pos = {x = 1.5}}))  --> {1, 2, name = "car-01", pos = {x = 1.5}}
--
-- Tables show their array part first, then the other keys sorted (numbers, strings, booleans,
-- the rest). A table met twice is printed once with a label <N> and referred to afterwards as
-- <table N>, or <cycle: table N> when it contains itself. Output is bounded: nesting beyond
-- opts.depth shows as {...}, tables longer than opts.items end with "... (+K more)", strings
-- longer than opts.string are cut, and after opts.total values in all the rest shows as {...}. Nothing here calls __index, __pairs or __len of the values
-- it prints; only __tostring, for tables and userdata that define it.
local M = {}

local defaults = { depth = 4, items = 50, string = 400, width = 80, indent = "  ", total = 2000 }

local type, pairs, tostring, rawget, rawlen = type, pairs, tostring, rawget, rawlen
local getmetatable, sort, concat = getmetatable, table.sort, table.concat
local fmt, srep = string.format, string.rep
local mtype = math.type

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat
            return then true until while]]):gmatch("%a+") do keywords[w] = true end

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not keywords[s]
end
M.is_identifier = is_identifier

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
                  ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\v"] = "\\v" }

-- A Lua string literal that reads back to s; UTF-8 is kept as is, control bytes are escaped.
local function quote(s, limit)
  local extra = ""
  if limit and #s > limit then
    extra = fmt(" (+%d bytes)", #s - limit)
    s = s:sub(1, limit)
  end
  s = s:gsub('[%c"\\]', function(c)
    -- three digits always, so a digit that follows cannot become part of the escape
    return escapes[c] or fmt("\\%03d", c:byte())
  end)
  return '"' .. s .. (extra ~= "" and '..."' or '"') .. extra
end
M.quote = quote

local function number_text(n)
  if mtype(n) == "integer" then return tostring(n) end
  if n ~= n then return "0/0" end
  if n == math.huge then return "math.huge" end
  if n == -math.huge then return "-math.huge" end
  local s = fmt("%.14g", n)
  if tonumber(s) ~= n then s = fmt("%.17g", n) end
  if not s:find("[%.eEn]") then s = s .. ".0" end -- keep floats recognisable
  return s
end

local function function_text(f)
  local ok, info = pcall(debug.getinfo, f, "S")
  if ok and info and info.what ~= "C" then
    return fmt("<function: %s:%d>", info.short_src, info.linedefined)
  end
  return "<function: builtin>"
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return fmt("%s (__tostring failed)", type(v))
end

-- Sort order of keys: numbers, strings, booleans, then everything else by its text.
local rank = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  local ra, rb = rank[ta] or 4, rank[tb] or 4
  if ra ~= rb then return ra < rb end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return (not a) and b end
  return safe_tostring(a) < safe_tostring(b)
end

-- The entries of t to show, in order: {keys...} (array part first), the number of entries
-- in all, and the length of the array part among the shown keys.
local SORT_CAP = 2000
local function entries(t, items)
  local keys, n = {}, 0
  local border = 0
  while rawget(t, border + 1) ~= nil do border = border + 1 end
  local others, total = {}, border
  for k in next, t do
    if not (mtype(k) == "integer" and k >= 1 and k <= border) then
      total = total + 1
      if #others < SORT_CAP then others[#others + 1] = k end
    end
  end
  for i = 1, border do
    if n >= items then return keys, total, n end
    n = n + 1
    keys[n] = i
  end
  local array_n = n
  pcall(sort, others, key_less)
  for _, k in ipairs(others) do
    if n >= items then break end
    n = n + 1
    keys[n] = k
  end
  return keys, total, array_n
end

function M.inspect(value, opts)
  local o = {}
  for k, v in pairs(defaults) do o[k] = (opts and opts[k] ~= nil) and opts[k] or v end
  local json = package.loaded["moonwire.json"]
  local null = type(json) == "table" and json.null or nil

  -- Pass 1: how often each table is reached (within the same limits as the output).
  local count, scan_budget = {}, o.total
  local function scan(v, depth)
    if type(v) ~= "table" or has_tostring(v) then return end
    count[v] = (count[v] or 0) + 1
    scan_budget = scan_budget - 1
    if count[v] > 1 or depth >= o.depth or scan_budget <= 0 then return end
    local keys = entries(v, o.items)
    for _, k in ipairs(keys) do
      scan(k, depth + 1)
      scan(rawget(v, k), depth + 1)
    end
  end
  scan(value, 0)

  local ids, next_id, open, budget = {}, 0, {}, o.total

  local render
  local function scalar(v)
    local t = type(v)
    if t == "string" then return quote(v, o.string) end
    if t == "number" then return number_text(v) end
    if t == "nil" or t == "boolean" then return tostring(v) end
    if v == null and null ~= nil then return "json.null" end
    if t == "function" then return function_text(v) end
    if t == "userdata" or t == "thread" or has_tostring(v) then
      local s = safe_tostring(v)
      return s:match("^<.*>$") and s or "<" .. s .. ">"
    end
    return nil
  end

  local function key_text(k, depth, indent)
    if is_identifier(k) then return k end
    return "[" .. render(k, depth + 1, indent) .. "]"
  end

  render = function(v, depth, indent)
    budget = budget - 1
    local s = scalar(v)
    if s then return s end
    if ids[v] then
      return open[v] and fmt("<cycle: table %d>", ids[v]) or fmt("<table %d>", ids[v])
    end
    local label = ""
    if (count[v] or 0) > 1 then
      next_id = next_id + 1
      ids[v] = next_id
      label = fmt("<%d>", next_id)
    end
    if next(v) == nil then return label .. "{}" end
    local keys, total, array_n = entries(v, o.items)
    if depth >= o.depth or budget <= 0 then
      return fmt("%s{... %d %s}", label, total, total == 1 and "entry" or "entries")
    end
    open[v] = true
    local inner = indent .. o.indent
    local parts, multiline = {}, false
    for i, k in ipairs(keys) do
      local item = render(rawget(v, k), depth + 1, inner)
      if i > array_n then item = key_text(k, depth, inner) .. " = " .. item end
      if item:find("\n", 1, true) then multiline = true end
      parts[#parts + 1] = item
    end
    if total > #keys then parts[#parts + 1] = fmt("... (+%d more)", total - #keys) end
    open[v] = nil
    local one = label .. "{" .. concat(parts, ", ") .. "}"
    if not multiline and #indent + #one <= o.width then return one end
    return label .. "{\n" .. inner .. concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
  end

  return render(value, 0, "")
end

return setmetatable(M, { __call = function(_, ...) return M.inspect(...) end })
