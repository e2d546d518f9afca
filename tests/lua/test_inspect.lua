-- moonwire.inspect: scalars, escapes that read back, tables with order, labels for shared
-- tables and cycles, and every limit (depth, items, string length, total, width).
local inspect = require "moonwire.inspect"
local json = require "moonwire.json"
local mqtt = require "moonwire.mqtt"

local function eq(got, want)
  if got ~= want then error(("\n got: %s\nwant: %s"):format(got, want), 2) end
end

-- scalars
eq(inspect(1), "1")
eq(inspect(-7), "-7")
eq(inspect(1.5), "1.5")
eq(inspect(2.0), "2.0")
eq(inspect(1e300), "1e+300")
eq(inspect(0.1), "0.1")
eq(inspect(1 / 0), "math.huge")
eq(inspect(-1 / 0), "-math.huge")
eq(inspect(0 / 0), "0/0")
eq(inspect(nil), "nil")
eq(inspect(true), "true")
eq(inspect("plain"), '"plain"')
eq(inspect("a\nb\t\"q\"\\"), [["a\nb\t\"q\"\\"]])
eq(inspect(json.null), "json.null")
eq(inspect(print), "<function: builtin>")
assert(inspect(function() end):match("^<function: .*test_inspect%.lua:%d+>$"), inspect(function() end))

-- every string reads back as itself, control bytes included, UTF-8 kept readable
for _, s in ipairs({ "\0\1" .. "2", "\0012", "x\127y", "é ü", "\r\n", ("\255"):rep(3), "a\\0b" }) do
  local back = load("return " .. inspect(s))()
  eq(back, s)
end
eq(inspect("é"), '"é"')
eq(inspect("\0012"), '"\\0012"')

-- long strings are cut, saying how much is missing
eq(inspect(("x"):rep(30), { string = 10 }), '"xxxxxxxxxx..." (+20 bytes)')

-- tables: array part, then keys sorted (numbers, strings, booleans, others)
eq(inspect({}), "{}")
eq(inspect({ 1, 2, 3 }), "{1, 2, 3}")
eq(inspect({ 1, 2, [10] = 10, [3.5] = "f", b = 2, a = 1, [true] = "t", [false] = "f" }),
   '{1, 2, [3.5] = "f", [10] = 10, a = 1, b = 2, [false] = "f", [true] = "t"}')
eq(inspect({ ["a b"] = 1, ["end"] = 2, _ok = 3 }), '{_ok = 3, ["a b"] = 1, ["end"] = 2}')
eq(inspect({ [{}] = 1 }), "{[{}] = 1}")
eq(inspect({ nested = { deeper = { x = 1 } } }), "{nested = {deeper = {x = 1}}}")
eq(inspect({ null = json.null }), "{null = json.null}")

-- shared tables get a label, and later references name it; cycles say so
local shared = { 1 }
eq(inspect({ a = shared, b = shared }), "{a = <1>{1}, b = <table 1>}")
local t = { name = "loop" }
t.self = t
eq(inspect(t), '<1>{name = "loop", self = <cycle: table 1>}')
local a, b = {}, {}
a.b, b.a = b, a
eq(inspect({ a }), "{<1>{b = {a = <cycle: table 1>}}}")

-- limits: depth, entries per table, and the whole output
local deep = { l1 = { l2 = { l3 = { l4 = {} } } } }
eq(inspect(deep, { depth = 2 }), "{l1 = {l2 = {... 1 entry}}}")
local long = {}
for i = 1, 100 do long[i] = i end
eq(inspect(long, { items = 5 }), "{1, 2, 3, 4, 5, ... (+95 more)}")
local keyed = {}
for i = 1, 20 do keyed["k" .. string.format("%02d", i)] = i end
eq(inspect(keyed, { items = 2 }), "{k01 = 1, k02 = 2, ... (+18 more)}")
local big = {}
for i = 1, 60 do
  big[i] = {}
  for j = 1, 60 do big[i][j] = { j, { j } } end
end
local s = inspect(big)
assert(#s < 200000, "output of " .. #s .. " bytes")
assert(s:find("... (+10 more)", 1, true))

-- too wide for one line: one entry per line, indented
eq(inspect({ alpha = ("a"):rep(40), beta = ("b"):rep(40) }),
   '{\n  alpha = "' .. ("a"):rep(40) .. '",\n  beta = "' .. ("b"):rep(40) .. '"\n}')
eq(inspect({ list = { ("x"):rep(50), ("y"):rep(50) } }, { width = 60 }),
   '{\n  list = {\n    "' .. ("x"):rep(50) .. '",\n    "' .. ("y"):rep(50) .. '"\n  }\n}')

-- userdata and tables with __tostring show that text; no other metamethod is called
local sub = mqtt.subscribe("inspect/test", function() end)
eq(inspect(sub), "<moonwire.mqtt.subscription (inspect/test)>")
sub:unsubscribe()
eq(inspect(setmetatable({}, { __tostring = function() return "custom thing" end })), "<custom thing>")
local trap = setmetatable({ 1 }, {
  __index = function() error("__index called") end,
  __pairs = function() error("__pairs called") end,
  __len = function() error("__len called") end,
})
eq(inspect(trap), "{1}")
eq(inspect(setmetatable({}, { __tostring = function() error("broken") end })), "<table (__tostring failed)>")
eq(inspect(coroutine.create(print)):match("^<thread: "), "<thread: ")

-- callable module
eq(inspect.inspect({ 1 }), "{1}")
print("ok inspect")
