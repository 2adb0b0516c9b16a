// A serving app in Node.js (>= 18, built-in fetch, no dependencies) calling `online-als serve`.
//
//   node recommend.mjs http://127.0.0.1:8080 196 [n] [category]
//
// Prints one JSON line per call: the user's top-n, the same with a category filter, an
// anonymous user's top-n from two items, the items similar to the first recommendation,
// the popular items and why the first recommendation was made.
const [base, user, nArg, category] = process.argv.slice(2);
if (!base || !user) {
  console.error("usage: node recommend.mjs BASE_URL USER [N] [CATEGORY]");
  process.exit(2);
}
const n = Number(nArg ?? 10);

async function get(path, params) {
  const url = new URL(path, base);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  const res = await fetch(url);
  const body = await res.json();
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}: ${body.error}`);
  return body;
}

const top = await get("/v1/recommend", { user, n });
console.log(JSON.stringify({ call: "recommend", ...top }));
if (category) {
  console.log(JSON.stringify({ call: "recommend_category",
    ...(await get("/v1/recommend", { user, n, category })) }));
}
const post = await fetch(new URL("/v1/recommend", base), {
  method: "POST", headers: { "content-type": "application/json" },
  body: JSON.stringify({ items: Object.fromEntries(top.items.slice(0, 2).map((r) => [r.id, 5])), n }),
});
console.log(JSON.stringify({ call: "anonymous", ...(await post.json()) }));
const first = top.items[0]?.id;
if (first !== undefined) {
  console.log(JSON.stringify({ call: "similar", ...(await get("/v1/similar", { item: first, n })) }));
  console.log(JSON.stringify({ call: "because", ...(await get("/v1/because", { user, item: first })) }));
}
console.log(JSON.stringify({ call: "popular", ...(await get("/v1/popular", { n })) }));
