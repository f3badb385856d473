import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { parentSpiffeIdOf, taskCallerFields } from '../../src/audit/task-caller.js'
import {
  checkPatternList,
  checkReason,
  childDepth,
  globContains,
  MAX_TASK_PATTERNS,
  MAX_TASK_REASON_LENGTH,
  narrowScope,
  newTaskId,
  patternContains,
  taskLifetime,
} from '../../src/authority/task-scope.js'
import { isWritError } from '../../src/errors.js'
import { SpiffeId } from '../../src/identity/spiffe-id.js'
import type { WritClaims } from '../../src/identity/types.js'

function throwsWith(run: () => unknown, code: string, message: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(isWritError(error), `expected a WritError, got ${String(error)}`)
    assert.equal(error.code, code)
    assert.match(error.message, message)
    return true
  })
}

describe('task id', () => {
  test('is ten lowercase base32 characters', () => {
    for (let i = 0; i < 50; i++) assert.match(newTaskId(), /^[a-z2-7]{10}$/)
  })

  test('differs between calls', () => {
    const ids = new Set(Array.from({ length: 200 }, () => newTaskId()))
    assert.equal(ids.size, 200)
  })

  test('extends the parent SPIFFE ID', () => {
    const id = newTaskId()
    const child = SpiffeId.parse('spiffe://writ.local/bot/ci').child('task', id)
    assert.equal(child.toString(), `spiffe://writ.local/bot/ci/task/${id}`)
    assert.equal(parentSpiffeIdOf(child.toString()), 'spiffe://writ.local/bot/ci')
  })

  test('parent of a nested task drops one level', () => {
    const nested = 'spiffe://writ.local/user/ana/task/aaaaaaaaaa/task/bbbbbbbbbb'
    assert.equal(parentSpiffeIdOf(nested), 'spiffe://writ.local/user/ana/task/aaaaaaaaaa')
    assert.equal(parentSpiffeIdOf('spiffe://writ.local/bot/ci'), undefined)
    assert.equal(parentSpiffeIdOf('spiffe://writ.local/task/abc'), undefined)
  })
})

describe('task request checks', () => {
  test('pattern list keeps valid patterns once', () => {
    assert.deepEqual(checkPatternList('tools', ['read_*', '^get_.*$', 'read_*']), [
      'read_*',
      '^get_.*$',
    ])
  })

  test('pattern list rejects empty and non-lists', () => {
    throwsWith(() => checkPatternList('tools', []), 'task.invalid', /"tools" must be a non-empty/)
    throwsWith(() => checkPatternList('servers', 'files'), 'task.invalid', /"servers" must be/)
  })

  test('pattern list rejects bad entries', () => {
    throwsWith(() => checkPatternList('tools', ['read_*', 7]), 'task.invalid', /contains 7/)
    throwsWith(() => checkPatternList('tools', ['']), 'task.invalid', /contains ""/)
    throwsWith(() => checkPatternList('tools', ['^read_']), 'task.invalid', /"tools": .*"\^read_"/)
    throwsWith(
      () => checkPatternList('tools', ['x'.repeat(300)]),
      'task.invalid',
      /pattern of 300 characters/,
    )
  })

  test('pattern list rejects too many entries', () => {
    const many = Array.from({ length: MAX_TASK_PATTERNS + 1 }, (_, i) => `tool_${i}`)
    throwsWith(
      () => checkPatternList('tools', many),
      'task.invalid',
      new RegExp(`lists ${MAX_TASK_PATTERNS + 1} patterns; at most ${MAX_TASK_PATTERNS}`),
    )
  })

  test('reason is trimmed', () => {
    assert.equal(checkReason('  triage issue 42 '), 'triage issue 42')
  })

  test('reason is required', () => {
    throwsWith(() => checkReason(undefined), 'task.invalid', /"reason" is required/)
    throwsWith(() => checkReason('   '), 'task.invalid', /"reason" is required/)
  })

  test('reason rejects control characters', () => {
    throwsWith(() => checkReason('line one\nline two'), 'task.invalid', /U\+000a/)
  })

  test('reason rejects overlong text', () => {
    const long = 'a'.repeat(MAX_TASK_REASON_LENGTH + 1)
    throwsWith(
      () => checkReason(long),
      'task.invalid',
      new RegExp(`${MAX_TASK_REASON_LENGTH + 1} characters long`),
    )
  })
})

describe('glob containment', () => {
  const cases: Array<[outer: string, inner: string, expected: boolean]> = [
    ['read_*', 'read_text_*', true],
    ['read_*', 'read_?', true],
    ['read_*', 'rea*', false],
    ['read_*', '*', false],
    ['*', 'anything_*', true],
    ['*_file', 'read_*_file', true],
    ['*_file', 'read_*', false],
    ['read_?', 'read_*', false],
    ['read_?', 'read_?', true],
    ['read_?', 'read_x', true],
    ['*a*', '*a*a*', true],
    ['a*b*', 'a*', false],
    ['list_*', 'read_*', false],
  ]
  for (const [outer, inner, expected] of cases) {
    test(`${outer} ${expected ? 'contains' : 'does not contain'} ${inner}`, () => {
      assert.equal(globContains(outer, inner), expected)
    })
  }
})

