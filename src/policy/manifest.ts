/**
 * Reading and validating manifests: Kubernetes-style YAML or JSON documents with `apiVersion`,
 * `kind`, `metadata` and `spec`. A file may hold several YAML documents separated by `---`, and a
 * document may be a list of resources, such as the output of `writ get KIND --json`. Every document is
 * validated before any is returned, so a file with one bad document applies nothing.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { type Document, LineCounter, parseAllDocuments } from 'yaml'
import { WritError } from '../errors.js'
import { validateFlowLabel } from '../guard/call-rules.js'
import { parseDuration } from '../lib/duration.js'
import {
  checkLabelKey,
  checkLabelValue,
  expectKnownFields,
  expectMapping,
  expectName,
  expectPresent,
  expectString,
  expectStringMap,
  FieldError,
  type FieldPath,
  formatPath,
} from './fields.js'
import { API_VERSION, RESOURCE_KINDS, type Resource, type ResourceKind } from './resource.js'
import { type JoinTokenSpec, validateSpec } from './specs.js'

/** Position of a resource in its file, for error messages. */
interface Position {
  source: string
  /** 1-based document number, counting empty documents too so it matches the `---` separators. */
  document: number
  /** 1-based item number when the document is a list of resources. */
  item?: number
  yaml: Document
  lineCounter: LineCounter
}

/**
 * Parses and validates every resource in `text`. `source` names the file in error messages.
 * Throws `manifest.invalid` naming the file, document, line and field of the first problem.
 *
 * @example parseManifests(readFileSync('roles.yaml', 'utf8'), 'roles.yaml')
 */
export function parseManifests(text: string, source: string): Resource[] {
  const lineCounter = new LineCounter()
  const documents = parseAllDocuments(text.replace(/^\uFEFF/, ''), {
    lineCounter,
    prettyErrors: false,
  })
  const resources: Resource[] = []
  const seen = new Map<string, string>()
  documents.forEach((yaml, index) => {
    const position: Position = { source, document: index + 1, yaml, lineCounter }
    const value = documentValue(position)
    if (value === null || value === undefined) return
    const items = Array.isArray(value) ? value : [value]
    items.forEach((item, itemIndex) => {
      const at = Array.isArray(value) ? { ...position, item: itemIndex + 1 } : position
      const resource = validateResource(item, at)
      const key = `${resource.kind}/${resource.metadata.name}`
      const first = seen.get(key)
      if (first !== undefined) {
        const message = `duplicate ${resource.kind} "${resource.metadata.name}", already defined in ${first}`
        throw manifestError(at, item, new FieldError(['metadata', 'name'], message))
      }
      seen.set(key, describePosition(at))
      resources.push(resource)
    })
  })
  if (resources.length === 0) {
    throw new WritError(
      'manifest.invalid',
      `${source}: no manifests found, expected YAML documents or JSON objects with apiVersion, kind, metadata and spec`,
      { source },
    )
  }
  return resources
}

/** Converts one YAML document to plain values, turning syntax errors into `manifest.invalid`. */
function documentValue(position: Position): unknown {
  const { yaml, lineCounter, source, document } = position
  const syntaxError = yaml.errors[0]
  if (syntaxError) {
    const { line, col } = lineCounter.linePos(syntaxError.pos[0])
    throw new WritError(
      'manifest.invalid',
      `${source}, document ${document}, line ${line} column ${col}: invalid YAML: ${syntaxError.message}`,
      { source, document, line, column: col },
      { cause: syntaxError },
    )
  }
  try {
    return yaml.toJS({ maxAliasCount: 100 })
  } catch (error) {
    // The yaml package throws when aliases expand too far, which guards against alias bombs.
    throw new WritError(
      'manifest.invalid',
      `${source}, document ${document}: invalid YAML: ${(error as Error).message}`,
      { source, document },
      { cause: error },
    )
  }
}

function validateResource(value: unknown, position: Position): Resource {
  try {
    const object = expectMapping(value, [])
    expectKnownFields(object, [], ['apiVersion', 'kind', 'metadata', 'spec'])
    const apiVersion = expectString(expectPresent(object, 'apiVersion', [], `"${API_VERSION}"`), [
      'apiVersion',
    ])
    if (apiVersion !== API_VERSION) {
      throw new FieldError(
        ['apiVersion'],
        `unsupported apiVersion "${apiVersion}", expected "${API_VERSION}"`,
      )
    }
    const kind = expectKind(
      expectPresent(object, 'kind', [], `one of ${RESOURCE_KINDS.join(', ')}`),
    )
    const metadata = validateMetadata(expectPresent(object, 'metadata', [], 'a mapping with name'))
    const spec = expectPresent(object, 'spec', [], `a mapping with the fields of a ${kind}`)
    validateSpec(kind, spec)
    return { apiVersion: API_VERSION, kind, metadata, spec: spec as Record<string, unknown> }
  } catch (error) {
    if (error instanceof FieldError) throw manifestError(position, value, error)
    throw error
  }
}

