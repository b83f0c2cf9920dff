// Applications: the list, creating one (form or descriptor file), an application's page with
// its services, and the form that adds a service.

import { api, idOf, me } from './api.js';
import { busy, clearErrors, field, formError, h, notice, readJsonFile, showErrors, statusText, table } from './ui.js';

/** The applications of the caller (everyone, Admins included, sees only their own here). */
async function myApplications() {
  const user = await api('GET', `/api/user/${encodeURIComponent(me().name)}`);
  return api('GET', `/api/applications/${idOf(user._id)}`);
}

/** The field a violation of `/applications/0/<key>` belongs to. */
function applicationField(path) {
  const m = path.match(/^\/applications\/0\/(application_name|application_namespace|application_desc)$/);
  return m ? m[1] : null;
}

export async function applicationsPage(main, ctx) {
  document.title = 'Applications · Oakestra-rs';
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const error = formError();
  const submit = h('button', { type: 'submit' }, 'Create application');
  const form = h('form', { class: 'card grid three', novalidate: true },
    field('Name', 'application_name', { hint: 'Letters and digits, up to 30.' }),
    field('Namespace', 'application_namespace', { hint: 'Letters and digits, up to 30.' }),
    field('Description', 'application_desc'),
    error, h('div', { class: 'actions' }, submit));

  const refresh = async () => {
    const apps = await myApplications();
    if (!ctx.current) return;
    list.replaceChildren(apps.length === 0
      ? h('p', { class: 'muted' }, 'You have no application yet. Create one below.')
      : table('Your applications', ['Name', 'Namespace', 'Description', 'Services', ''], apps.map((a) => {
        const id = idOf(a._id);
        const del = h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete application ${a.application_name}` }, 'Delete');
        del.addEventListener('click', () => deleteApplication(del, a, refresh));
        return h('tr', {},
          h('td', {}, h('a', { href: `#/applications/${id}` }, a.application_name)),
          h('td', {}, a.application_namespace),
          h('td', { class: 'wrap' }, a.application_desc || ''),
          h('td', {}, String((a.microservices || []).length)),
          h('td', {}, del));
      })));
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const data = new FormData(form);
    const sla = {
      sla_version: 'v2.0',
      customerID: me().name,
      applications: [{
        applicationID: '',
        application_name: String(data.get('application_name')).trim(),
        application_namespace: String(data.get('application_namespace')).trim(),
        application_desc: String(data.get('application_desc')),
        microservices: [],
      }],
    };
    await busy(submit, async () => {
      await api('POST', '/api/application', sla);
      form.reset();
      notice(`Application ${sla.applications[0].application_name} created.`);
      await refresh();
    }, (e) => showErrors(form, e, applicationField));
  });

  main.append(
    h('h1', {}, 'Applications'), list,
    h('h2', {}, 'Create an application'), form,
    h('h2', {}, 'Or upload a deployment descriptor'),
    uploadForm('Creates every application of an SLA v2.0 descriptor, with its services.', async (sla) => {
      if (!Array.isArray(sla.applications)) {
        throw Object.assign(new Error('this descriptor has no "applications"; to add its microservices, upload it on an application\'s page'), { violations: [] });
      }
      await api('POST', '/api/application', sla);
      notice('Descriptor uploaded.');
      await refresh();
    }));
  await refresh();
}

async function deleteApplication(button, app, after) {
  if (!window.confirm(`Delete application ${app.application_name} with its services and instances?`)) return;
  await busy(button, async () => {
    await api('DELETE', `/api/application/${idOf(app._id)}`);
    notice(`Application ${app.application_name} deleted.`);
    await after();
  });
}

