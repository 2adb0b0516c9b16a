'use strict';
// A serving reader for online-als written from docs/redis-keys.md alone (formats 1 and 2:
// they differ only in bookkeeping fields a reader ignores).
// Every step below cites the section of that spec it follows; nothing here was taken from the
// Python client, so that a disagreement between the two is a gap in the spec.

const { RESP_TYPES } = require('redis');

const FORMATS = ['1', '2'];
const RELOAD_ITEMS_MS = 60_000; // "reload it every N seconds even while V is unchanged"
const CURRENT_CHECK_MS = 1_000; // "Re-check <P>:current now and then (e.g. once a second)"
const PIPELINE_CHUNK = 1000; // HMGETs in flight at once while loading the items

// "Escaping inside {}": % first, so that the escapes themselves are not escaped again.
function escapeId(id) {
  return String(id).replace(/%/g, '%25').replace(/\{/g, '%7B').replace(/\}/g, '%7D');
}

const keys = {
  current: (p) => `${p}:current`,
  meta: (p, v) => `${p}:v${v}:meta`,
  items: (p, v) => `${p}:v${v}:items`,
  item: (p, v, iid) => `${p}:v${v}:i:{${escapeId(iid)}}`,
  user: (p, v, uid) => `${p}:v${v}:u:{${escapeId(uid)}}`,
  seen: (p, v, uid) => `${p}:v${v}:s:{${escapeId(uid)}}`,
};

// "Decoding f and b in Node.js": node-redis buffers are often not 4-byte aligned, so read each
// float with readFloatLE instead of viewing the buffer as a Float32Array.
function decodeVector(buf, k) {
  if (!buf || buf.length !== 4 * k) return null;
  const f = new Float32Array(k);
  for (let j = 0; j < k; j++) f[j] = buf.readFloatLE(4 * j);
  return f;
}

function decodeBias(buf) {
  return buf && buf.length === 4 ? buf.readFloatLE(0) : 0;
}

function binaryView(client) {
  return client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
}

// "Ranking, ties": ids compare by their UTF-8 bytes as unsigned bytes (memcmp order).
function compareIds(a, b) {
  return Buffer.compare(a.idBytes, b.idBytes);
}

async function readMeta(client, prefix, version) {
  const [format, mode, rank, globalMean] = await client.hmGet(keys.meta(prefix, version), [
    'format', 'mode', 'rank', 'global_mean',
  ]);
  if (!FORMATS.includes(format)) {
    throw new Error(`${keys.meta(prefix, version)}: format ${format} is not one of ${FORMATS}`);
  }
  if (mode !== 'explicit' && mode !== 'implicit') throw new Error(`unknown mode ${mode}`);
  const k = Number.parseInt(rank, 10);
  if (!(k > 0)) throw new Error(`bad rank ${rank}`);
  // "Text formats": global_mean is a float64 in shortest round-trip text.
  const mean = mode === 'explicit' && globalMean != null ? Number.parseFloat(globalMean) : 0;
  return { mode, k, globalMean: mean };
}

// Step 3: every item with a well-formed vector, sorted by id bytes so that "lower row" and
// "lower id" are the same thing.
async function loadItems(client, prefix, version, k) {
  const ids = await client.sMembers(keys.items(prefix, version));
  const bin = binaryView(client);
  const rows = [];
  for (let start = 0; start < ids.length; start += PIPELINE_CHUNK) {
    const chunk = ids.slice(start, start + PIPELINE_CHUNK);
    const replies = await Promise.all(
      chunk.map((iid) => bin.hmGet(keys.item(prefix, version, iid), ['f', 'b', 'n'])),
    );
    replies.forEach(([f, b, n], j) => {
      const vec = decodeVector(f, k);
      if (vec === null) return; // "indexed before its vector landed"
      rows.push({
        id: chunk[j],
        idBytes: Buffer.from(chunk[j], 'utf8'),
        f: vec,
        b: decodeBias(b),
        // "item n: decimal integer; a missing n counts as 0"
        n: n == null ? 0 : Number.parseInt(n.toString('latin1'), 10),
      });
    });
  }
  rows.sort(compareIds);
  return rows;
}

