// Admin pages: users (add, delete, roles), organizations (create, members, delete) and cluster
// join tokens (create, list, revoke, with the command line a cluster joins with).

import { api, idOf, me } from './api.js';
import { busy, checkbox, clearErrors, field, formError, h, notice, showErrors, table } from './ui.js';

const ROLES = ['Admin', 'Organization_Admin', 'Application_Provider', 'Infrastructure_Provider'];

/** Role checkboxes in a fieldset; `checkedRoles(fieldset)` reads them back. */
function rolesFieldset(legend, roles, prefix) {
  return h('fieldset', { class: 'roles' }, h('legend', {}, legend),
    ...ROLES.map((r) => checkbox(r.replace(/_/g, ' '), `${prefix}role`, roles.includes(r), { value: r })));
}

function checkedRoles(box) {
  return [...box.querySelectorAll('input[type=checkbox]:checked')].map((i) => i.value);
}

export async function usersPage(main, ctx) {
  document.title = 'Users · Oakestra-rs';
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const error = formError();
  const submit = h('button', { type: 'submit' }, 'Add user');
  const roles = rolesFieldset('Roles', ['Application_Provider'], 'new-');
  const form = h('form', { class: 'card grid', novalidate: true },
    field('Username', 'name', { autocomplete: 'off' }),
    field('Password', 'password', { type: 'password', autocomplete: 'new-password' }),
    field('Email', 'email', { type: 'email' }),
    roles, error, h('div', { class: 'actions' }, submit));

  const refresh = async () => {
    const users = await api('GET', '/api/users');
    if (!ctx.current) return;
    list.replaceChildren(...users.map((u) => {
      const box = rolesFieldset(`Roles of ${u.name}`, u.roles || [], `${u.name}-`);
      const save = h('button', { type: 'button', class: 'secondary small' }, 'Save roles');
      save.addEventListener('click', () => busy(save, async () => {
        await api('PUT', `/api/user/${encodeURIComponent(u.name)}`, { roles: checkedRoles(box) });
        notice(`Roles of ${u.name} saved.`);
      }));
      const del = h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete user ${u.name}`, disabled: u.name === me().name }, 'Delete');
      del.addEventListener('click', () => {
        if (!window.confirm(`Delete user ${u.name}? Their applications stay until deleted.`)) return;
        busy(del, async () => {
          await api('DELETE', `/api/user/${encodeURIComponent(u.name)}`);
          notice(`User ${u.name} deleted.`);
          await refresh();
        });
      });
      return h('article', { class: 'card', dataset: { user: u.name } },
        h('div', { class: 'row spread' }, h('h3', {}, u.name), del),
        h('p', { class: 'muted' }, `${u.email || 'no e-mail'} · created ${u.created_at || '—'}`),
        box, h('div', { class: 'row' }, save));
    }));
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const data = new FormData(form);
    await busy(submit, async () => {
      const name = String(data.get('name')).trim();
      await api('POST', '/api/auth/register', {
        name, password: String(data.get('password')), email: String(data.get('email')).trim(), roles: checkedRoles(roles),
      });
      form.reset();
      notice(`User ${name} added.`);
      await refresh();
    }, (e) => showErrors(form, e));
  });
  main.append(h('h1', {}, 'Users'), list, h('h2', {}, 'Add a user'), form);
  await refresh();
}

export async function organizationsPage(main, ctx) {
  document.title = 'Organizations · Oakestra-rs';
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const error = formError();
  const submit = h('button', { type: 'submit' }, 'Create organization');
  const form = h('form', { class: 'card grid', novalidate: true }, field('Name', 'name'), error, h('div', { class: 'actions' }, submit));

  const refresh = async () => {
    const [orgs, users] = await Promise.all([api('GET', '/api/organization'), api('GET', '/api/users')]);
    if (!ctx.current) return;
    const nameOf = new Map(users.map((u) => [idOf(u._id), u.name]));
    list.replaceChildren(...orgs.map((o) => organizationCard(o, users, nameOf, refresh)));
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const name = String(new FormData(form).get('name')).trim();
    await busy(submit, async () => {
      await api('POST', '/api/organization', { name, member: [] });
      form.reset();
      notice(`Organization ${name} created.`);
      await refresh();
    }, (e) => showErrors(form, e));
  });
  main.append(h('h1', {}, 'Organizations'),
    h('p', { class: 'muted' }, 'A user logs in to an organization (the login page\'s organization switch); their roles are those they have there.'),
    list, h('h2', {}, 'Create an organization'), form);
  await refresh();
}

function organizationCard(org, users, nameOf, refresh) {
  const id = idOf(org._id);
  const members = org.member || [];
  const put = (member) => api('PUT', `/api/organization/${id}`, { name: org.name, member });
  const rows = members.map((m, i) => {
    const remove = h('button', { type: 'button', class: 'secondary small', 'aria-label': `Remove ${nameOf.get(m.user_id) || m.user_id} from ${org.name}` }, 'Remove');
    remove.addEventListener('click', () => busy(remove, async () => {
      await put(members.filter((_, j) => j !== i));
      await refresh();
    }));
    return h('tr', {}, h('td', {}, nameOf.get(m.user_id) || m.user_id), h('td', { class: 'wrap' }, (m.roles || []).join(', ') || 'none'), h('td', {}, remove));
  });
  const candidates = users.filter((u) => !members.some((m) => m.user_id === idOf(u._id)));
  const userSelect = h('select', { id: `org-${id}-user`, name: 'user' },
    ...candidates.map((u) => h('option', { value: idOf(u._id) }, u.name)));
  const roles = rolesFieldset('Roles', ['Application_Provider'], `org-${id}-`);
  const add = h('button', { type: 'submit', class: 'secondary small', disabled: candidates.length === 0 }, 'Add member');
  const addForm = h('form', { class: 'grid', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: userSelect.id }, 'User'), userSelect), roles, h('div', { class: 'actions' }, add));
  addForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy(add, async () => {
      await put([...members, { user_id: userSelect.value, roles: checkedRoles(roles) }]);
      await refresh();
    });
  });
  const del = h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete organization ${org.name}`, disabled: org.name === 'root' }, 'Delete');
  del.addEventListener('click', () => {
    if (!window.confirm(`Delete organization ${org.name}?`)) return;
    busy(del, async () => {
      await api('DELETE', `/api/organization/${id}`);
      notice(`Organization ${org.name} deleted.`);
      await refresh();
    });
  });
  return h('article', { class: 'card' },
    h('div', { class: 'row spread' }, h('h3', {}, org.name), del),
    members.length ? table(`Members of ${org.name}`, ['Member', 'Roles', ''], rows) : h('p', { class: 'muted' }, 'No members.'),
    h('h3', {}, 'Add a member'), addForm);
}

export async function tokensPage(main, ctx) {
  document.title = 'Join tokens · Oakestra-rs';
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const created = h('div', { 'aria-live': 'polite' });
  const error = formError();
  const submit = h('button', { type: 'submit' }, 'Create token');
  const form = h('form', { class: 'card grid', novalidate: true },
    field('Name', 'name', { placeholder: 'munich', hint: 'What the token is for, e.g. the cluster\'s name.' }),
    error, h('div', { class: 'actions' }, submit));
  const root = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;

  const refresh = async () => {
    const tokens = await api('GET', '/api/join-tokens');
    if (!ctx.current) return;
    list.replaceChildren(tokens.length === 0 ? h('p', { class: 'muted' }, 'No join token.')
      : table('Join tokens', ['Name', 'Id', 'Created', ''], tokens.map((t) => {
        const revoke = h('button', { type: 'button', class: 'danger small', 'aria-label': `Revoke token ${t.name} (${t.id})` }, 'Revoke');
        revoke.addEventListener('click', () => {
          if (!window.confirm(`Revoke join token ${t.name}? Clusters that joined with it stay, but cannot register with it again.`)) return;
          busy(revoke, async () => {
            await api('DELETE', `/api/join-tokens/${encodeURIComponent(t.id)}`);
            notice(`Token ${t.name} revoked.`);
            await refresh();
          });
        });
        return h('tr', {}, h('td', {}, t.name), h('td', { class: 'mono' }, t.id), h('td', {}, t.created_at), h('td', {}, revoke));
      })));
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const name = String(new FormData(form).get('name')).trim();
    await busy(submit, async () => {
      const t = await api('POST', '/api/join-tokens', name ? { name } : undefined);
      form.reset();
      const command = `oakestra-cluster --name ${t.name} --location <lat>,<lon> --root ${root} \\\n  --join-token ${t.token} --data-dir /var/lib/oakestra/cluster`;
      created.replaceChildren(h('section', { class: 'card', 'aria-label': 'New join token' },
        h('h3', {}, `Token ${t.name} created`),
        h('p', {}, 'It is shown only now. On the cluster machine:'),
        h('pre', { class: 'secret' }, command),
        h('p', { class: 'hint' }, 'Workers then join that cluster with its own worker token: on the cluster machine ',
          h('code', {}, 'cat /var/lib/oakestra/cluster/worker-join-token'), ', and on each worker ',
          h('code', {}, 'oakestra-node --cluster <cluster address> --token <worker token> --runtime auto'), '.')));
      await refresh();
    }, (e) => showErrors(form, e));
  });
  main.append(h('h1', {}, 'Join tokens'),
    h('p', { class: 'muted' }, 'A cluster orchestrator joins this root with a cluster join token. The root keeps only a hash of each token.'),
    form, created, h('h2', {}, 'Tokens'), list);
  await refresh();
}
