'use strict';
/**
 * Bring an event to a temporal-saga event step from Node.js: a webhook handler, or any
 * service written with the TypeScript SDK, sends the `saga_event` Workflow Update (to
 * get the saga's answer) or Signal (fire and forget).
 *
 *     TEMPORAL_ADDRESS=localhost:7233 node send_event.js WORKFLOW_ID EVENT [JSON] [--id ID] [--signal]
 *
 * Prints the saga's answer; a refusal (no step takes the event, an invalid payload...)
 * is printed on stderr with exit code 1. Payloads are JSON, as the Python side's
 * pydantic converter reads them; with TEMPORAL_SAGA_KEYS they are encrypted (codec.js).
 */
const { Connection, Client, WorkflowUpdateFailedError } = require('@temporalio/client');
const { codecFromEnv } = require('./codec');

async function sendEvent(client, workflowId, event, data, { id, signal } = {}) {
  const request = { event, data, id: id ?? null, by: 'node' };
  const handle = client.workflow.getHandle(workflowId);
  if (signal) {
    await handle.signal('saga_event', request);
    return null;
  }
  return handle.executeUpdate('saga_event', { args: [request] });
}

async function main() {
  const [workflowId, event, json] = process.argv.slice(2).filter((a, i, all) => {
    return !a.startsWith('--') && all[i - 1] !== '--id';
  });
  const at = process.argv.indexOf('--id');
  const id = at > 0 ? process.argv[at + 1] : undefined;
  const signal = process.argv.includes('--signal');
  const connection = await Connection.connect({
    address: process.env.TEMPORAL_ADDRESS || 'localhost:7233',
  });
  const codec = codecFromEnv();
  const client = new Client({
    connection,
    namespace: process.env.TEMPORAL_NAMESPACE || 'default',
    dataConverter: codec ? { payloadCodecs: [codec] } : undefined,
  });
  try {
    const answer = await sendEvent(client, workflowId, event, json ? JSON.parse(json) : null, {
      id,
      signal,
    });
    console.log(answer ?? `${event}: signalled`);
  } catch (err) {
    if (!(err instanceof WorkflowUpdateFailedError)) throw err;
    console.error(`refused: ${err.cause?.message ?? err.message}`);
    process.exitCode = 1;
  } finally {
    await connection.close();
  }
}

module.exports = { sendEvent };

if (require.main === module) {
  main().catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}
