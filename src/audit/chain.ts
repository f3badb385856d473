import { createHash } from 'node:crypto'
import { canonicalJson } from '../gateway/canonical-json.js'
import type { AuditEvent } from './types.js'

/** The `prevHash` of the first event in the chain: `sha256:` followed by 64 zeros. */
export const GENESIS_HASH = `sha256:${'0'.repeat(64)}`

/**
 * Computes the chain hash of an event.
 *
 * Rule: `hash = 'sha256:' + hex(SHA-256(prevHash + '\n' + C))`, where `C` is the canonical JSON
 * of the event without its `hash` field. Canonical JSON sorts object keys at every level, has no
 * whitespace, and leaves out properties whose value is `undefined`. Because `C` also contains
 * `prevHash`, `seq`, `id` and `time`, changing any stored field or removing an event breaks the
 * chain from that point on.
 */
export function hashEvent(event: Omit<AuditEvent, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...content } = event
  const digest = createHash('sha256')
    .update(`${event.prevHash}\n${canonicalJson(content)}`)
    .digest('hex')
  return `sha256:${digest}`
}

/**
 * The store metadata key that holds `{ seq, hash }` of the newest audit event, written in the
 * same transaction as the event, so verification detects events deleted from the end of the log.
 */
export const AUDIT_HEAD_META_KEY = 'audit_head'
