/**
 * Locks: what they target, how their input is checked, and which identities they cover. This
 * module is pure; storing, auditing and enforcing locks happen in `lock-service.ts`, the
 * authority and the server.
 */
import { WritError } from '../errors.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { PeerIdentity } from '../identity/types.js'

/** The things a lock can target, in the order `writ locks` shows them. */
export const LOCK_TARGET_KINDS = [
  'user',
  'bot',
  'botInstance',
  'role',
  'task',
  'serial',
  'token',
] as const
export type LockTargetKind = (typeof LOCK_TARGET_KINDS)[number]

/** A lock target with exactly one field set, such as `{ bot: 'ci-agent' }`. */
export type LockTarget = { [K in LockTargetKind]: { [P in K]: string } }[LockTargetKind]

/** A lock as stored and listed. While it is active, nothing it covers may join, renew or call. */
export interface Lock {
  /** Random id such as `lock-3f9a1c2b7d4e`, used by `writ unlock`. */
  id: string
  target: LockTarget
  /** Shown to the locked caller and in `writ locks`. */
  message: string
  /** ISO 8601 creation time. */
  created: string
  /** ISO 8601 time after which the lock no longer applies; absent for a lock until `writ unlock`. */
  expires?: string
  /** The creator, such as `cli:alice` or `authority`. */
  createdBy: string
}

/**
 * The values a lock is compared with, read from a certificate or, before any certificate exists,
 * from a join request. A lock covers the subject when its target equals one of these values.
 */
export interface LockSubject {
  user?: string
  bot?: string
  botInstance?: string
  roles?: readonly string[]
  /** Every task id in the SPIFFE ID path, so a lock on a task also covers its delegated tasks. */
  tasks?: readonly string[]
  /** The certificate's serial and its parent's, so a lock on a serial covers task certificates. */
  serials?: readonly string[]
  /** The JoinToken name, during a join only. */
  token?: string
}

/** Maximum length of a lock message, in characters. */
export const MAX_LOCK_MESSAGE_LENGTH = 1000

const RESOURCE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const PATH_SEGMENT = /^[A-Za-z0-9._-]+$/
const BOT_INSTANCE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** The flag of each target kind on `writ lock`, for messages that tell the user what to type. */
export const LOCK_TARGET_FLAGS: Record<LockTargetKind, string> = {
  user: '--user',
  bot: '--bot',
  botInstance: '--bot-instance',
  role: '--role',
  task: '--task',
  serial: '--serial',
  token: '--token',
}

/** Returns the kind and value of a lock target. */
export function targetEntry(target: LockTarget): [LockTargetKind, string] {
  const [entry] = Object.entries(target) as [LockTargetKind, string][]
  if (entry === undefined) throw new TypeError('lock target has no field')
  return entry
}

/** Formats a target for messages and listings, such as `bot "ci-agent"`. */
export function describeTarget(target: LockTarget): string {
  const [kind, value] = targetEntry(target)
  const label = kind === 'botInstance' ? 'bot instance' : kind
  return `${label} ${JSON.stringify(value)}`
}

/**
 * Builds a target from one kind and value, normalising serials to lowercase hex without leading
 * zeros or colons. Throws `lock.invalid_target` naming the value when it cannot match anything.
 */
export function parseLockTarget(kind: LockTargetKind, value: string): LockTarget {
  const flag = LOCK_TARGET_FLAGS[kind]
  const invalid = (rule: string) =>
    new WritError('lock.invalid_target', `invalid ${flag} ${JSON.stringify(value)}: ${rule}`, {
      kind,
      value,
    })
  const text = value.trim()
  switch (kind) {
    case 'role':
    case 'token':
      if (text.length > 63 || !RESOURCE_NAME.test(text)) {
        throw invalid(
          `use the ${kind === 'role' ? 'Role' : 'JoinToken'} name as writ get ${kind === 'role' ? 'roles' : 'jointokens'} lists it: lowercase letters, digits and '-'`,
        )
      }
      return kind === 'role' ? { role: text } : { token: text }
    case 'user':
    case 'bot':
    case 'task':
      if (!PATH_SEGMENT.test(text) || text === '.' || text === '..') {
        throw invalid(
          `use the ${kind} name as it appears in the SPIFFE ID: letters, digits, '.', '-' and '_'`,
        )
      }
      return { [kind]: text } as LockTarget
    case 'botInstance':
      if (!BOT_INSTANCE.test(text.toLowerCase())) {
        throw invalid(
          'use the bot instance UUID that the audit log shows, such as 1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b',
        )
      }
      return { botInstance: text.toLowerCase() }
    case 'serial': {
      const serial = normalizeSerial(text)
      if (serial === undefined) {
        throw invalid(
          'use the certificate serial number in hexadecimal, such as 3fa9c2 or 3F:A9:C2',
        )
      }
      return { serial }
    }
  }
}

