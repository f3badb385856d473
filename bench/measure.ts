/**
 * Timed rounds of `tools/call`: every session of a target calls `echo` in a loop, one call after
 * another, until the round's time is up. CPU time of the target's processes and of this process
 * is read before and after each round.
 */
import { performance } from 'node:perf_hooks'
import { machineBusyMicros, totalCpuMicros } from './processes.js'
import type { Target, TargetId } from './targets.js'

/** The argument sent to `echo`; each response must return it unchanged. */
export const ECHO_TEXT = 'hello from the writ benchmark'
const ECHO_PARAMS = { name: 'echo', arguments: { text: ECHO_TEXT } }

/** A session stops for the rest of a round after this many failed calls in a row. */
const MAX_CONSECUTIVE_ERRORS = 3

/** The measurements of one round of one target. */
export interface RoundResult {
  calls: number
  errors: number
  firstError?: string
  seconds: number
  latenciesMs: number[]
  measuredCpuMicros: number
  upstreamCpuMicros: number
  clientCpuMicros: number
  /** Busy CPU time of the whole machine, all processes and cores. */
  machineCpuMicros: number
}

/** Runs one round of `seconds` on `target`. */
export async function runRound(target: Target, seconds: number): Promise<RoundResult> {
  const latenciesMs: number[] = []
  let errors = 0
  let firstError: string | undefined
  const measuredBefore = totalCpuMicros(target.measuredPids)
  const upstreamBefore = totalCpuMicros(target.upstreamPids)
  const clientBefore = process.cpuUsage()
  const machineBefore = machineBusyMicros()
  const start = performance.now()
  const deadline = start + seconds * 1000

  async function callUntilDeadline(session: Target['sessions'][number]): Promise<void> {
    let consecutiveErrors = 0
    while (performance.now() < deadline && consecutiveErrors < MAX_CONSECUTIVE_ERRORS) {
      const callStart = performance.now()
      try {
        checkEcho(await session.call('tools/call', ECHO_PARAMS))
        latenciesMs.push(performance.now() - callStart)
        consecutiveErrors = 0
      } catch (error) {
        errors++
        consecutiveErrors++
        firstError ??= error instanceof Error ? error.message : String(error)
      }
    }
  }

  await Promise.all(target.sessions.map(callUntilDeadline))
  const elapsed = (performance.now() - start) / 1000
  const client = process.cpuUsage(clientBefore)
  return {
    calls: latenciesMs.length,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    seconds: elapsed,
    latenciesMs,
    measuredCpuMicros: totalCpuMicros(target.measuredPids) - measuredBefore,
    upstreamCpuMicros: totalCpuMicros(target.upstreamPids) - upstreamBefore,
    clientCpuMicros: client.user + client.system,
    machineCpuMicros: machineBusyMicros() - machineBefore,
  }
}

function checkEcho(result: unknown): void {
  const content = (result as { content?: Array<{ type?: string; text?: string }> }).content
  const text = content?.[0]?.text
  if (text !== ECHO_TEXT) {
    throw new Error(
      `echo returned ${JSON.stringify(result).slice(0, 200)}, not the text it was sent`,
    )
  }
}

/** The measured rounds of one target, added up. */
export interface TargetSummary {
  id: TargetId
  calls: number
  errors: number
  firstError?: string
  seconds: number
  callsPerSecond: number
  /** Calls per second of the slowest and the fastest round. */
  roundRange: [number, number]
  p50Ms: number
  p99Ms: number
  /** CPU time of the gateway (or of the server, where there is no gateway) per call, in µs. */
  measuredCpuMicrosPerCall: number | undefined
  upstreamCpuMicrosPerCall: number | undefined
  clientCpuMicrosPerCall: number
}

/** Adds up the rounds of one target. */
export function summarize(target: Target, rounds: RoundResult[]): TargetSummary {
  const calls = sum(rounds.map((round) => round.calls))
  const seconds = sum(rounds.map((round) => round.seconds))
  const rates = rounds.map((round) => round.calls / round.seconds)
  const latencies = Float64Array.from(rounds.flatMap((round) => round.latenciesMs)).sort()
  const perCall = (micros: number): number => (calls === 0 ? Number.NaN : micros / calls)
  const firstError = rounds.find((round) => round.firstError !== undefined)?.firstError
  return {
    id: target.id,
    calls,
    errors: sum(rounds.map((round) => round.errors)),
    ...(firstError === undefined ? {} : { firstError }),
    seconds,
    callsPerSecond: calls / seconds,
    roundRange: [Math.min(...rates), Math.max(...rates)],
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    measuredCpuMicrosPerCall:
      target.measuredPids.length === 0
        ? undefined
        : perCall(sum(rounds.map((round) => round.measuredCpuMicros))),
    upstreamCpuMicrosPerCall:
      target.upstreamPids.length === 0
        ? undefined
        : perCall(sum(rounds.map((round) => round.upstreamCpuMicros))),
    clientCpuMicrosPerCall: perCall(sum(rounds.map((round) => round.clientCpuMicros))),
  }
}

/**
 * Returns the CPU time that processes outside the benchmark used during `rounds`, as the average
 * number of busy cores. It is the machine's busy time minus what the target processes and the
 * load generator used, so other load on the machine shows up here.
 */
export function outsideLoadCores(rounds: RoundResult[]): number {
  let outside = 0
  let seconds = 0
  for (const round of rounds) {
    const ours = round.measuredCpuMicros + round.upstreamCpuMicros + round.clientCpuMicros
    outside += round.machineCpuMicros - ours
    seconds += round.seconds
  }
  return seconds === 0 ? Number.NaN : Math.max(0, outside) / 1_000_000 / seconds
}

/** Returns the nearest-rank percentile of sorted values, or NaN when there are none. */
export function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil(fraction * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number
}

function sum(values: number[]): number {
  let total = 0
  for (const value of values) total += value
  return total
}
