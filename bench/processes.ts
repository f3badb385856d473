/**
 * Child processes for the benchmark: starting them, reading their CPU time from `/proc`, finding
 * the port a process listens on, and stopping them by process id. Linux only, because CPU time
 * and listening sockets are read from `/proc`.
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process'
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

/** Clock ticks per second for the `utime` and `stime` fields of `/proc/<pid>/stat`. */
export const CLOCK_TICKS_PER_SECOND = readClockTicks()

function readClockTicks(): number {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isInteger(value) && value > 0 ? value : 100
  } catch {
    // NOTE: 100 is the usual USER_HZ on Linux; if getconf fails on a machine with another value,
    // every CPU figure is scaled wrong.
    return 100
  }
}

/** Returns the user plus system CPU time of one process (all its threads) in microseconds. */
export function processCpuMicros(pid: number): number {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return 0
  }
  // The command name in field 2 may contain spaces, so fields are counted after its closing ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return ((utime + stime) * 1_000_000) / CLOCK_TICKS_PER_SECOND
}

/**
 * Returns the busy CPU time of the whole machine in microseconds, summed over all cores: the
 * user, nice, system, irq, softirq and steal columns of the `cpu` line in `/proc/stat`.
 */
export function machineBusyMicros(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
  const ticks = line.trim().split(/\s+/).slice(1).map(Number)
  const busy = [0, 1, 2, 5, 6, 7].reduce((total, index) => total + (ticks[index] ?? 0), 0)
  return (busy * 1_000_000) / CLOCK_TICKS_PER_SECOND
}

/** Returns the summed CPU time of several processes in microseconds. */
export function totalCpuMicros(pids: number[]): number {
  let total = 0
  for (const pid of pids) total += processCpuMicros(pid)
  return total
}

/** Returns the process ids of every living descendant of `pid`, found by scanning `/proc`. */
export function descendantPids(pid: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let text: string
    try {
      text = readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue
    }
    const parent = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1])
    const list = children.get(parent) ?? []
    list.push(Number(entry))
    children.set(parent, list)
  }
  const found: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const next = queue.shift() as number
    for (const child of children.get(next) ?? []) {
      found.push(child)
      queue.push(child)
    }
  }
  return found
}

/**
 * Returns the TCP port that `pid` listens on, or undefined while it listens on none. The socket
 * inodes behind the process's file descriptors are matched against the LISTEN entries in
 * `/proc/net/tcp` and `/proc/net/tcp6`.
 */
export function listeningPort(pid: number): number | undefined {
  const inodes = new Set<string>()
  let descriptors: string[]
  try {
    descriptors = readdirSync(`/proc/${pid}/fd`)
  } catch {
    return undefined
  }
  for (const fd of descriptors) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (match?.[1]) inodes.add(match[1])
    } catch {
      // The descriptor closed between the listing and the read.
    }
  }
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines: string[]
    try {
      lines = readFileSync(table, 'utf8').split('\n').slice(1)
    } catch {
      continue
    }
    for (const line of lines) {
      const columns = line.trim().split(/\s+/)
      const state = columns[3]
      const inode = columns[9]
      if (state !== '0A' || inode === undefined || !inodes.has(inode)) continue
      const localAddress = columns[1] ?? ''
      return Number.parseInt(localAddress.slice(localAddress.lastIndexOf(':') + 1), 16)
    }
  }
  return undefined
}

/** Polls `listeningPort` until the process listens, failing after `timeoutMs`. */
export async function waitForListeningPort(
  child: ChildProcess,
  name: string,
  timeoutMs: number,
): Promise<number> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} (pid ${child.pid}) exited before it listened`)
    }
    const port = listeningPort(child.pid as number)
    if (port !== undefined) return port
    await sleep(50)
  }
  throw new Error(`${name} (pid ${child.pid}) did not listen within ${timeoutMs} ms`)
}

/** Forks a Node.js script with an IPC channel and waits for its first message of `type`. */
export async function forkAndWait<T extends { type: string }>(
  script: string,
  args: string[],
  type: string,
  timeoutMs: number,
  registry: ProcessRegistry,
): Promise<{ child: ChildProcess; message: T }> {
  const child = fork(script, args, {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: process.env.WRIT_BENCH_PROFILE
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.WRIT_BENCH_PROFILE}`]
      : [],
  })
  registry.add(child)
  const message = await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${script} did not report "${type}" within ${timeoutMs} ms`))
    }, timeoutMs)
    child.on('message', (received: { type?: string; message?: string }) => {
      if (received.type === type) {
        clearTimeout(timer)
        resolve(received as T)
      } else if (received.type === 'error') {
        clearTimeout(timer)
        reject(new Error(`${script} failed: ${received.message}`))
      }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${script} exited (code ${code}, signal ${signal}) before "${type}"`))
    })
  })
  return { child, message }
}

/**
 * Spawns a command and records it for `stopAll`. With `'pipe'` the caller talks to it on standard
 * input and output; otherwise its output is discarded. Standard error is always shown.
 */
export function spawnTracked(
  command: string,
  args: string[],
  registry: ProcessRegistry,
  stdio: 'pipe' | 'ignore' = 'ignore',
): ChildProcess {
  const child = spawn(command, args, { stdio: [stdio, stdio, 'inherit'] })
  registry.add(child)
  return child
}

/**
 * The child processes this run started. `stopAll` stops each by its process id: SIGTERM first,
 * SIGKILL after a grace period, then any descendant that is still alive.
 */
export class ProcessRegistry {
  private readonly children: ChildProcess[] = []

  add(child: ChildProcess): void {
    this.children.push(child)
  }

  async stopAll(graceMs = 3000): Promise<void> {
    const stops = this.children.map((child) => stopChild(child, graceMs))
    await Promise.all(stops)
    this.children.length = 0
  }
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  const pid = child.pid
  if (pid === undefined) return
  const descendants = safeDescendants(pid)
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)])
    if (timedOut) {
      child.kill('SIGKILL')
      await exited
    }
  }
  for (const descendant of descendants) {
    try {
      process.kill(descendant, 'SIGKILL')
    } catch {
      // Already gone: the parent stopped it on its way out.
    }
  }
}

function safeDescendants(pid: number): number[] {
  try {
    return descendantPids(pid)
  } catch {
    return []
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
