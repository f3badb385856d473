/**
 * Reading secrets from a person: hidden prompts on the terminal, or one line of standard input
 * for scripts and tests (`--password-stdin`). Prompts are written to standard error so standard
 * output stays clean for `--json`.
 */
import { createInterface } from 'node:readline'
import { UsageError } from './command.js'

/** Reports whether standard input is a terminal a person can type into. */
export function hasTerminal(): boolean {
  return process.stdin.isTTY === true
}

/**
 * Asks for a secret without echoing it. Backspace deletes and Ctrl-C cancels. Throws a usage
 * error when standard input is not a terminal, naming `fallback`, the flag to use instead.
 */
export function promptHidden(question: string, fallback: string): Promise<string> {
  const input = process.stdin
  if (!input.isTTY) {
    return Promise.reject(new UsageError(`no terminal to ask for the ${question}; use ${fallback}`))
  }
  process.stderr.write(`${question}: `)
  return new Promise((resolve, reject) => {
    let value = ''
    const finish = () => {
      input.off('data', onData)
      input.setRawMode(false)
      input.pause()
      process.stderr.write('\n')
    }
    const onData = (chunk: string) => {
      for (const character of chunk) {
        if (character === '\r' || character === '\n') {
          finish()
          resolve(value)
          return
        }
        if (character === '\u0003' || character === '\u0004') {
          finish()
          reject(new UsageError('cancelled'))
          return
        }
        if (character === '\u007f' || character === '\b') {
          value = [...value].slice(0, -1).join('')
        } else if (character >= ' ') {
          value += character
        }
      }
    }
    input.setRawMode(true)
    input.setEncoding('utf8')
    input.on('data', onData)
    input.resume()
  })
}

/** Asks a question on the terminal and returns the answer with surrounding spaces removed. */
export function promptLine(question: string, fallback: string): Promise<string> {
  if (!process.stdin.isTTY) {
    return Promise.reject(new UsageError(`no terminal to ask for the ${question}; use ${fallback}`))
  }
  const reader = createInterface({ input: process.stdin, output: process.stderr })
  return new Promise((resolve) => {
    reader.question(`${question}: `, (answer) => {
      reader.close()
      resolve(answer.trim())
    })
  })
}

/** Reads standard input to its end and returns the first line without its line break. */
export async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const text = Buffer.concat(chunks).toString('utf8')
  return text.split(/\r?\n/, 1)[0] ?? ''
}
