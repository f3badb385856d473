/**
 * Writes the benchmark results as Markdown: the command, the machine, the method, the table and
 * a comparison against Writ's performance budgets.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import { join } from 'node:path'
import type { IssuanceResult } from './issuance.js'
import { ECHO_TEXT, type TargetSummary } from './measure.js'
import { CLOCK_TICKS_PER_SECOND } from './processes.js'
import type { Target, TargetId } from './targets.js'

/** Writ's performance budgets. The report checks results against them and never relaxes them. */
export const BUDGETS = {
  gatewayCpuMicrosPerCall: 120,
  stdioThroughputVsMcpProxy: 3,
  stdioThroughputVsSdkDirect: 1,
  addedP99Ms: 2,
  addedP99Sessions: 8,
  issuancePerSecond: 2000,
}

/** The run's settings, as the report prints them. */
export interface RunSettings {
  command: string
  roundSeconds: number
  rounds: number
  warmupSeconds: number
  concurrency: number
  issuanceSeconds: number
  mcpProxyFlags: string[]
}

/** Everything the report is built from. */
export interface ReportInput {
  startedAt: Date
  settings: RunSettings
  machine: MachineInfo
  /** Average busy cores used by processes outside the benchmark during the measured rounds. */
  outsideLoad: number
  targets: Target[]
  summaries: TargetSummary[]
  issuance: IssuanceResult | undefined
}

/** The machine facts the report prints, read from the `os` module and `/etc/os-release`. */
export interface MachineInfo {
  cpuModel: string
  cores: number
  memoryGiB: number
  os: string
  node: string
  loadAverage: number[]
  /** The temporary folder, where Writ's data directory and its SQLite database are created. */
  tempDir: string
  /** The file system type and device of the temporary folder, from `/proc/mounts`. */
  tempFileSystem: string
  sdkVersion: string
  mcpProxyVersion: string
}

/** Reads the machine facts at the start of the run. */
export function readMachineInfo(mcpProxyVersion: string): MachineInfo {
  const cpus = os.cpus()
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: os.totalmem() / 1024 ** 3,
    os: `${osName()} (${os.type()} ${os.release()}, ${os.arch()})`,
    node: process.version,
    loadAverage: os.loadavg(),
    tempDir: os.tmpdir(),
    tempFileSystem: fileSystemOf(os.tmpdir()),
    sdkVersion: packageVersion('@modelcontextprotocol/sdk/server/mcp.js'),
    mcpProxyVersion,
  }
}

/** Returns `TYPE (DEVICE)` of the mount with the longest mount point that contains `path`. */
function fileSystemOf(path: string): string {
  let best = { mountPoint: '', description: 'unknown' }
  try {
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [device, mountPoint, type] = line.split(' ')
      if (device === undefined || mountPoint === undefined || type === undefined) continue
      const contains =
        path === mountPoint || path.startsWith(mountPoint === '/' ? '/' : `${mountPoint}/`)
      if (contains && mountPoint.length >= best.mountPoint.length) {
        best = { mountPoint, description: `${type} (${device})` }
      }
    }
  } catch {
    // Without /proc/mounts the report prints "unknown".
  }
  return best.description
}

function osName(): string {
  try {
    const match = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))
    return match?.[1] ?? os.type()
  } catch {
    return os.type()
  }
}

/** Returns the version of the installed package that `entry` (a module specifier) belongs to. */
function packageVersion(entry: string): string {
  const resolved = createRequire(import.meta.url).resolve(entry)
  const root = resolved.slice(0, resolved.lastIndexOf('/dist/'))
  return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string })
    .version
}

/** Renders the whole report. */
export function renderReport(input: ReportInput): string {
  return [
    renderHeader(input),
    renderMachine(input.machine, input.outsideLoad),
    renderMethod(input),
    renderResults(input),
    renderIssuance(input.issuance, input.settings),
    renderBudgets(input),
  ].join('\n')
}

function renderHeader(input: ReportInput): string {
  const { settings } = input
  return `# Benchmarks

Written by \`${settings.command}\` (source: \`bench/run.ts\`) on ${input.startedAt.toISOString()}.
The numbers below are from that one run, on the machine described next. Rerun the command to
replace this page; \`npm run bench -- --help\` lists the options.

Settings:

- ${settings.concurrency} concurrent MCP sessions per target;
- ${settings.rounds} measured rounds of ${settings.roundSeconds} s per target, after one warm-up round of ${settings.warmupSeconds} s;
- certificate issuance measured for ${settings.issuanceSeconds} s.
`
}

function renderMachine(machine: MachineInfo, outsideLoad: number): string {
  return `## Machine

| | |
|---|---|
| CPU | ${machine.cpuModel}, ${machine.cores} logical cores |
| Memory | ${machine.memoryGiB.toFixed(1)} GiB |
| OS | ${machine.os} |
| Node.js | ${machine.node} |
| Temporary folder (Writ's data directory) | ${machine.tempDir}, ${machine.tempFileSystem} |
| MCP SDK | @modelcontextprotocol/sdk ${machine.sdkVersion} |
| mcp-proxy | ${machine.mcpProxyVersion} |
| Load average at start (1, 5, 15 min) | ${machine.loadAverage.map((value) => value.toFixed(2)).join(', ')} |
| CPU used by other processes during the measured rounds | ${outsideLoad.toFixed(2)} cores on average |

The last row is the machine's busy time from \`/proc/stat\` minus the CPU time of the
benchmark's own processes. When it is well above zero, other work competed for the cores and
the figures below are lower than on an idle machine.
`
}

