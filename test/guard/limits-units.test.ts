import assert from 'node:assert/strict'
import type { LookupAddress } from 'node:dns'
import { describe, it } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { CircuitBreakers } from '../../src/guard/circuit-breaker.js'
import { strictestLimits, validateRateLimits } from '../../src/guard/limits-spec.js'
import { LoopDetector } from '../../src/guard/loop-detector.js'
import { TokenBuckets } from '../../src/guard/token-bucket.js'
import {
  addressRefusal,
  checkUpstreamUrl,
  guardedLookup,
} from '../../src/guard/upstream-address.js'
import { validateSpec } from '../../src/policy/specs.js'

function manualClock(start = 1_000_000) {
  let now = start
  return { clock: () => now, advance: (ms: number) => (now += ms) }
}

describe('token buckets', () => {
  it('allow the burst, then refuse with a wait', () => {
    const time = manualClock()
    const buckets = new TokenBuckets(time.clock)
    const rate = { callsPerMinute: 6, burst: 2 }
    assert.deepEqual(buckets.take('a', rate), { ok: true })
    assert.deepEqual(buckets.take('a', rate), { ok: true })
    assert.deepEqual(buckets.take('a', rate), { ok: false, retryAfterMs: 10_000 })
  })

  it('refill at the configured rate', () => {
    const time = manualClock()
    const buckets = new TokenBuckets(time.clock)
    const rate = { callsPerMinute: 6, burst: 1 }
    assert.equal(buckets.take('a', rate).ok, true)
    time.advance(9_999)
    assert.equal(buckets.take('a', rate).ok, false)
    time.advance(1)
    assert.equal(buckets.take('a', rate).ok, true)
  })

  it('keep keys independent', () => {
    const buckets = new TokenBuckets(manualClock().clock)
    const rate = { callsPerMinute: 1 }
    assert.equal(buckets.take('alice', rate).ok, true)
    assert.equal(buckets.take('alice', rate).ok, false)
    assert.equal(buckets.take('bob', rate).ok, true)
  })

  it('return a refunded token', () => {
    const buckets = new TokenBuckets(manualClock().clock)
    const rate = { callsPerMinute: 1 }
    assert.equal(buckets.take('a', rate).ok, true)
    buckets.refund('a')
    assert.equal(buckets.take('a', rate).ok, true)
  })
})

describe('circuit breakers', () => {
  it('open after consecutive failures', () => {
    const time = manualClock()
    const breakers = new CircuitBreakers(time.clock, { failureThreshold: 3, coolDownMs: 5000 })
    assert.equal(breakers.failed('s'), false)
    assert.equal(breakers.failed('s'), false)
    assert.equal(breakers.failed('s'), true)
    const verdict = breakers.check('s')
    assert.equal(verdict.ok, false)
    assert.equal(verdict.ok === false && verdict.retryAt, time.clock() + 5000)
    assert.deepEqual(breakers.check('other'), { ok: true, probe: false })
  })

  it('reset the count on success', () => {
    const breakers = new CircuitBreakers(manualClock().clock, { failureThreshold: 2 })
    breakers.failed('s')
    breakers.succeeded('s')
    assert.equal(breakers.failed('s'), false)
    assert.deepEqual(breakers.check('s'), { ok: true, probe: false })
  })

  it('ignore failures outside the window', () => {
    const time = manualClock()
    const breakers = new CircuitBreakers(time.clock, { failureThreshold: 2, windowMs: 1000 })
    breakers.failed('s')
    time.advance(1001)
    assert.equal(breakers.failed('s'), false)
  })

  it('let one probe through after the cool-down', () => {
    const time = manualClock()
    const breakers = new CircuitBreakers(time.clock, { failureThreshold: 1, coolDownMs: 1000 })
    breakers.failed('s')
    time.advance(1000)
    assert.deepEqual(breakers.check('s'), { ok: true, probe: true })
    assert.equal(breakers.check('s').ok, false)
    assert.equal(breakers.failed('s'), true)
    assert.equal(breakers.check('s').ok, false)
    time.advance(1000)
    assert.deepEqual(breakers.check('s'), { ok: true, probe: true })
    breakers.succeeded('s')
    assert.deepEqual(breakers.check('s'), { ok: true, probe: false })
  })
})

