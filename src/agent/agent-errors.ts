import { isWritError, WritError } from '../errors.js'
import type { ServerAddress } from './server-address.js'

const RECREATE_HINT = 'create a new one with writ bots add'

/**
 * Messages for the server error codes the agent explains itself; other codes keep the server's
 * message. Each names what failed and what to do next.
 */
const SERVER_CODE_MESSAGES: Record<string, (address: ServerAddress) => string> = {
  'join.token_used': () => `join token has already been used; ${RECREATE_HINT}`,
  'join.token_expired': () => `join token has expired; ${RECREATE_HINT}`,
  'join.token_unknown': (address) =>
    `join token is not known to the Writ server at ${address.text}; check the token or ${RECREATE_HINT}`,
}

/** Error codes that a later attempt may clear, so the agent retries them with backoff. */
const TRANSIENT_CODES = new Set(['agent.server_unreachable', 'agent.server_error'])

/** OpenSSL and Node codes for a server certificate that fails verification. */
const CERTIFICATE_ERROR_CODES = new Set([
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'HOSTNAME_MISMATCH',
])

/**
 * Reports whether retrying may help: the server could not be reached, timed out, answered 5xx or
 * 429. Everything else (token problems, pin mismatch, a rejected certificate) is permanent.
 */
export function isTransientAgentError(error: unknown): boolean {
  return isWritError(error) && TRANSIENT_CODES.has(error.code)
}

/** Turns a socket-level failure into a WritError naming the address. */
export function connectionError(address: ServerAddress, cause: unknown): WritError {
  const code = (cause as { code?: unknown }).code
  if (typeof code === 'string' && CERTIFICATE_ERROR_CODES.has(code)) {
    const reason = cause instanceof Error ? cause.message : code
    return new WritError(
      'agent.server_certificate_invalid',
      `the Writ server at ${address.text} presented a certificate that failed verification: ${reason}`,
      { server: address.text, reason: code },
      { cause },
    )
  }
  const reason = typeof code === 'string' ? code : cause instanceof Error ? cause.message : 'error'
  return new WritError(
    'agent.server_unreachable',
    `failed to connect to the Writ server at ${address.text} (${reason}); check --server and that the server is running`,
    { server: address.text, reason },
    { cause },
  )
}

/** The error for a server that accepted the connection but sent no answer in time. */
export function timeoutError(address: ServerAddress, timeoutMs: number): WritError {
  return new WritError(
    'agent.server_unreachable',
    `the Writ server at ${address.text} did not respond within ${timeoutMs} ms`,
    { server: address.text, reason: 'timeout', timeoutMs },
  )
}

/**
 * Turns a non-200 answer into a WritError. A 4xx keeps the server's code so callers can branch on
 * it (`join.token_used`); a 5xx or 429 becomes the transient `agent.server_error`.
 */
export function responseError(address: ServerAddress, status: number, body: unknown): WritError {
  const detail = readErrorBody(body)
  const fields = { server: address.text, status, serverCode: detail.code }
  if (status >= 500 || status === 429) {
    return new WritError(
      'agent.server_error',
      `the Writ server at ${address.text} failed with HTTP ${status}: ${detail.message}`,
      fields,
    )
  }
  const explain = detail.code ? SERVER_CODE_MESSAGES[detail.code] : undefined
  const message = explain
    ? explain(address)
    : `the Writ server at ${address.text} rejected the request with HTTP ${status}: ${detail.message}`
  return new WritError(detail.code ?? 'agent.request_rejected', message, fields)
}

function readErrorBody(body: unknown): { code?: string; message: string } {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error
  const code = typeof error?.code === 'string' ? error.code : undefined
  const message = typeof error?.message === 'string' ? error.message : 'no error message'
  return code ? { code, message } : { message }
}
