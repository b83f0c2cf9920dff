// What the dashboard's browser tests need around the browser: the test containerd and
// registry (scripts/fixtures), the busybox test image, `oak up` with real containers on free
// loopback ports, Debian's chromium through playwright-core, and the API for set-up steps.

import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../..');
export const SHOTS = path.join(REPO, 'target/browser-screenshots');
/** containerd namespace of this test's worker, apart from the Rust tests' ones. */
export const NAMESPACE = 'oak-dashboard-test';

/** playwright-core from OAK_BROWSER_NODE_MODULES (scripts/setup installs it there) or ./node_modules. */
export function playwright() {
  const modules = process.env.OAK_BROWSER_NODE_MODULES || path.join(here, 'node_modules');
  return createRequire(path.join(modules, 'noop.js'))('playwright-core');
}

function script(name, args = [], env = {}) {
  return execFileSync('bash', [path.join(REPO, 'scripts/fixtures', name), ...args], {
    encoding: 'utf8', env: { ...process.env, ...env }, timeout: 180_000,
  }).trim();
}

/** containerd socket, registry address and the pushed image reference. */
export function fixtures() {
  const socket = script('containerd.sh');
  const registry = script('registry.sh');
  const image = script('busybox-image.sh', [registry, 'oaktest/dashboard:v1']);
  return { socket, registry, image };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function ctr(socket, args) {
  try {
    return execFileSync('timeout', ['30', 'ctr', '--address', socket, '--namespace', NAMESPACE, ...args], { encoding: 'utf8' });
  } catch {
    return '';
  }
}

/** Ids of the running tasks of the test namespace. */
export function runningTasks(socket) {
  return ctr(socket, ['tasks', 'ls']).split('\n').slice(1).filter((l) => l.includes('RUNNING')).map((l) => l.split(/\s+/)[0]);
}

/** Removes every task and container of the test namespace (leftovers of a killed run). */
export function cleanContainers(socket) {
  for (const id of ctr(socket, ['containers', 'ls', '-q']).split('\n').filter(Boolean)) {
    ctr(socket, ['tasks', 'kill', '-s', 'SIGKILL', id]);
    ctr(socket, ['tasks', 'rm', '-f', id]);
    ctr(socket, ['containers', 'rm', id]);
  }
}

/** `oak up` with real containers; resolves with its API URL once it prints it. */
export async function oakUp(socket) {
  const oak = process.env.OAK_BIN || path.join(REPO, 'target/debug/oak');
  if (!fs.existsSync(oak)) throw new Error(`${oak} is missing: build the workspace first (scripts/test does)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oak-dashboard-'));
  const args = ['up', '--data-dir', path.join(dir, 'state'),
    '--api-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0',
    '--cluster-listen', `127.0.0.1:${await freePort()}`, '--mqtt-listen', `127.0.0.1:${await freePort()}`,
    '--runtime', 'containerd', '--containerd-socket', socket, '--containerd-namespace', NAMESPACE,
    '--stop-grace', '1s', '--scheduler', 'first-fit', '--worker-cpus', '4', '--worker-memory-mb', '4096',
    // oak up's overlay is on with real containers: names of its own, apart from other set-ups.
    '--overlay-tag', 'oakdash'];
  const stderr = fs.openSync(path.join(dir, 'up.err'), 'w');
  const child = spawn(oak, args, { stdio: ['ignore', 'pipe', stderr], env: { ...process.env, RUST_LOG: 'warn' } });
  const url = await new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`oak up printed no API address in 60 s; see ${dir}/up.err`)), 60_000);
    child.stdout.on('data', (chunk) => {
      buffer += chunk;
      const m = buffer.match(/ API +(http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`oak up exited (${code}); see ${dir}/up.err`)));
  });
  child.stdout.resume();
  return {
    url, dir, child,
    stderr: () => fs.readFileSync(path.join(dir, 'up.err'), 'utf8'),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const exited = await Promise.race([
        new Promise((r) => child.once('exit', () => r(true))),
        new Promise((r) => setTimeout(() => r(false), 20_000)),
      ]);
      if (!exited) child.kill('SIGKILL');
    },
  };
}

/** Calls the REST API (set-up steps that are not what a test is about). */
export async function apiCall(base, method, route, token, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + route, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

/** Waits until `probe()` answers something truthy. */
export async function eventually(what, ms, probe) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Debian's chromium, headless, with a fresh profile and nothing that calls home. */
export async function launchChromium() {
  const { chromium } = playwright();
  return chromium.launch({
    executablePath: process.env.OAK_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage'],
  });
}
