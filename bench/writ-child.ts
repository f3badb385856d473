/**
 * Runs Writ in its own process for the benchmark, so the parent can read this process's CPU time
 * alone. Forked with an IPC channel and the arguments
 *
 *   writ-child.js DATA_DIR STDIO_UPSTREAM_SCRIPT HTTP_UPSTREAM_URL
 *
 * it starts Writ on 127.0.0.1 with a port the OS picks and a config file with two `McpServer`
 * manifests (`bench-stdio` and `bench-http`) and a role that allows `echo` on both. Then it
 * enrolls a bot, joins with `writ agent --oneshot` into DATA_DIR/identity, and sends
 * `{ type: 'ready', address, identityDir }`. It stops Writ on SIGTERM or on `{ type: 'stop' }`.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runAgent } from '../src/agent/agent.js'
import { enrollBot } from '../src/bots.js'
import { silentLogger } from '../src/log.js'
import { type RunningWrit, startWrit } from '../src/server.js'
import { HTTP_SERVER_NAME, STDIO_SERVER_NAME, type WritReady } from './writ-names.js'

const ROLE_NAME = 'bench-caller'
const BOT_NAME = 'bench-agent'

function benchManifests(stdioScript: string, httpUrl: string): string {
  return `apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: ${STDIO_SERVER_NAME}, labels: { bench: 'true' } }
spec:
  stdio:
    command: ${JSON.stringify(process.execPath)}
    args: [${JSON.stringify(stdioScript)}, stdio]
---
apiVersion: writ.dev/v1alpha1
kind: McpServer
metadata: { name: ${HTTP_SERVER_NAME}, labels: { bench: 'true' } }
spec:
  http:
    url: ${JSON.stringify(httpUrl)}
    allowPrivateNetwork: true
---
apiVersion: writ.dev/v1alpha1
kind: Role
metadata: { name: ${ROLE_NAME} }
spec:
  maxTtl: 1h
  allow:
    mcpServers: { bench: 'true' }
    tools: [echo]
`
}

async function main(): Promise<void> {
  const [dataDir, stdioScript, httpUrl] = process.argv.slice(2)
  if (!dataDir || !stdioScript || !httpUrl || !process.send) {
    throw new Error('usage: fork writ-child.js DATA_DIR STDIO_UPSTREAM_SCRIPT HTTP_UPSTREAM_URL')
  }
  // The manifests go in as a config file, applied before the listener starts, so the first
  // session cannot arrive before the policy that allows it.
  mkdirSync(dataDir, { recursive: true, mode: 0o700 })
  const configFile = join(dataDir, 'bench-manifests.yaml')
  writeFileSync(configFile, benchManifests(stdioScript, httpUrl))
  const running: RunningWrit = await startWrit({
    dataDir,
    listen: '127.0.0.1:0',
    configFiles: [configFile],
    logger: silentLogger,
  })
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`writ-child: close failed: ${String(error)}\n`)
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', stop)
  process.on('message', (message: { type?: string }) => {
    if (message.type === 'stop') stop()
  })

  const enrollment = await enrollBot(running.host, BOT_NAME, [ROLE_NAME], '1h')
  const identityDir = join(dataDir, 'identity')
  await runAgent({
    server: running.address,
    token: enrollment.token,
    caPin: running.host.ca.pin,
    dest: identityDir,
    oneshot: true,
    logger: silentLogger,
  })
  const ready: WritReady = { type: 'ready', address: running.address, identityDir }
  process.send(ready)
}

main().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error)
  process.send?.({ type: 'error', message })
  process.stderr.write(`writ-child: ${message}\n`)
  process.exit(1)
})
