/**
 * The TokenReview client: sends a service-account token to the Kubernetes API server, which
 * checks that it is valid for an audience (`POST /apis/authentication.k8s.io/v1/tokenreviews`).
 * Unlike a local signature check, the API server also rejects tokens whose pod or service account
 * was deleted.
 */
import { readFileSync } from 'node:fs'
import { parseReferences } from '../policy/secrets.js'
import { ClusterRequestError, requestClusterJson } from './cluster-http.js'
import type { TokenReviewSpec } from './join-spec.js'

/** The path of the TokenReview collection, appended to the API server URL. */
export const TOKEN_REVIEW_PATH = '/apis/authentication.k8s.io/v1/tokenreviews'

/** Reads a file as text: `fs.readFileSync` in production, a fake in tests. */
export type ReadTextFile = (path: string, encoding: 'utf8') => string

/** A bearer token reference that could not be resolved; the message names the reference only. */
export class ReviewerTokenError extends Error {
  override name = 'ReviewerTokenError'
}

/**
 * Sends a TokenReview for `token` with `spec.audiences: [audience]` and returns its `status`.
 * Throws ClusterRequestError when the API server cannot be reached or answers other than 200 or
 * 201, and ReviewerTokenError when the bearer token reference does not resolve.
 *
 * @example
 *   const status = await reviewToken(spec.tokenReview, serviceAccountToken, 'writ.local')
 *   if (status.authenticated === true) ...
 */
export async function reviewToken(
  spec: TokenReviewSpec,
  token: string,
  audience: string,
  env: NodeJS.ProcessEnv = process.env,
  readFile: ReadTextFile = readFileSync,
): Promise<Record<string, unknown>> {
  const bearer = resolveBearerToken(spec.bearerToken, env, readFile)
  const url = `${spec.url.replace(/\/+$/, '')}${TOKEN_REVIEW_PATH}`
  const response = await requestClusterJson({
    method: 'POST',
    url,
    trust: spec,
    headers: { authorization: `Bearer ${bearer}` },
    body: {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: [audience] },
    },
  })
  if (response.status !== 200 && response.status !== 201) {
    // A 4xx carries a Kubernetes Status object whose message says what was wrong.
    const message = (response.body as { message?: unknown } | null)?.message
    const detail = typeof message === 'string' ? `: ${message}` : ''
    throw new ClusterRequestError(
      `the Kubernetes API at ${url} rejected the TokenReview with HTTP ${response.status}${detail}`,
      response.status,
    )
  }
  const status = (response.body as { status?: unknown } | null)?.status
  if (typeof status !== 'object' || status === null || Array.isArray(status)) {
    throw new ClusterRequestError(`${url} returned a TokenReview without status`)
  }
  return status as Record<string, unknown>
}

/**
 * Resolves `${env:NAME}` and `${file:PATH}` in the bearer token at each review, so a token
 * file that Kubernetes rotates is read fresh. A file's final line break is dropped.
 */
export function resolveBearerToken(
  value: string,
  env: NodeJS.ProcessEnv,
  readFile: ReadTextFile,
): string {
  let result = ''
  for (const part of parseReferences(value)) {
    if ('text' in part) {
      result += part.text
      continue
    }
    if (part.scheme === 'env') {
      const variable = env[part.target]
      if (variable === undefined) {
        throw new ReviewerTokenError(
          `tokenReview.bearerToken: environment variable ${part.target} is not set in the Writ process`,
        )
      }
      result += variable
      continue
    }
    try {
      result += readFile(part.target, 'utf8').replace(/\r?\n$/, '')
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'read failed'
      throw new ReviewerTokenError(
        `tokenReview.bearerToken: file ${part.target} cannot be read (${code})`,
        { cause: error },
      )
    }
  }
  if (result === '') {
    throw new ReviewerTokenError(`tokenReview.bearerToken ${value} resolves to an empty token`)
  }
  return result
}
