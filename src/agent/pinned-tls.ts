import { X509Certificate } from 'node:crypto'
import {
  checkServerIdentity,
  connect,
  type DetailedPeerCertificate,
  type TLSSocket,
} from 'node:tls'
import { WritError } from '../errors.js'
import { connectionError, timeoutError } from './agent-errors.js'
import { computeSpkiPin } from './ca-pin.js'
import { isIpHost, type ServerAddress } from './server-address.js'

/** The CA a server presented whose SPKI pin matched, for use as `ca` in the real request. */
export interface PinnedCa {
  caPem: string
  pin: string
}

/**
 * Connects to the server without sending anything, reads the certificate chain it presents and
 * checks that the CA at the top of the chain has the expected SPKI pin, that the leaf chains to
 * it and that the leaf names the host. Runs before a join so a token is never sent to a server
 * whose CA the operator did not pin. Throws `agent.ca_pin_mismatch`,
 * `agent.server_certificate_invalid` or `agent.server_unreachable`.
 *
 * @example
 *   const { caPem } = await fetchPinnedCa(parseServerAddress('127.0.0.1:7443'), pin)
 */
export async function fetchPinnedCa(
  address: ServerAddress,
  expectedPin: string,
  timeoutMs = 10_000,
): Promise<PinnedCa> {
  const chain = await readPeerChain(address, timeoutMs)
  const ca = chain.at(-1) as X509Certificate
  const presented = computeSpkiPin(ca.raw)
  if (presented !== expectedPin) {
    throw new WritError(
      'agent.ca_pin_mismatch',
      `CA pin mismatch: expected ${expectedPin}, the server at ${address.text} presented ${presented}`,
      { server: address.text, expected: expectedPin, presented },
    )
  }
  verifyChain(address, chain)
  return { caPem: ca.toString(), pin: presented }
}

/** Opens a TLS connection that accepts any certificate, only to read the chain, and closes it. */
function readPeerChain(address: ServerAddress, timeoutMs: number): Promise<X509Certificate[]> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({
      host: address.host,
      port: address.port,
      ...(isIpHost(address.host) ? {} : { servername: address.host }),
      // Verification happens below against the pinned CA, not against the system store.
      rejectUnauthorized: false,
    })
    socket.setTimeout(timeoutMs, () => {
      socket.destroy()
      reject(timeoutError(address, timeoutMs))
    })
    socket.once('error', (error) => reject(connectionError(address, error)))
    socket.once('secureConnect', () => {
      const top = socket.getPeerCertificate(true)
      socket.destroy()
      try {
        resolve(flattenChain(address, top))
      } catch (error) {
        reject(error)
      }
    })
  })
}

/** Lists the presented chain leaf first; Node links a self-signed certificate to itself. */
function flattenChain(address: ServerAddress, leaf: DetailedPeerCertificate): X509Certificate[] {
  if (!leaf?.raw) {
    throw new WritError(
      'agent.server_certificate_invalid',
      `the Writ server at ${address.text} presented no certificate`,
      { server: address.text },
    )
  }
  const chain: X509Certificate[] = []
  const seen = new Set<string>()
  let current: DetailedPeerCertificate | undefined = leaf
  while (current?.raw && !seen.has(current.fingerprint256)) {
    seen.add(current.fingerprint256)
    chain.push(new X509Certificate(current.raw))
    current = current.issuerCertificate
  }
  return chain
}

/** Checks each link of the chain and that the leaf names the host the agent connected to. */
function verifyChain(address: ServerAddress, chain: X509Certificate[]): void {
  if (chain.length < 2) {
    throw invalidCertificate(address, 'the chain holds only a self-signed certificate, not a leaf')
  }
  for (let index = 0; index + 1 < chain.length; index++) {
    const child = chain[index] as X509Certificate
    const issuer = chain[index + 1] as X509Certificate
    if (!child.checkIssued(issuer) || !child.verify(issuer.publicKey)) {
      throw invalidCertificate(address, `"${child.subject}" is not signed by "${issuer.subject}"`)
    }
  }
  const leaf = chain[0] as X509Certificate
  const mismatch = checkServerIdentity(address.host, peerShape(leaf))
  if (mismatch) throw invalidCertificate(address, mismatch.message)
}

/** Adapts an X509Certificate to the fields `checkServerIdentity` reads. */
function peerShape(leaf: X509Certificate): DetailedPeerCertificate {
  const commonName = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1]
  return {
    subject: commonName ? { CN: commonName } : {},
    subjectaltname: leaf.subjectAltName,
  } as unknown as DetailedPeerCertificate
}

function invalidCertificate(address: ServerAddress, reason: string): WritError {
  return new WritError(
    'agent.server_certificate_invalid',
    `the Writ server at ${address.text} presented an invalid certificate: ${reason}`,
    { server: address.text, reason },
  )
}
