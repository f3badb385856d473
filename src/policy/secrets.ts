/**
 * Resolution of secret references in McpServer specs, which keeps upstream credentials out of
 * manifests and the store. A manifest writes `${env:NAME}` (a variable of the Writ process) or
 * `${file:PATH}` (a file's content without its final line break) inside `stdio.args`,
 * `stdio.env` values, `http.url` and `http.headers` values. The gateway resolves them when it
 * starts an upstream. `$${` is a literal `${`.
 *
 * Every resolved value is returned in `secrets` so the gateway can redact it from logs, audit
 * records and responses. Error messages name the reference and the field, never the value.
 */
import { readFileSync } from 'node:fs'
import { WritError } from '../errors.js'
import type { HttpUpstreamConfig, StdioUpstreamConfig } from '../gateway/deps.js'
import type { RateLimitConfig } from '../guard/limits.js'
import { parseDuration } from '../lib/duration.js'
import { resolveIdentityJwt } from './identity-jwt-spec.js'
import type { McpServerSpec } from './specs.js'

/** A piece of a string with references: literal text, or a reference to resolve. */
export type ReferencePart =
  | { text: string }
  | { scheme: 'env' | 'file'; target: string; reference: string }

/** Reads a file as text: `fs.readFileSync` in production, a fake in tests. */
export type ReadTextFile = (path: string, encoding: 'utf8') => string

