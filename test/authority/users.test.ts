import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, test } from 'node:test'
import { createCsrPem, generateAgentKeys } from '../../src/agent/keys.js'
import { USER_THROTTLE } from '../../src/authority/login-throttle.js'
import { decodeBase32, hotp, totp, totpStep, WRIT_TOTP } from '../../src/authority/totp.js'
import {
  createUserService,
  LOGIN_FAILED_MESSAGE,
  type RequestPeer,
  type UserService,
} from '../../src/authority/users.js'
import { isWritError, type WritError } from '../../src/errors.js'
import { pemBlocks } from '../../src/identity/pem.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import { silentLogger } from '../../src/log.js'
import { API_VERSION } from '../../src/policy/resource.js'
import { type AuthorityFixture, openAuthorityFixture } from './authority-fixture.js'

const PASSWORD = 'a long enough password'
const PEER: RequestPeer = { address: '127.0.0.1', text: '127.0.0.1:50000' }

let fixture: AuthorityFixture
let users: UserService
let csrPem: string

before(async () => {
  fixture = await openAuthorityFixture()
  users = createUserService({
    ca: fixture.ca,
    store: fixture.store,
    audit: fixture.audit,
    clock: Date.now,
    logger: silentLogger,
  })
  csrPem = createCsrPem(await generateAgentKeys(), { commonName: 'placeholder' })
  await fixture.addRole('reader', '2h')
  await fixture.addRole('writer')
})

after(() => fixture.close())

/** Stores a User and an enrollment code for it, returning the code. */
async function addUser(name: string, roles: string[], code = `CODE${name.toUpperCase()}X`) {
  await fixture.store.putResource({
    apiVersion: API_VERSION,
    kind: 'User',
    metadata: { name },
    spec: { roles, traits: { team: ['payments'] } },
  })
  const codeHash = createHash('sha256').update(code.replace(/[\s-]/g, '')).digest('hex')
  await fixture.store.putEnrollmentCode({ codeHash, user: name, expiresAt: Date.now() + 60_000 })
  return code
}

/** Adds and enrolls a user, returning the TOTP secret. */
async function enrolled(name: string, roles = ['reader']): Promise<Buffer> {
  const code = await addUser(name, roles)
  const result = await users.enroll({ user: name, code, password: PASSWORD }, PEER)
  return decodeBase32(result.totpSecret)
}

function wrongCode(secret: Buffer): string {
  const step = totpStep(Date.now())
  const valid = [-1, 0, 1].map((offset) => hotp(secret, step + offset, WRIT_TOTP))
  return ['000000', '111111', '222222'].find((code) => !valid.includes(code)) as string
}

function loginError(code: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal((error as WritError).code, code)
    return true
  }
}

function lastAudit(type: string) {
  return fixture.audit.events.filter((event) => event.type === type).at(-1)
}

test('login issues a user certificate with the roles', async () => {
  const secret = await enrolled('alice', ['reader', 'writer'])
  const certificate = await users.login(
    { user: 'alice', password: PASSWORD, otp: totp(secret, Date.now()), csrPem },
    PEER,
  )
  assert.equal(certificate.spiffeId, 'spiffe://writ.test/user/alice')
  const identity = identityFromCertificate(
    pemBlocks(certificate.certificate, ['CERTIFICATE'])[0] as Buffer,
  )
  assert.equal(identity.claims.kind, 'user')
  assert.equal(identity.name, 'alice')
  assert.deepEqual(identity.claims.roles, ['reader', 'writer'])
  assert.deepEqual(identity.claims.traits, { team: ['payments'] })
  // reader's maxTtl of 2h caps the 8 h default.
  const lifetime = identity.notAfter.getTime() - Date.now()
  assert.ok(lifetime <= 2 * 3600_000, `lifetime ${lifetime} ms exceeds 2 h`)
  assert.ok(lifetime > 2 * 3600_000 - 120_000, `lifetime ${lifetime} ms is far below 2 h`)
  assert.equal(lastAudit('login')?.outcome, 'success')
  assert.equal(lastAudit('certificate.issue')?.caller?.kind, 'user')
})

