import { AsnConvert } from '@peculiar/asn1-schema'
import { WritError } from '../errors.js'
import { TaskScopeAsn, TraitAsn, TraitList, Utf8StringList, WritClaimsAsn } from './claims-asn.js'
import { type DerElement, readDerChildren, readDerElement, toBytes } from './der.js'
import type { PrincipalKind, TaskScope, WritClaims } from './types.js'

/**
 * The OID of the Writ claims extension: the `2.25` arc (OIDs derived from a UUID, ITU-T X.667)
 * under the decimal value of UUID 2c9f628a-e8ee-44e0-ae77-ba11d3458f62, generated for Writ.
 */
export const WRIT_CLAIMS_OID = '2.25.59313605696759492722067561113465491298'

/** The only version of the claims structure this build writes and reads. */
export const WRIT_CLAIMS_VERSION = 1

/** The principal kinds version 1 defines. */
export const PRINCIPAL_KINDS: readonly PrincipalKind[] = ['bot', 'user', 'server', 'admin']

const TAG_INTEGER = 0x02
const TAG_UTF8 = 0x0c
const TAG_SEQUENCE = 0x30

interface FieldLayout {
  name: keyof WritClaims
  tag: number
  optional?: boolean
  /** The schema of the element's value; for a context tag it describes the wrapped element. */
  schema?: new () => unknown
}

// The order and tags of the version 1 SEQUENCE; the decoder walks this table so that an error
// names the field that is missing or has the wrong type.
const LAYOUT: readonly FieldLayout[] = [
  { name: 'version', tag: TAG_INTEGER },
  { name: 'kind', tag: TAG_UTF8 },
  { name: 'roles', tag: TAG_SEQUENCE, schema: Utf8StringList },
  { name: 'traits', tag: TAG_SEQUENCE, schema: TraitList },
  { name: 'task', tag: 0xa0, optional: true, schema: TaskScopeAsn },
  { name: 'parentSerial', tag: 0xa1, optional: true },
  { name: 'depth', tag: TAG_INTEGER },
  { name: 'botInstance', tag: 0xa2, optional: true },
  { name: 'generation', tag: TAG_INTEGER },
  { name: 'accessRequests', tag: TAG_SEQUENCE, schema: Utf8StringList },
]

/**
 * Encodes claims as the DER value of the Writ extension. Claims that break the version 1 rules
 * (unknown kind, negative depth) are a programming error and throw a `TypeError`.
 *
 * @example
 *   const der = encodeClaims({ version: 1, kind: 'bot', roles: ['reader'], traits: {},
 *     depth: 0, generation: 1, accessRequests: [] })
 */
export function encodeClaims(claims: WritClaims): ArrayBuffer {
  const problem = findClaimsProblem(claims)
  if (problem) throw new TypeError(`cannot encode Writ claims: ${problem}`)
  return AsnConvert.serialize(toAsn(claims))
}

/**
 * Decodes the DER value of the Writ extension. Throws `identity.claims_version` for a version
 * other than 1 and `identity.invalid_claims` naming the field for anything else that does not
 * match version 1 exactly, including elements this version does not define.
 *
 * @example
 *   const claims = decodeClaims(extension.value)
 */
export function decodeClaims(der: ArrayBuffer | ArrayBufferView): WritClaims {
  const bytes = toBytes(der)
  const fields = splitFields(bytes)
  checkLayout(bytes, fields)
  let parsed: WritClaimsAsn
  try {
    parsed = AsnConvert.parse(bytes, WritClaimsAsn)
  } catch (error) {
    throw invalid('claims do not match the version 1 structure', {}, error)
  }
  const claims = fromAsn(parsed)
  const problem = findClaimsProblem(claims)
  if (problem) throw invalid(problem, {})
  if (!sameBytes(new Uint8Array(AsnConvert.serialize(toAsn(claims))), bytes)) {
    // Re-encoding must give back the input; otherwise the parser skipped something.
    throw invalid('claims contain data that version 1 does not define or are not in DER form', {})
  }
  return claims
}

function splitFields(bytes: Uint8Array): DerElement[] {
  const outer = readDerElement(bytes, 0)
  if (!outer || outer.tag !== TAG_SEQUENCE || outer.end !== bytes.length) {
    throw invalid('claims are not one DER SEQUENCE', {})
  }
  const fields = readDerChildren(bytes, outer)
  if (!fields) throw invalid('claims contain a malformed DER element', {})
  return fields
}

function checkLayout(bytes: Uint8Array, fields: DerElement[]): void {
  checkVersion(bytes, fields[0])
  let index = 0
  for (const layout of LAYOUT) {
    const element = fields[index]
    if (element?.tag === layout.tag) {
      checkFieldSchema(bytes, element, layout)
      index++
      continue
    }
    if (layout.optional) continue
    if (!element) throw invalid(`claims field ${layout.name} is missing`, { field: layout.name })
    throw invalid(
      `claims field ${layout.name} has the wrong type: expected tag 0x${hex(layout.tag)}, found 0x${hex(element.tag)}`,
      { field: layout.name },
    )
  }
  if (index < fields.length) {
    throw invalid('claims contain an element after accessRequests that version 1 does not define', {
      field: 'accessRequests',
    })
  }
}

