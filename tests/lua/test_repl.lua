-- moonwire.repl, the Lua half of the REPL: compiling entries as lua.c does, the environment,
-- result formatting, completion and the dot commands (with stand-ins for moonwire.app and
-- moonwire.shadow where this runtime has none).
local repl = require "moonwire.repl"
local mqtt = require "moonwire.mqtt"

local function eq(got, want)
  if got ~= want then error(("\n got: %s\nwant: %s"):format(tostring(got), tostring(want)), 2) end
end

-- compile: an expression first, then a statement; incomplete chunks ask for more
local fn, kind = repl.compile("1 + 1")
eq(kind, "lua")
eq(fn(), 2)
fn = repl.compile("=6 * 7")
eq(fn(), 42)
fn, kind = repl.compile("repl_test_global = 5")
eq(kind, "lua")
eq(fn(), nil)
eq(repl_test_global, 5) -- writes reach the app's globals (here _G)
local _, why, msg = repl.compile("for i = 1,")
eq(why, "more")
assert(msg:find("<eof>"))
_, why, msg = repl.compile("function f()\n  return 1\n")
eq(why, "more")
_, why, msg = repl.compile("x = = 1")
eq(why, "error")
eq(msg, "repl:1: unexpected symbol near '='")
fn = repl.compile("return 1 -- a comment")
eq(fn(), 1)

-- the moonwire modules by short name, behind the app's own globals
eq(repl.compile("mqtt")(), mqtt)
eq(repl.compile("inspect")(), require("moonwire.inspect"))
eq(repl.compile("json.encode({1})")(), "[1]")
json = "the app's own json" -- luacheck: ignore
eq(repl.compile("json")(), "the app's own json")
json = nil

-- commands: one line starting with a dot; ".5" stays a number
fn, kind = repl.compile("  .help  \n")
eq(kind, "command")
assert(fn():find(".subs", 1, true))
_, why, msg = repl.compile(".nope")
eq(why, "error")
eq(msg, "unknown command '.nope' (.help lists the commands)")
eq(repl.compile(".5 + 1")(), 1.5)

-- format
eq(select(2, repl.format(true, { n = 3, 1, "a", nil }, "lua", false, 80)), '1\t"a"\tnil')
eq(select(2, repl.format(true, { n = 2, 1, "a" }, "lua", true, 80)), "1\ta")
eq(select(2, repl.format(true, { n = 0 }, "lua", false, 80)), "")
local st, text = repl.format(true, { n = 2, { a = ("x"):rep(60) }, 2 }, "lua", false, 40)
eq(st, "ok")
eq(text, '{\n  a = "' .. ("x"):rep(60) .. '"\n}\n2')
st, text = repl.format(false, "repl:1: x\nstack traceback:\n\t[C]: in function 'error'\n\trepl:1: in main chunk\n\t[C]: in ?")
eq(st, "error")
eq(text, "repl:1: x")
st, text = repl.format(false, "repl:1: deep\nstack traceback:\n\t[C]: in function 'error'\n\trepl:1: in function 'f'\n" ..
                               "\trepl:2: in main chunk\n\t[C]: in ?")
eq(text, "repl:1: deep\nstack traceback:\n\trepl:1: in function 'f'\n\trepl:2: in main chunk")
eq(select(2, repl.format(false, { code = 1 })), "error object: {code = 1}")
eq(select(2, repl.format(true, { n = 1, "raw text" }, "command")), "raw text")
st, text = repl.format(true, { n = 2, nil, "failed" }, "command")
eq(st, "error")
eq(text, "failed")

-- completion: globals, fields, methods, keywords, commands; never code that is not a name chain
local function has(list, item)
  for c in list:gmatch("[^\n]+") do if c == item then return true end end
  return false
