"""Server-side Lua: a whole entity slice in one round trip, atomic writes, and bulk switches.

Errors a script raises on purpose start with ``VERDICT_``; the store maps them to domain errors.

A store is *loaded* when its marker (``loaded``) holds its epoch and both hashes carry the same
epoch in their ``epoch`` field: data that vanished (FLUSHALL, a Redis restarted empty, an
evicted or deleted hash) takes its half of the proof with it. A store that is not loaded never
answers a decision. An epoch starts with a bulk load's switch, a ``verdict entities load`` mark,
or (for ``entities_source = "writes"`` stores) the first write to a store that is not loaded.

Writes acknowledged by a master that died before its replica had them are gone after the
failover, and the next write's version passes theirs: a ``min_entity_version`` naming a lost
write would then be met by data that never held it. So each write records the master's
replication id (``master_replid``, new on every promotion and restart) in the refs hash; a write
that finds another one recorded starts a new epoch (the data kept, every replica told to forget
the store): a version from before the change is then refused as replaced, never met.

Versions never go backwards: each write's version is above the last one *and* at least the
server's ``TIME`` in microseconds, so a counter lost with its data restarts above every version
it ever handed out (one write per microsecond is beyond any Redis). An epoch's number is its
first version. Lua numbers are doubles, so versions stay below 2^53 and are formatted with
``%d`` (``tostring`` would round them).
"""

from verdict.store.redis_keys import EPOCH_FIELD, REPLID_FIELD

# Shared by every script: loaded state, next version, starting an epoch.
# KEYS of every script start with: entities, refs, version, marker.
_COMMON = r"""
local LIMIT = 9007199254740992
local EPOCH = '@EPOCH@'
local REPLID = '@REPLID@'

local function whole(text)
  if type(text) ~= 'string' or #text > 16 or not string.match(text, '^%d+$') then return nil end
  local n = tonumber(text)
  if n >= LIMIT then return nil end
  return n
end

local function fmt(n) return string.format('%d', n) end

-- 'ok', epoch, version | 'absent' (not loaded, or its data is gone) | 'bad_marker' | 'bad_version'
local function state()
  local m = redis.call('GET', KEYS[4])
  if not m then return 'absent' end
  if redis.call('HGET', KEYS[1], EPOCH) ~= m or redis.call('HGET', KEYS[2], EPOCH) ~= m then
    return 'absent'
  end
  local epoch = whole(m)
  if not epoch then return 'bad_marker' end
  local v = whole(redis.call('GET', KEYS[3]))
  if not v or v < epoch then return 'bad_version' end
  return 'ok', epoch, v
end

local function refuse(s)
  if s == 'absent' then return redis.error_reply('VERDICT_NOT_LOADED') end
  return redis.error_reply('VERDICT_CORRUPT ' .. s)
end

-- Above the last version and at least now in microseconds; nil if the counter is unusable.
-- ``lenient`` (a new epoch) starts afresh from a counter that is garbage or exhausted.
local function next_version(lenient)
  local current = redis.call('GET', KEYS[3])
  local last = whole(current)
  if (current and not last) or (last and last + 1 >= LIMIT) then
    if not lenient then return nil end
    last = 0
  end
  local t = redis.call('TIME')
  local v = math.max((last or 0) + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', KEYS[3], fmt(v))
  return v
end

-- This master's replication id ('' when INFO is not allowed: then no lineage is kept).
local function replid()
  local ok, info = pcall(redis.call, 'INFO', 'replication')
  if not ok or type(info) ~= 'string' then return '' end
  return string.match(info, 'master_replid:(%x+)') or ''
end

-- Whether the store's data was written under another replication id (a replica promoted, a
-- master restarted): writes acknowledged before may be lost. Records the current id.
local function lineage_changed()
  local id = replid()
  if id == '' then return false end
  local recorded = redis.call('HGET', KEYS[2], REPLID)
  redis.call('HSET', KEYS[2], REPLID, id)
  return recorded ~= false and recorded ~= id
end

-- A new epoch: its number is its first version, in the marker and in both hashes.
local function start_epoch()
  local v = next_version(true)
  redis.call('SET', KEYS[4], fmt(v))
  redis.call('HSET', KEYS[1], EPOCH, fmt(v))
  redis.call('HSET', KEYS[2], EPOCH, fmt(v))
  lineage_changed()
  return v
end
"""


