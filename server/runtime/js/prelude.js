// vm-system prelude, part 4 of 4: console, value and exception payloads, the execution state
// machine, timers (foreground and background), require and the globals. Evaluated once per
// JsEngine after inspect.js, transform.js and complete.js; it deletes their shared namespace.
//
// The engine (Python) drives it through `__vm`, which it reads once and then deletes from the
// global scope (user code never sees it):
//   start(kind, source, filename, argsJson, envJson, background, budget) -> outcome or null
//   poll(nowMs, budget)        -> outcome string | seconds to the next timer | null
//   nextTimer(nowMs)           -> owner of the next due timer: 0 foreground, 1 background, -1 none
//   runTimer(nowMs)            -> runs that timer
//   nextDue(nowMs)             -> seconds to the next timer of any owner, or -1
//   adoptBackground()          -> the finished execution's timers become background; count left
//   backgroundCount(), clearForeground(), clearBackground()
//   configure(modulesJson, strict), setMemoryLimited(flag), load(source) -> exception or null
//   startModule(filename, argsJson, envJson), moduleDone(errorText|null)   (ESM files)
//   complete(input, cursor)    -> {"from","to","candidates"} JSON
// An outcome string is "v" + value payload JSON or "e" + exception payload JSON (API.md §5).
(function (global, I) {
  'use strict';
  const {
    JSONstringify, JSONparse, ObjectKeys, ObjectDefineProperty, ObjectIs, ArrayIsArray, hasOwn,
    promiseThen, PromiseCtor, promiseResolve, MapCtor, indirectEval, now, isDate, isMap, isSet,
    isRegExp, isError, isPromise, trackPromise, inspect, format, safeString, errorHeader,
    errorStack, cleanFrames, mapEntries, setValues, symbolToString, hostConsole, hostEvent, hostCall,
    prepare, explainSyntaxError, complete,
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
  // When the heap is full QuickJS cannot even allocate its InternalError and throws `null`.
  // So with a memory limit set, a thrown null is reported as out of memory, unless the
  // execution's source visibly throws/rejects null itself.
  let memoryLimited = false;
  const nullThrowRe = /\bthrow\s+null\b|\breject\(\s*null\s*\)/;

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

  // Stack frames name the execution's file (`<repl>` for REPL input) and always carry a line
  // number (QuickJS leaves out line 1).
  const inputFrame = /\(<input>\)$|\(<input>(?=:\d+\)$)|^(\s+at )<input>(?=:\d+$)/gm;
  function userFrames(stack) {
    const name = X.filename;
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

  // ---------------------------------------------------------------- the foreground execution
  // X is the execution in progress. Its outcome is described only when the engine collects it,
  // with the output budget left at that moment.
  const X = {
    gen: 0, kind: 'repl', filename: '<repl>', background: false, throwsNull: false,
    settled: true, isError: false, value: undefined, error: null, done: null,
  };

  function newExecution(kind, filename, background) {
    X.gen++;
    X.kind = kind;
    X.filename = filename;
    X.background = background;
    X.throwsNull = false;
    X.settled = false;
    X.isError = false;
    X.value = undefined;
    X.error = null;
    X.done = null;
  }

  function settleValue(gen, v) {
    if (gen !== X.gen) return;
    if (isPromise(v)) {
      trackPromise(v);
      promiseThen(v,
        () => { if (gen === X.gen && !X.settled) { X.settled = true; X.value = v; } },
        (e) => settleError(gen, e));
    } else {
      X.settled = true;
      X.value = v;
    }
  }

  function settleError(gen, e) {
    if (gen !== X.gen || X.settled) return;
    X.settled = true;
    X.isError = true;
    X.value = e;
  }

  function describeError(e, budget) {
    if (isOutOfMemory(e) || (e === null && memoryLimited && !X.throwsNull)) return 'e' + OOM_PAYLOAD;
    return 'e' + exceptionPayload(e, budget);
  }

  // `_` and `_error` in REPL input are the last value and the last exception, as in the Node
  // REPL, until the user assigns one of them (then it is theirs).
  const lastValues = { _: undefined, _error: undefined };
  for (const name of ['_', '_error']) {
    ObjectDefineProperty(global, name, {
      get() { return lastValues[name]; },
      set(v) { ObjectDefineProperty(global, name, { value: v, writable: true, configurable: true, enumerable: true }); },
      configurable: true, enumerable: false,
    });
  }
  function remember(name, v) {
    if (hasOwn(lastValues, name)) lastValues[name] = v;
  }
  // Assigning `_` replaces the accessor with the user's own binding: stop tracking it.
  function forgetIfUserOwned(name) {
    const d = Object.getOwnPropertyDescriptor(global, name);
    if (!d || hasOwn(d, 'value')) delete lastValues[name];
  }

  // The finished execution's outcome string, described within `budget` bytes.
  function outcome(budget) {
    if (X.done !== null) return X.done;
    const failed = X.error !== null;
    const isErr = failed || X.isError;
    const v = failed ? X.error : X.value;
    if (X.kind === 'repl') {
      forgetIfUserOwned('_');
      forgetIfUserOwned('_error');
      remember(isErr ? '_error' : '_', v);
    }
    X.done = isErr ? describeError(v, budget) : 'v' + valuePayload(v, budget);
    return X.done;
  }

  // An exception escaping a timer callback or a queueMicrotask callback ends the execution
  // that owns it with that exception (the first one wins), like an uncaught exception ends a
  // Node process; one escaping a background callback is reported as a background event.
  function uncaught(owner, e) {
    if (owner === BG) {
      const stop = hostEvent('exception', describeError(e, UNLIMITED).slice(1));
      void stop;
    } else if (X.error === null) {
      X.error = e;
    }
  }

  // ---------------------------------------------------------------- timers
  // Each timer has an owner: FG (the execution in progress, which waits for it unless it runs
  // with background timers) or BG (the session's background timers, run between executions).
  // A timer created by a callback belongs to that callback's owner.
  const FG = 0;
  const BG = 1;
  let current = FG;
  const timers = new MapCtor(); // id -> timer
  const owned = [0, 0];         // live timers per owner
  let heap = [];                // binary heap ordered by (due, seq)
  let nextTimerId = 1;
  let timerSeq = 0;
  const before = (a, b) => a.due < b.due || (a.due === b.due && a.seq < b.seq);
  function heapPush(t) {
    heap.push(t);
    let i = heap.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(heap[i], heap[p])) break;
      [heap[i], heap[p]] = [heap[p], heap[i]];
      i = p;
    }
  }
  function heapPop() {
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l], heap[m])) m = l;
        if (r < heap.length && before(heap[r], heap[m])) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m], heap[i]];
        i = m;
      }
    }
    return top;
  }
  function heapPeek() {
    while (heap.length > 0 && heap[0].cancelled) heapPop();
    return heap.length > 0 ? heap[0] : undefined;
  }

  function addTimer(fn, delay, args, repeat) {
    if (typeof fn !== 'function') {
      throw new TypeError(`The "callback" argument must be of type function. Received ${inspect(fn)}`);
    }
    delay = Number(delay);
    if (!(delay >= 1 && delay <= 2147483647)) delay = 1;
    const t = {
      id: nextTimerId++, due: now() + delay, seq: timerSeq++, fn, args,
      interval: repeat ? delay : -1, cancelled: false, owner: current,
    };
    timers.set(t.id, t);
    owned[t.owner]++;
    heapPush(t);
    return t.id;
  }
  function dropTimer(t) {
    if (t.cancelled) return;
    t.cancelled = true;
    timers.delete(t.id);
    owned[t.owner]--;
  }
  function clearTimer(id) {
    if (id === null || id === undefined) return;
    const t = timers.get(typeof id === 'object' ? Number(id) : id);
    if (t !== undefined) dropTimer(t);
  }
  function clearOwned(owner) {
    for (const t of Array.from(timers.values())) if (t.owner === owner) dropTimer(t);
    heap = heap.filter((t) => !t.cancelled);
  }

  // A foreground timer does not run once its execution has failed (poll reports the error).
  function nextTimer(nowMs) {
    const t = heapPeek();
    if (t === undefined || t.due > nowMs || (t.owner === FG && X.error !== null)) return -1;
    return t.owner;
  }

  function runTimer(nowMs) {
    if (nextTimer(nowMs) < 0) return;
    const t = heapPop();
    if (t.interval >= 0) {
      t.due = nowMs + t.interval;
      t.seq = timerSeq++;
      heapPush(t);
    } else {
      timers.delete(t.id);
      t.cancelled = true;
      owned[t.owner]--;
    }
    current = t.owner;
    try {
      t.fn.apply(undefined, t.args);
    } catch (e) {
      uncaught(t.owner, e);
    } finally {
      current = FG;
    }
  }

  function nextDue(nowMs) {
    const t = heapPeek();
    return t === undefined ? -1 : Math.max(0, t.due - nowMs) / 1000;
  }

  function poll(nowMs, budget) {
    if (X.error !== null) {
      clearOwned(FG);
      return outcome(budget);
    }
    if (X.settled && (X.background || owned[FG] === 0)) return outcome(budget);
    const due = nextDue(nowMs);
    return due < 0 ? null : due;
  }

  // ---------------------------------------------------------------- require
  let enabledModules = {};
  let moduleCache = new MapCtor();
  let strictMode = false;
  const errorCtors = { Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };

  function makeModule(name, fns) {
    const mod = {};
    for (const fn of fns) {
      const f = { [fn](...args) {
        const reply = hostCall(name, fn, JSONstringify(args));
        const env = JSONparse(reply);
        if (env && hasOwn(env, 'error')) {
          const info = env.error || {};
          const errName = typeof info.name === 'string' ? info.name : 'Error';
          const Ctor = hasOwn(errorCtors, errName) ? errorCtors[errName] : Error;
          const err = new Ctor(typeof info.message === 'string' ? info.message : 'host call failed');
          if (err.name !== errName) {
            ObjectDefineProperty(err, 'name', { value: errName, writable: true, configurable: true, enumerable: false });
          }
          throw err;
        }
        return env ? env.ok : undefined;
      } }[fn];
      mod[fn] = f;
    }
    return Object.freeze(mod);
  }

  function require(name) {
    const id = typeof name === 'string' && name.startsWith('node:') ? name.slice(5) : name;
    if (typeof id !== 'string' || !hasOwn(enabledModules, id)) {
      throw new Error(`Invalid module: '${safeString(name)}' is not enabled for this session`);
    }
    let mod = moduleCache.get(id);
    if (mod === undefined) {
      mod = makeModule(id, enabledModules[id]);
      moduleCache.set(id, mod);
    }
    return mod;
  }

  // ---------------------------------------------------------------- globals
  const defineGlobal = (name, value) => ObjectDefineProperty(global, name, {
    value, writable: true, configurable: true, enumerable: false,
  });
  defineGlobal('console', consoleObj);
  defineGlobal('global', global);
  defineGlobal('require', require);
  defineGlobal('setTimeout', function setTimeout(fn, delay, ...args) { return addTimer(fn, delay, args, false); });
  defineGlobal('setInterval', function setInterval(fn, delay, ...args) { return addTimer(fn, delay, args, true); });
  defineGlobal('clearTimeout', function clearTimeout(id) { clearTimer(id); });
  defineGlobal('clearInterval', function clearInterval(id) { clearTimer(id); });
  if (typeof global.setImmediate !== 'function') {
    defineGlobal('setImmediate', function setImmediate(fn, ...args) { return addTimer(fn, 0, args, false); });
    defineGlobal('clearImmediate', function clearImmediate(id) { clearTimer(id); });
  }
  if (typeof global.queueMicrotask !== 'function') {
    defineGlobal('queueMicrotask', function queueMicrotask(fn) {
      if (typeof fn !== 'function') throw new TypeError('The "callback" argument must be of type function');
      const gen = X.gen;
      const owner = current;
      promiseThen(promiseResolve(), function runMicrotask() {
        try { fn(); } catch (e) { if (owner === BG || gen === X.gen) uncaught(owner, e); }
      });
    });
  }
  if (typeof global.performance !== 'object') {
    const origin = now();
    defineGlobal('performance', { now: () => now() - origin, timeOrigin: Date.now() });
  }
  if (typeof global.structuredClone !== 'function') {
    defineGlobal('structuredClone', function structuredClone(v) { return v === undefined ? v : JSONparse(JSONstringify(v)); });
  }

  const boxResult = (value) => ({ value });
  boxResult.set = (name, value) => { global[name] = value; };

  const vm = {
    configure(modulesJson, strict) {
      enabledModules = JSONparse(modulesJson);
      moduleCache = new MapCtor();
      strictMode = !!strict;
    },
    setMemoryLimited(flag) { memoryLimited = !!flag; },
    start(kind, src, filename, argsJson, envJson, background, budget) {
      newExecution(kind, filename, !!background);
      X.throwsNull = memoryLimited && nullThrowRe.test(src);
      const gen = X.gen;
      if (kind !== 'repl') {
        defineGlobal('__ARGS__', JSONparse(argsJson));
        defineGlobal('__ENV__', JSONparse(envJson));
      }
      let prepared = null;
      try {
        prepared = prepare(src, kind === 'repl', strictMode);
        const v = indirectEval(prepared.code);
        if (prepared.wrapped === 'async') {
          promiseThen(v(boxResult), (box) => settleValue(gen, box === undefined ? undefined : box.value),
            (e) => settleError(gen, e));
        } else if (prepared.wrapped === 'sync') {
          const box = v(boxResult);
          settleValue(gen, box === undefined ? undefined : box.value);
        } else {
          settleValue(gen, v);
        }
      } catch (e) {
        let err = e;
        if (prepared !== null && prepared.wrapped === '' && e instanceof SyntaxError) {
          err = explainSyntaxError(src) || e; // QuickJS's parse errors carry no position
        }
        settleError(gen, err);
      }
      return X.settled && (X.background || owned[FG] === 0) && X.error === null ? outcome(budget) : null;
    },
    startModule(filename, argsJson, envJson) {
      newExecution('run_file', filename, false);
      defineGlobal('__ARGS__', JSONparse(argsJson));
      defineGlobal('__ENV__', JSONparse(envJson));
    },
    moduleDone(errorText) {
      if (errorText === null || errorText === undefined) {
        settleValue(X.gen, undefined);
        return;
      }
      const firstLine = String(errorText).split('\n')[0];
      const m = /^([A-Za-z_$][\w$]*): ([\s\S]*)$/.exec(firstLine);
      const name = m ? m[1] : 'Error';
      const Ctor = hasOwn(errorCtors, name) ? errorCtors[name] : Error;
      const err = new Ctor(m ? m[2] : firstLine);
      if (err.name !== name) ObjectDefineProperty(err, 'name', { value: name, configurable: true, writable: true });
      try { err.stack = String(errorText).split('\n').slice(1).join('\n'); } catch (e) { /* ignore */ }
      settleError(X.gen, err);
    },
    load(src) {
      try {
        indirectEval(src);
        return null;
      } catch (e) {
        return exceptionPayload(e, UNLIMITED);
      }
    },
    poll,
    nextTimer,
    runTimer,
    nextDue,
    adoptBackground() {
      for (const t of timers.values()) {
        if (t.owner === FG) { t.owner = BG; owned[FG]--; owned[BG]++; }
      }
      return owned[BG];
    },
    backgroundCount: () => owned[BG],
    clearForeground() {
      clearOwned(FG);
      X.gen++;
      X.settled = true;
      X.error = null;
      X.done = null;
    },
    clearBackground() { clearOwned(BG); },
    complete(input, cursor) { return complete(input, cursor); },
  };
  ObjectDefineProperty(global, '__vm', { value: Object.freeze(vm), writable: false, configurable: true, enumerable: false });
  delete global.__vmi;
})(globalThis, globalThis.__vmi);