end
local c = repl.complete("mqtt.sub")
assert(has(c, "mqtt.subscribe(") and has(c, "mqtt.subscriptions("), c)
eq(repl.complete("string.fo"), "string.format(")
completion_table = { alpha = 1, beta = { gamma = true } }
eq(repl.complete("completion_table.be"), "completion_table.beta")
eq(repl.complete("completion_table.beta.g"), "completion_table.beta.gamma")
a_string = "x"
assert(has(repl.complete("a_string:up"), "a_string:upper("))
eq(repl.complete("completion_table:al"), "") -- ':' only lists functions
assert(has(repl.complete("ret"), "return"))
assert(has(repl.complete("completion_t"), "completion_table"))
assert(has(repl.complete("tim"), "timer")) -- modules by short name
eq(repl.complete(".su"), ".subs")
assert(has(repl.complete(".q"), ".quit"))
eq(repl.complete("1 +"), "")
eq(repl.complete("nosuch.x"), "")
eq(repl.complete("f().x"), "")
local trap = setmetatable({}, { __index = function() error("boom") end })
trapped = trap
eq(repl.complete("trapped.x.y"), "")

-- .subs and .stats
eq(repl.commands.subs.run(), "no subscriptions")
local sub = mqtt.subscribe("cars/+/cmd", function() end, { qos = 1 })
local subs = repl.commands.subs.run()
assert(subs:match("filter%s+qos%s+messages%s+errors") and subs:match("cars/%+/cmd%s+1%s+0"), subs)
sub:unsubscribe()
local stats = repl.commands.stats.run()
assert(stats:find("no broker configured") and stats:match("lua memory%s+%?"), stats)
repl.rtinfo = function()
  return { uptime_ms = 3723000, mem_used = 2048, mem_peak = 4096, mem_limit = 1 << 20, sessions = 2,
           handler_calls = 9, broker = "broker.example:8883", client_id = "car-01", rss = 5 << 20 }
end
stats = repl.commands.stats.run()
assert(stats:match("uptime%s+1h 02m 03s"), stats)
assert(stats:match("mqtt%s+not connected %(broker broker.example:8883, client car%-01%)"), stats)
assert(stats:match("lua memory%s+2.0 KiB %(peak 4.0 KiB, limit 1.0 MiB%)"), stats)
assert(stats:match("handler errors%s+0") and stats:match("lua calls%s+9") and stats:match("repl sessions%s+2"), stats)
assert(stats:match("process rss%s+5.0 MiB"), stats)

-- .shadow, with and without a shadow module
eq(repl.commands.shadow.run(), "no shadow open")
package.loaded["moonwire.shadow"] = {
  opened = function()
    return {
      { thing = "car-01", document = function() return { state = { reported = { speed = 3 } }, version = 7 } end },
      { name = "config", thing = "car-01", document = function() return nil end },
    }
  end,
}
local sh = repl.commands.shadow.run()
assert(sh:find("classic shadow of car-01:", 1, true) and sh:find("speed = 3", 1, true), sh)
assert(sh:find("shadow 'config' of car-01: no document received yet", 1, true), sh)
package.loaded["moonwire.shadow"] = nil

-- .reload, and the environment following moonwire.app
local ok, err = repl.commands.reload.run()
eq(ok, nil)
-- moonwire script has moonwire.app but runs no app
eq(err, "reload failed: no app is running (moonwire run APP.lua runs one) (ESTATE)")
local app_env = setmetatable({}, { __index = _G })
package.loaded["moonwire.app"] = {
  env = app_env, file = "app.lua", hash = "abcdef0123456789", version = 2,
  reload = function() return 3 end,
}
eq(repl.commands.reload.run(), "reloaded app.lua: version 3 (abcdef012345)")
repl.compile("only_in_app = 1")()
eq(rawget(app_env, "only_in_app"), 1)
eq(rawget(_G, "only_in_app"), nil)
eq(repl.compile("only_in_app + 1")(), 2)
assert(repl.commands.stats.run():match("app%s+app.lua version 2"))
package.loaded["moonwire.app"].reload = function() return nil, "syntax error in app.lua:3", "EINVAL" end
ok, err = repl.commands.reload.run()
eq(err, "reload failed: syntax error in app.lua:3 (EINVAL)")
package.loaded["moonwire.app"] = nil
print("ok repl")
