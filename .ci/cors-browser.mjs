// CORS in a real browser (Debian's Chromium, driven by playwright-core): a page served
// from another origin (a tiny static server on another port) calls the service with
// fetch() and must read a JSON list and an exposed header (Link); then it listens to
// GET /events with the browser's own EventSource, updates a conversation (a PATCH, so a
// preflight) and must receive that change as an event. The same page served from an
// origin the service does not allow must be refused by the browser, stream included.
//
// The service must run with CORS_ALLOWED_ORIGINS=http://127.0.0.1:ALLOWED_PORT.
//
// usage: node cors-browser.mjs BASE_URL ALLOWED_PORT OTHER_PORT SCREENSHOT_PATH

import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const [baseUrl, allowedPort, otherPort, screenshot] = process.argv.slice(2);
if (!baseUrl || !allowedPort || !otherPort || !screenshot) {
  console.error('usage: node cors-browser.mjs BASE_URL ALLOWED_PORT OTHER_PORT SCREENSHOT_PATH');
  process.exit(2);
}

// What a low-code tool's page does: fetch the list, read the body and the paging header.
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>CORS check</title></head>
<body><pre id="out">running…</pre>
<script>
  const out = document.getElementById('out');
  window.result = (async () => {
    try {
      const response = await fetch(${JSON.stringify(`${baseUrl}/conversations?status=open&pageSize=3`)},
        { headers: { 'X-Request-Id': 'cors-browser-check' } });
      const body = await response.json();
      const result = { status: response.status, items: body.items.length,
        link: response.headers.get('Link'), requestId: response.headers.get('X-Request-Id') };
      // The live stream: open, change something, wait for the change to arrive.
      const id = body.items[0].id;
      const source = new EventSource(${JSON.stringify(`${baseUrl}/events?types=conversation.updated`)});
      const opened = new Promise((resolve, reject) => {
        source.onopen = resolve;
        source.onerror = () => reject(new Error('the event stream was refused'));
      });
      const received = new Promise((resolve) => {
        source.onmessage = (message) => {
          const event = JSON.parse(message.data);
          if (event.conversationId === id) resolve({ lastEventId: message.lastEventId, event });
        };
      });
      await opened;
      const patched = await fetch(${JSON.stringify(`${baseUrl}/conversations/`)} + id, {
        method: 'PATCH', headers: { 'Content-Type': 'application/merge-patch+json' },
        body: JSON.stringify({ starred: !body.items[0].starred }) });
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no event within 10 s')), 10000));
      const streamed = await Promise.race([received, timeout]);
      source.close();
      result.patch = patched.status;
      result.streamed = { id: streamed.lastEventId, type: streamed.event.type,
        matches: streamed.lastEventId === streamed.event.id };
      out.textContent = JSON.stringify(result, null, 2);
      return result;
    } catch (error) {
      out.textContent = 'refused: ' + error;
      return { error: String(error) };
    }
  })();
</script></body></html>`;

const servers = [allowedPort, otherPort].map((port) => {
  const server = createServer((_, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(Number(port), '127.0.0.1', () => resolve(server)));
});
const listening = await Promise.all(servers);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

const failures = [];
try {
  const tab = await browser.newPage();
  tab.setDefaultTimeout(20_000);

  await tab.goto(`http://127.0.0.1:${allowedPort}/`);
  const allowed = await tab.evaluate(() => window.result);
  await tab.screenshot({ path: screenshot });
  if (allowed.error) {
    failures.push(`the allowed origin could not read the answer: ${allowed.error}`);
  } else if (allowed.status !== 200 || allowed.items === 0) {
    failures.push(`the allowed origin read ${JSON.stringify(allowed)}`);
  } else if (!allowed.link?.includes('rel="next"') || allowed.requestId !== 'cors-browser-check') {
    failures.push(`exposed headers unreadable: ${JSON.stringify(allowed)}`);
  } else if (allowed.patch !== 200 || allowed.streamed?.type !== 'conversation.updated' || !allowed.streamed.matches) {
    failures.push(`the event stream did not deliver the update: ${JSON.stringify(allowed)}`);
  } else {
    console.log(`CORS: a page of http://127.0.0.1:${allowedPort} read ${allowed.items} conversations and the Link header, `
      + `and its EventSource received the update it made (event ${allowed.streamed.id})`);
  }

  await tab.goto(`http://127.0.0.1:${otherPort}/`);
  const other = await tab.evaluate(() => window.result);
  if (!other.error) {
    failures.push(`a page of an origin not allowed read the answer: ${JSON.stringify(other)}`);
  } else {
    console.log(`CORS: a page of http://127.0.0.1:${otherPort} was refused, as it should be`);
  }
} catch (error) {
  failures.push(`CORS check failed: ${error.message}`);
} finally {
  await browser.close();
  for (const server of listening) server.close();
}

if (failures.length > 0) {
  for (const failure of failures) console.error(failure);
  process.exit(1);
}
