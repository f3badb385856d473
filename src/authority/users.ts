import { createHash, randomBytes } from 'node:crypto'
import type { AuditEventInput } from '../audit/types.js'
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { verifyCsr } from '../identity/csr.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { Logger } from '../log.js'
import type { UserSpec } from '../policy/people-specs.js'
import type { Store } from '../store/store.js'
import type { AuditRecorder } from './authority.js'
import type { CertificateAuthority } from './ca.js'
import { requireUnlocked } from './lock-service.js'
import {
  addressThrottleKey,
  loginCounterRules,
  type ThrottleRule,
  userThrottleKey,
} from './login-throttle.js'
import { checkPasswordRules, decoyPasswordHash, hashPassword, verifyPassword } from './password.js'
import {
  decodeBase32,
  encodeBase32,
  generateTotpSecret,
  matchTotpStep,
  otpauthUri,
  TOTP_SECRET_BYTES,
  WRIT_TOTP,
} from './totp.js'
import {
  issueUserCertificate,
  type UserCertificate,
  userCaller,
  userCertificateTtl,
} from './user-certificates.js'

/**
 * The one message for every wrong credential. It does not reveal whether the user exists, is
 * enrolled, or which of the password and the code was wrong, but the audit record names it.
 */
export const LOGIN_FAILED_MESSAGE =
  'login failed: the user name, password or one-time code is wrong'

const NAME_PATTERN = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const OTP_PATTERN = /^\d{6}$/

/** The reason a credential check failed, as the audit record names it. */
type LoginFailure = 'user_unknown' | 'not_enrolled' | 'password_wrong' | 'otp_wrong' | 'otp_reused'

export interface UserServiceOptions {
  ca: CertificateAuthority
  store: Store
  audit: AuditRecorder
  clock: Clock
  logger: Logger
  /** Overrides the throttle rules; tests use it to lock sooner. */
  throttle?: { user: ThrottleRule; address: ThrottleRule }
}

export interface EnrollRequest {
  user: string
  /** The one-time enrollment code from `writ users add`; only its SHA-256 is looked up. */
  code: string
  password: string
}

/** The enrollment result for the person: the TOTP secret, shown once. */
export interface EnrollResult {
  user: string
  spiffeId: string
  /** The `otpauth://totp/...` URI for an authenticator app. */
  otpauthUri: string
  /** The same secret in base32, for apps where it is typed in. */
  totpSecret: string
}

export interface PasswordLoginRequest {
  user: string
  password: string
  /** The current TOTP code. */
  otp: string
  csrPem: string
}

/** The client of a request: its IP address for throttling and `address:port` for the audit log. */
export interface RequestPeer {
  address: string
  text: string
}

/** Enrollment and password login of people. */
export interface UserService {
  enroll(request: EnrollRequest, peer: RequestPeer): Promise<EnrollResult>
  login(request: PasswordLoginRequest, peer: RequestPeer): Promise<UserCertificate>
}

/**
 * Creates the service behind `writ users enroll` and `writ login`. Every outcome is audited as a
 * `user.enroll` or `login` event. Rejections throw WritErrors whose `auditId` field names the
 * audit record.
 *
 * @example
 *   const users = createUserService({ ca, store, audit, clock, logger })
 *   const certificate = await users.login({ user, password, otp, csrPem }, peer)
 */
