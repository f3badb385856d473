/**
 * The per-person Writ directory, `$WRIT_HOME` or `~/.writ`: `identity/` contains the certificate
 * from the last `writ login`, and `profile.json` remembers the server, its CA pin and the user,
 * so later commands need no flags.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { WritError } from '../errors.js'

/** The settings `writ login` and `writ users enroll` keep between runs. */
export interface LoginProfile {
  /** `HOST:PORT` of the Writ server. */
  server: string
  /** `sha256:<hex>` pin of the server's CA, checked at the first enrollment or login. */
  caPin?: string
  user?: string
  /** The OidcConnector of the last single sign-on login. */
  connector?: string
  spiffeId?: string
  /** ISO 8601 expiry of the certificate in `identity/`. */
  notAfter?: string
}

const PROFILE_FILE = 'profile.json'

/** Returns `$WRIT_HOME`, or `~/.writ` when it is unset. */
export function writHome(): string {
  return process.env.WRIT_HOME || join(homedir(), '.writ')
}

/** Returns the directory where `writ login` writes `svid.pem`, `svid_key.pem` and `bundle.pem`. */
export function loginIdentityDir(): string {
  return join(writHome(), 'identity')
}

/** Returns the login identity directory when a login has written a certificate there. */
export function existingLoginIdentityDir(): string | undefined {
  const dir = loginIdentityDir()
  return existsSync(join(dir, 'svid.pem')) ? dir : undefined
}

/** Reads `profile.json`; returns undefined when there is none. */
export function readProfile(): LoginProfile | undefined {
  const path = join(writHome(), PROFILE_FILE)
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
  try {
    const parsed = JSON.parse(text) as LoginProfile
    return typeof parsed.server === 'string' ? parsed : undefined
  } catch (error) {
    throw new WritError(
      'cli.profile_invalid',
      `${path} is not valid JSON; delete it and log in again`,
      { path },
      { cause: error },
    )
  }
}

/** Writes `profile.json` (mode 0600) through a temporary file, creating the directory (0700). */
export function writeProfile(profile: LoginProfile): void {
  const home = writHome()
  mkdirSync(home, { recursive: true, mode: 0o700 })
  const path = join(home, PROFILE_FILE)
  const temporary = `${path}.${process.pid}.tmp`
  writeFileSync(temporary, `${JSON.stringify(profile, null, 2)}\n`, { mode: 0o600 })
  renameSync(temporary, path)
}
