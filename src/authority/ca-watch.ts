import type { SecureContextOptions } from 'node:tls'
import type { Logger } from '../log.js'
import type { CertificateAuthority, ServerCertificate } from './ca.js'
import type { CaState } from './ca-state.js'
import { finishRotationIfDue, type RotationHost } from './rotation.js'

/** How often the server re-reads the CA state when no interval is given: 250 ms. */
export const DEFAULT_CA_POLL_MS = 250

/**
 * How often the server checks its own certificate for expiry even without a CA change: hourly,
 * far more often than the 7 days before expiry at which it is reissued.
 */
const SERVER_CERT_CHECK_MS = 3_600_000

/** How often the server checks whether a grace period has ended: every 5 s. */
const AUTOMATIC_FINISH_CHECK_MS = 5_000

/** Builds the TLS listener options that depend on the CA: server chain, key and client CAs. */
export function serverTlsOptions(
  ca: CertificateAuthority,
  tls: ServerCertificate,
): SecureContextOptions {
  return {
    key: tls.keyPem,
    cert: `${tls.certPem.trim()}\n${ca.certPem.trim()}\n`,
    ca: ca.bundlePem,
    minVersion: 'TLSv1.2',
  }
}

/** The part of an HTTPS server the watcher updates. */
export interface SecureContextTarget {
  setSecureContext(options: SecureContextOptions): void
}

export interface CaWatcher {
  /** Re-reads the CA state once and applies any change; never rejects. */
  poll(): Promise<void>
  stop(): void
}

/**
 * Keeps a listener in step with the CA state that `writ ca rotate` changes from another process.
 * On a change it reissues the server certificate if the signing CA moved, then swaps the TLS
 * context. New connections then see the new chain and accept client certificates from every
 * trusted CA, while open connections keep the context they were made with. The watcher also
 * retires the old CA when a rotation's grace period has ended.
 *
 * @example
 *   const watcher = watchCa({ host, server, hostnames: ['127.0.0.1'], current: tls, logger })
 */
export function watchCa(options: {
  host: RotationHost
  server: SecureContextTarget
  /** The host names and addresses the server certificate must name. */
  hostnames: string[]
  /** The server certificate the listener was created with. */
  current: ServerCertificate
  logger: Logger
  intervalMs?: number
}): CaWatcher {
  const { host, server, hostnames, logger } = options
  let appliedState: Readonly<CaState> = host.ca.state
  let appliedChain = `${options.current.certPem}|${host.ca.bundlePem}`
  let lastCertificateCheck = host.clock()
  let lastFinishCheck = 0
  let running = false

  async function applyTls(): Promise<void> {
    const tls = await host.ca.serverCertificate(hostnames)
    const chain = `${tls.certPem}|${host.ca.bundlePem}`
    appliedState = host.ca.state
    lastCertificateCheck = host.clock()
    if (chain === appliedChain) return
    server.setSecureContext(serverTlsOptions(host.ca, tls))
    appliedChain = chain
    logger.info(
      {
        sequence: host.ca.state.sequence,
        signing_pin: host.ca.pin,
        trusted: host.ca.trusted.length,
        server_cert_expires: tls.notAfter.toISOString(),
      },
      'TLS context updated for the CA state',
    )
  }

  async function poll(): Promise<void> {
    if (running) return
    running = true
    try {
      // The CA also re-reads the state before each issuance, so the view may have changed
      // without this refresh reporting it. Comparing the state object catches both cases.
      await host.ca.refresh()
      const now = host.clock()
      if (host.ca.state !== appliedState || now - lastCertificateCheck >= SERVER_CERT_CHECK_MS) {
        await applyTls()
      }
      if (now - lastFinishCheck >= AUTOMATIC_FINISH_CHECK_MS) {
        lastFinishCheck = now
        if (await finishRotationIfDue(host)) await applyTls()
      }
    } catch (error) {
      logger.error({ error }, 'CA state refresh failed, keeping the current TLS context')
    } finally {
      running = false
    }
  }

  const timer = setInterval(() => void poll(), options.intervalMs ?? DEFAULT_CA_POLL_MS)
  timer.unref()
  return { poll, stop: () => clearInterval(timer) }
}
