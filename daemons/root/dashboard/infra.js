// Clusters: the list with their resources, and a cluster's page with its workers.

import { api, idOf, me } from './api.js';
import { ago, h, num, percent, statusText, table } from './ui.js';

function mb(value) {
  return typeof value === 'number' ? `${Math.round(value)} MB` : '—';
}

function state(c) {
  return h('span', { class: `status ${c.active ? 'ok' : 'bad'}` }, c.active ? 'active' : 'inactive');
}

export async function clustersPage(main, ctx) {
  document.title = 'Clusters · Oakestra-rs';
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  main.append(h('h1', {}, 'Clusters'), list);
  ctx.every(5000, async () => {
    const clusters = await api('GET', '/api/clusters');
    if (!ctx.current) return;
    list.replaceChildren(clusters.length === 0
      ? h('p', { class: 'muted' }, 'No cluster has joined yet. Create a join token (Join tokens) and start oakestra-cluster with it.')
      : table('Clusters', ['Cluster', 'State', 'Location', 'Workers', 'CPU cores', 'CPU used', 'Memory free / total', 'Largest worker free', 'Last report'],
        clusters.map((c) => h('tr', {},
          h('td', {}, h('a', { href: `#/clusters/${encodeURIComponent(c._id)}` }, c.cluster_name)),
          h('td', {}, state(c)),
          h('td', {}, c.cluster_location),
          h('td', {}, String(c.active_nodes ?? 0)),
          h('td', {}, String(c.total_cpu_cores ?? 0)),
          h('td', {}, percent(c.aggregated_cpu_percent)),
          h('td', {}, `${mb(c.memory_free_in_mb)} / ${mb(c.memory_in_mb)}`),
          h('td', {}, `${c.max_worker_cpu_cores ?? 0} cores, ${mb(c.max_worker_memory_free_in_mb)}`),
          h('td', {}, ago(c.last_modified_timestamp))))));
  });
}

/** The services whose instances the caller may see: every service for an Admin, else their own. */
async function visibleServices() {
  const user = me();
  if (user.isAdmin) return api('GET', '/api/services');
  const account = await api('GET', `/api/user/${encodeURIComponent(user.name)}`);
  const apps = await api('GET', `/api/applications/${idOf(account._id)}`);
  const lists = await Promise.all(apps.map((a) => api('GET', `/api/services/${idOf(a._id)}`)));
  return lists.flat();
}

export async function clusterPage(main, ctx, id) {
  const facts = h('dl', { class: 'facts card' });
  const workers = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const title = h('h1', {}, id);
  main.append(h('p', {}, h('a', { href: '#/clusters' }, '← Clusters')), title, facts,
    h('h2', {}, 'Workers'),
    h('p', { class: 'hint' }, 'Every worker the cluster knows, asked from the cluster on each refresh, with the instances you can see on it.'),
    workers);
  ctx.every(5000, async () => {
    const [clusters, services, listed] = await Promise.all([
      api('GET', '/api/clusters'),
      visibleServices(),
      api('GET', `/api/clusters/${encodeURIComponent(id)}/workers`).then(
        (list) => ({ list }), (error) => ({ error })),
    ]);
    if (!ctx.current) return;
    const c = clusters.find((x) => x._id === id);
    if (!c) {
      title.textContent = 'Unknown cluster';
      facts.replaceChildren(h('dt', {}, 'Id'), h('dd', {}, id));
      return;
    }
    document.title = `${c.cluster_name} · Oakestra-rs`;
    title.textContent = c.cluster_name;
    const rows = [
      ['Id', h('span', { class: 'mono' }, c._id)],
      ['State', state(c)],
      ['Location', c.cluster_location],
      ['Address', c.ip ? `${c.ip}${c.port ? `:${c.port}` : ''}` : '—'],
      ['Active workers', String(c.active_nodes ?? 0)],
      ['CPU', `${c.total_cpu_cores ?? 0} cores, ${percent(c.aggregated_cpu_percent)} used`],
      ['Memory', `${mb(c.memory_free_in_mb)} free of ${mb(c.memory_in_mb)} (${percent(c.memory_percent)} used)`],
      ['Largest worker free', `${c.max_worker_cpu_cores ?? 0} cores, ${mb(c.max_worker_memory_free_in_mb)}`],
      ['Runtimes', (c.virtualization || []).join(', ') || '—'],
      ['Architectures', (c.architectures || []).join(', ') || '—'],
      ['Registered', ago(c.registered_at)],
      ['Last report', ago(c.last_modified_timestamp)],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    if (listed.error) {
      workers.replaceChildren(h('p', { class: 'muted' }, `The worker list is not available: ${listed.error.message}`));
      return;
    }
    const mine = new Map();
    for (const s of services) {
      for (const inst of s.instance_list || []) {
        if (inst.cluster_id !== id || !inst.worker_id) continue;
        if (!mine.has(inst.worker_id)) mine.set(inst.worker_id, []);
        mine.get(inst.worker_id).push({ s, inst });
      }
    }
    const now = Date.now() / 1000;
    workers.replaceChildren(listed.list.length === 0
      ? h('p', { class: 'muted' }, 'No worker has registered with this cluster yet.')
      : table('Workers', ['Worker', 'State', 'Node IP', 'CPU', 'vCPUs free', 'Memory free / total', 'Instances', 'Last report'],
        listed.list.map((w) => h('tr', {},
          h('td', {}, w.host || w.id, h('div', { class: 'mono muted' }, w.id)),
          h('td', {}, state(w)),
          h('td', { class: 'mono' }, w.ip || '—'),
          h('td', {}, `${w.cpu_cores} cores, ${percent(w.cpu_percent)} used`),
          h('td', {}, `${num(w.vcpus_allocatable)?.toFixed(2) ?? '—'} of ${w.cpu_cores}`),
          h('td', {}, `${mb(w.memory_allocatable_in_mb)} / ${mb(w.memory_in_mb)}`),
          h('td', { class: 'wrap' }, `${w.instances} placed`, ...(mine.get(w.id) || []).map(({ s, inst }) => h('div', {},
            h('a', { href: `#/services/${idOf(s._id)}` }, `${s.service_name} #${inst.instance_number}`), ' ',
            statusText(inst.status)))),
          h('td', {}, ago(now - w.seconds_since_report))))));
  });
}