function expectKind(value: unknown): ResourceKind {
  const kind = expectString(value, ['kind'])
  if (!(RESOURCE_KINDS as readonly string[]).includes(kind)) {
    throw new FieldError(
      ['kind'],
      `unknown kind "${kind}" (valid kinds: ${RESOURCE_KINDS.join(', ')})`,
    )
  }
  return kind as ResourceKind
}

function validateMetadata(value: unknown): Resource['metadata'] {
  const path = ['metadata']
  const metadata = expectMapping(value, path)
  expectKnownFields(metadata, path, ['name', 'labels'])
  const name = expectName(expectPresent(metadata, 'name', path, 'a lowercase name such as files'), [
    ...path,
    'name',
  ])
  if (metadata.labels === undefined) return { name }
  const labelsPath = [...path, 'labels']
  const labels = expectStringMap(metadata.labels, labelsPath)
  for (const [key, label] of Object.entries(labels)) {
    checkLabelKey(key, [...labelsPath, key])
    checkLabelValue(label, [...labelsPath, key])
  }
  validateFlowLabel(labels, labelsPath)
  return { name, labels }
}

function manifestError(position: Position, value: unknown, error: FieldError): WritError {
  const path = formatPath(error.path)
  const line = lineOf(position, error.path)
  const where = `${describePosition(position)}${describeResource(value)}`
  const located = line === undefined ? where : `${where}, line ${line}`
  const message =
    path.length > 0 ? `${located}: ${path}: ${error.message}` : `${located}: ${error.message}`
  return new WritError(
    'manifest.invalid',
    message,
    { source: position.source, document: position.document, item: position.item, path, line },
    { cause: error },
  )
}

function describePosition(position: Position): string {
  const item = position.item === undefined ? '' : `, item ${position.item}`
  return `${position.source}, document ${position.document}${item}`
}

/** Returns ` (Role "reader")` when the document's kind and name can be read, else nothing. */
function describeResource(value: unknown): string {
  if (typeof value !== 'object' || value === null) return ''
  const { kind, metadata } = value as { kind?: unknown; metadata?: { name?: unknown } }
  if (typeof kind !== 'string' || !(RESOURCE_KINDS as readonly string[]).includes(kind)) return ''
  const name = typeof metadata === 'object' && metadata !== null ? metadata.name : undefined
  return typeof name === 'string' ? ` (${kind} ${JSON.stringify(name)})` : ` (${kind})`
}

/** Finds the line of the field, or of its nearest parent present in the document. */
function lineOf(position: Position, path: FieldPath): number | undefined {
  const prefix = position.item === undefined ? [] : [position.item - 1]
  for (let length = path.length; length >= 0; length--) {
    const keys = [...prefix, ...path.slice(0, length)]
    const node = keys.length === 0 ? position.yaml.contents : position.yaml.getIn(keys, true)
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range
    if (range) return position.lineCounter.linePos(range[0]).line
  }
  return undefined
}

/**
 * Reads a manifest file, or standard input for `-`. Throws `manifest.read_failed` naming the path.
 *
 * @example parseManifests(...Object.values(readManifestFile('roles.yaml')))
 */
export function readManifestFile(path: string): { text: string; source: string } {
  const source = path === '-' ? 'stdin' : path
  let text: string
  try {
    text = readFileSync(path === '-' ? 0 : path, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error'
    throw new WritError(
      'manifest.read_failed',
      `failed to read manifest file "${path}" (${code}): check the path and its permissions`,
      { path, code },
      { cause: error },
    )
  }
  if (text.length > MAX_MANIFEST_CHARS) {
    throw new WritError(
      'manifest.too_large',
      `manifest file "${path}" has ${text.length} characters, more than the ${MAX_MANIFEST_CHARS} allowed; split it into several files`,
      { path, length: text.length },
    )
  }
  return { text, source }
}

/** The largest manifest file accepted, in characters: 1 MiB of text is far beyond any policy. */
export const MAX_MANIFEST_CHARS = 1024 * 1024

/**
 * Prepares a JoinToken for storage: `ttl` becomes an absolute `expires` counted from `now`, and a
 * plain `token` is replaced by its SHA-256 hex digest, so the store never contains the secret.
 * Resources of other kinds are returned unchanged.
 *
 * @example normalizeJoinToken(parseManifests(text, 'tokens.yaml')[0], clock())
 */
export function normalizeJoinToken(resource: Resource, now: number = Date.now()): Resource {
  if (resource.kind !== 'JoinToken') return resource
  const { ttl, token, ...rest } = resource.spec as unknown as JoinTokenSpec
  const spec: JoinTokenSpec = { ...rest }
  if (ttl !== undefined) {
    spec.expires = new Date(now + parseDuration(ttl, 'ttl') * 1000).toISOString()
  }
  if (token !== undefined) {
    spec.tokenHash = createHash('sha256').update(token).digest('hex')
  }
  return { ...resource, spec: spec as unknown as Record<string, unknown> }
}
