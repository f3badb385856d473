import { chmodSync } from 'node:fs'
import { unlink } from 'node:fs/promises'
import { resolve } from 'node:path'
import {
  type GrpcObject,
  type handleServerStreamingCall,
  type handleUnaryCall,
  loadPackageDefinition,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  type ServiceClientConstructor,
  status,
} from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { type Clock, systemClock } from '../clock.js'
import { isWritError, WritError } from '../errors.js'
import { type Logger, silentLogger } from '../log.js'
import { DEFAULT_REQUEST_TIMEOUT_MS } from './client.js'
import type { IssuedIdentity } from './issued.js'
import { parseServerAddress, type ServerAddress } from './server-address.js'
import { parseWorkloadApiAddress, prepareSocketPath } from './workload-api-address.js'
import { toGrpcError, WorkloadApiCallError } from './workload-api-errors.js'
import { type JwtBundle, JwtSvidClient } from './workload-api-jwt.js'
import {
  type JwtBundlesResponse,
  toStruct,
  toX509Messages,
  type X509BundlesResponse,
  type X509Messages,
  type X509SvidResponse,
} from './workload-api-messages.js'
import { validateJwtSvid } from './workload-api-validate.js'

/**
 * The published SPIFFE Workload API service definition, shipped in the package's `proto/`
 * folder; this file runs from `dist/src/agent/`, three levels below the package root.
 */
export const WORKLOAD_PROTO_PATH = resolve(import.meta.dirname, '../../../proto/workload.proto')

/**
 * Options for @grpc/proto-loader that keep the proto's snake_case field names, so messages are
 * written exactly as the specification names their fields.
 */
export const WORKLOAD_PROTO_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
} as const

/** The metadata every Workload API call must carry, as a defence against request forgery. */
export const SECURITY_HEADER = 'workload.spiffe.io'

/** A JWT bundle refetch for an unknown `kid` happens at most this often, in milliseconds. */
const BUNDLE_REFRESH_INTERVAL_MS = 10_000

/** How long `close` lets calls finish before it cuts connections, in milliseconds. */
const SHUTDOWN_GRACE_MS = 2000

export interface WorkloadApiOptions {
  /** `unix:///ABSOLUTE/PATH` of the socket to serve on. */
  address: string
  /** `HOST:PORT` of the Writ server that signs JWT-SVIDs. */
  server: string | ServerAddress
  logger?: Logger
  clock?: Clock
  requestTimeoutMs?: number
}

/** A running Workload API endpoint fed by the agent's renewals. */
export interface WorkloadApi {
  readonly socketPath: string
  /** Sets the identity to serve and pushes it to every open stream. */
  setIdentity(identity: IssuedIdentity): void
  /** Ends open streams with Unavailable, stops the server and removes the socket. */
  close(): Promise<void>
}

type Stream<T> = ServerWritableStream<unknown, T>

/**
 * Serves the SPIFFE Workload API on a Unix socket (mode 0600): the X.509-SVID and bundle streams
 * from the identity passed to `setIdentity`, and JWT-SVIDs signed by the Writ server. Every call
 * must carry the `workload.spiffe.io: true` metadata, or it fails with InvalidArgument. Until the
 * first identity arrives, calls fail with Unavailable, which clients retry.
 *
 * @example
 *   const api = await startWorkloadApi({ address: 'unix:///run/writ/agent.sock', server })
 *   await runAgent({ ..., onRenewed: (identity) => api.setIdentity(identity) })
 *   await api.close()
 */
export async function startWorkloadApi(options: WorkloadApiOptions): Promise<WorkloadApi> {
  const socketPath = parseWorkloadApiAddress(options.address)
  const server =
    typeof options.server === 'string' ? parseServerAddress(options.server) : options.server
  const logger = options.logger ?? silentLogger
  const clock = options.clock ?? systemClock
  const jwtClient = new JwtSvidClient({
    server,
    clock,
    timeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
  })
  const state = new EndpointState(jwtClient, clock, logger)

  await prepareSocketPath(socketPath)
  const grpcServer = new Server()
  grpcServer.addService(loadWorkloadService().service, createHandlers(state, logger))
  await bind(grpcServer, socketPath)
  logger.info({ socket: socketPath }, 'workload API listening')

  return {
    socketPath,
    setIdentity: (identity) => state.setIdentity(identity),
    async close() {
      state.endStreams()
      await shutdown(grpcServer)
      await unlink(socketPath).catch(() => {})
      logger.info({ socket: socketPath }, 'workload API stopped')
    },
  }
}

/** Loads the published proto and returns the `SpiffeWorkloadAPI` service constructor. */
export function loadWorkloadService(): ServiceClientConstructor {
  const definition = loadSync(WORKLOAD_PROTO_PATH, WORKLOAD_PROTO_OPTIONS)
  const grpc = loadPackageDefinition(definition) as GrpcObject
  return grpc.SpiffeWorkloadAPI as ServiceClientConstructor
}

