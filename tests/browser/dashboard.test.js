// The dashboard end to end in a real browser (Debian's chromium via playwright-core) against
// `oak up` with real containers in containerd: the getting-started flow of Oakestra's guide
// (log in as Admin/Admin, create an application, add a service through the form, deploy, see
// it RUNNING with its IP, a log line it printed and a CPU chart, undeploy, delete), a form
// error shown next to its field, a second user who cannot see the first one's application,
// the admin pages, and the offline API docs. Every request the browser makes must stay on the
// root: anything else is blocked and fails the test. Screenshots of each step go to
// target/browser-screenshots/.
//
//   cd tests/browser && npm ci && node --test   (as root; scripts/test runs it)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  REPO, SHOTS, apiCall, cleanContainers, eventually, fixtures, launchChromium, oakUp, runningTasks,
} from './harness.js';

const APP = 'webshop';
const SERVICE = 'web';
const LOG_LINE = 'dashboard test says hello';

let fx;
let up;
let browser;
let context;
let page;
let base;
/** Requests the browser tried to send anywhere but the root. */
const foreign = [];
/** Console errors and uncaught exceptions of the dashboard. */
const problems = [];

async function newContext(viewport = { width: 1280, height: 900 }) {
  const ctx = await browser.newContext({ viewport });
  // Bounded: a broken step fails in seconds, not after playwright's 30 s default.
  ctx.setDefaultTimeout(15_000);
  await ctx.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(`${base}/`) || url.startsWith('data:')) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  return ctx;
}

function watch(p) {
  // API error answers the test provokes (401, 422, 503) are logged by chromium as failed
  // resources; anything else (an exception, a blocked script or style) is a problem.
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource: the server responded with a status of')) {
      problems.push(`${p.url()}: ${m.text()}`);
    }
  });
  p.on('pageerror', (e) => problems.push(`${p.url()}: ${e.message}`));
  p.on('dialog', (d) => d.accept());
  return p;
}

async function shot(name, p = page, fullPage = true) {
  await p.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
}

async function logIn(p, username, password) {
  await p.goto(`${base}/`);
  await p.getByLabel('Username').fill(username);
  await p.getByLabel('Password').fill(password);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.getByRole('heading', { name: 'Applications' }).waitFor();
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  fx = fixtures();
  cleanContainers(fx.socket);
  up = await oakUp(fx.socket);
  base = up.url;
  const token = (await apiCall(base, 'POST', '/api/auth/login', null, { username: 'Admin', password: 'Admin' })).token;
  await eventually('an active cluster', 60_000, async () => (await apiCall(base, 'GET', '/api/clusters/active', token)).length > 0);
  browser = await launchChromium();
  context = await newContext();
  page = watch(await context.newPage());
});

after(async () => {
  if (browser) await browser.close();
  if (up) {
    await up.stop();
    if (process.exitCode) console.error(`oak up stderr:\n${up.stderr().slice(-4000)}`);
    fs.rmSync(up.dir, { recursive: true, force: true });
  }
  if (fx) cleanContainers(fx.socket);
});

test('the login page has labelled fields and logs Admin in, with the default-password banner', async () => {
  await page.goto(`${base}/`);
  await page.getByLabel('Username').waitFor();
  await page.getByLabel('Log in to an organization').check();
  await page.getByLabel('Organization', { exact: true }).waitFor();
  await page.getByLabel('Log in to an organization').uncheck();
  assert.equal(await page.getByLabel('Organization', { exact: true }).isVisible(), false);
  await shot('01-login');
  await page.getByLabel('Username').fill('Admin');
  await page.getByLabel('Password').fill('wrong');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('wrong user name or password').waitFor();
  await page.getByLabel('Password').fill('Admin');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Applications' }).waitFor();
  await page.getByRole('alert').filter({ hasText: 'still has the default password' }).waitFor();
  // The token is never in the URL.
  const session = JSON.parse(await page.evaluate(() => sessionStorage.getItem('oakestra.session')));
  assert.ok(session.token && !page.url().includes(session.token), page.url());
  await shot('02-applications-empty');
});