/** A file input and an "Upload SLA" button; `send(json)` does the rest. */
function uploadForm(text, send) {
  const input = h('input', { type: 'file', id: 'sla-file', name: 'sla', accept: '.json,application/json' });
  const error = formError();
  const submit = h('button', { type: 'submit', class: 'secondary' }, 'Upload SLA');
  const form = h('form', { class: 'card', novalidate: true },
    h('p', { class: 'muted' }, text),
    h('div', { class: 'field' }, h('label', { for: 'sla-file' }, 'Descriptor file (JSON)'), input),
    error, h('div', { class: 'row' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    await busy(submit, async () => {
      await send(await readJsonFile(input));
      form.reset();
    }, (e) => showErrors(form, e));
  });
  return form;
}

export async function applicationPage(main, ctx, id) {
  const app = await api('GET', `/api/application/${id}`);
  if (!ctx.current) return;
  document.title = `${app.application_name} · Oakestra-rs`;
  const services = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete application');
  del.addEventListener('click', () => deleteApplication(del, app, async () => ctx.go('#/applications')));

  main.append(
    h('p', {}, h('a', { href: '#/applications' }, '← Applications')),
    h('div', { class: 'row spread' }, h('h1', {}, `${app.application_name}.${app.application_namespace}`), del),
    app.application_desc ? h('p', {}, app.application_desc) : null,
    h('h2', {}, 'Services'), services,
    h('h2', {}, 'Add a service'), serviceForm(app, ctx),
    h('h2', {}, 'Or upload services from a descriptor'),
    uploadForm('Adds the microservices of a descriptor (a whole SLA with one application, or {"microservices": [...]}) to this application.',
      async (sla) => {
        const answer = await api('POST', '/api/service', descriptorFor(app, sla));
        notice(`${answer.deployed_services.length} service(s) added.`);
      }));

  ctx.every(3000, async () => {
    const list = await api('GET', `/api/services/${id}`);
    if (!ctx.current) return;
    services.replaceChildren(list.length === 0
      ? h('p', { class: 'muted' }, 'No service yet. Add one below.')
      : table('Services', ['Service', 'Status', 'Instances', 'Image', 'Service IP'], list.map((s) => {
        const running = (s.instance_list || []).filter((i) => i.status === 'RUNNING').length;
        return h('tr', {},
          h('td', {}, h('a', { href: `#/services/${idOf(s._id)}` }, `${s.service_name}.${s.service_ns}`)),
          h('td', {}, statusText(s.status)),
          h('td', {}, `${(s.instance_list || []).length} (${running} running)`),
          h('td', { class: 'wrap mono' }, s.image || ''),
          h('td', { class: 'mono' }, s.RR_ip || ''));
      })));
  });
}

/** The descriptor POST /api/service takes, from an uploaded file, for application `app`. */
function descriptorFor(app, sla) {
  let microservices = sla.microservices;
  if (!microservices && Array.isArray(sla.applications)) {
    if (sla.applications.length !== 1) {
      throw Object.assign(new Error(`the descriptor has ${sla.applications.length} applications; upload one with exactly one, or use the applications page`), { violations: [] });
    }
    microservices = sla.applications[0].microservices;
  }
  return {
    sla_version: sla.sla_version || 'v2.0',
    customerID: me().name,
    applications: [{
      applicationID: idOf(app._id),
      application_name: app.application_name,
      application_namespace: app.application_namespace,
      application_desc: app.application_desc || '',
      microservices,
    }],
  };
}

/** A number when the text is one, the text otherwise (the validator then says what is wrong). */
function numberOrText(text) {
  const t = String(text || '').trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

/** A command line as an argument list: a JSON array, or words with '…' and "…" quoting. */
export function splitCommand(text) {
  const t = text.trim();
  if (t === '') return [];
  if (t.startsWith('[')) return JSON.parse(t);
  const out = [];
  let word = null;
  let quote = null;
  for (const c of t) {
    if (quote) {
      if (c === quote) quote = null;
      else word += c;
    } else if (c === '"' || c === '\'') {
      quote = c;
      word = word === null ? '' : word;
    } else if (/\s/.test(c)) {
      if (word !== null) out.push(word);
      word = null;
    } else {
      word = (word === null ? '' : word) + c;
    }
  }
  if (quote) throw new Error(`unclosed ${quote}`);
  if (word !== null) out.push(word);
  return out;
}

const SERVICE_FIELDS = new Set(['microservice_name', 'microservice_namespace', 'virtualization', 'memory', 'vcpus',
  'port', 'code', 'cmd', 'environment', 'constraints', 'arch']);

/** The form field a violation of `/applications/0/microservices/0/…` belongs to. */
function serviceField(path) {
  const m = path.match(/^\/applications\/0\/microservices\/0\/([^/]+)(?:\/([^/]+))?/);
  if (!m) return null;
  if (m[1] === 'addresses') return m[2] === 'rr_ip' || m[2] === 'closest_ip' ? m[2] : null;
  return SERVICE_FIELDS.has(m[1]) ? m[1] : null;
}

function serviceForm(app, ctx) {
  const error = formError();
  const submit = h('button', { type: 'submit' }, 'Add service');
  const form = h('form', { class: 'card grid', novalidate: true },
    field('Name', 'microservice_name', { hint: 'Letters and digits, up to 30.' }),
    field('Namespace', 'microservice_namespace', { value: app.application_namespace }),
    field('Virtualization', 'virtualization', {
      value: 'container',
      options: [{ value: 'container', label: 'Container' }, { value: 'unikernel', label: 'Unikernel' }],
    }),
    field('Image', 'code', { placeholder: 'docker.io/library/nginx:latest', hint: 'Container image, or one kernel URL per architecture for a unikernel.' }),
    field('Memory (MB)', 'memory', { value: '100', inputmode: 'numeric' }),
    field('vCPUs', 'vcpus', { value: '1', inputmode: 'numeric' }),
    field('Port', 'port', { placeholder: '80:80/tcp', hint: 'host[:container][/tcp|udp], several joined by ;' }),
    field('Architectures', 'arch', { placeholder: 'amd64,arm64', hint: 'Unikernels: one per kernel URL, comma-separated.' }),
    field('Command', 'cmd', { wide: true, placeholder: 'sh -c "echo hello; exec httpd -f -p 80"', hint: 'Words, with "…" or \'…\' quoting, or a JSON array. Empty: the image\'s own.' }),
    field('Environment', 'environment', { textarea: true, placeholder: 'KEY=VALUE', hint: 'One KEY=VALUE per line.' }),
    field('Round-robin IP (rr_ip)', 'rr_ip', { placeholder: '10.30.55.55', hint: 'Optional service IP in 10.30.0.0/16; allocated when empty.' }),
    field('Closest IP (closest_ip)', 'closest_ip', { placeholder: '10.30.55.56', hint: 'Optional; allocated when empty.' }),
    field('Placement constraints', 'constraints', {
      textarea: true, wide: true, placeholder: '[{"type": "direct", "cluster": "local"}]',
      hint: 'Optional JSON array: direct (cluster, node), clusters (allowed), geo (location, threshold), latency (area, threshold).',
    }),
    error, h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const data = new FormData(form);
    const text = (k) => String(data.get(k) || '').trim();
    const local = [];
    const ms = {
      microserviceID: '',
      microservice_name: text('microservice_name'),
      microservice_namespace: text('microservice_namespace'),
      virtualization: text('virtualization'),
      code: text('code'),
      memory: numberOrText(data.get('memory')),
      vcpus: numberOrText(data.get('vcpus')),
      vgpus: 0, vtpus: 0, bandwidth_in: 0, bandwidth_out: 0, storage: 0,
      state: '', port: text('port'), added_files: [],
    };
    try {
      ms.cmd = splitCommand(String(data.get('cmd') || ''));
    } catch (e) {
      local.push({ path: '/applications/0/microservices/0/cmd', message: `not a command line: ${e.message}` });
    }
    const env = String(data.get('environment') || '').split('\n').map((l) => l.trim()).filter(Boolean);
    if (env.length) ms.environment = env;
    const addresses = {};
    if (text('rr_ip')) addresses.rr_ip = text('rr_ip');
    if (text('closest_ip')) addresses.closest_ip = text('closest_ip');
    if (Object.keys(addresses).length) ms.addresses = addresses;
    if (text('arch')) ms.arch = text('arch').split(',').map((a) => a.trim()).filter(Boolean);
    if (text('constraints')) {
      try {
        ms.constraints = JSON.parse(text('constraints'));
      } catch (e) {
        local.push({ path: '/applications/0/microservices/0/constraints', message: `not JSON: ${e.message}` });
      }
    }
    if (local.length) {
      showErrors(form, { message: '', violations: local }, serviceField);
      return;
    }
    const sla = {
      sla_version: 'v2.0',
      customerID: me().name,
      applications: [{
        applicationID: idOf(app._id),
        application_name: app.application_name,
        application_namespace: app.application_namespace,
        application_desc: app.application_desc || '',
        microservices: [ms],
      }],
    };
    await busy(submit, async () => {
      const answer = await api('POST', '/api/service', sla);
      notice(`Service ${ms.microservice_name} added.`);
      ctx.go(`#/services/${answer.job_id}`);
    }, (e) => showErrors(form, e, serviceField));
  });
  return form;
}
