/**
 * The `spec` of each resource kind: its TypeScript shape and its validator. Validators check
 * types, reject unknown fields, and compile patterns and selectors so that a role which would fail
 * to load is rejected when it is applied.
 */

import { type KubernetesJoinSpec, validateKubernetesJoinToken } from '../kube/join-spec.js'
import { validateAccessOptions } from './access-rules.js'
import {
  atField,
  checkLabelKey,
  checkLabelValue,
  expectDuration,
  expectKnownFields,
  expectMapping,
  expectName,
  expectPresent,
  expectString,
  expectStringList,
  expectStringMap,
  expectTime,
  FieldError,
  type FieldPath,
  optionalString,
} from './fields.js'
import { type IdentityJwtSpec, validateIdentityJwt } from './identity-jwt-spec.js'
import { compilePattern } from './pattern.js'
import { validateOidcConnector, validateUser } from './people-specs.js'
import type { ResourceKind } from './resource.js'
import { hasReferences, parseReferences } from './secrets.js'
import { compileSelector, WILDCARD } from './selector.js'

/** The `allow` or `deny` block of a role. */
export interface RoleRules {
  /** Label selector choosing MCP servers, where `{ '*': '*' }` selects every server. */
  mcpServers?: Record<string, string>
  /** Tool name patterns: literals, globs or `^...$` regular expressions. */
  tools?: string[]
}

export interface RoleSpec {
  description?: string
  /** The maximum certificate lifetime this role permits, such as `1h`. */
  maxTtl?: string
  allow?: RoleRules
  deny?: RoleRules
  /** Roles that holders of this role may request for a limited time. */
  requests?: {
    roles: string[]
    /** The longest grant a request may ask for, such as `4h` (default 1h). */
    maxDuration?: string
  }
  /** Requested roles that holders of this role may approve or deny. */
  review?: { roles: string[] }
}

export interface BotSpec {
  roles: string[]
  /** Certificate lifetime, such as `1h`, capped by the roles' `maxTtl`. */
  ttl?: string
  description?: string
}

/**
 * A join token as written in a manifest. `normalizeJoinToken` turns `ttl` into `expires` and
 * `token` into `tokenHash`, so a stored token always has `expires` and `tokenHash`.
 */
export interface JoinTokenSpec {
  bot: string
  method: 'token' | 'kubernetes'
  /** Which service accounts may join and how their tokens are verified (`method: kubernetes`). */
  kubernetes?: KubernetesJoinSpec
  /** ISO 8601 time after which the token no longer works. */
  expires?: string
  ttl?: string
  /** The plain secret, of which only the SHA-256 digest is stored. */
  token?: string
  /** SHA-256 of the secret, 64 lowercase hex digits. */
  tokenHash?: string
}

export interface StdioServerSpec {
  command: string
  args?: string[]
  env?: Record<string, string>
  cwd?: string
}

export interface HttpServerSpec {
  url: string
  headers?: Record<string, string>
  /** Send the caller's identity as a short-lived JWT; see `identity-jwt-spec.ts`. */
  identityJwt?: IdentityJwtSpec
}

/** An upstream MCP server: exactly one of `stdio` and `http`. */
export interface McpServerSpec {
  description?: string
  /** How long the upstream may take to start and respond to `initialize`, such as `30s`. */
  startupTimeout?: string
  stdio?: StdioServerSpec
  http?: HttpServerSpec
}

const JOIN_METHODS = ['token', 'kubernetes']
const TOKEN_HASH = /^[0-9a-f]{64}$/
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** 16 characters: the shortest plain join token accepted, so a token cannot be guessed. */
export const MIN_JOIN_TOKEN_LENGTH = 16

/** Validates the spec of `kind`, throwing a `FieldError` at the first invalid field. */
export function validateSpec(kind: ResourceKind, value: unknown): void {
  const path = ['spec']
  const spec = expectMapping(value, path)
  const validators: Record<ResourceKind, (spec: Record<string, unknown>, path: FieldPath) => void> =
    {
      Role: validateRole,
      Bot: validateBot,
      JoinToken: validateJoinToken,
      McpServer: validateMcpServer,
      User: validateUser,
      OidcConnector: validateOidcConnector,
    }
  validators[kind](spec, path)
}

