// vm-system prelude, part 3 of 8: a port of Node's util.inspect, over the primordials of part 1
// and the layout of part 2; adds inspect and the stack helpers to the hidden `__vmi`.
(function (global, vmi) {
  'use strict';
  const {
    hostConsole, hostCall, hostNow, hostEvent, acorn, uncurry, JSONstringify, JSONparse,
    ObjectKeys, ObjectGetOwnPropertySymbols, ObjectGetOwnPropertyNames,
    ObjectGetOwnPropertyDescriptor, ObjectGetPrototypeOf, ObjectDefineProperty, ObjectIs,
    ArrayIsArray, hasOwn, propertyIsEnumerable, objectToString, functionToString, dateGetTime,
    dateToISOString, dateToString, regExpToString, errorToString, symbolToString, mapSize,
    setSize, mapEntries, setValues, promiseThen, PromiseCtor, promiseResolve, WeakMapCtor,
    MapCtor, TypedArrayProto, typedArrayLength, typedArrayTag, arrayBufferByteLength,
    AsyncFunctionProto, GeneratorFunctionProto, AsyncGeneratorFunctionProto, indirectEval, now,
    tryCall, isDate, isMap, isSet, isTypedArray, isArrayBuffer, isRegExp, isError, isPromise,
    isWeakMap, isWeakSet, isBoxed, promiseStates, trackPromise, kObjectType, kArrayExtrasType,
    reduceToSingleString,
  } = vmi;

  // ---------------------------------------------------------------- inspector (util.inspect)
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

  // Drop the prelude's own frames (a trace's, the entry into user code) from a stack. engine.py
  // evaluates every prelude file after a million blank lines, so its frames carry line numbers
  // no user input reaches; this file measures where they start.
  const frameLine = /\(<input>:(\d+)\)$|^\s+at <input>:(\d+)$/;
  const nativeFrame = /^\s+at (?:eval|apply|call|Function) \(native\)$/;
  const preludeFirstLine = (() => {
    let stack = '';
    try { throw new Error(); } catch (e) { stack = String(e.stack); }
    const m = /<input>:(\d+)/.exec(stack);
    const line = m ? Number(m[1]) : 0;
    return line > 100000 ? line - 1000 : Infinity;
  })();
  function cleanFrames(frames) {
    const lines = frames.replace(/\s+$/, '').split('\n');
    const kept = [];
    for (const l of lines) {
      const m = frameLine.exec(l);
      if ((m && Number(m[1] || m[2]) >= preludeFirstLine) || nativeFrame.test(l)) continue;
      kept.push(l);
    }
    return kept.join('\n');
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


  Object.assign(vmi, {
    inspect, formatNumber, safeString, builtInObjects, errorHeader, errorStack, cleanFrames,
  });
})(globalThis, globalThis.__vmi);
