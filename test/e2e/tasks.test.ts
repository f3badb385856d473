import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pathToFileURL } from 'node:url'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  type AuditRecord,
  auditSearch,
  CLI,
  certificateSerial,
  type GatewaySetup,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
  temporaryDirectory,
  waitFor,
} from './harness.js'

const require = createRequire(import.meta.url)
const SDK_CLIENT = pathToFileURL(require.resolve('@modelcontextprotocol/sdk/client/index.js')).href
const SDK_STDIO = pathToFileURL(require.resolve('@modelcontextprotocol/sdk/client/stdio.js')).href
const REASON = 'check the release notes for issue 42'
/** The exit status of the task script, distinct from 0 and 1 so the test can check it passes through. */
const SCRIPT_STATUS = 7

/** The audit caller of a task's records, as `writ audit search --json` prints it. */
type TaskCaller = NonNullable<AuditRecord['caller']> & {
  task?: string
  taskReason?: string
  parentSerial?: string
  parentSpiffeId?: string
}

/** What the script run under `writ task` prints as one JSON line. */
interface ScriptReport {
  dir: string
  server: string
  dirMode: number
  keyMode: number
  files: string[]
  filesTools: string[]
  read: string
  notesTools: string[]
  readNote: { code?: number; reason?: string; message: string } | 'allowed'
  ls: Array<{ name: string; tools: string[] }>
}

let setup: GatewaySetup

before(async () => {
  setup = await startGatewaySetup('tasks')
})

after(async () => {
  await setup?.server.stop()
  removeTemporaryDirectories()
})

function parentFlags(identity = setup.identity): string[] {
  return ['--server', setup.server.address, '--identity', identity]
}

/**
 * Returns an ES module for `node --input-type=module -e` that uses the task identity through
 * `writ mcp connect` (driven by the MCP SDK client) and `writ mcp ls`, then prints a report.
 */
function taskScript(): string {
  const hello = join(setup.workspace, 'hello.txt')
  return `
import { readdirSync, statSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
const { Client } = await import(${JSON.stringify(SDK_CLIENT)})
const { StdioClientTransport } = await import(${JSON.stringify(SDK_STDIO)})
const cli = ${JSON.stringify(CLI)}
const dir = process.env.WRIT_IDENTITY
const report = {
  dir,
  server: process.env.WRIT_SERVER,
  dirMode: statSync(dir).mode & 0o777,
  keyMode: statSync(join(dir, 'svid_key.pem')).mode & 0o777,
  files: readdirSync(dir).sort(),
}
async function connect(name) {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [cli, 'mcp', 'connect', name],
    env: { ...process.env },
    stderr: 'inherit',
  })
  const client = new Client({ name: 'writ-task-e2e', version: '1.0.0' })
  await client.connect(transport)
  return client
}
const files = await connect('files')
report.filesTools = (await files.listTools()).tools.map((tool) => tool.name)
const read = await files.callTool({ name: 'read_text_file', arguments: { path: ${JSON.stringify(hello)} } })
report.read = read.content[0].text
await files.close()
const notes = await connect('notes')
report.notesTools = (await notes.listTools()).tools.map((tool) => tool.name)
try {
  await notes.callTool({ name: 'read_note', arguments: { id: 1 } })
  report.readNote = 'allowed'
} catch (error) {
  report.readNote = { code: error.code, reason: error.data?.reason, message: error.message }
}
await notes.close()
report.ls = JSON.parse(execFileSync(process.execPath, [cli, 'mcp', 'ls', '--json'], { encoding: 'utf8' }))
console.log(JSON.stringify(report))
process.exitCode = ${SCRIPT_STATUS}
`
}

