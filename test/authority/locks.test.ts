import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  checkLockMessage,
  describeTarget,
  findLock,
  isLockActive,
  type Lock,
  type LockTarget,
  lockCovers,
  lockedMessage,
  normalizeSerial,
  parseLockTarget,
  subjectOf,
} from '../../src/authority/locks.js'
import { isWritError } from '../../src/errors.js'
import type { PeerIdentity, WritClaims } from '../../src/identity/types.js'

const NOW = Date.parse('2026-03-01T12:00:00Z')
const INSTANCE = '1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b'

function lock(target: LockTarget, expires?: string): Lock {
  return {
    id: 'lock-000000000001',
    target,
    message: 'key leaked',
    created: new Date(NOW - 60_000).toISOString(),
    createdBy: 'cli:test',
    ...(expires === undefined ? {} : { expires }),
  }
}

function peer(
  spiffePath: string,
  claims: Partial<WritClaims> = {},
  serial = '3fa9c2',
): PeerIdentity {
  const name = spiffePath.split('/')[2] ?? 'x'
  return {
    spiffeId: `spiffe://writ.test${spiffePath}`,
    name,
    serial,
    notBefore: new Date(NOW - 60_000),
    notAfter: new Date(NOW + 3_600_000),
    claims: {
      version: 1,
      kind: 'bot',
      roles: ['reader'],
      traits: {},
      depth: 0,
      generation: 1,
      accessRequests: [],
      ...claims,
    },
  }
}

function rejects(run: () => unknown, code: string, value: string): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.ok(error.message.includes(value), `message does not name ${value}: ${error.message}`)
    return true
  })
}

describe('lock matching', () => {
  const bot = peer('/bot/ci-agent', { botInstance: INSTANCE, roles: ['reader', 'writer'] })
  const task = peer(
    '/bot/ci-agent/task/t-1/task/t-2',
    { task: { id: 't-2', reason: 'fix' }, parentSerial: '0a0b', depth: 2 },
    'c0ffee',
  )
  const user = peer('/user/alice', { kind: 'user' })

  const cases: [name: string, target: LockTarget, identity: PeerIdentity, covered: boolean][] = [
    ['bot covers its certificate', { bot: 'ci-agent' }, bot, true],
    ['bot covers its tasks', { bot: 'ci-agent' }, task, true],
    ['bot skips another bot', { bot: 'other' }, bot, false],
    ['bot skips a user of that name', { bot: 'alice' }, user, false],
    ['user covers the user', { user: 'alice' }, user, true],
    ['user skips a bot of that name', { user: 'ci-agent' }, bot, false],
    ['bot instance covers it', { botInstance: INSTANCE }, bot, true],
    [
      'bot instance skips others',
      { botInstance: '00000000-0000-4000-8000-000000000000' },
      bot,
      false,
    ],
    ['role covers a holder', { role: 'writer' }, bot, true],
    ['role skips a non-holder', { role: 'admin' }, bot, false],
    ['task covers the task', { task: 't-2' }, task, true],
    ['task covers delegated tasks', { task: 't-1' }, task, true],
    ['task skips the parent bot', { task: 't-1' }, bot, false],
    ['serial covers the certificate', { serial: '3fa9c2' }, bot, true],
    ['serial covers child certificates', { serial: 'a0b' }, task, true],
    ['serial skips others', { serial: '3fa9c3' }, bot, false],
    ['token never covers a certificate', { token: 'ci-agent-1234' }, bot, false],
  ]
  for (const [name, target, identity, covered] of cases) {
    test(name, () => {
      assert.equal(lockCovers(lock(target), subjectOf(identity)), covered)
    })
  }

  test('token covers a join with it', () => {
    assert.equal(lockCovers(lock({ token: 'ci-agent-1234' }), { token: 'ci-agent-1234' }), true)
    assert.equal(lockCovers(lock({ token: 'ci-agent-1234' }), { token: 'ci-agent-9999' }), false)
  })

  test('findLock returns the covering lock', () => {
    const locks = [lock({ bot: 'other' }), { ...lock({ role: 'reader' }), id: 'lock-2' }]
    assert.equal(findLock(locks, subjectOf(bot), NOW)?.id, 'lock-2')
    assert.equal(findLock(locks.slice(0, 1), subjectOf(bot), NOW), undefined)
  })

  test('expired lock covers nothing', () => {
    const expired = lock({ bot: 'ci-agent' }, new Date(NOW - 1).toISOString())
    assert.equal(isLockActive(expired, NOW), false)
    assert.equal(findLock([expired], subjectOf(bot), NOW), undefined)
  })

  test('lock active until expiry', () => {
    const later = lock({ bot: 'ci-agent' }, new Date(NOW + 1).toISOString())
    assert.equal(isLockActive(later, NOW), true)
    assert.equal(isLockActive(lock({ bot: 'ci-agent' }), NOW), true)
  })

  test('unreadable expiry keeps lock', () => {
    assert.equal(isLockActive(lock({ bot: 'ci-agent' }, 'not a time'), NOW), true)
  })

  test('subject reads the SPIFFE path', () => {
    const subject = subjectOf(task)
    assert.equal(subject.bot, 'ci-agent')
    assert.equal(subject.user, undefined)
    assert.deepEqual(subject.tasks, ['t-1', 't-2'])
    assert.deepEqual(subject.serials, ['c0ffee', '0a0b'])
  })
})

