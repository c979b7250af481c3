#!lua
-- Appends the events of one command to one aggregate, all or nothing.
-- KEYS[1] aggregate stream (entry ids 0-<version>), KEYS[2] partition log,
-- KEYS[3] the aggregate's state hash, KEYS[4] the command's idempotency record,
-- KEYS[5] how many of the stream's first events were archived and trimmed,
-- KEYS[6..5+p] the integration streams of the publications (same slot).
-- ARGV: 1 expected ('any' | 'none' | <version>), 2 aggregate_type, 3 aggregate_id,
--       4 metadata (JSON), 5 created_at (ms), 6 n events, 7 s state fields,
--       8 state expire-at (ms, 0 = none), 9 command id ('' = none),
--       10 command fingerprint, 11 idempotency record TTL (ms),
--       12 storage ('event_sourced' | 'state_based' | 'hybrid'),
--       13 serialized aggregate state ('' = none), 14 its schema,
--       15 p publications,
--       then s x (field, value),
--       then n x (event_id, event_type, schema_version, content_type, data, checksum, packed),
--       then p x (event_id, event_type, schema_version, content_type, data, checksum);
--       packed: the event as the partition log holds it (`event` field, see
--       event.rs: every envelope field but the version, which only this
--       script knows).
-- Storage: event_sourced writes the aggregate stream (the truth); state_based
-- writes the state hash (the truth, version-checked) and no stream; hybrid
-- writes both. The partition log gets the events in every case; each
-- publication goes to its integration stream (the outbox is this script:
-- no dual write).
-- The command's record (KEYS[4]) is one string, expiring with the TTL:
-- '<version> <log_id>...' then a newline then the fingerprint. A record
-- written before records were strings is a hash (fingerprint, result as
-- JSON) and is still read, until the last one expires (one TTL after a deploy).
-- Returns {'ok', new_version, log_id...}, {'duplicate', version, log_id...}
-- (the first result of this command id), {'mismatch'} (the command id was
-- used for a different command) or {'conflict', actual_version}.
-- The shebang makes Redis refuse the whole script up front under OOM instead
-- of failing half-way, and enforces that only the declared KEYS are touched.
local stream, log, state, cmd, trimmed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local command_id, fingerprint = ARGV[9], ARGV[10]
if command_id ~= '' then
  local seen, first, by = redis.pcall('GET', cmd), nil, nil
  if type(seen) == 'table' then
    -- WRONGTYPE: a record of the older layout (a hash).
    local old = redis.call('HMGET', cmd, 'fingerprint', 'result')
    if old[1] then by, first = old[1], cjson.decode(old[2]) end
  elseif seen then
    local nl = string.find(seen, '\n', 1, true)
    by, first = string.sub(seen, nl + 1), {'duplicate'}
    for part in string.gmatch(string.sub(seen, 1, nl - 1), '%S+') do first[#first + 1] = part end
    first[2] = tonumber(first[2])
  end
  if by then
    if by ~= fingerprint then return {'mismatch'} end
    first[1] = 'duplicate'
    return first
  end
end
local storage = ARGV[12]
local expected = ARGV[1]
local current
if storage == 'state_based' then
  current = tonumber(redis.call('HGET', state, 'version') or '0')
else
  -- Versions are contiguous from 1 (entry ids 0-1, 0-2, ...) and entries are
  -- only ever removed from the front, after archiving, with their count kept
  -- in KEYS[5]; so length + trimmed is the current version: O(1), and 4 us
  -- per append cheaper than reading the last entry (measured by allies-bench).
  -- If that invariant were ever broken, the explicit-id XADD below fails the
  -- whole script before anything is written instead of creating a wrong version.
  current = redis.call('XLEN', stream) + tonumber(redis.call('GET', trimmed) or '0')
end
if expected == 'none' then
  if current ~= 0 then return {'conflict', current} end
elseif expected ~= 'any' then
  if tonumber(expected) ~= current then return {'conflict', current} end
end
local atype, aid, meta, created = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n, s, expire_at, p = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[15])
local result = {'ok', current + n}
local first_event = 16 + 2 * s
for i = 0, n - 1 do
  local b = first_event + i * 7
  local version = string.format('%d', current + i + 1)
  -- The aggregate stream's key and entry id already say type, id and
  -- version; it keeps a field per value (what `XRANGE` shows an operator).
  if storage ~= 'state_based' then
    redis.call('XADD', stream, '0-' .. version,
      'event_id', ARGV[b], 'event_type', ARGV[b + 1], 'schema_version', ARGV[b + 2],
      'content_type', ARGV[b + 3], 'data', ARGV[b + 4], 'metadata', meta,
      'created_at', created, 'checksum', ARGV[b + 5])
  end
  -- The partition log, read by every projector twice: two values.
  result[#result + 1] = redis.call('XADD', log, '*', 'event', ARGV[b + 6], 'version', version)
end
local new_version = string.format('%d', current + n)
local first_pub = first_event + n * 7
for i = 0, p - 1 do
  local b = first_pub + i * 6
  redis.call('XADD', KEYS[6 + i], '*',
    'event_id', ARGV[b], 'event_type', ARGV[b + 1], 'schema_version', ARGV[b + 2],
    'content_type', ARGV[b + 3], 'data', ARGV[b + 4], 'metadata', meta,
    'created_at', created, 'checksum', ARGV[b + 5],
    'aggregate_type', atype, 'aggregate_id', aid, 'version', new_version)
end
if ARGV[13] ~= '' then
  redis.call('HSET', state, 'version', new_version, 'state', ARGV[13], 'schema', ARGV[14])
end
if s > 0 then
  redis.call('HSET', state, 'version', new_version, unpack(ARGV, 16, 15 + 2 * s))
end
if (s > 0 or ARGV[13] ~= '') and expire_at > 0 then redis.call('PEXPIREAT', state, expire_at) end
if command_id ~= '' then
  -- One SET with its expiry: half what a hash, its encoding and a PEXPIRE cost.
  redis.call('SET', cmd, new_version .. ' ' .. table.concat(result, ' ', 3) .. '\n' .. fingerprint, 'PX', ARGV[11])
end
return result
