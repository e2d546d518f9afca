-- Tests of moonwire.json. Plain Lua: prints "ok N - name" per test, "not ok N - name: why"
-- on failure, and raises at the end if anything failed (non-zero exit).
-- Run: moonwire script tests/lua/test_json.lua
local json = require "moonwire.json"

local n, failed = 0, 0
local function test(name, fn)
  n = n + 1
  local ok, err = pcall(fn)
  if ok then
    print(("ok %d - %s"):format(n, name))
  else
    failed = failed + 1
    print(("not ok %d - %s: %s"):format(n, name, tostring(err)))
  end
end

local function eq(got, want, what)
  if got ~= want then
    error(("%s: got %s, want %s"):format(what or "value", tostring(got), tostring(want)), 2)
  end
end

local function itype(v, want, what)
  eq(math.type(v), want, (what or "number") .. " subtype")
end

-- Structural equality; arrays must carry the same array-ness.
local function deep_eq(a, b, path)
  path = path or "value"
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then error(("%s: %s ~= %s"):format(path, tostring(a), tostring(b)), 0) end
    if type(a) == "number" and math.type(a) ~= math.type(b) then
      error(("%s: %s is %s, %s is %s"):format(path, tostring(a), math.type(a), tostring(b), math.type(b)), 0)
    end
    return
  end
  if json.is_array(a) ~= json.is_array(b) then error(path .. ": array vs object", 0) end
  for k, v in pairs(a) do deep_eq(v, b[k], path .. "." .. tostring(k)) end
  for k in pairs(b) do
    if a[k] == nil then error(path .. "." .. tostring(k) .. " missing", 0) end
  end
end

-- Expects f(...) to raise an error containing 'needle' (plain text).
local function raises(needle, f, ...)
  local ok, err = pcall(f, ...)
  if ok then error("expected an error containing '" .. needle .. "'", 2) end
  if not tostring(err):find(needle, 1, true) then
    error(("error '%s' does not contain '%s'"):format(tostring(err), needle), 2)
  end
  return err
end

-- Expects json.decode(text, opts) to fail with a message containing every needle.
local function bad(text, opts, ...)
  local v, msg, code = json.decode(text, opts)
  if v ~= nil then error("decode of " .. ("%q"):format(text):sub(1, 60) .. " succeeded", 2) end
  eq(code, "EJSON", "error code")
  for _, needle in ipairs{...} do
    if not msg:find(needle, 1, true) then
      error(("message '%s' does not contain '%s'"):format(msg, needle), 2)
    end
  end
  return msg
end

local function nest(depth)  -- depth nested arrays: [[...[]...]]
  local t = json.array{}
  for _ = 2, depth do t = json.array{t} end
  return t
end

---------------------------------------------------------------------------------------------

test("scalars encode", function()
  eq(json.encode(1), "1")
  eq(json.encode(-42), "-42")
  eq(json.encode(2.5), "2.5")
  eq(json.encode(true), "true")
  eq(json.encode(false), "false")
  eq(json.encode("hi"), '"hi"')
  eq(json.encode(nil), "null")
  eq(json.encode(json.null), "null")
end)

test("scalars decode", function()
  eq(json.decode("1"), 1)
  eq(json.decode(" -42 "), -42)
  eq(json.decode("2.5"), 2.5)
  eq(json.decode("true"), true)
  eq(json.decode("false"), false)
  eq(json.decode('"hi"'), "hi")
  eq(json.decode("null"), json.null)
end)

test("null sentinel identity", function()
  eq(type(json.null), "userdata")
  eq(tostring(json.null), "json.null")
  eq(getmetatable(json.null), "json.null")
  assert(rawequal(json.decode("null"), json.null))
  assert(rawequal(json.decode("[null]")[1], json.null))
  assert(rawequal(json.decode('{"a":null}').a, json.null))
  eq(json.encode({a = json.null, b = {json.null, 1}}), '{"a":null,"b":[null,1]}')
  assert(json.null ~= nil and json.null ~= false)
  eq(require("moonwire.json").null, json.null, "null shared across requires")
end)

