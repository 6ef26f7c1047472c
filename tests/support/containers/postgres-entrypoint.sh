#!/bin/sh
# First start: a cluster owned by $POSTGRES_USER with database $POSTGRES_DB, trusting the network
# (the official image's POSTGRES_HOST_AUTH_METHOD=trust); then the server in the foreground.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username="$POSTGRES_USER" --auth=trust --encoding=UTF8 -D "$PGDATA" >/dev/null
  echo "host all all all trust" >> "$PGDATA/pg_hba.conf"
  if [ "${POSTGRES_DB:-$POSTGRES_USER}" != postgres ]; then
    echo "CREATE DATABASE \"${POSTGRES_DB:-$POSTGRES_USER}\"" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
