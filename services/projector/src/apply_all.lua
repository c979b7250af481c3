#!lua
-- Events' changes, in log order, all at once on a single Redis (on a
-- Cluster the model keys and the index keys live in different slots:
-- apply.lua per model, then the index writes one by one).
-- KEYS: per event, its read models, then one key per index write.
-- ARGV[1] e, the number of events; then per event: m (models) and x
-- (index writes), then per model: its event's aggregate version, s (fields
-- to set), d (fields to delete), s field/value pairs, d fields; then per
-- index write: an op and its arguments (hset field value, hdel field,
-- zadd score member, zrem member, sadd member, srem member).
-- A model is written only if the version is newer than the one it
-- reflects; an event's index writes are made if any of its models was
-- written or already at exactly this version (or it has no model): an
-- older event redelivered moves no index back. Each event is decided on
-- its own, after the ones before it. Returns how many models were written
-- or already there.
--
-- Index writes are gathered per key and sent as one command per run of
-- the same op on that key (a read of 128 registrations: 4 HSET/ZADD
-- commands of 128 members each, not 512 commands): a key's writes keep
-- their order (another op on the key, or a model write to it, sends what
-- was gathered first), writes to different keys commute, and a
-- multi-member HSET/ZADD/SADD/... applies its members in order, so every
-- key ends as it would write by write. Nothing here reads an index key.
local MAX_ARGS = 1024 -- members and values gathered per command at most
local pending = {} -- index key -> { op, arguments }
local order = {} -- index keys with something gathered, first-gathered first

local function send(key)
  local p = pending[key]
  if p then
    redis.call(p[1], key, unpack(p[2]))
    pending[key] = nil
  end
end

local function gather(op, key, a1, a2)
  local p = pending[key]
  if p and (p[1] ~= op or #p[2] >= MAX_ARGS) then
    send(key)
    p = nil
  end
  if not p then
    p = { op, {} }
    pending[key] = p
    order[#order + 1] = key
  end
  local args = p[2]
  args[#args + 1] = a1
  if a2 then
    args[#args + 1] = a2
  end
end

local e = tonumber(ARGV[1])
local a = 2
local k = 1
local total = 0
for _ = 1, e do
  local m = tonumber(ARGV[a])
  local x = tonumber(ARGV[a + 1])
  a = a + 2
  local written = 0
  for _ = 1, m do
    local version = tonumber(ARGV[a])
    local s = tonumber(ARGV[a + 1])
    local d = tonumber(ARGV[a + 2])
    send(KEYS[k])
    local current = tonumber(redis.call('HGET', KEYS[k], '_version') or '0')
    if version > current then
      redis.call('HSET', KEYS[k], '_version', ARGV[a], unpack(ARGV, a + 3, a + 2 + 2 * s))
      if d > 0 then
        redis.call('HDEL', KEYS[k], unpack(ARGV, a + 3 + 2 * s, a + 2 + 2 * s + d))
      end
      written = written + 1
    elseif version == current then
      written = written + 1
    end
    a = a + 3 + 2 * s + d
    k = k + 1
  end
  local indexes = m == 0 or written > 0
  for _ = 1, x do
    local op = ARGV[a]
    local n
    if op == 'hset' or op == 'zadd' then
      n = 3
    elseif op == 'hdel' or op == 'zrem' or op == 'sadd' or op == 'srem' then
      n = 2
    else
      return redis.error_reply('unknown index op ' .. tostring(op))
    end
    if indexes then
      if n == 3 then
        gather(op, KEYS[k], ARGV[a + 1], ARGV[a + 2])
      else
        gather(op, KEYS[k], ARGV[a + 1])
      end
    end
    a = a + n
    k = k + 1
  end
  total = total + written
end
for _, key in ipairs(order) do
  send(key)
end
return total