describe('pattern containment', () => {
  test('literal inside a regular expression', () => {
    assert.equal(patternContains('^read_(text|media)_file$', 'read_text_file'), true)
    assert.equal(patternContains('^read_(text|media)_file$', 'write_text_file'), false)
  })

  test('regular expression only when identical', () => {
    assert.equal(patternContains('^read_.*$', '^read_.*$'), true)
    assert.equal(patternContains('^read_.*$', '^read_text.*$'), false)
    assert.equal(patternContains('*', '^read_.*$'), false)
  })

  test('literal inside a trait pattern uses the traits', () => {
    const traits = { team: ['infra'] }
    assert.equal(patternContains('{{traits.team}}_*', 'infra_deploy', traits), true)
    assert.equal(patternContains('{{traits.team}}_*', 'web_deploy', traits), false)
  })

  test('glob against a trait pattern is never assumed inside', () => {
    assert.equal(patternContains('{{traits.team}}_*', 'infra_*', { team: ['infra'] }), false)
  })
})

describe('scope narrowing', () => {
  test('a root parent passes the request through', () => {
    assert.deepEqual(narrowScope(undefined, { tools: ['*'] }, {}), { tools: ['*'] })
    assert.deepEqual(narrowScope(undefined, { servers: ['files'], tools: ['read_*'] }, {}), {
      servers: ['files'],
      tools: ['read_*'],
    })
  })

  test('a parent task bounds the tools', () => {
    const parent = { id: 'aaaaaaaaaa', reason: 'r', tools: ['read_*', 'list_directory'] }
    const scope = narrowScope(parent, { tools: ['read_text_file', 'list_directory'] }, {})
    assert.deepEqual(scope, { tools: ['read_text_file', 'list_directory'] })
  })

  test('a wider tool is rejected naming it', () => {
    const parent = { id: 'aaaaaaaaaa', reason: 'r', tools: ['read_*'] }
    throwsWith(
      () => narrowScope(parent, { tools: ['read_file', 'write_file'] }, {}),
      'task.scope_exceeded',
      /tools pattern "write_file" is not within the parent task's tools \[read_\*\]/,
    )
  })

  test('parent servers are inherited', () => {
    const parent = { id: 'aaaaaaaaaa', reason: 'r', servers: ['files'], tools: ['*'] }
    assert.deepEqual(narrowScope(parent, { tools: ['read_*'] }, {}), {
      servers: ['files'],
      tools: ['read_*'],
    })
  })

  test('a server outside the parent is rejected', () => {
    const parent = { id: 'aaaaaaaaaa', reason: 'r', servers: ['files'], tools: ['*'] }
    throwsWith(
      () => narrowScope(parent, { servers: ['notes'], tools: ['read_*'] }, {}),
      'task.scope_exceeded',
      /servers pattern "notes" is not within the parent task's servers \[files\]/,
    )
  })
})

describe('task lifetime', () => {
  const now = Date.UTC(2030, 0, 1)
  const parentNotAfter = new Date(now + 3600_000)

  test('uses the request when nothing is shorter', () => {
    const lifetime = taskLifetime({
      now,
      requestedSeconds: 600,
      roleMaxSeconds: 3600,
      parentNotAfter,
    })
    assert.deepEqual(lifetime, { ttlSeconds: 600, limitedBy: 'request' })
  })

  test('caps at the role maxTtl', () => {
    const lifetime = taskLifetime({
      now,
      requestedSeconds: 1800,
      roleMaxSeconds: 300,
      parentNotAfter,
    })
    assert.deepEqual(lifetime, { ttlSeconds: 300, limitedBy: 'role' })
  })

  test("caps at the parent's remaining life", () => {
    const lifetime = taskLifetime({
      now: now + 3000_500,
      requestedSeconds: 7200,
      roleMaxSeconds: undefined,
      parentNotAfter,
    })
    assert.deepEqual(lifetime, { ttlSeconds: 600, limitedBy: 'parent' })
  })

  test('rejects a parent about to expire', () => {
    throwsWith(
      () =>
        taskLifetime({
          now: now + 3599_500,
          requestedSeconds: 600,
          roleMaxSeconds: undefined,
          parentNotAfter,
        }),
      'task.parent_expiring',
      /expires at 2030-01-01T01:00:00.000Z/,
    )
  })
})

describe('delegation depth', () => {
  test('adds one per level', () => {
    assert.equal(childDepth(0, 2), 1)
    assert.equal(childDepth(1, 2), 2)
  })

  test('rejects past the limit naming both numbers', () => {
    throwsWith(
      () => childDepth(2, 2),
      'task.depth_exceeded',
      /delegation depth 3, but this server allows at most 2/,
    )
    throwsWith(() => childDepth(0, 0), 'task.depth_exceeded', /depth 1, .* at most 0/)
  })
})

describe('audit caller fields', () => {
  const claims: WritClaims = {
    version: 1,
    kind: 'bot',
    roles: ['reader'],
    traits: {},
    task: { id: 'k3v9qa2mzx', reason: 'triage', tools: ['read_*'] },
    parentSerial: '4a5b',
    depth: 1,
    generation: 1,
    accessRequests: [],
  }

  test('name the task and its parent', () => {
    const fields = taskCallerFields('spiffe://writ.local/bot/ci/task/k3v9qa2mzx', claims)
    assert.deepEqual(fields, {
      task: 'k3v9qa2mzx',
      taskReason: 'triage',
      parentSerial: '4a5b',
      parentSpiffeId: 'spiffe://writ.local/bot/ci',
    })
  })

  test('are empty without a task', () => {
    const { task: _task, parentSerial: _serial, ...root } = claims
    assert.deepEqual(taskCallerFields('spiffe://writ.local/bot/ci', { ...root, depth: 0 }), {})
  })
})
