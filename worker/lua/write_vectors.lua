-- Apply one batch's new vectors, idempotently and without losing concurrent updates.
-- KEYS[1..N]: vector keys; KEYS[N+1..N+M]: seen-hash keys (same hash slot as their user key).
-- ARGV[1]=N  ARGV[2]=bytes per vector  ARGV[3]="p1=e1,p2=e2" partitions/end offsets of the batch
-- ARGV[4]=expected factors blob (what the batch was computed from)  ARGV[5]=new factors blob
-- ARGV[6]=expected biases blob  ARGV[7]=new biases blob  ARGV[8]=count increments "c1,c2,..."
-- ARGV[9]=per key, the partitions whose events touched it in this batch "p1|p2,p3,..."
-- ARGV[10]=seen mode 'set'|'incr'  ARGV[11]=M, then per seen key: vector index j, count n,
-- then n (item id, value) pairs.  ARGV[last]=batch id.
-- Per key: the batch is already applied if o:<p> >= e for its partitions (all of them are set
-- together, so the first decides). Otherwise, if the stored factors still equal the expected
-- ones, store the new ones exactly; if another worker changed the key meanwhile, add our delta
-- (new - expected) to what is stored, so neither update is lost. One before-image (bf/bb, with
-- the batch id in bid) is kept per key for crash recovery, whatever the partition count.
-- Returns the number of keys written.
local n = tonumber(ARGV[1])
local vb = tonumber(ARGV[2])
local k = vb / 4
local ends = {}
for p, e in string.gmatch(ARGV[3], '([^=,]+)=([^=,]+)') do
  ends[p] = tonumber(e)
end
local tags = {}
for t in string.gmatch(ARGV[9], '([^,]+)') do tags[#tags + 1] = t end
local counts = {}
for c in string.gmatch(ARGV[8], '([^,]+)') do counts[#counts + 1] = tonumber(c) end
local batch = ARGV[#ARGV]

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
  local parts = {}
  for p in string.gmatch(tags[j] or '', '([^|]+)') do
    if ends[p] then parts[#parts + 1] = p end
  end
  local done = false
  if #parts > 0 then
    local o = redis.call('HGET', key, 'o:' .. parts[1])
    done = o and tonumber(o) >= ends[parts[1]]
  end
  if not done then
    local exp_f = string.sub(ARGV[4], (j - 1) * vb + 1, j * vb)
    local new_f = string.sub(ARGV[5], (j - 1) * vb + 1, j * vb)
    local exp_b = string.sub(ARGV[6], (j - 1) * 4 + 1, j * 4)
    local new_b = string.sub(ARGV[7], (j - 1) * 4 + 1, j * 4)
    local cur = redis.call('HMGET', key, 'f', 'b')
    local out_f, out_b = new_f, new_b
    if cur[1] and cur[1] ~= exp_f and string.len(cur[1]) == vb then
      out_f = add_delta(cur[1], new_f, exp_f, k)
    end
    if cur[2] and cur[2] ~= exp_b and string.len(cur[2]) == 4 then
      out_b = add_delta(cur[2], new_b, exp_b, 1)
    end
    if #parts > 0 then
      local fields = {'f', out_f, 'b', out_b, 'bf', exp_f, 'bb', exp_b, 'bid', batch}
      for _, p in ipairs(parts) do
        fields[#fields + 1] = 'o:' .. p
        fields[#fields + 1] = ends[p]
      end
      redis.call('HSET', key, unpack(fields))
    else
      redis.call('HSET', key, 'f', out_f, 'b', out_b)
    end
    if counts[j] and counts[j] ~= 0 then redis.call('HINCRBY', key, 'n', counts[j]) end
    written[j] = true
    nwritten = nwritten + 1
  end
end

local mode = ARGV[10]
local m = tonumber(ARGV[11])
local pos = 12
for s = 1, m do
  local j = tonumber(ARGV[pos]); local cnt = tonumber(ARGV[pos + 1]); pos = pos + 2
  if written[j] then
    local skey = KEYS[n + s]
    for t = 0, cnt - 1 do
      local item, val = ARGV[pos + 2 * t], ARGV[pos + 2 * t + 1]
      if mode == 'incr' then redis.call('HINCRBYFLOAT', skey, item, val)
      else redis.call('HSET', skey, item, val) end
    end
  end
  pos = pos + 2 * cnt
end
return nwritten
