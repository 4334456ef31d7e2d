// vm-system prelude, part 6 of 8: completion of the word at the cursor (API.md §12).
// It never runs user code: properties are listed from descriptors (no getter is called), a path
// through an accessor stops there, and proxies (tracked from their creation) are never touched.
(function (global, I) {
  'use strict';
  const {
    ObjectGetOwnPropertyNames, ObjectGetOwnPropertyDescriptor, ObjectGetPrototypeOf,
    ObjectDefineProperty, hasOwn, functionToString, WeakMapCtor, uncurry,
  } = I;
  // Captured now, before any user code: later changes to the prototypes cannot reach in here.
  const ObjectCtor = Object;
  const ObjectCreate = Object.create;
  const regexpExec = uncurry(RegExp.prototype.exec);
  const stringSlice = uncurry(String.prototype.slice);
  const stringStartsWith = uncurry(String.prototype.startsWith);
  const arraySort = uncurry(Array.prototype.sort);
  const weakMapHas = uncurry(WeakMap.prototype.has);
  const weakMapSet = uncurry(WeakMap.prototype.set);

  // Every proxy is made through this wrapper, so completion can tell proxies apart without
  // asking them anything (which would run their traps).
  const RealProxy = global.Proxy;
  const proxies = new WeakMapCtor();
  function TrackedProxy(target, handler) {
    if (new.target === undefined) throw new TypeError("Constructor Proxy requires 'new'");
    const p = new RealProxy(target, handler);
    weakMapSet(proxies, p, true);
    return p;
  }
  ObjectDefineProperty(TrackedProxy, 'name', { value: 'Proxy', configurable: true });
  ObjectDefineProperty(TrackedProxy, 'revocable', {
    value: function revocable(target, handler) {
      const r = RealProxy.revocable(target, handler);
      weakMapSet(proxies, r.proxy, true);
      return r;
    },
    writable: true, configurable: true, enumerable: false,
  });
  ObjectDefineProperty(TrackedProxy, 'length', { value: 2, configurable: true });
  ObjectDefineProperty(global, 'Proxy', { value: TrackedProxy, writable: true, configurable: true, enumerable: false });
  const isProxy = (v) => v !== null && (typeof v === 'object' || typeof v === 'function') && weakMapHas(proxies, v);

  const KEYWORDS = [
    'async', 'await', 'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger', 'default',
    'delete', 'do', 'else', 'export', 'extends', 'false', 'finally', 'for', 'function', 'if',
    'import', 'in', 'instanceof', 'let', 'new', 'null', 'of', 'return', 'static', 'super', 'switch',
    'this', 'throw', 'true', 'try', 'typeof', 'undefined', 'var', 'void', 'while', 'with', 'yield',
  ];
  const MAX_CANDIDATES = 500;
  const identRe = /^[A-Za-z_$][\w$]*$/;
  const identGlobal = /[A-Za-z_$][\w$]*/g;
  // A dotted path of plain identifiers ending at the cursor: `user.profile.na`, `Math.ma`, `alp`.
  const pathRe = /([A-Za-z_$][\w$]*(?:\s*\??\.\s*[A-Za-z_$][\w$]*)*)(\s*\??\.\s*)([\w$]*)$|([A-Za-z_$][\w$]*)$/;

  function kindOf(desc) {
    if (!hasOwn(desc, 'value')) return 'property'; // an accessor: never called
    const v = desc.value;
    if (typeof v === 'function') {
      if (isProxy(v)) return 'function';
      let text = '';
      try { text = functionToString(v); } catch (e) { text = ''; }
      return stringStartsWith(text, 'class') ? 'class' : 'function';
    }
    return 'property';
  }

  // Own and inherited string keys of `obj` into `out` (name -> kind of the nearest definition)
  // and `level` (name -> how far up the prototype chain it was found: own names come first).
  function members(obj, out, level) {
    let o = obj;
    for (let depth = 0; o !== null && o !== undefined && depth < 64; depth++) {
      if (isProxy(o)) return;
      let names;
      try { names = ObjectGetOwnPropertyNames(o); } catch (e) { return; }
      for (let i = 0; i < names.length; i++) {
        const name = names[i];
        if (hasOwn(out, name) || regexpExec(identRe, name) === null) continue;
        const desc = ObjectGetOwnPropertyDescriptor(o, name);
        if (desc !== undefined) {
          out[name] = kindOf(desc);
          level[name] = depth;
        }
      }
      try { o = ObjectGetPrototypeOf(o); } catch (e) { return; }
    }
  }

  // Follow `a.b.c` through data properties only; undefined when a step is missing or unsafe.
  function resolve(path) {
    let o = global;
    identGlobal.lastIndex = 0;
    for (;;) {
      const step = regexpExec(identGlobal, path);
      if (step === null) break;
      const part = step[0];
      if (o === null || o === undefined) return undefined;
      let holder = typeof o === 'object' || typeof o === 'function' ? o : ObjectCtor(o);
      let desc;
      for (let depth = 0; holder !== null && depth < 64; depth++) {
        if (isProxy(holder)) return undefined;
        desc = ObjectGetOwnPropertyDescriptor(holder, part);
        if (desc !== undefined) break;
        holder = ObjectGetPrototypeOf(holder);
      }
      if (desc === undefined || !hasOwn(desc, 'value')) return undefined;
      o = desc.value;
    }
    return o;
  }

  function complete(input, cursor) {
    const before = stringSlice(input, 0, cursor);
    const m = regexpExec(pathRe, before);
    const out = ObjectCreate(null);
    const level = ObjectCreate(null);
    let prefix = '';
    if (m !== null && m[1] !== undefined) {
      prefix = m[3];
      const target = resolve(m[1]);
      if (target !== undefined && target !== null) {
        members(typeof target === 'object' || typeof target === 'function' ? target : ObjectCtor(target), out, level);
      }
    } else {
      prefix = m !== null ? m[4] : '';
      members(global, out, level);
      const names = ObjectGetOwnPropertyNames(out);
      for (let i = 0; i < names.length; i++) if (out[names[i]] === 'property') out[names[i]] = 'variable';
      for (let i = 0; i < KEYWORDS.length; i++) {
        if (!hasOwn(out, KEYWORDS[i])) {
          out[KEYWORDS[i]] = 'keyword';
          level[KEYWORDS[i]] = 64;
        }
      }
    }
    // Built by hand: no array or object method that user code could have replaced is used.
    // Own names first, then each prototype's (as Node's REPL), alphabetical within a level.
    const names = ObjectGetOwnPropertyNames(out);
    arraySort(names, (a, b) => level[a] - level[b] || (a < b ? -1 : a > b ? 1 : 0));
    let json = '';
    let n = 0;
    for (let i = 0; i < names.length && n < MAX_CANDIDATES; i++) {
      const name = names[i];
      if (name === prefix || !stringStartsWith(name, prefix)) continue;
      json += `${n === 0 ? '' : ','}{"name":"${name}","kind":"${out[name]}"}`;
      n++;
    }
    return `{"from":${cursor - prefix.length},"to":${cursor},"candidates":[${json}]}`;
  }

  I.complete = complete;
})(globalThis, globalThis.__vmi);
