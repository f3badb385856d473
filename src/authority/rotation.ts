/**
 * CA rotation in three phases, each a change of the CA state in the store's meta table that every
 * Writ process picks up on its next read:
 *
 * 1. `init` adds a new CA to the trust bundle while the old one keeps signing, so every holder
 *    gets a bundle with both CAs on its next issuance or renewal.
 * 2. `switch` makes the new CA sign leaf certificates and the gateway's server certificate.
 * 3. `finish` removes the old CA from the bundle and deletes its key.
 *
 * A step is allowed once every certificate issued before the previous step has expired, because
 * until then a holder may still carry the old bundle (before `switch`) or a certificate that only
 * the old CA validates (before `finish`). `force` skips that check.
 */
import type { Clock } from '../clock.js'
import { WritError } from '../errors.js'
import { SpiffeId } from '../identity/spiffe-id.js'
import type { Logger } from '../log.js'
import type { Store } from '../store/store.js'
import type { AuditRecorder } from './authority.js'
import type { CertificateAuthority } from './ca.js'
import { createCaFiles, removeCaKey } from './ca-files.js'
import { CA_STATE_META_KEY, type CaRotation, type CaState, serializeCaState } from './ca-state.js'

/**
 * How long after a state change a certificate may still be issued under the previous state: 5 s.
 * The CA re-reads the state before every issuance and the store records the certificate a few
 * milliseconds later, so this only covers that gap and small clock differences between processes
 * on one host.
 */
export const CA_STATE_PICKUP_MS = 5_000

/** The services of an open data directory that rotation uses; `Host` provides all of them. */
export interface RotationHost {
  dataDir: string
  trustDomain: string
  store: Store
  ca: CertificateAuthority
  audit: AuditRecorder
  clock: Clock
  logger?: Logger
}

/** The phase `writ ca status` reports: `stable` when no rotation is in progress. */
export type CaPhase = 'stable' | 'added' | 'switched'

/** The rotation status of a data directory, as `writ ca status` prints it. */
export interface RotationStatus {
  phase: CaPhase
  sequence: number
  signing: number
  trusted: Array<{ generation: number; pin: string; notAfter: string; signing: boolean }>
  retired: number[]
  rotation?: CaRotation & {
    /** When the next step (`switch` or `finish`) stops needing `--force`, ISO 8601. */
    nextStepAllowedAt: string
    /** When the running server retires the old CA by itself, when a grace period is set. */
    automaticFinishAt?: string
  }
}

/**
 * Starts a rotation: creates the next CA generation and adds it to the trust bundle. Throws
 * `ca.rotation_in_progress` when a rotation has already started.
 *
 * @example
 *   const state = await beginRotation(host, { graceSeconds: 3600 })
 */
export async function beginRotation(
  host: RotationHost,
  options: { graceSeconds?: number; validityDays?: number } = {},
): Promise<CaState> {
  const { raw, state } = await readState(host)
  if (state.rotation) throw rotationInProgress(state.rotation)
  const now = host.clock()
  const next = Math.max(...state.trusted, ...state.retired) + 1
  const trustDomainId = SpiffeId.parse(`spiffe://${host.trustDomain}`)
  createCaFiles(host.dataDir, trustDomainId, host.clock, next, options.validityDays)
  const rotation: CaRotation = { phase: 'added', from: state.signing, to: next, addedAt: now }
  if (options.graceSeconds !== undefined) rotation.graceSeconds = options.graceSeconds
  const updated: CaState = {
    ...state,
    sequence: state.sequence + 1,
    trusted: [...state.trusted, next],
    rotation,
  }
  await writeState(host, raw, updated)
  await recordStep(host, 'added', rotation, updated, {})
  return updated
}

/**
 * Makes the new CA sign. Throws `ca.rotation_phase` unless the new CA was added and does not
 * sign yet, and `ca.rotation_too_early` while a certificate issued before the new CA was added
 * is still valid, unless `force` is set.
 */
