"""Server-side Lua: a whole entity slice in one round trip, and atomic versioned writes."""

# KEYS: entities, refs, version. ARGV[1]: max entities; ARGV[2..]: root uid-keys.
# Walks refs breadth first (any depth) and returns {version, found keys, values, missing keys}.
SLICE = r"""
local max = tonumber(ARGV[1])
local seen, frontier, found, missing = {}, {}, {}, {}
for i = 2, #ARGV do
  local k = ARGV[i]
  if not seen[k] then seen[k] = true; frontier[#frontier + 1] = k end
end
local function hmget(key, fields)
  local out = {}
  for start = 1, #fields, 1000 do
    local chunk = {}
    for j = start, math.min(start + 999, #fields) do chunk[#chunk + 1] = fields[j] end
    local part = redis.call('HMGET', key, unpack(chunk))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
while #frontier > 0 do
  local refs = hmget(KEYS[2], frontier)
  local nextf = {}
  for i = 1, #frontier do
    local r = refs[i]
    if r then
      found[#found + 1] = frontier[i]
      if #found > max then return redis.error_reply('VERDICT_SLICE_TOO_LARGE') end
      for ref in string.gmatch(r, '[^\n]+') do
        if not seen[ref] then seen[ref] = true; nextf[#nextf + 1] = ref end
      end
    else
      missing[#missing + 1] = frontier[i]
    end
  end
  frontier = nextf
end
local values = {}
if #found > 0 then values = hmget(KEYS[1], found) end
local version = redis.call('GET', KEYS[3]) or '0'
return {version, found, values, missing}
"""

# KEYS: entities, refs, version. ARGV[1]: channel; then (uid-key, entity JSON, refs) triples.
PUT = r"""
local v = redis.call('INCR', KEYS[3])
local keys = {}
for i = 2, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], '{"v":' .. v .. ',"e":' .. ARGV[i + 1] .. '}')
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  keys[#keys + 1] = ARGV[i]
end
redis.call('PUBLISH', ARGV[1], v .. '\n' .. table.concat(keys, '\n'))
return v
"""

# KEYS: entities, refs, version. ARGV[1]: channel; ARGV[2..]: uid-keys to delete.
DELETE = r"""
local v = redis.call('INCR', KEYS[3])
local deleted = 0
local keys = {}
for i = 2, #ARGV do
  deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  keys[#keys + 1] = ARGV[i]
end
redis.call('PUBLISH', ARGV[1], v .. '\n' .. table.concat(keys, '\n'))
return {v, deleted}
"""

# KEYS: entities, version. ARGV: uid-keys. Returns {version, values}.
GET = r"""
local values = {}
if #ARGV > 0 then values = redis.call('HMGET', KEYS[1], unpack(ARGV)) end
return {redis.call('GET', KEYS[2]) or '0', values}
"""
