/**
 * Storage for tool pins: the tool definitions each upstream MCP server has listed and whether an
 * operator trusts them. `Store` extends this interface; `sqlite-tool-pins.ts` implements it.
 */

/**
 * `approved`: the last seen definition is trusted. `pending`: a tool never approved (new under
 * `require-approval`, or flagged by the description linter). `quarantined`: an approved tool
 * whose definition changed.
 */
export type ToolPinState = 'approved' | 'pending' | 'quarantined'

/** One finding of the description linter, as stored with the pin. */
export interface ToolPinFinding {
  rule: string
  field: string
  match: string
}

/** The pin of one tool of one server. Times are epoch milliseconds. */
export interface ToolPinRecord {
  server: string
  tool: string
  state: ToolPinState
  /** `sha256:<hex>` of the canonical JSON of the definition last seen. */
  digest: string
  /** The digest an operator (or trust on first use) last approved. */
  approvedDigest?: string
  /** The canonical JSON of the definition last seen. */
  definition: string
  /** Linter findings on the definition last seen. */
  findings: ToolPinFinding[]
  firstSeen: number
  /** When the definition last seen was first seen. */
  changed: number
  /** The approver of `approvedDigest`: `trust-on-first-use` or the operator. */
  approvedBy?: string
  approvedAt?: number
}

export interface ToolPinStore {
  /**
   * Reads the pin of `server`/`tool`, passes it to `update` and stores what `update` returns, in
   * one transaction, so a server process and the CLI never overwrite each other's change. Returns
   * the pin before and after; `update` returning undefined leaves the row as it was.
   */
  updateToolPin(
    server: string,
    tool: string,
    update: (current: ToolPinRecord | undefined) => ToolPinRecord | undefined,
  ): Promise<{ before?: ToolPinRecord; after?: ToolPinRecord }>
  /** Every pin, or those of one server, ordered by server and tool. */
  listToolPins(server?: string): Promise<ToolPinRecord[]>
  /** A counter that changes whenever any pin changes, in this process or another. */
  toolPinVersion(): Promise<number>
}