test('login gives one message for every wrong credential', async () => {
  const secret = await enrolled('carol')
  await addUser('dave', ['reader'])
  const attempts = [
    {
      name: 'wrong password',
      user: 'carol',
      password: 'not the password',
      otp: totp(secret, Date.now()),
      reason: 'password_wrong',
    },
    {
      name: 'wrong code',
      user: 'carol',
      password: PASSWORD,
      otp: wrongCode(secret),
      reason: 'otp_wrong',
    },
    {
      name: 'unknown user',
      user: 'nobody',
      password: PASSWORD,
      otp: '123456',
      reason: 'user_unknown',
    },
    {
      name: 'not enrolled',
      user: 'dave',
      password: PASSWORD,
      otp: '123456',
      reason: 'not_enrolled',
    },
  ]
  for (const attempt of attempts) {
    await assert.rejects(users.login({ ...attempt, csrPem }, PEER), (error: unknown) => {
      assert.ok(isWritError(error, 'login.failed'), `${attempt.name}: ${String(error)}`)
      assert.equal(error.message, LOGIN_FAILED_MESSAGE, attempt.name)
      assert.equal(error.fields.reason, undefined, `${attempt.name} hides the reason`)
      return true
    })
    const event = lastAudit('login')
    assert.equal(event?.outcome, 'denied', attempt.name)
    assert.equal(event?.reason, attempt.reason, attempt.name)
  }
})

test('login rejects a reused TOTP code', async () => {
  const secret = await enrolled('erin')
  const otp = totp(secret, Date.now())
  await users.login({ user: 'erin', password: PASSWORD, otp, csrPem }, PEER)
  await assert.rejects(
    users.login({ user: 'erin', password: PASSWORD, otp, csrPem }, PEER),
    loginError('login.failed'),
  )
  assert.equal(lastAudit('login')?.reason, 'otp_reused')
  // The next step's code is still accepted: reuse is refused, not every later login.
  const next = totp(secret, Date.now() + 30_000)
  await users.login({ user: 'erin', password: PASSWORD, otp: next, csrPem }, PEER)
})

test('login throttles a user after repeated failures', async () => {
  const secret = await enrolled('frank')
  const peer = { address: '127.0.0.9', text: '127.0.0.9:1' }
  for (let attempt = 0; attempt < USER_THROTTLE.freeFailures; attempt++) {
    await assert.rejects(
      users.login({ user: 'frank', password: 'wrong password!', otp: '123456', csrPem }, peer),
      loginError('login.failed'),
    )
  }
  await assert.rejects(
    users.login({ user: 'frank', password: PASSWORD, otp: totp(secret, Date.now()), csrPem }, peer),
    (error: unknown) => {
      assert.ok(isWritError(error, 'login.throttled'))
      assert.match(error.message, /too many failed logins .* try again after \d{4}-/)
      assert.equal(typeof error.fields.retryAfterSeconds, 'number')
      return true
    },
  )
  const event = lastAudit('login')
  assert.equal(event?.reason, 'throttled')
  assert.equal(event?.details?.throttleKey, 'user:frank')
})

test('enroll rejects a reused code', async () => {
  const code = await addUser('grace', ['reader'])
  await users.enroll({ user: 'grace', code, password: PASSWORD }, PEER)
  await assert.rejects(
    users.enroll({ user: 'grace', code, password: PASSWORD }, PEER),
    (error: unknown) => {
      assert.ok(isWritError(error, 'enroll.code_used'))
      assert.match(error.message, /already been used/)
      assert.match(error.message, /writ users add grace/)
      return true
    },
  )
  assert.equal(lastAudit('user.enroll')?.reason, 'code_used')
})

test("enroll rejects another user's code", async () => {
  const code = await addUser('heidi', ['reader'])
  await addUser('ivan', ['reader'])
  await assert.rejects(
    users.enroll({ user: 'ivan', code, password: PASSWORD }, PEER),
    loginError('enroll.code_unknown'),
  )
})

test('enroll rejects a short password before using the code', async () => {
  const code = await addUser('judy', ['reader'])
  await assert.rejects(
    users.enroll({ user: 'judy', code, password: 'short' }, PEER),
    loginError('password.too_short'),
  )
  const result = await users.enroll({ user: 'judy', code, password: PASSWORD }, PEER)
  assert.equal(result.user, 'judy')
  assert.match(result.otpauthUri, /^otpauth:\/\/totp\/Writ%20writ\.test:judy\?secret=/)
})

test('login rejects a user name that cannot exist', async () => {
  await assert.rejects(
    users.login({ user: 'bad name!', password: PASSWORD, otp: '123456', csrPem }, PEER),
    (error: unknown) => isWritError(error, 'request.invalid') && /bad name!/.test(error.message),
  )
})
