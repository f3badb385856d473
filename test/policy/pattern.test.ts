import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isWritError } from '../../src/errors.js'
import { compilePattern } from '../../src/policy/pattern.js'

function assertInvalidPattern(source: string, detail: string): void {
  assert.throws(
    () => compilePattern(source),
    (error: unknown) => {
      assert.ok(isWritError(error, 'policy.invalid_pattern'), String(error))
      assert.ok(error.message.includes(JSON.stringify(source)), error.message)
      assert.ok(error.message.includes(detail), error.message)
      assert.equal(error.fields.pattern, source)
      return true
    },
  )
}

test('literal matches only itself', () => {
  const pattern = compilePattern('read_file')
  assert.equal(pattern.source, 'read_file')
  assert.equal(pattern.usesTraits, false)
  assert.equal(pattern.matches('read_file'), true)
  assert.equal(pattern.matches('read_files'), false)
  assert.equal(pattern.matches('Read_file'), false)
  assert.equal(pattern.matches(''), false)
})

test('literal dot is not a wildcard', () => {
  const pattern = compilePattern('a.b')
  assert.equal(pattern.matches('a.b'), true)
  assert.equal(pattern.matches('axb'), false)
})

test('glob star matches any run', () => {
  const pattern = compilePattern('read_*')
  assert.equal(pattern.matches('read_'), true)
  assert.equal(pattern.matches('read_file'), true)
  assert.equal(pattern.matches('read_multiple_files'), true)
  assert.equal(pattern.matches('xread_file'), false)
  assert.equal(pattern.matches('write_file'), false)
})

test('glob star matches a line break', () => {
  assert.equal(compilePattern('write_*').matches('write_\nfile'), true)
})

test('glob question mark matches one character', () => {
  const pattern = compilePattern('get_?')
  assert.equal(pattern.matches('get_a'), true)
  assert.equal(pattern.matches('get_é'), true)
  assert.equal(pattern.matches('get_'), false)
  assert.equal(pattern.matches('get_ab'), false)
})

test('glob keeps regex characters literal', () => {
  const dotted = compilePattern('a.b*')
  assert.equal(dotted.matches('a.bc'), true)
  assert.equal(dotted.matches('axbc'), false)
  const grouped = compilePattern('(a|b)+*')
  assert.equal(grouped.matches('(a|b)+tail'), true)
  assert.equal(grouped.matches('aa'), false)
  assert.equal(compilePattern('x[1]*').matches('x[1]y'), true)
  assert.equal(compilePattern('x[1]*').matches('x1y'), false)
  assert.equal(compilePattern('\\d*').matches('\\dz'), true)
  assert.equal(compilePattern('\\d*').matches('5'), false)
})

test('regex matches the whole name', () => {
  const pattern = compilePattern('^search_.*$')
  assert.equal(pattern.matches('search_code'), true)
  assert.equal(pattern.matches('search_'), true)
  assert.equal(pattern.matches('do_search_code'), false)
  const alternation = compilePattern('^(get|list)_[a-z]+$')
  assert.equal(alternation.matches('get_issue'), true)
  assert.equal(alternation.matches('list_repos'), true)
  assert.equal(alternation.matches('get_issue2'), false)
  assert.equal(alternation.matches('delete_issue'), false)
})

test('regex dot matches a line break', () => {
  assert.equal(compilePattern('^write_.*$').matches('write_\nfile'), true)
})

test('regex cannot be widened by a trailing line', () => {
  assert.equal(compilePattern('^read_[a-z]+$').matches('read_file\nwrite_file'), false)
})

test('catastrophic regex returns on a long name', () => {
  const pattern = compilePattern('^(a+)+$')
  assert.equal(pattern.matches(`${'a'.repeat(30_000)}b`), false)
  assert.equal(pattern.matches('a'.repeat(30_000)), true)
})

test('invalid regex names the pattern and error', () => {
  assertInvalidPattern('^foo($', 'missing closing )')
  assertInvalidPattern('^a{2000}$', 'invalid repeat count')
  assertInvalidPattern('^(?=a)b$', 'invalid or unsupported Perl syntax')
})

test('half-anchored pattern is rejected', () => {
  assertInvalidPattern('^foo', 'must start with ^ and end with $')
  assertInvalidPattern('foo$', 'must start with ^ and end with $')
  assertInvalidPattern('^', 'must start with ^ and end with $')
  assertInvalidPattern('$', 'must start with ^ and end with $')
})

test('empty pattern is rejected', () => {
  assertInvalidPattern('', 'use a name, a glob')
})

test('trait placeholder expands to each value', () => {
  const pattern = compilePattern('read_{{traits.team}}_*')
  assert.equal(pattern.usesTraits, true)
  const traits = { team: ['red', 'blue'] }
  assert.equal(pattern.matches('read_red_notes', traits), true)
  assert.equal(pattern.matches('read_blue_notes', traits), true)
  assert.equal(pattern.matches('read_green_notes', traits), false)
  assert.equal(pattern.matches('read_red_notes', { team: ['green'] }), false)
})

test('trait placeholder in regex and literal', () => {
  const regex = compilePattern('^{{ traits.team }}_(get|list)$')
  assert.equal(regex.matches('ops_get', { team: ['ops'] }), true)
  assert.equal(regex.matches('ops_put', { team: ['ops'] }), false)
  const literal = compilePattern('{{traits.tool}}')
  assert.equal(literal.matches('echo', { tool: ['echo'] }), true)
  assert.equal(literal.matches('echo2', { tool: ['echo'] }), false)
})

test('missing trait matches nothing', () => {
  const pattern = compilePattern('read_{{traits.team}}_*')
  assert.equal(pattern.matches('read__x'), false)
  assert.equal(pattern.matches('read__x', {}), false)
  assert.equal(pattern.matches('read__x', { team: [] }), false)
})

test('trait values are inserted literally', () => {
  const pattern = compilePattern('^{{traits.team}}$')
  assert.equal(pattern.matches('anything', { team: ['.*'] }), false)
  assert.equal(pattern.matches('.*', { team: ['.*'] }), true)
  const glob = compilePattern('{{traits.team}}_x')
  assert.equal(glob.matches('red_x', { team: ['*'] }), false)
  assert.equal(glob.matches('*_x', { team: ['*'] }), true)
})

test('malformed placeholder is rejected', () => {
  assertInvalidPattern('read_{{traits.team', 'not closed with }}')
  assertInvalidPattern('read_{{user.name}}', 'unknown placeholder {{user.name}}')
  assertInvalidPattern('read_{{traits.}}', 'unknown placeholder {{traits.}}')
  assertInvalidPattern('^{{traits.team}}($', 'missing closing )')
})