function checkVersion(bytes: Uint8Array, element: DerElement | undefined): void {
  if (!element) throw invalid('claims field version is missing', { field: 'version' })
  if (element.tag !== TAG_INTEGER) {
    throw invalid(`claims field version has the wrong type: found tag 0x${hex(element.tag)}`, {
      field: 'version',
    })
  }
  const content = bytes.subarray(element.contentStart, element.end)
  if (content.length !== 1 || content[0] !== WRIT_CLAIMS_VERSION) {
    const found = Buffer.from(content).toString('hex')
    throw new WritError(
      'identity.claims_version',
      `unsupported Writ claims version 0x${found}; this build reads version ${WRIT_CLAIMS_VERSION}`,
      { field: 'version', version: found },
    )
  }
}

function checkFieldSchema(bytes: Uint8Array, element: DerElement, layout: FieldLayout): void {
  let inner = element
  if (layout.tag & 0x80) {
    const wrapped = readDerChildren(bytes, element)
    if (wrapped?.length !== 1) {
      throw invalid(`claims field ${layout.name} must wrap exactly one element`, {
        field: layout.name,
      })
    }
    inner = wrapped[0] as DerElement
    if (!layout.schema && inner.tag !== TAG_UTF8) {
      throw invalid(`claims field ${layout.name} must be a UTF8String`, { field: layout.name })
    }
  }
  if (!layout.schema) return
  try {
    AsnConvert.parse(bytes.subarray(inner.start, inner.end), layout.schema)
  } catch (error) {
    throw invalid(`claims field ${layout.name} is malformed`, { field: layout.name }, error)
  }
}

/** Returns the first rule of version 1 that the claims break, or undefined. */
function findClaimsProblem(claims: WritClaims): string | undefined {
  if (claims.version !== WRIT_CLAIMS_VERSION) return `version ${claims.version} is not 1`
  if (!PRINCIPAL_KINDS.includes(claims.kind)) {
    return `claims field kind has unknown value "${String(claims.kind)}"`
  }
  for (const name of ['depth', 'generation'] as const) {
    const value = claims[name]
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
      return `claims field ${name} must be a non-negative integer, found ${String(value)}`
    }
  }
  if (!isStringList(claims.roles)) return 'claims field roles must be a list of strings'
  if (!isStringList(claims.accessRequests)) {
    return 'claims field accessRequests must be a list of strings'
  }
  for (const [name, values] of Object.entries(claims.traits ?? {})) {
    if (!isStringList(values)) return `claims trait "${name}" must be a list of strings`
  }
  return undefined
}

function toAsn(claims: WritClaims): WritClaimsAsn {
  const asn = new WritClaimsAsn()
  asn.version = claims.version
  asn.kind = claims.kind
  asn.roles = new Utf8StringList(claims.roles)
  asn.traits = new TraitList(
    Object.keys(claims.traits)
      .sort()
      .map((name) =>
        Object.assign(new TraitAsn(), { name, values: stringList(claims.traits[name]) }),
      ),
  )
  if (claims.task) asn.task = taskToAsn(claims.task)
  if (claims.parentSerial !== undefined) asn.parentSerial = claims.parentSerial
  asn.depth = claims.depth
  if (claims.botInstance !== undefined) asn.botInstance = claims.botInstance
  asn.generation = claims.generation
  asn.accessRequests = new Utf8StringList(claims.accessRequests)
  return asn
}

function taskToAsn(task: TaskScope): TaskScopeAsn {
  const asn = Object.assign(new TaskScopeAsn(), { id: task.id, reason: task.reason })
  if (task.servers) asn.servers = new Utf8StringList(task.servers)
  if (task.tools) asn.tools = new Utf8StringList(task.tools)
  return asn
}

function fromAsn(asn: WritClaimsAsn): WritClaims {
  const traits: Record<string, string[]> = {}
  for (const trait of asn.traits) {
    if (Object.hasOwn(traits, trait.name)) {
      throw invalid(`claims field traits names "${trait.name}" twice`, { field: 'traits' })
    }
    traits[trait.name] = [...trait.values]
  }
  const claims: WritClaims = {
    version: asn.version as 1,
    kind: asn.kind as PrincipalKind,
    roles: [...asn.roles],
    traits,
    depth: asn.depth,
    generation: asn.generation,
    accessRequests: [...asn.accessRequests],
  }
  if (asn.task) claims.task = taskFromAsn(asn.task)
  if (asn.parentSerial !== undefined) claims.parentSerial = asn.parentSerial
  if (asn.botInstance !== undefined) claims.botInstance = asn.botInstance
  return claims
}

function taskFromAsn(asn: TaskScopeAsn): TaskScope {
  const task: TaskScope = { id: asn.id, reason: asn.reason }
  if (asn.servers) task.servers = [...asn.servers]
  if (asn.tools) task.tools = [...asn.tools]
  return task
}

function stringList(values: string[] | undefined): Utf8StringList {
  return new Utf8StringList(values ?? [])
}

function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string')
}

function sameBytes(left: Uint8Array, right: Uint8Array): boolean {
  return left.length === right.length && Buffer.from(left).equals(Buffer.from(right))
}

function hex(tag: number): string {
  return tag.toString(16).padStart(2, '0')
}

function invalid(message: string, fields: Record<string, unknown>, cause?: unknown): WritError {
  return new WritError('identity.invalid_claims', message, fields, cause ? { cause } : undefined)
}
