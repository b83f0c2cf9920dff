// Dashboard first page load and the root's memory with the dashboard open (benches/RESULTS.md).
//
//   node tests/browser/bench.js [runs]     (OAK_ROOT_BIN: default target/release/oakestra-root)
//
// Starts its own oakestra-root on loopback (temp data dir), then, `runs` times, opens `/` in a
// fresh chromium context (empty cache) and records the bytes on the wire (encoded response
// bodies plus response headers, from playwright's request sizes) and the navigation timing
// (DOMContentLoaded: the module scripts have run and the login form is on the page). Then it
// logs in, opens the applications and clusters pages, lets them poll for 20 s and reads the
// root's VmRSS.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO, launchChromium } from './harness.js';

const runs = Number(process.argv[2] || 10);
const bin = process.env.OAK_ROOT_BIN || path.join(REPO, 'target/release/oakestra-root');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oak-dash-bench-'));
const root = spawn(bin, ['--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--data-dir', dir],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } });
const base = await new Promise((resolve, reject) => {
  let out = '';
  root.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/REST API listening on (http:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  root.on('exit', (c) => reject(new Error(`oakestra-root exited (${c})`)));
});
root.stdout.resume();

const rss = () => {
  const line = fs.readFileSync(`/proc/${root.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]) / 1024;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await sleep(1000);
const idleRss = rss();
const browser = await launchChromium();
const loads = [];
try {
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const requests = [];
    page.on('requestfinished', (r) => requests.push(r));
    await page.goto(`${base}/`, { waitUntil: 'load' });
    await page.getByLabel('Username').waitFor();
    const timing = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0];
      return { ttfb: n.responseStart, interactive: n.domContentLoadedEventEnd, load: n.loadEventEnd };
    });
    let bytes = 0;
    for (const r of requests) {
      const s = await r.sizes();
      bytes += s.responseBodySize + s.responseHeadersSize;
    }
    let decoded = 0;
    for (const r of requests) {
      const res = await r.response();
      decoded += res ? (await res.body()).length : 0;
    }
    loads.push({ ...timing, bytes, decoded, files: requests.length });
    await context.close();
  }

  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.getByLabel('Username').fill('Admin');
  await page.getByLabel('Password').fill('Admin');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Applications' }).waitFor();
  await page.goto(`${base}/#/clusters`);
  await page.getByRole('heading', { name: 'Clusters' }).waitFor();
  await sleep(20_000);
  const openRss = rss();

  const f = (x) => x.toFixed(1);
  console.log(`runs: ${runs}, root: ${bin}`);
  console.log(`first load of /: ${loads[0].files} requests, ${median(loads.map((l) => l.bytes))} bytes on the wire (${median(loads.map((l) => l.decoded))} bytes decoded)`);
  console.log(`time to first byte: median ${f(median(loads.map((l) => l.ttfb)))} ms`);
  console.log(`DOMContentLoaded (modules run, login form shown): median ${f(median(loads.map((l) => l.interactive)))} ms, max ${f(Math.max(...loads.map((l) => l.interactive)))} ms`);
  console.log(`load event: median ${f(median(loads.map((l) => l.load)))} ms`);
  console.log(`root VmRSS: ${f(idleRss)} MiB idle after start, ${f(openRss)} MiB after ${runs} page loads, a login and 20 s with the dashboard open`);
} finally {
  await browser.close();
  root.kill('SIGTERM');
  await new Promise((r) => root.once('exit', r));
  fs.rmSync(dir, { recursive: true, force: true });
}