/** The identity being served, its encoded messages and the streams that receive updates. */
class EndpointState {
  identity: IssuedIdentity | undefined
  x509: X509Messages | undefined
  jwtBundle: JwtBundle | undefined
  jwtBundleFetchedAt = 0
  readonly svidStreams = new Set<Stream<X509SvidResponse>>()
  readonly x509BundleStreams = new Set<Stream<X509BundlesResponse>>()
  readonly jwtBundleStreams = new Set<Stream<JwtBundlesResponse>>()

  constructor(
    readonly jwtClient: JwtSvidClient,
    readonly clock: Clock,
    readonly logger: Logger,
  ) {}

  setIdentity(identity: IssuedIdentity): void {
    const previous = this.x509
    let next: X509Messages
    try {
      next = toX509Messages(identity)
    } catch (error) {
      // The agent checked this identity before writing it, so this is not expected to happen.
      this.logger.error({ error, spiffeId: identity.spiffeId }, 'workload API identity unusable')
      return
    }
    this.identity = identity
    this.x509 = next
    for (const stream of this.svidStreams) stream.write(this.x509.svid)
    const bundleChanged = !previous || !sameBundles(previous.bundles, this.x509.bundles)
    if (bundleChanged) {
      for (const stream of this.x509BundleStreams) stream.write(this.x509.bundles)
    }
    this.logger.info(
      { spiffeId: identity.spiffeId, serial: identity.serial, streams: this.svidStreams.size },
      'workload API identity updated',
    )
    // The JWT keys are refetched with every new certificate, because nothing else signals a change.
    this.refreshJwtBundle().catch((error: unknown) => {
      this.logger.warn({ error }, 'JWT bundle refresh failed; serving the previous one')
    })
  }

  /** Returns the current identity or fails the call with Unavailable. */
  requireIdentity(): { identity: IssuedIdentity; x509: X509Messages } {
    if (!this.identity || !this.x509) {
      throw new WorkloadApiCallError(
        status.UNAVAILABLE,
        'the Writ agent has no identity yet; retry after it has joined',
      )
    }
    return { identity: this.identity, x509: this.x509 }
  }

  /** Returns the JWT bundle, fetching it when none is cached or `refresh` allows a refetch. */
  async jwtBundles(refresh = false): Promise<Map<string, JwtBundle>> {
    const { x509 } = this.requireIdentity()
    const stale = this.clock() - this.jwtBundleFetchedAt >= BUNDLE_REFRESH_INTERVAL_MS
    if (!this.jwtBundle || (refresh && stale)) await this.refreshJwtBundle()
    return new Map([[x509.trustDomainId, this.jwtBundle as JwtBundle]])
  }

  jwtBundlesResponse(): JwtBundlesResponse {
    const { x509 } = this.requireIdentity()
    const document = Buffer.from(JSON.stringify(this.jwtBundle))
    return { bundles: { [x509.trustDomainId]: document } }
  }

  async refreshJwtBundle(): Promise<void> {
    const { identity } = this.requireIdentity()
    const bundle = await this.jwtClient.fetchBundle(identity)
    this.jwtBundleFetchedAt = this.clock()
    const changed = JSON.stringify(bundle) !== JSON.stringify(this.jwtBundle)
    this.jwtBundle = bundle
    if (changed) {
      for (const stream of this.jwtBundleStreams) stream.write(this.jwtBundlesResponse())
    }
  }

  /** Ends every open stream with Unavailable, so that clients reconnect. */
  endStreams(): void {
    const streams = [...this.svidStreams, ...this.x509BundleStreams, ...this.jwtBundleStreams]
    for (const stream of streams) {
      stream.emit('error', { code: status.UNAVAILABLE, details: 'the Writ agent is stopping' })
    }
  }
}

