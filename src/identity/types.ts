/** The kind of principal a certificate names. */
export type PrincipalKind = 'bot' | 'user' | 'server' | 'admin'

/** The task scope carried by a task certificate (issued by a later part of Writ). */
export interface TaskScope {
  id: string
  reason: string
  servers?: string[]
  tools?: string[]
}

/**
 * Claims carried in the Writ certificate extension (version 1). The encoding is documented in
 * `docs/certificates.md`; `src/identity/claims.ts` encodes and decodes it.
 */
export interface WritClaims {
  version: 1
  kind: PrincipalKind
  roles: string[]
  traits: Record<string, string[]>
  task?: TaskScope
  parentSerial?: string
  depth: number
  botInstance?: string
  generation: number
  accessRequests: string[]
}

/** A verified caller: what the gateway and the authority know about the peer of a request. */
export interface PeerIdentity {
  spiffeId: string
  /** The principal's name (the certificate's CN): a bot or user name. */
  name: string
  /** Serial number as lowercase hex without leading zeros. */
  serial: string
  notBefore: Date
  notAfter: Date
  claims: WritClaims
}
