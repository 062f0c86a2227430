// Swagger UI in headless Chromium (Debian's package, driven by playwright-core): open
// /docs/, use "Try it out" on GET /conversations, execute, and expect a 200 listing
// conversations. With CALLER_KEY, first enter it through the Authorize dialog (the
// X-API-Key scheme), as against a service that requires caller keys. Saves a screenshot
// either way.
//
// usage: node swagger-ui.mjs BASE_URL SCREENSHOT_PATH [CALLER_KEY]

import { chromium } from 'playwright-core';

const [baseUrl, screenshot, callerKey] = process.argv.slice(2);
if (!baseUrl || !screenshot) {
  console.error('usage: node swagger-ui.mjs BASE_URL SCREENSHOT_PATH [CALLER_KEY]');
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

  if (callerKey) {
    await page.locator('.auth-wrapper button.authorize').click();
    const scheme = page.locator('.auth-container').filter({ hasText: 'X-API-Key' });
    await scheme.locator('input').fill(callerKey);
    await scheme.locator('button.authorize').click();
    await page.locator('.modal-ux button.close-modal').click();
  }

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
    const how = callerKey ? ' (authorized with a caller key)' : '';
    console.log(`Swagger UI${how}: GET /conversations answered ${code} with ${list.items.length} of ${list.totalItems} conversations`);
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