describe('writ task -- COMMAND', () => {
  let result: { code: number | null; stdout: string; stderr: string }
  let report: ScriptReport

  before(async () => {
    result = await runWrit(
      [
        'task',
        '--tools',
        'read_text_file',
        '--ttl',
        '2m',
        '--reason',
        REASON,
        ...parentFlags(),
        '--',
        process.execPath,
        '--input-type=module',
        '-e',
        taskScript(),
      ],
      { timeoutMs: 90_000 },
    )
    const line = result.stdout.trim().split('\n').at(-1) ?? ''
    try {
      report = JSON.parse(line) as ScriptReport
    } catch {
      assert.fail(
        `the task script printed no report\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
      )
    }
  })

  it("exits with the command's status", () => {
    assert.equal(result.code, SCRIPT_STATUS, result.stderr)
  })

  it('names the task on stderr', () => {
    assert.match(
      result.stderr,
      /writ task: running \S+ as spiffe:\/\/writ\.local\/bot\/e2e-agent\/task\/[a-z2-7]{10} until \d{4}-\S+, files in \S+/,
    )
  })

  it('gives the command a private identity', () => {
    assert.equal(report.server, setup.server.address)
    assert.equal(report.dirMode, 0o700)
    assert.equal(report.keyMode, 0o600)
    assert.deepEqual(report.files, ['bundle.pem', 'svid.pem', 'svid_key.pem'])
  })

  it('deletes the key when the command exits', () => {
    assert.equal(existsSync(join(report.dir, 'svid_key.pem')), false)
    assert.equal(existsSync(report.dir), false)
  })

  it('lists only the task tools', () => {
    assert.deepEqual(report.filesTools, ['read_text_file'])
    assert.deepEqual(report.notesTools, [])
    assert.equal(report.read, 'hello from the e2e workspace\n')
  })

  it('writ mcp ls shows the task scope', () => {
    const files = report.ls.find((entry) => entry.name === 'files')
    const notes = report.ls.find((entry) => entry.name === 'notes')
    assert.deepEqual(files?.tools, ['read_text_file'])
    assert.deepEqual(notes?.tools, [])
  })

  it('refuses a tool the parent allows', () => {
    assert.notEqual(report.readNote, 'allowed')
    const denial = report.readNote as Exclude<ScriptReport['readNote'], 'allowed'>
    assert.equal(denial.code, WRIT_DENIED_CODE)
    assert.equal(denial.reason, 'forbidden')
    assert.match(denial.message, /tool "read_note" is not allowed/)
  })

  it('refused call never reaches the upstream', () => {
    const received = existsSync(setup.recordFile) ? readFileSync(setup.recordFile, 'utf8') : ''
    const calls = received
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as { method?: string })
      .filter((message) => message.method === 'tools/call')
    assert.deepEqual(calls, [])
  })

  it('audit names parent, task and reason', async () => {
    const events = await auditSearch(setup.dataDir, ['--tool', 'read_text_file'])
    const call = events.find((event) => event.type === 'mcp.request')
    assert.ok(call, `no mcp.request for read_text_file in ${JSON.stringify(events)}`)
    const caller = call.caller as TaskCaller
    assert.equal(call.outcome, 'success')
    assert.match(caller.spiffeId, /^spiffe:\/\/writ\.local\/bot\/e2e-agent\/task\/[a-z2-7]{10}$/)
    assert.equal(caller.task, caller.spiffeId.split('/').at(-1))
    assert.equal(caller.taskReason, REASON)
    assert.equal(caller.parentSpiffeId, setup.spiffeId)
    assert.equal(caller.parentSerial, certificateSerial(setup.identity))
  })

  it('audit names the task in the denial', async () => {
    const events = await auditSearch(setup.dataDir, ['--tool', 'read_note', '--outcome', 'denied'])
    assert.equal(events.length, 1, JSON.stringify(events))
    const caller = events[0]?.caller as TaskCaller
    assert.equal(events[0]?.rule, 'task/tools')
    assert.equal(caller.taskReason, REASON)
    assert.equal(caller.parentSpiffeId, setup.spiffeId)
  })

  it('audit records the issue', async () => {
    const events = await auditSearch(setup.dataDir, ['--principal', setup.spiffeId])
    const issue = events.find(
      (event) => event.type === 'task.issue' && event.details?.reason === REASON,
    )
    assert.ok(issue, 'no task.issue event with the reason')
    assert.equal(issue.outcome, 'success')
    assert.equal(issue.caller?.spiffeId, setup.spiffeId)
    assert.equal(issue.details?.parentSerial, certificateSerial(setup.identity))
    assert.deepEqual(issue.details?.tools, ['read_text_file'])
  })
})

describe('writ task around writ mcp connect', () => {
  it('MCP client sees only task tools', async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [
        CLI,
        'task',
        '--tools',
        'list_directory',
        '--reason',
        'desktop session',
        ...parentFlags(),
        '--',
        process.execPath,
        CLI,
        'mcp',
        'connect',
        'files',
      ],
      stderr: 'pipe',
    })
    let stderr = ''
    transport.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8')
    })
    const client = new Client({ name: 'writ-task-wrap', version: '1.0.0' })
    await client.connect(transport)
    try {
      const { tools } = await client.listTools()
      assert.deepEqual(
        tools.map((tool) => tool.name),
        ['list_directory'],
      )
    } finally {
      await client.close()
    }
    const dir = /files in (\S+)/.exec(stderr)?.[1]
    assert.ok(dir, `writ task named no directory: ${stderr}`)
    await waitFor('the task directory to be deleted', () => (existsSync(dir) ? undefined : true))
  })
})

describe('writ task delegation', () => {
  let first: string
  let firstReport: { spiffeId: string; notAfter: string; depth: number }

  before(async () => {
    first = join(temporaryDirectory('task-first'), 'identity')
    const issued = await runWrit([
      'task',
      'issue',
      '--dest',
      first,
      '--servers',
      'files',
      '--tools',
      'read_*,list_*',
      '--ttl',
      '2m',
      '--reason',
      'first level',
      '--json',
      ...parentFlags(),
    ])
    assert.equal(issued.code, 0, issued.stderr)
    firstReport = JSON.parse(issued.stdout)
  })

  it('task issue writes the files', () => {
    assert.equal(firstReport.depth, 1)
    assert.match(
      firstReport.spiffeId,
      /^spiffe:\/\/writ\.local\/bot\/e2e-agent\/task\/[a-z2-7]{10}$/,
    )
    assert.equal(statSync(join(first, 'svid_key.pem')).mode & 0o777, 0o600)
    assert.equal(statSync(first).mode & 0o777, 0o700)
  })

  it('task issue prints SPIFFE ID and expiry', async () => {
    const dest = join(temporaryDirectory('task-text'), 'identity')
    const issued = await runWrit([
      'task',
      'issue',
      '--dest',
      dest,
      '--tools',
      'read_text_file',
      '--reason',
      'text output',
      ...parentFlags(),
    ])
    assert.equal(issued.code, 0, issued.stderr)
    assert.match(
      issued.stdout,
      /^spiffe_id: spiffe:\/\/writ\.local\/bot\/e2e-agent\/task\/[a-z2-7]{10}$/m,
    )
    assert.match(issued.stdout, /^expires: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/m)
  })

  it('task servers limit writ mcp ls', async () => {
    const listed = await runWrit(['mcp', 'ls', '--json', ...parentFlags(first)])
    assert.equal(listed.code, 0, listed.stderr)
    const servers = JSON.parse(listed.stdout) as Array<{ name: string; tools: string[] }>
    assert.deepEqual(
      servers.map((entry) => entry.name),
      ['files'],
    )
  })

  it("ttl beyond the parent's life is capped", async () => {
    const second = join(temporaryDirectory('task-second'), 'identity')
    const issued = await runWrit([
      'task',
      'issue',
      '--dest',
      second,
      '--tools',
      'read_text_file',
      '--ttl',
      '1h',
      '--reason',
      'second level',
      '--json',
      ...parentFlags(first),
    ])
    assert.equal(issued.code, 0, issued.stderr)
    const report = JSON.parse(issued.stdout) as {
      notAfter: string
      depth: number
      lifetimeLimitedBy: string
    }
    assert.equal(report.depth, 2)
    assert.equal(report.lifetimeLimitedBy, 'parent')
    assert.equal(report.notAfter, firstReport.notAfter)
    assert.match(
      issued.stderr,
      /lifetime capped to \S+ by the parent certificate's remaining lifetime/,
    )
  })

  it('task of a task of a task is refused', async () => {
    const args = (reason: string) => ['task', '--tools', 'read_*', '--reason', reason]
    const nested = await runWrit(
      [
        ...args('outer'),
        ...parentFlags(),
        '--',
        process.execPath,
        CLI,
        ...args('middle'),
        '--',
        process.execPath,
        CLI,
        ...args('inner'),
        '--',
        process.execPath,
        '-e',
        'console.log("inner command ran")',
      ],
      { timeoutMs: 60_000 },
    )
    assert.equal(nested.code, 1, nested.stderr)
    assert.doesNotMatch(nested.stdout, /inner command ran/)
    assert.match(nested.stderr, /delegation depth 3, but this server allows at most 2/)
    assert.match(nested.stderr, /\[task\.depth_exceeded\]/)
  })

  it('tool outside the parent task is refused', async () => {
    const dest = join(temporaryDirectory('task-wider'), 'identity')
    const issued = await runWrit([
      'task',
      'issue',
      '--dest',
      dest,
      '--tools',
      'write_file',
      '--reason',
      'wider',
      ...parentFlags(first),
    ])
    assert.equal(issued.code, 1)
    assert.match(issued.stderr, /tools pattern "write_file" is not within the parent task's tools/)
    assert.match(issued.stderr, /\[task\.scope_exceeded\]/)
    assert.equal(existsSync(dest), false)
  })
})

describe('writ task errors', () => {
  it('bad ttl names the value', async () => {
    const result = await runWrit([
      'task',
      '--tools',
      'read_*',
      '--ttl',
      '10x',
      '--reason',
      'r',
      ...parentFlags(),
      '--',
      process.execPath,
      '-e',
      '',
    ])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /invalid task ttl "10x"/)
    assert.match(result.stderr, /\[task\.invalid\]/)
  })

  it('missing reason is a usage error', async () => {
    const result = await runWrit([
      'task',
      '--tools',
      'read_*',
      ...parentFlags(),
      '--',
      process.execPath,
      '-e',
      '',
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /missing required option --reason/)
  })

  it('missing tools is a usage error', async () => {
    const result = await runWrit(['task', '--reason', 'r', ...parentFlags(), '--', 'true'])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /missing required option --tools/)
  })

  it('missing command is a usage error', async () => {
    const result = await runWrit(['task', '--tools', 'read_*', '--reason', 'r', ...parentFlags()])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /missing argument: writ task expects -- COMMAND/)
  })

  it('dest may not be the parent identity', async () => {
    const result = await runWrit([
      'task',
      'issue',
      '--dest',
      setup.identity,
      '--tools',
      'read_*',
      '--reason',
      'r',
      ...parentFlags(),
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /is the parent identity directory/)
  })

  it('unknown command exits 127', async () => {
    const result = await runWrit([
      'task',
      '--tools',
      'read_*',
      '--reason',
      'r',
      ...parentFlags(),
      '--',
      join(setup.dataDir, 'no-such-program'),
    ])
    assert.equal(result.code, 127)
    assert.match(result.stderr, /failed to start .*no-such-program: ENOENT/)
  })

  it("--help after -- is the command's", async () => {
    const result = await runWrit([
      'task',
      '--tools',
      'read_*',
      '--reason',
      'r',
      ...parentFlags(),
      '--',
      process.execPath,
      '-e',
      'console.log(process.argv.slice(1).join(" "))',
      '--',
      '--help',
    ])
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /^--help$/m)
  })

  it('--help explains every flag', async () => {
    for (const args of [['task'], ['task', 'issue']]) {
      const result = await runWrit([...args, '--help'])
      assert.equal(result.code, 0)
      for (const flag of ['--servers', '--tools', '--ttl', '--reason', '--server', '--identity']) {
        assert.match(
          result.stdout,
          new RegExp(`${flag} `),
          `${args.join(' ')} --help lacks ${flag}`,
        )
      }
    }
    const issue = await runWrit(['task', 'issue', '--help'])
    assert.match(issue.stdout, /--dest DIR/)
  })
})

describe('writ task signals', () => {
  it('forwards SIGTERM and cleans up', async () => {
    const script =
      'process.on("SIGTERM", () => { console.log("got SIGTERM"); process.exit(3) });' +
      'console.log("ready " + process.env.WRIT_IDENTITY); setInterval(() => {}, 1000)'
    const child = spawn(
      process.execPath,
      [
        CLI,
        'task',
        '--tools',
        'read_*',
        '--reason',
        'signal test',
        ...parentFlags(),
        '--',
        process.execPath,
        '-e',
        script,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text
    })
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text
    })
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)))
    try {
      const dir = await waitFor('the task command to start', () => /ready (\S+)/.exec(stdout)?.[1])
      assert.equal(existsSync(join(dir, 'svid_key.pem')), true)
      process.kill(child.pid as number, 'SIGTERM')
      assert.equal(await exited, 3, stderr)
      assert.match(stdout, /got SIGTERM/)
      assert.equal(existsSync(dir), false)
    } finally {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
    }
  })

  it('reports a command killed by a signal', async () => {
    const result = await runWrit([
      'task',
      '--tools',
      'read_*',
      '--reason',
      'killed',
      ...parentFlags(),
      '--',
      process.execPath,
      '-e',
      'process.kill(process.pid, "SIGKILL")',
    ])
    assert.equal(result.code, 128 + 9)
  })
})
