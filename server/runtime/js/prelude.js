// vm-system prelude: console, Node-style inspector, timers, require, the REPL transform and the
// execution state machine that server/runtime/engine.py drives. Evaluated once per JsEngine,
// after the vendored acorn parser (global `acorn`, removed from the global scope here).
//
// The engine (Python) talks to this file through the hidden global `__vm` only:
//   __vm.start(kind, source, argsJson, envJson) -> outcome string or null
//   __vm.poll(nowMs)                            -> outcome string | seconds (number) | null
//   __vm.runTimer(nowMs)                        -> true when a timer ran (call again)
//   __vm.clear(), __vm.configure(modulesJson, strict), __vm.load(source) -> exception or null
//   __vm.moduleDone(errorText|null)             (ESM run_file/startup, see engine.py)
// An outcome string is "v" + value payload JSON or "e" + exception payload JSON (API.md §5).
(function (global) {
  'use strict';

  // ---------------------------------------------------------------- host bindings, primordials
  const hostConsole = global.__vm_host_console;
  const hostCall = global.__vm_host_call;
  const hostNow = global.__vm_host_now;
  delete global.__vm_host_console;
  delete global.__vm_host_call;
  delete global.__vm_host_now;
  const acorn = global.acorn;
  delete global.acorn;

  const uncurry = (fn) => Function.prototype.call.bind(fn);
  const JSONstringify = JSON.stringify;
  const JSONparse = JSON.parse;
  const ObjectKeys = Object.keys;
  const ObjectGetOwnPropertySymbols = Object.getOwnPropertySymbols;
  const ObjectGetOwnPropertyNames = Object.getOwnPropertyNames;
  const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const ObjectGetPrototypeOf = Object.getPrototypeOf;
  const ObjectDefineProperty = Object.defineProperty;
  const ObjectIs = Object.is;
  const ArrayIsArray = Array.isArray;
  const hasOwn = uncurry(Object.prototype.hasOwnProperty);
  const propertyIsEnumerable = uncurry(Object.prototype.propertyIsEnumerable);
  const objectToString = uncurry(Object.prototype.toString);
  const functionToString = uncurry(Function.prototype.toString);
  const dateGetTime = uncurry(Date.prototype.getTime);
  const dateToISOString = uncurry(Date.prototype.toISOString);
  const dateToString = uncurry(Date.prototype.toString);
  const regExpToString = uncurry(RegExp.prototype.toString);
  const errorToString = uncurry(Error.prototype.toString);
  const symbolToString = uncurry(Symbol.prototype.toString);
  const mapSize = uncurry(ObjectGetOwnPropertyDescriptor(Map.prototype, 'size').get);
  const setSize = uncurry(ObjectGetOwnPropertyDescriptor(Set.prototype, 'size').get);
  const mapEntries = uncurry(Map.prototype.entries);
  const setValues = uncurry(Set.prototype.values);
  const promiseThen = uncurry(Promise.prototype.then);
  const PromiseCtor = Promise;
  const promiseResolve = Promise.resolve.bind(Promise);
  const WeakMapCtor = WeakMap;
  const MapCtor = Map;
  const TypedArrayProto = ObjectGetPrototypeOf(Uint8Array.prototype);
  const typedArrayLength = uncurry(ObjectGetOwnPropertyDescriptor(TypedArrayProto, 'length').get);
  const typedArrayTag = uncurry(ObjectGetOwnPropertyDescriptor(TypedArrayProto, Symbol.toStringTag).get);
  const arrayBufferByteLength = uncurry(
    ObjectGetOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength').get);
  const AsyncFunctionProto = ObjectGetPrototypeOf(async function () {});
  const GeneratorFunctionProto = ObjectGetPrototypeOf(function* () {});
  const AsyncGeneratorFunctionProto = ObjectGetPrototypeOf(async function* () {});
  const indirectEval = eval;
  const now = () => hostNow();

  const tryCall = (fn) => { try { fn(); return true; } catch (e) { return false; } };
  const isDate = (v) => tryCall(() => dateGetTime(v));
  const isMap = (v) => tryCall(() => mapSize(v));
  const isSet = (v) => tryCall(() => setSize(v));
  const isTypedArray = (v) => typedArrayTag(v) !== undefined;
  const isArrayBuffer = (v) => tryCall(() => arrayBufferByteLength(v));
  const isRegExp = (v) => objectToString(v) === '[object RegExp]';
  const isError = (v) => v instanceof Error || objectToString(v) === '[object Error]';
  const isPromise = (v) => v instanceof PromiseCtor;
  const isWeakMap = (v) => v instanceof WeakMap;
  const isWeakSet = (v) => v instanceof WeakSet;
  const isBoxed = (v) => v instanceof Number || v instanceof String || v instanceof Boolean ||
    v instanceof Symbol || v instanceof BigInt;

  // ---------------------------------------------------------------- promise state tracking
  // QuickJS has no API for a promise's state: remember it for promises we get to see (values
  // produced by executions, Promise.resolve/reject results, anything the inspector met before).
  const promiseStates = new WeakMapCtor();
  function trackPromise(p) {
    if (promiseStates.has(p)) return;
    const st = { state: 'pending', value: undefined };
    promiseStates.set(p, st);
    try {
      promiseThen(p, (v) => { st.state = 'fulfilled'; st.value = v; },
        (e) => { st.state = 'rejected'; st.value = e; });
    } catch (e) { /* exotic promise: stays pending */ }
  }
  const origResolve = Promise.resolve;
  const origReject = Promise.reject;
  ObjectDefineProperty(Promise, 'resolve', {
    value: { resolve(v) {
      const p = origResolve.call(this, v);
      if (p instanceof PromiseCtor && !promiseStates.has(p)) {
        const thenable = v !== null && (typeof v === 'object' || typeof v === 'function');
        if (p !== v && !thenable) promiseStates.set(p, { state: 'fulfilled', value: v });
        else trackPromise(p);
      }
      return p;
    } }.resolve,
    writable: true, configurable: true, enumerable: false,
  });
  ObjectDefineProperty(Promise, 'reject', {
    value: { reject(e) {
      const p = origReject.call(this, e);
      if (p instanceof PromiseCtor) trackPromise(p);
      return p;
    } }.reject,
    writable: true, configurable: true, enumerable: false,
  });

  // ---------------------------------------------------------------- inspector (util.inspect)
  const kObjectType = 0;
  const kArrayExtrasType = 2;
  const keyStrRegExp = /^[a-zA-Z_][a-zA-Z_0-9]*$/;
  const strEscapeRegExp = /[\x00-\x1f\x27\x5c\x7f-\x9f]/;
  const builtInObjects = new Set(ObjectGetOwnPropertyNames(global).filter(
    (k) => /^[A-Z][a-zA-Z0-9]+$/.test(k)));

  function escapeChar(c) {
    switch (c) {
      case '\b': return '\\b';
      case '\t': return '\\t';
      case '\n': return '\\n';
      case '\f': return '\\f';
      case '\r': return '\\r';
      case '\\': return '\\\\';
      default: {
        const code = c.charCodeAt(0);
        return '\\x' + (code < 16 ? '0' : '') + code.toString(16).toUpperCase();
      }
    }
  }

  function strEscape(str) {
    let quote = "'";
    if (str.indexOf("'") !== -1) {
      if (str.indexOf('"') === -1) quote = '"';
      else if (str.indexOf('`') === -1 && str.indexOf('${') === -1) quote = '`';
    }
    if (!strEscapeRegExp.test(str)) return quote + str + quote;
    let out = '';
    for (let i = 0; i < str.length; i++) {
      const c = str[i];
      const code = str.charCodeAt(i);
      if (c === quote) out += '\\' + c;
      else if (c === "'" || c === '"' || c === '`') out += c;
      else if (code < 0x20 || c === '\\' || (code >= 0x7f && code <= 0x9f)) out += escapeChar(c);
      else out += c;
    }
    return quote + out + quote;
  }

  const formatNumber = (v) => (ObjectIs(v, -0) ? '-0' : `${v}`);

  function formatPrimitive(ctx, value) {
    switch (typeof value) {
      case 'string': {
        let trailer = '';
        if (value.length > ctx.maxStringLength) {
          const remaining = value.length - ctx.maxStringLength;
          value = value.slice(0, ctx.maxStringLength);
          trailer = `... ${remaining} more character${remaining > 1 ? 's' : ''}`;
        }
        if (value.length > 16 && value.length > ctx.breakLength - ctx.indentationLvl - 4) {
          return value.split(/(?<=\n)/).map((line) => strEscape(line))
            .join(` +\n${' '.repeat(ctx.indentationLvl + 2)}`) + trailer;
        }
        return strEscape(value) + trailer;
      }
      case 'number': return formatNumber(value);
      case 'bigint': return `${value}n`;
      case 'boolean': return `${value}`;
      case 'undefined': return 'undefined';
      default: return symbolToString(value);
    }
  }

  function getConstructorName(obj) {
    const tmp = obj;
    let firstProto;
    while (obj) {
      const desc = ObjectGetOwnPropertyDescriptor(obj, 'constructor');
      if (desc !== undefined && typeof desc.value === 'function' && desc.value.name !== '') {
        let ok = false;
        try { ok = tmp instanceof desc.value; } catch (e) { ok = false; }
        if (ok) return String(desc.value.name);
      }
      obj = ObjectGetPrototypeOf(obj);
      if (firstProto === undefined) firstProto = obj;
    }
    if (firstProto === null) return null;
    return 'Object';
  }

  function getPrefix(constructor, tag, fallback, size = '') {
    if (constructor === null) {
      if (tag !== '' && fallback !== tag) return `[${fallback}${size}: null prototype] [${tag}] `;
      return `[${fallback}${size}: null prototype] `;
    }
    if (tag !== '' && constructor !== tag) return `${constructor}${size} [${tag}] `;
    return `${constructor}${size} `;
  }

  function getKeys(value) {
    const keys = ObjectKeys(value);
    const symbols = ObjectGetOwnPropertySymbols(value);
    for (const s of symbols) if (propertyIsEnumerable(value, s)) keys.push(s);
    return keys;
  }

  function getNonIndexKeys(value) {
    return getKeys(value).filter((k) => typeof k === 'symbol' || !/^(0|[1-9][0-9]*)$/.test(k) ||
      Number(k) >= 4294967295);
  }

  function getFunctionBase(value, constructor, tag) {
    let stringified = '';
    try { stringified = functionToString(value); } catch (e) { /* ignore */ }
    if (stringified.startsWith('class') && stringified.endsWith('}')) {
      const name = (hasOwn(value, 'name') && value.name) || '(anonymous)';
      let base = `class ${name}`;
      if (constructor !== 'Function' && constructor !== null) base += ` [${constructor}]`;
      if (tag !== '' && constructor !== tag) base += ` [${tag}]`;
      if (constructor !== null) {
        const superName = ObjectGetPrototypeOf(value).name;
        if (superName) base += ` extends ${superName}`;
      } else {
        base += ' extends [null prototype]';
      }
      return `[${base}]`;
    }
    let type = 'Function';
    const proto = ObjectGetPrototypeOf(value);
    if (proto === GeneratorFunctionProto) type = 'GeneratorFunction';
    else if (proto === AsyncFunctionProto) type = 'AsyncFunction';
    else if (proto === AsyncGeneratorFunctionProto) type = 'AsyncGeneratorFunction';
    let base = `[${type}`;
    if (constructor === null) base += ' (null prototype)';
    if (value.name === '' || typeof value.name !== 'string') base += ' (anonymous)';
    else base += `: ${value.name}`;
    base += ']';
    if (constructor !== type && constructor !== null) base += ` ${constructor}`;
    if (tag !== '' && constructor !== tag) base += ` [${tag}]`;
    return base;
  }

  function errorHeader(err) {
    let name;
    let message;
    try { name = err.name; } catch (e) { name = undefined; }
    try { message = err.message; } catch (e) { message = undefined; }
    name = name === undefined ? 'Error' : String(name);
    message = message === undefined ? '' : String(message);
    if (name === 'ReferenceError') message = message.replace(/^'(.*)' is not defined$/, '$1 is not defined');
    if (name === '') return message;
    if (message === '') return name;
    return `${name}: ${message}`;
  }

  // Drop the prelude's own frames (and the eval/apply that entered user code) from a stack.
  const preludeFrame = /^\s+at (?:start|runTimer|load|settleValue|moduleDone|runMicrotask) \(<input>(?::\d+)?\)$/;
  const nativeEntry = /^\s+at (?:eval|apply|call) \(native\)$/;
  function cleanFrames(frames) {
    const lines = frames.replace(/\s+$/, '').split('\n');
    let n = lines.length;
    if (n > 0 && preludeFrame.test(lines[n - 1])) {
      while (n > 0 && preludeFrame.test(lines[n - 1])) n--;
      if (n > 0 && nativeEntry.test(lines[n - 1])) n--;
    }
    return lines.slice(0, n).join('\n');
  }

  // Node prints err.stack, which in V8 starts with "Name: message"; QuickJS's stack holds the
  // frames only, so the header is added here.
  function errorStack(err) {
    const header = errorHeader(err);
    let frames = '';
    try { frames = err.stack; } catch (e) { frames = ''; }
    frames = typeof frames === 'string' ? cleanFrames(frames) : '';
    if (frames === '') return header;
    if (frames.startsWith(header)) return frames;
    return `${header}\n${frames}`;
  }

  function formatError(err, ctx) {
    let stack = errorStack(err);
    if (stack.indexOf('\n    at') === -1) stack = `[${stack}]`;
    if (ctx.indentationLvl !== 0) {
      stack = stack.replace(/\n/g, `\n${' '.repeat(ctx.indentationLvl)}`);
    }
    return stack;
  }

  function formatValue(ctx, value, recurseTimes) {
    if (typeof value !== 'object' && typeof value !== 'function') return formatPrimitive(ctx, value);
    if (value === null) return 'null';
    if (ctx.seen.indexOf(value) !== -1) {
      let index = 1;
      if (ctx.circular === undefined) {
        ctx.circular = new MapCtor();
        ctx.circular.set(value, index);
      } else {
        index = ctx.circular.get(value);
        if (index === undefined) {
          index = ctx.circular.size + 1;
          ctx.circular.set(value, index);
        }
      }
      return `[Circular *${index}]`;
    }
    return formatRaw(ctx, value, recurseTimes);
  }

  function formatRaw(ctx, value, recurseTimes) {
    let keys;
    const constructor = getConstructorName(value);
    let tag = '';
    try { tag = value[Symbol.toStringTag]; } catch (e) { tag = ''; }
    if (typeof tag !== 'string' || (tag !== '' && propertyIsEnumerable(value, Symbol.toStringTag))) {
      tag = '';
    }
    let base = '';
    let formatter = () => [];
    let braces;
    let extrasType = kObjectType;
    let noIterator = true;

    if (value[Symbol.iterator] || constructor === null) {
      noIterator = false;
      if (ArrayIsArray(value)) {
        const prefix = (constructor !== 'Array' || tag !== '')
          ? getPrefix(constructor, tag, 'Array', `(${value.length})`) : '';
        keys = getNonIndexKeys(value);
        braces = [`${prefix}[`, ']'];
        if (value.length === 0 && keys.length === 0) return `${braces[0]}]`;
        extrasType = kArrayExtrasType;
        formatter = formatArray;
      } else if (isSet(value)) {
        const size = setSize(value);
        const prefix = getPrefix(constructor, tag, 'Set', `(${size})`);
        keys = getKeys(value);
        formatter = formatSet;
        if (size === 0 && keys.length === 0) return `${prefix}{}`;
        braces = [`${prefix}{`, '}'];
      } else if (isMap(value)) {
        const size = mapSize(value);
        const prefix = getPrefix(constructor, tag, 'Map', `(${size})`);
        keys = getKeys(value);
        formatter = formatMap;
        if (size === 0 && keys.length === 0) return `${prefix}{}`;
        braces = [`${prefix}{`, '}'];
      } else if (isTypedArray(value)) {
        keys = getNonIndexKeys(value);
        const size = typedArrayLength(value);
        const prefix = getPrefix(constructor, tag, typedArrayTag(value), `(${size})`);
        braces = [`${prefix}[`, ']'];
        if (size === 0 && keys.length === 0) return `${braces[0]}]`;
        formatter = formatTypedArray;
        extrasType = kArrayExtrasType;
      } else {
        noIterator = true;
      }
    }
    if (noIterator) {
      keys = getKeys(value);
      braces = ['{', '}'];
      if (constructor === 'Object') {
        if (objectToString(value) === '[object Arguments]') braces[0] = '[Arguments] {';
        else if (tag !== '') braces[0] = `${getPrefix(constructor, tag, 'Object')}{`;
        if (keys.length === 0) return `${braces[0]}}`;
      } else if (typeof value === 'function') {
        base = getFunctionBase(value, constructor, tag);
        keys = keys.filter((k) => k !== 'prototype');
        if (keys.length === 0) return base;
      } else if (isRegExp(value)) {
        base = regExpToString(value);
        const prefix = getPrefix(constructor, tag, 'RegExp');
        if (prefix !== 'RegExp ') base = `${prefix}${base}`;
        keys = keys.filter((k) => k !== 'lastIndex');
        if (keys.length === 0 || recurseTimes > ctx.depth) return base;
      } else if (isDate(value)) {
        base = Number.isNaN(dateGetTime(value)) ? dateToString(value) : dateToISOString(value);
        const prefix = getPrefix(constructor, tag, 'Date');
        if (prefix !== 'Date ') base = `${prefix}${base}`;
        if (keys.length === 0) return base;
      } else if (isError(value)) {
        base = formatError(value, ctx);
        keys = keys.filter((k) => k !== 'stack' && k !== 'message');
        if (keys.length === 0) return base;
      } else if (isArrayBuffer(value)) {
        const len = arrayBufferByteLength(value);
        const bytes = new Uint8Array(value, 0, Math.min(len, 50));
        let hex = Array.prototype.map.call(bytes, (b) => (b < 16 ? '0' : '') + b.toString(16)).join(' ');
        if (len > 50) hex += ` ... ${len - 50} more byte${len - 50 > 1 ? 's' : ''}`;
        const prefix = getPrefix(constructor, tag, 'ArrayBuffer');
        braces[0] = `${prefix}{`;
        const extra = [`[Uint8Contents]: <${hex}>`, `byteLength: ${len}`];
        formatter = () => extra.slice();
      } else if (isPromise(value)) {
        braces[0] = `${getPrefix(constructor, tag, 'Promise')}{`;
        formatter = formatPromise;
      } else if (isWeakSet(value)) {
        braces[0] = `${getPrefix(constructor, tag, 'WeakSet')}{`;
        formatter = () => ['<items unknown>'];
      } else if (isWeakMap(value)) {
        braces[0] = `${getPrefix(constructor, tag, 'WeakMap')}{`;
        formatter = () => ['<items unknown>'];
      } else if (isBoxed(value)) {
        let type;
        let prim;
        if (value instanceof Number) { type = 'Number'; prim = formatNumber(Number.prototype.valueOf.call(value)); }
        else if (value instanceof String) {
          type = 'String';
          prim = strEscape(String.prototype.valueOf.call(value));
          keys = keys.filter((k) => typeof k === 'symbol' || !/^(0|[1-9][0-9]*)$/.test(k));
        } else if (value instanceof Boolean) { type = 'Boolean'; prim = `${Boolean.prototype.valueOf.call(value)}`; }
        else if (value instanceof Symbol) { type = 'Symbol'; prim = symbolToString(Symbol.prototype.valueOf.call(value)); }
        else { type = 'BigInt'; prim = `${BigInt.prototype.valueOf.call(value)}n`; }
        base = `[${type}`;
        if (type !== constructor) base += constructor === null ? ' (null prototype)' : ` (${constructor})`;
        base += `: ${prim}]`;
        if (tag !== '' && tag !== constructor) base += ` [${tag}]`;
        if (keys.length === 0) return base;
      } else {
        if (keys.length === 0) return `${getPrefix(constructor, tag, 'Object')}{}`;
        braces[0] = `${getPrefix(constructor, tag, 'Object')}{`;
      }
    }

    if (recurseTimes > ctx.depth) {
      let name = getPrefix(constructor, tag, 'Object').slice(0, -1);
      if (constructor !== null) name = `[${name}]`;
      return name;
    }
    recurseTimes += 1;
    ctx.seen.push(value);
    ctx.currentDepth = recurseTimes;
    let output;
    try {
      output = formatter(ctx, value, recurseTimes);
      for (let i = 0; i < keys.length; i++) {
        output.push(formatProperty(ctx, value, recurseTimes, keys[i], extrasType));
      }
    } catch (err) {
      ctx.seen.pop();
      if (err instanceof RangeError || (err && err.name === 'InternalError')) {
        return `[${getPrefix(constructor, tag, 'Object').slice(0, -1)}: Inspection interrupted ` +
          'prematurely. Maximum call stack size exceeded.]';
      }
      throw err;
    }
    if (ctx.circular !== undefined) {
      const index = ctx.circular.get(value);
      if (index !== undefined) {
        const reference = `<ref *${index}>`;
        base = base === '' ? reference : `${reference} ${base}`;
      }
    }
    ctx.seen.pop();
    return reduceToSingleString(ctx, output, base, braces, extrasType, recurseTimes, value);
  }

  function formatArray(ctx, value, recurseTimes) {
    const valLen = value.length;
    const len = Math.min(Math.max(0, ctx.maxArrayLength), valLen);
    const remaining = valLen - len;
    const output = [];
    let holes = 0;
    const flushHoles = () => {
      if (holes > 0) output.push(`<${holes} empty item${holes > 1 ? 's' : ''}>`);
      holes = 0;
    };
    let i = 0;
    for (; i < valLen && output.length < len; i++) {
      if (!hasOwn(value, i)) { holes++; continue; }
      flushHoles();
      output.push(formatProperty(ctx, value, recurseTimes, i, kArrayExtrasType));
    }
    if (output.length < len) flushHoles();
    const rest = holes > 0 ? valLen - i + holes : (i < valLen ? valLen - i : remaining > 0 ? remaining : 0);
    if (rest > 0) output.push(`... ${rest} more item${rest > 1 ? 's' : ''}`);
    return output;
  }

  function formatTypedArray(ctx, value) {
    const length = typedArrayLength(value);
    const maxLength = Math.min(Math.max(0, ctx.maxArrayLength), length);
    const remaining = length - maxLength;
    const output = [];
    for (let i = 0; i < maxLength; i++) {
      const v = value[i];
      output.push(typeof v === 'bigint' ? `${v}n` : formatNumber(v));
    }
    if (remaining > 0) output.push(`... ${remaining} more item${remaining > 1 ? 's' : ''}`);
    return output;
  }

  function formatSet(ctx, value, recurseTimes) {
    const length = setSize(value);
    const maxLength = Math.min(Math.max(0, ctx.maxArrayLength), length);
    const remaining = length - maxLength;
    const output = [];
    ctx.indentationLvl += 2;
    let i = 0;
    for (const v of setValues(value)) {
      if (i >= maxLength) break;
      output.push(formatValue(ctx, v, recurseTimes));
      i++;
    }
    if (remaining > 0) output.push(`... ${remaining} more item${remaining > 1 ? 's' : ''}`);
    ctx.indentationLvl -= 2;
    return output;
  }

  function formatMap(ctx, value, recurseTimes) {
    const length = mapSize(value);
    const maxLength = Math.min(Math.max(0, ctx.maxArrayLength), length);
    const remaining = length - maxLength;
    const output = [];
    ctx.indentationLvl += 2;
    let i = 0;
    for (const [k, v] of mapEntries(value)) {
      if (i >= maxLength) break;
      output.push(`${formatValue(ctx, k, recurseTimes)} => ${formatValue(ctx, v, recurseTimes)}`);
      i++;
    }
    if (remaining > 0) output.push(`... ${remaining} more item${remaining > 1 ? 's' : ''}`);
    ctx.indentationLvl -= 2;
    return output;
  }

  function formatPromise(ctx, value, recurseTimes) {
    const st = promiseStates.get(value);
    if (st === undefined) trackPromise(value);
    if (st === undefined || st.state === 'pending') return ['<pending>'];
    ctx.indentationLvl += 2;
    const str = formatValue(ctx, st.value, recurseTimes);
    ctx.indentationLvl -= 2;
    return [st.state === 'rejected' ? `<rejected> ${str}` : str];
  }

  function formatProperty(ctx, value, recurseTimes, key, type) {
    let name;
    let str;
    const desc = ObjectGetOwnPropertyDescriptor(value, key) || { value: value[key], enumerable: true };
    if (desc.value !== undefined) {
      ctx.indentationLvl += 2;
      str = formatValue(ctx, desc.value, recurseTimes);
      ctx.indentationLvl -= 2;
    } else if (desc.get !== undefined) {
      str = desc.set !== undefined ? '[Getter/Setter]' : '[Getter]';
    } else if (desc.set !== undefined) {
      str = '[Setter]';
    } else {
      str = 'undefined';
    }
    if (type === kArrayExtrasType && typeof key === 'number') return str;
    if (typeof key === 'symbol') name = `[${symbolToString(key)}]`;
    else if (key === '__proto__') name = "['__proto__']";
    else if (desc.enumerable === false) name = `[${key}]`;
    else if (keyStrRegExp.test(key)) name = key;
    else name = strEscape(key);
    return `${name}: ${str}`;
  }

  function isBelowBreakLength(ctx, output, start, base) {
    let totalLength = output.length + start;
    if (totalLength + output.length > ctx.breakLength) return false;
    for (let i = 0; i < output.length; i++) {
      totalLength += output[i].length;
      if (totalLength > ctx.breakLength) return false;
    }
    return base === '' || base.indexOf('\n') === -1;
  }

  function groupArrayElements(ctx, output, value) {
    let totalLength = 0;
    let maxLength = 0;
    let i = 0;
    let outputLength = output.length;
    if (ctx.maxArrayLength < output.length) outputLength--;
    const separatorSpace = 2;
    const dataLen = new Array(outputLength);
    for (; i < outputLength; i++) {
      const len = output[i].length;
      dataLen[i] = len;
      totalLength += len + separatorSpace;
      if (maxLength < len) maxLength = len;
    }
    const actualMax = maxLength + separatorSpace;
    if (actualMax * 3 + ctx.indentationLvl < ctx.breakLength &&
        (totalLength / actualMax > 5 || maxLength <= 6)) {
      const averageBias = Math.sqrt(actualMax - totalLength / output.length);
      const biasedMax = Math.max(actualMax - 3 - averageBias, 1);
      const columns = Math.min(
        Math.round(Math.sqrt(2.5 * biasedMax * outputLength) / biasedMax),
        Math.floor((ctx.breakLength - ctx.indentationLvl) / actualMax),
        ctx.compact * 4,
        15,
      );
      if (columns <= 1) return output;
      const tmp = [];
      const maxLineLength = [];
      for (let c = 0; c < columns; c++) {
        let lineLength = 0;
        for (let j = c; j < output.length; j += columns) {
          if (dataLen[j] > lineLength) lineLength = dataLen[j];
        }
        maxLineLength.push(lineLength + separatorSpace);
      }
      let padStart = true;
      if (value !== undefined) {
        for (let k = 0; k < output.length; k++) {
          if (typeof value[k] !== 'number' && typeof value[k] !== 'bigint') {
            padStart = false;
            break;
          }
        }
      }
      for (let r = 0; r < outputLength; r += columns) {
        const max = Math.min(r + columns, outputLength);
        let str = '';
        let j = r;
        for (; j < max - 1; j++) {
          const padding = maxLineLength[j - r];
          str += padStart ? `${output[j]}, `.padStart(padding, ' ') : `${output[j]}, `.padEnd(padding, ' ');
        }
        if (padStart) {
          str += output[j].padStart(maxLineLength[j - r] - separatorSpace, ' ');
        } else {
          str += output[j];
        }
        tmp.push(str);
      }
      if (ctx.maxArrayLength < output.length) tmp.push(output[outputLength]);
      output = tmp;
    }
    return output;
  }

  function reduceToSingleString(ctx, output, base, braces, extrasType, recurseTimes, value) {
    const entries = output.length;
    if (extrasType === kArrayExtrasType && entries > 6) {
      output = groupArrayElements(ctx, output, value);
    }
    if (ctx.currentDepth - recurseTimes < ctx.compact && entries === output.length) {
      const start = output.length + ctx.indentationLvl + braces[0].length + base.length + 10;
      if (isBelowBreakLength(ctx, output, start, base)) {
        const joined = output.join(', ');
        if (joined.indexOf('\n') === -1) {
          return `${base ? `${base} ` : ''}${braces[0]} ${joined} ${braces[1]}`;
        }
      }
    }
    const indentation = `\n${' '.repeat(ctx.indentationLvl)}`;
    return `${base ? `${base} ` : ''}${braces[0]}${indentation}  ${
      output.join(`,${indentation}  `)}${indentation}${braces[1]}`;
  }

  function inspect(value, opts) {
    const ctx = {
      seen: [], circular: undefined, indentationLvl: 0, currentDepth: 0,
      depth: 2, breakLength: 80, compact: 3, maxArrayLength: 100, maxStringLength: 10000,
    };
    if (opts) for (const k of ObjectKeys(opts)) ctx[k] = opts[k];
    if (ctx.depth === null) ctx.depth = Infinity;
    try {
      return formatValue(ctx, value, 0);
    } catch (e) {
      return `[inspection failed: ${safeString(e)}]`;
    }
  }

  function safeString(v) {
    try { return String(v); } catch (e) { return '[unprintable]'; }
  }

  // Describing an out-of-memory error must not allocate: its outcome is prebuilt.
  const OOM_PAYLOAD = '{"name":"InternalError","message":"InternalError: out of memory",' +
    '"stack":"InternalError: out of memory"}';
  const OOM_OUTCOME = 'e' + OOM_PAYLOAD;
  const isOutOfMemory = (e) => {
    try { return e instanceof Error && e.name === 'InternalError' && e.message === 'out of memory'; } catch (x) { return false; }
  };
  // When the heap is full QuickJS cannot even allocate its InternalError and throws `null`.
  // So with a memory limit set, a thrown null is reported as out of memory, unless the
  // execution's source visibly throws/rejects null itself.
  let memoryLimited = false;
  const nullThrowRe = /\bthrow\s+null\b|\breject\(\s*null\s*\)/;
  const exceptionOutcome = (e) => {
    if (isOutOfMemory(e) || (e === null && memoryLimited && !X.throwsNull)) return OOM_OUTCOME;
    return 'e' + exceptionPayload(e);
  };

  // ---------------------------------------------------------------- util.format
  function hasBuiltInToString(value) {
    try {
      if (typeof value.toString !== 'function') return true;
      if (hasOwn(value, 'toString')) return false;
      let pointer = value;
      do { pointer = ObjectGetPrototypeOf(pointer); } while (pointer !== null && !hasOwn(pointer, 'toString'));
      if (pointer === null) return true;
      const desc = ObjectGetOwnPropertyDescriptor(pointer, 'constructor');
      return desc !== undefined && typeof desc.value === 'function' && builtInObjects.has(desc.value.name);
    } catch (e) {
      return true;
    }
  }

  function format(...args) {
    const first = args[0];
    let a = 0;
    let str = '';
    let join = '';
    if (typeof first === 'string') {
      if (args.length === 1) return first;
      let tempStr;
      let lastPos = 0;
      for (let i = 0; i < first.length - 1; i++) {
        if (first.charCodeAt(i) === 37) { // '%'
          const nextChar = first.charCodeAt(++i);
          if (a + 1 !== args.length) {
            switch (nextChar) {
              case 115: { // 's'
                const arg = args[++a];
                if (typeof arg === 'number') tempStr = formatNumber(arg);
                else if (typeof arg === 'bigint') tempStr = `${arg}n`;
                else if (typeof arg !== 'object' || arg === null || !hasBuiltInToString(arg)) tempStr = safeString(arg);
                else tempStr = inspect(arg, { depth: 0 });
                break;
              }
              case 106: { // 'j'
                try { tempStr = JSONstringify(args[++a]); } catch (e) { tempStr = '[Circular]'; }
                break;
              }
              case 100: { // 'd'
                const n = args[++a];
                if (typeof n === 'bigint') tempStr = `${n}n`;
                else if (typeof n === 'symbol') tempStr = 'NaN';
                else tempStr = formatNumber(Number(n));
                break;
              }
              case 79: tempStr = inspect(args[++a]); break; // 'O'
              case 111: tempStr = inspect(args[++a], { depth: 4 }); break; // 'o'
              case 105: { // 'i'
                const n = args[++a];
                if (typeof n === 'bigint') tempStr = `${n}n`;
                else if (typeof n === 'symbol') tempStr = 'NaN';
                else tempStr = formatNumber(Number.parseInt(n));
                break;
              }
              case 102: { // 'f'
                const n = args[++a];
                tempStr = typeof n === 'symbol' ? 'NaN' : formatNumber(Number.parseFloat(n));
                break;
              }
              case 99: a += 1; tempStr = ''; break; // 'c'
              case 37: str += first.slice(lastPos, i); lastPos = i + 1; continue; // '%%'
              default: continue;
            }
            if (lastPos !== i - 1) str += first.slice(lastPos, i - 1);
            str += tempStr;
            lastPos = i + 1;
          } else if (nextChar === 37) {
            str += first.slice(lastPos, i);
            lastPos = i + 1;
          }
        }
      }
      if (lastPos !== 0) {
        a++;
        join = ' ';
        if (lastPos < first.length) str += first.slice(lastPos);
      }
    }
    while (a < args.length) {
      const value = args[a];
      str += join;
      const t = typeof value;
      // Primitives print the same as inspect() would, without its machinery.
      if (t === 'string') str += value;
      else if (t === 'number') str += formatNumber(value);
      else if (t === 'boolean' || value === undefined || value === null) str += String(value);
      else str += inspect(value);
      join = ' ';
      a++;
    }
    return str;
  }

  // ---------------------------------------------------------------- console
  const loneSurrogates = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
  const anySurrogate = /[\ud800-\udfff]/;  // cheap pre-check: the full pattern is slow
  function emit(level, text) {
    if (anySurrogate.test(text)) {
      loneSurrogates.lastIndex = 0;
      text = text.replace(loneSurrogates, '\ufffd');
      loneSurrogates.lastIndex = 0;
    }
    const stop = hostConsole(level, text);
    if (typeof stop === 'string') throw new Error(stop);
  }
  const counts = new MapCtor();
  const timersLabels = new MapCtor();
  let groupIndent = '';
  const log = (level) => function (...args) {
    // Fast path for the common console.log('text') call: no formatting work at all.
    let text = args.length === 1 && typeof args[0] === 'string' ? args[0] : format(...args);
    if (groupIndent !== '') text = groupIndent + text.replace(/\n/g, `\n${groupIndent}`);
    emit(level, text);
  };
  const consoleObj = {
    log: log('log'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    debug: log('debug'),
    trace(...args) {
      const err = new Error();
      const frames = typeof err.stack === 'string' ? err.stack.replace(/\s+$/, '') : '';
      const msg = format(...args);
      emit('error', `Trace${msg === '' ? '' : `: ${msg}`}${frames ? `\n${frames}` : ''}`);
    },
    dir(value, options) { emit('log', inspect(value, options && typeof options === 'object' ? { depth: options.depth === undefined ? 2 : options.depth } : undefined)); },
    table(...args) { consoleObj.log(...args); },
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
  // Value payload (API.md §5). Primitives preview as String(v) (so 1n previews as "1" and
  // Symbol('a') as "Symbol(a)"); everything else as inspect(v) (Node's console.log form).
  function valuePayload(v) {
    const type = valueType(v);
    if (type === 'undefined') return '{"type":"undefined","preview":"undefined","json":null}';
    if (type === 'null') return '{"type":"null","preview":"null","json":null}';
    let preview;
    if (type === 'symbol') preview = symbolToString(v);
    else if (typeof v !== 'object' && typeof v !== 'function') preview = String(v);
    else preview = inspect(v);
    if (preview.length > PREVIEW_LIMIT) preview = preview.slice(0, PREVIEW_LIMIT);
    let json;
    try { json = JSONstringify(v); } catch (e) { json = undefined; }
    let out = `{"type":"${type}","preview":${JSONstringify(preview)}`;
    if (typeof json === 'string') out += `,"json":${json}`;
    return `${out}}`;
  }

  // Exception payload (API.md §5). Errors: name, message = "Name: message", stack = Node-like
  // (header line + QuickJS frames). A thrown non-error (`throw 42`) has no name and no stack;
  // its message is "Uncaught " + inspect(value), like the Node REPL ("Uncaught 42").
  function exceptionPayload(e) {
    try {
      if (e !== null && typeof e === 'object' && isError(e)) {
        let name;
        try { name = e.name; } catch (err) { name = 'Error'; }
        name = name === undefined ? 'Error' : safeString(name);
        return JSONstringify({ name, message: errorHeader(e), stack: errorStack(e) });
      }
      return JSONstringify({ message: `Uncaught ${inspect(e)}` });
    } catch (err) {
      // Describing failed: nearly always because the heap is exhausted (QuickJS then throws
      // null instead of an InternalError it cannot allocate).
      if (e === null || isOutOfMemory(e) || isOutOfMemory(err) || err === null) return OOM_PAYLOAD;
      return '{"name":"Error","message":"Error: exception could not be described"}';
    }
  }

  // ---------------------------------------------------------------- execution state
  const X = { gen: 0, throwsNull: false, settled: true, outcome: 'v{"type":"undefined","preview":"undefined","json":null}', error: null };

  function newExecution() {
    X.throwsNull = false;
    X.gen++;
    X.settled = false;
    X.outcome = null;
    X.error = null;
  }

  function settleValue(gen, v) {
    if (gen !== X.gen) return;
    if (isPromise(v)) {
      trackPromise(v);
      promiseThen(v,
        () => { if (gen === X.gen) { X.settled = true; X.outcome = 'v' + valuePayload(v); } },
        (e) => settleError(gen, e));
    } else {
      X.settled = true;
      X.outcome = 'v' + valuePayload(v);
    }
  }

  function settleError(gen, e) {
    if (gen !== X.gen) return;
    X.settled = true;
    X.outcome = exceptionOutcome(e);
  }

  // An exception escaping a timer callback or a queueMicrotask callback ends the execution
  // with that exception (the first one wins), like an uncaught exception ends a Node process.
  function uncaught(e) {
    if (X.error === null) X.error = exceptionOutcome(e);
  }

  // ---------------------------------------------------------------- timers
  const timers = new MapCtor(); // id -> timer
  let heap = []; // binary heap ordered by (due, seq)
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
    const t = { id: nextTimerId++, due: now() + delay, seq: timerSeq++, fn, args, interval: repeat ? delay : -1, cancelled: false };
    timers.set(t.id, t);
    heapPush(t);
    return t.id;
  }
  function clearTimer(id) {
    if (id === null || id === undefined) return;
    const t = timers.get(typeof id === 'object' ? Number(id) : id);
    if (t !== undefined) {
      t.cancelled = true;
      timers.delete(t.id);
    }
  }
  function clearAllTimers() {
    for (const t of timers.values()) t.cancelled = true;
    timers.clear();
    heap = [];
  }

  function runTimer(nowMs) {
    if (X.error !== null) return false;
    const t = heapPeek();
    if (t === undefined || t.due > nowMs) return false;
    heapPop();
    if (t.interval >= 0) {
      t.due = nowMs + t.interval;
      t.seq = timerSeq++;
      heapPush(t);
    } else {
      timers.delete(t.id);
    }
    try {
      t.fn.apply(undefined, t.args);
    } catch (e) {
      uncaught(e);
      return false;
    }
    return true;
  }

  function poll(nowMs) {
    if (X.error !== null) {
      clearAllTimers();
      return X.error;
    }
    if (timers.size > 0) {
      const t = heapPeek();
      return Math.max(0, t.due - nowMs) / 1000;
    }
    return X.settled ? X.outcome : null;
  }

  // ---------------------------------------------------------------- REPL / script transform
  const acornOptions = {
    ecmaVersion: 'latest', sourceType: 'script', allowAwaitOutsideFunction: true,
    allowHashBang: true, allowReturnOutsideFunction: false,
  };
  const fastPathRe = /\b(?:let|const|class|await)\b/;
  const strictSlowRe = /\b(?:let|const|class|await|var|function)\b/;
  const isFunctionNode = (n) => n.type === 'FunctionDeclaration' || n.type === 'FunctionExpression' ||
    n.type === 'ArrowFunctionExpression';

  function walk(node, visit, parent) {
    if (visit(node, parent) === false) return;
    for (const key in node) {
      if (key === 'type' || key === 'start' || key === 'end' || key === 'loc') continue;
      const child = node[key];
      if (child === null || typeof child !== 'object') continue;
      if (ArrayIsArray(child)) {
        for (const c of child) if (c && typeof c.type === 'string') walk(c, visit, node);
      } else if (typeof child.type === 'string') {
        walk(child, visit, node);
      }
    }
  }

  function patternNames(id, out) {
    if (!id) return;
    switch (id.type) {
      case 'Identifier': out.push(id.name); break;
      case 'ObjectPattern': for (const p of id.properties) patternNames(p.type === 'RestElement' ? p.argument : p.value, out); break;
      case 'ArrayPattern': for (const e of id.elements) patternNames(e, out); break;
      case 'RestElement': patternNames(id.argument, out); break;
      case 'AssignmentPattern': patternNames(id.left, out); break;
      default: break;
    }
  }

  function applyEdits(src, edits) {
    edits.sort((a, b) => a.start - b.start || a.order - b.order);
    let out = '';
    let pos = 0;
    for (const e of edits) {
      out += src.slice(pos, e.start) + e.text;
      pos = Math.max(pos, e.end);
    }
    return out + src.slice(pos);
  }

  function syntaxError(err) {
    const e = new SyntaxError(err && err.message ? err.message : String(err));
    try { e.stack = ''; } catch (x) { /* ignore */ }
    return e;
  }

  // Returns { code, wrapped }: wrapped = 'async' | 'sync' | '' (plain global eval).
  function prepare(src, isRepl, strict) {
    if (src.startsWith('#!')) src = '//' + src.slice(2);
    if (isRepl && /^\s*\{/.test(src) && !/;\s*$/.test(src)) {
      const candidate = `(${src}\n)`;
      try {
        acorn.parse(candidate, acornOptions);
        src = candidate;
      } catch (e) { /* a block, not an object literal */ }
    }
    if (!(strict ? strictSlowRe : fastPathRe).test(src)) {
      return { code: strict ? `'use strict';${src}` : src, wrapped: '' };
    }
    let ast;
    try {
      ast = acorn.parse(src, acornOptions);
    } catch (e) {
      throw syntaxError(e);
    }
    let hasAwait = false;
    walk(ast, (n) => {
      if (hasAwait || isFunctionNode(n)) return false;
      if (n.type === 'AwaitExpression' || (n.type === 'ForOfStatement' && n.await)) {
        hasAwait = true;
        return false;
      }
      return true;
    });
    const edits = [];
    let order = 0;
    const edit = (start, end, text) => edits.push({ start, end, text, order: order++ });
    const body = ast.body;
    if (!hasAwait && !strict) {
      // Plain global eval: let/const become var, class X {} becomes var X = class X {};
      for (const st of body) {
        if (st.type === 'VariableDeclaration' && st.kind !== 'var') {
          edit(st.start, st.start + st.kind.length, 'var');
        } else if (st.type === 'ClassDeclaration' && st.id) {
          edit(st.start, st.start, `var ${st.id.name} = `);
          edit(st.end, st.end, ';');
        }
      }
      return { code: applyEdits(src, edits), wrapped: '' };
    }
    // Wrapped (like Node's lib/internal/repl/await.js): declarations are hoisted as global
    // vars, the code runs inside an (async) arrow and returns the last expression statement.
    const hoisted = new Set();
    const functionsFirst = [];
    const rewriteDecl = (decl, parent, topLevel) => {
      const names = [];
      for (const d of decl.declarations) patternNames(d.id, names);
      for (const n of names) hoisted.add(n);
      const inForInOf = parent && (parent.type === 'ForInStatement' || parent.type === 'ForOfStatement') && parent.left === decl;
      if (inForInOf) {
        edit(decl.start, decl.declarations[0].start, '');
        return;
      }
      const multi = decl.declarations.length !== 1;
      edit(decl.start, decl.declarations[0].start, multi ? 'void (' : 'void ');
      for (let i = 0; i < decl.declarations.length; i++) {
        const d = decl.declarations[i];
        const nextStart = i + 1 < decl.declarations.length ? decl.declarations[i + 1].start : d.end;
        edit(d.start, d.start, '(');
        if (d.init) edit(d.end, d.end, ')');
        else edit(d.end, d.end, decl.kind === 'var' ? ')' : ' = undefined)');
        if (i + 1 < decl.declarations.length) edit(d.end, nextStart, ', ');
      }
      if (multi) edit(decl.declarations[decl.declarations.length - 1].end, decl.declarations[decl.declarations.length - 1].end, ')');
      void topLevel;
    };
    for (const st of body) {
      if (st.type === 'FunctionDeclaration') {
        hoisted.add(st.id.name);
        functionsFirst.push(`${st.id.name} = ${src.slice(st.start, st.end)};\n`);
        edit(st.start, st.end, '');
      } else if (st.type === 'ClassDeclaration' && st.id) {
        hoisted.add(st.id.name);
        edit(st.start, st.start, `${st.id.name} = `);
        edit(st.end, st.end, ';');
      } else if (st.type === 'VariableDeclaration') {
        rewriteDecl(st, null, true);
      }
      if (st.type !== 'VariableDeclaration') {
        walk(st, (n, parent) => {
          if (isFunctionNode(n) || n.type === 'ClassDeclaration' || n.type === 'ClassExpression') return false;
          if (n.type === 'VariableDeclaration' && n.kind === 'var') {
            rewriteDecl(n, parent, false);
          }
          return true;
        });
      } else {
        for (const d of st.declarations) {
          if (d.init) {
            walk(d.init, (n, parent) => {
              if (isFunctionNode(n) || n.type === 'ClassDeclaration' || n.type === 'ClassExpression') return false;
              if (n.type === 'VariableDeclaration' && n.kind === 'var') rewriteDecl(n, parent, false);
              return true;
            });
          }
        }
      }
    }
    const last = body[body.length - 1];
    if (last && last.type === 'ExpressionStatement') {
      edit(last.start, last.start, 'return __vm.box((');
      edit(last.expression.end, last.expression.end, '))');
    }
    const inner = applyEdits(src, edits);
    const vars = hoisted.size ? `var ${Array.from(hoisted).join(', ')};\n` : '';
    const head = `${vars}(${hasAwait ? 'async ' : ''}() => {${strict ? "'use strict';" : ''}\n`;
    return { code: `${head}${functionsFirst.join('')}${inner}\n})()`, wrapped: hasAwait ? 'async' : 'sync' };
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
      promiseThen(promiseResolve(), function runMicrotask() {
        try { fn(); } catch (e) { if (gen === X.gen) uncaught(e); }
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

  const vm = {
    box: (value) => ({ value }),
    inspect,
    format,
    configure(modulesJson, strict) {
      enabledModules = JSONparse(modulesJson);
      moduleCache = new MapCtor();
      strictMode = !!strict;
    },
    setMemoryLimited(flag) { memoryLimited = !!flag; },
    start(kind, src, argsJson, envJson) {
      newExecution();
      X.throwsNull = memoryLimited && nullThrowRe.test(src);
      const gen = X.gen;
      if (kind !== 'repl') {
        defineGlobal('__ARGS__', JSONparse(argsJson));
        defineGlobal('__ENV__', JSONparse(envJson));
      }
      try {
        const prepared = prepare(src, kind === 'repl', strictMode);
        const v = indirectEval(prepared.code);
        if (prepared.wrapped === 'async') {
          promiseThen(v, (box) => settleValue(gen, box === undefined ? undefined : box.value),
            (e) => settleError(gen, e));
        } else if (prepared.wrapped === 'sync') {
          settleValue(gen, v === undefined ? undefined : v.value);
        } else {
          settleValue(gen, v);
        }
      } catch (e) {
        settleError(gen, e);
      }
      return X.settled && timers.size === 0 && X.error === null ? X.outcome : null;
    },
    startModule(argsJson, envJson) {
      newExecution();
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
        return exceptionPayload(e);
      }
    },
    poll,
    runTimer,
    clear() {
      clearAllTimers();
      X.gen++;
      X.settled = true;
      X.error = null;
      X.outcome = 'v{"type":"undefined","preview":"undefined","json":null}';
    },
    pendingTimers: () => timers.size,
  };
  ObjectDefineProperty(global, '__vm', { value: Object.freeze(vm), writable: false, configurable: false, enumerable: false });
})(globalThis);