export async function switchSigning(
  host: RotationHost,
  options: { force?: boolean; graceSeconds?: number } = {},
): Promise<CaState> {
  const { raw, state } = await readState(host)
  const rotation = state.rotation
  if (!rotation)
    throw wrongPhase('switch', 'no rotation is in progress; start one with writ ca rotate init')
  if (rotation.phase !== 'added') {
    throw wrongPhase('switch', `CA ${rotation.to} already signs; run writ ca rotate finish next`)
  }
  const now = host.clock()
  const allowedAt = await nextStepAllowedAt(host, rotation)
  if (now < allowedAt && !options.force) throw tooEarly('switch', rotation.addedAt, allowedAt)
  const switched: CaRotation = { ...rotation, phase: 'switched', switchedAt: now }
  if (options.graceSeconds !== undefined) switched.graceSeconds = options.graceSeconds
  const updated: CaState = { ...state, signing: rotation.to, rotation: switched }
  await writeState(host, raw, updated)
  await recordStep(host, 'switched', switched, updated, { forced: now < allowedAt })
  return updated
}

/**
 * Retires the old CA: removes it from the bundle and deletes its key file. Throws
 * `ca.rotation_phase` unless the new CA already signs, and `ca.rotation_too_early` while a
 * certificate the old CA signed is still valid, unless `force` is set.
 */
export async function finishRotation(
  host: RotationHost,
  options: { force?: boolean; automatic?: boolean } = {},
): Promise<CaState> {
  const { raw, state } = await readState(host)
  const rotation = state.rotation
  if (!rotation)
    throw wrongPhase('finish', 'no rotation is in progress; start one with writ ca rotate init')
  if (rotation.phase !== 'switched') {
    throw wrongPhase(
      'finish',
      `CA ${rotation.to} does not sign yet; run writ ca rotate switch first`,
    )
  }

  const now = host.clock()
  const allowedAt = await nextStepAllowedAt(host, rotation)
  if (now < allowedAt && !options.force) {
    throw tooEarly('finish', rotation.switchedAt as number, allowedAt)
  }

  const { rotation: _finished, ...rest } = state
  const updated: CaState = {
    ...rest,
    sequence: state.sequence + 1,
    trusted: state.trusted.filter((generation) => generation !== rotation.from),
    retired: [...state.retired, rotation.from],
  }
  // The pins are read before the state change, while the old CA is still loaded.
  const pins = pinsOf(host, rotation)
  await writeState(host, raw, updated)
  removeCaKey(host.dataDir, rotation.from)

  await recordStep(host, 'retired', rotation, updated, {
    forced: now < allowedAt,
    automatic: options.automatic === true,
    ...pins,
  })
  return updated
}

/**
 * Retires the old CA when the grace period set at `init` or `switch` has passed and every
 * certificate the old CA signed has expired. The running server calls this on a timer. Returns
 * whether it retired a CA.
 */
export async function finishRotationIfDue(host: RotationHost): Promise<boolean> {
  await host.ca.refresh()
  const rotation = host.ca.state.rotation
  if (rotation?.phase !== 'switched' || rotation.graceSeconds === undefined) return false
  const now = host.clock()
  if (now < (rotation.switchedAt as number) + rotation.graceSeconds * 1000) return false
  if (now < (await nextStepAllowedAt(host, rotation))) return false
  try {
    await finishRotation(host, { automatic: true })
    return true
  } catch (error) {
    // Another process may have finished the rotation first; it then reports no rotation.
    if (error instanceof WritError && error.code === 'ca.rotation_phase') return false
    if (error instanceof WritError && error.code === 'ca.rotation_conflict') return false
    throw error
  }
}

/** Reports the phase, the trusted CAs with their pins and when the next step is allowed. */
export async function describeRotation(host: RotationHost): Promise<RotationStatus> {
  await host.ca.refresh()
  const state = host.ca.state
  const status: RotationStatus = {
    phase: state.rotation?.phase ?? 'stable',
    sequence: state.sequence,
    signing: state.signing,
    trusted: host.ca.trusted.map((ca) => ({
      generation: ca.generation,
      pin: ca.pin,
      notAfter: ca.notAfter.toISOString(),
      signing: ca.signing,
    })),
    retired: [...state.retired],
  }
  const rotation = state.rotation
  if (rotation) {
    const allowedAt = await nextStepAllowedAt(host, rotation)
    status.rotation = { ...rotation, nextStepAllowedAt: new Date(allowedAt).toISOString() }
    if (rotation.phase === 'switched' && rotation.graceSeconds !== undefined) {
      const graceEnd = (rotation.switchedAt as number) + rotation.graceSeconds * 1000
      status.rotation.automaticFinishAt = new Date(Math.max(graceEnd, allowedAt)).toISOString()
    }
  }
  return status
}