test('an application is created with the form', async () => {
  await page.getByLabel('Name', { exact: true }).fill(APP);
  await page.getByLabel('Namespace', { exact: true }).fill('test');
  await page.getByLabel('Description').fill('The getting-started application');
  await page.getByRole('button', { name: 'Create application' }).click();
  await page.getByRole('link', { name: APP }).waitFor();
  await shot('03-application-created');
});

test('an invalid service form shows the validator\'s message next to the field', async () => {
  await page.getByRole('link', { name: APP }).click();
  await page.getByRole('heading', { name: 'Add a service' }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('not valid!');
  await page.getByLabel('Image').fill(fx.image);
  await page.getByLabel('Port').fill('eighty');
  await page.getByRole('button', { name: 'Add service' }).click();
  const name = page.getByLabel('Name', { exact: true });
  await eventually('the Name field marked invalid', 10_000, async () => (await name.getAttribute('aria-invalid')) === 'true');
  const nameError = page.locator('.field[data-field="microservice_name"] .error');
  assert.match(await nameError.textContent(), /not valid|a-zA-Z0-9/i);
  const portError = page.locator('.field[data-field="port"] .error');
  assert.notEqual((await portError.textContent()).trim(), '');
  // Nothing was created.
  assert.equal(await page.locator('.table-wrap').count(), 0);
  await shot('04-service-form-errors');
});

test('a service is added through the form', async () => {
  await page.getByLabel('Name', { exact: true }).fill(SERVICE);
  await page.getByLabel('Namespace', { exact: true }).fill('test');
  await page.getByLabel('Virtualization').selectOption('container');
  await page.getByLabel('Memory (MB)').fill('100');
  await page.getByLabel('vCPUs').fill('1');
  await page.getByLabel('Port').fill('80');
  await page.getByLabel('Image').fill(fx.image);
  await page.getByLabel('Command').fill(`sh -c "echo ${LOG_LINE}; exec /bin/serve"`);
  await page.getByLabel('Environment').fill('GREETING=hello');
  await page.getByRole('button', { name: 'Add service' }).click();
  await page.getByRole('heading', { name: `${SERVICE}.test` }).waitFor();
  await page.getByText('No instance. Press Deploy').waitFor();
  await shot('05-service-page');
});

test('deploy: RUNNING, the instance IP, a log line and a CPU chart with points', async () => {
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const row = page.locator('tr[data-instance="0"]');
  await row.getByText('RUNNING', { exact: true }).waitFor({ timeout: 120_000 });
  const cells = await row.locator('td').allTextContents();
  // #, Status, Cluster, Worker, Node IP, Instance IPs, CPU, Memory
  assert.equal(cells[1], 'RUNNING');
  assert.notEqual(cells[2], '—');
  assert.notEqual(cells[3], '—');
  assert.match(cells[5], /\b10\.\d+\.\d+\.\d+\b/, `instance IPs: ${cells[5]}`);
  assert.ok(runningTasks(fx.socket).length >= 1, 'containerd runs the instance');
  const logs = page.getByRole('region', { name: 'Logs' });
  await logs.getByText(LOG_LINE).waitFor({ timeout: 60_000 });
  await logs.getByText('serving on :80').waitFor({ timeout: 30_000 });
  const cpu = page.locator('figure.chart').filter({ hasText: 'CPU of instance 0' });
  await eventually('a CPU chart with points', 60_000, async () => (await cpu.locator('circle.point').count()) >= 2);
  assert.ok(await page.locator('figure.chart').filter({ hasText: 'Memory of instance 0' }).locator('circle.point').count() >= 1);
  await shot('06-service-running');

  // The same page on a phone: nothing wider than the screen.
  const phone = watch(await (await newContext({ width: 360, height: 780 })).newPage());
  await phone.goto(`${base}/`);
  await phone.evaluate((s) => sessionStorage.setItem('oakestra.session', s),
    await page.evaluate(() => sessionStorage.getItem('oakestra.session')));
  await phone.goto(`${base}/${new URL(page.url()).hash}`);
  await phone.reload();
  await phone.locator('tr[data-instance="0"]').getByText('RUNNING', { exact: true }).waitFor();
  await phone.getByRole('region', { name: 'Logs' }).getByText(LOG_LINE).waitFor({ timeout: 30_000 });
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `the page is ${width}px wide at 360px`);
  await shot('07-service-running-360px', phone);
  for (const [hash, heading] of [['#/applications', 'Applications'], ['#/clusters', 'Clusters'], ['#/admin/users', 'Users'], ['#/admin/tokens', 'Join tokens']]) {
    await phone.goto(`${base}/${hash}`);
    await phone.getByRole('heading', { name: heading, exact: true }).waitFor();
    const w = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w <= 360, `${hash} is ${w}px wide at 360px`);
  }
  await phone.context().close();
});

