// A SPIFFE Workload API client for the tests, generated at run time from the published proto in
// proto/workload.proto, the same way any third-party gRPC client would build one.
import { join } from 'node:path'
import {
  type Client,
  type ClientReadableStream,
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  Metadata,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { ROOT } from './harness.js'

const definition = loadSync(join(ROOT, 'proto/workload.proto'), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
})
const WorkloadApi = (loadPackageDefinition(definition) as GrpcObject)
  .SpiffeWorkloadAPI as ServiceClientConstructor

export interface X509Svid {
  spiffe_id: string
  x509_svid: Buffer
  x509_svid_key: Buffer
  bundle: Buffer
}

export interface X509SvidResponse {
  svids: X509Svid[]
}

export interface BundlesResponse {
  bundles: Record<string, Buffer>
}

export interface JwtSvidResponse {
  svids: Array<{ spiffe_id: string; svid: string }>
}

/** A `google.protobuf.Value` as proto-loader decodes it, with protobufjs's camelCase names. */
export interface StructValue {
  kind: string
  stringValue?: string
  numberValue?: number
  listValue?: { values: StructValue[] }
}

export interface ValidateResponse {
  spiffe_id: string
  claims: { fields: Record<string, StructValue> }
}

type Callback<T> = (error: ServiceError | null, response?: T) => void

/** The client methods of the SpiffeWorkloadAPI service, typed for the tests. */
export interface WorkloadApiClient extends Client {
  FetchX509SVID(request: object, metadata?: Metadata): ClientReadableStream<X509SvidResponse>
  FetchX509Bundles(request: object, metadata?: Metadata): ClientReadableStream<BundlesResponse>
  FetchJWTBundles(request: object, metadata?: Metadata): ClientReadableStream<BundlesResponse>
  FetchJWTSVID(request: object, metadata: Metadata, callback: Callback<JwtSvidResponse>): void
  ValidateJWTSVID(request: object, metadata: Metadata, callback: Callback<ValidateResponse>): void
}

/** Connects to the Workload API on a Unix socket. */
export function connectWorkloadApi(socketPath: string): WorkloadApiClient {
  return new WorkloadApi(
    `unix://${socketPath}`,
    credentials.createInsecure(),
  ) as unknown as WorkloadApiClient
}

/** Returns the metadata that the SPIFFE Workload Endpoint requires on every call. */
export function securityHeader(): Metadata {
  const metadata = new Metadata()
  metadata.set('workload.spiffe.io', 'true')
  return metadata
}

/** Calls a unary method and returns its response, or the ServiceError it failed with. */
export function unary<T>(
  call: (metadata: Metadata, callback: Callback<T>) => void,
  metadata: Metadata = securityHeader(),
): Promise<{ response?: T; error?: ServiceError }> {
  return new Promise((resolve) => {
    call(metadata, (error, response) => {
      resolve(error ? { error } : { response: response as T })
    })
  })
}

/**
 * Collects the messages of a server stream and lets a test wait for the next one that matches,
 * or for the status the stream ended with.
 */
export class StreamReader<T> {
  readonly messages: T[] = []
  error: ServiceError | undefined
  readonly #waiters: Array<() => void> = []

  constructor(readonly stream: ClientReadableStream<T>) {
    stream.on('data', (message: T) => {
      this.messages.push(message)
      this.#wake()
    })
    stream.on('error', (error: ServiceError) => {
      this.error = error
      this.#wake()
    })
  }

  /** Waits for a message at index `from` or later that satisfies `accept`, up to `timeoutMs`. */
  async next(accept: (message: T) => boolean, from = 0, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.messages.slice(from).find(accept)
      if (found) return found
      if (this.error) throw new Error(`stream ended with ${this.error.code}: ${this.error.details}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no matching stream message within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.#waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  /** Waits until the stream ends with an error status and returns it. */
  async failure(timeoutMs = 10_000): Promise<ServiceError> {
    const deadline = Date.now() + timeoutMs
    while (!this.error) {
      if (Date.now() > deadline) throw new Error(`the stream did not fail within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100)
        this.#waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    return this.error
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake()
  }
}
