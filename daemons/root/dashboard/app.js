// The dashboard's shell: hash routes, navigation, login, logout, password change and the
// default-password banner. Pages live in apps.js, service.js, infra.js and admin.js.

import { api, login, logout, me, onSessionEnd, passwordChanged } from './api.js';
import { busy, checkbox, clearErrors, field, formError, h, notice, showErrors } from './ui.js';
import { applicationPage, applicationsPage } from './apps.js';
import { servicePage } from './service.js';
import { clusterPage, clustersPage } from './infra.js';
import { organizationsPage, tokensPage, usersPage } from './admin.js';

const routes = [
  [/^#\/applications$/, applicationsPage],
  [/^#\/applications\/([0-9a-f]{24})$/, applicationPage],
  [/^#\/services\/([0-9a-f]{24})$/, servicePage],
  [/^#\/clusters$/, clustersPage],
  [/^#\/clusters\/(.+)$/, clusterPage],
  [/^#\/admin\/users$/, usersPage, true],
  [/^#\/admin\/organizations$/, organizationsPage, true],
  [/^#\/admin\/tokens$/, tokensPage, true],
  [/^#\/account$/, accountPage],
];

const mainEl = document.getElementById('main');
let leaving = [];
let renderSeq = 0;

/** Stops what the current page started (pollers) before another one renders. */
function leave() {
  for (const fn of leaving) {
    try { fn(); } catch { /* a page's clean-up must not block navigation */ }
  }
  leaving = [];
}

function context(seq) {
  return {
    /** Whether this page is still the one shown. */
    get current() { return seq === renderSeq; },
    onLeave(fn) { leaving.push(fn); },
    /** Calls `fn` now and every `ms` while the page is shown (never twice at once). */
    every(ms, fn) {
      let timer = null;
      let stopped = false;
      const tick = async () => {
        if (stopped) return;
        try { await fn(); } catch (e) { if (e.status !== 401) console.warn(e); }
        if (!stopped) timer = setTimeout(tick, ms);
      };
      leaving.push(() => { stopped = true; clearTimeout(timer); });
      tick();
    },
    go,
  };
}

export function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function renderNav(user) {
  const nav = document.getElementById('nav');
  nav.replaceChildren();
  nav.hidden = !user;
  if (!user) return;
  const links = [['#/applications', 'Applications'], ['#/clusters', 'Clusters']];
  if (user.isAdmin) links.push(['#/admin/users', 'Users'], ['#/admin/organizations', 'Organizations'], ['#/admin/tokens', 'Join tokens']);
  links.push(['#/account', 'Account']);
  const here = location.hash.split('/').slice(0, 3).join('/');
  for (const [href, text] of links) {
    nav.append(h('a', { href, 'aria-current': here.startsWith(href) ? 'page' : null }, text));
  }
  nav.append(h('a', { href: '/api/docs' }, 'API docs'));
  nav.append(h('span', { class: 'who' }, `${user.name}${user.organization !== 'root' ? ` @ ${user.organization}` : ''}`));
  nav.append(h('button', { type: 'button', class: 'link', onclick: () => { logout(); go('#/login'); } }, 'Log out'));
}

function renderBanner(user) {
  const banner = document.getElementById('banner');
  banner.replaceChildren();
  if (user && user.defaultPassword) {
    banner.append(h('div', { class: 'banner', role: 'alert' },
      `The account ${user.name} still has the default password. `,
      h('a', { href: '#/account' }, 'Change it now'), '.'));
  }
}

async function render() {
  leave();
  const seq = ++renderSeq;
  const user = me();
  renderNav(user);
  renderBanner(user);
  mainEl.replaceChildren();
  if (!user) {
    loginPage();
    return;
  }
  const hash = location.hash || '#/applications';
  if (hash === '#/login' || hash === '#/' || hash === '#' || hash === '') {
    location.replace('#/applications');
    return;
  }
  for (const [pattern, page, adminOnly] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    if (adminOnly && !user.isAdmin) break;
    try {
      await page(mainEl, context(seq), ...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (seq === renderSeq) {
        mainEl.replaceChildren(h('h1', {}, 'Something went wrong'), h('p', { role: 'alert' }, e.message));
      }
    }
    return;
  }
  mainEl.append(h('h1', {}, 'Not found'), h('p', {}, 'There is no such page. ', h('a', { href: '#/applications' }, 'Go to the applications.')));
}

function loginPage(message) {
  document.title = 'Log in · Oakestra-rs';
  const org = field('Organization', 'organization', { hint: 'The organization to log in to; your roles are those you have there.' });
  org.hidden = true;
  const toggle = checkbox('Log in to an organization', 'use_organization', false, {
    onchange: (e) => { org.hidden = !e.target.checked; },
  });
  const error = formError();
  if (message) error.textContent = message;
  const submit = h('button', { type: 'submit' }, 'Log in');
  const form = h('form', { class: 'card login', novalidate: true },
    field('Username', 'username', { autocomplete: 'username', required: true }),
    field('Password', 'password', { type: 'password', autocomplete: 'current-password', required: true }),
    h('div', { class: 'row' }, toggle), org, error, h('div', { class: 'row' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const data = new FormData(form);
    const organization = data.get('use_organization') ? String(data.get('organization') || '').trim() : '';
    await busy(submit, async () => {
      await login(String(data.get('username')), String(data.get('password')), organization);
      if (!location.hash || location.hash === '#/login') location.hash = '#/applications';
      else render();
    }, (e) => { error.textContent = e.message; });
  });
  mainEl.append(h('h1', {}, 'Log in'),
    h('p', { class: 'muted' }, 'A new root has the account Admin with the password Admin.'), form);
  form.querySelector('input').focus();
}

async function accountPage(main) {
  const user = me();
  document.title = 'Account · Oakestra-rs';
  const error = formError();
  const submit = h('button', { type: 'submit' }, 'Change password');
  const form = h('form', { class: 'card grid', novalidate: true },
    field('Current password', 'old', { type: 'password', autocomplete: 'current-password' }),
    field('New password', 'new', { type: 'password', autocomplete: 'new-password' }),
    field('Repeat the new password', 'repeat', { type: 'password', autocomplete: 'new-password' }),
    error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const data = new FormData(form);
    if (data.get('new') !== data.get('repeat')) {
      showErrors(form, { violations: [{ path: 'repeat', message: 'the two new passwords differ' }] }, (p) => p);
      return;
    }
    await busy(submit, async () => {
      const answer = await api('POST', `/api/user/${encodeURIComponent(user.name)}`, {
        oldPassword: String(data.get('old')), newPassword: String(data.get('new')),
      });
      passwordChanged(answer);
      renderBanner(me());
      form.reset();
      notice('Your password is changed.');
    }, (e) => { error.textContent = e.message; });
  });
  main.append(h('h1', {}, 'Account'),
    h('dl', { class: 'facts card' },
      h('dt', {}, 'User'), h('dd', {}, user.name),
      h('dt', {}, 'Organization'), h('dd', {}, user.organization),
      h('dt', {}, 'Roles'), h('dd', {}, user.roles.join(', ') || 'none')),
    h('h2', {}, 'Change your password'), form);
}

onSessionEnd((message) => {
  leave();
  renderNav(null);
  renderBanner(null);
  mainEl.replaceChildren();
  loginPage(message);
});

window.addEventListener('hashchange', render);
render();
