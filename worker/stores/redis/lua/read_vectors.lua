-- Read many vector hashes in one call (keys may span slots only on a standalone Redis; the
-- client groups keys by hash slot on a cluster).
-- KEYS: vector keys.
-- ARGV[1]: "" or the id of a pending batch being recovered (format 1 keys only: for a key that
--   batch wrote, batch field == id, return its before-images, prefix .. name).
-- ARGV[2], ARGV[3]: the batch field ('bid') and the before-image prefix ('b').
-- ARGV[4]: "" or the recovered batch's ends, flat "p1,e1,p2,e2,...": a key whose offset field
--   (ARGV[5] .. p, 'o:<p>') equals e for one of them was written by that batch; it is flagged
--   'w' and the caller takes its before-state from the batch's intent (format 2).
-- ARGV[5]: the offset field prefix ('o:'). (Every name comes from worker/stores/redis/keys.py.)
-- ARGV[2k+4], ARGV[2k+5] (k >= 1): state field name and its width in bytes, e.g. 'f', '256'.
-- Returns {blob of field 1, blob of field 2, ..., flags} with flags[j] = '1' present,
-- '0' missing (its blobs are zeros), 'r' present and returned from the before-image, 'w'
-- present and written by the recovered batch. A key is present when its first field has the
-- right width; a missing later field reads as zeros.
local recovering, BATCH, BEFORE, ends_spec, OFFSET = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local names, widths, zeros, out = {}, {}, {}, {}
for t = 6, #ARGV, 2 do
  local f = #names + 1
  names[f] = ARGV[t]
  widths[f] = tonumber(ARGV[t + 1])
  zeros[f] = string.rep('\0', widths[f])
  out[f] = {}
end
local nf = #names
local ends = {}
for p, e in string.gmatch(ends_spec, '(%d+),(%d+)') do ends[#ends + 1] = {OFFSET .. p, e} end
local hm = {}
if recovering ~= '' then
  hm[1] = BATCH
  for f = 1, nf do hm[1 + f] = BEFORE .. names[f]; hm[1 + nf + f] = names[f] end
else
  hm[1] = OFFSET .. '-'  -- a field that never exists, so the layout is the same
  for f = 1, nf do hm[1 + nf + f] = names[f] end
  for f = 1, nf do hm[1 + f] = hm[1] end
end
local base_o = #hm
for t = 1, #ends do hm[base_o + t] = ends[t][1] end
local flags = {}
for j = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[j], unpack(hm))
  local base, flag = 1 + nf, '1'
  if recovering ~= '' and v[1] == recovering and v[2] then base, flag = 1, 'r' end
  if flag == '1' then
    for t = 1, #ends do
      if v[base_o + t] == ends[t][2] then flag = 'w'; break end
    end
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
