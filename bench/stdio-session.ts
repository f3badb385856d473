/**
 * One MCP session with a stdio server that the benchmark starts itself: newline-delimited
 * JSON-RPC on the child's standard input and output. It is the baseline for the latency that a
 * gateway in front of the same stdio server adds.
 */
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { BENCH_PROTOCOL_VERSION } from './http-session.js'
import { type ProcessRegistry, spawnTracked } from './processes.js'

interface Pending {
  resolve(result: unknown): void
  reject(error: Error): void
}

/** A stdio MCP session; `pid` is the server process, for CPU accounting. */
export class StdioMcpSession {
  private readonly child: ChildProcess
  private readonly pending = new Map<number, Pending>()
  private nextId = 1

  private constructor(child: ChildProcess) {
    this.child = child
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    lines.on('line', (line) => this.receive(line))
    child.once('exit', (code, signal) => {
      const error = new Error(`stdio server exited (code ${code}, signal ${signal})`)
      for (const waiter of this.pending.values()) waiter.reject(error)
      this.pending.clear()
    })
  }

  get pid(): number {
    return this.child.pid as number
  }

  /** Starts `command args` and opens a session: `initialize`, then `notifications/initialized`. */
  static async open(
    command: string,
    args: string[],
    registry: ProcessRegistry,
  ): Promise<StdioMcpSession> {
    const session = new StdioMcpSession(spawnTracked(command, args, registry, 'pipe'))
    await session.call('initialize', {
      protocolVersion: BENCH_PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: 'writ-bench', version: '1.0.0' },
    })
    session.write({ jsonrpc: '2.0', method: 'notifications/initialized' })
    return session
  }

  /** Sends one JSON-RPC request and returns its result; a JSON-RPC error is thrown. */
  call(method: string, params: unknown): Promise<unknown> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.write({ jsonrpc: '2.0', id, method, params })
    })
  }

  /** Closes the server's standard input, which ends an SDK stdio server. */
  async close(): Promise<void> {
    this.child.stdin?.end()
  }

  private write(message: unknown): void {
    this.child.stdin?.write(`${JSON.stringify(message)}\n`)
  }

  private receive(line: string): void {
    let message: { id?: number; result?: unknown; error?: { code: number; message: string } }
    try {
      message = JSON.parse(line)
    } catch {
      return
    }
    if (typeof message.id !== 'number') return
    const waiter = this.pending.get(message.id)
    if (waiter === undefined) return
    this.pending.delete(message.id)
    if (message.error) {
      waiter.reject(new Error(`JSON-RPC error ${message.error.code}: ${message.error.message}`))
    } else {
      waiter.resolve(message.result)
    }
  }
}
