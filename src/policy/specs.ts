/**
 * The `spec` of each resource kind: its TypeScript shape and its validator. Validators check
 * types, reject unknown fields, and compile patterns and selectors so that a role which would fail
 * to load is rejected when it is applied.
 */

import type { ServerRequestAllowances } from '../gateway/deps.js'
import { validateApprovalRules, validateRoleFlow } from '../guard/call-rules.js'
import type { RateLimitConfig } from '../guard/limits.js'
import { validateAddressAllowance, validateRateLimits } from '../guard/limits-spec.js'
import { validateExternal, validateServerAllowances } from '../guard/server-trust-spec.js'
import { validateToolPinning } from '../guard/tool-pinning-spec.js'
import type { ToolPinningMode } from '../guard/tool-pins.js'
import { type KubernetesJoinSpec, validateKubernetesJoinToken } from '../kube/join-spec.js'
import { validateAccessOptions } from './access-rules.js'
import { type ArgRuleSpec, compileArgRule } from './arg-rules.js'
import {
  atField,
  checkLabelKey,
  checkLabelValue,
  describeValue,
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
  /** `allow` only: CEL rules on the arguments of calls to matching tools; see `arg-rules.ts`. */
  args?: ArgRuleSpec[]
  /** Resource URI patterns, for `resources/*` methods; a role without them allows no resource. */
  resources?: string[]
  /** Prompt name patterns, for `prompts/*` methods; a role without them allows no prompt. */
  prompts?: string[]
}

export interface RoleSpec {
  description?: string
  /** The maximum certificate lifetime this role permits, such as `1h`. */
  maxTtl?: string
  /** Rate limits for each holder of this role on each server; the strictest role applies. */
  limits?: RateLimitConfig
  allow?: RoleRules
  deny?: RoleRules
  /** Roles that holders of this role may request for a limited time. */
  requests?: {
    roles: string[]
    /** The maximum grant duration a request may ask for, such as `4h` (default 1h). */
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
  /** The service accounts that may join, and how their tokens are verified (`method: kubernetes`). */
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
  /** Allows loopback, link-local and private addresses; cloud metadata addresses stay refused. */
  allowPrivateNetwork?: boolean
  /** Non-public addresses or CIDR ranges this upstream may reach, such as `10.1.0.0/16`. */
  allowAddresses?: string[]
}

/** An upstream MCP server: exactly one of `stdio` and `http`. */
export interface McpServerSpec {
  description?: string
  /** How long the upstream may take to start and respond to `initialize`, such as `30s`. */
  startupTimeout?: string
  /** How long one tools/call may wait for its response, such as `60s` (the default). */
  timeout?: string
  /** Rate limits per principal on this server: `{ callsPerMinute, burst?, tools? }`. */
  limits?: RateLimitConfig
  /** New tools are trusted when first listed (the default) or held until approved. */
  toolPinning?: ToolPinningMode
  /** Server-initiated requests the client may receive: `{ sampling, elicitation, roots }`. */
  allow?: ServerRequestAllowances
  /** Marks a server outside the operator's control (as does the label `external: 'true'`). */
  external?: boolean
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
  expectKnownFields(spec, path, [
    'description',
    'maxTtl',
    'allow',
    'deny',
    'requests',
    'review',
    'flow',
    'limits',
  ])
  optionalString(spec, 'description', path)
  if (spec.flow !== undefined) validateRoleFlow(spec.flow, [...path, 'flow'])
  if (spec.limits !== undefined) validateRateLimits(spec.limits, [...path, 'limits'])
  if (spec.maxTtl !== undefined) expectDuration(spec.maxTtl, [...path, 'maxTtl'])
  validateAccessOptions(spec, path)
  for (const block of ['allow', 'deny'] as const) {
    if (spec[block] === undefined) continue
    const rulesPath = [...path, block]
    const rules = expectMapping(spec[block], rulesPath)
    const fields = ['mcpServers', 'tools', 'resources', 'prompts']
    expectKnownFields(
      rules,
      rulesPath,
      block === 'allow' ? [...fields, 'args', 'approval'] : fields,
    )
    if (rules.mcpServers !== undefined)
      validateSelector(rules.mcpServers, [...rulesPath, 'mcpServers'])
    for (const field of ['tools', 'resources', 'prompts'] as const) {
      if (rules[field] === undefined) continue
      const patterns = expectStringList(rules[field], [...rulesPath, field])
      patterns.forEach((pattern, index) => {
        atField([...rulesPath, field, index], () => compilePattern(pattern))
      })
    }
    if (rules.args !== undefined) validateArgRules(rules.args, [...rulesPath, 'args'])
    if (rules.approval !== undefined) {
      validateApprovalRules(rules.approval, [...rulesPath, 'approval'])
    }
    const granting = ['tools', 'args', 'resources', 'prompts', 'approval'].find(
      (f) => rules[f] !== undefined,
    )
    if (block === 'allow' && granting !== undefined && rules.mcpServers === undefined) {
      // Allowed tools apply only on the servers the same role selects, so without a selector
      // they would grant nothing.
      throw new FieldError(
        [...rulesPath, 'mcpServers'],
        `missing required field: allow.${granting} needs allow.mcpServers to choose the servers it applies to (use { '*': '*' } for every server)`,
      )
    }
  }
}

function validateArgRules(value: unknown, path: FieldPath): void {
  if (!Array.isArray(value)) {
    throw new FieldError(
      path,
      `expected a list of { tools, rule } entries, got ${describeValue(value)}`,
    )
  }
  value.forEach((item, index) => {
    const itemPath = [...path, index]
    const entry = expectMapping(item, itemPath)
    expectKnownFields(entry, itemPath, ['tools', 'rule'])
    const toolsPath = [...itemPath, 'tools']
    const tools = expectStringList(
      expectPresent(entry, 'tools', itemPath, 'a list of tool name patterns'),
      toolsPath,
    )
    if (tools.length === 0)
      throw new FieldError(toolsPath, 'expected at least one tool name pattern')
    tools.forEach((tool, toolIndex) => {
      atField([...toolsPath, toolIndex], () => compilePattern(tool))
    })
    const rulePath = [...itemPath, 'rule']
    const rule = expectString(expectPresent(entry, 'rule', itemPath, 'a CEL expression'), rulePath)
    atField(rulePath, () => compileArgRule(rule))
  })
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
  expectKnownFields(spec, path, [
    'description',
    'startupTimeout',
    'timeout',
    'limits',
    'toolPinning',
    'allow',
    'external',
    'stdio',
    'http',
  ])
  optionalString(spec, 'description', path)
  if (spec.startupTimeout !== undefined)
    expectDuration(spec.startupTimeout, [...path, 'startupTimeout'])
  if (spec.timeout !== undefined) expectDuration(spec.timeout, [...path, 'timeout'])
  if (spec.limits !== undefined) validateRateLimits(spec.limits, [...path, 'limits'])
  if (spec.toolPinning !== undefined)
    validateToolPinning(spec.toolPinning, [...path, 'toolPinning'])
  if (spec.allow !== undefined) validateServerAllowances(spec.allow, [...path, 'allow'])
  if (spec.external !== undefined) validateExternal(spec.external, [...path, 'external'])
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
  expectKnownFields(http, path, [
    'url',
    'headers',
    'identityJwt',
    'allowPrivateNetwork',
    'allowAddresses',
  ])
  validateAddressAllowance(http, path)
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
