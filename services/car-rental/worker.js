'use strict';
/**
 * The car-rental service's Temporal worker (Node.js): serves `bookCar` and
 * `cancelCar` on the `car-rental` task queue, for temporal-saga's trip saga.
 *
 *     TEMPORAL_ADDRESS=localhost:7233 node worker.js [--task-queue car-rental]
 *
 * Only activities: the saga (a Python workflow) calls them by name. Payloads are
 * JSON, as the Python side's pydantic converter writes them; with TEMPORAL_SAGA_KEYS
 * (or TEMPORAL_SAGA_KEY_FILE) they are encrypted, with the same codec as the Python
 * side (codec.js).
 */
const { NativeConnection, Worker } = require('@temporalio/worker');
const activities = require('./activities');
const { codecFromEnv } = require('./codec');

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at > 0 && process.argv[at + 1] ? process.argv[at + 1] : fallback;
}

async function main() {
  const address = process.env.TEMPORAL_ADDRESS || 'localhost:7233';
  const namespace = process.env.TEMPORAL_NAMESPACE || 'default';
  const taskQueue = option('--task-queue', process.env.CAR_RENTAL_TASK_QUEUE || 'car-rental');
  const codec = codecFromEnv(); // before connecting: a bad key fails at once
  const connection = await NativeConnection.connect({ address });
  const worker = await Worker.create({
    connection,
    namespace,
    taskQueue,
    activities: { bookCar: activities.bookCar, cancelCar: activities.cancelCar },
    dataConverter: codec ? { payloadCodecs: [codec] } : undefined,
  });
  const encrypted = codec ? `, payloads encrypted (key '${codec.current}')` : '';
  console.log(
    `car-rental: serving task queue '${taskQueue}' at ${address} (namespace '${namespace}')${encrypted}`,
  );
  await worker.run(); // until SIGINT/SIGTERM: then in-flight activities finish
  await connection.close();
  console.log('car-rental: stopped');
}

main().catch((err) => {
  console.error(`car-rental: ${err.message || err}`);
  process.exit(1);
});
