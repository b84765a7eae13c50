#!/bin/sh
# Entrypoint of the local test image vardo-test/postgres:15 (built by scripts/services).
# A small stand-in for the official postgres image's entrypoint:
#   POSTGRES_USER     superuser to create (default: postgres)
#   POSTGRES_PASSWORD its password (empty: host connections are trusted, with a warning)
#   POSTGRES_DB       database to create (default: $POSTGRES_USER)
# First start (empty $PGDATA): initdb as the postgres OS user, create role and database,
# password auth for host connections, trust on the local socket. Every start: exec postgres
# in the foreground (a child of this shell, which forwards docker's stop signal), listening on
# '*' port 5432. Extra arguments are passed to postgres.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
export PGDATA

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chmod 2775 /var/run/postgresql
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "entrypoint: initialising $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    if [ "$(id -u)" = 0 ]; then chown postgres "$pwfile"; fi
    if [ -n "$POSTGRES_PASSWORD" ]; then
        host_auth=scram-sha-256
        pwopt="--pwfile=$pwfile"
    else
        echo "entrypoint: WARNING: no POSTGRES_PASSWORD, host connections are trusted"
        host_auth=trust
        pwopt=--no-instructions
    fi
    as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" "$pwopt" --no-instructions \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host="$host_auth"
    rm -f "$pwfile"
    {
        echo
        echo "# added by docker-entrypoint.sh: password auth from anywhere"
        echo "host all all all $host_auth"
    } >>"$PGDATA/pg_hba.conf"

    # Create the database on a temporary server that listens on a private socket only, so that
    # clients waiting for the real server (TCP or /var/run/postgresql) never see this one.
    initsock=$(mktemp -d)
    if [ "$(id -u)" = 0 ]; then chown postgres "$initsock"; fi
    as_postgres pg_ctl -D "$PGDATA" -w -t 60 -l "$initsock/log" \
        -o "-c listen_addresses='' -c unix_socket_directories='$initsock'" start >/dev/null ||
        { cat "$initsock/log" >&2; exit 1; }
    export PGHOST="$initsock"
    exists=$(as_postgres psql -X -q -t -A -U "$POSTGRES_USER" -d postgres -v db="$POSTGRES_DB" \
        <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db';
SQL
    )
    if [ "$exists" = 0 ]; then
        as_postgres psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -v db="$POSTGRES_DB" \
            <<'SQL'
CREATE DATABASE :"db";
SQL
    fi
    as_postgres pg_ctl -D "$PGDATA" -w -t 60 -m fast stop >/dev/null
    unset PGHOST
    rm -rf "$initsock"
    echo "entrypoint: initialisation done"
fi

if [ "$(id -u)" = 0 ]; then
    set -- setpriv --reuid=postgres --regid=postgres --init-groups -- \
        postgres -D "$PGDATA" -c listen_addresses='*' -p 5432 "$@"
else
    set -- postgres -D "$PGDATA" -c listen_addresses='*' -p 5432 "$@"
fi

# `docker stop` sends SIGTERM, which is postgres' "smart" shutdown (it waits for every client to
# leave). Like the official image (STOPSIGNAL SIGINT, which `docker import` cannot set), turn it
# into a fast shutdown: SIGINT.
"$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' TERM INT
trap 'kill -QUIT "$pid" 2>/dev/null || true' QUIT
rc=0
while kill -0 "$pid" 2>/dev/null; do
    rc=0
    wait "$pid" || rc=$?
done
exit "$rc"
