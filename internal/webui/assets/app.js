// The web UI of vectordb-operator: no framework, no build step. Data arrives over Server-Sent
// Events from the manager's cache; every value is written with textContent, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  // Timings for the end-to-end test and the benchmarks: ms since navigation start, and
  // wall-clock times of updates (Date.now(), comparable with the test's clock).
  const metrics = window.__uiMetrics = { firstRender: null, listUpdates: {}, detailUpdates: [], renderMs: [] };
  let session = null;
  let es = null;
  let current = null; // the detail shown: {ns, name, data}
  const rows = new Map(); // "ns/name" -> {sum, tr, cells}

  function api(path, opts) {
    const o = Object.assign({ credentials: 'same-origin' }, opts || {});
    o.headers = Object.assign({ 'X-Vectordb-UI': '1' }, o.body ? { 'Content-Type': 'application/json' } : {});
    return fetch(path, o);
  }
  async function errorText(r) {
    try { return (await r.json()).error || r.statusText; } catch (e) { return r.status + ' ' + r.statusText; }
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function setText(e, t) { t = String(t); if (e.textContent !== t) e.textContent = t; }
  const nf = new Intl.NumberFormat();
  const num = (n) => nf.format(n || 0);
  function dur(s) {
    if (s === null || s === undefined || s < 0 || !isFinite(s)) return '—';
    s = Math.round(s);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor(s % 3600 / 60)).padStart(2, '0') + 'm';
    return Math.floor(s / 86400) + 'd' + Math.floor(s % 86400 / 3600) + 'h';
  }
  const age = (ts) => ts ? dur((Date.now() - Date.parse(ts)) / 1000) : '—';
  const rate = (r) => r > 0 ? (r >= 100 ? num(Math.round(r)) : r.toFixed(1)) : '—';
  const pct = (f) => Math.floor((f || 0) * 1000) / 10;
  function show(id) {
    for (const s of ['login', 'list', 'detail']) $(s).hidden = s !== id;
  }
  function notice(t) { setText($('notice'), t || ''); }

  // ---- session ----
  async function boot() {
    window.addEventListener('hashchange', route);
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('filter').addEventListener('input', applyFilter);
    $('act-suspend').addEventListener('click', () => act('suspend'));
    $('act-resume').addEventListener('click', () => act('resume'));
    $('act-cancel').addEventListener('click', () => { $('confirm').hidden = false; $('confirm-yes').focus(); });
    $('confirm-no').addEventListener('click', () => { $('confirm').hidden = true; $('act-cancel').focus(); });
    $('confirm-yes').addEventListener('click', () => { $('confirm').hidden = true; act('cancel'); });
    setInterval(tick, 1000);
    const r = await api('api/session');
    if (r.ok) session = await r.json();
    else if (r.status === 503) setText($('login-error'), await errorText(r));
    route();
  }
  async function login(ev) {
    ev.preventDefault();
    setText($('login-error'), '');
    const r = await api('api/login', { method: 'POST', body: JSON.stringify({ key: $('key').value }) });
    $('key').value = '';
    if (!r.ok) { setText($('login-error'), await errorText(r)); $('key').focus(); return; }
    session = await r.json();
    route();
  }
  async function logout() {
    await api('api/logout', { method: 'POST' });
    session = null;
    route();
  }

  // ---- routing ----
  function route() {
    closeStream();
    notice('');
    const who = $('who');
    if (!session) {
      setText(who, ''); $('logout').hidden = true; $('live').hidden = true;
      show('login'); $('key').focus();
      return;
    }
    setText(who, 'Key: ' + session.name + (session.write ? ' (read-write)' : ' (read-only)'));
    $('logout').hidden = false;
    // A hand-edited or truncated hash (bad %-escapes, odd shapes) must not blank the page: it
    // falls back to the list and says why.
    const m = location.hash.match(/^#\/i\/([^/]+)\/([^/]+)$/);
    let target = null;
    if (m) {
      try { target = [decodeURIComponent(m[1]), decodeURIComponent(m[2])]; } catch (e) { target = null; }
    }
    if (target) openDetail(target[0], target[1]);
    else {
      openList();
      if (location.hash && location.hash !== '#' && location.hash !== '#/') notice('Unknown address ' + location.hash + ': showing the list.');
    }
  }
  function closeStream() { if (es) { es.close(); es = null; } }
  function stream(url, handlers) {
    const live = $('live');
    live.hidden = false; live.className = 'live'; setText(live, 'connecting…');
    const s = es = new EventSource(url);
    s.onopen = () => { live.className = 'live on'; setText(live, 'live'); };
    for (const [name, fn] of Object.entries(handlers)) {
      s.addEventListener(name, (e) => {
        if (es !== s) return;
        const t0 = performance.now();
        fn(JSON.parse(e.data));
        // How long each push takes to parse and render: what keeps the page responsive.
        metrics.renderMs.push(performance.now() - t0);
        if (metrics.renderMs.length > 1000) metrics.renderMs.shift();
      });
    }
    s.addEventListener('failure', (e) => notice(JSON.parse(e.data).error));
    s.addEventListener('signedout', () => { session = null; route(); });
    s.onerror = async () => {
      if (es !== s) return;
      live.className = 'live'; setText(live, 'reconnecting…');
      // EventSource retries by itself, except after a refusal: then find out why.
      if (s.readyState === EventSource.CLOSED) {
        const r = await api('api/session');
        if (!r.ok) { session = null; if (r.status === 503) setText($('login-error'), await errorText(r)); route(); }
        else setTimeout(() => { if (es === s) route(); }, 2000);
      }
    };
  }
  function firstRender() {
    if (metrics.firstRender === null) metrics.firstRender = performance.now();
  }

  // ---- list page ----
  const columns = ['Namespace', 'Name', 'Phase', 'Progress', 'Processed', 'Failed', 'Total', 'Rows/s', 'ETA', 'Age', 'Task id'];
  function openList() {
    show('list');
    document.title = 'Ingestions · vectordb-operator';
    stream('api/stream', {
      snapshot: (d) => {
        const seen = new Set();
        for (const s of d.items) { upsertRow(s); seen.add(s.namespace + '/' + s.name); }
        for (const k of [...rows.keys()]) if (!seen.has(k)) removeRow(k);
        sortRows(); firstRender();
      },
      changes: (d) => {
        let added = false;
        for (const s of d.upsert) added = upsertRow(s) || added;
        for (const k of d.delete) removeRow(k);
        if (added) sortRows();
      },
    });
  }
  function upsertRow(s) {
    const key = s.namespace + '/' + s.name;
    let r = rows.get(key);
    const added = !r;
    if (!r) {
      const tr = el('tr');
      tr.dataset.key = key;
      const cells = columns.map((c) => { const td = el('td'); td.dataset.label = c; tr.appendChild(td); return td; });
      const a = el('a'); a.href = '#/i/' + encodeURIComponent(s.namespace) + '/' + encodeURIComponent(s.name);
      cells[1].appendChild(a);
      cells[2].appendChild(el('span', 'phase'));
      const bar = el('div', 'bar'); bar.setAttribute('role', 'progressbar'); bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100'); bar.setAttribute('aria-label', 'Progress of ' + key); bar.appendChild(el('span'));
      cells[3].appendChild(bar); cells[3].appendChild(el('span', 'bar-label'));
      for (const i of [4, 5, 6, 7, 8, 9]) cells[i].className = 'num';
      cells[10].className = 'id';
      r = { tr, cells };
      rows.set(key, r);
      $('list-body').appendChild(tr);
    }
    r.sum = s;
    const c = r.cells;
    setText(c[0], s.namespace);
    setText(c[1].firstChild, s.name);
    const ph = c[2].firstChild;
    setText(ph, s.phase + (s.suspended ? ' (suspended)' : '') + (s.cancelled && s.phase !== 'Cancelled' ? ' (cancelling)' : ''));
    ph.className = 'phase ' + s.phase;
    paintBar(c[3].firstChild, s);
    setText(c[3].lastChild, pct(s.progress) + '%');
    setText(c[4], num(s.rowsProcessed));
    setText(c[5], num(s.rowsFailed));
    setText(c[6], s.rowsTotal ? num(s.rowsTotal) : '—');
    setText(c[7], rate(s.rowsPerSecond));
    setText(c[8], dur(s.etaSeconds));
    setText(c[9], age(s.created));
    setText(c[10], s.taskID);
    metrics.listUpdates[key] = { at: Date.now(), processed: s.rowsProcessed, phase: s.phase };
    filterRow(r);
    return added;
  }
  function paintBar(bar, s) {
    const p = pct(s.progress);
    bar.firstChild.style.width = p + '%';
    bar.setAttribute('aria-valuenow', String(p));
    bar.classList.toggle('done', s.phase === 'Completed');
    bar.classList.toggle('failed', s.phase === 'Failed');
  }
  function removeRow(key) {
    const r = rows.get(key);
    if (r) { r.tr.remove(); rows.delete(key); }
    countRows();
  }
  function sortRows() {
    // Newest first, then by namespace and name.
    const list = [...rows.values()].sort((a, b) =>
      (b.sum.created || '').localeCompare(a.sum.created || '') ||
      a.sum.namespace.localeCompare(b.sum.namespace) || a.sum.name.localeCompare(b.sum.name));
    const body = $('list-body');
    for (const r of list) body.appendChild(r.tr);
    countRows();
  }
  function filterRow(r) {
    const q = $('filter').value.trim().toLowerCase();
    const s = r.sum;
    r.tr.hidden = q !== '' && ![s.namespace, s.name, s.phase, s.taskID].some((v) => String(v).toLowerCase().includes(q));
  }
  function applyFilter() { for (const r of rows.values()) filterRow(r); countRows(); }
  function countRows() {
    let shown = 0;
    for (const r of rows.values()) if (!r.tr.hidden) shown++;
    setText($('list-count'), shown === rows.size ? num(rows.size) + ' ingestions' : num(shown) + ' of ' + num(rows.size) + ' ingestions');
  }
  function tick() {
    if (!$('list').hidden) for (const r of rows.values()) setText(r.cells[9], age(r.sum.created));
  }

  // ---- detail page ----
  function openDetail(ns, name) {
    show('detail');
    current = { ns, name, data: null };
    setText($('detail-title'), ns + '/' + name);
    document.title = name + ' · vectordb-operator';
    setText($('action-result'), '');
    // Nothing from the page shown before stays, and no action is offered until this
    // ingestion's state has arrived: a cancel is only ever asked of what the page shows.
    setText($('d-phase'), ''); setText($('d-message'), '');
    setActions(null);
    $('confirm').hidden = true;
    $('readonly-note').hidden = session.write;
    stream('api/stream?ingestion=' + encodeURIComponent(ns + '/' + name), {
      detail: (d) => { renderDetail(d); firstRender(); },
      gone: () => { setText($('d-message'), 'This ingestion no longer exists.'); setActions(null); },
    });
  }
  function setActions(d) {
    const live = d && !['Completed', 'PartiallyCompleted', 'Failed', 'Cancelled'].includes(d.phase) && !d.cancelled;
    $('act-suspend').disabled = !live || d.suspended;
    $('act-resume').disabled = !live || !d.suspended;
    $('act-cancel').disabled = !live;
  }
  async function act(action) {
    const c = current;
    if (!c) return;
    const out = $('action-result');
    setText(out, action + '…');
    out.className = '';
    const r = await api('api/ingestions/' + encodeURIComponent(c.ns) + '/' + encodeURIComponent(c.name) + '/' + action, { method: 'POST' });
    if (r.ok) { setText(out, (await r.json()).message); return; }
    out.className = 'error';
    setText(out, 'Refused (' + r.status + '): ' + await errorText(r));
  }
  function fillRows(body, items, cols) {
    body.replaceChildren(...items.map((it) => {
      const tr = el('tr');
      for (const c of cols) {
        const td = el('td', c.cls, c.get(it));
        tr.appendChild(td);
      }
      return tr;
    }));
  }
  function expand(ranges, into, mark, total) {
    if (!ranges) return 0;
    let n = 0;
    for (const part of ranges.split(',')) {
      const [a, b] = part.split('-').map((x) => parseInt(x, 10));
      const end = isNaN(b) ? a : b;
      for (let i = a; i <= end && i < total; i++) { if (into[i] !== mark) { into[i] = mark; n++; } }
    }
    return n;
  }
  const stateNames = ['pending', 'completed', 'failed', 'running'];
  const stateClass = ['', 'c', 'f', 'r'];
  function renderGrid(g) {
    const grid = $('grid');
    const total = g.total || 0;
    if (grid.childElementCount !== total) {
      const frag = document.createDocumentFragment();
      for (let i = 0; i < total; i++) frag.appendChild(el('i'));
      grid.replaceChildren(frag);
    }
    const st = new Uint8Array(total);
    for (const i of g.running || []) if (i < total) st[i] = 3;
    expand(g.completed, st, 1, total);
    expand(g.failed, st, 2, total);
    const counts = [0, 0, 0, 0];
    const cells = grid.children;
    for (let i = 0; i < total; i++) {
      counts[st[i]]++;
      const cell = cells[i];
      const cls = stateClass[st[i]];
      if (cell.className !== cls) { cell.className = cls; cell.title = 'chunk ' + i + ': ' + stateNames[st[i]]; }
      else if (!cell.title) cell.title = 'chunk ' + i + ': ' + stateNames[st[i]];
    }
    const legend = $('grid-legend');
    legend.replaceChildren(...[[1, 'c', 'completed'], [2, 'f', 'failed'], [3, 'r', 'running'], [0, 'p', 'pending']].map(([k, cls, label]) => {
      const s = el('span'); s.appendChild(el('i', cls)); s.appendChild(document.createTextNode(num(counts[k]) + ' ' + label)); return s;
    }));
    grid.setAttribute('aria-label', 'Chunk grid of ' + num(total) + ' chunks: ' + num(counts[1]) + ' completed, ' +
      num(counts[2]) + ' failed, ' + num(counts[3]) + ' running, ' + num(counts[0]) + ' pending');
    return counts;
  }
  function renderDetail(d) {
    current.data = d;
    const ph = $('d-phase');
    setText(ph, d.phase + (d.suspended ? ' (suspended)' : '') + (d.cancelled && d.phase !== 'Cancelled' ? ' (cancelling)' : ''));
    ph.className = 'phase ' + d.phase;
    setText($('d-message'), d.message || '');
    setActions(d);
    const bar = $('d-progress');
    paintBar(bar, d);
    const nums = [
      ['Progress', pct(d.progress) + '%'], ['Rows processed', num(d.rowsProcessed)], ['Rows failed', num(d.rowsFailed)],
      ['Rows skipped', num(d.rowsSkipped)], ['Rows total', d.rowsTotal ? num(d.rowsTotal) : '—'],
      ['Rows/s', rate(d.rowsPerSecond)], ['ETA', dur(d.etaSeconds)], ['Task id', d.taskID],
      ['Created', d.created || '—'], ['Started', d.started || '—'], ['Finished', d.completed || '—'],
      ['Parallelism', num(d.parallelism)], ['Rows per chunk', num(d.rowsPerChunk)],
    ];
    if (d.deletesMissing || d.vectorsDeleted) nums.push(['Vectors deleted (not in the file)', num(d.vectorsDeleted)]);
    $('d-numbers').replaceChildren(...nums.map(([k, v]) => { const div = el('div'); div.appendChild(el('dt', null, k)); div.appendChild(el('dd', null, v)); return div; }));
    const counts = renderGrid(d.grid);
    fillRows($('failed-body'), d.failedChunks, [
      { get: (f) => f.index, cls: 'num' }, { get: (f) => f.rows || '' }, { get: (f) => f.reason || '' },
      { get: (f) => f.message || '' }, { get: (f) => f.deadLetter || '—', cls: 'id' },
    ]);
    setText($('failed-more'), d.failedChunks.length === 0 ? 'No failed chunks.' :
      d.failedNotListed > 0 ? num(d.failedNotListed) + ' more failed chunks are not detailed (the status keeps 50).' : '');
    const e = d.estimate || {}, u = d.usage || {};
    const usage = [['Tokens', num(e.tokens), d.usage ? num(u.tokens) : '—'], ['Requests', num(e.requests), d.usage ? num(u.requests) : '—'],
      ['Cost (USD)', e.costUSD || '—', u.costUSD || '—'], ['Vectors upserted', '—', d.usage ? num(u.vectorsUpserted) : '—'],
      ['Retries / rate-limited', '—', d.usage ? num(u.retries) + ' / ' + num(u.rateLimited) : '—'], ['Minimum duration', e.minDuration || '—', '—']];
    if (e.mode === 'batch') {
      // Batch mode: requests are batches, the cost is at the Batch API's rate (half the online price).
      usage.splice(1, 1, ['Batches', num(e.batches), d.usage ? num(u.requests) : '—']);
      usage.splice(3, 0, ['Online price of the tokens (USD)', e.onlineCostUSD || '—', '—'], ['Saved with the Batch API (USD)', e.savedUSD || '—', '—']);
    }
    const b = d.batch;
    if (b) {
      // The finished chunks' batches by OpenAI's state, and their lines done of lines submitted.
      const states = [['validating', b.validating], ['in progress', b.inProgress], ['finalizing', b.finalizing], ['completed', b.completed],
        ['failed', b.failed], ['expired', b.expired], ['cancelled', b.cancelled]].filter(([, n]) => n > 0).map(([k, n]) => num(n) + ' ' + k);
      usage.push(['Batches by state', '—', num(b.batches) + (states.length ? ': ' + states.join(', ') : '')],
        ['Batch lines done', '—', num(b.linesDone) + ' of ' + num(b.lines) + (b.linesFailed ? ' (' + num(b.linesFailed) + ' failed)' : '')]);
    }
    fillRows($('usage-body'), usage, [{ get: (r) => r[0] }, { get: (r) => r[1], cls: 'num' }, { get: (r) => r[2], cls: 'num' }]);
    const src = d.source, tg = d.target, em = d.embedding;
    const kv = [
      ['Source', (src.kind || '') + ' ' + (src.location || '')], ['Source endpoint', src.endpoint || 'AWS'], ['Source region', src.region || '—'],
      ['Source credentials', src.secret ? 'Secret ' + src.secret : 'the worker\'s identity'], ['Source ETag', src.etag || '—'],
      ['Size', src.sizeBytes ? num(src.sizeBytes) + ' bytes' : '—'],
      ['Target', 'Pinecone ' + tg.index + ' / namespace ' + (tg.namespace || '(default)')], ['Target key', 'Secret ' + tg.secret],
      ['Batch size', num(tg.batchSize)], ['Model', em.model + (em.dimensions ? ' (' + em.dimensions + ' dimensions)' : '')],
      ['Embedding endpoint', em.endpoint || 'OpenAI'], ['Embedding key', 'Secret ' + em.secret], ['Dead letters', d.deadLetter || 'none'],
    ];
    if (src.staged) kv.splice(1, 0, ['Staged to', src.staged]);
    $('d-config').replaceChildren(...kv.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
    fillRows($('cond-body'), d.conditions, [{ get: (c) => c.type }, { get: (c) => c.status }, { get: (c) => c.reason || '' },
      { get: (c) => c.message || '' }, { get: (c) => c.since || '' }]);
    fillRows($('events-body'), d.events, [{ get: (v) => v.last || '' }, { get: (v) => v.type }, { get: (v) => v.reason },
      { get: (v) => v.message }, { get: (v) => v.count, cls: 'num' }]);
    metrics.detailUpdates.push({ at: Date.now(), completed: counts[1], failed: counts[2], phase: d.phase });
    if (metrics.detailUpdates.length > 1000) metrics.detailUpdates.shift();
  }

  boot();
})();