function renderMethod(input: ReportInput): string {
  const paths = input.targets.map((target) => `- **${target.id}**: ${target.path}.`).join('\n')
  return `## Method

Every target serves the same MCP server: \`bench/upstream-server.ts\`, an \`McpServer\` from the
MCP SDK with one tool, \`echo\`, which returns its \`text\` argument. Each call is a
\`tools/call\` of \`echo\` with a ${ECHO_TEXT.length}-character string, and the benchmark checks that every
response returns the string unchanged; any other response counts as an error.

${paths}

The load generator is \`bench/http-session.ts\`, not the MCP SDK client: raw \`node:http\` and
\`node:https\` requests on a keep-alive agent with one socket per session, sending
\`initialize\` and \`notifications/initialized\` when a session opens and then one JSON-RPC
request per call. It reads both \`application/json\` and \`text/event-stream\` responses. For
Writ it presents the client certificate that \`writ agent --oneshot\` wrote after joining with a
token. The stdio baseline writes newline-delimited JSON-RPC to the server's pipes directly.

Each target gets ${input.settings.concurrency} sessions, each its own MCP session that sends
calls one after another. Rounds alternate between targets (${input.targets.map((target) => target.id).join(', ')},
then again), so a slow phase of the machine hits every target alike. Throughput is calls
completed divided by the rounds' wall time. Latency is measured per call on the client, from
sending the request to reading the whole response, pooled over all rounds (p50 and p99 by
nearest rank).

CPU time per call is the user plus system time of a process over the measured rounds, read from
\`/proc/<pid>/stat\` (${CLOCK_TICKS_PER_SECOND} ticks per second), divided by the calls. "Gateway
or server" is Writ's process for the Writ targets, the \`mcp-proxy\` process for mcp-proxy, and
the SDK server process for the direct target. "Upstream" is the echo server processes behind the
gateway: Writ starts one stdio process per session, mcp-proxy starts one process that all
sessions share. "Load generator" is this benchmark's own process.

Writ runs in its own child process (\`bench/writ-child.ts\`) with mutual TLS, a role that allows
only \`echo\`, and audit on: the audit record of each call is committed to SQLite in a fresh data
directory before the call is forwarded. Its operational log is off (silent logger).
\`mcp-proxy\` runs with \`${input.settings.mcpProxyFlags.join(' ')}\`: Streamable HTTP only,
without the resumability event store, which Writ does not have either.

All processes share the machine's cores with the load generator, so throughput is bounded by
the CPU that client, gateway and upstream need together. Compare targets within this run, not
with runs on other machines.
`
}

function renderResults(input: ReportInput): string {
  const rows = input.summaries.map((summary) => {
    const target = input.targets.find((candidate) => candidate.id === summary.id) as Target
    return [
      `**${summary.id}**`,
      target.measuredRole,
      formatInteger(summary.callsPerSecond),
      `${formatInteger(summary.roundRange[0])}-${formatInteger(summary.roundRange[1])}`,
      formatMs(summary.p50Ms),
      formatMs(summary.p99Ms),
      formatMicros(summary.measuredCpuMicrosPerCall),
      formatMicros(summary.upstreamCpuMicrosPerCall),
      formatMicros(summary.clientCpuMicrosPerCall),
      String(summary.calls),
      String(summary.errors),
    ].join(' | ')
  })
  const errors = input.summaries
    .filter((summary) => summary.firstError !== undefined)
    .map((summary) => `- ${summary.id}: first error: ${summary.firstError}`)
  return `## Results: \`tools/call\` at ${input.settings.concurrency} concurrent sessions

| Target | Gateway or server | Calls/s | Calls/s per round (min-max) | p50 ms | p99 ms | Gateway or server CPU µs/call | Upstream CPU µs/call | Load generator CPU µs/call | Calls | Errors |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${rows.join(' |\n| ')} |
${errors.length === 0 ? '' : `\nErrors:\n\n${errors.join('\n')}\n`}`
}

function renderIssuance(issuance: IssuanceResult | undefined, settings: RunSettings): string {
  if (issuance === undefined) {
    return '## Certificate issuance\n\nNot measured in this run (`--issuance 0`).\n'
  }
  return `## Certificate issuance

\`issue()\` of Writ's CA (\`src/authority/ca.ts\`) called in a loop for ${settings.issuanceSeconds} s
on the benchmark's main thread, after 200 warm-up calls, with the same ECDSA P-256 CSR each time.
Each call verifies the CSR and signs a leaf certificate with the full Writ profile. The join
endpoint's token check, database writes and audit record are not included.

| Certificates | Seconds | Certificates/s | CPU µs/certificate |
|---:|---:|---:|---:|
| ${issuance.certificates} | ${issuance.seconds.toFixed(2)} | ${formatInteger(issuance.perSecond)} | ${formatMicros(issuance.cpuMicrosPerCertificate)} |
`
}

