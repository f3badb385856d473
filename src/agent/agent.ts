import { type Clock, systemClock } from '../clock.js'
import { isWritError, WritError } from '../errors.js'
import { DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH, readServiceAccountToken } from '../kube/token-file.js'
import { type Logger, silentLogger } from '../log.js'
import { isTransientAgentError } from './agent-errors.js'
import { parseCaPin } from './ca-pin.js'
import { DEFAULT_REQUEST_TIMEOUT_MS, joinWithToken, renew } from './client.js'
import { readIdentity, writeIdentity } from './files.js'
import { describeStoredIdentity, type IssuedIdentity } from './issued.js'
import { generateAgentKeys } from './keys.js'
import {
  type BackoffPolicy,
  backoffDelay,
  DEFAULT_BACKOFF,
  renewalTime,
  sleep as timerSleep,
} from './schedule.js'
import { parseServerAddress, type ServerAddress } from './server-address.js'

/** The last retry of a renewal happens at least this long before the certificate expires. */
const EXPIRY_MARGIN_MS = 1000

/** The way the agent obtained an identity it just wrote or loaded. */
export type IdentityEvent = 'joined' | 'resumed' | 'renewed'

export interface AgentOptions {
  /** `HOST:PORT` of the Writ server. */
  server: string
  /** One-time join token; without it the agent resumes the identity already in `dest`. */
  token?: string
  /**
   * `token` (the default) joins with the one-time `token`. `kubernetes` joins with the
   * service-account token in `tokenPath`, and `token` names the Kubernetes JoinToken.
   */
  joinMethod?: 'token' | 'kubernetes'
  /** The projected service-account token file, read again for each join (`kubernetes` only). */
  tokenPath?: string
  /** `sha256:<hex>` CA pin, required with `token`. */
  caPin?: string
  /** Directory for `svid.pem`, `svid_key.pem` and `bundle.pem`. */
  dest: string
  /** Get one identity (join, or renew the stored one once), write it and return. */
  oneshot?: boolean
  clock?: Clock
  logger?: Logger
  /** Stops the agent: waits end early and a request in flight is abandoned. */
  signal?: AbortSignal
  /** Called after each identity is written (or loaded, for `resumed`). */
  onRenewed?: (identity: IssuedIdentity, event: IdentityEvent) => void
  /** Waits; tests pass one that advances a fake clock. Must resolve early when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  /** Jitter source in [0, 1). */
  random?: () => number
  backoff?: BackoffPolicy
  requestTimeoutMs?: number
}

/** The reason `runAgent` returned; a permanent failure rejects instead. */
export interface AgentResult {
  stopReason: 'oneshot' | 'aborted'
  /** The identity last written, if the agent got that far. */
  identity?: IssuedIdentity
}

interface AgentContext {
  address: ServerAddress
  dest: string
  oneshot: boolean
  clock: Clock
  logger: Logger
  signal: AbortSignal
  onRenewed: (identity: IssuedIdentity, event: IdentityEvent) => void
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>
  random: () => number
  backoff: BackoffPolicy
  timeoutMs: number
  /** Set for Kubernetes joins: the token file to read before each join attempt. */
  serviceAccountTokenPath?: string
}

/**
 * Runs the background agent: joins with the token (or resumes the identity in `dest`), writes the
 * three files, then renews with a new key whenever a third of the lifetime is left, retrying an
 * unreachable or failing server with jittered exponential backoff until the certificate expires.
 * Resolves when `oneshot` is done or `signal` aborts. Rejects with the WritError of a permanent
 * failure: a used, expired or unknown token, a CA pin mismatch, a rejected renewal, expiry.
 *
 * @example
 *   const controller = new AbortController()
 *   process.once('SIGTERM', () => controller.abort())
 *   await runAgent({ server: '127.0.0.1:7443', token, caPin, dest: './id', signal: controller.signal })
 */
export async function runAgent(options: AgentOptions): Promise<AgentResult> {
  const context = createContext(options)
  try {
    const result = await runStages(context, options)
    context.logger.info({ reason: result.stopReason }, 'agent stopped')
    return result
  } catch (error) {
    context.logger.error({ error }, 'agent stopped on a permanent error')
    throw error
  }
}

