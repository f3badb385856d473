import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { WRIT_DENIED_CODE } from '../../src/gateway/jsonrpc.js'
import {
  auditSearch,
  connectThroughBridge,
  FIXTURE_SECRET,
  type GatewaySetup,
  removeTemporaryDirectories,
  runWrit,
  startGatewaySetup,
} from './harness.js'

let setup: GatewaySetup
let notes: Client
let files: Client

before(async () => {
  setup = await startGatewaySetup('gateway')
  notes = (await connectThroughBridge(setup.server.address, setup.identity, 'notes')).client
  files = (await connectThroughBridge(setup.server.address, setup.identity, 'files')).client
})

after(async () => {
  await notes?.close()
  await files?.close()
  await setup?.server.stop()
  removeTemporaryDirectories()
})

type DeniedError = {
  code?: number
  message: string
  data?: { reason?: string; requestId?: string }
}

describe('MCP SDK client through writ mcp connect', () => {
  it('tools/list shows only allowed tools', async () => {
    const { tools } = await notes.listTools()
    assert.deepEqual(
      tools.map((tool) => tool.name),
      ['read_note', 'leak_secret', 'emoji'],
    )
  })

  it('filesystem tools/list hides writes', async () => {
    const { tools } = await files.listTools()
    const names = tools.map((tool) => tool.name)
    assert.ok(names.includes('read_text_file'), `read_text_file missing from ${names.join(', ')}`)
    assert.ok(names.includes('list_directory'), `list_directory missing from ${names.join(', ')}`)
    for (const name of names) assert.match(name, /^(read_|list_)/, `tool ${name} is listed`)
  })

  it('allowed call reaches the upstream', async () => {
    const result = await notes.callTool({ name: 'read_note', arguments: { id: 7 } })
    assert.deepEqual(result.content, [{ type: 'text', text: 'called read_note with {"id":7}' }])
  })

  it('allowed filesystem read works', async () => {
    const path = join(setup.workspace, 'hello.txt')
    const result = await files.callTool({ name: 'read_text_file', arguments: { path } })
    const content = result.content as Array<{ type: string; text: string }>
    assert.equal(content[0]?.text, 'hello from the e2e workspace\n')
  })

  it('denied call never reaches upstream', async () => {
    await assert.rejects(
      notes.callTool({ name: 'write_note', arguments: { text: 'x' } }),
      (error: DeniedError) => {
        assert.equal(error.code, WRIT_DENIED_CODE)
        assert.equal(error.data?.reason, 'forbidden')
        assert.match(error.message, /tool "write_note" is not allowed/)
        assert.match(error.data?.requestId ?? '', /\S/)
        return true
      },
    )
    const received = readFileSync(setup.recordFile, 'utf8')
    assert.ok(received.includes('"read_note"'), 'the allowed call is missing from the upstream log')
    assert.ok(!received.includes('write_note'), 'the denied call reached the upstream')
  })

  it('denied filesystem write leaves file', async () => {
    const path = join(setup.workspace, 'hello.txt')
    await assert.rejects(
      files.callTool({ name: 'write_file', arguments: { path, content: 'overwritten\n' } }),
      (error: DeniedError) => {
        assert.equal(error.code, WRIT_DENIED_CODE)
        assert.equal(error.data?.reason, 'forbidden')
        return true
      },
    )
    assert.equal(readFileSync(path, 'utf8'), 'hello from the e2e workspace\n')
  })

  it('denial request id finds audit event', async () => {
    let requestId = ''
    await notes.callTool({ name: 'write_note', arguments: {} }).catch((error: DeniedError) => {
      requestId = error.data?.requestId ?? ''
    })
    const events = await auditSearch(setup.dataDir, ['--tool', 'write_note'])
    const event = events.find((candidate) => candidate.id === requestId)
    assert.ok(event, `no audit event with id ${requestId}`)
    assert.equal(event.outcome, 'denied')
    assert.equal(event.caller?.spiffeId, setup.spiffeId)
    assert.match(event.rule ?? '', /e2e-reader/, `the rule does not name the role: ${event.rule}`)
  })

  it('secret is redacted everywhere', async () => {
    const result = await notes.callTool({ name: 'leak_secret', arguments: {} })
    assert.deepEqual(result.content, [{ type: 'text', text: 'the key is [REDACTED]' }])
    const audit = await runWrit(['audit', 'search', '--json', '--data-dir', setup.dataDir])
    assert.ok(!audit.stdout.includes(FIXTURE_SECRET), 'the upstream secret is in the audit log')
    assert.ok(!setup.server.stderr().includes(FIXTURE_SECRET), 'the upstream secret is in the log')
  })

  it('split multibyte characters arrive intact', async () => {
    const result = await notes.callTool({ name: 'emoji', arguments: {} })
    assert.deepEqual(result.content, [{ type: 'text', text: 'ok 😀🎉 done' }])
  })

  it('non-JSON upstream line is logged and skipped', async () => {
    assert.deepEqual(await notes.ping(), {})
    const skipped = setup.server
      .logEntries()
      .find((entry) => entry.msg === 'upstream wrote a non-JSON line to stdout, skipped')
    assert.ok(skipped, `no log entry for the skipped line in:\n${setup.server.stderr()}`)
    assert.equal(skipped.server, 'notes')
    assert.equal(skipped.line, 'this line is not JSON')
  })
})

