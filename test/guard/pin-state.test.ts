import assert from 'node:assert/strict'
import { test } from 'node:test'
import { nextPin, TRUST_ON_FIRST_USE_APPROVER } from '../../src/guard/tool-pins.js'
import type { ToolPinRecord } from '../../src/store/tool-pin-store.js'

function observation(digest: string, options: { flagged?: boolean; strict?: boolean } = {}) {
  return {
    server: 'weather',
    tool: 'get_weather',
    digest,
    definition: `{"digest":"${digest}"}`,
    findings: options.flagged ? [{ rule: 'instruction', field: 'description', match: 'x' }] : [],
    mode: options.strict ? ('require-approval' as const) : ('trust-on-first-use' as const),
    now: 1000,
  }
}

const approved: ToolPinRecord = {
  server: 'weather',
  tool: 'get_weather',
  state: 'approved',
  digest: 'sha256:a',
  approvedDigest: 'sha256:a',
  definition: '{}',
  findings: [],
  firstSeen: 1,
  changed: 1,
  approvedBy: 'cli:ops',
  approvedAt: 2,
}

test('nextPin trusts clean tool on first use', () => {
  const pin = nextPin(undefined, observation('sha256:a'))
  assert.equal(pin?.state, 'approved')
  assert.equal(pin?.approvedDigest, 'sha256:a')
  assert.equal(pin?.approvedBy, TRUST_ON_FIRST_USE_APPROVER)
})

test('nextPin holds flagged tool on first use', () => {
  const pin = nextPin(undefined, observation('sha256:a', { flagged: true }))
  assert.equal(pin?.state, 'pending')
  assert.equal(pin?.approvedDigest, undefined)
})

test('nextPin holds new tool under require-approval', () => {
  const pin = nextPin(undefined, observation('sha256:a', { strict: true }))
  assert.equal(pin?.state, 'pending')
})

test('nextPin leaves same digest unchanged', () => {
  assert.equal(nextPin(approved, observation('sha256:a')), undefined)
})

test('nextPin quarantines changed approved tool', () => {
  const pin = nextPin(approved, observation('sha256:b'))
  assert.equal(pin?.state, 'quarantined')
  assert.equal(pin?.digest, 'sha256:b')
  assert.equal(pin?.approvedDigest, 'sha256:a')
  assert.equal(pin?.approvedBy, 'cli:ops')
  assert.equal(pin?.firstSeen, 1)
  assert.equal(pin?.changed, 1000)
})

test('nextPin restores the approved definition', () => {
  const quarantined = nextPin(approved, observation('sha256:b')) as ToolPinRecord
  const pin = nextPin(quarantined, observation('sha256:a'))
  assert.equal(pin?.state, 'approved')
  assert.equal(pin?.digest, 'sha256:a')
})

test('nextPin keeps never-approved tool pending', () => {
  const pending = nextPin(undefined, observation('sha256:a', { strict: true })) as ToolPinRecord
  const pin = nextPin(pending, observation('sha256:b', { strict: true }))
  assert.equal(pin?.state, 'pending')
})
