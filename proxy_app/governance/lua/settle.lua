-- Replace one ticket's reservation with what its request used.
-- KEYS: 1 holds, 2 reservations, 3 settled tokens, 4 their sum, 5 quota consumption of the period
-- ARGV: 1 now ms, 2 ticket id, 3 tokens used, 4 pico-USD used, 5 count tokens per minute (1/0),
--       6 count the period's consumption (1/0), 7 when the period's figures may go (ms, 0 never)
-- A ticket whose lease already ran out had its reservation taken back by an admission; its
-- usage still counts.
local tid = ARGV[2]
if redis.call('ZREM', KEYS[1], tid) == 1 then
  local r = redis.call('HGET', KEYS[2], tid)
  if r then
    local a, b = string.match(r, '^(%d+) (%d+)$')
    redis.call('HDEL', KEYS[2], tid)
    redis.call('HINCRBY', KEYS[2], '~t', '-' .. a)
    redis.call('HINCRBY', KEYS[2], '~u', '-' .. b)
  end
end
if ARGV[5] == '1' and ARGV[3] ~= '0' then
  redis.call('ZADD', KEYS[3], ARGV[1], tid .. ':' .. ARGV[3])
  redis.call('INCRBY', KEYS[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], 61000)
  redis.call('PEXPIRE', KEYS[4], 61000)
end
if ARGV[6] == '1' and (ARGV[3] ~= '0' or ARGV[4] ~= '0') then
  local fresh = redis.call('EXISTS', KEYS[5]) == 0
  redis.call('HINCRBY', KEYS[5], 'tokens', ARGV[3])
  redis.call('HINCRBY', KEYS[5], 'pico', ARGV[4])
  if fresh and ARGV[7] ~= '0' then redis.call('PEXPIREAT', KEYS[5], ARGV[7]) end
end
return 1
