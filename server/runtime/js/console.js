// vm-system prelude, part 7 of 8: what leaves JavaScript: value and exception payloads (API.md
// §5, §12), well-formed strings, stack frames, and the console.
(function (global, I) {
  'use strict';
  const {
    JSONstringify, ObjectKeys, ObjectIs, ArrayIsArray, hasOwn, now, isDate, isMap, isSet,
    isRegExp, isError, isPromise, inspect, format, safeString, errorHeader, errorStack,
    cleanFrames, mapEntries, setValues, symbolToString, hostConsole, hostEvent, MapCtor,
  } = I;

  // ---------------------------------------------------------------- strings that leave JS
  // Everything handed to the host must be well-formed UTF-16: a lone surrogate becomes U+FFFD.
  const loneSurrogates = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
  const anySurrogate = /[\ud800-\udfff]/;  // cheap pre-check: the full pattern is slow
  function wellFormed(text) {
    if (!anySurrogate.test(text)) return text;
    loneSurrogates.lastIndex = 0;
    const out = text.replace(loneSurrogates, '\ufffd');
    loneSurrogates.lastIndex = 0;
    return out;
  }
  // JSON.stringify escapes a lone surrogate as \udXXX (a paired one stays literal): replace the
  // escape itself, minding an escaped backslash in front of it.
  const escapedSurrogate = /((?:^|[^\\])(?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g;
  function wellFormedJson(json) {
    if (json.indexOf('\\ud') === -1) return json;
    let prev;
    do {
      prev = json;
      json = json.replace(escapedSurrogate, '$1\\ufffd');
    } while (json !== prev);
    return json;
  }
  const quote = (text) => JSONstringify(wellFormed(text));

  // ---------------------------------------------------------------- out of memory
  // Describing an out-of-memory error must not allocate: its outcome is prebuilt.
  const OOM_PAYLOAD = '{"name":"InternalError","message":"InternalError: out of memory",' +
    '"stack":"InternalError: out of memory"}';
  const isOutOfMemory = (e) => {
    try { return e instanceof Error && e.name === 'InternalError' && e.message === 'out of memory'; } catch (x) { return false; }
  };

  // ---------------------------------------------------------------- payloads
  function valueType(v) {
    if (v === null) return 'null';
    const t = typeof v;
    if (t !== 'object') return t;
    if (ArrayIsArray(v)) return 'array';
    if (isDate(v)) return 'date';
    if (isRegExp(v)) return 'regexp';
    if (isError(v)) return 'error';
    if (isMap(v)) return 'map';
    if (isSet(v)) return 'set';
    if (isPromise(v)) return 'promise';
    return 'object';
  }

  const PREVIEW_LIMIT = 10000;
  const ENTRY_LIMIT = 100; // Map/Set entries described in a payload
  const ENTRY_PREVIEW = 1000;
  const UNLIMITED = -1;

  function grouped(n) {
    const s = `${n}`;
    let out = '';
    for (let i = 0; i < s.length; i++) {
      if (i > 0 && (s.length - i) % 3 === 0) out += ',';
      out += s[i];
    }
    return out;
  }

  // A preview longer than `limit` is cut and says so: "… 10,003 more characters".
  function cut(text, limit) {
    if (text.length <= limit) return text;
    return `${text.slice(0, limit)}… ${grouped(text.length - limit)} more characters`;
  }

  function previewOf(v, type) {
    if (type === 'symbol') return symbolToString(v);
    if (type === 'number') return ObjectIs(v, -0) ? '-0' : String(v);
    if (typeof v !== 'object' && typeof v !== 'function') return String(v);
    return inspect(v);
  }

  // Value payload (API.md §5, §12). Primitives preview as String(v) (-0 as "-0"); everything
  // else as inspect(v). `json` is the whole value when it fits the output budget (bytes still
  // allowed for this execution, UNLIMITED for none); a bigger one is omitted with
  // `truncated: true`. Maps and Sets also describe their entries for UIs that expand them.
  function valuePayload(v, budget, previewLimit = PREVIEW_LIMIT) {
    const type = valueType(v);
    if (type === 'undefined') return '{"type":"undefined","preview":"undefined","json":null}';
    if (type === 'null') return '{"type":"null","preview":"null","json":null}';
    const limit = budget === UNLIMITED ? previewLimit : Math.max(0, Math.min(previewLimit, budget));
    let out = `{"type":"${type}","preview":${quote(cut(previewOf(v, type), limit))}`;
    if (type === 'map' || type === 'set') out += `,"entries":${entriesJson(v, type)}`;
    let json;
    try { json = JSONstringify(v); } catch (e) { json = undefined; }
    if (typeof json === 'string') {
      if (budget === UNLIMITED || out.length + json.length + 10 <= budget) out += `,"json":${wellFormedJson(json)}`;
      else out += ',"truncated":true';
    }
    return `${out}}`;
  }

  function entriesJson(v, type) {
    const parts = [];
    const small = (x) => valuePayload(x, ENTRY_PREVIEW, ENTRY_PREVIEW);
    try {
      if (type === 'map') {
        for (const [k, val] of mapEntries(v)) {
          if (parts.length === ENTRY_LIMIT) break;
          parts.push(`[${small(k)},${small(val)}]`);
        }
      } else {
        for (const val of setValues(v)) {
          if (parts.length === ENTRY_LIMIT) break;
          parts.push(small(val));
        }
      }
    } catch (e) { /* an exotic collection: describe what was read */ }
    return `[${parts.join(',')}]`;
  }

  // Exception payload (API.md §5). Errors: name, message = "Name: message", stack = Node-like
  // (header line + user frames). A thrown non-error (`throw 42`) has no name and no stack; its
  // message is "Uncaught " + inspect(value), like the Node REPL. A SyntaxError carries `line`
  // and `column` (1-based) when its position is known.
  function exceptionPayload(e, budget) {
    const limit = budget === UNLIMITED ? PREVIEW_LIMIT : Math.max(200, Math.min(PREVIEW_LIMIT, budget >> 1));
    try {
      if (e !== null && typeof e === 'object' && isError(e)) {
        let name;
        try { name = e.name; } catch (err) { name = 'Error'; }
        name = name === undefined ? 'Error' : safeString(name);
        let out = `{"name":${quote(name)},"message":${quote(cut(errorHeader(e), limit))}` +
          `,"stack":${quote(cut(userFrames(errorStack(e)), limit))}`;
        const line = hasOwn(e, 'line') ? e.line : undefined;
        const column = hasOwn(e, 'column') ? e.column : undefined;
        if (typeof line === 'number' && typeof column === 'number') out += `,"line":${line},"column":${column}`;
        return `${out}}`;
      }
      return `{"message":${quote(cut(`Uncaught ${inspect(e)}`, limit))}}`;
    } catch (err) {
      // Describing failed: nearly always because the heap is exhausted (QuickJS then throws
      // null instead of an InternalError it cannot allocate).
      if (e === null || isOutOfMemory(e) || isOutOfMemory(err) || err === null) return OOM_PAYLOAD;
      return '{"name":"Error","message":"Error: exception could not be described"}';
    }
  }

  // The file of the execution in progress (prelude.js sets it), for stack frames.
  const stackFile = { name: '<repl>' };

  // Stack frames name the execution's file (`<repl>` for REPL input) and always carry a line
  // number (QuickJS leaves out line 1).
  const inputFrame = /\(<input>\)$|\(<input>(?=:\d+\)$)|^(\s+at )<input>(?=:\d+$)/gm;
  function userFrames(stack) {
    const name = stackFile.name;
    return stack.replace(inputFrame, (m, at) => {
      if (at !== undefined) return `${at}${name}`;
      return m === '(<input>)' ? `(${name}:1)` : `(${name}`;
    });
  }

  // ---------------------------------------------------------------- console
  // Plain console lines go through the fast host callback (level, text); anything with more
  // structure (a cleared view, a table, expandable arguments) as a whole payload.
  function emit(level, text) {
    const stop = hostConsole(level, wellFormed(text));
    if (typeof stop === 'string') throw new Error(stop);
  }
  function emitPayload(payloadJson) {
    const stop = hostEvent('console', payloadJson);
    if (typeof stop === 'string') throw new Error(stop);
  }

  const ARG_JSON_BUDGET = 16 * 1024;
  const isExpandable = (v) => v !== null && typeof v === 'object' && !isError(v) && !isPromise(v);

  const counts = new MapCtor();
  const timersLabels = new MapCtor();
  let groupIndent = '';
  const indent = (text) => (groupIndent === '' ? text : groupIndent + text.replace(/\n/g, `\n${groupIndent}`));
  const log = (level) => function (...args) {
    // Fast path for the common console.log('text') call: no formatting work at all.
    if (args.length === 1 && typeof args[0] === 'string') return emit(level, indent(args[0]));
    const text = indent(format(...args));
    let objects = false;
    for (let i = 0; i < args.length; i++) if (isExpandable(args[i])) { objects = true; break; }
    if (!objects) return emit(level, text);
    // Object arguments travel as value payloads too, so a UI can expand them like results.
    const described = args.map((a) => valuePayload(a, ARG_JSON_BUDGET));
    emitPayload(`{"level":"${level}","text":${quote(text)},"args":[${described.join(',')}]}`);
  };

  function tableCell(v) {
    if (typeof v === 'string') return inspect(v);
    const depth = v !== null && typeof v === 'object' && !ArrayIsArray(v) && ObjectKeys(v).length > 2 ? -1 : 0;
    return inspect(v, { depth });
  }

  // console.table: Node's box-drawing text, plus the cells for UIs that draw a real table.
  function table(data, properties) {
    if (data === null || typeof data !== 'object') return consoleObj.log(data);
    const columns = ['(index)'];
    const rows = [];
    const colIndex = new MapCtor();
    let hasValues = false;
    const keys = isMap(data) ? null : ObjectKeys(data);
    const entries = isMap(data) ? Array.from(mapEntries(data)) : isSet(data)
      ? Array.from(setValues(data)).map((v, i) => [i, v]) : keys.map((k) => [k, data[k]]);
    const wanted = ArrayIsArray(properties) ? properties.map(String) : null;
    if (wanted) for (const p of wanted) { colIndex.set(p, columns.length); columns.push(p); }
    for (const [key, value] of entries) {
      const row = [typeof key === 'string' ? key : inspect(key)];
      if (value !== null && typeof value === 'object') {
        for (const k of ObjectKeys(value)) {
          if (wanted && !colIndex.has(k)) continue;
          if (!colIndex.has(k)) { colIndex.set(k, columns.length); columns.push(k); }
          row[colIndex.get(k)] = tableCell(value[k]);
        }
      } else {
        hasValues = true;
        row.values = tableCell(value);
      }
      rows.push(row);
    }
    if (hasValues) columns.push('Values');
    const cells = rows.map((r) => columns.map((c, i) => (c === 'Values' && i === columns.length - 1 && hasValues
      ? (r.values === undefined ? '' : r.values) : (r[i] === undefined ? '' : r[i]))));
    const widths = columns.map((c, i) => cells.reduce((w, r) => Math.max(w, r[i].length), c.length) + 2);
    const line = (l, m, r) => l + widths.map((w) => '─'.repeat(w)).join(m) + r;
    const render = (r) => `│${r.map((c, i) => ` ${c}${' '.repeat(widths[i] - c.length - 1)}`).join('│')}│`;
    const text = [line('┌', '┬', '┐'), render(columns), line('├', '┼', '┤'), ...cells.map(render), line('└', '┴', '┘')].join('\n');
    emitPayload(`{"level":"log","text":${quote(indent(text))},"table":${wellFormedJson(JSONstringify({ columns, rows: cells }))}}`);
  }

  const consoleObj = {
    log: log('log'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    debug: log('debug'),
    trace(...args) {
      const err = new Error();
      const frames = typeof err.stack === 'string' ? userFrames(cleanFrames(err.stack)) : '';
      const msg = format(...args);
      emit('error', indent(`Trace${msg === '' ? '' : `: ${msg}`}${frames ? `\n${frames}` : ''}`));
    },
    dir(value, options) { emit('log', indent(inspect(value, options && typeof options === 'object' ? { depth: options.depth === undefined ? 2 : options.depth } : undefined))); },
    table,
    clear() {
      groupIndent = '';
      emitPayload('{"level":"clear","text":""}');
    },
    assert(cond, ...args) {
      if (!cond) {
        args[0] = `Assertion failed${args.length === 0 ? '' : `: ${typeof args[0] === 'string' ? args[0] : inspect(args[0])}`}`;
        consoleObj.warn(...args);
      }
    },
    count(label = 'default') {
      label = `${label}`;
      const n = (counts.get(label) || 0) + 1;
      counts.set(label, n);
      consoleObj.info(`${label}: ${n}`);
    },
    countReset(label = 'default') { counts.delete(`${label}`); },
    group(...args) { if (args.length) consoleObj.log(...args); groupIndent += '  '; },
    groupEnd() { groupIndent = groupIndent.slice(0, -2); },
    time(label = 'default') { timersLabels.set(`${label}`, now()); },
    timeEnd(label = 'default') {
      const t = timersLabels.get(`${label}`);
      if (t === undefined) return;
      timersLabels.delete(`${label}`);
      consoleObj.info(`${label}: ${(now() - t).toFixed(3)}ms`);
    },
    timeLog(label = 'default', ...args) {
      const t = timersLabels.get(`${label}`);
      if (t === undefined) return;
      consoleObj.info(`${label}: ${(now() - t).toFixed(3)}ms`, ...args);
    },
  };
  consoleObj.groupCollapsed = consoleObj.group;
  consoleObj.dirxml = consoleObj.log;

  Object.assign(I, {
    wellFormed, wellFormedJson, quote, OOM_PAYLOAD, isOutOfMemory, valuePayload, exceptionPayload,
    UNLIMITED, consoleObj, userFrames, stackFile,
  });
})(globalThis, globalThis.__vmi);
