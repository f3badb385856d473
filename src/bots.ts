import { createHash, randomBytes } from 'node:crypto'
import type { Host } from './host.js'
import { API_VERSION, type Resource } from './policy/resource.js'

/** How long a join token made by `writ bots add` stays usable: one hour. */
export const JOIN_TOKEN_TTL_SECONDS = 3600

/** The start of every join token `writ bots add` makes. */
export const JOIN_TOKEN_PREFIX = 'writjt_'

/** What `writ bots add` prints: the secret token exists only here, the store keeps its hash. */
export interface BotEnrollment {
  bot: string
  roles: string[]
  created: boolean
  token: string
  tokenName: string
  expires: string
}

/**
 * Stores the bot (replacing its roles and TTL when it exists) and a new single-use join token.
 * Only the SHA-256 of the token is stored, so a copy of the database cannot be used to join.
 */
export async function enrollBot(
  host: Host,
  name: string,
  roles: string[],
  ttl: string | undefined,
): Promise<BotEnrollment> {
  const created = (await host.store.getResource('Bot', name)) === undefined
  const bot: Resource = {
    apiVersion: API_VERSION,
    kind: 'Bot',
    metadata: { name },
    spec: ttl === undefined ? { roles } : { roles, ttl },
  }
  // The prefix marks the value for secret scanners and keeps a token from ever starting with
  // `-`, which a command line would read as an option.
  const token = `${JOIN_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`
  const tokenHash = createHash('sha256').update(token).digest('hex')
  const expires = new Date(host.clock() + JOIN_TOKEN_TTL_SECONDS * 1000).toISOString()
  const tokenName = `${name}-${tokenHash.slice(0, 8)}`
  const joinToken: Resource = {
    apiVersion: API_VERSION,
    kind: 'JoinToken',
    metadata: { name: tokenName },
    spec: { bot: name, method: 'token', expires, tokenHash },
  }
  await host.store.putResource(bot)
  await host.store.putResource(joinToken)
  await host.audit.record({
    type: 'resource.apply',
    outcome: 'success',
    details: { kind: 'Bot', name, roles, joinToken: tokenName, actor: 'cli' },
  })
  return { bot: name, roles, created, token, tokenName, expires }
}
