import assert from 'node:assert/strict'
import { test } from 'node:test'
import { decideServerRequest, sensitiveElicitationField } from '../../src/guard/server-requests.js'
import { serverTrustConfig } from '../../src/guard/server-trust-spec.js'
import { FieldError, formatPath } from '../../src/policy/fields.js'
import { validateSpec } from '../../src/policy/specs.js'

const ALL = { sampling: true, elicitation: true, roots: true }

for (const [method, capability] of [
  ['sampling/createMessage', 'sampling'],
  ['elicitation/create', 'elicitation'],
  ['roots/list', 'roots'],
] as const) {
  test(`deny ${method} by default`, () => {
    const verdict = decideServerRequest(method, {}, undefined)
    assert.equal(verdict?.ok, false)
    assert.equal(verdict?.rule, `guard/server-request/${capability}`)
    assert.match((verdict as { message: string }).message, new RegExp(`spec.allow.${capability}`))
  })

  test(`allow ${method} when the manifest allows it`, () => {
    assert.deepEqual(decideServerRequest(method, {}, ALL), {
      ok: true,
      rule: `guard/server-request/${capability}`,
    })
  })
}

test('deny sampling when only elicitation is allowed', () => {
  const verdict = decideServerRequest('sampling/createMessage', {}, { elicitation: true })
  assert.equal(verdict?.ok, false)
})

test('pass other server requests unchanged', () => {
  assert.equal(decideServerRequest('ping', {}, undefined), undefined)
})

// Elicitations that ask for a credential, with where the check must find it.
const SENSITIVE: Array<[string, unknown, string]> = [
  ['property name', { requestedSchema: { properties: { password: {} } } }, 'password'],
  ['camelCase name', { requestedSchema: { properties: { githubToken: {} } } }, 'githubToken'],
  ['upper snake name', { requestedSchema: { properties: { API_KEY: {} } } }, 'API_KEY'],
  ['format', { requestedSchema: { properties: { value: { format: 'password' } } } }, 'format'],
  [
    'description',
    { requestedSchema: { properties: { n: { description: 'Credit card number' } } } },
    'description',
  ],
  ['title', { requestedSchema: { properties: { n: { title: 'Your secret' } } } }, 'title'],
  ['message', { message: 'Enter your API key to continue', requestedSchema: {} }, 'message'],
]

for (const [name, params, where] of SENSITIVE) {
  test(`deny elicitation asking for a credential by ${name}`, () => {
    const verdict = decideServerRequest('elicitation/create', params, ALL)
    assert.equal(verdict?.ok, false)
    assert.equal(verdict?.rule, 'guard/elicitation/credential')
    assert.ok(sensitiveElicitationField(params)?.includes(where))
  })
}

// Ordinary forms, including words that contain a credential word without being one.
const ORDINARY: Array<[string, unknown]> = [
  ['a name', { message: 'What is your name?', requestedSchema: { properties: { name: {} } } }],
  [
    'passenger count',
    { message: 'How many?', requestedSchema: { properties: { passengers: {} } } },
  ],
  ['secretary', { message: 'Who is the secretary?', requestedSchema: { properties: { who: {} } } }],
  [
    'tokenizer',
    { message: 'Pick a tokenizer', requestedSchema: { properties: { tokenizer: {} } } },
  ],
]

for (const [name, params] of ORDINARY) {
  test(`allow elicitation asking for ${name}`, () => {
    assert.equal(decideServerRequest('elicitation/create', params, ALL)?.ok, true)
  })
}

function server(spec: Record<string, unknown>) {
  return { stdio: { command: 'node' }, ...spec }
}

test('McpServer spec accepts allow and external', () => {
  validateSpec('McpServer', server({ allow: { sampling: true, roots: false }, external: true }))
})

function specError(spec: Record<string, unknown>): FieldError {
  try {
    validateSpec('McpServer', server(spec))
  } catch (error) {
    assert.ok(error instanceof FieldError)
    return error
  }
  assert.fail('the spec was accepted')
}

test('McpServer spec rejects an unknown allow key', () => {
  const error = specError({ allow: { sampleing: true } })
  assert.equal(formatPath(error.path), 'spec.allow.sampleing')
  assert.equal(
    error.message,
    'unknown field "sampleing" (allowed fields: sampling, elicitation, roots)',
  )
})

test('McpServer spec rejects a non-boolean allowance', () => {
  const error = specError({ allow: { sampling: 'yes' } })
  assert.equal(formatPath(error.path), 'spec.allow.sampling')
  assert.equal(error.message, 'expected true or false, got "yes"')
})

test('McpServer spec rejects a non-boolean external', () => {
  const error = specError({ external: 'true' })
  assert.equal(formatPath(error.path), 'spec.external')
  assert.equal(error.message, 'expected true or false, got "true"')
})

function resource(labels: Record<string, string>, spec: Record<string, unknown>) {
  return {
    apiVersion: 'writ.dev/v1alpha1' as const,
    kind: 'McpServer' as const,
    metadata: { name: 'tracker', labels },
    spec: server(spec),
  }
}

test('server trust reads the external label', () => {
  assert.deepEqual(serverTrustConfig(resource({ external: 'true' }, {})), { external: true })
  assert.deepEqual(serverTrustConfig(resource({ external: 'false' }, {})), {})
})

test('server trust reads spec external and allow', () => {
  assert.deepEqual(serverTrustConfig(resource({}, { external: true, allow: { roots: true } })), {
    external: true,
    allow: { roots: true },
  })
})

test('pass a request named like an object method', () => {
  assert.equal(decideServerRequest('toString', {}, undefined), undefined)
})
