// The console, end to end in Debian's headless Chromium (playwright-core,
// never a downloaded browser). tests/console.rs starts `serve` and the
// receivers, runs this script with their addresses, then checks what the
// receiver really got against what this script read off the pages (printed
// as one JSON line on stdout). Any failed expectation, page error or
// console error exits non-zero with the reason.
import { chromium } from 'playwright-core';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (tests/console.rs sets it)`);
  return v;
};
const BASE = env('CONSOLE_BASE');
const ADMIN = env('CONSOLE_ADMIN_TOKEN');
const VIEWER = env('CONSOLE_VIEWER_TOKEN');
const JSON_RX = env('CONSOLE_JSON_RECEIVER');
const TEXT_RX = env('CONSOLE_TEXT_RECEIVER');
const SNAPSHOT = env('CONSOLE_SNAPSHOT_FILE');
const SHOTS = env('CONSOLE_SCREENSHOTS');
mkdirSync(SHOTS, { recursive: true });
rmSync(join(SHOTS, 'failure.png'), { force: true });

const problems = [];
let expectedRefusals = 0;
const report = {};
const step = (name) => process.stderr.write(`console e2e: ${name}\n`);
function expect(cond, what) {
  if (!cond) throw new Error(`expected ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // This machine has no network beyond loopback: Chromium's own background
  // traffic would fail, loudly and slowly.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