/**
 * Returns when the next step stops needing `force`: once every certificate recorded before the
 * current phase began (plus the pickup margin) has expired.
 */
async function nextStepAllowedAt(host: RotationHost, rotation: CaRotation): Promise<number> {
  const phaseStart = rotation.phase === 'added' ? rotation.addedAt : (rotation.switchedAt as number)
  const cutoff = phaseStart + CA_STATE_PICKUP_MS
  const latest = await host.store.latestCertificateExpiry(cutoff)
  return Math.max(cutoff, latest ?? 0)
}

async function readState(host: RotationHost): Promise<{ raw: string | undefined; state: CaState }> {
  const raw = await host.store.getMeta(CA_STATE_META_KEY)
  await host.ca.refresh()
  return { raw, state: structuredClone(host.ca.state) as CaState }
}

/**
 * Writes the new state unless another process changed it since `expected` was read.
 * NOTE: the check and the write are two statements, because the store offers no compare-and-set
 * for meta values. Two commands racing within microseconds can therefore both pass the check.
 */
async function writeState(
  host: RotationHost,
  expected: string | undefined,
  state: CaState,
): Promise<void> {
  const current = await host.store.getMeta(CA_STATE_META_KEY)
  if (current !== expected) {
    throw new WritError(
      'ca.rotation_conflict',
      'the CA state changed while this command ran, probably by another writ ca rotate; check it with writ ca status and run the step again',
      { key: CA_STATE_META_KEY },
    )
  }
  await host.store.setMeta(CA_STATE_META_KEY, serializeCaState(state))
  await host.ca.refresh()
}

function pinsOf(host: RotationHost, rotation: CaRotation): { fromPin?: string; toPin?: string } {
  const pins: { fromPin?: string; toPin?: string } = {}
  for (const ca of host.ca.trusted) {
    if (ca.generation === rotation.from) pins.fromPin = ca.pin
    if (ca.generation === rotation.to) pins.toPin = ca.pin
  }
  return pins
}

async function recordStep(
  host: RotationHost,
  step: 'added' | 'switched' | 'retired',
  rotation: CaRotation,
  state: CaState,
  extra: Record<string, unknown>,
): Promise<void> {
  const details = {
    from: rotation.from,
    to: rotation.to,
    sequence: state.sequence,
    ...pinsOf(host, rotation),
    ...extra,
  }
  await host.audit.record({ type: 'ca.rotate', outcome: 'success', reason: step, details })
  host.logger?.info({ step, ...details }, 'CA rotation step done')
}

function rotationInProgress(rotation: CaRotation): WritError {
  const next = rotation.phase === 'added' ? 'writ ca rotate switch' : 'writ ca rotate finish'
  return new WritError(
    'ca.rotation_in_progress',
    `a CA rotation from CA ${rotation.from} to CA ${rotation.to} is already in phase ${rotation.phase}; complete it with ${next}`,
    { phase: rotation.phase, from: rotation.from, to: rotation.to },
  )
}

function wrongPhase(step: 'switch' | 'finish', reason: string): WritError {
  return new WritError('ca.rotation_phase', `cannot ${step} the CA: ${reason}`, { step })
}

function tooEarly(step: 'switch' | 'finish', phaseStart: number, allowedAt: number): WritError {
  const since = new Date(phaseStart).toISOString()
  const at = new Date(allowedAt).toISOString()
  const holders =
    step === 'switch'
      ? 'their holders may not trust the new CA yet'
      : 'only the old CA validates them'
  return new WritError(
    'ca.rotation_too_early',
    `cannot ${step} the CA before ${at}: certificates issued before ${since} are valid until then and ${holders}; run the step again after ${at} or pass --force`,
    { step, allowedAt: at },
  )
}
