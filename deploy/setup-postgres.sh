#!/bin/sh
# Create Temporal's two PostgreSQL databases and bring their schemas up to date, and
# the trip services' database (their tables they create themselves), with the official
# temporal-sql-tool (run by the admin-tools image). The database settings
# come from the environment the compose file gives (DB, POSTGRES_SEEDS, DB_PORT,
# POSTGRES_USER; the tool reads SQL_PASSWORD itself). Safe to run again: on a restart a
# database or schema that already exists is fine; any other error stops the job.
set -eu
: "${DB:?}" "${POSTGRES_SEEDS:?}" "${DB_PORT:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
schemas=${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}

tool() { temporal-sql-tool --plugin "$DB" --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" "$@"; }

# Run tool "$@"; "already exists" is what a restart meets, anything else is fatal.
idempotent() {
  if ! out=$(tool "$@" 2>&1); then
    case "$out" in
      *"already exists"*) echo "setup-postgres: $* - already there" ;;
      *)
        echo "$out" >&2
        echo "setup-postgres: failed: temporal-sql-tool $*" >&2
        exit 1
        ;;
    esac
  fi
}

for db in temporal temporal_visibility trip_services; do
  idempotent --db "$db" create
done
idempotent --db temporal setup-schema -v 0.0
tool --db temporal update-schema -d "$schemas/temporal/versioned"
idempotent --db temporal_visibility setup-schema -v 0.0
tool --db temporal_visibility update-schema -d "$schemas/visibility/versioned"
echo "schemas ready"
