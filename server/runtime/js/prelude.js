// vm-system prelude, part 8 of 8: the execution state machine, timers (foreground and
// background), require and the globals. Evaluated once per JsEngine after the other parts (see
// engine.py); it deletes their shared namespace `__vmi`.
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
    JSONstringify, JSONparse, ObjectDefineProperty, hasOwn, promiseThen, PromiseCtor,
    promiseResolve, MapCtor, indirectEval, now, isPromise, trackPromise, inspect, safeString,
    hostEvent, hostCall, prepare, explainSyntaxError, complete, OOM_PAYLOAD, isOutOfMemory,
    valuePayload, exceptionPayload, UNLIMITED, consoleObj, stackFile,
  } = I;

  // When the heap is full QuickJS cannot even allocate its InternalError and throws `null`.
  // So with a memory limit set, a thrown null is reported as out of memory, unless the
  // execution's source visibly throws/rejects null itself.
  let memoryLimited = false;
  const nullThrowRe = /\bthrow\s+null\b|\breject\(\s*null\s*\)/;

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
    stackFile.name = filename;
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
    if (t === undefined) return -1;
    const wait = t.due - nowMs; // no Math.max: user code may have replaced it
    return wait > 0 ? wait / 1000 : 0;
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
