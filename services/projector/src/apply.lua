#!lua
-- Applies one event to one read-model hash, at most once.
-- KEYS[1] read model; ARGV[1] the event's aggregate version; ARGV[2..] field/value pairs.
-- Writes only if the version is newer than the one the read model reflects,
-- so a redelivered or replayed entry changes nothing. Returns 1 if applied.
local current = tonumber(redis.call('HGET', KEYS[1], '_version') or '0')
local version = tonumber(ARGV[1])
if version <= current then return 0 end
redis.call('HSET', KEYS[1], '_version', ARGV[1], unpack(ARGV, 2))
return 1
