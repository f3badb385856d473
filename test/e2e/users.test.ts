// End-to-end tests of people: `writ users add`, `writ users enroll` and `writ login` with a
// password and TOTP, run as the built CLI against a real `writ start`.
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { decodeBase32, hotp, totp, totpStep, WRIT_TOTP } from '../../src/authority/totp.js'
import { pemBlocks } from '../../src/identity/pem.js'
import { identityFromCertificate } from '../../src/identity/verify.js'
import {
  type AuditRecord,
  auditSearch,
  type CommandResult,
  type GatewaySetup,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
  TRUST_DOMAIN,
  temporaryDirectory,
} from './harness.js'

const PASSWORD = 'correct horse battery staple'
const LOGIN_FAILED = 'login failed: the user name, password or one-time code is wrong'

/** What `writ users add --json` prints. */
interface UserEnrollment {
  user: string
  roles: string[]
  code: string
  expires: string
  server: string
  caPin: string
}

let setup: GatewaySetup

before(async () => {
  setup = await startGatewaySetup('users')
})

after(async () => {
  await setup?.server.stop()
  removeTemporaryDirectories()
})

/** Returns one person's environment: their own WRIT_HOME and no inherited identity settings. */
function personEnv(home: string): Record<string, string> {
  return { WRIT_HOME: home, WRIT_IDENTITY: '', WRIT_SERVER: '' }
}

async function usersAdd(name: string, roles = 'e2e-reader'): Promise<UserEnrollment> {
  const result = await runWrit([
    'users',
    'add',
    name,
    '--roles',
    roles,
    '--json',
    '--data-dir',
    setup.dataDir,
  ])
  assert.equal(result.code, 0, result.stderr)
  return JSON.parse(result.stdout) as UserEnrollment
}

function enroll(home: string, name: string, code: string): Promise<CommandResult> {
  return runWrit(
    [
      'users',
      'enroll',
      '--server',
      setup.server.address,
      '--user',
      name,
      '--code',
      code,
      '--ca-pin',
      setup.server.caPin,
      '--password-stdin',
      '--json',
    ],
    { env: personEnv(home), input: `${PASSWORD}\n` },
  )
}

/** Adds and enrolls a person in a fresh WRIT_HOME; returns the home and the TOTP secret. */
async function enrolledPerson(name: string): Promise<{ home: string; secret: Buffer }> {
  const home = temporaryDirectory(`home-${name}`)
  const added = await usersAdd(name)
  const result = await enroll(home, name, added.code)
  assert.equal(result.code, 0, result.stderr)
  const body = JSON.parse(result.stdout) as { totpSecret: string; otpauthUri: string }
  return { home, secret: decodeBase32(body.totpSecret) }
}

function login(
  home: string,
  name: string,
  otp: string,
  password = PASSWORD,
): Promise<CommandResult> {
  return runWrit(
    [
      'login',
      '--server',
      setup.server.address,
      '--user',
      name,
      '--password-stdin',
      '--otp',
      otp,
      '--json',
    ],
    { env: personEnv(home), input: `${password}\n` },
  )
}

/** Returns a 6-digit code that is valid for none of the steps the server accepts now. */
function wrongCode(secret: Buffer): string {
  const step = totpStep(Date.now())
  const valid = [-2, -1, 0, 1, 2].map((offset) => hotp(secret, step + offset, WRIT_TOTP))
  return ['000000', '111111', '222222', '333333'].find((code) => !valid.includes(code)) as string
}

async function loginEvents(user: string): Promise<AuditRecord[]> {
  const events = await auditSearch(setup.dataDir, ['--limit', '1000'])
  return events.filter((event) => event.type === 'login' && event.details?.user === user)
}

