'use strict';
/**
 * The car-rental service's activities, served to temporal-saga's trip saga from
 * Node.js: `bookCar` (a saga step) and `cancelCar` (its compensation).
 *
 * Like the Python services they keep an idempotent ledger, keyed by the step's
 * idempotency key, computed here exactly as temporal_saga.idempotency_key() does:
 * `<workflow id>/<run id>/<activity id without "/compensate">`. So a retried booking
 * books once, a cancel finds what its booking did (even when the booking's result
 * never reached the saga), and a booking that arrives after its cancel is refused.
 */
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { Context } = require('@temporalio/activity');
const { ApplicationFailure } = require('@temporalio/common');

const COMPENSATION_SUFFIX = '/compensate';

/** The key temporal_saga.idempotency_key() gives the same step in Python. */
function idempotencyKey() {
  const info = Context.current().info;
  const step = info.activityId.endsWith(COMPENSATION_SUFFIX)
    ? info.activityId.slice(0, -COMPENSATION_SUFFIX.length)
    : info.activityId;
  return `${info.workflowExecution.workflowId}/${info.workflowExecution.runId}/${step}`;
}

/** The ledger: one JSON line per change, replayed on every call (one process). */
function ledgerFile() {
  const dir = process.env.TRIP_DATA_DIR || path.join(__dirname, '..', '..', 'data', 'services');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, 'car-rental.jsonl');
}

function readLedger() {
  const rows = new Map();
  const file = ledgerFile();
  if (!fs.existsSync(file)) return rows;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let row;
    try {
      row = JSON.parse(line);
    } catch {
      continue; // a line cut short by a crash: it never took effect
    }
    rows.set(row.key, { ...rows.get(row.key), ...row });
  }
  return rows;
}

function append(row) {
  const fd = fs.openSync(ledgerFile(), 'a');
  try {
    fs.writeSync(fd, JSON.stringify(row) + '\n');
    fs.fsyncSync(fd); // on disk before the saga hears of it
  } finally {
    fs.closeSync(fd);
  }
}

/** Misbehave as the request asks (the Python services' faults, same names). */
async function simulate(fault, undo) {
  const info = Context.current().info;
  if (undo && fault === 'down') fault = 'flaky'; // back for the cancel, after one more failure
  if (undo && fault === 'no_refund') {
    throw ApplicationFailure.create({
      message: 'car-rental: refund refused after pick-up',
      type: 'RefundRefused',
      nonRetryable: true,
    });
  }
  if (fault === 'slow') {
    for (let i = 0; i < 10; i++) {
      Context.current().heartbeat();
      await Context.current().sleep(100); // rejects when the activity is cancelled
    }
  }
  if (fault === 'down' || (fault === 'flaky' && info.attempt === 1)) {
    throw ApplicationFailure.create({
      message: 'car-rental is unavailable',
      type: 'ServiceUnavailable',
    });
  }
}

/**
 * Rent a car: `{renter, city, pickup: "YYYY-MM-DD", days, fault?}` → the booking.
 */
async function bookCar(request) {
  await simulate(request.fault, false);
  const key = idempotencyKey();
  const existing = readLedger().get(key);
  if (existing && existing.status === 'CANCELLED') {
    throw ApplicationFailure.create({
      message: 'the booking was cancelled before it arrived',
      type: 'BookingRefused',
      nonRetryable: true,
    });
  }
  let bookingId = existing && existing.booking_id;
  if (!bookingId) {
    bookingId = 'CR-' + crypto.randomBytes(4).toString('hex').toUpperCase();
    append({ key, booking_id: bookingId, holder: request.renter, city: request.city, status: 'BOOKED' });
  }
  console.log(`car-rental: booked ${bookingId} for ${request.renter}`);
  return {
    booking_id: bookingId,
    renter: request.renter,
    city: request.city,
    pickup: request.pickup,
    days: request.days,
    price: 45 * request.days,
  };
}

/** Cancel this step's rental (nothing to cancel is fine: a tombstone refuses it later). */
async function cancelCar(request) {
  await simulate(request.fault, true);
  const key = idempotencyKey();
  const existing = readLedger().get(key);
  if (!existing || existing.status !== 'CANCELLED') {
    append({ key, holder: request.renter, status: 'CANCELLED' });
  }
  console.log(`car-rental: cancelled the rental of ${request.renter}`);
}

module.exports = { bookCar, cancelCar, idempotencyKey, readLedger, ledgerFile };
