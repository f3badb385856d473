// Runs every compiled test file under dist/test with Node's built-in test runner.
// Pass folder names (unit, e2e) to narrow the run: `node scripts/run-tests.mjs dist/test/policy`.
import { spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

function collect(dir) {
  const files = []
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry)
    if (statSync(path).isDirectory()) files.push(...collect(path))
    else if (entry.endsWith('.test.js')) files.push(path)
  }
  return files
}

const roots = process.argv.length > 2 ? process.argv.slice(2) : ['dist/test']
const files = roots.flatMap(collect)
if (files.length === 0) {
  console.error(`no test files found under ${roots.join(', ')}; run npm run build first`)
  process.exit(1)
}
const result = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=2', '--test-reporter=spec', ...files],
  { stdio: 'inherit' },
)
process.exit(result.status ?? 1)