describe('upstream that exits at start', () => {
  it('bridge fails naming the server', async () => {
    const bridge = connectThroughBridge(setup.server.address, setup.identity, 'broken')
    await assert.rejects(bridge, (error: Error) => {
      assert.match(error.message, /upstream server "broken" is unavailable: it exited with code 3/)
      assert.doesNotMatch(error.message, /cannot open database/)
      return true
    })
  })

  it('puts its stderr in the log', async () => {
    const log = setup.server.stderr()
    assert.ok(
      log.includes('fixture: cannot open database /nonexistent/db.sqlite'),
      `writ start's log does not contain the upstream's stderr at the default level:\n${log}`,
    )
  })
})

describe('writ mcp ls', () => {
  const lsArgs = () => ['mcp', 'ls', '--server', setup.server.address, '--identity', setup.identity]

  it('lists servers and allowed tools', async () => {
    const result = await runWrit(lsArgs())
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /^notes \(stdio\): recording fixture$/m)
    assert.match(result.stdout, /^ {2}tools: read_note, leak_secret, emoji$/m)
    assert.match(result.stdout, /^files \(stdio\)$/m)
    assert.ok(!result.stdout.includes('hidden'), 'a server the role does not select is listed')
    assert.ok(!result.stdout.includes('write_'), 'a denied tool is listed')
  })

  it('--json gives names and tools', async () => {
    const result = await runWrit([...lsArgs(), '--json'])
    assert.equal(result.code, 0, result.stderr)
    const listing = JSON.parse(result.stdout) as Array<{
      name: string
      transport: string
      tools: string[]
      error?: string
    }>
    assert.deepEqual(listing.map((entry) => entry.name).sort(), ['broken', 'files', 'notes'])
    const notesEntry = listing.find((entry) => entry.name === 'notes')
    assert.equal(notesEntry?.transport, 'stdio')
    assert.deepEqual(notesEntry?.tools, ['read_note', 'leak_secret', 'emoji'])
    const broken = listing.find((entry) => entry.name === 'broken')
    assert.match(broken?.error ?? '', /upstream server "broken" is unavailable: it exited/)
  })

  it('missing identity names the file', async () => {
    const result = await runWrit([
      'mcp',
      'ls',
      '--server',
      setup.server.address,
      '--identity',
      '/nonexistent/id',
    ])
    assert.equal(result.code, 1)
    assert.match(result.stderr, /\/nonexistent\/id\/svid\.pem/)
    assert.match(result.stderr, /\[client\.identity_missing\]/)
  })
})

describe('writ mcp config', () => {
  type Entry = { type?: string; command: string; args: string[] }

  async function config(client: string, ...servers: string[]) {
    const result = await runWrit([
      'mcp',
      'config',
      ...servers,
      '--client',
      client,
      '--server',
      setup.server.address,
      '--identity',
      setup.identity,
    ])
    assert.equal(result.code, 0, result.stderr)
    return JSON.parse(result.stdout) as Record<string, Record<string, Entry>>
  }

  it('claude config runs the bridge', async () => {
    const parsed = await config('claude', 'notes')
    const entry = parsed.mcpServers?.['writ-notes']
    assert.ok(entry, `no writ-notes entry in ${JSON.stringify(parsed)}`)
    assert.equal(entry.command, process.execPath)
    assert.deepEqual(entry.args.slice(1), [
      'mcp',
      'connect',
      'notes',
      '--server',
      setup.server.address,
      '--identity',
      setup.identity,
    ])

    // Launch the command and arguments from the configuration, as the desktop client would.
    const client = new Client({ name: 'writ-e2e-config', version: '1.0.0' })
    await client.connect(
      new StdioClientTransport({ command: entry.command, args: entry.args, stderr: 'pipe' }),
    )
    try {
      const { tools } = await client.listTools()
      assert.deepEqual(
        tools.map((tool) => tool.name),
        ['read_note', 'leak_secret', 'emoji'],
      )
    } finally {
      await client.close()
    }
  })

  it('cursor config without servers asks gateway', async () => {
    const parsed = await config('cursor')
    assert.deepEqual(Object.keys(parsed.mcpServers ?? {}).sort(), [
      'writ-broken',
      'writ-files',
      'writ-notes',
    ])
  })

  it('vscode config uses servers and stdio', async () => {
    const parsed = await config('vscode', 'files')
    const entry = parsed.servers?.['writ-files']
    assert.equal(entry?.type, 'stdio')
    assert.ok(entry?.args.includes('connect'))
  })

  it('unknown client is a usage error', async () => {
    const result = await runWrit([
      'mcp',
      'config',
      '--client',
      'emacs',
      '--identity',
      setup.identity,
    ])
    assert.equal(result.code, 2)
    assert.match(result.stderr, /invalid or missing --client "emacs"/)
  })
})