describe('password and TOTP login', () => {
  let home: string
  let secret: Buffer
  let loggedIn: CommandResult

  before(async () => {
    ;({ home, secret } = await enrolledPerson('alice'))
    // No --ca-pin: the pin saved by the enrollment identifies the server.
    loggedIn = await login(home, 'alice', totp(secret, Date.now()))
  })

  it('enroll prints an otpauth URI', async () => {
    const other = temporaryDirectory('home-enroll')
    const added = await usersAdd('enroll-check')
    const result = await enroll(other, 'enroll-check', added.code)
    assert.equal(result.code, 0, result.stderr)
    const body = JSON.parse(result.stdout) as Record<string, string>
    const uri = new URL(body.otpauthUri as string)
    assert.equal(uri.protocol, 'otpauth:')
    assert.equal(uri.searchParams.get('secret'), body.totpSecret)
    assert.equal(body.spiffeId, `spiffe://${TRUST_DOMAIN}/user/enroll-check`)
  })

  it('login writes a user certificate', () => {
    assert.equal(loggedIn.code, 0, loggedIn.stderr)
    const summary = JSON.parse(loggedIn.stdout) as { spiffeId: string; roles: string[] }
    assert.equal(summary.spiffeId, `spiffe://${TRUST_DOMAIN}/user/alice`)
    assert.deepEqual(summary.roles, ['e2e-reader'])
    const identity = join(home, 'identity')
    const certPem = readFileSync(join(identity, 'svid.pem'), 'utf8')
    const parsed = identityFromCertificate(pemBlocks(certPem, ['CERTIFICATE'])[0] as Buffer)
    assert.equal(parsed.claims.kind, 'user')
    assert.equal(parsed.name, 'alice')
    assert.deepEqual(parsed.claims.roles, ['e2e-reader'])
    // e2e-reader sets maxTtl 1h, which caps the 8-hour default.
    const certificate = new X509Certificate(certPem)
    const lifetime = Date.parse(certificate.validTo) - Date.now()
    assert.ok(lifetime <= 3600_000, `lifetime ${lifetime} ms exceeds 1 h`)
    assert.ok(lifetime > 3000_000, `lifetime ${lifetime} ms is far below 1 h`)
    assert.equal(statSync(join(identity, 'svid_key.pem')).mode & 0o777, 0o600)
    assert.ok(existsSync(join(identity, 'bundle.pem')))
  })

  it("mcp ls as the person shows the role's tools", async () => {
    // No --server and no --identity: the login's profile provides both.
    const asPerson = await runWrit(['mcp', 'ls', '--json'], { env: personEnv(home) })
    assert.equal(asPerson.code, 0, asPerson.stderr)
    const asBot = await runWrit([
      'mcp',
      'ls',
      '--json',
      '--server',
      setup.server.address,
      '--identity',
      setup.identity,
    ])
    assert.equal(asBot.code, 0, asBot.stderr)
    const person = JSON.parse(asPerson.stdout) as Array<{ name: string; tools: string[] }>
    const notes = person.find((entry) => entry.name === 'notes')
    assert.deepEqual(notes?.tools, ['read_note', 'leak_secret', 'emoji'])
    assert.ok(!person.some((entry) => entry.name === 'hidden'), 'hidden server listed')
    // People and bots share roles: the same role gives the same servers and tools.
    assert.deepEqual(person, JSON.parse(asBot.stdout))
  })

  it('task issue takes the person as parent', async () => {
    const dest = join(temporaryDirectory('alice-task'), 'task')
    const result = await runWrit(
      ['task', 'issue', '--dest', dest, '--tools', 'read_*', '--ttl', '5m', '--reason', 'check'],
      { env: personEnv(home) },
    )
    assert.equal(result.code, 0, result.stderr)
    const certPem = readFileSync(join(dest, 'svid.pem'), 'utf8')
    const parsed = identityFromCertificate(pemBlocks(certPem, ['CERTIFICATE'])[0] as Buffer)
    assert.match(parsed.spiffeId, new RegExp(`^spiffe://${TRUST_DOMAIN}/user/alice/task/`))
    assert.equal(parsed.claims.kind, 'user')
  })

  it('gateway audit names the person', async () => {
    const events = await auditSearch(setup.dataDir, [
      '--principal',
      `spiffe://${TRUST_DOMAIN}/user/alice`,
    ])
    const issued = events.find((event) => event.type === 'certificate.issue')
    assert.equal(issued?.caller?.kind, 'user')
    assert.ok(events.some((event) => event.type === 'login' && event.outcome === 'success'))
  })

  it('wrong password and wrong code fail alike', async () => {
    const { home: bobHome, secret: bobSecret } = await enrolledPerson('bob')
    const wrongPassword = await login(
      bobHome,
      'bob',
      totp(bobSecret, Date.now()),
      'not the password at all',
    )
    const wrongOtp = await login(bobHome, 'bob', wrongCode(bobSecret))
    const unknownUser = await login(bobHome, 'nobody-here', '123456')
    for (const [name, result] of [
      ['wrong password', wrongPassword],
      ['wrong code', wrongOtp],
      ['unknown user', unknownUser],
    ] as const) {
      assert.equal(result.code, 1, `${name}: ${result.stderr}`)
      assert.equal(result.stderr, `writ login: ${LOGIN_FAILED} [login.failed]\n`, name)
      assert.equal(result.stdout, '', name)
    }
    const reasons = (await loginEvents('bob')).map((event) => event.reason)
    assert.deepEqual(reasons, ['password_wrong', 'otp_wrong'])
    assert.ok(!existsSync(join(bobHome, 'identity', 'svid.pem')), 'a failed login wrote files')
  })

  it('a TOTP code works once', async () => {
    const { home: carolHome, secret: carolSecret } = await enrolledPerson('carol')
    const otp = totp(carolSecret, Date.now())
    const first = await login(carolHome, 'carol', otp)
    assert.equal(first.code, 0, first.stderr)
    const replay = await login(carolHome, 'carol', otp)
    assert.equal(replay.code, 1)
    assert.equal(replay.stderr, `writ login: ${LOGIN_FAILED} [login.failed]\n`)
    const events = await loginEvents('carol')
    assert.equal(events.at(-1)?.reason, 'otp_reused')
  })

  it('a used enrollment code is refused', async () => {
    const added = await usersAdd('dave')
    const first = await enroll(temporaryDirectory('home-dave'), 'dave', added.code)
    assert.equal(first.code, 0, first.stderr)
    const second = await enroll(temporaryDirectory('home-dave2'), 'dave', added.code)
    assert.equal(second.code, 1)
    assert.match(second.stderr, /enrollment code has already been used/)
    assert.match(second.stderr, /\[enroll\.code_used\]/)
    assert.match(second.stderr, /writ users add dave/)
  })

  it('a short password is refused with the limit', async () => {
    const added = await usersAdd('erin')
    const result = await runWrit(
      [
        'users',
        'enroll',
        '--server',
        setup.server.address,
        '--user',
        'erin',
        '--code',
        added.code,
        '--ca-pin',
        setup.server.caPin,
        '--password-stdin',
      ],
      { env: personEnv(temporaryDirectory('home-erin')), input: 'short\n' },
    )
    assert.equal(result.code, 1)
    assert.match(
      result.stderr,
      /the password has 5 characters; use at least 12 \[password\.too_short\]/,
    )
  })

  it('users add rejects an unknown role', async () => {
    const result = await runWrit([
      'users',
      'add',
      'frank',
      '--roles',
      'no-such-role',
      '--data-dir',
      setup.dataDir,
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /role "no-such-role" not found/)
  })

  it('login needs a CA pin the first time', async () => {
    const result = await runWrit(
      ['login', '--server', setup.server.address, '--user', 'alice', '--otp', '123456'],
      { env: personEnv(temporaryDirectory('home-new')) },
    )
    assert.equal(result.code, 2)
    assert.match(result.stderr, /missing --ca-pin PIN: the first login to 127\.0\.0\.1:\d+ needs/)
  })
})

describe('login throttling', () => {
  it('locks a user after five failures and audits it', async () => {
    const { home, secret } = await enrolledPerson('mallory')
    for (let attempt = 0; attempt < 5; attempt++) {
      const result = await login(home, 'mallory', wrongCode(secret), 'wrong password guess')
      assert.equal(result.code, 1)
      assert.match(result.stderr, /\[login\.failed\]/, `attempt ${attempt + 1}`)
    }
    // The right password and code are refused too while the lock lasts.
    const locked = await login(home, 'mallory', totp(secret, Date.now()))
    assert.equal(locked.code, 1)
    assert.match(
      locked.stderr,
      /^writ login: too many failed logins for this user or from this address; try again after \d{4}-\d\d-\d\dT[\d:.]+Z \[login\.throttled\]\n$/,
    )
    const events = await loginEvents('mallory')
    assert.deepEqual(
      events.map((event) => event.reason),
      [
        'password_wrong',
        'password_wrong',
        'password_wrong',
        'password_wrong',
        'password_wrong',
        'throttled',
      ],
    )
    assert.ok(events.every((event) => event.outcome === 'denied'))
    assert.equal(events.at(-1)?.details?.throttleKey, 'user:mallory')
    assert.match(String(events.at(-1)?.peer), /^127\.0\.0\.1:\d+$/)
  })

  it('locks an unknown name the same way', async () => {
    const home = temporaryDirectory('home-ghost')
    // The enrollment pin is needed once, so log in with an explicit pin.
    const run = () =>
      runWrit(
        [
          'login',
          '--server',
          setup.server.address,
          '--ca-pin',
          setup.server.caPin,
          '--user',
          'ghost',
          '--password-stdin',
          '--otp',
          '123456',
        ],
        { env: personEnv(home), input: `${PASSWORD}\n` },
      )
    for (let attempt = 0; attempt < 5; attempt++) {
      const result = await run()
      assert.match(result.stderr, /\[login\.failed\]/, `attempt ${attempt + 1}`)
    }
    const locked = await run()
    assert.match(locked.stderr, /too many failed logins .*\[login\.throttled\]/)
    const reasons = (await loginEvents('ghost')).map((event) => event.reason)
    assert.deepEqual(reasons.slice(0, 5), Array(5).fill('user_unknown'))
    assert.equal(reasons.at(-1), 'throttled')
  })
})