// One cache per (client, prefix): the item matrix of the serving version, reloaded when the
// version changes and every RELOAD_ITEMS_MS while it does not (steps 3 and 5).
const caches = new WeakMap();

async function servingModel(client, prefix, opts = {}) {
  const reloadMs = opts.reloadItemsMs ?? RELOAD_ITEMS_MS;
  const checkMs = opts.currentCheckMs ?? CURRENT_CHECK_MS;
  let perClient = caches.get(client);
  if (!perClient) caches.set(client, (perClient = new Map()));
  const now = Date.now();
  let c = perClient.get(prefix);
  if (c && now - c.checkedAt < checkMs && now - c.loadedAt < reloadMs) return c;
  const current = await client.get(keys.current(prefix)); // step 1
  if (current == null) throw new Error(`${keys.current(prefix)} is not set: no serving version`);
  const version = Number.parseInt(current, 10);
  if (c && c.version === version && now - c.loadedAt < reloadMs) {
    c.checkedAt = now;
    return c;
  }
  const meta = await readMeta(client, prefix, version); // step 2
  const items = await loadItems(client, prefix, version, meta.k);
  c = { version, ...meta, items, loadedAt: now, checkedAt: now };
  perClient.set(prefix, c);
  return c;
}

// Float32 arithmetic in the spec's order ("Score"): the dot product accumulated in float32, then
// + b_i, then + float32(b_u + global_mean) with that inner sum in float64. Exact ties (equal
// vectors and biases) are then bit-equal and reach the id tie-break.
function score(model, u, bu, item) {
  const fr = Math.fround;
  let dot = 0;
  for (let j = 0; j < model.k; j++) dot = fr(dot + fr(u[j] * item.f[j]));
  if (model.mode === 'implicit') return dot;
  return fr(fr(dot + item.b) + fr(bu + model.globalMean));
}

function isZero(v) {
  for (let j = 0; j < v.length; j++) if (v[j] !== 0) return false;
  return true;
}

/**
 * Top-n items for `user` from the serving version under `prefix`.
 * Returns { version, fallback, items: [{ item, score }] }; `fallback` is true for an unknown
 * user, whose items are the most popular ones and whose scores are their `n`.
 */
async function recommendDetailed(client, prefix, user, n, opts = {}) {
  const model = await servingModel(client, prefix, opts);
  const v = model.version;
  const bin = binaryView(client);
  // Step 4: the user is read fresh on every request.
  const [[fBuf, bBuf], seenIds] = await Promise.all([
    bin.hmGet(keys.user(prefix, v, user), ['f', 'b']),
    opts.includeSeen ? Promise.resolve([]) : client.hKeys(keys.seen(prefix, v, user)),
  ]);
  const seen = new Set(seenIds);
  const u = decodeVector(fBuf, model.k);
  const fallback = u === null || isZero(u); // "Unknown user (no f, or a zero vector)"
  const bu = fallback ? 0 : decodeBias(bBuf);
  const scored = [];
  for (const item of model.items) {
    if (seen.has(item.id)) continue;
    const s = fallback ? item.n : score(model, u, bu, item);
    if (Number.isNaN(s) || s === -Infinity) continue; // "never recommended"
    scored.push({ item, s });
  }
  // Score descending, equal scores to the lower id in byte order (items are already in that
  // order and Array.prototype.sort is stable, but compare explicitly so the rule is visible).
  scored.sort((a, b) => (b.s - a.s) || compareIds(a.item, b.item));
  return {
    version: v,
    fallback,
    items: scored.slice(0, Math.max(0, n)).map(({ item, s }) => ({ item: item.id, score: s })),
  };
}

/** Top-n item ids (with scores) for `user`: [{ item, score }], best first. */
async function recommend(client, prefix, user, n, opts = {}) {
  return (await recommendDetailed(client, prefix, user, n, opts)).items;
}

module.exports = { recommend, recommendDetailed, escapeId, keys, decodeVector, compareIds };