def _script(body: str) -> str:
    return _COMMON.replace("@EPOCH@", EPOCH_FIELD).replace("@REPLID@", REPLID_FIELD) + body


# KEYS: entities, refs, version, marker. The store's state: {'ok'|'absent'|'bad_…', epoch}.
STATE = _script(r"""
local s, epoch = state()
return {s, epoch or 0}
""")

# KEYS: entities, refs, version, marker. ARGV[1]: max entities; ARGV[2]: '1' if the store must
# be loaded; ARGV[3]: max bytes; ARGV[4]: max values; ARGV[5..]: root uid-keys. Walks refs
# breadth first (any depth) and returns {version, found keys, values, missing keys, epoch};
# every uid returned is in both hashes or in none. Epoch 0: the store is not loaded (only when
# ARGV[2] allowed it). Bytes and values are those of the entity JSON inside each stored
# '{"v":<n>,"e":<json>}', counted as verdict.store.weight counts them (bytes, and the '[', '{',
# ',' and ':' characters); a slice over a limit is refused as soon as it is seen (values are
# read 100 at a time, so a slice of huge entities is not copied whole first).
SLICE = _script(r"""
local s, epoch, version = state()
if s ~= 'ok' then
  if ARGV[2] == '1' then return refuse(s) end
  epoch, version = 0, whole(redis.call('GET', KEYS[3])) or 0
end
local max, maxbytes, maxvalues = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local seen, frontier, found, missing = {}, {}, {}, {}
for i = 5, #ARGV do
  local k = ARGV[i]
  if not seen[k] then seen[k] = true; frontier[#frontier + 1] = k end
end
local function hmget(key, fields, from, to)
  local out = {}
  for start = from, to, 1000 do
    local chunk = {}
    for j = start, math.min(start + 999, to) do chunk[#chunk + 1] = fields[j] end
    local part = redis.call('HMGET', key, unpack(chunk))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
while #frontier > 0 do
  local refs = hmget(KEYS[2], frontier, 1, #frontier)
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
local stray = hmget(KEYS[1], missing, 1, #missing)
for i = 1, #stray do
  if stray[i] then return redis.error_reply('VERDICT_CORRUPT entity_without_refs') end
end
local values, bytes, count = {}, 0, 0
for start = 1, #found, 100 do
  local part = hmget(KEYS[1], found, start, math.min(start + 99, #found))
  for j = 1, #part do
    local v = part[j]
    if not v then return redis.error_reply('VERDICT_CORRUPT refs_without_entity') end
    local at = string.find(v, ',"e":', 1, true)
    if not at then return redis.error_reply('VERDICT_CORRUPT bad_value') end
    bytes = bytes + #v - at - 5
    if bytes > maxbytes then return redis.error_reply('VERDICT_SLICE_TOO_LARGE') end
    -- '{"v":<n>,"e":' holds 4 of the counted characters; they are not the entity's.
    local _, n = string.gsub(v, '[%[{,:]', '')
    count = count + n - 4
    if count > maxvalues then return redis.error_reply('VERDICT_SLICE_TOO_LARGE') end
    values[#values + 1] = v
  end
end
return {version, found, values, missing, epoch}
""")