describe('lock targets', () => {
  test('serial is normalised', () => {
    assert.deepEqual(parseLockTarget('serial', '00:3F:A9:C2'), { serial: '3fa9c2' })
    assert.equal(normalizeSerial('0'), '0')
    assert.equal(normalizeSerial('xyz'), undefined)
  })

  test('bot instance is lowercased', () => {
    assert.deepEqual(parseLockTarget('botInstance', INSTANCE.toUpperCase()), {
      botInstance: INSTANCE,
    })
  })

  const invalid: [kind: Parameters<typeof parseLockTarget>[0], value: string, flag: string][] = [
    ['bot', 'ci agent', '--bot'],
    ['user', '..', '--user'],
    ['task', 'a/b', '--task'],
    ['role', 'Admin', '--role'],
    ['token', 'tok_1', '--token'],
    ['serial', 'zz:11', '--serial'],
    ['botInstance', 'not-a-uuid', '--bot-instance'],
  ]
  for (const [kind, value, flag] of invalid) {
    test(`invalid ${flag} is rejected`, () => {
      rejects(() => parseLockTarget(kind, value), 'lock.invalid_target', JSON.stringify(value))
      rejects(() => parseLockTarget(kind, value), 'lock.invalid_target', flag)
    })
  }

  test('target is described', () => {
    assert.equal(describeTarget({ bot: 'ci-agent' }), 'bot "ci-agent"')
    assert.equal(describeTarget({ botInstance: INSTANCE }), `bot instance "${INSTANCE}"`)
  })
})

describe('lock messages', () => {
  test('missing message is rejected', () => {
    rejects(() => checkLockMessage(undefined), 'lock.message_missing', '--message')
    rejects(() => checkLockMessage('   '), 'lock.message_missing', '--message')
  })

  test('control character is rejected', () => {
    rejects(() => checkLockMessage('line one\nline two'), 'lock.invalid_message', 'U+000A')
  })

  test('long message is rejected', () => {
    rejects(() => checkLockMessage('x'.repeat(1001)), 'lock.invalid_message', '1001')
  })

  test('message is trimmed', () => {
    assert.equal(checkLockMessage('  key leaked  '), 'key leaked')
  })

  test('locked message names lock', () => {
    assert.equal(
      lockedMessage('renewal refused', lock({ bot: 'ci-agent' })),
      'renewal refused: bot "ci-agent" is locked (lock lock-000000000001): key leaked',
    )
  })
})
