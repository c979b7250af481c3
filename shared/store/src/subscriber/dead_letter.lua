#!lua
-- Moves one pending entry to the dead-letter stream and acks it, atomically:
-- a crash can neither lose it nor leave it in both places.
-- KEYS[1] the stream it was read from, KEYS[2] dead-letter stream (same slot).
-- ARGV: group, entry id, handler, error, attempts, now (ms).
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
local fields = found[1][2]
local n = #fields
fields[n + 1], fields[n + 2] = 'dlq_entry', ARGV[2]
fields[n + 3], fields[n + 4] = 'dlq_group', ARGV[1]
fields[n + 5], fields[n + 6] = 'dlq_handler', ARGV[3]
fields[n + 7], fields[n + 8] = 'dlq_error', ARGV[4]
fields[n + 9], fields[n + 10] = 'dlq_attempts', ARGV[5]
fields[n + 11], fields[n + 12] = 'dlq_at', ARGV[6]
fields[n + 13], fields[n + 14] = 'dlq_stream', KEYS[1]
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
