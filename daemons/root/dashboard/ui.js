// Small DOM helpers: elements, labelled form fields with an error slot each, notices, and
// the formatting every page shares.

/** `h('a', {href: '#/x'}, 'text', child)`: an element; `on*` attributes are listeners. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'checked' || key === 'selected' || key === 'disabled') el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

let fieldSeq = 0;

/**
 * A labelled field: `<label>`, the input, an optional hint and an error slot the input is
 * described by. `name` is the form key the API errors are mapped to.
 */
export function field(label, name, opts = {}) {
  const id = `f${++fieldSeq}`;
  const described = [];
  let input;
  if (opts.options) {
    input = h('select', { id, name },
      ...opts.options.map((o) => h('option', { value: o.value, selected: o.value === opts.value }, o.label)));
  } else if (opts.textarea) {
    input = h('textarea', { id, name, rows: opts.rows || 3, placeholder: opts.placeholder, spellcheck: 'false' });
    input.value = opts.value || '';
  } else {
    input = h('input', {
      id, name, type: opts.type || 'text', inputmode: opts.inputmode, autocomplete: opts.autocomplete || 'off',
      placeholder: opts.placeholder, required: opts.required, spellcheck: 'false',
    });
    input.value = opts.value === undefined ? '' : String(opts.value);
  }
  const hint = opts.hint ? h('small', { id: `${id}-hint`, class: 'hint' }, opts.hint) : null;
  if (hint) described.push(hint.id);
  const error = h('p', { id: `${id}-error`, class: 'error', 'aria-live': 'polite' });
  described.push(error.id);
  input.setAttribute('aria-describedby', described.join(' '));
  return h('div', { class: `field${opts.wide ? ' wide' : ''}`, dataset: { field: name } },
    h('label', { for: id }, label), input, hint, error);
}

/** A checkbox with its label. */
export function checkbox(label, name, checked, extra = {}) {
  return h('label', { class: 'check' }, h('input', { type: 'checkbox', name, checked, ...extra }), label);
}

/** Clears every field error and the form's general error. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('.field .error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const general = form.querySelector('.form-error');
  if (general) general.textContent = '';
}

/**
 * Shows an API error on a form: each violation next to the field its JSON path names
 * (`fieldOf(path)` answers the field's name or null), the rest in the form's general slot.
 */
export function showErrors(form, error, fieldOf = () => null) {
  clearErrors(form);
  const general = [];
  const placed = new Set();
  for (const v of error.violations || []) {
    const name = fieldOf(v.path || '');
    const box = name && form.querySelector(`.field[data-field="${name}"]`);
    if (box) {
      const slot = box.querySelector('.error');
      slot.textContent = slot.textContent ? `${slot.textContent} ${v.message}` : v.message;
      box.querySelector('input, select, textarea').setAttribute('aria-invalid', 'true');
      placed.add(name);
    } else {
      general.push(v.path ? `${v.path}: ${v.message}` : v.message);
    }
  }
  if (!error.violations || error.violations.length === 0) general.push(error.message);
  const slot = form.querySelector('.form-error');
  if (slot) slot.textContent = general.join('\n');
  const first = placed.size ? form.querySelector('[aria-invalid="true"]') : null;
  if (first) first.focus();
}

/** The general error slot of a form (role=alert so it is announced). */
export function formError() {
  return h('p', { class: 'form-error', role: 'alert' });
}

let noticeTimer = null;

/** A short message at the top of the page. */
export function notice(text, failed = false) {
  const box = document.getElementById('notice');
  box.textContent = text;
  box.className = failed ? 'failed' : '';
  clearTimeout(noticeTimer);
  if (!failed) noticeTimer = setTimeout(() => { box.textContent = ''; }, 6000);
}

/** Runs `action` with `button` disabled; an error becomes a notice (or `onError`). */
export async function busy(button, action, onError) {
  button.disabled = true;
  try {
    return await action();
  } catch (e) {
    if (onError) onError(e);
    else notice(e.message, true);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

const OK = new Set(['RUNNING', 'COMPLETED', 'CREATED', 'NODE_SCHEDULED', 'CLUSTER_SCHEDULED']);
const BAD = new Set(['FAILED', 'DEAD', 'TargetClusterNotFound', 'TargetClusterNotActive', 'TargetClusterNoCapacity',
  'NoActiveClusterWithCapacity', 'NO_WORKER_CAPACITY', 'NO_QUALIFIED_WORKER_FOUND', 'NO_NODE_FOUND']);

/** A status as text, coloured by what it means. */
export function statusText(status) {
  if (!status) return h('span', { class: 'status muted' }, '—');
  const kind = status === 'RUNNING' || status === 'COMPLETED' ? 'ok' : BAD.has(status) ? 'bad' : OK.has(status) ? 'pending' : 'pending';
  return h('span', { class: `status ${kind}` }, status);
}

/** A number the API sent as a number or, for Oakestra's clients, as a string; else null. */
export function num(value) {
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'string' && value.trim() !== '') {
    const n = Number(value);
    return Number.isFinite(n) ? n : null;
  }
  return null;
}

export function percent(value) {
  const n = num(value);
  if (n === null) return '—';
  return `${n !== 0 && Math.abs(n) < 1 ? n.toFixed(2) : n.toFixed(1)} %`;
}

/** Seconds since the epoch as "12 s ago". */
export function ago(seconds) {
  if (typeof seconds !== 'number' || !seconds) return '—';
  const d = Math.max(0, Date.now() / 1000 - seconds);
  if (d < 60) return `${Math.round(d)} s ago`;
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  if (d < 86400) return `${Math.round(d / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleString();
}

/** A table with a header row, scrolling sideways on a narrow screen. */
export function table(caption, headers, rows) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', { class: 'skip' }, caption),
      h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...rows)));
}

/** Reads a file chosen in an `<input type=file>` as JSON; throws with a readable message. */
export async function readJsonFile(input) {
  const file = input.files && input.files[0];
  if (!file) throw new Error('choose a descriptor file first');
  const text = await file.text();
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${file.name} is not JSON: ${e.message}`);
  }
}
