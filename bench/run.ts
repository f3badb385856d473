/**
 * Writ's benchmark: `tools/call` throughput, latency and CPU per call for Writ and the systems it
 * is compared with, measured in one run with alternating rounds, plus certificate issuance.
 * Writes `docs/benchmarks.md`. Run with `npm run bench`; `npm run bench -- --help` lists options.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type IssuanceResult, measureIssuance } from './issuance.js'
import { outsideLoadCores, percentile, type RoundResult, runRound, summarize } from './measure.js'
import { ProcessRegistry } from './processes.js'
import { readMachineInfo, renderReport } from './report.js'
import {
  locateMcpProxy,
  MCP_PROXY_FLAGS,
  type Scripts,
  startHttpUpstream,
  startMcpProxy,
  startSdkDirect,
  startStdioDirect,
  startWrit,
  startWritHttp,
  startWritStdio,
  TARGET_IDS,
  type Target,
  type TargetId,
} from './targets.js'

const HERE = dirname(fileURLToPath(import.meta.url))
/** The project root: `dist/bench/run.js` sits two folders below it. */
const PROJECT_ROOT = resolve(HERE, '..', '..')

const HELP = `Usage: npm run bench -- [options]

Measures tools/call throughput, p50 and p99 latency and CPU per call for the MCP SDK's
Streamable HTTP server called directly, Writ fronting a stdio and an HTTP upstream, mcp-proxy
fronting the same stdio upstream, and the stdio upstream called directly; then certificate
issuance per second. Writes the report to docs/benchmarks.md.

Options (each also settable by the environment variable in brackets):
  --duration SECONDS     length of each measured round per target (WRIT_BENCH_DURATION, default 3)
  --rounds N             measured rounds per target (WRIT_BENCH_ROUNDS, default 4)
  --warmup SECONDS       length of the unmeasured warm-up round per target (WRIT_BENCH_WARMUP, default 2)
  --concurrency N        concurrent MCP sessions per target (WRIT_BENCH_CONCURRENCY, default 8)
  --issuance SECONDS     length of the issuance measurement, 0 to skip (WRIT_BENCH_ISSUANCE, default 3)
  --targets LIST         comma-separated subset of ${TARGET_IDS.join(',')} (WRIT_BENCH_TARGETS, default all)
  --out FILE             report path (WRIT_BENCH_OUT, default docs/benchmarks.md)
  --help                 print this help
`

interface Options {
  roundSeconds: number
  rounds: number
  warmupSeconds: number
  concurrency: number
  issuanceSeconds: number
  targets: TargetId[]
  out: string
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string' },
      rounds: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      issuance: { type: 'string' },
      targets: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) return undefined
  const env = process.env
  const targets = (values.targets ?? env.WRIT_BENCH_TARGETS ?? TARGET_IDS.join(','))
    .split(',')
    .map((name) => name.trim())
  for (const target of targets) {
    if (!(TARGET_IDS as readonly string[]).includes(target)) {
      throw new Error(`unknown target "${target}"; use some of ${TARGET_IDS.join(', ')}`)
    }
  }
  return {
    roundSeconds: positiveNumber('--duration', values.duration ?? env.WRIT_BENCH_DURATION, 3),
    rounds: positiveInteger('--rounds', values.rounds ?? env.WRIT_BENCH_ROUNDS, 4),
    warmupSeconds: nonNegativeNumber('--warmup', values.warmup ?? env.WRIT_BENCH_WARMUP, 2),
    concurrency: positiveInteger(
      '--concurrency',
      values.concurrency ?? env.WRIT_BENCH_CONCURRENCY,
      8,
    ),
    issuanceSeconds: nonNegativeNumber('--issuance', values.issuance ?? env.WRIT_BENCH_ISSUANCE, 3),
    targets: TARGET_IDS.filter((id) => targets.includes(id)),
    out: resolve(PROJECT_ROOT, values.out ?? env.WRIT_BENCH_OUT ?? 'docs/benchmarks.md'),
  }
}

function nonNegativeNumber(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a number of seconds ≥ 0, got "${text}"`)
  }
  return value
}

function positiveNumber(name: string, text: string | undefined, fallback: number): number {
  const value = nonNegativeNumber(name, text, fallback)
  if (value === 0) throw new Error(`${name} must be greater than 0, got "${text}"`)
  return value
}

function positiveInteger(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a whole number ≥ 1, got "${text}"`)
  }
  return value
}