let current = null;
async function newPage(width, height) {
  const ctx = await browser.newContext({ viewport: { width, height } });
  const page = await ctx.newPage();
  current = page;
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => problems.push(`page error at ${page.url()}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // A refusal the test provokes on purpose is logged by Chromium as a
    // failed load; anything else is a problem.
    if (expectedRefusals > 0 && m.text().startsWith('Failed to load resource: the server responded with a status of 4')) {
      expectedRefusals -= 1;
      return;
    }
    problems.push(`console error at ${page.url()}: ${m.text()}`);
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(BASE) && !r.url().startsWith('data:')) problems.push(`request outside the server: ${r.url()}`);
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(BASE + '/');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/#\/syncs$/);
  await page.getByRole('heading', { name: 'Synced segments' }).waitFor();
}

// The buttons of an open action menu: { label: disabled }.
async function menuState(page, syncId) {
  const row = page.locator(`tr[data-sync="${syncId}"]`);
  await row.getByText('Actions').click();
  const buttons = row.locator('details.menu li button');
  const out = {};
  for (let i = 0; i < await buttons.count(); i += 1) {
    const b = buttons.nth(i);
    out[(await b.textContent()).trim()] = await b.isDisabled();
  }
  out['Edit link'] = await row.locator('details.menu li a', { hasText: 'Edit' }).count() > 0;
  return out;
}

async function main() {
  const page = await newPage(1280, 900);

  step('sign in with a bad token, then the admin token');
  await page.goto(BASE + '/');
  await page.getByLabel('API token').fill('ssk_not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('This token is not accepted').waitFor();
  await shot(page, 'desktop-signin');
  await signIn(page, ADMIN);
  expect((await page.locator('#signed-in').textContent()).includes('(admin)'), 'the admin to be signed in');

  step('the list pages past 50 rows, sorts and searches');
  await expectText(page.locator('#page-of'), 'Page 1 of 2 · 53 syncs');
  await page.getByRole('button', { name: 'Next page' }).click();
  await expectText(page.locator('#page-of'), 'Page 2 of 2');
  report.page2_rows = await page.locator('tbody tr').count();
  await page.getByRole('button', { name: 'Previous page' }).click();
  await page.getByLabel('Search').fill('no such segment');
  await expectText(page.locator('main'), 'No syncs match.');
  await page.getByLabel('Search').fill('');
  await expectText(page.locator('#page-of'), 'Page 1 of 2');

  step('destination: live preview, test connection, save');
  await page.getByRole('link', { name: 'Destinations' }).click();
  await page.getByRole('link', { name: 'Add destination' }).click();
  await page.getByLabel('Name', { exact: true }).fill('crm');
  await page.getByLabel('URL').fill(JSON_RX);
  await page.getByLabel('Page size (users per request)').fill('100');
  await page.getByLabel('Rate limit (requests per minute)').fill('60');
  const preview = page.locator('#preview');
  await expectText(preview, '"add_users"');
  await expectText(preview, JSON_RX);
  await page.getByLabel('Added users key').fill('members_in');
  await expectText(preview, '"members_in"');
  expect(!(await preview.textContent()).includes('"add_users"'), 'the renamed key to replace add_users in the preview');
  report.preview_renamed = true;
  // Pass against the JSON receiver, then fail against text/plain (the
  // form is tested as it is, unsaved), then back.
  await page.getByRole('button', { name: 'Test connection' }).click();
  await expectText(page.locator('#test-verdict'), 'Connection works');
  await page.getByLabel('URL').fill(TEXT_RX);
  await expectText(preview, TEXT_RX);
  await page.getByRole('button', { name: 'Test connection' }).click();
  await expectText(page.locator('#test-verdict'), 'Connection failed');
  report.text_plain_test = (await page.locator('#test-result').textContent()).trim();
  await shot(page, 'desktop-destination-test-failed');
  await page.getByLabel('URL').fill(JSON_RX);
  await expectText(preview, JSON_RX);
  await page.getByRole('button', { name: 'Test connection' }).click();
  await expectText(page.locator('#test-verdict'), 'Connection works');
  await shot(page, 'desktop-destination');
  await page.getByRole('button', { name: 'Add destination' }).click();
  await page.getByRole('cell', { name: 'crm' }).waitFor();
  await shot(page, 'desktop-destinations');

  step('a refused sync shows the reason next to its field');
  await page.goto(`${BASE}/#/syncs/new`);
  await page.getByRole('heading', { name: 'New sync' }).waitFor();
  await page.getByLabel('Destination', { exact: true }).selectOption('crm');
  await page.getByLabel('Periodic').check();
  await page.getByLabel('Start').fill('2030-01-02T10:00');
  await page.getByLabel('End (optional)').fill('2030-01-01T10:00');
  expectedRefusals = 1;
  await page.getByRole('button', { name: 'Create sync' }).click();
  await expectText(page.locator('#end-error'), 'end date');
  report.end_error = await page.locator('#end-error').textContent();
  expect(expectedRefusals === 0, 'the refusal to have been answered with a 4xx');
  await shot(page, 'desktop-sync-new-refused');

  step('create a one-time sync (for the viewer later) and a daily sync, then run it');
  await createSync(page, { periodic: false });
  const onceId = Number(page.url().split('/').pop());
  await createSync(page, { periodic: true, notify: 'ops@example.com' });
  const syncId = Number(page.url().split('/').pop());
  report.sync_id = syncId;
  report.once_id = onceId;
  await page.getByRole('button', { name: 'Run ad hoc' }).click();
  const progress = page.locator('#progress');
  await progress.waitFor();
  // Live: the count moves without a reload.
  await page.locator('#pages-done', { hasText: /^[1-5] of 6 pages acknowledged/ }).waitFor();
  report.progress_seen = (await progress.textContent()).replace(/\s+/g, ' ').trim();
  await shot(page, 'desktop-sync-running');
  // The run ends; the page reloads itself with the counts.
  await page.locator('#history tr[data-seq="1"] .badge.complete').waitFor({ timeout: 60000 });
  await expect_gone(page, '#progress');
  const row = page.locator('#history tr[data-seq="1"]');
  report.ui_added = Number((await row.locator('[data-col="added"]').textContent()).replace(/,/g, ''));
  report.ui_removed = Number((await row.locator('[data-col="removed"]').textContent()).replace(/,/g, ''));
  report.ui_total = Number((await row.locator('[data-col="total"]').textContent()).replace(/,/g, ''));
  report.chart_points = await page.locator('#history-chart circle').count();
  const totalPoint = page.locator('#history-chart circle[data-series="total"]');
  report.chart_total = Number(await totalPoint.first().getAttribute('data-value'));
  await shot(page, 'desktop-sync-detail');

  step('sorting by segment puts bulk before seg; searching finds the two');
  await page.getByRole('link', { name: '← Synced segments' }).click();
  await page.getByRole('button', { name: /^Segment/ }).click();
  report.first_by_segment = (await page.locator('tbody tr').first().locator('td').first().textContent()).trim();
  await page.getByRole('button', { name: /^Segment/ }).click();
  report.first_by_segment_desc = (await page.locator('tbody tr').first().locator('td').first().textContent()).trim();
  await page.getByLabel('Search').fill('crm');
  await expectText(page.locator('#page-of'), 'Page 1 of 1 · 2 syncs');
  await shot(page, 'desktop-syncs-search');

  step('pause: only what a paused sync allows');
  await page.goto(`${BASE}/#/syncs`);
  await page.locator(`tr[data-sync="${syncId}"]`).waitFor();
  let menu = await menuState(page, syncId);
  expect(menu['Pause'] === false, `Pause to be enabled for an active sync: ${JSON.stringify(menu)}`);
  await page.locator(`tr[data-sync="${syncId}"] button[data-action="pause"]`).click();
  await page.locator(`tr[data-sync="${syncId}"] .badge.paused`).waitFor();
  menu = await menuState(page, syncId);
  report.paused_menu = menu;
  const reason = await page.locator(`#why-pause-${syncId}`).textContent();
  report.pause_refusal = reason;
  await shot(page, 'desktop-syncs-paused-menu');

  step('edit form: the one-time/periodic rule shown at the field');
  await page.goto(`${BASE}/#/syncs/${syncId}/edit`);
  await page.getByRole('heading', { name: `Edit sync ${syncId}` }).waitFor();
  expect(await page.locator('#kind-once').isDisabled(), 'the schedule kind to be fixed on edit');
  report.kind_rule = await page.locator('#kind-hint').textContent();
  await shot(page, 'desktop-sync-edit');

  step('archive with confirmation');
  await page.goto(`${BASE}/#/syncs`);
  await page.locator(`tr[data-sync="${syncId}"]`).getByText('Actions').click();
  await page.locator(`tr[data-sync="${syncId}"] button[data-action="archive"]`).click();
  await page.locator('#confirm').getByRole('button', { name: 'Cancel' }).click();
  await page.locator(`tr[data-sync="${syncId}"] .badge.paused`).waitFor();
  await page.locator(`tr[data-sync="${syncId}"] button[data-action="archive"]`).click();
  await shot(page, 'desktop-archive-confirm');
  await page.locator('#confirm').getByRole('button', { name: 'Archive' }).click();
  await page.locator(`tr[data-sync="${syncId}"]`).waitFor({ state: 'detached' });
  await page.getByRole('tab', { name: 'Archived syncs' }).click();
  await page.locator(`tr[data-sync="${syncId}"] .badge.archived`).waitFor();
  report.archived_menu = await menuState(page, syncId);
  await shot(page, 'desktop-syncs-archived');

  step('segments: snapshots with their changes, and an upload');
  await page.getByRole('link', { name: 'Segments', exact: true }).click();
  await page.getByRole('link', { name: 'seg', exact: true }).click();
  await page.locator('tr[data-seq="1"]').waitFor();
  await page.getByLabel('File (id list, CSV or NDJSON, gzip or not)').setInputFiles(SNAPSHOT);
  await page.getByRole('button', { name: 'Import snapshot' }).click();
  const snap2 = page.locator('tr[data-seq="2"]');
  await snap2.waitFor();
  report.snapshot2 = (await snap2.locator('td').allTextContents()).map((t) => t.trim());
  await shot(page, 'desktop-segment');
  for (const [link, name] of [['Notifications', 'notifications'], ['Workspaces', 'workspaces'], ['Workers', 'workers'], ['Destinations', 'destinations'], ['Segments', 'segments']]) {
    await page.getByRole('link', { name: link, exact: true }).click();
    await page.getByRole('heading', { name: link === 'Workspaces' ? 'Workspaces' : link }).first().waitFor();
    await shot(page, `desktop-${name}`);
  }
  report.notifications = await page.goto(`${BASE}/#/notifications`).then(() => page.locator('tbody tr').count());
  report.workers_text = await page.goto(`${BASE}/#/workers`).then(async () => {
    await page.getByRole('heading', { name: 'Workers' }).waitFor();
    return (await page.locator('main p').first().textContent()).trim();
  });

  step('keyboard: the sign-out button and nav reachable with Tab');
  await page.goto(`${BASE}/#/syncs`);
  await page.getByRole('heading', { name: 'Synced segments' }).waitFor();
  let reached = false;
  for (let i = 0; i < 12 && !reached; i += 1) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Destinations');
  }
  expect(reached, 'the Destinations link to be reachable with Tab');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Destinations' }).waitFor();

  step('a viewer sees the same pages with every action disabled');
  const viewer = await newPage(1280, 900);
  await signIn(viewer, VIEWER);
  expect(await viewer.getByRole('link', { name: 'New sync' }).count() === 0, 'no New sync for a viewer');
  report.viewer_menu = await menuState(viewer, onceId);
  report.viewer_reason = await viewer.locator(`#why-run-${onceId}`).textContent();
  await viewer.goto(`${BASE}/#/syncs/${onceId}`);
  await viewer.getByRole('group', { name: 'Actions' }).waitFor();
  report.viewer_detail_enabled = await viewer.locator('.actions button:not([disabled])').count();
  await viewer.goto(`${BASE}/#/destinations/crm`);
  await viewer.getByRole('heading', { name: 'Destination crm' }).waitFor();
  report.viewer_can_save = await viewer.getByRole('button', { name: 'Save destination' }).count();
  report.viewer_url_disabled = await viewer.getByLabel('URL').isDisabled();
  await shot(viewer, 'desktop-viewer-destination');

  step('phone width: every page readable at 390 px');
  const phone = await newPage(390, 844);
  await signIn(phone, ADMIN);
  report.phone_overflow = {};
  const pages = [['syncs', '#/syncs'], ['sync-detail', `#/syncs/${syncId}`], ['sync-new', '#/syncs/new'],
    ['destination', '#/destinations/crm'], ['segments', '#/segments'], ['segment', '#/segments/seg'],
    ['notifications', '#/notifications'], ['workspaces', '#/workspaces'], ['workers', '#/workers'], ['archived', '#/syncs?tab=archived']];
  for (const [name, hash] of pages) {
    await phone.goto(`${BASE}/${hash}`);
    await phone.locator('main h1').first().waitFor();
    await phone.waitForLoadState('networkidle');
    report.phone_overflow[name] = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await shot(phone, `phone-${name}`);
  }
}

