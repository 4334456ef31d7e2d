#!/usr/bin/env bash
# The PostgreSQL the tests use: 127.0.0.1:5432, user postgres with trust auth, database `test`.
# Leaves a server that already answers alone; otherwise installs Debian's postgresql if it is
# missing, starts its cluster, lets user postgres in from 127.0.0.1 without a password, and
# creates the database. Run by `make test` (target `postgres`); needs root or sudo to install.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
SUDO=""
[ "$(id -u)" = "0" ] || SUDO="sudo"

can_connect() {
    command -v psql >/dev/null 2>&1 &&
        PGCONNECT_TIMEOUT=3 psql -h "$HOST" -p "$PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1
}


if ! can_connect; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "installing PostgreSQL (Debian's postgresql package)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
    version="$( (ls /etc/postgresql 2>/dev/null || true) | sort -V | tail -1)"
    if [ -z "$version" ]; then
        version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
        $SUDO pg_createcluster "$version" main
    fi
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    # The tests connect as postgres over TCP without a password: trust it on loopback only.
    if ! $SUDO grep -Eq "^host[[:space:]]+all[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust" "$hba"; then
        echo "letting user postgres in from 127.0.0.1 without a password ($hba)"
        $SUDO sed -i "1i host all postgres 127.0.0.1/32 trust" "$hba"
    fi
    if $SUDO pg_ctlcluster "$version" main status >/dev/null 2>&1; then
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    else
        echo "starting PostgreSQL $version"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    for _ in $(seq 1 30); do can_connect && break; sleep 1; done
    can_connect || { echo "PostgreSQL does not answer on $HOST:$PORT" >&2; exit 1; }
fi

if [ -z "$(psql -h "$HOST" -p "$PORT" -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'")" ]; then
    echo "creating database test"
    psql -h "$HOST" -p "$PORT" -U postgres -d postgres -qc 'CREATE DATABASE test'
fi
echo "PostgreSQL ready on $HOST:$PORT (database test)"