function validateRole(spec: Record<string, unknown>, path: FieldPath): void {
  expectKnownFields(spec, path, ['description', 'maxTtl', 'allow', 'deny', 'requests', 'review'])
  optionalString(spec, 'description', path)
  if (spec.maxTtl !== undefined) expectDuration(spec.maxTtl, [...path, 'maxTtl'])
  validateAccessOptions(spec, path)
  for (const block of ['allow', 'deny'] as const) {
    if (spec[block] === undefined) continue
    const rulesPath = [...path, block]
    const rules = expectMapping(spec[block], rulesPath)
    expectKnownFields(rules, rulesPath, ['mcpServers', 'tools'])
    if (rules.mcpServers !== undefined)
      validateSelector(rules.mcpServers, [...rulesPath, 'mcpServers'])
    if (rules.tools !== undefined) {
      const tools = expectStringList(rules.tools, [...rulesPath, 'tools'])
      tools.forEach((tool, index) => {
        atField([...rulesPath, 'tools', index], () => compilePattern(tool))
      })
    }
    if (block === 'allow' && rules.tools !== undefined && rules.mcpServers === undefined) {
      // Allowed tools apply only on the servers the same role selects, so without a selector
      // they would grant nothing.
      throw new FieldError(
        [...rulesPath, 'mcpServers'],
        "missing required field: allow.tools needs allow.mcpServers to choose the servers it applies to (use { '*': '*' } for every server)",
      )
    }
  }
}

function validateSelector(value: unknown, path: FieldPath): void {
  const selector = expectStringMap(value, path)
  const entries = Object.entries(selector)
  if (entries.length === 0) {
    throw new FieldError(
      path,
      "empty label selector: name at least one label, or use { '*': '*' } for every server",
    )
  }
  for (const [key, labelValue] of entries) {
    if (key !== WILDCARD) checkLabelKey(key, [...path, key])
    if (labelValue !== WILDCARD) checkLabelValue(labelValue, [...path, key])
  }
  atField(path, () => compileSelector(selector))
}

function validateBot(spec: Record<string, unknown>, path: FieldPath): void {
  expectKnownFields(spec, path, ['roles', 'ttl', 'description'])
  const rolesPath = [...path, 'roles']
  const roles = expectPresent(spec, 'roles', path, 'a list of role names')
  if (!Array.isArray(roles) || roles.length === 0) {
    throw new FieldError(rolesPath, 'expected a non-empty list of role names')
  }
  roles.forEach((role, index) => {
    expectName(role, [...rolesPath, index])
  })
  if (spec.ttl !== undefined) expectDuration(spec.ttl, [...path, 'ttl'])
  optionalString(spec, 'description', path)
}

function validateJoinToken(spec: Record<string, unknown>, path: FieldPath): void {
  expectKnownFields(spec, path, [
    'bot',
    'method',
    'expires',
    'ttl',
    'token',
    'tokenHash',
    'kubernetes',
  ])
  expectName(expectPresent(spec, 'bot', path, 'the name of a Bot'), [...path, 'bot'])
  const method = expectString(expectPresent(spec, 'method', path, 'token'), [...path, 'method'])
  if (!JOIN_METHODS.includes(method)) {
    throw new FieldError(
      [...path, 'method'],
      `unknown join method "${method}" (supported: ${JOIN_METHODS.join(', ')})`,
    )
  }
  if (method === 'kubernetes') {
    validateKubernetesJoinToken(spec, path)
    return
  }
  if (spec.kubernetes !== undefined) {
    throw new FieldError(
      [...path, 'kubernetes'],
      'kubernetes settings apply only to a join token with method: kubernetes',
    )
  }
  requireOneOf(spec, path, 'expires', 'ttl', 'an ISO 8601 time or a duration such as 1h')
  if (spec.expires !== undefined) expectTime(spec.expires, [...path, 'expires'])
  if (spec.ttl !== undefined) expectDuration(spec.ttl, [...path, 'ttl'])
  requireOneOf(spec, path, 'token', 'tokenHash', 'the secret or its SHA-256 hex digest')
  if (spec.token !== undefined) {
    const token = expectString(spec.token, [...path, 'token'])
    if (token.length < MIN_JOIN_TOKEN_LENGTH) {
      throw new FieldError(
        [...path, 'token'],
        `the token is ${token.length} characters long, expected at least ${MIN_JOIN_TOKEN_LENGTH}`,
      )
    }
  }
  if (spec.tokenHash !== undefined) {
    const hash = expectString(spec.tokenHash, [...path, 'tokenHash'])
    if (!TOKEN_HASH.test(hash)) {
      throw new FieldError(
        [...path, 'tokenHash'],
        `invalid token hash "${hash}": expected a SHA-256 digest as 64 lowercase hex digits`,
      )
    }
  }
}

