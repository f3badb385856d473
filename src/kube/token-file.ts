/**
 * The agent side of Kubernetes joins: reading the projected service-account token that the
 * kubelet writes into the pod and replaces before it expires.
 */
import { readFile } from 'node:fs/promises'
import { WritError } from '../errors.js'

/**
 * The token file of `writ agent --join-method kubernetes` when `--token-path` is not given: a
 * projected volume mounted at `/var/run/secrets/tokens` with `path: writ`.
 */
export const DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH = '/var/run/secrets/tokens/writ'

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

/**
 * Reads the token file now, so each join sends the token the kubelet wrote last. Throws
 * `agent.kubernetes_token_unreadable` naming the path when the file cannot be read and
 * `agent.kubernetes_token_invalid` when it does not hold a JWT. Neither message quotes the file.
 *
 * @example const jwt = await readServiceAccountToken('/var/run/secrets/tokens/writ')
 */
export async function readServiceAccountToken(path: string): Promise<string> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'read failed'
    throw new WritError(
      'agent.kubernetes_token_unreadable',
      `failed to read the service account token ${path} (${code}); mount a projected ` +
        'serviceAccountToken volume there or pass --token-path',
      { path, code },
      { cause: error },
    )
  }
  const token = text.trim()
  if (!COMPACT_JWS.test(token)) {
    throw new WritError(
      'agent.kubernetes_token_invalid',
      `the service account token file ${path} does not contain a JWT; point --token-path at ` +
        'the file of a projected serviceAccountToken volume',
      { path },
    )
  }
  return token
}
