import type { Logger } from '../log.js'
import type { AggregateChild } from './aggregate-child.js'
import { type AggregateCatalog, childLists, LISTS, type ListKind } from './aggregate-lists.js'
import type { JsonRpcMessage } from './jsonrpc.js'

/** A list kind whose changes reach the client as one `list_changed` notification. */
export type NotifiedKind = 'tools' | 'prompts' | 'resources'

/** Pages of one upstream list followed before the rest is left out. */
const MAX_LIST_PAGES = 100

/** The change notification the client receives for each notified kind. */
const CHANGE_NOTIFICATIONS: Record<NotifiedKind, string> = {
  tools: 'notifications/tools/list_changed',
  prompts: 'notifications/prompts/list_changed',
  resources: 'notifications/resources/list_changed',
}

/** Each notified kind with the list kinds its notification covers. */
const CHANGE_GROUPS: Array<[NotifiedKind, ListKind[]]> = [
  ['tools', ['tools']],
  ['prompts', ['prompts']],
  ['resources', ['resources', 'resourceTemplates']],
]

/**
 * Fetches upstream lists into the catalog of one aggregated session. Every upstream list goes
 * through that upstream's pipeline, so the catalog only ever contains items its policy lets
 * the caller see.
 */
export class AggregateLister {
  readonly #catalog: AggregateCatalog
  readonly #children: () => ReadonlyMap<string, AggregateChild>
  readonly #request: (
    child: AggregateChild,
    method: string,
    params: Record<string, unknown> | undefined,
  ) => Promise<JsonRpcMessage>
  readonly #notify: (method: string) => void
  readonly #closed: () => boolean
  readonly #logger: Logger
  readonly #queued = new Map<NotifiedKind, Set<string>>()
  #queue: Promise<void> = Promise.resolve()

  constructor(options: {
    catalog: AggregateCatalog
    children: () => ReadonlyMap<string, AggregateChild>
    /** Sends a request through the child's pipeline and resolves with its response. */
    request: (
      child: AggregateChild,
      method: string,
      params: Record<string, unknown> | undefined,
    ) => Promise<JsonRpcMessage>
    /** Sends a notification without params to the client. */
    notify: (method: string) => void
    closed: () => boolean
    logger: Logger
  }) {
    this.#catalog = options.catalog
    this.#children = options.children
    this.#request = options.request
    this.#notify = options.notify
    this.#closed = options.closed
    this.#logger = options.logger
  }

  /** Lists the given kinds again on the given servers (every ready one by default). */
  async refresh(kinds: ListKind[], servers?: ReadonlySet<string>): Promise<void> {
    const work: Promise<void>[] = []
    for (const child of this.#children().values()) {
      if (!child.ready || (servers !== undefined && !servers.has(child.server))) continue
      for (const kind of kinds) {
        if (!childLists(child, kind)) continue
        work.push(this.#refreshOne(child, kind))
      }
    }
    await Promise.all(work)
  }

  async #refreshOne(child: AggregateChild, kind: ListKind): Promise<void> {
    const items = await this.#fetchList(child, kind)
    // A server that ended while its list was in flight must not come back into the catalog.
    if (this.#children().get(child.server) === child) this.#catalog.set(kind, child.server, items)
  }

  /** Follows one upstream's pages. A failed page ends the listing with the items before it. */
  async #fetchList(child: AggregateChild, kind: ListKind): Promise<Record<string, unknown>[]> {
    const { method, field } = LISTS[kind]
    const items: Record<string, unknown>[] = []
    let cursor: string | undefined
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const params = cursor === undefined ? undefined : { cursor }
      const response = await this.#request(child, method, params)
      if (response.error !== undefined) {
        child.session.logger.warn({ method, error: response.error.message }, 'upstream list failed')
        return items
      }
      const result = (response.result ?? {}) as Record<string, unknown>
      const list = result[field]
      if (Array.isArray(list)) {
        for (const item of list) {
          if (typeof item === 'object' && item !== null) items.push(item as Record<string, unknown>)
        }
      }
      cursor = typeof result.nextCursor === 'string' ? result.nextCursor : undefined
      if (cursor === undefined) return items
    }
    const fields = { method, pages: MAX_LIST_PAGES }
    child.session.logger.warn(fields, 'upstream list has too many pages, rest left out')
    return items
  }

  /**
   * Lists a kind again on the servers that reported a change, after any relisting in progress.
   * The client gets one notification if what it may see changed. Notifications that arrive while
   * a relisting waits join it, so a burst from several servers becomes one notification.
   */
  scheduleRelist(kind: NotifiedKind, server: string): void {
    const queued = this.#queued.get(kind)
    if (queued !== undefined) {
      queued.add(server)
      return
    }
    const servers = new Set([server])
    this.#queued.set(kind, servers)
    this.#queue = this.#queue
      .then(async () => {
        this.#queued.delete(kind)
        if (this.#closed()) return
        const kinds = kindsOf(kind)
        const before = this.#snapshot(kinds)
        await this.refresh(kinds, servers)
        this.#announceChange(kind, before, this.#snapshot(kinds), [...servers])
      })
      .catch((error: unknown) => this.#logger.error({ error, kind }, 'relisting failed'))
  }

  /** Drops an ended server from every list and notifies the client of each list that changed. */
  removeServer(server: string): void {
    const groups = CHANGE_GROUPS.map(([kind, kinds]) => ({
      kind,
      kinds,
      before: this.#snapshot(kinds),
    }))
    this.#catalog.remove(server)
    for (const { kind, kinds, before } of groups) {
      this.#announceChange(kind, before, this.#snapshot(kinds), [server])
    }
  }

  #snapshot(kinds: ListKind[]): string {
    return JSON.stringify(kinds.map((kind) => this.#catalog.exposed(kind)))
  }

  #announceChange(kind: NotifiedKind, before: string, after: string, servers: string[]): void {
    if (before === after) {
      this.#logger.debug({ kind, servers }, 'upstream list changed, nothing visible changed')
      return
    }
    this.#logger.info({ kind, servers }, 'aggregated list changed')
    this.#notify(CHANGE_NOTIFICATIONS[kind])
  }
}

function kindsOf(kind: NotifiedKind): ListKind[] {
  return kind === 'resources' ? ['resources', 'resourceTemplates'] : [kind]
}