function validateMcpServer(spec: Record<string, unknown>, path: FieldPath): void {
  expectKnownFields(spec, path, ['description', 'startupTimeout', 'stdio', 'http'])
  optionalString(spec, 'description', path)
  if (spec.startupTimeout !== undefined)
    expectDuration(spec.startupTimeout, [...path, 'startupTimeout'])
  requireOneOf(spec, path, 'stdio', 'http', 'a transport')
  if (spec.stdio !== undefined) validateStdio(spec.stdio, [...path, 'stdio'])
  if (spec.http !== undefined) validateHttp(spec.http, [...path, 'http'])
}

function validateStdio(value: unknown, path: FieldPath): void {
  const stdio = expectMapping(value, path)
  expectKnownFields(stdio, path, ['command', 'args', 'env', 'cwd'])
  const command = expectString(expectPresent(stdio, 'command', path, 'the program to start'), [
    ...path,
    'command',
  ])
  rejectReferences(command, [...path, 'command'])
  if (stdio.args !== undefined) {
    expectStringListAllowEmpty(stdio.args, [...path, 'args']).forEach((arg, index) => {
      checkReferences(arg, [...path, 'args', index])
    })
  }
  if (stdio.env !== undefined) {
    const envPath = [...path, 'env']
    for (const [name, item] of Object.entries(expectStringMap(stdio.env, envPath))) {
      if (name.length === 0 || name.includes('=') || name.includes('\0')) {
        throw new FieldError(envPath, `invalid environment variable name ${JSON.stringify(name)}`)
      }
      checkReferences(item, [...envPath, name])
    }
  }
  const cwd = optionalString(stdio, 'cwd', path)
  if (cwd !== undefined) rejectReferences(cwd, [...path, 'cwd'])
}

function validateHttp(value: unknown, path: FieldPath): void {
  const http = expectMapping(value, path)
  expectKnownFields(http, path, ['url', 'headers', 'identityJwt'])
  const urlPath = [...path, 'url']
  const url = expectString(expectPresent(http, 'url', path, 'an http or https URL'), urlPath)
  checkReferences(url, urlPath)
  checkUrl(url, urlPath)
  if (http.headers !== undefined) {
    const headersPath = [...path, 'headers']
    for (const [name, item] of Object.entries(expectStringMap(http.headers, headersPath))) {
      if (!HEADER_NAME.test(name)) {
        throw new FieldError(headersPath, `invalid HTTP header name ${JSON.stringify(name)}`)
      }
      if (/[\r\n\0]/.test(item)) {
        throw new FieldError(
          [...headersPath, name],
          'a header value cannot contain a line break or NUL',
        )
      }
      checkReferences(item, [...headersPath, name])
    }
  }
  if (http.identityJwt !== undefined) {
    const headers = http.headers as Record<string, string> | undefined
    validateIdentityJwt(http.identityJwt, [...path, 'identityJwt'], headers)
  }
}

/**
 * Checks the URL's scheme where it can be known before references are resolved: a URL that
 * starts with a reference is checked by `resolveServerSpec` instead.
 */
function checkUrl(url: string, path: FieldPath): void {
  if (url.startsWith('${')) return
  const standIn = parseReferences(url)
    .map((part) => ('text' in part ? part.text : 'x'))
    .join('')
  let protocol = ''
  try {
    protocol = new URL(standIn).protocol
  } catch {
    protocol = ''
  }
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new FieldError(path, `invalid URL ${JSON.stringify(url)}: expected an http or https URL`)
  }
}

function checkReferences(value: string, path: FieldPath): void {
  atField(path, () => parseReferences(value))
}

function rejectReferences(value: string, path: FieldPath): void {
  if (atField(path, () => hasReferences(value))) {
    throw new FieldError(
      path,
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the text shows the reference syntax
      'references such as ${env:NAME} are resolved only in args, env, url and headers',
    )
  }
}

function expectStringListAllowEmpty(value: unknown, path: FieldPath): string[] {
  if (!Array.isArray(value)) return expectStringList(value, path)
  return value.map((item, index) => {
    if (typeof item !== 'string') return expectString(item, [...path, index])
    return item
  })
}

function requireOneOf(
  spec: Record<string, unknown>,
  path: FieldPath,
  first: string,
  second: string,
  expected: string,
): void {
  const hasFirst = spec[first] !== undefined
  const hasSecond = spec[second] !== undefined
  if (hasFirst && hasSecond) {
    throw new FieldError(path, `set exactly one of ${first} and ${second}, not both`)
  }
  if (!hasFirst && !hasSecond) {
    throw new FieldError(path, `missing ${first} or ${second}: set one of them to ${expected}`)
  }
}
