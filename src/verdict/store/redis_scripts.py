"""Server-side Lua: a whole entity slice in one round trip, atomic writes, and bulk switches.

Errors a script raises on purpose start with ``VERDICT_``; the store maps them to domain errors.
A store's marker (``loaded``) holds its load epoch: ``TIME`` when the store was first written
or last replaced. A store without one was never loaded (or lost its data) and cannot answer.
"""

# KEYS: entities, refs, version, marker. ARGV[1]: max entities; ARGV[2]: '1' if the store must
# be loaded; ARGV[3..]: root uid-keys. Walks refs breadth first (any depth) and returns
# {version, found keys, values, missing keys}; every uid returned is in both hashes or in none.
SLICE = r"""
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[4]) == 0 then
  return redis.error_reply('VERDICT_NOT_LOADED')
end
local max = tonumber(ARGV[1])
local seen, frontier, found, missing = {}, {}, {}, {}
for i = 3, #ARGV do
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
local stray = hmget(KEYS[1], missing)
for i = 1, #stray do
  if stray[i] then return redis.error_reply('VERDICT_CORRUPT entity_without_refs') end
end
local values = hmget(KEYS[1], found)
for i = 1, #found do
  if not values[i] then return redis.error_reply('VERDICT_CORRUPT refs_without_entity') end
end
local version = redis.call('GET', KEYS[3]) or '0'
return {version, found, values, missing}
"""

# KEYS: entities, refs, version, marker. ARGV[1]: channel; ARGV[2]: the version the write was
# checked at ('' for none); then (uid-key, entity JSON, refs) triples. If the store's version is
# no longer the expected one, nothing is written: VERDICT_VERSION_MOVED <current version>. The
# first write to a store without a marker starts an epoch and tells every replica to forget the
# store (whatever they cached came from data that is gone).
PUT = r"""
if ARGV[2] ~= '' then
  local current = redis.call('GET', KEYS[3]) or '0'
  if current ~= ARGV[2] then return redis.error_reply('VERDICT_VERSION_MOVED ' .. current) end
end
local v = redis.call('INCR', KEYS[3])
local fresh = redis.call('EXISTS', KEYS[4]) == 0
if fresh then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[4], t[1] .. '.' .. t[2])
end
local keys = {}
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], '{"v":' .. v .. ',"e":' .. ARGV[i + 1] .. '}')
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  keys[#keys + 1] = ARGV[i]
end
if fresh then keys = {'*'} end
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

# KEYS: entities, version, marker. ARGV: uid-keys. Returns {version, values}.
GET = r"""
if redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('VERDICT_NOT_LOADED') end
local values = {}
if #ARGV > 0 then values = redis.call('HMGET', KEYS[1], unpack(ARGV)) end
return {redis.call('GET', KEYS[2]) or '0', values}
"""

# KEYS: entities, refs, version, marker, staged entities, staged refs. ARGV[1]: channel;
# ARGV[2]: the number of entities staged. Replaces the store's data with the staged hashes in
# one step (readers see all of the old data or all of the new), frees the old data in the
# background, starts a new epoch and tells every replica to forget the store.
SWITCH = r"""
local n = tonumber(ARGV[2])
if redis.call('HLEN', KEYS[5]) ~= n or redis.call('HLEN', KEYS[6]) ~= n then
  return redis.error_reply('VERDICT_STAGE_INCOMPLETE')
end
redis.call('UNLINK', KEYS[1], KEYS[2])
if n > 0 then
  redis.call('RENAME', KEYS[5], KEYS[1])
  redis.call('RENAME', KEYS[6], KEYS[2])
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
local t = redis.call('TIME')
redis.call('SET', KEYS[4], t[1] .. '.' .. t[2])
local v = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[1], v .. '\n*')
return v
"""

# KEYS: version, marker. ARGV[1]: channel. Marks a store loaded as it is (if it was not).
MARK = r"""
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local t = redis.call('TIME')
redis.call('SET', KEYS[2], t[1] .. '.' .. t[2])
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], v .. '\n*')
return v
"""
