// vm-system prelude, part 5 of 8: the REPL / script transform (top-level let/const/class
// persist as globals, top-level await, the last expression is the value), on the vendored acorn.
(function (global, I) {
  'use strict';
  const { acorn, ArrayIsArray, ObjectDefineProperty } = I;

  // ---------------------------------------------------------------- REPL / script transform
  const acornOptions = {
    ecmaVersion: 'latest', sourceType: 'script', allowAwaitOutsideFunction: true,
    allowHashBang: true, allowReturnOutsideFunction: false,
  };
  const fastPathRe = /\b(?:let|const|class|await)\b/;
  const awaitRe = /\bawait\b/;
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

  // A parse error as a SyntaxError carrying where it is: `line` and `column` (both 1-based),
  // which UIs use to draw a code frame with a caret.
  function syntaxError(err) {
    const e = new SyntaxError(err && err.message ? err.message : String(err));
    try { e.stack = ''; } catch (x) { /* ignore */ }
    const loc = err && err.loc;
    if (loc && typeof loc.line === 'number') {
      ObjectDefineProperty(e, 'line', { value: loc.line, configurable: true, writable: true });
      ObjectDefineProperty(e, 'column', { value: loc.column + 1, configurable: true, writable: true });
    }
    return e;
  }

  // QuickJS's own parse errors carry no position; acorn's do, with one wording for both paths.
  function explainSyntaxError(src) {
    try {
      acorn.parse(src, acornOptions);
    } catch (e) {
      return syntaxError(e);
    }
    return null;
  }

  // Whether a source declares nothing with let/const/class at its top level (every such word
  // sits inside brackets: a for-loop head, a block, a function): then, without an await, it
  // runs as it is and needs no parse. A scan, not a parser, so it only answers what it can
  // prove: a "/" (a regular expression or a division), a template literal, a backslash or
  // unbalanced brackets make it answer false, and the parse decides.
  function nothingDeclaredAtTopLevel(src) {
    const n = src.length;
    let depth = 0;
    for (let i = 0; i < n; i++) {
      const c = src.charCodeAt(i);
      if (c === 40 || c === 91 || c === 123) depth++; // ( [ {
      else if (c === 41 || c === 93 || c === 125) { // ) ] }
        if (--depth < 0) return false;
      } else if (c === 39 || c === 34) { // a quoted string
        for (i++; i < n; i++) {
          const d = src.charCodeAt(i);
          if (d === c) break;
          if (d === 92 || d === 10 || d === 13) return false;
        }
        if (i >= n) return false;
      } else if (c === 47) { // a comment, or a "/" the scan cannot classify
        const d = src.charCodeAt(i + 1);
        if (d === 47) {
          const end = src.indexOf('\n', i);
          if (end < 0) break;
          i = end;
        } else if (d === 42) {
          const end = src.indexOf('*/', i + 2);
          if (end < 0) return false;
          i = end + 1;
        } else return false;
      } else if (c === 96 || c === 92) return false; // a template literal, an escape
      else if (isWordChar(c)) {
        let j = i + 1;
        while (j < n && isWordChar(src.charCodeAt(j))) j++;
        if (depth === 0) {
          const word = src.slice(i, j);
          if (word === 'let' || word === 'const' || word === 'class') return false;
        }
        i = j - 1;
      }
    }
    return depth === 0;
  }
  const isWordChar = (c) => (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) ||
    c === 36 || c === 95 || c > 127;

  // Wrapped code receives the boxing helper as a parameter, so nothing internal is ever
  // reachable from the global scope.
  const boxParam = `__vm_box_${Math.floor(Math.random() * 0x7fffffff).toString(36)}`;

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
    if (!(strict ? strictSlowRe : fastPathRe).test(src) ||
        (!strict && !awaitRe.test(src) && nothingDeclaredAtTopLevel(src))) {
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
        // The declaration stays where it is (so line numbers in stacks stay the user's); the
        // wrapper's first line publishes the hoisted local function as the global binding.
        functionsFirst.push(`${boxParam}.set('${st.id.name}', ${st.id.name});`);
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
    if (hasAwait) {
      // QuickJS misreads an `await` that starts the line after a nested function's closing
      // brace (its lookahead token is read in the inner, non-async scope): end that statement
      // explicitly, which is what ASI would do anyway.
      walk(ast, (n) => {
        if (isFunctionNode(n) && /^[ \t]*(?:\/\/[^\n]*)?\r?\n\s*await\b/.test(src.slice(n.end, n.end + 200))) {
          edit(n.end, n.end, ';');
        }
        return true;
      });
    }
    const last = body[body.length - 1];
    if (last && last.type === 'ExpressionStatement') {
      edit(last.start, last.start, `return ${boxParam}((`);
      edit(last.expression.end, last.expression.end, '))');
    }
    const inner = applyEdits(src, edits);
    // Everything added before the user's code stays on its first line: stack line numbers match
    // the input.
    const vars = hoisted.size ? `var ${Array.from(hoisted).join(', ')}; ` : '';
    const head = `${vars}(${hasAwait ? 'async ' : ''}(${boxParam}) => {${strict ? "'use strict';" : ''}`;
    return { code: `${head}${functionsFirst.join('')}${inner}\n})`, wrapped: hasAwait ? 'async' : 'sync' };
  }


  I.prepare = prepare;
  I.explainSyntaxError = explainSyntaxError;
})(globalThis, globalThis.__vmi);