describe('loop detector', () => {
  it('refuse a call after the repeated failures', () => {
    const time = manualClock()
    const loops = new LoopDetector(time.clock, { maxRepeats: 2, windowMs: 1000 })
    loops.failed('call')
    assert.equal(loops.check('call'), 0)
    loops.failed('call')
    assert.equal(loops.check('call'), 2)
    assert.equal(loops.check('other call'), 0)
    time.advance(1001)
    assert.equal(loops.check('call'), 0)
  })

  it('forget a call that succeeded', () => {
    const loops = new LoopDetector(manualClock().clock, { maxRepeats: 1 })
    loops.failed('call')
    loops.succeeded('call')
    assert.equal(loops.check('call'), 0)
  })
})

describe('upstream address check', () => {
  const refused: Array<[string, RegExp]> = [
    ['169.254.169.254', /cloud metadata/],
    ['fd00:ec2::254', /cloud metadata/],
    ['::ffff:169.254.169.254', /cloud metadata/],
    ['127.0.0.1', /loopback/],
    ['::1', /loopback/],
    ['169.254.10.1', /link-local/],
    ['fe80::1', /link-local/],
    ['10.2.3.4', /private/],
    ['172.16.0.1', /private/],
    ['192.168.1.1', /private/],
    ['fd12::1', /private/],
    ['0.0.0.0', /unspecified/],
  ]
  for (const [address, reason] of refused) {
    it(`reject ${address}`, () => {
      assert.match(addressRefusal(address) ?? '', reason)
    })
  }

  it('allow a public address', () => {
    assert.equal(addressRefusal('93.184.216.34'), undefined)
    assert.equal(addressRefusal('2606:4700::1111'), undefined)
  })

  it('allow private addresses when the manifest opts in', () => {
    assert.equal(addressRefusal('127.0.0.1', { allowPrivateNetwork: true }), undefined)
    assert.equal(addressRefusal('10.1.2.3', { allowAddresses: ['10.1.0.0/16'] }), undefined)
    assert.match(addressRefusal('10.2.0.1', { allowAddresses: ['10.1.0.0/16'] }) ?? '', /private/)
  })

  it('reject metadata addresses even when allowed', () => {
    const allowance = { allowPrivateNetwork: true, allowAddresses: ['169.254.169.254'] }
    assert.match(addressRefusal('169.254.169.254', allowance) ?? '', /cloud metadata/)
  })

  it('reject a metadata URL before connecting', () => {
    assert.throws(
      () => checkUpstreamUrl('files', 'http://169.254.169.254/latest/meta-data/'),
      (error) =>
        isWritError(error, 'gateway.upstream_address_refused') &&
        /"files"/.test(error.message) &&
        /169\.254\.169\.254 is a cloud metadata address/.test(error.message),
    )
    assert.throws(
      () => checkUpstreamUrl('files', 'http://metadata.google.internal/computeMetadata/v1/'),
      /metadata\.google\.internal is a cloud metadata host/,
    )
    assert.throws(() => checkUpstreamUrl('files', 'http://[fd00:ec2::254]/'), /cloud metadata/)
    assert.throws(
      () => checkUpstreamUrl('files', 'http://[::ffff:169.254.169.254]/'),
      /169\.254\.169\.254 is a cloud metadata address/,
    )
    assert.throws(
      () => checkUpstreamUrl('files', 'http://2852039166/'),
      /169\.254\.169\.254 is a cloud metadata address/,
    )
  })

  it('reject loopback URLs unless allowed', () => {
    assert.throws(() => checkUpstreamUrl('files', 'http://127.0.0.1:8080/mcp'), /loopback/)
    assert.throws(() => checkUpstreamUrl('files', 'http://localhost:8080/mcp'), /loopback name/)
    assert.doesNotThrow(() =>
      checkUpstreamUrl('files', 'http://127.0.0.1:8080/mcp', { allowPrivateNetwork: true }),
    )
  })

  it('check every resolved address at connect time', async () => {
    const fakeResolver = ((
      _host: string,
      _options: unknown,
      callback: (error: null, addresses: LookupAddress[]) => void,
    ) => {
      callback(null, [
        { address: '93.184.216.34', family: 4 },
        { address: '169.254.169.254', family: 4 },
      ])
    }) as never
    const lookup = guardedLookup('tracker', {}, fakeResolver)
    const error = await new Promise<Error | null>((done) =>
      lookup('rebind.example', { family: 0 }, (failure) => done(failure)),
    )
    assert.ok(isWritError(error, 'gateway.upstream_address_refused'))
    assert.match(error.message, /rebind\.example: 169\.254\.169\.254 is a cloud metadata address/)
  })

  it('pass a public resolution through', async () => {
    const fakeResolver = ((
      _host: string,
      _options: unknown,
      callback: (error: null, addresses: LookupAddress[]) => void,
    ) => callback(null, [{ address: '93.184.216.34', family: 4 }])) as never
    const lookup = guardedLookup('tracker', {}, fakeResolver)
    const address = await new Promise<string>((done, fail) =>
      lookup('tracker.example', { family: 0 }, (failure, value) =>
        failure ? fail(failure) : done(value as string),
      ),
    )
    assert.equal(address, '93.184.216.34')
  })
})

