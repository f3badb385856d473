/**
 * Password hashing with scrypt (RFC 7914) from node:crypto. A stored hash records its own cost
 * parameters and salt, `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` in base64 without padding, so the
 * parameters can be raised later without breaking the hashes already stored.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import { WritError } from '../errors.js'

/** scrypt cost parameters: N = 2^logCost, block size r, parallelism p. */
export interface ScryptParameters {
  logCost: number
  blockSize: number
  parallelization: number
}

/**
 * The parameters for new hashes: N = 2^15, r = 8, p = 1, which needs 32 MiB of memory per hash
 * and the values OWASP's password storage guidance lists for scrypt.
 */
export const DEFAULT_SCRYPT: Readonly<ScryptParameters> = {
  logCost: 15,
  blockSize: 8,
  parallelization: 1,
}

/** The shortest password accepted, in characters. */
export const MIN_PASSWORD_LENGTH = 12

/** The maximum password length in bytes of UTF-8, which bounds the hashing cost. */
export const MAX_PASSWORD_BYTES = 1024

const SALT_BYTES = 16
const HASH_BYTES = 32
/** The largest logCost a stored hash may name: 2^20 needs 1 GiB at r = 8, far above the default. */
const MAX_LOG_COST = 20
const STORED_FORMAT = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/

/**
 * Checks a new password against the length rules. Throws `password.too_short` or
 * `password.too_long` with the limit; the message never contains the password.
 */
export function checkPasswordRules(password: string): void {
  const length = [...password].length
  if (length < MIN_PASSWORD_LENGTH) {
    throw new WritError(
      'password.too_short',
      `the password has ${length} characters; use at least ${MIN_PASSWORD_LENGTH}`,
      { minimum: MIN_PASSWORD_LENGTH },
    )
  }
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) {
    throw new WritError(
      'password.too_long',
      `the password is longer than ${MAX_PASSWORD_BYTES} bytes; use a shorter one`,
      { maximum: MAX_PASSWORD_BYTES },
    )
  }
}

/**
 * Hashes a password with a new random salt.
 *
 * @example const stored = await hashPassword('correct horse battery staple')
 */
export async function hashPassword(
  password: string,
  parameters: ScryptParameters = DEFAULT_SCRYPT,
): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const hash = await deriveKey(password, salt, parameters, HASH_BYTES)
  const { logCost, blockSize, parallelization } = parameters
  return `$scrypt$ln=${logCost},r=${blockSize},p=${parallelization}$${base64(salt)}$${base64(hash)}`
}

/**
 * Reports whether `password` matches a hash from `hashPassword`, comparing in constant time.
 * Throws a `TypeError` when the stored text is not a Writ scrypt hash, because that means the
 * store is damaged, not that the password is wrong.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parseStoredHash(stored)
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return false
  const hash = await deriveKey(password, parsed.salt, parsed.parameters, parsed.hash.length)
  return timingSafeEqual(hash, parsed.hash)
}

/**
 * A hash of a random password, made once per process. Verifying against it when the user is
 * unknown makes that case take as long as a wrong password.
 */
let decoyHash: Promise<string> | undefined
export function decoyPasswordHash(): Promise<string> {
  decoyHash ??= hashPassword(randomBytes(18).toString('base64'))
  return decoyHash
}

function parseStoredHash(stored: string): {
  parameters: ScryptParameters
  salt: Buffer
  hash: Buffer
} {
  const match = STORED_FORMAT.exec(stored)
  const parameters = {
    logCost: Number(match?.[1]),
    blockSize: Number(match?.[2]),
    parallelization: Number(match?.[3]),
  }
  if (!match || parameters.logCost < 1 || parameters.logCost > MAX_LOG_COST) {
    throw new TypeError('the stored password hash is not in the $scrypt$ln=N,r=R,p=P$ format')
  }
  return {
    parameters,
    salt: Buffer.from(match[4] as string, 'base64'),
    hash: Buffer.from(match[5] as string, 'base64'),
  }
}

function deriveKey(
  password: string,
  salt: Buffer,
  parameters: ScryptParameters,
  length: number,
): Promise<Buffer> {
  const cost = 2 ** parameters.logCost
  // scrypt needs 128 * N * r bytes; Node's default limit of 32 MiB is exactly that at the
  // default parameters, with no room for its own overhead.
  const maxmem = 256 * cost * parameters.blockSize
  return new Promise((resolve, reject) => {
    scrypt(
      password.normalize('NFKC'),
      salt,
      length,
      { N: cost, r: parameters.blockSize, p: parameters.parallelization, maxmem },
      (error, key) => (error ? reject(error) : resolve(key)),
    )
  })
}

function base64(bytes: Buffer): string {
  return bytes.toString('base64').replace(/=+$/, '')
}
