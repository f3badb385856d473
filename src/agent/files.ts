import { randomBytes } from 'node:crypto'
import { chmod, mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { WritError } from '../errors.js'

/** The file names `writ agent` writes and every Writ client reads from an identity directory. */
export const IDENTITY_FILE_NAMES = {
  certPem: 'svid.pem',
  keyPem: 'svid_key.pem',
  bundlePem: 'bundle.pem',
} as const

/** The three PEM texts of an identity directory. */
export interface IdentityFiles {
  certPem: string
  keyPem: string
  bundlePem: string
}

const FILE_MODES: Record<keyof IdentityFiles, number> = {
  certPem: 0o644,
  keyPem: 0o600,
  bundlePem: 0o644,
}

/**
 * Bundle first, so a reader never holds a certificate whose CA it lacks; key before certificate.
 * NOTE: the three renames are separate, so a reader between them can see the new key with the old
 * certificate; readers should retry a TLS key mismatch once.
 */
const RENAME_ORDER: (keyof IdentityFiles)[] = ['bundlePem', 'keyPem', 'certPem']

/**
 * Writes `svid.pem`, `svid_key.pem` (mode 0600) and `bundle.pem` into `dir`, creating it with mode
 * 0700 if missing. Each file is written to a temporary file in the same directory, flushed to disk
 * and renamed over the old one, so a crash never leaves a half-written file.
 *
 * @example
 *   await writeIdentity('/var/lib/writ/agent', { certPem, keyPem, bundlePem })
 */
export async function writeIdentity(dir: string, files: IdentityFiles): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode: 0o700 })
  if (created !== undefined) await chmod(dir, 0o700)

  const temporary = new Map<keyof IdentityFiles, string>()
  try {
    for (const name of RENAME_ORDER) {
      temporary.set(name, await writeTemporary(dir, IDENTITY_FILE_NAMES[name], files[name], name))
    }
    for (const name of RENAME_ORDER) {
      await rename(temporary.get(name) as string, join(dir, IDENTITY_FILE_NAMES[name]))
      temporary.delete(name)
    }
    await syncDirectory(dir)
  } finally {
    for (const path of temporary.values()) await unlink(path).catch(() => {})
  }
}

/**
 * Reads an identity directory. Returns undefined when none of the three files exists and throws
 * `agent.identity_incomplete` naming the missing files when only some do.
 */
export async function readIdentity(dir: string): Promise<IdentityFiles | undefined> {
  const entries = await Promise.all(
    (Object.keys(IDENTITY_FILE_NAMES) as (keyof IdentityFiles)[]).map(async (name) => {
      const path = join(dir, IDENTITY_FILE_NAMES[name])
      return [name, await readFile(path, 'utf8').catch(ignoreMissing)] as const
    }),
  )
  const missing = entries.filter(([, text]) => text === undefined).map(([name]) => name)
  if (missing.length === entries.length) return undefined
  if (missing.length > 0) {
    const names = missing.map((name) => IDENTITY_FILE_NAMES[name]).join(', ')
    throw new WritError(
      'agent.identity_incomplete',
      `identity directory ${dir} is missing ${names}; join again with a new token from writ bots add`,
      { dir, missing: names },
    )
  }
  return Object.fromEntries(entries) as unknown as IdentityFiles
}

async function writeTemporary(
  dir: string,
  fileName: string,
  text: string,
  name: keyof IdentityFiles,
): Promise<string> {
  const path = join(dir, `.${fileName}.${randomBytes(6).toString('hex')}.tmp`)
  const handle = await open(path, 'wx', FILE_MODES[name])
  try {
    // The umask may have narrowed the mode at creation; set it exactly.
    await handle.chmod(FILE_MODES[name])
    await handle.writeFile(text, 'utf8')
    await handle.sync()
  } catch (error) {
    await handle.close()
    await unlink(path).catch(() => {})
    throw error
  }
  await handle.close()
  return path
}

/** Flushes the renames themselves, which live in the directory entry, not in the files. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

function ignoreMissing(error: NodeJS.ErrnoException): undefined {
  if (error.code === 'ENOENT') return undefined
  throw error
}
