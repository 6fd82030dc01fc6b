// buttress dashboard: renders the frames of api/stream (see docs/dashboard.md, "The frame").
//
// Plain ES2020, no framework, no build step, and nothing the strict CSP forbids: no inline
// script or style attribute, no eval, no innerHTML (names are user data: textContent only).
// Every component is a view created once and updated in place, keyed by name: a frame
// touches only the text and attributes that changed.
'use strict';

(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const TOKEN_KEY = 'buttress-dashboard-token:' + location.pathname;
  const $ = (id) => document.getElementById(id);

  // -- words and tones ------------------------------------------------------------------------

  const BREAKER_WORDS = {
    closed: 'closed', degraded: 'degraded', open: 'open', half_open: 'half-open',
    forced_open: 'forced open', disabled: 'disabled',
  };
  const BREAKER_TONES = {
    closed: 'ok', degraded: 'warn', open: 'bad', half_open: 'warn', forced_open: 'bad',
    disabled: 'off',
  };
  const HEALTH_WORDS = { healthy: 'Healthy', degraded: 'Degraded', unhealthy: 'Unhealthy' };
  const HEALTH_TONES = { healthy: 'ok', degraded: 'warn', unhealthy: 'bad' };
  const STATUS_WORDS = { pass: 'ok', warn: 'warning', fail: 'failing' };
  const STATUS_TONES = { pass: 'ok', warn: 'warn', fail: 'bad' };
  const LEVEL_TONES = { normal: 'ok', warning: 'warn', critical: 'bad' };
  const PRESSURE_WORDS = { memory: 'Memory', cpu: 'CPU', loop_lag: 'Event loop lag' };
  const KIND_WORDS = {
    circuit_breaker: 'breaker', rate_limiter: 'limiter', connection_pool: 'pool',
    bulkhead: 'bulkhead', memory: 'memory', cpu: 'CPU', loop_lag: 'loop lag',
  };
  const OVERRIDE_WORDS = { force_open: 'forced open', disable: 'disabled' };
  const ACTIONS = {
    force_open: {
      verb: 'Force open', title: (t) => `Force ${t} open?`,
      desc: (t) => `Every call of ${t} is refused until someone resets it.`,
    },
    disable: {
      verb: 'Disable', title: (t) => `Disable ${t}?`,
      desc: (t) => `Every call of ${t} is let through, whatever its outcome, until someone resets it.`,
    },
    reset: {
      verb: 'Reset', title: (t) => `Reset ${t}?`,
      desc: (t) => `Clears the overrides of ${t} and closes it: calls flow again.`,
    },
    stop_chaos: {
      verb: 'Stop all chaos', title: () => 'Stop all chaos?',
      desc: () => 'Ends every running chaos experiment now.',
    },
    reload: {
      verb: 'Reload', title: () => 'Reload the configuration?',
      desc: () => 'Reads the configuration file again and applies it to the running components.',
    },
  };
  const TONE_COLOURS = { ok: '#1f8a4c', warn: '#b7791f', bad: '#c53030', off: '#718096', none: '#a0aec0' };

  const words = (map, key) => map[key] || String(key == null ? 'unknown' : key).replace(/_/g, ' ');
  const tone = (map, key) => map[key] || 'off';

  // -- formatting -----------------------------------------------------------------------------

  const compact = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });
  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

  function fmtPct(r) {
    if (!isNum(r)) return '–';
    if (r === 0) return '0%';
    if (r < 0.001) return '<0.1%';
    if (r < 0.1) return (r * 100).toFixed(1) + '%';
    return Math.round(r * 100) + '%';
  }
  function fmtRate(x) {
    if (!isNum(x)) return '–';
    if (x === 0) return '0';
    if (x < 0.1) return x.toFixed(2);
    if (x < 10) return x.toFixed(1);
    if (x < 10000) return String(Math.round(x));
    return compact.format(x);
  }
  function fmtCount(n) {
    if (!isNum(n)) return '–';
    return Math.abs(n) < 10000 ? String(n) : compact.format(n);
  }
  function fmtDuration(s) {  // a latency or a lag
    if (!isNum(s)) return '–';
    const a = Math.abs(s);
    if (a < 0.001) return Math.round(s * 1e6) + ' µs';
    if (a < 0.01) return (s * 1000).toFixed(1) + ' ms';
    if (a < 1) return Math.round(s * 1000) + ' ms';
    return s.toFixed(a < 10 ? 2 : 1) + ' s';
  }
  function fmtCountdown(s) {  // "12 s", "3 min 20 s"
    if (!isNum(s)) return '–';
    const whole = Math.max(0, Math.ceil(s));
    if (whole < 120) return whole + ' s';
    const m = Math.floor(whole / 60);
    if (m < 120) return m + ' min' + (whole % 60 ? ' ' + (whole % 60) + ' s' : '');
    return Math.round(m / 60) + ' h';
  }
  function fmtWindow(s) {  // a limit's window: "s", "10 s", "1 min", "1 h"
    if (!isNum(s)) return '';
    if (s === 1) return 's';
    if (s < 60 || s % 60) return fmtNumber(s) + ' s';
    if (s === 60) return 'min';
    if (s < 3600 || s % 3600) return s / 60 + ' min';
    if (s === 3600) return 'h';
    if (s % 86400) return s / 3600 + ' h';
    return s === 86400 ? 'day' : s / 86400 + ' days';
  }
  function fmtPeriod(s) {  // "30 s", "1 min", "90 s", "2 h"
    const w = fmtWindow(s);
    return /^[a-z]+$/.test(w) ? '1 ' + w : w;
  }
  function fmtNumber(x) {
    if (!isNum(x)) return '–';
    return Number.isInteger(x) ? fmtCount(x) : String(Math.round(x * 100) / 100);
  }
  function fmtClock(epoch) {
    if (!isNum(epoch)) return '–';
    const d = new Date(epoch * 1000);
    const pad = (n) => String(n).padStart(2, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtPressure(value, unit) {
    return unit === 'seconds' ? fmtDuration(value) : fmtPct(value);
  }

  // -- DOM helpers: each setter writes only when the value changed ---------------------------

  function h(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }
  function svgNode(tag, attrs) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function setText(node, value) {
    const v = String(value);
    if (node._text !== v) {
      node._text = v;
      node.textContent = v;
    }
  }
  function setClass(node, value) {
    if (node._class !== value) {
      node._class = value;
      node.setAttribute('class', value);  // works for SVG nodes too
    }
  }
  function setAttr(node, name, value) {
    const key = '_attr_' + name;
    if (node[key] !== value) {
      node[key] = value;
      if (value === null) node.removeAttribute(name);
      else node.setAttribute(name, value);
    }
  }
  function setShown(node, shown) {
    if (node.hidden === shown) node.hidden = !shown;
  }
  function setWidth(node, fraction) {  // through the CSSOM, which the CSP allows
    const v = (Math.max(0, Math.min(1, fraction || 0)) * 100).toFixed(1) + '%';
    if (node._width !== v) {
      node._width = v;
      node.style.width = v;
    }
  }
  function setLeft(node, fraction) {
    const v = (Math.max(0, Math.min(1, fraction || 0)) * 100).toFixed(1) + '%';
    if (node._left !== v) {
      node._left = v;
      node.style.left = v;
    }
  }
  function badge(className) {
    return h('span', 'badge ' + (className || ''));
  }
  function setBadge(node, toneName, label) {
    setClass(node, 'badge tone-' + toneName);
    setText(node, label);
  }
  function stat(list, label) {  // one <dt>/<dd> pair of a <dl class="stats">, its <dd> returned
    const box = h('div', 'stat');
    const dd = h('dd', 'num', '–');
    box.append(h('dt', '', label), dd);
    list.append(box);
    return dd;
  }
  function button(label, className, onClick) {
    const b = h('button', className, label);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }
  let uid = 0;
  const nextId = (prefix) => `${prefix}-${++uid}`;

  // -- sparklines -----------------------------------------------------------------------------

  const SPARK_W = 100;
  const SPARK_H = 24;

  function sparkRow(label) {
    const row = h('div', 'spark-row');
    const svg = svgNode('svg', {
      class: 'spark', viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, preserveAspectRatio: 'none',
      'aria-hidden': 'true', focusable: 'false',
    });
    const area = svgNode('path', { class: 'spark-area', d: '' });
    const line = svgNode('path', { class: 'spark-line', d: '', 'vector-effect': 'non-scaling-stroke' });
    svg.append(area, line);
    const value = h('span', 'spark-value num', '–');
    row.append(h('span', 'spark-label', label), svg, value);
    return { row, area, line, value, label: label === 'slow' ? 'slow-call rate' : 'failure rate' };
  }

  // The scale of a sparkline: the first of these that holds every point (0.1 is 0..10%).
  const SPARK_SCALES = [0.1, 0.25, 0.5, 1];

  // A rate (0..1) over the last `length` frames, the newest at the right edge.
  function drawSpark(spark, points, length) {
    const n = points.length;
    if (!n) {
      setAttr(spark.line, 'd', '');
      setAttr(spark.area, 'd', '');
      return;
    }
    let top = 0;
    for (let i = 0; i < n; i++) if (points[i] > top) top = points[i];
    const scale = SPARK_SCALES.find((s) => top <= s) || 1;
    setAttr(spark.row, 'title', `${spark.label} over the last ${n} frames, drawn on 0–${scale * 100}%`);
    const step = SPARK_W / Math.max(1, length - 1);
    const x0 = Math.max(0, (length - n) * step);
    let d = '';
    let x = x0;
    for (let i = 0; i < n; i++) {
      const v = points[i];
      const r = isNum(v) ? Math.max(0, Math.min(1, v / scale)) : 0;
      // a rate above zero is never drawn flat on the baseline
      const y = SPARK_H - 1 - (r > 0 ? Math.max(1.5, r * (SPARK_H - 2)) : 0);
      x = x0 + i * step;
      d += (i ? 'L' : 'M') + Math.round(x * 10) / 10 + ' ' + Math.round(y * 10) / 10;
    }
    if (n === 1) d += 'L' + SPARK_W + ' ' + d.slice(d.indexOf(' ') + 1);
    setAttr(spark.line, 'd', d);
    setAttr(spark.area, 'd', `${d}L${n === 1 ? SPARK_W : Math.round(x * 10) / 10} ${SPARK_H}L${Math.round(x0 * 10) / 10} ${SPARK_H}Z`);
  }

  // -- keyed collections of views, optionally grouped ----------------------------------------

  const filter = { text: '', problemsOnly: false };

  class Collection {
    // make(item) -> view with .root; update(view, item, frame); grouped: tiles sit in one
    // <section> per item.group, with a heading and a summary of the group.
    constructor(container, { make, update, grouped = false, noun = 'component' }) {
      this.container = container;
      this.make = make;
      this.update = update;
      this.grouped = grouped;
      this.noun = noun;
      this.views = new Map();
      this.groups = new Map();
      this.order = [];
    }

    sync(items, frame) {
      const seen = new Set();
      let reorder = false;
      for (const item of items || []) {
        const name = String(item.name);
        if (seen.has(name)) continue;
        seen.add(name);
        let view = this.views.get(name);
        if (!view) {
          view = this.make(item, frame);
          view.name = name;
          view.key = name.toLowerCase();
          view.tone = 'ok';
          view.visible = true;
          this.views.set(name, view);
          reorder = true;
        }
        const groupName = this.grouped ? String(item.group || name) : '';
        if (view.group !== groupName) {
          view.group = groupName;
          reorder = true;
        }
        this.update(view, item, frame);
      }
      for (const [name, view] of this.views) {
        if (!seen.has(name)) {
          view.root.remove();
          if (seen && view.root._view) seen.unobserve(view.root);
          this.views.delete(name);
          reorder = true;
        }
      }
      if (reorder) this.arrange();
      this.applyFilter();
    }

    arrange() {
      const names = [...this.views.keys()].sort(byName);
      if (!this.grouped) {
        names.forEach((n) => this.container.append(this.views.get(n).root));
        return;
      }
      const members = new Map();
      for (const n of names) {
        const view = this.views.get(n);
        if (!members.has(view.group)) members.set(view.group, []);
        members.get(view.group).push(view);
      }
      for (const [name, group] of this.groups) {
        if (!members.has(name)) {
          group.root.remove();
          this.groups.delete(name);
        }
      }
      for (const name of [...members.keys()].sort(byName)) {
        let group = this.groups.get(name);
        if (!group) {
          group = makeGroup(name);
          this.groups.set(name, group);
        }
        group.views = members.get(name);
        group.views.forEach((v) => group.grid.append(v.root));
        this.container.append(group.root);
      }
    }

    applyFilter() {
      let shown = 0;
      for (const view of this.views.values()) {
        const visible = (!filter.text || view.key.includes(filter.text))
          && (!filter.problemsOnly || view.tone !== 'ok');
        if (visible !== view.visible) {
          view.visible = visible;
          view.root.hidden = !visible;
          if (visible && view.redraw) view.redraw();
        }
        if (visible) shown++;
      }
      if (this.grouped) {
        for (const group of this.groups.values()) updateGroup(group, this.noun);
      }
      this.shown = shown;
      return shown;
    }
  }

  function byName(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function makeGroup(name) {
    const root = h('section', 'group');
    const id = nextId('group');
    root.setAttribute('aria-labelledby', id);
    const head = h('div', 'group-head');
    const title = h('h3', 'group-name', name);
    title.id = id;
    const summary = h('span', 'group-summary');
    head.append(title, summary);
    const grid = h('div', 'grid');
    root.append(head, grid);
    return { root, title, summary, grid, views: [] };
  }

  const WORST = ['ok', 'off', 'warn', 'bad'];

  function updateGroup(group, noun) {
    let visible = 0;
    let worst = 0;
    const counts = new Map();
    for (const v of group.views) {
      if (v.visible) visible++;
      worst = Math.max(worst, WORST.indexOf(v.tone));
      if (v.tone !== 'ok') counts.set(v.word, (counts.get(v.word) || 0) + 1);
    }
    setShown(group.root, visible > 0);
    const total = group.views.length;
    let text = `${total} ${noun}${total === 1 ? '' : 's'}`;
    if (counts.size) text += ' · ' + [...counts].map(([w, c]) => `${c} ${w}`).join(', ');
    else text += ' · all fine';
    setText(group.summary, text);
    setClass(group.root, 'group tone-' + WORST[Math.max(0, worst)]);
  }

  // -- state of the page ----------------------------------------------------------------------

  const page = {
    frame: null,
    actions: { enabled: false, fleet: false, reload: false },
    historyLength: 60,
    lastFrameAt: 0,
  };
  // What a test (or a curious operator, in the console) reads: the lag of each frame, measured
  // once it is rendered (the browser's clock against the server's sent_at), and the time the
  // rendering took.
  const stats = {
    lag: { last: null, max: null, mean: null, frames: 0, recent: [] },
    render: { last: null, max: null, recent: [] },
    seq: null,
    frames: 0,
  };
  let lagSum = 0;
  window.buttressDashboard = stats;

  // -- breakers -------------------------------------------------------------------------------

  // The sparklines of the tiles out of view are drawn when they come into view, not every frame.
  const seen = 'IntersectionObserver' in window
    ? new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const view = entry.target._view;
        if (!view) continue;
        view.onScreen = entry.isIntersecting;
        if (view.onScreen && view.visible) view.redraw();
      }
    }, { rootMargin: '300px 0px' })
    : null;

  function makeBreaker(b) {
    const root = h('article', 'tile');
    root.tabIndex = -1;  // a problem's link focuses it
    const headId = nextId('breaker');
    root.setAttribute('aria-labelledby', headId);
    const head = h('div', 'tile-head');
    const name = h('h4', 'tile-name', b.name);
    name.id = headId;
    name.title = b.name;
    const state = badge();
    head.append(name, state);
    const detail = h('p', 'tile-detail');
    const failures = sparkRow('failures');
    const slow = sparkRow('slow');
    const list = h('dl', 'stats');
    const calls = stat(list, 'calls/s');
    const shed = stat(list, 'shed');
    const rejected = stat(list, 'rejected');
    const fleet = h('div', 'fleet');
    fleet.hidden = true;
    const fleetLine = h('p', 'fleet-line');
    const override = h('p', 'fleet-override');
    fleet.append(fleetLine, override);
    root.append(head, detail, failures.row, slow.row, list, fleet);
    const view = {
      root, state, detail, failures, slow, calls, shed, rejected, fleet, fleetLine, override,
      controls: null, item: b,
      history: { failure_rate: [], slow_call_rate: [], calls_per_second: [] },
      dirty: true,
    };
    view.onScreen = false;
    view.redraw = () => {
      if (!view.dirty || !view.onScreen) return;
      view.dirty = false;
      drawSpark(view.failures, view.history.failure_rate, page.historyLength);
      drawSpark(view.slow, view.history.slow_call_rate, page.historyLength);
    };
    if (seen) {
      root._view = view;
      seen.observe(root);
    } else {
      view.onScreen = true;
    }
    return view;
  }

  function takeHistory(view, b, frame) {
    const length = page.historyLength;
    const series = view.history;
    if (frame.full && b.history) {
      for (const k of Object.keys(series)) {
        const points = Array.isArray(b.history[k]) ? b.history[k] : [];
        series[k] = points.slice(-length);
      }
      return;
    }
    for (const k of Object.keys(series)) {
      const points = series[k];
      points.push(b[k]);
      if (points.length > length) points.splice(0, points.length - length);
    }
  }

  function updateBreaker(view, b, frame) {
    view.item = b;
    const state = BREAKER_WORDS[b.state] ? b.state : 'unknown';
    view.tone = tone(BREAKER_TONES, b.state);
    view.word = words(BREAKER_WORDS, b.state);
    setClass(view.root, `tile tone-${view.tone} state-${state}`);
    setBadge(view.state, view.tone, view.word);

    let detail;
    if (b.state === 'open' && isNum(b.half_open_in)) detail = `half-open in ${fmtCountdown(b.half_open_in)}`;
    else if (b.state === 'open') detail = 'refusing calls';
    else if (b.state === 'degraded') detail = `level ${b.level || 'unknown'} · shedding some calls`;
    else if (b.state === 'half_open') detail = 'probing: a few calls let through';
    else if (b.state === 'forced_open') detail = 'refusing every call until a reset';
    else if (b.state === 'disabled') detail = 'letting every call through until a reset';
    else if (b.window_calls === 0) detail = 'no calls in the window';
    else if (isNum(b.window_calls)) {
      detail = `${fmtCount(b.window_failures || 0)} of ${fmtCount(b.window_calls)} calls failed`
        + (isNum(b.window) ? ` in ${fmtPeriod(b.window)}` : '');
    } else detail = '';
    setText(view.detail, detail);

    takeHistory(view, b, frame);
    view.dirty = true;
    if (view.visible) view.redraw();  // only a tile on screen draws: the others when they come into view
    setText(view.failures.value, fmtPct(b.failure_rate));
    setText(view.slow.value, fmtPct(b.slow_call_rate));
    setText(view.calls, fmtRate(b.calls_per_second));
    setText(view.shed, fmtCount(b.shed));
    setText(view.rejected, fmtCount(b.rejected));

    const f = b.fleet;
    setShown(view.fleet, !!f);
    if (f) {
      let line = `fleet ${words(BREAKER_WORDS, f.state)}`;
      if (isNum(f.processes)) line += ` · ${f.processes} process${f.processes === 1 ? '' : 'es'}`;
      if (isNum(f.sick) && f.sick > 0) line += ` (${f.sick} failing)`;
      // the fleet's window, summed over its processes (a dashboard process makes no calls)
      if (isNum(f.calls) && f.calls > 0) line += ` · ${fmtCount(f.failures || 0)} of ${fmtCount(f.calls)} calls failed`;
      if (f.reachable === false) line += ' · Redis unreachable';
      else if (f.reachable === null) line += ' · connecting';
      setText(view.fleetLine, line);
      setClass(view.fleet, 'fleet' + (f.reachable === false ? ' fleet-unreachable' : ''));
      const o = f.override;
      setShown(view.override, !!o);
      if (o) {
        let text = `override: ${words(OVERRIDE_WORDS, o.action)}`;
        if (o.by) text += ` by ${o.by}`;
        if (isNum(o.at)) text += ` at ${fmtClock(o.at)}`;
        if (o.reason) text += ` — ${o.reason}`;
        setText(view.override, text);
      }
    }
    syncBreakerControls(view);
  }

  function syncBreakerControls(view) {
    const want = page.actions.enabled;
    if (want && !view.controls) {
      const name = view.name;
      const box = h('div', 'tile-actions');
      for (const action of ['force_open', 'disable', 'reset']) {
        const b = button(ACTIONS[action].verb, 'small' + (action === 'reset' ? '' : ' danger-outline'), (ev) =>
          openAction(action, name, ev.currentTarget));
        b.dataset.action = action;
        b.setAttribute('aria-label', `${ACTIONS[action].verb} ${name}`);
        box.append(b);
      }
      view.root.append(box);
      view.controls = box;
    } else if (!want && view.controls) {
      view.controls.remove();
      view.controls = null;
    }
  }

  // -- limiters -------------------------------------------------------------------------------

  function makeLimiter(l) {
    const root = h('article', 'tile limiter');
    root.tabIndex = -1;
    const headId = nextId('limiter');
    root.setAttribute('aria-labelledby', headId);
    const head = h('div', 'tile-head');
    const name = h('h4', 'tile-name', l.name);
    name.id = headId;
    name.title = l.name;
    const status = badge();
    head.append(name, status);
    const detail = h('p', 'tile-detail');
    const list = h('dl', 'stats');
    const decisions = stat(list, 'decisions/s');
    const refused = stat(list, 'refusals/s');
    const denied = stat(list, 'denied');
    const table = h('table', 'scopes');
    const caption = h('caption', 'visually-hidden', `Scopes of ${l.name}, the tightest first`);
    const thead = h('thead');
    const hr = h('tr');
    for (const [label, cls] of [['scope', ''], ['limit', 'num'], ['by', ''], ['denied', 'num']]) {
      const th = h('th', cls, label);
      th.scope = 'col';
      hr.append(th);
    }
    thead.append(hr);
    const tbody = h('tbody');
    table.append(caption, thead, tbody);
    root.append(head, detail, list, table);
    return { root, status, detail, decisions, refused, denied, table, tbody, scopesKey: null, ids: null };
  }

  function updateLimiter(view, l) {
    view.item = l;
    view.tone = tone(STATUS_TONES, l.status);
    view.word = words(STATUS_WORDS, l.status);
    setClass(view.root, `tile limiter tone-${view.tone}`);
    setBadge(view.status, view.tone, view.word);
    const parts = [`mode ${words({}, l.mode)}`];
    if (l.algorithm) parts.push(words({}, l.algorithm));
    if (l.backend) parts.push(String(l.backend));
    setText(view.detail, parts.join(' · '));
    setText(view.decisions, fmtRate(l.decisions_per_second));
    setText(view.refused, fmtRate(l.refused_per_second));
    setText(view.denied, fmtCount(l.denied));
    const scopes = Array.isArray(l.scopes) ? l.scopes : [];
    const key = JSON.stringify(scopes);
    if (key !== view.scopesKey) {
      view.scopesKey = key;
      const rows = scopes.map((s) => {
        const tr = h('tr');
        tr.append(
          h('td', 'scope-name', s.name == null ? '' : String(s.name)),
          h('td', 'num', `${fmtNumber(s.limit)}/${fmtWindow(s.window)}`),
          h('td', 'scope-by', s.by == null ? '' : String(s.by)),
          h('td', 'num' + (s.denied > 0 ? ' denied' : ''), fmtCount(s.denied)),
        );
        return tr;
      });
      view.tbody.replaceChildren(...rows);
      setShown(view.table, rows.length > 0);
    }
    syncRefusedControls(view);
  }

  function syncRefusedControls(view) {
    const want = page.actions.enabled && !!getToken();
    if (want && !view.ids) {
      const box = h('div', 'refused');
      const ask = button('Top refused ids', 'small', () => askRefused(view));
      ask.setAttribute('aria-label', `Top refused ids of ${view.name}`);
      const out = h('div', 'refused-out');
      out.setAttribute('aria-live', 'polite');
      box.append(ask, out);
      view.root.append(box);
      view.ids = { box, ask, out };
    } else if (!want && view.ids) {
      view.ids.box.remove();  // the ids go with the controls
      view.ids = null;
    }
  }

  async function askRefused(view) {
    const ids = view.ids;
    if (!ids) return;
    ids.ask.disabled = true;
    const res = await post('api/refused', { limiter: view.name, seconds: 60 });
    if (!view.ids) return;
    ids.ask.disabled = false;
    if (res.status === 401) {
      forgetToken();
      notify(`${res.error || 'The admin token was refused'}: enter it again.`, 'bad');
      openToken();
      return;
    }
    if (!res.ok) {
      ids.out.replaceChildren(h('p', 'refused-error', res.error || 'The request failed.'));
      return;
    }
    const data = res.data || {};
    const list = Array.isArray(data.ids) ? data.ids : [];
    const note = h('p', 'refused-note',
      list.length
        ? `Top ${list.length} refused id${list.length === 1 ? '' : 's'}, counting until ${fmtClock(data.until)}:`
        : `Counting refusals until ${fmtClock(data.until)}; none yet. Refresh in a few seconds.`);
    const ol = h('ol', 'refused-list');
    for (const entry of list) {
      const li = h('li');
      li.append(h('span', 'refused-id', String(entry.id)), h('span', 'num', fmtCount(entry.refused)));
      ol.append(li);
    }
    const hide = button('Hide', 'small link', () => {
      ids.out.replaceChildren();
      setText(ids.ask, 'Top refused ids');
      ids.ask.focus();
    });
    ids.out.replaceChildren(note, ...(list.length ? [ol] : []), hide);
    setText(ids.ask, 'Refresh refused ids');
  }

  // -- pools, bulkheads, pressure, chaos ------------------------------------------------------

  function meterBar(marks) {
    const bar = h('div', 'meter');
    bar.setAttribute('aria-hidden', 'true');
    const fill = h('div', 'meter-fill');
    bar.append(fill);
    const markNodes = [];
    for (const m of marks) {
      const mark = h('div', 'meter-mark mark-' + m);
      bar.append(mark);
      markNodes.push(mark);
    }
    return { bar, fill, marks: markNodes };
  }

  function makeRow(item, title, marks) {
    const root = h('div', 'row');
    root.tabIndex = -1;
    const head = h('div', 'row-head');
    const name = h('h3', 'row-name', title);
    name.title = title;
    const status = badge();
    head.append(name, status);
    const meter = meterBar(marks || []);
    const detail = h('p', 'row-detail num');
    root.append(head, meter.bar, detail);
    return { root, name, status, meter, detail };
  }

  function updatePool(view, p) {
    view.tone = tone(STATUS_TONES, p.status);
    view.word = words(STATUS_WORDS, p.status);
    setClass(view.root, `row tone-${view.tone}`);
    setBadge(view.status, view.tone, view.word);
    const cap = isNum(p.max_size) && p.max_size > 0 ? p.max_size : p.size;
    setWidth(view.meter.fill, isNum(cap) && cap > 0 ? p.in_use / cap : 0);
    setLeft(view.meter.marks[0], isNum(cap) && cap > 0 ? p.size / cap : 0);
    const parts = [`${fmtCount(p.in_use)} in use`, `${fmtCount(p.idle)} idle`,
      `${fmtCount(p.waiting)} waiting`, `size ${fmtCount(p.size)}/${fmtCount(p.max_size)}`];
    if (p.overflow) parts.push(`${fmtCount(p.overflow)} overflow`);
    if (isNum(p.wait_p95)) parts.push(`wait p95 ${fmtDuration(p.wait_p95)}`);
    setText(view.detail, parts.join(' · '));
  }

  function updateBulkhead(view, b) {
    const full = isNum(b.limit) && b.in_use >= b.limit;
    view.tone = full || b.waiting > 0 ? 'warn' : 'ok';
    view.word = full ? 'full' : b.waiting > 0 ? 'queueing' : 'ok';
    setClass(view.root, `row tone-${view.tone}`);
    setBadge(view.status, view.tone, view.word);
    setWidth(view.meter.fill, isNum(b.limit) && b.limit > 0 ? b.in_use / b.limit : 0);
    setText(view.detail, `${fmtCount(b.in_use)} of ${fmtCount(b.limit)} in use · `
      + `${fmtCount(b.waiting)} waiting · ${fmtCount(b.rejected)} rejected`);
  }

  function makePressure(p) {
    const view = makeRow(p, words(PRESSURE_WORDS, p.kind), ['warning', 'critical']);
    view.sub = h('span', 'row-sub', p.name);
    view.name.append(' ', view.sub);
    view.reason = h('p', 'row-reason');
    view.root.append(view.reason);
    return view;
  }

  function updatePressure(view, p) {
    view.tone = tone(LEVEL_TONES, p.level);
    view.word = words({}, p.level);
    setClass(view.root, `row pressure tone-${view.tone}`);
    setBadge(view.status, view.tone, view.word);
    let scale = 1;
    if (p.unit !== 'ratio') {
      scale = Math.max(isNum(p.critical) ? p.critical * 1.5 : 0, isNum(p.value) ? p.value * 1.1 : 0, 1e-6);
    }
    setWidth(view.meter.fill, isNum(p.value) ? p.value / scale : 0);
    setShown(view.meter.marks[0], isNum(p.warning));
    setShown(view.meter.marks[1], isNum(p.critical));
    setLeft(view.meter.marks[0], p.warning / scale);
    setLeft(view.meter.marks[1], p.critical / scale);
    setText(view.detail, `${fmtPressure(p.value, p.unit)} · warning at ${fmtPressure(p.warning, p.unit)}`
      + ` · critical at ${fmtPressure(p.critical, p.unit)}`);
    const reason = p.level !== 'normal' && p.reason ? String(p.reason) : '';
    setShown(view.reason, !!reason);
    setText(view.reason, reason);
  }

  function makeExperiment(e) {
    const root = h('li', 'experiment');
    const name = h('span', 'experiment-name', e.name);
    const detail = h('span', 'experiment-detail');
    const ends = h('span', 'experiment-ends num');
    root.append(name, detail, ends);
    return { root, name, detail, ends };
  }

  function updateExperiment(view, e) {
    view.tone = 'warn';
    setText(view.detail, `${words({}, e.kind)} on ${e.target == null ? 'every target' : e.target}`);
    setText(view.ends, isNum(e.ends_in) ? `ends in ${fmtCountdown(e.ends_in)}` : '');
  }

  // -- the header -----------------------------------------------------------------------------

  let problemsKey = null;
  let actionsKey = null;

  function renderHeader(frame) {
    setText($('namespace'), frame.namespace || '');
    const o = frame.overall || {};
    const toneName = tone(HEALTH_TONES, o.status);
    const word = words(HEALTH_WORDS, o.status);
    setClass($('health'), 'health tone-' + toneName);
    setText($('health-word'), word);
    const title = `${word} · ${frame.namespace || 'buttress'} · buttress dashboard`;
    if (document.title !== title) document.title = title;
    setFavicon(toneName);

    const problems = Array.isArray(o.problems) ? o.problems : [];
    const key = JSON.stringify(problems);
    if (key !== problemsKey) {
      problemsKey = key;
      const shownProblems = problems.slice(0, 12);
      const items = shownProblems.map((p) => {
        const li = h('li', 'problem');
        li.append(badge(`tone-${tone(STATUS_TONES, p.status)}`));
        li.firstChild.textContent = words(STATUS_WORDS, p.status);
        li.append(h('span', 'problem-kind', words(KIND_WORDS, p.kind)));
        const target = findView(p.kind, p.name);
        if (target) {
          li.append(button(String(p.name), 'link problem-name', () => reveal(p.kind, p.name)));
        } else {
          li.append(h('span', 'problem-name', String(p.name)));
        }
        if (p.reason) li.append(h('span', 'problem-reason', String(p.reason)));
        return li;
      });
      if (problems.length > shownProblems.length) {
        items.push(h('li', 'problem more', `and ${problems.length - shownProblems.length} more`));
      }
      $('problems').replaceChildren(...items);
      setShown($('problems-box'), problems.length > 0);
    }

    const fleet = frame.fleet;
    setShown($('fleet-line'), !!fleet);
    setShown($('fleet-sep'), !!fleet);
    if (fleet) {
      let text = `fleet ${fleet.namespace || ''}`.trim();
      if (isNum(fleet.processes)) text += ` · ${fleet.processes} process${fleet.processes === 1 ? '' : 'es'}`;
      if (fleet.reachable === false) text += ' · Redis unreachable';
      setText($('fleet-line'), text);
      setClass($('fleet-line'), fleet.reachable === false ? 'fleet-bad' : '');
    }
  }

  let faviconTone = null;
  function setFavicon(toneName) {
    if (toneName === faviconTone) return;
    faviconTone = toneName;
    const svg = `<svg xmlns="${SVGNS}" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${TONE_COLOURS[toneName] || TONE_COLOURS.none}"/></svg>`;
    let link = $('favicon');
    if (!link) {  // made here, so that the page's HTML loads nothing but the package's files
      link = document.createElement('link');
      link.id = 'favicon';
      link.rel = 'icon';
      document.head.append(link);
    }
    link.href = 'data:image/svg+xml,' + encodeURIComponent(svg);
  }

  function renderLog(frame) {
    const log = Array.isArray(frame.operator_actions) ? frame.operator_actions : [];
    const key = JSON.stringify(log);
    if (key === actionsKey) return;
    actionsKey = key;
    const items = log.slice().reverse().map((a) => {
      const li = h('li', 'log-entry');
      const head = h('p', 'log-head');
      head.append(
        h('time', 'num', fmtClock(a.at)),
        h('strong', '', words({}, a.action)),
        h('span', '', a.target == null ? '' : String(a.target)),
        h('span', 'log-scope', a.fleet ? 'whole fleet' : a.target == null ? '' : 'this process'),
      );
      li.append(head);
      const who = [a.by ? `by ${a.by}` : '', a.reason ? `“${a.reason}”` : ''].filter(Boolean).join(': ');
      if (who) li.append(h('p', 'log-reason', who));
      return li;
    });
    $('action-log').replaceChildren(...items);
    setShown($('actions-empty'), items.length === 0);
  }

  // -- filtering ------------------------------------------------------------------------------

  const collections = {};

  function applyFilter() {
    let shown = 0;
    let total = 0;
    for (const c of Object.values(collections)) {
      shown += c.applyFilter();
      total += c.views.size;
    }
    const active = !!filter.text || filter.problemsOnly;
    setText($('match-count'), active ? `showing ${shown} of ${total}` : '');
    updateEmpties();
  }

  function updateEmpties() {
    const pairs = [
      ['breakers', 'breakers-empty', 'No circuit breakers'], ['limiters', 'limiters-empty', 'No rate limiters'],
      ['pressure', 'pressure-empty', 'No pressure monitors'], ['pools', 'pools-empty', 'No connection pools'],
      ['bulkheads', 'bulkheads-empty', 'No bulkheads'],
    ];
    for (const [key, id, none] of pairs) {
      const c = collections[key];
      const node = $(id);
      setShown(node, c.shown === 0);
      setText(node, c.views.size === 0 ? `${none}.` : 'Nothing matches the filter.');
    }
  }

  function findView(kind, name) {
    const map = {
      circuit_breaker: 'breakers', rate_limiter: 'limiters', connection_pool: 'pools',
      bulkhead: 'bulkheads',
    };
    const c = collections[map[kind]] || (PRESSURE_WORDS[kind] ? collections.pressure : null);
    return c ? c.views.get(String(name)) : null;
  }

  function reveal(kind, name) {
    const view = findView(kind, name);
    if (!view) return;
    if (!view.visible) {
      $('search').value = '';
      filter.text = '';
      filter.problemsOnly = false;
      $('only-problems').checked = false;
      applyFilter();
    }
    view.root.scrollIntoView({ block: 'center' });
    view.root.focus({ preventScroll: true });
  }

  // -- rendering a frame ----------------------------------------------------------------------

  function render(frame) {
    page.frame = frame;
    if (isNum(frame.history_length) && frame.history_length > 1) page.historyLength = frame.history_length;
    const actions = frame.actions || {};
    const enabled = !!actions.enabled;
    const reload = enabled && actions.reload !== false;  // reload: the server has the file
    const authChanged = enabled !== page.actions.enabled || reload !== page.actions.reload;
    page.actions = { enabled, fleet: !!actions.fleet, reload };

    collections.breakers.sync(frame.breakers, frame);
    collections.limiters.sync(frame.limiters, frame);
    collections.pools.sync(frame.pools, frame);
    collections.bulkheads.sync(frame.bulkheads, frame);
    collections.pressure.sync(frame.pressure, frame);
    const chaos = frame.chaos || {};
    collections.chaos.sync(chaos.experiments, frame);
    renderHeader(frame);  // after the components: its problems link to their views
    renderLog(frame);
    if (authChanged) syncOperator();

    const b = collections.breakers;
    setText($('count-breakers'), b.views.size);
    setText($('count-limiters'), collections.limiters.views.size);
    setText($('breakers-summary'), summary(b, 'breaker'));
    setText($('limiters-summary'), summary(collections.limiters, 'limiter'));
    const experiments = collections.chaos.views.size;
    setText($('chaos-summary'), chaos.enabled ? `enabled · ${experiments} running` : 'disabled');
    setShown($('chaos-empty'), experiments === 0);
    const stop = $('stop-chaos');
    if (stop) setShown(stop, !!chaos.enabled || experiments > 0);
    applyFilter();
    setText($('seq'), frame.seq == null ? '–' : frame.seq);
  }

  function summary(collection, noun) {
    const counts = new Map();
    for (const v of collection.views.values()) {
      if (v.tone !== 'ok') counts.set(v.word, (counts.get(v.word) || 0) + 1);
    }
    const n = collection.views.size;
    let text = `${n} ${noun}${n === 1 ? '' : 's'}`;
    if (counts.size) text += ' · ' + [...counts].map(([w, c]) => `${c} ${w}`).join(' · ');
    return text;
  }

  // The operator's controls and dialogs are in the document only while the dashboard has
  // actions: a read-only dashboard's page has no button that could act.
  let operatorOn = false;

  function syncOperator() {
    const enabled = page.actions.enabled;
    if (enabled && !operatorOn) installOperator();
    else if (!enabled && operatorOn) removeOperator();
    if (enabled) {
      setShown($('reload-button'), !!page.actions.reload);
      setText($('token-button'), getToken() ? 'Forget admin token' : 'Enter admin token');
    }
    for (const view of collections.limiters.views.values()) syncRefusedControls(view);
    for (const view of collections.breakers.views.values()) syncBreakerControls(view);
  }

  function installOperator() {
    operatorOn = true;
    const tokenButton = button('Enter admin token', '', () => {
      if (getToken()) {
        forgetToken();
        notify('Admin token forgotten.', 'ok');
      } else {
        openToken();
      }
    });
    tokenButton.id = 'token-button';
    const reloadButton = button('Reload config', '', (ev) => openAction('reload', null, ev.currentTarget));
    reloadButton.id = 'reload-button';
    $('operator').append(tokenButton, reloadButton);
    const stop = button('Stop all chaos', 'danger small', (ev) => openAction('stop_chaos', null, ev.currentTarget));
    stop.id = 'stop-chaos';
    stop.hidden = true;  // shown by the next frame while chaos is on
    $('chaos-head').append(stop);
    document.body.append($('operator-dialogs').content.cloneNode(true));

    $('action-form').addEventListener('submit', submitAction);
    $('action-cancel').addEventListener('click', () => closeDialog($('action-dialog')));
    $('action-dialog').addEventListener('close', () => {
      const opener = pending.opener;
      if (opener && opener.isConnected) opener.focus();
    });
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();  // never a form submission: the CSP has form-action 'none'
      const token = $('token-input').value.trim();
      if (!token) {
        showError($('token-error'), 'Enter the admin token.');
        return;
      }
      saveToken(token);
      closeDialog($('token-dialog'));
      notify('Admin token kept for this tab.', 'ok');
    });
    $('token-cancel').addEventListener('click', () => closeDialog($('token-dialog')));
  }

  function removeOperator() {
    operatorOn = false;
    for (const id of ['action-dialog', 'token-dialog']) {
      const dialog = $(id);
      if (dialog.open) dialog.close();
      dialog.remove();
    }
    $('operator').replaceChildren();
    $('stop-chaos').remove();
  }

  // -- the stream -----------------------------------------------------------------------------

  let source = null;
  let retry = null;
  let retryDelay = 1000;
  let staleTimer = null;

  function setConn(state, text) {
    setClass($('conn'), 'conn-state conn-' + state);
    setText($('conn'), text || state);
  }

  function connect() {
    clearTimeout(retry);
    if (source) source.close();
    setConn(stats.frames ? 'reconnecting' : 'connecting');
    source = new EventSource('api/stream');
    source.addEventListener('state', onFrame);
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        // the server answered with an error: EventSource gives up, so try again ourselves
        setConn('reconnecting');
        retry = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      } else {
        setConn('reconnecting');
      }
    });
  }

  function onFrame(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (err) {
      notify('A frame could not be read: ' + err.message, 'bad');
      return;
    }
    const started = performance.now();
    render(frame);
    const lag = Date.now() / 1000 - frame.sent_at;
    const took = performance.now() - started;

    retryDelay = 1000;
    setConn('live');
    page.lastFrameAt = Date.now();
    clearTimeout(staleTimer);
    const interval = isNum(frame.interval) && frame.interval > 0 ? frame.interval : 1;
    staleTimer = setTimeout(stale, Math.max(3 * interval, 3) * 1000);

    if (isNum(lag)) {
      stats.lag.frames += 1;
      lagSum += lag;
      stats.lag.last = lag;
      stats.lag.max = stats.lag.max == null ? lag : Math.max(stats.lag.max, lag);
      stats.lag.mean = lagSum / stats.lag.frames;
      stats.lag.recent.push(lag);
      if (stats.lag.recent.length > 120) stats.lag.recent.shift();
      setText($('lag'), fmtDuration(lag));
    }
    stats.render.last = took;
    stats.render.max = stats.render.max == null ? took : Math.max(stats.render.max, took);
    stats.render.recent.push(took);
    if (stats.render.recent.length > 120) stats.render.recent.shift();
    stats.seq = frame.seq;
    stats.frames += 1;
  }

  function stale() {
    const seconds = Math.round((Date.now() - page.lastFrameAt) / 1000);
    setConn('stale', `stalled: no frame for ${seconds} s`);
    staleTimer = setTimeout(stale, 1000);
  }

  // -- the admin token and the actions --------------------------------------------------------

  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (err) {
      return '';
    }
  }
  function saveToken(token) {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (err) {
      notify('This browser does not keep the token: session storage is off.', 'warn');
    }
    syncOperator();
  }
  function forgetToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      // nothing kept
    }
    syncOperator();
  }

  async function post(url, body) {
    let response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + getToken(), 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (err) {
      return { ok: false, status: 0, error: `The server did not answer (${err.message}).` };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    const error = data && typeof data.error === 'string' ? data.error : `HTTP ${response.status}`;
    return { ok: response.ok, status: response.status, data, error: response.ok ? null : error };
  }

  let noticeTimer = null;
  function notify(message, toneName) {
    const node = $('notice');
    setClass(node, 'notice tone-' + (toneName || 'ok'));
    setText(node, message);
    node.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { node.hidden = true; }, 20000);
  }

  const pending = { action: null, target: null, opener: null };

  function openAction(action, target, opener) {
    const spec = ACTIONS[action];
    const dialog = $('action-dialog');
    pending.action = action;
    pending.target = target;
    pending.opener = opener || document.activeElement;
    setText($('action-title'), spec.title(target));
    setText($('action-desc'), spec.desc(target));
    setText($('action-confirm'), spec.verb);
    setClass($('action-confirm'), action === 'reset' ? 'primary-button' : 'danger');
    const view = target == null ? null : collections.breakers.views.get(target);
    const fleet = view && view.item.fleet;
    const fleetWide = page.actions.fleet && !!fleet;
    setShown($('action-fleet-row'), fleetWide);
    const box = $('action-fleet');
    box.checked = fleetWide && action === 'reset' && !!fleet.override;
    if (fleetWide) {
      const n = isNum(fleet.processes) ? ` (${fleet.processes} reporting)` : '';
      setText($('action-fleet-text'), `Whole fleet: every process${n}, not only this one`);
    }
    $('action-reason').value = '';
    showTokenField(!getToken());
    showError($('action-error'), '');
    $('action-confirm').disabled = false;
    dialog.showModal();
    $('action-reason').focus();
  }

  function showTokenField(shown) {
    setShown($('action-token-row'), shown);
    $('action-token').required = shown;
    if (!shown) $('action-token').value = '';
  }

  function showError(node, message) {
    setText(node, message);
    setShown(node, !!message);
  }

  async function submitAction(event) {
    event.preventDefault();  // never a form submission: the CSP has form-action 'none'
    const reason = $('action-reason').value.trim();
    if (!reason) {
      showError($('action-error'), 'Give a reason: it is recorded with the action.');
      $('action-reason').focus();
      return;
    }
    if (!$('action-token-row').hidden) {
      const token = $('action-token').value.trim();
      if (!token) {
        showError($('action-error'), 'Enter the admin token.');
        $('action-token').focus();
        return;
      }
      saveToken(token);
    }
    const body = { action: pending.action, target: pending.target, reason };
    if (pending.target != null) body.fleet = !$('action-fleet-row').hidden && $('action-fleet').checked;
    const confirm = $('action-confirm');
    confirm.disabled = true;
    const res = await post('api/actions', body);
    confirm.disabled = false;
    if (res.status === 401) {
      forgetToken();
      showTokenField(true);
      $('action-token').value = '';
      showError($('action-error'), `${res.error}: enter the admin token again.`);
      $('action-token').focus();
      return;
    }
    if (!res.ok) {
      showError($('action-error'), res.error);
      return;
    }
    closeDialog($('action-dialog'));
    notify((res.data && res.data.message) || `${ACTIONS[pending.action].verb}: done.`, 'ok');
  }

  function closeDialog(dialog) {
    if (dialog.open) dialog.close();
  }

  function openToken() {
    if (!page.actions.enabled) return;
    $('token-input').value = '';
    showError($('token-error'), '');
    const dialog = $('token-dialog');
    if (!dialog.open) dialog.showModal();
    $('token-input').focus();
  }

  // -- start ----------------------------------------------------------------------------------

  function start() {
    setFavicon('none');  // before the browser asks the server for a /favicon.ico
    collections.breakers = new Collection($('breaker-groups'), {
      make: makeBreaker, update: updateBreaker, grouped: true, noun: 'breaker',
    });
    collections.limiters = new Collection($('limiter-groups'), {
      make: makeLimiter, update: updateLimiter, grouped: true, noun: 'limiter',
    });
    collections.pools = new Collection($('pool-rows'), {
      make: (p) => makeRow(p, String(p.name), ['size']), update: updatePool,
    });
    collections.bulkheads = new Collection($('bulkhead-rows'), {
      make: (b) => makeRow(b, String(b.name)), update: updateBulkhead,
    });
    collections.pressure = new Collection($('pressure-rows'), { make: makePressure, update: updatePressure });
    collections.chaos = new Collection($('chaos-list'), { make: makeExperiment, update: updateExperiment });

    const search = $('search');
    search.addEventListener('input', () => {
      filter.text = search.value.trim().toLowerCase();
      applyFilter();
    });
    search.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && search.value) {
        search.value = '';
        filter.text = '';
        applyFilter();
      }
    });
    $('only-problems').addEventListener('change', (ev) => {
      filter.problemsOnly = ev.currentTarget.checked;
      applyFilter();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const t = ev.target;
      const typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
      if (typing || document.querySelector('dialog[open]')) return;
      ev.preventDefault();
      search.focus();
      search.select();
    });

    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
