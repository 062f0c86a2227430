// A client typed from the OpenAPI 3.1 document (openapi-typescript's types, used through
// openapi-fetch) lists, reads and patches a conversation against a running service with
// its sandbox. Node 20's own fetch; nothing else.
//
// A read that comes with an ETag is read again with If-None-Match, and then must answer
// 304 Not Modified. Without an ETag the second read is skipped and says so.
//
// usage: node .ci/ts-client/dist/check.js BASE_URL   (after tsc -p .ci/ts-client)

import createClient from "openapi-fetch";
import type { components, paths } from "./generated/qpien.js";

type Conversation = components["schemas"]["Conversation"];
type ConversationPatch = components["schemas"]["ConversationPatch"];

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error("usage: node check.js BASE_URL");
  process.exit(2);
}

function fail(message: string): never {
  console.error(`TypeScript client: ${message}`);
  process.exit(1);
}

const client = createClient<paths>({ baseUrl });

const list = await client.GET("/conversations", {
  params: { query: { status: "open", pageSize: 5 } },
});
if (!list.data) fail(`list answered ${list.response.status}: ${JSON.stringify(list.error)}`);
const first: Conversation | undefined = list.data.items[0];
if (!first) fail("the list of open conversations is empty");
if (list.data.items.some((c) => c.status !== "open")) fail("the status filter was not applied");
console.log(`list: ${list.data.items.length} of ${list.data.totalItems} open conversations, next ${list.data.nextLink}`);

// The generated types refuse what the service would: a status outside the enum.
// @ts-expect-error "done" is no ConversationStatus
const refused: ConversationPatch = { status: "done" };
void refused;

const read = await client.GET("/conversations/{id}", { params: { path: { id: first.id } } });
if (!read.data) fail(`read answered ${read.response.status}`);
if (read.data.id !== first.id) fail(`read ${first.id}, got ${read.data.id}`);
const etag = read.response.headers.get("ETag");
if (etag) {
  const again = await client.GET("/conversations/{id}", {
    params: { path: { id: first.id } },
    headers: { "If-None-Match": etag },
  });
  if (again.response.status !== 304) {
    fail(`a read with If-None-Match: ${etag} answered ${again.response.status}, expected 304`);
  }
  console.log(`read: ${first.id}, again with If-None-Match ${etag}: 304`);
} else {
  console.log(`read: ${first.id} (no ETag yet, so no conditional read)`);
}

const change: ConversationPatch = { priority: "urgent", starred: true, tags: ["vip"] };
const patched = await client.PATCH("/conversations/{id}", {
  params: { path: { id: first.id } },
  body: change,
  headers: { "Content-Type": "application/merge-patch+json" },
});
if (!patched.data) fail(`patch answered ${patched.response.status}: ${JSON.stringify(patched.error)}`);
const updated: Conversation = patched.data;
if (updated.priority !== "urgent" || !updated.starred || updated.tags.map((t) => t.name).join() !== "vip") {
  fail(`the patch did not take: ${JSON.stringify(updated)}`);
}
console.log(`patch: ${updated.id} is now ${updated.priority}, starred, tagged ${updated.tags[0]?.name}`);