export function createUserService(options: UserServiceOptions): UserService {
  const { ca, store, audit, clock, logger } = options

  async function enroll(request: EnrollRequest, peer: RequestPeer): Promise<EnrollResult> {
    const user = normalizeName(request.user)
    const event: AuditEventInput = {
      type: 'user.enroll',
      outcome: 'denied',
      peer: peer.text,
      details: { user },
    }
    try {
      checkPasswordRules(request.password)
      if (!(await store.getResource('User', user))) throw enrollmentRefused('code_unknown', user)
      const secret = generateTotpSecret()
      const credentials = {
        user,
        passwordHash: await hashPassword(request.password),
        totpSecret: encodeBase32(secret),
        enrolledAt: new Date(clock()).toISOString(),
      }
      const codeHash = sha256(normalizeCode(request.code))
      const redeemed = await store.redeemEnrollmentCode(codeHash, user, clock(), credentials)
      if (!redeemed.ok) throw enrollmentRefused(redeemed.reason, user)
      const spiffeId = SpiffeId.fromParts(ca.trustDomain, ['user', user]).toString()
      await audit.record({ ...event, outcome: 'success' })
      logger.info({ user, peer: peer.text }, 'user enrolled')
      return {
        user,
        spiffeId,
        otpauthUri: otpauthUri(secret, { issuer: `Writ ${ca.trustDomain}`, account: user }),
        totpSecret: credentials.totpSecret,
      }
    } catch (error) {
      throw await recordRejection(error, event)
    }
  }

  async function login(request: PasswordLoginRequest, peer: RequestPeer): Promise<UserCertificate> {
    const user = normalizeName(request.user)
    const event: AuditEventInput = {
      type: 'login',
      outcome: 'denied',
      peer: peer.text,
      details: { method: 'password', user },
    }
    try {
      checkOtpFormat(request.otp)
      const csr = verifyCsr(request.csrPem)
      await authenticate(user, request, peer, event)
      const spec = (await store.getResource('User', user))?.spec as UserSpec | undefined
      if (!spec) throw loginFailed('user_unknown')
      await requireUnlocked(store, { user, roles: spec.roles }, clock(), 'login', 'login refused')
      const grant = {
        name: user,
        roles: [...spec.roles],
        traits: spec.traits ?? {},
        ttlSeconds: await userCertificateTtl(store, 'login', user, spec.roles),
      }
      const certificate = await issueUserCertificate(ca, store, grant, csr)
      await recordLogin(certificate, event)
      return certificate
    } catch (error) {
      throw await recordRejection(error, event)
    }
  }

  /**
   * Checks the throttle, then the password and the code. The attempt counts as a failure before
   * the check, so parallel attempts cannot exceed the limit, and the count is withdrawn on success.
   */
  async function authenticate(
    user: string,
    request: PasswordLoginRequest,
    peer: RequestPeer,
    event: AuditEventInput,
  ): Promise<void> {
    const now = clock()
    const locked = await store.takeLoginAttempt(
      loginCounterRules(user, peer.address, options.throttle),
      now,
    )
    if (locked) {
      const until = new Date(locked.until).toISOString()
      event.details = { ...event.details, throttleKey: locked.key, until }
      throw new WritError(
        'login.throttled',
        `too many failed logins for this user or from this address; try again after ${until}`,
        { retryAfterSeconds: Math.ceil((locked.until - now) / 1000) },
      )
    }
    const failure = await checkCredentials(user, request.password, request.otp, now)
    if (failure) throw loginFailed(failure)
    await store.releaseLoginAttempt([userThrottleKey(user)], [addressThrottleKey(peer.address)])
  }

  /** Returns why the credentials are wrong, or undefined. Unknown users cost a full hash too. */
  async function checkCredentials(
    user: string,
    password: string,
    otp: string,
    now: number,
  ): Promise<LoginFailure | undefined> {
    const exists = (await store.getResource('User', user)) !== undefined
    const credentials = exists ? await store.getUserCredentials(user) : undefined
    const storedHash = credentials?.passwordHash ?? (await decoyPasswordHash())
    const passwordMatches = await verifyPassword(password, storedHash)
    const secret = credentials
      ? decodeBase32(credentials.totpSecret)
      : randomBytes(TOTP_SECRET_BYTES)
    const step = matchTotpStep(secret, otp, now, WRIT_TOTP)
    if (!exists) return 'user_unknown'
    if (!credentials) return 'not_enrolled'
    if (!passwordMatches) return 'password_wrong'
    if (step === undefined) return 'otp_wrong'
    if (!(await store.acceptTotpStep(user, step))) return 'otp_reused'
    return undefined
  }

  async function recordLogin(certificate: UserCertificate, event: AuditEventInput): Promise<void> {
    const caller = userCaller(certificate)
    await Promise.all([
      audit.record({ ...event, outcome: 'success', caller }),
      audit.record({
        type: 'certificate.issue',
        outcome: 'success',
        caller,
        peer: event.peer,
        details: {
          serial: certificate.serial,
          notAfter: certificate.notAfter.toISOString(),
          roles: certificate.claims.roles,
        },
      }),
    ])
    logger.info(
      { spiffe_id: certificate.spiffeId, serial: certificate.serial, peer: event.peer },
      'user logged in',
    )
  }

  /**
   * Audits a rejection and returns the error to throw, carrying the audit id. Failures that are
   * not WritErrors are server faults, returned unchanged for the routes to log.
   */
  async function recordRejection(error: unknown, event: AuditEventInput): Promise<unknown> {
    if (!(error instanceof WritError)) return error
    const reason =
      typeof error.fields.reason === 'string' ? error.fields.reason : auditReason(error.code)
    const details = { ...event.details }
    if (typeof error.fields.lockId === 'string') details.lockId = error.fields.lockId
    const recorded = await audit.record({ ...event, reason, details })
    logger.info(
      { code: error.code, reason, peer: event.peer, audit_id: recorded.id },
      `${event.type} rejected`,
    )
    // The internal reason stays in the audit log; the client sees only the code and message.
    const { reason: _hidden, ...fields } = error.fields
    return new WritError(error.code, error.message, { ...fields, auditId: recorded.id })
  }

  return { enroll, login }
}

/** Lowercases and trims a typed user name; a name that cannot exist is a request error. */
function normalizeName(value: string): string {
  const name = value.trim().toLowerCase()
  if (!NAME_PATTERN.test(name)) {
    throw new WritError(
      'request.invalid',
      `invalid user name ${JSON.stringify(value.slice(0, 80))}: use lowercase letters, digits and dashes`,
      { field: 'user' },
    )
  }
  return name
}

function checkOtpFormat(otp: string): void {
  if (!OTP_PATTERN.test(otp.trim())) {
    throw new WritError(
      'request.invalid',
      'the one-time code must be the 6 digits your authenticator app shows',
      { field: 'otp' },
    )
  }
}

/** Enrollment codes are base32 text; case, spaces and dashes typed by a person are ignored. */
function normalizeCode(code: string): string {
  return code.toUpperCase().replace(/[\s-]/g, '')
}

function loginFailed(reason: LoginFailure): WritError {
  return new WritError('login.failed', LOGIN_FAILED_MESSAGE, { reason })
}

const ENROLLMENT_MESSAGES = {
  code_unknown: 'the enrollment code is not valid for this user',
  code_used: 'the enrollment code has already been used',
  code_expired: 'the enrollment code has expired',
} as const

function enrollmentRefused(reason: keyof typeof ENROLLMENT_MESSAGES, user: string): WritError {
  return new WritError(
    `enroll.${reason}`,
    `${ENROLLMENT_MESSAGES[reason]}; ask an administrator for a new one (writ users add ${user})`,
    { user },
  )
}

/** Converts an error code to an audit reason: `login.role_not_found` to `role_not_found`. */
function auditReason(code: string): string {
  const [area, rest] = code.split('.', 2) as [string, string | undefined]
  if (rest === undefined) return area
  return area === 'login' || area === 'enroll' ? rest : `${area}_${rest}`
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
