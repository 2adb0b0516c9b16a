-- Apply one batch's new vector states, idempotently and without losing concurrent updates.
-- KEYS[1..N]: vector keys; KEYS[N+1..N+M]: seen-hash keys (same hash slot as their user key).
-- ARGV[1]: a msgpack array (decoded in C by cmsgpack, so a batch costs a few arguments, not
-- one per event):
--   1 N             number of vector keys
--   2 names         state fields, e.g. {'f', 'b'}: each a float32 blob of a fixed width
--   3 widths        bytes per key of each field
--   4 ends          flat {p1, e1, p2, e2, ...}: partitions of the batch and their end offsets
--   5 tags          flat partitions whose events touched the keys ...
--   6 tag_starts    ... key j's are tags[tag_starts[j] .. tag_starts[j+1]-1] (N+1 entries)
--   7 counts        per key event-count increment of the count field ({} for none)
--   8 seen_mode     'set' | 'incr'
--   9 seen_index    flat {j1, c1, j2, c2, ...}: seen key s belongs to vector key j_s, c_s pairs
--  10 seen_pairs    flat {item, value, item, value, ...}
--  11 batch id
--  12 field names {offset prefix 'o:', before-image prefix 'b', batch field 'bid', count
--     field 'n'} (worker/stores/redis/keys.py is their one home)
-- ARGV[2f], ARGV[2f+1]: field f's expected blob (what the batch was computed from), new blob.
-- Per key: the batch is already applied if o:<p> >= e for its partitions (all of them are set
-- together, so the first decides). Otherwise, for each field: if the stored value still equals
-- the expected one, store the new one exactly; if another worker changed the key meanwhile, add
-- our delta (new - expected) to what is stored, so neither update is lost. No before-image is
-- kept on the key (key format 2): the batch's intent carries the before-state of every key it
-- writes (a blob beside its checkpoint: RedisKeys.pending_before), and a recovery reads it.
-- Returns the number of keys written.
local h = cmsgpack.unpack(ARGV[1])
local n, names, widths, ends_flat = h[1], h[2], h[3], h[4]
local tags, tstart, counts, smode = h[5], h[6], h[7], h[8]
local sidx, spairs, batch = h[9], h[10], h[11]
local OFFSET, BEFORE, BATCH, COUNT = h[12][1], h[12][2], h[12][3], h[12][4]
local nf = #names

local ends, okey = {}, {}
for t = 1, #ends_flat, 2 do
  ends[ends_flat[t]] = ends_flat[t + 1]
  okey[ends_flat[t]] = OFFSET .. ends_flat[t]
end
-- HMGET o:<first partition>, field 1, field 2, ...
local none = OFFSET .. '-'  -- a field that never exists
local hm = {none}
for f = 1, nf do hm[f + 1] = names[f] end

local function add_delta(cur, new, exp, m)
  local out = {}
  for t = 0, m - 1 do
    local c = struct.unpack('<f', cur, 4 * t + 1)
    local a = struct.unpack('<f', new, 4 * t + 1)
    local b = struct.unpack('<f', exp, 4 * t + 1)
    out[t + 1] = struct.pack('<f', c + (a - b))
  end
  return table.concat(out)
end

local written = {}
local nwritten = 0
for j = 1, n do
  local key = KEYS[j]
  local t0, t1 = tstart[j], tstart[j + 1] - 1
  local first = nil
  for t = t0, t1 do  -- the first tag that is a partition of this batch
    if ends[tags[t]] then first = tags[t]; break end
  end
  hm[1] = first and okey[first] or none
  local cur = redis.call('HMGET', key, unpack(hm))
  local done = first ~= nil and cur[1] and tonumber(cur[1]) >= ends[first]
  if not done then
    local fields = {}
    for f = 1, nf do
      local w = widths[f]
      local exp = string.sub(ARGV[2 * f], (j - 1) * w + 1, j * w)
      local out = string.sub(ARGV[2 * f + 1], (j - 1) * w + 1, j * w)
      local c = cur[f + 1]
      if c and c ~= exp and string.len(c) == w then out = add_delta(c, out, exp, w / 4) end
      fields[#fields + 1] = names[f]
      fields[#fields + 1] = out
    end
    if first then
      for t = t0, t1 do
        local p = tags[t]
        if ends[p] then
          fields[#fields + 1] = okey[p]
          fields[#fields + 1] = ends[p]
        end
      end
    end
    redis.call('HSET', key, unpack(fields))
    local c = counts[j]
    if c and c ~= 0 then redis.call('HINCRBY', key, COUNT, c) end
    written[j] = true
    nwritten = nwritten + 1
  end
end

local pos = 1
for s = 1, #sidx / 2 do
  local j, cnt = sidx[2 * s - 1], sidx[2 * s]
  if written[j] then
    local skey = KEYS[n + s]
    if smode == 'incr' then
      for t = 0, cnt - 1 do
        redis.call('HINCRBYFLOAT', skey, spairs[pos + 2 * t], spairs[pos + 2 * t + 1])
      end
    elseif cnt == 1 then
      redis.call('HSET', skey, spairs[pos], spairs[pos + 1])
    else
      for c0 = 0, cnt - 1, 1000 do  -- unpack() is bounded by the Lua C stack
        local slice = {}
        for t = c0, math.min(cnt, c0 + 1000) - 1 do
          slice[#slice + 1] = spairs[pos + 2 * t]
          slice[#slice + 1] = spairs[pos + 2 * t + 1]
        end
        redis.call('HSET', skey, unpack(slice))
      end
    end
  end
  pos = pos + 2 * cnt
end
return nwritten
