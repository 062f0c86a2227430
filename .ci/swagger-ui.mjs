// Swagger UI in headless Chromium (Debian's package, driven by playwright-core): open
// /docs/, use "Try it out" on GET /conversations, execute, and expect a 200 listing
// conversations. Saves a screenshot either way.
//
// usage: node swagger-ui.mjs BASE_URL SCREENSHOT_PATH

import { chromium } from 'playwright-core';

const [baseUrl, screenshot] = process.argv.slice(2);
if (!baseUrl || !screenshot) {
  console.error('usage: node swagger-ui.mjs BASE_URL SCREENSHOT_PATH');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // Playwright gives each launch a fresh temporary profile; these keep Chromium from
  // phoning home or needing a sandbox it cannot have as root in a container.
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

let failure;
const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
try {
  page.setDefaultTimeout(20_000);
  await page.goto(`${baseUrl}/docs/`);

  const operation = page.locator('#operations-Conversations-listConversations');
  await operation.locator('.opblock-summary').click();
  await operation.locator('button.try-out__btn').click();
  await operation.locator('button.execute').click();

  const live = operation.locator('.live-responses-table');
  const status = live.locator('.response .response-col_status').first();
  await status.waitFor();
  const code = (await status.innerText()).trim();
  const body = await live.locator('.response-col_description pre').first().innerText();
  const list = JSON.parse(body);
  if (code !== '200') {
    failure = `Swagger UI showed HTTP ${code}, expected 200`;
  } else if (!Array.isArray(list.items) || list.items.length === 0) {
    failure = 'Swagger UI showed a 200 without conversations';
  } else {
    console.log(`Swagger UI: GET /conversations answered ${code} with ${list.items.length} of ${list.totalItems} conversations`);
  }
  await status.scrollIntoViewIfNeeded();
} catch (error) {
  failure = `Swagger UI check failed: ${error.message}`;
} finally {
  await page.screenshot({ path: screenshot, fullPage: false });
  console.log(`screenshot: ${screenshot}`);
  await browser.close();
}

if (failure) {
  console.error(failure);
  process.exit(1);
}