function createHandlers(state: EndpointState, logger: Logger) {
  const FetchX509SVID: handleServerStreamingCall<unknown, X509SvidResponse> = (call) => {
    serveStream(call, state.svidStreams, logger, () => state.requireIdentity().x509.svid)
  }
  const FetchX509Bundles: handleServerStreamingCall<unknown, X509BundlesResponse> = (call) => {
    serveStream(call, state.x509BundleStreams, logger, () => state.requireIdentity().x509.bundles)
  }
  const FetchJWTBundles: handleServerStreamingCall<unknown, JwtBundlesResponse> = (call) => {
    serveStream(call, state.jwtBundleStreams, logger, async () => {
      await state.jwtBundles()
      return state.jwtBundlesResponse()
    })
  }
  const FetchJWTSVID: handleUnaryCall<{ audience: string[]; spiffe_id: string }, unknown> = (
    call,
    callback,
  ) => {
    answer(call, callback, logger, async () => {
      const { identity } = state.requireIdentity()
      const audience = call.request.audience.filter((value) => value !== '')
      if (audience.length === 0) {
        throw new WorkloadApiCallError(status.INVALID_ARGUMENT, 'audience must be specified')
      }
      const requested = call.request.spiffe_id
      if (requested !== '' && requested !== identity.spiffeId) {
        throw new WorkloadApiCallError(
          status.PERMISSION_DENIED,
          `this agent holds no identity ${requested}; it serves ${identity.spiffeId}`,
        )
      }
      const svid = await state.jwtClient.fetchSvid(identity, audience)
      return { svids: [{ spiffe_id: svid.spiffeId, svid: svid.token, hint: '' }] }
    })
  }
  const ValidateJWTSVID: handleUnaryCall<{ audience: string; svid: string }, unknown> = (
    call,
    callback,
  ) => {
    answer(call, callback, logger, async () => {
      const { audience, svid } = call.request
      if (audience === '') {
        throw new WorkloadApiCallError(status.INVALID_ARGUMENT, 'audience must be specified')
      }
      if (svid === '') {
        throw new WorkloadApiCallError(status.INVALID_ARGUMENT, 'svid must be specified')
      }
      let validated: Awaited<ReturnType<typeof validateJwtSvid>>
      try {
        validated = await validateJwtSvid(svid, audience, await state.jwtBundles(), state.clock)
      } catch (error) {
        if (!isWritError(error, 'jwt_svid.key_unknown')) throw error
        // The signing key may be newer than the cached bundle; refetch once and retry.
        const bundles = await state.jwtBundles(true)
        validated = await validateJwtSvid(svid, audience, bundles, state.clock)
      }
      return { spiffe_id: validated.spiffeId, claims: toStruct(validated.claims) }
    })
  }
  return { FetchX509SVID, FetchX509Bundles, FetchJWTBundles, FetchJWTSVID, ValidateJWTSVID }
}

/**
 * Checks the security header, sends the first message at once and keeps the stream in
 * `streams` for later updates until the client cancels it.
 */
function serveStream<T>(
  call: Stream<T>,
  streams: Set<Stream<T>>,
  logger: Logger,
  first: () => T | Promise<T>,
): void {
  const start = async () => {
    checkSecurityHeader(call)
    const message = await first()
    if (call.cancelled) return
    streams.add(call)
    call.write(message)
  }
  const forget = () => streams.delete(call)
  call.on('cancelled', forget)
  call.on('close', forget)
  call.on('finish', forget)
  start().catch((error: unknown) => {
    forget()
    call.emit('error', toGrpcError(error, call.getPath(), logger))
  })
}

/** Checks the security header and sends the result of `work`, or its error as a status. */
function answer<Request>(
  call: Parameters<handleUnaryCall<Request, unknown>>[0],
  callback: Parameters<handleUnaryCall<Request, unknown>>[1],
  logger: Logger,
  work: () => Promise<unknown>,
): void {
  const run = async () => {
    checkSecurityHeader(call)
    return work()
  }
  run().then(
    (response) => callback(null, response),
    (error: unknown) => callback(toGrpcError(error, call.getPath(), logger)),
  )
}

function checkSecurityHeader(call: { metadata: { get(key: string): unknown[] } }): void {
  const values = call.metadata.get(SECURITY_HEADER)
  if (values.length !== 1 || values[0] !== 'true') {
    throw new WorkloadApiCallError(
      status.INVALID_ARGUMENT,
      `security header missing from request: every Workload API call must carry the metadata "${SECURITY_HEADER}: true"`,
    )
  }
}

function sameBundles(a: X509BundlesResponse, b: X509BundlesResponse): boolean {
  const aKeys = Object.keys(a.bundles)
  if (aKeys.length !== Object.keys(b.bundles).length) return false
  return aKeys.every((key) => {
    const other = b.bundles[key]
    return other?.equals(a.bundles[key] as Buffer) === true
  })
}

/**
 * Binds the server to the socket with a umask that leaves the socket file 0600 from the start,
 * then sets the mode explicitly in case the platform ignored the umask for sockets.
 */
async function bind(server: Server, socketPath: string): Promise<void> {
  const previousUmask = process.umask(0o177)
  try {
    await new Promise<void>((done, fail) => {
      server.bindAsync(`unix://${socketPath}`, ServerCredentials.createInsecure(), (error) => {
        if (!error) {
          done()
          return
        }
        fail(
          new WritError(
            'agent.workload_api_bind_failed',
            `failed to serve the Workload API on ${socketPath}: ${error.message}`,
            { path: socketPath },
            { cause: error },
          ),
        )
      })
    })
  } finally {
    process.umask(previousUmask)
  }
  chmodSync(socketPath, 0o600)
}

async function shutdown(server: Server): Promise<void> {
  await new Promise<void>((done) => {
    const timer = setTimeout(() => {
      server.forceShutdown()
      done()
    }, SHUTDOWN_GRACE_MS)
    server.tryShutdown(() => {
      clearTimeout(timer)
      done()
    })
  })
}
