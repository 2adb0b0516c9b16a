-- The fenced steps of the commit protocol on one partition's checkpoint hash (KEYS[1]).
-- ARGV[1] = step: 'own' | 'intent' | 'commit'; ARGV[2] = the caller's owner token.
--   own:    take the partition (a new assignment): owner = token. Returns 1.
--   intent: ARGV[3] = batch id, ARGV[4] = last offset of the batch in this partition,
--           ARGV[5] = the batch's spec "p=e,...". Refused (0) unless owner == token.
--   commit: ARGV[3] = batch id, ARGV[4] = last offset. Refused (0) unless owner == token;
--           the offset only moves forward (2 = already there); pending fields are removed
--           only when they belong to this batch. Returns 1 when it moved.
local key, step, token = KEYS[1], ARGV[1], ARGV[2]
if step == 'own' then
  redis.call('HSET', key, 'owner', token)
  return 1
end
if redis.call('HGET', key, 'owner') ~= token then return 0 end
local last = tonumber(ARGV[4])
if step == 'intent' then
  redis.call('HSET', key, 'pending_end', last, 'pending_batch', ARGV[3], 'pending_spec', ARGV[5])
  return 1
end
local cur = tonumber(redis.call('HGET', key, 'offset') or '-1')
local moved = 2
if cur < last + 1 then
  redis.call('HSET', key, 'offset', last + 1, 'updated_at', ARGV[5] or '0')
  moved = 1
end
if redis.call('HGET', key, 'pending_batch') == ARGV[3] then
  redis.call('HDEL', key, 'pending_end', 'pending_batch', 'pending_spec')
end
return moved
