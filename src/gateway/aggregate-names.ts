import { createHash } from 'node:crypto'

/**
 * Names exposed on the aggregated endpoint: `<server>__<name>`. Server names are DNS labels
 * (lowercase letters, digits and `-`), so the first `__` always ends the server part.
 */
export const NAME_SEPARATOR = '__'

/** The form every exposed tool and prompt name has, which common MCP clients require. */
export const EXPOSED_NAME = /^[a-zA-Z0-9_-]{1,64}$/

const MAX_NAME_LENGTH = 64
/** Hex digits of the SHA-256 suffix on shortened names: 48 bits. */
const HASH_LENGTH = 12

/** A tool or prompt as one upstream server names it. */
export interface UpstreamName {
  server: string
  name: string
}

/** A name the aggregate cannot expose, with the reason it logs and audits. */
export interface RefusedName extends UpstreamName {
  candidate: string
  reason: 'name_collision'
}

/** The outcome of naming one kind (tools or prompts) across every upstream of a session. */
export interface NameTable {
  /** Exposed name to the upstream that owns it; each exposed name maps to exactly one. */
  exposed: Map<string, UpstreamName>
  /** Exposed name of each upstream item, keyed by `server` and `name`. */
  byUpstream: Map<string, string>
  /** Plain `<server>__<name>` forms that were part of a collision and route nowhere. */
  ambiguous: Set<string>
  refused: RefusedName[]
}

/** Returns `<server>__<name>`, before any check. */
export function plainName(item: UpstreamName): string {
  return `${item.server}${NAME_SEPARATOR}${item.name}`
}

/**
 * Returns the shortened form of a name: its plain form with every character outside
 * `[a-zA-Z0-9_-]` replaced by `_`, cut so that `_` and a SHA-256 suffix fit in 64 characters.
 * The suffix hashes the server and the upstream name, so it is the same in every process.
 *
 * @example hashedName({ server: 'files', name: 'read.file' }) // 'files__read_file_3f1c…'
 */
export function hashedName(item: UpstreamName): string {
  const digest = createHash('sha256')
    .update(item.server)
    .update('\0')
    .update(item.name)
    .digest('hex')
    .slice(0, HASH_LENGTH)
  const readable = plainName(item)
    .replace(/[^a-zA-Z0-9_-]/g, '_')
    .slice(0, MAX_NAME_LENGTH - HASH_LENGTH - 1)
  return `${readable}_${digest}`
}

/** Returns the plain form when it is a valid exposed name, else the shortened form. */
export function candidateName(item: UpstreamName): string {
  const plain = plainName(item)
  return EXPOSED_NAME.test(plain) ? plain : hashedName(item)
}

/**
 * Assigns an exposed name to every upstream item. The result depends only on the set of items,
 * never on their order, so names stay the same across restarts and listings.
 *
 * Items whose candidate names are equal all move to their shortened form, so none of them keeps
 * a name that another item could also claim. Items that still share a name after that (a hash
 * collision, or a literal upstream name equal to another item's shortened form) are refused.
 */
export function assignNames(items: readonly UpstreamName[]): NameTable {
  const unique = dedupe(items)
  const ambiguous = new Set<string>()
  const first = groupBy(unique, candidateName)
  const second: Array<[string, UpstreamName]> = []
  for (const [candidate, group] of first) {
    if (group.length === 1) {
      second.push([candidate, group[0]!])
      continue
    }
    ambiguous.add(candidate)
    for (const item of group) second.push([hashedName(item), item])
  }
  const exposed = new Map<string, UpstreamName>()
  const byUpstream = new Map<string, string>()
  const refused: RefusedName[] = []
  const final = groupBy(second, ([name]) => name)
  for (const [name, group] of final) {
    if (group.length === 1) {
      const item = group[0]![1]
      exposed.set(name, item)
      byUpstream.set(upstreamKey(item), name)
      continue
    }
    ambiguous.add(name)
    for (const [, item] of group)
      refused.push({ ...item, candidate: name, reason: 'name_collision' })
  }
  return { exposed, byUpstream, ambiguous, refused }
}

/** Returns the key `byUpstream` uses for an item. */
export function upstreamKey(item: UpstreamName): string {
  return `${item.server}\0${item.name}`
}

/**
 * Splits an exposed name that is not in the table into the server and upstream name it would
 * have had in plain form, or returns undefined when no server in `servers` owns the prefix.
 */
export function splitPlainName(
  exposed: string,
  servers: readonly string[],
): UpstreamName | undefined {
  if (!EXPOSED_NAME.test(exposed)) return undefined
  const index = exposed.indexOf(NAME_SEPARATOR)
  if (index <= 0) return undefined
  const server = exposed.slice(0, index)
  const name = exposed.slice(index + NAME_SEPARATOR.length)
  if (name === '' || !servers.includes(server)) return undefined
  return { server, name }
}

function dedupe(items: readonly UpstreamName[]): UpstreamName[] {
  const seen = new Map<string, UpstreamName>()
  for (const item of items) seen.set(upstreamKey(item), { server: item.server, name: item.name })
  return [...seen.values()]
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>()
  for (const item of items) {
    const name = key(item)
    const group = groups.get(name)
    if (group === undefined) groups.set(name, [item])
    else group.push(item)
  }
  return groups
}