function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`)
}

async function startTargets(
  options: Options,
  scripts: Scripts,
  registry: ProcessRegistry,
  writDataDir: string,
): Promise<Target[]> {
  const wanted = new Set(options.targets)
  const targets: Target[] = []
  const concurrency = options.concurrency
  if (wanted.has('sdk-direct')) {
    progress('starting the MCP SDK Streamable HTTP server (sdk-direct)')
    targets.push(await startSdkDirect(scripts, registry, concurrency))
  }
  if (wanted.has('writ-stdio') || wanted.has('writ-http')) {
    progress('starting the HTTP upstream for Writ, then Writ in a child process')
    const upstream = await startHttpUpstream(scripts, registry)
    const writ = await startWrit(scripts, registry, writDataDir, upstream.url)
    progress(`Writ listens on https://${writ.address}; the bench agent joined`)
    if (wanted.has('writ-stdio')) targets.push(await startWritStdio(writ, concurrency))
    if (wanted.has('writ-http')) targets.push(await startWritHttp(writ, upstream.pid, concurrency))
  }
  if (wanted.has('mcp-proxy')) {
    progress('starting mcp-proxy in front of the stdio upstream')
    targets.push(await startMcpProxy(scripts, registry, concurrency))
  }
  if (wanted.has('stdio-direct')) {
    progress('starting the stdio upstreams for the direct baseline')
    targets.push(await startStdioDirect(scripts, registry, concurrency))
  }
  const order = new Map(TARGET_IDS.map((id, index) => [id, index]))
  return targets.sort((a, b) => (order.get(a.id) ?? 0) - (order.get(b.id) ?? 0))
}

function describeRound(target: Target, round: RoundResult): string {
  const rate = Math.round(round.calls / round.seconds)
  const latencies = Float64Array.from(round.latenciesMs).sort()
  const p50 = percentile(latencies, 0.5)
  const p99 = percentile(latencies, 0.99)
  const errors = round.errors === 0 ? '' : `, ${round.errors} errors (${round.firstError})`
  const outside = outsideLoadCores([round]).toFixed(2)
  const figures = `${rate} calls/s, p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`
  return `${target.id}: ${figures}, other load ${outside} cores${errors}`
}

async function runBenchmark(options: Options, registry: ProcessRegistry): Promise<string> {
  const startedAt = new Date()
  const mcpProxy = locateMcpProxy()
  const machine = readMachineInfo(mcpProxy.version)
  const scripts: Scripts = {
    upstreamServer: join(HERE, 'upstream-server.js'),
    writChild: join(HERE, 'writ-child.js'),
  }
  const writDataDir = mkdtempSync(join(tmpdir(), 'writ-bench-'))
  try {
    const targets = await startTargets(options, scripts, registry, writDataDir)
    const sessions = targets.length * options.concurrency
    progress(`${targets.length} targets ready, ${sessions} sessions open`)

    if (options.warmupSeconds > 0) {
      for (const target of targets) {
        const round = await runRound(target, options.warmupSeconds)
        progress(`warm-up ${describeRound(target, round)}`)
      }
    }
    const rounds = new Map<TargetId, RoundResult[]>(targets.map((target) => [target.id, []]))
    for (let index = 1; index <= options.rounds; index++) {
      for (const target of targets) {
        const round = await runRound(target, options.roundSeconds)
        rounds.get(target.id)?.push(round)
        progress(`round ${index}/${options.rounds} ${describeRound(target, round)}`)
      }
    }
    const summaries = targets.map((target) => summarize(target, rounds.get(target.id) ?? []))
    const outsideLoad = outsideLoadCores([...rounds.values()].flat())
    for (const target of targets) {
      for (const session of target.sessions) await session.close()
    }

    let issuance: IssuanceResult | undefined
    if (options.issuanceSeconds > 0) {
      progress(`measuring certificate issuance for ${options.issuanceSeconds} s`)
      issuance = await measureIssuance(options.issuanceSeconds)
      progress(`issuance: ${Math.round(issuance.perSecond)} certificates/s`)
    }
    return renderReport({
      startedAt,
      settings: {
        command: 'npm run bench',
        roundSeconds: options.roundSeconds,
        rounds: options.rounds,
        warmupSeconds: options.warmupSeconds,
        concurrency: options.concurrency,
        issuanceSeconds: options.issuanceSeconds,
        mcpProxyFlags: MCP_PROXY_FLAGS,
      },
      machine,
      outsideLoad,
      targets,
      summaries,
      issuance,
    })
  } finally {
    await registry.stopAll()
    rmSync(writDataDir, { recursive: true, force: true })
  }
}

async function main(): Promise<number> {
  let options: Options | undefined
  try {
    options = parseOptions(process.argv.slice(2))
  } catch (error) {
    progress(`invalid options: ${error instanceof Error ? error.message : String(error)}`)
    progress('run with --help for the list of options')
    return 2
  }
  if (options === undefined) {
    process.stdout.write(HELP)
    return 0
  }
  const registry = new ProcessRegistry()
  const interrupt = (): void => {
    progress('interrupted; stopping child processes')
    registry.stopAll().finally(() => process.exit(130))
  }
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
  const report = await runBenchmark(options, registry)
  mkdirSync(dirname(options.out), { recursive: true })
  writeFileSync(options.out, report)
  progress(`wrote ${options.out}`)
  process.stdout.write(report)
  return 0
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    progress(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    process.exit(1)
  },
)
