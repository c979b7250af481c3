#!lua
-- Swaps a rebuilt full stream in for a trimmed one, if nothing was appended
-- since it was built. KEYS[1] aggregate stream, KEYS[2] rebuilt stream,
-- KEYS[3] trimmed counter. ARGV[1] the version the rebuilt stream ends at.
local current = redis.call('XLEN', KEYS[1]) + tonumber(redis.call('GET', KEYS[3]) or '0')
if current ~= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('DEL', KEYS[3])
return 1
