-- Read many vector hashes in one call (keys may span slots only on a standalone Redis; the
-- client groups keys by hash slot on a cluster).
-- KEYS: vector keys. ARGV[1]: bytes per vector (4*k).
-- ARGV[2]: "" or a recovery spec "p1=e1,p2=e2": for a key already written by that pending
-- batch (o:p == e) return its before-image p:<p>/pb:<p>, so the batch is recomputed from the
-- same state it was first computed from.
-- Returns {factors blob, biases blob, flags} with flags[j] = '1' present, '0' missing,
-- 'r' present and returned from the before-image.
local vb = tonumber(ARGV[1])
local zeros_f = string.rep('\0', vb)
local zeros_b = string.rep('\0', 4)
local pending = {}
if ARGV[2] ~= '' then
  for p, e in string.gmatch(ARGV[2], '([^=,]+)=([^=,]+)') do
    pending[#pending + 1] = {p, tonumber(e)}
  end
end
local fs, bs, flags = {}, {}, {}
for j = 1, #KEYS do
  local key = KEYS[j]
  local f, b, flag = nil, nil, '1'
  for _, pe in ipairs(pending) do
    local o = redis.call('HGET', key, 'o:' .. pe[1])
    if o and tonumber(o) == pe[2] then
      f = redis.call('HGET', key, 'p:' .. pe[1])
      b = redis.call('HGET', key, 'pb:' .. pe[1])
      flag = 'r'
      break
    end
  end
  if not f then
    local v = redis.call('HMGET', key, 'f', 'b')
    f, b = v[1], v[2]
  end
  if not f or string.len(f) ~= vb then
    fs[j], bs[j], flags[j] = zeros_f, zeros_b, '0'
  else
    fs[j], bs[j], flags[j] = f, (b or zeros_b), flag
  end
end
return {table.concat(fs), table.concat(bs), table.concat(flags)}
