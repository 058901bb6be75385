-- Admit one request against a key's limits, atomically, for every process sharing this Redis.
-- KEYS: 1 admissions (zset tid -> ms), 2 settled tokens (zset "tid:n" -> ms), 3 their sum,
--       4 holds (zset tid -> lease expiry ms), 5 reservations (hash tid -> "tokens pico", "~t", "~u"),
--       6 quota consumption of the current period (hash tokens, pico)
-- ARGV: 1 now ms, 2 ticket id, 3 rpm, 4 tpm, 5 concurrency, 6 token quota (-1 none),
--       7 budget in pico-USD (-1 none), 8 reserved tokens, 9 reserved pico-USD, 10 lease ms,
--       11 seed tokens, 12 seed pico-USD (what the usage records say of this period),
--       13 when the period's figures may go (ms since epoch, 0 never), 14 hold the ticket (1/0)
-- Returns {refusal (0 admitted; 1 concurrency, 2 rpm, 3 tpm, 4 quota, 5 budget),
--          admissions in the window, oldest admission ms, window + reserved tokens, oldest settled ms,
--          period tokens + reserved, period pico-USD + reserved}
local now = tonumber(ARGV[1])
local tid = ARGV[2]
local rpm, tpm, conc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local quota, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local rt, ru = tonumber(ARGV[8]), tonumber(ARGV[9])
local lease = tonumber(ARGV[10])
local horizon = now - 60000

local function int(n) return string.format('%.0f', n) end

-- Holds whose lease ran out belong to a process that died (or stalled): their slots and
-- reservations come back.
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
if #lapsed > 0 then
  local back_t, back_u = 0, 0
  for _, t in ipairs(lapsed) do
    local r = redis.call('HGET', KEYS[5], t)
    if r then
      local a, b = string.match(r, '^(%d+) (%d+)$')
      back_t, back_u = back_t + tonumber(a), back_u + tonumber(b)
      redis.call('HDEL', KEYS[5], t)
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('HINCRBY', KEYS[5], '~t', int(-back_t))
  redis.call('HINCRBY', KEYS[5], '~u', int(-back_u))
end
local res = redis.call('HMGET', KEYS[5], '~t', '~u')
local held_t, held_u = tonumber(res[1]) or 0, tonumber(res[2]) or 0

if conc > 0 and redis.call('ZCARD', KEYS[4]) >= conc then
  return {1, 0, 0, 0, 0, 0, 0}
end

local admitted, oldest = 0, 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
  admitted = redis.call('ZCARD', KEYS[1])
  if admitted > 0 then oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) end
  if admitted >= rpm then return {2, admitted, oldest, 0, 0, 0, 0} end
end

local window, tok_oldest = 0, 0
if tpm > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon)
  if #gone > 0 then
    local drop = 0
    for _, m in ipairs(gone) do drop = drop + tonumber(string.match(m, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
    redis.call('DECRBY', KEYS[3], int(drop))
  end
  window = (tonumber(redis.call('GET', KEYS[3])) or 0) + held_t
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] then tok_oldest = tonumber(first[2]) end
  if window >= tpm then return {3, admitted, oldest, window, tok_oldest, 0, 0} end
end

local used_t, used_u = 0, 0
if quota >= 0 or budget >= 0 then
  -- The first process to reach a period seeds it from the usage records; the rest share it.
  if redis.call('EXISTS', KEYS[6]) == 0 then
    redis.call('HSET', KEYS[6], 'tokens', ARGV[11], 'pico', ARGV[12])
    if ARGV[13] ~= '0' then redis.call('PEXPIREAT', KEYS[6], ARGV[13]) end
  end
  local q = redis.call('HMGET', KEYS[6], 'tokens', 'pico')
  used_t, used_u = (tonumber(q[1]) or 0) + held_t, (tonumber(q[2]) or 0) + held_u
  if quota >= 0 and used_t >= quota then return {4, admitted, oldest, window, tok_oldest, used_t, used_u} end
  if budget >= 0 and used_u >= budget then return {5, admitted, oldest, window, tok_oldest, used_t, used_u} end
end

if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, tid)
  redis.call('PEXPIRE', KEYS[1], 61000)
  admitted = admitted + 1
  if oldest == 0 then oldest = now end
end
if ARGV[14] == '1' then
  redis.call('ZADD', KEYS[4], now + lease, tid)
  redis.call('PEXPIRE', KEYS[4], lease * 2)
  if rt > 0 or ru > 0 then
    redis.call('HSET', KEYS[5], tid, ARGV[8] .. ' ' .. ARGV[9])
    redis.call('HINCRBY', KEYS[5], '~t', ARGV[8])
    redis.call('HINCRBY', KEYS[5], '~u', ARGV[9])
    redis.call('PEXPIRE', KEYS[5], lease * 2)
  end
end
return {0, admitted, oldest, window + rt, tok_oldest, used_t + rt, used_u + ru}