test('the cluster pages show the cluster and its workers, with the instance on its worker', async () => {
  const service = page.url();
  await page.locator('tr[data-instance="0"] td:nth-child(3) a').click();
  await page.getByRole('heading', { name: 'local', exact: true }).waitFor();
  await page.getByText('active', { exact: true }).first().waitFor();
  await page.getByRole('link', { name: `${SERVICE} #0` }).waitFor();
  // The worker list comes from the cluster itself: the worker's row with what is placed on it.
  const workers = page.getByRole('table', { name: 'Workers' });
  await workers.getByRole('columnheader', { name: 'vCPUs free' }).waitFor();
  const row = workers.locator('tbody tr', { hasText: '1 placed' });
  await row.getByRole('link', { name: `${SERVICE} #0` }).waitFor();
  assert.match(await row.innerText(), /active/);
  assert.match(await row.innerText(), /\d+ cores, [\d.]+ % used/);
  await shot('08-cluster');
  await page.getByRole('link', { name: 'Clusters', exact: true }).click();
  await page.getByRole('link', { name: 'local', exact: true }).waitFor();
  await page.goto(service);
  await page.locator('tr[data-instance="0"]').getByText('RUNNING', { exact: true }).waitFor();
});

test('a second user does not see the first user\'s application', async () => {
  const admin = (await apiCall(base, 'POST', '/api/auth/login', null, { username: 'Admin', password: 'Admin' })).token;
  await apiCall(base, 'POST', '/api/auth/register', admin, { name: 'bob', password: 'bob-secret', roles: ['Application_Provider'] });
  const apps = await apiCall(base, 'GET', '/api/applications', admin);
  const appId = apps.find((a) => a.application_name === APP)._id.$oid;
  const bobContext = await newContext();
  const bob = watch(await bobContext.newPage());
  await logIn(bob, 'bob', 'bob-secret');
  await bob.getByText('You have no application yet').waitFor();
  assert.equal(await bob.getByRole('link', { name: APP }).count(), 0);
  assert.equal(await bob.getByRole('link', { name: 'Users' }).count(), 0, 'no admin pages for bob');
  assert.equal(await bob.getByRole('alert').filter({ hasText: 'default password' }).count(), 0);
  await shot('09-second-user', bob);
  await bob.goto(`${base}/#/applications/${appId}`);
  await bob.getByText(`you have no application with id "${appId}"`).waitFor();
  await bobContext.close();
});

