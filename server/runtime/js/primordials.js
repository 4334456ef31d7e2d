// vm-system prelude, part 1 of 8: host bindings, primordials (the built-ins as they were before
// any user code ran), type checks and promise state tracking. Shares them with the later parts
// through the hidden namespace `__vmi`, which the last part (prelude.js) deletes before any user
// code runs.
(function (global) {
  'use strict';

  // ---------------------------------------------------------------- host bindings, primordials
  const hostConsole = global.__vm_host_console;
  const hostCall = global.__vm_host_call;
  const hostNow = global.__vm_host_now;
  const hostEvent = global.__vm_host_event;
  delete global.__vm_host_event;
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
  ObjectDefineProperty(global, '__vmi', {
    value: {
      hostConsole, hostCall, hostNow, hostEvent, acorn, uncurry, JSONstringify, JSONparse,
      ObjectKeys, ObjectGetOwnPropertySymbols, ObjectGetOwnPropertyNames,
      ObjectGetOwnPropertyDescriptor, ObjectGetPrototypeOf, ObjectDefineProperty, ObjectIs,
      ArrayIsArray, hasOwn, propertyIsEnumerable, objectToString, functionToString,
      dateGetTime, dateToISOString, dateToString, regExpToString, errorToString,
      symbolToString, mapSize, setSize, mapEntries, setValues, promiseThen, PromiseCtor,
      promiseResolve, WeakMapCtor, MapCtor, TypedArrayProto, typedArrayLength, typedArrayTag,
      arrayBufferByteLength, AsyncFunctionProto, GeneratorFunctionProto,
      AsyncGeneratorFunctionProto, indirectEval, now, tryCall, isDate, isMap, isSet,
      isTypedArray, isArrayBuffer, isRegExp, isError, isPromise, isWeakMap, isWeakSet, isBoxed,
      promiseStates, trackPromise,
    },
    writable: false, configurable: true, enumerable: false,
  });
})(globalThis);
