#!/bin/bash
# The original's smoke test, re-created: template, module, startup file, session, REPL, run-file.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${SCRIPT_DIR}/lib.sh"

vm_init_run "vm-system-smoke"
trap vm_cleanup EXIT

vm_log_info "Preparing workspace and database"
cat > "${WORKTREE}/startup.js" <<'JS'
console.log("Startup script loaded");
globalThis.SMOKE_VALUE = 40;
JS
cat > "${WORKTREE}/app.js" <<'JS'
console.log("app.js running");
SMOKE_VALUE + 2;
JS

vm_test "Start daemon"
vm_start_daemon
if vm_wait_for_health; then vm_pass "Daemon health endpoint is ready"; else vm_fail "Daemon did not become healthy"; exit 1; fi

vm_test "List available configurable modules"
OUTPUT=$(${CLI} template list-available-modules)
if [[ -n "${OUTPUT}" ]] && vm_has "${OUTPUT}" '"name": "fs"'; then
  vm_pass "Module catalog printed"
else
  vm_fail "Module catalog empty"
fi

vm_test "Create template"
CREATE_OUTPUT=$(${CLI} template create --name "SmokeTemplate" --engine goja)
TEMPLATE_ID=$(vm_extract_template_id "${CREATE_OUTPUT}")
if [[ -n "${TEMPLATE_ID}" ]]; then vm_pass "Template created (${TEMPLATE_ID})"; else vm_fail "No template ID in: ${CREATE_OUTPUT}"; exit 1; fi

vm_test "Add template module"
if ${CLI} template add-module "${TEMPLATE_ID}" --name fs; then vm_pass "Module added"; else vm_fail "Module add failed"; fi

vm_test "Add template startup file"
if ${CLI} template add-startup "${TEMPLATE_ID}" --path "startup.js" --order 10 --mode eval; then
  vm_pass "Startup file added"
else
  vm_fail "Startup file add failed"
fi

vm_test "Create session via daemon"
SESSION_OUTPUT=$(${CLI} session create \
  --template-id "${TEMPLATE_ID}" \
  --workspace-id ws-smoke \
  --base-commit deadbeef \
  --worktree-path "${WORKTREE}")
SESSION_ID=$(vm_extract_session_id "${SESSION_OUTPUT}")
if [[ -n "${SESSION_ID}" ]]; then vm_pass "Session created (${SESSION_ID})"; else vm_fail "No session ID in: ${SESSION_OUTPUT}"; exit 1; fi

vm_test "Execute REPL over daemon API"
OUTPUT=$(${CLI} exec repl "${SESSION_ID}" '1 + 1')
if vm_has "${OUTPUT}" '"preview":"2"'; then vm_pass "REPL returned 2"; else vm_fail "REPL output: ${OUTPUT}"; fi
OUTPUT=$(${CLI} exec repl "${SESSION_ID}" 'SMOKE_VALUE + 2')
if vm_has "${OUTPUT}" '"preview":"42"'; then vm_pass "REPL returned 42"; else vm_fail "REPL output: ${OUTPUT}"; fi
REPL_EXEC_ID=$(echo "${OUTPUT}" | awk '/^Execution ID:/ {print $3}')

vm_test "Execute run-file over daemon API"
OUTPUT=$(${CLI} exec run-file "${SESSION_ID}" "app.js")
if vm_has "${OUTPUT}" "Execution ID:" && vm_has "${OUTPUT}" '"text":"app.js running"'; then
  vm_pass "run-file execution succeeded"
else
  vm_fail "run-file output: ${OUTPUT}"
fi

vm_test "List executions and read events"
OUTPUT=$(${CLI} exec list "${SESSION_ID}")
if vm_has "${OUTPUT}" "^${REPL_EXEC_ID} *repl *ok"; then vm_pass "Execution listed"; else vm_fail "exec list: ${OUTPUT}"; fi
OUTPUT=$(${CLI} exec events "${REPL_EXEC_ID}")
if vm_has "${OUTPUT}" '^2 .* value .*"preview":"42"'; then vm_pass "Events listed"; else vm_fail "exec events: ${OUTPUT}"; fi

vm_test "Check runtime summary"
OUTPUT=$(vm_http_get "${SERVER_URL}/api/v1/runtime/summary")
if vm_has "${OUTPUT}" '"active_sessions":1'; then vm_pass "One active session"; else vm_fail "Runtime summary: ${OUTPUT}"; fi

vm_summary
vm_pass "Daemon-first smoke test completed"
