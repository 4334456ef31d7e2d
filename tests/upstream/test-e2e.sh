#!/bin/bash
# The original's end-to-end test, re-created, plus a library: startup files, session, REPL,
# run-file, lists and the runtime summary. Any failing command fails the script (set -e).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

echo "=== VM System End-to-End Test (Daemon-First) ==="
vm_init_run "vm-system-e2e"
trap vm_cleanup EXIT

echo "1. Creating test workspace..."
mkdir -p "${WORKTREE}/runtime"
cat > "${WORKTREE}/runtime/init.js" <<'JS'
console.log("Startup: init.js loaded")
globalThis.testGlobal = "initialized"
JS
cat > "${WORKTREE}/runtime/bootstrap.js" <<'JS'
console.log("Startup: bootstrap.js loaded")
globalThis.chunks = _.chunk([1, 2, 3, 4], 2).length
JS
cat > "${WORKTREE}/test.js" <<'JS'
console.log("Hello from test.js")
const result = testGlobal + "-ok"
console.log("Result:", result)
result
JS

echo "2. Downloading libraries..."
${VM_SYSTEM} libs download
LODASH_LIB_ID="$(basename "$(ls .vm-cache/libraries/lodash*.js | head -n 1)" .js)"
echo "Lodash library: ${LODASH_LIB_ID}"

echo "3. Starting daemon..."
vm_start_daemon
vm_wait_for_health
echo "Daemon started"

echo "4. Creating template..."
CREATE_OUTPUT=$(${CLI} template create --name "test-template" --engine goja)
TEMPLATE_ID=$(vm_extract_template_id "${CREATE_OUTPUT}")
echo "${CREATE_OUTPUT}"
[[ -n "${TEMPLATE_ID}" ]]

echo "5. Adding a library and startup files..."
${CLI} template add-library "${TEMPLATE_ID}" --name "${LODASH_LIB_ID}"
${CLI} template add-startup "${TEMPLATE_ID}" --path "runtime/init.js" --order 10 --mode eval
${CLI} template add-startup "${TEMPLATE_ID}" --path "runtime/bootstrap.js" --order 20 --mode eval
${CLI} template list-startup "${TEMPLATE_ID}"
vm_expect "$(${CLI} template get "${TEMPLATE_ID}")" "^  - ${LODASH_LIB_ID}$" "library on the template"

echo "6. Creating session..."
SESSION_OUTPUT=$(${CLI} session create \
  --template-id "${TEMPLATE_ID}" \
  --workspace-id ws-test-1 \
  --base-commit abc123 \
  --worktree-path "${WORKTREE}")
SESSION_ID=$(vm_extract_session_id "${SESSION_OUTPUT}")
echo "${SESSION_OUTPUT}"
[[ -n "${SESSION_ID}" ]]

echo "7. Executing REPL snippets..."
OUTPUT=$(${CLI} exec repl "${SESSION_ID}" '1 + 2')
echo "${OUTPUT}"
vm_expect "${OUTPUT}" '^Result: {"type":"number","preview":"3"' "REPL result"
vm_expect "$(${CLI} exec repl "${SESSION_ID}" 'chunks')" '"preview":"2"' "the library, used by a startup file"

echo "8. Executing run-file..."
OUTPUT=$(${CLI} exec run-file "${SESSION_ID}" 'test.js')
echo "${OUTPUT}"
vm_expect "${OUTPUT}" '"preview":"initialized-ok"' "run-file value"

echo "9. Listing sessions and executions..."
vm_expect "$(${CLI} session list)" "^${SESSION_ID} *${TEMPLATE_ID} *ready" "session list"
OUTPUT=$(${CLI} exec list "${SESSION_ID}")
echo "${OUTPUT}"
[[ "$(grep -c ' startup ' <<< "${OUTPUT}")" -eq 2 ]] || { echo "FAILED: two startup executions"; exit 1; }

echo "10. Runtime summary..."
OUTPUT=$(vm_http_get "${SERVER_URL}/api/v1/runtime/summary")
echo "${OUTPUT}"
vm_expect "${OUTPUT}" "\"active_session_ids\":\[\"${SESSION_ID}\"\]" "runtime summary"

echo "=== All E2E Steps Passed ==="