interface BudgetRow {
  budget: string
  measured: string
  verdict: string
}

function renderBudgets(input: ReportInput): string {
  const rows = budgetRows(input)
  const table = rows.map((row) => `| ${row.budget} | ${row.measured} | ${row.verdict} |`)
  return `## Budgets

The budgets are Writ's performance targets. They are checked here as measured and are not
adjusted to the results.

"p99 added" is the p99 through the gateway minus the p99 of the same kind of server called
directly, both with ${input.settings.concurrency} sessions that each send the next call as soon as the previous one
returns. In this closed loop the cores are saturated, so the difference includes time spent
queueing behind the gateway's own CPU work, not only the extra hop.

| Budget | Measured in this run | Verdict |
|---|---|---|
${table.join('\n')}
`
}

function budgetRows(input: ReportInput): BudgetRow[] {
  const byId = new Map(input.summaries.map((summary) => [summary.id, summary]))
  const rows: BudgetRow[] = []
  for (const id of ['writ-stdio', 'writ-http'] as const) {
    const summary = byId.get(id)
    const cpu = summary?.measuredCpuMicrosPerCall
    rows.push({
      budget: `Gateway CPU per \`tools/call\` ≤ ${BUDGETS.gatewayCpuMicrosPerCall} µs (${id})`,
      measured: cpu === undefined ? '-' : `${formatMicros(cpu)} µs`,
      verdict: verdict(
        cpu === undefined ? undefined : cpu <= BUDGETS.gatewayCpuMicrosPerCall,
        summary,
      ),
    })
  }
  rows.push(
    throughputRow(byId, 'mcp-proxy', BUDGETS.stdioThroughputVsMcpProxy),
    throughputRow(byId, 'sdk-direct', BUDGETS.stdioThroughputVsSdkDirect),
    addedLatencyRow(byId, 'writ-stdio', 'stdio-direct', input.settings.concurrency),
    addedLatencyRow(byId, 'writ-http', 'sdk-direct', input.settings.concurrency),
  )
  const issuance = input.issuance
  rows.push({
    budget: `Certificate issuance ≥ ${BUDGETS.issuancePerSecond}/s on one core`,
    measured: issuance === undefined ? '-' : `${formatInteger(issuance.perSecond)}/s`,
    verdict:
      issuance === undefined
        ? 'not measured'
        : issuance.perSecond >= BUDGETS.issuancePerSecond
          ? 'met'
          : '**not met**',
  })
  rows.push({
    budget: 'A lock takes effect on live sessions within 1 s',
    measured: '-',
    verdict: 'not measured by this benchmark',
  })
  return rows
}

function throughputRow(
  byId: Map<TargetId, TargetSummary>,
  baseline: TargetId,
  factor: number,
): BudgetRow {
  const writ = byId.get('writ-stdio')
  const other = byId.get(baseline)
  const budget = `Throughput fronting stdio ≥ ${factor}× ${baseline}`
  if (writ === undefined || other === undefined) {
    return { budget, measured: '-', verdict: 'not measured' }
  }
  const ratio = writ.callsPerSecond / other.callsPerSecond
  return {
    budget,
    measured: `${ratio.toFixed(2)}× (${formatInteger(writ.callsPerSecond)} vs ${formatInteger(other.callsPerSecond)} calls/s)`,
    verdict: verdict(ratio >= factor, writ, other),
  }
}

function addedLatencyRow(
  byId: Map<TargetId, TargetSummary>,
  gateway: TargetId,
  baseline: TargetId,
  concurrency: number,
): BudgetRow {
  const through = byId.get(gateway)
  const direct = byId.get(baseline)
  const budget = `p99 added ≤ ${BUDGETS.addedP99Ms} ms at ${BUDGETS.addedP99Sessions} sessions (${gateway} vs ${baseline})`
  if (through === undefined || direct === undefined) {
    return { budget, measured: '-', verdict: 'not measured' }
  }
  const added = through.p99Ms - direct.p99Ms
  const measured = `${formatMs(added)} ms (${formatMs(through.p99Ms)} vs ${formatMs(direct.p99Ms)} ms)`
  if (concurrency !== BUDGETS.addedP99Sessions) {
    return { budget, measured, verdict: `not checked: measured at ${concurrency} sessions` }
  }
  return { budget, measured, verdict: verdict(added <= BUDGETS.addedP99Ms, through, direct) }
}

function verdict(met: boolean | undefined, ...summaries: (TargetSummary | undefined)[]): string {
  if (met === undefined) return 'not measured'
  const errors = summaries.reduce((total, summary) => total + (summary?.errors ?? 0), 0)
  const text = met ? 'met' : '**not met**'
  return errors === 0 ? text : `${text} (with ${errors} failed calls, see the table)`
}

function formatInteger(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '-'
}

function formatMs(value: number): string {
  return Number.isFinite(value) ? value.toFixed(2) : '-'
}

function formatMicros(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '-' : Math.round(value).toString()
}
