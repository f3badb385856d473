import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { createMcpHttpClient } from '../../src/gateway/http-client.js'
import type { JsonRpcMessage } from '../../src/gateway/jsonrpc.js'

test('http client caps JSON bodies', async () => {
  // A loopback upstream that responds to every POST with a 4 KiB JSON result.
  const server = createServer((req, res) => {
    req.resume()
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { text: 'x'.repeat(4096) } })
    res.writeHead(200, { 'content-type': 'application/json' }).end(body)
  })
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  const received: JsonRpcMessage[] = []
  const client = createMcpHttpClient({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
    maxBodyBytes: 1024,
    onMessage: (message) => received.push(message),
  })
  try {
    await client.send({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'big' } })
    assert.equal(received.length, 1)
    assert.equal(received[0]?.id, 1)
    assert.equal(received[0]?.result, undefined)
    assert.match(String(received[0]?.error?.message), /response exceeds 1024 bytes/)
  } finally {
    await client.close()
    server.closeAllConnections()
    await new Promise<void>((done) => server.close(() => done()))
  }
})
