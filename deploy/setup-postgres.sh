#!/bin/sh
# Create Temporal's two PostgreSQL databases and bring their schemas up to date,
# with the official temporal-sql-tool (run by the admin-tools image).
set -eu
tool() { temporal-sql-tool --plugin postgres12 --ep postgresql -u temporal -p 5432 "$@"; }
for db in temporal temporal_visibility; do
  tool --db "$db" create || true   # already there on a restart
done
tool --db temporal setup-schema -v 0.0 || true
tool --db temporal update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned
tool --db temporal_visibility setup-schema -v 0.0 || true
tool --db temporal_visibility update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned
echo "schemas ready"
