// vm-system prelude, part 4 of 8: a port of Node's util.format (console.log's `%s %d %o`...),
// over the inspector of part 3; adds `format` to the hidden `__vmi`.
(function (vmi) {
  'use strict';
  const {
    hasOwn, ObjectGetPrototypeOf, ObjectGetOwnPropertyDescriptor, JSONstringify, builtInObjects,
    inspect, formatNumber, safeString,
  } = vmi;

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


  Object.assign(vmi, { format });
})(globalThis.__vmi);