describe('strictest role limits', () => {
  const limits = new Map([
    ['wide', { callsPerMinute: 60, burst: 20, tools: { 'search_*': { callsPerMinute: 30 } } }],
    ['narrow', { callsPerMinute: 10, tools: { 'search_*': { callsPerMinute: 5, burst: 2 } } }],
  ])

  it('keep the lowest rate of each bucket', () => {
    assert.deepEqual(strictestLimits(['wide', 'narrow', 'plain'], limits), {
      callsPerMinute: 10,
      burst: 10,
      tools: { 'search_*': { callsPerMinute: 5, burst: 2 } },
    })
  })

  it('return undefined without limited roles', () => {
    assert.equal(strictestLimits(['plain'], limits), undefined)
  })
})

describe('limits manifest fields', () => {
  it('accept limits on a role', () => {
    const spec = { limits: { callsPerMinute: 60, burst: 10 } }
    assert.doesNotThrow(() => validateSpec('Role', spec))
  })

  it('accept a loopback URL with opt-in', () => {
    const spec = { http: { url: 'http://127.0.0.1:9/mcp', allowPrivateNetwork: true } }
    assert.doesNotThrow(() => validateSpec('McpServer', spec))
  })

  it('accept a rate limit with tool patterns', () => {
    const config = validateRateLimits(
      { callsPerMinute: 60, burst: 10, tools: { 'search_*': { callsPerMinute: 10 } } },
      ['spec', 'limits'],
    )
    assert.deepEqual(config, {
      callsPerMinute: 60,
      burst: 10,
      tools: { 'search_*': { callsPerMinute: 10 } },
    })
  })

  const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
    ['zero rate', { limits: { callsPerMinute: 0 } }, /invalid rate 0/],
    ['fractional burst', { limits: { callsPerMinute: 5, burst: 1.5 } }, /invalid rate 1\.5/],
    ['missing rate', { limits: { burst: 5 } }, /missing required field/],
    [
      'bad pattern',
      { limits: { callsPerMinute: 5, tools: { '^x': { callsPerMinute: 1 } } } },
      /\^x/,
    ],
    ['bad timeout', { timeout: 'soon' }, /soon/],
    [
      'bad allowed address',
      { http: { url: 'https://h.example/', allowAddresses: ['10.0.0.0/40'] } },
      /10\.0\.0\.0\/40/,
    ],
    [
      'metadata URL',
      { http: { url: 'http://169.254.169.254/mcp', allowPrivateNetwork: true } },
      /upstream URL "http:\/\/169\.254\.169\.254\/mcp" is not allowed: .* cloud metadata address/,
    ],
    [
      'loopback URL without opt-in',
      { http: { url: 'http://127.0.0.1:9/mcp' } },
      /127\.0\.0\.1 is a loopback address; if this upstream is intended, set http\.allowPrivateNetwork/,
    ],
    [
      'non-boolean flag',
      { http: { url: 'https://h.example/', allowPrivateNetwork: 'yes' } },
      /invalid value "yes"/,
    ],
  ]
  for (const [name, fields, message] of invalid) {
    it(`reject ${name}`, () => {
      const spec = { stdio: { command: 'x' }, ...fields }
      if ('http' in fields) delete (spec as { stdio?: unknown }).stdio
      assert.throws(() => validateSpec('McpServer', spec), message)
    })
  }
})
