'use strict';
/**
 * temporal-saga's payload encryption, for this Node.js worker: the same AES-256-GCM
 * codec and the same keys as the Python side (temporal_saga.encryption), so an
 * encrypted saga's car step can be read here and its result read back there.
 *
 * An encrypted payload is the serialised `Payload` protobuf, sealed with the key
 * named in its metadata `encryption-key-id` (the key id is also the additional
 * data); `data` = 12-byte nonce + ciphertext + 16-byte tag; encoding
 * `binary/encrypted`. Keys: TEMPORAL_SAGA_KEYS (`id:base64key,...`, the first one
 * encrypts) or TEMPORAL_SAGA_KEY_FILE (one entry per line).
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const { temporal } = require('@temporalio/proto');

const ENCODING = 'binary/encrypted';
const KEY_ID = 'encryption-key-id';
const NONCE = 12;
const TAG = 16;
const { Payload } = temporal.api.common.v1;

/** `id:base64key` entries (comma- or newline-separated), in order; throws on a bad one. */
function parseKeys(text, source) {
  const keys = new Map();
  for (const raw of text.replace(/\n/g, ',').split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    const at = entry.indexOf(':');
    const id = at > 0 ? entry.slice(0, at).trim() : '';
    if (!id) throw new Error(`${source}: expected 'id:base64key'`);
    const encoded = entry.slice(at + 1).trim();
    const key = Buffer.from(encoded, 'base64');
    if (key.length !== 32 || key.toString('base64') !== encoded) {
      throw new Error(`${source}: key '${id}' is not 32 bytes of base64`);
    }
    keys.set(id, key);
  }
  if (keys.size === 0) throw new Error(`${source}: no keys`);
  return keys;
}

/** The codec the environment configures, or null when no key is configured. */
function codecFromEnv(env = process.env) {
  if (env.TEMPORAL_SAGA_KEYS) {
    return new EncryptionCodec(parseKeys(env.TEMPORAL_SAGA_KEYS, 'TEMPORAL_SAGA_KEYS'));
  }
  if (env.TEMPORAL_SAGA_KEY_FILE) {
    const text = fs.readFileSync(env.TEMPORAL_SAGA_KEY_FILE, 'utf8');
    return new EncryptionCodec(parseKeys(text, env.TEMPORAL_SAGA_KEY_FILE));
  }
  return null;
}

class EncryptionCodec {
  constructor(keys) {
    this.keys = keys;
    this.current = keys.keys().next().value;
  }

  async encode(payloads) {
    const key = this.keys.get(this.current);
    return payloads.map((payload) => {
      const nonce = crypto.randomBytes(NONCE);
      const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce);
      cipher.setAAD(Buffer.from(this.current));
      const plain = Payload.encode(payload).finish();
      const sealed = Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: { encoding: Buffer.from(ENCODING), [KEY_ID]: Buffer.from(this.current) },
        data: Buffer.concat([nonce, sealed]),
      };
    });
  }

  async decode(payloads) {
    return payloads.map((payload) => {
      const encoding = payload.metadata && payload.metadata.encoding;
      if (!encoding || Buffer.from(encoding).toString() !== ENCODING) return payload;
      const keyId = Buffer.from(payload.metadata[KEY_ID] || []).toString();
      const key = this.keys.get(keyId);
      if (!key) throw new Error(`payload encrypted with unknown key '${keyId}'`);
      const data = Buffer.from(payload.data);
      const decipher = crypto.createDecipheriv('aes-256-gcm', key, data.subarray(0, NONCE));
      decipher.setAAD(Buffer.from(keyId));
      decipher.setAuthTag(data.subarray(data.length - TAG));
      const plain = Buffer.concat([
        decipher.update(data.subarray(NONCE, data.length - TAG)),
        decipher.final(), // throws if the payload was tampered with, or the key differs
      ]);
      return Payload.decode(plain);
    });
  }
}

module.exports = { EncryptionCodec, codecFromEnv, parseKeys };
