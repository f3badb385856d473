// Client certificates the running Writ must reject, made with Writ's own CA code so that only the
// property under test is wrong. One is an expired certificate from the server's CA. The other is a
// current certificate from another CA with the same trust domain.
import { loadOrCreateCa } from '../../src/authority/ca.js'
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../src/identity/keys.js'
import type { WritClaims } from '../../src/identity/types.js'
import { TRUST_DOMAIN } from './harness.js'

const HOUR_MS = 3_600_000

/** A client certificate and its PKCS#8 key, both PEM. */
export interface ClientCertificate {
  cert: string
  key: string
}

const BOT_CLAIMS: WritClaims = {
  version: 1,
  kind: 'bot',
  roles: ['e2e-reader'],
  traits: {},
  depth: 0,
  generation: 1,
  accessRequests: [],
}

async function issueFrom(
  caDir: string,
  bot: string,
  issuedAt: number,
  ttlSeconds: number,
): Promise<ClientCertificate> {
  const ca = await loadOrCreateCa(caDir, { trustDomain: TRUST_DOMAIN, clock: () => issuedAt })
  const keys = await generateKeyPair()
  const spiffeId = `spiffe://${TRUST_DOMAIN}/bot/${bot}`
  const csrPem = await createCsr(keys, { commonName: bot, spiffeId })
  const issued = await ca.issue({
    csrPem,
    spiffeId,
    commonName: bot,
    ttlSeconds,
    claims: BOT_CLAIMS,
  })
  return { cert: issued.certPem, key: await exportPrivateKeyPem(keys.privateKey) }
}

/**
 * Issues a certificate from the CA in a Writ data directory as if two hours ago, valid for ten
 * minutes, so it expired well before the test runs. The CA files are only read.
 */
export function expiredWritCertificate(dataDir: string, bot: string): Promise<ClientCertificate> {
  return issueFrom(dataDir, bot, Date.now() - 2 * HOUR_MS, 600)
}

/** Creates a second Writ CA in `caDir` and issues a currently valid certificate from it. */
export function foreignCertificate(caDir: string, bot: string): Promise<ClientCertificate> {
  return issueFrom(caDir, bot, Date.now(), 3600)
}