test("empty array vs empty object", function()
  eq(json.encode(json.decode("[]")), "[]")
  eq(json.encode(json.decode("{}")), "{}")
  eq(json.encode({}), "{}")
  eq(json.encode(json.array{}), "[]")
  eq(json.encode(json.array()), "[]")
  eq(json.encode(json.object{}), "{}")
  eq(json.encode(json.decode('{"a":[],"b":{},"c":[[]]}')), '{"a":[],"b":{},"c":[[]]}')
end)

test("arrays and objects", function()
  eq(json.encode({1, 2, 3}), "[1,2,3]")
  eq(json.encode({"a", {b = true}, {1}}), '["a",{"b":true},[1]]')
  local t = {}
  assert(json.array(t) == t, "json.array returns its argument")
  assert(json.is_array(t))
  assert(json.object(t) == t and not json.is_array(t), "re-marked as object")
  assert(json.is_array({1, 2}))
  assert(not json.is_array({}))
  assert(not json.is_array({a = 1}))
  assert(not json.is_array({1, nil, 3}))
  assert(not json.is_array("x") and not json.is_array(nil))
  local d = json.decode('[1,[2],{"x":[3]}]')
  assert(json.is_array(d) and json.is_array(d[2]) and json.is_array(d[3].x))
  assert(not json.is_array(d[3]))
  eq(#d, 3, "decoded array length")
  d[4] = "more"  -- decoded tables are ordinary mutable tables
  eq(json.encode(d), '[1,[2],{"x":[3]},"more"]')
  raises("already has a metatable", json.array, setmetatable({}, {}))
  raises("bad argument #1", json.object, 42)
end)

test("keys are sorted (byte order)", function()
  eq(json.encode({b = 1, a = 2, c = {z = 1, y = 2}}), '{"a":2,"b":1,"c":{"y":2,"z":1}}')
  eq(json.encode({aa = 1, a = 2, B = 3, [""] = 4}), '{"":4,"B":3,"a":2,"aa":1}')
end)

test("key rules", function()
  raises("cannot encode json.object with integer keys", json.encode, json.object{1})
  raises("cannot encode json.array with string keys", json.encode, json.array{x = 1})
  raises("cannot encode table with both string and integer keys at top level", json.encode, {1, a = 2})
  raises("cannot encode table with boolean key at .a", json.encode, {a = {[true] = 1}})
  raises("cannot encode table with key 0", json.encode, {[0] = 1})
  raises("cannot encode table with key -1", json.encode, {[-1] = 1})
  raises("cannot encode table with key 1.5", json.encode, {[1.5] = 1})
  raises("cannot encode table with table key", json.encode, {[{}] = 1})
end)

test("sparse arrays are refused; json.null fills holes", function()
  raises("cannot encode sparse array at top level (index 2 is missing; use json.null for holes)",
         json.encode, {1, nil, 3})
  raises("cannot encode sparse array at .a (index 1 is missing", json.encode, {a = {[2] = 1}})
  raises("index 1 is missing", json.encode, json.array{[1000000000] = 1})
  eq(json.encode({1, json.null, 3}), "[1,null,3]")
end)

test("strings: escapes", function()
  eq(json.encode('q"b\\s/\n\r\t\b\f\1\31\127'), '"q\\"b\\\\s/\\n\\r\\t\\b\\f\\u0001\\u001f\127"')
  eq(json.decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'), '"\\/\b\f\n\r\t')
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  all = table.concat(all)
  eq(json.decode(json.encode(all)), all, "every byte round-trips")
end)

test("strings: unicode escapes", function()
  eq(json.decode('"\\u00e9"'), "\u{e9}")
  eq(json.decode('"\\u20AC"'), "\u{20ac}")
  eq(json.decode('"\\ud83d\\ude00"'), "\u{1f600}", "surrogate pair")
  eq(json.decode('"h\\u00e9llo \\u4e16"'), "h\u{e9}llo \u{4e16}")
  eq(json.encode("h\u{e9}llo \u{1f600}"), '"h\u{e9}llo \u{1f600}"', "UTF-8 written as is")
  bad('"\\ud800"', nil, "malformed JSON", "line 1")
  bad('"\\udc00x"', nil, "malformed JSON")
end)

test("strings: \\u0000 in values and keys", function()
  local s = json.decode('"a\\u0000b"')
  eq(#s, 3, "length")
  eq(s, "a\0b")
  eq(json.encode(s), '"a\\u0000b"')
  local t = json.decode('{"k\\u0000":"\\u0000\\u00e9\\n\\ud83d\\ude00"}')
  eq(t["k\0"], "\0\u{e9}\n\u{1f600}")
  eq(json.encode(t), '{"k\\u0000":"\\u0000\u{e9}\\n\u{1f600}"}')
  eq(json.decode('"\\\\u0000"'), "\\u0000", "escaped backslash is not a NUL escape")
end)

test("malformed input: line, column, excerpt", function()
  bad("[1,2", nil, "line 1, column 5", "end of input", "near '[1,2'")
  bad('{\n  "a": 1,\n  "b": tru\n}', nil, "malformed JSON at line 3, column 8", "tru")
  bad('{"a" 1}', nil, "line 1, column", "near '")
  bad("", nil, "line 1, column 1", "end of input")
  bad("   \n  ", nil, "line 2")
  bad("[1]x", nil, "trailing data", "line 1, column 4")
  bad("[1] [2]", nil, "trailing data", "column 5")
  bad("nul", nil, "line 1, column 1")
  bad("'a'", nil, "line 1, column 1")
  bad("[1,]", nil, "malformed JSON")
  bad('{"a":1,}', nil, "malformed JSON")
  bad("\"abc", nil, "malformed JSON")
  -- object keys: the column is the offending byte
  bad('{"a":1, x}', nil, "line 1, column 9")
  bad('{\n  "a": 1,\n  bad: 2\n}', nil, "line 3, column 3 near '  bad: 2'")
  bad('{"a":{"b":1,}}', nil, "line 1, column 13")
  bad('[1,2x]', nil, "line 1, column 5")
  bad('["abc", "de', nil, "line 1, column 12", "unexpected end of input")
  bad("{\"a\":1}\n\n   }", nil, "malformed JSON at line 3, column 4 near '   }' (trailing data)")
end)

test("malformed input: embedded NUL bytes", function()
  bad("a\0b", nil, "line 1, column 1")
  bad("[1,\0 2]", nil, "column 4", "(unexpected NUL byte)")
  bad("[1,\1 2]", nil, "column 4", "(unexpected control byte)")
  bad("1\0", nil, "column 2", "NUL byte")
  eq(json.decode('"raw\1control\31bytes"'), "raw\1control\31bytes", "control bytes inside strings are accepted")
  bad("[1]\0", nil, "column 4", "NUL byte")
  bad("\0", nil, "column 1")
  eq(json.decode('"a\\u0000"'), "a\0")
end)

test("decode argument checks", function()
  raises("bad argument #1", json.decode, {})
  raises("bad argument #1", json.decode)
  raises("unknown option 'pretty'", json.decode, "1", {pretty = true})
  raises("'depth' must be an integer in 1..1000", json.decode, "1", {depth = 0})
  raises("'depth' must be an integer in 1..1000", json.decode, "1", {depth = 1001})
  raises("bad argument #2", json.decode, "1", "x")
  eq(json.decode(12), 12, "numbers are coerced like other Lua string arguments")
end)

test("decode depth limit", function()
  local ok64 = string.rep("[", 64) .. string.rep("]", 64)
  assert(json.decode(ok64), "64 levels decode")
  bad(string.rep("[", 65) .. string.rep("]", 65), nil,
      "nesting deeper than 64 levels at line 1, column 65")
  bad(string.rep('{"a":', 70) .. "1" .. string.rep("}", 70), nil, "nesting deeper than 64 levels")
  bad("[[[[1]]]]", {depth = 3}, "nesting deeper than 3 levels at line 1, column 4")
  assert(json.decode("[[[1]]]", {depth = 3}))
  assert(json.decode(string.rep("[", 1000) .. string.rep("]", 1000), {depth = 1000}))
  bad(string.rep("[", 1001) .. string.rep("]", 1001), {depth = 1000}, "nesting deeper than 1000 levels")
  -- huge input: refused at the 65th bracket without parsing the rest
  bad(string.rep("[", 2000000), nil, "nesting deeper than 64 levels")
  bad(string.rep('{"a":', 200000), nil, "nesting deeper than 64 levels")
  -- brackets inside strings do not count
  eq(json.decode('"' .. string.rep("[", 100) .. '"'), string.rep("[", 100))
  -- an earlier syntax error wins over the depth error
  bad("[x" .. string.rep("[", 100), nil, "malformed JSON at line 1, column 2")
end)

test("encode depth limit", function()
  eq(json.encode(nest(64)):sub(1, 3), "[[[")
  raises("nesting deeper than 64 levels at [1][1]", json.encode, nest(65))
  raises("nesting deeper than 3 levels", json.encode, nest(4), {depth = 3})
  eq(json.encode(nest(3), {depth = 3}), "[[[]]]")
  eq(#json.encode(nest(1000), {depth = 1000}), 2000)
  raises("'depth' must be an integer", json.encode, 1, {depth = "deep"})
end)

test("cycles are detected with their path", function()
  local t = {}
  t.self = t
  raises("cannot encode cycle at .self", json.encode, t)
  local a, b = {}, {}
  a.list = {1, b}
  b.back = a
  raises("cannot encode cycle at .list[2].back", json.encode, a)
  local shared = {x = 1}
  eq(json.encode({shared, shared}), '[{"x":1},{"x":1}]', "shared tables are not cycles")
end)

test("unsupported types name the path", function()
  raises("cannot encode function at .a.b[3]", json.encode, {a = {b = {1, 2, print}}})
  raises("cannot encode function at top level", json.encode, print)
  raises("cannot encode thread at .co", json.encode, {co = coroutine.create(print)})
  raises("cannot encode userdata at [1]", json.encode, {io.stdout})
  raises('cannot encode function at ["odd key"].x', json.encode, {["odd key"] = {x = print}})
  raises('at ["a\\"b"]', json.encode, {['a"b'] = print})
  -- raised from a Lua function: the message carries the caller's position
  local err = raises("cannot encode function", function() return json.encode({f = print}) end)
  assert(err:find("test_json.lua:%d+:"), "position prefix: " .. err)
end)

test("NaN and infinities are refused", function()
  raises("cannot encode NaN at [1]", json.encode, {0 / 0})
  raises("cannot encode inf at .x", json.encode, {x = math.huge})
  raises("cannot encode -inf at top level", json.encode, -math.huge)
  bad("1e999", nil, "number out of range at line 1, column 1")
  bad("[1, -1e400]", nil, "number out of range at line 1, column 5")
end)

test("integers and big integers", function()
  itype(json.decode("42"), "integer")
  itype(json.decode("-0"), "integer")
  eq(json.encode(math.maxinteger), "9223372036854775807")
  eq(json.encode(math.mininteger), "-9223372036854775808")
  eq(json.decode("9223372036854775807"), math.maxinteger)
  eq(json.decode("-9223372036854775808"), math.mininteger)
  itype(json.decode("9223372036854775807"), "integer")
  eq(json.decode("9007199254740993"), 9007199254740993, "2^53+1 is exact")
  local big = json.decode("9223372036854775808")
  itype(big, "float", "2^63")
  eq(big, 2.0 ^ 63)
  itype(json.decode("-123456789012345678901234567890"), "float")
  local t = json.decode('{"v":1234567890123456789}')
  eq(t.v, 1234567890123456789, "exact inside objects")
  eq(json.encode(t), '{"v":1234567890123456789}')
end)

test("numbers: integral values become integers", function()
  itype(json.decode("1.0"), "integer", "1.0")
  eq(json.decode("1.0"), 1)
  itype(json.decode("1e2"), "integer", "1e2")
  eq(json.decode("1e2"), 100)
  itype(json.decode("1.5"), "float", "1.5")
  itype(json.decode("1e300"), "float", "1e300")
  eq(json.encode(3.0), "3")
  eq(json.encode(-0.0), "-0")
end)

test("floats round-trip", function()
  local vals = {0.1, 1 / 3, 2 / 3, 1e300, -1e-300, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                123.456, 0.30000000000000004, math.pi, -math.exp(1), 1e21, 1e-7, 2 ^ 60 + 0.5}
  math.randomseed(42)
  for _ = 1, 2000 do
    vals[#vals + 1] = (math.random() - 0.5) * 10 ^ math.random(-30, 30)
    vals[#vals + 1] = string.unpack("d", string.pack("i8", math.random(math.mininteger, math.maxinteger)))
  end
  for _, v in ipairs(vals) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      local s = json.encode(v)
      eq(json.decode(s), v, "round trip of " .. s)
      assert(#s <= 24, "short form: " .. s)
    end
  end
  eq(json.encode(0.1), "0.1")
  eq(json.encode(1 / 3), "0.3333333333333333")
  eq(json.encode(1e300), "1e+300")
end)

test("pretty output", function()
  local v = {name = "car-01", speed = 12.5, tags = json.array{}, pos = {1, 2}, meta = {}, ok = true}
  local want = table.concat({
    '{',
    '  "meta": {},',
    '  "name": "car-01",',
    '  "ok": true,',
    '  "pos": [',
    '    1,',
    '    2',
    '  ],',
    '  "speed": 12.5,',
    '  "tags": []',
    '}'}, "\n")
  eq(json.encode(v, {pretty = true}), want)
  eq(json.encode(v, {pretty = false}), '{"meta":{},"name":"car-01","ok":true,"pos":[1,2],"speed":12.5,"tags":[]}')
  deep_eq(json.decode(json.encode(v, {pretty = true})), v)
  eq(json.encode(1, {pretty = true}), "1")
  raises("'pretty' must be a boolean", json.encode, 1, {pretty = 1})
  raises("unknown option 'indent'", json.encode, 1, {indent = 2})
end)

test("round trips", function()
  local docs = {
    '{"state":{"desired":{"speed":30,"lights":{"front":true}},"reported":null},"version":7}',
    '[1,-2,3.25,"x",true,false,null,[],{},[[]],{"a":{}}]',
    '{"":"","a b":[1,{"c":"d"}],"\\u00e9":"\\u0000"}',
    '"just a string"',
    '[-1.5e-10,1e+100,0.5,-0]',
  }
  for _, d in ipairs(docs) do
    local v = assert(json.decode(d))
    local s = json.encode(v)
    deep_eq(json.decode(s), v)
    eq(json.encode(json.decode(s)), s, "stable")
  end
  -- a larger document
  local big = json.array{}
  for i = 1, 5000 do big[i] = {id = i, name = "item" .. i, vals = {i, i + 0.5, json.null}, on = i % 2 == 0} end
  local s = json.encode(big)
  deep_eq(json.decode(s), big)
end)

test("UTF-8 BOM and whitespace", function()
  eq(json.decode("\239\187\191[1]")[1], 1)
  eq(json.decode(" \t\r\n[ 1 , 2 ]\n ")[2], 2)
end)

test("metamethods are not consulted", function()
  local proxy = setmetatable({}, {__index = {a = 1}, __pairs = function() error("not called") end})
  eq(json.encode(proxy), "{}")
  local withlen = setmetatable({1, 2}, {__len = function() return 10 end})
  eq(json.encode(withlen), "[1,2]")
end)

test("no leaks or corruption across many failures", function()
  -- errors at every stage: parse, trailing data, conversion (number range), encode raise
  local doc = "[" .. string.rep('{"a":[1,2,"x"]},', 200) .. "1e999]"
  for _ = 1, 200 do
    bad(doc, nil, "number out of range")
    bad(doc:sub(1, -3), nil, "malformed JSON")
    bad("[1] x", nil, "trailing data")
    raises("cannot encode function", json.encode, {1, 2, {a = {b = print}}})
  end
  collectgarbage()
  collectgarbage()
  eq(json.encode(json.decode('{"ok":[1]}')), '{"ok":[1]}')
end)

if failed > 0 then
  error(("%d of %d json tests failed"):format(failed, n), 0)
end
print(("# %d json tests passed"):format(n))