async function runStages(context: AgentContext, options: AgentOptions): Promise<AgentResult> {
  let identity = options.token
    ? await join(context, options.token, options.caPin)
    : await resume(context)
  if (!identity) return { stopReason: 'aborted' }
  if (context.oneshot) return { stopReason: 'oneshot', identity }
  // A resumed identity was received at an unknown time, so its schedule counts from notBefore.
  let receivedAt: number | undefined = options.token ? context.clock() : undefined

  while (!context.signal.aborted) {
    const renewAt = renewalTime(identity.notBefore, identity.notAfter, receivedAt)
    context.logger.info(
      { ...describe(identity), renewAt: new Date(renewAt).toISOString() },
      'renewal scheduled',
    )
    if (!(await waitUntil(context, renewAt))) break
    const next = await renewOrRejoin(context, identity, options)
    if (!next) break
    identity = next
    receivedAt = context.clock()
  }
  return { stopReason: 'aborted', identity }
}

function createContext(options: AgentOptions): AgentContext {
  if (!options.dest) throw new TypeError('runAgent needs a destination directory in dest')
  if (options.joinMethod === 'kubernetes' && !options.token) {
    throw new WritError(
      'agent.join_token_required',
      'a Kubernetes join needs the name of the JoinToken with method: kubernetes in --token',
    )
  }
  const kubernetes =
    options.joinMethod === 'kubernetes'
      ? { serviceAccountTokenPath: options.tokenPath ?? DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH }
      : {}
  return {
    ...kubernetes,
    address: parseServerAddress(options.server),
    dest: options.dest,
    oneshot: options.oneshot ?? false,
    clock: options.clock ?? systemClock,
    logger: options.logger ?? silentLogger,
    signal: options.signal ?? new AbortController().signal,
    onRenewed: options.onRenewed ?? (() => {}),
    sleep: options.sleep ?? timerSleep,
    random: options.random ?? Math.random,
    backoff: options.backoff ?? DEFAULT_BACKOFF,
    timeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
  }
}

async function join(
  context: AgentContext,
  token: string,
  caPinText: string | undefined,
): Promise<IssuedIdentity | undefined> {
  if (!caPinText) {
    throw new WritError(
      'agent.ca_pin_required',
      'a join token needs the CA pin (--ca-pin sha256:...) printed with it by writ bots add',
    )
  }
  const caPin = parseCaPin(caPinText)
  const keys = await generateAgentKeys()
  const tokenPath = context.serviceAccountTokenPath
  context.logger.info({ server: context.address.text, caPin, tokenPath }, 'joining')
  const identity = await withRetry(context, 'join', undefined, async () => {
    // The kubelet replaces the token file before the token expires, so every attempt reads it.
    const serviceAccountToken =
      tokenPath === undefined ? undefined : await readServiceAccountToken(tokenPath)
    return joinWithToken({ ...requestOptions(context), token, serviceAccountToken, caPin, keys })
  })
  if (identity) await store(context, identity, 'joined')
  return identity
}

async function resume(context: AgentContext): Promise<IssuedIdentity | undefined> {
  const files = await readIdentity(context.dest)
  if (!files) {
    throw new WritError(
      'agent.identity_missing',
      `no identity in ${context.dest} and no join token given; pass --token and --ca-pin from writ bots add`,
      { dir: context.dest },
    )
  }
  const identity = describeStoredIdentity(context.dest, files)
  if (identity.notAfter.getTime() <= context.clock()) {
    throw expiredError(context, identity)
  }
  context.logger.info({ ...describe(identity), dest: context.dest }, 'identity resumed')
  context.onRenewed(identity, 'resumed')
  // A one-shot run without a token means "refresh the stored identity now".
  return context.oneshot ? renewWithRetry(context, identity) : identity
}

async function renewWithRetry(
  context: AgentContext,
  current: IssuedIdentity,
): Promise<IssuedIdentity | undefined> {
  const keys = await generateAgentKeys()
  const deadline = current.notAfter.getTime() - EXPIRY_MARGIN_MS
  const next = await withRetry(context, 'renew', { deadline, current }, () =>
    renew({ ...requestOptions(context), current, keys }),
  )
  if (next) await store(context, next, 'renewed')
  return next
}

