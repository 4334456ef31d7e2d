#!/bin/bash
# The original's library matrix, re-created: built-ins without libraries, a library missing
# then configured, and for every catalog library a template, a session and its global.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

vm_init_run "vm-system-library-matrix"
trap vm_cleanup EXIT

cat > "${WORKTREE}/test-lodash.js" <<'JS'
if (typeof _ === 'undefined') {
  throw new Error('Lodash library not available');
}
const users = [{ name: 'Alice', age: 30 }, { name: 'Bob', age: 25 }, { name: 'Charlie', age: 35 }];
const names = _.map(users, 'name');
console.log('SUCCESS_LODASH', JSON.stringify(names));
JS
cat > "${WORKTREE}/test-json-builtin.js" <<'JS'
const encoded = JSON.stringify({ a: 1, b: 2 });
if (encoded !== '{"a":1,"b":2}') {
  throw new Error('JSON builtin behavior mismatch: ' + encoded);
}
console.log('SUCCESS_JSON_BUILTIN', encoded);
JS

vm_test "Start daemon"
vm_start_daemon
if vm_wait_for_health; then vm_pass "Daemon health endpoint is ready"; else vm_fail "Daemon did not become healthy"; exit 1; fi

vm_test "Download library catalog to local cache"
if ${CLI} libs download; then
  LODASH_LIB_ID="$(basename "$(ls .vm-cache/libraries/lodash*.js | head -n 1)" .js)"
  vm_pass "Resolved Lodash library ID: ${LODASH_LIB_ID}"
else
  vm_fail "Library download failed"
  exit 1
fi

vm_test "Create template without libraries"
TEMPLATE_NO_LIBS=$(vm_extract_template_id "$(${CLI} template create --name "NoLibsTemplate" --engine goja)")
if [[ -n "${TEMPLATE_NO_LIBS}" ]]; then vm_pass "Template created (${TEMPLATE_NO_LIBS})"; else vm_fail "Template creation failed"; exit 1; fi

vm_test "JSON is not a template-configurable module"
if ${CLI} template add-module "${TEMPLATE_NO_LIBS}" --name json >"${TMPDIR:-/tmp}/json-module.out" 2>&1; then
  vm_fail "JSON module unexpectedly accepted"
elif grep -q "MODULE_NOT_ALLOWED" "${TMPDIR:-/tmp}/json-module.out"; then
  vm_pass "JSON module rejected as expected"
else
  vm_fail "JSON module failed for an unexpected reason: $(cat "${TMPDIR:-/tmp}/json-module.out")"
fi

vm_test "JSON built-in works without any library"
SESSION_NO_LIBS=$(${CLI} session create --template-id "${TEMPLATE_NO_LIBS}" --workspace-id ws-no-libs \
  --base-commit deadbeef --worktree-path "${WORKTREE}" | awk '/Created session:/ {print $3}')
if vm_has "$(${CLI} exec run-file "${SESSION_NO_LIBS}" test-json-builtin.js)" SUCCESS_JSON_BUILTIN; then
  vm_pass "JSON built-in available"
else
  vm_fail "JSON built-in execution failed"
fi

vm_test "Lodash usage fails without lodash configured"
if ${CLI} exec run-file "${SESSION_NO_LIBS}" test-lodash.js >"${TMPDIR:-/tmp}/no-lodash.out" 2>&1; then
  if grep -q "Lodash library not available" "${TMPDIR:-/tmp}/no-lodash.out" && grep -q "^Error: " "${TMPDIR:-/tmp}/no-lodash.out"; then
    vm_pass "The script's exception is reported (exit 0, an Error: line)"
  else
    vm_fail "Execution unexpectedly succeeded: $(cat "${TMPDIR:-/tmp}/no-lodash.out")"
  fi
else
  vm_fail "A JavaScript exception must not fail the command"
fi

vm_test "Lodash usage succeeds when Lodash is configured"
TEMPLATE_LODASH=$(vm_extract_template_id "$(${CLI} template create --name "LodashTemplate" --engine goja)")
${CLI} template add-library "${TEMPLATE_LODASH}" --name "${LODASH_LIB_ID}"
SESSION_LODASH=$(${CLI} session create --template-id "${TEMPLATE_LODASH}" --workspace-id ws-lodash \
  --base-commit deadbeef --worktree-path "${WORKTREE}" | awk '/Created session:/ {print $3}')
OUTPUT=$(${CLI} exec run-file "${SESSION_LODASH}" test-lodash.js)
if vm_has "${OUTPUT}" 'SUCCESS_LODASH \[\\"Alice\\",\\"Bob\\",\\"Charlie\\"\]'; then
  vm_pass "Execution succeeded with Lodash configured"
else
  vm_fail "Execution output missing the Lodash success marker"
fi

# Every catalog library: a template with it, a session, and its global in the REPL.
CATALOG=$(${CLI} template list-available-libraries | "${PYTHON:-python3}" -c \
  'import json, sys; [print(lib["name"], lib["global"], lib["version"]) for lib in json.load(sys.stdin)]')
while read -r LIB_NAME LIB_GLOBAL LIB_VERSION; do
  vm_test "Library ${LIB_NAME} exposes ${LIB_GLOBAL}"
  TEMPLATE_ID=$(vm_extract_template_id "$(${CLI} template create --name "matrix-${LIB_NAME}")")
  ADDED=$(${CLI} template add-library "${TEMPLATE_ID}" --name "${LIB_NAME}")
  vm_expect "${ADDED}" "^Added library: ${LIB_NAME} to template ${TEMPLATE_ID}$" "add-library"
  SESSION_ID=$(vm_extract_session_id "$(${CLI} session create --template-id "${TEMPLATE_ID}" \
    --workspace-id "ws-${LIB_NAME}" --base-commit deadbeef --worktree-path "${WORKTREE}")")
  OUTPUT=$(${CLI} exec repl "${SESSION_ID}" "typeof ${LIB_GLOBAL} + ' ' + ${LIB_GLOBAL}.VERSION")
  if vm_has "${OUTPUT}" "\"preview\":\"[a-z]* ${LIB_VERSION}\""; then
    vm_pass "${LIB_GLOBAL} is loaded (${LIB_NAME})"
  else
    vm_fail "${LIB_NAME}: ${OUTPUT}"
  fi
done <<< "${CATALOG}"

vm_test "Post-hoc library configuration works"
TEMPLATE_POSTHOC=$(vm_extract_template_id "$(${CLI} template create --name "PostHocTemplate" --engine goja)")
if ${CLI} template add-library "${TEMPLATE_POSTHOC}" --name "${LODASH_LIB_ID}"; then vm_pass "Post-hoc library add succeeded"; else vm_fail "Post-hoc library add failed"; fi

vm_summary
vm_pass "Library/module capability matrix test completed"
