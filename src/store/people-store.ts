/**
 * Storage for people: credentials, enrollment codes, login failure counters and pending single
 * sign-on logins. `Store` extends this interface; `sqlite-people.ts` implements it.
 */

/** A user's password hash and TOTP secret. */
export interface UserCredentials {
  user: string
  /** `$scrypt$...` from `hashPassword`. */
  passwordHash: string
  /** The TOTP secret in base32. */
  totpSecret: string
  /** The last TOTP time step accepted, so no code is accepted twice. */
  lastTotpStep?: number
  /** ISO 8601 time of enrollment. */
  enrolledAt: string
}

/** A one-time enrollment code; only the SHA-256 of the code is stored. */
export interface EnrollmentCodeRecord {
  codeHash: string
  user: string
  /** When the code stops working, in ms since the epoch. */
  expiresAt: number
}

export type EnrollmentRefusal = 'code_unknown' | 'code_used' | 'code_expired'

/** The failure counter of one throttle key, such as `user:alice` or `address:127.0.0.1`. */
export interface LoginFailureState {
  failures: number
  /** When the last failure was counted, in ms since the epoch. */
  lastFailureAt: number
}

/** The rule that judges and counts one throttle key; `src/authority/login-throttle.ts` makes them. */
export interface LoginCounterRule {
  key: string
  /** Returns when the key's lock ends, or 0 when it may try now. */
  lockedUntil(state: LoginFailureState | undefined, now: number): number
  /** Returns the counter after one more failure at `now`. */
  addFailure(state: LoginFailureState | undefined, now: number): LoginFailureState
}

/** A single sign-on login between its start and the callback; only the state's hash is kept. */
export interface SsoFlowRecord {
  stateHash: string
  connector: string
  nonce: string
  redirectUri: string
  /** The PKCE S256 challenge the client sent. */
  codeChallenge: string
  /** When the flow stops being accepted, in ms since the epoch. */
  expiresAt: number
}

export type SsoFlowRefusal = 'state_unknown' | 'state_used' | 'state_expired'

export interface PeopleStore {
  /** Stores a new enrollment code for a user and deletes the user's older unused codes. */
  putEnrollmentCode(record: EnrollmentCodeRecord): Promise<void>
  /**
   * In one transaction: marks the code as used, provided it exists, belongs to `user`, is unused
   * and unexpired, and stores the credentials in place of the user's old ones. A code for another
   * user counts as unknown.
   */
  redeemEnrollmentCode(
    codeHash: string,
    user: string,
    now: number,
    credentials: UserCredentials,
  ): Promise<{ ok: true } | { ok: false; reason: EnrollmentRefusal }>
  getUserCredentials(user: string): Promise<UserCredentials | undefined>
  /** Deletes a user's credentials and unused enrollment codes. */
  deleteUserCredentials(user: string): Promise<void>
  /**
   * Records `step` as the user's last accepted TOTP step, only if it is later than the one stored.
   * Returns false when it is not, which means the code was already used.
   */
  acceptTotpStep(user: string, step: number): Promise<boolean>

  /**
   * In one transaction: returns the first key that is locked, or else counts a failure on every
   * key and returns undefined. Counting before the password is checked keeps parallel attempts
   * from slipping past the limit; `releaseLoginAttempt` withdraws the count after a success.
   */
  takeLoginAttempt(
    rules: readonly LoginCounterRule[],
    now: number,
  ): Promise<{ key: string; until: number } | undefined>
  /** Deletes the counters of `resetKeys` and takes one failure off each of `forgiveKeys`. */
  releaseLoginAttempt(resetKeys: readonly string[], forgiveKeys: readonly string[]): Promise<void>

  /** Stores a started single sign-on login and deletes flows that expired a day ago or more. */
  putSsoFlow(flow: SsoFlowRecord, now: number): Promise<void>
  /** Marks the flow with this state hash as used, atomically, and returns it. */
  consumeSsoFlow(
    stateHash: string,
    now: number,
  ): Promise<{ ok: true; flow: SsoFlowRecord } | { ok: false; reason: SsoFlowRefusal }>
}
