import { type FSWatcher, statSync, watch } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { type Logger, silentLogger } from '../log.js'
import { createMcpHttpClient, type TlsMaterial } from './http-client.js'
import { type JsonRpcMessage, parseJson } from './jsonrpc.js'
import { LineSplitter } from './line-splitter.js'

export interface StdioBridgeOptions {
  /** The gateway URL, such as `https://127.0.0.1:7443/mcp/files`. */
  url: string
  /** Reads the current client certificate; called at start and whenever a watched file changes. */
  tls?: () => TlsMaterial
  /** Certificate and key files whose replacement triggers a reload. */
  watchFiles?: string[]
  stdin: Readable
  stdout: Writable
  logger?: Logger
  /** How often to compare watched files' size and mtime, for file systems where watching fails. */
  pollIntervalMs?: number
}

/** Delay that lets an agent finish writing both certificate and key before the reload. */
const RELOAD_SETTLE_MS = 100
/** Id prefix of the pings the bridge sends itself; their responses never reach the client. */
const REBIND_ID_PREFIX = 'writ-bridge-rebind-'

/**
 * Serves MCP over stdio for a local client and forwards every message to the gateway over
 * Streamable HTTP. Resolves when stdin ends, after the session is closed with DELETE.
 *
 * @example
 *   await runStdioBridge({ url, tls: readIdentity, watchFiles: [certPath, keyPath],
 *     stdin: process.stdin, stdout: process.stdout })
 */
export async function runStdioBridge(options: StdioBridgeOptions): Promise<void> {
  const logger = options.logger ?? silentLogger
  const { stdout } = options
  const client = createMcpHttpClient({
    url: options.url,
    ...(options.tls ? { tls: options.tls() } : {}),
    logger,
    onMessage: (message) => {
      if (typeof message.id === 'string' && message.id.startsWith(REBIND_ID_PREFIX)) return
      stdout.write(`${JSON.stringify(message)}\n`)
    },
  })
  let rebinds = 0
  const stopWatching = watchCertificates(options, logger, () => {
    if (!options.tls) return
    try {
      client.setTls(options.tls())
      logger.info({}, 'client certificate reloaded')
      // The gateway ends a session when the certificate it last saw expires. A ping with the
      // renewed certificate makes the gateway adopt it, so an idle client keeps its session.
      if (client.sessionId !== undefined) {
        rebinds++
        void client.send({ jsonrpc: '2.0', id: `${REBIND_ID_PREFIX}${rebinds}`, method: 'ping' })
      }
    } catch (error) {
      logger.error({ error }, 'client certificate reload failed, keeping the previous one')
    }
  })
  const inFlight = new Set<Promise<void>>()
  // Messages that follow an initialize wait until it is answered, because the session id they
  // must carry arrives with that answer; clients that pipe several lines at once rely on this.
  let initialized: Promise<void> = Promise.resolve()

  function forward(message: JsonRpcMessage): void {
    const sent = initialized.then(() => client.send(message))
    if (message.method === 'initialize') initialized = sent.catch(() => {})
    inFlight.add(sent)
    void sent.finally(() => inFlight.delete(sent))
    if (message.method === 'notifications/initialized' && !('id' in message)) {
      sent
        .then(() => (client.sessionId === undefined ? undefined : client.openEventStream()))
        .catch((error) => logger.warn({ error }, 'gateway GET stream failed to open'))
    }
  }

  const lines = new LineSplitter({
    onLine: (line) => {
      const parsed = parseJson(line)
      if (!parsed.ok || typeof parsed.value !== 'object' || parsed.value === null) {
        logger.warn({ line: line.slice(0, 200) }, 'stdin line is not JSON, skipped')
        return
      }
      forward(parsed.value as JsonRpcMessage)
    },
  })

  await new Promise<void>((resolve, reject) => {
    options.stdin.on('data', (chunk: Buffer | string) =>
      lines.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk),
    )
    options.stdin.once('end', () => resolve())
    options.stdin.once('close', () => resolve())
    options.stdin.once('error', reject)
  })
  lines.end()
  stopWatching()
  await Promise.allSettled([...inFlight])
  await client.close()
}

/** Watches certificate files by directory (agents replace them by rename) and by polling. */
function watchCertificates(
  options: StdioBridgeOptions,
  logger: Logger,
  reload: () => void,
): () => void {
  const files = options.watchFiles ?? []
  if (files.length === 0) return () => {}
  const watchers: FSWatcher[] = []
  let timer: NodeJS.Timeout | undefined
  const schedule = () => {
    clearTimeout(timer)
    timer = setTimeout(reload, RELOAD_SETTLE_MS)
  }
  const names = new Set(files.map((file) => basename(file)))
  for (const directory of new Set(files.map((file) => dirname(file)))) {
    try {
      const watcher = watch(directory, (_event, name) => {
        if (name === null || names.has(name.toString())) schedule()
      })
      watcher.on('error', (error) => logger.warn({ error, directory }, 'certificate watch failed'))
      watchers.push(watcher)
    } catch (error) {
      logger.warn({ error, directory }, 'certificate watch unavailable, polling only')
    }
  }
  let signature = fileSignature(files)
  const poll = setInterval(() => {
    const next = fileSignature(files)
    if (next === signature) return
    signature = next
    schedule()
  }, options.pollIntervalMs ?? 10_000)
  poll.unref()
  return () => {
    clearInterval(poll)
    clearTimeout(timer)
    for (const watcher of watchers) watcher.close()
  }
}

function fileSignature(files: string[]): string {
  return files
    .map((file) => {
      try {
        const stat = statSync(file)
        return `${stat.ino}:${stat.size}:${stat.mtimeMs}`
      } catch {
        return 'missing'
      }
    })
    .join('|')
}
