import { readFileSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { WritError } from '../errors.js'
import type { TlsMaterial } from '../gateway/http-client.js'
import { type CommandInput, UsageError } from './command.js'
import { existingLoginIdentityDir, readProfile } from './writ-home.js'

/** The files `writ agent` writes into an identity directory. */
export const IDENTITY_FILES = { cert: 'svid.pem', key: 'svid_key.pem', bundle: 'bundle.pem' }

/**
 * Resolves --server (or $WRIT_SERVER) and --identity (or $WRIT_IDENTITY) for client commands.
 * Without either identity setting, the certificate of the last `writ login` is used, with the
 * server it came from.
 */
export function clientOptions(input: CommandInput): { server: string; identityDir: string } {
  const explicitIdentity =
    (input.values.identity as string | undefined) || process.env.WRIT_IDENTITY
  const identityDir = explicitIdentity || existingLoginIdentityDir()
  if (!identityDir) {
    throw new UsageError(
      'missing --identity DIR (or $WRIT_IDENTITY): the directory writ agent writes, or log in first with writ login',
    )
  }
  const loginServer = explicitIdentity ? undefined : readProfile()?.server
  const server =
    (input.values.server as string | undefined) ||
    process.env.WRIT_SERVER ||
    loginServer ||
    '127.0.0.1:7443'
  return { server, identityDir }
}

/** Reads the certificate, key and trust bundle, naming the missing file and how to get it. */
export function readClientTls(identityDir: string): TlsMaterial {
  const read = (file: string) => {
    const path = join(identityDir, file)
    try {
      return readFileSync(path, 'utf8')
    } catch (error) {
      throw new WritError(
        'client.identity_missing',
        `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; run writ agent --dest ${identityDir} first`,
        { path },
        { cause: error },
      )
    }
  }
  return {
    cert: read(IDENTITY_FILES.cert),
    key: read(IDENTITY_FILES.key),
    ca: read(IDENTITY_FILES.bundle),
  }
}

/** Sends a GET over mutual TLS and parses the JSON body, failing with the server's error message. */
export function getJson(server: string, path: string, tls: TlsMaterial): Promise<unknown> {
  const url = new URL(path, `https://${server}`)
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'GET', ...tls, servername: serverName(url.hostname) },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown
          try {
            body = JSON.parse(text)
          } catch {
            body = undefined
          }
          if (res.statusCode === 200 && body !== undefined) return resolve(body)
          const message =
            (body as { error?: { message?: string } } | undefined)?.error?.message ??
            text.slice(0, 200)
          reject(
            new WritError(
              'client.request_failed',
              `${url.href} answered ${res.statusCode}: ${message}`,
              {
                status: res.statusCode,
              },
            ),
          )
        })
      },
    )
    req.on('error', (error) =>
      reject(
        new WritError(
          'client.server_unreachable',
          `cannot reach the Writ server at ${server}: ${(error as Error).message}`,
          { server },
          { cause: error },
        ),
      ),
    )
    req.end()
  })
}

function serverName(hostname: string): string | undefined {
  // SNI carries host names only; an IP literal is verified against the certificate's IP SANs.
  return /^[\d.]+$|:/.test(hostname) ? undefined : hostname
}
