#!/bin/sh
# The default namespace, and the SagaStatus search attribute the trip saga keeps.
set -eu
temporal operator namespace describe --namespace default >/dev/null 2>&1 \
  || temporal operator namespace create --namespace default --retention 7d
temporal operator search-attribute list --namespace default | grep -q SagaStatus \
  || temporal operator search-attribute create --namespace default --name SagaStatus --type Keyword
echo "namespace ready"
