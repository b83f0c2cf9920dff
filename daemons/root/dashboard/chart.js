// A small SVG line chart of one metric over time: no library, a polyline and a dot per point.

const SVG = 'http://www.w3.org/2000/svg'; // the SVG namespace name, not a URL that is fetched
const W = 420;
const H = 150;
const PAD = { left: 34, right: 8, top: 8, bottom: 20 };

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A round upper bound for the y axis. */
function ceiling(max) {
  if (max <= 1) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= max) return m * step;
  return 10 * step;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/**
 * `points`: `[{t: milliseconds, v: number}]`, oldest first. `kind` ('cpu' or 'mem') picks the
 * colour. Answers a `<figure>` whose caption names the metric and the latest value.
 */
export function lineChart(title, unit, points, kind) {
  const last = points.length ? points[points.length - 1].v : null;
  const caption = document.createElement('figcaption');
  caption.append(Object.assign(document.createElement('span'), { textContent: title }),
    Object.assign(document.createElement('span'), {
      className: 'muted',
      textContent: last === null ? 'no samples yet' : `${last.toFixed(1)} ${unit}`,
    }));
  const maxV = ceiling(Math.max(0, ...points.map((p) => p.v)) * 1.1);
  const t0 = points.length ? points[0].t : 0;
  const t1 = points.length ? points[points.length - 1].t : 1;
  const span = Math.max(1, t1 - t0);
  const x = (t) => PAD.left + ((t - t0) / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / maxV) * (H - PAD.top - PAD.bottom);
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `${title}: ${points.length} samples${last === null ? '' : `, latest ${last.toFixed(1)} ${unit}`}`,
  });
  for (const frac of [0, 0.5, 1]) {
    const gy = y(maxV * frac);
    svg.append(s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: gy, y2: gy }));
    svg.append(s('text', { class: 'axis', x: PAD.left - 4, y: gy + 3, 'text-anchor': 'end' },
      `${+(maxV * frac).toFixed(1)}`));
  }
  if (points.length) {
    svg.append(s('text', { class: 'axis', x: PAD.left, y: H - 5 }, clock(t0)));
    if (points.length > 1) svg.append(s('text', { class: 'axis', x: W - PAD.right, y: H - 5, 'text-anchor': 'end' }, clock(t1)));
    const one = points.length === 1;
    const coords = points.map((p) => `${one ? x(t0) : x(p.t)},${y(p.v)}`).join(' ');
    svg.append(s('polyline', { class: `line ${kind}`, points: coords }));
    // Dots only while they can be told apart; the line carries the rest.
    const shown = points.length <= 120 ? points : points.slice(-120);
    for (const p of shown) {
      const dot = s('circle', { class: `point ${kind}`, cx: x(p.t), cy: y(p.v), r: 2.2 });
      dot.append(s('title', {}, `${clock(p.t)}: ${p.v.toFixed(2)} ${unit}`));
      svg.append(dot);
    }
  }
  const figure = document.createElement('figure');
  figure.className = 'chart';
  figure.dataset.samples = String(points.length);
  figure.append(caption, svg);
  return figure;
}
