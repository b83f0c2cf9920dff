// A service's page: deploy and undeploy, live status by short polling, the instance table,
// CPU and memory charts per instance, and the instance's logs (tail, follow).

import { api } from './api.js';
import { busy, checkbox, h, notice, num, percent, statusText, table } from './ui.js';
import { lineChart } from './chart.js';

/** Poll period while something is changing, and once the service is steady. */
const FAST_MS = 1000;
const STEADY_MS = 2000;
const LOG_MS = 2000;
/** Samples kept per instance and metric (client side, about 30 min at 2 s). */
const MAX_SAMPLES = 900;

const STEADY = new Set(['RUNNING', 'COMPLETED', 'FAILED', 'DEAD', 'UNDEPLOYED']);

/** `cpu_history`/`memory_history` entries (`{value, timestamp}`) as chart points. */
function fromHistory(history) {
  return (history || [])
    .map((s) => ({ t: Date.parse(s.timestamp), v: num(s.value) }))
    .filter((p) => Number.isFinite(p.t) && p.v !== null);
}

/** Merges two point lists by time, dropping points less than 500 ms apart. */
function merge(a, b) {
  const all = [...a, ...b].sort((x, y) => x.t - y.t);
  const out = [];
  for (const p of all) if (!out.length || p.t - out[out.length - 1].t >= 500) out.push(p);
  return out.slice(-MAX_SAMPLES);
}

