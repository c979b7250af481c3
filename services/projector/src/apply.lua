#!lua
-- Applies one event's change to one read-model hash, at most once.
-- KEYS[1] read model; ARGV[1] the event's aggregate version; ARGV[2] s, the
-- number of fields to set; then s field/value pairs; then fields to delete.
-- Writes only if the version is newer than the one the read model reflects,
-- so a redelivered or replayed entry changes nothing. Returns 1 if applied,
-- 2 if the model is already at exactly this version (the redelivery of the
-- latest event: its index writes may be redone), 0 if it is newer.
local current = tonumber(redis.call('HGET', KEYS[1], '_version') or '0')
local version = tonumber(ARGV[1])
if version < current then return 0 end
if version == current then return 2 end
local s = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], '_version', ARGV[1], unpack(ARGV, 3, 2 + 2 * s))
if #ARGV > 2 + 2 * s then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 3 + 2 * s))
end
return 1
