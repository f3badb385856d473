import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { WritError } from '../errors.js'
import type { Logger } from '../log.js'
import type { StdioUpstreamConfig } from './deps.js'
import { type JsonRpcMessage, parseJson } from './jsonrpc.js'
import { LineSplitter } from './line-splitter.js'
import type { Redactor } from './redact.js'
import type { Upstream, UpstreamEvents } from './upstream.js'

/** Lines of standard error kept for error messages. */
const STDERR_LINES_KEPT = 50
/** Characters of a skipped stdout line or a stderr line written to the log. */
const LOGGED_LINE_CHARS = 200
/** Time between SIGTERM and SIGKILL when closing. */
const KILL_GRACE_MS = 2000

export interface StdioUpstreamOptions {
  server: string
  config: StdioUpstreamConfig
  events: UpstreamEvents
  redactor: Redactor
  logger: Logger
  killGraceMs?: number
}

/**
 * Starts an upstream MCP server as a child process speaking newline-delimited JSON. The child
 * gets PATH and HOME from Writ's environment plus its configured variables, and nothing else, so
 * credentials in Writ's own environment never reach it.
 */
export function createStdioUpstream(options: StdioUpstreamOptions): Upstream {
  const { server, config, events, redactor, logger } = options
  const stderrLines: string[] = []
  let child: ChildProcessWithoutNullStreams | undefined
  let closed = false
  let exited: Promise<void> = Promise.resolve()

  const stdout = new LineSplitter({
    onLine: (line) => handleLine(line),
    onOverflow: (bytes) => logger.warn({ server, bytes }, 'upstream stdout line too long, skipped'),
  })
  const stderr = new LineSplitter({
    maxLineBytes: 64 * 1024,
    onLine: (line) => keepStderr(line),
  })

  function handleLine(line: string): void {
    const parsed = parseJson(line)
    if (!parsed.ok || typeof parsed.value !== 'object' || parsed.value === null) {
      logger.warn(
        { server, line: redactor.text(line.slice(0, LOGGED_LINE_CHARS)) },
        'upstream wrote a non-JSON line to stdout, skipped',
      )
      return
    }
    events.onMessage(parsed.value as JsonRpcMessage)
  }

  function keepStderr(line: string): void {
    const safe = redactor.text(line)
    stderrLines.push(safe)
    if (stderrLines.length > STDERR_LINES_KEPT) stderrLines.shift()
    logger.debug({ server, line: safe.slice(0, LOGGED_LINE_CHARS) }, 'upstream stderr')
  }

  function exitError(code: number | null, signal: NodeJS.Signals | null): Error {
    const tail = stderrLines.slice(-10).join('\n')
    const how = signal === null ? `code ${code}` : `signal ${signal}`
    const detail = tail === '' ? 'no stderr output' : `stderr: ${tail}`
    return new WritError(
      'gateway.upstream_exited',
      `upstream server "${server}" exited with ${how}; ${detail}`,
      { server, code, signal, stderr: tail },
    )
  }

  function start(): Promise<void> {
    // spawn reports a missing working directory as ENOENT of the command, which misleads.
    if (config.cwd !== undefined && !existsSync(config.cwd)) {
      return Promise.reject(
        new WritError(
          'gateway.upstream_spawn_failed',
          `upstream server "${server}" failed to start: its working directory ${config.cwd} does not exist`,
          { server, cwd: config.cwd },
        ),
      )
    }
    return new Promise((resolve, reject) => {
      const spawned = spawn(config.command, config.args ?? [], {
        cwd: config.cwd,
        env: baseEnvironment(config.env),
        stdio: ['pipe', 'pipe', 'pipe'],
        // A process group of its own, so closing reaches the server's children too.
        detached: process.platform !== 'win32',
      })
      child = spawned
      spawned.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
      spawned.stderr.on('data', (chunk: Buffer) => stderr.push(chunk))
      spawned.stdin.on('error', (error) => logger.debug({ server, error }, 'upstream stdin failed'))
      exited = new Promise((done) => {
        spawned.on('close', (code, signal) => {
          stdout.end()
          stderr.end()
          const error = closed ? undefined : exitError(code, signal)
          closed = true
          if (error) {
            logger.warn({ server, code, signal, stderr: stderrLines.slice(-10) }, 'upstream exited')
          }
          events.onClose(error)
          done()
        })
      })
      spawned.once('spawn', () => resolve())
      spawned.once('error', (error) => {
        const failure = new WritError(
          'gateway.upstream_spawn_failed',
          `upstream server "${server}" failed to start: ${error.message}`,
          { server, command: config.command },
          { cause: error },
        )
        reject(failure)
      })
    })
  }

  function send(message: JsonRpcMessage): void {
    if (closed || child === undefined || !child.stdin.writable) return
    child.stdin.write(`${JSON.stringify(message)}\n`)
  }

  async function close(): Promise<void> {
    if (child === undefined) return
    const target = child
    if (!closed) {
      closed = true
      target.stdin.end()
      signalGroup(target, 'SIGTERM')
      const timer = setTimeout(
        () => signalGroup(target, 'SIGKILL'),
        options.killGraceMs ?? KILL_GRACE_MS,
      )
      await exited
      clearTimeout(timer)
    }
    await exited
  }

  return { start, send, close, recentStderr: () => [...stderrLines] }
}

function signalGroup(child: ChildProcessWithoutNullStreams, signal: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  try {
    if (process.platform === 'win32') child.kill(signal)
    else process.kill(-child.pid, signal)
  } catch {
    child.kill(signal)
  }
}

/** The environment for an upstream: PATH and HOME from Writ, then the configured variables. */
export function baseEnvironment(configured: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  if (process.env.PATH !== undefined) env.PATH = process.env.PATH
  if (process.env.HOME !== undefined) env.HOME = process.env.HOME
  return { ...env, ...configured }
}