async function createSync(page, { periodic, notify }) {
  await page.goto(`${BASE}/#/syncs/new`);
  await page.getByRole('heading', { name: 'New sync' }).waitFor();
  await page.getByLabel('Segment').selectOption('seg');
  await page.getByLabel('Destination', { exact: true }).selectOption('crm');
  await page.getByLabel('Synced attribute').fill('uid');
  await page.getByLabel(periodic ? 'Periodic' : 'One-time').check();
  if (periodic) await page.getByLabel('Frequency').selectOption('daily');
  if (notify) await page.getByLabel('Notification emails').fill(notify);
  await shot(page, periodic ? 'desktop-sync-new' : 'desktop-sync-new-once');
  await page.getByRole('button', { name: 'Create sync' }).click();
  await page.waitForURL(/#\/syncs\/\d+$/);
  await page.getByRole('group', { name: 'Actions' }).waitFor();
}

async function expectText(locator, text) {
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    if (((await locator.textContent()) || '').includes(text)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`expected ${text} in ${await locator.textContent()}`);
}

async function expect_gone(page, selector) {
  await page.locator(selector).waitFor({ state: 'detached' });
}

let failed = null;
try {
  await main();
} catch (e) {
  failed = e.stack || String(e);
  if (current) await current.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
}
await browser.close();
report.problems = problems;
report.failed = failed;
writeFileSync(join(SHOTS, 'report.json'), JSON.stringify(report, null, 2));
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(failed || problems.length ? 1 : 0);
