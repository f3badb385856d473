import assert from 'node:assert/strict'
import { test } from 'node:test'
import { emailDomainIn, hostIn, isWithin } from '../../src/policy/arg-helpers.js'

// Each row: a path, whether it counts as inside /workspace, and the trick it tries.
const PATHS: Array<[unknown, boolean, string]> = [
  ['/workspace', true, 'the directory itself'],
  ['/workspace/notes/a.txt', true, 'a nested file'],
  ['/workspace//notes///a.txt', true, 'repeated slashes collapse'],
  ['/workspace/./notes/./a.txt', true, 'single dots drop'],
  ['/workspace/my notes.txt', true, 'a space inside a name'],
  ['/workspace/notes%20a.txt', true, 'percent-encoded space'],
  ['/workspace/', true, 'trailing slash'],
  ['/workspace/../etc/passwd', false, 'parent segment escapes'],
  ['/workspace/notes/../a.txt', false, 'parent segment even when it stays inside'],
  ['/workspace/..', false, 'trailing parent segment'],
  ['/workspace/%2e%2e/etc/passwd', false, 'percent-encoded parent segment'],
  ['/workspace/%2E%2E%2Fetc', false, 'percent-encoded parent and slash'],
  ['/workspace/%252e%252e/etc', false, 'double percent-encoded parent segment'],
  ['/workspace/%zz', false, 'malformed percent-encoding'],
  ['/workspace\\..\\etc\\passwd', false, 'backslash separators with parent segments'],
  ['\\workspace\\a.txt', true, 'backslash separators inside'],
  ['/workspace/...', false, 'only dots, which Windows trims'],
  ['/workspace/.. ', false, 'dots and a space, which Windows trims to ..'],
  ['/workspace-evil/a.txt', false, 'sibling directory sharing the prefix'],
  ['/workspaces', false, 'longer name sharing the prefix'],
  ['/etc/passwd', false, 'outside entirely'],
  ['workspace/a.txt', false, 'relative path'],
  ['./workspace/a.txt', false, 'relative path with a dot'],
  ['', false, 'empty path'],
  ['~/workspace', false, 'home directory reference'],
  ['/workspace/~root/x', false, 'tilde user reference inside'],
  ['/workspace/a\u0000/../../etc/passwd', false, 'NUL byte'],
  ['/workspace/a%00.txt', false, 'percent-encoded NUL byte'],
  ['/workspace/a\n.txt', false, 'line break'],
  ['//workspace/a.txt', false, 'leading double slash, a UNC share on Windows'],
  ['\\\\server\\workspace', false, 'UNC share with backslashes'],
  ['C:\\workspace\\a.txt', false, 'Windows drive letter'],
  ['/workspace\uff0f..\uff0fetc', false, 'fullwidth solidus that NFKC folds to /'],
  ['/workspace/\uff0e\uff0e/etc', false, 'fullwidth dots that NFKC folds to ..'],
  [42, false, 'a number'],
  [null, false, 'null'],
  [['/workspace/a'], false, 'a list'],
]

for (const [path, inside, trick] of PATHS) {
  test(`isWithin ${inside ? 'allows' : 'rejects'} ${trick}`, () => {
    assert.equal(isWithin(path, '/workspace'), inside)
  })
}

test('isWithin normalises the directory too', () => {
  assert.equal(isWithin('/workspace/a', '/workspace/'), true)
  assert.equal(isWithin('/workspace/a', '//workspace'), false)
  assert.equal(isWithin('/workspace/a', 'workspace'), false)
  assert.equal(isWithin('/workspace/a', '/workspace/../'), false)
  assert.equal(isWithin('/anything', '/'), true)
})