/** A server spec ready for the gateway, with the secret values it now contains. */
export interface ResolvedServerSpec {
  spec: {
    stdio?: StdioUpstreamConfig
    http?: HttpUpstreamConfig
    startupTimeoutMs?: number
    timeoutMs?: number
    limits?: RateLimitConfig
  }
  secrets: string[]
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
// biome-ignore lint/suspicious/noTemplateCurlyInString: the text shows the reference syntax
const REFERENCE_HELP = 'use ${env:NAME} or ${file:PATH}, or write $${ for a literal ${'

/**
 * Splits a string into literal text and `${scheme:target}` references.
 * Throws `secrets.invalid_reference` naming the reference when it is unterminated, has an unknown
 * scheme, or names an invalid environment variable.
 *
 * @example parseReferences('Bearer ${env:TOKEN}') // [{ text: 'Bearer ' }, { scheme: 'env', … }]
 */
export function parseReferences(value: string): ReferencePart[] {
  const parts: ReferencePart[] = []
  let text = ''
  let index = 0
  while (index < value.length) {
    if (value.startsWith('$${', index)) {
      text += '${'
      index += 3
      continue
    }
    if (!value.startsWith('${', index)) {
      text += value[index]
      index += 1
      continue
    }
    const close = value.indexOf('}', index + 2)
    if (close < 0) {
      throw invalidReference(value.slice(index), `unterminated reference, ${REFERENCE_HELP}`)
    }
    const reference = value.slice(index, close + 1)
    if (text.length > 0) parts.push({ text })
    text = ''
    parts.push(parseReference(reference))
    index = close + 1
  }
  if (text.length > 0) parts.push({ text })
  return parts
}

/** Reports whether a string contains at least one `${...}` reference. */
export function hasReferences(value: string): boolean {
  return parseReferences(value).some((part) => 'reference' in part)
}

function parseReference(reference: string): ReferencePart {
  const inner = reference.slice(2, -1)
  const colon = inner.indexOf(':')
  const scheme = colon < 0 ? '' : inner.slice(0, colon)
  const target = inner.slice(colon + 1)
  if (scheme === 'env') {
    if (!ENV_NAME.test(target)) {
      throw invalidReference(
        reference,
        'an environment variable name uses letters, digits and _ and does not start with a digit',
      )
    }
    return { scheme, target, reference }
  }
  if (scheme === 'file') {
    if (target.length === 0) throw invalidReference(reference, 'the file path is empty')
    return { scheme, target, reference }
  }
  const named = colon < 0 ? 'no scheme' : `unknown scheme "${scheme}"`
  throw invalidReference(reference, `${named}, ${REFERENCE_HELP}`)
}

function invalidReference(reference: string, detail: string): WritError {
  return new WritError('secrets.invalid_reference', `invalid reference "${reference}": ${detail}`, {
    reference,
  })
}

/**
 * Resolves the references in an McpServer spec and converts `startupTimeout` to milliseconds.
 * Throws `secrets.unresolved` naming the server, field and reference when a variable is unset or
 * a file cannot be read, and `secrets.invalid_reference` for malformed references.
 *
 * @example resolveServerSpec(spec, process.env, readFileSync, 'tracker').secrets // ['tok…']
 */
export function resolveServerSpec(
  spec: McpServerSpec,
  env: NodeJS.ProcessEnv,
  readFile: ReadTextFile = readFileSync,
  serverName?: string,
): ResolvedServerSpec {
  const secrets = new Set<string>()
  const resolver = { env, readFile, serverName, secrets }
  const resolved: ResolvedServerSpec['spec'] = {}
  if (spec.stdio) {
    const { command, args, env: variables, cwd } = spec.stdio
    const stdio: StdioUpstreamConfig = { command }
    if (args)
      stdio.args = args.map((arg, index) => resolveText(resolver, arg, `stdio.args[${index}]`))
    if (variables) stdio.env = resolveMap(resolver, variables, 'stdio.env')
    if (cwd !== undefined) stdio.cwd = cwd
    resolved.stdio = stdio
  }
  if (spec.http) {
    const http: HttpUpstreamConfig = { url: resolveText(resolver, spec.http.url, 'http.url') }
    checkResolvedUrl(http.url, serverName)
    if (spec.http.headers) http.headers = resolveMap(resolver, spec.http.headers, 'http.headers')
    const identityJwt = resolveIdentityJwt(spec.http.identityJwt)
    if (identityJwt) http.identityJwt = identityJwt
    if (spec.http.allowPrivateNetwork !== undefined) {
      http.allowPrivateNetwork = spec.http.allowPrivateNetwork
    }
    if (spec.http.allowAddresses) http.allowAddresses = [...spec.http.allowAddresses]
    resolved.http = http
  }
  if (spec.startupTimeout !== undefined) {
    resolved.startupTimeoutMs = parseDuration(spec.startupTimeout, 'startupTimeout') * 1000
  }
  if (spec.timeout !== undefined) resolved.timeoutMs = parseDuration(spec.timeout, 'timeout') * 1000
  if (spec.limits !== undefined) resolved.limits = spec.limits
  return { spec: resolved, secrets: [...secrets] }
}

interface Resolver {
  env: NodeJS.ProcessEnv
  readFile: ReadTextFile
  serverName: string | undefined
  secrets: Set<string>
}

function resolveMap(
  resolver: Resolver,
  map: Readonly<Record<string, string>>,
  field: string,
): Record<string, string> {
  const result: Record<string, string> = {}
  for (const [key, value] of Object.entries(map)) {
    result[key] = resolveText(resolver, value, `${field}.${key}`)
  }
  return result
}

function resolveText(resolver: Resolver, value: string, field: string): string {
  let result = ''
  for (const part of parseReferences(value)) {
    if ('text' in part) {
      result += part.text
      continue
    }
    const secret =
      part.scheme === 'env'
        ? readVariable(resolver, part, field)
        : readSecretFile(resolver, part, field)
    // An empty value is still substituted but not listed: redacting "" would match everywhere.
    if (secret.length > 0) resolver.secrets.add(secret)
    result += secret
  }
  return result
}

function readVariable(
  resolver: Resolver,
  part: { target: string; reference: string },
  field: string,
): string {
  const value = resolver.env[part.target]
  if (value === undefined) {
    throw unresolved(
      resolver,
      part.reference,
      field,
      `environment variable ${part.target} is not set in the Writ process`,
    )
  }
  return value
}

function readSecretFile(
  resolver: Resolver,
  part: { target: string; reference: string },
  field: string,
): string {
  let content: string
  try {
    content = resolver.readFile(part.target, 'utf8')
  } catch (error) {
    // The message keeps only the error code, and the full error stays in `cause`.
    const code = (error as NodeJS.ErrnoException).code ?? 'read failed'
    throw unresolved(
      resolver,
      part.reference,
      field,
      `file ${part.target} cannot be read (${code})`,
      error,
    )
  }
  if (content.endsWith('\r\n')) return content.slice(0, -2)
  if (content.endsWith('\n')) return content.slice(0, -1)
  return content
}

function unresolved(
  resolver: Resolver,
  reference: string,
  field: string,
  detail: string,
  cause?: unknown,
): WritError {
  const server =
    resolver.serverName === undefined ? 'MCP server' : `MCP server "${resolver.serverName}"`
  return new WritError(
    'secrets.unresolved',
    `${server}: ${field}: cannot resolve ${reference}: ${detail}`,
    { server: resolver.serverName, field, reference },
    cause === undefined ? undefined : { cause },
  )
}

/** Checks the URL once references are filled in, without echoing it: it may now hold a secret. */
function checkResolvedUrl(url: string, serverName: string | undefined): void {
  let protocol = ''
  try {
    protocol = new URL(url).protocol
  } catch {
    protocol = ''
  }
  if (protocol === 'http:' || protocol === 'https:') return
  const server = serverName === undefined ? 'MCP server' : `MCP server "${serverName}"`
  throw new WritError(
    'secrets.invalid_url',
    `${server}: http.url is not an http or https URL once its references are resolved`,
    { server: serverName, field: 'http.url' },
  )
}
