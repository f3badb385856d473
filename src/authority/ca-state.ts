import { WritError } from '../errors.js'

/** The meta key whose value is the CA state as JSON. It is absent until the first rotation. */
export const CA_STATE_META_KEY = 'ca_state'

/**
 * The phase of a rotation in progress. `added`: the new CA is in the trust bundle and the old one
 * still signs. `switched`: the new CA signs and the old one stays trusted until it is retired.
 */
export type RotationPhase = 'added' | 'switched'

/** A rotation in progress, from the CA generation `from` to the generation `to`. */
export interface CaRotation {
  phase: RotationPhase
  from: number
  to: number
  /** When the new CA entered the bundle, in ms since the epoch. */
  addedAt: number
  /** When the new CA started signing, in ms since the epoch. */
  switchedAt?: number
  /** Seconds after the switch after which the running server retires the old CA by itself. */
  graceSeconds?: number
}

/**
 * The trusted and signing CAs of a data directory. CAs are numbered by generation: 1 is the CA
 * made at creation (`ca.pem`), and each rotation adds the next number.
 */
export interface CaState {
  version: 1
  /** Increases whenever the set of trusted CAs changes; published as `spiffe_sequence`. */
  sequence: number
  /** The generation that signs new certificates. */
  signing: number
  /** The generations in the trust bundle, oldest first. */
  trusted: number[]
  /** Generations removed from the bundle by earlier rotations. */
  retired: number[]
  rotation?: CaRotation
}

/** The state of a data directory that has never rotated its CA. */
export const INITIAL_CA_STATE: Readonly<CaState> = Object.freeze({
  version: 1,
  sequence: 1,
  signing: 1,
  trusted: [1],
  retired: [],
})

/**
 * Parses the stored CA state, returning the initial state for `undefined`. Throws
 * `ca.state_invalid` naming the broken field, because issuing from a guessed state could sign
 * with a CA that peers no longer trust.
 */
export function parseCaState(text: string | undefined): CaState {
  if (text === undefined) return structuredClone(INITIAL_CA_STATE) as CaState
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw invalidState('the value is not JSON', error)
  }
  const record = asRecord(value, 'the value')
  if (record.version !== 1) throw invalidState(`version ${String(record.version)} is not 1`)
  const state: CaState = {
    version: 1,
    sequence: positiveInteger(record.sequence, 'sequence'),
    signing: positiveInteger(record.signing, 'signing'),
    trusted: generationList(record.trusted, 'trusted'),
    retired: generationList(record.retired ?? [], 'retired'),
  }
  if (state.trusted.length === 0) throw invalidState('trusted lists no CA')
  if (!state.trusted.includes(state.signing)) {
    throw invalidState(`the signing CA ${state.signing} is not in trusted`)
  }
  if (record.rotation !== undefined) state.rotation = parseRotation(record.rotation, state)
  return state
}

/** Serialises a state for the meta table. */
export function serializeCaState(state: CaState): string {
  return JSON.stringify(state)
}

function parseRotation(value: unknown, state: CaState): CaRotation {
  const record = asRecord(value, 'rotation')
  const phase = record.phase
  if (phase !== 'added' && phase !== 'switched') {
    throw invalidState(`rotation.phase ${JSON.stringify(phase)} is not added or switched`)
  }
  const rotation: CaRotation = {
    phase,
    from: positiveInteger(record.from, 'rotation.from'),
    to: positiveInteger(record.to, 'rotation.to'),
    addedAt: positiveInteger(record.addedAt, 'rotation.addedAt'),
  }
  if (record.switchedAt !== undefined) {
    rotation.switchedAt = positiveInteger(record.switchedAt, 'rotation.switchedAt')
  }
  if (record.graceSeconds !== undefined) {
    rotation.graceSeconds = positiveInteger(record.graceSeconds, 'rotation.graceSeconds')
  }
  const expectedSigner = phase === 'added' ? rotation.from : rotation.to
  if (state.signing !== expectedSigner) {
    throw invalidState(`rotation.phase ${phase} needs CA ${expectedSigner} to sign`)
  }
  if (!state.trusted.includes(rotation.from) || !state.trusted.includes(rotation.to)) {
    throw invalidState('a CA of the rotation is missing from trusted')
  }
  if (phase === 'switched' && rotation.switchedAt === undefined) {
    throw invalidState('rotation.switchedAt is missing in phase switched')
  }
  return rotation
}

function asRecord(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidState(`${what} is not an object`)
  }
  return value as Record<string, unknown>
}

function positiveInteger(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw invalidState(`${field} is not a positive integer`)
  }
  return value
}

function generationList(value: unknown, field: string): number[] {
  if (!Array.isArray(value)) throw invalidState(`${field} is not a list`)
  const list = value.map((item, index) => positiveInteger(item, `${field}[${index}]`))
  if (new Set(list).size !== list.length) throw invalidState(`${field} repeats a CA`)
  return list
}

function invalidState(reason: string, cause?: unknown): WritError {
  return new WritError(
    'ca.state_invalid',
    `the CA state in the meta table (key ${CA_STATE_META_KEY}) is invalid: ${reason}; restore the database from a backup`,
    { key: CA_STATE_META_KEY, reason },
    cause === undefined ? undefined : { cause },
  )
}
