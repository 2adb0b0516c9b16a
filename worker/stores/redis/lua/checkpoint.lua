-- The fenced steps of the commit protocol on one partition's checkpoint hash (KEYS[1]).
-- ARGV[1] = step: 'own' | 'intent' | 'commit'; ARGV[2] = the caller's owner token.
--   own:    take the partition (a new assignment): owner = token. Returns 1.
--   intent: ARGV[3] = batch id, ARGV[4] = last offset of the batch in this partition,
--           ARGV[5] = the batch's spec "p=e,...", ARGV[6] = the caller's position (the next
--           offset it believes unapplied: where this batch starts).
--   commit: ARGV[3] = batch id, ARGV[4] = last offset, ARGV[5] = updated_at, ARGV[6] = the
--           caller's position. Pending fields are removed only when they belong to this batch.
-- Replies (worker/runtime/commit.py StepReply):
--   1 done;
--   2 already there: this batch's commit is stored (a batch sent again after its replies
--     were lost), nothing changed;
--   0 fenced: another owner holds the partition;
--   3 regressed: the stored checkpoint is behind the caller's position, or the partition's
--     owner is gone. Checkpoints only ever move forward, so this means Redis went back in
--     time (a restart from an older RDB/AOF, a promoted replica, a wipe): the caller must
--     stop writing this partition and reposition at what is stored. Checked before the
--     owner, since a regressed owner field is as old as the rest.
local key, step, token = KEYS[1], ARGV[1], ARGV[2]
if step == 'own' then
  redis.call('HSET', key, 'owner', token)
  return 1
end
local owner = redis.call('HGET', key, 'owner')
local cur = tonumber(redis.call('HGET', key, 'offset') or '0')
local last, position = tonumber(ARGV[4]), tonumber(ARGV[6])
if not owner or cur < position then return 3 end
if owner ~= token then return 0 end
if cur == last + 1 then return 2 end
if cur ~= position then return 3 end
if step == 'intent' then
  redis.call('HSET', key, 'pending_end', last, 'pending_batch', ARGV[3], 'pending_spec', ARGV[5])
  return 1
end
redis.call('HSET', key, 'offset', last + 1, 'updated_at', ARGV[5])
if redis.call('HGET', key, 'pending_batch') == ARGV[3] then
  redis.call('HDEL', key, 'pending_end', 'pending_batch', 'pending_spec')
end
return 1
