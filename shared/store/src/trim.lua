#!lua
-- Trims an aggregate stream's first events after they were archived.
-- KEYS[1] aggregate stream, KEYS[2] trimmed counter.
-- ARGV: 1 trimmed count the archive started from, 2 last archived version.
-- Refuses (returns -1) if someone trimmed meanwhile; returns entries removed.
local before = tonumber(redis.call('GET', KEYS[2]) or '0')
if before ~= tonumber(ARGV[1]) then return -1 end
local len = redis.call('XLEN', KEYS[1])
redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. string.format('%d', tonumber(ARGV[2]) + 1))
redis.call('SET', KEYS[2], ARGV[2])
return len - redis.call('XLEN', KEYS[1])
