import type Database from 'better-sqlite3'
import type { Clock } from '../clock.js'
import type {
  EnrollmentRefusal,
  LoginCounterRule,
  LoginFailureState,
  PeopleStore,
  SsoFlowRecord,
  SsoFlowRefusal,
  UserCredentials,
} from './people-store.js'

/** Flows are kept this long after they expire, so a replayed state reads as used, not unknown. */
const SSO_FLOW_RETENTION_MS = 24 * 3600 * 1000

interface CredentialsRow {
  user_name: string
  password_hash: string
  totp_secret: string
  last_totp_step: number | null
  enrolled_at: string
}

interface EnrollmentRow {
  user_name: string
  expires_at: number
  used_at: string | null
}

interface SsoFlowRow {
  state_hash: string
  connector: string
  nonce: string
  redirect_uri: string
  code_challenge: string
  expires_at: number
  used_at: number | null
}

/** Implements `PeopleStore` on the tables of migration 3. */
export function createSqlitePeopleStore(db: Database.Database, clock: Clock): PeopleStore {
  const statements = {
    deleteUnusedCodes: db.prepare(
      'DELETE FROM enrollment_codes WHERE user_name = ? AND used_at IS NULL',
    ),
    insertCode: db.prepare(
      'INSERT INTO enrollment_codes (code_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)',
    ),
    findCode: db.prepare(
      'SELECT user_name, expires_at, used_at FROM enrollment_codes WHERE code_hash = ?',
    ),
    markCodeUsed: db.prepare('UPDATE enrollment_codes SET used_at = ? WHERE code_hash = ?'),
    putCredentials: db.prepare(
      `INSERT INTO user_credentials (user_name, password_hash, totp_secret, last_totp_step,
         enrolled_at) VALUES (?, ?, ?, NULL, ?)
       ON CONFLICT (user_name) DO UPDATE SET password_hash = excluded.password_hash,
         totp_secret = excluded.totp_secret, last_totp_step = NULL,
         enrolled_at = excluded.enrolled_at`,
    ),
    getCredentials: db.prepare('SELECT * FROM user_credentials WHERE user_name = ?'),
    deleteCredentials: db.prepare('DELETE FROM user_credentials WHERE user_name = ?'),
    acceptStep: db.prepare(
      `UPDATE user_credentials SET last_totp_step = ?
       WHERE user_name = ? AND (last_totp_step IS NULL OR last_totp_step < ?)`,
    ),
    getFailures: db.prepare(
      'SELECT failures, last_failure_at FROM login_failures WHERE throttle_key = ?',
    ),
    putFailures: db.prepare(
      `INSERT INTO login_failures (throttle_key, failures, last_failure_at) VALUES (?, ?, ?)
       ON CONFLICT (throttle_key) DO UPDATE SET failures = excluded.failures,
         last_failure_at = excluded.last_failure_at`,
    ),
    deleteFailures: db.prepare('DELETE FROM login_failures WHERE throttle_key = ?'),
    forgiveFailure: db.prepare(
      'UPDATE login_failures SET failures = failures - 1 WHERE throttle_key = ? AND failures > 0',
    ),
    deleteEmptyFailures: db.prepare(
      'DELETE FROM login_failures WHERE throttle_key = ? AND failures <= 0',
    ),
    pruneFlows: db.prepare('DELETE FROM sso_flows WHERE expires_at < ?'),
    insertFlow: db.prepare(
      `INSERT INTO sso_flows (state_hash, connector, nonce, redirect_uri, code_challenge,
         created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    findFlow: db.prepare('SELECT * FROM sso_flows WHERE state_hash = ?'),
    markFlowUsed: db.prepare('UPDATE sso_flows SET used_at = ? WHERE state_hash = ?'),
  }

  const redeem = db.transaction(
    (
      codeHash: string,
      user: string,
      now: number,
      credentials: UserCredentials,
    ): { ok: true } | { ok: false; reason: EnrollmentRefusal } => {
      const row = statements.findCode.get(codeHash) as EnrollmentRow | undefined
      if (!row || row.user_name !== user) return { ok: false, reason: 'code_unknown' }
      if (row.used_at !== null) return { ok: false, reason: 'code_used' }
      if (now >= row.expires_at) return { ok: false, reason: 'code_expired' }
      const time = new Date(now).toISOString()
      statements.markCodeUsed.run(time, codeHash)
      statements.putCredentials.run(
        user,
        credentials.passwordHash,
        credentials.totpSecret,
        credentials.enrolledAt,
      )
      return { ok: true }
    },
  )

  const takeAttempt = db.transaction((rules: readonly LoginCounterRule[], now: number) => {
    const states = rules.map((rule) => readFailures(rule.key))
    for (const [index, rule] of rules.entries()) {
      const until = rule.lockedUntil(states[index], now)
      if (until > now) return { key: rule.key, until }
    }
    for (const [index, rule] of rules.entries()) {
      const next = rule.addFailure(states[index], now)
      statements.putFailures.run(rule.key, next.failures, next.lastFailureAt)
    }
    return undefined
  })

  const release = db.transaction((resetKeys: readonly string[], forgiveKeys: readonly string[]) => {
    for (const key of resetKeys) statements.deleteFailures.run(key)
    for (const key of forgiveKeys) {
      statements.forgiveFailure.run(key)
      statements.deleteEmptyFailures.run(key)
    }
  })

  const consumeFlow = db.transaction(
    (
      stateHash: string,
      now: number,
    ): { ok: true; flow: SsoFlowRecord } | { ok: false; reason: SsoFlowRefusal } => {
      const row = statements.findFlow.get(stateHash) as SsoFlowRow | undefined
      if (!row) return { ok: false, reason: 'state_unknown' }
      if (row.used_at !== null) return { ok: false, reason: 'state_used' }
      if (now >= row.expires_at) return { ok: false, reason: 'state_expired' }
      statements.markFlowUsed.run(now, stateHash)
      return {
        ok: true,
        flow: {
          stateHash: row.state_hash,
          connector: row.connector,
          nonce: row.nonce,
          redirectUri: row.redirect_uri,
          codeChallenge: row.code_challenge,
          expiresAt: row.expires_at,
        },
      }
    },
  )

  function readFailures(key: string): LoginFailureState | undefined {
    const row = statements.getFailures.get(key) as
      | { failures: number; last_failure_at: number }
      | undefined
    return row ? { failures: row.failures, lastFailureAt: row.last_failure_at } : undefined
  }

  return {
    async putEnrollmentCode(record) {
      db.transaction(() => {
        statements.deleteUnusedCodes.run(record.user)
        statements.insertCode.run(
          record.codeHash,
          record.user,
          new Date(clock()).toISOString(),
          record.expiresAt,
        )
      }).immediate()
    },
    async redeemEnrollmentCode(codeHash, user, now, credentials) {
      // IMMEDIATE takes the write lock before the read, so a code cannot be redeemed twice.
      return redeem.immediate(codeHash, user, now, credentials)
    },
    async getUserCredentials(user) {
      const row = statements.getCredentials.get(user) as CredentialsRow | undefined
      if (!row) return undefined
      const credentials: UserCredentials = {
        user: row.user_name,
        passwordHash: row.password_hash,
        totpSecret: row.totp_secret,
        enrolledAt: row.enrolled_at,
      }
      if (row.last_totp_step !== null) credentials.lastTotpStep = row.last_totp_step
      return credentials
    },
    async deleteUserCredentials(user) {
      db.transaction(() => {
        statements.deleteCredentials.run(user)
        statements.deleteUnusedCodes.run(user)
      }).immediate()
    },
    async acceptTotpStep(user, step) {
      return statements.acceptStep.run(step, user, step).changes > 0
    },
    async takeLoginAttempt(rules, now) {
      return takeAttempt.immediate(rules, now)
    },
    async releaseLoginAttempt(resetKeys, forgiveKeys) {
      release.immediate(resetKeys, forgiveKeys)
    },
    async putSsoFlow(flow, now) {
      db.transaction(() => {
        statements.pruneFlows.run(now - SSO_FLOW_RETENTION_MS)
        statements.insertFlow.run(
          flow.stateHash,
          flow.connector,
          flow.nonce,
          flow.redirectUri,
          flow.codeChallenge,
          now,
          flow.expiresAt,
        )
      }).immediate()
    },
    async consumeSsoFlow(stateHash, now) {
      return consumeFlow.immediate(stateHash, now)
    },
  }
}