export async function servicePage(main, ctx, id) {
  let service = await api('GET', `/api/service/${id}`);
  if (!ctx.current) return;
  document.title = `${service.service_name} · Oakestra-rs`;
  /** instance number → {cpu: [{t, v}], mem: [{t, v}]}, sampled at each poll. */
  const samples = new Map();

  const summary = h('dl', { class: 'facts card' });
  const instances = h('div', {});
  const charts = h('div', { class: 'charts' });
  const deploy = h('button', { type: 'button' }, 'Deploy');
  const undeploy = h('button', { type: 'button', class: 'secondary' }, 'Undeploy');
  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete service');
  const appLink = `#/applications/${service.applicationID}`;

  deploy.addEventListener('click', () => busy(deploy, async () => {
    const answer = await api('POST', `/api/service/${id}/instance`);
    notice(`Instance ${answer.instance.instance_number}: ${answer.instance.status || 'requested'}.`);
    await poll();
  }));
  undeploy.addEventListener('click', () => busy(undeploy, async () => {
    await api('DELETE', `/api/service/${id}/instance/-1`);
    notice('Every instance is being undeployed.');
    await poll();
  }));
  remove.addEventListener('click', () => {
    if (!window.confirm(`Delete service ${service.service_name} and its instances?`)) return;
    busy(remove, async () => {
      await api('DELETE', `/api/service/${id}`);
      notice(`Service ${service.service_name} deleted.`);
      ctx.go(appLink);
    });
  });

  const logs = logsRegion(id, ctx);

  main.append(
    h('p', {}, h('a', { href: appLink }, `← ${service.app_name}.${service.app_ns}`)),
    h('h1', {}, `${service.service_name}.${service.service_ns}`),
    h('div', { class: 'row' }, deploy, undeploy, remove),
    summary,
    h('h2', {}, 'Instances'), instances,
    h('h2', {}, 'Usage'), charts,
    logs.element);

  function sample(list) {
    const now = Date.now();
    for (const inst of list) {
      const n = inst.instance_number;
      if (!samples.has(n)) samples.set(n, { cpu: [], mem: [] });
      const s = samples.get(n);
      const cpu = num(inst.cpu_percent);
      const mem = num(inst.memory_percent);
      if (cpu !== null) s.cpu = merge(s.cpu, [{ t: now, v: cpu }]);
      if (mem !== null) s.mem = merge(s.mem, [{ t: now, v: mem }]);
    }
  }

  function renderSummary() {
    const m = service;
    const facts = [
      ['Status', statusText(m.status)],
      ['Detail', m.status_detail || '—'],
      ['Image', h('span', { class: 'mono' }, m.image || '—')],
      ['Job name', h('span', { class: 'mono' }, m.job_name)],
      ['Service IP (round robin)', h('span', { class: 'mono' }, [m.RR_ip, m.RR_ip_v6].filter(Boolean).join(', ') || '—')],
      ['Closest IP', h('span', { class: 'mono' }, [m.Closest_ip, m.Closest_ip_v6].filter(Boolean).join(', ') || '—')],
      ['Requirements', `${m.memory ?? '—'} MB, ${m.vcpus ?? '—'} vCPU(s), ${m.virtualization}`],
      ['Port', m.port || '—'],
    ];
    summary.replaceChildren(...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  function renderInstances() {
    const list = service.instance_list || [];
    if (list.length === 0) {
      instances.replaceChildren(h('p', { class: 'muted' }, 'No instance. Press Deploy to start one.'));
      charts.replaceChildren(h('p', { class: 'muted' }, 'Charts appear once an instance runs.'));
      return;
    }
    instances.replaceChildren(table('Instances',
      ['#', 'Status', 'Cluster', 'Worker', 'Node IP', 'Instance IPs', 'CPU', 'Memory', ''],
      list.map((inst) => {
        const n = inst.instance_number;
        const stop = h('button', { type: 'button', class: 'secondary small', 'aria-label': `Undeploy instance ${n}` }, 'Undeploy instance');
        stop.addEventListener('click', () => busy(stop, async () => {
          await api('DELETE', `/api/service/${id}/instance/${n}`);
          notice(`Instance ${n} is being undeployed.`);
          await poll();
        }));
        return h('tr', { dataset: { instance: String(n) } },
          h('td', {}, String(n)),
          h('td', { title: inst.status_detail || '' }, statusText(inst.status)),
          h('td', {}, inst.cluster_id ? h('a', { href: `#/clusters/${encodeURIComponent(inst.cluster_id)}` }, inst.cluster_id) : '—'),
          h('td', { class: 'mono' }, inst.worker_id || '—'),
          h('td', { class: 'mono' }, inst.host_ip || inst.publicip || '—'),
          h('td', { class: 'mono' }, [inst.instance_ip, inst.instance_ip_v6].filter(Boolean).join(', ') || '—'),
          h('td', {}, percent(inst.cpu_percent)),
          h('td', {}, percent(inst.memory_percent)),
          h('td', {}, stop));
      })));
    charts.replaceChildren(...list.flatMap((inst) => {
      const n = inst.instance_number;
      const s = samples.get(n) || { cpu: [], mem: [] };
      return [
        lineChart(`CPU of instance ${n}`, '%', merge(fromHistory(inst.cpu_history), s.cpu), 'cpu'),
        lineChart(`Memory of instance ${n}`, '%', merge(fromHistory(inst.memory_history), s.mem), 'mem'),
      ];
    }));
  }

  async function poll() {
    const fresh = await api('GET', `/api/service/${id}`);
    if (!ctx.current) return;
    service = fresh;
    sample(service.instance_list || []);
    renderSummary();
    renderInstances();
    logs.instances(service.instance_list || []);
  }

  // Short polling: fast while an instance is on its way, slower once all are steady.
  let timer = null;
  let stopped = false;
  ctx.onLeave(() => { stopped = true; clearTimeout(timer); });
  const loop = async () => {
    if (stopped) return;
    try {
      await poll();
    } catch (e) {
      if (e.status === 404) {
        main.replaceChildren(h('h1', {}, 'Service gone'), h('p', {}, 'This service no longer exists. ', h('a', { href: appLink }, 'Back to its application.')));
        return;
      }
    }
    const changing = (service.instance_list || []).some((i) => !STEADY.has(i.status));
    if (!stopped) timer = setTimeout(loop, changing ? FAST_MS : STEADY_MS);
  };
  renderSummary();
  await loop();
}

/** The "Logs" region: which instance, how many lines, follow, and the text. */
function logsRegion(serviceId, ctx) {
  const select = h('select', { id: 'logs-instance', name: 'instance' });
  const tail = h('input', { id: 'logs-tail', name: 'tail', type: 'text', inputmode: 'numeric', value: '200', size: 5 });
  const follow = checkbox('Follow', 'follow', true);
  const refresh = h('button', { type: 'button', class: 'secondary small' }, 'Refresh');
  const source = h('p', { class: 'hint', 'aria-live': 'polite' });
  const text = h('pre', { class: 'logs', tabindex: '0', 'aria-label': 'Log lines' });
  const element = h('section', { 'aria-labelledby': 'logs-heading', role: 'region' },
    h('h2', { id: 'logs-heading' }, 'Logs'),
    h('div', { class: 'row' },
      h('label', { for: 'logs-instance' }, 'Instance'), select,
      h('label', { for: 'logs-tail' }, 'Lines'), tail, follow, refresh),
    source, text);
  let known = '';
  let inFlight = false;
  /** instance number → its status, for the instances a worker runs (or ran). */
  let placed = new Map();

  async function load() {
    const n = select.value;
    if (n === '' || inFlight) return;
    if (!placed.has(n)) {
      source.textContent = `Instance ${n} is not on a worker yet; its logs appear once it runs.`;
      return;
    }
    inFlight = true;
    try {
      const answer = await api('GET', `/api/service/${serviceId}/instance/${n}/logs?tail=${encodeURIComponent(tail.value.trim() || '200')}`);
      if (!ctx.current) return;
      const atEnd = text.scrollTop + text.clientHeight >= text.scrollHeight - 8;
      text.textContent = answer.logs || '';
      if (atEnd) text.scrollTop = text.scrollHeight;
      source.textContent = answer.source === 'worker'
        ? `Instance ${n} (${answer.status || 'no status'}): read from its worker just now.`
        : `Instance ${n} (${answer.status || 'no status'}): the tail its worker last reported (${answer.source_detail || 'worker not asked'}).`;
    } catch (e) {
      if (ctx.current) source.textContent = e.message;
    } finally {
      inFlight = false;
    }
  }

  refresh.addEventListener('click', load);
  select.addEventListener('change', () => { text.textContent = ''; load(); });
  let timer = null;
  let started = false;
  let stopped = false;
  ctx.onLeave(() => { stopped = true; clearTimeout(timer); });
  const loop = async () => {
    if (stopped) return;
    if (follow.querySelector('input').checked) await load();
    if (!stopped) timer = setTimeout(loop, LOG_MS);
  };

  return {
    element,
    /** Keeps the instance choice in step with the service's instances. */
    instances(list) {
      const numbers = list.map((i) => String(i.instance_number));
      placed = new Map(list.filter((i) => i.worker_id || i.logs).map((i) => [String(i.instance_number), i.status]));
      const key = list.map((i) => `${i.instance_number}:${i.status}`).join(',');
      if (key === known) return;
      const before = select.value;
      known = key;
      select.replaceChildren(...list.map((i) => h('option', { value: String(i.instance_number) }, `${i.instance_number} (${i.status || '—'})`)));
      if (numbers.includes(before)) select.value = before;
      else if (numbers.length) {
        // The newest instance is the one people just deployed.
        select.value = numbers[numbers.length - 1];
      }
      if (numbers.length === 0) {
        text.textContent = '';
        source.textContent = 'No instance to show the logs of.';
      }
      if (!started) {
        started = true;
        loop();
      } else if (numbers.length && select.value !== before) load();
    },
  };
}
