/**
 * Decisions on requests that an upstream server sends to the client: sampling, elicitation and
 * roots. These are pure functions, and the gateway hook in `upstream-guard.ts` applies them.
 */

import type { ServerRequestAllowances } from '../gateway/deps.js'

/** Server-to-client methods that need the server's manifest to allow them. */
const GOVERNED_SERVER_REQUESTS: Readonly<Record<string, keyof ServerRequestAllowances>> = {
  'sampling/createMessage': 'sampling',
  'elicitation/create': 'elicitation',
  'roots/list': 'roots',
}

/** A verdict on one server-initiated request, with the rule the audit record names. */
export type ServerRequestVerdict =
  | { ok: true; rule: string }
  | { ok: false; rule: string; reason: string; message: string }

/**
 * Decides whether a server-initiated request may reach the client. Methods outside
 * `GOVERNED_SERVER_REQUESTS` return `undefined` and pass unchanged. Each governed method is
 * denied unless `allow` names it, and an elicitation that requests a credential is denied even
 * where elicitation is allowed.
 */
export function decideServerRequest(
  method: string,
  params: unknown,
  allow: ServerRequestAllowances | undefined,
): ServerRequestVerdict | undefined {
  if (!Object.hasOwn(GOVERNED_SERVER_REQUESTS, method)) return undefined
  const capability = GOVERNED_SERVER_REQUESTS[method]!
  if (allow?.[capability] !== true) {
    return {
      ok: false,
      rule: `guard/server-request/${capability}`,
      reason: `${capability}_not_allowed`,
      message: `the gateway does not allow ${method} from this server; set spec.allow.${capability}: true in its McpServer manifest to allow it`,
    }
  }
  if (capability === 'elicitation') {
    const field = sensitiveElicitationField(params)
    if (field !== undefined) {
      return {
        ok: false,
        rule: 'guard/elicitation/credential',
        reason: 'elicitation_requests_credential',
        message: `the gateway does not forward elicitations that ask for a password, secret, token, API key or card number (found in ${field})`,
      }
    }
  }
  return { ok: true, rule: `guard/server-request/${capability}` }
}

/**
 * Words that name a credential. Text is normalised first (camelCase split, `_`, `-` and `.` made
 * spaces, lower case), so `apiKey`, `API_KEY` and `api-key` all become `api key`.
 */
const CREDENTIAL_WORDS =
  /\b(?:password|passwd|passphrase|secrets?|tokens?|api ?keys?|access ?keys?|private ?keys?|credit ?cards?|card ?numbers?|cvv|cvc|security ?codes?|otp|one ?time ?(?:password|code)|2fa|mfa ?codes?)\b/

/** JSON Schema and OpenAPI `format` values that mark a credential field. */
const CREDENTIAL_FORMATS = new Set(['password', 'credit-card', 'creditcard', 'card-number'])

function normaliseWords(text: string): string {
  return text
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .replace(/[_.\-/]+/g, ' ')
    .toLowerCase()
}

function namesCredential(text: unknown): boolean {
  return typeof text === 'string' && CREDENTIAL_WORDS.test(normaliseWords(text))
}

/**
 * Returns where an `elicitation/create` request requests a credential (`message`,
 * `requestedSchema.properties.<name>` or a part of one), or `undefined` when it does not. Property
 * names, titles, descriptions and formats are checked, and so is the message, because a form with
 * a neutral field name can still request a password in its prompt.
 */
export function sensitiveElicitationField(params: unknown): string | undefined {
  if (typeof params !== 'object' || params === null) return undefined
  const { message, requestedSchema } = params as { message?: unknown; requestedSchema?: unknown }
  if (namesCredential(message)) return 'message'
  const properties = (requestedSchema as { properties?: unknown } | null | undefined)?.properties
  if (typeof properties !== 'object' || properties === null) return undefined
  for (const [name, schema] of Object.entries(properties)) {
    const where = `requestedSchema.properties.${JSON.stringify(name.slice(0, 64))}`
    if (namesCredential(name)) return where
    if (typeof schema !== 'object' || schema === null) continue
    const { title, description, format } = schema as Record<string, unknown>
    if (namesCredential(title)) return `${where}.title`
    if (namesCredential(description)) return `${where}.description`
    if (typeof format === 'string' && CREDENTIAL_FORMATS.has(format.toLowerCase())) {
      return `${where}.format`
    }
  }
  return undefined
}