/**
 * Renews the identity. An agent that joined with a service-account token joins again, with a
 * fresh read of the token file, when the certificate expired before a renewal got through (for
 * example after a long outage); any other agent then stops with `agent.identity_expired`.
 */
async function renewOrRejoin(
  context: AgentContext,
  current: IssuedIdentity,
  options: AgentOptions,
): Promise<IssuedIdentity | undefined> {
  try {
    return await renewWithRetry(context, current)
  } catch (error) {
    const expired =
      isWritError(error, 'agent.identity_expired') || isWritError(error, 'renew.unauthenticated')
    if (context.serviceAccountTokenPath === undefined || !expired || !options.token) throw error
    context.logger.warn(
      { ...describe(current), error },
      'certificate expired before renewal, joining again with the service account token',
    )
    return join(context, options.token, options.caPin)
  }
}

/**
 * Runs `attempt` until it succeeds, retrying transient failures after a backoff wait. Returns
 * undefined when the signal aborts. A one-shot agent does not retry; a renewal stops retrying
 * at `expiry.deadline`, because an expired certificate can no longer authenticate a renewal.
 */
async function withRetry<T>(
  context: AgentContext,
  operation: 'join' | 'renew',
  expiry: { deadline: number; current: IssuedIdentity } | undefined,
  attempt: () => Promise<T>,
): Promise<T | undefined> {
  for (let failures = 1; ; failures++) {
    if (context.signal.aborted) return undefined
    try {
      return await attempt()
    } catch (error) {
      if (context.signal.aborted) return undefined
      if (!isTransientAgentError(error) || context.oneshot) throw error
      const delayMs = retryDelay(context, failures, expiry, error)
      context.logger.warn(
        { operation, attempt: failures, delayMs, server: context.address.text, error },
        'request failed, retrying',
      )
      await context.sleep(delayMs, context.signal)
    }
  }
}

function retryDelay(
  context: AgentContext,
  failures: number,
  expiry: { deadline: number; current: IssuedIdentity } | undefined,
  cause: unknown,
): number {
  const delay = backoffDelay(failures, context.backoff, context.random)
  if (!expiry) return delay
  const left = expiry.deadline - context.clock()
  if (left <= 0) throw expiredError(context, expiry.current, cause)
  return Math.min(delay, left)
}

async function store(
  context: AgentContext,
  identity: IssuedIdentity,
  event: IdentityEvent,
): Promise<void> {
  await writeIdentity(context.dest, identity)
  context.logger.info({ ...describe(identity), dest: context.dest, event }, 'identity written')
  context.onRenewed(identity, event)
}

/** Waits until the clock reaches `time`; returns false if the signal aborted first. */
async function waitUntil(context: AgentContext, time: number): Promise<boolean> {
  for (let now = context.clock(); now < time; now = context.clock()) {
    if (context.signal.aborted) return false
    await context.sleep(time - now, context.signal)
  }
  return !context.signal.aborted
}

function requestOptions(context: AgentContext) {
  return {
    server: context.address,
    clock: context.clock,
    timeoutMs: context.timeoutMs,
    signal: context.signal,
  }
}

function expiredError(context: AgentContext, identity: IssuedIdentity, cause?: unknown): WritError {
  const expiresAt = identity.notAfter.toISOString()
  const reason =
    cause === undefined
      ? ''
      : ` while the Writ server at ${context.address.text} could not renew it`
  return new WritError(
    'agent.identity_expired',
    `the certificate for ${identity.spiffeId} expires at ${expiresAt}${reason}; join again with a new token from writ bots add`,
    { spiffeId: identity.spiffeId, expiresAt, server: context.address.text },
    { cause },
  )
}

function describe(identity: IssuedIdentity): Record<string, unknown> {
  return {
    spiffeId: identity.spiffeId,
    serial: identity.serial,
    expiresAt: identity.notAfter.toISOString(),
  }
}
