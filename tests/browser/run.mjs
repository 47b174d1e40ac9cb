// Loads a page in Debian's chromium (never a downloaded browser) and runs one
// of its test functions against a grelay address, or, with FUNCTION "page",
// waits for the page to say it is done and returns the text it shows.
// Usage: node run.mjs PAGE_URL API_URL FUNCTION
// Prints {"result": ..., "preflights": N, "console": [...]} as JSON.
import { chromium } from 'playwright-core';

const [pageUrl, api, fn] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  let preflights = 0;
  const console_ = [];
  // CORS preflights are not Playwright requests; DevTools reports them.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.requestWillBeSent', (e) => {
    if (e.request.method === 'OPTIONS' || e.type === 'Preflight' || (e.initiator && e.initiator.type === 'preflight'))
      preflights++;
  });
  page.on('console', (m) => console_.push(m.text()));
  await page.goto(pageUrl);
  let result;
  if (fn === 'page') {
    await page.waitForFunction(() => document.getElementById('state').textContent === 'done', null,
                               { timeout: 30000 });
    result = await page.evaluate(() => document.body.innerText);
  } else {
    await page.waitForFunction(() => document.getElementById('state').textContent === 'ready', null,
                               { timeout: 20000 });
    result = await page.evaluate(async ([f, a]) => await window[f](a), [fn, api]);
  }
  process.stdout.write(JSON.stringify({ result, preflights, console: console_ }) + '\n');
} finally {
  await browser.close();
}
