#!/bin/bash
# Shared helpers for the re-created upstream scripts (see tests/upstream/README.md).
#
# The original scripts built ./vm-system with `go build`; here the command comes from
# $VM_SYSTEM (default: vm-system on PATH). Everything else is what the original scripts did:
# a daemon on a free port with its own database, ids scraped from the human output.

VM_SYSTEM="${VM_SYSTEM:-vm-system}"

vm_log_info() { echo "[INFO] $1"; }
vm_pass() { echo "[PASS] $1"; TESTS_PASSED=$((TESTS_PASSED + 1)); }
vm_fail() { echo "[FAIL] $1"; TESTS_FAILED=$((TESTS_FAILED + 1)); }
vm_test() {
  TESTS_RUN=$((TESTS_RUN + 1))
  echo ""
  echo "---- Test ${TESTS_RUN}: $1"
}

vm_free_port() {
  "${PYTHON:-python3}" - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# GET a URL and print the body (curl when there is one, as the originals did).
vm_http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS "$1"
  else
    "${PYTHON:-python3}" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"
  fi
}

vm_init_run() {
  local run_name="$1"
  TESTS_RUN=0
  TESTS_PASSED=0
  TESTS_FAILED=0
  DB_PATH="${TMPDIR:-/tmp}/${run_name}-$$.db"
  WORKTREE="$(mktemp -d "${TMPDIR:-/tmp}/${run_name}-workspace-XXXX")"
  SERVER_ADDR="127.0.0.1:$(vm_free_port)"
  SERVER_URL="http://${SERVER_ADDR}"
  # Global flags before the command, --db included, exactly as the original scripts pass them.
  CLI="${VM_SYSTEM} --server-url ${SERVER_URL} --db ${DB_PATH}"
  DAEMON_PID=""
  DAEMON_LOG="${TMPDIR:-/tmp}/${run_name}-daemon.log"
}

vm_cleanup() {
  if [[ -n "${DAEMON_PID:-}" ]]; then
    kill "${DAEMON_PID}" >/dev/null 2>&1 || true
    wait "${DAEMON_PID}" >/dev/null 2>&1 || true
  fi
  rm -f "${DB_PATH:-}" "${DB_PATH:-}-wal" "${DB_PATH:-}-shm" >/dev/null 2>&1 || true
  rm -rf "${WORKTREE:-}" >/dev/null 2>&1 || true
}

vm_start_daemon() {
  ${VM_SYSTEM} serve --db "${DB_PATH}" --listen "${SERVER_ADDR}" >"${DAEMON_LOG}" 2>&1 &
  DAEMON_PID=$!
}

vm_wait_for_health() {
  local i
  for ((i = 1; i <= 600; i++)); do
    if vm_http_get "${SERVER_URL}/api/v1/health" 2>/dev/null | grep -q '"status":"ok"'; then
      return 0
    fi
    if ! kill -0 "${DAEMON_PID}" 2>/dev/null; then
      cat "${DAEMON_LOG}"
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# True when a line of the text $1 matches the (basic) regex $2. No pipe, so no SIGPIPE under
# `set -o pipefail` when the match comes early.
vm_has() {
  grep -- "$2" <<< "$1" >/dev/null
}

# Like vm_has, but ends the script with a message when nothing matches (for set -e scripts).
vm_expect() {
  if ! vm_has "$1" "$2"; then
    echo "FAILED: $3: no line matches '$2' in:"
    echo "$1"
    exit 1
  fi
}

vm_extract_template_id() {
  echo "$1" | sed -n 's/.*(ID: \(.*\)).*/\1/p'
}

vm_extract_session_id() {
  echo "$1" | awk '/Created session:/ {print $3}'
}

vm_summary() {
  echo ""
  echo "Tests run:    ${TESTS_RUN}"
  echo "Tests passed: ${TESTS_PASSED}"
  echo "Tests failed: ${TESTS_FAILED}"
  [[ "${TESTS_FAILED}" -eq 0 ]]
}
