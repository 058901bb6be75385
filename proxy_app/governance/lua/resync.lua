-- Add what one key used on local limits while Redis was away.
-- KEYS: 1 settled tokens, 2 their sum, 3 quota consumption of the period
-- ARGV: 1 now ms, 2 entry id, 3 tokens within the last minute, 4 period tokens, 5 period pico-USD
-- A period Redis no longer holds (it restarted empty) is seeded afresh from the usage records,
-- which already hold these figures: it is left alone.
if ARGV[3] ~= '0' then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
  redis.call('INCRBY', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 61000)
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'pico', ARGV[5])
end
return 1
