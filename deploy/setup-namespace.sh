#!/bin/sh
# The namespace and the SagaStatus search attribute the trip saga keeps, and, with
# INSURER_NAMESPACE set, another team's namespace (the insurer's) and the Nexus
# endpoint the trip saga buys insurance through (INSURER_ENDPOINT, default
# trip-insurer, routed to INSURER_TASK_QUEUE, default insurer). Waits for the
# cluster to answer first (up to TEMPORAL_WAIT_SECONDS, default 300: a first start,
# with the database being set up, can take minutes), and retries each step, so a slow
# cluster does not use up the job's restarts. Safe to run again.
set -eu
namespace=${TEMPORAL_NAMESPACE:-default}
wait_for=${TEMPORAL_WAIT_SECONDS:-300}
interval=${TEMPORAL_WAIT_INTERVAL:-2}

waited=0
until temporal operator cluster health >/dev/null 2>&1; do
  if [ "$waited" -ge "$wait_for" ]; then
    echo "setup-namespace: the cluster at ${TEMPORAL_ADDRESS:-?} is not healthy after ${wait_for}s" >&2
    exit 1
  fi
  sleep "$interval"
  waited=$((waited + interval))
done

# Run "$@" until it succeeds, 10 tries (a new namespace takes a moment to be usable).
retry() {
  tries=0
  until "$@"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then
      echo "setup-namespace: gave up: $*" >&2
      return 1
    fi
    sleep "$interval"
  done
}

has_namespace() { temporal operator namespace describe --namespace "$1" >/dev/null 2>&1; }
create_namespace() { temporal operator namespace create --namespace "$1" --retention 7d; }
has_attribute() {
  temporal operator search-attribute list --namespace "$namespace" | grep -q SagaStatus
}
create_attribute() {
  has_attribute || temporal operator search-attribute create --namespace "$namespace" \
    --name SagaStatus --type Keyword
}

has_namespace "$namespace" || retry create_namespace "$namespace"
retry create_attribute
echo "namespace $namespace ready"

insurer=${INSURER_NAMESPACE:-}
if [ -n "$insurer" ]; then
  endpoint=${INSURER_ENDPOINT:-trip-insurer}
  has_endpoint() { temporal operator nexus endpoint get --name "$endpoint" >/dev/null 2>&1; }
  create_endpoint() {
    temporal operator nexus endpoint create --name "$endpoint" \
      --target-namespace "$insurer" --target-task-queue "${INSURER_TASK_QUEUE:-insurer}"
  }
  has_namespace "$insurer" || retry create_namespace "$insurer"
  has_endpoint || retry create_endpoint
  echo "namespace $insurer and Nexus endpoint $endpoint ready"
fi