# KEYS: entities, refs, version, marker. ARGV[1]: channel; ARGV[2]: '1' if only a load may
# mark the store loaded; ARGV[3]: the version the write was checked at ('' for none); then
# (uid-key, entity JSON, refs) triples. A write to a store that is not loaded is refused, or
# (ARGV[2] '0') starts an epoch and tells every replica to forget the store (whatever they
# cached came from data that is gone). If the store's version is no longer the expected one,
# nothing is written: VERDICT_VERSION_MOVED <current version>.
PUT = _script(r"""
local s = state()
local fresh = s ~= 'ok'
if fresh and (s ~= 'absent' or ARGV[2] == '1') then return refuse(s) end
if ARGV[3] ~= '' then
  local current = redis.call('GET', KEYS[3]) or '0'
  if current ~= ARGV[3] then return redis.error_reply('VERDICT_VERSION_MOVED ' .. current) end
end
-- Loaded, but written under another replication id: writes may be lost, a new epoch.
if not fresh and lineage_changed() then fresh = true end
local v
if fresh then v = start_epoch() else v = next_version(false) end
if not v then return refuse('bad_version') end
local keys = {}
for i = 4, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], '{"v":' .. fmt(v) .. ',"e":' .. ARGV[i + 1] .. '}')
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  keys[#keys + 1] = ARGV[i]
end
if fresh then keys = {'*'} end
redis.call('PUBLISH', ARGV[1], fmt(v) .. '\n' .. table.concat(keys, '\n'))
return v
""")

# KEYS: entities, refs, version, marker. ARGV[1]: channel; ARGV[2]: '1' if the store must be
# loaded; ARGV[3..]: uid-keys to delete. Deleting from nothing does not make a store loaded.
DELETE = _script(r"""
local s = state()
if s ~= 'ok' and (s ~= 'absent' or ARGV[2] == '1') then return refuse(s) end
-- Loaded, but written under another replication id: writes may be lost, a new epoch.
local renewed = s == 'ok' and lineage_changed()
local v
if renewed then v = start_epoch() else v = next_version(s ~= 'ok') end
if not v then return refuse('bad_version') end
local deleted = 0
local keys = {}
for i = 3, #ARGV do
  deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  keys[#keys + 1] = ARGV[i]
end
if renewed then keys = {'*'} end
redis.call('PUBLISH', ARGV[1], fmt(v) .. '\n' .. table.concat(keys, '\n'))
return {v, deleted}
""")

# KEYS: entities, refs, version, marker. ARGV: uid-keys. Returns {version, values}.
GET = _script(r"""
local s, epoch, version = state()
if s ~= 'ok' then return refuse(s) end
local values = {}
if #ARGV > 0 then values = redis.call('HMGET', KEYS[1], unpack(ARGV)) end
return {version, values}
""")

# KEYS: entities, refs, version, marker, staged entities, staged refs. ARGV[1]: channel;
# ARGV[2]: the number of entities staged. Replaces the store's data with the staged hashes in
# one step (readers see all of the old data or all of the new), frees the old data in the
# background, starts a new epoch and tells every replica to forget the store.
SWITCH = _script(r"""
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
local v = start_epoch()
redis.call('PUBLISH', ARGV[1], fmt(v) .. '\n*')
return v
""")

# KEYS: entities, refs, version, marker. ARGV[1]: channel. Declares the store's data complete
# as it is, if it is not loaded (a garbage marker or counter included): a new epoch.
MARK = _script(r"""
if state() == 'ok' then return 0 end
local v = start_epoch()
redis.call('PUBLISH', ARGV[1], fmt(v) .. '\n*')
return v
""")

# KEYS: entities, refs, version, marker. ARGV: (uid-key, the stored entity value, refs) triples,
# refs newline-joined and computed from that value. Adds to each uid's stored refs list the refs
# it lacks, only while the entity is still that value (a write since brought its own list):
# read-repair of lists written before a reference spelling was counted. A list only ever grows,
# so a replica computing fewer refs than another never takes any away. Returns the lists grown.
REPAIR_REFS = _script(r"""
local grown = 0
for i = 1, #ARGV, 3 do
  local stored = redis.call('HGET', KEYS[2], ARGV[i])
  if stored and redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    local have, added = {}, {}
    for ref in string.gmatch(stored, '[^\n]+') do have[ref] = true end
    for ref in string.gmatch(ARGV[i + 2], '[^\n]+') do
      if not have[ref] then have[ref] = true; added[#added + 1] = ref end
    end
    if #added > 0 then
      local joined = table.concat(added, '\n')
      if stored ~= '' then joined = stored .. '\n' .. joined end
      redis.call('HSET', KEYS[2], ARGV[i], joined)
      grown = grown + 1
    end
  end
end
return grown
""")
