-- Read many vector hashes in one call (keys may span slots only on a standalone Redis; the
-- client groups keys by hash slot on a cluster).
-- KEYS: vector keys. ARGV[1]: "" or the id of a pending batch being recovered: for a key that
-- batch already wrote (batch field == id) return its before-images (prefix .. name), so the
-- batch is recomputed from the same state it was first computed from.
-- ARGV[2], ARGV[3]: the batch field ('bid') and the before-image prefix ('b') (worker/stores/redis/keys.py).
-- ARGV[2k+2], ARGV[2k+3]: state field name and its width in bytes, e.g. 'f', '256', 'b', '4'.
-- Returns {blob of field 1, blob of field 2, ..., flags} with flags[j] = '1' present,
-- '0' missing (its blobs are zeros), 'r' present and returned from the before-image. A key
-- is present when its first field has the right width; a missing later field reads as zeros.
local recovering, BATCH, BEFORE = ARGV[1], ARGV[2], ARGV[3]
local names, widths, zeros, out = {}, {}, {}, {}
for t = 4, #ARGV, 2 do
  local f = #names + 1
  names[f] = ARGV[t]
  widths[f] = tonumber(ARGV[t + 1])
  zeros[f] = string.rep('\0', widths[f])
  out[f] = {}
end
local nf = #names
local hm = {}
if recovering ~= '' then
  hm[1] = BATCH
  for f = 1, nf do hm[1 + f] = BEFORE .. names[f]; hm[1 + nf + f] = names[f] end
else
  for f = 1, nf do hm[f] = names[f] end
end
local flags = {}
for j = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[j], unpack(hm))
  local base, flag = 0, '1'
  if recovering ~= '' then
    if v[1] == recovering and v[2] then base, flag = 1, 'r' else base = 1 + nf end
  end
  local first = v[base + 1]
  if not first or string.len(first) ~= widths[1] then
    for f = 1, nf do out[f][j] = zeros[f] end
    flags[j] = '0'
  else
    for f = 1, nf do
      local x = v[base + f]
      if not x or string.len(x) ~= widths[f] then x = zeros[f] end
      out[f][j] = x
    end
    flags[j] = flag
  end
end
local res = {}
for f = 1, nf do res[f] = table.concat(out[f]) end
res[nf + 1] = table.concat(flags)
return res
