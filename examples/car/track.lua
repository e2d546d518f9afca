-- A circular test track: positions, headings and distances, in plain Lua.
local track = {}

track.center = { lat = 48.1372, lon = 11.5756 } -- Munich, Marienplatz
track.radius = 80                               -- metres

local EARTH = 6371000

-- Position at angle (degrees, 0 = east of the centre, counter-clockwise positive).
function track.position(angle)
  local a = math.rad(angle)
  local north, east = track.radius * math.sin(a), track.radius * math.cos(a)
  local lat = track.center.lat + math.deg(north / EARTH)
  local lon = track.center.lon + math.deg(east / (EARTH * math.cos(math.rad(track.center.lat))))
  return lat, lon
end

-- Compass heading (0 = north, clockwise) of a car at angle moving in direction
-- (+1 counter-clockwise, -1 clockwise).
function track.heading(angle, direction)
  local h = (90 - angle - direction * 90) % 360
  return math.floor(h + 0.5) % 360
end

-- Angle travelled in dt seconds at speed km/h.
function track.advance(angle, direction, speed_kmh, dt)
  local metres = speed_kmh / 3.6 * dt
  return (angle + direction * math.deg(metres / track.radius)) % 360
end

-- Great-circle distance in metres (haversine).
function track.distance(lat1, lon1, lat2, lon2)
  local p1, p2 = math.rad(lat1), math.rad(lat2)
  local dp, dl = p2 - p1, math.rad(lon2 - lon1)
  local h = math.sin(dp / 2) ^ 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ^ 2
  return 2 * EARTH * math.asin(math.sqrt(h))
end

return track
