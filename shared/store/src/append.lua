#!lua
-- Appends the events of one command to one aggregate, all or nothing.
-- KEYS[1] aggregate stream (entry ids 0-<version>), KEYS[2] partition log,
-- KEYS[3] the aggregate's state hash (written only when state fields are given).
-- ARGV: expected ('any' | 'none' | <version>), aggregate_type, aggregate_id,
--       metadata (JSON), created_at (ms), n events, s state fields,
--       state expire-at (ms, 0 = none), s x (field, value),
--       then n x (event_id, event_type, schema_version, content_type, data).
-- Returns {'ok', new_version, log_id...} or {'conflict', actual_version}.
-- The shebang makes Redis refuse the whole script up front under OOM instead
-- of failing half-way, and enforces that only the declared KEYS are touched.
local stream, log, state = KEYS[1], KEYS[2], KEYS[3]
local expected = ARGV[1]
local current = 0
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #last > 0 then
  local seq = string.match(last[1][1], '^0%-(%d+)$')
  if not seq then
    return redis.error_reply('ES_CORRUPT stream ' .. stream .. ' has a foreign entry id ' .. last[1][1])
  end
  current = tonumber(seq)
end
if expected == 'none' then
  if current ~= 0 then return {'conflict', current} end
elseif expected ~= 'any' then
  if tonumber(expected) ~= current then return {'conflict', current} end
end
local atype, aid, meta, created = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n, s, expire_at = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local result = {'ok', current + n}
local first_event = 9 + 2 * s
for i = 0, n - 1 do
  local b = first_event + i * 5
  local version = string.format('%d', current + i + 1)
  local fields = {
    'event_id', ARGV[b], 'event_type', ARGV[b + 1],
    'aggregate_type', atype, 'aggregate_id', aid, 'version', version,
    'schema_version', ARGV[b + 2], 'content_type', ARGV[b + 3], 'data', ARGV[b + 4],
    'metadata', meta, 'created_at', created,
  }
  redis.call('XADD', stream, '0-' .. version, unpack(fields))
  result[#result + 1] = redis.call('XADD', log, '*', unpack(fields))
end
if s > 0 then
  redis.call('HSET', state, 'version', string.format('%d', current + n), unpack(ARGV, 9, 8 + 2 * s))
  if expire_at > 0 then redis.call('PEXPIREAT', state, expire_at) end
end
return result
