#!/usr/bin/env node
'use strict';
// node recommend.js --user U [--user U2 ...] [--n 10] [--prefix oals] [--redis-url URL] [--include-seen]
// Prints one JSON object per user, one per line:
//   {"user":"U","version":3,"fallback":false,"items":[{"item":"50","score":4.21},...]}

const { parseArgs } = require('node:util');
const { createClient } = require('redis');
const { recommendDetailed } = require('./reader');

function usage(msg) {
  process.stderr.write(`${msg}\nusage: node recommend.js --user U [--user U2 ...] [--n 10] ` +
    '[--prefix oals] [--redis-url redis://localhost:6379] [--include-seen]\n');
  process.exit(2);
}

async function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        user: { type: 'string', multiple: true },
        n: { type: 'string', default: '10' },
        prefix: { type: 'string', default: process.env.OALS_PREFIX || 'oals' },
        'redis-url': { type: 'string', default: process.env.REDIS_URL || 'redis://localhost:6379' },
        'include-seen': { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    usage(err.message);
  }
  if (!values.user || values.user.length === 0) usage('--user is required');
  const n = Number.parseInt(values.n, 10);
  if (!(n >= 0) || String(n) !== values.n.trim()) usage(`--n must be a non-negative integer, got ${values.n}`);

  const client = createClient({ url: values['redis-url'] });
  client.on('error', (err) => process.stderr.write(`redis: ${err.message}\n`));
  await client.connect();
  try {
    for (const user of values.user) {
      const r = await recommendDetailed(client, values.prefix, user, n, {
        includeSeen: values['include-seen'],
      });
      process.stdout.write(`${JSON.stringify({ user, ...r })}\n`);
    }
  } finally {
    await client.quit();
  }
}

main().catch((err) => {
  process.stderr.write(`recommend.js: ${err.message}\n`);
  process.exit(1);
});
