#!lua
-- One event's changes, all at once, on a single Redis (on a Cluster the
-- model keys and the index keys live in different slots: apply.lua per
-- model, then the index writes one by one).
-- KEYS: the read models, then one key per index write.
-- ARGV[1] m, the number of models; then per model: its event's aggregate
-- version, s (fields to set), d (fields to delete), s field/value pairs, d
-- fields; then per index write: an op and its arguments (hset field value,
-- hdel field, zadd score member, zrem member, sadd member, srem member).
-- A model is written only if the version is newer than the one it reflects;
-- the index writes are made if any model was written or already at exactly
-- this version (or there is no model): an older event redelivered moves no
-- index back. Returns how many models were written or already there.
local m = tonumber(ARGV[1])
local a = 2
local written = 0
for i = 1, m do
  local version = tonumber(ARGV[a])
  local s = tonumber(ARGV[a + 1])
  local d = tonumber(ARGV[a + 2])
  local current = tonumber(redis.call('HGET', KEYS[i], '_version') or '0')
  if version > current then
    redis.call('HSET', KEYS[i], '_version', ARGV[a], unpack(ARGV, a + 3, a + 2 + 2 * s))
    if d > 0 then
      redis.call('HDEL', KEYS[i], unpack(ARGV, a + 3 + 2 * s, a + 2 + 2 * s + d))
    end
    written = written + 1
  elseif version == current then
    written = written + 1
  end
  a = a + 3 + 2 * s + d
end
if m > 0 and written == 0 then return 0 end
local k = m + 1
while a <= #ARGV do
  local op = ARGV[a]
  if op == 'hset' then
    redis.call('HSET', KEYS[k], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  elseif op == 'zadd' then
    redis.call('ZADD', KEYS[k], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  elseif op == 'hdel' or op == 'zrem' or op == 'sadd' or op == 'srem' then
    redis.call(op, KEYS[k], ARGV[a + 1])
    a = a + 2
  else
    return redis.error_reply('unknown index op ' .. tostring(op))
  end
  k = k + 1
end
return written