test('undeploy stops the instance and the application is deleted', async () => {
  await page.getByRole('button', { name: 'Undeploy', exact: true }).click();
  await eventually('no RUNNING instance', 60_000,
    async () => (await page.locator('tr[data-instance]').getByText('RUNNING', { exact: true }).count()) === 0);
  await eventually('containerd runs nothing', 60_000, async () => runningTasks(fx.socket).length === 0);
  await shot('10-undeployed');
  await page.getByRole('link', { name: `← ${APP}.test` }).click();
  await page.getByRole('button', { name: 'Delete application' }).click();
  await page.getByRole('heading', { name: 'Applications' }).waitFor();
  await page.getByText('You have no application yet').waitFor();
  await shot('11-application-deleted');
});

test('a descriptor uploaded as a file creates its application; an invalid one shows why', async () => {
  const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'oak-sla-')), 'bad.json');
  fs.writeFileSync(bad, JSON.stringify({ sla_version: 'v9', applications: [] }));
  await page.locator('#sla-file').setInputFiles(bad);
  await page.getByRole('button', { name: 'Upload SLA' }).click();
  await page.getByRole('alert').filter({ hasText: 'sla_version' }).waitFor();
  await page.locator('#sla-file').setInputFiles(path.join(REPO, 'examples/sla-clientsrvr-container.json'));
  await page.getByRole('button', { name: 'Upload SLA' }).click();
  await page.getByRole('link', { name: 'clientsrvr' }).click();
  await page.getByRole('link', { name: 'nginx.test' }).waitFor();
  await page.getByRole('link', { name: 'curl.test' }).waitFor();
  await shot('12-uploaded-descriptor');
  await page.getByRole('button', { name: 'Delete application' }).click();
  await page.getByText('You have no application yet').waitFor();
});

test('an expired or invalid access token is renewed with the refresh token', async () => {
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('oakestra.session'));
    s.token = 'not-a-valid-token';
    sessionStorage.setItem('oakestra.session', JSON.stringify(s));
  });
  await page.reload();
  await page.getByText('You have no application yet').waitFor();
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('oakestra.session')).token);
  assert.notEqual(token, 'not-a-valid-token');
});

test('admin pages: users, organizations and join tokens with the join command', async () => {
  await page.getByRole('link', { name: 'Users' }).click();
  await page.locator('article[data-user="bob"]').waitFor();
  await page.getByRole('link', { name: 'Organizations' }).click();
  await page.getByRole('heading', { name: 'root', exact: true }).waitFor();
  await page.getByRole('link', { name: 'Join tokens' }).click();
  await page.getByLabel('Name', { exact: true }).fill('munich');
  await page.getByRole('button', { name: 'Create token' }).click();
  const created = page.getByRole('region', { name: 'New join token' });
  await created.getByText('--join-token').waitFor();
  await page.getByRole('cell', { name: 'munich', exact: true }).waitFor();
  await shot('13-join-token');
  await page.getByRole('button', { name: /^Revoke token munich/ }).click();
  await eventually('the token revoked', 10_000, async () => (await page.getByRole('cell', { name: 'munich', exact: true }).count()) === 0);
});

test('changing the password removes the banner', async () => {
  await page.getByRole('link', { name: 'Change it now' }).click();
  await page.getByLabel('Current password').fill('Admin');
  await page.getByLabel('New password', { exact: true }).fill('a much better one');
  await page.getByLabel('Repeat the new password').fill('a much better one');
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.getByText('Your password is changed.').waitFor();
  assert.equal(await page.getByRole('alert').filter({ hasText: 'default password' }).count(), 0);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
});

test('/api/docs lists the API\'s operations from the embedded Swagger UI', async () => {
  await page.goto(`${base}/api/docs`);
  await page.locator('.opblock').first().waitFor({ timeout: 30_000 });
  const operations = await page.locator('.opblock').count();
  assert.ok(operations >= 30, `${operations} operations listed`);
  await page.getByText('/api/auth/login', { exact: true }).first().waitFor();
  await shot('14-api-docs', page, false);
});

test('nothing was loaded from another host and the dashboard logged no error', async () => {
  assert.deepEqual(foreign, []);
  assert.deepEqual(problems, []);
});
