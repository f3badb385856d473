import type { Logger } from '../log.js'
import type { AggregateChild } from './aggregate-child.js'
import { assignNames, type NameTable, upstreamKey } from './aggregate-names.js'

/** A list method the aggregate merges across upstreams. */
export type ListKind = 'tools' | 'prompts' | 'resources' | 'resourceTemplates'

/** The method, result field and capability of each list kind. */
export const LISTS: Record<ListKind, { method: string; field: string; capability: string }> = {
  tools: { method: 'tools/list', field: 'tools', capability: 'tools' },
  prompts: { method: 'prompts/list', field: 'prompts', capability: 'prompts' },
  resources: { method: 'resources/list', field: 'resources', capability: 'resources' },
  resourceTemplates: {
    method: 'resources/templates/list',
    field: 'resourceTemplates',
    capability: 'resources',
  },
}

type Item = Record<string, unknown>

/**
 * The merged view of one aggregated session: each upstream's last filtered listing, the exposed
 * names of tools and prompts, and which upstream owns each resource URI.
 */
export class AggregateCatalog {
  readonly #items: Record<ListKind, Map<string, Item[]>> = {
    tools: new Map(),
    prompts: new Map(),
    resources: new Map(),
    resourceTemplates: new Map(),
  }
  tools: NameTable = assignNames([])
  prompts: NameTable = assignNames([])
  /** Resource URI to its server, or null when two servers list the same URI. */
  #owners = new Map<string, string | null>()
  readonly #logged = new Set<string>()
  readonly #logger: Logger

  constructor(logger: Logger) {
    this.#logger = logger
  }

  /** Replaces one upstream's listing of one kind and recomputes the names. */
  set(kind: ListKind, server: string, items: Item[]): void {
    this.#items[kind].set(server, items)
    this.#rebuild(kind)
  }

  /** Forgets everything an upstream listed, as when it stops. */
  remove(server: string): void {
    for (const kind of Object.keys(this.#items) as ListKind[]) {
      this.#items[kind].delete(server)
      this.#rebuild(kind)
    }
  }

  /** Returns the list a client receives: exposed names, no refused or ambiguous entries. */
  exposed(kind: ListKind): Item[] {
    const out: Item[] = []
    for (const server of [...this.#items[kind].keys()].sort()) {
      for (const item of this.#items[kind].get(server) ?? []) {
        const shown = this.#expose(kind, server, item)
        if (shown !== undefined) out.push(shown)
      }
    }
    return out
  }

  /**
   * Returns the server that owns a resource URI: the one that listed it, else the only one with
   * a matching template. Returns null when several servers claim it, undefined when none does.
   */
  ownerOf(uri: string): string | null | undefined {
    const listed = this.#owners.get(uri)
    if (listed !== undefined) return listed
    const matches = new Set<string>()
    for (const [server, templates] of this.#items.resourceTemplates) {
      for (const template of templates) {
        const pattern = template.uriTemplate
        if (typeof pattern !== 'string') continue
        if (templatePattern(pattern)?.test(uri) === true) matches.add(server)
      }
    }
    if (matches.size === 0) return undefined
    if (matches.size > 1) return null
    return [...matches][0]
  }

  #expose(kind: ListKind, server: string, item: Item): Item | undefined {
    if (kind === 'tools' || kind === 'prompts') {
      if (typeof item.name !== 'string') return undefined
      const name = this[kind].byUpstream.get(upstreamKey({ server, name: item.name }))
      return name === undefined ? undefined : { ...item, name }
    }
    if (kind === 'resources') {
      return typeof item.uri === 'string' && this.#owners.get(item.uri) === server
        ? item
        : undefined
    }
    return item
  }

  #rebuild(kind: ListKind): void {
    if (kind === 'tools' || kind === 'prompts') {
      const names: Array<{ server: string; name: string }> = []
      for (const [server, items] of this.#items[kind]) {
        for (const item of items) {
          if (typeof item.name === 'string') names.push({ server, name: item.name })
        }
      }
      this[kind] = assignNames(names)
      for (const refused of this[kind].refused) {
        this.#logOnce(`${kind}\0${upstreamKey(refused)}`, () =>
          this.#logger.warn(
            { kind, server: refused.server, name: refused.name, exposed: refused.candidate },
            'aggregated name collides with another server, left out',
          ),
        )
      }
      return
    }
    if (kind === 'resources') this.#rebuildOwners()
  }

  #rebuildOwners(): void {
    const owners = new Map<string, string | null>()
    for (const [server, items] of this.#items.resources) {
      for (const item of items) {
        if (typeof item.uri !== 'string') continue
        const current = owners.get(item.uri)
        owners.set(item.uri, current === undefined || current === server ? server : null)
      }
    }
    for (const [uri, owner] of owners) {
      if (owner !== null) continue
      this.#logOnce(`uri\0${uri}`, () =>
        this.#logger.warn({ uri }, 'resource URI listed by several servers, left out'),
      )
    }
    this.#owners = owners
  }

  #logOnce(key: string, log: () => void): void {
    if (this.#logged.has(key)) return
    this.#logged.add(key)
    log()
  }
}

/** Most `{...}` expressions in a URI template used for routing. */
const MAX_TEMPLATE_EXPRESSIONS = 4

/**
 * Turns an RFC 6570 URI template into an anchored pattern in which each `{...}` expression
 * matches any text, or returns undefined for a template with more than 4 expressions. It only
 * decides which server a URI belongs to; policy still decides access.
 */
export function templatePattern(template: string): RegExp | undefined {
  const parts = template.split(/\{[^}]*\}/)
  // Each `.*` can backtrack against the others, so templates with many expressions never match.
  if (parts.length - 1 > MAX_TEMPLATE_EXPRESSIONS) return undefined
  const escaped = parts.map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
  return new RegExp(`^${escaped.join('.*')}$`, 's')
}

/** Returns the capabilities an aggregated session announces, given the upstreams that started. */
export function mergeCapabilities(children: readonly AggregateChild[]): Record<string, unknown> {
  const has = (name: string) => children.some((child) => child.capabilities[name] !== undefined)
  const capabilities: Record<string, unknown> = { tools: { listChanged: true } }
  if (has('prompts')) capabilities.prompts = { listChanged: true }
  if (has('resources')) {
    const subscribe = children.some(
      (child) => (child.capabilities.resources as { subscribe?: unknown })?.subscribe === true,
    )
    capabilities.resources = { listChanged: true, ...(subscribe ? { subscribe: true } : {}) }
  }
  if (has('logging')) capabilities.logging = {}
  return capabilities
}

/** Returns whether a child announced the capability a list kind needs. */
export function childLists(child: AggregateChild, kind: ListKind): boolean {
  return child.capabilities[LISTS[kind].capability] !== undefined
}
