// Drives grelay's live view (the admin endpoint's GET /) in Debian's
// chromium (never a downloaded browser) for tests/integration/test_live_view.py.
// Usage: node live_view.mjs URL
// Then reads one JSON command a line on stdin and answers each with one JSON
// line on stdout:
//   {"cmd": "wait_updates", "n": N}   waits (at most 30 s) until the page
//                                     applied N reads of stats.json
//   {"cmd": "read"}                   the page's state: header, and each
//                                     table's rows (data- attributes, cells
//                                     by data-col, status chips by code)
//   {"cmd": "screenshot", "path": P}  a PNG of the page
//   {"cmd": "quantile", "q": Q, "ub": [...], "cum": [...]}
//                                     the page's p-quantile of cumulative
//                                     bucket counts cum (upper bounds ub)
//   {"cmd": "quit"}
// Answers {"ok": true, ...} or {"ok": false, "error": "..."}.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const [url] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const reply = (o) => process.stdout.write(JSON.stringify(o) + '\n');
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400) errors.push(r.status() + ' ' + r.url()); });
  // Anything the page asks for outside its own origin (it must ask nothing).
  const foreign = [];
  const origin = new URL(url).origin;
  page.on('request', (r) => { if (!r.url().startsWith(origin + '/')) foreign.push(r.url()); });
  await page.goto(url);
  reply({ ok: true, loaded: url });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const c = JSON.parse(line);
    try {
      if (c.cmd === 'quit') {
        reply({ ok: true });
        lines.close();
        break;
      } else if (c.cmd === 'wait_updates') {
        await page.waitForFunction((n) => Number(document.body.dataset.updates) >= n, c.n, { timeout: 30000 });
        reply({ ok: true, updates: await page.evaluate(() => Number(document.body.dataset.updates)) });
      } else if (c.cmd === 'read') {
        const state = await page.evaluate(() => {
          const text = (id) => document.getElementById(id).textContent;
          const tables = {};
          for (const t of document.querySelectorAll('main table')) {
            tables[t.id] = [...t.tBodies[0].rows].filter((tr) => !tr.querySelector('td.empty')).map((tr) => {
              const attrs = { ...tr.dataset };
              const cells = {};
              const codes = {};
              for (const td of tr.cells) cells[td.dataset.col] = td.textContent;
              for (const chip of tr.querySelectorAll('[data-code]'))
                codes[chip.dataset.code] = { total: Number(chip.dataset.total), last: chip.dataset.last,
                                             kind: chip.className };
              return { attrs, cells, codes };
            });
          }
          return {
            updates: Number(document.body.dataset.updates),
            header: { state: text('state'), uptime: text('uptime'), reloads_ok: text('reloads-ok'),
                      reloads_failed: text('reloads-failed'), error: text('error') },
            tables,
            // elements created from data that are not text: must stay 0
            foreign_elements: document.querySelectorAll('main img, main script, main iframe').length,
          };
        });
        reply({ ok: true, state, errors, foreign });
      } else if (c.cmd === 'quantile') {
        const value = await page.evaluate(([q, ub, cum]) => window.grelayLiveView.quantile(q, ub, cum),
                                          [c.q, c.ub, c.cum]);
        reply({ ok: true, value });
      } else if (c.cmd === 'screenshot') {
        await page.screenshot({ path: c.path, fullPage: false });
        reply({ ok: true });
      } else {
        reply({ ok: false, error: 'unknown command ' + c.cmd });
      }
    } catch (e) {
      reply({ ok: false, error: String(e) });
    }
  }
} finally {
  await browser.close();
}
process.exit(0); // stdin may still be open