/** Lowercase hex without colons or leading zeros, or undefined when `text` is not hex. */
export function normalizeSerial(text: string): string | undefined {
  const hex = text.trim().replaceAll(':', '').toLowerCase()
  if (!/^[0-9a-f]+$/.test(hex) || hex.length > 128) return undefined
  return hex.replace(/^0+(?=.)/, '')
}

/**
 * Checks a lock message: required, at most `MAX_LOCK_MESSAGE_LENGTH` characters, and free of
 * control characters because it is printed to terminals and sent to clients.
 */
export function checkLockMessage(message: string | undefined): string {
  const text = message?.trim() ?? ''
  if (text === '') {
    throw new WritError(
      'lock.message_missing',
      'a lock needs --message TEXT saying why, which the locked caller sees',
    )
  }
  if (text.length > MAX_LOCK_MESSAGE_LENGTH) {
    throw new WritError(
      'lock.invalid_message',
      `lock message is ${text.length} characters long; use at most ${MAX_LOCK_MESSAGE_LENGTH}`,
      { length: text.length },
    )
  }
  const control = /[\u0000-\u001f\u007f]/.exec(text)
  if (control) {
    const code = `U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`
    throw new WritError(
      'lock.invalid_message',
      `lock message contains the control character ${code}; use one line of plain text`,
      { character: code },
    )
  }
  return text
}

/** Reports whether a lock applies at `now`: it has no expiry or has not reached it. */
export function isLockActive(lock: Lock, now: number): boolean {
  if (lock.expires === undefined) return true
  const expires = Date.parse(lock.expires)
  // An unreadable expiry keeps the lock in force, so a damaged row never unlocks anything.
  return Number.isNaN(expires) || now < expires
}

/** Reports whether the lock's target equals one of the subject's values. */
export function lockCovers(lock: Lock, subject: LockSubject): boolean {
  const [kind, value] = targetEntry(lock.target)
  switch (kind) {
    case 'user':
      return subject.user === value
    case 'bot':
      return subject.bot === value
    case 'botInstance':
      return subject.botInstance === value
    case 'role':
      return subject.roles?.includes(value) ?? false
    case 'task':
      return subject.tasks?.includes(value) ?? false
    case 'serial':
      return subject.serials?.some((serial) => normalizeSerial(serial) === value) ?? false
    case 'token':
      return subject.token === value
  }
}

/** Returns the first active lock that covers the subject, or undefined. */
export function findLock(
  locks: readonly Lock[],
  subject: LockSubject,
  now: number,
): Lock | undefined {
  return locks.find((lock) => isLockActive(lock, now) && lockCovers(lock, subject))
}

/**
 * Reads what locks can match from a verified certificate: the principal name from the SPIFFE ID
 * (`/user/<name>` or `/bot/<name>`), every `/task/<id>` segment, roles, bot instance and serials.
 */
export function subjectOf(identity: PeerIdentity): LockSubject {
  const subject: LockSubject = {
    roles: identity.claims.roles,
    serials:
      identity.claims.parentSerial === undefined
        ? [identity.serial]
        : [identity.serial, identity.claims.parentSerial],
  }
  if (identity.claims.botInstance !== undefined) subject.botInstance = identity.claims.botInstance
  const parsed = SpiffeId.tryParse(identity.spiffeId)
  const segments = parsed.ok ? parsed.id.segments : []
  const [kind, name] = segments
  if (kind === 'user' && name !== undefined) subject.user = name
  if (kind === 'bot' && name !== undefined) subject.bot = name
  const tasks: string[] = []
  for (let index = 2; index + 1 < segments.length; index += 2) {
    if (segments[index] === 'task') tasks.push(segments[index + 1] as string)
  }
  if (identity.claims.task !== undefined && !tasks.includes(identity.claims.task.id)) {
    tasks.push(identity.claims.task.id)
  }
  subject.tasks = tasks
  return subject
}

/**
 * Builds the message a locked caller receives, naming the lock and its target so an operator can
 * find and remove it.
 */
export function lockedMessage(action: string, lock: Lock): string {
  return `${action}: ${describeTarget(lock.target)} is locked (lock ${lock.id}): ${lock.message}`
}