const URLS: Array<[unknown, boolean, string]> = [
  ['https://example.com/a', true, 'the domain itself'],
  ['https://api.example.com/v1?q=1', true, 'a subdomain'],
  ['HTTPS://API.EXAMPLE.COM/', true, 'upper case'],
  ['https://example.com./a', true, 'trailing dot'],
  ['https://example.com:8443/a', true, 'explicit port'],
  ['wss://example.com/socket', true, 'websocket scheme'],
  ['https://evilexample.com/', false, 'suffix without a dot boundary'],
  ['https://example.com.evil.net/', false, 'domain as a prefix of another'],
  ['https://example.com@evil.net/', false, 'user information before the real host'],
  ['https://user:pw@example.com/', false, 'user information on an allowed host'],
  ['https://@example.com/', false, 'empty user information'],
  ['https://evil.net\\@example.com/', false, 'backslash before @'],
  ['https://evil.net#@example.com/', false, 'fragment hiding the allowed host'],
  ['https://evil.net?@example.com/', false, 'query hiding the allowed host'],
  ['https://exam ple.com/', false, 'whitespace'],
  ['https://example.com\n.evil.net/', false, 'line break'],
  ['//example.com/a', false, 'scheme-relative reference'],
  ['example.com/a', false, 'no scheme'],
  ['https:example.com', false, 'special scheme without slashes'],
  ['file:///etc/passwd', false, 'file scheme'],
  ['javascript:alert(1)//example.com', false, 'javascript scheme'],
  ['ftp://example.com/', false, 'scheme outside the list'],
  ['https://xn--exmple-cua.com/', false, 'punycode of another domain'],
  [42, false, 'a number'],
]

for (const [url, allowed, trick] of URLS) {
  test(`hostIn ${allowed ? 'allows' : 'rejects'} ${trick}`, () => {
    assert.equal(hostIn(url, ['example.com']), allowed)
  })
}

test('hostIn matches IP addresses exactly only', () => {
  assert.equal(hostIn('http://10.0.0.1/', ['10.0.0.1']), true)
  assert.equal(hostIn('http://10.0.0.1/', ['0.0.1']), false)
  assert.equal(hostIn('http://0x0a000001/', ['10.0.0.1']), true)
  assert.equal(hostIn('http://[::1]:8080/', ['[::1]']), true)
  assert.equal(hostIn('http://[::1]/', ['::2']), false)
})

test('hostIn compares internationalised names after IDNA', () => {
  assert.equal(hostIn('https://bücher.example/', ['xn--bcher-kva.example']), true)
  assert.equal(hostIn('https://xn--bcher-kva.example/', ['bücher.example']), true)
})

test('hostIn ignores entries that are not host names', () => {
  assert.equal(hostIn('https://example.com/', ['', 'http://x', 42, 'example.com:80']), false)
  assert.equal(hostIn('https://example.com/', 'example.com'), false)
})

const ADDRESSES: Array<[unknown, boolean, string]> = [
  ['dev@example.com', true, 'the domain itself'],
  ['dev@mail.example.com', true, 'a subdomain'],
  ['Dev@EXAMPLE.COM', true, 'upper case domain'],
  ['dev@example.com.', true, 'trailing dot'],
  ['dev@evilexample.com', false, 'suffix without a dot boundary'],
  ['dev@example.com.evil.net', false, 'domain as a prefix of another'],
  ['dev@example.com@evil.net', false, 'two @ signs'],
  ['"dev@example.com"@evil.net', false, 'quoted local part'],
  ['Dev <dev@evil.net>', false, 'display name'],
  ['dev@evil.net, dev@example.com', false, 'address list'],
  ['dev@example.com;dev@evil.net', false, 'semicolon list'],
  ['@evil.net:dev@example.com', false, 'source route'],
  ['dev(comment)@example.com', false, 'comment'],
  ['dev@example.com\r\nBcc: x@evil.net', false, 'header injection'],
  ['dev@[10.0.0.1]', false, 'address literal'],
  ['dev@10.0.0.1', false, 'bare IP address'],
  ['dev@example%2ecom', false, 'percent-encoded domain'],
  ['@example.com', false, 'empty local part'],
  ['dev@', false, 'empty domain'],
  ['dev', false, 'no @'],
  [null, false, 'null'],
]

for (const [address, allowed, trick] of ADDRESSES) {
  test(`emailDomainIn ${allowed ? 'allows' : 'rejects'} ${trick}`, () => {
    assert.equal(emailDomainIn(address, ['example.com']), allowed)
  })
}
