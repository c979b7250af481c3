#!lua
-- Writes a snapshot unless one at the same or a newer version (of the same
-- schema) is already there: a late writer never replaces a newer snapshot.
-- KEYS[1] snapshot hash; ARGV: version, schema, data, checksum, taken_at_ms, encoding.
local current = redis.call('HMGET', KEYS[1], 'version', 'schema')
if current[1] and current[2] == ARGV[2] and tonumber(current[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'schema', ARGV[2], 'data', ARGV[3],
  'checksum', ARGV[4], 'taken_at_ms', ARGV[5], 'encoding', ARGV[6])
return 1
