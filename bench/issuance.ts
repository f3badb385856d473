/**
 * Certificate issuance rate of Writ's CA on one core: `issue()` called in a loop on the main
 * thread, each call verifying the same PEM CSR and signing a leaf with the full Writ profile.
 * Token checks, database writes and audit records of a real join are not part of this figure.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createCsrPem, generateAgentKeys } from '../src/agent/keys.js'
import { loadOrCreateCa } from '../src/authority/ca.js'
import type { WritClaims } from '../src/identity/types.js'

/** The result of one issuance measurement. */
export interface IssuanceResult {
  certificates: number
  seconds: number
  perSecond: number
  /** CPU time of this process per certificate, in microseconds. */
  cpuMicrosPerCertificate: number
}

const TRUST_DOMAIN = 'bench.local'
const WARMUP_CERTIFICATES = 200

/** Issues certificates for `seconds` after a short warm-up and returns the rate. */
export async function measureIssuance(seconds: number): Promise<IssuanceResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-bench-ca-'))
  try {
    const ca = await loadOrCreateCa(dataDir, { trustDomain: TRUST_DOMAIN })
    const keys = await generateAgentKeys()
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bot/bench-agent`
    const csrPem = createCsrPem(keys, { commonName: 'bench-agent', spiffeId })
    const claims: WritClaims = {
      version: 1,
      kind: 'bot',
      roles: ['bench-caller'],
      traits: {},
      depth: 0,
      generation: 0,
      accessRequests: [],
    }
    const request = { csrPem, spiffeId, commonName: 'bench-agent', ttlSeconds: 3600, claims }
    for (let i = 0; i < WARMUP_CERTIFICATES; i++) await ca.issue(request)

    const cpuBefore = process.cpuUsage()
    const start = performance.now()
    const deadline = start + seconds * 1000
    let certificates = 0
    while (performance.now() < deadline) {
      await ca.issue(request)
      certificates++
    }
    const elapsed = (performance.now() - start) / 1000
    const cpu = process.cpuUsage(cpuBefore)
    return {
      certificates,
      seconds: elapsed,
      perSecond: certificates / elapsed,
      cpuMicrosPerCertificate: (cpu.user + cpu.system) / certificates,
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}
