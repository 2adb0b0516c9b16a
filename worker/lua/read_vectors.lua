-- Read many vector hashes in one call (keys may span slots only on a standalone Redis; the
-- client groups keys by hash slot on a cluster).
-- KEYS: vector keys. ARGV[1]: bytes per vector (4*k).
-- ARGV[2]: "" or the id of a pending batch being recovered: for a key that batch already
-- wrote (bid == id) return its before-image bf/bb, so the batch is recomputed from the same
-- state it was first computed from.
-- Returns {factors blob, biases blob, flags} with flags[j] = '1' present, '0' missing,
-- 'r' present and returned from the before-image.
local vb = tonumber(ARGV[1])
local zeros_f = string.rep('\0', vb)
local zeros_b = string.rep('\0', 4)
local recovering = ARGV[2]
local fs, bs, flags = {}, {}, {}
for j = 1, #KEYS do
  local key = KEYS[j]
  local v
  local flag = '1'
  if recovering ~= '' then
    v = redis.call('HMGET', key, 'bid', 'bf', 'bb', 'f', 'b')
    if v[1] == recovering and v[2] then
      v = {v[2], v[3]}
      flag = 'r'
    else
      v = {v[4], v[5]}
    end
  else
    v = redis.call('HMGET', key, 'f', 'b')
  end
  local f, b = v[1], v[2]
  if not f or string.len(f) ~= vb then
    fs[j], bs[j], flags[j] = zeros_f, zeros_b, '0'
  else
    fs[j], bs[j], flags[j] = f, (b or zeros_b), flag
  end
end
return {table.concat(fs), table.concat(bs), table.concat(flags)}
